//! Resemblyzer's GE2E speaker encoder (a 3-layer LSTM over 40-band mel
//! frames, trained with the generalised end-to-end loss), as a second
//! [`EmbedModel`] beside CAM++.
//!
//! Why a second encoder: it ships in its own registry package (the
//! `Resemblyzer` wheel, Apache-2.0, `resemblyzer/pretrained.pt`), it is a
//! different family (recurrent, 256-d, trained on other data), and a
//! diarization run can swap it in (`--speaker-encoder ge2e`) to see how much
//! of the result is the embedding network's. CAM++ stays the default: it
//! separates voices far better here (README's table).
//!
//! What runs is Resemblyzer's `VoiceEncoder.embed_utterance` on a clip
//! normalised as its `preprocess_wav` does (gain up to −30 dBFS, never
//! down; its silence trimming is left out, since the pipeline's clips are
//! already speech):
//! - a power mel spectrogram as librosa computes it (25 ms Hann window,
//!   10 ms hop, centred frames with zero padding, 40 Slaney mel bands, no
//!   log);
//! - the clip cut into 1.6 s partials (160 frames) 77 frames apart (1.3 a
//!   second), zero-padded at the end, the last dropped when it covers less
//!   than 75% real audio (unless it is the only one);
//! - each partial through the LSTM; its last hidden state through a linear
//!   layer, ReLU, L2 normalisation; the partials' mean, L2-normalised.
//!
//! The checkpoint is PyTorch's pre-1.6 format ([`crate::pth::read_legacy`]).

use std::path::Path;

use candle_core::{Device, Tensor};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::error::{DiarizeError, Result};
use crate::types::{EmbedModel, SAMPLE_RATE};

/// librosa's window and hop for Resemblyzer's hparams (25 ms, 10 ms).
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 40;
/// Frames per partial utterance (1.6 s).
pub const PARTIAL_FRAMES: usize = 160;
const HIDDEN: usize = 256;
const LAYERS: usize = 3;
/// Partials per second of audio (`embed_utterance`'s default rate).
const RATE: f64 = 1.3;
const MIN_COVERAGE: f64 = 0.75;
/// `preprocess_wav`'s loudness target.
const TARGET_DBFS: f64 = -30.0;
/// Partials run through the LSTM together.
const MAX_BATCH: usize = 256;

/// The GE2E network and its mel front end.
pub struct Ge2e {
    /// Per layer: `W_ih^T` (in, 4H), `W_hh^T` (H, 4H), `b_ih + b_hh` (4H).
    layers: Vec<(Tensor, Tensor, Vec<f32>)>,
    /// `linear.weight^T` (H, E) and its bias.
    linear: (Tensor, Vec<f32>),
    mel: MelBank,
    device: Device,
}

impl Ge2e {
    /// Loads Resemblyzer's `pretrained.pt` (its `model_state`).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let model_err = |reason: String| DiarizeError::Model {
            path: path.display().to_string(),
            reason,
        };
        let mut t = crate::pth::read_legacy(path, Some("model_state"))
            .map_err(|e| model_err(format!("reading the GE2E checkpoint: {e}")))?;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let x = t
                .remove(name)
                .ok_or_else(|| model_err(format!("no tensor {name}")))?;
            if x.dims() != shape {
                return Err(model_err(format!(
                    "{name} is {:?}, expected {shape:?}",
                    x.dims()
                )));
            }
            Ok(x.to_dtype(candle_core::DType::F32)?)
        };
        let g = 4 * HIDDEN;
        let mut layers = Vec::with_capacity(LAYERS);
        for l in 0..LAYERS {
            let input = if l == 0 { N_MELS } else { HIDDEN };
            let w_ih = take(&format!("lstm.weight_ih_l{l}"), &[g, input])?;
            let w_hh = take(&format!("lstm.weight_hh_l{l}"), &[g, HIDDEN])?;
            let b_ih = take(&format!("lstm.bias_ih_l{l}"), &[g])?.to_vec1::<f32>()?;
            let b_hh = take(&format!("lstm.bias_hh_l{l}"), &[g])?.to_vec1::<f32>()?;
            let bias: Vec<f32> = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
            layers.push((
                w_ih.t()?.contiguous()?.to_device(device)?,
                w_hh.t()?.contiguous()?.to_device(device)?,
                bias,
            ));
        }
        let lw = take("linear.weight", &[HIDDEN, HIDDEN])?;
        let lb = take("linear.bias", &[HIDDEN])?.to_vec1::<f32>()?;
        Ok(Self {
            layers,
            linear: (lw.t()?.contiguous()?.to_device(device)?, lb),
            mel: MelBank::new(),
            device: device.clone(),
        })
    }

    /// The power mel spectrogram of `wav`, `(frames, 40)` as rows.
    pub fn mel(&self, wav: &[f32]) -> Vec<[f32; N_MELS]> {
        self.mel.power_mel(wav)
    }

    /// One embedding per partial (`(P, 160, 40)` mel frames, flattened).
    fn embed_partials(&self, mels: &[f32], p: usize) -> Result<Vec<Vec<f32>>> {
        let t = PARTIAL_FRAMES;
        let mut x = Tensor::from_slice(mels, (p * t, N_MELS), &self.device)?;
        let mut h_last = vec![0f32; p * HIDDEN];
        for (w_ih, w_hh, bias) in &self.layers {
            // Input projections for every step at once: (P·T, 4H).
            let pre = x.matmul(w_ih)?.to_vec2::<f32>()?;
            let mut h = vec![0f32; p * HIDDEN];
            let mut c = vec![0f32; p * HIDDEN];
            let mut seq = vec![0f32; p * t * HIDDEN];
            for step in 0..t {
                let rec = Tensor::from_slice(&h, (p, HIDDEN), &self.device)?
                    .matmul(w_hh)?
                    .to_vec2::<f32>()?;
                for b in 0..p {
                    let xin = &pre[b * t + step];
                    let r = &rec[b];
                    for j in 0..HIDDEN {
                        // PyTorch's gate order: input, forget, cell, output.
                        let gate = |k: usize| {
                            xin[k * HIDDEN + j] + r[k * HIDDEN + j] + bias[k * HIDDEN + j]
                        };
                        let i = sigmoid(gate(0));
                        let f = sigmoid(gate(1));
                        let gg = gate(2).tanh();
                        let o = sigmoid(gate(3));
                        let cell = f * c[b * HIDDEN + j] + i * gg;
                        c[b * HIDDEN + j] = cell;
                        let hv = o * cell.tanh();
                        h[b * HIDDEN + j] = hv;
                        seq[(b * t + step) * HIDDEN + j] = hv;
                    }
                }
            }
            h_last.copy_from_slice(&h);
            x = Tensor::from_vec(seq, (p * t, HIDDEN), &self.device)?;
        }
        let (lw, lb) = &self.linear;
        let y = Tensor::from_slice(&h_last, (p, HIDDEN), &self.device)?
            .matmul(lw)?
            .to_vec2::<f32>()?;
        Ok(y.into_iter()
            .map(|mut e| {
                for (v, b) in e.iter_mut().zip(lb) {
                    *v = (*v + b).max(0.0);
                }
                normalise(&mut e);
                e
            })
            .collect())
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Scales `v` to unit length (left alone when it is all zeros).
fn normalise(v: &mut [f32]) {
    let n = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
}

/// `normalize_volume(wav, -30, increase_only=True)`: gain up to −30 dBFS
/// (16-bit full scale), never down; silence is left as it is.
pub fn normalise_volume(wav: &[f32]) -> Vec<f32> {
    let full = i16::MAX as f64;
    let ms = wav.iter().map(|&x| (x as f64 * full).powi(2)).sum::<f64>() / wav.len().max(1) as f64;
    let rms = ms.sqrt();
    if rms <= 0.0 || !rms.is_finite() {
        return wav.to_vec();
    }
    let change = TARGET_DBFS - 20.0 * (rms / full).log10();
    if change < 0.0 {
        return wav.to_vec();
    }
    let gain = 10f64.powf(change / 20.0);
    wav.iter().map(|&x| (x as f64 * gain) as f32).collect()
}

/// `compute_partial_slices`: the first mel frame of each partial of a
/// `samples`-long clip.
pub fn partial_starts(samples: usize) -> Vec<usize> {
    let n_frames = (samples + 1).div_ceil(HOP);
    let step = ((SAMPLE_RATE as f64 / RATE) / HOP as f64).round() as usize;
    let steps = (n_frames + step + 1).saturating_sub(PARTIAL_FRAMES).max(1);
    let mut starts: Vec<usize> = (0..steps).step_by(step).collect();
    if starts.len() > 1 {
        let last = *starts.last().expect("non-empty");
        let (lo, hi) = (last * HOP, (last + PARTIAL_FRAMES) * HOP);
        let coverage = (samples as f64 - lo as f64) / (hi - lo) as f64;
        if coverage < MIN_COVERAGE {
            starts.pop();
        }
    }
    starts
}

impl EmbedModel for Ge2e {
    fn dimension(&self) -> usize {
        HIDDEN
    }

    fn embed(&self, clips: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        if let Some(i) = clips.iter().position(|c| c.is_empty()) {
            return Err(DiarizeError::Input(format!("clip {i} is empty")));
        }
        // Every clip's partials, flattened; `owner[k]` is partial k's clip.
        let mut mels: Vec<f32> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, clip) in clips.iter().enumerate() {
            let starts = partial_starts(clip.len());
            let last = starts.last().copied().unwrap_or(0);
            let mut wav = normalise_volume(clip);
            let end = (last + PARTIAL_FRAMES) * HOP;
            if end >= wav.len() {
                wav.resize(end, 0.0);
            }
            let mel = self.mel.power_mel(&wav);
            for s in starts {
                for frame in &mel[s..s + PARTIAL_FRAMES] {
                    mels.extend_from_slice(frame);
                }
                owner.push(i);
            }
        }
        let per = PARTIAL_FRAMES * N_MELS;
        let mut partials: Vec<Vec<f32>> = Vec::with_capacity(owner.len());
        for chunk in mels.chunks(MAX_BATCH * per) {
            partials.extend(self.embed_partials(chunk, chunk.len() / per)?);
        }
        let mut out = vec![vec![0f64; HIDDEN]; clips.len()];
        let mut counts = vec![0usize; clips.len()];
        for (e, &i) in partials.iter().zip(&owner) {
            out[i].iter_mut().zip(e).for_each(|(a, &b)| *a += b as f64);
            counts[i] += 1;
        }
        Ok(out
            .into_iter()
            .zip(counts)
            .map(|(sum, n)| {
                let mut e: Vec<f32> = sum.iter().map(|&s| (s / n.max(1) as f64) as f32).collect();
                normalise(&mut e);
                e
            })
            .collect())
    }
}

/// librosa's `melspectrogram` for these settings: STFT power through a
/// Slaney-normalised mel filterbank.
struct MelBank {
    window: Vec<f32>,
    /// (N_MELS, N_FFT/2 + 1) weights, row-major.
    filters: Vec<f32>,
    fft: std::sync::Arc<dyn rustfft::Fft<f32>>,
}

impl MelBank {
    fn new() -> Self {
        // Periodic Hann (scipy's `get_window('hann', n, fftbins=True)`).
        let window = (0..N_FFT)
            .map(|i| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        Self {
            window,
            filters: slaney_filters(SAMPLE_RATE as f64, N_FFT, N_MELS),
            fft: FftPlanner::new().plan_fft_forward(N_FFT),
        }
    }

    /// Centred frames (`n_fft/2` zeros each side), one per hop:
    /// `1 + len / hop` of them.
    fn power_mel(&self, wav: &[f32]) -> Vec<[f32; N_MELS]> {
        let pad = N_FFT / 2;
        let frames = 1 + wav.len() / HOP;
        let bins = N_FFT / 2 + 1;
        let mut buf = vec![Complex::new(0f32, 0f32); N_FFT];
        let mut power = vec![0f32; bins];
        let mut out = Vec::with_capacity(frames);
        for f in 0..frames {
            for (k, slot) in buf.iter_mut().enumerate() {
                let at = (f * HOP + k) as isize - pad as isize;
                let x = if at >= 0 && (at as usize) < wav.len() {
                    wav[at as usize]
                } else {
                    0.0
                };
                *slot = Complex::new(x * self.window[k], 0.0);
            }
            self.fft.process(&mut buf);
            for (p, c) in power.iter_mut().zip(&buf) {
                *p = c.norm_sqr();
            }
            let mut row = [0f32; N_MELS];
            for (m, v) in row.iter_mut().enumerate() {
                let w = &self.filters[m * bins..(m + 1) * bins];
                *v = w.iter().zip(&power).map(|(a, b)| a * b).sum();
            }
            out.push(row);
        }
        out
    }
}

fn hz_to_mel(f: f64) -> f64 {
    // Slaney: linear below 1 kHz, logarithmic above.
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= 1000.0 {
        min_log_mel + (f / 1000.0).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        1000.0 * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels)` (fmin 0, fmax sr/2, Slaney
/// scale and area normalisation), computed in f64, stored as f32.
fn slaney_filters(sr: f64, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins).map(|i| i as f64 * sr / n_fft as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut w = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let (d0, d1) = (mel_f[m + 1] - mel_f[m], mel_f[m + 2] - mel_f[m + 1]);
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[m]) / d0;
            let upper = (mel_f[m + 2] - f) / d1;
            w[m * bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_follow_resemblyzer() {
        // 1 s: 101 frames, one partial even though it is mostly padding.
        assert_eq!(partial_starts(16_000), vec![0]);
        // 3 s: 301 frames; steps = 301 - 160 + 77 + 1 = 219 → 0, 77, 154;
        // the last covers (48000 − 24640) / 25600 = 0.91 ≥ 0.75: kept.
        assert_eq!(partial_starts(48_000), vec![0, 77, 154]);
        // 2.5 s: 251 frames → 0, 77, 154; 154 covers 0.60: dropped.
        assert_eq!(partial_starts(40_000), vec![0, 77]);
    }

    #[test]
    fn volume_goes_up_to_minus_30_dbfs_never_down() {
        let quiet: Vec<f32> = (0..1600).map(|i| 0.001 * (i as f32 * 0.1).sin()).collect();
        let loud = normalise_volume(&quiet);
        let dbfs = |x: &[f32]| {
            let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
            20.0 * rms.log10()
        };
        assert!((dbfs(&loud) - -30.0).abs() < 1e-6, "{}", dbfs(&loud));
        let already: Vec<f32> = quiet.iter().map(|v| v * 300.0).collect();
        assert_eq!(normalise_volume(&already), already);
        assert_eq!(normalise_volume(&[0.0; 10]), vec![0.0; 10]);
    }

    #[test]
    fn slaney_bank_is_area_normalised_triangles() {
        let bins = N_FFT / 2 + 1;
        let w = slaney_filters(16_000.0, N_FFT, N_MELS);
        for m in 0..N_MELS {
            let row = &w[m * bins..(m + 1) * bins];
            assert!(row.iter().all(|v| *v >= 0.0));
            let peak = row.iter().cloned().fold(0f32, f32::max);
            assert!(peak > 0.0, "band {m} empty");
            // One rise and one fall: no more than two sign changes of the slope.
            let nz: Vec<usize> = (0..bins).filter(|&k| row[k] > 0.0).collect();
            assert!(
                nz.windows(2).all(|p| p[1] == p[0] + 1),
                "band {m} not contiguous"
            );
        }
        // Below 1 kHz the scale is linear: equal-width bands, equal heights.
        let peak = |m: usize| {
            w[m * bins..(m + 1) * bins]
                .iter()
                .cloned()
                .fold(0f32, f32::max)
        };
        assert!((peak(1) - peak(2)).abs() / peak(1) < 0.2);
    }
}
