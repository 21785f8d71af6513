//! How far the outputs of one weight file are from another's: the agreement half of a precision
//! comparison (`compare --model gpt2.bin,gpt2-f16.bin,gpt2-q8_0.bin`), beside the speed half.
//!
//! Both files see the same context: the prompt followed by the tokens the reference file
//! generated greedily, fed one position at a time (teacher forcing), so every position's
//! next-token distribution can be compared, not just the ones before the first differing token.
//! Per file against the reference:
//!
//! - **top-1 agreement**: the share of positions whose most likely next token is the same;
//! - **KL divergence** `KL(p_ref || p_file) = sum p_ref (log p_ref - log p_file)` of the
//!   next-token distributions (softmax of the logits, in f64), its mean and maximum over the
//!   positions, in nats;
//! - **first greedy difference**: the first generated step at which free-running greedy decoding
//!   of the file picks another token than the reference file did (from the timed runs).
//!
//! The logits come from one backend (`simd-kv` when this build has it: the cheapest per
//! position); within each file every backend's tokens are checked equal anyway. A file against
//! itself gives 100% and a KL of exactly 0: the same backend on the same weights computes the
//! same logits, and both sides go through the same arithmetic.

use gpt2_backends::EngineOptions;
use gpt2_weights::WeightFile;

use crate::record::file_name;
use serde::{Deserialize, Serialize};

/// One file's agreement with the reference file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agreement {
    /// The file compared, its dtype label and weight bytes per decode step.
    pub model_file: String,
    pub dtype: String,
    pub weight_bytes_per_token: u64,
    /// The reference file (the first `--model`) and its dtype label.
    pub reference_file: String,
    pub reference_dtype: String,
    /// The backend whose logits were compared.
    pub backend: String,
    /// The prompt's length; the context is the prompt, then the reference's generated tokens.
    pub prompt_tokens: usize,
    /// Positions whose next-token distributions were compared.
    pub positions: usize,
    /// Share of positions with the same most likely next token (ties: the lowest id).
    pub top1_agreement: f64,
    /// Mean and largest `KL(p_ref || p_file)` over the positions, nats.
    pub mean_kl: f64,
    pub max_kl: f64,
    /// Tokens generated greedily in the timed runs, and the first step (0-based) at which this
    /// file's differ from the reference file's (`None`: identical).
    pub greedy_tokens: usize,
    pub first_greedy_difference: Option<usize>,
}

/// The backend that computes the logits: `simd-kv` when this build has it, else `fallback`.
pub fn backend(fallback: &str) -> String {
    if gpt2_backends::backend_names().contains(&"simd-kv") {
        "simd-kv".to_string()
    } else {
        fallback.to_string()
    }
}

/// The logits at every position of `context`, fed one token at a time: `context.len()` rows of
/// the vocabulary's size.
pub fn teacher_forced_logits(
    file: &WeightFile,
    backend: &str,
    options: &EngineOptions,
    context: &[u32],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let weights = file.gpt2()?;
    let mut engine = gpt2_backends::create(backend, &weights, options)?;
    let mut rows = Vec::with_capacity(context.len());
    rows.push(engine.prefill(&context[..1])?.to_vec());
    for &t in &context[1..] {
        rows.push(engine.step(t)?.to_vec());
    }
    Ok(rows)
}

/// What both sides are fed: the prompt, then the reference's generated tokens but the last
/// (the distribution after it is compared with nothing).
pub fn context(prompt: &[u32], generated: &[u32]) -> Vec<u32> {
    let mut context = prompt.to_vec();
    context.extend(&generated[..generated.len().saturating_sub(1)]);
    context
}

/// The reference side of an agreement: its file and dtype label, its logits at every position
/// of `context`, the prompt's length and the tokens it generated.
pub struct Reference<'a> {
    pub file: &'a WeightFile,
    pub dtype: &'a str,
    pub logits: &'a [Vec<f32>],
    pub context: &'a [u32],
    pub prompt_tokens: usize,
    pub generated: &'a [u32],
}

/// `file` on `backend` against `reference`, teacher-forced over the reference's context;
/// `tokens` are its own greedy tokens, for the first difference.
pub fn against(
    reference: &Reference<'_>,
    (file, backend): (&WeightFile, &str),
    options: &EngineOptions,
    tokens: &[u32],
) -> anyhow::Result<Agreement> {
    let got = teacher_forced_logits(file, backend, options, reference.context)?;
    let (top1_agreement, mean_kl, max_kl) = compare_logits(reference.logits, &got);
    Ok(Agreement {
        model_file: file_name(file.path()),
        dtype: file.gpt2()?.dtype_label(),
        weight_bytes_per_token: file.bytes_per_token(),
        reference_file: file_name(reference.file.path()),
        reference_dtype: reference.dtype.to_string(),
        backend: backend.to_string(),
        prompt_tokens: reference.prompt_tokens,
        positions: reference.context.len(),
        top1_agreement,
        mean_kl,
        max_kl,
        greedy_tokens: reference.generated.len(),
        first_greedy_difference: first_difference(reference.generated, tokens),
    })
}

/// A backend's agreement with the reference backend on the same file: the row of a backend
/// judged by its agreement (`different rule`: llama.cpp), whose tokens may part from the
/// reference's (`reference_tokens`); `tokens` are the backend's own.
pub fn backend_agreement(
    file: &WeightFile,
    (reference, backend): (&str, &str),
    options: &EngineOptions,
    prompt: &[u32],
    (reference_tokens, tokens): (&[u32], &[u32]),
) -> anyhow::Result<Agreement> {
    let context = context(prompt, reference_tokens);
    let logits = teacher_forced_logits(file, reference, options, &context)?;
    let dtype = file.gpt2()?.dtype_label();
    let reference = Reference {
        file,
        dtype: &dtype,
        logits: &logits,
        context: &context,
        prompt_tokens: prompt.len(),
        generated: reference_tokens,
    };
    against(&reference, (file, backend), options, tokens)
}

/// `log softmax(logits)` in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let sum: f64 = logits.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    let log_sum = sum.ln() + max;
    logits.iter().map(|&v| f64::from(v) - log_sum).collect()
}

/// Index of the largest logit; the lowest index wins a tie (the harness's greedy rule).
fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// `KL(p || q)` from log-probabilities, nats.
fn kl(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p
        .iter()
        .zip(log_q)
        .map(|(&lp, &lq)| lp.exp() * (lp - lq))
        .sum::<f64>()
        .max(0.0)
}

/// (top-1 agreement, mean KL, max KL) of `got` against `reference`, position by position.
pub fn compare_logits(reference: &[Vec<f32>], got: &[Vec<f32>]) -> (f64, f64, f64) {
    assert_eq!(
        reference.len(),
        got.len(),
        "compare_logits: positions differ"
    );
    let (mut same, mut sum, mut max) = (0usize, 0.0f64, 0.0f64);
    for (r, g) in reference.iter().zip(got) {
        same += usize::from(argmax(r) == argmax(g));
        let d = kl(&log_softmax(r), &log_softmax(g));
        sum += d;
        max = max.max(d);
    }
    let n = reference.len().max(1) as f64;
    (same as f64 / n, sum / n, max)
}

/// The first index where two token sequences differ, over their common length.
pub fn first_difference(reference: &[u32], got: &[u32]) -> Option<usize> {
    reference.iter().zip(got).position(|(a, b)| a != b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_a_distribution_with_itself_is_zero_and_positive_otherwise() {
        let a = vec![vec![1.0f32, 2.0, 3.0, -1.0], vec![0.0, 0.0, 5.0, 1.0]];
        assert_eq!(compare_logits(&a, &a), (1.0, 0.0, 0.0));
        let mut b = a.clone();
        b[1][3] = 6.0; // the second position's top-1 changes
        let (top1, mean, max) = compare_logits(&a, &b);
        assert_eq!(top1, 0.5);
        assert!(mean > 0.0 && max >= mean, "{mean} {max}");
    }

    /// KL of two known distributions, computed by hand: p = (1/2, 1/2), q = (1/4, 3/4):
    /// 1/2 ln(2) + 1/2 ln(2/3).
    #[test]
    fn kl_matches_a_hand_computation() {
        let p = vec![vec![0.0f32, 0.0]];
        let q = vec![vec![0.0f32, 3f32.ln()]];
        let (_, mean, _) = compare_logits(&p, &q);
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((mean - want).abs() < 1e-7, "{mean} vs {want}");
    }

    #[test]
    fn first_difference_of_token_sequences() {
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
    }
}
