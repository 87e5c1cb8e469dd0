//! The batchers: one thread per engine, each draining a bounded queue of
//! requests and running what is ready as one batch. The queue worker and
//! the HTTP server submit to the same [`Batchers`], so concurrent jobs and
//! requests share encoder passes and decode steps.
//!
//! - Speech: up to `max_batch` requests at a time through
//!   [`SpeechEngine::transcribe_many`] (audio windows of all of them in one
//!   batched encoder pass and decode loop).
//! - LLM: summaries through [`LlmEngine::summarize_many`]; streamed
//!   generations (chat) through one long-lived [`Scheduler`] that admits
//!   new sequences between decode steps (continuous batching) and drops a
//!   sequence as soon as its receiver goes away.
//!
//! Every queued request carries a small state cell: the batcher claims it
//! (QUEUED → STARTED) when it takes it into a batch; the submitter can
//! withdraw it first (QUEUED → WITHDRAWN), which is how the worker hands
//! unstarted jobs back to the queue at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_inference::error::InferenceError;
use earshot_inference::llm::engine::{Event, GenOutput, GenRequest, Scheduler};
use earshot_inference::llm::summarize::Summary;
use earshot_inference::llm::{ChatMessage, SamplingParams};
use earshot_inference::whisper::Transcript;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::engines::{Engines, LlmEngine, SpeechEngine, SpeechRequest, SummaryRequest};

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const WITHDRAWN: u8 = 2;

/// Why a batched request did not produce a result.
#[derive(Debug, Error, Clone)]
pub enum BatchError {
    /// The engine refused or failed the input.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// The batch queue is full: back off and retry.
    #[error("the {0} queue is full")]
    Busy(&'static str),
    /// This process serves no such engine.
    #[error("{0}")]
    Unavailable(String),
    /// The batcher thread is gone (shutdown or a crash).
    #[error("the {0} engine stopped")]
    Stopped(&'static str),
}

/// A queued request's handle.
pub struct Ticket<T> {
    state: Arc<AtomicU8>,
    rx: oneshot::Receiver<Result<T, BatchError>>,
    engine: &'static str,
}

impl<T> Ticket<T> {
    /// Takes the request back if no batch has started it yet.
    pub fn withdraw(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Waits for the result.
    pub async fn result(&mut self) -> Result<T, BatchError> {
        (&mut self.rx)
            .await
            .unwrap_or(Err(BatchError::Stopped(self.engine)))
    }
}

struct Queued<Req, T> {
    req: Req,
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<Result<T, BatchError>>,
}

impl<Req, T> Queued<Req, T> {
    /// Claims the request for a batch; false when it was withdrawn.
    fn claim(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// One transcription.
pub struct SpeechJob {
    pub samples: Vec<f32>,
    pub model: Option<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: f32,
    /// Time every word (the transcript's segments carry `words`).
    pub word_timestamps: bool,
    /// Transcribe only the speech (Silero VAD).
    pub vad: bool,
    /// Label speakers (needs `word_timestamps`; the engine turns it on).
    pub diarize: Option<earshot_diarize::pipeline::DiarizeOptions>,
}

/// One summary.
pub struct SummaryJob {
    pub segments: Vec<String>,
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
}

/// One streamed generation.
pub struct GenerateJob {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub events: mpsc::UnboundedSender<GenEvent>,
}

/// What a streamed generation reports.
#[derive(Debug)]
pub enum GenEvent {
    /// Newly completed text (may be empty while a character or a possible
    /// stop string is pending).
    Text(String),
    Done(GenOutput),
    Failed(InferenceError),
}

enum LlmWork {
    Summary(Queued<SummaryJob, Summary>),
    Generate(GenerateJob),
}

/// Counters the batchers keep (read by the worker's summary and metrics).
#[derive(Default)]
pub struct BatchStats {
    pub speech_batches: AtomicU64,
    pub speech_jobs: AtomicU64,
    /// Milli-seconds of audio transcribed.
    pub audio_ms: AtomicU64,
    pub llm_batches: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub speech_queued: AtomicU64,
    pub llm_queued: AtomicU64,
    /// Milli-seconds of audio queued or running (the backlog a hybrid
    /// router weighs against the deadline).
    pub speech_pending_ms: AtomicU64,
    /// Milli-seconds the speech engine spent in batches.
    pub speech_busy_ms: AtomicU64,
    /// Estimated tokens (prompt + answer) of summaries queued or running.
    pub llm_pending_tokens: AtomicU64,
    /// Tokens (prompt + generated) of finished summaries, and the
    /// milli-seconds their batches took.
    pub summary_tokens: AtomicU64,
    pub summary_busy_ms: AtomicU64,
    /// Test hook (the worker's `EARSHOT_TEST_STALL_MS`, never set in
    /// production): the next speech batch sleeps this long on the engine
    /// thread, as a stuck engine would.
    pub test_stall_ms: AtomicU64,
}

impl BatchStats {
    /// Audio-seconds per wall-second the speech engine has sustained so
    /// far (None before its first batch).
    pub fn speech_throughput(&self) -> Option<f64> {
        let busy = self.speech_busy_ms.load(Ordering::Relaxed);
        let audio = self.audio_ms.load(Ordering::Relaxed);
        (busy > 0 && audio > 0).then(|| audio as f64 / busy as f64)
    }
    /// Summary tokens per wall-second so far (None before the first).
    pub fn summary_throughput(&self) -> Option<f64> {
        let busy = self.summary_busy_ms.load(Ordering::Relaxed);
        let tokens = self.summary_tokens.load(Ordering::Relaxed);
        (busy > 0 && tokens > 0).then(|| tokens as f64 * 1000.0 / busy as f64)
    }
    /// Audio seconds queued or running.
    pub fn speech_backlog_s(&self) -> f64 {
        self.speech_pending_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }
    /// Estimated summary tokens queued or running.
    pub fn summary_backlog_tokens(&self) -> f64 {
        self.llm_pending_tokens.load(Ordering::Relaxed) as f64
    }
}

/// Milli-seconds of 16 kHz audio.
fn audio_ms(samples: &[f32]) -> u64 {
    samples.len() as u64 / 16
}

/// Estimated tokens a summary costs (prompt and answer): about four
/// characters per token, the same rough rule for every tokenizer, which is
/// all a backlog estimate needs.
pub fn summary_work_tokens(segments: &[String], max_tokens: Option<usize>) -> u64 {
    let chars: usize = segments.iter().map(|s| s.len() + 1).sum();
    (chars / 4 + max_tokens.unwrap_or(200)) as u64
}

/// Names and limits of what is loaded.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub whisper_models: Vec<String>,
    pub llm_model: Option<String>,
    pub load_seconds: std::collections::BTreeMap<String, f64>,
    pub device: candle_core::Device,
}

/// Handles to the batcher threads; cheap to clone.
#[derive(Clone)]
pub struct Batchers {
    speech: mpsc::Sender<Queued<SpeechJob, Transcript>>,
    llm: Option<mpsc::Sender<LlmWork>>,
    /// The LLM's tokenizer and chat template, for building prompts on the
    /// request's own task (off the batcher thread).
    prompts: Option<Arc<PromptBuilder>>,
    pub info: Arc<EngineInfo>,
    pub stats: Arc<BatchStats>,
}

/// Builds LLM prompts on the caller's task. The model is immutable, so
/// this shares it with the batcher thread; only the tokenizer and the
/// template are used here.
pub struct PromptBuilder {
    engine: Arc<LlmEngine>,
}

impl PromptBuilder {
    pub fn chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, InferenceError> {
        self.engine.llm.chat_prompt(messages)
    }
    /// Refuses a model name this process does not serve.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), InferenceError> {
        self.engine.check_model(model)
    }
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatcherOptions {
    /// Most speech requests per batch.
    pub max_batch: usize,
    /// Requests that may wait per engine before new ones are refused.
    pub queue_capacity: usize,
    /// After the first request of an idle engine arrives, how long to wait
    /// for more to fill the batch.
    pub batch_wait: Duration,
}

impl Batchers {
    /// Starts one thread per engine; they run until every handle is dropped.
    pub fn start(engines: Engines, opts: BatcherOptions) -> std::io::Result<Batchers> {
        let info = Arc::new(EngineInfo {
            whisper_models: engines
                .speech
                .whisper_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            llm_model: engines.llm.as_ref().map(|l| l.name.clone()),
            load_seconds: engines.load_seconds.clone(),
            device: engines.device.clone(),
        });
        let stats = Arc::new(BatchStats::default());
        let cap = opts.queue_capacity.max(1);
        let (speech_tx, speech_rx) = mpsc::channel(cap);
        let s = stats.clone();
        let speech = engines.speech;
        std::thread::Builder::new()
            .name("earshot-speech".into())
            .spawn(move || speech_loop(speech, speech_rx, opts, s))?;
        let (llm, prompts) = match engines.llm {
            Some(engine) => {
                let (tx, rx) = mpsc::channel(cap);
                let engine = Arc::new(engine);
                let prompts = Arc::new(PromptBuilder {
                    engine: engine.clone(),
                });
                let s = stats.clone();
                std::thread::Builder::new()
                    .name("earshot-llm".into())
                    .spawn(move || llm_loop(engine, rx, opts, s))?;
                (Some(tx), Some(prompts))
            }
            None => (None, None),
        };
        Ok(Batchers {
            speech: speech_tx,
            llm,
            prompts,
            info,
            stats,
        })
    }

    /// Queues a transcription. `wait`: block while the queue is full (the
    /// worker, already bounded by its in-flight slots) instead of failing
    /// with [`BatchError::Busy`] (the HTTP server answers 503).
    pub async fn transcribe(
        &self,
        job: SpeechJob,
        wait: bool,
    ) -> Result<Ticket<Transcript>, BatchError> {
        let ms = audio_ms(&job.samples);
        let (q, ticket) = queued(job, "speech");
        let waiting = &self.stats.speech_queued;
        self.stats
            .speech_pending_ms
            .fetch_add(ms, Ordering::Relaxed);
        if let Err(e) = enqueue(&self.speech, q, wait, "speech", waiting).await {
            self.stats
                .speech_pending_ms
                .fetch_sub(ms, Ordering::Relaxed);
            return Err(e);
        }
        Ok(ticket)
    }

    fn llm(&self) -> Result<&mpsc::Sender<LlmWork>, BatchError> {
        self.llm.as_ref().ok_or_else(|| {
            BatchError::Unavailable("no LLM is loaded in this process (--no-summarizer)".into())
        })
    }

    /// Queues a summary (see [`Batchers::transcribe`] for `wait`).
    pub async fn summarize(
        &self,
        job: SummaryJob,
        wait: bool,
    ) -> Result<Ticket<Summary>, BatchError> {
        let tx = self.llm()?;
        let tokens = summary_work_tokens(&job.segments, job.max_tokens);
        let (q, ticket) = queued(job, "llm");
        self.stats
            .llm_pending_tokens
            .fetch_add(tokens, Ordering::Relaxed);
        if let Err(e) = enqueue(tx, LlmWork::Summary(q), wait, "llm", &self.stats.llm_queued).await
        {
            self.stats
                .llm_pending_tokens
                .fetch_sub(tokens, Ordering::Relaxed);
            return Err(e);
        }
        Ok(ticket)
    }

    /// Starts a streamed generation; events arrive on the returned
    /// receiver. Dropping the receiver cancels the generation.
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        params: SamplingParams,
    ) -> Result<mpsc::UnboundedReceiver<GenEvent>, BatchError> {
        let tx = self.llm()?;
        let (events, rx) = mpsc::unbounded_channel();
        let job = LlmWork::Generate(GenerateJob {
            prompt,
            params,
            events,
        });
        try_enqueue(tx, job, "llm", &self.stats.llm_queued)?;
        Ok(rx)
    }

    /// Whether this process can take work: every engine thread is alive
    /// and the device still computes ([`device::probe`]). Blocking (it
    /// waits for the device); call it off the async threads.
    ///
    /// [`device::probe`]: earshot_inference::device::probe
    pub fn check_health(&self) -> Result<(), String> {
        if self.speech.is_closed() {
            return Err("the speech engine thread has stopped".into());
        }
        if self.llm.as_ref().is_some_and(|tx| tx.is_closed()) {
            return Err("the LLM engine thread has stopped".into());
        }
        earshot_inference::device::probe(&self.info.device).map_err(|e| e.to_string())
    }

    /// Prompt building for the served LLM.
    pub fn prompts(&self) -> Result<&PromptBuilder, BatchError> {
        self.prompts.as_deref().ok_or_else(|| {
            BatchError::Unavailable("no LLM is loaded in this process (--no-summarizer)".into())
        })
    }
}

/// Puts an item on an engine's queue without waiting, counting it as
/// waiting first (the batcher thread subtracts what it takes).
fn try_enqueue<T>(
    tx: &mpsc::Sender<T>,
    item: T,
    engine: &'static str,
    waiting: &AtomicU64,
) -> Result<(), BatchError> {
    waiting.fetch_add(1, Ordering::Relaxed);
    tx.try_send(item).map_err(|e| {
        waiting.fetch_sub(1, Ordering::Relaxed);
        match e {
            mpsc::error::TrySendError::Full(_) => BatchError::Busy(engine),
            mpsc::error::TrySendError::Closed(_) => BatchError::Stopped(engine),
        }
    })
}

/// As [`try_enqueue`], or waiting for room when `wait`.
async fn enqueue<T>(
    tx: &mpsc::Sender<T>,
    item: T,
    wait: bool,
    engine: &'static str,
    waiting: &AtomicU64,
) -> Result<(), BatchError> {
    if !wait {
        return try_enqueue(tx, item, engine, waiting);
    }
    waiting.fetch_add(1, Ordering::Relaxed);
    tx.send(item).await.map_err(|_| {
        waiting.fetch_sub(1, Ordering::Relaxed);
        BatchError::Stopped(engine)
    })
}

/// Runs an engine call, turning a panic into one error per request so no
/// caller waits forever and the thread keeps serving.
fn guarded<T>(
    n: usize,
    engine: &str,
    f: impl FnOnce() -> Vec<Result<T, InferenceError>>,
) -> Vec<Result<T, InferenceError>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!(jobs = n, engine, "engine panicked");
        (0..n)
            .map(|_| {
                Err(InferenceError::Model(format!(
                    "the {engine} engine panicked"
                )))
            })
            .collect()
    })
}

fn queued<Req, T>(req: Req, engine: &'static str) -> (Queued<Req, T>, Ticket<T>) {
    let state = Arc::new(AtomicU8::new(QUEUED));
    let (reply, rx) = oneshot::channel();
    (
        Queued {
            req,
            state: state.clone(),
            reply,
        },
        Ticket { state, rx, engine },
    )
}

/// Blocks for one item, then gathers what else is ready (waiting up to
/// `wait` for more) up to `max`.
fn gather<T>(rx: &mut mpsc::Receiver<T>, max: usize, wait: Duration) -> Option<Vec<T>> {
    let first = rx.blocking_recv()?;
    let mut batch = vec![first];
    let deadline = Instant::now() + wait;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(mpsc::error::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

fn speech_loop(
    engine: SpeechEngine,
    mut rx: mpsc::Receiver<Queued<SpeechJob, Transcript>>,
    opts: BatcherOptions,
    stats: Arc<BatchStats>,
) {
    let max = opts.max_batch.max(1);
    while let Some(mut batch) = gather(&mut rx, max, opts.batch_wait) {
        stats
            .speech_queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let pending: u64 = batch.iter().map(|q| audio_ms(&q.req.samples)).sum();
        batch.retain(|q| q.claim());
        if batch.is_empty() {
            stats
                .speech_pending_ms
                .fetch_sub(pending, Ordering::Relaxed);
            continue;
        }
        let n = batch.len();
        tracing::info!(jobs = n, "batch started");
        let stall = stats.test_stall_ms.swap(0, Ordering::AcqRel);
        if stall > 0 {
            tracing::warn!(ms = stall, "test hook: stalling the speech engine");
            std::thread::sleep(Duration::from_millis(stall));
        }
        let t = Instant::now();
        let reqs: Vec<SpeechRequest<'_>> = batch
            .iter()
            .map(|q| SpeechRequest {
                samples: &q.req.samples,
                model: q.req.model.as_deref(),
                language: q.req.language.as_deref(),
                prompt: q.req.prompt.as_deref(),
                temperature: q.req.temperature,
                word_timestamps: q.req.word_timestamps,
                vad: q.req.vad,
                diarize: q.req.diarize.as_ref(),
            })
            .collect();
        let results = guarded(n, "speech", || engine.transcribe_many(&reqs));
        drop(reqs);
        let audio: f64 = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|t| t.duration))
            .sum();
        let wall = t.elapsed().as_secs_f64();
        tracing::info!(
            jobs = n,
            audio_s = format!("{audio:.1}"),
            wall_s = format!("{wall:.2}"),
            "batch done"
        );
        stats.speech_batches.fetch_add(1, Ordering::Relaxed);
        stats.speech_jobs.fetch_add(n as u64, Ordering::Relaxed);
        stats
            .speech_busy_ms
            .fetch_add((wall * 1000.0) as u64, Ordering::Relaxed);
        stats
            .speech_pending_ms
            .fetch_sub(pending, Ordering::Relaxed);
        let total_ms = stats
            .audio_ms
            .fetch_add((audio * 1000.0) as u64, Ordering::Relaxed)
            + (audio * 1000.0) as u64;
        metrics::counter!("earshot_speech_batches_total").increment(1);
        metrics::histogram!("earshot_speech_batch_size").record(n as f64);
        // From the running total: rounding each batch would drift.
        metrics::counter!("earshot_audio_seconds_total").absolute(total_ms / 1000);
        if audio > 0.0 {
            metrics::histogram!("earshot_speech_real_time_factor").record(wall / audio);
        }
        for (q, r) in batch.into_iter().zip(results) {
            let _ = q.reply.send(r.map_err(BatchError::from));
        }
    }
}

fn llm_loop(
    engine: Arc<LlmEngine>,
    mut rx: mpsc::Receiver<LlmWork>,
    opts: BatcherOptions,
    stats: Arc<BatchStats>,
) {
    let mut sched = Scheduler::new(&engine.llm, engine.args.engine());
    let mut streams: HashMap<u64, mpsc::UnboundedSender<GenEvent>> = HashMap::new();
    loop {
        // Idle: block for work. Busy: only pick up what has arrived.
        let mut work = Vec::new();
        if sched.is_idle() {
            match gather(&mut rx, usize::MAX, opts.batch_wait) {
                Some(w) => work = w,
                None => return,
            }
        } else {
            while let Ok(w) = rx.try_recv() {
                work.push(w);
            }
        }
        stats
            .llm_queued
            .fetch_sub(work.len() as u64, Ordering::Relaxed);
        let mut summaries = Vec::new();
        let mut pending = 0;
        for w in work {
            match w {
                LlmWork::Summary(q) => {
                    pending += summary_work_tokens(&q.req.segments, q.req.max_tokens);
                    if q.claim() {
                        summaries.push(q);
                    }
                }
                LlmWork::Generate(g) => match sched.submit(GenRequest {
                    prompt: g.prompt,
                    params: g.params,
                }) {
                    Ok(id) => {
                        streams.insert(id, g.events);
                    }
                    Err(e) => {
                        let _ = g.events.send(GenEvent::Failed(e));
                    }
                },
            }
        }
        if summaries.is_empty() {
            stats
                .llm_pending_tokens
                .fetch_sub(pending, Ordering::Relaxed);
        } else {
            let n = summaries.len();
            let t = Instant::now();
            tracing::info!(jobs = n, "summary batch started");
            let reqs: Vec<SummaryRequest<'_>> = summaries
                .iter()
                .map(|q| SummaryRequest {
                    segments: &q.req.segments,
                    model: q.req.model.as_deref(),
                    max_tokens: q.req.max_tokens,
                })
                .collect();
            let results = guarded(n, "LLM", || engine.summarize_many(&reqs));
            drop(reqs);
            let tokens: usize = results
                .iter()
                .filter_map(|r| r.as_ref().ok().map(|s| s.generated_tokens))
                .sum();
            let all_tokens: usize = results
                .iter()
                .filter_map(|r| {
                    r.as_ref()
                        .ok()
                        .map(|s| s.generated_tokens + s.prompt_tokens)
                })
                .sum();
            stats.llm_batches.fetch_add(1, Ordering::Relaxed);
            stats
                .generated_tokens
                .fetch_add(tokens as u64, Ordering::Relaxed);
            stats
                .summary_tokens
                .fetch_add(all_tokens as u64, Ordering::Relaxed);
            stats
                .summary_busy_ms
                .fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            stats
                .llm_pending_tokens
                .fetch_sub(pending, Ordering::Relaxed);
            metrics::counter!("earshot_llm_tokens_generated_total").increment(tokens as u64);
            metrics::histogram!("earshot_llm_batch_size").record(n as f64);
            for (q, r) in summaries.into_iter().zip(results) {
                let _ = q.reply.send(r.map_err(BatchError::from));
            }
        }
        if sched.is_idle() {
            continue;
        }
        let active = sched.active();
        metrics::histogram!("earshot_llm_batch_size").record(active as f64);
        for ev in sched.step() {
            let (id, out) = match ev {
                Event::Token { id, text, .. } => {
                    stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("earshot_llm_tokens_generated_total").increment(1);
                    (id, GenEvent::Text(text))
                }
                Event::Done { id, output } => (id, GenEvent::Done(output)),
                Event::Failed { id, error } => (id, GenEvent::Failed(error)),
            };
            let last = !matches!(out, GenEvent::Text(_));
            let gone = match streams.get(&id) {
                Some(tx) => tx.send(out).is_err(),
                None => true,
            };
            if last {
                streams.remove(&id);
            } else if gone {
                // The client went away: stop spending compute on it.
                sched.cancel(id);
                streams.remove(&id);
            }
        }
    }
}
