//! Helpers shared by the backend tests: synthetic models in a temporary directory, greedy decoding.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gpt2_backends::Engine;
use gpt2_export::SyntheticSize;
use gpt2_weights::{Config, WeightFile};

/// The `tiny` synthetic model: n_embd 60, head size 15 (neither a multiple of 8).
pub fn tiny(dir: &Path) -> WeightFile {
    let path = dir.join("tiny.bin");
    gpt2_export::synthetic::export_synthetic(SyntheticSize::Tiny, 1, &path, &|_, _| {}).unwrap();
    WeightFile::open_verified(&path).unwrap()
}

/// An odd shape: n_embd 35, 5 heads of 7 (not multiples of 8 or 4), untied output layer.
pub fn odd_config() -> Config {
    Config {
        n_layer: 2,
        n_head: 5,
        n_embd: 35,
        vocab_size: 50257,
        n_ctx: 40,
        mlp_hidden: 140,
        layer_norm_eps: 1e-5,
        tied_output: false,
    }
}

pub fn synthetic(dir: &Path, config: Config, name: &str, seed: u64) -> WeightFile {
    let path: PathBuf = dir.join(format!("{name}.bin"));
    gpt2_export::synthetic::write_synthetic(config, name, seed, &path, &|_, _| {}).unwrap();
    WeightFile::open_verified(&path).unwrap()
}

/// Index of the largest logit; the lowest index wins a tie (the harness's rule).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Gap between the largest and second-largest logit.
pub fn top2_gap(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in logits {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// Greedy decoding of `n` tokens; returns the tokens and each step's top-2 gap.
pub fn greedy(engine: &mut dyn Engine, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut logits = engine.prefill(prompt).unwrap().to_vec();
    let (mut out, mut gaps) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = argmax(&logits);
        out.push(t);
        gaps.push(top2_gap(&logits));
        if i + 1 < n {
            logits = engine.step(t).unwrap().to_vec();
        }
    }
    (out, gaps)
}

/// Largest absolute difference between two logit vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
