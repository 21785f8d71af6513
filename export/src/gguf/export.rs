//! A gpt2-bench file -> a GPT-2 GGUF that llama.cpp loads and runs.
//!
//! It writes what llama.cpp's `convert_hf_to_gguf.py` writes for GPT-2: the `general.*`,
//! `gpt2.*` and `tokenizer.ggml.*` keys (tokens with their types, merges, the end-of-text id as
//! bos, eos and unknown), llama.cpp's tensor names, no `output.weight` when the output is tied.
//! Every tensor keeps its dtype and its bytes (an f32 linear weight is transposed into ggml's
//! `[out, in]`), so `llama-bench -m FILE.gguf` runs exactly the weights gpt2-bench ran, and
//! importing the GGUF again gives back the same tensors and tokenizer, byte for byte.

use std::io::Write;
use std::path::{Path, PathBuf};

use gpt2_weights::write::{PartialFile, check_output, parent_dir};
use gpt2_weights::{Dtype, Role, WeightFile};

use super::import::{gguf_name, gguf_shape};
use super::{GgufWriter, file_type};
use crate::error::ExportError;

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
/// ggml's quantization version, which llama.cpp's converter writes into every file.
const QUANTIZATION_VERSION: u32 = 2;

/// Writes `file` as a GGUF at `out` (through a temporary file renamed into place); returns the
/// path written. The source's data checksum is verified first, and that it can run
/// ([`WeightFile::check_runnable`]: a tokenizer that builds, no NaN or infinite weight).
pub fn write_gguf(
    file: &WeightFile,
    out: &Path,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    let write_err = |message: String| {
        ExportError::Weights(gpt2_weights::WeightsError::Write {
            path: out.to_path_buf(),
            message,
        })
    };
    let io = |source| ExportError::Io {
        path: out.to_path_buf(),
        source,
    };
    file.verify_checksum()?;
    // A GGUF is a copy of the file's bytes, so nothing on the way would catch a NaN weight or a
    // tokenizer that cannot be built: checked here, before anything is written, naming `file`.
    file.check_runnable()?;
    if out.is_dir() {
        return Err(write_err(
            "is a directory; give a file name such as weights/gpt2.gguf".into(),
        ));
    }
    check_output(out, &[file.path()]).map_err(&write_err)?;

    let header = file.header();
    let config = header.config;
    let tokenizer = &header.tokenizer;
    let specs = config.expected_tensors();
    let dtypes: Vec<Dtype> = header.tensors.iter().map(|t| t.dtype).collect();
    // The file's kind as llama.cpp names it: q8_0 if any matrix is (some may have stayed f16),
    // else the dtype of the linear weights.
    let main_dtype = if dtypes.contains(&Dtype::Q8_0) {
        Dtype::Q8_0
    } else {
        specs
            .iter()
            .zip(&dtypes)
            .find(|(s, _)| s.role == Role::Linear)
            .map_or(Dtype::F32, |(_, &d)| d)
    };

    let mut w = GgufWriter::default();
    w.add_string("general.architecture", "gpt2");
    w.add_string("general.type", "model");
    w.add_string("general.name", &header.provenance.model_name);
    w.add_string(
        "general.description",
        &format!(
            "written by {} from {}",
            crate::exporter_id(),
            header.provenance.source
        ),
    );
    w.add_u32("gpt2.block_count", config.n_layer);
    w.add_u32("gpt2.context_length", config.n_ctx);
    w.add_u32("gpt2.embedding_length", config.n_embd);
    w.add_u32("gpt2.feed_forward_length", config.mlp_hidden);
    w.add_u32("gpt2.attention.head_count", config.n_head);
    w.add_f32("gpt2.attention.layer_norm_epsilon", config.layer_norm_eps);
    w.add_u32("general.file_type", file_type(main_dtype));
    w.add_u32("general.quantization_version", QUANTIZATION_VERSION);
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", "gpt-2");
    w.add_strings("tokenizer.ggml.tokens", &tokenizer.tokens);
    let types: Vec<i32> = (0..tokenizer.tokens.len())
        .map(|id| {
            if id == tokenizer.eot_id as usize {
                TOKEN_CONTROL
            } else {
                TOKEN_NORMAL
            }
        })
        .collect();
    w.add_i32s("tokenizer.ggml.token_type", &types);
    let merges: Vec<String> = tokenizer
        .merges
        .iter()
        .map(|(a, b)| format!("{a} {b}"))
        .collect();
    w.add_strings("tokenizer.ggml.merges", &merges);
    for key in ["bos", "eos", "unknown"] {
        w.add_u32(&format!("tokenizer.ggml.{key}_token_id"), tokenizer.eot_id);
    }
    for (spec, &dtype) in specs.iter().zip(&dtypes) {
        w.add_tensor(&gguf_name(&spec.name), &gguf_shape(spec), dtype)
            .map_err(|e| write_err(format!("tensor {}: {e}", spec.name)))?;
    }

    let mut tmp = PartialFile::new_in(parent_dir(out), ".gpt2-export-").map_err(io)?;
    let f = tmp.file_mut();
    f.write_all(&w.header()).map_err(io)?;
    for (i, (spec, &dtype)) in specs.iter().zip(&dtypes).enumerate() {
        let (bytes, _) = file.raw(&spec.name)?;
        let transposed;
        let bytes = if spec.role == Role::Linear && dtype == Dtype::F32 {
            // f32 is stored [in, out] (Conv1D); ggml wants [out, in]: move the values, as bytes.
            let (rows, cols) = (spec.shape[0] as usize, spec.shape[1] as usize);
            let words: Vec<[u8; 4]> = bytes
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect();
            transposed = gpt2_weights::dtype::transpose(&words, rows, cols).concat();
            &transposed[..]
        } else {
            bytes
        };
        f.write_all(bytes).map_err(io)?;
        f.write_all(&vec![0u8; GgufWriter::padding_after(bytes.len() as u64)])
            .map_err(io)?;
        progress(i + 1, specs.len());
    }
    tmp.persist(out, &[file.path()]).map_err(io)?;
    Ok(out.to_path_buf())
}
