//! The on-disk layout, and a parser/encoder that works on plain byte slices.
//!
//! Everything here is a pure function of bytes: no I/O, no mmap. That keeps the parser easy to test
//! and to fuzz, and lets the writer and the reader share one definition of every field.
//! The layout itself is documented field by field in the crate docs (`lib.rs`).

use crate::error::FormatError;
use crate::tokenizer::TokenizerData;

/// First 8 bytes of every weight file.
pub const MAGIC: [u8; 8] = *b"GPT2BNCH";
/// The format version this build writes. Version 2 added the f16, bf16 and q8_0 dtypes; it
/// reads versions 1 and 2 (a version-1 file is all f32).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Size of the fixed preamble that precedes the variable-length header.
pub const PREAMBLE_LEN: usize = 64;
/// Every tensor, and the data section itself, starts on a multiple of this many bytes,
/// so that `&[f32]` views are aligned for any SIMD load (AVX-512 included).
pub const TENSOR_ALIGN: u64 = 64;

/// Upper bounds on config fields. They are far above any GPT-2 (xl: 48 layers, 1600 wide) and
/// exist so that a corrupt header is rejected before anyone multiplies its numbers together.
pub const MAX_N_LAYER: u32 = 1024;
pub const MAX_N_EMBD: u32 = 1 << 16;
pub const MAX_VOCAB: u32 = 1 << 24;
pub const MAX_N_CTX: u32 = 1 << 20;

/// Flag bit in [`Config`]: the output layer reuses `wte.weight` (GPT-2's weight tying).
const FLAG_TIED_OUTPUT: u32 = 1;

pub use crate::dtype::Dtype;

/// The hyper-parameters of a GPT-2 model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Number of transformer blocks.
    pub n_layer: u32,
    /// Number of attention heads; `n_embd / n_head` is the head size.
    pub n_head: u32,
    /// Width of the residual stream (C).
    pub n_embd: u32,
    /// Number of token ids (50257 for every GPT-2).
    pub vocab_size: u32,
    /// Context length: the number of learned position embeddings (1024 for GPT-2).
    pub n_ctx: u32,
    /// Width of the MLP's hidden layer (`n_inner`, 4 * n_embd for every GPT-2).
    pub mlp_hidden: u32,
    /// Epsilon added to the variance in every layer norm (1e-5).
    pub layer_norm_eps: f32,
    /// Whether the output layer is `wte.weight` (true for GPT-2) or a separate `lm_head.weight`.
    pub tied_output: bool,
}

impl Config {
    /// Checks the relations every backend relies on; the message says which one failed.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |m: String| Err(FormatError::InvalidConfig(m));
        for (name, value, max) in [
            ("n_layer", self.n_layer, MAX_N_LAYER),
            ("n_head", self.n_head, MAX_N_EMBD),
            ("n_embd", self.n_embd, MAX_N_EMBD),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("n_ctx", self.n_ctx, MAX_N_CTX),
            ("mlp_hidden", self.mlp_hidden, 4 * MAX_N_EMBD),
        ] {
            if value == 0 {
                return bad(format!("{name} is 0"));
            }
            if value > max {
                return bad(format!("{name} = {value} exceeds the limit {max}"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) is not divisible by n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(format!(
                "layer_norm_eps must be a positive number, got {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        (self.n_embd / self.n_head) as usize
    }

    /// Every tensor a model with this config has, in file order, with its logical shape and
    /// its role (which dtypes it may take and how it is laid out in each).
    ///
    /// Logical shapes: linear weights are `[in, out]` (row `i` holds the weights from input
    /// feature `i` to every output), the Conv1D layout of Hugging Face GPT-2 checkpoints:
    /// `y = x @ W + b`. The token embedding `wte.weight` is `[vocab, n_embd]`; as the output
    /// layer it is used transposed (`logits = x @ wte^T`), and so is an untied `lm_head.weight`.
    /// How each is stored depends on its dtype: [`TensorSpec::stored_shape`].
    pub fn expected_tensors(&self) -> Vec<TensorSpec> {
        let c = u64::from(self.n_embd);
        let v = u64::from(self.vocab_size);
        let h = u64::from(self.mlp_hidden);
        let spec = |name: String, shape: Vec<u64>, role| TensorSpec { name, shape, role };
        let mut t = vec![
            spec("wte.weight".into(), vec![v, c], Role::Embedding),
            spec(
                "wpe.weight".into(),
                vec![u64::from(self.n_ctx), c],
                Role::F32Only,
            ),
        ];
        for l in 0..self.n_layer {
            let p = format!("h.{l}.");
            let vector = |s: &str, n| spec(format!("{p}{s}"), vec![n], Role::F32Only);
            let linear = |s: &str, i, o| spec(format!("{p}{s}"), vec![i, o], Role::Linear);
            t.extend([
                vector("ln_1.weight", c),
                vector("ln_1.bias", c),
                linear("attn.c_attn.weight", c, 3 * c),
                vector("attn.c_attn.bias", 3 * c),
                linear("attn.c_proj.weight", c, c),
                vector("attn.c_proj.bias", c),
                vector("ln_2.weight", c),
                vector("ln_2.bias", c),
                linear("mlp.c_fc.weight", c, h),
                vector("mlp.c_fc.bias", h),
                linear("mlp.c_proj.weight", h, c),
                vector("mlp.c_proj.bias", c),
            ]);
        }
        t.push(spec("ln_f.weight".into(), vec![c], Role::F32Only));
        t.push(spec("ln_f.bias".into(), vec![c], Role::F32Only));
        if !self.tied_output {
            t.push(spec("lm_head.weight".into(), vec![v, c], Role::Embedding));
        }
        t
    }

    /// The dtype of every tensor of [`Config::expected_tensors`] in a file of `dtype`: the
    /// matrices that carry the bytes (the four linear weights of each block, the token embedding
    /// and an untied output layer) take it, everything else (norms, biases, `wpe`) stays f32.
    /// A q8_0 matrix whose rows are not a whole number of 32-value blocks is f16 instead, as
    /// llama.cpp's converter does (no GPT-2 size has one; odd test shapes may).
    pub fn tensor_dtypes(&self, dtype: Dtype) -> Vec<Dtype> {
        self.expected_tensors()
            .iter()
            .map(|spec| match spec.role {
                Role::F32Only => Dtype::F32,
                _ if spec.stored_row_len(dtype) % dtype.block_len() as u64 != 0 => Dtype::F16,
                _ => dtype,
            })
            .collect()
    }

    /// How many tensors [`Config::expected_tensors`] lists, without building the list.
    pub fn expected_tensor_count(&self) -> usize {
        4 + 12 * self.n_layer as usize + usize::from(!self.tied_output)
    }

    /// Number of parameters, counting a tied output layer once (as Hugging Face does).
    pub fn parameter_count(&self) -> u64 {
        self.expected_tensors()
            .iter()
            .map(|spec| spec.shape.iter().product::<u64>())
            .sum()
    }
}

/// What a tensor is for, which decides the dtypes it may take and its stored layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A linear layer's weight, logical shape `[in, out]`. Stored `[in, out]` in f32 (version
    /// 1's layout, Hugging Face's Conv1D) and `[out, in]` in every other dtype, so that each row
    /// is one output's dot product and q8_0 blocks run along it (ggml's layout: a GGUF q8_0
    /// weight is imported without requantizing).
    Linear,
    /// `wte` or an untied `lm_head`, `[vocab, n_embd]` in every dtype: a row is one token's
    /// embedding and one output logit's dot product.
    Embedding,
    /// Norms, biases and `wpe`: always f32 (few bytes, read once per token or less).
    F32Only,
}

/// One tensor of a model: its name, logical shape and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// The logical shape (see [`Config::expected_tensors`]).
    pub shape: Vec<u64>,
    pub role: Role,
}

impl TensorSpec {
    /// Whether this tensor may be stored in `dtype`.
    pub fn allows(&self, dtype: Dtype) -> bool {
        dtype == Dtype::F32 || self.role != Role::F32Only
    }

    /// Whether a `dtype` tensor of this spec is stored transposed (`[out, in]`).
    pub fn transposed(&self, dtype: Dtype) -> bool {
        self.role == Role::Linear && dtype != Dtype::F32
    }

    /// The shape as stored in `dtype` (see [`Role`]).
    pub fn stored_shape(&self, dtype: Dtype) -> Vec<u64> {
        let mut shape = self.shape.clone();
        if self.transposed(dtype) {
            shape.reverse();
        }
        shape
    }

    /// Length of one stored row in `dtype` (the last stored dimension).
    pub fn stored_row_len(&self, dtype: Dtype) -> u64 {
        self.stored_shape(dtype).last().copied().unwrap_or(1)
    }

    /// Bytes of this tensor stored in `dtype`, or why it cannot be.
    pub fn byte_len(&self, dtype: Dtype) -> Result<u64, String> {
        let shape = self.stored_shape(dtype);
        let row_len = shape.last().copied().unwrap_or(1);
        let rows = shape[..shape.len().saturating_sub(1)]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| "size overflows".to_string())?;
        dtype.byte_len(rows, row_len)
    }
}

/// Where a file came from. Free text, shown by `inspect` and carried into benchmark results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    /// Short model name, e.g. `gpt2`, `distilgpt2`, `synthetic-gpt2`.
    pub model_name: String,
    /// The input: `hf-hub:openai-community/gpt2`, `dir:/path/to/checkpoint`, `synthetic:gpt2 seed=0`.
    pub source: String,
    /// Name and version of the program that wrote the file, e.g. `gpt2-export 0.1.0`.
    pub exporter: String,
}

/// One row of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    /// The shape as stored, which for a linear weight depends on the dtype
    /// ([`TensorSpec::stored_shape`]).
    pub shape: Vec<u64>,
    /// Byte offset from the start of the data section; a multiple of [`TENSOR_ALIGN`].
    pub offset: u64,
    /// Length in bytes, as the shape and dtype imply ([`Dtype::byte_len`]).
    pub byte_len: u64,
}

/// The fixed 64-byte preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    pub version: u32,
    pub header_len: u64,
    pub data_offset: u64,
    pub data_len: u64,
    pub file_len: u64,
    pub data_checksum: u64,
    pub header_checksum: u64,
}

/// Everything in a file but the tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub preamble: Preamble,
    pub config: Config,
    pub provenance: Provenance,
    pub tokenizer: TokenizerData,
    pub tensors: Vec<TensorInfo>,
}

/// XXH3-64, the checksum of both the header block and the data section.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Rounds `n` up to a multiple of [`TENSOR_ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(TENSOR_ALIGN) * TENSOR_ALIGN
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A bounds-checked little-endian reader. Every read that would run past the end is an error,
/// never a panic, and counts are checked against the bytes left before anything is allocated.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(FormatError::Corrupt(format!(
                "header ends in the middle of {what} (at byte {} of {})",
                self.pos,
                self.bytes.len()
            ))),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn f32(&mut self, what: &str) -> Result<f32, FormatError> {
        Ok(f32::from_bits(self.u32(what)?))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, FormatError> {
        let len = self.u32(what)? as usize;
        let b = self.take(len, what)?;
        std::str::from_utf8(b).map_err(|_| FormatError::Corrupt(format!("{what} is not UTF-8")))
    }

    /// Reads a count of items that each take at least `min_item_bytes`, rejecting counts that
    /// the remaining bytes cannot hold (so a lying count cannot trigger a huge allocation).
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, FormatError> {
        let n = self.u32(what)? as usize;
        let left = self.bytes.len() - self.pos;
        if n.saturating_mul(min_item_bytes) > left {
            return Err(FormatError::Corrupt(format!(
                "{what} = {n} cannot fit in the {left} header bytes left"
            )));
        }
        Ok(n)
    }
}

/// Parses the 64-byte preamble and checks it against the real file length.
pub fn parse_preamble(bytes: &[u8], actual_file_len: u64) -> Result<Preamble, FormatError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(if bytes.starts_with(b"GGUF") {
            FormatError::Gguf
        } else {
            FormatError::BadMagic
        });
    }
    if bytes.len() < PREAMBLE_LEN {
        return Err(FormatError::Truncated {
            expected: PREAMBLE_LEN as u64,
            actual: actual_file_len,
        });
    }
    let mut r = Reader {
        bytes: &bytes[..PREAMBLE_LEN],
        pos: MAGIC.len(),
    };
    let version = r.u32("version")?;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let _reserved = r.u32("reserved")?;
    let p = Preamble {
        version,
        header_len: r.u64("header_len")?,
        data_offset: r.u64("data_offset")?,
        data_len: r.u64("data_len")?,
        file_len: r.u64("file_len")?,
        data_checksum: r.u64("data_checksum")?,
        header_checksum: r.u64("header_checksum")?,
    };
    let header_end = (PREAMBLE_LEN as u64).checked_add(p.header_len);
    let data_end = p.data_offset.checked_add(p.data_len);
    match (header_end, data_end) {
        (Some(he), Some(de)) if he <= p.data_offset && de == p.file_len => {}
        _ => {
            return Err(FormatError::Corrupt(format!(
                "inconsistent section sizes (header {} bytes, data at {} for {} bytes, file {} bytes)",
                p.header_len, p.data_offset, p.data_len, p.file_len
            )));
        }
    }
    if !p.data_offset.is_multiple_of(TENSOR_ALIGN) {
        return Err(FormatError::Corrupt(format!(
            "data section offset {} is not a multiple of {TENSOR_ALIGN}",
            p.data_offset
        )));
    }
    if actual_file_len < p.file_len {
        return Err(FormatError::Truncated {
            expected: p.file_len,
            actual: actual_file_len,
        });
    }
    if actual_file_len > p.file_len {
        return Err(FormatError::LengthMismatch {
            expected: p.file_len,
            actual: actual_file_len,
        });
    }
    Ok(p)
}

/// Parses and validates a whole header from the start of a file.
///
/// `bytes` must hold at least the preamble and header block (a whole mmapped file is fine);
/// `actual_file_len` is the length of the file on disk. Checks the header checksum, the config,
/// the tokenizer tables, and that the tensor table is exactly the tensors the config implies,
/// each in bounds and aligned. Does not read the tensor data (see [`verify_data_checksum`]).
pub fn parse_header(bytes: &[u8], actual_file_len: u64) -> Result<Header, FormatError> {
    let preamble = parse_preamble(bytes, actual_file_len)?;
    let header_end = PREAMBLE_LEN as u64 + preamble.header_len;
    if (bytes.len() as u64) < header_end {
        return Err(FormatError::Truncated {
            expected: header_end,
            actual: bytes.len() as u64,
        });
    }
    let block = &bytes[PREAMBLE_LEN..header_end as usize];
    let computed = checksum(block);
    if computed != preamble.header_checksum {
        return Err(FormatError::ChecksumMismatch {
            region: "header",
            stored: preamble.header_checksum,
            computed,
        });
    }
    let mut r = Reader {
        bytes: block,
        pos: 0,
    };

    let config = Config {
        n_layer: r.u32("n_layer")?,
        n_head: r.u32("n_head")?,
        n_embd: r.u32("n_embd")?,
        vocab_size: r.u32("vocab_size")?,
        n_ctx: r.u32("n_ctx")?,
        mlp_hidden: r.u32("mlp_hidden")?,
        layer_norm_eps: r.f32("layer_norm_eps")?,
        tied_output: {
            let flags = r.u32("flags")?;
            if flags & !FLAG_TIED_OUTPUT != 0 {
                return Err(FormatError::Corrupt(format!(
                    "unknown config flags {flags:#x}"
                )));
            }
            flags & FLAG_TIED_OUTPUT != 0
        },
    };
    config.validate()?;

    let provenance = Provenance {
        model_name: r.str("model name")?.to_string(),
        source: r.str("source")?.to_string(),
        exporter: r.str("exporter")?.to_string(),
    };

    let eot_id = r.u32("end-of-text id")?;
    let n_tokens = r.count("token count", 4)?;
    // Checked before allocating: a count that disagrees with the config is refused outright.
    if n_tokens != config.vocab_size as usize {
        return Err(FormatError::InvalidConfig(format!(
            "the tokenizer has {n_tokens} tokens but vocab_size is {}",
            config.vocab_size
        )));
    }
    let mut tokens = Vec::with_capacity(n_tokens);
    for _ in 0..n_tokens {
        tokens.push(r.str("token")?.to_string());
    }
    let n_merges = r.count("merge count", 8)?;
    let mut merges = Vec::with_capacity(n_merges);
    for _ in 0..n_merges {
        let a = r.str("merge")?.to_string();
        let b = r.str("merge")?.to_string();
        merges.push((a, b));
    }
    let tokenizer = TokenizerData {
        tokens,
        merges,
        eot_id,
    };
    if tokenizer.tokens.len() != config.vocab_size as usize {
        return Err(FormatError::InvalidConfig(format!(
            "the tokenizer has {} tokens but vocab_size is {}",
            tokenizer.tokens.len(),
            config.vocab_size
        )));
    }
    if eot_id >= config.vocab_size {
        return Err(FormatError::InvalidConfig(format!(
            "end-of-text id {eot_id} is outside the vocabulary of {}",
            config.vocab_size
        )));
    }

    // Smallest tensor entry: empty name (4) + dtype (4) + rank (4) + offset (8) + length (8).
    let n_tensors = r.count("tensor count", 28)?;
    let mut tensors = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.str("tensor name")?.to_string();
        let code = r.u32("dtype")?;
        let dtype = Dtype::from_code(code).ok_or_else(|| {
            FormatError::Corrupt(format!(
                "tensor {} has unknown dtype code {code}",
                crate::input::printable(&name)
            ))
        })?;
        let rank = r.count("tensor rank", 8)?;
        if rank > 8 {
            return Err(FormatError::Corrupt(format!(
                "tensor {} has rank {rank}",
                crate::input::printable(&name)
            )));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.u64("tensor dimension")?);
        }
        let offset = r.u64("tensor offset")?;
        let byte_len = r.u64("tensor length")?;
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            offset,
            byte_len,
        });
    }
    if r.pos != block.len() {
        return Err(FormatError::Corrupt(format!(
            "{} unexpected bytes after the tensor table",
            block.len() - r.pos
        )));
    }
    check_tensor_table(&config, &tensors, preamble.data_len, preamble.version)?;

    Ok(Header {
        preamble,
        config,
        provenance,
        tokenizer,
        tensors,
    })
}

/// The table must list exactly the tensors of [`Config::expected_tensors`], in that order, each
/// in a dtype its role allows (only f32 in a version-1 file), with the shape that dtype is stored
/// in and the length it implies, aligned, inside the data section and not overlapping.
fn check_tensor_table(
    config: &Config,
    tensors: &[TensorInfo],
    data_len: u64,
    version: u32,
) -> Result<(), FormatError> {
    // Counted before the list is built: the list's size comes from n_layer, a number in the
    // file, while the table's size is bounded by the bytes actually there.
    if tensors.len() != config.expected_tensor_count() {
        return Err(FormatError::Corrupt(format!(
            "the tensor table has {} entries but this config needs {}",
            tensors.len(),
            config.expected_tensor_count()
        )));
    }
    let expected = config.expected_tensors();
    let mut next_free = 0u64;
    for (t, spec) in tensors.iter().zip(&expected) {
        let name = &spec.name;
        if &t.name != name {
            return Err(FormatError::Corrupt(format!(
                "expected tensor {name}, found {}",
                crate::input::printable(&t.name)
            )));
        }
        if !spec.allows(t.dtype) || (version < 2 && t.dtype != Dtype::F32) {
            return Err(FormatError::Corrupt(format!(
                "tensor {name} is {}, which {} not allowed",
                t.dtype,
                if version < 2 {
                    "a version-1 file is"
                } else {
                    "this tensor is"
                }
            )));
        }
        let shape = spec.stored_shape(t.dtype);
        if t.shape != shape {
            return Err(FormatError::Corrupt(format!(
                "tensor {name} ({}) has shape {:?}, the config implies {:?}",
                t.dtype, t.shape, shape
            )));
        }
        let want_len = spec
            .byte_len(t.dtype)
            .map_err(|e| FormatError::Corrupt(format!("tensor {name}: {e}")))?;
        if t.byte_len != want_len {
            return Err(FormatError::Corrupt(format!(
                "tensor {name} is {} bytes, its shape needs {want_len}",
                t.byte_len
            )));
        }
        if t.offset % TENSOR_ALIGN != 0 || t.offset < next_free {
            return Err(FormatError::Corrupt(format!(
                "tensor {name} at offset {} is misaligned or overlaps the previous tensor",
                t.offset
            )));
        }
        let end = t.offset.checked_add(t.byte_len).filter(|&e| e <= data_len);
        next_free = end.ok_or_else(|| {
            FormatError::Corrupt(format!(
                "tensor {name} (offset {}, {} bytes) runs past the data section ({data_len} bytes)",
                t.offset, t.byte_len
            ))
        })?;
    }
    Ok(())
}

/// Checks the stored checksum of the data section against its bytes.
pub fn verify_data_checksum(preamble: &Preamble, data: &[u8]) -> Result<(), FormatError> {
    let computed = checksum(data);
    if computed != preamble.data_checksum {
        return Err(FormatError::ChecksumMismatch {
            region: "tensor data",
            stored: preamble.data_checksum,
            computed,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Lays out the tensor table for `config` with each tensor in the dtype `dtypes` gives it (one
/// per tensor of [`Config::expected_tensors`], e.g. from [`Config::tensor_dtypes`]), packed in
/// file order with each start rounded up to [`TENSOR_ALIGN`]. Returns the table and the data
/// section's length, or why a tensor cannot take its dtype.
pub fn plan_tensors(
    config: &Config,
    dtypes: &[Dtype],
) -> Result<(Vec<TensorInfo>, u64), FormatError> {
    let specs = config.expected_tensors();
    if dtypes.len() != specs.len() {
        return Err(FormatError::InvalidConfig(format!(
            "{} tensor dtypes given for {} tensors",
            dtypes.len(),
            specs.len()
        )));
    }
    let mut offset = 0u64;
    let mut table = Vec::new();
    for (spec, &dtype) in specs.into_iter().zip(dtypes) {
        if !spec.allows(dtype) {
            return Err(FormatError::InvalidConfig(format!(
                "tensor {} must be f32, not {dtype}",
                spec.name
            )));
        }
        offset = align_up(offset);
        let byte_len = spec
            .byte_len(dtype)
            .map_err(|e| FormatError::InvalidConfig(format!("tensor {}: {e}", spec.name)))?;
        table.push(TensorInfo {
            shape: spec.stored_shape(dtype),
            name: spec.name,
            dtype,
            offset,
            byte_len,
        });
        offset += byte_len;
    }
    Ok((table, offset))
}

/// Encodes the variable-length header block (everything between the preamble and the data).
pub fn encode_header_block(
    config: &Config,
    provenance: &Provenance,
    tokenizer: &TokenizerData,
    tensors: &[TensorInfo],
) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [
        config.n_layer,
        config.n_head,
        config.n_embd,
        config.vocab_size,
        config.n_ctx,
        config.mlp_hidden,
    ] {
        put_u32(&mut out, v);
    }
    put_u32(&mut out, config.layer_norm_eps.to_bits());
    put_u32(
        &mut out,
        if config.tied_output {
            FLAG_TIED_OUTPUT
        } else {
            0
        },
    );
    put_str(&mut out, &provenance.model_name);
    put_str(&mut out, &provenance.source);
    put_str(&mut out, &provenance.exporter);
    put_u32(&mut out, tokenizer.eot_id);
    put_u32(&mut out, tokenizer.tokens.len() as u32);
    for t in &tokenizer.tokens {
        put_str(&mut out, t);
    }
    put_u32(&mut out, tokenizer.merges.len() as u32);
    for (a, b) in &tokenizer.merges {
        put_str(&mut out, a);
        put_str(&mut out, b);
    }
    put_u32(&mut out, tensors.len() as u32);
    for t in tensors {
        put_str(&mut out, &t.name);
        put_u32(&mut out, t.dtype.code());
        put_u32(&mut out, t.shape.len() as u32);
        for &d in &t.shape {
            put_u64(&mut out, d);
        }
        put_u64(&mut out, t.offset);
        put_u64(&mut out, t.byte_len);
    }
    out
}

/// Encodes the 64-byte preamble.
pub fn encode_preamble(p: &Preamble) -> [u8; PREAMBLE_LEN] {
    let mut out = Vec::with_capacity(PREAMBLE_LEN);
    out.extend_from_slice(&MAGIC);
    put_u32(&mut out, p.version);
    put_u32(&mut out, 0);
    for v in [
        p.header_len,
        p.data_offset,
        p.data_len,
        p.file_len,
        p.data_checksum,
        p.header_checksum,
    ] {
        put_u64(&mut out, v);
    }
    let mut a = [0u8; PREAMBLE_LEN];
    a.copy_from_slice(&out);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> Config {
        Config {
            n_layer: 2,
            n_head: 3,
            n_embd: 12,
            vocab_size: 5,
            n_ctx: 8,
            mlp_hidden: 48,
            layer_norm_eps: 1e-5,
            tied_output: true,
        }
    }

    fn tiny_tokenizer() -> TokenizerData {
        TokenizerData {
            tokens: ["a", "b", "c", "ab", "<|endoftext|>"]
                .map(String::from)
                .to_vec(),
            merges: vec![("a".into(), "b".into())],
            eot_id: 4,
        }
    }

    /// Builds the bytes of a whole file (header + zeroed data) for `config`.
    fn file_bytes(config: &Config) -> Vec<u8> {
        file_bytes_in(config, &config.tensor_dtypes(Dtype::F32), FORMAT_VERSION)
    }

    /// [`file_bytes`] with each tensor in the dtype `dtypes` gives it, as format `version`.
    fn file_bytes_in(config: &Config, dtypes: &[Dtype], version: u32) -> Vec<u8> {
        let (tensors, data_len) = plan_tensors(config, dtypes).unwrap();
        let block =
            encode_header_block(config, &Provenance::default(), &tiny_tokenizer(), &tensors);
        let data_offset = align_up((PREAMBLE_LEN + block.len()) as u64);
        let data = vec![0u8; data_len as usize];
        let p = Preamble {
            version,
            header_len: block.len() as u64,
            data_offset,
            data_len,
            file_len: data_offset + data_len,
            data_checksum: checksum(&data),
            header_checksum: checksum(&block),
        };
        let mut out = encode_preamble(&p).to_vec();
        out.extend_from_slice(&block);
        out.resize(data_offset as usize, 0);
        out.extend_from_slice(&data);
        out
    }

    /// Rewrites the header checksum after a test edits the header block on purpose, so that the
    /// test reaches the check it is aimed at instead of stopping at the checksum.
    fn reseal(bytes: &mut [u8]) {
        let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let sum = checksum(&bytes[PREAMBLE_LEN..PREAMBLE_LEN + header_len]);
        bytes[56..64].copy_from_slice(&sum.to_le_bytes());
    }

    #[test]
    fn round_trip() {
        let bytes = file_bytes(&tiny_config());
        let h = parse_header(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(h.config, tiny_config());
        assert_eq!(h.tokenizer, tiny_tokenizer());
        assert_eq!(h.tensors.len(), 2 + 12 * 2 + 2);
        assert!(h.tensors.iter().all(|t| t.offset % TENSOR_ALIGN == 0));
        let data = &bytes[h.preamble.data_offset as usize..];
        verify_data_checksum(&h.preamble, data).unwrap();
    }

    /// A 32-wide config: every matrix is whole q8_0 blocks.
    fn wide_config() -> Config {
        Config {
            n_embd: 32,
            n_head: 4,
            mlp_hidden: 64,
            ..tiny_config()
        }
    }

    /// The byte offset of tensor `index`'s dtype code in a file made by `file_bytes_in`.
    fn dtype_code_at(bytes: &[u8], index: usize) -> usize {
        let h = parse_header(bytes, bytes.len() as u64).unwrap();
        let entry = |t: &TensorInfo| 4 + t.name.len() + 4 + 4 + 8 * t.shape.len() + 16;
        // The table ends the header block.
        let table_len: usize = h.tensors.iter().map(entry).sum();
        let mut at = PREAMBLE_LEN + h.preamble.header_len as usize - table_len;
        for t in &h.tensors[..index] {
            at += entry(t);
        }
        at + 4 + h.tensors[index].name.len()
    }

    #[test]
    fn reduced_precision_tables_round_trip_and_version_1_still_opens() {
        let c = wide_config();
        for dtype in Dtype::ALL {
            let bytes = file_bytes_in(&c, &c.tensor_dtypes(dtype), FORMAT_VERSION);
            let h = parse_header(&bytes, bytes.len() as u64).unwrap();
            for (t, spec) in h.tensors.iter().zip(c.expected_tensors()) {
                let want = if spec.role == Role::F32Only {
                    Dtype::F32
                } else {
                    dtype
                };
                assert_eq!(t.dtype, want, "{}", t.name);
                assert_eq!(t.shape, spec.stored_shape(want));
            }
            let qkv = &h.tensors[4];
            assert_eq!(qkv.name, "h.0.attn.c_attn.weight");
            let want_shape = if dtype == Dtype::F32 {
                [32, 96]
            } else {
                [96, 32]
            };
            assert_eq!(qkv.shape, want_shape);
        }
        // A version-1 file (all f32) opens; a version-1 file with an f16 tensor does not.
        let v1 = file_bytes_in(&c, &c.tensor_dtypes(Dtype::F32), 1);
        assert_eq!(
            parse_header(&v1, v1.len() as u64).unwrap().preamble.version,
            1
        );
        let v1 = file_bytes_in(&c, &c.tensor_dtypes(Dtype::F16), 1);
        let err = parse_header(&v1, v1.len() as u64).unwrap_err().to_string();
        assert!(
            err.contains("wte.weight is f16") && err.contains("version-1"),
            "{err}"
        );
    }

    #[test]
    fn unknown_dtype_codes_and_partial_blocks_are_refused() {
        let c = tiny_config();
        let with_code = |index: usize, code: u32| {
            let mut bytes = file_bytes(&c);
            let at = dtype_code_at(&bytes, index);
            bytes[at..at + 4].copy_from_slice(&code.to_le_bytes());
            reseal(&mut bytes);
            parse_header(&bytes, bytes.len() as u64)
                .unwrap_err()
                .to_string()
        };
        let err = with_code(0, 9);
        assert!(err.contains("wte.weight has unknown dtype code 9"), "{err}");
        // wte as q8_0 with rows of 12 values: not whole 32-value blocks.
        let err = with_code(0, Dtype::Q8_0.code());
        assert!(
            err.contains("wte.weight") && err.contains("whole number of 32-value blocks"),
            "{err}"
        );
        // A norm may not be reduced.
        let err = with_code(2, Dtype::F16.code());
        assert!(err.contains("h.0.ln_1.weight is f16"), "{err}");
        // The writer's plan refuses the same.
        let mut dtypes = c.tensor_dtypes(Dtype::F32);
        dtypes[0] = Dtype::Q8_0;
        assert!(plan_tensors(&c, &dtypes).is_err());
        dtypes[0] = Dtype::F32;
        dtypes[2] = Dtype::Bf16;
        let err = plan_tensors(&c, &dtypes).unwrap_err().to_string();
        assert!(err.contains("must be f32"), "{err}");
    }

    #[test]
    fn q8_0_falls_back_to_f16_for_rows_that_are_not_whole_blocks() {
        let c = Config {
            mlp_hidden: 48, // c_proj's rows are 48 values: 1.5 blocks
            ..wide_config()
        };
        let dtypes = c.tensor_dtypes(Dtype::Q8_0);
        let names: Vec<String> = c.expected_tensors().into_iter().map(|s| s.name).collect();
        let of = |n: &str| dtypes[names.iter().position(|x| x == n).unwrap()];
        assert_eq!(of("wte.weight"), Dtype::Q8_0);
        assert_eq!(of("h.0.mlp.c_fc.weight"), Dtype::Q8_0);
        assert_eq!(of("h.0.mlp.c_proj.weight"), Dtype::F16);
        assert_eq!(of("h.0.mlp.c_proj.bias"), Dtype::F32);
    }

    #[test]
    fn every_prefix_is_rejected_without_panic() {
        let bytes = file_bytes(&tiny_config());
        for n in 0..bytes.len() {
            assert!(parse_header(&bytes[..n], n as u64).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let mut bytes = file_bytes(&tiny_config());
        bytes[0] = b'X';
        assert_eq!(
            parse_header(&bytes, bytes.len() as u64),
            Err(FormatError::BadMagic)
        );
        bytes[..4].copy_from_slice(b"GGUF");
        assert_eq!(
            parse_header(&bytes, bytes.len() as u64),
            Err(FormatError::Gguf)
        );
        let mut bytes = file_bytes(&tiny_config());
        bytes[8] = 9;
        assert!(matches!(
            parse_header(&bytes, bytes.len() as u64),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn truncation_is_named() {
        let bytes = file_bytes(&tiny_config());
        let cut = &bytes[..bytes.len() - 10];
        assert!(matches!(
            parse_header(cut, cut.len() as u64),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn header_corruption_is_caught_by_checksum() {
        let mut bytes = file_bytes(&tiny_config());
        bytes[PREAMBLE_LEN + 100] ^= 1;
        assert!(matches!(
            parse_header(&bytes, bytes.len() as u64),
            Err(FormatError::ChecksumMismatch {
                region: "header",
                ..
            })
        ));
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let mut bytes = file_bytes(&tiny_config());
        // data_len = u64::MAX: data_offset + data_len overflows.
        bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse_header(&bytes, bytes.len() as u64),
            Err(FormatError::Corrupt(_))
        ));
        // A header that claims to be longer than the file.
        let mut bytes = file_bytes(&tiny_config());
        bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(parse_header(&bytes, bytes.len() as u64).is_err());
    }

    #[test]
    fn lying_token_count_does_not_allocate() {
        let mut bytes = file_bytes(&tiny_config());
        // The token count sits after config (32 bytes), 3 empty strings (12) and eot_id (4).
        let at = PREAMBLE_LEN + 32 + 12 + 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bytes);
        let err = parse_header(&bytes, bytes.len() as u64).unwrap_err();
        assert!(err.to_string().contains("cannot fit"), "{err}");
    }

    #[test]
    fn config_errors() {
        let mut c = tiny_config();
        c.n_head = 5;
        assert!(c.validate().unwrap_err().to_string().contains("divisible"));
        let mut c = tiny_config();
        c.n_layer = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("n_layer is 0")
        );
        let mut c = tiny_config();
        c.layer_norm_eps = f32::NAN;
        assert!(c.validate().is_err());
        let mut c = tiny_config();
        c.n_embd = u32::MAX;
        assert!(c.validate().unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn zero_dimension_in_header_is_rejected() {
        let mut bytes = file_bytes(&tiny_config());
        bytes[PREAMBLE_LEN + 8..PREAMBLE_LEN + 12].copy_from_slice(&0u32.to_le_bytes());
        reseal(&mut bytes);
        let err = parse_header(&bytes, bytes.len() as u64).unwrap_err();
        assert_eq!(err, FormatError::InvalidConfig("n_embd is 0".into()));
    }

    #[test]
    fn untied_output_adds_lm_head() {
        let mut c = tiny_config();
        c.tied_output = false;
        let names: Vec<_> = c.expected_tensors().into_iter().map(|s| s.name).collect();
        assert_eq!(names.last().unwrap(), "lm_head.weight");
        let bytes = file_bytes(&c);
        assert!(
            !parse_header(&bytes, bytes.len() as u64)
                .unwrap()
                .config
                .tied_output
        );
    }

    #[test]
    fn expected_tensor_count_matches_the_list() {
        for tied in [true, false] {
            let c = Config {
                tied_output: tied,
                ..tiny_config()
            };
            assert_eq!(c.expected_tensor_count(), c.expected_tensors().len());
        }
    }

    #[test]
    fn gpt2_small_parameter_count() {
        let c = Config {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            vocab_size: 50257,
            n_ctx: 1024,
            mlp_hidden: 3072,
            layer_norm_eps: 1e-5,
            tied_output: true,
        };
        // Hugging Face reports 124,439,808 parameters for gpt2.
        assert_eq!(c.parameter_count(), 124_439_808);
    }
}
