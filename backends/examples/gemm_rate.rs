//! The prefill GEMM (`Compute::linear` on 128 positions) at GPT-2 small's four shapes in every
//! weight dtype, against the FMA peak measured in the same process with the same kernels: how
//! far the microkernel is from the compute limit. Each case runs `REPS` times interleaved with
//! the others (so a burst of load on a shared machine touches every case alike); the table
//! gives the median and the best rate and the best as a fraction of the peak.
//!
//! `cargo run --release -p gpt2-backends --example gemm_rate -- [THREADS] [REPS] [KxN,...] [T]`
//! (the shapes default to GPT-2 small's, `-` keeps them; a small N, such as `768x96`, keeps the
//! weight in L2 and so shows the microkernel's own rate; `T` positions, 128 by default, 1 for
//! the matrix-vector product of a decode step)
//!
//! f32 runs twice: in the `[in, out]` layout the f32 path uses (`f32`), and the same values
//! transposed into `[out, in]` (`f32 oi`), the layout every other dtype uses, through the
//! reduced dtypes' path: what one weight layout (issue 30, item 3) would cost or gain.
//! (`GPT2_BENCH_ISA=avx2` chooses other kernels; a name this CPU lacks is an error.)
use gpt2_backends::kernels::{Compute, Kernels, MatRef, Weight, probe};
use gpt2_weights::Dtype;
use gpt2_weights::dtype::OwnedMatrix;
use std::time::Instant;

/// GPT-2 small's linear layers: qkv, attention output, MLP up, MLP down.
const SHAPES: [(usize, usize); 4] = [(768, 2304), (768, 768), (768, 3072), (3072, 768)];
const T: usize = 128;

fn main() {
    let kernels = match Kernels::from_env() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(3);
        }
    };
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .map_or(1, |a| a.parse().expect("THREADS: a number"));
    let reps: usize = args
        .next()
        .map_or(15, |a| a.parse().expect("REPS: a number"));
    let shapes: Vec<(usize, usize)> = match args.next().filter(|a| a != "-") {
        None => SHAPES.to_vec(),
        Some(list) => list
            .split(',')
            .map(|s| {
                let (k, n) = s.split_once('x').expect("shapes: KxN,KxN,...");
                (
                    k.parse().expect("K: a number"),
                    n.parse().expect("N: a number"),
                )
            })
            .collect(),
    };
    let t: usize = args.next().map_or(T, |a| a.parse().expect("T: a number"));
    let max_n = shapes.iter().map(|s| s.1).max().unwrap_or(1);
    let compute = Compute::new(kernels, threads, max_n).expect("thread pool");
    let pool = compute.pool();
    let peak = probe::peak_flops(&compute, 0.5);
    println!(
        "kernels {}, {threads} thread(s), GEMM tile panel width {}; FMA peak {:.1} GFLOP/s",
        kernels.isa().name(),
        kernels.panel_width(),
        peak / 1e9
    );
    let value = |i: usize| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5;
    struct Case {
        label: String,
        f32_in_out: Vec<f32>,
        out_in: Option<OwnedMatrix>,
        k: usize,
        n: usize,
        rates: Vec<f64>,
    }
    let mut cases: Vec<Case> = Vec::new();
    for dtype in Dtype::ALL {
        for &(k, n) in &shapes {
            let v: Vec<f32> = (0..k * n).map(value).collect(); // (K, N)
            if dtype == Dtype::F32 {
                // The same weight transposed: (N, K).
                let transposed: Vec<f32> = (0..n * k).map(|i| v[(i % k) * n + i / k]).collect();
                cases.push(Case {
                    label: format!("f32 oi {t_len}x{k}x{n}", t_len = t),
                    f32_in_out: Vec::new(),
                    out_in: Some(OwnedMatrix::encode(&transposed, n, k, dtype).expect("range")),
                    k,
                    n,
                    rates: Vec::new(),
                });
            }
            let out_in =
                (dtype != Dtype::F32).then(|| OwnedMatrix::encode(&v, n, k, dtype).expect("range"));
            cases.push(Case {
                label: format!("{dtype:6} {t_len}x{k}x{n}", t_len = t),
                f32_in_out: if dtype == Dtype::F32 { v } else { Vec::new() },
                out_in,
                k,
                n,
                rates: Vec::new(),
            });
        }
    }
    let mut out = vec![0.0f32; t * max_n];
    let max_k = shapes.iter().map(|s| s.0).max().unwrap_or(1);
    let mut scratch = vec![0.0f32; compute.linear_scratch_len(t, max_n, max_k, true)];
    let bias = vec![0.0f32; max_n];
    for _ in 0..reps + 1 {
        for case in cases.iter_mut() {
            let (k, n) = (case.k, case.n);
            let a: Vec<f32> = (0..t * k).map(value).collect();
            let w = match &case.out_in {
                Some(m) => Weight::OutIn(m.matrix()),
                None => Weight::InOut(MatRef::new(&case.f32_in_out, k, n)),
            };
            let start = Instant::now();
            pool.install(|| {
                compute.linear(&mut out[..t * n], &a, w, &bias[..n], &mut scratch);
            });
            case.rates
                .push((2 * t * k * n) as f64 / start.elapsed().as_secs_f64());
        }
    }
    println!("| case | median GFLOP/s | best GFLOP/s | best / FMA peak |");
    println!("|---|---|---|---|");
    for case in &mut cases {
        // The first pass warms the caches and the packing buffers.
        let mut r = case.rates.split_off(1);
        r.sort_by(f64::total_cmp);
        let (median, best) = (r[r.len() / 2], r[r.len() - 1]);
        println!(
            "| {} | {:.1} | {:.1} | {:.0}% |",
            case.label,
            median / 1e9,
            best / 1e9,
            100.0 * best / peak
        );
    }
}
