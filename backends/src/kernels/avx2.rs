//! AVX2 + FMA + F16C kernels (x86-64), 8 floats per register.
//!
//! Most kernels are the generic ones of [`super::generic`], stamped out here over this
//! module's primitives (the `v_*` functions below) with `#[target_feature(enable =
//! "avx2,fma,f16c")]`: layer norm, GELU, softmax, dot, axpy, the matrix-vector loops, the
//! packed GEMM with its 6 x 16 tile, dequantization. What is AVX2's own:
//!
//! - [`pack_group`] and [`rows_to_panel_n`]: the GEMM's packing transposes, 8 x 8 blocks in
//!   registers (AVX-512 uses them too);
//! - [`dot_rows_q8_0`]: the q8_0 product by the q8_0 input rule of `gpt2_weights::dtype`: the
//!   input quantized to 16-bit blocks once per call ([`quantize_input`]), each block's 32
//!   products summed in integers by `vpmovsxbw`/`vpmaddwd`, scaled once per block;
//! - [`quantize_input`] itself.
//!
//! Every kernel is reached through [`Avx2`], a token that only [`Avx2::detect`] makes, after
//! `is_x86_feature_detected!` confirmed AVX2, FMA and F16C: that is the precondition every
//! `unsafe` call below relies on.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::generic::{decode_kernels, row_groups, vector_kernels};
use super::pack::{self, PANELS_PER_PACK};
use super::{Isa, Kernels, MatRef, scalar};
use gpt2_weights::dtype::{Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use gpt2_weights::{Matrix, Values};

/// Proof that this CPU has AVX2, FMA and F16C: only [`Avx2::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2(());

impl Avx2 {
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Avx2(()))
    }

    /// This instruction set's kernel table.
    pub(super) fn kernels(self) -> Kernels {
        Kernels {
            isa: Isa::Avx2Fma,
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

type V = __m256;
const LANES: usize = 8;
/// Rows of the GEMM micro-tile (see `generic.rs`).
const MR: usize = 6;
const NV: usize = 2;
/// Depth of one slice of the GEMM: a (KC, NR) weight panel is what stays in L1.
const KC: usize = 256;

vector_kernels!("avx2,fma,f16c", finish_cols = lanes_then_scalar);

decode_kernels!("avx2,fma,f16c");

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_zero() -> V {
    _mm256_setzero_ps()
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_splat(x: f32) -> V {
    _mm256_set1_ps(x)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_load(p: *const f32) -> V {
    _mm256_loadu_ps(p)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_store(p: *mut f32, v: V) {
    _mm256_storeu_ps(p, v)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_add(a: V, b: V) -> V {
    _mm256_add_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_sub(a: V, b: V) -> V {
    _mm256_sub_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_mul(a: V, b: V) -> V {
    _mm256_mul_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_div(a: V, b: V) -> V {
    _mm256_div_ps(a, b)
}

/// `a * b + c`, one rounding.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_fma(a: V, b: V, c: V) -> V {
    _mm256_fmadd_ps(a, b, c)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_max(a: V, b: V) -> V {
    _mm256_max_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_min(a: V, b: V) -> V {
    _mm256_min_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_floor(a: V) -> V {
    _mm256_floor_ps(a)
}

/// 2^n for integral `n` in [-127, 128], built in the exponent bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_pow2n(n: V) -> V {
    _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    ))
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_hsum(v: V) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The four horizontal sums of `a`: three `hadd`s and one add instead of four [`v_hsum`]s.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_hsum4(a: [V; 4]) -> [f32; 4] {
    // Per 128-bit half: [a0 pairs, a1 pairs], then [a0, a1, a2, a3] sums of 4 values.
    let s = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
    let mut out = [0.0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), s);
    out
}

/// 8 f16 values at `p`, widened to f32 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_load_f16(p: *const u16) -> V {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// 8 bf16 values at `p`, widened to f32: each shifted into the top half of a 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_load_bf16(p: *const u16) -> V {
    let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
}

/// 8 `i8` at `p`, sign-extended and converted to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_load_i8(p: *const u8) -> V {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
}

/// One f16 value as f32 (F16C; the element left over after a vector loop).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_one(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The f16 scale at the start of the q8_0 block at `p`, as f32 in all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_q8_0_scale(p: *const u8) -> V {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm256_cvtph_ps(_mm_set1_epi16(bits as i16))
}

// ---------------------------------------------------------------------------------------------
// What is AVX2's own

/// See [`pack::ToPanel`]: NR rows of `kc` values into a (kc, NR) panel, as columns of 8 x 8
/// blocks transposed in registers (the same shuffles as [`pack_group`]).
fn rows_to_panel(rows: &[f32], stride: usize, kc: usize, panel: &mut [f32]) {
    assert!(
        kc <= stride && rows.len() >= (NR - 1) * stride + kc && panel.len() == NR * kc,
        "rows_to_panel: shapes"
    );
    // SAFETY: AVX2 detected (token); see rows_to_panel_n.
    unsafe { rows_to_panel_n::<NR>(rows, stride, kc, panel) }
}

/// `P` rows of `kc` values `stride` apart (`rows[lane * stride + kk]`) into a (kc, P) panel
/// (`panel[kk * P + lane]`), `P` a multiple of 8 (AVX-512's 32-wide panels use it too).
///
/// # Safety
/// AVX2; `rows` holds `(P - 1) * stride + kc` values and `panel` `P * kc`, `kc <= stride`:
/// every load reads row `half * 8 + i` at `kk..kk + 8 <= kc`, every store panel row
/// `kk + j < kc`, lanes `half * 8..half * 8 + 8`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_to_panel_n<const P: usize>(
    rows: &[f32],
    stride: usize,
    kc: usize,
    panel: &mut [f32],
) {
    debug_assert!(
        kc <= stride
            && rows.len() >= (P - 1) * stride + kc
            && panel.len() == P * kc
            && P.is_multiple_of(8)
    );
    let (s, o) = (rows.as_ptr(), panel.as_mut_ptr());
    for half in 0..P / 8 {
        let mut kk = 0;
        while kk + 8 <= kc {
            let r: [__m256; 8] =
                std::array::from_fn(|i| _mm256_loadu_ps(s.add((half * 8 + i) * stride + kk)));
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
                _mm256_storeu_ps(o.add((kk + j) * P + half * 8), *col);
            }
            kk += 8;
        }
        for kr in kk..kc {
            for lane in half * 8..half * 8 + 8 {
                *o.add(kr * P + lane) = *s.add(lane * stride + kr);
            }
        }
    }
}

/// One full group of 6 rows: 8 values of k at a time, the 6 x 8 block transposed in registers
/// (an 8 x 8 transpose with two zero rows) and stored as 8 runs of 6. Each 8-float store
/// spills 2 floats into the next run, which the next store (or the next group, or the spare
/// at the end of the buffer) overwrites, so the stores go front to back.
///
/// # Safety
/// AVX2; `src` is 6 rows of `k` values and `out` `6 * k + 2` values.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_group(out: &mut [f32], src: &[f32], k: usize) {
    const { assert!(MR == 6, "this transpose writes groups of 6 rows") };
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

/// Prefetches the cache lines of `len` bytes at `p` (a hint: `p` need not be valid memory).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prefetch_bytes(p: *const u8, len: usize) {
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
pub(super) unsafe fn dot_rows_q8_0(out: &mut [f32], x: &[f32], rows: &[u8]) {
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
            *a = _mm256_fmadd_ps(_mm256_mul_ps(v_q8_0_scale(block), dx), sums, *a);
        }
    }
    let mut sums = [0.0f32; R];
    for (r, s) in sums.iter_mut().enumerate() {
        *s = v_hsum(acc[r]);
    }
    sums
}

/// The q8_0 input rule (`gpt2_weights::dtype::quantize_input_q8_0`) in registers, with the same
/// result bit for bit: max |x| as the maximum of the bits without the sign (`vpmaxud`), the
/// power-of-two scale from the definition's own `input_scale`, `x / d` (an exact multiply)
/// rounded by `vcvtps2dq` (to nearest, ties to even: the default rounding, which Rust never
/// changes), packed to 16 bits (no value saturates: |q| <= 2^14).
fn quantize_input(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
    assert!(
        x.len().is_multiple_of(Q8_0_BLOCK)
            && qs.len() == x.len()
            && scales.len() == x.len() / Q8_0_BLOCK,
        "quantize_input: inconsistent shapes"
    );
    // SAFETY: features detected before this kernel was handed out; shapes checked above.
    unsafe { quantize_input_avx2(x, qs, scales) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_input_avx2(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
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
