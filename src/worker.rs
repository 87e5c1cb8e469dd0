//! `earshot work`: drains a job queue (SQS or the embedded local queue)
//! through the engines, in batches, without ever losing a job.
//!
//! Shape: one receiver task pulls only as many messages as there are free
//! in-flight slots (a semaphore bounds memory). Each message gets its own
//! task, which keeps its lease alive with heartbeats, downloads and decodes
//! its input, and hands it to the engine thread. The engine thread takes
//! whatever is ready (up to `--max-batch` jobs) and runs it as one batch,
//! while the next batch is already downloading. Each task then writes the
//! job's result record (keyed by job id, so a redelivery overwrites) and
//! only then acknowledges the message.
//!
//! Failures: permanent ones (bad message, bad audio, over a limit, missing
//! input) become a failure record and the message is deleted; transient
//! ones (S3/SQS errors, device out of memory) release the message with
//! exponential backoff, and the queue's redrive policy dead-letters it
//! after its maximum receive count.
//!
//! Shutdown (SIGTERM, e.g. a spot interruption): stop receiving at once,
//! return every job that has not reached the engine (visibility 0), let the
//! running batch finish within `--shutdown-grace`, release whatever is left
//! when the grace runs out, exit 0.
//!
//! Hung jobs (`--job-timeout`): a job that has not finished that long
//! after its receipt is released as a transient failure (backoff, and the
//! receive counts toward the queue's dead-lettering). Where it was stuck
//! decides what else happens. In the fetch or decode, or still queued for
//! an engine: nothing more (an abandoned blocking decode only holds one
//! thread of tokio's blocking pool). Inside an engine batch: the engine is
//! stuck, and a Rust thread cannot be killed, nor can the memory or the
//! device state it holds be trusted or reclaimed, so the worker hands every
//! job back at once and exits with status [`EXIT_ENGINE_STALLED`] for its
//! supervisor (Kubernetes, systemd) to start a fresh process. Loading a
//! second engine next to the stuck one would double the memory and leave a
//! wedged GPU context in place.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use earshot_inference::audio::{self, AudioError, DecodeLimits};
use earshot_inference::error::InferenceError;
use earshot_inference::llm::summarize::Summary;
use earshot_inference::whisper::format::RenderOptions;
use earshot_queue_adapter::job::{FailureRecord, JobOptions, SummaryRecord, TranscriptRecord};
use earshot_queue_adapter::{
    Delivery, Job, JobQueue, JobStatus, Location, QueueError, ResultRecord, Store, TaskKind,
};
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backends::{other, BackendArgs, Managed, ManagedError, Routing};
use crate::batcher::{BatchError, Batchers, SpeechJob, SummaryJob, Ticket};
use crate::engines::EngineArgs;
use crate::formats;
use crate::jobs::QueueArgs;
use crate::probes::Probes;
use crate::routing::{self, Backend, LocalLoad, Stage};

#[derive(clap::Args)]
pub struct WorkArgs {
    #[command(flatten)]
    pub worker: WorkerOptions,
    /// Seconds after SIGTERM to finish running jobs before releasing them
    /// (spot interruptions give 120; keep it below the pod's
    /// terminationGracePeriodSeconds).
    #[arg(long, env = "EARSHOT_SHUTDOWN_GRACE", default_value_t = 90.0)]
    shutdown_grace: f64,
    /// Refuse audio longer than this many seconds (a permanent failure).
    #[arg(long, env = "EARSHOT_MAX_AUDIO_SECONDS", default_value_t = 3600.0)]
    max_audio_seconds: f64,
    /// Also answer `/health`, `/ready` and `/metrics` on this address (for
    /// Kubernetes probes and Prometheus; no inference routes).
    #[arg(long, env = "EARSHOT_PROBE_BIND")]
    probe_bind: Option<std::net::SocketAddr>,
    #[command(flatten)]
    engines: EngineArgs,
}

/// The worker's own settings (`earshot work`, and `earshot serve --worker`).
#[derive(clap::Args)]
pub struct WorkerOptions {
    #[command(flatten)]
    queue: QueueArgs,
    /// Jobs held at once (received, downloading, waiting, running); bounds
    /// memory to about this × the largest decoded audio. Default: 2 × max batch.
    #[arg(long, env = "EARSHOT_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Lease per message, seconds; heartbeats renew it every third of it.
    #[arg(long, env = "EARSHOT_VISIBILITY_TIMEOUT", default_value_t = 60)]
    visibility_timeout: u64,
    /// Long-poll wait per receive, seconds (SQS allows up to 20).
    #[arg(long, env = "EARSHOT_WAIT_SECONDS", default_value_t = 20)]
    wait_seconds: u64,
    /// First retry delay for transient failures, seconds (doubles per
    /// delivery, up to 15 minutes).
    #[arg(long, env = "EARSHOT_RETRY_DELAY", default_value_t = 5)]
    retry_delay: u64,
    /// Refuse input files larger than this many bytes.
    #[arg(long, env = "EARSHOT_MAX_AUDIO_BYTES", default_value_t = 512 << 20)]
    max_audio_bytes: u64,
    /// SQS queue that gets a small notification per finished job.
    #[arg(long, env = "EARSHOT_NOTIFY_QUEUE_URL")]
    notify_queue_url: Option<String>,
    /// Exit 0 once the queue is empty and nothing is in flight (batch runs,
    /// benchmarks, tests).
    #[arg(long)]
    exit_when_empty: bool,
    /// Most seconds one job may take from receipt to result. After it the
    /// job is released as a transient failure; if an engine was running
    /// it, the engine is stuck and the worker exits with status 75 for its
    /// supervisor to restart it. Default: no limit.
    #[arg(long, env = "EARSHOT_JOB_TIMEOUT")]
    job_timeout: Option<f64>,
    /// Folders jobs may name local paths in (comma-separated), besides the
    /// local queue's folder and a local `--results`: any other local input
    /// or result path (`..`, elsewhere, a symbolic link that leads out) is
    /// a `bad_message` failure. An SQS worker without it takes any path.
    #[arg(long, env = "EARSHOT_LOCAL_ROOTS", value_delimiter = ',')]
    local_root: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub backends: BackendArgs,
}

impl WorkerOptions {
    /// Jobs held at once for a given batch size.
    pub fn max_in_flight(&self, max_batch: usize) -> usize {
        self.max_in_flight.unwrap_or(2 * max_batch).max(1)
    }
}

/// What the worker needs from its host process.
pub struct WorkerContext {
    /// The local engines; None when every stage runs on managed services.
    pub batchers: Option<Batchers>,
    pub shutdown_grace: f64,
    pub max_audio_seconds: f64,
    /// Cancelled on SIGTERM (by the caller).
    pub stop: CancellationToken,
}

/// Exit status of a worker whose engine got stuck on a job past
/// `--job-timeout` (EX_TEMPFAIL: restart me).
pub const EXIT_ENGINE_STALLED: u8 = 75;

/// `work` returns this when an engine got stuck: the process must exit
/// (with [`EXIT_ENGINE_STALLED`]) for a fresh one to take over.
#[derive(Debug, thiserror::Error)]
#[error("an engine ran a job past --job-timeout and is considered stuck: exiting for a restart")]
pub struct EngineStalled;

/// Largest transcript accepted by a summarize job.
const MAX_TRANSCRIPT_BYTES: u64 = 16 << 20;
/// Longest retry delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);

pub fn run(mut args: WorkArgs) -> Result<ExitCode> {
    let max_batch = args.engines.max_batch();
    let max_in_flight = args.worker.max_in_flight(max_batch);
    let routing = args.worker.backends.routing()?;
    // A worker whose stages all run on managed services loads no model and
    // needs no GPU: it is the managed phase's worker on the same contract.
    let batchers = if routing.needs_local(Stage::Speech) || routing.needs_local(Stage::Summary) {
        if !routing.needs_local(Stage::Summary) {
            args.engines.no_summarizer = true;
        }
        Some(args.engines.start(max_in_flight)?)
    } else {
        tracing::info!("every stage runs on managed services: no model is loaded");
        None
    };
    let rt = crate::async_runtime()?;
    let stop = CancellationToken::new();
    let probes = match args.probe_bind {
        Some(addr) => Some((addr, Probes::new(batchers.clone(), stop.clone())?)),
        None => None,
    };
    let ctx = WorkerContext {
        batchers,
        shutdown_grace: args.shutdown_grace,
        max_audio_seconds: args.max_audio_seconds,
        stop: stop.clone(),
    };
    let result = rt.block_on(async {
        if let Some((addr, probes)) = probes {
            crate::probes::serve(addr, probes).await?;
        }
        // Installed before the first receive: a SIGTERM that arrived
        // between a receive and the handler's installation would otherwise
        // kill the process with its jobs still leased.
        let signals = signal_listener();
        tokio::spawn(async move {
            signals.await;
            tracing::info!("shutdown requested: no new jobs; finishing running ones");
            stop.cancel();
        });
        work(&args.worker, ctx, max_batch).await
    });
    // The engine threads may still be inside a batch whose jobs were
    // released; leaving main ends them.
    rt.shutdown_background();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is::<EngineStalled>() => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_ENGINE_STALLED))
        }
        Err(e) => Err(e),
    }
}

/// Why a job did not succeed.
#[derive(Debug)]
enum Failure {
    /// Record it and delete the message.
    Permanent { kind: &'static str, message: String },
    /// Release the message with backoff.
    Transient(String),
    /// `--job-timeout` ran out while an engine ran the job: release it
    /// with backoff, and restart the worker (the engine is stuck).
    Stalled(String),
}

impl From<QueueError> for Failure {
    fn from(e: QueueError) -> Self {
        if e.is_permanent() {
            Failure::Permanent {
                kind: e.kind(),
                message: e.to_string(),
            }
        } else {
            Failure::Transient(e.to_string())
        }
    }
}

impl From<InferenceError> for Failure {
    fn from(e: InferenceError) -> Self {
        let message = e.to_string();
        match &e {
            InferenceError::Audio(a) if matches!(**a, AudioError::TooLong { .. }) => {
                Failure::Permanent {
                    kind: "too_large",
                    message,
                }
            }
            InferenceError::Audio(_) => Failure::Permanent {
                kind: "bad_audio",
                message,
            },
            InferenceError::BadOption(_) => Failure::Permanent {
                kind: "bad_option",
                message,
            },
            _ if message.to_ascii_lowercase().contains("out of memory") => {
                Failure::Transient(message)
            }
            _ => Failure::Permanent {
                kind: "model",
                message,
            },
        }
    }
}

impl From<BatchError> for Failure {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Inference(e) => e.into(),
            BatchError::Unavailable(m) => Failure::Permanent {
                kind: "bad_option",
                message: m,
            },
            e @ (BatchError::Busy(_) | BatchError::Stopped(_)) => Failure::Transient(e.to_string()),
        }
    }
}

impl From<ManagedError> for Failure {
    fn from(e: ManagedError) -> Self {
        if e.is_transient() {
            Failure::Transient(e.to_string())
        } else {
            Failure::Permanent {
                kind: e.kind(),
                message: e.to_string(),
            }
        }
    }
}

/// A job's decoded input.
enum Input {
    Audio(Audio),
    Text(Vec<String>),
}

/// Decoded audio and where it came from (a managed backend reads the
/// original file, not the samples).
struct Audio {
    samples: Vec<f32>,
    duration_s: f64,
    loc: Location,
    /// The file's size (Transcribe refuses media over 2 GB).
    size: u64,
}

#[derive(Default, Serialize)]
struct Stats {
    succeeded: u64,
    failed: u64,
    retried: u64,
    returned: u64,
    /// Jobs released because they ran past `--job-timeout`.
    timed_out: u64,
    /// Younger than `--min-job-age`, handed back unprocessed.
    handed_back: u64,
    /// Stages run per backend (`speech:local`, `summary:bedrock`, …).
    routed: BTreeMap<String, u64>,
    #[serde(skip)]
    first_receive: Option<Instant>,
    #[serde(skip)]
    last_done: Option<Instant>,
}

struct Shared {
    queue: Arc<dyn JobQueue>,
    store: Store,
    notify: Option<Arc<dyn JobQueue>>,
    default_results: Option<Location>,
    visibility: Duration,
    retry_delay: Duration,
    max_audio_seconds: f64,
    max_audio_bytes: u64,
    /// `--job-timeout`.
    job_timeout: Option<Duration>,
    /// Set when an engine got stuck on a job: drain without grace, exit 75.
    engine_stalled: std::sync::atomic::AtomicBool,
    /// The host process's stop token: a stuck engine stops the whole
    /// process (`serve --worker` shares the engine with the HTTP routes).
    host_stop: CancellationToken,
    test_stall: Option<TestStall>,
    worker_id: String,
    /// receipt → message id, for release at shutdown.
    inflight: Mutex<HashMap<String, String>>,
    /// Shadow runs still going (their jobs are done and acknowledged; the
    /// drain waits for them within the grace period).
    shadows: std::sync::atomic::AtomicUsize,
    idle: Notify,
    stopping: CancellationToken,
    batchers: Option<Batchers>,
    routing: Routing,
    managed: Managed,
    /// The local machine's price per hour, for the local stages' cost.
    local_hourly_usd: f64,
    stats: Mutex<Stats>,
}

impl Shared {
    fn inflight_count(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }
    fn stat(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }
}

fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}", std::process::id())
}

/// Drains the queue until `ctx.stop` is cancelled (or, with
/// `--exit-when-empty`, the queue is empty), then hands back what is left.
pub async fn work(args: &WorkerOptions, ctx: WorkerContext, max_batch: usize) -> Result<()> {
    let max_in_flight = args.max_in_flight(max_batch);
    let queue = args.queue.open().await?;
    let notify = match &args.notify_queue_url {
        Some(url) => Some(
            earshot_queue_adapter::open_queue(&earshot_queue_adapter::QueueSpec::Sqs {
                url: url.clone(),
            })
            .await
            .context("opening the notification queue")?,
        ),
        None => None,
    };
    let routing = args.backends.routing()?;
    for stage in [Stage::Speech, Stage::Summary] {
        if routing.uses(stage, Backend::Local) && ctx.batchers.is_none() {
            anyhow::bail!(
                "the {} stage may run locally but no engine is loaded",
                stage.as_str()
            );
        }
    }
    // A `--no-summarizer` worker still takes summary jobs routed locally:
    // they fail alone, with a clear `bad_option` record, as before.
    let managed = Managed::connect(
        &args.backends,
        &routing,
        args.queue.store(),
        args.queue.bucket.as_deref(),
    )
    .await?;
    let local_hourly_usd = args.backends.local_hourly_usd()?;
    tracing::info!(
        speech = %routing.speech.describe(),
        summary = %routing.summary.describe(),
        deadline_s = ?routing.deadline_s,
        shadow_rate = routing.shadow_rate,
        min_job_age_s = ?routing.min_job_age_s,
        local_hourly_usd,
        "backends"
    );
    // Local paths in jobs stay inside the queue's folders.
    let mut store = args.queue.store();
    let local_queue = args.queue.queue_url.is_none();
    if local_queue || !args.local_root.is_empty() {
        let mut roots = args.local_root.clone();
        if local_queue {
            roots.push(args.queue.local_queue.clone());
        }
        if let Some(Location::Local(r)) = args.queue.results()? {
            roots.push(r);
        }
        store = store
            .confined_to(&roots)
            .context("preparing the local folders")?;
        tracing::info!(roots = ?store.local_roots(), "local paths confined");
    }
    let shared = Arc::new(Shared {
        queue,
        store,
        notify,
        default_results: args.queue.results()?,
        visibility: Duration::from_secs(args.visibility_timeout.max(1)),
        retry_delay: Duration::from_secs(args.retry_delay),
        max_audio_seconds: ctx.max_audio_seconds,
        max_audio_bytes: args.max_audio_bytes,
        job_timeout: match args.job_timeout {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => anyhow::bail!("--job-timeout must be a positive number of seconds, not {s}"),
            None => None,
        },
        engine_stalled: std::sync::atomic::AtomicBool::new(false),
        host_stop: ctx.stop.clone(),
        test_stall: TestStall::from_env(),
        worker_id: worker_id(),
        inflight: Mutex::new(HashMap::new()),
        shadows: std::sync::atomic::AtomicUsize::new(0),
        idle: Notify::new(),
        // A child: --exit-when-empty stops the worker, not its host process.
        stopping: ctx.stop.child_token(),
        batchers: ctx.batchers,
        routing,
        managed,
        local_hourly_usd,
        stats: Mutex::new(Stats::default()),
    });

    tracing::info!(
        queue = %shared.queue.describe(),
        max_batch,
        max_in_flight,
        job_timeout_s = ?shared.job_timeout.map(|d| d.as_secs_f64()),
        visibility_s = shared.visibility.as_secs(),
        worker = %shared.worker_id,
        "worker ready"
    );
    receive_loop(&shared, args, max_in_flight).await;

    // Drain: running jobs finish within the grace period; the rest go back
    // (at once when an engine is stuck: nothing running will finish).
    let grace = if shared.engine_stalled.load(Ordering::Acquire) {
        0.0
    } else {
        ctx.shutdown_grace.max(0.0)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(grace);
    while shared.inflight_count() > 0 || shared.shadows.load(Ordering::Acquire) > 0 {
        if shared.engine_stalled.load(Ordering::Acquire) {
            break;
        }
        let notified = shared.idle.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let leftover: Vec<(String, String)> = shared
        .inflight
        .lock()
        .map(|m| m.iter().map(|(r, id)| (r.clone(), id.clone())).collect())
        .unwrap_or_default();
    if !leftover.is_empty() {
        tracing::warn!(
            jobs = leftover.len(),
            "grace period over: releasing unfinished jobs"
        );
        let n = leftover.len() as u64;
        let releases = leftover.into_iter().map(|(receipt, id)| {
            let q = shared.queue.clone();
            async move {
                if let Err(e) = q.release(&receipt, Duration::ZERO).await {
                    tracing::warn!(message_id = %id, error = %e, "release failed; the lease will run out instead");
                }
            }
        });
        futures_join_all(releases).await;
        shared.stat(|s| s.returned += n);
    }
    let summary = shared.stats.lock().map(|s| {
        let busy = match (s.first_receive, s.last_done) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        let mut v = serde_json::to_value(&*s).unwrap_or_default();
        v["busy_seconds"] = serde_json::json!(busy);
        if let Some(b) = &shared.batchers {
            let b = &b.stats;
            v["batches"] = serde_json::json!(b.speech_batches.load(Ordering::Relaxed));
            v["batch_jobs"] = serde_json::json!(b.speech_jobs.load(Ordering::Relaxed));
            v["audio_seconds"] =
                serde_json::json!(b.audio_ms.load(Ordering::Relaxed) as f64 / 1000.0);
            v["summary_batches"] = serde_json::json!(b.llm_batches.load(Ordering::Relaxed));
        }
        v
    });
    if let Ok(v) = summary {
        tracing::info!(stats = %v, "worker stopped");
        // Not println!: a closed stdout must not turn a clean stop into a panic.
        let _ = writeln!(std::io::stdout(), "{v}");
    }
    if shared.engine_stalled.load(Ordering::Acquire) {
        return Err(EngineStalled.into());
    }
    Ok(())
}

/// Runs futures concurrently and waits for all (a tiny `join_all`).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

pub(crate) async fn wait_for_signal() {
    signal_listener().await
}

/// Installs the SIGTERM and SIGINT handlers now (inside a runtime) and
/// returns a future that ends at the first of them. Later signals (a storm
/// of them) are absorbed by the same handlers: the drain already running
/// is not cut short.
pub(crate) fn signal_listener() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

async fn receive_loop(shared: &Arc<Shared>, args: &WorkerOptions, max_in_flight: usize) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let wait = Duration::from_secs(args.wait_seconds.min(20));
    let mut backoff = Duration::from_millis(500);
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shared.stopping.cancelled() => return,
        };
        let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
        while permits.len() < earshot_queue_adapter::sqs::MAX_RECEIVE {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let receive = shared.queue.receive(permits.len(), wait, shared.visibility);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = shared.stopping.cancelled() => {
                // The long poll may be handing us messages right now: take
                // them and give them straight back, rather than strand them
                // behind a lease until it runs out.
                if let Ok(Ok(late)) = tokio::time::timeout(wait + Duration::from_secs(5), receive).await {
                    for d in &late {
                        if let Err(e) = shared.queue.release(&d.receipt, Duration::ZERO).await {
                            tracing::warn!(message_id = %d.message_id, error = %e, "release failed; the lease will run out instead");
                        }
                    }
                    shared.stat(|s| s.returned += late.len() as u64);
                }
                return;
            }
        };
        match received {
            Ok(deliveries) if deliveries.is_empty() => {
                if args.exit_when_empty
                    && shared.inflight_count() == 0
                    && shared.shadows.load(Ordering::Acquire) == 0
                {
                    match shared.queue.depth().await {
                        Ok(d) if d.visible + d.in_flight == 0 => {
                            tracing::info!("queue empty: exiting");
                            shared.stopping.cancel();
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "queue depth"),
                    }
                }
            }
            Ok(deliveries) => {
                backoff = Duration::from_millis(500);
                tracing::info!(messages = deliveries.len(), "received");
                let (deliveries, pause) = hand_back_young(shared, deliveries).await;
                if !deliveries.is_empty() {
                    shared.stat(|s| {
                        s.first_receive.get_or_insert_with(Instant::now);
                    });
                }
                for d in deliveries {
                    let Some(permit) = permits.pop() else { break };
                    if let Ok(mut m) = shared.inflight.lock() {
                        m.insert(d.receipt.clone(), d.message_id.clone());
                    }
                    tokio::spawn(run_job(shared.clone(), d, permit));
                }
                if let Some(pause) = pause {
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shared.stopping.cancelled() => return,
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "receive failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.stopping.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Seconds since a job was submitted: its `submitted_at` when it has a
/// valid one, else when the queue accepted the message.
fn job_age_s(d: &Delivery, job: Option<&Job>) -> Option<f64> {
    let submitted = job
        .and_then(|j| j.submitted_at.as_deref())
        .and_then(earshot_queue_adapter::parse_rfc3339_ms)
        .or(d.sent_at_ms)?;
    Some(earshot_queue_adapter::now_ms().saturating_sub(submitted) as f64 / 1000.0)
}

/// The overflow fleet's filter (`--min-job-age`): jobs younger than the
/// age go straight back to the queue (visible at once, for the GPU
/// workers), and the receiver pauses until the youngest of them would
/// come of age, but at most half the age: each replica then receives a
/// young job at most about three times before it is due (each receive
/// counts towards the queue's `maxReceiveCount`), and an overdue job waits
/// at most half a deadline more for it. Returns the deliveries to
/// run and the pause.
async fn hand_back_young(
    shared: &Shared,
    deliveries: Vec<Delivery>,
) -> (Vec<Delivery>, Option<Duration>) {
    let Some(min_age) = shared.routing.min_job_age_s else {
        return (deliveries, None);
    };
    let mut keep = Vec::new();
    let mut wait_s: Option<f64> = None;
    for d in deliveries {
        let job = Job::parse(&d.body, &d.attributes).ok();
        match job_age_s(&d, job.as_ref()) {
            // A broken message, or one with no age: take it (it gets its
            // failure record rather than circling).
            None => keep.push(d),
            Some(age) if age >= min_age => keep.push(d),
            Some(age) => {
                if let Err(e) = shared.queue.release(&d.receipt, Duration::ZERO).await {
                    tracing::warn!(message_id = %d.message_id, error = %e, "release failed; the lease will run out instead");
                }
                tracing::debug!(message_id = %d.message_id, age_s = age, "younger than --min-job-age: handed back");
                metrics::counter!("earshot_worker_handed_back_total").increment(1);
                shared.stat(|s| s.handed_back += 1);
                let left = min_age - age;
                wait_s = Some(wait_s.map_or(left, |w: f64| w.max(left)));
            }
        }
    }
    let pause = wait_s.map(|w| Duration::from_secs_f64(w.min(min_age / 2.0).max(0.5)));
    (keep, pause)
}

/// How one delivery ends.
enum End {
    /// Write this record, then acknowledge; then run the shadow, if any.
    Record(Box<ResultRecord>, Location, Option<Box<ShadowWork>>),
    /// Transient failure: release with backoff.
    Retry(String),
    /// Ran past `--job-timeout` (in `stage`): release with backoff.
    TimedOut(&'static str, String),
    /// An engine ran it past `--job-timeout`: release with backoff, then
    /// stop the worker for a restart.
    Stalled(String),
    /// Shutdown before the engine took it: release at once.
    Return,
}

async fn run_job(shared: Arc<Shared>, d: Delivery, _slot: OwnedSemaphorePermit) {
    metrics::gauge!("earshot_worker_jobs_in_flight").increment(1.0);
    let heartbeat = tokio::spawn(heartbeat(
        shared.clone(),
        d.receipt.clone(),
        d.message_id.clone(),
    ));
    let deadline = shared.job_timeout.map(|t| tokio::time::Instant::now() + t);
    let end = JOB_DEADLINE
        .scope(deadline, async {
            let limit = async {
                match deadline {
                    // The engine waits end at the deadline themselves (they
                    // must tell a stuck engine from a queued job); this
                    // catches the rest (managed backends).
                    Some(d) => tokio::time::sleep_until(d + Duration::from_secs(1)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                end = process(&shared, &d) => end,
                _ = limit => End::TimedOut("job", "ran past --job-timeout".into()),
            }
        })
        .await;
    heartbeat.abort();
    let q = &shared.queue;
    match end {
        End::Record(record, loc, shadow) => {
            let status = record.status;
            let body = serde_json::to_vec_pretty(&*record).expect("records serialize");
            match shared.store.put(&loc, body, "application/json").await {
                Ok(()) => {
                    if let Err(e) = q.ack(&d.receipt).await {
                        // The record is written; a redelivery rewrites the same key.
                        tracing::warn!(job_id = %record.job_id, error = %e, "acknowledge failed; the job may run again");
                    }
                    notify(&shared, &record, &loc).await;
                    if let Some(work) = shadow {
                        shared.shadows.fetch_add(1, Ordering::AcqRel);
                        let s = shared.clone();
                        let loc = loc.clone();
                        tokio::spawn(async move {
                            run_shadow(s.clone(), work, loc).await;
                            s.shadows.fetch_sub(1, Ordering::AcqRel);
                            s.idle.notify_waiters();
                        });
                    }
                    tracing::info!(job_id = %record.job_id, status = ?status, attempt = d.receive_count, "job done");
                    let label = match status {
                        JobStatus::Succeeded => "succeeded",
                        JobStatus::Failed => "failed",
                    };
                    metrics::counter!("earshot_worker_jobs_total", "status" => label).increment(1);
                    shared.stat(|s| {
                        match status {
                            JobStatus::Succeeded => s.succeeded += 1,
                            JobStatus::Failed => s.failed += 1,
                        }
                        s.last_done = Some(Instant::now());
                    });
                }
                Err(e) => retry(&shared, &d, &format!("writing the result to {loc}: {e}")).await,
            }
        }
        End::Retry(reason) => retry(&shared, &d, &reason).await,
        End::TimedOut(stage, reason) => {
            metrics::counter!("earshot_worker_job_timeouts_total", "stage" => stage).increment(1);
            tracing::warn!(message_id = %d.message_id, attempt = d.receive_count, stage, "job timed out (--job-timeout): released for a retry");
            shared.stat(|s| s.timed_out += 1);
            retry(&shared, &d, &reason).await;
        }
        End::Stalled(reason) => {
            metrics::counter!("earshot_worker_job_timeouts_total", "stage" => "engine")
                .increment(1);
            tracing::error!(message_id = %d.message_id, attempt = d.receive_count, reason, "job timed out inside an engine batch (--job-timeout): the engine is stuck; handing every job back and exiting for a restart");
            shared.stat(|s| s.timed_out += 1);
            // Released with its backoff first: the drain that follows hands
            // back everything else at once.
            retry(&shared, &d, &reason).await;
            shared.engine_stalled.store(true, Ordering::Release);
            shared.stopping.cancel();
            shared.host_stop.cancel();
        }
        End::Return => {
            if let Err(e) = q.release(&d.receipt, Duration::ZERO).await {
                tracing::warn!(message_id = %d.message_id, error = %e, "release failed; the lease will run out instead");
            }
            tracing::info!(message_id = %d.message_id, "returned to the queue (shutdown)");
            shared.stat(|s| s.returned += 1);
        }
    }
    if let Ok(mut m) = shared.inflight.lock() {
        m.remove(&d.receipt);
    }
    metrics::gauge!("earshot_worker_jobs_in_flight").decrement(1.0);
    shared.idle.notify_waiters();
}

async fn retry(shared: &Shared, d: &Delivery, reason: &str) {
    let exp = d.receive_count.saturating_sub(1).min(16);
    let delay = (shared.retry_delay * 2u32.pow(exp)).min(MAX_RETRY_DELAY);
    tracing::warn!(message_id = %d.message_id, attempt = d.receive_count, delay_s = delay.as_secs(), reason, "transient failure; will retry");
    if let Err(e) = shared.queue.release(&d.receipt, delay).await {
        tracing::warn!(message_id = %d.message_id, error = %e, "release failed; the lease will run out instead");
    }
    shared.stat(|s| s.retried += 1);
}

async fn notify(shared: &Shared, record: &ResultRecord, loc: &Location) {
    let Some(q) = &shared.notify else { return };
    let body = serde_json::json!({
        "job_id": record.job_id,
        "status": record.status,
        "task": record.task,
        "result": loc.to_string(),
    })
    .to_string();
    if let Err(e) = q.send(&body, &[]).await {
        tracing::warn!(job_id = %record.job_id, error = %e, "notification failed (the result is stored)");
    }
}

/// Keeps the lease alive while the job runs, so a job longer than the
/// visibility timeout never reaches a second worker.
async fn heartbeat(shared: Arc<Shared>, receipt: String, message_id: String) {
    let every = (shared.visibility / 3).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        match shared.queue.extend(&receipt, shared.visibility).await {
            Ok(()) => {}
            Err(QueueError::StaleReceipt(e)) => {
                tracing::warn!(%message_id, error = %e, "lease lost; another worker may take this job");
                return;
            }
            Err(e) => tracing::warn!(%message_id, error = %e, "heartbeat failed; retrying"),
        }
    }
}

fn record(shared: &Shared, d: &Delivery, job_id: &str, task: Option<TaskKind>) -> ResultRecord {
    ResultRecord {
        version: earshot_queue_adapter::job::JOB_SCHEMA_VERSION,
        job_id: job_id.to_string(),
        status: JobStatus::Succeeded,
        task,
        transcript: None,
        summary: None,
        error: None,
        message_id: d.message_id.clone(),
        attempt: d.receive_count,
        worker: shared.worker_id.clone(),
        finished_at: earshot_queue_adapter::now_rfc3339(),
        timings: BTreeMap::new(),
        backend: BTreeMap::new(),
        cost_usd: BTreeMap::new(),
        shadow: None,
    }
}

fn failed(mut r: ResultRecord, kind: &str, message: String) -> Box<ResultRecord> {
    r.status = JobStatus::Failed;
    r.error = Some(FailureRecord {
        kind: kind.to_string(),
        message,
    });
    Box::new(r)
}

async fn process(shared: &Arc<Shared>, d: &Delivery) -> End {
    let job = match Job::parse(&d.body, &d.attributes) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(message_id = %d.message_id, error = %e, "malformed message");
            // No trustworthy job id or result location: record the failure
            // under the message id in the default result prefix.
            return match &shared.default_results {
                Some(prefix) => End::Record(
                    failed(
                        record(shared, d, &d.message_id, None),
                        e.kind(),
                        e.to_string(),
                    ),
                    prefix.join(&ResultRecord::key_for(&d.message_id)),
                    None,
                ),
                None => End::Retry(format!(
                    "{e} (no --results to record it; the DLQ will take it)"
                )),
            };
        }
    };
    let result_loc = match job.result.as_deref().map(Location::parse) {
        Some(Ok(l)) => l.join(&ResultRecord::key_for(&job.job_id)),
        Some(Err(e)) => return End::Retry(e.to_string()),
        None => match &shared.default_results {
            Some(p) => p.join(&ResultRecord::key_for(&job.job_id)),
            None => {
                return End::Retry(
                    "the job names no result location and the worker has no --results".into(),
                )
            }
        },
    };
    let base = record(shared, d, &job.job_id, Some(job.task));
    if let Err(e) = shared.store.check_local(&result_loc) {
        // A result path it may not write: record the refusal where the
        // worker's own results go, under the job id.
        tracing::warn!(job_id = %job.job_id, error = %e, "result location refused");
        return match &shared.default_results {
            Some(prefix) => End::Record(
                failed(base, e.kind(), e.to_string()),
                prefix.join(&ResultRecord::key_for(&job.job_id)),
                None,
            ),
            None => End::Retry(format!(
                "{e} (no --results to record it; the DLQ will take it)"
            )),
        };
    }
    let t0 = Instant::now();
    let fetch = async {
        if let Some(stall) = shared.test_stall.as_ref().filter(|t| t.applies(d, "fetch")) {
            tracing::warn!(message_id = %d.message_id, ms = stall.ms, "test hook: stalling the fetch");
            tokio::time::sleep(Duration::from_millis(stall.ms)).await;
        }
        fetch_input(shared, &job).await
    };
    let fetched = match job_deadline() {
        Some(deadline) => tokio::time::timeout_at(deadline, fetch).await,
        None => Ok(fetch.await),
    };
    let input = match fetched {
        Ok(Ok(i)) => i,
        Ok(Err(Failure::Permanent { kind, message })) => {
            return End::Record(failed(base, kind, message), result_loc, None)
        }
        Ok(Err(Failure::Transient(m))) => return End::Retry(m),
        Ok(Err(Failure::Stalled(m))) => return End::Stalled(m),
        Err(_) => {
            return End::TimedOut(
                "fetch",
                "fetching and decoding the input ran past --job-timeout".into(),
            )
        }
    };
    let fetch_s = t0.elapsed().as_secs_f64();
    if shared.stopping.is_cancelled() {
        return End::Return;
    }
    if let (Some(stall), Some(b)) = (
        shared
            .test_stall
            .as_ref()
            .filter(|t| t.applies(d, "engine")),
        &shared.batchers,
    ) {
        // The next speech batch (this job's) stalls on the engine thread.
        b.stats.test_stall_ms.store(stall.ms, Ordering::Release);
    }
    let mut rec = base;
    rec.timings.insert("fetch".into(), fetch_s);
    match run_engines(shared, d, &job, input, &mut rec).await {
        Ok(Some(shadow)) => End::Record(Box::new(rec), result_loc, shadow),
        Ok(None) => End::Return,
        Err(Failure::Permanent { kind, message }) => {
            End::Record(failed(rec, kind, message), result_loc, None)
        }
        Err(Failure::Transient(m)) => End::Retry(m),
        Err(Failure::Stalled(m)) => End::Stalled(m),
    }
}

tokio::task_local! {
    /// When the running job's `--job-timeout` runs out (None: no limit).
    static JOB_DEADLINE: Option<tokio::time::Instant>;
}

fn job_deadline() -> Option<tokio::time::Instant> {
    JOB_DEADLINE.try_with(|d| *d).ok().flatten()
}

/// Sleeps until the job's deadline (for ever without one).
async fn job_expired(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Waits for a batcher's result; at shutdown, takes the request back if no
/// batch has started it (`None`: hand the job back to the queue). At the
/// job's deadline: a request still queued is taken back (a transient
/// failure; the engine is busy, not stuck); one a batch is running means
/// the engine is stuck ([`Failure::Stalled`]).
async fn wait_ticket<T>(
    shared: &Shared,
    mut ticket: Ticket<T>,
    engine: &'static str,
) -> Option<Result<T, Failure>> {
    let deadline = job_deadline();
    let expired = |ticket: &Ticket<T>| {
        Some(Err(if ticket.withdraw() {
            Failure::Transient(format!(
                "--job-timeout ran out while the job waited for the {engine} engine"
            ))
        } else {
            Failure::Stalled(format!(
                "the {engine} engine ran this job past --job-timeout"
            ))
        }))
    };
    tokio::select! {
        r = ticket.result() => Some(r.map_err(Failure::from)),
        _ = job_expired(deadline) => expired(&ticket),
        _ = shared.stopping.cancelled() => {
            if ticket.withdraw() {
                return None;
            }
            // Running: let it finish; the grace deadline bounds the wait.
            tokio::select! {
                r = ticket.result() => Some(r.map_err(Failure::from)),
                _ = job_expired(deadline) => expired(&ticket),
            }
        }
    }
}

/// Test-only hook, never set in production: `EARSHOT_TEST_STALL_MS` makes
/// the worker stall a job that long, in the speech engine's batch
/// (`EARSHOT_TEST_STALL_STAGE=engine`, the default: a stuck engine) or
/// before its fetch (`fetch`), on the job's first
/// `EARSHOT_TEST_STALL_ATTEMPTS` deliveries (default: every one). Read
/// once, at worker start; `tests/faults.rs` drives `--job-timeout` with it.
struct TestStall {
    ms: u64,
    stage: String,
    attempts: u32,
}

impl TestStall {
    fn from_env() -> Option<TestStall> {
        let ms: u64 = std::env::var("EARSHOT_TEST_STALL_MS").ok()?.parse().ok()?;
        let stage = std::env::var("EARSHOT_TEST_STALL_STAGE").unwrap_or_else(|_| "engine".into());
        let attempts = std::env::var("EARSHOT_TEST_STALL_ATTEMPTS")
            .ok()
            .and_then(|a| a.parse().ok())
            .unwrap_or(u32::MAX);
        tracing::warn!(
            ms,
            stage,
            attempts,
            "EARSHOT_TEST_STALL_MS is set: jobs will be stalled (test hook)"
        );
        Some(TestStall {
            ms,
            stage,
            attempts,
        })
    }

    fn applies(&self, d: &Delivery, stage: &str) -> bool {
        self.stage == stage && d.receive_count <= self.attempts
    }
}

/// A finished stage: what it produced, on which backend, at what cost.
struct StageRun<T> {
    out: T,
    backend: Backend,
    cost_usd: f64,
    seconds: f64,
}

/// What a shadowed job's other run needs, kept after the primary result.
struct ShadowWork {
    job: Job,
    audio: Option<Audio>,
    /// The transcript the summary read (the primary's).
    segments: Vec<String>,
    speech: Option<(Backend, String)>,
    summary: Option<(Backend, SummaryRecord)>,
}

/// Transcribes and/or summarizes, each stage on the backend its policy
/// picks, filling `rec`. `Ok(None)`: shut down before the engines took it;
/// `Ok(Some(shadow))`: done, and `shadow` is set when the job is shadowed.
async fn run_engines(
    shared: &Shared,
    d: &Delivery,
    job: &Job,
    input: Input,
    rec: &mut ResultRecord,
) -> Result<Option<Option<Box<ShadowWork>>>, Failure> {
    let o = &job.options;
    let shadowed = routing::shadowed(&job.job_id, shared.routing.shadow_rate);
    let mut shadow_speech = None;
    let mut kept_audio = None;
    let segments = match input {
        Input::Text(s) => s,
        Input::Audio(audio) => {
            let after_s = if job.task.needs_summary() {
                estimated_summary_s(shared, o.max_summary_tokens, audio.duration_s)
            } else {
                0.0
            };
            let decision = route(shared, d, job, Stage::Speech, audio.duration_s, after_s);
            let Some(run) = run_speech(shared, job, &audio, decision.backend).await? else {
                return Ok(None);
            };
            let (record, segments) = run.out;
            note_stage(
                shared,
                rec,
                Stage::Speech,
                run.backend,
                run.cost_usd,
                run.seconds,
            );
            if shadowed {
                shadow_speech = Some((run.backend, record.text.clone()));
            }
            rec.transcript = Some(record);
            if shadowed {
                kept_audio = Some(audio);
            }
            segments
        }
    };
    let mut shadow_summary = None;
    if job.task.needs_summary() {
        let work = crate::batcher::summary_work_tokens(&segments, o.max_summary_tokens) as f64;
        let decision = route(shared, d, job, Stage::Summary, work, 0.0);
        let Some(run) = run_summary(shared, job, &segments, decision.backend).await? else {
            return Ok(None);
        };
        note_stage(
            shared,
            rec,
            Stage::Summary,
            run.backend,
            run.cost_usd,
            run.seconds,
        );
        if shadowed {
            shadow_summary = Some((run.backend, run.out.clone()));
        }
        rec.summary = Some(run.out);
    }
    let total: f64 = rec.cost_usd.values().sum();
    rec.cost_usd.insert("total".into(), total);
    Ok(Some(shadowed.then(|| {
        Box::new(ShadowWork {
            job: job.clone(),
            audio: kept_audio,
            segments,
            speech: shadow_speech,
            summary: shadow_summary,
        })
    })))
}

/// Picks a stage's backend (`work`: the job's audio seconds or summary
/// tokens; `after_s`: what it still needs after this stage), and logs and
/// counts the decision.
fn route(
    shared: &Shared,
    d: &Delivery,
    job: &Job,
    stage: Stage,
    work: f64,
    after_s: f64,
) -> routing::Decision {
    let decision = routing::choose(
        shared.routing.policy(stage),
        stage,
        &job.job_id,
        shared.routing.deadline_s,
        || LocalLoad {
            age_s: job_age_s(d, Some(job)).unwrap_or(0.0),
            backlog: local_backlog(shared, stage),
            work,
            throughput: local_throughput(shared, stage),
            after_s,
        },
    );
    log_decision(job, stage, &decision);
    decision
}

fn log_decision(job: &Job, stage: Stage, d: &routing::Decision) {
    tracing::info!(
        job_id = %job.job_id,
        stage = stage.as_str(),
        backend = d.backend.as_str(),
        reason = d.reason,
        predicted_s = ?d.predicted_s,
        "routed"
    );
    metrics::counter!(
        "earshot_routed_total",
        "stage" => stage.as_str(),
        "backend" => d.backend.as_str(),
        "reason" => d.reason
    )
    .increment(1);
}

/// Records a finished stage in the job's record, the worker's counters and
/// the metrics.
fn note_stage(
    shared: &Shared,
    rec: &mut ResultRecord,
    stage: Stage,
    backend: Backend,
    cost_usd: f64,
    seconds: f64,
) {
    let timing = match stage {
        Stage::Speech => "transcribe",
        Stage::Summary => "summarize",
    };
    rec.timings.insert(timing.into(), seconds);
    rec.backend
        .insert(stage.as_str().into(), backend.as_str().into());
    rec.cost_usd.insert(stage.as_str().into(), cost_usd);
    metrics::counter!("earshot_jobs_total", "backend" => backend.as_str(), "stage" => stage.as_str())
        .increment(1);
    // A gauge that only grows: the metrics facade's counters are integers,
    // and cents would hide the per-job cost of short jobs.
    metrics::gauge!("earshot_cost_usd_total", "backend" => backend.as_str(), "stage" => stage.as_str())
        .increment(cost_usd);
    shared.stat(|s| {
        *s.routed
            .entry(format!("{}:{}", stage.as_str(), backend))
            .or_default() += 1
    });
}

/// A local engine's measured throughput (audio-seconds, or summary
/// tokens, per second), else the prior (the profile's, or the default).
fn local_throughput(shared: &Shared, stage: Stage) -> Option<f64> {
    let (measured, prior) = match stage {
        Stage::Speech => (
            shared
                .batchers
                .as_ref()
                .and_then(|b| b.stats.speech_throughput()),
            shared.routing.speech_prior,
        ),
        Stage::Summary => (
            shared
                .batchers
                .as_ref()
                .and_then(|b| b.stats.summary_throughput()),
            shared.routing.summary_prior,
        ),
    };
    measured.or(prior)
}

/// Work queued or running on a local engine, in the same unit.
fn local_backlog(shared: &Shared, stage: Stage) -> f64 {
    shared.batchers.as_ref().map_or(0.0, |b| match stage {
        Stage::Speech => b.stats.speech_backlog_s(),
        Stage::Summary => b.stats.summary_backlog_tokens(),
    })
}

/// Seconds a summary would take locally after transcription (for the
/// speech stage's hybrid decision): the summary backlog plus this one
/// (its tokens estimated from the audio length: ~2.5 spoken words a
/// second, 1.3 tokens a word, plus the answer) at the local speed; 0 when
/// summaries cannot run locally.
fn estimated_summary_s(shared: &Shared, max_tokens: Option<usize>, audio_s: f64) -> f64 {
    if !shared.routing.uses(Stage::Summary, Backend::Local) {
        return 0.0;
    }
    let Some(thr) = local_throughput(shared, Stage::Summary) else {
        return 0.0;
    };
    let own = audio_s * 2.5 * 1.3 + max_tokens.unwrap_or(200) as f64;
    (local_backlog(shared, Stage::Summary) + own) / thr
}

/// The local engines' cost for `work` units at `throughput` units per
/// second: the machine's hourly price spread over the time the work took.
fn local_cost(shared: &Shared, work: f64, throughput: Option<f64>, fallback_s: f64) -> f64 {
    let busy_s = match throughput {
        Some(t) if t > 0.0 => work / t,
        _ => fallback_s,
    };
    earshot_planner::prices::local_usd(shared.local_hourly_usd, busy_s)
}

/// Runs the speech stage on `backend`. `Ok(None)`: shut down before the
/// engine took it.
async fn run_speech(
    shared: &Shared,
    job: &Job,
    audio: &Audio,
    backend: Backend,
) -> Result<Option<StageRun<(TranscriptRecord, Vec<String>)>>, Failure> {
    let o = &job.options;
    let t = Instant::now();
    // Counts were checked with the message; this only builds the options.
    let diarize = crate::diarization::speaker_options(
        o.diarize,
        o.num_speakers,
        o.min_speakers,
        o.max_speakers,
    )
    .map_err(|e| Failure::Permanent {
        kind: "bad_option",
        message: e.to_string(),
    })?;
    if backend == Backend::Local {
        let Some(b) = &shared.batchers else {
            return Err(Failure::Transient(
                "no local speech engine in this worker".into(),
            ));
        };
        let ticket = b
            .transcribe(
                SpeechJob {
                    samples: audio.samples.clone(),
                    model: o.model.clone(),
                    language: o.language.clone(),
                    prompt: o.prompt.clone(),
                    temperature: 0.0,
                    word_timestamps: o.wants_words(),
                    vad: o.vad,
                    diarize,
                },
                true,
            )
            .await?;
        let Some(r) = wait_ticket(shared, ticket, "speech").await else {
            return Ok(None);
        };
        let tr = r?;
        let seconds = t.elapsed().as_secs_f64();
        let model = o
            .model
            .clone()
            .unwrap_or_else(|| b.info.whisper_models[0].clone());
        let segments = crate::diarization::summary_segments(
            &tr.segments
                .iter()
                .map(|s| (s.speaker.as_deref(), s.text.as_str()))
                .collect::<Vec<_>>(),
        );
        let cost = local_cost(shared, tr.duration, b.stats.speech_throughput(), seconds);
        let mut record = formats::transcript_record(&tr, model);
        record.formats =
            formats::render_formats(&tr, &record, &o.formats, &job.job_id, &render_options(o));
        return Ok(Some(StageRun {
            out: (record, segments),
            backend,
            cost_usd: cost,
            seconds,
        }));
    }
    let out = shared
        .managed
        .transcribe(
            &job.job_id,
            &audio.loc,
            audio.size,
            o.language.as_deref(),
            audio.duration_s,
            diarize
                .as_ref()
                .map(|d| d.num_speakers.or(d.max_speakers).unwrap_or(10)),
        )
        .await?;
    let seconds = t.elapsed().as_secs_f64();
    let mut record = out.record;
    record.formats = formats::render_formats(
        &formats::transcript_of(&record),
        &record,
        &o.formats,
        &job.job_id,
        &render_options(o),
    );
    let segments = crate::diarization::summary_segments(
        &record
            .segments
            .iter()
            .map(|s| (s.speaker.as_deref(), s.text.as_str()))
            .collect::<Vec<_>>(),
    );
    let cost = earshot_planner::prices::PriceTable::bundled()
        .transcribe_job_usd(out.billed_seconds as f64);
    Ok(Some(StageRun {
        out: (record, segments),
        backend,
        cost_usd: cost,
        seconds,
    }))
}

/// Runs the summary stage on `backend`.
async fn run_summary(
    shared: &Shared,
    job: &Job,
    segments: &[String],
    backend: Backend,
) -> Result<Option<StageRun<SummaryRecord>>, Failure> {
    let o = &job.options;
    let t = Instant::now();
    if backend == Backend::Local {
        let Some(b) = &shared.batchers else {
            return Err(Failure::Transient("no local LLM in this worker".into()));
        };
        let ticket = b
            .summarize(
                SummaryJob {
                    segments: segments.to_vec(),
                    model: o.llm_model.clone(),
                    max_tokens: o.max_summary_tokens,
                },
                true,
            )
            .await?;
        let Some(r) = wait_ticket(shared, ticket, "LLM").await else {
            return Ok(None);
        };
        let s = r?;
        let seconds = t.elapsed().as_secs_f64();
        let llm = b.info.llm_model.clone().unwrap_or_default();
        let tokens = (s.prompt_tokens + s.generated_tokens) as f64;
        let cost = local_cost(shared, tokens, b.stats.summary_throughput(), seconds);
        return Ok(Some(StageRun {
            out: summary_record(&s, &llm),
            backend,
            cost_usd: cost,
            seconds,
        }));
    }
    let out = shared
        .managed
        .summarize(segments, o.max_summary_tokens)
        .await?;
    let seconds = t.elapsed().as_secs_f64();
    let cost = earshot_planner::prices::PriceTable::bundled()
        .bedrock_usd(
            &out.model,
            out.prompt_tokens as u64,
            out.generated_tokens as u64,
        )
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no Bedrock price for this model: cost recorded as 0");
            0.0
        });
    Ok(Some(StageRun {
        out,
        backend,
        cost_usd: cost,
        seconds,
    }))
}

/// Runs a shadowed job on the other backends and adds the comparison to
/// its record (read back and rewritten: the record was already written and
/// acknowledged, so the shadow never delays or fails it).
async fn run_shadow(shared: Arc<Shared>, work: Box<ShadowWork>, loc: Location) {
    let job = &work.job;
    let mut shadow = serde_json::Map::new();
    let mut cost = 0.0;
    if let (Some(audio), Some((primary, primary_text))) = (&work.audio, &work.speech) {
        let backend = other(Stage::Speech, *primary);
        match run_speech(&shared, job, audio, backend).await {
            Ok(Some(run)) => {
                let text = &run.out.0.text;
                // The managed transcript is the reference: it is what the
                // platform trusted before the swap.
                let (reference, hypothesis) = if primary.is_managed() {
                    (primary_text.as_str(), text.as_str())
                } else {
                    (text.as_str(), primary_text.as_str())
                };
                let wer = routing::wer(reference, hypothesis);
                metrics::histogram!("earshot_shadow_wer").record(wer);
                cost += run.cost_usd;
                shadow.insert(
                    "speech".into(),
                    serde_json::json!({
                        "backend": backend.as_str(),
                        "primary_backend": primary.as_str(),
                        "wer": wer,
                        "reference": if primary.is_managed() { primary.as_str() } else { backend.as_str() },
                        "words": routing::normalized_words(text).len(),
                        "primary_words": routing::normalized_words(primary_text).len(),
                        "text": text,
                        "cost_usd": run.cost_usd,
                        "seconds": run.seconds,
                    }),
                );
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, error = ?e, "shadow transcription failed");
                shadow.insert(
                    "speech".into(),
                    serde_json::json!({"backend": backend.as_str(), "error": format!("{e:?}")}),
                );
            }
        }
    }
    if let Some((primary, primary_summary)) = &work.summary {
        let backend = other(Stage::Summary, *primary);
        match run_summary(&shared, job, &work.segments, backend).await {
            Ok(Some(run)) => {
                cost += run.cost_usd;
                shadow.insert(
                    "summary".into(),
                    serde_json::json!({
                        "backend": backend.as_str(),
                        "primary_backend": primary.as_str(),
                        "chars": run.out.text.chars().count(),
                        "primary_chars": primary_summary.text.chars().count(),
                        "prompt_tokens": run.out.prompt_tokens,
                        "generated_tokens": run.out.generated_tokens,
                        "primary_prompt_tokens": primary_summary.prompt_tokens,
                        "primary_generated_tokens": primary_summary.generated_tokens,
                        "text": run.out.text,
                        "cost_usd": run.cost_usd,
                        "seconds": run.seconds,
                    }),
                );
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, error = ?e, "shadow summary failed");
                shadow.insert(
                    "summary".into(),
                    serde_json::json!({"backend": backend.as_str(), "error": format!("{e:?}")}),
                );
            }
        }
    }
    if shadow.is_empty() {
        return;
    }
    shadow.insert("cost_usd".into(), serde_json::json!(cost));
    metrics::gauge!("earshot_cost_usd_total", "backend" => "shadow", "stage" => "shadow")
        .increment(cost);
    let updated = match shared.store.get(&loc, 64 << 20).await {
        Ok(bytes) => match serde_json::from_slice::<ResultRecord>(&bytes) {
            Ok(mut r) => {
                r.shadow = Some(serde_json::Value::Object(shadow));
                r
            }
            Err(e) => {
                tracing::warn!(%loc, error = %e, "shadow: the record does not parse");
                return;
            }
        },
        Err(e) => {
            tracing::warn!(%loc, error = %e, "shadow: reading the record failed");
            return;
        }
    };
    let body = serde_json::to_vec_pretty(&updated).expect("records serialize");
    if let Err(e) = shared.store.put(&loc, body, "application/json").await {
        tracing::warn!(%loc, error = %e, "shadow: writing the comparison failed");
    } else {
        tracing::info!(job_id = %job.job_id, "shadow comparison recorded");
    }
}

async fn fetch_input(shared: &Shared, job: &Job) -> Result<Input, Failure> {
    if job.task.needs_audio() {
        let loc = Location::parse(job.audio.as_deref().unwrap_or_default())?;
        let bytes = shared.store.get(&loc, shared.max_audio_bytes).await?;
        let ext = loc.extension();
        let limits = DecodeLimits {
            max_duration_s: Some(shared.max_audio_seconds),
        };
        let size = bytes.len() as u64;
        let samples =
            tokio::task::spawn_blocking(move || audio::load_bytes(bytes, ext.as_deref(), limits))
                .await
                .map_err(|e| Failure::Transient(format!("decoder task: {e}")))?
                .map_err(|e| Failure::from(InferenceError::from(e)))?;
        let duration_s = samples.len() as f64 / audio::SAMPLE_RATE as f64;
        return Ok(Input::Audio(Audio {
            samples,
            duration_s,
            loc,
            size,
        }));
    }
    let text = match (&job.text, &job.transcript) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => {
            let loc = Location::parse(t)?;
            let bytes = shared.store.get(&loc, MAX_TRANSCRIPT_BYTES).await?;
            String::from_utf8(bytes).map_err(|_| Failure::Permanent {
                kind: "bad_message",
                message: format!("transcript {loc} is not UTF-8 text"),
            })?
        }
        (None, None) => {
            return Err(Failure::Permanent {
                kind: "bad_message",
                message: "no transcript".into(),
            })
        }
    };
    Ok(Input::Text(crate::summarize::transcript_segments(&text)))
}

/// How a job's renderings are laid out.
fn render_options(o: &JobOptions) -> RenderOptions {
    RenderOptions {
        max_words_per_cue: o.max_words_per_cue,
    }
}

fn summary_record(s: &Summary, model: &str) -> SummaryRecord {
    SummaryRecord {
        text: s.text.clone(),
        model: model.to_string(),
        chunks: s.chunks,
        levels: s.levels,
        prompt_tokens: s.prompt_tokens,
        generated_tokens: s.generated_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_for_retry_or_record() {
        let perm = |f: Failure| match f {
            Failure::Permanent { kind, .. } => kind,
            Failure::Transient(m) | Failure::Stalled(m) => panic!("transient: {m}"),
        };
        assert_eq!(
            perm(InferenceError::from(AudioError::Empty).into()),
            "bad_audio"
        );
        assert_eq!(
            perm(InferenceError::from(AudioError::TooLong { limit_s: 1.0 }).into()),
            "too_large"
        );
        assert_eq!(
            perm(InferenceError::BadOption("x".into()).into()),
            "bad_option"
        );
        assert_eq!(
            perm(QueueError::NotFound("s3://b/k".into()).into()),
            "not_found"
        );
        assert_eq!(
            perm(QueueError::BadMessage("x".into()).into()),
            "bad_message"
        );
        assert!(matches!(
            Failure::from(InferenceError::Backend(
                "CUDA_ERROR_OUT_OF_MEMORY: out of memory".into()
            )),
            Failure::Transient(_)
        ));
        assert!(matches!(
            Failure::from(QueueError::Service {
                service: "s3",
                op: "GetObject",
                message: "timeout".into()
            }),
            Failure::Transient(_)
        ));
    }
}
