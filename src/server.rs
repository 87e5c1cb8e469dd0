//! `earshot serve`: the engines over HTTP. OpenAI-compatible endpoints
//! (`/v1/audio/transcriptions`, `/v1/chat/completions`, `/v1/models`),
//! earshot's own (`/v1/summarize`, `/v1/process`), probes and Prometheus
//! metrics. Requests go through the same [`Batchers`] as the queue worker,
//! so concurrent requests share batches.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use earshot_inference::audio::{self, AudioError, DecodeLimits};
use earshot_inference::error::InferenceError;
use earshot_inference::llm::engine::FinishReason;
use earshot_inference::llm::{ChatMessage, SamplingParams};
use earshot_inference::whisper::format::{OutputFormat, RenderOptions};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::batcher::{BatchError, Batchers, GenEvent, SpeechJob, SummaryJob};
use crate::engines::EngineArgs;
use crate::formats::{self, needs_words, Format};
use crate::probes::{self, Probes};
use crate::requests::{
    json_body, read_form, AudioForm, ChatRequest, ContentField, RequestError, StopField,
    SummarizeRequest,
};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "EARSHOT_BIND", default_value = "0.0.0.0:8000")]
    bind: SocketAddr,
    /// Accepted bearer API keys (repeatable or comma-separated). None: no
    /// authentication.
    #[arg(
        long = "api-key",
        env = "EARSHOT_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// File of accepted API keys, one per line or comma-separated (blank
    /// lines and `#` comments ignored), read once at start, in addition to `--api-key`:
    /// mount a Kubernetes Secret here rather than passing keys in the
    /// environment. A file without any key is an error (it would silently
    /// turn authentication off).
    #[arg(long, env = "EARSHOT_API_KEY_FILE")]
    api_key_file: Option<std::path::PathBuf>,
    /// Largest request body, bytes (413 above).
    #[arg(long, env = "EARSHOT_MAX_BODY_BYTES", default_value_t = 100 << 20)]
    max_body_bytes: usize,
    /// Longest audio per request, seconds (413 above).
    #[arg(long, env = "EARSHOT_MAX_AUDIO_SECONDS", default_value_t = 3600.0)]
    max_audio_seconds: f64,
    /// Seconds before a request is answered 504.
    #[arg(long, env = "EARSHOT_REQUEST_TIMEOUT", default_value_t = 600)]
    request_timeout: u64,
    /// Requests that may wait per engine; beyond it, 503 with Retry-After.
    #[arg(long, env = "EARSHOT_QUEUE_CAPACITY", default_value_t = 64)]
    queue_capacity: usize,
    /// Seconds to finish in-flight requests after SIGTERM.
    #[arg(long, env = "EARSHOT_SHUTDOWN_GRACE", default_value_t = 30.0)]
    shutdown_grace: f64,
    /// Also run the queue worker in this process, on the same models and
    /// batchers (its settings are `earshot work`'s).
    #[arg(long, env = "EARSHOT_WORKER")]
    worker: bool,
    #[command(flatten)]
    worker_options: crate::worker::WorkerOptions,
    #[command(flatten)]
    engines: EngineArgs,
}

/// Shared request state.
struct AppState {
    batchers: Batchers,
    api_keys: Vec<Vec<u8>>,
    max_audio_seconds: f64,
    default_max_tokens: usize,
    /// `/health`, `/ready`, `/metrics`; its `stop` token is cancelled at
    /// SIGTERM.
    probes: Arc<Probes>,
}

type Shared = Arc<AppState>;

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let mut api_keys: Vec<Vec<u8>> = args
        .api_keys
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    if let Some(path) = &args.api_key_file {
        let from_file = read_api_key_file(path)?;
        tracing::info!(path = %path.display(), keys = from_file.len(), "API keys read");
        api_keys.extend(from_file);
    }
    let batchers = args.engines.start(args.queue_capacity)?;
    let probes = Probes::new(Some(batchers.clone()), CancellationToken::new())?;
    let state = Arc::new(AppState {
        batchers,
        api_keys,
        max_audio_seconds: args.max_audio_seconds,
        default_max_tokens: args.engines.llm.max_tokens,
        probes,
    });
    let rt = crate::async_runtime()?;
    let result = rt.block_on(serve(args, state));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(args: ServeArgs, state: Shared) -> Result<ExitCode> {
    let batchers = state.batchers.clone();
    let stop = state.probes.stop.clone();
    let app = router(
        state,
        args.max_body_bytes,
        Duration::from_secs(args.request_timeout),
    );
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    probes::announce(format_args!("listening on {addr}"));
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        crate::worker::wait_for_signal().await;
        tracing::info!("shutdown requested: draining in-flight requests");
        signal_stop.cancel();
    });
    let grace = Duration::from_secs_f64(args.shutdown_grace.max(0.0));
    let worker = args.worker.then(|| {
        let ctx = crate::worker::WorkerContext {
            batchers: Some(batchers),
            shutdown_grace: args.shutdown_grace,
            max_audio_seconds: args.max_audio_seconds,
            stop: stop.clone(),
        };
        let max_batch = args.engines.max_batch();
        let opts = args.worker_options;
        tokio::spawn(async move { crate::worker::work(&opts, ctx, max_batch).await })
    });
    let drained = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        drained.cancelled().await;
    });
    tokio::select! {
        r = server => r.context("serving")?,
        _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("grace period over with requests still running");
        }
    }
    if let Some(w) = worker {
        // The worker bounds its own drain by the same grace period.
        match w.await.context("worker task")? {
            // The engine the HTTP routes share is stuck too: exit for a
            // restart (the worker already stopped the server).
            Err(e) if e.is::<crate::worker::EngineStalled>() => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(crate::worker::EXIT_ENGINE_STALLED));
            }
            r => r?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn router(state: Shared, max_body: usize, timeout: Duration) -> Router {
    let api = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/summarize", post(summarize))
        .route("/v1/process", post(process))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let probes = probes::router(state.probes.clone());
    Router::new()
        .merge(api)
        .route("/openapi.json", get(openapi))
        // The planner needs no engine and no key: prices and arithmetic.
        .merge(crate::plan::routes())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such route").into_response()
        })
        .with_state(state)
        .merge(probes)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |req, next| {
            refuse_large(req, next, max_body)
        }))
        .layer(middleware::from_fn(move |req, next| {
            with_timeout(req, next, timeout)
        }))
        .layer(middleware::from_fn(track))
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn param(mut self, p: &'static str) -> Self {
        self.param = Some(p);
        self
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError {
            status: e.status,
            message: e.message,
            param: e.param,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "invalid_request_error",
            429 | 503 => "server_busy",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.status.as_u16().to_string(),
        }});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Inference(e) => e.into(),
            BatchError::Busy(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("{e}: retry shortly"),
                param: None,
                retry_after: Some(1),
            },
            BatchError::Unavailable(m) => ApiError::bad(m).param("model"),
            BatchError::Stopped(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                param: None,
                retry_after: Some(5),
            },
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        match &e {
            InferenceError::Audio(a) if matches!(**a, AudioError::TooLong { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).param("file")
            }
            InferenceError::Audio(_) => ApiError::bad(e.to_string()).param("file"),
            InferenceError::BadOption(_) => ApiError::bad(e.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// The keys in an `--api-key-file`: one per line (or comma-separated, as
/// `EARSHOT_API_KEYS` takes them), trimmed; blank lines and lines starting
/// with `#` skipped. Errors name the file, never a key.
fn read_api_key_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the API key file {}", path.display()))?;
    let keys: Vec<Vec<u8>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| k.as_bytes().to_vec())
        .collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "the API key file {} holds no key (one per line; # starts a comment)",
        path.display()
    );
    Ok(keys)
}

/// A body that is not multipart at all (wrong Content-Type, no boundary):
/// the same JSON error body as every other 4xx, not axum's plain text.
fn multipart_rejection(e: MultipartRejection) -> ApiError {
    ApiError::new(e.status(), e.body_text()).param("file")
}

/// Bearer API keys, compared in constant time.
async fn require_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().as_bytes().to_vec());
    let ok = match given {
        Some(k) => state
            .api_keys
            .iter()
            .fold(false, |acc, key| acc | constant_time_eq(key, &k)),
        None => false,
    };
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key (Authorization: Bearer ...)",
        )
        .into_response()
    }
}

/// Equal-length comparison whose time does not depend on where the bytes
/// differ (length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Answers 413 from the headers alone when the declared body is over the
/// limit, before reading any of it (bodies without a length are cut off by
/// `DefaultBodyLimit` while being read).
async fn refuse_large(req: Request, next: Next, max: usize) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {n} bytes; the limit is {max}"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

async fn with_timeout(req: Request, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Requests by route and status, and latency.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        // Unmatched paths share one label: no cardinality from scanners.
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let t = Instant::now();
    metrics::gauge!("earshot_http_requests_in_flight").increment(1.0);
    let resp = next.run(req).await;
    metrics::gauge!("earshot_http_requests_in_flight").decrement(1.0);
    let status = resp.status().as_u16().to_string();
    metrics::counter!("earshot_http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("earshot_http_request_duration_seconds", "route" => route)
        .record(t.elapsed().as_secs_f64());
    resp
}

/// The `method` label: the standard methods by name, anything else (any
/// token is a valid HTTP method) as "other", so that a client inventing
/// methods cannot grow the metric set (found by scripts/soak).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn models(State(state): State<Shared>) -> Json<Value> {
    let info = &state.batchers.info;
    let created = now_s();
    let mut data: Vec<Value> = info
        .whisper_models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": created, "owned_by": "earshot"}))
        .collect();
    if let Some(m) = &info.llm_model {
        data.push(json!({"id": m, "object": "model", "created": created, "owned_by": "earshot"}));
    }
    Json(json!({"object": "list", "data": data}))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decodes the uploaded file and transcribes it through the batcher.
async fn transcribe_form(
    state: &Shared,
    form: &mut AudioForm,
    word_timestamps: bool,
) -> Result<earshot_inference::whisper::Transcript, ApiError> {
    let (bytes, ext) = form
        .file
        .take()
        .ok_or_else(|| ApiError::bad("the multipart field `file` is required").param("file"))?;
    let model = form
        .model
        .clone()
        .filter(|m| m != "whisper-1" && !m.is_empty());
    if let Some(m) = &model {
        if !state.batchers.info.whisper_models.contains(m) {
            return Err(ApiError::bad(format!(
                "model {m:?} is not served here (serving: {})",
                state.batchers.info.whisper_models.join(", ")
            ))
            .param("model"));
        }
    }
    // OpenAI's diarized response needs speakers: asking for it asks for them.
    let diarized_format = form.response_format.as_deref() == Some("diarized_json");
    let diarize = crate::diarization::speaker_options(
        form.diarize || diarized_format,
        form.num_speakers,
        form.min_speakers,
        form.max_speakers,
    )
    .map_err(|e| ApiError::bad(e.to_string()).param("num_speakers"))?;
    let limits = DecodeLimits {
        max_duration_s: Some(state.max_audio_seconds),
    };
    let samples =
        tokio::task::spawn_blocking(move || audio::load_bytes(bytes, ext.as_deref(), limits))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::from(InferenceError::from(e)))?;
    let mut ticket = state
        .batchers
        .transcribe(
            SpeechJob {
                samples,
                model,
                language: form.language.clone(),
                prompt: form.prompt.clone(),
                temperature: form.temperature,
                word_timestamps,
                vad: form.vad,
                diarize,
            },
            false,
        )
        .await?;
    Ok(ticket.result().await?)
}

/// What a transcription request asks to get back.
#[derive(Debug, PartialEq)]
struct Wanted {
    format: Format,
    render: RenderOptions,
    /// Asked for (`timestamp_granularities[]=word`), or implied by the
    /// format (`transcribe`) or by `max_words_per_cue`.
    word_timestamps: bool,
}

/// Checks `response_format`, `timestamp_granularities[]` and
/// `max_words_per_cue` together. As OpenAI's API: granularities are
/// `segment` and `word`, and `word` needs `response_format=verbose_json`
/// (or earshot's `transcribe`, which is made of words); segments are always
/// returned. `max_words_per_cue` is for `srt` and `vtt`.
fn wanted(
    response_format: Option<&str>,
    granularities: &[String],
    max_words_per_cue: Option<usize>,
) -> Result<Wanted, ApiError> {
    let name = response_format.unwrap_or("json");
    let format: Format = name.parse().map_err(|_| {
        ApiError::bad(format!(
            "response_format {name:?}: use one of {}",
            formats::FORMAT_NAMES
        ))
        .param("response_format")
    })?;
    let mut word = false;
    for g in granularities {
        match g.as_str() {
            "segment" => {}
            "word" => word = true,
            _ => {
                return Err(ApiError::bad(format!(
                    "timestamp_granularities[] {g:?}: use \"segment\" or \"word\""
                ))
                .param("timestamp_granularities"))
            }
        }
    }
    if word
        && !matches!(
            format,
            Format::Whisper(OutputFormat::VerboseJson) | Format::Transcribe
        )
    {
        return Err(ApiError::bad(format!(
            "timestamp_granularities[]=word requires response_format=verbose_json (got {name:?})"
        ))
        .param("timestamp_granularities"));
    }
    if max_words_per_cue.is_some() && !format.is_captions() {
        return Err(ApiError::bad(format!(
            "max_words_per_cue applies to response_format srt and vtt (got {name:?})"
        ))
        .param("max_words_per_cue"));
    }
    let render = RenderOptions { max_words_per_cue };
    Ok(Wanted {
        format,
        word_timestamps: word || needs_words(&[format], &render),
        render,
    })
}

async fn transcriptions(
    State(state): State<Shared>,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mp = mp.map_err(multipart_rejection)?;
    let mut form = read_form(mp).await?;
    let want = wanted(
        form.response_format.as_deref(),
        &form.granularities,
        form.max_words_per_cue,
    )?;
    let t = transcribe_form(&state, &mut form, want.word_timestamps).await?;
    let job_name = form.file_stem.as_deref().unwrap_or("transcription");
    let body = formats::render(&t, want.format, job_name, &want.render);
    Ok(([(header::CONTENT_TYPE, want.format.content_type())], body).into_response())
}

async fn chat_completions(
    State(state): State<Shared>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ChatRequest = json_body(&body)?;
    if req.n.unwrap_or(1) != 1 {
        return Err(ApiError::bad("only n = 1 is supported").param("n"));
    }
    if req.messages.is_empty() {
        return Err(ApiError::bad("messages must not be empty").param("messages"));
    }
    let prompts = state.batchers.prompts()?;
    let name = state.batchers.info.llm_model.clone().unwrap_or_default();
    prompts
        .check_model(req.model.as_deref())
        .map_err(|e| ApiError::from(e).param("model"))?;
    let messages: Vec<ChatMessage> = req
        .messages
        .iter()
        .map(|m| ChatMessage {
            role: m.role.clone(),
            content: match &m.content {
                ContentField::Text(t) => t.clone(),
                ContentField::Parts(parts) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
        })
        .collect();
    let prompt = prompts.chat(&messages)?;
    let params = SamplingParams {
        temperature: req.temperature.unwrap_or(1.0),
        top_p: req.top_p.unwrap_or(1.0),
        seed: req.seed.unwrap_or_else(now_s),
        max_new_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(state.default_max_tokens)
            .max(1),
        stop: match req.stop {
            Some(StopField::One(s)) => vec![s],
            Some(StopField::Many(v)) => v,
            None => Vec::new(),
        },
        ..SamplingParams::default()
    };
    let prompt_tokens = prompt.len();
    let mut events = state.batchers.generate(prompt, params)?;
    let id = format!("chatcmpl-{}", uuid_like());
    let created = now_s();
    if !req.stream {
        let mut text = String::new();
        while let Some(ev) = events.recv().await {
            match ev {
                GenEvent::Text(t) => text.push_str(&t),
                GenEvent::Done(out) => return Ok(Json(json!({
                    "id": id, "object": "chat.completion", "created": created, "model": name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                                 "finish_reason": finish(out.finish)}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out.tokens.len(),
                              "total_tokens": prompt_tokens + out.tokens.len()},
                }))
                .into_response()),
                GenEvent::Failed(e) => return Err(e.into()),
            }
        }
        return Err(BatchError::Stopped("llm").into());
    }
    let chunk = move |delta: Value, reason: Option<&str>| {
        SseEvent::default().data(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})
            .to_string(),
        )
    };
    let stream = async_stream_events(events, chunk);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Turns generation events into OpenAI's chunk stream, ending with `[DONE]`.
fn async_stream_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<GenEvent>,
    chunk: impl Fn(Value, Option<&str>) -> SseEvent + Send + 'static,
) -> impl tokio_stream::Stream<Item = Result<SseEvent, std::convert::Infallible>> + Send {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        if tx
            .send(chunk(json!({"role": "assistant", "content": ""}), None))
            .is_err()
        {
            return;
        }
        while let Some(ev) = events.recv().await {
            let sent = match ev {
                GenEvent::Text(t) if t.is_empty() => Ok(()),
                GenEvent::Text(t) => tx.send(chunk(json!({"content": t}), None)),
                GenEvent::Done(out) => {
                    let _ = tx.send(chunk(json!({}), Some(finish(out.finish))));
                    let _ = tx.send(SseEvent::default().data("[DONE]"));
                    return;
                }
                GenEvent::Failed(e) => {
                    let _ = tx.send(
                        SseEvent::default().data(
                            json!({"error": {"message": e.to_string(), "type": "server_error"}})
                                .to_string(),
                        ),
                    );
                    return;
                }
            };
            if sent.is_err() {
                return; // Client gone: dropping `events` cancels the generation.
            }
        }
    });
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok)
}

fn finish(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn summarize(
    State(state): State<Shared>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: SummarizeRequest = json_body(&body)?;
    if req.text.trim().is_empty() {
        return Err(ApiError::bad("text must not be empty").param("text"));
    }
    let segments = crate::summarize::transcript_segments(&req.text);
    let mut ticket = state
        .batchers
        .summarize(
            SummaryJob {
                segments,
                model: req.model,
                max_tokens: req.max_tokens,
            },
            false,
        )
        .await?;
    let s = ticket.result().await?;
    Ok(Json(json!({
        "summary": s.text,
        "model": state.batchers.info.llm_model,
        "chunks": s.chunks,
        "levels": s.levels,
        "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.generated_tokens},
    }))
    .into_response())
}

async fn process(
    State(state): State<Shared>,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mp = mp.map_err(multipart_rejection)?;
    let mut form = read_form(mp).await?;
    let t = transcribe_form(&state, &mut form, false).await?;
    let segments: Vec<String> = t
        .segments
        .iter()
        .map(|s| s.text.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let mut ticket = state
        .batchers
        .summarize(
            SummaryJob {
                segments,
                model: None,
                max_tokens: form.max_tokens,
            },
            false,
        )
        .await?;
    let s = ticket.result().await?;
    Ok(Json(json!({
        "text": t.text.trim(),
        "language": t.language,
        "duration": t.duration,
        "segments": t.segments.iter().map(|s| json!({"start": s.start, "end": s.end, "text": s.text.trim()})).collect::<Vec<_>>(),
        "summary": s.text,
        "models": {"whisper": form.model.unwrap_or_else(|| state.batchers.info.whisper_models[0].clone()), "llm": state.batchers.info.llm_model},
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_file_skips_comments_and_blanks_and_refuses_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        std::fs::write(
            &f,
            "# rotated 2026-11\n\n  key-one  \nkey-two, key-three\n#key-old\n",
        )
        .unwrap();
        let keys = read_api_key_file(&f).unwrap();
        assert_eq!(
            keys,
            vec![
                b"key-one".to_vec(),
                b"key-two".to_vec(),
                b"key-three".to_vec()
            ]
        );
        std::fs::write(&f, "# nothing here\n\n").unwrap();
        let err = read_api_key_file(&f).unwrap_err().to_string();
        assert!(err.contains("holds no key"), "{err}");
        assert!(read_api_key_file(&dir.path().join("missing")).is_err());
    }

    fn g(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The error's status, param and message.
    fn refused(r: Result<Wanted, ApiError>) -> (u16, Option<&'static str>, String) {
        let e = r.expect_err("accepted");
        (e.status.as_u16(), e.param, e.message)
    }

    #[test]
    fn word_granularity_needs_verbose_json_as_at_openai() {
        let w = wanted(Some("verbose_json"), &g(&["word"]), None).unwrap();
        assert_eq!(w.format, Format::Whisper(OutputFormat::VerboseJson));
        assert!(w.word_timestamps);
        let w = wanted(Some("verbose_json"), &g(&["word", "segment"]), None).unwrap();
        assert!(w.word_timestamps);
        // Segments alone, or nothing: no word pass.
        assert!(
            !wanted(Some("verbose_json"), &g(&["segment"]), None)
                .unwrap()
                .word_timestamps
        );
        assert!(!wanted(None, &[], None).unwrap().word_timestamps);
        assert!(
            !wanted(Some("srt"), &g(&["segment"]), None)
                .unwrap()
                .word_timestamps
        );
        for other in ["json", "text", "srt", "vtt"] {
            let (status, param, msg) = refused(wanted(Some(other), &g(&["word"]), None));
            assert_eq!((status, param), (400, Some("timestamp_granularities")));
            assert!(msg.contains("verbose_json") && msg.contains(other), "{msg}");
        }
        let (status, param, msg) = refused(wanted(None, &g(&["word"]), None));
        assert_eq!((status, param), (400, Some("timestamp_granularities")));
        assert!(msg.contains("\"json\""), "{msg}");
        let (_, param, msg) = refused(wanted(Some("verbose_json"), &g(&["character"]), None));
        assert_eq!(param, Some("timestamp_granularities"));
        assert!(msg.contains("\"word\""), "{msg}");
    }

    #[test]
    fn transcribe_format_and_word_cues_turn_word_timings_on() {
        let w = wanted(Some("transcribe"), &[], None).unwrap();
        assert_eq!((w.format, w.word_timestamps), (Format::Transcribe, true));
        assert!(wanted(Some("transcribe"), &g(&["word"]), None).is_ok());
        let w = wanted(Some("vtt"), &[], Some(4)).unwrap();
        assert!(w.word_timestamps);
        assert_eq!(w.render.max_words_per_cue, Some(4));
        let (status, param, _) = refused(wanted(Some("json"), &[], Some(4)));
        assert_eq!((status, param), (400, Some("max_words_per_cue")));
        let (_, param, msg) = refused(wanted(Some("docx"), &[], None));
        assert_eq!(param, Some("response_format"));
        assert!(msg.contains("transcribe"), "{msg}");
    }
}
