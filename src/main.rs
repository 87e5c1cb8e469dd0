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

/// No transparent huge pages where Whisper runs. mimalloc asks for them
/// on its arenas (`MADV_HUGEPAGE`), and the kernel then zeroes, and may
/// compact memory for, a whole 2 MiB page at a first touch: on the 2-core
/// VM, plain `transcribe` of 10 minutes spent 5.6-7.2 s in the kernel with
/// them and 2.1-2.3 s without, and took 23.3-25.9 s against 20.0-21.4 s
/// (alternating runs; `--word-timestamps`, `--diarize` and `diarize` alone
/// within noise; README, Diarization). The LLM's decoding, which streams
/// its weights through the TLB, was 1-9% slower without them, so the
/// LLM-only commands (`generate`, `summarize`) keep them. The same trade
/// is known from mimalloc's tracker (microsoft/mimalloc#1323).
/// `MIMALLOC_ALLOW_THP` set to anything leaves the choice to mimalloc
/// (`1`: huge pages everywhere).
fn no_transparent_huge_pages() {
    if cfg!(feature = "system-alloc") {
        return;
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with an integer flag; it touches no memory of ours.
    // A kernel without the option refuses it, which changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// candle's setting for how long its idle CPU pool threads spin.
const CANDLE_SPIN_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
/// earshot's default for it (candle's own is 25,000).
const CANDLE_SPIN_LIMIT: &str = "2000";

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Generate(_) | Command::Summarize(_)) {
        no_transparent_huge_pages();
    }
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

#[cfg(all(test, target_os = "linux", not(feature = "system-alloc")))]
mod tests {
    use super::*;

    fn thp_enabled() -> String {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_string())
            .expect("a kernel that reports THP_enabled (Linux 5.0+)")
    }

    /// One test, not two: both halves set the process's flag and the
    /// environment, which tests in one process would race on.
    #[test]
    fn transparent_huge_pages_are_off_unless_mimalloc_is_told_otherwise() {
        // SAFETY: prctl with integer flags.
        let allow = || unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
        allow();
        std::env::remove_var("MIMALLOC_ALLOW_THP");
        no_transparent_huge_pages();
        assert_eq!(thp_enabled(), "0");

        allow();
        std::env::set_var("MIMALLOC_ALLOW_THP", "1");
        no_transparent_huge_pages();
        std::env::remove_var("MIMALLOC_ALLOW_THP");
        assert_eq!(thp_enabled(), "1");
    }
}
