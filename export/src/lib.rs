//! `gpt2-export`: the one writer of gpt2-bench weight files.
//!
//! Four sources, one output format (see the `gpt2-weights` crate), in any of its dtypes (f32,
//! f16, bf16, q8_0):
//! - a Hugging Face GPT-2 checkpoint directory ([`hf`]),
//! - a repository on the Hugging Face hub, downloaded into the standard cache first ([`hub`]),
//! - a synthetic model: random weights in the shapes of a real GPT-2 size, with GPT-2's real
//!   tokenizer, for offline work and tests ([`synthetic`], [`r50k`]),
//! - an existing gpt2-bench file, converted to another dtype ([`convert`]).
//!
//! Every export streams tensors into a temporary file next to the destination and renames it into
//! place at the end, so a failed or interrupted export leaves nothing behind.

// Output goes through gpt2_export::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod convert;
pub mod error;
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

/// A progress bar on stderr in `template` (indicatif syntax), hidden with `quiet` or when
/// stderr is not a terminal (piped, redirected, CI). Shared by gpt2-export and gpt2-bench.
pub fn progress_bar(quiet: bool, template: &str, total: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A progress bar over the tensors of an export, showing `message`, and the callback the
/// exporters take (`&|done, total| ...`) to advance it: `bar.on_tensor()`.
pub fn tensor_progress(quiet: bool, message: &str) -> TensorProgress {
    let bar = progress_bar(quiet, "{msg} [{bar:30}] {pos}/{len} tensors ({elapsed})", 0);
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
/// from the hub repo (`openai-community/gpt2` -> `gpt2`), the directory, or a weight file
/// (whose own dtype suffix is replaced: `gpt2-f16.bin` to q8_0 is `gpt2-q8_0.bin`).
pub fn default_out_for_source(source: &str, dtype: gpt2_weights::Dtype) -> PathBuf {
    let path = std::path::Path::new(source.trim_end_matches('/'));
    let mut name = if path.is_file() {
        path.file_stem()
    } else {
        path.file_name()
    }
    .map(|n| n.to_string_lossy().into_owned())
    .unwrap_or_else(|| "model".into());
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

/// Exports from a directory, a hub repo id or a gpt2-bench file, whichever `source` is, with
/// the model's matrices in `dtype`.
pub fn export_from(
    source: &str,
    revision: Option<&str>,
    dtype: gpt2_weights::Dtype,
    out: &std::path::Path,
    quiet: bool,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    let path = std::path::Path::new(source);
    if path.is_dir() {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        hf::export_dir(
            path,
            out,
            &format!("dir:{}", abs.display()),
            dtype,
            progress,
        )
    } else if path.is_file() {
        convert::convert_file(path, dtype, out, progress)
    } else if hub::looks_like_repo_id(source) {
        let dir = hub::fetch(source, revision, quiet)?;
        let recorded = match revision {
            Some(rev) => format!("hf-hub:{source}@{rev}"),
            None => format!("hf-hub:{source}"),
        };
        hf::export_dir(&dir, out, &recorded, dtype, progress)
    } else {
        Err(ExportError::Checkpoint {
            path: path.to_path_buf(),
            message: "no such file or directory, and not a hub repo id like \
                      openai-community/gpt2"
                .into(),
        })
    }
}
