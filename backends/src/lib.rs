//! The GPT-2 backends of gpt2-bench, behind one [`Engine`] trait.
//!
//! Every backend computes the same function, GPT-2's forward pass, from the same zero-copy weight
//! views ([`gpt2_weights::Gpt2Weights`]); they differ only in how. Read them in this order, each
//! one changing one thing from the one before:
//!
//! | backend | file | what it changes |
//! |---|---|---|
//! | `naive` | [`naive`] | the reference: scalar loops, one function per operation |
//! | `ndarray` | [`ndarray_engine`] | arrays and GEMM calls (matrixmultiply) instead of loops |
//! | `simd` | [`simd`], [`kernels`] | hand-written AVX2/FMA (or NEON) kernels, all cores, a thread pool |
//! | `simd-kv` | [`simd`] | the same kernels plus a KV cache: one new position per step |
//! | `candle` | [`candle_engine`] | a tensor library (candle-core) instead of our own kernels; KV cache; CUDA behind a feature |
//! | `llama.cpp` | `llama_cpp_engine` | llama.cpp itself (feature `llama-cpp`) on the same weights as GGUF |
//!
//! [`create`] builds a backend by name; [`REGISTRY`] lists them, with what each can do.

// Output goes through gpt2_process::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "candle")]
pub mod candle_engine;
pub mod dequant;
pub mod engine;
pub mod kernels;
#[cfg(feature = "llama-cpp")]
pub mod llama_cpp_engine;
pub mod memory;
pub mod naive;
pub mod ndarray_engine;
pub mod profile;
pub mod registry;
pub mod simd;
pub mod testing;

pub use engine::{DeviceChoice, Engine, EngineError, EngineInfo, Forward, Sequenced};
use gpt2_weights::{Gpt2Weights, KvDtype};
pub use registry::{BackendSpec, REGISTRY, names as backend_names};

/// Largest |logit difference| accepted between backends, and against Hugging Face transformers
/// in the golden check. GPT-2's logits are in the tens to hundreds (synthetic ones have a
/// standard deviation of about 8); backends that sum in a different order differ by ~1e-5 per
/// value, so this leaves two orders of magnitude of margin while catching any real bug (which
/// moves logits by O(1)).
pub const LOGIT_TOLERANCE: f32 = 2e-3;

/// Largest |logit difference| accepted between backends when keys and values are cached in f16
/// (`--kv-cache f16`, `gpt2_weights::dtype`). Each backend rounds the keys and values it
/// computed to f16; where two backends' f32 sums of one value fall on either
/// side of a rounding boundary (a few values per position), their cached values differ by one
/// f16 step (2^-11 relative), which moves the logits of the test models by up to 2.6e-3
/// (measured: bf16 tiny, candle against naive). 2e-2 leaves a real bug's O(1) 50x away.
pub const F16_KV_LOGIT_TOLERANCE: f32 = 2e-2;

/// A model as a backend runs it: the weight file's view ([`Gpt2Weights`], what the file holds)
/// and the run-time choices that change what is computed, today one: what attention's keys and
/// values are cached in (`--kv-cache`, resolved by [`KvCache::resolve`]). Kept apart so that the
/// weight crate describes files only. Derefs to the weights.
#[derive(Debug, Clone)]
pub struct Model<'w> {
    pub weights: Gpt2Weights<'w>,
    pub kv_cache: gpt2_weights::KvDtype,
}

impl<'w> Model<'w> {
    /// The same model with its keys and values cached in `kv` (`gpt2_weights::dtype`).
    pub fn with_kv_cache(mut self, kv: gpt2_weights::KvDtype) -> Self {
        self.kv_cache = kv;
        self
    }
}

/// The weights with an f32 key/value cache, the default.
impl<'w> From<Gpt2Weights<'w>> for Model<'w> {
    fn from(weights: Gpt2Weights<'w>) -> Self {
        Model {
            weights,
            kv_cache: gpt2_weights::KvDtype::F32,
        }
    }
}

impl<'w> std::ops::Deref for Model<'w> {
    type Target = Gpt2Weights<'w>;
    fn deref(&self) -> &Gpt2Weights<'w> {
        &self.weights
    }
}

/// The logit tolerance between backends on `m`: [`LOGIT_TOLERANCE`], or
/// [`F16_KV_LOGIT_TOLERANCE`] where the keys and values are cached in f16.
pub fn logit_tolerance(m: &Model<'_>) -> f32 {
    match m.kv_cache {
        gpt2_weights::KvDtype::F32 => LOGIT_TOLERANCE,
        gpt2_weights::KvDtype::F16 => F16_KV_LOGIT_TOLERANCE,
    }
}

/// Options every backend understands, and the process settings they imply.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Threads to compute with (backends that are single-threaded ignore it and report 1).
    pub threads: usize,
    /// Where the `candle` backend computes; the other backends always run on the CPU.
    pub device: DeviceChoice,
    /// Also accept the test-only backends of [`testing`] (used by the harness's CLI tests).
    pub allow_test_engines: bool,
    /// What attention's keys and values are cached in (`gpt2_weights::dtype`).
    pub kv_cache: KvCache,
}

/// The `--kv-cache` choice: f32, f16, or `auto` (f16 for a file whose matrices are not all f32,
/// f32 for an f32 file: what a llama.cpp user of a reduced-precision file gets, with the f32
/// reference left exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCache {
    #[default]
    F32,
    F16,
    Auto,
}

impl KvCache {
    /// The cache dtype for the model `w`.
    pub fn resolve(self, w: &Gpt2Weights<'_>) -> KvDtype {
        match self {
            KvCache::F32 => KvDtype::F32,
            KvCache::F16 => KvDtype::F16,
            KvCache::Auto if w.all_f32() => KvDtype::F32,
            KvCache::Auto => KvDtype::F16,
        }
    }
}

impl From<KvDtype> for KvCache {
    fn from(kv: KvDtype) -> Self {
        match kv {
            KvDtype::F32 => KvCache::F32,
            KvDtype::F16 => KvCache::F16,
        }
    }
}

impl std::str::FromStr for KvCache {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvCache::F32),
            "f16" => Ok(KvCache::F16),
            "auto" => Ok(KvCache::Auto),
            _ => Err(format!(
                "unknown key/value cache dtype {s:?}; use f32, f16 or auto (f16 for \
                 reduced-precision files)"
            )),
        }
    }
}

impl std::fmt::Display for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvCache::F32 => "f32",
            KvCache::F16 => "f16",
            KvCache::Auto => "auto",
        })
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            device: DeviceChoice::Cpu,
            allow_test_engines: false,
            kv_cache: KvCache::F32,
        }
    }
}

impl EngineOptions {
    /// Sets the environment variables the libraries behind the backends read once, at their
    /// first use: matrixmultiply's thread count (`MATMUL_NUM_THREADS`, the ndarray backend),
    /// rayon's (`RAYON_NUM_THREADS`: candle's matrix products), and candle's spin limit.
    ///
    /// candle runs elementwise operations on its own worker threads, which spin for a while
    /// after each operation (25,000 turns by default) before sleeping; on a machine with as many
    /// cores as threads they then take cores from the matrix products' rayon workers. A short
    /// spin (500) measured ~10% faster prefill here (docs/performance.md, section "candle"); a
    /// value the user set is kept.
    ///
    /// # Safety
    /// No other thread may read or write the environment while this runs: call it early in
    /// `main`, before any backend, pool or thread that reads the environment exists.
    pub unsafe fn apply_process_settings(&self) {
        let threads = self.threads.to_string();
        // SAFETY: the caller guarantees that no other thread touches the environment now.
        unsafe {
            std::env::set_var("MATMUL_NUM_THREADS", &threads);
            std::env::set_var("RAYON_NUM_THREADS", &threads);
            if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
                std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "500");
            }
        }
    }
}

/// Builds the backend called `name` over `weights`.
pub fn create<'w>(
    name: &str,
    weights: &Gpt2Weights<'w>,
    options: &EngineOptions,
) -> Result<Box<dyn Engine + 'w>, EngineError> {
    // The model as it is run: its keys and values cached in `options.kv_cache`.
    let weights = &Model {
        weights: weights.clone(),
        kv_cache: options.kv_cache.resolve(weights),
    };
    if let Some(spec) = registry::spec(name) {
        return (spec.create)(weights, options);
    }
    if let Some(test) = testing::spec(name).filter(|_| options.allow_test_engines) {
        return (test.create)(weights, options);
    }
    if let Some(build) = registry::build_command(name) {
        return Err(EngineError::NotBuilt {
            name: name.to_string(),
            build,
        });
    }
    Err(EngineError::UnknownBackend {
        name: name.to_string(),
        valid: registry::names().join(", "),
    })
}
