//! The decoding loop, identical for every backend, and what it measures.
//!
//! The token choice is made here, not in the backends, so that every backend is judged on its
//! logits alone: greedy decoding picks the largest logit, and the lowest id wins an exact tie.
//! Timing covers the backend calls and the choice of the token; tokenization happens before and
//! is not timed.

use std::time::{Duration, Instant};

use gpt2_backends::{Engine, EngineError};

/// The greedy choice: index of the largest logit (lowest index on a tie), and the gap between
/// the largest and second-largest logit, which says how close the choice was.
pub fn greedy_choice(logits: &[f32]) -> (u32, f32) {
    let (mut best, mut best_v, mut second_v) = (0usize, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            second_v = best_v;
            best_v = v;
            best = i;
        } else if v > second_v {
            second_v = v;
        }
    }
    (best as u32, best_v - second_v)
}

/// One backend's run: the tokens it produced and how long each part took.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, the first from the prefill's logits.
    pub token_ids: Vec<u32>,
    /// Top-1 minus top-2 logit at each generated token.
    pub top2_gaps: Vec<f32>,
    /// The prefill call plus choosing the first token: the time to first token.
    pub prefill: Duration,
    /// Each decode step (one `step` call plus the choice of its token).
    pub steps: Vec<Duration>,
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

/// Generates `n_new` tokens greedily. `on_token` sees each token as soon as it is chosen
/// (streaming output, progress bars); its time is not counted.
pub fn generate(
    engine: &mut dyn Engine,
    prompt: &[u32],
    n_new: usize,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, EngineError> {
    let mut g = Generation {
        token_ids: Vec::with_capacity(n_new),
        top2_gaps: Vec::with_capacity(n_new),
        prefill: Duration::ZERO,
        steps: Vec::with_capacity(n_new.saturating_sub(1)),
    };
    if n_new == 0 {
        return Ok(g);
    }
    let start = Instant::now();
    let (mut token, gap) = greedy_choice(engine.prefill(prompt)?);
    g.prefill = start.elapsed();
    g.token_ids.push(token);
    g.top2_gaps.push(gap);
    on_token(token);
    for _ in 1..n_new {
        let start = Instant::now();
        let (next, gap) = greedy_choice(engine.step(token)?);
        g.steps.push(start.elapsed());
        token = next;
        g.token_ids.push(token);
        g.top2_gaps.push(gap);
        on_token(token);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_id_wins_a_tie() {
        assert_eq!(greedy_choice(&[1.0, 3.0, 3.0, 2.0]), (1, 0.0));
        assert_eq!(greedy_choice(&[5.0, 1.0, 2.0]), (0, 3.0));
        assert_eq!(greedy_choice(&[-1.0, -0.5]), (1, 0.5));
    }

    #[test]
    fn context_budget() {
        assert_eq!(max_new_tokens(5, 1024), 1020);
        assert_eq!(max_new_tokens(1024, 1024), 1);
    }
}
