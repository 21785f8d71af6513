//! Packing for the matrix-matrix kernels (every instruction set alike): inputs in groups of MR
//! rows, weights in (KC, NR) panels, MR x NR being the instruction set's register tile (6 x 16
//! for AVX2 and NEON, 8 x 32 for AVX-512), in per-thread buffers reused across calls. The microkernels then read
//! two sequential streams; see `generic.rs` for why (L1 sets, the TLB).

/// Panels packed together: the packing reads `16 * PANELS_PER_PACK` consecutive floats of each
/// weight row. Packing one panel at a time reads 64 bytes per row, one row per 4 KiB page or
/// more apart (GPT-2's rows are 3-12 KiB): a TLB miss for every 64 bytes once the matrix spans
/// more pages than the TLB holds, which cost more than a quarter of the product's time.
pub(super) const PANELS_PER_PACK: usize = 8;

thread_local! {
    /// Per-thread packing buffers (input row groups, weight panels, rows of a reduced weight
    /// converted to f32), reused across calls.
    static PACKED: std::cell::RefCell<[Vec<f32>; 3]> =
        const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Runs `f` with this thread's three packing buffers: input row groups, weight panels, and
/// the scratch rows of [`pack_panels_rows`].
pub(super) fn with_buffers<R>(
    f: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>) -> R,
) -> R {
    PACKED.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let [a, w, rows] = &mut *bufs;
        f(a, w, rows)
    })
}

/// `buf` at least `len` long; what it held is left (every caller overwrites the part it reads),
/// so a reused buffer is not cleared on every call.
pub(super) fn at_least(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Packs one full group of MR rows (see [`pack_rows`]).
pub(super) type PackGroup<'a> = &'a dyn Fn(&mut [f32], &[f32]);

/// Packs `inp (T, K)` by groups of `mr` rows, k-major inside a group: `[group][k][mr]`, the
/// last group zero-padded. `dst` keeps 2 spare floats at the end. A full group goes through
/// `full_group(out, src)` (`out` is the group's `mr * K` floats plus the 2 spare ones after it,
/// `src` its `mr` rows); a partial one through the plain loop.
pub(super) fn pack_rows(
    dst: &mut Vec<f32>,
    inp: &[f32],
    (t, k, mr): (usize, usize, usize),
    full_group: PackGroup<'_>,
) {
    let groups = t.div_ceil(mr);
    let len = groups * k * mr;
    if dst.len() < len + 2 {
        dst.resize(len + 2, 0.0);
    }
    for g in 0..groups {
        let rows = (t - g * mr).min(mr);
        let src = &inp[g * mr * k..(g * mr + rows) * k];
        let out = &mut dst[g * k * mr..(g + 1) * k * mr + 2];
        if rows == mr {
            full_group(out, src);
        } else {
            plain_group(out, src, k, mr);
        }
    }
}

/// The portable group packing: `out[kk * mr + lane] = src[lane * k + kk]`, lanes past the
/// rows of `src` zero.
pub(super) fn plain_group(out: &mut [f32], src: &[f32], k: usize, mr: usize) {
    let rows = src.len() / k;
    for kk in 0..k {
        for lane in 0..mr {
            out[kk * mr + lane] = if lane < rows { src[lane * k + kk] } else { 0.0 };
        }
    }
}

/// Writes NR rows of `kc` values `stride` apart (`rows[lane * stride + kk]`, arguments `(rows,
/// stride, kc, panel)`) into one (kc, NR) panel (`panel[kk * NR + lane]`): a transpose. The
/// instruction sets pass their own (AVX2 does 8 x 8 blocks in registers); [`rows_to_panel`] is
/// the portable one.
pub(super) type ToPanel = fn(&[f32], usize, usize, &mut [f32]);

/// The portable [`ToPanel`] (NEON's; on x86-64 the tests check AVX2's against it).
#[cfg(any(target_arch = "aarch64", test))]
pub(super) fn rows_to_panel<const NR: usize>(
    rows: &[f32],
    stride: usize,
    kc: usize,
    panel: &mut [f32],
) {
    for lane in 0..NR {
        for (kk, &v) in rows[lane * stride..lane * stride + kc].iter().enumerate() {
            panel[kk * NR + lane] = v;
        }
    }
}

/// The packing of the weight panels for an `(N, K)` weight in any dtype: output rows `c0..c0 +
/// NR * panels`, depth `k0..k0 + kc`, into (kc, NR) panels one after the other (as `pack_cols`
/// in `generic.rs` packs an f32 (K, N) weight). Each panel's NR row slices are converted
/// to f32 in `rows` (`dequantize`, the instruction set's conversion), then transposed into
/// the panel (`to_panel`): the weight is dequantized while packing, never expanded in memory.
/// An f32 weight is transposed straight from its rows.
/// `k0` and `kc` are whole q8_0 blocks when the weight is q8_0 (KC is a multiple of 32, and so
/// is K).
pub(super) fn pack_panels_rows<const NR: usize>(
    (dst, rows): (&mut Vec<f32>, &mut Vec<f32>),
    w: gpt2_weights::Matrix<'_>,
    depth: std::ops::Range<usize>,
    c0: usize,
    panels: usize,
    (dequantize, to_panel): (fn(&mut [f32], gpt2_weights::Values<'_>), ToPanel),
) {
    let (k0, kc) = (depth.start, depth.len());
    let dst = at_least(dst, panels * kc * NR);
    if let gpt2_weights::Values::F32(all) = w.values() {
        let k = w.cols();
        for p in 0..panels {
            let first = (c0 + p * NR) * k + k0;
            let src = &all[first..first + (NR - 1) * k + kc];
            to_panel(src, k, kc, &mut dst[p * kc * NR..(p + 1) * kc * NR]);
        }
        return;
    }
    let rows = at_least(rows, NR * kc);
    for p in 0..panels {
        for (lane, row) in rows.chunks_exact_mut(kc).enumerate() {
            dequantize(row, w.row(c0 + p * NR + lane).slice(k0..k0 + kc));
        }
        to_panel(rows, kc, kc, &mut dst[p * kc * NR..(p + 1) * kc * NR]);
    }
}

#[cfg(test)]
mod tests {
    /// The portable transpose, and the ones this CPU's kernels use, on depths with and without
    /// a remainder of 8, from packed rows and from rows further apart.
    #[test]
    fn rows_to_panel_transposes() {
        for (kc, stride) in [
            (1, 1),
            (7, 7),
            (8, 8),
            (19, 19),
            (256, 256),
            (8, 24),
            (19, 40),
        ] {
            for nr in [16, 32] {
                let rows: Vec<f32> = (0..(nr - 1) * stride + kc).map(|i| i as f32).collect();
                let mut want = vec![0.0; nr * kc];
                for lane in 0..nr {
                    for kk in 0..kc {
                        want[kk * nr + lane] = rows[lane * stride + kk];
                    }
                }
                let mut got = vec![0.0; nr * kc];
                if nr == 16 {
                    super::rows_to_panel::<16>(&rows, stride, kc, &mut got);
                } else {
                    super::rows_to_panel::<32>(&rows, stride, kc, &mut got);
                }
                assert_eq!(got, want, "portable, kc {kc}, nr {nr}");
                #[cfg(target_arch = "x86_64")]
                if super::super::avx2::Avx2::detect().is_some() {
                    let mut got = vec![0.0; nr * kc];
                    // SAFETY: AVX2 detected just above; `rows` holds (nr - 1) * stride + kc
                    // values, `got` nr * kc.
                    unsafe {
                        if nr == 16 {
                            super::super::avx2::rows_to_panel_n::<16>(&rows, stride, kc, &mut got);
                        } else {
                            super::super::avx2::rows_to_panel_n::<32>(&rows, stride, kc, &mut got);
                        }
                    }
                    assert_eq!(got, want, "avx2, kc {kc}, nr {nr}");
                }
            }
        }
    }
}
