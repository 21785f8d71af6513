//! This machine's limits, measured in the same run as a benchmark: read bandwidth with all
//! threads (which bounds batch-1 decode, since every weight is read once per token) and peak f32
//! FMA throughput (which bounds prefill). Both use the same kernels and thread pool as the
//! `simd` backends.

use std::time::Instant;

use rayon::prelude::*;

use super::{Compute, MatRef, Weight};

/// Best read bandwidth in bytes per second over `passes` all-thread reads of `buf`. To bound
/// decode, pass the model's own mapped tensor data: the very bytes a decode step reads.
pub fn read_bandwidth(compute: &Compute, buf: &[f32], passes: usize) -> f64 {
    let kern = compute.kernels;
    let chunk = buf.len().div_ceil(compute.threads());
    let mut best = 0.0f64;
    let pool = compute.pool();
    for _ in 0..passes {
        let start = Instant::now();
        let sum: f32 = pool.install(|| buf.par_chunks(chunk).map(|c| kern.read_sum(c)).sum());
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max(buf.len() as f64 * 4.0 / secs);
    }
    best
}

/// Peak f32 multiply-add throughput in FLOP/s with every thread of the pool busy, for about
/// `seconds` in all: the best of [`PEAK_PASSES`] passes, because on a shared machine one pass
/// can lose a core to another program for its whole length (a single 0.3 s pass here once
/// measured half the usual figure).
pub fn peak_flops(compute: &Compute, seconds: f64) -> f64 {
    let iters = fma_iters(compute, seconds / PEAK_PASSES as f64);
    (0..PEAK_PASSES)
        .map(|_| fma_pass(compute, iters))
        .fold(0.0, f64::max)
}

/// Iterations of the FMA probe that take about `seconds` on one thread (calibrated here).
pub fn fma_iters(compute: &Compute, seconds: f64) -> u64 {
    let kern = compute.kernels;
    let mut iters = 1u64 << 16;
    loop {
        let start = Instant::now();
        std::hint::black_box(kern.fma_probe(iters));
        let took = start.elapsed().as_secs_f64();
        if took > 0.02 {
            return ((seconds / (took / iters as f64)) as u64).max(1);
        }
        iters *= 4;
    }
}

/// One pass of `iters` FMA iterations on every thread of the pool at once: FLOP/s.
pub fn fma_pass(compute: &Compute, iters: u64) -> f64 {
    let kern = compute.kernels;
    let threads = compute.threads();
    let start = Instant::now();
    let flops: u64 = compute.pool().install(|| {
        (0..threads)
            .into_par_iter()
            .map(|_| {
                let (check, flops) = kern.fma_probe(iters);
                std::hint::black_box(check);
                flops
            })
            .sum()
    });
    flops as f64 / start.elapsed().as_secs_f64()
}

/// Timed passes of [`peak_flops`].
pub const PEAK_PASSES: usize = 5;

/// Matrix-matrix rates at prefill's shape, in FLOP/s: (our kernel through [`Compute::linear`],
/// matrixmultiply through ndarray), best of `reps`. matrixmultiply uses `MATMUL_NUM_THREADS`
/// threads (the harness sets it to the same count).
pub fn gemm_rates(compute: &Compute, t: usize, k: usize, n: usize, reps: usize) -> (f64, f64) {
    let a: Vec<f32> = (0..t * k).map(|i| (i % 17) as f32 * 0.01).collect();
    let w: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let bias = vec![0.0f32; n];
    let mut out = vec![0.0f32; t * n];
    let mut scratch = vec![0.0f32; t.max(4 * compute.threads()) * n];
    let flops = (2 * t * k * n) as f64;
    let pool = compute.pool();
    let (mut ours, mut theirs) = (0.0f64, 0.0f64);
    let av = ndarray::ArrayView2::from_shape((t, k), &a[..]).expect("shape");
    let wv = ndarray::ArrayView2::from_shape((k, n), &w[..]).expect("shape");
    for _ in 0..reps {
        let start = Instant::now();
        pool.install(|| {
            compute.linear(
                &mut out,
                &a,
                Weight::InOut(MatRef::new(&w, k, n)),
                &bias,
                &mut scratch,
            )
        });
        ours = ours.max(flops / start.elapsed().as_secs_f64());
        let start = Instant::now();
        std::hint::black_box(av.dot(&wv));
        theirs = theirs.max(flops / start.elapsed().as_secs_f64());
    }
    (ours, theirs)
}
