//! `earshot plan`: is it time to self-host? Reads a workload (and a
//! measured profile from `earshot bench`, or throughput by hand), prints
//! GPU counts, monthly costs on both sides, the hybrid optimum, the
//! crossover volume and the phase, and draws the cost chart. The numbers
//! come from `earshot-planner`, the same code `POST /v1/plan` runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use earshot_planner::plan::{self, Throughput, DEFAULT_BEDROCK_MODEL, DEFAULT_INSTANCE};
use earshot_planner::prices::OVERRIDE_KEYS;
use earshot_planner::profile::{Profile, PROFILE_VERSION};
use earshot_planner::{chart, PlanError, PlanInput, PriceTable};

#[derive(clap::Args)]
#[command(after_help = concat!(
    "Price overrides (--price KEY=VALUE, repeatable): ",
    "transcribe.tier1..tier4 (USD/min), transcribe.minimum_seconds, ",
    "bedrock.<model id>.input / .output (USD per 1M tokens), ",
    "ec2.<instance>.on_demand (USD/h), ec2.<instance>.spot_discount (0-1), ",
    "eks.control_plane (USD/h)."
))]
pub struct PlanArgs {
    /// Tasks (recordings) a month.
    #[arg(
        long,
        env = "EARSHOT_PLAN_TASKS_PER_MONTH",
        allow_negative_numbers = true
    )]
    tasks_per_month: f64,
    /// Average audio length of a task, minutes.
    #[arg(long, env = "EARSHOT_PLAN_AVG_MINUTES", allow_negative_numbers = true)]
    avg_minutes: f64,
    /// Summarizer input tokens per task [default: minutes × 150 words ×
    /// 1.3 tokens/word].
    #[arg(long, allow_negative_numbers = true)]
    summary_input_tokens: Option<f64>,
    /// Summarizer output tokens per task [default: 200].
    #[arg(long, allow_negative_numbers = true)]
    summary_output_tokens: Option<f64>,
    /// Hours a day the GPU fleet runs; outside them it is at zero and jobs
    /// wait in the queue.
    #[arg(
        long,
        env = "EARSHOT_PLAN_ACTIVE_HOURS",
        default_value_t = 24.0,
        allow_negative_numbers = true
    )]
    active_hours: f64,
    /// Days a week the fleet runs.
    #[arg(
        long,
        env = "EARSHOT_PLAN_DAYS_PER_WEEK",
        default_value_t = 7.0,
        allow_negative_numbers = true
    )]
    days_per_week: f64,
    /// EC2 GPU instance type (see the price table for the list).
    #[arg(long, env = "EARSHOT_PLAN_INSTANCE", default_value = DEFAULT_INSTANCE)]
    instance: String,
    /// Share of GPU hours on spot, 0 to 1.
    #[arg(
        long,
        env = "EARSHOT_PLAN_SPOT_SHARE",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    spot_share: f64,
    /// GPU utilisation to size for at peak, 0 to 1.
    #[arg(
        long,
        env = "EARSHOT_PLAN_UTILISATION",
        default_value_t = 0.7,
        allow_negative_numbers = true
    )]
    utilisation: f64,
    /// Peak load over average load inside active hours.
    #[arg(
        long,
        env = "EARSHOT_PLAN_PEAK_TO_AVERAGE",
        default_value_t = 2.0,
        allow_negative_numbers = true
    )]
    peak_to_average: f64,
    /// Bedrock model the managed side would summarize with.
    #[arg(long, env = "EARSHOT_PLAN_BEDROCK_MODEL", default_value = DEFAULT_BEDROCK_MODEL)]
    bedrock_model: String,
    /// Throughput and GPU memory from `earshot bench --output FILE`.
    #[arg(long, env = "EARSHOT_PLAN_PROFILE", conflicts_with_all = ["speech_throughput", "llm_throughput"])]
    profile: Option<PathBuf>,
    /// Speech audio-seconds per wall-second on one GPU, by hand.
    #[arg(long, allow_negative_numbers = true)]
    speech_throughput: Option<f64>,
    /// LLM generated tokens per second on one GPU (batched), by hand.
    #[arg(long, allow_negative_numbers = true)]
    llm_throughput: Option<f64>,
    /// LLM prompt tokens per second on one GPU [default: 10 × --llm-throughput].
    #[arg(long, allow_negative_numbers = true)]
    llm_prefill_throughput: Option<f64>,
    /// GPU memory the speech engine holds, GiB [default: 3].
    #[arg(long, allow_negative_numbers = true)]
    speech_memory_gib: Option<f64>,
    /// GPU memory the LLM holds, GiB [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    llm_memory_gib: Option<f64>,
    /// Override one price (repeatable).
    #[arg(long = "price", value_name = "KEY=VALUE")]
    prices: Vec<String>,
    /// A whole price table in prices.toml's format instead of the bundled one.
    #[arg(long, env = "EARSHOT_PRICES_FILE", value_name = "FILE")]
    prices_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Draw cost against volume (1K to 1M tasks, wider if needed) to FILE
    /// (.svg or .png).
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// The flag an input field came from, for error messages.
fn flag(field: &str) -> String {
    match field {
        "active_hours_per_day" => "--active-hours".into(),
        "target_utilisation" => "--utilisation".into(),
        "speech_audio_seconds_per_second" => "--speech-throughput".into(),
        "llm_decode_tokens_per_second" => "--llm-throughput".into(),
        "llm_prefill_tokens_per_second" => "--llm-prefill-throughput".into(),
        "speech_gib" => "--speech-memory-gib".into(),
        "llm_gib" => "--llm-memory-gib".into(),
        f => format!("--{}", f.replace('_', "-")),
    }
}

fn explain(e: PlanError) -> anyhow::Error {
    match e {
        PlanError::BadInput {
            field,
            value,
            expected,
        } => anyhow::anyhow!("{} {value}: {expected}", flag(field)),
        e => e.into(),
    }
}

fn input(args: &PlanArgs) -> Result<PlanInput> {
    let mut i = PlanInput::new(args.tasks_per_month, args.avg_minutes);
    i.summary_input_tokens = args.summary_input_tokens;
    i.summary_output_tokens = args.summary_output_tokens;
    i.active_hours_per_day = args.active_hours;
    i.days_per_week = args.days_per_week;
    i.instance = args.instance.clone();
    i.spot_share = args.spot_share;
    i.target_utilisation = args.utilisation;
    i.peak_to_average = args.peak_to_average;
    i.bedrock_model = args.bedrock_model.clone();
    if let Some(path) = &args.profile {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the profile {}", path.display()))?;
        let p: Profile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an earshot bench profile", path.display()))?;
        if p.version != PROFILE_VERSION {
            bail!(
                "{}: profile version {} (this earshot reads version {PROFILE_VERSION}): rerun earshot bench",
                path.display(),
                p.version
            );
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        i.use_profile(&p, &name);
    } else if args.speech_throughput.is_some() || args.llm_throughput.is_some() {
        let d = Throughput::default();
        i.throughput = Throughput {
            speech_audio_seconds_per_second: args
                .speech_throughput
                .unwrap_or(d.speech_audio_seconds_per_second),
            llm_decode_tokens_per_second: args
                .llm_throughput
                .unwrap_or(d.llm_decode_tokens_per_second),
            llm_prefill_tokens_per_second: args.llm_prefill_throughput,
            source: match (args.speech_throughput, args.llm_throughput) {
                (Some(_), Some(_)) => "given".into(),
                (Some(_), None) => {
                    "speech given; LLM assumed (vLLM sweep, Llama 3.1 8B, A100)".into()
                }
                _ => "LLM given; speech assumed (faster-whisper README, RTX 3070 Ti)".into(),
            },
        };
    } else if let Some(p) = args.llm_prefill_throughput {
        i.throughput.llm_prefill_tokens_per_second = Some(p);
    }
    if let Some(g) = args.speech_memory_gib {
        i.memory.speech_gib = g;
        i.memory.combined_gib = None;
    }
    if let Some(g) = args.llm_memory_gib {
        i.memory.llm_gib = g;
        i.memory.combined_gib = None;
    }
    for pair in &args.prices {
        i.prices
            .push_str(pair)
            .map_err(|e| anyhow::anyhow!("{e} ({OVERRIDE_KEYS})"))?;
    }
    Ok(i)
}

/// Chart volumes: 1K–1M, widened by whole decades to include the planned
/// volume.
fn chart_volumes(tasks: f64) -> Vec<f64> {
    let lo = 1e3_f64.min(10f64.powf(tasks.log10().floor()));
    let hi = 1e6_f64.max(10f64.powf(tasks.log10().ceil()));
    plan::log_volumes(lo.max(1.0), hi, 40)
}

pub fn run(args: PlanArgs) -> Result<ExitCode> {
    let i = input(&args)?;
    let custom;
    let table: &PriceTable = match &args.prices_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the price table {}", path.display()))?;
            custom = PriceTable::from_toml_str(&text)
                .with_context(|| format!("in {}", path.display()))?;
            &custom
        }
        None => PriceTable::bundled(),
    };
    let p = plan::plan_with(&i, table).map_err(explain)?;
    if let Some(path) = &args.chart {
        let curve =
            plan::cost_curve_with(&i, &chart_volumes(i.tasks_per_month), table).map_err(explain)?;
        let title = format!(
            "Monthly cost: {} min per task, {} ({}), spot share {:.0}%",
            trim(i.avg_minutes),
            i.instance,
            p.prices.gpu_name,
            i.spot_share * 100.0
        );
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let bytes = match ext.as_deref() {
            Some("svg") => chart::svg(&curve, p.crossover_tasks_per_month, &title)?.into_bytes(),
            Some("png") => chart::png(&curve, p.crossover_tasks_per_month, &title)?,
            _ => bail!(
                "--chart {}: the file name must end in .svg or .png",
                path.display()
            ),
        };
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&p)?),
        Format::Text => print!("{}", text(&p)),
    }
    if let Some(path) = &args.chart {
        if matches!(args.format, Format::Text) {
            println!("chart: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `3` rather than `3.0`, `2.5` as is.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn usd(v: f64) -> String {
    let whole = v.round();
    if whole.abs() >= 1e15 {
        return format!("${v:.3e}");
    }
    let sign = if whole < 0.0 { "-" } else { "" };
    format!("{sign}${}", chart::group(whole.abs() as u64))
}

fn gpus(n: u32) -> String {
    format!("{n} GPU{}", if n == 1 { "" } else { "s" })
}

/// The operator's report.
fn text(p: &earshot_planner::Plan) -> String {
    use std::fmt::Write;
    let i = &p.input;
    let pr = &p.prices;
    let sh = &p.self_hosted;
    let m = &p.managed;
    let h = &p.hybrid;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Plan for {} tasks/month of {} min ({} audio-hours), summaries {} in / {} out tokens",
        chart::group(i.tasks_per_month.round() as u64),
        trim(i.avg_minutes),
        chart::group((i.tasks_per_month * i.avg_minutes / 60.0).round() as u64),
        p.load.summary_input_tokens,
        p.load.summary_output_tokens
    );
    let _ = writeln!(
        s,
        "Fleet on {} ({} × {} {} GiB), {:.0}% spot, active {} h × {} d = {:.0} h/month",
        i.instance,
        pr.gpus_per_instance,
        pr.gpu_name,
        pr.gpu_memory_gib,
        i.spot_share * 100.0,
        trim(i.active_hours_per_day),
        trim(i.days_per_week),
        sh.active_hours_per_month
    );
    let _ = writeln!(
        s,
        "\nGPUs (sized for {}× the average load at {:.0}% utilisation)",
        trim(i.peak_to_average),
        i.target_utilisation * 100.0
    );
    let _ = writeln!(
        s,
        "  speech engine        {:<8} average load {:.3} GPU",
        gpus(p.speech_gpus),
        p.load.speech
    );
    let _ = writeln!(
        s,
        "  LLM                  {:<8} average load {:.3} GPU",
        gpus(p.llm_gpus),
        p.load.llm
    );
    let share = if p.shared_gpu {
        "yes: one GPU runs both engines in one process".to_string()
    } else if p.colocated {
        format!("both engines on every GPU: {} in all", gpus(p.gpus))
    } else {
        format!(
            "no: the engines do not fit one GPU's memory together; {} in all",
            gpus(p.gpus)
        )
    };
    let _ = writeln!(s, "  shared GPU           {share}");
    let _ = writeln!(s, "\nMonthly cost");
    let _ = writeln!(
        s,
        "  managed              {:>10}  Transcribe {} ({} billed min) + Bedrock {} ({})",
        usd(m.monthly_usd),
        usd(m.speech_usd),
        chart::group(m.billed_minutes.round() as u64),
        usd(m.summary_usd),
        pr.bedrock_model
    );
    let _ = writeln!(
        s,
        "  self-hosted          {:>10}  {} × {:.0} h × ${:.4}/h = {} + EKS {}",
        usd(sh.monthly_usd),
        sh.instances,
        sh.active_hours_per_month,
        sh.blended_usd_per_hour,
        usd(sh.gpu_usd),
        usd(sh.fixed_usd)
    );
    let _ = writeln!(
        s,
        "  hybrid optimum       {:>10}  {} kept, {:.1}% of tasks to managed{}",
        usd(h.monthly_usd),
        gpus(h.gpus),
        h.managed_share * 100.0,
        if h.beats_both { " (beats both)" } else { "" }
    );
    let _ = writeln!(
        s,
        "\n  savings              {:.1}% self-hosted vs managed",
        p.savings_pct
    );
    let _ = writeln!(
        s,
        "  crossover            {}",
        match p.crossover_tasks_per_month {
            Some(c) => format!(
                "{} tasks/month (self-hosted costs no more than managed from there)",
                chart::group(c)
            ),
            None => "none up to 1,000,000,000 tasks/month".into(),
        }
    );
    let _ = writeln!(s, "  phase                {}", p.phase.as_str());
    let _ = writeln!(
        s,
        "\nPrices of {} ({}): {} ${}/h on demand, {:.0}% off on spot; Transcribe ${}/min (first tier); {} ${}/${} per 1M tokens; EKS ${}/h{}",
        pr.date,
        pr.region,
        pr.instance,
        pr.on_demand_usd_per_hour,
        pr.spot_discount * 100.0,
        pr.transcribe_tiers.first().map(|t| t.usd_per_minute).unwrap_or(0.0),
        pr.bedrock_model,
        pr.bedrock_input_usd_per_million,
        pr.bedrock_output_usd_per_million,
        pr.eks_usd_per_hour,
        if pr.overridden.is_empty() {
            String::new()
        } else {
            format!("; overridden: {}", pr.overridden.join(", "))
        }
    );
    let _ = writeln!(s, "Throughput: {}", p.throughput_source);
    let _ = writeln!(s, "Left out: {}", pr.left_out);
    for w in &p.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

// ---- HTTP: `POST /v1/plan` and the planner page ----

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::server::ApiError;

/// The page's policy: nothing but this origin's own script, style and
/// fetches; no inline code, no frames, no forms, no plugins.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/v1/plan`, `/planner` and the page's script and style. No state: the
/// planner reads only the bundled price table.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/v1/plan", post(plan_http))
        .route("/planner", get(page))
        .route(
            "/planner.js",
            get(|| asset("text/javascript; charset=utf-8", include_str!("planner.js"))),
        )
        .route(
            "/planner.css",
            get(|| asset("text/css; charset=utf-8", include_str!("planner.css"))),
        )
}

/// The JSON body is a [`PlanInput`]; the answer is the plan with its cost
/// curve (1K–1M tasks). Bad JSON and bad values are 400 with the usual
/// error body, naming the field.
async fn plan_http(body: axum::body::Bytes) -> Result<Response, ApiError> {
    let input: PlanInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))?;
    let answer = tokio::task::spawn_blocking(move || -> Result<_, PlanError> {
        let mut p = plan::plan(&input)?;
        p.cost_curve = plan::cost_curve(&input, &plan::default_volumes())?;
        Ok(p)
    })
    .await
    .map_err(|e| ApiError::bad(format!("planning failed: {e}")))?;
    match answer {
        Ok(p) => Ok(axum::Json(p).into_response()),
        Err(PlanError::BadInput {
            field,
            value,
            expected,
        }) => Err(ApiError::bad(format!("{field} = {value}: {expected}")).param(field)),
        Err(e @ PlanError::UnknownInstance { .. }) => {
            Err(ApiError::bad(e.to_string()).param("instance"))
        }
        Err(e @ PlanError::UnknownModel { .. }) => {
            Err(ApiError::bad(e.to_string()).param("bedrock_model"))
        }
        Err(e @ PlanError::BadOverride { .. }) => Err(ApiError::bad(e.to_string()).param("prices")),
        Err(e) => Err(ApiError::bad(e.to_string())),
    }
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn asset(ctype: &'static str, body: &'static str) -> Response {
    secure(([(header::CONTENT_TYPE, ctype)], body).into_response())
}

/// The page, with the instance list filled from the price table so the
/// select never offers a type the planner would refuse.
async fn page() -> Response {
    let table = PriceTable::bundled();
    let options: String = table
        .ec2
        .instances
        .iter()
        .map(|(name, i)| {
            let selected = if name == DEFAULT_INSTANCE {
                " selected"
            } else {
                ""
            };
            format!(
                "<option value=\"{name}\"{selected}>{name} ({} × {}, ${}/h)</option>",
                i.gpus, i.gpu_name, i.on_demand_usd_per_hour
            )
        })
        .collect();
    let html = include_str!("planner.html")
        .replace("<!--INSTANCES-->", &options)
        .replace("<!--PRICE_DATE-->", table.date());
    secure(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}
