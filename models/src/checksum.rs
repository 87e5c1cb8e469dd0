//! SHA-256 helpers.
//!
//! Weights are large files fetched over the network and kept for months in a
//! cache; a truncated or bit-rotted file produces garbage transcripts rather
//! than a crash, so we check digests wherever a trustworthy reference digest
//! exists (the Hugging Face cache names LFS blobs by their SHA-256).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::ModelError;

/// Returns the lowercase hex SHA-256 of a file's contents.
///
/// Reads in 1 MiB chunks so that multi-gigabyte weights do not need to fit
/// in memory.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = File::open(path).map_err(ModelError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ModelError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Returns the lowercase hex SHA-256 of a byte slice.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that a file's SHA-256 equals `expected` (hex, any case).
///
/// Returns [`ModelError::ChecksumMismatch`] naming both digests otherwise.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), ModelError> {
    let actual = sha256_file(path)?;
    let expected = expected.trim().to_ascii_lowercase();
    if actual == expected {
        tracing::debug!(path = %path.display(), sha256 = %actual, "checksum ok");
        Ok(())
    } else {
        Err(ModelError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected,
            actual,
        })
    }
}

/// Whether `s` looks like a SHA-256 digest (64 hex digits).
///
/// The Hugging Face cache names blobs by their etag: LFS files get their
/// SHA-256, small git files a 40-digit git SHA-1. Only the former can be
/// checked against the file contents directly.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), want);
        verify_sha256(&p, &want.to_ascii_uppercase()).unwrap();
        let err = verify_sha256(&p, &"0".repeat(64)).unwrap_err();
        match err {
            ModelError::ChecksumMismatch { actual, .. } => assert_eq!(actual, want),
            other => panic!("unexpected {other:?}"),
        }
        assert!(is_sha256_hex(want));
        assert!(!is_sha256_hex("a9993e364706816aba3e25717850c26c9cd0d89d"));
    }

    #[test]
    fn missing_file_is_io_error() {
        let err = sha256_file(Path::new("/nonexistent/earshot/x")).unwrap_err();
        assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    }
}
