//! Queue settings shared by `work`, `submit` and `status`, and the two
//! operator commands: `submit` (upload audio, enqueue jobs, print ids) and
//! `status` (print a job's result record).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use earshot_queue_adapter::{
    open_queue, Job, JobQueue, Location, QueueSpec, ResultRecord, S3Settings, Store, TaskKind,
};
use std::sync::Arc;

/// Where jobs come from and results go.
#[derive(clap::Args, Clone, Debug)]
pub struct QueueArgs {
    /// SQS queue URL. Without it, the embedded local queue is used.
    #[arg(long, env = "EARSHOT_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Folder of the embedded local queue (used when no --queue-url).
    #[arg(long, env = "EARSHOT_LOCAL_QUEUE", default_value = "earshot-queue")]
    pub local_queue: PathBuf,
    /// Deliveries before the local queue dead-letters a message (for SQS
    /// this is the queue's redrive policy).
    #[arg(long, env = "EARSHOT_MAX_RECEIVES", default_value_t = earshot_queue_adapter::local::DEFAULT_MAX_RECEIVES)]
    pub max_receives: u32,
    /// S3 bucket for uploaded audio and results.
    #[arg(long, env = "EARSHOT_BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, env = "EARSHOT_PREFIX", default_value = "earshot/")]
    pub prefix: String,
    /// Result prefix for jobs that name none (and for failure records of
    /// messages too broken to name one). Default: s3://BUCKET/PREFIXresults/
    /// with --bucket, else LOCAL_QUEUE/results.
    #[arg(long, env = "EARSHOT_RESULTS")]
    pub results: Option<String>,
    /// S3 path-style addressing (default: on when AWS_ENDPOINT_URL is set).
    #[arg(long, env = "EARSHOT_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: Option<bool>,
}

impl QueueArgs {
    pub fn spec(&self) -> QueueSpec {
        match &self.queue_url {
            Some(url) => QueueSpec::Sqs { url: url.clone() },
            None => QueueSpec::Local {
                dir: self.local_queue.clone(),
                max_receives: self.max_receives,
            },
        }
    }

    pub fn store(&self) -> Store {
        Store::new(S3Settings {
            force_path_style: self.s3_force_path_style,
        })
    }

    fn bucket_prefix(&self, what: &str) -> Option<Location> {
        let bucket = self.bucket.as_ref()?;
        let prefix = self.prefix.trim_matches('/');
        let key = if prefix.is_empty() {
            format!("{what}/")
        } else {
            format!("{prefix}/{what}/")
        };
        Some(Location::S3 {
            bucket: bucket.clone(),
            key,
        })
    }

    /// The default result prefix (see `--results`).
    pub fn results(&self) -> Result<Option<Location>> {
        if let Some(r) = &self.results {
            return Ok(Some(Location::parse(r)?));
        }
        if let Some(l) = self.bucket_prefix("results") {
            return Ok(Some(l));
        }
        Ok(match self.queue_url {
            None => Some(Location::Local(self.local_queue.join("results"))),
            Some(_) => None,
        })
    }

    /// Where `submit` puts a job's input file.
    fn input_location(&self, job_id: &str, file_name: &str) -> Result<Location> {
        if let Some(l) = self.bucket_prefix("inputs") {
            return Ok(l.join(job_id).join(file_name));
        }
        if self.queue_url.is_some() {
            bail!("--bucket (or EARSHOT_BUCKET) is needed with --queue-url: workers read the audio from S3");
        }
        Ok(Location::Local(
            std::fs::canonicalize(&self.local_queue)
                .unwrap_or_else(|_| self.local_queue.clone())
                .join("inputs")
                .join(job_id)
                .join(file_name),
        ))
    }

    pub async fn open(&self) -> Result<Arc<dyn JobQueue>> {
        open_queue(&self.spec())
            .await
            .context("opening the job queue")
    }
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Audio files (transcribe tasks) or transcript files (summarize).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// transcribe, summarize or transcribe+summarize.
    #[arg(long, default_value = "transcribe+summarize")]
    task: String,
    #[command(flatten)]
    queue: QueueArgs,
    /// Whisper model the job asks for (the worker's default when omitted).
    #[arg(long)]
    whisper_model: Option<String>,
    /// LLM the job asks for.
    #[arg(long)]
    llm_model: Option<String>,
    #[arg(long)]
    language: Option<String>,
    /// Text that conditions the first window.
    #[arg(long)]
    prompt: Option<String>,
    /// Extra transcript renderings to store: text, json, srt, vtt,
    /// verbose_json, transcribe (Amazon Transcribe's output JSON).
    #[arg(long, value_delimiter = ',')]
    formats: Vec<String>,
    #[arg(long)]
    max_summary_tokens: Option<usize>,
    /// Ask for word timings (the record's segments carry `words`).
    #[arg(long)]
    word_timestamps: bool,
    /// srt and vtt renderings: at most N words per cue, timed by its words.
    #[arg(long, value_name = "N")]
    max_words_per_cue: Option<usize>,
    /// Transcribe only the speech (Silero VAD; the job option `vad`).
    #[arg(long)]
    vad: bool,
    /// Label speakers (the job options `diarize`, `num_speakers`,
    /// `min_speakers`, `max_speakers`; the worker's own settings decide
    /// the rest).
    #[command(flatten)]
    speakers: crate::diarization::SpeakerArgs,
}

pub fn submit(args: SubmitArgs) -> Result<ExitCode> {
    let task: TaskKind = args.task.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let queue = args.queue.open().await?;
        let store = args.queue.store();
        let results = args.queue.results()?;
        for file in &args.files {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            if bytes.is_empty() {
                bail!("{} is empty", file.display());
            }
            let mut job = Job::new(task);
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "input".into());
            let loc = args.queue.input_location(&job.job_id, &name)?;
            store
                .put(&loc, bytes, "application/octet-stream")
                .await
                .with_context(|| format!("uploading {} to {loc}", file.display()))?;
            if task.needs_audio() {
                job.audio = Some(loc.to_string());
            } else {
                job.transcript = Some(loc.to_string());
            }
            job.result = results.as_ref().map(|r| r.to_string());
            job.options.model = args.whisper_model.clone();
            job.options.llm_model = args.llm_model.clone();
            job.options.language = args.language.clone();
            job.options.prompt = args.prompt.clone();
            job.options.formats = args.formats.clone();
            job.options.max_summary_tokens = args.max_summary_tokens;
            job.options.word_timestamps = args.word_timestamps;
            job.options.max_words_per_cue = args.max_words_per_cue;
            job.options.vad = args.vad;
            job.options.diarize = args.speakers.diarize;
            job.options.num_speakers = args.speakers.num_speakers;
            job.options.min_speakers = args.speakers.min_speakers;
            job.options.max_speakers = args.speakers.max_speakers;
            job.validate()?;
            let (body, attrs) = job.to_message();
            queue
                .send(&body, &attrs)
                .await
                .context("enqueueing the job")?;
            println!("{}", job.job_id);
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Job ids (as `submit` printed them).
    #[arg(required = true)]
    job_ids: Vec<String>,
    #[command(flatten)]
    queue: QueueArgs,
}

/// Prints one JSON line per job: its result record, or
/// `{"job_id": ..., "status": "pending"}`. Exit status: 0 when every job
/// succeeded, 1 when any failed, 3 when none failed but some are pending.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let Some(results) = args.queue.results()? else {
            bail!("give --results or --bucket: where do this queue's results go?");
        };
        let store = args.queue.store();
        let (mut failed, mut pending) = (false, false);
        for id in &args.job_ids {
            earshot_queue_adapter::job::validate_job_id(id)?;
            let loc = results.join(&ResultRecord::key_for(id));
            match store.get_opt(&loc, 64 << 20).await? {
                Some(bytes) => {
                    let record: ResultRecord = serde_json::from_slice(&bytes)
                        .with_context(|| format!("{loc} is not a result record"))?;
                    failed |= record.status == earshot_queue_adapter::JobStatus::Failed;
                    println!("{}", serde_json::to_string(&record)?);
                }
                None => {
                    pending = true;
                    println!("{}", serde_json::json!({"job_id": id, "status": "pending"}));
                }
            }
        }
        Ok(if failed {
            ExitCode::from(1)
        } else if pending {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        })
    })
}
