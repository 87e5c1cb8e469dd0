//! The embedded local queue: a folder, no AWS, no daemon. The default when
//! no queue URL is configured (development, single-box installs, tests).
//!
//! It keeps SQS's semantics so the worker cannot tell the difference:
//! at-least-once delivery, a lease (visibility timeout) per receive that can
//! be extended, delete on acknowledge, release with a delay, and a
//! dead-letter folder after `max_receives` deliveries (SQS's redrive).
//!
//! Layout: `messages/<enqueue-ns>-<id>.json` holds each message and its
//! delivery state; `dead/` holds dead-lettered ones. Every state change is
//! a write-to-temporary + fsync + rename under an exclusive `flock` on
//! `.lock`, so a `kill -9` at any point leaves each message either in its
//! old state or its new one, and several worker processes can share one
//! folder. A lease held by a killed worker simply runs out.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{QueueError, Result};
use crate::queue::{Delivery, JobQueue, QueueDepth};
use crate::store::write_atomic_sync;

/// Deliveries before a message is dead-lettered (as SQS's maxReceiveCount).
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    body: String,
    attributes: BTreeMap<String, String>,
    enqueued_ms: u64,
    visible_at_ms: u64,
    receive_count: u32,
    /// Nonce of the current lease; `None` while nobody holds it.
    receipt: Option<String>,
}

#[derive(Clone)]
pub struct LocalQueue {
    dir: PathBuf,
    max_receives: u32,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LocalQueue {
    /// Opens (creating if needed) the queue in `dir`.
    pub fn open(dir: impl Into<PathBuf>, max_receives: u32) -> Result<Self> {
        let dir = dir.into();
        for sub in ["messages", "dead"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| QueueError::io(format!("creating {}", dir.join(sub).display()), e))?;
        }
        let q = LocalQueue {
            dir,
            max_receives: max_receives.max(1),
        };
        q.sweep_temporaries()?;
        Ok(q)
    }

    /// Removes the temporaries of atomic writes that a crash (`kill -9`,
    /// power loss) left behind (`.<name>.<nonce>.tmp`). In `messages/` and
    /// `dead/` every write happens under the queue's lock, so holding it
    /// makes any temporary found there abandoned. Results and inputs are
    /// written without the lock (by workers and `submit` in other
    /// processes), so there only temporaries untouched for
    /// [`STALE_TEMPORARY`] go. Returns how many were removed.
    pub fn sweep_temporaries(&self) -> Result<usize> {
        let _guard = self.lock()?;
        let mut removed = 0;
        for sub in ["messages", "dead"] {
            removed += sweep_dir(&self.dir.join(sub), None)?;
        }
        removed += sweep_dir(&self.dir.join("results"), Some(STALE_TEMPORARY))?;
        let inputs = self.dir.join("inputs");
        removed += sweep_dir(&inputs, Some(STALE_TEMPORARY))?;
        if let Ok(rd) = std::fs::read_dir(&inputs) {
            for e in rd.flatten() {
                // Job folders only: a symbolic link is not followed.
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    removed += sweep_dir(&e.path(), Some(STALE_TEMPORARY))?;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %self.dir.display(), "removed temporaries left by a crash");
        }
        Ok(removed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Messages moved aside after too many deliveries (message id, body).
    pub fn dead_letters(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for name in list_json(&self.dir.join("dead"))? {
            if let Some(s) = read_stored(&self.dir.join("dead").join(&name))? {
                out.push((s.id, s.body));
            }
        }
        Ok(out)
    }

    fn lock(&self) -> Result<File> {
        let path = self.dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| QueueError::io(format!("opening {}", path.display()), e))?;
        f.lock()
            .map_err(|e| QueueError::io(format!("locking {}", path.display()), e))?;
        Ok(f)
    }

    fn take(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>> {
        let _guard = self.lock()?;
        let messages = self.dir.join("messages");
        let now = now_ms();
        let mut out = Vec::new();
        for name in list_json(&messages)? {
            if out.len() >= max {
                break;
            }
            let path = messages.join(&name);
            let Some(mut s) = read_stored(&path)? else {
                continue;
            };
            if s.visible_at_ms > now {
                continue;
            }
            if s.receive_count >= self.max_receives {
                let dead = self.dir.join("dead").join(&name);
                std::fs::rename(&path, &dead)
                    .map_err(|e| QueueError::io(format!("dead-lettering {}", path.display()), e))?;
                tracing::warn!(message_id = %s.id, receives = s.receive_count, "moved to the dead-letter folder");
                continue;
            }
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            s.receive_count += 1;
            s.visible_at_ms = now + visibility.as_millis() as u64;
            s.receipt = Some(nonce.clone());
            write_atomic_sync(&path, &serde_json::to_vec(&s).expect("serializable"))?;
            out.push(Delivery {
                message_id: s.id,
                receipt: format!("{name}#{nonce}"),
                body: s.body,
                attributes: s.attributes,
                receive_count: s.receive_count,
                sent_at_ms: Some(s.enqueued_ms),
            });
        }
        Ok(out)
    }

    /// Applies `f` to the message a receipt names, if the lease is current.
    /// `f` returns the new state, or `None` to delete the message.
    fn with_receipt(&self, receipt: &str, f: impl FnOnce(Stored) -> Option<Stored>) -> Result<()> {
        let (name, nonce) = receipt
            .split_once('#')
            .filter(|(n, _)| !n.contains('/') && !n.starts_with('.'))
            .ok_or_else(|| QueueError::StaleReceipt(format!("malformed receipt {receipt:?}")))?;
        let _guard = self.lock()?;
        let path = self.dir.join("messages").join(name);
        let stale = || QueueError::StaleReceipt(format!("{name}: lease expired or message gone"));
        let s = read_stored(&path)?.ok_or_else(stale)?;
        if s.receipt.as_deref() != Some(nonce) {
            return Err(stale());
        }
        match f(s) {
            Some(next) => {
                write_atomic_sync(&path, &serde_json::to_vec(&next).expect("serializable"))
            }
            None => {
                std::fs::remove_file(&path)
                    .map_err(|e| QueueError::io(format!("deleting {}", path.display()), e))?;
                if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
        }
    }

    fn put(&self, body: &str, attributes: &[(String, String)]) -> Result<String> {
        // Under the lock like every other write here, so that a sweep in
        // another process never takes this write's temporary.
        let _guard = self.lock()?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let s = Stored {
            id: id.clone(),
            body: body.to_string(),
            attributes: attributes.iter().cloned().collect(),
            enqueued_ms: now,
            visible_at_ms: now,
            receive_count: 0,
            receipt: None,
        };
        let path = self
            .dir
            .join("messages")
            .join(format!("{nanos:024}-{id}.json"));
        write_atomic_sync(&path, &serde_json::to_vec(&s).expect("serializable"))?;
        Ok(id)
    }

    fn count(&self) -> Result<QueueDepth> {
        let messages = self.dir.join("messages");
        let now = now_ms();
        let mut d = QueueDepth::default();
        for name in list_json(&messages)? {
            if let Some(s) = read_stored(&messages.join(name))? {
                if s.visible_at_ms > now {
                    d.in_flight += 1;
                } else {
                    d.visible += 1;
                }
            }
        }
        Ok(d)
    }
}

/// How old a temporary in `results/` or `inputs/` must be before a sweep
/// takes it for abandoned (an atomic write of a record takes milliseconds,
/// of an uploaded input seconds).
pub const STALE_TEMPORARY: Duration = Duration::from_secs(600);

/// Whether a file name is one of [`write_atomic_sync`]'s temporaries.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Removes the temporaries in `dir` (older than `min_age`, when given).
fn sweep_dir(dir: &Path, min_age: Option<Duration>) -> Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(QueueError::io(format!("listing {}", dir.display()), e)),
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !is_temporary(&name) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Some(age) = min_age {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a >= age);
            if !old {
                continue;
            }
        }
        match std::fs::remove_file(e.path()) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(QueueError::io(
                    format!("removing {}", e.path().display()),
                    err,
                ))
            }
        }
    }
    Ok(removed)
}

fn list_json(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| QueueError::io(format!("listing {}", dir.display()), e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// `None` when the file vanished (acknowledged by another process between
/// listing and reading).
fn read_stored(path: &Path) -> Result<Option<Stored>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            QueueError::io(
                format!("reading {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(QueueError::io(format!("reading {}", path.display()), e)),
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::io("local queue task", std::io::Error::other(e)))?
}

/// How often a waiting receive looks again.
const POLL: Duration = Duration::from_millis(100);

#[async_trait]
impl JobQueue for LocalQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let q = self.clone();
            let got = blocking(move || q.take(max.max(1), visibility)).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<()> {
        let (q, r) = (self.clone(), receipt.to_string());
        blocking(move || {
            q.with_receipt(&r, |mut s| {
                s.visible_at_ms = now_ms() + visibility.as_millis() as u64;
                Some(s)
            })
        })
        .await
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        let (q, r) = (self.clone(), receipt.to_string());
        blocking(move || q.with_receipt(&r, |_| None)).await
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<()> {
        let (q, r) = (self.clone(), receipt.to_string());
        blocking(move || {
            q.with_receipt(&r, |mut s| {
                s.visible_at_ms = now_ms() + delay.as_millis() as u64;
                s.receipt = None;
                Some(s)
            })
        })
        .await
    }

    async fn send(&self, body: &str, attributes: &[(String, String)]) -> Result<String> {
        let (q, b, a) = (self.clone(), body.to_string(), attributes.to_vec());
        blocking(move || q.put(&b, &a)).await
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let q = self.clone();
        blocking(move || q.count()).await
    }

    fn describe(&self) -> String {
        format!("local queue {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;
    /// Long enough that a stalled step cannot outlast it: every write here
    /// is fsynced and runs on tokio's blocking pool, and on a CI machine
    /// busy with other tests a 300 ms lease ran out between an extend and
    /// the next receive, and a long poll took 2.6 s to see a message sent
    /// at 0.3 s (a stall of about two seconds, disk or CPU). The tests
    /// sleep through this lease only where expiry is the point.
    const LEASE: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn temporaries_left_by_a_crash_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(dir.path(), 5).unwrap();
        q.send("kept", &[]).await.unwrap();
        // What a kill -9 between the write and the rename leaves behind.
        let d = dir.path();
        std::fs::create_dir_all(d.join("results")).unwrap();
        std::fs::create_dir_all(d.join("inputs/job-1")).unwrap();
        let crash = [
            d.join("messages/.0001-x.json.abc.tmp"),
            d.join("dead/.0002-y.json.def.tmp"),
            d.join("results/.job-1.json.old.tmp"),
            d.join("inputs/job-1/.clip.wav.old.tmp"),
        ];
        // Writes possibly still running in another process (fresh).
        let fresh = [
            d.join("results/.job-2.json.new.tmp"),
            d.join("inputs/job-1/.other.wav.new.tmp"),
        ];
        for p in crash.iter().chain(&fresh) {
            std::fs::write(p, b"partial").unwrap();
        }
        let long_ago = SystemTime::now() - STALE_TEMPORARY - Duration::from_secs(60);
        for p in &crash[2..] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        // Not temporaries: left alone.
        std::fs::write(d.join("results/job-3.json"), b"{}").unwrap();
        std::fs::write(d.join("inputs/job-1/clip.wav"), b"RIFF").unwrap();

        let q = LocalQueue::open(d, 5).unwrap();
        for p in &crash {
            assert!(!p.exists(), "{} swept", p.display());
        }
        for p in &fresh {
            assert!(p.exists(), "{} (fresh) kept", p.display());
        }
        assert!(d.join("results/job-3.json").exists());
        assert!(d.join("inputs/job-1/clip.wav").exists());
        // The queue itself is intact.
        let got = q.receive(10, NOW, LEASE).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "kept");
        assert_eq!(q.sweep_temporaries().unwrap(), 0, "nothing left to sweep");
    }

    #[tokio::test]
    async fn lease_hides_then_redelivers_with_a_higher_count() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(dir.path(), 5).unwrap();
        let id = q
            .send("a", &[("task".into(), "transcribe".into())])
            .await
            .unwrap();
        let first = q.receive(10, NOW, LEASE).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].message_id.as_str(), first[0].receive_count),
            (id.as_str(), 1)
        );
        assert_eq!(first[0].attributes["task"], "transcribe");
        assert!(
            q.receive(10, NOW, LEASE).await.unwrap().is_empty(),
            "leased"
        );
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                visible: 0,
                in_flight: 1
            }
        );
        tokio::time::sleep(LEASE + Duration::from_millis(50)).await;
        let again = q.receive(10, NOW, LEASE).await.unwrap();
        assert_eq!(again[0].receive_count, 2);
        // The first lease is gone: its receipt no longer acknowledges.
        assert!(matches!(
            q.ack(&first[0].receipt).await,
            Err(QueueError::StaleReceipt(_))
        ));
        q.ack(&again[0].receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn heartbeats_keep_a_message_from_a_second_consumer() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(dir.path(), 5).unwrap();
        q.send("a", &[]).await.unwrap();
        let t = tokio::time::Instant::now();
        let d = q.receive(1, NOW, LEASE).await.unwrap().remove(0);
        // Heartbeats a quarter-lease apart until the message has been held
        // well past the lease it was received with.
        while t.elapsed() < LEASE * 3 / 2 {
            tokio::time::sleep(LEASE / 4).await;
            q.extend(&d.receipt, LEASE).await.unwrap();
            assert!(q.receive(1, NOW, LEASE).await.unwrap().is_empty());
        }
        q.ack(&d.receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn release_with_delay_and_dead_letter_after_max_receives() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(dir.path(), 2).unwrap();
        q.send("poison", &[]).await.unwrap();
        let d = q.receive(1, NOW, LEASE).await.unwrap().remove(0);
        q.release(&d.receipt, LEASE).await.unwrap();
        assert!(
            q.receive(1, NOW, LEASE).await.unwrap().is_empty(),
            "delayed"
        );
        // Released: the old receipt can no longer delete it.
        assert!(q.ack(&d.receipt).await.is_err());
        let d = q.receive(1, LEASE * 4, LEASE).await.unwrap().remove(0);
        assert_eq!(d.receive_count, 2);
        q.release(&d.receipt, NOW).await.unwrap();
        assert!(q.receive(1, NOW, LEASE).await.unwrap().is_empty());
        assert_eq!(
            q.dead_letters().unwrap(),
            vec![(d.message_id, "poison".to_string())]
        );
    }

    #[tokio::test]
    async fn state_survives_reopening_and_order_is_fifo() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = LocalQueue::open(dir.path(), 5).unwrap();
            for i in 0..5 {
                q.send(&format!("m{i}"), &[]).await.unwrap();
            }
            // A consumer takes two and "crashes" holding them.
            assert_eq!(q.receive(2, NOW, LEASE).await.unwrap().len(), 2);
        }
        let q = LocalQueue::open(dir.path(), 5).unwrap();
        let bodies = |q: LocalQueue| async move {
            let got = q.receive(10, NOW, LEASE).await.unwrap();
            got.into_iter().map(|d| d.body).collect::<Vec<String>>()
        };
        assert_eq!(bodies(q.clone()).await, ["m2", "m3", "m4"]);
        tokio::time::sleep(LEASE + Duration::from_millis(50)).await;
        assert_eq!(bodies(q).await, ["m0", "m1", "m2", "m3", "m4"]);
    }

    #[tokio::test]
    async fn long_poll_returns_as_soon_as_a_message_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(dir.path(), 5).unwrap();
        let q2 = q.clone();
        let t = tokio::time::Instant::now();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            q2.send("late", &[]).await.unwrap();
        });
        let wait = Duration::from_secs(60);
        let got = q.receive(1, wait, LEASE).await.unwrap();
        sender.await.unwrap();
        assert_eq!(got.len(), 1);
        // Far sooner than the wait, with room for a stalled disk.
        assert!(t.elapsed() < wait / 4, "waited {:?}", t.elapsed());
    }
}
