//! What the hostile-input CLI tests of both binaries share (`export/tests/hostile.rs`;
//! `harness/tests/hostile.rs` and the fuzz tests through a `#[path]` include): running a binary
//! with a time limit, with its stdout or stderr on a closed pipe, or interrupted by a signal;
//! and building the small files those tests corrupt (a weight file, a checkpoint).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`, killing it after `limit`: a test of "never blocks" must not hang the suite.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} still running after {limit:?} (it blocked); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts exit status 3 and one line on stderr containing every needle, with no control
/// characters but the final newline.
pub fn assert_input_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(3), "stderr: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one-line error: {e:?}");
    assert!(
        !e.trim_end().chars().any(char::is_control),
        "control characters in {e:?}"
    );
    for n in needles {
        assert!(e.contains(n), "expected {n:?} in: {e}");
    }
}

/// Which stream [`run_with_closed`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Stdout,
    Stderr,
}

/// Runs `bin args` with `stream` on a pipe whose reader has already exited (as in
/// `(sleep .3; bin args) | true`); returns the exit status and what the binary wrote on its
/// other stream.
pub fn run_with_closed(bin: &str, args: &[&str], stream: Closed) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status");
    let other = dir.path().join("other");
    // The reader (`true`) exits at once; the binary starts 0.3 s later, so its first write
    // to the pipe fails with EPIPE (SIGPIPE is ignored by Rust programs).
    let script = match stream {
        Closed::Stdout => r#"{ sleep 0.3; "$@" 2>"$OTHER"; echo "$?" >"$STATUS"; } | true"#,
        Closed::Stderr => {
            r#"{ sleep 0.3; "$@" >"$OTHER"; echo "$?" >"$STATUS"; } 2>&1 >/dev/null | true"#
        }
    };
    let o = output_within(
        Command::new("sh")
            .args(["-c", script, "sh", bin])
            .args(args)
            .env("STATUS", &status_file)
            .env("OTHER", &other)
            .env("HF_HUB_OFFLINE", "1"),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "sh: {}", stderr(&o));
    let code = std::fs::read_to_string(&status_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let other = std::fs::read_to_string(&other).unwrap_or_default();
    (code, other)
}

/// Sends `signal` (a name such as `QUIT`) to `pid` with the shell's built-in kill.
pub fn kill(pid: u32, signal: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Entries of `dir` whose names end with `suffix` or start with `prefix`.
pub fn entries(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(prefix) && n.ends_with(suffix)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {path:?}");
}

/// The committed Hugging Face fixture (2 layers, F16 weights, GPT-2's tokenizer).
pub fn fixture_checkpoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../backends/tests/fixtures/hf-tiny-gpt2")
}

/// A copy of the fixture checkpoint in `root/ckpt`, to corrupt.
pub fn copy_fixture(root: &Path) -> PathBuf {
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture_checkpoint()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// The tensors of a safetensors file: name, dtype, shape, data offsets, in file order, and the
/// data section.
pub struct SafetensorsFile {
    pub entries: Vec<(String, serde_json::Value)>,
    pub data: Vec<u8>,
}

impl SafetensorsFile {
    pub fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let mut entries: Vec<_> = header
            .into_iter()
            .filter(|(k, _)| k != "__metadata__")
            .collect();
        entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64());
        SafetensorsFile {
            entries,
            data: bytes[8 + n..].to_vec(),
        }
    }

    /// The byte range of `name`'s data.
    pub fn range(&self, name: &str) -> std::ops::Range<usize> {
        let (_, v) = self.entries.iter().find(|(k, _)| k == name).unwrap();
        let o = &v["data_offsets"];
        o[0].as_u64().unwrap() as usize..o[1].as_u64().unwrap() as usize
    }

    /// Adds a copy of `from`'s data under the name `to`.
    pub fn duplicate(&mut self, from: &str, to: &str) {
        let r = self.range(from);
        let bytes = self.data[r].to_vec();
        let (_, v) = self.entries.iter().find(|(k, _)| k == from).unwrap();
        let mut v = v.clone();
        let start = self.data.len();
        self.data.extend_from_slice(&bytes);
        v["data_offsets"] = serde_json::json!([start, self.data.len()]);
        self.entries.push((to.to_string(), v));
    }

    /// F32 tensors, in order.
    pub fn from_f32(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Self {
        let mut file = SafetensorsFile {
            entries: Vec::new(),
            data: Vec::new(),
        };
        for (name, shape, values) in tensors {
            let start = file.data.len();
            file.data
                .extend(values.iter().flat_map(|v| v.to_le_bytes()));
            let entry = serde_json::json!({
                "dtype": "F32", "shape": shape, "data_offsets": [start, file.data.len()],
            });
            file.entries.push((name.clone(), entry));
        }
        file
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let header: serde_json::Map<_, _> = self.entries.iter().cloned().collect();
        let mut json = serde_json::Value::Object(header).to_string().into_bytes();
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.data);
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).unwrap();
    }
}

/// A small valid weight file at `path` (1 layer, n_embd 8, a 260-token byte-level vocabulary),
/// with `config` changing the defaults and `model_name` as its provenance.
pub fn small_weight_file(
    path: &Path,
    change: impl FnOnce(&mut gpt2_weights::Config),
    model_name: &str,
) {
    small_weight_file_in(path, change, model_name, gpt2_weights::Dtype::F32)
}

/// [`small_weight_file`] with its matrices in `dtype` (give q8_0 a config whose matrix rows
/// are whole 32-value blocks, or they stay f16).
pub fn small_weight_file_in(
    path: &Path,
    change: impl FnOnce(&mut gpt2_weights::Config),
    model_name: &str,
    dtype: gpt2_weights::Dtype,
) {
    use gpt2_weights::{Config, Provenance, TokenizerData, WeightWriter};
    let mut config = Config {
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        vocab_size: 260,
        n_ctx: 16,
        mlp_hidden: 32,
        layer_norm_eps: 1e-5,
        tied_output: true,
    };
    change(&mut config);
    let alphabet = gpt2_weights::tokenizer::bytes_to_unicode();
    let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    let merges = vec![
        ("Ġ".to_string(), "t".to_string()),
        ("h".to_string(), "e".to_string()),
        ("Ġt".to_string(), "he".to_string()),
    ];
    tokens.extend(["Ġt", "he", "Ġthe"].map(String::from));
    tokens.push("<|endoftext|>".to_string());
    let tokenizer = TokenizerData {
        tokens,
        merges,
        eot_id: 259,
    };
    let provenance = Provenance {
        model_name: model_name.into(),
        source: "hostile-input test".into(),
        exporter: "support".into(),
    };
    let dtypes = config.tensor_dtypes(dtype);
    let mut w = WeightWriter::create(path, &config, &provenance, &tokenizer, &[], &dtypes).unwrap();
    for info in w.remaining().to_vec() {
        let n = info.shape.iter().product::<u64>() as usize;
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 7) % 13) as f32 * 0.01 - 0.05)
            .collect();
        w.write_tensor(&info.name, &data).unwrap();
    }
    w.finish().unwrap();
}

/// Sets element `index` of `tensor` in the weight file at `path` to `value` and recomputes the
/// data checksum: a file that is valid in every way the reader checks, with that one value.
pub fn set_weight(path: &Path, tensor: &str, index: usize, value: f32) {
    let (start, data_offset) = {
        let f = gpt2_weights::WeightFile::open(path).unwrap();
        let info = f
            .header()
            .tensors
            .iter()
            .find(|t| t.name == tensor)
            .unwrap()
            .clone();
        let p = &f.header().preamble;
        (
            (p.data_offset + info.offset) as usize + 4 * index,
            p.data_offset as usize,
        )
    };
    let mut bytes = std::fs::read(path).unwrap();
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    let sum = gpt2_weights::format::checksum(&bytes[data_offset..]);
    bytes[48..56].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Replaces the bytes `from` with `to` (same length) in the header block of the weight file at
/// `path` and recomputes the header checksum.
pub fn patch_header(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let block = 64..64 + header_len;
    let at = bytes[block.clone()]
        .windows(from.len())
        .position(|w| w == from)
        .expect("bytes to patch")
        + 64;
    bytes[at..at + to.len()].copy_from_slice(to);
    let sum = gpt2_weights::format::checksum(&bytes[block]);
    bytes[56..64].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A tiny GPT-2 checkpoint (1 layer, n_embd 8, a 257-token byte-level vocabulary); returns the
/// bytes of its model.safetensors.
pub fn tiny_checkpoint(dir: &Path) -> Vec<u8> {
    use serde_json::json;
    let (c, h, v, n_ctx) = (8usize, 32usize, 257usize, 16usize);
    std::fs::write(
        dir.join("config.json"),
        json!({
            "model_type": "gpt2", "activation_function": "gelu_new",
            "n_layer": 1, "n_head": 2, "n_embd": c, "vocab_size": v, "n_positions": n_ctx,
            "n_ctx": n_ctx, "layer_norm_epsilon": 1e-5, "n_inner": null,
        })
        .to_string(),
    )
    .unwrap();
    let alphabet = gpt2_weights::tokenizer::bytes_to_unicode();
    let mut vocab: serde_json::Map<_, _> = alphabet
        .iter()
        .enumerate()
        .map(|(i, ch)| (ch.to_string(), json!(i)))
        .collect();
    vocab.insert("<|endoftext|>".into(), json!(256));
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::Value::Object(vocab).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
    let shapes: Vec<(String, Vec<usize>)> = vec![
        ("wte.weight".into(), vec![v, c]),
        ("wpe.weight".into(), vec![n_ctx, c]),
        ("h.0.ln_1.weight".into(), vec![c]),
        ("h.0.ln_1.bias".into(), vec![c]),
        ("h.0.attn.c_attn.weight".into(), vec![c, 3 * c]),
        ("h.0.attn.c_attn.bias".into(), vec![3 * c]),
        ("h.0.attn.c_proj.weight".into(), vec![c, c]),
        ("h.0.attn.c_proj.bias".into(), vec![c]),
        ("h.0.ln_2.weight".into(), vec![c]),
        ("h.0.ln_2.bias".into(), vec![c]),
        ("h.0.mlp.c_fc.weight".into(), vec![c, h]),
        ("h.0.mlp.c_fc.bias".into(), vec![h]),
        ("h.0.mlp.c_proj.weight".into(), vec![h, c]),
        ("h.0.mlp.c_proj.bias".into(), vec![c]),
        ("ln_f.weight".into(), vec![c]),
        ("ln_f.bias".into(), vec![c]),
    ];
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = shapes
        .into_iter()
        .map(|(n, shape)| {
            let values = (0..shape.iter().product::<usize>())
                .map(|i| (i % 7) as f32 * 0.1)
                .collect();
            (n, shape, values)
        })
        .collect();
    SafetensorsFile::from_f32(&tensors).to_bytes()
}
