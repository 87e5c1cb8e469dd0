//! Whisper's tokenizer: the BPE from `tokenizer.json` plus the special tokens
//! the decoding rules need, looked up by name so `.en` and multilingual
//! vocabularies (whose ids differ by one) both work.

use std::path::Path;

use crate::error::InferenceError;

#[derive(Debug, Clone)]
pub struct WhisperTokenizer {
    inner: tokenizers::Tokenizer,
    pub eot: u32,
    pub sot: u32,
    pub translate: u32,
    pub transcribe: u32,
    pub sot_lm: u32,
    pub sot_prev: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// `<|0.00|>`; every id from here up is a timestamp in 20 ms steps.
    pub timestamp_begin: u32,
    /// Language tokens in id order, with their codes (`en`, `zh`, …).
    pub languages: Vec<(String, u32)>,
    pub multilingual: bool,
}

impl WhisperTokenizer {
    pub fn from_file(path: &Path, vocab_size: usize) -> Result<Self, InferenceError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            InferenceError::Tokenizer(format!("cannot load {}: {e}", path.display()))
        })?;
        Self::new(inner, vocab_size)
    }

    pub fn new(inner: tokenizers::Tokenizer, vocab_size: usize) -> Result<Self, InferenceError> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| InferenceError::Tokenizer(format!("tokenizer lacks {t}")))
        };
        let eot = id("<|endoftext|>")?;
        let sot = id("<|startoftranscript|>")?;
        let translate = id("<|translate|>")?;
        let transcribe = id("<|transcribe|>")?;
        let sot_lm = id("<|startoflm|>")?;
        let sot_prev = id("<|startofprev|>")?;
        let no_speech = id("<|nocaptions|>").or_else(|_| id("<|nospeech|>"))?;
        let no_timestamps = id("<|notimestamps|>")?;
        let timestamp_begin = no_timestamps + 1;
        if (timestamp_begin as usize) >= vocab_size {
            return Err(InferenceError::Tokenizer(format!(
                "vocabulary of {vocab_size} has no room for timestamps after id {no_timestamps}"
            )));
        }
        let languages = (sot + 1..translate)
            .filter_map(|i| {
                let t = inner.id_to_token(i)?;
                let code = t.strip_prefix("<|")?.strip_suffix("|>")?.to_string();
                Some((code, i))
            })
            .collect();
        // English-only vocabularies have 51864 entries, multilingual 51865+.
        let multilingual = vocab_size >= 51865;
        Ok(Self {
            inner,
            eot,
            sot,
            translate,
            transcribe,
            sot_lm,
            sot_prev,
            no_speech,
            no_timestamps,
            timestamp_begin,
            languages,
            multilingual,
        })
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, id)| *id)
    }

    pub fn language_code(&self, token: u32) -> Option<&str> {
        self.languages
            .iter()
            .find(|(_, id)| *id == token)
            .map(|(c, _)| c.as_str())
    }

    /// Text tokens for a prompt, without any special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of the given tokens; special and timestamp tokens are dropped.
    pub fn decode(&self, tokens: &[u32]) -> Result<String, InferenceError> {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        self.inner
            .decode(&text, false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    /// Token ids of the characters Whisper's reference suppresses as
    /// "non-speech" when `suppress_tokens` contains -1.
    pub fn non_speech_tokens(&self) -> Vec<u32> {
        let symbols: Vec<String> = {
            let mut s: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
                .chars()
                .map(|c| c.to_string())
                .collect();
            s.extend(
                "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                    .split(' ')
                    .map(String::from),
            );
            s
        };
        let miscellaneous = ["♩", "♪", "♫", "♬", "♭", "♮", "♯"];
        let mut out = Vec::new();
        if let Ok(ids) = self.encode(" -") {
            out.push(ids[0]);
        }
        if let Ok(ids) = self.encode(" '") {
            out.push(ids[0]);
        }
        for sym in symbols.iter().map(String::as_str).chain(miscellaneous) {
            for text in [sym.to_string(), format!(" {sym}")] {
                if let Ok(ids) = self.encode(&text) {
                    if ids.len() == 1 || (miscellaneous.contains(&sym) && !ids.is_empty()) {
                        out.push(ids[0]);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
