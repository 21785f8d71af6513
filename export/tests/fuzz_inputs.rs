//! Fuzzing the other files gpt2-export and gpt2-bench parse: `config.json`, the shard index
//! `model.safetensors.index.json`, and golden files (their JSON and their logits). Each mutated
//! input must give a result or an error: never a panic, never an allocation out of proportion
//! to the input, never a file left at the destination on failure.
//! (The saved-report reader behind `--baseline` is fuzzed in `harness/src/gate.rs`.)
//!
//! Seeded and bounded like the other fuzz tests: `GPT2_BENCH_FUZZ_ITERS` (default 2 000 per
//! file kind) and `GPT2_BENCH_FUZZ_SEED` (default 1).

#[path = "../../weights/tests/fuzz_support/mod.rs"]
mod fuzz_support;
mod support;

use std::path::Path;

use fuzz_support::{Rng, iterations_and_seed, largest_allocation, mutate_json};
use gpt2_export::golden::Golden;
use gpt2_export::hf::export_dir;
use gpt2_weights::Dtype;

/// Exports `dir` to `out` and checks the fuzzing invariants for an input of `input_len` bytes.
fn export_checked(dir: &Path, out: &Path, input_len: usize, what: &str, i: u64) -> bool {
    let (result, largest) =
        largest_allocation(|| export_dir(dir, out, "dir:fuzz", Dtype::F32, &|_, _| {}));
    // The tokenizer, config and tensors of the tiny checkpoint are small; nothing may be sized
    // by a number from the mutated file alone.
    assert!(
        largest <= 64 * input_len + (4 << 20),
        "{what} iteration {i}: a {largest}-byte allocation for a {input_len}-byte input"
    );
    match result {
        Ok(_) => {
            std::fs::remove_file(out).unwrap();
            true
        }
        Err(e) => {
            assert!(
                !out.exists(),
                "{what} iteration {i}: a failed export left {out:?}"
            );
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

#[test]
fn mutated_configs_indexes_and_golden_files_are_errors_never_panics() {
    let (iterations, seed) = iterations_and_seed(2_000);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.bin");
    let mut rng = Rng(seed);

    // config.json of a single-file checkpoint.
    let dir = tmp.path().join("single");
    std::fs::create_dir(&dir).unwrap();
    let weights = support::tiny_checkpoint(&dir);
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    let config = std::fs::read(dir.join("config.json")).unwrap();
    assert!(export_checked(&dir, &out, config.len(), "seed config", 0));
    let mut ok = [0u64; 3];
    for i in 0..iterations {
        let bytes = mutate_json(&mut rng, &config);
        std::fs::write(dir.join("config.json"), &bytes).unwrap();
        ok[0] += u64::from(export_checked(
            &dir,
            &out,
            bytes.len() + weights.len(),
            "config",
            i,
        ));
    }

    // The shard index of the same weights split in two shards.
    let dir = tmp.path().join("sharded");
    std::fs::create_dir(&dir).unwrap();
    let weights = support::tiny_checkpoint(&dir);
    let all = {
        let p = dir.join("all.safetensors");
        std::fs::write(&p, &weights).unwrap();
        let f = support::SafetensorsFile::read(&p);
        std::fs::remove_file(&p).unwrap();
        f
    };
    let mut weight_map = serde_json::Map::new();
    for (part, chunk) in all.entries.chunks(all.entries.len() / 2 + 1).enumerate() {
        let name = format!("model-{part}.safetensors");
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = chunk
            .iter()
            .map(|(n, v)| {
                let shape = serde_json::from_value(v["shape"].clone()).unwrap();
                let r = all.range(n);
                let values = all.data[r]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                weight_map.insert(n.clone(), name.clone().into());
                (n.clone(), shape, values)
            })
            .collect();
        support::SafetensorsFile::from_f32(&tensors).write(&dir.join(&name));
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map })
        .to_string()
        .into_bytes();
    let index_path = dir.join("model.safetensors.index.json");
    std::fs::write(&index_path, &index).unwrap();
    assert!(export_checked(&dir, &out, index.len(), "seed index", 0));
    for i in 0..iterations {
        let bytes = mutate_json(&mut rng, &index);
        std::fs::write(&index_path, &bytes).unwrap();
        ok[1] += u64::from(export_checked(
            &dir,
            &out,
            bytes.len() + weights.len(),
            "index",
            i,
        ));
    }

    // A golden file and its logits.
    let golden_dir = tmp.path().join("golden");
    std::fs::create_dir(&golden_dir).unwrap();
    let golden_json = serde_json::json!({
        "prompt": "ab", "prompt_token_ids": [1, 2], "greedy_token_ids": [3, 4, 5],
        "logits_file": "logits.safetensors", "checkpoint": "ckpt", "min_top2_gap": 0.5,
    })
    .to_string()
    .into_bytes();
    let logits = support::SafetensorsFile::from_f32(&[(
        "logits".to_string(),
        vec![2, 5],
        (0..10).map(|i| i as f32 * 0.5).collect(),
    )])
    .to_bytes();
    let golden_path = golden_dir.join("golden.json");
    let logits_path = golden_dir.join("logits.safetensors");
    std::fs::write(&golden_path, &golden_json).unwrap();
    std::fs::write(&logits_path, &logits).unwrap();
    Golden::load(&golden_path).expect("the seed golden file loads");
    for i in 0..iterations {
        let (json, bin) = if rng.below(2) == 0 {
            (mutate_json(&mut rng, &golden_json), logits.clone())
        } else {
            // The logits file: its JSON header or its data.
            let mut b = logits.clone();
            let n = 1 + rng.below(4);
            for _ in 0..n {
                let at = rng.below(b.len());
                b[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                b.truncate(rng.below(b.len()));
            }
            (golden_json.clone(), b)
        };
        std::fs::write(&golden_path, &json).unwrap();
        std::fs::write(&logits_path, &bin).unwrap();
        let (result, largest) = largest_allocation(|| Golden::load(&golden_path));
        assert!(
            largest <= 64 * (json.len() + bin.len()) + (1 << 20),
            "golden iteration {i}: a {largest}-byte allocation"
        );
        if let Ok(g) = result {
            ok[2] += 1;
            assert!(g.logits.iter().flatten().all(|x| x.is_finite()));
        }
    }
    let leftovers = support::entries(&dir, "", ".partial");
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    eprintln!(
        "fuzz_inputs: {iterations} inputs per kind (seed {seed}); accepted: {} configs, {} \
         indexes, {} golden files",
        ok[0], ok[1], ok[2]
    );
}
