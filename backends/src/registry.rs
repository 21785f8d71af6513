//! The one table of backends: everything the rest of the program knows about a backend (its
//! name, a one-line summary, its step in the teaching ladder, what it can do, how to build it)
//! is in [`REGISTRY`], so adding a backend is one entry here and one module.

use gpt2_weights::Dtype;

use crate::engine::{Engine, EngineError, Forward};
use crate::{EngineOptions, Model, kernels, naive, ndarray_engine, simd};

/// Builds a backend over a model's borrowed weights.
pub type Constructor =
    for<'w> fn(&Model<'w>, &EngineOptions) -> Result<Box<dyn Engine + 'w>, EngineError>;

/// One backend.
pub struct BackendSpec {
    /// Name on the command line and in reports.
    pub name: &'static str,
    /// One line on how it computes.
    pub summary: &'static str,
    /// `--explain`: what it changes from the previous backend in the ladder.
    pub ladder: &'static str,
    /// Whether it keeps a KV cache (one position per decode step) or recomputes the context.
    pub kv_cache: bool,
    /// Whether it computes with several threads (`--threads`).
    pub threaded: bool,
    /// Devices it runs on (`--device`): every backend runs on `cpu`.
    pub devices: &'static [&'static str],
    /// Weight dtypes it computes by another rule than the reference (llama.cpp rounds the
    /// inputs of q8_0 products to 8-bit blocks, gpt2-bench to 16-bit ones), so that its tokens
    /// there cannot be equal by construction: the harness reports its agreement with the
    /// reference (`different rule`) instead of failing the run. Empty for every backend meant
    /// to be exact.
    pub other_rule: &'static [Dtype],
    /// `Some(t)`: its arithmetic rounds differently from the reference's in every dtype
    /// (llama.cpp: GELU read from an f16 table), by at most `t` in the logits of the test
    /// models, so that even its f32 tokens can part from the reference's where the reference's
    /// top two are closer than that: the harness then compares it by agreement too. `None`:
    /// it differs by summation order only, within the common tolerance
    /// ([`crate::logit_tolerance`]), and its tokens must be the reference's.
    pub logit_tolerance: Option<f32>,
    pub create: Constructor,
}

impl BackendSpec {
    /// The largest |logit difference| from the reference it is held to on `model`.
    pub fn logit_tolerance(&self, model: &crate::Model<'_>) -> f32 {
        let common = crate::logit_tolerance(model);
        self.logit_tolerance.map_or(common, |own| own.max(common))
    }

    /// Whether it computes a model with these matrix dtypes by another rule than the reference.
    pub fn follows_other_rule(&self, dtypes: &[Dtype]) -> bool {
        dtypes.iter().any(|d| self.other_rule.contains(d))
    }

    /// Whether the harness judges it on a model with these dtypes by its agreement with the
    /// reference rather than by equal tokens: another rule, or rounding of its own.
    pub fn judged_by_agreement(&self, dtypes: &[Dtype]) -> bool {
        self.logit_tolerance.is_some() || self.follows_other_rule(dtypes)
    }
}

impl std::fmt::Debug for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

const NAIVE: BackendSpec = BackendSpec {
    name: "naive",
    summary: "plain scalar loops, one function per GPT-2 operation; the reference",
    ladder: "naive is the reference: every GPT-2 operation is one plain function of scalar loops \
             (backends/src/naive.rs), one thread, no cache: each step runs the whole context \
             through the model again.",
    kv_cache: false,
    threaded: false,
    devices: &["cpu"],
    other_rule: &[],
    logit_tolerance: None,
    create: |w, _| Ok(Box::new(naive::NaiveEngine::new(w.clone()).into_engine())),
};

const NDARRAY: BackendSpec = BackendSpec {
    name: "ndarray",
    summary: "the same math on ndarray + matrixmultiply GEMM",
    ladder: "ndarray changes how the arithmetic is done, not what: every matrix product becomes \
             one GEMM call (matrixmultiply: packed, cache-blocked, threaded), attention becomes \
             two products per head. Still no cache: each step recomputes every position.",
    kv_cache: false,
    threaded: true,
    devices: &["cpu"],
    other_rule: &[],
    logit_tolerance: None,
    create: |w, o| {
        let threads = o.threads.clamp(1, ndarray_engine::MAX_MATMUL_THREADS);
        let engine = ndarray_engine::NdarrayEngine::new(w.clone(), threads)?;
        Ok(Box::new(engine.into_engine()))
    },
};

const SIMD: BackendSpec = BackendSpec {
    name: "simd",
    summary: "hand-written AVX-512/AVX2, NEON or scalar kernels, all cores",
    ladder: "simd replaces the library with hand-written AVX-512 or AVX2 kernels (NEON on ARM, \
             scalar fallback), a 6-row register tile for matrix-matrix and a row-streaming matrix-vector \
             kernel, on a thread pool. Still no cache: each step recomputes every position.",
    kv_cache: false,
    threaded: true,
    devices: &["cpu"],
    other_rule: &[],
    logit_tolerance: None,
    create: |w, o| {
        let engine = simd::SimdEngine::new(w.clone(), kernels::Kernels::detect(), o.threads)?;
        Ok(Box::new(engine.into_engine()))
    },
};

const SIMD_KV: BackendSpec = BackendSpec {
    name: "simd-kv",
    summary: "the simd kernels plus a KV cache: prefill once, then one position per step",
    ladder: "simd-kv keeps the simd kernels and adds a KV cache: the prompt is prefilled once, \
             then each step computes ONE new position (a matrix-vector pass over the weights) and \
             attends over the cached keys and values, instead of recomputing the context. Its \
             decode step also runs as one team of threads rather than one dispatch per operation.",
    kv_cache: true,
    threaded: true,
    devices: &["cpu"],
    other_rule: &[],
    logit_tolerance: None,
    create: |w, o| {
        let engine = simd::SimdKvEngine::new(w.clone(), kernels::Kernels::detect(), o.threads)?;
        Ok(Box::new(engine.into_engine()))
    },
};

#[cfg(feature = "candle")]
const CANDLE: BackendSpec = BackendSpec {
    name: "candle",
    summary: "candle-core tensors with a KV cache; CUDA with the `cuda` feature",
    ladder: "candle computes what simd-kv computes (with a KV cache) but with candle-core tensor \
             operations instead of our kernels: the library's matrix products, a copy of the \
             weights in its own memory, and CUDA behind a cargo feature.",
    kv_cache: true,
    threaded: true,
    devices: &["cpu", "cuda"],
    other_rule: &[],
    logit_tolerance: None,
    create: |w, o| {
        let engine = crate::candle_engine::CandleEngine::new(w, o.threads, o.device)?;
        Ok(Box::new(engine.into_engine()))
    },
};

#[cfg(feature = "llama-cpp")]
const LLAMA_CPP: BackendSpec = BackendSpec {
    name: crate::llama_cpp_engine::NAME,
    summary: "llama.cpp itself (C API, ggml kernels) on the same weights as GGUF",
    ladder: "llama.cpp is the engine most people run GPT-style models on a CPU with: ggml's \
             hand-written kernels, a KV cache, its own thread pool. It reads the very bytes the \
             others read (the weight file written as a GGUF), so its row says how gpt2-bench's \
             engines compare with it on identical weights and tokens.",
    kv_cache: true,
    threaded: true,
    devices: &["cpu"],
    other_rule: &[Dtype::Q8_0, Dtype::Bf16],
    logit_tolerance: Some(crate::llama_cpp_engine::LOGIT_TOLERANCE),
    create: |w, o| {
        let engine = crate::llama_cpp_engine::LlamaCppEngine::new(w, o.threads)?;
        Ok(Box::new(engine.into_engine()))
    },
};

/// The backends a build can have, in the ladder's order, each with whether this build has it
/// (`candle` needs the `candle` feature, `llama.cpp` the `llama-cpp` one) and, if not, the
/// command that builds it.
pub const OPTIONAL: &[(&str, bool, &str)] = &[
    (
        "candle",
        cfg!(feature = "candle"),
        "cargo build --release (the default features include candle)",
    ),
    (
        "llama.cpp",
        cfg!(feature = "llama-cpp"),
        "RUSTFLAGS=\"-C target-cpu=native\" cargo build --release --features llama-cpp (needs \
         cmake, a C++ compiler and libclang)",
    ),
];

/// Every backend of this build, in the ladder's order (the order `--compare` runs them; the
/// first is the default reference). `candle` is there when the `candle` feature is on (the
/// default), `llama.cpp` with the `llama-cpp` feature.
pub static REGISTRY: &[BackendSpec] = &[
    NAIVE,
    NDARRAY,
    SIMD,
    SIMD_KV,
    #[cfg(feature = "candle")]
    CANDLE,
    #[cfg(feature = "llama-cpp")]
    LLAMA_CPP,
];

/// How to build the backend called `name` when it is one of [`OPTIONAL`] and this build lacks
/// it; `None` for a backend of this build or no backend at all.
pub fn build_command(name: &str) -> Option<&'static str> {
    OPTIONAL
        .iter()
        .find(|(n, built, _)| *n == name && !built)
        .map(|&(_, _, build)| build)
}

/// The backend called `name`, if this build has it.
pub fn spec(name: &str) -> Option<&'static BackendSpec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// The names of [`REGISTRY`], in order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_backend_runs_on_the_cpu() {
        let names = names();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            names.len(),
            unique.len(),
            "a backend name appears twice: {names:?}"
        );
        assert_eq!(names[0], "naive", "the reference comes first");
        assert!(REGISTRY.iter().all(|s| s.devices.contains(&"cpu")));
        assert_eq!(spec("simd-kv").map(|s| s.kv_cache), Some(true));
        assert!(spec("nope").is_none());
        assert_eq!(spec("candle").is_some(), cfg!(feature = "candle"));
        assert_eq!(spec("llama.cpp").is_some(), cfg!(feature = "llama-cpp"));
        for (name, built, _) in OPTIONAL {
            assert_eq!(spec(name).is_some(), *built, "{name}");
        }
        // Only llama.cpp's q8_0 and bf16 follow another rule.
        for s in REGISTRY {
            assert_eq!(
                s.follows_other_rule(&[Dtype::F32, Dtype::Q8_0]),
                s.name == "llama.cpp",
                "{}",
                s.name
            );
            assert!(!s.follows_other_rule(&[Dtype::F32, Dtype::F16]));
            // llama.cpp rounds its own way in every dtype; the others are exact.
            assert_eq!(
                s.judged_by_agreement(&[Dtype::F32]),
                s.name == "llama.cpp",
                "{}",
                s.name
            );
        }
    }
}
