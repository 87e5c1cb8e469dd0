//! End-to-end tests of `earshot transcribe` with the real tiny.en model on
//! the speech fixtures: every supported format in one batched call (WER
//! against the reference text, JSON shape and timing), output formats, and
//! the error paths (bad files, bad options), word timestamps in every
//! format that carries them (Amazon Transcribe's JSON checked against its
//! schema and read back), all through the binary.
//!
//! Needs the tiny.en weights (`scripts/fetch-models`; a missing model fails
//! the test) and the fixtures (`scripts/make-fixtures`, run once here when
//! `manifest.tsv` is missing). ten-minutes.wav is not transcribed here.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use earshot_inference::testing::{fixture_manifest as manifest, fixtures_dir as fixtures};
use std::sync::OnceLock;

const MODEL: &str = "tiny.en";

/// Fails (never skips) when the real model is not installed.
fn require_model() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let dir = earshot_models::models_dir().join(format!("whisper-{MODEL}"));
        assert!(
            dir.join("model.bin").is_file() || dir.join("model.safetensors").is_file(),
            "the {MODEL} model is not installed in {}: run scripts/fetch-models",
            dir.display()
        );
    });
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// `earshot transcribe ARGS...` with the model checked, the hub offline
/// (nothing here may download) and the default log settings.
fn earshot<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    require_model();
    let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .arg("transcribe")
        .args(["--model", MODEL])
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("EARSHOT_LOG")
        .env_remove("EARSHOT_WHISPER_MODEL")
        .env_remove("EARSHOT_DEVICE")
        .env_remove("EARSHOT_MAX_AUDIO_SECONDS")
        .output()
        .expect("run earshot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "earshot panicked:\n{stderr}");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts a failed run: non-zero exit and `needle` (case-insensitive) in
/// an `error:` line of stderr.
fn assert_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got {}\n{err}",
        o.status
    );
    let hit = err
        .lines()
        .filter(|l| l.starts_with("error:"))
        .any(|l| l.to_lowercase().contains(&needle.to_lowercase()));
    assert!(hit, "no error line mentioning {needle:?} in stderr:\n{err}");
}

use common::{normalise, wer};

#[test]
fn wer_helper() {
    assert_eq!(
        normalise("It's 10 o'clock, Dr. Smith!"),
        ["its", "10", "oclock", "dr", "smith"]
    );
    assert_eq!(wer("a b c d", "a b c d"), 0.0);
    assert_eq!(wer("a b c d", "a x c"), 0.5); // one substitution, one deletion
    assert_eq!(wer("Hello, world.", "hello world"), 0.0);
    assert_eq!(wer("one-two", "one two"), 0.0);
    assert_eq!(wer("a", "a b c"), 2.0);
}

// ---- manifest ------------------------------------------------------------------

// ---- transcription ------------------------------------------------------------------

/// Checks the compact JSON shape; returns the transcript text.
fn check_json(name: &str, v: &serde_json::Value, want_duration: Option<f64>) -> String {
    let text = v["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no text"));
    assert_eq!(v["language"].as_str(), Some("en"), "{name}: language");
    let duration = v["duration"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: no duration"));
    if let Some(want) = want_duration {
        assert!(
            (duration - want).abs() <= 0.1,
            "{name}: duration {duration} vs manifest {want}"
        );
    }
    let segments = v["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no segments"));
    let mut prev_start = 0.0;
    let mut prev_end = 0.0;
    let mut joined = String::new();
    for (i, s) in segments.iter().enumerate() {
        let start = s["start"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}[{i}]: start"));
        let end = s["end"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}[{i}]: end"));
        let t = s["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}[{i}]: text"));
        let lp = s["avg_logprob"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}[{i}]: avg_logprob"));
        let ns = s["no_speech_prob"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}[{i}]: no_speech_prob"));
        assert!(lp <= 0.0, "{name}[{i}]: avg_logprob {lp}");
        assert!(
            (0.0..=1.0).contains(&ns),
            "{name}[{i}]: no_speech_prob {ns}"
        );
        assert!(
            0.0 <= start && start <= end && end <= duration + 1e-6,
            "{name}[{i}]: [{start}, {end}] outside [0, {duration}]"
        );
        assert!(
            start >= prev_start && start >= prev_end - 1e-6,
            "{name}[{i}]: starts at {start} before the previous segment [{prev_start}, {prev_end}]"
        );
        assert!(!t.trim().is_empty(), "{name}[{i}]: empty segment text");
        prev_start = start;
        prev_end = end;
        joined.push_str(t);
    }
    assert_eq!(
        text,
        joined.trim(),
        "{name}: text is not the segments' text"
    );
    text.to_string()
}

/// Every manifest clip, every format, in one batched call.
#[test]
fn every_format_transcribes_in_one_batched_call() {
    let clips = manifest();
    let out_dir = tempfile::tempdir().unwrap();
    let mut args: Vec<std::ffi::OsString> = vec![
        "--format".into(),
        "json".into(),
        "--output".into(),
        out_dir.path().into(),
    ];
    args.extend(clips.iter().map(|c| fixture(&c.file).into_os_string()));
    let t0 = std::time::Instant::now();
    let o = earshot(&args);
    let wall = t0.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    assert!(
        stdout(&o).trim().is_empty(),
        "stdout with --output: {}",
        stdout(&o)
    );

    let audio: f64 = clips.iter().map(|c| c.duration_s).sum();
    println!(
        "{} clips, {audio:.1} s of audio in {wall:.1} s ({:.1}x real time)",
        clips.len(),
        audio / wall
    );
    let mut failures = Vec::new();
    let (mut edits, mut words) = (0.0, 0usize);
    for c in &clips {
        let stem = Path::new(&c.file)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let path = out_dir.path().join(format!("{stem}.json"));
        let body = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: no output {}: {e}", c.file, path.display()));
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}\n{body}", c.file));
        let text = check_json(&c.file, &v, Some(c.duration_s));
        let w = wer(&c.text, &text);
        let n = normalise(&c.text).len();
        edits += w * n as f64;
        words += n;
        println!(
            "WER {w:.3}  {:<22} {:<19} {} segments",
            c.file,
            c.format,
            v["segments"].as_array().map_or(0, |s| s.len())
        );
        if w >= 0.35 {
            failures.push(format!(
                "{} ({}): WER {w:.3}\n  got:  {text}\n  want: {}",
                c.file, c.format, c.text
            ));
        }
    }
    println!("corpus WER {:.3} over {words} words", edits / words as f64);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn text_format_prints_only_the_transcript() {
    let o = earshot([fixture("sample.wav")]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let out = stdout(&o);
    assert!(out.ends_with('\n'), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is not one line:\n{out}");
    for noise in ["INFO", "WARN", "ERROR", "\u{1b}[", "earshot"] {
        assert!(!out.contains(noise), "stdout contains {noise:?}: {out:?}");
    }
    let reference = std::fs::read_to_string(fixture("sample.txt")).unwrap();
    let w = wer(&reference, lines[0]);
    println!("sample.wav WER {w:.3}: {}", lines[0]);
    assert!(
        w < 0.25,
        "WER {w:.3}\n  got:  {}\n  want: {reference}",
        lines[0]
    );
}

/// `HH:MM:SS<sep>mmm` → seconds.
fn parse_ts(s: &str, sep: char) -> Option<f64> {
    let (hms, ms) = s.split_once(sep)?;
    let p: Vec<&str> = hms.split(':').collect();
    if p.len() != 3 || ms.len() != 3 || p.iter().any(|x| x.len() != 2) {
        return None;
    }
    let n = |x: &str| x.parse::<u64>().ok();
    Some((n(p[0])? * 3600 + n(p[1])? * 60 + n(p[2])?) as f64 + n(ms)? as f64 / 1000.0)
}

/// `START --> END` → (start, end), checked.
fn parse_cue_time(line: &str, sep: char) -> (f64, f64) {
    let (a, b) = line
        .split_once(" --> ")
        .unwrap_or_else(|| panic!("not a cue timing line: {line:?}"));
    let a = parse_ts(a, sep).unwrap_or_else(|| panic!("bad start in {line:?}"));
    let b = parse_ts(b, sep).unwrap_or_else(|| panic!("bad end in {line:?}"));
    assert!(a <= b, "{line}");
    (a, b)
}

/// Cue blocks: (timing, text lines). Returns the cues' text joined.
fn check_cues(blocks: &[&str], sep: char, numbered: bool, duration: f64) -> String {
    assert!(!blocks.is_empty(), "no cues");
    let mut prev = 0.0;
    let mut text = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let mut lines = b.lines();
        if numbered {
            let n: usize = lines
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("cue {i} has no sequence number: {b:?}"));
            assert_eq!(n, i + 1, "sequence numbers must run 1, 2, 3…");
        }
        let (start, end) = parse_cue_time(lines.next().expect("timing line"), sep);
        assert!(
            start >= prev - 1e-6,
            "cue {i} starts before the previous one: {b:?}"
        );
        assert!(
            end <= duration + 0.001,
            "cue {i} ends after the audio: {b:?}"
        );
        prev = start;
        let body: Vec<&str> = lines.collect();
        assert!(
            !body.is_empty() && body.iter().all(|l| !l.trim().is_empty()),
            "cue {i}: {b:?}"
        );
        assert!(!body.iter().any(|l| l.contains("-->")), "cue {i}: {b:?}");
        text.extend(body);
    }
    text.join(" ")
}

fn sample_duration() -> f64 {
    let s =
        earshot_inference::audio::load_file(&fixture("sample.wav"), Default::default()).unwrap();
    s.len() as f64 / 16_000.0
}

#[test]
fn srt_output_parses() {
    let dir = tempfile::tempdir().unwrap();
    let o = earshot([
        "--format".as_ref(),
        "srt".as_ref(),
        "--output".as_ref(),
        dir.path().as_os_str(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let srt = std::fs::read_to_string(dir.path().join("sample.srt")).unwrap();
    assert!(!srt.contains('\r'));
    let blocks: Vec<&str> = srt.trim_end().split("\n\n").collect();
    let text = check_cues(&blocks, ',', true, sample_duration());
    let reference = std::fs::read_to_string(fixture("sample.txt")).unwrap();
    let w = wer(&reference, &text);
    println!("srt: {} cues, WER {w:.3}", blocks.len());
    assert!(w < 0.25, "{text}");
}

#[test]
fn vtt_output_parses() {
    let o = earshot([
        "--format".as_ref(),
        "vtt".as_ref(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let vtt = stdout(&o);
    let rest = vtt
        .strip_prefix("WEBVTT\n\n")
        .unwrap_or_else(|| panic!("no WEBVTT header: {vtt:?}"));
    let blocks: Vec<&str> = rest.trim_end().split("\n\n").collect();
    let text = check_cues(&blocks, '.', false, sample_duration());
    let reference = std::fs::read_to_string(fixture("sample.txt")).unwrap();
    let w = wer(&reference, &text);
    println!("vtt: {} cues, WER {w:.3}", blocks.len());
    assert!(w < 0.25, "{text}");
}

// ---- edge cases -------------------------------------------------------------------

#[test]
fn empty_file_is_an_error() {
    assert_error(&earshot([fixture("empty.wav")]), "empty");
}

#[test]
fn text_file_is_not_audio() {
    assert_error(
        &earshot([fixture("not-audio.txt")]),
        "not a recognised audio container",
    );
}

/// Ogg Opus (the weather passage) transcribes like the WAV it came from.
#[test]
fn opus_transcribes() {
    let o = earshot([fixture("opus.ogg")]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let weather = manifest()
        .into_iter()
        .find(|c| c.file.contains("weather"))
        .expect("weather clip in the manifest");
    let w = wer(&weather.text, &stdout(&o));
    println!("opus.ogg WER {w:.3}: {}", stdout(&o).trim());
    assert!(w < 0.35, "{}", stdout(&o));
}

/// Hostile Opus input and codecs or containers earshot does not decode, in
/// one call: each file gets its own typed error line, nothing panics; a
/// cut Ogg stream and a WebM with a broken cluster transcribe what is left.
#[test]
fn hostile_opus_and_unsupported_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        ("corrupt-head.opus", "invalid opushead"),
        ("speex.ogg", "unsupported codec speex"),
        ("amr-nb.amr", "unsupported codec amr"),
        ("video-no-audio.mp4", "no audio track"),
        ("video-no-audio.webm", "no audio track"),
    ];
    let mut args: Vec<std::ffi::OsString> = vec![
        "--format".into(),
        "json".into(),
        "--output".into(),
        dir.path().into(),
    ];
    args.extend(bad.iter().map(|(f, _)| fixture(f).into_os_string()));
    args.push(fixture("truncated.opus").into_os_string());
    args.push(fixture("broken-cluster.webm").into_os_string());
    let o = earshot(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for (file, needle) in bad {
        let hit = err.lines().any(|l| {
            l.starts_with("error:") && l.contains(file) && l.to_lowercase().contains(needle)
        });
        assert!(
            hit,
            "no error line for {file} mentioning {needle:?}:\n{err}"
        );
    }
    for file in ["truncated", "broken-cluster"] {
        let body = std::fs::read_to_string(dir.path().join(format!("{file}.json")))
            .unwrap_or_else(|e| panic!("{file}: no transcript ({e})\n{err}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let text = check_json(file, &v, None);
        println!("{file}: {text:?}");
        assert!(normalise(&text).len() >= 5, "{file}: {text:?}");
    }
}

/// The first 3000 bytes of an mp3 (~0.3 s of audio): observed to decode
/// what is there and exit 0 with a short (often nonsense) transcript; an
/// error would be acceptable too.
#[test]
fn truncated_mp3_is_short_or_an_error() {
    let o = earshot([fixture("truncated.mp3")]);
    let out = stdout(&o);
    println!(
        "truncated.mp3: {} stdout {:?} stderr {:?}",
        o.status,
        out,
        stderr(&o)
    );
    if o.status.success() {
        assert!(out.lines().count() <= 1, "{out:?}");
        assert!(
            normalise(&out).len() <= 6,
            "long transcript from 0.3 s: {out:?}"
        );
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_error(&o, "truncated.mp3");
    }
}

#[test]
fn header_only_wav_is_an_empty_transcript() {
    let o = earshot([fixture("header-only.wav")]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    assert_eq!(stdout(&o).trim(), "", "{:?}", stdout(&o));
    // And as JSON: no segments, zero duration.
    let o = earshot([
        "--format".as_ref(),
        "json".as_ref(),
        fixture("header-only.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    check_json("header-only.wav", &v, Some(0.0));
    assert_eq!(v["segments"].as_array().map(|s| s.len()), Some(0));
}

#[test]
fn silence_is_an_empty_transcript() {
    // The default (fitted) encoder window reads "you" here unless a window
    // over the no-speech threshold is decided 30 s wide; `full` is the
    // reference's window.
    for window in ["fit", "full"] {
        let o = earshot([
            fixture("silence-10s.wav").as_os_str(),
            "--encoder-window".as_ref(),
            window.as_ref(),
        ]);
        assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
        assert_eq!(stdout(&o).trim(), "", "{window}: {:?}", stdout(&o));
    }
}

#[test]
fn directory_and_missing_file_are_errors() {
    let o = earshot([fixtures()]);
    assert_error(&o, "directory");
    let o = earshot([fixture("no-such-file.wav")]);
    assert_error(&o, "no-such-file.wav");
    assert_error(&o, "no such file");
}

/// A WAV whose header claims ~4 GB of samples but holds 1 s: must not
/// allocate for the claim. Completing at all is the check.
#[test]
fn wav_claiming_4gb_completes() {
    let rate = 16_000u32;
    let samples: Vec<i16> = (0..rate)
        .map(|i| ((i as f32 * 0.07).sin() * 8000.0) as i16)
        .collect();
    let claimed: u32 = 0xFFFF_FF00;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(claimed + 36).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes()); // PCM
    v.extend_from_slice(&1u16.to_le_bytes()); // mono
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&claimed.to_le_bytes());
    for s in &samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claims-4gb.wav");
    std::fs::write(&path, v).unwrap();
    let o = earshot(["--format".as_ref(), "json".as_ref(), path.as_os_str()]);
    println!("claims-4gb.wav: {} {}", o.status, stderr(&o).trim());
    match o.status.code() {
        Some(0) => {
            let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            check_json("claims-4gb.wav", &v, Some(1.0));
        }
        Some(1) => assert_error(&o, "claims-4gb.wav"),
        other => panic!("exit {other:?}: {}", stderr(&o)),
    }
}

#[test]
fn max_audio_seconds_refuses_long_audio() {
    let o = earshot([
        "--max-audio-seconds".as_ref(),
        "5".as_ref(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert_error(&o, "longer than");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).trim(), "");
}

/// Good and bad files in one call: the good one is transcribed and
/// written, each bad one gets its own error line, and the exit code is 1.
#[test]
fn mixed_good_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    // The first ~4.3 s of sample.wav ("Good morning everyone. Shall we
    // start with the launch date?") as a short good clip.
    let s =
        earshot_inference::audio::load_file(&fixture("sample.wav"), Default::default()).unwrap();
    let cut = &s[..(4.3 * 16_000.0) as usize];
    let good = dir.path().join("good.wav");
    std::fs::write(&good, wav_s16(cut, 16_000)).unwrap();
    let out = dir.path().join("out");
    let o = earshot([
        "--format".as_ref(),
        "json".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
        fixture("empty.wav").as_os_str(),
        good.as_os_str(),
        fixture("not-audio.txt").as_os_str(),
        fixture("amr-nb.amr").as_os_str(),
        dir.path().join("missing.wav").as_os_str(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for bad in ["empty.wav", "not-audio.txt", "amr-nb.amr", "missing.wav"] {
        assert_error(&o, bad);
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("good.json")).unwrap()).unwrap();
    let text = check_json("good.wav", &v, Some(4.3));
    println!("mixed: good.wav → {text:?}");
    assert!(
        wer(
            "Good morning everyone. Shall we start with the launch date?",
            &text
        ) < 0.35,
        "{text}"
    );
    let written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(written, ["good.json"], "only the good file has an output");
}

fn wav_s16(samples: &[f32], rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
    }
    v
}

// ---- options ------------------------------------------------------------------------

#[test]
fn cuda_in_a_cpu_build_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return; // a CUDA build may well have a GPU
    }
    let o = earshot([
        "--device".as_ref(),
        "cuda".as_ref(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert_error(&o, "--features cuda");
    assert_eq!(stdout(&o).trim(), "");
}

#[test]
fn unknown_model_lists_known_models() {
    // Not through earshot(): that pins --model tiny.en.
    let o = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["transcribe", "--model", "no-such-model"])
        .arg(fixture("sample.wav"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_error(&o, "unknown model");
    for known in ["tiny.en", "base", "small", "large-v3"] {
        assert!(
            err.contains(known),
            "known model {known} not listed:\n{err}"
        );
    }
}

// ---- word timestamps -------------------------------------------------------------------

/// A word as compared across formats: text, start, end, probability.
type W = (String, f64, f64, f64);

/// The words of a `verbose_json` transcript: the per-segment ones (trimmed,
/// blank ones dropped, as the job contract records them), checked against
/// the top-level OpenAI-style `words` array.
fn verbose_words(v: &serde_json::Value) -> Vec<W> {
    let per_segment: Vec<W> = v["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .flat_map(|s| s["words"].as_array().cloned().unwrap_or_default())
        .map(|w| {
            (
                w["word"].as_str().expect("word").trim().to_string(),
                w["start"].as_f64().expect("start"),
                w["end"].as_f64().expect("end"),
                w["probability"].as_f64().expect("probability"),
            )
        })
        .collect();
    let flat: Vec<(String, f64, f64)> = v["words"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|w| {
            let mut keys: Vec<&String> = w.as_object().expect("word object").keys().collect();
            keys.sort();
            assert_eq!(keys, ["end", "start", "word"], "OpenAI's word shape: {w}");
            (
                w["word"].as_str().unwrap().to_string(),
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
            )
        })
        .collect();
    let trimmed: Vec<(String, f64, f64)> = per_segment
        .iter()
        .map(|(w, s, e, _)| (w.clone(), *s, *e))
        .collect();
    assert_eq!(
        flat, trimmed,
        "top-level words differ from the segments' words"
    );
    per_segment
        .into_iter()
        .filter(|w| !w.0.is_empty())
        .collect()
}

/// Checks word timings: non-empty, each inside its span and the audio,
/// starts in order.
fn check_words(name: &str, words: &[W], duration: f64) {
    assert!(!words.is_empty(), "{name}: no word timings");
    let mut prev = 0.0;
    for (i, (w, s, e, p)) in words.iter().enumerate() {
        assert!(
            0.0 <= *s && s <= e && *e <= duration + 0.01,
            "{name}: word {i} {w:?} [{s}, {e}] outside [0, {duration}]"
        );
        assert!(
            *s >= prev - 1e-6,
            "{name}: word {i} {w:?} starts before the previous word"
        );
        assert!(
            (0.0..=1.0).contains(p),
            "{name}: word {i} {w:?} probability {p}"
        );
        prev = *s;
    }
}

/// `--format transcribe` is Amazon Transcribe's output document: it
/// satisfies the schema written from AWS's documentation, reads back
/// through the same module the managed backend uses, and holds the very
/// words `--format verbose_json --word-timestamps` reports.
#[test]
fn transcribe_format_is_transcribe_json_with_the_verbose_json_words() {
    let dir = tempfile::tempdir().unwrap();
    let o = earshot([
        "--format".as_ref(),
        "transcribe".as_ref(),
        "--word-timestamps".as_ref(),
        "--output".as_ref(),
        dir.path().as_os_str(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let body = std::fs::read(dir.path().join("sample.json")).expect("sample.json written");
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    common::validate_with_schema_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("managed/schema/transcribe-output.schema.json"),
        std::slice::from_ref(&doc),
    );
    assert_eq!(doc["jobName"], "sample");
    assert_eq!(doc["status"], "COMPLETED");
    assert_eq!(doc["results"]["language_code"], "en-US");
    let items = doc["results"]["items"].as_array().expect("items");
    assert!(
        items.iter().any(|i| i["type"] == "punctuation"),
        "punctuation is split into its own items"
    );
    assert!(!doc["results"]["audio_segments"]
        .as_array()
        .expect("audio_segments")
        .is_empty());

    let record = earshot_managed::transcribe_json::parse(&body).expect("reads back");
    let from_transcribe: Vec<W> = record
        .segments
        .iter()
        .flat_map(|s| &s.words)
        .map(|w| (w.word.clone(), w.start, w.end, w.probability))
        .collect();

    let o = earshot([
        "--format".as_ref(),
        "verbose_json".as_ref(),
        "--word-timestamps".as_ref(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("verbose JSON");
    let duration = v["duration"].as_f64().unwrap();
    let from_verbose = verbose_words(&v);
    check_words("verbose_json", &from_verbose, duration);
    assert_eq!(record.text, v["text"].as_str().unwrap().trim());

    assert_eq!(
        from_transcribe.len(),
        from_verbose.len(),
        "word counts differ:\n  transcribe: {from_transcribe:?}\n  verbose: {from_verbose:?}"
    );
    for (i, (a, b)) in from_transcribe.iter().zip(&from_verbose).enumerate() {
        assert_eq!(a.0, b.0, "word {i}");
        assert!(
            (a.1 - b.1).abs() <= 0.001 && (a.2 - b.2).abs() <= 0.001,
            "word {i} {:?}: transcribe [{}, {}] vs verbose_json [{}, {}]",
            a.0,
            a.1,
            a.2,
            b.1,
            b.2
        );
        assert!((a.3 - b.3).abs() <= 0.001, "word {i} confidence");
    }
    println!("{} words agree", from_verbose.len());

    // The compact json carries the same words per segment.
    let o = earshot([
        "--format".as_ref(),
        "json".as_ref(),
        "--word-timestamps".as_ref(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    check_json("sample.wav (json, words)", &j, None);
    assert!(j.get("words").is_none(), "the flat list is verbose_json's");
    let mut j_words = j.clone();
    j_words["words"] = v["words"].clone();
    assert_eq!(verbose_words(&j_words), from_verbose);
}

/// `--format transcribe` alone turns word timestamps on.
#[test]
fn transcribe_format_implies_word_timestamps() {
    let o = earshot([
        "--format".as_ref(),
        "transcribe".as_ref(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let r = earshot_managed::transcribe_json::parse(stdout(&o).as_bytes()).expect("reads back");
    let words: Vec<W> = r
        .segments
        .iter()
        .flat_map(|s| &s.words)
        .map(|w| (w.word.clone(), w.start, w.end, w.probability))
        .collect();
    check_words("transcribe", &words, sample_duration());
    let reference = std::fs::read_to_string(fixture("sample.txt")).unwrap();
    let joined: Vec<&str> = words.iter().map(|w| w.0.as_str()).collect();
    assert!(wer(&reference, &joined.join(" ")) < 0.25, "{joined:?}");
}

/// Karaoke captions: `--max-words-per-cue 3` gives cues of at most three
/// words, timed by their words, covering every word in order.
#[test]
fn srt_and_vtt_cues_of_at_most_n_words() {
    let o = earshot([
        "--format".as_ref(),
        "verbose_json".as_ref(),
        "--word-timestamps".as_ref(),
        fixture("sample.wav").as_os_str(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let words = verbose_words(&v);
    let duration = sample_duration();
    check_words("verbose_json", &words, duration);

    for (format, sep) in [("srt", ','), ("vtt", '.')] {
        let o = earshot([
            "--format".as_ref(),
            format.as_ref(),
            "--max-words-per-cue".as_ref(),
            "3".as_ref(),
            fixture("sample.wav").as_os_str(),
        ]);
        assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
        let out = stdout(&o);
        let body = out.strip_prefix("WEBVTT\n\n").unwrap_or(&out);
        let blocks: Vec<&str> = body.trim_end().split("\n\n").collect();
        let text = check_cues(&blocks, sep, format == "srt", duration);
        for b in &blocks {
            let n = b
                .lines()
                .skip(if format == "srt" { 2 } else { 1 })
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                n.split_whitespace().count() <= 3,
                "{format}: cue of more than 3 words: {b:?}"
            );
        }
        let all: Vec<&str> = words.iter().map(|w| w.0.as_str()).collect();
        assert_eq!(
            normalise(&text),
            normalise(&all.join(" ")),
            "{format}: cues lose words"
        );
        // The first cue starts at the first word and ends at the third's end.
        let timing = blocks[0]
            .lines()
            .nth(if format == "srt" { 1 } else { 0 })
            .unwrap();
        let (start, end) = parse_cue_time(timing, sep);
        assert!(
            (start - words[0].1).abs() <= 0.0015,
            "{timing} vs {:?}",
            words[0]
        );
        let third = words.get(2).map_or(end, |w| w.2);
        assert!(end <= third + 0.0015, "{timing} vs {:?}", words.get(2));
        println!("{format}: {} cues for {} words", blocks.len(), words.len());
        assert!(blocks.len() * 3 >= words.len(), "{format}: too few cues");
    }
}

#[test]
fn word_timestamp_flags_are_checked() {
    let sample = fixture("sample.wav");
    let run = |args: &[&str]| {
        let mut a: Vec<std::ffi::OsString> =
            args.iter().map(|s| std::ffi::OsString::from(*s)).collect();
        a.push(sample.clone().into_os_string());
        earshot(a)
    };
    let o = run(&["--format", "srt", "--max-words-per-cue", "0"]);
    assert_error(&o, "--max-words-per-cue must be at least 1");
    assert_eq!(stdout(&o), "");
    assert_error(
        &run(&["--format", "json", "--max-words-per-cue", "2"]),
        "srt and vtt only",
    );
    assert_error(
        &run(&["--hallucination-silence-threshold", "2"]),
        "needs --word-timestamps",
    );
    assert_error(
        &run(&[
            "--word-timestamps",
            "--hallucination-silence-threshold",
            "0",
        ]),
        "positive",
    );
    assert_error(&run(&["--format", "docx"]), "transcribe");
    // clap refuses what is not a number at all.
    let o = run(&["--format", "srt", "--max-words-per-cue", "many"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--max-words-per-cue"), "{}", stderr(&o));
}

/// `--compute-type`: int8 transcribes as well as float32 does on the
/// sample; a type the device cannot run is a clear error, not a fallback.
#[test]
fn compute_types() {
    let reference = std::fs::read_to_string(fixture("sample.txt")).unwrap();
    let o = earshot([
        fixture("sample.wav").as_os_str(),
        "--compute-type".as_ref(),
        "int8".as_ref(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    let w = wer(&reference, stdout(&o).trim());
    assert!(w < 0.25, "int8 WER {w:.3}: {}", stdout(&o));
    let o = earshot([
        fixture("sample.wav").as_os_str(),
        "--compute-type".as_ref(),
        "float16".as_ref(),
    ]);
    assert_error(&o, "float16 needs CUDA");
    let o = earshot([
        fixture("sample.wav").as_os_str(),
        "--compute-type".as_ref(),
        "int4".as_ref(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown compute type"),
        "{}",
        stderr(&o)
    );
}

/// `--encoder-window fit` (the default) encodes a short clip in a window of
/// its own length plus 5-10 s of padding instead of 30 s. The decoder must
/// still see where the speech ends: cut with no padding it loops (a clip's
/// text repeated to the token limit). Clips of sample.wav, cut between the
/// segments a full-window run finds, must read about as many words as that
/// run's text and be as accurate, and the option is checked.
#[test]
fn short_clips_fit_the_encoder_window() {
    let dir = tempfile::tempdir().unwrap();
    let json = |args: &[&std::ffi::OsStr], out: &Path| {
        let mut all: Vec<&std::ffi::OsStr> = vec!["--format".as_ref(), "json".as_ref()];
        all.extend_from_slice(&["--output".as_ref(), out.as_os_str()]);
        all.extend_from_slice(args);
        let o = earshot(all);
        assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    };
    let full_out = dir.path().join("full");
    json(
        &[
            fixture("sample.wav").as_os_str(),
            "--encoder-window".as_ref(),
            "full".as_ref(),
        ],
        &full_out,
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full_out.join("sample.json")).unwrap())
            .unwrap();
    let segs: Vec<(f64, f64, String)> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["start"].as_f64().unwrap(),
                s["end"].as_f64().unwrap(),
                s["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(segs.len() >= 4, "sample.wav has five sentences: {segs:?}");
    // Clips of whole segments, at most 10 s each, cut halfway between
    // segments.
    let samples =
        earshot_inference::audio::load_file(&fixture("sample.wav"), Default::default()).unwrap();
    let dur = samples.len() as f64 / 16_000.0;
    let mut clips: Vec<(PathBuf, String)> = Vec::new();
    let mut first = 0;
    while first < segs.len() {
        let mut last = first;
        while last + 1 < segs.len() && segs[last + 1].1 - segs[first].0 <= 10.0 {
            last += 1;
        }
        let from = if first == 0 {
            0.0
        } else {
            (segs[first - 1].1 + segs[first].0) / 2.0
        };
        let to = if last + 1 == segs.len() {
            dur
        } else {
            (segs[last].1 + segs[last + 1].0) / 2.0
        };
        let cut =
            &samples[(from * 16_000.0) as usize..((to * 16_000.0) as usize).min(samples.len())];
        let path = dir.path().join(format!("clip{}.wav", clips.len()));
        std::fs::write(&path, wav_s16(cut, 16_000)).unwrap();
        let text: String = segs[first..=last].iter().map(|s| s.2.as_str()).collect();
        clips.push((path, text));
        first = last + 1;
    }
    assert!(clips.len() >= 3, "{clips:?}");
    // All clips in one batch: every window is shorter than 30 s.
    let fit_out = dir.path().join("fit");
    let mut args: Vec<&std::ffi::OsStr> = clips.iter().map(|c| c.0.as_os_str()).collect();
    args.extend_from_slice(&["--encoder-window".as_ref(), "fit".as_ref()]);
    json(&args, &fit_out);
    let reference = std::fs::read_to_string(fixture("sample.txt")).unwrap();
    let full_text: String = segs.iter().map(|s| s.2.as_str()).collect();
    let mut fit_text = String::new();
    for (i, (_, full)) in clips.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fit_out.join(format!("clip{i}.json"))).unwrap(),
        )
        .unwrap();
        let got = v["text"].as_str().unwrap();
        println!("clip{i}: {got:?}\n  full window: {full:?}");
        // A loop repeats the clip; a lost window drops it.
        let (n_got, n_full) = (normalise(got).len(), normalise(full).len());
        assert!(
            n_got * 4 >= n_full * 3 && n_got * 4 <= n_full * 5,
            "clip{i}: {n_got} words where the full window read {n_full}\n{full}\n{got}"
        );
        fit_text.push_str(got);
        fit_text.push(' ');
    }
    // As accurate as the full window against the reference (the espeak
    // sample reads 0-10% either way; the full window is not always the
    // better one).
    let (w_fit, w_full) = (wer(&reference, &fit_text), wer(&reference, &full_text));
    println!("WER against sample.txt: fit clips {w_fit:.3}, full window {w_full:.3}");
    assert!(w_fit <= w_full + 0.05, "fit {w_fit:.3} vs full {w_full:.3}");
    // With --vad, silence never reaches the decoder at all (without it,
    // `silence_is_an_empty_transcript`).
    let o = earshot([
        fixture("silence-10s.wav").as_os_str(),
        "--encoder-window".as_ref(),
        "fit".as_ref(),
        "--vad".as_ref(),
    ]);
    assert!(o.status.success(), "{}\n{}", o.status, stderr(&o));
    assert_eq!(stdout(&o).trim(), "", "{:?}", stdout(&o));
    let o = earshot([
        fixture("sample.wav").as_os_str(),
        "--encoder-window".as_ref(),
        "half".as_ref(),
    ]);
    assert_error(&o, "unknown encoder window");
}
