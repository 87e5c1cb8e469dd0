//! Speech-to-text benchmarks: features, encoder batches, and whole
//! transcriptions on the real `tiny.en` weights from `scripts/fetch-models`.
//!
//! Throughput is reported in *audio seconds* ("elem/s" = audio-s per wall-s),
//! the unit operators size fleets in. Run: `cargo bench --bench speech`.
//! Model benches are skipped (with a note) when the weights are absent.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use earshot_inference::audio::{self, DecodeLimits};
use earshot_inference::mel::{MelExtractor, N_FRAMES};
use earshot_inference::whisper::{TranscribeOptions, Whisper};

fn noise(secs: f64) -> Vec<f32> {
    // A deterministic broadband signal; features cost the same for any input.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..(secs * 16_000.0) as usize)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn fixtures_dir() -> PathBuf {
    std::env::var_os("EARSHOT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fixtures"))
}

fn bench_mel(c: &mut Criterion) {
    let mut g = c.benchmark_group("mel");
    for secs in [30.0, 600.0] {
        let x = noise(secs);
        let ex = MelExtractor::new(80);
        g.throughput(Throughput::Elements(secs as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{secs}s")),
            &x,
            |b, x| b.iter(|| ex.compute(x)),
        );
    }
    g.finish();
}

fn bench_whisper(c: &mut Criterion) {
    let whisper = match Whisper::load("tiny.en", &Device::Cpu) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("skipping whisper benches: {e} (run scripts/fetch-models)");
            return;
        }
    };
    let mut g = c.benchmark_group("whisper_tiny_en");
    g.sample_size(10);
    for b in [1usize, 4] {
        let mel =
            Tensor::zeros((b, 80, N_FRAMES), candle_core::DType::F32, &Device::Cpu).expect("alloc");
        g.throughput(Throughput::Elements(30 * b as u64));
        g.bench_with_input(BenchmarkId::new("encode", b), &mel, |bench, mel| {
            bench.iter(|| whisper.model.encode(mel).expect("encode"))
        });
    }
    let sample = fixtures_dir().join("sample.wav");
    match audio::load_file(&sample, DecodeLimits::default()) {
        Ok(samples) => {
            let secs = samples.len() as f64 / 16_000.0;
            g.throughput(Throughput::Elements(secs.round() as u64));
            let opts = TranscribeOptions {
                language: Some("en".into()),
                ..Default::default()
            };
            g.bench_function("transcribe_sample", |b| {
                b.iter(|| whisper.transcribe(&samples, &opts).expect("transcribe"))
            });
            // Four copies at once: what batching across jobs buys.
            let four: Vec<&[f32]> = (0..4).map(|_| samples.as_slice()).collect();
            g.throughput(Throughput::Elements((4.0 * secs).round() as u64));
            g.bench_function("transcribe_sample_x4_batched", |b| {
                b.iter(|| {
                    whisper
                        .transcribe_batch(&four, &opts, None)
                        .into_iter()
                        .collect::<Result<Vec<_>, _>>()
                        .expect("transcribe")
                })
            });
        }
        Err(e) => eprintln!(
            "skipping transcribe benches: {}: {e} (run scripts/make-fixtures)",
            sample.display()
        ),
    }
    g.finish();
}

criterion_group!(benches, bench_mel, bench_whisper);
criterion_main!(benches);
