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
        let (width, len) = clear_window(out, self.n_mels, self.n_frames, start, len);
        if len == 0 {
            return;
        }
        for m in 0..self.n_mels {
            let src = &self.data[m * self.n_frames + start..m * self.n_frames + start + len];
            out[m * width..m * width + len].copy_from_slice(src);
        }
    }
}

/// Zeroes `out`, a `[n_mels, width]` window, and returns its width and how
/// many of frames `[start, start+len)` of `n_frames` land in it.
fn clear_window(
    out: &mut [f32],
    n_mels: usize,
    n_frames: usize,
    start: usize,
    len: usize,
) -> (usize, usize) {
    let width = out.len() / n_mels.max(1);
    debug_assert_eq!(out.len(), n_mels * width);
    out.fill(0.0);
    (width, len.min(width).min(n_frames.saturating_sub(start)))
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

    /// A recording's features computed a window at a time, as a decoder
    /// asks for them ([`MelFrames`]), with the reference tail padding.
    pub fn frames<'a>(&'a self, samples: &'a [f32]) -> MelFrames<'a> {
        self.frames_with_tail(samples, TAIL_PADDING)
    }

    /// Features for `x` followed by `tail` zeros, all of them at once.
    fn features(&self, x: &[f32], tail: usize) -> LogMel {
        let f = self.frames_with_tail(x, tail);
        let mut data = vec![0f32; f.n_mels * f.n_frames];
        f.fill(0, f.n_frames, &mut data, f.n_frames);
        LogMel {
            n_mels: f.n_mels,
            n_frames: f.n_frames,
            data,
        }
    }

    /// [`MelFrames`] for `x` followed by `tail` zeros (read, never
    /// appended): one pass over every frame for the file's maximum, which
    /// sets the floor, and nothing kept.
    fn frames_with_tail<'a>(&'a self, x: &'a [f32], tail: usize) -> MelFrames<'a> {
        let n = x.len() + tail;
        // STFT frames with centre padding, minus the last one.
        let n_frames = n / HOP_LENGTH;
        let max = (0..n_frames.div_ceil(FRAME_BLOCK))
            .into_par_iter()
            .map(|c| {
                let mut st = FrameScratch::new(self);
                let mut max = f32::NEG_INFINITY;
                for f in c * FRAME_BLOCK..((c + 1) * FRAME_BLOCK).min(n_frames) {
                    self.frame(x, n, f, &mut st, |_, v| max = max.max(v));
                }
                max
            })
            .reduce(|| f32::NEG_INFINITY, f32::max);
        MelFrames {
            ex: self,
            x,
            n,
            n_mels: self.bank.n_mels,
            n_frames,
            floor: max - 8.0,
        }
    }

    /// Frame `f` of `x` (padded to `n` with zeros): each band's `log10`
    /// power, handed to `put(band, value)`.
    fn frame(
        &self,
        x: &[f32],
        n: usize,
        f: usize,
        st: &mut FrameScratch,
        mut put: impl FnMut(usize, f32),
    ) {
        let half = (N_FFT / 2) as isize;
        let start = (f * HOP_LENGTH) as isize - half;
        let interior = start >= 0 && (start as usize + N_FFT) <= x.len();
        for k in 0..N_FFT {
            let s = if interior {
                x[start as usize + k]
            } else {
                // Reflect within the padded signal; past the real samples
                // it is the zero tail.
                x.get(reflect_index(start + k as isize, n))
                    .copied()
                    .unwrap_or(0.0)
            };
            st.buf[k] = Complex32::new(s * self.window[k], 0.0);
        }
        self.fft.process_with_scratch(&mut st.buf, &mut st.scratch);
        let n_bins = st.power.len();
        for (p, c) in st.power.iter_mut().zip(&st.buf[..n_bins]) {
            *p = c.norm_sqr();
        }
        for (m, (first, w)) in self.bank.bands.iter().enumerate() {
            let s: f32 = w
                .iter()
                .zip(&st.power[*first..*first + w.len()])
                .map(|(a, b)| a * b)
                .sum();
            put(m, s.max(1e-10).log10());
        }
    }
}

/// Frames per parallel task.
const FRAME_BLOCK: usize = 256;

/// One task's FFT buffers.
struct FrameScratch {
    buf: Vec<Complex32>,
    scratch: Vec<Complex32>,
    power: Vec<f32>,
}

impl FrameScratch {
    fn new(ex: &MelExtractor) -> Self {
        Self {
            buf: vec![Complex32::new(0.0, 0.0); N_FFT],
            scratch: vec![Complex32::new(0.0, 0.0); ex.fft.get_inplace_scratch_len()],
            power: vec![0f32; N_FFT / 2 + 1],
        }
    }
}

/// A recording's log-mel features, computed window by window when the
/// decoder asks for them: only the file's maximum is kept (it sets the
/// floor, as the reference's whole-file features do), never the features
/// themselves. Holding them all cost 1.92 MB a minute of audio, 460 MB
/// for four hours, beside the audio's own 3.84. Every frame is computed by
/// the same function as [`MelExtractor::compute`]'s, so a window equals
/// the same frames of the whole file's features bit for bit; the price is
/// one more FFT pass over the file (for the maximum) and frames that two
/// windows share computed twice.
pub struct MelFrames<'a> {
    ex: &'a MelExtractor,
    x: &'a [f32],
    /// Samples with the tail padding.
    n: usize,
    pub n_mels: usize,
    pub n_frames: usize,
    floor: f32,
}

impl MelFrames<'_> {
    /// As [`LogMel::content_frames`].
    pub fn content_frames(&self) -> usize {
        self.n_frames.saturating_sub(1)
    }

    /// As [`LogMel::window_into`]: frames `[start, start+len)` into a
    /// `[n_mels, width]` window, zero-padded on the right.
    pub fn window_into(&self, start: usize, len: usize, out: &mut [f32]) {
        let (width, len) = clear_window(out, self.n_mels, self.n_frames, start, len);
        if len > 0 {
            self.fill(start, len, out, width);
        }
    }

    /// Writes frames `[start, start+len)` to columns `[0, len)` of `out`'s
    /// rows of `width` (one row per band), in parallel blocks of frames.
    fn fill(&self, start: usize, len: usize, out: &mut [f32], width: usize) {
        // Block `c` owns columns `[c·FRAME_BLOCK, (c+1)·FRAME_BLOCK)` of
        // every band's row.
        let mut blocks: Vec<Vec<&mut [f32]>> = (0..len.div_ceil(FRAME_BLOCK))
            .map(|_| Vec::with_capacity(self.n_mels))
            .collect();
        for row in out.chunks_mut(width.max(1)).take(self.n_mels) {
            for (block, part) in blocks.iter_mut().zip(row[..len].chunks_mut(FRAME_BLOCK)) {
                block.push(part);
            }
        }
        let floor = self.floor;
        blocks
            .into_par_iter()
            .enumerate()
            .for_each(|(ci, mut bands)| {
                let mut st = FrameScratch::new(self.ex);
                let cols = bands.first().map_or(0, |b| b.len());
                // `fi` is a column of every band's row, not an index into
                // `bands`.
                #[allow(clippy::needless_range_loop)]
                for fi in 0..cols {
                    let f = start + ci * FRAME_BLOCK + fi;
                    self.ex.frame(self.x, self.n, f, &mut st, |m, v| {
                        bands[m][fi] = (v.max(floor) + 4.0) / 4.0;
                    });
                }
            });
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

    /// Seeded noise over a sine: `len` samples.
    fn noise(len: usize) -> Vec<f32> {
        let mut seed = 7u32;
        (0..len)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5 + (i as f32 * 0.05).sin() * 0.3
            })
            .collect()
    }

    #[test]
    fn windows_computed_on_demand_match_the_whole_features_bit_for_bit() {
        let e = MelExtractor::new(80);
        // Loud in the middle only, so the floor is set far from most
        // windows: a window that took its own maximum would differ.
        let mut x = noise(16_000 * 7 + 33);
        for (i, v) in x.iter_mut().enumerate() {
            if !(50_000..60_000).contains(&i) {
                *v *= 1e-4;
            }
        }
        let whole = padded_copy_reference(&e, &x, TAIL_PADDING);
        let frames = e.frames(&x);
        assert_eq!(
            (frames.n_mels, frames.n_frames, frames.content_frames()),
            (whole.n_mels, whole.n_frames, whole.content_frames())
        );
        let n = whole.n_frames;
        for (start, len, width) in [
            (0, 3000, 3000),
            (0, 300, 3000),
            (255, 300, 512),
            (256, 256, 256),
            (n - 10, 3000, 3000),
            (n + 5, 100, 100),
            (100, 0, 50),
            (0, n, n),
        ] {
            let mut got = vec![1.0; 80 * width];
            let mut want = vec![2.0; 80 * width];
            frames.window_into(start, len, &mut got);
            whole.window_into(start, len, &mut want);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "window at {start}, {len} frames, {width} wide"
            );
        }
    }

    #[test]
    fn read_in_place_tail_matches_an_appended_one_bit_for_bit() {
        let e = MelExtractor::new(80);
        let noise = noise(16_000 * 3 + 77);
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
