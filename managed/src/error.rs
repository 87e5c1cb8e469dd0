//! One error type for the managed backends, shaped for the worker's failure
//! policy: [`ManagedError::is_transient`] decides between releasing the
//! message for a retry (throttling, 5xx, timeouts, a lost connection) and
//! writing a failure record (a FAILED Transcribe job, a request the service
//! rejects), and [`ManagedError::kind`] is the record's `error.kind`.
//!
//! Service errors are classified here, once, from the SDKs' typed errors,
//! so the worker never has to know about Transcribe or Bedrock exceptions.

use aws_smithy_runtime_api::client::result::SdkError;
use earshot_queue_adapter::QueueError;
use thiserror::Error;

/// Anything the managed backends can fail with.
#[derive(Debug, Error)]
pub enum ManagedError {
    /// The media is unusable (not a supported location, no audio).
    #[error("bad audio: {0}")]
    BadAudio(String),
    /// The media is over a service limit (Transcribe: 4 h or 2 GB).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A job option the service cannot honour.
    #[error("bad option: {0}")]
    BadOption(String),
    /// An input does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The model cannot be used (unknown id, no access granted).
    #[error("model: {0}")]
    Model(String),
    /// The service finished the work as failed or refused the request for
    /// good: a FAILED Transcribe job (with its `FailureReason`), a Bedrock
    /// `ValidationException`, an unreadable service output.
    #[error("{service} {op}: {message}")]
    Failed {
        service: &'static str,
        op: &'static str,
        message: String,
    },
    /// A failure a later attempt may not see: throttling, a 5xx, a timeout,
    /// a dropped connection, a result that is not there yet.
    #[error("{service} {op} (transient): {message}")]
    Transient {
        service: &'static str,
        op: &'static str,
        message: String,
    },
    /// Reading or writing through earshot's store (S3 or local files).
    #[error(transparent)]
    Store(#[from] QueueError),
}

impl ManagedError {
    /// True when retrying the job later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ManagedError::Transient { .. } => true,
            ManagedError::Store(e) => !e.is_permanent(),
            _ => false,
        }
    }

    /// The failure record's `error.kind`: the worker's kinds (`bad_audio`,
    /// `too_large`, `bad_option`, `not_found`, `model`), `managed` for a
    /// service-side permanent failure, and the store's own kinds.
    pub fn kind(&self) -> &'static str {
        match self {
            ManagedError::BadAudio(_) => "bad_audio",
            ManagedError::TooLarge(_) => "too_large",
            ManagedError::BadOption(_) => "bad_option",
            ManagedError::NotFound(_) => "not_found",
            ManagedError::Model(_) => "model",
            ManagedError::Failed { .. } => "managed",
            ManagedError::Transient { .. } => "service",
            ManagedError::Store(e) => e.kind(),
        }
    }

    pub(crate) fn failed(service: &'static str, op: &'static str, m: impl ToString) -> Self {
        ManagedError::Failed {
            service,
            op,
            message: m.to_string(),
        }
    }

    pub(crate) fn transient(service: &'static str, op: &'static str, m: impl ToString) -> Self {
        ManagedError::Transient {
            service,
            op,
            message: m.to_string(),
        }
    }
}

impl From<earshot_inference::InferenceError> for ManagedError {
    /// Errors of the shared map-reduce loop: an empty transcript or a
    /// context too small for the answers is the job's fault; anything else
    /// is a summary that went wrong.
    fn from(e: earshot_inference::InferenceError) -> Self {
        use earshot_inference::InferenceError as I;
        match e {
            I::BadOption(m) => ManagedError::BadOption(m),
            other => ManagedError::Model(other.to_string()),
        }
    }
}

/// How an SDK call failed, before the operation's own exceptions are
/// looked at.
pub(crate) enum Transport {
    /// The request never got a service answer, or got an unreadable one.
    Transient(String),
    /// The request could not even be built (a bug or a bad option).
    Construction(String),
    /// The service answered with an error: its HTTP status and the typed
    /// error, for the caller to classify.
    Service(u16),
}

/// The SDKs' raw response type.
pub(crate) type HttpResponse = aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// Splits an SDK error into transport failures and service errors.
pub(crate) fn transport<E>(e: &SdkError<E, HttpResponse>) -> Transport
where
    E: std::error::Error + 'static,
{
    match e {
        SdkError::ConstructionFailure(_) => Transport::Construction(sdk_message(e)),
        SdkError::ServiceError(s) => Transport::Service(s.raw().status().as_u16()),
        // Timeouts, dispatch (connection) failures, unreadable responses,
        // and whatever future variants the SDK adds.
        _ => Transport::Transient(sdk_message(e)),
    }
}

/// The whole error chain, one line (the SDK's Display is only the top).
pub(crate) fn sdk_message<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + 'static,
{
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

/// Throttling and server errors are worth a retry; other statuses are not.
pub(crate) fn status_is_transient(status: u16) -> bool {
    status == 429 || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_transience() {
        let cases = [
            (ManagedError::BadAudio("x".into()), "bad_audio", false),
            (ManagedError::TooLarge("x".into()), "too_large", false),
            (ManagedError::BadOption("x".into()), "bad_option", false),
            (ManagedError::NotFound("x".into()), "not_found", false),
            (ManagedError::Model("x".into()), "model", false),
            (
                ManagedError::failed("transcribe", "Get", "x"),
                "managed",
                false,
            ),
            (
                ManagedError::transient("bedrock", "Converse", "x"),
                "service",
                true,
            ),
            (
                ManagedError::Store(QueueError::NotFound("s3://b/k".into())),
                "not_found",
                false,
            ),
            (
                ManagedError::Store(QueueError::Service {
                    service: "s3",
                    op: "GetObject",
                    message: "503".into(),
                }),
                "service",
                true,
            ),
        ];
        for (e, kind, transient) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.is_transient(), transient, "{e}");
        }
        let e: ManagedError = earshot_inference::InferenceError::BadOption("empty".into()).into();
        assert_eq!(e.kind(), "bad_option");
        assert!(status_is_transient(429) && status_is_transient(503));
        assert!(!status_is_transient(400) && !status_is_transient(403));
    }
}
