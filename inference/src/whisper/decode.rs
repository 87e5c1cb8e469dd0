//! Whisper's decoding rules and long-form transcription, batched.
//!
//! The rules follow the reference implementation (and faster-whisper, which
//! mirrors it): blank and non-speech suppression, timestamp pairing and
//! monotonicity, an initial-timestamp cap, temperature fallback on
//! compression-ratio / average-log-probability thresholds, no-speech
//! skipping, and 30 s windows that seek to the last complete timestamp.
//!
//! Batching: every input is a *stream* with its own seek position and
//! previous-text prompt. Each round takes the current window of up to
//! `max_batch` streams, runs them through one encoder pass and one batched
//! decode (rows leave as they finish), then advances each stream on its own.
//! A batch of one stream reproduces the reference's sequential behaviour
//! exactly; a batch of many is the same computation per stream.

use std::io::Write;
use std::sync::Arc;

use candle_core::Tensor;
use rand::distributions::{Distribution, WeightedIndex};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::model::{CrossKv, WhisperModel};
use super::pipeline::Pipeline;
use super::reduce::{self, log_sum_exp};
use super::timing;
use super::tokenizer::WhisperTokenizer;
use crate::error::InferenceError;
use crate::mel::{MelExtractor, MelFrames, HOP_LENGTH, N_FRAMES};
use crate::vad::{SileroVad, VadOptions};

type Result<T> = std::result::Result<T, InferenceError>;

/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per encoder output position.
const INPUT_STRIDE: usize = 2;
const FRAME_S: f64 = HOP_LENGTH as f64 / 16_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    #[default]
    Transcribe,
    Translate,
}

/// Decoding options; defaults are the reference's (and faster-whisper's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TranscribeOptions {
    /// ISO code (`en`); `None` detects it on multilingual models.
    pub language: Option<String>,
    pub task: Task,
    /// Tried in order until a result passes the thresholds.
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: Option<f32>,
    pub log_prob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    pub condition_on_previous_text: bool,
    pub prompt_reset_on_temperature: f32,
    pub initial_prompt: Option<String>,
    pub without_timestamps: bool,
    pub max_initial_timestamp: f32,
    pub suppress_blank: bool,
    /// Token ids to suppress; `-1` means the model's default set.
    pub suppress_tokens: Vec<i64>,
    /// Windows decoded together (rows of one encoder/decoder batch).
    pub max_batch: usize,
    /// Most tokens sampled per window.
    pub sample_len: usize,
    /// Seed for sampling at temperature > 0.
    pub seed: u64,
    /// When the batch has spare rows, cut long recordings at quiet points
    /// into regions of at least this many seconds and transcribe the regions
    /// side by side (0 disables). Trades reference-exact window boundaries
    /// for latency on long files.
    pub split_min_region_s: f64,
    /// Time every word from the alignment heads' cross-attention (one
    /// forced decoder pass per window; see [`super::timing`]).
    pub word_timestamps: bool,
    /// With word timestamps: let the words steer decoding as faster-whisper's
    /// do (the default): the next window starts where this window's last
    /// word ends, and a segment whose words shrink it to an instant is
    /// dropped, and with it its tokens from the next window's prompt. Off,
    /// windows advance and segments are kept exactly as without word
    /// timestamps, so words timed for another reason (speaker labels) leave
    /// the text as it was, and the decoder runs the same rounds (10 minutes
    /// of tiny.en: 4 rounds instead of 6).
    pub words_steer_decoding: bool,
    /// With word timestamps: these punctuation marks, standing alone before
    /// a word, join the following word.
    pub prepend_punctuations: String,
    /// With word timestamps: these punctuation marks join the previous word.
    pub append_punctuations: String,
    /// With word timestamps: skip silent stretches longer than this many
    /// seconds around segments that look hallucinated.
    pub hallucination_silence_threshold: Option<f32>,
    /// Transcribe only the speech Silero VAD finds (faster-whisper's
    /// `vad_filter`); times stay on the original timeline. The batched
    /// pipeline always does.
    pub vad: bool,
    /// VAD post-processing; `None`: faster-whisper's defaults for the
    /// pipeline ([`VadOptions::default`], or [`VadOptions::batched`]).
    pub vad_parameters: Option<VadOptions>,
    /// How long recordings are cut and decoded (see [`super::pipeline`]).
    pub pipeline: Pipeline,
    /// With the batched pipeline: decode timestamp tokens too, for
    /// segments inside each window. Off by default, as in faster-whisper:
    /// each window is one pass without them (segments then follow the
    /// speech spans when word timestamps are on, else the windows).
    pub batched_timestamps: bool,
    /// With the batched pipeline: retry a window that looks wrong at the
    /// next of `temperatures`, as the sequential pipeline does. Off by
    /// default, as in faster-whisper's `BatchedInferencePipeline` (it keeps
    /// only the first temperature): a retry decodes its window alone, one
    /// full pass per temperature, and on long recordings those passes were
    /// a fifth of the run.
    pub batched_fallback: bool,
    /// On the CPU, when every window is decoded in one pass (the batched
    /// pipeline's windows, or any without timestamp tokens or word
    /// timestamps), encode the next round's windows while
    /// this round decodes. Same results either way; off only to time or
    /// test the difference.
    pub encode_ahead: bool,
    /// Each window is decoded once and ends where its audio does: word
    /// timestamps neither move the seek to the last word's end nor skip
    /// hallucinated silences, and a window's timestamp tokens do not
    /// re-seek it. What faster-whisper's `BatchedInferencePipeline` does
    /// with its VAD windows (one `forward` each); [`super::pipeline`] sets
    /// it for the batched pipeline's windows. Not an option of its own.
    #[serde(skip)]
    pub single_pass: bool,
    /// How wide the encoder's window is over a window of less than 30 s of
    /// audio (see [`EncoderWindow`]).
    pub encoder_window: EncoderWindow,
}

/// The encoder's window over audio shorter than 30 s.
///
/// Whisper was trained on 30 s windows, so the reference pads a 5 s clip
/// with 25 s of silence features and the encoder, whose cost is all in
/// those 1500 frames, spends five sixths of its time on padding. The
/// encoder's positional embeddings are per frame and its attention has no
/// fixed length, so a shorter window is the same network on fewer frames
/// (whisper.cpp's `audio_ctx`). Cut to the audio alone, the decoder no
/// longer sees where the speech ends and loops (measured: 30.6% WER on
/// 120 real recorded prompts of 2.5–10 s, against 4.96% with full windows);
/// with 5–10 s of padding kept it does not (4.71%).
///
/// The no-speech rule is calibrated on 30 s windows: in a fitted window
/// 10 s of digital silence reads "you" (Whisper's classic silence
/// hallucination) with a no-speech probability of 0.94 that the
/// log-probability rule overrules. So a fitted window whose no-speech
/// probability crosses the threshold is decoded again 30 s wide, and that
/// decides (speech rarely crosses it: the highest of the 120 prompts was
/// 0.44). Long recordings lose nothing either way: their windows are
/// nearly 30 s, so they are full windows already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderWindow {
    /// The window's audio plus at least [`FIT_PAD_FRAMES`], in whole 5 s
    /// steps, at most 30 s: 5–10 s of padding.
    #[default]
    Fit,
    /// Always 30 s, as the reference (and faster-whisper) decode.
    Full,
}

/// Least padding that [`EncoderWindow::Fit`] keeps after the audio: 5 s of
/// mel frames. On the 120 prompts above, exactly 2 s of padding gave 5.52%
/// WER, 3 s 5.20%, 5 s 4.22%, 10 s 4.63% (full windows 4.96%).
pub const FIT_PAD_FRAMES: usize = 500;

impl EncoderWindow {
    /// Mel frames of the encoder window over a window of `frames` frames
    /// of audio. [`Self::Fit`] rounds up to whole 5 s steps: windows of
    /// one step batch together, and the stride-2 convolution sees an even
    /// width.
    pub fn width(self, frames: usize) -> usize {
        const STEP: usize = 500;
        match self {
            Self::Full => N_FRAMES,
            Self::Fit => ((frames + FIT_PAD_FRAMES).div_ceil(STEP) * STEP).min(N_FRAMES),
        }
    }
}

impl std::str::FromStr for EncoderWindow {
    type Err = InferenceError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fit" => Ok(Self::Fit),
            "full" => Ok(Self::Full),
            other => Err(InferenceError::BadOption(format!(
                "unknown encoder window {other:?} (expected fit or full)"
            ))),
        }
    }
}

impl std::fmt::Display for EncoderWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fit => "fit",
            Self::Full => "full",
        })
    }
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            prompt_reset_on_temperature: 0.5,
            initial_prompt: None,
            without_timestamps: false,
            max_initial_timestamp: 1.0,
            suppress_blank: true,
            suppress_tokens: vec![-1],
            max_batch: 8,
            sample_len: 224,
            seed: 0,
            split_min_region_s: 60.0,
            word_timestamps: false,
            words_steer_decoding: true,
            prepend_punctuations: "\"'“¿([{-".into(),
            append_punctuations: "\"'.。,，!！?？:：”)]}、".into(),
            hallucination_silence_threshold: None,
            vad: false,
            vad_parameters: None,
            pipeline: Pipeline::Sequential,
            batched_timestamps: false,
            batched_fallback: false,
            encode_ahead: true,
            single_pass: false,
            encoder_window: EncoderWindow::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    pub id: usize,
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
    /// Word timings, when asked for (`word_timestamps`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
    /// Who spoke the segment (`SPEAKER_00`, …), once diarization has
    /// labelled it; `None` without diarization. Skipped when `None` so
    /// undiarized outputs stay byte-identical and older stored transcripts
    /// (without the field) still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// One word with its time span in the recording (seconds, 0.01 s
/// resolution) and its mean token probability. `word` keeps Whisper's
/// leading space, as the reference implementation does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
    /// Who spoke the word (`SPEAKER_00`, …), once diarization has labelled
    /// it; `None` without diarization (and then not serialized, for the
    /// same byte-identical outputs as [`Segment::speaker`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// Progress of one stream: `(input index, seconds done, seconds total)`.
pub type Progress<'a> = &'a (dyn Fn(usize, f64, f64) + Sync);

/// One window's decoding outcome.
#[derive(Debug, Clone)]
struct Decoded {
    tokens: Vec<u32>,
    avg_logprob: f64,
    no_speech_prob: f64,
    temperature: f32,
    compression_ratio: f64,
}

/// A round's windows after the encoder.
struct Encoded {
    audio: Tensor,
    /// Content frames of each window.
    sizes: Vec<usize>,
    /// Mel frames of the encoder window (the same for every row).
    width: usize,
    encode_ms: u64,
}

struct Stream<'a> {
    input: usize,
    /// The whole input's features, computed a window at a time (shared by
    /// its regions).
    mel: Arc<MelFrames<'a>>,
    /// End of this stream's region, in frames (absolute).
    content_frames: usize,
    seek: usize,
    all_tokens: Vec<u32>,
    prompt_reset_since: usize,
    segments: Vec<Segment>,
    language: Option<u32>,
    /// Per-stream sampler, so a stream's result never depends on which
    /// other streams shared its batches.
    rng: StdRng,
    /// End of the last timed word (seconds), for word timing's pause rule.
    last_speech: f64,
    /// The seek whose window must be encoded 30 s wide: its fitted
    /// encoding crossed the no-speech threshold (see [`EncoderWindow`]).
    full_at: Option<usize>,
}

impl Stream<'_> {
    /// Frames of audio in this stream's next window (at most 30 s).
    fn window_frames(&self) -> usize {
        N_FRAMES.min(self.content_frames - self.seek)
    }

    /// Mel frames of the encoder window over the next window.
    fn encoder_width(&self, window: EncoderWindow) -> usize {
        if self.full_at == Some(self.seek) {
            N_FRAMES
        } else {
            window.width(self.window_frames())
        }
    }
}

/// One decoded window cut into segments, before it is committed to its
/// stream (word timing may still move its seek or drop segments).
struct Window {
    pieces: Vec<Piece>,
    seek_before: usize,
    next_seek: usize,
    single_ts_ending: bool,
    /// Mel frames of real audio in the window.
    size: usize,
}

struct Piece {
    start: f64,
    end: f64,
    /// `start`/`end` as the timestamp tokens gave them, before word timing
    /// moved them to the words.
    decoded: (f64, f64),
    tokens: Vec<u32>,
    words: Vec<Word>,
}

impl Window {
    /// End of the last word, else of the last segment (faster-whisper's
    /// `get_end`).
    fn end(&self) -> Option<f64> {
        self.pieces
            .iter()
            .rev()
            .flat_map(|p| p.words.iter().rev())
            .map(|w| w.end)
            .next()
            .or_else(|| self.pieces.last().map(|p| p.end))
    }
}

/// zlib compression ratio of the text, as the reference computes it to spot
/// repetition loops.
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let _ = enc.write_all(bytes);
    let compressed = enc.finish().map(|v| v.len()).unwrap_or(bytes.len());
    bytes.len() as f64 / compressed.max(1) as f64
}

/// `ln Σ exp(x)`, skipping suppressed (-inf) entries cheaply.
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    logits.iter().map(|&x| x - lse).collect()
}

/// Everything the per-step logit rules need, fixed for one transcription.
pub(crate) struct Rules {
    suppress: Vec<u32>,
    blank: Vec<u32>,
    eot: u32,
    no_timestamps: u32,
    ts_begin: u32,
    timestamps: bool,
    max_initial_ts_index: Option<u32>,
}

impl Rules {
    fn new(tok: &WhisperTokenizer, opts: &TranscribeOptions, config_suppress: &[u32]) -> Self {
        let mut suppress: Vec<u32> = Vec::new();
        for &t in &opts.suppress_tokens {
            if t == -1 {
                suppress.extend(tok.non_speech_tokens());
                suppress.extend_from_slice(config_suppress);
            } else if t >= 0 {
                suppress.push(t as u32);
            }
        }
        suppress.extend([
            tok.transcribe,
            tok.translate,
            tok.sot,
            tok.sot_prev,
            tok.sot_lm,
            tok.no_speech,
        ]);
        suppress.sort_unstable();
        suppress.dedup();
        let mut blank = tok.encode(" ").unwrap_or_default();
        blank.push(tok.eot);
        Self {
            suppress,
            blank,
            eot: tok.eot,
            no_timestamps: tok.no_timestamps,
            ts_begin: tok.timestamp_begin,
            timestamps: !opts.without_timestamps,
            max_initial_ts_index: (opts.max_initial_timestamp > 0.0)
                .then(|| (opts.max_initial_timestamp as f64 / TIME_PRECISION).round() as u32),
        }
    }

    /// Apply the reference's logit filters in place for one row; returns
    /// the log-sum-exp of the filtered logits (so a token's log-probability
    /// is `logits[t] - lse` without a second pass over the vocabulary).
    fn apply(&self, logits: &mut [f32], sampled: &[u32], suppress_blank: bool) -> f32 {
        let ninf = f32::NEG_INFINITY;
        let v = logits.len();
        let set = |l: &mut [f32], ids: &[u32]| {
            for &i in ids {
                if (i as usize) < l.len() {
                    l[i as usize] = ninf;
                }
            }
        };
        if suppress_blank && sampled.is_empty() {
            set(logits, &self.blank);
        }
        set(logits, &self.suppress);
        if !self.timestamps {
            return log_sum_exp(logits);
        }
        let tb = self.ts_begin as usize;
        logits[self.no_timestamps as usize] = ninf;
        let is_ts = |t: u32| t >= self.ts_begin;
        let last_ts = sampled.last().is_some_and(|&t| is_ts(t));
        let penult_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_ts {
            if penult_ts {
                logits[tb..].fill(ninf);
            } else {
                logits[..self.eot as usize].fill(ninf);
            }
        }
        if let Some(&last) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            let upto = if last_ts && !penult_ts {
                last
            } else {
                last + 1
            };
            logits[tb..(upto as usize).min(v)].fill(ninf);
        }
        if sampled.is_empty() {
            logits[..tb].fill(ninf);
            if let Some(m) = self.max_initial_ts_index {
                let first_banned = tb + m as usize + 1;
                if first_banned < v {
                    logits[first_banned..].fill(ninf);
                }
            }
        }
        // If the timestamps together are likelier than any single text
        // token, sample a timestamp. Compared in raw logit units: both sides
        // would subtract the same normaliser.
        let ts_lse = log_sum_exp(&logits[tb..]);
        let text_max = reduce::max(&logits[..tb]);
        if ts_lse.is_finite() && ts_lse > text_max {
            logits[..tb].fill(ninf);
            return ts_lse;
        }
        let text_lse = log_sum_exp(&logits[..tb]);
        let m = ts_lse.max(text_lse);
        if m == f32::NEG_INFINITY {
            return m;
        }
        m + ((ts_lse - m).exp() + (text_lse - m).exp()).ln()
    }
}

fn pick_token(logits: &[f32], temperature: f32, rng: &mut StdRng) -> u32 {
    if temperature <= 0.0 {
        return reduce::argmax(logits);
    }
    let max = reduce::max(logits);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&x| (((x - max) / temperature) as f64).exp())
        .collect();
    match WeightedIndex::new(&weights) {
        Ok(d) => d.sample(rng) as u32,
        Err(_) => pick_token(logits, 0.0, rng),
    }
}

/// The speech-to-text engine: a loaded model, its tokenizer and features.
pub struct Whisper {
    pub model: WhisperModel,
    pub tokenizer: WhisperTokenizer,
    pub mel: MelExtractor,
    /// `suppress_tokens` from the model's own generation config.
    pub config_suppress: Vec<u32>,
    pub name: String,
    /// `(decoder layer, head)` pairs whose cross-attention word timing
    /// aligns on.
    pub alignment_heads: Vec<(usize, usize)>,
    /// Silero VAD, for `vad` and the batched pipeline; `None` when its
    /// file was not found (those options then fail with a clear error).
    pub vad: Option<Arc<SileroVad>>,
}

struct Job {
    /// Row of the encoder batch.
    row: usize,
    prompt: Vec<u32>,
    sot_index: usize,
}

impl Whisper {
    /// Transcribe one recording (16 kHz mono).
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        self.transcribe_batch(&[samples], opts, None)
            .pop()
            .unwrap_or_else(|| Err(InferenceError::Model("no result".into())))
    }

    /// Transcribe many recordings, batching their windows together. Results
    /// come back in input order; one input's failure does not fail the rest.
    pub fn transcribe_batch(
        &self,
        inputs: &[&[f32]],
        opts: &TranscribeOptions,
        progress: Option<Progress<'_>>,
    ) -> Vec<Result<Transcript>> {
        if opts.vad || opts.pipeline == Pipeline::Batched {
            return self.transcribe_speech(inputs, opts, progress);
        }
        let mut results: Vec<Option<Result<Transcript>>> =
            (0..inputs.len()).map(|_| None).collect();
        let lang_fixed = match &opts.language {
            Some(code) if self.tokenizer.multilingual => {
                match self.tokenizer.language_token(code) {
                    Some(t) => Some(t),
                    None => {
                        let e =
                            InferenceError::BadOption(format!("unknown language code {code:?}"));
                        return inputs.iter().map(|_| Err(e.clone())).collect();
                    }
                }
            }
            Some(code) if code != "en" => {
                let e = InferenceError::BadOption(format!(
                    "model {} is English-only; language {code:?} is not available",
                    self.name
                ));
                return inputs.iter().map(|_| Err(e.clone())).collect();
            }
            _ => None,
        };
        if opts.task == Task::Translate && !self.tokenizer.multilingual {
            let e = InferenceError::BadOption("translation needs a multilingual model".into());
            return inputs.iter().map(|_| Err(e.clone())).collect();
        }
        let initial: Vec<u32> = match &opts.initial_prompt {
            Some(p) if !p.trim().is_empty() => {
                match self.tokenizer.encode(&format!(" {}", p.trim())) {
                    Ok(t) => t,
                    Err(e) => return inputs.iter().map(|_| Err(e.clone())).collect(),
                }
            }
            _ => Vec::new(),
        };
        let rules = Rules::new(&self.tokenizer, opts, &self.config_suppress);
        let max_batch = opts.max_batch.max(1);
        let regions = plan_regions(inputs, max_batch, opts.split_min_region_s);
        let mut streams: Vec<Stream> = Vec::new();
        for (i, s) in inputs.iter().enumerate() {
            let mel = Arc::new(self.mel.frames(s));
            let content = mel.content_frames();
            let cuts = &regions[i];
            for (k, &start) in cuts.iter().enumerate() {
                let end = cuts.get(k + 1).copied().unwrap_or(content).min(content);
                streams.push(Stream {
                    input: i,
                    mel: mel.clone(),
                    content_frames: end,
                    seek: start.min(end),
                    all_tokens: initial.clone(),
                    prompt_reset_since: 0,
                    segments: Vec::new(),
                    language: lang_fixed,
                    rng: StdRng::seed_from_u64(opts.seed),
                    last_speech: start.min(end) as f64 * FRAME_S,
                    full_at: None,
                });
            }
        }
        // Windows that are decoded in one pass each (the batched pipeline's)
        // let the next round's windows be known before this round decodes:
        // on the CPU their encoder pass then runs beside this round's
        // decoding, whose many small products leave cores idle.
        let overlap = self.model.device().is_cpu()
            && rayon::current_num_threads() > 1
            && (opts.single_pass || (opts.without_timestamps && !opts.word_timestamps))
            && opts.encode_ahead;
        let mut ahead: Option<(Vec<usize>, Result<Encoded>)> = None;
        // A round takes the first pending window and the next ones of the
        // same encoder width, so that a window's width, and so its text,
        // never depends on what it was batched with.
        let width = |s: &Stream| s.encoder_width(opts.encoder_window);
        let pending =
            |streams: &[Stream], results: &[Option<Result<Transcript>>], skip: &[usize]| {
                let mut ready = (0..streams.len())
                    .filter(|&i| results[streams[i].input].is_none())
                    .filter(|&i| streams[i].seek < streams[i].content_frames)
                    .filter(|i| !skip.contains(i));
                let Some(first) = ready.next() else {
                    return Vec::new();
                };
                let w = width(&streams[first]);
                std::iter::once(first)
                    .chain(ready.filter(|&i| width(&streams[i]) == w))
                    .take(max_batch)
                    .collect::<Vec<usize>>()
            };
        loop {
            let active = pending(&streams, &results, &[]);
            if active.is_empty() {
                break;
            }
            let encoded = match ahead.take() {
                Some((rows, enc)) if rows == active => enc,
                _ => self.encode_mel(self.round_mel(&streams, &active, opts)),
            };
            let one_pass = overlap
                && active
                    .iter()
                    .all(|&i| streams[i].content_frames - streams[i].seek <= N_FRAMES);
            let next = if one_pass {
                pending(&streams, &results, &active)
            } else {
                Vec::new()
            };
            let outcome = if next.is_empty() {
                encoded.and_then(|enc| self.round(&mut streams, &active, enc, opts, &rules))
            } else {
                let mel = self.round_mel(&streams, &next, opts);
                let (outcome, enc) = rayon::join(
                    || encoded.and_then(|enc| self.round(&mut streams, &active, enc, opts, &rules)),
                    || self.encode_mel(mel),
                );
                ahead = Some((next, enc));
                outcome
            };
            if let Err(e) = outcome {
                // A batch-level failure (device error) fails these streams,
                // not the others.
                for &i in &active {
                    results[streams[i].input] = Some(Err(e.clone()));
                }
            }
            if let Some(p) = progress {
                for &i in &active {
                    let s = &streams[i];
                    p(
                        s.input,
                        (s.seek.min(s.content_frames)) as f64 * FRAME_S,
                        s.content_frames as f64 * FRAME_S,
                    );
                }
            }
        }
        // Stitch each input's regions back together, in order.
        for (i, input) in inputs.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let parts: Vec<&Stream> = streams.iter().filter(|s| s.input == i).collect();
            let mut segments: Vec<Segment> = Vec::new();
            for s in &parts {
                for g in &s.segments {
                    let mut g = g.clone();
                    g.id = segments.len();
                    segments.push(g);
                }
            }
            let text: String = segments.iter().map(|g| g.text.as_str()).collect();
            let language = match parts.first().and_then(|s| s.language) {
                Some(t) => self.tokenizer.language_code(t).unwrap_or("en").to_string(),
                None => opts.language.clone().unwrap_or_else(|| "en".into()),
            };
            results[i] = Some(Ok(Transcript {
                text: text.trim().to_string(),
                language,
                duration: input.len() as f64 / 16_000.0,
                segments,
            }));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(InferenceError::Model("stream lost".into()))))
            .collect()
    }

    /// The active streams' next windows of features, one row each, and how
    /// many frames of each are content.
    fn round_mel(
        &self,
        streams: &[Stream],
        active: &[usize],
        opts: &TranscribeOptions,
    ) -> (Vec<f32>, Vec<usize>) {
        let n_mels = self.mel.n_mels();
        let sizes: Vec<usize> = active.iter().map(|&i| streams[i].window_frames()).collect();
        // One width per round (see `pending`); the widest, should rows differ.
        let width = active
            .iter()
            .map(|&i| streams[i].encoder_width(opts.encoder_window))
            .max()
            .unwrap_or(N_FRAMES);
        let mut batch = vec![0f32; active.len() * n_mels * width];
        for (r, &i) in active.iter().enumerate() {
            let s = &streams[i];
            s.mel.window_into(
                s.seek,
                sizes[r],
                &mut batch[r * n_mels * width..(r + 1) * n_mels * width],
            );
        }
        (batch, sizes)
    }

    /// A pool of fewer threads for this round's decoding while work runs
    /// beside Whisper on the CPU ([`super::sharing::decode_threads`]), or
    /// `None` to decode on the current pool. Built per round (a few
    /// threads' start, against seconds of decoding), so decoding takes
    /// every thread again from the first round after that work ends.
    fn decode_pool(&self) -> Option<rayon::ThreadPool> {
        if !self.model.device().is_cpu() {
            return None;
        }
        let n = rayon::current_num_threads();
        let k = super::sharing::decode_threads(n, super::sharing::beside());
        if k >= n {
            return None;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .thread_name(|i| format!("whisper-decode-{i}"))
            .build()
            .ok()?;
        super::sharing::note_narrowed();
        Some(pool)
    }

    /// The encoder's pass over [`Self::round_mel`]'s windows.
    fn encode_mel(&self, (batch, sizes): (Vec<f32>, Vec<usize>)) -> Result<Encoded> {
        let t0 = std::time::Instant::now();
        let rows = sizes.len();
        let width = batch.len() / (rows * self.mel.n_mels()).max(1);
        let mel = Tensor::from_vec(batch, (rows, self.mel.n_mels(), width), self.model.device())?;
        // Work beside Whisper on the CPU stands aside for this pass (see
        // `sharing`'s docs).
        let _pass = self
            .model
            .device()
            .is_cpu()
            .then(super::sharing::EncoderPass::begin);
        let audio = self.model.encode(&mel)?;
        Ok(Encoded {
            audio,
            sizes,
            width,
            encode_ms: t0.elapsed().as_millis() as u64,
        })
    }

    /// One round over the active streams, whose windows `enc` holds
    /// encoded: language where needed, decode with fallback, advance each
    /// stream.
    fn round(
        &self,
        streams: &mut [Stream],
        active: &[usize],
        enc: Encoded,
        opts: &TranscribeOptions,
        rules: &Rules,
    ) -> Result<()> {
        let Encoded {
            audio,
            sizes,
            width,
            encode_ms,
        } = enc;
        // Cross-attention keys and values once for the round: the decode
        // passes, their fallbacks and the word-timing pass all read them.
        let cross = self.model.cross_kv(&audio)?;
        drop(audio);

        // Language: on multilingual models, from each stream's first window.
        let need_lang: Vec<usize> = (0..active.len())
            .filter(|&r| self.tokenizer.multilingual && streams[active[r]].language.is_none())
            .collect();
        if !need_lang.is_empty() {
            let langs = self.detect_language(&cross, &need_lang)?;
            for (r, l) in need_lang.iter().zip(langs) {
                streams[active[*r]].language = Some(l);
            }
        }

        let jobs: Vec<Job> = active
            .iter()
            .enumerate()
            .map(|(r, &i)| self.build_prompt(&streams[i], r, opts))
            .collect();
        let mut rngs: Vec<StdRng> = active.iter().map(|&i| streams[i].rng.clone()).collect();
        let t1 = std::time::Instant::now();
        let narrowed = self.decode_pool();
        let decoded = match &narrowed {
            Some(pool) => {
                pool.install(|| self.decode_with_fallback(&cross, &jobs, opts, rules, &mut rngs))?
            }
            None => self.decode_with_fallback(&cross, &jobs, opts, rules, &mut rngs)?,
        };
        tracing::debug!(
            batch = active.len(),
            encode_ms,
            decode_ms = t1.elapsed().as_millis() as u64,
            decode_threads = narrowed
                .as_ref()
                .map_or(rayon::current_num_threads(), |p| p.current_num_threads()),
            tokens = decoded.iter().map(|d| d.tokens.len()).sum::<usize>(),
            "whisper round"
        );
        let mut windows: Vec<Option<Window>> = Vec::with_capacity(active.len());
        for ((r, (&i, d)), rng) in active.iter().zip(&decoded).enumerate().zip(rngs) {
            let s = &mut streams[i];
            let size = sizes[r];
            let silent = opts
                .no_speech_threshold
                .is_some_and(|ns| d.no_speech_prob > ns as f64);
            // The threshold (and the log-probability rule that may overrule
            // it) is calibrated on 30 s windows: a fitted window that
            // crosses it is decided at full width, in a later round, from
            // where it stands (same seek, same rng).
            if silent && width < N_FRAMES {
                s.full_at = Some(s.seek);
                windows.push(None);
                tracing::debug!(
                    seek = s.seek,
                    width,
                    no_speech_prob = d.no_speech_prob,
                    "fitted window rechecked at full width"
                );
                continue;
            }
            s.rng = rng;
            let confident = opts
                .log_prob_threshold
                .is_some_and(|lp| d.avg_logprob > lp as f64);
            if silent && !confident {
                s.seek += size;
                windows.push(None);
                continue;
            }
            windows.push(Some(self.split_window(s, d, size)));
        }
        if opts.word_timestamps {
            let t2 = std::time::Instant::now();
            self.time_words(&cross, streams, active, &mut windows, opts)?;
            tracing::debug!(
                batch = active.len(),
                align_ms = t2.elapsed().as_millis() as u64,
                "whisper word timing"
            );
        }
        for ((&i, d), w) in active.iter().zip(&decoded).zip(windows) {
            let Some(mut w) = w else { continue };
            let s = &mut streams[i];
            if opts.single_pass {
                w.next_seek = w.seek_before + w.size;
            } else if opts.word_timestamps {
                let time_offset = w.seek_before as f64 * FRAME_S;
                if !w.single_ts_ending && opts.words_steer_decoding {
                    if let Some(end) = w.end() {
                        if end > time_offset {
                            w.next_seek = (end / FRAME_S).round() as usize;
                        }
                    }
                }
                if let Some(threshold) = opts.hallucination_silence_threshold {
                    let spans: Vec<timing::SegmentSpan> = w
                        .pieces
                        .iter()
                        .map(|p| timing::SegmentSpan {
                            start: p.start,
                            end: p.end,
                            text_tokens: 0,
                            words: p.words.clone(),
                        })
                        .collect();
                    let times = timing::WindowTimes {
                        time_offset,
                        duration: w.size as f64 * FRAME_S,
                        seek: w.seek_before,
                        content_duration: s.content_frames as f64 * FRAME_S,
                        content_frames: s.content_frames,
                    };
                    match timing::hallucination_skip(&spans, times, threshold as f64, s.last_speech)
                    {
                        timing::SilenceSkip::Keep => {}
                        timing::SilenceSkip::DropWindow { seek } => {
                            s.seek = seek.max(w.seek_before + 1);
                            continue;
                        }
                        timing::SilenceSkip::Truncate { from, seek } => {
                            w.pieces.truncate(from);
                            w.next_seek = seek;
                        }
                    }
                }
            }
            // Word timing's pause rule reads where the last kept word ended.
            if opts.word_timestamps {
                if let Some(end) = w.end() {
                    s.last_speech = end;
                }
            }
            self.commit_window(s, w, d, opts)?;
        }
        Ok(())
    }

    /// Word timing for a round's windows: one forced decoder pass over all
    /// of them together, then the alignment rules per window (see
    /// [`timing`]). Fills each piece's words and snaps its edges to them.
    fn time_words(
        &self,
        cross: &CrossKv,
        streams: &[Stream],
        active: &[usize],
        windows: &mut [Option<Window>],
        opts: &TranscribeOptions,
    ) -> Result<()> {
        let tok = &self.tokenizer;
        let mut rows: Vec<AlignRow> = Vec::new();
        for (r, w) in windows.iter().enumerate() {
            let Some(w) = w else { continue };
            let text: Vec<u32> = w
                .pieces
                .iter()
                .flat_map(|p| p.tokens.iter().copied().filter(|&t| t < tok.eot))
                .collect();
            // Fewer than two mel frames is no encoder frame to align on.
            if text.is_empty() || w.size / INPUT_STRIDE == 0 {
                continue;
            }
            rows.push(AlignRow {
                row: r,
                start: self.start_sequence(&streams[active[r]], opts),
                text,
                frames: w.size / INPUT_STRIDE,
            });
        }
        if rows.is_empty() {
            return Ok(());
        }
        let aligned = self.align(cross, &rows)?;
        for (row, (path, probs)) in rows.iter().zip(aligned) {
            let Some(w) = windows[row.row].as_mut() else {
                continue;
            };
            let s = &streams[active[row.row]];
            let language = s
                .language
                .and_then(|t| tok.language_code(t))
                .or(opts.language.as_deref())
                .unwrap_or("en");
            let words = timing::split_word_tokens(
                &row.text,
                |t| tok.decode(t),
                timing::splits_on_characters(language),
            )?;
            let timed = timing::timed_words(words, &path, &probs);
            let mut spans: Vec<timing::SegmentSpan> = w
                .pieces
                .iter()
                .map(|p| timing::SegmentSpan {
                    start: p.start,
                    end: p.end,
                    text_tokens: p.tokens.iter().filter(|&&t| t < tok.eot).count(),
                    words: Vec::new(),
                })
                .collect();
            timing::place_words(
                timed,
                &mut spans,
                w.seek_before as f64 * FRAME_S,
                &opts.prepend_punctuations,
                &opts.append_punctuations,
                s.last_speech,
            );
            for (p, span) in w.pieces.iter_mut().zip(spans) {
                p.start = span.start;
                p.end = span.end;
                p.words = span.words;
            }
        }
        Ok(())
    }

    /// The forced pass: for each row, the DTW path over its alignment
    /// matrix and the probability of each text token.
    fn align(&self, cross: &CrossKv, rows: &[AlignRow]) -> Result<Vec<AlignPath>> {
        let tok = &self.tokenizer;
        let picked: Vec<usize> = rows.iter().map(|r| r.row).collect();
        let mut state = self.model.start_on(cross, &picked)?;
        let prompts: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| {
                let mut p = r.start.clone();
                p.push(tok.no_timestamps);
                p.extend_from_slice(&r.text);
                p.push(tok.eot);
                p
            })
            .collect();
        let (hidden, scores) =
            self.model
                .prefill_aligned(&mut state, &prompts, &self.alignment_heads)?;
        let (_, heads, t_max, stride) = scores.dims4()?;
        // Per row: its text tokens' probabilities (a GEMM, then a
        // log-sum-exp over the vocabulary per token), then the alignment
        // matrix and its path. Rows taking turns, that was ~1.8 s of a
        // 10-minute word-timed run, the host arithmetic in it on one
        // thread; on the CPU the rows now share the cores. Each row's
        // floats are the same either way (its own buffers, same order).
        let one = |b: usize, r: &AlignRow| -> Result<AlignPath> {
            let n_text = r.text.len();
            let sot_len = r.start.len();
            // Token probabilities over the text vocabulary, as CTranslate2
            // and the reference compute them.
            let picks: Vec<(usize, usize)> = (0..n_text).map(|k| (b, sot_len + k)).collect();
            let logits = self
                .model
                .logits(&WhisperModel::pick(&hidden, &picks)?)?
                .to_vec2::<f32>()?;
            let eot = tok.eot as usize;
            let probs: Vec<f32> = logits
                .iter()
                .zip(&r.text)
                .map(|(l, &t)| {
                    let lse = log_sum_exp(&l[..eot.min(l.len())]);
                    (l[t as usize] - lse).exp()
                })
                .collect();
            let rows_used = prompts[b].len();
            let frames = r.frames.min(stride);
            let sc = scores
                .narrow(0, b, 1)?
                .narrow(2, 0, rows_used.min(t_max))?
                .narrow(3, 0, frames)?
                .contiguous()?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let m = timing::alignment_matrix(&sc, heads, rows_used, frames, frames);
            // Rows from <|notimestamps|> (predicting the first text token)
            // to the last text token (predicting end-of-text).
            let text_rows = n_text + 1;
            let sub = &m[sot_len * frames..(sot_len + text_rows) * frames];
            Ok((timing::dtw(sub, text_rows, frames), probs))
        };
        if hidden.device().is_cpu() {
            use rayon::prelude::*;
            rows.par_iter()
                .enumerate()
                .map(|(b, r)| one(b, r))
                .collect()
        } else {
            rows.iter().enumerate().map(|(b, r)| one(b, r)).collect()
        }
    }

    /// `<|startoftranscript|>`, then on multilingual models the stream's
    /// language and the task: what every decoder pass starts with.
    fn start_sequence(&self, s: &Stream, opts: &TranscribeOptions) -> Vec<u32> {
        let tok = &self.tokenizer;
        let mut start = vec![tok.sot];
        if tok.multilingual {
            start.push(
                s.language
                    .unwrap_or_else(|| tok.language_token("en").unwrap_or(tok.sot + 1)),
            );
            start.push(match opts.task {
                Task::Transcribe => tok.transcribe,
                Task::Translate => tok.translate,
            });
        }
        start
    }

    fn build_prompt(&self, s: &Stream, row: usize, opts: &TranscribeOptions) -> Job {
        let tok = &self.tokenizer;
        let mut prompt = Vec::new();
        let prev = &s.all_tokens[s.prompt_reset_since.min(s.all_tokens.len())..];
        if !prev.is_empty() {
            prompt.push(tok.sot_prev);
            let keep = self.model.config.max_target_positions / 2 - 1;
            prompt.extend_from_slice(&prev[prev.len().saturating_sub(keep)..]);
        }
        let sot_index = prompt.len();
        prompt.extend(self.start_sequence(s, opts));
        if opts.without_timestamps {
            prompt.push(tok.no_timestamps);
        }
        Job {
            row,
            prompt,
            sot_index,
        }
    }

    fn detect_language(&self, cross: &CrossKv, rows: &[usize]) -> Result<Vec<u32>> {
        let mut state = self.model.start_on(cross, rows)?;
        let prompts = vec![vec![self.tokenizer.sot]; rows.len()];
        let h = self.model.prefill(&mut state, &prompts)?;
        let picks: Vec<(usize, usize)> = (0..rows.len()).map(|r| (r, 0)).collect();
        let logits = self
            .model
            .logits(&WhisperModel::pick(&h, &picks)?)?
            .to_vec2::<f32>()?;
        Ok(logits
            .iter()
            .map(|l| {
                self.tokenizer
                    .languages
                    .iter()
                    .max_by(|a, b| l[a.1 as usize].total_cmp(&l[b.1 as usize]))
                    .map(|(_, id)| *id)
                    .unwrap_or(self.tokenizer.sot + 1)
            })
            .collect())
    }

    fn decode_with_fallback(
        &self,
        cross: &CrossKv,
        jobs: &[Job],
        opts: &TranscribeOptions,
        rules: &Rules,
        rngs: &mut [StdRng],
    ) -> Result<Vec<Decoded>> {
        let temps = if opts.temperatures.is_empty() {
            vec![0.0]
        } else {
            opts.temperatures.clone()
        };
        let mut done: Vec<Option<Decoded>> = vec![None; jobs.len()];
        let mut tried: Vec<Vec<Decoded>> = vec![Vec::new(); jobs.len()];
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        for (ti, &t) in temps.iter().enumerate() {
            if pending.is_empty() {
                break;
            }
            let sub: Vec<&Job> = pending.iter().map(|&j| &jobs[j]).collect();
            let mut sub_rngs: Vec<StdRng> = pending.iter().map(|&j| rngs[j].clone()).collect();
            let out = self.decode_windows(cross, &sub, t, opts, rules, &mut sub_rngs)?;
            for (&j, r) in pending.iter().zip(sub_rngs) {
                rngs[j] = r;
            }
            let mut still = Vec::new();
            for (&j, d) in pending.iter().zip(out) {
                let mut fallback = false;
                if let Some(cr) = opts.compression_ratio_threshold {
                    if d.compression_ratio > cr as f64 {
                        fallback = true;
                    }
                }
                if let Some(lp) = opts.log_prob_threshold {
                    if d.avg_logprob < lp as f64 {
                        fallback = true;
                    }
                }
                if let (Some(ns), Some(lp)) = (opts.no_speech_threshold, opts.log_prob_threshold) {
                    if d.no_speech_prob > ns as f64 && d.avg_logprob < lp as f64 {
                        fallback = false; // silence: nothing better to find
                    }
                }
                if !fallback || ti + 1 == temps.len() {
                    if fallback {
                        tried[j].push(d);
                        done[j] = Some(best_of_failed(&tried[j], opts));
                    } else {
                        done[j] = Some(d);
                    }
                } else {
                    tried[j].push(d);
                    still.push(j);
                }
            }
            pending = still;
        }
        Ok(done
            .into_iter()
            .map(|d| d.expect("every job finishes at the last temperature"))
            .collect())
    }

    /// Decode a batch of windows at one temperature.
    fn decode_windows(
        &self,
        cross: &CrossKv,
        jobs: &[&Job],
        temperature: f32,
        opts: &TranscribeOptions,
        rules: &Rules,
        rngs: &mut [StdRng],
    ) -> Result<Vec<Decoded>> {
        let n = jobs.len();
        let t0 = std::time::Instant::now();
        let mut steps = 0usize;
        let picked: Vec<usize> = jobs.iter().map(|j| j.row).collect();
        let mut state = self.model.start_on(cross, &picked)?;
        let prompts: Vec<Vec<u32>> = jobs.iter().map(|j| j.prompt.clone()).collect();
        let h = self.model.prefill(&mut state, &prompts)?;
        let mut picks: Vec<(usize, usize)> = (0..n).map(|r| (r, prompts[r].len() - 1)).collect();
        picks.extend((0..n).map(|r| (r, jobs[r].sot_index)));
        let all = self
            .model
            .logits(&WhisperModel::pick(&h, &picks)?)?
            .to_vec2::<f32>()?;
        let no_speech: Vec<f64> = all[n..]
            .iter()
            .map(|l| {
                let lp = log_softmax(l);
                (lp[self.tokenizer.no_speech as usize] as f64).exp()
            })
            .collect();
        let mut logits: Vec<Vec<f32>> = all.into_iter().take(n).collect();
        let max_ctx = self.model.config.max_target_positions;
        let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut sum_lp = vec![0f64; n];
        let mut active: Vec<usize> = (0..n).collect();
        loop {
            let mut next_active = Vec::new();
            let mut keep = Vec::new();
            let mut next_tokens = Vec::new();
            for (pos, (&r, l)) in active.iter().zip(logits.iter_mut()).enumerate() {
                let lse = rules.apply(l, &tokens[r], opts.suppress_blank);
                let t = pick_token(l, temperature, &mut rngs[r]);
                let lp = (l[t as usize] - lse) as f64;
                if lp.is_finite() {
                    sum_lp[r] += lp;
                }
                let full = tokens[r].len() + 1 >= opts.sample_len
                    || prompts[r].len() + tokens[r].len() + 1 >= max_ctx;
                if t == rules.eot {
                    continue;
                }
                tokens[r].push(t);
                if !full {
                    next_active.push(r);
                    keep.push(pos);
                    next_tokens.push(t);
                }
            }
            if next_active.is_empty() {
                break;
            }
            state.keep_rows(&keep)?;
            let h = self.model.step(&mut state, &next_tokens)?;
            logits = self.model.logits(&h)?.to_vec2::<f32>()?;
            active = next_active;
            steps += 1;
        }
        tracing::debug!(
            rows = n,
            temperature,
            steps,
            decode_ms = t0.elapsed().as_millis() as u64,
            "whisper decode pass"
        );
        Ok((0..n)
            .map(|r| {
                let text = self.tokenizer.decode(&tokens[r]).unwrap_or_default();
                Decoded {
                    avg_logprob: sum_lp[r] / (tokens[r].len() + 1) as f64,
                    compression_ratio: compression_ratio(&text),
                    tokens: std::mem::take(&mut tokens[r]),
                    no_speech_prob: no_speech[r],
                    temperature,
                }
            })
            .collect())
    }

    /// Split a decoded window into segments and find where the stream
    /// seeks next, exactly as the reference does.
    fn split_window(&self, s: &Stream, d: &Decoded, segment_size: usize) -> Window {
        let tb = self.tokenizer.timestamp_begin;
        let tokens = &d.tokens;
        let time_offset = s.seek as f64 * FRAME_S;
        let is_ts = |t: u32| t >= tb;
        let single_ts_ending = tokens.len() >= 2
            && !is_ts(tokens[tokens.len() - 2])
            && is_ts(tokens[tokens.len() - 1]);
        let consecutive: Vec<usize> = (1..tokens.len())
            .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
            .collect();
        let piece = |start: f64, end: f64, toks: &[u32]| Piece {
            start,
            end,
            decoded: (start, end),
            tokens: toks.to_vec(),
            words: Vec::new(),
        };
        let mut pieces: Vec<Piece> = Vec::new();
        let mut seek = s.seek;
        if !consecutive.is_empty() {
            let mut slices = consecutive.clone();
            if single_ts_ending {
                slices.push(tokens.len());
            }
            let mut last = 0;
            for &cur in &slices {
                let sl = &tokens[last..cur];
                let start = (sl[0].saturating_sub(tb)) as f64 * TIME_PRECISION;
                let end = (sl[sl.len() - 1].saturating_sub(tb)) as f64 * TIME_PRECISION;
                pieces.push(piece(time_offset + start, time_offset + end, sl));
                last = cur;
            }
            if single_ts_ending {
                seek += segment_size;
            } else {
                let last_ts = tokens[last - 1].saturating_sub(tb) as usize;
                seek += last_ts * INPUT_STRIDE;
            }
        } else {
            let mut duration = segment_size as f64 * FRAME_S;
            if let Some(&last) = tokens.iter().rev().find(|&&t| is_ts(t)) {
                if last != tb {
                    duration = (last - tb) as f64 * TIME_PRECISION;
                }
            }
            pieces.push(piece(time_offset, time_offset + duration, tokens));
            seek += segment_size;
        }
        Window {
            pieces,
            seek_before: s.seek,
            next_seek: seek,
            single_ts_ending,
            size: segment_size,
        }
    }

    /// Append a window's segments to its stream and advance the seek.
    fn commit_window(
        &self,
        s: &mut Stream,
        w: Window,
        d: &Decoded,
        opts: &TranscribeOptions,
    ) -> Result<()> {
        // Never stall: a window that produced no progress moves on a window.
        s.seek = if w.next_seek <= w.seek_before {
            w.seek_before + w.size
        } else {
            w.next_seek
        };
        let duration = s.content_frames as f64 * FRAME_S;
        for p in w.pieces {
            let text = self.tokenizer.decode(&p.tokens)?;
            // Which edges decide whether a segment is empty: its words'
            // (faster-whisper), or the decoder's when words must not steer.
            let (a, b) = if opts.words_steer_decoding {
                (p.start, p.end)
            } else {
                p.decoded
            };
            if a == b || text.trim().is_empty() {
                continue;
            }
            s.all_tokens.extend_from_slice(&p.tokens);
            let id = s.segments.len();
            // A random or confused model can emit timestamps past the end
            // of the audio; keep segments inside it.
            let start = p.start.min(duration);
            s.segments.push(Segment {
                id,
                seek: w.seek_before,
                start: round3(start),
                end: round3(p.end.min(duration).max(start)),
                text,
                tokens: p.tokens,
                temperature: d.temperature,
                avg_logprob: d.avg_logprob,
                compression_ratio: d.compression_ratio,
                no_speech_prob: d.no_speech_prob,
                words: p.words,
                speaker: None,
            });
        }
        if !opts.condition_on_previous_text || d.temperature > opts.prompt_reset_on_temperature {
            s.prompt_reset_since = s.all_tokens.len();
        }
        Ok(())
    }
}

/// A window to align: its encoder row, start sequence, text tokens and
/// real encoder frames.
struct AlignRow {
    row: usize,
    start: Vec<u32>,
    text: Vec<u32>,
    frames: usize,
}

/// A DTW path over `(text row, frame)` and the text tokens' probabilities.
type AlignPath = (Vec<(usize, usize)>, Vec<f32>);

/// Where each input's regions start, in mel frames. An input gets more
/// than one region only when the batch has rows to spare and its regions
/// stay at least `min_region_s` long; cuts go to the quietest 0.25 s within
/// ±5 s of the even split, so words are rarely cut in half.
fn plan_regions(inputs: &[&[f32]], max_batch: usize, min_region_s: f64) -> Vec<Vec<usize>> {
    let durations: Vec<f64> = inputs.iter().map(|s| s.len() as f64 / 16_000.0).collect();
    let mut counts = vec![1usize; inputs.len()];
    if min_region_s > 0.0 {
        let mut total = inputs.len();
        while total < max_batch {
            let best = (0..inputs.len())
                .filter(|&i| durations[i] / (counts[i] + 1) as f64 >= min_region_s)
                .max_by(|&a, &b| {
                    (durations[a] / counts[a] as f64).total_cmp(&(durations[b] / counts[b] as f64))
                });
            match best {
                Some(i) => {
                    counts[i] += 1;
                    total += 1;
                }
                None => break,
            }
        }
    }
    inputs
        .iter()
        .zip(counts)
        .map(|(samples, n)| {
            let mut starts = vec![0usize];
            for k in 1..n {
                let target = samples.len() * k / n;
                starts.push(quietest_point(samples, target, 5 * 16_000) / HOP_LENGTH);
            }
            starts.dedup();
            starts
        })
        .collect()
}

/// Sample index of the quietest 0.25 s window centred within `radius`
/// samples of `target`.
fn quietest_point(samples: &[f32], target: usize, radius: usize) -> usize {
    const WIN: usize = 4_000;
    const STEP: usize = 800;
    let lo = target.saturating_sub(radius);
    let hi = (target + radius).min(samples.len().saturating_sub(WIN));
    let mut best = (f32::INFINITY, target);
    let mut i = lo;
    while i <= hi {
        let e: f32 = samples[i..i + WIN].iter().map(|x| x * x).sum();
        if e < best.0 {
            best = (e, i + WIN / 2);
        }
        i += STEP;
    }
    best.1
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// When every temperature failed: the most likely result among those that
/// are not repetition loops (else among all), as faster-whisper picks.
fn best_of_failed(tried: &[Decoded], opts: &TranscribeOptions) -> Decoded {
    let cr = opts.compression_ratio_threshold.map(|c| c as f64);
    let ok: Vec<&Decoded> = tried
        .iter()
        .filter(|d| cr.is_none_or(|c| d.compression_ratio <= c))
        .collect();
    let pool: Vec<&Decoded> = if ok.is_empty() {
        tried.iter().collect()
    } else {
        ok
    };
    pool.into_iter()
        .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
        .cloned()
        .expect("at least one attempt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_windows_fit_short_audio_in_5_s_steps() {
        let fit = EncoderWindow::Fit;
        // At least 5 s of padding, rounded up to whole 5 s steps.
        assert_eq!(fit.width(0), 500);
        assert_eq!(fit.width(1), 1000);
        assert_eq!(fit.width(500), 1000);
        assert_eq!(fit.width(501), 1500);
        assert_eq!(fit.width(2000), 2500);
        // 25 s and more: the full 30 s window, as the reference.
        assert_eq!(fit.width(2001), N_FRAMES);
        assert_eq!(fit.width(N_FRAMES), N_FRAMES);
        for f in [0, 1, 777, 2999, N_FRAMES] {
            assert_eq!(EncoderWindow::Full.width(f), N_FRAMES);
            assert!(fit.width(f) >= (f + FIT_PAD_FRAMES).min(N_FRAMES));
            assert_eq!(fit.width(f) % 2, 0, "the stride-2 conv needs an even width");
        }
        assert_eq!("FIT".parse::<EncoderWindow>().unwrap(), fit);
        assert_eq!(
            " full".parse::<EncoderWindow>().unwrap(),
            EncoderWindow::Full
        );
        assert!(matches!(
            "half".parse::<EncoderWindow>(),
            Err(InferenceError::BadOption(m)) if m.contains("unknown encoder window")
        ));
        assert_eq!(EncoderWindow::default(), EncoderWindow::Fit);
        assert_eq!(fit.to_string(), "fit");
    }

    #[test]
    fn long_inputs_split_only_with_spare_rows() {
        let long = vec![0.1f32; 16_000 * 600];
        let short = vec![0.1f32; 16_000 * 20];
        // Ten minutes alone in a batch of 8: 8 regions of 75 s.
        let r = plan_regions(&[&long], 8, 60.0);
        assert_eq!(r[0].len(), 8);
        assert_eq!(r[0][0], 0);
        assert!(r[0].windows(2).all(|w| w[0] < w[1]));
        // Disabled, or no spare rows: one region each.
        assert_eq!(plan_regions(&[&long], 8, 0.0)[0], vec![0]);
        assert_eq!(plan_regions(&[&long], 1, 60.0)[0], vec![0]);
        // Short inputs never split.
        let r = plan_regions(&[&short, &short], 8, 60.0);
        assert_eq!(r, vec![vec![0], vec![0]]);
        // Spare rows go to the long input.
        let r = plan_regions(&[&short, &long], 4, 60.0);
        assert_eq!((r[0].len(), r[1].len()), (1, 3));
    }

    #[test]
    fn cuts_land_in_silence() {
        let mut x: Vec<f32> = (0..16_000 * 20).map(|i| ((i as f32) * 0.1).sin()).collect();
        // Silence from 11.0 s to 11.6 s.
        for v in &mut x[16_000 * 11..16_000 * 11 + 9_600] {
            *v = 0.0;
        }
        let p = quietest_point(&x, 16_000 * 10, 16_000 * 5);
        assert!((16_000 * 11..16_000 * 11 + 9_600).contains(&p), "{p}");
    }

    #[test]
    fn compression_ratio_flags_repetition() {
        let normal = "The quick brown fox jumps over the lazy dog near the river bank.";
        let looped = " thank you".repeat(20);
        assert!(compression_ratio(normal) < 1.5);
        assert!(
            compression_ratio(&looped) > 2.4,
            "{}",
            compression_ratio(&looped)
        );
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, f32::NEG_INFINITY]);
        let s: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-5);
        assert_eq!(lp[3], f32::NEG_INFINITY);
    }

    fn rules() -> Rules {
        Rules {
            suppress: vec![5],
            blank: vec![1, 10],
            eot: 10,
            no_timestamps: 19,
            ts_begin: 20,
            timestamps: true,
            max_initial_ts_index: Some(3),
        }
    }

    #[test]
    fn first_token_must_be_an_early_timestamp() {
        let r = rules();
        let mut l = vec![0f32; 40];
        r.apply(&mut l, &[], true);
        assert!(l[..20].iter().all(|x| x.is_infinite()));
        assert!(l[20..24].iter().all(|x| x.is_finite()));
        assert!(l[24..].iter().all(|x| x.is_infinite()));
    }

    #[test]
    fn timestamps_pair_and_never_decrease() {
        let r = rules();
        // After text then a timestamp: next must be a timestamp ≥ the last, or eot.
        let mut l = vec![0f32; 40];
        l[10] = 5.0; // eot likely, so text outweighs the timestamp mass
        r.apply(&mut l, &[22, 3, 4, 25], true);
        assert!(
            l[..10].iter().all(|x| x.is_infinite()),
            "no text right after a closing timestamp"
        );
        assert!(l[10].is_finite(), "eot allowed");
        assert!(l[20..25].iter().all(|x| x.is_infinite()));
        assert!(
            l[25].is_finite(),
            "a closing timestamp may open the next segment at the same time"
        );
        // After a pair of timestamps: text, not another timestamp.
        let mut l = vec![0f32; 40];
        r.apply(&mut l, &[22, 3, 25, 25], true);
        assert!(l[20..].iter().all(|x| x.is_infinite()));
        assert!(l[3].is_finite());
        assert!(l[5].is_infinite(), "suppressed token");
    }

    #[test]
    fn timestamp_mass_beats_text_forces_timestamp() {
        let r = rules();
        let mut l = vec![0f32; 40];
        for x in &mut l[20..] {
            *x = 5.0;
        }
        r.apply(&mut l, &[22, 3], true);
        assert!(l[..20].iter().all(|x| x.is_infinite()));
    }

    #[test]
    fn greedy_and_sampling() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(pick_token(&[0.0, 3.0, 1.0], 0.0, &mut rng), 1);
        let l = [0.0, f32::NEG_INFINITY, 0.0];
        for _ in 0..50 {
            assert_ne!(pick_token(&l, 1.0, &mut rng), 1);
        }
    }
}
