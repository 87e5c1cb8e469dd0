//! Log-mel features against an independent numpy implementation of
//! Whisper's `log_mel_spectrogram` (`scripts/ref_mel.py`, float64).
//!
//! `MelExtractor::compute` appends `TAIL_PADDING` (160) zero samples before
//! its STFT; `ref_mel.py` adds nothing beyond the STFT's centre padding. So
//! the reference is given the already padded samples, and both sides see the
//! identical signal: frame counts must then agree exactly
//! (`(len + 160) / 160`), and values within 2e-3 (the f32 FFT vs float64).
//!
//! Python: `$EARSHOT_PYTHON`, else `<repo>/.venv/bin/python`, else `python3`.
//! numpy is required; a missing numpy fails the test (never a silent skip).

use std::path::{Path, PathBuf};
use std::process::Command;

use earshot_inference::audio::{self, DecodeLimits, SAMPLE_RATE};
use earshot_inference::mel::{MelExtractor, HOP_LENGTH, TAIL_PADDING};
use earshot_inference::testing::{fixtures_dir, python, repo_dir};

/// Largest allowed |ours - reference| of any feature value.
const MAX_ABS: f32 = 2e-3;
/// Largest allowed mean |ours - reference|.
const MEAN_ABS: f64 = 5e-5;

/// Checked once per test: the interpreter runs and imports numpy.
fn require_numpy(py: &Path) {
    let out = Command::new(py)
        .args(["-c", "import numpy; print(numpy.__version__)"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{} cannot import numpy ({}): run scripts/test (it sets up <repo>/.venv with \
             scripts/lib/venv.sh), or `source scripts/lib/venv.sh && ensure_venv`, \
             or point EARSHOT_PYTHON at a python with numpy",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => panic!(
            "cannot run {} ({e}): run scripts/test (it sets up <repo>/.venv), \
             or point EARSHOT_PYTHON at a python with numpy",
            py.display()
        ),
    }
}

/// Runs `ref_mel.py` on exactly `samples`; returns (`n_frames`, `[n_mels, n_frames]`).
fn reference(samples: &[f32], n_mels: usize) -> (usize, Vec<f32>) {
    let py = python();
    require_numpy(&py);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.f32");
    let output = dir.path().join("out.f32");
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let script = repo_dir().join("scripts").join("ref_mel.py");
    let o = Command::new(&py)
        .arg(&script)
        .arg(&input)
        .arg(n_mels.to_string())
        .arg(&output)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", py.display(), script.display()));
    assert!(
        o.status.success(),
        "ref_mel.py failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let raw = std::fs::read(&output).unwrap();
    assert_eq!(raw.len() % 4, 0);
    let data: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(
        data.len() % n_mels,
        0,
        "reference output is not [{n_mels}, n]"
    );
    (data.len() / n_mels, data)
}

/// Compares ours with the reference for `samples`; returns (max, mean) abs diff.
fn compare(name: &str, samples: &[f32], n_mels: usize) -> (f32, f64) {
    let ours = MelExtractor::new(n_mels).compute(samples);
    let mut padded = samples.to_vec();
    padded.resize(samples.len() + TAIL_PADDING, 0.0);
    let (ref_frames, want) = reference(&padded, n_mels);

    assert_eq!(ours.n_mels, n_mels);
    assert_eq!(
        ours.n_frames, ref_frames,
        "{name}/{n_mels}: frame count differs from the reference"
    );
    assert_eq!(ours.n_frames, padded.len() / HOP_LENGTH, "{name}/{n_mels}");
    assert_eq!(ours.data.len(), want.len());

    let mut max = 0f32;
    let mut at = 0;
    let mut sum = 0f64;
    for (i, (a, b)) in ours.data.iter().zip(&want).enumerate() {
        assert!(a.is_finite(), "{name}/{n_mels}: non-finite value at {i}");
        let d = (a - b).abs();
        sum += d as f64;
        if d > max {
            max = d;
            at = i;
        }
    }
    let mean = sum / want.len() as f64;
    let (band, frame) = (at / ours.n_frames, at % ours.n_frames);
    println!(
        "mel {name:<14} n_mels={n_mels:<3} frames={:<5} max_abs={max:.3e} (band {band}, frame {frame}) \
         mean_abs={mean:.3e}",
        ours.n_frames
    );
    assert!(
        max <= MAX_ABS,
        "{name}/{n_mels}: max abs diff {max} at band {band} frame {frame} \
         (ours {}, reference {})",
        ours.data[at],
        want[at]
    );
    assert!(mean <= MEAN_ABS, "{name}/{n_mels}: mean abs diff {mean}");
    (max, mean)
}

/// Deterministic xorshift noise in [-0.5, 0.5).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A 50 Hz → 7.5 kHz exponential chirp with a slow amplitude swell, plus
/// white noise; an odd length that is not a multiple of the hop.
fn chirp_plus_noise() -> Vec<f32> {
    let sr = SAMPLE_RATE as f64;
    let n = (7.3 * sr) as usize + 37;
    let (f0, f1) = (50.0f64, 7500.0f64);
    let dur = n as f64 / sr;
    let k = (f1 / f0).ln() / dur;
    let nz = noise(n, 11);
    (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let phase = 2.0 * std::f64::consts::PI * f0 * ((k * t).exp() - 1.0) / k;
            let env = 0.2 + 0.4 * (0.5 - 0.5 * (2.0 * std::f64::consts::PI * t / dur).cos());
            (env * phase.sin()) as f32 + 0.02 * nz[i]
        })
        .collect()
}

#[test]
fn chirp_and_noise_matches_reference() {
    let x = chirp_plus_noise();
    assert_eq!(x.len() % 2, 1);
    assert_ne!(x.len() % HOP_LENGTH, 0);
    for n_mels in [80, 128] {
        compare("chirp+noise", &x, n_mels);
    }
}

#[test]
fn very_short_signal_matches_reference() {
    // 0.05 s: 800 samples, 6 frames after the tail padding.
    let nz = noise(800, 3);
    let x: Vec<f32> = (0..800)
        .map(|i| (i as f32 * 0.21).sin() * 0.3 + 0.05 * nz[i])
        .collect();
    for n_mels in [80, 128] {
        compare("short-0.05s", &x, n_mels);
    }
}

#[test]
fn speech_fixture_matches_reference() {
    let dir = fixtures_dir();
    // sample.wav is 16 kHz already; 03-launch.wav (48 kHz, 24-bit) also goes
    // through the resampler, whose output is what the model sees.
    let clips: Vec<PathBuf> = ["sample.wav", "03-launch.wav"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    for clip in clips {
        let samples = audio::load_file(&clip, DecodeLimits::default()).unwrap();
        assert!(samples.len() > SAMPLE_RATE as usize, "{}", clip.display());
        let name = clip.file_name().unwrap().to_string_lossy().to_string();
        for n_mels in [80, 128] {
            compare(&name, &samples, n_mels);
        }
    }
}
