//! segmentation-3.0's SincNet after the sinc convolution, on the CPU, on
//! plain host buffers: per window, `|sinc|` → max-pool → instance norm →
//! leaky ReLU, then twice conv1d (k = 5) → max-pool → instance norm →
//! leaky ReLU, ending frame-major for the LSTM.
//!
//! Why: through candle every one of those ~20 ops allocates and passes
//! over the whole batch (80 channels × 15,975 samples a window at the
//! first stage), and its `conv1d` gathers im2col element by element: on 10
//! minutes (237 windows) the affine map, pooling and norms took ~1.0 s and
//! the two convolutions 1.7 s, of ~8.6 s of segmentation. Here one pass per
//! stage works on one window at a time (in cache), the windows run in
//! parallel, and each convolution is one GEMM of its taps stacked, `(k ·
//! out, in) · x`, whose rows are then added shifted by each tap (as
//! CAM++'s dense layers do, `camdense.rs`). Same arithmetic as the candle
//! path up to summation order; `tests/segmentation_ref.rs` holds it to
//! PyTorch's output. GPUs keep the candle path.

use rayon::prelude::*;

use crate::conv2d::gemm_accumulate;

/// An instance norm's affine parameters, per channel.
#[derive(Debug, Clone)]
pub(crate) struct HostNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A stride-1, unpadded conv1d with its taps stacked: row `j·cout + o` is
/// tap `j` of output channel `o`, `(k·cout, cin)`.
#[derive(Debug, Clone)]
pub(crate) struct HostConv {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stacked: Vec<f32>,
    pub bias: Vec<f32>,
}

impl HostConv {
    /// From PyTorch's `(cout, cin, k)` weight.
    pub(crate) fn new(weight: &[f32], bias: Vec<f32>, cout: usize, cin: usize, k: usize) -> Self {
        let mut stacked = vec![0f32; k * cout * cin];
        for o in 0..cout {
            for c in 0..cin {
                for j in 0..k {
                    stacked[(j * cout + o) * cin + c] = weight[(o * cin + c) * k + j];
                }
            }
        }
        Self {
            cin,
            cout,
            k,
            stacked,
            bias,
        }
    }
}

/// Everything after the sinc convolution up to the LSTM.
#[derive(Debug, Clone)]
pub(crate) struct SincFront {
    /// The sinc convolution itself.
    pub conv: SincConv,
    /// Each sinc filter's sum of taps (what a constant input adds).
    pub sums: Vec<f32>,
    /// The norm after the sinc stage, then one per convolution.
    pub norms: Vec<HostNorm>,
    pub convs: Vec<HostConv>,
    pub pool: usize,
    pub eps: f64,
    pub slope: f32,
}

/// Where one window's sinc output lies in a buffer, and the affine map
/// that turns the shared convolution into this window's (instance-normed
/// input): channel `c` is `data[base + c·stride ..][..len]`, each value
/// `v` read as `|v · scale + shift · sums[c]|`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SincWindow {
    pub base: usize,
    pub scale: f32,
    pub shift: f32,
}

impl SincFront {
    /// Output channels (the LSTM's input size).
    pub(crate) fn channels(&self) -> usize {
        self.convs.last().map_or(self.sums.len(), |c| c.cout)
    }

    /// Frames out of `len` sinc samples.
    pub(crate) fn frames(&self, len: usize) -> usize {
        let mut n = len / self.pool;
        for c in &self.convs {
            n = (n + 1).saturating_sub(c.k) / self.pool;
        }
        n
    }

    /// All windows, in parallel: `(windows, frames, channels)` flattened.
    pub(crate) fn forward(
        &self,
        data: &[f32],
        stride: usize,
        len: usize,
        windows: &[SincWindow],
    ) -> Vec<f32> {
        let per = self.frames(len) * self.channels();
        let mut out = vec![0f32; windows.len() * per];
        out.par_chunks_mut(per.max(1))
            .zip(windows.par_iter())
            .for_each(|(dst, w)| self.window(data, stride, len, *w, dst));
        out
    }

    fn window(&self, data: &[f32], stride: usize, len: usize, w: SincWindow, dst: &mut [f32]) {
        let p = self.pool;
        let c0 = self.sums.len();
        let mut n = len / p;
        let mut a = vec![0f32; c0 * n];
        for (c, row) in a.chunks_mut(n.max(1)).enumerate() {
            let add = w.shift * self.sums[c];
            let src = &data[w.base + c * stride..w.base + c * stride + n * p];
            for (d, chunk) in row.iter_mut().zip(src.chunks_exact(p)) {
                *d = chunk
                    .iter()
                    .map(|&v| (v * w.scale + add).abs())
                    .fold(f32::NEG_INFINITY, f32::max);
            }
        }
        self.norm_lrelu(&mut a, n, &self.norms[0]);
        for (conv, norm) in self.convs.iter().zip(&self.norms[1..]) {
            let out = (n + 1).saturating_sub(conv.k);
            let pooled = out / p;
            let mut z = vec![0f32; conv.k * conv.cout * n];
            // SAFETY: `stacked` is `(k·cout) × cin`, `a` `cin × n`, `z`
            // `(k·cout) × n`.
            unsafe {
                gemm_accumulate(
                    (conv.k * conv.cout, n, conv.cin),
                    &mut z,
                    conv.stacked.as_ptr(),
                    conv.cin,
                    a.as_ptr(),
                    n,
                    gemm::Parallelism::None,
                )
            };
            let mut b = vec![0f32; conv.cout * pooled];
            let mut row = vec![0f32; out];
            for o in 0..conv.cout {
                row.fill(0.0);
                for j in 0..conv.k {
                    let zr = &z[(j * conv.cout + o) * n + j..][..out];
                    for (r, &v) in row.iter_mut().zip(zr) {
                        *r += v;
                    }
                }
                let bias = conv.bias[o];
                for (d, chunk) in b[o * pooled..(o + 1) * pooled]
                    .iter_mut()
                    .zip(row.chunks_exact(p))
                {
                    *d = chunk
                        .iter()
                        .map(|&v| v + bias)
                        .fold(f32::NEG_INFINITY, f32::max);
                }
            }
            self.norm_lrelu(&mut b, pooled, norm);
            a = b;
            n = pooled;
        }
        // (channels, frames) → (frames, channels).
        let ch = self.channels();
        for (c, row) in a.chunks(n.max(1)).enumerate() {
            for (f, &v) in row.iter().enumerate() {
                dst[f * ch + c] = v;
            }
        }
    }

    /// Instance norm over each channel's `n` values, its affine map, then
    /// leaky ReLU, in place on `(channels, n)`.
    fn norm_lrelu(&self, x: &mut [f32], n: usize, norm: &HostNorm) {
        if n == 0 {
            return;
        }
        for (c, row) in x.chunks_mut(n).enumerate() {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + self.eps).sqrt();
            let (wt, bs) = (norm.weight[c], norm.bias[c]);
            let (mean, inv) = (mean as f32, inv as f32);
            for v in row.iter_mut() {
                let y = (*v - mean) * inv * wt + bs;
                *v = y.max(y * self.slope);
            }
        }
    }
}

/// The sinc filterbank's strided convolution (one input channel) as
/// polyphase GEMMs. With stride `s`, tap `t = s·q + r` of output `j` reads
/// `x[s·(j + q) + r]`: split the input into its `s` phases `x_r[m] = x[s·m +
/// r]` and each phase is a stride-1 convolution with the taps `r, r + s,
/// …`, whose im2col matrix needs no copy: its row `q` is `x_r` from `q`
/// on, so consecutive rows start one float apart (a row stride of 1). candle
/// builds the 251-row im2col matrix element by element instead (1.25 s of
/// 10 minutes' segmentation).
#[derive(Debug, Clone)]
pub(crate) struct SincConv {
    filters: usize,
    taps: usize,
    stride: usize,
    /// Taps per phase (`taps` rounded up to a multiple of `stride`, over it).
    per_phase: usize,
    /// Per phase `r`: `(filters, per_phase)`, entry `(f, q)` = tap `s·q + r`
    /// of filter `f` (zero past the last tap).
    phases: Vec<Vec<f32>>,
}

impl SincConv {
    /// From the filterbank `(filters, taps)`, row-major.
    pub(crate) fn new(bank: &[f32], filters: usize, taps: usize, stride: usize) -> Self {
        let per_phase = taps.div_ceil(stride);
        let phases = (0..stride)
            .map(|r| {
                let mut h = vec![0f32; filters * per_phase];
                for f in 0..filters {
                    for q in 0..per_phase {
                        let t = stride * q + r;
                        if t < taps {
                            h[f * per_phase + q] = bank[f * taps + t];
                        }
                    }
                }
                h
            })
            .collect();
        Self {
            filters,
            taps,
            stride,
            per_phase,
            phases,
        }
    }

    /// Output samples for `len` input samples.
    pub(crate) fn out_len(&self, len: usize) -> usize {
        if len < self.taps {
            0
        } else {
            (len - self.taps) / self.stride + 1
        }
    }

    /// `x` → `(filters, out_len)` row-major.
    pub(crate) fn forward(&self, x: &[f32], par: gemm::Parallelism) -> Vec<f32> {
        let (s, q) = (self.stride, self.per_phase);
        let out = self.out_len(x.len());
        let mut z = vec![0f32; self.filters * out];
        if out == 0 {
            return z;
        }
        // Phase r holds x[s·m + r] for m < out + q − 1 (zeros past the end).
        let m = out + q - 1;
        let mut p = vec![0f32; s * m];
        for (r, row) in p.chunks_mut(m).enumerate() {
            for (mm, v) in row.iter_mut().enumerate() {
                if let Some(&xv) = x.get(s * mm + r) {
                    *v = xv;
                }
            }
        }
        for (r, h) in self.phases.iter().enumerate() {
            // SAFETY: `h` is `filters × q`; the right-hand side's rows `0..q`
            // start at `p[r·m + row]` and run `out` floats, the last ending
            // at `p[r·m + m − 1]`.
            unsafe {
                gemm_accumulate(
                    (self.filters, out, q),
                    &mut z,
                    h.as_ptr(),
                    q,
                    p.as_ptr().add(r * m),
                    1,
                    par,
                )
            };
        }
        z
    }
}
