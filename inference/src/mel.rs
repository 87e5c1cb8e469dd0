//! Whisper's log-mel features, computed here rather than loaded from a
//! `mel_filters.npz`: one less file to ship and checksum, and the filter bank
//! is a closed formula (Slaney-style mel scale, area-normalised triangles).
//!
//! Semantics follow the reference feature extractor used by faster-whisper:
//! 160 zero samples appended, periodic Hann window of 400, centred STFT with
//! reflect padding, power spectrum, last frame dropped, `log10` clamped at
//! `1e-10`, dynamic range limited to 8 (×10 dB) below the file's maximum, and
//! `(x + 4) / 4` scaling. The maximum is taken over the whole file so a quiet
//! passage in a long recording is scaled the same as it would be by the
//! reference.

use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::FftPlanner;

pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
/// Frames in one 30 s Whisper window.
pub const N_FRAMES: usize = 3000;
/// Samples appended before the STFT, as the reference extractor does.
pub const TAIL_PADDING: usize = 160;

/// A precomputed mel filter bank stored sparsely: each triangle touches only a
/// few FFT bins, so the projection costs ~n_fft/2 MACs per frame instead of
/// n_mels × n_fft/2.
#[derive(Debug, Clone)]
pub struct MelFilterBank {
    n_mels: usize,
    /// Per mel band: first FFT bin and its weights.
    bands: Vec<(usize, Vec<f32>)>,
}

fn hz_to_mel_slaney(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz_slaney(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        mel * f_sp
    }
}

impl MelFilterBank {
    /// The bank for `n_mels` bands over 0..sr/2 Hz with an `n_fft` FFT.
    pub fn new(n_mels: usize, n_fft: usize, sample_rate: u32) -> Self {
        let n_bins = n_fft / 2 + 1;
        let sr = sample_rate as f64;
        let fft_freqs: Vec<f64> = (0..n_bins).map(|i| i as f64 * sr / n_fft as f64).collect();
        let max_mel = hz_to_mel_slaney(sr / 2.0);
        let mel_f: Vec<f64> = (0..n_mels + 2)
            .map(|i| mel_to_hz_slaney(max_mel * i as f64 / (n_mels + 1) as f64))
            .collect();
        let bands = (0..n_mels)
            .map(|m| {
                let (lo, c, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
                let enorm = 2.0 / (hi - lo);
                let w: Vec<f64> = fft_freqs
                    .iter()
                    .map(|&f| {
                        let lower = (f - lo) / (c - lo);
                        let upper = (hi - f) / (hi - c);
                        lower.min(upper).max(0.0) * enorm
                    })
                    .collect();
                let first = w.iter().position(|&x| x > 0.0).unwrap_or(0);
                let last = w.iter().rposition(|&x| x > 0.0).unwrap_or(0);
                let weights = if last >= first && w[first] > 0.0 {
                    w[first..=last].iter().map(|&x| x as f32).collect()
                } else {
                    Vec::new()
                };
                (first, weights)
            })
            .collect();
        Self { n_mels, bands }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Dense `[n_mels, n_fft/2+1]` matrix, for tests and inspection.
    pub fn dense(&self, n_bins: usize) -> Vec<f32> {
        let mut m = vec![0f32; self.n_mels * n_bins];
        for (i, (first, w)) in self.bands.iter().enumerate() {
            for (j, &x) in w.iter().enumerate() {
                m[i * n_bins + first + j] = x;
            }
        }
        m
    }
}

/// Log-mel features of a whole recording, `[n_mels, n_frames]` row-major.
#[derive(Debug, Clone)]
pub struct LogMel {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
}

impl LogMel {
    /// Frames that carry audio: the reference drops one more than the STFT
    /// makes, because the appended padding creates one extra frame.
    pub fn content_frames(&self) -> usize {
        self.n_frames.saturating_sub(1)
    }

    /// Copy frames `[start, start+len)` into a `[n_mels, width]` window
    /// (`width = out.len() / n_mels`, normally [`N_FRAMES`]), zero-padded
    /// on the right (the reference pads features, not audio).
    pub fn window_into(&self, start: usize, len: usize, out: &mut [f32]) {
        let width = out.len() / self.n_mels.max(1);
        debug_assert_eq!(out.len(), self.n_mels * width);
        out.fill(0.0);
        let len = len.min(width).min(self.n_frames.saturating_sub(start));
        for m in 0..self.n_mels {
            let src = &self.data[m * self.n_frames + start..m * self.n_frames + start + len];
            out[m * width..m * width + len].copy_from_slice(src);
        }
    }
}

/// Computes [`LogMel`] features; cheap to clone and share between threads.
#[derive(Clone)]
pub struct MelExtractor {
    bank: Arc<MelFilterBank>,
    window: Arc<Vec<f32>>,
    fft: Arc<dyn rustfft::Fft<f32>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor")
            .field("n_mels", &self.bank.n_mels)
            .finish()
    }
}

/// Index into a signal of length `n` extended by mirror reflection (numpy's
/// `np.pad(mode="reflect")`, including pads longer than the signal).
fn reflect_index(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    if m >= n as isize {
        (period - m) as usize
    } else {
        m as usize
    }
}

impl MelExtractor {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT)
            .map(|k| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        let fft = FftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self {
            bank: Arc::new(MelFilterBank::new(n_mels, N_FFT, crate::audio::SAMPLE_RATE)),
            window: Arc::new(window),
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.bank.n_mels
    }

    pub fn filter_bank(&self) -> &MelFilterBank {
        &self.bank
    }

    /// Features for 16 kHz mono samples, with the reference tail padding.
    pub fn compute(&self, samples: &[f32]) -> LogMel {
        self.features(samples, TAIL_PADDING)
    }

    /// Features for exactly the given samples (no tail padding).
    pub fn compute_unpadded(&self, x: &[f32]) -> LogMel {
        self.features(x, 0)
    }

    /// Features for `x` followed by `tail` zeros. The zeros are read, not
    /// appended, and every frame's bands are written straight into the
    /// band-major result: a whole recording's features then need the
    /// audio and the result only, not also a padded copy of the audio and
    /// a frame-major copy of the result (for an hour at 16 kHz, 230 + 115
    /// MB more; 12 s into `transcribe` of 160 minutes, with the audio's
    /// own decoding copies also gone, RSS was 1.46 GB against 2.41).
    fn features(&self, x: &[f32], tail: usize) -> LogMel {
        let n_mels = self.bank.n_mels;
        let real = x.len();
        let n = real + tail;
        let empty = LogMel {
            n_mels,
            n_frames: 0,
            data: Vec::new(),
        };
        if n == 0 {
            return empty;
        }
        let half = (N_FFT / 2) as isize;
        // STFT frames with centre padding, minus the last one.
        let n_frames = n / HOP_LENGTH;
        if n_frames == 0 {
            return empty;
        }
        let n_bins = N_FFT / 2 + 1;
        let mut data = vec![0f32; n_mels * n_frames];
        // Frames in blocks of CHUNK: block `c` owns columns
        // `[c·CHUNK, (c+1)·CHUNK)` of every band's row.
        const CHUNK: usize = 256;
        let mut blocks: Vec<Vec<&mut [f32]>> = (0..n_frames.div_ceil(CHUNK))
            .map(|_| Vec::with_capacity(n_mels))
            .collect();
        for row in data.chunks_mut(n_frames) {
            for (block, part) in blocks.iter_mut().zip(row.chunks_mut(CHUNK)) {
                block.push(part);
            }
        }
        let max = blocks
            .into_par_iter()
            .enumerate()
            .map(|(ci, mut bands)| {
                let mut buf = vec![Complex32::new(0.0, 0.0); N_FFT];
                let mut scratch =
                    vec![Complex32::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
                let mut power = vec![0f32; n_bins];
                let mut max = f32::NEG_INFINITY;
                let width = bands.first().map_or(0, |b| b.len());
                for fi in 0..width {
                    let f = ci * CHUNK + fi;
                    let start = (f * HOP_LENGTH) as isize - half;
                    let interior = start >= 0 && (start as usize + N_FFT) <= real;
                    for k in 0..N_FFT {
                        let s = if interior {
                            x[start as usize + k]
                        } else {
                            // Reflect within the padded signal; past the
                            // real samples it is the zero tail.
                            x.get(reflect_index(start + k as isize, n))
                                .copied()
                                .unwrap_or(0.0)
                        };
                        buf[k] = Complex32::new(s * self.window[k], 0.0);
                    }
                    self.fft.process_with_scratch(&mut buf, &mut scratch);
                    for (p, c) in power.iter_mut().zip(&buf[..n_bins]) {
                        *p = c.norm_sqr();
                    }
                    for (band, (first, w)) in bands.iter_mut().zip(&self.bank.bands) {
                        let s: f32 = w
                            .iter()
                            .zip(&power[*first..*first + w.len()])
                            .map(|(a, b)| a * b)
                            .sum();
                        let v = s.max(1e-10).log10();
                        band[fi] = v;
                        max = max.max(v);
                    }
                }
                max
            })
            .reduce(|| f32::NEG_INFINITY, f32::max);
        let floor = max - 8.0;
        data.par_chunks_mut(1 << 14).for_each(|c| {
            for v in c {
                *v = (v.max(floor) + 4.0) / 4.0;
            }
        });
        LogMel {
            n_mels,
            n_frames,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extractor as it was written first: the tail appended to a copy
    /// of the samples, frames computed frame-major, then transposed.
    fn padded_copy_reference(e: &MelExtractor, samples: &[f32], tail: usize) -> LogMel {
        let mut x = samples.to_vec();
        x.resize(samples.len() + tail, 0.0);
        let (n, n_mels) = (x.len(), e.bank.n_mels);
        let n_frames = n / HOP_LENGTH;
        if n == 0 || n_frames == 0 {
            return LogMel {
                n_mels,
                n_frames: 0,
                data: Vec::new(),
            };
        }
        let mut fm = vec![0f32; n_frames * n_mels];
        let mut buf = vec![Complex32::new(0.0, 0.0); N_FFT];
        for (f, row) in fm.chunks_mut(n_mels).enumerate() {
            let start = (f * HOP_LENGTH) as isize - (N_FFT / 2) as isize;
            for (k, b) in buf.iter_mut().enumerate() {
                *b = Complex32::new(x[reflect_index(start + k as isize, n)] * e.window[k], 0.0);
            }
            e.fft.process(&mut buf);
            let power: Vec<f32> = buf[..N_FFT / 2 + 1].iter().map(|c| c.norm_sqr()).collect();
            for (r, (first, w)) in row.iter_mut().zip(&e.bank.bands) {
                let s: f32 = w
                    .iter()
                    .zip(&power[*first..*first + w.len()])
                    .map(|(a, b)| a * b)
                    .sum();
                *r = s.max(1e-10).log10();
            }
        }
        let floor = fm.iter().copied().fold(f32::NEG_INFINITY, f32::max) - 8.0;
        let mut data = vec![0f32; n_mels * n_frames];
        for f in 0..n_frames {
            for m in 0..n_mels {
                data[m * n_frames + f] = (fm[f * n_mels + m].max(floor) + 4.0) / 4.0;
            }
        }
        LogMel {
            n_mels,
            n_frames,
            data,
        }
    }

    #[test]
    fn read_in_place_tail_matches_an_appended_one_bit_for_bit() {
        let e = MelExtractor::new(80);
        let mut seed = 7u32;
        let noise: Vec<f32> = (0..16_000 * 3 + 77)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5 + (i as f32 * 0.05).sin() * 0.3
            })
            .collect();
        // Around every edge: empty, shorter than the tail, than a hop, than
        // the FFT, than one block of frames, and a few seconds.
        for len in [
            0,
            1,
            2,
            159,
            160,
            161,
            199,
            200,
            201,
            399,
            400,
            401,
            256 * 160 + 3,
            noise.len(),
        ] {
            let x = &noise[..len];
            for (got, tail) in [(e.compute(x), TAIL_PADDING), (e.compute_unpadded(x), 0)] {
                let want = padded_copy_reference(&e, x, tail);
                assert_eq!(
                    (got.n_mels, got.n_frames),
                    (want.n_mels, want.n_frames),
                    "len {len}"
                );
                assert!(
                    got.data
                        .iter()
                        .zip(&want.data)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "len {len}, tail {tail}: features differ"
                );
            }
        }
    }

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0,1,2,3], 5, mode="reflect") = [1 2 3 2 1 | 0 1 2 3 | 2 1 0 1 2]
        let got: Vec<usize> = (-5..9).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, vec![1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
    }

    #[test]
    fn filter_bank_is_slaney_normalised() {
        let b = MelFilterBank::new(80, N_FFT, 16_000);
        let dense = b.dense(201);
        // Every band has support and the triangles tile the spectrum.
        for m in 0..80 {
            let row = &dense[m * 201..(m + 1) * 201];
            assert!(row.iter().any(|&x| x > 0.0), "band {m} empty");
        }
        // Reference value (librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)[0, 1]).
        assert!((dense[1] - 0.024_862_48).abs() < 1e-6, "{}", dense[1]);
    }

    #[test]
    fn frame_count_and_range() {
        let ex = MelExtractor::new(80);
        let x: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let mel = ex.compute(&x);
        assert_eq!(mel.n_frames, (16_000 + TAIL_PADDING) / HOP_LENGTH);
        assert_eq!(mel.content_frames(), 100);
        let max = mel.data.iter().copied().fold(f32::MIN, f32::max);
        let min = mel.data.iter().copied().fold(f32::MAX, f32::min);
        assert!(max - min <= 2.0 + 1e-5, "dynamic range is clamped to 8/4");
    }

    #[test]
    fn tiny_and_empty_inputs() {
        let ex = MelExtractor::new(128);
        assert_eq!(ex.compute(&[]).n_frames, 1);
        assert_eq!(ex.compute_unpadded(&[]).n_frames, 0);
        let m = ex.compute(&[0.5; 3]);
        assert!(m.data.iter().all(|v| v.is_finite()));
    }
}
