//! `earshot serve` on a free loopback port for the HTTP tests
//! (`tests/server.rs`, `tests/planner_page.rs`): the real binary and the
//! real small models, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use earshot_inference::testing::real_llm_path;
use earshot_queue_adapter::testing::python;

/// A running server; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        real_llm_path("smollm2-135m-instruct"); // fails with instructions when models are missing
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_earshot"));
        cmd.args(["serve", "--bind", "127.0.0.1:0"]).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("EARSHOT_") && k != "EARSHOT_MODELS_DIR" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .env("HF_HUB_OFFLINE", "1")
            .env("EARSHOT_LOG", "warn,symphonia_core=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("earshot serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("listening on ") {
                        break a.to_string();
                    }
                }
                _ => panic!("earshot serve exited before listening"),
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the test environment's Python with `args`; its stdout, which must
/// have succeeded.
pub fn run_py(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
