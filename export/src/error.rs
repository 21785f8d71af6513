//! Errors of the exporter. Each names the file or repository concerned and, where there is one,
//! what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Weights(#[from] gpt2_weights::WeightsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: not a GPT-2 checkpoint: {reason}")]
    NotGpt2 { path: PathBuf, reason: String },
    /// The hub could not be reached (offline, DNS, TLS, timeout).
    #[error(
        "cannot reach the Hugging Face hub to download {repo} ({detail}). Export from a local \
         checkpoint directory with `{export} --from DIR`, or make a synthetic model with \
         `{export} --synthetic gpt2`",
        export = gpt2_weights::hint::export_command()
    )]
    HubUnreachable { repo: String, detail: String },
    /// The hub answered, but not with what we need (no such repo, gated, no safetensors).
    #[error("Hugging Face hub, {repo}: {message}")]
    Hub { repo: String, message: String },
}

impl ExportError {
    /// True when the failure is "no network", as opposed to a bad checkpoint: the harness then
    /// falls back to a synthetic model.
    pub fn is_hub_unreachable(&self) -> bool {
        matches!(self, ExportError::HubUnreachable { .. })
    }
}
