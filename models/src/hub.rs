//! Fetching files from the Hugging Face hub (or only its local cache).
//!
//! Downloads go through `hf-hub`, which stores them in the standard Hugging
//! Face cache layout (`models--owner--name/{blobs,snapshots,refs}`), so
//! files already downloaded by Python tools are reused and vice versa.
//! In offline mode (`HF_HUB_OFFLINE=1`) no request is made at all: files are
//! looked up in that cache, which is what an air-gapped server needs.
//!
//! Every file handed out is checked against its SHA-256 when the cache
//! names its blob by one (LFS files: all the weights).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};

use crate::checksum;
use crate::ModelError;

/// How to reach the hub. `Debug` shows whether a token is set, never it.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Hugging Face cache folder (the one holding `models--*` folders).
    pub cache_dir: PathBuf,
    /// Never touch the network; only use `cache_dir`.
    pub offline: bool,
    /// Alternative endpoint (mirror); `None` for huggingface.co.
    pub endpoint: Option<String>,
    /// Access token; `None` uses the token file of the cache, if any.
    pub token: Option<String>,
    /// Draw download progress bars on stderr.
    pub progress: bool,
    /// Folder for "this blob was verified" stamps, so multi-gigabyte files
    /// are hashed once rather than on every start. `None` hashes every time.
    pub verified_stamps: Option<PathBuf>,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("progress", &self.progress)
            .field("verified_stamps", &self.verified_stamps)
            .finish()
    }
}

/// Returns the Hugging Face hub cache folder the way `huggingface_hub` does:
/// `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    hf_cache_dir_with(&|k| std::env::var_os(k))
}

pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

pub(crate) fn non_empty(env: EnvLookup<'_>, key: &str) -> Option<PathBuf> {
    env(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

pub(crate) fn hf_cache_dir_with(env: EnvLookup<'_>) -> PathBuf {
    if let Some(p) =
        non_empty(env, "HF_HUB_CACHE").or_else(|| non_empty(env, "HUGGINGFACE_HUB_CACHE"))
    {
        return p;
    }
    if let Some(home) = non_empty(env, "HF_HOME") {
        return home.join("hub");
    }
    if let Some(xdg) = non_empty(env, "XDG_CACHE_HOME") {
        return xdg.join("huggingface").join("hub");
    }
    match non_empty(env, "HOME") {
        Some(home) => home.join(".cache").join("huggingface").join("hub"),
        None => std::env::temp_dir().join("huggingface").join("hub"),
    }
}

/// Truthy values of `HF_HUB_OFFLINE` as `huggingface_hub` reads them.
pub(crate) fn env_flag(value: Option<std::ffi::OsString>) -> bool {
    value
        .and_then(|v| v.into_string().ok())
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// A connection to the hub, or to its cache only when offline.
pub(crate) struct Hub {
    settings: HubSettings,
    api: Option<Api>,
}

impl Hub {
    pub(crate) fn new(settings: HubSettings) -> Self {
        Self {
            settings,
            api: None,
        }
    }

    pub(crate) fn offline(&self) -> bool {
        self.settings.offline
    }

    /// The API client, built on first use (offline runs never build one).
    fn api(&mut self, repo: &str, file: &str) -> Result<&Api, ModelError> {
        let api = match self.api.take() {
            Some(api) => api,
            None => {
                let s = &self.settings;
                let mut b = ApiBuilder::from_cache(Cache::new(s.cache_dir.clone()))
                    .with_progress(s.progress)
                    .with_retries(2);
                if let Some(e) = &s.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if s.token.is_some() {
                    b = b.with_token(s.token.clone());
                }
                b.build().map_err(|e| ModelError::Hub {
                    repo: repo.to_owned(),
                    file: file.to_owned(),
                    source: Box::new(e),
                })?
            }
        };
        Ok(self.api.insert(api))
    }

    /// Returns the local path of `file` in `repo` at `revision`, downloading
    /// it unless offline, and verifies its checksum.
    pub(crate) fn get(
        &mut self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<PathBuf, ModelError> {
        let hf_repo = Repo::with_revision(repo.to_owned(), RepoType::Model, revision.to_owned());
        let path = if self.settings.offline {
            Cache::new(self.settings.cache_dir.clone())
                .repo(hf_repo)
                .get(file)
                .ok_or_else(|| ModelError::NotInCache {
                    repo: format!("{repo}@{revision}"),
                    file: file.to_owned(),
                    cache: self.settings.cache_dir.clone(),
                })?
        } else {
            tracing::debug!(repo, revision, file, "fetching from the hub (or its cache)");
            self.api(repo, file)?
                .repo(hf_repo)
                .get(file)
                .map_err(|e| ModelError::Hub {
                    repo: format!("{repo}@{revision}"),
                    file: file.to_owned(),
                    source: Box::new(e),
                })?
        };
        verify_cache_file(&path, self.settings.verified_stamps.as_deref())?;
        Ok(path)
    }
}

/// Verifies a file of the Hugging Face cache against the SHA-256 its blob is
/// named by.
///
/// Snapshot files are symlinks to `blobs/<etag>`; for LFS files the etag is
/// the SHA-256 of the content. Small non-LFS files have git SHA-1 etags,
/// which cannot be checked against the bytes directly and are skipped.
pub fn verify_cache_file(path: &Path, stamps: Option<&Path>) -> Result<(), ModelError> {
    let blob = std::fs::canonicalize(path).map_err(ModelError::io(path))?;
    let Some(name) = blob.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    if !checksum::is_sha256_hex(name) {
        tracing::debug!(
            path = %path.display(),
            blob = name,
            "not an LFS blob (no sha256 etag); checksum skipped"
        );
        return Ok(());
    }
    verify_with_stamp(&blob, name, stamps)
}

/// Verifies `file` against `sha256`, skipping the hash when a stamp in
/// `stamps` says this exact file (same size and mtime) was verified before.
pub(crate) fn verify_with_stamp(
    file: &Path,
    sha256: &str,
    stamps: Option<&Path>,
) -> Result<(), ModelError> {
    let meta = std::fs::metadata(file).map_err(ModelError::io(file))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stamp_value = format!("{} {}", meta.len(), mtime);
    let sha = sha256.to_ascii_lowercase();
    let stamp = stamps.map(|d| d.join(&sha));
    if let Some(s) = &stamp {
        if std::fs::read_to_string(s).is_ok_and(|v| v == stamp_value) {
            tracing::debug!(file = %file.display(), "checksum verified earlier");
            return Ok(());
        }
    }
    tracing::info!(file = %file.display(), size = meta.len(), "verifying sha256");
    checksum::verify_sha256(file, &sha)?;
    if let Some(s) = stamp {
        // Best effort: a read-only models dir only costs a re-hash next time.
        let written = s
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&s, &stamp_value));
        if let Err(e) = written {
            tracing::debug!(stamp = %s.display(), error = %e, "cannot record verification");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn cache_dir_precedence() {
        let e = env(&[("HOME", "/h")]);
        assert_eq!(
            hf_cache_dir_with(&e),
            PathBuf::from("/h/.cache/huggingface/hub")
        );
        let e = env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(hf_cache_dir_with(&e), PathBuf::from("/x/huggingface/hub"));
        let e = env(&[("HOME", "/h"), ("HF_HOME", "/hf")]);
        assert_eq!(hf_cache_dir_with(&e), PathBuf::from("/hf/hub"));
        let e = env(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]);
        assert_eq!(hf_cache_dir_with(&e), PathBuf::from("/c"));
    }

    #[test]
    fn offline_flag_values() {
        for v in ["1", "true", "YES", "on"] {
            assert!(env_flag(Some(v.into())), "{v}");
        }
        for v in ["0", "", "false", "no"] {
            assert!(!env_flag(Some(v.into())), "{v}");
        }
        assert!(!env_flag(None));
    }

    /// Builds a fake Hugging Face cache entry the way hf-hub lays it out.
    fn fake_cache_file(
        cache: &Path,
        repo: &str,
        file: &str,
        content: &[u8],
        etag: &str,
    ) -> PathBuf {
        let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
        std::fs::create_dir_all(folder.join("blobs")).unwrap();
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::create_dir_all(folder.join("snapshots/abc123")).unwrap();
        std::fs::write(folder.join("refs/main"), "abc123").unwrap();
        let blob = folder.join("blobs").join(etag);
        std::fs::write(&blob, content).unwrap();
        let link = folder.join("snapshots/abc123").join(file);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
        link
    }

    #[test]
    fn offline_lookup_verifies_lfs_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        let good = crate::checksum::sha256_bytes(b"weights");
        fake_cache_file(&cache, "o/r", "model.bin", b"weights", &good);
        fake_cache_file(&cache, "o/r", "config.json", b"{}", &"a".repeat(40));
        let settings = HubSettings {
            cache_dir: cache.clone(),
            offline: true,
            endpoint: None,
            token: None,
            progress: false,
            verified_stamps: Some(tmp.path().join("stamps")),
        };
        let mut hub = Hub::new(settings.clone());
        let p = hub.get("o/r", "main", "model.bin").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"weights");
        assert!(tmp.path().join("stamps").join(&good).is_file());
        // Second lookup uses the stamp.
        hub.get("o/r", "main", "model.bin").unwrap();
        // Non-LFS etag: accepted without hashing.
        hub.get("o/r", "main", "config.json").unwrap();
        // Missing file: typed offline error.
        let err = hub.get("o/r", "main", "tokenizer.json").unwrap_err();
        assert!(matches!(err, ModelError::NotInCache { .. }), "{err:?}");

        // A corrupted blob (content no longer matches its name) is refused.
        let bad = crate::checksum::sha256_bytes(b"other");
        fake_cache_file(&cache, "o/bad", "model.bin", b"tampered", &bad);
        let err = hub.get("o/bad", "main", "model.bin").unwrap_err();
        assert!(
            matches!(err, ModelError::ChecksumMismatch { .. }),
            "{err:?}"
        );
    }
}
