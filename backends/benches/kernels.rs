//! The simd kernels at GPT-2 small's shapes, in every weight dtype, each next to the
//! matrixmultiply f32 equivalent (what the `ndarray` backend uses), on all cores.
//!
//! Throughput is reported in "elements" per second where one element is one FLOP, so criterion's
//! `Gelem/s` reads as GFLOP/s (multiply by bytes per weight / 2 for the weight bytes read per
//! second: 2 for f32, 1 for f16 and bf16, 0.53 for q8_0). Matrix-vector benchmarks time the path
//! a decode step takes (the team's blocked product, and for f32 the sum of its partials) and
//! cycle through enough copies of the matrix (more than the last-level cache holds) that the
//! weights stream from memory, as in a real decode step. `matvec_in_cache` times one small
//! matrix that stays in cache: the arithmetic limit of each dtype's kernel (converting f16 or
//! bf16 to f32, or q8_0's integer products, cost instructions), to compare with the streaming
//! rate.
//!
//! The GEMM and the in-cache matrix-vector product run once per instruction set this CPU has
//! (`simd-avx512-f16`, `simd-avx2+fma-f16`, ...; scalar left out, it is the reference and takes
//! minutes); the streaming matrix-vector product, bound by memory, on the detected kernels.
//! `examples/gemm_rate.rs` gives the GEMM's rate as a fraction of the FMA peak measured beside
//! it, and `examples/dot_rows_rate.rs` the decode product's in L2 and streaming.
//!
//! `cargo bench -p gpt2-backends --bench kernels` (add a filter such as `matvec/simd-q8_0` or
//! `gemm/simd-avx512`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpt2_backends::kernels::{Compute, Isa, Kernels, MatRef, Weight};
use gpt2_backends::simd::decode::TeamProduct;
use gpt2_weights::Dtype;
use gpt2_weights::dtype::OwnedMatrix;
use ndarray::{Array2, ArrayView2};

/// Total bytes of matrix copies a matrix-vector benchmark cycles through (L3 here is 32 MiB).
const STREAM_BYTES: usize = 96 << 20;

/// The vector kernel tables this CPU can run, best first (scalar left out).
fn vector_kernels() -> Vec<Kernels> {
    Kernels::available()
        .into_iter()
        .filter(|k| k.isa() != Isa::Scalar)
        .collect()
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// A GPT-2 linear weight with `k` inputs and `n` outputs as the weight file stores it in
/// `dtype`: (k, n) for f32, (n, k) otherwise.
struct StoredWeight {
    f32_in_out: Vec<f32>,
    out_in: Option<OwnedMatrix>,
    k: usize,
    n: usize,
}

impl StoredWeight {
    fn new(k: usize, n: usize, dtype: Dtype) -> Self {
        let v = values(k * n);
        let out_in = (dtype != Dtype::F32)
            .then(|| OwnedMatrix::encode(&v, n, k, dtype).expect("values in range"));
        StoredWeight {
            f32_in_out: if dtype == Dtype::F32 { v } else { Vec::new() },
            out_in,
            k,
            n,
        }
    }

    fn weight(&self) -> Weight<'_> {
        match &self.out_in {
            Some(m) => Weight::OutIn(m.matrix()),
            None => Weight::InOut(MatRef::new(&self.f32_in_out, self.k, self.n)),
        }
    }

    fn bytes(&self) -> usize {
        match &self.out_in {
            Some(m) => m.matrix().byte_len(),
            None => self.f32_in_out.len() * 4,
        }
    }
}

fn matvec(c: &mut Criterion) {
    let compute = Compute::new(Kernels::detect(), threads(), 3072).expect("thread pool");
    let pool = compute.pool();
    let mut group = c.benchmark_group("matvec");
    for (k, n) in [(768usize, 2304usize), (768, 3072), (3072, 768)] {
        let x = values(k);
        let bias = vec![0.0f32; n];
        let mut out = vec![0.0f32; n];
        group.throughput(Throughput::Elements((2 * k * n) as u64));
        let id = format!("{k}x{n}");
        for dtype in Dtype::ALL {
            let one = StoredWeight::new(k, n, dtype);
            let copies = (STREAM_BYTES / one.bytes()).max(2);
            let mats: Vec<StoredWeight> = std::iter::once(one)
                .chain((1..copies).map(|_| StoredWeight::new(k, n, dtype)))
                .collect();
            // The path a decode step takes: the pool's threads as one team claim blocks of
            // weight rows (`TeamProduct` runs the decode step's product operation).
            let mut product = TeamProduct::new(&compute, k, n);
            let mut i = 0;
            group.bench_function(BenchmarkId::new(format!("simd-{dtype}"), &id), |b| {
                b.iter(|| {
                    i = (i + 1) % copies;
                    product.run(&compute, &mut out, &x, mats[i].weight(), &bias);
                })
            });
        }
        let copies = (STREAM_BYTES / (k * n * 4)).max(2);
        let mats: Vec<Vec<f32>> = (0..copies).map(|_| values(k * n)).collect();
        let xa = Array2::from_shape_vec((1, k), x.clone()).expect("shape");
        let mut i = 0;
        group.bench_function(BenchmarkId::new("matrixmultiply-f32", &id), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                let w = ArrayView2::from_shape((k, n), &mats[i]).expect("shape");
                std::hint::black_box(xa.dot(&w));
            })
        });
    }
    // The output layer: 50257 dot products of length 768 against the token embedding.
    let (v, e) = (50257usize, 768usize);
    let x = values(e);
    let mut logits = vec![0.0f32; v];
    group.throughput(Throughput::Elements((2 * v * e) as u64));
    let wte = values(v * e);
    for dtype in Dtype::ALL {
        let m = OwnedMatrix::encode(&wte, v, e, dtype).expect("values in range");
        let m = m.matrix();
        group.bench_function(
            BenchmarkId::new(format!("simd-{dtype}"), "768x50257"),
            |b| b.iter(|| pool.install(|| compute.logits(&mut logits, &x, m))),
        );
    }
    let wte_view = ArrayView2::from_shape((v, e), &wte).expect("shape");
    let xv = ndarray::Array1::from(x.clone());
    group.bench_function(BenchmarkId::new("matrixmultiply-f32", "768x50257"), |b| {
        b.iter(|| std::hint::black_box(wte_view.dot(&xv)))
    });
    group.finish();
}

/// One 768 x 768 matrix, read over and over: it stays in cache (2.4 MB in f32, 0.6 MB in
/// q8_0), so this is each kernel's arithmetic rate, not the memory's.
fn matvec_in_cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("matvec_in_cache");
    let (k, n) = (768usize, 768usize);
    let x = values(k);
    let bias = vec![0.0f32; n];
    let mut out = vec![0.0f32; n];
    group.throughput(Throughput::Elements((2 * k * n) as u64));
    for kernels in vector_kernels() {
        let compute = Compute::new(kernels, threads(), 3072).expect("thread pool");
        let isa = kernels.isa().name();
        for dtype in Dtype::ALL {
            let w = StoredWeight::new(k, n, dtype);
            let mut product = TeamProduct::new(&compute, k, n);
            let id = BenchmarkId::new(format!("simd-{isa}-{dtype}"), "768x768");
            group.bench_function(id, |b| {
                b.iter(|| product.run(&compute, &mut out, &x, w.weight(), &bias))
            });
        }
    }
    group.finish();
}

fn gemm(c: &mut Criterion) {
    let computes: Vec<Compute> = vector_kernels()
        .into_iter()
        .map(|k| Compute::new(k, threads(), 3072).expect("thread pool"))
        .collect();
    let mut group = c.benchmark_group("gemm");
    for (t, k, n) in [
        (128usize, 768usize, 3072usize),
        (128, 3072, 768),
        (128, 768, 2304),
    ] {
        let a = values(t * k);
        let bias = vec![0.0f32; n];
        let mut out = vec![0.0f32; t * n];
        let scratch_len = computes
            .iter()
            .map(|c| c.linear_scratch_len(t, n, k, true))
            .max()
            .unwrap_or(0);
        let mut scratch = vec![0.0f32; scratch_len];
        let id = format!("{t}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * t * k * n) as u64));
        for dtype in Dtype::ALL {
            let w = StoredWeight::new(k, n, dtype);
            for compute in &computes {
                let (pool, isa) = (compute.pool(), compute.kernels.isa().name());
                let name = format!("simd-{isa}-{dtype}");
                group.bench_function(BenchmarkId::new(name, &id), |b| {
                    b.iter(|| {
                        pool.install(|| {
                            compute.linear(&mut out, &a, w.weight(), &bias, &mut scratch)
                        })
                    })
                });
            }
        }
        let w = values(k * n);
        let av = ArrayView2::from_shape((t, k), &a).expect("shape");
        let wv = ArrayView2::from_shape((k, n), &w).expect("shape");
        group.bench_function(BenchmarkId::new("matrixmultiply-f32", &id), |b| {
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
    targets = matvec, matvec_in_cache, gemm
}
criterion_main!(benches);
