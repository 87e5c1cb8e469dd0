//! `earshot serve` end to end: the real binary on a loopback port, the real
//! tiny.en and SmolLM2 models, driven by the official `openai` Python client
//! and parsed by `prometheus_client` (both from the test virtual
//! environment `scripts/test` builds).

mod common;
mod serve;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use earshot_inference::testing::fixtures_dir;
use serve::{run_py, Server};

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_openai_client_works_against_every_endpoint() {
    let server = Server::start(&["--api-key", "sk-test-1,sk-test-2"]);
    let sample = fixtures_dir().join("sample.wav");
    let junk = fixtures_dir().join("not-audio.txt");
    let out = run_py(&[
        &script("openai_client.py"),
        &server.base,
        "sk-test-2",
        &sample.display().to_string(),
        &junk.display().to_string(),
    ]);
    let seen: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON summary");
    assert!(seen["segments"].as_u64().unwrap() >= 3, "{seen}");
    assert!(seen["stream_chunks"].as_u64().unwrap() >= 2, "{seen}");

    // Probes need no API key; readiness checks the device and the engines.
    for (path, want) in [("/health", "ok"), ("/ready", "ready")] {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}{path}", server.base)])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{path} failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["status"], want, "{path}: {v}");
        if path == "/ready" {
            assert_eq!(v["device"], "cpu", "{v}");
            assert!(v["llm_model"].is_string(), "{v}");
        }
    }

    // The OpenAPI description names every route served.
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/openapi.json", server.base)])
        .output()
        .expect("curl runs");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("OpenAPI JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    for route in [
        "/v1/audio/transcriptions",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/summarize",
        "/v1/process",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            doc["paths"].get(route).is_some(),
            "{route} missing from /openapi.json"
        );
    }

    // Invented methods (valid HTTP tokens) share one label: a client cannot
    // grow the metric set.
    for m in ["BREW", "FROB1", "FROB2"] {
        let st = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-X",
                m,
                &format!("{}/health", server.base),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "curl -X {m}");
    }
    let text = metrics_text(&server.base);
    assert!(
        text.contains("method=\"other\""),
        "no method=\"other\" in /metrics"
    );
    for m in ["BREW", "FROB1", "FROB2"] {
        assert!(!text.contains(m), "{m} became a metric label");
    }

    // Then the metrics, through a real Prometheus text parser.
    let names = run_py(&[
        &script("metrics_parse.py"),
        &format!("{}/metrics", server.base),
    ]);
    for want in [
        "earshot_http_requests_total",
        "earshot_http_request_duration_seconds",
        "earshot_http_requests_in_flight",
        "earshot_speech_batches_total",
        "earshot_speech_batch_size",
        "earshot_speech_real_time_factor",
        "earshot_audio_seconds_total",
        "earshot_llm_tokens_generated_total",
        "earshot_llm_batch_size",
        "earshot_queue_depth",
        "earshot_model_load_seconds",
    ] {
        assert!(
            names.lines().any(|l| l == want),
            "{want} missing from /metrics: {names}"
        );
    }
}

#[test]
fn full_queue_answers_503_with_retry_after_and_big_bodies_413() {
    let server = Server::start(&[
        "--queue-capacity",
        "1",
        "--max-batch",
        "1",
        "--max-body-bytes",
        "2000000",
        "--max-audio-seconds",
        "25",
        "--no-summarizer",
    ]);
    let sample = fixtures_dir().join("ten-minutes.wav");
    let out = run_py(&[
        &script("overload.py"),
        &server.base,
        &sample.display().to_string(),
        &fixtures_dir().join("sample.wav").display().to_string(),
        &fixtures_dir().join("04-bridges.wav").display().to_string(),
    ]);
    let seen: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON summary");
    assert!(seen["ok"].as_u64().unwrap() >= 1, "{seen}");
    assert!(seen["busy"].as_u64().unwrap() >= 1, "{seen}");
}

#[test]
fn serve_runs_the_queue_worker_on_the_same_batchers_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let q = queue.display().to_string();
    let mut server = Server::start(&[
        "--worker",
        "--local-queue",
        &q,
        "--wait-seconds",
        "1",
        "--no-summarizer",
    ]);
    let earshot = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_earshot"))
            .args(args)
            .args(["--local-queue", &q])
            .env("EARSHOT_LOG", "warn")
            .output()
            .unwrap()
    };
    let clip = fixtures_dir().join("03-launch.wav").display().to_string();
    let out = earshot(&["submit", "--task", "transcribe", &clip]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // Meanwhile, the HTTP side answers from the same models.
    let sample = fixtures_dir().join("sample.wav");
    let status = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-F"])
        .arg(format!("file=@{}", sample.display()))
        .arg(format!("{}/v1/audio/transcriptions", server.base))
        .status()
        .expect("curl runs");
    assert!(status.success());
    let t0 = std::time::Instant::now();
    loop {
        let out = earshot(&["status", &id]);
        if out.status.code() == Some(0) {
            let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(rec["transcript"]["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("launch"));
            break;
        }
        assert_eq!(out.status.code(), Some(3), "pending, not failed");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the in-process worker never ran the job"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The worker's numbers are in the same /metrics.
    let text = metrics_text(&server.base);
    assert!(
        text.lines()
            .any(|l| l == "earshot_worker_jobs_total{status=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "earshot_worker_jobs_in_flight 0"),
        "{text}"
    );
    // SIGTERM: the server drains and the worker hands back; exit 0.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let t0 = std::time::Instant::now();
    let code = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "serve did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}

/// The server's `/metrics` text (empty when it does not answer).
fn metrics_text(base: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("{base}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// POSTs a file to /v1/audio/transcriptions with curl; returns (status, body).
fn curl_transcribe(base: &str, file: &Path) -> (u16, String) {
    curl_form(base, file, &[])
}

#[test]
fn sigterm_drains_in_flight_requests_and_slow_ones_time_out() {
    let long = fixtures_dir().join("ten-minutes.wav");
    // A request slower than --request-timeout gets 504 in OpenAI's shape.
    let server = Server::start(&["--no-summarizer", "--request-timeout", "1"]);
    let (code, body) = curl_transcribe(&server.base, &long);
    assert_eq!(code, 504, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    drop(server);

    // SIGTERM while a request runs: it still completes; then exit 0.
    let mut server = Server::start(&["--no-summarizer", "--shutdown-grace", "120"]);
    let base = server.base.clone();
    let clip = fixtures_dir().join("03-launch.wav");
    let in_flight = std::thread::spawn(move || curl_transcribe(&base, &clip));
    // Wait until the server holds the request (the /metrics request itself
    // is the other one in flight).
    let t0 = std::time::Instant::now();
    loop {
        let text = metrics_text(&server.base);
        if text
            .lines()
            .any(|l| l == "earshot_http_requests_in_flight 2")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the request never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let (code, body) = in_flight.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.to_lowercase().contains("launch"), "{body}");
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "serve did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// POSTs multipart `fields` and the file to /v1/audio/transcriptions with
/// curl; returns (status, body).
fn curl_form(base: &str, file: &Path, fields: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "-F"])
        .arg(format!("file=@{}", file.display()));
    for f in fields {
        cmd.args(["-F", f]);
    }
    let out = cmd
        .arg(format!("{base}/v1/audio/transcriptions"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Word timestamps over HTTP: `timestamp_granularities=["word"]` through
/// the official OpenAI client gives OpenAI's `words` array (checked in
/// tests/py/openai_words.py: present, non-empty, in order, inside the
/// audio); `response_format=transcribe` gives Amazon Transcribe's JSON;
/// `max_words_per_cue` cuts captions by words.
#[test]
fn word_timestamps_over_http() {
    let server = Server::start(&["--no-summarizer"]);
    let sample = fixtures_dir().join("sample.wav");
    let out = run_py(&[
        &script("openai_words.py"),
        &server.base,
        &sample.display().to_string(),
    ]);
    let seen: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON summary");
    println!("{seen}");
    assert!(seen["words"].as_u64().unwrap() >= 20, "{seen}");
    assert!(
        seen["last_end"].as_f64().unwrap() <= seen["duration"].as_f64().unwrap() + 0.01,
        "{seen}"
    );

    // Amazon Transcribe's document, named after the upload.
    let (code, body) = curl_form(&server.base, &sample, &["response_format=transcribe"]);
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["jobName"], "sample");
    let r = earshot_managed::transcribe_json::parse(body.as_bytes()).expect("Transcribe JSON");
    let words: Vec<_> = r.segments.iter().flat_map(|s| &s.words).collect();
    assert_eq!(
        words.len() as u64,
        seen["words"].as_u64().unwrap(),
        "{body}"
    );

    // Karaoke captions.
    let (code, vtt) = curl_form(
        &server.base,
        &sample,
        &["response_format=vtt", "max_words_per_cue=2"],
    );
    assert_eq!(code, 200, "{vtt}");
    let cues: Vec<&str> = vtt
        .strip_prefix("WEBVTT\n\n")
        .expect("a VTT document")
        .trim_end()
        .split("\n\n")
        .collect();
    assert!(cues.len() * 2 >= words.len(), "{vtt}");
    for c in &cues {
        let text = c.lines().skip(1).collect::<Vec<_>>().join(" ");
        assert!(text.split_whitespace().count() <= 2, "{c:?}");
    }

    // Bad values: 400 in OpenAI's error shape, before any work.
    for (fields, param) in [
        (
            &["response_format=srt", "max_words_per_cue=0"][..],
            "max_words_per_cue",
        ),
        (
            &["response_format=json", "max_words_per_cue=3"][..],
            "max_words_per_cue",
        ),
        (
            &[
                "timestamp_granularities[]=character",
                "response_format=verbose_json",
            ][..],
            "timestamp_granularities",
        ),
    ] {
        let (code, body) = curl_form(&server.base, &sample, fields);
        assert_eq!(code, 400, "{fields:?}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["param"], param, "{body}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{body}");
    }
}

/// `vad=true` (and faster-whisper's name, `vad_filter`): speech 20 s into
/// silence keeps its place; a bad value is a 400 naming the field.
#[test]
fn vad_over_http() {
    let server = Server::start(&["--no-summarizer"]);
    let speech =
        earshot_inference::audio::load_file(&fixtures_dir().join("sample.wav"), Default::default())
            .unwrap();
    let mut samples = vec![0f32; 20 * 16_000];
    samples.extend_from_slice(&speech);
    let dir = tempfile::tempdir().unwrap();
    let padded = dir.path().join("padded.wav");
    common::write_wav(&padded, &samples);
    for field in ["vad=true", "vad_filter=true"] {
        let (code, body) = curl_form(
            &server.base,
            &padded,
            &[field, "response_format=verbose_json"],
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let first = &v["segments"][0];
        assert!(first["start"].as_f64().unwrap() >= 19.5, "{field}: {first}");
        assert!(v["text"].as_str().unwrap().split_whitespace().count() >= 10);
    }
    let (code, body) = curl_form(&server.base, &padded, &["vad=maybe"]);
    assert_eq!(code, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["param"], "vad", "{body}");
}

/// Speakers over HTTP: `response_format=diarized_json` (OpenAI's diarized
/// response; it turns diarization on) on pyannote's two-person sample call
/// gives speakers A and B; `diarize=true` with `verbose_json` labels
/// segments; bad counts are 400s naming the field.
#[test]
fn diarization_over_http() {
    let dir = earshot_models::models_dir();
    let sample = dir.join("pyannote-sample/sample.wav");
    assert!(
        sample.is_file() && dir.join("diarize/segmentation-3.0.bin").is_file(),
        "run scripts/fetch-models --only diarize --only pyannote-sample"
    );
    let server = Server::start(&["--no-summarizer"]);
    let (code, body) = curl_form(&server.base, &sample, &["response_format=diarized_json"]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let speakers: std::collections::BTreeSet<&str> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["speaker"].as_str().unwrap())
        .collect();
    assert_eq!(
        speakers,
        std::collections::BTreeSet::from(["A", "B"]),
        "{body}"
    );
    let (code, body) = curl_form(
        &server.base,
        &sample,
        &[
            "diarize=true",
            "num_speakers=2",
            "response_format=verbose_json",
        ],
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["segments"][0]["speaker"].is_string(), "{body}");
    assert_eq!(v["speakers"].as_array().unwrap().len(), 2, "{body}");
    for (field, param) in [
        ("num_speakers=0", "num_speakers"),
        ("diarize=perhaps", "diarize"),
    ] {
        let (code, body) = curl_form(&server.base, &sample, &[field]);
        assert_eq!(code, 400, "{field}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["param"], param, "{body}");
    }
    let (code, body) = curl_form(&server.base, &sample, &["min_speakers=3", "max_speakers=2"]);
    assert_eq!(code, 400, "{body}");
}
