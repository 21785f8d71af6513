//! Hand-written kernels for the `simd` and `simd-kv` backends, chosen at run time, and the
//! drivers that spread them over a persistent thread pool.
//!
//! This module is the instruction-set choice: [`Kernels`] is a table of kernel functions for one
//! instruction set, and [`Kernels::detect`] picks the best the CPU has: AVX-512 (F, BW, VL) or
//! AVX2+FMA+F16C on x86-64 (checked with `is_x86_feature_detected!`), NEON on aarch64
//! (baseline there), otherwise the portable scalar kernels, which are always compiled.
//! `GPT2_BENCH_ISA=scalar|avx2|avx512|neon` chooses another (`GPT2_BENCH_FORCE_SCALAR=1` is
//! `scalar`), so tests and CI exercise every path on the same machine. The kernels are written
//! once (`generic.rs`) and stamped out per instruction set; a module's kernels are private and
//! reached through a token type that only its detection makes. The kernels take the weight
//! operand of a matrix product as a [`Weight`]: an f32 [`MatRef`] in the `[in, out]` layout
//! (`matmul_cols`), or a `gpt2_weights::Matrix` in any dtype in the `[out, in]` layout
//! (`matmul_rows`, `dot_rows_any`), which the kernels dequantize in registers as they load it.
//!
//! The other jobs live in their own modules:
//! - [`compute`]: [`Compute`], the drivers that split a product, a layer norm or the output
//!   layer across a rayon pool built once per engine (no thread is spawned per matmul);
//! - [`attention`]: causal attention over the (n_head, n_ctx, D) key/value cache, for one
//!   position (decode) and for many (prefill);
//! - [`team`]: the thread team that runs a decode step as one list of operations, with spinning
//!   barriers between them, and the sizer that shrinks it on a busy machine;
//! - [`probe`]: the bandwidth and peak-FMA probes behind the roofline.

pub mod scalar;

// Private, and reachable only through a token that detection makes (`avx2::Avx2`, ...).
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
// The kernels written once for every instruction set (macros each module expands).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod generic;

#[cfg(target_arch = "aarch64")]
mod neon;

// The packing of the matrix-matrix kernels, shared by every instruction set.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod pack;

pub mod attention;
pub mod compute;
pub mod probe;
pub mod team;

pub use attention::{HeadCache, KvShape, LayerCache};
pub use compute::Compute;
use gpt2_weights::{Linear, Matrix, Values};

thread_local! {
    /// Per-thread buffers for a q8_0 product's quantized input (values, block scales), reused
    /// across calls: a decode step quantizes an input in every block of every q8_0 product.
    static INPUT_BUFFERS: std::cell::RefCell<(Vec<i16>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with this thread's input buffers sized for `n` values (whole q8_0 blocks): the
/// quantized values and one scale per block.
pub(crate) fn with_input_buffers<R>(n: usize, f: impl FnOnce(&mut [i16], &mut [f32]) -> R) -> R {
    INPUT_BUFFERS.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (qs, scales) = &mut *bufs;
        qs.resize(n, 0);
        scales.resize(n / gpt2_weights::dtype::Q8_0_BLOCK, 0.0);
        f(qs, scales)
    })
}

/// Environment variable that forces the scalar kernels when set to `1`.
pub const FORCE_SCALAR_ENV: &str = "GPT2_BENCH_FORCE_SCALAR";

/// The instruction set a [`Kernels`] table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2Fma,
    Neon,
    Scalar,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        }
    }

    /// What `GPT2_BENCH_ISA` calls it.
    pub fn choice(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        }
    }
}

/// Environment variable that chooses the instruction set: `scalar`, `avx2`, `avx512` or `neon`
/// (default: the best this CPU has).
pub const ISA_ENV: &str = "GPT2_BENCH_ISA";

/// A borrowed row-major (rows, cols) f32 matrix: the weight operand `w (K, N)` of the f32
/// matrix kernels. A [`Matrix`] whose values are known to be f32, so a kernel reads the floats
/// without matching on a dtype; the shape and its checks are `Matrix`'s.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a>(Matrix<'a>);

impl<'a> MatRef<'a> {
    /// The first `rows * cols` values of `data`, row by row. Panics if `data` is shorter: shapes
    /// come from a checked config, so a short buffer is a bug, not bad input.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef(Matrix::new(Values::F32(data), rows, cols))
    }

    /// `m` as f32, if it is f32.
    pub fn of(m: Matrix<'a>) -> Option<Self> {
        matches!(m.values(), Values::F32(_)).then_some(MatRef(m))
    }

    pub fn rows(&self) -> usize {
        self.0.rows()
    }

    pub fn cols(&self) -> usize {
        self.0.cols()
    }

    /// The `rows * cols` values, row by row.
    pub fn data(&self) -> &'a [f32] {
        match self.0.values() {
            Values::F32(v) => v,
            // Every constructor checks the dtype.
            _ => unreachable!("a MatRef holds f32 values"),
        }
    }

    /// Rows `range` of this matrix, a (range.len(), cols) matrix.
    pub fn row_range(&self, range: std::ops::Range<usize>) -> MatRef<'a> {
        MatRef(self.0.row_range(range))
    }
}

/// The weight of a linear layer, as the kernels take it: an f32 (K, N) matrix (`[in, out]`, the
/// f32 layout), or an (N, K) matrix in any dtype (`[out, in]`, q8_0 blocks along K).
#[derive(Clone, Copy, Debug)]
pub enum Weight<'a> {
    InOut(MatRef<'a>),
    OutIn(Matrix<'a>),
}

impl<'a> Weight<'a> {
    pub fn new(linear: Linear<'a>) -> Self {
        match linear {
            Linear::InOut(m) => Weight::InOut(
                MatRef::of(m).expect("an [in, out] weight is f32 (gpt2_weights::Role)"),
            ),
            Linear::OutIn(m) => Weight::OutIn(m),
        }
    }

    /// K, the length of an input row.
    pub fn in_features(&self) -> usize {
        match self {
            Weight::InOut(m) => m.rows(),
            Weight::OutIn(m) => m.cols(),
        }
    }

    /// N, the length of an output row.
    pub fn out_features(&self) -> usize {
        match self {
            Weight::InOut(m) => m.cols(),
            Weight::OutIn(m) => m.rows(),
        }
    }
}

type MatmulCols = fn(&mut [f32], &[f32], MatRef<'_>, &[f32], usize);
type MatmulRows = fn(&mut [f32], &[f32], Matrix<'_>, &[f32]);
type LayerNorm = fn(&mut [f32], &[f32], &[f32], &[f32], f32);

/// A table of kernels for one instruction set. Only the instruction sets' tokens (made by their
/// detection) and [`Kernels::scalar`] build one, so a SIMD kernel is never reachable on a CPU
/// without it.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    /// Columns of the GEMM tile and of a packed weight panel: the threaded drivers split
    /// output columns in multiples of it.
    panel_width: usize,
    matmul_cols: MatmulCols,
    matmul_rows: MatmulRows,
    dot_rows: fn(&mut [f32], &[f32], &[f32]),
    dot_rows_any: fn(&mut [f32], &[f32], Matrix<'_>),
    dequantize: fn(&mut [f32], Values<'_>),
    weighted_sum: fn(&mut [f32], &[f32], Matrix<'_>),
    quantize_input: fn(&[f32], &mut [i16], &mut [f32]),
    dot: fn(&[f32], &[f32]) -> f32,
    axpy: fn(&mut [f32], f32, &[f32]),
    add: fn(&mut [f32], &[f32]),
    layernorm: LayerNorm,
    gelu: fn(&mut [f32]),
    softmax: fn(&mut [f32]),
    /// (kernel, flops per iteration) for the peak-throughput probe.
    fma_probe: (fn(u64) -> f32, u64),
    read_sum: fn(&[f32]) -> f32,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

impl Kernels {
    /// The portable kernels.
    pub fn scalar() -> Self {
        Kernels {
            isa: Isa::Scalar,
            panel_width: 16,
            matmul_cols: scalar::matmul_cols,
            matmul_rows: scalar::matmul_rows,
            dot_rows: scalar::dot_rows,
            dot_rows_any: scalar::dot_rows_any,
            dequantize: scalar::dequantize,
            weighted_sum: scalar::weighted_sum,
            quantize_input: scalar::quantize_input,
            dot: scalar::dot,
            axpy: scalar::axpy,
            add: scalar::add,
            layernorm: scalar::layernorm,
            gelu: scalar::gelu,
            softmax: scalar::softmax,
            fma_probe: (scalar::fma_loop, 12 * 2),
            read_sum: scalar::read_sum,
        }
    }

    /// The kernels `GPT2_BENCH_ISA` names (`GPT2_BENCH_FORCE_SCALAR=1` is `scalar`), else the
    /// best this CPU supports. An instruction set the CPU lacks, or an unknown name, falls back
    /// to the best: callers that take user input check [`Kernels::from_env`] first, which says
    /// what is wrong.
    pub fn detect() -> Self {
        Self::from_env().unwrap_or_else(|_| Self::best_available())
    }

    /// The kernels `GPT2_BENCH_ISA` (or `GPT2_BENCH_FORCE_SCALAR=1`) asks for, or the best this
    /// CPU has when neither is set; an error line naming the variable when the name is unknown
    /// or this CPU lacks it.
    pub fn from_env() -> Result<Self, String> {
        let force_scalar = std::env::var(FORCE_SCALAR_ENV).is_ok_and(|v| v == "1");
        if let Ok(name) = std::env::var(ISA_ENV) {
            let mut name = name.trim().to_ascii_lowercase();
            // What reports print (`avx2+fma`) is accepted as well as the short name.
            if name == "avx2+fma" {
                name = "avx2".into();
            }
            if name.is_empty() {
                return Ok(Self::best_available());
            }
            if force_scalar && name != "scalar" {
                return Err(format!(
                    "{ISA_ENV}={} and {FORCE_SCALAR_ENV}=1 ask for different kernels; unset one",
                    name.escape_debug()
                ));
            }
            let available = Self::available();
            let names: Vec<&str> = available.iter().map(|k| k.isa.choice()).collect();
            return available
                .iter()
                .find(|k| k.isa.choice() == name)
                .copied()
                .ok_or_else(|| {
                    let known = ["scalar", "avx2", "avx512", "neon"];
                    let what = if known.contains(&name.as_str()) {
                        "this CPU does not have it"
                    } else {
                        "no such instruction set"
                    };
                    format!(
                        "{ISA_ENV}={}: {what}; this CPU runs {} (unset it for the best)",
                        name.escape_debug(),
                        names.join(", ")
                    )
                });
        }
        if force_scalar {
            return Ok(Self::scalar());
        }
        Ok(Self::best_available())
    }

    /// Every kernel table this CPU can run, the best first (scalar last).
    pub fn available() -> Vec<Self> {
        #[cfg(target_arch = "x86_64")]
        let vector = [
            avx512::Avx512::detect().map(avx512::Avx512::kernels),
            avx2::Avx2::detect().map(avx2::Avx2::kernels),
        ];
        #[cfg(target_arch = "aarch64")]
        let vector = [Some(Self::best_available())];
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let vector: [Option<Self>; 0] = [];
        vector
            .into_iter()
            .flatten()
            .chain(std::iter::once(Self::scalar()))
            .collect()
    }

    /// The best kernels this CPU supports, ignoring the environment.
    pub fn best_available() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(avx512) = avx512::Avx512::detect() {
                return avx512.kernels();
            }
            if let Some(avx2) = avx2::Avx2::detect() {
                return avx2.kernels();
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(neon) = neon::Neon::detect() {
            return neon.kernels();
        }
        #[allow(unreachable_code)]
        Self::scalar()
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Columns of the GEMM tile: split output columns between threads in multiples of it.
    pub fn panel_width(&self) -> usize {
        self.panel_width
    }

    /// `out (T, width) = inp (T, K) @ w[:, n0..n0 + width] + bias`, `w` being (K, N) and
    /// `width` the length of `bias`.
    pub fn matmul_cols(
        &self,
        out: &mut [f32],
        inp: &[f32],
        w: MatRef<'_>,
        bias: &[f32],
        n0: usize,
    ) {
        (self.matmul_cols)(out, inp, w, bias, n0)
    }

    /// `out (T, width) = inp (T, K) @ w^T + bias` for an (N, K) weight `w` in any dtype,
    /// holding the `width` (= the length of `bias`) output rows wanted. A q8_0 `w` sees `inp`
    /// rounded by the q8_0 input rule of `gpt2_weights::dtype`: for one position the kernel
    /// quantizes it itself (`dot_rows_any`); for several it is rounded here
    /// ([`Kernels::round_input`]) and the packed product multiplies the rounded values in f32.
    /// ([`Compute::linear`](super::Compute::linear) rounds once for all its threads and calls
    /// [`Kernels::matmul_rows_rounded`] instead.)
    pub fn matmul_rows(&self, out: &mut [f32], inp: &[f32], w: Matrix<'_>, bias: &[f32]) {
        if w.dtype().rounds_input() && inp.len() > w.cols() {
            let mut rounded = inp.to_vec();
            self.round_input(&mut rounded);
            return (self.matmul_rows)(out, &rounded, w, bias);
        }
        (self.matmul_rows)(out, inp, w, bias)
    }

    /// [`Kernels::matmul_rows`] for several positions (T > 1) of an `inp` that the caller has
    /// already rounded where `w` asks for it (a q8_0 `w`: [`Kernels::round_input`] on every
    /// row), so that [`Compute::linear`](super::Compute::linear) rounds its input once for all
    /// its threads instead of once per thread. (Not for one position: the kernel quantizes that
    /// itself, and rounding twice is not the rule's result.)
    pub(crate) fn matmul_rows_rounded(
        &self,
        out: &mut [f32],
        inp: &[f32],
        w: Matrix<'_>,
        bias: &[f32],
    ) {
        debug_assert!(inp.len() > w.cols() || !w.dtype().rounds_input());
        (self.matmul_rows)(out, inp, w, bias)
    }

    /// `x` (whole blocks of 32) as 16-bit blocks by the q8_0 input rule: the same bits as
    /// `gpt2_weights::dtype::quantize_input_q8_0`, computed in registers.
    pub fn quantize_input(&self, x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
        (self.quantize_input)(x, qs, scales)
    }

    /// `x` rounded in place to the values of the q8_0 input rule (`scale * q`).
    pub fn round_input(&self, x: &mut [f32]) {
        with_input_buffers(x.len(), |qs, scales| {
            self.quantize_input(x, qs, scales);
            gpt2_weights::dtype::input_values(qs, scales, x);
        })
    }

    /// `out[r] = x . rows[r]`.
    pub fn dot_rows(&self, out: &mut [f32], x: &[f32], rows: &[f32]) {
        (self.dot_rows)(out, x, rows)
    }

    /// `out[r] = x . rows.row(r)` for a matrix in any dtype, converted in registers.
    pub fn dot_rows_any(&self, out: &mut [f32], x: &[f32], rows: Matrix<'_>) {
        (self.dot_rows_any)(out, x, rows)
    }

    /// `out = sum_r weights[r] * rows.row(r)`, the rows in any dtype (SIMD for f32 and f16).
    pub fn weighted_sum(&self, out: &mut [f32], weights: &[f32], rows: Matrix<'_>) {
        (self.weighted_sum)(out, weights, rows)
    }

    /// `out = values` as f32.
    pub fn dequantize(&self, out: &mut [f32], values: Values<'_>) {
        (self.dequantize)(out, values)
    }

    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.dot)(a, b)
    }

    /// `y += alpha * x`.
    pub fn axpy(&self, y: &mut [f32], alpha: f32, x: &[f32]) {
        (self.axpy)(y, alpha, x)
    }

    /// `x += y`.
    pub fn add(&self, x: &mut [f32], y: &[f32]) {
        (self.add)(x, y)
    }

    /// Layer norm of one row.
    pub fn layernorm(&self, out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        (self.layernorm)(out, x, w, b, eps)
    }

    pub fn gelu(&self, x: &mut [f32]) {
        (self.gelu)(x)
    }

    pub fn softmax(&self, x: &mut [f32]) {
        (self.softmax)(x)
    }

    /// Sums `x`, reading it once (the bandwidth probe).
    pub fn read_sum(&self, x: &[f32]) -> f32 {
        (self.read_sum)(x)
    }

    /// Runs the peak-FMA probe for `iters` iterations; returns (checksum, flops done).
    pub fn fma_probe(&self, iters: u64) -> (f32, u64) {
        let (f, flops_per_iter) = self.fma_probe;
        (f(iters), iters * flops_per_iter)
    }
}

/// The shapes every `dot_rows_any` kernel needs (`rows` holds `out.len()` rows of `x.len()`
/// values), checked before any of them reads: a panic naming the kernel otherwise.
#[inline]
#[track_caller]
fn check_dot_rows_any(out: &[f32], x: &[f32], rows: Matrix<'_>) {
    assert!(
        rows.cols() == x.len() && rows.rows() == out.len(),
        "dot_rows_any: inconsistent shapes"
    );
}

#[cfg(test)]
pub(crate) mod tests {
    //! Every kernel of every instruction set this CPU has (`Kernels::available`: AVX-512 and
    //! AVX2 on an AVX-512 x86-64 CPU, AVX2 alone on an older one, NEON on aarch64) against the
    //! scalar kernels, on sizes that leave remainders at every level (not multiples of 4, 8, 16
    //! or 32), and through the threaded drivers with 1 and 3 threads. An instruction set the CPU
    //! lacks is not tested here: `.ci/run` says which ran.
    use super::*;

    /// `detect` chooses the best vector kernels this CPU has (NEON on every aarch64; AVX-512 on
    /// an x86-64 CPU with F, BW and VL, else AVX2+FMA+F16C), unless GPT2_BENCH_ISA or
    /// GPT2_BENCH_FORCE_SCALAR=1 choose others: so a test run on aarch64 really exercises NEON.
    #[test]
    fn detect_chooses_the_vector_kernels_this_cpu_has() {
        let best = if cfg!(target_arch = "aarch64") {
            Isa::Neon
        } else if x86_has(&["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"]) {
            Isa::Avx512
        } else if x86_has(&["avx2", "fma", "f16c"]) {
            Isa::Avx2Fma
        } else {
            Isa::Scalar
        };
        assert_eq!(Kernels::best_available().isa(), best);
        let available: Vec<Isa> = Kernels::available().iter().map(|k| k.isa()).collect();
        assert_eq!(available[0], best);
        assert_eq!(*available.last().unwrap(), Isa::Scalar);
        if std::env::var_os(ISA_ENV).is_none() {
            let forced = std::env::var(FORCE_SCALAR_ENV).is_ok_and(|v| v == "1");
            let chosen = Kernels::detect().isa();
            assert_eq!(chosen, if forced { Isa::Scalar } else { best });
        }
    }

    fn x86_has(features: &[&str]) -> bool {
        #[cfg(target_arch = "x86_64")]
        return features.iter().all(|f| match *f {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            _ => false,
        });
        #[allow(unreachable_code)]
        {
            let _ = features;
            false
        }
    }

    /// Deterministic values in [-1, 1).
    pub(crate) fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// A matrix in any dtype, for the tests: see `gpt2_weights::dtype::OwnedMatrix`.
    pub(crate) struct TestMatrix(gpt2_weights::dtype::OwnedMatrix);

    impl TestMatrix {
        pub(crate) fn new(
            values: &[f32],
            rows: usize,
            cols: usize,
            dtype: gpt2_weights::Dtype,
        ) -> Self {
            TestMatrix(gpt2_weights::dtype::OwnedMatrix::encode(values, rows, cols, dtype).unwrap())
        }

        pub(crate) fn matrix(&self) -> Matrix<'_> {
            self.0.matrix()
        }
    }

    /// `inp (T, K) @ w^T + bias` for an (N, K) weight, from the dequantized values, in plain
    /// loops (the definition the kernels are checked against).
    /// A q8_0 `w` sees `inp` rounded to q8_0, as `gpt2_weights::dtype` defines.
    pub(crate) fn reference_rows(inp: &[f32], w: Matrix<'_>, bias: &[f32]) -> Vec<f32> {
        let (n, k) = (w.rows(), w.cols());
        let inp = gpt2_weights::dtype::product_input(inp, w.dtype());
        let values = w.values().to_f32();
        let mut out = Vec::new();
        for x in inp.chunks_exact(k) {
            for j in 0..n {
                let row = &values[j * k..(j + 1) * k];
                out.push(bias[j] + x.iter().zip(row).map(|(a, b)| a * b).sum::<f32>());
            }
        }
        out
    }

    /// Every reduced-precision kernel of the detected instruction set against the definitions,
    /// on shapes with remainders: rows not a multiple of 4 (dot products, weighted sums), row
    /// lengths not a multiple of 8
    /// (f16, bf16) and more than one q8_0 block; 1, 2, 7 and 13 positions for the packed
    /// product (a partial group of 6, and less than one 16- or 32-wide panel in the last columns).
    #[test]
    fn reduced_precision_kernels_match_the_definitions() {
        for dtype in gpt2_weights::Dtype::ALL {
            let block = dtype.block_len().max(1);
            // 70 rows: two 32-wide panels (AVX-512) and a tail.
            for (rows, cols) in [(1, 32), (5, 64), (7, 96), (19, 288), (33, 32 * 9), (70, 64)] {
                let cols = if block == 1 && cols > 32 {
                    cols - 3
                } else {
                    cols
                };
                let w = data(rows * cols, 31);
                let m = TestMatrix::new(&w, rows, cols, dtype);
                let want_values = m.matrix().values().to_f32().into_owned();
                for kernels in Kernels::available() {
                    let mut got = vec![0.0; rows * cols];
                    kernels.dequantize(&mut got, m.matrix().values());
                    assert_eq!(got, want_values, "{dtype} dequantize");
                    let x = data(cols, 32);
                    let mut got = vec![0.0; rows];
                    kernels.dot_rows_any(&mut got, &x, m.matrix());
                    close(
                        &got,
                        &reference_rows(&x, m.matrix(), &vec![0.0; rows]),
                        1e-5,
                    );
                    // The weighted sum of the rows (attention's sum over a cache of values).
                    let weights = data(rows, 35);
                    let mut got = vec![f32::NAN; cols];
                    kernels.weighted_sum(&mut got, &weights, m.matrix());
                    let want: Vec<f32> = (0..cols)
                        .map(|j| {
                            (0..rows)
                                .map(|r| weights[r] * want_values[r * cols + j])
                                .sum()
                        })
                        .collect();
                    close(&got, &want, 1e-5);
                    let bias = data(rows, 33);
                    for t in [1, 2, 7, 13] {
                        let inp = data(t * cols, 34);
                        let mut got = vec![0.0; t * rows];
                        kernels.matmul_rows(&mut got, &inp, m.matrix(), &bias);
                        let want = reference_rows(&inp, m.matrix(), &bias);
                        close(&got, &want, 1e-5);
                    }
                }
            }
        }
    }

    /// Every instruction set's q8_0 input quantizer gives the definition's bits: on values of
    /// every magnitude (subnormal to 1e30), on a block whose values land exactly on half steps
    /// (ties go to even), at the largest |q|, on zero blocks and on signed zeros.
    #[test]
    fn input_quantizers_match_the_definition() {
        let mut x = Vec::new();
        let scales = [1e-40f32, 1e-7, 1e-3, 0.5, 1.0, 3.0, 250.0, 6e4, 1e30];
        for (i, scale) in scales.into_iter().enumerate() {
            x.extend(data(32 * 9, 40 + i as u32).iter().map(|v| v * scale));
        }
        // max |x| = 1.5: the step is 2^-13, and -2.5, 3.5 and 0.5 steps are ties.
        let step = 2f32.powi(-13);
        let mut ties = [0.0f32; 32];
        ties[..6].copy_from_slice(&[1.5, -2.5 * step, 3.5 * step, 0.5 * step, -0.0, 1.999_999_9]);
        x.extend(ties);
        x.extend([0.0f32; 32]);
        x.extend((0..32).map(|i| if i % 2 == 0 { -0.0 } else { 0.0 }));
        let mut want = (vec![0i16; x.len()], vec![0.0f32; x.len() / 32]);
        gpt2_weights::dtype::quantize_input_q8_0(&x, &mut want.0, &mut want.1);
        assert_eq!(
            &want.0[x.len() - 96..x.len() - 90],
            &[12288, -2, 4, 0, 0, 16384]
        );
        for kernels in Kernels::available() {
            let mut got = (vec![0i16; x.len()], vec![0.0f32; x.len() / 32]);
            kernels.quantize_input(&x, &mut got.0, &mut got.1);
            assert_eq!(got.0, want.0, "{:?} q", kernels.isa());
            let bits = |v: &[f32]| v.iter().map(|d| d.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.1), bits(&want.1), "{:?} scales", kernels.isa());
            let mut rounded = x.clone();
            kernels.round_input(&mut rounded);
            let mut want_rounded = x.clone();
            gpt2_weights::dtype::round_input_q8_0(&mut want_rounded);
            assert_eq!(
                bits(&rounded),
                bits(&want_rounded),
                "{:?} rounded",
                kernels.isa()
            );
        }
    }

    pub(crate) fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn matmul_cols_matches_scalar() {
        let slow = Kernels::scalar();
        for fast in Kernels::available() {
            for (t, k, n) in [
                (1, 35, 105),
                (1, 768, 40),
                (2, 19, 33),
                (7, 60, 240),
                (13, 37, 50),
                // Deeper than one KC slice, with a partial last slice, and more than
                // PANELS_PER_PACK panels in a row (AVX2 kernel's blocking).
                (7, 600, 200),
                // More than PANELS_PER_PACK 32-wide panels (AVX-512), then a 16-wide tile and a
                // scalar tail: 9 x 32 + 16 + 5.
                (7, 600, 309),
            ] {
                let inp = data(t * k, 1);
                let w = data(k * n, 2);
                let bias = data(n, 3);
                for (n0, width) in [(0, n), (5, n - 5), (16, n.min(40) - 16)] {
                    let mut a = vec![0.0; t * width];
                    let mut b = vec![0.0; t * width];
                    let wm = MatRef::new(&w, k, n);
                    fast.matmul_cols(&mut a, &inp, wm, &bias[n0..n0 + width], n0);
                    slow.matmul_cols(&mut b, &inp, wm, &bias[n0..n0 + width], n0);
                    close(&a, &b, 1e-5);
                }
            }
        }
    }

    #[test]
    fn vector_kernels_match_scalar() {
        let slow = Kernels::scalar();
        for fast in Kernels::available() {
            for n in [1, 7, 8, 15, 16, 33, 60, 768] {
                let (x, y) = (data(n, 4), data(n, 5));
                let d = (fast.dot(&x, &y) - slow.dot(&x, &y)).abs();
                assert!(d <= 1e-5 * n as f32, "dot {n}: {d}");
                let (mut a, mut b) = (y.clone(), y.clone());
                fast.axpy(&mut a, 0.37, &x);
                slow.axpy(&mut b, 0.37, &x);
                close(&a, &b, 1e-6);
                let (w, bias) = (data(n, 6), data(n, 7));
                let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                fast.layernorm(&mut a, &x, &w, &bias, 1e-5);
                slow.layernorm(&mut b, &x, &w, &bias, 1e-5);
                close(&a, &b, 1e-5);
                let (mut a, mut b) = (x.clone(), x.clone());
                fast.softmax(&mut a);
                slow.softmax(&mut b);
                close(&a, &b, 1e-6);
                let rows = data(5 * n, 8);
                let (mut a, mut b) = (vec![0.0; 5], vec![0.0; 5]);
                fast.dot_rows(&mut a, &x, &rows);
                slow.dot_rows(&mut b, &x, &rows);
                close(&a, &b, 1e-5);
                let s = (fast.read_sum(&x) - slow.read_sum(&x)).abs();
                assert!(s <= 1e-5 * n as f32, "read_sum {n}: {s}");
            }
        }
    }

    #[test]
    fn gelu_is_accurate_over_its_range() {
        // The vectorised tanh must keep GELU within ~1e-6 of the libm version.
        let x: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) / 200.0).collect();
        for fast in Kernels::available() {
            let (mut a, mut b) = (x.clone(), x.clone());
            fast.gelu(&mut a);
            Kernels::scalar().gelu(&mut b);
            for ((fa, fb), xi) in a.iter().zip(&b).zip(&x) {
                assert!(
                    (fa - fb).abs() <= 1e-6 * (1.0 + fb.abs()),
                    "gelu({xi}): {fa} vs {fb}"
                );
            }
            // Softmax of extreme inputs stays finite and normalised.
            let mut s = vec![-1e30, 0.0, 80.0, 88.0, -88.0, 1e30];
            fast.softmax(&mut s);
            assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
            assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
