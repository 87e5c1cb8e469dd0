//! A job's object locations: `s3://bucket/key`, or a local path
//! (`file://path` or plain). Parsing only: reading and writing them is
//! [`crate::store`]'s job. Kept apart from it so that the job contract
//! compiles without the AWS SDK (`default-features = false`).

use std::path::PathBuf;

use crate::error::{QueueError, Result};

/// A parsed object location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, key: String },
    Local(PathBuf),
}

impl Location {
    pub fn parse(s: &str) -> Result<Location> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(QueueError::BadMessage(format!(
                    "location {s:?} has no bucket (expected s3://bucket/key)"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.is_empty() {
            return Err(QueueError::BadMessage("empty location".into()));
        }
        if s.contains("://") && !s.starts_with("file://") {
            return Err(QueueError::BadMessage(format!(
                "location {s:?}: only s3:// and local paths are supported"
            )));
        }
        Ok(Location::Local(PathBuf::from(path)))
    }

    /// `self` as a prefix (folder) joined with `name`.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::S3 { bucket, key } => {
                let key = if key.is_empty() || key.ends_with('/') {
                    format!("{key}{name}")
                } else {
                    format!("{key}/{name}")
                };
                Location::S3 {
                    bucket: bucket.clone(),
                    key,
                }
            }
            Location::Local(p) => Location::Local(p.join(name)),
        }
    }

    /// The file extension, used as a hint for audio decoding.
    pub fn extension(&self) -> Option<String> {
        let name = match self {
            Location::S3 { key, .. } => key.rsplit('/').next().unwrap_or(key).to_string(),
            Location::Local(p) => p.file_name()?.to_string_lossy().to_string(),
        };
        let (_, ext) = name.rsplit_once('.')?;
        Some(ext.to_ascii_lowercase())
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}
