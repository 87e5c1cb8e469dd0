//! Hyper-parameters of a decoder-only LLM, read from a GGUF header.
//!
//! One struct covers every family earshot runs: the families differ in a
//! handful of switches (biases on q/k/v, per-head q/k norms, sandwich norms,
//! the MLP activation, the RoPE layout, sliding-window layers), so one
//! forward pass with those switches replaces one model file per family.

use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::InferenceError;

/// Model families, from the GGUF's `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 2/3, SmolLM, TinyLlama, Mistral-style dense models.
    Llama,
    /// Qwen 2 and 2.5: biases on q/k/v.
    Qwen2,
    /// Qwen 3: per-head RMS norms on q and k, no biases.
    Qwen3,
    /// Gemma 3: q/k norms, sandwich norms, GELU, scaled embeddings,
    /// five sliding-window layers for every global one.
    Gemma3,
}

impl Arch {
    pub fn from_gguf_name(name: &str) -> Result<Self, InferenceError> {
        match name {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "qwen3" => Ok(Self::Qwen3),
            "gemma3" => Ok(Self::Gemma3),
            other => Err(InferenceError::Model(format!(
                "unsupported GGUF architecture {other:?} (supported: llama, qwen2, qwen3, gemma3)"
            ))),
        }
    }

    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// How RoPE pairs up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (0,1), (2,3)…: llama GGUFs, whose q/k rows the
    /// converter permuted for this layout.
    Interleaved,
    /// Halves (i, i + d/2): Qwen and Gemma ("NeoX" in llama.cpp).
    Halves,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// tanh-approximated GELU (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Everything the forward pass needs to know about a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f64,
    /// RoPE base of global layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (Gemma 3: 10 000).
    pub rope_base_local: f32,
    pub rope_style: RopeStyle,
    /// Sliding window width in tokens, for the layers that have one.
    pub sliding_window: Option<usize>,
    /// Every `n`-th layer (1-based) is global; the rest slide.
    pub sliding_pattern: usize,
    pub context_length: usize,
    pub activation: Activation,
    /// Multiply embeddings by sqrt(n_embd) (Gemma).
    pub scale_embeddings: bool,
    pub attn_scale: f32,
}

impl LlmConfig {
    /// Reads the config from a GGUF header.
    pub fn from_gguf(ct: &Content) -> Result<Self, InferenceError> {
        let arch_name = meta_str(ct, "general.architecture")?;
        let arch = Arch::from_gguf_name(arch_name)?;
        let p = arch.gguf_name();
        let u = |k: &str| meta_u32(ct, &format!("{p}.{k}")).map(|v| v as usize);
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_kv_head = u("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = u("attention.key_length")
            .or_else(|_| u("rope.dimension_count"))
            .unwrap_or(n_embd / n_head.max(1));
        let rms_eps = meta_f32(ct, &format!("{p}.attention.layer_norm_rms_epsilon"))? as f64;
        let default_base = if arch == Arch::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        };
        let rope_base = meta_f32(ct, &format!("{p}.rope.freq_base")).unwrap_or(default_base);
        let gemma = arch == Arch::Gemma3;
        let cfg = Self {
            arch,
            n_layer: u("block_count")?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: u("feed_forward_length")?,
            rms_eps,
            rope_base,
            // llama.cpp reads no key for this: Gemma 3's local base is fixed.
            rope_base_local: if gemma { 10_000.0 } else { rope_base },
            rope_style: if arch == Arch::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Halves
            },
            sliding_window: if gemma {
                Some(u("attention.sliding_window").unwrap_or(512))
            } else {
                None
            },
            sliding_pattern: if gemma { 6 } else { 1 },
            context_length: u("context_length").unwrap_or(4096),
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            scale_embeddings: gemma,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), InferenceError> {
        let bad = |m: String| Err(InferenceError::Model(m));
        if self.n_layer == 0 || self.n_embd == 0 || self.n_head == 0 || self.head_dim == 0 {
            return bad(format!("degenerate model dimensions: {self:?}"));
        }
        if self.n_kv_head == 0 || !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad(format!(
                "{} attention heads are not a multiple of {} kv heads",
                self.n_head, self.n_kv_head
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("odd head dimension {}", self.head_dim));
        }
        Ok(())
    }

    /// The sliding window of layer `il`, if it has one.
    pub fn layer_window(&self, il: usize) -> Option<usize> {
        let w = self.sliding_window?;
        (!(il + 1).is_multiple_of(self.sliding_pattern)).then_some(w)
    }

    /// The RoPE base of layer `il`.
    pub fn layer_rope_base(&self, il: usize) -> f32 {
        if self.layer_window(il).is_some() {
            self.rope_base_local
        } else {
            self.rope_base
        }
    }

    /// Bytes of KV cache one token takes (f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.n_layer * 2 * self.n_kv_head * self.head_dim * 4
    }
}

pub(crate) fn meta<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, InferenceError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| InferenceError::Model(format!("GGUF metadata has no {key}")))
}

pub(crate) fn meta_str<'a>(ct: &'a Content, key: &str) -> Result<&'a str, InferenceError> {
    meta(ct, key)?
        .to_string()
        .map(String::as_str)
        .map_err(|e| InferenceError::Model(format!("GGUF {key}: {e}")))
}

pub(crate) fn meta_u32(ct: &Content, key: &str) -> Result<u32, InferenceError> {
    let v = meta(ct, key)?;
    // Writers disagree on integer widths; accept any non-negative integer.
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I8(x) if *x >= 0 => *x as u64,
        Value::I16(x) if *x >= 0 => *x as u64,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        other => {
            return Err(InferenceError::Model(format!(
                "GGUF {key}: expected an unsigned integer, got {other:?}"
            )))
        }
    };
    u32::try_from(n).map_err(|_| InferenceError::Model(format!("GGUF {key}: {n} is too large")))
}

pub(crate) fn meta_f32(ct: &Content, key: &str) -> Result<f32, InferenceError> {
    match meta(ct, key)? {
        Value::F32(x) => Ok(*x),
        Value::F64(x) => Ok(*x as f32),
        other => Err(InferenceError::Model(format!(
            "GGUF {key}: expected a float, got {other:?}"
        ))),
    }
}

pub(crate) fn meta_bool(ct: &Content, key: &str) -> Option<bool> {
    match ct.metadata.get(key)? {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}
