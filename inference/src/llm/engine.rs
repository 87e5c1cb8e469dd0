//! Continuous batching: many generations advance together, one forward
//! pass per step.
//!
//! Each step feeds every active sequence: a chunk of its prompt while it is
//! being prefilled (at most `prefill_chunk` prompt tokens per step over all
//! sequences, so a long prompt cannot stall the others for seconds), or its
//! last sampled token. A sequence that finishes leaves at once and the next
//! waiting one takes its place in the following step, so the batch stays
//! full while there is work.

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

use super::model::{SeqCache, SeqStep};
use super::sampling::{Sampler, SamplingParams};
use super::Llm;
use crate::error::InferenceError;

/// One generation to run.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct GenOutput {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Seconds from admission to the first generated token.
    pub first_token_s: f64,
    /// Seconds from admission to the end.
    pub total_s: f64,
}

/// What happened to one request during a step.
#[derive(Debug)]
pub enum Event {
    /// A new token and the text it completed (may be empty while a
    /// multi-byte character or a possible stop string is pending).
    Token {
        id: u64,
        token: u32,
        text: String,
    },
    Done {
        id: u64,
        output: GenOutput,
    },
    Failed {
        id: u64,
        error: InferenceError,
    },
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most prompt tokens fed in one step, over all sequences.
    pub prefill_chunk: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 8,
            prefill_chunk: 512,
        }
    }
}

struct Active {
    id: u64,
    req: GenRequest,
    cache: SeqCache,
    fed: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    /// Bytes of the decoded text already reported in Token events.
    emitted: usize,
    admitted: Instant,
    first_token_s: Option<f64>,
}

/// What a sequence feeds in one step.
#[derive(Clone, Copy)]
enum Feed {
    /// Its prompt, from where it stopped to `to`.
    Prompt { to: usize },
    /// Its last sampled token.
    Last,
}

impl Active {
    /// The tokens the repetition penalty looks at: the last
    /// `repeat_last_n` of prompt and output (none when it is off), without
    /// copying the whole history every step.
    fn recent_tokens(&self) -> Vec<u32> {
        let p = &self.req.params;
        if p.repeat_penalty == 1.0 {
            return Vec::new();
        }
        let (prompt, out) = (&self.req.prompt, &self.generated);
        let from_out = out.len().saturating_sub(p.repeat_last_n);
        let from_prompt = prompt
            .len()
            .saturating_sub(p.repeat_last_n - (out.len() - from_out));
        prompt[from_prompt..]
            .iter()
            .chain(&out[from_out..])
            .copied()
            .collect()
    }
}

/// The continuous-batching scheduler over one model.
pub struct Scheduler<'m> {
    llm: &'m Llm,
    opts: EngineOptions,
    waiting: VecDeque<(u64, GenRequest)>,
    active: Vec<Active>,
    next_id: u64,
    /// Sequences decoded together in the last step (for metrics).
    pub last_batch: usize,
}

impl<'m> Scheduler<'m> {
    pub fn new(llm: &'m Llm, opts: EngineOptions) -> Self {
        Self {
            llm,
            opts: EngineOptions {
                max_batch: opts.max_batch.max(1),
                prefill_chunk: opts.prefill_chunk.max(1),
            },
            waiting: VecDeque::new(),
            active: Vec::new(),
            next_id: 0,
            last_batch: 0,
        }
    }

    /// Queues a request; bad requests are refused here, before any work.
    pub fn submit(&mut self, req: GenRequest) -> Result<u64, InferenceError> {
        req.params.validate()?;
        if req.prompt.is_empty() {
            return Err(InferenceError::BadOption("empty prompt".into()));
        }
        let ctx = self.llm.context_limit();
        let need = req.prompt.len() + req.params.max_new_tokens;
        if need > ctx {
            return Err(InferenceError::BadOption(format!(
                "prompt of {} tokens plus max_new_tokens {} exceeds the context of {ctx} tokens",
                req.prompt.len(),
                req.params.max_new_tokens
            )));
        }
        let vocab = self.llm.model.vocab_size();
        if let Some(bad) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(InferenceError::BadOption(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back((id, req));
        Ok(id)
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.active.is_empty()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Cancels a request (a client went away); true if it was known.
    pub fn cancel(&mut self, id: u64) -> bool {
        let before = self.waiting.len() + self.active.len();
        self.waiting.retain(|(i, _)| *i != id);
        self.active.retain(|a| a.id != id);
        before != self.waiting.len() + self.active.len()
    }

    /// Runs one forward step; returns what happened.
    pub fn step(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while self.active.len() < self.opts.max_batch {
            let Some((id, req)) = self.waiting.pop_front() else {
                break;
            };
            let cap = req.prompt.len() + req.params.max_new_tokens;
            match self.llm.model.new_cache(cap) {
                Ok(cache) => self.active.push(Active {
                    id,
                    sampler: Sampler::new(req.params.clone()),
                    req,
                    cache,
                    fed: 0,
                    generated: Vec::new(),
                    emitted: 0,
                    admitted: Instant::now(),
                    first_token_s: None,
                }),
                Err(error) => events.push(Event::Failed { id, error }),
            }
        }
        if self.active.is_empty() {
            return events;
        }

        // Decide what each sequence feeds this step (None: it sits out,
        // waiting for prefill budget).
        let mut budget = self.opts.prefill_chunk;
        let feeds: Vec<Option<Feed>> = self
            .active
            .iter()
            .map(|a| {
                let left = a.req.prompt.len() - a.fed;
                if left == 0 {
                    Some(Feed::Last)
                } else if budget == 0 {
                    None
                } else {
                    let n = left.min(budget);
                    budget -= n;
                    Some(Feed::Prompt { to: a.fed + n })
                }
            })
            .collect();
        // Indices (into `active`) of the sequences in the step, and whether
        // each gets logits back.
        let mut stepped: Vec<(usize, bool)> = Vec::new();
        let result = {
            let mut steps = Vec::new();
            for (i, (a, feed)) in self.active.iter_mut().zip(&feeds).enumerate() {
                let Some(feed) = feed else { continue };
                let Active {
                    req,
                    cache,
                    generated,
                    fed,
                    ..
                } = a;
                let (tokens, logits): (&[u32], bool) = match *feed {
                    Feed::Last => (
                        std::slice::from_ref(generated.last().expect("decoding after a token")),
                        true,
                    ),
                    Feed::Prompt { to } => (&req.prompt[*fed..to], to == req.prompt.len()),
                };
                stepped.push((i, logits));
                steps.push(SeqStep {
                    tokens,
                    cache,
                    logits,
                });
            }
            self.llm.model.forward(&mut steps)
        };
        self.last_batch = stepped.len();
        let logits = match result {
            Ok(x) => x,
            Err(error) => {
                // A failed step leaves the caches inconsistent: fail every
                // sequence in it (the caller decides whether to retry).
                let mut keep = Vec::new();
                for (a, feed) in std::mem::take(&mut self.active).into_iter().zip(&feeds) {
                    if feed.is_some() {
                        events.push(Event::Failed {
                            id: a.id,
                            error: error.clone(),
                        });
                    } else {
                        keep.push(a);
                    }
                }
                self.active = keep;
                return events;
            }
        };
        for (a, feed) in self.active.iter_mut().zip(&feeds) {
            if let Some(Feed::Prompt { to }) = feed {
                a.fed = *to;
            }
        }
        let rows = match logits.map(|l| l.to_vec2::<f32>()) {
            Some(Ok(rows)) => rows,
            Some(Err(e)) => {
                let error = InferenceError::from(e);
                for a in std::mem::take(&mut self.active) {
                    events.push(Event::Failed {
                        id: a.id,
                        error: error.clone(),
                    });
                }
                return events;
            }
            None => Vec::new(),
        };
        let mut rows = rows.into_iter();
        let mut finished = Vec::new();
        for &(i, has) in &stepped {
            if !has {
                continue;
            }
            let Some(mut row) = rows.next() else { break };
            let a = &mut self.active[i];
            for &id in self.llm.suppressed_ids() {
                if let Some(l) = row.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            let tok = a.sampler.sample(&mut row, &a.recent_tokens());
            if a.first_token_s.is_none() {
                a.first_token_s = Some(a.admitted.elapsed().as_secs_f64());
            }
            if self.llm.is_stop_token(tok) && !a.req.params.ignore_eos {
                finished.push((i, FinishReason::Stop, None));
                continue;
            }
            a.generated.push(tok);
            let text = self.llm.tokenizer.decode(&a.generated, true);
            if let Some(cut) = find_stop(&text, &a.req.params.stop) {
                finished.push((i, FinishReason::Stop, Some(cut)));
                continue;
            }
            // Report text up to a point no stop string can still start at,
            // and never half a character.
            let mut safe = text.len();
            for s in &a.req.params.stop {
                for k in (1..s.len()).rev() {
                    if text.ends_with(&s[..k]) && s.is_char_boundary(k) {
                        safe = safe.min(text.len() - k);
                        break;
                    }
                }
            }
            if text.ends_with('\u{FFFD}') {
                safe = safe.min(text.len() - '\u{FFFD}'.len_utf8());
            }
            let delta = if safe > a.emitted {
                let d = text[a.emitted..safe].to_owned();
                a.emitted = safe;
                d
            } else {
                String::new()
            };
            events.push(Event::Token {
                id: a.id,
                token: tok,
                text: delta,
            });
            if a.generated.len() >= a.req.params.max_new_tokens {
                finished.push((i, FinishReason::Length, None));
            }
        }
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (i, finish, cut) in finished {
            let a = self.active.remove(i);
            let mut text = self.llm.tokenizer.decode(&a.generated, true);
            if let Some(cut) = cut {
                text.truncate(cut);
            }
            events.push(Event::Done {
                id: a.id,
                output: GenOutput {
                    text,
                    tokens: a.generated,
                    finish,
                    prompt_tokens: a.req.prompt.len(),
                    first_token_s: a.first_token_s.unwrap_or_default(),
                    total_s: a.admitted.elapsed().as_secs_f64(),
                },
            });
        }
        events
    }
}

/// Byte offset of the earliest stop string in `text`.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Runs `reqs` to completion through one scheduler; results in input order.
/// `on_event` sees every event (for progress or streaming).
pub fn generate_all(
    llm: &Llm,
    reqs: Vec<GenRequest>,
    opts: EngineOptions,
    mut on_event: impl FnMut(usize, &Event),
) -> Vec<Result<GenOutput, InferenceError>> {
    let n = reqs.len();
    let mut out: Vec<Option<Result<GenOutput, InferenceError>>> = (0..n).map(|_| None).collect();
    let mut sched = Scheduler::new(llm, opts);
    let mut index = std::collections::HashMap::new();
    for (i, r) in reqs.into_iter().enumerate() {
        match sched.submit(r) {
            Ok(id) => {
                index.insert(id, i);
            }
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    while !sched.is_idle() {
        for ev in sched.step() {
            let (id, ended) = match &ev {
                Event::Token { id, .. } => (*id, None),
                Event::Done { id, output } => (*id, Some(Ok(output.clone()))),
                Event::Failed { id, error } => (*id, Some(Err(error.clone()))),
            };
            let i = index[&id];
            on_event(i, &ev);
            if let Some(r) = ended {
                out[i] = Some(r);
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(InferenceError::Model("generation was dropped".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::find_stop;

    #[test]
    fn earliest_stop_wins() {
        let stops = vec!["\n\n".to_owned(), "END".to_owned()];
        assert_eq!(find_stop("abc END x\n\n", &stops), Some(4));
        assert_eq!(find_stop("abc", &stops), None);
    }
}
