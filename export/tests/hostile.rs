//! `gpt2-export` against hostile input, one test per class of README's "Reliability" section:
//! each runs the real binary and checks the exit status, the one-line error, and that nothing
//! the user had is lost.

#![cfg(unix)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gpt2-export");

fn export(args: &[&str]) -> Output {
    output_within(
        Command::new(BIN).args(args).env("HF_HUB_OFFLINE", "1"),
        Duration::from_secs(120),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_closed_stdout_or_stderr_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny.bin");
    // A successful export whose report line cannot be printed: the file is still written.
    let (code, err) = run_with_closed(
        BIN,
        &["--synthetic", "tiny", "--quiet", "--out", s(&out)],
        Closed::Stdout,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(gpt2_weights::WeightFile::open_verified(&out).is_ok());
    for args in [vec!["inspect", s(&out)], vec!["--help"], vec!["--version"]] {
        let (code, err) = run_with_closed(BIN, &args, Closed::Stdout);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Errors with stderr closed keep their status.
    for (args, want) in [
        (vec!["inspect", "nope.bin"], 3),
        (vec!["--bogus"], 3),
        (vec!["inspect", s(&out)], 0),
    ] {
        let (code, _) = run_with_closed(BIN, &args, Closed::Stderr);
        assert_eq!(code, Some(want), "{args:?}");
    }
}

#[test]
fn special_files_are_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    assert_input_error(
        &export(&["inspect", s(&fifo)]),
        &["FIFO", "not a regular file"],
    );
    assert_input_error(&export(&["inspect", "/dev/urandom"]), &["character device"]);
    // A shard named in the index that is a FIFO.
    let dir = copy_fixture(tmp.path());
    std::fs::rename(dir.join("model.safetensors"), tmp.path().join("real")).unwrap();
    mkfifo(&dir.join("shard-1.safetensors"));
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"wte.weight": "shard-1.safetensors"}}"#,
    )
    .unwrap();
    let out = tmp.path().join("out.bin");
    assert_input_error(
        &export(&["--from", s(&dir), "--out", s(&out)]),
        &["shard-1.safetensors", "FIFO"],
    );
    // config.json as a FIFO.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    mkfifo(&dir.join("config.json"));
    assert_eq!(
        export(&["--from", s(&dir), "--out", s(&out)]).status.code(),
        Some(3)
    );
    assert!(!out.exists());
}

#[test]
fn outputs_never_replace_an_input_a_link_or_a_special_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(tmp.path());
    let input = dir.join("model.safetensors");
    let before = std::fs::read(&input).unwrap();
    assert_input_error(
        &export(&["--from", s(&dir), "--out", s(&input)]),
        &["model.safetensors", "input of this run"],
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        before,
        "the input was changed"
    );
    // A symbolic link and a FIFO stay what they are.
    let target = tmp.path().join("target.bin");
    std::fs::write(&target, b"keep me").unwrap();
    let link = tmp.path().join("link.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_input_error(
        &export(&["--synthetic", "tiny", "--out", s(&link)]),
        &["symbolic link"],
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    assert_input_error(
        &export(&["--synthetic", "tiny", "--out", s(&fifo)]),
        &["FIFO"],
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_input_error(
        &export(&["--synthetic", "tiny", "--out", s(tmp.path())]),
        &["is a directory"],
    );
    // An existing regular file is replaced as a whole, atomically.
    let regular = tmp.path().join("old.bin");
    std::fs::write(&regular, b"old contents").unwrap();
    let o = export(&["--synthetic", "tiny", "--quiet", "--out", s(&regular)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(gpt2_weights::WeightFile::open_verified(&regular).is_ok());
    assert!(entries(tmp.path(), "", ".partial").is_empty());
}

#[test]
fn non_finite_weights_are_refused_with_the_tensor_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(tmp.path());
    let path = dir.join("model.safetensors");
    let mut st = SafetensorsFile::read(&path);
    let r = st.range("transformer.ln_f.bias");
    let dtype = st
        .entries
        .iter()
        .find(|(k, _)| k == "transformer.ln_f.bias")
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(dtype, "F16", "the fixture's dtype changed");
    st.data[r.start..r.start + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    st.write(&path);
    let out = tmp.path().join("out.bin");
    assert_input_error(
        &export(&["--from", s(&dir), "--out", s(&out)]),
        &["ln_f.bias", "non-finite", "NaN"],
    );
    assert!(!out.exists());
    assert!(entries(tmp.path(), "", ".partial").is_empty());
}

/// The refusal of a NaN in a checkpoint names the safetensors file that holds it, not the
/// output (`export/src/hf.rs` hands the writer the shard each tensor came from).
#[test]
fn non_finite_checkpoint_weights_are_refused_naming_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(tmp.path());
    let path = dir.join("model.safetensors");
    let mut st = SafetensorsFile::read(&path);
    let r = st.range("transformer.h.1.mlp.c_fc.weight");
    st.data[r.start + 2 * 5..r.start + 2 * 6].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    st.write(&path);
    for out in ["out.bin", "out.gguf"] {
        let out = tmp.path().join(out);
        let o = export(&["--from", s(&dir), "--out", s(&out)]);
        assert_input_error(
            &o,
            &[
                &format!("{}: tensor h.1.mlp.c_fc.weight", s(&path)),
                "a non-finite value (inf) at index 5",
                "sound copy",
            ],
        );
        assert!(!stderr(&o).contains("out."), "{}", stderr(&o));
        assert!(!out.exists());
    }
}

/// A weight file whose tokenizer no run could build (here a merge whose result is not a token,
/// under a recomputed header checksum) is refused by every conversion, naming that file and
/// the merge, and `inspect` says it cannot run.
#[test]
fn weight_files_whose_tokenizer_cannot_be_built_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.bin");
    small_weight_file(&bad, |_| {}, "bad");
    // The token `Ġthe` (a u32 length and its UTF-8) becomes `Ġtha`; merge 2 (`Ġt` `he`) still
    // makes `Ġthe`.
    patch_header(&bad, b"\x05\0\0\0\xc4\xa0the", b"\x05\0\0\0\xc4\xa0tha");
    let want = format!(
        "{}: its tokenizer cannot be built: merge 2 (\"Ġt\" \"he\") makes \"Ġthe\", which is \
         not a token of the vocabulary",
        s(&bad)
    );
    let o = export(&["inspect", s(&bad)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("runnable:    NO: {want}")),
        "{}",
        stdout(&o)
    );
    for out in ["y.bin", "y.gguf"] {
        for dtype in [&[][..], &["--dtype", "f16"]] {
            let out = tmp.path().join(out);
            let mut args = vec!["--from", s(&bad), "--out", s(&out)];
            args.extend(dtype);
            assert_input_error(&export(&args), &[&want, "export the model again"]);
            assert!(!out.exists(), "{args:?}");
        }
    }
    assert_eq!(entries(tmp.path(), "", ""), vec![bad]);
}

#[test]
fn checkpoints_that_disagree_with_their_config_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.bin");
    let run = |dir: &Path| export(&["--from", s(dir), "--out", s(&out)]);
    let edit_config = |dir: &Path, key: &str, value: serde_json::Value| {
        let p = dir.join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        v[key] = value;
        std::fs::write(&p, v.to_string()).unwrap();
    };
    // Fewer layers in config.json than in the weights: h.1.* would be dropped.
    let dir = copy_fixture(&tmp.path().join("a"));
    edit_config(&dir, "n_layer", 1.into());
    assert_input_error(&run(&dir), &["h.1.", "not part of the model", "disagree"]);
    // A config key of the wrong type is an error, never a default.
    for (key, value, needle) in [
        (
            "layer_norm_epsilon",
            serde_json::json!("abc"),
            "layer_norm_epsilon must be a number",
        ),
        (
            "tie_word_embeddings",
            serde_json::json!("yes"),
            "tie_word_embeddings must be true or false",
        ),
        (
            "n_embd",
            serde_json::json!("32"),
            "n_embd must be a non-negative integer",
        ),
        (
            "model_type",
            serde_json::json!(7),
            "model_type must be a string",
        ),
        (
            "activation_function",
            serde_json::json!(["gelu"]),
            "activation_function must be a string",
        ),
    ] {
        let dir = copy_fixture(&tmp.path().join(key));
        edit_config(&dir, key, value);
        assert_input_error(&run(&dir), &[needle]);
    }
    // One tensor stored with and without the `transformer.` prefix.
    let dir = copy_fixture(&tmp.path().join("dup"));
    let path = dir.join("model.safetensors");
    let mut st = SafetensorsFile::read(&path);
    st.duplicate("transformer.h.0.ln_1.bias", "h.0.ln_1.bias");
    st.write(&path);
    assert_input_error(&run(&dir), &["stored twice", "h.0.ln_1.bias"]);
    // A tied model whose lm_head.weight is not wte.weight.
    let dir = copy_fixture(&tmp.path().join("lm_head"));
    let path = dir.join("model.safetensors");
    let mut st = SafetensorsFile::read(&path);
    st.duplicate("transformer.wte.weight", "lm_head.weight");
    let r = st.range("lm_head.weight");
    st.data[r.start] ^= 1;
    st.write(&path);
    assert_input_error(&run(&dir), &["lm_head.weight differs from wte.weight"]);
    assert!(!out.exists());
    // An unchanged checkpoint exports to the same bytes every time.
    let dir = copy_fixture(&tmp.path().join("ok"));
    let mut first = None;
    for _ in 0..3 {
        let o = run(&dir);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(*first.get_or_insert_with(|| bytes.clone()), bytes);
    }
}

#[test]
fn a_huge_shard_index_is_parsed_in_linear_time() {
    // 200,000 distinct shard names: the quadratic de-duplication this replaced took 37 s for
    // 20,000. Not a timing assertion: the bound only catches a return to O(n^2) (hours here).
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(tmp.path());
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = (0..200_000)
        .map(|i| (format!("t{i}"), format!("shard-{i}.safetensors").into()))
        .collect();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let out = tmp.path().join("out.bin");
    let o = output_within(
        Command::new(BIN).args(["--from", s(&dir), "--out", s(&out)]),
        Duration::from_secs(60),
    );
    assert_input_error(&o, &["shard-0.safetensors"]);
}

/// Every catchable terminating signal during an export removes its temporary file and exits
/// with 128 + the signal number; the destination is never written.
#[test]
fn every_terminating_signal_removes_the_partial_file() {
    for (signal, number) in [
        ("INT", 2),
        ("QUIT", 3),
        ("USR1", 10),
        ("ALRM", 14),
        ("TERM", 15),
        ("HUP", 1),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("gpt2.bin");
        // GPT-2 small takes seconds to generate: long enough to interrupt mid-write.
        let mut child = Command::new(BIN)
            .args(["--synthetic", "gpt2", "--quiet", "--out", s(&dest)])
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while entries(tmp.path(), "", ".partial").is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no temporary file appeared"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "export ended before the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(child.id(), signal);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + number), "SIG{signal}: {status:?}");
        assert!(!dest.exists(), "SIG{signal}: the destination was written");
        assert!(
            entries(tmp.path(), "", ".partial").is_empty(),
            "SIG{signal}: the temporary file was left behind"
        );
    }
}

#[test]
fn usage_and_input_errors_exit_3() {
    assert_eq!(export(&["--bogus"]).status.code(), Some(3));
    assert_eq!(export(&["--synthetic", "gpt3"]).status.code(), Some(3));
    assert_input_error(
        &export(&["--from", "a/b/c/not-here"]),
        &["no such file or directory"],
    );
    let o = export(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Exit status: 0 success; 3 usage or input error"));
    // The cause is said once.
    let o = export(&["inspect", "nope.bin"]);
    assert_input_error(&o, &["nope.bin"]);
    assert_eq!(
        stderr(&o).matches("no such file").count(),
        1,
        "{}",
        stderr(&o)
    );
}
