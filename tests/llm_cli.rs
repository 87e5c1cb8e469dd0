//! End-to-end tests of `earshot summarize`, `earshot process` and
//! `earshot generate` with the real LLMs from `scripts/fetch-models`
//! (SmolLM2-135M-Instruct, the default, and Gemma 3 270M base) and the
//! speech fixtures. A missing model fails the test.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use earshot_inference::testing::{fixtures_dir, real_llm_path};

fn earshot(args: &[&str], stdin: Option<&str>) -> Output {
    // Fails with "run scripts/fetch-models" when not installed.
    real_llm_path("smollm2-135m-instruct");
    let mut child = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("EARSHOT_LOG", "warn")
        .env_remove("EARSHOT_LLM_MODEL")
        .env_remove("EARSHOT_DEVICE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("earshot runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Words of the sample conversation a summary about it should use.
const SAMPLE_WORDS: &[&str] = &[
    "launch",
    "shipment",
    "factory",
    "marketing",
    "campaign",
    "press",
    "release",
    "team",
    "meet",
    "tuesday",
    "monday",
    "friday",
    "week",
];

fn topical_words(text: &str) -> usize {
    let lower = text.to_lowercase();
    SAMPLE_WORDS.iter().filter(|w| lower.contains(*w)).count()
}

#[test]
fn process_transcribes_and_summarizes_the_sample() {
    let sample = fixtures_dir().join("sample.wav");
    let out = earshot(
        &["process", sample.to_str().unwrap(), "--format", "json"],
        None,
    );
    let v = ok_json(&out);
    let transcript = v["transcript"].as_str().unwrap();
    let summary = v["summary"].as_str().unwrap();
    assert!(
        transcript.to_lowercase().contains("launch date"),
        "{transcript}"
    );
    assert!(v["segments"].as_array().unwrap().len() >= 3);
    assert!(!summary.is_empty());
    assert!(
        topical_words(summary) >= 3,
        "summary not about the sample: {summary}"
    );
    assert!(summary.len() < transcript.len() * 2, "{summary}");
    for k in [
        "whisper_load_s",
        "llm_load_s",
        "transcribe_s",
        "summarize_s",
    ] {
        assert!(v["timings"][k].as_f64().unwrap() >= 0.0, "{k}");
    }
    assert_eq!(v["models"]["whisper"], "tiny.en");

    // Text output has both parts; an unreadable file fails alone (exit 1).
    let bad = fixtures_dir().join("not-audio.txt");
    let out = earshot(
        &["process", sample.to_str().unwrap(), bad.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Transcript:") && text.contains("Summary:"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-audio.txt"));
}

#[test]
fn summarize_reads_text_or_transcript_json_and_is_deterministic() {
    let text = std::fs::read_to_string(fixtures_dir().join("sample.txt")).unwrap();
    let a = earshot(&["summarize", "-", "--format", "json"], Some(&text));
    let v = ok_json(&a);
    let s = v["summary"].as_str().unwrap().to_owned();
    assert!(topical_words(&s) >= 3, "{s}");
    assert_eq!(
        (v["chunks"].as_u64(), v["levels"].as_u64()),
        (Some(1), Some(1))
    );
    // Greedy decoding: the same summary again, and from transcript JSON.
    let b = ok_json(&earshot(
        &["summarize", "-", "--format", "json"],
        Some(&text),
    ));
    assert_eq!(b["summary"], v["summary"]);
    // The same segments as the text path's sentence split.
    let segs: Vec<serde_json::Value> = earshot_inference::llm::summarize::split_text(&text)
        .iter()
        .map(|l| serde_json::json!({"text": format!(" {l}")}))
        .collect();
    let tj = serde_json::json!({"text": text, "segments": segs}).to_string();
    let c = ok_json(&earshot(&["summarize", "--format", "json"], Some(&tj)));
    assert_eq!(c["summary"], v["summary"]);
}

#[test]
fn long_transcripts_go_through_map_reduce() {
    let text = std::fs::read_to_string(fixtures_dir().join("sample.txt")).unwrap();
    // 18 copies: three chunks at a 768-token context, so the chunk
    // summaries need a reduce level (12 copies make only two chunks).
    let long: String = (0..18).map(|i| format!("Part {i}.\n{text}")).collect();
    let v = ok_json(&earshot(
        &[
            "summarize",
            "--context",
            "768",
            "--max-tokens",
            "96",
            "--format",
            "json",
        ],
        Some(&long),
    ));
    assert!(v["chunks"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["levels"].as_u64().unwrap() >= 2, "{v}");
    assert!(!v["summary"].as_str().unwrap().is_empty());
}

#[test]
fn the_base_model_summarizes_too() {
    real_llm_path("gemma3-270m");
    let text = std::fs::read_to_string(fixtures_dir().join("sample.txt")).unwrap();
    let v = ok_json(&earshot(
        &[
            "summarize",
            "--llm-model",
            "gemma3-270m",
            "--format",
            "json",
        ],
        Some(&text),
    ));
    assert!(!v["summary"].as_str().unwrap().trim().is_empty(), "{v}");
    assert!(v["model"].as_str().unwrap().contains("270m"), "{v}");
}

#[test]
fn generate_reports_tokens_and_concurrent_copies() {
    let v = ok_json(&earshot(
        &[
            "generate",
            "--llm-model",
            "gemma3-270m",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "8",
            "--format",
            "json",
        ],
        None,
    ));
    // Gemma's tokenizer adds BOS (2) and no space prefix ("The", not "▁The").
    assert_eq!(
        v["prompt_ids"],
        serde_json::json!([2, 818, 5279, 529, 7001, 563])
    );
    assert_eq!(v["tokens"].as_array().unwrap().len(), 8);
    assert!(v["text"].as_str().unwrap().contains("capital"), "{v}");
    let v = ok_json(&earshot(
        &[
            "generate",
            "--chat",
            "Say hello.",
            "--max-tokens",
            "16",
            "--copies",
            "3",
            "--ignore-eos",
            "--format",
            "json",
        ],
        None,
    ));
    assert_eq!(v["copies"], 3);
    assert_eq!(v["generated_tokens"], 48);
}

#[test]
fn bad_input_gets_clear_errors() {
    let cases: &[(&[&str], Option<&str>, &str)] = &[
        (
            &["summarize", "--llm-model", "no-such-llm"],
            Some("hi"),
            "smollm2-135m-instruct",
        ),
        (
            &["summarize", "--llm-model", "/nope/model.gguf"],
            Some("hi"),
            "/nope/model.gguf",
        ),
        (&["summarize"], Some("   \n"), "empty"),
        (&["summarize", "--format", "xml"], Some("hi"), "xml"),
        (
            &["summarize", "--max-tokens", "4000", "--context", "512"],
            Some("Hello there."),
            "max tokens",
        ),
        (
            &["generate", "--prompt", "x", "--temperature=-1"],
            None,
            "temperature",
        ),
        (&["summarize", "--device", "tpu"], Some("hi"), "tpu"),
    ];
    for (args, stdin, needle) in cases {
        let out = earshot(args, *stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A corrupt model file is an error, not a crash.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.gguf");
    std::fs::write(&f, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let out = earshot(
        &["summarize", "--llm-model", f.to_str().unwrap()],
        Some("hi"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("broken.gguf") && !err.contains("panicked"),
        "{err}"
    );
}
