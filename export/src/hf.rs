//! Hugging Face GPT-2 checkpoint directory -> weight file.
//!
//! What a checkpoint directory may hold, and how each variant is handled:
//! - `config.json`: must say `model_type: "gpt2"` (or name a GPT-2 architecture); `n_inner: null`
//!   or absent means 4 * n_embd; `n_positions` (or the older `n_ctx`) is the context length;
//!   the activation must be GPT-2's tanh GELU (`gelu_new` / `gelu_pytorch_tanh`).
//! - weights: one `model.safetensors`, or shards listed in `model.safetensors.index.json`.
//!   F32, F16 and BF16 tensors are converted to f32. Names may carry the `transformer.` prefix
//!   (saved from `GPT2LMHeadModel`) or not (the official files). The `attn.bias` and
//!   `attn.masked_bias` buffers (a causal mask, not parameters) are skipped. `lm_head.weight` is
//!   ignored when the output is tied, and required when `tie_word_embeddings` is false.
//!   Linear weights are Conv1D, `[in, out]`, which is already our layout: they are copied as is.
//! - tokenizer: `tokenizer.json`, or `vocab.json` + `merges.txt`.
//!
//! Tensors are converted and written one at a time, so memory stays at about one tensor.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use gpt2_weights::{Config, Provenance, TokenizerData, WeightWriter};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::ExportError;

/// Weight buffers in old checkpoints that are not parameters.
const SKIPPED_SUFFIXES: [&str; 2] = [".attn.bias", ".attn.masked_bias"];

/// Exports the checkpoint in `dir` to `out`, its matrices in `dtype`. `source` is recorded as
/// the file's provenance. Each tensor is read as f32 (exact from F16 and BF16) and converted
/// once: an F16 checkpoint exported as f16 (a BF16 one as bf16) keeps its bits.
pub fn export_dir(
    dir: &Path,
    out: &Path,
    source: &str,
    dtype: gpt2_weights::Dtype,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    if !dir.is_dir() {
        return Err(ExportError::Checkpoint {
            path: dir.to_path_buf(),
            message: "no such directory".into(),
        });
    }
    let config = read_config(dir)?;
    let (tokenizer, tokenizer_files) = read_tokenizer_files(dir, &config)?;
    let shards = Shards::open(dir)?;
    let parsed = shards.parse_all()?;
    let tensors = index_tensors(dir, &parsed)?;
    check_every_tensor_is_used(dir, &config, &tensors, &parsed, &shards.files)?;
    // The output must not be any file this export reads (`--out DIR/model.safetensors`).
    let mut inputs: Vec<&Path> = vec![shards.config.as_path()];
    inputs.extend(tokenizer_files.iter().map(PathBuf::as_path));
    inputs.extend(shards.index.iter().map(PathBuf::as_path));
    inputs.extend(shards.files.iter().map(PathBuf::as_path));
    let model_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gpt2".into());
    let provenance = Provenance {
        model_name: hub_model_name(source).unwrap_or(model_name),
        source: source.to_string(),
        exporter: crate::exporter_id(),
    };
    let dtypes = config.tensor_dtypes(dtype);
    let mut writer = WeightWriter::create(out, &config, &provenance, &tokenizer, &inputs, &dtypes)?;
    let plan: Vec<_> = writer.remaining().to_vec();
    for (i, info) in plan.iter().enumerate() {
        let found = tensors
            .get(&info.name)
            .ok_or_else(|| missing_tensor(dir, &info.name, &tensors))?;
        let view = parsed[found.shard]
            .tensor(&found.original_name)
            .map_err(|e| ExportError::Checkpoint {
                path: shards.files[found.shard].clone(),
                message: format!("tensor {}: {e}", found.original_name),
            })?;
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        if shape != info.shape {
            return Err(ExportError::Checkpoint {
                path: shards.files[found.shard].clone(),
                message: format!(
                    "tensor {} has shape {shape:?}, but config.json implies {:?}",
                    found.original_name, info.shape
                ),
            });
        }
        let data =
            to_f32(view.dtype(), view.data()).map_err(|message| ExportError::Checkpoint {
                path: shards.files[found.shard].clone(),
                message: format!("tensor {}: {message}", found.original_name),
            })?;
        writer.write_tensor_from(&shards.files[found.shard], &info.name, &data)?;
        progress(i + 1, plan.len());
    }
    Ok(writer.finish()?)
}

/// `hf-hub:owner/name` -> `name`.
fn hub_model_name(source: &str) -> Option<String> {
    let repo = source.strip_prefix("hf-hub:")?;
    let repo = repo.split('@').next()?;
    repo.rsplit('/').next().map(str::to_string)
}

/// Reads a text file of the checkpoint: a regular file, at most
/// [`MAX_TEXT_FILE_BYTES`](gpt2_weights::input::MAX_TEXT_FILE_BYTES).
fn read_text(path: &Path) -> Result<String, ExportError> {
    gpt2_weights::input::read_text_limited(path, gpt2_weights::input::MAX_TEXT_FILE_BYTES).map_err(
        |e| ExportError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    )
}

fn read_json(path: &Path) -> Result<Value, ExportError> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| ExportError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

/// Reads and checks `config.json`.
pub fn read_config(dir: &Path) -> Result<Config, ExportError> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(ExportError::Checkpoint {
            path,
            message: "missing; a Hugging Face checkpoint directory has a config.json".into(),
        });
    }
    let v = read_json(&path)?;
    let err = |message: String| ExportError::Checkpoint {
        path: path.clone(),
        message,
    };
    if !v.is_object() {
        return Err(err("not a JSON object of settings".into()));
    }
    // A key that is present must have its type: `"layer_norm_epsilon": "abc"` is an error, never
    // a silent default. Absent or null keys take GPT-2's defaults.
    let typed =
        |name: &str, kind: &str, ok: fn(&Value) -> bool| -> Result<Option<&Value>, ExportError> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(x) if ok(x) => Ok(Some(x)),
                Some(x) => Err(err(format!(
                    "{name} must be {kind}, got {}",
                    gpt2_weights::input::printable(&x.to_string())
                ))),
            }
        };
    let string = |name: &str| -> Result<Option<&str>, ExportError> {
        Ok(typed(name, "a string", Value::is_string)?.and_then(Value::as_str))
    };
    let boolean = |name: &str| -> Result<Option<bool>, ExportError> {
        Ok(typed(name, "true or false", Value::is_boolean)?.and_then(Value::as_bool))
    };
    let model_type = string("model_type")?;
    let architectures: Vec<&str> = match typed("architectures", "a list of strings", |a| {
        a.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    })? {
        Some(a) => a
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect(),
        None => Vec::new(),
    };
    let is_gpt2 = model_type == Some("gpt2")
        || (model_type.is_none() && architectures.iter().any(|a| a.starts_with("GPT2")));
    if !is_gpt2 {
        return Err(ExportError::NotGpt2 {
            path,
            reason: format!(
                "config.json says model_type {:?}, architectures {:?}; only GPT-2 checkpoints \
                 (model_type \"gpt2\") can be exported",
                gpt2_weights::input::printable(model_type.unwrap_or("(none)")),
                architectures
                    .iter()
                    .take(4)
                    .map(|a| gpt2_weights::input::printable(a))
                    .collect::<Vec<_>>()
            ),
        });
    }
    let field = |names: &[&str]| -> Result<Option<u64>, ExportError> {
        for name in names {
            match v.get(*name) {
                None | Some(Value::Null) => continue,
                Some(x) => {
                    return x.as_u64().map(Some).ok_or_else(|| {
                        err(format!(
                            "{name} must be a non-negative integer, got {}",
                            gpt2_weights::input::printable(&x.to_string())
                        ))
                    });
                }
            }
        }
        Ok(None)
    };
    let required = |names: &[&str]| -> Result<u32, ExportError> {
        let value = field(names)?.ok_or_else(|| err(format!("missing field {}", names[0])))?;
        u32::try_from(value).map_err(|_| err(format!("{} = {value} is too large", names[0])))
    };
    let n_embd = required(&["n_embd", "hidden_size"])?;
    let n_inner = match field(&["n_inner"])? {
        Some(x) => u32::try_from(x).map_err(|_| err(format!("n_inner = {x} is too large")))?,
        // `n_inner: null` (every released GPT-2) means 4 * n_embd, never 0.
        None => n_embd.saturating_mul(4),
    };
    let activation = string("activation_function")?.unwrap_or("gelu_new");
    if !matches!(activation, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(err(format!(
            "activation_function {:?} is not GPT-2's tanh GELU (gelu_new); \
             this checkpoint would compute something else",
            gpt2_weights::input::printable(activation)
        )));
    }
    for (flag, supported) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
    ] {
        if let Some(x) = boolean(flag)?
            && x != supported
        {
            return Err(err(format!(
                "{flag} = {x} is a GPT-2 variant that gpt2-bench does not implement"
            )));
        }
    }
    let eps = typed("layer_norm_epsilon", "a number", Value::is_number)?
        .and_then(Value::as_f64)
        .unwrap_or(1e-5) as f32;
    let config = Config {
        n_layer: required(&["n_layer", "num_hidden_layers"])?,
        n_head: required(&["n_head", "num_attention_heads"])?,
        n_embd,
        vocab_size: required(&["vocab_size"])?,
        n_ctx: required(&["n_positions", "n_ctx", "max_position_embeddings"])?,
        mlp_hidden: n_inner,
        layer_norm_eps: eps,
        tied_output: boolean("tie_word_embeddings")?.unwrap_or(true),
    };
    config.validate().map_err(|e| err(e.to_string()))?;
    Ok(config)
}

/// Reads the tokenizer from `tokenizer.json`, or from `vocab.json` + `merges.txt`.
pub fn read_tokenizer(dir: &Path, config: &Config) -> Result<TokenizerData, ExportError> {
    read_tokenizer_files(dir, config).map(|(data, _)| data)
}

/// [`read_tokenizer`], also returning the files it read.
fn read_tokenizer_files(
    dir: &Path,
    config: &Config,
) -> Result<(TokenizerData, Vec<PathBuf>), ExportError> {
    let tokenizer_json = dir.join("tokenizer.json");
    let (vocab, merges, files) = if tokenizer_json.is_file() {
        let v = read_json(&tokenizer_json)?;
        let err = |m: &str| ExportError::Checkpoint {
            path: tokenizer_json.clone(),
            message: m.to_string(),
        };
        let model = v.get("model").ok_or_else(|| err("no \"model\" section"))?;
        if model.get("type").and_then(Value::as_str) != Some("BPE") {
            return Err(err(
                "the tokenizer model is not BPE; GPT-2 uses byte-level BPE",
            ));
        }
        let vocab = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| err("no model.vocab object"))?;
        let vocab: Vec<(String, Option<u64>)> =
            vocab.iter().map(|(k, v)| (k.clone(), v.as_u64())).collect();
        let merges = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| err("no model.merges array"))?;
        // Older files write a merge as "a b", newer ones as ["a", "b"].
        let merges: Option<Vec<(String, String)>> = merges
            .iter()
            .map(|m| match m {
                Value::String(s) => s.split_once(' ').map(|(a, b)| (a.into(), b.into())),
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let merges = merges.ok_or_else(|| err("a merge is neither \"a b\" nor [\"a\", \"b\"]"))?;
        (vocab, merges, vec![tokenizer_json.clone()])
    } else {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        if !vocab_path.is_file() || !merges_path.is_file() {
            return Err(ExportError::Checkpoint {
                path: dir.to_path_buf(),
                message: "no tokenizer: expected tokenizer.json, or vocab.json and merges.txt"
                    .into(),
            });
        }
        let v = read_json(&vocab_path)?;
        let vocab = v.as_object().ok_or_else(|| ExportError::Checkpoint {
            path: vocab_path.clone(),
            message: "not a JSON object of token -> id".into(),
        })?;
        let vocab = vocab.iter().map(|(k, v)| (k.clone(), v.as_u64())).collect();
        let text = read_text(&merges_path)?;
        let mut merges = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
                continue;
            }
            let (a, b) = line
                .split_once(' ')
                .ok_or_else(|| ExportError::Checkpoint {
                    path: merges_path.clone(),
                    message: format!("line {} is not \"a b\"", i + 1),
                })?;
            merges.push((a.to_string(), b.to_string()));
        }
        (vocab, merges, vec![vocab_path, merges_path])
    };

    let bad = |message: String| ExportError::Checkpoint {
        path: files[0].clone(),
        message,
    };
    // Checked before the table is allocated: vocab_size comes from config.json, and a lying
    // value must not allocate gigabytes for a tokenizer of a few hundred tokens.
    if vocab.len() != config.vocab_size as usize {
        return Err(bad(format!(
            "the tokenizer has {} tokens but config.json says vocab_size {}",
            vocab.len(),
            config.vocab_size
        )));
    }
    let mut tokens = vec![None; config.vocab_size as usize];
    for (token, id) in vocab {
        let shown = gpt2_weights::input::printable(&token);
        let id = id.ok_or_else(|| bad(format!("token {shown:?} has a non-integer id")))?;
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            bad(format!(
                "token {shown:?} has id {id}, outside the model's vocab_size {}",
                config.vocab_size
            ))
        })?;
        if slot.replace(token).is_some() {
            return Err(bad(format!("id {id} is assigned twice")));
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.ok_or_else(|| bad(format!("no token has id {id}"))))
        .collect::<Result<_, _>>()?;
    let eot_id = tokens
        .iter()
        .position(|t| t == "<|endoftext|>")
        .ok_or_else(|| bad("the vocabulary has no <|endoftext|> token".into()))?
        as u32;
    let data = TokenizerData {
        tokens,
        merges,
        eot_id,
    };
    gpt2_weights::Gpt2Tokenizer::from_data(&data).map_err(|e| bad(e.to_string()))?;
    Ok((data, files))
}

/// Where a tensor lives: which shard, under which name in that shard.
struct Found {
    shard: usize,
    original_name: String,
}

/// The safetensors files of a checkpoint, mapped.
struct Shards {
    /// The checkpoint's config.json (an input, like every file below).
    config: PathBuf,
    /// The shard index, when the weights are sharded.
    index: Option<PathBuf>,
    files: Vec<PathBuf>,
    maps: Vec<Mmap>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Self, ExportError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let is_single = single.is_file();
        let files = if is_single {
            vec![single]
        } else if index.is_file() {
            let v = read_json(&index)?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| ExportError::Checkpoint {
                    path: index.clone(),
                    message: "no weight_map object".into(),
                })?;
            // A set: linear in the number of names, and a deterministic order.
            let mut names = std::collections::BTreeSet::new();
            for shard in map.values() {
                let name = shard
                    .as_str()
                    .filter(|s| !s.is_empty() && !s.contains('/') && !s.contains('\\'));
                let name = name.ok_or_else(|| ExportError::Checkpoint {
                    path: index.clone(),
                    message: format!(
                        "weight_map names an invalid shard file {}",
                        gpt2_weights::input::printable(&shard.to_string())
                    ),
                })?;
                names.insert(name);
            }
            names.into_iter().map(|name| dir.join(name)).collect()
        } else if dir.join("pytorch_model.bin").is_file() {
            return Err(ExportError::Checkpoint {
                path: dir.to_path_buf(),
                message: "has only pytorch_model.bin; gpt2-export reads safetensors. Convert it \
                          (transformers: model.save_pretrained(dir, safe_serialization=True)) \
                          or download model.safetensors"
                    .into(),
            });
        } else {
            return Err(ExportError::Checkpoint {
                path: dir.to_path_buf(),
                message: "no model.safetensors or model.safetensors.index.json".into(),
            });
        };
        let mut maps = Vec::with_capacity(files.len());
        for f in &files {
            let file = gpt2_weights::input::open_regular(f).map_err(|e| ExportError::Io {
                path: f.clone(),
                source: e,
            })?;
            // SAFETY: read-only private map of a checkpoint file that we only read; it is not
            // expected to change while the export runs (the same assumption every loader makes).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ExportError::Io {
                path: f.clone(),
                source: e,
            })?;
            maps.push(map);
        }
        Ok(Shards {
            config: dir.join("config.json"),
            index: (!is_single).then_some(index),
            files,
            maps,
        })
    }

    /// Parses every shard's safetensors header once.
    fn parse_all(&self) -> Result<Vec<SafeTensors<'_>>, ExportError> {
        self.maps
            .iter()
            .zip(&self.files)
            .map(|(map, path)| {
                SafeTensors::deserialize(map).map_err(|e| ExportError::Checkpoint {
                    path: path.clone(),
                    message: format!("not a valid safetensors file: {e}"),
                })
            })
            .collect()
    }
}

/// Maps our tensor names (no `transformer.` prefix) to where each tensor is, skipping buffers;
/// rejects unknown names so that a non-GPT-2 checkpoint is not silently half-exported.
fn index_tensors(
    dir: &Path,
    parsed: &[SafeTensors<'_>],
) -> Result<BTreeMap<String, Found>, ExportError> {
    let mut out = BTreeMap::new();
    let mut unknown = Vec::new();
    for (shard, st) in parsed.iter().enumerate() {
        for name in st.names() {
            let ours = name.strip_prefix("transformer.").unwrap_or(name);
            if SKIPPED_SUFFIXES.iter().any(|s| ours.ends_with(s)) {
                continue;
            }
            if !is_gpt2_name(ours) {
                unknown.push(name.to_string());
                continue;
            }
            let found = Found {
                shard,
                original_name: name.to_string(),
            };
            // `wte.weight` and `transformer.wte.weight` both present, or one name in two shards:
            // which copy won would depend on hash order, so an export would not be repeatable.
            if let Some(first) = out.insert(ours.to_string(), found) {
                return Err(ExportError::Checkpoint {
                    path: dir.to_path_buf(),
                    message: format!(
                        "tensor {} is stored twice (as {} and as {}); keep one copy",
                        gpt2_weights::input::printable(ours),
                        gpt2_weights::input::printable(&first.original_name),
                        gpt2_weights::input::printable(name)
                    ),
                });
            }
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        let looks_gpt2 = out.contains_key("wte.weight");
        return Err(if looks_gpt2 {
            ExportError::Checkpoint {
                path: dir.to_path_buf(),
                message: format!(
                    "{} tensors that GPT-2 does not have, e.g. {}",
                    unknown.len(),
                    gpt2_weights::input::printable(&unknown[0])
                ),
            }
        } else {
            ExportError::NotGpt2 {
                path: dir.to_path_buf(),
                reason: format!(
                    "its tensors are named like {} instead of GPT-2's wte.weight, \
                         h.0.attn.c_attn.weight, ...",
                    gpt2_weights::input::printable(&unknown[0])
                ),
            }
        });
    }
    Ok(out)
}

fn is_gpt2_name(name: &str) -> bool {
    const TOP: [&str; 5] = [
        "wte.weight",
        "wpe.weight",
        "ln_f.weight",
        "ln_f.bias",
        "lm_head.weight",
    ];
    if TOP.contains(&name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("h.") else {
        return false;
    };
    let Some((layer, param)) = rest.split_once('.') else {
        return false;
    };
    layer.parse::<u32>().is_ok()
        && [
            "ln_1.weight",
            "ln_1.bias",
            "attn.c_attn.weight",
            "attn.c_attn.bias",
            "attn.c_proj.weight",
            "attn.c_proj.bias",
            "ln_2.weight",
            "ln_2.bias",
            "mlp.c_fc.weight",
            "mlp.c_fc.bias",
            "mlp.c_proj.weight",
            "mlp.c_proj.bias",
        ]
        .contains(&param)
}

/// Every tensor of the checkpoint must be one the config's model has: a checkpoint with more
/// layers than its `config.json` says (or any tensor the export would drop) is refused, so an
/// export is never silently a different model. The one allowed extra is `lm_head.weight` in a
/// tied model, when it is a byte-identical copy of `wte.weight`.
fn check_every_tensor_is_used(
    dir: &Path,
    config: &Config,
    tensors: &BTreeMap<String, Found>,
    parsed: &[SafeTensors<'_>],
    files: &[PathBuf],
) -> Result<(), ExportError> {
    let expected: HashSet<String> = config
        .expected_tensors()
        .into_iter()
        .map(|spec| spec.name)
        .collect();
    for (name, found) in tensors {
        if expected.contains(name) {
            continue;
        }
        if name == "lm_head.weight" && config.tied_output {
            let view = |f: &Found| parsed[f.shard].tensor(&f.original_name).ok();
            let same = match (view(found), tensors.get("wte.weight").and_then(view)) {
                (Some(a), Some(b)) => {
                    a.dtype() == b.dtype() && a.shape() == b.shape() && a.data() == b.data()
                }
                _ => false,
            };
            if same {
                continue;
            }
            return Err(ExportError::Checkpoint {
                path: files[found.shard].clone(),
                message: "lm_head.weight differs from wte.weight, but config.json says the \
                          output layer is tied (tie_word_embeddings true or absent); set \
                          \"tie_word_embeddings\": false if this checkpoint has its own output layer"
                    .into(),
            });
        }
        return Err(ExportError::Checkpoint {
            path: dir.to_path_buf(),
            message: format!(
                "tensor {} is not part of the model config.json describes ({} layers, n_embd {}); \
                 the checkpoint and its config.json disagree",
                gpt2_weights::input::printable(&found.original_name),
                config.n_layer,
                config.n_embd
            ),
        });
    }
    Ok(())
}

fn missing_tensor(dir: &Path, name: &str, have: &BTreeMap<String, Found>) -> ExportError {
    let hint = if name == "lm_head.weight" {
        " (config.json says tie_word_embeddings = false, so the output layer must be stored)"
    } else {
        ""
    };
    let layers: HashSet<&str> = have
        .keys()
        .filter_map(|k| k.strip_prefix("h.")?.split('.').next())
        .collect();
    ExportError::Checkpoint {
        path: dir.to_path_buf(),
        message: format!(
            "missing tensor {name}{hint}; the checkpoint has {} tensors in {} layers",
            have.len(),
            layers.len()
        ),
    }
}

/// Converts little-endian F32/F16/BF16 bytes to f32. The bytes of a safetensors tensor need not
/// be aligned, so they are decoded element by element rather than reinterpreted.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    match dtype {
        Dtype::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        Dtype::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        Dtype::BF16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        other => Err(format!(
            "dtype {other:?} is not supported; only F32, F16 and BF16 tensors can be exported"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_conversion() {
        let f16: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(to_f32(Dtype::F16, &f16).unwrap(), vec![1.5, -2.0]);
        let bf16: Vec<u8> = [0.25f32, 3.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(to_f32(Dtype::BF16, &bf16).unwrap(), vec![0.25, 3.0]);
        assert!(to_f32(Dtype::I64, &[0; 8]).unwrap_err().contains("I64"));
    }

    #[test]
    fn names() {
        assert!(is_gpt2_name("h.11.mlp.c_proj.bias"));
        assert!(is_gpt2_name("wte.weight"));
        assert!(!is_gpt2_name("model.layers.0.self_attn.q_proj.weight"));
        assert!(!is_gpt2_name("h.x.ln_1.weight"));
        assert_eq!(
            hub_model_name("hf-hub:openai-community/gpt2").as_deref(),
            Some("gpt2")
        );
    }
}
