//! The swap end to end: the real `earshot` binary as a queue worker whose
//! stages run on Amazon Transcribe and Amazon Bedrock, on its own engines,
//! or split between them (hybrid, weighted canary, shadow, the overflow
//! fleet), against real protocol servers on loopback:
//!
//! - SQS, S3 and Transcribe's job API: a real moto server. moto writes no
//!   transcript file, so each test puts one, in Transcribe's real output
//!   shape (string times, punctuation items without times,
//!   `audio_segments`), where moto's `TranscriptFileUri` points.
//! - Bedrock Converse: moto has no `converse`, so these tests run
//!   `earshot_managed::testing::ConverseStub`, a **stub, not the service**:
//!   a small HTTP server that checks each request's shape (model id in the
//!   path, system prompt, messages, inferenceConfig) and answers in the
//!   Converse response shape with usage. The worker reaches it through the
//!   standard `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` variable.
//!
//! What must hold: every job ends with exactly one record saying which
//! backend ran each stage and what it cost; a redelivered job reuses its
//! Transcribe job; routing splits as configured and stays put per job id.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use earshot_managed::testing::ConverseStub;
use earshot_queue_adapter::job::{SegmentRecord, TranscriptRecord, WordRecord};
use earshot_queue_adapter::sqs::SqsQueue;
use earshot_queue_adapter::testing::MotoServer;
use earshot_queue_adapter::{Job, JobQueue, TaskKind};
use serde_json::Value;

const TRANSCRIBE_PREFIX: &str = "transcribe/";

/// Transcribe's output for a job, in the documented shape, from the
/// committed fixture (`managed/tests/fixtures/transcribe-output.json`).
fn fixture_output() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("managed/tests/fixtures/transcribe-output.json");
    serde_json::from_slice(&std::fs::read(&path).expect("the Transcribe fixture")).unwrap()
}

/// Transcribe's output for `text` spoken over `duration` seconds: the
/// words spread evenly, one segment per sentence (through earshot's own
/// writer, which the managed tests check against AWS's documented shape).
fn output_for_text(job_name: &str, text: &str, duration: f64) -> Value {
    let words: Vec<&str> = text.split_whitespace().collect();
    let step = duration / words.len().max(1) as f64;
    let mut segments = Vec::new();
    let mut current: Vec<WordRecord> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        current.push(WordRecord {
            word: w.to_string(),
            start: i as f64 * step,
            end: (i as f64 + 0.8) * step,
            probability: 0.98,
            speaker: None,
        });
        if w.ends_with(['.', '?', '!']) || i + 1 == words.len() {
            let ws = std::mem::take(&mut current);
            segments.push(SegmentRecord {
                start: ws[0].start,
                end: ws[ws.len() - 1].end,
                text: ws
                    .iter()
                    .map(|w| w.word.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                words: ws,
                speaker: None,
            });
        }
    }
    let record = TranscriptRecord {
        text: text.to_string(),
        language: "en".into(),
        duration,
        model: "amazon-transcribe".into(),
        segments,
        formats: BTreeMap::new(),
    };
    serde_json::to_value(earshot_managed::transcribe_json::write(job_name, &record)).unwrap()
}

impl Rig {
    fn moto(&self) -> &MotoServer {
        self.moto.as_ref().expect("an SQS rig")
    }

    /// Puts a Transcribe output where moto's `TranscriptFileUri` for this
    /// earshot job will point.
    fn put_transcript(&self, job_id: &str, doc: &Value) {
        let name = earshot_managed::transcribe::job_name(job_id);
        let key = earshot_managed::transcribe::output_key(TRANSCRIBE_PREFIX, &name);
        let body = serde_json::to_vec(doc).unwrap();
        self.rt.block_on(async {
            self.moto()
                .s3()
                .await
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(body.into())
                .send()
                .await
                .expect("put transcript");
        });
    }

    /// Transcribe jobs moto knows (name → status).
    fn transcribe_jobs(&self) -> BTreeMap<String, String> {
        self.rt.block_on(async {
            let conf = self.moto().sdk_config().await;
            let client = aws_sdk_transcribe::Client::new(&conf);
            let out = client
                .list_transcription_jobs()
                .send()
                .await
                .expect("list transcription jobs");
            out.transcription_job_summaries()
                .iter()
                .map(|j| {
                    (
                        j.transcription_job_name().unwrap_or_default().to_string(),
                        j.transcription_job_status()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
    }

    /// What moto's Transcribe job `name` was started with: speaker labels
    /// on, and their maximum; `None` when the job had no settings.
    fn transcribe_speaker_settings(&self, name: &str) -> Option<(bool, Option<i32>)> {
        self.rt.block_on(async {
            let conf = self.moto().sdk_config().await;
            let client = aws_sdk_transcribe::Client::new(&conf);
            let job = client
                .get_transcription_job()
                .transcription_job_name(name)
                .send()
                .await
                .expect("get transcription job")
                .transcription_job
                .expect("the job");
            job.settings().map(|s| {
                (
                    s.show_speaker_labels().unwrap_or(false),
                    s.max_speaker_labels(),
                )
            })
        })
    }

    /// Sends jobs straight to the queue (ids chosen by the test).
    fn send_jobs(&self, jobs: &[Job]) {
        let q = SqsQueue::with_client(
            self.rt.block_on(self.moto().sqs()),
            self.queue_url.as_deref().unwrap(),
        );
        for job in jobs {
            let (body, attrs) = job.to_message();
            self.rt.block_on(q.send(&body, &attrs)).unwrap();
        }
    }

    fn with_stub(mut self, stub: &ConverseStub) -> Rig {
        self.env
            .push(("AWS_ENDPOINT_URL_BEDROCK_RUNTIME".into(), stub.endpoint()));
        self
    }
}

/// The managed backends' worker flags.
const MANAGED: [&str; 6] = [
    "--speech-backend",
    "transcribe",
    "--summary-backend",
    "bedrock",
    "--transcribe-bucket",
    BUCKET,
];

fn record_of<'a>(records: &'a BTreeMap<String, Value>, id: &str) -> &'a Value {
    records
        .get(&format!("{id}.json"))
        .unwrap_or_else(|| panic!("no record for {id}: {:?}", records.keys()))
}

/// Seconds from `submitted_at` to `finished_at`.
fn latency_s(rec: &Value, submitted_ms: &BTreeMap<String, u64>) -> f64 {
    let id = rec["job_id"].as_str().unwrap();
    let done = earshot_queue_adapter::parse_rfc3339_ms(rec["finished_at"].as_str().unwrap())
        .expect("finished_at is RFC 3339");
    (done as f64 - submitted_ms[id] as f64) / 1000.0
}

fn transcribe_usd(seconds: f64) -> f64 {
    // Transcribe bills whole seconds with a 15 s minimum, at $0.024/min
    // (tier 1 of the committed price table).
    seconds.ceil().max(15.0) * 0.024 / 60.0
}

#[test]
fn managed_phase_worker_runs_every_task_type_without_loading_a_model() {
    let stub = ConverseStub::start().expect("the Converse stub starts");
    let rig = Rig::sqs(30, 3).with_stub(&stub);
    let dir = rig.tmp.path();
    let clips = short_clips(dir, 2);
    let notes = dir.join("notes.txt");
    std::fs::write(
        &notes,
        "We agreed to ship the bicycle lights on Friday. Marketing starts on Monday.",
    )
    .unwrap();
    let t = rig.submit(&clips[..1], "transcribe", &["--formats", "srt"]);
    let ts = rig.submit(&clips[1..2], "transcribe+summarize", &[]);
    // Diarization on the managed backend is Transcribe's speaker labels.
    let d = rig.submit(
        &clips[..1],
        "transcribe",
        &["--num-speakers", "3", "--formats", "rttm"],
    );
    let s = rig.submit(
        std::slice::from_ref(&notes),
        "summarize",
        &["--max-summary-tokens", "80"],
    );
    let fixture = fixture_output();
    for id in [&t[0], &ts[0]] {
        rig.put_transcript(id, &fixture);
    }
    let labelled: Value = serde_json::from_str(&earshot_managed::testing::speaker_labelled(
        &fixture.to_string(),
    ))
    .unwrap();
    rig.put_transcript(&d[0], &labelled);
    let stats = rig.drain(&MANAGED, "managed.log");
    let log = rig.log("managed.log");
    assert!(log.contains("no model is loaded"), "{log}");
    assert_eq!(stats["succeeded"], 4, "{stats}\n{log}");

    let records = rig.records();
    assert_eq!(records.len(), 4, "{:?}", records.keys());

    // The diarized job asked Transcribe for speaker labels with its count,
    // the others did not; its record carries Transcribe's speakers.
    let name = |id: &str| earshot_managed::transcribe::job_name(id);
    assert_eq!(
        rig.transcribe_speaker_settings(&name(&d[0])),
        Some((true, Some(3)))
    );
    let plain = rig.transcribe_speaker_settings(&name(&t[0]));
    assert!(plain.is_none_or(|(show, _)| !show), "{plain:?}");
    let dr = &record_of(&records, &d[0])["transcript"];
    let speakers: Vec<&str> = dr["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["speaker"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(speakers, ["SPEAKER_00", "SPEAKER_01"], "{dr}");
    let rttm = dr["formats"]["rttm"].as_str().unwrap();
    assert!(
        rttm.contains("SPEAKER_00") && rttm.contains("SPEAKER_01"),
        "{rttm}"
    );
    let expected_text = fixture["results"]["transcripts"][0]["transcript"]
        .as_str()
        .unwrap();
    for id in [&t[0], &ts[0]] {
        let r = record_of(&records, id);
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["backend"]["speech"], "transcribe");
        let tr = &r["transcript"];
        assert_eq!(tr["text"], expected_text);
        assert_eq!(tr["model"], "amazon-transcribe");
        let words: Vec<&Value> = tr["segments"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["words"].as_array().unwrap().iter())
            .collect();
        let fixture_words = fixture["results"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "pronunciation")
            .count();
        assert_eq!(
            words.len(),
            fixture_words,
            "one word per pronunciation item"
        );
        for w in &words {
            let (a, b) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
            assert!(a <= b, "{w}");
            let p = w["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{w}");
        }
        // Billed on the audio's length: these clips are under the 15 s
        // minimum.
        let cost = r["cost_usd"]["speech"].as_f64().unwrap();
        assert!((cost - transcribe_usd(5.0)).abs() < 1e-9, "{cost}");
    }
    assert!(record_of(&records, &t[0])["transcript"]["formats"]["srt"]
        .as_str()
        .unwrap()
        .contains("-->"));

    // Summaries came from Bedrock (the stub), with usage and price.
    let requests = stub.recorded();
    assert_eq!(requests.len(), 2, "one Converse call per summary");
    for req in &requests {
        assert_eq!(
            req.model_id, "amazon.nova-lite-v1:0",
            "model id in the path"
        );
        assert!(!req.system.is_empty(), "a system prompt");
        assert!(req.user_text.contains("Summarize"), "{}", req.user_text);
    }
    for id in [&ts[0], &s[0]] {
        let r = record_of(&records, id);
        assert_eq!(r["backend"]["summary"], "bedrock");
        let sum = &r["summary"];
        assert_eq!(sum["model"], "amazon.nova-lite-v1:0");
        assert!(!sum["text"].as_str().unwrap().is_empty());
        let (i, o) = (
            sum["prompt_tokens"].as_f64().unwrap(),
            sum["generated_tokens"].as_f64().unwrap(),
        );
        assert!(i > 0.0 && o > 0.0, "{sum}");
        let cost = r["cost_usd"]["summary"].as_f64().unwrap();
        assert!((cost - (i * 0.06 + o * 0.24) / 1e6).abs() < 1e-12, "{cost}");
        let total = r["cost_usd"]["total"].as_f64().unwrap();
        let parts: f64 = ["speech", "summary"]
            .iter()
            .filter_map(|k| r["cost_usd"][k].as_f64())
            .sum();
        assert!((total - parts).abs() < 1e-12);
    }
    // The summarize job's maxTokens came from the job.
    assert!(requests.iter().any(|r| r.max_tokens == Some(80)));
    // One Transcribe job per earshot job.
    assert_eq!(rig.transcribe_jobs().len(), 3);
    let docs: Vec<Value> = records.values().cloned().collect();
    validate_with_schema("result.schema.json", &docs);
}

#[test]
fn bedrock_throttling_is_retried_and_a_failed_transcribe_job_is_a_permanent_failure() {
    let stub = ConverseStub::start().expect("the Converse stub starts");
    // Three throttles: more than the SDK's own retries absorb, so the
    // worker's transient-failure path retries the job.
    stub.throttle_next(3);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/moto_transcribe_fails.py");
    let moto = MotoServer::start_script(&script);
    let mut rig = Rig::sqs_on(moto, 30, 5).with_stub(&stub);
    rig.env.push(("EARSHOT_RETRY_DELAY".into(), "0".into()));
    let dir = rig.tmp.path();
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "The launch moves to Friday. Ana writes the notes.").unwrap();
    let s = rig.submit(std::slice::from_ref(&notes), "summarize", &[]);
    // The launcher fails Transcribe jobs whose media key contains FAIL.
    let clip = short_clips(dir, 1).remove(0);
    let bad = dir.join("FAIL-call.wav");
    std::fs::copy(&clip, &bad).unwrap();
    let f = rig.submit(&[bad], "transcribe", &[]);
    let stats = rig.drain(&MANAGED, "faults.log");
    let log = rig.log("faults.log");
    let records = rig.records();
    assert_eq!(records.len(), 2, "{:?}\n{log}", records.keys());
    let r = record_of(&records, &s[0]);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(
        stub.requests() >= 4,
        "three throttled calls, then one that worked"
    );
    let failed = record_of(&records, &f[0]);
    assert_eq!(failed["status"], "failed", "{failed}");
    let msg = failed["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("doesn't match the detected media format"),
        "{msg}"
    );
    assert_eq!(failed["error"]["kind"], "managed");
    assert_eq!(failed["attempt"], 1, "a FAILED job is not retried");
    assert!(rig.dlq_bodies().is_empty());
    assert_eq!(rig.depth().visible + rig.depth().in_flight, 0, "{stats}");
}

#[test]
fn a_worker_killed_mid_transcription_reuses_the_transcribe_job_on_redelivery() {
    let stub = ConverseStub::start().expect("the Converse stub starts");
    let rig = Rig::sqs(3, 5).with_stub(&stub);
    // Hold Transcribe jobs IN_PROGRESS while the first worker polls.
    rig.moto().set_transition(
        "transcribe::transcriptionjob",
        r#"{"progression": "manual", "times": 100000}"#,
    );
    let clips = short_clips(rig.tmp.path(), 1);
    let ids = rig.submit(&clips, "transcribe", &[]);
    rig.put_transcript(&ids[0], &fixture_output());
    // A short lease, so the killed worker's job comes back soon.
    let mut args = MANAGED.to_vec();
    args.extend(["--visibility-timeout", "3"]);
    let mut first = rig.worker(&args, "first.log");
    wait_until(
        Duration::from_secs(60),
        "the Transcribe job to start",
        || rig.transcribe_jobs().len() == 1,
    );
    std::thread::sleep(Duration::from_millis(500));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(
        rig.records().is_empty(),
        "no record before the job finished"
    );
    rig.moto().set_transition(
        "transcribe::transcriptionjob",
        r#"{"progression": "immediate"}"#,
    );
    let stats = rig.drain(&MANAGED, "second.log");
    let records = rig.records();
    assert_eq!(records.len(), 1, "{stats}");
    let r = record_of(&records, &ids[0]);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["attempt"], 2, "the redelivery wrote it");
    let jobs = rig.transcribe_jobs();
    assert_eq!(jobs.len(), 1, "one Transcribe job, reused: {jobs:?}");
    assert!(rig.log("second.log").contains("reused=true"));
}

/// Submits `clips` as transcribe jobs and returns (id → submitted ms).
fn submit_timed(rig: &Rig, clips: &[PathBuf]) -> (Vec<String>, BTreeMap<String, u64>) {
    // Before submitting: the jobs' own `submitted_at` is later, so the
    // latencies measured from here are upper bounds.
    let now = earshot_queue_adapter::now_ms();
    let ids = rig.submit(clips, "transcribe", &[]);
    let submitted = ids.iter().map(|id| (id.clone(), now)).collect();
    (ids, submitted)
}

/// `n` short clips as transcribe jobs, each with Transcribe's output in
/// place in case it is routed there.
fn submit_with_transcripts(rig: &Rig, n: usize) -> (Vec<String>, BTreeMap<String, u64>) {
    let clips = short_clips(rig.tmp.path(), n);
    let (ids, submitted) = submit_timed(rig, &clips);
    let doc = fixture_output();
    for id in &ids {
        rig.put_transcript(id, &doc);
    }
    (ids, submitted)
}

fn split(records: &BTreeMap<String, Value>, stage: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records.values() {
        let b = r["backend"][stage].as_str().unwrap_or("none").to_string();
        *out.entry(b).or_default() += 1;
    }
    out
}

#[test]
fn hybrid_sends_what_local_would_miss_the_deadline_with_to_transcribe() {
    let stub = ConverseStub::start().expect("the Converse stub starts");
    let rig = Rig::sqs(60, 5).with_stub(&stub);
    let (_, submitted) = submit_with_transcripts(&rig, 30);
    // Local processing of all 30 (about 120 s of audio, a 30 s encoder
    // window each) takes about a minute on this 2-core machine: far past
    // a 20 s deadline.
    let deadline = 20.0;
    let args = [
        "--speech-backend",
        "hybrid",
        "--summary-backend",
        "bedrock",
        "--transcribe-bucket",
        BUCKET,
        "--deadline",
        "20",
    ];
    let t0 = Instant::now();
    rig.drain(&args, "hybrid.log");
    let wall = t0.elapsed().as_secs_f64();
    let records = rig.records();
    assert_eq!(records.len(), 30);
    let by = split(&records, "speech");
    println!("hybrid, deadline {deadline} s: split {by:?}, drained in {wall:.1} s");
    assert!(by.get("local").copied().unwrap_or(0) >= 1, "{by:?}");
    assert!(by.get("transcribe").copied().unwrap_or(0) >= 1, "{by:?}");
    let mut lat: Vec<(String, f64)> = records
        .values()
        .map(|r| {
            assert_eq!(r["status"], "succeeded", "{r}");
            (
                r["backend"]["speech"].as_str().unwrap().to_string(),
                latency_s(r, &submitted),
            )
        })
        .collect();
    lat.sort_by(|a, b| a.1.total_cmp(&b.1));
    println!("latencies (backend, s): {lat:?}");
    // Managed latency here is moto's (a job advances one state per poll)
    // plus the S3 round trips; the local jobs' slack is the router's
    // estimate error.
    let managed_latency = 15.0;
    for (b, l) in &lat {
        assert!(*l <= deadline + managed_latency, "{b} job took {l} s");
    }
    assert_eq!(rig.transcribe_jobs().len(), by["transcribe"]);

    // A generous deadline: everything stays local (10 jobs are enough to
    // show it; each is a full encoder window of local work).
    let rig = Rig::sqs(60, 5).with_stub(&stub);
    let clips = short_clips(rig.tmp.path(), 10);
    submit_timed(&rig, &clips);
    let mut args = args;
    args[7] = "3600";
    rig.drain(&args, "generous.log");
    let records = rig.records();
    assert_eq!(records.len(), 10);
    assert_eq!(
        split(&records, "speech"),
        BTreeMap::from([("local".to_string(), 10)])
    );
}

#[test]
fn the_overflow_fleet_takes_only_jobs_left_waiting_past_the_deadline() {
    let stub = ConverseStub::start().expect("the Converse stub starts");
    let rig = Rig::sqs(60, 20).with_stub(&stub);
    let (_, submitted) = submit_with_transcripts(&rig, 14);
    let deadline = 6.0;
    // The GPU-style worker: local engines, small batches, so jobs wait.
    let gpu = rig.worker(
        &[
            "--summary-backend",
            "bedrock",
            "--max-batch",
            "2",
            "--max-in-flight",
            "2",
            "--exit-when-empty",
        ],
        "gpu.log",
    );
    // The overflow worker: managed only, jobs at least `deadline` old.
    let overflow = rig.worker(
        &[
            "--speech-backend",
            "transcribe",
            "--summary-backend",
            "bedrock",
            "--transcribe-bucket",
            BUCKET,
            "--min-job-age",
            "6",
            "--exit-when-empty",
        ],
        "overflow.log",
    );
    let g = wait_with_timeout(gpu, Duration::from_secs(600));
    let o = wait_with_timeout(overflow, Duration::from_secs(600));
    assert!(g.status.success(), "{}", rig.log("gpu.log"));
    assert!(o.status.success(), "{}", rig.log("overflow.log"));
    let records = rig.records();
    assert_eq!(records.len(), 14, "exactly one record per job");
    let by = split(&records, "speech");
    println!("overflow fleet, deadline {deadline} s: split {by:?}");
    assert!(
        by.get("local").copied().unwrap_or(0) >= 2,
        "GPU worker starved: {by:?}"
    );
    assert!(by.get("transcribe").copied().unwrap_or(0) >= 1, "{by:?}");
    for r in records.values() {
        assert_eq!(r["status"], "succeeded", "{r}");
        if r["backend"]["speech"] == "transcribe" {
            // Taken only once it was past the deadline.
            assert!(latency_s(r, &submitted) >= deadline, "{r}");
        }
    }
    // None twice: one Transcribe job per managed record, and every
    // message deleted.
    assert_eq!(rig.transcribe_jobs().len(), by["transcribe"]);
    let d = rig.depth();
    assert_eq!(d.visible + d.in_flight, 0);
    assert!(rig.dlq_bodies().is_empty());
}

/// Summarize jobs with chosen ids.
fn summary_jobs(prefix: &str, n: usize, result: &str) -> Vec<Job> {
    (0..n)
        .map(|i| {
            let mut j = Job::new(TaskKind::Summarize);
            j.job_id = format!("{prefix}-{i:03}");
            j.text = Some(format!("Item {i}: the team agreed to ship on Friday."));
            j.options.max_summary_tokens = Some(8);
            j.result = Some(result.to_string());
            j
        })
        .collect()
}

#[test]
fn a_canary_split_lands_near_its_weights_and_each_job_keeps_its_route() {
    let stub = ConverseStub::start().expect("the Converse stub starts");
    let rig = Rig::sqs(60, 5).with_stub(&stub);
    // Routes hash the job id, so these ids always split the same way; 120
    // of them are enough for a 90/10 split to show within 5 points.
    let n = 120;
    let first = format!("s3://{BUCKET}/earshot/results/");
    rig.send_jobs(&summary_jobs("canary", n, &first));
    // Routing is under test, not summaries: the local engine is a tiny
    // random-weight LLM written here, so ~108 local summaries take seconds.
    let tiny = rig.tmp.path().join("tiny-llama.gguf");
    earshot_inference::testing::write_tiny_llm(
        &tiny,
        earshot_inference::testing::TinyLlm::llama(),
        7,
    )
    .unwrap();
    let tiny = tiny.display().to_string();
    let route = [
        "--route",
        "summary=local:0.9,bedrock:0.1",
        "--max-batch",
        "16",
        "--llm-model",
        tiny.as_str(),
    ];
    rig.drain(&route, "canary.log");
    let records = rig.records();
    assert_eq!(records.len(), n);
    let by = split(&records, "summary");
    let local = by.get("local").copied().unwrap_or(0) as f64 / n as f64;
    println!("canary 90/10 over {n} jobs: {by:?}");
    assert!((local - 0.9).abs() <= 0.05, "{by:?}");
    assert_eq!(stub.recorded().len(), by["bedrock"]);
    // The same ids again (a redelivery, or a re-run): the same routes.
    let second = format!("s3://{BUCKET}/again/");
    rig.send_jobs(&summary_jobs("canary", n, &second));
    rig.drain(&route, "canary2.log");
    let again = rig.records_under("again/");
    assert_eq!(again.len(), n);
    for (name, r) in &again {
        assert_eq!(
            r["backend"]["summary"], records[name]["backend"]["summary"],
            "{name} changed route"
        );
    }
}

#[test]
fn shadow_records_the_word_error_rate_between_local_and_transcribe() {
    let stub = ConverseStub::start().expect("the Converse stub starts");
    let rig = Rig::sqs(60, 5).with_stub(&stub);
    // The bundled sample: espeak-ng voices reading sample.txt. Transcribe's
    // stand-in transcript is that text (what a perfect service returns),
    // so the recorded WER is the local transcript's against the script.
    let sample = earshot_inference::testing::fixtures_dir().join("sample.wav");
    let script =
        std::fs::read_to_string(earshot_inference::testing::fixtures_dir().join("sample.txt"))
            .unwrap();
    let script = script.split_whitespace().collect::<Vec<_>>().join(" ");
    let ids = rig.submit(&[sample], "transcribe+summarize", &[]);
    let name = earshot_managed::transcribe::job_name(&ids[0]);
    rig.put_transcript(&ids[0], &output_for_text(&name, &script, 20.0));
    let args = ["--shadow-rate", "1", "--transcribe-bucket", BUCKET];
    rig.drain(&args, "shadow.log");
    let records = rig.records();
    let r = record_of(&records, &ids[0]);
    assert_eq!(r["backend"]["speech"], "local", "{r}");
    let sh = &r["shadow"];
    assert_eq!(sh["speech"]["backend"], "transcribe", "{r}");
    let wer = sh["speech"]["wer"].as_f64().expect("a WER");
    println!("shadow WER local vs managed on sample.wav: {wer:.3}");
    assert!((0.0..0.5).contains(&wer), "{wer}");
    assert_eq!(sh["summary"]["backend"], "bedrock");
    assert!(sh["summary"]["generated_tokens"].as_u64().unwrap() > 0);
    assert!(sh["cost_usd"].as_f64().unwrap() > 0.0);
    // The primary result is untouched by the shadow.
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["backend"]["summary"], "local");
}
