//! A team of threads that runs one decode step together: every thread of the pool enters the
//! step once (`rayon::ThreadPool::broadcast`), walks the same list of operations
//! ([`Team::run`]), claims blocks of each operation's work from a shared counter, and meets the
//! others at a spinning barrier after it. The step is data (a slice of operations that say how
//! they split, [`TeamOp`]), so the counting of operations lives here, once, and the code that
//! does the work (`crate::simd::decode`) never numbers anything.
//!
//! Why not a parallel iterator per operation, as prefill does: a decode step of GPT-2 small is
//! ~100 short operations (a matrix-vector product takes 0.1-0.5 ms), and handing each one to the
//! pool wakes sleeping workers and collects them again. Measured on this project's 2-core
//! machine, interleaved in one process, the same matrix-vector kernels streamed the weights
//! about 10% faster as one broadcast with spin barriers than as one rayon dispatch per product
//! (which is the gap between decode and the read-bandwidth roofline). This is also how
//! llama.cpp's thread pool runs a graph.
//!
//! Work is claimed dynamically (a counter per operation), so a core slowed by another program
//! takes fewer blocks instead of holding the other one at the barrier; results stay
//! deterministic because every block writes its own output range and partial sums are added in
//! block order, whoever computed them, and however many threads the team has.
//!
//! # On a busy machine
//! A barrier still waits for every thread of the team, and a step has six per layer. When
//! another program takes a core, the operating system deschedules one of the team's threads for
//! whole time slices, and every barrier that falls in one waits for it: measured here with one
//! `yes > /dev/null` beside it, two threads decoded at about half the speed of one. Spinning
//! longer or yielding sooner does not help (the waiting thread has nothing to do but wait). So
//! the team's size is chosen per step by [`TeamSizer`]: it times the steps, keeps the size
//! (all threads, or one) whose recent steps were faster, and now and then tries the other one,
//! less and less often while the choice keeps being confirmed. Because results do not depend on
//! the team's size, switching never changes a token.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Spins this many times at a barrier before yielding the core: long enough to cover any
/// operation of a decode step, short enough not to burn a time slice when a thread of the team
/// has been descheduled.
const SPINS_BEFORE_YIELD: u32 = 1 << 16;

/// A reusable barrier for a fixed number of threads that spins instead of sleeping.
pub struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    /// Bumped by the last thread to arrive; the others wait for it to change.
    epoch: AtomicUsize,
}

impl SpinBarrier {
    pub fn new(threads: usize) -> Self {
        SpinBarrier {
            threads: threads.max(1),
            arrived: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
        }
    }

    /// Sets how many threads the next rounds wait for. Call only between rounds, with no
    /// thread waiting (it takes `&mut self`).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Returns once every thread has called `wait` (for this round). Everything a thread wrote
    /// before its `wait` is visible to every thread after theirs.
    pub fn wait(&self) {
        let epoch = self.epoch.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            // Reset before releasing: no thread can arrive at the next round before the bump.
            self.arrived.store(0, Ordering::Relaxed);
            self.epoch.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.epoch.load(Ordering::Acquire) == epoch {
            if spins < SPINS_BEFORE_YIELD {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// How one operation of a team step is shared out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Every thread does the whole operation for itself, into its own buffer; no barrier
    /// follows, since no other thread reads the result (a layer norm of the one row).
    EachThread,
    /// This many blocks, each done by the one thread that claims it; a barrier follows, after
    /// which every thread sees every block's result.
    Blocks(usize),
}

/// An operation of a team step.
pub trait TeamOp {
    fn split(&self) -> Split;
}

/// The shared state of one team step: the barrier and one claim counter per operation.
pub struct Team {
    pub barrier: SpinBarrier,
    counters: Vec<AtomicUsize>,
}

impl Team {
    /// A team of `threads` for steps of at most `operations` parallel operations.
    pub fn new(threads: usize, operations: usize) -> Self {
        Team {
            barrier: SpinBarrier::new(threads),
            counters: (0..operations).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Makes every counter claimable again and sizes the barrier for a step of `threads`
    /// threads. Call before the step, outside it.
    pub fn reset_for(&mut self, threads: usize) {
        self.barrier.set_threads(threads);
        self.reset();
    }

    /// Makes every counter claimable again. Call before the step, outside it.
    pub fn reset(&mut self) {
        for c in &mut self.counters {
            *c.get_mut() = 0;
        }
    }

    /// Runs the operations of one step on thread `me` of the team; every thread of the team
    /// calls it with the same `ops`. For each operation, `work(op, i)` runs for every block `i`
    /// this thread claims, or once with `i = me` for [`Split::EachThread`]; then `done(op)` (a
    /// profiling mark), after the operation's barrier if it has one.
    pub fn run<O: TeamOp>(
        &self,
        me: usize,
        ops: &[O],
        mut work: impl FnMut(&O, usize),
        mut done: impl FnMut(&O),
    ) {
        assert!(
            ops.len() <= self.counters.len(),
            "Team: a step of {} operations on a team made for {}",
            ops.len(),
            self.counters.len()
        );
        for (i, op) in ops.iter().enumerate() {
            match op.split() {
                Split::EachThread => work(op, me),
                Split::Blocks(blocks) => self.for_each_block(i, blocks, |b| work(op, b)),
            }
            done(op);
        }
    }

    /// Runs `work(block)` for every block in `0..blocks` that this thread claims from counter
    /// `op`, then waits at the barrier.
    fn for_each_block(&self, op: usize, blocks: usize, mut work: impl FnMut(usize)) {
        let counter = &self.counters[op];
        loop {
            let block = counter.fetch_add(1, Ordering::Relaxed);
            if block >= blocks {
                break;
            }
            work(block);
        }
        self.barrier.wait();
    }
}

/// Chooses, step by step, whether a decode step runs on every thread of the pool or on the
/// calling thread alone (see the module docs, "On a busy machine").
///
/// It keeps a moving average of the step time of the size in use, and the time of the latest
/// step of the other. Every `explore_every` steps it runs the other size once to refresh that. An exploration that confirms the current choice doubles the interval (up to
/// [`TeamSizer::MAX_EXPLORE_EVERY`]), so on a steady machine the cost of looking is a fraction
/// of a percent; one that finds the other size faster by more than
/// [`TeamSizer::SWITCH_MARGIN`] switches to it and looks again soon.
#[derive(Debug, Clone)]
pub struct TeamSizer {
    /// The pool's threads; with 1 there is nothing to choose.
    full: usize,
    /// Whether the current choice is the full team (else one thread).
    use_full: bool,
    /// Moving averages of a step's seconds: [one thread, full team]; `None` until measured.
    average: [Option<f64>; 2],
    /// Steps until the next exploration, and the current interval.
    countdown: u32,
    explore_every: u32,
    /// Whether the step being run is an exploration.
    exploring: bool,
    /// Steps measured with the size in use since it was chosen (its average's sample count).
    steps_in_use: u32,
    /// Off: always the full team (`GPT2_BENCH_FIXED_TEAM=1`, for A/B comparisons).
    adaptive: bool,
}

impl TeamSizer {
    /// Exploration interval after a switch, in steps.
    pub const FIRST_EXPLORE_EVERY: u32 = 8;
    /// Longest exploration interval, in steps.
    pub const MAX_EXPLORE_EVERY: u32 = 256;
    /// The other size must be this much faster (as a fraction) to be switched to.
    pub const SWITCH_MARGIN: f64 = 0.05;
    /// Weight of the newest step in a moving average.
    const NEW_WEIGHT: f64 = 0.3;

    /// A sizer for a pool of `full` threads; adaptive unless `GPT2_BENCH_FIXED_TEAM=1`.
    pub fn new(full: usize) -> Self {
        let fixed = std::env::var_os("GPT2_BENCH_FIXED_TEAM").is_some_and(|v| v == "1");
        Self::with_adaptive(full, !fixed)
    }

    pub fn with_adaptive(full: usize, adaptive: bool) -> Self {
        TeamSizer {
            full: full.max(1),
            use_full: true,
            average: [None, None],
            countdown: Self::FIRST_EXPLORE_EVERY,
            explore_every: Self::FIRST_EXPLORE_EVERY,
            exploring: false,
            steps_in_use: 0,
            adaptive,
        }
    }

    /// A sizer that alternates one thread and the full team every step, whatever the times: for
    /// tests that results do not depend on the team's size.
    pub fn alternating(full: usize) -> Self {
        TeamSizer {
            explore_every: 1,
            countdown: 1,
            ..Self::with_adaptive(full, true)
        }
    }

    /// The number of threads for the next step.
    pub fn next_size(&mut self) -> usize {
        if self.full == 1 || !self.adaptive {
            return self.full;
        }
        if self.explore_every == 1 {
            self.use_full = !self.use_full;
            return if self.use_full { self.full } else { 1 };
        }
        self.countdown = self.countdown.saturating_sub(1);
        self.exploring = self.countdown == 0;
        let full = self.use_full != self.exploring;
        if full { self.full } else { 1 }
    }

    /// Records how long a step of `size` threads took, and updates the choice.
    pub fn record(&mut self, size: usize, seconds: f64) {
        if self.full == 1 || !self.adaptive || !seconds.is_finite() || self.explore_every == 1 {
            return;
        }
        let i = usize::from(size != 1);
        // The size in use is averaged over its consecutive steps; the explored size was last run
        // long ago, so its one fresh step replaces what is known of it.
        // Right after a switch the average holds one or two steps: a plain mean of them, not a
        // moving average that would remember the exploration's single step for long.
        if !self.exploring {
            self.steps_in_use = self.steps_in_use.saturating_add(1);
        }
        let weight = Self::NEW_WEIGHT.max(1.0 / f64::from(self.steps_in_use));
        self.average[i] = Some(match self.average[i] {
            Some(avg) if !self.exploring => avg + weight * (seconds - avg),
            _ => seconds,
        });
        let (current, other) = (usize::from(self.use_full), usize::from(!self.use_full));
        let other_is_faster = match (self.average[current], self.average[other]) {
            (Some(cur), Some(oth)) => oth < cur * (1.0 - Self::SWITCH_MARGIN),
            _ => false,
        };
        if !self.exploring {
            // Between explorations, the size in use is dropped as soon as its average is worse
            // than the other's latest step: this undoes a switch that one lucky exploration
            // caused after a single step, instead of after a whole interval.
            if other_is_faster {
                self.use_full = !self.use_full;
                self.explore_every = Self::FIRST_EXPLORE_EVERY;
                self.countdown = self.explore_every;
                self.steps_in_use = 1;
            }
            return;
        }
        self.exploring = false;
        if other_is_faster {
            self.use_full = !self.use_full;
            self.explore_every = Self::FIRST_EXPLORE_EVERY;
            self.steps_in_use = 1;
        } else {
            self.explore_every = (self.explore_every * 2).min(Self::MAX_EXPLORE_EVERY);
        }
        self.countdown = self.explore_every;
    }

    /// Whether the full team is the current choice.
    pub fn uses_full_team(&self) -> bool {
        self.use_full || self.full == 1
    }
}

/// A mutable buffer that the threads of a team write in disjoint ranges and read after a
/// barrier. It hands out slices through `unsafe` methods whose contract is the team's protocol.
/// Its elements are f32, or the f16 bits (`u16`) of a key/value cache in f16.
pub struct Shared<'a, T = f32> {
    ptr: *mut T,
    len: usize,
    _buffer: PhantomData<&'a mut [T]>,
}

// SAFETY: `Shared` is a `&mut [T]` split by the team's protocol (see the methods' contracts);
// T is Send and Sync, and the borrow it came from outlives it.
unsafe impl<T: Send + Sync> Send for Shared<'_, T> {}
// SAFETY: as above; concurrent access goes through the unsafe methods only.
unsafe impl<T: Send + Sync> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    pub fn new(buffer: &'a mut [T]) -> Self {
        Shared {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// The values in `range`, to write.
    ///
    /// # Safety
    /// Until the next barrier, no other thread may access any part of `range`, and the caller
    /// holds no other slice of it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Shared: out of bounds"
        );
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// The values in `range`, to read.
    ///
    /// # Safety
    /// Until the next barrier, no thread may write any part of `range`.
    pub unsafe fn range(&self, range: Range<usize>) -> &[T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Shared: out of bounds"
        );
        // SAFETY: in bounds (checked); nobody writes it by the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `steps` steps through a sizer, with step times from `cost(size, step)`; returns the
    /// sizes it chose.
    fn drive(
        sizer: &mut TeamSizer,
        steps: usize,
        cost: impl Fn(usize, usize) -> f64,
    ) -> Vec<usize> {
        (0..steps)
            .map(|step| {
                let size = sizer.next_size();
                sizer.record(size, cost(size, step));
                size
            })
            .collect()
    }

    #[test]
    fn the_sizer_keeps_the_faster_size_and_looks_less_often_while_it_stays_faster() {
        // A quiet machine: two threads take 18 ms, one takes 28 ms.
        let mut sizer = TeamSizer::with_adaptive(2, true);
        let quiet = |size: usize, _| if size == 2 { 0.018 } else { 0.028 };
        let sizes = drive(&mut sizer, 1000, quiet);
        let singles = sizes.iter().filter(|&&s| s == 1).count();
        // Explorations at steps 8, 24, 56, 120, 248, 504, 760: 7 of 1000.
        assert_eq!(singles, 7, "{sizes:?}");
        assert!(sizer.uses_full_team());
        // Then another program takes a core: two threads now take 60 ms, one 30 ms.
        let busy = |size: usize, _| if size == 2 { 0.060 } else { 0.030 };
        let sizes = drive(&mut sizer, 600, busy);
        let first_single = sizes.iter().position(|&s| s == 1).unwrap();
        assert!(first_single <= 256, "{first_single}");
        // After the exploration that found it, one thread is kept, with rare checks of two.
        let after = &sizes[first_single..];
        let fulls = after.iter().filter(|&&s| s == 2).count();
        assert!(!sizer.uses_full_team());
        assert!(fulls * 20 < after.len(), "{fulls} of {}", after.len());
        // And back when the machine is quiet again.
        drive(&mut sizer, 600, quiet);
        assert!(sizer.uses_full_team());
    }

    #[test]
    fn one_lucky_exploration_is_undone_after_one_step() {
        // Busy: one thread takes 30 ms; two take 60 ms, except one exploration that took 10.
        let mut sizer = TeamSizer::with_adaptive(2, true);
        let busy = |size: usize, _| if size == 2 { 0.060 } else { 0.030 };
        drive(&mut sizer, 300, busy);
        assert!(!sizer.uses_full_team());
        let mut lucky = true;
        let mut sizes = Vec::new();
        for _ in 0..300 {
            let size = sizer.next_size();
            let t = match size {
                2 if lucky => {
                    lucky = false;
                    0.010
                }
                2 => 0.060,
                _ => 0.030,
            };
            sizer.record(size, t);
            sizes.push(size);
        }
        let lucky_at = sizes.iter().position(|&s| s == 2).unwrap();
        // The exploration, then one full-team step to find out, then back to one thread.
        assert_eq!(&sizes[lucky_at..lucky_at + 3], &[2, 2, 1], "{sizes:?}");
        assert!(!sizer.uses_full_team());
    }

    #[test]
    fn a_fixed_or_single_thread_sizer_never_changes() {
        let mut fixed = TeamSizer::with_adaptive(4, false);
        let sizes = drive(&mut fixed, 100, |s, _| s as f64);
        assert!(sizes.iter().all(|&s| s == 4));
        let mut one = TeamSizer::with_adaptive(1, true);
        assert!(drive(&mut one, 100, |_, _| 1.0).iter().all(|&s| s == 1));
    }

    #[test]
    fn barrier_orders_the_rounds_and_blocks_are_claimed_once() {
        // Three threads, many rounds: in each round every block is written exactly once, and
        // after the barrier every thread sees the whole round's writes.
        let (threads, rounds, blocks) = (3, 200, 7);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // Each round: one operation of `blocks` blocks, then one that every thread does for
        // itself (the check), then an empty one whose barrier keeps the next round's writes
        // after everyone's check.
        struct Round(Split);
        impl TeamOp for Round {
            fn split(&self) -> Split {
                self.0
            }
        }
        let ops: Vec<Round> = (0..rounds)
            .flat_map(|_| {
                [
                    Round(Split::Blocks(blocks)),
                    Round(Split::EachThread),
                    Round(Split::Blocks(0)),
                ]
            })
            .collect();
        let mut team = Team::new(threads, ops.len());
        team.reset();
        let mut buf = vec![0.0f32; blocks];
        let shared = Shared::new(&mut buf);
        let (claimed, mismatches): (Vec<usize>, Vec<usize>) = pool
            .broadcast(|ctx| {
                let (mut claimed, mut bad, mut round) = (0, 0, 0);
                team.run(
                    ctx.index(),
                    &ops,
                    |op, b| match op.0 {
                        Split::Blocks(_) => {
                            claimed += 1;
                            // SAFETY: block b is claimed by this thread only; readers wait for
                            // the barrier that ends the operation.
                            let cell = unsafe { shared.range_mut(b..b + 1) };
                            cell[0] += 1.0;
                        }
                        Split::EachThread => {
                            round += 1;
                            // SAFETY: nobody writes until every thread passes the barrier of
                            // the empty operation that follows.
                            let seen = unsafe { shared.range(0..blocks) };
                            bad += seen.iter().filter(|&&v| v != round as f32).count();
                        }
                    },
                    |_| {},
                );
                (claimed, bad)
            })
            .into_iter()
            .unzip();
        assert_eq!(mismatches, vec![0; threads]);
        assert_eq!(claimed.iter().sum::<usize>(), rounds * blocks);
        assert_eq!(buf, vec![rounds as f32; blocks]);
    }
}
