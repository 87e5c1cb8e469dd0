//! The native Silero VAD against faster-whisper's (onnxruntime) on the same
//! model file and the same samples (`scripts/lib/vad_ref.py`):
//!
//! - speech probabilities: max |ours − onnxruntime| < 1e-4 over every window
//!   of every clip;
//! - the post-processing port: fed onnxruntime's probabilities, our
//!   `speech_timestamps_from_probs` returns faster-whisper's spans exactly;
//! - end to end: our spans against faster-whisper's `get_speech_timestamps`,
//!   every boundary within 32 ms (one window) for ≥ 95% of boundaries, for
//!   four option sets (faster-whisper's sequential defaults, its batched
//!   pipeline's, upstream Silero's, and a 5 s maximum that forces splits).
//!
//! Clips: `testing::vad_clips` (the fixture clips, `ten-minutes.wav`,
//! silence, 8 kHz telephone speech, long silences, white noise, speech in
//! noise, tones). Decoding happens once, here; Python gets the decoded f32.
//!
//! Model: `<models dir>/silero-vad-v6/silero_vad_v6.onnx` (scripts/fetch-models),
//! else the copy inside the venv's faster-whisper (same sha256, checked).
//! Python: `$EARSHOT_PYTHON`, else `<repo>/.venv/bin/python`, else `python3`;
//! it needs faster-whisper and onnxruntime (scripts/requirements-test.txt). A
//! missing package fails the test: it is never skipped silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use earshot_inference::testing::{fixtures_dir, python, repo_dir, vad_clips};
use earshot_inference::vad::{speech_timestamps_from_probs, SileroVad, SpeechSpan, VadOptions};

const MAX_PROB_DIFF: f32 = 1e-4;
/// One window: 32 ms.
const TOLERANCE: usize = 512;
const MIN_AGREEMENT: f64 = 0.95;

const OPTION_SETS: &[(&str, &str)] = &[
    ("default", "{}"),
    (
        "batched",
        r#"{"max_speech_duration_s": 30, "min_silence_duration_ms": 160}"#,
    ),
    (
        "silero",
        r#"{"min_speech_duration_ms": 250, "min_silence_duration_ms": 100, "speech_pad_ms": 30}"#,
    ),
    (
        "split5",
        r#"{"max_speech_duration_s": 5, "min_silence_duration_ms": 500, "speech_pad_ms": 100, "threshold": 0.45}"#,
    ),
];

fn run_python(args: &[&std::ffi::OsStr]) -> String {
    let py = python();
    let o = Command::new(&py).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}): run scripts/test (it sets up <repo>/.venv), or point \
             EARSHOT_PYTHON at a python with faster-whisper and onnxruntime",
            py.display()
        )
    });
    assert!(
        o.status.success(),
        "{} {:?} failed ({}): {}\n(needs faster-whisper and onnxruntime: run scripts/test, \
         or `source scripts/lib/venv.sh && ensure_venv`)",
        py.display(),
        args,
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

/// The installed model, else faster-whisper's own copy (same bytes).
fn model_path() -> PathBuf {
    if let Ok(p) = earshot_models::resolve_silero_vad() {
        return p;
    }
    let out = run_python(&[
        "-c".as_ref(),
        "import os, faster_whisper.utils as u; \
         print(os.path.join(u.get_assets_path(), 'silero_vad_v6.onnx'))"
            .as_ref(),
    ]);
    let p = PathBuf::from(out.trim());
    let sha = earshot_models::sha256_file(&p).expect("hash the model");
    assert_eq!(
        sha,
        earshot_models::SILERO_VAD_SHA256,
        "{} is not the pinned silero_vad_v6.onnx",
        p.display()
    );
    eprintln!(
        "note: silero-vad-v6 is not in the models dir; using {}",
        p.display()
    );
    p
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn spans(v: &serde_json::Value) -> Vec<SpeechSpan> {
    v.as_array()
        .expect("span list")
        .iter()
        .map(|p| SpeechSpan {
            start: p[0].as_u64().unwrap() as usize,
            end: p[1].as_u64().unwrap() as usize,
        })
        .collect()
}

/// (agreeing boundaries, all boundaries): a start (end) of either side
/// agrees when the other side has a start (end) within `TOLERANCE`; both
/// sides' boundaries count, so missing and extra spans count against.
fn agreement(ours: &[SpeechSpan], theirs: &[SpeechSpan]) -> (usize, usize) {
    let near = |x: usize, other: &[SpeechSpan], end: bool| {
        other
            .iter()
            .any(|o| x.abs_diff(if end { o.end } else { o.start }) <= TOLERANCE)
    };
    let mut agreed = 0;
    for (a, b) in [(ours, theirs), (theirs, ours)] {
        for s in a {
            agreed += usize::from(near(s.start, b, false));
            agreed += usize::from(near(s.end, b, true));
        }
    }
    (agreed, 2 * (ours.len() + theirs.len()))
}

#[test]
fn silero_vad_matches_faster_whisper() {
    let model = model_path();
    let vad = SileroVad::load(&model).expect("load silero_vad_v6.onnx");
    let clips = vad_clips(fixtures_dir());
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for (name, samples) in &clips {
        let p = dir.path().join(format!("{name}.f32"));
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&p, bytes).unwrap();
        inputs.push(p);
    }
    let options_json = format!(
        "[{}]",
        OPTION_SETS
            .iter()
            .map(|(n, p)| format!(r#"{{"name": "{n}", "params": {p}}}"#))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = dir.path().join("ref.json");
    let script = repo_dir().join("scripts").join("lib").join("vad_ref.py");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        script.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--options".as_ref(),
        options_json.as_ref(),
        "--probs-dir".as_ref(),
        dir.path().as_os_str(),
    ];
    args.extend(inputs.iter().map(|p| p.as_os_str()));
    run_python(&args);
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        reference["model_sha256"].as_str(),
        Some(earshot_models::SILERO_VAD_SHA256)
    );
    let ref_clips = reference["clips"].as_array().unwrap();
    assert_eq!(ref_clips.len(), clips.len());

    let opts: Vec<(&str, VadOptions)> = OPTION_SETS
        .iter()
        .map(|(n, p)| (*n, serde_json::from_str(p).unwrap()))
        .collect();
    let mut max_diff = 0f32;
    let mut windows = 0usize;
    let mut totals = vec![(0usize, 0usize); opts.len()];
    let mut identical = vec![0usize; opts.len()];
    let mut mismatched_port = Vec::new();
    for ((name, samples), r) in clips.iter().zip(ref_clips) {
        assert_eq!(r["name"].as_str(), Some(name.as_str()));
        assert_eq!(r["n_samples"].as_u64(), Some(samples.len() as u64));
        let want = read_f32(Path::new(r["probs"].as_str().unwrap()));
        let ours = vad.speech_probs(samples);
        assert_eq!(ours.len(), want.len(), "{name}: window count");
        let diff = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        max_diff = max_diff.max(diff);
        windows += ours.len();
        let mut line = format!("{name:<22} {:>6} windows  max|Δp| {diff:.2e}", ours.len());
        for (k, (oname, o)) in opts.iter().enumerate() {
            let theirs = spans(&r["timestamps"][*oname]);
            // The post-processing alone, on identical probabilities: exact.
            let port = speech_timestamps_from_probs(&want, samples.len(), o).unwrap();
            if port != theirs {
                mismatched_port.push(format!("{name}/{oname}: {port:?} vs {theirs:?}"));
            }
            let mine = speech_timestamps_from_probs(&ours, samples.len(), o).unwrap();
            let (a, t) = agreement(&mine, &theirs);
            identical[k] += usize::from(mine == theirs);
            totals[k].0 += a;
            totals[k].1 += t;
            line += &format!("  {oname} {}/{} spans {a}/{t}", mine.len(), theirs.len());
        }
        println!("{line}");
    }
    println!(
        "speech probabilities: max |ours - onnxruntime| = {max_diff:.3e} over {windows} windows, {} clips",
        clips.len()
    );
    for (((oname, _), (a, t)), same) in opts.iter().zip(&totals).zip(&identical) {
        println!(
            "boundaries within 32 ms, {oname}: {a}/{t} = {:.2}% (identical span lists on {same}/{} clips)",
            100.0 * *a as f64 / (*t).max(1) as f64,
            clips.len()
        );
    }
    assert!(
        mismatched_port.is_empty(),
        "post-processing differs from faster-whisper on the same probabilities:\n{}",
        mismatched_port.join("\n")
    );
    assert!(
        max_diff < MAX_PROB_DIFF,
        "max probability difference {max_diff} ≥ {MAX_PROB_DIFF}"
    );
    for ((oname, _), (a, t)) in opts.iter().zip(&totals) {
        assert!(*t > 0, "{oname}: no boundaries at all");
        let frac = *a as f64 / *t as f64;
        assert!(
            frac >= MIN_AGREEMENT,
            "{oname}: only {:.2}% of boundaries within 32 ms",
            100.0 * frac
        );
    }
}
