//! The golden test: an independent implementation (Hugging Face transformers, float32) decided
//! what a small GPT-2 checkpoint computes; every backend, fed by gpt2-export from that same
//! checkpoint, must reproduce its greedy ids exactly and its logits within tolerance (on every
//! target of this build, the GPU too in a `cuda` build).
//! Fixture and numbers: `tests/fixtures/make_golden.py` (see its docs to regenerate).

mod common;

use std::path::PathBuf;

use common::{argmax, max_abs_diff, targets};
use gpt2_backends::LOGIT_TOLERANCE;
use gpt2_export::golden::Golden;
use gpt2_weights::WeightFile;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn every_backend_reproduces_transformers() {
    let golden = Golden::load(&fixtures().join("golden.json")).unwrap();
    let (prompt_ids, want_ids, want_logits) = (
        &golden.prompt_token_ids,
        &golden.greedy_token_ids,
        &golden.logits,
    );
    assert!(!want_logits.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let file = WeightFile::open_verified(golden.weight_file(tmp.path()).unwrap()).unwrap();

    // Our tokenizer agrees with transformers' GPT-2 tokenizer on the prompt.
    let tokenizer = file.tokenizer().unwrap();
    assert_eq!(tokenizer.encode(&golden.prompt).unwrap(), *prompt_ids);

    let w = file.gpt2().unwrap();
    let model = gpt2_backends::Model::from(w.clone());
    for target in targets() {
        let name = target.label();
        let tolerance = gpt2_backends::registry::spec(target.backend)
            .map_or(LOGIT_TOLERANCE, |s| s.logit_tolerance(&model));
        let mut engine = target.create(&w);
        let mut logits = engine.prefill(prompt_ids).unwrap().to_vec();
        let mut got_ids = Vec::new();
        for step in 0..want_ids.len() {
            if let Some(want) = want_logits.get(step) {
                let diff = max_abs_diff(&logits, want);
                eprintln!("{name}: step {step}: max logit difference from transformers {diff:e}");
                assert!(
                    diff <= tolerance,
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
            &got_ids, want_ids,
            "{name}: greedy ids differ from transformers'"
        );
    }
}
