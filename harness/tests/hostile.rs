//! `gpt2-bench` against hostile input, one test per class of README's "Reliability" section:
//! each runs the real binary and checks the exit status, the one-line error, and that nothing
//! the user had is lost.

#![cfg(unix)]

#[path = "../../export/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gpt2-bench");

fn bench(args: &[&str]) -> Output {
    output_within(
        Command::new(BIN)
            .args(args)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("MATMUL_NUM_THREADS"),
        Duration::from_secs(300),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The small model of the support module, written once per test binary.
fn small() -> &'static str {
    static PATH: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = PATH.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("small.bin");
        small_weight_file(&p, |_| {}, "small");
        (dir, p)
    });
    s(p)
}

const QUICK: &[&str] = &["--max-tokens", "3", "--runs", "1", "--warmup", "0", "-q"];

fn compare(model: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--compare", "--prompt-ids", "1 2 3", "--model", model];
    args.extend_from_slice(QUICK);
    args.extend_from_slice(extra);
    bench(&args)
}

#[test]
fn a_closed_stdout_or_stderr_never_panics() {
    let model = small();
    let compare_args = [
        &[
            "--compare",
            "--prompt-ids",
            "1 2",
            "--model",
            model,
            "--no-roofline",
        ][..],
        QUICK,
    ]
    .concat();
    let single_args = [
        "--backend",
        "simd-kv",
        "--prompt-ids",
        "1 2",
        "--model",
        model,
        "--max-tokens",
        "3",
    ];
    let cases: [(&[&str], i32); 6] = [
        (&["backends"], 0),
        (&["inspect", model], 0),
        (&["--help"], 0),
        (&compare_args, 0),
        (&single_args, 0),
        (&["inspect", "nope.bin"], 3),
    ];
    for (args, want) in cases {
        for closed in [Closed::Stdout, Closed::Stderr] {
            let (code, other) = run_with_closed(BIN, args, closed);
            assert_eq!(code, Some(want), "{args:?} with {closed:?} closed: {other}");
            assert!(!other.contains("panicked"), "{args:?}: {other}");
        }
    }
}

#[test]
fn sizes_are_checked_before_anything_is_allocated() {
    for flag in ["--runs", "--warmup"] {
        let o = bench(&[
            "--compare",
            "--prompt",
            "hi",
            "--model",
            small(),
            flag,
            "18446744073709551615",
        ]);
        assert_input_error(&o, &[flag, "more than the 10000 runs"]);
    }
    for n in ["18446744073709551615", "1000000000000"] {
        let o = bench(&["--compare", "--prompt-tokens", n, "--model", small()]);
        assert_input_error(&o, &["--prompt-tokens", "longer than the model's context"]);
    }
    // Each config field in range, their products not: simd and simd-kv would size their
    // activations (n_ctx, mlp_hidden) at 1.1 TB. The others size buffers by the prompt.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("long.bin");
    small_weight_file(
        &path,
        |c| {
            c.n_ctx = 1 << 20;
            c.mlp_hidden = 1 << 18;
        },
        "long",
    );
    for backend in ["simd", "simd-kv"] {
        let o = compare(s(&path), &["--backends", backend, "--no-roofline"]);
        assert_input_error(
            &o,
            &[
                backend,
                "needs 2.20 TB",
                "(n_ctx, max(3C, H)), 1.10 TB",
                "largest supported shapes",
            ],
        );
    }
    let o = compare(
        s(&path),
        &["--backends", "naive,ndarray,candle", "--no-roofline"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // They size them by the prompt: a prompt that fills this context is checked the same way.
    let full = (1u32 << 20).to_string();
    for (backend, needle) in [
        ("naive", "MLP activations (T, H), 1.10 TB"),
        ("ndarray", "attention scores, 8.80 TB"),
        ("candle", "attention scores, 17.59 TB"),
    ] {
        let o = bench(&[
            "--compare",
            "--backends",
            backend,
            "--prompt-tokens",
            &full,
            "--model",
            s(&path),
            "--max-tokens",
            "1",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--no-roofline",
            "-q",
        ]);
        assert_input_error(&o, &[backend, needle]);
    }
}

#[test]
fn special_files_are_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    let f = s(&fifo);
    assert_input_error(&bench(&["inspect", f]), &["FIFO", "not a regular file"]);
    assert_input_error(&bench(&["inspect", "/dev/urandom"]), &["character device"]);
    assert_input_error(&compare(f, &[]), &["FIFO"]);
    assert_input_error(
        &compare(small(), &["--baseline", f]),
        &["--baseline", "FIFO"],
    );
    assert_input_error(&bench(&["check", "--golden", f]), &["FIFO"]);
    assert_input_error(
        &compare(small(), &["--baseline", "/dev/zero"]),
        &["character device"],
    );
    // JSON inputs have a size limit, checked before reading.
    let big = tmp.path().join("big.json");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(65 << 20).unwrap();
    assert_input_error(
        &compare(small(), &["--baseline", s(&big)]),
        &["more than the 67108864 bytes"],
    );
}

#[test]
fn outputs_never_replace_an_input_a_link_or_a_special_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.bin");
    small_weight_file(&model, |_| {}, "model");
    let before = std::fs::read(&model).unwrap();
    assert_input_error(
        &compare(s(&model), &["--plot", s(&model)]),
        &["--plot", "input of this run"],
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    assert_input_error(
        &compare(s(&model), &["--plot", s(&fifo)]),
        &["--plot", "FIFO"],
    );
    let link = tmp.path().join("chart.svg");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    assert_input_error(
        &compare(s(&model), &["--plot", s(&link)]),
        &["symbolic link"],
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // --save DIR whose history.md is a link to somewhere else.
    let saved = tmp.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    std::os::unix::fs::symlink(&model, saved.join("history.md")).unwrap();
    assert_input_error(
        &compare(s(&model), &["--save", s(&saved)]),
        &["history.md", "symbolic link"],
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // A regular file is replaced as a whole.
    let chart = tmp.path().join("old.svg");
    std::fs::write(&chart, "old").unwrap();
    let o = compare(s(&model), &["--plot", s(&chart), "--no-roofline"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&chart).unwrap().starts_with("<svg"));
}

#[test]
fn non_finite_numbers_fail_loudly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("nan.bin");
    small_weight_file(&model, |_| {}, "nan");
    set_weight(&model, "ln_f.bias", 3, f32::NAN);
    let o = compare(s(&model), &["--no-roofline"]);
    assert_input_error(&o, &["naive", "NaN", "step 0", "non-finite"]);
    let o = bench(&[
        "--backend",
        "simd-kv",
        "--prompt-ids",
        "1 2",
        "--model",
        s(&model),
        "--max-tokens",
        "3",
        "-q",
    ]);
    assert_input_error(&o, &["backend simd-kv: logit", "NaN", "step 0"]);
    set_weight(&model, "ln_f.bias", 3, f32::INFINITY);
    assert_input_error(&compare(s(&model), &["--no-roofline"]), &["non-finite"]);

    // Golden logits with a NaN: an input error naming the file, never "0.00e0 ok".
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../backends/tests/fixtures/golden.json");
    let mut golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    golden["checkpoint"] = s(&fixture_checkpoint()).into();
    golden["logits_file"] = "nan.safetensors".into();
    std::fs::write(tmp.path().join("golden.json"), golden.to_string()).unwrap();
    let header = br#"{"logits":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&1.0f32.to_le_bytes());
    st.extend_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(tmp.path().join("nan.safetensors"), st).unwrap();
    let o = bench(&["check", "--golden", s(&tmp.path().join("golden.json"))]);
    assert_input_error(&o, &["nan.safetensors", "non-finite"]);

    // A baseline whose rates are 0 is refused, not "faster by inf%".
    let o = compare(small(), &["--format", "json", "--no-roofline"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    report["results"][0]["decode_tok_per_s"]["mean"] = 0.0.into();
    let baseline = tmp.path().join("zero.json");
    std::fs::write(&baseline, report.to_string()).unwrap();
    let o = compare(small(), &["--baseline", s(&baseline), "--no-roofline"]);
    assert_input_error(&o, &["--baseline", "not a positive finite rate"]);
    // A baseline that gates nothing is an error too.
    report["results"] = serde_json::json!([]);
    std::fs::write(&baseline, report.to_string()).unwrap();
    let o = compare(small(), &["--baseline", s(&baseline), "--no-roofline"]);
    assert_input_error(&o, &["--baseline", "no results"]);
}

#[test]
fn threads_are_limited_and_oversubscription_is_reported() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let o = compare(small(), &["--threads", "10000"]);
    assert_input_error(&o, &["--threads 10000", "threads per logical core"]);
    let over = (cores + 1).to_string();
    let o = compare(
        small(),
        &["--threads", &over, "--format", "json", "--no-roofline"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("warning: --threads {over} is more than")));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&format!("--threads {over}")),
        "{warnings}"
    );
    // Flags of the other mode are refused.
    assert_input_error(
        &compare(small(), &["--profile"]),
        &[
            "--profile does not apply to `gpt2-bench compare`",
            "a flag of `run`",
        ],
    );
    let o = bench(&[
        "--backend",
        "naive",
        "--prompt",
        "hi",
        "--model",
        small(),
        "--save",
    ]);
    assert_input_error(
        &o,
        &[
            "--save does not apply to `gpt2-bench run`",
            "a flag of `compare`",
        ],
    );
    let env = output_within(
        Command::new(BIN)
            .args(["--compare", "--prompt", "hi", "--model", small()])
            .env("MATMUL_NUM_THREADS", "lots"),
        Duration::from_secs(60),
    );
    assert_input_error(&env, &["MATMUL_NUM_THREADS", "not a thread count"]);
}

/// Ctrl-C during `check --golden` without `--model` removes the temporary directory holding
/// the exported golden checkpoint.
#[test]
fn an_interrupted_golden_check_leaves_no_temporary_directory() {
    let golden =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../backends/tests/fixtures/golden.json");
    let mut caught = 0;
    for _ in 0..20 {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["check", "--golden", s(&golden), "--threads", "1"])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait (busily: the check takes a fraction of a second) for its temporary directory.
        let seen = loop {
            if !entries(tmp.path(), "gpt2-bench-", "").is_empty() {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
        };
        if !seen {
            continue;
        }
        kill(child.id(), "INT");
        let status = child.wait().unwrap();
        if status.code() == Some(0) {
            continue; // finished before the signal arrived
        }
        assert_eq!(status.code(), Some(130), "{status:?}");
        assert!(
            entries(tmp.path(), "", "").is_empty(),
            "left behind: {:?}",
            entries(tmp.path(), "", "")
        );
        caught += 1;
        if caught == 2 {
            return;
        }
    }
    panic!("the check never ran long enough to be interrupted ({caught} times caught)");
}

#[test]
fn text_from_files_is_escaped_and_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    // A provenance that would set the terminal's title and clear the screen.
    let model = tmp.path().join("title.bin");
    small_weight_file(&model, |_| {}, "evil\u{1b}]0;pwned\u{7}\n\u{1b}[2J");
    let o = bench(&["inspect", s(&model)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!o.stdout.contains(&0x1b), "raw escape in {:?}", stdout(&o));
    assert!(stdout(&o).contains("evil\\u{1b}]0;pwned"), "{}", stdout(&o));
    let o = compare(s(&model), &["--no-roofline"]);
    assert!(!o.stdout.contains(&0x1b) && !o.stderr.contains(&0x1b));
    // A tensor name with a newline and an escape sequence, in an otherwise valid file.
    let named = tmp.path().join("named.bin");
    small_weight_file(&named, |_| {}, "named");
    patch_header(&named, b"wte.weight", b"wt\n\x1b[2Jght");
    let o = bench(&["inspect", s(&named)]);
    assert_input_error(&o, &["named.bin", "wt\\n\\u{1b}[2Jght"]);
    // A cause is said once.
    let o = bench(&["inspect", "nope.bin"]);
    assert_input_error(&o, &["nope.bin"]);
    assert_eq!(
        stderr(&o).matches("no such file").count(),
        1,
        "{}",
        stderr(&o)
    );
    let o = bench(&["--bogus"]);
    assert_eq!(o.status.code(), Some(3));
}
