//! The loaded engines and their batch entry points. The queue worker (and
//! the HTTP server) hand whole batches of independent requests here; the
//! requests that share settings go through one `transcribe_batch` (audio
//! windows of many jobs in one encoder pass) or one `summarize_many` (many
//! sequences in one decode step).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use earshot_inference::device::{self, ComputeType, DeviceKind};
use earshot_inference::error::InferenceError;
use earshot_inference::llm::summarize::{summarize_many, Summary};
use earshot_inference::llm::Llm;
use earshot_inference::whisper::{EncoderWindow, Pipeline, TranscribeOptions, Transcript, Whisper};

use crate::diarization::{diarize_alongside, label_transcript, LazyDiarizer};
use crate::summarize::LlmArgs;
use earshot_diarize::pipeline::DiarizeOptions;

/// One transcription request inside a batch.
pub struct SpeechRequest<'a> {
    pub samples: &'a [f32],
    /// Whisper model name; the default model when `None`.
    pub model: Option<&'a str>,
    pub language: Option<&'a str>,
    pub prompt: Option<&'a str>,
    /// 0: the default fallback schedule; above 0: start there.
    pub temperature: f32,
    /// Time every word (one extra forced decoder pass per window).
    pub word_timestamps: bool,
    /// Transcribe only the speech Silero VAD finds (implied by the
    /// batched pipeline).
    pub vad: bool,
    /// Label speakers on words and segments (word timings are turned on
    /// for it).
    pub diarize: Option<&'a DiarizeOptions>,
}

/// One summarization request inside a batch.
pub struct SummaryRequest<'a> {
    pub segments: &'a [String],
    /// LLM name; the served LLM when `None`.
    pub model: Option<&'a str>,
    pub max_tokens: Option<usize>,
}

/// Which models to load and how to batch them: shared by `work` and
/// `serve`.
#[derive(clap::Args)]
pub struct EngineArgs {
    /// Whisper models served (comma-separated; the first is the default).
    #[arg(
        long = "whisper-model",
        env = "EARSHOT_WHISPER_MODEL",
        default_value = "tiny.en",
        value_delimiter = ','
    )]
    pub whisper_models: Vec<String>,
    /// Do not load the LLM: transcription only (summaries and chat are
    /// refused).
    #[arg(long, env = "EARSHOT_NO_SUMMARIZER")]
    pub no_summarizer: bool,
    /// Requests (jobs) per speech batch, and audio windows per Whisper batch.
    #[arg(long, env = "EARSHOT_MAX_BATCH", default_value_t = 8)]
    pub max_batch: usize,
    /// Milliseconds an idle engine waits for more requests to fill a batch.
    #[arg(long, env = "EARSHOT_BATCH_WAIT_MS", default_value_t = 20)]
    pub batch_wait_ms: u64,
    /// Whisper weights: int8 (CPU), float32, float16 (CUDA), or default
    /// (float16 on CUDA, float32 on the CPU).
    #[arg(long, env = "EARSHOT_COMPUTE_TYPE", default_value = "default")]
    pub compute_type: ComputeType,
    /// How recordings are cut and decoded: `batched` (Silero VAD windows
    /// of at most 30 s, decoded side by side; faster-whisper's
    /// BatchedInferencePipeline) or `sequential` (the reference's 30 s
    /// windows, each conditioned on the text before it).
    #[arg(long, env = "EARSHOT_PIPELINE", default_value = "sequential")]
    pub pipeline: Pipeline,
    /// With --pipeline batched: retry a window whose text looks wrong at
    /// the next temperature (off by default, as in faster-whisper's
    /// BatchedInferencePipeline: each retry is a whole extra pass).
    #[arg(long, env = "EARSHOT_BATCHED_FALLBACK")]
    pub batched_fallback: bool,
    /// Encoder window over audio shorter than 30 s: `fit` (the audio plus
    /// 5-10 s of padding, so short clips cost a fraction of a 30 s window
    /// and read as well; a window that looks like silence is decided 30 s
    /// wide) or `full` (always 30 s, as the reference and faster-whisper).
    #[arg(long, env = "EARSHOT_ENCODER_WINDOW", default_value = "fit")]
    pub encoder_window: EncoderWindow,
    #[command(flatten)]
    pub llm: LlmArgs,
}

impl EngineArgs {
    pub fn max_batch(&self) -> usize {
        self.max_batch.max(1)
    }

    /// Loads the models.
    pub fn load(&self) -> Result<Engines> {
        let engines = Engines::load(
            &self.whisper_models,
            self.compute_type,
            &self.llm,
            !self.no_summarizer,
            self.max_batch(),
        )?;
        let mut engines = engines;
        engines.speech.pipeline = self.pipeline;
        engines.speech.batched_fallback = self.batched_fallback;
        engines.speech.encoder_window = self.encoder_window;
        tracing::info!(load_seconds = ?engines.load_seconds, "models loaded");
        Ok(engines)
    }

    /// Loads the models and starts their batcher threads.
    pub fn start(&self, queue_capacity: usize) -> Result<crate::batcher::Batchers> {
        let engines = self.load()?;
        crate::batcher::Batchers::start(
            engines,
            crate::batcher::BatcherOptions {
                max_batch: self.max_batch(),
                queue_capacity: queue_capacity.max(1),
                batch_wait: std::time::Duration::from_millis(self.batch_wait_ms),
            },
        )
        .context("starting the engine threads")
    }
}

/// Every loaded model. Split with [`Engines::split`] so the speech and the
/// LLM batcher threads each own their half.
pub struct Engines {
    pub speech: SpeechEngine,
    pub llm: Option<LlmEngine>,
    /// Seconds each model took to load, by model name.
    pub load_seconds: BTreeMap<String, f64>,
    /// Where the models live (for readiness probes).
    pub device: candle_core::Device,
}

/// The Whisper models.
pub struct SpeechEngine {
    /// (name as configured, model); the first is the default.
    whisper: Vec<(String, Whisper)>,
    /// Audio windows per Whisper batch.
    pub max_batch: usize,
    /// How recordings are cut and decoded.
    pub pipeline: Pipeline,
    /// Temperature fallback in the batched pipeline.
    pub batched_fallback: bool,
    /// The encoder's window over short audio.
    pub encoder_window: EncoderWindow,
    /// The diarization networks, loaded by the first request that asks.
    diarizer: LazyDiarizer,
}

/// The LLM and its settings.
pub struct LlmEngine {
    /// The name it was configured by.
    pub name: String,
    pub llm: Llm,
    pub args: LlmArgs,
}

impl Engines {
    /// Loads every listed Whisper model and, when `with_llm`, the LLM.
    pub fn load(
        whisper_models: &[String],
        compute: ComputeType,
        llm_args: &LlmArgs,
        with_llm: bool,
        max_batch: usize,
    ) -> Result<Self> {
        let kind: DeviceKind = llm_args.device.parse()?;
        let dev = device::open(kind, 0)?;
        let mut load_seconds = BTreeMap::new();
        let mut whisper = Vec::new();
        for name in whisper_models {
            let t = Instant::now();
            let w = Whisper::load_with(name, &dev, compute)
                .with_context(|| format!("loading Whisper model {name:?}"))?;
            load_seconds.insert(name.clone(), t.elapsed().as_secs_f64());
            whisper.push((name.clone(), w));
        }
        anyhow::ensure!(!whisper.is_empty(), "no Whisper model configured");
        let llm = if with_llm {
            let (llm, secs) = llm_args.load()?;
            load_seconds.insert(llm_args.llm_model.clone(), secs);
            Some(LlmEngine {
                name: llm_args.llm_model.clone(),
                llm,
                args: llm_args.clone(),
            })
        } else {
            None
        };
        Ok(Engines {
            speech: SpeechEngine {
                whisper,
                max_batch: max_batch.max(1),
                pipeline: Pipeline::default(),
                batched_fallback: false,
                encoder_window: EncoderWindow::default(),
                diarizer: LazyDiarizer::new(dev.clone()),
            },
            llm,
            load_seconds,
            device: dev,
        })
    }
}

impl SpeechEngine {
    /// Whisper model names this process serves (default first).
    pub fn whisper_names(&self) -> Vec<&str> {
        self.whisper.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn whisper_index(&self, model: Option<&str>) -> Result<usize, InferenceError> {
        let Some(want) = model else { return Ok(0) };
        self.whisper
            .iter()
            .position(|(n, w)| n == want || w.name == want)
            .ok_or_else(|| {
                InferenceError::BadOption(format!(
                    "Whisper model {want:?} is not served here (serving: {})",
                    self.whisper_names().join(", ")
                ))
            })
    }

    /// Transcribes a batch; requests with the same model, language, prompt,
    /// temperature and word-timestamp setting decode together. Results
    /// come back in request order.
    pub fn transcribe_many(
        &self,
        reqs: &[SpeechRequest<'_>],
    ) -> Vec<Result<Transcript, InferenceError>> {
        let mut out: Vec<Option<Result<Transcript, InferenceError>>> =
            reqs.iter().map(|_| None).collect();
        // (model index, language, prompt, temperature bits, word
        // timestamps, whether words steer decoding, vad) → request indices.
        // Words timed only for speaker labels steer nothing (the text is
        // plain transcription's), so those requests batch apart.
        type Key<'r> = (
            usize,
            Option<&'r str>,
            Option<&'r str>,
            u32,
            bool,
            bool,
            bool,
        );
        let mut groups: BTreeMap<Key<'_>, Vec<usize>> = BTreeMap::new();
        for (i, r) in reqs.iter().enumerate() {
            match self.whisper_index(r.model) {
                Ok(m) => groups
                    .entry((
                        m,
                        r.language,
                        r.prompt,
                        r.temperature.to_bits(),
                        r.word_timestamps || r.diarize.is_some(),
                        r.word_timestamps,
                        r.vad,
                    ))
                    .or_default()
                    .push(i),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        // Diarization (requests that ask for speakers) runs on its own
        // thread while the groups transcribe: the two only meet when the
        // words are labelled.
        let want: Vec<usize> = (0..reqs.len())
            .filter(|&i| reqs[i].diarize.is_some() && out[i].is_none())
            .collect();
        let diarizer = if want.is_empty() {
            None
        } else {
            match self.diarizer.get() {
                Ok(d) => Some(d),
                Err(e) => {
                    for &i in &want {
                        out[i] = Some(Err(InferenceError::Model(e.clone())));
                    }
                    None
                }
            }
        };
        let work: Vec<(&[f32], &DiarizeOptions)> = match diarizer {
            Some(_) => want
                .iter()
                .filter_map(|&i| reqs[i].diarize.map(|o| (reqs[i].samples, o)))
                .collect(),
            None => Vec::new(),
        };
        let transcribe = || {
            let mut done = Vec::new();
            for ((m, language, prompt, t, word_timestamps, words_steer_decoding, vad), idx) in
                groups
            {
                // Requests already failed (no diarizer to be had) are not transcribed.
                let idx: Vec<usize> = idx.into_iter().filter(|&i| out[i].is_none()).collect();
                if idx.is_empty() {
                    continue;
                }
                let mut opts = TranscribeOptions {
                    language: language.map(str::to_owned),
                    initial_prompt: prompt.map(str::to_owned),
                    max_batch: self.max_batch,
                    word_timestamps,
                    words_steer_decoding,
                    vad,
                    pipeline: self.pipeline,
                    batched_fallback: self.batched_fallback,
                    encoder_window: self.encoder_window,
                    ..Default::default()
                };
                let t = f32::from_bits(t);
                if t > 0.0 {
                    // Start at the asked temperature; fall back upwards from it.
                    opts.temperatures.retain(|&x| x > t);
                    opts.temperatures.insert(0, t);
                }
                let inputs: Vec<&[f32]> = idx.iter().map(|&i| reqs[i].samples).collect();
                let results = self.whisper[m].1.transcribe_batch(&inputs, &opts, None);
                for (i, r) in idx.into_iter().zip(results) {
                    done.push((i, r));
                }
            }
            done
        };
        let (done, turns) = match diarizer {
            Some(d) => diarize_alongside(d, &work, transcribe),
            None => (transcribe(), Vec::new()),
        };
        for (i, r) in done {
            out[i] = Some(r);
        }
        for (&i, turns) in want.iter().zip(turns) {
            if let Some(Ok(t)) = out[i].as_mut() {
                match turns {
                    Ok(turns) => label_transcript(t, &turns),
                    Err(e) => {
                        out[i] = Some(Err(InferenceError::Model(format!("diarization: {e}"))))
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(InferenceError::Model("no transcript produced".into())))
            })
            .collect()
    }
}

impl LlmEngine {
    /// Refuses a request for an LLM this process does not serve.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), InferenceError> {
        match model {
            Some(want) if want != self.name && want != self.llm.name => {
                Err(InferenceError::BadOption(format!(
                    "LLM {want:?} is not served here (serving: {})",
                    self.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// Summarizes a batch; requests with the same token limit share decode
    /// steps. A transcript with no words gets an empty summary, not an
    /// error.
    pub fn summarize_many(
        &self,
        reqs: &[SummaryRequest<'_>],
    ) -> Vec<Result<Summary, InferenceError>> {
        let mut out: Vec<Option<Result<Summary, InferenceError>>> =
            reqs.iter().map(|_| None).collect();
        let mut groups: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
        for (i, r) in reqs.iter().enumerate() {
            if r.segments.iter().all(|s| s.trim().is_empty()) {
                out[i] = Some(Ok(crate::summarize::empty_summary()));
                continue;
            }
            match self.check_model(r.model) {
                Ok(()) => groups.entry(r.max_tokens).or_default().push(i),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for (max_tokens, idx) in groups {
            let mut opts = self.args.summary_options();
            if let Some(n) = max_tokens {
                opts.max_tokens = n;
            }
            let docs: Vec<Vec<String>> = idx.iter().map(|&i| reqs[i].segments.to_vec()).collect();
            for (i, r) in idx.into_iter().zip(summarize_many(&self.llm, &docs, &opts)) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(InferenceError::Model("no summary produced".into()))))
            .collect()
    }
}
