//! From speech probabilities to speech spans, and from spans to the ≤ 30 s
//! windows the batched pipeline decodes, with the map back to the original
//! timeline. A line-by-line port of faster-whisper 1.2.1's `vad.py`
//! (`get_speech_timestamps`, `collect_chunks`, `SpeechTimestampsMap`) and of
//! `restore_speech_timestamps` in its `transcribe.py`, so that a job with
//! `vad` cuts the audio where faster-whisper would. Divergences are few and
//! named where they are.

use super::model::{SAMPLE_RATE, WINDOW_SAMPLES};
use super::VadError;

/// Post-processing parameters, with faster-whisper's names and defaults
/// (`VadOptions()`: the sequential pipeline's `vad_filter=True`).
/// Deserializes from faster-whisper's `vad_parameters` JSON (missing
/// fields take these defaults; unknown fields are refused).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadOptions {
    /// A window with probability ≥ `threshold` is speech.
    pub threshold: f64,
    /// Below this, a window is silence; in between, it continues whatever
    /// came before. `None`: `max(threshold - 0.15, 0.01)`.
    pub neg_threshold: Option<f64>,
    /// Speech spans this short or shorter are dropped.
    pub min_speech_duration_ms: u32,
    /// Longer spans are cut at the last silence over 98 ms, or hard-cut.
    /// JSON `null` (or absent) is no limit.
    #[serde(with = "infinite_as_null")]
    pub max_speech_duration_s: f64,
    /// Silence needed to end a span.
    pub min_silence_duration_ms: u32,
    /// Padding added on each side of every span.
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: f64::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

impl VadOptions {
    /// What faster-whisper's `BatchedInferencePipeline` uses when given no
    /// VAD parameters: spans of at most `chunk_length` (30 s) and 160 ms of
    /// silence to end a span.
    pub fn batched() -> Self {
        Self {
            max_speech_duration_s: 30.0,
            min_silence_duration_ms: 160,
            ..Self::default()
        }
    }

    /// The effective `neg_threshold`.
    pub fn neg_threshold(&self) -> f64 {
        self.neg_threshold
            .unwrap_or_else(|| (self.threshold - 0.15).max(0.01))
    }

    /// Rejects values faster-whisper would not give a meaning to.
    pub fn validate(&self) -> Result<(), VadError> {
        let bad = |m: String| Err(VadError::BadOption(m));
        if !(0.0..=1.0).contains(&self.threshold) {
            return bad(format!("threshold {} is not in [0, 1]", self.threshold));
        }
        if let Some(n) = self.neg_threshold {
            if !(0.0..=1.0).contains(&n) {
                return bad(format!("neg_threshold {n} is not in [0, 1]"));
            }
        }
        if self.max_speech_duration_s.is_nan() || self.max_speech_duration_s <= 0.0 {
            return bad(format!(
                "max_speech_duration_s {} must be positive",
                self.max_speech_duration_s
            ));
        }
        Ok(())
    }
}

/// `f64::INFINITY` as JSON `null`, which is what "no limit" reads as, and
/// which JSON can carry (it has no infinity).
mod infinite_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_infinite() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// A span of speech, in samples at 16 kHz, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpeechSpan {
    pub start: usize,
    pub end: usize,
}

impl SpeechSpan {
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn start_s(&self) -> f64 {
        self.start as f64 / SAMPLE_RATE as f64
    }

    pub fn end_s(&self) -> f64 {
        self.end as f64 / SAMPLE_RATE as f64
    }
}

/// faster-whisper's `get_speech_timestamps` after the model call: `probs`
/// holds one probability per 512-sample window (as
/// [`SileroVad::speech_probs`](super::SileroVad::speech_probs) returns),
/// `n_samples` is the audio's length.
///
/// Arithmetic follows the Python: sample positions are integers, the
/// derived limits (`min_speech_samples`, …) are floats, probabilities are
/// compared as f64, pads are truncated with `int()`.
pub fn speech_timestamps_from_probs(
    probs: &[f32],
    n_samples: usize,
    opts: &VadOptions,
) -> Result<Vec<SpeechSpan>, VadError> {
    opts.validate()?;
    let sr = f64::from(SAMPLE_RATE);
    let window = WINDOW_SAMPLES as i64;
    let threshold = opts.threshold;
    let neg_threshold = opts.neg_threshold();
    let min_speech_samples = sr * f64::from(opts.min_speech_duration_ms) / 1000.0;
    let speech_pad_samples = sr * f64::from(opts.speech_pad_ms) / 1000.0;
    let max_speech_samples =
        sr * opts.max_speech_duration_s - window as f64 - 2.0 * speech_pad_samples;
    let min_silence_samples = sr * f64::from(opts.min_silence_duration_ms) / 1000.0;
    let min_silence_samples_at_max_speech = sr * 98.0 / 1000.0;
    let audio_length_samples = n_samples as i64;

    let mut triggered = false;
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    // `current_speech["start"]`; Some exactly when the dict is non-empty.
    let mut current: Option<i64> = None;
    let mut temp_end = 0i64;
    let (mut prev_end, mut next_start) = (0i64, 0i64);

    for (i, &p) in probs.iter().enumerate() {
        let p = f64::from(p);
        let pos = window * i as i64;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = pos;
            }
        }
        if p >= threshold && !triggered {
            triggered = true;
            current = Some(pos);
            continue;
        }
        if triggered {
            let start = current.expect("a triggered span has a start");
            if (pos - start) as f64 > max_speech_samples {
                if prev_end != 0 {
                    speeches.push((start, prev_end));
                    current = None;
                    // previously reached silence (< neg_thres) and is still not speech (< thres)
                    if next_start < prev_end {
                        triggered = false;
                    } else {
                        current = Some(next_start);
                    }
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                } else {
                    speeches.push((start, pos));
                    current = None;
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                    triggered = false;
                    continue;
                }
            }
        }
        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = pos;
            }
            // condition to avoid cutting in very short silence
            if (pos - temp_end) as f64 > min_silence_samples_at_max_speech {
                prev_end = temp_end;
            }
            if ((pos - temp_end) as f64) < min_silence_samples {
                continue;
            }
            let start = current.take().expect("a triggered span has a start");
            if (temp_end - start) as f64 > min_speech_samples {
                speeches.push((start, temp_end));
            }
            prev_end = 0;
            next_start = 0;
            temp_end = 0;
            triggered = false;
            continue;
        }
    }
    if let Some(start) = current {
        if (audio_length_samples - start) as f64 > min_speech_samples {
            speeches.push((start, audio_length_samples));
        }
    }

    // Padding; gaps shorter than two pads are split between the neighbours.
    let len_f = audio_length_samples as f64;
    let count = speeches.len();
    for i in 0..count {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - speech_pad_samples).max(0.0) as i64;
        }
        if i != count - 1 {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if (silence as f64) < 2.0 * speech_pad_samples {
                let half = silence.div_euclid(2); // Python's `//`
                speeches[i].1 += half;
                speeches[i + 1].0 = (speeches[i + 1].0 - half).max(0);
            } else {
                speeches[i].1 = (speeches[i].1 as f64 + speech_pad_samples).min(len_f) as i64;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - speech_pad_samples).max(0.0) as i64;
            }
        } else {
            speeches[i].1 = (speeches[i].1 as f64 + speech_pad_samples).min(len_f) as i64;
        }
    }
    Ok(speeches
        .into_iter()
        .map(|(s, e)| SpeechSpan {
            start: s.max(0) as usize,
            end: e.max(0) as usize,
        })
        .collect())
}

/// One window of the batched pipeline: consecutive speech spans whose
/// audio, concatenated with the silence between them removed, lasts at
/// most `max_duration_s` (one span longer than that is a window alone).
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechChunk {
    /// Start of this window on the speech-only timeline (seconds): the
    /// durations of the windows before it, summed.
    pub offset_s: f64,
    /// Seconds of audio in the window.
    pub duration_s: f64,
    /// The spans it concatenates, on the original timeline.
    pub spans: Vec<SpeechSpan>,
}

impl SpeechChunk {
    /// The window's audio: its spans of `samples`, concatenated.
    pub fn gather(&self, samples: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.spans.iter().map(SpeechSpan::len).sum());
        for s in &self.spans {
            let end = s.end.min(samples.len());
            out.extend_from_slice(&samples[s.start.min(end)..end]);
        }
        out
    }
}

/// faster-whisper's `collect_chunks` without the audio: groups `spans`
/// into windows of at most `max_duration_s` of speech.
///
/// Same grouping, offsets and durations as faster-whisper, except that (1)
/// no span means no window, not one empty window; (2) a first span longer
/// than `max_duration_s` does not produce an empty window before it; and
/// (3) each window lists all of its spans (faster-whisper's metadata omits
/// the first span of every window after the first; nothing reads it).
pub fn plan_chunks(spans: &[SpeechSpan], max_duration_s: f64) -> Vec<SpeechChunk> {
    let sr = f64::from(SAMPLE_RATE);
    let limit = max_duration_s * sr;
    let mut out = Vec::new();
    let mut current: Vec<SpeechSpan> = Vec::new();
    let mut current_duration = 0usize;
    let mut total_duration = 0usize;
    for span in spans {
        if (current_duration + span.len()) as f64 > limit && !current.is_empty() {
            out.push(SpeechChunk {
                offset_s: total_duration as f64 / sr,
                duration_s: current_duration as f64 / sr,
                spans: std::mem::take(&mut current),
            });
            total_duration += current_duration;
            current_duration = 0;
        }
        current.push(*span);
        current_duration += span.len();
    }
    if !current.is_empty() {
        out.push(SpeechChunk {
            offset_s: total_duration as f64 / sr,
            duration_s: current_duration as f64 / sr,
            spans: current,
        });
    }
    out
}

/// faster-whisper's `collect_chunks`: the windows' audio and their
/// metadata (see [`plan_chunks`] for the divergences).
pub fn collect_chunks(
    samples: &[f32],
    spans: &[SpeechSpan],
    max_duration_s: f64,
) -> (Vec<Vec<f32>>, Vec<SpeechChunk>) {
    let chunks = plan_chunks(spans, max_duration_s);
    let audio = chunks.iter().map(|c| c.gather(samples)).collect();
    (audio, chunks)
}

/// Maps times on the speech-only timeline (all spans concatenated) back to
/// the original audio: faster-whisper's `SpeechTimestampsMap`, rounding to
/// 0.01 s like it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechTimestampsMap {
    sample_rate: u32,
    /// Where each span ends on the speech-only timeline (samples).
    chunk_end_sample: Vec<i64>,
    /// Seconds of silence removed before each span.
    total_silence_before: Vec<f64>,
}

impl SpeechTimestampsMap {
    pub fn new(spans: &[SpeechSpan], sample_rate: u32) -> Self {
        let mut chunk_end_sample = Vec::with_capacity(spans.len());
        let mut total_silence_before = Vec::with_capacity(spans.len());
        let (mut previous_end, mut silent_samples) = (0i64, 0i64);
        for s in spans {
            silent_samples += s.start as i64 - previous_end;
            previous_end = s.end as i64;
            chunk_end_sample.push(s.end as i64 - silent_samples);
            total_silence_before.push(silent_samples as f64 / f64::from(sample_rate));
        }
        Self {
            sample_rate,
            chunk_end_sample,
            total_silence_before,
        }
    }

    /// The span a speech-only time falls in. An end time exactly at a span's
    /// end belongs to that span (with `is_end`), not to the next.
    pub fn chunk_index(&self, time: f64, is_end: bool) -> usize {
        let sample = (time * f64::from(self.sample_rate)) as i64; // int(): truncation
        if is_end {
            if let Some(i) = self.chunk_end_sample.iter().position(|&e| e == sample) {
                return i;
            }
        }
        // bisect.bisect (right)
        let i = self.chunk_end_sample.partition_point(|&e| e <= sample);
        i.min(self.chunk_end_sample.len().saturating_sub(1))
    }

    /// The original time of a speech-only `time`, rounded to 0.01 s. With
    /// no spans at all, `time` is returned unchanged (faster-whisper raises).
    pub fn original_time(&self, time: f64, chunk_index: Option<usize>, is_end: bool) -> f64 {
        if self.total_silence_before.is_empty() {
            return time;
        }
        let i = chunk_index
            .unwrap_or_else(|| self.chunk_index(time, is_end))
            .min(self.total_silence_before.len() - 1);
        round2(self.total_silence_before[i] + time)
    }

    /// A segment without words, as `restore_speech_timestamps` maps it.
    pub fn restore_segment(&self, start: f64, end: f64) -> (f64, f64) {
        (
            self.original_time(start, None, false),
            self.original_time(end, None, true),
        )
    }

    /// A word: both ends mapped through the span that holds its midpoint,
    /// so a word never straddles removed silence.
    pub fn restore_word(&self, start: f64, end: f64) -> (f64, f64) {
        let i = self.chunk_index((start + end) / 2.0, false);
        (
            self.original_time(start, Some(i), false),
            self.original_time(end, Some(i), false),
        )
    }
}

/// Python's `round(x, 2)`: correctly rounded, ties to even on the exact
/// binary value — which is what `{:.2}` formatting does.
fn round2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.2}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: usize, end: usize) -> SpeechSpan {
        SpeechSpan { start, end }
    }

    /// Probabilities from a pattern, one char per window: '#' speech (0.9),
    /// '~' in between (0.4), '.' silence (0.1).
    fn probs(pattern: &str) -> Vec<f32> {
        pattern
            .chars()
            .map(|c| match c {
                '#' => 0.9,
                '~' => 0.4,
                _ => 0.1,
            })
            .collect()
    }

    fn opts(min_silence_ms: u32, pad_ms: u32) -> VadOptions {
        VadOptions {
            min_silence_duration_ms: min_silence_ms,
            speech_pad_ms: pad_ms,
            ..VadOptions::default()
        }
    }

    #[test]
    fn spans_start_at_threshold_and_end_after_min_silence() {
        // 10 windows speech, 20 silence (640 ms), 5 speech, then silence.
        let p = probs(&format!(
            "{}{}{}{}",
            "#".repeat(10),
            ".".repeat(20),
            "#".repeat(5),
            ".".repeat(30)
        ));
        let n = p.len() * 512 - 100;
        // min_silence 100 ms (1600 samples = 3.125 windows), no pad.
        let s = speech_timestamps_from_probs(&p, n, &opts(100, 0)).unwrap();
        assert_eq!(s, vec![span(0, 10 * 512), span(30 * 512, 35 * 512)]);
        // min_silence 2 s: the gap does not end the span; the audio's end does.
        let s = speech_timestamps_from_probs(&p, n, &opts(2000, 0)).unwrap();
        assert_eq!(s, vec![span(0, n)]);
        // Between thresholds continues speech but does not start it.
        let p = probs("..~~##~~~~~~.....~~~~");
        let s = speech_timestamps_from_probs(&p, p.len() * 512, &opts(50, 0)).unwrap();
        assert_eq!(s, vec![span(4 * 512, 12 * 512)]);
    }

    #[test]
    fn padding_and_gap_splitting() {
        let p = probs(&format!(
            "{}{}{}{}{}",
            ".".repeat(20),
            "#".repeat(10),
            ".".repeat(6),
            "#".repeat(10),
            ".".repeat(40)
        ));
        let n = p.len() * 512;
        // pad 100 ms = 1600 samples; gap = 6 windows = 3072 < 3200: split in half.
        let s = speech_timestamps_from_probs(&p, n, &opts(50, 100)).unwrap();
        assert_eq!(
            s,
            vec![
                span(20 * 512 - 1600, 30 * 512 + 1536),
                span(36 * 512 - 1536, 46 * 512 + 1600)
            ]
        );
        // The first span's pad is clamped at 0, the last's at the audio's end.
        let p = probs("###....");
        let s = speech_timestamps_from_probs(&p, 3000, &opts(10, 400)).unwrap();
        assert_eq!(s, vec![span(0, 3000)]);
    }

    #[test]
    fn min_speech_drops_short_spans() {
        let p = probs("..#.........######........");
        let o = VadOptions {
            min_speech_duration_ms: 100, // 1600 samples: one window (512) is dropped
            ..opts(50, 0)
        };
        let s = speech_timestamps_from_probs(&p, p.len() * 512, &o).unwrap();
        assert_eq!(s, vec![span(12 * 512, 18 * 512)]);
    }

    #[test]
    fn long_speech_is_cut_at_the_last_silence_or_hard() {
        // max 1 s, no pad: max_speech_samples = 16000 - 512 = 15488 (30.25 windows).
        let o = VadOptions {
            max_speech_duration_s: 1.0,
            ..opts(2000, 0)
        };
        // Speech with a 5-window (160 ms > 98 ms) dip at windows 20..25.
        let p = probs(&format!(
            "{}{}{}",
            "#".repeat(20),
            ".".repeat(5),
            "#".repeat(40)
        ));
        let n = p.len() * 512;
        let s = speech_timestamps_from_probs(&p, n, &o).unwrap();
        // Cut at the dip's start (prev_end), resume where speech came back.
        assert_eq!(s[0], span(0, 20 * 512));
        assert_eq!(s[1].start, 25 * 512);
        // No dip at all: hard cut at the first window past the limit.
        let p = probs(&"#".repeat(70));
        let s = speech_timestamps_from_probs(&p, 70 * 512, &o).unwrap();
        assert_eq!(s[0], span(0, 31 * 512));
        assert!(s.iter().all(|s| s.len() as f64 <= 16000.0));
    }

    #[test]
    fn options_are_checked() {
        for o in [
            VadOptions {
                threshold: 1.5,
                ..VadOptions::default()
            },
            VadOptions {
                threshold: f64::NAN,
                ..VadOptions::default()
            },
            VadOptions {
                neg_threshold: Some(-0.1),
                ..VadOptions::default()
            },
            VadOptions {
                max_speech_duration_s: 0.0,
                ..VadOptions::default()
            },
        ] {
            assert!(matches!(
                speech_timestamps_from_probs(&[0.5], 512, &o),
                Err(VadError::BadOption(_))
            ));
        }
        assert_eq!(VadOptions::default().neg_threshold(), 0.5 - 0.15);
        let low = VadOptions {
            threshold: 0.1,
            ..VadOptions::default()
        };
        assert_eq!(low.neg_threshold(), 0.01);
        let o: VadOptions = serde_json::from_str(
            r#"{"max_speech_duration_s": 30, "min_silence_duration_ms": 160}"#,
        )
        .unwrap();
        assert_eq!(o, VadOptions::batched());
        assert!(serde_json::from_str::<VadOptions>(r#"{"treshold": 0.4}"#).is_err());
    }

    #[test]
    fn chunks_group_up_to_the_limit() {
        let sr = 16_000;
        let spans = [
            span(0, 10 * sr),
            span(12 * sr, 25 * sr), // 13 s: 23 s so far
            span(30 * sr, 38 * sr), // 8 s: 31 > 30, new window
            span(40 * sr, 75 * sr), // 35 s alone
            span(80 * sr, 81 * sr),
        ];
        let c = plan_chunks(&spans, 30.0);
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].spans, spans[..2]);
        assert_eq!((c[0].offset_s, c[0].duration_s), (0.0, 23.0));
        assert_eq!(c[1].spans, spans[2..3]);
        assert_eq!((c[1].offset_s, c[1].duration_s), (23.0, 8.0));
        assert_eq!((c[2].offset_s, c[2].duration_s), (31.0, 35.0));
        assert_eq!((c[3].offset_s, c[3].duration_s), (66.0, 1.0));
        assert!(plan_chunks(&[], 30.0).is_empty());
        let audio: Vec<f32> = (0..90 * sr).map(|i| i as f32).collect();
        let (a, meta) = collect_chunks(&audio, &spans, 30.0);
        assert_eq!(meta, c);
        assert_eq!(a[0].len(), 23 * sr);
        assert_eq!(a[0][10 * sr], (12 * sr) as f32);
    }

    #[test]
    fn times_map_back_to_the_original_timeline() {
        // Spans 1–3 s and 5–6 s: speech-only timeline 0–2 s, then 2–3 s.
        let m = SpeechTimestampsMap::new(&[span(16_000, 48_000), span(80_000, 96_000)], 16_000);
        assert_eq!(m.original_time(0.5, None, false), 1.5);
        assert_eq!(m.original_time(2.5, None, false), 5.5);
        // Exactly at the first span's end: the next span, unless it is an end.
        assert_eq!(m.original_time(2.0, None, false), 5.0);
        assert_eq!(m.original_time(2.0, None, true), 3.0);
        // Past the end: the last span.
        assert_eq!(m.original_time(9.0, None, false), 12.0);
        assert_eq!(m.restore_segment(1.0, 2.0), (2.0, 3.0));
        // A word straddling the junction follows its midpoint.
        assert_eq!(m.restore_word(1.9, 2.3), (4.9, 5.3));
        assert_eq!(m.restore_word(1.7, 2.1), (2.7, 3.1));
        // Rounding as Python's round(x, 2).
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(2.675), 2.67);
        assert_eq!(round2(12.345), 12.35);
        let empty = SpeechTimestampsMap::new(&[], 16_000);
        assert_eq!(empty.original_time(1.234, None, false), 1.234);
    }
}
