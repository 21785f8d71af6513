//! Test-only backends: engines that are wrong on purpose, to prove that the harness's
//! equivalence check catches them. Never listed in [`crate::REGISTRY`]; the harness accepts
//! them only when `GPT2_BENCH_TEST_ENGINES=1` is set.

use crate::engine::{Engine, EngineError, EngineInfo};
use crate::profile::OpTimes;

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

    fn set_profiling(&mut self, on: bool) {
        self.inner.set_profiling(on);
    }

    fn take_profile(&mut self) -> Option<OpTimes> {
        self.inner.take_profile()
    }
}
