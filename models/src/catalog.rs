//! The Whisper models earshot knows by name.
//!
//! A catalog (rather than accepting any Hugging Face repo id) lets users say
//! `--model small` and get a repo, revision and format combination that is
//! known to load, and lets error messages list what would have worked.

/// One named Whisper model and where to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Canonical name, e.g. `tiny.en`, `large-v3-turbo`.
    pub name: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    /// Hugging Face repo with `model.safetensors`, `config.json`, `tokenizer.json`.
    pub hf_repo: &'static str,
    /// Revision of `hf_repo` to use. Some `openai/*` repos only carry
    /// safetensors in a pull-request ref; these are the revisions candle's
    /// own Whisper example uses.
    pub hf_revision: &'static str,
    /// Hugging Face repo with the faster-whisper (CTranslate2, float16) conversion.
    pub ct2_repo: &'static str,
    /// Mel bins the model expects (128 for large-v3 and its turbo variant).
    pub n_mels: usize,
    /// Whether the model knows languages other than English.
    pub multilingual: bool,
    /// Approximate parameter count in millions, to warn about memory.
    pub params_m: u32,
}

impl CatalogEntry {
    /// Folder name under the local models dir: `whisper-<name>`.
    pub fn folder_name(&self) -> String {
        format!("whisper-{}", self.name)
    }
}

macro_rules! entry {
    ($name:literal, [$($alias:literal),*], $rev:literal, $ct2:literal, $mels:literal, $ml:literal, $p:literal) => {
        CatalogEntry {
            name: $name,
            aliases: &[$($alias),*],
            hf_repo: concat!("openai/whisper-", $name),
            hf_revision: $rev,
            ct2_repo: $ct2,
            n_mels: $mels,
            multilingual: $ml,
            params_m: $p,
        }
    };
}

/// Every catalog model, smallest first.
pub static CATALOG: &[CatalogEntry] = &[
    entry!(
        "tiny.en",
        [],
        "refs/pr/15",
        "Systran/faster-whisper-tiny.en",
        80,
        false,
        39
    ),
    entry!(
        "tiny",
        [],
        "main",
        "Systran/faster-whisper-tiny",
        80,
        true,
        39
    ),
    entry!(
        "base.en",
        [],
        "refs/pr/13",
        "Systran/faster-whisper-base.en",
        80,
        false,
        74
    ),
    entry!(
        "base",
        [],
        "refs/pr/22",
        "Systran/faster-whisper-base",
        80,
        true,
        74
    ),
    entry!(
        "small.en",
        [],
        "refs/pr/10",
        "Systran/faster-whisper-small.en",
        80,
        false,
        244
    ),
    entry!(
        "small",
        [],
        "main",
        "Systran/faster-whisper-small",
        80,
        true,
        244
    ),
    entry!(
        "medium.en",
        [],
        "main",
        "Systran/faster-whisper-medium.en",
        80,
        false,
        769
    ),
    entry!(
        "medium",
        [],
        "main",
        "Systran/faster-whisper-medium",
        80,
        true,
        769
    ),
    entry!(
        "large-v2",
        [],
        "refs/pr/57",
        "Systran/faster-whisper-large-v2",
        80,
        true,
        1550
    ),
    entry!(
        "large-v3",
        ["large"],
        "main",
        "Systran/faster-whisper-large-v3",
        128,
        true,
        1550
    ),
    entry!(
        "large-v3-turbo",
        ["turbo"],
        "main",
        "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
        128,
        true,
        809
    ),
];

/// Finds a catalog entry by name or alias (case-insensitive; a leading
/// `whisper-` is ignored so folder names work too).
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    let name = name.trim();
    let lower = name.to_ascii_lowercase();
    let key = lower.strip_prefix("whisper-").unwrap_or(&lower);
    CATALOG
        .iter()
        .find(|e| e.name == key || e.aliases.contains(&key))
}

/// Canonical names of all catalog entries, smallest model first.
pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|e| e.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_entries_exist() {
        for n in [
            "tiny.en",
            "tiny",
            "base.en",
            "base",
            "small",
            "large-v3-turbo",
        ] {
            let e = lookup(n).unwrap_or_else(|| panic!("{n} missing"));
            assert_eq!(e.folder_name(), format!("whisper-{n}"));
            assert_eq!(e.hf_repo, format!("openai/whisper-{n}"));
        }
        assert_eq!(lookup("turbo").unwrap().name, "large-v3-turbo");
        assert_eq!(lookup("Whisper-Tiny.EN").unwrap().name, "tiny.en");
        assert!(lookup("huge").is_none());
    }

    #[test]
    fn entries_are_consistent() {
        let mut seen = std::collections::HashSet::new();
        for e in CATALOG {
            assert!(seen.insert(e.name), "duplicate {}", e.name);
            for a in e.aliases {
                assert!(seen.insert(a), "duplicate alias {a}");
            }
            assert_eq!(e.multilingual, !e.name.ends_with(".en"), "{}", e.name);
            assert_eq!(
                e.n_mels == 128,
                e.name.starts_with("large-v3"),
                "{}",
                e.name
            );
            assert!(e.ct2_repo.contains('/') && e.hf_repo.contains('/'));
        }
    }
}
