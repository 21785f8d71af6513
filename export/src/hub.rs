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
//! The token goes to the endpoint's origin only (scheme, host and port, the default ports filled
//! in), as with `huggingface_hub`: a redirect within that origin keeps it, a redirect anywhere
//! else (the CDN that serves large files, another port of the same host, http instead of https)
//! is followed without it, and a redirect to anything but an http(s) URL is refused.
//!
//! A download is bounded, so a hostile or broken server cannot hold a run or fill a disk:
//! besides the timeout for one silent read, the transfer must average at least
//! `GPT2_BENCH_HUB_MIN_BYTES_PER_S` (default 1024; 0 turns the floor off) over every window of
//! `GPT2_BENCH_HUB_SLOW_SECONDS` (default 30), or it is abandoned (curl's `--speed-limit` and
//! `--speed-time`). No more bytes are read than the size announced (`Content-Length`, or the
//! hub's `X-Linked-Size`; both present must agree), and a longer body is an error. A text file
//! (`config.json`, the tokenizer files, the shard index) with no announced size is read up to
//! [`gpt2_weights::input::MAX_TEXT_FILE_BYTES`], the most it may have anyway; a weight file
//! (`*.safetensors`) with no announced size is refused, since nothing would bound it, and so is
//! any file announced larger than [`MAX_WEIGHT_FILE_BYTES`] (32 GiB, about four times GPT-2 XL
//! in f32). A download abandoned for its rate is an error of the hub, not "unreachable": the
//! default run falls back to the synthetic model only when no hub answered at all.
//!
//! What can go wrong never leaves a cache entry a later run would trust: a file is downloaded
//! into a temporary file beside the blobs, checked (its length against the announced size, and
//! its sha256 against the ETag when the ETag is one), and only then renamed into `blobs/`, linked
//! from its snapshot and recorded in `refs/`. Those temporary files are registered with
//! [`gpt2_weights::write::CleanupGuard`], so a terminating signal (Ctrl-C) removes them too.
//! Once a revision's files are all cached, a run makes no request at all, and `HF_HUB_OFFLINE=1`
//! works from the cache alone, including knowing which optional files (`tokenizer.json`, a
//! single `model.safetensors`) the repo does not have.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpt2_weights::write::CleanupGuard;
use sha2::{Digest, Sha256};
use ureq::http::Uri;

use crate::error::ExportError;

/// The hub's address unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Seconds without a byte from the hub before a request is abandoned, unless
/// `HF_HUB_DOWNLOAD_TIMEOUT` says otherwise (huggingface_hub's default).
pub const DEFAULT_TIMEOUT_S: u64 = 10;

/// The slowest average transfer, in bytes a second, a download may keep up for a whole
/// [`DEFAULT_SLOW_S`] window, unless `GPT2_BENCH_HUB_MIN_BYTES_PER_S` says otherwise.
pub const DEFAULT_MIN_BYTES_PER_S: u64 = 1024;

/// The window, in seconds, over which the transfer rate is averaged, unless
/// `GPT2_BENCH_HUB_SLOW_SECONDS` says otherwise.
pub const DEFAULT_SLOW_S: u64 = 30;

/// The largest file downloaded: about four times GPT-2 XL in f32, so a lying or hostile
/// server cannot fill the disk.
pub const MAX_WEIGHT_FILE_BYTES: u64 = 32 << 30;

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

/// A duration from the environment variable `name` (seconds, more than 0 and at most a day),
/// else `default` seconds; garbage is an error naming the variable.
fn env_seconds(name: &str, default: u64) -> Result<Duration, ExportError> {
    match std::env::var(name) {
        Err(_) => Ok(Duration::from_secs(default)),
        Ok(v) => match gpt2_process::cli::parse_seconds(&v, 86_400.0) {
            Some(d) => Ok(d),
            None => Err(ExportError::Hub {
                repo: "(any)".into(),
                message: format!(
                    "{name}={} is not a number of seconds between 0 and 86400; unset it or give \
                     one, like 30",
                    gpt2_weights::input::printable(&v)
                ),
            }),
        },
    }
}

/// The read timeout: `HF_HUB_DOWNLOAD_TIMEOUT` seconds, else [`DEFAULT_TIMEOUT_S`].
fn timeout() -> Result<Duration, ExportError> {
    env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S)
}

/// The transfer-rate floor: `GPT2_BENCH_HUB_MIN_BYTES_PER_S` (0 turns it off) averaged over
/// `GPT2_BENCH_HUB_SLOW_SECONDS`.
fn rate_floor() -> Result<(u64, Duration), ExportError> {
    const NAME: &str = "GPT2_BENCH_HUB_MIN_BYTES_PER_S";
    let min = match std::env::var(NAME) {
        Err(_) => DEFAULT_MIN_BYTES_PER_S,
        Ok(v) => v.trim().parse::<u64>().map_err(|_| ExportError::Hub {
            repo: "(any)".into(),
            message: format!(
                "{NAME}={} is not a whole number of bytes a second; unset it (default \
                 {DEFAULT_MIN_BYTES_PER_S}) or give one, like 1024 (0 turns the floor off)",
                gpt2_weights::input::printable(&v)
            ),
        })?,
    };
    Ok((
        min,
        env_seconds("GPT2_BENCH_HUB_SLOW_SECONDS", DEFAULT_SLOW_S)?,
    ))
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
    /// The endpoint's origin: the only one the token is sent to.
    origin: Origin,
    token: Option<String>,
    agent: ureq::Agent,
    timeout: Duration,
    /// Bytes a second a download must average over `slow_window` (0: no floor).
    min_rate: u64,
    slow_window: Duration,
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
            let endpoint = endpoint.trim().trim_end_matches('/').to_string();
            let origin = endpoint
                .parse::<Uri>()
                .ok()
                .and_then(|uri| Origin::of(&uri))
                .ok_or_else(|| ExportError::Hub {
                    repo: repo_id.into(),
                    message: format!(
                        "HF_ENDPOINT={} is not an http:// or https:// URL; unset it (default \
                         {DEFAULT_ENDPOINT}) or give one, like {DEFAULT_ENDPOINT}",
                        gpt2_weights::input::printable(&endpoint)
                    ),
                })?;
            let (min_rate, slow_window) = rate_floor()?;
            Some(Online {
                endpoint,
                origin,
                token: token()?,
                agent: config.into(),
                timeout,
                min_rate,
                slow_window,
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
    fn url(&self, online: &Online, file: &str) -> Result<Uri, ExportError> {
        let url = format!(
            "{}/{}/resolve/{}/{}",
            online.endpoint,
            self.repo_id,
            self.revision.replace('/', "%2F"),
            file
        );
        url.parse().map_err(|_| {
            self.error(format!(
                "{} is not a valid URL; check --revision and HF_ENDPOINT",
                gpt2_weights::input::printable(&url)
            ))
        })
    }

    fn download(&self, online: &Online, file: &str) -> Result<Option<PathBuf>, ExportError> {
        let mut url = self.url(online, file)?;
        let (mut commit, mut etag, mut linked_size) = (None, None, None);
        let mut response = None;
        for _ in 0..=MAX_REDIRECTS {
            // The token goes to the endpoint's origin only, never to a host, port or scheme a
            // redirect names: a prefix test on the URL string would send it to
            // `http://127.0.0.1:18080` for an endpoint `http://127.0.0.1:1808`.
            let send_token = Origin::of(&url).as_ref() == Some(&online.origin);
            let mut request = online.agent.get(url.clone());
            if let (Some(token), true) = (&online.token, send_token) {
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
            linked_size = linked_size.or_else(|| header("x-linked-size"));
            if r.status().is_redirection() {
                let location = header("location")
                    .ok_or_else(|| self.error(format!("{file}: a redirect without a Location")))?;
                url = resolve_redirect(&url, &location)
                    .map_err(|why| self.error(format!("{file}: {why}")))?;
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
        let content_length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let expected_len = self.announced_size(file, content_length, linked_size)?;
        let blobs = self.repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| Self::io(&blobs, e))?;
        let blob = blobs.join(&etag);
        if !blob.is_file() {
            if !self.quiet {
                let size = expected_len.map_or(String::new(), |n| {
                    format!(" ({})", gpt2_weights::hint::human_bytes(n))
                });
                gpt2_process::cli::stderr(&format!("downloading {}/{file}{size}\n", self.repo_id));
            }
            let body = response.into_body().into_reader();
            self.save_blob(online, file, body, &blob, &etag, expected_len)?;
        }
        let pointer = self.link(&commit, file, &etag)?;
        self.write_ref(&commit)?;
        Ok(Some(pointer))
    }

    /// How many bytes the download of `file` may have: the size announced (`Content-Length`, or
    /// the hub's `X-Linked-Size` from the resolve answer; both present must agree), else for a
    /// text file the most a text file may have; a weight file must announce its size, since
    /// nothing else would bound it. `Err` before anything is downloaded.
    fn announced_size(
        &self,
        file: &str,
        content_length: Option<String>,
        linked_size: Option<String>,
    ) -> Result<Option<u64>, ExportError> {
        let parse = |name: &str, v: Option<String>| -> Result<Option<u64>, ExportError> {
            v.map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    self.error(format!(
                        "{file}: the answer's {name} {} is not a number of bytes; try again \
                         later",
                        gpt2_weights::input::printable(&v)
                    ))
                })
            })
            .transpose()
        };
        let content_length = parse("Content-Length", content_length)?;
        let linked_size = parse("X-Linked-Size", linked_size)?;
        let size = match (content_length, linked_size) {
            (Some(c), Some(l)) if c != l => {
                return Err(self.error(format!(
                    "{file}: the hub announced {l} bytes (X-Linked-Size) but the download has \
                     Content-Length {c}; nothing was kept, try again later"
                )));
            }
            (c, l) => c.or(l),
        };
        let text_limit = gpt2_weights::input::MAX_TEXT_FILE_BYTES;
        match size {
            Some(n) if n > MAX_WEIGHT_FILE_BYTES => Err(self.error(format!(
                "{file}: the server announced {}, more than the {} any GPT-2 checkpoint \
                 needs (GPT-2 XL in f32 is 6.4 GB); check the repo and HF_ENDPOINT",
                gpt2_weights::hint::human_bytes(n),
                gpt2_weights::hint::human_bytes(MAX_WEIGHT_FILE_BYTES)
            ))),
            None if is_weight_file(file) => Err(self.error(format!(
                "{file}: the server announced no size (no Content-Length or X-Linked-Size), and \
                 a weight file is not downloaded without one; try again later, or download the \
                 checkpoint another way and export it with --from DIR"
            ))),
            Some(n) if n > text_limit && !is_weight_file(file) => Err(self.error(format!(
                "{file}: the server announced {}, more than the {} a text file may have; check \
                 the repo and HF_ENDPOINT",
                gpt2_weights::hint::human_bytes(n),
                gpt2_weights::hint::human_bytes(text_limit)
            ))),
            size => Ok(size),
        }
    }

    /// Streams `body` into a temporary file beside `blob`, checks its length and (when the ETag
    /// is a sha256) its digest, then renames it to `blob`. On any failure the temporary file is
    /// removed and nothing is left in `blobs/`; on a terminating signal the handler removes it.
    /// No more than `expected_len` (else the text-file limit) bytes are read, plus one to tell
    /// an overlong body, and a transfer slower than the floor is abandoned.
    fn save_blob(
        &self,
        online: &Online,
        file: &str,
        body: impl Read,
        blob: &Path,
        etag: &str,
        expected_len: Option<u64>,
    ) -> Result<(), ExportError> {
        let dir = blob.parent().unwrap_or(Path::new("."));
        let mut tmp = CacheTemp::new_in(dir, &format!("{etag}."), ".incomplete")
            .map_err(|e| Self::io(dir, e))?;
        let limit = expected_len.unwrap_or(gpt2_weights::input::MAX_TEXT_FILE_BYTES);
        let mut body = body.take(limit.saturating_add(1));
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got: u64 = 0;
        let mut floor = RateFloor::new(online.min_rate, online.slow_window, Instant::now());
        let bar = gpt2_process::progress_bar(
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
            tmp.file
                .write_all(&buf[..n])
                .map_err(|e| Self::io(tmp.file.path(), e))?;
            got += n as u64;
            bar.set_position(got);
            if let Some(rate) = floor.observe(Instant::now(), got) {
                bar.finish_and_clear();
                // Not "unreachable": the hub answered, so no run may fall back to the
                // synthetic model and benchmark something else.
                return Err(self.error(format!(
                    "the download of {file} averaged {rate:.0} B/s over the last {} s, below \
                     the floor of {} B/s; nothing was kept; on a slow link lower \
                     GPT2_BENCH_HUB_MIN_BYTES_PER_S (0 turns the floor off) or raise \
                     GPT2_BENCH_HUB_SLOW_SECONDS",
                    online.slow_window.as_secs_f64(),
                    online.min_rate
                )));
            }
        }
        bar.finish_and_clear();
        match expected_len {
            Some(want) if got > want => {
                return Err(self.error(format!(
                    "{file}: the server sent more than the {want} bytes it announced; nothing \
                     was kept, try again later"
                )));
            }
            Some(want) if got < want => {
                return Err(self.error(format!(
                    "{file}: the download ended after {got} of {want} bytes; nothing was kept, \
                     run the command again"
                )));
            }
            None if got > limit => {
                return Err(self.error(format!(
                    "{file}: the server announced no size and sent more than {}, the most a \
                     text file may have; nothing was kept, check the repo and HF_ENDPOINT",
                    gpt2_weights::hint::human_bytes(limit)
                )));
            }
            _ => {}
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
        tmp.file
            .as_file()
            .sync_all()
            .map_err(|e| Self::io(tmp.file.path(), e))?;
        tmp.persist(blob).map_err(|e| Self::io(blob, e))?;
        Ok(())
    }

    /// `snapshots/{commit}/{file}` -> `../../blobs/{etag}`, created under a temporary name and
    /// renamed, so a reader sees either no pointer or a complete one; the temporary name is
    /// registered for the signal handler like every temporary file.
    fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, ExportError> {
        let dir = self.repo_dir.join("snapshots").join(commit);
        std::fs::create_dir_all(&dir).map_err(|e| Self::io(&dir, e))?;
        let pointer = dir.join(file);
        let target = Path::new("..").join("..").join("blobs").join(etag);
        let tmp = dir.join(format!(".{file}.{}.link", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let make = || -> std::io::Result<PathBuf> {
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &tmp)?;
            #[cfg(not(unix))]
            std::fs::copy(self.repo_dir.join("blobs").join(etag), &tmp).map(|_| ())?;
            Ok(tmp.clone())
        };
        let (tmp, _guard) =
            CleanupGuard::create(make, |p| p.as_path()).map_err(|e| Self::io(&tmp, e))?;
        if let Err(e) = std::fs::rename(&tmp, &pointer) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Self::io(&pointer, e));
        }
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
        let mut tmp = CacheTemp::new_in(dir, ".tmp", "").map_err(|e| Self::io(dir, e))?;
        tmp.file
            .write_all(commit.as_bytes())
            .map_err(|e| Self::io(tmp.file.path(), e))?;
        tmp.persist(&path).map_err(|e| Self::io(&path, e))?;
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

/// A temporary file in the cache, registered with the signal handler's list
/// ([`CleanupGuard`]): a process ended by a signal runs no destructors, and would otherwise
/// leave it behind.
struct CacheTemp {
    // Field order: the file is deleted (if never persisted) before the guard unregisters it.
    file: tempfile::NamedTempFile,
    _guard: CleanupGuard,
}

impl CacheTemp {
    fn new_in(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix).suffix(suffix);
        let (file, _guard) = CleanupGuard::create(|| builder.tempfile_in(dir), |t| t.path())?;
        Ok(CacheTemp { file, _guard })
    }

    /// Renames the file to `dest`; the guard is dropped only after the rename (or, on failure,
    /// after the file is deleted).
    fn persist(self, dest: &Path) -> std::io::Result<()> {
        let CacheTemp { file, _guard } = self;
        file.persist(dest).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Whether `file` is a weight file, which must announce its size (text files are bounded by
/// the text-file limit instead).
fn is_weight_file(file: &str) -> bool {
    file.ends_with(".safetensors")
}

/// A URL's origin (RFC 6454): scheme, host (case-insensitive) and port, the scheme's default
/// port filled in; `None` for anything but an http(s) URL with a host.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(uri: &Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri.host().filter(|h| !h.is_empty())?.to_ascii_lowercase();
        Some(Origin {
            scheme,
            host,
            port: uri.port_u16().unwrap_or(default_port),
        })
    }
}

/// The scheme of a URI reference (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`,
/// before the first `:`), or `None` for a relative reference.
fn scheme_of(reference: &str) -> Option<&str> {
    let (scheme, _) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    (chars.next()?.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// Where a redirect's `Location` leads, resolved against the URL that answered (RFC 3986
/// section 5.2, by parsing rather than slicing strings): an absolute URL, a network-path
/// reference (`//host/x`, the current scheme), an absolute path (`/x`, the current origin), a
/// query (`?q`) or a relative path (`x`, beside the current path). Anything but http(s) is
/// refused: the message says why, for an error naming the file.
fn resolve_redirect(base: &Uri, location: &str) -> Result<Uri, String> {
    let shown = gpt2_weights::input::printable(location);
    // A fragment is never sent.
    let location = location.split('#').next().unwrap_or("");
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let path = match base.path() {
        "" => "/",
        p => p,
    };
    let absolute = if let Some(s) = scheme_of(location) {
        if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") {
            return Err(format!(
                "the server redirected to {shown}, which is not an http(s) URL; refused (only \
                 http and https redirects are followed), check HF_ENDPOINT"
            ));
        }
        location.to_string()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') || location.is_empty() {
        format!("{scheme}://{authority}{path}{location}")
    } else {
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = absolute
        .parse()
        .map_err(|_| format!("the server redirected to {shown}, which is not a valid URL"))?;
    if Origin::of(&uri).is_none() {
        return Err(format!(
            "the server redirected to {shown}, which is not an http(s) URL with a host; \
             refused, check HF_ENDPOINT"
        ));
    }
    Ok(uri)
}

/// The transfer-rate floor (curl's `--speed-limit`/`--speed-time`): the average over the last
/// `window` must be at least `min` bytes a second. One silent read is bounded by the read
/// timeout, but a server trickling a byte a second never trips it.
struct RateFloor {
    min: u64,
    window: Duration,
    /// (when, bytes so far), one at most every `window / 16`, the oldest the newest one at
    /// least `window` old: a handful of entries, whatever the speed.
    samples: VecDeque<(Instant, u64)>,
}

impl RateFloor {
    fn new(min: u64, window: Duration, start: Instant) -> Self {
        RateFloor {
            min,
            window,
            samples: VecDeque::from([(start, 0)]),
        }
    }

    /// Records `total` bytes at `now`; `Some(rate)` when the average since the window began
    /// (at least `window` ago) is below the floor.
    fn observe(&mut self, now: Instant, total: u64) -> Option<f64> {
        if self.min == 0 {
            return None;
        }
        if self
            .samples
            .back()
            .is_none_or(|&(t, _)| now.saturating_duration_since(t) >= self.window / 16)
        {
            self.samples.push_back((now, total));
        }
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= self.window)
        {
            self.samples.pop_front();
        }
        let &(since, at) = self.samples.front()?;
        let span = now.saturating_duration_since(since);
        if span < self.window {
            return None;
        }
        let rate = total.saturating_sub(at) as f64 / span.as_secs_f64();
        (rate < self.min as f64).then_some(rate)
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

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn origin(s: &str) -> Option<Origin> {
        Origin::of(&uri(s))
    }

    #[test]
    fn origins_compare_scheme_host_and_port_with_defaults() {
        let hub = origin("https://huggingface.co").unwrap();
        for same in [
            "https://huggingface.co/x/resolve/main/config.json",
            "https://HuggingFace.CO:443/y",
            "HTTPS://huggingface.co?q",
        ] {
            assert_eq!(origin(same).as_ref(), Some(&hub), "{same}");
        }
        for other in [
            "http://huggingface.co/x",
            "https://huggingface.co:444/x",
            "https://cdn-lfs.huggingface.co/x",
            "https://huggingface.co.evil.example/x",
            "http://huggingface.co:443/x",
        ] {
            assert_ne!(origin(other).as_ref(), Some(&hub), "{other}");
        }
        let local = origin("http://127.0.0.1:1808").unwrap();
        assert_ne!(origin("http://127.0.0.1:18080/x"), Some(local.clone()));
        assert_eq!(origin("http://127.0.0.1:1808/x"), Some(local));
        assert_eq!(origin("http://h/x"), origin("http://h:80/y"));
        assert_eq!(origin("ftp://h/x"), None);
        assert_eq!(origin("/just/a/path"), None);
    }

    #[test]
    fn redirects_resolve_by_parsing_and_only_to_http() {
        let base = uri("https://hub.example:8443/org/m/resolve/main/model.safetensors?x=1");
        let r = |l: &str| resolve_redirect(&base, l).map(|u| u.to_string());
        assert_eq!(
            r("/api/org/m/resolve/main/f").unwrap(),
            "https://hub.example:8443/api/org/m/resolve/main/f"
        );
        assert_eq!(r("//cdn.example/a").unwrap(), "https://cdn.example/a");
        assert_eq!(
            r("http://cdn.example/a?s=1#frag").unwrap(),
            "http://cdn.example/a?s=1"
        );
        assert_eq!(
            r("other.json").unwrap(),
            "https://hub.example:8443/org/m/resolve/main/other.json"
        );
        assert_eq!(
            r("?y=2").unwrap(),
            "https://hub.example:8443/org/m/resolve/main/model.safetensors?y=2"
        );
        for bad in [
            "file:///etc/passwd",
            "ftp://h/x",
            "javascript:alert(1)",
            "http://",
        ] {
            let e = r(bad).unwrap_err();
            assert!(e.contains("redirected"), "{bad}: {e}");
        }
        assert!(
            r("file:///etc/passwd")
                .unwrap_err()
                .contains("not an http(s) URL")
        );
        assert_eq!(scheme_of("HTTPS://x"), Some("HTTPS"));
        assert_eq!(scheme_of("/a:b"), None);
        assert_eq!(scheme_of("1x:y"), None);
    }

    #[test]
    fn the_rate_floor_trips_on_a_slow_window_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // A byte a second trips a 1024 B/s floor once a whole 30 s window has passed.
        let mut floor = RateFloor::new(1024, s(30), t0);
        for i in 1..30 {
            assert_eq!(floor.observe(t0 + s(i), i), None, "{i}");
        }
        let rate = floor.observe(t0 + s(31), 31).unwrap();
        assert!((rate - 1.0).abs() < 0.01, "{rate}");
        // A fast start then a stall: the average of the last window counts, not the total.
        let mut floor = RateFloor::new(1024, s(10), t0);
        assert_eq!(floor.observe(t0 + s(1), 100 << 20), None);
        for i in 2..11 {
            assert_eq!(floor.observe(t0 + s(i), 100 << 20), None, "{i}");
        }
        // From 1 s to 11 s nothing came.
        assert_eq!(floor.observe(t0 + s(11), 100 << 20), Some(0.0));
        // Steady and fast: never, and the samples stay few.
        let mut floor = RateFloor::new(1024, s(10), t0);
        for i in 1..100_000u64 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(floor.observe(now, i * 65_536), None);
        }
        assert!(floor.samples.len() <= 18, "{}", floor.samples.len());
        // 0 turns it off.
        let mut floor = RateFloor::new(0, s(1), t0);
        assert_eq!(floor.observe(t0 + s(100), 0), None);
    }

    #[test]
    fn shard_names_must_be_plain_file_names() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
