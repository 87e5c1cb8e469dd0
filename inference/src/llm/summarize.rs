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
//!
//! The stage instructions ([`Stage::instruction`], [`user_message`]), the
//! packing ([`chunk_budget_for`], [`pack_segments`]) and the level loop
//! ([`MapReduce`]) know nothing about the model: a token counter and a
//! "generate these prompts" step are plugged in. The local engine plugs in
//! its tokenizer and batch scheduler ([`summarize_many`]); the managed
//! Bedrock backend plugs in an estimate and concurrent Converse calls, so
//! both backends send the same prompts and reduce the same way.

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

/// Which step of a (map-reduce) summary a prompt is for; it picks the
/// instruction, so every backend asks the same question at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The whole transcript in one chunk.
    Whole,
    /// Part `i` of `n` of the transcript.
    Part(usize, usize),
    /// Combining partial summaries into the final one.
    Combine,
    /// Combining some partial summaries into a shorter set.
    CombinePart,
}

impl Stage {
    /// The instruction put before the chunk in an instruct (chat) prompt.
    pub fn instruction(self) -> String {
        match self {
            Stage::Whole => "Summarize the following transcript in one short paragraph: the topics, what was decided, and who will do what.".into(),
            Stage::Part(i, n) => format!("This is part {i} of {n} of a longer transcript. Summarize this part in one short paragraph: the topics, what was decided, and who will do what."),
            Stage::Combine => "These are summaries of consecutive parts of one transcript. Write one summary of the whole transcript in one short paragraph.".into(),
            Stage::CombinePart => "These are summaries of consecutive parts of one transcript. Combine them into one shorter summary.".into(),
        }
    }

    /// The widest prompt of any stage, for sizing the per-chunk overhead
    /// before the chunks (and so their stages) are known.
    pub const WIDEST: Stage = Stage::Part(99, 99);
}

/// Said after the instruction when the chunk's lines carry speaker labels
/// (a diarized transcript: `SPEAKER_00: …` per turn), so the summary can
/// say who said and decided what.
pub const SPEAKER_NOTE: &str = "Each line starts with the speaker's label (SPEAKER_00, SPEAKER_01, ...). Say who said or decided what, by label.";

/// A body to size prompts by: the widest stage with the speaker note on.
pub const WIDEST_BODY: &str = "SPEAKER_00: ";

/// Whether any line of `body` starts with a speaker label (`SPEAKER_`,
/// digits, `: `), as diarized transcripts are given to the summarizer.
pub fn has_speaker_turns(body: &str) -> bool {
    body.lines().any(|l| {
        l.strip_prefix("SPEAKER_")
            .and_then(|r| r.split_once(": "))
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The user message of an instruct (chat) prompt: the stage's instruction
/// (plus [`SPEAKER_NOTE`] when the chunk has speaker turns), a blank line,
/// then the chunk.
pub fn user_message(stage: Stage, body: &str) -> String {
    if has_speaker_turns(body) {
        format!("{} {SPEAKER_NOTE}\n\n{body}", stage.instruction())
    } else {
        format!("{}\n\n{body}", stage.instruction())
    }
}

fn prompt(llm: &Llm, stage: Stage, body: &str) -> Result<Vec<u32>> {
    if llm.instruct {
        llm.chat_prompt(&[ChatMessage::new("user", user_message(stage, body))])
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
    let mut params = opts.sampling.clone();
    params.max_new_tokens = opts.max_tokens;
    // Base models run on into a new section after a blank line.
    if !llm.instruct && params.stop.is_empty() {
        params.stop.push("\n\n".into());
    }
    let budget = match chunk_budget(llm, opts) {
        Ok(b) => b,
        Err(e) => return docs.iter().map(|_| Err(e.clone())).collect(),
    };
    let count = |s: &str| -> Result<usize> { Ok(llm.tokenizer.encode(s, false)?.len()) };
    let mut mr = MapReduce::<InferenceError>::new(docs, budget);
    loop {
        let chunks = mr.next_round(&count);
        if chunks.is_empty() {
            break;
        }
        // A prompt that cannot be built fails its transcript; the others
        // still go to the scheduler together.
        let mut outs: Vec<Option<Result<Generation>>> = Vec::with_capacity(chunks.len());
        let mut reqs = Vec::new();
        let mut slots = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            match prompt(llm, c.stage, &c.body) {
                Ok(p) => {
                    outs.push(None);
                    slots.push(i);
                    reqs.push(GenRequest {
                        prompt: p,
                        params: params.clone(),
                    });
                }
                Err(e) => outs.push(Some(Err(e))),
            }
        }
        for (i, out) in slots
            .into_iter()
            .zip(generate_all(llm, reqs, opts.engine, |_, _| {}))
        {
            outs[i] = Some(out.map(|o| Generation {
                text: o.text,
                prompt_tokens: o.prompt_tokens,
                generated_tokens: o.tokens.len(),
            }));
        }
        mr.finish_round(
            outs.into_iter()
                .map(|o| o.unwrap_or_else(|| Err(InferenceError::Model("no output".into()))))
                .collect(),
        );
    }
    mr.finish()
}

/// One prompt the map-reduce loop wants generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPrompt {
    /// Which transcript (index into the documents given to [`MapReduce::new`]).
    pub doc: usize,
    pub stage: Stage,
    /// The chunk: segments (or partial summaries) joined by newlines.
    pub body: String,
}

/// What a backend generated for one [`ChunkPrompt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub text: String,
    /// Tokens the backend counted for the prompt (billed tokens for a
    /// managed service).
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
}

struct DocState<E> {
    parts: Vec<String>,
    level: usize,
    chunks: usize,
    prompt_tokens: usize,
    generated: usize,
    result: Option<std::result::Result<Summary, E>>,
}

/// The map-reduce loop as a state machine, so that a blocking engine and an
/// async service can both drive it: ask [`next_round`](Self::next_round)
/// for the prompts of one level (all documents together), generate them
/// however the backend likes (one batch, concurrent requests), hand the
/// outputs in order to [`finish_round`](Self::finish_round), and repeat
/// until a round is empty; then [`finish`](Self::finish).
///
/// Errors are per document: one transcript failing never fails the others.
pub struct MapReduce<E> {
    docs: Vec<DocState<E>>,
    budget: usize,
    start: Instant,
    /// (doc, is_final) per prompt of the round in flight.
    owners: Vec<(usize, bool)>,
}

impl<E: From<InferenceError>> MapReduce<E> {
    /// Starts on `docs` (each a list of segments), packing chunks of at most
    /// `budget` tokens (see [`chunk_budget_for`]). Empty transcripts fail at
    /// once with a bad-option error.
    pub fn new(docs: &[Vec<String>], budget: usize) -> Self {
        let docs = docs
            .iter()
            .map(|d| {
                let parts: Vec<String> = d
                    .iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                let result = parts.is_empty().then(|| {
                    Err(InferenceError::BadOption("the transcript is empty".into()).into())
                });
                DocState {
                    parts,
                    level: 0,
                    chunks: 0,
                    prompt_tokens: 0,
                    generated: 0,
                    result,
                }
            })
            .collect();
        MapReduce {
            docs,
            budget,
            start: Instant::now(),
            owners: Vec::new(),
        }
    }

    /// The prompts of the next level, every unfinished document's chunks in
    /// order; empty when all documents are done. `count` gives a text's
    /// token count (exact or estimated).
    pub fn next_round(&mut self, count: &dyn Fn(&str) -> Result<usize>) -> Vec<ChunkPrompt> {
        self.owners.clear();
        let mut out = Vec::new();
        for (di, d) in self.docs.iter_mut().enumerate() {
            if d.result.is_some() {
                continue;
            }
            let chunks = match pack_segments(&d.parts, self.budget, count) {
                Ok(c) => c,
                Err(e) => {
                    d.result = Some(Err(e.into()));
                    continue;
                }
            };
            if d.level == 0 {
                d.chunks = chunks.len();
            }
            let n = chunks.len();
            for (i, body) in chunks.into_iter().enumerate() {
                let stage = match (d.level, n) {
                    (0, 1) => Stage::Whole,
                    (0, _) => Stage::Part(i + 1, n),
                    (_, 1) => Stage::Combine,
                    _ => Stage::CombinePart,
                };
                self.owners.push((di, n == 1));
                out.push(ChunkPrompt {
                    doc: di,
                    stage,
                    body,
                });
            }
        }
        out
    }

    /// Takes the outputs of the round [`next_round`](Self::next_round)
    /// returned, in the same order. Each answer keeps its first paragraph
    /// ([`first_paragraphs`]); an error fails its document.
    pub fn finish_round(&mut self, outputs: Vec<std::result::Result<Generation, E>>) {
        let owners = std::mem::take(&mut self.owners);
        let mut outputs = outputs.into_iter();
        let mut next: Vec<Vec<String>> = vec![Vec::new(); self.docs.len()];
        for (di, is_final) in owners {
            let out = outputs.next().unwrap_or_else(|| {
                Err(InferenceError::Model("the backend returned too few outputs".into()).into())
            });
            let d = &mut self.docs[di];
            if d.result.is_some() {
                continue;
            }
            match out {
                Ok(o) => {
                    d.prompt_tokens += o.prompt_tokens;
                    d.generated += o.generated_tokens;
                    let text = first_paragraphs(&o.text);
                    if is_final {
                        d.result = Some(Ok(Summary {
                            text,
                            chunks: d.chunks,
                            levels: d.level + 1,
                            prompt_tokens: d.prompt_tokens,
                            generated_tokens: d.generated,
                            seconds: self.start.elapsed().as_secs_f64(),
                        }));
                    } else {
                        next[di].push(text);
                    }
                }
                Err(e) => d.result = Some(Err(e)),
            }
        }
        for (di, d) in self.docs.iter_mut().enumerate() {
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
                        seconds: self.start.elapsed().as_secs_f64(),
                    }));
                    continue;
                }
                if parts.len() >= d.parts.len() && d.level > 0 {
                    d.result = Some(Err(InferenceError::Model(
                        "map-reduce did not converge (summaries are not shrinking)".into(),
                    )
                    .into()));
                }
                d.parts = parts;
                d.level += 1;
            }
        }
    }

    /// One result per document, in the order given to [`new`](Self::new).
    pub fn finish(self) -> Vec<std::result::Result<Summary, E>> {
        self.docs
            .into_iter()
            .map(|d| {
                d.result.unwrap_or_else(|| {
                    Err(InferenceError::Model("no summary produced".into()).into())
                })
            })
            .collect()
    }
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
    let overhead = prompt(llm, Stage::WIDEST, WIDEST_BODY)?.len();
    chunk_budget_for(
        llm.context_limit(),
        overhead,
        opts.max_tokens,
        opts.chunk_tokens,
    )
}

/// Transcript tokens per chunk for a model with `context` tokens, whose
/// empty prompt ([`Stage::WIDEST`]) takes `prompt_overhead` tokens, and
/// answers of at most `max_tokens`; `chunk_tokens` caps it. Fails when the
/// room left cannot hold two answers, because combining would then never
/// shrink.
pub fn chunk_budget_for(
    context: usize,
    prompt_overhead: usize,
    max_tokens: usize,
    chunk_tokens: Option<usize>,
) -> Result<usize> {
    let overhead = prompt_overhead + 8;
    let room = context.saturating_sub(overhead + max_tokens);
    let budget = chunk_tokens.map_or(room, |c| c.min(room));
    // Each chunk must hold at least two summaries, or combining never shrinks.
    let need = 2 * max_tokens + 16;
    if budget < need.max(32) {
        return Err(InferenceError::BadOption(format!(
            "a context of {context} tokens leaves {budget} tokens per chunk, too few for summaries of {max_tokens} tokens; lower max tokens or raise the context"
        )));
    }
    Ok(budget)
}

/// Packs segments into chunks of at most `budget` tokens (as `count`
/// measures them), in order, joined by newlines.
pub fn pack_segments(
    parts: &[String],
    budget: usize,
    count: &dyn Fn(&str) -> Result<usize>,
) -> Result<Vec<String>> {
    let mut pieces = Vec::new();
    for p in parts {
        let n = count(p)?;
        if n < budget {
            pieces.push((p.clone(), n + 1));
        } else {
            for w in split_words(p, budget, count)? {
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
    use super::*;

    #[test]
    fn speaker_turns_add_the_speaker_note() {
        assert!(has_speaker_turns("SPEAKER_00: hello\nSPEAKER_01: hi"));
        assert!(has_speaker_turns("intro\nSPEAKER_12: we agreed"));
        assert!(!has_speaker_turns("SPEAKER_: no digits"));
        assert!(!has_speaker_turns("SPEAKER_0x: not digits"));
        assert!(!has_speaker_turns("the SPEAKER_00: mid-line"));
        let m = user_message(Stage::Whole, "SPEAKER_00: We ship Friday.");
        assert!(m.contains(SPEAKER_NOTE), "{m}");
        assert!(m.ends_with("\n\nSPEAKER_00: We ship Friday."), "{m}");
        let m = user_message(Stage::Whole, "We ship Friday.");
        assert!(!m.contains(SPEAKER_NOTE), "{m}");
        assert!(has_speaker_turns(WIDEST_BODY));
    }

    /// One token per word: enough to drive the loop without a model.
    fn words(s: &str) -> Result<usize> {
        Ok(s.split_whitespace().count())
    }

    /// Drives the loop with a fake backend; returns the results and every
    /// round's prompts.
    fn run(
        docs: &[Vec<String>],
        budget: usize,
        mut answer: impl FnMut(&ChunkPrompt) -> Result<Generation>,
    ) -> (Vec<Result<Summary>>, Vec<Vec<ChunkPrompt>>) {
        let mut mr = MapReduce::<InferenceError>::new(docs, budget);
        let mut rounds = Vec::new();
        loop {
            let prompts = mr.next_round(&words);
            if prompts.is_empty() {
                break;
            }
            mr.finish_round(prompts.iter().map(&mut answer).collect());
            rounds.push(prompts);
        }
        (mr.finish(), rounds)
    }

    fn short(c: &ChunkPrompt) -> Result<Generation> {
        Ok(Generation {
            text: format!("gist {}\n\ninvented follow-up", c.doc),
            prompt_tokens: words(&c.body)?,
            generated_tokens: 2,
        })
    }

    #[test]
    fn map_reduce_packs_levels_and_keeps_documents_apart() {
        let long: Vec<String> = (0..40)
            .map(|i| format!("sentence {i} has five words"))
            .collect();
        let docs = vec![long, vec!["Short one.".to_string()], vec!["  ".to_string()]];
        let (res, rounds) = run(&docs, 32, short);
        // 40 segments of 5+1 tokens, 32 per chunk: 5 per chunk, 8 chunks.
        let first: Vec<_> = rounds[0].iter().filter(|c| c.doc == 0).collect();
        assert_eq!(first.len(), 8);
        assert_eq!(first[0].stage, Stage::Part(1, 8));
        assert!(rounds[0]
            .iter()
            .any(|c| c.doc == 1 && c.stage == Stage::Whole));
        assert_eq!(rounds[1].len(), 1, "8 gists fit one combining chunk");
        assert_eq!(rounds[1][0].stage, Stage::Combine);
        assert_eq!(rounds[1][0].body.lines().count(), 8);
        let s = res[0].as_ref().unwrap();
        assert_eq!((s.chunks, s.levels, s.text.as_str()), (8, 2, "gist 0"));
        assert_eq!(s.generated_tokens, 9 * 2);
        assert_eq!(res[1].as_ref().unwrap().levels, 1);
        assert!(matches!(res[2], Err(InferenceError::BadOption(_))));
    }

    #[test]
    fn a_failing_chunk_fails_only_its_document() {
        let docs = vec![vec!["a b c".to_string()], vec!["d e f".to_string()]];
        let (res, _) = run(&docs, 32, |c| {
            if c.doc == 0 {
                Err(InferenceError::Model("boom".into()))
            } else {
                short(c)
            }
        });
        assert!(matches!(&res[0], Err(InferenceError::Model(m)) if m == "boom"));
        assert_eq!(res[1].as_ref().unwrap().text, "gist 1");
    }

    #[test]
    fn summaries_that_do_not_shrink_stop_the_loop() {
        let docs = vec![(0..20).map(|i| format!("w{i} x y z")).collect::<Vec<_>>()];
        // Every answer as long as a chunk: combining never gets shorter.
        let (res, rounds) = run(&docs, 40, |c| {
            Ok(Generation {
                text: c.body.replace('\n', " "),
                prompt_tokens: 1,
                generated_tokens: 1,
            })
        });
        assert!(rounds.len() < 10);
        assert!(matches!(&res[0], Err(InferenceError::Model(m)) if m.contains("converge")));
    }

    #[test]
    fn budget_needs_room_for_two_answers() {
        assert_eq!(
            chunk_budget_for(2048, 40, 200, None).unwrap(),
            2048 - 48 - 200
        );
        assert_eq!(chunk_budget_for(2048, 40, 200, Some(500)).unwrap(), 500);
        assert!(matches!(
            chunk_budget_for(500, 40, 200, None),
            Err(InferenceError::BadOption(_))
        ));
        assert!(user_message(Stage::Whole, "body").ends_with("\n\nbody"));
    }

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
