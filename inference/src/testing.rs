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

/// Largest |x| in a tensor (tests compare paths by it).
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_scalar::<f32>())
        .expect("an f32 tensor")
}

/// The repository root (tests and benches run from a checkout).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("inference/ has a parent")
        .to_path_buf()
}

/// The Python with the test environment's packages (faster-whisper,
/// onnxruntime, numpy): `$EARSHOT_PYTHON`, else `<repo>/.venv`, else
/// `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EARSHOT_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = repo_dir().join(".venv").join("bin").join("python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
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

/// A 1-D view of a `[1, n]` quantized tensor (biases are written 1-D).
trait Reshape1d {
    fn reshape_1d(self) -> Result<candle_core::quantized::QTensor, InferenceError>;
}

impl Reshape1d for candle_core::quantized::QTensor {
    fn reshape_1d(self) -> Result<candle_core::quantized::QTensor, InferenceError> {
        let t = self.dequantize(&Device::Cpu)?.flatten_all()?;
        Ok(candle_core::quantized::QTensor::quantize(
            &t,
            candle_core::quantized::GgmlDType::F32,
        )?)
    }
}

/// Shape of a tiny random-weight GGUF LLM.
#[derive(Debug, Clone, Copy)]
pub struct TinyLlm {
    /// `llama` (interleaved RoPE), `qwen2` (q/k/v biases), `qwen3` (q/k
    /// norms) or `gemma3` (q/k norms, sandwich norms, GELU, scaled
    /// embeddings, sliding-window layers). All get the same SentencePiece
    /// vocabulary.
    pub arch: &'static str,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    /// Gemma only: the sliding window (small, so tests cross it).
    pub sliding_window: usize,
    /// Quantization of the projection weights.
    pub dtype: candle_core::quantized::GgmlDType,
}

impl TinyLlm {
    pub fn llama() -> Self {
        Self {
            arch: "llama",
            n_embd: 64,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 16,
            n_ff: 128,
            n_layer: 2,
            sliding_window: 0,
            dtype: candle_core::quantized::GgmlDType::Q5_0,
        }
    }

    /// Qwen 2: biases on q/k/v, halves RoPE.
    pub fn qwen2() -> Self {
        Self {
            arch: "qwen2",
            dtype: candle_core::quantized::GgmlDType::Q8_0,
            ..Self::llama()
        }
    }

    /// Qwen 3: per-head RMS norms on q and k.
    pub fn qwen3() -> Self {
        Self {
            arch: "qwen3",
            dtype: candle_core::quantized::GgmlDType::Q4_0,
            ..Self::llama()
        }
    }

    pub fn gemma3() -> Self {
        Self {
            arch: "gemma3",
            n_embd: 256,
            n_head: 4,
            n_kv_head: 1,
            head_dim: 64,
            n_ff: 256,
            n_layer: 6,
            sliding_window: 6,
            dtype: candle_core::quantized::GgmlDType::Q4K,
        }
    }
}

/// The tiny SentencePiece vocabulary: specials, 256 byte tokens, letters,
/// then whole words (with scores so merges prefer longer pieces).
pub const TINY_LLM_WORDS: &[&str] = &[
    "▁the",
    "▁meeting",
    "▁launch",
    "▁date",
    "▁team",
    "▁will",
    "▁send",
    "▁press",
    "▁release",
    "▁on",
    "▁Monday",
    "▁Friday",
    "▁summary",
    "▁is",
    "▁a",
    "▁to",
    "▁and",
    "▁of",
    "in",
    "er",
    "▁t",
    "▁s",
    "on",
    "at",
    "▁m",
    "ee",
    "ing",
    "▁we",
    "▁it",
    "▁by",
];

fn tiny_llm_vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut types = vec![3, 3, 3, 2, 3, 3];
    let mut scores = vec![0.0; tokens.len()];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let mut singles: Vec<String> = ('a'..='z')
        .chain('A'..='Z')
        .map(|c| c.to_string())
        .collect();
    singles.extend(["▁", ".", ","].iter().map(|s| s.to_string()));
    for s in singles {
        tokens.push(s);
        types.push(1);
        scores.push(-100.0);
    }
    // Every prefix of every word, so each word can be merged up to whole
    // (real vocabularies hold the intermediate pieces too); longer pieces
    // score higher so they win.
    let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();
    for w in TINY_LLM_WORDS {
        let chars: Vec<char> = w.chars().collect();
        for n in 2..=chars.len() {
            let p: String = chars[..n].iter().collect();
            if seen.insert(p.clone()) {
                tokens.push(p);
                types.push(1);
                scores.push(n as f32);
            }
        }
    }
    (tokens, scores, types)
}

/// Writes a random-weight GGUF with its own SentencePiece vocabulary, in
/// the layout llama.cpp's converters produce, so it loads through
/// [`crate::llm::Llm::load`] like a real model.
pub fn write_tiny_llm(path: &Path, spec: TinyLlm, seed: u64) -> Result<(), InferenceError> {
    use candle_core::quantized::gguf_file::Value;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Tensor;
    use rand::{Rng, SeedableRng};

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (tokens, scores, types) = tiny_llm_vocab();
    let vocab = tokens.len();
    let dev = Device::Cpu;
    let mut rand_t =
        |shape: (usize, usize), scale: f32, dtype: GgmlDType| -> Result<QTensor, InferenceError> {
            let v: Vec<f32> = (0..shape.0 * shape.1)
                .map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale)
                .collect();
            let t = Tensor::from_vec(v, shape, &dev)?;
            Ok(QTensor::quantize(&t, dtype)?)
        };
    // Norm weights of one (llama.cpp stores Gemma's `1 + w` already added).
    let norm = |n: usize, _gemma: bool| -> Result<QTensor, InferenceError> {
        let v = vec![1.0f32; n];
        Ok(QTensor::quantize(
            &Tensor::from_vec(v, n, &dev)?,
            GgmlDType::F32,
        )?)
    };
    let s = spec;
    // F32 specs keep every tensor F32 (exact arithmetic for equivalence tests).
    let fixed = |d: GgmlDType| {
        if s.dtype == GgmlDType::F32 {
            GgmlDType::F32
        } else {
            d
        }
    };
    let gemma = s.arch == "gemma3";
    let q_dim = s.n_head * s.head_dim;
    let kv_dim = s.n_kv_head * s.head_dim;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    // Q8_0 embeddings, tied output (as both PyPI models have).
    tensors.push((
        "token_embd.weight".into(),
        rand_t((vocab, s.n_embd), 0.1, fixed(GgmlDType::Q8_0))?,
    ));
    tensors.push(("output_norm.weight".into(), norm(s.n_embd, gemma)?));
    let w_scale = 1.0 / (s.n_embd as f32).sqrt();
    for il in 0..s.n_layer {
        let p = format!("blk.{il}");
        tensors.push((format!("{p}.attn_norm.weight"), norm(s.n_embd, gemma)?));
        tensors.push((
            format!("{p}.attn_q.weight"),
            rand_t((q_dim, s.n_embd), w_scale, s.dtype)?,
        ));
        tensors.push((
            format!("{p}.attn_k.weight"),
            rand_t((kv_dim, s.n_embd), w_scale, s.dtype)?,
        ));
        // A different type for v keeps the unfused path covered.
        tensors.push((
            format!("{p}.attn_v.weight"),
            rand_t((kv_dim, s.n_embd), w_scale, fixed(GgmlDType::Q8_0))?,
        ));
        tensors.push((
            format!("{p}.attn_output.weight"),
            rand_t((s.n_embd, q_dim), w_scale, s.dtype)?,
        ));
        tensors.push((format!("{p}.ffn_norm.weight"), norm(s.n_embd, gemma)?));
        tensors.push((
            format!("{p}.ffn_gate.weight"),
            rand_t((s.n_ff, s.n_embd), w_scale, s.dtype)?,
        ));
        tensors.push((
            format!("{p}.ffn_up.weight"),
            rand_t((s.n_ff, s.n_embd), w_scale, s.dtype)?,
        ));
        tensors.push((
            format!("{p}.ffn_down.weight"),
            rand_t((s.n_embd, s.n_ff), w_scale, fixed(GgmlDType::Q8_0))?,
        ));
        if s.arch == "qwen2" {
            // Biases on q/k/v (F32, like the converters write them).
            for (name, n) in [("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)] {
                tensors.push((
                    format!("{p}.{name}.bias"),
                    rand_t((1, n), 0.1, GgmlDType::F32)?.reshape_1d()?,
                ));
            }
        }
        if s.arch == "qwen3" {
            tensors.push((format!("{p}.attn_q_norm.weight"), norm(s.head_dim, false)?));
            tensors.push((format!("{p}.attn_k_norm.weight"), norm(s.head_dim, false)?));
        }
        if gemma {
            tensors.push((format!("{p}.attn_q_norm.weight"), norm(s.head_dim, true)?));
            tensors.push((format!("{p}.attn_k_norm.weight"), norm(s.head_dim, true)?));
            tensors.push((
                format!("{p}.post_attention_norm.weight"),
                norm(s.n_embd, true)?,
            ));
            tensors.push((format!("{p}.post_ffw_norm.weight"), norm(s.n_embd, true)?));
        }
    }
    let a = s.arch;
    let u = |v: usize| Value::U32(v as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        (
            "general.name".into(),
            Value::String(format!("tiny-random-{a}")),
        ),
        (format!("{a}.context_length"), u(512)),
        (format!("{a}.embedding_length"), u(s.n_embd)),
        (format!("{a}.block_count"), u(s.n_layer)),
        (format!("{a}.feed_forward_length"), u(s.n_ff)),
        (format!("{a}.attention.head_count"), u(s.n_head)),
        (format!("{a}.attention.head_count_kv"), u(s.n_kv_head)),
        (format!("{a}.attention.key_length"), u(s.head_dim)),
        (format!("{a}.attention.value_length"), u(s.head_dim)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), u(2)),
        ("tokenizer.ggml.eos_token_id".into(), u(1)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(!gemma),
        ),
    ];
    if gemma {
        md.push((format!("{a}.attention.sliding_window"), u(s.sliding_window)));
    } else {
        md.push((format!("{a}.rope.dimension_count"), u(s.head_dim)));
    }
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).map_err(|e| InferenceError::Model(e.to_string()))?;
    candle_core::quantized::gguf_file::write(&mut f, &md_refs, &t_refs)?;
    Ok(())
}

/// Writes and loads a tiny LLM (CPU).
pub fn load_tiny_llm(
    dir: &Path,
    spec: TinyLlm,
    seed: u64,
) -> Result<crate::llm::Llm, InferenceError> {
    let path = dir.join(format!("tiny-{}-{seed}.gguf", spec.arch));
    write_tiny_llm(&path, spec, seed)?;
    crate::llm::Llm::load(&path, None, &Device::Cpu)
}

/// The real LLMs `scripts/fetch-models` installs, or a panic saying to run it.
pub fn real_llm_path(name: &str) -> PathBuf {
    let resolved = earshot_models::resolve_llm(name)
        .unwrap_or_else(|e| panic!("LLM {name} is not installed ({e}); run scripts/fetch-models"));
    resolved.gguf
}

/// The VAD comparison set (`inference/tests/vad_reference.rs` and the `vad`
/// example behind `scripts/compare-vad`), as 16 kHz mono: every clip in
/// `dir/manifest.tsv`, the edge-case recordings `sample.wav`,
/// `silence-10s.wav`, `telephone-8k.wav` and `ten-minutes.wav` when `dir`
/// has them, and generated clips: `long-silences` (three manifest clips
/// with 2, 25, 40 and 10 s of digital silence or -60 dBFS noise around
/// them), `white-noise` (60 s), `speech-in-noise` (a clip at 5 dB SNR) and
/// `tones` (30 s of changing chords).
pub fn vad_clips(dir: &Path) -> Vec<(String, Vec<f32>)> {
    use crate::audio::{load_file, DecodeLimits};
    let load = |f: &str| {
        load_file(&dir.join(f), DecodeLimits::default())
            .unwrap_or_else(|e| panic!("cannot decode {}: {e}", dir.join(f).display()))
    };
    let manifest = dir.join("manifest.tsv");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("manifest header").split('\t').collect();
    let col = header
        .iter()
        .position(|h| *h == "file")
        .expect("manifest.tsv has a file column");
    let mut clips: Vec<(String, Vec<f32>)> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f = l.split('\t').nth(col).expect("file column").to_string();
            let s = load(&f);
            (f, s)
        })
        .collect();
    assert!(
        clips.len() >= 3,
        "{} lists fewer than 3 clips",
        manifest.display()
    );
    for f in [
        "sample.wav",
        "silence-10s.wav",
        "telephone-8k.wav",
        "ten-minutes.wav",
    ] {
        if dir.join(f).is_file() {
            clips.push((f.to_string(), load(f)));
        }
    }

    const SR: usize = 16_000;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = move |amp: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        amp * ((state >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
    };
    let (a, b, c) = (clips[0].1.clone(), clips[1].1.clone(), clips[2].1.clone());
    let mut long = vec![0f32; 2 * SR];
    long.extend_from_slice(&a);
    long.extend(std::iter::repeat_n(0.0, 25 * SR));
    long.extend_from_slice(&b);
    long.extend((0..40 * SR).map(|_| noise(1e-3)));
    long.extend_from_slice(&c);
    long.extend(std::iter::repeat_n(0.0, 10 * SR));
    let white: Vec<f32> = (0..60 * SR).map(|_| noise(0.25)).collect();
    let rms = (c.iter().map(|x| x * x).sum::<f32>() / c.len().max(1) as f32).sqrt();
    // Uniform noise in ±A has RMS A/√3; 5 dB SNR.
    let amp = rms / 10f32.powf(5.0 / 20.0) * 3f32.sqrt();
    let noisy: Vec<f32> = c.iter().map(|x| x + noise(amp)).collect();
    let tones: Vec<f32> = (0..30 * SR)
        .map(|i| {
            let t = i as f32 / SR as f32;
            let root = [220.0, 261.6, 329.6, 392.0][(t as usize) % 4];
            0.1 * [1.0f32, 1.25, 1.5]
                .iter()
                .map(|r| (2.0 * std::f32::consts::PI * root * r * t).sin())
                .sum::<f32>()
        })
        .collect();
    clips.push(("long-silences".into(), long));
    clips.push(("white-noise".into(), white));
    clips.push(("speech-in-noise".into(), noisy));
    clips.push(("tones".into(), tones));
    clips
}
