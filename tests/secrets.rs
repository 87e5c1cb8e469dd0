//! Secrets never reach the logs: `earshot serve` with API keys (from
//! `--api-key` through `EARSHOT_API_KEYS` and from `--api-key-file`) and the
//! queue worker with `HF_TOKEN` and `HF_TOKEN_PATH`, both at trace level,
//! then every byte they wrote to stdout and stderr is searched for the
//! secret values. Keys read from a file must also work (a request with one
//! is answered, a wrong key is 401).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_with_timeout, Rig};

const ENV_KEY: &str = "sk-env-7f3a9c1e5b";
const FILE_KEY: &str = "sk-file-2d8e4b6a0c";
const HF_TOKEN: &str = "hf_envtoken_Q9w8e7r6t5";
const HF_FILE_TOKEN: &str = "hf_filetoken_Z1x2c3v4b5";

fn assert_clean(what: &str, log: &str) {
    for secret in [ENV_KEY, FILE_KEY, HF_TOKEN, HF_FILE_TOKEN] {
        assert!(
            !log.contains(secret),
            "{what} logged the secret {secret}:\n{log}"
        );
    }
}

fn curl(args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "120"])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn serve_keeps_api_keys_out_of_trace_logs_and_reads_them_from_a_file() {
    earshot_inference::testing::real_llm_path("smollm2-135m-instruct");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-keys");
    std::fs::write(
        &key_file,
        format!("# mounted from a Secret\n\n{FILE_KEY}\n"),
    )
    .unwrap();
    let token_file = dir.path().join("hf-token");
    std::fs::write(&token_file, HF_FILE_TOKEN).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_earshot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("EARSHOT_") && k != "EARSHOT_MODELS_DIR" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["serve", "--bind", "127.0.0.1:0", "--no-summarizer"])
        .arg("--api-key-file")
        .arg(&key_file)
        .env("EARSHOT_API_KEYS", ENV_KEY)
        .env("HF_TOKEN", HF_TOKEN)
        .env("HF_TOKEN_PATH", &token_file)
        .env("HF_HUB_OFFLINE", "1")
        .env("EARSHOT_LOG", "trace")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("earshot serve starts");
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).to_string()
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout_log = String::new();
    let base = loop {
        match lines.next() {
            Some(Ok(l)) => {
                stdout_log.push_str(&l);
                stdout_log.push('\n');
                if let Some(a) = l.strip_prefix("listening on ") {
                    break format!("http://{a}");
                }
            }
            _ => panic!(
                "earshot serve exited before listening:\n{}",
                err_reader.join().unwrap()
            ),
        }
    };
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        for l in lines.map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let models = format!("{base}/v1/models");
    let bearer = |k: &str| format!("Authorization: Bearer {k}");
    assert_eq!(
        curl(&["-H", &bearer(ENV_KEY), &models]),
        200,
        "key from the env"
    );
    assert_eq!(
        curl(&["-H", &bearer(FILE_KEY), &models]),
        200,
        "key from the file"
    );
    assert_eq!(curl(&["-H", &bearer("sk-wrong"), &models]), 401);
    assert_eq!(curl(&[&models]), 401);
    // A request whose body carries a key-looking value must not be echoed
    // into logs either (the prompt is user data, logged only as lengths).
    let sample = earshot_inference::testing::fixtures_dir().join("silence-10s.wav");
    let code = curl(&[
        "-H",
        &bearer(FILE_KEY),
        "-F",
        &format!("file=@{}", sample.display()),
        &format!("{base}/v1/audio/transcriptions"),
    ]);
    assert_eq!(code, 200);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_with_timeout(child, Duration::from_secs(60)).status;
    assert!(status.success(), "serve exit {status:?}");
    let log = format!(
        "{stdout_log}{}{}",
        out_reader.join().unwrap(),
        err_reader.join().unwrap()
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on:\n{log:.2000}"
    );
    assert_clean("earshot serve", &log);
}

#[test]
fn worker_keeps_the_hf_token_out_of_trace_logs() {
    let rig = {
        let mut r = Rig::local();
        r.env = vec![
            ("HF_TOKEN".into(), HF_TOKEN.into()),
            ("EARSHOT_LOG".into(), "trace".into()),
            ("RUST_LOG".into(), "trace".into()),
        ];
        r
    };
    let clip = earshot_inference::testing::fixtures_dir().join("silence-10s.wav");
    let ids = rig.submit(&[clip], "transcribe", &[]);
    let child = rig.worker(&["--exit-when-empty", "--no-summarizer"], "worker.log");
    let out = wait_with_timeout(child, Duration::from_secs(300));
    assert!(out.status.success(), "{}", rig.log("worker.log"));
    assert_eq!(rig.records().len(), ids.len());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        rig.log("worker.log")
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on"
    );
    assert_clean("earshot work", &log);
}
