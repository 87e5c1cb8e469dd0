//! Whisper weights as candle tensors, whatever format they came from.
//!
//! Both import paths (CTranslate2 `model.bin` and Hugging Face safetensors)
//! end in the same [`ImportedWhisper`]: tensors named the way
//! `candle_transformers::models::whisper::model::Whisper::load` expects, the
//! model's [`whisper::Config`], and the decoding hints ([`GenerationConfig`])
//! that live outside the weights. The inference crate therefore never needs
//! to know which format was on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::whisper;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Decoding hints shipped beside the weights.
///
/// Names follow faster-whisper's `config.json`; the Hugging Face
/// equivalents (`suppress_tokens`, `begin_suppress_tokens`, `lang_to_id`)
/// are mapped onto them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Tokens never to emit (non-speech symbols, some special tokens).
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    /// Tokens not to emit as the first sampled token (blank, end of text).
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
    /// Token ids of the language tokens (`<|en|>`, ...), sorted; empty for
    /// English-only models.
    #[serde(default)]
    pub lang_ids: Vec<u32>,
    /// `(decoder layer, head)` pairs whose cross-attention follows the audio
    /// timeline; used for word-level timestamps.
    #[serde(default, deserialize_with = "de_pairs")]
    pub alignment_heads: Vec<(usize, usize)>,
}

/// Accepts `[[layer, head], ...]` (both formats write pairs as arrays).
fn de_pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(usize, usize)>, D::Error> {
    let v: Option<Vec<[usize; 2]>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default()
        .into_iter()
        .map(|[l, h]| (l, h))
        .collect())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let bytes = std::fs::read(path).map_err(ModelError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The subset of Hugging Face's `config.json` / `generation_config.json`
/// that carries decoding hints. Every field is optional because the two
/// files (and their versions) disagree on where things live.
#[derive(Debug, Default, Deserialize)]
struct HfHints {
    #[serde(default)]
    suppress_tokens: Option<Vec<u32>>,
    #[serde(default)]
    begin_suppress_tokens: Option<Vec<u32>>,
    #[serde(default)]
    lang_to_id: Option<HashMap<String, u32>>,
    #[serde(default, deserialize_with = "de_opt_pairs")]
    alignment_heads: Option<Vec<(usize, usize)>>,
}

fn de_opt_pairs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(usize, usize)>>, D::Error> {
    let v: Option<Vec<[usize; 2]>> = Option::deserialize(d)?;
    Ok(v.map(|v| v.into_iter().map(|[l, h]| (l, h)).collect()))
}

impl GenerationConfig {
    /// Reads faster-whisper's `config.json` (`suppress_ids`,
    /// `suppress_ids_begin`, `lang_ids`, `alignment_heads`).
    pub fn from_ct2_config(path: &Path) -> Result<Self, ModelError> {
        read_json(path)
    }

    /// Builds the hints from Hugging Face's `config.json` and, when given,
    /// `generation_config.json`, which takes precedence (it is what
    /// `transformers`' `generate()` uses).
    pub fn from_hf(config: &Path, generation: Option<&Path>) -> Result<Self, ModelError> {
        let base: HfHints = read_json(config)?;
        let gen: HfHints = match generation {
            Some(p) => read_json(p)?,
            None => HfHints::default(),
        };
        let mut lang_ids: Vec<u32> = gen
            .lang_to_id
            .or(base.lang_to_id)
            .map(|m| m.into_values().collect())
            .unwrap_or_default();
        lang_ids.sort_unstable();
        Ok(Self {
            suppress_ids: gen
                .suppress_tokens
                .or(base.suppress_tokens)
                .unwrap_or_default(),
            suppress_ids_begin: gen
                .begin_suppress_tokens
                .or(base.begin_suppress_tokens)
                .unwrap_or_default(),
            lang_ids,
            alignment_heads: gen
                .alignment_heads
                .or(base.alignment_heads)
                .unwrap_or_default(),
        })
    }
}

/// Whisper weights loaded as candle tensors.
#[derive(Debug, Clone)]
pub struct ImportedWhisper {
    /// Model dimensions; `suppress_tokens` is filled from the generation hints.
    pub config: whisper::Config,
    /// Tensors named like Hugging Face's `WhisperForConditionalGeneration`
    /// (`model.encoder.conv1.weight`, ...). Feed them to
    /// `candle_nn::VarBuilder::from_tensors`.
    pub tensors: HashMap<String, Tensor>,
    /// Decoding hints.
    pub generation: GenerationConfig,
}

/// The dtype to load weights in when the caller has no preference: f32 on
/// CPU (candle's CPU kernels are fastest and most complete in f32), f16 on
/// accelerators (half the memory and the tensor cores' native type).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

/// Loads a Hugging Face Whisper checkpoint: `config.json` (plus a sibling
/// `generation_config.json` when present) and one or more safetensors files.
///
/// The files are memory-mapped and converted one tensor at a time, so peak
/// memory is the converted model plus one tensor.
pub fn load_safetensors_whisper(
    config_path: &Path,
    weights: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<ImportedWhisper, ModelError> {
    let mut config: whisper::Config = read_json(config_path)?;
    let gen_path = config_path.with_file_name("generation_config.json");
    let generation = GenerationConfig::from_hf(
        config_path,
        gen_path.is_file().then_some(gen_path.as_path()),
    )?;
    config.suppress_tokens = generation.suppress_ids.clone();

    if weights.is_empty() {
        return Err(ModelError::MissingFile {
            dir: config_path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            file: "*.safetensors".into(),
        });
    }
    for w in weights {
        if !w.is_file() {
            return Err(ModelError::Io {
                path: w.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
    }
    // SAFETY: read-only mappings of files nobody modifies while we load
    // (the same assumption candle's own VarBuilder makes).
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(weights) }?;
    let mut tensors = HashMap::new();
    for (name, _) in st.tensors() {
        let t = st.load(&name, device)?;
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        tensors.insert(name, t);
    }

    // Catch a checkpoint of another architecture (or with a different
    // naming scheme) here, with a message naming the file, rather than deep
    // inside candle's model builder.
    let first = weights[0].clone();
    let conv1 = "model.encoder.conv1.weight";
    match tensors.get(conv1) {
        None => {
            return Err(ModelError::MissingTensor {
                source_file: first,
                name: conv1.into(),
            })
        }
        Some(t) if t.dims() != [config.d_model, config.num_mel_bins, 3] => {
            return Err(ModelError::ShapeMismatch {
                source_file: first,
                name: conv1.into(),
                expected: format!(
                    "[{}, {}, 3] (from config.json)",
                    config.d_model, config.num_mel_bins
                ),
                actual: t.dims().to_vec(),
            })
        }
        Some(_) => {}
    }
    tracing::info!(
        files = weights.len(),
        tensors = tensors.len(),
        d_model = config.d_model,
        ?dtype,
        "loaded safetensors Whisper"
    );
    Ok(ImportedWhisper {
        config,
        tensors,
        generation,
    })
}
