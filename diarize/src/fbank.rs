//! Kaldi-compatible log mel filterbank features, the input CAM++ was
//! trained on. Speaker networks are sensitive to their front end: a
//! different window, mel scale or floor shifts every embedding, so this
//! follows Kaldi's `compute-fbank-feats` (and `torchaudio.compliance.kaldi.fbank`,
//! the reference the tests compare against) step by step, with the settings
//! 3D-Speaker uses:
//!
//! - 16 kHz input as floats in [-1, 1] (3D-Speaker reads audio with
//!   torchaudio, so samples are not scaled to the int16 range; a scale
//!   would only add a constant to every log energy, which the per-utterance
//!   mean normalisation removes anyway);
//! - 25 ms frames (400 samples) every 10 ms (160), `snip_edges` (only whole
//!   frames: `1 + (n - 400) / 160` of them, none under 400 samples);
//! - per frame: DC offset removed, pre-emphasis 0.97 (the first sample
//!   against itself), Povey window (Hann to the power 0.85), zero padded
//!   to a 512-point FFT, power spectrum;
//! - 80 triangular mel bins on Kaldi's mel scale (`1127 ln(1 + f / 700)`)
//!   from 20 Hz to the Nyquist frequency, no dither (deterministic), and
//!   the natural log floored at `f32::EPSILON`.
//!
//! Arithmetic is f64 internally; features come out as f32.

use std::sync::Arc;

use rayon::prelude::*;
use rustfft::{num_complex::Complex, Fft, FftPlanner};

/// Mel bins per frame.
pub const NUM_MEL_BINS: usize = 80;
/// Samples per frame (25 ms at 16 kHz).
pub const FRAME_LENGTH: usize = 400;
/// Samples between frame starts (10 ms at 16 kHz).
pub const FRAME_SHIFT: usize = 160;
/// FFT size: the frame length rounded up to a power of two.
pub const FFT_SIZE: usize = 512;

const PREEMPHASIS: f64 = 0.97;
const LOW_FREQ: f64 = 20.0;
const SAMPLE_RATE: f64 = 16_000.0;

/// One frame's log mel energies.
pub type Frame = [f32; NUM_MEL_BINS];

/// Frames a clip of `samples` samples yields (Kaldi's `snip_edges`).
pub fn num_frames(samples: usize) -> usize {
    if samples < FRAME_LENGTH {
        0
    } else {
        1 + (samples - FRAME_LENGTH) / FRAME_SHIFT
    }
}

/// Log mel filterbank of 16 kHz samples in [-1, 1]: one row per frame
/// (see [`num_frames`]); empty when the clip is shorter than a frame.
/// Builds a [`Fbank`] each call: reuse one for many clips.
pub fn fbank(samples: &[f32]) -> Vec<Frame> {
    Fbank::new().compute(samples)
}

/// Subtracts each bin's mean over time (3D-Speaker's per-utterance
/// normalisation, applied before CAM++).
pub fn mean_normalise(frames: &mut [Frame]) {
    if frames.is_empty() {
        return;
    }
    let mut mean = [0f64; NUM_MEL_BINS];
    for f in frames.iter() {
        for (m, v) in mean.iter_mut().zip(f) {
            *m += f64::from(*v);
        }
    }
    let n = frames.len() as f64;
    for m in mean.iter_mut() {
        *m /= n;
    }
    for f in frames.iter_mut() {
        for (v, m) in f.iter_mut().zip(&mean) {
            *v = (f64::from(*v) - m) as f32;
        }
    }
}

/// One triangular mel filter: weights for FFT bins `start..start + weights.len()`.
#[derive(Debug, Clone)]
struct MelFilter {
    start: usize,
    weights: Vec<f64>,
}

/// The precomputed parts of the feature extractor (window, mel filters,
/// FFT plan): build once, then [`Fbank::compute`] or [`Fbank::compute_batch`].
#[derive(Clone)]
pub struct Fbank {
    window: Vec<f64>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn Fft<f64>>,
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank")
            .field("mel_bins", &self.filters.len())
            .finish()
    }
}

fn mel_scale(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

impl Fbank {
    pub fn new() -> Self {
        // Povey window: a symmetric Hann window raised to 0.85.
        let denom = (FRAME_LENGTH - 1) as f64;
        let window = (0..FRAME_LENGTH)
            .map(|i| {
                let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / denom).cos();
                hann.powf(0.85)
            })
            .collect();

        // Kaldi's mel banks: bins evenly spaced on the mel scale between
        // LOW_FREQ and Nyquist; FFT bin i sits at i * rate / FFT_SIZE (the
        // Nyquist bin itself always gets weight 0).
        let nyquist = SAMPLE_RATE / 2.0;
        let bin_width = SAMPLE_RATE / FFT_SIZE as f64;
        let mel_low = mel_scale(LOW_FREQ);
        let mel_high = mel_scale(nyquist);
        let delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1) as f64;
        let filters = (0..NUM_MEL_BINS)
            .map(|b| {
                let left = mel_low + b as f64 * delta;
                let center = left + delta;
                let right = center + delta;
                let mut start = None;
                let mut weights = Vec::new();
                for i in 0..FFT_SIZE / 2 {
                    let mel = mel_scale(bin_width * i as f64);
                    let up = (mel - left) / (center - left);
                    let down = (right - mel) / (right - center);
                    let w = up.min(down);
                    if w > 0.0 {
                        start.get_or_insert(i);
                        weights.push(w);
                    } else if start.is_some() {
                        break;
                    }
                }
                MelFilter {
                    start: start.unwrap_or(0),
                    weights,
                }
            })
            .collect();

        let fft = FftPlanner::new().plan_fft_forward(FFT_SIZE);
        Self {
            window,
            filters,
            fft,
        }
    }

    /// Log mel filterbank of one clip (see [`fbank`]).
    pub fn compute(&self, samples: &[f32]) -> Vec<Frame> {
        let n = num_frames(samples.len());
        let mut out = Vec::with_capacity(n);
        let mut frame = [0f64; FRAME_LENGTH];
        let mut buf = vec![Complex::new(0.0, 0.0); FFT_SIZE];
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        let mut power = [0f64; FFT_SIZE / 2 + 1];
        for t in 0..n {
            let chunk = &samples[t * FRAME_SHIFT..t * FRAME_SHIFT + FRAME_LENGTH];
            let mean = chunk.iter().map(|&s| f64::from(s)).sum::<f64>() / FRAME_LENGTH as f64;
            for (f, &s) in frame.iter_mut().zip(chunk) {
                *f = f64::from(s) - mean;
            }
            // Pre-emphasis, back to front so each sample sees its original
            // predecessor; the first is emphasised against itself.
            for i in (1..FRAME_LENGTH).rev() {
                frame[i] -= PREEMPHASIS * frame[i - 1];
            }
            frame[0] -= PREEMPHASIS * frame[0];
            for (i, b) in buf.iter_mut().enumerate() {
                *b = if i < FRAME_LENGTH {
                    Complex::new(frame[i] * self.window[i], 0.0)
                } else {
                    Complex::new(0.0, 0.0)
                };
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (p, b) in power.iter_mut().zip(&buf) {
                *p = b.norm_sqr();
            }
            let mut row = [0f32; NUM_MEL_BINS];
            for (r, filt) in row.iter_mut().zip(&self.filters) {
                let e: f64 = filt
                    .weights
                    .iter()
                    .zip(&power[filt.start..])
                    .map(|(w, p)| w * p)
                    .sum();
                *r = e.max(f64::from(f32::EPSILON)).ln() as f32;
            }
            out.push(row);
        }
        out
    }

    /// [`Fbank::compute`] of several clips, in parallel.
    pub fn compute_batch(&self, clips: &[&[f32]]) -> Vec<Vec<Frame>> {
        clips.par_iter().map(|c| self.compute(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts_follow_snip_edges() {
        assert_eq!(num_frames(0), 0);
        assert_eq!(num_frames(399), 0);
        assert_eq!(num_frames(400), 1);
        assert_eq!(num_frames(559), 1);
        assert_eq!(num_frames(560), 2);
        assert_eq!(num_frames(16_000), 98);
        assert!(fbank(&[0.1; 100]).is_empty());
    }

    #[test]
    fn pure_tone_peaks_in_its_mel_bin() {
        let fb = Fbank::new();
        for hz in [300.0f64, 1000.0, 3000.0, 6000.0] {
            let samples: Vec<f32> = (0..16_000)
                .map(|i| {
                    (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / 16_000.0).sin()) as f32
                })
                .collect();
            let feats = fb.compute(&samples);
            assert_eq!(feats.len(), 98);
            let row = &feats[50];
            let peak = (0..NUM_MEL_BINS)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            // The bin whose centre is nearest the tone on the mel scale.
            let (lo, hi) = (mel_scale(LOW_FREQ), mel_scale(8000.0));
            let delta = (hi - lo) / (NUM_MEL_BINS + 1) as f64;
            let expected = ((mel_scale(hz) - lo) / delta - 1.0).round() as usize;
            assert!(
                peak.abs_diff(expected) <= 1,
                "{hz} Hz peaked in bin {peak}, expected about {expected}"
            );
            assert!(row.iter().all(|v| v.is_finite()));
            // Steady tone: every frame alike.
            assert!((feats[10][peak] - feats[80][peak]).abs() < 1e-3);
        }
    }

    #[test]
    fn silence_hits_the_floor_and_mean_normalises_to_zero() {
        let mut feats = fbank(&[0.0; 1600]);
        assert_eq!(feats.len(), 8);
        let floor = f32::EPSILON.ln();
        assert!(feats.iter().flatten().all(|&v| (v - floor).abs() < 1e-4));
        mean_normalise(&mut feats);
        assert!(feats.iter().flatten().all(|&v| v.abs() < 1e-4));
    }

    #[test]
    fn batch_matches_single() {
        let fb = Fbank::new();
        let a: Vec<f32> = (0..4000)
            .map(|i| ((i * 7919) % 200) as f32 / 400.0 - 0.25)
            .collect();
        let b: Vec<f32> = a.iter().rev().copied().collect();
        let batch = fb.compute_batch(&[&a, &b[..3000]]);
        assert_eq!(batch[0], fb.compute(&a));
        assert_eq!(batch[1], fb.compute(&b[..3000]));
    }
}
