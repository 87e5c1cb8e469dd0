//! Transcript output formats shared by the CLI, the worker and the HTTP API.

use serde::Serialize;

use super::decode::Transcript;
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

#[derive(Serialize)]
struct CompactSegment<'a> {
    id: usize,
    start: f64,
    end: f64,
    text: &'a str,
    avg_logprob: f64,
    no_speech_prob: f64,
}

#[derive(Serialize)]
struct CompactTranscript<'a> {
    text: &'a str,
    language: &'a str,
    duration: f64,
    segments: Vec<CompactSegment<'a>>,
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

pub fn render(t: &Transcript, format: OutputFormat) -> String {
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
                    })
                    .collect(),
            };
            serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
        }
        OutputFormat::VerboseJson => serde_json::to_string_pretty(t).unwrap_or_default() + "\n",
        OutputFormat::Srt => {
            let mut out = String::new();
            for (i, s) in t.segments.iter().enumerate() {
                out.push_str(&format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    timestamp(s.start, ','),
                    timestamp(s.end, ','),
                    s.text.trim()
                ));
            }
            out
        }
        OutputFormat::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for s in &t.segments {
                out.push_str(&format!(
                    "{} --> {}\n{}\n\n",
                    timestamp(s.start, '.'),
                    timestamp(s.end, '.'),
                    s.text.trim()
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

    #[test]
    fn text_is_only_the_transcript() {
        assert_eq!(
            render(&sample(), OutputFormat::Text),
            "Hello there. General Kenobi.\n"
        );
        assert!("xml".parse::<OutputFormat>().is_err());
    }
}
