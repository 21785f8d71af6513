//! The decoding loop, identical for every backend, and what it measures.
//!
//! The token choice is made here, not in the backends (see [`crate::sampling`]), so that every
//! backend is judged on its logits alone. Timing covers the backend calls and the choice of the
//! token; tokenization happens before and is not timed.

use std::time::{Duration, Instant};

use gpt2_backends::engine::check_finite;
use gpt2_backends::profile::OpTimes;
use gpt2_backends::{Engine, EngineError};

use crate::sampling::{Sampler, SamplingOptions};

/// One backend's run: the tokens it produced and how long each part took.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, the first from the prefill's logits.
    pub token_ids: Vec<u32>,
    /// Top-1 minus top-2 logit at each generated token.
    pub top2_gaps: Vec<f32>,
    /// The largest |logit| at each generated token (how large the logits were).
    pub logit_magnitudes: Vec<f32>,
    /// The prefill call plus choosing the first token: the time to first token.
    pub prefill: Duration,
    /// Each decode step (one `step` call plus the choice of its token).
    pub steps: Vec<Duration>,
    /// Of those times, choosing the tokens (greedy or sampling): prefill's one, and all steps'.
    pub prefill_choice: Duration,
    pub decode_choice: Duration,
    /// Per-operation times of the prefill and of all decode steps, when the engine's profiling
    /// is on (`Engine::set_profiling`).
    pub prefill_ops: Option<OpTimes>,
    pub decode_ops: Option<OpTimes>,
}

impl Generation {
    pub fn decode_total(&self) -> Duration {
        self.steps.iter().sum()
    }
}

/// How many tokens can be generated after a prompt of `prompt_len` in a context of `n_ctx`:
/// the prefill yields one, then each step feeds one token into a free position.
pub fn max_new_tokens(prompt_len: usize, n_ctx: usize) -> usize {
    n_ctx.saturating_sub(prompt_len) + 1
}

/// Generates up to `n_new` tokens, chosen by a fresh [`Sampler`] with `sampling` (so every run
/// and every backend draws from the same seed). Stops early after `stop_at` (the end-of-text
/// token) when given. `on_token` sees each token as soon as it is chosen (streaming output,
/// progress bars); its time is not counted.
pub fn generate(
    engine: &mut dyn Engine,
    prompt: &[u32],
    n_new: usize,
    sampling: SamplingOptions,
    stop_at: Option<u32>,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, EngineError> {
    let mut sampler = Sampler::new(sampling);
    let mut g = Generation {
        token_ids: Vec::with_capacity(n_new),
        top2_gaps: Vec::with_capacity(n_new),
        logit_magnitudes: Vec::with_capacity(n_new),
        prefill: Duration::ZERO,
        steps: Vec::with_capacity(n_new.saturating_sub(1)),
        prefill_choice: Duration::ZERO,
        decode_choice: Duration::ZERO,
        prefill_ops: None,
        decode_ops: None,
    };
    if n_new == 0 {
        return Ok(g);
    }
    let start = Instant::now();
    let name = engine.name();
    let logits = engine.prefill(prompt)?;
    // Checked before the choice (a NaN would choose id 0): ~10 µs against a step's milliseconds.
    check_finite(name, 0, logits)?;
    let choice = Instant::now();
    let first = sampler.choose(logits);
    let mut token = first.token;
    g.prefill = start.elapsed();
    g.prefill_choice = choice.elapsed();
    g.prefill_ops = engine.take_profile();
    g.token_ids.push(token);
    g.top2_gaps.push(first.top2_gap);
    g.logit_magnitudes.push(first.logit_magnitude);
    on_token(token);
    for _ in 1..n_new {
        if Some(token) == stop_at {
            break;
        }
        let start = Instant::now();
        let logits = engine.step(token)?;
        check_finite(name, g.token_ids.len(), logits)?;
        let choice = Instant::now();
        let next = sampler.choose(logits);
        g.steps.push(start.elapsed());
        g.decode_choice += choice.elapsed();
        if let Some(ops) = engine.take_profile() {
            g.decode_ops.get_or_insert_with(OpTimes::default).add(&ops);
        }
        token = next.token;
        g.token_ids.push(token);
        g.top2_gaps.push(next.top2_gap);
        g.logit_magnitudes.push(next.logit_magnitude);
        on_token(token);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prefers token `pos % 4` at every position: ..., 3, 0, 1, ...
    struct Counter {
        logits: Vec<f32>,
        pos: usize,
        profiler: gpt2_backends::profile::Profiler,
    }

    impl Counter {
        fn out(&mut self) -> &[f32] {
            self.logits.iter_mut().for_each(|v| *v = 0.0);
            self.logits[self.pos % 4] = 10.0;
            &self.logits
        }
    }

    impl Engine for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn info(&self) -> gpt2_backends::EngineInfo {
            unimplemented!("not needed by generate")
        }
        fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], EngineError> {
            self.pos = tokens.len();
            Ok(self.out())
        }
        fn step(&mut self, _token: u32) -> Result<&[f32], EngineError> {
            self.pos += 1;
            Ok(self.out())
        }
        fn reset(&mut self) {
            self.pos = 0;
        }
        fn position(&self) -> usize {
            self.pos
        }
        fn profiler(&mut self) -> &mut gpt2_backends::profile::Profiler {
            &mut self.profiler
        }
    }

    #[test]
    fn stops_after_the_stop_token_only_when_asked() {
        let mut e = Counter {
            logits: vec![0.0; 8],
            pos: 0,
            profiler: Default::default(),
        };
        let greedy = SamplingOptions::default();
        let g = generate(&mut e, &[5, 5], 10, greedy, Some(0), |_| {}).unwrap();
        assert_eq!(
            g.token_ids,
            [2, 3, 0],
            "stops right after emitting the stop token"
        );
        assert_eq!(g.steps.len(), 2);
        let g = generate(&mut e, &[5, 5], 10, greedy, None, |_| {}).unwrap();
        assert_eq!(g.token_ids.len(), 10);
    }

    #[test]
    fn context_budget() {
        assert_eq!(max_new_tokens(5, 1024), 1020);
        assert_eq!(max_new_tokens(1024, 1024), 1);
    }
}
