//! Transcript summaries, map-reduce style when a transcript does not fit.
//!
//! A transcript is a list of segments (Whisper's, or sentences of plain
//! text). Segments are packed into chunks that fit the context next to the
//! prompt and the answer; each chunk is summarized, and when there was more
//! than one, the partial summaries are summarized again, level after level,
//! until one remains. Nothing is cut off: a segment longer than a chunk is
//! split between words. All chunks of all transcripts at one level go
//! through the scheduler together, so a long transcript is summarized in
//! parallel batches rather than one chunk after another.

use std::time::Instant;

use serde::Serialize;

use super::engine::{generate_all, EngineOptions, GenRequest};
use super::sampling::SamplingParams;
use super::template::ChatMessage;
use super::Llm;
use crate::error::InferenceError;

type Result<T> = std::result::Result<T, InferenceError>;

/// How to summarize.
#[derive(Debug, Clone)]
pub struct SummaryOptions {
    /// Most tokens in each summary (partial or final).
    pub max_tokens: usize,
    /// Sampling settings (their `max_new_tokens` is replaced by `max_tokens`).
    pub sampling: SamplingParams,
    /// Transcript tokens per chunk; default: what fits the context.
    pub chunk_tokens: Option<usize>,
    pub engine: EngineOptions,
}

impl Default for SummaryOptions {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            sampling: SamplingParams {
                repeat_penalty: 1.1,
                ..SamplingParams::default()
            },
            chunk_tokens: None,
            engine: EngineOptions::default(),
        }
    }
}

/// A finished summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub text: String,
    /// Chunks the transcript was split into (1 when it fit).
    pub chunks: usize,
    /// Generation rounds (1 when it fit; 2+ for map-reduce).
    pub levels: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub seconds: f64,
}

/// Splits plain text into segments: lines, then sentences.
pub fn split_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut start = 0;
        let b = line.as_bytes();
        for i in 0..b.len() {
            if matches!(b[i], b'.' | b'!' | b'?') && (i + 1 == b.len() || b[i + 1] == b' ') {
                let s = line[start..=i].trim();
                if !s.is_empty() {
                    out.push(s.to_owned());
                }
                start = i + 1;
            }
        }
        let s = line[start..].trim();
        if !s.is_empty() {
            out.push(s.to_owned());
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// The whole transcript in one chunk.
    Whole,
    /// Part `i` of `n` of the transcript.
    Part(usize, usize),
    /// Combining partial summaries into the final one.
    Combine,
    /// Combining some partial summaries into a shorter set.
    CombinePart,
}

fn instruction(stage: Stage) -> String {
    match stage {
        Stage::Whole => "Summarize the following transcript in one short paragraph: the topics, what was decided, and who will do what.".into(),
        Stage::Part(i, n) => format!("This is part {i} of {n} of a longer transcript. Summarize this part in one short paragraph: the topics, what was decided, and who will do what."),
        Stage::Combine => "These are summaries of consecutive parts of one transcript. Write one summary of the whole transcript in one short paragraph.".into(),
        Stage::CombinePart => "These are summaries of consecutive parts of one transcript. Combine them into one shorter summary.".into(),
    }
}

fn prompt(llm: &Llm, stage: Stage, body: &str) -> Result<Vec<u32>> {
    if llm.instruct {
        llm.chat_prompt(&[ChatMessage::new(
            "user",
            format!("{}\n\n{body}", instruction(stage)),
        )])
    } else {
        // Base models continue text: frame the transcript as a document
        // whose next section is its summary.
        let head = match stage {
            Stage::Whole | Stage::Part(..) => "Transcript:",
            Stage::Combine | Stage::CombinePart => "Notes on a meeting:",
        };
        llm.text_prompt(&format!(
            "{head}\n{body}\n\nSummary of the above in one paragraph:\n"
        ))
    }
}

/// Summarizes one transcript given as segments.
pub fn summarize(llm: &Llm, segments: &[String], opts: &SummaryOptions) -> Result<Summary> {
    summarize_many(llm, &[segments.to_vec()], opts)
        .pop()
        .unwrap_or_else(|| Err(InferenceError::Model("no summary produced".into())))
}

/// Summarizes several transcripts together (their chunks share batches).
pub fn summarize_many(
    llm: &Llm,
    docs: &[Vec<String>],
    opts: &SummaryOptions,
) -> Vec<Result<Summary>> {
    let start = Instant::now();
    let mut params = opts.sampling.clone();
    params.max_new_tokens = opts.max_tokens;
    // Base models run on into a new section after a blank line.
    if !llm.instruct && params.stop.is_empty() {
        params.stop.push("\n\n".into());
    }
    struct Doc {
        parts: Vec<String>,
        level: usize,
        chunks: usize,
        prompt_tokens: usize,
        generated: usize,
        result: Option<Result<Summary>>,
    }
    let mut state: Vec<Doc> = docs
        .iter()
        .map(|d| Doc {
            parts: d
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            level: 0,
            chunks: 0,
            prompt_tokens: 0,
            generated: 0,
            result: None,
        })
        .collect();
    for d in &mut state {
        if d.parts.is_empty() {
            d.result = Some(Err(InferenceError::BadOption(
                "the transcript is empty".into(),
            )));
        }
    }
    let budget = match chunk_budget(llm, opts) {
        Ok(b) => b,
        Err(e) => return state.iter().map(|_| Err(e.clone())).collect(),
    };
    loop {
        // (doc, is_final) per request.
        let mut owners = Vec::new();
        let mut reqs = Vec::new();
        for (di, d) in state.iter_mut().enumerate() {
            if d.result.is_some() {
                continue;
            }
            let chunks = match pack(llm, &d.parts, budget) {
                Ok(c) => c,
                Err(e) => {
                    d.result = Some(Err(e));
                    continue;
                }
            };
            if d.level == 0 {
                d.chunks = chunks.len();
            }
            let n = chunks.len();
            for (i, body) in chunks.iter().enumerate() {
                let stage = match (d.level, n) {
                    (0, 1) => Stage::Whole,
                    (0, _) => Stage::Part(i + 1, n),
                    (_, 1) => Stage::Combine,
                    _ => Stage::CombinePart,
                };
                match prompt(llm, stage, body) {
                    Ok(p) => {
                        owners.push((di, n == 1));
                        reqs.push(GenRequest {
                            prompt: p,
                            params: params.clone(),
                        });
                    }
                    Err(e) => d.result = Some(Err(e)),
                }
            }
        }
        if reqs.is_empty() {
            break;
        }
        let outs = generate_all(llm, reqs, opts.engine, |_, _| {});
        let mut next: Vec<Vec<String>> = vec![Vec::new(); state.len()];
        for ((di, is_final), out) in owners.into_iter().zip(outs) {
            let d = &mut state[di];
            if d.result.is_some() {
                continue;
            }
            match out {
                Ok(o) => {
                    d.prompt_tokens += o.prompt_tokens;
                    d.generated += o.tokens.len();
                    let text = first_paragraphs(&o.text);
                    if is_final {
                        d.result = Some(Ok(Summary {
                            text,
                            chunks: d.chunks,
                            levels: d.level + 1,
                            prompt_tokens: d.prompt_tokens,
                            generated_tokens: d.generated,
                            seconds: start.elapsed().as_secs_f64(),
                        }));
                    } else {
                        next[di].push(text);
                    }
                }
                Err(e) => d.result = Some(Err(e)),
            }
        }
        for (di, d) in state.iter_mut().enumerate() {
            if d.result.is_none() {
                let parts: Vec<String> = std::mem::take(&mut next[di])
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect();
                if parts.is_empty() {
                    // The model said nothing about any part: an empty
                    // summary, not an error of the input.
                    d.result = Some(Ok(Summary {
                        text: String::new(),
                        chunks: d.chunks,
                        levels: d.level + 1,
                        prompt_tokens: d.prompt_tokens,
                        generated_tokens: d.generated,
                        seconds: start.elapsed().as_secs_f64(),
                    }));
                    continue;
                }
                if parts.len() >= d.parts.len() && d.level > 0 {
                    d.result = Some(Err(InferenceError::Model(
                        "map-reduce did not converge (summaries are not shrinking)".into(),
                    )));
                }
                d.parts = parts;
                d.level += 1;
            }
        }
    }
    state
        .into_iter()
        .map(|d| {
            d.result
                .unwrap_or_else(|| Err(InferenceError::Model("no summary produced".into())))
        })
        .collect()
}

/// The answer's first paragraph (plus the list a paragraph ending in ':'
/// introduces): small instruct models, asked for one paragraph, tend to
/// keep going with invented follow-ups after it.
pub fn first_paragraphs(text: &str) -> String {
    let mut out = String::new();
    for p in text
        .trim()
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(p);
        if !p.ends_with(':') {
            break;
        }
    }
    out
}

/// Transcript tokens that fit in one chunk next to the prompt and answer.
fn chunk_budget(llm: &Llm, opts: &SummaryOptions) -> Result<usize> {
    let overhead = prompt(llm, Stage::Part(99, 99), "")?.len() + 8;
    let room = llm
        .context_limit()
        .saturating_sub(overhead + opts.max_tokens);
    let budget = opts.chunk_tokens.map_or(room, |c| c.min(room));
    // Each chunk must hold at least two summaries, or combining never shrinks.
    let need = 2 * opts.max_tokens + 16;
    if budget < need.max(32) {
        return Err(InferenceError::BadOption(format!(
            "a context of {} tokens leaves {budget} tokens per chunk, too few for summaries of {} tokens; lower max tokens or raise the context",
            llm.context_limit(),
            opts.max_tokens
        )));
    }
    Ok(budget)
}

/// Packs segments into chunks of at most `budget` tokens, in order.
fn pack(llm: &Llm, parts: &[String], budget: usize) -> Result<Vec<String>> {
    let count = |s: &str| -> Result<usize> { Ok(llm.tokenizer.encode(s, false)?.len()) };
    let mut pieces = Vec::new();
    for p in parts {
        let n = count(p)?;
        if n < budget {
            pieces.push((p.clone(), n + 1));
        } else {
            for w in split_words(p, budget, &count)? {
                pieces.push(w);
            }
        }
    }
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut used = 0;
    for (p, n) in pieces {
        if used + n > budget && !cur.is_empty() {
            chunks.push(std::mem::take(&mut cur));
            used = 0;
        }
        if !cur.is_empty() {
            cur.push('\n');
        }
        cur.push_str(&p);
        used += n;
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    Ok(chunks)
}

/// Splits an over-long segment between words into pieces that fit.
fn split_words(
    text: &str,
    budget: usize,
    count: &dyn Fn(&str) -> Result<usize>,
) -> Result<Vec<(String, usize)>> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        // Grow by halving from the most that could fit.
        let mut take = (words.len() - i).min(budget);
        loop {
            let piece = words[i..i + take].join(" ");
            let n = count(&piece)? + 1;
            if n <= budget || take == 1 {
                if n > budget {
                    return Err(InferenceError::BadOption(format!(
                        "a single word of {n} tokens does not fit a chunk of {budget}"
                    )));
                }
                out.push((piece, n));
                i += take;
                break;
            }
            take = (take * budget / n).clamp(1, take - 1);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{first_paragraphs, split_text};

    #[test]
    fn first_paragraph_keeps_an_announced_list() {
        assert_eq!(first_paragraphs("  One. Two.\n\nInvented.\n"), "One. Two.");
        assert_eq!(
            first_paragraphs("Decided:\n\n- a\n- b\n\nMore."),
            "Decided:\n\n- a\n- b"
        );
        assert_eq!(first_paragraphs(""), "");
    }

    #[test]
    fn text_splits_on_lines_and_sentences() {
        assert_eq!(
            split_text("Hello there. How are you?\nFine!  3.5 apples\n\n"),
            vec!["Hello there.", "How are you?", "Fine!", "3.5 apples"]
        );
    }
}
