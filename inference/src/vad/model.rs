//! The Silero VAD v6 network: weights from the ONNX file, the batched
//! convolutional front end, and the sequential LSTM.
//!
//! What the graph in faster-whisper's `silero_vad_v6.onnx` computes, per
//! 576-sample input row (64 samples of context + one 512-sample window):
//!
//! 1. `Pad` reflect, 128 on both sides (576 → 832), then `Conv` 1→258 with
//!    kernel 256, stride 128 (a Hann-windowed DFT basis: 129 real rows, then
//!    129 imaginary rows) → 5 frames. Two `Slice`s drop frame 0, so the left
//!    padding never matters: the 4 frames kept read samples 0‥640 of
//!    the row reflect-padded by 64 on the right, which is what we build.
//! 2. Magnitude `sqrt(re² + im²)` → 129 bins × 4 frames.
//! 3. Four `Conv`s, kernel 3, padding 1, strides 1, 2, 2, 1, channels
//!    129→128→64→64→128, each followed by `Relu` → 128 values per row.
//! 4. `LSTM` (hidden 128, one direction) over the rows *in sequence*: the
//!    batch axis of the input is the LSTM's time axis. ONNX packs the gates
//!    as i, o, f, c (PyTorch: i, f, g, o) and has two biases (Wb, Rb).
//! 5. `Relu`, a 1×1 `Conv` 128→1, `Sigmoid`: one speech probability per row.
//!
//! Steps 1–3 and the LSTM's input projection have no state, so they run
//! over blocks of 256 windows, one block per thread: the STFT as a 256-point
//! FFT (the basis is the periodic-Hann-windowed DFT to 1e-7; any other basis
//! falls back to its matrix product), each conv as one im2col GEMM with
//! channels last (candle's `gemm` crate, single-threaded per block). Only
//! `R·h` and the gate nonlinearities run window by window, on one thread,
//! while the other threads prepare the next group of blocks; that loop is
//! register-blocked and built for AVX2+FMA when the CPU has it.

use std::cell::RefCell;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use super::onnx::{self, AttrValue, Initializer, NodeSpec, TensorData};
use super::VadError;

/// Samples per VAD window (at 16 kHz: 32 ms).
pub const WINDOW_SAMPLES: usize = 512;
/// Samples of the previous window prefixed to each window.
pub const CONTEXT_SAMPLES: usize = 64;
/// The only sample rate this model supports.
pub const SAMPLE_RATE: u32 = 16_000;

const INPUT: usize = WINDOW_SAMPLES + CONTEXT_SAMPLES; // 576
const RIGHT_PAD: usize = 64;
const EXTENDED: usize = INPUT + RIGHT_PAD; // 640
const FILTER: usize = 256;
const HOP: usize = 128;
const ONNX_PAD: i64 = 128;
const BINS: usize = 129;
const STFT_OUT: usize = 2 * BINS; // 258
const FRAMES: usize = 4;
const HIDDEN: usize = 128;
const GATES: usize = 4 * HIDDEN;
/// Windows per front-end block (one thread's unit of work): large enough
/// for efficient GEMMs, small enough that the scratch matrices stay near
/// the caches (~2 MB) whatever the file length.
const BLOCK: usize = 256;

/// `(c_in, c_out, stride)` of the four encoder convolutions (kernel 3, pad 1).
const CONVS: [(usize, usize, usize); 4] = [(129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)];

/// The op types of the graph, in order; anything else is another model.
const OPS: [&str; 25] = [
    "Pad",
    "Unsqueeze",
    "Conv",
    "Slice",
    "Slice",
    "Pow",
    "Pow",
    "Add",
    "Sqrt",
    "Conv",
    "Relu",
    "Conv",
    "Relu",
    "Conv",
    "Relu",
    "Conv",
    "Relu",
    "Transpose",
    "LSTM",
    "Squeeze",
    "Relu",
    "Transpose",
    "Conv",
    "Sigmoid",
    "Reshape",
];

/// The network's parameters in the ONNX layouts (row-major).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Weights {
    /// `[258, 1, 256]`: the STFT basis.
    pub basis: Vec<f32>,
    /// Per encoder conv: weight `[c_out, c_in, 3]`, bias `[c_out]`.
    pub convs: Vec<(Vec<f32>, Vec<f32>)>,
    /// `W [1, 512, 128]`, gates i, o, f, c.
    pub lstm_w: Vec<f32>,
    /// `R [1, 512, 128]`, gates i, o, f, c.
    pub lstm_r: Vec<f32>,
    /// `B [1, 1024]`: Wb then Rb.
    pub lstm_b: Vec<f32>,
    /// `[1, 128, 1]` and `[1]`.
    pub dec_w: Vec<f32>,
    pub dec_b: f32,
}

impl Weights {
    /// A random network with the real STFT basis (Hann-windowed DFT),
    /// uniform random weights scaled so that the output follows the signal,
    /// and the given output bias
    /// (large positive: always speech; large negative: never).
    pub fn random(seed: u64, dec_bias: f32) -> Self {
        let mut rng = XorShift::new(seed);
        let mut basis = vec![0f32; STFT_OUT * FILTER];
        for k in 0..FILTER {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / FILTER as f64).cos();
            for b in 0..BINS {
                let a = 2.0 * std::f64::consts::PI * (b * k) as f64 / FILTER as f64;
                basis[b * FILTER + k] = (w * a.cos()) as f32;
                basis[(BINS + b) * FILTER + k] = (-w * a.sin()) as f32;
            }
        }
        let mut uniform = |n: usize, a: f32| -> Vec<f32> {
            (0..n).map(|_| a * (2.0 * rng.next() - 1.0)).collect()
        };
        // He-uniform convolutions and a strong input projection, so that
        // the gates (and the output) swing with the signal.
        let convs = CONVS
            .iter()
            .map(|&(ci, co, _)| {
                let a = (6.0 / (ci * 3) as f32).sqrt();
                (uniform(co * ci * 3, a), uniform(co, 0.05))
            })
            .collect();
        let lstm_w = uniform(GATES * HIDDEN, 2.0 * (6.0 / HIDDEN as f32).sqrt());
        let lstm_r = uniform(GATES * HIDDEN, 1.0 / (HIDDEN as f32).sqrt());
        let lstm_b = uniform(2 * GATES, 1.0 / (HIDDEN as f32).sqrt());
        let dec_w = uniform(HIDDEN, 1.0);
        Self {
            basis,
            convs,
            lstm_w,
            lstm_r,
            lstm_b,
            dec_w,
            dec_b: dec_bias,
        }
    }
}

/// Deterministic xorshift64* in [0, 1) (no `rand` seeding questions in tests).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Row-major `[k, n]` weights, the right-hand side of [`gemm_bias`].
#[derive(Debug, Clone)]
struct Matrix {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

/// `out[m, n] = bias + a[m, k] · b`, then ReLU if asked. Single-threaded:
/// the callers run one block of windows per thread.
fn gemm_bias(a: &[f32], m: usize, b: &Matrix, bias: Option<&[f32]>, relu: bool, out: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    assert!(a.len() >= m * k && out.len() == m * n && b.data.len() == k * n);
    match bias {
        Some(bias) => {
            assert_eq!(bias.len(), n);
            for row in out.chunks_exact_mut(n) {
                row.copy_from_slice(bias);
            }
        }
        None => out.fill(0.0),
    }
    if m > 0 {
        // SAFETY: the asserts above keep every access inside the three
        // buffers: a is m×k (row stride k), b is k×n and out m×n (stride n).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                a.as_ptr(),
                1,
                k as isize,
                b.data.as_ptr(),
                1,
                n as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    if relu {
        for v in out.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// One encoder convolution prepared for im2col: only the taps that ever
/// read a real (non-padding) input position are kept.
#[derive(Debug, Clone)]
struct ConvLayer {
    c_in: usize,
    c_out: usize,
    stride: usize,
    l_in: usize,
    l_out: usize,
    taps: Range<usize>,
    /// `[taps.len() * c_in, c_out]`.
    w: Matrix,
    b: Vec<f32>,
}

impl ConvLayer {
    fn new(
        (c_in, c_out, stride): (usize, usize, usize),
        l_in: usize,
        weight: &[f32],
        bias: &[f32],
    ) -> Self {
        let l_out = (l_in + 2 - 3) / stride + 1;
        let used = |k: usize| {
            (0..l_out).any(|t| (t * stride + k).checked_sub(1).is_some_and(|p| p < l_in))
        };
        let first = (0..3).find(|&k| used(k)).expect("some tap reads the input");
        let last = (0..3)
            .rev()
            .find(|&k| used(k))
            .expect("some tap reads the input");
        let taps = first..last + 1;
        let mut w = vec![0f32; taps.len() * c_in * c_out];
        for (ti, k) in taps.clone().enumerate() {
            for c in 0..c_in {
                let row = &mut w[(ti * c_in + c) * c_out..][..c_out];
                for (o, v) in row.iter_mut().enumerate() {
                    *v = weight[(o * c_in + c) * 3 + k];
                }
            }
        }
        Self {
            c_in,
            c_out,
            stride,
            l_in,
            l_out,
            w: Matrix {
                k: taps.len() * c_in,
                n: c_out,
                data: w,
            },
            taps,
            b: bias.to_vec(),
        }
    }

    /// `x`: `[n * l_in, c_in]` (window-major, then position) → `y`:
    /// `[n * l_out, c_out]`, ReLU'd.
    fn forward(&self, x: &[f32], n: usize, cols: &mut Vec<f32>, y: &mut Vec<f32>) {
        let kc = self.taps.len() * self.c_in;
        cols.clear();
        cols.resize(n * self.l_out * kc, 0.0);
        for (r, row) in cols.chunks_exact_mut(kc).enumerate() {
            let (win, t) = (r / self.l_out, r % self.l_out);
            for (ti, k) in self.taps.clone().enumerate() {
                let Some(p) = (t * self.stride + k)
                    .checked_sub(1)
                    .filter(|&p| p < self.l_in)
                else {
                    continue;
                };
                row[ti * self.c_in..][..self.c_in]
                    .copy_from_slice(&x[(win * self.l_in + p) * self.c_in..][..self.c_in]);
            }
        }
        y.clear();
        y.resize(n * self.l_out * self.c_out, 0.0);
        gemm_bias(cols, n * self.l_out, &self.w, Some(&self.b), true, y);
    }
}

/// The STFT: a 256-point FFT when the basis is the periodic-Hann-windowed
/// DFT (it is, to 1e-7, in faster-whisper's file), else the basis as a
/// matrix product.
#[derive(Clone)]
enum Spectrum {
    Fft {
        fft: Arc<dyn Fft<f32>>,
        window: Vec<f32>,
    },
    /// `[256, 258]`.
    Basis(Matrix),
}

impl std::fmt::Debug for Spectrum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fft { .. } => f.write_str("Spectrum::Fft"),
            Self::Basis(_) => f.write_str("Spectrum::Basis"),
        }
    }
}

/// Periodic Hann window of the STFT, as f64.
fn hann(k: usize) -> f64 {
    0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / FILTER as f64).cos()
}

/// Largest distance of `basis` (`[258, 1, 256]`) from the Hann-windowed DFT
/// (real rows `w·cos`, imaginary rows `−w·sin`).
fn distance_from_hann_dft(basis: &[f32]) -> f64 {
    let mut max = 0f64;
    for b in 0..BINS {
        for k in 0..FILTER {
            let a = 2.0 * std::f64::consts::PI * ((b * k) % FILTER) as f64 / FILTER as f64;
            let re = hann(k) * a.cos();
            let im = -hann(k) * a.sin();
            max = max
                .max((basis[b * FILTER + k] as f64 - re).abs())
                .max((basis[(BINS + b) * FILTER + k] as f64 - im).abs());
        }
    }
    max
}

/// Per-thread scratch buffers of the front end, kept between calls so
/// blocks do not allocate (and page-fault) afresh.
#[derive(Default)]
struct Scratch {
    frames: Vec<f32>,
    spec: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    cols: Vec<f32>,
    fft: Vec<Complex32>,
    fft_scratch: Vec<Complex32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `e^x` for |x| ≤ 87 to about 2 ulp (Cephes' `expf`: 2^n · P(r) with
/// r = x − n·ln 2), written without branches, float→int casts or
/// overflow-checked integer ops so that loops over it vectorise. n comes
/// from the 1.5·2²³ rounding trick: adding it leaves round(x·log₂e) in the
/// low mantissa bits.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 87.0);
    let y = x * std::f32::consts::LOG2_E + MAGIC;
    let n = (y.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let nf = y - MAGIC;
    let r = x - nf * 0.693_359_4 + nf * 2.121_944_4e-4;
    let p = (((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    p * f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

#[inline(always)]
fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

#[inline(always)]
fn tanh_fast(x: f32) -> f32 {
    2.0 / (1.0 + exp_fast(-2.0 * x)) - 1.0
}

/// Gates per register block of the recurrent product (8 AVX registers).
const LANES: usize = 64;

/// LSTM steps over precomputed input gates, then ReLU, the 1×1 output conv
/// and the sigmoid. `rb` is R blocked as `[512 / 64][128][64]`: for each
/// block of 64 gates, the accumulators stay in registers while the 128
/// columns stream through. `FMA` selects fused multiply-adds (only in the
/// AVX2+FMA build of this function).
#[inline(always)]
fn lstm_kernel<const FMA: bool>(
    rb: &[f32],
    dec_w: &[f32],
    dec_b: f32,
    gates: &[f32],
    state: &mut LstmState,
    probs: &mut Vec<f32>,
) {
    let rb = &rb[..HIDDEN * GATES];
    let dec_w = &dec_w[..HIDDEN];
    let LstmState { h, c } = state;
    let mut g = [0f32; GATES];
    let mut act = [0f32; GATES];
    let mut tc = [0f32; HIDDEN];
    for x in gates.chunks_exact(GATES) {
        for (gb, (xb, rblock)) in g
            .chunks_exact_mut(LANES)
            .zip(x.chunks_exact(LANES).zip(rb.chunks_exact(HIDDEN * LANES)))
        {
            let mut acc = [0f32; LANES];
            acc.copy_from_slice(xb);
            for (&hj, r) in h.iter().zip(rblock.chunks_exact(LANES)) {
                for (a, &rq) in acc.iter_mut().zip(r) {
                    *a = if FMA {
                        hj.mul_add(rq, *a)
                    } else {
                        *a + hj * rq
                    };
                }
            }
            gb.copy_from_slice(&acc);
        }
        // Gate blocks i, o, f (sigmoid), then c (tanh).
        for (a, &v) in act[..3 * HIDDEN].iter_mut().zip(&g[..3 * HIDDEN]) {
            *a = sigmoid_fast(v);
        }
        for (a, &v) in act[3 * HIDDEN..].iter_mut().zip(&g[3 * HIDDEN..]) {
            *a = tanh_fast(v);
        }
        let (i, rest) = act.split_at(HIDDEN);
        let (o, rest) = rest.split_at(HIDDEN);
        let (f, cand) = rest.split_at(HIDDEN);
        for q in 0..HIDDEN {
            c[q] = f[q] * c[q] + i[q] * cand[q];
        }
        for (t, &cq) in tc.iter_mut().zip(c.iter()) {
            *t = tanh_fast(cq);
        }
        for q in 0..HIDDEN {
            h[q] = o[q] * tc[q];
        }
        let mut z = [0f32; 8];
        for (hs, ws) in h.chunks_exact(8).zip(dec_w.chunks_exact(8)) {
            for l in 0..8 {
                z[l] += hs[l].max(0.0) * ws[l];
            }
        }
        probs.push(sigmoid(z.iter().sum::<f32>() + dec_b));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lstm_avx2(
    rb: &[f32],
    dec_w: &[f32],
    dec_b: f32,
    gates: &[f32],
    state: &mut LstmState,
    probs: &mut Vec<f32>,
) {
    lstm_kernel::<true>(rb, dec_w, dec_b, gates, state, probs)
}

/// Silero VAD v6, loaded from faster-whisper's `silero_vad_v6.onnx`.
///
/// Immutable after loading (`Send + Sync`): one instance can serve every
/// thread; each call carries its own LSTM state.
#[derive(Debug, Clone)]
pub struct SileroVad {
    spectrum: Spectrum,
    convs: Vec<ConvLayer>,
    /// `[128, 512]`: W transposed (gates i, o, f, c).
    lstm_wt: Matrix,
    /// R blocked for [`lstm_kernel`]: `[512 / 64][128][64]`.
    lstm_rb: Vec<f32>,
    /// Wb + Rb.
    lstm_b: Vec<f32>,
    dec_w: Vec<f32>,
    dec_b: f32,
}

impl SileroVad {
    /// Loads the model from an ONNX file (faster-whisper's
    /// `silero_vad_v6.onnx`; see `earshot_models::resolve_silero_vad`).
    /// The graph is checked op by op, so another Silero export (v5 with its
    /// `If` nodes, the `state`-input variants) is refused with a reason
    /// rather than computed wrongly.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, VadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| VadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_onnx_bytes(&bytes, path)
    }

    /// Like [`SileroVad::load`], from the file's bytes; `path` only names
    /// the source in errors.
    pub fn from_onnx_bytes(bytes: &[u8], path: &Path) -> Result<Self, VadError> {
        let model = onnx::parse_model(bytes).map_err(|e| VadError::Protobuf {
            path: path.to_path_buf(),
            offset: e.offset,
            reason: e.reason,
        })?;
        let weights = extract(&model, path)?;
        Ok(Self::from_weights(&weights))
    }

    pub(crate) fn from_weights(w: &Weights) -> Self {
        Self::build(w, true)
    }

    /// `allow_fft: false` forces the STFT through the basis (tests).
    fn build(w: &Weights, allow_fft: bool) -> Self {
        let spectrum = if allow_fft && distance_from_hann_dft(&w.basis) < 1e-6 {
            Spectrum::Fft {
                fft: FftPlanner::new().plan_fft_forward(FILTER),
                window: (0..FILTER).map(|k| hann(k) as f32).collect(),
            }
        } else {
            let mut m = vec![0f32; FILTER * STFT_OUT];
            for c in 0..STFT_OUT {
                for k in 0..FILTER {
                    m[k * STFT_OUT + c] = w.basis[c * FILTER + k];
                }
            }
            Spectrum::Basis(Matrix {
                k: FILTER,
                n: STFT_OUT,
                data: m,
            })
        };
        let mut convs = Vec::with_capacity(4);
        let mut l = FRAMES;
        for (spec, (cw, cb)) in CONVS.iter().zip(&w.convs) {
            let layer = ConvLayer::new(*spec, l, cw, cb);
            l = layer.l_out;
            convs.push(layer);
        }
        debug_assert_eq!(l, 1);
        let mut wt = vec![0f32; HIDDEN * GATES];
        let mut rb = vec![0f32; HIDDEN * GATES];
        for g in 0..GATES {
            let (block, lane) = (g / LANES, g % LANES);
            for j in 0..HIDDEN {
                wt[j * GATES + g] = w.lstm_w[g * HIDDEN + j];
                rb[(block * HIDDEN + j) * LANES + lane] = w.lstm_r[g * HIDDEN + j];
            }
        }
        Self {
            spectrum,
            convs,
            lstm_wt: Matrix {
                k: HIDDEN,
                n: GATES,
                data: wt,
            },
            lstm_rb: rb,
            lstm_b: (0..GATES)
                .map(|g| w.lstm_b[g] + w.lstm_b[GATES + g])
                .collect(),
            dec_w: w.dec_w.clone(),
            dec_b: w.dec_b,
        }
    }

    /// Number of probabilities [`SileroVad::speech_probs`] returns for
    /// `n_samples` samples: `n_samples / 512 + 1`.
    pub fn n_windows(n_samples: usize) -> usize {
        n_samples / WINDOW_SAMPLES + 1
    }

    /// Speech probability of each 512-sample window of 16 kHz mono audio,
    /// exactly as faster-whisper's `get_speech_timestamps` computes them:
    /// the audio is zero-padded to `(len / 512 + 1) * 512` samples, each
    /// window is prefixed with the previous window's last 64 samples (zeros
    /// for the first), one LSTM state runs through the whole file, and —
    /// faster-whisper's quirk, mirrored — the last 64 samples of the last
    /// window are zeroed (its context buffer aliases the audio).
    ///
    /// Uses rayon's pool: the front end of the next group of windows runs
    /// on every thread while one thread runs the LSTM over the current one.
    pub fn speech_probs(&self, samples: &[f32]) -> Vec<f32> {
        let n = Self::n_windows(samples.len());
        let padded = n * WINDOW_SAMPLES;
        let valid = &samples[..samples.len().min(padded - CONTEXT_SAMPLES)];
        // Past ~8 blocks a group only adds memory: the LSTM is the bottleneck.
        let group = BLOCK * (2 * rayon::current_num_threads()).clamp(2, 8);
        let fill = |first: usize, count: usize, out: &mut [f32]| {
            out[..count * GATES]
                .par_chunks_mut(BLOCK * GATES)
                .enumerate()
                .for_each(|(b, out)| {
                    SCRATCH.with(|s| {
                        let s = &mut s.borrow_mut();
                        self.front_end(valid, first + b * BLOCK, out, s);
                    })
                });
        };
        let mut cur = vec![0f32; group.min(n) * GATES];
        let mut next = cur.clone();
        let mut state = LstmState::default();
        let mut probs = Vec::with_capacity(n);
        let (mut first, mut count) = (0, group.min(n));
        fill(first, count, &mut cur);
        while count > 0 {
            let (nfirst, ncount) = (first + count, group.min(n - first - count));
            rayon::join(
                || fill(nfirst, ncount, &mut next),
                || self.lstm(&cur[..count * GATES], &mut state, &mut probs),
            );
            std::mem::swap(&mut cur, &mut next);
            (first, count) = (nfirst, ncount);
        }
        debug_assert_eq!(probs.len(), n);
        probs
    }

    /// LSTM input pre-activations `W·x + Wb + Rb` into `out`
    /// (`[count, 512]`) for windows `first..first + count`; `valid` is the
    /// audio, zero beyond.
    fn front_end(&self, valid: &[f32], first: usize, out: &mut [f32], s: &mut Scratch) {
        let count = out.len() / GATES;
        let rows = count * FRAMES;
        let window_input = |j: usize, ext: &mut [f32; EXTENDED]| {
            let start = (first + j) as isize * WINDOW_SAMPLES as isize - CONTEXT_SAMPLES as isize;
            for (m, e) in ext[..INPUT].iter_mut().enumerate() {
                let i = start + m as isize;
                *e = if i >= 0 && (i as usize) < valid.len() {
                    valid[i as usize]
                } else {
                    0.0
                };
            }
            // Reflect (no edge repeat): ext[576 + m] = ext[574 - m].
            for m in 0..RIGHT_PAD {
                ext[INPUT + m] = ext[INPUT - 2 - m];
            }
        };
        let mut ext = [0f32; EXTENDED];
        // Magnitudes, [rows, 129], into s.x.
        s.x.clear();
        s.x.resize(rows * BINS, 0.0);
        match &self.spectrum {
            Spectrum::Fft { fft, window } => {
                s.fft.resize(FILTER, Complex32::default());
                s.fft_scratch
                    .resize(fft.get_inplace_scratch_len(), Complex32::default());
                for (j, mags) in s.x.chunks_exact_mut(FRAMES * BINS).enumerate() {
                    window_input(j, &mut ext);
                    // Two real frames per complex FFT: z = a + i·b, then
                    // A[k] = (Z[k] + conj Z[N−k]) / 2, B[k] = (Z[k] − conj Z[N−k]) / 2i.
                    for pair in 0..FRAMES / 2 {
                        let (fa, fb) = (2 * pair, 2 * pair + 1);
                        for (k, z) in s.fft.iter_mut().enumerate() {
                            *z = Complex32::new(
                                ext[fa * HOP + k] * window[k],
                                ext[fb * HOP + k] * window[k],
                            );
                        }
                        fft.process_with_scratch(&mut s.fft, &mut s.fft_scratch);
                        for k in 0..BINS {
                            let zk = s.fft[k];
                            let zn = s.fft[(FILTER - k) % FILTER].conj();
                            let (a, b) = (zk + zn, zk - zn);
                            mags[fa * BINS + k] = (a.re * a.re + a.im * a.im).sqrt() * 0.5;
                            mags[fb * BINS + k] = (b.re * b.re + b.im * b.im).sqrt() * 0.5;
                        }
                    }
                }
            }
            Spectrum::Basis(basis) => {
                s.frames.clear();
                s.frames.resize(rows * FILTER, 0.0);
                for (j, frames) in s.frames.chunks_exact_mut(FRAMES * FILTER).enumerate() {
                    window_input(j, &mut ext);
                    for (f, frame) in frames.chunks_exact_mut(FILTER).enumerate() {
                        frame.copy_from_slice(&ext[f * HOP..f * HOP + FILTER]);
                    }
                }
                s.spec.clear();
                s.spec.resize(rows * STFT_OUT, 0.0);
                gemm_bias(&s.frames, rows, basis, None, false, &mut s.spec);
                for (m, sp) in
                    s.x.chunks_exact_mut(BINS)
                        .zip(s.spec.chunks_exact(STFT_OUT))
                {
                    let (re, im) = sp.split_at(BINS);
                    for ((v, a), b) in m.iter_mut().zip(re).zip(im) {
                        *v = (a * a + b * b).sqrt();
                    }
                }
            }
        }
        for conv in &self.convs {
            conv.forward(&s.x, count, &mut s.cols, &mut s.y);
            std::mem::swap(&mut s.x, &mut s.y);
        }
        gemm_bias(&s.x, count, &self.lstm_wt, Some(&self.lstm_b), false, out);
    }

    /// Runs the LSTM and the output layer over precomputed input gates.
    fn lstm(&self, gates: &[f32], state: &mut LstmState, probs: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            unsafe { lstm_avx2(&self.lstm_rb, &self.dec_w, self.dec_b, gates, state, probs) };
            return;
        }
        lstm_kernel::<false>(&self.lstm_rb, &self.dec_w, self.dec_b, gates, state, probs);
    }
}

#[derive(Debug, Clone)]
struct LstmState {
    h: [f32; HIDDEN],
    c: [f32; HIDDEN],
}

impl Default for LstmState {
    fn default() -> Self {
        Self {
            h: [0.0; HIDDEN],
            c: [0.0; HIDDEN],
        }
    }
}

// ---------------------------------------------------------------------------
// Graph check and weight extraction.
// ---------------------------------------------------------------------------

fn extract(m: &onnx::Model, path: &Path) -> Result<Weights, VadError> {
    let bad = |reason: String| VadError::UnsupportedGraph {
        path: path.to_path_buf(),
        reason,
    };
    if let Some((d, v)) = m
        .opsets
        .iter()
        .find(|(d, _)| d.is_empty() || d == "ai.onnx")
    {
        if *v < 14 {
            return Err(bad(format!("opset {v} of domain {d:?} (expected ≥ 14)")));
        }
    }
    let ops: Vec<&str> = m.nodes.iter().map(|n| n.op_type.as_str()).collect();
    if ops != OPS {
        return Err(bad(format!(
            "op sequence {ops:?} is not Silero VAD v6's ({} nodes expected); \
             use faster-whisper's silero_vad_v6.onnx",
            OPS.len()
        )));
    }
    if let Some(n) = m.nodes.iter().find(|n| !n.domain.is_empty()) {
        return Err(bad(format!("{} node in domain {:?}", n.op_type, n.domain)));
    }
    for name in ["input", "h", "c"] {
        if !m.inputs.iter().any(|i| i == name) {
            return Err(bad(format!(
                "no graph input {name:?} (inputs: {:?})",
                m.inputs
            )));
        }
    }
    if m.outputs.first().map(String::as_str) != Some("speech_probs") {
        return Err(bad(format!(
            "first output is not speech_probs: {:?}",
            m.outputs
        )));
    }
    let nodes = &m.nodes;
    let init = |name: &str| -> Result<&Initializer, VadError> {
        m.initializers
            .get(name)
            .ok_or_else(|| bad(format!("{name:?} is not an initializer")))
    };
    let input = |i: usize, k: usize| -> Result<&str, VadError> {
        nodes[i]
            .inputs
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("{} node {i} has no input {k}", nodes[i].op_type)))
    };
    let ints = |i: usize, k: usize| -> Result<Vec<i64>, VadError> {
        let name = input(i, k)?;
        match &init(name)?.data {
            TensorData::I64(v) => Ok(v.clone()),
            other => Err(bad(format!("{name:?} is {other:?}, expected int64"))),
        }
    };
    let floats = |name: &str, dims: &[i64]| -> Result<Vec<f32>, VadError> {
        let t = init(name)?;
        if t.dims != dims {
            return Err(VadError::Tensor {
                path: path.to_path_buf(),
                name: name.to_owned(),
                reason: format!("shape {:?}, expected {dims:?}", t.dims),
            });
        }
        match &t.data {
            TensorData::F32(v) => Ok(v.clone()),
            TensorData::I64(_) => Err(VadError::Tensor {
                path: path.to_path_buf(),
                name: name.to_owned(),
                reason: "int64 data, expected float32".into(),
            }),
            TensorData::Unsupported(why) => Err(VadError::Tensor {
                path: path.to_path_buf(),
                name: name.to_owned(),
                reason: format!("unsupported storage: {why}"),
            }),
        }
    };
    let attr_ints = |i: usize, name: &str| -> Option<Vec<i64>> {
        match nodes[i].attr(name) {
            Some(AttrValue::Ints(v)) => Some(v.clone()),
            _ => None,
        }
    };
    let expect = |what: String, ok: bool| if ok { Ok(()) } else { Err(bad(what)) };

    // 0: Pad, reflect, 128 on both sides of the sample axis.
    expect(
        format!("Pad mode {:?}", nodes[0].attr("mode")),
        nodes[0].attr("mode") == Some(&AttrValue::Bytes(b"reflect".to_vec())),
    )?;
    let pads = ints(0, 1)?;
    expect(
        format!("Pad pads {pads:?}"),
        pads == [0, ONNX_PAD, 0, ONNX_PAD],
    )?;
    // 3, 4: the slices keep frames 1.. of the real and imaginary halves.
    let (s0, s1) = (ints(3, 1)?, ints(4, 1)?);
    let (a0, a1) = (ints(3, 3)?, ints(4, 3)?);
    expect(
        format!("Slice starts {s0:?} {s1:?} axes {a0:?} {a1:?}"),
        s0 == [0, 1] && s1 == [BINS as i64, 1] && a0 == [1, 2] && a1 == [1, 2],
    )?;
    let (e0, e1) = (ints(3, 2)?, ints(4, 2)?);
    expect(
        format!("Slice ends {e0:?} {e1:?}"),
        e0.first() == Some(&(BINS as i64)) && e1.first().is_some_and(|&e| e >= STFT_OUT as i64),
    )?;
    // 5, 6: squares.
    for i in [5, 6] {
        let name = input(i, 1)?;
        let e = floats(name, &[])?;
        expect(format!("Pow exponent {e:?}"), e == [2.0])?;
    }
    // 2: the STFT convolution.
    expect(
        format!("STFT conv strides {:?}", attr_ints(2, "strides")),
        attr_ints(2, "strides") == Some(vec![HOP as i64])
            && attr_ints(2, "pads").is_none_or(|p| p.iter().all(|&x| x == 0))
            && nodes[2].inputs.get(2).is_none_or(|b| b.is_empty()),
    )?;
    let basis = floats(input(2, 1)?, &[STFT_OUT as i64, 1, FILTER as i64])?;
    // 9, 11, 13, 15: the encoder convolutions.
    let mut convs = Vec::with_capacity(4);
    for (idx, &(ci, co, stride)) in [9usize, 11, 13, 15].iter().zip(&CONVS) {
        expect(
            format!(
                "encoder conv {idx}: strides {:?} pads {:?} dilations {:?} group {:?}",
                attr_ints(*idx, "strides"),
                attr_ints(*idx, "pads"),
                attr_ints(*idx, "dilations"),
                nodes[*idx].attr("group")
            ),
            attr_ints(*idx, "strides") == Some(vec![stride as i64])
                && attr_ints(*idx, "pads") == Some(vec![1, 1])
                && attr_ints(*idx, "dilations").is_none_or(|d| d == [1])
                && nodes[*idx]
                    .attr("group")
                    .is_none_or(|g| *g == AttrValue::Int(1)),
        )?;
        let w = floats(input(*idx, 1)?, &[co as i64, ci as i64, 3])?;
        let b = floats(input(*idx, 2)?, &[co as i64])?;
        convs.push((w, b));
    }
    // 18: the LSTM.
    let lstm = &nodes[18];
    expect(
        format!("LSTM hidden_size {:?}", lstm.attr("hidden_size")),
        lstm.attr("hidden_size") == Some(&AttrValue::Int(HIDDEN as i64)),
    )?;
    for (name, v) in &lstm.attrs {
        let ok = match name.as_str() {
            "hidden_size" => true,
            "direction" => *v == AttrValue::Bytes(b"forward".to_vec()),
            "layout" | "input_forget" => *v == AttrValue::Int(0),
            _ => false,
        };
        expect(format!("LSTM attribute {name} = {v:?}"), ok)?;
    }
    expect(
        format!("LSTM inputs {:?}", lstm.inputs),
        lstm.inputs.len() == 7
            && lstm.inputs[4].is_empty()
            && lstm.inputs[5] == "h"
            && lstm.inputs[6] == "c",
    )?;
    let lstm_w = floats(input(18, 1)?, &[1, GATES as i64, HIDDEN as i64])?;
    let lstm_r = floats(input(18, 2)?, &[1, GATES as i64, HIDDEN as i64])?;
    let lstm_b = floats(input(18, 3)?, &[1, 2 * GATES as i64])?;
    // 22: the output layer.
    expect(
        format!("decoder conv strides {:?}", attr_ints(22, "strides")),
        attr_ints(22, "strides").is_none_or(|s| s == [1]),
    )?;
    let dec_w = floats(input(22, 1)?, &[1, HIDDEN as i64, 1])?;
    let dec_b = floats(input(22, 2)?, &[1])?;
    Ok(Weights {
        basis,
        convs,
        lstm_w,
        lstm_r,
        lstm_b,
        dec_w,
        dec_b: dec_b[0],
    })
}

/// Serializes `w` as an ONNX file with the graph of faster-whisper's
/// `silero_vad_v6.onnx` (same ops, attributes and constants).
pub(crate) fn to_onnx(w: &Weights) -> Vec<u8> {
    use AttrValue::{Bytes, Int, Ints};
    let big = i64::MAX;
    let n = |op, inputs, outputs, attrs| NodeSpec {
        op,
        inputs,
        outputs,
        attrs,
    };
    let conv_attrs = |stride: i64| {
        vec![
            ("dilations", Ints(vec![1])),
            ("group", Int(1)),
            ("kernel_shape", Ints(vec![3])),
            ("pads", Ints(vec![1, 1])),
            ("strides", Ints(vec![stride])),
        ]
    };
    let nodes = vec![
        n(
            "Pad",
            &["input", "pads"][..],
            &["padded"][..],
            vec![("mode", Bytes(b"reflect".to_vec()))],
        ),
        n("Unsqueeze", &["padded", "one"], &["u"], vec![]),
        n(
            "Conv",
            &["u", "basis"],
            &["stft"],
            vec![
                ("dilations", Ints(vec![1])),
                ("group", Int(1)),
                ("kernel_shape", Ints(vec![FILTER as i64])),
                ("pads", Ints(vec![0, 0])),
                ("strides", Ints(vec![HOP as i64])),
            ],
        ),
        n(
            "Slice",
            &["stft", "re_s", "re_e", "axes", "steps"],
            &["re"],
            vec![],
        ),
        n(
            "Slice",
            &["stft", "im_s", "im_e", "axes", "steps"],
            &["im"],
            vec![],
        ),
        n("Pow", &["re", "two"], &["re2"], vec![]),
        n("Pow", &["im", "two"], &["im2"], vec![]),
        n("Add", &["re2", "im2"], &["pow"], vec![]),
        n("Sqrt", &["pow"], &["mag"], vec![]),
        n("Conv", &["mag", "c0w", "c0b"], &["c0"], conv_attrs(1)),
        n("Relu", &["c0"], &["r0"], vec![]),
        n("Conv", &["r0", "c1w", "c1b"], &["c1"], conv_attrs(2)),
        n("Relu", &["c1"], &["r1"], vec![]),
        n("Conv", &["r1", "c2w", "c2b"], &["c2"], conv_attrs(2)),
        n("Relu", &["c2"], &["r2"], vec![]),
        n("Conv", &["r2", "c3w", "c3b"], &["c3"], conv_attrs(1)),
        n("Relu", &["c3"], &["r3"], vec![]),
        n(
            "Transpose",
            &["r3"],
            &["seq"],
            vec![("perm", Ints(vec![0, 2, 1]))],
        ),
        n(
            "LSTM",
            &["seq", "lw", "lr", "lb", "", "h", "c"],
            &["ly", "hn", "cn"],
            vec![("hidden_size", Int(HIDDEN as i64))],
        ),
        n("Squeeze", &["ly", "one"], &["ls"], vec![]),
        n("Relu", &["ls"], &["lr2"], vec![]),
        n(
            "Transpose",
            &["lr2"],
            &["dt"],
            vec![("perm", Ints(vec![1, 2, 0]))],
        ),
        n(
            "Conv",
            &["dt", "dw", "db"],
            &["dc"],
            vec![
                ("dilations", Ints(vec![1])),
                ("group", Int(1)),
                ("kernel_shape", Ints(vec![1])),
                ("pads", Ints(vec![0, 0])),
                ("strides", Ints(vec![1])),
            ],
        ),
        n("Sigmoid", &["dc"], &["sig"], vec![]),
        n(
            "Reshape",
            &["sig", "minus_one"],
            &["speech_probs"],
            vec![("allowzero", Int(0))],
        ),
    ];
    let f = |v: &[f32]| TensorData::F32(v.to_vec());
    let i = |v: &[i64]| TensorData::I64(v.to_vec());
    let mut inits = vec![
        ("pads", vec![4], i(&[0, ONNX_PAD, 0, ONNX_PAD])),
        ("one", vec![1], i(&[1])),
        ("minus_one", vec![1], i(&[-1])),
        (
            "basis",
            vec![STFT_OUT as i64, 1, FILTER as i64],
            f(&w.basis),
        ),
        ("re_s", vec![2], i(&[0, 1])),
        ("re_e", vec![2], i(&[BINS as i64, big])),
        ("im_s", vec![2], i(&[BINS as i64, 1])),
        ("im_e", vec![2], i(&[big, big])),
        ("axes", vec![2], i(&[1, 2])),
        ("steps", vec![2], i(&[1, 1])),
        ("two", vec![], f(&[2.0])),
        ("lw", vec![1, GATES as i64, HIDDEN as i64], f(&w.lstm_w)),
        ("lr", vec![1, GATES as i64, HIDDEN as i64], f(&w.lstm_r)),
        ("lb", vec![1, 2 * GATES as i64], f(&w.lstm_b)),
        ("dw", vec![1, HIDDEN as i64, 1], f(&w.dec_w)),
        ("db", vec![1], f(&[w.dec_b])),
    ];
    let names = [
        ("c0w", "c0b"),
        ("c1w", "c1b"),
        ("c2w", "c2b"),
        ("c3w", "c3b"),
    ];
    for ((wn, bn), ((cw, cb), &(ci, co, _))) in names.iter().zip(w.convs.iter().zip(&CONVS)) {
        inits.push((wn, vec![co as i64, ci as i64, 3], f(cw)));
        inits.push((bn, vec![co as i64], f(cb)));
    }
    onnx::write_model(
        &nodes,
        &inits,
        &["input", "h", "c"],
        &["speech_probs", "hn", "cn"],
    )
}

/// Writes a Silero-VAD-shaped ONNX file with random weights (see
/// [`Weights::random`]) to `path`.
pub(crate) fn write_random(path: &Path, seed: u64, dec_bias: f32) -> Result<(), VadError> {
    std::fs::write(path, to_onnx(&Weights::random(seed, dec_bias))).map_err(|source| VadError::Io {
        path: PathBuf::from(path),
        source,
    })
}

#[cfg(test)]
// The reference is written index by index, like the operator specs.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    /// The ONNX graph computed literally, one window at a time, in f64:
    /// reflect-pad 128 both sides, 5 STFT frames, drop frame 0, direct
    /// convolutions, LSTM equations from the ONNX operator spec with its
    /// i, o, f, c gate order.
    struct Reference<'a> {
        w: &'a Weights,
        h: Vec<f64>,
        c: Vec<f64>,
    }

    impl<'a> Reference<'a> {
        fn new(w: &'a Weights) -> Self {
            Self {
                w,
                h: vec![0.0; HIDDEN],
                c: vec![0.0; HIDDEN],
            }
        }

        fn encode(&self, x: &[f32]) -> Vec<f64> {
            assert_eq!(x.len(), INPUT);
            let p = ONNX_PAD as usize;
            let len = INPUT + 2 * p;
            let at = |j: usize| -> f64 {
                // numpy/ONNX "reflect": mirror without repeating the edge.
                let i = j as isize - p as isize;
                let i = if i < 0 {
                    -i
                } else if i >= INPUT as isize {
                    2 * (INPUT as isize - 1) - i
                } else {
                    i
                };
                x[i as usize] as f64
            };
            let n_frames = (len - FILTER) / HOP + 1;
            assert_eq!(n_frames, 5);
            // [channel][frame]
            let mut mag = vec![vec![0f64; FRAMES]; BINS];
            for t in 1..n_frames {
                for b in 0..BINS {
                    let (mut re, mut im) = (0f64, 0f64);
                    for k in 0..FILTER {
                        re += self.w.basis[b * FILTER + k] as f64 * at(t * HOP + k);
                        im += self.w.basis[(BINS + b) * FILTER + k] as f64 * at(t * HOP + k);
                    }
                    mag[b][t - 1] = (re * re + im * im).sqrt();
                }
            }
            let mut x = mag;
            for ((cw, cb), &(ci, co, s)) in self.w.convs.iter().zip(&CONVS) {
                let l_in = x[0].len();
                let l_out = (l_in + 2 - 3) / s + 1;
                let mut y = vec![vec![0f64; l_out]; co];
                for (o, yo) in y.iter_mut().enumerate() {
                    for (t, v) in yo.iter_mut().enumerate() {
                        let mut acc = cb[o] as f64;
                        for (c, xc) in x.iter().enumerate().take(ci) {
                            for k in 0..3 {
                                let pos = (t * s + k) as isize - 1;
                                if pos >= 0 && (pos as usize) < l_in {
                                    acc += cw[(o * ci + c) * 3 + k] as f64 * xc[pos as usize];
                                }
                            }
                        }
                        *v = acc.max(0.0);
                    }
                }
                x = y;
            }
            x.iter().map(|c| c[0]).collect()
        }

        fn step(&mut self, x: &[f32]) -> f64 {
            let xt = self.encode(x);
            let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
            let w = self.w;
            let gate = |g: usize, h: &[f64]| -> f64 {
                let mut acc = w.lstm_b[g] as f64 + w.lstm_b[GATES + g] as f64;
                for j in 0..HIDDEN {
                    acc += w.lstm_w[g * HIDDEN + j] as f64 * xt[j];
                    acc += w.lstm_r[g * HIDDEN + j] as f64 * h[j];
                }
                acc
            };
            let h_prev = self.h.clone();
            let mut out = w.dec_b as f64;
            for q in 0..HIDDEN {
                // ONNX: it = f(Xi + Hi + Wbi + Rbi) etc., blocks [i, o, f, c].
                let i = sig(gate(q, &h_prev));
                let o = sig(gate(HIDDEN + q, &h_prev));
                let f = sig(gate(2 * HIDDEN + q, &h_prev));
                let c = gate(3 * HIDDEN + q, &h_prev).tanh();
                self.c[q] = f * self.c[q] + i * c;
                self.h[q] = o * self.c[q].tanh();
                out += self.h[q].max(0.0) * w.dec_w[q] as f64;
            }
            sig(out)
        }
    }

    /// faster-whisper's windowing: padded, context-prefixed 576-sample rows.
    fn rows(samples: &[f32]) -> Vec<Vec<f32>> {
        let n = SileroVad::n_windows(samples.len());
        let mut padded = samples.to_vec();
        padded.resize(n * WINDOW_SAMPLES, 0.0);
        // The quirk: context[-1] = 0 writes through to the audio.
        let l = padded.len();
        padded[l - CONTEXT_SAMPLES..].fill(0.0);
        (0..n)
            .map(|i| {
                let mut r = vec![0f32; CONTEXT_SAMPLES];
                if i > 0 {
                    r.copy_from_slice(
                        &padded[i * WINDOW_SAMPLES - CONTEXT_SAMPLES..i * WINDOW_SAMPLES],
                    );
                }
                r.extend_from_slice(&padded[i * WINDOW_SAMPLES..(i + 1) * WINDOW_SAMPLES]);
                r
            })
            .collect()
    }

    fn test_signal(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = XorShift::new(seed);
        (0..n)
            .map(|i| {
                let t = i as f32 / SAMPLE_RATE as f32;
                let burst = if ((t * 2.0) as usize).is_multiple_of(2) {
                    0.4
                } else {
                    0.02
                };
                burst
                    * ((t * 440.0 * std::f32::consts::TAU).sin()
                        + 0.5 * (t * 1300.0 * std::f32::consts::TAU).sin())
                    + 0.05 * (rng.next() - 0.5)
            })
            .collect()
    }

    #[test]
    fn batched_front_end_matches_the_graph_window_by_window() {
        let w = Weights::random(7, 0.0);
        // Not a multiple of 512, spanning more than one front-end group,
        // with the last partial window over 448 samples (the quirk zeroes
        // real audio there). The group size as in `speech_probs`.
        let group = BLOCK * (2 * rayon::current_num_threads()).clamp(2, 8);
        let n = (group + 3) * WINDOW_SAMPLES + 500;
        let x = test_signal(n, 3);
        let rows = rows(&x);
        // The f64 reference is slow: check the first windows, the group
        // boundary and the tail (the LSTM state must flow through all).
        let mut reference = Reference::new(&w);
        let mut want = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let p = reference.step(row);
            if i < 40 || (group - 4..group + 4).contains(&i) || i + 4 >= rows.len() {
                want.push((i, p));
            }
        }
        let spread = want.iter().map(|p| p.1).fold(0f64, f64::max)
            - want.iter().map(|p| p.1).fold(1f64, f64::min);
        assert!(
            spread > 0.05,
            "the random network's output hardly moves: {spread}"
        );
        for fft in [true, false] {
            let vad = SileroVad::build(&w, fft);
            assert_eq!(matches!(vad.spectrum, Spectrum::Fft { .. }), fft);
            let ours = vad.speech_probs(&x);
            assert_eq!(ours.len(), rows.len());
            let max = want
                .iter()
                .map(|&(i, p)| (ours[i] as f64 - p).abs())
                .fold(0f64, f64::max);
            assert!(max < 2e-5, "fft={fft}: max |ours - reference| = {max}");
            // The encoder alone agrees too, not just the final output.
            let mut gates = vec![0f32; 2 * GATES];
            vad.front_end(&x, 5, &mut gates, &mut Scratch::default());
            let enc = reference.encode(&rows[6]);
            for q in 0..GATES {
                let mut g = w.lstm_b[q] as f64 + w.lstm_b[GATES + q] as f64;
                for j in 0..HIDDEN {
                    g += w.lstm_w[q * HIDDEN + j] as f64 * enc[j];
                }
                let got = gates[GATES + q] as f64;
                assert!((got - g).abs() < 1e-4, "fft={fft} gate {q}: {got} vs {g}");
            }
        }
    }

    #[test]
    fn fast_activations_are_accurate() {
        let mut max_rel = 0f32;
        let (mut max_sig, mut max_tanh) = (0f32, 0f32);
        let mut x = -90.0f32;
        while x < 90.0 {
            if x.abs() < 87.0 {
                max_rel = max_rel.max((exp_fast(x) - x.exp()).abs() / x.exp());
            }
            max_sig = max_sig.max((sigmoid_fast(x) - sigmoid(x)).abs());
            max_tanh = max_tanh.max((tanh_fast(x) - x.tanh()).abs());
            x += 0.001_37;
        }
        assert!(max_rel < 5e-7, "exp: {max_rel}");
        assert!(max_sig < 3e-7, "sigmoid: {max_sig}");
        assert!(max_tanh < 5e-7, "tanh: {max_tanh}");
        assert!(sigmoid_fast(-200.0) < 1e-30);
        assert_eq!(sigmoid_fast(200.0), 1.0);
        assert_eq!(tanh_fast(-200.0), -1.0);
    }

    #[test]
    fn lstm_builds_agree() {
        // The AVX2+FMA build (when the CPU has it) and the portable one.
        let vad = SileroVad::from_weights(&Weights::random(5, 0.0));
        let mut rng = XorShift::new(4);
        let gates: Vec<f32> = (0..50 * GATES).map(|_| 4.0 * rng.next() - 2.0).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        vad.lstm(&gates, &mut LstmState::default(), &mut a);
        let mut st = LstmState::default();
        lstm_kernel::<false>(&vad.lstm_rb, &vad.dec_w, vad.dec_b, &gates, &mut st, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn blocks_do_not_change_the_result() {
        let w = Weights::random(11, 0.5);
        let vad = SileroVad::from_weights(&w);
        let x = test_signal(2 * BLOCK * WINDOW_SAMPLES + 1234, 5);
        // (BLOCK + 17 windows: the prefix's last block is partial.)
        let all = vad.speech_probs(&x);
        // A prefix sees the same windows except the last (its padding and
        // the zeroed tail differ).
        let cut = (BLOCK + 17) * WINDOW_SAMPLES;
        let part = vad.speech_probs(&x[..cut]);
        assert_eq!(part.len(), BLOCK + 18);
        for (i, (a, b)) in part.iter().zip(&all).take(BLOCK + 17).enumerate() {
            assert!((a - b).abs() < 1e-6, "window {i}: {a} vs {b}");
        }
    }

    #[test]
    fn lstm_gate_order_is_onnx_i_o_f_c() {
        // Zero input and recurrent weights: the gates are their biases.
        // ONNX order [i, o, f, c]: i = o = σ(20) ≈ 1, f = σ(-20) ≈ 0,
        // c̃ = tanh(0.5); so c = tanh(0.5) and h = tanh(tanh(0.5)) after one
        // step, and c stays tanh(0.5) because f ≈ 0.
        // Read as PyTorch's [i, f, g, o] the same biases give f ≈ 1,
        // g = tanh(-20) = -1, o = σ(0.5): a very different h.
        let mut w = Weights::random(1, 0.0);
        w.lstm_w.fill(0.0);
        w.lstm_r.fill(0.0);
        w.lstm_b.fill(0.0);
        for q in 0..HIDDEN {
            w.lstm_b[q] = 10.0; // i (split over Wb and Rb)
            w.lstm_b[GATES + q] = 10.0;
            w.lstm_b[HIDDEN + q] = 20.0; // o
            w.lstm_b[2 * HIDDEN + q] = -20.0; // f
            w.lstm_b[3 * HIDDEN + q] = 0.5; // c
        }
        w.dec_w.fill(0.0);
        w.dec_w[0] = 1.0;
        w.dec_b = 0.0;
        let vad = SileroVad::from_weights(&w);
        let probs = vad.speech_probs(&vec![0.1; 3 * WINDOW_SAMPLES]);
        let h = (0.5f32).tanh().tanh();
        let want = 1.0 / (1.0 + (-h).exp());
        for p in &probs {
            assert!((p - want).abs() < 1e-6, "{p} vs {want}");
        }
        // Read as PyTorch's order: c = -1, h = σ(0.5)·tanh(-1) < 0, ReLU → 0,
        // output σ(0) = 0.5.
        assert!((want - 0.5).abs() > 0.1);
    }

    #[test]
    fn onnx_round_trip_keeps_every_weight() {
        let w = Weights::random(3, -1.5);
        let bytes = to_onnx(&w);
        let m = onnx::parse_model(&bytes).unwrap();
        assert_eq!(extract(&m, Path::new("x.onnx")).unwrap(), w);
        let a = SileroVad::from_onnx_bytes(&bytes, Path::new("x.onnx")).unwrap();
        let b = SileroVad::from_weights(&w);
        let x = test_signal(20_000, 9);
        assert_eq!(a.speech_probs(&x), b.speech_probs(&x));
    }

    #[test]
    fn other_graphs_are_refused_with_a_reason() {
        let w = Weights::random(3, 0.0);
        let mut m = onnx::parse_model(&to_onnx(&w)).unwrap();
        let good = m.clone();
        m.nodes[18]
            .attrs
            .push(("clip".into(), AttrValue::Float(3.0)));
        let e = extract(&m, Path::new("v.onnx")).unwrap_err();
        assert!(matches!(e, VadError::UnsupportedGraph { .. }), "{e}");
        assert!(e.to_string().contains("clip"), "{e}");

        let mut m = good.clone();
        m.nodes.insert(0, m.nodes[10].clone());
        let e = extract(&m, Path::new("v.onnx")).unwrap_err();
        assert!(e.to_string().contains("op sequence"), "{e}");

        let mut m = good.clone();
        m.initializers.get_mut("pads").unwrap().data = TensorData::I64(vec![0, 64, 0, 64]);
        assert!(extract(&m, Path::new("v.onnx")).is_err());

        let mut m = good;
        m.initializers.get_mut("c1w").unwrap().dims = vec![64, 128, 1];
        let e = extract(&m, Path::new("v.onnx")).unwrap_err();
        assert!(matches!(e, VadError::Tensor { .. }), "{e}");

        let e = SileroVad::from_onnx_bytes(b"\xff\xff", Path::new("junk.onnx")).unwrap_err();
        assert!(matches!(e, VadError::Protobuf { .. }), "{e}");
        let e = SileroVad::load("/no/such/silero.onnx").unwrap_err();
        assert!(matches!(e, VadError::Io { .. }), "{e}");
    }

    #[test]
    fn silence_and_empty_input() {
        let vad = SileroVad::from_weights(&Weights::random(2, 0.0));
        assert_eq!(vad.speech_probs(&[]).len(), 1);
        assert_eq!(vad.speech_probs(&[0.0; 511]).len(), 1);
        assert_eq!(vad.speech_probs(&[0.0; 512]).len(), 2);
        let p = vad.speech_probs(&vec![0.0; 10 * WINDOW_SAMPLES]);
        assert!(p.iter().all(|p| p.is_finite() && (0.0..=1.0).contains(p)));
    }
}
