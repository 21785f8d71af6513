//! Fuzzing the safetensors import: a Hugging Face checkpoint whose `model.safetensors` is
//! mutated (its JSON header, its 8-byte header length, its data, its length) must export
//! cleanly or fail with an error: never panic, never allocate more than the file implies,
//! never leave a file at the destination on failure.
//!
//! Seeded and bounded like `weights/tests/fuzz_reader.rs`: `GPT2_BENCH_FUZZ_ITERS` (default
//! 3 000; every input is a full export) and `GPT2_BENCH_FUZZ_SEED` (default 1).

#[path = "../../weights/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::{Rng, iterations_and_seed, largest_allocation};

mod support;
use support::tiny_checkpoint as write_checkpoint;

use gpt2_export::hf::export_dir;
use gpt2_weights::Dtype;

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let header_len = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    for _ in 0..1 + rng.below(3) {
        if b.len() < 16 {
            // Too short to mutate in place (an earlier truncation): grow it.
            b.extend((0..rng.below(64)).map(|_| rng.next() as u8));
            continue;
        }
        // The header may have been cut short by an earlier mutation.
        let header_len = header_len.min(b.len() - 8);
        match rng.below(7) {
            0 | 1 => {
                // A byte of the JSON header (names, dtypes, shapes, offsets).
                let i = 8 + rng.below(header_len.max(1)).min(b.len() - 9);
                b[i] = match rng.below(3) {
                    0 => b"0123456789"[rng.below(10)],
                    1 => b"[]{},:\"FBI"[rng.below(10)],
                    _ => rng.next() as u8,
                };
            }
            2 => {
                // The header length itself.
                let v: u64 = [0, 1, 7, header_len as u64 + 1, u64::MAX, 1 << 40][rng.below(6)];
                b[..8].copy_from_slice(&v.to_le_bytes());
            }
            3 => b.truncate(rng.below(b.len() + 1)),
            4 => {
                let extra = rng.below(512);
                b.extend((0..extra).map(|_| rng.next() as u8));
            }
            5 => {
                // A digit in the header replaced by a long number (huge shapes or offsets).
                let header =
                    String::from_utf8_lossy(&b[8..(8 + header_len).min(b.len())]).into_owned();
                if let Some(pos) = header.find(|c: char| c.is_ascii_digit()) {
                    let big = ["99999999999", "18446744073709551615", "4294967296"][rng.below(3)];
                    let mut json = header.clone();
                    json.replace_range(pos..pos + 1, big);
                    let mut out = (json.len() as u64).to_le_bytes().to_vec();
                    out.extend_from_slice(json.as_bytes());
                    out.extend_from_slice(&b[8 + header_len..]);
                    b = out;
                }
            }
            _ => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
    }
    b
}

#[test]
fn mutated_safetensors_are_errors_never_panics_or_huge_allocations() {
    let (iterations, seed) = iterations_and_seed(3_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    let valid = write_checkpoint(&dir);
    let out = tmp.path().join("out.bin");
    std::fs::write(dir.join("model.safetensors"), &valid).unwrap();
    export_dir(&dir, &out, "dir:fuzz", Dtype::F32, &|_, _| {})
        .expect("the seed checkpoint exports");
    std::fs::remove_file(&out).unwrap();

    let mut rng = Rng(seed);
    let mut exported = 0u64;
    for i in 0..iterations {
        let bytes = mutate(&mut rng, &valid);
        std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
        let (result, largest) =
            largest_allocation(|| export_dir(&dir, &out, "dir:fuzz", Dtype::F32, &|_, _| {}));
        // The config, tokenizer and output plan are small; tensor buffers come from the file.
        assert!(
            largest <= 16 * bytes.len() + (1 << 20),
            "iteration {i} (seed {seed}): a {largest}-byte allocation for a {}-byte file",
            bytes.len()
        );
        match result {
            Ok(_) => {
                exported += 1;
                std::fs::remove_file(&out).unwrap();
            }
            Err(e) => {
                assert!(!out.exists(), "iteration {i}: a failed export left {out:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    eprintln!("fuzz_import: {iterations} inputs (seed {seed}); {exported} exported");
}
