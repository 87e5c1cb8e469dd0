//! LLM benchmarks on the real GGUF models from `scripts/fetch-models`:
//! single-stream decoding, aggregate decoding at 1, 4 and 8 concurrent
//! sequences (continuous batching), and prompt prefill.
//!
//! Throughput is in generated (or prefilled) tokens: "elem/s" = tokens/s.
//! Run: `cargo bench --bench llm` (`EARSHOT_BENCH_LLM=gemma3-270m` for the
//! other model). Skipped, with a note, when the model is not installed.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use earshot_inference::llm::{
    generate_all, EngineOptions, GenRequest, Llm, SamplingParams, SeqStep,
};

const PROMPT: &str = "Write a long story about a lighthouse keeper and the sea.";
const TOKENS: usize = 64;

fn load() -> Option<(String, Llm)> {
    let name = std::env::var("EARSHOT_BENCH_LLM")
        .unwrap_or_else(|_| earshot_models::DEFAULT_LLM.to_owned());
    match earshot_models::resolve_llm(&name) {
        Ok(r) => Some((
            name,
            Llm::load(&r.gguf, r.tokenizer_json.as_deref(), &Device::Cpu).expect("model loads"),
        )),
        Err(e) => {
            eprintln!("skipping LLM benches: {name} not installed ({e}); run scripts/fetch-models");
            None
        }
    }
}

fn bench_decode(c: &mut Criterion) {
    let Some((name, llm)) = load() else { return };
    let prompt = llm.text_prompt(PROMPT).unwrap();
    let params = SamplingParams {
        max_new_tokens: TOKENS,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let mut g = c.benchmark_group(format!("llm_decode/{name}"));
    g.sample_size(10);
    for n in [1usize, 4, 8] {
        g.throughput(Throughput::Elements((n * TOKENS) as u64));
        g.bench_with_input(BenchmarkId::new("concurrent", n), &n, |b, &n| {
            b.iter(|| {
                let reqs = (0..n)
                    .map(|i| GenRequest {
                        prompt: prompt.clone(),
                        params: SamplingParams {
                            seed: i as u64,
                            ..params.clone()
                        },
                    })
                    .collect();
                let outs = generate_all(
                    &llm,
                    reqs,
                    EngineOptions {
                        max_batch: 8,
                        prefill_chunk: 512,
                    },
                    |_, _| {},
                );
                assert!(outs
                    .iter()
                    .all(|o| o.as_ref().is_ok_and(|o| o.tokens.len() == TOKENS)));
            })
        });
    }
    g.finish();
}

fn bench_prefill(c: &mut Criterion) {
    let Some((name, llm)) = load() else { return };
    let text = PROMPT.repeat(40);
    let mut ids = llm.text_prompt(&text).unwrap();
    ids.truncate(512);
    let mut g = c.benchmark_group(format!("llm_prefill/{name}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("512_tokens", |b| {
        b.iter(|| {
            let mut cache = llm.model.new_cache(ids.len()).unwrap();
            let mut steps = [SeqStep {
                tokens: &ids,
                cache: &mut cache,
                logits: true,
            }];
            llm.model.forward(&mut steps).unwrap().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_prefill);
criterion_main!(benches);
