//! Where a forward pass spends its time, per GPT-2 operation (`gpt2-bench --profile`).
//!
//! Every backend follows each operation of its forward pass with a mark on a [`PhaseClock`]
//! (`clock.mark(Op::LayerNorm)`), which charges the operation with the time since the previous
//! mark, so the block itself stays the math: a call, then its mark. When profiling is off (the
//! default) the clock holds nothing and a mark is one predictable branch, against operations
//! that take microseconds to milliseconds, so the cost when off is nil; the clock is read only
//! when profiling is on. ([`Profiler::start`] and [`Profiler::stop`] bracket a single operation
//! outside a pass, such as simd-kv's embedding.)
//!
//! Operations that a backend fuses are charged to the first of them (a backend that adds the
//! bias inside its matrix product charges the bias to the product), and the residual additions
//! are their own line, so every backend's table adds up the same way.

use std::time::Instant;

/// The operations of GPT-2's forward pass, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Token plus position embedding.
    Embedding,
    /// Every layer norm (two per block and the final one).
    LayerNorm,
    /// x @ W_qkv + b: the fused query, key and value projection.
    QkvProjection,
    /// Scores, causal mask, softmax and the weighted sum of values (and the KV-cache writes).
    Attention,
    /// The attention output projection.
    OutputProjection,
    /// The MLP's first product (C -> 4C).
    MlpUp,
    Gelu,
    /// The MLP's second product (4C -> C).
    MlpDown,
    /// The two residual additions per block.
    Residual,
    /// The final product with the token embeddings: the logits.
    OutputLayer,
    /// A whole forward pass, for a backend that times no operation inside it (llama.cpp).
    Whole,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Embedding,
        Op::LayerNorm,
        Op::QkvProjection,
        Op::Attention,
        Op::OutputProjection,
        Op::MlpUp,
        Op::Gelu,
        Op::MlpDown,
        Op::Residual,
        Op::OutputLayer,
        Op::Whole,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Embedding => "embedding",
            Op::LayerNorm => "layernorm",
            Op::QkvProjection => "QKV projection",
            Op::Attention => "attention",
            Op::OutputProjection => "output projection",
            Op::MlpUp => "MLP up",
            Op::Gelu => "GELU",
            Op::MlpDown => "MLP down",
            Op::Residual => "residual add",
            Op::OutputLayer => "output layer (logits)",
            Op::Whole => "whole forward (not split)",
        }
    }
}

/// Nanoseconds per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpTimes {
    pub ns: [u64; Op::ALL.len()],
}

impl OpTimes {
    pub fn get(&self, op: Op) -> u64 {
        self.ns[op as usize]
    }

    pub fn total_ns(&self) -> u64 {
        self.ns.iter().sum()
    }

    pub fn add(&mut self, other: &OpTimes) {
        for (a, b) in self.ns.iter_mut().zip(other.ns) {
            *a += b;
        }
    }
}

/// A clock for a sequence of operations: [`PhaseClock::mark`] charges an operation with the time
/// since the previous mark (or since the clock was made). When profiling is off it holds nothing
/// and each mark is one untaken branch, so a forward pass keeps its math flat: a call, then its
/// mark, as in `naive::block_forward`.
#[derive(Debug)]
pub struct PhaseClock(Option<(Instant, OpTimes)>);

impl PhaseClock {
    /// A clock that starts now when `on`, else one that records nothing.
    pub fn new(on: bool) -> Self {
        PhaseClock(on.then(|| (Instant::now(), OpTimes::default())))
    }

    /// Charges `op` with the time since the previous mark.
    #[inline]
    pub fn mark(&mut self, op: Op) {
        if let Some((last, times)) = &mut self.0 {
            let now = Instant::now();
            times.ns[op as usize] += u64::try_from((now - *last).as_nanos()).unwrap_or(u64::MAX);
            *last = now;
        }
    }

    /// The times charged so far (`None` when off).
    pub fn into_times(self) -> Option<OpTimes> {
        self.0.map(|(_, times)| times)
    }
}

/// Accumulates [`OpTimes`] while enabled.
#[derive(Debug, Clone, Default)]
pub struct Profiler {
    enabled: bool,
    times: OpTimes,
}

impl Profiler {
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        self.times = OpTimes::default();
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Marks the start of an operation; `None` (and no clock read) when off.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.enabled.then(Instant::now)
    }

    /// Charges the time since `start` to `op`.
    #[inline]
    pub fn stop(&mut self, op: Op, start: Option<Instant>) {
        if let Some(t) = start {
            self.times.ns[op as usize] += u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        }
    }

    /// A [`PhaseClock`] that starts now, recording only when profiling is on; hand it back with
    /// [`Profiler::add_clock`].
    pub fn clock(&self) -> PhaseClock {
        PhaseClock::new(self.enabled)
    }

    /// Adds the times a [`PhaseClock`] charged.
    pub fn add_clock(&mut self, clock: PhaseClock) {
        if let Some(times) = clock.into_times() {
            self.add(&times);
        }
    }

    /// Adds times measured elsewhere (by a worker thread); ignored when off.
    pub fn add(&mut self, times: &OpTimes) {
        if self.enabled {
            self.times.add(times);
        }
    }

    /// The times since the last call (and resets them); `None` when off.
    pub fn take(&mut self) -> Option<OpTimes> {
        self.enabled.then(|| std::mem::take(&mut self.times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_records_nothing_on_records_each_op() {
        let mut p = Profiler::default();
        let t = p.start();
        assert!(t.is_none());
        p.stop(Op::Gelu, t);
        assert_eq!(p.take(), None);

        p.set_enabled(true);
        let t = p.start();
        std::thread::sleep(std::time::Duration::from_millis(2));
        p.stop(Op::Gelu, t);
        let times = p.take().unwrap();
        assert!(times.get(Op::Gelu) >= 2_000_000);
        assert_eq!(times.total_ns(), times.get(Op::Gelu));
        assert_eq!(p.take().unwrap().total_ns(), 0, "take resets");
    }
}
