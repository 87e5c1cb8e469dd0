//! Typed errors, each saying whether retrying can help: the worker's whole
//! failure policy (record-and-delete vs release-with-backoff) hangs on
//! [`QueueError::is_permanent`].

use thiserror::Error;

/// Anything the job contract, a queue or a store can fail with.
#[derive(Debug, Error)]
pub enum QueueError {
    /// The message is not a valid job (bad JSON, unknown version, missing
    /// field, bad location). Retrying cannot fix it.
    #[error("bad job message: {0}")]
    BadMessage(String),
    /// An input object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An input is over a configured limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A local path outside the folders this worker may read and write
    /// (the local queue's folder, `--results`, `--local-root`): through
    /// `..`, an absolute path elsewhere, or a symbolic link that leads out.
    /// Retrying cannot fix it.
    #[error("{0}")]
    PathEscape(String),
    /// A receipt no longer names a message we hold (it was acknowledged, or
    /// its lease ran out and it went to another consumer).
    #[error("stale receipt: {0}")]
    StaleReceipt(String),
    /// A service call failed in a way a retry may fix (network, throttling,
    /// 5xx, a bucket that is not there yet).
    #[error("{service} {op}: {message}")]
    Service {
        service: &'static str,
        op: &'static str,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Configuration that cannot work (both queue kinds, no bucket, ...).
    #[error("configuration: {0}")]
    Config(String),
}

impl QueueError {
    /// Permanent errors are recorded as a failed job and the message is
    /// deleted; everything else is retried through the queue.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            QueueError::BadMessage(_)
                | QueueError::NotFound(_)
                | QueueError::TooLarge(_)
                | QueueError::PathEscape(_)
        )
    }

    /// Short machine-readable kind for failure records.
    pub fn kind(&self) -> &'static str {
        match self {
            // The job names a place it may not: the message is at fault
            // (and the record schema's kinds stay as published).
            QueueError::BadMessage(_) | QueueError::PathEscape(_) => "bad_message",
            QueueError::NotFound(_) => "not_found",
            QueueError::TooLarge(_) => "too_large",
            QueueError::StaleReceipt(_) => "stale_receipt",
            QueueError::Service { .. } => "service",
            QueueError::Io { .. } => "io",
            QueueError::Config(_) => "config",
        }
    }

    #[cfg_attr(not(feature = "queues"), allow(dead_code))]
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        QueueError::Io {
            context: context.into(),
            source,
        }
    }

    #[cfg_attr(not(feature = "queues"), allow(dead_code))]
    pub(crate) fn service(
        service: &'static str,
        op: &'static str,
        e: impl std::fmt::Display,
    ) -> Self {
        QueueError::Service {
            service,
            op,
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;
