//! AVX2 + FMA kernels (x86-64), 8 floats per register.
//!
//! Every public function here is a safe wrapper that checks its slice bounds and then calls a
//! `#[target_feature(enable = "avx2,fma")]` body. The wrappers are reachable only through
//! [`super::Kernels::detect`], which hands them out after `is_x86_feature_detected!` confirmed
//! both features; that is the precondition every `unsafe` call below relies on.
//!
//! - [`matmul_cols`]: (T, K) x (K, N) on a range of output columns, in register tiles of
//!   6 rows x 16 columns (12 accumulators). Inputs are packed by groups of 6 rows and each
//!   (K, 16) weight panel into a contiguous buffer, so that the tile reads two sequential
//!   streams; each loaded weight vector is reused by all 6 rows. For T = 1 it switches to
//!   [`matvec_cols`].
//! - [`matvec_cols`]: one row times the weight, streaming 4 weight rows at a time from start to
//!   end (sequential reads, the memory-bandwidth-bound decode case), the output slice in L1.
//! - [`dot_rows`]: the output layer, `x . wte[v]` for 4 vocabulary rows at a time.
//! - element-wise: layer norm, GELU (vectorised tanh from a Cephes-style exp), softmax, add.
//! - reduced-precision weights, converted in registers as they are loaded, never expanded in
//!   memory: [`dot_rows_any`] (decode's products and the output layer: f16 through F16C's
//!   `vcvtph2ps`, bf16 as a 16-bit shift; q8_0 by the q8_0 input rule of `gpt2_weights::dtype`:
//!   the input quantized to 16-bit blocks once per call ([`quantize_input`]), each block's 32
//!   products summed in integers by `vpmovsxbw`/`vpmaddwd`, scaled once per block),
//!   [`matmul_rows`] (prefill: dequantized while packing the panels; a q8_0 weight's input is
//!   rounded first by `Kernels::matmul_rows`), [`dequantize`]. These need F16C as well, which
//!   [`super::Kernels::detect`] checks.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::pack::{self, KC, PANELS_PER_PACK};
use gpt2_weights::dtype::{Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use gpt2_weights::{Matrix, Values};

use super::{MatRef, scalar};

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// e^x for 8 lanes: range reduction to x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial for
/// e^r (Cephes `expf` coefficients), and 2^n built in the exponent bits. Relative error ~1e-7.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
        _mm256_set1_ps(88.3),
    );
    let n = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    // r = x - n ln2, with ln2 split in two parts for precision.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    let r2 = _mm256_mul_ps(r, r);
    let e_r = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    ));
    _mm256_mul_ps(e_r, pow2n)
}

/// tanh(u) = 1 - 2 / (e^(2u) + 1), saturating cleanly at +-1.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh8(u: __m256) -> __m256 {
    let e = exp8(_mm256_add_ps(u, u));
    let one = _mm256_set1_ps(1.0);
    _mm256_sub_ps(
        one,
        _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
    )
}

// ---------------------------------------------------------------------------------------------
// Matrix products

/// Calls `$tile::<R>` for consecutive groups of R = 6 rows, then the remainder.
macro_rules! row_groups {
    ($t:expr, $tile:ident, $($arg:expr),*) => {{
        let mut r = 0;
        while r + 6 <= $t {
            $tile::<6>($($arg,)* r);
            r += 6;
        }
        match $t - r {
            5 => $tile::<5>($($arg,)* r),
            4 => $tile::<4>($($arg,)* r),
            3 => $tile::<3>($($arg,)* r),
            2 => $tile::<2>($($arg,)* r),
            1 => $tile::<1>($($arg,)* r),
            _ => {}
        }
    }};
}

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
            pack::pack_panels(dst, &w[depth.start * n..], depth.len(), n, n0 + j, panels)
        };
        gemm_packed(out, inp, k, bias, a_packed, w_panel, &pack_panels);
        // SAFETY: AVX2 and FMA were detected before this kernel was handed out (module docs),
        // and the shapes were checked above, which is all the unchecked indexing relies on.
        unsafe {
            let mut j = width / 16 * 16;
            while j + 8 <= width {
                row_groups!(t, tile8, out, inp, wm, bias, n0 + j, j);
                j += 8;
            }
        }
        for jj in j_tail(width)..width {
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

/// The packed part of a matrix-matrix product: `out (T, width) = inp (T, K) @ W + bias` for the
/// output columns in whole 16-wide panels (`width / 16 * 16` of them), the weight panels made by
/// `pack_panels` (from an (K, N) f32 weight, or dequantized from an (N, K) one). The caller
/// computes the remaining columns.
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
    // SAFETY: AVX2 detected before this kernel was handed out; pack_rows hands a full
    // group's 6 rows of K and 6K + 2 floats of output, which is what pack_group6 touches.
    let pack6 = |out: &mut [f32], src: &[f32]| unsafe { pack_group6(out, src, k) };
    pack::pack_rows(a_packed, inp, t, k, Some(&pack6));
    // BLIS-style blocking. The depth K is cut into slices of at most KC rows; for each slice,
    // PANELS_PER_PACK (KC, 16) weight panels are packed into one contiguous buffer, then every
    // group of 6 rows runs against each panel, adding into `out` (the first slice starts from
    // the bias). A slice's panel (16 KiB) and a group's inputs (6 KiB) sit in L1, the packed
    // panels and the slice of every row group in L2. (Unpacked, a panel's rows are N floats
    // apart: for GPT-2's N a multiple of 4 KiB, so every row would land in the same L1 set.)
    let mut k0 = 0;
    while k0 < k {
        let kc = (k - k0).min(KC);
        let mut j = 0;
        while j + 16 <= width {
            let panels = ((width - j) / 16).min(PANELS_PER_PACK);
            pack_panels(w_panel, k0..k0 + kc, j, panels);
            for p in 0..panels {
                let panel = &w_panel[p * kc * 16..(p + 1) * kc * 16];
                // SAFETY: features detected (module docs); `out`, `a_packed` (T rows of K,
                // packed) and the panel (kc x 16) have the shapes packed_tiles indexes.
                unsafe { packed_tiles(out, a_packed, panel, bias, k, k0..k0 + kc, j) };
                j += 16;
            }
        }
        k0 += kc;
    }
}

/// Rows of a matrix product with an (N, K) weight in any dtype:
/// `out (T, N) = inp (T, K) @ w^T + bias`, see [`scalar::matmul_rows`]. T = 1 is [`dot_rows_any`] plus the bias; otherwise the
/// weight is dequantized into the packed panels of [`gemm_packed`] and the last `N % 16` columns
/// are dot products of dequantized rows.
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
            pack::pack_panels_rows(dst, w, depth, j, panels, (dequantize, rows_to_panel))
        };
        gemm_packed(out, inp, k, bias, a_packed, w_panel, &pack_panels);
    });
    scalar::rows_tail(dot, dequantize, out, inp, w, bias, width / 16 * 16);
}

/// See [`pack::ToPanel`]: 16 rows of `kc` values into a (kc, 16) panel, as two columns of
/// 8 x 8 blocks transposed in registers (the same shuffles as [`pack_group6`]).
pub(super) fn rows_to_panel(rows: &[f32], kc: usize, panel: &mut [f32]) {
    assert!(
        rows.len() == 16 * kc && panel.len() == 16 * kc,
        "rows_to_panel: shapes"
    );
    // SAFETY: AVX2 detected before this kernel was handed out; every load reads row
    // `half * 8 + i` at `kk..kk + 8 <= kc`, every store panel row `kk + j < kc`, lanes
    // `half * 8..half * 8 + 8`: inside the slices checked above.
    unsafe { rows_to_panel_avx2(rows, kc, panel) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn rows_to_panel_avx2(rows: &[f32], kc: usize, panel: &mut [f32]) {
    let (s, o) = (rows.as_ptr(), panel.as_mut_ptr());
    for half in 0..2 {
        let mut kk = 0;
        while kk + 8 <= kc {
            let r: [__m256; 8] =
                std::array::from_fn(|i| _mm256_loadu_ps(s.add((half * 8 + i) * kc + kk)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let cols = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (j, col) in cols.iter().enumerate() {
                _mm256_storeu_ps(o.add((kk + j) * 16 + half * 8), *col);
            }
            kk += 8;
        }
        for kr in kk..kc {
            for lane in half * 8..half * 8 + 8 {
                *o.add(kr * 16 + lane) = *s.add(lane * kc + kr);
            }
        }
    }
}

/// First column not covered by the 16- and 8-wide tiles.
fn j_tail(width: usize) -> usize {
    width / 16 * 16 + (width % 16) / 8 * 8
}

/// One full group of 6 rows: 8 values of k at a time, the 6 x 8 block transposed in registers
/// (an 8 x 8 transpose with two zero rows) and stored as 8 runs of 6. Each 8-float store
/// spills 2 floats into the next run, which the next store (or the next group, or the spare
/// at the end of the buffer) overwrites, so the stores go front to back.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_group6(out: &mut [f32], src: &[f32], k: usize) {
    debug_assert!(src.len() == 6 * k && out.len() == 6 * k + 2);
    let (s, o) = (src.as_ptr(), out.as_mut_ptr());
    let zero = _mm256_setzero_ps();
    let mut kk = 0;
    while kk + 8 <= k {
        let r: [__m256; 6] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * k + kk)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, zero);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, zero);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, zero);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, zero);
        let cols = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, col) in cols.iter().enumerate() {
            _mm256_storeu_ps(o.add((kk + j) * 6), *col);
        }
        kk += 8;
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
#[target_feature(enable = "avx2,fma")]
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
    let b0 = _mm256_loadu_ps(bias.as_ptr().add(oc));
    let b1 = _mm256_loadu_ps(bias.as_ptr().add(oc + 8));
    for g in 0..t.div_ceil(6) {
        let rows = (t - g * 6).min(6);
        let o = out.as_mut_ptr().add(g * 6 * width + oc);
        let a = a_packed.as_ptr().add(g * k * 6 + k0 * 6);
        let mut acc = [[b0, b1]; 6];
        if k0 > 0 {
            for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                acc_r[0] = _mm256_loadu_ps(o.add(r * width));
                acc_r[1] = _mm256_loadu_ps(o.add(r * width + 8));
            }
        }
        let mut wp = panel.as_ptr();
        for kk in 0..kc {
            let w0 = _mm256_loadu_ps(wp);
            let w1 = _mm256_loadu_ps(wp.add(8));
            let ak = a.add(kk * 6);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*ak.add(r));
                acc_r[0] = _mm256_fmadd_ps(x, w0, acc_r[0]);
                acc_r[1] = _mm256_fmadd_ps(x, w1, acc_r[1]);
            }
            wp = wp.add(16);
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            _mm256_storeu_ps(o.add(r * width), acc_r[0]);
            _mm256_storeu_ps(o.add(r * width + 8), acc_r[1]);
        }
    }
}

/// One register tile of R rows (starting at `r0`) and 8 output columns: `wc` is the tile's
/// first column in the weight, `oc` in `out` (whose rows are `bias.len()` wide). Used for the
/// 8-column remainder after the packed 16-column panels.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile8<const R: usize>(
    out: &mut [f32],
    inp: &[f32],
    w: MatRef<'_>,
    bias: &[f32],
    wc: usize,
    oc: usize,
    r0: usize,
) {
    let (k, n, w) = (w.rows(), w.cols(), w.data());
    let width = bias.len();
    let a = inp.as_ptr().add(r0 * k);
    let o = out.as_mut_ptr().add(r0 * width + oc);
    let wp = w.as_ptr().add(wc);
    let mut acc = [_mm256_loadu_ps(bias.as_ptr().add(oc)); R];
    for kk in 0..k {
        let w0 = _mm256_loadu_ps(wp.add(kk * n));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            *acc_r = _mm256_fmadd_ps(_mm256_set1_ps(*a.add(r * k + kk)), w0, *acc_r);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        _mm256_storeu_ps(o.add(r * width), *acc_r);
    }
}

/// One input row: `out (width) = x (K) @ w[:, n0..n0+width] + bias`. Streams the weight four
/// rows at a time, front to back, accumulating into `out` (which stays in L1).
fn matvec_cols(out: &mut [f32], x: &[f32], w: MatRef<'_>, bias: &[f32], n0: usize) {
    let (k, n, width) = (w.rows(), w.cols(), bias.len());
    assert!(
        x.len() == k && out.len() == width && n0 + width <= n,
        "matvec_cols: inconsistent shapes"
    );
    // SAFETY: features detected before this kernel was handed out; shapes checked above.
    unsafe { matvec_cols_avx2(out, x, w, bias, n0) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_cols_avx2(out: &mut [f32], x: &[f32], w: MatRef<'_>, bias: &[f32], n0: usize) {
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
    // SAFETY: AVX2, FMA and F16C detected before this kernel was handed out; shapes checked
    // above (rows.rows() rows of out.len() values each).
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
/// AVX2, FMA and F16C; `x.len()` rows of `out.len()` values readable at that stride.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_rows<const F16: bool>(out: &mut [f32], x: &[f32], p: *const u8, stride: usize) {
    let width = out.len();
    let o = out.as_mut_ptr();
    let mut k = 0;
    while k + 4 <= x.len() {
        let (x0, x1, x2, x3) = (
            _mm256_set1_ps(x[k]),
            _mm256_set1_ps(x[k + 1]),
            _mm256_set1_ps(x[k + 2]),
            _mm256_set1_ps(x[k + 3]),
        );
        let (r0, r1, r2, r3) = (
            k * stride,
            (k + 1) * stride,
            (k + 2) * stride,
            (k + 3) * stride,
        );
        let mut j = 0;
        while j + 8 <= width {
            let mut y = _mm256_loadu_ps(o.add(j));
            y = _mm256_fmadd_ps(x0, load8::<F16>(p, r0 + j), y);
            y = _mm256_fmadd_ps(x1, load8::<F16>(p, r1 + j), y);
            y = _mm256_fmadd_ps(x2, load8::<F16>(p, r2 + j), y);
            y = _mm256_fmadd_ps(x3, load8::<F16>(p, r3 + j), y);
            _mm256_storeu_ps(o.add(j), y);
            j += 8;
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
        let (xv, r) = (_mm256_set1_ps(xk), kr * stride);
        let mut j = 0;
        while j + 8 <= width {
            let y = _mm256_fmadd_ps(xv, load8::<F16>(p, r + j), _mm256_loadu_ps(o.add(j)));
            _mm256_storeu_ps(o.add(j), y);
            j += 8;
        }
        for jj in j..width {
            *o.add(jj) += xk * load1::<F16>(p, r + jj);
        }
    }
}

/// 8 values from element `i` of `p`: f32, or f16 widened (exactly) with `F16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<const F16: bool>(p: *const u8, i: usize) -> __m256 {
    if F16 {
        load_f16((p as *const u16).add(i))
    } else {
        _mm256_loadu_ps((p as *const f32).add(i))
    }
}

/// Element `i` of `p` as f32 (see [`load8`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load1<const F16: bool>(p: *const u8, i: usize) -> f32 {
    if F16 {
        f16_scalar(*(p as *const u16).add(i))
    } else {
        *(p as *const f32).add(i)
    }
}

/// `out[v] = x . rows[v]`, four rows at a time.
pub fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
    let c = x.len();
    assert!(rows.len() == out.len() * c, "dot_rows: inconsistent shapes");
    // SAFETY: features detected before this kernel was handed out; shapes checked above.
    unsafe { dot_rows_avx2(out, x, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2(out: &mut [f32], x: &[f32], rows: &[f32]) {
    let c = x.len();
    let xp = x.as_ptr();
    let mut v = 0;
    while v + 4 <= out.len() {
        let p = rows.as_ptr().add(v * c);
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        // As in `dot_q8_0`: 4 short streams; fetch ahead what each step consumes.
        let ahead = (p as *const u8).wrapping_add(4 * c * 4 + PREFETCH_AHEAD);
        let mut i = 0;
        while i + 8 <= c {
            prefetch_bytes(ahead.wrapping_add(i * 16), 128);
            let xv = _mm256_loadu_ps(xp.add(i));
            a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p.add(i)), a0);
            a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p.add(c + i)), a1);
            a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p.add(2 * c + i)), a2);
            a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p.add(3 * c + i)), a3);
            i += 8;
        }
        let mut s = [hsum(a0), hsum(a1), hsum(a2), hsum(a3)];
        for (ii, &xv) in x.iter().enumerate().skip(i) {
            for (r, s_r) in s.iter_mut().enumerate() {
                *s_r += xv * *p.add(r * c + ii);
            }
        }
        out[v..v + 4].copy_from_slice(&s);
        v += 4;
    }
    for (vv, o) in out.iter_mut().enumerate().skip(v) {
        *o = dot_avx2(x, &rows[vv * c..(vv + 1) * c]);
    }
}

// ---------------------------------------------------------------------------------------------
// Vectors

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    // SAFETY: features detected before this kernel was handed out; lengths checked above.
    unsafe { dot_avx2(a, b) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= a.len() {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        s1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            s1,
        );
        i += 16;
    }
    if i + 8 <= a.len() {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        i += 8;
    }
    let mut s = hsum(_mm256_add_ps(s0, s1));
    for j in i..a.len() {
        s += a[j] * b[j];
    }
    s
}

pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: lengths differ");
    // SAFETY: features detected before this kernel was handed out; lengths checked above.
    unsafe { axpy_avx2(y, alpha, x) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], alpha: f32, x: &[f32]) {
    let a = _mm256_set1_ps(alpha);
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i + 8 <= y.len() {
        let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
        _mm256_storeu_ps(py.add(i), v);
        i += 8;
    }
    for j in i..y.len() {
        y[j] += alpha * x[j];
    }
}

pub fn add(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add: lengths differ");
    // SAFETY: features detected before this kernel was handed out; lengths checked above.
    unsafe { axpy_avx2(x, 1.0, y) }
}

pub fn layernorm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let c = x.len();
    assert!(
        out.len() == c && w.len() == c && b.len() == c,
        "layernorm: lengths differ"
    );
    // SAFETY: features detected before this kernel was handed out; lengths checked above.
    unsafe { layernorm_avx2(out, x, w, b, eps) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn layernorm_avx2(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let c = x.len();
    let px = x.as_ptr();
    let mut s = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= c {
        s = _mm256_add_ps(s, _mm256_loadu_ps(px.add(i)));
        i += 8;
    }
    let mut sum = hsum(s);
    for v in &x[i..] {
        sum += v;
    }
    let mean = sum / c as f32;
    let m = _mm256_set1_ps(mean);
    let mut s = _mm256_setzero_ps();
    i = 0;
    while i + 8 <= c {
        let d = _mm256_sub_ps(_mm256_loadu_ps(px.add(i)), m);
        s = _mm256_fmadd_ps(d, d, s);
        i += 8;
    }
    let mut var = hsum(s);
    for v in &x[i..] {
        var += (v - mean) * (v - mean);
    }
    let rstd = 1.0 / (var / c as f32 + eps).sqrt();
    let r = _mm256_set1_ps(rstd);
    let po = out.as_mut_ptr();
    i = 0;
    while i + 8 <= c {
        let d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), m), r);
        let y = _mm256_fmadd_ps(
            d,
            _mm256_loadu_ps(w.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
        );
        _mm256_storeu_ps(po.add(i), y);
        i += 8;
    }
    for j in i..c {
        out[j] = (x[j] - mean) * rstd * w[j] + b[j];
    }
}

pub fn gelu(x: &mut [f32]) {
    // SAFETY: features detected before this kernel was handed out; the body stays in bounds.
    unsafe { gelu_avx2(x) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    let s = _mm256_set1_ps((2.0f32 / std::f32::consts::PI).sqrt());
    let c = _mm256_set1_ps(0.044715);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= x.len() {
        let u = _mm256_loadu_ps(p.add(i));
        let u3 = _mm256_mul_ps(_mm256_mul_ps(u, u), u);
        let inner = _mm256_mul_ps(s, _mm256_fmadd_ps(c, u3, u));
        let y = _mm256_mul_ps(_mm256_mul_ps(half, u), _mm256_add_ps(one, tanh8(inner)));
        _mm256_storeu_ps(p.add(i), y);
        i += 8;
    }
    scalar::gelu(&mut x[i..]);
}

pub fn softmax(x: &mut [f32]) {
    // SAFETY: features detected before this kernel was handed out; the body stays in bounds.
    unsafe { softmax_avx2(x) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(x: &mut [f32]) {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let m = _mm256_set1_ps(max);
    let p = x.as_mut_ptr();
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= x.len() {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m));
        _mm256_storeu_ps(p.add(i), e);
        acc = _mm256_add_ps(acc, e);
        i += 8;
    }
    let mut sum = hsum(acc);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Peak-throughput probe: `iters` rounds of 12 independent FMA chains (enough to keep both FMA
/// pipes busy through their latency), entirely in registers. Returns a value that depends on
/// every chain so the work cannot be optimised away.
pub fn fma_loop(iters: u64) -> f32 {
    // SAFETY: features detected before this kernel was handed out; no memory is accessed.
    unsafe { fma_loop_avx2(iters) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: u64) -> f32 {
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    hsum(s)
}

/// Bandwidth probe: sums `x` with four independent accumulators (plain loads, no second stream),
/// so the only limit is how fast memory delivers the bytes.
pub fn read_sum(x: &[f32]) -> f32 {
    // SAFETY: features detected before this kernel was handed out; loads stay below x.len().
    unsafe { read_sum_avx2(x) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn read_sum_avx2(x: &[f32]) -> f32 {
    let p = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= x.len() {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(i + 8 * j)));
        }
        i += 32;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + x[i..].iter().sum::<f32>()
}

// ---------------------------------------------------------------------------------------------
// Reduced-precision weights (definitions in `gpt2_weights::dtype`; scalar reference in
// `scalar.rs`).

/// `out = values` as f32, 8 at a time.
pub fn dequantize(out: &mut [f32], values: Values<'_>) {
    assert_eq!(out.len(), values.len(), "dequantize: lengths differ");
    // SAFETY: AVX2, FMA and F16C detected before this kernel was handed out; lengths checked.
    unsafe {
        match values {
            Values::F32(v) => out.copy_from_slice(v),
            Values::F16(v) => dequantize_f16(out, v),
            Values::Bf16(v) => dequantize_bf16(out, v),
            Values::Q8_0(b) => dequantize_q8_0(out, b),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_f16(out: &mut [f32], v: &[u16]) {
    let mut i = 0;
    while i + 8 <= v.len() {
        _mm256_storeu_ps(out.as_mut_ptr().add(i), load_f16(v.as_ptr().add(i)));
        i += 8;
    }
    for j in i..v.len() {
        out[j] = f16_scalar(v[j]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_bf16(out: &mut [f32], v: &[u16]) {
    let mut i = 0;
    while i + 8 <= v.len() {
        _mm256_storeu_ps(out.as_mut_ptr().add(i), load_bf16(v.as_ptr().add(i)));
        i += 8;
    }
    for j in i..v.len() {
        out[j] = gpt2_weights::dtype::bf16_to_f32(v[j]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_q8_0(out: &mut [f32], blocks: &[u8]) {
    for (o, block) in out
        .chunks_exact_mut(Q8_0_BLOCK)
        .zip(blocks.chunks_exact(Q8_0_BLOCK_BYTES))
    {
        let d = q8_0_scale(block.as_ptr());
        for part in 0..4 {
            let q = load_i8x8(block.as_ptr().add(2 + 8 * part));
            _mm256_storeu_ps(o.as_mut_ptr().add(8 * part), _mm256_mul_ps(d, q));
        }
    }
}

/// 8 f16 values at `p`, widened to f32 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// 8 bf16 values at `p`, widened to f32: each shifted into the top half of a 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16(p: *const u16) -> __m256 {
    let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
}

/// 8 `i8` at `p`, sign-extended and converted to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_i8x8(p: *const u8) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
}

/// One f16 value as f32 (F16C; the element left over after the 8-wide loop).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_scalar(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The f16 scale at the start of the q8_0 block at `p`, as f32 in all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_scale(p: *const u8) -> __m256 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm256_cvtph_ps(_mm_set1_epi16(bits as i16))
}

/// `out[r] = x . rows.row(r)` for every row of `rows`, in any dtype: f32 4 rows at a time,
/// q8_0 2 rows at a time, f16 and bf16 one row at a time (why: [`dot_rows_16`],
/// [`dot_rows_q8_0`]).
pub fn dot_rows_any(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
    let c = x.len();
    assert!(
        rows.cols() == c && rows.rows() == out.len(),
        "dot_rows_any: inconsistent shapes"
    );
    // SAFETY: AVX2, FMA and F16C detected before this kernel was handed out; shapes checked
    // above (each row is c values; q8_0 rows are c / 32 whole blocks, as Matrix guarantees).
    unsafe {
        match rows.values() {
            Values::F32(v) => dot_rows_avx2(out, x, v),
            Values::F16(v) => dot_rows_16::<false>(out, x, v),
            Values::Bf16(v) => dot_rows_16::<true>(out, x, v),
            Values::Q8_0(b) => dot_rows_q8_0(out, x, b),
        }
    }
}

/// f16 rows (bf16 rows with `BF16`), one row at a time, front to back.
///
/// One row at a time, unlike the f32 and q8_0 kernels, because the rows of a matrix are
/// contiguous: walking them in order is one sequential stream, which the hardware prefetcher
/// follows by itself, while reading 4 rows side by side is 4 short streams that needed software
/// prefetching and still streamed slower. Measured in paired decode steps (simd-kv, GPT-2 small,
/// the two kernels alternated in one process, 2-core AMD EPYC): one row at a time decoded
/// 1.21-1.33x faster in f16 and bf16, and prefetching on top of it was slower again (the A/B of
/// the two builds: `bench-results/2026-12-03-7833a65-ab-dot-rows-streams.txt`).
/// The 4 rows side by side would save loads of `x`, but converting 16-bit weights costs little
/// next to the memory traffic, so the stream's shape is what counts.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_16<const BF16: bool>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    if c <= SHORT_ROW {
        return dot_rows_16_short::<BF16>(out, x, rows);
    }
    for (v, o) in out.iter_mut().enumerate() {
        *o = dot_16::<BF16>(x, rows.as_ptr().add(v * c));
    }
}

/// Rows of at most this many values (attention's keys in an f16 cache: one head's 64) are read
/// 4 at a time: 4 adjacent short rows are one short stretch of memory, so the stream stays
/// sequential, and one 4-way horizontal sum replaces 4 single ones.
const SHORT_ROW: usize = 128;

/// [`dot_rows_16`] for rows of at most [`SHORT_ROW`] values: 4 rows at a time, one accumulator
/// each, 8 values per step.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_16_short<const BF16: bool>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let (xp, whole) = (x.as_ptr(), c / 8 * 8);
    let mut r = 0;
    while r + 4 <= out.len() {
        let p = rows.as_ptr().add(r * c);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < whole {
            let xv = _mm256_loadu_ps(xp.add(i));
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(xv, load_16::<BF16>(p.add(k * c + i)), *a);
            }
            i += 8;
        }
        let mut s = [0.0f32; 4];
        _mm_storeu_ps(s.as_mut_ptr(), hsum4(acc));
        for (k, s_k) in s.iter_mut().enumerate() {
            for (ii, &xi) in x.iter().enumerate().skip(whole) {
                *s_k += xi * scalar_16::<BF16>(*p.add(k * c + ii));
            }
        }
        out[r..r + 4].copy_from_slice(&s);
        r += 4;
    }
    for (rr, o) in out.iter_mut().enumerate().skip(r) {
        *o = dot_16::<BF16>(x, rows.as_ptr().add(rr * c));
    }
}

/// The four horizontal sums of `a`, in one vector: three `hadd`s and one add instead of four
/// [`hsum`]s.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum4(a: [__m256; 4]) -> __m128 {
    // Per 128-bit half: [a0 pairs, a1 pairs], then [a0, a1, a2, a3] sums of 4 values.
    let s = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s))
}

/// 8 f16 (bf16 with `BF16`) values at `p`, widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_16<const BF16: bool>(p: *const u16) -> __m256 {
    if BF16 { load_bf16(p) } else { load_f16(p) }
}

/// One f16 (bf16 with `BF16`) value as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scalar_16<const BF16: bool>(bits: u16) -> f32 {
    if BF16 {
        gpt2_weights::dtype::bf16_to_f32(bits)
    } else {
        f16_scalar(bits)
    }
}

/// `x . row` for the f16 (bf16) row of length `x.len()` at `p`: 32 values per step into 4
/// accumulators (FMA latency hidden), then the tail.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_16<const BF16: bool>(x: &[f32], p: *const u16) -> f32 {
    let c = x.len();
    let xp = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= c {
        for (k, a) in acc.iter_mut().enumerate() {
            let w = load_16::<BF16>(p.add(i + 8 * k));
            *a = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i + 8 * k)), w, *a);
        }
        i += 32;
    }
    while i + 8 <= c {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(xp.add(i)),
            load_16::<BF16>(p.add(i)),
            acc[0],
        );
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(sum);
    for (ii, &xi) in x.iter().enumerate().skip(i) {
        s += xi * scalar_16::<BF16>(*p.add(ii));
    }
    s
}

/// Software prefetch distance of the dot products, in bytes beyond the rows being read (see
/// [`dot_q8_0`]).
const PREFETCH_AHEAD: usize = 2048;

/// Prefetches the cache lines of `len` bytes at `p` (a hint: `p` need not be valid memory).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn prefetch_bytes(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8);
        off += 64;
    }
}

/// q8_0 rows, by the q8_0 rule (`gpt2_weights::dtype`): `x` quantized once
/// ([`quantize_input`]), then 2 rows at a time, then the odd one.
///
/// Two rows side by side, with software prefetch: each loaded block of `x` serves both (the
/// integer products make q8_0 the dtype with the most work per byte), while 4 rows made 4 short
/// streams that read slower. Measured in paired decode steps (as for [`dot_rows_16`]): 2 rows
/// decoded 1.09-1.14x faster than 4; one row at a time was 0.8-1.0x (more loads of `x` per
/// weight); 2 or 4 rows without the prefetch, 0.4-0.5x (the hardware prefetcher does not
/// follow several short streams).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_q8_0(out: &mut [f32], x: &[f32], rows: &[u8]) {
    let c = x.len();
    let row_bytes = c / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
    super::with_input_buffers(c, |xq, xd| {
        quantize_input_avx2(x, xq, xd);
        let mut v = 0;
        while v + 2 <= out.len() {
            let sums = dot_q8_0::<2>(xq, xd, rows.as_ptr().add(v * row_bytes));
            out[v..v + 2].copy_from_slice(&sums);
            v += 2;
        }
        for (vv, o) in out.iter_mut().enumerate().skip(v) {
            *o = dot_q8_0::<1>(xq, xd, rows.as_ptr().add(vv * row_bytes))[0];
        }
    })
}

/// `x . row r` for the `R` q8_0 rows starting at `p`, `x` given as 16-bit blocks (`xq`, scales
/// `xd`): per block, the weights' 32 bytes widened to 16 bits (`vpmovsxbw`, 16 at a time), the
/// 32 products summed exactly in integers by `vpmaddwd` (each pair at most 2 * 2^7 * 2^14, a
/// lane at most 2^23), then scaled by `d_w * d_x` into the row's accumulator. Half the
/// instructions per weight of converting every weight to f32, which is what kept that version
/// from the memory's speed.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0<const R: usize>(xq: &[i16], xd: &[f32], p: *const u8) -> [f32; R] {
    let c = xq.len();
    let row_bytes = c / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
    let mut acc = [_mm256_setzero_ps(); R];
    // The R rows are R short streams (816 bytes each for a 768-wide input), which the hardware
    // prefetcher does not follow: fetch the rows PREFETCH_AHEAD bytes on, as much per block as
    // the block consumes (R * 34 bytes), so the memory requests run ahead of the arithmetic.
    // (wrapping_add: the prefetched address may lie past the matrix, which a prefetch allows.)
    let ahead = p.wrapping_add(R * row_bytes + PREFETCH_AHEAD);
    for (b, &dx) in xd.iter().enumerate() {
        prefetch_bytes(
            ahead.wrapping_add(b * R * Q8_0_BLOCK_BYTES),
            R * Q8_0_BLOCK_BYTES,
        );
        let y = xq.as_ptr().add(b * Q8_0_BLOCK) as *const __m256i;
        let (y0, y1) = (_mm256_loadu_si256(y), _mm256_loadu_si256(y.add(1)));
        let dx = _mm256_set1_ps(dx);
        for (r, a) in acc.iter_mut().enumerate() {
            let block = p.add(r * row_bytes + b * Q8_0_BLOCK_BYTES);
            let w = block.add(2) as *const __m128i;
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(1)));
            let sums = _mm256_add_epi32(_mm256_madd_epi16(w0, y0), _mm256_madd_epi16(w1, y1));
            let sums = _mm256_cvtepi32_ps(sums);
            *a = _mm256_fmadd_ps(_mm256_mul_ps(q8_0_scale(block), dx), sums, *a);
        }
    }
    let mut sums = [0.0f32; R];
    for (r, s) in sums.iter_mut().enumerate() {
        *s = hsum(acc[r]);
    }
    sums
}

/// The q8_0 input rule (`gpt2_weights::dtype::quantize_input_q8_0`) in registers, with the same
/// result bit for bit: max |x| as the maximum of the bits without the sign (`vpmaxud`), the
/// power-of-two scale from the definition's own `input_scale`, `x / d` (an exact multiply)
/// rounded by `vcvtps2dq` (to nearest, ties to even: the default rounding, which Rust never
/// changes), packed to 16 bits (no value saturates: |q| <= 2^14).
pub fn quantize_input(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
    assert!(
        x.len() % Q8_0_BLOCK == 0 && qs.len() == x.len() && scales.len() == x.len() / Q8_0_BLOCK,
        "quantize_input: inconsistent shapes"
    );
    // SAFETY: features detected before this kernel was handed out; shapes checked above.
    unsafe { quantize_input_avx2(x, qs, scales) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_input_avx2(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
    let no_sign = _mm256_set1_epi32(0x7fff_ffff);
    for (b, d) in scales.iter_mut().enumerate() {
        let p = x.as_ptr().add(b * Q8_0_BLOCK);
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let bits = v.map(|v| _mm256_and_si256(_mm256_castps_si256(v), no_sign));
        let m = _mm256_max_epu32(
            _mm256_max_epu32(bits[0], bits[1]),
            _mm256_max_epu32(bits[2], bits[3]),
        );
        let m = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
        let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
        let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
        let amax = f32::from_bits(_mm_cvtsi128_si32(m) as u32);
        let (scale, inverse) = gpt2_weights::dtype::input_scale(amax);
        *d = scale;
        let inverse = _mm256_set1_ps(inverse);
        let i = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inverse)));
        // `vpackssdw` packs within 128-bit halves; the permute puts the halves back in order.
        let out = qs.as_mut_ptr().add(b * Q8_0_BLOCK) as *mut __m256i;
        for (k, pair) in [(i[0], i[1]), (i[2], i[3])].into_iter().enumerate() {
            let packed = _mm256_packs_epi32(pair.0, pair.1);
            _mm256_storeu_si256(
                out.add(k),
                _mm256_permute4x64_epi64::<0b11_01_10_00>(packed),
            );
        }
    }
}
