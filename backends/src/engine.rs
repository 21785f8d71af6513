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
    #[error("backend {name} is not in this build; build it with: {build}")]
    NotBuilt { name: String, build: &'static str },
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

/// A GPT-2 forward pass that can be driven token by token: what the harness holds.
/// Every backend gets it from [`Sequenced`] (its [`Forward`] plus the sequence's checks and
/// state, written once); the test engines of `crate::testing` implement it directly, as
/// wrappers around another engine.
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

/// What a backend computes: the logits of the last position of a sequence. The sequence, its
/// checks (a non-empty prompt, ids in the vocabulary, room in the context) and `reset` are
/// [`Sequenced`]'s, the same for every backend; a backend says only how it computes.
pub trait Forward {
    /// Short name used on the command line (`naive`, `ndarray`, ...).
    fn name(&self) -> &'static str;

    /// Capabilities and resources, for reports.
    fn info(&self) -> EngineInfo;

    fn config(&self) -> &Config;

    /// The backend's per-operation timer ([`crate::profile`]), which its operations mark.
    fn profiler(&mut self) -> &mut Profiler;

    /// Computes the logits of the last of `tokens` (the whole sequence so far, checked) for
    /// [`Forward::logits`]. The last `new` tokens are new since the previous call; the others
    /// were computed by the earlier calls of this sequence (`new == tokens.len()` starts one).
    /// A backend without a cache recomputes all of them, one with a cache the new ones only.
    /// After an error the sequence is forgotten: the next call starts one.
    fn forward(&mut self, tokens: &[u32], new: usize) -> Result<(), EngineError>;

    /// The logits of the last [`Forward::forward`], `vocab_size` values.
    fn logits(&self) -> &[f32];

    /// This backend as an [`Engine`].
    fn into_engine(self) -> Sequenced<Self>
    where
        Self: Sized,
    {
        Sequenced::new(self)
    }
}

/// A [`Forward`] driven token by token: the token sequence and its checks, kept once for every
/// backend. `prefill` and `step` check their input before any work and hand the backend the
/// whole sequence with the count of new tokens, so a backend with a cache and one without are
/// the same to drive.
pub struct Sequenced<F> {
    backend: F,
    tokens: Vec<u32>,
}

impl<F: Forward> Sequenced<F> {
    pub fn new(backend: F) -> Self {
        Sequenced {
            backend,
            tokens: Vec::new(),
        }
    }

    /// The backend (for its own accessors: a model's configuration, its thread count, ...).
    pub fn backend(&self) -> &F {
        &self.backend
    }

    /// Runs the backend over the sequence, the last `new` tokens new; forgets the sequence if
    /// it fails (its cache may hold part of the new positions).
    fn run(&mut self, new: usize) -> Result<&[f32], EngineError> {
        if let Err(e) = self.backend.forward(&self.tokens, new) {
            self.tokens.clear();
            return Err(e);
        }
        Ok(self.backend.logits())
    }
}

impl<F: Forward> Engine for Sequenced<F> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn info(&self) -> EngineInfo {
        self.backend.info()
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], EngineError> {
        check_prompt(self.backend.config(), tokens)?;
        self.tokens.clear();
        self.tokens.extend_from_slice(tokens);
        self.run(tokens.len())
    }

    fn step(&mut self, token: u32) -> Result<&[f32], EngineError> {
        check_step(self.backend.config(), self.tokens.len(), token)?;
        self.tokens.push(token);
        self.run(1)
    }

    fn reset(&mut self) {
        self.tokens.clear();
    }

    fn position(&self) -> usize {
        self.tokens.len()
    }

    fn profiler(&mut self) -> &mut Profiler {
        self.backend.profiler()
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
fn check_prompt(config: &Config, tokens: &[u32]) -> Result<(), EngineError> {
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
fn check_step(config: &Config, position: usize, token: u32) -> Result<(), EngineError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that records what it was handed, and fails when told to.
    struct Recorder {
        config: Config,
        calls: Vec<(Vec<u32>, usize)>,
        fail_next: bool,
        logits: Vec<f32>,
        profiler: Profiler,
    }

    impl Forward for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }

        fn info(&self) -> EngineInfo {
            unimplemented!("not needed by these tests")
        }

        fn config(&self) -> &Config {
            &self.config
        }

        fn profiler(&mut self) -> &mut Profiler {
            &mut self.profiler
        }

        fn forward(&mut self, tokens: &[u32], new: usize) -> Result<(), EngineError> {
            self.calls.push((tokens.to_vec(), new));
            if std::mem::take(&mut self.fail_next) {
                return Err(EngineError::Backend {
                    backend: "recorder",
                    message: "told to fail".into(),
                });
            }
            self.logits = vec![tokens.len() as f32];
            Ok(())
        }

        fn logits(&self) -> &[f32] {
            &self.logits
        }
    }

    fn engine() -> Sequenced<Recorder> {
        let config = Config {
            n_layer: 1,
            n_head: 1,
            n_embd: 4,
            vocab_size: 10,
            n_ctx: 4,
            mlp_hidden: 16,
            layer_norm_eps: 1e-5,
            tied_output: true,
        };
        Recorder {
            config,
            calls: Vec::new(),
            fail_next: false,
            logits: Vec::new(),
            profiler: Profiler::default(),
        }
        .into_engine()
    }

    #[test]
    fn a_backend_gets_the_whole_sequence_and_the_count_of_new_tokens() {
        let mut e = engine();
        assert_eq!(e.prefill(&[1, 2]).unwrap(), [2.0]);
        assert_eq!(e.step(3).unwrap(), [3.0]);
        assert_eq!(e.position(), 3);
        assert_eq!(e.prefill(&[4]).unwrap(), [1.0]);
        let calls = &e.backend().calls;
        assert_eq!(calls, &[(vec![1, 2], 2), (vec![1, 2, 3], 1), (vec![4], 1)]);
    }

    #[test]
    fn input_is_checked_before_the_backend_runs() {
        let mut e = engine();
        assert_eq!(e.step(1), Err(EngineError::NotStarted));
        assert_eq!(e.prefill(&[]), Err(EngineError::EmptyPrompt));
        assert!(matches!(
            e.prefill(&[10]),
            Err(EngineError::TokenOutOfRange { token: 10, .. })
        ));
        assert!(matches!(
            e.prefill(&[1; 5]),
            Err(EngineError::ContextFull { n_ctx: 4 })
        ));
        e.prefill(&[1, 2, 3, 4]).unwrap();
        assert!(matches!(
            e.step(1),
            Err(EngineError::ContextFull { n_ctx: 4 })
        ));
        e.reset();
        assert_eq!(e.position(), 0);
        assert_eq!(e.step(1), Err(EngineError::NotStarted));
        // Only the one valid prefill reached the backend.
        assert_eq!(e.backend().calls.len(), 1);
    }

    #[test]
    fn a_failed_forward_forgets_the_sequence() {
        let mut e = engine();
        e.prefill(&[1, 2]).unwrap();
        e.backend.fail_next = true;
        assert!(e.step(3).is_err());
        assert_eq!(e.position(), 0);
        assert_eq!(e.step(3), Err(EngineError::NotStarted));
    }
}
