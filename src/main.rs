//! The `earshot` binary: one program for every role (transcription and
//! summarization from the CLI; the queue worker and HTTP server build on
//! the same engines).

mod backends;
mod batcher;
mod bench;
mod diarization;
mod engines;
mod formats;
mod jobs;
mod plan;
mod probes;
mod requests;
mod routing;
mod server;
mod summarize;
mod transcribe;
mod worker;

/// Model code allocates and frees tens of megabytes per tensor op; glibc's
/// malloc hands those back to the kernel each time (page faults showed up as
/// ~9% of CPU time in profiles). mimalloc keeps them. The `system-alloc`
/// feature swaps it back out, for heap profilers (heaptrack, valgrind) that
/// only see the C library's malloc.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "earshot",
    version,
    about = "Self-hosted speech-to-text (Whisper) and summarization on candle"
)]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax). Logs go to stderr.
    #[arg(
        long,
        env = "EARSHOT_LOG",
        default_value = "warn,earshot=info,symphonia_core=off",
        global = true
    )]
    log: String,
    /// CPU threads for tensor math (default: all cores).
    #[arg(long, env = "EARSHOT_THREADS", global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe audio files with Whisper.
    Transcribe(transcribe::Args),
    /// Who spoke when, alone: RTTM or JSON turns (scored with --reference).
    Diarize(diarization::Args),
    /// Summarize a transcript (text, or `transcribe --format json` output).
    Summarize(summarize::SummarizeArgs),
    /// Transcribe audio files, then summarize each transcript.
    Process(summarize::ProcessArgs),
    /// Run the LLM on a prompt (token ids and timings with --format json).
    Generate(summarize::GenerateArgs),
    /// Serve the engines over HTTP (OpenAI-compatible endpoints, metrics).
    Serve(Box<server::ServeArgs>),
    /// Drain a job queue (SQS, or the embedded local queue) through the engines.
    Work(Box<worker::WorkArgs>),
    /// Upload audio, enqueue jobs, print one job id per line.
    Submit(jobs::SubmitArgs),
    /// Print jobs' result records (or that they are pending).
    Status(jobs::StatusArgs),
    /// Exit 0 when a local `serve` or `work --probe-bind` answers /health
    /// (the container HEALTHCHECK).
    Healthcheck(probes::HealthcheckArgs),
    /// Measure this machine's throughput with the configured models; write
    /// the JSON profile `earshot plan` reads.
    Bench(Box<bench::BenchArgs>),
    /// GPU counts, monthly cost self-hosted vs managed, the crossover and
    /// the phase for a workload (from a bench profile or given throughput).
    Plan(Box<plan::PlanArgs>),
}

/// The async runtime of `serve` and `work`: two threads are plenty for
/// HTTP and queue I/O; the engines run on their own threads.
fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `mi_option_purge_delay`: index 15 in both mimalloc v2 and v3 (the sys
/// crate exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed pages instead of returning them to the kernel: every encoder
/// pass reallocates the same large activations, and re-faulting them cost
/// ~6% of wall time (measured: 15.1 s → 14.1 s on the 399 s clip set) for
/// ~150 MB more resident memory. `MIMALLOC_PURGE_DELAY` still overrides.
fn keep_freed_memory() {
    if cfg!(feature = "system-alloc") {
        return;
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: a plain option setter, called before any other thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// candle's setting for how long its idle CPU pool threads spin.
const CANDLE_SPIN_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
/// earshot's default for it (candle's own is 25,000).
const CANDLE_SPIN_LIMIT: &str = "2000";

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // candle's CPU kernels size their pools from this.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // candle's CPU pool threads spin 25,000 times after each op before
    // they sleep. When Whisper and diarization share the cores (`--diarize`
    // runs them side by side), that spinning takes the time the other one
    // needs: 2,000 spins made `transcribe --diarize` 11-13% faster on 2
    // cores, with Whisper's and the LLM's own speed unchanged (README,
    // Diarization). An explicit setting wins.
    if std::env::var_os(CANDLE_SPIN_VAR).is_none() {
        std::env::set_var(CANDLE_SPIN_VAR, CANDLE_SPIN_LIMIT);
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Transcribe(args) => transcribe::run(args),
        Command::Diarize(args) => diarization::run(args),
        Command::Summarize(args) => summarize::summarize(args),
        Command::Process(args) => summarize::process(args),
        Command::Generate(args) => summarize::generate(args),
        Command::Work(args) => worker::run(*args),
        Command::Serve(args) => server::run(*args),
        Command::Submit(args) => jobs::submit(args),
        Command::Status(args) => jobs::status(args),
        Command::Healthcheck(args) => probes::healthcheck(args),
        Command::Bench(args) => bench::run(*args),
        Command::Plan(args) => plan::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
