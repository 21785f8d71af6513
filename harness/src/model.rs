//! Which model file a run uses when `--model` is not given.
//!
//! 1. `weights/gpt2.bin`, if it exists (real GPT-2 small, exported earlier);
//! 2. otherwise GPT-2 small exported from the Hugging Face hub into `weights/gpt2.bin`;
//! 3. if the hub cannot be reached, the synthetic GPT-2 small (seed 0), created on first use at
//!    `weights/synthetic-gpt2-seed0.bin`, with one line on stderr saying so: its text is noise,
//!    but its cost and the equivalence check are those of the real model.
//!
//! So the main command works on a fresh offline machine with no other step.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gpt2_export::SyntheticSize;

/// The hub repository of GPT-2 small.
pub const DEFAULT_HUB_REPO: &str = "openai-community/gpt2";

/// Returns the model file to open (creating it if needed, as above).
pub fn resolve(explicit: Option<&Path>, quiet: bool) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let dir = gpt2_export::weights_dir();
    let real = dir.join("gpt2.bin");
    if real.is_file() {
        return Ok(real);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bar = gpt2_export::tensor_progress(quiet, "exporting GPT-2 small");
    let exported = gpt2_export::export_from(
        DEFAULT_HUB_REPO,
        None,
        Some(gpt2_weights::Dtype::F32),
        &real,
        quiet,
        &bar.on_tensor(),
    );
    bar.0.finish_and_clear();
    match exported {
        Ok(p) => {
            gpt2_process::cli::stderr(&format!(
                "exported {DEFAULT_HUB_REPO} from the Hugging Face hub to {}\n",
                p.display()
            ));
            Ok(p)
        }
        Err(e) if e.is_hub_unreachable() => {
            let synthetic = SyntheticSize::Gpt2.default_path(0, gpt2_weights::Dtype::F32);
            gpt2_process::cli::stderr(&format!(
                "note: no --model, no {} and the Hugging Face hub cannot be reached, so this run \
                 uses synthetic GPT-2 small (random weights, seed 0) from {}: its text is noise, \
                 its speed and the equivalence check are real\n",
                real.display(),
                synthetic.display()
            ));
            if !synthetic.is_file() {
                // About half a gigabyte of random weights: a few seconds, shown as it goes.
                let bar = gpt2_export::tensor_progress(quiet, "creating synthetic GPT-2 small");
                gpt2_export::synthetic::export_synthetic(
                    SyntheticSize::Gpt2,
                    0,
                    gpt2_weights::Dtype::F32,
                    &synthetic,
                    &bar.on_tensor(),
                )?;
                bar.0.finish_and_clear();
            }
            Ok(synthetic)
        }
        Err(e) => Err(e.into()),
    }
}
