//! The gpt2-bench weight format: one self-contained, memory-mappable file per GPT-2 model.
//!
//! Every backend reads its weights from this format and from nothing else, so a comparison between
//! backends compares arithmetic, never loaders. The exporter (`gpt2-export`) is the only writer.
//!
//! # Layout (format version 2; version 1 is the same with every tensor f32, and still opens)
//!
//! All integers are little-endian. A `str` is a `u32` byte length followed by that many bytes of
//! UTF-8. Offsets are in bytes.
//!
//! **Preamble** (64 bytes at offset 0):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | `[u8; 8]` | magic `GPT2BNCH` |
//! | 8 | `u32` | format version (2; 1 in files from before reduced precision) |
//! | 12 | `u32` | reserved, 0 |
//! | 16 | `u64` | `header_len`: length of the header block that starts at offset 64 |
//! | 24 | `u64` | `data_offset`: start of the tensor data, a multiple of 64, ≥ 64 + `header_len` |
//! | 32 | `u64` | `data_len`: length of the tensor data section |
//! | 40 | `u64` | `file_len`: total file length, = `data_offset + data_len` (catches truncation) |
//! | 48 | `u64` | XXH3-64 of the data section (`data_offset..file_len`, padding included) |
//! | 56 | `u64` | XXH3-64 of the header block (`64..64 + header_len`) |
//!
//! **Header block** (at offset 64, `header_len` bytes), in this order:
//!
//! 1. Config: `u32` n_layer, `u32` n_head, `u32` n_embd, `u32` vocab_size, `u32` n_ctx,
//!    `u32` mlp_hidden (`n_inner`), `f32` layer_norm_eps, `u32` flags (bit 0: the output layer is
//!    tied to `wte.weight`; other bits must be 0).
//! 2. Provenance: `str` model name, `str` source (hub repo, directory, or synthetic recipe),
//!    `str` exporter name and version.
//! 3. Tokenizer: `u32` end-of-text id; `u32` token count (= vocab_size), then each token's `str`
//!    in id order, spelled in GPT-2's byte-level alphabet as in `encoder.json`; `u32` merge count,
//!    then each merge as two `str`s, rank 0 first, as in `vocab.bpe`.
//! 4. Tensor table: `u32` count, then per tensor: `str` name, `u32` dtype (0 = f32, 1 = f16,
//!    2 = bf16, 3 = q8_0), `u32` rank, rank × `u64` dimensions (as stored, see below), `u64`
//!    offset from `data_offset` (a multiple of 64), `u64` byte length.
//!
//! Then zero padding up to `data_offset`, then the tensors in table order, each starting on a
//! 64-byte boundary (zero padding between them), stored row-major.
//!
//! **Tensors.** Exactly those of [`Config::expected_tensors`], in that order: `wte.weight` (V, C),
//! `wpe.weight` (n_ctx, C), per block `h.{i}.ln_1.{weight,bias}` (C),
//! `h.{i}.attn.c_attn.{weight (C, 3C), bias (3C)}`, `h.{i}.attn.c_proj.{weight (C, C), bias}`,
//! `h.{i}.ln_2.*`, `h.{i}.mlp.c_fc.{weight (C, H), bias (H)}`, `h.{i}.mlp.c_proj.{weight (H, C),
//! bias (C)}`, then `ln_f.{weight,bias}`, and `lm_head.weight` (V, C) only if the output is untied.
//!
//! **Dtypes** ([`dtype`] defines each exactly). The matrices that carry the bytes, namely the four
//! linear weights of each block, `wte.weight` and an untied `lm_head.weight`, may each be f32,
//! f16, bf16 or q8_0 (llama.cpp's blocks: 32 values along a row share an f16 scale, 34 bytes);
//! norms, biases and `wpe.weight` are always f32. An exporter asked for q8_0 keeps a matrix
//! whose rows are not whole 32-value blocks in f16 (as llama.cpp's converter does), so one file
//! may mix dtypes; each tensor's own dtype is in the table.
//!
//! **Linear-weight layout: `[in, out]` in f32, `[out, in]` in the other dtypes.** In f32 (and
//! in version 1) a linear weight (`y = x @ W + b`) is stored `[in, out]`, the Conv1D layout of
//! Hugging Face GPT-2 checkpoints: row `i` holds input feature `i`'s contribution to every
//! output, and a matrix-vector product streams it row by row. In f16, bf16 and q8_0 it is stored
//! `[out, in]`: row `o` is output `o`'s dot product, so q8_0 blocks run along the dot product,
//! as in ggml/GGUF (whose q8_0 tensors then import without requantizing). Either way the fused
//! QKV weight's 3C outputs are Q (0..C), then K (C..2C), then V (2C..3C); within each, head `h`
//! owns outputs `h*D..(h+1)*D` (D = C / n_head). The output layer is `wte.weight` used
//! transposed (`logits = x @ wte^T`, one dot product of length C per vocabulary entry), in
//! every dtype.
//!
//! # Reading
//! [`WeightFile::open`] memory-maps the file and validates everything but the data checksum:
//! magic, version, lengths (against the real file size, with overflow checks), header checksum,
//! config, tokenizer tables, and that the tensor table is exactly what the config implies.
//! Counts in the header are checked against the bytes that remain before anything is allocated,
//! so a lying header cannot make the reader allocate more than the file's size.
//! Every q8_0 block's scale is checked to be finite when the file opens (the only value check a
//! reader can not leave to the data checksum: a file written by another tool may carry an
//! infinite scale with a matching checksum).
//! [`WeightFile::gpt2`] then hands out zero-copy views: `&[f32]` for the f32 tensors,
//! [`Matrix`] and [`Linear`] (in the tensor's dtype and layout) for the matrices.

// Output goes through gpt2_process::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod dtype;
pub mod error;
pub mod file;
pub mod format;
pub mod hint;
pub mod input;
pub mod tokenizer;
pub mod write;

pub use dtype::{Dtype, KvDtype, Linear, Matrix, Values};
pub use error::{FormatError, Result, WeightsError};
pub use file::{Gpt2Weights, LayerWeights, WeightFile};
pub use format::{Config, Header, Provenance, Role, TensorInfo, TensorSpec};
pub use tokenizer::{Gpt2Tokenizer, StreamDecoder, TokenizerData};
pub use write::WeightWriter;
