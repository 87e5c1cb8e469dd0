//! Where the Silero VAD model file comes from: faster-whisper's
//! `silero_vad_v6.onnx`, installed by `scripts/fetch-models --only
//! silero-vad-v6` (from the pinned faster-whisper wheel) into
//! `<models dir>/silero-vad-v6/`, or a path given explicitly.
//!
//! The file is never fetched from the network at run time: it is 1.2 MB
//! and part of the setup, like the Whisper weights for offline servers.

use std::path::PathBuf;

use crate::error::ModelError;
use crate::resolve::{expand_home, verify_sums, ResolveOptions};

/// Folder under the models dir.
pub const SILERO_VAD_FOLDER: &str = "silero-vad-v6";
/// File name inside it (as in the faster-whisper wheel).
pub const SILERO_VAD_FILE: &str = "silero_vad_v6.onnx";
/// sha256 of the file in faster-whisper 1.2.1 (1,245,151 bytes), the one
/// `scripts/fetch-models` pins.
pub const SILERO_VAD_SHA256: &str =
    "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2";

/// The Silero VAD file named by `EARSHOT_VAD_MODEL` (a file or folder),
/// else from the models dir of the environment (see
/// [`ResolveOptions::from_env`]).
pub fn resolve_silero_vad() -> Result<PathBuf, ModelError> {
    let spec = std::env::var("EARSHOT_VAD_MODEL").ok();
    resolve_silero_vad_with(spec.as_deref(), &ResolveOptions::from_env())
}

/// The Silero VAD file: `spec` when given (an `.onnx` file, or a folder
/// holding `silero_vad_v6.onnx`), else `<models dir>/silero-vad-v6/`.
///
/// The models-dir copy is checked against the pinned sha256 (and the
/// folder's `SHA256SUMS`); a file given by path is taken as is — the VAD
/// loader still refuses a graph that is not Silero VAD v6.
pub fn resolve_silero_vad_with(
    spec: Option<&str>,
    opts: &ResolveOptions,
) -> Result<PathBuf, ModelError> {
    if let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) {
        let path = expand_home(spec);
        if path.is_file() {
            return Ok(path);
        }
        if path.is_dir() {
            let file = path.join(SILERO_VAD_FILE);
            if !file.is_file() {
                return Err(ModelError::MissingFile {
                    dir: path,
                    file: SILERO_VAD_FILE.into(),
                });
            }
            verify_sums(&path, opts.hub.verified_stamps.as_deref())?;
            return Ok(file);
        }
        return Err(ModelError::PathNotFound { path });
    }
    let dir = opts.models_dir.join(SILERO_VAD_FOLDER);
    let file = dir.join(SILERO_VAD_FILE);
    if !file.is_file() {
        return Err(ModelError::MissingFile {
            dir,
            file: format!(
                "{SILERO_VAD_FILE} (install it with `scripts/fetch-models --only silero-vad-v6`)"
            ),
        });
    }
    verify_sums(&dir, opts.hub.verified_stamps.as_deref())?;
    crate::hub::verify_with_stamp(
        &file,
        SILERO_VAD_SHA256,
        opts.hub.verified_stamps.as_deref(),
    )?;
    tracing::debug!(file = %file.display(), "using Silero VAD from the models folder");
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn opts(dir: &Path) -> ResolveOptions {
        ResolveOptions::for_test_dir(dir)
    }

    #[test]
    fn finds_paths_and_the_models_dir_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        // Not installed: the error says how to install it.
        let e = resolve_silero_vad_with(None, &o).unwrap_err();
        assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
        assert!(
            e.to_string().contains("fetch-models --only silero-vad-v6"),
            "{e}"
        );

        // Installed but not the pinned file: refused.
        let dir = tmp.path().join(SILERO_VAD_FOLDER);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SILERO_VAD_FILE), b"not the model").unwrap();
        let e = resolve_silero_vad_with(None, &o).unwrap_err();
        assert!(matches!(e, ModelError::ChecksumMismatch { .. }), "{e}");

        // An explicit file or folder is taken as is.
        let f = dir.join(SILERO_VAD_FILE);
        assert_eq!(
            resolve_silero_vad_with(Some(f.to_str().unwrap()), &o).unwrap(),
            f
        );
        assert_eq!(
            resolve_silero_vad_with(Some(dir.to_str().unwrap()), &o).unwrap(),
            f
        );
        assert!(matches!(
            resolve_silero_vad_with(Some("/no/such/vad.onnx"), &o),
            Err(ModelError::PathNotFound { .. })
        ));
    }
}
