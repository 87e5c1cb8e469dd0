//! The crate's one error type: what a caller can tell apart.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DiarizeError {
    /// A weights file is missing, unreadable, or lacks a tensor the network needs.
    #[error("speaker model {path}: {reason}")]
    Model { path: String, reason: String },
    /// The caller asked for something impossible (e.g. min_speakers > max_speakers).
    #[error("invalid diarization option: {0}")]
    Options(String),
    /// Audio the networks cannot use (wrong rate, empty where not allowed).
    #[error("diarization input: {0}")]
    Input(String),
    /// A malformed RTTM line.
    #[error("RTTM line {line}: {reason}")]
    Rttm { line: usize, reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, DiarizeError>;
