//! Helpers shared by the backend tests: the backends and devices every case runs on
//! ([`targets`]), synthetic models in a temporary directory, greedy decoding.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gpt2_backends::{
    DeviceChoice, Engine, EngineOptions, Forward, backend_names, create, logit_tolerance, registry,
};
use gpt2_export::SyntheticSize;
use gpt2_weights::{Config, Dtype, Gpt2Weights, KvDtype, WeightFile};

/// A backend on a device: what a test case runs on.
#[derive(Debug, Clone)]
pub struct Target {
    pub backend: &'static str,
    pub options: EngineOptions,
}

impl Target {
    /// `simd-kv on cpu`, `candle on cuda:0`: for assertion messages.
    pub fn label(&self) -> String {
        format!("{} on {}", self.backend, self.options.device)
    }

    pub fn is_naive_on_cpu(&self) -> bool {
        self.backend == "naive" && self.options.device == DeviceChoice::Cpu
    }

    /// The engine; panics with the target's name (on a CUDA build without a usable GPU, this
    /// is where the GPU cases fail: asking for them is asking for a GPU).
    pub fn create<'w>(&self, w: &Gpt2Weights<'w>) -> Box<dyn Engine + 'w> {
        create(self.backend, w, &self.options).unwrap_or_else(|e| panic!("{}: {e}", self.label()))
    }

    /// This target with its keys and values cached in `kv`.
    pub fn with_kv_cache(mut self, kv: KvDtype) -> Self {
        self.options.kv_cache = kv.into();
        self
    }
}

/// Every backend this build has on the CPU, then, in a build with the `cuda` feature, every
/// backend that runs on CUDA on the GPU `GPT2_BENCH_CUDA_DEVICE` (default 0). The equivalence,
/// golden and long-context cases run over this list, so a GPU run checks exactly what a CPU
/// run checks:
///
/// ```sh
/// cargo test --release -p gpt2-backends --features cuda
/// ```
pub fn targets() -> Vec<Target> {
    let mut targets: Vec<Target> = backend_names()
        .into_iter()
        .map(|backend| Target {
            backend,
            options: EngineOptions::default(),
        })
        .collect();
    if cfg!(feature = "cuda") {
        let ordinal = std::env::var("GPT2_BENCH_CUDA_DEVICE").map_or(0, |s| {
            s.parse()
                .expect("GPT2_BENCH_CUDA_DEVICE must be a GPU ordinal")
        });
        for spec in registry::REGISTRY {
            if spec.devices.contains(&"cuda") {
                targets.push(Target {
                    backend: spec.name,
                    options: EngineOptions {
                        device: DeviceChoice::Cuda(ordinal),
                        ..EngineOptions::default()
                    },
                });
            }
        }
    }
    targets
}

/// The `tiny` synthetic model: n_embd 60, head size 15 (neither a multiple of 8).
pub fn tiny(dir: &Path) -> WeightFile {
    tiny_in(dir, Dtype::F32)
}

/// [`tiny`] with its matrices in `dtype` (60 is not whole q8_0 blocks: a "q8_0" tiny keeps its
/// matrices f16, as llama.cpp's converter does).
pub fn tiny_in(dir: &Path, dtype: Dtype) -> WeightFile {
    let path = dir.join(format!("tiny-{dtype}.bin"));
    gpt2_export::synthetic::export_synthetic(SyntheticSize::Tiny, 1, dtype, &path, &|_, _| {})
        .unwrap();
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
    synthetic_in(dir, config, name, seed, Dtype::F32)
}

/// [`synthetic`] with its matrices in `dtype`.
pub fn synthetic_in(dir: &Path, config: Config, name: &str, seed: u64, dtype: Dtype) -> WeightFile {
    let path: PathBuf = dir.join(format!("{name}-{dtype}.bin"));
    gpt2_export::synthetic::write_synthetic(config, name, seed, dtype, &path, &|_, _| {}).unwrap();
    WeightFile::open_verified(&path).unwrap()
}

/// A shape for q8_0: n_embd 96 (3 blocks), 8 heads of 12, MLP 392 wide (its down projection's
/// rows are not whole blocks, so it stays f16: a mixed file), untied output layer.
pub fn q8_config() -> Config {
    Config {
        n_layer: 2,
        n_head: 8,
        n_embd: 96,
        vocab_size: 50257,
        n_ctx: 40,
        mlp_hidden: 392,
        layer_norm_eps: 1e-5,
        tied_output: false,
    }
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

/// Decode steps after the prompt in the equivalence checks.
pub const DECODE_STEPS: usize = 6;

/// Every target but naive itself against naive on `file`: logits within the file's tolerance
/// ([`logit_tolerance`]) after the prompt and after each of [`DECODE_STEPS`] steps, twice (the
/// second round checks that reset() and a new prefill start from scratch).
pub fn check_against_naive(file: &WeightFile, prompt: &[u32]) {
    check_against_naive_with(file, prompt, KvDtype::F32)
}

/// [`check_against_naive`] with the keys and values cached in `kv` on every backend.
pub fn check_against_naive_with(file: &WeightFile, prompt: &[u32], kv: KvDtype) {
    let w = gpt2_backends::Model::from(file.gpt2().unwrap()).with_kv_cache(kv);
    let tolerance = logit_tolerance(&w);
    let opts = EngineOptions {
        kv_cache: kv.into(),
        ..EngineOptions::default()
    };
    let mut reference = create("naive", &w, &opts).unwrap();
    let mut want = vec![reference.prefill(prompt).unwrap().to_vec()];
    let mut fed = Vec::new();
    for _ in 0..DECODE_STEPS {
        let t = argmax(want.last().unwrap());
        fed.push(t);
        want.push(reference.step(t).unwrap().to_vec());
    }
    let dtypes: Vec<Dtype> = w.matrix_dtypes().collect();
    // A backend of another rule on these dtypes (llama.cpp's q8_0) is not held to naive's
    // logits; the harness measures its agreement instead.
    let exact =
        |t: &Target| registry::spec(t.backend).is_none_or(|s| !s.follows_other_rule(&dtypes));
    for target in targets()
        .into_iter()
        .filter(|t| !t.is_naive_on_cpu() && exact(t))
    {
        let target = target.with_kv_cache(kv);
        let name = format!("{} ({}, kv {kv})", target.label(), w.dtype_label());
        let tolerance = registry::spec(target.backend).map_or(tolerance, |s| s.logit_tolerance(&w));
        let mut engine = target.create(&w);
        for round in 0..2 {
            // The second round checks that reset() and a new prefill start from scratch.
            let got = engine.prefill(prompt).unwrap().to_vec();
            let diff = max_abs_diff(&got, &want[0]);
            assert!(
                diff <= tolerance,
                "{name} prefill (round {round}): max diff {diff}"
            );
            for (i, &t) in fed.iter().enumerate() {
                let got = engine.step(t).unwrap().to_vec();
                let diff = max_abs_diff(&got, &want[i + 1]);
                assert!(diff <= tolerance, "{name} step {i}: max diff {diff}");
            }
            assert_eq!(engine.position(), prompt.len() + DECODE_STEPS);
            engine.reset();
            assert_eq!(engine.position(), 0);
        }
    }
}

/// The simd backends on every kernel set this machine has (its SIMD one and the scalar
/// fallback) and on 1 and 3 threads, against naive on `file`.
pub fn check_simd_kernel_sets(file: &WeightFile, prompt: &[u32], kv: KvDtype) {
    use gpt2_backends::kernels::Kernels;
    use gpt2_backends::simd::{SimdEngine, SimdKvEngine};

    let w = gpt2_backends::Model::from(file.gpt2().unwrap()).with_kv_cache(kv);
    let tolerance = logit_tolerance(&w);
    let opts = EngineOptions {
        kv_cache: kv.into(),
        ..EngineOptions::default()
    };
    let mut naive = create("naive", &w, &opts).unwrap();
    let mut want = vec![naive.prefill(prompt).unwrap().to_vec()];
    let mut fed = Vec::new();
    for _ in 0..DECODE_STEPS {
        fed.push(argmax(want.last().unwrap()));
        want.push(naive.step(*fed.last().unwrap()).unwrap().to_vec());
    }
    for kernels in Kernels::available() {
        for threads in [1, 3] {
            let engines: Vec<Box<dyn Engine>> = vec![
                Box::new(
                    SimdEngine::new(w.clone(), kernels, threads)
                        .unwrap()
                        .into_engine(),
                ),
                Box::new(
                    SimdKvEngine::new(w.clone(), kernels, threads)
                        .unwrap()
                        .into_engine(),
                ),
            ];
            for mut e in engines {
                let label = format!("{} {:?} {threads} threads", e.name(), kernels.isa());
                let diff = max_abs_diff(e.prefill(prompt).unwrap(), &want[0]);
                assert!(diff <= tolerance, "{label} prefill: {diff}");
                for (i, &t) in fed.iter().enumerate() {
                    let diff = max_abs_diff(e.step(t).unwrap(), &want[i + 1]);
                    assert!(diff <= tolerance, "{label} step {i}: {diff}");
                }
            }
        }
    }
}
