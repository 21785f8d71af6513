//! The golden test: an independent implementation (Hugging Face transformers, float32) decided
//! what a small GPT-2 checkpoint computes; every backend, fed by gpt2-export from that same
//! checkpoint, must reproduce its greedy ids exactly and its logits within tolerance.
//! Fixture and numbers: `tests/fixtures/make_golden.py` (see its docs to regenerate).

mod common;

use std::path::PathBuf;

use common::{argmax, max_abs_diff};
use gpt2_backends::{BACKENDS, EngineOptions, create};
use gpt2_weights::WeightFile;
use serde_json::Value;

/// Same tolerance as the cross-backend tests: logits here have a std of about 8, and torch and
/// our backends sum in different orders.
const LOGIT_TOLERANCE: f32 = 2e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn every_backend_reproduces_transformers() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden.json")).unwrap())
            .unwrap();
    let ids = |key: &str| -> Vec<u32> {
        golden[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let prompt_ids = ids("prompt_token_ids");
    let want_ids = ids("greedy_token_ids");

    let logits_bytes =
        std::fs::read(fixtures().join(golden["logits_file"].as_str().unwrap())).unwrap();
    let st = safetensors::SafeTensors::deserialize(&logits_bytes).unwrap();
    let view = st.tensor("logits").unwrap();
    let (steps, vocab) = (view.shape()[0], view.shape()[1]);
    let want_logits: Vec<Vec<f32>> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect::<Vec<_>>()
        .chunks_exact(vocab)
        .map(<[f32]>::to_vec)
        .collect();
    assert_eq!(want_logits.len(), steps);
    assert!(steps >= 1 && steps <= want_ids.len());

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("golden.bin");
    let checkpoint = fixtures().join(golden["checkpoint"].as_str().unwrap());
    gpt2_export::hf::export_dir(&checkpoint, &out, "dir:golden", &|_, _| {}).unwrap();
    let file = WeightFile::open_verified(&out).unwrap();

    // Our tokenizer agrees with transformers' GPT-2 tokenizer on the prompt.
    let tokenizer = file.tokenizer().unwrap();
    assert_eq!(
        tokenizer
            .encode(golden["prompt"].as_str().unwrap())
            .unwrap(),
        prompt_ids
    );

    let w = file.gpt2().unwrap();
    for &name in BACKENDS {
        let mut engine = create(name, &w, &EngineOptions::default()).unwrap();
        let mut logits = engine.prefill(&prompt_ids).unwrap().to_vec();
        let mut got_ids = Vec::new();
        for step in 0..want_ids.len() {
            if let Some(want) = want_logits.get(step) {
                let diff = max_abs_diff(&logits, want);
                eprintln!("{name}: step {step}: max logit difference from transformers {diff:e}");
                assert!(
                    diff <= LOGIT_TOLERANCE,
                    "{name}: step {step} logits differ by {diff}"
                );
            }
            let token = argmax(&logits);
            got_ids.push(token);
            if step + 1 < want_ids.len() {
                logits = engine.step(token).unwrap().to_vec();
            }
        }
        assert_eq!(
            got_ids, want_ids,
            "{name}: greedy ids differ from transformers'"
        );
    }
}
