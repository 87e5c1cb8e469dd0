//! Liveness, readiness and Prometheus metrics: the routes both `earshot
//! serve` and `earshot work --probe-bind` answer, so a Kubernetes pod
//! probes and scrapes the worker the same way as the HTTP endpoint.
//!
//! - `/health`: the process answers (liveness). Never touches the engines,
//!   so a long batch cannot make the kubelet restart a healthy pod.
//! - `/ready`: models loaded, every engine thread alive, the device still
//!   computes, and not shutting down. 503 with the reason otherwise.
//! - `/metrics`: Prometheus text, from the `metrics` facade.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::batcher::Batchers;

/// What the probe routes read.
pub struct Probes {
    /// None for a worker whose every stage runs on managed services: it
    /// loads no model and has no device to check.
    batchers: Option<Batchers>,
    metrics: PrometheusHandle,
    started: Instant,
    /// Cancelled at SIGTERM: from then on `/ready` says "draining", so a
    /// Service stops sending new requests while running ones finish.
    pub stop: CancellationToken,
}

impl Probes {
    /// Installs the process-wide Prometheus recorder (once per process),
    /// records the model load times, and starts the uptime clock.
    pub fn new(batchers: Option<Batchers>, stop: CancellationToken) -> Result<Arc<Probes>> {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ])
            .context("metrics buckets")?
            .install_recorder()
            .context("installing the metrics recorder")?;
        // Histogram samples wait in a queue until upkeep folds them into the
        // buckets; rendering does that too, but a server nobody scrapes
        // would grow without bound (found by scripts/soak).
        let upkeep = metrics.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .context("starting the metrics upkeep thread")?;
        let loaded = batchers.iter().flat_map(|b| b.info.load_seconds.iter());
        for (model, secs) in loaded {
            metrics::gauge!("earshot_model_load_seconds", "model" => model.clone()).set(*secs);
        }
        Ok(Arc::new(Probes {
            batchers,
            metrics,
            started: Instant::now(),
            stop,
        }))
    }
}

/// Prints `line` on stdout at once: scripts and tests read the bound
/// address from it (useful with port 0).
pub fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// `/health`, `/ready` and `/metrics`, with their state applied.
pub fn router(probes: Arc<Probes>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(probes)
}

/// Serves only the probe routes on `addr` until the process exits (the
/// kubelet keeps probing while the worker drains). Prints
/// `probes listening on ADDR` for scripts.
pub async fn serve(addr: SocketAddr, probes: Arc<Probes>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "probes listening");
    announce(format_args!("probes listening on {addr}"));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(probes)).await {
            tracing::error!(error = %e, "probe server stopped");
        }
    });
    Ok(())
}

async fn ready(State(p): State<Arc<Probes>>) -> Response {
    let info = p.batchers.as_ref().map(|b| b.info.clone());
    let device = match info.as_ref().map(|i| i.device.location()) {
        None => "none (managed backends only)".to_string(),
        Some(candle_core::DeviceLocation::Cpu) => "cpu".to_string(),
        Some(candle_core::DeviceLocation::Cuda { gpu_id }) => format!("cuda:{gpu_id}"),
        Some(candle_core::DeviceLocation::Metal { gpu_id }) => format!("metal:{gpu_id}"),
    };
    let health = match p.batchers.clone() {
        Some(batchers) => tokio::task::spawn_blocking(move || batchers.check_health())
            .await
            .unwrap_or_else(|e| Err(format!("health check panicked: {e}"))),
        None => Ok(()),
    };
    let (code, status, reason) = match health {
        _ if p.stop.is_cancelled() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            Some("shutting down".to_string()),
        ),
        Ok(()) => (StatusCode::OK, "ready", None),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some(e)),
    };
    let body = json!({
        "status": status,
        "reason": reason,
        "device": device,
        "whisper_models": info.as_ref().map(|i| i.whisper_models.clone()).unwrap_or_default(),
        "llm_model": info.as_ref().and_then(|i| i.llm_model.clone()),
        "load_seconds": info.as_ref().map(|i| i.load_seconds.clone()).unwrap_or_default(),
        "uptime_s": p.started.elapsed().as_secs_f64(),
    });
    (code, Json(body)).into_response()
}

async fn metrics_text(State(p): State<Arc<Probes>>) -> Response {
    if let Some(b) = &p.batchers {
        let s = &b.stats;
        metrics::gauge!("earshot_queue_depth", "engine" => "speech")
            .set(s.speech_queued.load(Relaxed) as f64);
        metrics::gauge!("earshot_queue_depth", "engine" => "llm")
            .set(s.llm_queued.load(Relaxed) as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        p.metrics.render(),
    )
        .into_response()
}

/// `earshot healthcheck`: exits 0 when an earshot process on this host
/// answers `/health` with 200. For the container's HEALTHCHECK, which has
/// no curl: the image ships only the binary.
#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// Addresses to try (`HOST:PORT`); the first to answer 200 wins.
    /// Default: the addresses in EARSHOT_PROBE_BIND (`work`) and
    /// EARSHOT_BIND (`serve`), else 127.0.0.1:9090 and 127.0.0.1:8000.
    #[arg(long = "addr")]
    addrs: Vec<String>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

pub fn healthcheck(args: HealthcheckArgs) -> Result<std::process::ExitCode> {
    let mut addrs = args.addrs;
    if addrs.is_empty() {
        for (var, fallback) in [
            ("EARSHOT_PROBE_BIND", "127.0.0.1:9090"),
            ("EARSHOT_BIND", "127.0.0.1:8000"),
        ] {
            let a = std::env::var(var).unwrap_or_else(|_| fallback.to_string());
            // A wildcard bind is reached on loopback.
            addrs.push(
                a.replace("0.0.0.0:", "127.0.0.1:")
                    .replace("[::]:", "[::1]:"),
            );
        }
    }
    let timeout = std::time::Duration::from_secs_f64(args.timeout.max(0.1));
    let mut why = Vec::new();
    for addr in &addrs {
        match get_health(addr, timeout) {
            Ok(()) => {
                println!("healthy: {addr}");
                return Ok(std::process::ExitCode::SUCCESS);
            }
            Err(e) => why.push(format!("{addr}: {e}")),
        }
    }
    eprintln!("unhealthy: {}", why.join("; "));
    Ok(std::process::ExitCode::from(1))
}

/// One `GET /health` over HTTP/1.0; Ok when the status is 200.
fn get_health(addr: &str, timeout: std::time::Duration) -> std::io::Result<()> {
    use std::io::{Error, Read, Write};
    use std::net::ToSocketAddrs;
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::other("no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let k = s.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(Error::other(format!("status {code}"))),
        None => Err(Error::other("no HTTP answer")),
    }
}
