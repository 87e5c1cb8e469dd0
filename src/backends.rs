//! The worker's backends: which engine runs each stage of a job (earshot's
//! own, Amazon Transcribe, Amazon Bedrock), the clients for the managed
//! ones, and what each stage cost. The routing rules themselves are pure
//! functions in [`crate::routing`]; the managed clients live in the
//! `earshot-managed` crate; prices come from `earshot-planner`'s dated
//! table. This module only wires them to the worker's settings.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use earshot_planner::prices::PriceTable;

use crate::routing::{parse_routes, Backend, Policy, Stage};

/// Where each stage runs, and the managed services' settings (`earshot
/// work` and `earshot serve --worker`).
#[derive(clap::Args, Clone, Debug)]
pub struct BackendArgs {
    /// Speech backend: local (Whisper here), transcribe (Amazon
    /// Transcribe), or hybrid (local unless the job would miss --deadline).
    #[arg(long, env = "EARSHOT_SPEECH_BACKEND", default_value = "local")]
    pub speech_backend: String,
    /// Summary backend: local (the LLM here), bedrock (Amazon Bedrock
    /// Converse), or hybrid.
    #[arg(long, env = "EARSHOT_SUMMARY_BACKEND", default_value = "local")]
    pub summary_backend: String,
    /// Weighted split per stage, overriding that stage's backend: e.g.
    /// `speech=local:0.9,transcribe:0.1;summary=local:0.9,bedrock:0.1`.
    /// The draw is stable per job id, so a redelivery takes the same route.
    #[arg(long, env = "EARSHOT_ROUTE")]
    pub route: Option<String>,
    /// Seconds from a job's submission (its `submitted_at`, else the
    /// queue's sent time) by which it should be done; hybrid stages go
    /// managed when local processing would miss it.
    #[arg(long, env = "EARSHOT_DEADLINE")]
    pub deadline: Option<f64>,
    /// Share of jobs (0..1, stable per job id) also run on the other
    /// backend, to compare transcripts (word error rate) and summaries.
    /// Never delays or fails the job itself.
    #[arg(long, env = "EARSHOT_SHADOW_RATE", default_value_t = 0.0)]
    pub shadow_rate: f64,
    /// Only take jobs at least this many seconds old; younger ones go
    /// straight back to the queue (the overflow fleet: managed workers
    /// that pick up what the GPU workers left waiting past the deadline).
    #[arg(long, env = "EARSHOT_MIN_JOB_AGE")]
    pub min_job_age: Option<f64>,
    /// Bedrock model id for summaries.
    #[arg(
        long,
        env = "EARSHOT_BEDROCK_MODEL",
        default_value = "amazon.nova-lite-v1:0"
    )]
    pub bedrock_model: String,
    /// Tokens per Bedrock request (prompt + answer); longer transcripts are
    /// summarized map-reduce, as locally.
    #[arg(long, env = "EARSHOT_BEDROCK_CONTEXT", default_value_t = 32_000)]
    pub bedrock_context: usize,
    /// Bucket for Transcribe's output (and for uploading inputs that are
    /// not in S3). Default: --bucket.
    #[arg(long, env = "EARSHOT_TRANSCRIBE_BUCKET")]
    pub transcribe_bucket: Option<String>,
    /// Key prefix for Transcribe's output and uploaded inputs.
    #[arg(long, env = "EARSHOT_TRANSCRIBE_PREFIX", default_value = "transcribe/")]
    pub transcribe_prefix: String,
    /// Longest wait for one Transcribe job, seconds.
    #[arg(long, env = "EARSHOT_TRANSCRIBE_TIMEOUT", default_value_t = 3600.0)]
    pub transcribe_timeout: f64,
    /// The instance this worker runs on, for the local stages' cost (its
    /// hourly price from the price table, spread over the work it did).
    #[arg(long, env = "EARSHOT_INSTANCE_TYPE", default_value = "g6.xlarge")]
    pub instance_type: String,
    /// Share of that instance's hours bought as spot (0..1).
    #[arg(long, env = "EARSHOT_SPOT_SHARE", default_value_t = 0.0)]
    pub spot_share: f64,
    /// The local machine's price per hour, overriding the table.
    #[arg(long, env = "EARSHOT_GPU_HOURLY_USD")]
    pub gpu_hourly_usd: Option<f64>,
    /// A profile from `earshot bench`: its throughput is the hybrid
    /// router's estimate until this worker has measured its own.
    #[arg(long, env = "EARSHOT_PROFILE")]
    pub profile: Option<PathBuf>,
}

/// Audio-seconds per second a hybrid worker assumes before its first
/// local batch when no `--profile` says better: real time, which every GPU
/// and most CPUs beat with the catalog's models, so a cold worker under-
/// rather than over-commits its engine. Replaced by the measured speed
/// after the first batch.
pub const DEFAULT_SPEECH_PRIOR: f64 = 1.0;
/// Summary tokens (prompt + answer) per second assumed likewise.
pub const DEFAULT_SUMMARY_PRIOR: f64 = 50.0;

/// The parsed routing settings.
#[derive(Debug, Clone)]
pub struct Routing {
    pub speech: Policy,
    pub summary: Policy,
    pub deadline_s: Option<f64>,
    pub shadow_rate: f64,
    pub min_job_age_s: Option<f64>,
    /// Audio-seconds per second assumed before the first local batch.
    pub speech_prior: Option<f64>,
    /// Summary tokens per second assumed before the first local summary.
    pub summary_prior: Option<f64>,
}

impl Routing {
    pub fn policy(&self, stage: Stage) -> &Policy {
        match stage {
            Stage::Speech => &self.speech,
            Stage::Summary => &self.summary,
        }
    }
    /// Whether a stage may run on `backend` here (so it must be set up).
    /// Shadowing runs the other backend of whatever the policy picks, so
    /// with a shadow rate both are in use.
    pub fn uses(&self, stage: Stage, backend: Backend) -> bool {
        let picks = self.policy(stage).backends(stage);
        picks.contains(&backend)
            || (self.shadow_rate > 0.0 && picks.contains(&other(stage, backend)))
    }
    /// Whether any stage can run locally (the engines must be loaded).
    pub fn needs_local(&self, stage: Stage) -> bool {
        self.uses(stage, Backend::Local)
    }
}

/// The other backend of a stage (the shadow's).
pub fn other(stage: Stage, b: Backend) -> Backend {
    if b == Backend::Local {
        stage.managed()
    } else {
        Backend::Local
    }
}

impl BackendArgs {
    /// Checks and parses the routing settings.
    pub fn routing(&self) -> Result<Routing> {
        let mut speech = Policy::parse_backend(Stage::Speech, &self.speech_backend)?;
        let mut summary = Policy::parse_backend(Stage::Summary, &self.summary_backend)?;
        if let Some(r) = &self.route {
            for (stage, policy) in parse_routes(r)? {
                match stage {
                    Stage::Speech => speech = policy,
                    Stage::Summary => summary = policy,
                }
            }
        }
        if let Some(d) = self.deadline {
            if !(d.is_finite() && d > 0.0) {
                bail!("--deadline must be a positive number of seconds, got {d}");
            }
        }
        if (speech == Policy::Hybrid || summary == Policy::Hybrid) && self.deadline.is_none() {
            bail!("a hybrid backend needs --deadline (EARSHOT_DEADLINE): seconds from submission by which a job should be done");
        }
        if !(0.0..=1.0).contains(&self.shadow_rate) {
            bail!(
                "--shadow-rate must be between 0 and 1, got {}",
                self.shadow_rate
            );
        }
        if let Some(a) = self.min_job_age {
            if !(a.is_finite() && a >= 0.0) {
                bail!("--min-job-age must be at least 0 seconds, got {a}");
            }
        }
        if !(0.0..=1.0).contains(&self.spot_share) {
            bail!(
                "--spot-share must be between 0 and 1, got {}",
                self.spot_share
            );
        }
        let (speech_prior, summary_prior) = match &self.profile {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading the profile {}", path.display()))?;
                let p: earshot_planner::profile::Profile = serde_json::from_slice(&bytes)
                    .with_context(|| {
                        format!("{} is not an `earshot bench` profile", path.display())
                    })?;
                // A typical summary reads ~1000 tokens and writes ~200:
                // its tokens per second, from the two measured speeds.
                let (pre, dec) = (
                    p.llm.prefill_tokens_per_second,
                    p.llm.best_decode_tokens_per_second,
                );
                let summary = if pre > 0.0 && dec > 0.0 {
                    1200.0 / (1000.0 / pre + 200.0 / dec)
                } else {
                    0.0
                };
                (
                    Some(p.speech.best_audio_seconds_per_second).filter(|t| *t > 0.0),
                    Some(summary).filter(|t| *t > 0.0),
                )
            }
            None => (None, None),
        };
        let speech_prior = speech_prior.or(Some(DEFAULT_SPEECH_PRIOR));
        let summary_prior = summary_prior.or(Some(DEFAULT_SUMMARY_PRIOR));
        Ok(Routing {
            speech,
            summary,
            deadline_s: self.deadline,
            shadow_rate: self.shadow_rate,
            min_job_age_s: self.min_job_age,
            speech_prior,
            summary_prior,
        })
    }

    /// The local machine's blended hourly price.
    pub fn local_hourly_usd(&self) -> Result<f64> {
        if let Some(h) = self.gpu_hourly_usd {
            if !(h.is_finite() && h >= 0.0) {
                bail!("--gpu-hourly-usd must be at least 0, got {h}");
            }
            return Ok(h);
        }
        PriceTable::bundled()
            .gpu_hourly_usd(&self.instance_type, self.spot_share)
            .with_context(|| format!("pricing --instance-type {}", self.instance_type))
    }
}

pub use earshot_managed::ManagedError;

/// The managed services' clients this worker may call (each only when a
/// stage may route to it).
pub struct Managed {
    transcribe: Option<TranscribeSide>,
    bedrock: Option<earshot_managed::bedrock::BedrockSummarizer>,
}

struct TranscribeSide {
    backend: earshot_managed::transcribe::TranscribeBackend,
    store: std::sync::Arc<earshot_queue_adapter::Store>,
    bucket: String,
    prefix: String,
}

/// A managed transcription.
pub struct ManagedSpeech {
    pub record: earshot_queue_adapter::job::TranscriptRecord,
    pub billed_seconds: u64,
}

impl Managed {
    /// Sets up the clients the routing needs, from the standard AWS
    /// configuration (region, credentials, `AWS_ENDPOINT_URL_TRANSCRIBE`,
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, …).
    pub async fn connect(
        args: &BackendArgs,
        routing: &Routing,
        store: earshot_queue_adapter::Store,
        bucket: Option<&str>,
    ) -> Result<Managed> {
        let need_transcribe = routing.uses(Stage::Speech, Backend::Transcribe);
        let need_bedrock = routing.uses(Stage::Summary, Backend::Bedrock);
        if !need_transcribe && !need_bedrock {
            return Ok(Managed {
                transcribe: None,
                bedrock: None,
            });
        }
        let sdk = earshot_queue_adapter::aws_config().await;
        let transcribe = if need_transcribe {
            let Some(bucket) = args.transcribe_bucket.as_deref().or(bucket) else {
                bail!("Transcribe needs a bucket for its output: --transcribe-bucket or --bucket");
            };
            let store = std::sync::Arc::new(store);
            let mut config = earshot_managed::transcribe::TranscribeConfig::new(
                bucket,
                args.transcribe_prefix.clone(),
            );
            if !(args.transcribe_timeout.is_finite() && args.transcribe_timeout > 0.0) {
                bail!("--transcribe-timeout must be a positive number of seconds");
            }
            config.poll.timeout = std::time::Duration::from_secs_f64(args.transcribe_timeout);
            Some(TranscribeSide {
                backend: earshot_managed::transcribe::TranscribeBackend::new(
                    &sdk,
                    store.clone(),
                    config,
                ),
                store,
                bucket: bucket.to_string(),
                prefix: args.transcribe_prefix.clone(),
            })
        } else {
            None
        };
        let bedrock = need_bedrock.then(|| {
            earshot_managed::bedrock::BedrockSummarizer::new(
                &sdk,
                earshot_managed::bedrock::BedrockConfig {
                    model_id: args.bedrock_model.clone(),
                    context_tokens: args.bedrock_context,
                    ..Default::default()
                },
            )
        });
        Ok(Managed {
            transcribe,
            bedrock,
        })
    }

    /// Transcribes with Amazon Transcribe, uploading a non-S3 input first.
    pub async fn transcribe(
        &self,
        job_id: &str,
        loc: &earshot_queue_adapter::Location,
        size: u64,
        language: Option<&str>,
        duration_s: f64,
        max_speakers: Option<usize>,
    ) -> Result<ManagedSpeech, ManagedError> {
        let t = self.transcribe.as_ref().ok_or_else(|| {
            ManagedError::BadOption("Amazon Transcribe is not configured in this worker".into())
        })?;
        // Checked before uploading: an over-limit file is refused at once.
        earshot_managed::transcribe::check_media_limits(Some(duration_s), Some(size))?;
        let media_uri = earshot_managed::transcribe::ensure_s3_media(
            &t.store, loc, &t.bucket, &t.prefix, job_id,
        )
        .await?;
        let out = t
            .backend
            .transcribe(earshot_managed::transcribe::SpeechRequest {
                job_id: job_id.to_string(),
                media_uri,
                language: language.map(str::to_owned),
                duration_seconds: Some(duration_s),
                bytes: Some(size),
                max_speakers,
            })
            .await?;
        tracing::info!(
            job_id,
            transcribe_job = %out.transcribe_job,
            reused = out.reused,
            billed_s = out.billed_seconds,
            "transcribed by Amazon Transcribe"
        );
        Ok(ManagedSpeech {
            record: out.record,
            billed_seconds: out.billed_seconds,
        })
    }

    /// Summarizes with Amazon Bedrock (same prompts and map-reduce as the
    /// local summarizer).
    pub async fn summarize(
        &self,
        segments: &[String],
        max_tokens: Option<usize>,
    ) -> Result<earshot_queue_adapter::job::SummaryRecord, ManagedError> {
        let b = self.bedrock.as_ref().ok_or_else(|| {
            ManagedError::BadOption("Amazon Bedrock is not configured in this worker".into())
        })?;
        let s = b.summarize(segments, max_tokens.unwrap_or(200)).await?;
        tracing::info!(
            model = %s.model,
            requests = s.requests,
            input_tokens = s.input_tokens,
            output_tokens = s.output_tokens,
            "summarized by Amazon Bedrock"
        );
        Ok(s.record())
    }
}
