//! NEON kernels (aarch64), 4 floats per register: the same algorithms as the AVX2 kernels
//! (`avx2.rs`), written for NEON's 32 vector registers.
//!
//! NEON is part of the aarch64 baseline, so no run-time detection is needed: every public
//! function is a safe wrapper that checks its slice bounds and calls a
//! `#[target_feature(enable = "neon")]` body, whose raw-pointer loads and stores stay inside the
//! checked bounds. Tested under qemu's aarch64 emulation against the scalar kernels
//! (`.ci/aarch64.sh`); never timed, since emulation says nothing about speed.
//!
//! - [`matmul_cols`]: (T, K) x (K, N) on a range of output columns, in register tiles of 6 rows
//!   x 16 columns (24 accumulators: 6 rows x 4 vectors), on the same packed inputs (6 x 4 blocks
//!   transposed in registers) and (KC, 16) weight panels as the AVX2 kernel, then 4-column
//!   tiles for the remainder. For T = 1
//!   it switches to [`matvec_cols`], which streams 4 weight rows at a time.
//! - [`dot_rows`]: the output layer, 4 vocabulary rows at a time.
//! - element-wise: layer norm, GELU (a vectorised tanh from a Cephes-style exp), softmax, add.
//! - reduced-precision weights, converted in registers: [`dot_rows_any`], [`matmul_rows`],
//!   [`dequantize`]. f16 is widened with integer operations (shift the exponent and mantissa
//!   into place, rescale by 2^112, which handles subnormals, and set infinities and NaN apart):
//!   the `vcvt_f32_f16` intrinsic needs Rust's unstable f16 type. bf16 is a 16-bit shift. q8_0
//!   follows the q8_0 input rule of `gpt2_weights::dtype`: the input quantized to 16-bit blocks
//!   ([`quantize_input`], `fcvtns` rounding), the weights widened to 16 bits and multiplied
//!   into 32-bit lanes, scaled once per block. No software prefetch (the aarch64
//!   prefetch intrinsic is unstable); untimed, like everything here.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::aarch64::*;

use super::pack::{self, KC, PANELS_PER_PACK};
use gpt2_weights::dtype::{Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use gpt2_weights::{Matrix, Values};

use super::{MatRef, scalar};

/// e^x for 4 lanes: range reduction to x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial for
/// e^r (Cephes `expf` coefficients), and 2^n built in the exponent bits. Relative error ~1e-7.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3)), vdupq_n_f32(88.3));
    let n = vrndmq_f32(vfmaq_f32(
        vdupq_n_f32(0.5),
        x,
        vdupq_n_f32(std::f32::consts::LOG2_E),
    ));
    // r = x - n ln2, with ln2 split in two parts for precision.
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    let mut p = vdupq_n_f32(1.987_569_1e-4);
    p = vfmaq_f32(vdupq_n_f32(1.398_199_9e-3), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.333_452e-3), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.166_579_6e-2), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.666_666_5e-1), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5), p, r);
    let r2 = vmulq_f32(r, r);
    let e_r = vaddq_f32(vfmaq_f32(r, p, r2), vdupq_n_f32(1.0));
    let pow2n = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
        vcvtq_s32_f32(n),
        vdupq_n_s32(127),
    )));
    vmulq_f32(e_r, pow2n)
}

/// tanh(u) = 1 - 2 / (e^(2u) + 1), saturating cleanly at +-1.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tanh4(u: float32x4_t) -> float32x4_t {
    let e = exp4(vaddq_f32(u, u));
    let one = vdupq_n_f32(1.0);
    vsubq_f32(one, vdivq_f32(vdupq_n_f32(2.0), vaddq_f32(e, one)))
}

// ---------------------------------------------------------------------------------------------
// Matrix products

/// See [`scalar::matmul_cols`]; same arguments.
pub fn matmul_cols(out: &mut [f32], inp: &[f32], wm: MatRef<'_>, bias: &[f32], n0: usize) {
    let (k, n, w) = (wm.rows(), wm.cols(), wm.data());
    let width = bias.len();
    let t = inp.len() / k;
    assert!(
        inp.len() == t * k && out.len() == t * width && n0 + width <= n && w.len() >= k * n,
        "matmul_cols: inconsistent shapes"
    );
    if t == 1 {
        return matvec_cols(out, inp, wm, bias, n0);
    }
    pack::with_buffers(|a_packed, w_panel| {
        let pack_panels = |dst: &mut Vec<f32>, depth: std::ops::Range<usize>, j, panels| {
            pack::pack_panels::<16>(dst, &w[depth.start * n..], depth.len(), n, n0 + j, panels)
        };
        gemm_packed(out, inp, k, bias, a_packed, w_panel, &pack_panels);
        // SAFETY: NEON is baseline on aarch64; the shapes were checked above, which is all the
        // unchecked indexing relies on.
        unsafe {
            let mut j = width / 16 * 16;
            while j + 4 <= width {
                for r in 0..t {
                    tile4(out, inp, wm, bias, n0 + j, j, r);
                }
                j += 4;
            }
        }
        for jj in width / 4 * 4..width {
            for r in 0..t {
                let mut s = bias[jj];
                for kk in 0..k {
                    s += inp[r * k + kk] * w[kk * n + n0 + jj];
                }
                out[r * width + jj] = s;
            }
        }
    });
}

/// Packs a (depth, 16 * panels) block of weight panels starting at output column `j`.
type PackPanels<'a> = &'a dyn Fn(&mut Vec<f32>, std::ops::Range<usize>, usize, usize);

/// The packed part of a matrix-matrix product (see `avx2::gemm_packed`): the output columns in
/// whole 16-wide panels, the weight panels made by `pack_panels`.
fn gemm_packed(
    out: &mut [f32],
    inp: &[f32],
    k: usize,
    bias: &[f32],
    a_packed: &mut Vec<f32>,
    w_panel: &mut Vec<f32>,
    pack_panels: PackPanels<'_>,
) {
    let (width, t) = (bias.len(), inp.len() / k);
    assert!(
        out.len() == t * width && inp.len() == t * k,
        "gemm_packed: inconsistent shapes"
    );
    // SAFETY: NEON is baseline on aarch64; pack_rows hands a full group's 6 rows of K and
    // 6K + 2 floats of output, which is what pack_group6 touches.
    let pack6 = |out: &mut [f32], src: &[f32]| unsafe { pack_group6(out, src, k) };
    pack::pack_rows(a_packed, inp, t, k, Some(&pack6));
    let mut k0 = 0;
    while k0 < k {
        let kc = (k - k0).min(KC);
        let mut j = 0;
        while j + 16 <= width {
            let panels = ((width - j) / 16).min(PANELS_PER_PACK);
            pack_panels(w_panel, k0..k0 + kc, j, panels);
            for p in 0..panels {
                let panel = &w_panel[p * kc * 16..(p + 1) * kc * 16];
                // SAFETY: NEON is baseline; `out`, `a_packed` and the panel have the shapes
                // packed_tiles indexes.
                unsafe { packed_tiles(out, a_packed, panel, bias, k, k0..k0 + kc, j) };
                j += 16;
            }
        }
        k0 += kc;
    }
}

/// See `avx2::matmul_rows`: an (N, K) weight in any dtype, dequantized while packing.
pub fn matmul_rows(out: &mut [f32], inp: &[f32], w: Matrix<'_>, bias: &[f32]) {
    let (k, width) = (w.cols(), w.rows());
    let t = inp.len() / k;
    assert!(
        bias.len() == width && inp.len() == t * k && out.len() == t * width,
        "matmul_rows: inconsistent shapes"
    );
    if t == 1 {
        dot_rows_any(out, inp, w);
        add(out, bias);
        return;
    }
    pack::with_buffers(|a_packed, w_panel| {
        let pack_panels = |dst: &mut Vec<f32>, depth, j, panels| {
            pack::pack_panels_rows::<16>(
                dst,
                w,
                depth,
                j,
                panels,
                (dequantize, pack::rows_to_panel::<16>),
            )
        };
        gemm_packed(out, inp, k, bias, a_packed, w_panel, &pack_panels);
    });
    scalar::rows_tail(dot, dequantize, out, inp, w, bias, width / 16 * 16);
}

/// One full group of 6 rows: 4 values of k at a time, rows 0-3 transposed in registers (a 4 x 4
/// transpose) and rows 4-5 interleaved, stored as 4 runs of 6 floats.
#[target_feature(enable = "neon")]
unsafe fn pack_group6(out: &mut [f32], src: &[f32], k: usize) {
    debug_assert!(src.len() == 6 * k && out.len() >= 6 * k);
    let (s, o) = (src.as_ptr(), out.as_mut_ptr());
    let mut kk = 0;
    while kk + 4 <= k {
        let r: [float32x4_t; 6] = std::array::from_fn(|i| vld1q_f32(s.add(i * k + kk)));
        // 4 x 4 transpose of rows 0-3: column j holds r0[j], r1[j], r2[j], r3[j].
        let t01 = vtrn1q_f32(r[0], r[1]);
        let t01h = vtrn2q_f32(r[0], r[1]);
        let t23 = vtrn1q_f32(r[2], r[3]);
        let t23h = vtrn2q_f32(r[2], r[3]);
        let cols = [
            vreinterpretq_f32_f64(vtrn1q_f64(
                vreinterpretq_f64_f32(t01),
                vreinterpretq_f64_f32(t23),
            )),
            vreinterpretq_f32_f64(vtrn1q_f64(
                vreinterpretq_f64_f32(t01h),
                vreinterpretq_f64_f32(t23h),
            )),
            vreinterpretq_f32_f64(vtrn2q_f64(
                vreinterpretq_f64_f32(t01),
                vreinterpretq_f64_f32(t23),
            )),
            vreinterpretq_f32_f64(vtrn2q_f64(
                vreinterpretq_f64_f32(t01h),
                vreinterpretq_f64_f32(t23h),
            )),
        ];
        // Rows 4-5 interleaved: (r4[j], r5[j]) pairs for j = 0, 1 and 2, 3.
        let lo = vzip1q_f32(r[4], r[5]);
        let hi = vzip2q_f32(r[4], r[5]);
        let pairs = [
            vget_low_f32(lo),
            vget_high_f32(lo),
            vget_low_f32(hi),
            vget_high_f32(hi),
        ];
        for (j, (&col, &pair)) in cols.iter().zip(&pairs).enumerate() {
            vst1q_f32(o.add((kk + j) * 6), col);
            vst1_f32(o.add((kk + j) * 6 + 4), pair);
        }
        kk += 4;
    }
    for kr in kk..k {
        for lane in 0..6 {
            *o.add(kr * 6 + lane) = *s.add(lane * k + kr);
        }
    }
}

/// Every row group (of `out`'s T rows) against one packed (KC, 16) panel of the depth slice
/// `depth` of K; output columns `oc..oc + 16`. The first slice starts from the bias, later ones
/// from `out`.
#[target_feature(enable = "neon")]
unsafe fn packed_tiles(
    out: &mut [f32],
    a_packed: &[f32],
    panel: &[f32],
    bias: &[f32],
    k: usize,
    depth: std::ops::Range<usize>,
    oc: usize,
) {
    let width = bias.len();
    let (t, k0, kc) = (out.len() / width, depth.start, depth.len());
    let bp = bias.as_ptr().add(oc);
    let b: [float32x4_t; 4] = std::array::from_fn(|v| vld1q_f32(bp.add(4 * v)));
    for g in 0..t.div_ceil(6) {
        let rows = (t - g * 6).min(6);
        let o = out.as_mut_ptr().add(g * 6 * width + oc);
        let a = a_packed.as_ptr().add(g * k * 6 + k0 * 6);
        let mut acc = [b; 6];
        if k0 > 0 {
            for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                for (v, acc_rv) in acc_r.iter_mut().enumerate() {
                    *acc_rv = vld1q_f32(o.add(r * width + 4 * v));
                }
            }
        }
        let mut wp = panel.as_ptr();
        for kk in 0..kc {
            let wv: [float32x4_t; 4] = std::array::from_fn(|v| vld1q_f32(wp.add(4 * v)));
            let ak = a.add(kk * 6);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = *ak.add(r);
                for (acc_rv, &w_v) in acc_r.iter_mut().zip(&wv) {
                    *acc_rv = vfmaq_n_f32(*acc_rv, w_v, x);
                }
            }
            wp = wp.add(16);
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            for (v, &acc_rv) in acc_r.iter().enumerate() {
                vst1q_f32(o.add(r * width + 4 * v), acc_rv);
            }
        }
    }
}

/// One row `r` and 4 output columns, for the columns after the 16-wide panels: `wc` is the
/// tile's first column in the weight, `oc` in `out`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile4(
    out: &mut [f32],
    inp: &[f32],
    w: MatRef<'_>,
    bias: &[f32],
    wc: usize,
    oc: usize,
    r: usize,
) {
    let (k, n, w) = (w.rows(), w.cols(), w.data());
    let width = bias.len();
    let a = inp.as_ptr().add(r * k);
    let wp = w.as_ptr().add(wc);
    let mut acc = vld1q_f32(bias.as_ptr().add(oc));
    for kk in 0..k {
        acc = vfmaq_n_f32(acc, vld1q_f32(wp.add(kk * n)), *a.add(kk));
    }
    vst1q_f32(out.as_mut_ptr().add(r * width + oc), acc);
}

/// One input row: `out (width) = x (K) @ w[:, n0..n0+width] + bias`. Streams the weight four
/// rows at a time, front to back, accumulating into `out` (which stays in L1).
fn matvec_cols(out: &mut [f32], x: &[f32], w: MatRef<'_>, bias: &[f32], n0: usize) {
    let (k, n, width) = (w.rows(), w.cols(), bias.len());
    assert!(
        x.len() == k && out.len() == width && n0 + width <= n,
        "matvec_cols: inconsistent shapes"
    );
    // SAFETY: NEON is baseline on aarch64; shapes checked above.
    unsafe { matvec_cols_neon(out, x, w, bias, n0) }
}

#[target_feature(enable = "neon")]
unsafe fn matvec_cols_neon(out: &mut [f32], x: &[f32], w: MatRef<'_>, bias: &[f32], n0: usize) {
    out.copy_from_slice(bias);
    let p = w.data().as_ptr().add(n0) as *const u8;
    add_rows::<false>(out, x, p, w.cols());
}

/// `out = sum_r weights[r] * rows.row(r)` for f32 or f16 rows: attention's weighted sum of the
/// values in an f32 or an f16 cache.
pub fn weighted_sum(out: &mut [f32], weights: &[f32], rows: Matrix<'_>) {
    assert!(
        rows.rows() == weights.len() && rows.cols() == out.len(),
        "weighted_sum: inconsistent shapes"
    );
    out.fill(0.0);
    // SAFETY: NEON is baseline on aarch64; shapes checked above (rows.rows() rows of out.len()
    // values each).
    unsafe {
        match rows.values() {
            Values::F32(v) => add_rows::<false>(out, weights, v.as_ptr() as *const u8, out.len()),
            Values::F16(v) => add_rows::<true>(out, weights, v.as_ptr() as *const u8, out.len()),
            Values::Bf16(_) | Values::Q8_0(_) => {
                scalar::weighted_sum_with(axpy, dequantize, out, weights, rows)
            }
        }
    }
}

/// `out += sum_k x[k] * row_k`, row `k` being `out.len()` values (f32, or f16 with `F16`) that
/// start `k * stride` values after `p`. Four rows per pass over `out`, which stays in L1, the
/// rows read front to back.
///
/// # Safety
/// `x.len()` rows of `out.len()` values readable at that stride.
#[target_feature(enable = "neon")]
unsafe fn add_rows<const F16: bool>(out: &mut [f32], x: &[f32], p: *const u8, stride: usize) {
    let width = out.len();
    let o = out.as_mut_ptr();
    let mut k = 0;
    while k + 4 <= x.len() {
        let xs = vld1q_f32(x.as_ptr().add(k));
        let (r0, r1, r2, r3) = (
            k * stride,
            (k + 1) * stride,
            (k + 2) * stride,
            (k + 3) * stride,
        );
        let mut j = 0;
        while j + 4 <= width {
            let mut y = vld1q_f32(o.add(j));
            y = vfmaq_laneq_f32::<0>(y, load4::<F16>(p, r0 + j), xs);
            y = vfmaq_laneq_f32::<1>(y, load4::<F16>(p, r1 + j), xs);
            y = vfmaq_laneq_f32::<2>(y, load4::<F16>(p, r2 + j), xs);
            y = vfmaq_laneq_f32::<3>(y, load4::<F16>(p, r3 + j), xs);
            vst1q_f32(o.add(j), y);
            j += 4;
        }
        for jj in j..width {
            *o.add(jj) += x[k] * load1::<F16>(p, r0 + jj)
                + x[k + 1] * load1::<F16>(p, r1 + jj)
                + x[k + 2] * load1::<F16>(p, r2 + jj)
                + x[k + 3] * load1::<F16>(p, r3 + jj);
        }
        k += 4;
    }
    for (kr, &xk) in x.iter().enumerate().skip(k) {
        let r = kr * stride;
        let mut j = 0;
        while j + 4 <= width {
            let y = vfmaq_n_f32(vld1q_f32(o.add(j)), load4::<F16>(p, r + j), xk);
            vst1q_f32(o.add(j), y);
            j += 4;
        }
        for jj in j..width {
            *o.add(jj) += xk * load1::<F16>(p, r + jj);
        }
    }
}

/// 4 values from element `i` of `p`: f32, or f16 widened (exactly) with `F16`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load4<const F16: bool>(p: *const u8, i: usize) -> float32x4_t {
    if F16 {
        load_16::<false>((p as *const u16).add(i))
    } else {
        vld1q_f32((p as *const f32).add(i))
    }
}

/// Element `i` of `p` as f32 (see [`load4`]).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load1<const F16: bool>(p: *const u8, i: usize) -> f32 {
    if F16 {
        gpt2_weights::dtype::f16_to_f32(*(p as *const u16).add(i))
    } else {
        *(p as *const f32).add(i)
    }
}

/// `out[v] = x . rows[v]`, four rows at a time.
pub fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
    let c = x.len();
    assert!(rows.len() == out.len() * c, "dot_rows: inconsistent shapes");
    // SAFETY: NEON is baseline on aarch64; shapes checked above.
    unsafe { dot_rows_neon(out, x, rows) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_rows_neon(out: &mut [f32], x: &[f32], rows: &[f32]) {
    let c = x.len();
    let xp = x.as_ptr();
    let mut v = 0;
    while v + 4 <= out.len() {
        let p = rows.as_ptr().add(v * c);
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 4 <= c {
            let xv = vld1q_f32(xp.add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = vfmaq_f32(*a, xv, vld1q_f32(p.add(r * c + i)));
            }
            i += 4;
        }
        let mut s = acc.map(|a| vaddvq_f32(a));
        for (ii, &xv) in x.iter().enumerate().skip(i) {
            for (r, s_r) in s.iter_mut().enumerate() {
                *s_r += xv * *p.add(r * c + ii);
            }
        }
        out[v..v + 4].copy_from_slice(&s);
        v += 4;
    }
    for (vv, o) in out.iter_mut().enumerate().skip(v) {
        *o = dot_neon(x, &rows[vv * c..(vv + 1) * c]);
    }
}

// ---------------------------------------------------------------------------------------------
// Vectors

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    // SAFETY: NEON is baseline on aarch64; lengths checked above.
    unsafe { dot_neon(a, b) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut s0, mut s1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i + 8 <= a.len() {
        s0 = vfmaq_f32(s0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
        s1 = vfmaq_f32(s1, vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
        i += 8;
    }
    if i + 4 <= a.len() {
        s0 = vfmaq_f32(s0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
        i += 4;
    }
    let mut s = vaddvq_f32(vaddq_f32(s0, s1));
    for j in i..a.len() {
        s += a[j] * b[j];
    }
    s
}

pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: lengths differ");
    // SAFETY: NEON is baseline on aarch64; lengths checked above.
    unsafe { axpy_neon(y, alpha, x) }
}

#[target_feature(enable = "neon")]
unsafe fn axpy_neon(y: &mut [f32], alpha: f32, x: &[f32]) {
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i + 4 <= y.len() {
        let v = vfmaq_n_f32(vld1q_f32(py.add(i)), vld1q_f32(px.add(i)), alpha);
        vst1q_f32(py.add(i), v);
        i += 4;
    }
    for j in i..y.len() {
        y[j] += alpha * x[j];
    }
}

pub fn add(x: &mut [f32], y: &[f32]) {
    axpy(x, 1.0, y)
}

pub fn layernorm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let c = x.len();
    assert!(
        out.len() == c && w.len() == c && b.len() == c,
        "layernorm: lengths differ"
    );
    // SAFETY: NEON is baseline on aarch64; lengths checked above.
    unsafe { layernorm_neon(out, x, w, b, eps) }
}

#[target_feature(enable = "neon")]
unsafe fn layernorm_neon(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let c = x.len();
    let px = x.as_ptr();
    let mut s = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= c {
        s = vaddq_f32(s, vld1q_f32(px.add(i)));
        i += 4;
    }
    let mut sum = vaddvq_f32(s);
    for v in &x[i..] {
        sum += v;
    }
    let mean = sum / c as f32;
    let m = vdupq_n_f32(mean);
    let mut s = vdupq_n_f32(0.0);
    i = 0;
    while i + 4 <= c {
        let d = vsubq_f32(vld1q_f32(px.add(i)), m);
        s = vfmaq_f32(s, d, d);
        i += 4;
    }
    let mut var = vaddvq_f32(s);
    for v in &x[i..] {
        var += (v - mean) * (v - mean);
    }
    let rstd = 1.0 / (var / c as f32 + eps).sqrt();
    let po = out.as_mut_ptr();
    i = 0;
    while i + 4 <= c {
        let d = vmulq_n_f32(vsubq_f32(vld1q_f32(px.add(i)), m), rstd);
        let y = vfmaq_f32(
            vld1q_f32(b.as_ptr().add(i)),
            d,
            vld1q_f32(w.as_ptr().add(i)),
        );
        vst1q_f32(po.add(i), y);
        i += 4;
    }
    for j in i..c {
        out[j] = (x[j] - mean) * rstd * w[j] + b[j];
    }
}

pub fn gelu(x: &mut [f32]) {
    // SAFETY: NEON is baseline on aarch64; the body stays in bounds.
    unsafe { gelu_neon(x) }
}

#[target_feature(enable = "neon")]
unsafe fn gelu_neon(x: &mut [f32]) {
    let s = vdupq_n_f32((2.0f32 / std::f32::consts::PI).sqrt());
    let c = vdupq_n_f32(0.044715);
    let half = vdupq_n_f32(0.5);
    let one = vdupq_n_f32(1.0);
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 4 <= x.len() {
        let u = vld1q_f32(p.add(i));
        let u3 = vmulq_f32(vmulq_f32(u, u), u);
        let inner = vmulq_f32(s, vfmaq_f32(u, c, u3));
        let y = vmulq_f32(vmulq_f32(half, u), vaddq_f32(one, tanh4(inner)));
        vst1q_f32(p.add(i), y);
        i += 4;
    }
    scalar::gelu(&mut x[i..]);
}

pub fn softmax(x: &mut [f32]) {
    // SAFETY: NEON is baseline on aarch64; the body stays in bounds.
    unsafe { softmax_neon(x) }
}

#[target_feature(enable = "neon")]
unsafe fn softmax_neon(x: &mut [f32]) {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let m = vdupq_n_f32(max);
    let p = x.as_mut_ptr();
    let mut acc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= x.len() {
        let e = exp4(vsubq_f32(vld1q_f32(p.add(i)), m));
        vst1q_f32(p.add(i), e);
        acc = vaddq_f32(acc, e);
        i += 4;
    }
    let mut sum = vaddvq_f32(acc);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Peak-throughput probe: `iters` rounds of 12 independent FMA chains of 4 lanes, entirely in
/// registers. Returns a value that depends on every chain so the work cannot be optimised away.
pub fn fma_loop(iters: u64) -> f32 {
    // SAFETY: NEON is baseline on aarch64; no memory is accessed.
    unsafe { fma_loop_neon(iters) }
}

#[target_feature(enable = "neon")]
unsafe fn fma_loop_neon(iters: u64) -> f32 {
    let a = vdupq_n_f32(0.999_999);
    let b = vdupq_n_f32(1e-7);
    let mut acc = [vdupq_n_f32(1.0); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = vfmaq_f32(b, *x, a);
        }
    }
    let mut s = vdupq_n_f32(0.0);
    for x in acc {
        s = vaddq_f32(s, x);
    }
    vaddvq_f32(s)
}

/// Bandwidth probe: sums `x` with four independent accumulators (plain loads, no second stream).
pub fn read_sum(x: &[f32]) -> f32 {
    // SAFETY: NEON is baseline on aarch64; loads stay below x.len().
    unsafe { read_sum_neon(x) }
}

#[target_feature(enable = "neon")]
unsafe fn read_sum_neon(x: &[f32]) -> f32 {
    let p = x.as_ptr();
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= x.len() {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = vaddq_f32(*a, vld1q_f32(p.add(i + 4 * j)));
        }
        i += 16;
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(s) + x[i..].iter().sum::<f32>()
}

// ---------------------------------------------------------------------------------------------
// Reduced-precision weights (definitions in `gpt2_weights::dtype`; scalar reference in
// `scalar.rs`).

/// 4 f16 values as f32, exactly: see the module docs.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    let h = vmovl_u16(h);
    let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
    let em = vandq_u32(h, vdupq_n_u32(0x7fff));
    let shifted = vshlq_n_u32::<13>(em);
    // 2^112 = 2^(127 - 15): moves the exponent from f16's bias to f32's, subnormals included.
    let scaled = vmulq_f32(
        vreinterpretq_f32_u32(shifted),
        vdupq_n_f32(f32::from_bits(0x7780_0000)),
    );
    let inf_or_nan = vcgeq_u32(em, vdupq_n_u32(0x7c00));
    let special = vorrq_u32(shifted, vdupq_n_u32(0x7f80_0000));
    let bits = vbslq_u32(inf_or_nan, special, vreinterpretq_u32_f32(scaled));
    vreinterpretq_f32_u32(vorrq_u32(bits, sign))
}

/// 4 f16 (bf16 with `BF16`) values at `p` as f32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_16<const BF16: bool>(p: *const u16) -> float32x4_t {
    let h = vld1_u16(p);
    if BF16 {
        vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(h)))
    } else {
        f16x4_to_f32(h)
    }
}

/// The scale of the q8_0 block at `p`, as f32 in all 4 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q8_0_scale(p: *const u8) -> float32x4_t {
    f16x4_to_f32(vdup_n_u16(u16::from_le_bytes([*p, *p.add(1)])))
}

/// The 32 values of the q8_0 block at `p`, unscaled (the `q`), as 8 vectors of f32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q8_0_values(p: *const u8) -> [float32x4_t; 8] {
    let qs = p.add(2) as *const i8;
    let (lo, hi) = (vld1q_s8(qs), vld1q_s8(qs.add(16)));
    let w = [
        vmovl_s8(vget_low_s8(lo)),
        vmovl_s8(vget_high_s8(lo)),
        vmovl_s8(vget_low_s8(hi)),
        vmovl_s8(vget_high_s8(hi)),
    ];
    let f = |v: int32x4_t| vcvtq_f32_s32(v);
    [
        f(vmovl_s16(vget_low_s16(w[0]))),
        f(vmovl_s16(vget_high_s16(w[0]))),
        f(vmovl_s16(vget_low_s16(w[1]))),
        f(vmovl_s16(vget_high_s16(w[1]))),
        f(vmovl_s16(vget_low_s16(w[2]))),
        f(vmovl_s16(vget_high_s16(w[2]))),
        f(vmovl_s16(vget_low_s16(w[3]))),
        f(vmovl_s16(vget_high_s16(w[3]))),
    ]
}

/// `out = values` as f32.
pub fn dequantize(out: &mut [f32], values: Values<'_>) {
    assert_eq!(out.len(), values.len(), "dequantize: lengths differ");
    // SAFETY: NEON is baseline on aarch64; lengths checked above.
    unsafe {
        match values {
            Values::F32(v) => out.copy_from_slice(v),
            Values::F16(v) => dequantize_16::<false>(out, v),
            Values::Bf16(v) => dequantize_16::<true>(out, v),
            Values::Q8_0(b) => dequantize_q8_0(out, b),
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dequantize_16<const BF16: bool>(out: &mut [f32], v: &[u16]) {
    let mut i = 0;
    while i + 4 <= v.len() {
        vst1q_f32(out.as_mut_ptr().add(i), load_16::<BF16>(v.as_ptr().add(i)));
        i += 4;
    }
    for j in i..v.len() {
        out[j] = if BF16 {
            gpt2_weights::dtype::bf16_to_f32(v[j])
        } else {
            gpt2_weights::dtype::f16_to_f32(v[j])
        };
    }
}

#[target_feature(enable = "neon")]
unsafe fn dequantize_q8_0(out: &mut [f32], blocks: &[u8]) {
    for (o, block) in out
        .chunks_exact_mut(Q8_0_BLOCK)
        .zip(blocks.chunks_exact(Q8_0_BLOCK_BYTES))
    {
        let d = q8_0_scale(block.as_ptr());
        for (i, q) in q8_0_values(block.as_ptr()).iter().enumerate() {
            vst1q_f32(o.as_mut_ptr().add(4 * i), vmulq_f32(d, *q));
        }
    }
}

/// `out[r] = x . rows.row(r)` for every row of `rows`, in any dtype, 4 rows at a time.
pub fn dot_rows_any(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
    let c = x.len();
    assert!(
        rows.cols() == c && rows.rows() == out.len(),
        "dot_rows_any: inconsistent shapes"
    );
    // SAFETY: NEON is baseline on aarch64; shapes checked above (each row is c values; q8_0
    // rows are c / 32 whole blocks, as Matrix guarantees).
    unsafe {
        match rows.values() {
            Values::F32(v) => dot_rows_neon(out, x, v),
            Values::F16(v) => dot_rows_16::<false>(out, x, v),
            Values::Bf16(v) => dot_rows_16::<true>(out, x, v),
            Values::Q8_0(b) => dot_rows_q8_0(out, x, b),
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dot_rows_16<const BF16: bool>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let mut v = 0;
    while v + 4 <= out.len() {
        let sums = dot_16::<BF16, 4>(x, rows.as_ptr().add(v * c));
        out[v..v + 4].copy_from_slice(&sums);
        v += 4;
    }
    for (vv, o) in out.iter_mut().enumerate().skip(v) {
        *o = dot_16::<BF16, 1>(x, rows.as_ptr().add(vv * c))[0];
    }
}

/// `x . row r` for the `R` f16 (bf16) rows starting at `p`; `R` constant so the accumulators
/// stay in registers.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_16<const BF16: bool, const R: usize>(x: &[f32], p: *const u16) -> [f32; R] {
    let c = x.len();
    let xp = x.as_ptr();
    let mut acc = [vdupq_n_f32(0.0); R];
    let mut i = 0;
    while i + 4 <= c {
        let xv = vld1q_f32(xp.add(i));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = vfmaq_f32(*a, xv, load_16::<BF16>(p.add(r * c + i)));
        }
        i += 4;
    }
    let mut sums = [0.0f32; R];
    for (r, s) in sums.iter_mut().enumerate() {
        *s = vaddvq_f32(acc[r]);
        for (ii, &xi) in x.iter().enumerate().skip(i) {
            let b = *p.add(r * c + ii);
            let w = if BF16 {
                gpt2_weights::dtype::bf16_to_f32(b)
            } else {
                gpt2_weights::dtype::f16_to_f32(b)
            };
            *s += xi * w;
        }
    }
    sums
}

/// q8_0 rows, by the q8_0 rule (`gpt2_weights::dtype`): `x` quantized once
/// ([`quantize_input`]), then 4 rows at a time, then one at a time.
#[target_feature(enable = "neon")]
unsafe fn dot_rows_q8_0(out: &mut [f32], x: &[f32], rows: &[u8]) {
    let c = x.len();
    let row_bytes = c / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
    super::with_input_buffers(c, |xq, xd| {
        quantize_input_neon(x, xq, xd);
        let mut v = 0;
        while v + 4 <= out.len() {
            let sums = dot_q8_0::<4>(xq, xd, rows.as_ptr().add(v * row_bytes));
            out[v..v + 4].copy_from_slice(&sums);
            v += 4;
        }
        for (vv, o) in out.iter_mut().enumerate().skip(v) {
            *o = dot_q8_0::<1>(xq, xd, rows.as_ptr().add(vv * row_bytes))[0];
        }
    })
}

/// `x . row r` for the `R` q8_0 rows starting at `p`, `x` given as 16-bit blocks (`xq`, scales
/// `xd`): per block, the weights widened to 16 bits and multiplied into 32-bit lanes
/// (`smull`/`smlal`, exact: a lane sums 8 products of at most 2^7 * 2^14), then scaled by
/// `d_w * d_x` into the row's accumulator.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_q8_0<const R: usize>(xq: &[i16], xd: &[f32], p: *const u8) -> [f32; R] {
    let c = xq.len();
    let row_bytes = c / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
    let mut acc = [vdupq_n_f32(0.0); R];
    for (b, &dx) in xd.iter().enumerate() {
        let y = xq.as_ptr().add(b * Q8_0_BLOCK);
        let y: [int16x8_t; 4] = std::array::from_fn(|i| vld1q_s16(y.add(8 * i)));
        for (r, a) in acc.iter_mut().enumerate() {
            let block = p.add(r * row_bytes + b * Q8_0_BLOCK_BYTES);
            let qs = block.add(2) as *const i8;
            let (w0, w1) = (vld1q_s8(qs), vld1q_s8(qs.add(16)));
            let w = [
                vmovl_s8(vget_low_s8(w0)),
                vmovl_high_s8(w0),
                vmovl_s8(vget_low_s8(w1)),
                vmovl_high_s8(w1),
            ];
            let mut sums = vmull_s16(vget_low_s16(w[0]), vget_low_s16(y[0]));
            sums = vmlal_high_s16(sums, w[0], y[0]);
            for i in 1..4 {
                sums = vmlal_s16(sums, vget_low_s16(w[i]), vget_low_s16(y[i]));
                sums = vmlal_high_s16(sums, w[i], y[i]);
            }
            let d = vmulq_n_f32(q8_0_scale(block), dx);
            *a = vfmaq_f32(*a, d, vcvtq_f32_s32(sums));
        }
    }
    let mut sums = [0.0f32; R];
    for (r, s) in sums.iter_mut().enumerate() {
        *s = vaddvq_f32(acc[r]);
    }
    sums
}

/// The q8_0 input rule (`gpt2_weights::dtype::quantize_input_q8_0`) in registers, with the same
/// result bit for bit: max |x| as the maximum of the bits without the sign, the power-of-two
/// scale from the definition's own `input_scale`, `x / d` (an exact multiply) rounded by
/// `fcvtns` (to nearest, ties to even), narrowed to 16 bits (exact: |q| <= 2^14).
pub fn quantize_input(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
    assert!(
        x.len().is_multiple_of(Q8_0_BLOCK)
            && qs.len() == x.len()
            && scales.len() == x.len() / Q8_0_BLOCK,
        "quantize_input: inconsistent shapes"
    );
    // SAFETY: NEON is baseline on aarch64; shapes checked above.
    unsafe { quantize_input_neon(x, qs, scales) }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_input_neon(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
    let no_sign = vdupq_n_u32(0x7fff_ffff);
    for (b, d) in scales.iter_mut().enumerate() {
        let p = x.as_ptr().add(b * Q8_0_BLOCK);
        let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(p.add(4 * i)));
        let bits = v.map(|v| vandq_u32(vreinterpretq_u32_f32(v), no_sign));
        let m = vmaxq_u32(
            vmaxq_u32(vmaxq_u32(bits[0], bits[1]), vmaxq_u32(bits[2], bits[3])),
            vmaxq_u32(vmaxq_u32(bits[4], bits[5]), vmaxq_u32(bits[6], bits[7])),
        );
        let amax = f32::from_bits(vmaxvq_u32(m));
        let (scale, inverse) = gpt2_weights::dtype::input_scale(amax);
        *d = scale;
        let i = v.map(|v| vmovn_s32(vcvtnq_s32_f32(vmulq_n_f32(v, inverse))));
        let q = qs.as_mut_ptr().add(b * Q8_0_BLOCK);
        for k in 0..4 {
            vst1q_s16(q.add(8 * k), vcombine_s16(i[2 * k], i[2 * k + 1]));
        }
    }
}
