//! The LLM engine on tiny random-weight GGUF files written by the test
//! through the same loading code as real models.

use candle_core::quantized::GgmlDType;
use earshot_inference::llm::summarize::{summarize, SummaryOptions};
use earshot_inference::llm::{
    generate_all, ChatMessage, EngineOptions, Event, FinishReason, GenRequest, Llm, SamplingParams,
    Scheduler,
};
use earshot_inference::testing::{load_tiny_llm, write_tiny_llm, TinyLlm};
use earshot_inference::InferenceError;

fn models() -> Vec<(tempfile::TempDir, Llm)> {
    [
        TinyLlm::llama(),
        TinyLlm::gemma3(),
        TinyLlm::qwen2(),
        TinyLlm::qwen3(),
        TinyLlm {
            dtype: GgmlDType::Q8_0,
            ..TinyLlm::llama()
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, spec)| {
        let dir = tempfile::tempdir().unwrap();
        let llm = load_tiny_llm(dir.path(), spec, 40 + i as u64).unwrap();
        // The family comes from the GGUF's general.architecture.
        assert_eq!(llm.model.config().arch.gguf_name(), spec.arch);
        (dir, llm)
    })
    .collect()
}

fn prompts(llm: &Llm) -> Vec<Vec<u32>> {
    [
        "the meeting",
        "the team will send the press release on Friday and the launch date is Monday",
        "a",
        "summary of the meeting. the launch date is on Monday, the team will send it",
        "in the",
    ]
    .iter()
    .map(|t| llm.text_prompt(t).unwrap())
    .collect()
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        max_new_tokens: n,
        ..SamplingParams::default()
    }
}

fn run(
    llm: &Llm,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    opts: EngineOptions,
) -> Vec<Vec<u32>> {
    let reqs = prompts
        .iter()
        .map(|p| GenRequest {
            prompt: p.clone(),
            params: params.clone(),
        })
        .collect();
    generate_all(llm, reqs, opts, |_, _| {})
        .into_iter()
        .map(|r| r.unwrap().tokens)
        .collect()
}

#[test]
fn batched_decoding_gives_the_same_tokens_as_one_at_a_time() {
    for (_dir, llm) in models() {
        let ps = prompts(&llm);
        // Long enough to cross the tiny Gemma's 6-token sliding window.
        let params = greedy(20);
        let one = run(
            &llm,
            &ps,
            &params,
            EngineOptions {
                max_batch: 1,
                prefill_chunk: 512,
            },
        );
        // All at once, with prompts fed in 3-token chunks interleaved with decoding.
        let batched = run(
            &llm,
            &ps,
            &params,
            EngineOptions {
                max_batch: 8,
                prefill_chunk: 3,
            },
        );
        // Two slots: sequences join as others finish (continuous batching).
        let joined = run(
            &llm,
            &ps,
            &params,
            EngineOptions {
                max_batch: 2,
                prefill_chunk: 7,
            },
        );
        assert_eq!(one, batched, "{}", llm.name);
        assert_eq!(one, joined, "{}", llm.name);
        assert!(one.iter().all(|t| !t.is_empty()), "{}", llm.name);
        // Random weights still give different continuations per prompt.
        assert_ne!(one[0], one[1], "{}", llm.name);
    }
}

#[test]
fn sampling_is_seeded_per_request_not_per_batch() {
    let (_dir, llm) = models().remove(0);
    let ps = prompts(&llm);
    let params = SamplingParams {
        // Random weights make peaked distributions: flatten them.
        temperature: 4.0,
        top_p: 0.95,
        top_k: 40,
        repeat_penalty: 1.1,
        seed: 11,
        max_new_tokens: 12,
        ..SamplingParams::default()
    };
    let one = run(
        &llm,
        &ps,
        &params,
        EngineOptions {
            max_batch: 1,
            prefill_chunk: 512,
        },
    );
    let batched = run(&llm, &ps, &params, EngineOptions::default());
    assert_eq!(one, batched);
    let other_seed = run(
        &llm,
        &ps,
        &SamplingParams {
            seed: 12,
            ..params.clone()
        },
        EngineOptions::default(),
    );
    assert_ne!(one, other_seed);
}

#[test]
fn stop_strings_tokens_and_length_end_generations() {
    let (_dir, llm) = models().remove(0);
    let p = llm.text_prompt("the meeting").unwrap();
    let free = generate_all(
        &llm,
        vec![GenRequest {
            prompt: p.clone(),
            params: greedy(16),
        }],
        EngineOptions::default(),
        |_, _| {},
    )
    .remove(0)
    .unwrap();
    assert_eq!(free.finish, FinishReason::Length);
    assert_eq!(free.tokens.len(), 16);
    // Stop at a piece of text the free run produced: output ends before it.
    let text = free.text.clone();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 6, "{text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = text.find(&stop).unwrap();
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ..greedy(16)
    };
    let mut streamed = String::new();
    let out = generate_all(
        &llm,
        vec![GenRequest { prompt: p, params }],
        EngineOptions::default(),
        |_, e| {
            if let Event::Token { text, .. } = e {
                streamed.push_str(text);
            }
        },
    )
    .remove(0)
    .unwrap();
    assert_eq!(out.finish, FinishReason::Stop);
    assert_eq!(out.text, text[..cut], "stop {stop:?}");
    // Streamed deltas never include the stop string.
    assert!(
        text[..cut].starts_with(&streamed),
        "{streamed:?} vs {:?}",
        &text[..cut]
    );
}

#[test]
fn bad_requests_are_typed_errors() {
    let (_dir, llm) = models().remove(0);
    let mut s = Scheduler::new(&llm, EngineOptions::default());
    let bad = |e: Result<u64, InferenceError>| matches!(e, Err(InferenceError::BadOption(_)));
    assert!(bad(s.submit(GenRequest {
        prompt: vec![],
        params: greedy(4)
    })));
    assert!(bad(s.submit(GenRequest {
        prompt: vec![2, 99_999],
        params: greedy(4)
    })));
    assert!(
        bad(s.submit(GenRequest {
            prompt: vec![2; 500],
            params: greedy(100)
        })),
        "context overflow"
    );
    assert!(bad(s.submit(GenRequest {
        prompt: vec![2],
        params: SamplingParams {
            temperature: f32::NAN,
            ..greedy(4)
        }
    })));
    assert!(s.is_idle());
    // A cancelled request leaves no trace.
    let id = s
        .submit(GenRequest {
            prompt: vec![2, 40],
            params: greedy(4),
        })
        .unwrap();
    assert!(s.cancel(id));
    assert!(s.is_idle());
}

#[test]
fn corrupt_and_foreign_files_fail_to_load_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    write_tiny_llm(&good, TinyLlm::llama(), 1).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text", b"this is not a model".to_vec()),
        ("truncated-header", bytes[..bytes.len().min(200)].to_vec()),
        ("truncated-tensors", bytes[..bytes.len() - 1000].to_vec()),
    ];
    for (name, data) in cases {
        let p = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&p, data).unwrap();
        let r = Llm::load(&p, None, &candle_core::Device::Cpu);
        assert!(matches!(r, Err(InferenceError::Model(_))), "{name}: {r:?}");
    }
    let missing = Llm::load(
        &dir.path().join("nope.gguf"),
        None,
        &candle_core::Device::Cpu,
    );
    assert!(matches!(missing, Err(InferenceError::Model(_))));
}

#[test]
fn tokenizer_round_trips_and_reads_special_tokens() {
    let (_dir, llm) = models().remove(1); // gemma3: no space prefix
    let t = &llm.tokenizer;
    let text = "the meeting is on Monday. Zürich!";
    let ids = t.encode(text, false).unwrap();
    assert_eq!(t.decode(&ids, true), text);
    // Gemma-style: no "▁" before the first word; whole words are single tokens.
    assert_eq!(t.id_to_token(ids[0]), Some("t"));
    let ids = t.encode(" the meeting", false).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(t.id_to_token(ids[0]), Some("▁the"));
    // Non-ASCII falls back to byte tokens.
    let z = t.encode("ü", false).unwrap();
    assert_eq!(z.len(), 2);
    // Special tokens written in text are single ids; BOS is added once.
    let chat = llm.chat_prompt(&[ChatMessage::new("user", "hi")]).unwrap();
    assert_eq!(chat[0], 2, "bos");
    assert_eq!(chat.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(chat[1], t.token_to_id("<start_of_turn>").unwrap());
    assert!(llm.is_stop_token(t.token_to_id("<end_of_turn>").unwrap()));
    assert!(llm.is_stop_token(1));
    // Llama-style vocabulary adds the space prefix.
    let (_d, llama) = models().remove(0);
    let ids = llama.tokenizer.encode("the", false).unwrap();
    assert_eq!(llama.tokenizer.id_to_token(ids[0]), Some("▁the"));
}

#[test]
fn long_transcripts_are_summarized_map_reduce_never_truncated() {
    // Gemma's turn markers are single tokens in the tiny vocabulary.
    let (_dir, mut llm) = models().remove(1);
    llm.instruct = true; // exercise the chat path on the tiny model
    llm.set_max_context(512);
    let segs: Vec<String> = (0..40)
        .map(|i| format!("the team will send the press release on Monday {i}."))
        .collect();
    // Random weights repeat one token greedily; sample for varied text.
    let opts = SummaryOptions {
        max_tokens: 24,
        sampling: SamplingParams {
            temperature: 4.0,
            seed: 5,
            ..SamplingParams::default()
        },
        ..SummaryOptions::default()
    };
    let s = summarize(&llm, &segs, &opts).unwrap();
    let total: usize = segs
        .iter()
        .map(|s| llm.tokenizer.encode(s, false).unwrap().len())
        .sum();
    assert!(s.chunks >= 2, "{s:?}");
    assert!(s.levels >= 2, "{s:?}");
    // Every transcript token went into some chunk's prompt.
    assert!(
        s.prompt_tokens > total,
        "{} prompt tokens for {total} transcript tokens",
        s.prompt_tokens
    );
    // Short transcripts take one pass.
    let short = summarize(&llm, &segs[..2], &opts).unwrap();
    assert_eq!((short.chunks, short.levels), (1, 1));
    // Empty transcripts and impossible budgets are input errors.
    assert!(matches!(
        summarize(&llm, &[], &opts),
        Err(InferenceError::BadOption(_))
    ));
    let huge = SummaryOptions {
        max_tokens: 150,
        ..SummaryOptions::default()
    };
    assert!(matches!(
        summarize(&llm, &segs, &huge),
        Err(InferenceError::BadOption(_))
    ));
}
