//! Where inputs come from and results go: S3 (`s3://bucket/key`) or the
//! local filesystem (a path, or `file://path`). One [`Store`] serves both,
//! so a local-queue job can still read S3 audio and an SQS job can write to
//! a shared volume.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use tokio::sync::OnceCell;

use crate::error::{QueueError, Result};

pub use crate::location::Location;

/// How to reach S3.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Path-style addressing (`http://host/bucket/key`), needed by most
    /// S3-compatible servers. Defaults to on when a custom endpoint is set
    /// (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`).
    pub force_path_style: Option<bool>,
}

/// Reads and writes objects in S3 or on disk.
pub struct Store {
    settings: S3Settings,
    s3: OnceCell<aws_sdk_s3::Client>,
    /// When set, local paths must resolve (symbolic links followed) inside
    /// one of these canonical folders: a worker's jobs cannot read or
    /// write anywhere else on its disk. None: any path (the CLI).
    local_roots: Option<Vec<PathBuf>>,
}

impl Store {
    pub fn new(settings: S3Settings) -> Self {
        Store {
            settings,
            s3: OnceCell::new(),
            local_roots: None,
        }
    }

    /// Confines local paths to `roots` (created when missing; an empty
    /// list refuses every local path). A path containing `..`, an absolute
    /// path elsewhere, or one whose symbolic links lead out of every root
    /// is refused with [`QueueError::PathEscape`].
    pub fn confined_to(mut self, roots: &[PathBuf]) -> Result<Self> {
        let mut canon = Vec::new();
        for r in roots {
            std::fs::create_dir_all(r)
                .map_err(|e| QueueError::io(format!("creating {}", r.display()), e))?;
            canon.push(
                std::fs::canonicalize(r)
                    .map_err(|e| QueueError::io(format!("resolving {}", r.display()), e))?,
            );
        }
        self.local_roots = Some(canon);
        Ok(self)
    }

    /// The canonical folders local paths are confined to (None: any).
    pub fn local_roots(&self) -> Option<&[PathBuf]> {
        self.local_roots.as_deref()
    }

    /// Checks that a location may be used: S3 always; a local path only
    /// inside the roots, when confined. Returns the path to use (resolved,
    /// so a link swapped in after the check cannot redirect the access to a
    /// folder above it).
    pub fn check_local(&self, loc: &Location) -> Result<Option<PathBuf>> {
        let Location::Local(p) = loc else {
            return Ok(None);
        };
        let Some(roots) = &self.local_roots else {
            return Ok(Some(p.clone()));
        };
        confine(p, roots).map(Some)
    }

    /// A store on an already-built S3 client (tests, custom configuration).
    pub fn with_s3_client(client: aws_sdk_s3::Client) -> Self {
        let cell = OnceCell::new();
        let _ = cell.set(client);
        Store {
            settings: S3Settings::default(),
            s3: cell,
            local_roots: None,
        }
    }

    /// The S3 client, built on first use from the standard AWS
    /// environment (so local-only workers never touch AWS config).
    async fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3
            .get_or_init(|| async {
                let shared = crate::aws_config().await;
                let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL").is_some()
                    || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
                let path_style = self.settings.force_path_style.unwrap_or(custom_endpoint);
                let conf = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(path_style)
                    .timeout_config(crate::service_timeouts())
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
            })
            .await
    }

    /// Reads a whole object, refusing objects over `max_bytes`.
    pub async fn get(&self, loc: &Location, max_bytes: u64) -> Result<Vec<u8>> {
        match loc {
            Location::Local(_) => {
                let p = self.check_local(loc)?.unwrap_or_default();
                read_local(&p, max_bytes).await
            }
            Location::S3 { bucket, key } => {
                let out = self
                    .s3()
                    .await
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| {
                        let not_found = e
                            .as_service_error()
                            .map(|s| s.is_no_such_key())
                            .unwrap_or(false)
                            || e.raw_response().map(|r| r.status().as_u16()) == Some(404);
                        if not_found {
                            QueueError::NotFound(loc.to_string())
                        } else {
                            QueueError::service(
                                "s3",
                                "GetObject",
                                aws_sdk_s3::error::DisplayErrorContext(e),
                            )
                        }
                    })?;
                let len = out.content_length().unwrap_or(0).max(0) as u64;
                if len > max_bytes {
                    return Err(too_large(loc, len, max_bytes));
                }
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| QueueError::service("s3", "GetObject body", e))?
                    .into_bytes();
                if bytes.len() as u64 > max_bytes {
                    return Err(too_large(loc, bytes.len() as u64, max_bytes));
                }
                Ok(bytes.to_vec())
            }
        }
    }

    /// Writes an object whole (overwriting: results are keyed by job id).
    pub async fn put(&self, loc: &Location, bytes: Vec<u8>, content_type: &str) -> Result<()> {
        match loc {
            Location::Local(_) => {
                let p = self.check_local(loc)?.unwrap_or_default();
                write_local_atomic(&p, &bytes).await
            }
            Location::S3 { bucket, key } => {
                self.s3()
                    .await
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type(content_type)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| {
                        QueueError::service(
                            "s3",
                            "PutObject",
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })?;
                Ok(())
            }
        }
    }

    /// Reads an object if it exists.
    pub async fn get_opt(&self, loc: &Location, max_bytes: u64) -> Result<Option<Vec<u8>>> {
        match self.get(loc, max_bytes).await {
            Ok(b) => Ok(Some(b)),
            Err(QueueError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of the objects directly under a prefix (one level).
    pub async fn list(&self, prefix: &Location) -> Result<Vec<String>> {
        match prefix {
            Location::Local(_) => {
                let dir = &self.check_local(prefix)?.unwrap_or_default();
                let mut names = Vec::new();
                let mut rd = match tokio::fs::read_dir(dir).await {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(e) => return Err(QueueError::io(format!("listing {}", dir.display()), e)),
                };
                while let Some(entry) = rd
                    .next_entry()
                    .await
                    .map_err(|e| QueueError::io(format!("listing {}", dir.display()), e))?
                {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if !name.starts_with('.') {
                        names.push(name);
                    }
                }
                names.sort();
                Ok(names)
            }
            Location::S3 { bucket, key } => {
                let prefix_key = if key.is_empty() || key.ends_with('/') {
                    key.clone()
                } else {
                    format!("{key}/")
                };
                let mut names = Vec::new();
                let mut pages = self
                    .s3()
                    .await
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&prefix_key)
                    .delimiter("/")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| {
                        QueueError::service(
                            "s3",
                            "ListObjectsV2",
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })?;
                    for obj in page.contents() {
                        if let Some(k) = obj.key() {
                            names.push(k[prefix_key.len()..].to_string());
                        }
                    }
                }
                names.sort();
                Ok(names)
            }
        }
    }
}

/// `p` resolved (symbolic links followed, relative to the current folder)
/// and checked to lie inside one of `roots` (canonical). For a path that
/// does not exist yet (a result to write), its deepest existing ancestor
/// is resolved and the rest appended, so a link anywhere on the way counts.
fn confine(p: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    use std::path::Component;
    let refuse = |why: &str| {
        QueueError::PathEscape(format!(
            "{} {why}: local paths must stay inside {}",
            p.display(),
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    if roots.is_empty() {
        return Err(refuse(
            "is a local path, and this worker reads and writes none",
        ));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refuse("contains \"..\""));
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| QueueError::io("resolving the current folder", e))?
            .join(p)
    };
    // Walk up to the deepest part that exists and resolve it.
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    let resolved = loop {
        match std::fs::canonicalize(existing) {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symbolic link is not a missing file: refuse it.
                if std::fs::symlink_metadata(existing).is_ok() {
                    return Err(refuse("is a symbolic link to nowhere"));
                }
                match (existing.file_name(), existing.parent()) {
                    (Some(name), Some(parent)) => {
                        rest.push(name.to_os_string());
                        existing = parent;
                    }
                    _ => return Err(refuse("does not resolve")),
                }
            }
            Err(e) => return Err(QueueError::io(format!("resolving {}", p.display()), e)),
        }
    };
    let full = rest.iter().rev().fold(resolved, |acc, part| acc.join(part));
    if roots.iter().any(|r| full.starts_with(r)) {
        Ok(full)
    } else {
        Err(refuse("leads outside the queue's folders"))
    }
}

fn too_large(loc: &Location, len: u64, max: u64) -> QueueError {
    QueueError::TooLarge(format!("{loc} is {len} bytes; the limit is {max}"))
}

async fn read_local(p: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let meta = match tokio::fs::metadata(p).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(QueueError::NotFound(p.display().to_string()))
        }
        Err(e) => return Err(QueueError::io(format!("reading {}", p.display()), e)),
    };
    if meta.is_dir() {
        return Err(QueueError::BadMessage(format!(
            "{} is a directory",
            p.display()
        )));
    }
    if meta.len() > max_bytes {
        return Err(too_large(
            &Location::Local(p.to_path_buf()),
            meta.len(),
            max_bytes,
        ));
    }
    tokio::fs::read(p)
        .await
        .map_err(|e| QueueError::io(format!("reading {}", p.display()), e))
}

/// Write to a temporary sibling, fsync, rename: a crash leaves either the
/// old record or the new one, never half of one.
pub(crate) async fn write_local_atomic(p: &Path, bytes: &[u8]) -> Result<()> {
    let p = p.to_path_buf();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || write_atomic_sync(&p, &bytes))
        .await
        .map_err(|e| QueueError::io("write task", std::io::Error::other(e)))?
}

pub(crate) fn write_atomic_sync(p: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let ctx = |what: &str| format!("{what} {}", p.display());
    let dir = p.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| QueueError::io(ctx("creating folder for"), e))?;
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| QueueError::io(ctx("writing"), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| QueueError::io(ctx("writing"), e))?;
    std::fs::rename(&tmp, p).map_err(|e| QueueError::io(ctx("renaming into"), e))?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins_locations() {
        let l = Location::parse("s3://b/results/").unwrap();
        assert_eq!(l.join("j.json").to_string(), "s3://b/results/j.json");
        let l = Location::parse("s3://b/results").unwrap();
        assert_eq!(l.join("j.json").to_string(), "s3://b/results/j.json");
        assert_eq!(
            Location::parse("s3://b").unwrap().join("x").to_string(),
            "s3://b/x"
        );
        assert_eq!(
            Location::parse("file:///tmp/r").unwrap(),
            Location::Local("/tmp/r".into())
        );
        assert_eq!(
            Location::parse("s3://b/a/x.WAV")
                .unwrap()
                .extension()
                .as_deref(),
            Some("wav")
        );
        assert!(Location::parse("gs://b/k").is_err());
        assert!(Location::parse("s3:///k").is_err());
    }

    #[tokio::test]
    async fn local_store_reads_writes_lists_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(S3Settings::default());
        let loc = Location::Local(dir.path().join("r/a.json"));
        store
            .put(&loc, b"{}".to_vec(), "application/json")
            .await
            .unwrap();
        store
            .put(&loc, b"{\"x\":1}".to_vec(), "application/json")
            .await
            .unwrap();
        assert_eq!(store.get(&loc, 100).await.unwrap(), b"{\"x\":1}");
        assert!(matches!(
            store.get(&loc, 3).await,
            Err(QueueError::TooLarge(_))
        ));
        let missing = Location::Local(dir.path().join("nope"));
        assert!(matches!(
            store.get(&missing, 9).await,
            Err(QueueError::NotFound(_))
        ));
        assert_eq!(store.get_opt(&missing, 9).await.unwrap(), None);
        let names = store
            .list(&Location::Local(dir.path().join("r")))
            .await
            .unwrap();
        assert_eq!(names, ["a.json"], "temporary files must not be left behind");
    }

    #[tokio::test]
    async fn a_confined_store_cannot_be_led_out_of_its_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("queue");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("inputs/j1")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.wav"), b"secret").unwrap();
        std::fs::write(root.join("inputs/j1/a.wav"), b"audio").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.wav"), root.join("inputs/j1/link.wav"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, root.join("inputs/jdir")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling.json")).unwrap();
        let store = Store::new(S3Settings::default())
            .confined_to(std::slice::from_ref(&root))
            .unwrap();
        let local = |p: PathBuf| Location::Local(p);

        // Inside: reads and writes work, also through a file:// location.
        assert_eq!(
            store
                .get(&local(root.join("inputs/j1/a.wav")), 100)
                .await
                .unwrap(),
            b"audio"
        );
        let file_url =
            Location::parse(&format!("file://{}/results/j1.json", root.display())).unwrap();
        store
            .put(&file_url, b"{}".to_vec(), "application/json")
            .await
            .unwrap();
        assert!(root.join("results/j1.json").is_file());
        // A missing input inside is "not found", not an escape.
        assert!(matches!(
            store
                .get(&local(root.join("inputs/j1/none.wav")), 100)
                .await,
            Err(QueueError::NotFound(_))
        ));

        let escapes = [
            root.join("inputs/../../outside/secret.wav"), // ..
            outside.join("secret.wav"),                   // absolute, elsewhere
            PathBuf::from("/etc/passwd"),
            root.join("inputs/j1/link.wav"), // a file link that leads out
            root.join("inputs/jdir/secret.wav"), // a folder link that leads out
        ];
        for p in &escapes {
            let e = store.get(&local(p.clone()), 1 << 20).await.unwrap_err();
            assert!(
                matches!(e, QueueError::PathEscape(_)),
                "{}: {e:?}",
                p.display()
            );
            assert!(e.is_permanent());
            assert_eq!(e.kind(), "bad_message");
        }
        // Writes: through a folder link, over a link, through a dangling
        // link, with "..": refused, and nothing is written outside.
        for p in [
            root.join("inputs/jdir/new.json"),
            root.join("inputs/j1/link.wav"),
            root.join("dangling.json"),
            root.join("results/../../outside/x.json"),
        ] {
            let e = store
                .put(&local(p.clone()), b"x".to_vec(), "application/json")
                .await
                .unwrap_err();
            assert!(
                matches!(e, QueueError::PathEscape(_)),
                "{}: {e:?}",
                p.display()
            );
        }
        assert_eq!(
            std::fs::read(outside.join("secret.wav")).unwrap(),
            b"secret"
        );
        let mut left: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["secret.wav"]);
        assert!(matches!(
            store.list(&local(outside.clone())).await,
            Err(QueueError::PathEscape(_))
        ));
        // S3 locations are not local paths: untouched by the confinement.
        assert_eq!(
            store
                .check_local(&Location::parse("s3://b/k").unwrap())
                .unwrap(),
            None
        );
        // No roots at all: every local path is refused.
        let none = Store::new(S3Settings::default()).confined_to(&[]).unwrap();
        assert!(matches!(
            none.check_local(&local(root.join("inputs/j1/a.wav"))),
            Err(QueueError::PathEscape(_))
        ));
    }
}
