//! The summarizer's engine: quantized GGUF LLMs on candle, decoded in
//! continuous batches.
//!
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
pub mod model;
mod q8;
pub mod sampling;
pub mod summarize;
pub mod template;
pub mod tokenizer;

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::Device;

pub use config::{Arch, LlmConfig};
pub use engine::{generate_all, EngineOptions, Event, FinishReason, GenOutput, GenRequest, Scheduler};
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
    max_context: usize,
}

impl Llm {
    /// Loads a GGUF file; `tokenizer_json` overrides the GGUF's vocabulary.
    pub fn load(path: &Path, tokenizer_json: Option<&Path>, device: &Device) -> Result<Self, InferenceError> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| InferenceError::Model(format!("{}: {e}", path.display())))?;
        let ct = gguf_file::Content::read(&mut file)
            .map_err(|e| InferenceError::Model(format!("{}: not a readable GGUF file: {e}", path.display())))?;
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
