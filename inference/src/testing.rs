//! Tiny random-weight Whisper models for tests and examples, written through
//! the same CTranslate2 import path as the real weights. Not part of the
//! stable API.

use std::path::Path;

use candle_core::{DType, Device};
use earshot_models::ct2::{write_tiny_whisper_ct2, TinySpec};

use crate::error::InferenceError;
use crate::whisper::Whisper;

/// Vocabulary layout of the tiny model: 50 word tokens, then Whisper's
/// specials in their English-only order, then timestamps up to the end.
pub const TINY_VOCAB: usize = 160;
const SPECIALS: [&str; 9] = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
];

/// A `tokenizer.json` (word-level) whose special tokens sit where the
/// decoding rules look for them by name.
pub fn write_tiny_tokenizer(path: &Path) -> std::io::Result<()> {
    let mut vocab = serde_json::Map::new();
    for i in 0..50u32 {
        vocab.insert(format!("w{i}"), i.into());
    }
    let mut added = Vec::new();
    for (k, s) in SPECIALS.iter().enumerate() {
        let id = 50 + k as u32;
        vocab.insert((*s).to_string(), id.into());
        added.push(serde_json::json!({
            "id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    std::fs::write(path, serde_json::to_vec(&json)?)
}

/// Write a tiny random Whisper (model.bin, config.json, tokenizer.json).
pub fn write_tiny_whisper(dir: &Path, seed: u64) -> Result<(), InferenceError> {
    std::fs::create_dir_all(dir).map_err(|e| InferenceError::Model(e.to_string()))?;
    let spec = TinySpec {
        d_model: 32,
        n_heads: 2,
        encoder_layers: 2,
        decoder_layers: 2,
        ffn_dim: 128,
        vocab_size: TINY_VOCAB,
        ..TinySpec::default()
    };
    write_tiny_whisper_ct2(dir, spec, seed)?;
    write_tiny_tokenizer(&dir.join("tokenizer.json"))
        .map_err(|e| InferenceError::Model(e.to_string()))
}

/// Load a tiny model written by [`write_tiny_whisper`] through the real
/// import path.
pub fn load_tiny_whisper(dir: &Path) -> Result<Whisper, InferenceError> {
    let imported = earshot_models::ct2::import_whisper(dir, DType::F32, &Device::Cpu)?;
    Whisper::from_parts(
        "tiny-random",
        imported,
        &dir.join("tokenizer.json"),
        &Device::Cpu,
    )
}
