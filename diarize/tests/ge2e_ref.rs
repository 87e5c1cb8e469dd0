//! The native GE2E encoder (mel front end and LSTM) against Resemblyzer's
//! own Python (scripts/lib/diarize_ref_ge2e.py: `VoiceEncoder.embed_utterance`
//! on volume-normalised clips of pyannote's 30 s two-speaker sample, with
//! librosa's mel spectrogram), and the legacy PyTorch reader against the
//! tensors that checkpoint holds.
//!
//! By default the reference numbers come from the committed
//! `tests/data/ge2e_ref.json` (CI has no torch). With `EARSHOT_DIARIZE_PY`
//! set to a Python that has torch, librosa and Resemblyzer (see the
//! script), the test regenerates them live instead.
//!
//! The weights and the audio are not committed: without them the test fails
//! and says to run `scripts/fetch-models --only diarize --only pyannote-sample`.

use std::path::Path;

use candle_core::Device;
use earshot_diarize::ge2e::{self, Ge2e};
use earshot_diarize::EmbedModel;
use serde::Deserialize;

mod common;
use common::{cosine, models_dir, read_wav_pcm16, reference_json, require};

#[derive(Deserialize)]
struct Reference {
    mel_clip: usize,
    mel: Vec<Vec<f32>>,
    clips: Vec<Clip>,
}

#[derive(Deserialize)]
struct Clip {
    name: String,
    start_sample: usize,
    end_sample: usize,
    partials: usize,
    embedding: Vec<f32>,
}

fn load_reference(models: &Path) -> Reference {
    let text = reference_json(models, "diarize_ref_ge2e.py", "ge2e_ref.json");
    serde_json::from_str(&text).expect("parse reference JSON")
}

#[test]
fn ge2e_matches_resemblyzer() {
    let models = models_dir();
    let weights = models.join("diarize/ge2e-resemblyzer.pt");
    let wav = models.join("pyannote-sample/sample.wav");
    require(&weights);
    require(&wav);
    let (rate, audio) = read_wav_pcm16(&wav);
    assert_eq!(rate, 16_000);
    let reference = load_reference(&models);
    let clip_samples =
        |c: &Clip| -> &[f32] { &audio[c.start_sample..c.end_sample.min(audio.len())] };

    let model = Ge2e::load(&weights, &Device::Cpu).expect("load GE2E");
    assert_eq!(model.dimension(), 256);

    // The mel front end: librosa in float32 against f32 FFTs here; power
    // values span decades, so the comparison is relative to each frame's
    // largest band (a wrong window, padding or mel scale moves bands by
    // tens of percent).
    let c0 = &reference.clips[reference.mel_clip];
    let mut norm = ge2e::normalise_volume(clip_samples(c0));
    let starts = ge2e::partial_starts(norm.len());
    let end = (starts.last().unwrap() + ge2e::PARTIAL_FRAMES) * ge2e::HOP;
    norm.resize(end.max(norm.len()), 0.0);
    let mel = model.mel(&norm);
    let mut worst = 0f32;
    for (row, want) in mel.iter().zip(&reference.mel) {
        assert_eq!(want.len(), ge2e::N_MELS);
        let scale = want.iter().cloned().fold(0f32, f32::max).max(1e-12);
        for (a, b) in row.iter().zip(want) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    eprintln!(
        "mel: max |Δ| / frame peak over {} frames = {worst:.2e}",
        reference.mel.len()
    );
    assert!(
        worst < 1e-4,
        "mel differs from librosa by {worst} of a frame's peak"
    );

    // Embeddings: all clips in one call and one by one.
    let clips: Vec<&[f32]> = reference.clips.iter().map(clip_samples).collect();
    let all = model.embed(&clips).expect("embed");
    for (i, (c, got)) in reference.clips.iter().zip(&all).enumerate() {
        assert_eq!(
            ge2e::partial_starts(clips[i].len()).len(),
            c.partials,
            "{}",
            c.name
        );
        assert_eq!(got.len(), 256);
        let cos = cosine(got, &c.embedding);
        let max_abs = got
            .iter()
            .zip(&c.embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{:>12}: {} partials, cosine {cos:.7}, max |Δ| {max_abs:.2e}",
            c.name, c.partials
        );
        assert!(cos > 0.999_999, "{}: cosine {cos} to Resemblyzer's", c.name);
        assert!(max_abs < 1e-5, "{}: max |Δ| {max_abs}", c.name);
        let one = model.embed(&[clips[i]]).expect("embed one");
        assert!(
            cosine(&one[0], got) > 0.999_999,
            "{}: batched vs alone",
            c.name
        );
    }
}

#[test]
fn legacy_reader_refuses_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not-legacy.pt");
    std::fs::write(&p, b"PK\x03\x04 a zip, not a legacy checkpoint").unwrap();
    let err = earshot_diarize::pth::read_legacy(&p, None).unwrap_err();
    assert!(
        err.to_string().contains("not a legacy PyTorch file"),
        "{err}"
    );
    // Truncated after the magic number: an error, no panic.
    let models = models_dir();
    let weights = models.join("diarize/ge2e-resemblyzer.pt");
    require(&weights);
    let bytes = std::fs::read(&weights).unwrap();
    for cut in [15, 200, bytes.len() / 2, bytes.len() - 3] {
        let q = dir.path().join(format!("cut{cut}.pt"));
        std::fs::write(&q, &bytes[..cut]).unwrap();
        assert!(Ge2e::load(&q, &Device::Cpu).is_err(), "cut at {cut}");
    }
}
