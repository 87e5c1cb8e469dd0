//! earshot's managed backends: Amazon Transcribe for speech and Amazon
//! Bedrock for summaries, behind the same job contract as the local
//! engines.
//!
//! The platform starts on managed services and moves to self-hosting once
//! it is cheaper; this crate lets the same worker run either phase, so a
//! team can switch per task kind without changing queues, messages or
//! result records.
//!
//! - [`transcribe`]: [`TranscribeBackend`], idempotent Transcribe batch
//!   jobs, paced polling, transcripts read back through earshot's store.
//! - [`transcribe_json`]: Transcribe's output JSON, read into earshot's
//!   transcript record (words included) and written from one.
//! - [`bedrock`]: [`BedrockSummarizer`], Converse with the local
//!   summarizer's prompts and map-reduce.
//! - [`error`]: [`ManagedError`], transient or permanent, with the worker's
//!   failure kinds.
//!
//! Endpoints, region and credentials come from the standard AWS
//! configuration, including `AWS_ENDPOINT_URL_TRANSCRIBE` and
//! `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`.

pub mod bedrock;
pub mod error;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
pub mod transcribe;
pub mod transcribe_json;

pub use bedrock::{BedrockConfig, BedrockSummarizer, BedrockSummary};
pub use error::ManagedError;
pub use transcribe::{
    billed_seconds, ensure_s3_media, PollConfig, SpeechOutcome, SpeechRequest, TranscribeBackend,
    TranscribeConfig,
};
