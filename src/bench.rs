//! `earshot bench`: measures what this machine does per second with the
//! configured models and device, and writes the throughput profile
//! (`earshot_planner::profile::Profile`) that `earshot plan` sizes fleets
//! from. The capacity planner's answer is only as good as its throughput
//! figures; this replaces assumed figures with measured ones.
//!
//! What it measures, all through the same engines `work` and `serve` run
//! ([`crate::engines::EngineArgs`] loads them):
//!
//! - speech: audio-seconds per wall-second at each batch size, on long
//!   recordings (batch B = B recordings decoded together, as a busy worker
//!   batches B jobs) and on 5 s clips (a stream of clips, B at a time);
//! - LLM: prefill tokens/s (one long prompt), decode tokens/s at 1 and 8
//!   sequences (generated tokens after the first, over the time after the
//!   last sequence's first token);
//! - memory: peak RSS (`VmHWM`), and on CUDA the process's device memory
//!   as `nvidia-smi` reports it (candle has no memory-usage API), sampled
//!   after each phase;
//! - load times and the machine (CPU model and cores, GPU name and memory).
//!
//! Input audio: the given files, else the bundled fixtures that
//! `scripts/make-fixtures` writes (`ten-minutes.wav`, else `sample.wav`).
//! The inputs are concatenated into one source stream; long recordings and
//! 5 s clips are cut from it at fixed offsets, wrapping around (tiling) when
//! the source is shorter, so every run decodes the same audio.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use earshot_inference::audio::{self, DecodeLimits};
use earshot_inference::device::compute_dtype;
use earshot_inference::llm::{generate_all, GenRequest, Llm, SamplingParams};
use earshot_planner::profile::{
    DecodePoint, LlmThroughput, Machine, Memory, Models, Profile, SpeechPoint, SpeechThroughput,
    PROFILE_VERSION,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engines::{EngineArgs, LlmEngine, SpeechEngine, SpeechRequest};

const SAMPLE_RATE: usize = 16_000;
/// Length of a short clip: the planner's "short job" (voice notes, IVR).
const SHORT_CLIP_S: f64 = 5.0;
/// Batch sizes measured by default, and with `--quick`.
const FULL_BATCHES: [usize; 4] = [1, 4, 8, 16];
const QUICK_BATCHES: [usize; 2] = [1, 8];
/// Sequences decoded together in the decode measurements.
const DECODE_SEQUENCES: [usize; 2] = [1, 8];
/// Prompt tokens of each sequence in the decode measurements: short, so
/// the figure is decode speed, not prefill.
const DECODE_PROMPT_TOKENS: usize = 32;
/// Upper bounds that keep a typo from running for hours.
const MAX_BATCH: usize = 256;
const MAX_LONG_S: f64 = 3600.0;
const MAX_TOKENS: usize = 8192;

/// How long each measurement runs: `--quick` or the full run, with the
/// per-figure flags overriding either.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    batches: Vec<usize>,
    long_s: f64,
    short_clips: usize,
    prefill_tokens: usize,
    decode_tokens: usize,
}

impl Plan {
    fn full() -> Self {
        Plan {
            batches: FULL_BATCHES.to_vec(),
            long_s: 120.0,
            short_clips: 16,
            prefill_tokens: 1024,
            decode_tokens: 128,
        }
    }

    /// About 30 s on an idle 2-core CPU with tiny.en and SmolLM2-135M
    /// (release build): two batch sizes, 40 s recordings (still two
    /// windows each, so the window-to-window decoding is in), 8 clips,
    /// short generations.
    fn quick() -> Self {
        Plan {
            batches: QUICK_BATCHES.to_vec(),
            long_s: 40.0,
            short_clips: 8,
            prefill_tokens: 256,
            decode_tokens: 24,
        }
    }
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Audio files to measure on (any format `transcribe` reads). Default:
    /// the bundled sample from `scripts/make-fixtures` (ten-minutes.wav,
    /// else sample.wav) in $EARSHOT_FIXTURES_DIR or <repo>/target/fixtures.
    files: Vec<PathBuf>,
    /// Write the JSON profile here (what `earshot plan --profile` reads).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// What stdout gets: text (a summary table) or json (the profile).
    #[arg(long, short, default_value = "text")]
    format: String,
    /// A ~30 s run: batch sizes 1 and 8 only, 40 s recordings, 8 clips,
    /// short generations. The profile says `"quick": true`.
    #[arg(long)]
    quick: bool,
    /// Speech batch sizes to measure (default 1,4,8,16; --quick: 1,8).
    #[arg(long, value_delimiter = ',')]
    batches: Option<Vec<usize>>,
    /// Seconds of each long recording (default 120; --quick: 40).
    #[arg(long)]
    long_seconds: Option<f64>,
    /// 5 s clips per short-clip measurement (default 16; --quick: 8).
    #[arg(long)]
    short_clips: Option<usize>,
    /// Prompt tokens in the prefill measurement (default 1024; --quick:
    /// 256; capped by --context).
    #[arg(long)]
    prefill_tokens: Option<usize>,
    /// Tokens generated per sequence in the decode measurements (default
    /// 128; --quick: 24).
    #[arg(long)]
    decode_tokens: Option<usize>,
    /// Hide the progress bar (it is hidden anyway when stderr is not a
    /// terminal).
    #[arg(long)]
    no_progress: bool,
    /// The models and device (the same flags and environment as `work`
    /// and `serve`; the batch sizes above replace --max-batch).
    #[command(flatten)]
    engines: EngineArgs,
}

impl BenchArgs {
    /// Checks every option before anything slow happens (no panics on
    /// input: a bad figure is an error message).
    fn plan(&self) -> Result<Plan> {
        if !matches!(self.format.as_str(), "text" | "json") {
            bail!("unknown format {:?} (text or json)", self.format);
        }
        if self.engines.no_summarizer {
            bail!("earshot bench measures both engines; --no-summarizer does not apply");
        }
        let mut plan = if self.quick {
            Plan::quick()
        } else {
            Plan::full()
        };
        if let Some(b) = &self.batches {
            let mut b = b.clone();
            b.sort_unstable();
            b.dedup();
            if b.is_empty() || b.iter().any(|&n| n == 0 || n > MAX_BATCH) {
                bail!("--batches: each batch size must be 1 to {MAX_BATCH}");
            }
            plan.batches = b;
        }
        if let Some(s) = self.long_seconds {
            if !s.is_finite() || !(SHORT_CLIP_S..=MAX_LONG_S).contains(&s) {
                bail!("--long-seconds must be {SHORT_CLIP_S} to {MAX_LONG_S}, got {s}");
            }
            plan.long_s = s;
        }
        if let Some(n) = self.short_clips {
            if n == 0 || n > 4096 {
                bail!("--short-clips must be 1 to 4096, got {n}");
            }
            plan.short_clips = n;
        }
        if let Some(n) = self.prefill_tokens {
            if !(16..=MAX_TOKENS).contains(&n) {
                bail!("--prefill-tokens must be 16 to {MAX_TOKENS}, got {n}");
            }
            plan.prefill_tokens = n;
        }
        if let Some(n) = self.decode_tokens {
            // Two at least: the decode rate leaves out each sequence's first
            // token (it belongs to the prefill).
            if !(2..=MAX_TOKENS).contains(&n) {
                bail!("--decode-tokens must be 2 to {MAX_TOKENS}, got {n}");
            }
            plan.decode_tokens = n;
        }
        Ok(plan)
    }
}

pub fn run(mut args: BenchArgs) -> Result<ExitCode> {
    let plan = args.plan()?;
    let source = load_source(&args.files)?;
    tracing::info!(
        source_s = format!("{:.1}", source.len() as f64 / SAMPLE_RATE as f64),
        ?plan,
        "bench input ready"
    );

    // One Whisper model is measured: the default one.
    args.engines.whisper_models.truncate(1);
    let whisper_name = args
        .engines
        .whisper_models
        .first()
        .cloned()
        .context("no Whisper model configured")?;
    let llm_name = args.engines.llm.llm_model.clone();

    let steps = 1 + 2 * plan.batches.len() + 1 + DECODE_SEQUENCES.len();
    let bar = progress_bar(steps as u64, args.no_progress);
    bar.set_message("loading models");
    let mut device_bytes = DeviceMemory::default();
    let mut engines = args.engines.load()?;
    let is_cuda = engines.device.is_cuda();
    device_bytes.sample(is_cuda);
    bar.inc(1);
    let mut load_seconds = std::collections::BTreeMap::new();
    load_seconds.insert(
        "whisper".to_string(),
        engines
            .load_seconds
            .get(&whisper_name)
            .copied()
            .unwrap_or(0.0),
    );
    load_seconds.insert(
        "llm".to_string(),
        engines.load_seconds.get(&llm_name).copied().unwrap_or(0.0),
    );
    let llm = engines
        .llm
        .take()
        .context("the LLM did not load (earshot bench needs it)")?;

    // Warm-up (not timed): first passes allocate buffers and fault pages in.
    bar.set_message("warming up");
    transcribe(&mut engines.speech, &[cut(&source, 0, SHORT_CLIP_S)], 1)?;
    generate(&llm.llm, &[vec_prefix(&source_tokens(&llm.llm, "")?, 8)], 2)?;

    let mut long = Vec::new();
    let mut short = Vec::new();
    let mut transcript = String::new();
    for &b in &plan.batches {
        bar.set_message(format!("speech: {b} x {:.0} s", plan.long_s));
        // Offsets 37 s apart: different audio per recording, same every run.
        let inputs: Vec<Vec<f32>> = (0..b)
            .map(|k| cut(&source, k * 37 * SAMPLE_RATE, plan.long_s))
            .collect();
        let (point, text) = measure_speech(&mut engines.speech, &inputs, b)?;
        if transcript.is_empty() {
            transcript = text;
        }
        bar.suspend(|| log_point("long", &point));
        long.push(point);
        bar.inc(1);

        bar.set_message(format!("speech: 5 s clips, batch {b}"));
        // At least one batch's worth, so batch B really decodes B at once.
        let clips: Vec<Vec<f32>> = (0..plan.short_clips.max(b))
            .map(|j| cut(&source, j * 7 * SAMPLE_RATE, SHORT_CLIP_S))
            .collect();
        let (point, _) = measure_speech(&mut engines.speech, &clips, b)?;
        bar.suspend(|| log_point("short", &point));
        short.push(point);
        bar.inc(1);
    }
    device_bytes.sample(is_cuda);

    let tokens = source_tokens(&llm.llm, &transcript)?;
    let prefill_n = plan
        .prefill_tokens
        .min(llm.llm.context_limit().saturating_sub(8))
        .max(1);
    bar.set_message(format!("LLM: prefill {prefill_n} tokens"));
    let prefill = measure_prefill(&llm, &vec_prefix(&tokens, prefill_n))?;
    bar.suspend(|| tracing::info!(tokens_per_s = format!("{prefill:.1}"), "prefill"));
    bar.inc(1);

    let mut decode = Vec::new();
    for &s in &DECODE_SEQUENCES {
        bar.set_message(format!("LLM: decode {s} x {} tokens", plan.decode_tokens));
        let prompt = vec_prefix(&tokens, DECODE_PROMPT_TOKENS);
        let point = measure_decode(&llm, &prompt, s, plan.decode_tokens)?;
        bar.suspend(|| {
            tracing::info!(
                sequences = s,
                tokens_per_s = format!("{:.1}", point.tokens_per_second),
                "decode"
            )
        });
        decode.push(point);
        bar.inc(1);
    }
    device_bytes.sample(is_cuda);
    bar.finish_and_clear();

    let profile = Profile {
        version: PROFILE_VERSION,
        earshot_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: earshot_queue_adapter::now_rfc3339(),
        quick: args.quick,
        machine: machine(&engines.device),
        models: Models {
            whisper: whisper_name,
            llm: llm_name,
            compute_type: dtype_name(compute_dtype(&engines.device)).to_string(),
        },
        load_seconds,
        speech: SpeechThroughput {
            best_audio_seconds_per_second: best(long.iter().chain(&short)),
            long,
            short,
        },
        llm: LlmThroughput {
            best_decode_tokens_per_second: decode
                .iter()
                .map(|d| d.tokens_per_second)
                .fold(0.0, f64::max),
            decode,
            prefill_tokens_per_second: prefill,
        },
        memory: Memory {
            peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
            device_bytes: device_bytes.peak,
        },
    };
    let json = serde_json::to_string_pretty(&profile)?;
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "profile written");
    }
    if args.format == "json" {
        println!("{json}");
    } else {
        print!("{}", render_text(&profile));
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress bar: one tick per measurement, on stderr, only when
/// stderr is a terminal (logs and CI output stay clean).
fn progress_bar(steps: u64, hidden: bool) -> ProgressBar {
    let target = if hidden || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(steps), target);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn log_point(kind: &str, p: &SpeechPoint) {
    tracing::info!(
        kind,
        batch = p.batch,
        audio_s = format!("{:.1}", p.audio_seconds),
        wall_s = format!("{:.2}", p.wall_seconds),
        audio_s_per_s = format!("{:.1}", p.audio_seconds_per_second),
        "speech"
    );
}

/// The audio every measurement cuts from: the files concatenated (decoded
/// to 16 kHz mono), else the bundled fixture.
fn load_source(files: &[PathBuf]) -> Result<Vec<f32>> {
    let files = if files.is_empty() {
        vec![bundled_sample()?]
    } else {
        files.to_vec()
    };
    let mut source = Vec::new();
    for f in &files {
        let samples = audio::load_file(f, DecodeLimits::default())
            .with_context(|| format!("reading {}", f.display()))?;
        source.extend_from_slice(&samples);
    }
    let secs = source.len() as f64 / SAMPLE_RATE as f64;
    if secs < SHORT_CLIP_S {
        bail!("the bench audio is {secs:.1} s long; it needs at least {SHORT_CLIP_S} s");
    }
    Ok(source)
}

/// The fixtures folder `scripts/make-fixtures` fills: `$EARSHOT_FIXTURES_DIR`,
/// else `target/fixtures` in the checkout this binary was built from.
fn bundled_sample() -> Result<PathBuf> {
    let dirs: Vec<PathBuf> = std::env::var_os("EARSHOT_FIXTURES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures")])
        .collect();
    for dir in &dirs {
        // Ten minutes of varied speech first: tiling the 20 s dialogue
        // would feed Whisper the same words over and over.
        for name in ["ten-minutes.wav", "sample.wav"] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "no sample audio found (looked for ten-minutes.wav and sample.wav in {}): \
         run scripts/make-fixtures, or give audio files: earshot bench FILE...",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `secs` of audio starting at sample `start`, wrapping around the end of
/// `source` (the tiling that makes any input long enough).
fn cut(source: &[f32], start: usize, secs: f64) -> Vec<f32> {
    let n = (secs * SAMPLE_RATE as f64).round() as usize;
    if source.is_empty() {
        return vec![0.0; n];
    }
    (0..n).map(|i| source[(start + i) % source.len()]).collect()
}

/// Decodes `inputs` with `batch` windows per Whisper batch; the transcript
/// of the first input comes back for the LLM's prompt.
fn transcribe(
    speech: &mut SpeechEngine,
    inputs: &[Vec<f32>],
    batch: usize,
) -> Result<(f64, String)> {
    speech.max_batch = batch.max(1);
    let reqs: Vec<SpeechRequest<'_>> = inputs
        .iter()
        .map(|s| SpeechRequest {
            samples: s,
            model: None,
            language: None,
            prompt: None,
            temperature: 0.0,
            word_timestamps: false,
            vad: false,
            diarize: None,
        })
        .collect();
    let t = Instant::now();
    let results = speech.transcribe_many(&reqs);
    let wall = t.elapsed().as_secs_f64();
    let mut first = None;
    for r in results {
        let tr = r.context("transcribing the bench audio")?;
        first.get_or_insert(tr.text);
    }
    Ok((wall, first.unwrap_or_default()))
}

fn measure_speech(
    speech: &mut SpeechEngine,
    inputs: &[Vec<f32>],
    batch: usize,
) -> Result<(SpeechPoint, String)> {
    let audio: f64 = inputs.iter().map(|s| s.len() as f64).sum::<f64>() / SAMPLE_RATE as f64;
    let (wall, text) = transcribe(speech, inputs, batch)?;
    let wall = wall.max(1e-9);
    Ok((
        SpeechPoint {
            batch,
            audio_seconds: audio,
            wall_seconds: wall,
            audio_seconds_per_second: audio / wall,
        },
        text,
    ))
}

/// Tokens for the LLM measurements: the bench transcript as plain text
/// (what the summarizer reads), with a fixed paragraph when the audio had
/// no words. Prompt content does not change the speed, only its length.
fn source_tokens(llm: &Llm, transcript: &str) -> Result<Vec<u32>> {
    const FALLBACK: &str = "The team reviewed the quarterly numbers, agreed to move \
        the launch by two weeks, and asked finance for a revised budget before Friday. \
        Support reported fewer tickets after the last release.";
    let text = if transcript.split_whitespace().count() < 20 {
        FALLBACK
    } else {
        transcript
    };
    let tokens = llm
        .text_prompt(text)
        .context("tokenizing the bench prompt")?;
    if tokens.is_empty() {
        bail!("the LLM's tokenizer produced no tokens for the bench prompt");
    }
    Ok(tokens)
}

/// The first `n` tokens of `tokens`, repeated as often as needed.
fn vec_prefix(tokens: &[u32], n: usize) -> Vec<u32> {
    tokens.iter().copied().cycle().take(n).collect()
}

/// Greedy generations of exactly `max_new` tokens each (end-of-turn
/// ignored, so every run does the same work).
fn generate(
    llm: &Llm,
    prompts: &[Vec<u32>],
    max_new: usize,
) -> Result<Vec<earshot_inference::llm::GenOutput>> {
    let reqs = prompts
        .iter()
        .map(|p| GenRequest {
            prompt: p.clone(),
            params: SamplingParams {
                max_new_tokens: max_new,
                ignore_eos: true,
                ..SamplingParams::default()
            },
        })
        .collect();
    let opts = earshot_inference::llm::EngineOptions {
        max_batch: prompts.len().max(1),
        ..earshot_inference::llm::EngineOptions::default()
    };
    generate_all(llm, reqs, opts, |_, _| {})
        .into_iter()
        .map(|r| r.context("running the LLM"))
        .collect()
}

/// Prompt tokens per second: one prompt, one generated token; the time to
/// that first token is the prefill.
fn measure_prefill(llm: &LlmEngine, prompt: &[u32]) -> Result<f64> {
    let out = generate(&llm.llm, &[prompt.to_vec()], 1)?;
    let first = out.first().context("no prefill result")?;
    Ok(first.prompt_tokens as f64 / first.first_token_s.max(1e-9))
}

/// Decode tokens per second with `sequences` sequences together: tokens
/// after each sequence's first, over the time after the last sequence's
/// first token (so the prefill is left out, as in `generate --format json`).
fn measure_decode(
    llm: &LlmEngine,
    prompt: &[u32],
    sequences: usize,
    tokens: usize,
) -> Result<DecodePoint> {
    let prompts = vec![prompt.to_vec(); sequences];
    let t = Instant::now();
    let out = generate(&llm.llm, &prompts, tokens)?;
    let wall = t.elapsed().as_secs_f64();
    let generated: usize = out.iter().map(|o| o.tokens.len()).sum();
    let prefill = out.iter().map(|o| o.first_token_s).fold(0.0, f64::max);
    let decoded = generated.saturating_sub(out.len());
    Ok(DecodePoint {
        sequences,
        tokens_per_second: decoded as f64 / (wall - prefill).max(1e-9),
    })
}

fn best<'a>(points: impl Iterator<Item = &'a SpeechPoint>) -> f64 {
    points
        .map(|p| p.audio_seconds_per_second)
        .fold(0.0, f64::max)
}

/// faster-whisper's names for the compute type, which the planner and
/// users already know.
fn dtype_name(d: candle_core::DType) -> &'static str {
    match d {
        candle_core::DType::F16 => "float16",
        candle_core::DType::BF16 => "bfloat16",
        candle_core::DType::U8 => "int8",
        _ => "float32",
    }
}

/// Peak resident set size so far (`VmHWM`), in bytes; `None` off Linux.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kb_field(&status, "VmHWM:")
}

/// `NAME:   1234 kB` → 1234 × 1024.
fn parse_kb_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// This process's GPU memory as `nvidia-smi` sees it, kept at its largest
/// sample. candle exposes no allocator statistics, so this is sampled
/// between phases and is a lower bound of the true peak; `None` on CPU or
/// without `nvidia-smi`.
#[derive(Default)]
struct DeviceMemory {
    peak: Option<u64>,
}

impl DeviceMemory {
    fn sample(&mut self, cuda: bool) {
        if !cuda {
            return;
        }
        let pid = std::process::id().to_string();
        let Some(out) = nvidia_smi(&[
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ]) else {
            return;
        };
        let mib: u64 = out
            .lines()
            .filter_map(|l| {
                let mut f = l.split(',').map(str::trim);
                (f.next()? == pid).then(|| f.next()?.parse::<u64>().ok())?
            })
            .sum();
        if mib > 0 {
            let bytes = mib * 1024 * 1024;
            self.peak = Some(self.peak.unwrap_or(0).max(bytes));
        }
    }
}

/// `nvidia-smi ARGS` stdout, or `None` when it is missing or fails.
fn nvidia_smi(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn machine(device: &candle_core::Device) -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| cpu_model_name(&t))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cpu_cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (device, gpu_name, gpu_memory_bytes) = if device.is_cuda() {
        let (name, mem) = nvidia_smi(&[
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
            "-i",
            "0",
        ])
        .and_then(|o| parse_gpu_line(&o))
        .map_or((None, None), |(n, m)| (Some(n), m));
        ("cuda:0".to_string(), name, mem)
    } else {
        ("cpu".to_string(), None, None)
    };
    Machine {
        cpu_model,
        cpu_cores,
        device,
        gpu_name,
        gpu_memory_bytes,
    }
}

/// The first `model name` in /proc/cpuinfo. Some ARM kernels write no
/// such line: `None`, and the caller names the architecture instead.
fn cpu_model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `NVIDIA H200, 143771` → (name, bytes).
fn parse_gpu_line(out: &str) -> Option<(String, Option<u64>)> {
    let line = out.lines().next()?;
    let (name, mib) = line.rsplit_once(',')?;
    let name = name.trim().to_string();
    let bytes = mib.trim().parse::<u64>().ok().map(|m| m * 1024 * 1024);
    (!name.is_empty()).then_some((name, bytes))
}

/// The summary table `--format text` prints.
fn render_text(p: &Profile) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let m = &p.machine;
    let gpu = match (&m.gpu_name, m.gpu_memory_bytes) {
        (Some(n), Some(b)) => format!(", {n} ({:.0} GiB)", b as f64 / GIB),
        (Some(n), None) => format!(", {n}"),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "earshot {} bench{}: {} + {} on {} ({}), {} ({} cores){gpu}",
        p.earshot_version,
        if p.quick { " (quick)" } else { "" },
        p.models.whisper,
        p.models.llm,
        m.device,
        p.models.compute_type,
        m.cpu_model,
        m.cpu_cores,
    );
    let long_s = p
        .speech
        .long
        .first()
        .map_or(0.0, |x| x.audio_seconds / x.batch.max(1) as f64);
    let _ = writeln!(s, "\nspeech, audio-seconds per wall-second");
    let _ = writeln!(
        s,
        "  {:>5}  {:>14}  {:>14}",
        "batch",
        format!("long ({long_s:.0} s)"),
        "short (5 s)"
    );
    for l in &p.speech.long {
        let sh = p
            .speech
            .short
            .iter()
            .find(|x| x.batch == l.batch)
            .map_or("-".to_string(), |x| {
                format!("{:.1}", x.audio_seconds_per_second)
            });
        let _ = writeln!(
            s,
            "  {:>5}  {:>14.1}  {:>14}",
            l.batch, l.audio_seconds_per_second, sh
        );
    }
    let _ = writeln!(s, "  best   {:.1}", p.speech.best_audio_seconds_per_second);
    let _ = writeln!(s, "\nLLM, tokens per second");
    let _ = writeln!(
        s,
        "  prefill          {:>8.1}",
        p.llm.prefill_tokens_per_second
    );
    for d in &p.llm.decode {
        let _ = writeln!(
            s,
            "  decode, {:>2} seq   {:>8.1}",
            d.sequences, d.tokens_per_second
        );
    }
    let dev = match p.memory.device_bytes {
        Some(b) => format!("{:.2} GiB", b as f64 / GIB),
        None => "n/a".to_string(),
    };
    let _ = writeln!(
        s,
        "\nmemory: peak RSS {:.2} GiB, device {dev}",
        p.memory.peak_rss_bytes as f64 / GIB
    );
    let loads: Vec<String> = p
        .load_seconds
        .iter()
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect();
    let _ = writeln!(s, "load: {}", loads.join(", "));
    s
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan_of(args: &[&str]) -> Plan {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("arguments parse");
        cli.bench.plan().expect("a valid plan")
    }

    #[test]
    fn quick_and_full_plans_and_their_overrides() {
        assert_eq!(plan_of(&[]), Plan::full());
        let q = plan_of(&["--quick"]);
        assert_eq!(q, Plan::quick());
        assert_eq!(
            (q.batches.as_slice(), q.long_s, q.short_clips),
            (&[1, 8][..], 40.0, 8)
        );
        assert_eq!((q.prefill_tokens, q.decode_tokens), (256, 24));
        // The per-figure flags override either plan.
        let o = plan_of(&[
            "--quick",
            "--batches",
            "2,1,2",
            "--long-seconds",
            "31",
            "--short-clips",
            "2",
        ]);
        assert_eq!(
            (o.batches.as_slice(), o.long_s, o.short_clips),
            (&[1, 2][..], 31.0, 2)
        );
        assert_eq!(o.decode_tokens, 24);
    }

    #[test]
    fn cut_wraps_around_short_sources() {
        let src: Vec<f32> = (0..SAMPLE_RATE).map(|i| i as f32).collect();
        let c = cut(&src, SAMPLE_RATE - 2, 1.0);
        assert_eq!(c.len(), SAMPLE_RATE);
        assert_eq!(&c[..4], &[15_998.0, 15_999.0, 0.0, 1.0]);
    }

    #[test]
    fn kb_fields_and_cpu_names_parse() {
        let status = "Name:\tearshot\nVmPeak:\t  900 kB\nVmHWM:\t   612344 kB\n";
        assert_eq!(parse_kb_field(status, "VmHWM:"), Some(612_344 * 1024));
        assert_eq!(parse_kb_field(status, "VmRSS:"), None);
        let info = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            cpu_model_name(info).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_model_name("processor\t: 0\n"), None);
        assert_eq!(
            parse_gpu_line("NVIDIA H200, 143771\n"),
            Some(("NVIDIA H200".into(), Some(143_771 * 1024 * 1024)))
        );
        assert_eq!(parse_gpu_line(""), None);
    }

    fn point(batch: usize, audio: f64, wall: f64) -> SpeechPoint {
        SpeechPoint {
            batch,
            audio_seconds: audio,
            wall_seconds: wall,
            audio_seconds_per_second: audio / wall,
        }
    }

    #[test]
    fn text_summary_lists_every_point() {
        let p = Profile {
            version: PROFILE_VERSION,
            earshot_version: "0.1.0".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            quick: true,
            machine: Machine {
                cpu_model: "Test CPU".into(),
                cpu_cores: 2,
                device: "cpu".into(),
                gpu_name: None,
                gpu_memory_bytes: None,
            },
            models: Models {
                whisper: "tiny.en".into(),
                llm: "smollm2-135m-instruct".into(),
                compute_type: "float32".into(),
            },
            load_seconds: [("whisper".to_string(), 0.25), ("llm".to_string(), 0.5)].into(),
            speech: SpeechThroughput {
                long: vec![point(1, 60.0, 4.0), point(8, 480.0, 12.0)],
                short: vec![point(1, 40.0, 8.0), point(8, 40.0, 2.0)],
                best_audio_seconds_per_second: 40.0,
            },
            llm: LlmThroughput {
                decode: vec![
                    DecodePoint {
                        sequences: 1,
                        tokens_per_second: 90.5,
                    },
                    DecodePoint {
                        sequences: 8,
                        tokens_per_second: 300.0,
                    },
                ],
                best_decode_tokens_per_second: 300.0,
                prefill_tokens_per_second: 800.0,
            },
            memory: Memory {
                peak_rss_bytes: 512 * 1024 * 1024,
                device_bytes: None,
            },
        };
        let t = render_text(&p);
        assert!(t.contains("(quick)"), "{t}");
        assert!(t.contains("long (60 s)"), "{t}");
        let rows: Vec<Vec<&str>> = t
            .lines()
            .map(|l| l.split_whitespace().collect())
            .filter(|w: &Vec<&str>| w.len() == 3 && w[0].parse::<usize>().is_ok())
            .collect();
        assert_eq!(rows, [["1", "15.0", "5.0"], ["8", "40.0", "20.0"]], "{t}");
        assert!(t.contains("best   40.0"), "{t}");
        assert!(t.contains("decode,  8 seq      300.0"), "{t}");
        assert!(t.contains("peak RSS 0.50 GiB, device n/a"), "{t}");
        assert!(t.contains("load: llm 0.50 s, whisper 0.25 s"), "{t}");
    }

    #[test]
    fn prefix_repeats_short_token_lists() {
        assert_eq!(vec_prefix(&[1, 2, 3], 7), [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(vec_prefix(&[1, 2, 3], 2), [1, 2]);
    }
}
