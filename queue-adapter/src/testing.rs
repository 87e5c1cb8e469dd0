//! Test support (not part of the API): a real moto server (SQS and S3
//! protocol) on loopback, started from the test virtual environment that
//! `scripts/test` builds, and AWS clients pointed at it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;

/// The Python with moto installed: `$EARSHOT_PYTHON`, else `<repo>/.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EARSHOT_PYTHON") {
        return PathBuf::from(p);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.join(".venv/bin/python")
}

/// A moto server process; killed on drop.
pub struct MotoServer {
    child: Child,
    pub port: u16,
}

pub const REGION: &str = "us-east-1";

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers.
    /// Panics with instructions when the test environment is missing:
    /// these tests need the real protocol server, never a fake.
    pub fn start() -> MotoServer {
        Self::start_with(&["-m", "moto.server"])
    }

    /// Starts moto through a launcher script (which may patch one of
    /// moto's behaviours, saying so, before calling `moto.server.main`
    /// with the remaining arguments).
    pub fn start_script(script: &std::path::Path) -> MotoServer {
        let script = script.display().to_string();
        Self::start_with(&[script.as_str()])
    }

    fn start_with(launch: &[&str]) -> MotoServer {
        let py = python();
        let ok = Command::new(&py)
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "moto is not installed for {} — run scripts/test (it builds .venv from \
             scripts/requirements-test.txt) or set EARSHOT_PYTHON",
            py.display()
        );
        let port = free_port();
        let child = Command::new(&py)
            .args(launch)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto server");
        let server = MotoServer { child, port };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "moto server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Sets how moto advances a model's state (`/moto-api/state-manager/
    /// set-transition`), e.g. `transcribe::transcriptionjob` with
    /// `{"progression": "manual", "times": 1000}` to hold jobs
    /// IN_PROGRESS, or `{"progression": "immediate"}`.
    pub fn set_transition(&self, model: &str, transition: &str) {
        use std::io::{Read, Write};
        let body = format!(r#"{{"model_name": "{model}", "transition": {transition}}}"#);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("moto answers");
        write!(
            s,
            "POST /moto-api/state-manager/set-transition HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request sent");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(
            reply.starts_with("HTTP/1.0 2") || reply.starts_with("HTTP/1.1 2"),
            "set-transition failed: {reply}"
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS environment for a child process (the earshot
    /// binary) that should talk to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    /// SDK configuration for in-process clients.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates a queue with a dead-letter queue that takes messages after
    /// `max_receives` deliveries. Returns (queue URL, DLQ URL).
    pub async fn queue_with_dlq(
        &self,
        name: &str,
        visibility_s: u32,
        max_receives: u32,
    ) -> (String, String) {
        let sqs = self.sqs().await;
        let dlq = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("create DLQ")
            .queue_url
            .expect("DLQ URL");
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("DLQ attributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("DLQ ARN");
        let redrive =
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
        let url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_s.to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue URL");
        (url, dlq)
    }

    pub async fn bucket(&self, name: &str) {
        self.s3()
            .await
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket");
    }

    /// Keys under a prefix.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .s3()
            .await
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list objects");
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now (for servers started by tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
