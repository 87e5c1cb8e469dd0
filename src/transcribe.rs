//! `earshot transcribe`: files in, transcripts out, all files batched
//! through one loaded model.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use earshot_inference::audio::{self, DecodeLimits};
use earshot_inference::device::{self, ComputeType, DeviceKind};
use earshot_inference::vad::VadOptions;
use earshot_inference::whisper::format::RenderOptions;
use earshot_inference::whisper::{EncoderWindow, Pipeline, Task, TranscribeOptions, Whisper};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::diarization::{alongside, labelled, CliDiarizer, DiarizeArgs};
use crate::formats::{self, needs_words, Format};

#[derive(clap::Args)]
pub struct Args {
    /// Audio files (WAV, FLAC, MP3, OGG Vorbis, M4A/AAC, ALAC).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model: a catalog name (tiny.en, base, large-v3-turbo, …) or a folder.
    #[arg(long, short, env = "EARSHOT_WHISPER_MODEL", default_value = "tiny.en")]
    model: String,
    /// Output format: text, json, verbose_json, srt, vtt, rttm,
    /// diarized_json or transcribe (Amazon Transcribe's output JSON; turns
    /// on --word-timestamps). Several, comma-separated, or `all`, with
    /// --output: one transcription, one file per format.
    #[arg(long, short, default_value = "text")]
    format: String,
    /// Spoken language (ISO code); detected when omitted on multilingual models.
    #[arg(long, short)]
    language: Option<String>,
    /// Translate to English instead of transcribing (multilingual models).
    #[arg(long)]
    translate: bool,
    /// cpu or cuda.
    #[arg(long, env = "EARSHOT_DEVICE", default_value = "cpu")]
    device: String,
    /// Whisper weights: int8 (CPU), float32, float16 (CUDA), or default
    /// (float16 on CUDA, float32 on the CPU).
    #[arg(long, env = "EARSHOT_COMPUTE_TYPE", default_value = "default")]
    compute_type: ComputeType,
    /// Write `<name>.<ext>` files here instead of printing (with several
    /// formats, `<name>.verbose_json.json` etc. for the JSON ones).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Text that conditions the first window (names, jargon).
    #[arg(long)]
    initial_prompt: Option<String>,
    /// Windows decoded together per batch.
    #[arg(long, env = "EARSHOT_MAX_BATCH", default_value_t = 8)]
    batch: usize,
    /// Do not condition each window on the previous window's text.
    #[arg(long)]
    no_condition_on_previous_text: bool,
    /// Decode without timestamp tokens (one segment per window).
    #[arg(long)]
    without_timestamps: bool,
    /// Temperatures tried in order (fallback when a window looks wrong).
    #[arg(long, value_delimiter = ',', default_value = "0,0.2,0.4,0.6,0.8,1.0")]
    temperature: Vec<f32>,
    /// Refuse audio longer than this many seconds.
    #[arg(long, env = "EARSHOT_MAX_AUDIO_SECONDS", default_value_t = 4.0 * 3600.0)]
    max_audio_seconds: f64,
    /// Time every word (json and verbose_json then carry `words`).
    #[arg(long)]
    word_timestamps: bool,
    /// srt and vtt: captions of at most N words per cue, each timed by its
    /// words (karaoke style). Turns on --word-timestamps.
    #[arg(long, value_name = "N")]
    max_words_per_cue: Option<usize>,
    /// With word timestamps: skip silences longer than this many seconds
    /// around segments that look hallucinated.
    #[arg(long, value_name = "SECONDS")]
    hallucination_silence_threshold: Option<f32>,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    diarize: DiarizeArgs,
}

/// Which pipeline and whether to skip non-speech: shared by `transcribe`
/// and `process`.
#[derive(clap::Args, Debug)]
pub(crate) struct PipelineArgs {
    /// Transcribe only the speech Silero VAD finds (faster-whisper's
    /// vad_filter): silence and music are skipped, times stay on the
    /// recording's timeline. Needs the VAD model (scripts/fetch-models).
    #[arg(long)]
    vad: bool,
    /// VAD settings as faster-whisper's vad_parameters, in JSON, e.g.
    /// '{"threshold": 0.6, "min_silence_duration_ms": 500}' (implies --vad).
    #[arg(long, value_name = "JSON")]
    vad_parameters: Option<String>,
    /// `batched`: VAD windows of at most 30 s of speech, each decoded on
    /// its own and all side by side (faster-whisper's
    /// BatchedInferencePipeline). `sequential`: the reference's 30 s
    /// windows, each conditioned on the text before it.
    #[arg(long, env = "EARSHOT_PIPELINE", default_value = "sequential")]
    pipeline: Pipeline,
    /// With --pipeline batched: retry a window whose text looks wrong
    /// (compression ratio, log probability) at the next --temperature, as
    /// the sequential pipeline does. Off by default, as in faster-whisper's
    /// BatchedInferencePipeline: each retry is a whole extra pass of its
    /// window.
    #[arg(long, env = "EARSHOT_BATCHED_FALLBACK")]
    batched_fallback: bool,
    /// Encoder window over audio shorter than 30 s: `fit` (the audio plus
    /// 5-10 s of padding: a 5 s clip costs a third of a 30 s window and
    /// reads as well; a window that looks like silence is decided 30 s
    /// wide) or `full` (always 30 s, as the reference and faster-whisper).
    #[arg(long, env = "EARSHOT_ENCODER_WINDOW", default_value = "fit")]
    encoder_window: EncoderWindow,
}

impl PipelineArgs {
    /// Sets `vad`, `vad_parameters`, `pipeline`, `batched_fallback` and
    /// `encoder_window` on `opts`.
    pub(crate) fn apply(&self, opts: &mut TranscribeOptions) -> Result<()> {
        opts.pipeline = self.pipeline;
        opts.batched_fallback = self.batched_fallback;
        opts.encoder_window = self.encoder_window;
        opts.vad = self.vad || self.vad_parameters.is_some();
        if let Some(json) = &self.vad_parameters {
            let v: VadOptions =
                serde_json::from_str(json).with_context(|| format!("--vad-parameters {json:?}"))?;
            v.validate().context("--vad-parameters")?;
            opts.vad_parameters = Some(v);
        }
        Ok(())
    }
}

/// What `--format`, `--word-timestamps`, `--max-words-per-cue` and
/// `--hallucination-silence-threshold` ask for, checked together.
#[derive(Debug, PartialEq)]
pub(crate) struct WordSettings {
    /// At least one; several only with `--output`.
    pub formats: Vec<Format>,
    pub render: RenderOptions,
    /// Explicit, or implied by the format or the cue size.
    pub word_timestamps: bool,
    pub hallucination_silence_threshold: Option<f32>,
}

/// Checks the word-timing flags: `--max-words-per-cue` is at least 1 and
/// only with srt/vtt among the formats; `transcribe` and word cues turn word timestamps on;
/// `--hallucination-silence-threshold` is a positive number of seconds and
/// needs word timestamps (it works on word timings), so without them it
/// is an error rather than silently ignored.
pub(crate) fn word_settings(
    format: &str,
    word_timestamps: bool,
    max_words_per_cue: Option<usize>,
    hallucination_silence_threshold: Option<f32>,
) -> Result<WordSettings> {
    let formats = Format::parse_list(format)
        .map_err(|e| anyhow::anyhow!("{e}; several: comma-separated, or all"))?;
    if let Some(n) = max_words_per_cue {
        if n == 0 {
            bail!("--max-words-per-cue must be at least 1");
        }
        if !formats.iter().any(|f| f.is_captions()) {
            bail!("--max-words-per-cue applies to --format srt and vtt only");
        }
    }
    let render = RenderOptions { max_words_per_cue };
    let word_timestamps = word_timestamps || needs_words(&formats, &render);
    if let Some(s) = hallucination_silence_threshold {
        if !(s.is_finite() && s > 0.0) {
            bail!("--hallucination-silence-threshold must be a positive number of seconds");
        }
        if !word_timestamps {
            bail!("--hallucination-silence-threshold needs --word-timestamps");
        }
    }
    Ok(WordSettings {
        formats,
        render,
        word_timestamps,
        hallucination_silence_threshold,
    })
}

pub fn run(args: Args) -> Result<ExitCode> {
    let words = word_settings(
        &args.format,
        args.word_timestamps,
        args.max_words_per_cue,
        args.hallucination_silence_threshold,
    )?;
    if words.formats.len() > 1 && args.output.is_none() {
        bail!("several formats need --output DIR (one file per format)");
    }
    let kind: DeviceKind = args.device.parse()?;
    let dev = device::open(kind, 0)?;
    let diarizer = CliDiarizer::load(&args.diarize, &dev)?;
    let t_load = Instant::now();
    let whisper = Whisper::load_with(&args.model, &dev, args.compute_type)
        .with_context(|| format!("loading model {:?}", args.model))?;
    tracing::debug!(ms = t_load.elapsed().as_millis() as u64, "model ready");

    let (inputs, mut failed) = load_inputs(&args.files, args.max_audio_seconds);
    let opts = TranscribeOptions {
        language: args.language.clone(),
        task: if args.translate {
            Task::Translate
        } else {
            Task::Transcribe
        },
        temperatures: args.temperature.clone(),
        condition_on_previous_text: !args.no_condition_on_previous_text,
        initial_prompt: args.initial_prompt.clone(),
        without_timestamps: args.without_timestamps,
        max_batch: args.batch.max(1),
        // Speakers are given word by word.
        word_timestamps: words.word_timestamps || diarizer.is_some(),
        // Words timed only for speaker labels leave the windows, and so
        // the text, as plain transcription has them.
        words_steer_decoding: words.word_timestamps,
        hallucination_silence_threshold: words.hallucination_silence_threshold,
        ..Default::default()
    };
    let mut opts = opts;
    args.pipeline.apply(&mut opts)?;

    let total_audio: f64 = inputs.iter().map(|(_, s)| s.len() as f64 / 16_000.0).sum();
    let show = !args.no_progress && total_audio > 60.0;
    let multi = MultiProgress::with_draw_target(if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style =
        ProgressStyle::with_template("{prefix:20!} {bar:40} {pos}/{len} s [{elapsed}<{eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bars: Vec<ProgressBar> = inputs
        .iter()
        .map(|(i, s)| {
            let b = multi.add(ProgressBar::new((s.len() / 16_000) as u64));
            b.set_style(style.clone());
            b.set_prefix(
                args.files[*i]
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
            );
            b
        })
        .collect();
    let bars = Mutex::new(bars);
    let progress = |input: usize, done: f64, _total: f64| {
        if let Ok(b) = bars.lock() {
            if let Some(bar) = b.get(input) {
                bar.set_position(done as u64);
            }
        }
    };

    let t0 = Instant::now();
    let refs: Vec<&[f32]> = inputs.iter().map(|(_, s)| s.as_slice()).collect();
    let (results, turns) = alongside(diarizer.as_ref(), &refs, || {
        whisper.transcribe_batch(&refs, &opts, Some(&progress))
    });
    let wall = t0.elapsed().as_secs_f64();
    if let Ok(b) = bars.lock() {
        b.iter().for_each(|b| b.finish_and_clear());
    }
    tracing::info!(
        audio_s = format!("{total_audio:.1}"),
        wall_s = format!("{wall:.2}"),
        x_realtime = format!("{:.1}", total_audio / wall.max(1e-9)),
        "transcribed"
    );

    // Several formats in one folder: the JSON ones get distinct names.
    let several = words.formats.len() > 1;
    if let Some(dir) = &args.output {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (((i, _), r), turns) in inputs.iter().zip(results).zip(turns) {
        let path = &args.files[*i];
        match labelled(r, turns) {
            Ok(t) => {
                let stem = output_stem(&args.files, *i);
                for &format in &words.formats {
                    let body = formats::render(&t, format, &stem, &words.render);
                    match &args.output {
                        Some(dir) => {
                            let ext = if several {
                                format.file_suffix()
                            } else {
                                format.extension()
                            };
                            let out = dir.join(format!("{stem}.{ext}"));
                            std::fs::write(&out, body)
                                .with_context(|| format!("writing {}", out.display()))?;
                        }
                        None => print!("{body}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Decodes every file to 16 kHz mono; an unreadable file is reported on
/// stderr and left out. Returns `(input index, samples)` pairs and whether
/// any file failed.
pub(crate) fn load_inputs(
    files: &[PathBuf],
    max_audio_seconds: f64,
) -> (Vec<(usize, Vec<f32>)>, bool) {
    let limits = DecodeLimits {
        max_duration_s: Some(max_audio_seconds),
    };
    let mut failed = false;
    let mut inputs = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match audio::load_file(f, limits) {
            Ok(s) => inputs.push((i, s)),
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                failed = true;
            }
        }
    }
    (inputs, failed)
}

/// Output name for input `i`: its file stem, or the whole file name when
/// another input shares the stem (`a.wav` and `a.mp3` → `a.wav.json`,
/// `a.mp3.json`), so no output overwrites another.
fn output_stem(files: &[PathBuf], i: usize) -> String {
    let stem = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().to_string());
    let name = |p: &PathBuf| p.file_name().map(|s| s.to_string_lossy().to_string());
    let mine = stem(&files[i]).unwrap_or_else(|| format!("input{i}"));
    let clashes = files
        .iter()
        .enumerate()
        .filter(|(j, f)| *j != i && stem(f).as_deref() == Some(mine.as_str()))
        .count();
    if clashes == 0 {
        return mine;
    }
    let full = name(&files[i]).unwrap_or_else(|| mine.clone());
    let same_name = files
        .iter()
        .enumerate()
        .any(|(j, f)| j != i && name(f).as_deref() == Some(full.as_str()));
    if same_name {
        format!("{full}.{i}")
    } else {
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<WordSettings>) -> String {
        r.expect_err("accepted").to_string()
    }

    #[test]
    fn word_flags_are_checked_together() {
        let s = word_settings("json", false, None, None).unwrap();
        assert!(!s.word_timestamps);
        assert_eq!(s.render, RenderOptions::default());
        assert!(
            word_settings("verbose_json", true, None, None)
                .unwrap()
                .word_timestamps
        );
        // The transcribe format and word cues turn word timestamps on.
        let s = word_settings("transcribe", false, None, None).unwrap();
        assert_eq!(
            (s.formats, s.word_timestamps),
            (vec![Format::Transcribe], true)
        );
        let s = word_settings("srt", false, Some(3), Some(2.0)).unwrap();
        assert!(s.word_timestamps);
        assert_eq!(s.render.max_words_per_cue, Some(3));
        assert_eq!(s.hallucination_silence_threshold, Some(2.0));
        assert!(
            word_settings("vtt", false, Some(1), None)
                .unwrap()
                .word_timestamps
        );
        assert!(word_settings("transcribe", false, None, Some(1.5)).is_ok());
        // Clear errors for the rest.
        assert!(err(word_settings("srt", true, Some(0), None)).contains("at least 1"));
        assert!(err(word_settings("json", true, Some(2), None)).contains("srt and vtt only"));
        assert!(
            err(word_settings("json", false, None, Some(2.0))).contains("needs --word-timestamps")
        );
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(err(word_settings("json", true, None, Some(bad))).contains("positive"));
        }
        assert!(err(word_settings("docx", false, None, None)).contains("transcribe"));
        // Several formats: a list or all; words when any format needs them.
        let s = word_settings("srt, json,srt", false, None, None).unwrap();
        assert_eq!(s.formats.len(), 2);
        assert!(!s.word_timestamps);
        let s = word_settings("all", false, Some(2), None).unwrap();
        assert_eq!(s.formats, Format::ALL);
        assert!(s.word_timestamps, "all includes transcribe");
        assert!(word_settings("json,srt", false, Some(2), None).is_ok());
        assert!(err(word_settings("json,docx", false, None, None)).contains("docx"));
        assert!(err(word_settings("json,", false, None, None)).contains("\"\""));
    }

    #[test]
    fn output_names_never_clash() {
        let f: Vec<PathBuf> = ["x/a.wav", "y/a.mp3", "b.flac", "z/a.wav"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let names: Vec<String> = (0..f.len()).map(|i| output_stem(&f, i)).collect();
        assert_eq!(names, ["a.wav.0", "a.mp3", "b", "a.wav.3"]);
    }
}
