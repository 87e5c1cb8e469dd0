//! Transcript output formats for the CLI, the queue worker and the HTTP
//! server, in one place: Whisper's own renderings
//! ([`earshot_inference::whisper::format`]) plus `transcribe`, Amazon
//! Transcribe's output JSON written by
//! [`earshot_managed::transcribe_json::write`] (the module that also reads
//! it, so the two directions cannot drift apart).
//!
//! Also the one conversion between a Whisper [`Transcript`] and the job
//! contract's [`TranscriptRecord`] (and back, for managed transcripts
//! rendered through the same writers).
//!
//! Word timings: `transcribe` needs them (its items are words), and so do
//! word-level caption cues; [`needs_words`] says when a request implies
//! `word_timestamps`, which the CLI, the worker and the server then turn on
//! by themselves.
//!
//! Speakers: the conversions carry `speaker` on segments and words both
//! ways, so a diarized transcript shows its speakers in every format
//! (see [`earshot_inference::whisper::format`] and
//! [`transcribe_json::write`]); `rttm` is rendered here rather than by
//! [`render_with`] because its file id is the job's name.

use std::collections::BTreeMap;

use earshot_inference::whisper::format::{render_rttm, render_with, OutputFormat, RenderOptions};
use earshot_inference::whisper::{Segment, Transcript, Word};
use earshot_managed::transcribe_json;
use earshot_queue_adapter::job::{SegmentRecord, TranscriptRecord, WordRecord};
use thiserror::Error;

/// Every format name, for messages.
pub const FORMAT_NAMES: &str =
    "text, json, verbose_json, srt, vtt, rttm, diarized_json, transcribe";

/// A format name no writer knows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown format {0:?} ({FORMAT_NAMES})")]
pub struct UnknownFormat(pub String);

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text`, `json`, `verbose_json`, `srt`, `vtt`, `rttm`,
    /// `diarized_json`.
    Whisper(OutputFormat),
    /// Amazon Transcribe's batch output JSON.
    Transcribe,
}

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "transcribe" {
            return Ok(Format::Transcribe);
        }
        s.parse::<OutputFormat>()
            .map(Format::Whisper)
            .map_err(|_| UnknownFormat(s.to_owned()))
    }
}

impl Format {
    /// Every format, in the order `all` expands to.
    pub const ALL: [Format; 8] = [
        Format::Whisper(OutputFormat::Text),
        Format::Whisper(OutputFormat::Json),
        Format::Whisper(OutputFormat::VerboseJson),
        Format::Whisper(OutputFormat::Srt),
        Format::Whisper(OutputFormat::Vtt),
        Format::Whisper(OutputFormat::Rttm),
        Format::Whisper(OutputFormat::DiarizedJson),
        Format::Transcribe,
    ];

    /// A `--format` list: names separated by commas, or `all` (openai-
    /// whisper's `--output_format all`); repeats are dropped, order kept.
    pub fn parse_list(s: &str) -> Result<Vec<Format>, UnknownFormat> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim) {
            let one: [Format; 1];
            let add: &[Format] = if name == "all" {
                &Self::ALL
            } else {
                one = [name.parse()?];
                &one
            };
            for &f in add {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    /// The part of an `--output` file's name after the input's stem when
    /// several formats are written together: the four JSON formats would
    /// all be `.json`, so all but plain `json` carry their name.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Format::Whisper(OutputFormat::VerboseJson) => "verbose_json.json",
            Format::Whisper(OutputFormat::DiarizedJson) => "diarized_json.json",
            Format::Transcribe => "transcribe.json",
            f => f.extension(),
        }
    }

    /// File extension for `--output` files.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Whisper(f) => f.extension(),
            Format::Transcribe => "json",
        }
    }

    /// HTTP `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Whisper(
                OutputFormat::Json | OutputFormat::VerboseJson | OutputFormat::DiarizedJson,
            )
            | Format::Transcribe => "application/json",
            Format::Whisper(OutputFormat::Vtt) => "text/vtt; charset=utf-8",
            Format::Whisper(_) => "text/plain; charset=utf-8",
        }
    }

    /// Captions, the formats `max_words_per_cue` applies to.
    pub fn is_captions(self) -> bool {
        matches!(self, Format::Whisper(OutputFormat::Srt | OutputFormat::Vtt))
    }
}

/// Whether rendering `formats` with `opts` needs word timings: the
/// `transcribe` format (its items are words), or word-level caption cues.
/// Callers turn `word_timestamps` on when this holds.
pub fn needs_words(formats: &[Format], opts: &RenderOptions) -> bool {
    formats.contains(&Format::Transcribe)
        || (opts.max_words_per_cue.is_some() && formats.iter().any(|f| f.is_captions()))
}

/// Renders a local transcript. `job_name` is Transcribe's `jobName` (made
/// acceptable by [`transcribe_json::job_name`]) and RTTM's file id (its
/// spaces made `_`, `audio` when empty); other formats ignore it.
pub fn render(t: &Transcript, format: Format, job_name: &str, opts: &RenderOptions) -> String {
    match format {
        Format::Whisper(OutputFormat::Rttm) => render_rttm(t, job_name),
        Format::Whisper(f) => render_with(t, f, opts),
        Format::Transcribe => render_transcribe(job_name, &transcript_record(t, String::new())),
    }
}

fn render_transcribe(job_name: &str, r: &TranscriptRecord) -> String {
    let doc = transcribe_json::write(job_name, r);
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// Renders a transcript in each of `formats` that parses (the job contract
/// validated them already), keyed by the name as given: from the Whisper
/// transcript `t` and its record `r` (the same transcript both ways).
pub fn render_formats(
    t: &Transcript,
    r: &TranscriptRecord,
    formats: &[String],
    job_name: &str,
    opts: &RenderOptions,
) -> BTreeMap<String, String> {
    formats
        .iter()
        .filter_map(|name| {
            let body = match name.parse::<Format>().ok()? {
                Format::Whisper(OutputFormat::Rttm) => render_rttm(t, job_name),
                Format::Whisper(f) => render_with(t, f, opts),
                Format::Transcribe => render_transcribe(job_name, r),
            };
            Some((name.clone(), body))
        })
        .collect()
}

/// A Whisper word as the job contract records it: no surrounding spaces.
pub fn word_record(w: &Word) -> WordRecord {
    WordRecord {
        word: w.word.trim().to_owned(),
        start: w.start,
        end: w.end,
        probability: w.probability,
        speaker: w.speaker.clone(),
    }
}

/// A Whisper segment as the job contract records it: text and words
/// trimmed, words with nothing left after trimming dropped.
pub fn segment_record(s: &Segment) -> SegmentRecord {
    SegmentRecord {
        start: s.start,
        end: s.end,
        text: s.text.trim().to_owned(),
        words: s
            .words
            .iter()
            .map(word_record)
            .filter(|w| !w.word.is_empty())
            .collect(),
        speaker: s.speaker.clone(),
    }
}

/// A Whisper transcript as the job contract records it (no renderings:
/// `formats` is empty).
pub fn transcript_record(t: &Transcript, model: String) -> TranscriptRecord {
    TranscriptRecord {
        text: t.text.trim().to_owned(),
        language: t.language.clone(),
        duration: t.duration,
        model,
        segments: t.segments.iter().map(segment_record).collect(),
        formats: BTreeMap::new(),
    }
}

/// A recorded transcript (a managed backend's) as a Whisper transcript,
/// for the same writers: segment texts and words get Whisper's leading
/// space back; decoding statistics are zero.
pub fn transcript_of(r: &TranscriptRecord) -> Transcript {
    Transcript {
        text: r.text.clone(),
        language: r.language.clone(),
        duration: r.duration,
        segments: r
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| Segment {
                id: i,
                seek: 0,
                start: s.start,
                end: s.end,
                text: format!(" {}", s.text),
                tokens: Vec::new(),
                temperature: 0.0,
                avg_logprob: 0.0,
                compression_ratio: 0.0,
                no_speech_prob: 0.0,
                words: s
                    .words
                    .iter()
                    .map(|w| Word {
                        word: format!(" {}", w.word),
                        start: w.start,
                        end: w.end,
                        probability: w.probability,
                        speaker: w.speaker.clone(),
                    })
                    .collect(),
                speaker: s.speaker.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_formats_parse_by_name_and_get_distinct_file_names() {
        let names: Vec<&str> = FORMAT_NAMES.split(", ").collect();
        let parsed: Vec<Format> = names.iter().map(|n| n.parse().unwrap()).collect();
        let mut want = Format::ALL.to_vec();
        let mut got = parsed.clone();
        want.sort_by_key(|f| f.file_suffix());
        got.sort_by_key(|f| f.file_suffix());
        assert_eq!(got, want, "ALL and FORMAT_NAMES list the same formats");
        let mut suffixes: Vec<&str> = Format::ALL.iter().map(|f| f.file_suffix()).collect();
        suffixes.sort();
        suffixes.dedup();
        assert_eq!(suffixes.len(), Format::ALL.len(), "{suffixes:?}");
        assert_eq!(Format::parse_list("all,json").unwrap(), Format::ALL);
        assert_eq!(
            Format::parse_list("vtt").unwrap(),
            [Format::Whisper(OutputFormat::Vtt)]
        );
    }

    fn word(w: &str, start: f64, end: f64, p: f64) -> Word {
        Word {
            word: w.into(),
            start,
            end,
            probability: p,
            speaker: None,
        }
    }

    fn segment(id: usize, start: f64, end: f64, text: &str, words: Vec<Word>) -> Segment {
        Segment {
            id,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![50363, 1002],
            temperature: 0.0,
            avg_logprob: -0.25,
            compression_ratio: 1.2,
            no_speech_prob: 0.01,
            words,
            speaker: None,
        }
    }

    /// A transcript as the engine makes it with word timestamps: words
    /// with Whisper's leading space, punctuation attached.
    fn sample() -> Transcript {
        Transcript {
            text: " Good morning, everyone. Shall we start with the launch date?".into(),
            language: "en".into(),
            duration: 4.8,
            segments: vec![
                segment(
                    0,
                    0.0,
                    1.9,
                    " Good morning, everyone.",
                    vec![
                        word(" Good", 0.0, 0.42, 0.91),
                        word(" morning,", 0.42, 0.9, 0.98765),
                        word(" everyone.", 1.02, 1.9, 0.9),
                    ],
                ),
                segment(
                    1,
                    2.0,
                    4.3,
                    " Shall we start with the launch date?",
                    vec![
                        word(" Shall", 2.0, 2.2, 0.7),
                        word(" we", 2.2, 2.34, 0.99),
                        word(" start", 2.34, 2.71, 0.95),
                        word(" with", 2.71, 2.9, 0.96),
                        word(" the", 2.9, 3.01, 0.99),
                        word(" launch", 3.01, 3.5, 0.88),
                        word(" date?", 3.5, 4.3, 0.93),
                    ],
                ),
            ],
        }
    }

    #[test]
    fn format_names_parse_and_unknown_ones_list_every_format() {
        assert_eq!("transcribe".parse::<Format>(), Ok(Format::Transcribe));
        assert_eq!(
            "srt".parse::<Format>(),
            Ok(Format::Whisper(OutputFormat::Srt))
        );
        let e = "docx".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("\"docx\"") && e.contains("transcribe"), "{e}");
        assert_eq!(Format::Transcribe.extension(), "json");
        assert_eq!(Format::Transcribe.content_type(), "application/json");
        assert!(Format::Whisper(OutputFormat::Vtt).is_captions());
        assert!(!Format::Transcribe.is_captions());
    }

    #[test]
    fn which_requests_need_word_timings() {
        let f =
            |names: &[&str]| -> Vec<Format> { names.iter().map(|n| n.parse().unwrap()).collect() };
        let cues = RenderOptions {
            max_words_per_cue: Some(3),
        };
        let none = RenderOptions::default();
        assert!(needs_words(&f(&["transcribe"]), &none));
        assert!(needs_words(&f(&["json", "transcribe"]), &none));
        assert!(!needs_words(&f(&["srt", "json"]), &none));
        assert!(needs_words(&f(&["srt"]), &cues));
        assert!(needs_words(&f(&["text", "vtt"]), &cues));
        assert!(!needs_words(&f(&["json", "verbose_json"]), &cues));
        assert!(!needs_words(&[], &cues));
    }

    #[test]
    fn records_trim_words_and_keep_their_times() {
        let mut t = sample();
        t.segments[0].words.push(word(" ", 1.9, 1.9, 0.1));
        let r = transcript_record(&t, "tiny.en".into());
        assert_eq!(r.model, "tiny.en");
        assert_eq!(r.text, t.text.trim());
        assert_eq!(r.segments[0].text, "Good morning, everyone.");
        let words: Vec<&str> = r.segments[0]
            .words
            .iter()
            .map(|w| w.word.as_str())
            .collect();
        assert_eq!(
            words,
            ["Good", "morning,", "everyone."],
            "blank word dropped"
        );
        assert_eq!(
            r.segments[0].words[1],
            WordRecord {
                word: "morning,".into(),
                start: 0.42,
                end: 0.9,
                probability: 0.98765,
                speaker: None,
            }
        );
        // Without word timings, segments carry none (and serialize none).
        let mut plain = sample();
        plain.segments.iter_mut().for_each(|s| s.words.clear());
        let r = transcript_record(&plain, "m".into());
        assert!(r.segments.iter().all(|s| s.words.is_empty()));
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["segments"][0].get("words").is_none());
    }

    #[test]
    fn transcript_to_transcribe_json_and_back_keeps_every_word() {
        let t = sample();
        let body = render(
            &t,
            Format::Transcribe,
            "team call (1)",
            &RenderOptions::default(),
        );
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["jobName"], "team-call--1-");
        assert_eq!(doc["accountId"], "000000000000");
        assert_eq!(doc["status"], "COMPLETED");
        assert_eq!(doc["results"]["language_code"], "en-US");
        assert_eq!(
            doc["results"]["transcripts"][0]["transcript"],
            "Good morning, everyone. Shall we start with the launch date?"
        );
        let items = doc["results"]["items"].as_array().unwrap();
        // 10 words, 3 punctuation marks split off.
        assert_eq!(items.len(), 13);
        assert_eq!(
            items[1],
            serde_json::json!({"id": 1, "type": "pronunciation", "start_time": "0.420",
                "end_time": "0.900", "alternatives": [{"confidence": "0.988", "content": "morning"}]})
        );
        assert_eq!(
            items[2],
            serde_json::json!({"id": 2, "type": "punctuation",
                "alternatives": [{"confidence": "0.0", "content": ","}]})
        );
        let segs = doc["results"]["audio_segments"].as_array().unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1]["start_time"], "2.000");
        assert_eq!(segs[1]["end_time"], "4.300");
        assert_eq!(
            segs[1]["transcript"],
            "Shall we start with the launch date?"
        );
        assert_eq!(segs[0]["items"], serde_json::json!([0, 1, 2, 3, 4]));

        let back = transcribe_json::parse(body.as_bytes()).unwrap();
        assert_eq!(back.text, t.text.trim());
        assert_eq!(back.language, "en");
        let want = transcript_record(&t, String::new());
        assert_eq!(back.segments.len(), want.segments.len());
        for (b, w) in back.segments.iter().zip(&want.segments) {
            assert_eq!(b.text, w.text);
            assert!((b.start - w.start).abs() < 1e-9 && (b.end - w.end).abs() < 1e-9);
            assert_eq!(b.words.len(), w.words.len());
            for (x, y) in b.words.iter().zip(&w.words) {
                assert_eq!(x.word, y.word);
                assert!((x.start - y.start).abs() <= 0.0005, "{x:?} {y:?}");
                assert!((x.end - y.end).abs() <= 0.0005, "{x:?} {y:?}");
                assert!((x.probability - y.probability).abs() <= 0.0005);
            }
        }
    }

    #[test]
    fn managed_records_render_through_the_same_writers() {
        let r = transcript_record(&sample(), "amazon-transcribe".into());
        let t = transcript_of(&r);
        assert_eq!(t.segments[1].words[6].word, " date?");
        assert_eq!(t.segments[0].text, " Good morning, everyone.");
        // Record → transcript → record is the identity.
        assert_eq!(transcript_record(&t, r.model.clone()), r);
        let formats: Vec<String> = ["srt", "transcribe", "verbose_json", "docx"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let opts = RenderOptions {
            max_words_per_cue: Some(4),
        };
        let out = render_formats(&t, &r, &formats, "job-1", &opts);
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            ["srt", "transcribe", "verbose_json"]
        );
        // 3 words → 1 cue; 7 words → 4 + 3.
        assert_eq!(out["srt"].trim_end().split("\n\n").count(), 3);
        assert!(out["srt"].contains("2\n00:00:02,000 --> 00:00:02,900\nShall we start with\n"));
        let v: serde_json::Value = serde_json::from_str(&out["verbose_json"]).unwrap();
        assert_eq!(v["words"].as_array().unwrap().len(), 10);
        assert_eq!(v["words"][9]["word"], "date?");
        let back = transcribe_json::parse(out["transcribe"].as_bytes()).unwrap();
        assert_eq!(back.segments[1].words[6].word, "date?");
        assert!(out["transcribe"].contains("\"jobName\": \"job-1\""));
    }
    /// [`sample`] diarized: the first segment is `SPEAKER_00`; in the
    /// second, `SPEAKER_01` says "Shall we start" and `SPEAKER_00` the rest.
    fn diarized() -> Transcript {
        let mut t = sample();
        let sp = |l: &str| Some(l.to_owned());
        t.segments[0].speaker = sp("SPEAKER_00");
        t.segments[0]
            .words
            .iter_mut()
            .for_each(|w| w.speaker = sp("SPEAKER_00"));
        t.segments[1].speaker = sp("SPEAKER_01");
        for (i, w) in t.segments[1].words.iter_mut().enumerate() {
            w.speaker = if i < 3 {
                sp("SPEAKER_01")
            } else {
                sp("SPEAKER_00")
            };
        }
        t
    }

    #[test]
    fn speaker_formats_parse_and_have_their_types() {
        let rttm: Format = "rttm".parse().unwrap();
        assert_eq!(rttm, Format::Whisper(OutputFormat::Rttm));
        assert_eq!(rttm.extension(), "rttm");
        assert_eq!(rttm.content_type(), "text/plain; charset=utf-8");
        assert!(!rttm.is_captions());
        let dj: Format = "diarized_json".parse().unwrap();
        assert_eq!(dj.extension(), "json");
        assert_eq!(dj.content_type(), "application/json");
        let e = "docx".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("rttm") && e.contains("diarized_json"), "{e}");
    }

    #[test]
    fn records_carry_speakers_both_ways() {
        let t = diarized();
        let r = transcript_record(&t, "tiny.en".into());
        assert_eq!(r.segments[1].speaker.as_deref(), Some("SPEAKER_01"));
        assert_eq!(
            r.segments[1].words[3].speaker.as_deref(),
            Some("SPEAKER_00")
        );
        let back = transcript_of(&r);
        assert_eq!(back.segments[1].speaker, t.segments[1].speaker);
        for (a, b) in back.segments.iter().zip(&t.segments) {
            let sa: Vec<_> = a.words.iter().map(|w| &w.speaker).collect();
            let sb: Vec<_> = b.words.iter().map(|w| &w.speaker).collect();
            assert_eq!(sa, sb);
        }
        assert_eq!(transcript_record(&back, r.model.clone()), r);
    }

    #[test]
    fn every_format_shows_the_speakers() {
        let t = diarized();
        let r = transcript_record(&t, String::new());
        let names: Vec<String> = FORMAT_NAMES.split(", ").map(str::to_owned).collect();
        let opts = RenderOptions {
            max_words_per_cue: Some(10),
        };
        let out = render_formats(&t, &r, &names, "team call", &opts);
        assert_eq!(out.len(), names.len());
        assert_eq!(
            out["text"],
            "SPEAKER_00: Good morning, everyone.\nSPEAKER_01: Shall we start with the launch date?\n"
        );
        // Word cues cut where the speaker changes inside segment 1.
        assert!(
            out["srt"].contains("\n[SPEAKER_01] Shall we start\n"),
            "{}",
            out["srt"]
        );
        assert!(out["srt"].contains("\n[SPEAKER_00] with the launch date?\n"));
        assert!(
            out["vtt"].contains("\n<v SPEAKER_01>Shall we start\n"),
            "{}",
            out["vtt"]
        );
        assert_eq!(
            out["rttm"],
            "SPEAKER team_call 1 0.000 1.900 <NA> <NA> SPEAKER_00 <NA> <NA>\n\
             SPEAKER team_call 1 2.000 2.300 <NA> <NA> SPEAKER_01 <NA> <NA>\n"
        );
        assert_eq!(
            render(&t, Format::Whisper(OutputFormat::Rttm), "team call", &opts),
            out["rttm"]
        );
        let v: serde_json::Value = serde_json::from_str(&out["json"]).unwrap();
        assert_eq!(v["speakers"][1]["speaker"], "SPEAKER_01");
        let v: serde_json::Value = serde_json::from_str(&out["verbose_json"]).unwrap();
        assert_eq!(v["words"][3]["speaker"], "SPEAKER_01");
        let v: serde_json::Value = serde_json::from_str(&out["diarized_json"]).unwrap();
        assert_eq!(v["segments"][1]["speaker"], "B");
        // Transcribe: spk_N labels that read back as the same speakers.
        let v: serde_json::Value = serde_json::from_str(&out["transcribe"]).unwrap();
        assert_eq!(v["results"]["speaker_labels"]["speakers"], 2);
        assert_eq!(v["results"]["items"][0]["speaker_label"], "spk_0");
        let back = transcribe_json::parse(out["transcribe"].as_bytes()).unwrap();
        let spk = |r: &TranscriptRecord| -> Vec<Option<String>> {
            r.segments
                .iter()
                .flat_map(|s| s.words.iter().map(|w| w.speaker.clone()))
                .chain(r.segments.iter().map(|s| s.speaker.clone()))
                .collect()
        };
        assert_eq!(spk(&back), spk(&r));
    }

    #[test]
    fn without_speakers_nothing_changes() {
        let t = sample();
        let r = transcript_record(&t, String::new());
        let names: Vec<String> = FORMAT_NAMES.split(", ").map(str::to_owned).collect();
        let out = render_formats(&t, &r, &names, "job", &RenderOptions::default());
        for (name, body) in &out {
            if name != "diarized_json" {
                assert!(!body.to_lowercase().contains("speaker"), "{name}: {body}");
            }
        }
        assert_eq!(out["rttm"], "");
        assert_eq!(out["text"], format!("{}\n", t.text));
    }
}
