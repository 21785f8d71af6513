//! Every backend against `naive`, the reference: logits within tolerance, after prefill and
//! after each of several decode steps, on models whose widths exercise remainder loops; input
//! errors, the context limit, what each engine reports, profiling. Each case runs on every
//! target of this build ([`common::targets`]: every backend on the CPU, and with the `cuda`
//! feature, candle on the GPU too).

mod common;

use common::*;
use gpt2_backends::{EngineOptions, backend_names, create};
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
            for op in Op::ALL {
                assert!(
                    times.get(op) > 0,
                    "{name}: no time recorded for {}",
                    op.name()
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
                .with_sizer(fixed);
            let mut b = SimdKvEngine::new(w.clone(), kernels, threads)
                .unwrap()
                .with_sizer(TeamSizer::alternating(threads));
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
