//! Speaker diarization wired into transcription: the `--diarize` flags
//! shared by `transcribe` and `process`, the loaded networks (loaded once,
//! on first use, so a server that never diarizes never pays for them),
//! and the step that gives a Whisper transcript's words and segments their
//! speakers.
//!
//! The algorithm lives in `earshot-diarize`; this module only joins it to
//! the transcript types: words take the speaker covering most of them
//! ([`earshot_diarize::assign`]), and segments are cut where the speaker
//! changes between their words, so no segment mixes two people.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use earshot_diarize::assign::{speaker_for_span, speaker_runs};
use earshot_diarize::campplus::CamPlus;
use earshot_diarize::cluster::ClusterMethod;
use earshot_diarize::ge2e::Ge2e;
use earshot_diarize::pipeline::{diarize_yielding, Diarization, DiarizeOptions};
use earshot_diarize::segmentation::Segmentation;
use earshot_diarize::{speaker_label, DiarizeError, Turn};
use earshot_diarize::{ComputeType, EmbedModel};
use earshot_inference::whisper::sharing;
use earshot_inference::whisper::{Segment, Transcript};

/// `--diarize` and its speaker-count hints: what a job carries (the job
/// options `diarize`, `num_speakers`, `min_speakers`, `max_speakers`), so
/// also all that `submit` takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct SpeakerArgs {
    /// Label who speaks when (SPEAKER_00, …) on every segment and word:
    /// pyannote segmentation-3.0 + CAM++ embeddings + clustering, natively.
    /// Times every word (as --word-timestamps does, without moving where
    /// windows start: the words stay plain transcription's). Needs
    /// `scripts/fetch-models --only diarize`.
    #[arg(long)]
    pub diarize: bool,
    /// Exactly this many speakers (implies --diarize).
    #[arg(long, value_name = "N")]
    pub num_speakers: Option<usize>,
    /// At least this many speakers (implies --diarize).
    #[arg(long, value_name = "N")]
    pub min_speakers: Option<usize>,
    /// At most this many speakers (implies --diarize).
    #[arg(long, value_name = "N")]
    pub max_speakers: Option<usize>,
}

/// [`SpeakerArgs`] and the diarization's tuning, for the commands that
/// diarize in this process (`transcribe`, `process`, `summarize`,
/// `diarize`). Jobs carry no tuning: the worker diarizes with the defaults
/// (and `EARSHOT_SPEAKER_ENCODER`), so `submit` does not take these.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct DiarizeArgs {
    #[command(flatten)]
    pub speakers: SpeakerArgs,
    /// Seconds between the starts of the 10 s segmentation windows
    /// (default 2.5; pyannote's is 1): smaller sees every moment from more
    /// windows (steadier turns), larger is faster (fewer windows to
    /// segment and embed). Rounded to whole sinc strides (10 samples).
    #[arg(long, env = "EARSHOT_DIARIZE_STEP", value_name = "SECONDS")]
    pub diarize_step: Option<f64>,
    /// Seconds between the windows whose speakers are embedded (CAM++);
    /// the windows between take identities from them by overlap. Default:
    /// every window, as pyannote does. 5 halves the embedding cost, as
    /// accurate where turns are long, less where they are a few seconds.
    #[arg(long, env = "EARSHOT_DIARIZE_EMBED_STEP", value_name = "SECONDS")]
    pub diarize_embed_step: Option<f64>,
    /// How speaker embeddings are grouped: `spectral` (default: the
    /// eigengap of a similarity graph counts the speakers) or `centroid`
    /// (pyannote 3.1's linkage cut at a distance, --diarize-threshold).
    #[arg(long, env = "EARSHOT_DIARIZE_CLUSTERING", value_name = "METHOD")]
    pub diarize_clustering: Option<ClusterMethod>,
    /// `centroid` clustering's threshold: how far apart (Euclidean
    /// distance between centroids of unit-length CAM++ embeddings, 0–2)
    /// two groups of embeddings may be and still be one speaker (default
    /// pyannote's 0.7046). Lower finds more speakers. Ignored with
    /// --num-speakers.
    #[arg(long, env = "EARSHOT_DIARIZE_THRESHOLD", value_name = "DISTANCE")]
    pub diarize_threshold: Option<f64>,
    /// The speaker-embedding network: `campplus` (default: 3D-Speaker's
    /// CAM++, 192-d) or `ge2e` (Resemblyzer's GE2E LSTM, 256-d; a
    /// comparison point: as good where voices differ plainly, one speaker
    /// on pyannote's phone-call sample: README).
    #[arg(
        long,
        env = "EARSHOT_SPEAKER_ENCODER",
        value_name = "NAME",
        default_value = "campplus"
    )]
    pub speaker_encoder: SpeakerEncoder,
    /// Arithmetic of the networks' large products: `auto` (default:
    /// bfloat16 on a CPU with AVX512-BF16, else float32), `float32`, or
    /// `bfloat16` (operands rounded to bf16, sums in f32: about twice as
    /// fast there, the same DER on every file measured: README). The
    /// variable also sets it for `serve` and `work`.
    #[arg(
        long,
        env = "EARSHOT_DIARIZE_COMPUTE_TYPE",
        value_name = "TYPE",
        default_value = "auto"
    )]
    pub diarize_compute_type: DiarizeCompute,
}

/// [`earshot_diarize::ComputeType`] as a flag's values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum DiarizeCompute {
    #[default]
    Auto,
    Float32,
    Bfloat16,
}

impl From<DiarizeCompute> for ComputeType {
    fn from(c: DiarizeCompute) -> Self {
        match c {
            DiarizeCompute::Auto => ComputeType::Auto,
            DiarizeCompute::Float32 => ComputeType::Float32,
            DiarizeCompute::Bfloat16 => ComputeType::Bfloat16,
        }
    }
}

/// Which speaker-embedding network diarization runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum SpeakerEncoder {
    #[default]
    Campplus,
    Ge2e,
}

impl DiarizeArgs {
    /// The options, or `None` when diarization is off; impossible counts
    /// are a typed error.
    pub(crate) fn options(&self) -> Result<Option<DiarizeOptions>, DiarizeError> {
        let sp = &self.speakers;
        let mut o = speaker_options(
            sp.diarize,
            sp.num_speakers,
            sp.min_speakers,
            sp.max_speakers,
        )?;
        if let Some(o) = o.as_mut() {
            if let Some(step) = self.diarize_step {
                o.step_s = step;
            }
            if let Some(step) = self.diarize_embed_step {
                o.embed_step_s = Some(step);
            }
            if let Some(m) = self.diarize_clustering {
                o.clustering = m;
            }
            if let Some(t) = self.diarize_threshold {
                o.threshold = t;
            }
            o.validate()?;
        }
        Ok(o)
    }
}

/// The CLI's diarization: the networks and the options the flags asked
/// for, loaded before transcription so a missing model fails at once.
pub(crate) struct CliDiarizer {
    diarizer: Diarizer,
    opts: DiarizeOptions,
}

impl CliDiarizer {
    /// `None` when the flags ask for no diarization.
    pub(crate) fn load(
        args: &DiarizeArgs,
        device: &candle_core::Device,
    ) -> anyhow::Result<Option<Self>> {
        let Some(opts) = args.options()? else {
            return Ok(None);
        };
        let diarizer = Diarizer::load(
            device,
            args.speaker_encoder,
            args.diarize_compute_type.into(),
        )
        .map_err(|e| anyhow::anyhow!("--diarize: {e}"))?;
        Ok(Some(Self { diarizer, opts }))
    }
}

/// Runs `transcribe` (the caller's Whisper pass over `inputs`) with the
/// inputs' diarization on a second thread meanwhile: the two are
/// independent until the words are labelled, and neither keeps every core
/// busy on its own (on 2 cores, 10 min of audio: Whisper ~81% and
/// diarization ~71% of the CPU), so together they take less wall time
/// than one after the other (there: 57–65 s in turn, 52 s alongside).
/// Returns the transcription's result and, per input, its turns (`None`
/// when `d` is `None`); a failed or panicked diarization is that input's
/// error, never the process's.
pub(crate) fn alongside<T>(
    d: Option<&CliDiarizer>,
    inputs: &[&[f32]],
    transcribe: impl FnOnce() -> T,
) -> (T, Vec<InputTurns>) {
    let Some(d) = d else {
        return (transcribe(), vec![None; inputs.len()]);
    };
    let work: Vec<(&[f32], &DiarizeOptions)> = inputs.iter().map(|x| (*x, &d.opts)).collect();
    let (out, turns) = diarize_alongside(&d.diarizer, &work, transcribe);
    (out, turns.into_iter().map(Some).collect())
}

/// [`alongside`] for inputs with options of their own (the batcher's
/// requests): `transcribe` runs here while `work` is diarized, in order,
/// on a second thread with its own rayon pool (as many threads as the
/// global one: sharing Whisper's, each side's parallel loops queue behind
/// the other's; 10 min: 57 s against 52 s). With nothing to diarize no
/// thread is started.
///
/// On the CPU the two share the cores as `whisper::sharing` describes:
/// the diarization thread registers as work beside Whisper for as long as
/// it runs (Whisper's decoding then leaves it the smaller half of the
/// threads), and its pool's threads run at idle priority (so Whisper's
/// encoder and word-timing products take their cores back at once). 10
/// minutes, tiny.en, 2 cores: `transcribe --diarize` 25.08 → 23.76 s
/// (medians), plain `transcribe` 18.86 s (README, Measured).
pub(crate) fn diarize_alongside<T>(
    d: &Diarizer,
    work: &[(&[f32], &DiarizeOptions)],
    transcribe: impl FnOnce() -> T,
) -> (T, Vec<Result<Vec<Turn>, String>>) {
    if work.is_empty() {
        return (transcribe(), Vec::new());
    }
    let run = || {
        work.iter()
            .map(|(x, o)| d.turns(x, o).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    };
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("diarize".into())
            .spawn_scoped(scope, || {
                let _beside = d.cpu.then(sharing::Beside::begin);
                match beside_pool(d.cpu) {
                    Ok(pool) => pool.install(run),
                    Err(_) => run(),
                }
            });
        let out = transcribe();
        let turns = match worker {
            Ok(h) => h.join().unwrap_or_else(|_| {
                vec![Err("the diarization thread panicked".into()); work.len()]
            }),
            // No thread to be had: diarize here, after the transcription.
            Err(e) => {
                tracing::warn!(error = %e, "no diarization thread; diarizing after transcription");
                run()
            }
        };
        (out, turns)
    })
}

/// The diarization thread's pool in [`diarize_alongside`]: as many
/// threads as the global pool, at idle priority when the networks run on
/// the CPU (where lowering fails, as it may under a seccomp policy, they
/// run at normal priority: slower beside Whisper, the same result).
fn beside_pool(cpu: bool) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(|i| format!("diarize-{i}"))
        .start_handler(move |i| {
            if cpu {
                if let Err(e) = sharing::lower_priority() {
                    tracing::debug!(thread = i, error = %e, "diarization thread keeps its priority");
                }
            }
        })
        .build()
}

/// One input's diarization from [`alongside`]: its turns, why they could
/// not be had, or `None` when diarization is off.
pub(crate) type InputTurns = Option<Result<Vec<Turn>, String>>;

/// A transcription result, labelled with its diarization's turns when
/// there are any (from [`alongside`]).
pub(crate) fn labelled(
    r: Result<Transcript, earshot_inference::error::InferenceError>,
    turns: InputTurns,
) -> anyhow::Result<Transcript> {
    let mut t = r?;
    if let Some(turns) = turns {
        let turns = turns.map_err(|e| anyhow::anyhow!("diarization: {e}"))?;
        label_transcript(&mut t, &turns);
    }
    Ok(t)
}

/// Diarization options from a request's fields (CLI flags, job options,
/// form fields): on when asked or when any count is given.
pub(crate) fn speaker_options(
    on: bool,
    num: Option<usize>,
    min: Option<usize>,
    max: Option<usize>,
) -> Result<Option<DiarizeOptions>, DiarizeError> {
    if !on && num.is_none() && min.is_none() && max.is_none() {
        return Ok(None);
    }
    let opts = DiarizeOptions {
        num_speakers: num,
        min_speakers: min,
        max_speakers: max,
        ..Default::default()
    };
    opts.validate()?;
    Ok(Some(opts))
}

/// The two networks, loaded together.
pub(crate) struct Diarizer {
    seg: Segmentation,
    emb: Box<dyn EmbedModel + Send>,
    /// The networks run on the CPU: then diarization stands aside while a
    /// Whisper encoder pass runs on it ([`Self::run`]).
    cpu: bool,
}

impl Diarizer {
    /// Loads both networks from `EARSHOT_DIARIZE_MODEL` or the models dir.
    pub(crate) fn load(
        device: &candle_core::Device,
        encoder: SpeakerEncoder,
        compute: ComputeType,
    ) -> Result<Self, String> {
        let t = Instant::now();
        let files = earshot_models::resolve_diarize().map_err(|e| e.to_string())?;
        let mut seg = Segmentation::load(&files.segmentation, device).map_err(|e| e.to_string())?;
        seg.set_compute_type(compute).map_err(|e| e.to_string())?;
        let emb: Box<dyn EmbedModel + Send> = match encoder {
            SpeakerEncoder::Campplus => {
                let mut m = CamPlus::load(&files.embedding, device).map_err(|e| e.to_string())?;
                m.set_compute_type(compute).map_err(|e| e.to_string())?;
                Box::new(m)
            }
            SpeakerEncoder::Ge2e => {
                let path = files.ge2e.ok_or_else(|| {
                    format!(
                        "no {} beside the diarization models (install it with \
                         `scripts/fetch-models --only diarize`)",
                        earshot_models::diarize::GE2E_FILE
                    )
                })?;
                Box::new(Ge2e::load(&path, device).map_err(|e| e.to_string())?)
            }
        };
        tracing::info!(
            ms = t.elapsed().as_millis() as u64,
            bf16 = seg.bf16(),
            "diarization models loaded"
        );
        Ok(Self {
            seg,
            emb,
            cpu: device.is_cpu(),
        })
    }

    /// Speaker turns of 16 kHz mono `samples`.
    pub(crate) fn turns(
        &self,
        samples: &[f32],
        opts: &DiarizeOptions,
    ) -> Result<Vec<Turn>, DiarizeError> {
        Ok(self.run(samples, opts)?.turns)
    }

    /// The whole diarization of 16 kHz mono `samples`.
    ///
    /// On the CPU, each batch through either network first waits for any
    /// Whisper encoder pass running in this process to end
    /// ([`earshot_inference::whisper::sharing`]): beside `transcribe`, the
    /// encoder's evenly split products stall on a core taken by
    /// diarization, while decoding leaves cores idle that diarization can
    /// use. 10-minute call, tiny.en, 2 cores: `transcribe --diarize`
    /// 25.9–26.3 → 24.3–25.2 s, the same output (README, Measured). Alone,
    /// nothing is encoding and nothing waits.
    pub(crate) fn run(
        &self,
        samples: &[f32],
        opts: &DiarizeOptions,
    ) -> Result<Diarization, DiarizeError> {
        let t = Instant::now();
        let waited = std::cell::Cell::new(Duration::ZERO);
        let stand_aside = || {
            if self.cpu {
                let limit = wait_allowance(t.elapsed(), waited.get());
                waited.set(waited.get() + sharing::wait_while_encoding(limit));
            }
        };
        let d = diarize_yielding(samples, &self.seg, self.emb.as_ref(), opts, &stand_aside)?;
        let wall = t.elapsed().as_secs_f64();
        let waited = waited.get().as_secs_f64();
        let audio = samples.len() as f64 / 16_000.0;
        metrics::histogram!("earshot_diarize_seconds").record(wall);
        metrics::histogram!("earshot_diarize_yield_seconds").record(waited);
        tracing::info!(
            audio_s = format!("{audio:.1}"),
            wall_s = format!("{wall:.2}"),
            waited_for_whisper_s = format!("{waited:.2}"),
            speakers = d.speakers,
            turns = d.turns.len(),
            "diarized"
        );
        Ok(d)
    }
}

/// How long diarization may still wait for Whisper's encoder, having run
/// `elapsed` and waited `waited` of it: [`WAIT_START`] plus
/// [`WAIT_SHARE`] of the time since. Beside one transcription this never
/// binds (10 minutes, tiny.en: 4.2 s waited in 17.6 s); beside encoder
/// passes back to back (a busy server) it keeps diarization running at
/// least half the time instead of never.
fn wait_allowance(elapsed: Duration, waited: Duration) -> Duration {
    (WAIT_START + elapsed.mul_f64(WAIT_SHARE)).saturating_sub(waited)
}

/// See [`wait_allowance`]: longer than one encoder pass of 8 windows on 2
/// cores with tiny.en (2.5 s).
const WAIT_START: Duration = Duration::from_secs(5);
/// See [`wait_allowance`].
const WAIT_SHARE: f64 = 0.5;

/// Loaded on first use; a load failure is remembered (and reported to
/// every request) rather than retried per request.
pub(crate) struct LazyDiarizer {
    device: candle_core::Device,
    cell: OnceLock<Result<Diarizer, String>>,
}

impl LazyDiarizer {
    pub(crate) fn new(device: candle_core::Device) -> Self {
        Self {
            device,
            cell: OnceLock::new(),
        }
    }

    pub(crate) fn get(&self) -> Result<&Diarizer, String> {
        self.cell
            .get_or_init(|| {
                // serve and work have no --speaker-encoder flag; the
                // variable the flag falls back to picks it there too.
                let encoder = match std::env::var("EARSHOT_SPEAKER_ENCODER") {
                    Ok(v) if !v.trim().is_empty() => {
                        <SpeakerEncoder as clap::ValueEnum>::from_str(v.trim(), true).map_err(
                            |_| format!("EARSHOT_SPEAKER_ENCODER={v:?}: campplus or ge2e"),
                        )?
                    }
                    _ => SpeakerEncoder::Campplus,
                };
                let compute = match std::env::var("EARSHOT_DIARIZE_COMPUTE_TYPE") {
                    Ok(v) if !v.trim().is_empty() => v
                        .parse::<ComputeType>()
                        .map_err(|e| format!("EARSHOT_DIARIZE_COMPUTE_TYPE={v:?}: {e}"))?,
                    _ => ComputeType::Auto,
                };
                Diarizer::load(&self.device, encoder, compute)
            })
            .as_ref()
            .map_err(|e| format!("diarization models: {e}"))
    }
}

/// Gives every word and segment of `t` its speaker and cuts segments where
/// the speaker changes. Segments without words take the speaker covering
/// most of their span. A cut segment's parts keep its decoding statistics
/// but not its tokens (they cannot be divided by word); ids are renumbered.
pub(crate) fn label_transcript(t: &mut Transcript, turns: &[Turn]) {
    let mut out: Vec<Segment> = Vec::with_capacity(t.segments.len());
    for mut s in std::mem::take(&mut t.segments) {
        if s.words.is_empty() {
            s.speaker = speaker_for_span(turns, s.start, s.end).map(speaker_label);
            out.push(s);
            continue;
        }
        let labels: Vec<Option<usize>> = s
            .words
            .iter()
            .map(|w| speaker_for_span(turns, w.start, w.end))
            .collect();
        for (w, l) in s.words.iter_mut().zip(&labels) {
            w.speaker = l.map(speaker_label);
        }
        let runs = speaker_runs(&labels);
        if runs.len() <= 1 {
            s.speaker = runs.first().and_then(|(_, l)| l.map(speaker_label));
            // Words in a gap joined this run: they take its speaker too.
            for w in &mut s.words {
                w.speaker = s.speaker.clone();
            }
            out.push(s);
            continue;
        }
        for (range, l) in runs {
            let words = s.words[range].to_vec();
            let (Some(first), Some(last)) = (words.first(), words.last()) else {
                continue;
            };
            let speaker = l.map(speaker_label);
            let mut part = s.clone();
            part.start = first.start;
            part.end = last.end.max(first.start);
            part.text = words.iter().map(|w| w.word.as_str()).collect();
            part.tokens = Vec::new();
            part.speaker = speaker.clone();
            part.words = words
                .into_iter()
                .map(|mut w| {
                    w.speaker = speaker.clone();
                    w
                })
                .collect();
            out.push(part);
        }
    }
    for (i, s) in out.iter_mut().enumerate() {
        s.id = i;
    }
    t.segments = out;
}

/// Segment texts for the summarizer: `SPEAKER_00: text` per speaker turn
/// (consecutive segments of one speaker joined) when the transcript has
/// speakers, else the plain segment texts.
pub(crate) fn summary_segments(segments: &[(Option<&str>, &str)]) -> Vec<String> {
    if segments.iter().all(|(s, _)| s.is_none()) {
        return segments.iter().map(|(_, t)| t.trim().to_owned()).collect();
    }
    let mut out: Vec<(Option<&str>, String)> = Vec::new();
    for &(speaker, text) in segments {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((s, acc)) if *s == speaker => {
                acc.push(' ');
                acc.push_str(text);
            }
            _ => out.push((speaker, text.to_owned())),
        }
    }
    out.into_iter()
        .map(|(s, t)| match s {
            Some(s) => format!("{s}: {t}"),
            None => t,
        })
        .collect()
}

/// `earshot diarize`: who spoke when, alone (no transcription): RTTM or
/// JSON turns per file, timed, and scored against a reference RTTM when
/// given (the evaluation and benchmarking entry point).
#[derive(clap::Args)]
pub struct Args {
    /// Audio files.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// rttm (one SPEAKER line per turn) or json (turns, speakers, talk
    /// time, timing, and the score with --reference).
    #[arg(long, short, default_value = "rttm")]
    format: String,
    /// A reference RTTM (all files' turns, matched by file id: the file
    /// stem) to score against: diarization error rate with a 0.25 s
    /// collar, the best speaker mapping.
    #[arg(long, value_name = "RTTM")]
    reference: Option<std::path::PathBuf>,
    /// Collar (seconds each side of every reference boundary) for --reference.
    #[arg(long, default_value_t = 0.25)]
    collar: f64,
    /// cpu or cuda.
    #[arg(long, env = "EARSHOT_DEVICE", default_value = "cpu")]
    device: String,
    /// Refuse audio longer than this many seconds.
    #[arg(long, env = "EARSHOT_MAX_AUDIO_SECONDS", default_value_t = 4.0 * 3600.0)]
    max_audio_seconds: f64,
    #[command(flatten)]
    speakers: DiarizeArgs,
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::{bail, Context};
    use earshot_diarize::der::{der, read_rttm, rttm_segments, turns_to_segments, write_rttm};
    let json = match args.format.as_str() {
        "rttm" => false,
        "json" => true,
        f => bail!("unknown --format {f:?} (rttm, json)"),
    };
    let mut speakers = args.speakers.clone();
    speakers.speakers.diarize = true;
    let opts = speakers.options()?.unwrap_or_default();
    let reference = match &args.reference {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(read_rttm(&text).with_context(|| p.display().to_string())?)
        }
        None => None,
    };
    let kind: earshot_inference::device::DeviceKind = args.device.parse()?;
    let dev = earshot_inference::device::open(kind, 0)?;
    let d = Diarizer::load(
        &dev,
        args.speakers.speaker_encoder,
        args.speakers.diarize_compute_type.into(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let (inputs, mut failed) = crate::transcribe::load_inputs(&args.files, args.max_audio_seconds);
    for (i, samples) in &inputs {
        let path = &args.files[*i];
        let id: String = path
            .file_stem()
            .map(|s| s.to_string_lossy().replace(char::is_whitespace, "_"))
            .unwrap_or_else(|| "audio".into());
        let t = Instant::now();
        let r = match d.run(samples, &opts) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        let wall = t.elapsed().as_secs_f64();
        let audio_s = samples.len() as f64 / 16_000.0;
        let score = reference.as_ref().map(|rows| {
            der(
                &rttm_segments(rows, Some(&id)),
                &turns_to_segments(&r.turns),
                args.collar,
                false,
            )
        });
        if json {
            let v = serde_json::json!({
                "file": path.display().to_string(),
                "audio_s": audio_s,
                "seconds": wall,
                "real_time_factor": wall / audio_s.max(1e-9),
                "speakers": (0..r.speakers).map(|k| serde_json::json!({
                    "speaker": speaker_label(k),
                    "talk_time": r.talk_time_s.get(k).copied().unwrap_or(0.0),
                })).collect::<Vec<_>>(),
                "turns": r.turns.iter().map(|t| serde_json::json!({
                    "start": t.start, "end": t.end, "speaker": speaker_label(t.speaker),
                })).collect::<Vec<_>>(),
                "der": score,
            });
            println!("{v}");
        } else {
            print!("{}", write_rttm(&id, &r.turns));
            if let Some(s) = score {
                eprintln!(
                    "{}: DER {:.2}% (missed {:.2} s, false alarm {:.2} s, confusion {:.2} s of {:.2} s), {} speakers, {:.2} s for {:.1} s of audio",
                    path.display(), 100.0 * s.der, s.missed_s, s.false_alarm_s, s.confusion_s, s.total_s, r.speakers, wall, audio_s
                );
            }
        }
    }
    Ok(if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_inference::whisper::Word;

    #[test]
    fn waiting_for_whisper_is_bounded_to_a_share_of_the_run() {
        let s = Duration::from_secs;
        // At first, WAIT_START: longer than one encoder pass.
        assert_eq!(wait_allowance(s(0), s(0)), WAIT_START);
        // Beside a transcription: 4.2 s waited in 17.6 s leaves room.
        assert!(wait_allowance(Duration::from_millis(17600), Duration::from_millis(4200)) > s(5));
        // Behind passes back to back: having waited all of the first 10 s,
        // nothing more for now, then half of each second it runs.
        assert_eq!(wait_allowance(s(10), s(10)), Duration::ZERO);
        assert_eq!(wait_allowance(s(12), s(10)), s(1));
        // So over a long run the waits are at most half of it, plus the start.
        let (mut elapsed, mut waited) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..1000 {
            let w = wait_allowance(elapsed, waited);
            waited += w;
            elapsed += w + Duration::from_millis(100); // then a batch runs
        }
        assert!(waited <= WAIT_START + elapsed.mul_f64(WAIT_SHARE));
        assert!(
            waited >= elapsed.mul_f64(WAIT_SHARE) - s(1),
            "{waited:?} of {elapsed:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn diarization_beside_cpu_whisper_runs_at_idle_priority_and_only_there() {
        let policies = |cpu: bool| {
            let pool = beside_pool(cpu).unwrap();
            pool.broadcast(|_| unsafe { libc::sched_getscheduler(0) })
        };
        let idle = policies(true);
        assert_eq!(idle.len(), rayon::current_num_threads());
        assert!(idle.iter().all(|&p| p == libc::SCHED_IDLE), "{idle:?}");
        // On a GPU the networks leave the cores to Whisper anyway.
        let gpu = policies(false);
        assert!(gpu.iter().all(|&p| p != libc::SCHED_IDLE), "{gpu:?}");
    }

    fn word(w: &str, start: f64, end: f64) -> Word {
        Word {
            word: w.into(),
            start,
            end,
            probability: 0.9,
            speaker: None,
        }
    }

    fn segment(start: f64, end: f64, text: &str, words: Vec<Word>) -> Segment {
        Segment {
            id: 0,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![1, 2, 3],
            temperature: 0.0,
            avg_logprob: -0.2,
            compression_ratio: 1.2,
            no_speech_prob: 0.01,
            words,
            speaker: None,
        }
    }

    fn turn(start: f64, end: f64, speaker: usize) -> Turn {
        Turn {
            start,
            end,
            speaker,
        }
    }

    #[test]
    fn segments_are_cut_where_the_speaker_changes() {
        let mut t = Transcript {
            text: " Hi there. Hello.".into(),
            language: "en".into(),
            duration: 4.0,
            segments: vec![
                segment(
                    0.0,
                    3.0,
                    " Hi there. Hello.",
                    vec![
                        word(" Hi", 0.0, 0.4),
                        word(" there.", 0.5, 1.0),
                        word(" Hello.", 2.0, 2.8),
                    ],
                ),
                segment(3.0, 4.0, " Bye.", vec![]),
            ],
        };
        let turns = [turn(0.0, 1.2, 1), turn(1.9, 4.0, 0)];
        label_transcript(&mut t, &turns);
        let got: Vec<(usize, &str, Option<&str>, f64, f64)> = t
            .segments
            .iter()
            .map(|s| (s.id, s.text.as_str(), s.speaker.as_deref(), s.start, s.end))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, " Hi there.", Some("SPEAKER_01"), 0.0, 1.0),
                (1, " Hello.", Some("SPEAKER_00"), 2.0, 2.8),
                (2, " Bye.", Some("SPEAKER_00"), 3.0, 4.0),
            ]
        );
        assert!(
            t.segments[0].tokens.is_empty(),
            "a cut segment drops its tokens"
        );
        assert_eq!(
            t.segments[2].tokens,
            vec![1, 2, 3],
            "an uncut one keeps them"
        );
        assert!(t.segments[0]
            .words
            .iter()
            .all(|w| w.speaker.as_deref() == Some("SPEAKER_01")));
        assert_eq!(
            t.segments[1].words[0].speaker.as_deref(),
            Some("SPEAKER_00")
        );
    }

    #[test]
    fn no_turns_leave_a_transcript_unlabelled() {
        let mut t = Transcript {
            text: " Hi.".into(),
            language: "en".into(),
            duration: 1.0,
            segments: vec![segment(0.0, 1.0, " Hi.", vec![word(" Hi.", 0.0, 0.5)])],
        };
        let before = t.clone();
        label_transcript(&mut t, &[]);
        assert_eq!(t, before);
    }

    #[test]
    fn speaker_options_are_checked() {
        assert!(speaker_options(false, None, None, None).unwrap().is_none());
        let o = speaker_options(false, Some(2), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(o.num_speakers, Some(2));
        assert!(speaker_options(true, None, Some(3), Some(2)).is_err());
        assert!(speaker_options(true, Some(0), None, None).is_err());
    }

    #[test]
    fn clustering_flags_reach_the_options() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            d: DiarizeArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("earshot").chain(args.iter().copied()))
                .map(|c| c.d.options())
        };
        let o = parse(&["--diarize"]).unwrap().unwrap().unwrap();
        assert_eq!(o.clustering, ClusterMethod::Spectral);
        let o = parse(&[
            "--diarize",
            "--diarize-clustering",
            "centroid",
            "--diarize-threshold",
            "0.8",
        ])
        .unwrap()
        .unwrap()
        .unwrap();
        assert_eq!((o.clustering, o.threshold), (ClusterMethod::Centroid, 0.8));
        let err = parse(&["--diarize", "--diarize-clustering", "kmeans"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("spectral or centroid"), "{err}");
        assert!(parse(&["--diarize", "--diarize-threshold=-1"])
            .unwrap()
            .is_err());
    }

    #[test]
    fn summary_segments_label_turns() {
        let segs = [
            (Some("SPEAKER_00"), " We ship Friday."),
            (Some("SPEAKER_00"), " Agreed?"),
            (Some("SPEAKER_01"), " Yes. "),
        ];
        assert_eq!(
            summary_segments(&segs),
            ["SPEAKER_00: We ship Friday. Agreed?", "SPEAKER_01: Yes."]
        );
        assert_eq!(summary_segments(&[(None, " a "), (None, "b")]), ["a", "b"]);
    }
}
