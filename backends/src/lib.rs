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
//!
//! [`create`] builds a backend by name; [`BACKENDS`] lists the names.

// Output goes through gpt2_export::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod candle_engine;
pub mod engine;
pub mod kernels;
pub mod memory;
pub mod naive;
pub mod ndarray_engine;
pub mod profile;
pub mod simd;
pub mod testing;

pub use candle_engine::DeviceChoice;
pub use engine::{Engine, EngineError, EngineInfo};
use gpt2_weights::Gpt2Weights;

/// Backend names, in the order `--compare` runs them (the first is the default reference).
pub const BACKENDS: &[&str] = &["naive", "ndarray", "simd", "simd-kv", "candle"];

/// Options every backend understands.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Threads to compute with (backends that are single-threaded ignore it and report 1).
    pub threads: usize,
    /// Where the `candle` backend computes; the other backends always run on the CPU.
    pub device: DeviceChoice,
    /// Also accept the test-only backends of [`testing`] (used by the harness's CLI tests).
    pub allow_test_engines: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            device: DeviceChoice::Cpu,
            allow_test_engines: false,
        }
    }
}

/// Builds the backend called `name` over `weights`.
pub fn create<'w>(
    name: &str,
    weights: &Gpt2Weights<'w>,
    options: &EngineOptions,
) -> Result<Box<dyn Engine + 'w>, EngineError> {
    match name {
        "naive" => Ok(Box::new(naive::NaiveEngine::new(weights.clone()))),
        "ndarray" => Ok(Box::new(ndarray_engine::NdarrayEngine::new(
            weights.clone(),
            options.threads.clamp(1, ndarray_engine::MAX_MATMUL_THREADS),
        ))),
        "simd" => Ok(Box::new(simd::SimdEngine::new(
            weights.clone(),
            kernels::Kernels::detect(),
            options.threads,
        )?)),
        "simd-kv" => Ok(Box::new(simd::SimdKvEngine::new(
            weights.clone(),
            kernels::Kernels::detect(),
            options.threads,
        )?)),
        "candle" => Ok(Box::new(candle_engine::CandleEngine::new(
            weights,
            options.threads,
            options.device,
        )?)),
        testing::DIVERGENT if options.allow_test_engines => Ok(Box::new(
            testing::DivergentEngine::new(naive::NaiveEngine::new(weights.clone()), 3),
        )),
        _ => Err(EngineError::UnknownBackend {
            name: name.to_string(),
            valid: BACKENDS.join(", "),
        }),
    }
}
