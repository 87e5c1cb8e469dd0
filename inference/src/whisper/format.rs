//! Transcript output formats shared by the CLI, the worker and the HTTP API.
//!
//! Speakers: once diarization has labelled segments and words
//! ([`Segment::speaker`], [`Word::speaker`], labels like `SPEAKER_00`),
//! every format shows them: `json`/`verbose_json` carry `speaker` fields
//! and a top-level `speakers` summary, `srt` prefixes cues with
//! `[SPEAKER_00] `, `vtt` uses WebVTT voice tags (`<v SPEAKER_00>`), `text`
//! becomes one `SPEAKER_00: …` line per speaker turn, and `rttm` and
//! `diarized_json` exist for them. A transcript without speakers renders
//! byte-for-byte as it did before speakers existed, so nothing downstream
//! of an undiarized job changes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::decode::{Segment, Transcript, Word};
use crate::error::InferenceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    /// JSON with every decoding statistic (tokens, temperature, ratios).
    VerboseJson,
    Srt,
    Vtt,
    /// NIST RTTM speaker turns (`SPEAKER <file> 1 <start> <dur> …`), the
    /// format diarization tools (pyannote, dscore) exchange; see
    /// [`render_rttm`].
    Rttm,
    /// OpenAI's `diarized_json` response (as `gpt-4o-transcribe-diarize`
    /// returns it); see [`render_with`].
    DiarizedJson,
}

/// Every name [`OutputFormat`] parses, for messages.
pub const OUTPUT_FORMAT_NAMES: &str = "text, json, verbose_json, srt, vtt, rttm, diarized_json";

impl std::str::FromStr for OutputFormat {
    type Err = InferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "txt" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            "verbose_json" => Ok(Self::VerboseJson),
            "srt" => Ok(Self::Srt),
            "vtt" => Ok(Self::Vtt),
            "rttm" => Ok(Self::Rttm),
            "diarized_json" => Ok(Self::DiarizedJson),
            other => Err(InferenceError::BadOption(format!(
                "unknown format {other:?} ({OUTPUT_FORMAT_NAMES})"
            ))),
        }
    }
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Text => "txt",
            Self::Json | Self::VerboseJson | Self::DiarizedJson => "json",
            Self::Srt => "srt",
            Self::Vtt => "vtt",
            Self::Rttm => "rttm",
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
    #[serde(skip_serializing_if = "Option::is_none")]
    speaker: Option<&'a str>,
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    speakers: Vec<SpeakerSummary<'a>>,
}

/// One entry of the top-level `speakers` array of `json` and
/// `verbose_json`: how much each speaker talked, so a client can tell the
/// main voices from a one-word interjection without walking the segments.
#[derive(Debug, Serialize, PartialEq)]
struct SpeakerSummary<'a> {
    speaker: &'a str,
    /// Seconds: the sum of the speaker's segment durations, to 0.01 s.
    talk_time: f64,
    /// How many segments the speaker has.
    segments: usize,
}

/// The `speakers` summary, ordered by label; empty (and so absent from
/// the JSON) when no segment has a speaker.
fn speaker_summary(t: &Transcript) -> Vec<SpeakerSummary<'_>> {
    let mut by: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for s in &t.segments {
        if let Some(sp) = s.speaker.as_deref() {
            let e = by.entry(sp).or_default();
            e.0 += (s.end - s.start).max(0.0);
            e.1 += 1;
        }
    }
    by.into_iter()
        .map(|(speaker, (talk, segments))| SpeakerSummary {
            speaker,
            talk_time: (talk * 100.0).round() / 100.0,
            segments,
        })
        .collect()
}

/// Whether diarization labelled any segment: the switch between the
/// plain renderings and the speaker-aware ones.
fn has_speakers(t: &Transcript) -> bool {
    t.segments.iter().any(|s| s.speaker.is_some())
}

/// Who spoke a word: its own label, else its segment's (diarization may
/// label only segments).
fn word_speaker<'a>(w: &'a Word, s: &'a Segment) -> Option<&'a str> {
    w.speaker.as_deref().or(s.speaker.as_deref())
}

/// A label made safe for one-line, space-separated formats (SRT, VTT,
/// RTTM): whitespace (newlines included) becomes `_`.
fn label_token(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// One speaker turn: consecutive segments with the same speaker (or the
/// same lack of one), merged.
#[derive(Debug, Clone, PartialEq)]
struct Turn<'a> {
    speaker: Option<&'a str>,
    start: f64,
    end: f64,
    /// The segments' texts concatenated (Whisper's leading spaces kept,
    /// so languages written without spaces get none) and trimmed.
    text: String,
}

fn turns(t: &Transcript) -> Vec<Turn<'_>> {
    let mut out: Vec<Turn> = Vec::new();
    for s in &t.segments {
        let speaker = s.speaker.as_deref();
        match out.last_mut() {
            Some(turn) if turn.speaker == speaker => {
                turn.end = turn.end.max(s.end);
                turn.text.push_str(&s.text);
            }
            _ => out.push(Turn {
                speaker,
                start: s.start,
                end: s.end.max(s.start),
                text: s.text.clone(),
            }),
        }
    }
    for turn in &mut out {
        turn.text = turn.text.trim().to_owned();
    }
    out
}

/// `rttm` with `file_id` as the RTTM file field: one line per speaker turn
/// (consecutive segments of one speaker merged),
/// `SPEAKER <file-id> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>`,
/// times in seconds to the millisecond. `file_id` is the recording's
/// name with whitespace replaced by `_` (RTTM fields are space-separated);
/// `audio` when empty.
///
/// Only turns with a speaker and a positive duration are written: RTTM
/// records who spoke when, and a segment diarization did not label says
/// nothing about that. A transcript without speakers is therefore an
/// empty body, a valid RTTM file with no turns, rather than an error, so
/// a job asking for several formats still gets the others; the `speakers`
/// summary of `json` tells a client whether diarization found anyone.
pub fn render_rttm(t: &Transcript, file_id: &str) -> String {
    let file_id = match label_token(file_id.trim()) {
        id if id.is_empty() => "audio".to_owned(),
        id => id,
    };
    let mut out = String::new();
    for turn in turns(t) {
        let Some(speaker) = turn.speaker else {
            continue;
        };
        let duration = turn.end - turn.start;
        if !(duration > 0.0 && turn.start.is_finite() && duration.is_finite()) {
            continue;
        }
        out.push_str(&format!(
            "SPEAKER {file_id} 1 {:.3} {duration:.3} <NA> <NA> {} <NA> <NA>\n",
            turn.start.max(0.0),
            label_token(speaker),
        ));
    }
    out
}

/// OpenAI's speaker naming in `diarized_json` for earshot's labels:
/// without known speakers OpenAI labels speakers with capital letters
/// (`A`, `B`, …), so the distinct labels in sorted order (`SPEAKER_00`,
/// `SPEAKER_01`, …, the order of the `speakers` summary) become `A`, `B`,
/// …, `Z`, `AA`, `AB`, …. Keeping that order (rather than order of first
/// appearance) makes `A` the same voice as `SPEAKER_00` in the other
/// formats.
fn letter_names(t: &Transcript) -> BTreeMap<&str, String> {
    let labels: std::collections::BTreeSet<&str> = t
        .segments
        .iter()
        .filter_map(|s| s.speaker.as_deref())
        .collect();
    labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, letters(i)))
        .collect()
}

/// 0 → `A`, 25 → `Z`, 26 → `AA` (spreadsheet column names).
fn letters(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(char::from(b'A' + (i % 26) as u8));
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.into_iter().rev().collect()
}

/// `diarized_json`: OpenAI's `CreateTranscriptionResponseDiarizedJson`,
/// field for field (`task`, `duration`, `text`, `segments`, `usage`).
#[derive(Serialize)]
struct DiarizedTranscript<'a> {
    /// Always `transcribe`.
    task: &'static str,
    duration: f64,
    text: &'a str,
    segments: Vec<DiarizedSegment<'a>>,
    usage: DurationUsage,
}

/// OpenAI's `TranscriptionDiarizedSegment`.
#[derive(Serialize)]
struct DiarizedSegment<'a> {
    /// Always `transcript.text.segment`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// `seg_<index>`: unique within the response, as OpenAI's ids are.
    id: String,
    start: f64,
    end: f64,
    text: &'a str,
    speaker: String,
}

/// OpenAI's `TranscriptTextUsageDuration` (usage measured in audio
/// seconds, which is what a local transcription costs).
#[derive(Serialize)]
struct DurationUsage {
    /// Always `duration`.
    #[serde(rename = "type")]
    kind: &'static str,
    seconds: f64,
}

/// The `speaker` of a segment without a label in a transcript where
/// others have one: diarization found no voice there, and OpenAI's field
/// is required, so it says so rather than guess a letter.
pub const UNKNOWN_SPEAKER: &str = "unknown";

fn diarized_json(t: &Transcript) -> DiarizedTranscript<'_> {
    let names = letter_names(t);
    let diarized = !names.is_empty();
    DiarizedTranscript {
        task: "transcribe",
        duration: t.duration,
        text: t.text.trim(),
        segments: t
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| DiarizedSegment {
                kind: "transcript.text.segment",
                id: format!("seg_{i}"),
                start: s.start,
                end: s.end,
                text: s.text.trim(),
                speaker: match s.speaker.as_deref().and_then(|l| names.get(l)) {
                    Some(letter) => letter.clone(),
                    // Undiarized: one unnamed voice, as OpenAI labels a
                    // single-speaker recording.
                    None if !diarized => "A".to_owned(),
                    None => UNKNOWN_SPEAKER.to_owned(),
                },
            })
            .collect(),
        usage: DurationUsage {
            kind: "duration",
            seconds: t.duration,
        },
    }
}

/// One entry of the top-level `words` array of `verbose_json`, as OpenAI's
/// API returns it with `timestamp_granularities[]=word`: the word trimmed.
#[derive(Serialize)]
struct ApiWord<'a> {
    word: &'a str,
    start: f64,
    end: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    speaker: Option<&'a str>,
}

/// `verbose_json`: the whole transcript, plus the flat `words` array when
/// any segment has word timings.
#[derive(Serialize)]
struct VerboseTranscript<'a> {
    #[serde(flatten)]
    transcript: &'a Transcript,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    words: Vec<ApiWord<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    speakers: Vec<SpeakerSummary<'a>>,
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

/// One caption cue: start, end, text, and who speaks it.
#[derive(Debug, Clone, PartialEq)]
struct Cue<'a> {
    start: f64,
    end: f64,
    text: String,
    speaker: Option<&'a str>,
}

/// A segment's words cut into runs of at most `n` words, a run also ending
/// where the speaker changes, so that no cue puts one speaker's words in
/// another's mouth. Without speakers this is `words.chunks(n)`.
fn word_runs(s: &Segment, n: usize) -> Vec<&[Word]> {
    let mut runs = Vec::new();
    let mut begin = 0;
    for i in 1..=s.words.len() {
        let cut = i == s.words.len()
            || i - begin == n
            || word_speaker(&s.words[i], s) != word_speaker(&s.words[begin], s);
        if cut {
            runs.push(&s.words[begin..i]);
            begin = i;
        }
    }
    runs
}

/// The caption cues of a transcript: one per segment, or, with
/// `max_words_per_cue` and word timings, runs of at most that many words
/// of one speaker.
fn cues<'a>(t: &'a Transcript, opts: &RenderOptions) -> Vec<Cue<'a>> {
    let per_cue = opts.max_words_per_cue.filter(|&n| n > 0);
    let mut out = Vec::new();
    for s in &t.segments {
        match per_cue {
            Some(n) if !s.words.is_empty() => {
                for run in word_runs(s, n) {
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
                        speaker: word_speaker(first, s),
                    });
                }
            }
            _ => out.push(Cue {
                start: s.start,
                end: s.end,
                text: s.text.trim().to_owned(),
                speaker: s.speaker.as_deref(),
            }),
        }
    }
    out
}

/// Renders a transcript with the default [`RenderOptions`].
pub fn render(t: &Transcript, format: OutputFormat) -> String {
    render_with(t, format, &RenderOptions::default())
}

/// WebVTT's cue text escapes for a voice tag's annotation (a speaker
/// label is data; `<`, `>` or `&` in it would break the tag).
fn vtt_escape(s: &str) -> String {
    label_token(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders a transcript. Word timings, when the transcript has them, go
/// into `json` (per segment), `verbose_json` (per segment, and as the
/// top-level `words` array OpenAI's API returns) and, with
/// [`RenderOptions::max_words_per_cue`], into word-level SRT/VTT cues.
///
/// Speakers, when diarization labelled the segments (every format is
/// unchanged otherwise):
/// - `json`, `verbose_json`: `speaker` on each segment and word (and on
///   the flat `words`), plus a top-level `speakers` array,
///   `[{"speaker", "talk_time", "segments"}]` ordered by label;
/// - `srt`: cue text prefixed `[SPEAKER_00] `; `vtt`: a voice tag,
///   `<v SPEAKER_00>text`; word-level cues never span a speaker change;
/// - `text`: one line per speaker turn (consecutive segments of one
///   speaker joined), `SPEAKER_00: text`; a turn diarization left
///   unlabelled is its text alone;
/// - `rttm`: [`render_rttm`] with the file id `audio` (callers that know
///   the recording's name call [`render_rttm`] themselves);
/// - `diarized_json`: OpenAI's diarized response, `{"task": "transcribe",
///   "duration", "text", "segments": [{"type": "transcript.text.segment",
///   "id": "seg_0", "start", "end", "text", "speaker": "A"}], "usage":
///   {"type": "duration", "seconds"}}`, speakers named with OpenAI's
///   letters (`SPEAKER_00` → `A`, `SPEAKER_01` → `B`, …, the labels in
///   sorted order); segments of an undiarized transcript
///   are all `A` (one voice), unlabelled segments of a diarized one
///   [`UNKNOWN_SPEAKER`].
pub fn render_with(t: &Transcript, format: OutputFormat, opts: &RenderOptions) -> String {
    match format {
        OutputFormat::Text if has_speakers(t) => {
            let mut out = String::new();
            for turn in turns(t) {
                if turn.text.is_empty() {
                    continue;
                }
                match turn.speaker {
                    Some(sp) => out.push_str(&format!("{sp}: {}\n", turn.text)),
                    None => out.push_str(&format!("{}\n", turn.text)),
                }
            }
            out
        }
        OutputFormat::Text => format!("{}\n", t.text),
        OutputFormat::Rttm => render_rttm(t, "audio"),
        OutputFormat::DiarizedJson => {
            serde_json::to_string_pretty(&diarized_json(t)).unwrap_or_default() + "\n"
        }
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
                        speaker: s.speaker.as_deref(),
                    })
                    .collect(),
                speakers: speaker_summary(t),
            };
            serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
        }
        OutputFormat::VerboseJson => {
            let v = VerboseTranscript {
                transcript: t,
                words: t
                    .segments
                    .iter()
                    .flat_map(|s| s.words.iter().map(move |w| (w, s)))
                    .map(|(w, s)| ApiWord {
                        word: w.word.trim(),
                        start: w.start,
                        end: w.end,
                        speaker: word_speaker(w, s),
                    })
                    .collect(),
                speakers: speaker_summary(t),
            };
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        OutputFormat::Srt => {
            let mut out = String::new();
            for (i, c) in cues(t, opts).iter().enumerate() {
                let who = c
                    .speaker
                    .map(|sp| format!("[{}] ", label_token(sp)))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{}\n{} --> {}\n{who}{}\n\n",
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
                // A voice span covering the whole cue needs no `</v>`.
                let who = c
                    .speaker
                    .map(|sp| format!("<v {}>", vtt_escape(sp)))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{} --> {}\n{who}{}\n\n",
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
                    speaker: None,
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
                    speaker: None,
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
            speaker: None,
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
        for f in ALL {
            for t in [with_words(), diarized()] {
                assert_eq!(render(&t, f), render_with(&t, f, &RenderOptions::default()));
            }
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

    /// [`with_words`] diarized: segment 0 is `SPEAKER_00`; segment 1 is
    /// `SPEAKER_01` for "General Kenobi," then `SPEAKER_00` again for
    /// "you are bold." (word labels), with the segment labelled
    /// `SPEAKER_01`.
    fn diarized() -> Transcript {
        let mut t = with_words();
        let sp = |l: &str| Some(l.to_owned());
        t.segments[0].speaker = sp("SPEAKER_00");
        for w in &mut t.segments[0].words {
            w.speaker = sp("SPEAKER_00");
        }
        t.segments[1].speaker = sp("SPEAKER_01");
        for (i, w) in t.segments[1].words.iter_mut().enumerate() {
            w.speaker = if i < 2 {
                sp("SPEAKER_01")
            } else {
                sp("SPEAKER_00")
            };
        }
        t
    }

    /// Three segments, two of them one speaker's turn.
    fn turns_sample() -> Transcript {
        let mut t = sample();
        t.segments[0].speaker = Some("SPEAKER_01".into());
        let mut third = t.segments[1].clone();
        third.id = 2;
        third.start = 3726.0;
        third.end = 3727.25;
        third.text = " You are a bold one.".into();
        t.segments[1].speaker = Some("SPEAKER_00".into());
        third.speaker = Some("SPEAKER_00".into());
        t.segments.push(third);
        t
    }

    const ALL: [OutputFormat; 7] = [
        OutputFormat::Text,
        OutputFormat::Json,
        OutputFormat::VerboseJson,
        OutputFormat::Srt,
        OutputFormat::Vtt,
        OutputFormat::Rttm,
        OutputFormat::DiarizedJson,
    ];

    #[test]
    fn every_format_name_parses_and_the_error_lists_them() {
        for f in ALL {
            let name = match f {
                OutputFormat::Text => "text",
                OutputFormat::Json => "json",
                OutputFormat::VerboseJson => "verbose_json",
                OutputFormat::Srt => "srt",
                OutputFormat::Vtt => "vtt",
                OutputFormat::Rttm => "rttm",
                OutputFormat::DiarizedJson => "diarized_json",
            };
            assert_eq!(name.parse::<OutputFormat>().unwrap(), f);
            assert!(OUTPUT_FORMAT_NAMES.contains(name));
        }
        assert_eq!(OutputFormat::Rttm.extension(), "rttm");
        assert_eq!(OutputFormat::DiarizedJson.extension(), "json");
        let e = "xml".parse::<OutputFormat>().unwrap_err().to_string();
        assert!(e.contains("rttm") && e.contains("diarized_json"), "{e}");
    }

    #[test]
    fn without_speakers_the_old_formats_are_unchanged() {
        // The exact bytes of the pre-speaker renderings (pinned above for
        // srt/vtt); here the JSON shapes: no `speaker`, no `speakers`.
        for t in [sample(), with_words()] {
            for f in [OutputFormat::Json, OutputFormat::VerboseJson] {
                let out = render(&t, f);
                assert!(!out.contains("speaker"), "{out}");
            }
            for f in ALL {
                let out = render_with(&t, f, &cue_opts(2));
                assert!(!out.contains("SPEAKER"), "{f:?}: {out}");
            }
        }
        // A speaker-less transcript has no turns: an empty RTTM.
        assert_eq!(render(&with_words(), OutputFormat::Rttm), "");
        assert_eq!(
            render(&sample(), OutputFormat::Json),
            "{\n  \"text\": \"Hello there. General Kenobi.\",\n  \"language\": \"en\",\n  \
             \"duration\": 3725.5,\n  \"segments\": [\n    {\n      \"id\": 0,\n      \
             \"start\": 0.0,\n      \"end\": 1.5,\n      \"text\": \" Hello there.\",\n      \
             \"avg_logprob\": -0.2,\n      \"no_speech_prob\": 0.01\n    },\n    {\n      \
             \"id\": 1,\n      \"start\": 3723.25,\n      \"end\": 3725.5,\n      \
             \"text\": \" General Kenobi.\",\n      \"avg_logprob\": -0.3,\n      \
             \"no_speech_prob\": 0.02\n    }\n  ]\n}\n"
        );
    }

    #[test]
    fn json_formats_carry_speakers_and_a_summary() {
        let t = turns_sample();
        let v: serde_json::Value = serde_json::from_str(&render(&t, OutputFormat::Json)).unwrap();
        assert_eq!(v["segments"][0]["speaker"], "SPEAKER_01");
        assert_eq!(v["segments"][2]["speaker"], "SPEAKER_00");
        assert_eq!(
            v["speakers"],
            serde_json::json!([
                {"speaker": "SPEAKER_00", "talk_time": 3.5, "segments": 2},
                {"speaker": "SPEAKER_01", "talk_time": 1.5, "segments": 1},
            ])
        );
        let d = diarized();
        let v: serde_json::Value =
            serde_json::from_str(&render(&d, OutputFormat::VerboseJson)).unwrap();
        assert_eq!(v["segments"][1]["speaker"], "SPEAKER_01");
        assert_eq!(v["segments"][1]["words"][3]["speaker"], "SPEAKER_00");
        assert_eq!(
            v["words"][2],
            serde_json::json!({"word": "General", "start": 3723.25, "end": 3723.7,
                "speaker": "SPEAKER_01"})
        );
        assert_eq!(v["words"][6]["speaker"], "SPEAKER_00");
        assert_eq!(v["speakers"].as_array().unwrap().len(), 2);
        // verbose_json still reads back as the transcript, speakers and all.
        let back: Transcript = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        // A word without its own label takes its segment's.
        let mut t = diarized();
        t.segments[0].words[1].speaker = None;
        let v: serde_json::Value =
            serde_json::from_str(&render(&t, OutputFormat::VerboseJson)).unwrap();
        assert_eq!(v["words"][1]["speaker"], "SPEAKER_00");
    }

    #[test]
    fn captions_name_the_speaker() {
        let t = turns_sample();
        assert_eq!(
            render(&t, OutputFormat::Srt),
            "1\n00:00:00,000 --> 00:00:01,500\n[SPEAKER_01] Hello there.\n\n\
             2\n01:02:03,250 --> 01:02:05,500\n[SPEAKER_00] General Kenobi.\n\n\
             3\n01:02:06,000 --> 01:02:07,250\n[SPEAKER_00] You are a bold one.\n\n"
        );
        assert_eq!(
            render(&t, OutputFormat::Vtt),
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:01.500\n<v SPEAKER_01>Hello there.\n\n\
             01:02:03.250 --> 01:02:05.500\n<v SPEAKER_00>General Kenobi.\n\n\
             01:02:06.000 --> 01:02:07.250\n<v SPEAKER_00>You are a bold one.\n\n"
        );
        // A label is data: it cannot break the voice tag or the line.
        let mut odd = sample();
        odd.segments.truncate(1);
        odd.segments[0].speaker = Some("<b>Ann & Bo\n".into());
        let vtt = render(&odd, OutputFormat::Vtt);
        assert!(
            vtt.contains("\n<v &lt;b&gt;Ann_&amp;_Bo_>Hello there.\n"),
            "{vtt}"
        );
    }

    #[test]
    fn word_cues_split_at_speaker_changes() {
        let t = diarized();
        // 5 words fit one cue, but the speaker changes after 2.
        let srt = render_with(&t, OutputFormat::Srt, &cue_opts(5));
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:01,500\n[SPEAKER_00] Hello there.\n\n\
             2\n01:02:03,250 --> 01:02:04,300\n[SPEAKER_01] General Kenobi,\n\n\
             3\n01:02:04,400 --> 01:02:05,500\n[SPEAKER_00] you are bold.\n\n"
        );
        // The word limit still applies within one speaker's run.
        let vtt = render_with(&t, OutputFormat::Vtt, &cue_opts(2));
        assert_eq!(
            vtt,
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:01.500\n<v SPEAKER_00>Hello there.\n\n\
             01:02:03.250 --> 01:02:04.300\n<v SPEAKER_01>General Kenobi,\n\n\
             01:02:04.400 --> 01:02:04.900\n<v SPEAKER_00>you are\n\n\
             01:02:05.000 --> 01:02:05.500\n<v SPEAKER_00>bold.\n\n"
        );
        // No cue ever mixes speakers, whatever the limit.
        for n in 1..8 {
            for s in &t.segments {
                for run in word_runs(s, n) {
                    assert!(run.len() <= n);
                    let first = word_speaker(&run[0], s);
                    assert!(run.iter().all(|w| word_speaker(w, s) == first));
                }
            }
        }
    }

    #[test]
    fn text_is_one_line_per_speaker_turn() {
        assert_eq!(
            render(&turns_sample(), OutputFormat::Text),
            "SPEAKER_01: Hello there.\n\
             SPEAKER_00: General Kenobi. You are a bold one.\n"
        );
        // An unlabelled segment between turns is its text alone.
        let mut t = turns_sample();
        t.segments[1].speaker = None;
        assert_eq!(
            render(&t, OutputFormat::Text),
            "SPEAKER_01: Hello there.\nGeneral Kenobi.\nSPEAKER_00: You are a bold one.\n"
        );
    }

    #[test]
    fn rttm_has_one_parseable_line_per_turn() {
        let t = turns_sample();
        let rttm = render_rttm(&t, "team call 1");
        assert_eq!(
            rttm,
            "SPEAKER team_call_1 1 0.000 1.500 <NA> <NA> SPEAKER_01 <NA> <NA>\n\
             SPEAKER team_call_1 1 3723.250 4.000 <NA> <NA> SPEAKER_00 <NA> <NA>\n"
        );
        assert_eq!(
            render(&t, OutputFormat::Rttm),
            rttm.replace("team_call_1", "audio")
        );
        assert_eq!(render_rttm(&t, "  "), render(&t, OutputFormat::Rttm));
        for line in rttm.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 10, "{line}");
            assert_eq!(
                (f[0], f[2], f[5], f[6], f[8], f[9]),
                ("SPEAKER", "1", "<NA>", "<NA>", "<NA>", "<NA>")
            );
            let start: f64 = f[3].parse().unwrap();
            let dur: f64 = f[4].parse().unwrap();
            assert!(start >= 0.0 && dur > 0.0, "{line}");
            assert!(f[7].starts_with("SPEAKER_"));
        }
        // Unlabelled and zero-length turns say nothing about who spoke.
        let mut t = turns_sample();
        t.segments[0].speaker = None;
        t.segments[2].speaker = Some("SPEAKER_02".into());
        t.segments[2].end = t.segments[2].start;
        assert_eq!(
            render_rttm(&t, "x"),
            "SPEAKER x 1 3723.250 2.250 <NA> <NA> SPEAKER_00 <NA> <NA>\n"
        );
    }

    #[test]
    fn diarized_json_is_openais_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&turns_sample(), OutputFormat::DiarizedJson)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "task": "transcribe",
                "duration": 3725.5,
                "text": "Hello there. General Kenobi.",
                "segments": [
                    {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0,
                     "end": 1.5, "text": "Hello there.", "speaker": "B"},
                    {"type": "transcript.text.segment", "id": "seg_1", "start": 3723.25,
                     "end": 3725.5, "text": "General Kenobi.", "speaker": "A"},
                    {"type": "transcript.text.segment", "id": "seg_2", "start": 3726.0,
                     "end": 3727.25, "text": "You are a bold one.", "speaker": "A"},
                ],
                "usage": {"type": "duration", "seconds": 3725.5},
            })
        );
        // Undiarized: one voice, `A`; unlabelled in a diarized transcript:
        // `unknown`.
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample(), OutputFormat::DiarizedJson)).unwrap();
        assert!(v["segments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["speaker"] == "A"));
        let mut t = turns_sample();
        t.segments[1].speaker = None;
        let v: serde_json::Value =
            serde_json::from_str(&render(&t, OutputFormat::DiarizedJson)).unwrap();
        assert_eq!(v["segments"][1]["speaker"], UNKNOWN_SPEAKER);
        assert_eq!(v["segments"][2]["speaker"], "A");
        assert_eq!(
            [0, 1, 25, 26, 27, 701, 702].map(letters),
            ["A", "B", "Z", "AA", "AB", "ZZ", "AAA"]
        );
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
