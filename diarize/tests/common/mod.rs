//! What the reference tests share: where the fetched files are, a clear
//! failure when they are not, and a 16-bit PCM WAV reader (the crate has
//! no audio decoder of its own; the sample is plain PCM).

use std::path::{Path, PathBuf};

/// `$EARSHOT_MODELS_DIR`, else `~/.cache/earshot/models` (where
/// `scripts/fetch-models` installs).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EARSHOT_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set and EARSHOT_MODELS_DIR neither");
    Path::new(&home).join(".cache/earshot/models")
}

/// Fails (never skips) when a fetched file is missing, saying how to get it.
pub fn require(path: &Path) {
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models --only diarize --only pyannote-sample \
         (or point EARSHOT_MODELS_DIR at a models directory that has it)",
        path.display()
    );
}

/// A 16-bit PCM mono WAV: (sample rate, samples in [-1, 1] as sample /
/// 32768, which is how soundfile reads it for the Python side).
pub fn read_wav_pcm16(path: &Path) -> (u32, Vec<f32>) {
    let bytes = std::fs::read(path).expect("read WAV");
    assert!(
        bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "{}: not a RIFF/WAVE file",
        path.display()
    );
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut pos = 12;
    let mut rate = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_at(pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let (format, channels, bits) = (u16_at(body), u16_at(body + 2), u16_at(body + 14));
            assert!(
                format == 1 && channels == 1 && bits == 16,
                "{}: want 16-bit mono PCM, got format {format}, {channels} ch, {bits} bit",
                path.display()
            );
            rate = Some(u32_at(body + 4));
        } else if id == b"data" {
            let rate = rate.unwrap_or_else(|| panic!("{}: data before fmt", path.display()));
            let end = (body + size).min(bytes.len());
            let samples = bytes[body..end]
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect();
            return (rate, samples);
        }
        pos = body + size + (size & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// The reference JSON `json` (under `tests/data/`), or, with
/// `EARSHOT_DIARIZE_PY` set to a Python that has the reference's packages,
/// the same JSON regenerated live by `scripts/lib/<script> --models
/// <models> --out <file>`.
#[allow(dead_code)] // not every test binary has a live reference
pub fn reference_json(models: &Path, script: &str, json: &str) -> String {
    match std::env::var("EARSHOT_DIARIZE_PY") {
        Ok(py) if !py.is_empty() => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let dir = tempfile::tempdir().expect("tempdir");
            let out = dir.path().join(json);
            let status = std::process::Command::new(&py)
                .arg(root.join("scripts/lib").join(script))
                .arg("--models")
                .arg(models)
                .arg("--out")
                .arg(&out)
                .status()
                .expect("run the Python reference");
            assert!(status.success(), "{script} failed: {status}");
            std::fs::read_to_string(&out).expect("read live reference")
        }
        _ => std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(json),
        )
        .unwrap_or_else(|e| panic!("read tests/data/{json}: {e}")),
    }
}

/// Cosine similarity, accumulated in f64.
#[allow(dead_code)] // not every test binary compares embeddings
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb).max(1e-20)) as f32
}
