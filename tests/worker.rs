//! The queue worker end to end: the real `earshot` binary (`submit`,
//! `work`, `status`) against a real SQS/S3 protocol server (moto, from the
//! test virtual environment) on loopback, and against the embedded local
//! queue; real speech clips cut from the fixtures; the real tiny.en and
//! SmolLM2 models from `scripts/fetch-models`.
//!
//! What must hold: every job ends with exactly one result record, whatever
//! happens to the worker (kill -9, SIGTERM); bad inputs end as failure
//! records without hurting the rest of their batch; transient failures are
//! retried and then dead-lettered; heartbeats keep a long job with one
//! worker; Opus (Ogg, WebM) and video inputs are jobs like WAV ones.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use earshot_inference::testing::{fixture_manifest, fixtures_dir};
use earshot_queue_adapter::sqs::SqsQueue;
use earshot_queue_adapter::testing::free_port;
use earshot_queue_adapter::{JobQueue, QueueDepth};
use serde_json::Value;

#[test]
fn every_task_type_end_to_end_on_sqs_with_schemas_and_status() {
    let rig = Rig::sqs(30, 3);
    let dir = rig.tmp.path();
    let clips = short_clips(dir, 1);
    let transcript = dir.join("notes.txt");
    std::fs::write(
        &transcript,
        "We agreed to ship the new bicycle lights on Friday. Marketing starts the campaign on Monday, \
         and the press release goes out on Tuesday. The factory confirmed the first shipment.",
    )
    .unwrap();
    let t = rig.submit(&clips, "transcribe", &["--formats", "srt,vtt"]);
    let ts = rig.submit(
        &[fixtures_dir().join("sample.wav")],
        "transcribe+summarize",
        &[],
    );
    let s = rig.submit(&[transcript], "summarize", &["--max-summary-tokens", "60"]);

    // Before the worker runs: pending, exit status 3.
    let pending = rig.run(&["status", &t[0]]);
    assert_eq!(pending.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&pending.stdout).contains("\"pending\""));

    let moto = rig.moto.as_ref().unwrap();
    let notify_url = rig.rt.block_on(async {
        let sqs = moto.sqs().await;
        let out = sqs.create_queue().queue_name("done").send().await.unwrap();
        out.queue_url.unwrap()
    });
    let stats = rig.drain(
        &["--max-batch", "4", "--notify-queue-url", &notify_url],
        "work.log",
    );
    assert_eq!(stats["succeeded"], 3, "{stats}");
    // One notification per finished job, naming its record.
    let notes = rig
        .rt
        .block_on(async {
            let q = SqsQueue::with_client(moto.sqs().await, &notify_url);
            q.receive(10, Duration::from_secs(1), Duration::from_secs(30))
                .await
        })
        .unwrap();
    let mut noted: Vec<String> = notes
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(&d.body).unwrap();
            assert_eq!(v["status"], "succeeded");
            let id = v["job_id"].as_str().unwrap().to_string();
            assert_eq!(
                v["result"],
                format!("s3://{BUCKET}/earshot/results/{id}.json")
            );
            id
        })
        .collect();
    noted.sort();
    let mut all = vec![t[0].clone(), ts[0].clone(), s[0].clone()];
    all.sort();
    assert_eq!(noted, all);

    let lines: Vec<Value> = ok_lines(rig.run(&["status", &t[0], &ts[0], &s[0]]))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (rec, id) in lines.iter().zip([&t[0], &ts[0], &s[0]]) {
        assert_eq!(rec["status"], "succeeded", "{rec}");
        assert_eq!(rec["job_id"], id.as_str());
        assert_eq!(rec["attempt"], 1);
    }
    // transcribe: transcript and the asked-for renderings, no summary.
    let tr = &lines[0]["transcript"];
    assert!(
        tr["text"].as_str().unwrap().split_whitespace().count() >= 5,
        "{tr}"
    );
    assert!(tr["formats"]["srt"].as_str().unwrap().contains("-->"));
    assert!(tr["formats"]["vtt"].as_str().unwrap().starts_with("WEBVTT"));
    assert!(lines[0].get("summary").is_none());
    // transcribe+summarize: both.
    let sample = lines[1]["transcript"]["text"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        sample.contains("launch") || sample.contains("marketing"),
        "{sample}"
    );
    assert!(
        lines[1]["summary"]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count()
            >= 5
    );
    assert_eq!(lines[1]["summary"]["model"], "smollm2-135m-instruct");
    // summarize: summary only, within its token limit.
    assert!(lines[2].get("transcript").is_none());
    let sum = &lines[2]["summary"];
    assert!(sum["generated_tokens"].as_u64().unwrap() <= 60, "{sum}");
    assert!(!sum["text"].as_str().unwrap().trim().is_empty());

    // The records and the job examples satisfy the published schemas.
    validate_with_schema("result.schema.json", &lines);
    let examples: Vec<Value> = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("queue-adapter/examples/jobs"),
    )
    .unwrap()
    .map(|e| e.unwrap().path())
    .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("bad-"))
    .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
    .collect();
    validate_with_schema("job.schema.json", &examples);
    assert_eq!(rig.depth(), QueueDepth::default());
}

/// Submit 18 jobs (batches of 4: the kill lands in the third or fourth),
/// kill -9 the worker mid-batch, start another: every job
/// ends with exactly one record, and some were redelivered.
fn crash_test(rig: Rig) {
    const JOBS: usize = 18;
    let clips = short_clips(rig.tmp.path(), JOBS);
    let ids = rig.submit(&clips, "transcribe", &[]);
    let args = [
        "--no-summarizer",
        "--max-batch",
        "4",
        "--visibility-timeout",
        "3",
    ];
    let mut worker = rig.worker(&args, "first.log");
    wait_until(Duration::from_secs(300), "the first results", || {
        rig.records().len() >= 6
    });
    // Mid-batch: the next batch starts as soon as one ends.
    wait_until(Duration::from_secs(60), "a batch in progress", || {
        rig.log("first.log").matches("batch started").count()
            > rig.log("first.log").matches("batch done").count()
    });
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(worker.id() as i32, libc::SIGKILL) };
    let st = worker.wait().unwrap();
    assert_eq!(st.code(), None, "killed by a signal");
    let done_before = rig.records().len();
    assert!(
        done_before < JOBS,
        "the worker finished everything before the kill"
    );

    let stats = rig.drain(&args, "second.log");
    let records = rig.records();
    let want: BTreeSet<String> = ids.iter().map(|i| format!("{i}.json")).collect();
    let got: BTreeSet<String> = records.keys().cloned().collect();
    assert_eq!(got, want, "exactly one record per job, no strays");
    for id in &ids {
        let r = &records[&format!("{id}.json")];
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["job_id"], id.as_str());
    }
    let redelivered = records
        .values()
        .filter(|r| r["attempt"].as_u64() > Some(1))
        .count();
    assert!(
        redelivered >= 1,
        "jobs held by the killed worker come back: {stats}"
    );
    assert_eq!(rig.depth(), QueueDepth::default());
    assert!(rig.dlq_bodies().is_empty());
}

#[test]
fn kill_9_mid_batch_loses_nothing_on_sqs() {
    crash_test(Rig::sqs(3, 5));
}

#[test]
fn kill_9_mid_batch_loses_nothing_on_the_local_queue() {
    crash_test(Rig::local());
}

/// SIGTERM while jobs are in flight: exit 0; within a second every job
/// not finished is visible again (none stuck behind a dead lease).
/// `GET url` with curl: (status code, body). Status 0: no answer.
fn http_get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn sigterm_test(rig: Rig, grace: &str) {
    let clips = short_clips(rig.tmp.path(), 16);
    let ids = rig.submit(&clips, "transcribe", &[]);
    // With a grace period, the worker also answers its Kubernetes probes,
    // and readiness turns to "draining" while the running batch finishes.
    let probe = (grace != "0").then(|| format!("127.0.0.1:{}", free_port()));
    let mut args = vec![
        "--no-summarizer",
        "--max-batch",
        "4",
        "--visibility-timeout",
        "120",
        "--shutdown-grace",
        grace,
    ];
    if let Some(addr) = &probe {
        args.extend(["--probe-bind", addr]);
    }
    let worker = rig.worker(&args, "term.log");
    wait_until(Duration::from_secs(300), "a batch in progress", || {
        rig.log("term.log").contains("batch started")
    });
    if let Some(addr) = &probe {
        let (code, body) = http_get(&format!("http://{addr}/health"));
        assert_eq!(code, 200, "{body}");
        let (code, body) = http_get(&format!("http://{addr}/ready"));
        assert_eq!(code, 200, "{body}");
        let ready: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["device"], "cpu", "{ready}");
        assert_eq!(ready["whisper_models"][0], "tiny.en", "{ready}");
        let (code, text) = http_get(&format!("http://{addr}/metrics"));
        assert_eq!(code, 200);
        for name in [
            "earshot_model_load_seconds{model=\"tiny.en\"}",
            "earshot_worker_jobs_in_flight",
            "earshot_queue_depth{engine=\"speech\"}",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        // The container HEALTHCHECK command finds it through the same env.
        let hc = Command::new(env!("CARGO_BIN_EXE_earshot"))
            .arg("healthcheck")
            .env("EARSHOT_PROBE_BIND", addr)
            .output()
            .unwrap();
        assert!(hc.status.success(), "{hc:?}");
        let dead = format!("127.0.0.1:{}", free_port());
        let hc = Command::new(env!("CARGO_BIN_EXE_earshot"))
            .args(["healthcheck", "--addr", &dead, "--timeout", "1"])
            .output()
            .unwrap();
        assert_eq!(hc.status.code(), Some(1), "{hc:?}");
        assert!(String::from_utf8_lossy(&hc.stderr).contains("unhealthy"));
        // No inference routes on the probe port.
        let (code, _) = http_get(&format!("http://{addr}/v1/models"));
        assert_eq!(code, 404);
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    if let Some(addr) = &probe {
        wait_until(Duration::from_secs(30), "/ready draining", || {
            let (code, body) = http_get(&format!("http://{addr}/ready"));
            code == 503 && body.contains("\"draining\"")
        });
    }
    let out = wait_with_timeout(worker, Duration::from_secs(120));
    let exited = Instant::now();
    assert_eq!(out.status.code(), Some(0), "{}", rig.log("term.log"));
    let depth = rig.depth();
    let records = rig.records().len() as u64;
    let checked = exited.elapsed();
    assert!(
        checked < Duration::from_secs(1),
        "checking took {checked:?}"
    );
    assert_eq!(
        depth.in_flight, 0,
        "no job left leased by the stopped worker"
    );
    assert_eq!(
        depth.visible + records,
        ids.len() as u64,
        "finished or visible again"
    );
    assert!(depth.visible > 0, "SIGTERM came while jobs were waiting");
    let stats: Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let returned = stats["returned"].as_u64().unwrap();
    assert!(
        returned >= 1,
        "jobs the worker held were handed back: {stats}"
    );
    assert!(returned <= depth.visible, "{stats}");
    if grace != "0" {
        // With time to spare, the batch running at SIGTERM completes.
        let ran = stats["batch_jobs"].as_u64().unwrap();
        assert!(
            ran >= 1 && stats["succeeded"].as_u64() == Some(ran),
            "{stats}"
        );
    }
    // A later worker finishes the rest.
    rig.drain(&["--no-summarizer"], "after.log");
    assert_eq!(rig.records().len(), ids.len());
}

#[test]
fn sigterm_with_no_grace_releases_running_jobs_at_once_on_sqs() {
    sigterm_test(Rig::sqs(120, 5), "0");
}

#[test]
fn sigterm_finishes_the_running_batch_within_grace_on_the_local_queue() {
    let rig = Rig::local();
    sigterm_test(rig, "60");
}

#[test]
fn poison_inputs_fail_alone_in_their_batch() {
    let rig = Rig::sqs(30, 3);
    let dir = rig.tmp.path();
    let good = short_clips(dir, 4);
    let corrupt = dir.join("corrupt.wav");
    let mut noise = b"RIFF\x24\x00\x00\x00WAVEjunk".to_vec();
    noise.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
    std::fs::write(&corrupt, noise).unwrap();
    let mut files = good.clone();
    files.insert(2, corrupt);
    let ids = rig.submit(&files, "transcribe", &[]);
    // A message that is not a job at all, in the same batch.
    let q = rig.queue();
    let bad_id = rig
        .rt
        .block_on(q.send("{this is not json", &[("task".into(), "transcribe".into())]))
        .unwrap();

    let stats = rig.drain(&["--no-summarizer", "--max-batch", "8"], "work.log");
    let log = rig.log("work.log");
    assert!(
        log.contains("received messages=6"),
        "all six arrive in one batch:\n{log}"
    );
    let records = rig.records();
    assert_eq!(records.len(), 6, "{records:?}");
    for (i, id) in ids.iter().enumerate() {
        let want = if i == 2 { "failed" } else { "succeeded" };
        assert_eq!(status_of(&records, id), want, "job {i}");
    }
    let corrupt_rec = &records[&format!("{}.json", ids[2])];
    assert_eq!(corrupt_rec["error"]["kind"], "bad_audio", "{corrupt_rec}");
    let malformed = &records[&format!("{bad_id}.json")];
    assert_eq!(malformed["status"], "failed");
    assert_eq!(malformed["error"]["kind"], "bad_message");
    assert!(malformed["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    assert_eq!(
        (stats["succeeded"].as_u64(), stats["failed"].as_u64()),
        (Some(4), Some(2)),
        "{stats}"
    );
    assert_eq!(rig.depth(), QueueDepth::default());
    assert!(
        rig.dlq_bodies().is_empty(),
        "permanent failures are recorded, not dead-lettered"
    );
    validate_with_schema(
        "result.schema.json",
        &records.values().cloned().collect::<Vec<_>>(),
    );
}

#[test]
fn transient_failures_are_retried_then_dead_lettered() {
    let rig = Rig::sqs(30, 2);
    let clips = short_clips(rig.tmp.path(), 2);
    // The second job's results go to a bucket that does not exist: writing
    // fails every time (transient), so SQS's redrive takes it after 2 receives.
    let ok = rig.submit(&clips[..1], "transcribe", &[]);
    let doomed = rig.submit(
        &clips[1..],
        "transcribe",
        &["--results", "s3://no-such-bucket/results/"],
    );
    let stats = rig.drain(&["--no-summarizer"], "work.log");
    assert_eq!(stats["succeeded"], 1, "{stats}");
    assert!(stats["retried"].as_u64().unwrap() >= 2, "{stats}");
    let records = rig.records();
    assert_eq!(status_of(&records, &ok[0]), "succeeded");
    let dead = rig.dlq_bodies();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains(&doomed[0]));
}

#[test]
fn heartbeats_keep_long_jobs_from_a_second_worker() {
    let rig = Rig::local();
    // Full ~25 s clips in batches of 3 take several seconds per batch on
    // a CPU (17 s on a quiet 2-core VM): far past the 5 s lease, which
    // only heartbeats (every third of it) keep alive. The lease was 1 s
    // until a fresh-clone CI run, every test binary sharing the 2 cores,
    // stalled a heartbeat past it and a job reached the second worker
    // (attempt 2): a test of the heartbeat, not of how fast the scheduler
    // wakes it, so the lease leaves room for a 3 s stall.
    let clips: Vec<PathBuf> = fixture_manifest()
        .iter()
        .filter(|c| c.file.ends_with(".wav"))
        .take(6)
        .map(|c| fixtures_dir().join(&c.file))
        .collect();
    let ids = rig.submit(&clips, "transcribe", &[]);
    let args = [
        "--no-summarizer",
        "--max-batch",
        "3",
        "--visibility-timeout",
        "5",
        "--exit-when-empty",
    ];
    let a = rig.worker(&args, "a.log");
    let b = rig.worker(&args, "b.log");
    for (w, log) in [(a, "a.log"), (b, "b.log")] {
        let out = wait_with_timeout(w, Duration::from_secs(600));
        assert!(out.status.success(), "{}", rig.log(log));
    }
    let records = rig.records();
    assert_eq!(records.len(), ids.len());
    for r in records.values() {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["attempt"], 1, "a job was handed to a second worker: {r}");
    }
    let slow = records
        .values()
        .filter_map(|r| r["timings"]["transcribe"].as_f64())
        .fold(0.0, f64::max);
    assert!(
        slow > 5.0,
        "the test needs a batch longer than the lease (longest {slow:.2} s)"
    );
}

#[test]
fn bad_submissions_and_ids_get_clear_errors() {
    let rig = Rig::local();
    let out = rig.run(&["submit", "--task", "translate", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task"));
    let out = rig.run(&["submit", "--task", "transcribe", "/no/such/file.wav"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.wav"));
    let out = rig.run(&["status", "../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job_id"));
}

/// Word timestamps through the job contract: `formats: ["transcribe"]`
/// turns them on by itself, the record's segments carry the words (no
/// surrounding spaces, punctuation attached), the `transcribe` rendering is
/// Amazon Transcribe's document named after the job and holding the same
/// words, `max_words_per_cue` cuts the captions, and a job without word
/// options gets no words. Records and jobs satisfy the published schemas.
#[test]
fn word_timestamps_through_the_job_contract() {
    let rig = Rig::local();
    let sample = fixtures_dir().join("sample.wav");
    let words = rig.submit(
        std::slice::from_ref(&sample),
        "transcribe",
        &[
            "--formats",
            "transcribe,srt,verbose_json",
            "--max-words-per-cue",
            "2",
        ],
    );
    let plain = rig.submit(
        std::slice::from_ref(&sample),
        "transcribe",
        &["--formats", "json"],
    );
    let stats = rig.drain(&["--no-summarizer"], "work.log");
    assert_eq!(stats["succeeded"], 2, "{stats}");
    let records = rig.records();
    let rec = &records[&format!("{}.json", words[0])];
    let tr = &rec["transcript"];
    let recorded: Vec<(String, f64, f64)> = tr["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["words"].as_array().cloned().unwrap_or_default())
        .map(|w| {
            (
                w["word"].as_str().unwrap().to_string(),
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(recorded.len() >= 20, "{tr}");
    let duration = tr["duration"].as_f64().unwrap();
    let mut prev = 0.0;
    for (w, s, e) in &recorded {
        assert!(!w.is_empty() && w.trim() == w, "{w:?}");
        assert!(
            0.0 <= *s && s <= e && *e <= duration + 0.01,
            "{w} [{s}, {e}]"
        );
        assert!(*s >= prev - 1e-6, "{w} starts before the previous word");
        prev = *s;
    }
    assert!(
        recorded.iter().any(|(w, ..)| w.ends_with(['.', ',', '?'])),
        "{recorded:?}"
    );

    let doc = tr["formats"]["transcribe"]
        .as_str()
        .expect("the transcribe rendering");
    let parsed = earshot_managed::transcribe_json::parse(doc.as_bytes()).expect("Transcribe JSON");
    let v: Value = serde_json::from_str(doc).unwrap();
    assert_eq!(v["jobName"], words[0].as_str());
    let from_doc: Vec<&str> = parsed
        .segments
        .iter()
        .flat_map(|s| &s.words)
        .map(|w| w.word.as_str())
        .collect();
    let from_record: Vec<&str> = recorded.iter().map(|(w, ..)| w.as_str()).collect();
    assert_eq!(from_doc, from_record);

    let srt = tr["formats"]["srt"].as_str().unwrap();
    let cues: Vec<&str> = srt.trim_end().split("\n\n").collect();
    assert!(cues.len() * 2 >= recorded.len(), "{srt}");
    for c in &cues {
        let text = c.lines().skip(2).collect::<Vec<_>>().join(" ");
        assert!(text.split_whitespace().count() <= 2, "{c:?}");
    }
    let verbose: Value =
        serde_json::from_str(tr["formats"]["verbose_json"].as_str().unwrap()).unwrap();
    assert_eq!(verbose["words"].as_array().unwrap().len(), recorded.len());

    // No word options: no words anywhere.
    let p = &records[&format!("{}.json", plain[0])]["transcript"];
    assert!(
        p["segments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("words").is_none()),
        "{p}"
    );
    assert!(!p["formats"]["json"].as_str().unwrap().contains("\"words\""));

    validate_with_schema(
        "result.schema.json",
        &records.values().cloned().collect::<Vec<_>>(),
    );
}

/// Opus in Ogg and WebM and a video's sound are jobs like any other (the
/// worker decodes through the same `audio` module as `transcribe` and the
/// HTTP endpoint); a corrupt OpusHead and a silent video fail alone, as bad
/// audio, in the same batch.
#[test]
fn opus_and_video_jobs_on_the_local_queue() {
    let rig = Rig::local();
    let clips = fixture_manifest();
    let clip = |format: &str| {
        let c = clips
            .iter()
            .find(|c| c.format == format)
            .unwrap_or_else(|| panic!("no {format} clip in the manifest"));
        (fixtures_dir().join(&c.file), c.text.clone())
    };
    let good = [
        clip("ogg-opus"),
        clip("webm-opus-stereo"),
        clip("webm-vp8-opus"),
    ];
    let mut files: Vec<PathBuf> = good.iter().map(|(f, _)| f.clone()).collect();
    files.push(fixtures_dir().join("corrupt-head.opus"));
    files.push(fixtures_dir().join("video-no-audio.mp4"));
    let ids = rig.submit(&files, "transcribe", &[]);
    let stats = rig.drain(&["--no-summarizer", "--max-batch", "8"], "work.log");
    let records = rig.records();
    for (i, id) in ids.iter().enumerate() {
        let rec = &records[&format!("{id}.json")];
        if let Some((_, text)) = good.get(i) {
            assert_eq!(rec["status"], "succeeded", "{}: {rec}", files[i].display());
            let got = rec["transcript"]["text"].as_str().unwrap_or_default();
            // The passage's first words, whatever the punctuation.
            let first: Vec<String> = text
                .split_whitespace()
                .take(3)
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_alphanumeric())
                        .to_lowercase()
                })
                .collect();
            let got_l = got.to_lowercase();
            assert!(
                first.iter().all(|w| got_l.contains(w.as_str())),
                "{}: {got:?} lacks {first:?}",
                files[i].display()
            );
        } else {
            assert_eq!(rec["status"], "failed", "{rec}");
            assert_eq!(rec["error"]["kind"], "bad_audio", "{rec}");
        }
    }
    assert_eq!(
        (stats["succeeded"].as_u64(), stats["failed"].as_u64()),
        (Some(3), Some(2)),
        "{stats}"
    );
}

/// The job option `vad`: speech moved 20 s into silence is transcribed
/// where it is, as it is without the silence, and nothing is made up in
/// the silence.
#[test]
fn vad_job_option_keeps_the_timeline() {
    let rig = Rig::local();
    let sample = fixtures_dir().join("sample.wav");
    let speech = earshot_inference::audio::load_file(&sample, Default::default()).unwrap();
    let mut samples = vec![0f32; 20 * 16_000];
    samples.extend_from_slice(&speech);
    let padded = rig.tmp.path().join("padded.wav");
    write_wav(&padded, &samples);
    let vad = rig.submit(
        std::slice::from_ref(&padded),
        "transcribe",
        &["--vad", "--formats", "json"],
    );
    let plain = rig.submit(std::slice::from_ref(&sample), "transcribe", &[]);
    let stats = rig.drain(&["--no-summarizer"], "work.log");
    assert_eq!(stats["succeeded"], 2, "{stats}");
    let records = rig.records();
    let rec = &records[&format!("{}.json", vad[0])];
    let segs = rec["transcript"]["segments"].as_array().unwrap();
    assert!(!segs.is_empty(), "{rec}");
    assert!(
        segs[0]["start"].as_f64().unwrap() >= 19.5,
        "first segment starts in the silence: {}",
        segs[0]
    );
    let text = rec["transcript"]["text"].as_str().unwrap();
    let reference = records[&format!("{}.json", plain[0])]["transcript"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reference.split_whitespace().count() >= 10, "{reference:?}");
    let w = wer(&reference, text);
    assert!(
        w <= 0.15,
        "WER {w} against the plain run: {text:?} vs {reference:?}"
    );
}

/// The job options `diarize` and `num_speakers` through the local queue:
/// the record's segments and words carry speakers (pyannote's two-person
/// sample call), and the `rttm` and `srt` renderings stored with it show
/// them. Needs `scripts/fetch-models --only diarize --only pyannote-sample`.
#[test]
fn diarize_job_option_labels_the_record() {
    let dir = earshot_models::models_dir();
    let sample = dir.join("pyannote-sample/sample.wav");
    for f in [
        sample.clone(),
        dir.join("diarize/segmentation-3.0.bin"),
        dir.join("diarize/campplus_cn_en_common.pt"),
    ] {
        assert!(
            f.is_file(),
            "{} missing: run scripts/fetch-models --only diarize --only pyannote-sample",
            f.display()
        );
    }
    let rig = Rig::local();
    let ids = rig.submit(
        std::slice::from_ref(&sample),
        "transcribe",
        &["--num-speakers", "2", "--formats", "rttm,srt"],
    );
    let stats = rig.drain(&["--no-summarizer"], "work.log");
    assert_eq!(stats["succeeded"], 1, "{stats}");
    let records = rig.records();
    let rec = &records[&format!("{}.json", ids[0])];
    let segs = rec["transcript"]["segments"].as_array().unwrap();
    let speakers: std::collections::BTreeSet<&str> = segs
        .iter()
        .map(|s| s["speaker"].as_str().expect("a speaker on every segment"))
        .collect();
    assert_eq!(speakers.len(), 2, "{rec}");
    assert!(segs
        .iter()
        .flat_map(|s| s["words"].as_array().unwrap())
        .all(|w| w["speaker"].is_string()));
    let rttm = rec["transcript"]["formats"]["rttm"].as_str().unwrap();
    assert!(
        rttm.lines().count() >= 2 && rttm.contains("SPEAKER_01"),
        "{rttm}"
    );
    let srt = rec["transcript"]["formats"]["srt"].as_str().unwrap();
    assert!(srt.contains("[SPEAKER_00] "), "{srt}");
}
