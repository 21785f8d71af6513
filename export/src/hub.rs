//! Downloading a GPT-2 checkpoint from the Hugging Face hub.
//!
//! Files go into the standard Hugging Face cache (`$HF_HOME/hub`, default
//! `~/.cache/huggingface/hub`), shared with Python's `huggingface_hub`, so a model downloaded by
//! either is not downloaded again. `HF_ENDPOINT` and the token in `$HF_HOME/token` are honoured.
//! With `HF_HUB_OFFLINE=1` nothing is requested: the files must already be in the cache.
//! Every file of one revision lands in the same snapshot directory, which is then exported like
//! any local checkpoint directory.

use std::io::IsTerminal;
use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo};

use crate::error::ExportError;

/// True when `s` should be treated as a hub repo id (`gpt2`, `openai-community/gpt2`) rather
/// than a path: it is not an existing path, has at most one `/`, and no path-like characters.
pub fn looks_like_repo_id(s: &str) -> bool {
    !std::path::Path::new(s).exists()
        && !s.is_empty()
        && s.matches('/').count() <= 1
        && !s.starts_with(['.', '/', '~'])
        && !s.ends_with('/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Whether `HF_HUB_OFFLINE` asks for no network access.
fn offline_mode() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Downloads (or finds in the cache) everything needed to export `repo_id`, and returns the
/// snapshot directory that holds it.
pub fn fetch(repo_id: &str, revision: Option<&str>, quiet: bool) -> Result<PathBuf, ExportError> {
    let repo = match revision {
        Some(rev) => Repo::with_revision(repo_id.to_string(), hf_hub::RepoType::Model, rev.into()),
        None => Repo::model(repo_id.to_string()),
    };
    let fetcher = if offline_mode() {
        Fetcher::Cache(Cache::from_env(), repo)
    } else {
        let api = ApiBuilder::from_env()
            .with_progress(!quiet && std::io::stderr().is_terminal())
            .build()
            .map_err(|e| hub_error(repo_id, e))?;
        Fetcher::Api(Box::new(api.repo(repo)))
    };

    let config = fetcher.get(repo_id, "config.json")?;
    let dir = config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if fetcher.try_get(repo_id, "model.safetensors")?.is_none() {
        let index = fetcher
            .try_get(repo_id, "model.safetensors.index.json")?
            .ok_or_else(|| ExportError::Hub {
                repo: repo_id.into(),
                message: "has neither model.safetensors nor model.safetensors.index.json".into(),
            })?;
        let limit = gpt2_weights::input::MAX_TEXT_FILE_BYTES;
        let text =
            gpt2_weights::input::read_text_limited(&index, limit).map_err(|e| ExportError::Io {
                path: index.clone(),
                source: e,
            })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ExportError::Checkpoint {
                path: index.clone(),
                message: format!("invalid JSON: {e}"),
            })?;
        let mut shards: Vec<&str> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| m.values().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            fetcher.get(repo_id, shard)?;
        }
    }
    if fetcher.try_get(repo_id, "tokenizer.json")?.is_none() {
        fetcher.get(repo_id, "vocab.json")?;
        fetcher.get(repo_id, "merges.txt")?;
    }
    Ok(dir)
}

enum Fetcher {
    Api(Box<ApiRepo>),
    Cache(Cache, Repo),
}

impl Fetcher {
    fn get(&self, repo_id: &str, file: &str) -> Result<PathBuf, ExportError> {
        self.try_get(repo_id, file)?
            .ok_or_else(|| ExportError::Hub {
                repo: repo_id.into(),
                message: format!("has no file {file}"),
            })
    }

    /// `Ok(None)` when the file does not exist in the repo; an error for anything else.
    fn try_get(&self, repo_id: &str, file: &str) -> Result<Option<PathBuf>, ExportError> {
        match self {
            Fetcher::Cache(cache, repo) => match cache.repo(repo.clone()).get(file) {
                Some(p) => Ok(Some(p)),
                // Offline by request counts as unreachable: callers fall back the same way.
                None => Err(ExportError::HubUnreachable {
                    repo: repo_id.into(),
                    detail: format!(
                        "HF_HUB_OFFLINE is set and {file} is not in the cache at {}",
                        cache.path().display()
                    ),
                }),
            },
            Fetcher::Api(api) => match api.get(file) {
                Ok(p) => Ok(Some(p)),
                Err(e) if status_of(&e) == Some(404) => Ok(None),
                Err(e) => Err(hub_error(repo_id, e)),
            },
        }
    }
}

fn status_of(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::RequestError(inner) => match inner.as_ref() {
            ureq::Error::StatusCode(code) => Some(*code),
            _ => None,
        },
        ApiError::TooManyRetries(inner) => status_of(inner),
        _ => None,
    }
}

fn hub_error(repo_id: &str, e: ApiError) -> ExportError {
    match status_of(&e) {
        Some(401 | 403) => ExportError::Hub {
            repo: repo_id.into(),
            message: "access denied (a gated or private repo); log in with a token in \
                      $HF_HOME/token"
                .into(),
        },
        Some(404) => ExportError::Hub {
            repo: repo_id.into(),
            message: "no such repository or file".into(),
        },
        Some(code) => ExportError::Hub {
            repo: repo_id.into(),
            message: format!("the hub answered HTTP {code}"),
        },
        None => match e {
            ApiError::IoError(io) => ExportError::Io {
                path: PathBuf::from(Cache::from_env().path()),
                source: io,
            },
            other => ExportError::HubUnreachable {
                repo: repo_id.into(),
                detail: other.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert!(looks_like_repo_id("gpt2"));
        assert!(looks_like_repo_id("openai-community/gpt2"));
        assert!(!looks_like_repo_id("./checkpoint"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("dir with space"));
    }
}
