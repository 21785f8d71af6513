//! The `llama.cpp` backend (feature `llama-cpp`): its GGUF copy of the weight file (written once,
//! named by the checksum, reused), the contract every backend keeps (prefill, steps, reset,
//! input errors), and its logits against naive's on the same weights in f32 and f16.
//! (The shared equivalence cases of equivalence.rs run it too, on every shape they cover.)
#![cfg(feature = "llama-cpp")]

mod common;

use common::*;
use gpt2_backends::llama_cpp_engine::{NAME, cached_gguf, ggml_isa, system_info};
use gpt2_backends::{EngineError, EngineOptions, create};
use gpt2_weights::{Dtype, KvDtype};

const PROMPT: [u32; 5] = [464, 3616, 286, 1204, 318]; // "The meaning of life is"

#[test]
fn the_gguf_is_written_once_beside_the_file_named_by_checksums_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tiny(tmp.path());
    let path = cached_gguf(&file).unwrap();
    assert_eq!(path.parent(), Some(tmp.path()));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let copy_sum = gpt2_weights::input::checksum_file(&path).unwrap();
    assert_eq!(
        name,
        format!(
            "tiny-f32.{:016x}.{copy_sum:016x}.gguf",
            file.data_checksum()
        )
    );
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Reused: the second engine reads the same file, not a new one.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(cached_gguf(&file).unwrap(), path);
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        written
    );
    // No temporary or unverified file is left beside it.
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(), [name.clone(), "tiny-f32.bin".to_string()]);
    // A copy whose bytes changed on disk (one flipped byte) is never run: it is written again.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(cached_gguf(&file).unwrap(), path);
    assert_eq!(gpt2_weights::input::checksum_file(&path).unwrap(), copy_sum);
    assert_eq!(names(), [name, "tiny-f32.bin".to_string()]);
}

#[test]
fn llama_cpp_runs_with_the_instruction_set_of_this_cpu() {
    // The engine refuses otherwise; here, it was built for this CPU (RUSTFLAGS target-cpu).
    let info = system_info();
    let tmp = tempfile::tempdir().unwrap();
    let file = tiny(tmp.path());
    let w = file.gpt2().unwrap();
    let engine = create(NAME, &w, &EngineOptions::default()).unwrap();
    assert_eq!(
        engine.info().isa,
        format!("ggml {}", ggml_isa(&info)),
        "{info}"
    );
}

#[test]
fn the_contract_of_every_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tiny(tmp.path());
    let w = file.gpt2().unwrap();
    let mut e = create(NAME, &w, &EngineOptions::default()).unwrap();
    assert_eq!(e.step(1).unwrap_err(), EngineError::NotStarted);
    assert_eq!(e.prefill(&[]).unwrap_err(), EngineError::EmptyPrompt);
    let vocab = w.config.vocab_size;
    assert!(matches!(
        e.prefill(&[vocab]),
        Err(EngineError::TokenOutOfRange { .. })
    ));
    let first = e.prefill(&PROMPT).unwrap().to_vec();
    assert_eq!(first.len(), vocab as usize);
    e.step(argmax(&first)).unwrap();
    assert_eq!(e.position(), PROMPT.len() + 1);
    // A new prefill forgets the old sequence: the same logits as the first time.
    assert_eq!(e.prefill(&PROMPT).unwrap(), &first[..]);
    e.reset();
    assert_eq!(e.position(), 0);
    assert_eq!(e.prefill(&PROMPT).unwrap(), &first[..]);
}

/// llama.cpp's logits against naive's, position by position through a greedy decode, in f32
/// and f16 weights with either cache: within its tolerance (GELU from an f16 table, f16
/// products' inputs rounded to f16: `llama_cpp_engine::LOGIT_TOLERANCE`), and the same tokens.
#[test]
fn llama_cpp_computes_what_naive_computes_in_f32_and_f16() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F32, Dtype::F16] {
        let file = synthetic_in(tmp.path(), q8_config(), "llama", 3, dtype);
        for kv in [KvDtype::F32, KvDtype::F16] {
            let model = gpt2_backends::Model::from(file.gpt2().unwrap()).with_kv_cache(kv);
            let tolerance = gpt2_backends::registry::spec(NAME)
                .unwrap()
                .logit_tolerance(&model);
            let opts = EngineOptions {
                kv_cache: kv.into(),
                threads: 2,
                ..EngineOptions::default()
            };
            let w = file.gpt2().unwrap();
            let mut naive = create("naive", &w, &opts).unwrap();
            let mut llama = create(NAME, &w, &opts).unwrap();
            let (mut want, mut got) = (
                naive.prefill(&PROMPT).unwrap().to_vec(),
                llama.prefill(&PROMPT).unwrap().to_vec(),
            );
            for step in 0..16 {
                let diff = max_abs_diff(&want, &got);
                assert!(diff <= tolerance, "{dtype} kv {kv} step {step}: {diff}");
                let t = argmax(&want);
                assert_eq!(argmax(&got), t, "{dtype} kv {kv} step {step}");
                want = naive.step(t).unwrap().to_vec();
                got = llama.step(t).unwrap().to_vec();
            }
        }
    }
}
