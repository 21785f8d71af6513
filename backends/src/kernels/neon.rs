//! NEON kernels (aarch64), 4 floats per register and 32 registers.
//!
//! Most kernels are the generic ones of [`super::generic`] (`vector_kernels!`), stamped out over
//! this module's primitives (the `v_*` functions below): layer norm, GELU, softmax, dot, axpy,
//! the matrix-vector loop over `[in, out]` weights, attention's weighted sum, dequantization
//! and the packed GEMM, whose tile here is 6 rows x 4 vectors of 4 (24 accumulators). NEON's
//! own: [`pack_group`] (a 4 x 4 transpose in registers), the decode products ([`dot_rows`],
//! [`dot_rows_any`]: 4 rows at a time in every dtype, since the stream shape that suits a
//! prefetcher was measured on x86 only), the q8_0 integer product (`smull`/`smlal`) and
//! [`quantize_input`] (`fcvtns` rounding). f16 is widened with integer operations (shift the
//! exponent and mantissa into place, rescale by 2^112, which handles subnormals, and set
//! infinities and NaN apart): the `vcvt_f32_f16` intrinsic needs Rust's unstable f16 type. No
//! software prefetch (the aarch64 prefetch intrinsic is unstable).
//!
//! NEON is part of the aarch64 baseline, so [`Neon::detect`] always succeeds there; the token
//! still marks what the kernels rely on. Tested under qemu's aarch64 emulation against the
//! scalar kernels (`.ci/aarch64.sh`); never timed, since emulation says nothing about speed.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::aarch64::*;

use super::generic::{row_groups, vector_kernels};
use super::pack::{self, PANELS_PER_PACK};
use super::{Isa, Kernels, MatRef, scalar};
use gpt2_weights::dtype::{Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use gpt2_weights::{Matrix, Values};

/// Proof that this CPU has NEON (every aarch64 CPU): only [`Neon::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Neon(());

impl Neon {
    pub(super) fn detect() -> Option<Self> {
        Some(Neon(()))
    }

    /// This instruction set's kernel table.
    pub(super) fn kernels(self) -> Kernels {
        Kernels {
            isa: Isa::Neon,
            panel_width: NR,
            matmul_cols,
            matmul_rows,
            dot_rows,
            dot_rows_any,
            dequantize,
            weighted_sum,
            quantize_input,
            dot,
            axpy,
            add,
            layernorm,
            gelu,
            softmax,
            fma_probe: (fma_loop, FMA_LOOP_FLOPS),
            read_sum,
        }
    }
}

type V = float32x4_t;
const LANES: usize = 4;
/// Rows of the GEMM micro-tile (see `generic.rs`).
const MR: usize = 6;
const NV: usize = 4;
/// Depth of one slice of the GEMM: a (KC, NR) weight panel is what stays in L1.
const KC: usize = 256;

vector_kernels!("neon", finish_cols = lanes_then_scalar);

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_zero() -> V {
    vdupq_n_f32(0.0)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_splat(x: f32) -> V {
    vdupq_n_f32(x)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_load(p: *const f32) -> V {
    vld1q_f32(p)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_store(p: *mut f32, v: V) {
    vst1q_f32(p, v)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_add(a: V, b: V) -> V {
    vaddq_f32(a, b)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_sub(a: V, b: V) -> V {
    vsubq_f32(a, b)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_mul(a: V, b: V) -> V {
    vmulq_f32(a, b)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_div(a: V, b: V) -> V {
    vdivq_f32(a, b)
}

/// `a * b + c`, one rounding (`vfmaq_f32` takes the addend first).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_fma(a: V, b: V, c: V) -> V {
    vfmaq_f32(c, a, b)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_max(a: V, b: V) -> V {
    vmaxq_f32(a, b)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_min(a: V, b: V) -> V {
    vminq_f32(a, b)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_floor(a: V) -> V {
    vrndmq_f32(a)
}

/// 2^n for integral `n` in [-127, 128], built in the exponent bits.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_pow2n(n: V) -> V {
    vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
        vcvtq_s32_f32(n),
        vdupq_n_s32(127),
    )))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_hsum(v: V) -> f32 {
    vaddvq_f32(v)
}

/// 4 f16 values at `p`, widened to f32 (exact).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_load_f16(p: *const u16) -> V {
    f16x4_to_f32(vld1_u16(p))
}

/// 4 bf16 values at `p`, widened to f32: each shifted into the top half of a 32-bit lane.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_load_bf16(p: *const u16) -> V {
    vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(vld1_u16(p))))
}

/// 4 `i8` at `p` (exactly 4 bytes read), sign-extended and converted to f32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_load_i8(p: *const u8) -> V {
    let word = std::ptr::read_unaligned(p as *const u32);
    let bytes = vreinterpret_s8_u32(vdup_n_u32(word));
    vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(bytes))))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16_one(bits: u16) -> f32 {
    gpt2_weights::dtype::f16_to_f32(bits)
}

/// The scale of the q8_0 block at `p`, as f32 in all 4 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn v_q8_0_scale(p: *const u8) -> V {
    f16x4_to_f32(vdup_n_u16(u16::from_le_bytes([*p, *p.add(1)])))
}

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

// ---------------------------------------------------------------------------------------------
// What is NEON's own

/// See [`pack::ToPanel`]: the portable transpose.
fn rows_to_panel(rows: &[f32], stride: usize, kc: usize, panel: &mut [f32]) {
    pack::rows_to_panel::<NR>(rows, stride, kc, panel)
}

/// One full group of 6 rows: 4 values of k at a time, rows 0-3 transposed in registers (a 4 x 4
/// transpose) and rows 4-5 interleaved, stored as 4 runs of 6 floats.
#[target_feature(enable = "neon")]
unsafe fn pack_group(out: &mut [f32], src: &[f32], k: usize) {
    const { assert!(MR == 6, "this transpose writes groups of 6 rows") };
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

/// `out[v] = x . rows[v]`, four rows at a time.
fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
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
        *o = dot(x, &rows[vv * c..(vv + 1) * c]);
    }
}

/// `out[r] = x . rows.row(r)` for every row of `rows`, in any dtype, 4 rows at a time.
fn dot_rows_any(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
    super::check_dot_rows_any(out, x, rows);
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
            let d = vmulq_n_f32(v_q8_0_scale(block), dx);
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
fn quantize_input(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
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
