//! The hub path end to end: the real `gpt2-export` binary against a local server that speaks
//! the Hugging Face hub's protocol (`support/hub_server.rs`), since the real hub cannot be
//! reached from the machines this project is developed on. Downloads and exports, the cache
//! and offline mode, revisions, tokens, and every failure as a one-line error that leaves no
//! export and no cache entry a later run would trust.

#![cfg(unix)]

#[path = "support/hub_server.rs"]
mod hub_server;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hub_server::{Fault, HubServer, Repo, fixture_files};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gpt2-export");
const REPO: &str = "test-org/gpt2-tiny";

/// A scratch HF_HOME and output directory.
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("hf-home")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn repo_cache(&self, repo: &str) -> PathBuf {
        self.home()
            .join("hub")
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// `gpt2-export --from REPO --out OUT [extra]` against `server` (or offline with `None`).
    fn export(&self, server: Option<&HubServer>, repo: &str, out: &Path, extra: &[&str]) -> Output {
        output_within(
            &mut self.command(server, repo, out, extra),
            Duration::from_secs(60),
        )
    }

    /// The command [`Env::export`] runs, to add to.
    fn command(
        &self,
        server: Option<&HubServer>,
        repo: &str,
        out: &Path,
        extra: &[&str],
    ) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["--from", repo, "--out", out.to_str().unwrap()])
            .args(extra)
            .env("HF_HOME", self.home())
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_CACHE")
            .env_remove("GPT2_BENCH_HUB_MIN_BYTES_PER_S")
            .env_remove("GPT2_BENCH_HUB_SLOW_SECONDS")
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "2");
        match server {
            Some(s) => cmd.env("HF_ENDPOINT", &s.url).env_remove("HF_HUB_OFFLINE"),
            None => cmd
                .env("HF_ENDPOINT", "http://127.0.0.1:9")
                .env("HF_HUB_OFFLINE", "1"),
        };
        cmd
    }

    /// Temporary downloads left under the repo's cache `blobs/`.
    fn incomplete(&self, repo: &str) -> Vec<PathBuf> {
        self.blobs(repo)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
            .collect()
    }

    /// Files under the repo's cache `blobs/`.
    fn blobs(&self, repo: &str) -> Vec<PathBuf> {
        let dir = self.repo_cache(repo).join("blobs");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "stderr: {}", stderr(o));
}

/// A failure: non-zero exit, and after the progress lines (`downloading ...`) one line on
/// stderr, the error, with every needle.
fn assert_one_line_error(o: &Output, needles: &[&str]) {
    let all = stderr(o);
    assert!(!o.status.success(), "expected a failure; stderr: {all}");
    let e: Vec<&str> = all
        .lines()
        .filter(|l| !l.starts_with("downloading "))
        .collect();
    assert_eq!(e.len(), 1, "one-line error: {all:?}");
    assert!(e[0].starts_with("error: "), "{all:?}");
    let e = e[0];
    for n in needles {
        assert!(e.contains(n), "expected {n:?} in: {e}");
    }
}

/// `files` with the model split into two shards and an index.
fn sharded(files: &BTreeMap<String, Vec<u8>>, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let whole = dir.join("whole.safetensors");
    std::fs::write(&whole, &files["model.safetensors"]).unwrap();
    let st = SafetensorsFile::read(&whole);
    let half = st.entries.len() / 2;
    let mut out: BTreeMap<String, Vec<u8>> = files
        .iter()
        .filter(|(k, _)| *k != "model.safetensors")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&st.entries[..half], &st.entries[half..]]
        .iter()
        .enumerate()
    {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        let mut shard = SafetensorsFile {
            entries: Vec::new(),
            data: Vec::new(),
        };
        for (tensor, entry) in part.iter() {
            let bytes = &st.data[st.range(tensor)];
            let start = shard.data.len();
            shard.data.extend_from_slice(bytes);
            let mut entry = entry.clone();
            entry["data_offsets"] = serde_json::json!([start, shard.data.len()]);
            shard.entries.push((tensor.clone(), entry));
            weight_map.insert(tensor.clone(), serde_json::json!(name));
        }
        out.insert(name, shard.to_bytes());
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    out.insert(
        "model.safetensors.index.json".into(),
        index.to_string().into_bytes(),
    );
    out
}

/// `files` with tokenizer.json (the vocabulary and merges in one file) instead of vocab.json
/// and merges.txt.
fn with_tokenizer_json(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let vocab: serde_json::Value = serde_json::from_slice(&files["vocab.json"]).unwrap();
    let merges: Vec<String> = String::from_utf8(files["merges.txt"].clone())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.is_empty())
        .map(String::from)
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "model": { "type": "BPE", "vocab": vocab, "merges": merges },
    });
    let mut out: BTreeMap<String, Vec<u8>> = files
        .iter()
        .filter(|(k, _)| *k != "vocab.json" && *k != "merges.txt")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert("tokenizer.json".into(), tokenizer.to_string().into_bytes());
    out
}

/// Downloads and exports; a second run makes no request; offline works from the cache alone;
/// for a single-file repo without tokenizer.json and for a sharded one with it.
#[test]
fn download_then_cache_then_offline_for_single_file_and_sharded_repos() {
    let env = Env::new();
    let files = fixture_files();
    let sharded_repo = "test-org/gpt2-sharded";
    let server = HubServer::start(vec![
        Repo::new(REPO, files.clone()),
        Repo::new(
            sharded_repo,
            with_tokenizer_json(&sharded(&files, env.tmp.path())),
        ),
    ]);
    let reference = env.out("from-dir.bin");
    let o = Command::new(BIN)
        .args(["--from", fixture_checkpoint().to_str().unwrap(), "--out"])
        .arg(&reference)
        .output()
        .unwrap();
    assert_ok(&o);
    let tensors = |p: &Path| tensor_bytes(p);
    for repo in [REPO, sharded_repo] {
        let first = env.out(&format!("{}-1.bin", repo.replace('/', "_")));
        let before = server.request_count();
        let o = env.export(Some(&server), repo, &first, &[]);
        assert_ok(&o);
        assert!(
            server.request_count() > before,
            "{repo}: nothing was requested"
        );
        assert_eq!(
            tensors(&first),
            tensors(&reference),
            "{repo}: exported weights"
        );
        // The cache holds the files, in the hub's layout.
        let cache = env.repo_cache(repo);
        assert!(cache.join("refs/main").is_file(), "{repo}: refs/main");
        assert!(!env.blobs(repo).is_empty());

        let second = env.out(&format!("{}-2.bin", repo.replace('/', "_")));
        let before = server.request_count();
        assert_ok(&env.export(Some(&server), repo, &second, &[]));
        assert_eq!(
            server.request_count(),
            before,
            "{repo}: the cached run asked the hub"
        );
        assert_eq!(tensors(&second), tensors(&first));

        let offline = env.out(&format!("{}-3.bin", repo.replace('/', "_")));
        let o = env.export(None, repo, &offline, &[]);
        assert_ok(&o);
        assert_eq!(tensors(&offline), tensors(&first), "{repo}: offline export");
    }
    // The single-file repo has no tokenizer.json; the hub said so once, and the cache says so
    // since (Python's huggingface_hub records it the same way).
    let commit = std::fs::read_to_string(env.repo_cache(REPO).join("refs/main")).unwrap();
    let marker = env
        .repo_cache(REPO)
        .join(".no_exist")
        .join(commit.trim())
        .join("tokenizer.json");
    assert!(marker.is_file(), "{marker:?}");
    // Large files were fetched through the CDN redirect.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/cdn/"))
    );
}

/// `--revision` by tag and by commit, cached under refs/ and usable offline; an unknown
/// revision is a one-line error naming it.
#[test]
fn revisions_by_tag_and_commit() {
    let env = Env::new();
    let mut repo = Repo::new(REPO, fixture_files());
    repo.revisions.push("v1.0".into());
    let commit = repo.commit.clone();
    let server = HubServer::start(vec![repo]);
    let out = env.out("tag.bin");
    assert_ok(&env.export(Some(&server), REPO, &out, &["--revision", "v1.0"]));
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.path.contains("/resolve/main/"))
    );
    let tag_ref = std::fs::read_to_string(env.repo_cache(REPO).join("refs/v1.0")).unwrap();
    assert_eq!(tag_ref.trim(), commit);
    assert_ok(&env.export(
        None,
        REPO,
        &env.out("tag-offline.bin"),
        &["--revision", "v1.0"],
    ));
    assert_ok(&env.export(None, REPO, &env.out("commit.bin"), &["--revision", &commit]));
    // Offline, a revision never seen is not in the cache.
    let o = env.export(None, REPO, &env.out("main.bin"), &[]);
    assert_one_line_error(&o, &["HF_HUB_OFFLINE is set", "not in the cache"]);
    let o = env.export(
        Some(&server),
        REPO,
        &env.out("nope.bin"),
        &["--revision", "v9"],
    );
    assert_one_line_error(&o, &[REPO, "no revision v9", "--revision"]);
    assert!(!env.out("nope.bin").exists());
}

/// A gated repo: without a token the error says how to log in; with the token in
/// $HF_HOME/token it is sent as a bearer header and the download works.
#[test]
fn gated_repo_needs_the_token_from_hf_home() {
    let env = Env::new();
    let mut repo = Repo::new(REPO, fixture_files());
    repo.token = Some("hf_secret123".into());
    let server = HubServer::start(vec![repo]);
    let out = env.out("gated.bin");
    let o = env.export(Some(&server), REPO, &out, &[]);
    assert_one_line_error(
        &o,
        &[REPO, "401", "gated or private", "log in", "HF_HOME/token"],
    );
    assert!(!out.exists());
    std::fs::create_dir_all(env.home()).unwrap();
    std::fs::write(env.home().join("token"), "hf_secret123\n").unwrap();
    assert_ok(&env.export(Some(&server), REPO, &out, &[]));
    let resolved: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(
        resolved
            .iter()
            .rev()
            .take(3)
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_secret123")),
        "{resolved:?}"
    );
}

/// Every failure is one line, leaves no export, and leaves nothing in the cache that a later
/// run would trust: after the fault is cleared, the same command succeeds and exports exactly
/// what a clean run does.
#[test]
fn failures_are_one_line_errors_that_leave_no_export_and_no_bad_cache_entry() {
    let files = fixture_files();
    let server = HubServer::start(vec![Repo::new(REPO, files.clone())]);
    let clean_env = Env::new();
    let clean = clean_env.out("clean.bin");
    assert_ok(&clean_env.export(Some(&server), REPO, &clean, &[]));

    let unknown = Env::new();
    let o = unknown.export(Some(&server), "test-org/nope", &unknown.out("x.bin"), &[]);
    assert_one_line_error(&o, &["test-org/nope", "no such repository", "repo id"]);

    let cases: &[(&str, Fault, &[&str])] = &[
        (
            "config.json",
            Fault::Status(500),
            &["HTTP 500", "config.json", "try again"],
        ),
        (
            "model.safetensors",
            Fault::Status(503),
            &["HTTP 503", "model.safetensors"],
        ),
        (
            "model.safetensors",
            Fault::CutOff,
            &["model.safetensors", "stopped after", "nothing was kept"],
        ),
        (
            "vocab.json",
            Fault::ShortBody,
            &["vocab.json", "nothing was kept"],
        ),
        (
            "model.safetensors",
            Fault::WrongContent,
            &["model.safetensors", "sha256", "nothing was kept"],
        ),
        (
            "merges.txt",
            Fault::Stall,
            &["merges.txt", "2 s", "HF_HUB_DOWNLOAD_TIMEOUT"],
        ),
    ];
    for &(file, fault, needles) in cases {
        let env = Env::new();
        let out = env.out("model.bin");
        server.set_fault(file, Some(fault));
        let start = Instant::now();
        let o = env.export(Some(&server), REPO, &out, &[]);
        server.set_fault(file, None);
        assert_one_line_error(&o, needles);
        assert!(!out.exists(), "{file} {fault:?}: an export was written");
        if fault == Fault::Stall {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the stall was not cut short"
            );
        }
        // No temporary download is left, and no blob holds the faulty bytes.
        for blob in env.blobs(REPO) {
            let name = blob.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !name.ends_with(".incomplete"),
                "{file} {fault:?}: left {name}"
            );
            let bytes = std::fs::read(&blob).unwrap();
            assert!(
                files.values().any(|f| *f == bytes),
                "{file} {fault:?}: blob {name} is not one of the repo's files"
            );
        }
        // A later run does not trust anything the failure left: it completes the cache and
        // exports exactly what a clean run does.
        let retry = env.out("retry.bin");
        assert_ok(&env.export(Some(&server), REPO, &retry, &[]));
        assert_eq!(
            tensor_bytes(&retry),
            tensor_bytes(&clean),
            "{file} {fault:?}"
        );
        assert_ok(&env.export(None, REPO, &env.out("offline.bin"), &[]));
    }
}

/// Runs `env.command(...)` with `envs` set, expecting the failure `needles` describe; then
/// checks that it left no export, no temporary download and no blob that is not one of the
/// repo's files, and that a retry without the fault exports exactly `clean`. Returns how long
/// the failing run took.
#[allow(clippy::too_many_arguments)]
fn fail_then_retry(
    server: &HubServer,
    files: &BTreeMap<String, Vec<u8>>,
    clean: &Path,
    file: &str,
    fault: Fault,
    envs: &[(&str, &str)],
    needles: &[&str],
) -> Duration {
    let env = Env::new();
    let out = env.out("model.bin");
    server.set_fault(file, Some(fault));
    let start = Instant::now();
    let o = output_within(
        env.command(Some(server), REPO, &out, &[])
            .envs(envs.iter().copied()),
        Duration::from_secs(60),
    );
    let took = start.elapsed();
    server.set_fault(file, None);
    assert_one_line_error(&o, needles);
    assert!(!out.exists(), "{file} {fault:?}: an export was written");
    assert!(
        env.incomplete(REPO).is_empty(),
        "{file} {fault:?}: left a download"
    );
    for blob in env.blobs(REPO) {
        let bytes = std::fs::read(&blob).unwrap();
        assert!(
            files.values().any(|f| *f == bytes),
            "{file} {fault:?}: blob {blob:?} is not one of the repo's files"
        );
    }
    let retry = env.out("retry.bin");
    assert_ok(&env.export(Some(server), REPO, &retry, &[]));
    assert_eq!(
        tensor_bytes(&retry),
        tensor_bytes(clean),
        "{file} {fault:?}"
    );
    took
}

/// A download cannot hold a run or fill the disk: a trickle is abandoned once a window of
/// GPT2_BENCH_HUB_SLOW_SECONDS averages under the floor; an endless body without a size is cut
/// at the text-file limit; a weight file without a size is refused; a body longer than its
/// announced size, or sizes that disagree, are errors. Each is quick, one line, and leaves
/// nothing in the cache.
#[test]
fn slow_endless_unsized_and_overlong_downloads_are_cut_short_and_leave_nothing() {
    let files = fixture_files();
    let server = HubServer::start(vec![Repo::new(REPO, files.clone())]);
    let clean_env = Env::new();
    let clean = clean_env.out("clean.bin");
    assert_ok(&clean_env.export(Some(&server), REPO, &clean, &[]));

    let window: &[(&str, &str)] = &[("GPT2_BENCH_HUB_SLOW_SECONDS", "1")];
    // (file, fault, environment, what the error says)
    type Case<'a> = (&'a str, Fault, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "model.safetensors",
            Fault::Trickle,
            window,
            &[
                "model.safetensors",
                "B/s over the last 1 s",
                "1024 B/s",
                "GPT2_BENCH_HUB_MIN_BYTES_PER_S",
                "GPT2_BENCH_HUB_SLOW_SECONDS",
                "nothing was kept",
            ],
        ),
        (
            "merges.txt",
            Fault::Trickle,
            window,
            &["merges.txt", "B/s", "GPT2_BENCH_HUB_SLOW_SECONDS"],
        ),
        (
            "config.json",
            Fault::Endless,
            &[],
            &[
                "config.json",
                "announced no size",
                "the most a text file may have",
                "nothing was kept",
            ],
        ),
        (
            "model.safetensors",
            Fault::NoSize,
            &[],
            &[
                "model.safetensors",
                "announced no size",
                "weight file",
                "--from DIR",
            ],
        ),
        (
            "model.safetensors",
            Fault::Overlong,
            &[],
            &["model.safetensors", "more than the", "bytes it announced"],
        ),
        (
            "model.safetensors",
            Fault::WrongLinkedSize,
            &[],
            &["model.safetensors", "X-Linked-Size", "Content-Length"],
        ),
    ];
    for &(file, fault, envs, needles) in cases {
        let took = fail_then_retry(&server, &files, &clean, file, fault, envs, needles);
        assert!(
            took < Duration::from_secs(15),
            "{file} {fault:?}: took {took:?}"
        );
    }

    // A text file without a size is fine within the limit, and the floor can be turned off.
    let env = Env::new();
    server.set_fault("config.json", Some(Fault::NoSize));
    let out = env.out("unsized.bin");
    assert_ok(&env.export(Some(&server), REPO, &out, &[]));
    server.set_fault("config.json", None);
    assert_eq!(tensor_bytes(&out), tensor_bytes(&clean));
    let env = Env::new();
    let out = env.out("no-floor.bin");
    let o = output_within(
        env.command(Some(&server), REPO, &out, &[])
            .env("GPT2_BENCH_HUB_MIN_BYTES_PER_S", "0")
            .env("GPT2_BENCH_HUB_SLOW_SECONDS", "0.01"),
        Duration::from_secs(60),
    );
    assert_ok(&o);
}

/// Garbage in the hub's settings is a one-line error naming the variable, before any request.
#[test]
fn hub_settings_are_validated() {
    let server = HubServer::start(vec![Repo::new(REPO, fixture_files())]);
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "GPT2_BENCH_HUB_MIN_BYTES_PER_S",
            "fast",
            &[
                "GPT2_BENCH_HUB_MIN_BYTES_PER_S=fast",
                "bytes a second",
                "0 turns",
            ],
        ),
        (
            "GPT2_BENCH_HUB_MIN_BYTES_PER_S",
            "-5",
            &["GPT2_BENCH_HUB_MIN_BYTES_PER_S=-5"],
        ),
        (
            "GPT2_BENCH_HUB_SLOW_SECONDS",
            "0",
            &["GPT2_BENCH_HUB_SLOW_SECONDS=0", "seconds"],
        ),
        (
            "GPT2_BENCH_HUB_SLOW_SECONDS",
            "inf",
            &["GPT2_BENCH_HUB_SLOW_SECONDS=inf", "seconds"],
        ),
        (
            "HF_ENDPOINT",
            "ftp://127.0.0.1:21",
            &["HF_ENDPOINT=ftp://127.0.0.1:21", "http:// or https://"],
        ),
        (
            "HF_ENDPOINT",
            "not a url",
            &["HF_ENDPOINT=not a url", "unset it"],
        ),
    ];
    for &(name, value, needles) in cases {
        let env = Env::new();
        let out = env.out("x.bin");
        let o = output_within(
            env.command(Some(&server), REPO, &out, &[]).env(name, value),
            Duration::from_secs(60),
        );
        assert_one_line_error(&o, needles);
        assert!(!out.exists());
    }
    assert_eq!(server.request_count(), 0, "{:?}", server.requests());
}

/// Two free ports on 127.0.0.1, the second's number starting with the first's digits (1808
/// and 18080): an origin test by string prefix would take them for one.
fn prefix_ports(files: &BTreeMap<String, Vec<u8>>, token: &str) -> Option<(HubServer, HubServer)> {
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    for i in 0..400u64 {
        let port = 1024 + ((seed.wrapping_mul(2_654_435_761) + i * 7919) % (6553 - 1024)) as u16;
        let mut gated = Repo::new(REPO, files.clone());
        gated.token = Some(token.into());
        let Ok(endpoint) = HubServer::start_on(port, vec![gated]) else {
            continue;
        };
        for d in 0..10 {
            if let Ok(other) =
                HubServer::start_on(port * 10 + d, vec![Repo::new(REPO, files.clone())])
            {
                return Some((endpoint, other));
            }
        }
    }
    None
}

/// The token goes to the endpoint's origin only: a redirect to another port of the same host
/// (one whose number starts with the endpoint's, too) gets no Authorization header, a redirect
/// within the origin (relative or absolute) does, and a redirect to a non-http URL is refused.
/// (An https -> http downgrade is the same origin test, covered by the unit tests: this server
/// speaks no TLS.)
#[test]
fn the_token_goes_to_the_endpoints_origin_only() {
    let files = fixture_files();
    let token = "hf_secret123";
    let (endpoint, prefix_port) = prefix_ports(&files, token).expect("two free ports on 127.0.0.1");
    assert!(
        prefix_port.url.starts_with(&endpoint.url),
        "{}",
        prefix_port.url
    );
    let other_port = HubServer::start(vec![Repo::new(REPO, files.clone())]);
    let bearer = format!("Bearer {token}");
    let run = |file: &str, location: &str| -> (Env, Output) {
        let env = Env::new();
        std::fs::create_dir_all(env.home()).unwrap();
        std::fs::write(env.home().join("token"), format!("{token}\n")).unwrap();
        endpoint.set_redirect(file, Some(location));
        let o = env.export(Some(&endpoint), REPO, &env.out("x.bin"), &[]);
        endpoint.set_redirect(file, None);
        (env, o)
    };

    for elsewhere in [&prefix_port, &other_port] {
        for file in ["model.safetensors", "config.json"] {
            let before = endpoint.request_count();
            let (_env, o) = run(file, &format!("{}/cdn/{{sha}}", elsewhere.url));
            assert_ok(&o);
            let got = elsewhere.requests();
            assert!(!got.is_empty(), "{file}: the redirect was not followed");
            assert!(
                got.iter().all(|r| r.authorization.is_none()),
                "{file}: the token went to {}: {got:?}",
                elsewhere.url
            );
            let asked: Vec<_> = endpoint.requests().into_iter().skip(before).collect();
            assert!(
                asked
                    .iter()
                    .all(|r| r.authorization.as_deref() == Some(&*bearer)),
                "{asked:?}"
            );
        }
    }

    // Within the origin, relative and absolute: the token goes along.
    for (file, location) in [
        ("model.safetensors", "/cdn/{sha}".to_string()),
        ("config.json", "/cdn/{sha}".to_string()),
        ("model.safetensors", format!("{}/cdn/{{sha}}", endpoint.url)),
    ] {
        let before = endpoint.request_count();
        let (_env, o) = run(file, &location);
        assert_ok(&o);
        let cdn: Vec<_> = endpoint
            .requests()
            .into_iter()
            .skip(before)
            .filter(|r| r.path.starts_with("/cdn/"))
            .collect();
        assert!(!cdn.is_empty(), "{file} -> {location}: not followed");
        assert!(
            cdn.iter()
                .all(|r| r.authorization.as_deref() == Some(&*bearer)),
            "{file} -> {location}: {cdn:?}"
        );
    }

    // Not http(s): refused, one line, nothing asked of anyone else.
    for location in ["file:///etc/passwd", "ftp://127.0.0.1:21/x"] {
        let (env, o) = run("config.json", location);
        assert_one_line_error(&o, &["config.json", "not an http(s) URL", "refused"]);
        assert!(env.blobs(REPO).is_empty());
    }
}

/// SIGTERM or SIGINT in the middle of a download: the handler removes the temporary download
/// before the exit (143, 130), so no `blobs/*.incomplete` is left in the cache.
#[test]
fn a_signal_during_a_download_removes_the_incomplete_file() {
    let server = HubServer::start(vec![Repo::new(REPO, fixture_files())]);
    server.set_fault("model.safetensors", Some(Fault::Stall));
    for (signal, status) in [("TERM", 143), ("INT", 130)] {
        let env = Env::new();
        let out = env.out("x.bin");
        let mut child = env
            .command(Some(&server), REPO, &out, &[])
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "60")
            .env("GPT2_BENCH_HUB_SLOW_SECONDS", "60")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while env.incomplete(REPO).is_empty() {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!("no download in progress; stderr: {}", stderr(&o));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(child.id(), signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("SIG{signal} did not end the download");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(status), "SIG{signal}: {}", stderr(&o));
        assert!(
            env.incomplete(REPO).is_empty(),
            "SIG{signal} left {:?}",
            env.incomplete(REPO)
        );
        assert!(!out.exists());
    }
}

/// A server that accepts connections and never answers: stated as a timeout, within it.
#[test]
fn a_silent_server_is_a_stated_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _keep = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let env = Env::new();
    let out = env.out("x.bin");
    let start = Instant::now();
    let o = output_within(
        Command::new(BIN)
            .args(["--from", REPO, "--out", out.to_str().unwrap()])
            .env("HF_HOME", env.home())
            .env("HF_ENDPOINT", &url)
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "1")
            .env_remove("HF_HUB_OFFLINE"),
        Duration::from_secs(60),
    );
    assert_one_line_error(&o, &["cannot reach the Hugging Face hub", "within 1 s"]);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(!out.exists());
    let o = output_within(
        Command::new(BIN)
            .args(["--from", REPO, "--out", out.to_str().unwrap()])
            .env("HF_HOME", env.home())
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "soon")
            .env_remove("HF_HUB_OFFLINE"),
        Duration::from_secs(60),
    );
    assert_one_line_error(&o, &["HF_HUB_DOWNLOAD_TIMEOUT=soon", "seconds"]);
}

/// The data section of a gpt2-bench weight file (every tensor and the tokenizer's place in
/// it aside, the header records the source, which differs between a hub and a directory).
fn tensor_bytes(path: &Path) -> Vec<f32> {
    let file = gpt2_weights::WeightFile::open_verified(path).unwrap();
    let tokenizer = file.tokenizer().unwrap();
    assert_eq!(tokenizer.encode("Hello world").unwrap(), vec![15496, 995]);
    file.data_f32().unwrap().to_vec()
}
