//! Helpers shared by the end-to-end tests of the queue worker
//! (`tests/worker.rs`) and of its backends (`tests/backends.rs`): a queue
//! rig (SQS and S3 on a real moto server, or the embedded local queue), the
//! `earshot` binary run against it, real speech clips, schema validation.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use earshot_inference::testing::{fixture_manifest, fixtures_dir, real_llm_path};
use earshot_queue_adapter::local::LocalQueue;
use earshot_queue_adapter::sqs::SqsQueue;
use earshot_queue_adapter::testing::{python, MotoServer};
use earshot_queue_adapter::{JobQueue, QueueDepth};
use serde_json::Value;

pub const BUCKET: &str = "earshot-test";

/// A queue (SQS on moto, or local), its results, and a scratch folder.
pub struct Rig {
    pub tmp: tempfile::TempDir,
    pub moto: Option<MotoServer>,
    pub queue_url: Option<String>,
    pub dlq_url: Option<String>,
    pub rt: tokio::runtime::Runtime,
    /// Set on every `earshot` this rig runs (after the ambient EARSHOT_* and
    /// AWS_* are cleared): service endpoints, backend settings.
    pub env: Vec<(String, String)>,
}

impl Rig {
    pub fn sqs(visibility_s: u32, max_receives: u32) -> Rig {
        Self::sqs_on(MotoServer::start(), visibility_s, max_receives)
    }

    /// As [`Rig::sqs`], on a moto server the caller started.
    pub fn sqs_on(moto: MotoServer, visibility_s: u32, max_receives: u32) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (url, dlq) = rt.block_on(async {
            moto.bucket(BUCKET).await;
            moto.queue_with_dlq("jobs", visibility_s, max_receives)
                .await
        });
        Rig {
            tmp: tempfile::tempdir().unwrap(),
            moto: Some(moto),
            queue_url: Some(url),
            dlq_url: Some(dlq),
            rt,
            env: Vec::new(),
        }
    }

    pub fn local() -> Rig {
        Rig {
            tmp: tempfile::tempdir().unwrap(),
            moto: None,
            queue_url: None,
            dlq_url: None,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
            env: Vec::new(),
        }
    }

    pub fn local_dir(&self) -> PathBuf {
        self.tmp.path().join("queue")
    }

    pub fn queue_args(&self) -> Vec<String> {
        match &self.queue_url {
            Some(url) => vec![
                "--queue-url".into(),
                url.clone(),
                "--bucket".into(),
                BUCKET.into(),
            ],
            None => vec![
                "--local-queue".into(),
                self.local_dir().display().to_string(),
                "--max-receives".into(),
                "3".into(),
            ],
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        real_llm_path("smollm2-135m-instruct"); // fails with instructions when models are missing
        let mut c = Command::new(env!("CARGO_BIN_EXE_earshot"));
        c.args(args).args(self.queue_args());
        for (k, _) in std::env::vars() {
            if k.starts_with("EARSHOT_") && k != "EARSHOT_MODELS_DIR" || k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env("HF_HUB_OFFLINE", "1").env("EARSHOT_LOG", "info");
        if let Some(m) = &self.moto {
            for (k, v) in m.env() {
                c.env(k, v);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("earshot runs")
    }

    /// `earshot submit`; returns the printed job ids.
    pub fn submit(&self, files: &[PathBuf], task: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["submit", "--task", task];
        args.extend_from_slice(extra);
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        args.extend(names.iter().map(String::as_str));
        let ids = ok_lines(self.run(&args));
        assert_eq!(ids.len(), files.len(), "one job id per file");
        ids
    }

    /// Starts `earshot work` with its stderr in `<tmp>/<log>`.
    pub fn worker(&self, extra: &[&str], log: &str) -> Child {
        let mut args = vec!["work", "--wait-seconds", "1", "--retry-delay", "0"];
        args.extend_from_slice(extra);
        let err = std::fs::File::create(self.tmp.path().join(log)).unwrap();
        self.cmd(&args)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("worker starts")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.tmp.path().join(name)).unwrap_or_default()
    }

    /// Runs a worker until the queue is empty; returns its stats line.
    pub fn drain(&self, extra: &[&str], log: &str) -> Value {
        let mut args = vec!["--exit-when-empty"];
        args.extend_from_slice(extra);
        let child = self.worker(&args, log);
        let out = wait_with_timeout(child, Duration::from_secs(600));
        assert!(
            out.status.success(),
            "worker failed ({:?}):\n{}",
            out.status,
            self.log(log)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("stats JSON line")
    }

    /// Every result record: object name → parsed record.
    pub fn records(&self) -> BTreeMap<String, Value> {
        self.records_under("earshot/results/")
    }

    /// The records under a result prefix of the bucket (SQS rigs), or in
    /// the local queue's results (local rigs).
    pub fn records_under(&self, prefix: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        match &self.moto {
            Some(m) => self.rt.block_on(async {
                let s3 = m.s3().await;
                for key in m.keys(BUCKET, prefix).await {
                    let body = s3
                        .get_object()
                        .bucket(BUCKET)
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                    let bytes = body.body.collect().await.unwrap().into_bytes();
                    let name = key.rsplit('/').next().unwrap().to_string();
                    out.insert(name, serde_json::from_slice(&bytes).expect("record JSON"));
                }
            }),
            None => {
                let dir = self.local_dir().join("results");
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    for e in rd {
                        let p = e.unwrap().path();
                        let name = p.file_name().unwrap().to_string_lossy().to_string();
                        if name.starts_with('.') {
                            // A write the kill cut short (Store::list skips these too).
                            continue;
                        }
                        let v = serde_json::from_slice(&std::fs::read(&p).unwrap())
                            .expect("record JSON");
                        out.insert(name, v);
                    }
                }
            }
        }
        out
    }

    pub fn queue(&self) -> Box<dyn JobQueue> {
        match (&self.moto, &self.queue_url) {
            (Some(m), Some(url)) => Box::new(SqsQueue::with_client(self.rt.block_on(m.sqs()), url)),
            _ => Box::new(LocalQueue::open(self.local_dir(), 3).unwrap()),
        }
    }

    pub fn depth(&self) -> QueueDepth {
        self.rt.block_on(self.queue().depth()).unwrap()
    }

    pub fn dlq_bodies(&self) -> Vec<String> {
        match (&self.moto, &self.dlq_url) {
            (Some(m), Some(url)) => {
                let q = SqsQueue::with_client(self.rt.block_on(m.sqs()), url);
                self.rt
                    .block_on(q.receive(10, Duration::from_secs(1), Duration::from_secs(30)))
                    .unwrap()
                    .into_iter()
                    .map(|d| d.body)
                    .collect()
            }
            _ => LocalQueue::open(self.local_dir(), 3)
                .unwrap()
                .dead_letters()
                .unwrap()
                .into_iter()
                .map(|(_, b)| b)
                .collect(),
        }
    }
}

/// Stdout lines of a command that must have succeeded.
pub fn ok_lines(out: Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "earshot failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("process still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes 16-bit PCM mono 16 kHz WAV.
pub fn write_wav(path: &Path, samples: &[f32]) {
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    let data_len = (samples.len() * 2) as u32;
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&16_000u32.to_le_bytes());
    b.extend_from_slice(&32_000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// `n` short real-speech clips (3 to 5 s cut from different fixtures and
/// offsets) in `dir`.
pub fn short_clips(dir: &Path, n: usize) -> Vec<PathBuf> {
    let clips: Vec<Vec<f32>> = fixture_manifest()
        .iter()
        .take(6)
        .map(|c| {
            earshot_inference::audio::load_file(&fixtures_dir().join(&c.file), Default::default())
                .expect("fixture decodes")
        })
        .collect();
    (0..n)
        .map(|i| {
            let src = &clips[i % clips.len()];
            let start = ((i / clips.len()) * 5 * 16_000) % (src.len() - 6 * 16_000);
            let len = (3 + i % 3) * 16_000;
            let path = dir.join(format!("clip-{i:02}.wav"));
            write_wav(&path, &src[start..start + len]);
            path
        })
        .collect()
}

pub fn status_of(records: &BTreeMap<String, Value>, id: &str) -> String {
    records[&format!("{id}.json")]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Validates documents against one of the published JSON Schemas with the
/// `jsonschema` Python package (a real validator, not ours).
pub fn validate_with_schema(schema: &str, docs: &[Value]) {
    validate_with_schema_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("queue-adapter/schema")
            .join(schema),
        docs,
    )
}

/// [`validate_with_schema`] for a schema anywhere in the repository
/// (`managed/schema/transcribe-output.schema.json`).
pub fn validate_with_schema_file(schema_path: &Path, docs: &[Value]) {
    let schema = schema_path.display();
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(s)\n\
        v=jsonschema.Draft202012Validator(s)\n\
        bad=[(i,e.message) for i,d in enumerate(json.load(sys.stdin)) for e in v.iter_errors(d)]\n\
        print(json.dumps(bad))\n\
        sys.exit(1 if bad else 0)";
    let mut child = Command::new(python())
        .args(["-c", script])
        .arg(schema_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(docs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{schema}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- word error rate ---------------------------------------------------------

/// Lowercase, apostrophes dropped ("o'clock" → "oclock"), every other
/// non-alphanumeric character a word break; numbers stay as they come.
/// The same rules as scripts/lib/compare_fw.py.
pub fn normalise(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            '\'' | '\u{2019}' => {}
            c if c.is_alphanumeric() => cleaned.push(c),
            _ => cleaned.push(' '),
        }
    }
    cleaned.split_whitespace().map(str::to_string).collect()
}

/// Word error rate: word-level Levenshtein distance / reference words.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len() as f64
}
