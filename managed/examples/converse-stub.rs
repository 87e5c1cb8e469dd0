//! Runs the Converse stub (NOT Bedrock: a test double that checks and
//! records requests) on a free loopback port until killed, for end-to-end
//! tests that start it as a separate process.
//!
//! ```sh
//! cargo run -p earshot-managed --features testing --example converse-stub -- [--throttle N] [--model ID]
//! ```
//!
//! The first stdout line is `AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:PORT`;
//! each answered request then prints one JSON line (`model_id`, `max_tokens`,
//! `system`, `user_text`).

use std::io::Write;
use std::time::Duration;

use earshot_managed::testing::ConverseStub;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stub = ConverseStub::start()?;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--throttle", Some(n)) => stub.throttle_next(n.parse()?),
            ("--model", Some(m)) => stub.expect_model(&m),
            _ => return Err(format!("unknown argument {a:?} (--throttle N, --model ID)").into()),
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME={}", stub.endpoint())?;
    out.flush()?;
    let mut seen = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let recorded = stub.recorded();
        for r in &recorded[seen..] {
            let line = serde_json::json!({
                "model_id": r.model_id,
                "max_tokens": r.max_tokens,
                "system": r.system,
                "user_text": r.user_text,
            });
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        seen = recorded.len();
    }
}
