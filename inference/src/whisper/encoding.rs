//! Whether a Whisper encoder pass is running on the CPU, process-wide, so
//! that work sharing the cores with Whisper can stand aside while it does.
//!
//! Why: the encoder is the phase of a transcription that keeps every core
//! busy with large matrix products, each split evenly across the threads.
//! Work beside it on the same cores (diarization in `transcribe
//! --diarize`, the worker's and the endpoint's batches) takes a core from
//! one of those threads, and the whole product then waits for that thread:
//! on 2 cores the encoder passes of a 10-minute call took 2.0 s longer
//! each with diarization running beside them (4.4 s against 2.4 s), for
//! diarization work that could as well run during decoding, which leaves
//! cores idle between its small steps. Such work calls
//! [`wait_while_encoding`] between its own batches.
//!
//! Only CPU passes count: on a GPU the encoder leaves the cores free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Encoder passes running now, and the signal that the count fell to 0.
static RUNNING: Mutex<usize> = Mutex::new(0);
static IDLE: Condvar = Condvar::new();
/// Passes begun since the process started.
static BEGUN: AtomicU64 = AtomicU64::new(0);

/// Held for the length of one CPU encoder pass; dropping it (also while
/// unwinding) ends the pass.
#[must_use = "the pass ends when the guard is dropped"]
pub struct EncoderPass(());

impl EncoderPass {
    /// Marks a CPU encoder pass as running until the guard is dropped.
    pub fn begin() -> Self {
        *lock() += 1;
        BEGUN.fetch_add(1, Ordering::Relaxed);
        EncoderPass(())
    }
}

impl Drop for EncoderPass {
    fn drop(&mut self) {
        let mut n = lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            IDLE.notify_all();
        }
    }
}

/// Whether any CPU encoder pass is running in this process now.
pub fn encoding() -> bool {
    *lock() > 0
}

/// CPU encoder passes begun in this process so far.
pub fn passes_begun() -> u64 {
    BEGUN.load(Ordering::Relaxed)
}

/// Blocks while a CPU encoder pass runs, for at most `limit`; returns how
/// long it waited (zero when none was running). The limit is the caller's
/// guard against starving behind back-to-back passes (a busy server).
pub fn wait_while_encoding(limit: Duration) -> Duration {
    let start = Instant::now();
    let mut n = lock();
    if *n == 0 {
        return Duration::ZERO;
    }
    while *n > 0 {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        n = IDLE
            .wait_timeout(n, left)
            .map(|(n, _)| n)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    start.elapsed()
}

/// The count stays meaningful even if a holder panicked mid-update (it
/// only ever does `+= 1` or `-= 1`), so a poisoned lock is used as is.
fn lock() -> std::sync::MutexGuard<'static, usize> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The count is process-wide, so these assert only what holds whatever
    // other tests in this process do at the same time.

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_pass_is_seen_while_its_guard_lives() {
        let pass = EncoderPass::begin();
        assert!(encoding());
        drop(pass);
    }

    #[test]
    fn waiting_ends_when_the_pass_ends() {
        let pass = EncoderPass::begin();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(()).unwrap();
            wait_while_encoding(HOUR)
        });
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "returned while the pass ran");
        drop(pass);
        // Returns once the pass has ended (or never: nextest's timeout).
        waiter.join().unwrap();
    }

    #[test]
    fn waiting_stops_at_its_limit() {
        let _pass = EncoderPass::begin();
        let waited = wait_while_encoding(Duration::from_millis(100));
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(encoding());
    }

    #[test]
    fn a_panicking_pass_still_ends() {
        let r = std::panic::catch_unwind(|| {
            let _pass = EncoderPass::begin();
            panic!("encoder failed");
        });
        assert!(r.is_err());
        // Any pass still counted now belongs to another test, which ends
        // it; a leaked count would block here forever (nextest's timeout).
        wait_while_encoding(HOUR);
    }
}
