//! `earshot plan` end to end: the built binary, the seed planner's example
//! in JSON, a bad input's exit code and message, and the chart files.

use std::process::{Command, Output};

fn plan(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_earshot"));
    cmd.arg("plan").args(args);
    // The flags have EARSHOT_PLAN_* fallbacks: keep the caller's out.
    for (k, _) in std::env::vars() {
        if k.starts_with("EARSHOT_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("earshot runs")
}

/// 50,000 tasks a month of 3 minutes with round, hand-entered throughput.
const SEED: &[&str] = &[
    "--tasks-per-month",
    "50000",
    "--avg-minutes",
    "3",
    "--speech-throughput",
    "40",
    "--llm-throughput",
    "400",
    "--llm-prefill-throughput",
    "4000",
];

#[test]
fn the_seed_example_in_json() {
    let out = plan(&[SEED, &["--format", "json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    // Speech 50,000 × 3 min = 150,000 min × $0.024 = $3,600; one g6.xlarge
    // carries both engines: 730 h × $0.8048 + $73 EKS = $660.504.
    assert_eq!(p["speech_gpus"], 1);
    assert_eq!(p["llm_gpus"], 1);
    assert_eq!(p["shared_gpu"], true);
    let f = |ptr: &str| p.pointer(ptr).and_then(|v| v.as_f64()).unwrap();
    assert!((f("/managed/speech_usd") - 3_600.0).abs() < 1e-6);
    assert!((f("/managed/summary_usd") - 4.155).abs() < 1e-6);
    assert!((f("/self_hosted/monthly_usd") - 660.504).abs() < 1e-6);
    assert!((f("/hybrid/monthly_usd") - 660.504).abs() < 1e-6);
    assert!((f("/savings_pct") - 81.674).abs() < 1e-3);
    assert_eq!(p["crossover_tasks_per_month"], 9_164);
    assert_eq!(p["phase"], "self-hosted");
    assert_eq!(p["prices"]["date"], "2026-11-30");
    assert_eq!(p["throughput_source"], "given");
}

#[test]
fn text_output_names_the_figures_an_operator_needs() {
    let out = plan(SEED);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    for want in [
        "$3,604",
        "$661",
        "81.7%",
        "9,164 tasks/month",
        "phase                self-hosted",
        "Prices of 2026-11-30",
        "one GPU runs both engines",
    ] {
        assert!(s.contains(want), "{want:?} missing from:\n{s}");
    }
}

#[test]
fn bad_input_exits_2_with_the_flag_named() {
    let out = plan(&["--tasks-per-month", "-5", "--avg-minutes", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tasks-per-month -5") && err.contains("above 0"),
        "{err}"
    );
    // A valid workload with one bad setting: (flag, value, what the error names).
    for (flag, value, names) in [
        ("--active-hours", "30", &["--active-hours 30"][..]),
        ("--instance", "g9.mega", &["g9.mega", "g6.xlarge"][..]),
        ("--price", "nope=1", &["transcribe.tier1"][..]),
    ] {
        let out = plan(&[
            "--tasks-per-month",
            "1000",
            "--avg-minutes",
            "3",
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in names {
            assert!(err.contains(n), "{flag} {value}: {err}");
        }
    }
}

#[test]
fn price_overrides_change_the_plan() {
    let out = plan(
        &[
            SEED,
            &["--price", "ec2.g6.xlarge.on_demand=1", "--format", "json"],
        ]
        .concat(),
    );
    assert!(out.status.success());
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 730 × $1 + $73.
    assert_eq!(p["self_hosted"]["monthly_usd"], 803.0);
    assert_eq!(p["prices"]["overridden"][0], "ec2.g6.xlarge.on_demand");
}

#[test]
fn chart_writes_an_svg_or_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("x.svg");
    let out = plan(&[SEED, &["--chart", svg.to_str().unwrap()]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("crossover") && text.contains("Managed"));
    let png = dir.path().join("x.png");
    let out = plan(&[SEED, &["--chart", png.to_str().unwrap()]].concat());
    assert!(out.status.success());
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    let out = plan(&[SEED, &["--chart", "x.gif"]].concat());
    assert_eq!(out.status.code(), Some(2));
}
