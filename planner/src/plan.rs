//! The capacity plan: from a workload, measured (or entered) throughput and
//! the price table to GPU counts, monthly costs on each side, the hybrid
//! optimum and the crossover volume.
//!
//! # The model, in short
//!
//! - **Time.** The fleet runs only inside the active hours
//!   (`active_hours_per_day × days_per_week × 730/168` hours a month; 24 × 7
//!   gives 730). Outside them it is at zero and work waits in the queue, so
//!   the month's tasks are all processed inside the active hours.
//! - **Load.** In GPU-equivalents: audio seconds per second over the speech
//!   throughput, plus each task's LLM time (`output / decode` +
//!   `input / prefill` seconds) times tasks per second. Sizing is for the
//!   peak (`peak_to_average ×` the average) at `target_utilisation`.
//! - **Self-hosted** runs the peak-sized fleet all active hours (KEDA
//!   scaling inside active hours would save more; not counted, so the
//!   figure errs high), at the on-demand/spot blend, plus the EKS control
//!   plane all month.
//! - **Sharing.** When both engines fit one GPU's memory (with 10%
//!   headroom), earshot runs them in one process, so the GPU count is the
//!   combined load's, not the sum of each engine's.
//! - **Managed** is Transcribe (each task billed per second with the 15 s
//!   minimum, the month through the tiers) plus Bedrock tokens.
//! - **Hybrid** keeps `n` GPUs for the base load and sends the tasks above
//!   their capacity to the managed services. The load inside active hours
//!   is modelled as a straight-line load-duration curve with the given
//!   peak-to-average ratio (see [`overflow_share`]); `n` is the count that
//!   minimises the month's cost, from 0 (all managed) to the self-hosted
//!   count (no overflow).

use serde::{Deserialize, Serialize};

use crate::prices::{PriceOverrides, PriceTable, HOURS_PER_MONTH};
use crate::profile::Profile;
use crate::PlanError;

/// Spoken words per minute of conversational speech (typical rates are
/// 120–160): sets the default summary input.
pub const WORDS_PER_MINUTE: f64 = 150.0;
/// LLM tokens per English word for Llama-style tokenizers (about 1.3).
pub const TOKENS_PER_WORD: f64 = 1.3;
/// Default summary length in tokens (a paragraph).
pub const DEFAULT_OUTPUT_TOKENS: f64 = 200.0;
/// Default instance: the L4, the best price-performance of AWS's GPUs for
/// small models.
pub const DEFAULT_INSTANCE: &str = "g6.xlarge";
/// Default Bedrock model: the cheapest current Nova that writes usable
/// summaries (Claude Haiku is retired on Bedrock).
pub const DEFAULT_BEDROCK_MODEL: &str = "amazon.nova-lite-v1:0";
/// Largest monthly volume the planner accepts: beyond it the input is a
/// typo, not a workload.
pub const MAX_TASKS_PER_MONTH: f64 = 1e9;
/// Share of GPU memory left for the CUDA context and fragmentation.
const MEMORY_HEADROOM: f64 = 0.9;

/// What to plan for. Every field but the volume and length has a default,
/// so a `POST /v1/plan` body can be as short as
/// `{"tasks_per_month": 50000, "avg_minutes": 3}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub tasks_per_month: f64,
    /// Average audio length of a task, minutes.
    pub avg_minutes: f64,
    /// Tokens into the summarizer per task; default
    /// `ceil(avg_minutes × 150 words × 1.3 tokens/word)`.
    #[serde(default)]
    pub summary_input_tokens: Option<f64>,
    /// Tokens out of the summarizer per task; default 200.
    #[serde(default)]
    pub summary_output_tokens: Option<f64>,
    #[serde(default = "default_active_hours")]
    pub active_hours_per_day: f64,
    #[serde(default = "default_days")]
    pub days_per_week: f64,
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Share of GPU hours on spot, 0 to 1.
    #[serde(default)]
    pub spot_share: f64,
    /// Busy share a GPU is sized for at peak (headroom for bursts), 0–1.
    #[serde(default = "default_utilisation")]
    pub target_utilisation: f64,
    /// Peak load over average load inside active hours, ≥ 1.
    #[serde(default = "default_peak")]
    pub peak_to_average: f64,
    #[serde(default = "default_model")]
    pub bedrock_model: String,
    #[serde(default)]
    pub throughput: Throughput,
    #[serde(default)]
    pub memory: MemoryNeeds,
    /// Per-figure price overrides (`"ec2.g6.xlarge.on_demand": 0.7`).
    #[serde(default, skip_serializing_if = "PriceOverrides::is_empty")]
    pub prices: PriceOverrides,
}

fn default_active_hours() -> f64 {
    24.0
}
fn default_days() -> f64 {
    7.0
}
fn default_instance() -> String {
    DEFAULT_INSTANCE.into()
}
fn default_utilisation() -> f64 {
    0.7
}
fn default_peak() -> f64 {
    2.0
}
fn default_model() -> String {
    DEFAULT_BEDROCK_MODEL.into()
}

impl PlanInput {
    /// A workload with every other setting at its default.
    pub fn new(tasks_per_month: f64, avg_minutes: f64) -> Self {
        PlanInput {
            tasks_per_month,
            avg_minutes,
            summary_input_tokens: None,
            summary_output_tokens: None,
            active_hours_per_day: default_active_hours(),
            days_per_week: default_days(),
            instance: default_instance(),
            spot_share: 0.0,
            target_utilisation: default_utilisation(),
            peak_to_average: default_peak(),
            bedrock_model: default_model(),
            throughput: Throughput::default(),
            memory: MemoryNeeds::default(),
            prices: PriceOverrides::default(),
        }
    }

    /// Summary input tokens per task: given, or derived from the minutes.
    pub fn input_tokens(&self) -> f64 {
        self.summary_input_tokens
            .unwrap_or_else(|| (self.avg_minutes * WORDS_PER_MINUTE * TOKENS_PER_WORD).ceil())
    }

    pub fn output_tokens(&self) -> f64 {
        self.summary_output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS)
    }

    /// Hours a month the fleet may run.
    pub fn active_hours_per_month(&self) -> f64 {
        self.active_hours_per_day * self.days_per_week * HOURS_PER_MONTH / (24.0 * 7.0)
    }

    /// Takes throughput and GPU memory from a measured profile.
    pub fn use_profile(&mut self, profile: &Profile, label: &str) {
        self.throughput = Throughput::from_profile(profile, label);
        if let Some(bytes) = profile.memory.device_bytes {
            self.memory.combined_gib = Some(bytes as f64 / GIB);
        }
    }

    fn validate(&self) -> Result<(), PlanError> {
        fn check(
            field: &'static str,
            v: f64,
            ok: impl Fn(f64) -> bool,
            expected: &str,
        ) -> Result<(), PlanError> {
            if v.is_finite() && ok(v) {
                Ok(())
            } else {
                Err(PlanError::bad(field, v, expected))
            }
        }
        check(
            "tasks_per_month",
            self.tasks_per_month,
            |v| v > 0.0 && v <= MAX_TASKS_PER_MONTH,
            "must be above 0 and at most 1,000,000,000",
        )?;
        check(
            "avg_minutes",
            self.avg_minutes,
            |v| v > 0.0 && v <= 240.0,
            "must be above 0 and at most 240 (Transcribe's 4-hour file limit)",
        )?;
        if let Some(t) = self.summary_input_tokens {
            check(
                "summary_input_tokens",
                t,
                |v| (0.0..=1e7).contains(&v),
                "must be from 0 to 10,000,000",
            )?;
        }
        if let Some(t) = self.summary_output_tokens {
            check(
                "summary_output_tokens",
                t,
                |v| (0.0..=1e6).contains(&v),
                "must be from 0 to 1,000,000",
            )?;
        }
        check(
            "active_hours_per_day",
            self.active_hours_per_day,
            |v| v > 0.0 && v <= 24.0,
            "must be above 0 and at most 24",
        )?;
        check(
            "days_per_week",
            self.days_per_week,
            |v| v > 0.0 && v <= 7.0,
            "must be above 0 and at most 7",
        )?;
        check(
            "spot_share",
            self.spot_share,
            |v| (0.0..=1.0).contains(&v),
            "must be a share from 0 (all on-demand) to 1 (all spot)",
        )?;
        check(
            "target_utilisation",
            self.target_utilisation,
            |v| v > 0.0 && v <= 1.0,
            "must be above 0 and at most 1",
        )?;
        check(
            "peak_to_average",
            self.peak_to_average,
            |v| (1.0..=100.0).contains(&v),
            "must be from 1 (flat load) to 100",
        )?;
        let t = &self.throughput;
        check(
            "speech_audio_seconds_per_second",
            t.speech_audio_seconds_per_second,
            |v| v > 0.0 && v <= 1e6,
            "must be above 0 (audio seconds per wall second on one GPU)",
        )?;
        check(
            "llm_decode_tokens_per_second",
            t.llm_decode_tokens_per_second,
            |v| v > 0.0 && v <= 1e7,
            "must be above 0 (generated tokens per second on one GPU)",
        )?;
        if let Some(p) = t.llm_prefill_tokens_per_second {
            check(
                "llm_prefill_tokens_per_second",
                p,
                |v| v > 0.0 && v <= 1e8,
                "must be above 0",
            )?;
        }
        let m = &self.memory;
        check(
            "speech_gib",
            m.speech_gib,
            |v| (0.0..=1e4).contains(&v),
            "must be from 0 to 10,000 GiB",
        )?;
        check(
            "llm_gib",
            m.llm_gib,
            |v| (0.0..=1e4).contains(&v),
            "must be from 0 to 10,000 GiB",
        )?;
        if let Some(c) = m.combined_gib {
            check(
                "combined_gib",
                c,
                |v| (0.0..=1e4).contains(&v),
                "must be from 0 to 10,000 GiB",
            )?;
        }
        Ok(())
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What one GPU does per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    /// Audio seconds transcribed per wall second, batched.
    pub speech_audio_seconds_per_second: f64,
    /// Generated tokens per second, all sequences of a batch together.
    pub llm_decode_tokens_per_second: f64,
    /// Prompt tokens per second; default ten times the decode rate
    /// (prefill is compute-bound and batches far better than decode).
    #[serde(default)]
    pub llm_prefill_tokens_per_second: Option<f64>,
    /// Where the figures come from (shown with the plan).
    #[serde(default = "given")]
    pub source: String,
}

fn given() -> String {
    "given".into()
}

/// Stand-in figures for a plan with no profile and nothing entered, from
/// published measurements on GPUs near an L4's class; `earshot bench` on
/// the target instance replaces them.
impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            // faster-whisper README: large-v2, batch 8, RTX 3070 Ti, 13 min
            // of audio in 17 s ≈ 46× real time.
            speech_audio_seconds_per_second: 46.0,
            // Llama-3.1-8B-Instruct BF16 under vLLM on one A100 40GB at 8
            // concurrent requests: 75 tokens/s × 6.6 ≈ 495 tokens/s
            // (johnmusgrave.com, "vLLM throughput-latency sweep on A100").
            llm_decode_tokens_per_second: 495.0,
            llm_prefill_tokens_per_second: None,
            source: "assumed: faster-whisper README (large-v2, batch 8, RTX 3070 Ti) and a vLLM sweep (Llama 3.1 8B, A100, 8 requests); measure with earshot bench".into(),
        }
    }
}

impl Throughput {
    /// The profile's best figures (what a busy worker sustains).
    pub fn from_profile(p: &Profile, label: &str) -> Self {
        let gpu = p
            .machine
            .gpu_name
            .as_deref()
            .unwrap_or(&p.machine.cpu_model);
        Throughput {
            speech_audio_seconds_per_second: p.speech.best_audio_seconds_per_second,
            llm_decode_tokens_per_second: p.llm.best_decode_tokens_per_second,
            llm_prefill_tokens_per_second: Some(p.llm.prefill_tokens_per_second),
            source: format!(
                "profile {label}: {} + {} on {} ({}), {}",
                p.models.whisper, p.models.llm, gpu, p.machine.device, p.created_at
            ),
        }
    }

    fn prefill(&self) -> f64 {
        self.llm_prefill_tokens_per_second
            .unwrap_or(self.llm_decode_tokens_per_second * 10.0)
    }
}

/// GPU memory each engine holds (weights, buffers, caches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryNeeds {
    /// Default 3 GiB: Whisper large-v3 at fp16 (about 3.1 GB of weights)
    /// with its working buffers.
    #[serde(default = "default_speech_gib")]
    pub speech_gib: f64,
    /// Default 10 GiB: an 8B-class LLM quantised to 8 bits (about 8.5 GB)
    /// with a modest KV cache.
    #[serde(default = "default_llm_gib")]
    pub llm_gib: f64,
    /// Both engines in one process, as measured (`earshot bench`'s device
    /// memory); overrides the sum when set.
    #[serde(default)]
    pub combined_gib: Option<f64>,
}

fn default_speech_gib() -> f64 {
    3.0
}
fn default_llm_gib() -> f64 {
    10.0
}

impl Default for MemoryNeeds {
    fn default() -> Self {
        MemoryNeeds {
            speech_gib: default_speech_gib(),
            llm_gib: default_llm_gib(),
            combined_gib: None,
        }
    }
}

/// The recommended way to run the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Transcribe + Bedrock only: cheapest at this volume.
    Managed,
    /// GPUs for the base load, managed services for the peaks.
    Hybrid,
    /// GPUs for everything.
    SelfHosted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Managed => "managed",
            Phase::Hybrid => "hybrid",
            Phase::SelfHosted => "self-hosted",
        }
    }
}

/// The self-hosted side of the month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfHosted {
    pub monthly_usd: f64,
    /// Instances × blended hourly price × active hours.
    pub gpu_usd: f64,
    /// Paid whether or not GPUs run (EKS control plane).
    pub fixed_usd: f64,
    pub instances: u32,
    pub instance_hours: f64,
    pub active_hours_per_month: f64,
    /// Per instance, at the on-demand/spot blend.
    pub blended_usd_per_hour: f64,
}

/// The managed side of the month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Managed {
    pub monthly_usd: f64,
    /// Transcribe.
    pub speech_usd: f64,
    /// Bedrock.
    pub summary_usd: f64,
    /// Minutes Transcribe bills (per-second rounding and minimum applied).
    pub billed_minutes: f64,
    /// Per task, speech and summary together, at the first tier.
    pub per_task_usd: f64,
}

/// The cheapest split between own GPUs and managed services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hybrid {
    pub monthly_usd: f64,
    /// GPUs kept (0: all managed; the self-hosted count: no overflow).
    pub gpus: u32,
    pub instances: u32,
    /// GPUs and fixed costs.
    pub self_hosted_usd: f64,
    /// The overflow's Transcribe and Bedrock bill.
    pub managed_usd: f64,
    /// Share of tasks that overflow to managed, 0–1.
    pub managed_share: f64,
    /// True when the split is cheaper than both all-managed and
    /// all-self-hosted.
    pub beats_both: bool,
}

/// Average load inside active hours, in GPU-equivalents (1.0 = one GPU
/// busy all the time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub speech: f64,
    pub llm: f64,
    /// Seconds of GPU time one task takes, per engine.
    pub speech_seconds_per_task: f64,
    pub llm_seconds_per_task: f64,
    pub summary_input_tokens: f64,
    pub summary_output_tokens: f64,
}

/// The prices a plan used, with the table's date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricesUsed {
    pub date: String,
    pub region: String,
    pub instance: String,
    pub gpu_name: String,
    pub gpus_per_instance: u32,
    pub gpu_memory_gib: f64,
    pub on_demand_usd_per_hour: f64,
    pub spot_discount: f64,
    pub transcribe_tiers: Vec<TierUsed>,
    pub transcribe_minimum_seconds: f64,
    pub bedrock_model: String,
    pub bedrock_input_usd_per_million: f64,
    pub bedrock_output_usd_per_million: f64,
    pub eks_usd_per_hour: f64,
    /// Keys given as overrides.
    pub overridden: Vec<String>,
    pub left_out: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierUsed {
    pub up_to_minutes: Option<f64>,
    pub usd_per_minute: f64,
    pub confirmed: bool,
}

/// One point of the cost curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub tasks_per_month: f64,
    pub managed_usd: f64,
    pub self_hosted_usd: f64,
    pub hybrid_usd: f64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The input, with derived token counts filled in.
    pub input: PlanInput,
    /// GPUs the speech engine needs on its own.
    pub speech_gpus: u32,
    /// GPUs the LLM needs on its own.
    pub llm_gpus: u32,
    /// Both engines fit one GPU's memory and their combined peak load fits
    /// one GPU's time: the whole workload runs on one GPU.
    pub shared_gpu: bool,
    /// Both engines fit one GPU's memory, so every GPU runs both.
    pub colocated: bool,
    /// GPUs in the self-hosted fleet (the combined load's count when
    /// colocated, else speech + LLM).
    pub gpus: u32,
    pub load: Load,
    pub self_hosted: SelfHosted,
    pub managed: Managed,
    pub hybrid: Hybrid,
    /// `(managed − self-hosted) / managed × 100`; negative when
    /// self-hosting costs more.
    pub savings_pct: f64,
    /// Smallest monthly volume (same task shape) at which self-hosted
    /// costs no more than managed; `None` when that never happens up to
    /// 1e9 tasks.
    pub crossover_tasks_per_month: Option<u64>,
    pub phase: Phase,
    pub prices: PricesUsed,
    pub throughput_source: String,
    /// Things to check before trusting the plan.
    pub warnings: Vec<String>,
    /// Filled by callers that want it ([`cost_curve`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost_curve: Vec<CurvePoint>,
}

/// Everything that does not change with the volume, checked once.
struct Ctx {
    table: PriceTable,
    input: PlanInput,
    instance_hourly: f64,
    gpus_per_instance: u32,
    active_hours: f64,
    colocated: bool,
    speech_seconds_per_task: f64,
    llm_seconds_per_task: f64,
    billed_minutes_per_task: f64,
    summary_usd_per_task: f64,
}

/// The volume-dependent figures.
struct Point {
    speech_load: f64,
    llm_load: f64,
    speech_gpus: u32,
    llm_gpus: u32,
    gpus: u32,
    shared: bool,
    self_hosted: SelfHosted,
    managed: Managed,
}

/// GPUs for a peak load at the target utilisation: at least one (an
/// engine with work needs a GPU to run on at all). The epsilon keeps
/// 2.0000000001 from asking for 3.
fn gpus_for(peak_load: f64, utilisation: f64) -> u32 {
    let n = (peak_load / utilisation - 1e-9).ceil();
    n.clamp(1.0, u32::MAX as f64) as u32
}

impl Ctx {
    fn new(input: &PlanInput, base: &PriceTable) -> Result<Ctx, PlanError> {
        input.validate()?;
        let table = base.with_overrides(&input.prices)?;
        let inst = table.instance(&input.instance)?.clone();
        let instance_hourly = table.gpu_hourly_usd(&input.instance, input.spot_share)?;
        let have = inst.gpu_memory_gib * MEMORY_HEADROOM;
        let m = &input.memory;
        for (engine, need) in [("speech engine", m.speech_gib), ("LLM", m.llm_gib)] {
            if need > have {
                return Err(PlanError::DoesNotFit {
                    engine,
                    need_gib: need,
                    have_gib: inst.gpu_memory_gib,
                    gpu: inst.gpu_name.clone(),
                    instance: input.instance.clone(),
                });
            }
        }
        let colocated = m.combined_gib.unwrap_or(m.speech_gib + m.llm_gib) <= have;
        let t = &input.throughput;
        let in_tok = input.input_tokens();
        let out_tok = input.output_tokens();
        let audio_s = input.avg_minutes * 60.0;
        let model = table.bedrock_model(&input.bedrock_model)?;
        let summary_usd_per_task =
            (in_tok * model.input_usd_per_million + out_tok * model.output_usd_per_million) / 1e6;
        Ok(Ctx {
            instance_hourly,
            gpus_per_instance: inst.gpus,
            active_hours: input.active_hours_per_month(),
            colocated,
            speech_seconds_per_task: audio_s / t.speech_audio_seconds_per_second,
            llm_seconds_per_task: out_tok / t.llm_decode_tokens_per_second + in_tok / t.prefill(),
            billed_minutes_per_task: table.transcribe_billed_seconds(audio_s) / 60.0,
            summary_usd_per_task,
            input: input.clone(),
            table,
        })
    }

    fn instances(&self, gpus: u32) -> u32 {
        gpus.div_ceil(self.gpus_per_instance)
    }

    fn managed(&self, tasks: f64, share: f64) -> Managed {
        let billed_minutes = tasks * share * self.billed_minutes_per_task;
        let speech_usd = self.table.transcribe_monthly_usd(billed_minutes);
        let summary_usd = tasks * share * self.summary_usd_per_task;
        Managed {
            monthly_usd: speech_usd + summary_usd,
            speech_usd,
            summary_usd,
            billed_minutes,
            per_task_usd: self.billed_minutes_per_task
                * self.table.transcribe.tiers[0].usd_per_minute
                + self.summary_usd_per_task,
        }
    }

    fn self_hosted(&self, gpus: u32) -> SelfHosted {
        let instances = self.instances(gpus);
        let instance_hours = instances as f64 * self.active_hours;
        let gpu_usd = instance_hours * self.instance_hourly;
        let fixed_usd = self.table.eks_monthly_usd();
        SelfHosted {
            monthly_usd: gpu_usd + fixed_usd,
            gpu_usd,
            fixed_usd,
            instances,
            instance_hours,
            active_hours_per_month: self.active_hours,
            blended_usd_per_hour: self.instance_hourly,
        }
    }

    fn point(&self, tasks: f64) -> Point {
        let tasks_per_second = tasks / (self.active_hours * 3600.0);
        let speech_load = tasks_per_second * self.speech_seconds_per_task;
        let llm_load = tasks_per_second * self.llm_seconds_per_task;
        let p = self.input.peak_to_average;
        let u = self.input.target_utilisation;
        let speech_gpus = gpus_for(p * speech_load, u);
        let llm_gpus = gpus_for(p * llm_load, u);
        let combined_peak = p * (speech_load + llm_load) / u;
        let shared = self.colocated && combined_peak <= 1.0 + 1e-9;
        let gpus = if self.colocated {
            gpus_for(p * (speech_load + llm_load), u)
        } else {
            speech_gpus.saturating_add(llm_gpus)
        };
        Point {
            speech_load,
            llm_load,
            speech_gpus,
            llm_gpus,
            gpus,
            shared,
            self_hosted: self.self_hosted(gpus),
            managed: self.managed(tasks, 1.0),
        }
    }

    /// The cheapest GPU count with managed overflow, endpoints included.
    fn hybrid(&self, tasks: f64, pt: &Point) -> Hybrid {
        let p = self.input.peak_to_average;
        let u = self.input.target_utilisation;
        let make = |gpus: u32, share: f64| {
            let managed = self.managed(tasks, share);
            let (sh_usd, instances) = if gpus == 0 {
                (0.0, 0)
            } else {
                let s = self.self_hosted(gpus);
                (s.monthly_usd, s.instances)
            };
            Hybrid {
                monthly_usd: sh_usd + managed.monthly_usd,
                gpus,
                instances,
                self_hosted_usd: sh_usd,
                managed_usd: managed.monthly_usd,
                managed_share: share,
                beats_both: false,
            }
        };
        let all_managed = make(0, 1.0);
        let all_self = make(pt.gpus, 0.0);
        // Ties go to the simpler endpoints.
        let mut best = if all_self.monthly_usd < all_managed.monthly_usd {
            all_self.clone()
        } else {
            all_managed.clone()
        };
        let total = pt.speech_load + pt.llm_load;
        if self.colocated {
            for n in 1..pt.gpus {
                let share = overflow_share(n as f64 * u / total, p);
                let h = make(n, share);
                if h.monthly_usd < best.monthly_usd - 1e-6 {
                    best = h;
                }
            }
        } else {
            // A job overflows whole when either engine is full; size the
            // LLM side to keep up with the speech side.
            for ns in 1..=pt.speech_gpus {
                let xs = ns as f64 * u / pt.speech_load;
                let nl = ((xs * pt.llm_load / u) - 1e-9)
                    .ceil()
                    .clamp(1.0, pt.llm_gpus as f64) as u32;
                let share =
                    overflow_share(xs, p).max(overflow_share(nl as f64 * u / pt.llm_load, p));
                let gpus = ns + nl;
                if gpus >= pt.gpus {
                    continue;
                }
                let h = make(gpus, share);
                if h.monthly_usd < best.monthly_usd - 1e-6 {
                    best = h;
                }
            }
        }
        best.beats_both = best.gpus > 0
            && best.gpus < pt.gpus
            && best.monthly_usd < all_managed.monthly_usd.min(all_self.monthly_usd);
        best
    }
}

/// Share of the work above a capacity of `x` times the average load, for
/// a load whose peak is `peak` times its average.
///
/// The load inside active hours, sorted from highest to lowest over the
/// month (its load-duration curve), is taken as a straight line from
/// `peak` down: to `2 − peak` when `peak ≤ 2` (so the average is 1), or
/// to 0 at `2/peak` of the time, staying there, when `peak > 2`. The share
/// above `x` is the area between that line and `x`. A flat load (`peak =
/// 1`) overflows `1 − x` when `x < 1`.
pub fn overflow_share(x: f64, peak: f64) -> f64 {
    if x >= peak {
        return 0.0;
    }
    let x = x.max(0.0);
    let (slope, end) = if peak <= 2.0 {
        (2.0 * (peak - 1.0), 1.0)
    } else {
        (peak * peak / 2.0, 2.0 / peak)
    };
    let t = if slope <= 0.0 {
        end
    } else {
        ((peak - x) / slope).min(end)
    };
    ((peak - x) * t - slope * t * t / 2.0).clamp(0.0, 1.0)
}

/// Plans with the bundled price table.
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    plan_with(input, PriceTable::bundled())
}

/// Plans with a given price table (an operator's own copy).
pub fn plan_with(input: &PlanInput, table: &PriceTable) -> Result<Plan, PlanError> {
    let ctx = Ctx::new(input, table)?;
    let pt = ctx.point(input.tasks_per_month);
    let hybrid = ctx.hybrid(input.tasks_per_month, &pt);
    let managed_usd = pt.managed.monthly_usd;
    let self_usd = pt.self_hosted.monthly_usd;
    let phase = if hybrid.beats_both {
        Phase::Hybrid
    } else if self_usd < managed_usd {
        Phase::SelfHosted
    } else {
        Phase::Managed
    };
    let savings_pct = if managed_usd > 0.0 {
        (managed_usd - self_usd) / managed_usd * 100.0
    } else {
        0.0
    };
    let t = &ctx.table;
    let inst = t.instance(&input.instance)?;
    let model = t.bedrock_model(&input.bedrock_model)?;
    let mut warnings = Vec::new();
    if let Some(eol) = &model.end_of_life {
        warnings.push(format!(
            "{} reached end of life on Bedrock on {eol}; plan with a current model",
            input.bedrock_model
        ));
    }
    if pt.managed.billed_minutes > t.transcribe.tiers[0].up_to_minutes.unwrap_or(f64::INFINITY) {
        warnings.push(
            "the managed figure uses Transcribe volume tiers 2-4, which are not confirmed against AWS's price page".into(),
        );
    }
    if input.throughput.source.starts_with("assumed") {
        warnings.push("throughput is assumed from published figures on other GPUs: run `earshot bench` on the target instance and plan with --profile".into());
    }
    if input.throughput.source.starts_with("profile")
        && !input.throughput.source.contains(&inst.gpu_name)
    {
        warnings.push(format!(
            "the profile was not measured on a {} (the GPU of {}): its throughput may not carry over",
            inst.gpu_name, input.instance
        ));
    }
    let mut echoed = input.clone();
    echoed.summary_input_tokens = Some(input.input_tokens());
    echoed.summary_output_tokens = Some(input.output_tokens());
    Ok(Plan {
        speech_gpus: pt.speech_gpus,
        llm_gpus: pt.llm_gpus,
        shared_gpu: pt.shared,
        colocated: ctx.colocated,
        gpus: pt.gpus,
        load: Load {
            speech: pt.speech_load,
            llm: pt.llm_load,
            speech_seconds_per_task: ctx.speech_seconds_per_task,
            llm_seconds_per_task: ctx.llm_seconds_per_task,
            summary_input_tokens: input.input_tokens(),
            summary_output_tokens: input.output_tokens(),
        },
        self_hosted: pt.self_hosted.clone(),
        managed: pt.managed.clone(),
        hybrid,
        savings_pct,
        crossover_tasks_per_month: crossover(&ctx),
        phase,
        prices: PricesUsed {
            date: t.date.clone(),
            region: t.region.clone(),
            instance: input.instance.clone(),
            gpu_name: inst.gpu_name.clone(),
            gpus_per_instance: inst.gpus,
            gpu_memory_gib: inst.gpu_memory_gib,
            on_demand_usd_per_hour: inst.on_demand_usd_per_hour,
            spot_discount: inst.spot_discount,
            transcribe_tiers: t
                .transcribe
                .tiers
                .iter()
                .map(|tier| TierUsed {
                    up_to_minutes: tier.up_to_minutes,
                    usd_per_minute: tier.usd_per_minute,
                    confirmed: tier.confirmed,
                })
                .collect(),
            transcribe_minimum_seconds: t.transcribe.minimum_seconds,
            bedrock_model: input.bedrock_model.clone(),
            bedrock_input_usd_per_million: model.input_usd_per_million,
            bedrock_output_usd_per_million: model.output_usd_per_million,
            eks_usd_per_hour: t.eks.control_plane_usd_per_hour,
            overridden: input.prices.0.keys().cloned().collect(),
            left_out: t.left_out.note.clone(),
        },
        throughput_source: input.throughput.source.clone(),
        warnings,
        cost_curve: Vec::new(),
        input: echoed,
    })
}

/// The smallest whole number of tasks a month (same task shape and
/// settings) at which self-hosted costs no more than managed.
///
/// Self-hosted cost is a step function of volume (whole GPUs) and managed
/// cost rises with every task, so the two cross where managed climbs past
/// a step: there they are equal to within one task's managed price (well
/// under $1 for tasks under ~40 minutes). Found by scanning volumes 1% apart
/// from 1 to 1e9, then bisecting whole numbers between the last volume
/// where self-hosted costs more and the first where it does not.
fn crossover(ctx: &Ctx) -> Option<u64> {
    let cheaper = |tasks: f64| {
        let p = ctx.point(tasks);
        p.self_hosted.monthly_usd <= p.managed.monthly_usd
    };
    let mut prev = 0.0_f64;
    let mut v = 1.0_f64;
    loop {
        if cheaper(v) {
            let (mut lo, mut hi) = (prev as u64, v as u64);
            // Invariant: lo is not cheaper (or 0), hi is.
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if cheaper(mid as f64) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            return Some(hi);
        }
        if v >= MAX_TASKS_PER_MONTH {
            return None;
        }
        prev = v;
        v = (v * 1.01).ceil().max(v + 1.0).min(MAX_TASKS_PER_MONTH);
    }
}

/// Volumes for a chart: 1,000 to 1,000,000 tasks a month, `per_decade`
/// points per tenfold, evenly spaced on a log scale.
pub fn log_volumes(from: f64, to: f64, per_decade: usize) -> Vec<f64> {
    if !(from > 0.0 && to >= from && per_decade > 0) {
        return Vec::new();
    }
    let decades = (to / from).log10();
    let n = (decades * per_decade as f64).round() as usize;
    (0..=n)
        .map(|i| (from * 10f64.powf(i as f64 / per_decade as f64)).round())
        .collect()
}

/// The default chart range: 1K–1M tasks, 40 points a decade (enough to
/// show the GPU steps).
pub fn default_volumes() -> Vec<f64> {
    log_volumes(1e3, 1e6, 40)
}

/// Monthly cost of each option at each volume, everything else as in
/// `input`.
pub fn cost_curve(input: &PlanInput, volumes: &[f64]) -> Result<Vec<CurvePoint>, PlanError> {
    cost_curve_with(input, volumes, PriceTable::bundled())
}

pub fn cost_curve_with(
    input: &PlanInput,
    volumes: &[f64],
    table: &PriceTable,
) -> Result<Vec<CurvePoint>, PlanError> {
    let ctx = Ctx::new(input, table)?;
    volumes
        .iter()
        .map(|&v| {
            if !(v.is_finite() && v > 0.0 && v <= MAX_TASKS_PER_MONTH) {
                return Err(PlanError::bad(
                    "volume",
                    v,
                    "chart volumes must be above 0 and at most 1,000,000,000",
                ));
            }
            let pt = ctx.point(v);
            let h = ctx.hybrid(v, &pt);
            Ok(CurvePoint {
                tasks_per_month: v,
                managed_usd: pt.managed.monthly_usd,
                self_hosted_usd: pt.self_hosted.monthly_usd,
                hybrid_usd: h.monthly_usd,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} != {b} (±{tol})");
    }

    /// The seed's workload with hand-entered throughput round enough to
    /// check by hand.
    fn seed() -> PlanInput {
        let mut i = PlanInput::new(50_000.0, 3.0);
        i.throughput = Throughput {
            speech_audio_seconds_per_second: 40.0,
            llm_decode_tokens_per_second: 400.0,
            llm_prefill_tokens_per_second: Some(4000.0),
            source: "given".into(),
        };
        i
    }

    #[test]
    fn the_seed_example_costs_3600_for_speech_and_runs_on_one_gpu() {
        let p = plan(&seed()).unwrap();
        // 50,000 × 3 min = 150,000 min × $0.024 = $3,600.
        close(p.managed.speech_usd, 3_600.0, 1e-6);
        // Tokens: ceil(3 × 150 × 1.3) = 585 in, 200 out. Nova Lite:
        // (585 × 0.06 + 200 × 0.24) / 1e6 = 83.1e-6 per task × 50,000
        // = $4.155.
        assert_eq!(p.load.summary_input_tokens, 585.0);
        close(p.managed.summary_usd, 4.155, 1e-9);
        close(p.managed.monthly_usd, 3_604.155, 1e-6);
        // Load, 24×7 = 730 h = 2,628,000 s: 50,000 / 2,628,000 =
        // 0.0190259 tasks/s. Speech 180 s / 40 = 4.5 GPU-s per task →
        // 0.085616; LLM 200/400 + 585/4000 = 0.64625 GPU-s → 0.012295.
        close(p.load.speech, 0.085616, 1e-6);
        close(p.load.llm, 0.012295, 1e-6);
        // Peak ×2 at 70%: (0.085616 + 0.012295) × 2 / 0.7 = 0.2797 ≤ 1.
        // 3 + 10 GiB ≤ 24 × 0.9: one shared GPU.
        assert_eq!((p.speech_gpus, p.llm_gpus, p.gpus), (1, 1, 1));
        assert!(p.shared_gpu && p.colocated);
        // One g6.xlarge on demand 730 h × $0.8048 = $587.504, + EKS
        // 730 × $0.10 = $73 → $660.504.
        close(p.self_hosted.gpu_usd, 587.504, 1e-6);
        close(p.self_hosted.monthly_usd, 660.504, 1e-6);
        // Savings: (3,604.155 − 660.504) / 3,604.155 = 81.67%.
        close(p.savings_pct, 81.674, 1e-3);
        assert_eq!(p.phase, Phase::SelfHosted);
        assert_eq!(p.prices.date, "2026-11-30");
        // Hybrid cannot beat one GPU that carries everything.
        assert_eq!(p.hybrid.gpus, 1);
        assert!(!p.hybrid.beats_both);
    }

    #[test]
    fn the_crossover_is_where_self_hosted_meets_managed() {
        let input = seed();
        let p = plan(&input).unwrap();
        // Per task: $0.072 (3 min) + $0.0000831 = $0.0720831; one GPU +
        // EKS = $660.504 → 660.504 / 0.0720831 = 9,163.09 tasks: 9,163 cost
        // $660.497 managed (still below), 9,164 cost $660.570 (above), all
        // on one GPU.
        let c = p.crossover_tasks_per_month.unwrap();
        assert_eq!(c, 9_164);
        let at = |t: f64| {
            let mut i = input.clone();
            i.tasks_per_month = t;
            plan(&i).unwrap()
        };
        let here = at(c as f64);
        assert!(here.self_hosted.monthly_usd <= here.managed.monthly_usd);
        close(here.self_hosted.monthly_usd, here.managed.monthly_usd, 1.0);
        let before = at(c as f64 - 1.0);
        assert!(before.self_hosted.monthly_usd > before.managed.monthly_usd);
    }

    #[test]
    fn active_hours_reduce_gpu_hours_proportionally() {
        let mut i = seed();
        i.active_hours_per_day = 12.0;
        let p = plan(&i).unwrap();
        // 12 h × 7 d × 730/168 = 365 h: half of 730, same single GPU.
        close(p.self_hosted.active_hours_per_month, 365.0, 1e-9);
        assert_eq!(p.gpus, 1);
        // 365 × 0.8048 = $293.752; EKS still all month: + $73.
        close(p.self_hosted.gpu_usd, 293.752, 1e-6);
        close(p.self_hosted.monthly_usd, 366.752, 1e-6);
        // Weekdays 8-18: 10 × 5 × 730/168 = 217.26 h.
        i.active_hours_per_day = 10.0;
        i.days_per_week = 5.0;
        let p = plan(&i).unwrap();
        close(p.self_hosted.instance_hours, 217.262, 1e-3);
    }

    #[test]
    fn spot_share_blends_the_gpu_price() {
        let mut i = seed();
        i.spot_share = 0.5;
        let p = plan(&i).unwrap();
        // 0.8048 × (1 − 0.5 × 0.49) = $0.607624/h × 730 = $443.56552.
        close(p.self_hosted.blended_usd_per_hour, 0.607624, 1e-9);
        close(p.self_hosted.gpu_usd, 443.56552, 1e-6);
    }

    #[test]
    fn throughput_decides_whether_one_gpu_is_enough() {
        // Speech at 4 audio-s/s (a slow GPU): 0.0190259 × 180 / 4 = 0.85616
        // GPU-equivalents; peak ×2 / 0.7 = 2.446 → 3 speech GPUs; LLM as in
        // the seed case: 0.012295 × 2 / 0.7 = 0.035 → 1. Colocated:
        // (0.85616 + 0.012295) × 2 / 0.7 = 2.4813 → 3 GPUs.
        let mut slow = seed();
        slow.throughput.speech_audio_seconds_per_second = 4.0;
        let p = plan(&slow).unwrap();
        assert_eq!((p.speech_gpus, p.llm_gpus, p.gpus), (3, 1, 3));
        assert!(!p.shared_gpu);
        // 3 × 587.504 + 73 = $1,835.512.
        close(p.self_hosted.monthly_usd, 1_835.512, 1e-6);
        // Same throughput, but the engines do not fit one L4 together
        // (12 + 12 GiB > 21.6): each gets its own, 3 + 1 = 4.
        slow.memory = MemoryNeeds {
            speech_gib: 12.0,
            llm_gib: 12.0,
            combined_gib: None,
        };
        let p = plan(&slow).unwrap();
        assert!(!p.colocated);
        assert_eq!(p.gpus, 4);
        // A profile whose speech runs at 40 audio-s/s: one GPU does all.
        let fast: Profile = serde_json::from_value(profile_json(40.0, 400.0)).unwrap();
        let mut i = seed();
        i.use_profile(&fast, "fast.json");
        let p = plan(&i).unwrap();
        assert!(p.shared_gpu, "{p:?}");
        assert!(p.throughput_source.starts_with("profile fast.json"));
        // Same profile at 4 audio-s/s: three.
        let slow: Profile = serde_json::from_value(profile_json(4.0, 400.0)).unwrap();
        i.use_profile(&slow, "slow.json");
        let p = plan(&i).unwrap();
        assert!(!p.shared_gpu);
        assert_eq!(p.speech_gpus, 3);
    }

    fn profile_json(speech: f64, decode: f64) -> serde_json::Value {
        serde_json::json!({
            "version": 1, "earshot_version": "0.1.0", "created_at": "2026-11-30T00:00:00Z",
            "quick": false,
            "machine": {"cpu_model": "x", "cpu_cores": 8, "device": "cuda:0",
                        "gpu_name": "NVIDIA L4", "gpu_memory_bytes": 24u64 << 30},
            "models": {"whisper": "large-v3", "llm": "llama", "compute_type": "float16"},
            "load_seconds": {"whisper": 1.0},
            "speech": {"long": [], "short": [], "best_audio_seconds_per_second": speech},
            "llm": {"decode": [], "best_decode_tokens_per_second": decode,
                    "prefill_tokens_per_second": decode * 10.0},
            "memory": {"peak_rss_bytes": 1u64 << 30, "device_bytes": 8u64 << 30}
        })
    }

    #[test]
    fn hybrid_keeps_gpus_for_the_base_and_sends_peaks_to_managed() {
        // A spiky load (peak 8× average) at a volume where the peak needs
        // many GPUs: keeping fewer and overflowing beats both endpoints.
        let mut i = seed();
        i.tasks_per_month = 400_000.0;
        i.peak_to_average = 8.0;
        i.throughput.speech_audio_seconds_per_second = 10.0;
        let p = plan(&i).unwrap();
        assert!(p.hybrid.beats_both, "{:?}", p.hybrid);
        assert_eq!(p.phase, Phase::Hybrid);
        assert!(p.hybrid.gpus > 0 && p.hybrid.gpus < p.gpus);
        assert!(p.hybrid.managed_share > 0.0 && p.hybrid.managed_share < 1.0);
        assert!(p.hybrid.monthly_usd < p.self_hosted.monthly_usd.min(p.managed.monthly_usd));
    }

    #[test]
    fn overflow_share_matches_the_load_duration_line() {
        // Flat load: capacity 0.5 of the average leaves half.
        close(overflow_share(0.5, 1.0), 0.5, 1e-12);
        close(overflow_share(1.0, 1.0), 0.0, 1e-12);
        // Peak 2: line from 2 to 0; above x = 1 lies the triangle with
        // base 0.5 and height 1: 0.25.
        close(overflow_share(1.0, 2.0), 0.25, 1e-12);
        close(overflow_share(0.0, 2.0), 1.0, 1e-12);
        // Peak 4: line from 4 to 0 at t = 0.5 (area 1); above 2: t = 0.25,
        // triangle 0.25 × 2 / 2 = 0.25.
        close(overflow_share(2.0, 4.0), 0.25, 1e-12);
        close(overflow_share(5.0, 4.0), 0.0, 1e-12);
    }

    #[test]
    fn bad_inputs_are_refused_with_the_field_named() {
        type Case = (&'static str, Box<dyn Fn(&mut PlanInput)>);
        let cases: Vec<Case> = vec![
            ("tasks_per_month", Box::new(|i| i.tasks_per_month = -5.0)),
            ("tasks_per_month", Box::new(|i| i.tasks_per_month = 0.0)),
            ("tasks_per_month", Box::new(|i| i.tasks_per_month = 2e9)),
            (
                "tasks_per_month",
                Box::new(|i| i.tasks_per_month = f64::NAN),
            ),
            ("avg_minutes", Box::new(|i| i.avg_minutes = 0.0)),
            (
                "active_hours_per_day",
                Box::new(|i| i.active_hours_per_day = 25.0),
            ),
            ("days_per_week", Box::new(|i| i.days_per_week = 8.0)),
            ("spot_share", Box::new(|i| i.spot_share = 1.2)),
            (
                "target_utilisation",
                Box::new(|i| i.target_utilisation = 0.0),
            ),
            ("peak_to_average", Box::new(|i| i.peak_to_average = 0.5)),
            (
                "speech_audio_seconds_per_second",
                Box::new(|i| i.throughput.speech_audio_seconds_per_second = 0.0),
            ),
        ];
        for (field, f) in cases {
            let mut i = seed();
            f(&mut i);
            let e = plan(&i).unwrap_err();
            assert!(
                matches!(&e, PlanError::BadInput { field: got, .. } if *got == field),
                "{field}: {e}"
            );
        }
        let mut i = seed();
        i.instance = "g9.mega".into();
        assert!(matches!(plan(&i), Err(PlanError::UnknownInstance { .. })));
        let mut i = seed();
        i.memory.llm_gib = 20.0;
        i.instance = "g4dn.xlarge".into();
        let e = plan(&i).unwrap_err().to_string();
        assert!(e.contains("T4") && e.contains("LLM"), "{e}");
    }

    #[test]
    fn overrides_and_eol_models_show_in_the_plan() {
        let mut i = seed();
        i.prices.push_str("ec2.g6.xlarge.on_demand=1.0").unwrap();
        i.bedrock_model = "anthropic.claude-3-haiku-20240307-v1:0".into();
        let p = plan(&i).unwrap();
        // 730 × $1.00 + $73 = $803.
        close(p.self_hosted.monthly_usd, 803.0, 1e-9);
        assert_eq!(p.prices.overridden, vec!["ec2.g6.xlarge.on_demand"]);
        assert!(p.warnings.iter().any(|w| w.contains("end of life")));
    }

    #[test]
    fn the_curve_rises_with_volume_and_the_json_has_the_contract_fields() {
        let input = seed();
        let c = cost_curve(&input, &default_volumes()).unwrap();
        assert_eq!(c.len(), 121);
        assert_eq!(c[0].tasks_per_month, 1_000.0);
        assert_eq!(c[120].tasks_per_month, 1_000_000.0);
        for w in c.windows(2) {
            assert!(w[1].managed_usd > w[0].managed_usd);
            assert!(w[1].self_hosted_usd >= w[0].self_hosted_usd);
        }
        for p in &c {
            assert!(p.hybrid_usd <= p.managed_usd.min(p.self_hosted_usd) + 1e-9);
        }
        assert!(cost_curve(&input, &[0.0]).is_err());
        let v = serde_json::to_value(plan(&input).unwrap()).unwrap();
        for path in [
            "/speech_gpus",
            "/llm_gpus",
            "/shared_gpu",
            "/self_hosted/monthly_usd",
            "/managed/monthly_usd",
            "/managed/speech_usd",
            "/managed/summary_usd",
            "/hybrid/monthly_usd",
            "/savings_pct",
            "/crossover_tasks_per_month",
            "/phase",
            "/prices/date",
        ] {
            assert!(v.pointer(path).is_some(), "{path} missing");
        }
        assert_eq!(v["phase"], "self-hosted");
        // A minimal body deserializes with every default.
        let i: PlanInput =
            serde_json::from_str(r#"{"tasks_per_month": 50000, "avg_minutes": 3}"#).unwrap();
        assert_eq!(i.instance, "g6.xlarge");
        assert!(serde_json::from_str::<PlanInput>(
            r#"{"tasks_per_month": 1, "avg_minutes": 3, "oops": 1}"#
        )
        .is_err());
    }
}
