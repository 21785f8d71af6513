//! The synthetic models are built to be a demanding equivalence test (see
//! gpt2_export::synthetic): greedy decoding must be decisive and must depend on the context.

mod common;

use common::*;
use gpt2_backends::Forward;
use gpt2_backends::naive::NaiveEngine;
use gpt2_weights::Config;

const N: usize = 32;

fn check_decisive_and_varied(file: &gpt2_weights::WeightFile) {
    let w = file.gpt2().unwrap();
    let mut e = NaiveEngine::new(w).into_engine();
    let prompt = [464, 3616, 286, 1204, 318]; // "The meaning of life is"
    let (tokens, gaps) = greedy(&mut e, &prompt, N);

    // Backends differ by ~1e-5 per logit (see equivalence.rs); the smallest gap of 32 random
    // draws is necessarily small, the typical one must be large.
    let min_gap = gaps.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!(
        min_gap > 1e-3,
        "smallest top-1/top-2 gap {min_gap} is too close to a tie"
    );
    let mut sorted = gaps.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        median > 0.5,
        "median top-1/top-2 gap {median} is not decisive"
    );

    let mut distinct = tokens.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() >= N / 2,
        "only {} distinct tokens in {tokens:?}",
        distinct.len()
    );

    // Not an echo: the next token is rarely the token just fed in.
    let mut fed = vec![*prompt.last().unwrap()];
    fed.extend_from_slice(&tokens[..N - 1]);
    let echoes = fed.iter().zip(&tokens).filter(|(a, b)| a == b).count();
    assert!(echoes <= 2, "{echoes} echoes in {tokens:?}");

    // The whole context matters: change only the first prompt token.
    let mut other = prompt;
    other[0] = 1212;
    let (tokens_other, _) = greedy(&mut e, &other, 8);
    assert_ne!(
        tokens[..8],
        tokens_other[..],
        "continuation ignores the start of the prompt"
    );
}

#[test]
fn tiny_is_decisive_and_varied() {
    let tmp = tempfile::tempdir().unwrap();
    check_decisive_and_varied(&tiny(tmp.path()));
}

#[test]
fn twelve_layer_model_is_decisive_and_varied() {
    // GPT-2 small's depth and head count at a quarter of its width, to keep the test quick.
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        n_layer: 12,
        n_head: 12,
        n_embd: 192,
        vocab_size: 50257,
        n_ctx: 64,
        mlp_hidden: 768,
        layer_norm_eps: 1e-5,
        tied_output: true,
    };
    check_decisive_and_varied(&synthetic(tmp.path(), config, "twelve-layers", 9));
}

/// Correct backends must stay close at long contexts too: a synthetic model in a chaotic regime
/// (much sharper attention was tried) amplifies rounding differences with depth and context
/// length until greedy choices flip. 12 layers, 200 positions.
#[test]
fn rounding_differences_do_not_grow_with_context() {
    use gpt2_backends::{EngineOptions, create};
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        n_layer: 12,
        n_head: 12,
        n_embd: 192,
        vocab_size: 50257,
        n_ctx: 256,
        mlp_hidden: 768,
        layer_norm_eps: 1e-5,
        tied_output: true,
    };
    let f = synthetic(tmp.path(), config, "long-context", 3);
    let w = f.gpt2().unwrap();
    let prompt: Vec<u32> = (0..200u32).map(|i| i * 7919 % 50000).collect();
    let opts = EngineOptions::default();
    let want = create("naive", &w, &opts)
        .unwrap()
        .prefill(&prompt)
        .unwrap()
        .to_vec();
    // Every target but the two that recompute with naive's or simd-kv's arithmetic anyway.
    for target in targets()
        .into_iter()
        .filter(|t| !t.is_naive_on_cpu() && t.backend != "simd")
    {
        let name = target.label();
        let got = target.create(&w).prefill(&prompt).unwrap().to_vec();
        let diff = max_abs_diff(&got, &want);
        // A backend whose arithmetic differs by construction (llama.cpp) is held to its own.
        let limit = gpt2_backends::registry::spec(target.backend)
            .and_then(|s| s.logit_tolerance)
            .unwrap_or(1e-3);
        assert!(
            diff < limit,
            "{name}: logits differ from naive by {diff} at 200 positions"
        );
    }
}
