//! `candle` on a CUDA GPU against `naive` on the CPU: the same checks the CPU backends pass
//! (logits after prefill and after each decode step, reset, the context limit, the golden
//! transformers fixture, long-context drift), run on the GPU.
//!
//! Compiled only with the `cuda` feature, so `cargo test --workspace` (CI, no GPU) skips this
//! file. On a machine with a GPU and the CUDA toolkit:
//!
//! ```sh
//! cargo test -p gpt2-backends --features cuda --test cuda
//! ```
//!
//! Without a usable GPU these tests fail with candle's device error: asking for the CUDA tests
//! is asking for a GPU, so they never pass vacuously. `GPT2_BENCH_CUDA_DEVICE=N` picks the
//! ordinal (default 0).
#![cfg(feature = "cuda")]

mod common;

use std::path::PathBuf;

use common::*;
use gpt2_backends::{DeviceChoice, Engine, EngineOptions, LOGIT_TOLERANCE, create};
use gpt2_export::golden::Golden;
use gpt2_weights::{Config, WeightFile};

const DECODE_STEPS: usize = 6;

fn gpu() -> DeviceChoice {
    let ordinal = std::env::var("GPT2_BENCH_CUDA_DEVICE")
        .ok()
        .map(|s| {
            s.parse()
                .expect("GPT2_BENCH_CUDA_DEVICE must be a GPU ordinal")
        })
        .unwrap_or(0);
    DeviceChoice::Cuda(ordinal)
}

fn gpu_options() -> EngineOptions {
    EngineOptions {
        device: gpu(),
        ..EngineOptions::default()
    }
}

fn candle_on_gpu<'w>(w: &gpt2_weights::Gpt2Weights<'w>) -> Box<dyn Engine + 'w> {
    create("candle", w, &gpu_options()).unwrap_or_else(|e| panic!("candle on {}: {e}", gpu()))
}

/// Prefill and `DECODE_STEPS` greedy steps on naive (CPU) and candle (GPU), twice on the GPU
/// engine with a reset between, comparing every logit vector.
fn check_against_naive(file: &WeightFile, prompt: &[u32]) {
    let w = file.gpt2().unwrap();
    let mut reference = create("naive", &w, &EngineOptions::default()).unwrap();
    let mut want = vec![reference.prefill(prompt).unwrap().to_vec()];
    let mut fed = Vec::new();
    for _ in 0..DECODE_STEPS {
        let t = argmax(want.last().unwrap());
        fed.push(t);
        want.push(reference.step(t).unwrap().to_vec());
    }
    let mut engine = candle_on_gpu(&w);
    for round in 0..2 {
        let diff = max_abs_diff(engine.prefill(prompt).unwrap(), &want[0]);
        assert!(diff <= LOGIT_TOLERANCE, "prefill (round {round}): {diff}");
        for (i, &t) in fed.iter().enumerate() {
            let diff = max_abs_diff(engine.step(t).unwrap(), &want[i + 1]);
            assert!(diff <= LOGIT_TOLERANCE, "step {i} (round {round}): {diff}");
        }
        assert_eq!(engine.position(), prompt.len() + DECODE_STEPS);
        engine.reset();
    }
}

#[test]
fn tiny_model_matches_naive() {
    let tmp = tempfile::tempdir().unwrap();
    check_against_naive(&tiny(tmp.path()), &[464, 3616, 286, 1204, 318]);
}

#[test]
fn odd_shapes_match_naive() {
    let tmp = tempfile::tempdir().unwrap();
    let f = synthetic(tmp.path(), odd_config(), "odd", 4);
    check_against_naive(&f, &[15496, 995, 11, 314, 716, 257, 2746]);
}

#[test]
fn single_token_prompt_matches_naive() {
    let tmp = tempfile::tempdir().unwrap();
    check_against_naive(&tiny(tmp.path()), &[50256]);
}

#[test]
fn reports_the_gpu_and_fills_the_context_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let f = synthetic(tmp.path(), odd_config(), "odd", 4);
    let w = f.gpt2().unwrap();
    let mut e = candle_on_gpu(&w);
    let info = e.info();
    assert_eq!(info.device, gpu().to_string());
    assert!(info.kv_cache);
    // 2 layers x (K and V) x 40 positions x 35 channels x 4 bytes.
    assert_eq!(info.kv_cache_bytes, 2 * 2 * 40 * 35 * 4);
    e.prefill(&[1; 39]).unwrap();
    e.step(2).unwrap();
    assert!(e.step(3).unwrap_err().to_string().contains("40 positions"));
    assert!(e.prefill(&[1; 41]).is_err());
}

#[test]
fn profiling_times_every_operation_on_the_gpu() {
    use gpt2_backends::profile::Op;
    let tmp = tempfile::tempdir().unwrap();
    let f = tiny(tmp.path());
    let w = f.gpt2().unwrap();
    let mut e = candle_on_gpu(&w);
    e.set_profiling(true);
    e.prefill(&[1, 2, 3]).unwrap();
    let times = e.take_profile().unwrap();
    for op in Op::ALL {
        assert!(times.get(op) > 0, "no time recorded for {}", op.name());
    }
}

#[test]
fn reproduces_transformers_golden_fixture() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let golden = Golden::load(&fixtures.join("golden.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = WeightFile::open_verified(golden.weight_file(tmp.path()).unwrap()).unwrap();
    let w = file.gpt2().unwrap();
    let mut engine = candle_on_gpu(&w);
    let mut logits = engine.prefill(&golden.prompt_token_ids).unwrap().to_vec();
    let mut got_ids = Vec::new();
    for step in 0..golden.greedy_token_ids.len() {
        if let Some(want) = golden.logits.get(step) {
            let diff = max_abs_diff(&logits, want);
            assert!(
                diff <= LOGIT_TOLERANCE,
                "step {step}: logits differ by {diff}"
            );
        }
        got_ids.push(argmax(&logits));
        if step + 1 < golden.greedy_token_ids.len() {
            logits = engine.step(*got_ids.last().unwrap()).unwrap().to_vec();
        }
    }
    assert_eq!(got_ids, golden.greedy_token_ids);
}

/// The drift test of `synthetic_models.rs` on the GPU: 12 layers, 200 positions.
#[test]
fn rounding_differences_do_not_grow_with_context() {
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
    let want = create("naive", &w, &EngineOptions::default())
        .unwrap()
        .prefill(&prompt)
        .unwrap()
        .to_vec();
    let got = candle_on_gpu(&w).prefill(&prompt).unwrap().to_vec();
    let diff = max_abs_diff(&got, &want);
    assert!(
        diff < 1e-3,
        "logits differ from naive by {diff} at 200 positions"
    );
}
