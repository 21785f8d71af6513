//! The vector kernels written once, for every instruction set: [`vector_kernels!`] stamps them
//! out inside an instruction set's module, compiled with that module's target features, over
//! the module's vector primitives. Each module (`avx2.rs`, `avx512.rs`, `neon.rs`) defines,
//! before invoking the macro:
//!
//! - `type V` (the f32 vector register), `const LANES: usize` (its f32 lanes), `const MR:
//!   usize` (rows of the GEMM tile) and `const NV: usize` (vectors per row of the GEMM tile);
//!   see the last paragraph for each instruction set's;
//! - `v_zero`, `v_splat`, `v_load`, `v_store`, `v_add`, `v_sub`, `v_mul`, `v_div`, `v_fma(a, b, c)`
//!   (`a * b + c`, fused), `v_max`, `v_min`, `v_floor`, `v_pow2n` (2^n for an integral `n`),
//!   `v_hsum` (the sum of the lanes), and for [`decode_kernels!`] `v_hsum4` (four at once);
//! - `v_load_f16`, `v_load_bf16`, `v_load_i8` (LANES values widened to f32), `f16_one` (one
//!   f16 as f32), `v_q8_0_scale` (a q8_0 block's scale in every lane), and for
//!   [`decode_kernels!`] `prefetch_bytes`;
//! - what really differs between instruction sets, which the macros call but do not define:
//!   `pack_group` (MR input rows transposed for the GEMM tile), `rows_to_panel` (weight rows
//!   transposed into an (kc, NR) panel), `dot_rows_q8_0` (the integer q8_0 product) and
//!   `quantize_input`.
//!
//! [`decode_kernels!`] holds the decode products (`dot_rows`, `dot_rows_any`) apart, so that an
//! instruction set can take another's (AVX-512 uses AVX2's, measured faster on Zen 4) or keep its
//! own (NEON's read 4 rows at a time; the stream shape that suits a prefetcher was measured on
//! x86 only).
//!
//! Every primitive is an `#[inline]` function with the module's `#[target_feature]`s, and every
//! kernel the macro makes carries the same features, so the primitives inline into the kernels
//! (a function without the features could not inline them). Summation orders follow the lane
//! count: the 8-lane instantiation computes exactly what the hand-written AVX2 kernels did.
//!
//! The GEMM micro-tile is MR rows by `NR = NV * LANES` columns, MR x NV accumulators plus NV
//! weight vectors and one broadcast input: 6 x 2 = 12 (+ 3) of AVX2's 16 registers, 8 x 2 = 16
//! (+ 3) of AVX-512's 32, 6 x 4 = 24 (+ 5) of NEON's 32 (4 lanes each). The packing
//! ([`super::pack`]) reads MR and NR; each instruction set also names its `KC`, the depth of a
//! slice (a multiple of 32, so that a slice holds whole q8_0 blocks).

/// See the module docs. `$features` is the `#[target_feature(enable = ...)]` string of the
/// instruction set whose module invokes it.
macro_rules! vector_kernels {
    // `$finish_cols`: the columns after the GEMM's packed panels, with `lanes_then_scalar`'s
    // signature: `lanes_then_scalar` itself (stamped out below), or for AVX-512 one 16-lane
    // tile then AVX2's, so that it sums every column as AVX2 does.
    ($features:literal, finish_cols = $finish_cols:path) => {
        /// Columns of the GEMM micro-tile and of a packed weight panel: NV vectors.
        const NR: usize = NV * LANES;

        /// e^x per lane: range reduction to x = n ln2 + r, |r| <= ln2 / 2, a degree-6
        /// polynomial for e^r (Cephes `expf` coefficients), and 2^n built in the exponent bits.
        /// Relative error ~1e-7.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn v_exp(x: V) -> V {
            let x = v_min(v_max(x, v_splat(-87.3)), v_splat(88.3));
            let n = v_floor(v_fma(x, v_splat(std::f32::consts::LOG2_E), v_splat(0.5)));
            // r = x - n ln2, with ln2 split in two parts for precision.
            let r = v_fma(n, v_splat(-0.693_359_4), x);
            let r = v_fma(n, v_splat(2.121_944_4e-4), r);
            let mut p = v_splat(1.987_569_1e-4);
            p = v_fma(p, r, v_splat(1.398_199_9e-3));
            p = v_fma(p, r, v_splat(8.333_452e-3));
            p = v_fma(p, r, v_splat(4.166_579_6e-2));
            p = v_fma(p, r, v_splat(1.666_666_5e-1));
            p = v_fma(p, r, v_splat(0.5));
            let r2 = v_mul(r, r);
            let e_r = v_add(v_fma(p, r2, r), v_splat(1.0));
            v_mul(e_r, v_pow2n(n))
        }

        /// tanh(u) = 1 - 2 / (e^(2u) + 1), saturating cleanly at +-1.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn v_tanh(u: V) -> V {
            let e = v_exp(v_add(u, u));
            let one = v_splat(1.0);
            v_sub(one, v_div(v_splat(2.0), v_add(e, one)))
        }

        // -------------------------------------------------------------------------------------
        // Vectors

        fn dot(a: &[f32], b: &[f32]) -> f32 {
            assert_eq!(a.len(), b.len(), "dot: lengths differ");
            // SAFETY: the module's features were detected before its kernels were handed out
            // (its token); lengths checked above.
            unsafe { dot_v(a, b) }
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_v(a: &[f32], b: &[f32]) -> f32 {
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut s0, mut s1) = (v_zero(), v_zero());
            let mut i = 0;
            while i + 2 * LANES <= a.len() {
                s0 = v_fma(v_load(pa.add(i)), v_load(pb.add(i)), s0);
                s1 = v_fma(v_load(pa.add(i + LANES)), v_load(pb.add(i + LANES)), s1);
                i += 2 * LANES;
            }
            if i + LANES <= a.len() {
                s0 = v_fma(v_load(pa.add(i)), v_load(pb.add(i)), s0);
                i += LANES;
            }
            let mut s = v_hsum(v_add(s0, s1));
            for j in i..a.len() {
                s += a[j] * b[j];
            }
            s
        }

        fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
            assert_eq!(y.len(), x.len(), "axpy: lengths differ");
            // SAFETY: features detected (token); lengths checked above.
            unsafe { axpy_v(y, alpha, x) }
        }

        #[target_feature(enable = $features)]
        unsafe fn axpy_v(y: &mut [f32], alpha: f32, x: &[f32]) {
            let a = v_splat(alpha);
            let (py, px) = (y.as_mut_ptr(), x.as_ptr());
            let mut i = 0;
            while i + LANES <= y.len() {
                v_store(py.add(i), v_fma(a, v_load(px.add(i)), v_load(py.add(i))));
                i += LANES;
            }
            for j in i..y.len() {
                y[j] += alpha * x[j];
            }
        }

        fn add(x: &mut [f32], y: &[f32]) {
            assert_eq!(x.len(), y.len(), "add: lengths differ");
            // SAFETY: features detected (token); lengths checked above.
            unsafe { axpy_v(x, 1.0, y) }
        }

        fn layernorm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
            let c = x.len();
            assert!(
                out.len() == c && w.len() == c && b.len() == c,
                "layernorm: lengths differ"
            );
            // SAFETY: features detected (token); lengths checked above.
            unsafe { layernorm_v(out, x, w, b, eps) }
        }

        #[target_feature(enable = $features)]
        unsafe fn layernorm_v(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
            let c = x.len();
            let px = x.as_ptr();
            let mut s = v_zero();
            let mut i = 0;
            while i + LANES <= c {
                s = v_add(s, v_load(px.add(i)));
                i += LANES;
            }
            let mut sum = v_hsum(s);
            for v in &x[i..] {
                sum += v;
            }
            let mean = sum / c as f32;
            let m = v_splat(mean);
            let mut s = v_zero();
            i = 0;
            while i + LANES <= c {
                let d = v_sub(v_load(px.add(i)), m);
                s = v_fma(d, d, s);
                i += LANES;
            }
            let mut var = v_hsum(s);
            for v in &x[i..] {
                var += (v - mean) * (v - mean);
            }
            let rstd = 1.0 / (var / c as f32 + eps).sqrt();
            let r = v_splat(rstd);
            let po = out.as_mut_ptr();
            i = 0;
            while i + LANES <= c {
                let d = v_mul(v_sub(v_load(px.add(i)), m), r);
                let y = v_fma(d, v_load(w.as_ptr().add(i)), v_load(b.as_ptr().add(i)));
                v_store(po.add(i), y);
                i += LANES;
            }
            for j in i..c {
                out[j] = (x[j] - mean) * rstd * w[j] + b[j];
            }
        }

        fn gelu(x: &mut [f32]) {
            // SAFETY: features detected (token); the body stays in bounds.
            unsafe { gelu_v(x) }
        }

        #[target_feature(enable = $features)]
        unsafe fn gelu_v(x: &mut [f32]) {
            let s = v_splat((2.0f32 / std::f32::consts::PI).sqrt());
            let c = v_splat(0.044715);
            let half = v_splat(0.5);
            let one = v_splat(1.0);
            let p = x.as_mut_ptr();
            let mut i = 0;
            while i + LANES <= x.len() {
                let u = v_load(p.add(i));
                let u3 = v_mul(v_mul(u, u), u);
                let inner = v_mul(s, v_fma(c, u3, u));
                let y = v_mul(v_mul(half, u), v_add(one, v_tanh(inner)));
                v_store(p.add(i), y);
                i += LANES;
            }
            scalar::gelu(&mut x[i..]);
        }

        fn softmax(x: &mut [f32]) {
            // SAFETY: features detected (token); the body stays in bounds.
            unsafe { softmax_v(x) }
        }

        #[target_feature(enable = $features)]
        unsafe fn softmax_v(x: &mut [f32]) {
            let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let m = v_splat(max);
            let p = x.as_mut_ptr();
            let mut acc = v_zero();
            let mut i = 0;
            while i + LANES <= x.len() {
                let e = v_exp(v_sub(v_load(p.add(i)), m));
                v_store(p.add(i), e);
                acc = v_add(acc, e);
                i += LANES;
            }
            let mut sum = v_hsum(acc);
            for v in &mut x[i..] {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in x.iter_mut() {
                *v *= inv;
            }
        }

        /// Peak-throughput probe: `iters` rounds of 12 independent FMA chains (enough to keep
        /// both FMA pipes busy through their latency), entirely in registers. Returns a value
        /// that depends on every chain so the work cannot be optimised away.
        fn fma_loop(iters: u64) -> f32 {
            // SAFETY: features detected (token); no memory is accessed.
            unsafe { fma_loop_v(iters) }
        }

        /// Flops of one iteration of [`fma_loop`].
        const FMA_LOOP_FLOPS: u64 = 12 * LANES as u64 * 2;

        #[target_feature(enable = $features)]
        unsafe fn fma_loop_v(iters: u64) -> f32 {
            let a = v_splat(0.999_999);
            let b = v_splat(1e-7);
            let mut acc = [v_splat(1.0); 12];
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = v_fma(*x, a, b);
                }
            }
            let mut s = v_zero();
            for x in acc {
                s = v_add(s, x);
            }
            v_hsum(s)
        }

        /// Bandwidth probe: sums `x` with four independent accumulators (plain loads, no second
        /// stream), so the only limit is how fast memory delivers the bytes.
        fn read_sum(x: &[f32]) -> f32 {
            // SAFETY: features detected (token); loads stay below x.len().
            unsafe { read_sum_v(x) }
        }

        #[target_feature(enable = $features)]
        unsafe fn read_sum_v(x: &[f32]) -> f32 {
            let p = x.as_ptr();
            let mut acc = [v_zero(); 4];
            let mut i = 0;
            while i + 4 * LANES <= x.len() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = v_add(*a, v_load(p.add(i + LANES * j)));
                }
                i += 4 * LANES;
            }
            let s = v_add(v_add(acc[0], acc[1]), v_add(acc[2], acc[3]));
            v_hsum(s) + x[i..].iter().sum::<f32>()
        }

        // -------------------------------------------------------------------------------------
        // Matrix products

        /// See [`scalar::matmul_cols`]; same arguments. (T, K) x (K, N) on a range of output
        /// columns, in register tiles of MR rows x NR columns over packed inputs and weight
        /// panels ([`gemm_packed`]), then one LANES-wide tile, then a scalar tail; T = 1 is
        /// [`matvec_cols`].
        fn matmul_cols(out: &mut [f32], inp: &[f32], wm: MatRef<'_>, bias: &[f32], n0: usize) {
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
            pack::with_buffers(|a_packed, w_panel, _| {
                let pack_panels = |dst: &mut Vec<f32>, depth: std::ops::Range<usize>, j, panels| {
                    let (k0, kc) = (depth.start, depth.len());
                    let dst = pack::at_least(dst, panels * kc * NR);
                    assert!((k0 + kc - 1) * n + n0 + j + panels * NR <= w.len());
                    // SAFETY: features detected (token); `dst` holds the panels, and the
                    // weight's rows k0..k0 + kc hold the columns read (asserted just above).
                    unsafe { pack_cols(dst, w.as_ptr().add(k0 * n + n0 + j), (kc, n), panels) }
                };
                gemm_packed(out, inp, k, bias, a_packed, w_panel, &pack_panels);
                // SAFETY: features detected (token); the shapes were checked above.
                unsafe { $finish_cols(out, inp, wm, bias, n0, width / NR * NR) };
            });
        }

        /// Copies `panels` (kc, NR) panels of an f32 (K, N) weight into `dst`, one after the
        /// other: `dst[(p * kc + kk) * NR + c] = w[kk * n + p * NR + c]`, reading each row's
        /// columns front to back. In vector registers (a slice copy of NR floats was a call to
        /// `memcpy` per row and panel, a fifth of an AVX-512 GEMM's time).
        ///
        /// # Safety
        /// The module's features; `w` points at kc rows (n floats apart) of `panels * NR`
        /// readable floats; `dst` holds `panels * kc * NR`.
        #[target_feature(enable = $features)]
        unsafe fn pack_cols(
            dst: &mut [f32],
            w: *const f32,
            (kc, n): (usize, usize),
            panels: usize,
        ) {
            debug_assert!(dst.len() == panels * kc * NR);
            let d = dst.as_mut_ptr();
            for kk in 0..kc {
                let row = w.add(kk * n);
                for p in 0..panels {
                    for v in 0..NV {
                        let x = v_load(row.add(p * NR + v * LANES));
                        v_store(d.add((p * kc + kk) * NR + v * LANES), x);
                    }
                }
            }
        }

        /// Tiles of LANES columns from column `j0` while whole ones fit; returns the first
        /// column left.
        ///
        /// # Safety
        /// The module's features; the shapes of a checked [`matmul_cols`] call.
        unsafe fn lane_tiles(
            out: &mut [f32],
            inp: &[f32],
            wm: MatRef<'_>,
            bias: &[f32],
            n0: usize,
            j0: usize,
        ) -> usize {
            let (t, width) = (inp.len() / wm.rows(), bias.len());
            let mut j = j0;
            while j + LANES <= width {
                row_groups!(t, tile_lanes, out, inp, wm, bias, n0 + j, j);
                j += LANES;
            }
            j
        }

        /// The columns `j0..` of [`matmul_cols`] after the packed panels: tiles of LANES
        /// columns, then plain sums.
        ///
        /// # Safety
        /// The module's features; the shapes of a checked [`matmul_cols`] call.
        pub(super) unsafe fn lanes_then_scalar(
            out: &mut [f32],
            inp: &[f32],
            wm: MatRef<'_>,
            bias: &[f32],
            n0: usize,
            j0: usize,
        ) {
            let (k, n, w) = (wm.rows(), wm.cols(), wm.data());
            let width = bias.len();
            let t = inp.len() / k;
            let j = lane_tiles(out, inp, wm, bias, n0, j0);
            for jj in j..width {
                for r in 0..t {
                    let mut s = bias[jj];
                    for kk in 0..k {
                        s += inp[r * k + kk] * w[kk * n + n0 + jj];
                    }
                    out[r * width + jj] = s;
                }
            }
        }

        /// Packs a (depth, NR * panels) block of weight panels starting at output column `j`.
        type PackPanels<'a> = &'a dyn Fn(&mut Vec<f32>, std::ops::Range<usize>, usize, usize);

        /// The packed part of a matrix-matrix product: `out (T, width) = inp (T, K) @ W + bias`
        /// for the output columns in whole NR-wide panels (`width / NR * NR` of them), the
        /// weight panels made by `pack_panels` (from an (K, N) f32 weight, or dequantized from
        /// an (N, K) one). The caller computes the remaining columns.
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
            // SAFETY: features detected (token); pack_rows hands a full group's MR rows of K
            // and MR * K + 2 floats of output, which is what pack_group touches.
            let pack = |out: &mut [f32], src: &[f32]| unsafe { pack_group(out, src, k) };
            pack::pack_rows(a_packed, inp, (t, k, MR), &pack);
            // BLIS-style blocking. The depth K is cut into slices of at most KC rows; for each
            // slice, PANELS_PER_PACK (KC, NR) weight panels are packed into one contiguous
            // buffer, then every group of MR rows runs against each panel, adding into `out`
            // (the first slice starts from the bias). A slice's panel and a group's inputs sit
            // in L1, the packed panels and the slice of every row group in L2. (Unpacked, a
            // panel's rows are N floats apart: for GPT-2's N a multiple of 4 KiB, so every row
            // would land in the same L1 set.)
            let mut k0 = 0;
            while k0 < k {
                let kc = (k - k0).min(KC);
                let mut j = 0;
                while j + NR <= width {
                    let panels = ((width - j) / NR).min(PANELS_PER_PACK);
                    pack_panels(w_panel, k0..k0 + kc, j, panels);
                    for p in 0..panels {
                        let panel = &w_panel[p * kc * NR..(p + 1) * kc * NR];
                        // SAFETY: features detected (token); `out`, `a_packed` (T rows of K,
                        // packed) and the panel (kc x NR) have the shapes packed_tiles indexes.
                        unsafe { packed_tiles(out, a_packed, panel, bias, k, k0..k0 + kc, j) };
                        j += NR;
                    }
                }
                k0 += kc;
            }
        }

        /// Rows of a matrix product with an (N, K) weight in any dtype:
        /// `out (T, N) = inp (T, K) @ w^T + bias`, see [`scalar::matmul_rows`]. T = 1 is
        /// [`dot_rows_any`] plus the bias; otherwise the weight is dequantized into the packed
        /// panels of [`gemm_packed`] and the last `N % NR` columns are dot products of
        /// dequantized rows.
        fn matmul_rows(out: &mut [f32], inp: &[f32], w: Matrix<'_>, bias: &[f32]) {
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
            pack::with_buffers(|a_packed, w_panel, rows| {
                let rows = std::cell::RefCell::new(rows);
                let pack_panels = |dst: &mut Vec<f32>, depth, j, panels| {
                    pack::pack_panels_rows::<NR>(
                        (dst, &mut rows.borrow_mut()),
                        w,
                        depth,
                        j,
                        panels,
                        (dequantize, rows_to_panel),
                    )
                };
                gemm_packed(out, inp, k, bias, a_packed, w_panel, &pack_panels);
            });
            scalar::rows_tail(dot, dequantize, out, inp, w, bias, width / NR * NR);
        }

        /// Every row group (of `out`'s T rows) against one packed (KC, NR) panel of the depth
        /// slice `depth` of K; output columns `oc..oc + NR`. The first slice starts from the
        /// bias, later ones from `out`.
        #[target_feature(enable = $features)]
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
            let mut b = [v_zero(); NV];
            for (v, b_v) in b.iter_mut().enumerate() {
                *b_v = v_load(bias.as_ptr().add(oc + LANES * v));
            }
            for g in 0..t.div_ceil(MR) {
                let rows = (t - g * MR).min(MR);
                let o = out.as_mut_ptr().add(g * MR * width + oc);
                let a = a_packed.as_ptr().add(g * k * MR + k0 * MR);
                let mut acc = [b; MR];
                if k0 > 0 {
                    for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                        for (v, acc_rv) in acc_r.iter_mut().enumerate() {
                            *acc_rv = v_load(o.add(r * width + LANES * v));
                        }
                    }
                }
                let mut wp = panel.as_ptr();
                let mut w = [v_zero(); NV];
                for kk in 0..kc {
                    for (v, w_v) in w.iter_mut().enumerate() {
                        *w_v = v_load(wp.add(LANES * v));
                    }
                    let ak = a.add(kk * MR);
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let x = v_splat(*ak.add(r));
                        for (acc_rv, &w_v) in acc_r.iter_mut().zip(&w) {
                            *acc_rv = v_fma(x, w_v, *acc_rv);
                        }
                    }
                    wp = wp.add(NR);
                }
                for (r, acc_r) in acc.iter().enumerate().take(rows) {
                    for (v, &acc_rv) in acc_r.iter().enumerate() {
                        v_store(o.add(r * width + LANES * v), acc_rv);
                    }
                }
            }
        }

        /// One register tile of R rows (starting at `r0`) and LANES output columns: `wc` is the
        /// tile's first column in the weight, `oc` in `out` (whose rows are `bias.len()` wide).
        /// Used for the remainder after the packed NR-column panels.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn tile_lanes<const R: usize>(
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
            let mut acc = [v_load(bias.as_ptr().add(oc)); R];
            for kk in 0..k {
                let w0 = v_load(wp.add(kk * n));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    *acc_r = v_fma(v_splat(*a.add(r * k + kk)), w0, *acc_r);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                v_store(o.add(r * width), *acc_r);
            }
        }

        /// One input row: `out (width) = x (K) @ w[:, n0..n0+width] + bias`. Streams the weight
        /// four rows at a time, front to back, accumulating into `out` (which stays in L1).
        fn matvec_cols(out: &mut [f32], x: &[f32], w: MatRef<'_>, bias: &[f32], n0: usize) {
            let (k, n, width) = (w.rows(), w.cols(), bias.len());
            assert!(
                x.len() == k && out.len() == width && n0 + width <= n,
                "matvec_cols: inconsistent shapes"
            );
            out.copy_from_slice(bias);
            // SAFETY: features detected (token); shapes checked above: K rows of N values,
            // of which columns n0..n0 + width are read.
            unsafe { add_rows::<false>(out, x, w.data().as_ptr().add(n0) as *const u8, n) }
        }

        /// `out = sum_r weights[r] * rows.row(r)` for f32 or f16 rows: attention's weighted
        /// sum of the values in an f32 or an f16 cache.
        fn weighted_sum(out: &mut [f32], weights: &[f32], rows: Matrix<'_>) {
            assert!(
                rows.rows() == weights.len() && rows.cols() == out.len(),
                "weighted_sum: inconsistent shapes"
            );
            out.fill(0.0);
            let width = out.len();
            // SAFETY: features detected (token); shapes checked above (rows.rows() rows of
            // out.len() values each).
            unsafe {
                match rows.values() {
                    Values::F32(v) => {
                        add_rows::<false>(out, weights, v.as_ptr() as *const u8, width)
                    }
                    Values::F16(v) => {
                        add_rows::<true>(out, weights, v.as_ptr() as *const u8, width)
                    }
                    Values::Bf16(_) | Values::Q8_0(_) => {
                        scalar::weighted_sum_with(axpy, dequantize, out, weights, rows)
                    }
                }
            }
        }

        /// `out += sum_k x[k] * row_k`, row `k` being `out.len()` values (f32, or f16 with
        /// `F16`) that start `k * stride` values after `p`. Four rows per pass over `out`,
        /// which stays in L1, the rows read front to back.
        ///
        /// # Safety
        /// The module's features; `x.len()` rows of `out.len()` values readable at that stride.
        #[target_feature(enable = $features)]
        unsafe fn add_rows<const F16: bool>(
            out: &mut [f32],
            x: &[f32],
            p: *const u8,
            stride: usize,
        ) {
            let width = out.len();
            let o = out.as_mut_ptr();
            let mut k = 0;
            while k + 4 <= x.len() {
                let xs = [
                    v_splat(x[k]),
                    v_splat(x[k + 1]),
                    v_splat(x[k + 2]),
                    v_splat(x[k + 3]),
                ];
                let r = [
                    k * stride,
                    (k + 1) * stride,
                    (k + 2) * stride,
                    (k + 3) * stride,
                ];
                let mut j = 0;
                while j + LANES <= width {
                    let mut y = v_load(o.add(j));
                    y = v_fma(xs[0], load_lanes::<F16>(p, r[0] + j), y);
                    y = v_fma(xs[1], load_lanes::<F16>(p, r[1] + j), y);
                    y = v_fma(xs[2], load_lanes::<F16>(p, r[2] + j), y);
                    y = v_fma(xs[3], load_lanes::<F16>(p, r[3] + j), y);
                    v_store(o.add(j), y);
                    j += LANES;
                }
                for jj in j..width {
                    *o.add(jj) += x[k] * load_one::<F16>(p, r[0] + jj)
                        + x[k + 1] * load_one::<F16>(p, r[1] + jj)
                        + x[k + 2] * load_one::<F16>(p, r[2] + jj)
                        + x[k + 3] * load_one::<F16>(p, r[3] + jj);
                }
                k += 4;
            }
            for (kr, &xk) in x.iter().enumerate().skip(k) {
                let (xv, r) = (v_splat(xk), kr * stride);
                let mut j = 0;
                while j + LANES <= width {
                    let y = v_fma(xv, load_lanes::<F16>(p, r + j), v_load(o.add(j)));
                    v_store(o.add(j), y);
                    j += LANES;
                }
                for jj in j..width {
                    *o.add(jj) += xk * load_one::<F16>(p, r + jj);
                }
            }
        }

        /// LANES values from element `i` of `p`: f32, or f16 widened (exactly) with `F16`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_lanes<const F16: bool>(p: *const u8, i: usize) -> V {
            if F16 {
                v_load_f16((p as *const u16).add(i))
            } else {
                v_load((p as *const f32).add(i))
            }
        }

        /// Element `i` of `p` as f32 (see [`load_lanes`]).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_one<const F16: bool>(p: *const u8, i: usize) -> f32 {
            if F16 {
                f16_one(*(p as *const u16).add(i))
            } else {
                *(p as *const f32).add(i)
            }
        }

        // -------------------------------------------------------------------------------------
        // Reduced-precision weights (definitions in `gpt2_weights::dtype`; scalar reference in
        // `scalar.rs`).

        /// `out = values` as f32, LANES at a time.
        fn dequantize(out: &mut [f32], values: Values<'_>) {
            assert_eq!(out.len(), values.len(), "dequantize: lengths differ");
            // SAFETY: features detected (token); lengths checked above.
            unsafe {
                match values {
                    Values::F32(v) => out.copy_from_slice(v),
                    Values::F16(v) => dequantize_16::<false>(out, v),
                    Values::Bf16(v) => dequantize_16::<true>(out, v),
                    Values::Q8_0(b) => dequantize_q8_0(out, b),
                }
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn dequantize_16<const BF16: bool>(out: &mut [f32], v: &[u16]) {
            let mut i = 0;
            while i + LANES <= v.len() {
                v_store(out.as_mut_ptr().add(i), load_16::<BF16>(v.as_ptr().add(i)));
                i += LANES;
            }
            for j in i..v.len() {
                out[j] = scalar_16::<BF16>(v[j]);
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn dequantize_q8_0(out: &mut [f32], blocks: &[u8]) {
            for (o, block) in out
                .chunks_exact_mut(Q8_0_BLOCK)
                .zip(blocks.chunks_exact(Q8_0_BLOCK_BYTES))
            {
                let d = v_q8_0_scale(block.as_ptr());
                for part in 0..Q8_0_BLOCK / LANES {
                    let q = v_load_i8(block.as_ptr().add(2 + LANES * part));
                    v_store(o.as_mut_ptr().add(LANES * part), v_mul(d, q));
                }
            }
        }

        /// LANES f16 (bf16 with `BF16`) values at `p`, widened to f32.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_16<const BF16: bool>(p: *const u16) -> V {
            if BF16 { v_load_bf16(p) } else { v_load_f16(p) }
        }

        /// One f16 (bf16 with `BF16`) value as f32.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn scalar_16<const BF16: bool>(bits: u16) -> f32 {
            if BF16 {
                gpt2_weights::dtype::bf16_to_f32(bits)
            } else {
                f16_one(bits)
            }
        }
    };
}

/// The decode products (matrix-vector with `[out, in]` rows, and the output layer), stamped out
/// like [`vector_kernels!`]: an instruction set whose wider registers do not pay here (decode
/// reads from memory) takes another module's instead (AVX-512 takes AVX2's).
#[cfg(target_arch = "x86_64")]
macro_rules! decode_kernels {
    ($features:literal) => {
        /// `out[v] = x . rows[v]`, four rows at a time.
        fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
            let c = x.len();
            assert!(rows.len() == out.len() * c, "dot_rows: inconsistent shapes");
            // SAFETY: features detected (this module's kernels are reached through its token);
            // shapes checked above.
            unsafe { dot_rows_v(out, x, rows) }
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_rows_v(out: &mut [f32], x: &[f32], rows: &[f32]) {
            let c = x.len();
            let xp = x.as_ptr();
            let mut v = 0;
            while v + 4 <= out.len() {
                let p = rows.as_ptr().add(v * c);
                let mut acc = [v_zero(); 4];
                // As in `dot_rows_q8_0`: 4 short streams; fetch ahead what each step consumes.
                let ahead = (p as *const u8).wrapping_add(4 * c * 4 + PREFETCH_AHEAD);
                let mut i = 0;
                while i + LANES <= c {
                    prefetch_bytes(ahead.wrapping_add(i * 16), 16 * LANES);
                    let xv = v_load(xp.add(i));
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = v_fma(xv, v_load(p.add(r * c + i)), *a);
                    }
                    i += LANES;
                }
                let mut s = [
                    v_hsum(acc[0]),
                    v_hsum(acc[1]),
                    v_hsum(acc[2]),
                    v_hsum(acc[3]),
                ];
                for (ii, &xv) in x.iter().enumerate().skip(i) {
                    for (r, s_r) in s.iter_mut().enumerate() {
                        *s_r += xv * *p.add(r * c + ii);
                    }
                }
                out[v..v + 4].copy_from_slice(&s);
                v += 4;
            }
            for (vv, o) in out.iter_mut().enumerate().skip(v) {
                *o = dot_v(x, &rows[vv * c..(vv + 1) * c]);
            }
        }

        /// Software prefetch distance of the dot products, in bytes beyond the rows being read.
        const PREFETCH_AHEAD: usize = 2048;

        /// `out[r] = x . rows.row(r)` for every row of `rows`, in any dtype: f32 4 rows at a
        /// time, q8_0 by the module's integer kernel, f16 and bf16 one row at a time (why:
        /// [`dot_rows_16`]).
        fn dot_rows_any(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
            // SAFETY: features detected (this module's kernels are reached through its token).
            unsafe { dot_rows_any_checked(out, x, rows) }
        }

        /// [`dot_rows_any`] for another instruction set's table (AVX-512 takes AVX2's).
        ///
        /// # Safety
        /// The module's features are present; the shapes are checked here.
        pub(super) unsafe fn dot_rows_any_checked(out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
            super::check_dot_rows_any(out, x, rows);
            // SAFETY: features detected (token); shapes checked above (each row is c values;
            // q8_0 rows are c / 32 whole blocks, as Matrix guarantees).
            unsafe {
                match rows.values() {
                    Values::F32(v) => dot_rows_v(out, x, v),
                    Values::F16(v) => dot_rows_16::<false>(out, x, v),
                    Values::Bf16(v) => dot_rows_16::<true>(out, x, v),
                    Values::Q8_0(b) => dot_rows_q8_0(out, x, b),
                }
            }
        }

        /// f16 rows (bf16 rows with `BF16`), one row at a time, front to back.
        ///
        /// One row at a time, unlike the f32 and q8_0 kernels, because the rows of a matrix are
        /// contiguous: walking them in order is one sequential stream, which the hardware
        /// prefetcher follows by itself, while reading 4 rows side by side is 4 short streams
        /// that needed software prefetching and still streamed slower. Measured in paired
        /// decode steps (simd-kv, GPT-2 small, AVX2, 2-core AMD EPYC): one row at a time
        /// decoded 1.21-1.33x faster in f16 and bf16, and prefetching on top of it was slower
        /// again (`bench-results/2026-12-03-7833a65-ab-dot-rows-streams.txt`).
        #[target_feature(enable = $features)]
        unsafe fn dot_rows_16<const BF16: bool>(out: &mut [f32], x: &[f32], rows: &[u16]) {
            let c = x.len();
            if c <= SHORT_ROW {
                return dot_rows_16_short::<BF16>(out, x, rows);
            }
            for (v, o) in out.iter_mut().enumerate() {
                *o = dot_16::<BF16>(x, rows.as_ptr().add(v * c));
            }
        }

        /// Rows of at most this many values (attention's keys in an f16 cache: one head's 64)
        /// are read 4 at a time: 4 adjacent short rows are one short stretch of memory, so the
        /// stream stays sequential, and one 4-way horizontal sum replaces 4 single ones.
        pub(super) const SHORT_ROW: usize = 128;

        /// [`dot_rows_16`] for rows of at most [`SHORT_ROW`] values: 4 rows at a time, one
        /// accumulator each, LANES values per step.
        #[target_feature(enable = $features)]
        unsafe fn dot_rows_16_short<const BF16: bool>(out: &mut [f32], x: &[f32], rows: &[u16]) {
            let c = x.len();
            let (xp, whole) = (x.as_ptr(), c / LANES * LANES);
            let mut r = 0;
            while r + 4 <= out.len() {
                let p = rows.as_ptr().add(r * c);
                let mut acc = [v_zero(); 4];
                let mut i = 0;
                while i < whole {
                    let xv = v_load(xp.add(i));
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a = v_fma(xv, load_16::<BF16>(p.add(k * c + i)), *a);
                    }
                    i += LANES;
                }
                let mut s = v_hsum4(acc);
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

        /// `x . row` for the f16 (bf16) row of length `x.len()` at `p`: 4 * LANES values per
        /// step into 4 accumulators (FMA latency hidden), then the tail.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_16<const BF16: bool>(x: &[f32], p: *const u16) -> f32 {
            let c = x.len();
            let xp = x.as_ptr();
            let mut acc = [v_zero(); 4];
            let mut i = 0;
            while i + 4 * LANES <= c {
                for (k, a) in acc.iter_mut().enumerate() {
                    let w = load_16::<BF16>(p.add(i + LANES * k));
                    *a = v_fma(v_load(xp.add(i + LANES * k)), w, *a);
                }
                i += 4 * LANES;
            }
            dot_16_rest::<BF16>(acc, x, p, i)
        }

        /// The end of [`dot_16`] from value `i` on (where its 4 * LANES steps stopped), given
        /// its 4 accumulators: LANES-wide steps into the first, the accumulators summed, the
        /// tail. A kernel that ran the 4 * LANES steps otherwise (AVX-512's, two lanes' worth
        /// per register) finishes here to compute the same bits.
        #[inline]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_16_rest<const BF16: bool>(
            mut acc: [V; 4],
            x: &[f32],
            p: *const u16,
            mut i: usize,
        ) -> f32 {
            let (c, xp) = (x.len(), x.as_ptr());
            while i + LANES <= c {
                acc[0] = v_fma(v_load(xp.add(i)), load_16::<BF16>(p.add(i)), acc[0]);
                i += LANES;
            }
            let sum = v_add(v_add(acc[0], acc[1]), v_add(acc[2], acc[3]));
            let mut s = v_hsum(sum);
            for (ii, &xi) in x.iter().enumerate().skip(i) {
                s += xi * scalar_16::<BF16>(*p.add(ii));
            }
            s
        }
    };
}

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

#[cfg(target_arch = "x86_64")]
pub(super) use decode_kernels;
pub(super) use {row_groups, vector_kernels};
