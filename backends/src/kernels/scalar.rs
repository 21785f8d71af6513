//! Portable kernels: plain Rust, always compiled, used when no SIMD instruction set is detected
//! or when `GPT2_BENCH_FORCE_SCALAR=1`. They define what every SIMD kernel must compute.

use gpt2_weights::dtype::{self, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use gpt2_weights::{Matrix, Values};

use super::MatRef;

/// Rows of a matrix product: `out (T, N) = inp (T, K) @ w (K, N) + bias (N)`, restricted to the
/// output columns `n0..n0 + width`: `out` is `(T, width)`, `bias` is that slice of the bias.
pub fn matmul_cols(out: &mut [f32], inp: &[f32], w: MatRef<'_>, bias: &[f32], n0: usize) {
    matmul_cols_with(axpy, out, inp, w, bias, n0)
}

/// [`matmul_cols`] as a sequence of `out_row += inp[t, kk] * w[kk, cols]` row updates, with the
/// row update supplied by the caller (the NEON kernels pass theirs).
pub fn matmul_cols_with(
    axpy: fn(&mut [f32], f32, &[f32]),
    out: &mut [f32],
    inp: &[f32],
    w: MatRef<'_>,
    bias: &[f32],
    n0: usize,
) {
    let (k, n, w) = (w.rows(), w.cols(), w.data());
    let width = bias.len();
    for (out_row, in_row) in out.chunks_exact_mut(width).zip(inp.chunks_exact(k)) {
        out_row.copy_from_slice(bias);
        for (kk, &a) in in_row.iter().enumerate() {
            axpy(out_row, a, &w[kk * n + n0..kk * n + n0 + width]);
        }
    }
}

/// `out[r] = x . rows[r]` for each row of `rows (R, C)`.
pub fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
    let c = x.len();
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(c)) {
        *o = dot(x, row);
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += alpha * x`.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += alpha * b;
    }
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Layer norm of one row.
pub fn layernorm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let c = x.len() as f32;
    let mean = x.iter().sum::<f32>() / c;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c;
    let rstd = 1.0 / (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/// GPT-2's tanh GELU, in place.
pub fn gelu(x: &mut [f32]) {
    let s = (2.0f32 / std::f32::consts::PI).sqrt();
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (s * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// Softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Peak-throughput probe: 12 independent multiply-add chains. See `generic.rs`'s `fma_loop`.
pub fn fma_loop(iters: u64) -> f32 {
    let mut acc = [1.0f32; 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = x.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

/// Bandwidth probe: a plain sum. See `generic.rs`'s `read_sum`.
pub fn read_sum(x: &[f32]) -> f32 {
    x.iter().sum()
}

// ---------------------------------------------------------------------------------------------
// Reduced-precision weights: f16, bf16, q8_0 (the definitions are in `gpt2_weights::dtype`).

/// Values converted per step of the dot products below (one q8_0 block).
const CHUNK: usize = 32;

/// `out = values` as f32.
pub fn dequantize(out: &mut [f32], values: Values<'_>) {
    values.dequantize_into(out)
}

/// `out[r] = x . rows.row(r)` for every row of `rows`, in any dtype: each row converted 32
/// values at a time on the stack, then multiplied in f32.
pub fn dot_rows_any(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
    dot_rows_any_with(dot, dequantize, out, x, rows)
}

/// [`dot_rows_any`] with the f32 dot product and the conversion supplied by the caller (the
/// SIMD kernels pass theirs for the rows they have no kernel of their own for).
pub fn dot_rows_any_with(
    dot: fn(&[f32], &[f32]) -> f32,
    dequantize: fn(&mut [f32], Values<'_>),
    out: &mut [f32],
    x: &[f32],
    rows: Matrix<'_>,
) {
    let c = x.len();
    super::check_dot_rows_any(out, x, rows);
    match rows.values() {
        Values::F32(data) => {
            for (o, row) in out.iter_mut().zip(data.chunks_exact(c)) {
                *o = dot(x, row);
            }
            return;
        }
        Values::Q8_0(blocks) => return dot_rows_q8_0(out, x, blocks),
        Values::F16(_) | Values::Bf16(_) => {}
    }
    let mut buf = [0.0f32; CHUNK];
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows.row(r);
        let mut sum = 0.0;
        let mut i = 0;
        while i < c {
            let n = (c - i).min(CHUNK);
            dequantize(&mut buf[..n], row.slice(i..i + n));
            sum += dot(&x[i..i + n], &buf[..n]);
            i += n;
        }
        *o = sum;
    }
}

/// `out = sum_r weights[r] * rows.row(r)`: attention's weighted sum of the values in its cache
/// (f32, or f16 with `--kv-cache f16`), for rows in any dtype.
pub fn weighted_sum(out: &mut [f32], weights: &[f32], rows: Matrix<'_>) {
    out.fill(0.0);
    weighted_sum_with(axpy, dequantize, out, weights, rows)
}

/// `out += sum_r weights[r] * rows.row(r)`, with the row update and the conversion supplied by
/// the caller (the SIMD kernels pass theirs for the dtypes they have no kernel of their own for).
pub fn weighted_sum_with(
    axpy: fn(&mut [f32], f32, &[f32]),
    dequantize: fn(&mut [f32], Values<'_>),
    out: &mut [f32],
    weights: &[f32],
    rows: Matrix<'_>,
) {
    let width = out.len();
    assert!(
        rows.rows() == weights.len() && rows.cols() == width,
        "weighted_sum: inconsistent shapes"
    );
    if let Values::F32(data) = rows.values() {
        for (&a, row) in weights.iter().zip(data.chunks_exact(width)) {
            axpy(out, a, row);
        }
        return;
    }
    let mut buf = [0.0f32; CHUNK];
    for (r, &a) in weights.iter().enumerate() {
        let row = rows.row(r);
        let mut i = 0;
        while i < width {
            let n = (width - i).min(CHUNK);
            dequantize(&mut buf[..n], row.slice(i..i + n));
            axpy(&mut out[i..i + n], a, &buf[..n]);
            i += n;
        }
    }
}

/// q8_0 rows dotted with `x` by the q8_0 rule (`gpt2_weights::dtype`): `x` quantized to 16-bit
/// blocks, each block's 32 products `q_w * q_x` summed exactly in integers (at most 32 * 2^7 *
/// 2^14 in magnitude), then `d_w * d_x * sum` added up in f32. The SIMD kernels compute the
/// same sums.
fn dot_rows_q8_0(out: &mut [f32], x: &[f32], rows: &[u8]) {
    let c = x.len();
    let row_bytes = c / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
    super::with_input_buffers(c, |xq, xd| {
        quantize_input(x, xq, xd);
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(row_bytes)) {
            let blocks = row.chunks_exact(Q8_0_BLOCK_BYTES);
            *o = blocks
                .zip(xq.chunks_exact(Q8_0_BLOCK).zip(&*xd))
                .map(|(block, (q_x, &d_x))| {
                    let sum: i32 = block[2..]
                        .iter()
                        .zip(q_x)
                        .map(|(&q_w, &q_x)| i32::from(q_w as i8) * i32::from(q_x))
                        .sum();
                    dtype::q8_0_scale(block) * d_x * sum as f32
                })
                .sum();
        }
    })
}

/// The q8_0 input rule: the definition itself, `gpt2_weights::dtype::quantize_input_q8_0`.
pub fn quantize_input(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
    dtype::quantize_input_q8_0(x, qs, scales)
}

/// Rows of a matrix product with an `(N, K)` weight in any dtype: `out (T, N) = inp (T, K) @
/// w^T + bias (N)`, `w` holding the N output rows wanted.
pub fn matmul_rows(out: &mut [f32], inp: &[f32], w: Matrix<'_>, bias: &[f32]) {
    let (k, n) = (w.cols(), w.rows());
    assert!(
        bias.len() == n && inp.len().is_multiple_of(k) && out.len() == inp.len() / k * n,
        "matmul_rows: inconsistent shapes"
    );
    if inp.len() == k {
        // One position: the decode kernel, as the SIMD kernel sets do (a q8_0 weight's input
        // is then quantized by `dot_rows_any`, not rounded in f32).
        dot_rows_any(out, inp, w);
        add(out, bias);
        return;
    }
    rows_tail(dot, dequantize, out, inp, w, bias, 0);
}

/// Output columns `from..N` of [`matmul_rows`]: each weight row converted once, then dotted with
/// every input row. The SIMD kernels use it for the columns their register tiles leave over.
pub fn rows_tail(
    dot: fn(&[f32], &[f32]) -> f32,
    dequantize: fn(&mut [f32], Values<'_>),
    out: &mut [f32],
    inp: &[f32],
    w: Matrix<'_>,
    bias: &[f32],
    from: usize,
) {
    let (k, n) = (w.cols(), w.rows());
    let mut row = vec![0.0f32; k];
    for j in from..n {
        dequantize(&mut row, w.row(j));
        for (t, x) in inp.chunks_exact(k).enumerate() {
            out[t * n + j] = bias[j] + dot(x, &row);
        }
    }
}
