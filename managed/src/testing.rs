//! Test support (the `testing` feature; not part of the API).
//!
//! - [`ConverseStub`]: a small HTTP server that answers Bedrock's Converse
//!   route (`POST /model/{modelId}/converse`) on loopback. **It is a stub,
//!   not the service**: no test server implements Converse (moto has only
//!   `invoke_model`), so this one checks what earshot sends (model id in
//!   the path, messages, system prompt, `inferenceConfig.maxTokens`),
//!   records it, and answers in Converse's documented response shape with
//!   `usage`, a short deterministic summary, or the error a test asks for.
//!   Point the SDK at it with `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`.
//! - [`put_transcript`] and [`TRANSCRIBE_FIXTURE`]: moto runs Transcribe
//!   jobs but writes no transcript, so tests put one (in Transcribe's real
//!   output shape) where the job's `TranscriptFileUri` will point;
//!   [`speaker_labelled`] gives it the speaker labels Transcribe adds when
//!   asked to (`ShowSpeakerLabels`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use earshot_queue_adapter::{Location, Store};

use crate::transcribe::{job_name, output_key};

/// A realistic Transcribe output document (string times, punctuation items
/// without times, `audio_segments`, two sentences): the committed fixture
/// `managed/tests/fixtures/transcribe-output.json`.
pub const TRANSCRIBE_FIXTURE: &str = include_str!("../tests/fixtures/transcribe-output.json");

/// A Transcribe output (such as [`TRANSCRIBE_FIXTURE`]) as Transcribe
/// writes it with `ShowSpeakerLabels`: the words of the first
/// `audio_segments` entry by `spk_0`, the rest by `spk_1`, on the items
/// and as `results.speaker_labels` turns. Panics on a document without
/// two audio segments (test data).
pub fn speaker_labelled(output: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(output).unwrap();
    let results = &mut v["results"];
    let second_start: f64 = results["audio_segments"][1]["start_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut turns: Vec<serde_json::Value> = Vec::new();
    for item in results["items"].as_array_mut().unwrap() {
        let Some(start) = item["start_time"].as_str().map(str::to_owned) else {
            continue; // punctuation: no time, no speaker
        };
        let spk = if start.parse::<f64>().unwrap() < second_start {
            "spk_0"
        } else {
            "spk_1"
        };
        item["speaker_label"] = spk.into();
        let end = item["end_time"].clone();
        turns.push(serde_json::json!({
            "start_time": start, "end_time": end, "speaker_label": spk,
            "items": [{"start_time": start, "end_time": end, "speaker_label": spk}],
        }));
    }
    results["speaker_labels"] = serde_json::json!({
        "channel_label": "ch_0", "speakers": 2, "segments": turns,
    });
    v.to_string()
}

/// Puts a transcript document where the Transcribe job of `job_id` writes
/// its output (`s3://<bucket>/<prefix><earshot-job id>.json`, which is also
/// where moto's `TranscriptFileUri` points). Returns that location.
pub async fn put_transcript(
    store: &Store,
    bucket: &str,
    prefix: &str,
    job_id: &str,
    json: &[u8],
) -> Result<Location, earshot_queue_adapter::QueueError> {
    let loc = Location::S3 {
        bucket: bucket.to_owned(),
        key: output_key(prefix, &job_name(job_id)),
    };
    store.put(&loc, json.to_vec(), "application/json").await?;
    Ok(loc)
}

/// One Converse request the stub accepted.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The model id from the path, percent-decoded.
    pub model_id: String,
    /// The whole JSON body.
    pub body: serde_json::Value,
    /// `system[].text`.
    pub system: Vec<String>,
    /// The text of the first user message.
    pub user_text: String,
    /// `inferenceConfig.maxTokens`.
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Clone)]
struct Rejection {
    status: u16,
    error_type: String,
    message: String,
}

#[derive(Default)]
struct State {
    requests: AtomicUsize,
    rejections: Mutex<VecDeque<Rejection>>,
    recorded: Mutex<Vec<RecordedRequest>>,
    expect_model: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Converse stub on a free loopback port, served from its own thread (so
/// it works from sync and async tests alike); stopped on drop.
pub struct ConverseStub {
    port: u16,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ConverseStub {
    /// Starts the stub on `127.0.0.1:<free port>`.
    pub fn start() -> std::io::Result<ConverseStub> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let app_state = state.clone();
        std::thread::Builder::new()
            .name(format!("converse-stub-{port}"))
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = axum::Router::new().fallback(
                        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                            let state = app_state.clone();
                            async move { handle(&state, method, uri, headers, body) }
                        },
                    );
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                })
            })?;
        Ok(ConverseStub {
            port,
            state,
            stop: Some(stop),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the value for
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests received, including rejected ones.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The requests that were answered with a summary, in arrival order.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorded).clone()
    }

    /// Answers the next `n` requests with HTTP 429 `ThrottlingException`.
    pub fn throttle_next(&self, n: usize) {
        for _ in 0..n {
            self.reject_next(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            );
        }
    }

    /// Answers the next request (after any already queued rejections) with
    /// this error, e.g. `(400, "ValidationException", ...)` or
    /// `(503, "ServiceUnavailableException", ...)`.
    pub fn reject_next(&self, status: u16, error_type: &str, message: &str) {
        lock(&self.state.rejections).push_back(Rejection {
            status,
            error_type: error_type.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Rejects requests for any other model id with a
    /// `ValidationException`, as Bedrock does for an invalid identifier.
    pub fn expect_model(&self, model_id: &str) {
        *lock(&self.state.expect_model) = Some(model_id.to_owned());
    }
}

impl Drop for ConverseStub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn error(status: u16, error_type: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [
            ("content-type", "application/json"),
            ("x-amzn-errortype", error_type),
        ],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn invalid(message: String) -> Response {
    error(400, "ValidationException", &message)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the request as Converse would, then answers it.
fn handle(state: &State, method: Method, uri: Uri, _headers: HeaderMap, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = lock(&state.rejections).pop_front() {
        return error(r.status, &r.error_type, &r.message);
    }
    let path = uri.path();
    let Some(model_id) = path
        .strip_prefix("/model/")
        .and_then(|p| p.strip_suffix("/converse"))
        .map(percent_decode)
        .filter(|m| !m.is_empty() && !m.contains('/'))
    else {
        return error(
            404,
            "UnknownOperationException",
            &format!("no route {path}"),
        );
    };
    if method != Method::POST {
        return error(405, "UnknownOperationException", "Converse is POST");
    }
    if let Some(expected) = lock(&state.expect_model).as_deref() {
        if expected != model_id {
            return invalid(format!(
                "The provided model identifier is invalid: {model_id} (expected {expected})"
            ));
        }
    }
    let body: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(format!("the body is not JSON: {e}")),
    };
    let texts = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|b| b.get("text")?.as_str().map(str::to_owned))
            .collect()
    };
    let Some(messages) = body.get("messages").and_then(|m| m.as_array()) else {
        return invalid("messages: required array".into());
    };
    let mut user_text = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(|r| r.as_str());
        if !matches!(role, Some("user") | Some("assistant")) {
            return invalid(format!("messages.{i}.role must be user or assistant"));
        }
        match m.get("content").and_then(texts) {
            Some(t) if !t.is_empty() => {
                if i == 0 && role == Some("user") {
                    user_text = Some(t.join(""));
                }
            }
            _ => return invalid(format!("messages.{i}.content must hold text blocks")),
        }
    }
    let Some(user_text) = user_text else {
        return invalid("A conversation must start with a user message.".into());
    };
    let system = match body.get("system") {
        None => Vec::new(),
        Some(s) => match texts(s) {
            Some(t) => t,
            None => return invalid("system must hold text blocks".into()),
        },
    };
    let max_tokens = match body.get("inferenceConfig").and_then(|c| c.get("maxTokens")) {
        None => None,
        Some(v) => match v.as_u64().filter(|&n| n >= 1) {
            Some(n) => Some(n),
            None => return invalid("inferenceConfig.maxTokens must be at least 1".into()),
        },
    };
    // A short, deterministic "summary": what part it was, and how long.
    let chunk = user_text.split_once("\n\n").map_or("", |(_, b)| b);
    let first: Vec<&str> = chunk.split_whitespace().take(6).collect();
    let reply = format!(
        "Stub summary of {} words: {}.",
        chunk.split_whitespace().count(),
        first.join(" ")
    );
    let input_tokens =
        (system.iter().map(|s| s.len()).sum::<usize>() + user_text.len()).div_ceil(4);
    let output_tokens = reply.split_whitespace().count();
    lock(&state.recorded).push(RecordedRequest {
        model_id,
        body,
        system,
        user_text,
        max_tokens,
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::json!({
            "output": {"message": {"role": "assistant", "content": [{"text": reply}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens
            },
            "metrics": {"latencyMs": 1}
        })
        .to_string(),
    )
        .into_response()
}
