//! Transcript output formats shared by the CLI, the worker and the HTTP API.

use serde::Serialize;

use super::decode::{Transcript, Word};
use crate::error::InferenceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    /// JSON with every decoding statistic (tokens, temperature, ratios).
    VerboseJson,
    Srt,
    Vtt,
}

impl std::str::FromStr for OutputFormat {
    type Err = InferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "txt" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            "verbose_json" => Ok(Self::VerboseJson),
            "srt" => Ok(Self::Srt),
            "vtt" => Ok(Self::Vtt),
            other => Err(InferenceError::BadOption(format!(
                "unknown format {other:?} (text, json, verbose_json, srt, vtt)"
            ))),
        }
    }
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Text => "txt",
            Self::Json | Self::VerboseJson => "json",
            Self::Srt => "srt",
            Self::Vtt => "vtt",
        }
    }
}

/// How [`render_with`] lays out a transcript beyond the format itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// SRT and VTT only: cut each segment into cues of at most this many
    /// words, each cue timed from its first word's start to its last
    /// word's end (karaoke-style captions). Needs word timings
    /// (`TranscribeOptions::word_timestamps`); segments without words keep
    /// one cue each. `None` (and `Some(0)`) is one cue per segment.
    pub max_words_per_cue: Option<usize>,
}

#[derive(Serialize)]
struct CompactSegment<'a> {
    id: usize,
    start: f64,
    end: f64,
    text: &'a str,
    avg_logprob: f64,
    no_speech_prob: f64,
    #[serde(skip_serializing_if = "no_words")]
    words: &'a [Word],
}

fn no_words(w: &&[Word]) -> bool {
    w.is_empty()
}

#[derive(Serialize)]
struct CompactTranscript<'a> {
    text: &'a str,
    language: &'a str,
    duration: f64,
    segments: Vec<CompactSegment<'a>>,
}

/// One entry of the top-level `words` array of `verbose_json`, as OpenAI's
/// API returns it with `timestamp_granularities[]=word`: the word trimmed.
#[derive(Serialize)]
struct ApiWord<'a> {
    word: &'a str,
    start: f64,
    end: f64,
}

/// `verbose_json`: the whole transcript, plus the flat `words` array when
/// any segment has word timings.
#[derive(Serialize)]
struct VerboseTranscript<'a> {
    #[serde(flatten)]
    transcript: &'a Transcript,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    words: Vec<ApiWord<'a>>,
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT).
fn timestamp(t: f64, sep: char) -> String {
    let ms = (t.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// One caption cue: start, end, text.
#[derive(Debug, Clone, PartialEq)]
struct Cue {
    start: f64,
    end: f64,
    text: String,
}

/// The caption cues of a transcript: one per segment, or, with
/// `max_words_per_cue` and word timings, runs of at most that many words.
fn cues(t: &Transcript, opts: &RenderOptions) -> Vec<Cue> {
    let per_cue = opts.max_words_per_cue.filter(|&n| n > 0);
    let mut out = Vec::new();
    for s in &t.segments {
        match per_cue {
            Some(n) if !s.words.is_empty() => {
                for run in s.words.chunks(n) {
                    // Words carry their own leading spaces (none in
                    // languages written without them): concatenate.
                    let text: String = run.iter().map(|w| w.word.as_str()).collect();
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    let (Some(first), Some(last)) = (run.first(), run.last()) else {
                        continue;
                    };
                    out.push(Cue {
                        start: first.start,
                        end: last.end.max(first.start),
                        text: text.to_owned(),
                    });
                }
            }
            _ => out.push(Cue {
                start: s.start,
                end: s.end,
                text: s.text.trim().to_owned(),
            }),
        }
    }
    out
}

/// Renders a transcript with the default [`RenderOptions`].
pub fn render(t: &Transcript, format: OutputFormat) -> String {
    render_with(t, format, &RenderOptions::default())
}

/// Renders a transcript. Word timings, when the transcript has them, go
/// into `json` (per segment), `verbose_json` (per segment, and as the
/// top-level `words` array OpenAI's API returns) and, with
/// [`RenderOptions::max_words_per_cue`], into word-level SRT/VTT cues.
pub fn render_with(t: &Transcript, format: OutputFormat, opts: &RenderOptions) -> String {
    match format {
        OutputFormat::Text => format!("{}\n", t.text),
        OutputFormat::Json => {
            let c = CompactTranscript {
                text: &t.text,
                language: &t.language,
                duration: t.duration,
                segments: t
                    .segments
                    .iter()
                    .map(|s| CompactSegment {
                        id: s.id,
                        start: s.start,
                        end: s.end,
                        text: &s.text,
                        avg_logprob: s.avg_logprob,
                        no_speech_prob: s.no_speech_prob,
                        words: &s.words,
                    })
                    .collect(),
            };
            serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
        }
        OutputFormat::VerboseJson => {
            let v = VerboseTranscript {
                transcript: t,
                words: t
                    .segments
                    .iter()
                    .flat_map(|s| &s.words)
                    .map(|w| ApiWord {
                        word: w.word.trim(),
                        start: w.start,
                        end: w.end,
                    })
                    .collect(),
            };
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        OutputFormat::Srt => {
            let mut out = String::new();
            for (i, c) in cues(t, opts).iter().enumerate() {
                out.push_str(&format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    timestamp(c.start, ','),
                    timestamp(c.end, ','),
                    c.text
                ));
            }
            out
        }
        OutputFormat::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for c in cues(t, opts) {
                out.push_str(&format!(
                    "{} --> {}\n{}\n\n",
                    timestamp(c.start, '.'),
                    timestamp(c.end, '.'),
                    c.text
                ));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whisper::Segment;

    fn sample() -> Transcript {
        Transcript {
            text: "Hello there. General Kenobi.".into(),
            language: "en".into(),
            duration: 3725.5,
            segments: vec![
                Segment {
                    id: 0,
                    seek: 0,
                    start: 0.0,
                    end: 1.5,
                    text: " Hello there.".into(),
                    tokens: vec![],
                    temperature: 0.0,
                    avg_logprob: -0.2,
                    compression_ratio: 1.0,
                    no_speech_prob: 0.01,
                    words: vec![],
                },
                Segment {
                    id: 1,
                    seek: 0,
                    start: 3723.25,
                    end: 3725.5,
                    text: " General Kenobi.".into(),
                    tokens: vec![],
                    temperature: 0.0,
                    avg_logprob: -0.3,
                    compression_ratio: 1.0,
                    no_speech_prob: 0.02,
                    words: vec![],
                },
            ],
        }
    }

    #[test]
    fn srt_and_vtt_timestamps() {
        let srt = render(&sample(), OutputFormat::Srt);
        assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n"));
        assert!(srt.contains("01:02:03,250 --> 01:02:05,500\nGeneral Kenobi."));
        let vtt = render(&sample(), OutputFormat::Vtt);
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n"));
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample(), OutputFormat::Json)).unwrap();
        assert_eq!(v["text"], "Hello there. General Kenobi.");
        assert_eq!(v["language"], "en");
        assert_eq!(v["duration"], 3725.5);
        let s = &v["segments"][1];
        for k in ["start", "end", "text", "avg_logprob", "no_speech_prob"] {
            assert!(!s[k].is_null(), "missing {k}");
        }
        assert!(s.get("tokens").is_none());
    }

    fn w(word: &str, start: f64, end: f64) -> Word {
        Word {
            word: word.into(),
            start,
            end,
            probability: 0.9,
        }
    }

    /// [`sample`] with word timings: 2 words, then 5 words.
    fn with_words() -> Transcript {
        let mut t = sample();
        t.segments[0].words = vec![w(" Hello", 0.0, 0.6), w(" there.", 0.7, 1.5)];
        t.segments[1].text = " General Kenobi, you are bold.".into();
        t.segments[1].words = vec![
            w(" General", 3723.25, 3723.7),
            w(" Kenobi,", 3723.8, 3724.3),
            w(" you", 3724.4, 3724.5),
            w(" are", 3724.5, 3724.9),
            w(" bold.", 3725.0, 3725.5),
        ];
        t
    }

    fn cue_opts(n: usize) -> RenderOptions {
        RenderOptions {
            max_words_per_cue: Some(n),
        }
    }

    #[test]
    fn render_is_render_with_the_defaults() {
        for f in ["text", "json", "verbose_json", "srt", "vtt"] {
            let f: OutputFormat = f.parse().unwrap();
            let t = with_words();
            assert_eq!(render(&t, f), render_with(&t, f, &RenderOptions::default()));
        }
    }

    #[test]
    fn word_cues_split_segments_and_take_word_times() {
        let t = with_words();
        let srt = render_with(&t, OutputFormat::Srt, &cue_opts(2));
        let blocks: Vec<&str> = srt.trim_end().split("\n\n").collect();
        // 2 words → 1 cue; 5 words → 2 + 2 + 1.
        assert_eq!(
            blocks,
            [
                "1\n00:00:00,000 --> 00:00:01,500\nHello there.",
                "2\n01:02:03,250 --> 01:02:04,300\nGeneral Kenobi,",
                "3\n01:02:04,400 --> 01:02:04,900\nyou are",
                "4\n01:02:05,000 --> 01:02:05,500\nbold.",
            ]
        );
        let vtt = render_with(&t, OutputFormat::Vtt, &cue_opts(3));
        assert_eq!(
            vtt,
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:01.500\nHello there.\n\n\
             01:02:03.250 --> 01:02:04.500\nGeneral Kenobi, you\n\n\
             01:02:04.500 --> 01:02:05.500\nare bold.\n\n"
        );
        // One word per cue: as many cues as words, in order.
        let one = render_with(&t, OutputFormat::Srt, &cue_opts(1));
        let n = one.trim_end().split("\n\n").count();
        assert_eq!(n, 7);
        assert!(one.contains("\n5\n01:02:04,400 --> 01:02:04,500\nyou\n"));
    }

    #[test]
    fn word_cues_keep_segment_cues_without_words() {
        // No words anywhere: the option changes nothing.
        for n in [1, 2, 100] {
            for f in [OutputFormat::Srt, OutputFormat::Vtt] {
                assert_eq!(
                    render_with(&sample(), f, &cue_opts(n)),
                    render(&sample(), f)
                );
            }
        }
        // Words on one segment only: the other keeps its segment cue.
        let mut t = with_words();
        t.segments[0].words.clear();
        let srt = render_with(&t, OutputFormat::Srt, &cue_opts(5));
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n\
             2\n01:02:03,250 --> 01:02:05,500\nGeneral Kenobi, you are bold.\n\n"
        );
        // 0 means off, never a panic.
        assert_eq!(
            render_with(&with_words(), OutputFormat::Srt, &cue_opts(0)),
            render(&with_words(), OutputFormat::Srt)
        );
    }

    #[test]
    fn word_cues_concatenate_words_without_leading_spaces() {
        // Languages written without spaces: words carry none, cues add none.
        let mut t = sample();
        t.segments.truncate(1);
        t.segments[0].text = "你好世界".into();
        t.segments[0].words = vec![w("你好", 0.0, 0.5), w("世界", 0.5, 1.0)];
        let srt = render_with(&t, OutputFormat::Srt, &cue_opts(2));
        assert_eq!(srt, "1\n00:00:00,000 --> 00:00:01,000\n你好世界\n\n");
        // A blank word alone in a cue makes no empty cue.
        t.segments[0].words.push(w(" ", 1.0, 1.1));
        let srt = render_with(&t, OutputFormat::Srt, &cue_opts(2));
        assert_eq!(srt.trim_end().split("\n\n").count(), 1, "{srt}");
    }

    #[test]
    fn json_carries_words_only_when_present() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&with_words(), OutputFormat::Json)).unwrap();
        let words = v["segments"][1]["words"].as_array().unwrap();
        assert_eq!(words.len(), 5);
        assert_eq!(words[1]["word"], " Kenobi,");
        assert_eq!(words[1]["start"], 3723.8);
        assert_eq!(words[1]["end"], 3724.3);
        assert_eq!(words[1]["probability"], 0.9);
        assert!(v.get("words").is_none(), "compact json has no flat list");
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample(), OutputFormat::Json)).unwrap();
        assert!(v["segments"][0].get("words").is_none());
    }

    #[test]
    fn verbose_json_has_openais_flat_words_array() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&with_words(), OutputFormat::VerboseJson)).unwrap();
        let words = v["words"].as_array().unwrap();
        assert_eq!(words.len(), 7);
        assert_eq!(
            words[2],
            serde_json::json!({"word": "General", "start": 3723.25, "end": 3723.7})
        );
        // Per-segment words keep Whisper's shape (leading space, probability).
        assert_eq!(v["segments"][0]["words"][1]["word"], " there.");
        assert_eq!(v["segments"][0]["words"][1]["probability"], 0.9);
        // The rest of the transcript is unchanged by the flattening.
        assert_eq!(v["text"], "Hello there. General Kenobi.");
        assert_eq!(v["segments"][1]["tokens"], serde_json::json!([]));
        let back: Transcript = serde_json::from_value(v).unwrap();
        assert_eq!(back, with_words());
        // No words: no `words` key at all.
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample(), OutputFormat::VerboseJson)).unwrap();
        assert!(v.get("words").is_none());
        assert!(v["segments"][0].get("words").is_none());
    }

    #[test]
    fn text_is_only_the_transcript() {
        assert_eq!(
            render(&sample(), OutputFormat::Text),
            "Hello there. General Kenobi.\n"
        );
        assert!("xml".parse::<OutputFormat>().is_err());
    }
}
