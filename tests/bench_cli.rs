//! `earshot bench` through the binary: `--quick --format json --output` on
//! the real tiny.en and SmolLM2-135M-Instruct models and the bundled
//! fixtures. The profile must parse as the planner's `Profile`, validate
//! against the committed `planner/schema/profile.schema.json` (checked by
//! the `jsonschema` Python package, not by us), match the `--output` file,
//! and make sense (positive throughputs, best = max of the points, peak RSS
//! above the models' size). Bad options fail before any model loads.
//!
//! Needs the models (`scripts/fetch-models`; a missing model fails the
//! test), the fixtures (`scripts/make-fixtures`, run here when missing) and
//! the test virtualenv (`scripts/test`, or `$EARSHOT_PYTHON`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use earshot_inference::testing::{fixtures_dir, real_llm_path};
use earshot_planner::profile::Profile;
use earshot_queue_adapter::testing::python;

const WHISPER: &str = "tiny.en";
const LLM: &str = "smollm2-135m-instruct";

/// Bytes of the installed models' weight files: the floor for peak RSS.
fn model_bytes() -> u64 {
    let dir = earshot_models::models_dir().join(format!("whisper-{WHISPER}"));
    let whisper = ["model.bin", "model.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the {WHISPER} model is not installed in {}: run scripts/fetch-models",
                dir.display()
            )
        });
    let llm = real_llm_path(LLM);
    let size = |p: &Path| std::fs::metadata(p).expect("model file").len();
    size(&whisper) + size(&llm)
}

/// `earshot bench ARGS...` with the test models, the fixtures, the hub
/// offline and no stray configuration from the environment.
fn bench<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_earshot"));
    cmd.arg("bench")
        .args(["--whisper-model", WHISPER, "--llm-model", LLM])
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("EARSHOT_FIXTURES_DIR", fixtures_dir());
    for var in [
        "EARSHOT_LOG",
        "EARSHOT_THREADS",
        "EARSHOT_DEVICE",
        "EARSHOT_WHISPER_MODEL",
        "EARSHOT_LLM_MODEL",
        "EARSHOT_NO_SUMMARIZER",
        "EARSHOT_MAX_BATCH",
        "EARSHOT_LLM_MAX_BATCH",
        "EARSHOT_LLM_CONTEXT",
        "EARSHOT_MAX_TOKENS",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run earshot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "earshot panicked:\n{stderr}");
    out
}

/// Validates `doc` against the committed profile schema with the
/// `jsonschema` package (Draft 2020-12, format checks on).
fn validate_with_schema(doc: &str) {
    let schema =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("planner/schema/profile.schema.json");
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(s)\n\
        v=jsonschema.Draft202012Validator(s, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)\n\
        bad=[(list(e.absolute_path),e.message) for e in v.iter_errors(json.load(sys.stdin))]\n\
        print(json.dumps(bad))\n\
        sys.exit(1 if bad else 0)";
    let mut child = Command::new(python())
        .args(["-c", script])
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs (scripts/test builds .venv, or set EARSHOT_PYTHON)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .expect("write the profile");
    let out = child.wait_with_output().expect("python finishes");
    assert!(
        out.status.success(),
        "the profile does not validate against {}: {}{}",
        schema.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn quick_profile_is_valid_and_sane() {
    let floor = model_bytes();
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("profile.json");
    let t = Instant::now();
    // --quick, made smaller still by the per-figure flags (the quick plan's
    // own sizes are a unit test in src/bench.rs): batch sizes 1 and 2,
    // 31 s recordings (two windows, so window-to-window decoding is in),
    // 2 clips.
    let out = bench([
        OsStr::new("--quick"),
        OsStr::new("--batches"),
        OsStr::new("1,2"),
        OsStr::new("--long-seconds"),
        OsStr::new("31"),
        OsStr::new("--short-clips"),
        OsStr::new("2"),
        OsStr::new("--format"),
        OsStr::new("json"),
        OsStr::new("--output"),
        file.as_os_str(),
    ]);
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "bench failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("earshot bench --quick took {secs:.1} s");

    validate_with_schema(&stdout);
    let p: Profile = serde_json::from_str(&stdout).expect("stdout is a Profile");
    let written = std::fs::read_to_string(&file).expect("--output written");
    assert_eq!(written, stdout, "--output and stdout differ");

    assert_eq!(p.version, earshot_planner::profile::PROFILE_VERSION);
    assert_eq!(p.earshot_version, env!("CARGO_PKG_VERSION"));
    assert!(p.quick);
    assert_eq!(p.models.whisper, WHISPER);
    assert_eq!(p.models.llm, LLM);
    assert_eq!(p.models.compute_type, "float32", "CPU runs float32");
    assert_eq!(p.machine.device, "cpu");
    assert!(p.machine.cpu_cores >= 1);
    assert!(!p.machine.cpu_model.is_empty());
    assert_eq!(p.machine.gpu_name, None);
    assert_eq!(p.memory.device_bytes, None, "no device memory on CPU");
    for k in ["whisper", "llm"] {
        let s = p.load_seconds.get(k).copied().unwrap_or(-1.0);
        assert!(s > 0.0, "load_seconds.{k} = {s}");
    }

    // The asked-for batch sizes, on long audio and on 5 s clips.
    let batches = |v: &[earshot_planner::profile::SpeechPoint]| -> Vec<usize> {
        v.iter().map(|x| x.batch).collect()
    };
    assert_eq!(batches(&p.speech.long), [1, 2]);
    assert_eq!(batches(&p.speech.short), [1, 2]);
    let mut max = 0.0f64;
    for x in p.speech.long.iter().chain(&p.speech.short) {
        assert!(x.audio_seconds > 0.0 && x.wall_seconds > 0.0, "{x:?}");
        let rate = x.audio_seconds / x.wall_seconds;
        assert!(
            (x.audio_seconds_per_second - rate).abs() <= 1e-6 * rate,
            "{x:?}"
        );
        max = max.max(x.audio_seconds_per_second);
    }
    for x in &p.speech.short {
        // At least one batch of 5 s clips.
        let clips = x.audio_seconds / 5.0;
        assert!(
            (clips - clips.round()).abs() < 1e-9 && clips >= x.batch as f64,
            "{x:?}"
        );
    }
    assert_eq!(p.speech.best_audio_seconds_per_second, max);
    // Long recordings: B of them, each the same length, longer than a clip.
    let per_recording = p.speech.long[0].audio_seconds;
    assert!(per_recording > 5.0);
    for x in &p.speech.long {
        assert!((x.audio_seconds - per_recording * x.batch as f64).abs() < 1e-6);
    }

    let seqs: Vec<usize> = p.llm.decode.iter().map(|d| d.sequences).collect();
    assert_eq!(seqs, [1, 8]);
    assert!(p.llm.decode.iter().all(|d| d.tokens_per_second > 0.0));
    let best = p
        .llm
        .decode
        .iter()
        .map(|d| d.tokens_per_second)
        .fold(0.0, f64::max);
    assert_eq!(p.llm.best_decode_tokens_per_second, best);
    assert!(p.llm.prefill_tokens_per_second > 0.0);

    assert!(
        p.memory.peak_rss_bytes > floor,
        "peak RSS {} is below the models' size {floor}",
        p.memory.peak_rss_bytes
    );
}

/// Asserts a failed run whose `error:` line mentions `needle`.
fn assert_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure:\n{err}");
    let hit = err
        .lines()
        .filter(|l| l.starts_with("error:"))
        .any(|l| l.to_lowercase().contains(&needle.to_lowercase()));
    assert!(hit, "no error line mentioning {needle:?}:\n{err}");
}

#[test]
fn bad_options_fail_before_loading_models() {
    let t = Instant::now();
    assert_error(&bench(["--format", "xml"]), "unknown format");
    assert_error(&bench(["--batches", "1,0"]), "--batches");
    assert_error(&bench(["--batches", "1,x"]), "invalid value");
    assert_error(&bench(["--long-seconds=-3"]), "--long-seconds");
    assert_error(&bench(["--long-seconds", "NaN"]), "--long-seconds");
    assert_error(&bench(["--decode-tokens", "1"]), "--decode-tokens");
    assert_error(&bench(["--no-summarizer"]), "--no-summarizer");
    assert_error(&bench(["/nonexistent/audio.wav"]), "/nonexistent/audio.wav");
    let tiny = tempfile::tempdir().expect("tempdir");
    let not_audio = tiny.path().join("notes.wav");
    std::fs::write(&not_audio, b"not audio at all").expect("write");
    assert_error(&bench([&not_audio]), "notes.wav");
    // Each of these stops before loading a model (seconds, not minutes).
    assert!(
        t.elapsed().as_secs() < 60,
        "option errors took {:?}",
        t.elapsed()
    );
}
