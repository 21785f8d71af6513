//! NEON kernels (aarch64), 4 floats per register. UNTESTED: no aarch64 toolchain or machine is
//! available to this project, so this file has never been compiled; it is kept small and mirrors
//! the x86 kernels' structure. The matrix products, dot products and axpy use NEON; layer norm,
//! GELU and softmax use the scalar kernels.
//!
//! NEON is part of the aarch64 baseline, so no run-time detection is needed; the `unsafe` blocks
//! are for the raw-pointer loads and stores, whose bounds the wrappers check first.

use std::arch::aarch64::*;

pub use super::scalar::{gelu, layernorm, softmax};

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    // SAFETY: every load reads 4 floats at i < len - 3, inside both slices.
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        let mut i = 0;
        while i + 4 <= a.len() {
            acc = vfmaq_f32(
                acc,
                vld1q_f32(a.as_ptr().add(i)),
                vld1q_f32(b.as_ptr().add(i)),
            );
            i += 4;
        }
        let mut s = vaddvq_f32(acc);
        for j in i..a.len() {
            s += a[j] * b[j];
        }
        s
    }
}

pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: lengths differ");
    // SAFETY: every load and store touches 4 floats at i < len - 3, inside both slices.
    unsafe {
        let a = vdupq_n_f32(alpha);
        let mut i = 0;
        while i + 4 <= y.len() {
            let v = vfmaq_f32(
                vld1q_f32(y.as_ptr().add(i)),
                a,
                vld1q_f32(x.as_ptr().add(i)),
            );
            vst1q_f32(y.as_mut_ptr().add(i), v);
            i += 4;
        }
        for j in i..y.len() {
            y[j] += alpha * x[j];
        }
    }
}

pub fn add(x: &mut [f32], y: &[f32]) {
    axpy(x, 1.0, y)
}

pub fn matmul_cols(
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    bias: &[f32],
    k: usize,
    n: usize,
    n0: usize,
) {
    super::scalar::matmul_cols_with(axpy, out, inp, w, bias, k, n, n0)
}

pub fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
    let c = x.len();
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(c)) {
        *o = dot(x, row);
    }
}
