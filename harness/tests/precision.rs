//! `compare` over several weight files of one model (`--model a.bin,b.bin`): every backend on
//! each file, rows labelled with their dtype and bytes per token, and each file's agreement with
//! the first; through the real binary, on the tiny model in f32 and bf16.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gpt2_export::SyntheticSize;
use gpt2_weights::Dtype;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt2-bench"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run gpt2-bench")
}

fn tiny(dir: &Path, dtype: Dtype, seed: u64) -> PathBuf {
    let p = dir.join(format!("tiny-{seed}-{dtype}.bin"));
    gpt2_export::synthetic::export_synthetic(SyntheticSize::Tiny, seed, dtype, &p, &|_, _| {})
        .unwrap();
    p
}

fn json(args: &[&str]) -> serde_json::Value {
    let o = bench(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

const COMMON: [&str; 9] = [
    "compare",
    "--prompt",
    "Hello there",
    "--max-tokens",
    "12",
    "--runs",
    "1",
    "--no-roofline",
    "-q",
];

#[test]
fn several_files_give_rows_per_dtype_and_agreement_with_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        tiny(tmp.path(), Dtype::F32, 0),
        tiny(tmp.path(), Dtype::Bf16, 0),
    );
    let models = format!("{},{}", a.display(), b.display());
    let mut args = COMMON.to_vec();
    args.extend([
        "--model",
        &models,
        "--backends",
        "naive,simd-kv",
        "--format",
        "json",
    ]);
    let r = json(&args);
    let rows = r["results"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        ["naive f32", "simd-kv f32", "naive bf16", "simd-kv bf16"]
    );
    let bytes = |i: usize| rows[i]["weight_bytes_per_token"].as_u64().unwrap();
    assert!(bytes(2) < bytes(0) * 6 / 10, "{} vs {}", bytes(2), bytes(0));
    assert!(rows.iter().all(|r| r["tokens_match"] == true));
    assert_eq!(r["models"].as_array().unwrap().len(), 2);
    let agreement = r["agreement"].as_array().unwrap();
    assert_eq!(agreement.len(), 1);
    let g = &agreement[0];
    assert_eq!(g["dtype"], "bf16");
    assert_eq!(g["reference_dtype"], "f32");
    // The 2-token prompt and 11 of the 12 generated tokens.
    assert_eq!(g["positions"], 2 + 11);
    let top1 = g["top1_agreement"].as_f64().unwrap();
    let (mean, max) = (
        g["mean_kl"].as_f64().unwrap(),
        g["max_kl"].as_f64().unwrap(),
    );
    assert!((0.0..=1.0).contains(&top1), "{top1}");
    // bf16 keeps 8 bits of mantissa: the distributions move, a little.
    assert!(mean > 0.0 && mean < 0.1 && max >= mean, "{mean} {max}");
}

/// A file against an identical copy of itself: 100% top-1, KL exactly 0, same greedy output.
#[test]
fn a_file_against_its_copy_agrees_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny(tmp.path(), Dtype::F16, 0);
    let copy = tmp.path().join("copy.bin");
    std::fs::copy(&a, &copy).unwrap();
    let models = format!("{},{}", a.display(), copy.display());
    let mut args = COMMON.to_vec();
    args.extend([
        "--model",
        &models,
        "--backends",
        "simd-kv",
        "--format",
        "json",
    ]);
    let r = json(&args);
    let g = &r["agreement"][0];
    assert_eq!(g["top1_agreement"], 1.0);
    assert_eq!(g["mean_kl"], 0.0);
    assert_eq!(g["max_kl"], 0.0);
    assert!(g["first_greedy_difference"].is_null());
}

#[test]
fn the_table_shows_the_agreement_and_the_csv_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        tiny(tmp.path(), Dtype::F32, 0),
        tiny(tmp.path(), Dtype::F16, 0),
    );
    let models = format!("{},{}", a.display(), b.display());
    let mut args = COMMON.to_vec();
    args.extend(["--model", &models, "--backends", "simd-kv"]);
    let o = bench(&args);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("simd-kv f16"), "{text}");
    // Each file's first backend is the reference its other backends are checked against (the
    // files are compared by the agreement table): the row says so, matched by backend, not by
    // the label the row carries.
    let row_of = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}: {text}"))
    };
    assert!(row_of("simd-kv f32").ends_with("reference"), "{text}");
    assert!(row_of("simd-kv f16").ends_with("reference"), "{text}");
    assert!(
        text.contains("Agreement with tiny-0-f32.bin (f32)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("tiny-0-f16.bin") && l.contains('%')),
        "{text}"
    );
    args.extend(["--format", "csv"]);
    let o = bench(&args);
    let csv = String::from_utf8_lossy(&o.stdout);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, bytes) = (col("model_file"), col("weight_bytes_per_token"));
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows[1][file], "tiny-0-f16.bin");
    let b: Vec<u64> = rows.iter().map(|r| r[bytes].parse().unwrap()).collect();
    assert!(b[1] < b[0], "{b:?}");
}

#[test]
fn several_files_must_be_one_model_and_cannot_be_gated() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny(tmp.path(), Dtype::F32, 0);
    let other = tmp.path().join("odd.bin");
    let config = gpt2_weights::Config {
        n_layer: 1,
        ..SyntheticSize::Tiny.config()
    };
    gpt2_export::synthetic::write_synthetic(config, "odd", 0, Dtype::F32, &other, &|_, _| {})
        .unwrap();
    let check = |models: String, extra: &[&str], needle: &str| {
        let mut args = COMMON.to_vec();
        args.extend(["--model", &models]);
        args.extend(extra);
        let o = bench(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
    };
    check(
        format!("{},{}", a.display(), other.display()),
        &[],
        "not the same model",
    );
    check(
        format!("{},{}", a.display(), a.display()),
        &[],
        "given twice",
    );
    check(
        format!("{},{}", a.display(), other.display()),
        &["--baseline", "b.json"],
        "--baseline gates one weight file",
    );
}

/// `--kv-cache f16`: every row says so and holds half the cache bytes (`auto`: the reduced file's
/// rows only), the agreement of a file
/// with itself under an f16 cache is still exact (the rule is deterministic), `--explain` states
/// the cache's bytes in f16, and a dtype the cache cannot hold is a one-line error.
#[test]
fn an_f16_key_value_cache_is_chosen_reported_and_halved() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny(tmp.path(), Dtype::F32, 0);
    let copy = tmp.path().join("copy.bin");
    std::fs::copy(&a, &copy).unwrap();
    let model = a.display().to_string();
    let run = |kv: &str| {
        let mut args = COMMON.to_vec();
        let models = format!("{model},{}", copy.display());
        args.extend([
            "--model",
            &models,
            "--backends",
            "naive,simd-kv,candle",
            "--kv-cache",
            kv,
            "--format",
            "json",
        ]);
        json(&args)
    };
    let (f32_report, f16_report) = (run("f32"), run("f16"));
    let rows = |r: &serde_json::Value| r["results"].as_array().unwrap().clone();
    for (row32, row16) in rows(&f32_report).iter().zip(&rows(&f16_report)) {
        assert_eq!(row32["kv_cache_dtype"], "f32");
        assert_eq!(row16["kv_cache_dtype"], "f16");
        assert_eq!(row16["tokens_match"], true, "{}", row16["label"]);
        let bytes = |r: &serde_json::Value| r["memory"]["kv_cache_bytes"].as_u64().unwrap();
        assert_eq!(bytes(row16) * 2, bytes(row32), "{}", row16["label"]);
    }
    let g = &f16_report["agreement"][0];
    assert_eq!(g["top1_agreement"], 1.0, "{g}");
    assert_eq!(g["mean_kl"], 0.0, "{g}");

    // `auto`: f16 for the reduced-precision file only.
    let b = tiny(tmp.path(), Dtype::Bf16, 0);
    let models = format!("{model},{}", b.display());
    let mut args = COMMON.to_vec();
    args.extend([
        "--model",
        &models,
        "--backends",
        "naive,simd-kv",
        "--kv-cache",
        "auto",
        "--format",
        "json",
    ]);
    let auto: Vec<String> = rows(&json(&args))
        .iter()
        .map(|r| format!("{} {}", r["label"].as_str().unwrap(), r["kv_cache_dtype"]))
        .collect();
    assert_eq!(
        auto,
        [
            "naive f32 \"f32\"",
            "simd-kv f32 \"f32\"",
            "naive bf16 \"f16\"",
            "simd-kv bf16 \"f16\""
        ]
    );

    let o = bench(&[
        "run",
        "--model",
        &model,
        "--backend",
        "simd-kv",
        "--kv-cache",
        "f16",
        "--explain",
        "--max-tokens",
        "2",
        "--prompt",
        "Hi",
        "-q",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("of cached keys and values (f16)"),
        "{stderr}"
    );

    let o = bench(&[
        "run",
        "--model",
        &model,
        "--backend",
        "naive",
        "--kv-cache",
        "q8_0",
    ]);
    assert_eq!(o.status.code(), Some(3)); // bad input
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--kv-cache") && stderr.contains("use f32, f16 or auto"),
        "{stderr}"
    );
}
