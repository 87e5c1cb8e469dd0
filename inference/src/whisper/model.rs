//! Whisper's network on candle, built for batched serving.
//!
//! The weights are the ones `candle_transformers::models::whisper` loads
//! (Hugging Face names, its `Config`), but the forward pass is our own because
//! the stock model re-runs the whole token prefix at every step (it caches
//! only cross-attention) and has one sequence's state. Here:
//! - self-attention keeps a key/value cache, so a step costs one token;
//! - each row of a batch has its own prompt length and position, so windows
//!   from different jobs (with different previous-text prompts) decode together;
//! - finished rows leave the batch ([`DecoderState::keep_rows`]) instead of
//!   burning compute on padding;
//! - q/k/v are one fused matmul, and GELU is the exact (erf) form the
//!   checkpoints were trained with.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, Embedding, LayerNorm, Linear};
use candle_transformers::models::whisper::Config;

use super::attn::{decode_attention, RowMask};
use super::gelu::gelu_erf;
use crate::error::InferenceError;
use crate::int8::I8Matrix;

type Result<T> = std::result::Result<T, InferenceError>;

/// Windows per encoder pass on the CPU (see [`WhisperModel::encode`]).
const CPU_ENCODE_WINDOWS: usize = 2;

struct Weights<'a> {
    map: &'a HashMap<String, Tensor>,
    dtype: DType,
    device: &'a Device,
}

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        let t = self
            .map
            .get(name)
            .ok_or_else(|| InferenceError::Model(format!("missing weight {name}")))?;
        Ok(t.to_device(self.device)?.to_dtype(self.dtype)?)
    }
    fn get_or_zeros(&self, name: &str, n: usize) -> Result<Tensor> {
        match self.map.get(name) {
            Some(_) => self.get(name),
            None => Ok(Tensor::zeros(n, self.dtype, self.device)?),
        }
    }
    fn linear(&self, prefix: &str) -> Result<Linear> {
        let w = self.get(&format!("{prefix}.weight"))?;
        let b = self.map.contains_key(&format!("{prefix}.bias"));
        let bias = if b {
            Some(self.get(&format!("{prefix}.bias"))?)
        } else {
            None
        };
        Ok(Linear::new(w, bias))
    }
    fn layer_norm(&self, prefix: &str) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.get(&format!("{prefix}.weight"))?,
            self.get(&format!("{prefix}.bias"))?,
            1e-5,
        ))
    }
    /// q, k, v (k without bias) fused into one `[3d, d]` projection.
    fn fused_qkv(&self, prefix: &str, d: usize) -> Result<Linear> {
        let w = Tensor::cat(
            &[
                self.get(&format!("{prefix}.q_proj.weight"))?,
                self.get(&format!("{prefix}.k_proj.weight"))?,
                self.get(&format!("{prefix}.v_proj.weight"))?,
            ],
            0,
        )?;
        let b = Tensor::cat(
            &[
                self.get_or_zeros(&format!("{prefix}.q_proj.bias"), d)?,
                self.get_or_zeros(&format!("{prefix}.k_proj.bias"), d)?,
                self.get_or_zeros(&format!("{prefix}.v_proj.bias"), d)?,
            ],
            0,
        )?;
        Ok(Linear::new(w, Some(b)))
    }
    fn fused_kv(&self, prefix: &str, d: usize) -> Result<Linear> {
        let w = Tensor::cat(
            &[
                self.get(&format!("{prefix}.k_proj.weight"))?,
                self.get(&format!("{prefix}.v_proj.weight"))?,
            ],
            0,
        )?;
        let b = Tensor::cat(
            &[
                self.get_or_zeros(&format!("{prefix}.k_proj.bias"), d)?,
                self.get_or_zeros(&format!("{prefix}.v_proj.bias"), d)?,
            ],
            0,
        )?;
        Ok(Linear::new(w, Some(b)))
    }
}

fn split_heads(x: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    Ok(x.reshape((b, t, n_head, d / n_head))?
        .transpose(1, 2)?
        .contiguous()?)
}

fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, t, h * hd))?)
}

/// Scaled dot-product attention on `[b, h, t, hd]` tensors.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let hd = q.dim(D::Minus1)?;
    let scale = 1.0 / (hd as f64).sqrt();
    // Scale the queries, not the t×t scores: 64× fewer multiplies and one
    // less pass over the largest tensor in the encoder.
    let mut w = (q * scale)?.matmul(&k.t()?)?;
    if let Some(m) = mask {
        w = w.broadcast_add(m)?;
    }
    let w = candle_nn::ops::softmax_last_dim(&w)?;
    Ok(w.matmul(v)?)
}

/// A linear projection: dense (candle's matmul, any device and dtype), or
/// int8 on the CPU for `--compute-type int8` (CTranslate2's per-row int8,
/// [`I8Matrix`], bias included).
enum Proj {
    Dense(Linear),
    Int8(Arc<I8Matrix>),
}

impl From<Linear> for Proj {
    fn from(l: Linear) -> Self {
        Proj::Dense(l)
    }
}

impl Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Proj::Dense(l) => Ok(l.forward(x)?),
            Proj::Int8(w) => {
                let mut shape = x.dims().to_vec();
                let k = shape.last().copied().unwrap_or(0);
                if k != w.k {
                    return Err(InferenceError::Model(format!(
                        "int8 projection expects width {}, got {k}",
                        w.k
                    )));
                }
                let m = x.elem_count() / k.max(1);
                let v = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                let out = w.matmul(&v, m);
                if let Some(last) = shape.last_mut() {
                    *last = w.n;
                }
                Ok(Tensor::from_vec(out, shape, x.device())?)
            }
        }
    }

    /// To int8 weights with the bias carried along.
    fn quantize(&mut self) -> Result<()> {
        if let Proj::Dense(l) = self {
            let (n, k) = l.weight().dims2()?;
            let bias = match l.bias() {
                Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
                None => None,
            };
            let q = with_host_f32(l.weight(), |v| I8Matrix::quantize(v, n, k, bias.as_deref()))?
                .ok_or_else(|| InferenceError::Model(format!("cannot quantize a {n}x{k} layer")))?;
            *self = Proj::Int8(Arc::new(q));
        }
        Ok(())
    }
}

struct EncoderBlock {
    ln1: LayerNorm,
    qkv: Proj,
    out: Proj,
    ln2: LayerNorm,
    fc1: Proj,
    fc2: Proj,
    n_head: usize,
}

impl EncoderBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(D::Minus1)?;
        let h = self.ln1.forward(x)?;
        let qkv = self.qkv.forward(&h)?;
        if let Some(a) = super::attn::encoder_attention(&qkv, self.n_head)? {
            let x = (x + self.out.forward(&a)?)?;
            let h = gelu_erf(&self.fc1.forward(&self.ln2.forward(&x)?)?)?;
            return Ok((x + self.fc2.forward(&h)?)?);
        }
        let q = split_heads(&qkv.narrow(D::Minus1, 0, d)?, self.n_head)?;
        let k = split_heads(&qkv.narrow(D::Minus1, d, d)?, self.n_head)?;
        let v = split_heads(&qkv.narrow(D::Minus1, 2 * d, d)?, self.n_head)?;
        // One row at a time: a 1500×1500 score matrix per head is 54 MB per
        // row in f32; a batch of 8 at once would hold ~0.9 GB of scores.
        let b = q.dim(0)?;
        let a = if b == 1 {
            attention(&q, &k, &v, None)?
        } else {
            let rows = (0..b)
                .map(|r| {
                    attention(
                        &q.narrow(0, r, 1)?,
                        &k.narrow(0, r, 1)?,
                        &v.narrow(0, r, 1)?,
                        None,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&rows, 0)?
        };
        let a = merge_heads(&a)?;
        let x = (x + self.out.forward(&a)?)?;
        let h = gelu_erf(&self.fc1.forward(&self.ln2.forward(&x)?)?)?;
        Ok((x + self.fc2.forward(&h)?)?)
    }
}

struct DecoderBlock {
    ln1: LayerNorm,
    qkv: Proj,
    out: Proj,
    ln_x: LayerNorm,
    xq: Proj,
    xkv: Proj,
    xout: Proj,
    ln2: LayerNorm,
    fc1: Proj,
    fc2: Proj,
    n_head: usize,
}

/// The decoder's cross-attention keys and values for a batch of encoder
/// outputs ([`WhisperModel::cross_kv`]): per layer `[b, h, 1500, hd]`.
#[derive(Clone)]
pub struct CrossKv {
    layers: Vec<(Tensor, Tensor)>,
    rows: usize,
}

/// Per-row decoding state for a batch: self-attention caches, the encoder's
/// keys/values for cross-attention, and each row's prompt length.
pub struct DecoderState {
    /// Per layer, the self-attention keys and values so far.
    self_kv: Vec<Option<SelfKv>>,
    /// Per layer `(k, v)` over the encoder output, `[b0, h, 1500, hd]`.
    cross_kv: Vec<(Tensor, Tensor)>,
    /// On the CPU, which row of `cross_kv` each current row reads: rows
    /// that finish leave the map instead of `cross_kv` being copied (for a
    /// batch of 8 that was up to seven copies of the remaining rows' 147 MB
    /// of encoder keys and values). `None` is the identity.
    cross_rows: Option<Vec<usize>>,
    /// Tokens in each row's cache that are real (not right-padding).
    prompt_lens: Vec<usize>,
    /// Cache length after prefill (max prompt length).
    prefill_len: usize,
    /// Tokens appended after prefill (same for every row).
    steps: usize,
}

impl DecoderState {
    pub fn batch_size(&self) -> usize {
        self.prompt_lens.len()
    }

    /// Keep only the given rows (in this order): finished sequences leave.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<()> {
        if rows.len() == self.prompt_lens.len() {
            return Ok(());
        }
        let device = self.cross_kv.first().map(|(k, _)| k.device().clone());
        let Some(device) = device else {
            return Ok(());
        };
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &device,
        )?;
        for kv in self.self_kv.iter_mut().flatten() {
            kv.k = kv.k.index_select(&idx, 0)?;
            kv.v = kv.v.index_select(&idx, 0)?;
        }
        if device.is_cpu() {
            let old = self.cross_rows.take();
            self.cross_rows = Some(
                rows.iter()
                    .map(|&r| old.as_ref().map_or(r, |m| m[r]))
                    .collect(),
            );
        } else {
            for kv in self.cross_kv.iter_mut() {
                *kv = (kv.0.index_select(&idx, 0)?, kv.1.index_select(&idx, 0)?);
            }
        }
        self.prompt_lens = rows.iter().map(|&r| self.prompt_lens[r]).collect();
        Ok(())
    }
}

/// One decoder layer's self-attention keys and values, `[b, h, len, hd]`
/// as seen by attention.
///
/// On the CPU in f32 they live in buffers of the decoder's whole context
/// (`[b, h, max_target_positions, hd]`, allocated at prefill) that each
/// step writes one position of, and attention reads the first `len`
/// through strides. Growing them by `Tensor::cat` instead copied every
/// layer's whole cache into fresh memory on every step (for 8 rows ~15 MB
/// a step, most of it page faults), time the decode loop spent on one
/// core. Elsewhere (GPUs, f16) they are exactly `len` long and grow by
/// concatenation, which the generic attention path expects.
struct SelfKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl SelfKv {
    /// The cache after the prefill's keys and values `[b, h, t, hd]`.
    fn new(k: Tensor, v: Tensor, capacity: usize) -> Result<Self> {
        let len = k.dim(2)?;
        if !(k.device().is_cpu() && k.dtype() == DType::F32) || capacity <= len {
            return Ok(Self { k, v, len });
        }
        let (b, h, _, hd) = k.dims4()?;
        let buf = |x: &Tensor| -> Result<Tensor> {
            let t = Tensor::zeros((b, h, capacity, hd), DType::F32, x.device())?;
            t.slice_set(&x.contiguous()?, 2, 0)?;
            Ok(t)
        };
        Ok(Self {
            k: buf(&k)?,
            v: buf(&v)?,
            len,
        })
    }

    /// Appends one step's keys and values `[b, h, 1, hd]`.
    fn push(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        if self.k.dim(2)? > self.len {
            self.k.slice_set(&k.contiguous()?, 2, self.len)?;
            self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        } else {
            self.k = Tensor::cat(&[&self.k, k], 2)?;
            self.v = Tensor::cat(&[&self.v, v], 2)?;
        }
        self.len += 1;
        Ok(())
    }

    /// Keys and values `[b, h, len, hd]` (views into the buffers).
    fn view(&self) -> Result<(Tensor, Tensor)> {
        if self.k.dim(2)? == self.len {
            return Ok((self.k.clone(), self.v.clone()));
        }
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

/// Cross-attention scores kept for word timing, one slot per requested
/// `(layer, head)`.
struct Capture<'a> {
    heads: &'a [(usize, usize)],
    scores: Vec<Option<Tensor>>,
}

impl Capture<'_> {
    /// Scores of this layer's requested heads: `q·kᵀ/√d` in f32 (half
    /// precision would blur the softmax over 1500 frames).
    fn record(&mut self, layer: usize, q: &Tensor, k: &Tensor) -> Result<()> {
        for (slot, &(l, h)) in self.scores.iter_mut().zip(self.heads) {
            if l != layer {
                continue;
            }
            let qh = q.narrow(1, h, 1)?.to_dtype(DType::F32)?;
            let kh = k.narrow(1, h, 1)?.to_dtype(DType::F32)?;
            let scale = 1.0 / (qh.dim(D::Minus1)? as f64).sqrt();
            *slot = Some((qh * scale)?.matmul(&kh.t()?.contiguous()?)?);
        }
        Ok(())
    }
}

/// How decoder self-attention is masked in one pass.
#[derive(Clone, Copy)]
enum Attend<'a> {
    /// Prefill: a `[b, 1, t, t]` causal + padding mask.
    Prefill(&'a Tensor),
    /// One token per row: each row's valid key ranges.
    Step(&'a RowMask),
}

pub struct WhisperModel {
    pub config: Config,
    device: Device,
    dtype: DType,
    conv1: Conv1d,
    conv2: Conv1d,
    enc_pos: Tensor,
    enc_blocks: Vec<EncoderBlock>,
    enc_ln: LayerNorm,
    /// The token embeddings (also the logits matrix); `None` once
    /// [`Self::quantize_int8`] moved them to `logits_i8`.
    tok_emb: Option<Embedding>,
    dec_pos: Tensor,
    dec_blocks: Vec<DecoderBlock>,
    dec_ln: LayerNorm,
    /// With int8: the token-embedding matrix in int8, for the logits and
    /// the embedding lookups both.
    logits_i8: Option<Arc<I8Matrix>>,
}

/// Runs `f` on a CPU tensor's values as f32: in place when the tensor is
/// f32 and one contiguous run (weights as loaded), else on a converted
/// copy. Quantizing at load reads each weight once; a `to_vec1` copy of
/// every matrix first would touch the model's size again in fresh pages.
fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&cpu.as_slice::<f32>()?[a..b]));
        }
    }
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&v))
}

fn sinusoids(length: usize, channels: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let inc = (10_000f64).ln() / (channels / 2 - 1) as f64;
    let mut v = vec![0f32; length * channels];
    for t in 0..length {
        for i in 0..channels / 2 {
            let x = t as f64 * (-(i as f64) * inc).exp();
            v[t * channels + i] = x.sin() as f32;
            v[t * channels + channels / 2 + i] = x.cos() as f32;
        }
    }
    Ok(Tensor::from_vec(v, (length, channels), device)?.to_dtype(dtype)?)
}

impl WhisperModel {
    /// Build from Hugging Face–named tensors (see `earshot_models`).
    pub fn load(
        tensors: &HashMap<String, Tensor>,
        config: Config,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let w = Weights {
            map: tensors,
            dtype,
            device,
        };
        let d = config.d_model;
        let conv = |p: &str, stride| -> Result<Conv1d> {
            Ok(Conv1d::new(
                w.get(&format!("model.encoder.{p}.weight"))?,
                Some(w.get(&format!("model.encoder.{p}.bias"))?),
                Conv1dConfig {
                    padding: 1,
                    stride,
                    dilation: 1,
                    groups: 1,
                    cudnn_fwd_algo: None,
                },
            ))
        };
        let enc_pos = match tensors.get("model.encoder.embed_positions.weight") {
            Some(_) => w.get("model.encoder.embed_positions.weight")?,
            None => sinusoids(config.max_source_positions, d, device, dtype)?,
        };
        let enc_blocks = (0..config.encoder_layers)
            .map(|i| {
                let p = format!("model.encoder.layers.{i}");
                Ok(EncoderBlock {
                    ln1: w.layer_norm(&format!("{p}.self_attn_layer_norm"))?,
                    qkv: w.fused_qkv(&format!("{p}.self_attn"), d)?.into(),
                    out: w.linear(&format!("{p}.self_attn.out_proj"))?.into(),
                    ln2: w.layer_norm(&format!("{p}.final_layer_norm"))?,
                    fc1: w.linear(&format!("{p}.fc1"))?.into(),
                    fc2: w.linear(&format!("{p}.fc2"))?.into(),
                    n_head: config.encoder_attention_heads,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec_blocks = (0..config.decoder_layers)
            .map(|i| {
                let p = format!("model.decoder.layers.{i}");
                Ok(DecoderBlock {
                    ln1: w.layer_norm(&format!("{p}.self_attn_layer_norm"))?,
                    qkv: w.fused_qkv(&format!("{p}.self_attn"), d)?.into(),
                    out: w.linear(&format!("{p}.self_attn.out_proj"))?.into(),
                    ln_x: w.layer_norm(&format!("{p}.encoder_attn_layer_norm"))?,
                    xq: w.linear(&format!("{p}.encoder_attn.q_proj"))?.into(),
                    xkv: w.fused_kv(&format!("{p}.encoder_attn"), d)?.into(),
                    xout: w.linear(&format!("{p}.encoder_attn.out_proj"))?.into(),
                    ln2: w.layer_norm(&format!("{p}.final_layer_norm"))?,
                    fc1: w.linear(&format!("{p}.fc1"))?.into(),
                    fc2: w.linear(&format!("{p}.fc2"))?.into(),
                    n_head: config.decoder_attention_heads,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: conv("conv1", 1)?,
            conv2: conv("conv2", 2)?,
            enc_pos,
            enc_blocks,
            enc_ln: w.layer_norm("model.encoder.layer_norm")?,
            tok_emb: Some(Embedding::new(
                w.get("model.decoder.embed_tokens.weight")?,
                d,
            )),
            dec_pos: w.get("model.decoder.embed_positions.weight")?,
            dec_blocks,
            dec_ln: w.layer_norm("model.decoder.layer_norm")?,
            logits_i8: None,
            config,
            device: device.clone(),
            dtype,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Encode a batch of mel windows `[b, n_mels, 3000]` to `[b, 1500, d]`.
    ///
    /// On the CPU at most [`CPU_ENCODE_WINDOWS`] windows go through at once:
    /// every product there already has 1500+ rows, and a batch of 8 made
    /// 55–74 MB intermediates that the allocator hands back to the kernel
    /// and faults in afresh (huge-page zeroing was ~10% of a batched run).
    /// Peak RSS on a 592 s file went from 0.96 GB to 0.77 GB.
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor> {
        let b = mel.dim(0)?;
        if !self.device.is_cpu() || b <= CPU_ENCODE_WINDOWS {
            return self.encode_all(mel);
        }
        let parts = (0..b)
            .step_by(CPU_ENCODE_WINDOWS)
            .map(|i| self.encode_all(&mel.narrow(0, i, CPU_ENCODE_WINDOWS.min(b - i))?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// [`Self::encode`] in one pass.
    fn encode_all(&self, mel: &Tensor) -> Result<Tensor> {
        let mel = mel.to_dtype(self.dtype)?;
        let x = gelu_erf(&self.conv1.forward(&mel)?)?;
        let x = gelu_erf(&self.conv2.forward(&x)?)?;
        let x = x.transpose(1, 2)?;
        let t = x.dim(1)?;
        let mut x = x.broadcast_add(&self.enc_pos.narrow(0, 0, t)?)?;
        for b in &self.enc_blocks {
            x = b.forward(&x)?;
        }
        Ok(self.enc_ln.forward(&x)?)
    }

    /// Start decoding rows against encoder outputs `[b, 1500, d]`.
    pub fn start(&self, audio: &Tensor) -> Result<DecoderState> {
        let cross = self.cross_kv(audio)?;
        let rows: Vec<usize> = (0..cross.rows).collect();
        self.start_on(&cross, &rows)
    }

    /// Every decoder layer's cross-attention keys and values over encoder
    /// outputs `[b, 1500, d]`: computed once per round of windows and
    /// shared by its passes ([`Self::start_on`]). Recomputing them for the
    /// word-timing pass and each temperature fallback was a GEMM of
    /// 1500 × d × 2d per row and layer each time.
    pub fn cross_kv(&self, audio: &Tensor) -> Result<CrossKv> {
        let d = self.config.d_model;
        let mut layers = Vec::with_capacity(self.dec_blocks.len());
        for b in &self.dec_blocks {
            let kv = b.xkv.forward(audio)?;
            let k = split_heads(&kv.narrow(D::Minus1, 0, d)?, b.n_head)?;
            let v = split_heads(&kv.narrow(D::Minus1, d, d)?, b.n_head)?;
            layers.push((k, v));
        }
        Ok(CrossKv {
            layers,
            rows: audio.dim(0)?,
        })
    }

    /// Start decoding `rows` of `cross` (in this order). On the CPU the
    /// state reads them through its row map (no copy); elsewhere they are
    /// gathered.
    pub fn start_on(&self, cross: &CrossKv, rows: &[usize]) -> Result<DecoderState> {
        if let Some(&r) = rows.iter().find(|&&r| r >= cross.rows) {
            return Err(InferenceError::Model(format!(
                "row {r} of a cross-attention cache of {} rows",
                cross.rows
            )));
        }
        let identity = rows.len() == cross.rows && rows.iter().enumerate().all(|(i, &r)| i == r);
        let on_cpu = self.device.is_cpu();
        let (cross_kv, cross_rows) = if identity || on_cpu {
            (cross.layers.clone(), (!identity).then(|| rows.to_vec()))
        } else {
            let idx = Tensor::from_vec(
                rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                rows.len(),
                &self.device,
            )?;
            let gathered = cross
                .layers
                .iter()
                .map(|(k, v)| Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)))
                .collect::<Result<Vec<_>>>()?;
            (gathered, None)
        };
        Ok(DecoderState {
            self_kv: (0..self.dec_blocks.len()).map(|_| None).collect(),
            cross_kv,
            cross_rows,
            prompt_lens: vec![0; rows.len()],
            prefill_len: 0,
            steps: 0,
        })
    }

    /// Run each row's prompt (right-padded to the longest) through the
    /// decoder; returns hidden states `[b, t_max, d]`.
    pub fn prefill(&self, state: &mut DecoderState, prompts: &[Vec<u32>]) -> Result<Tensor> {
        self.prefill_inner(state, prompts, None)
    }

    /// [`Self::prefill`] that also returns the given `(layer, head)` pairs'
    /// cross-attention scores before the softmax (QKᵀ/√d, in f32) as
    /// `[b, heads, t_max, audio_frames]`: what word timing aligns on.
    pub fn prefill_aligned(
        &self,
        state: &mut DecoderState,
        prompts: &[Vec<u32>],
        heads: &[(usize, usize)],
    ) -> Result<(Tensor, Tensor)> {
        for &(l, h) in heads {
            if l >= self.dec_blocks.len() || h >= self.config.decoder_attention_heads {
                return Err(InferenceError::Model(format!(
                    "alignment head ({l}, {h}) outside the decoder's {} layers × {} heads",
                    self.dec_blocks.len(),
                    self.config.decoder_attention_heads
                )));
            }
        }
        if heads.is_empty() {
            return Err(InferenceError::Model("no alignment heads".into()));
        }
        let mut capture = Capture {
            heads,
            scores: vec![None; heads.len()],
        };
        let hidden = self.prefill_inner(state, prompts, Some(&mut capture))?;
        let scores = capture
            .scores
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| InferenceError::Model("an alignment head was not captured".into()))?;
        Ok((hidden, Tensor::cat(&scores, 1)?))
    }

    fn prefill_inner(
        &self,
        state: &mut DecoderState,
        prompts: &[Vec<u32>],
        capture: Option<&mut Capture<'_>>,
    ) -> Result<Tensor> {
        let b = prompts.len();
        if b != state.batch_size() {
            return Err(InferenceError::Model(format!(
                "{b} prompts for a batch of {}",
                state.batch_size()
            )));
        }
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if t == 0 || t > self.config.max_target_positions {
            return Err(InferenceError::Model(format!(
                "prompt length {t} outside 1..={}",
                self.config.max_target_positions
            )));
        }
        let mut toks = Vec::with_capacity(b * t);
        let mut mask = vec![0f32; b * t * t];
        // Causal, and no key past a row's own prompt. Every query still sees
        // key 0 (prompts are non-empty), so padded rows stay finite.
        for (r, p) in prompts.iter().enumerate() {
            toks.extend(p.iter().copied());
            toks.extend(std::iter::repeat_n(p[0], t - p.len()));
            for q in 0..t {
                for k in 0..t {
                    if k > q || k >= p.len() {
                        mask[(r * t + q) * t + k] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let toks = Tensor::from_vec(toks, (b, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, 1, t, t), &self.device)?.to_dtype(self.dtype)?;
        let pos = self.dec_pos.narrow(0, 0, t)?;
        let x = self.embed(&toks)?.broadcast_add(&pos)?;
        for s in state.self_kv.iter_mut() {
            *s = None;
        }
        state.prompt_lens = prompts.iter().map(Vec::len).collect();
        state.prefill_len = t;
        state.steps = 0;
        self.run_blocks(state, x, Attend::Prefill(&mask), capture)
    }

    /// One token per row; returns hidden states `[b, d]`.
    pub fn step(&self, state: &mut DecoderState, tokens: &[u32]) -> Result<Tensor> {
        let b = tokens.len();
        let mut pos = Vec::with_capacity(b);
        for &pl in &state.prompt_lens {
            let p = pl + state.steps;
            if p >= self.config.max_target_positions {
                return Err(InferenceError::Model("decoder context is full".into()));
            }
            pos.push(p as u32);
        }
        let toks = Tensor::from_vec(tokens.to_vec(), (b, 1), &self.device)?;
        let pos = Tensor::from_vec(pos, b, &self.device)?;
        let pe = self.dec_pos.index_select(&pos, 0)?.unsqueeze(1)?;
        let x = self.embed(&toks)?.broadcast_add(&pe)?;
        let rows = RowMask {
            prompt_lens: state.prompt_lens.clone(),
            prefill_len: state.prefill_len,
        };
        let h = self.run_blocks(state, x, Attend::Step(&rows), None)?;
        state.steps += 1;
        Ok(h.squeeze(1)?)
    }

    fn run_blocks(
        &self,
        state: &mut DecoderState,
        mut x: Tensor,
        attend: Attend<'_>,
        mut capture: Option<&mut Capture<'_>>,
    ) -> Result<Tensor> {
        let d = self.config.d_model;
        let rows = match attend {
            Attend::Step(r) => Some(r),
            Attend::Prefill(_) => None,
        };
        // The step mask as a tensor is only needed where the fused kernel
        // does not apply (GPUs); build it once, on first use.
        let mut step_mask: Option<Tensor> = None;
        for (i, b) in self.dec_blocks.iter().enumerate() {
            let h = b.ln1.forward(&x)?;
            let qkv = b.qkv.forward(&h)?;
            let q = split_heads(&qkv.narrow(D::Minus1, 0, d)?, b.n_head)?;
            let k = split_heads(&qkv.narrow(D::Minus1, d, d)?, b.n_head)?;
            let v = split_heads(&qkv.narrow(D::Minus1, 2 * d, d)?, b.n_head)?;
            let (k, v) = match &mut state.self_kv[i] {
                Some(kv) => {
                    kv.push(&k, &v)?;
                    kv.view()?
                }
                slot @ None => {
                    *slot = Some(SelfKv::new(
                        k.clone(),
                        v.clone(),
                        self.config.max_target_positions,
                    )?);
                    (k, v)
                }
            };
            let fused = match rows {
                Some(r) => decode_attention(&q, &k, &v, Some(r), None)?,
                None => None,
            };
            let a = match fused {
                Some(a) => a,
                None => {
                    let mask = match attend {
                        Attend::Prefill(m) => m.clone(),
                        Attend::Step(r) => match &step_mask {
                            Some(m) => m.clone(),
                            None => {
                                let m = r.to_tensor(k.dim(2)?, &self.device, self.dtype)?;
                                step_mask = Some(m.clone());
                                m
                            }
                        },
                    };
                    attention(&q, &k, &v, Some(&mask))?
                }
            };
            let a = merge_heads(&a)?;
            x = (x + b.out.forward(&a)?)?;
            let h = b.ln_x.forward(&x)?;
            let q = split_heads(&b.xq.forward(&h)?, b.n_head)?;
            let (ck, cv) = &state.cross_kv[i];
            let map = state.cross_rows.as_deref();
            let fused = match rows {
                Some(_) => decode_attention(&q, ck, cv, None, map)?,
                None => None,
            };
            // The generic path and word timing need the rows gathered.
            let gathered = |t: &Tensor| -> Result<Tensor> {
                Ok(match map {
                    Some(m) => {
                        let idx: Vec<u32> = m.iter().map(|&r| r as u32).collect();
                        t.index_select(&Tensor::from_vec(idx, m.len(), t.device())?, 0)?
                    }
                    None => t.clone(),
                })
            };
            if let Some(c) = capture.as_deref_mut() {
                c.record(i, &q, &gathered(ck)?)?;
            }
            let a = match fused {
                Some(a) => a,
                None => attention(&q, &gathered(ck)?, &gathered(cv)?, None)?,
            };
            let a = merge_heads(&a)?;
            x = (x + b.xout.forward(&a)?)?;
            let h = gelu_erf(&b.fc1.forward(&b.ln2.forward(&x)?)?)?;
            x = (x + b.fc2.forward(&h)?)?;
        }
        Ok(self.dec_ln.forward(&x)?)
    }

    /// Switch every linear layer and the token embeddings to int8 as faster-whisper's
    /// `compute_type="int8"` holds them: every `*weight` but the two
    /// convolutions' (CTranslate2's oneDNN build keeps those float). The
    /// embedding lookups then read the dequantized int8 rows, and the
    /// logits are an int8 product with the same matrix. CPU f32 models only.
    pub fn quantize_int8(&mut self) -> Result<()> {
        if !self.device.is_cpu() || self.dtype != DType::F32 {
            return Err(InferenceError::BadOption(
                "int8 runs on the CPU (use float16 on CUDA)".into(),
            ));
        }
        for b in &mut self.dec_blocks {
            for p in [
                &mut b.qkv,
                &mut b.out,
                &mut b.xq,
                &mut b.xkv,
                &mut b.xout,
                &mut b.fc1,
                &mut b.fc2,
            ] {
                p.quantize()?;
            }
        }
        for b in &mut self.enc_blocks {
            for p in [&mut b.qkv, &mut b.out, &mut b.fc1, &mut b.fc2] {
                p.quantize()?;
            }
        }
        let Some(table) = &self.tok_emb else {
            return Ok(()); // quantized already
        };
        let e = table.embeddings();
        let (n, k) = e.dims2()?;
        let q = with_host_f32(e, |v| I8Matrix::quantize(v, n, k, None))?
            .ok_or_else(|| InferenceError::Model("cannot quantize the embeddings".into()))?;
        // Lookups read the int8 rows from now on (see `embed`): the f32
        // table (80 MB for the 51,864-token vocabulary at d=384) is freed
        // rather than replaced by a dequantized copy of the same size.
        self.tok_emb = None;
        self.logits_i8 = Some(Arc::new(q));
        Ok(())
    }

    /// Token embeddings for `toks` (any shape of ids) → `[..., d]`. int8:
    /// each looked-up row dequantized (`q / scale`), the values
    /// CTranslate2's int8 embedding gives.
    fn embed(&self, toks: &Tensor) -> Result<Tensor> {
        match (&self.logits_i8, &self.tok_emb) {
            (Some(q), _) => {
                let ids = toks.flatten_all()?.to_vec1::<u32>()?;
                if let Some(&bad) = ids.iter().find(|&&i| i as usize >= q.n) {
                    return Err(InferenceError::Model(format!(
                        "token id {bad} is outside the {}-token vocabulary",
                        q.n
                    )));
                }
                let mut shape = toks.dims().to_vec();
                shape.push(q.k);
                Ok(Tensor::from_vec(q.rows(&ids), shape, &self.device)?)
            }
            (None, Some(e)) => Ok(e.forward(toks)?),
            (None, None) => Err(InferenceError::Model("no token embeddings".into())),
        }
    }

    /// Vocabulary logits for hidden states `[n, d]` → `[n, vocab]` (f32).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        if let Some(q) = &self.logits_i8 {
            let (n, d) = hidden.dims2()?;
            let v = hidden
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if d != q.k {
                return Err(InferenceError::Model(format!(
                    "hidden size {d} does not match the {}-wide logits matrix",
                    q.k
                )));
            }
            return Ok(Tensor::from_vec(q.matmul(&v, n), (n, q.n), &self.device)?);
        }
        let Some(table) = &self.tok_emb else {
            return Err(InferenceError::Model("no token embeddings".into()));
        };
        let w = table.embeddings();
        Ok(hidden.matmul(&w.t()?)?.to_dtype(DType::F32)?)
    }

    /// Hidden state of row `r` at position `p` of a `[b, t, d]` prefill.
    pub fn pick(hidden: &Tensor, picks: &[(usize, usize)]) -> Result<Tensor> {
        let rows = picks
            .iter()
            .map(|&(r, p)| hidden.i((r, p)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}
