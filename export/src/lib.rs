//! `gpt2-export`: the one writer of gpt2-bench weight files.
//!
//! Five sources, one output format (see the `gpt2-weights` crate), in any of its dtypes (f32,
//! f16, bf16, q8_0), and a second output format, llama.cpp's GGUF ([`gguf`]):
//! - a Hugging Face GPT-2 checkpoint directory ([`hf`]),
//! - a repository on the Hugging Face hub, downloaded into the standard cache first ([`hub`]),
//! - a synthetic model: random weights in the shapes of a real GPT-2 size, with GPT-2's real
//!   tokenizer, for offline work and tests ([`synthetic`], [`r50k`]),
//! - an existing gpt2-bench file, converted to another dtype ([`convert`]),
//! - a GPT-2 GGUF as llama.cpp's converter writes it, its tensors kept bit-exact
//!   ([`gguf::import`]).
//!
//! Any of them can be written as GGUF instead (`--out FILE.gguf`, [`gguf::export`]): the
//! gpt2-bench file is made first, beside the output, and then rewritten as GGUF.
//!
//! Every export streams tensors into a temporary file next to the destination and renames it into
//! place at the end, so a failed or interrupted export leaves nothing behind.

// Output goes through gpt2_process::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod convert;
pub mod error;
pub mod gguf;
pub mod golden;
pub mod hf;
pub mod hub;
pub mod inspect;
pub mod r50k;
pub mod synthetic;

use std::path::PathBuf;

pub use error::ExportError;
pub use synthetic::SyntheticSize;

/// Written into every file as its exporter, e.g. `gpt2-export 0.1.0`.
pub fn exporter_id() -> String {
    format!("gpt2-export {}", env!("CARGO_PKG_VERSION"))
}

/// A progress bar over the tensors of an export, showing `message`, and the callback the
/// exporters take (`&|done, total| ...`) to advance it: `bar.on_tensor()`.
pub fn tensor_progress(quiet: bool, message: &str) -> TensorProgress {
    let bar =
        gpt2_process::progress_bar(quiet, "{msg} [{bar:30}] {pos}/{len} tensors ({elapsed})", 0);
    bar.set_message(message.to_string());
    TensorProgress(bar)
}

/// See [`tensor_progress`].
pub struct TensorProgress(pub indicatif::ProgressBar);

impl TensorProgress {
    /// The exporters' progress callback: `done` of `total` tensors written.
    pub fn on_tensor(&self) -> impl Fn(usize, usize) + '_ {
        |done, total| {
            self.0.set_length(total as u64);
            self.0.set_position(done as u64);
        }
    }
}

/// Where exported files go by default: `$GPT2_BENCH_WEIGHTS_DIR`, else `weights/` under the
/// current directory (the `weights/` crate directory when run from the repository root, where
/// `*.bin` is git-ignored).
pub fn weights_dir() -> PathBuf {
    std::env::var_os("GPT2_BENCH_WEIGHTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weights"))
}

/// Where an export of `source` in `dtype` goes when no `--out` is given:
/// `weights/<name>.bin` for f32 and `weights/<name>-<dtype>.bin` otherwise, with the name taken
/// from the hub repo (`openai-community/gpt2` -> `gpt2`), the directory, or a weight or GGUF file
/// (whose own dtype suffix is replaced: `gpt2-f16.bin` to q8_0 is `gpt2-q8_0.bin`). With no
/// dtype (a file keeping its own), the file's name with `.bin`.
pub fn default_out_for_source(source: &str, dtype: Option<gpt2_weights::Dtype>) -> PathBuf {
    let path = std::path::Path::new(source.trim_end_matches('/'));
    let mut name = if path.is_file() {
        path.file_stem()
    } else {
        path.file_name()
    }
    .map(|n| n.to_string_lossy().into_owned())
    .unwrap_or_else(|| "model".into());
    let Some(dtype) = dtype else {
        return weights_dir().join(format!("{name}.bin"));
    };
    for d in gpt2_weights::Dtype::ALL {
        if let Some(stem) = name.strip_suffix(&format!("-{}", d.name())) {
            name = stem.to_string();
        }
    }
    weights_dir().join(dtype_file_name(&name, dtype))
}

/// `<name>.bin` for f32, `<name>-<dtype>.bin` otherwise.
pub fn dtype_file_name(name: &str, dtype: gpt2_weights::Dtype) -> String {
    match dtype {
        gpt2_weights::Dtype::F32 => format!("{name}.bin"),
        other => format!("{name}-{}.bin", other.name()),
    }
}

/// Whether `out` asks for a GGUF: its extension is `.gguf` (any case).
pub fn wants_gguf(out: &std::path::Path) -> bool {
    out.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Whether the file at `path` starts with GGUF's magic (unreadable or short: no).
pub fn is_gguf_file(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    gpt2_weights::input::open_regular(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == gguf::MAGIC
}

/// Exports from a directory, a hub repo id, a gpt2-bench file or a GGUF file, whichever
/// `source` is, with the model's matrices in `dtype`: for a directory or repo f32 when `None`,
/// for a file its own dtypes (every tensor copied as it is).
pub fn export_from(
    source: &str,
    revision: Option<&str>,
    dtype: Option<gpt2_weights::Dtype>,
    out: &std::path::Path,
    quiet: bool,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    let path = std::path::Path::new(source);
    let checkpoint_dtype = dtype.unwrap_or(gpt2_weights::Dtype::F32);
    if path.is_dir() {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        hf::export_dir(
            path,
            out,
            &format!("dir:{}", abs.display()),
            checkpoint_dtype,
            progress,
        )
    } else if path.is_file() && is_gguf_file(path) {
        gguf::import::import_file(path, dtype, out, progress)
    } else if path.is_file() {
        convert::convert_file(path, dtype, out, progress)
    } else if hub::looks_like_repo_id(source) {
        let dir = hub::fetch(source, revision, quiet)?;
        let recorded = match revision {
            Some(rev) => format!("hf-hub:{source}@{rev}"),
            None => format!("hf-hub:{source}"),
        };
        hf::export_dir(&dir, out, &recorded, checkpoint_dtype, progress)
    } else {
        Err(ExportError::Checkpoint {
            path: path.to_path_buf(),
            message: "no such file or directory, and not a hub repo id like \
                      openai-community/gpt2"
                .into(),
        })
    }
}

/// Writes a GGUF at `out` from the gpt2-bench file `export` makes: `export` is given a path in
/// a hidden temporary directory beside `out` (removed afterwards, and on a signal), so nothing
/// but the finished GGUF ever appears at `out`.
pub fn export_as_gguf(
    out: &std::path::Path,
    export: impl FnOnce(&std::path::Path) -> Result<PathBuf, ExportError>,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    let dir = gpt2_weights::write::TempDir::new_in(gpt2_weights::write::parent_dir(out)).map_err(
        |source| ExportError::Io {
            path: out.to_path_buf(),
            source,
        },
    )?;
    let bin = export(&dir.path().join("model.bin"))?;
    let file = gpt2_weights::WeightFile::open(&bin)?;
    gguf::export::write_gguf(&file, out, progress)
}
