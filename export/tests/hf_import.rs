//! Exporting Hugging Face checkpoints in every layout the exporter promises to handle.
//!
//! Each test writes a small HF-format checkpoint directory (config.json, safetensors, tokenizer
//! files) from a synthetic model's tensors, exports it, and checks every tensor of the result
//! against the source: exactly for F32, to the source's precision for F16/BF16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gpt2_export::hf::export_dir;
use gpt2_export::r50k::gpt2_tokenizer_data;
use gpt2_export::synthetic::write_synthetic;
use gpt2_weights::Dtype as WeightDtype;
use gpt2_weights::{Config, WeightFile};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

/// Tensors by our name: (shape, values).
type Tensors = HashMap<String, (Vec<u64>, Vec<f32>)>;

/// A small GPT-2: 2 layers, 3 heads of 6 (n_embd 18), context 16.
fn small_config() -> Config {
    Config {
        n_layer: 2,
        n_head: 3,
        n_embd: 18,
        vocab_size: 50257,
        n_ctx: 16,
        mlp_hidden: 72,
        layer_norm_eps: 1e-5,
        tied_output: true,
    }
}

/// The reference tensors, by our names, from a synthetic model.
fn reference_tensors(dir: &Path, config: Config) -> (PathBuf, Tensors) {
    let path = dir.join("reference.bin");
    write_synthetic(config, "small", 11, WeightDtype::F32, &path, &|_, _| {}).unwrap();
    let f = WeightFile::open(&path).unwrap();
    let tensors = f
        .header()
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                (t.shape.clone(), f.tensor(&t.name).unwrap().to_vec()),
            )
        })
        .collect();
    (path, tensors)
}

#[derive(Clone, Copy)]
struct Layout {
    dtype: Dtype,
    prefix: bool,
    lm_head: bool,
    buffers: bool,
    shards: usize,
    tokenizer_json: bool,
    n_inner_null: bool,
}

const DEFAULT: Layout = Layout {
    dtype: Dtype::F32,
    prefix: false,
    lm_head: false,
    buffers: false,
    shards: 1,
    tokenizer_json: true,
    n_inner_null: true,
};

fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F64 => values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        other => panic!("test helper does not encode {other:?}"),
    }
}

/// What a value becomes after a round trip through `dtype`.
fn round(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

fn write_config(dir: &Path, c: &Config, n_inner_null: bool, extra: serde_json::Value) {
    let mut v = json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
        "vocab_size": c.vocab_size, "n_positions": c.n_ctx, "n_ctx": c.n_ctx,
        "layer_norm_epsilon": c.layer_norm_eps,
        "n_inner": if n_inner_null { serde_json::Value::Null } else { json!(c.mlp_hidden) },
        "tie_word_embeddings": c.tied_output,
    });
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            obj.insert(k.clone(), x.clone());
        }
    }
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
}

fn write_tokenizer(dir: &Path, as_tokenizer_json: bool) {
    let data = gpt2_tokenizer_data();
    let vocab: serde_json::Map<_, _> = data
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    if as_tokenizer_json {
        // The newer tokenizers format writes merges as pairs.
        let merges: Vec<_> = data.merges.iter().map(|(a, b)| json!([a, b])).collect();
        let tj = json!({
            "version": "1.0",
            "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": true}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges},
        });
        std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    } else {
        std::fs::write(
            dir.join("vocab.json"),
            serde_json::Value::Object(vocab).to_string(),
        )
        .unwrap();
        let mut m = String::from("#version: 0.2\n");
        for (a, b) in &data.merges {
            m.push_str(&format!("{a} {b}\n"));
        }
        std::fs::write(dir.join("merges.txt"), m).unwrap();
    }
}

/// Writes tensors (name, shape, dtype, bytes) as one safetensors file or several shards.
fn write_safetensors(dir: &Path, tensors: &[(String, Vec<usize>, Dtype, Vec<u8>)], shards: usize) {
    let chunk = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in tensors.chunks(chunk).enumerate() {
        let views: Vec<(String, TensorView)> = part
            .iter()
            .map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
        };
        std::fs::write(dir.join(&file), bytes).unwrap();
        for (n, ..) in part {
            weight_map.insert(n.clone(), json!(file));
        }
    }
    if shards > 1 {
        let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

/// Builds an HF checkpoint directory in `layout` from the reference tensors.
fn make_checkpoint(root: &Path, layout: Layout, config: &Config, reference: &Tensors) -> PathBuf {
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    write_config(&dir, config, layout.n_inner_null, json!({}));
    write_tokenizer(&dir, layout.tokenizer_json);
    let mut names: Vec<&String> = reference.keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    let prefix = if layout.prefix { "transformer." } else { "" };
    for name in names {
        let (shape, values) = &reference[name];
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        tensors.push((
            format!("{prefix}{name}"),
            shape,
            layout.dtype,
            encode(layout.dtype, values),
        ));
    }
    if layout.lm_head {
        let (shape, values) = &reference["wte.weight"];
        let shape = shape.iter().map(|&d| d as usize).collect();
        tensors.push((
            "lm_head.weight".into(),
            shape,
            layout.dtype,
            encode(layout.dtype, values),
        ));
    }
    if layout.buffers {
        for l in 0..config.n_layer {
            let n = config.n_ctx as usize;
            let mask: Vec<f32> = (0..n * n)
                .map(|i| ((i % n) <= (i / n)) as u8 as f32)
                .collect();
            tensors.push((
                format!("{prefix}h.{l}.attn.bias"),
                vec![1, 1, n, n],
                Dtype::F32,
                encode(Dtype::F32, &mask),
            ));
            tensors.push((
                format!("{prefix}h.{l}.attn.masked_bias"),
                vec![],
                Dtype::F32,
                encode(Dtype::F32, &[-1e4]),
            ));
        }
    }
    write_safetensors(&dir, &tensors, layout.shards);
    dir
}

/// Exports a checkpoint in `layout` and checks every tensor against the reference.
fn check_layout(layout: Layout) {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config();
    let (_, reference) = reference_tensors(tmp.path(), config);
    let dir = make_checkpoint(tmp.path(), layout, &config, &reference);
    let out = tmp.path().join("out.bin");
    export_dir(&dir, &out, "dir:test", WeightDtype::F32, &|_, _| {}).unwrap();
    let f = WeightFile::open_verified(&out).unwrap();
    assert_eq!(*f.config(), config);
    assert_eq!(f.header().tokenizer, gpt2_tokenizer_data());
    for (name, (shape, values)) in &reference {
        let info = f.header().tensors.iter().find(|t| &t.name == name).unwrap();
        assert_eq!(&info.shape, shape, "{name}");
        let got = f.tensor(name).unwrap();
        let want: Vec<f32> = values.iter().map(|&v| round(layout.dtype, v)).collect();
        assert_eq!(got, want.as_slice(), "{name}");
    }
}

#[test]
fn f32_single_file_official_names() {
    check_layout(DEFAULT);
}

#[test]
fn f16_with_transformer_prefix_and_lm_head() {
    check_layout(Layout {
        dtype: Dtype::F16,
        prefix: true,
        lm_head: true,
        ..DEFAULT
    });
}

#[test]
fn bf16_sharded_with_buffers() {
    check_layout(Layout {
        dtype: Dtype::BF16,
        shards: 3,
        buffers: true,
        ..DEFAULT
    });
}

#[test]
fn vocab_json_and_merges_txt_with_explicit_n_inner() {
    check_layout(Layout {
        tokenizer_json: false,
        n_inner_null: false,
        ..DEFAULT
    });
}

#[test]
fn untied_output_layer_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        tied_output: false,
        ..small_config()
    };
    let (_, reference) = reference_tensors(tmp.path(), config);
    let dir = make_checkpoint(tmp.path(), DEFAULT, &config, &reference);
    let out = tmp.path().join("out.bin");
    export_dir(&dir, &out, "dir:test", WeightDtype::F32, &|_, _| {}).unwrap();
    let f = WeightFile::open_verified(&out).unwrap();
    assert!(!f.config().tied_output);
    assert_eq!(
        f.tensor("lm_head.weight").unwrap(),
        reference["lm_head.weight"].1.as_slice()
    );
}

/// Exports `dir` expecting failure; returns the message. Also checks that nothing was written.
fn export_err(dir: &Path, out: &Path) -> String {
    let e = export_dir(dir, out, "dir:test", WeightDtype::F32, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "one-line error: {e}");
    e
}

fn default_checkpoint(tmp: &Path) -> (PathBuf, Tensors) {
    let (_, reference) = reference_tensors(tmp, small_config());
    (
        make_checkpoint(tmp, DEFAULT, &small_config(), &reference),
        reference,
    )
}

fn replace_tensor(
    dir: &Path,
    reference: &Tensors,
    name: &str,
    replacement: Option<(Vec<usize>, Dtype, Vec<u8>)>,
) {
    let mut tensors = Vec::new();
    let mut names: Vec<&String> = reference.keys().collect();
    names.sort();
    for n in names {
        let (shape, values) = &reference[n];
        if n == name {
            if let Some((s, d, b)) = &replacement {
                tensors.push((n.clone(), s.clone(), *d, b.clone()));
            }
            continue;
        }
        tensors.push((
            n.clone(),
            shape.iter().map(|&d| d as usize).collect(),
            Dtype::F32,
            encode(Dtype::F32, values),
        ));
    }
    write_safetensors(dir, &tensors, 1);
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, reference) = default_checkpoint(tmp.path());
    replace_tensor(&dir, &reference, "h.1.mlp.c_fc.bias", None);
    let e = export_err(&dir, &tmp.path().join("o.bin"));
    assert!(e.contains("missing tensor h.1.mlp.c_fc.bias"), "{e}");
}

#[test]
fn wrong_shape_is_named_and_existing_output_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, reference) = default_checkpoint(tmp.path());
    // The last tensor is wrong, so the export fails after writing almost everything.
    replace_tensor(
        &dir,
        &reference,
        "ln_f.bias",
        Some((vec![17], Dtype::F32, encode(Dtype::F32, &[0.0; 17]))),
    );
    let out = tmp.path().join("o.bin");
    std::fs::write(&out, b"precious").unwrap();
    let e = export_err(&dir, &out);
    assert!(e.contains("ln_f.bias") && e.contains("shape [17]"), "{e}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"precious",
        "existing file untouched"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary file removed");
}

#[test]
fn unsupported_dtype_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, reference) = default_checkpoint(tmp.path());
    let (shape, values) = &reference["wpe.weight"];
    let shape = shape.iter().map(|&d| d as usize).collect();
    replace_tensor(
        &dir,
        &reference,
        "wpe.weight",
        Some((shape, Dtype::F64, encode(Dtype::F64, values))),
    );
    let e = export_err(&dir, &tmp.path().join("o.bin"));
    assert!(
        e.contains("wpe.weight") && e.contains("F64") && e.contains("not supported"),
        "{e}"
    );
}

#[test]
fn llama_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    std::fs::create_dir(&dir).unwrap();
    write_config(
        &dir,
        &small_config(),
        true,
        json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}),
    );
    let e = export_err(&dir, &tmp.path().join("o.bin"));
    assert!(
        e.contains("not a GPT-2 checkpoint") && e.contains("llama"),
        "{e}"
    );

    // Without a telling config, the tensor names give it away.
    write_config(&dir, &small_config(), true, json!({}));
    write_tokenizer(&dir, true);
    let bytes = encode(Dtype::F32, &[0.0; 18]);
    write_safetensors(
        &dir,
        &[(
            "model.layers.0.input_layernorm.weight".into(),
            vec![18],
            Dtype::F32,
            bytes,
        )],
        1,
    );
    let e = export_err(&dir, &tmp.path().join("o.bin"));
    assert!(
        e.contains("not a GPT-2 checkpoint") && e.contains("model.layers.0"),
        "{e}"
    );
}

#[test]
fn bad_config_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = default_checkpoint(tmp.path());
    write_config(&dir, &small_config(), true, json!({"n_head": 4}));
    let e = export_err(&dir, &tmp.path().join("o.bin"));
    assert!(e.contains("not divisible by n_head"), "{e}");
    write_config(&dir, &small_config(), true, json!({"n_layer": 0}));
    assert!(export_err(&dir, &tmp.path().join("o.bin")).contains("n_layer is 0"));
    write_config(
        &dir,
        &small_config(),
        true,
        json!({"activation_function": "gelu"}),
    );
    assert!(export_err(&dir, &tmp.path().join("o.bin")).contains("tanh GELU"));
}

#[test]
fn missing_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let e = export_err(&tmp.path().join("nope"), &tmp.path().join("o.bin"));
    assert!(e.contains("no such directory"), "{e}");
    let (dir, _) = default_checkpoint(tmp.path());
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(export_err(&dir, &tmp.path().join("o.bin")).contains("no tokenizer"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    write_tokenizer(&dir, true);
    assert!(export_err(&dir, &tmp.path().join("o.bin")).contains("no model.safetensors"));
    std::fs::write(
        dir.join("model.safetensors"),
        b"garbage that is not safetensors",
    )
    .unwrap();
    assert!(export_err(&dir, &tmp.path().join("o.bin")).contains("not a valid safetensors"));
}

#[test]
fn unwritable_output_is_reported_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = default_checkpoint(tmp.path());
    let e = export_err(&dir, &tmp.path().join("no/such/dir/o.bin"));
    assert!(e.contains("does not exist"), "{e}");
    let e = export_err(&dir, tmp.path());
    assert!(e.contains("is a directory"), "{e}");
}

/// An F16 checkpoint exported as f16 (a BF16 one as bf16) keeps every matrix's bits: each value
/// is read as f32 (exact) and converted back (exact), never rounded twice; linear weights are
/// the checkpoint's [in, out] bits transposed to [out, in]. Norms and biases become f32 of the
/// same values.
#[test]
fn reduced_precision_checkpoints_keep_their_bits() {
    for (theirs, ours) in [
        (Dtype::F16, WeightDtype::F16),
        (Dtype::BF16, WeightDtype::Bf16),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let config = small_config();
        let (_, reference) = reference_tensors(tmp.path(), config);
        let layout = Layout {
            dtype: theirs,
            ..DEFAULT
        };
        let dir = make_checkpoint(tmp.path(), layout, &config, &reference);
        let out = tmp.path().join("out.bin");
        export_dir(&dir, &out, "dir:test", ours, &|_, _| {}).unwrap();
        let f = WeightFile::open_verified(&out).unwrap();
        for spec in config.expected_tensors() {
            let (shape, values) = &reference[&spec.name];
            let (bytes, dtype) = f.raw(&spec.name).unwrap();
            if spec.role == gpt2_weights::Role::F32Only {
                assert_eq!(dtype, WeightDtype::F32);
                let want: Vec<f32> = values.iter().map(|&v| round(theirs, v)).collect();
                assert_eq!(
                    f.tensor(&spec.name).unwrap(),
                    want.as_slice(),
                    "{}",
                    spec.name
                );
                continue;
            }
            assert_eq!(dtype, ours, "{}", spec.name);
            let checkpoint: Vec<u16> = encode(theirs, values)
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            let want = if spec.role == gpt2_weights::Role::Linear {
                let (rows, cols) = (shape[0] as usize, shape[1] as usize);
                gpt2_weights::dtype::transpose(&checkpoint, rows, cols)
            } else {
                checkpoint
            };
            let got: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            assert_eq!(got, want, "{} ({theirs:?} -> {ours})", spec.name);
        }
    }
}
