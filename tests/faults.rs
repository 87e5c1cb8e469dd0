//! The queue worker under injected faults: the real `earshot work` binary
//! against a real moto server (SQS and S3 protocol), with a fault-injecting
//! proxy (`tests/fault_proxy`) between them. What must hold after every
//! run: exactly one result record per job (none lost, none extra), the
//! queue empty, and the dead-letter queue holding only the job that was
//! built to end there.
//!
//! Covered: S3 read and write failures (500, 503, throttling, resets,
//! dropped connections, delays), SQS receive/delete/change-visibility
//! failures, calls that are never answered (a hung server), the queue
//! server restarted mid-run, the worker `kill -9`ed every few seconds over
//! 100 jobs, SIGTERM storms, and `--job-timeout` with a stalled engine and
//! a stalled fetch (the worker's test-only `EARSHOT_TEST_STALL_*` hook).
//!
//! "Restarted" means the proxy stops listening and cuts every connection
//! for a few seconds, then listens again: moto keeps all state in memory
//! and a restarted moto forgets every queue, message and object, which is
//! a lost region, not a restart; no queue consumer can keep "one record
//! per job" across that.
//!
//! Sizes fit CI (a few minutes in a debug build on 2 cores; the tests take
//! turns, since their timings assume a worker has the CPU to itself).
//! `EARSHOT_LONG_TESTS=1` runs the heavier variants (more jobs, longer
//! storms).

mod common;
mod fault_proxy;

use common::*;
use fault_proxy::{Fault, FaultProxy, Target};

use std::collections::BTreeSet;
use std::fs::File;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use earshot_queue_adapter::testing::free_port;
use earshot_queue_adapter::QueueDepth;
use serde_json::Value;

/// One worker-heavy test at a time (see the module doc).
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies the run's worker logs to `$EARSHOT_FAULT_LOGS/<test>/` when
/// that is set (on success and on failure), for looking into a run.
struct KeepLogs<'a>(&'a Rig, &'static str);

impl Drop for KeepLogs<'_> {
    fn drop(&mut self) {
        let Some(dir) = std::env::var_os("EARSHOT_FAULT_LOGS") else {
            return;
        };
        let out = std::path::Path::new(&dir).join(self.1);
        let _ = std::fs::create_dir_all(&out);
        for e in std::fs::read_dir(self.0.tmp.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.contains(".log") {
                let _ = std::fs::copy(e.path(), out.join(name));
            }
        }
    }
}

fn long() -> bool {
    std::env::var("EARSHOT_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// A small deterministic generator (xorshift64*) for kill timings.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("EARSHOT_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("fault seed: {seed} (EARSHOT_FAULT_SEED={seed} repeats it)");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Starts `earshot work` (transcription only, 1 s polls, no retry delay)
/// with stdout and stderr in `<tmp>/<log>.out` and `<tmp>/<log>`, talking
/// to `endpoint` (the proxy) when given, with extra environment.
fn worker(
    rig: &Rig,
    endpoint: Option<&str>,
    env: &[(&str, &str)],
    extra: &[&str],
    log: &str,
) -> Child {
    let mut args = vec![
        "work",
        "--no-summarizer",
        "--wait-seconds",
        "1",
        "--retry-delay",
        "0",
    ];
    args.extend_from_slice(extra);
    let mut cmd = rig.cmd(&args);
    if let Some(e) = endpoint {
        cmd.env("AWS_ENDPOINT_URL", e);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = File::create(rig.tmp.path().join(format!("{log}.out"))).unwrap();
    let err = File::create(rig.tmp.path().join(log)).unwrap();
    cmd.stdout(out).stderr(err).spawn().expect("worker starts")
}

/// The worker's stats line (the last stdout line).
fn stats_of(rig: &Rig, log: &str) -> Value {
    let out = std::fs::read_to_string(rig.tmp.path().join(format!("{log}.out"))).unwrap();
    serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap_or(Value::Null)
}

/// Waits for a worker to exit; its exit status code (None: a signal).
fn wait_exit(rig: &Rig, mut child: Child, limit: Duration, log: &str) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("worker still running after {limit:?}:\n{}", rig.log(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Exactly one record per job id, every one succeeded, nothing else in
/// the result prefix, the queue empty.
fn assert_one_record_each(rig: &Rig, ids: &[String]) -> std::collections::BTreeMap<String, Value> {
    let records = rig.records();
    let want: BTreeSet<String> = ids.iter().map(|i| format!("{i}.json")).collect();
    let got: BTreeSet<String> = records.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let stray: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && stray.is_empty(),
        "one record per job: {} missing {missing:?}, {} stray {stray:?}",
        missing.len(),
        stray.len()
    );
    for id in ids {
        let r = &records[&format!("{id}.json")];
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["job_id"], id.as_str(), "{r}");
    }
    assert_eq!(rig.depth(), QueueDepth::default(), "the queue is empty");
    records
}

/// The DLQ's job ids (every body must be a job).
fn dlq_job_ids(rig: &Rig) -> BTreeSet<String> {
    rig.dlq_bodies()
        .iter()
        .map(|b| {
            let v: Value = serde_json::from_str(b).expect("DLQ body is a job");
            v["job_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Runs a draining worker through the proxy to the end; its stats.
fn drain_through(
    rig: &Rig,
    proxy: &FaultProxy,
    env: &[(&str, &str)],
    extra: &[&str],
    log: &str,
) -> Value {
    let mut args = vec!["--exit-when-empty", "--max-batch", "4"];
    args.extend_from_slice(extra);
    let child = worker(rig, Some(&proxy.endpoint()), env, &args, log);
    let code = wait_exit(rig, child, Duration::from_secs(300), log);
    assert_eq!(code, Some(0), "worker failed:\n{}", rig.log(log));
    stats_of(rig, log)
}

/// `n` inputs for fault runs: `real` short speech clips (3-5 s, spread
/// through the list, so some batches take real engine time) and, for the
/// rest, header-only WAVs, which the engine answers at once with an empty
/// transcript. The faults are in the queue and storage calls, which every
/// job makes whatever its audio; the CPU budget goes to running many jobs.
fn inputs(rig: &Rig, n: usize, real: usize) -> Vec<std::path::PathBuf> {
    let speech = short_clips(rig.tmp.path(), real);
    let every = n.checked_div(real).unwrap_or(usize::MAX).max(1);
    let mut speech = speech.into_iter();
    (0..n)
        .map(|i| {
            if i % every == 0 {
                if let Some(p) = speech.next() {
                    return p;
                }
            }
            let p = rig.tmp.path().join(format!("empty-{i:03}.wav"));
            write_wav(&p, &[]);
            p
        })
        .collect()
}

/// A job built to be dead-lettered: its result goes to a bucket that does
/// not exist, so writing it fails (transiently) on every delivery.
fn submit_doomed(rig: &Rig, clip: &std::path::Path) -> String {
    rig.submit(
        &[clip.to_path_buf()],
        "transcribe",
        &["--results", "s3://no-such-bucket/results/"],
    )
    .remove(0)
}

#[test]
fn s3_read_and_write_failures_lose_nothing() {
    let _t = turn();
    let rig = Rig::sqs(10, 8);
    let _logs = KeepLogs(&rig, "s3_read_and_write_failures_lose_nothing");
    let proxy = FaultProxy::start(rig.moto.as_ref().unwrap().port);
    let n = if long() { 100 } else { 30 };
    let clips = inputs(&rig, n + 1, 3);
    let ids = rig.submit(&clips[..n], "transcribe", &[]);
    let doomed = submit_doomed(&rig, &clips[n]);

    // Reads: whole calls that fail on every SDK attempt reach the worker,
    // whose own retry runs; single faults the SDK absorbs.
    // (The doomed job's calls are left alone here: it retries anyway.)
    let good_get = Target::S3Path("GET", "/earshot-test/earshot/inputs/");
    let good_put = Target::S3Path("PUT", "/earshot-test/earshot/results/");
    proxy.inject_calls(good_get, Fault::Status(500), 2);
    proxy.inject_every(Target::S3Get, Fault::Reset, Some(3), 2);
    proxy.inject_every(Target::S3Get, Fault::Throttle, Some(3), 3);
    proxy.inject_every(Target::S3Get, Fault::Drop, Some(2), 2);
    proxy.inject_every(
        Target::S3Get,
        Fault::Delay(Duration::from_millis(400)),
        Some(4),
        2,
    );
    // Writes of the result records.
    proxy.inject_calls(good_put, Fault::Status(503), 2);
    proxy.inject_every(Target::S3Put, Fault::Throttle, Some(3), 2);
    proxy.inject_every(Target::S3Put, Fault::Reset, Some(2), 3);
    proxy.inject_every(Target::S3Put, Fault::Drop, Some(2), 2);

    let stats = drain_through(&rig, &proxy, &[], &[], "s3.log");
    let counts = proxy.counts();
    eprintln!("proxy: {counts:?}\nstats: {stats}");
    for f in [
        "Status(500)",
        "Status(503)",
        "Reset",
        "Throttle",
        "Drop",
        "Delay",
    ] {
        assert!(proxy.fired(f) > 0, "{f} never fired: {counts:?}");
    }
    let records = assert_one_record_each(&rig, &ids);
    let again = records
        .values()
        .filter(|r| r["attempt"].as_u64() > Some(1))
        .count();
    assert!(
        again >= 2,
        "failed reads and writes were retried by the worker itself (not only the SDK): {stats}"
    );
    assert_eq!(
        dlq_job_ids(&rig),
        BTreeSet::from([doomed]),
        "only the job whose result cannot be written is dead-lettered"
    );
}

#[test]
fn sqs_receive_delete_and_visibility_failures_lose_nothing() {
    let _t = turn();
    let rig = Rig::sqs(3, 8);
    let _logs = KeepLogs(
        &rig,
        "sqs_receive_delete_and_visibility_failures_lose_nothing",
    );
    let proxy = FaultProxy::start(rig.moto.as_ref().unwrap().port);
    let n = if long() { 60 } else { 20 };
    let clips = inputs(&rig, n, 3);
    let ids = rig.submit(&clips, "transcribe", &[]);

    let rx = Target::SqsOp("ReceiveMessage");
    let del = Target::SqsOp("DeleteMessage");
    let vis = Target::SqsOp("ChangeMessageVisibility");
    proxy.inject_calls(rx.clone(), Fault::Status(500), 2);
    proxy.inject_every(rx.clone(), Fault::Throttle, Some(4), 2);
    proxy.inject_every(rx.clone(), Fault::Drop, Some(2), 3);
    // Never answered: without an attempt timeout the receive loop would
    // wait for ever.
    proxy.inject_every(rx, Fault::Hang, Some(1), 4);
    // Acknowledgements that fail after the record is written: the job comes
    // back, runs again, and rewrites the same record.
    proxy.inject_calls(del.clone(), Fault::Status(500), 2);
    proxy.inject_every(del.clone(), Fault::Reset, Some(2), 3);
    proxy.inject_every(del, Fault::Hang, Some(1), 5);
    // Heartbeats (lease 3 s, renewed every second) and releases.
    proxy.inject_calls(vis.clone(), Fault::Status(503), 2);
    proxy.inject_every(vis, Fault::Throttle, Some(3), 2);

    // Most inputs are empty and finish before their first heartbeat, and
    // the SDK's own retries outlast a short job (its heartbeat task ends
    // with the job, before it can log). Each job's first delivery is held
    // 6 s before its fetch, so heartbeats run, the whole-call 503s land on
    // them, and the worker sees the failure while the job is alive.
    let stats = drain_through(
        &rig,
        &proxy,
        &[
            ("EARSHOT_AWS_TIMEOUT", "4"),
            ("EARSHOT_TEST_STALL_MS", "6000"),
            ("EARSHOT_TEST_STALL_STAGE", "fetch"),
            ("EARSHOT_TEST_STALL_ATTEMPTS", "1"),
        ],
        &["--visibility-timeout", "3"],
        "sqs.log",
    );
    let counts = proxy.counts();
    eprintln!("proxy: {counts:?}\nstats: {stats}");
    for op in ["ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility"] {
        let injected: u64 = counts
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("sqs:{op} ")) && !k.ends_with(" Pass"))
            .map(|(_, n)| n)
            .sum();
        assert!(injected > 0, "no fault on {op}: {counts:?}");
    }
    assert!(proxy.fired("Hang") >= 2, "{counts:?}");
    let records = assert_one_record_each(&rig, &ids);
    let again = records
        .values()
        .filter(|r| r["attempt"].as_u64() > Some(1))
        .count();
    assert!(
        again >= 1,
        "a job whose acknowledgement failed ran again (and kept one record): {stats}"
    );
    assert!(dlq_job_ids(&rig).is_empty());
    let log = rig.log("sqs.log");
    assert!(log.contains("receive failed"), "{log}");
    assert!(log.contains("acknowledge failed"), "{log}");
    assert!(log.contains("heartbeat failed"), "{log}");
}

#[test]
fn queue_server_restarted_mid_run_loses_nothing() {
    let _t = turn();
    let rig = Rig::sqs(4, 8);
    let _logs = KeepLogs(&rig, "queue_server_restarted_mid_run_loses_nothing");
    let mut proxy = FaultProxy::start(rig.moto.as_ref().unwrap().port);
    let n = if long() { 120 } else { 30 };
    let clips = inputs(&rig, n + 1, 4);
    let ids = rig.submit(&clips[..n], "transcribe", &[]);
    let doomed = submit_doomed(&rig, &clips[n]);
    let child = worker(
        &rig,
        Some(&proxy.endpoint()),
        &[("EARSHOT_AWS_TIMEOUT", "5")],
        &[
            "--exit-when-empty",
            "--max-batch",
            "4",
            "--visibility-timeout",
            "4",
        ],
        "restart.log",
    );
    let restarts = if long() { 4 } else { 2 };
    for i in 0..restarts {
        let target = (i + 1) * n / (restarts + 1);
        wait_until(
            Duration::from_secs(240),
            "results before the restart",
            || rig.records().len() >= target,
        );
        // Down for longer than a lease: heartbeats, acknowledgements and
        // receives all fail meanwhile.
        proxy.restart(Duration::from_secs(5));
    }
    let code = wait_exit(&rig, child, Duration::from_secs(300), "restart.log");
    assert_eq!(code, Some(0), "{}", rig.log("restart.log"));
    assert_one_record_each(&rig, &ids);
    assert_eq!(dlq_job_ids(&rig), BTreeSet::from([doomed]));
    let log = rig.log("restart.log");
    assert!(
        log.contains("receive failed") || log.contains("heartbeat failed"),
        "the outage was seen:\n{log}"
    );
}

#[test]
fn kill_9_every_few_seconds_over_100_jobs() {
    let _t = turn();
    // Each kill strands the jobs the worker held; they come back when their
    // 2 s lease runs out, one receive the poorer. The queue's
    // maxReceiveCount leaves room for every kill of the storm, as the
    // README advises for fleets on spot capacity.
    let kills_planned = if long() { 40 } else { 12 };
    let rig = Rig::sqs(2, kills_planned + 5);
    let _logs = KeepLogs(&rig, "kill_9_every_few_seconds_over_100_jobs");
    let n = if long() { 300 } else { 100 };
    let clips = inputs(&rig, n, n / 25);
    let ids = rig.submit(&clips, "transcribe", &[]);
    let mut rng = Rng::seeded();
    let args = [
        "--max-batch",
        "4",
        "--max-in-flight",
        "4",
        "--visibility-timeout",
        "2",
    ];
    let t0 = Instant::now();
    let mut kills = 0;
    // Most inputs are empty WAVs that finish in milliseconds, so on a fast
    // machine 100 jobs outran the storm (two kills, CI at stop 24). Every
    // delivery is held 1.5 s before its fetch: the storm's length is then
    // set by the clock (about 100 x 1.5 s / 4 in flight, plus redeliveries),
    // not by how fast this machine decodes, and it spans several kills.
    let hold = [
        ("EARSHOT_TEST_STALL_MS", "1500"),
        ("EARSHOT_TEST_STALL_STAGE", "fetch"),
    ];
    while kills < kills_planned && rig.records().len() < n {
        let log = format!("kill-{kills}.log");
        let child = worker(&rig, None, &hold, &args, &log);
        // Killed a random 1-5 s into its work (after the models load,
        // which takes a few seconds and holds no job): mid-batch, or
        // between a record's write and its acknowledgement.
        let t = Instant::now();
        while !rig.log(&log).contains("worker ready") && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.range(1_000, 5_000)));
        signal(&child, libc::SIGKILL);
        let code = wait_exit(&rig, child, Duration::from_secs(30), &log);
        assert_eq!(code, None, "killed by a signal");
        kills += 1;
    }
    let before = rig.records().len();
    // What the storm left (and what the last kill stranded) finishes here.
    let child = worker(
        &rig,
        None,
        &hold,
        &[&args[..], &["--exit-when-empty"]].concat(),
        "final.log",
    );
    assert_eq!(
        wait_exit(&rig, child, Duration::from_secs(600), "final.log"),
        Some(0)
    );
    eprintln!(
        "{kills} kills; {before} of {n} jobs done during the storm; {:.0} s in all",
        t0.elapsed().as_secs_f64()
    );
    assert!(kills >= 3, "the storm needs several kills, got {kills}");
    assert!(before > 0, "jobs finished between kills");
    let records = assert_one_record_each(&rig, &ids);
    let redelivered = records
        .values()
        .filter(|r| r["attempt"].as_u64() > Some(1))
        .count();
    assert!(redelivered >= 1, "killed workers' jobs came back");
    assert!(dlq_job_ids(&rig).is_empty());
}

#[test]
fn sigterm_storms_lose_nothing_and_strand_nothing() {
    let _t = turn();
    // Room for a receive per storm round (a job may be held in each).
    let rig = Rig::sqs(60, 20);
    let _logs = KeepLogs(&rig, "sigterm_storms_lose_nothing_and_strand_nothing");
    let n = if long() { 120 } else { 40 };
    let clips = inputs(&rig, n, n / 8);
    let ids = rig.submit(&clips, "transcribe", &[]);
    let mut rng = Rng::seeded();
    let mut round = 0;
    let t0 = Instant::now();
    // Held 1 s before each fetch, as in the kill storm: a fast machine
    // cannot finish all 40 jobs inside the first round and leave the
    // storm a single round.
    let hold = [
        ("EARSHOT_TEST_STALL_MS", "1000"),
        ("EARSHOT_TEST_STALL_STAGE", "fetch"),
    ];
    while rig.records().len() < n {
        assert!(t0.elapsed() < Duration::from_secs(600), "no progress");
        let log = format!("term-{round}.log");
        let grace = if round % 2 == 0 { "0" } else { "30" };
        let child = worker(
            &rig,
            None,
            &hold,
            &[
                "--max-batch",
                "4",
                "--visibility-timeout",
                "60",
                "--shutdown-grace",
                grace,
            ],
            &log,
        );
        // Mostly mid-batch; sometimes while the models load.
        if rng.range(0, 4) > 0 {
            let t = Instant::now();
            while !rig.log(&log).contains("batch started") && t.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 1_500)));
        // The storm: SIGTERMs and a SIGINT in quick succession.
        for sig in [libc::SIGTERM, libc::SIGTERM, libc::SIGINT, libc::SIGTERM] {
            signal(&child, sig);
            std::thread::sleep(Duration::from_millis(rng.range(5, 60)));
        }
        let code = wait_exit(&rig, child, Duration::from_secs(120), &log);
        let text = rig.log(&log);
        if text.contains("worker ready") {
            assert_eq!(code, Some(0), "a stopping worker exits 0:\n{text}");
            // Everything it held is visible again or done: no job waits
            // out a 60 s lease behind a stopped worker.
            wait_until(Duration::from_secs(5), "no job left leased", || {
                rig.depth().in_flight == 0
            });
        } else {
            // Signalled while loading models: it held no job.
            assert!(code.is_none() || code == Some(0), "{code:?}:\n{text}");
        }
        round += 1;
        if round >= 12 {
            break;
        }
    }
    let child = worker(
        &rig,
        None,
        &[],
        &["--exit-when-empty", "--max-batch", "4"],
        "final.log",
    );
    assert_eq!(
        wait_exit(&rig, child, Duration::from_secs(300), "final.log"),
        Some(0)
    );
    assert!(round >= 2, "several storms, got {round}");
    assert_one_record_each(&rig, &ids);
    assert!(dlq_job_ids(&rig).is_empty());
}

/// `GET url` body with curl ("" when it does not answer).
fn http_get(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn job_timeout_with_a_stuck_engine_restarts_the_worker_and_retries_the_job() {
    let _t = turn();
    let rig = Rig::sqs(30, 3);
    let _logs = KeepLogs(
        &rig,
        "job_timeout_with_a_stuck_engine_restarts_the_worker_and_retries_the_job",
    );
    // Inputs the engine answers at once: only the stall can take 4 s, not
    // a slow CPU (a false "stuck" would be a restart, not a loss, but the
    // test asserts on exactly one).
    let clips = inputs(&rig, 3, 0);
    let ids = rig.submit(&clips, "transcribe", &[]);
    // The engine sleeps 10 minutes in the first batch of each job's first
    // delivery: a stuck engine.
    let stall = [
        ("EARSHOT_TEST_STALL_MS", "600000"),
        ("EARSHOT_TEST_STALL_ATTEMPTS", "1"),
    ];
    let args = [
        "--max-batch",
        "4",
        "--job-timeout",
        "4",
        "--shutdown-grace",
        "60",
    ];
    let t0 = Instant::now();
    let child = worker(&rig, None, &stall, &args, "stuck.log");
    let code = wait_exit(&rig, child, Duration::from_secs(120), "stuck.log");
    let log = rig.log("stuck.log");
    assert_eq!(code, Some(75), "exit for a restart (EX_TEMPFAIL):\n{log}");
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "no grace period waited on a stuck engine"
    );
    assert!(
        log.contains("test hook: stalling the speech engine"),
        "{log}"
    );
    assert!(log.contains("the engine is stuck"), "{log}");
    let stats = stats_of(&rig, "stuck.log");
    assert!(stats["timed_out"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        rig.records().is_empty(),
        "nothing finished on the stuck engine"
    );
    // Every job it held is back in the queue (the timed-out ones after
    // their backoff, here 0 s), none stuck behind a lease.
    wait_until(Duration::from_secs(5), "jobs visible again", || {
        let d = rig.depth();
        d.in_flight == 0 && d.visible == ids.len() as u64
    });
    // The supervisor's restart: a fresh process finishes them.
    let child = worker(
        &rig,
        None,
        &stall,
        &[&args[..], &["--exit-when-empty"]].concat(),
        "fresh.log",
    );
    assert_eq!(
        wait_exit(&rig, child, Duration::from_secs(300), "fresh.log"),
        Some(0)
    );
    let records = assert_one_record_each(&rig, &ids);
    assert!(
        records.values().any(|r| r["attempt"] == 2),
        "the stalled job was retried: {records:?}"
    );
    assert!(dlq_job_ids(&rig).is_empty());
}

#[test]
fn job_timeout_in_the_fetch_is_retried_then_dead_lettered_and_counted() {
    let _t = turn();
    let rig = Rig::local();
    let _logs = KeepLogs(
        &rig,
        "job_timeout_in_the_fetch_is_retried_then_dead_lettered_and_counted",
    );
    let clips = short_clips(rig.tmp.path(), 1);
    let ids = rig.submit(&clips, "transcribe", &[]);
    let probe = format!("127.0.0.1:{}", free_port());
    // Every delivery stalls 30 s before its fetch; the limit is 2 s. The
    // worker stays up (its engine is fine) and the local queue
    // dead-letters the job after --max-receives 3 (the rig's).
    let child = worker(
        &rig,
        None,
        &[
            ("EARSHOT_TEST_STALL_MS", "30000"),
            ("EARSHOT_TEST_STALL_STAGE", "fetch"),
        ],
        &["--job-timeout", "2", "--probe-bind", &probe],
        "fetch.log",
    );
    wait_until(Duration::from_secs(120), "the job dead-lettered", || {
        !rig.dlq_bodies().is_empty()
    });
    let metrics = http_get(&format!("http://{probe}/metrics"));
    let timeouts = metrics
        .lines()
        .find(|l| l.starts_with("earshot_worker_job_timeouts_total{stage=\"fetch\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(timeouts, Some(3.0), "one timeout per delivery:\n{metrics}");
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&rig, child, Duration::from_secs(60), "fetch.log"),
        Some(0)
    );
    let log = rig.log("fetch.log");
    assert_eq!(
        log.matches("job timed out (--job-timeout)").count(),
        3,
        "{log}"
    );
    assert!(rig.records().is_empty(), "no record: the job never ran");
    let dead = rig.dlq_bodies();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains(&ids[0]));
}

#[test]
fn local_queue_jobs_cannot_escape_the_queue_folder() {
    use earshot_queue_adapter::{Job, TaskKind};
    let _t = turn();
    let rig = Rig::local();
    let _logs = KeepLogs(&rig, "local_queue_jobs_cannot_escape_the_queue_folder");
    let clips = short_clips(rig.tmp.path(), 1);
    let ok = rig.submit(&clips, "transcribe", &[]);
    let queue = std::fs::canonicalize(rig.local_dir()).unwrap();
    // Real audio outside the queue folder: were it read, its job would
    // succeed.
    let outside = rig.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(&clips[0], outside.join("secret.wav")).unwrap();
    std::fs::create_dir_all(queue.join("inputs/sneaky")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("secret.wav"),
        queue.join("inputs/sneaky/link.wav"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, queue.join("inputs/sneaky-dir")).unwrap();

    let q = rig.queue();
    let send = |mutate: &dyn Fn(&mut Job)| -> String {
        let mut job = Job::new(TaskKind::Transcribe);
        job.audio = Some(queue.join("inputs").display().to_string()); // replaced below
        mutate(&mut job);
        let (body, attrs) = job.to_message();
        rig.rt.block_on(q.send(&body, &attrs)).unwrap();
        job.job_id
    };
    let escapes = [
        format!("{}/inputs/../../outside/secret.wav", queue.display()),
        outside.join("secret.wav").display().to_string(),
        format!("file://{}", outside.join("secret.wav").display()),
        queue.join("inputs/sneaky/link.wav").display().to_string(),
        queue
            .join("inputs/sneaky-dir/secret.wav")
            .display()
            .to_string(),
    ];
    let escape_ids: Vec<String> = escapes
        .iter()
        .map(|a| send(&|j: &mut Job| j.audio = Some(a.clone())))
        .collect();
    // A fine input whose result would be written outside.
    let inside = queue.join("inputs/sneaky/clip.wav");
    std::fs::copy(&clips[0], &inside).unwrap();
    let result_out = send(&|j: &mut Job| {
        j.audio = Some(inside.display().to_string());
        j.result = Some(format!("file://{}/", outside.display()));
    });
    // A job id that tries to climb out of the results folder.
    let mut job = Job::new(TaskKind::Transcribe);
    job.audio = Some(inside.display().to_string());
    let (body, attrs) = job.to_message();
    let body = body.replace(&job.job_id, "../../outside/pwned");
    let bad_id_msg = rig.rt.block_on(q.send(&body, &attrs)).unwrap();

    rig.drain(&["--no-summarizer"], "escape.log");
    let records = rig.records();
    assert_eq!(status_of(&records, &ok[0]), "succeeded");
    for (id, path) in escape_ids.iter().zip(&escapes) {
        let r = &records[&format!("{id}.json")];
        assert_eq!(r["status"], "failed", "{path}: {r}");
        assert_eq!(r["error"]["kind"], "bad_message", "{path}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must stay inside"),
            "{path}: {r}"
        );
    }
    let r = &records[&format!("{result_out}.json")];
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must stay inside"),
        "{r}"
    );
    let r = &records[&format!("{bad_id_msg}.json")];
    assert_eq!(r["error"]["kind"], "bad_message", "{r}");
    // Nothing was written outside the queue folder.
    let mut left: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["secret.wav"]);
    assert_eq!(records.len(), 2 + escape_ids.len() + 1);
}
