//! Tiny random-weight Whisper models for tests and examples, written through
//! the same CTranslate2 import path as the real weights. Not part of the
//! stable API.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// The repository root (tests and benches run from a checkout).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("inference/ has a parent")
        .to_path_buf()
}

/// The speech fixtures folder (`$EARSHOT_FIXTURES_DIR`, else
/// `<repo>/target/fixtures`), generated once per process by
/// `scripts/make-fixtures` when its manifest is missing. Panics with the
/// script's failure: tests that need fixtures must not silently skip.
pub fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("EARSHOT_FIXTURES_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_dir().join("target").join("fixtures"));
        if !dir.join("manifest.tsv").exists() {
            let script = repo_dir().join("scripts").join("make-fixtures");
            eprintln!(
                "fixtures missing in {}: running {}",
                dir.display(),
                script.display()
            );
            let st = std::process::Command::new(&script)
                .arg("--dir")
                .arg(&dir)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(st.success(), "{} failed ({st})", script.display());
        }
        assert!(
            dir.join("manifest.tsv").exists(),
            "no manifest.tsv in {}",
            dir.display()
        );
        dir
    })
}

/// One row of the fixtures' `manifest.tsv`.
#[derive(Debug, Clone)]
pub struct FixtureClip {
    pub file: String,
    pub format: String,
    pub duration_s: f64,
    pub sample_rate: u32,
    /// What the clip says (the text espeak-ng spoke).
    pub text: String,
}

/// The speech clips listed in the fixtures' manifest (columns by header
/// name, so the script may add columns).
pub fn fixture_manifest() -> Vec<FixtureClip> {
    let path = fixtures_dir().join("manifest.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("manifest header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("manifest.tsv has no {name} column"))
    };
    let (f, fm, d, sr, t) = (
        col("file"),
        col("format"),
        col("duration_s"),
        col("sample_rate"),
        col("text"),
    );
    let clips: Vec<FixtureClip> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            FixtureClip {
                file: c[f].to_string(),
                format: c[fm].to_string(),
                duration_s: c[d].parse().expect("duration_s"),
                sample_rate: c[sr].parse().expect("sample_rate"),
                text: c[t].to_string(),
            }
        })
        .collect();
    assert!(!clips.is_empty(), "empty manifest");
    clips
}
