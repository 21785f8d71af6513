//! The `gpt2-export` command line, run as a user would: exit codes, one-line errors, files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gpt2_export(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpt2-export"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run gpt2-export")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failure with exactly one line on stderr that contains every `needle`.
fn assert_fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail; stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error, got: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

fn tiny(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let out = dir.join(name);
    let o = gpt2_export(
        &[
            "--synthetic",
            "tiny",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

#[test]
fn synthetic_export_is_deterministic_and_inspectable() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny(tmp.path(), "a.bin", "5");
    let b = tiny(tmp.path(), "b.bin", "5");
    let c = tiny(tmp.path(), "c.bin", "6");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());

    let o = gpt2_export(&["inspect", a.to_str().unwrap(), "--tensors"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "model:       synthetic-tiny",
        "source:      synthetic:tiny seed=5",
        "3 layers, 4 heads of 15, n_embd 60, MLP 240, context 128, vocab 50257",
        "50257 tokens, 50000 merges, end-of-text id 50256",
        "h.2.mlp.c_proj.weight",
        "OK (verified",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn default_output_goes_to_the_weights_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let o = gpt2_export(
        &["--synthetic", "tiny", "--seed", "2"],
        &[("GPT2_BENCH_WEIGHTS_DIR", dir.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("synthetic-tiny-seed2.bin").is_file());
}

#[test]
fn inspect_rejects_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(tiny(tmp.path(), "good.bin", "1")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };

    let missing = tmp.path().join("missing.bin");
    let o = gpt2_export(&["inspect", missing.to_str().unwrap()], &[]);
    assert_fails_with(
        &o,
        &["missing.bin", "no such file", "gpt2-export --synthetic"],
    );

    let p = write(
        "text.bin",
        b"this is not a weight file at all, just some text here......",
    );
    assert_fails_with(
        &gpt2_export(&["inspect", &p], &[]),
        &["text.bin", "not a gpt2-bench weight file"],
    );

    let p = write("empty.bin", b"");
    assert_fails_with(
        &gpt2_export(&["inspect", &p], &[]),
        &["not a gpt2-bench weight file"],
    );

    let mut v3 = good.clone();
    v3[8] = 3;
    let p = write("v3.bin", &v3);
    assert_fails_with(
        &gpt2_export(&["inspect", &p], &[]),
        &["unsupported weight-format version 3", "versions 1 to 2"],
    );

    let p = write("cut.bin", &good[..good.len() / 2]);
    assert_fails_with(
        &gpt2_export(&["inspect", &p], &[]),
        &["cut.bin", "truncated", "export it again"],
    );

    let p = write("short.bin", &good[..20]);
    assert_fails_with(&gpt2_export(&["inspect", &p], &[]), &["truncated"]);

    let mut lying = good.clone();
    lying[40..48].copy_from_slice(&(u64::MAX - 7).to_le_bytes()); // file_len
    let p = write("lying.bin", &lying);
    assert_fails_with(
        &gpt2_export(&["inspect", &p], &[]),
        &["inconsistent section sizes"],
    );

    let mut header = good.clone();
    header[200] ^= 0x40;
    let p = write("header.bin", &header);
    assert_fails_with(
        &gpt2_export(&["inspect", &p], &[]),
        &["checksum mismatch in header"],
    );

    // Damage one byte of tensor data: the header is fine, so only the checksum can tell.
    let mut data = good.clone();
    let at = data.len() - 5;
    data[at] ^= 1;
    let p = write("data.bin", &data);
    let o = gpt2_export(&["inspect", &p], &[]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("checksum:    FAILED") && stdout(&o).contains("tensor data"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn hub_unreachable_fails_fast_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let out = tmp.path().join("gpt2.bin");
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let o = gpt2_export(
        &[
            "--from",
            "openai-community/gpt2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("HF_HOME", home), ("HF_ENDPOINT", "http://127.0.0.1:9")],
    );
    assert_fails_with(
        &o,
        &[
            "cannot reach the Hugging Face hub",
            "openai-community/gpt2",
            "--from DIR",
            "--synthetic gpt2",
        ],
    );
    assert!(!out.exists());

    let o = gpt2_export(
        &[
            "--from",
            "openai-community/gpt2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("HF_HOME", home), ("HF_HUB_OFFLINE", "1")],
    );
    assert_fails_with(
        &o,
        &["HF_HUB_OFFLINE is set", "config.json", "not in the cache"],
    );
}

#[test]
fn usage_errors() {
    let o = gpt2_export(&[], &[]);
    assert_fails_with(&o, &["nothing to do"]);
    let o = gpt2_export(&["--synthetic", "gpt3"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("possible values"), "{}", stderr(&o));
    let o = gpt2_export(&["--from", "a/b/c/not-here"], &[]);
    assert_fails_with(&o, &["no such file or directory"]);
    let o = gpt2_export(&["--synthetic", "tiny", "--dtype", "int4"], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("unknown dtype \"int4\"") && err.contains("f32, f16, bf16, q8_0"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn interrupted_export_leaves_nothing_behind() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("gpt2.bin");
    // GPT-2 small takes seconds to generate: long enough to interrupt mid-write.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt2-export"))
        .args([
            "--synthetic",
            "gpt2",
            "--quiet",
            "--out",
            dest.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let partial = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
    };
    let start = Instant::now();
    while !partial() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary file appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "export ended before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The shell's built-in kill: no procps binary needed on a minimal machine.
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        !dest.exists(),
        "an interrupted export wrote the destination"
    );
    assert!(!partial(), "the temporary file was left behind");
}
