//! The `earshot` binary: one program for every role (CLI transcription today;
//! the queue worker and HTTP server build on the same engines).

mod transcribe;

/// Model code allocates and frees tens of megabytes per tensor op; glibc's
/// malloc hands those back to the kernel each time (page faults showed up as
/// ~9% of CPU time in profiles). mimalloc keeps them.
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // candle's CPU kernels size their pools from this.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Transcribe(args) => transcribe::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
