//! A decoder-only transformer over quantized GGUF weights that decodes many
//! sequences in one forward pass.
//!
//! candle-transformers' quantized models keep a single KV cache inside the
//! model, so they run one sequence at a time. Here the model is immutable
//! (shared by every request) and each sequence owns a [`SeqCache`]; one
//! [`LlmModel::forward`] call takes any mix of sequences, some feeding a
//! prompt chunk and some one new token, packs all their tokens into one
//! matrix for the projections and MLPs, and only splits them for attention.
//! That is what makes continuous batching possible: the weights are read
//! once per step however many sequences are in it.

use std::borrow::Cow;
use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::attn;
use super::config::{Activation, LlmConfig, RopeStyle};
use crate::error::InferenceError;
use crate::q8::Q8Matrix;

type Result<T> = std::result::Result<T, InferenceError>;

/// A weight matrix: candle's quantized matmul, or on CPU for Q8_0 our
/// batched kernel ([`Q8Matrix`]).
#[derive(Debug)]
enum Weight {
    Q(QMatMul),
    Q8(Arc<Q8Matrix>),
}

impl Weight {
    fn new(q: QTensor) -> Result<Self> {
        if q.device().is_cpu() && q.dtype() == GgmlDType::Q8_0 {
            let (n, k) = q.shape().dims2()?;
            if let Some(m) = Q8Matrix::from_q8_0_bytes(&q.data()?, n, k) {
                return Ok(Self::Q8(Arc::new(m)));
            }
        }
        Ok(Self::Q(QMatMul::from_qtensor(q)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Q(w) => Ok(w.forward(x)?),
            Self::Q8(w) => {
                let (m, k) = x.dims2()?;
                let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                debug_assert_eq!(k, w.k);
                Ok(Tensor::from_vec(w.matmul(&xs, m), (m, w.n), x.device())?)
            }
        }
    }
}

/// A linear layer with optional bias.
#[derive(Debug)]
struct Linear {
    w: Weight,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Debug)]
struct Layer {
    attn_norm: Tensor,
    /// q, k and v in one matmul when their quantization types match.
    qkv: Qkv,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    wo: Linear,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    /// gate and up, fused when their types match.
    gate_up: GateUp,
    down: Linear,
    post_ffn_norm: Option<Tensor>,
    window: Option<usize>,
    rope_base: f32,
}

#[derive(Debug)]
enum Qkv {
    Fused(Linear),
    Split(Linear, Linear, Linear),
}

#[derive(Debug)]
enum GateUp {
    Fused(Linear),
    Split(Linear, Linear),
}

/// The weights of one model. Immutable: share it behind an `Arc`.
#[derive(Debug)]
pub struct LlmModel {
    cfg: LlmConfig,
    device: Device,
    embed: Embedding,
    layers: Vec<Layer>,
    out_norm: Tensor,
    output: Weight,
    vocab: usize,
}

#[derive(Debug)]
enum Embedding {
    Q(Arc<QTensor>),
    Q8(Arc<Q8Matrix>),
}

/// One sequence's keys and values for every layer.
#[derive(Debug)]
pub struct SeqCache {
    layers: Vec<LayerCache>,
    len: usize,
    cap: usize,
}

#[derive(Debug)]
enum LayerCache {
    /// Rows `[pos][kv_head][head_dim]`, appended in place.
    Cpu { k: Vec<f32>, v: Vec<f32> },
    /// Preallocated `[cap, kv_heads, head_dim]`, filled with `slice_set`.
    Dev { k: Tensor, v: Tensor },
}

impl SeqCache {
    /// Tokens cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most tokens this cache can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

/// One sequence's part of a forward step.
pub struct SeqStep<'a> {
    /// Tokens to feed: a prompt chunk or the last sampled token.
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
    /// Whether to return logits for the last of `tokens`.
    pub logits: bool,
}

impl LlmModel {
    /// Loads a model from an open GGUF file onto `device`.
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        let cfg = LlmConfig::from_gguf(ct)?;
        let mut get = |name: &str| -> Result<QTensor> { tensor(ct, reader, name, device) };
        let embed = Arc::new(get("token_embd.weight")?);
        let (vocab, embd) = embed.shape().dims2()?;
        if embd != cfg.n_embd {
            return Err(InferenceError::Model(format!(
                "token_embd is {vocab}x{embd} but embedding_length is {}",
                cfg.n_embd
            )));
        }
        let norm = |q: QTensor| -> Result<Tensor> { Ok(q.dequantize(device)?) };
        let out_norm = norm(get("output_norm.weight")?)?;
        let (embed, output) = if device.is_cpu() && embed.dtype() == GgmlDType::Q8_0 {
            // One Q8_0 copy serves the lookup and (when tied) the output.
            let m = Arc::new(
                Q8Matrix::from_q8_0_bytes(&embed.data()?, vocab, embd)
                    .ok_or_else(|| InferenceError::Model("malformed Q8_0 token_embd".into()))?,
            );
            let output = match get("output.weight") {
                Ok(w) => Weight::new(for_device(w, device)?)?,
                Err(_) => Weight::Q8(m.clone()),
            };
            (Embedding::Q8(m), output)
        } else {
            let output = match get("output.weight") {
                Ok(w) => Weight::new(for_device(w, device)?)?,
                Err(_) => Weight::Q(QMatMul::from_arc(embed.clone())?),
            };
            (Embedding::Q(embed), output)
        };
        // Every layer holds several tensors: a block count beyond the file's
        // tensor count is a lie, and must not size an allocation (found by
        // fuzzing: block_count = 2^32 - 1 asked for 567 GB here).
        if cfg.n_layer > ct.tensor_infos.len() {
            return Err(InferenceError::Model(format!(
                "block_count {} but the GGUF holds only {} tensors",
                cfg.n_layer,
                ct.tensor_infos.len()
            )));
        }
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for il in 0..cfg.n_layer {
            let p = format!("blk.{il}");
            let mut opt = |name: &str| -> Result<Option<QTensor>> {
                let full = format!("{p}.{name}");
                if ct.tensor_infos.contains_key(&full) {
                    Ok(Some(get(&full)?))
                } else {
                    Ok(None)
                }
            };
            macro_rules! req {
                ($name:expr) => {
                    opt($name)?.ok_or_else(|| {
                        InferenceError::Model(format!("GGUF has no tensor {p}.{}", $name))
                    })?
                };
            }
            let wq = for_device(req!("attn_q.weight"), device)?;
            let wk = for_device(req!("attn_k.weight"), device)?;
            let wv = for_device(req!("attn_v.weight"), device)?;
            let bq = opt("attn_q.bias")?;
            let bk = opt("attn_k.bias")?;
            let bv = opt("attn_v.bias")?;
            let qkv = match (fuse_rows(&[&wq, &wk, &wv], device)?, &bq, &bk, &bv) {
                (Some(w), None, None, None) => Qkv::Fused(Linear {
                    w: Weight::new(w)?,
                    b: None,
                }),
                (Some(w), Some(bq), Some(bk), Some(bv)) => {
                    let b = Tensor::cat(
                        &[
                            bq.dequantize(device)?,
                            bk.dequantize(device)?,
                            bv.dequantize(device)?,
                        ],
                        0,
                    )?;
                    Qkv::Fused(Linear {
                        w: Weight::new(w)?,
                        b: Some(b),
                    })
                }
                _ => Qkv::Split(
                    linear(wq, bq, device)?,
                    linear(wk, bk, device)?,
                    linear(wv, bv, device)?,
                ),
            };
            let gate = for_device(req!("ffn_gate.weight"), device)?;
            let up = for_device(req!("ffn_up.weight"), device)?;
            let gate_up = match fuse_rows(&[&gate, &up], device)? {
                Some(w) => GateUp::Fused(Linear {
                    w: Weight::new(w)?,
                    b: None,
                }),
                None => GateUp::Split(linear(gate, None, device)?, linear(up, None, device)?),
            };
            let wo = linear(
                for_device(req!("attn_output.weight"), device)?,
                None,
                device,
            )?;
            let down = linear(for_device(req!("ffn_down.weight"), device)?, None, device)?;
            let attn_norm = norm(req!("attn_norm.weight"))?;
            let ffn_norm = norm(req!("ffn_norm.weight"))?;
            let q_norm = opt("attn_q_norm.weight")?.map(norm).transpose()?;
            let k_norm = opt("attn_k_norm.weight")?.map(norm).transpose()?;
            let post_attn_norm = opt("post_attention_norm.weight")?.map(norm).transpose()?;
            let post_ffn_norm = opt("post_ffw_norm.weight")?.map(norm).transpose()?;
            layers.push(Layer {
                attn_norm,
                qkv,
                q_norm,
                k_norm,
                wo,
                post_attn_norm,
                ffn_norm,
                gate_up,
                down,
                post_ffn_norm,
                window: cfg.layer_window(il),
                rope_base: cfg.layer_rope_base(il),
            });
        }
        Ok(Self {
            cfg,
            device: device.clone(),
            embed,
            layers,
            out_norm,
            output,
            vocab,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// A cache for a sequence of at most `cap` tokens (prompt + output).
    pub fn new_cache(&self, cap: usize) -> Result<SeqCache> {
        let c = &self.cfg;
        let row = c.n_kv_head * c.head_dim;
        let mut layers = Vec::with_capacity(c.n_layer);
        for _ in 0..c.n_layer {
            layers.push(if self.device.is_cpu() {
                LayerCache::Cpu {
                    k: Vec::with_capacity(cap * row),
                    v: Vec::with_capacity(cap * row),
                }
            } else {
                let shape = (cap, c.n_kv_head, c.head_dim);
                LayerCache::Dev {
                    k: Tensor::zeros(shape, DType::F32, &self.device)?,
                    v: Tensor::zeros(shape, DType::F32, &self.device)?,
                }
            });
        }
        Ok(SeqCache {
            layers,
            len: 0,
            cap,
        })
    }

    /// Runs one step for every sequence in `steps` together. Returns the
    /// logits (`[n, vocab]`, f32, in `steps` order) of the sequences that
    /// asked for them, or `None` when none did.
    pub fn forward(&self, steps: &mut [SeqStep<'_>]) -> Result<Option<Tensor>> {
        self.forward_with(steps, attn::default_path(&self.device))
    }

    pub(crate) fn forward_with(
        &self,
        steps: &mut [SeqStep<'_>],
        path: attn::Path,
    ) -> Result<Option<Tensor>> {
        let c = &self.cfg;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut logit_rows = Vec::new();
        for s in steps.iter() {
            if s.tokens.is_empty() {
                return Err(InferenceError::BadOption("empty step".into()));
            }
            if s.cache.len + s.tokens.len() > s.cache.cap {
                return Err(InferenceError::BadOption(format!(
                    "sequence of {} tokens would exceed its cache of {}",
                    s.cache.len + s.tokens.len(),
                    s.cache.cap
                )));
            }
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= self.vocab) {
                return Err(InferenceError::BadOption(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.vocab
                )));
            }
            ids.extend_from_slice(s.tokens);
            positions.extend((0..s.tokens.len()).map(|i| s.cache.len + i));
            if s.logits {
                logit_rows.push((ids.len() - 1) as u32);
            }
        }
        let t = ids.len();
        let ids_t = Tensor::from_vec(ids, t, &self.device)?;
        let mut x = match &self.embed {
            Embedding::Q(e) => e.embedding(&ids_t)?,
            Embedding::Q8(m) => Tensor::from_vec(
                m.rows(ids_t.to_vec1::<u32>()?.as_slice()),
                (t, c.n_embd),
                &self.device,
            )?,
        };
        if c.scale_embeddings {
            x = (x * (c.n_embd as f64).sqrt())?;
        }
        // Sequence spans in the packed token matrix.
        let mut spans = Vec::with_capacity(steps.len());
        let mut off = 0;
        for s in steps.iter() {
            spans.push((off, s.tokens.len(), s.cache.len));
            off += s.tokens.len();
        }
        let mut rope_tables: Vec<(f32, Tensor, Tensor)> = Vec::new();
        for (il, layer) in self.layers.iter().enumerate() {
            let (cos, sin) = match rope_tables.iter().find(|r| r.0 == layer.rope_base) {
                Some((_, cos, sin)) => (cos.clone(), sin.clone()),
                None => {
                    let (cos, sin) =
                        rope_table(&positions, c.head_dim, layer.rope_base, &self.device)?;
                    rope_tables.push((layer.rope_base, cos.clone(), sin.clone()));
                    (cos, sin)
                }
            };
            let residual = &x;
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.rms_eps as f32)?;
            let (q, k, v) = match &layer.qkv {
                Qkv::Fused(l) => {
                    let qkv = l.forward(&h)?;
                    let nq = c.n_head * c.head_dim;
                    let nk = c.n_kv_head * c.head_dim;
                    (
                        qkv.narrow(1, 0, nq)?,
                        qkv.narrow(1, nq, nk)?,
                        qkv.narrow(1, nq + nk, nk)?,
                    )
                }
                Qkv::Split(wq, wk, wv) => (wq.forward(&h)?, wk.forward(&h)?, wv.forward(&h)?),
            };
            let mut q = q.contiguous()?.reshape((t, c.n_head, c.head_dim))?;
            let mut k = k.contiguous()?.reshape((t, c.n_kv_head, c.head_dim))?;
            let v = v.contiguous()?.reshape((t, c.n_kv_head, c.head_dim))?;
            if let Some(w) = &layer.q_norm {
                q = candle_nn::ops::rms_norm(&q, w, c.rms_eps as f32)?;
            }
            if let Some(w) = &layer.k_norm {
                k = candle_nn::ops::rms_norm(&k, w, c.rms_eps as f32)?;
            }
            let q = apply_rope(&q, &cos, &sin, c.rope_style)?;
            let k = apply_rope(&k, &cos, &sin, c.rope_style)?;
            let attn = attn::attend(
                path,
                &q,
                &k,
                &v,
                steps,
                &spans,
                il,
                layer.window,
                c.attn_scale,
            )?;
            let mut o = layer.wo.forward(&attn)?;
            if let Some(w) = &layer.post_attn_norm {
                o = candle_nn::ops::rms_norm(&o, w, c.rms_eps as f32)?;
            }
            let x1 = (residual + o)?;
            let h = candle_nn::ops::rms_norm(&x1, &layer.ffn_norm, c.rms_eps as f32)?;
            let (gate, up) = match &layer.gate_up {
                GateUp::Fused(l) => {
                    let gu = l.forward(&h)?;
                    (gu.narrow(1, 0, c.n_ff)?, gu.narrow(1, c.n_ff, c.n_ff)?)
                }
                GateUp::Split(g, u) => (g.forward(&h)?, u.forward(&h)?),
            };
            let gate = match c.activation {
                Activation::Silu => candle_nn::ops::silu(&gate)?,
                Activation::GeluTanh => gate.gelu()?,
            };
            let mut m = layer.down.forward(&(gate * up)?)?;
            if let Some(w) = &layer.post_ffn_norm {
                m = candle_nn::ops::rms_norm(&m, w, c.rms_eps as f32)?;
            }
            x = (x1 + m)?;
        }
        for (s, &(_, n, _)) in steps.iter_mut().zip(&spans) {
            s.cache.len += n;
        }
        if logit_rows.is_empty() {
            return Ok(None);
        }
        let n = logit_rows.len();
        let rows = Tensor::from_vec(logit_rows, n, &self.device)?;
        let last = x.index_select(&rows, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.out_norm, c.rms_eps as f32)?;
        let logits = self.output.forward(&last)?;
        Ok(Some(logits.to_dtype(DType::F32)?))
    }
}

/// Appends `k` and `v` rows `[n, kv_heads, head_dim]` for layer `il`.
pub(crate) fn cache_append(cache: &mut SeqCache, il: usize, k: &Tensor, v: &Tensor) -> Result<()> {
    let pos = cache.len;
    match &mut cache.layers[il] {
        LayerCache::Cpu { k: kc, v: vc } => {
            kc.extend_from_slice(&k.flatten_all()?.to_vec1::<f32>()?);
            vc.extend_from_slice(&v.flatten_all()?.to_vec1::<f32>()?);
        }
        LayerCache::Dev { k: kc, v: vc } => {
            kc.slice_set(&k.to_dtype(DType::F32)?.contiguous()?, 0, pos)?;
            vc.slice_set(&v.to_dtype(DType::F32)?.contiguous()?, 0, pos)?;
        }
    }
    Ok(())
}

/// Keys and values `[len, kv_heads, head_dim]` of layer `il` up to `len`.
pub(crate) fn cache_view(
    cache: &SeqCache,
    il: usize,
    len: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<(Tensor, Tensor)> {
    match &cache.layers[il] {
        LayerCache::Cpu { k, v } => {
            let row = kv_heads * head_dim;
            let shape = (len, kv_heads, head_dim);
            Ok((
                Tensor::from_slice(&k[..len * row], shape, &Device::Cpu)?,
                Tensor::from_slice(&v[..len * row], shape, &Device::Cpu)?,
            ))
        }
        LayerCache::Dev { k, v } => Ok((k.narrow(0, 0, len)?, v.narrow(0, 0, len)?)),
    }
}

/// Raw CPU cache slices of layer `il` (`None` for device caches).
pub(crate) fn cache_slices(cache: &SeqCache, il: usize) -> Option<(&[f32], &[f32])> {
    match &cache.layers[il] {
        LayerCache::Cpu { k, v } => Some((k, v)),
        LayerCache::Dev { .. } => None,
    }
}

/// cos/sin `[t, 1, head_dim/2]` for each token's position, computed the way
/// ggml does (theta multiplied up in f32) so long positions round alike.
fn rope_table(
    positions: &[usize],
    head_dim: usize,
    base: f32,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let scale = base.powf(-2.0 / head_dim as f32);
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        let mut theta = p as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= scale;
        }
    }
    let shape = (positions.len(), 1, half);
    Ok((
        Tensor::from_vec(cos, shape, dev)?,
        Tensor::from_vec(sin, shape, dev)?,
    ))
}

/// RoPE on `[t, heads, head_dim]` with per-token tables: candle's kernels
/// take a per-batch table, so tokens become the batch dimension.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    let (t, h, d) = x.dims3()?;
    let x4 = x.contiguous()?.reshape((t, h, 1, d))?;
    let y = match style {
        RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x4, cos, sin)?,
        RopeStyle::Halves => candle_nn::rotary_emb::rope(&x4, cos, sin)?,
    };
    Ok(y.reshape((t, h, d))?)
}

fn tensor<R: Read + Seek>(
    ct: &gguf_file::Content,
    reader: &mut R,
    name: &str,
    device: &Device,
) -> Result<QTensor> {
    ct.tensor(reader, name, device)
        .map_err(|e| InferenceError::Model(format!("GGUF tensor {name}: {e}")))
}

fn linear(w: QTensor, b: Option<QTensor>, device: &Device) -> Result<Linear> {
    Ok(Linear {
        w: Weight::new(w)?,
        b: b.map(|b| b.dequantize(device)).transpose()?,
    })
}

/// Types candle's CPU matmul has no SIMD kernel for, re-encoded as Q8_0.
///
/// Q5_0 blocks (`d * (q - 16)`, q in 0..32) become Q8_0 blocks with the same
/// scale and the same integers, bit for bit: ggml also multiplies Q5_0 with
/// Q8_0 activations, so results are unchanged and the dot product runs on
/// the AVX2/AVX-512 kernels. Q4_1 and Q5_1 carry an offset Q8_0 cannot
/// hold; they are dequantized and re-quantized (an error below 1/127 of
/// each block's largest weight). Other devices keep every type.
fn for_device(q: QTensor, device: &Device) -> Result<QTensor> {
    if !device.is_cpu() || std::env::var_os("EARSHOT_KEEP_QUANT").is_some() {
        return Ok(q);
    }
    match q.dtype() {
        GgmlDType::Q5_0 => {
            let data = q.data()?;
            let converted = q5_0_to_q8_0(&data)?;
            let storage = QStorage::from_data(Cow::Owned(converted), device, GgmlDType::Q8_0)?;
            Ok(QTensor::new(storage, q.shape().clone())?)
        }
        GgmlDType::Q4_1 | GgmlDType::Q5_1 => {
            let f = q.dequantize(device)?;
            Ok(QTensor::quantize(&f, GgmlDType::Q8_0)?)
        }
        _ => Ok(q),
    }
}

/// Q5_0 (22-byte blocks) to Q8_0 (34-byte blocks), exactly.
pub(crate) fn q5_0_to_q8_0(src: &[u8]) -> Result<Vec<u8>> {
    const IN: usize = 22;
    const OUT: usize = 34;
    if !src.len().is_multiple_of(IN) {
        return Err(InferenceError::Model(format!(
            "Q5_0 data of {} bytes is not whole blocks",
            src.len()
        )));
    }
    let mut out = vec![0u8; src.len() / IN * OUT];
    for (b, o) in src.chunks_exact(IN).zip(out.chunks_exact_mut(OUT)) {
        o[..2].copy_from_slice(&b[..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let lo = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
            let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            o[2 + j] = (lo as i8 - 16) as u8;
            o[2 + j + 16] = (hi as i8 - 16) as u8;
        }
    }
    Ok(out)
}

/// Concatenates weights `[n_i, k]` of one quantized type into `[Σn_i, k]`.
/// Rows of a quantized matrix are whole blocks, so this is byte
/// concatenation. `None` when the types or widths differ.
fn fuse_rows(ws: &[&QTensor], device: &Device) -> Result<Option<QTensor>> {
    let dtype = ws[0].dtype();
    let (_, k) = ws[0].shape().dims2()?;
    let mut n = 0;
    for w in ws {
        let (wn, wk) = w.shape().dims2()?;
        if w.dtype() != dtype
            || wk != k
            || matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        {
            return Ok(None);
        }
        n += wn;
    }
    let mut bytes = Vec::new();
    for w in ws {
        bytes.extend_from_slice(&w.data()?);
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)?;
    Ok(Some(QTensor::new(storage, (n, k))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q5_0_conversion_is_exact() {
        // Quantize random data to Q5_0, convert, and compare dequantized values.
        let vals: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let t = Tensor::from_vec(vals, (4, 64), &Device::Cpu).unwrap();
        let q5 = QTensor::quantize(&t, GgmlDType::Q5_0).unwrap();
        let q8 = for_device(q5.clone_for_test(), &Device::Cpu).unwrap();
        assert_eq!(q8.dtype(), GgmlDType::Q8_0);
        let values = |q: &QTensor| -> Vec<f32> {
            let t = q.dequantize(&Device::Cpu).unwrap();
            t.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(values(&q5), values(&q8));
    }

    trait CloneForTest {
        fn clone_for_test(&self) -> QTensor;
    }
    impl CloneForTest for QTensor {
        fn clone_for_test(&self) -> QTensor {
            let data = self.data().unwrap().into_owned();
            let s = QStorage::from_data(Cow::Owned(data), &Device::Cpu, self.dtype()).unwrap();
            QTensor::new(s, self.shape().clone()).unwrap()
        }
    }
}
