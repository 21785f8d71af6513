//! GGUF, llama.cpp's model file: a reader and a writer for the part of it GPT-2 uses.
//!
//! Why our own and not candle's `gguf_file` (candle-core 0.11.1, read for this): candle does
//! check counts and lengths against the file before allocating, but it keeps the last of two
//! equal keys or tensor names (this import must refuse them), divides by `general.alignment`
//! unchecked (0 is a panic), names no tensor when a type is unknown, and copies every tensor
//! into its own storage, where this import copies bytes straight from a memory map. This reader
//! is a pure function of a byte slice, like `gpt2_weights::format`: every count is checked
//! against the bytes left before anything is allocated, every tensor against the data section
//! (inside it, aligned, overlapping no other), and it is fuzzed (`tests/fuzz_gguf.rs`).
//!
//! The layout (GGUF versions 2 and 3; version 1, of 2023, used 32-bit counts and is refused),
//! all little-endian:
//!
//! ```text
//! "GGUF"  u32 version  u64 tensor_count  u64 metadata_count
//! metadata_count x { string key, u32 value_type, value }
//! tensor_count   x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//! padding to general.alignment (default 32)
//! tensor data: each tensor at data_start + offset (a multiple of the alignment)
//! ```
//!
//! A string is a u64 length and UTF-8 bytes; an array a u32 element type, a u64 count and the
//! elements. `ne[0]` is the fastest-moving dimension (a row's length), so a tensor PyTorch calls
//! `[out, in]` has `ne = [in, out]`, and q8_0 blocks run along `ne[0]`, the dot product.
//!
//! [`import`] turns a GPT-2 GGUF into a gpt2-bench file and [`export`] the reverse.

pub mod export;
pub mod import;

use std::collections::HashSet;

use gpt2_weights::Dtype;

/// First four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version [`GgufWriter`] writes; [`parse`] reads 2 and 3 (same layout; 3 added
/// big-endian files, which are refused).
pub const VERSION: u32 = 3;
/// Tensor alignment when the file has no `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Bounds far above any GPT-2 GGUF (its longest string is a merge of a few dozen bytes, its
/// longest array the 50 257 tokens), so that a corrupt header is refused before it is believed.
const MAX_STRING_LEN: u64 = 1 << 24;
const MAX_ARRAY_LEN: u64 = 1 << 24;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// ggml's type ids for the tensor types gpt2-bench reads and writes.
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_Q8_0: u32 = 8;
const GGML_BF16: u32 = 30;

/// The ggml type id of `dtype` (gpt2-bench's dtypes are all ggml types, with the same bytes).
pub fn ggml_type(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => GGML_F32,
        Dtype::F16 => GGML_F16,
        Dtype::Q8_0 => GGML_Q8_0,
        Dtype::Bf16 => GGML_BF16,
    }
}

/// The dtype of ggml type `id`, or its name (or number) for an error.
pub fn dtype_of_ggml_type(id: u32) -> Result<Dtype, String> {
    Ok(match id {
        GGML_F32 => Dtype::F32,
        GGML_F16 => Dtype::F16,
        GGML_Q8_0 => Dtype::Q8_0,
        GGML_BF16 => Dtype::Bf16,
        other => {
            const NAMES: [&str; 40] = [
                "F32",
                "F16",
                "Q4_0",
                "Q4_1",
                "Q4_2",
                "Q4_3",
                "Q5_0",
                "Q5_1",
                "Q8_0",
                "Q8_1",
                "Q2_K",
                "Q3_K",
                "Q4_K",
                "Q5_K",
                "Q6_K",
                "Q8_K",
                "IQ2_XXS",
                "IQ2_XS",
                "IQ3_XXS",
                "IQ1_S",
                "IQ4_NL",
                "IQ3_S",
                "IQ2_S",
                "IQ4_XS",
                "I8",
                "I16",
                "I32",
                "I64",
                "F64",
                "IQ1_M",
                "BF16",
                "Q4_0_4_4",
                "Q4_0_4_8",
                "Q4_0_8_8",
                "TQ1_0",
                "TQ2_0",
                "IQ4_NL_4_4",
                "IQ4_NL_4_8",
                "IQ4_NL_8_8",
                "MXFP4",
            ];
            return Err(match NAMES.get(other as usize) {
                Some(name) => format!("{name} (ggml type {other})"),
                None => format!("unknown ggml type {other}"),
            });
        }
    })
}

/// The `general.file_type` llama.cpp writes for a model whose matrices are mostly `dtype`.
pub fn file_type(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => 0,
        Dtype::F16 => 1,
        Dtype::Q8_0 => 7,
        Dtype::Bf16 => 32,
    }
}

// GGUF metadata value types.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// Bytes of one value of a fixed-size metadata type.
fn fixed_size(value_type: u32) -> Option<u64> {
    Some(match value_type {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 => 8,
        _ => return None,
    })
}

/// One metadata value, borrowing from the file's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Any integer type, widened (GGUF writers differ in the width they pick for a count).
    Int(i128),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    Strings(Vec<&'a str>),
    /// An array of a fixed-size type: the element type and the raw little-endian elements
    /// (kept as bytes: nothing is allocated per element for an array no reader here uses).
    Numbers {
        value_type: u32,
        count: u64,
        bytes: &'a [u8],
    },
}

impl Value<'_> {
    /// What kind of value this is, for errors ("expected a string, found an array").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::F32(_) | Value::F64(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Str(_) => "a string",
            Value::Strings(_) => "an array of strings",
            Value::Numbers { .. } => "an array of numbers",
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry<'a> {
    pub name: &'a str,
    /// ggml order: `ne[0]` is a row's length.
    pub ne: Vec<u64>,
    pub dtype: Dtype,
    /// From the start of the data section.
    pub offset: u64,
    pub byte_len: u64,
}

impl TensorEntry<'_> {
    /// The shape in row-major (PyTorch) order: `ne` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.ne.iter().rev().copied().collect()
    }
}

/// A parsed GGUF header, borrowing from the file's bytes.
#[derive(Debug, Clone)]
pub struct Gguf<'a> {
    pub version: u32,
    pub alignment: u64,
    /// In file order; keys are unique.
    pub metadata: Vec<(&'a str, Value<'a>)>,
    /// In file order; names are unique; each lies inside the data section, none overlap.
    pub tensors: Vec<TensorEntry<'a>>,
    /// Where tensor data starts in the file.
    pub data_offset: u64,
}

impl<'a> Gguf<'a> {
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry<'a>> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of `tensor` in `file` (the slice [`parse`] was given).
    pub fn data<'f>(&self, file: &'f [u8], tensor: &TensorEntry<'_>) -> &'f [u8] {
        // parse() checked that every tensor lies inside the file.
        let start = (self.data_offset + tensor.offset) as usize;
        &file[start..start + tensor.byte_len as usize]
    }
}

/// A bounds-checked little-endian reader: a read past the end is an error naming what was being
/// read, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "{} needs {n} bytes at offset {} but the file ends {} bytes later (truncated or \
                 corrupt)",
                what(),
                self.pos,
                self.left()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<&'a str, String> {
        let len = self.u64(what)?;
        if len > MAX_STRING_LEN {
            return Err(format!(
                "{} claims a string of {len} bytes (more than {MAX_STRING_LEN}; corrupt)",
                what()
            ));
        }
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8", what()))
    }

    fn value(&mut self, value_type: u32, what: &dyn Fn() -> String) -> Result<Value<'a>, String> {
        let fixed = |r: &mut Self, n| -> Result<&'a [u8], String> { r.take(n, what) };
        Ok(match value_type {
            T_STRING => Value::Str(self.string(what)?),
            T_ARRAY => {
                let elem = self.u32(what)?;
                let count = self.u64(what)?;
                if count > MAX_ARRAY_LEN {
                    return Err(format!(
                        "{} claims an array of {count} elements (more than {MAX_ARRAY_LEN}; \
                         corrupt)",
                        what()
                    ));
                }
                if elem == T_STRING {
                    // Each string is at least its 8-byte length: a count the file cannot hold
                    // is refused before anything is reserved.
                    if count > self.left() / 8 {
                        return Err(format!(
                            "{} claims {count} strings but only {} bytes are left (truncated or \
                             corrupt)",
                            what(),
                            self.left()
                        ));
                    }
                    let mut items = Vec::with_capacity(count as usize);
                    for i in 0..count {
                        items.push(self.string(&|| format!("{} element {i}", what()))?);
                    }
                    Value::Strings(items)
                } else if let Some(size) = fixed_size(elem) {
                    let bytes = self.take(count * size, what)?;
                    Value::Numbers {
                        value_type: elem,
                        count,
                        bytes,
                    }
                } else if elem == T_ARRAY {
                    return Err(format!(
                        "{} is an array of arrays, which no GPT-2 GGUF has",
                        what()
                    ));
                } else {
                    return Err(format!(
                        "{} is an array of unknown value type {elem}",
                        what()
                    ));
                }
            }
            T_U8 => Value::Int(fixed(self, 1)?[0].into()),
            T_I8 => Value::Int((fixed(self, 1)?[0] as i8).into()),
            T_U16 => Value::Int(
                u16::from_le_bytes(fixed(self, 2)?.try_into().unwrap_or_default()).into(),
            ),
            T_I16 => Value::Int(
                i16::from_le_bytes(fixed(self, 2)?.try_into().unwrap_or_default()).into(),
            ),
            T_U32 => Value::Int(self.u32(what)?.into()),
            T_I32 => Value::Int((self.u32(what)? as i32).into()),
            T_U64 => Value::Int(self.u64(what)?.into()),
            T_I64 => Value::Int((self.u64(what)? as i64).into()),
            T_F32 => Value::F32(f32::from_bits(self.u32(what)?)),
            T_F64 => Value::F64(f64::from_bits(self.u64(what)?)),
            T_BOOL => match fixed(self, 1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("{} is a boolean stored as {b}", what())),
            },
            other => return Err(format!("{} has unknown value type {other}", what())),
        })
    }
}

/// Parses the header of the GGUF file `bytes` (the whole file) and checks its tensor table
/// against the file: each tensor's type is one gpt2-bench reads (else the tensor and its type
/// are named), its size follows from its shape and type, it is aligned, inside the file, and
/// overlaps no other. The message of an error is one sentence, without the path.
pub fn parse(bytes: &[u8]) -> Result<Gguf<'_>, String> {
    let mut r = Reader { bytes, pos: 0 };
    let magic = r.take(4, &|| "the magic".into())?;
    if magic != MAGIC {
        return Err("not a GGUF file (the first 4 bytes are not \"GGUF\")".into());
    }
    let version = r.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(
                "GGUF version 1 (2023) is not supported; convert the checkpoint again \
                        with a current llama.cpp (convert_hf_to_gguf.py)"
                    .into(),
            );
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(
                "a big-endian GGUF file; gpt2-bench reads little-endian GGUF (what \
                        llama.cpp's converter writes by default)"
                    .into(),
            );
        }
        v => {
            return Err(format!(
                "unsupported GGUF version {v} (this build reads versions 2 and 3)"
            ));
        }
    }
    let tensor_count = r.u64(&|| "the tensor count".into())?;
    let kv_count = r.u64(&|| "the metadata count".into())?;
    // The smallest metadata entry is 13 bytes (empty key, type, one byte), the smallest tensor
    // entry 24 (empty name, no dimensions, type, offset): counts the file cannot hold are
    // refused before anything is reserved for them.
    if kv_count > r.left() / 13 {
        return Err(format!(
            "the header claims {kv_count} metadata entries, more than the file's {} bytes can \
             hold (truncated or corrupt)",
            bytes.len()
        ));
    }
    if tensor_count > r.left() / 24 {
        return Err(format!(
            "the header claims {tensor_count} tensors, more than the file's {} bytes can hold \
             (truncated or corrupt)",
            bytes.len()
        ));
    }

    let mut metadata: Vec<(&str, Value)> = Vec::with_capacity(kv_count as usize);
    let mut keys = HashSet::new();
    for i in 0..kv_count {
        let key = r.string(&|| format!("metadata entry {i}'s key"))?;
        if !keys.insert(key) {
            return Err(format!(
                "metadata key {:?} appears twice",
                gpt2_weights::input::printable(key)
            ));
        }
        let what = || format!("metadata {:?}", gpt2_weights::input::printable(key));
        let value_type = r.u32(&what)?;
        let value = r.value(value_type, &what)?;
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| *k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::Int(a))) if *a > 0 && *a <= 1 << 16 && (*a as u64).is_power_of_two() => {
            *a as u64
        }
        Some((_, v)) => {
            return Err(format!(
                "general.alignment must be a power of two up to 65536, found {v:?}"
            ));
        }
    };

    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut names = HashSet::new();
    for i in 0..tensor_count {
        let name = r.string(&|| format!("tensor entry {i}'s name"))?;
        let shown = gpt2_weights::input::printable(name);
        if !names.insert(name) {
            return Err(format!("tensor {shown:?} appears twice"));
        }
        let what = || format!("tensor {shown:?}");
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {shown:?} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64(&what)?;
            if d == 0 || d > 1 << 40 {
                return Err(format!("tensor {shown:?} has a dimension of {d}"));
            }
            ne.push(d);
        }
        let type_id = r.u32(&what)?;
        let dtype = dtype_of_ggml_type(type_id).map_err(|t| {
            format!(
                "tensor {shown:?} is {t}; gpt2-bench reads F32, F16, BF16 and Q8_0 tensors: \
                 convert the checkpoint with llama.cpp's convert_hf_to_gguf.py --outtype f32, \
                 f16, bf16 or q8_0"
            )
        })?;
        let offset = r.u64(&what)?;
        let rows = ne[1..]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor {shown:?}: its size overflows"))?;
        let byte_len = dtype
            .byte_len(rows, ne[0])
            .map_err(|e| format!("tensor {shown:?} ({dtype}, ne {ne:?}): {e}"))?;
        if offset % alignment != 0 {
            return Err(format!(
                "tensor {shown:?} starts at offset {offset}, not a multiple of the alignment \
                 {alignment}"
            ));
        }
        tensors.push(TensorEntry {
            name,
            ne,
            dtype,
            offset,
            byte_len,
        });
    }

    let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (bytes.len() as u64).saturating_sub(data_offset);
    let mut by_offset: Vec<&TensorEntry> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for (i, t) in by_offset.iter().enumerate() {
        let end = t.offset.saturating_add(t.byte_len);
        if end > data_len {
            return Err(format!(
                "tensor {:?} ends at byte {} of the data section, which has {data_len} \
                 (truncated or corrupt)",
                gpt2_weights::input::printable(t.name),
                end
            ));
        }
        if let Some(next) = by_offset.get(i + 1)
            && end > next.offset
        {
            return Err(format!(
                "tensors {:?} and {:?} overlap (corrupt)",
                gpt2_weights::input::printable(t.name),
                gpt2_weights::input::printable(next.name)
            ));
        }
    }
    Ok(Gguf {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}

/// Builds a GGUF header: metadata, then tensor entries, each tensor placed at the next aligned
/// offset. [`GgufWriter::header`] gives the bytes; the tensors' bytes follow in the order they
/// were added, each padded to the alignment ([`GgufWriter::padding_after`]).
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<u8>,
    metadata_count: u64,
    tensors: Vec<u8>,
    tensor_count: u64,
    data_len: u64,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn align(n: u64) -> u64 {
    n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
}

impl GgufWriter {
    fn key(&mut self, key: &str, value_type: u32) {
        put_string(&mut self.metadata, key);
        put_u32(&mut self.metadata, value_type);
        self.metadata_count += 1;
    }

    pub fn add_u32(&mut self, key: &str, v: u32) {
        self.key(key, T_U32);
        put_u32(&mut self.metadata, v);
    }

    pub fn add_f32(&mut self, key: &str, v: f32) {
        self.key(key, T_F32);
        put_u32(&mut self.metadata, v.to_bits());
    }

    pub fn add_string(&mut self, key: &str, v: &str) {
        self.key(key, T_STRING);
        put_string(&mut self.metadata, v);
    }

    pub fn add_strings<S: AsRef<str>>(&mut self, key: &str, items: &[S]) {
        self.key(key, T_ARRAY);
        put_u32(&mut self.metadata, T_STRING);
        put_u64(&mut self.metadata, items.len() as u64);
        for s in items {
            put_string(&mut self.metadata, s.as_ref());
        }
    }

    pub fn add_i32s(&mut self, key: &str, items: &[i32]) {
        self.key(key, T_ARRAY);
        put_u32(&mut self.metadata, T_I32);
        put_u64(&mut self.metadata, items.len() as u64);
        for &v in items {
            put_u32(&mut self.metadata, v as u32);
        }
    }

    /// Adds a tensor of row-major `shape` in `dtype` (written as ggml's `ne`, reversed); its
    /// bytes are the next in the data section. Returns its byte length.
    pub fn add_tensor(&mut self, name: &str, shape: &[u64], dtype: Dtype) -> Result<u64, String> {
        let (&row_len, outer) = shape.split_last().ok_or("a tensor needs a shape")?;
        let rows = outer.iter().product();
        let byte_len = dtype.byte_len(rows, row_len)?;
        put_string(&mut self.tensors, name);
        put_u32(&mut self.tensors, shape.len() as u32);
        for &d in shape.iter().rev() {
            put_u64(&mut self.tensors, d);
        }
        put_u32(&mut self.tensors, ggml_type(dtype));
        put_u64(&mut self.tensors, self.data_len);
        self.tensor_count += 1;
        self.data_len = align(self.data_len + byte_len);
        Ok(byte_len)
    }

    /// Everything before the data section, padded to the alignment.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.metadata.len() + self.tensors.len());
        out.extend_from_slice(&MAGIC);
        put_u32(&mut out, VERSION);
        put_u64(&mut out, self.tensor_count);
        put_u64(&mut out, self.metadata_count);
        out.extend_from_slice(&self.metadata);
        out.extend_from_slice(&self.tensors);
        out.resize(align(out.len() as u64) as usize, 0);
        out
    }

    /// Zero bytes to write after a tensor of `byte_len` bytes.
    pub fn padding_after(byte_len: u64) -> usize {
        (align(byte_len) - byte_len) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_tensor_file() -> Vec<u8> {
        let mut w = GgufWriter::default();
        w.add_string("general.architecture", "gpt2");
        w.add_u32("gpt2.block_count", 1);
        w.add_f32("gpt2.attention.layer_norm_epsilon", 1e-5);
        w.add_strings("tokenizer.ggml.tokens", &["a", "Ġb"]);
        w.add_i32s("tokenizer.ggml.token_type", &[1, 3]);
        let a = w.add_tensor("a", &[3], Dtype::F32).unwrap();
        let b = w.add_tensor("b", &[2, 32], Dtype::Q8_0).unwrap();
        let mut file = w.header();
        file.extend(std::iter::repeat_n(1u8, a as usize));
        file.extend(vec![0; GgufWriter::padding_after(a)]);
        file.extend(std::iter::repeat_n(2u8, b as usize));
        file.extend(vec![0; GgufWriter::padding_after(b)]);
        file
    }

    #[test]
    fn what_the_writer_writes_parses_back() {
        let file = two_tensor_file();
        let g = parse(&file).unwrap();
        assert_eq!((g.version, g.alignment), (3, 32));
        assert_eq!(g.get("general.architecture"), Some(&Value::Str("gpt2")));
        assert_eq!(g.get("gpt2.block_count"), Some(&Value::Int(1)));
        assert_eq!(
            g.get("gpt2.attention.layer_norm_epsilon"),
            Some(&Value::F32(1e-5))
        );
        assert_eq!(
            g.get("tokenizer.ggml.tokens"),
            Some(&Value::Strings(vec!["a", "Ġb"]))
        );
        let b = g.tensor("b").unwrap();
        assert_eq!(
            (b.ne.clone(), b.dtype, b.byte_len),
            (vec![32, 2], Dtype::Q8_0, 68)
        );
        assert_eq!(b.shape(), vec![2, 32]);
        assert_eq!(b.offset, 32);
        assert!(g.data(&file, b).iter().all(|&x| x == 2));
        assert_eq!(g.data_offset % 32, 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let file = two_tensor_file();
        for len in 0..file.len() - GgufWriter::padding_after(68) {
            assert!(parse(&file[..len]).is_err(), "length {len} parsed");
        }
    }

    #[test]
    fn an_alignment_of_zero_or_not_a_power_of_two_is_refused() {
        for (alignment, ok) in [(0, false), (3, false), (1 << 20, false), (32, true)] {
            let mut w = GgufWriter::default();
            w.add_u32("general.alignment", alignment);
            w.add_tensor("a", &[8], Dtype::F32).unwrap();
            let mut file = w.header();
            file.extend([0u8; 32]);
            let parsed = parse(&file);
            assert_eq!(parsed.is_ok(), ok, "alignment {alignment}: {parsed:?}");
            if !ok {
                assert!(parsed.unwrap_err().contains("general.alignment"));
            }
        }
    }

    #[test]
    fn unsupported_versions_and_types_are_named() {
        let mut file = two_tensor_file();
        file[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(parse(&file).unwrap_err().contains("version 1"));
        file[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(parse(&file).unwrap_err().contains("big-endian"));
        assert!(dtype_of_ggml_type(12).unwrap_err().contains("Q4_K"));
        assert!(dtype_of_ggml_type(999).unwrap_err().contains("999"));
        for d in Dtype::ALL {
            assert_eq!(dtype_of_ggml_type(ggml_type(d)), Ok(d));
        }
    }
}
