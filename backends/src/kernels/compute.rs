//! [`Compute`]: the kernels of one instruction set plus the thread pool they run on, and the
//! drivers that split each operation across it.
//!
//! Matrix products split by output columns when there are many positions (prefill is bound by
//! arithmetic: each thread computes its columns for every position in register tiles), and by
//! weight rows into partial sums when there is one (decode is bound by memory bandwidth: each
//! thread streams contiguous whole rows, each weight byte read by exactly one thread). The output
//! layer splits by vocabulary rows. A weight stored `[out, in]` (every dtype but f32) is split by
//! output rows in both cases: each thread computes whole dot products, so there is nothing to
//! sum afterwards (one "partial"). A decode step does not use these parallel iterators: it runs
//! as one [`super::team`], built on [`Compute::matvec_block`] and [`Compute::sum_partials`].

use rayon::prelude::*;

use gpt2_weights::Matrix;

use super::{Kernels, Weight};

/// Work items per thread in the split of a matrix-vector product.
const BLOCKS_PER_THREAD: usize = 4;

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

    /// The `scratch` that [`Compute::linear`] needs for products of up to `t` positions, `n`
    /// outputs and `k` inputs, with `rounded_input` for weights whose input is rounded (q8_0).
    pub fn linear_scratch_len(&self, t: usize, n: usize, k: usize, rounded_input: bool) -> usize {
        let rounded = if rounded_input && t > 1 { t * k } else { 0 };
        (t.max(4 * self.threads) * n).max(t * n + rounded)
    }

    /// The pool, to run a whole forward pass inside (`pool.install(...)`).
    pub fn pool(&self) -> std::sync::Arc<rayon::ThreadPool> {
        self.pool.clone()
    }

    /// Width of each thread's column slice: a multiple of the kernels' panel width (16 or 32
    /// columns: one register tile).
    fn column_chunk(&self, n: usize) -> usize {
        let round_to = |step: usize| n.div_ceil(self.threads).div_ceil(step).max(1) * step;
        let panel = round_to(self.kernels.panel_width());
        // A 32-wide panel can leave threads without work (768 columns on 16 threads: 12 slices
        // of 64): then slices of 16, whose last 16 columns the remainder tile computes.
        if n.div_ceil(panel) < self.threads.min(n.div_ceil(16)) {
            round_to(16)
        } else {
            panel
        }
    }

    /// `out (T, N) = inp (T, K) @ w + bias` on the pool; `scratch` holds at least
    /// `max(T, 4 * threads) * N` values, and `T * (N + K)` for a weight whose input is rounded
    /// (q8_0) when T > 1 ([`Compute::linear_scratch_len`]). Must run inside the pool.
    ///
    /// T = 1 (decode) is bound by memory bandwidth, so the weight is split into blocks of
    /// whole rows, each thread streaming contiguous rows ([`Compute::matvec_block`]); for a
    /// (K, N) weight the blocks' partial outputs are then summed. T > 1 (prefill) is bound by
    /// arithmetic, so the weight is split by output columns: each thread computes its columns for
    /// all positions into `scratch`, in register tiles that reuse each loaded weight for 6
    /// positions, and the column blocks are copied into `out`.
    pub fn linear(
        &self,
        out: &mut [f32],
        inp: &[f32],
        w: Weight<'_>,
        bias: &[f32],
        scratch: &mut [f32],
    ) {
        let (k, n) = (w.in_features(), w.out_features());
        let t = inp.len() / k;
        let cw = self.column_chunk(n);
        let kern = self.kernels;
        if t == 1 {
            let blocks = self.matvec_blocks(w);
            match w {
                Weight::InOut(_) => {
                    let partials = &mut scratch[..blocks * n];
                    partials
                        .par_chunks_mut(n)
                        .enumerate()
                        .for_each(|(j, part)| self.matvec_block(part, j, inp, w, bias));
                    self.sum_partials(&mut out[..n], partials, blocks, n, 0);
                }
                Weight::OutIn(_) => {
                    let (per, _) = self.out_row_split(n);
                    out[..n]
                        .par_chunks_mut(per)
                        .enumerate()
                        .for_each(|(j, part)| self.matvec_block(part, j, inp, w, bias));
                }
            }
            return;
        }
        // A q8_0 weight multiplies the input rounded by the q8_0 input rule: rounded here once,
        // rows split across the threads, into the scratch after the products' part (each
        // thread rounding the whole input for its own columns, into a new allocation, cost
        // q8_0 prefill a few percent at 2 threads).
        let (scratch, spare) = scratch.split_at_mut(t * n);
        let inp = match w {
            Weight::OutIn(m) if m.dtype().rounds_input() => {
                assert!(
                    spare.len() >= t * k,
                    "Compute::linear: scratch too short for a rounded input (T * (N + K) values)"
                );
                let rounded = &mut spare[..t * k];
                let rows_per = t.div_ceil(self.threads);
                rounded
                    .par_chunks_mut(rows_per * k)
                    .zip(inp.par_chunks(rows_per * k))
                    .for_each(|(dst, src)| {
                        dst.copy_from_slice(src);
                        kern.round_input(dst);
                    });
                &*rounded
            }
            _ => inp,
        };
        scratch
            .par_chunks_mut(t * cw)
            .enumerate()
            .for_each(|(j, s)| {
                let n0 = j * cw;
                let width = s.len() / t;
                let bias = &bias[n0..n0 + width];
                match w {
                    Weight::InOut(w) => kern.matmul_cols(s, inp, w, bias, n0),
                    Weight::OutIn(w) => {
                        kern.matmul_rows_rounded(s, inp, w.row_range(n0..n0 + width), bias)
                    }
                }
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

    /// How a matrix-vector product with an (N, K) weight is split: (output rows per block,
    /// blocks), whole multiples of the 4 rows the dot-product kernels take at once.
    pub fn out_row_split(&self, n: usize) -> (usize, usize) {
        self.matvec_split(n)
    }

    /// Blocks a matrix-vector product with `w` is split into (see [`Compute::matvec_block`]).
    pub fn matvec_blocks(&self, w: Weight<'_>) -> usize {
        match w {
            Weight::InOut(m) => self.matvec_split(m.rows()).1,
            Weight::OutIn(m) => self.out_row_split(m.rows()).1,
        }
    }

    /// The partial outputs a matrix-vector product with `w` leaves to be summed: one per block
    /// for a (K, N) weight, 1 for an (N, K) weight (its blocks write disjoint outputs).
    pub fn matvec_parts(&self, w: Weight<'_>) -> usize {
        match w {
            Weight::InOut(_) => self.matvec_blocks(w),
            Weight::OutIn(_) => 1,
        }
    }

    /// Where block `j` of a matrix-vector product with `w` writes, in a (parts, N) buffer of
    /// partial outputs.
    pub fn matvec_block_range(&self, w: Weight<'_>, j: usize) -> std::ops::Range<usize> {
        let n = w.out_features();
        match w {
            Weight::InOut(_) => j * n..(j + 1) * n,
            Weight::OutIn(_) => {
                let (per, _) = self.out_row_split(n);
                j * per..((j + 1) * per).min(n)
            }
        }
    }

    /// Block `j` of a matrix-vector product, into `part` (the range
    /// [`Compute::matvec_block_range`] names):
    ///
    /// - (K, N) weight, split by [`Compute::matvec_split`] over its K rows:
    ///   `part (N) = x[rows_j] @ w[rows_j, :]`, plus the bias for block 0 only, so that the sum
    ///   of the blocks' partials in block order is the product.
    /// - (N, K) weight, split by [`Compute::out_row_split`] over its N rows:
    ///   `part = w[rows_j] . x + bias[rows_j]`, finished outputs.
    ///
    /// A decode step's team and `linear`'s T = 1 path both run their blocks through it, so they
    /// add in the same order.
    pub fn matvec_block(&self, part: &mut [f32], j: usize, x: &[f32], w: Weight<'_>, bias: &[f32]) {
        match w {
            Weight::InOut(w) => {
                let (k, n) = (w.rows(), w.cols());
                let (rows, _) = self.matvec_split(k);
                let (k0, k1) = (j * rows, ((j + 1) * rows).min(k));
                let bias = if j == 0 { bias } else { self.zeros(n) };
                self.kernels
                    .matmul_cols(part, &x[k0..k1], w.row_range(k0..k1), bias, 0);
            }
            Weight::OutIn(m) => {
                let (per, _) = self.out_row_split(m.rows());
                let rows = j * per..((j + 1) * per).min(m.rows());
                self.kernels
                    .dot_rows_any(part, x, m.row_range(rows.clone()));
                self.kernels.add(part, &bias[rows]);
            }
        }
    }

    /// `out = sum over parts of partials[part][cols]`, for the (parts, n) partial outputs of a
    /// product, added in block order, as `linear` does.
    pub fn sum_partials(
        &self,
        out: &mut [f32],
        partials: &[f32],
        parts: usize,
        n: usize,
        col0: usize,
    ) {
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

    /// `logits[v] = x . rows[v]` (the output layer, `rows` in any dtype), split by vocabulary
    /// rows. Inside the pool.
    pub fn logits(&self, logits: &mut [f32], x: &[f32], rows: Matrix<'_>) {
        let (chunk, _) = self.logit_blocks(logits.len());
        let kern = self.kernels;
        logits.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| {
            let r0 = i * chunk;
            kern.dot_rows_any(o, x, rows.row_range(r0..r0 + o.len()))
        });
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::MatRef;
    use crate::kernels::tests::{TestMatrix, close, data, reference_rows};
    use gpt2_weights::Dtype;

    /// An (N, K) weight in every dtype, through `linear` (decode and prefill) and `logits`, on
    /// 1 and 3 threads, SIMD and scalar kernels, against the f32 product of the dequantized
    /// values. K = 96 (3 q8_0 blocks, less than one KC slice) and 320 (several slices of every
    /// instruction set's KC, the last one partial: the packing buffers are reused, not cleared,
    /// so a slice that wrote less than it read would show here), N = 150 (full panels and
    /// columns left over); 13 positions leave a partial group of rows for every tile height.
    #[test]
    fn out_in_weights_in_every_dtype_match_the_dequantized_product() {
        for k in [96, 320] {
            out_in_weights_match(k, 150);
        }
    }

    fn out_in_weights_match(k: usize, n: usize) {
        let w = data(n * k, 21);
        let bias = data(n, 22);
        for dtype in Dtype::ALL {
            let m = TestMatrix::new(&w, n, k, dtype);
            for threads in [1, 3] {
                for kernels in Kernels::available() {
                    let compute = Compute::new(kernels, threads, n).unwrap();
                    // Longest first: a later, shorter product reuses what a longer one left.
                    for t in [13, 2, 9, 1] {
                        let inp = data(t * k, 23);
                        let want = reference_rows(&inp, m.matrix(), &bias);
                        let mut got = vec![0.0; t * n];
                        let len = compute.linear_scratch_len(t, n, k, dtype.rounds_input());
                        let mut scratch = vec![0.0; len];
                        let weight = Weight::OutIn(m.matrix());
                        compute.pool().install(|| {
                            compute.linear(&mut got, &inp, weight, &bias, &mut scratch)
                        });
                        close(&got, &want, 1e-5);
                    }
                    let x = data(k, 24);
                    let mut got = vec![0.0; n];
                    compute
                        .pool()
                        .install(|| compute.logits(&mut got, &x, m.matrix()));
                    close(&got, &reference_rows(&x, m.matrix(), &vec![0.0; n]), 1e-5);
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
            for kernels in Kernels::available() {
                let compute = Compute::new(kernels, threads, n).unwrap();
                for t in [1, 2, t_max] {
                    let inp = data(t * k, 11);
                    let mut want = vec![0.0; t * n];
                    let wm = MatRef::new(&w, k, n);
                    Kernels::scalar().matmul_cols(&mut want, &inp, wm, &bias, 0);
                    let mut got = vec![0.0; t * n];
                    let mut scratch = vec![0.0; t.max(4 * threads) * n];
                    let weight = Weight::InOut(wm);
                    compute
                        .pool()
                        .install(|| compute.linear(&mut got, &inp, weight, &bias, &mut scratch));
                    close(&got, &want, 1e-5);
                }
                let x = data(k, 12);
                let rows = data(37 * k, 13);
                let (mut got, mut want) = (vec![0.0; 37], vec![0.0; 37]);
                let m = TestMatrix::new(&rows, 37, k, Dtype::F32);
                compute
                    .pool()
                    .install(|| compute.logits(&mut got, &x, m.matrix()));
                Kernels::scalar().dot_rows(&mut want, &x, &rows);
                close(&got, &want, 1e-5);
            }
        }
    }
}
