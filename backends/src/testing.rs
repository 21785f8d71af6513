//! Test-only backends: engines that are wrong or slow on purpose, to prove that the harness's
//! equivalence check and regression gate catch them. Never listed in [`crate::REGISTRY`]; the harness accepts
//! them only when `GPT2_BENCH_TEST_ENGINES=1` is set.

use crate::engine::{Engine, EngineError, EngineInfo, Forward};
use crate::profile::Profiler;
use crate::registry::Constructor;
use crate::{kernels, naive, simd};

/// One test-only backend: its name on the command line and how to build it. A table of its
/// own beside [`crate::REGISTRY`], which lists what users run.
pub struct TestEngine {
    pub name: &'static str,
    pub create: Constructor,
}

/// The test-only backends, reached through [`crate::create`] when
/// `EngineOptions::allow_test_engines` is set.
pub const TEST_ENGINES: &[TestEngine] = &[
    TestEngine {
        name: DIVERGENT,
        create: |w, _| {
            Ok(Box::new(DivergentEngine::new(
                naive::NaiveEngine::new(w.clone()).into_engine(),
                3,
            )))
        },
    },
    TestEngine {
        name: SLOWED,
        create: |w, options| {
            let extra = extra_slowdown_from_env()?;
            let engine =
                simd::SimdKvEngine::new(w.clone(), kernels::Kernels::detect(), options.threads)?;
            Ok(Box::new(SlowedEngine::new(engine.into_engine(), extra)))
        },
    },
];

/// The test-only backend called `name`, if there is one.
pub fn spec(name: &str) -> Option<&'static TestEngine> {
    TEST_ENGINES.iter().find(|t| t.name == name)
}

/// Name of [`DivergentEngine`] on the command line.
pub const DIVERGENT: &str = "test-divergent";

/// Wraps a correct engine and, from decode step `from_step` on, swaps the top two logits, so
/// its greedy tokens diverge from the reference at exactly that step.
pub struct DivergentEngine<E> {
    inner: E,
    from_step: usize,
    steps: usize,
    logits: Vec<f32>,
}

impl<E: Engine> DivergentEngine<E> {
    pub fn new(inner: E, from_step: usize) -> Self {
        DivergentEngine {
            inner,
            from_step,
            steps: 0,
            logits: Vec::new(),
        }
    }
}

/// Swaps the largest and second-largest values.
fn swap_top_two(logits: &mut [f32]) {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let [first, second, ..] = order[..] {
        logits.swap(first, second);
    }
}

impl<E: Engine> Engine for DivergentEngine<E> {
    fn name(&self) -> &'static str {
        DIVERGENT
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            summary: "test only: naive with the top two logits swapped from step 3",
            ..self.inner.info()
        }
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], EngineError> {
        self.steps = 0;
        let l = self.inner.prefill(tokens)?;
        self.logits.clear();
        self.logits.extend_from_slice(l);
        Ok(&self.logits)
    }

    fn step(&mut self, token: u32) -> Result<&[f32], EngineError> {
        self.steps += 1;
        let l = self.inner.step(token)?;
        self.logits.clear();
        self.logits.extend_from_slice(l);
        if self.steps >= self.from_step {
            swap_top_two(&mut self.logits);
        }
        Ok(&self.logits)
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn position(&self) -> usize {
        self.inner.position()
    }

    fn profiler(&mut self) -> &mut Profiler {
        self.inner.profiler()
    }
}

/// Name of [`SlowedEngine`] on the command line.
pub const SLOWED: &str = "test-slowed";

/// Environment variable: the fraction of extra time [`SlowedEngine`] spends per call (0.25 makes
/// it 20% slower: 1 / 1.25 of the speed).
pub const SLOWDOWN_ENV: &str = "GPT2_BENCH_TEST_SLOWDOWN";

/// Wraps a correct engine and, after each prefill and step, keeps the core busy for `extra`
/// times the call's own duration: a known slowdown, spent computing like the real work (not
/// sleeping, which a busy machine would hide), for testing the regression gate.
pub struct SlowedEngine<E> {
    inner: E,
    extra: f64,
}

impl<E: Engine> SlowedEngine<E> {
    pub fn new(inner: E, extra: f64) -> Self {
        SlowedEngine { inner, extra }
    }
}

/// The extra fraction of [`SlowedEngine`] from [`SLOWDOWN_ENV`] (0 when unset); a value that is
/// not a finite, non-negative number is an error naming the variable.
pub fn extra_slowdown_from_env() -> Result<f64, EngineError> {
    match std::env::var(SLOWDOWN_ENV) {
        Err(_) => Ok(0.0),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(EngineError::Backend {
                backend: SLOWED,
                message: format!("{SLOWDOWN_ENV}={v:?} is not a non-negative number"),
            }),
        },
    }
}

/// Spins for `d`.
fn busy_for(d: std::time::Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

impl<E: Engine> Engine for SlowedEngine<E> {
    fn name(&self) -> &'static str {
        SLOWED
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            summary: "test only: simd-kv, then busy for GPT2_BENCH_TEST_SLOWDOWN x each call",
            ..self.inner.info()
        }
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], EngineError> {
        let (start, extra) = (std::time::Instant::now(), self.extra);
        let logits = self.inner.prefill(tokens)?;
        busy_for(start.elapsed().mul_f64(extra));
        Ok(logits)
    }

    fn step(&mut self, token: u32) -> Result<&[f32], EngineError> {
        let (start, extra) = (std::time::Instant::now(), self.extra);
        let logits = self.inner.step(token)?;
        busy_for(start.elapsed().mul_f64(extra));
        Ok(logits)
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn position(&self) -> usize {
        self.inner.position()
    }

    fn profiler(&mut self) -> &mut Profiler {
        self.inner.profiler()
    }
}
