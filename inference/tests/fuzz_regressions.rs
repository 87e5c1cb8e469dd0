//! Replays the inputs the `audio` and `gguf` fuzz targets once crashed on
//! (`fuzz/regressions/<target>/`, see `scripts/fuzz`) through the same
//! calls the targets make, so the stable `cargo test` catches a regression
//! without nightly or cargo-fuzz. Each input must end in a typed error or a
//! sane result; a panic fails the test.

use std::path::{Path, PathBuf};

use candle_core::Device;
use earshot_inference::audio::{self, DecodeLimits, SAMPLE_RATE};
use earshot_inference::llm::Llm;
use earshot_inference::mel::MelExtractor;

/// The regression inputs of one fuzz target.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no regression inputs in {}", dir.display());
    out
}

/// `fuzz/fuzz_targets/audio.rs`, HINTS and MAX_SECONDS included.
const HINTS: &[Option<&str>] = &[
    None,
    Some("wav"),
    Some("flac"),
    Some("mp3"),
    Some("ogg"),
    Some("opus"),
    Some("webm"),
    Some("mp4"),
    Some("m4a"),
    Some("mkv"),
    Some("aac"),
    Some("txt"),
];
const MAX_SECONDS: f64 = 30.0;

#[test]
fn audio_regressions_decode_or_fail_cleanly() {
    let mel = MelExtractor::new(80);
    for (path, data) in inputs("audio") {
        let Some((&sel, bytes)) = data.split_first() else {
            continue;
        };
        let hint = HINTS[sel as usize % HINTS.len()];
        let limits = DecodeLimits {
            max_duration_s: Some(MAX_SECONDS),
        };
        // Files named `ok-*` decode (bounded, finite features); every other
        // kept input is a hostile one that must be refused with a typed
        // error. Refusal matters: the allocations these inputs once asked
        // for (terabytes) can succeed lazily on a big test machine, so
        // "no crash" alone would not notice the guard going away.
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match audio::load_bytes(bytes.to_vec(), hint, limits) {
            Ok(samples) if name.starts_with("ok-") => {
                assert!(
                    samples.len() as f64 <= (MAX_SECONDS + 1.0) * SAMPLE_RATE as f64,
                    "{}: {} samples",
                    path.display(),
                    samples.len()
                );
                let m = mel.compute(&samples);
                assert!(m.data.iter().all(|v| v.is_finite()), "{}", path.display());
            }
            Ok(samples) => panic!(
                "{}: decoded {} samples; it should be refused",
                path.display(),
                samples.len()
            ),
            Err(e) => {
                assert!(!name.starts_with("ok-"), "{}: {e}", path.display());
                eprintln!("{}: {e}", path.display());
            }
        }
    }
}

#[test]
fn gguf_regressions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in inputs("gguf") {
        let file = dir.path().join("model.gguf");
        std::fs::write(&file, &data).unwrap();
        let err = Llm::load(&file, None, &Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{} loaded", path.display()));
        eprintln!("{}: {err}", path.display());
    }
}
