//! Summaries through Amazon Bedrock's Converse API, for a worker in the
//! platform's managed phase.
//!
//! The prompts and the map-reduce over long transcripts are the local
//! summarizer's own ([`earshot_inference::llm::summarize`]): the same stage
//! instructions as the user message, the same packing of segments into
//! chunks, the same levels of combining. Only the token counter (an
//! estimate; Bedrock has no tokenizer endpoint) and the generate step
//! (concurrent Converse calls, bounded) differ, so switching a worker from
//! `local` to `bedrock` changes the model, not the method. The billed token
//! counts come from Converse's `usage`, never from the estimate.

use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message, StopReason, SystemContentBlock,
};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::retry::RetryConfig;
use earshot_inference::llm::summarize::{
    chunk_budget_for, user_message, Generation, MapReduce, Stage, WIDEST_BODY,
};
use earshot_queue_adapter::job::SummaryRecord;
use futures_util::stream::{self, StreamExt};

use crate::error::{status_is_transient, transport, HttpResponse, ManagedError, Transport};

/// Amazon Nova Lite: cheap, current, 300k context. (Claude 3 and 3.5
/// Haiku are end-of-life on Bedrock.)
pub const DEFAULT_MODEL: &str = "amazon.nova-lite-v1:0";

/// The system prompt sent with every request unless configured otherwise.
/// The task itself is in the user message, exactly as the local model
/// gets it.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You write short, factual summaries of transcripts. Reply with the summary only.";

const SERVICE: &str = "bedrock";
const OP: &str = "Converse";

/// Estimated tokens of a text: a quarter of its characters, rounded up.
/// Only for sizing chunks: English averages about four characters per
/// token in the Nova, Claude and Llama tokenizers, and the context default
/// leaves a wide margin for languages that tokenize denser.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// How to call Bedrock.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// Model id (or inference profile id / ARN).
    pub model_id: String,
    /// `system` of every request; `None` sends none.
    pub system_prompt: Option<String>,
    /// Context tokens to plan chunks for. Well under the model's window
    /// (Nova Lite: 300k), because the count is an estimate and long
    /// prompts are slow; raise it for fewer, larger chunks.
    pub context_tokens: usize,
    /// `inferenceConfig.temperature`; `None` leaves the model's default.
    pub temperature: Option<f32>,
    /// Converse calls in flight at once for one level of one batch.
    pub concurrency: usize,
    /// Attempts per call, the SDK's standard retry (throttling, 5xx,
    /// timeouts) with jittered exponential backoff; what is still failing
    /// after them is a transient error for the worker to retry later.
    pub max_attempts: u32,
    /// First backoff of those retries.
    pub initial_backoff: Duration,
}

impl Default for BedrockConfig {
    fn default() -> Self {
        BedrockConfig {
            model_id: DEFAULT_MODEL.to_owned(),
            system_prompt: Some(DEFAULT_SYSTEM_PROMPT.to_owned()),
            context_tokens: 32_000,
            temperature: Some(0.0),
            concurrency: 4,
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
        }
    }
}

/// A finished summary, with what Bedrock billed for it.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockSummary {
    pub text: String,
    pub model: String,
    /// Chunks the transcript was split into (1 when it fit).
    pub chunks: usize,
    /// Rounds of calls (1 when it fit; 2+ for map-reduce).
    pub levels: usize,
    /// Billed input tokens over all calls (Converse `usage.inputTokens`).
    pub input_tokens: usize,
    /// Billed output tokens over all calls.
    pub output_tokens: usize,
    /// Converse calls made (after the SDK's own retries).
    pub requests: usize,
    pub seconds: f64,
}

impl BedrockSummary {
    /// The result record's summary: input tokens are its `prompt_tokens`,
    /// output tokens its `generated_tokens`.
    pub fn record(&self) -> SummaryRecord {
        SummaryRecord {
            text: self.text.clone(),
            model: self.model.clone(),
            chunks: self.chunks,
            levels: self.levels,
            prompt_tokens: self.input_tokens,
            generated_tokens: self.output_tokens,
        }
    }
}

impl From<BedrockSummary> for SummaryRecord {
    fn from(s: BedrockSummary) -> Self {
        s.record()
    }
}

/// Amazon Bedrock as earshot's summary backend.
pub struct BedrockSummarizer {
    client: aws_sdk_bedrockruntime::Client,
    config: BedrockConfig,
}

impl BedrockSummarizer {
    /// A summarizer on the standard AWS configuration (region,
    /// credentials, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
    pub async fn from_env(config: BedrockConfig) -> Self {
        let sdk = earshot_queue_adapter::aws_config().await;
        Self::new(&sdk, config)
    }

    /// A summarizer on an explicit SDK configuration, with the retry
    /// policy of `config`.
    pub fn new(sdk: &aws_config::SdkConfig, config: BedrockConfig) -> Self {
        let conf = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.max(1))
                    .with_initial_backoff(config.initial_backoff),
            )
            .build();
        Self::with_client(aws_sdk_bedrockruntime::Client::from_conf(conf), config)
    }

    /// A summarizer on a ready client (its own retry configuration).
    pub fn with_client(client: aws_sdk_bedrockruntime::Client, config: BedrockConfig) -> Self {
        BedrockSummarizer { client, config }
    }

    pub fn config(&self) -> &BedrockConfig {
        &self.config
    }

    /// Summarizes one transcript given as segments, in answers of at most
    /// `max_tokens`.
    pub async fn summarize(
        &self,
        segments: &[String],
        max_tokens: usize,
    ) -> Result<BedrockSummary, ManagedError> {
        self.summarize_many(&[segments.to_vec()], max_tokens)
            .await
            .pop()
            .unwrap_or_else(|| Err(ManagedError::Model("no summary produced".into())))
    }

    /// Summarizes several transcripts; each level's chunks of all of them
    /// are sent together, at most `concurrency` at a time. One result per
    /// transcript: one failing never fails the others.
    pub async fn summarize_many(
        &self,
        docs: &[Vec<String>],
        max_tokens: usize,
    ) -> Vec<Result<BedrockSummary, ManagedError>> {
        let overhead = estimate_tokens(self.config.system_prompt.as_deref().unwrap_or(""))
            + estimate_tokens(&user_message(Stage::WIDEST, WIDEST_BODY));
        let budget = match chunk_budget_for(self.config.context_tokens, overhead, max_tokens, None)
        {
            Ok(b) => b,
            Err(e) => return docs.iter().map(|_| Err(e.clone().into())).collect(),
        };
        let count = |s: &str| -> Result<usize, earshot_inference::InferenceError> {
            Ok(estimate_tokens(s))
        };
        let mut requests = vec![0usize; docs.len()];
        let mut mr = MapReduce::<ManagedError>::new(docs, budget);
        loop {
            let prompts = mr.next_round(&count);
            if prompts.is_empty() {
                break;
            }
            for p in &prompts {
                requests[p.doc] += 1;
            }
            let outputs: Vec<Result<Generation, ManagedError>> = stream::iter(prompts)
                .map(|p| async move {
                    self.converse(&user_message(p.stage, &p.body), max_tokens)
                        .await
                })
                .buffered(self.config.concurrency.max(1))
                .collect()
                .await;
            mr.finish_round(outputs);
        }
        mr.finish()
            .into_iter()
            .zip(requests)
            .map(|(r, requests)| {
                r.map(|s| BedrockSummary {
                    text: s.text,
                    model: self.config.model_id.clone(),
                    chunks: s.chunks,
                    levels: s.levels,
                    input_tokens: s.prompt_tokens,
                    output_tokens: s.generated_tokens,
                    requests,
                    seconds: s.seconds,
                })
            })
            .collect()
    }

    /// One Converse call: the configured system prompt, `user` as the only
    /// message, answers of at most `max_tokens`. Returns the text (all text
    /// blocks of the reply) and the billed usage.
    pub async fn converse(
        &self,
        user: &str,
        max_tokens: usize,
    ) -> Result<Generation, ManagedError> {
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(user.to_owned()))
            .build()
            .map_err(|e| ManagedError::failed(SERVICE, OP, e))?;
        let inference = InferenceConfiguration::builder()
            .max_tokens(i32::try_from(max_tokens).unwrap_or(i32::MAX))
            .set_temperature(self.config.temperature)
            .build();
        let mut op = self
            .client
            .converse()
            .model_id(&self.config.model_id)
            .messages(message)
            .inference_config(inference);
        if let Some(system) = &self.config.system_prompt {
            op = op.system(SystemContentBlock::Text(system.clone()));
        }
        let out = op.send().await.map_err(classify_converse)?;
        let text: String = out
            .output()
            .and_then(|o| o.as_message().ok())
            .map(|m| {
                m.content()
                    .iter()
                    .filter_map(|c| c.as_text().ok())
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("")
            })
            .unwrap_or_default();
        match out.stop_reason() {
            StopReason::EndTurn | StopReason::StopSequence => {}
            StopReason::MaxTokens => {
                tracing::debug!(model = %self.config.model_id, "summary cut at max tokens")
            }
            StopReason::ContentFiltered | StopReason::GuardrailIntervened => {
                tracing::warn!(model = %self.config.model_id, reason = %out.stop_reason().as_str(), "Bedrock filtered the summary")
            }
            other => {
                tracing::debug!(model = %self.config.model_id, reason = %other.as_str(), "unexpected stop reason")
            }
        }
        let (input, output) = out
            .usage()
            .map(|u| (u.input_tokens().max(0), u.output_tokens().max(0)))
            .unwrap_or((0, 0));
        Ok(Generation {
            text,
            prompt_tokens: input as usize,
            generated_tokens: output as usize,
        })
    }
}

/// Converse failures, after the SDK's own retries: throttling, an
/// unavailable or not-ready model, internal errors, model timeouts, 5xx and
/// transport failures are transient; a request Bedrock rejects
/// (`ValidationException`), no access (`AccessDeniedException`) and an
/// unknown model (`ResourceNotFoundException`, kind `model`) are permanent.
pub fn classify_converse(e: SdkError<ConverseError, HttpResponse>) -> ManagedError {
    match transport(&e) {
        Transport::Transient(m) => ManagedError::transient(SERVICE, OP, m),
        Transport::Construction(m) => ManagedError::failed(SERVICE, OP, m),
        Transport::Service(status) => {
            let msg = crate::error::sdk_message(&e);
            match e.into_service_error() {
                ConverseError::ThrottlingException(_)
                | ConverseError::ServiceUnavailableException(_)
                | ConverseError::ModelNotReadyException(_)
                | ConverseError::InternalServerException(_)
                | ConverseError::ModelTimeoutException(_)
                | ConverseError::ModelErrorException(_) => {
                    ManagedError::transient(SERVICE, OP, msg)
                }
                ConverseError::ResourceNotFoundException(_) => ManagedError::Model(msg),
                ConverseError::ValidationException(_) | ConverseError::AccessDeniedException(_) => {
                    ManagedError::failed(SERVICE, OP, msg)
                }
                _ if status_is_transient(status) => ManagedError::transient(SERVICE, OP, msg),
                _ => ManagedError::failed(SERVICE, OP, msg),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::types::error::{ThrottlingException, ValidationException};
    use aws_smithy_types::body::SdkBody;

    fn service_error(e: ConverseError, status: u16) -> SdkError<ConverseError, HttpResponse> {
        let raw = HttpResponse::new(status.try_into().expect("valid status"), SdkBody::empty());
        SdkError::service_error(e, raw)
    }

    #[test]
    fn converse_errors_are_classified() {
        let t = classify_converse(service_error(
            ConverseError::ThrottlingException(
                ThrottlingException::builder().message("slow down").build(),
            ),
            429,
        ));
        assert!(t.is_transient(), "{t}");
        let v = classify_converse(service_error(
            ConverseError::ValidationException(
                ValidationException::builder().message("bad").build(),
            ),
            400,
        ));
        assert!(!v.is_transient());
        assert_eq!(v.kind(), "managed");
    }

    #[test]
    fn token_estimate_is_a_quarter_of_the_characters() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("ééééé"), 2);
    }
}
