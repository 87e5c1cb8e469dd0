//! Tokenizers for GGUF models, built from the GGUF's own vocabulary so a
//! single `.gguf` file is a complete model.
//!
//! - `tokenizer.ggml.model = "llama"` (SentencePiece: Gemma, Llama 2,
//!   TinyLlama): llama.cpp's algorithm, reimplemented — spaces become `▁`,
//!   adjacent pieces are merged highest score first while the merged piece
//!   is in the vocabulary, leftovers fall back to `<0xXX>` byte tokens. No
//!   `▁` is prepended when `tokenizer.ggml.add_space_prefix` is false
//!   (Gemma: "The", not "▁The").
//! - `tokenizer.ggml.model = "gpt2"` (byte-level BPE: SmolLM, Qwen,
//!   Llama 3): the vocabulary and merges go into a Hugging Face `tokenizers`
//!   BPE model behind the pre-tokenizer regexes `tokenizer.ggml.pre` names.
//! - A `tokenizer.json` next to the GGUF, when present, is used as is.
//!
//! Control and user-defined tokens written in the text (`<|im_start|>`,
//! `<start_of_turn>`) are encoded as themselves: chat templates rely on it.

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use super::config::{meta_bool, meta_str, meta_u32};
use crate::error::InferenceError;

type Result<T> = std::result::Result<T, InferenceError>;

const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_BYTE: i32 = 6;

/// A GGUF model's tokenizer.
pub struct LlmTokenizer {
    kind: Kind,
    tokens: Vec<String>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    /// Special tokens matched in input text, grouped by first char, longest first.
    specials: HashMap<char, Vec<(String, u32)>>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

enum Kind {
    Spm {
        add_space_prefix: bool,
        scores: Vec<f32>,
    },
    Hf(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for LlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmTokenizer")
            .field("vocab", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> InferenceError {
    InferenceError::Tokenizer(e.to_string())
}

fn string_array(ct: &Content, key: &str) -> Result<Vec<String>> {
    let Some(v) = ct.metadata.get(key) else {
        return Err(tok_err(format!("GGUF metadata has no {key}")));
    };
    let arr = v.to_vec().map_err(tok_err)?;
    arr.iter()
        .map(|x| x.to_string().cloned().map_err(tok_err))
        .collect()
}

fn array<T>(ct: &Content, key: &str, f: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    let arr = ct.metadata.get(key)?.to_vec().ok()?;
    arr.iter().map(f).collect()
}

/// Pre-tokenizer regexes for byte-level BPE vocabularies, by
/// `tokenizer.ggml.pre`. Each splits the text in turn.
fn bpe_regexes(pre: &str) -> &'static [&'static str] {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    match pre {
        "smollm" => &[r"\p{N}", GPT2],
        "qwen2" | "deepseek-r1-qwen" => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "llama-bpe" | "llama3" | "smaug-bpe" => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        _ => &[GPT2],
    }
}

impl LlmTokenizer {
    /// Builds the tokenizer from GGUF metadata; `tokenizer_json`, when given,
    /// replaces the GGUF's vocabulary model (special ids still come from the GGUF).
    pub fn from_gguf(ct: &Content, tokenizer_json: Option<&Path>) -> Result<Self> {
        let tokens = string_array(ct, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = array(ct, "tokenizer.ggml.token_type", |v| v.to_i32().ok())
            .unwrap_or_else(|| vec![1; n]);
        if types.len() != n {
            return Err(tok_err("token_type and tokens differ in length"));
        }
        let model = meta_str(ct, "tokenizer.ggml.model").unwrap_or("llama");
        let opt_id = |k: &str| meta_u32(ct, k).ok().filter(|&i| (i as usize) < n);
        let bos = opt_id("tokenizer.ggml.bos_token_id");
        let eos = opt_id("tokenizer.ggml.eos_token_id");
        let add_bos = meta_bool(ct, "tokenizer.ggml.add_bos_token").unwrap_or(model == "llama")
            && bos.is_some();
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut specials: HashMap<char, Vec<(String, u32)>> = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            if matches!(types[i], TOKEN_CONTROL | TOKEN_USER_DEFINED) && !t.is_empty() {
                let c = t.chars().next().unwrap_or('\0');
                specials.entry(c).or_default().push((t.clone(), i as u32));
            }
        }
        for v in specials.values_mut() {
            v.sort_by_key(|b| std::cmp::Reverse(b.0.len()));
        }
        let kind = if let Some(path) = tokenizer_json {
            let tk = tokenizers::Tokenizer::from_file(path)
                .map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
            Kind::Hf(Box::new(tk))
        } else {
            match model {
                "llama" => {
                    let scores = array(ct, "tokenizer.ggml.scores", |v| v.to_f32().ok())
                        .unwrap_or_else(|| vec![0.0; n]);
                    if scores.len() != n {
                        return Err(tok_err("scores and tokens differ in length"));
                    }
                    Kind::Spm {
                        add_space_prefix: meta_bool(ct, "tokenizer.ggml.add_space_prefix")
                            .unwrap_or(true),
                        scores,
                    }
                }
                "gpt2" => {
                    let merges = string_array(ct, "tokenizer.ggml.merges")?;
                    let pre = meta_str(ct, "tokenizer.ggml.pre").unwrap_or("default");
                    Kind::Hf(Box::new(build_bpe(&tokens, &types, &merges, pre)?))
                }
                other => {
                    return Err(tok_err(format!(
                        "unsupported tokenizer model {other:?} (supported: llama, gpt2, or a tokenizer.json next to the model)"
                    )))
                }
            }
        };
        Ok(Self {
            kind,
            tokens,
            types,
            ids,
            specials,
            bos,
            eos,
            add_bos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects a BOS token before the prompt.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Whether `id` is a control token (never printed).
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TOKEN_CONTROL)
    }

    /// Encodes `text`, reading special tokens written in it as themselves,
    /// with a BOS first when `add_bos` and the model uses one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_bos && self.add_bos {
            out.extend(self.bos);
        }
        for piece in self.split_specials(text) {
            match piece {
                Piece::Special(id) => out.push(id),
                Piece::Text(t) => self.encode_plain(t, &mut out)?,
            }
        }
        Ok(out)
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        match &self.kind {
            Kind::Spm {
                add_space_prefix,
                scores,
            } => {
                self.spm_encode(text, *add_space_prefix, scores, out);
                Ok(())
            }
            Kind::Hf(tk) => {
                let enc = tk.encode(text, false).map_err(tok_err)?;
                out.extend_from_slice(enc.get_ids());
                Ok(())
            }
        }
    }

    fn split_specials<'t>(&self, text: &'t str) -> Vec<Piece<'t>> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            let c = text[i..].chars().next().unwrap_or('\0');
            if let Some(cands) = self.specials.get(&c) {
                if let Some((s, id)) = cands
                    .iter()
                    .find(|(s, _)| text[i..].starts_with(s.as_str()))
                {
                    if start < i {
                        pieces.push(Piece::Text(&text[start..i]));
                    }
                    pieces.push(Piece::Special(*id));
                    i += s.len();
                    start = i;
                    continue;
                }
            }
            i += c.len_utf8();
        }
        if start < text.len() {
            pieces.push(Piece::Text(&text[start..]));
        }
        pieces
    }

    /// llama.cpp's SentencePiece merge: best-scoring adjacent pair first.
    fn spm_encode(&self, text: &str, add_space_prefix: bool, scores: &[f32], out: &mut Vec<u32>) {
        let mut s = String::with_capacity(text.len() + 3);
        if add_space_prefix {
            s.push('▁');
        }
        for c in text.chars() {
            s.push(if c == ' ' { '▁' } else { c });
        }
        // Symbols as byte ranges, linked list through prev/next.
        struct Sym {
            start: usize,
            len: usize,
            prev: isize,
            next: isize,
        }
        let mut syms: Vec<Sym> = Vec::new();
        for (i, (b, c)) in s.char_indices().enumerate() {
            syms.push(Sym {
                start: b,
                len: c.len_utf8(),
                prev: i as isize - 1,
                next: i as isize + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = -1;
        }
        #[derive(PartialEq)]
        struct Bigram {
            score: f32,
            left: usize,
            size: usize,
        }
        impl Eq for Bigram {}
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Bigram {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                // Higher score first; on ties the leftmost pair.
                self.score
                    .total_cmp(&o.score)
                    .then_with(|| o.left.cmp(&self.left))
            }
        }
        let mut heap = BinaryHeap::new();
        let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: isize, r: isize| {
            if l < 0 || r < 0 {
                return;
            }
            let (l, r) = (l as usize, r as usize);
            let text = &s[syms[l].start..syms[r].start + syms[r].len];
            if let Some(&id) = self.ids.get(text) {
                heap.push(Bigram {
                    score: scores[id as usize],
                    left: l,
                    size: text.len(),
                });
            }
        };
        for i in 1..syms.len() {
            try_add(&mut heap, &syms, i as isize - 1, i as isize);
        }
        while let Some(bg) = heap.pop() {
            let l = bg.left;
            let r = syms[l].next;
            if syms[l].len == 0 || r < 0 {
                continue;
            }
            let r = r as usize;
            if syms[l].len + syms[r].len != bg.size {
                continue; // stale: one side already merged
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if syms[r].next >= 0 {
                let nn = syms[r].next as usize;
                syms[nn].prev = l as isize;
            }
            let (p, nx) = (syms[l].prev, syms[l].next);
            try_add(&mut heap, &syms, p, l as isize);
            try_add(&mut heap, &syms, l as isize, nx);
        }
        let mut i: isize = if syms.is_empty() { -1 } else { 0 };
        while i >= 0 {
            let sym = &syms[i as usize];
            let piece = &s[sym.start..sym.start + sym.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        match self.ids.get(&format!("<0x{b:02X}>")) {
                            Some(&id) => out.push(id),
                            None => out.extend(self.token_to_id("<unk>")),
                        }
                    }
                }
            }
            i = sym.next;
        }
    }

    /// Decodes ids to text; control tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        match &self.kind {
            Kind::Hf(tk) => tk.decode(ids, skip_special).unwrap_or_else(|_| {
                // Out-of-range ids: decode what is valid.
                let ok: Vec<u32> = ids
                    .iter()
                    .copied()
                    .filter(|&i| (i as usize) < self.tokens.len())
                    .collect();
                tk.decode(&ok, skip_special).unwrap_or_default()
            }),
            Kind::Spm { .. } => {
                let mut bytes = Vec::new();
                for &id in ids {
                    let Some(t) = self.tokens.get(id as usize) else {
                        continue;
                    };
                    let ty = self.types[id as usize];
                    if ty == TOKEN_BYTE {
                        if let Some(b) = t
                            .strip_prefix("<0x")
                            .and_then(|h| h.strip_suffix('>'))
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                        {
                            bytes.push(b);
                            continue;
                        }
                    }
                    if skip_special && ty == TOKEN_CONTROL {
                        continue;
                    }
                    bytes.extend_from_slice(t.replace('▁', " ").as_bytes());
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }
}

enum Piece<'t> {
    Text(&'t str),
    Special(u32),
}

fn build_bpe(
    tokens: &[String],
    types: &[i32],
    merges: &[String],
    pre: &str,
) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

    let vocab: ahash::AHashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(tok_err)?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let mut pres: Vec<PreTokenizerWrapper> = Vec::new();
    for re in bpe_regexes(pre) {
        let split = Split::new(
            SplitPattern::Regex((*re).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tok_err)?;
        pres.push(split.into());
    }
    pres.push(ByteLevel::new(false, false, false).into());
    tk.with_pre_tokenizer(Some(Sequence::new(pres)));
    tk.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &ty)| ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED)
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    tk.add_special_tokens(specials).map_err(tok_err)?;
    Ok(tk)
}
