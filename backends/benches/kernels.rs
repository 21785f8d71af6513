//! The simd kernels at GPT-2 small's shapes, each next to the matrixmultiply equivalent (what the
//! `ndarray` backend uses), on all cores.
//!
//! Throughput is reported in "elements" per second where one element is one FLOP, so criterion's
//! `Gelem/s` reads as GFLOP/s. Matrix-vector benchmarks time the path a decode step takes (the
//! team's blocked product and the sum of its partials) and cycle through enough copies of the
//! matrix (more than the last-level cache holds) that the weights stream from memory, as in a
//! real decode step.
//!
//! `cargo bench -p gpt2-backends --bench kernels`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpt2_backends::kernels::{Compute, Kernels, MatRef};
use gpt2_backends::simd::decode::TeamProduct;
use ndarray::{Array2, ArrayView2};

/// Total bytes of matrix copies a matrix-vector benchmark cycles through (L3 here is 32 MiB).
const STREAM_BYTES: usize = 96 << 20;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn matvec(c: &mut Criterion) {
    let compute = Compute::new(Kernels::detect(), threads(), 3072).expect("thread pool");
    let pool = compute.pool();
    let mut group = c.benchmark_group("matvec");
    for (k, n) in [(768usize, 2304usize), (768, 3072), (3072, 768)] {
        let copies = (STREAM_BYTES / (k * n * 4)).max(2);
        let mats: Vec<Vec<f32>> = (0..copies).map(|_| values(k * n)).collect();
        let x = values(k);
        let bias = vec![0.0f32; n];
        let mut out = vec![0.0f32; n];
        group.throughput(Throughput::Elements((2 * k * n) as u64));
        let id = format!("{k}x{n}");
        // The path a decode step takes: the pool's threads as one team claim blocks of weight
        // rows into partial sums, which are then added in block order (`TeamProduct` runs the
        // decode step's product operation).
        let mut product = TeamProduct::new(&compute, k, n);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("simd", &id), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                let w = MatRef::new(&mats[i], k, n);
                product.run(&compute, &mut out, &x, w, &bias);
            })
        });
        let xa = Array2::from_shape_vec((1, k), x.clone()).expect("shape");
        let mut i = 0;
        group.bench_function(BenchmarkId::new("matrixmultiply", &id), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                let w = ArrayView2::from_shape((k, n), &mats[i]).expect("shape");
                std::hint::black_box(xa.dot(&w));
            })
        });
    }
    // The output layer: 50257 dot products of length 768 against the token embedding.
    let (v, e) = (50257usize, 768usize);
    let wte = values(v * e);
    let x = values(e);
    let mut logits = vec![0.0f32; v];
    group.throughput(Throughput::Elements((2 * v * e) as u64));
    group.bench_function(BenchmarkId::new("simd", "768x50257"), |b| {
        b.iter(|| pool.install(|| compute.logits(&mut logits, &x, &wte)))
    });
    let wte_view = ArrayView2::from_shape((v, e), &wte).expect("shape");
    let xv = ndarray::Array1::from(x.clone());
    group.bench_function(BenchmarkId::new("matrixmultiply", "768x50257"), |b| {
        b.iter(|| std::hint::black_box(wte_view.dot(&xv)))
    });
    group.finish();
}

fn gemm(c: &mut Criterion) {
    let compute = Compute::new(Kernels::detect(), threads(), 3072).expect("thread pool");
    let pool = compute.pool();
    let mut group = c.benchmark_group("gemm");
    for (t, k, n) in [
        (128usize, 768usize, 3072usize),
        (128, 3072, 768),
        (128, 768, 2304),
    ] {
        let a = values(t * k);
        let w = values(k * n);
        let bias = vec![0.0f32; n];
        let mut out = vec![0.0f32; t * n];
        let mut scratch = vec![0.0f32; t.max(4 * threads()) * n];
        let id = format!("{t}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * t * k * n) as u64));
        group.bench_function(BenchmarkId::new("simd", &id), |b| {
            b.iter(|| {
                pool.install(|| {
                    compute.linear(&mut out, &a, MatRef::new(&w, k, n), &bias, &mut scratch)
                })
            })
        });
        let av = ArrayView2::from_shape((t, k), &a).expect("shape");
        let wv = ArrayView2::from_shape((k, n), &w).expect("shape");
        group.bench_function(BenchmarkId::new("matrixmultiply", &id), |b| {
            b.iter(|| std::hint::black_box(av.dot(&wv)))
        });
    }
    group.finish();
}

fn configure() -> Criterion {
    // matrixmultiply reads its thread count once; give it every core, like the harness does.
    // SAFETY: runs before any benchmark, when no other thread reads the environment.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads().to_string()) };
    Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = configure();
    targets = matvec, gemm
}
criterion_main!(benches);
