//! The one table of backends: everything the rest of the program knows about a backend (its
//! name, a one-line summary, its step in the teaching ladder, what it can do, how to build it)
//! is in [`REGISTRY`], so adding a backend is one entry here and one module.

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
    pub create: Constructor,
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
    create: |w, o| {
        let engine = crate::candle_engine::CandleEngine::new(w, o.threads, o.device)?;
        Ok(Box::new(engine.into_engine()))
    },
};

/// Every backend of this build, in the ladder's order (the order `--compare` runs them; the
/// first is the default reference). `candle` is there when the `candle` feature is on (the
/// default).
#[cfg(feature = "candle")]
pub static REGISTRY: &[BackendSpec] = &[NAIVE, NDARRAY, SIMD, SIMD_KV, CANDLE];
#[cfg(not(feature = "candle"))]
pub static REGISTRY: &[BackendSpec] = &[NAIVE, NDARRAY, SIMD, SIMD_KV];

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
    }
}
