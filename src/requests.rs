//! The HTTP endpoint's request bodies, parsed: the multipart form of
//! `/v1/audio/transcriptions` and `/v1/process`, and the JSON of
//! `/v1/chat/completions` and `/v1/summarize`.
//!
//! Why a module of its own: these are the parsers of untrusted bytes in
//! `earshot serve`, and keeping them free of the server's state (only axum,
//! serde and a typed [`RequestError`]) lets the `http_request` fuzz target
//! compile this file as is (`fuzz/fuzz_targets/http_request.rs`) and drive
//! it with the same axum extractor the server uses.

use axum::extract::multipart::MultipartError;
use axum::extract::Multipart;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// A request body that cannot be used: the status to answer (400, or 413
/// for a body over the limit), the message and the offending parameter.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RequestError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) param: Option<&'static str>,
}

impl RequestError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        RequestError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: None,
        }
    }

    fn param(mut self, p: &'static str) -> Self {
        self.param = Some(p);
        self
    }
}

/// The multipart fields of a transcription request.
#[derive(Default)]
pub(crate) struct AudioForm {
    pub(crate) file: Option<(Vec<u8>, Option<String>)>,
    /// The uploaded file's name without its extension (Transcribe's
    /// `jobName` for `response_format=transcribe`).
    pub(crate) file_stem: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) language: Option<String>,
    pub(crate) prompt: Option<String>,
    pub(crate) temperature: f32,
    pub(crate) response_format: Option<String>,
    pub(crate) granularities: Vec<String>,
    pub(crate) max_words_per_cue: Option<usize>,
    pub(crate) max_tokens: Option<usize>,
    /// `vad=true` (or faster-whisper's name, `vad_filter`): transcribe
    /// only the speech.
    pub(crate) vad: bool,
    /// `diarize=true`: label speakers (implied by `response_format=diarized_json`
    /// and by any speaker count).
    pub(crate) diarize: bool,
    pub(crate) num_speakers: Option<usize>,
    pub(crate) min_speakers: Option<usize>,
    pub(crate) max_speakers: Option<usize>,
}

/// A form boolean: true/false, 1/0, yes/no, on/off (empty is false).
fn form_bool(name: &str, text: &str, param: &'static str) -> Result<bool, RequestError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(
            RequestError::bad(format!("{name} must be true or false (got {text:?})")).param(param),
        ),
    }
}

/// A speaker count: a whole number from 1 to 32.
fn form_speakers(text: &str, param: &'static str) -> Result<usize, RequestError> {
    text.trim()
        .parse()
        .ok()
        .filter(|n: &usize| (1..=32).contains(n))
        .ok_or_else(|| {
            RequestError::bad(format!("{param} must be a whole number from 1 to 32")).param(param)
        })
}

pub(crate) async fn read_form(mut mp: Multipart) -> Result<AudioForm, RequestError> {
    let mut f = AudioForm::default();
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let ext = field
                .file_name()
                .and_then(|n| n.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()));
            f.file_stem = field.file_name().map(|n| {
                let n = n.rsplit(['/', '\\']).next().unwrap_or(n);
                n.rsplit_once('.').map_or(n, |(stem, _)| stem).to_owned()
            });
            let bytes = field.bytes().await.map_err(multipart_error)?;
            f.file = Some((bytes.to_vec(), ext));
            continue;
        }
        let text = field.text().await.map_err(multipart_error)?;
        match name.as_str() {
            "model" => f.model = Some(text),
            "language" => f.language = Some(text).filter(|l| !l.is_empty()),
            "prompt" => f.prompt = Some(text).filter(|p| !p.is_empty()),
            "temperature" => {
                f.temperature = text
                    .parse()
                    .ok()
                    .filter(|t: &f32| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        RequestError::bad("temperature must be a number from 0 to 1")
                            .param("temperature")
                    })?
            }
            "response_format" => f.response_format = Some(text),
            "timestamp_granularities[]" | "timestamp_granularities" => f.granularities.push(text),
            "max_words_per_cue" => {
                f.max_words_per_cue = Some(
                    text.trim()
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or_else(|| {
                            RequestError::bad("max_words_per_cue must be a positive integer")
                                .param("max_words_per_cue")
                        })?,
                )
            }
            "vad" | "vad_filter" => f.vad = form_bool(&name, &text, "vad")?,
            "diarize" => f.diarize = form_bool(&name, &text, "diarize")?,
            "num_speakers" => f.num_speakers = Some(form_speakers(&text, "num_speakers")?),
            "min_speakers" => f.min_speakers = Some(form_speakers(&text, "min_speakers")?),
            "max_speakers" => f.max_speakers = Some(form_speakers(&text, "max_speakers")?),
            "max_tokens" => {
                f.max_tokens = Some(text.parse().map_err(|_| {
                    RequestError::bad("max_tokens must be a positive integer").param("max_tokens")
                })?)
            }
            _ => {} // Unknown fields are ignored, as OpenAI does.
        }
    }
    Ok(f)
}

fn multipart_error(e: MultipartError) -> RequestError {
    let status = e.status();
    RequestError {
        status: if status == StatusCode::PAYLOAD_TOO_LARGE {
            status
        } else {
            StatusCode::BAD_REQUEST
        },
        message: format!("reading the multipart body: {}", e.body_text()),
        param: None,
    }
}

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    pub(crate) model: Option<String>,
    pub(crate) messages: Vec<ChatMessageIn>,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) max_tokens: Option<usize>,
    #[serde(default)]
    pub(crate) max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub(crate) temperature: Option<f32>,
    #[serde(default)]
    pub(crate) top_p: Option<f32>,
    #[serde(default)]
    pub(crate) seed: Option<u64>,
    #[serde(default)]
    pub(crate) stop: Option<StopField>,
    #[serde(default)]
    pub(crate) n: Option<usize>,
}

#[derive(Deserialize)]
pub(crate) struct ChatMessageIn {
    pub(crate) role: String,
    pub(crate) content: ContentField,
}

/// OpenAI allows a string or an array of `{"type": "text", "text": ...}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ContentField {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub(crate) struct SummarizeRequest {
    /// The transcript: plain text or earshot's transcript JSON.
    pub(crate) text: String,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) max_tokens: Option<usize>,
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|e| RequestError::bad(format!("invalid JSON body: {e}")))
}
