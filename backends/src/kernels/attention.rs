//! Causal attention over the key/value cache, for the `simd` and `simd-kv` backends.
//!
//! The cache of one layer is (n_head, n_ctx, D): the keys one head attends over are contiguous,
//! so attention streams them instead of gathering D floats every C. [`KvShape`] is that shape,
//! [`KvStore`] every layer's keys and values, [`LayerCache`] one layer's, [`HeadCache`] one
//! head's. The values are f32, or f16 with `--kv-cache f16` (`gpt2_weights::dtype`'s cache
//! rule: half the bytes attention reads per step); the views are `Values`, which the kernels
//! widen in registers. One new position (decode) is [`attend_head`] per head; many (prefill) is
//! [`Compute::attention`], which widens an f16 head into scratch before its matrix products.

use gpt2_weights::dtype::f32_to_f16;
use gpt2_weights::{KvDtype, Matrix, Values};
use rayon::prelude::*;

use super::{Compute, Kernels, MatRef};

/// The shape of one layer's key or value cache: (n_head, n_ctx, D), D = C / n_head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    pub n_head: usize,
    pub n_ctx: usize,
    pub head_dim: usize,
}

impl KvShape {
    /// The cache of a model of width `c` split into `n_head` heads, for `n_ctx` positions.
    pub fn new(c: usize, n_head: usize, n_ctx: usize) -> Self {
        KvShape {
            n_head,
            n_ctx,
            head_dim: c / n_head,
        }
    }

    /// Values in one layer's keys (or values).
    pub fn layer_len(&self) -> usize {
        self.n_head * self.n_ctx * self.head_dim
    }

    /// Where head `h`'s (n_ctx, D) block starts in a layer's keys (or values).
    pub fn head_start(&self, h: usize) -> usize {
        h * self.n_ctx * self.head_dim
    }

    /// The range of head `h`'s (n_ctx, D) block in a layer's keys (or values).
    pub fn head_range(&self, h: usize) -> std::ops::Range<usize> {
        let start = self.head_start(h);
        start..start + self.n_ctx * self.head_dim
    }
}

/// An element of the key/value cache: f32, or the bits of an f16 (`u16`) with an f16 cache
/// (`gpt2_weights::dtype`'s cache rule). Storing rounds from f32; the kernels read the
/// stored values as [`Values`].
pub trait KvElement: Copy + Default + Send + Sync + 'static {
    /// `dst = src`, each value rounded to this element type.
    fn store(dst: &mut [Self], src: &[f32]);
    /// The stored values, as the kernels take them.
    fn values(stored: &[Self]) -> Values<'_>;
}

impl KvElement for f32 {
    fn store(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }

    fn values(stored: &[f32]) -> Values<'_> {
        Values::F32(stored)
    }
}

impl KvElement for u16 {
    fn store(dst: &mut [u16], src: &[f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = f32_to_f16(x);
        }
    }

    fn values(stored: &[u16]) -> Values<'_> {
        Values::F16(stored)
    }
}

/// The keys and values of every layer, (n_layer, n_head, n_ctx, D) each, in the cache's dtype
/// (`crate::Model::kv_cache`).
pub enum KvStore {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<u16>, v: Vec<u16> },
}

impl KvStore {
    /// Zeroed stores of `len` values each.
    pub fn new(dtype: KvDtype, len: usize) -> Self {
        match dtype {
            KvDtype::F32 => KvStore::F32 {
                k: vec![0.0; len],
                v: vec![0.0; len],
            },
            KvDtype::F16 => KvStore::F16 {
                k: vec![0; len],
                v: vec![0; len],
            },
        }
    }

    /// The dtype of the stored values.
    pub fn dtype(&self) -> KvDtype {
        match self {
            KvStore::F32 { .. } => KvDtype::F32,
            KvStore::F16 { .. } => KvDtype::F16,
        }
    }

    /// Bytes of both stores.
    pub fn bytes(&self) -> u64 {
        let bytes = match self {
            KvStore::F32 { k, v } => std::mem::size_of_val(&k[..]) + std::mem::size_of_val(&v[..]),
            KvStore::F16 { k, v } => std::mem::size_of_val(&k[..]) + std::mem::size_of_val(&v[..]),
        };
        bytes as u64
    }

    /// Stores the keys and values of positions `p0..p0 + T` of `qkv (T, 3C)` into layer `l`
    /// (rounded to the store's dtype) and returns that layer's cache.
    pub fn store_layer(
        &mut self,
        l: usize,
        shape: KvShape,
        qkv: &[f32],
        p0: usize,
    ) -> LayerCache<'_> {
        let layer = l * shape.layer_len()..(l + 1) * shape.layer_len();
        match self {
            KvStore::F32 { k, v } => store_kv(&mut k[layer.clone()], &mut v[layer], shape, qkv, p0),
            KvStore::F16 { k, v } => store_kv(&mut k[layer.clone()], &mut v[layer], shape, qkv, p0),
        }
        self.layer(l, shape)
    }

    /// Layer `l`'s keys and values.
    pub fn layer(&self, l: usize, shape: KvShape) -> LayerCache<'_> {
        let layer = l * shape.layer_len()..(l + 1) * shape.layer_len();
        let (k, v) = match self {
            KvStore::F32 { k, v } => (f32::values(&k[layer.clone()]), f32::values(&v[layer])),
            KvStore::F16 { k, v } => (u16::values(&k[layer.clone()]), u16::values(&v[layer])),
        };
        LayerCache { k, v, shape }
    }
}

/// One layer's keys and values, each (n_head, n_ctx, D), f32 or f16.
#[derive(Clone, Copy, Debug)]
pub struct LayerCache<'a> {
    pub k: Values<'a>,
    pub v: Values<'a>,
    pub shape: KvShape,
}

impl<'a> LayerCache<'a> {
    /// Head `h`'s keys and values.
    pub fn head(&self, h: usize) -> HeadCache<'a> {
        let range = self.shape.head_range(h);
        HeadCache {
            k: self.k.slice(range.clone()),
            v: self.v.slice(range),
        }
    }
}

/// One head's keys and values, each (n_ctx, D), f32 or f16.
#[derive(Clone, Copy, Debug)]
pub struct HeadCache<'a> {
    pub k: Values<'a>,
    pub v: Values<'a>,
}

/// Stores the keys and values of the positions `p0..p0 + T` of `qkv (T, 3C)` into one layer's
/// caches (`k_cache`, `v_cache`: (n_head, n_ctx, D)), head by head, rounded to their element.
pub fn store_kv<E: KvElement>(
    k_cache: &mut [E],
    v_cache: &mut [E],
    shape: KvShape,
    qkv: &[f32],
    p0: usize,
) {
    let d = shape.head_dim;
    let c = shape.n_head * d;
    for (i, row) in qkv.chunks_exact(3 * c).enumerate() {
        for hd in 0..shape.n_head {
            let at = shape.head_start(hd) + (p0 + i) * d;
            let (k_new, v_new) = (c + hd * d, 2 * c + hd * d);
            E::store(&mut k_cache[at..at + d], &row[k_new..k_new + d]);
            E::store(&mut v_cache[at..at + d], &row[v_new..v_new + d]);
        }
    }
}

impl Compute {
    /// Causal attention of T new positions (absolute positions `pos0..pos0 + T`) against the
    /// keys and values of positions `0..pos0 + T` in the cache.
    ///
    /// `att (T, C)` out (C = n_embd); `qkv (T, 3C)` holds the new queries in its first C columns;
    /// `cache` is the layer's keys and values with the new positions already written;
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
    pub fn attention(
        &self,
        att: &mut [f32],
        qkv: &[f32],
        cache: LayerCache<'_>,
        heads: &mut [f32],
        scores: &mut [f32],
        pos0: usize,
    ) {
        let KvShape {
            n_head,
            n_ctx,
            head_dim: d,
        } = cache.shape;
        let c = n_head * d;
        let t = att.len() / c;
        let scale = 1.0 / (d as f32).sqrt();
        let kern = self.kernels;
        if t == 1 {
            att.par_chunks_mut(d)
                .zip(scores.par_chunks_mut(n_ctx))
                .enumerate()
                .for_each(|(h, (out, s))| {
                    let q = &qkv[h * d..(h + 1) * d];
                    attend_head(&kern, out, q, cache.head(h), s, pos0)
                });
            return;
        }
        let n_all = pos0 + t; // keys attended by the last position
        heads[..n_head * t * d]
            .par_chunks_mut(t * d)
            .enumerate()
            .for_each(|(h, out)| {
                let HeadCache {
                    k: k_head,
                    v: v_head,
                } = cache.head(h);
                ATTENTION_SCRATCH.with(|cell| {
                    let mut bufs = cell.borrow_mut();
                    let (k_t, q, s, wide) = &mut *bufs;
                    // (D, n_all): this head's keys, transposed (widened to f32 first from f16).
                    if k_t.len() < d * n_all {
                        k_t.resize(d * n_all, 0.0);
                    }
                    let k_head = as_f32(&kern, k_head.slice(0..n_all * d), wide);
                    for (j, key) in k_head.chunks_exact(d).enumerate() {
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
                    // (n_all, D): this head's values, as f32.
                    let v_head = as_f32(&kern, v_head.slice(0..n_all * d), wide);
                    for i0 in (0..t).step_by(QUERY_BLOCK) {
                        let i1 = (i0 + QUERY_BLOCK).min(t);
                        let n = pos0 + i1; // keys seen by the block's last query
                        let len = (i1 - i0) * n;
                        if s.len() < len {
                            s.resize(len, 0.0);
                        }
                        let s = &mut s[..len];
                        // (rows, n) = (rows, D) @ (D, n)
                        let keys = MatRef::new(k_t, d, n_all);
                        kern.matmul_cols(s, &q[i0 * d..i1 * d], keys, self.zeros(n), 0);
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
                        kern.matmul_cols(
                            o,
                            s,
                            MatRef::new(&v_head[..n * d], n, d),
                            self.zeros(d),
                            0,
                        );
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

/// Per-thread buffers of prefill attention: transposed keys, queries, scores, and one head's
/// keys or values widened from an f16 cache.
type Scratch = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

thread_local! {
    /// [`Scratch`], grown to the largest prompt seen and reused.
    static ATTENTION_SCRATCH: std::cell::RefCell<Scratch> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new())) };
}

/// `values` as f32: borrowed when they are, else widened into `buf`.
fn as_f32<'b>(kern: &Kernels, values: Values<'b>, buf: &'b mut Vec<f32>) -> &'b [f32] {
    match values {
        Values::F32(v) => v,
        _ => {
            buf.resize(values.len(), 0.0);
            kern.dequantize(buf, values);
            buf
        }
    }
}

/// One attention head of one position: scores of `q (D)` against the keys of positions
/// `0..=pos`, softmax, weighted sum of their values into `out (D)`. Each head's keys are
/// contiguous in the cache, so the scores are one matrix-vector product (`dot_rows_any`) and the
/// weighted sum another (`weighted_sum`), both streaming memory front to back and widening an
/// f16 cache in registers. `scores` has room for `pos + 1` values.
pub fn attend_head(
    kern: &Kernels,
    out: &mut [f32],
    q: &[f32],
    head: HeadCache<'_>,
    scores: &mut [f32],
    pos: usize,
) {
    let (d, n) = (q.len(), pos + 1);
    let scale = 1.0 / (d as f32).sqrt();
    let s = &mut scores[..n];
    kern.dot_rows_any(s, q, Matrix::new(head.k, n, d)); // (n) = (n, D) @ (D)
    for sj in s.iter_mut() {
        *sj *= scale;
    }
    kern.softmax(s);
    kern.weighted_sum(out, s, Matrix::new(head.v, n, d)); // (D) = (n) @ (n, D)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{close, data};

    /// Causal attention straight from the definition, on the (n_head, n_ctx, D) cache layout.
    fn attention_reference(qkv: &[f32], cache: LayerCache<'_>, pos0: usize) -> Vec<f32> {
        let KvShape {
            n_head,
            n_ctx,
            head_dim: d,
        } = cache.shape;
        let (k_cache, v_cache) = (cache.k.to_f32(), cache.v.to_f32());
        let c = n_head * d;
        let t = qkv.len() / (3 * c);
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
        let (k32, v32) = (data(n_ctx * c, 21), data(n_ctx * c, 22));
        let to_f16 = |x: &[f32]| x.iter().map(|&v| f32_to_f16(v)).collect::<Vec<u16>>();
        let (k16, v16) = (to_f16(&k32), to_f16(&v32));
        // An f32 cache, and an f16 one (the reference reads its values widened).
        let caches = [
            (Values::F32(&k32), Values::F32(&v32)),
            (Values::F16(&k16), Values::F16(&v16)),
        ];
        for threads in [1, 3] {
            for kernels in Kernels::available() {
                let compute = Compute::new(kernels, threads, 3 * c).unwrap();
                // Decode (one position after 17 cached), prefill from scratch, a chunk
                // appended after cached positions, and more than one block of queries.
                for (t, pos0) in [(1, 17), (9, 0), (4, 11), (QUERY_BLOCK + 6, 3)] {
                    for (k, v) in caches {
                        let qkv = data(t * 3 * c, 23 + t as u32);
                        let mut scores = vec![0.0; n_head * n_ctx];
                        let mut heads = vec![0.0; t * c];
                        let mut got = vec![0.0; t * c];
                        let shape = KvShape::new(c, n_head, n_ctx);
                        let cache = LayerCache { k, v, shape };
                        compute.pool().install(|| {
                            compute.attention(&mut got, &qkv, cache, &mut heads, &mut scores, pos0)
                        });
                        let want = attention_reference(&qkv, cache, pos0);
                        close(&got, &want, 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn the_store_puts_each_head_in_its_block_rounded_to_its_dtype() {
        // 2 layers, 3 heads of 5, 4 positions; positions 1 and 2 of layer 1 are written.
        let (c, n_head, n_ctx) = (15, 3, 4);
        let shape = KvShape::new(c, n_head, n_ctx);
        let qkv = data(2 * 3 * c, 31); // (2, 3C)
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let mut store = KvStore::new(dtype, 2 * shape.layer_len());
            assert_eq!(store.dtype(), dtype);
            let bytes = dtype.bytes_per_value();
            assert_eq!(store.bytes(), (2 * 2 * shape.layer_len() * bytes) as u64);
            let cache = store.store_layer(1, shape, &qkv, 1);
            let (k, v) = (cache.k.to_f32().into_owned(), cache.v.to_f32().into_owned());
            for i in 0..2 {
                for h in 0..n_head {
                    for j in 0..5 {
                        let at = (h * n_ctx + 1 + i) * 5 + j;
                        let (key, value) = (
                            qkv[i * 3 * c + c + h * 5 + j],
                            qkv[i * 3 * c + 2 * c + h * 5 + j],
                        );
                        let round = |x: f32| match dtype {
                            KvDtype::F32 => x,
                            KvDtype::F16 => half::f16::from_f32(x).to_f32(),
                        };
                        assert_eq!((k[at], v[at]), (round(key), round(value)));
                    }
                }
            }
            // Layer 0 and the other positions are untouched.
            assert!(store.layer(0, shape).k.to_f32().iter().all(|&x| x == 0.0));
            assert!((0..n_head).all(|h| {
                k[h * n_ctx * 5..h * n_ctx * 5 + 5]
                    .iter()
                    .all(|&x| x == 0.0)
            }));
        }
    }
}
