//! Packing for the matrix-matrix kernels (every instruction set alike): inputs in groups of 6
//! rows, weights in (KC, NR) panels, NR being the instruction set's tile width (16 for AVX2 and
//! NEON, 32 for AVX-512), in per-thread buffers reused across calls. The microkernels then read
//! two sequential streams; see `generic.rs` for why (L1 sets, the TLB).

/// Depth of one slice of a matrix-matrix product.
pub(super) const KC: usize = 256;

/// Panels packed together: the packing reads `16 * PANELS_PER_PACK` consecutive floats of each
/// weight row. Packing one panel at a time reads 64 bytes per row, one row per 4 KiB page or
/// more apart (GPT-2's rows are 3-12 KiB): a TLB miss for every 64 bytes once the matrix spans
/// more pages than the TLB holds, which cost more than a quarter of the product's time.
pub(super) const PANELS_PER_PACK: usize = 8;

thread_local! {
    /// Per-thread packing buffers (input row groups, weight panels), reused across calls.
    static PACKED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with this thread's two packing buffers (input row groups, weight panels).
pub(super) fn with_buffers<R>(f: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>) -> R) -> R {
    PACKED.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (a, w) = &mut *bufs;
        f(a, w)
    })
}

/// Packs one full group of 6 rows (see [`pack_rows`]).
pub(super) type PackGroup6<'a> = &'a dyn Fn(&mut [f32], &[f32]);

/// Packs `inp (T, K)` by groups of 6 rows, k-major inside a group: `[group][k][6]`, the last
/// group zero-padded. `dst` keeps 2 spare floats at the end. A full group of 6 rows goes
/// through `full_group(out, src)` when given (`out` is the group's 6K floats plus the 2 spare
/// ones after it, `src` its 6 rows), else through the plain loop.
pub(super) fn pack_rows(
    dst: &mut Vec<f32>,
    inp: &[f32],
    t: usize,
    k: usize,
    full_group: Option<PackGroup6<'_>>,
) {
    let groups = t.div_ceil(6);
    let len = groups * k * 6;
    if dst.len() < len + 2 {
        dst.resize(len + 2, 0.0);
    }
    for g in 0..groups {
        let rows = (t - g * 6).min(6);
        let src = &inp[g * 6 * k..(g * 6 + rows) * k];
        let out = &mut dst[g * k * 6..(g + 1) * k * 6 + 2];
        match full_group {
            Some(pack6) if rows == 6 => pack6(out, src),
            _ => {
                for kk in 0..k {
                    for lane in 0..6 {
                        out[kk * 6 + lane] = if lane < rows { src[lane * k + kk] } else { 0.0 };
                    }
                }
            }
        }
    }
}

/// Copies weight columns `c0..c0 + NR * panels` of the first K rows of `w` into `panels`
/// contiguous (K, NR) panels, one after the other, reading each row's columns front to back.
pub(super) fn pack_panels<const NR: usize>(
    dst: &mut Vec<f32>,
    w: &[f32],
    k: usize,
    n: usize,
    c0: usize,
    panels: usize,
) {
    dst.clear();
    dst.resize(panels * k * NR, 0.0);
    for kk in 0..k {
        let row = &w[kk * n + c0..kk * n + c0 + panels * NR];
        for (p, src) in row.chunks_exact(NR).enumerate() {
            dst[(p * k + kk) * NR..(p * k + kk + 1) * NR].copy_from_slice(src);
        }
    }
}

/// Writes NR rows of `kc` values (row-major, `rows[lane * kc + kk]`) into one (kc, NR) panel
/// (`panel[kk * NR + lane]`): a transpose. The instruction sets pass their own (AVX2 does 8 x 8
/// blocks in registers); [`rows_to_panel`] is the portable one.
pub(super) type ToPanel = fn(&[f32], usize, &mut [f32]);

/// The portable [`ToPanel`] (NEON's; on x86-64 the tests check AVX2's against it).
#[cfg(any(target_arch = "aarch64", test))]
pub(super) fn rows_to_panel<const NR: usize>(rows: &[f32], kc: usize, panel: &mut [f32]) {
    for lane in 0..NR {
        for (kk, &v) in rows[lane * kc..(lane + 1) * kc].iter().enumerate() {
            panel[kk * NR + lane] = v;
        }
    }
}

/// [`pack_panels`] for an `(N, K)` weight in any dtype: output rows `c0..c0 + NR * panels`,
/// depth `k0..k0 + kc`, into the same (KC, NR) panels. Each panel's NR row slices are converted
/// to f32 on the stack (`dequantize`, the instruction set's conversion), then transposed into
/// the panel (`to_panel`): the weight is dequantized while packing, never expanded in memory.
/// `k0` and `kc` are whole q8_0 blocks when the weight is q8_0 (KC is a multiple of 32, and so
/// is K).
pub(super) fn pack_panels_rows<const NR: usize>(
    dst: &mut Vec<f32>,
    w: gpt2_weights::Matrix<'_>,
    depth: std::ops::Range<usize>,
    c0: usize,
    panels: usize,
    (dequantize, to_panel): (fn(&mut [f32], gpt2_weights::Values<'_>), ToPanel),
) {
    let (k0, kc) = (depth.start, depth.len());
    debug_assert!(kc <= KC && NR <= MAX_NR);
    dst.clear();
    dst.resize(panels * kc * NR, 0.0);
    let mut rows = [0.0f32; MAX_NR * KC];
    let rows = &mut rows[..NR * kc];
    for p in 0..panels {
        for (lane, row) in rows.chunks_exact_mut(kc).enumerate() {
            dequantize(row, w.row(c0 + p * NR + lane).slice(k0..k0 + kc));
        }
        to_panel(rows, kc, &mut dst[p * kc * NR..(p + 1) * kc * NR]);
    }
}

/// The widest panel of any instruction set (AVX-512's).
const MAX_NR: usize = 32;

#[cfg(test)]
mod tests {
    /// The portable transpose, and the ones this CPU's kernels use, on depths with and without
    /// a remainder of 8.
    #[test]
    fn rows_to_panel_transposes() {
        for kc in [1, 7, 8, 19, 256] {
            for nr in [16, 32] {
                let rows: Vec<f32> = (0..nr * kc).map(|i| i as f32).collect();
                let mut want = vec![0.0; nr * kc];
                for lane in 0..nr {
                    for kk in 0..kc {
                        want[kk * nr + lane] = rows[lane * kc + kk];
                    }
                }
                let mut got = vec![0.0; nr * kc];
                if nr == 16 {
                    super::rows_to_panel::<16>(&rows, kc, &mut got);
                } else {
                    super::rows_to_panel::<32>(&rows, kc, &mut got);
                }
                assert_eq!(got, want, "portable, kc {kc}, nr {nr}");
                #[cfg(target_arch = "x86_64")]
                if super::super::avx2::Avx2::detect().is_some() {
                    let mut got = vec![0.0; nr * kc];
                    // SAFETY: AVX2 detected just above; both slices hold nr * kc values.
                    unsafe {
                        if nr == 16 {
                            super::super::avx2::rows_to_panel_n::<16>(&rows, kc, &mut got);
                        } else {
                            super::super::avx2::rows_to_panel_n::<32>(&rows, kc, &mut got);
                        }
                    }
                    assert_eq!(got, want, "avx2, kc {kc}, nr {nr}");
                }
            }
        }
    }
}
