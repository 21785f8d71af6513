//! Every backend against `naive`, the reference: logits within tolerance, after prefill and
//! after each of several decode steps, on models whose widths exercise remainder loops; input
//! errors, the context limit, what each engine reports, profiling. Each case runs on every
//! target of this build ([`common::targets`]: every backend on the CPU, and with the `cuda`
//! feature, candle on the GPU too).

mod common;

use common::*;
use gpt2_backends::{EngineOptions, Forward, backend_names, create};
use gpt2_weights::KvDtype;

#[test]
fn tiny_model_all_backends_match_naive() {
    let tmp = tempfile::tempdir().unwrap();
    check_against_naive(&tiny(tmp.path()), &[464, 3616, 286, 1204, 318]);
}

#[test]
fn odd_shapes_all_backends_match_naive() {
    let tmp = tempfile::tempdir().unwrap();
    let f = synthetic(tmp.path(), odd_config(), "odd", 4);
    check_against_naive(&f, &[15496, 995, 11, 314, 716, 257, 2746]);
}

#[test]
fn single_token_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    check_against_naive(&tiny(tmp.path()), &[50256]);
}

#[test]
fn input_errors_are_reported_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let f = synthetic(tmp.path(), odd_config(), "odd", 4);
    let w = f.gpt2().unwrap();
    for target in targets() {
        let name = target.label();
        let mut e = target.create(&w);
        assert_eq!(
            e.prefill(&[]).unwrap_err().to_string(),
            "the prompt is empty; give at least one token"
        );
        assert!(e.step(1).is_err(), "{name}: step before prefill");
        assert!(
            e.prefill(&[1, 50257])
                .unwrap_err()
                .to_string()
                .contains("50257")
        );
        assert!(
            e.prefill(&[1; 41])
                .unwrap_err()
                .to_string()
                .contains("context is full")
        );
        // Filling the context exactly works; one more step does not.
        e.prefill(&[1; 39]).unwrap();
        e.step(2).unwrap();
        assert!(
            e.step(3).unwrap_err().to_string().contains("40 positions"),
            "{name}"
        );
    }
    let err = create("gpu", &w, &EngineOptions::default()).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "unknown backend \"gpu\"; valid backends: {}",
            backend_names().join(", ")
        )
    );
}

/// The simd backends on every kernel set this machine has (its SIMD one and the scalar fallback
/// that `GPT2_BENCH_FORCE_SCALAR=1` selects) and on 1 and 3 threads, against naive.
#[test]
fn simd_backends_on_every_kernel_set_and_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    for file in [
        tiny(tmp.path()),
        synthetic(tmp.path(), odd_config(), "odd", 4),
    ] {
        check_simd_kernel_sets(&file, &[464, 3616, 286, 1204, 318, 11], KvDtype::F32);
    }
}

#[test]
fn cached_backends_report_their_cache_and_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tiny(tmp.path());
    let w = f.gpt2().unwrap();
    // candle copies every stored tensor once (the tied output layer is the embedding tensor);
    // the hand-written backends compute on the mapped file.
    let stored_bytes: u64 = f.header().tensors.iter().map(|t| t.byte_len).sum();
    let mut cached = 0;
    for target in targets() {
        let label = target.label();
        let info = target.create(&w).info();
        let spec = gpt2_backends::registry::spec(target.backend).unwrap();
        assert_eq!(info.kv_cache, spec.kv_cache, "{label}");
        assert_eq!(info.device, target.options.device.to_string(), "{label}");
        if info.kv_cache {
            cached += 1;
            // 3 layers x (K and V) x 128 positions x 60 channels x 4 bytes.
            assert_eq!(info.kv_cache_bytes, 3 * 2 * 128 * 60 * 4, "{label}");
        } else {
            assert_eq!(info.kv_cache_bytes, 0, "{label}");
        }
        let copied = if target.backend == "candle" {
            stored_bytes
        } else {
            0
        };
        assert_eq!(info.weights_copied_bytes, copied, "{label}");
    }
    // simd-kv at least (candle too unless the build leaves out its feature, as aarch64's does).
    assert!(cached >= 1);
}

#[test]
fn every_backend_profiles_every_operation_only_when_asked() {
    use gpt2_backends::profile::Op;
    let tmp = tempfile::tempdir().unwrap();
    let f = tiny(tmp.path());
    let w = f.gpt2().unwrap();
    for target in targets() {
        let name = target.label();
        let mut e = target.create(&w);
        e.prefill(&[1, 2, 3]).unwrap();
        assert_eq!(e.take_profile(), None, "{name}: off by default");
        e.set_profiling(true);
        e.prefill(&[1, 2, 3]).unwrap();
        let pre = e.take_profile().unwrap();
        e.step(4).unwrap();
        let step = e.take_profile().unwrap();
        for times in [pre, step] {
            // Every operation of GPT-2, or (llama.cpp, which times its graph whole) the pass.
            let whole = times.get(Op::Whole) > 0;
            for op in Op::ALL {
                assert_eq!(
                    times.get(op) > 0,
                    (op == Op::Whole) == whole,
                    "{name}: time recorded for {}: {}",
                    op.name(),
                    times.get(op)
                );
            }
        }
        e.set_profiling(false);
        e.step(5).unwrap();
        assert_eq!(e.take_profile(), None, "{name}");
    }
}

/// simd-kv decodes the same bits whether a step runs on the whole team or on one thread (the
/// team sizer switches between them on a busy machine): steps alternating the two sizes give
/// exactly the logits of steps that always use the full team.
#[test]
fn simd_kv_team_size_never_changes_a_bit() {
    use gpt2_backends::Engine;
    use gpt2_backends::kernels::Kernels;
    use gpt2_backends::kernels::team::TeamSizer;
    use gpt2_backends::simd::SimdKvEngine;
    let tmp = tempfile::tempdir().unwrap();
    let f = synthetic(tmp.path(), odd_config(), "odd", 4);
    let w = f.gpt2().unwrap();
    for kernels in Kernels::available() {
        let set = kernels.isa().name();
        for threads in [2, 3] {
            let fixed = TeamSizer::with_adaptive(threads, false);
            let mut a = SimdKvEngine::new(w.clone(), kernels, threads)
                .unwrap()
                .with_sizer(fixed)
                .into_engine();
            let mut b = SimdKvEngine::new(w.clone(), kernels, threads)
                .unwrap()
                .with_sizer(TeamSizer::alternating(threads))
                .into_engine();
            let prompt = [15496, 995, 11, 314];
            assert_eq!(a.prefill(&prompt).unwrap(), b.prefill(&prompt).unwrap());
            let mut t = 7;
            for step in 0..12 {
                let got_a = a.step(t).unwrap().to_vec();
                let got_b = b.step(t).unwrap().to_vec();
                assert_eq!(
                    got_a, got_b,
                    "{set} kernels, {threads} threads, step {step}"
                );
                t = argmax(&got_a);
            }
        }
    }
}

/// On GPT-2's shapes (widths that are multiples of 32) the AVX-512 kernels compute the same bits
/// as the AVX2 ones: every kernel AVX-512 takes over sums each output in the same order at
/// either width, and the reductions stay AVX2's. So the detected kernels never make a backend
/// part from the others where AVX2's agree (a near-tie that one summation order flips). Runs
/// where the CPU has both; says so where it does not.
#[test]
fn avx512_computes_the_same_bits_as_avx2_on_gpt2_shapes() {
    use gpt2_backends::Engine;
    use gpt2_backends::kernels::{Isa, Kernels};
    use gpt2_backends::simd::{SimdEngine, SimdKvEngine};
    let available = Kernels::available();
    let find = |isa| available.iter().copied().find(|k| k.isa() == isa);
    let (Some(avx512), Some(avx2)) = (find(Isa::Avx512), find(Isa::Avx2Fma)) else {
        eprintln!("skipped: this CPU lacks AVX-512 or AVX2");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // GPT-2's proportions, small: heads of 64, widths multiples of 32 (GPT-2 small to XL all
    // are: 768, 1024, 1280 and 1600, and 4x those).
    let config = gpt2_weights::Config {
        n_layer: 2,
        n_head: 2,
        n_embd: 128,
        vocab_size: 50257,
        n_ctx: 32,
        mlp_hidden: 512,
        layer_norm_eps: 1e-5,
        tied_output: true,
    };
    for dtype in [
        gpt2_weights::Dtype::F32,
        gpt2_weights::Dtype::F16,
        gpt2_weights::Dtype::Q8_0,
    ] {
        let f = synthetic_in(tmp.path(), config, "gpt2-shaped", 3, dtype);
        let w = f.gpt2().unwrap();
        let prompt = [464, 3616, 286, 1204, 318, 262, 3616];
        for threads in [1, 2] {
            let run = |mut e: Box<dyn Engine>| {
                let mut logits = vec![e.prefill(&prompt).unwrap().to_vec()];
                for token in [11, 290, 262] {
                    logits.push(e.step(token).unwrap().to_vec());
                }
                logits
            };
            let bits =
                |l: Vec<Vec<f32>>| -> Vec<u32> { l.concat().iter().map(|v| v.to_bits()).collect() };
            for kv in [false, true] {
                let engine = |k: Kernels| -> Box<dyn Engine> {
                    if kv {
                        Box::new(
                            SimdKvEngine::new(w.clone(), k, threads)
                                .unwrap()
                                .into_engine(),
                        )
                    } else {
                        Box::new(
                            SimdEngine::new(w.clone(), k, threads)
                                .unwrap()
                                .into_engine(),
                        )
                    }
                };
                assert!(
                    bits(run(engine(avx512))) == bits(run(engine(avx2))),
                    "{dtype} kv {kv} {threads} threads: AVX-512 and AVX2 logits differ"
                );
            }
        }
    }
}
