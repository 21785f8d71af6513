//! Golden files: what an independent implementation (Hugging Face transformers) computed for a
//! checkpoint, so that our backends can be held to it.
//!
//! A golden file is a JSON document written by `backends/tests/fixtures/make_golden.py`:
//! the prompt and its token ids, the greedy continuation's ids, and the name of a safetensors
//! file holding the logits of the first `logit_steps` decoding steps, shape (steps, vocab).
//! `checkpoint` names the model, relative to the golden file: a Hugging Face checkpoint
//! directory (exported to our format on the fly) or a weight file of ours.

use std::path::{Path, PathBuf};

use crate::ExportError;

/// Largest golden logits file read: 1,000 steps of GPT-2's 50,257 logits is 201 MB.
pub const MAX_LOGITS_FILE_BYTES: u64 = 256 << 20;

/// A loaded golden file.
#[derive(Debug, Clone)]
pub struct Golden {
    /// The golden JSON file itself.
    pub path: PathBuf,
    pub prompt: String,
    pub prompt_token_ids: Vec<u32>,
    /// Greedy continuation chosen by the reference implementation.
    pub greedy_token_ids: Vec<u32>,
    /// Logits of the first decoding steps: `logits[step]` has `vocab` values.
    pub logits: Vec<Vec<f32>>,
    /// The model, resolved against the golden file's directory.
    pub checkpoint: PathBuf,
    /// The smallest top-1 minus top-2 logit gap along the greedy path (how robust the ids are).
    pub min_top2_gap: Option<f64>,
}

#[derive(serde::Deserialize)]
struct GoldenJson {
    prompt: String,
    prompt_token_ids: Vec<u32>,
    greedy_token_ids: Vec<u32>,
    logits_file: String,
    checkpoint: String,
    #[serde(default)]
    min_top2_gap: Option<f64>,
}

fn bad(path: &Path, message: impl Into<String>) -> ExportError {
    ExportError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Golden {
    /// Reads and validates a golden file and its logits.
    /// Reads a golden file and its logits: regular files of bounded size, finite logits.
    pub fn load(path: &Path) -> Result<Golden, ExportError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ExportError::Io { path: p, source }
        };
        let limit = gpt2_weights::input::MAX_TEXT_FILE_BYTES;
        let text = gpt2_weights::input::read_text_limited(path, limit).map_err(io(path))?;
        let g: GoldenJson = serde_json::from_str(&text).map_err(|e| {
            bad(
                path,
                format!("not a golden file ({e}); golden files are written by make_golden.py"),
            )
        })?;
        if g.prompt_token_ids.is_empty() || g.greedy_token_ids.is_empty() {
            return Err(bad(path, "the prompt and the greedy ids must not be empty"));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let logits_path = dir.join(&g.logits_file);
        let bytes = gpt2_weights::input::read_limited(&logits_path, MAX_LOGITS_FILE_BYTES)
            .map_err(io(&logits_path))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(&logits_path, format!("not a safetensors file: {e}")))?;
        let view = st
            .tensor("logits")
            .map_err(|_| bad(&logits_path, "no tensor named \"logits\""))?;
        let shape = view.shape();
        if view.dtype() != safetensors::Dtype::F32 || shape.len() != 2 || shape[1] == 0 {
            return Err(bad(
                &logits_path,
                format!(
                    "\"logits\" must be F32 of shape (steps, vocab), found {:?} {shape:?}",
                    view.dtype()
                ),
            ));
        }
        let logits: Vec<Vec<f32>> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect::<Vec<_>>()
            .chunks_exact(shape[1])
            .map(<[f32]>::to_vec)
            .collect();
        if let Some((step, row)) = logits
            .iter()
            .enumerate()
            .find(|(_, row)| row.iter().any(|x| !x.is_finite()))
        {
            let value = row
                .iter()
                .find(|x| !x.is_finite())
                .copied()
                .unwrap_or(f32::NAN);
            return Err(bad(
                &logits_path,
                format!(
                    "step {step} has a non-finite logit ({value}); a golden file must hold \
                     finite logits, regenerate it with make_golden.py"
                ),
            ));
        }
        if logits.len() > g.greedy_token_ids.len() {
            return Err(bad(
                &logits_path,
                "more logit steps than greedy ids; regenerate with make_golden.py",
            ));
        }
        Ok(Golden {
            path: path.to_path_buf(),
            prompt: g.prompt,
            prompt_token_ids: g.prompt_token_ids,
            greedy_token_ids: g.greedy_token_ids,
            logits,
            checkpoint: dir.join(g.checkpoint),
            min_top2_gap: g.min_top2_gap,
        })
    }

    /// A weight file for the golden checkpoint: the checkpoint itself when it is one of our
    /// files, else an export of the Hugging Face directory into `scratch_dir`.
    pub fn weight_file(&self, scratch_dir: &Path) -> Result<PathBuf, ExportError> {
        if self.checkpoint.is_file() {
            return Ok(self.checkpoint.clone());
        }
        let out = scratch_dir.join("golden-checkpoint.bin");
        let source = format!("dir:{}", self.checkpoint.display());
        crate::hf::export_dir(
            &self.checkpoint,
            &out,
            &source,
            gpt2_weights::Dtype::F32,
            &|_, _| {},
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../backends/tests/fixtures/golden.json")
    }

    #[test]
    fn loads_the_committed_fixture() {
        let g = Golden::load(&fixture()).unwrap();
        assert_eq!(g.prompt, "The meaning of life is");
        assert_eq!(g.prompt_token_ids, [464, 3616, 286, 1204, 318]);
        assert!(!g.logits.is_empty() && g.logits.len() <= g.greedy_token_ids.len());
        assert!(g.logits.iter().all(|row| row.len() == 50257));
        assert!(g.checkpoint.is_dir());
    }

    #[test]
    fn bad_golden_files_are_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("g.json");
        std::fs::write(&p, "{\"prompt\": 1}").unwrap();
        let e = Golden::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("g.json") && e.contains("not a golden file"),
            "{e}"
        );
        std::fs::write(
            &p,
            r#"{"prompt":"a","prompt_token_ids":[1],"greedy_token_ids":[2],
                "logits_file":"missing.safetensors","checkpoint":"x"}"#,
        )
        .unwrap();
        let e = Golden::load(&p).unwrap_err().to_string();
        assert!(e.contains("missing.safetensors"), "{e}");
    }
}
