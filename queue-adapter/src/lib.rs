//! earshot's job queues and job contract.
//!
//! - [`job`]: the versioned job message and the result record.
//! - [`queue`]: the [`JobQueue`] trait (SQS semantics: lease, extend, ack,
//!   release), implemented by [`sqs::SqsQueue`] and the embedded, durable
//!   [`local::LocalQueue`].
//! - [`store`]: inputs and results in S3 or on local disk.
//!
//! The feature `queues` (on by default) brings the queues and stores;
//! without it only the job contract ([`job`], [`location`], [`error`])
//! is built, with no AWS SDK (the fuzz targets use that).
//!
//! The worker loop itself lives in the `earshot` binary, next to the
//! engines it feeds; this crate knows nothing about models.

pub mod error;
pub mod job;
#[cfg(feature = "queues")]
pub mod local;
pub mod location;
#[cfg(feature = "queues")]
pub mod queue;
#[cfg(feature = "queues")]
pub mod sqs;
#[cfg(feature = "queues")]
pub mod store;
#[cfg(feature = "queues")]
#[doc(hidden)]
pub mod testing;

#[cfg(feature = "queues")]
use std::sync::Arc;

pub use error::QueueError;
pub use job::{Job, JobOptions, JobStatus, ResultRecord, TaskKind};
pub use location::Location;
#[cfg(feature = "queues")]
pub use queue::{Delivery, JobQueue, QueueDepth};
#[cfg(feature = "queues")]
pub use store::{S3Settings, Store};

#[cfg(feature = "queues")]
/// The shared AWS configuration, from the standard environment and
/// profile chain (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials, IRSA).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

#[cfg(feature = "queues")]
/// Seconds one SQS or S3 call attempt may take before it is abandoned
/// (and retried by the SDK, then by the worker): `EARSHOT_AWS_TIMEOUT`,
/// default [`DEFAULT_AWS_TIMEOUT_S`].
pub const AWS_TIMEOUT_ENV: &str = "EARSHOT_AWS_TIMEOUT";
#[cfg(feature = "queues")]
/// Above SQS's longest long poll (20 s) with room to spare; an S3 upload
/// of a result record takes milli-seconds. Raise it for `submit` of very
/// large files over slow links (the upload is one attempt).
pub const DEFAULT_AWS_TIMEOUT_S: f64 = 60.0;

#[cfg(feature = "queues")]
/// The timeouts of the SQS and S3 clients. The SDK's default has only a
/// connect timeout, so a server that accepts a connection and never
/// answers (a half-open connection, a stuck proxy) would hold a worker's
/// receive, heartbeat or result write for ever; with an attempt timeout
/// the call fails, and the usual transient-failure path takes over.
/// Response bodies (S3 downloads) are guarded separately by the SDK's
/// stalled-stream protection.
pub fn service_timeouts() -> aws_config::timeout::TimeoutConfig {
    let attempt = std::env::var(AWS_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(DEFAULT_AWS_TIMEOUT_S);
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_millis(3100))
        .operation_attempt_timeout(std::time::Duration::from_secs_f64(attempt))
        .build()
}

/// Now, as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// Parses an RFC 3339 time (a job's `submitted_at`) to Unix
/// milli-seconds; None when it is not one.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::DateTime)
        .ok()?;
    u64::try_from(t.to_millis().ok()?).ok()
}

/// Now, in Unix milli-seconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(feature = "queues")]
/// Which queue to use.
#[derive(Debug, Clone)]
pub enum QueueSpec {
    Sqs {
        url: String,
    },
    Local {
        dir: std::path::PathBuf,
        max_receives: u32,
    },
}

#[cfg(feature = "queues")]
/// Opens the queue a spec names.
pub async fn open_queue(spec: &QueueSpec) -> Result<Arc<dyn JobQueue>, QueueError> {
    Ok(match spec {
        QueueSpec::Sqs { url } => Arc::new(sqs::SqsQueue::connect(url).await?),
        QueueSpec::Local { dir, max_receives } => {
            Arc::new(local::LocalQueue::open(dir, *max_receives)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_at_parses_to_unix_millis() {
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T08:00:00Z"),
            Some(1_796_025_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T08:00:00.250Z"),
            Some(1_796_025_600_250)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms(""), None);
        // What this crate writes, it reads back.
        let now = parse_rfc3339_ms(&now_rfc3339()).unwrap();
        assert!(now.abs_diff(now_ms()) < 2_000);
    }
}
