//! Which backend runs each stage of a job: the seam that lets one worker
//! run every phase of the platform, from all-managed to all-local.
//!
//! A stage (speech or summary) has a [`Policy`]:
//! - **fixed**: always one backend (`local`, `transcribe`, `bedrock`);
//! - **weighted** (`--route speech=local:0.9,transcribe:0.1`): the canary
//!   split. The draw is a stable hash of the job id, so a redelivered job
//!   takes the same route and a re-run of the same ids splits the same way;
//! - **hybrid**: local unless the job would miss its deadline, judged from
//!   its age and the local engine's backlog divided by the throughput this
//!   worker has measured; then the managed backend.
//!
//! Shadowing (`--shadow-rate`) picks jobs with the same kind of stable draw
//! and compares the two backends' transcripts by word error rate.
//!
//! Everything here is a pure decision over numbers the worker passes in:
//! no I/O, no clocks, so the routing rules are tested exactly.

use std::fmt;

/// Where a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// earshot's own engines (candle, this process).
    Local,
    /// Amazon Transcribe (speech only).
    Transcribe,
    /// Amazon Bedrock (summaries only).
    Bedrock,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Transcribe => "transcribe",
            Backend::Bedrock => "bedrock",
        }
    }
    pub fn is_managed(self) -> bool {
        self != Backend::Local
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's two stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Speech,
    Summary,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Speech => "speech",
            Stage::Summary => "summary",
        }
    }
    /// The managed service that can run this stage.
    pub fn managed(self) -> Backend {
        match self {
            Stage::Speech => Backend::Transcribe,
            Stage::Summary => Backend::Bedrock,
        }
    }
    fn parse_backend(self, s: &str) -> Result<Backend, RouteError> {
        match (self, s.trim()) {
            (_, "local") => Ok(Backend::Local),
            (Stage::Speech, "transcribe") => Ok(Backend::Transcribe),
            (Stage::Summary, "bedrock") => Ok(Backend::Bedrock),
            (_, other) => Err(RouteError(format!(
                "unknown {} backend {other:?} (expected local or {})",
                self.as_str(),
                self.managed()
            ))),
        }
    }
}

/// A routing setting that does not parse or does not add up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

/// How one stage picks its backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    Fixed(Backend),
    /// Weights sum to 1; the order is the order given.
    Weighted(Vec<(Backend, f64)>),
    /// Local unless the deadline would be missed, then managed.
    Hybrid,
}

impl Policy {
    /// `local`, `transcribe`/`bedrock` (by stage) or `hybrid`.
    pub fn parse_backend(stage: Stage, s: &str) -> Result<Policy, RouteError> {
        if s.trim() == "hybrid" {
            return Ok(Policy::Hybrid);
        }
        stage.parse_backend(s).map(Policy::Fixed)
    }

    /// Every backend this policy can pick (what the worker must set up).
    pub fn backends(&self, stage: Stage) -> Vec<Backend> {
        match self {
            Policy::Fixed(b) => vec![*b],
            Policy::Weighted(w) => w
                .iter()
                .filter(|(_, p)| *p > 0.0)
                .map(|(b, _)| *b)
                .collect(),
            Policy::Hybrid => vec![Backend::Local, stage.managed()],
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Policy::Fixed(b) => b.to_string(),
            Policy::Hybrid => "hybrid".into(),
            Policy::Weighted(w) => w
                .iter()
                .map(|(b, p)| format!("{b}:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Parses `--route`: `speech=local:0.9,transcribe:0.1;summary=local:1`.
/// Stages may be given in any order, each at most once; the weights of a
/// stage must be non-negative and sum to 1 (within 1e-6).
pub fn parse_routes(s: &str) -> Result<Vec<(Stage, Policy)>, RouteError> {
    let mut out: Vec<(Stage, Policy)> = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (stage, weights) = part.split_once('=').ok_or_else(|| {
            RouteError(format!(
                "route {part:?} must look like speech=local:0.9,transcribe:0.1"
            ))
        })?;
        let stage = match stage.trim() {
            "speech" => Stage::Speech,
            "summary" => Stage::Summary,
            other => {
                return Err(RouteError(format!(
                    "unknown stage {other:?} in route (expected speech or summary)"
                )))
            }
        };
        if out.iter().any(|(s, _)| *s == stage) {
            return Err(RouteError(format!(
                "stage {} is routed twice",
                stage.as_str()
            )));
        }
        let mut w: Vec<(Backend, f64)> = Vec::new();
        for item in weights.split(',').map(str::trim) {
            let (b, p) = item.split_once(':').ok_or_else(|| {
                RouteError(format!("route weight {item:?} must look like local:0.9"))
            })?;
            let b = stage.parse_backend(b)?;
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| RouteError(format!("weight {p:?} of {b} is not a number")))?;
            if !p.is_finite() || p < 0.0 {
                return Err(RouteError(format!(
                    "weight of {b} must be at least 0, got {p}"
                )));
            }
            if w.iter().any(|(x, _)| *x == b) {
                return Err(RouteError(format!(
                    "{b} appears twice in the {} route",
                    stage.as_str()
                )));
            }
            w.push((b, p));
        }
        let sum: f64 = w.iter().map(|(_, p)| p).sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(RouteError(format!(
                "the {} route's weights sum to {sum}, not 1",
                stage.as_str()
            )));
        }
        out.push((stage, Policy::Weighted(w)));
    }
    if out.is_empty() {
        return Err(RouteError("the route is empty".into()));
    }
    Ok(out)
}

/// A stable draw in [0, 1) from a job id and a purpose: FNV-1a, fixed
/// forever, so routes do not move between releases or machines.
pub fn draw(purpose: &str, job_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose
        .bytes()
        .chain(std::iter::once(0u8))
        .chain(job_id.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalize (FNV's low bits are weak for short keys).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// What a hybrid decision knows about the local engine.
#[derive(Debug, Clone, Copy)]
pub struct LocalLoad {
    /// Seconds since the job was submitted.
    pub age_s: f64,
    /// Work queued or running ahead of this job (audio seconds, or tokens).
    pub backlog: f64,
    /// This job's own work, in the same unit.
    pub work: f64,
    /// Measured units per second (None before the first batch and no
    /// prior was given).
    pub throughput: Option<f64>,
    /// Seconds the job still needs after this stage (e.g. its summary).
    pub after_s: f64,
}

impl LocalLoad {
    /// When the job would finish if this stage ran locally, in seconds
    /// from submission (None when the throughput is unknown).
    pub fn predicted_finish_s(&self) -> Option<f64> {
        let t = self.throughput.filter(|t| *t > 0.0 && t.is_finite())?;
        Some(self.age_s + (self.backlog + self.work) / t + self.after_s)
    }
}

/// One routing decision and why (logged, and kept in metrics labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub backend: Backend,
    pub reason: &'static str,
    /// Hybrid: the predicted local finish, seconds from submission.
    pub predicted_s: Option<f64>,
}

/// Picks the backend for one stage of one job.
///
/// Hybrid with an unknown throughput (no batch measured, no prior) runs
/// locally only when nothing is queued ahead: the first job measures the
/// engine, and a burst arriving at a cold worker goes managed rather than
/// piling onto a queue of unknown speed.
pub fn choose(
    policy: &Policy,
    stage: Stage,
    job_id: &str,
    deadline_s: Option<f64>,
    load: impl FnOnce() -> LocalLoad,
) -> Decision {
    match policy {
        Policy::Fixed(b) => Decision {
            backend: *b,
            reason: "fixed",
            predicted_s: None,
        },
        Policy::Weighted(w) => {
            let u = draw(stage.as_str(), job_id);
            let mut acc = 0.0;
            let mut pick = w.last().map(|(b, _)| *b).unwrap_or(Backend::Local);
            for (b, p) in w {
                acc += p;
                if u < acc {
                    pick = *b;
                    break;
                }
            }
            Decision {
                backend: pick,
                reason: "weighted",
                predicted_s: None,
            }
        }
        Policy::Hybrid => {
            let Some(deadline) = deadline_s else {
                return Decision {
                    backend: Backend::Local,
                    reason: "no deadline",
                    predicted_s: None,
                };
            };
            let load = load();
            match load.predicted_finish_s() {
                Some(p) if p <= deadline => Decision {
                    backend: Backend::Local,
                    reason: "within deadline",
                    predicted_s: Some(p),
                },
                Some(p) => Decision {
                    backend: stage.managed(),
                    reason: "would miss deadline",
                    predicted_s: Some(p),
                },
                None if load.backlog <= 0.0 && load.age_s <= deadline => Decision {
                    backend: Backend::Local,
                    reason: "idle, throughput not yet measured",
                    predicted_s: None,
                },
                None => Decision {
                    backend: stage.managed(),
                    reason: "busy, throughput not yet measured",
                    predicted_s: None,
                },
            }
        }
    }
}

/// Whether a job is shadowed at `rate` (stable per job id).
pub fn shadowed(job_id: &str, rate: f64) -> bool {
    rate > 0.0 && draw("shadow", job_id) < rate
}

/// Words of a transcript for scoring: lower case, punctuation dropped
/// (apostrophes inside words kept), so formatting differences between
/// backends ("Launch," vs "launch") do not count as errors.
pub fn normalized_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
                .trim_matches('\'')
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `hypothesis` against `reference`: (substitutions +
/// deletions + insertions) / reference words. An empty reference gives 0
/// for an empty hypothesis and 1 otherwise.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalized_words(reference);
    let h = normalized_words(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    // One row of the edit-distance table at a time.
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    let mut cur = vec![0usize; h.len() + 1];
    for (i, rw) in r.iter().enumerate() {
        cur[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[h.len()] as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(age: f64, backlog: f64, work: f64, thr: Option<f64>) -> LocalLoad {
        LocalLoad {
            age_s: age,
            backlog,
            work,
            throughput: thr,
            after_s: 0.0,
        }
    }

    #[test]
    fn routes_parse_and_reject_bad_weights() {
        let r = parse_routes("speech=local:0.9,transcribe:0.1; summary=bedrock:1").unwrap();
        assert_eq!(
            r[0],
            (
                Stage::Speech,
                Policy::Weighted(vec![(Backend::Local, 0.9), (Backend::Transcribe, 0.1)])
            )
        );
        assert_eq!(
            r[1],
            (
                Stage::Summary,
                Policy::Weighted(vec![(Backend::Bedrock, 1.0)])
            )
        );
        for bad in [
            "speech=local:0.9,transcribe:0.2",
            "speech=local:0.5,bedrock:0.5",
            "speech=local:-0.1,transcribe:1.1",
            "speech=local:x",
            "voice=local:1",
            "speech=local:1;speech=local:1",
            "speech=local:0.5,local:0.5",
            "speech",
            "",
        ] {
            assert!(parse_routes(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse_routes("speech=local:0.9,transcribe:0.2")
            .unwrap_err()
            .to_string()
            .contains("sum to"));
    }

    #[test]
    fn weighted_split_is_close_to_its_weights_and_stable_per_job() {
        let p = Policy::Weighted(vec![(Backend::Local, 0.9), (Backend::Transcribe, 0.1)]);
        let n = 10_000;
        let mut managed = 0;
        for i in 0..n {
            let id = format!("job-{i}");
            let d = choose(&p, Stage::Speech, &id, None, || unreachable!());
            // The same id always takes the same route.
            assert_eq!(
                d.backend,
                choose(&p, Stage::Speech, &id, None, || unreachable!()).backend
            );
            managed += usize::from(d.backend == Backend::Transcribe);
        }
        let share = managed as f64 / n as f64;
        assert!((share - 0.1).abs() < 0.01, "managed share {share}");
    }

    #[test]
    fn speech_and_summary_draws_are_independent() {
        // A 50/50 split on both stages: about a quarter of jobs go managed
        // on both, not half (which a shared draw would give).
        let mut both = 0;
        for i in 0..4000 {
            let id = format!("{i}");
            both += usize::from(draw("speech", &id) < 0.5 && draw("summary", &id) < 0.5);
        }
        assert!((800..1200).contains(&both), "{both}");
    }

    #[test]
    fn hybrid_overflows_only_when_the_deadline_would_be_missed() {
        let d = |l: LocalLoad| choose(&Policy::Hybrid, Stage::Speech, "j", Some(60.0), || l);
        // 10 s old, 100 audio-s ahead + 20 of its own at 4×: done at 40 s.
        let ok = d(load(10.0, 100.0, 20.0, Some(4.0)));
        assert_eq!(ok.backend, Backend::Local);
        assert_eq!(ok.predicted_s, Some(40.0));
        // 300 audio-s ahead: done at 90 s > 60 s.
        let late = d(load(10.0, 300.0, 20.0, Some(4.0)));
        assert_eq!(late.backend, Backend::Transcribe);
        assert_eq!(late.reason, "would miss deadline");
        // What the job still needs afterwards counts too.
        let mut l = load(10.0, 100.0, 20.0, Some(4.0));
        l.after_s = 25.0;
        assert_eq!(d(l).backend, Backend::Transcribe);
        // Cold engine: the first job goes local, a burst behind it managed.
        assert_eq!(d(load(0.0, 0.0, 20.0, None)).backend, Backend::Local);
        assert_eq!(d(load(0.0, 5.0, 20.0, None)).backend, Backend::Transcribe);
        // Already late when received: managed.
        assert_eq!(d(load(61.0, 0.0, 20.0, None)).backend, Backend::Transcribe);
        // Summary stage overflows to Bedrock.
        let s = choose(&Policy::Hybrid, Stage::Summary, "j", Some(1.0), || {
            load(0.0, 1000.0, 10.0, Some(10.0))
        });
        assert_eq!(s.backend, Backend::Bedrock);
        // No deadline: hybrid stays local.
        let n = choose(&Policy::Hybrid, Stage::Speech, "j", None, || unreachable!());
        assert_eq!(n.backend, Backend::Local);
    }

    #[test]
    fn shadow_rate_selects_about_that_share() {
        assert!(!shadowed("a", 0.0));
        assert!((0..100).all(|i| shadowed(&i.to_string(), 1.0)));
        let n = (0..5000).filter(|i| shadowed(&i.to_string(), 0.2)).count();
        assert!((900..1100).contains(&n), "{n}");
    }

    #[test]
    fn word_error_rate() {
        assert_eq!(wer("the cat sat", "The cat, sat."), 0.0);
        // One substitution in four words.
        assert_eq!(wer("we ship on monday", "we ship on sunday"), 0.25);
        // One deletion and one insertion.
        assert_eq!(wer("a b c d", "a c d e"), 0.5);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "noise"), 1.0);
        assert_eq!(wer("one two", ""), 1.0);
        assert_eq!(normalized_words("Don't STOP!"), vec!["don't", "stop"]);
    }
}
