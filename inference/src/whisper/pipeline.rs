//! Transcribing only the speech: the VAD filter and the batched pipeline.
//!
//! Why: Silero VAD in front of Whisper is the standard cure for
//! hallucinations on silence and music, and it is what makes
//! faster-whisper's `BatchedInferencePipeline` fast: speech cut into
//! windows of at most 30 s needs no seeking, no conditioning on earlier
//! windows and no timestamp tokens, so every window of every input can be
//! decoded side by side in one batch, in a single pass each.
//!
//! Two modes, both behind [`Whisper::transcribe_batch`]:
//! - **`vad` on the sequential pipeline** (faster-whisper's `vad_filter`):
//!   the speech spans are concatenated and transcribed as one recording,
//!   with the usual long-form rules (seek, previous-text prompt, timestamp
//!   tokens, fallback); times are mapped back to the original timeline.
//! - **[`Pipeline::Batched`]**: the spans are grouped into windows of at
//!   most 30 s ([`plan_chunks`]); each window is decoded on its own, without
//!   the previous window's text, and by default without timestamp tokens
//!   (one segment per window; with word timestamps, one segment per speech
//!   span, cut at the words). Each window is decoded once, at the first
//!   temperature, as faster-whisper's pipeline does; `batched_fallback`
//!   turns the sequential pipeline's temperature fallback back on.
//!
//! Input with no speech at all costs only the VAD pass and gives an empty
//! transcript.

use serde::{Deserialize, Serialize};

use super::decode::{Progress, Segment, TranscribeOptions, Transcript, Whisper, Word};
use crate::error::InferenceError;
use crate::vad::{plan_chunks, SpeechChunk, SpeechSpan, SpeechTimestampsMap, VadOptions};

type Result<T> = std::result::Result<T, InferenceError>;

/// Longest window of the batched pipeline (Whisper's input window).
const CHUNK_S: f64 = 30.0;

/// How a long recording is cut and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// The reference's long-form loop: 30 s windows that seek to the last
    /// complete timestamp, each conditioned on the text before it.
    #[default]
    Sequential,
    /// faster-whisper's `BatchedInferencePipeline`: VAD windows of at most
    /// 30 s of speech, decoded independently and together.
    Batched,
}

impl std::str::FromStr for Pipeline {
    type Err = InferenceError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sequential" => Ok(Self::Sequential),
            "batched" => Ok(Self::Batched),
            other => Err(InferenceError::BadOption(format!(
                "unknown pipeline {other:?} (expected sequential or batched)"
            ))),
        }
    }
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sequential => "sequential",
            Self::Batched => "batched",
        })
    }
}

/// One input's speech, as the VAD cut it.
struct Speech {
    spans: Vec<SpeechSpan>,
    map: SpeechTimestampsMap,
}

impl Whisper {
    /// The VAD paths of [`Whisper::transcribe_batch`] (`opts.vad` or the
    /// batched pipeline).
    pub(super) fn transcribe_speech(
        &self,
        inputs: &[&[f32]],
        opts: &TranscribeOptions,
        progress: Option<Progress<'_>>,
    ) -> Vec<Result<Transcript>> {
        let fail = |e: InferenceError| inputs.iter().map(|_| Err(e.clone())).collect();
        let Some(vad) = self.vad.as_deref() else {
            return fail(InferenceError::BadOption(format!(
                "{} needs the Silero VAD model, which is not loaded \
                 (scripts/fetch-models installs it; EARSHOT_VAD_MODEL names a file)",
                if opts.pipeline == Pipeline::Batched {
                    "the batched pipeline"
                } else {
                    "vad"
                }
            )));
        };
        let vad_opts = opts.vad_parameters.unwrap_or(match opts.pipeline {
            Pipeline::Batched => VadOptions::batched(),
            Pipeline::Sequential => VadOptions::default(),
        });
        if let Err(e) = vad_opts.validate() {
            return fail(e.into());
        }
        let t0 = std::time::Instant::now();
        let speech: Vec<Result<Speech>> = inputs
            .iter()
            .map(|s| {
                let spans = vad.speech_timestamps(s, &vad_opts)?;
                let map = SpeechTimestampsMap::new(&spans, 16_000);
                Ok(Speech { spans, map })
            })
            .collect();
        tracing::debug!(
            inputs = inputs.len(),
            vad_ms = t0.elapsed().as_millis() as u64,
            "vad"
        );

        // The windows to decode: (input, chunk) pairs, in input order.
        let max_s = match opts.pipeline {
            Pipeline::Batched => CHUNK_S,
            Pipeline::Sequential => f64::INFINITY,
        };
        let mut owners: Vec<(usize, SpeechChunk)> = Vec::new();
        for (i, sp) in speech.iter().enumerate() {
            if let Ok(sp) = sp {
                owners.extend(plan_chunks(&sp.spans, max_s).into_iter().map(|c| (i, c)));
            }
        }
        let inner = window_options(opts);
        // Windows go to the decoder a few batches at a time, their audio
        // gathered just before: memory beyond the recording itself stays
        // bounded by the group, however long the recording is. A group of
        // four batches keeps the rows full when a window needs a second
        // pass (timestamps, fallback).
        let group = match opts.pipeline {
            Pipeline::Batched => opts.max_batch.max(1) * 4,
            Pipeline::Sequential => owners.len().max(1),
        };
        let mut decoded: Vec<Result<Transcript>> = Vec::with_capacity(owners.len());
        for (g, slice) in owners.chunks(group).enumerate() {
            let audio: Vec<Vec<f32>> = slice.iter().map(|(i, c)| c.gather(inputs[*i])).collect();
            let refs: Vec<&[f32]> = audio.iter().map(Vec::as_slice).collect();
            let inner_progress = |j: usize, done: f64, _total: f64| {
                if let (Some(p), Some((i, c))) = (progress, owners.get(g * group + j)) {
                    if let Ok(sp) = &speech[*i] {
                        let t = sp.map.original_time(c.offset_s + done, None, true);
                        p(*i, t, inputs[*i].len() as f64 / 16_000.0);
                    }
                }
            };
            decoded.extend(self.transcribe_batch(&refs, &inner, Some(&inner_progress)));
        }

        let mut parts: Vec<Vec<(SpeechChunk, Result<Transcript>)>> =
            inputs.iter().map(|_| Vec::new()).collect();
        for ((i, c), t) in owners.into_iter().zip(decoded) {
            parts[i].push((c, t));
        }
        speech
            .into_iter()
            .zip(parts)
            .zip(inputs)
            .map(|((sp, parts), samples)| {
                let sp = sp?;
                let duration = samples.len() as f64 / 16_000.0;
                restore(&sp, parts, duration, opts)
            })
            .collect()
    }
}

/// How the speech windows themselves are decoded: as recordings of their
/// own (no VAD, the sequential loop), and for the batched pipeline as
/// faster-whisper's does, independently, without timestamp tokens unless
/// asked, and at the first temperature only unless `batched_fallback`.
fn window_options(opts: &TranscribeOptions) -> TranscribeOptions {
    let mut inner = opts.clone();
    inner.vad = false;
    inner.pipeline = Pipeline::Sequential;
    if opts.pipeline == Pipeline::Batched {
        inner.condition_on_previous_text = false;
        inner.split_min_region_s = 0.0;
        inner.without_timestamps = !opts.batched_timestamps;
        inner.single_pass = true;
        if !opts.batched_fallback {
            inner.temperatures.truncate(1);
        }
    }
    inner
}

/// One input's transcript on its original timeline, from its windows'.
fn restore(
    sp: &Speech,
    parts: Vec<(SpeechChunk, Result<Transcript>)>,
    duration: f64,
    opts: &TranscribeOptions,
) -> Result<Transcript> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut languages: Vec<String> = Vec::new();
    for (chunk, t) in parts {
        let t = t?;
        languages.push(t.language.clone());
        let per_window = opts.pipeline == Pipeline::Batched && !opts.batched_timestamps;
        for g in t.segments {
            let shift = |x: f64| chunk.offset_s + x;
            let words: Vec<Word> = g
                .words
                .iter()
                .map(|w| {
                    let (start, end) = sp.map.restore_word(shift(w.start), shift(w.end));
                    Word {
                        start,
                        end,
                        ..w.clone()
                    }
                })
                .collect();
            if per_window && !words.is_empty() {
                // One decoded window holds several speech spans: cut its
                // segment where the words cross from one span to the next.
                segments.extend(split_at_spans(&g, words, sp));
                continue;
            }
            let (start, end) = match (words.first(), words.last()) {
                (Some(a), Some(b)) => (a.start, b.end),
                _ if per_window => (
                    sp.map.original_time(chunk.offset_s, None, false),
                    sp.map
                        .original_time(chunk.offset_s + chunk.duration_s, None, true),
                ),
                _ => sp.map.restore_segment(shift(g.start), shift(g.end)),
            };
            segments.push(Segment {
                start,
                end,
                words,
                ..g
            });
        }
    }
    for (k, g) in segments.iter_mut().enumerate() {
        g.id = k;
        g.seek = (g.start * 100.0).round().max(0.0) as usize;
    }
    let text: String = segments.iter().map(|g| g.text.as_str()).collect();
    Ok(Transcript {
        text: text.trim().to_string(),
        language: majority(&languages)
            .or_else(|| opts.language.clone())
            .unwrap_or_else(|| "en".into()),
        duration,
        segments,
    })
}

/// A window's segment cut into one segment per speech span its words fall
/// in (a word belongs to the span holding its midpoint). Each piece keeps
/// the window's scores; its tokens are the window's, on the first piece only.
fn split_at_spans(g: &Segment, words: Vec<Word>, sp: &Speech) -> Vec<Segment> {
    let span_of = |w: &Word| {
        let mid = (w.start + w.end) / 2.0;
        sp.spans
            .iter()
            .position(|s| mid * 16_000.0 < s.end as f64)
            .unwrap_or(sp.spans.len())
    };
    let mut out: Vec<Segment> = Vec::new();
    let mut current: Vec<Word> = Vec::new();
    let mut current_span = None;
    let flush = |out: &mut Vec<Segment>, words: Vec<Word>| {
        if let (Some(a), Some(b)) = (words.first(), words.last()) {
            let text: String = words.iter().map(|w| w.word.as_str()).collect();
            out.push(Segment {
                start: a.start,
                end: b.end,
                text,
                tokens: if out.is_empty() {
                    g.tokens.clone()
                } else {
                    Vec::new()
                },
                words,
                ..g.clone()
            });
        }
    };
    for w in words {
        let s = span_of(&w);
        if current_span.is_some_and(|c| c != s) {
            flush(&mut out, std::mem::take(&mut current));
        }
        current_span = Some(s);
        current.push(w);
    }
    flush(&mut out, current);
    out
}

/// The most frequent code (first seen wins a tie).
fn majority(codes: &[String]) -> Option<String> {
    let mut best: Option<(&String, usize)> = None;
    for c in codes {
        let n = codes.iter().filter(|x| *x == c).count();
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((c, n));
        }
    }
    best.map(|(c, _)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str, words: &[(&str, f64, f64)]) -> Segment {
        Segment {
            id: 0,
            seek: 0,
            start: 0.0,
            end: 30.0,
            text: text.into(),
            tokens: vec![1, 2, 3],
            temperature: 0.0,
            avg_logprob: -0.1,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            words: words
                .iter()
                .map(|&(w, s, e)| Word {
                    word: w.into(),
                    start: s,
                    end: e,
                    probability: 0.9,
                    speaker: None,
                })
                .collect(),
            speaker: None,
        }
    }

    #[test]
    fn batched_windows_decode_once_unless_fallback_is_asked() {
        let batched = TranscribeOptions {
            pipeline: Pipeline::Batched,
            ..Default::default()
        };
        let w = window_options(&batched);
        assert_eq!(w.temperatures, vec![0.0]);
        assert!(w.without_timestamps && !w.condition_on_previous_text);
        assert_eq!((w.pipeline, w.vad), (Pipeline::Sequential, false));
        let w = window_options(&TranscribeOptions {
            batched_fallback: true,
            temperatures: vec![0.2, 0.6],
            ..batched.clone()
        });
        assert_eq!(w.temperatures, vec![0.2, 0.6]);
        // A request's own temperature is the one kept.
        let w = window_options(&TranscribeOptions {
            temperatures: vec![0.4, 0.6, 0.8],
            ..batched
        });
        assert_eq!(w.temperatures, vec![0.4]);
        // `--vad` on the sequential pipeline keeps the whole fallback.
        let w = window_options(&TranscribeOptions {
            vad: true,
            ..Default::default()
        });
        assert_eq!(w.temperatures.len(), 6);
        assert!(w.condition_on_previous_text && !w.vad);
    }

    #[test]
    fn pipeline_names_parse_and_print() {
        assert_eq!("Batched".parse::<Pipeline>().unwrap(), Pipeline::Batched);
        assert_eq!(Pipeline::Sequential.to_string(), "sequential");
        let e = "fast".parse::<Pipeline>().unwrap_err().to_string();
        assert!(e.contains("sequential or batched"), "{e}");
    }

    #[test]
    fn a_window_is_cut_where_its_words_change_span() {
        // Two spans: 1–3 s and 10–12 s; the speech-only timeline puts the
        // second at 2–4 s.
        let spans = vec![
            SpeechSpan {
                start: 16_000,
                end: 48_000,
            },
            SpeechSpan {
                start: 160_000,
                end: 192_000,
            },
        ];
        let map = SpeechTimestampsMap::new(&spans, 16_000);
        let sp = Speech { spans, map };
        let g = seg(
            " one two three",
            &[(" one", 0.1, 0.5), (" two", 1.0, 1.8), (" three", 2.2, 2.9)],
        );
        let chunk = SpeechChunk {
            offset_s: 0.0,
            duration_s: 4.0,
            spans: sp.spans.clone(),
        };
        let opts = TranscribeOptions {
            pipeline: Pipeline::Batched,
            ..Default::default()
        };
        let t = Transcript {
            text: g.text.clone(),
            language: "en".into(),
            duration: 4.0,
            segments: vec![g],
        };
        let out = restore(&sp, vec![(chunk, Ok(t))], 20.0, &opts).unwrap();
        assert_eq!(out.segments.len(), 2, "{:?}", out.segments);
        assert_eq!(out.segments[0].text, " one two");
        assert_eq!((out.segments[0].start, out.segments[0].end), (1.1, 2.8));
        assert_eq!(out.segments[1].text, " three");
        // 2.2 s of speech is 0.2 s into the second span, which starts at 10 s.
        assert_eq!((out.segments[1].start, out.segments[1].end), (10.2, 10.9));
        assert_eq!(out.text, "one two three");
        assert_eq!(out.duration, 20.0);
        assert_eq!(
            out.segments.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![0, 1]
        );
    }

    #[test]
    fn a_window_without_words_spans_its_speech() {
        let spans = vec![SpeechSpan {
            start: 80_000,
            end: 160_000,
        }];
        let map = SpeechTimestampsMap::new(&spans, 16_000);
        let sp = Speech {
            spans: spans.clone(),
            map,
        };
        let chunk = SpeechChunk {
            offset_s: 0.0,
            duration_s: 5.0,
            spans,
        };
        let opts = TranscribeOptions {
            pipeline: Pipeline::Batched,
            ..Default::default()
        };
        let t = Transcript {
            text: "hello".into(),
            language: "en".into(),
            duration: 5.0,
            segments: vec![seg(" hello", &[])],
        };
        let out = restore(&sp, vec![(chunk, Ok(t))], 12.0, &opts).unwrap();
        assert_eq!((out.segments[0].start, out.segments[0].end), (5.0, 10.0));
    }

    #[test]
    fn the_reported_language_is_the_windows_majority() {
        let v: Vec<String> = ["de", "en", "en", "de", "en"].map(String::from).to_vec();
        assert_eq!(majority(&v).as_deref(), Some("en"));
        assert_eq!(majority(&[]), None);
    }
}
