//! Every backend in every weight dtype (f16, bf16, q8_0, and f32 for contrast): token-exact with
//! `naive` on the same file, with the default f32 key/value cache and with an f16 one (logits
//! within `logit_tolerance`: each backend computes on the same dequantized values, only its order
//! of additions differs, and with an f16 cache that order can put a key or value on the other
//! side of an f16 rounding boundary), on the tiny model, on odd shapes,
//! and on a shape whose matrices really are q8_0; the simd backends on their SIMD and scalar
//! kernels with 1 and 3 threads; what each engine reports about the dtype and its copies.

mod common;

use common::*;
use gpt2_weights::{Dtype, KvDtype};

const PROMPT: [u32; 6] = [464, 3616, 286, 1204, 318, 11];

#[test]
fn every_backend_matches_naive_in_every_dtype_on_tiny() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in Dtype::ALL {
        for kv in KvDtype::ALL {
            check_against_naive_with(&tiny_in(tmp.path(), dtype), &PROMPT, kv);
        }
    }
}

#[test]
fn every_backend_matches_naive_in_every_dtype_on_odd_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in Dtype::ALL {
        for kv in KvDtype::ALL {
            let f = synthetic_in(tmp.path(), odd_config(), "odd", 4, dtype);
            check_against_naive_with(&f, &PROMPT, kv);
            let f = synthetic_in(tmp.path(), q8_config(), "q8", 5, dtype);
            check_against_naive_with(&f, &PROMPT, kv);
        }
    }
}

#[test]
fn simd_kernel_sets_and_thread_counts_in_every_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::Q8_0] {
        for kv in KvDtype::ALL {
            check_simd_kernel_sets(&tiny_in(tmp.path(), dtype), &PROMPT, kv);
            let f = synthetic_in(tmp.path(), q8_config(), "q8", 5, dtype);
            check_simd_kernel_sets(&f, &PROMPT, kv);
        }
    }
}

/// The q8_0 shape really holds q8_0 matrices (and f16 where rows are not whole blocks), and
/// every engine says so; the backends that convert at load report what they copied, and the
/// backends with a cache hold it in f32, or in f16 when asked.
#[test]
fn engines_report_the_dtype_and_their_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let f = synthetic_in(tmp.path(), q8_config(), "q8", 5, Dtype::Q8_0);
    let dtype_of = |name: &str| f.raw(name).unwrap().1;
    assert_eq!(dtype_of("wte.weight"), Dtype::Q8_0);
    assert_eq!(dtype_of("lm_head.weight"), Dtype::Q8_0);
    assert_eq!(dtype_of("h.0.attn.c_attn.weight"), Dtype::Q8_0);
    assert_eq!(dtype_of("h.0.mlp.c_fc.weight"), Dtype::Q8_0);
    assert_eq!(dtype_of("h.0.mlp.c_proj.weight"), Dtype::F16);
    assert_eq!(dtype_of("h.0.ln_1.weight"), Dtype::F32);
    assert_eq!(dtype_of("wpe.weight"), Dtype::F32);
    let w = f.gpt2().unwrap();
    assert_eq!(w.dtype_label(), "q8_0+f16");
    // f32 values of every matrix: what the converting backends hold.
    let c = 96u64;
    let matrices = 2 * 50257 * c + 2 * (c * 3 * c + c * c + 2 * c * 392);
    // Keys and values of every layer and position: 4 bytes each by default, 2 in an f16 cache.
    let kv_values = 2 * u64::from(w.config.n_layer) * u64::from(w.config.n_ctx) * c;
    for target in targets() {
        let info = target.create(&w).info();
        assert_eq!(info.dtype, "q8_0+f16", "{}", target.label());
        if info.kv_cache {
            assert_eq!(info.kv_cache_bytes, kv_values * 4, "{}", target.label());
            let f16 = target.clone().with_kv_cache(KvDtype::F16).create(&w).info();
            assert_eq!(f16.kv_cache_bytes, kv_values * 2, "{}", target.label());
        }
        match target.backend {
            "ndarray" => assert_eq!(info.weights_copied_bytes, matrices * 4),
            // candle copies everything (its f32 tensors own their memory), the matrices as f32.
            "candle" => assert!(info.weights_copied_bytes >= matrices * 4),
            _ => assert_eq!(info.weights_copied_bytes, 0, "{}", target.label()),
        }
    }
}

/// Each reduced dtype changes the logits of the same seed's model a little, not at all or
/// wildly: the files really hold rounded weights (not just a label), rounded once.
#[test]
fn reduced_precision_changes_the_logits_a_little() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_file = synthetic_in(tmp.path(), q8_config(), "q8", 5, Dtype::F32);
    let opts = gpt2_backends::EngineOptions::default();
    let logits = |w: &gpt2_weights::Gpt2Weights| {
        let mut naive = gpt2_backends::create("naive", w, &opts).unwrap();
        naive.prefill(&PROMPT).unwrap().to_vec()
    };
    let want = logits(&f32_file.gpt2().unwrap());
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::Q8_0] {
        let f = synthetic_in(tmp.path(), q8_config(), "q8", 5, dtype);
        let got = logits(&f.gpt2().unwrap());
        let diff = max_abs_diff(&got, &want);
        // Logits here have a standard deviation of about 4 (see gpt2_export::synthetic).
        assert!(
            diff > 0.0 && diff < 1.0,
            "{dtype}: max logit difference {diff}"
        );
    }
}
