//! Transcribe's output JSON: the committed fixture and the writer's output
//! both satisfy the schema written from AWS's documentation, the fixture
//! reads into the expected record, and write → parse keeps words and
//! segments.

use earshot_managed::transcribe_json::{self, TranscribeJsonError};
use serde_json::Value;

fn schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/transcribe-output.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

fn fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/transcribe-output.json"
    ))
    .unwrap()
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[test]
fn fixture_matches_the_schema_and_parses_into_words_and_segments() {
    let doc: Value = serde_json::from_slice(&fixture()).unwrap();
    assert_eq!(errors(&schema(), &doc), Vec::<String>::new());

    let r = transcribe_json::parse(&fixture()).unwrap();
    assert_eq!(
        r.text,
        "Good morning everyone, shall we move the launch to Friday? Yes, Priya will send the plan by Thursday."
    );
    assert_eq!((r.language.as_str(), r.duration), ("en", 6.4));
    assert_eq!(r.model, "amazon-transcribe");
    assert_eq!(r.segments.len(), 2);
    let s0 = &r.segments[0];
    assert_eq!((s0.start, s0.end), (0.04, 3.07));
    assert_eq!(
        s0.text,
        "Good morning everyone, shall we move the launch to Friday?"
    );
    let words: Vec<&str> = s0.words.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(
        words,
        [
            "Good",
            "morning",
            "everyone,",
            "shall",
            "we",
            "move",
            "the",
            "launch",
            "to",
            "Friday?"
        ]
    );
    let friday = &s0.words[9];
    assert_eq!(
        (friday.start, friday.end, friday.probability),
        (2.52, 3.07, 0.989)
    );
    assert_eq!(r.segments[1].words[0].word, "Yes,");
    assert_eq!(r.segments[1].words.last().unwrap().word, "Thursday.");
    // Every word of the text is in exactly one segment.
    let all: Vec<&str> = r
        .segments
        .iter()
        .flat_map(|s| &s.words)
        .map(|w| w.word.as_str())
        .collect();
    assert_eq!(all.join(" "), r.text);
}

#[test]
fn writer_output_matches_the_schema_and_round_trips() {
    let r = transcribe_json::parse(&fixture()).unwrap();
    let out = transcribe_json::write("earshot-call-0001", &r);
    let doc = serde_json::to_value(&out).unwrap();
    assert_eq!(errors(&schema(), &doc), Vec::<String>::new());
    // Transcribe's shape: string times with 3 decimals, untimed punctuation.
    let items = doc["results"]["items"].as_array().unwrap();
    assert_eq!(items[0]["start_time"], "0.040");
    assert_eq!(items[3]["type"], "punctuation");
    assert!(items[3].get("start_time").is_none());
    assert_eq!(items[3]["alternatives"][0]["content"], ",");
    assert_eq!(doc["status"], "COMPLETED");
    assert_eq!(doc["results"]["language_code"], "en-US");
    assert_eq!(doc["results"]["audio_segments"][1]["items"][0], 12);

    let back = transcribe_json::parse(&serde_json::to_vec(&out).unwrap()).unwrap();
    assert_eq!(back.text, r.text);
    assert_eq!(back.segments.len(), r.segments.len());
    for (a, b) in back.segments.iter().zip(&r.segments) {
        assert_eq!(a.text, b.text);
        assert_eq!(a.words.len(), b.words.len());
        for (x, y) in a.words.iter().zip(&b.words) {
            assert_eq!(x.word, y.word);
            assert!((x.start - y.start).abs() < 5e-4 && (x.end - y.end).abs() < 5e-4);
            assert!((x.probability - y.probability).abs() < 5e-4);
        }
    }
}

#[test]
fn the_schema_rejects_what_transcribe_never_writes() {
    let v = schema();
    let good: Value = serde_json::from_slice(&fixture()).unwrap();
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut d = good.clone();
        f(&mut d);
        d
    };
    // Numeric times (LocalStack's shape, not AWS's).
    let numeric = mutate(&|d| d["results"]["items"][0]["start_time"] = Value::from(0.04));
    assert!(!v.is_valid(&numeric));
    // A timed punctuation item.
    let timed = mutate(&|d| d["results"]["items"][3]["start_time"] = Value::from("1.2"));
    assert!(!v.is_valid(&timed));
    // An untimed word.
    let untimed = mutate(&|d| {
        d["results"]["items"][0]
            .as_object_mut()
            .unwrap()
            .remove("end_time");
    });
    assert!(!v.is_valid(&untimed));
    let no_transcripts = mutate(&|d| d["results"]["transcripts"] = Value::Array(vec![]));
    assert!(!v.is_valid(&no_transcripts));
}

#[test]
fn writer_without_word_timings_keeps_text_and_invents_no_times() {
    let mut r = transcribe_json::parse(&fixture()).unwrap();
    for s in &mut r.segments {
        s.words.clear();
    }
    let out = transcribe_json::write("j", &r);
    assert!(out.results.items.is_empty());
    assert_eq!(out.results.audio_segments[0].transcript, r.segments[0].text);
    assert!(schema().is_valid(&serde_json::to_value(&out).unwrap()));
    let back = transcribe_json::parse(&serde_json::to_vec(&out).unwrap()).unwrap();
    assert_eq!(back.segments[1].text, r.segments[1].text);
}

#[test]
fn truncated_fixture_is_a_typed_error() {
    let f = fixture();
    for cut in [0, 1, f.len() / 3, f.len() / 2, f.len() - 3] {
        assert!(matches!(
            transcribe_json::parse(&f[..cut]),
            Err(TranscribeJsonError::Malformed(_))
        ));
    }
}
