//! Downloading a GPT-2 checkpoint from the Hugging Face hub, into the hub's standard cache.
//!
//! The cache is the one Python's `huggingface_hub` uses and shares (`$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), laid out the same way, so a model
//! downloaded by either is not downloaded again:
//!
//! ```text
//! models--{org}--{name}/
//!   blobs/{etag}                        file contents, named by the hub's ETag
//!   snapshots/{commit}/{file}           symlink to ../../blobs/{etag}
//!   refs/{revision}                     the commit a branch or tag resolved to
//!   .no_exist/{commit}/{file}           empty: the hub said the file does not exist
//! ```
//!
//! The protocol is the hub's `GET {HF_ENDPOINT}/{repo}/resolve/{revision}/{file}`: the answer
//! (or the redirect to the CDN that serves a large file) carries the commit (`X-Repo-Commit`)
//! and the ETag (`X-Linked-Etag` for large files, which is their sha256). `HF_ENDPOINT`, the
//! token (`$HF_TOKEN`, else `$HF_HOME/token`), `HF_HUB_OFFLINE` and `HF_HUB_DOWNLOAD_TIMEOUT`
//! (seconds without a byte before giving up, default 10) mean what they mean for
//! `huggingface_hub`.
//!
//! What can go wrong never leaves a cache entry a later run would trust: a file is downloaded
//! into a temporary file beside the blobs, checked (its length against `Content-Length`, and its
//! sha256 against the ETag when the ETag is one), and only then renamed into `blobs/`, linked from
//! its snapshot and recorded in `refs/`. Once a revision's files are all cached, a run makes no
//! request at all, and `HF_HUB_OFFLINE=1` works from the cache alone, including knowing which
//! optional files (`tokenizer.json`, a single `model.safetensors`) the repo does not have.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::ExportError;

/// The hub's address unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Seconds without a byte from the hub before a request is abandoned, unless
/// `HF_HUB_DOWNLOAD_TIMEOUT` says otherwise (huggingface_hub's default).
pub const DEFAULT_TIMEOUT_S: u64 = 10;

/// Redirects followed for one file (the hub redirects large files to its CDN once).
const MAX_REDIRECTS: usize = 5;

/// True when `s` should be treated as a hub repo id (`gpt2`, `openai-community/gpt2`) rather
/// than a path: it is not an existing path, has at most one `/`, and no path-like characters.
pub fn looks_like_repo_id(s: &str) -> bool {
    !std::path::Path::new(s).exists()
        && !s.is_empty()
        && s.matches('/').count() <= 1
        && !s.starts_with(['.', '/', '~'])
        && !s.ends_with('/')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Whether an environment flag (`HF_HUB_OFFLINE`) is set to a true value.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Where the hub's cache is: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    hf_home().join("hub")
}

fn hf_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HOME") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("huggingface")
}

/// The token to send: `$HF_TOKEN`, else the first line of `$HF_HOME/token` (where
/// `huggingface-cli login` writes it).
fn token() -> Result<Option<String>, ExportError> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        let t = t.trim().to_string();
        return Ok((!t.is_empty()).then_some(t));
    }
    let path = hf_home().join("token");
    if !path.exists() {
        return Ok(None);
    }
    let text = gpt2_weights::input::read_text_limited(&path, 64 << 10)
        .map_err(|source| ExportError::Io { path, source })?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    Ok((!t.is_empty()).then_some(t))
}

/// The read timeout: `HF_HUB_DOWNLOAD_TIMEOUT` seconds, else [`DEFAULT_TIMEOUT_S`].
fn timeout() -> Result<Duration, ExportError> {
    match std::env::var("HF_HUB_DOWNLOAD_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(DEFAULT_TIMEOUT_S)),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(ExportError::Hub {
                repo: "(any)".into(),
                message: format!(
                    "HF_HUB_DOWNLOAD_TIMEOUT={} is not a number of seconds between 0 and \
                     86400; unset it or give one, like 30",
                    gpt2_weights::input::printable(&v)
                ),
            }),
        },
    }
}

/// Downloads (or finds in the cache) everything needed to export `repo_id` at `revision`
/// (default `main`), and returns the snapshot directory that holds it.
pub fn fetch(repo_id: &str, revision: Option<&str>, quiet: bool) -> Result<PathBuf, ExportError> {
    let hub = Hub::from_env(repo_id, revision.unwrap_or("main"), quiet)?;
    let config = hub.get("config.json")?;
    let dir = config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if hub.try_get("model.safetensors")?.is_none() {
        let index = hub
            .try_get("model.safetensors.index.json")?
            .ok_or_else(|| {
                hub.error("has neither model.safetensors nor model.safetensors.index.json")
            })?;
        for shard in shard_names(&index)? {
            hub.get(&shard)?;
        }
    }
    if hub.try_get("tokenizer.json")?.is_none() {
        hub.get("vocab.json")?;
        hub.get("merges.txt")?;
    }
    Ok(dir)
}

/// The shard files a `model.safetensors.index.json` names, each once, in order; a name that is
/// not a plain file name (a path, `..`) is refused, since it becomes a path in the cache.
fn shard_names(index: &Path) -> Result<Vec<String>, ExportError> {
    let limit = gpt2_weights::input::MAX_TEXT_FILE_BYTES;
    let text =
        gpt2_weights::input::read_text_limited(index, limit).map_err(|e| ExportError::Io {
            path: index.to_path_buf(),
            source: e,
        })?;
    let bad = |message: String| ExportError::Checkpoint {
        path: index.to_path_buf(),
        message,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("has no \"weight_map\" object".into()))?;
    let mut shards = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            bad(format!(
                "weight_map entry {} is not a file name",
                gpt2_weights::input::printable(tensor)
            ))
        })?;
        if !is_plain_file_name(file) {
            return Err(bad(format!(
                "shard {} is not a plain file name",
                gpt2_weights::input::printable(file)
            )));
        }
        shards.insert(file.to_string());
    }
    Ok(shards.into_iter().collect())
}

fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

/// One repo at one revision, online or offline.
struct Hub {
    repo_id: String,
    revision: String,
    /// `models--{org}--{name}` in the cache.
    repo_dir: PathBuf,
    /// None with `HF_HUB_OFFLINE=1`: nothing is requested.
    online: Option<Online>,
    quiet: bool,
}

struct Online {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
    timeout: Duration,
}

/// Where a file stands in the cache.
enum Cached {
    /// Downloaded: its snapshot path.
    Present(PathBuf),
    /// The hub said it does not exist at this commit.
    Absent,
    /// Not known.
    Unknown,
}

impl Hub {
    fn from_env(repo_id: &str, revision: &str, quiet: bool) -> Result<Self, ExportError> {
        let repo_dir = cache_root().join(format!("models--{}", repo_id.replace('/', "--")));
        let online = if env_flag("HF_HUB_OFFLINE") {
            None
        } else {
            let timeout = timeout()?;
            let config = ureq::Agent::config_builder()
                .timeout_connect(Some(timeout))
                .timeout_per_read(Some(timeout))
                .timeout_recv_response(Some(timeout))
                .max_redirects(0)
                .max_redirects_will_error(false)
                .http_status_as_error(false)
                .user_agent(concat!("gpt2-export/", env!("CARGO_PKG_VERSION")))
                .build();
            let endpoint = std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
            Some(Online {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                token: token()?,
                agent: config.into(),
                timeout,
            })
        };
        Ok(Hub {
            repo_id: repo_id.into(),
            revision: revision.into(),
            repo_dir,
            online,
            quiet,
        })
    }

    fn error(&self, message: impl Into<String>) -> ExportError {
        ExportError::Hub {
            repo: self.repo_id.clone(),
            message: message.into(),
        }
    }

    fn unreachable(&self, detail: impl Into<String>) -> ExportError {
        ExportError::HubUnreachable {
            repo: self.repo_id.clone(),
            detail: detail.into(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> ExportError {
        ExportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn get(&self, file: &str) -> Result<PathBuf, ExportError> {
        self.try_get(file)?
            .ok_or_else(|| self.error(format!("has no file {file}")))
    }

    /// The file's path in the cache, downloading it if needed; `Ok(None)` when the repo does
    /// not have it.
    fn try_get(&self, file: &str) -> Result<Option<PathBuf>, ExportError> {
        match self.cached(file) {
            Cached::Present(path) => return Ok(Some(path)),
            Cached::Absent => return Ok(None),
            Cached::Unknown => {}
        }
        match &self.online {
            Some(online) => self.download(online, file),
            None => Err(self.unreachable(format!(
                "HF_HUB_OFFLINE is set and {file} of revision {} is not in the cache at {}",
                self.revision,
                self.repo_dir.display()
            ))),
        }
    }

    /// The commit the revision resolves to in the cache, if known.
    fn cached_commit(&self) -> Option<String> {
        if is_commit_hash(&self.revision) {
            return Some(self.revision.clone());
        }
        let path = self.repo_dir.join("refs").join(&self.revision);
        let text = gpt2_weights::input::read_text_limited(&path, 1024).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    fn cached(&self, file: &str) -> Cached {
        let Some(commit) = self.cached_commit() else {
            return Cached::Unknown;
        };
        let pointer = self.repo_dir.join("snapshots").join(&commit).join(file);
        // A pointer whose blob is missing (a cache cleaned by hand) is not trusted.
        if pointer.is_file() {
            return Cached::Present(pointer);
        }
        if self
            .repo_dir
            .join(".no_exist")
            .join(&commit)
            .join(file)
            .exists()
        {
            return Cached::Absent;
        }
        Cached::Unknown
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, the revision's `/` escaped.
    fn url(&self, online: &Online, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            online.endpoint,
            self.repo_id,
            self.revision.replace('/', "%2F"),
            file
        )
    }

    fn download(&self, online: &Online, file: &str) -> Result<Option<PathBuf>, ExportError> {
        let mut url = self.url(online, file);
        let (mut commit, mut etag) = (None, None);
        let mut response = None;
        for _ in 0..=MAX_REDIRECTS {
            let same_host = url.starts_with(&online.endpoint);
            let mut request = online.agent.get(&url);
            if let (Some(token), true) = (&online.token, same_host) {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            let r = request
                .call()
                .map_err(|e| self.request_error(online, file, e))?;
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().trim_matches('"').to_string())
            };
            commit = commit.or_else(|| header("x-repo-commit"));
            etag = etag.or_else(|| header("x-linked-etag").or_else(|| header("etag")));
            if r.status().is_redirection() {
                let location = header("location")
                    .ok_or_else(|| self.error(format!("{file}: a redirect without a Location")))?;
                url = if location.starts_with("http://") || location.starts_with("https://") {
                    location
                } else {
                    // A relative redirect (a renamed repo): same host.
                    let host_end = online.endpoint.find("://").map_or(0, |i| i + 3);
                    let host_end = online.endpoint[host_end..]
                        .find('/')
                        .map_or(online.endpoint.len(), |i| host_end + i);
                    format!("{}{}", &online.endpoint[..host_end], location)
                };
                continue;
            }
            response = Some(r);
            break;
        }
        let response = response
            .ok_or_else(|| self.error(format!("{file}: more than {MAX_REDIRECTS} redirects")))?;
        let status = response.status().as_u16();
        let error_code = response
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match status {
            200 => {}
            404 if error_code == "EntryNotFound" => {
                // The repo and revision exist, the file does not: remember that, so an offline
                // run knows it too.
                if let Some(commit) = commit.filter(|c| is_commit_hash(c)) {
                    self.remember_absent(&commit, file)?;
                    self.write_ref(&commit)?;
                }
                return Ok(None);
            }
            404 if error_code == "RevisionNotFound" => {
                return Err(self.error(format!(
                    "no revision {} (a branch, tag or commit of the repo); check --revision",
                    self.revision
                )));
            }
            401 | 403 => {
                return Err(self.error(
                    "access denied (HTTP {status}): the repo is gated or private, or does not \
                     exist; accept its terms on huggingface.co and log in (`huggingface-cli \
                     login`, or put a token in $HF_TOKEN or $HF_HOME/token)"
                        .replace("{status}", &status.to_string()),
                ));
            }
            404 => {
                return Err(self.error(
                    "no such repository (HTTP 404); check the repo id, e.g. \
                     openai-community/gpt2",
                ));
            }
            code => {
                return Err(self.error(format!(
                    "the hub answered HTTP {code} for {file}; try again later"
                )));
            }
        }
        let commit = commit
            .filter(|c| is_commit_hash(c))
            .ok_or_else(|| self.error(format!("{file}: the answer has no X-Repo-Commit header")))?;
        let etag = etag
            .filter(|e| is_plain_file_name(e) && !e.is_empty())
            .ok_or_else(|| self.error(format!("{file}: the answer has no usable ETag header")))?;
        let expected_len = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let blobs = self.repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| Self::io(&blobs, e))?;
        let blob = blobs.join(&etag);
        if !blob.is_file() {
            if !self.quiet {
                let size = expected_len.map_or(String::new(), |n| {
                    format!(" ({})", gpt2_weights::hint::human_bytes(n))
                });
                crate::cli::stderr(&format!("downloading {}/{file}{size}\n", self.repo_id));
            }
            let body = response.into_body().into_reader();
            self.save_blob(online, file, body, &blob, &etag, expected_len)?;
        }
        let pointer = self.link(&commit, file, &etag)?;
        self.write_ref(&commit)?;
        Ok(Some(pointer))
    }

    /// Streams `body` into a temporary file beside `blob`, checks its length and (when the ETag
    /// is a sha256) its digest, then renames it to `blob`. On any failure the temporary file is
    /// removed and nothing is left in `blobs/`.
    fn save_blob(
        &self,
        online: &Online,
        file: &str,
        mut body: impl Read,
        blob: &Path,
        etag: &str,
        expected_len: Option<u64>,
    ) -> Result<(), ExportError> {
        let dir = blob.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{etag}."))
            .suffix(".incomplete")
            .tempfile_in(dir)
            .map_err(|e| Self::io(dir, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got: u64 = 0;
        let bar = crate::progress_bar(
            self.quiet,
            "  {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
            expected_len.unwrap_or(0),
        );
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(online, file, got, e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| Self::io(tmp.path(), e))?;
            got += n as u64;
            bar.set_position(got);
        }
        bar.finish_and_clear();
        if let Some(want) = expected_len.filter(|&want| want != got) {
            return Err(self.error(format!(
                "{file}: the download ended after {got} of {want} bytes; nothing was kept, \
                 run the command again"
            )));
        }
        if is_sha256(etag) {
            let digest = hasher.finalize();
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            if hex != etag.to_ascii_lowercase() {
                return Err(self.error(format!(
                    "{file}: the downloaded bytes have sha256 {hex}, not the {etag} the hub \
                     announced; nothing was kept, run the command again"
                )));
            }
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Self::io(tmp.path(), e))?;
        tmp.persist(blob).map_err(|e| Self::io(blob, e.error))?;
        Ok(())
    }

    /// `snapshots/{commit}/{file}` -> `../../blobs/{etag}`, created under a temporary name and
    /// renamed, so a reader sees either no pointer or a complete one.
    fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, ExportError> {
        let dir = self.repo_dir.join("snapshots").join(commit);
        std::fs::create_dir_all(&dir).map_err(|e| Self::io(&dir, e))?;
        let pointer = dir.join(file);
        let target = Path::new("..").join("..").join("blobs").join(etag);
        let tmp = dir.join(format!(".{file}.{}.link", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Self::io(&tmp, e))?;
        #[cfg(not(unix))]
        std::fs::copy(self.repo_dir.join("blobs").join(etag), &tmp)
            .map_err(|e| Self::io(&tmp, e))?;
        std::fs::rename(&tmp, &pointer).map_err(|e| Self::io(&pointer, e))?;
        Ok(pointer)
    }

    /// Records that the revision resolved to `commit` (`refs/{revision}`), unless the revision
    /// is a commit already.
    fn write_ref(&self, commit: &str) -> Result<(), ExportError> {
        if is_commit_hash(&self.revision) {
            return Ok(());
        }
        let path = self.repo_dir.join("refs").join(&self.revision);
        if gpt2_weights::input::read_text_limited(&path, 1024).is_ok_and(|t| t.trim() == commit) {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Self::io(dir, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Self::io(dir, e))?;
        tmp.write_all(commit.as_bytes())
            .map_err(|e| Self::io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| Self::io(&path, e.error))?;
        Ok(())
    }

    /// `.no_exist/{commit}/{file}`: the hub said the file does not exist at this commit.
    fn remember_absent(&self, commit: &str, file: &str) -> Result<(), ExportError> {
        let dir = self.repo_dir.join(".no_exist").join(commit);
        std::fs::create_dir_all(&dir).map_err(|e| Self::io(&dir, e))?;
        let marker = dir.join(file);
        std::fs::File::create(&marker).map_err(|e| Self::io(&marker, e))?;
        Ok(())
    }

    /// A request that got no answer: unreachable (the default run then falls back to the
    /// synthetic model), with the timeout stated when that was it.
    fn request_error(&self, online: &Online, file: &str, e: ureq::Error) -> ExportError {
        match e {
            ureq::Error::Timeout(_) => self.unreachable(format!(
                "no answer for {file} within {} s (HF_HUB_DOWNLOAD_TIMEOUT)",
                online.timeout.as_secs_f64()
            )),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                self.unreachable(format!(
                    "no answer for {file} within {} s (HF_HUB_DOWNLOAD_TIMEOUT)",
                    online.timeout.as_secs_f64()
                ))
            }
            other => self.unreachable(format!("{}: {other}", online.endpoint)),
        }
    }

    /// A download that stopped in the middle.
    fn read_error(&self, online: &Online, file: &str, got: u64, e: std::io::Error) -> ExportError {
        let timed_out = matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) || e.to_string().to_ascii_lowercase().contains("timeout");
        let why = if timed_out {
            format!(
                "no data for {} s (HF_HUB_DOWNLOAD_TIMEOUT)",
                online.timeout.as_secs_f64()
            )
        } else {
            e.to_string()
        };
        self.unreachable(format!(
            "the download of {file} stopped after {got} bytes: {why}; nothing was kept"
        ))
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_commit_hash(s: &str) -> bool {
    is_hex(s, 40)
}

fn is_sha256(s: &str) -> bool {
    is_hex(s, 64)
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
        assert!(!looks_like_repo_id("a/.."));
    }

    #[test]
    fn shard_names_must_be_plain_file_names() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
