//! The summarizer's engine: quantized GGUF LLMs on candle, decoded in
//! continuous batches.
//!
//! - [`gguf`]: the GGUF header reader (bounded; candle's panics on some files);
//! - [`config`]: hyper-parameters and the family switches (Llama, Qwen 2/3,
//!   Gemma 3) from the GGUF header;
//! - [`model`]: one forward pass over many sequences, each with its own KV cache;
//! - [`attn`]: attention over those caches (a CPU kernel and a tensor path);
//! - [`tokenizer`]: SentencePiece and byte-level BPE from the GGUF vocabulary;
//! - [`template`]: chat templates;
//! - [`sampling`]: greedy, temperature, top-k/top-p, repetition penalty;
//! - [`engine`]: the continuous-batching scheduler;
//! - [`summarize`]: prompts and map-reduce over long transcripts.

mod attn;
pub mod config;
pub mod engine;
pub mod gguf;
pub mod model;
pub mod sampling;
pub mod summarize;
pub mod template;
pub mod tokenizer;

use std::path::Path;

use candle_core::Device;

pub use config::{Arch, LlmConfig};
pub use engine::{
    generate_all, EngineOptions, Event, FinishReason, GenOutput, GenRequest, Scheduler,
};
pub use model::{LlmModel, SeqCache, SeqStep};
pub use sampling::{Sampler, SamplingParams};
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::LlmTokenizer;

use crate::error::InferenceError;

/// Tokens that end an assistant turn, by name, across families.
const END_OF_TURN: &[&str] = &[
    "<end_of_turn>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end|>",
    "<eos>",
    "</s>",
];

/// A loaded model with its tokenizer and chat template.
#[derive(Debug)]
pub struct Llm {
    pub model: LlmModel,
    pub tokenizer: LlmTokenizer,
    pub template: ChatTemplate,
    /// `general.name` from the GGUF, else the file stem.
    pub name: String,
    /// Whether the model was tuned to follow instructions (it ships a chat
    /// template); base models are prompted with plain text to continue.
    pub instruct: bool,
    stop_ids: Vec<u32>,
    /// Control tokens that are not turn ends (`<pad>`, `<bos>`, Gemma's
    /// `<unusedN>`…): never sampled, since no output should contain them.
    suppress_ids: Vec<u32>,
    max_context: usize,
}

impl Llm {
    /// Loads a GGUF file; `tokenizer_json` overrides the GGUF's vocabulary.
    pub fn load(
        path: &Path,
        tokenizer_json: Option<&Path>,
        device: &Device,
    ) -> Result<Self, InferenceError> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| InferenceError::Model(format!("{}: {e}", path.display())))?;
        let ct = gguf::read_content(&mut file).map_err(|e| match e {
            InferenceError::Model(m) => InferenceError::Model(format!("{}: {m}", path.display())),
            other => other,
        })?;
        let model = LlmModel::from_gguf(&ct, &mut file, device)?;
        let tokenizer = LlmTokenizer::from_gguf(&ct, tokenizer_json)?;
        if tokenizer.vocab_size() > model.vocab_size() {
            return Err(InferenceError::Model(format!(
                "tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                model.vocab_size()
            )));
        }
        let source = config::meta_str(&ct, "tokenizer.chat_template").ok();
        let tok_text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or("")
                .to_owned()
        };
        let template = ChatTemplate::new(
            source,
            model.config().arch,
            |t| tokenizer.token_to_id(t).is_some(),
            &tok_text(tokenizer.bos_id()),
            &tok_text(tokenizer.eos_id()),
        );
        let mut stop_ids: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        for t in END_OF_TURN {
            if let Some(id) = tokenizer.token_to_id(t) {
                if tokenizer.is_control(id) || Some(id) == tokenizer.eos_id() {
                    stop_ids.push(id);
                }
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let suppress_ids = (0..tokenizer.vocab_size() as u32)
            .filter(|&id| tokenizer.is_control(id) && stop_ids.binary_search(&id).is_err())
            .collect();
        let name = config::meta_str(&ct, "general.name")
            .map(str::to_owned)
            .unwrap_or_else(|_| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        let max_context = model.config().context_length;
        Ok(Self {
            instruct: source.is_some(),
            model,
            tokenizer,
            template,
            name,
            stop_ids,
            suppress_ids,
            max_context,
        })
    }

    /// Caps the context used per sequence (memory: see
    /// [`LlmConfig::kv_bytes_per_token`]); never above the model's own.
    pub fn set_max_context(&mut self, n: usize) {
        self.max_context = n.clamp(16, self.model.config().context_length);
    }

    /// Tokens one sequence may hold (prompt plus output).
    pub fn context_limit(&self) -> usize {
        self.max_context
    }

    pub fn is_stop_token(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Tokens masked out before sampling.
    pub fn suppressed_ids(&self) -> &[u32] {
        &self.suppress_ids
    }

    /// Renders a chat with the model's template and tokenizes it.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, InferenceError> {
        let text = self.template.render(messages)?;
        // Templates that write the BOS themselves must not get a second one.
        let bos_in_text = self
            .tokenizer
            .bos_id()
            .and_then(|b| self.tokenizer.id_to_token(b))
            .is_some_and(|b| !b.is_empty() && text.starts_with(b));
        self.tokenizer.encode(&text, !bos_in_text)
    }

    /// Tokenizes a plain completion prompt (with BOS when the model uses one).
    pub fn text_prompt(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        self.tokenizer.encode(text, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{load_tiny_llm, TinyLlm};

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Logits of the last token after feeding `tokens`, in `chunk`-sized steps.
    fn last_logits(llm: &Llm, tokens: &[u32], chunk: usize, path: attn::Path) -> Vec<f32> {
        let mut cache = llm.model.new_cache(tokens.len()).unwrap();
        let mut out = None;
        for (i, c) in tokens.chunks(chunk).enumerate() {
            let last = (i + 1) * chunk >= tokens.len();
            let mut steps = [SeqStep {
                tokens: c,
                cache: &mut cache,
                logits: last,
            }];
            out = llm.model.forward_with(&mut steps, path).unwrap();
        }
        out.unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn cache_and_kernel_agree_with_full_recomputation() {
        for (i, spec) in [
            TinyLlm::llama(),
            TinyLlm::gemma3(),
            TinyLlm::qwen2(),
            TinyLlm::qwen3(),
        ]
        .into_iter()
        .enumerate()
        {
            let dir = tempfile::tempdir().unwrap();
            // F32 weights: quantized activations (Q8 matmuls) turn 1-ulp
            // differences between the paths into whole quantization steps.
            let spec = TinyLlm {
                dtype: candle_core::quantized::GgmlDType::F32,
                ..spec
            };
            let llm = load_tiny_llm(dir.path(), spec, 7 + i as u64).unwrap();
            // 14 tokens: past the tiny Gemma's 6-token window.
            // 14 tokens, and 40+: the CPU path hands chunks of 32 rows or
            // more to the tensor path, so both halves of it are covered.
            for text in [
                "the team will send the press release on Monday and the launch date",
                &"the team will send the press release on Monday. ".repeat(4),
            ] {
                let toks = llm.text_prompt(text).unwrap();
                assert!(toks.len() > 10, "{}", toks.len());
                check_paths(&llm, &toks, spec.arch);
            }
        }
    }

    fn check_paths(llm: &Llm, toks: &[u32], arch: &str) {
        let full = last_logits(llm, toks, toks.len(), attn::Path::Generic);
        let full_cpu = last_logits(llm, toks, toks.len(), attn::Path::CpuKernel);
        let one_by_one = last_logits(llm, toks, 1, attn::Path::CpuKernel);
        let chunks = last_logits(llm, toks, 4, attn::Path::Generic);
        let scale = full.iter().fold(0f32, |a, x| a.max(x.abs()));
        for (name, other) in [
            ("cpu kernel", &full_cpu),
            ("one by one", &one_by_one),
            ("chunks of 4", &chunks),
        ] {
            let d = max_abs_diff(&full, other);
            assert!(
                d <= 1e-4 * scale.max(1.0),
                "{arch} ({} tokens): {name} differs by {d} (scale {scale})",
                toks.len()
            );
        }
    }

    #[test]
    fn sliding_window_changes_what_late_tokens_see() {
        // A Gemma with a huge window must differ from the 6-token one once the
        // sequence is longer than 6 tokens: proves the window is applied.
        let dir = tempfile::tempdir().unwrap();
        let small = load_tiny_llm(dir.path(), TinyLlm::gemma3(), 3).unwrap();
        let wide = load_tiny_llm(
            dir.path(),
            TinyLlm {
                sliding_window: 4096,
                ..TinyLlm::gemma3()
            },
            3,
        )
        .unwrap();
        let toks = small
            .text_prompt("the team will send the press release on Monday")
            .unwrap();
        let a = last_logits(&small, &toks[..4], 4, attn::Path::CpuKernel);
        let b = last_logits(&wide, &toks[..4], 4, attn::Path::CpuKernel);
        assert_eq!(a, b, "inside the window both see everything");
        let a = last_logits(&small, &toks, toks.len(), attn::Path::CpuKernel);
        let b = last_logits(&wide, &toks, toks.len(), attn::Path::CpuKernel);
        assert!(max_abs_diff(&a, &b) > 1e-4);
    }
}
