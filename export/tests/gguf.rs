//! GGUF import and export, through the `gpt2-export` binary as a user runs it:
//! - fixtures written by the `gguf` package (llama.cpp's writer; `fixtures/gguf/`, made by
//!   `make_gguf_fixtures.py`) import bit-exact: every tensor's bytes against the SHA-256 and its
//!   values against the samples gguf's own dequantizer read back, the config and the tokenizer
//!   against what the script wrote; tied, untied and an `output.weight` that repeats the tie;
//! - bad fixtures (wrong architecture, an unsupported type, a duplicate key, a wrong shape,
//!   truncated data, lying counts) are one-line errors that leave no file;
//! - a gpt2-bench file -> GGUF -> gpt2-bench file keeps every tensor and the tokenizer byte for
//!   byte, in every dtype, tied and untied.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gpt2_export::gguf;
use gpt2_weights::{Config, Dtype, Role, WeightFile};
use sha2::{Digest, Sha256};
use support::assert_input_error;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn gpt2_export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt2-export"))
        .args(args)
        .output()
        .expect("run gpt2-export")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "gpt2-export failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Files in `dir` other than `keep`: a failed or finished export must leave nothing else.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

/// gpt2-bench's index of the value at row-major index `k` of `spec`'s tensor in a GGUF (linear
/// weights are `[out, in]` there and `[in, out]` logically).
fn logical_index(role: Role, shape: &[u64], k: usize) -> usize {
    if role == Role::Linear {
        let (inputs, outputs) = (shape[0] as usize, shape[1] as usize);
        let (o, i) = (k / inputs, k % inputs);
        i * outputs + o
    } else {
        k
    }
}

/// Checks the imported `file` against the fixture's expectations (`all`, the whole of
/// expected.json, holds the tokenizer): config, tokenizer, every tensor's type, its bytes where
/// both formats lay it out alike, and its sampled values everywhere.
fn check_against_expectations(
    file: &WeightFile,
    fixture: &serde_json::Value,
    all: &serde_json::Value,
) {
    let c = file.config();
    let want = &fixture["config"];
    let u = |k: &str| want[k].as_u64().unwrap() as u32;
    assert_eq!(
        (
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.n_ctx,
            c.mlp_hidden,
            c.vocab_size
        ),
        (
            u("n_layer"),
            u("n_head"),
            u("n_embd"),
            u("n_ctx"),
            u("mlp_hidden"),
            u("vocab_size")
        )
    );
    assert_eq!(c.tied_output, want["tied_output"].as_bool().unwrap());
    assert_eq!(c.layer_norm_eps, 1e-5);
    let tok = &file.header().tokenizer;
    let tokens: Vec<&str> = all["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tok.tokens, tokens);
    let merges: Vec<(String, String)> = all["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let (a, b) = m.as_str().unwrap().split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    assert_eq!(tok.merges, merges);
    assert_eq!(u64::from(tok.eot_id), all["eot_id"].as_u64().unwrap());

    let tensors = fixture["tensors"].as_object().unwrap();
    let mut checked = 0;
    for spec in c.expected_tensors() {
        let name = gguf::import::gguf_name(&spec.name);
        let t = &tensors[&name];
        let want_type = t["type"].as_str().unwrap();
        let (bytes, dtype) = file.raw(&spec.name).unwrap();
        assert_eq!(dtype.name().to_uppercase(), want_type, "{name}'s type");
        if !(spec.role == Role::Linear && dtype == Dtype::F32) {
            let sha = format!("{:x}", Sha256::digest(bytes));
            assert_eq!(sha, t["sha256"].as_str().unwrap(), "{name}'s bytes");
        }
        let values = file.logical_f32(&spec.name).unwrap();
        for sample in t["samples"].as_array().unwrap() {
            let k = sample[0].as_u64().unwrap() as usize;
            let v = sample[1].as_f64().unwrap() as f32;
            let got = values[logical_index(spec.role, &spec.shape, k)];
            assert_eq!(got.to_bits(), v.to_bits(), "{name}[{k}]: {got} vs {v}");
        }
        checked += 1;
    }
    assert_eq!(checked, c.expected_tensor_count());
    if c.tied_output {
        assert!(file.raw("lm_head.weight").is_err());
    }
}

#[test]
fn fixtures_written_by_the_gguf_package_import_bit_exact() {
    let all = expected();
    let dir = tempfile::tempdir().unwrap();
    for (name, fixture) in all["fixtures"].as_object().unwrap() {
        let out = dir.path().join(format!("{name}.bin"));
        let src = fixtures().join(format!("{name}.gguf"));
        let said = ok(gpt2_export(&["--from", s(&src), "--out", s(&out), "-q"]));
        assert!(said.contains("wrote"), "{said}");
        let file = WeightFile::open_verified(&out).unwrap();
        check_against_expectations(&file, fixture, &all);
        assert!(
            file.header().provenance.source.starts_with("gguf:"),
            "{:?}",
            file.header().provenance
        );
        assert_eq!(file.header().provenance.model_name, *name);
    }
}

#[test]
fn an_output_weight_repeating_token_embd_is_the_tie() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.bin");
    let src = fixtures().join("q8_0-output-copy.gguf");
    ok(gpt2_export(&["--from", s(&src), "--out", s(&out), "-q"]));
    let file = WeightFile::open(&out).unwrap();
    assert!(file.config().tied_output);
    let untied = dir.path().join("untied.bin");
    ok(gpt2_export(&[
        "--from",
        s(&fixtures().join("f16-untied.gguf")),
        "--out",
        s(&untied),
        "-q",
    ]));
    let file = WeightFile::open(&untied).unwrap();
    assert!(!file.config().tied_output);
    assert_ne!(
        file.raw("lm_head.weight").unwrap().0,
        file.raw("wte.weight").unwrap().0
    );
}

#[test]
fn a_gguf_imported_with_dtype_is_converted_once() {
    let dir = tempfile::tempdir().unwrap();
    // q8_0 -> f32: every value exactly what gguf's dequantizer gives.
    let out = dir.path().join("f32.bin");
    let src = fixtures().join("q8_0-tied.gguf");
    ok(gpt2_export(&[
        "--from",
        s(&src),
        "--dtype",
        "f32",
        "--out",
        s(&out),
        "-q",
    ]));
    let file = WeightFile::open_verified(&out).unwrap();
    let all = expected();
    let fixture = &all["fixtures"]["q8_0-tied"];
    for spec in file.config().expected_tensors() {
        assert_eq!(file.raw(&spec.name).unwrap().1, Dtype::F32);
        let t = &fixture["tensors"][gguf::import::gguf_name(&spec.name)];
        let values = file.logical_f32(&spec.name).unwrap();
        for sample in t["samples"].as_array().unwrap() {
            let k = sample[0].as_u64().unwrap() as usize;
            let want = sample[1].as_f64().unwrap() as f32;
            assert_eq!(values[logical_index(spec.role, &spec.shape, k)], want);
        }
    }
    // f32 -> q8_0: the matrices are q8_0 (32-wide rows), the rest f32.
    let out = dir.path().join("q8.bin");
    let src = fixtures().join("f32-tied.gguf");
    ok(gpt2_export(&[
        "--from",
        s(&src),
        "--dtype",
        "q8_0",
        "--out",
        s(&out),
        "-q",
    ]));
    let file = WeightFile::open_verified(&out).unwrap();
    for spec in file.config().expected_tensors() {
        let want = if spec.role == Role::F32Only {
            Dtype::F32
        } else {
            Dtype::Q8_0
        };
        assert_eq!(file.raw(&spec.name).unwrap().1, want, "{}", spec.name);
    }
}

#[test]
fn bad_ggufs_are_one_line_errors_that_leave_nothing() {
    let cases: [(&str, &[&str]); 7] = [
        (
            "bad-architecture",
            &["general.architecture is \"bert\"", "GPT-2"],
        ),
        (
            "bad-q4_0",
            &["token_embd.weight", "Q4_0", "F32, F16, BF16 and Q8_0"],
        ),
        ("bad-duplicate-key", &["gpt2.block_count", "appears twice"]),
        ("bad-shape", &["blk.0.ffn_up.weight", "shape"]),
        ("bad-truncated", &["truncated"]),
        ("bad-tensor-count", &["1152921504606846976 tensors"]),
        ("bad-token-count", &["tokenizer.ggml.tokens", "16777215"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, needles) in cases {
        let src = fixtures().join(format!("{name}.gguf"));
        let out = dir.path().join("out.bin");
        let o = gpt2_export(&["--from", s(&src), "--out", s(&out)]);
        let mut with_file = vec![name];
        with_file.extend_from_slice(needles);
        assert_input_error(&o, &with_file);
        assert!(
            others(dir.path(), &[]).is_empty(),
            "{name} left {:?}",
            others(dir.path(), &[])
        );
    }
}

/// A small model in the shapes of a real one (rows of whole q8_0 blocks), with GPT-2's real
/// tokenizer, written by the exporter's synthetic path.
fn synthetic(dir: &Path, dtype: Dtype, tied: bool) -> PathBuf {
    let config = Config {
        n_layer: 2,
        n_head: 4,
        n_embd: 64,
        vocab_size: 50257,
        n_ctx: 32,
        mlp_hidden: 256,
        layer_norm_eps: 1e-5,
        tied_output: tied,
    };
    let out = dir.join(format!("src-{dtype}-{tied}.bin"));
    gpt2_export::synthetic::write_synthetic(config, "rt", 7, dtype, &out, &|_, _| {}).unwrap();
    out
}

fn assert_same_tensors_and_tokenizer(a: &WeightFile, b: &WeightFile) {
    assert_eq!(a.config(), b.config());
    assert_eq!(a.header().tokenizer, b.header().tokenizer);
    for t in &a.header().tensors {
        assert_eq!(
            a.raw(&t.name).unwrap(),
            b.raw(&t.name).unwrap(),
            "{}",
            t.name
        );
    }
    assert_eq!(a.header().tensors.len(), b.header().tensors.len());
}

#[test]
fn gpt2_bench_to_gguf_and_back_is_byte_identical_in_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in Dtype::ALL {
        for tied in [true, false] {
            let src = synthetic(dir.path(), dtype, tied);
            let g = dir.path().join(format!("{dtype}-{tied}.gguf"));
            let back = dir.path().join(format!("back-{dtype}-{tied}.bin"));
            let said = ok(gpt2_export(&["--from", s(&src), "--out", s(&g), "-q"]));
            assert!(said.contains("(GGUF)"), "{said}");
            ok(gpt2_export(&["--from", s(&g), "--out", s(&back), "-q"]));
            let (a, b) = (
                WeightFile::open(&src).unwrap(),
                WeightFile::open(&back).unwrap(),
            );
            assert_same_tensors_and_tokenizer(&a, &b);

            // What llama.cpp reads: its names, ggml shapes, types, the converter's keys.
            let bytes = std::fs::read(&g).unwrap();
            let parsed = gguf::parse(&bytes).unwrap();
            assert_eq!(parsed.tensor("output.weight").is_some(), !tied);
            let qkv = parsed.tensor("blk.1.attn_qkv.weight").unwrap();
            assert_eq!(qkv.ne, vec![64, 192], "ne = [in, out]");
            assert_eq!(qkv.dtype, dtype);
            let embd = parsed.tensor("token_embd.weight").unwrap();
            assert_eq!(embd.ne, vec![64, 50257]);
            assert_eq!(
                parsed.tensor("position_embd.weight").unwrap().dtype,
                Dtype::F32
            );
            assert_eq!(
                parsed.tensor("blk.0.ffn_up.bias").unwrap().dtype,
                Dtype::F32
            );
            for (key, value) in [
                ("general.architecture", gguf::Value::Str("gpt2")),
                ("tokenizer.ggml.model", gguf::Value::Str("gpt2")),
                ("tokenizer.ggml.pre", gguf::Value::Str("gpt-2")),
                ("gpt2.block_count", gguf::Value::Int(2)),
                ("gpt2.context_length", gguf::Value::Int(32)),
                ("gpt2.embedding_length", gguf::Value::Int(64)),
                ("gpt2.feed_forward_length", gguf::Value::Int(256)),
                ("gpt2.attention.head_count", gguf::Value::Int(4)),
                ("tokenizer.ggml.eos_token_id", gguf::Value::Int(50256)),
                ("tokenizer.ggml.bos_token_id", gguf::Value::Int(50256)),
                (
                    "general.file_type",
                    gguf::Value::Int(gguf::file_type(dtype).into()),
                ),
            ] {
                assert_eq!(parsed.get(key), Some(&value), "{key}");
            }
            let gguf::Value::Strings(merges) = parsed.get("tokenizer.ggml.merges").unwrap() else {
                panic!("merges are strings")
            };
            assert_eq!(
                merges[0], "Ġ t",
                "GPT-2's first merge, as the converter writes it"
            );
            let gguf::Value::Numbers { count, bytes, .. } =
                parsed.get("tokenizer.ggml.token_type").unwrap()
            else {
                panic!("token types are numbers")
            };
            assert_eq!(*count, 50257);
            let last = &bytes[bytes.len() - 4..];
            assert_eq!(
                i32::from_le_bytes(last.try_into().unwrap()),
                3,
                "<|endoftext|> is CONTROL"
            );
        }
    }
}

#[test]
fn any_source_can_be_written_as_gguf_and_converted_on_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-q8.gguf");
    let said = ok(gpt2_export(&[
        "--synthetic",
        "tiny",
        "--dtype",
        "bf16",
        "--out",
        s(&out),
        "-q",
    ]));
    assert!(said.contains("bf16"), "{said}");
    // Only the GGUF is left: the intermediate gpt2-bench file went with its hidden directory.
    assert_eq!(others(dir.path(), &[]), vec!["tiny-q8.gguf".to_string()]);
    let bytes = std::fs::read(&out).unwrap();
    let parsed = gguf::parse(&bytes).unwrap();
    assert_eq!(
        parsed.tensor("token_embd.weight").unwrap().dtype,
        Dtype::Bf16
    );

    // A gpt2-bench file with --dtype: converted, then written as GGUF.
    let src = synthetic(dir.path(), Dtype::F32, true);
    let q8 = dir.path().join("q8.gguf");
    ok(gpt2_export(&[
        "--from",
        s(&src),
        "--dtype",
        "q8_0",
        "--out",
        s(&q8),
        "-q",
    ]));
    let bytes = std::fs::read(&q8).unwrap();
    let parsed = gguf::parse(&bytes).unwrap();
    assert_eq!(
        parsed.tensor("blk.0.ffn_down.weight").unwrap().dtype,
        Dtype::Q8_0
    );
    assert_eq!(parsed.get("general.file_type"), Some(&gguf::Value::Int(7)));
}

#[test]
fn gguf_outputs_are_refused_where_they_would_destroy_something() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("f32-tied.gguf");
    let copy = dir.path().join("model.gguf");
    std::fs::copy(&src, &copy).unwrap();
    // Import into itself: refused before anything is written.
    let o = gpt2_export(&["--from", s(&copy), "--out", s(&copy)]);
    assert_input_error(&o, &["also an input"]);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&src).unwrap());
    // A directory named like a GGUF.
    let d = dir.path().join("dir.gguf");
    std::fs::create_dir(&d).unwrap();
    let bin = synthetic(dir.path(), Dtype::F16, true);
    let o = gpt2_export(&["--from", s(&bin), "--out", s(&d)]);
    assert_input_error(&o, &["is a directory"]);
    let mut keep = vec!["model.gguf", "dir.gguf"];
    let name = bin.file_name().unwrap().to_string_lossy().into_owned();
    keep.push(&name);
    assert!(
        others(dir.path(), &keep).is_empty(),
        "{:?}",
        others(dir.path(), &keep)
    );
}

#[test]
fn inspect_describes_a_gguf_and_says_whether_it_imports() {
    let o = gpt2_export(&[
        "inspect",
        "--tensors",
        s(&fixtures().join("f16-untied.gguf")),
    ]);
    let text = ok(o);
    for needle in [
        "GGUF version 3",
        "260 tokens, 3 merges, end-of-text id 259",
        "F16       6 tensors",
        "blk.0.attn_qkv.weight            F16   ne [32, 96]",
        "import:      yes",
        "output layer separate",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let o = gpt2_export(&["inspect", s(&fixtures().join("bad-shape.gguf"))]);
    assert_eq!(o.status.code(), Some(3));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("import:      NO: tensor blk.0.ffn_up.weight"),
        "{text}"
    );
    // A file that is not even a readable GGUF: the usual one-line error.
    let o = gpt2_export(&["inspect", s(&fixtures().join("bad-tensor-count.gguf"))]);
    assert_input_error(&o, &["bad-tensor-count.gguf", "tensors"]);
}

/// Writes the GGUF `src` again at `dst`, every key, tensor and byte as it was but for the string
/// arrays, which `change` is given (key, items) to alter. Handles the value types our exporter
/// writes (integers that fit u32, f32, strings, string arrays, i32 arrays).
fn rewrite_gguf(src: &Path, dst: &Path, change: impl Fn(&str, &mut Vec<String>)) {
    let bytes = std::fs::read(src).unwrap();
    let g = gguf::parse(&bytes).unwrap();
    let mut w = gguf::GgufWriter::default();
    for (key, value) in &g.metadata {
        match value {
            gguf::Value::Int(v) => w.add_u32(key, u32::try_from(*v).unwrap()),
            gguf::Value::F32(v) => w.add_f32(key, *v),
            gguf::Value::Str(v) => w.add_string(key, v),
            gguf::Value::Strings(items) => {
                let mut items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
                change(key, &mut items);
                w.add_strings(key, &items);
            }
            gguf::Value::Numbers { bytes, .. } => {
                let items: Vec<i32> = bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                w.add_i32s(key, &items);
            }
            other => panic!("{key}: {other:?} is not a value our exporter writes"),
        }
    }
    for t in &g.tensors {
        w.add_tensor(t.name, &t.shape(), t.dtype).unwrap();
    }
    let mut out = w.header();
    for t in &g.tensors {
        let data = g.data(&bytes, t);
        out.extend_from_slice(data);
        out.extend(vec![
            0u8;
            gguf::GgufWriter::padding_after(data.len() as u64)
        ]);
    }
    std::fs::write(dst, out).unwrap();
}

/// A small gpt2-bench file in `dtype` (support's 260-token tokenizer: the 256 byte-level
/// characters, `Ġt`, `he`, `Ġthe`, `<|endoftext|>`; merges `Ġ t`, `h e`, `Ġt he`), n_embd 32 so
/// that q8_0 is really q8_0, written as GGUF by the exporter at `dir/NAME.gguf`.
fn small_gguf(dir: &Path, name: &str, dtype: Dtype) -> PathBuf {
    let bin = dir.join(format!("{name}.bin"));
    support::small_weight_file_in(&bin, |c| c.n_embd = 32, name, dtype);
    let g = dir.join(format!("{name}.gguf"));
    ok(gpt2_export(&["--from", s(&bin), "--out", s(&g), "-q"]));
    std::fs::remove_file(&bin).unwrap();
    g
}

/// Overwrites bytes of `tensor`'s stored data in the weight file at `path` (from `at` bytes into
/// it) and recomputes the data checksum, so that the file opens and verifies.
fn patch_bin_tensor(path: &Path, tensor: &str, at: usize, bytes: &[u8]) {
    let (start, data_offset) = {
        let f = WeightFile::open(path).unwrap();
        let info = f
            .header()
            .tensors
            .iter()
            .find(|t| t.name == tensor)
            .unwrap();
        let data_offset = f.header().preamble.data_offset;
        (
            (data_offset + info.offset) as usize + at,
            data_offset as usize,
        )
    };
    let mut file = std::fs::read(path).unwrap();
    file[start..start + bytes.len()].copy_from_slice(bytes);
    let sum = gpt2_weights::format::checksum(&file[data_offset..]);
    file[48..56].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(path, file).unwrap();
}

/// A gpt2-bench file holding a NaN or infinite weight (an f16 value, or a q8_0 block's scale)
/// is never written as GGUF: exit 3, one line naming the input file and the tensor, no output.
#[test]
fn non_finite_weights_are_never_written_as_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            Dtype::F16,
            2 * 21,
            0x7c00u16,
            "tensor h.0.mlp.c_proj.weight holds a non-finite value (inf) at index 21",
        ),
        (
            Dtype::Q8_0,
            34 * 2,
            0x7e00,
            // Refused as the file opens, as every reader of it does.
            "tensor h.0.mlp.c_proj.weight holds a non-finite scale (NaN) in q8_0 block 2",
        ),
    ];
    for (dtype, at, bits, want) in cases {
        let bin = dir.path().join("bad.bin");
        support::small_weight_file_in(&bin, |c| c.n_embd = 32, "bad", dtype);
        patch_bin_tensor(&bin, "h.0.mlp.c_proj.weight", at, &bits.to_le_bytes());
        for dtype_args in [&[][..], &["--dtype", "f32"]] {
            let out = dir.path().join("x.gguf");
            let mut args = vec!["--from", s(&bin), "--out", s(&out)];
            args.extend(dtype_args);
            let o = gpt2_export(&args);
            assert_input_error(&o, &[&format!("{}: {want}", s(&bin))]);
            assert!(
                !support::stderr(&o).contains("x.gguf"),
                "{}",
                support::stderr(&o)
            );
            assert_eq!(others(dir.path(), &["bad.bin"]), Vec::<String>::new());
        }
    }
}

/// A GGUF with a NaN weight or a NaN q8_0 scale: `inspect` says it will not import and why, and
/// the import (as it is, or converted) refuses it naming the GGUF file, the tensor and the index,
/// leaving nothing.
#[test]
fn a_gguf_holding_a_non_finite_value_does_not_import_and_inspect_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            Dtype::F16,
            2 * 7,
            0x7e00u16,
            "tensor blk.0.attn_qkv.weight holds a non-finite value (NaN) at index 7",
        ),
        (
            Dtype::Q8_0,
            34 * 3,
            0xfe00,
            "tensor blk.0.attn_qkv.weight holds a non-finite scale (NaN) in q8_0 block 3",
        ),
    ];
    for (dtype, at, bits, want) in cases {
        let good = small_gguf(dir.path(), "good", dtype);
        let text = ok(gpt2_export(&["inspect", s(&good)]));
        assert!(text.contains("import:      yes"), "{text}");
        let mut bytes = std::fs::read(&good).unwrap();
        let start = {
            let g = gguf::parse(&bytes).unwrap();
            let t = g.tensor("blk.0.attn_qkv.weight").unwrap();
            assert_eq!(t.dtype, dtype);
            (g.data_offset + t.offset) as usize + at
        };
        bytes[start..start + 2].copy_from_slice(&bits.to_le_bytes());
        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, &bytes).unwrap();
        std::fs::remove_file(&good).unwrap();

        let o = gpt2_export(&["inspect", s(&bad)]);
        assert_eq!(o.status.code(), Some(3), "{}", support::stderr(&o));
        let text = support::stdout(&o);
        assert!(text.contains(&format!("import:      NO: {want}")), "{text}");

        let dtype_args: [&[&str]; 3] = [&[], &["--dtype", "f32"], &["--dtype", "q8_0"]];
        for (extra, out) in dtype_args.iter().zip(["y.bin", "y.bin", "y.gguf"]) {
            let out = dir.path().join(out);
            let mut args = vec!["--from", s(&bad), "--out", s(&out)];
            args.extend(extra.iter());
            let o = gpt2_export(&args);
            assert_input_error(&o, &[&format!("{}: {want}", s(&bad)), "sound copy"]);
            assert_eq!(others(dir.path(), &["bad.gguf"]), Vec::<String>::new());
        }
        std::fs::remove_file(&bad).unwrap();
    }
}

/// GGUF tokenizers that import but could never run (the loader of every run refuses them) are
/// refused at import, and `inspect` says so: the key, the token or merge by index, escaped.
#[test]
fn ggufs_with_tokenizers_that_cannot_run_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = small_gguf(dir.path(), "small", Dtype::F32);
    type Change = fn(&str, &mut Vec<String>);
    let cases: [(&str, Change, &str); 4] = [
        (
            "duplicate",
            |key, items| {
                if key == "tokenizer.ggml.tokens" {
                    items[257] = "Ġt".into();
                }
            },
            "tokenizer.ggml.tokens: token 257 (\"Ġt\") appears twice in the vocabulary, first \
             as token 256",
        ),
        (
            "result",
            |key, items| {
                if key == "tokenizer.ggml.merges" {
                    items.push("t h".into());
                }
            },
            "tokenizer.ggml.merges: merge 3 (\"t\" \"h\") makes \"th\", which is not a token",
        ),
        (
            "unknown",
            |key, items| {
                if key == "tokenizer.ggml.merges" {
                    items[1] = "h zz".into();
                }
            },
            "tokenizer.ggml.merges: merge 1 (\"h\" \"zz\") names \"zz\", which is not a token",
        ),
        (
            "escape",
            |key, items| {
                if key == "tokenizer.ggml.merges" {
                    items[0] = "\u{1b}[2J t".into();
                }
            },
            "merge 0 (\"\\u{1b}[2J\" \"t\") names \"\\u{1b}[2J\"",
        ),
    ];
    // The rewrite itself changes nothing that matters: unchanged, the file imports.
    let same = dir.path().join("same.gguf");
    rewrite_gguf(&good, &same, |_, _| {});
    ok(gpt2_export(&[
        "--from",
        s(&same),
        "--out",
        s(&dir.path().join("same.bin")),
        "-q",
    ]));
    for (name, change, want) in cases {
        let bad = dir.path().join(format!("{name}.gguf"));
        rewrite_gguf(&good, &bad, change);
        let o = gpt2_export(&["inspect", s(&bad)]);
        assert_eq!(o.status.code(), Some(3), "{name}: {}", support::stderr(&o));
        let text = support::stdout(&o);
        let verdict = text.lines().find(|l| l.starts_with("import:")).unwrap();
        assert!(verdict.starts_with("import:      NO: "), "{name}: {text}");
        assert!(verdict.contains(want), "{name}: {verdict}");
        assert!(!verdict.chars().any(char::is_control), "{name}: {verdict}");

        let out = dir.path().join("out.bin");
        let o = gpt2_export(&["--from", s(&bad), "--out", s(&out)]);
        assert_input_error(&o, &[&format!("{}: ", s(&bad)), want, "convert the model"]);
        assert!(!out.exists(), "{name}");
    }
}
