//! The throughput profile `earshot bench` writes and `earshot plan` reads:
//! what this machine, with these models, actually does per second.
//! Version 1; its JSON Schema is `planner/schema/profile.schema.json`.

use serde::{Deserialize, Serialize};

/// The only profile version this planner reads.
pub const PROFILE_VERSION: u32 = 1;

/// One measured machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub version: u32,
    pub earshot_version: String,
    /// RFC 3339, when the measurement finished.
    pub created_at: String,
    /// `--quick`: shorter runs, noisier figures.
    pub quick: bool,
    pub machine: Machine,
    pub models: Models,
    /// Seconds to load each model (`whisper`, `llm`).
    pub load_seconds: std::collections::BTreeMap<String, f64>,
    pub speech: SpeechThroughput,
    pub llm: LlmThroughput,
    pub memory: Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpu_cores: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
    #[serde(default)]
    pub gpu_name: Option<String>,
    #[serde(default)]
    pub gpu_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Models {
    pub whisper: String,
    pub llm: String,
    /// `float32`, `float16`, `int8` (faster-whisper's names).
    pub compute_type: String,
}

/// One speech measurement: `batch` inputs decoded together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeechPoint {
    pub batch: usize,
    pub audio_seconds: f64,
    pub wall_seconds: f64,
    pub audio_seconds_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeechThroughput {
    /// Long recordings (minutes each), per batch size.
    pub long: Vec<SpeechPoint>,
    /// Short clips (about 5 s each), per batch size.
    pub short: Vec<SpeechPoint>,
    /// The best audio-seconds per wall-second over all points: what a
    /// busy worker sustains.
    pub best_audio_seconds_per_second: f64,
}

/// Decode speed with `sequences` sequences in one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodePoint {
    pub sequences: usize,
    /// Generated tokens per wall-second, all sequences together.
    pub tokens_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmThroughput {
    pub decode: Vec<DecodePoint>,
    pub best_decode_tokens_per_second: f64,
    pub prefill_tokens_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Peak resident set size of the process while measuring.
    pub peak_rss_bytes: u64,
    /// Peak device memory in use (CUDA only).
    #[serde(default)]
    pub device_bytes: Option<u64>,
}
