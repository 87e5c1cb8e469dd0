//! How Whisper shares the CPU with work running beside it in the same
//! process (diarization in `transcribe --diarize`, the worker's and the
//! endpoint's batches), so that the two together take as little wall time
//! as they can.
//!
//! Why: Whisper's phases use the cores unevenly.
//! - The encoder (and the word-timing pass) keep every core busy with
//!   large matrix products, each split evenly across the threads. Work
//!   beside it on the same cores takes a core from one of those threads,
//!   and the whole product then waits for that thread: on 2 cores the
//!   encoder passes of a 10-minute call took 2.0 s longer each with
//!   diarization beside them (4.4 s against 2.4 s). Such work calls
//!   [`wait_while_encoding`] between its own batches, and runs its threads
//!   at idle priority ([`lower_priority`]) so that a batch already under
//!   way gives way too.
//! - Decoding is many small steps that gain little from a second thread
//!   (10 minutes on 2 cores: 11.8 s on both, 13.8 s on one), yet with
//!   every thread busy it would leave nothing to idle-priority work. So
//!   while work runs beside Whisper ([`Beside`]), decoding uses the larger
//!   half of the threads ([`decode_threads`]) and the rest go to that
//!   work. With all three, `transcribe --diarize` on that call went from
//!   +33–36% to +23–26% over plain transcription (two runs; README,
//!   Measured).
//!
//! Only CPU work counts: on a GPU Whisper leaves the cores free.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Work registered as running beside Whisper now ([`Beside`]). Nothing
/// waits on it, so a plain atomic count (no lock, no poisoning).
static BESIDE: AtomicUsize = AtomicUsize::new(0);
/// Decode rounds run on fewer threads since the process started.
static NARROWED: AtomicU64 = AtomicU64::new(0);

/// Held by work that runs beside Whisper on the same cores, for as long as
/// it runs: Whisper's decoding then leaves it part of the threads
/// ([`decode_threads`]). Dropping it (also while unwinding) ends it.
#[must_use = "the work ends when the guard is dropped"]
pub struct Beside(());

impl Beside {
    /// Registers work beside Whisper until the guard is dropped.
    pub fn begin() -> Self {
        BESIDE.fetch_add(1, Ordering::Relaxed);
        Beside(())
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        // Each guard added one, so this never goes below zero.
        BESIDE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether any work is registered beside Whisper now.
pub fn beside() -> bool {
    BESIDE.load(Ordering::Relaxed) > 0
}

/// How many of `threads` Whisper's decoding uses: all of them, or, with
/// work `beside` it, the larger half (one of two, 8 of 16).
pub fn decode_threads(threads: usize, beside: bool) -> usize {
    if beside {
        threads - threads / 2
    } else {
        threads
    }
}

/// Counts a decode round run on fewer threads ([`narrowed_rounds`]).
pub(crate) fn note_narrowed() {
    NARROWED.fetch_add(1, Ordering::Relaxed);
}

/// Decode rounds run on fewer threads in this process so far.
pub fn narrowed_rounds() -> u64 {
    NARROWED.load(Ordering::Relaxed)
}

/// Lowers the calling thread to idle priority (Linux `SCHED_IDLE`): it
/// then runs only on cores nothing else wants, so Whisper's threads take
/// a core back from it at once instead of sharing it. For threads that
/// only ever do work beside Whisper (diarization's pool). Elsewhere a
/// no-op.
pub fn lower_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration;
        // pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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
    fn work_beside_is_seen_while_its_guard_lives() {
        let b = Beside::begin();
        assert!(beside());
        let r = std::panic::catch_unwind(|| {
            let _inner = Beside::begin();
            panic!("diarization failed");
        });
        assert!(r.is_err());
        assert!(beside());
        drop(b);
    }

    #[test]
    fn decoding_leaves_work_beside_it_the_smaller_half() {
        for n in 1..=64 {
            assert_eq!(decode_threads(n, false), n);
            let k = decode_threads(n, true);
            assert!(k >= 1 && k <= n, "{n}: {k}");
            // Together they use every thread, and decoding never gets less.
            assert_eq!(k + n / 2, n);
            assert!(k >= n - k);
        }
        assert_eq!(decode_threads(2, true), 1);
        assert_eq!(decode_threads(16, true), 8);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lowered_thread_runs_at_idle_priority_and_others_do_not() {
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let before = policy();
        let lowered = std::thread::spawn(move || {
            lower_priority().unwrap();
            policy()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, libc::SCHED_IDLE);
        // Only that thread: this one keeps its policy.
        assert_eq!(policy(), before);
        assert_ne!(before, libc::SCHED_IDLE);
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
