//! Hand-written kernels for the `simd` and `simd-kv` backends, chosen at run time, and the
//! drivers that spread them over a persistent thread pool.
//!
//! [`Kernels::detect`] picks the best instruction set the CPU has: AVX2+FMA on x86-64 (checked
//! with `is_x86_feature_detected!`), NEON on aarch64 (baseline there), otherwise the portable
//! scalar kernels, which are always compiled. `GPT2_BENCH_FORCE_SCALAR=1` forces the scalar ones,
//! so tests and CI exercise both paths on the same machine.
//!
//! The drivers ([`Compute`]) split work by output columns (matrix products), vocabulary rows (the
//! output layer), or positions/heads (attention) across a rayon pool built once per engine, so no
//! thread is spawned per matmul. Splitting by columns means each weight byte is read by exactly
//! one thread, which is what a bandwidth-bound decode step needs. A decode step (one position)
//! does not go through a parallel iterator per operation: the pool runs it as one [`team`]
//! (one broadcast, spin barriers between operations), with [`Compute::matvec_team`] and
//! [`Compute::sum_partials`] as its matrix-vector product.

pub mod scalar;

// Private: their kernels are reachable only through `Kernels::detect`, after detection.
#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "aarch64")]
mod neon;

// The packing of the matrix-matrix kernels, shared by AVX2 and NEON.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod pack;

pub mod probe;
pub mod team;

use rayon::prelude::*;

use team::{Shared, Team};

/// Work items per thread in the split of a matrix-vector product.
const BLOCKS_PER_THREAD: usize = 4;

/// Environment variable that forces the scalar kernels when set to `1`.
pub const FORCE_SCALAR_ENV: &str = "GPT2_BENCH_FORCE_SCALAR";

/// The instruction set a [`Kernels`] table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx2Fma,
    Neon,
    Scalar,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2Fma => "avx2+fma",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        }
    }
}

type MatmulCols = fn(&mut [f32], &[f32], &[f32], &[f32], usize, usize, usize);
type LayerNorm = fn(&mut [f32], &[f32], &[f32], &[f32], f32);

/// A table of kernels for one instruction set. Only [`Kernels::detect`] and
/// [`Kernels::scalar`] build one, so a SIMD kernel is never reachable on a CPU without it.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    matmul_cols: MatmulCols,
    dot_rows: fn(&mut [f32], &[f32], &[f32]),
    dot: fn(&[f32], &[f32]) -> f32,
    axpy: fn(&mut [f32], f32, &[f32]),
    add: fn(&mut [f32], &[f32]),
    layernorm: LayerNorm,
    gelu: fn(&mut [f32]),
    softmax: fn(&mut [f32]),
    /// (kernel, flops per iteration) for the peak-throughput probe.
    fma_probe: (fn(u64) -> f32, u64),
    read_sum: fn(&[f32]) -> f32,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

impl Kernels {
    /// The portable kernels.
    pub fn scalar() -> Self {
        Kernels {
            isa: Isa::Scalar,
            matmul_cols: scalar::matmul_cols,
            dot_rows: scalar::dot_rows,
            dot: scalar::dot,
            axpy: scalar::axpy,
            add: scalar::add,
            layernorm: scalar::layernorm,
            gelu: scalar::gelu,
            softmax: scalar::softmax,
            fma_probe: (scalar::fma_loop, 12 * 2),
            read_sum: scalar::read_sum,
        }
    }

    /// The best kernels this CPU supports, unless `GPT2_BENCH_FORCE_SCALAR=1`.
    pub fn detect() -> Self {
        if std::env::var(FORCE_SCALAR_ENV).is_ok_and(|v| v == "1") {
            return Self::scalar();
        }
        Self::best_available()
    }

    /// The best kernels this CPU supports, ignoring the environment.
    pub fn best_available() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Kernels {
                isa: Isa::Avx2Fma,
                matmul_cols: avx2::matmul_cols,
                dot_rows: avx2::dot_rows,
                dot: avx2::dot,
                axpy: avx2::axpy,
                add: avx2::add,
                layernorm: avx2::layernorm,
                gelu: avx2::gelu,
                softmax: avx2::softmax,
                fma_probe: (avx2::fma_loop, 12 * 8 * 2),
                read_sum: avx2::read_sum,
            };
        }
        #[cfg(target_arch = "aarch64")]
        return Kernels {
            isa: Isa::Neon,
            matmul_cols: neon::matmul_cols,
            dot_rows: neon::dot_rows,
            dot: neon::dot,
            axpy: neon::axpy,
            add: neon::add,
            layernorm: neon::layernorm,
            gelu: neon::gelu,
            softmax: neon::softmax,
            fma_probe: (neon::fma_loop, 12 * 4 * 2),
            read_sum: neon::read_sum,
        };
        #[allow(unreachable_code)]
        Self::scalar()
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `out (T, width) = inp (T, K) @ w[:, n0..n0 + width] + bias`, `w` being (K, N).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_cols(
        &self,
        out: &mut [f32],
        inp: &[f32],
        w: &[f32],
        bias: &[f32],
        k: usize,
        n: usize,
        n0: usize,
    ) {
        (self.matmul_cols)(out, inp, w, bias, k, n, n0)
    }

    /// `out[r] = x . rows[r]`.
    pub fn dot_rows(&self, out: &mut [f32], x: &[f32], rows: &[f32]) {
        (self.dot_rows)(out, x, rows)
    }

    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.dot)(a, b)
    }

    /// `y += alpha * x`.
    pub fn axpy(&self, y: &mut [f32], alpha: f32, x: &[f32]) {
        (self.axpy)(y, alpha, x)
    }

    /// `x += y`.
    pub fn add(&self, x: &mut [f32], y: &[f32]) {
        (self.add)(x, y)
    }

    /// Layer norm of one row.
    pub fn layernorm(&self, out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        (self.layernorm)(out, x, w, b, eps)
    }

    pub fn gelu(&self, x: &mut [f32]) {
        (self.gelu)(x)
    }

    pub fn softmax(&self, x: &mut [f32]) {
        (self.softmax)(x)
    }

    /// Sums `x`, reading it once (the bandwidth probe).
    pub fn read_sum(&self, x: &[f32]) -> f32 {
        (self.read_sum)(x)
    }

    /// Runs the peak-FMA probe for `iters` iterations; returns (checksum, flops done).
    pub fn fma_probe(&self, iters: u64) -> (f32, u64) {
        let (f, flops_per_iter) = self.fma_probe;
        (f(iters), iters * flops_per_iter)
    }
}

/// Kernels plus the thread pool they run on.
pub struct Compute {
    pub kernels: Kernels,
    pool: std::sync::Arc<rayon::ThreadPool>,
    threads: usize,
    /// A zero bias for the partial products of a row-split matrix-vector product.
    zeros: Vec<f32>,
}

impl Compute {
    /// `max_width` is the widest output of any `linear` call (3C or H for GPT-2).
    pub fn new(kernels: Kernels, threads: usize, max_width: usize) -> Result<Self, String> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gpt2-simd-{i}"))
            .build()
            .map_err(|e| format!("cannot start {threads} worker threads: {e}"))?;
        Ok(Compute {
            kernels,
            pool: std::sync::Arc::new(pool),
            threads,
            zeros: vec![0.0; max_width],
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// `n` zeros (a bias for partial products), `n` at most the `max_width` given to `new`.
    pub fn zeros(&self, n: usize) -> &[f32] {
        &self.zeros[..n]
    }

    /// The pool, to run a whole forward pass inside (`pool.install(...)`).
    pub fn pool(&self) -> std::sync::Arc<rayon::ThreadPool> {
        self.pool.clone()
    }

    /// Width of each thread's column slice: a multiple of 16 (one register tile).
    fn column_chunk(&self, n: usize) -> usize {
        n.div_ceil(self.threads).div_ceil(16).max(1) * 16
    }

    /// `out (T, N) = inp (T, K) @ w (K, N) + bias` on the pool; `scratch` holds at least
    /// `max(T, 4 * threads) * N` values. Must run inside the pool.
    ///
    /// T = 1 (decode) is bound by memory bandwidth, so the weight is split by rows: each thread
    /// streams one contiguous block of whole rows (the access pattern hardware prefetchers like
    /// best) into a partial output, and the partials are summed. T > 1 (prefill) is bound by
    /// arithmetic, so the weight is split by columns: each thread computes its columns for all
    /// positions into `scratch`, in register tiles that reuse each loaded weight for 6 positions,
    /// and the column blocks are copied into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &self,
        out: &mut [f32],
        inp: &[f32],
        w: &[f32],
        bias: &[f32],
        k: usize,
        n: usize,
        scratch: &mut [f32],
    ) {
        let t = inp.len() / k;
        let cw = self.column_chunk(n);
        let kern = self.kernels;
        if t == 1 {
            let (rows, parts) = self.matvec_split(k);
            let partials = &mut scratch[..parts * n];
            let zeros = &self.zeros[..n];
            partials
                .par_chunks_mut(n)
                .enumerate()
                .for_each(|(j, part)| {
                    let (k0, k1) = (j * rows, ((j + 1) * rows).min(k));
                    let b = if j == 0 { bias } else { zeros };
                    kern.matmul_cols(part, &inp[k0..k1], &w[k0 * n..k1 * n], b, k1 - k0, n, 0);
                });
            self.sum_partials(&mut out[..n], partials, k, n, 0);
            return;
        }
        let scratch = &mut scratch[..t * n];
        scratch
            .par_chunks_mut(t * cw)
            .enumerate()
            .for_each(|(j, s)| {
                let n0 = j * cw;
                let width = s.len() / t;
                kern.matmul_cols(s, inp, w, &bias[n0..n0 + width], k, n, n0)
            });
        // Scatter the column blocks back into row-major order.
        out[..t * n]
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(row, o)| {
                let mut n0 = 0;
                for block in scratch.chunks(t * cw) {
                    let width = block.len() / t;
                    o[n0..n0 + width].copy_from_slice(&block[row * width..(row + 1) * width]);
                    n0 += width;
                }
            });
    }

    /// How a matrix-vector product over K weight rows is split: (rows per block, blocks).
    /// Several blocks per thread, so that a core slowed by another program takes fewer of them
    /// (on a shared 2-vCPU machine a static half-and-half split waits for the slower core).
    /// Blocks start on a multiple of 4 rows, the matrix-vector kernel's step.
    pub fn matvec_split(&self, k: usize) -> (usize, usize) {
        let rows = k.div_ceil(self.threads * BLOCKS_PER_THREAD).div_ceil(4) * 4;
        (rows, k.div_ceil(rows))
    }

    /// Team version of `linear` for one row: the blocks of [`Compute::matvec_split`] are
    /// claimed by the team's threads, block j writing `x[rows_j] @ w[rows_j, :]` (plus the bias
    /// for block 0) into `partials[j * n..(j + 1) * n]`; ends at the team's barrier. Sum the
    /// partials with [`Compute::sum_partials`]. Every thread of the team must call it.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_team(
        &self,
        team: &Team,
        op: &mut usize,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        n: usize,
        partials: &Shared,
    ) {
        let k = x.len();
        let (rows, parts) = self.matvec_split(k);
        let kern = self.kernels;
        team.for_each_block(op, parts, |j| {
            let (k0, k1) = (j * rows, ((j + 1) * rows).min(k));
            let b = if j == 0 { bias } else { self.zeros(n) };
            // SAFETY: block j's partial is written by the thread that claimed j only, and read
            // after the barrier that ends this operation.
            let part = unsafe { partials.range_mut(j * n..(j + 1) * n) };
            kern.matmul_cols(part, &x[k0..k1], &w[k0 * n..k1 * n], b, k1 - k0, n, 0);
        });
    }

    /// `out = sum over blocks of partials[block][cols]`, for a product of K = `k` rows and
    /// `n` columns split by [`Compute::matvec_split`]; added in block order, as `linear` does.
    pub fn sum_partials(&self, out: &mut [f32], partials: &[f32], k: usize, n: usize, col0: usize) {
        let (_, parts) = self.matvec_split(k);
        let width = out.len();
        out.copy_from_slice(&partials[col0..col0 + width]);
        for j in 1..parts {
            self.kernels
                .add(out, &partials[j * n + col0..j * n + col0 + width]);
        }
    }

    /// Blocks of columns for the team's element-wise steps over `n` values:
    /// (values per block, blocks).
    pub fn column_blocks(&self, n: usize) -> (usize, usize) {
        let per = n
            .div_ceil(self.threads * BLOCKS_PER_THREAD)
            .div_ceil(8)
            .max(1)
            * 8;
        (per, n.div_ceil(per))
    }

    /// Blocks of vocabulary rows for the output layer: (rows per block, blocks).
    pub fn logit_blocks(&self, vocab: usize) -> (usize, usize) {
        let per = vocab.div_ceil(self.threads * BLOCKS_PER_THREAD).max(1);
        (per, vocab.div_ceil(per))
    }

    /// `logits[v] = x . rows[v]` (the output layer), split by vocabulary rows. Inside the pool.
    pub fn logits(&self, logits: &mut [f32], x: &[f32], rows: &[f32]) {
        let c = x.len();
        let (chunk, _) = self.logit_blocks(logits.len());
        let kern = self.kernels;
        logits
            .par_chunks_mut(chunk)
            .zip(rows.par_chunks(chunk * c))
            .for_each(|(o, r)| kern.dot_rows(o, x, r));
    }

    /// Layer norm of every row of `inp (T, C)` into `out`. Inside the pool.
    pub fn layernorm_rows(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let c = w.len();
        let kern = self.kernels;
        out.par_chunks_mut(c)
            .zip(inp.par_chunks(c))
            .for_each(|(o, x)| kern.layernorm(o, x, w, b, eps));
    }

    /// GELU in place, in parallel slices. Inside the pool.
    pub fn gelu(&self, x: &mut [f32]) {
        let kern = self.kernels;
        let chunk = x.len().div_ceil(self.threads).max(4096);
        x.par_chunks_mut(chunk).for_each(|s| kern.gelu(s));
    }

    /// `x += y`. Cheap; single-threaded.
    pub fn add(&self, x: &mut [f32], y: &[f32]) {
        self.kernels.add(x, y)
    }

    /// Causal attention of T new positions (absolute positions `pos0..pos0 + T`) against the
    /// keys and values of positions `0..pos0 + T` in the cache.
    ///
    /// `att (T, C)` out (C = n_embd); `qkv (T, 3C)` holds the new queries in its first C columns;
    /// `k_cache`, `v_cache` are (n_head, n_ctx, D) with the new positions already written;
    /// `heads` is (n_head, T, D) scratch (several positions only); `scores` has room for
    /// `n_head * n_ctx` (one position only). Inside the pool.
    ///
    /// One position (decode) is split by head, each head a matrix-vector product over its keys
    /// and one over its values ([`attend_head`]). Several positions (prefill) are split by head
    /// too, and each head is two matrix-matrix products on the packed kernel, in blocks of
    /// [`QUERY_BLOCK`] queries: scores `S = Q K^T` (K transposed once per head, so the kernel
    /// sees a (D, n) weight), then the causal mask and softmax row by row, then `S V`. Each
    /// loaded key and value serves a tile of 6 queries instead of one, and there is no
    /// horizontal sum per score. The keys after a query's own position are computed in the
    /// block's square and masked out, at most QUERY_BLOCK - 1 per query.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        att: &mut [f32],
        qkv: &[f32],
        k_cache: &[f32],
        v_cache: &[f32],
        heads: &mut [f32],
        scores: &mut [f32],
        pos0: usize,
        c: usize,
        n_head: usize,
        n_ctx: usize,
    ) {
        let t = att.len() / c;
        let d = c / n_head;
        let scale = 1.0 / (d as f32).sqrt();
        let kern = self.kernels;
        let head_cache = |h: usize| {
            let cache = h * n_ctx * d..(h + 1) * n_ctx * d;
            (&k_cache[cache.clone()], &v_cache[cache])
        };
        if t == 1 {
            let zeros = self.zeros(d);
            att.par_chunks_mut(d)
                .zip(scores.par_chunks_mut(n_ctx))
                .enumerate()
                .for_each(|(h, (out, s))| {
                    let (k_head, v_head) = head_cache(h);
                    let q = &qkv[h * d..(h + 1) * d];
                    attend_head(&kern, out, q, k_head, v_head, s, pos0, scale, zeros)
                });
            return;
        }
        let n_all = pos0 + t; // keys attended by the last position
        heads[..n_head * t * d]
            .par_chunks_mut(t * d)
            .enumerate()
            .for_each(|(h, out)| {
                let (k_head, v_head) = head_cache(h);
                ATTENTION_SCRATCH.with(|cell| {
                    let mut bufs = cell.borrow_mut();
                    let (k_t, q, s) = &mut *bufs;
                    // (D, n_all): this head's keys, transposed.
                    if k_t.len() < d * n_all {
                        k_t.resize(d * n_all, 0.0);
                    }
                    for (j, key) in k_head[..n_all * d].chunks_exact(d).enumerate() {
                        for (dd, &v) in key.iter().enumerate() {
                            k_t[dd * n_all + j] = v;
                        }
                    }
                    // (T, D): this head's queries, contiguous.
                    if q.len() < t * d {
                        q.resize(t * d, 0.0);
                    }
                    for (i, qi) in q[..t * d].chunks_exact_mut(d).enumerate() {
                        qi.copy_from_slice(&qkv[i * 3 * c + h * d..i * 3 * c + (h + 1) * d]);
                    }
                    for i0 in (0..t).step_by(QUERY_BLOCK) {
                        let i1 = (i0 + QUERY_BLOCK).min(t);
                        let n = pos0 + i1; // keys seen by the block's last query
                        let len = (i1 - i0) * n;
                        if s.len() < len {
                            s.resize(len, 0.0);
                        }
                        let s = &mut s[..len];
                        // (rows, n) = (rows, D) @ (D, n)
                        kern.matmul_cols(s, &q[i0 * d..i1 * d], k_t, self.zeros(n), d, n_all, 0);
                        for (r, row) in s.chunks_exact_mut(n).enumerate() {
                            let seen = pos0 + i0 + r + 1;
                            for v in &mut row[..seen] {
                                *v *= scale;
                            }
                            kern.softmax(&mut row[..seen]);
                            row[seen..].fill(0.0);
                        }
                        // (rows, D) = (rows, n) @ (n, D)
                        let o = &mut out[i0 * d..i1 * d];
                        kern.matmul_cols(o, s, &v_head[..n * d], self.zeros(d), n, d, 0);
                    }
                });
            });
        // (n_head, T, D) -> (T, C)
        let heads = &heads[..n_head * t * d];
        att.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
            for (h, out) in row.chunks_exact_mut(d).enumerate() {
                out.copy_from_slice(&heads[(h * t + i) * d..(h * t + i + 1) * d]);
            }
        });
    }
}

/// Queries per block in prefill attention (see [`Compute::attention`]).
pub const QUERY_BLOCK: usize = 64;

thread_local! {
    /// Per-thread buffers of prefill attention (transposed keys, queries, scores), grown to the
    /// largest prompt seen and reused.
    static ATTENTION_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// One attention head of one position: scores of `q (D)` against the keys of positions
/// `0..=pos`, softmax, weighted sum of their values into `out (D)`. `k_head` and `v_head` are
/// this head's (n_ctx, D) slices of the cache: each head's keys are contiguous, so the scores
/// are one matrix-vector product (`dot_rows`) and the weighted sum another (`matmul_cols`), both
/// streaming memory front to back. `scores` has room for `pos + 1` values; `zeros` holds D zeros.
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    kern: &Kernels,
    out: &mut [f32],
    q: &[f32],
    k_head: &[f32],
    v_head: &[f32],
    scores: &mut [f32],
    pos: usize,
    scale: f32,
    zeros: &[f32],
) {
    let (d, n) = (q.len(), pos + 1);
    let s = &mut scores[..n];
    kern.dot_rows(s, q, &k_head[..n * d]); // (n) = (n, D) @ (D)
    for sj in s.iter_mut() {
        *sj *= scale;
    }
    kern.softmax(s);
    kern.matmul_cols(out, s, &v_head[..n * d], zeros, n, d, 0); // (D) = (n) @ (n, D)
}

#[cfg(test)]
mod tests {
    //! Every kernel of the detected instruction set against the scalar kernels, on sizes that
    //! leave remainders at every level (not multiples of 4, 8 or 16), and through the threaded
    //! drivers with 1 and 3 threads. On a machine without AVX2 both sides are scalar.
    use super::*;

    /// `detect` chooses the vector kernels this CPU has (NEON on every aarch64; AVX2+FMA on an
    /// x86-64 CPU with both), unless GPT2_BENCH_FORCE_SCALAR=1 forces the scalar ones: so a
    /// test run on aarch64 really exercises NEON.
    #[test]
    fn detect_chooses_the_vector_kernels_this_cpu_has() {
        let forced = std::env::var(FORCE_SCALAR_ENV).is_ok_and(|v| v == "1");
        let best = if cfg!(target_arch = "aarch64") {
            Isa::Neon
        } else if cfg!(target_arch = "x86_64") && x86_has_avx2_fma() {
            Isa::Avx2Fma
        } else {
            Isa::Scalar
        };
        assert_eq!(Kernels::best_available().isa(), best);
        let chosen = Kernels::detect().isa();
        assert_eq!(chosen, if forced { Isa::Scalar } else { best });
    }

    fn x86_has_avx2_fma() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        #[allow(unreachable_code)]
        false
    }

    /// Deterministic values in [-1, 1).
    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn matmul_cols_matches_scalar() {
        let (fast, slow) = (Kernels::best_available(), Kernels::scalar());
        for (t, k, n) in [
            (1, 35, 105),
            (1, 768, 40),
            (2, 19, 33),
            (7, 60, 240),
            (13, 37, 50),
            // Deeper than one KC slice, with a partial last slice, and more than
            // PANELS_PER_PACK panels in a row (AVX2 kernel's blocking).
            (7, 600, 200),
        ] {
            let inp = data(t * k, 1);
            let w = data(k * n, 2);
            let bias = data(n, 3);
            for (n0, width) in [(0, n), (5, n - 5), (16, n.min(40) - 16)] {
                let mut a = vec![0.0; t * width];
                let mut b = vec![0.0; t * width];
                fast.matmul_cols(&mut a, &inp, &w, &bias[n0..n0 + width], k, n, n0);
                slow.matmul_cols(&mut b, &inp, &w, &bias[n0..n0 + width], k, n, n0);
                close(&a, &b, 1e-5);
            }
        }
    }

    #[test]
    fn vector_kernels_match_scalar() {
        let (fast, slow) = (Kernels::best_available(), Kernels::scalar());
        for n in [1, 7, 8, 15, 16, 33, 60, 768] {
            let (x, y) = (data(n, 4), data(n, 5));
            let d = (fast.dot(&x, &y) - slow.dot(&x, &y)).abs();
            assert!(d <= 1e-5 * n as f32, "dot {n}: {d}");
            let (mut a, mut b) = (y.clone(), y.clone());
            fast.axpy(&mut a, 0.37, &x);
            slow.axpy(&mut b, 0.37, &x);
            close(&a, &b, 1e-6);
            let (w, bias) = (data(n, 6), data(n, 7));
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            fast.layernorm(&mut a, &x, &w, &bias, 1e-5);
            slow.layernorm(&mut b, &x, &w, &bias, 1e-5);
            close(&a, &b, 1e-5);
            let (mut a, mut b) = (x.clone(), x.clone());
            fast.softmax(&mut a);
            slow.softmax(&mut b);
            close(&a, &b, 1e-6);
            let rows = data(5 * n, 8);
            let (mut a, mut b) = (vec![0.0; 5], vec![0.0; 5]);
            fast.dot_rows(&mut a, &x, &rows);
            slow.dot_rows(&mut b, &x, &rows);
            close(&a, &b, 1e-5);
            let s = (fast.read_sum(&x) - slow.read_sum(&x)).abs();
            assert!(s <= 1e-5 * n as f32, "read_sum {n}: {s}");
        }
    }

    #[test]
    fn gelu_is_accurate_over_its_range() {
        // The vectorised tanh must keep GELU within ~1e-6 of the libm version.
        let x: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) / 200.0).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        Kernels::best_available().gelu(&mut a);
        Kernels::scalar().gelu(&mut b);
        for ((fa, fb), xi) in a.iter().zip(&b).zip(&x) {
            assert!(
                (fa - fb).abs() <= 1e-6 * (1.0 + fb.abs()),
                "gelu({xi}): {fa} vs {fb}"
            );
        }
        // Softmax of extreme inputs stays finite and normalised.
        let mut s = vec![-1e30, 0.0, 80.0, 88.0, -88.0, 1e30];
        Kernels::best_available().softmax(&mut s);
        assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    /// Causal attention straight from the definition, on the (n_head, n_ctx, D) cache layout.
    #[allow(clippy::too_many_arguments)]
    fn attention_reference(
        qkv: &[f32],
        k_cache: &[f32],
        v_cache: &[f32],
        t: usize,
        pos0: usize,
        c: usize,
        n_head: usize,
        n_ctx: usize,
    ) -> Vec<f32> {
        let d = c / n_head;
        let mut att = vec![0.0; t * c];
        for i in 0..t {
            for h in 0..n_head {
                let q = &qkv[i * 3 * c + h * d..i * 3 * c + (h + 1) * d];
                let key = |j: usize| &k_cache[(h * n_ctx + j) * d..(h * n_ctx + j + 1) * d];
                let scores: Vec<f32> = (0..=pos0 + i)
                    .map(|j| q.iter().zip(key(j)).map(|(a, b)| a * b).sum::<f32>())
                    .map(|s| s / (d as f32).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                for (j, e) in exps.iter().enumerate() {
                    let value = &v_cache[(h * n_ctx + j) * d..(h * n_ctx + j + 1) * d];
                    for (o, v) in att[i * c + h * d..i * c + (h + 1) * d]
                        .iter_mut()
                        .zip(value)
                    {
                        *o += e / total * v;
                    }
                }
            }
        }
        att
    }

    #[test]
    fn attention_matches_its_definition() {
        // 5 heads of 7: D is not a multiple of 4 or 8, so every remainder path runs.
        let (c, n_head, n_ctx) = (35, 5, 80);
        let k_cache = data(n_ctx * c, 21);
        let v_cache = data(n_ctx * c, 22);
        for threads in [1, 3] {
            for kernels in [Kernels::best_available(), Kernels::scalar()] {
                let compute = Compute::new(kernels, threads, 3 * c).unwrap();
                // Decode (one position after 17 cached), prefill from scratch, a chunk
                // appended after cached positions, and more than one block of queries.
                for (t, pos0) in [(1, 17), (9, 0), (4, 11), (QUERY_BLOCK + 6, 3)] {
                    let qkv = data(t * 3 * c, 23 + t as u32);
                    let mut scores = vec![0.0; n_head * n_ctx];
                    let mut heads = vec![0.0; t * c];
                    let mut got = vec![0.0; t * c];
                    compute.pool().install(|| {
                        compute.attention(
                            &mut got,
                            &qkv,
                            &k_cache,
                            &v_cache,
                            &mut heads,
                            &mut scores,
                            pos0,
                            c,
                            n_head,
                            n_ctx,
                        )
                    });
                    let want =
                        attention_reference(&qkv, &k_cache, &v_cache, t, pos0, c, n_head, n_ctx);
                    close(&got, &want, 1e-5);
                }
            }
        }
    }

    #[test]
    fn threaded_drivers_match_single_thread_scalar() {
        let (t_max, k, n) = (9, 70, 150);
        let w = data(k * n, 9);
        let bias = data(n, 10);
        for threads in [1, 3] {
            for kernels in [Kernels::best_available(), Kernels::scalar()] {
                let compute = Compute::new(kernels, threads, n).unwrap();
                for t in [1, 2, t_max] {
                    let inp = data(t * k, 11);
                    let mut want = vec![0.0; t * n];
                    Kernels::scalar().matmul_cols(&mut want, &inp, &w, &bias, k, n, 0);
                    let mut got = vec![0.0; t * n];
                    let mut scratch = vec![0.0; t.max(4 * threads) * n];
                    compute
                        .pool()
                        .install(|| compute.linear(&mut got, &inp, &w, &bias, k, n, &mut scratch));
                    close(&got, &want, 1e-5);
                }
                let x = data(k, 12);
                let rows = data(37 * k, 13);
                let (mut got, mut want) = (vec![0.0; 37], vec![0.0; 37]);
                compute
                    .pool()
                    .install(|| compute.logits(&mut got, &x, &rows));
                Kernels::scalar().dot_rows(&mut want, &x, &rows);
                close(&got, &want, 1e-5);
            }
        }
    }
}
