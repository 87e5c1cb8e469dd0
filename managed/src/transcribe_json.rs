//! Amazon Transcribe's batch output JSON, both directions, in one shape.
//!
//! [`parse`] reads the file a finished Transcribe job writes (what
//! `Transcript.TranscriptFileUri` points at) into earshot's
//! [`TranscriptRecord`], words and all; [`write`] renders an earshot
//! transcript as the same document, for the `--format transcribe` output a
//! team moving off Transcribe can feed to its existing consumers. Keeping
//! both in one set of types means the writer cannot drift from what the
//! reader (and AWS) accepts; `schema/transcribe-output.schema.json` pins
//! the shape from AWS's documentation and the tests check both sides
//! against it.
//!
//! The quirks this module exists for: times and confidences are *strings*
//! (`"4.87"`), punctuation items carry no times and belong to the word
//! before them, and older outputs lack item ids and `audio_segments`.
//! Nothing here panics on input: a malformed file is a
//! [`TranscribeJsonError`].
//!
//! Speakers (Transcribe's `ShowSpeakerLabels`): Transcribe names them
//! `spk_0`, `spk_1`, …; earshot names them `SPEAKER_00`, `SPEAKER_01`, …
//! (pyannote's convention). [`parse`] maps `spk_N` to `SPEAKER_{N:02}` on
//! words and segments; [`write`] maps back and adds what Transcribe writes
//! with speaker labels: `speaker_label` on pronunciation items and audio
//! segments, and `results.speaker_labels` (speaker turns). See
//! [`transcribe_speaker`] and [`earshot_speaker`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use earshot_queue_adapter::job::{SegmentRecord, TranscriptRecord, WordRecord};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// The `model` earshot records for transcripts made by Transcribe.
pub const MODEL_NAME: &str = "amazon-transcribe";

/// The `accountId` [`write`] puts in documents it makes (the writer has no
/// AWS account); callers may overwrite [`TranscribeOutput::account_id`].
pub const PLACEHOLDER_ACCOUNT_ID: &str = "000000000000";

/// Why a Transcribe output document could not be read.
#[derive(Debug, Error, PartialEq)]
pub enum TranscribeJsonError {
    /// Not JSON, or not the documented shape (a missing or mistyped field).
    #[error("not a Transcribe output document: {0}")]
    Malformed(String),
    /// `results.transcripts` is empty.
    #[error("the Transcribe output has no transcript")]
    MissingTranscript,
    /// A time or confidence string that is not a number.
    #[error("{what} {value:?} is not a number")]
    BadNumber { what: String, value: String },
    /// An item or audio segment that breaks the format's rules.
    #[error("{0}")]
    BadItem(String),
}

/// A decimal number written as a JSON string, as Transcribe writes times
/// and confidences. Reading also accepts a bare JSON number (LocalStack
/// writes those); writing always gives a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumStr(pub String);

impl NumStr {
    /// A number with a fixed count of decimals (`"4.870"`).
    pub fn fixed(x: f64, decimals: usize) -> Self {
        let x = if x.is_finite() { x.max(0.0) } else { 0.0 };
        NumStr(format!("{x:.decimals$}"))
    }

    /// The value, or a typed error naming `what` it was.
    pub fn value(&self, what: impl FnOnce() -> String) -> Result<f64, TranscribeJsonError> {
        match self.0.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(TranscribeJsonError::BadNumber {
                what: what(),
                value: self.0.clone(),
            }),
        }
    }
}

impl Serialize for NumStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NumStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NumStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number as a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NumStr, E> {
                Ok(NumStr(v.to_owned()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NumStr, E> {
                Ok(NumStr(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumStr, E> {
                Ok(NumStr(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumStr, E> {
                Ok(NumStr(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscribeOutput {
    #[serde(rename = "jobName", default)]
    pub job_name: String,
    #[serde(rename = "accountId", default)]
    pub account_id: String,
    #[serde(default)]
    pub status: String,
    pub results: Results,
}

/// `results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// One entry (one per channel with channel identification).
    pub transcripts: Vec<TranscriptText>,
    #[serde(default)]
    pub items: Vec<Item>,
    /// Newer outputs: the transcript cut into segments, each naming its
    /// items by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audio_segments: Vec<AudioSegment>,
    /// The job's (or the identified) language, a Transcribe code (`en-US`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    /// With `IdentifyLanguage`: candidate languages and their scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_identification: Option<Vec<LanguageScore>>,
    /// With speaker labels: the speaker turns ([`SpeakerLabels`]). Kept
    /// as a JSON value so a shape earshot does not know never fails the
    /// read; [`parse`] reads `speaker_label` on items first and falls back
    /// to these turns for outputs whose items carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_labels: Option<serde_json::Value>,
}

/// `results.speaker_labels`: who spoke when, as speaker turns. [`write`]
/// omits `channel_label` (Transcribe adds `ch_0` there; earshot has no
/// channels); reading tolerates it and any other field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerLabels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_label: Option<String>,
    /// How many distinct speakers.
    #[serde(default)]
    pub speakers: usize,
    #[serde(default)]
    pub segments: Vec<SpeakerSegment>,
}

/// `results.speaker_labels.segments[]`: one speaker turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerSegment {
    pub start_time: NumStr,
    pub end_time: NumStr,
    pub speaker_label: String,
    /// The turn's pronunciation items, by their times.
    #[serde(default)]
    pub items: Vec<SpeakerItem>,
}

/// `results.speaker_labels.segments[].items[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerItem {
    pub start_time: NumStr,
    pub end_time: NumStr,
    pub speaker_label: String,
}

/// Transcribe's name for an earshot speaker: `SPEAKER_07` → `spk_7`.
/// `None` for a label of another shape (those get the next free `spk_N`
/// from [`write`], which sees every label at once).
pub fn transcribe_speaker(label: &str) -> Option<String> {
    let n = label.strip_prefix("SPEAKER_")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("spk_{}", n.parse::<u64>().ok()?))
}

/// earshot's name for a Transcribe speaker: `spk_7` → `SPEAKER_07`.
/// Another label is kept as it is (Transcribe only writes `spk_N`; a
/// stranger label still names one speaker consistently).
pub fn earshot_speaker(label: &str) -> String {
    let label = label.trim();
    match label
        .strip_prefix("spk_")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
    {
        Some(n) => format!("SPEAKER_{n:02}"),
        None => label.to_owned(),
    }
}

/// The speaker most words have (the first of them on a tie): a segment's
/// speaker when only its words are labelled.
fn main_speaker(words: &[WordRecord]) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for sp in words.iter().filter_map(|w| w.speaker.as_deref()) {
        match counts.iter_mut().find(|(s, _)| *s == sp) {
            Some((_, n)) => *n += 1,
            None => counts.push((sp, 1)),
        }
    }
    let best = counts.iter().map(|&(_, n)| n).max()?;
    counts
        .into_iter()
        .find(|&(_, n)| n == best)
        .map(|(s, _)| s.to_owned())
}

/// `results.transcripts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptText {
    pub transcript: String,
}

/// Whether an item is a spoken word or punctuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemType {
    Pronunciation,
    Punctuation,
}

/// `results.items[]`: one word or punctuation mark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Absent in older outputs (then the position in `items` stands in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(rename = "type")]
    pub kind: ItemType,
    /// Seconds; absent on punctuation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<NumStr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<NumStr>,
    pub alternatives: Vec<Alternative>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_label: Option<String>,
}

/// `alternatives[]`: the first is the best.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub confidence: NumStr,
    pub content: String,
}

/// `results.audio_segments[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioSegment {
    pub id: u64,
    pub transcript: String,
    pub start_time: NumStr,
    pub end_time: NumStr,
    /// Ids of the segment's items, in order.
    #[serde(default)]
    pub items: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_label: Option<String>,
}

/// `results.language_identification[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageScore {
    pub code: String,
    pub score: NumStr,
}

/// Transcribe's language codes by ISO 639-1 code: the first code for a
/// language is the one a bare ISO code maps to. Covers the batch languages
/// Whisper also speaks; a code missing here makes the backend ask
/// Transcribe to identify the language instead.
const LANGUAGES: &[(&str, &[&str])] = &[
    ("af", &["af-ZA"]),
    ("ar", &["ar-SA", "ar-AE"]),
    ("ca", &["ca-ES"]),
    ("cs", &["cs-CZ"]),
    ("da", &["da-DK"]),
    ("de", &["de-DE", "de-CH"]),
    ("el", &["el-GR"]),
    (
        "en",
        &[
            "en-US", "en-GB", "en-AU", "en-IN", "en-IE", "en-NZ", "en-ZA", "en-AB", "en-WL",
        ],
    ),
    ("es", &["es-US", "es-ES"]),
    ("eu", &["eu-ES"]),
    ("fa", &["fa-IR"]),
    ("fi", &["fi-FI"]),
    ("fr", &["fr-FR", "fr-CA"]),
    ("gl", &["gl-ES"]),
    ("he", &["he-IL"]),
    ("hi", &["hi-IN"]),
    ("hr", &["hr-HR"]),
    ("id", &["id-ID"]),
    ("it", &["it-IT"]),
    ("ja", &["ja-JP"]),
    ("ko", &["ko-KR"]),
    ("lv", &["lv-LV"]),
    ("ms", &["ms-MY"]),
    ("nl", &["nl-NL"]),
    ("no", &["no-NO"]),
    ("pl", &["pl-PL"]),
    ("pt", &["pt-BR", "pt-PT"]),
    ("ro", &["ro-RO"]),
    ("ru", &["ru-RU"]),
    ("sk", &["sk-SK"]),
    ("so", &["so-SO"]),
    ("sr", &["sr-RS"]),
    ("sv", &["sv-SE"]),
    ("ta", &["ta-IN"]),
    ("te", &["te-IN"]),
    ("th", &["th-TH"]),
    ("tl", &["tl-PH"]),
    ("tr", &["tr-TR"]),
    ("uk", &["uk-UA"]),
    ("vi", &["vi-VN"]),
    ("zh", &["zh-CN", "zh-TW", "zh-HK"]),
    ("zu", &["zu-ZA"]),
];

/// The Transcribe language code for an earshot language: an ISO 639-1 code
/// (`en` → `en-US`) or a Transcribe code given directly (`en-GB`, any
/// case). `None` when Transcribe has no such language here, so the caller
/// can fall back to language identification.
pub fn transcribe_language(lang: &str) -> Option<&'static str> {
    let lang = lang.trim();
    if lang.contains('-') {
        return LANGUAGES
            .iter()
            .flat_map(|(_, codes)| codes.iter())
            .find(|c| c.eq_ignore_ascii_case(lang))
            .copied();
    }
    LANGUAGES
        .iter()
        .find(|(iso, _)| iso.eq_ignore_ascii_case(lang))
        .and_then(|(_, codes)| codes.first().copied())
}

/// The ISO 639-1 code earshot records for a Transcribe language code
/// (`en-US` → `en`, `zh-TW` → `zh`).
pub fn iso_language(code: &str) -> String {
    code.trim()
        .split('-')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// An item with its strings turned into numbers.
struct Parsed<'a> {
    kind: ItemType,
    content: &'a str,
    start: f64,
    end: f64,
    confidence: f64,
    /// earshot's label for the item's `speaker_label`.
    speaker: Option<String>,
}

fn parse_item(i: usize, item: &Item) -> Result<Parsed<'_>, TranscribeJsonError> {
    let best = item
        .alternatives
        .first()
        .ok_or_else(|| TranscribeJsonError::BadItem(format!("item {i} has no alternatives")))?;
    let confidence = best
        .confidence
        .value(|| format!("item {i} confidence"))?
        .clamp(0.0, 1.0);
    let (start, end) = match item.kind {
        ItemType::Punctuation => (0.0, 0.0),
        ItemType::Pronunciation => {
            let time = |t: &Option<NumStr>, name: &str| match t {
                Some(t) => t.value(|| format!("item {i} {name}")),
                None => Err(TranscribeJsonError::BadItem(format!(
                    "pronunciation item {i} has no {name}"
                ))),
            };
            (
                time(&item.start_time, "start_time")?,
                time(&item.end_time, "end_time")?,
            )
        }
    };
    Ok(Parsed {
        kind: item.kind,
        content: best.content.trim(),
        start,
        end: end.max(start),
        confidence,
        speaker: item.speaker_label.as_deref().map(earshot_speaker),
    })
}

/// Speakers for items that carry no `speaker_label` (older Transcribe
/// outputs), from `speaker_labels`' turns, whose items name pronunciation
/// items by their times. Does nothing when any item has a label, or when
/// `speaker_labels` is absent or not the documented shape.
fn speakers_from_turns(parsed: &mut [Parsed], labels: Option<&serde_json::Value>) {
    if parsed.iter().any(|p| p.speaker.is_some()) {
        return;
    }
    let Some(labels) = labels.and_then(|v| SpeakerLabels::deserialize(v).ok()) else {
        return;
    };
    // Times to the millisecond: both sides are the same decimal strings.
    let key = |t: f64| (t * 1000.0).round() as i64;
    let by_start: HashMap<i64, String> = labels
        .segments
        .iter()
        .flat_map(|s| &s.items)
        .filter_map(|i| {
            let t = i.start_time.value(String::new).ok()?;
            Some((key(t), earshot_speaker(&i.speaker_label)))
        })
        .collect();
    for p in parsed.iter_mut() {
        if p.kind == ItemType::Pronunciation {
            p.speaker = by_start.get(&key(p.start)).cloned();
        }
    }
}

/// Words from items in order: punctuation joins the word before it
/// (`"launch,"`); punctuation with no word before it joins the next one.
fn words_of<'a>(items: impl Iterator<Item = &'a Parsed<'a>>) -> Vec<WordRecord> {
    let mut words: Vec<WordRecord> = Vec::new();
    let mut pending = String::new();
    for p in items {
        match p.kind {
            ItemType::Pronunciation => {
                words.push(WordRecord {
                    word: format!("{}{}", std::mem::take(&mut pending), p.content),
                    start: p.start,
                    end: p.end,
                    probability: p.confidence,
                    speaker: p.speaker.clone(),
                });
            }
            ItemType::Punctuation => match words.last_mut() {
                Some(w) => w.word.push_str(p.content),
                None => pending.push_str(p.content),
            },
        }
    }
    words
}

fn segment_of(words: Vec<WordRecord>) -> Option<SegmentRecord> {
    let first = words.first()?;
    let last = words.last()?;
    Some(SegmentRecord {
        start: first.start,
        end: last.end,
        text: words
            .iter()
            .map(|w| w.word.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        speaker: main_speaker(&words),
        words,
    })
}

/// Reads a Transcribe output document into earshot's transcript record.
///
/// Segments come from `audio_segments` when present, else from sentences
/// cut after `.`, `?` and `!`. `language` is the ISO code of
/// `results.language_code` (else of the best `language_identification`
/// score); empty when the document names none, for the caller to fill from
/// the job. `duration` is the end of the last word or segment. `model` is
/// [`MODEL_NAME`].
pub fn parse(bytes: &[u8]) -> Result<TranscriptRecord, TranscribeJsonError> {
    let doc: TranscribeOutput =
        serde_json::from_slice(bytes).map_err(|e| TranscribeJsonError::Malformed(e.to_string()))?;
    record_of(&doc)
}

/// [`parse`] for an already-deserialized document.
pub fn record_of(doc: &TranscribeOutput) -> Result<TranscriptRecord, TranscribeJsonError> {
    let r = &doc.results;
    if r.transcripts.is_empty() {
        return Err(TranscribeJsonError::MissingTranscript);
    }
    let text = r
        .transcripts
        .iter()
        .map(|t| t.transcript.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut parsed = r
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_item(i, item))
        .collect::<Result<Vec<_>, _>>()?;
    speakers_from_turns(&mut parsed, r.speaker_labels.as_ref());
    let mut duration = parsed
        .iter()
        .filter(|p| p.kind == ItemType::Pronunciation)
        .map(|p| p.end)
        .fold(0.0, f64::max);

    let mut segments = Vec::new();
    if !r.audio_segments.is_empty() {
        let by_id: HashMap<u64, usize> = r
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.id.unwrap_or(i as u64), i))
            .collect();
        for seg in &r.audio_segments {
            let start = seg
                .start_time
                .value(|| format!("audio segment {} start_time", seg.id))?;
            let end = seg
                .end_time
                .value(|| format!("audio segment {} end_time", seg.id))?;
            let items = seg
                .items
                .iter()
                .map(|id| {
                    by_id.get(id).map(|&i| &parsed[i]).ok_or_else(|| {
                        TranscribeJsonError::BadItem(format!(
                            "audio segment {} names item {id}, which does not exist",
                            seg.id
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            duration = duration.max(end);
            let words = words_of(items.into_iter());
            segments.push(SegmentRecord {
                start,
                end: end.max(start),
                text: seg.transcript.trim().to_owned(),
                speaker: match &seg.speaker_label {
                    Some(l) => Some(earshot_speaker(l)),
                    None => main_speaker(&words),
                },
                words,
            });
        }
    } else {
        let mut current: Vec<&Parsed> = Vec::new();
        for p in &parsed {
            current.push(p);
            if p.kind == ItemType::Punctuation && matches!(p.content, "." | "?" | "!") {
                segments.extend(segment_of(words_of(current.drain(..))));
            }
        }
        segments.extend(segment_of(words_of(current.drain(..))));
        if segments.is_empty() && !text.is_empty() {
            // A transcript without items (nothing to time it by).
            segments.push(SegmentRecord {
                start: 0.0,
                end: duration,
                text: text.clone(),
                words: Vec::new(),
                speaker: None,
            });
        }
    }

    let language = match (&r.language_code, &r.language_identification) {
        (Some(code), _) if !code.trim().is_empty() => iso_language(code),
        (_, Some(scores)) => scores
            .iter()
            .filter_map(|s| Some((s.score.value(String::new).ok()?, &s.code)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, code)| iso_language(code))
            .unwrap_or_default(),
        _ => String::new(),
    };
    Ok(TranscriptRecord {
        text,
        language,
        duration,
        model: MODEL_NAME.to_owned(),
        segments,
        formats: Default::default(),
    })
}

/// Longest `jobName` Transcribe accepts.
pub const MAX_JOB_NAME_LEN: usize = 200;

/// A `jobName` Transcribe would accept (`[0-9a-zA-Z._-]`, at most
/// [`MAX_JOB_NAME_LEN`] characters) made from any name: other characters
/// become `-`, and an empty name is `transcript`. earshot job ids pass
/// through unchanged; file stems (`team call (final)`) are cleaned.
pub fn job_name(name: &str) -> String {
    let clean: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_JOB_NAME_LEN)
        .collect();
    if clean.is_empty() {
        "transcript".to_owned()
    } else {
        clean
    }
}

/// Transcribe's name (`spk_N`) for every speaker label in a record:
/// `SPEAKER_NN` → `spk_N` ([`transcribe_speaker`]); any other label gets
/// the next `spk_N` no `SPEAKER_NN` label took, in label order, so
/// distinct speakers stay distinct.
fn speaker_names(record: &TranscriptRecord) -> BTreeMap<String, String> {
    let labels: BTreeSet<&str> = record
        .segments
        .iter()
        .flat_map(|s| {
            s.words
                .iter()
                .filter_map(|w| w.speaker.as_deref())
                .chain(s.speaker.as_deref())
        })
        .collect();
    let mut names = BTreeMap::new();
    let mut taken = BTreeSet::new();
    // `SPEAKER_0` and `SPEAKER_00` would both be `spk_0`: the canonical
    // `SPEAKER_00` (what [`earshot_speaker`] reads back) keeps it, the
    // other takes a free number below.
    let canonical = |l: &str, n: &str| {
        n.strip_prefix("spk_").map(|k| format!("SPEAKER_{k:0>2}")) == Some(l.to_owned())
    };
    for pass_canonical in [true, false] {
        for l in &labels {
            if names.contains_key(*l) {
                continue;
            }
            if let Some(n) = transcribe_speaker(l)
                .filter(|n| !taken.contains(n) && canonical(l, n) == pass_canonical)
            {
                taken.insert(n.clone());
                names.insert((*l).to_owned(), n);
            }
        }
    }
    let mut next = 0u64;
    for l in labels {
        if names.contains_key(l) {
            continue;
        }
        while taken.contains(&format!("spk_{next}")) {
            next += 1;
        }
        let n = format!("spk_{next}");
        taken.insert(n.clone());
        names.insert(l.to_owned(), n);
    }
    names
}

/// Punctuation [`write`] splits off the end of a word into its own items.
const PUNCTUATION: &[char] = &['.', ',', '?', '!', ';', ':'];

/// Renders an earshot transcript as Transcribe's output document: words
/// become pronunciation items with string times (3 decimals), their
/// trailing punctuation becomes punctuation items without times, segments
/// become `audio_segments`, and `status` is `COMPLETED`. Segments without
/// word timings give `audio_segments` with no items (times are never
/// invented). `accountId` is [`PLACEHOLDER_ACCOUNT_ID`]; `jobName` is
/// `name` through [`job_name`]; `language_code` is the Transcribe code of
/// the record's language, absent when Transcribe has none for it (Whisper
/// knows languages Transcribe does not, and the field must be a
/// Transcribe code).
///
/// A diarized record (words or segments with a speaker) also gets what
/// Transcribe writes with `ShowSpeakerLabels`: `speaker_label` (`spk_N`,
/// see [`transcribe_speaker`]) on each pronunciation item (the word's
/// speaker, else its segment's) and on each audio segment, and
/// `results.speaker_labels`, one [`SpeakerSegment`] per speaker turn
/// (consecutive words of one speaker). Undiarized records are written
/// exactly as before.
pub fn write(name: &str, record: &TranscriptRecord) -> TranscribeOutput {
    let names = speaker_names(record);
    let name_of = |l: Option<&str>| l.and_then(|l| names.get(l)).cloned();
    let mut items = Vec::new();
    let mut audio_segments = Vec::new();
    let mut turns: Vec<SpeakerSegment> = Vec::new();
    // Whether the next word of the last turn's speaker continues it (an
    // unlabelled word or a wordless segment in between ends a turn).
    let mut turn_open = false;
    for (si, seg) in record.segments.iter().enumerate() {
        let mut ids = Vec::new();
        let seg_label = name_of(seg.speaker.as_deref());
        if seg.words.is_empty() {
            turn_open = false;
            // No words to time a turn by: the segment is the turn.
            if let Some(label) = &seg_label {
                turns.push(SpeakerSegment {
                    start_time: NumStr::fixed(seg.start, 3),
                    end_time: NumStr::fixed(seg.end.max(seg.start), 3),
                    speaker_label: label.clone(),
                    items: Vec::new(),
                });
            }
        }
        for w in &seg.words {
            let word = w.word.trim();
            let stem = word.trim_end_matches(PUNCTUATION);
            // A word that is all punctuation stays one spoken item.
            let (stem, tail) = if stem.is_empty() {
                (word, "")
            } else {
                (stem, &word[stem.len()..])
            };
            if stem.is_empty() {
                continue;
            }
            let id = items.len() as u64;
            ids.push(id);
            let start_time = NumStr::fixed(w.start, 3);
            let end_time = NumStr::fixed(w.end.max(w.start), 3);
            let label = name_of(w.speaker.as_deref()).or_else(|| seg_label.clone());
            if let Some(label) = &label {
                let item = SpeakerItem {
                    start_time: start_time.clone(),
                    end_time: end_time.clone(),
                    speaker_label: label.clone(),
                };
                match turns.last_mut() {
                    Some(t) if turn_open && t.speaker_label == *label => {
                        t.end_time = end_time.clone();
                        t.items.push(item);
                    }
                    _ => turns.push(SpeakerSegment {
                        start_time: start_time.clone(),
                        end_time: end_time.clone(),
                        speaker_label: label.clone(),
                        items: vec![item],
                    }),
                }
            }
            turn_open = label.is_some();
            items.push(Item {
                id: Some(id),
                kind: ItemType::Pronunciation,
                start_time: Some(start_time),
                end_time: Some(end_time),
                alternatives: vec![Alternative {
                    confidence: NumStr::fixed(w.probability.clamp(0.0, 1.0), 3),
                    content: stem.to_owned(),
                }],
                speaker_label: label,
            });
            for c in tail.chars() {
                let id = items.len() as u64;
                ids.push(id);
                items.push(Item {
                    id: Some(id),
                    kind: ItemType::Punctuation,
                    start_time: None,
                    end_time: None,
                    alternatives: vec![Alternative {
                        confidence: NumStr("0.0".into()),
                        content: c.to_string(),
                    }],
                    speaker_label: None,
                });
            }
        }
        audio_segments.push(AudioSegment {
            id: si as u64,
            transcript: seg.text.trim().to_owned(),
            start_time: NumStr::fixed(seg.start, 3),
            end_time: NumStr::fixed(seg.end.max(seg.start), 3),
            items: ids,
            speaker_label: seg_label.or_else(|| name_of(main_speaker(&seg.words).as_deref())),
        });
    }
    let speaker_labels = (!names.is_empty()).then(|| {
        let labels = SpeakerLabels {
            channel_label: None,
            speakers: names.values().collect::<BTreeSet<_>>().len(),
            segments: turns,
        };
        // Strings and numbers only: serializing cannot fail.
        serde_json::to_value(labels).unwrap_or_default()
    });
    let language_code = transcribe_language(&record.language).map(str::to_owned);
    TranscribeOutput {
        job_name: job_name(name),
        account_id: PLACEHOLDER_ACCOUNT_ID.to_owned(),
        status: "COMPLETED".to_owned(),
        results: Results {
            transcripts: vec![TranscriptText {
                transcript: record.text.trim().to_owned(),
            }],
            items,
            audio_segments,
            language_code,
            language_identification: None,
            speaker_labels,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(items: &str, extra: &str) -> String {
        format!(
            r#"{{"jobName":"j","accountId":"123456789012","status":"COMPLETED",
               "results":{{"transcripts":[{{"transcript":"Hi there. Bye?"}}],"items":[{items}]{extra}}}}}"#
        )
    }

    fn word(id: u64, w: &str, s: &str, e: &str) -> String {
        format!(
            r#"{{"id":{id},"type":"pronunciation","start_time":"{s}","end_time":"{e}","alternatives":[{{"confidence":"0.9","content":"{w}"}}]}}"#
        )
    }

    fn punct(id: u64, p: &str) -> String {
        format!(
            r#"{{"id":{id},"type":"punctuation","alternatives":[{{"confidence":"0.0","content":"{p}"}}]}}"#
        )
    }

    fn sample_items() -> String {
        [
            word(0, "Hi", "0.5", "0.8"),
            word(1, "there", "0.8", "1.2"),
            punct(2, "."),
            word(3, "Bye", "2.0", "2.4"),
            punct(4, "?"),
        ]
        .join(",")
    }

    #[test]
    fn sentences_are_cut_at_final_punctuation_without_audio_segments() {
        let r = parse(doc(&sample_items(), r#","language_code":"en-US""#).as_bytes()).unwrap();
        assert_eq!(r.text, "Hi there. Bye?");
        assert_eq!(r.language, "en");
        assert_eq!(r.duration, 2.4);
        assert_eq!(r.segments.len(), 2);
        assert_eq!(r.segments[0].text, "Hi there.");
        assert_eq!((r.segments[0].start, r.segments[0].end), (0.5, 1.2));
        let w: Vec<_> = r.segments[0]
            .words
            .iter()
            .map(|w| w.word.as_str())
            .collect();
        assert_eq!(w, ["Hi", "there."]);
        assert_eq!(r.segments[1].words[0].word, "Bye?");
        assert_eq!(r.segments[1].words[0].probability, 0.9);
    }

    #[test]
    fn bad_documents_are_typed_errors() {
        assert!(matches!(
            parse(b"{not json"),
            Err(TranscribeJsonError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"[]"),
            Err(TranscribeJsonError::Malformed(_))
        ));
        assert!(matches!(
            parse(br#"{"results":{"items":[]}}"#),
            Err(TranscribeJsonError::Malformed(m)) if m.contains("transcripts")
        ));
        assert_eq!(
            parse(br#"{"results":{"transcripts":[],"items":[]}}"#),
            Err(TranscribeJsonError::MissingTranscript)
        );
        let e = parse(doc(&word(0, "x", "zero", "1"), "").as_bytes()).unwrap_err();
        assert!(
            matches!(&e, TranscribeJsonError::BadNumber { value, .. } if value == "zero"),
            "{e}"
        );
        let no_time =
            r#"{"type":"pronunciation","alternatives":[{"confidence":"1","content":"x"}]}"#;
        assert!(matches!(
            parse(doc(no_time, "").as_bytes()),
            Err(TranscribeJsonError::BadItem(_))
        ));
        let no_alt = r#"{"type":"punctuation","alternatives":[]}"#;
        assert!(matches!(
            parse(doc(no_alt, "").as_bytes()),
            Err(TranscribeJsonError::BadItem(_))
        ));
        let seg = r#","audio_segments":[{"id":0,"transcript":"x","start_time":"0","end_time":"1","items":[7]}]"#;
        assert!(matches!(
            parse(doc(&sample_items(), seg).as_bytes()),
            Err(TranscribeJsonError::BadItem(m)) if m.contains("item 7")
        ));
        let weird_type = r#"{"type":"laughter","alternatives":[{"confidence":"1","content":"x"}]}"#;
        assert!(parse(doc(weird_type, "").as_bytes()).is_err());
    }

    #[test]
    fn numbers_may_be_bare_and_silence_is_empty() {
        // LocalStack writes numeric times; no items and no text is silence.
        let it = r#"{"type":"pronunciation","start_time":1.5,"end_time":2,"alternatives":[{"confidence":1,"content":"ok"}]}"#;
        let r = parse(doc(it, "").as_bytes()).unwrap();
        assert_eq!((r.segments[0].start, r.segments[0].end), (1.5, 2.0));
        let r = parse(br#"{"results":{"transcripts":[{"transcript":""}],"items":[]}}"#).unwrap();
        assert_eq!(
            (r.text.as_str(), r.segments.len(), r.duration),
            ("", 0, 0.0)
        );
        assert_eq!(r.language, "");
    }

    #[test]
    fn identified_language_is_the_best_score() {
        let extra = r#","language_identification":[{"code":"de-DE","score":"0.2"},{"code":"fr-CA","score":"0.7"}]"#;
        let r = parse(doc(&sample_items(), extra).as_bytes()).unwrap();
        assert_eq!(r.language, "fr");
    }

    #[test]
    fn language_codes_map_both_ways() {
        assert_eq!(transcribe_language("en"), Some("en-US"));
        assert_eq!(transcribe_language("EN-gb"), Some("en-GB"));
        assert_eq!(transcribe_language("pt"), Some("pt-BR"));
        assert_eq!(transcribe_language("xx"), None);
        assert_eq!(transcribe_language("en-XX"), None);
        assert_eq!(iso_language("zh-TW"), "zh");
        for (iso, codes) in LANGUAGES {
            for c in *codes {
                assert_eq!(iso_language(c), *iso);
                assert_eq!(transcribe_language(c), Some(*c));
            }
        }
    }

    fn wr(word: &str, start: f64, end: f64) -> WordRecord {
        WordRecord {
            word: word.into(),
            start,
            end,
            probability: 0.875,
            speaker: None,
        }
    }

    #[test]
    fn job_names_are_what_transcribe_accepts() {
        assert_eq!(job_name("3f0c1d2e-8a41.x_y"), "3f0c1d2e-8a41.x_y");
        assert_eq!(job_name("team call (final)"), "team-call--final-");
        assert_eq!(job_name("réunion"), "r-union");
        assert_eq!(job_name("  "), "transcript");
        assert_eq!(job_name(&"a".repeat(300)).len(), MAX_JOB_NAME_LEN);
        let r = TranscriptRecord {
            text: String::new(),
            language: String::new(),
            duration: 0.0,
            model: "m".into(),
            segments: vec![],
            formats: Default::default(),
        };
        assert_eq!(write("my talk", &r).job_name, "my-talk");
    }

    #[test]
    fn languages_transcribe_lacks_are_left_out() {
        let mut r = parse(doc(&sample_items(), "").as_bytes()).unwrap();
        for (lang, want) in [("haw", None), ("", None), ("de", Some("de-DE"))] {
            r.language = lang.into();
            assert_eq!(write("j", &r).results.language_code.as_deref(), want);
        }
    }

    #[test]
    fn writer_handles_every_kind_of_punctuated_word() {
        let words = vec![
            wr("\"Well,", 0.0, 0.4),
            wr("the", 0.5, 0.6),
            wr("U.S.", 0.6, 1.0),
            wr("launch?!", 1.0, 1.5),
            wr("...", 1.5, 1.6),
            wr("10,000", 1.6, 2.0),
            wr("", 2.0, 2.0),
            wr("done.\"", 2.0, 2.5),
        ];
        let r = TranscriptRecord {
            text: "\"Well, the U.S. launch?! ... 10,000 done.\"".into(),
            language: "en".into(),
            duration: 3.0,
            model: "tiny.en".into(),
            segments: vec![SegmentRecord {
                start: 0.0,
                end: 2.5,
                text: "\"Well, the U.S. launch?! ... 10,000 done.\"".into(),
                words,
                speaker: None,
            }],
            formats: Default::default(),
        };
        let out = write("j", &r);
        let items: Vec<(ItemType, &str)> = out
            .results
            .items
            .iter()
            .map(|i| (i.kind, i.alternatives[0].content.as_str()))
            .collect();
        use ItemType::*;
        assert_eq!(
            items,
            [
                (Pronunciation, "\"Well"),
                (Punctuation, ","),
                (Pronunciation, "the"),
                (Pronunciation, "U.S"),
                (Punctuation, "."),
                (Pronunciation, "launch"),
                (Punctuation, "?"),
                (Punctuation, "!"),
                (Pronunciation, "..."),
                (Pronunciation, "10,000"),
                (Pronunciation, "done.\""),
            ]
        );
        // Ids run in order; the segment names all of them.
        let ids: Vec<u64> = out.results.items.iter().map(|i| i.id.unwrap()).collect();
        assert_eq!(ids, (0..11).collect::<Vec<_>>());
        assert_eq!(out.results.audio_segments[0].items, ids);
        assert_eq!(
            out.results.items[3].alternatives[0].confidence,
            NumStr("0.875".into())
        );
        // Back: the same words (the empty one was never spoken).
        let back = parse(&serde_json::to_vec(&out).unwrap()).unwrap();
        let mut want = r.segments[0].words.clone();
        want.retain(|w| !w.word.is_empty());
        assert_eq!(back.segments[0].words, want);
        assert_eq!(back.segments[0].text, r.segments[0].text);
    }

    #[test]
    fn writer_splits_punctuation_and_round_trips() {
        let r = parse(doc(&sample_items(), r#","language_code":"en-US""#).as_bytes()).unwrap();
        let out = write("job-1", &r);
        assert_eq!(out.status, "COMPLETED");
        assert_eq!(out.results.language_code.as_deref(), Some("en-US"));
        let kinds: Vec<_> = out.results.items.iter().map(|i| i.kind).collect();
        use ItemType::*;
        assert_eq!(
            kinds,
            [
                Pronunciation,
                Pronunciation,
                Punctuation,
                Pronunciation,
                Punctuation
            ]
        );
        assert_eq!(
            out.results.items[1].start_time,
            Some(NumStr("0.800".into()))
        );
        assert_eq!(out.results.items[2].start_time, None);
        assert_eq!(out.results.audio_segments[1].items, [3, 4]);
        let back = parse(&serde_json::to_vec(&out).unwrap()).unwrap();
        assert_eq!(back.segments, r.segments);
        assert_eq!(back.text, r.text);
        assert_eq!(back.language, "en");
    }
    fn spk(w: WordRecord, s: &str) -> WordRecord {
        WordRecord {
            speaker: Some(s.into()),
            ..w
        }
    }

    /// Two segments: SPEAKER_00 says "Hi there.", then SPEAKER_01 says
    /// "Bye?" and SPEAKER_00 answers "Yes." inside the second segment.
    fn diarized_record() -> TranscriptRecord {
        TranscriptRecord {
            text: "Hi there. Bye? Yes.".into(),
            language: "en".into(),
            duration: 3.0,
            model: "tiny.en".into(),
            segments: vec![
                SegmentRecord {
                    start: 0.5,
                    end: 1.2,
                    text: "Hi there.".into(),
                    words: vec![
                        spk(wr("Hi", 0.5, 0.8), "SPEAKER_00"),
                        spk(wr("there.", 0.8, 1.2), "SPEAKER_00"),
                    ],
                    speaker: Some("SPEAKER_00".into()),
                },
                SegmentRecord {
                    start: 2.0,
                    end: 3.0,
                    text: "Bye? Yes.".into(),
                    words: vec![
                        spk(wr("Bye?", 2.0, 2.4), "SPEAKER_01"),
                        spk(wr("Yes.", 2.5, 3.0), "SPEAKER_00"),
                    ],
                    speaker: Some("SPEAKER_01".into()),
                },
            ],
            formats: Default::default(),
        }
    }

    #[test]
    fn speaker_labels_map_both_ways() {
        assert_eq!(transcribe_speaker("SPEAKER_00").as_deref(), Some("spk_0"));
        assert_eq!(transcribe_speaker("SPEAKER_12").as_deref(), Some("spk_12"));
        assert_eq!(transcribe_speaker("SPEAKER_"), None);
        assert_eq!(transcribe_speaker("alice"), None);
        assert_eq!(earshot_speaker("spk_0"), "SPEAKER_00");
        assert_eq!(earshot_speaker("spk_12"), "SPEAKER_12");
        assert_eq!(earshot_speaker("spk_x"), "spk_x");
        // Other labels get free numbers; none collide.
        let mut r = diarized_record();
        r.segments[0].speaker = Some("alice".into());
        r.segments[0].words[0].speaker = Some("SPEAKER_0".into());
        let names = speaker_names(&r);
        assert_eq!(names["SPEAKER_00"], "spk_0");
        assert_eq!(names["SPEAKER_01"], "spk_1");
        let mut all: Vec<&String> = names.values().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), names.len(), "{names:?}");
    }

    #[test]
    fn writer_labels_speakers_as_transcribe_does() {
        let out = write("call", &diarized_record());
        let v = serde_json::to_value(&out).unwrap();
        let items = v["results"]["items"].as_array().unwrap();
        // Pronunciation items carry their word's speaker; punctuation none.
        let labels: Vec<(&str, Option<&str>)> = items
            .iter()
            .map(|i| {
                (
                    i["alternatives"][0]["content"].as_str().unwrap(),
                    i["speaker_label"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                ("Hi", Some("spk_0")),
                ("there", Some("spk_0")),
                (".", None),
                ("Bye", Some("spk_1")),
                ("?", None),
                ("Yes", Some("spk_0")),
                (".", None),
            ]
        );
        assert_eq!(v["results"]["audio_segments"][0]["speaker_label"], "spk_0");
        assert_eq!(v["results"]["audio_segments"][1]["speaker_label"], "spk_1");
        assert_eq!(
            v["results"]["speaker_labels"],
            serde_json::json!({
                "speakers": 2,
                "segments": [
                    {"start_time": "0.500", "end_time": "1.200", "speaker_label": "spk_0",
                     "items": [
                        {"start_time": "0.500", "end_time": "0.800", "speaker_label": "spk_0"},
                        {"start_time": "0.800", "end_time": "1.200", "speaker_label": "spk_0"}]},
                    {"start_time": "2.000", "end_time": "2.400", "speaker_label": "spk_1",
                     "items": [
                        {"start_time": "2.000", "end_time": "2.400", "speaker_label": "spk_1"}]},
                    {"start_time": "2.500", "end_time": "3.000", "speaker_label": "spk_0",
                     "items": [
                        {"start_time": "2.500", "end_time": "3.000", "speaker_label": "spk_0"}]},
                ]
            })
        );
        // Undiarized: not a trace of speakers.
        let mut plain = diarized_record();
        for s in &mut plain.segments {
            s.speaker = None;
            s.words.iter_mut().for_each(|w| w.speaker = None);
        }
        let body = serde_json::to_string(&write("call", &plain)).unwrap();
        assert!(!body.contains("speaker"), "{body}");
    }

    #[test]
    fn speakers_round_trip_through_write_and_parse() {
        let r = diarized_record();
        let back = parse(&serde_json::to_vec(&write("call", &r)).unwrap()).unwrap();
        assert_eq!(back.segments, r.segments);
        // A segment labelled only through its words takes the main one.
        let mut r = diarized_record();
        r.segments[0].speaker = None;
        let back = parse(&serde_json::to_vec(&write("call", &r)).unwrap()).unwrap();
        assert_eq!(back.segments[0].speaker.as_deref(), Some("SPEAKER_00"));
    }

    fn labelled(item: String, label: &str) -> String {
        format!(
            "{},\"speaker_label\":\"{label}\"}}",
            item.strip_suffix('}').unwrap()
        )
    }

    #[test]
    fn transcribe_speaker_labels_are_read_onto_words_and_segments() {
        // Labels on the items (current outputs), no audio_segments.
        let items = [
            labelled(word(0, "Hi", "0.5", "0.8"), "spk_1"),
            labelled(word(1, "there", "0.8", "1.2"), "spk_1"),
            punct(2, "."),
            labelled(word(3, "Bye", "2.0", "2.4"), "spk_0"),
            punct(4, "?"),
        ]
        .join(",");
        let r = parse(doc(&items, "").as_bytes()).unwrap();
        assert_eq!(r.segments[0].speaker.as_deref(), Some("SPEAKER_01"));
        assert_eq!(
            r.segments[0].words[1].speaker.as_deref(),
            Some("SPEAKER_01")
        );
        assert_eq!(r.segments[1].speaker.as_deref(), Some("SPEAKER_00"));
        assert_eq!(
            r.segments[1].words[0].speaker.as_deref(),
            Some("SPEAKER_00")
        );
        // Older outputs: items unlabelled, speakers only in the turns.
        let turns = r#","speaker_labels":{"channel_label":"ch_0","speakers":2,"segments":[
            {"start_time":"0.5","end_time":"1.2","speaker_label":"spk_1","items":[
              {"start_time":"0.5","end_time":"0.8","speaker_label":"spk_1"},
              {"start_time":"0.8","end_time":"1.2","speaker_label":"spk_1"}]},
            {"start_time":"2.0","end_time":"2.4","speaker_label":"spk_0","items":[
              {"start_time":"2.0","end_time":"2.4","speaker_label":"spk_0"}]}]}"#;
        let old = parse(doc(&sample_items(), turns).as_bytes()).unwrap();
        assert_eq!(old.segments, r.segments);
        // A speaker_labels of a shape earshot does not know is no error.
        let odd =
            parse(doc(&sample_items(), r#","speaker_labels":{"segments":7}"#).as_bytes()).unwrap();
        assert!(odd.segments.iter().all(|s| s.speaker.is_none()));
    }
}
