//! Whisper speech-to-text: model, tokenizer, decoding rules, long-form
//! transcription, output formats.

pub mod attn;
pub mod decode;
pub mod format;
pub mod gelu;
pub mod model;
pub mod tokenizer;

use std::time::Instant;

use candle_core::Device;

pub use decode::{Segment, Task, TranscribeOptions, Transcript, Whisper};
pub use model::WhisperModel;
pub use tokenizer::WhisperTokenizer;

use crate::error::InferenceError;
use crate::mel::MelExtractor;

impl Whisper {
    /// Load a model by catalog name or folder path (see `earshot_models`
    /// for the resolution order) onto a device.
    pub fn load(spec: &str, device: &Device) -> Result<Self, InferenceError> {
        let t0 = Instant::now();
        let resolved = earshot_models::resolve_whisper(spec)?;
        let dtype = crate::device::compute_dtype(device);
        let imported = earshot_models::load_whisper_tensors(&resolved, dtype, device)?;
        let whisper = Self::from_parts(&resolved.name, imported, &resolved.tokenizer, device)?;
        tracing::info!(
            model = %resolved.name,
            dir = %resolved.dir.display(),
            load_ms = t0.elapsed().as_millis() as u64,
            "whisper model loaded"
        );
        Ok(whisper)
    }

    /// Build from imported tensors and a `tokenizer.json`.
    pub fn from_parts(
        name: &str,
        imported: earshot_models::ImportedWhisper,
        tokenizer_json: &std::path::Path,
        device: &Device,
    ) -> Result<Self, InferenceError> {
        let dtype = crate::device::compute_dtype(device);
        let config = imported.config.clone();
        let tokenizer = WhisperTokenizer::from_file(tokenizer_json, config.vocab_size)?;
        let mel = MelExtractor::new(config.num_mel_bins);
        let model = WhisperModel::load(&imported.tensors, config.clone(), dtype, device)?;
        let mut config_suppress: Vec<u32> = imported.generation.suppress_ids.clone();
        config_suppress.extend(config.suppress_tokens.iter().copied());
        config_suppress.sort_unstable();
        config_suppress.dedup();
        Ok(Self {
            model,
            tokenizer,
            mel,
            config_suppress,
            name: name.to_string(),
        })
    }
}
