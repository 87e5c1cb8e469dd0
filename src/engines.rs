//! The loaded engines and their batch entry points. The queue worker (and
//! the HTTP server) hand whole batches of independent requests here; the
//! requests that share settings go through one `transcribe_batch` (audio
//! windows of many jobs in one encoder pass) or one `summarize_many` (many
//! sequences in one decode step).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use earshot_inference::device::{self, DeviceKind};
use earshot_inference::error::InferenceError;
use earshot_inference::llm::summarize::{summarize_many, Summary};
use earshot_inference::llm::Llm;
use earshot_inference::whisper::{TranscribeOptions, Transcript, Whisper};

use crate::summarize::LlmArgs;

/// One transcription request inside a batch.
pub struct SpeechRequest<'a> {
    pub samples: &'a [f32],
    /// Whisper model name; the default model when `None`.
    pub model: Option<&'a str>,
    pub language: Option<&'a str>,
    pub prompt: Option<&'a str>,
}

/// One summarization request inside a batch.
pub struct SummaryRequest<'a> {
    pub segments: &'a [String],
    /// LLM name; the served LLM when `None`.
    pub model: Option<&'a str>,
    pub max_tokens: Option<usize>,
}

pub struct Engines {
    /// (name as configured, model); the first is the default.
    whisper: Vec<(String, Whisper)>,
    llm: Option<(String, Llm)>,
    llm_args: LlmArgs,
    /// Audio windows per Whisper batch.
    pub max_batch: usize,
    /// Seconds each model took to load, by model name.
    pub load_seconds: BTreeMap<String, f64>,
}

impl Engines {
    /// Loads every listed Whisper model and, when `with_llm`, the LLM.
    pub fn load(
        whisper_models: &[String],
        llm_args: &LlmArgs,
        with_llm: bool,
        max_batch: usize,
    ) -> Result<Self> {
        let kind: DeviceKind = llm_args.device.parse()?;
        let dev = device::open(kind, 0)?;
        let mut load_seconds = BTreeMap::new();
        let mut whisper = Vec::new();
        for name in whisper_models {
            let t = Instant::now();
            let w = Whisper::load(name, &dev)
                .with_context(|| format!("loading Whisper model {name:?}"))?;
            load_seconds.insert(name.clone(), t.elapsed().as_secs_f64());
            whisper.push((name.clone(), w));
        }
        anyhow::ensure!(!whisper.is_empty(), "no Whisper model configured");
        let llm = if with_llm {
            let (llm, secs) = llm_args.load()?;
            load_seconds.insert(llm_args.llm_model.clone(), secs);
            Some((llm_args.llm_model.clone(), llm))
        } else {
            None
        };
        Ok(Engines {
            whisper,
            llm,
            llm_args: llm_args.clone(),
            max_batch: max_batch.max(1),
            load_seconds,
        })
    }

    /// Whisper model names this process serves (default first).
    pub fn whisper_names(&self) -> Vec<&str> {
        self.whisper.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The LLM this process serves, if any.
    pub fn llm_name(&self) -> Option<&str> {
        self.llm.as_ref().map(|(n, _)| n.as_str())
    }

    fn whisper_index(&self, model: Option<&str>) -> Result<usize, InferenceError> {
        let Some(want) = model else { return Ok(0) };
        self.whisper
            .iter()
            .position(|(n, w)| n == want || w.name == want)
            .ok_or_else(|| {
                InferenceError::BadOption(format!(
                    "Whisper model {want:?} is not served here (serving: {})",
                    self.whisper_names().join(", ")
                ))
            })
    }

    fn llm_for(&self, model: Option<&str>) -> Result<&Llm, InferenceError> {
        let (name, llm) = self
            .llm
            .as_ref()
            .ok_or_else(|| InferenceError::BadOption("summarization is not enabled here".into()))?;
        match model {
            Some(want) if want != name && want != llm.name => Err(InferenceError::BadOption(
                format!("LLM {want:?} is not served here (serving: {name})"),
            )),
            _ => Ok(llm),
        }
    }

    /// Transcribes a batch; requests with the same model, language and
    /// prompt decode together. Results come back in request order.
    pub fn transcribe_many(
        &self,
        reqs: &[SpeechRequest<'_>],
    ) -> Vec<Result<Transcript, InferenceError>> {
        let mut out: Vec<Option<Result<Transcript, InferenceError>>> =
            reqs.iter().map(|_| None).collect();
        // (model index, language, prompt) → request indices.
        type Key<'r> = (usize, Option<&'r str>, Option<&'r str>);
        let mut groups: BTreeMap<Key<'_>, Vec<usize>> = BTreeMap::new();
        for (i, r) in reqs.iter().enumerate() {
            match self.whisper_index(r.model) {
                Ok(m) => groups.entry((m, r.language, r.prompt)).or_default().push(i),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for ((m, language, prompt), idx) in groups {
            let opts = TranscribeOptions {
                language: language.map(str::to_owned),
                initial_prompt: prompt.map(str::to_owned),
                max_batch: self.max_batch,
                ..Default::default()
            };
            let inputs: Vec<&[f32]> = idx.iter().map(|&i| reqs[i].samples).collect();
            let results = self.whisper[m].1.transcribe_batch(&inputs, &opts, None);
            for (i, r) in idx.into_iter().zip(results) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(InferenceError::Model("no transcript produced".into())))
            })
            .collect()
    }

    /// Summarizes a batch; requests with the same model and token limit
    /// share decode steps. A transcript with no words gets an empty
    /// summary, not an error.
    pub fn summarize_many(
        &self,
        reqs: &[SummaryRequest<'_>],
    ) -> Vec<Result<Summary, InferenceError>> {
        let mut out: Vec<Option<Result<Summary, InferenceError>>> =
            reqs.iter().map(|_| None).collect();
        let mut groups: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
        let mut llm = None;
        for (i, r) in reqs.iter().enumerate() {
            if r.segments.iter().all(|s| s.trim().is_empty()) {
                out[i] = Some(Ok(crate::summarize::empty_summary()));
                continue;
            }
            match self.llm_for(r.model) {
                Ok(l) => {
                    llm = Some(l);
                    groups.entry(r.max_tokens).or_default().push(i);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if let Some(llm) = llm {
            for (max_tokens, idx) in groups {
                let mut opts = self.llm_args.summary_options();
                if let Some(n) = max_tokens {
                    opts.max_tokens = n;
                }
                let docs: Vec<Vec<String>> =
                    idx.iter().map(|&i| reqs[i].segments.to_vec()).collect();
                for (i, r) in idx.into_iter().zip(summarize_many(llm, &docs, &opts)) {
                    out[i] = Some(r);
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(InferenceError::Model("no summary produced".into()))))
            .collect()
    }
}
