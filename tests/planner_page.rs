//! The planner page in a real browser: `earshot serve` on a loopback port
//! (the same small models as the other server tests), Debian's headless
//! Chromium driven over the DevTools protocol by `tests/py/planner_browser.py`:
//! a slider is dragged and the page must show what `POST /v1/plan` returns
//! for its new input. The screenshot lands in `target/planner.png` (a CI
//! artifact). Also checks the endpoint's errors without a browser.

mod serve;

use std::path::Path;
use std::process::Command;

use serve::{run_py, Server};

/// `curl` a JSON body to /v1/plan: (status, body).
fn post_plan(base: &str, body: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("{base}/v1/plan"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(json).expect("a JSON body"),
    )
}

#[test]
fn the_planner_page_follows_its_sliders_in_a_real_browser() {
    let server = Server::start(&["--no-summarizer"]);

    // The endpoint first: the seed example, then bad bodies.
    let (code, p) = post_plan(
        &server.base,
        r#"{"tasks_per_month": 50000, "avg_minutes": 3}"#,
    );
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["managed"]["speech_usd"], 3600.0);
    assert_eq!(p["cost_curve"].as_array().unwrap().len(), 121);
    let (code, e) = post_plan(&server.base, "{not json");
    assert_eq!(code, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{e}"
    );
    let (code, e) = post_plan(&server.base, r#"{"tasks_per_month": -1, "avg_minutes": 3}"#);
    assert_eq!(code, 400);
    assert_eq!(e["error"]["param"], "tasks_per_month", "{e}");
    let (code, e) = post_plan(
        &server.base,
        r#"{"tasks_per_month": 10, "avg_minutes": 3, "instance": "x"}"#,
    );
    assert_eq!(code, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("g6.xlarge"),
        "{e}"
    );

    // Then the page, in Chromium.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shot = root.join("target/planner.png");
    let script = root
        .join("tests/py/planner_browser.py")
        .display()
        .to_string();
    let shot_s = shot.display().to_string();
    let out = run_py(&[&script, &server.base, &shot_s]);
    let seen: serde_json::Value = serde_json::from_str(&out).expect("a JSON summary");
    assert_eq!(seen["before"]["managed-usd"], "$3,604", "{seen}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}
