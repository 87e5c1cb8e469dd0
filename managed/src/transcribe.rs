//! Speech through Amazon Transcribe batch jobs, for a worker in the
//! platform's managed phase (same queue, same job contract, same records as
//! the local Whisper engine).
//!
//! A job is idempotent on its earshot job id: the Transcribe job name is
//! derived from it ([`job_name`]), and [`TranscribeBackend::transcribe`]
//! looks the name up before starting anything, so a redelivered message
//! (a worker killed mid-job, a lease that ran out) picks up the running or
//! finished Transcribe job instead of starting, and paying for, another.
//! Polling is paced across all jobs of a backend so that a full worker stays
//! well under Transcribe's request quotas. The finished transcript is read
//! from the output bucket through earshot's [`Store`] (so S3, moto and any
//! S3-compatible endpoint work alike) and mapped by
//! [`crate::transcribe_json::parse`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_transcribe::operation::get_transcription_job::GetTranscriptionJobError;
use aws_sdk_transcribe::operation::start_transcription_job::StartTranscriptionJobError;
use aws_sdk_transcribe::types::{
    LanguageCode, Media, MediaFormat, Settings, TranscriptionJob, TranscriptionJobStatus,
};
use aws_smithy_runtime_api::client::result::SdkError;
use earshot_queue_adapter::job::TranscriptRecord;
use earshot_queue_adapter::{Location, QueueError, Store};

use crate::error::{status_is_transient, transport, HttpResponse, ManagedError, Transport};
use crate::transcribe_json;

/// Transcribe's batch limit on media length (4 hours).
pub const MAX_MEDIA_SECONDS: f64 = 14_400.0;
/// Transcribe's batch limit on media size (2 GB).
pub const MAX_MEDIA_BYTES: u64 = 2_000_000_000;
/// Transcribe bills at least this many seconds per job.
pub const MIN_BILLED_SECONDS: u64 = 15;
/// Longest Transcribe job name.
pub const MAX_JOB_NAME_LEN: usize = 200;
/// Largest transcript document read back (a 4 h job's is tens of MB).
const MAX_TRANSCRIPT_BYTES: u64 = 512 << 20;

const SERVICE: &str = "transcribe";

/// Seconds Transcribe bills for audio of `duration` seconds: whole
/// seconds, rounded up, at least [`MIN_BILLED_SECONDS`]. The one place the
/// billing rule lives; dollars come from the price table.
pub fn billed_seconds(duration: f64) -> u64 {
    let secs = if duration.is_finite() && duration > 0.0 {
        duration.ceil() as u64
    } else {
        0
    };
    secs.max(MIN_BILLED_SECONDS)
}

/// The Transcribe job name for an earshot job: `earshot-<job id>`, limited
/// to Transcribe's `^[0-9a-zA-Z._-]+$` and 200 characters. Valid job ids
/// (`[A-Za-z0-9._-]`, ≤128) map one to one; anything else is sanitized and
/// gets a hash of the original so two ids cannot share a name.
pub fn job_name(job_id: &str) -> String {
    let clean: String = job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = format!("earshot-{clean}");
    if clean == job_id && name.len() <= MAX_JOB_NAME_LEN {
        return name;
    }
    let hash = format!("-{:016x}", fnv1a(job_id.as_bytes()));
    let keep = MAX_JOB_NAME_LEN - hash.len();
    let mut name: String = name.chars().take(keep).collect();
    name.push_str(&hash);
    name
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `prefix` as a key prefix: empty, or ending in `/`.
fn folder(prefix: &str) -> String {
    let p = prefix.trim_start_matches('/');
    if p.is_empty() || p.ends_with('/') {
        p.to_owned()
    } else {
        format!("{p}/")
    }
}

/// The `OutputKey` a job's transcript is written to: `<prefix><name>.json`.
pub fn output_key(prefix: &str, job_name: &str) -> String {
    format!("{}{job_name}.json", folder(prefix))
}

/// Refuses media over Transcribe's limits before a job is started (a
/// permanent `too_large` failure). Unknown sizes pass.
pub fn check_media_limits(
    duration_seconds: Option<f64>,
    bytes: Option<u64>,
) -> Result<(), ManagedError> {
    if let Some(d) = duration_seconds {
        if d > MAX_MEDIA_SECONDS {
            return Err(ManagedError::TooLarge(format!(
                "the audio is {d:.0} s long; Amazon Transcribe takes at most {MAX_MEDIA_SECONDS:.0} s (4 hours)"
            )));
        }
    }
    if let Some(b) = bytes {
        if b > MAX_MEDIA_BYTES {
            return Err(ManagedError::TooLarge(format!(
                "the audio is {b} bytes; Amazon Transcribe takes at most {MAX_MEDIA_BYTES} bytes (2 GB)"
            )));
        }
    }
    Ok(())
}

/// Where a `TranscriptFileUri` points, for reading it through S3 rather
/// than over HTTP: `https://s3.<region>.amazonaws.com/<bucket>/<key>`
/// (path style), `https://<bucket>.s3.<region>.amazonaws.com/<key>`
/// (virtual-hosted), with or without a presigning query, or `s3://`.
/// `None` for anything else.
pub fn s3_location_of_uri(uri: &str) -> Option<Location> {
    if uri.starts_with("s3://") {
        return Location::parse(uri).ok();
    }
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let rest = rest.split(['?', '#']).next()?;
    let (host, path) = rest.split_once('/')?;
    let host = host.to_ascii_lowercase();
    let path = percent_decode(path)?;
    let (bucket, key) = if host.starts_with("s3.") || host.starts_with("s3-") {
        let (b, k) = path.split_once('/')?;
        (b.to_owned(), k.to_owned())
    } else {
        let at = host.find(".s3.").or_else(|| host.find(".s3-"))?;
        (host[..at].to_owned(), path)
    };
    if bucket.is_empty() || key.is_empty() {
        return None;
    }
    Some(Location::S3 { bucket, key })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Transcribe reads media only from S3: a local (or `file://`) input is
/// uploaded to `s3://<bucket>/<prefix>inputs/<job id>/<file name>` (the key
/// `earshot submit` uses), and its URI returned; an `s3://` input is
/// returned as it is. The upload is keyed by job id, so a retry overwrites
/// rather than duplicates. Inputs over [`MAX_MEDIA_BYTES`] are refused.
pub async fn ensure_s3_media(
    store: &Store,
    location: &Location,
    bucket: &str,
    prefix: &str,
    job_id: &str,
) -> Result<String, ManagedError> {
    match location {
        Location::S3 { .. } => Ok(location.to_string()),
        Location::Local(path) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "audio".into());
            let bytes = store.get(location, MAX_MEDIA_BYTES).await?;
            let target = Location::S3 {
                bucket: bucket.to_owned(),
                key: format!("{}inputs/{job_id}/{name}", folder(prefix)),
            };
            store
                .put(&target, bytes, "application/octet-stream")
                .await?;
            Ok(target.to_string())
        }
    }
}

/// How often and how long to poll.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// First wait between `GetTranscriptionJob` calls of one job.
    pub initial: Duration,
    /// Each wait is this much longer than the one before...
    pub factor: f64,
    /// ...up to this.
    pub max: Duration,
    /// Give up (a transient error; the Transcribe job keeps running and a
    /// retry of the earshot job picks it up) after this long.
    pub timeout: Duration,
    /// `GetTranscriptionJob` calls per second across all jobs of one
    /// backend (Transcribe's default quota is 20).
    pub get_per_second: f64,
    /// `StartTranscriptionJob` calls per second (quota 10).
    pub start_per_second: f64,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            initial: Duration::from_millis(500),
            factor: 1.5,
            max: Duration::from_secs(10),
            timeout: Duration::from_secs(4 * 3600),
            get_per_second: 10.0,
            start_per_second: 5.0,
        }
    }
}

/// Where Transcribe writes transcripts, and how to poll.
#[derive(Debug, Clone)]
pub struct TranscribeConfig {
    /// `OutputBucketName`: always set, so the transcript lands in our
    /// bucket (readable through S3) rather than behind a presigned URL.
    pub output_bucket: String,
    /// Key prefix of the transcripts (`<prefix><job name>.json`).
    pub output_prefix: String,
    pub poll: PollConfig,
}

impl TranscribeConfig {
    pub fn new(output_bucket: impl Into<String>, output_prefix: impl Into<String>) -> Self {
        TranscribeConfig {
            output_bucket: output_bucket.into(),
            output_prefix: output_prefix.into(),
            poll: PollConfig::default(),
        }
    }
}

/// One piece of audio to transcribe.
#[derive(Debug, Clone, Default)]
pub struct SpeechRequest {
    /// The earshot job id; names the Transcribe job.
    pub job_id: String,
    /// `s3://bucket/key` of the media (see [`ensure_s3_media`]).
    pub media_uri: String,
    /// ISO 639-1 code (or a Transcribe code such as `en-GB`); `None`, or a
    /// language Transcribe lacks, asks Transcribe to identify it.
    pub language: Option<String>,
    /// Audio length, when known: checked against the 4 h limit and used
    /// for the billed seconds.
    pub duration_seconds: Option<f64>,
    /// Media size, when known: checked against the 2 GB limit.
    pub bytes: Option<u64>,
    /// Label speakers (`ShowSpeakerLabels`) with at most this many
    /// (`MaxSpeakerLabels`, clamped to Transcribe's 2–30); `None`: off.
    pub max_speakers: Option<usize>,
}

/// Transcribe's range for `MaxSpeakerLabels`.
pub const SPEAKER_LABELS_RANGE: std::ops::RangeInclusive<usize> = 2..=30;

/// A finished transcription.
#[derive(Debug, Clone)]
pub struct SpeechOutcome {
    /// The transcript, words included; `model` is `amazon-transcribe`.
    pub record: TranscriptRecord,
    /// The Transcribe job that made it.
    pub transcribe_job: String,
    /// True when the Transcribe job already existed (a redelivery, or a
    /// concurrent start): no new job was paid for by this call.
    pub reused: bool,
    /// Seconds Transcribe bills for it ([`billed_seconds`]).
    pub billed_seconds: u64,
}

/// What a `GetTranscriptionJob` answer means for us.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// QUEUED or IN_PROGRESS (or a status this SDK does not know yet).
    Running,
    /// COMPLETED, with `Transcript.TranscriptFileUri` when given.
    Completed { transcript_uri: Option<String> },
    /// FAILED, with `FailureReason`.
    Failed { reason: String },
}

impl JobState {
    /// Reads a job description.
    pub fn of(job: &TranscriptionJob) -> JobState {
        match job.transcription_job_status() {
            Some(TranscriptionJobStatus::Completed) => JobState::Completed {
                transcript_uri: job
                    .transcript()
                    .and_then(|t| t.transcript_file_uri())
                    .map(str::to_owned),
            },
            Some(TranscriptionJobStatus::Failed) => JobState::Failed {
                reason: job
                    .failure_reason()
                    .unwrap_or("no failure reason given")
                    .to_owned(),
            },
            _ => JobState::Running,
        }
    }

    /// A FAILED job as the permanent error the worker records (kind
    /// `managed`, Transcribe's reason in the message); `None` otherwise.
    pub fn failure(&self, job_name: &str) -> Option<ManagedError> {
        match self {
            JobState::Failed { reason } => Some(ManagedError::failed(
                SERVICE,
                "transcription job",
                format!("Transcribe job {job_name} FAILED: {reason}"),
            )),
            _ => None,
        }
    }
}

/// Spaces calls out so that all jobs together stay under a rate.
struct Pacer {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Pacer {
    fn new(per_second: f64) -> Self {
        let interval = if per_second.is_finite() && per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Pacer {
            interval,
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let delay = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot - now
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// Amazon Transcribe as earshot's speech backend.
pub struct TranscribeBackend {
    client: aws_sdk_transcribe::Client,
    store: Arc<Store>,
    config: TranscribeConfig,
    get_pacer: Pacer,
    start_pacer: Pacer,
}

impl TranscribeBackend {
    /// A backend on the standard AWS configuration (region, credentials,
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_TRANSCRIBE`).
    pub async fn from_env(store: Arc<Store>, config: TranscribeConfig) -> Self {
        let sdk = earshot_queue_adapter::aws_config().await;
        Self::new(&sdk, store, config)
    }

    /// A backend on an explicit SDK configuration. The service-specific
    /// endpoint variable still applies unless `sdk` sets an endpoint in
    /// code.
    pub fn new(sdk: &aws_config::SdkConfig, store: Arc<Store>, config: TranscribeConfig) -> Self {
        Self::with_client(aws_sdk_transcribe::Client::new(sdk), store, config)
    }

    pub fn with_client(
        client: aws_sdk_transcribe::Client,
        store: Arc<Store>,
        config: TranscribeConfig,
    ) -> Self {
        TranscribeBackend {
            get_pacer: Pacer::new(config.poll.get_per_second),
            start_pacer: Pacer::new(config.poll.start_per_second),
            client,
            store,
            config,
        }
    }

    pub fn config(&self) -> &TranscribeConfig {
        &self.config
    }

    /// Where the transcript of a Transcribe job is written.
    pub fn transcript_location(&self, job_name: &str) -> Location {
        Location::S3 {
            bucket: self.config.output_bucket.clone(),
            key: output_key(&self.config.output_prefix, job_name),
        }
    }

    /// Transcribes one piece of audio, reusing the job's Transcribe job
    /// when one exists, and waits for it.
    pub async fn transcribe(&self, req: SpeechRequest) -> Result<SpeechOutcome, ManagedError> {
        check_media_limits(req.duration_seconds, req.bytes)?;
        match Location::parse(&req.media_uri) {
            Ok(Location::S3 { .. }) => {}
            _ => {
                return Err(ManagedError::BadAudio(format!(
                    "Amazon Transcribe reads media from S3 only, not {:?} (upload it first)",
                    req.media_uri
                )))
            }
        }
        let name = job_name(&req.job_id);
        let deadline = Instant::now() + self.config.poll.timeout;

        let (mut job, reused) = match self.get(&name).await? {
            Some(job) => {
                let media = job.media().and_then(|m| m.media_file_uri());
                if media.is_some_and(|m| m != req.media_uri) {
                    return Err(ManagedError::failed(
                        SERVICE,
                        "StartTranscriptionJob",
                        format!(
                            "Transcribe job {name} already exists for other media ({}); job ids must be unique",
                            media.unwrap_or_default()
                        ),
                    ));
                }
                tracing::info!(job = %req.job_id, transcribe_job = %name, "reusing the existing Transcribe job");
                (Some(job), true)
            }
            None => (None, !self.start(&name, &req).await?),
        };

        let mut wait = self.config.poll.initial;
        let state = loop {
            if let Some(j) = &job {
                let state = JobState::of(j);
                if state != JobState::Running {
                    break state;
                }
            }
            if Instant::now() + wait > deadline {
                return Err(ManagedError::transient(
                    SERVICE,
                    "GetTranscriptionJob",
                    format!(
                        "Transcribe job {name} still running after {:?}; a retry picks it up",
                        self.config.poll.timeout
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
            wait = wait
                .mul_f64(self.config.poll.factor)
                .min(self.config.poll.max);
            job = Some(self.get(&name).await?.ok_or_else(|| {
                ManagedError::transient(
                    SERVICE,
                    "GetTranscriptionJob",
                    format!("Transcribe job {name} disappeared while running"),
                )
            })?);
        };
        let transcript_uri = match state {
            JobState::Completed { transcript_uri } => transcript_uri,
            failed => {
                return Err(failed
                    .failure(&name)
                    .unwrap_or_else(|| ManagedError::failed(SERVICE, "job", "unexpected state")))
            }
        };
        let mut record = self
            .read_transcript(&name, transcript_uri.as_deref())
            .await?;
        if record.language.is_empty() {
            let code = job
                .as_ref()
                .and_then(|j| j.language_code())
                .map(|c| c.as_str().to_owned())
                .or_else(|| req.language.clone())
                .unwrap_or_default();
            record.language = transcribe_json::iso_language(&code);
        }
        let billed = billed_seconds(req.duration_seconds.unwrap_or(record.duration));
        Ok(SpeechOutcome {
            record,
            transcribe_job: name,
            reused,
            billed_seconds: billed,
        })
    }

    /// Reads and maps a finished job's transcript.
    async fn read_transcript(
        &self,
        name: &str,
        uri: Option<&str>,
    ) -> Result<TranscriptRecord, ManagedError> {
        let expected = self.transcript_location(name);
        let loc = match uri.map(|u| (u, s3_location_of_uri(u))) {
            Some((_, Some(loc))) => loc,
            Some((u, None)) => {
                tracing::warn!(uri = u, fallback = %expected, "unrecognized TranscriptFileUri; reading the configured output location");
                expected
            }
            None => expected,
        };
        let bytes = match self.store.get(&loc, MAX_TRANSCRIPT_BYTES).await {
            Ok(b) => b,
            // Transcribe said COMPLETED: a missing file is the service's
            // (or a test's) lag, not the job's fault.
            Err(QueueError::NotFound(what)) => {
                return Err(ManagedError::transient(
                    SERVICE,
                    "read transcript",
                    format!("Transcribe job {name} is COMPLETED but {what} is missing"),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        transcribe_json::parse(&bytes)
            .map_err(|e| ManagedError::failed(SERVICE, "read transcript", format!("{loc}: {e}")))
    }

    /// The job, or `None` when Transcribe has no job of that name.
    async fn get(&self, name: &str) -> Result<Option<TranscriptionJob>, ManagedError> {
        self.get_pacer.wait().await;
        match self
            .client
            .get_transcription_job()
            .transcription_job_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.transcription_job),
            Err(e) => classify_get(e),
        }
    }

    /// Starts the job; `Ok(false)` when it turned out to exist already
    /// (another worker started it between our look-up and our start).
    async fn start(&self, name: &str, req: &SpeechRequest) -> Result<bool, ManagedError> {
        let mut op = self
            .client
            .start_transcription_job()
            .transcription_job_name(name)
            .media(Media::builder().media_file_uri(&req.media_uri).build())
            .output_bucket_name(&self.config.output_bucket)
            .output_key(output_key(&self.config.output_prefix, name));
        let ext = Location::parse(&req.media_uri)
            .ok()
            .and_then(|l| l.extension());
        if let Some(ext) = ext.filter(|e| {
            matches!(
                e.as_str(),
                "amr" | "flac" | "m4a" | "mp3" | "mp4" | "ogg" | "wav" | "webm"
            )
        }) {
            op = op.media_format(MediaFormat::from(ext.as_str()));
        }
        op = match req
            .language
            .as_deref()
            .and_then(transcribe_json::transcribe_language)
        {
            Some(code) => op.language_code(LanguageCode::from(code)),
            None => {
                if let Some(l) = &req.language {
                    tracing::info!(language = %l, "Transcribe has no such language; identifying it instead");
                }
                op.identify_language(true)
            }
        };
        if let Some(n) = req.max_speakers {
            let n = n.clamp(*SPEAKER_LABELS_RANGE.start(), *SPEAKER_LABELS_RANGE.end());
            op = op.settings(
                Settings::builder()
                    .show_speaker_labels(true)
                    .max_speaker_labels(n as i32)
                    .build(),
            );
        }
        self.start_pacer.wait().await;
        match op.send().await {
            Ok(_) => {
                tracing::info!(job = %req.job_id, transcribe_job = %name, "started Transcribe job");
                Ok(true)
            }
            Err(e) => {
                if let Some(StartTranscriptionJobError::ConflictException(_)) = e.as_service_error()
                {
                    tracing::info!(transcribe_job = %name, "Transcribe job started concurrently; following it");
                    return Ok(false);
                }
                Err(classify_start(e))
            }
        }
    }
}

/// `GetTranscriptionJob` failures: an unknown name (`BadRequestException`
/// "couldn't be found", or `NotFoundException`) is `Ok(None)`; throttling,
/// internal failures and transport errors are transient.
fn classify_get(
    e: SdkError<GetTranscriptionJobError, HttpResponse>,
) -> Result<Option<TranscriptionJob>, ManagedError> {
    let op = "GetTranscriptionJob";
    match transport(&e) {
        Transport::Transient(m) => Err(ManagedError::transient(SERVICE, op, m)),
        Transport::Construction(m) => Err(ManagedError::failed(SERVICE, op, m)),
        Transport::Service(status) => {
            let msg = crate::error::sdk_message(&e);
            match e.into_service_error() {
                GetTranscriptionJobError::BadRequestException(_)
                | GetTranscriptionJobError::NotFoundException(_) => Ok(None),
                GetTranscriptionJobError::LimitExceededException(_)
                | GetTranscriptionJobError::InternalFailureException(_) => {
                    Err(ManagedError::transient(SERVICE, op, msg))
                }
                _ if status_is_transient(status) => Err(ManagedError::transient(SERVICE, op, msg)),
                _ => Err(ManagedError::failed(SERVICE, op, msg)),
            }
        }
    }
}

/// `StartTranscriptionJob` failures (other than a conflict): a bad request
/// is permanent; throttling, internal failures and transport errors are
/// transient.
fn classify_start(e: SdkError<StartTranscriptionJobError, HttpResponse>) -> ManagedError {
    let op = "StartTranscriptionJob";
    match transport(&e) {
        Transport::Transient(m) => ManagedError::transient(SERVICE, op, m),
        Transport::Construction(m) => ManagedError::failed(SERVICE, op, m),
        Transport::Service(status) => {
            let msg = crate::error::sdk_message(&e);
            match e.into_service_error() {
                StartTranscriptionJobError::LimitExceededException(_)
                | StartTranscriptionJobError::InternalFailureException(_) => {
                    ManagedError::transient(SERVICE, op, msg)
                }
                StartTranscriptionJobError::BadRequestException(_) => {
                    ManagedError::failed(SERVICE, op, msg)
                }
                _ if status_is_transient(status) => ManagedError::transient(SERVICE, op, msg),
                _ => ManagedError::failed(SERVICE, op, msg),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_transcribe::types::Transcript;

    #[test]
    fn billing_rounds_up_with_a_minimum() {
        assert_eq!(billed_seconds(0.0), 15);
        assert_eq!(billed_seconds(f64::NAN), 15);
        assert_eq!(billed_seconds(14.2), 15);
        assert_eq!(billed_seconds(15.0), 15);
        assert_eq!(billed_seconds(15.01), 16);
        assert_eq!(billed_seconds(3600.5), 3601);
    }

    #[test]
    fn job_names_are_valid_and_deterministic() {
        assert_eq!(job_name("call-0001"), "earshot-call-0001");
        let odd = job_name("a/b c");
        assert!(odd.starts_with("earshot-a-b-c-"), "{odd}");
        assert_ne!(odd, job_name("a-b-c"));
        assert_ne!(job_name("a/b"), job_name("a b"));
        let long = job_name(&"x".repeat(300));
        assert_eq!(long.len(), MAX_JOB_NAME_LEN);
        assert_eq!(long, job_name(&"x".repeat(300)));
        for n in [odd, long, job_name("ü…")] {
            assert!(n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        }
        assert_eq!(output_key("t", "n"), "t/n.json");
        assert_eq!(output_key("", "n"), "n.json");
        assert_eq!(output_key("a/b/", "n"), "a/b/n.json");
    }

    #[test]
    fn media_limits() {
        assert!(check_media_limits(None, None).is_ok());
        assert!(check_media_limits(Some(14_400.0), Some(MAX_MEDIA_BYTES)).is_ok());
        let e = check_media_limits(Some(14_400.5), None).unwrap_err();
        assert_eq!(e.kind(), "too_large");
        let e = check_media_limits(None, Some(MAX_MEDIA_BYTES + 1)).unwrap_err();
        assert_eq!(e.kind(), "too_large");
        assert!(!e.is_transient());
    }

    #[test]
    fn transcript_uris_map_to_s3_locations() {
        let s3 = |b: &str, k: &str| {
            Some(Location::S3 {
                bucket: b.into(),
                key: k.into(),
            })
        };
        assert_eq!(
            s3_location_of_uri("https://s3.us-east-1.amazonaws.com/out/t/earshot-a.json"),
            s3("out", "t/earshot-a.json")
        );
        assert_eq!(
            s3_location_of_uri("https://s3.amazonaws.com/out/k%20x.json?X-Amz-Signature=abc"),
            s3("out", "k x.json")
        );
        assert_eq!(
            s3_location_of_uri("https://out.s3.eu-west-1.amazonaws.com/t/a.json"),
            s3("out", "t/a.json")
        );
        assert_eq!(
            s3_location_of_uri("https://my.bucket.s3-us-west-2.amazonaws.com/a.json"),
            s3("my.bucket", "a.json")
        );
        assert_eq!(s3_location_of_uri("s3://b/k.json"), s3("b", "k.json"));
        assert_eq!(s3_location_of_uri("https://example.com/b/k"), None);
        assert_eq!(
            s3_location_of_uri("https://s3.amazonaws.com/onlybucket"),
            None
        );
        assert_eq!(s3_location_of_uri("https://s3.amazonaws.com/b/%zz"), None);
        assert_eq!(s3_location_of_uri("ftp://x"), None);
    }

    /// moto never reaches FAILED, so the FAILED path is checked here, on
    /// the mapping the polling loop uses.
    #[test]
    fn job_status_maps_to_states_and_failed_is_permanent() {
        let job =
            |s: TranscriptionJobStatus| TranscriptionJob::builder().transcription_job_status(s);
        assert_eq!(
            JobState::of(&job(TranscriptionJobStatus::Queued).build()),
            JobState::Running
        );
        assert_eq!(
            JobState::of(&job(TranscriptionJobStatus::InProgress).build()),
            JobState::Running
        );
        assert_eq!(
            JobState::of(&job(TranscriptionJobStatus::from("PAUSED")).build()),
            JobState::Running
        );
        assert_eq!(
            JobState::of(
                &job(TranscriptionJobStatus::Completed)
                    .transcript(
                        Transcript::builder()
                            .transcript_file_uri("s3://b/k")
                            .build()
                    )
                    .build()
            ),
            JobState::Completed {
                transcript_uri: Some("s3://b/k".into())
            }
        );
        let failed = JobState::of(
            &job(TranscriptionJobStatus::Failed)
                .failure_reason(
                    "The media format provided does not match the detected media format.",
                )
                .build(),
        );
        let e = failed.failure("earshot-j").unwrap();
        assert!(!e.is_transient());
        assert_eq!(e.kind(), "managed");
        assert!(
            e.to_string()
                .contains("does not match the detected media format"),
            "{e}"
        );
        assert!(JobState::Running.failure("x").is_none());
    }

    #[tokio::test]
    async fn pacer_spaces_calls() {
        let p = Pacer::new(50.0);
        let t0 = Instant::now();
        for _ in 0..4 {
            p.wait().await;
        }
        // Three intervals of 20 ms after the first, free, call.
        assert!(
            t0.elapsed() >= Duration::from_millis(58),
            "{:?}",
            t0.elapsed()
        );
    }
}
