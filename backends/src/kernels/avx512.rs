//! AVX-512 kernels (x86-64: F, BW and VL, with AVX2, FMA and F16C), 16 floats per register
//! and 32 registers.
//!
//! The kernels are the generic ones of [`super::generic`], stamped out over this module's
//! primitives: the same algorithms as AVX2 with twice the lanes and twice the registers, so the
//! GEMM tile is 8 rows x 32 columns (16 of the 32 registers accumulate; slices of KC = 128, so
//! that a (KC, 32) weight panel, 16 KiB, stays in L1 beside the inputs) and every vector loop
//! does 16 values a step.
//! The table overrides AVX2's only where 16 lanes were measured to pay or to cost nothing and
//! compute the same bits: the prefill GEMM, the `[in, out]` matrix-vector loop, GELU, axpy and
//! attention's weighted sum are this module's; the decode dot products (`dot_rows`,
//! `dot_rows_any`, q8_0's integer product among them), the reductions (dot, layer norm,
//! softmax), the packing transposes and the input quantizer are AVX2's, which every AVX-512 CPU
//! has (see [`Avx512::kernels`] for why), except on Intel CPUs the f16 and bf16 decode rows,
//! which are this module's [`dot_rows_16_l2`] (AVX2's bits, read faster there).
//!
//! Every kernel is reached through [`Avx512`], a token that only [`Avx512::detect`] makes, after
//! `is_x86_feature_detected!` confirmed every feature named above: that is the precondition
//! every `unsafe` call below relies on.

#![allow(unsafe_op_in_unsafe_fn)]
// The generic layer norm and softmax are stamped out here but not used: see `Avx512::kernels`.
#![allow(dead_code)]

use std::arch::x86_64::*;

use super::avx2::{self, Avx2};
use super::generic::{row_groups, vector_kernels};
use super::pack::{self, PANELS_PER_PACK};
use super::{Isa, Kernels, MatRef, scalar};
use gpt2_weights::dtype::{Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use gpt2_weights::{Matrix, Values};

/// Proof that this CPU has AVX-512 F, BW and VL, and AVX2, FMA and F16C (the AVX2 token it
/// holds): only [`Avx512::detect`] makes one. It also carries the CPU's maker, which picks
/// the f16 and bf16 decode product (see [`Avx512::kernels`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512 {
    avx2: Avx2,
    intel: bool,
}

impl Avx512 {
    pub(super) fn detect() -> Option<Self> {
        let avx2 = Avx2::detect()?;
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl"))
        .then_some(Avx512 {
            avx2,
            intel: is_intel(),
        })
    }

    /// This instruction set's kernel table: AVX2's, with what 16 lanes were measured to pay
    /// for or to cost nothing replaced. Kept from AVX2: the decode dot products (`dot_rows`,
    /// `dot_rows_any`: 16-lane ones measured slower on Zen 4, whose 512-bit units are two
    /// 256-bit halves: q8_0 15 against 30 GMAC/s in L2 (widening 32 bytes to 16-bit lanes in
    /// one zmm crosses lanes), bf16 streaming 9 against 12, f16 and f32 equal:
    /// `bench-results/2026-12-06-e2559e3-dot-rows-avx512-vs-avx2.txt`) and the q8_0 input
    /// quantizer. Decode reads the weights from memory; the width that counts is the memory's.
    /// But on Intel CPUs the f16 and bf16 rows of `dot_rows_any` are this module's
    /// [`dot_rows_16_l2`] (same bits as AVX2's; why Intel only: there).
    ///
    /// Also kept: the reductions (`dot`, `layernorm`, `softmax`), so that AVX-512 computes the
    /// same bits as AVX2 on GPT-2's shapes. Every kernel taken from here sums each output in the
    /// same order at either width (an FMA per element along K, lane for lane), while a 16-lane
    /// reduction sums in another order; on synthetic GPT-2 small in q8_0 that moved a 0.001
    /// near-tie at generated token 57 and `simd` parted from `naive` (the 64-token check of
    /// `.ci/run`), which the AVX2 kernels pass. Token-exactness between backends is this
    /// project's contract; the reductions are a sliver of the time.
    pub(super) fn kernels(self) -> Kernels {
        let avx2 = self.avx2.kernels();
        Kernels {
            isa: Isa::Avx512,
            panel_width: NR,
            matmul_cols,
            matmul_rows,
            dequantize,
            weighted_sum,
            axpy,
            add,
            gelu,
            fma_probe: (fma_loop, FMA_LOOP_FLOPS),
            read_sum,
            dot_rows_any: if self.intel {
                dot_rows_any_l2
            } else {
                avx2.dot_rows_any
            },
            ..avx2
        }
    }
}

/// Whether the CPU's maker is Intel (CPUID leaf 0's vendor string).
fn is_intel() -> bool {
    let leaf = __cpuid(0);
    [leaf.ebx, leaf.edx, leaf.ecx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .eq(*b"GenuineIntel")
}

type V = __m512;
const LANES: usize = 16;
/// Rows and vectors per row of the GEMM micro-tile: 8 x 32 (see `generic.rs`). Measured on a
/// Xeon with two 512-bit FMA units against 6 x 32 and 8 x 48 (`examples/gemm_rate.rs`): 8 x 48
/// ran its tile no faster and leaves a 16-column remainder on GPT-2 medium's widths; 32 divides
/// every GPT-2 width, so the panels cover every column.
const MR: usize = 8;
const NV: usize = 2;
/// Depth of one slice of the GEMM: a (KC, NR) weight panel is what stays in L1.
const KC: usize = 128;

vector_kernels!(
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    finish_cols = finish_cols
);

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_zero() -> V {
    _mm512_setzero_ps()
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_splat(x: f32) -> V {
    _mm512_set1_ps(x)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_load(p: *const f32) -> V {
    _mm512_loadu_ps(p)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_store(p: *mut f32, v: V) {
    _mm512_storeu_ps(p, v)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_add(a: V, b: V) -> V {
    _mm512_add_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_sub(a: V, b: V) -> V {
    _mm512_sub_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_mul(a: V, b: V) -> V {
    _mm512_mul_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_div(a: V, b: V) -> V {
    _mm512_div_ps(a, b)
}

/// `a * b + c`, one rounding.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_fma(a: V, b: V, c: V) -> V {
    _mm512_fmadd_ps(a, b, c)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_max(a: V, b: V) -> V {
    _mm512_max_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_min(a: V, b: V) -> V {
    _mm512_min_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_floor(a: V) -> V {
    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a)
}

/// 2^n for integral `n` in [-127, 128], built in the exponent bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_pow2n(n: V) -> V {
    _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    )))
}

/// Horizontal sum of 16 lanes: the two 256-bit halves added, then AVX2's 8-lane sum.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_hsum(v: V) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let s = _mm256_add_ps(lo, hi);
    let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// 16 f16 values at `p`, widened to f32 (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_load_f16(p: *const u16) -> V {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

/// 16 bf16 values at `p`, widened to f32: each shifted into the top half of a 32-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_load_bf16(p: *const u16) -> V {
    let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
}

/// 16 `i8` at `p`, sign-extended and converted to f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_load_i8(p: *const u8) -> V {
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn f16_one(bits: u16) -> f32 {
    avx2::f16_one(bits)
}

/// The f16 scale at the start of the q8_0 block at `p`, as f32 in all 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn v_q8_0_scale(p: *const u8) -> V {
    _mm512_set1_ps(f16_one(u16::from_le_bytes([*p, *p.add(1)])))
}

/// The columns after the 32-wide panels: one 16-lane tile where 16 columns remain, then AVX2's
/// 8-lane tile and plain sums, so that every column is summed exactly as AVX2 sums it (an
/// attention score row of 8-15 positions takes AVX2's tile, not a plain sum).
///
/// # Safety
/// The module's features; the shapes of a checked `matmul_cols` call.
unsafe fn finish_cols(
    out: &mut [f32],
    inp: &[f32],
    wm: MatRef<'_>,
    bias: &[f32],
    n0: usize,
    j0: usize,
) {
    let j = lane_tiles(out, inp, wm, bias, n0, j0);
    avx2::lanes_then_scalar(out, inp, wm, bias, n0, j)
}

/// AVX2's decode product, for the generic `matmul_rows` of one position.
fn dot_rows_any(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
    // SAFETY: this module's kernels are reached through the Avx512 token, which holds an AVX2
    // one; the shapes are checked by the callee.
    unsafe { avx2::dot_rows_any_checked(out, x, rows) }
}

/// [`dot_rows_any`] with f16 and bf16 rows of more than `avx2::SHORT_ROW` values read by
/// [`dot_rows_16_l2`]; every other case is AVX2's.
fn dot_rows_any_l2(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
    let c = x.len();
    super::check_dot_rows_any(out, x, rows);
    // SAFETY: this module's kernels are reached through the Avx512 token (its features, and
    // AVX2's); shapes checked above (each row is c values).
    unsafe {
        match rows.values() {
            Values::F16(v) if c > avx2::SHORT_ROW => dot_rows_16_l2::<false>(out, x, v),
            Values::Bf16(v) if c > avx2::SHORT_ROW => dot_rows_16_l2::<true>(out, x, v),
            _ => avx2::dot_rows_any_checked(out, x, rows),
        }
    }
}

/// How far ahead of the row being read [`dot_rows_16_l2`] asks for the weights to be brought
/// into L2, in bytes.
const L2_PREFETCH_AHEAD: usize = 4096;

/// f16 rows (bf16 with `BF16`) for decode, one row at a time front to back as AVX2's
/// `dot_rows_16`, with two differences measured on an Intel Xeon (family 6 model 167, one
/// thread, rows of 768 and 3072 values streaming from memory,
/// `bench-results/2026-12-06-7685c6e-f16-decode-stream-xeon.txt`, medians): a software
/// prefetch into L2 (`prefetcht2`; `prefetcht1` measured the same) [`L2_PREFETCH_AHEAD`] bytes
/// ahead, once per 64-byte line, took the f16 product from 8.6 to 13.9 GB/s, about what a
/// plain read of the same memory gets without prefetching (13.5-13.7; a prefetch into L1
/// instead: 10.1-11.8; 4 rows side by side: 7.0-13.2); and 16 lanes a step, fewer instructions
/// per line: AVX2's 8-lane kernel with the same prefetch read 16.2-16.8 GB/s where this one read
/// 17.4-17.9 (a faster moment of the host), so the prefetch is most of the gain. One register
/// holds two of AVX2's 8-lane accumulators, so each lane adds the same products in the same
/// order, and the end is AVX2's (`avx2::dot_16_rest`): the same bits as AVX2's kernel (a test
/// checks). Intel only: on AMD (Zen 3, the AVX2 kernels) a software prefetch (into L1) added
/// to the one-row kernel made decode slower, in a try whose figures were not recorded
/// (docs/performance.md, "f16 and bf16: one row at a time"), and no AVX-512 AMD CPU was at hand
/// to measure this one; nor was an AVX2-only Intel CPU, so AVX2's table is unchanged.
///
/// # Safety
/// This module's features; `rows` holds `out.len()` rows of `x.len()` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_rows_16_l2<const BF16: bool>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let xp = x.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        let p = rows.as_ptr().add(r * c);
        // Past the matrix's end this points at memory not ours: a prefetch never faults.
        let ahead = (p as *const i8).wrapping_add(L2_PREFETCH_AHEAD);
        let mut acc = [v_zero(); 2];
        let mut i = 0;
        while i + 2 * LANES <= c {
            _mm_prefetch::<_MM_HINT_T2>(ahead.wrapping_add(2 * i));
            for (k, a) in acc.iter_mut().enumerate() {
                let w = load_16::<BF16>(p.add(i + LANES * k));
                *a = v_fma(v_load(xp.add(i + LANES * k)), w, *a);
            }
            i += 2 * LANES;
        }
        // Each 16-lane accumulator as AVX2's two 8-lane ones: [acc0 | acc1], [acc2 | acc3].
        let halves = acc.map(|a| {
            let a = _mm512_castps_pd(a);
            [
                _mm256_castpd_ps(_mm512_castpd512_pd256(a)),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(a)),
            ]
        });
        let [[a0, a1], [a2, a3]] = halves;
        *o = avx2::dot_16_rest::<BF16>([a0, a1, a2, a3], x, p, i);
    }
}

// ---------------------------------------------------------------------------------------------
// The packing: AVX2's transposes

/// MR input rows into the (k, MR) layout of the GEMM tile: AVX2's 8 x 8 transposes, since
/// MR is 8.
///
/// # Safety
/// The module's features; `src` is MR rows of `k` values and `out` `MR * k + 2` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pack_group(out: &mut [f32], src: &[f32], k: usize) {
    const { assert!(MR.is_multiple_of(8)) };
    avx2::rows_to_panel_n::<MR>(src, k, k, &mut out[..MR * k])
}

/// See [`pack::ToPanel`]: NR rows into a (kc, NR) panel, by AVX2's 8 x 8 transposes.
fn rows_to_panel(rows: &[f32], stride: usize, kc: usize, panel: &mut [f32]) {
    assert!(
        kc <= stride && rows.len() >= (NR - 1) * stride + kc && panel.len() == NR * kc,
        "rows_to_panel: shapes"
    );
    // SAFETY: AVX2 detected (this module's token implies it); shapes checked above.
    unsafe { avx2::rows_to_panel_n::<NR>(rows, stride, kc, panel) }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TestMatrix, data};
    use super::*;

    /// The f16 and bf16 decode product with the L2 prefetch gives AVX2's bits (so choosing it
    /// by the CPU's maker changes no token), on rows longer than `SHORT_ROW` with and without
    /// remainders of 32, 16 and 8 values, and on short rows (AVX2's, through the same entry).
    /// Runs where the CPU has AVX-512 (`.ci/run` says when it does not).
    #[test]
    fn dot_rows_16_l2_computes_avx2s_bits() {
        let (Some(avx512), Some(avx2)) = (Avx512::detect(), Avx2::detect()) else {
            return;
        };
        let l2: fn(&mut [f32], &[f32], Matrix<'_>) = dot_rows_any_l2;
        let plain = avx2.kernels().dot_rows_any;
        // The table takes it on Intel CPUs and only there.
        let chosen = avx512.kernels().dot_rows_any;
        assert_eq!(std::ptr::fn_addr_eq(chosen, l2), avx512.intel);
        for dtype in [gpt2_weights::Dtype::F16, gpt2_weights::Dtype::Bf16] {
            for cols in [64, 128, 129, 136, 160, 161, 285, 768, 773, 3072] {
                let rows = 9;
                let m = TestMatrix::new(&data(rows * cols, 7), rows, cols, dtype);
                let x = data(cols, 8);
                let (mut got, mut want) = (vec![0.0; rows], vec![0.0; rows]);
                l2(&mut got, &x, m.matrix());
                plain(&mut want, &x, m.matrix());
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{dtype} rows of {cols}");
            }
        }
    }
}
