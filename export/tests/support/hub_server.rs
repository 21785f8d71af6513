//! A local HTTP server that answers like the Hugging Face hub, for the tests of the hub path
//! (`export/tests/hub.rs`, and the default-model tests of the harness through a `#[path]`
//! include). It listens on 127.0.0.1 at a random port and speaks the part of the protocol a
//! client of the hub uses:
//!
//! - `GET /{repo}/resolve/{revision}/{file}`, the revision a branch, a tag or the commit;
//! - small files answered directly, with the commit in `X-Repo-Commit` and an `ETag` (a 40-hex
//!   digest, as the hub's git-sha1 ETags are);
//! - `.safetensors` files, as the hub does for LFS files, redirected (302) to `/cdn/{sha256}`
//!   with `X-Linked-Etag` = their sha256 and `X-Linked-Size`;
//! - `Range: bytes=N-` and `bytes=N-M` (206 with `Content-Range`);
//! - 404 with `X-Error-Code`: `RepoNotFound`, `RevisionNotFound`, or `EntryNotFound` (with the
//!   commit, so a client can remember the file is absent); 401 `GatedRepo` for a gated repo
//!   asked without its token.
//!
//! Faults can be set per file name to test failures: a status, a body cut off in the middle, a
//! body shorter than its `Content-Length`, a stall, content that does not match its ETag, a
//! trickle, an endless chunked body, no announced size, a body longer than announced, or an
//! `X-Linked-Size` that disagrees with the `Content-Length`. A file can also be redirected
//! anywhere (another port, a `file:` URL), to test where the token goes. Every request is
//! recorded.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A repository the server holds.
#[derive(Clone, Debug)]
pub struct Repo {
    pub id: String,
    /// 40 hex digits.
    pub commit: String,
    /// Branches and tags, all at `commit`.
    pub revisions: Vec<String>,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Answered only to `Authorization: Bearer {token}`.
    pub token: Option<String>,
}

impl Repo {
    /// A repo with a `main` branch at a commit derived from its id.
    pub fn new(id: &str, files: BTreeMap<String, Vec<u8>>) -> Self {
        Repo {
            id: id.into(),
            commit: hex(&Sha256::digest(id.as_bytes()))[..40].to_string(),
            revisions: vec!["main".into()],
            files,
            token: None,
        }
    }
}

/// What goes wrong when a file is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and an empty body.
    Status(u16),
    /// Announce the whole length, send half of it, then reset the connection.
    CutOff,
    /// Announce the whole length, send all but the last 100 bytes, then close cleanly.
    ShortBody,
    /// Send the headers and a few bytes, then nothing for a minute.
    Stall,
    /// Send other bytes of the same length under the file's ETag.
    WrongContent,
    /// Announce the whole length, then send a byte every 100 ms.
    Trickle,
    /// No size: a chunked body that never ends (64 KiB chunks, until the client hangs up or
    /// 30 s pass).
    Endless,
    /// No size: no `Content-Length` (the body ends when the connection closes), and for a
    /// weight file no `X-Linked-Size` on the redirect.
    NoSize,
    /// The redirect's `X-Linked-Size` is right, but the body (no `Content-Length`, ended by
    /// closing) has 100 bytes more.
    Overlong,
    /// The redirect's `X-Linked-Size` is one more than the body's (right) `Content-Length`.
    WrongLinkedSize,
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    repos: Vec<Repo>,
    faults: BTreeMap<String, Fault>,
    /// File name -> a `Location` to redirect it to (`{sha}` replaced by its sha256).
    redirects: BTreeMap<String, String>,
    requests: Vec<Request>,
}

/// The running server; it stops with the test process.
#[derive(Clone)]
pub struct HubServer {
    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl HubServer {
    pub fn start(repos: Vec<Repo>) -> Self {
        Self::start_on(0, repos).expect("bind 127.0.0.1")
    }

    /// On 127.0.0.1:`port` (0: any free port); `Err` when the port is taken.
    pub fn start_on(port: u16, repos: Vec<Repo>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            repos,
            ..State::default()
        }));
        let server = HubServer { url, state };
        let s = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || s.serve(stream));
            }
        });
        Ok(server)
    }

    /// Makes every later request for a file named `file` (in any repo) answer 302 to
    /// `location` (`{sha}` in it replaced by the file's sha256), with the headers of the hub's
    /// CDN redirect; `None` restores the usual answer.
    pub fn set_redirect(&self, file: &str, location: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        match location {
            Some(l) => state.redirects.insert(file.into(), l.into()),
            None => state.redirects.remove(file),
        };
    }

    /// Makes every later request for a file named `file` (in any repo) fail with `fault`.
    pub fn set_fault(&self, file: &str, fault: Option<Fault>) {
        let mut state = self.state.lock().unwrap();
        match fault {
            Some(f) => state.faults.insert(file.into(), f),
            None => state.faults.remove(file),
        };
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    fn serve(&self, stream: TcpStream) {
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut authorization, mut range) = (None, None);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim().to_string();
                match name.trim().to_ascii_lowercase().as_str() {
                    "authorization" => authorization = Some(value),
                    "range" => range = Some(value),
                    _ => {}
                }
            }
        }
        let request = Request {
            path: path.clone(),
            authorization,
            range,
        };
        self.state.lock().unwrap().requests.push(request.clone());
        let answer = self.answer(&request);
        let _ = answer.send(stream);
    }

    fn answer(&self, request: &Request) -> Answer {
        let state = self.state.lock().unwrap();
        if let Some(sha) = request.path.strip_prefix("/cdn/") {
            // The CDN: any LFS file by its sha256.
            for repo in &state.repos {
                for (name, bytes) in &repo.files {
                    if hex(&Sha256::digest(bytes)) == sha {
                        let fault = state.faults.get(name).copied();
                        return Answer::file(bytes, sha, &repo.commit, request, fault);
                    }
                }
            }
            return Answer::status(404, &[("X-Error-Code", "EntryNotFound")]);
        }
        let Some((repo_id, rest)) = request.path[1..].split_once("/resolve/") else {
            return Answer::status(404, &[("X-Error-Code", "RepoNotFound")]);
        };
        let Some(repo) = state.repos.iter().find(|r| r.id == repo_id) else {
            return Answer::status(404, &[("X-Error-Code", "RepoNotFound")]);
        };
        if let Some(token) = &repo.token
            && request.authorization.as_deref() != Some(&format!("Bearer {token}"))
        {
            return Answer::status(401, &[("X-Error-Code", "GatedRepo")]);
        }
        let (revision, file) = rest.split_once('/').unwrap_or((rest, ""));
        let revision = revision.replace("%2F", "/");
        if revision != repo.commit && !repo.revisions.contains(&revision) {
            return Answer::status(404, &[("X-Error-Code", "RevisionNotFound")]);
        }
        let Some(bytes) = repo.files.get(file) else {
            return Answer::status(
                404,
                &[
                    ("X-Error-Code", "EntryNotFound"),
                    ("X-Repo-Commit", &repo.commit),
                ],
            );
        };
        let fault = state.faults.get(file).copied();
        if let Some(Fault::Status(code)) = fault {
            return Answer::status(code, &[]);
        }
        let sha = hex(&Sha256::digest(bytes));
        let redirect = state.redirects.get(file).map(|l| l.replace("{sha}", &sha));
        if redirect.is_some() || file.ends_with(".safetensors") {
            let location = redirect.unwrap_or_else(|| format!("{}/cdn/{sha}", self.url));
            let size = match fault {
                Some(Fault::WrongLinkedSize) => (bytes.len() + 1).to_string(),
                _ => bytes.len().to_string(),
            };
            let etag40 = format!("\"{}\"", &sha[..40]);
            let mut headers = vec![
                ("Location", location.as_str()),
                ("X-Repo-Commit", &repo.commit),
                ("ETag", &etag40),
            ];
            let linked_etag = format!("\"{sha}\"");
            if file.ends_with(".safetensors") {
                headers.push(("X-Linked-Etag", &linked_etag));
            }
            if fault != Some(Fault::NoSize) {
                headers.push(("X-Linked-Size", &size));
            }
            return Answer::status(302, &headers);
        }
        Answer::file(bytes, &sha[..40], &repo.commit, request, fault)
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    fault: Option<Fault>,
}

impl Answer {
    fn status(status: u16, headers: &[(&str, &str)]) -> Self {
        Answer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            fault: None,
        }
    }

    fn file(
        bytes: &[u8],
        etag: &str,
        commit: &str,
        request: &Request,
        fault: Option<Fault>,
    ) -> Self {
        if let Some(Fault::Status(code)) = fault {
            return Answer::status(code, &[]);
        }
        let mut body = bytes.to_vec();
        if fault == Some(Fault::WrongContent) {
            for b in &mut body {
                *b ^= 0x5a;
            }
        }
        let mut headers = vec![
            ("ETag".to_string(), format!("\"{etag}\"")),
            ("X-Repo-Commit".to_string(), commit.to_string()),
            ("Accept-Ranges".to_string(), "bytes".to_string()),
        ];
        let mut status = 200;
        if let Some(range) = request
            .range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
        {
            let (start, end) = range.split_once('-').unwrap_or((range, ""));
            let start: usize = start.parse().unwrap_or(0).min(body.len());
            let end: usize = end
                .parse()
                .map_or(body.len(), |e: usize| (e + 1).min(body.len()));
            headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{}", end.max(start + 1) - 1, body.len()),
            ));
            body = body[start..end.max(start)].to_vec();
            status = 206;
        }
        Answer {
            status,
            headers,
            body,
            fault,
        }
    }

    fn send(self, mut stream: TcpStream) -> std::io::Result<()> {
        if self.status == 200 {
            match self.fault {
                Some(Fault::Endless) => return self.send_endless(stream),
                Some(Fault::NoSize | Fault::Overlong) => return self.send_unsized(stream),
                _ => {}
            }
        }
        let reason = match self.status {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Error",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        stream.write_all(head.as_bytes())?;
        match self.fault {
            Some(Fault::CutOff) => {
                stream.write_all(&self.body[..self.body.len() / 2])?;
                stream.flush()?;
                // Reset, not a clean close: what a dropped connection looks like.
                set_linger_zero(&stream);
                drop(stream);
            }
            Some(Fault::ShortBody) => {
                stream.write_all(&self.body[..self.body.len().saturating_sub(100)])?;
                stream.shutdown(std::net::Shutdown::Both)?;
            }
            Some(Fault::Stall) => {
                stream.write_all(&self.body[..self.body.len().min(10)])?;
                stream.flush()?;
                std::thread::sleep(Duration::from_secs(60));
            }
            Some(Fault::Trickle) => {
                let start = std::time::Instant::now();
                for b in &self.body {
                    if start.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    stream.write_all(std::slice::from_ref(b))?;
                    stream.flush()?;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            _ => {
                stream.write_all(&self.body)?;
                stream.flush()?;
            }
        }
        Ok(())
    }
}

impl Answer {
    /// The head without a `Content-Length`.
    fn unsized_head(&self, extra: &str) -> String {
        let mut head = "HTTP/1.1 200 OK\r\n".to_string();
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(extra);
        head.push_str("Connection: close\r\n\r\n");
        head
    }

    /// [`Fault::Endless`]: chunks until the client hangs up (or 30 s, so that nothing outlives
    /// a test for long).
    fn send_endless(self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.write_all(
            self.unsized_head("Transfer-Encoding: chunked\r\n")
                .as_bytes(),
        )?;
        let chunk = vec![b'x'; 64 << 10];
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            stream.write_all(&chunk)?;
            stream.write_all(b"\r\n")?;
        }
        Ok(())
    }

    /// [`Fault::NoSize`] and [`Fault::Overlong`]: the body ends when the connection closes.
    fn send_unsized(self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.write_all(self.unsized_head("").as_bytes())?;
        stream.write_all(&self.body)?;
        if self.fault == Some(Fault::Overlong) {
            stream.write_all(&[b'!'; 100])?;
        }
        stream.flush()?;
        stream.shutdown(std::net::Shutdown::Write)
    }
}

/// SO_LINGER with a zero timeout: closing the socket then sends a reset.
fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files of the committed fixture checkpoint (config.json, model.safetensors, vocab.json,
/// merges.txt: a repo without tokenizer.json).
pub fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../backends/tests/fixtures/hf-tiny-gpt2");
    [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
    .collect()
}
