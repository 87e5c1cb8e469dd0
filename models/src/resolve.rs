//! From a model spec string (`"small"`, `"./my-model"`) to files on disk.
//!
//! Resolution order, first match wins:
//! 1. the spec is an existing folder (or a `model.bin` inside one);
//! 2. `<models dir>/whisper-<name>/` (see [`models_dir`]), which is where the
//!    setup script installs models for servers without network access;
//! 3. the Hugging Face hub, through its local cache (honouring
//!    `HF_HUB_OFFLINE`, `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`).
//!
//! Local folders never fall through to the network: if `whisper-small/`
//! exists but is incomplete, that is an error naming the missing file, not a
//! surprise multi-gigabyte download.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::catalog::{self, CatalogEntry};
use crate::hub::{self, EnvLookup, Hub, HubSettings};
use crate::whisper::{self, GenerationConfig, ImportedWhisper};
use crate::{checksum, ct2, ModelError};

/// Environment variable overriding the local models folder.
pub const MODELS_DIR_ENV: &str = "EARSHOT_MODELS_DIR";

/// Environment variable choosing the format fetched from the hub
/// (`safetensors`, the default, or `ct2`).
pub const HUB_FORMAT_ENV: &str = "EARSHOT_HUB_FORMAT";

/// Optional checksum list inside a local model folder: lines of
/// `<sha256>  <file name>` as written by `sha256sum`. When present, every
/// listed file is verified before use.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// The local models folder: `$EARSHOT_MODELS_DIR`, else
/// `$XDG_CACHE_HOME/earshot/models`, else `$HOME/.cache/earshot/models`.
pub fn models_dir() -> PathBuf {
    models_dir_with(&|k| std::env::var_os(k))
}

fn models_dir_with(env: EnvLookup<'_>) -> PathBuf {
    if let Some(p) = hub::non_empty(env, MODELS_DIR_ENV) {
        return p;
    }
    if let Some(xdg) = hub::non_empty(env, "XDG_CACHE_HOME") {
        return xdg.join("earshot").join("models");
    }
    match hub::non_empty(env, "HOME") {
        Some(home) => home.join(".cache").join("earshot").join("models"),
        None => {
            let p = std::env::temp_dir().join("earshot").join("models");
            tracing::warn!(dir = %p.display(), "neither {MODELS_DIR_ENV}, XDG_CACHE_HOME nor HOME is set");
            p
        }
    }
}

/// Which files to fetch from the hub for a catalog model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubFormat {
    /// `model.safetensors` + `config.json` from the `openai/*` repo.
    Safetensors,
    /// faster-whisper's float16 `model.bin` from the CTranslate2 repo.
    CTranslate2,
}

impl HubFormat {
    fn other(self) -> Self {
        match self {
            Self::Safetensors => Self::CTranslate2,
            Self::CTranslate2 => Self::Safetensors,
        }
    }
}

impl std::str::FromStr for HubFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "safetensors" | "hf" => Ok(Self::Safetensors),
            "ct2" | "ctranslate2" | "faster-whisper" => Ok(Self::CTranslate2),
            other => Err(format!(
                "unknown hub format {other:?} (expected safetensors or ct2)"
            )),
        }
    }
}

/// Everything resolution depends on, so that callers (and tests) can pass
/// it explicitly instead of mutating process-wide environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Local models folder searched for `whisper-<name>/`.
    pub models_dir: PathBuf,
    /// Hub access.
    pub hub: HubSettings,
    /// Format to fetch first from the hub; the other is tried if it fails.
    pub hub_format: HubFormat,
}

impl ResolveOptions {
    /// For the crate's tests: the environment's options with `dir` as the
    /// models folder and its `stamps` file for verified hashes.
    #[cfg(test)]
    pub(crate) fn for_test_dir(dir: &std::path::Path) -> Self {
        let mut o = Self::from_env();
        o.models_dir = dir.to_path_buf();
        o.hub.verified_stamps = Some(dir.join("stamps"));
        o
    }

    /// Options from the environment: [`MODELS_DIR_ENV`], [`HUB_FORMAT_ENV`],
    /// `HF_HUB_OFFLINE`, `HF_HOME`/`HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`,
    /// else the file `HF_TOKEN_PATH` names (as `huggingface_hub` reads it),
    /// so a Kubernetes Secret can be mounted as a file instead of an env var.
    pub fn from_env() -> Self {
        Self::from_env_with(&|k| std::env::var_os(k))
    }

    fn from_env_with(env: EnvLookup<'_>) -> Self {
        let models_dir = models_dir_with(env);
        let string = |k: &str| -> Option<String> {
            env(k)
                .and_then(|v: OsString| v.into_string().ok())
                .filter(|v| !v.is_empty())
        };
        let hub_format = match string(HUB_FORMAT_ENV).map(|v| v.parse::<HubFormat>()) {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::warn!("{HUB_FORMAT_ENV}: {e}; using safetensors");
                HubFormat::Safetensors
            }
            None => HubFormat::Safetensors,
        };
        Self {
            hub: HubSettings {
                cache_dir: hub::hf_cache_dir_with(env),
                offline: hub::env_flag(env("HF_HUB_OFFLINE")),
                endpoint: string("HF_ENDPOINT"),
                token: string("HF_TOKEN").or_else(|| token_from_file(env)),
                progress: std::io::stderr().is_terminal(),
                verified_stamps: Some(models_dir.join(".verified")),
            },
            models_dir,
            hub_format,
        }
    }
}

/// The token in the file `HF_TOKEN_PATH` names (trimmed; `None` when unset,
/// empty or unreadable). Only the path is ever logged, never the contents.
fn token_from_file(env: EnvLookup<'_>) -> Option<String> {
    let path = hub::non_empty(env, "HF_TOKEN_PATH")?;
    match std::fs::read_to_string(&path) {
        Ok(t) => Some(t.trim().to_string()).filter(|t| !t.is_empty()),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "HF_TOKEN_PATH: cannot read the token file");
            None
        }
    }
}

/// What kind of Whisper checkpoint a folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhisperFormat {
    /// Hugging Face layout: `config.json` and one or more safetensors files.
    Safetensors {
        /// `config.json`.
        config: PathBuf,
        /// Weight files (several when the checkpoint is sharded).
        weights: Vec<PathBuf>,
    },
    /// faster-whisper layout: `model.bin` and usually `config.json`.
    CTranslate2 {
        /// `model.bin`.
        model_bin: PathBuf,
        /// faster-whisper's `config.json` with suppress ids, when present.
        config: Option<PathBuf>,
    },
}

/// Where a resolved model was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The spec was a path.
    Path,
    /// Found under the local models folder.
    ModelsDir,
    /// The Hugging Face hub (or its local cache).
    Hub {
        /// `owner/name` of the repo holding the weights.
        repo: String,
        /// Revision used.
        revision: String,
    },
}

/// A Whisper model located on disk, ready for [`load_whisper_tensors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWhisper {
    /// Catalog name when known, else the folder name.
    pub name: String,
    /// Folder holding the weights.
    pub dir: PathBuf,
    /// Format and weight files.
    pub format: WhisperFormat,
    /// `tokenizer.json` (not always inside `dir`: some CTranslate2 repos
    /// ship without one and it comes from the matching `openai/*` repo).
    pub tokenizer: PathBuf,
    /// Catalog entry, when the name (or folder name) is a catalog name.
    pub catalog: Option<&'static CatalogEntry>,
    /// Where it was found.
    pub source: ModelSource,
}

/// Resolves a Whisper model spec using options from the environment
/// (see [`ResolveOptions::from_env`]).
pub fn resolve_whisper(spec: &str) -> Result<ResolvedWhisper, ModelError> {
    resolve_whisper_with(spec, &ResolveOptions::from_env())
}

/// Resolves a Whisper model spec: a folder path, a folder under the models
/// dir, or a catalog name fetched through the hub.
pub fn resolve_whisper_with(
    spec: &str,
    opts: &ResolveOptions,
) -> Result<ResolvedWhisper, ModelError> {
    let spec = spec.trim();
    let unknown = || ModelError::UnknownModel {
        name: spec.to_owned(),
        known: catalog::names().into_iter().map(String::from).collect(),
    };
    if spec.is_empty() {
        return Err(unknown());
    }

    // 1. A path.
    let path = expand_home(spec);
    if path.exists() {
        let dir = if path.is_file() {
            // Pointing at a model file is taken to mean its folder; any
            // other file (an audio file passed by mistake) is refused.
            let is_model_file = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                matches!(n, "model.bin" | "config.json" | "tokenizer.json")
                    || n.ends_with(".safetensors")
            });
            if !is_model_file {
                return Err(ModelError::UnrecognizedFolder { dir: path });
            }
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        } else {
            path
        };
        let folder_name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| spec.to_owned());
        let entry = catalog::lookup(&folder_name);
        let r = local_folder(&dir, &folder_name, entry, ModelSource::Path, opts)?;
        tracing::info!(model = %r.name, dir = %r.dir.display(), "using Whisper model from path");
        return Ok(r);
    }

    let entry = catalog::lookup(spec);
    if entry.is_none() && looks_like_path(spec) {
        return Err(ModelError::PathNotFound { path: path.clone() });
    }

    // 2. The local models folder.
    let mut candidates = Vec::new();
    if let Some(e) = entry {
        candidates.push(opts.models_dir.join(e.folder_name()));
    } else {
        candidates.push(opts.models_dir.join(format!("whisper-{spec}")));
        candidates.push(opts.models_dir.join(spec));
    }
    if let Some(dir) = candidates.iter().find(|d| d.is_dir()) {
        let name = entry.map_or(spec, |e| e.name);
        let r = local_folder(dir, name, entry, ModelSource::ModelsDir, opts)?;
        tracing::info!(model = %r.name, dir = %r.dir.display(), "using Whisper model from the models folder");
        return Ok(r);
    }

    // 3. The hub.
    let Some(entry) = entry else {
        return Err(unknown());
    };
    tracing::debug!(
        model = entry.name,
        searched = %candidates[0].display(),
        "not in the models folder; trying the Hugging Face hub"
    );
    let mut hub = Hub::new(opts.hub.clone());
    let first = opts.hub_format;
    match fetch(&mut hub, entry, first) {
        Ok(r) => Ok(r),
        Err(e1) => {
            tracing::warn!(model = entry.name, format = ?first, error = %e1, "hub fetch failed; trying the other format");
            fetch(&mut hub, entry, first.other()).map_err(|e2| {
                tracing::warn!(model = entry.name, format = ?first.other(), error = %e2, "hub fetch failed");
                e1
            })
        }
    }
}

/// `~/…` against `$HOME`; anything else as given.
pub(crate) fn expand_home(spec: &str) -> PathBuf {
    match (spec.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(spec),
    }
}

fn looks_like_path(spec: &str) -> bool {
    spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || spec.starts_with('.')
        || spec.starts_with('~')
}

fn local_folder(
    dir: &Path,
    name: &str,
    entry: Option<&'static CatalogEntry>,
    source: ModelSource,
    opts: &ResolveOptions,
) -> Result<ResolvedWhisper, ModelError> {
    let (format, tokenizer) = classify_folder(dir)?;
    verify_sums(dir, opts.hub.verified_stamps.as_deref())?;
    let name = entry.map_or_else(
        || name.strip_prefix("whisper-").unwrap_or(name).to_owned(),
        |e| e.name.to_owned(),
    );
    Ok(ResolvedWhisper {
        name,
        dir: dir.to_path_buf(),
        format,
        tokenizer,
        catalog: entry,
        source,
    })
}

/// Works out which checkpoint format a folder holds and checks that the
/// files the format needs (and `tokenizer.json`) are present.
pub fn classify_folder(dir: &Path) -> Result<(WhisperFormat, PathBuf), ModelError> {
    let missing = |file: &str| ModelError::MissingFile {
        dir: dir.to_path_buf(),
        file: file.to_owned(),
    };
    let config = dir.join("config.json");
    let model_bin = dir.join("model.bin");
    let format = if model_bin.is_file() {
        WhisperFormat::CTranslate2 {
            model_bin,
            config: config.is_file().then_some(config),
        }
    } else {
        let weights = safetensors_in(dir)?;
        match (config.is_file(), weights.is_empty()) {
            (true, false) => WhisperFormat::Safetensors { config, weights },
            (true, true) => return Err(missing("model.bin or *.safetensors")),
            (false, false) => return Err(missing("config.json")),
            (false, true) => {
                return Err(ModelError::UnrecognizedFolder {
                    dir: dir.to_path_buf(),
                })
            }
        }
    };
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(missing("tokenizer.json"));
    }
    Ok((format, tokenizer))
}

/// Safetensors weights of a folder: `model.safetensors`, else the shards
/// listed by `model.safetensors.index.json`, else every `*.safetensors`.
fn safetensors_in(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let shards = shards_of_index(&index)?;
        for s in &shards {
            if !s.is_file() {
                return Err(ModelError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: s
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
        }
        return Ok(shards);
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(source) => {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut all: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    all.sort();
    Ok(all)
}

/// Shard paths (sorted, deduplicated, beside the index) of a safetensors index.
fn shards_of_index(index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let bytes = std::fs::read(index).map_err(ModelError::io(index))?;
    let parsed: Index = serde_json::from_slice(&bytes).map_err(|source| ModelError::Json {
        path: index.to_path_buf(),
        source,
    })?;
    let mut files: Vec<&String> = parsed.weight_map.values().collect();
    files.sort();
    files.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files
        .into_iter()
        .filter(|f| !f.contains('/') && !f.contains('\\') && !f.starts_with('.'))
        .map(|f| dir.join(f))
        .collect())
}

/// Verifies the files listed in a folder's [`SUMS_FILE`], if it has one.
pub(crate) fn verify_sums(dir: &Path, stamps: Option<&Path>) -> Result<(), ModelError> {
    let sums = dir.join(SUMS_FILE);
    if !sums.is_file() {
        tracing::debug!(dir = %dir.display(), "no {SUMS_FILE}; local files not checksummed");
        return Ok(());
    }
    let text = std::fs::read_to_string(&sums).map_err(ModelError::io(&sums))?;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (digest, file) = match line.split_once(char::is_whitespace) {
            Some((d, f)) => (d, f.trim_start().trim_start_matches('*')),
            None => (line, ""),
        };
        if !checksum::is_sha256_hex(digest) || file.is_empty() || file.contains("..") {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                file: format!("a valid line in {SUMS_FILE} (got {line:?})"),
            });
        }
        hub::verify_with_stamp(&dir.join(file), digest, stamps)?;
    }
    Ok(())
}

/// Fetches the files of `entry` in `format` from the hub (or its cache).
fn fetch(
    hub: &mut Hub,
    entry: &'static CatalogEntry,
    format: HubFormat,
) -> Result<ResolvedWhisper, ModelError> {
    tracing::info!(
        model = entry.name,
        ?format,
        offline = hub.offline(),
        "resolving Whisper model through the Hugging Face cache/hub"
    );
    let (repo, revision) = match format {
        HubFormat::Safetensors => (entry.hf_repo, entry.hf_revision),
        HubFormat::CTranslate2 => (entry.ct2_repo, "main"),
    };
    let resolved_format = match format {
        HubFormat::Safetensors => {
            let config = hub.get(repo, revision, "config.json")?;
            let weights = match hub.get(repo, revision, "model.safetensors") {
                Ok(w) => vec![w],
                Err(single_err) => {
                    // Large checkpoints may be sharded.
                    let Ok(index) = hub.get(repo, revision, "model.safetensors.index.json") else {
                        return Err(single_err);
                    };
                    let mut shards = Vec::new();
                    for shard in shards_of_index(&index)? {
                        let name = shard
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        shards.push(hub.get(repo, revision, &name)?);
                    }
                    shards
                }
            };
            // Optional: newer checkpoints keep suppress tokens only here.
            if let Err(e) = hub.get(repo, revision, "generation_config.json") {
                tracing::debug!(repo, error = %e, "no generation_config.json");
            }
            WhisperFormat::Safetensors { config, weights }
        }
        HubFormat::CTranslate2 => {
            let model_bin = hub.get(repo, revision, "model.bin")?;
            let config = match hub.get(repo, revision, "config.json") {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(repo, error = %e, "no config.json; suppress tokens unknown");
                    None
                }
            };
            WhisperFormat::CTranslate2 { model_bin, config }
        }
    };
    let tokenizer = match hub.get(repo, revision, "tokenizer.json") {
        Ok(t) => t,
        Err(e) if format == HubFormat::CTranslate2 => {
            // faster-whisper falls back to the openai tokenizer the same way.
            tracing::info!(repo, error = %e, "no tokenizer.json; using the one of {}", entry.hf_repo);
            hub.get(entry.hf_repo, entry.hf_revision, "tokenizer.json")?
        }
        Err(e) => return Err(e),
    };
    let main_file = match &resolved_format {
        WhisperFormat::Safetensors { config, .. } => config,
        WhisperFormat::CTranslate2 { model_bin, .. } => model_bin,
    };
    let dir = main_file.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok(ResolvedWhisper {
        name: entry.name.to_owned(),
        dir,
        format: resolved_format,
        tokenizer,
        catalog: Some(entry),
        source: ModelSource::Hub {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
        },
    })
}

/// Loads the weights of a resolved model as candle tensors in `dtype` on
/// `device`, whatever their on-disk format.
pub fn load_whisper_tensors(
    r: &ResolvedWhisper,
    dtype: DType,
    device: &Device,
) -> Result<ImportedWhisper, ModelError> {
    let imported = match &r.format {
        WhisperFormat::CTranslate2 { model_bin, config } => {
            let file = ct2::read_model_bin(model_bin)?;
            let generation = match config {
                Some(c) => GenerationConfig::from_ct2_config(c)?,
                None => GenerationConfig::default(),
            };
            ct2::import_whisper_file(&file, generation, dtype, device)?
        }
        WhisperFormat::Safetensors { config, weights } => {
            whisper::load_safetensors_whisper(config, weights, dtype, device)?
        }
    };
    if let Some(e) = r.catalog {
        if e.n_mels != imported.config.num_mel_bins {
            tracing::warn!(
                model = e.name,
                catalog = e.n_mels,
                weights = imported.config.num_mel_bins,
                "mel bin count differs from the catalog; trusting the weights"
            );
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn models_dir_precedence() {
        let e = env(&[("HOME", "/h")]);
        assert_eq!(
            models_dir_with(&e),
            PathBuf::from("/h/.cache/earshot/models")
        );
        let e = env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(models_dir_with(&e), PathBuf::from("/x/earshot/models"));
        let e = env(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            (MODELS_DIR_ENV, "/m"),
        ]);
        assert_eq!(models_dir_with(&e), PathBuf::from("/m"));
        let e = env(&[("HOME", "/h"), (MODELS_DIR_ENV, "")]);
        assert_eq!(
            models_dir_with(&e),
            PathBuf::from("/h/.cache/earshot/models")
        );
    }

    #[test]
    fn options_from_env() {
        let e = env(&[
            ("HOME", "/h"),
            ("HF_HUB_OFFLINE", "1"),
            (HUB_FORMAT_ENV, "ct2"),
            ("HF_TOKEN", "t"),
        ]);
        let o = ResolveOptions::from_env_with(&e);
        assert!(o.hub.offline);
        assert_eq!(o.hub_format, HubFormat::CTranslate2);
        assert_eq!(o.hub.token.as_deref(), Some("t"));
        assert_eq!(o.hub.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(
            o.hub.verified_stamps,
            Some(PathBuf::from("/h/.cache/earshot/models/.verified"))
        );
        let o = ResolveOptions::from_env_with(&env(&[("HOME", "/h"), (HUB_FORMAT_ENV, "zip")]));
        assert!(!o.hub.offline);
        assert_eq!(o.hub_format, HubFormat::Safetensors);
    }

    #[test]
    fn hf_token_from_a_file_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  hf_fromfile\n").unwrap();
        let path = file.to_str().unwrap();
        let o = ResolveOptions::from_env_with(&env(&[("HOME", "/h"), ("HF_TOKEN_PATH", path)]));
        assert_eq!(o.hub.token.as_deref(), Some("hf_fromfile"));
        let o = ResolveOptions::from_env_with(&env(&[
            ("HOME", "/h"),
            ("HF_TOKEN_PATH", path),
            ("HF_TOKEN", "hf_fromenv"),
        ]));
        assert_eq!(o.hub.token.as_deref(), Some("hf_fromenv"));
        let o = ResolveOptions::from_env_with(&env(&[
            ("HOME", "/h"),
            ("HF_TOKEN_PATH", "/nonexistent/token"),
        ]));
        assert_eq!(o.hub.token, None);
        // Debug output (logged options, panics) never shows the token.
        let o = ResolveOptions::from_env_with(&env(&[("HOME", "/h"), ("HF_TOKEN", "hf_secret")]));
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hf_secret") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn path_like_specs() {
        assert!(looks_like_path("./x"));
        assert!(looks_like_path("/abs/x"));
        assert!(looks_like_path("~/m"));
        assert!(!looks_like_path("tiny.en"));
        assert!(!looks_like_path("large-v3-turbo"));
    }
}
