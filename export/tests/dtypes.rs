//! Reduced-precision exports (`--dtype f16|bf16|q8_0`) and conversions (`--from FILE.bin`), run
//! through the `gpt2-export` binary as a user would: which tensors take the dtype, determinism,
//! exactness of conversions (a tensor already in the target dtype is copied, a value that came
//! from f16 converts back to the same bits), default file names, `inspect`, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gpt2_weights::{Dtype, Role, WeightFile};

fn gpt2_export(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpt2-export"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run gpt2-export")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "gpt2-export failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `--synthetic SIZE --dtype D --out OUT`.
fn synthetic(size: &str, dtype: Dtype, out: &Path) -> WeightFile {
    ok(gpt2_export(
        &[
            "--synthetic",
            size,
            "--dtype",
            dtype.name(),
            "--out",
            path(out),
            "-q",
        ],
        &[],
    ));
    WeightFile::open_verified(out).unwrap()
}

/// `--from SRC --dtype D --out OUT`.
fn convert(src: &Path, dtype: Dtype, out: &Path) -> WeightFile {
    ok(gpt2_export(
        &[
            "--from",
            path(src),
            "--dtype",
            dtype.name(),
            "--out",
            path(out),
            "-q",
        ],
        &[],
    ));
    WeightFile::open_verified(out).unwrap()
}

/// Every matrix (linear weights, embedding) in the file's dtype, everything else f32, linear
/// weights stored transposed in reduced precision; GPT-2 small's shapes are all whole q8_0
/// blocks.
#[test]
fn matrices_take_the_dtype_and_everything_else_stays_f32() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in Dtype::ALL {
        let f = synthetic(
            "distilgpt2",
            dtype,
            &tmp.path().join(format!("{dtype}.bin")),
        );
        let specs = f.config().expected_tensors();
        for (spec, info) in specs.iter().zip(&f.header().tensors) {
            let want = if spec.role == Role::F32Only {
                Dtype::F32
            } else {
                dtype
            };
            assert_eq!(info.dtype, want, "{}", spec.name);
            assert_eq!(info.shape, spec.stored_shape(dtype), "{}", spec.name);
        }
        let w = f.gpt2().unwrap();
        assert_eq!(w.dtype_label(), dtype.name());
        // Bytes per token follow the dtype: about 4, 2, 2 and 1.06 bytes per matrix value.
        // distilgpt2: the embedding, and 6 layers of 12 C x C worth of linear weights.
        let matrix_values = 50257.0 * 768.0 + 6.0 * 12.0 * 768.0 * 768.0;
        let per_value = f.bytes_per_token() as f64 / matrix_values;
        assert!(
            (per_value / dtype.bytes_per_value() - 1.0).abs() < 0.02,
            "{dtype}: {per_value} bytes per matrix value"
        );
        std::fs::remove_file(tmp.path().join(format!("{dtype}.bin"))).unwrap();
    }
}

#[test]
fn exports_in_every_dtype_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in Dtype::ALL {
        let a = tmp.path().join(format!("a-{dtype}.bin"));
        let b = tmp.path().join(format!("b-{dtype}.bin"));
        synthetic("tiny", dtype, &a);
        synthetic("tiny", dtype, &b);
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{dtype}"
        );
    }
}

/// Converting an f32 file gives the same tensors as exporting the same weights in that dtype
/// directly; converting to the dtype a file already has copies it; f16 -> f32 -> f16 and
/// bf16 -> f32 -> bf16 come back bit for bit; q8_0 -> f32 is exact (d * q is an f32).
#[test]
fn conversions_are_exact_where_they_can_be() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_file = tmp.path().join("f32.bin");
    synthetic("tiny", Dtype::F32, &f32_file);
    // A shape with whole q8_0 blocks, so that q8_0 is really q8_0 (tiny's 60 stays f16).
    let q8_src = tmp.path().join("q8-src.bin");
    let wide = tmp.path().join("wide.bin");
    synthetic("distilgpt2", Dtype::F32, &wide);
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::Q8_0] {
        let direct = synthetic(
            "tiny",
            dtype,
            &tmp.path().join(format!("direct-{dtype}.bin")),
        );
        let converted = convert(
            &f32_file,
            dtype,
            &tmp.path().join(format!("conv-{dtype}.bin")),
        );
        assert_eq!(direct.data_checksum(), converted.data_checksum(), "{dtype}");
        // Same dtype again: a byte copy of every tensor.
        let again = convert(
            converted.path(),
            dtype,
            &tmp.path().join(format!("again-{dtype}.bin")),
        );
        assert_eq!(again.data_checksum(), converted.data_checksum(), "{dtype}");
        assert!(
            again.header().provenance.source.contains("converted from"),
            "{}",
            again.header().provenance.source
        );
    }
    for dtype in [Dtype::F16, Dtype::Bf16] {
        let reduced = tmp.path().join(format!("r-{dtype}.bin"));
        convert(&f32_file, dtype, &reduced);
        let widened = tmp.path().join(format!("w-{dtype}.bin"));
        convert(&reduced, Dtype::F32, &widened);
        let back = convert(&widened, dtype, &tmp.path().join(format!("b-{dtype}.bin")));
        let reduced = WeightFile::open(&reduced).unwrap();
        assert_eq!(back.data_checksum(), reduced.data_checksum(), "{dtype}");
    }
    let q8 = convert(&wide, Dtype::Q8_0, &q8_src);
    let widened = convert(&q8_src, Dtype::F32, &tmp.path().join("q8-f32.bin"));
    for spec in q8.config().expected_tensors() {
        assert_eq!(
            q8.logical_f32(&spec.name).unwrap(),
            widened.logical_f32(&spec.name).unwrap(),
            "{}",
            spec.name
        );
    }
}

/// Default output names carry the dtype; a weight file's own dtype suffix is replaced.
#[test]
fn default_names_carry_the_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    std::fs::create_dir(&dir).unwrap();
    let env = [("GPT2_BENCH_WEIGHTS_DIR", path(&dir))];
    ok(gpt2_export(
        &["--synthetic", "tiny", "--dtype", "q8_0", "-q"],
        &env,
    ));
    assert!(dir.join("synthetic-tiny-seed0-q8_0.bin").is_file());
    let src = dir.join("synthetic-tiny-seed0-q8_0.bin");
    ok(gpt2_export(
        &["--from", path(&src), "--dtype", "bf16", "-q"],
        &env,
    ));
    assert!(dir.join("synthetic-tiny-seed0-bf16.bin").is_file());
    ok(gpt2_export(
        &["--from", path(&src), "--dtype", "f32", "-q"],
        &env,
    ));
    assert!(dir.join("synthetic-tiny-seed0.bin").is_file());
}

/// `inspect` names each dtype with its tensors and bytes, and the bytes read per token.
#[test]
fn inspect_shows_dtypes_and_bytes_per_token() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q8.bin");
    synthetic("distilgpt2", Dtype::Q8_0, &out);
    let text = ok(gpt2_export(&["inspect", path(&out), "--tensors"], &[]));
    assert!(text.contains("q8_0    25 tensors"), "{text}");
    assert!(text.contains("f32     51 tensors"), "{text}");
    assert!(text.contains("read/token:"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("h.0.attn.c_attn.weight")
            && l.contains("q8_0")
            && l.contains("[2304, 768]")),
        "{text}"
    );
}

/// A value beyond f16's range cannot be exported as f16: one clear line, no file.
#[test]
fn out_of_range_values_are_refused_with_the_tensor_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    synthetic("tiny", Dtype::F32, &src);
    // Put 1e6 into one weight (the data checksum is then wrong, so rewrite the file properly).
    let f = WeightFile::open(&src).unwrap();
    let config = *f.config();
    let header = f.header().clone();
    let dtypes = config.tensor_dtypes(Dtype::F32);
    let big = tmp.path().join("big2.bin");
    let mut w = gpt2_weights::WeightWriter::create(
        &big,
        &config,
        &header.provenance,
        &header.tokenizer,
        &[],
        &dtypes,
    )
    .unwrap();
    for spec in config.expected_tensors() {
        let mut v = f.logical_f32(&spec.name).unwrap();
        if spec.name == "h.1.mlp.c_fc.weight" {
            v[5] = 1e6;
        }
        w.write_tensor(&spec.name, &v).unwrap();
    }
    w.finish().unwrap();
    let out = tmp.path().join("f16.bin");
    let o = gpt2_export(
        &["--from", path(&big), "--dtype", "f16", "--out", path(&out)],
        &[],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for needle in ["h.1.mlp.c_fc.weight", "f16", "1000000", "bf16 or f32"] {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
    assert!(!out.exists());
    // bf16 holds it.
    convert(&big, Dtype::Bf16, &tmp.path().join("bf16.bin"));
}

#[test]
fn unknown_files_and_dtypes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.bin");
    std::fs::write(&junk, b"not a weight file at all").unwrap();
    let o = gpt2_export(&["--from", path(&junk), "--dtype", "f16"], &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("junk.bin") && err.contains("not a gpt2-bench weight file"),
        "{err}"
    );
    let _: PathBuf = junk;
}

/// A q8_0 block whose scale is infinite or NaN (a damaged file, or a broken quantizer
/// elsewhere) is refused when the file is opened, naming the tensor and the block.
#[test]
fn non_finite_q8_0_scales_are_refused_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let config = gpt2_weights::Config {
        n_layer: 1,
        n_head: 2,
        n_embd: 32,
        vocab_size: 50257,
        n_ctx: 8,
        mlp_hidden: 64,
        layer_norm_eps: 1e-5,
        tied_output: true,
    };
    let good = tmp.path().join("good.bin");
    gpt2_export::synthetic::write_synthetic(config, "q8", 3, Dtype::Q8_0, &good, &|_, _| {})
        .unwrap();
    let f = WeightFile::open_verified(&good).unwrap();
    let info = f.header().tensors[4].clone();
    assert_eq!(
        (info.name.as_str(), info.dtype),
        ("h.0.attn.c_attn.weight", Dtype::Q8_0)
    );
    let at = (f.header().preamble.data_offset + info.offset) as usize + 3 * 34;
    for (bits, shown) in [(0x7c00u16, "inf"), (0xfe00, "NaN")] {
        let mut bytes = std::fs::read(&good).unwrap();
        bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        let bad = tmp.path().join("bad.bin");
        std::fs::write(&bad, &bytes).unwrap();
        let o = gpt2_export(&["inspect", path(&bad)], &[]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        for needle in [
            "h.0.attn.c_attn.weight",
            "q8_0 block 3",
            shown,
            "export it again",
        ] {
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
        }
    }
}

/// Overwrites bytes of `tensor`'s stored data in the weight file at `path`, from `at` bytes into
/// it, and recomputes the data checksum: a file that opens and verifies, holding those bytes.
fn patch_tensor(path: &Path, tensor: &str, at: usize, bytes: &[u8]) {
    let (start, data_offset) = {
        let f = WeightFile::open(path).unwrap();
        let info = f
            .header()
            .tensors
            .iter()
            .find(|t| t.name == tensor)
            .unwrap()
            .clone();
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

/// Names in `dir` other than `keep`.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

/// A NaN or infinity in an f16 file (with a checksum that matches it) is refused by every
/// conversion, to each dtype and to GGUF, with one line naming the input file that holds it, the
/// tensor, its index as stored there and what to do; never the output, and no output is left.
/// `inspect` says the file cannot run.
#[test]
fn non_finite_values_are_refused_naming_the_input_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (bits, shown) in [(0x7e00u16, "NaN"), (0xfc00, "-inf")] {
        let bad = tmp.path().join("bad-f16.bin");
        synthetic("tiny", Dtype::F16, &bad);
        // Stored index 13 of the f16 fc weight, stored [out, in].
        patch_tensor(&bad, "h.0.mlp.c_fc.weight", 2 * 13, &bits.to_le_bytes());
        let want =
            format!("tensor h.0.mlp.c_fc.weight holds a non-finite value ({shown}) at index 13");
        let outs: Vec<(Vec<&str>, &str)> = vec![
            (vec!["--dtype", "f32"], "y.bin"),
            (vec!["--dtype", "f16"], "y.bin"),
            (vec!["--dtype", "bf16"], "y.bin"),
            (vec!["--dtype", "q8_0"], "y.bin"),
            (vec![], "y.bin"),
            (vec![], "y.gguf"),
            (vec!["--dtype", "q8_0"], "y.gguf"),
        ];
        for (dtype, out_name) in outs {
            let out = tmp.path().join(out_name);
            let mut args = vec!["--from", path(&bad), "--out", path(&out), "-q"];
            args.extend(&dtype);
            let o = gpt2_export(&args, &[]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(
                err.starts_with(&format!("error: {}: {want}", path(&bad))),
                "{args:?}: {err}"
            );
            assert!(err.contains("sound copy"), "{args:?}: {err}");
            assert!(!err.contains(out_name), "names the output: {err}");
            assert_eq!(others(tmp.path(), &["bad-f16.bin"]), Vec::<String>::new());
        }
        let o = gpt2_export(&["inspect", path(&bad)], &[]);
        assert_eq!(o.status.code(), Some(3));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("checksum:    xxh3-64"), "{text}");
        assert!(
            text.contains(&format!("runnable:    NO: {}: {want}", path(&bad))),
            "{text}"
        );
    }
    // A sound file says so.
    let good = tmp.path().join("good.bin");
    synthetic("tiny", Dtype::F16, &good);
    let text = ok(gpt2_export(&["inspect", path(&good)], &[]));
    assert!(text.contains("runnable:    yes"), "{text}");
}
