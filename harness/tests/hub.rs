//! The default model from the hub, against the local server that speaks the hub's protocol
//! (`export/tests/support/hub_server.rs`): with no `--model` and no `weights/gpt2.bin`, the
//! default run exports GPT-2 from the hub (here the server's `openai-community/gpt2`, a tiny
//! stand-in); once the hub's cache holds it, it is exported again from the cache without a
//! request; with no hub and no cache it falls back to the synthetic model.

#![cfg(unix)]

#[path = "../../export/tests/support/hub_server.rs"]
mod hub_server;

use std::path::Path;
use std::process::{Command, Output};

use hub_server::{HubServer, Repo, fixture_files};

fn default_run(weights: &Path, hf_home: &Path, endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt2-bench"))
        .args(["--compare", "--prompt", "Hello world", "--max-tokens", "2"])
        .args(["--backends", "naive,simd-kv", "-q"])
        .env("GPT2_BENCH_WEIGHTS_DIR", weights)
        .env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "2")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_CACHE")
        .output()
        .expect("run gpt2-bench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn default_model_comes_from_the_hub_then_from_its_cache_then_falls_back() {
    let server = HubServer::start(vec![Repo::new("openai-community/gpt2", fixture_files())]);
    let tmp = tempfile::tempdir().unwrap();
    let (weights, hf_home) = (tmp.path().join("weights"), tmp.path().join("hf"));
    let gpt2 = weights.join("gpt2.bin");

    let o = default_run(&weights, &hf_home, &server.url);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exported openai-community/gpt2 from the Hugging Face hub"),
        "{}",
        stderr(&o)
    );
    assert!(gpt2.is_file());
    assert!(server.request_count() > 0);
    let exported = std::fs::read(&gpt2).unwrap();

    // The hub's cache holds it now: the same run exports it again with no request.
    std::fs::remove_file(&gpt2).unwrap();
    let before = server.request_count();
    let o = default_run(&weights, &hf_home, &server.url);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        server.request_count(),
        before,
        "the cached export asked the hub"
    );
    assert_eq!(std::fs::read(&gpt2).unwrap(), exported);

    // And with weights/gpt2.bin there, the hub is not involved at all.
    let o = default_run(&weights, &hf_home, "http://127.0.0.1:9");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));

    // No weights, no cache, no hub: the synthetic model with its one-line note (created here
    // beforehand from the tiny model, to keep the test fast).
    let empty_home = tmp.path().join("empty-hf");
    let other = tmp.path().join("other-weights");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(&gpt2, other.join("synthetic-gpt2-seed0.bin")).unwrap();
    let o = default_run(&other, &empty_home, "http://127.0.0.1:9");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let notes: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("note:"))
        .map(String::from)
        .collect();
    assert_eq!(notes.len(), 1, "{}", stderr(&o));
    assert!(notes[0].contains("cannot be reached"), "{notes:?}");
    assert!(!other.join("gpt2.bin").exists());
}
