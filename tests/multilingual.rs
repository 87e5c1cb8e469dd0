//! Language detection and translation on the real multilingual `base`
//! model (from scripts/fetch-models), with speech the test makes itself
//! with espeak-ng.

use std::path::{Path, PathBuf};
use std::process::Command;

fn speak(dir: &Path, voice: &str, text: &str) -> PathBuf {
    let out = dir.join(format!("{voice}.wav"));
    let st = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&out)
        .arg(text)
        .status()
        .expect("espeak-ng is needed (scripts/test installs it)");
    assert!(st.success());
    out
}

fn earshot(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn detects_language_per_file_and_translates() {
    assert!(
        earshot_models::models_dir()
            .join("whisper-base/model.bin")
            .is_file(),
        "the multilingual base model is missing: run scripts/fetch-models"
    );
    let dir = tempfile::tempdir().unwrap();
    let de = speak(
        dir.path(),
        "de",
        "Guten Morgen. Heute sprechen wir über das Wetter in Berlin und die Pläne für das Wochenende.",
    );
    let es = speak(
        dir.path(),
        "es",
        "Buenos días. Hoy vamos a hablar del tiempo en Madrid y de los planes para el fin de semana.",
    );
    let en = speak(
        dir.path(),
        "en-us",
        "Good morning. Today we talk about the weather in London and our plans for the weekend.",
    );
    let out = dir.path().join("out");
    let (code, _, err) = earshot(&[
        "transcribe",
        de.to_str().unwrap(),
        es.to_str().unwrap(),
        en.to_str().unwrap(),
        "--model",
        "base",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap()).unwrap()
    };
    let (d, s, e) = (read("de"), read("es"), read("en-us"));
    assert_eq!(d["language"], "de", "{d}");
    assert_eq!(s["language"], "es", "{s}");
    assert_eq!(e["language"], "en", "{e}");
    let st = s["text"].as_str().unwrap().to_lowercase();
    assert!(st.contains("madrid") && st.contains("semana"), "{st}");
    let dt = d["text"].as_str().unwrap().to_lowercase();
    assert!(dt.contains("guten morgen") && dt.contains("berlin"), "{dt}");

    // Translation: Spanish speech, English text.
    let (code, text, err) = earshot(&[
        "transcribe",
        es.to_str().unwrap(),
        "--model",
        "base",
        "--translate",
    ]);
    assert_eq!(code, 0, "{err}");
    let t = text.to_lowercase();
    assert!(
        t.contains("madrid") && (t.contains("weather") || t.contains("weekend")),
        "{t}"
    );

    // A fixed language skips detection; an unknown one is refused.
    let (code, _, err) = earshot(&[
        "transcribe",
        de.to_str().unwrap(),
        "--model",
        "base",
        "--language",
        "xx",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown language"), "{err}");
    // English-only models refuse other languages.
    let (code, _, err) = earshot(&[
        "transcribe",
        de.to_str().unwrap(),
        "--model",
        "tiny.en",
        "--language",
        "de",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("English-only"), "{err}");
}
