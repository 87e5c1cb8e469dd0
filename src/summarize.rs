//! `earshot summarize`, `earshot process` and `earshot generate`: the LLM
//! engine from the command line.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use earshot_inference::device::{self, ComputeType, DeviceKind};
use earshot_inference::llm::summarize::{split_text, summarize_many, SummaryOptions};
use earshot_inference::llm::{
    generate_all, ChatMessage, EngineOptions, GenRequest, Llm, SamplingParams,
};
use earshot_inference::whisper::{TranscribeOptions, Whisper};
use serde_json::json;

/// Options shared by every command that runs the LLM.
#[derive(clap::Args, Clone)]
pub struct LlmArgs {
    /// LLM: a catalog name (smollm2-135m-instruct, gemma3-270m, qwen2.5-0.5b-instruct, …),
    /// a .gguf file, or a folder holding one.
    #[arg(
        long = "llm-model",
        visible_alias = "model",
        alias = "llm",
        env = "EARSHOT_LLM_MODEL",
        default_value = earshot_models::DEFAULT_LLM
    )]
    pub llm_model: String,
    /// Most tokens per generated summary or completion.
    #[arg(long, env = "EARSHOT_MAX_TOKENS", default_value_t = 200)]
    pub max_tokens: usize,
    /// 0 is greedy and deterministic.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// 1 disables; summaries default to a mild 1.1 against loops.
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop generating at this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Tokens per sequence (prompt + output); longer transcripts are
    /// summarized in chunks.
    #[arg(long, env = "EARSHOT_LLM_CONTEXT", default_value_t = 2048)]
    pub context: usize,
    /// Sequences decoded together.
    #[arg(long = "llm-batch", env = "EARSHOT_LLM_MAX_BATCH", default_value_t = 8)]
    pub llm_batch: usize,
    /// cpu or cuda.
    #[arg(long, env = "EARSHOT_DEVICE", default_value = "cpu")]
    pub device: String,
}

impl LlmArgs {
    fn sampling(&self, default_penalty: f32) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty.unwrap_or(default_penalty),
            seed: self.seed,
            max_new_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ..SamplingParams::default()
        }
    }

    pub(crate) fn engine(&self) -> EngineOptions {
        EngineOptions {
            max_batch: self.llm_batch.max(1),
            ..EngineOptions::default()
        }
    }

    pub(crate) fn summary_options(&self) -> SummaryOptions {
        SummaryOptions {
            max_tokens: self.max_tokens,
            sampling: self.sampling(1.1),
            chunk_tokens: None,
            engine: self.engine(),
        }
    }

    pub(crate) fn load(&self) -> Result<(Llm, f64)> {
        let kind: DeviceKind = self.device.parse()?;
        let dev = device::open(kind, 0)?;
        let t = Instant::now();
        let resolved = earshot_models::resolve_llm(&self.llm_model)
            .with_context(|| format!("finding LLM {:?}", self.llm_model))?;
        let mut llm = Llm::load(&resolved.gguf, resolved.tokenizer_json.as_deref(), &dev)
            .with_context(|| format!("loading {}", resolved.gguf.display()))?;
        if let Some(e) = resolved.catalog {
            llm.instruct = e.instruct;
        }
        llm.set_max_context(self.context);
        let secs = t.elapsed().as_secs_f64();
        tracing::info!(model = %llm.name, arch = ?llm.model.config().arch, instruct = llm.instruct, load_s = format!("{secs:.2}"), "LLM ready");
        Ok((llm, secs))
    }
}

/// The summary of a transcript with no words (silence): not an error.
pub(crate) fn empty_summary() -> earshot_inference::llm::summarize::Summary {
    earshot_inference::llm::summarize::Summary {
        text: String::new(),
        chunks: 0,
        levels: 0,
        prompt_tokens: 0,
        generated_tokens: 0,
        seconds: 0.0,
    }
}

#[derive(clap::Args)]
pub struct SummarizeArgs {
    /// Transcript: plain text, or the JSON `earshot transcribe --format json`
    /// writes (its segments are kept whole when chunking). `-` reads stdin.
    #[arg(default_value = "-")]
    file: String,
    /// text or json.
    #[arg(long, short, default_value = "text")]
    format: String,
    #[command(flatten)]
    llm: LlmArgs,
}

/// Segments of a transcript file: Whisper JSON segments, or text sentences.
pub(crate) fn transcript_segments(body: &str) -> Vec<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(segs) = v.get("segments").and_then(|s| s.as_array()) {
            let out: Vec<String> = segs
                .iter()
                .filter_map(|s| s.get("text").and_then(|t| t.as_str()))
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            if !out.is_empty() {
                return out;
            }
        }
        if let Some(t) = v.get("text").and_then(|t| t.as_str()) {
            return split_text(t);
        }
    }
    split_text(body)
}

fn check_format(f: &str) -> Result<()> {
    if !matches!(f, "text" | "json") {
        bail!("unknown format {f:?} (text or json)");
    }
    Ok(())
}

pub fn summarize(args: SummarizeArgs) -> Result<ExitCode> {
    check_format(&args.format)?;
    let body = if args.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the transcript from stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?
    };
    let segments = transcript_segments(&body);
    if segments.is_empty() {
        bail!("the transcript is empty");
    }
    let (llm, load_s) = args.llm.load()?;
    let summary = summarize_many(&llm, &[segments], &args.llm.summary_options())
        .pop()
        .context("no result")??;
    if args.format == "json" {
        let out = json!({
            "summary": summary.text,
            "model": llm.name,
            "chunks": summary.chunks,
            "levels": summary.levels,
            "prompt_tokens": summary.prompt_tokens,
            "generated_tokens": summary.generated_tokens,
            "timings": {"load_s": load_s, "summarize_s": summary.seconds},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", summary.text);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ProcessArgs {
    /// Audio files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Whisper model.
    #[arg(
        long,
        short = 'm',
        env = "EARSHOT_WHISPER_MODEL",
        default_value = "tiny.en"
    )]
    whisper_model: String,
    /// Spoken language; detected when omitted on multilingual models.
    #[arg(long, short)]
    language: Option<String>,
    /// Windows decoded together per batch.
    #[arg(long, env = "EARSHOT_MAX_BATCH", default_value_t = 8)]
    batch: usize,
    #[arg(long, env = "EARSHOT_MAX_AUDIO_SECONDS", default_value_t = 4.0 * 3600.0)]
    max_audio_seconds: f64,
    /// text or json (one JSON object per line, one line per file).
    #[arg(long, short, default_value = "text")]
    format: String,
    /// Time every word: with --format json, each segment carries `words`.
    #[arg(long)]
    word_timestamps: bool,
    /// Whisper weights: int8 (CPU), float32, float16 (CUDA), or default.
    #[arg(long, env = "EARSHOT_COMPUTE_TYPE", default_value = "default")]
    compute_type: ComputeType,
    #[command(flatten)]
    pipeline: crate::transcribe::PipelineArgs,
    #[command(flatten)]
    diarize: crate::diarization::DiarizeArgs,
    #[command(flatten)]
    llm: LlmArgs,
}

pub fn process(args: ProcessArgs) -> Result<ExitCode> {
    check_format(&args.format)?;
    let kind: DeviceKind = args.llm.device.parse()?;
    let dev = device::open(kind, 0)?;
    let diarizer = crate::diarization::CliDiarizer::load(&args.diarize, &dev)?;
    let t = Instant::now();
    let whisper = Whisper::load_with(&args.whisper_model, &dev, args.compute_type)
        .with_context(|| format!("loading Whisper model {:?}", args.whisper_model))?;
    let whisper_load_s = t.elapsed().as_secs_f64();
    let (llm, llm_load_s) = args.llm.load()?;

    let (inputs, mut failed) = crate::transcribe::load_inputs(&args.files, args.max_audio_seconds);
    let opts = TranscribeOptions {
        language: args.language.clone(),
        max_batch: args.batch.max(1),
        // Speakers are given word by word.
        word_timestamps: args.word_timestamps || diarizer.is_some(),
        // As `transcribe`: words timed only for speakers steer nothing.
        words_steer_decoding: args.word_timestamps,
        ..Default::default()
    };
    let mut opts = opts;
    args.pipeline.apply(&mut opts)?;
    let t = Instant::now();
    let refs: Vec<&[f32]> = inputs.iter().map(|(_, s)| s.as_slice()).collect();
    let (transcripts, turns) = crate::diarization::alongside(diarizer.as_ref(), &refs, || {
        whisper.transcribe_batch(&refs, &opts, None)
    });
    let transcribe_s = t.elapsed().as_secs_f64();
    drop(whisper);

    let mut ok = Vec::new();
    for (((i, _), r), turns) in inputs.iter().zip(transcripts).zip(turns) {
        match crate::diarization::labelled(r, turns) {
            Ok(tr) => ok.push((*i, tr)),
            Err(e) => {
                eprintln!("error: {}: {e}", args.files[*i].display());
                failed = true;
            }
        }
    }
    let docs: Vec<Vec<String>> = ok
        .iter()
        .map(|(_, tr)| {
            crate::diarization::summary_segments(
                &tr.segments
                    .iter()
                    .map(|s| (s.speaker.as_deref(), s.text.as_str()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let t = Instant::now();
    let summaries = summarize_many(&llm, &docs, &args.llm.summary_options());
    let summarize_s = t.elapsed().as_secs_f64();
    for ((i, tr), s) in ok.iter().zip(summaries) {
        let path = args.files[*i].display().to_string();
        let summary = match s {
            Ok(s) => s,
            Err(e) if tr.segments.is_empty() => {
                // Silence: no words, nothing to summarize. Not an error.
                tracing::info!(file = %path, reason = %e, "no speech; empty summary");
                empty_summary()
            }
            Err(e) => {
                eprintln!("error: {path}: summarizing: {e}");
                failed = true;
                continue;
            }
        };
        if args.format == "json" {
            let out = json!({
                "file": path,
                "transcript": tr.text.trim(),
                "language": tr.language,
                "duration": tr.duration,
                "segments": tr.segments.iter().map(crate::formats::segment_record).collect::<Vec<_>>(),
                "summary": summary.text,
                "models": {"whisper": args.whisper_model, "llm": llm.name},
                "summary_stats": {"chunks": summary.chunks, "levels": summary.levels, "prompt_tokens": summary.prompt_tokens, "generated_tokens": summary.generated_tokens},
                "timings": {
                    "whisper_load_s": whisper_load_s,
                    "llm_load_s": llm_load_s,
                    "transcribe_s": transcribe_s,
                    "summarize_s": summarize_s,
                },
            });
            println!("{}", serde_json::to_string(&out)?);
        } else {
            if args.files.len() > 1 {
                println!("== {path} ==");
            }
            println!(
                "Transcript:\n{}\n\nSummary:\n{}\n",
                tr.text.trim(),
                summary.text
            );
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Prompt text, continued as is (special tokens in it are honoured).
    #[arg(long, conflicts_with = "chat")]
    prompt: Option<String>,
    /// A user message, wrapped in the model's chat template.
    #[arg(long)]
    chat: Option<String>,
    /// Run the prompt this many times at once (aggregate throughput).
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// text or json.
    #[arg(long, short, default_value = "text")]
    format: String,
    /// Generate exactly --max-tokens tokens, past end-of-turn tokens (benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    llm: LlmArgs,
}

pub fn generate(args: GenerateArgs) -> Result<ExitCode> {
    check_format(&args.format)?;
    let (llm, load_s) = args.llm.load()?;
    let prompt = match (&args.prompt, &args.chat) {
        (Some(p), _) => llm.text_prompt(p)?,
        (None, Some(c)) => llm.chat_prompt(&[ChatMessage::new("user", c.clone())])?,
        (None, None) => bail!("give --prompt or --chat"),
    };
    let params = SamplingParams {
        ignore_eos: args.ignore_eos,
        ..args.llm.sampling(1.0)
    };
    let reqs: Vec<GenRequest> = (0..args.copies.max(1))
        .map(|i| GenRequest {
            prompt: prompt.clone(),
            params: SamplingParams {
                seed: params.seed + i as u64,
                ..params.clone()
            },
        })
        .collect();
    let t = Instant::now();
    let outs = generate_all(&llm, reqs, args.llm.engine(), |_, _| {});
    let wall = t.elapsed().as_secs_f64();
    let mut generated = 0;
    let mut results = Vec::new();
    for o in outs {
        let o = o?;
        generated += o.tokens.len();
        results.push(o);
    }
    let first = &results[0];
    if args.format == "json" {
        // Decode throughput excludes the prefill (time to first token).
        let prefill = results.iter().map(|o| o.first_token_s).fold(0.0, f64::max);
        let out = json!({
            "model": llm.name,
            "prompt_tokens": first.prompt_tokens,
            "prompt_ids": prompt,
            "tokens": first.tokens,
            "text": first.text,
            "finish": first.finish,
            "copies": results.len(),
            "generated_tokens": generated,
            "load_s": load_s,
            "wall_s": wall,
            "first_token_s": prefill,
            "tokens_per_s": generated as f64 / wall.max(1e-9),
            "decode_tokens_per_s": (generated.saturating_sub(results.len())) as f64 / (wall - prefill).max(1e-9),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", first.text);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::transcript_segments;

    #[test]
    fn transcript_json_or_text() {
        let j = r#"{"text":"a b","segments":[{"text":" Hello."},{"text":" Bye. "}]}"#;
        assert_eq!(transcript_segments(j), ["Hello.", "Bye."]);
        assert_eq!(
            transcript_segments(r#"{"text":"One. Two."}"#),
            ["One.", "Two."]
        );
        assert_eq!(
            transcript_segments("One. Two.\nThree"),
            ["One.", "Two.", "Three"]
        );
    }
}
