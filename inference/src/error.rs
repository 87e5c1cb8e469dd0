//! One error type for the engines. It is `Clone` (candle's errors are kept
//! as text) so a batch-level failure can be reported to every job in it.

use crate::audio::AudioError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    #[error(transparent)]
    Audio(std::sync::Arc<AudioError>),
    #[error("model: {0}")]
    Model(String),
    #[error("tensor backend: {0}")]
    Backend(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid option: {0}")]
    BadOption(String),
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    Models(std::sync::Arc<earshot_models::ModelError>),
    #[error(transparent)]
    Vad(std::sync::Arc<crate::vad::VadError>),
}

impl InferenceError {
    /// Errors caused by the input (client's fault, never worth a retry).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Audio(_) | Self::BadOption(_))
    }
}

impl From<candle_core::Error> for InferenceError {
    fn from(e: candle_core::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

impl From<AudioError> for InferenceError {
    fn from(e: AudioError) -> Self {
        Self::Audio(std::sync::Arc::new(e))
    }
}

impl From<earshot_models::ModelError> for InferenceError {
    fn from(e: earshot_models::ModelError) -> Self {
        Self::Models(std::sync::Arc::new(e))
    }
}

impl From<crate::vad::VadError> for InferenceError {
    fn from(e: crate::vad::VadError) -> Self {
        match e {
            // A bad `threshold` is the client's fault, like any other option.
            crate::vad::VadError::BadOption(m) => Self::BadOption(format!("vad: {m}")),
            e => Self::Vad(std::sync::Arc::new(e)),
        }
    }
}
