//! The seam between the harness and the backends.
//!
//! One trait for every backend, shaped so that a backend with a KV cache and one without need no
//! special case in the harness: both are driven by `prefill(prompt)` then `step(token)` calls,
//! and both return the logits of the last position only. A backend without a cache keeps the
//! token history and recomputes the whole context on each step; one with a cache computes one new
//! position. The greedy choice (or sampling) is made by the caller, the same way for every
//! backend, so a difference in tokens is always a difference in arithmetic.

use gpt2_weights::Config;

use crate::profile::{OpTimes, Profiler};

/// Where a backend computes: the CPU, or a CUDA GPU (the `candle` backend, built with the
/// `cuda` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Ok(DeviceChoice::Cuda(ordinal)),
                _ => Err(format!(
                    "unknown device {s:?}; use cpu, cuda or cuda:N (N = GPU ordinal)"
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// What a backend is and does, for the results table and JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Whether keys and values of past positions are cached (one position per step) or the whole
    /// context is recomputed every step.
    pub kv_cache: bool,
    /// Threads the backend actually computes with.
    pub threads: usize,
    /// Element type of the weight matrices (`f32`, `f16`, `bf16`, `q8_0`, or `q8_0+f16` for a
    /// file that mixes them); activations are f32 in every backend.
    pub dtype: String,
    /// Bytes of KV cache allocated (0 without a cache).
    pub kv_cache_bytes: u64,
    /// Bytes of weights copied out of the mapped file at start-up (0 for backends that compute
    /// on the mapped pages in place).
    pub weights_copied_bytes: u64,
    /// Bytes of activation buffers kept between calls; `None` for backends that allocate them
    /// per call.
    pub scratch_bytes: Option<u64>,
    /// Where it computes: `cpu`, or `cuda:N`.
    pub device: String,
    /// One line on how it computes, for people reading the table.
    pub summary: &'static str,
    /// The instruction set its kernels run: `avx512`, `avx2+fma`, `neon` or `scalar` for the
    /// hand-written kernels (`GPT2_BENCH_ISA` chooses), or the library that chooses its own
    /// (`matrixmultiply`, `gemm`, `cuda`).
    pub isa: &'static str,
}

/// Errors a backend can return. Input errors are checked before any work is done.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("the prompt is empty; give at least one token")]
    EmptyPrompt,
    #[error("token id {token} is outside the vocabulary (0..{vocab_size})")]
    TokenOutOfRange { token: u32, vocab_size: u32 },
    #[error("the context is full: this model has {n_ctx} positions")]
    ContextFull { n_ctx: u32 },
    #[error("step() called before prefill()")]
    NotStarted,
    #[error("unknown backend {name:?}; valid backends: {valid}")]
    UnknownBackend { name: String, valid: String },
    #[error(
        "logit {index} is {value} at step {step} (step 0 is the prefill): the model \
         produced a non-finite number, so no token can be chosen; check the weight file for \
         NaN or huge values"
    )]
    /// Callers name the backend (`backend`) in their context.
    NonFiniteLogits {
        backend: &'static str,
        step: usize,
        index: usize,
        value: f32,
    },
    #[error(
        "{backend}: needs {needed} of memory for its buffers (largest: {largest}), more than \
         this machine's {available}; this model's shape (n_ctx, n_embd, mlp_hidden, n_layer) is \
         too large for this backend here (docs/reliability.md: largest supported shapes)"
    )]
    OutOfMemory {
        backend: &'static str,
        needed: String,
        largest: String,
        available: String,
    },
    #[error("{backend}: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
}

/// A GPT-2 forward pass that can be driven token by token.
pub trait Engine {
    /// Short name used on the command line (`naive`, `ndarray`, ...).
    fn name(&self) -> &'static str;

    /// Capabilities and resources, for reports.
    fn info(&self) -> EngineInfo;

    /// Starts a new sequence with `tokens` (forgetting any previous one) and returns the logits
    /// of its last position, `vocab_size` values.
    fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], EngineError>;

    /// Appends one token to the sequence and returns the logits of the new last position.
    fn step(&mut self, token: u32) -> Result<&[f32], EngineError>;

    /// Forgets the current sequence (keeps allocations).
    fn reset(&mut self);

    /// Number of positions in the current sequence.
    fn position(&self) -> usize;

    /// The engine's per-operation timer ([`crate::profile`]), which its operations mark.
    fn profiler(&mut self) -> &mut Profiler;

    /// Turns per-operation timing on or off (off by default; off costs one branch per
    /// operation).
    fn set_profiling(&mut self, on: bool) {
        self.profiler().set_enabled(on);
    }

    /// Time spent per operation since the last call (and resets it); `None` when off.
    fn take_profile(&mut self) -> Option<OpTimes> {
        self.profiler().take()
    }
}

/// Checks that every logit is finite: one NaN in the weights makes every logit NaN, and a greedy
/// choice over NaN picks id 0 on every backend alike, so the run would "match" on nonsense.
/// `step` is 0 for the prefill's logits, n for the n-th decode step's.
pub fn check_finite(backend: &'static str, step: usize, logits: &[f32]) -> Result<(), EngineError> {
    match logits.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(EngineError::NonFiniteLogits {
            backend,
            step,
            index,
            value: logits[index],
        }),
    }
}

/// Checks a prompt before any work: non-empty, ids in the vocabulary, fits in the context.
pub fn check_prompt(config: &Config, tokens: &[u32]) -> Result<(), EngineError> {
    if tokens.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if tokens.len() > config.n_ctx as usize {
        return Err(EngineError::ContextFull {
            n_ctx: config.n_ctx,
        });
    }
    check_ids(config, tokens)
}

/// Checks that a step fits: a sequence has started and there is room for one more position.
pub fn check_step(config: &Config, position: usize, token: u32) -> Result<(), EngineError> {
    if position == 0 {
        return Err(EngineError::NotStarted);
    }
    if position >= config.n_ctx as usize {
        return Err(EngineError::ContextFull {
            n_ctx: config.n_ctx,
        });
    }
    check_ids(config, &[token])
}

fn check_ids(config: &Config, tokens: &[u32]) -> Result<(), EngineError> {
    match tokens.iter().find(|&&t| t >= config.vocab_size) {
        Some(&token) => Err(EngineError::TokenOutOfRange {
            token,
            vocab_size: config.vocab_size,
        }),
        None => Ok(()),
    }
}

/// The token history of a backend that recomputes the whole context each step, with the checks
/// every such backend needs. It turns `prefill`/`step` into "run the model on this sequence".
#[derive(Debug, Default, Clone)]
pub struct History {
    tokens: Vec<u32>,
}

impl History {
    /// Replaces the history with a checked prompt.
    pub fn start(&mut self, config: &Config, tokens: &[u32]) -> Result<&[u32], EngineError> {
        check_prompt(config, tokens)?;
        self.tokens.clear();
        self.tokens.extend_from_slice(tokens);
        Ok(&self.tokens)
    }

    /// Appends a checked token.
    pub fn push(&mut self, config: &Config, token: u32) -> Result<&[u32], EngineError> {
        check_step(config, self.tokens.len(), token)?;
        self.tokens.push(token);
        Ok(&self.tokens)
    }

    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
