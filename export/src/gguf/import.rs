//! A GPT-2 GGUF (as llama.cpp's `convert_hf_to_gguf.py` writes it) -> a gpt2-bench file.
//!
//! - **Config** from `gpt2.block_count`, `gpt2.context_length`, `gpt2.embedding_length`,
//!   `gpt2.feed_forward_length`, `gpt2.attention.head_count` and
//!   `gpt2.attention.layer_norm_epsilon`; the vocabulary size is the number of tokens.
//! - **Tokenizer** from `tokenizer.ggml.tokens` (GPT-2's byte-level strings, as in
//!   `encoder.json`), `tokenizer.ggml.merges` (`"Ġ t"`: the two parts of a merge, one space
//!   apart) and `tokenizer.ggml.eos_token_id`; `tokenizer.ggml.model` must be `gpt2`.
//! - **Tensors** by llama.cpp's names ([`gguf_name`]). Each keeps its type and its bytes: F16,
//!   BF16 and Q8_0 matrices are stored `[out, in]` in both formats, so they are copied as they
//!   are, never requantized. An F32 linear weight is transposed (gpt2-bench keeps f32 in Hugging
//!   Face's `[in, out]`), which moves values without changing one. A norm, bias or position
//!   embedding in another type than F32 (the converter never writes one) is widened to f32,
//!   which is exact for every one of these types.
//! - **Output layer**: tied when there is no `output.weight` (the converter's GPT-2); an
//!   `output.weight` holding the same bytes as `token_embd.weight` (older converters wrote the
//!   tie out) is recognised as the tie too; any other is a separate `lm_head.weight`.
//!
//! With `--dtype`, tensors not already in that dtype are converted once (as `--from FILE.bin`).
//!
//! Everything is checked before anything is written, by one function (`Model::read`), which
//! `inspect` ([`report`]) runs too to say whether a file imports: the keys, the tensors, a
//! tokenizer that every run can build ([`gpt2_weights::tokenizer::validate`]) and no NaN or
//! infinite value ([`gpt2_weights::dtype::first_non_finite`]); an error names the GGUF file.

use std::path::{Path, PathBuf};

use gpt2_weights::{Config, Dtype, Provenance, Role, TensorSpec, TokenizerData, WeightWriter};
use memmap2::Mmap;

use super::{Gguf, TensorEntry, Value};
use crate::error::ExportError;

/// llama.cpp's name for gpt2-bench tensor `name` (see `llama-arch.cpp`, `LLM_ARCH_GPT2`).
pub fn gguf_name(name: &str) -> String {
    const TOP: [(&str, &str); 5] = [
        ("wte.weight", "token_embd.weight"),
        ("wpe.weight", "position_embd.weight"),
        ("ln_f.weight", "output_norm.weight"),
        ("ln_f.bias", "output_norm.bias"),
        ("lm_head.weight", "output.weight"),
    ];
    const BLOCK: [(&str, &str); 6] = [
        ("ln_1.", "attn_norm."),
        ("attn.c_attn.", "attn_qkv."),
        ("attn.c_proj.", "attn_output."),
        ("ln_2.", "ffn_norm."),
        ("mlp.c_fc.", "ffn_up."),
        ("mlp.c_proj.", "ffn_down."),
    ];
    if let Some((_, g)) = TOP.iter().find(|(ours, _)| *ours == name) {
        return (*g).to_string();
    }
    if let Some(rest) = name.strip_prefix("h.")
        && let Some((layer, part)) = rest.split_once('.')
    {
        for (ours, theirs) in BLOCK {
            if let Some(suffix) = part.strip_prefix(ours) {
                return format!("blk.{layer}.{theirs}{suffix}");
            }
        }
    }
    name.to_string()
}

/// A tensor's row-major shape in a GGUF: linear weights `[out, in]` (PyTorch's nn.Linear
/// order, which the converter transposes Conv1D weights into), everything else as logical.
pub fn gguf_shape(spec: &TensorSpec) -> Vec<u64> {
    let mut shape = spec.shape.clone();
    if spec.role == Role::Linear {
        shape.reverse();
    }
    shape
}

/// Maps the file at `path` (a regular, non-empty file) for [`super::parse`].
fn map(path: &Path) -> Result<Mmap, ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = gpt2_weights::input::open_regular(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Err(ExportError::Checkpoint {
            path: path.to_path_buf(),
            message: "an empty file, not a GGUF".into(),
        });
    }
    // SAFETY: a read-only private map; as for weight files (gpt2_weights::file), the hazard is
    // another process truncating the file while it is mapped, which no tool of ours does.
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// Maps the GGUF at `path` and imports it into `out`: every tensor in its own type, or with
/// `dtype`, converted as [`Config::tensor_dtypes`] says. Returns the path written.
pub fn import_file(
    path: &Path,
    dtype: Option<Dtype>,
    out: &Path,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    let bad = |message: String| ExportError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let bytes = map(path)?;
    let gguf = super::parse(&bytes).map_err(&bad)?;
    let model = Model::read(&gguf, &bytes).map_err(&bad)?;

    let dtypes: Vec<Dtype> = match dtype {
        Some(d) => model.config.tensor_dtypes(d),
        None => model
            .specs
            .iter()
            .zip(&model.tensors)
            .map(|(spec, t)| {
                if spec.role == Role::F32Only {
                    Dtype::F32
                } else {
                    t.dtype
                }
            })
            .collect(),
    };
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let provenance = Provenance {
        model_name: match gguf.get("general.name") {
            Some(Value::Str(name)) if !name.is_empty() => gpt2_weights::input::printable(name),
            _ => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "gpt2".into()),
        },
        source: format!("gguf:{}", abs.display()),
        exporter: crate::exporter_id(),
    };
    let mut writer = WeightWriter::create(
        out,
        &model.config,
        &provenance,
        &model.tokenizer,
        &[path],
        &dtypes,
    )?;
    for (i, ((spec, t), &want)) in model
        .specs
        .iter()
        .zip(&model.tensors)
        .zip(&dtypes)
        .enumerate()
    {
        let data = gguf.data(&bytes, t);
        let same_layout = !(spec.role == Role::Linear && want == Dtype::F32);
        if t.dtype == want && same_layout {
            writer.write_encoded(&spec.name, data)?;
        } else {
            let values = gpt2_weights::dtype::decode(data, t.dtype);
            let logical = if spec.role == Role::Linear {
                let (out_features, in_features) = (spec.shape[1] as usize, spec.shape[0] as usize);
                gpt2_weights::dtype::transpose(&values, out_features, in_features)
            } else {
                values
            };
            writer.write_tensor(&spec.name, &logical)?;
        }
        progress(i + 1, model.specs.len());
    }
    Ok(writer.finish()?)
}

/// The `inspect` report for a GGUF: its keys and tensors as llama.cpp would read them, and
/// whether gpt2-export can import it (and if not, why). Returns the text and that verdict.
pub fn report(path: &Path, list_tensors: bool) -> Result<(String, bool), ExportError> {
    use std::fmt::Write;
    let bytes = map(path)?;
    let len = bytes.len();
    let gguf = super::parse(&bytes).map_err(|message| ExportError::Checkpoint {
        path: path.to_path_buf(),
        message,
    })?;
    let shown = gpt2_weights::input::printable;
    let text = |key: &str| match gguf.get(key) {
        Some(Value::Str(v)) => shown(v),
        Some(Value::Int(v)) => v.to_string(),
        Some(Value::F32(v)) => format!("{v:e}"),
        Some(Value::Strings(v)) => format!("{} strings", v.len()),
        Some(Value::Numbers { count, .. }) => format!("{count} numbers"),
        Some(v) => v.kind().to_string(),
        None => "-".into(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "file:        {} ({:.1} MB)",
        path.display(),
        len as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "format:      GGUF version {}, alignment {}, {} metadata keys",
        gguf.version,
        gguf.alignment,
        gguf.metadata.len()
    );
    let _ = writeln!(
        s,
        "model:       {} ({}), file type {}",
        text("general.name"),
        text("general.architecture"),
        text("general.file_type")
    );
    let _ = writeln!(
        s,
        "config:      {} blocks, {} heads, n_embd {}, MLP {}, context {}, layer-norm eps {}",
        text("gpt2.block_count"),
        text("gpt2.attention.head_count"),
        text("gpt2.embedding_length"),
        text("gpt2.feed_forward_length"),
        text("gpt2.context_length"),
        text("gpt2.attention.layer_norm_epsilon")
    );
    let _ = writeln!(
        s,
        "tokenizer:   {} (pre {}), {}, {} merges, end-of-text id {}",
        text("tokenizer.ggml.model"),
        text("tokenizer.ggml.pre"),
        text("tokenizer.ggml.tokens").replace("strings", "tokens"),
        text("tokenizer.ggml.merges").replace(" strings", ""),
        text("tokenizer.ggml.eos_token_id")
    );
    let total: u64 = gguf.tensors.iter().map(|t| t.byte_len).sum();
    let _ = writeln!(
        s,
        "tensors:     {}, data {:.1} MB at offset {}",
        gguf.tensors.len(),
        total as f64 / 1e6,
        gguf.data_offset
    );
    for dtype in Dtype::ALL {
        let of: Vec<_> = gguf.tensors.iter().filter(|t| t.dtype == dtype).collect();
        if !of.is_empty() {
            let _ = writeln!(
                s,
                "  {:<6} {:>4} tensors, {:>8.1} MB",
                dtype.name().to_uppercase(),
                of.len(),
                of.iter().map(|t| t.byte_len).sum::<u64>() as f64 / 1e6
            );
        }
    }
    if list_tensors {
        for t in &gguf.tensors {
            let _ = writeln!(
                s,
                "  {:<32} {:<5} ne {:?} at {}",
                shown(t.name),
                t.dtype.name().to_uppercase(),
                t.ne,
                t.offset
            );
        }
    }
    let verdict = Model::read(&gguf, &bytes);
    match &verdict {
        Ok(model) => {
            let _ = writeln!(
                s,
                "import:      yes, {} parameters, output layer {} (gpt2-export --from {})",
                model.config.parameter_count(),
                if model.config.tied_output {
                    "tied to token_embd"
                } else {
                    "separate"
                },
                path.display()
            );
        }
        Err(why) => {
            let _ = writeln!(s, "import:      NO: {why}");
        }
    }
    Ok((s, verdict.is_ok()))
}

/// What a GPT-2 GGUF holds, checked: the config, the tokenizer, and for every tensor the
/// model needs (in gpt2-bench's order) its entry in the file. [`Model::read`] is the whole
/// verdict on a file, for the import and for `inspect` alike.
struct Model<'a> {
    config: Config,
    tokenizer: TokenizerData,
    specs: Vec<TensorSpec>,
    tensors: Vec<TensorEntry<'a>>,
}

impl<'a> Model<'a> {
    fn read(gguf: &Gguf<'a>, bytes: &[u8]) -> Result<Self, String> {
        match gguf.get("general.architecture") {
            Some(Value::Str("gpt2")) => {}
            Some(Value::Str(other)) => {
                return Err(format!(
                    "general.architecture is {:?}, not \"gpt2\": gpt2-bench runs GPT-2 only",
                    gpt2_weights::input::printable(other)
                ));
            }
            Some(v) => {
                return Err(format!(
                    "general.architecture is {}, not a string",
                    v.kind()
                ));
            }
            None => return Err("no general.architecture key: not a llama.cpp model file".into()),
        }
        let tokenizer = read_tokenizer(gguf)?;
        let n_head = int(gguf, "gpt2.attention.head_count")?;
        if let Some(kv) = gguf.get("gpt2.attention.head_count_kv")
            && *kv != Value::Int(n_head.into())
        {
            return Err(format!(
                "gpt2.attention.head_count_kv is {kv:?} but head_count is {n_head}: GPT-2 has no \
                 grouped-query attention"
            ));
        }
        let layer_norm_eps = match gguf.get("gpt2.attention.layer_norm_epsilon") {
            Some(Value::F32(e)) => *e,
            Some(Value::F64(e)) => *e as f32,
            Some(v) => {
                return Err(format!(
                    "gpt2.attention.layer_norm_epsilon is {}, not a float",
                    v.kind()
                ));
            }
            None => return Err("no gpt2.attention.layer_norm_epsilon key".into()),
        };
        let has_output = gguf.tensor("output.weight").is_some();
        let tied_output = !has_output
            || match (
                gguf.tensor("output.weight"),
                gguf.tensor("token_embd.weight"),
            ) {
                (Some(o), Some(e)) => {
                    o.dtype == e.dtype && o.ne == e.ne && gguf.data(bytes, o) == gguf.data(bytes, e)
                }
                _ => false,
            };
        let config = Config {
            n_layer: int(gguf, "gpt2.block_count")?,
            n_head,
            n_embd: int(gguf, "gpt2.embedding_length")?,
            vocab_size: u32::try_from(tokenizer.tokens.len()).unwrap_or(u32::MAX),
            n_ctx: int(gguf, "gpt2.context_length")?,
            mlp_hidden: int(gguf, "gpt2.feed_forward_length")?,
            layer_norm_eps,
            tied_output,
        };
        config.validate().map_err(|e| e.to_string())?;

        let specs = config.expected_tensors();
        let mut tensors = Vec::with_capacity(specs.len());
        for spec in &specs {
            let name = gguf_name(&spec.name);
            let t = gguf
                .tensor(&name)
                .ok_or_else(|| format!("no tensor {name}, which a GPT-2 of this config needs"))?;
            let want = gguf_shape(spec);
            if t.shape() != want {
                return Err(format!(
                    "tensor {name} has shape {:?} (ggml ne {:?}), but the gpt2.* keys imply {want:?}",
                    t.shape(),
                    t.ne
                ));
            }
            tensors.push(t.clone());
        }
        let used: std::collections::HashSet<String> =
            specs.iter().map(|s| gguf_name(&s.name)).collect();
        if let Some(extra) = gguf
            .tensors
            .iter()
            .find(|t| !(used.contains(t.name) || (t.name == "output.weight" && tied_output)))
        {
            return Err(format!(
                "tensor {:?} is not part of a GPT-2 (is this a fine-tune with extra layers?)",
                gpt2_weights::input::printable(extra.name)
            ));
        }
        // Last, as the one check that reads every tensor. The writer would refuse these values
        // too, but only here is the index the one in this file, and `inspect` sees it as well.
        for t in &tensors {
            let data = gguf.data(bytes, t);
            if let Some(found) = gpt2_weights::dtype::first_non_finite(data, t.dtype) {
                return Err(format!(
                    "tensor {} holds {found}; NaN or infinite weights make every output NaN: \
                     convert the model to GGUF again from a sound copy",
                    t.name
                ));
            }
        }
        Ok(Model {
            config,
            tokenizer,
            specs,
            tensors,
        })
    }
}

/// An integer key that must fit in u32.
fn int(gguf: &Gguf<'_>, key: &str) -> Result<u32, String> {
    match gguf.get(key) {
        Some(Value::Int(v)) => {
            u32::try_from(*v).map_err(|_| format!("{key} = {v} is out of range"))
        }
        Some(v) => Err(format!("{key} is {}, not an integer", v.kind())),
        None => Err(format!("no {key} key, which a GPT-2 GGUF has")),
    }
}

fn read_tokenizer(gguf: &Gguf<'_>) -> Result<TokenizerData, String> {
    match gguf.get("tokenizer.ggml.model") {
        Some(Value::Str("gpt2")) => {}
        Some(Value::Str(other)) => {
            return Err(format!(
                "tokenizer.ggml.model is {:?}; gpt2-bench needs GPT-2's byte-level BPE (\"gpt2\")",
                gpt2_weights::input::printable(other)
            ));
        }
        Some(v) => {
            return Err(format!(
                "tokenizer.ggml.model is {}, not a string",
                v.kind()
            ));
        }
        None => return Err("no tokenizer.ggml.model key: the file carries no tokenizer".into()),
    }
    let strings = |key: &str| match gguf.get(key) {
        Some(Value::Strings(items)) => Ok(items),
        Some(v) => Err(format!("{key} is {}, not an array of strings", v.kind())),
        None => Err(format!("no {key} key: the file's tokenizer is incomplete")),
    };
    let tokens: Vec<String> = strings("tokenizer.ggml.tokens")?
        .iter()
        .map(|s| s.to_string())
        .collect();
    let merges = strings("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(format!(
                "tokenizer.ggml.merges[{i}] is {:?}, not two parts one space apart",
                gpt2_weights::input::printable(m)
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let eot_id = int(gguf, "tokenizer.ggml.eos_token_id")?;
    if eot_id as usize >= tokens.len() {
        return Err(format!(
            "tokenizer.ggml.eos_token_id {eot_id} is outside the {} tokens",
            tokens.len()
        ));
    }
    let data = TokenizerData {
        tokens,
        merges,
        eot_id,
    };
    // What every run's loader checks (Gpt2Tokenizer::from_data calls the same function): a
    // tokenizer that imports must be one that runs.
    gpt2_weights::tokenizer::validate(&data).map_err(|e| {
        use gpt2_weights::error::TokenizerError as E;
        let key = match e {
            E::NotByteLevel { .. } | E::DuplicateToken { .. } => "tokenizer.ggml.tokens",
            E::UnknownMergePart { .. } | E::MergeResultNotAToken { .. } => "tokenizer.ggml.merges",
            E::EotOutOfRange { .. } => "tokenizer.ggml.eos_token_id",
        };
        format!(
            "{key}: {e}; no GPT-2 tokenizer can be built from it: convert the model to GGUF \
             again with its original tokenizer"
        )
    })?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        assert_eq!(gguf_name("wte.weight"), "token_embd.weight");
        assert_eq!(gguf_name("h.11.attn.c_attn.bias"), "blk.11.attn_qkv.bias");
        assert_eq!(
            gguf_name("h.0.attn.c_proj.weight"),
            "blk.0.attn_output.weight"
        );
        assert_eq!(gguf_name("h.3.mlp.c_proj.weight"), "blk.3.ffn_down.weight");
        assert_eq!(gguf_name("h.3.mlp.c_fc.bias"), "blk.3.ffn_up.bias");
        assert_eq!(gguf_name("h.2.ln_2.weight"), "blk.2.ffn_norm.weight");
        assert_eq!(gguf_name("ln_f.bias"), "output_norm.bias");
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
    }
}
