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
            .env_remove("MATMUL_NUM_THREADS")
            .env_remove("GPT2_BENCH_ISA")
            .env_remove("GPT2_BENCH_FORCE_SCALAR"),
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
    // A results store of the committed reports, for `history` and `report`.
    let results = tempfile::tempdir().unwrap();
    let store = s(results.path());
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench-results");
    let o = bench(&[
        "history",
        "--results",
        store,
        "--import",
        committed,
        "--machine",
        "all",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let html = results.path().join("r.html");
    let cases: [(&[&str], i32); 8] = [
        (&["backends"], 0),
        (&["inspect", model], 0),
        (&["--help"], 0),
        (&compare_args, 0),
        (&single_args, 0),
        (&["inspect", "nope.bin"], 3),
        (&["history", "--results", store, "--machine", "all"], 0),
        (&["report", "--html", s(&html), "--results", store], 0),
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

/// Writes an executable shell script standing in for a `gpt2-bench` binary.
fn fake_binary(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether process `pid` still exists (a zombie counts: nobody has waited for it).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (at most `limit`) until `path` holds a pid, and returns it.
fn wait_for_pid(path: &Path, limit: Duration) -> Option<u32> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `ab`'s failure: exit status 3, and after its progress lines (`round ...`) one error line
/// holding every needle.
fn ab_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(3), "stderr: {e}");
    let mut lines = e.lines();
    let last = lines.next_back().unwrap_or("");
    assert!(lines.all(|l| l.starts_with("round ")), "{e}");
    assert!(last.starts_with("error: "), "{e}");
    assert!(!last.chars().any(char::is_control), "{last:?}");
    for n in needles {
        assert!(last.contains(n), "expected {n:?} in: {last}");
    }
}

/// `ab ... -- compare args` on the small model with `baseline` as the baseline binary.
fn ab(baseline: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["ab", "--baseline-bin", s(baseline), "--rounds", "3"])
        .args(extra)
        .args(["--", "--model", small(), "--prompt-ids", "1 2 3"])
        .args(["--max-tokens", "3", "--runs", "1", "--warmup", "0"])
        .args(["--backends", "naive,simd-kv"])
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MATMUL_NUM_THREADS")
        .env_remove("GPT2_BENCH_ISA")
        .env_remove("GPT2_BENCH_FORCE_SCALAR");
    c
}

#[test]
fn ab_refuses_children_that_ran_something_else_or_report_no_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |baseline: &Path| output_within(&mut ab(baseline, &[]), Duration::from_secs(300));
    // The real binary, its report edited on the way out.
    let edited = |name: &str, sed: &str| {
        fake_binary(
            tmp.path(),
            name,
            &format!("'{BIN}' \"$@\" | sed -e '{sed}'; exit 0"),
        )
    };
    let other_model = edited(
        "other-model",
        r#"s/"checksum": "xxh3:[0-9a-f]*"/"checksum": "xxh3:0123456789abcdef"/"#,
    );
    ab_error(
        &run(&other_model),
        &[
            "round 1 of the candidate binary ran something else than round 1 of the baseline",
            "model: weight checksum xxh3:",
            "against xxh3:0123456789ab",
        ],
    );
    let other_length = edited("other-length", r#"s/"max_tokens": 3/"max_tokens": 4/"#);
    ab_error(
        &run(&other_length),
        &["token count: --max-tokens 3 against 4"],
    );
    let other_prompt = edited(
        "other-prompt",
        r#"/"prompt_token_ids"/,/]/s/^\( *\)3$/\1 4/"#,
    );
    ab_error(&run(&other_prompt), &["prompt: token 2 is id 3 against 4"]);
    // The rates, each object's "max" (prefill, decode, ...), replaced.
    for (rate, says) in [
        ("0.0", "row reports"),
        ("-12.5", "not a positive rate"),
        ("\"NaN\"", "not a gpt2-bench compare report"),
    ] {
        let bad = edited(
            &format!("rate{rate}"),
            &format!(r#"s/"max": [0-9.e+-]*/"max": {rate}/"#),
        );
        ab_error(&run(&bad), &["the baseline binary's report", says]);
    }
}

#[test]
fn ab_stops_a_hung_child_after_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("pid");
    let hung = fake_binary(
        tmp.path(),
        "hung",
        &format!(
            "echo $$ > '{}'; echo 'loading...' >&2; exec sleep 120",
            s(&pid_file)
        ),
    );
    let start = std::time::Instant::now();
    let o = output_within(&mut ab(&hung, &["--timeout", "3"]), Duration::from_secs(60));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    ab_error(
        &o,
        &[
            "the baseline binary",
            "ran for more than 3 s (the timeout) and was stopped",
            "loading...",
        ],
    );
    let pid = wait_for_pid(&pid_file, Duration::from_secs(1)).unwrap();
    assert!(!alive(pid), "the hung child {pid} is still there");
    // The flag says its default and what it does.
    let help = bench(&["ab", "--help"]);
    assert!(
        stdout(&help).contains("[default: 1800]"),
        "{}",
        stdout(&help)
    );
}

#[test]
fn signals_are_forwarded_to_children_and_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    // `ab`: its child (a stand-in that would run two minutes) ends with it.
    for (signal, status) in [("TERM", 143), ("INT", 130)] {
        let pid_file = tmp.path().join(format!("pid-{signal}"));
        let slow = fake_binary(
            tmp.path(),
            &format!("slow-{signal}"),
            &format!("echo $$ > '{}'; exec sleep 120", s(&pid_file)),
        );
        let mut parent = ab(&slow, &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = wait_for_pid(&pid_file, Duration::from_secs(30)).expect("the child started");
        kill(parent.id(), signal);
        assert_eq!(parent.wait().unwrap().code(), Some(status));
        assert!(
            !alive(pid),
            "ab exited on SIG{signal} but left child {pid} running"
        );
    }
    // `compare --threads 1,2`: the running child (a real gpt2-bench) ends with it.
    let mut caught = 0;
    for _ in 0..10 {
        let mut parent = Command::new(BIN)
            .args(["compare", "--model", small(), "--prompt-ids", "1 2 3"])
            .args(["--max-tokens", "20", "--runs", "200", "--warmup", "0", "-q"])
            .args(["--backends", "naive", "--threads", "1,2", "--no-roofline"])
            .env("HF_HUB_OFFLINE", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let child = loop {
            if let Some(pid) = children_of(parent.id()).first() {
                break Some(*pid);
            }
            if start.elapsed() > Duration::from_secs(30) || parent.try_wait().unwrap().is_some() {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let Some(child) = child else { continue };
        kill(parent.id(), "TERM");
        let status = parent.wait().unwrap();
        if status.code() == Some(0) {
            continue; // the sweep ended before the signal
        }
        assert_eq!(status.code(), Some(143));
        assert!(
            !alive(child),
            "the sweep exited on SIGTERM but left child {child} running"
        );
        caught += 1;
        if caught == 2 {
            return;
        }
    }
    panic!("the sweep never ran long enough to be interrupted ({caught} times caught)");
}

/// The pids whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after.split_whitespace().nth(1) == Some(&parent.to_string()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn every_error_is_one_line_and_says_what_happened() {
    // Parser errors, one line each (clap's usage blocks folded in).
    let model = small();
    for args in [
        &["compare", "--threads", ","][..],
        &["compare", "--threads", "1,"],
        &["compare", "--threads", ",2"],
        &["compare", "--threads", "1,", "2"],
        &["compare", "--threads", "-1"],
        &["compare", "--threads", "0x2"],
        &["run", "--threads", "1,2"],
        &["compare", "--kv-cache", "bf16"],
        &["compare", "--kv-cache", ""],
        &[
            "ab",
            "--baseline-bin",
            model,
            "--rounds",
            "18446744073709551616",
        ],
        &["compare", "--bogus"],
        &["ab"],
        &["compare", "--backends"],
    ] {
        let o = bench(args);
        assert_input_error(&o, &[]);
        assert!(
            stderr(&o).starts_with("error: "),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_input_error(&bench(&["run", "--threads", "1,2"]), &["1,2 is a list"]);
    assert_input_error(
        &bench(&["ab"]),
        &[
            "not provided: --baseline-bin <FILE>",
            "see `gpt2-bench ab --help`",
        ],
    );
    assert_input_error(
        &bench(&["compare", "--threads", "-1"]),
        &["-1 is not a thread count"],
    );
    let tmp = tempfile::tempdir().unwrap();
    // A child killed from outside: the signal named, no dangling colon.
    let killed = fake_binary(tmp.path(), "killed", "kill -9 $$");
    let o = output_within(&mut ab(&killed, &[]), Duration::from_secs(60));
    ab_error(
        &o,
        &[
            "killed by signal 9 (SIGKILL",
            "with no error message of its own",
        ],
    );
    assert!(!stderr(&o).trim_end().ends_with(':'), "{}", stderr(&o));
    // A baseline whose backends disagree: the suggested command pastes into a shell.
    let dir = tmp.path().join("dir with space");
    std::fs::create_dir(&dir).unwrap();
    let disagree = fake_binary(&dir, "gpt2-bench", "exit 1");
    let o = output_within(&mut ab(&disagree, &[]), Duration::from_secs(60));
    ab_error(&o, &["produced different tokens"]);
    let e = stderr(&o);
    let suggested = e.split('`').nth(1).expect("a quoted command");
    assert!(
        suggested.starts_with(&format!("'{}' compare ", s(&disagree)))
            && suggested.contains("--prompt-ids '1 2 3'"),
        "{e}"
    );
}

/// Huge but finite weights: the backends differ by rounding, and the divergence says so rather
/// than calling it a bug. Tokens 0 and 1 (and 2 and 3, negated) get embedding rows of ~1e6 that
/// differ by one part in a million, so their logits are huge and nearly tied; the test engine
/// swaps the top two from step 3 on, which a clear gap would call a bug.
#[test]
fn a_divergence_on_huge_logits_is_called_rounding_not_a_bug() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("huge.bin");
    small_weight_file(&model, |_| {}, "huge");
    let n_embd = 8;
    for j in 0..n_embd {
        let v = 1.0e6 * (j as f32 - 3.5);
        let near = v * (1.0 + 1.0e-6);
        for (row, value) in [(0, v), (1, near), (2, -v), (3, -near)] {
            set_weight(&model, "wte.weight", row * n_embd + j, value);
        }
    }
    let o = output_within(
        Command::new(BIN)
            .args(["compare", "--model", s(&model), "--prompt-ids", "5 6 7"])
            .args(["--max-tokens", "6", "--runs", "1", "--warmup", "0"])
            .args(["--backends", "naive,test-divergent", "--no-roofline", "-q"])
            .env("GPT2_BENCH_TEST_ENGINES", "1")
            .env("HF_HUB_OFFLINE", "1"),
        Duration::from_secs(120),
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("DIVERGED: test-divergent differs from naive at generated token 3")
            && e.contains("within what float rounding explains at logits this large")
            && !e.contains("bug in one of them"),
        "{e}"
    );
}
