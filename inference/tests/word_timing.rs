//! Word timestamps with the real tiny.en model on generated speech: the
//! words lie inside their segments, in order, and a word spoken after a
//! long pause is timed after the pause.
//!
//! Needs the tiny.en weights (`scripts/fetch-models`; a missing model fails
//! the test) and espeak-ng.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use earshot_inference::audio::{load_file, DecodeLimits};
use earshot_inference::whisper::{TranscribeOptions, Whisper};

fn speak(text: &str, dir: &Path, name: &str) -> Vec<f32> {
    let path = dir.join(format!("{name}.wav"));
    let st = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&path)
        .arg("--")
        .arg(text)
        .status()
        .expect("espeak-ng (apt-get install espeak-ng)");
    assert!(st.success(), "espeak-ng failed");
    load_file(&path, DecodeLimits::default()).unwrap()
}

fn model() -> Whisper {
    let dir = earshot_models::models_dir().join("whisper-tiny.en");
    assert!(
        dir.join("model.bin").is_file(),
        "tiny.en is not installed in {}: run scripts/fetch-models",
        dir.display()
    );
    std::env::set_var("HF_HUB_OFFLINE", "1");
    Whisper::load("tiny.en", &Device::Cpu).unwrap()
}

#[test]
fn a_word_after_a_long_pause_starts_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let before = speak(
        "The meeting will start in a moment. Please wait.",
        dir.path(),
        "a",
    );
    let after = speak("Thursday.", dir.path(), "b");
    let lead = 0.5;
    let pause = 4.0;
    let mut audio = vec![0f32; (lead * 16_000.0) as usize];
    audio.extend_from_slice(&before);
    let pause_start = audio.len() as f64 / 16_000.0;
    audio.extend(std::iter::repeat_n(0f32, (pause * 16_000.0) as usize));
    let pause_end = audio.len() as f64 / 16_000.0;
    audio.extend_from_slice(&after);
    audio.extend(std::iter::repeat_n(0f32, 8_000));

    let w = model();
    let opts = TranscribeOptions {
        language: Some("en".into()),
        word_timestamps: true,
        ..Default::default()
    };
    let t = w.transcribe(&audio, &opts).unwrap();
    let words: Vec<_> = t.segments.iter().flat_map(|s| &s.words).collect();
    assert!(words.len() >= 8, "too few words: {t:#?}");

    // Every word inside its segment, in order, with a sane duration.
    let mut prev_start = 0.0;
    for s in &t.segments {
        assert!(!s.words.is_empty(), "segment without words: {s:?}");
        for wd in &s.words {
            assert!(
                wd.start >= s.start - 0.011 && wd.end <= s.end + 0.011,
                "{wd:?} outside its segment {:.2}-{:.2}",
                s.start,
                s.end
            );
            assert!(wd.start <= wd.end && wd.end - wd.start < 3.0, "{wd:?}");
            assert!(wd.start >= prev_start, "{wd:?} before the previous word");
            assert!((0.0..=1.0).contains(&wd.probability));
            prev_start = wd.start;
        }
    }
    for wd in &words {
        eprintln!(
            "{:>7.2} {:>7.2} {:.3} {:?}",
            wd.start, wd.end, wd.probability, wd.word
        );
    }
    // The first word may reach back into the lead-in silence (Whisper
    // tends to open a window's first segment at 0.00, as faster-whisper
    // shows on the same audio), but it ends after the silence does.
    assert!(words[0].end > lead, "{:?}", words[0]);

    let norm = |s: &str| {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_lowercase()
    };
    let thursday = words
        .iter()
        .find(|w| norm(&w.word) == "thursday")
        .unwrap_or_else(|| panic!("no 'Thursday' in {:?}", t.text));
    assert!(
        thursday.start >= pause_end - 0.25,
        "'Thursday' starts at {:.2} s, before the pause ends at {pause_end:.2} s",
        thursday.start
    );
    assert!(thursday.start < pause_end + 1.0, "{thursday:?}");
    // The word before the pause starts before it. (Its end may reach into
    // the pause: Whisper closes the segment late there, and faster-whisper
    // times " wait." at 3.16-5.50 s on this audio too, as earshot does.)
    let i = words
        .iter()
        .position(|w| norm(&w.word) == "thursday")
        .unwrap();
    assert!(
        i > 0 && words[i - 1].start < pause_start,
        "{:?}",
        words[i - 1]
    );
}
