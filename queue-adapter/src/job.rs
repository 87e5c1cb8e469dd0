//! The job contract: what an API service puts on the queue, and the record
//! the worker writes back. Version 1; the JSON Schema is
//! `queue-adapter/job.schema.json` and the README documents both.
//!
//! Parsing is strict about meaning (version, task, locations, ids) and
//! lenient about unknown fields, so a newer producer can add optional
//! fields without breaking older workers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{QueueError, Result};
use crate::location::Location;

/// The only schema version this worker understands.
pub const JOB_SCHEMA_VERSION: u32 = 1;

/// Message attribute that carries the task type (one queue carries all
/// kinds; routers and filters can read it without parsing the body).
pub const TASK_ATTRIBUTE: &str = "task";
/// Message attribute that carries the schema version.
pub const VERSION_ATTRIBUTE: &str = "schema_version";

/// What a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskKind {
    #[serde(rename = "transcribe")]
    Transcribe,
    #[serde(rename = "summarize")]
    Summarize,
    #[serde(rename = "transcribe+summarize")]
    TranscribeSummarize,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Transcribe => "transcribe",
            TaskKind::Summarize => "summarize",
            TaskKind::TranscribeSummarize => "transcribe+summarize",
        }
    }
    pub fn needs_audio(self) -> bool {
        !matches!(self, TaskKind::Summarize)
    }
    pub fn needs_summary(self) -> bool {
        !matches!(self, TaskKind::Transcribe)
    }
}

impl std::str::FromStr for TaskKind {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "transcribe" => Ok(TaskKind::Transcribe),
            "summarize" => Ok(TaskKind::Summarize),
            "transcribe+summarize" => Ok(TaskKind::TranscribeSummarize),
            other => Err(QueueError::BadMessage(format!(
                "unknown task {other:?} (expected transcribe, summarize or transcribe+summarize)"
            ))),
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-job settings; every field is optional and the worker's own
/// configuration fills the gaps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Whisper model (catalog name); must be one the worker serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// LLM for the summary; must be the one the worker serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_model: Option<String>,
    /// Spoken language (ISO 639-1); detected when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Text that conditions the first window (names, jargon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Extra renderings of the transcript stored in the result:
    /// `text`, `json`, `srt`, `vtt`, `verbose_json`, `transcribe` (Amazon
    /// Transcribe's output JSON), `rttm` (speaker turns) and
    /// `diarized_json` (OpenAI's diarized response); the speaker-aware
    /// ones need a diarized transcript to say anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<String>,
    /// Most tokens in the summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_summary_tokens: Option<usize>,
    /// Time every word: the record's segments carry `words`. Implied by
    /// the `transcribe` format and by `max_words_per_cue` (see
    /// [`JobOptions::wants_words`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub word_timestamps: bool,
    /// `srt` and `vtt` renderings: at most this many words per cue, each
    /// cue timed by its words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_words_per_cue: Option<usize>,
    /// Transcribe only the speech Silero VAD finds (faster-whisper's
    /// `vad_filter`): silence and music are skipped, times stay on the
    /// recording's timeline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vad: bool,
    /// Label who speaks when: every segment and word of the record gets a
    /// `speaker` (`SPEAKER_00`, …). Implied by any speaker count below.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub diarize: bool,
    /// Exactly this many speakers (1–32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_speakers: Option<usize>,
    /// At least this many speakers (1–32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_speakers: Option<usize>,
    /// At most this many speakers (1–32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_speakers: Option<usize>,
}

/// Most speakers a job may ask for.
pub const MAX_SPEAKERS: usize = 32;

impl JobOptions {
    /// Whether the job asks for speaker labels.
    pub fn wants_speakers(&self) -> bool {
        self.diarize
            || self.num_speakers.is_some()
            || self.min_speakers.is_some()
            || self.max_speakers.is_some()
    }

    /// Whether the job needs word timings: asked for, or implied by a
    /// rendering made of words (`transcribe`, word-level cues).
    pub fn wants_words(&self) -> bool {
        self.word_timestamps
            || self.wants_speakers()
            || self.formats.iter().any(|f| f == "transcribe")
            || (self.max_words_per_cue.is_some()
                && self.formats.iter().any(|f| f == "srt" || f == "vtt"))
    }
}

/// One unit of work, as it travels in the message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub version: u32,
    pub job_id: String,
    pub task: TaskKind,
    /// Audio location (`s3://bucket/key` or a local path) for the
    /// transcribing tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
    /// Transcript location (plain text, or earshot's transcript JSON) for
    /// `summarize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Inline transcript text for `summarize` (instead of `transcript`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default)]
    pub options: JobOptions,
    /// Result prefix (`s3://bucket/prefix/` or a local folder); the record
    /// goes to `<result>/<job_id>.json`. The worker's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When the producer enqueued it (RFC 3339), for latency metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
}

/// Longest accepted job id; ids become object keys and file names.
pub const MAX_JOB_ID_LEN: usize = 128;

/// Ids are used in keys and paths, so only `[A-Za-z0-9._-]`, not starting
/// with a dot.
pub fn validate_job_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_JOB_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::BadMessage(format!(
            "job_id {id:?} must be 1-{MAX_JOB_ID_LEN} characters of [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}

const FORMATS: [&str; 8] = [
    "json",
    "text",
    "srt",
    "vtt",
    "verbose_json",
    "transcribe",
    "rttm",
    "diarized_json",
];

impl Job {
    /// A new version-1 job with a fresh id.
    pub fn new(task: TaskKind) -> Self {
        Job {
            version: JOB_SCHEMA_VERSION,
            job_id: uuid::Uuid::new_v4().to_string(),
            task,
            audio: None,
            transcript: None,
            text: None,
            options: JobOptions::default(),
            result: None,
            submitted_at: Some(crate::now_rfc3339()),
        }
    }

    /// Parses and validates a message body. `attributes` are the message
    /// attributes; a `task` attribute that disagrees with the body is an
    /// error (a producer bug that routing would otherwise hide).
    pub fn parse(body: &str, attributes: &BTreeMap<String, String>) -> Result<Job> {
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| QueueError::BadMessage(format!("body is not JSON: {e}")))?;
        match value.get("version") {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(JOB_SCHEMA_VERSION as u64) => {
            }
            Some(v) => {
                return Err(QueueError::BadMessage(format!(
                "unsupported schema version {v} (this worker reads version {JOB_SCHEMA_VERSION})"
            )))
            }
            None => return Err(QueueError::BadMessage("missing field `version`".into())),
        }
        let job: Job =
            serde_json::from_value(value).map_err(|e| QueueError::BadMessage(e.to_string()))?;
        job.validate()?;
        if let Some(attr) = attributes.get(TASK_ATTRIBUTE) {
            let attr_task: TaskKind = attr.parse()?;
            if attr_task != job.task {
                return Err(QueueError::BadMessage(format!(
                    "message attribute task={attr_task} disagrees with body task={}",
                    job.task
                )));
            }
        }
        Ok(job)
    }

    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<()> {
        validate_job_id(&self.job_id)?;
        let bad = |m: String| Err(QueueError::BadMessage(m));
        match self.task {
            TaskKind::Transcribe | TaskKind::TranscribeSummarize => match &self.audio {
                Some(a) => {
                    Location::parse(a)?;
                }
                None => return bad(format!("task {} needs `audio`", self.task)),
            },
            TaskKind::Summarize => match (&self.transcript, &self.text) {
                (Some(_), Some(_)) => {
                    return bad("give `transcript` or `text`, not both".into());
                }
                (Some(t), None) => {
                    Location::parse(t)?;
                }
                (None, Some(t)) if t.trim().is_empty() => return bad("`text` is empty".into()),
                (None, Some(_)) => {}
                (None, None) => return bad("task summarize needs `transcript` or `text`".into()),
            },
        }
        if let Some(r) = &self.result {
            Location::parse(r)?;
        }
        for f in &self.options.formats {
            if !FORMATS.contains(&f.as_str()) {
                return bad(format!(
                    "unknown output format {f:?} (expected one of {})",
                    FORMATS.join(", ")
                ));
            }
        }
        if self.options.max_summary_tokens == Some(0) {
            return bad("options.max_summary_tokens must be at least 1".into());
        }
        if self.options.max_words_per_cue == Some(0) {
            return bad("options.max_words_per_cue must be at least 1".into());
        }
        let o = &self.options;
        for (name, n) in [
            ("num_speakers", o.num_speakers),
            ("min_speakers", o.min_speakers),
            ("max_speakers", o.max_speakers),
        ] {
            if n.is_some_and(|n| !(1..=MAX_SPEAKERS).contains(&n)) {
                return bad(format!("options.{name} must be from 1 to {MAX_SPEAKERS}"));
            }
        }
        if let (Some(lo), Some(hi)) = (o.min_speakers, o.max_speakers) {
            if lo > hi {
                return bad("options.min_speakers is above options.max_speakers".into());
            }
        }
        if let Some(n) = o.num_speakers {
            if o.min_speakers.is_some_and(|lo| n < lo) || o.max_speakers.is_some_and(|hi| n > hi) {
                return bad("options.num_speakers is outside min_speakers..max_speakers".into());
            }
        }
        Ok(())
    }

    /// Body and attributes for sending.
    pub fn to_message(&self) -> (String, Vec<(String, String)>) {
        let body = serde_json::to_string(self).expect("a Job always serializes");
        let attrs = vec![
            (TASK_ATTRIBUTE.to_string(), self.task.as_str().to_string()),
            (VERSION_ATTRIBUTE.to_string(), self.version.to_string()),
        ];
        (body, attrs)
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Succeeded,
    Failed,
}

/// One word with its timing: filled by Amazon Transcribe (per
/// pronunciation item) and by local word timestamps, in one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordRecord {
    /// The word as spoken, with any punctuation that follows it attached
    /// (`"launch,"`), and no surrounding spaces.
    pub word: String,
    pub start: f64,
    pub end: f64,
    /// Confidence in [0, 1] (Transcribe's `confidence`, Whisper's mean
    /// token probability).
    pub probability: f64,
    /// Who spoke the word (`SPEAKER_00`, …) when the transcript was
    /// diarized. Absent otherwise, and skipped when `None`, so records
    /// written before diarization existed parse and undiarized records
    /// stay byte-identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// One transcript segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Word timings, when the backend produced them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<WordRecord>,
    /// Who spoke the segment (`SPEAKER_00`, …) when the transcript was
    /// diarized; absent (and not serialized) otherwise, as on
    /// [`WordRecord::speaker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// The transcript part of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptRecord {
    pub text: String,
    pub language: String,
    /// Audio duration in seconds.
    pub duration: f64,
    pub model: String,
    pub segments: Vec<SegmentRecord>,
    /// Renderings asked for in `options.formats` (format → document).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub formats: BTreeMap<String, String>,
}

/// The summary part of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub text: String,
    pub model: String,
    pub chunks: usize,
    pub levels: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// `bad_message`, `bad_audio`, `bad_option`, `not_found`, `too_large`,
    /// `model`.
    pub kind: String,
    pub message: String,
}

/// What the worker writes to `<result>/<job_id>.json`. A redelivered job
/// writes the same key again, so there is never more than one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub version: u32,
    pub job_id: String,
    pub status: JobStatus,
    /// Absent only when the message was too broken to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<TranscriptRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FailureRecord>,
    /// Queue message id of the delivery that wrote this record.
    pub message_id: String,
    /// Which delivery of the message this was (1 = first).
    pub attempt: u32,
    /// `host/pid` of the worker.
    pub worker: String,
    pub finished_at: String,
    /// Seconds spent per stage (`fetch`, `transcribe`, `summarize`).
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
    /// Which backend ran each stage: `speech` → `local` | `transcribe`,
    /// `summary` → `local` | `bedrock`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backend: BTreeMap<String, String>,
    /// Estimated cost per stage in US dollars (`speech`, `summary`, and
    /// `total`), from the committed price table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cost_usd: BTreeMap<String, f64>,
    /// The other backend's run of a shadowed job (`--shadow-rate`): word
    /// error rate between the transcripts, the summaries' sizes, its own
    /// cost. Added after the record was first written; never the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<serde_json::Value>,
}

impl ResultRecord {
    /// File name of a job's record inside the result prefix.
    pub fn key_for(job_id: &str) -> String {
        format!("{job_id}.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_attrs() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn err(body: &str) -> String {
        match Job::parse(body, &no_attrs()) {
            Ok(j) => panic!("accepted {body}: {j:?}"),
            Err(e) => {
                assert!(e.is_permanent(), "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn round_trips_through_the_message_form() {
        let mut job = Job::new(TaskKind::TranscribeSummarize);
        job.audio = Some("s3://bucket/audio/a.wav".into());
        job.result = Some("s3://bucket/results/".into());
        job.options.language = Some("en".into());
        job.options.formats = vec!["srt".into()];
        let (body, attrs) = job.to_message();
        let attrs: BTreeMap<_, _> = attrs.into_iter().collect();
        assert_eq!(attrs["task"], "transcribe+summarize");
        assert_eq!(Job::parse(&body, &attrs).unwrap(), job);
    }

    #[test]
    fn malformed_messages_get_clear_permanent_errors() {
        assert!(err("{not json").contains("not JSON"));
        assert!(
            err(r#"{"job_id":"a","task":"transcribe","audio":"s3://b/k"}"#)
                .contains("missing field `version`")
        );
        assert!(
            err(r#"{"version":2,"job_id":"a","task":"transcribe","audio":"s3://b/k"}"#)
                .contains("unsupported schema version 2")
        );
        assert!(
            err(r#"{"version":1,"job_id":"a","task":"translate","audio":"s3://b/k"}"#)
                .contains("unknown variant `translate`")
        );
        assert!(err(r#"{"version":1,"job_id":"a","task":"transcribe"}"#).contains("needs `audio`"));
        assert!(
            err(r#"{"version":1,"job_id":"../x","task":"transcribe","audio":"/a.wav"}"#)
                .contains("job_id")
        );
        assert!(
            err(r#"{"version":1,"job_id":"a","task":"transcribe","audio":"s3://"}"#)
                .contains("bucket")
        );
        assert!(err(r#"{"version":1,"job_id":"a","task":"summarize"}"#)
            .contains("`transcript` or `text`"));
        assert!(err(r#"{"version":1,"job_id":"a","task":"transcribe","audio":"/a.wav","options":{"formats":["docx"]}}"#)
            .contains("docx"));
    }

    #[test]
    fn speaker_options_parse_validate_and_imply_word_timings() {
        let job = |opts: &str| {
            format!(
                r#"{{"version":1,"job_id":"a","task":"transcribe","audio":"/a.wav","options":{opts}}}"#
            )
        };
        let j = Job::parse(&job(r#"{"diarize":true}"#), &no_attrs()).unwrap();
        assert!(j.options.wants_speakers() && j.options.wants_words());
        let j = Job::parse(&job(r#"{"num_speakers":2}"#), &no_attrs()).unwrap();
        assert!(j.options.wants_speakers());
        assert_eq!(j.options.num_speakers, Some(2));
        let j = Job::parse(&job("{}"), &no_attrs()).unwrap();
        assert!(!j.options.wants_speakers() && !j.options.wants_words());
        assert!(err(&job(r#"{"num_speakers":0}"#)).contains("num_speakers must be from 1"));
        assert!(err(&job(r#"{"max_speakers":33}"#)).contains("max_speakers must be from 1"));
        assert!(err(&job(r#"{"min_speakers":3,"max_speakers":2}"#)).contains("above"));
        assert!(err(&job(r#"{"num_speakers":5,"max_speakers":4}"#)).contains("outside"));
        assert!(err(&job(r#"{"num_speakers":-1}"#)).contains("-1"));
    }

    #[test]
    fn word_options_parse_validate_and_imply_word_timings() {
        let parse = |opts: &str| {
            Job::parse(
                &format!(
                    r#"{{"version":1,"job_id":"a","task":"transcribe","audio":"/a.wav","options":{opts}}}"#
                ),
                &no_attrs(),
            )
        };
        let j = parse(r#"{"word_timestamps":true,"formats":["verbose_json"]}"#).unwrap();
        assert!(j.options.word_timestamps && j.options.wants_words());
        let j = parse(r#"{"formats":["transcribe"]}"#).unwrap();
        assert!(!j.options.word_timestamps && j.options.wants_words());
        let j = parse(r#"{"formats":["srt"],"max_words_per_cue":3}"#).unwrap();
        assert_eq!(j.options.max_words_per_cue, Some(3));
        assert!(j.options.wants_words());
        let j = parse(r#"{"formats":["json"],"max_words_per_cue":3}"#).unwrap();
        assert!(!j.options.wants_words(), "no captions to cut");
        assert!(!parse("{}").unwrap().options.wants_words());
        let e = parse(r#"{"max_words_per_cue":0}"#).unwrap_err().to_string();
        assert!(e.contains("max_words_per_cue"), "{e}");
        assert!(parse(r#"{"word_timestamps":"yes"}"#).is_err());
        // Off and unset fields stay out of the message (older workers).
        let mut job = Job::new(TaskKind::Transcribe);
        job.audio = Some("/a.wav".into());
        assert!(!job.to_message().0.contains("word"));
        job.options.word_timestamps = true;
        let (body, attrs) = job.to_message();
        assert!(body.contains(r#""word_timestamps":true"#), "{body}");
        let attrs: BTreeMap<_, _> = attrs.into_iter().collect();
        assert_eq!(Job::parse(&body, &attrs).unwrap(), job);
    }

    #[test]
    fn attribute_must_agree_with_the_body() {
        let body = r#"{"version":1,"job_id":"a","task":"transcribe","audio":"/a.wav"}"#;
        let mut attrs = no_attrs();
        attrs.insert("task".into(), "summarize".into());
        let e = Job::parse(body, &attrs).unwrap_err();
        assert!(e.to_string().contains("disagrees"), "{e}");
        attrs.insert("task".into(), "transcribe".into());
        assert!(Job::parse(body, &attrs).is_ok());
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let body = r#"{"version":1,"job_id":"a","task":"summarize","text":"hello","priority":5}"#;
        assert_eq!(
            Job::parse(body, &no_attrs()).unwrap().text.as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn records_without_speakers_parse_and_stay_byte_identical() {
        // A record stored before diarization existed.
        let old = r#"{"text":"Hi there.","language":"en","duration":1.5,"model":"tiny.en","segments":[{"start":0.0,"end":1.5,"text":"Hi there.","words":[{"word":"Hi","start":0.0,"end":0.5,"probability":0.9},{"word":"there.","start":0.6,"end":1.5,"probability":0.8}]}]}"#;
        let r: TranscriptRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.segments[0].speaker, None);
        assert!(r.segments[0].words.iter().all(|w| w.speaker.is_none()));
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
        // Diarized: the labels are written and read back.
        let mut d = r.clone();
        d.segments[0].speaker = Some("SPEAKER_01".into());
        d.segments[0].words[1].speaker = Some("SPEAKER_01".into());
        let body = serde_json::to_string(&d).unwrap();
        assert!(body.contains(r#""speaker":"SPEAKER_01""#), "{body}");
        assert_eq!(serde_json::from_str::<TranscriptRecord>(&body).unwrap(), d);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["segments"][0]["words"][0].get("speaker").is_none());
    }

    #[test]
    fn speaker_formats_are_accepted() {
        for f in ["rttm", "diarized_json"] {
            let body = format!(
                r#"{{"version":1,"job_id":"a","task":"transcribe","audio":"/a.wav","options":{{"formats":["{f}"]}}}}"#
            );
            assert!(Job::parse(&body, &no_attrs()).is_ok(), "{f}");
        }
        let e = err(
            r#"{"version":1,"job_id":"a","task":"transcribe","audio":"/a.wav","options":{"formats":["docx"]}}"#,
        );
        assert!(e.contains("rttm") && e.contains("diarized_json"), "{e}");
    }

    #[test]
    fn examples_in_the_repo_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let body = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let parsed = Job::parse(&body, &no_attrs());
            if name.starts_with("bad-") {
                assert!(parsed.is_err(), "{name} should be rejected");
            } else {
                parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            n += 1;
        }
        assert!(n >= 6, "expected the example jobs in {}", dir.display());
    }
}
