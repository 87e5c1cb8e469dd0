//! The one error type of this crate.
//!
//! Every way a model can fail to load has its own variant, so that the
//! binary can print an actionable message ("run the setup script", "the
//! download is corrupt, delete it") instead of a generic "failed to load".
//! Variants carry the path or name involved because "file not found" without
//! a path is useless to whoever reads the log.

use std::path::PathBuf;

/// Everything that can go wrong while finding, fetching, verifying or
/// importing model weights.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// An I/O operation on a specific file or folder failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A CTranslate2 `model.bin` ends before a field it announces.
    ///
    /// This is also what an absurd length (a variable claiming 4 GB in a
    /// 10 MB file) turns into: lengths are checked against the file size
    /// before anything is sliced, so nothing is ever allocated for them.
    #[error(
        "{path} is truncated or corrupt: {what} at byte {offset} needs {needed} bytes \
         but the file has only {available} left"
    )]
    Truncated {
        /// The `model.bin` being read.
        path: PathBuf,
        /// What was being read (e.g. "data of variable encoder/conv1/weight").
        what: String,
        /// Byte offset where the field starts.
        offset: u64,
        /// How many bytes the field needs.
        needed: u64,
        /// How many bytes remain in the file from `offset`.
        available: u64,
    },

    /// The `model.bin` binary version is one this reader does not know.
    #[error(
        "{path}: unsupported CTranslate2 binary version {version} (supported: 1..={max}); \
         this is not a CTranslate2 model or it was written by a newer CTranslate2"
    )]
    UnsupportedVersion {
        /// The `model.bin` being read.
        path: PathBuf,
        /// The version found in the header.
        version: u32,
        /// The newest version this reader understands.
        max: u32,
    },

    /// A variable has a dtype code outside the known set.
    #[error("{path}: variable {name:?} has unknown dtype code {code}")]
    UnknownDType {
        /// The `model.bin` being read.
        path: PathBuf,
        /// The variable name.
        name: String,
        /// The raw dtype code.
        code: u8,
    },

    /// The file is structurally wrong in a way other than truncation
    /// (byte count disagreeing with the shape, invalid UTF-8 in a name, ...).
    #[error("{path}: invalid CTranslate2 model at byte {offset}: {reason}")]
    InvalidCt2 {
        /// The `model.bin` being read.
        path: PathBuf,
        /// Byte offset of the offending field.
        offset: u64,
        /// Human-readable description.
        reason: String,
    },

    /// The `model.bin` holds a model of another architecture.
    #[error("{path}: expected a {expected} CTranslate2 model, found spec {found:?}")]
    WrongSpec {
        /// The `model.bin` being read.
        path: PathBuf,
        /// The spec this importer handles.
        expected: &'static str,
        /// The spec name in the file.
        found: String,
    },

    /// A tensor the model needs is absent.
    #[error("{source_file}: missing tensor {name:?}")]
    MissingTensor {
        /// The weights file (or folder) that lacks it.
        source_file: PathBuf,
        /// The tensor name.
        name: String,
    },

    /// A tensor has a shape incompatible with the rest of the model.
    #[error("{source_file}: tensor {name:?} has shape {actual:?}, expected {expected}")]
    ShapeMismatch {
        /// The weights file (or folder) holding it.
        source_file: PathBuf,
        /// The tensor name.
        name: String,
        /// What the rest of the model implies (free text, e.g. "[1152, 384]" or "rank 2").
        expected: String,
        /// The shape found.
        actual: Vec<usize>,
    },

    /// A quantized variable cannot be turned back into floats.
    #[error("{path}: cannot dequantize {name:?}: {reason}")]
    Quantization {
        /// The `model.bin` being read.
        path: PathBuf,
        /// The variable name.
        name: String,
        /// Why.
        reason: String,
    },

    /// The model spec is neither a path nor a catalog name.
    #[error(
        "unknown model {name:?}: not an existing folder and not a catalog name \
         (known: {})", known.join(", ")
    )]
    UnknownModel {
        /// The spec as given.
        name: String,
        /// Catalog names, to show the user what would have worked.
        known: Vec<String>,
    },

    /// The spec looks like a path but nothing is there.
    #[error("model path {path} does not exist")]
    PathNotFound {
        /// The path as given.
        path: PathBuf,
    },

    /// A model folder lacks a file it needs.
    #[error("model folder {dir} has no {file}")]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The missing file name (or a description such as "*.safetensors").
        file: String,
    },

    /// A folder holds neither `model.bin` nor `config.json` + `*.safetensors`.
    #[error(
        "{dir} is not a Whisper model folder: expected model.bin (CTranslate2) \
         or config.json + *.safetensors (Hugging Face)"
    )]
    UnrecognizedFolder {
        /// The folder.
        dir: PathBuf,
    },

    /// A JSON file could not be parsed.
    #[error("cannot parse {path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A file's SHA-256 is not the one it should have.
    #[error(
        "checksum mismatch for {path}: expected sha256 {expected}, got {actual}; \
         the file is corrupt or was modified, delete it and fetch it again"
    )]
    ChecksumMismatch {
        /// The file that was hashed.
        path: PathBuf,
        /// The expected digest (lowercase hex).
        expected: String,
        /// The digest found (lowercase hex).
        actual: String,
    },

    /// The Hugging Face hub could not deliver a file.
    #[error("cannot fetch {file} from Hugging Face repo {repo}: {source}")]
    Hub {
        /// `owner/name` of the repo.
        repo: String,
        /// The file in the repo.
        file: String,
        /// hf-hub's error.
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },

    /// Offline mode is on and the file is not in the local Hugging Face cache.
    #[error(
        "offline (HF_HUB_OFFLINE is set) and {file} of {repo} is not in the Hugging Face \
         cache {cache}; unset HF_HUB_OFFLINE or install the model locally"
    )]
    NotInCache {
        /// `owner/name` of the repo.
        repo: String,
        /// The file in the repo.
        file: String,
        /// The cache folder searched.
        cache: PathBuf,
    },

    /// A tensor operation failed (conversion, device copy, ...).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// Shorthand for [`ModelError::Io`], used with `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
        let path = path.into();
        move |source| ModelError::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    /// Errors cross threads (worker pools, `Arc` in the inference crate's
    /// error type), so they must stay `Send + Sync`.
    #[test]
    fn model_error_is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::ModelError>();
    }
}
