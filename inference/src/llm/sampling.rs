//! Token selection: greedy at temperature 0, else repetition penalty, top-k,
//! top-p and temperature, from a per-sequence seeded RNG so a request's
//! output does not depend on what else is in its batch.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::InferenceError;

/// Generation settings of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 selects the most likely token every step (deterministic).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability
    /// reaches `top_p` (1 disables).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 disables).
    pub top_k: usize,
    /// > 1 discourages tokens seen in the last `repeat_last_n` (1 disables).
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Keep going past end-of-turn tokens (benchmarks: fixed lengths).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            max_new_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), InferenceError> {
        let bad = |m: String| Err(InferenceError::BadOption(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop strings must not be empty".into());
        }
        Ok(())
    }
}

/// Picks tokens for one sequence.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Chooses the next token from `logits`, given the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repeat_penalty != 1.0 {
            let from = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = history[from..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(logits);
        }
        // Candidates. Without top-k/top-p every token is one (no sort: a
        // 262k-token vocabulary made sorting the per-token cost). For top-p
        // alone, tokens 20 nats below the best (probability ratio < 2e-9)
        // cannot change which tokens reach the mass; they are left out.
        let floor = if p.top_k == 0 && p.top_p < 1.0 {
            max - 20.0 * p.temperature
        } else {
            f32::NEG_INFINITY
        };
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite() && **l >= floor)
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            cand.truncate(p.top_k);
        }
        if p.top_p < 1.0 || p.top_k > 0 {
            cand.sort_unstable_by(by_logit);
        }
        let mut probs: Vec<f32> = cand
            .iter()
            .map(|&(_, l)| ((l - max) / p.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, &pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.gen::<f32>() * total;
        for (i, &pr) in probs.iter().enumerate() {
            if r < pr {
                return cand[i].0;
            }
            r -= pr;
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest logit (the first on ties, like llama.cpp).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut bv = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > bv {
            bv = l;
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_the_max_and_penalty_moves_it() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1.5,
            ..params(0.0)
        });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.0)
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5, 0.9], &[]), 1);
        }
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            });
            (0..32)
                .map(|_| s.sample(&mut [0.0, 0.1, 0.2, 0.3, 0.4], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // One token holds ~88% of the mass; top_p 0.5 keeps only it.
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            seed: 3,
            ..params(1.0)
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.0, 3.0, 0.0, 0.0], &[]), 1);
        }
    }

    #[test]
    fn invalid_params_are_rejected() {
        for p in [
            params(-1.0),
            SamplingParams {
                top_p: 0.0,
                ..params(1.0)
            },
            SamplingParams {
                max_new_tokens: 0,
                ..params(1.0)
            },
            SamplingParams {
                stop: vec![String::new()],
                ..params(1.0)
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..params(1.0)
            },
        ] {
            assert!(
                matches!(p.validate(), Err(InferenceError::BadOption(_))),
                "{p:?}"
            );
        }
        params(0.7).validate().unwrap();
    }
}
