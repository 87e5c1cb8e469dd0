//! End-to-end tests of `--vad` and `--pipeline batched` through the binary,
//! with the real tiny.en model and the real Silero VAD (both installed by
//! `scripts/fetch-models`; a missing file fails the test): speech moved
//! into long silence keeps its place on the timeline, silence and noise
//! give empty transcripts, the batched pipeline transcribes several files
//! in one batch, and bad settings are clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{wer, write_wav};
use earshot_inference::audio::{load_file, DecodeLimits};
use earshot_inference::testing::{fixture_manifest, fixtures_dir};
use serde_json::Value;

fn require_models() {
    let dir = earshot_models::models_dir();
    for f in [
        "whisper-tiny.en/model.bin",
        "silero-vad-v6/silero_vad_v6.onnx",
    ] {
        assert!(
            dir.join(f).is_file(),
            "{f} is not installed in {}: run scripts/fetch-models",
            dir.display()
        );
    }
}

fn transcribe(args: &[&str], files: &[&Path]) -> Output {
    require_models();
    let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["transcribe", "--model", "tiny.en", "--no-progress"])
        .args(args)
        .args(files)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("EARSHOT_LOG")
        .env_remove("EARSHOT_PIPELINE")
        .env_remove("EARSHOT_VAD_MODEL")
        .output()
        .expect("run earshot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "earshot panicked:\n{err}");
    out
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "earshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// `(path, samples at 16 kHz, reference text)` of the first fixtures.
fn clips(n: usize) -> Vec<(PathBuf, Vec<f32>, String)> {
    fixture_manifest()
        .into_iter()
        .take(n)
        .map(|c| {
            let path = fixtures_dir().join(&c.file);
            let samples = load_file(&path, DecodeLimits::default()).expect("fixture decodes");
            (path, samples, c.text)
        })
        .collect()
}

fn segments(v: &Value) -> Vec<(f64, f64, String)> {
    v["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            (
                s["start"].as_f64().unwrap(),
                s["end"].as_f64().unwrap(),
                s["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn vad_transcribes_speech_inside_long_silence_on_the_original_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let (_, speech, text) = clips(1).remove(0);
    let lead = 20.0;
    let mut samples = vec![0f32; (lead * 16_000.0) as usize];
    samples.extend_from_slice(&speech);
    samples.extend(std::iter::repeat_n(0f32, 10 * 16_000));
    let path = dir.path().join("padded.wav");
    write_wav(&path, &samples);
    let total = samples.len() as f64 / 16_000.0;
    let speech_end = lead + speech.len() as f64 / 16_000.0;

    for args in [
        &["--vad", "--format", "verbose_json"][..],
        &["--pipeline", "batched", "--format", "verbose_json"][..],
        &[
            "--pipeline",
            "batched",
            "--word-timestamps",
            "--format",
            "verbose_json",
        ][..],
    ] {
        let v = json_of(&transcribe(args, &[&path]));
        let got = v["text"].as_str().unwrap();
        // tiny.en is fragile on espeak-ng speech: where the windows fall
        // moves its errors (0.15–0.24 on this clip; on the same file,
        // `--vad` and faster-whisper's vad_filter agree word for word). The
        // bar is the other tests' bar for tiny.en.
        let w = wer(&text, got);
        assert!(w < 0.3, "{args:?}: WER {w:.3}: {got:?}");
        assert!((v["duration"].as_f64().unwrap() - total).abs() < 0.01);
        let segs = segments(&v);
        assert!(!segs.is_empty(), "{args:?}");
        // Silero pads speech by up to 400 ms (30 ms in the batched
        // defaults' 160 ms silence rule); nothing may start in the silence.
        assert!(segs[0].0 >= lead - 0.5, "{args:?}: first segment {segs:?}");
        let last = segs.last().unwrap();
        assert!(
            last.1 <= speech_end + 0.5,
            "{args:?}: last segment {last:?}"
        );
        for w in segs.windows(2) {
            assert!(w[0].0 <= w[1].0, "{args:?}: segments out of order {segs:?}");
        }
        for s in v["segments"].as_array().unwrap() {
            for word in s["words"].as_array().into_iter().flatten() {
                let (a, b) = (
                    word["start"].as_f64().unwrap(),
                    word["end"].as_f64().unwrap(),
                );
                assert!(a >= lead - 0.5 && b <= speech_end + 0.5 && a <= b, "{word}");
            }
        }
    }
}

#[test]
fn silence_and_noise_with_vad_are_empty_transcripts() {
    let dir = tempfile::tempdir().unwrap();
    let silence = dir.path().join("silence.wav");
    write_wav(&silence, &vec![0f32; 20 * 60 * 16_000]);
    // White noise at -20 dBFS from a fixed LCG (no speech in it).
    let mut x: u32 = 12345;
    let noise: Vec<f32> = (0..5 * 60 * 16_000)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
        })
        .collect();
    let noisy = dir.path().join("noise.wav");
    write_wav(&noisy, &noise);
    for pipeline in ["sequential", "batched"] {
        let t = Instant::now();
        let out = transcribe(
            &["--vad", "--pipeline", pipeline, "--format", "json"],
            &[&silence, &noisy],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One JSON document per file, each with no text and no segments.
        let docs: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .expect("JSON documents");
        assert_eq!(docs.len(), 2, "{pipeline}");
        for d in &docs {
            assert_eq!(d["text"], "", "{pipeline}: {d}");
        }
        // A debug build: generous; the release figure is in the README.
        assert!(t.elapsed().as_secs() < 120, "{pipeline}: {:?}", t.elapsed());
    }
}

#[test]
fn batched_pipeline_transcribes_several_files_in_one_batch() {
    let picked = clips(3);
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<&Path> = picked.iter().map(|(p, _, _)| p.as_path()).collect();
    let out = transcribe(
        &[
            "--pipeline",
            "batched",
            "--word-timestamps",
            "--format",
            "verbose_json",
            "--output",
            dir.path().to_str().unwrap(),
        ],
        &files,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = transcribe(
        &[
            "--format",
            "json",
            "--output",
            dir.path().join("plain").to_str().unwrap(),
        ],
        &files,
    );
    assert!(plain.status.success());
    for (path, samples, text) in &picked {
        let stem = path.file_stem().unwrap().to_string_lossy();
        let body = std::fs::read(dir.path().join(format!("{stem}.json"))).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let got = v["text"].as_str().unwrap();
        let w = wer(text, got);
        let body = std::fs::read(dir.path().join("plain").join(format!("{stem}.json"))).unwrap();
        let plain: Value = serde_json::from_slice(&body).unwrap();
        let baseline = wer(text, plain["text"].as_str().unwrap());
        assert!(
            w <= baseline + 0.06,
            "{stem}: WER {w:.3} (sequential {baseline:.3}): {got:?}"
        );
        let duration = samples.len() as f64 / 16_000.0;
        let segs = segments(&v);
        // One window holds the whole clip (< 30 s); with words, its segment
        // is cut at the pauses the VAD found, so there are several.
        assert!(segs.len() > 1, "{stem}: {segs:?}");
        for (a, b, _) in &segs {
            assert!(
                0.0 <= *a && a <= b && *b <= duration + 0.01,
                "{stem}: {segs:?}"
            );
        }
        let joined: String = segs.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(joined.trim(), got, "{stem}: segments are the text");
    }
}

#[test]
fn vad_settings_and_a_missing_model_are_clear_errors() {
    let (path, _, _) = clips(1).remove(0);
    let out = transcribe(&["--vad-parameters", r#"{"threshold": 2}"#], &[&path]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("threshold"), "{err}");
    let out = transcribe(&["--vad-parameters", r#"{"treshold": 0.5}"#], &[&path]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field"), "{err}");
    let out = transcribe(&["--pipeline", "fastest"], &[&path]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sequential or batched"), "{err}");

    // No VAD model: the option fails per file with a message naming the fix.
    require_models();
    let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["transcribe", "--model", "tiny.en", "--no-progress", "--vad"])
        .arg(&path)
        .env("HF_HUB_OFFLINE", "1")
        .env("EARSHOT_VAD_MODEL", "/nonexistent/silero_vad_v6.onnx")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs the Silero VAD model"), "{err}");
    assert!(err.contains("scripts/fetch-models"), "{err}");
}
