//! Tensor element types (f32, f16, bf16, q8_0): what each stored value means, how f32 weights
//! are converted into each, and typed views of stored matrices.
//!
//! This module is the definition every backend follows. A weight in any dtype *is* an f32 value,
//! exactly:
//!
//! - **f32**: the value.
//! - **f16** (IEEE 754 binary16): the value is the f16 widened to f32, which is exact.
//! - **bf16** (the top 16 bits of an f32): the value is those bits shifted left by 16, exact.
//! - **q8_0** (llama.cpp's `block_q8_0`): 32 consecutive values of a row share a block of 34
//!   bytes: an f16 scale `d` (little-endian) then 32 `i8` values `q`. Value `i` of the block is
//!   `f32(d) * f32(q[i])`, which is exact in f32 (an 11-bit significand times a 7-bit integer).
//!
//! So a model in a reduced precision is an f32 model whose weights happen to be representable;
//! the forward pass is the f32 forward pass on those values (f32 activations, products summed in
//! f32, in whatever order a backend sums f32 products), with one rule more for q8_0:
//!
//! **A product with a q8_0 matrix rounds its input to 16-bit blocks first**, so that the
//! products can be summed in integers. Each input vector (one position's activations: the
//! layer-normed residual, the attention output, the GELU output; for the output layer the final
//! layer norm) is cut into blocks of 32 along the dot product, the blocks of the weight rows it
//! meets. With `a` = max |x| over a block and `e` = the binary exponent of `a` (`2^e <= a <
//! 2^(e+1)`, at least -113), the block's scale is `d = 2^(e - 13)` and each value becomes
//! `d * q`, `q = round_ties_even(x / d)`, an integer of at most 14 bits and a sign (|q| <= 2^14).
//! [`quantize_input_q8_0`] is the definition, [`round_input_q8_0`] the same values as f32.
//! Because `d` is a power of two, `x / d` and `d * q` are exact: the only change is one rounding
//! to a multiple of `d`, by at most `d / 2 <= a / 2^14` (steps 64x finer than those of
//! llama.cpp's 8-bit activation blocks, `a / 127`, which cost synthetic GPT-2 small 2.7x the KL
//! divergence of q8_0 weights alone and broke token-exactness between backends, see
//! docs/weights.md). The product is then that of two integer blocks: backends may sum each
//! block's 32 products `q_w * q_x` exactly in integers and scale once by `d_w * d_x`, or
//! multiply the rounded f32 values: the same value up to f32 rounding, as any reordering is.
//! Matrices in f32, f16 and bf16 see their input unrounded; the embedding lookup reads `wte` as
//! it is.
//!
//! **Keys and values may be cached in f16** ([`KvDtype`], `--kv-cache f16`; llama.cpp's default,
//! off here by default). Then every key and value is rounded to f16 (to nearest, ties to even;
//! [`round_to_f16`]) as the QKV projection produces it (after its bias), and attention reads the
//! rounded values, widened to f32 exactly; the queries stay f32, and scores and weighted sums are
//! f32 as before. This halves the bytes a decode step reads from the cache, which at a few
//! hundred positions is a tenth of what a q8_0 model reads in all. A backend without a cache
//! rounds the keys and values it recomputes the same way, so every backend attends over the same
//! values. It is off by default because it loosens the agreement between backends: where two
//! backends' f32 sums of one key fall on either side of an f16 rounding boundary, their cached
//! values differ by one f16 step, and logits by up to a few 1e-3 instead of ~1e-5, enough to
//! flip a near-tie between backends (seen in a 64-token run of synthetic GPT-2 small in q8_0).
//! A key or value beyond f16's range (65504) becomes infinite and the logits non-finite, which
//! the backends report as an error; GPT-2's keys and values are far inside it.
//!
//! Converting f32 weights rounds once, to nearest (ties to even for f16 and bf16). q8_0 follows
//! ggml's reference quantizer (`quantize_row_q8_0_ref`, and gguf-py's): `d = max|x| / 127`,
//! `q = round(x * (1 / d))` rounding halves away from zero, `d` stored as f16, so a model
//! quantized here and by llama.cpp's converter from the same f32 weights holds the same bytes.
//! A value that came from an f16 (or bf16) checkpoint converts back to the same f16 (bf16) bits:
//! exporting an f16 checkpoint as f16 copies it exactly, it is never rounded twice.

use std::borrow::Cow;

/// Values per q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per q8_0 block: the f16 scale, then 32 `i8`.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::Q8_0];

    /// The number stored in a file's tensor table.
    pub fn code(self) -> u32 {
        match self {
            Dtype::F32 => 0,
            Dtype::F16 => 1,
            Dtype::Bf16 => 2,
            Dtype::Q8_0 => 3,
        }
    }

    pub fn from_code(code: u32) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Q8_0 => "q8_0",
        }
    }

    /// Parses a name as [`Dtype::name`] spells it (case-insensitive).
    pub fn parse(name: &str) -> Option<Dtype> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name))
    }

    /// Values per block: a row's length must be a multiple of it.
    pub fn block_len(self) -> usize {
        match self {
            Dtype::Q8_0 => Q8_0_BLOCK,
            _ => 1,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::Q8_0 => Q8_0_BLOCK_BYTES,
        }
    }

    /// Bytes of `rows` rows of `row_len` values, or why there is no such tensor: a row that is
    /// not a whole number of blocks, or a size that overflows.
    pub fn byte_len(self, rows: u64, row_len: u64) -> Result<u64, String> {
        let block = self.block_len() as u64;
        if !row_len.is_multiple_of(block) {
            return Err(format!(
                "{} rows must be a whole number of {block}-value blocks, but a row has {row_len} \
                 values",
                self.name()
            ));
        }
        (row_len / block)
            .checked_mul(self.block_bytes() as u64)
            .and_then(|b| b.checked_mul(rows))
            .ok_or_else(|| "size overflows".to_string())
    }

    /// Average bytes per value (4, 2, 2, 1.0625).
    pub fn bytes_per_value(self) -> f64 {
        self.block_bytes() as f64 / self.block_len() as f64
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar conversions: the reference every kernel is checked against.

/// The f32 value of f16 bits (exact).
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// The f32 value of bf16 bits (exact).
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// What attention's key/value cache holds: f32 (the default), or f16 (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
}

impl KvDtype {
    pub const ALL: [KvDtype; 2] = [KvDtype::F32, KvDtype::F16];

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }

    /// Bytes per cached value (4, 2).
    pub fn bytes_per_value(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The f16 bits nearest to `x` (ties to even; beyond f16's range, infinity).
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// `x` rounded in place to the nearest f16 values: the f16 KV cache rule (module docs).
pub fn round_to_f16(x: &mut [f32]) {
    for v in x {
        *v = f16_to_f32(f32_to_f16(*v));
    }
}

/// Value `i` (0..32) of one 34-byte q8_0 block.
pub fn q8_0_value(block: &[u8], i: usize) -> f32 {
    q8_0_scale(block) * f32::from(block[2 + i] as i8)
}

/// The scale `d` of one q8_0 block, as f32.
pub fn q8_0_scale(block: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[0], block[1]]))
}

/// Why a value cannot be stored in a dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeError {
    /// Index of the offending value.
    pub index: usize,
    pub value: f32,
    pub reason: &'static str,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "value {} at index {}: {}",
            self.value, self.index, self.reason
        )
    }
}

/// Appends `values` (whole rows of `row_len`) converted to `dtype` to `out`, row by row in the
/// order given. Refuses NaN and infinities (they would make every logit NaN) and, for f16 and
/// q8_0 scales, finite values beyond f16's range (they would become infinities).
pub fn encode(
    values: &[f32],
    row_len: usize,
    dtype: Dtype,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(EncodeError {
            index,
            value: values[index],
            reason: "not a finite number",
        });
    }
    match dtype {
        Dtype::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::F16 => {
            for (index, &v) in values.iter().enumerate() {
                let h = half::f16::from_f32(v);
                if h.is_infinite() {
                    return Err(EncodeError {
                        index,
                        value: v,
                        reason: "beyond f16's range (+-65504); export as bf16 or f32",
                    });
                }
                out.extend_from_slice(&h.to_bits().to_le_bytes());
            }
        }
        Dtype::Bf16 => {
            for (index, &v) in values.iter().enumerate() {
                let h = half::bf16::from_f32(v);
                if h.is_infinite() {
                    return Err(EncodeError {
                        index,
                        value: v,
                        reason: "beyond bf16's range; export as f32",
                    });
                }
                out.extend_from_slice(&h.to_bits().to_le_bytes());
            }
        }
        Dtype::Q8_0 => {
            assert!(
                row_len.is_multiple_of(Q8_0_BLOCK) && values.len().is_multiple_of(row_len),
                "encode: q8_0 rows must be whole blocks (the plan checks this first)"
            );
            for (b, block) in values.chunks_exact(Q8_0_BLOCK).enumerate() {
                quantize_block_q8_0(block, out).map_err(|reason| {
                    let index = b * Q8_0_BLOCK;
                    EncodeError {
                        index,
                        value: block.iter().fold(0.0f32, |m, v| m.max(v.abs())),
                        reason,
                    }
                })?;
            }
        }
    }
    Ok(())
}

/// One block of 32 values, as ggml's reference quantizer does it (see the module docs).
fn quantize_block_q8_0(block: &[f32], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
    let d16 = half::f16::from_f32(d);
    if d16.is_infinite() {
        return Err("the block's scale (max |x| / 127) is beyond f16's range; export as f32");
    }
    out.extend_from_slice(&d16.to_bits().to_le_bytes());
    // |x * (1/d)| <= 127 up to rounding; the clamp keeps a rounding to 127.5 in range.
    out.extend(
        block
            .iter()
            .map(|&x| ((x * inverse).round().clamp(-127.0, 127.0) as i8) as u8),
    );
    Ok(())
}

/// The values of `bytes` (whole rows of `row_len` in `dtype`), as f32.
pub fn decode(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::Q8_0 => bytes
            .chunks_exact(Q8_0_BLOCK_BYTES)
            .flat_map(|block| (0..Q8_0_BLOCK).map(move |i| q8_0_value(block, i)))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// The q8_0 rule for a product's input (see the module docs).

impl Dtype {
    /// Whether a product with a matrix of this dtype rounds its input to q8_0 first.
    pub fn rounds_input(self) -> bool {
        self == Dtype::Q8_0
    }
}

/// The input of a product with a q8_0 matrix, as 16-bit blocks: `qs[i]` and, per block of 32,
/// `scales[b]` = `d`, so value `i` is `scales[i / 32] * qs[i]` (exactly). This is the
/// definition every backend follows (the SIMD kernels compute the same `qs` and `scales` in
/// registers). `x.len()` must be a whole number of blocks, which every q8_0 matrix's rows are.
pub fn quantize_input_q8_0(x: &[f32], qs: &mut [i16], scales: &mut [f32]) {
    assert!(
        x.len().is_multiple_of(Q8_0_BLOCK)
            && qs.len() == x.len()
            && scales.len() == x.len() / Q8_0_BLOCK,
        "quantize_input_q8_0: {} values are not whole blocks, or the outputs do not fit",
        x.len()
    );
    let blocks = x
        .chunks_exact(Q8_0_BLOCK)
        .zip(qs.chunks_exact_mut(Q8_0_BLOCK));
    for ((xb, qb), d) in blocks.zip(scales) {
        let (scale, inverse) = input_scale(block_amax(xb));
        *d = scale;
        for (q, &v) in qb.iter_mut().zip(xb) {
            // |v * inverse| < 2^14, and multiplying by a power of two is exact.
            *q = round_ties_even_small(v * inverse) as i16;
        }
    }
}

/// max |x| over a block, compared as bits: for numbers that are not NaN, the order of `|x|` is
/// the order of its bits as an unsigned integer (a NaN gives a NaN, which then spreads, as it
/// would through an f32 product). Integer maxima are what SIMD code computes fastest and
/// exactly the same way (`vpmaxud`, `vmaxvq_u32`).
pub fn block_amax(block: &[f32]) -> f32 {
    f32::from_bits(
        block
            .iter()
            .map(|v| v.to_bits() & 0x7fff_ffff)
            .max()
            .unwrap_or(0),
    )
}

/// Binary exponent of the largest input step: a block whose max |x| has exponent `e` gets the
/// scale `2^(e - INPUT_BITS)`, so its values become integers below `2^(INPUT_BITS + 1)`.
pub const INPUT_BITS: i32 = 13;

/// A block's scale `d` and `1 / d` (both powers of two, so both exact) from its max |x| `a`:
/// `d = 2^(e - 13)` for `2^e <= a < 2^(e+1)`; `e` at least -113 (then `d` = 2^-126, the least
/// normal f32: smaller blocks, zeros included, share it) and 128 for infinities and NaN.
pub fn input_scale(amax: f32) -> (f32, f32) {
    let e = (((amax.to_bits() >> 23) & 0xff) as i32 - 127).max(-126 + INPUT_BITS);
    let scale = f32::from_bits(((e - INPUT_BITS + 127) as u32) << 23);
    let inverse = f32::from_bits(((INPUT_BITS - e + 127) as u32) << 23);
    (scale, inverse)
}

/// `v.round_ties_even()` for |v| <= 2^22, by adding and subtracting 1.5 * 2^23: the sum lies
/// where f32's spacing is 1, so the hardware's default rounding (to nearest, ties to even)
/// rounds it, and the constant is even, so the tie goes the same way as for `v`. This is what
/// `vcvtps2dq` and `fcvtns` compute, and unlike `round_ties_even` (a libm call without SSE4.1)
/// it vectorises.
pub fn round_ties_even_small(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    (v + SHIFT) - SHIFT
}

/// Rounds `x` (whole blocks of 32; several positions' rows at once when each row is whole
/// blocks) to the values [`quantize_input_q8_0`] gives, in place.
pub fn round_input_q8_0(x: &mut [f32]) {
    let mut qs = vec![0i16; x.len()];
    let mut scales = vec![0.0f32; x.len() / Q8_0_BLOCK];
    quantize_input_q8_0(x, &mut qs, &mut scales);
    input_values(&qs, &scales, x);
}

/// The f32 values of quantized input blocks: `out[i] = scales[i / 32] * qs[i]` (exact).
pub fn input_values(qs: &[i16], scales: &[f32], out: &mut [f32]) {
    let blocks = out
        .chunks_exact_mut(Q8_0_BLOCK)
        .zip(qs.chunks_exact(Q8_0_BLOCK));
    for ((ob, qb), &d) in blocks.zip(scales) {
        for (v, &q) in ob.iter_mut().zip(qb) {
            *v = d * f32::from(q);
        }
    }
}

/// `x` as a product with a `dtype` matrix sees it: rounded to q8_0 for a q8_0 matrix
/// ([`round_input_q8_0`]), borrowed unchanged otherwise.
pub fn product_input(x: &[f32], dtype: Dtype) -> Cow<'_, [f32]> {
    if dtype.rounds_input() {
        let mut rounded = x.to_vec();
        round_input_q8_0(&mut rounded);
        Cow::Owned(rounded)
    } else {
        Cow::Borrowed(x)
    }
}

/// The first q8_0 block of `bytes` whose scale is not finite: (block index, scale).
pub fn first_bad_q8_0_scale(bytes: &[u8]) -> Option<(usize, f32)> {
    bytes
        .chunks_exact(Q8_0_BLOCK_BYTES)
        .map(q8_0_scale)
        .enumerate()
        .find(|(_, d)| !d.is_finite())
}

/// A NaN or infinity found in stored values by [`first_non_finite`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFinite {
    /// The element's index in the stored layout; for q8_0, the block's index.
    pub index: usize,
    /// The value (for q8_0, the block's scale).
    pub value: f32,
    /// Whether `index` is a q8_0 block whose scale is `value`.
    pub q8_0_scale: bool,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.q8_0_scale {
            write!(
                f,
                "a non-finite scale ({}) in q8_0 block {}",
                self.value, self.index
            )
        } else {
            write!(
                f,
                "a non-finite value ({}) at index {}",
                self.value, self.index
            )
        }
    }
}

/// The first value of `bytes` (whole values or blocks of `dtype`, as stored) that is NaN or
/// infinite; for q8_0 the first block whose scale is (its `i8` values are always finite). The
/// one check behind every refusal of non-finite weights (readers, writers, `inspect`), so they
/// agree on what is refused and on the index they name. Allocates nothing: it runs on whole
/// memory-mapped models.
pub fn first_non_finite(bytes: &[u8], dtype: Dtype) -> Option<NonFinite> {
    let element = |found: Option<(usize, f32)>| {
        found.map(|(index, value)| NonFinite {
            index,
            value,
            q8_0_scale: false,
        })
    };
    match dtype {
        Dtype::F32 => element(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .enumerate()
                .find(|(_, v)| !v.is_finite()),
        ),
        Dtype::F16 | Dtype::Bf16 => {
            let widen = if dtype == Dtype::F16 {
                f16_to_f32
            } else {
                bf16_to_f32
            };
            element(
                bytes
                    .chunks_exact(2)
                    .map(|b| widen(u16::from_le_bytes([b[0], b[1]])))
                    .enumerate()
                    .find(|(_, v)| !v.is_finite()),
            )
        }
        Dtype::Q8_0 => first_bad_q8_0_scale(bytes).map(|(index, value)| NonFinite {
            index,
            value,
            q8_0_scale: true,
        }),
    }
}

/// Transposes a row-major (rows, cols) matrix of any element type.
pub fn transpose<T: Copy>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(data.len(), rows * cols, "transpose: shape does not match");
    let mut out = Vec::with_capacity(data.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| data[r * cols + c]));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Views

/// A stored tensor's values, borrowed, in their dtype.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    F32(&'a [f32]),
    /// f16 bits.
    F16(&'a [u16]),
    /// bf16 bits.
    Bf16(&'a [u16]),
    /// 34-byte blocks (see the module docs).
    Q8_0(&'a [u8]),
}

impl<'a> Values<'a> {
    pub fn dtype(&self) -> Dtype {
        match self {
            Values::F32(_) => Dtype::F32,
            Values::F16(_) => Dtype::F16,
            Values::Bf16(_) => Dtype::Bf16,
            Values::Q8_0(_) => Dtype::Q8_0,
        }
    }

    /// Views `bytes` as values of `dtype`; `None` if they are misaligned for it or not a
    /// whole number of elements (blocks).
    pub fn from_bytes(bytes: &'a [u8], dtype: Dtype) -> Option<Values<'a>> {
        Some(match dtype {
            Dtype::F32 => Values::F32(bytemuck::try_cast_slice(bytes).ok()?),
            Dtype::F16 => Values::F16(bytemuck::try_cast_slice(bytes).ok()?),
            Dtype::Bf16 => Values::Bf16(bytemuck::try_cast_slice(bytes).ok()?),
            Dtype::Q8_0 if bytes.len().is_multiple_of(Q8_0_BLOCK_BYTES) => Values::Q8_0(bytes),
            Dtype::Q8_0 => return None,
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) | Values::Bf16(v) => v.len(),
            Values::Q8_0(b) => b.len() / Q8_0_BLOCK_BYTES * Q8_0_BLOCK,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Values::F32(v) => bytemuck::cast_slice(v),
            Values::F16(v) | Values::Bf16(v) => bytemuck::cast_slice(v),
            Values::Q8_0(b) => b,
        }
    }

    /// Values `range` (block-aligned for q8_0).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Values<'a> {
        match *self {
            Values::F32(v) => Values::F32(&v[range]),
            Values::F16(v) => Values::F16(&v[range]),
            Values::Bf16(v) => Values::Bf16(&v[range]),
            Values::Q8_0(b) => {
                assert!(
                    range.start.is_multiple_of(Q8_0_BLOCK) && range.end.is_multiple_of(Q8_0_BLOCK),
                    "q8_0 slices are whole blocks"
                );
                let byte = |i: usize| i / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
                Values::Q8_0(&b[byte(range.start)..byte(range.end)])
            }
        }
    }

    /// Value `i`, the slow readable way (the naive backend's inner loops).
    pub fn get(&self, i: usize) -> f32 {
        match *self {
            Values::F32(v) => v[i],
            Values::F16(v) => f16_to_f32(v[i]),
            Values::Bf16(v) => bf16_to_f32(v[i]),
            Values::Q8_0(b) => {
                let block = i / Q8_0_BLOCK;
                q8_0_value(&b[block * Q8_0_BLOCK_BYTES..], i % Q8_0_BLOCK)
            }
        }
    }

    /// Every value as f32 into `out` (`out.len()` = [`Values::len`]).
    pub fn dequantize_into(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "dequantize_into: length differs");
        match *self {
            Values::F32(v) => out.copy_from_slice(v),
            Values::F16(v) => out.iter_mut().zip(v).for_each(|(o, &b)| *o = f16_to_f32(b)),
            Values::Bf16(v) => out
                .iter_mut()
                .zip(v)
                .for_each(|(o, &b)| *o = bf16_to_f32(b)),
            Values::Q8_0(b) => {
                for (o, block) in out
                    .chunks_exact_mut(Q8_0_BLOCK)
                    .zip(b.chunks_exact(Q8_0_BLOCK_BYTES))
                {
                    let d = q8_0_scale(block);
                    for (o, &q) in o.iter_mut().zip(&block[2..]) {
                        *o = d * f32::from(q as i8);
                    }
                }
            }
        }
    }

    /// Every value as f32; borrows f32 data instead of copying it.
    pub fn to_f32(&self) -> Cow<'a, [f32]> {
        match *self {
            Values::F32(v) => Cow::Borrowed(v),
            other => {
                let mut out = vec![0.0; other.len()];
                other.dequantize_into(&mut out);
                Cow::Owned(out)
            }
        }
    }
}

/// A row-major (rows, cols) matrix stored in any dtype (q8_0 blocks run along a row).
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    values: Values<'a>,
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// The first `rows * cols` values of `values`. Panics if they do not fit or (q8_0) a row is
    /// not whole blocks: shapes come from a validated file, so that is a bug, not bad input.
    pub fn new(values: Values<'a>, rows: usize, cols: usize) -> Self {
        let n = rows.checked_mul(cols);
        assert!(
            n.is_some_and(|n| n <= values.len()) && cols.is_multiple_of(values.dtype().block_len()),
            "Matrix: a ({rows}, {cols}) {} matrix does not fit in {} values",
            values.dtype(),
            values.len()
        );
        Matrix {
            values: values.slice(0..rows * cols),
            rows,
            cols,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> Dtype {
        self.values.dtype()
    }

    pub fn values(&self) -> Values<'a> {
        self.values
    }

    /// Bytes of the whole matrix (what one pass over it reads).
    pub fn byte_len(&self) -> usize {
        self.values.bytes().len()
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> Values<'a> {
        self.values.slice(r * self.cols..(r + 1) * self.cols)
    }

    /// Rows `range`, a (range.len(), cols) matrix.
    pub fn row_range(&self, range: std::ops::Range<usize>) -> Matrix<'a> {
        Matrix {
            values: self
                .values
                .slice(range.start * self.cols..range.end * self.cols),
            rows: range.len(),
            cols: self.cols,
        }
    }

    /// Element (r, c), the slow readable way.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.values.get(r * self.cols + c)
    }
}

/// The weight of a linear layer (`y = x W + b`, `in_features` inputs, `out_features` outputs), in
/// the layout its dtype is stored in.
#[derive(Clone, Copy, Debug)]
pub enum Linear<'a> {
    /// f32, (in, out): row `i` holds input `i`'s weight to every output (Hugging Face's Conv1D
    /// layout, and format version 1's).
    InOut(Matrix<'a>),
    /// Any dtype, (out, in): row `o` holds output `o`'s weights, so q8_0 blocks run along the
    /// dot product, as in ggml/GGUF.
    OutIn(Matrix<'a>),
}

impl<'a> Linear<'a> {
    pub fn matrix(&self) -> Matrix<'a> {
        match *self {
            Linear::InOut(m) | Linear::OutIn(m) => m,
        }
    }

    pub fn in_features(&self) -> usize {
        match self {
            Linear::InOut(m) => m.rows(),
            Linear::OutIn(m) => m.cols(),
        }
    }

    pub fn out_features(&self) -> usize {
        match self {
            Linear::InOut(m) => m.cols(),
            Linear::OutIn(m) => m.rows(),
        }
    }

    pub fn dtype(&self) -> Dtype {
        self.matrix().dtype()
    }

    /// The weight from input `i` to output `o`, the slow readable way.
    pub fn weight(&self, i: usize, o: usize) -> f32 {
        match self {
            Linear::InOut(m) => m.get(i, o),
            Linear::OutIn(m) => m.get(o, i),
        }
    }

    /// The weight as f32 in the (in, out) layout: borrowed when it is stored that way, else
    /// dequantized and transposed into a new buffer (for backends that convert once at load).
    pub fn to_f32_in_out(&self) -> Cow<'a, [f32]> {
        match self {
            Linear::InOut(m) => m.values().to_f32(),
            Linear::OutIn(m) => Cow::Owned(transpose(&m.values().to_f32(), m.rows(), m.cols())),
        }
    }
}

/// A matrix in any dtype that owns its bytes (aligned as a mapped file's tensors are): made
/// from f32 values with [`encode`], for tests and benchmarks of the kernels.
#[derive(Debug, Clone)]
pub struct OwnedMatrix {
    words: Vec<u32>,
    len: usize,
    dtype: Dtype,
    rows: usize,
    cols: usize,
}

impl OwnedMatrix {
    /// `values`, a row-major (rows, cols) f32 matrix, converted to `dtype`.
    pub fn encode(
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: Dtype,
    ) -> Result<Self, EncodeError> {
        assert_eq!(
            values.len(),
            rows * cols,
            "OwnedMatrix: shape does not match"
        );
        let mut bytes = Vec::new();
        encode(values, cols, dtype, &mut bytes)?;
        let words = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        Ok(OwnedMatrix {
            words,
            len: bytes.len(),
            dtype,
            rows,
            cols,
        })
    }

    pub fn matrix(&self) -> Matrix<'_> {
        let bytes = &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len];
        let values = Values::from_bytes(bytes, self.dtype).expect("aligned, whole blocks");
        Matrix::new(values, self.rows, self.cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(values: &[f32], dtype: Dtype, row_len: usize) -> Vec<f32> {
        let mut bytes = Vec::new();
        encode(values, row_len, dtype, &mut bytes).unwrap();
        assert_eq!(
            bytes.len() as u64,
            dtype
                .byte_len((values.len() / row_len) as u64, row_len as u64)
                .unwrap()
        );
        decode(&bytes, dtype)
    }

    #[test]
    fn codes_and_names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_code(d.code()), Some(d));
            assert_eq!(Dtype::parse(d.name()), Some(d));
        }
        assert_eq!(Dtype::from_code(4), None);
        assert_eq!(Dtype::parse("Q8_0"), Some(Dtype::Q8_0));
        assert_eq!(Dtype::parse("int4"), None);
        assert_eq!(Dtype::Q8_0.bytes_per_value(), 34.0 / 32.0);
    }

    /// The q8_0 input rule on blocks worked out by hand: max |x| = 1.5 has exponent 0, so the
    /// step is d = 2^-13 and q = x * 8192 rounded, ties to even.
    #[test]
    fn q8_0_input_rule_by_hand() {
        let step = 2f32.powi(-13);
        let mut x = [0.0f32; 32];
        x[0] = 1.5; // 12288
        x[1] = -2.5 * step; // tie: -2
        x[2] = 3.5 * step; // tie: 4
        x[3] = 0.3 * step; // 0
        x[4] = -1.0; // -8192
        x[5] = 0.1; // 819.2: 819
        let mut qs = [0i16; 32];
        let mut d = [0.0f32; 1];
        quantize_input_q8_0(&x, &mut qs, &mut d);
        assert_eq!(&qs[..6], &[12288, -2, 4, 0, -8192, 819]);
        assert!(qs[6..].iter().all(|&q| q == 0));
        assert_eq!(d[0], step);
        let mut rounded = x;
        round_input_q8_0(&mut rounded);
        assert_eq!(rounded[5], 819.0 * step);
        // The largest |q| a block can have: just below 2^(e+1).
        let mut top = [0.0f32; 32];
        top[7] = -f32::from_bits(0x3fff_ffff); // -1.9999999: -16384 after rounding
        quantize_input_q8_0(&top, &mut qs, &mut d);
        assert_eq!((qs[7], d[0]), (-16384, step));
        // A block of zeros stays zeros, with the smallest scale; blocks are independent.
        let mut two = [0.0f32; 64];
        two[40] = 3000.0; // exponent 11: step 2^-2
        let (mut qs, mut d) = ([0i16; 64], [0.0f32; 2]);
        quantize_input_q8_0(&two, &mut qs, &mut d);
        assert_eq!(d, [2f32.powi(-126), 0.25]);
        assert!(qs[..32].iter().all(|&q| q == 0));
        assert_eq!(qs[40], 12000);
        assert_eq!(product_input(&two, Dtype::F16).as_ref(), &two[..]);
        assert_ne!(product_input(&x, Dtype::Q8_0).as_ref(), &x[..]);
        assert!(Dtype::Q8_0.rounds_input() && !Dtype::Bf16.rounds_input());
    }

    /// On blocks of every magnitude (subnormal to 1e30): each value moves by at most half a
    /// step, the step is at most max|x| / 2^13, and the rounded values are exactly `d * q`.
    #[test]
    fn q8_0_input_rounding_error_is_bounded() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for scale in [
            1e-40f32, 1e-30, 1e-6, 1e-3, 0.37, 1.0, 17.0, 900.0, 3e4, 1e30,
        ] {
            let x: Vec<f32> = (0..32 * 64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect();
            let (mut qs, mut d) = (vec![0i16; x.len()], vec![0.0f32; x.len() / 32]);
            quantize_input_q8_0(&x, &mut qs, &mut d);
            let mut rounded = x.clone();
            round_input_q8_0(&mut rounded);
            for (b, xb) in x.chunks(32).enumerate() {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(d[b] <= amax / 8192.0 || d[b] == 2f32.powi(-126), "{scale}");
                for (i, &v) in xb.iter().enumerate() {
                    let r = rounded[b * 32 + i];
                    assert_eq!(r as f64, d[b] as f64 * qs[b * 32 + i] as f64);
                    assert!(
                        (r as f64 - v as f64).abs() <= d[b] as f64 / 2.0,
                        "{v} -> {r}"
                    );
                }
            }
        }
    }

    /// The add-and-subtract rounding is `round_ties_even` on every half step and around it in
    /// the range the input rule uses (|v| <= 2^14), and the bit-wise maximum is the maximum of
    /// |x|; the scale is the power of two the docs say.
    #[test]
    fn input_rule_helpers_match_std() {
        for i in -16384 * 8..=16384 * 8 {
            let v = i as f32 / 8.0;
            for v in [v, v + 1.0 / 16.0, -v - 1e-3] {
                assert!(round_ties_even_small(v) == v.round_ties_even(), "{v}");
            }
        }
        let block = [0.5f32, -3.25, 1e-30, -0.0, 3.0, f32::MIN_POSITIVE];
        assert_eq!(block_amax(&block), 3.25);
        assert_eq!(block_amax(&[0.0; 32]), 0.0);
        assert!(block_amax(&[1.0, f32::NAN]).is_nan());
        assert_eq!(input_scale(3.25), (2f32.powi(-12), 2f32.powi(12)));
        assert_eq!(input_scale(1.0), (2f32.powi(-13), 2f32.powi(13)));
        assert_eq!(input_scale(0.999_999_94), (2f32.powi(-14), 2f32.powi(14)));
        assert_eq!(input_scale(0.0), (2f32.powi(-126), 2f32.powi(126)));
        assert_eq!(input_scale(1e-40), input_scale(0.0));
        assert_eq!(input_scale(f32::INFINITY).0, 2f32.powi(115));
    }

    /// f16 edge values, each written out by hand from the IEEE 754 binary16 layout.
    #[test]
    fn f16_edge_values_convert_exactly() {
        let cases: [(f32, u16); 9] = [
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),        // largest finite
            (6.103_515_6e-5, 0x0400), // smallest normal, 2^-14
            (5.960_464_5e-8, 0x0001), // smallest subnormal, 2^-24
            (3.051_757_8e-5, 0x0200), // a subnormal, 2^-15
            (1.000_976_6, 0x3c01),    // 1 + 2^-10
        ];
        for (v, bits) in cases {
            let mut out = Vec::new();
            encode(&[v], 1, Dtype::F16, &mut out).unwrap();
            assert_eq!(out, bits.to_le_bytes(), "{v}");
            assert_eq!(f16_to_f32(bits).to_bits(), v.to_bits(), "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0xfc00) < 0.0);
        assert!(f16_to_f32(0x7e00).is_nan());
        // Rounding: to nearest, ties to even (1 + 2^-11 lies halfway between 1 and 1 + 2^-10).
        let mut out = Vec::new();
        encode(
            &[1.0 + 2f32.powi(-11), 2f32.powi(-25)],
            1,
            Dtype::F16,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0x00, 0x3c, 0x00, 0x00]);
    }

    #[test]
    fn bf16_edge_values_convert_exactly() {
        let cases: [(f32, u16); 5] = [
            (1.0, 0x3f80),
            (-0.0, 0x8000),
            (3.389_531_4e38, 0x7f7f),              // largest finite
            (f32::from_bits(0x0001_0000), 0x0001), // smallest subnormal, 2^-133
            (1.175_494_4e-38, 0x0080),             // smallest normal
        ];
        for (v, bits) in cases {
            let mut out = Vec::new();
            encode(&[v], 1, Dtype::Bf16, &mut out).unwrap();
            assert_eq!(out, bits.to_le_bytes(), "{v}");
            assert_eq!(bf16_to_f32(bits).to_bits(), v.to_bits());
        }
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even, down to 1.
        let mut out = Vec::new();
        encode(&[1.0 + 2f32.powi(-8)], 1, Dtype::Bf16, &mut out).unwrap();
        assert_eq!(out, 0x3f80u16.to_le_bytes());
    }

    #[test]
    fn non_finite_and_out_of_range_values_are_refused() {
        for dtype in Dtype::ALL {
            let mut values = vec![0.5f32; 32];
            values[7] = f32::NAN;
            let e = encode(&values, 32, dtype, &mut Vec::new()).unwrap_err();
            assert_eq!(e.index, 7, "{dtype}");
            values[7] = f32::NEG_INFINITY;
            assert!(encode(&values, 32, dtype, &mut Vec::new()).is_err());
        }
        let e = encode(&[1.0, 70000.0], 1, Dtype::F16, &mut Vec::new()).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.to_string().contains("f16's range"), "{e}");
        // 65519 still rounds to 65504; 65520 rounds to infinity.
        assert!(encode(&[65519.0], 1, Dtype::F16, &mut Vec::new()).is_ok());
        assert!(encode(&[65520.0], 1, Dtype::F16, &mut Vec::new()).is_err());
        assert!(encode(&[f32::MAX], 1, Dtype::Bf16, &mut Vec::new()).is_err());
        let mut big = vec![0.0f32; 32];
        big[3] = 1e8; // scale 1e8 / 127 is beyond f16
        assert!(encode(&big, 32, Dtype::Q8_0, &mut Vec::new()).is_err());
    }

    /// The q8_0 block math, computed here independently of `encode`: the scale is
    /// max|x| / 127 rounded to f16, each q is x / d rounded (halves away from zero), a value is
    /// d * q.
    #[test]
    fn q8_0_blocks_match_the_definition() {
        let block: Vec<f32> = (0..32).map(|i| (i as f32 - 12.5) * 0.037).collect();
        let mut bytes = Vec::new();
        encode(&block, 32, Dtype::Q8_0, &mut bytes).unwrap();
        assert_eq!(bytes.len(), 34);
        let amax = 18.5 * 0.037f32; // |31 - 12.5| * 0.037
        let d = half::f16::from_f32(amax / 127.0);
        assert_eq!(bytes[..2], d.to_bits().to_le_bytes());
        let inverse = 127.0 / amax;
        for (i, &x) in block.iter().enumerate() {
            let q = (x * inverse).round() as i8;
            assert_eq!(bytes[2 + i] as i8, q, "value {i}");
            assert_eq!(q8_0_value(&bytes, i), d.to_f32() * f32::from(q));
        }
        assert_eq!(bytes[2 + 31] as i8, 127);
        // The value of max |x| is 127 * d, and every value is within d / 2 of its input.
        let back = decode(&bytes, Dtype::Q8_0);
        for (x, y) in block.iter().zip(&back) {
            assert!((x - y).abs() <= d.to_f32() * 0.5 + 1e-6, "{x} -> {y}");
        }
        // An all-zero block has scale 0 and decodes to zeros.
        assert_eq!(roundtrip(&[0.0; 32], Dtype::Q8_0, 32), vec![0.0; 32]);
        // Halves round away from zero: 0.5 * d -> 1.
        let mut half_block = vec![0.0f32; 32];
        half_block[0] = 127.0;
        half_block[1] = 0.5;
        half_block[2] = -0.5;
        let back = roundtrip(&half_block, Dtype::Q8_0, 32);
        assert_eq!((back[0], back[1], back[2]), (127.0, 1.0, -1.0));
    }

    #[test]
    fn values_from_f16_or_bf16_convert_back_to_the_same_bits() {
        let bits: Vec<u16> = (0..=u16::MAX)
            .filter(|&b| f16_to_f32(b).is_finite())
            .collect();
        let values: Vec<f32> = bits.iter().map(|&b| f16_to_f32(b)).collect();
        let mut out = Vec::new();
        encode(&values, 1, Dtype::F16, &mut out).unwrap();
        let back: Vec<u16> = out
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(back, bits);
        let bits: Vec<u16> = (0..=u16::MAX)
            .filter(|&b| bf16_to_f32(b).is_finite())
            .collect();
        let values: Vec<f32> = bits.iter().map(|&b| bf16_to_f32(b)).collect();
        let mut out = Vec::new();
        encode(&values, 1, Dtype::Bf16, &mut out).unwrap();
        assert_eq!(
            out,
            bits.iter()
                .flat_map(|b| b.to_le_bytes())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn views_agree_with_decode() {
        let values: Vec<f32> = (0..64 * 3)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        for dtype in Dtype::ALL {
            let mut bytes = Vec::new();
            encode(&values, 64, dtype, &mut bytes).unwrap();
            let owned = OwnedMatrix::encode(&values, 3, 64, dtype).unwrap();
            let view = owned.matrix().values();
            assert_eq!(view.bytes(), &bytes[..]);
            let want = decode(&bytes, dtype);
            assert_eq!(view.len(), values.len());
            assert_eq!(&*view.to_f32(), &want[..], "{dtype}");
            let m = Matrix::new(view, 3, 64);
            assert_eq!(m.get(2, 33), want[2 * 64 + 33]);
            assert_eq!(m.row(1).to_f32().as_ref(), &want[64..128]);
            let lin = Linear::OutIn(m);
            assert_eq!((lin.in_features(), lin.out_features()), (64, 3));
            assert_eq!(lin.weight(33, 2), want[2 * 64 + 33]);
            assert_eq!(lin.to_f32_in_out()[33 * 3 + 2], want[2 * 64 + 33]);
        }
    }

    #[test]
    fn first_non_finite_finds_nan_and_infinity_in_every_dtype() {
        let values: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 8.0).collect();
        for dtype in Dtype::ALL {
            let mut bytes = Vec::new();
            encode(&values, 64, dtype, &mut bytes).unwrap();
            assert_eq!(first_non_finite(&bytes, dtype), None, "{dtype}");
        }
        let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>();
        let mut v = values.clone();
        v[9] = f32::NEG_INFINITY;
        let found = first_non_finite(&f32_bytes(&v), Dtype::F32).unwrap();
        assert_eq!((found.index, found.q8_0_scale), (9, false));
        assert_eq!(found.to_string(), "a non-finite value (-inf) at index 9");
        for (dtype, nan, inf) in [
            (Dtype::F16, 0x7e00u16, 0x7c00u16),
            (Dtype::Bf16, 0x7fc0, 0x7f80),
        ] {
            let mut bytes = Vec::new();
            encode(&values, 64, dtype, &mut bytes).unwrap();
            bytes[2 * 40..2 * 41].copy_from_slice(&inf.to_le_bytes());
            bytes[2 * 30..2 * 31].copy_from_slice(&nan.to_le_bytes());
            let found = first_non_finite(&bytes, dtype).unwrap();
            assert_eq!(found.index, 30, "{dtype}: the first one");
            assert!(found.value.is_nan());
            assert_eq!(found.to_string(), "a non-finite value (NaN) at index 30");
        }
        let mut bytes = Vec::new();
        encode(&values, 64, Dtype::Q8_0, &mut bytes).unwrap();
        bytes[Q8_0_BLOCK_BYTES..Q8_0_BLOCK_BYTES + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
        let found = first_non_finite(&bytes, Dtype::Q8_0).unwrap();
        assert_eq!((found.index, found.q8_0_scale), (1, true));
        assert_eq!(
            found.to_string(),
            "a non-finite scale (inf) in q8_0 block 1"
        );
    }

    #[test]
    fn transpose_is_its_own_inverse() {
        let a: Vec<u16> = (0..12).collect();
        let t = transpose(&a, 3, 4);
        assert_eq!(t, vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
        assert_eq!(transpose(&t, 4, 3), a);
    }
}
