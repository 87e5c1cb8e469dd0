//! Helpers shared by earshot's fuzz targets.
//!
//! Why a crate-wide allocator: libFuzzer's `-malloc_limit_mb` only sees
//! allocations when a sanitizer runtime hooks `malloc`, and `scripts/fuzz`
//! builds without one by default (the sanitizer roughly doubles a cold
//! build, and the code under test is safe Rust). [`CappedAlloc`] makes any
//! single allocation above [`MAX_ALLOC_BYTES`] abort, which libFuzzer reports
//! as a crash and saves the input, so "a 4 KB file asked for 6 GB" is a
//! finding whatever the build.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest single allocation a fuzz input may cause (512 MiB; `scripts/fuzz`
/// passes the same figure as `-malloc_limit_mb`). Inputs are at most a few
/// hundred KB, so anything near this is sized from a hostile header.
pub const MAX_ALLOC_BYTES: usize = 512 << 20;

/// [`System`] with a per-allocation cap.
pub struct CappedAlloc;

#[cold]
fn over_limit(size: usize) -> ! {
    // No allocation here: format the size into a stack buffer.
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"==earshot-fuzz== allocation of ");
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(b" bytes exceeds the fuzzing limit (MAX_ALLOC_BYTES)\n");
    std::process::abort();
}

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC_BYTES {
            over_limit(layout.size());
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC_BYTES {
            over_limit(layout.size());
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC_BYTES {
            over_limit(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// A scratch file private to this process, for APIs that take a path
/// (`model.bin` and GGUF loading memory-map or seek a file, as in
/// production). Rewritten on every call.
pub fn scratch_file(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::var_os("EARSHOT_FUZZ_SCRATCH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let shm = std::path::Path::new("/dev/shm");
            if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            }
        });
    let path = dir.join(format!("earshot-fuzz-{tag}-{}", std::process::id()));
    std::fs::write(&path, bytes).expect("scratch file is writable");
    path
}
