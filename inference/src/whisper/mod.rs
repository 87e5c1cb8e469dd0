//! Whisper speech-to-text: model, tokenizer, decoding rules, long-form
//! transcription, output formats.

pub mod attn;
pub mod decode;
pub mod format;
pub mod gelu;
pub mod model;
pub mod pipeline;
mod reduce;
pub mod sharing;
pub mod timing;
pub mod tokenizer;

use std::time::Instant;

use candle_core::Device;

pub use decode::{EncoderWindow, Segment, Task, TranscribeOptions, Transcript, Whisper, Word};
pub use model::{CrossKv, WhisperModel};
pub use pipeline::Pipeline;
pub use tokenizer::WhisperTokenizer;

use crate::device::ComputeType;
use crate::error::InferenceError;
use crate::mel::MelExtractor;

impl Whisper {
    /// Load a model by catalog name or folder path (see `earshot_models`
    /// for the resolution order) onto a device.
    pub fn load(spec: &str, device: &Device) -> Result<Self, InferenceError> {
        Self::load_with(spec, device, ComputeType::Default)
    }

    /// [`Self::load`] with the weights held as `compute` says (int8
    /// quantizes the linear layers and the embeddings at load time).
    pub fn load_with(
        spec: &str,
        device: &Device,
        compute: ComputeType,
    ) -> Result<Self, InferenceError> {
        let t0 = Instant::now();
        let (dtype, int8) = compute.resolve(device)?;
        let resolved = earshot_models::resolve_whisper(spec)?;
        let imported = earshot_models::load_whisper_tensors(&resolved, dtype, device)?;
        let mut whisper =
            Self::from_parts_with(&resolved.name, imported, &resolved.tokenizer, device, dtype)?;
        if int8 {
            // Every linear layer and the embeddings, as faster-whisper's
            // int8 does: the decoder's steps read a quarter of the weight
            // bytes, and the encoder's 1500-row products run 64 integer
            // products per instruction.
            whisper.model.quantize_int8()?;
        }
        // Silero VAD rides along when installed: it is small (1.2 MB,
        // loaded in milliseconds), and `vad` / the batched pipeline need it.
        match earshot_models::resolve_silero_vad() {
            Ok(path) => match crate::vad::SileroVad::load(&path) {
                Ok(v) => whisper.vad = Some(std::sync::Arc::new(v)),
                Err(e) => tracing::warn!(error = %e, "Silero VAD not usable; vad is off"),
            },
            Err(e) => tracing::debug!(error = %e, "no Silero VAD model; vad is off"),
        }
        tracing::info!(
            model = %resolved.name,
            dir = %resolved.dir.display(),
            compute = ?compute,
            int8,
            load_ms = t0.elapsed().as_millis() as u64,
            "whisper model loaded"
        );
        Ok(whisper)
    }

    /// Build from imported tensors and a `tokenizer.json`.
    /// Use this VAD for `vad` and the batched pipeline.
    pub fn with_vad(mut self, vad: crate::vad::SileroVad) -> Self {
        self.vad = Some(std::sync::Arc::new(vad));
        self
    }

    pub fn from_parts(
        name: &str,
        imported: earshot_models::ImportedWhisper,
        tokenizer_json: &std::path::Path,
        device: &Device,
    ) -> Result<Self, InferenceError> {
        let dtype = crate::device::compute_dtype(device);
        Self::from_parts_with(name, imported, tokenizer_json, device, dtype)
    }

    fn from_parts_with(
        name: &str,
        imported: earshot_models::ImportedWhisper,
        tokenizer_json: &std::path::Path,
        device: &Device,
        dtype: candle_core::DType,
    ) -> Result<Self, InferenceError> {
        let config = imported.config.clone();
        let tokenizer = WhisperTokenizer::from_file(tokenizer_json, config.vocab_size)?;
        let mel = MelExtractor::new(config.num_mel_bins);
        let model = WhisperModel::load(&imported.tensors, config.clone(), dtype, device)?;
        let mut config_suppress: Vec<u32> = imported.generation.suppress_ids.clone();
        config_suppress.extend(config.suppress_tokens.iter().copied());
        config_suppress.sort_unstable();
        config_suppress.dedup();
        // The model's own list, else the catalog's, else the upper half of
        // the decoder (the reference's fallback).
        let fits = |heads: &[(usize, usize)]| {
            heads
                .iter()
                .all(|&(l, h)| l < config.decoder_layers && h < config.decoder_attention_heads)
        };
        let given = &imported.generation.alignment_heads;
        if !fits(given) {
            tracing::warn!(
                model = name,
                "alignment_heads in the model's config lie outside its decoder; ignoring them"
            );
        }
        let alignment_heads = if !given.is_empty() && fits(given) {
            given.clone()
        } else {
            timing::builtin_alignment_heads(name)
                .filter(|h| fits(h))
                .unwrap_or_else(|| {
                    timing::upper_half_heads(config.decoder_layers, config.decoder_attention_heads)
                })
        };
        Ok(Self {
            model,
            tokenizer,
            mel,
            config_suppress,
            name: name.to_string(),
            alignment_heads,
            vad: None,
        })
    }
}
