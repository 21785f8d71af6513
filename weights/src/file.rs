//! Opening a weight file: memory-map it, validate the header, hand out zero-copy `&[f32]` views.
//!
//! The file is mapped read-only and never copied: a backend that reads `wte.weight` reads the page
//! cache directly. Opening validates the whole header (see `format::parse_header`) but does not
//! read the tensor data; [`WeightFile::verify_checksum`] does that (one pass over the data,
//! a fraction of a second for GPT-2 small).
//!
//! # Replacing a file that is in use
//! A mapping stays valid for as long as the file it maps is not truncated in place. `gpt2-export`
//! never writes in place: it writes a temporary file in the same directory and renames it over the
//! destination, so a benchmark that has the old file mapped keeps reading the old inode, unharmed.
//! Truncating or rewriting a mapped file in place with another tool (e.g. `truncate`, `cp` onto
//! it) can still make the running process fail with SIGBUS; that is a property of `mmap`, not
//! something a reader can detect in advance.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::{self, Dtype, Linear, Matrix, Values};
use crate::error::{FormatError, Result, WeightsError};
use crate::format::{self, Config, Header, MAGIC, PREAMBLE_LEN, TensorInfo};
use crate::tokenizer::Gpt2Tokenizer;

#[cfg(not(target_endian = "little"))]
compile_error!("gpt2-bench weight files are little-endian and are mapped without conversion");

/// An open, validated weight file.
pub struct WeightFile {
    path: PathBuf,
    mmap: Mmap,
    header: Header,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.path)
            .field("config", &self.header.config)
            .finish_non_exhaustive()
    }
}

impl WeightFile {
    /// Maps `path` and validates its header and tensor table (not the data checksum).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = crate::input::open_regular(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                let export = crate::hint::export_command();
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "no such file; create one with `{export} --synthetic gpt2` or \
                         `{export} --from DIR_OR_HUB_ID`"
                    ),
                )
            } else {
                e
            };
            WeightsError::io(path, hint)
        })?;
        let meta = file.metadata().map_err(|e| WeightsError::io(path, e))?;
        let len = meta.len();
        if len < PREAMBLE_LEN as u64 {
            // Too short to map usefully; read it to tell "not ours" from "truncated".
            let mut bytes = Vec::new();
            (&file)
                .take(PREAMBLE_LEN as u64)
                .read_to_end(&mut bytes)
                .map_err(|e| WeightsError::io(path, e))?;
            let err = if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] == MAGIC {
                FormatError::Truncated {
                    expected: PREAMBLE_LEN as u64,
                    actual: bytes.len() as u64,
                }
            } else if bytes.starts_with(b"GGUF") {
                FormatError::Gguf
            } else {
                FormatError::BadMagic
            };
            return Err(WeightsError::format(path, err));
        }
        // SAFETY: the map is read-only and private to this process. The remaining hazard of any
        // file mapping is another process truncating the file in place while it is mapped
        // (SIGBUS on access); our own exporter never does that (it renames a finished temporary
        // file over the destination), as the module docs explain.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| WeightsError::io(path, e))?;
        let header = format::parse_header(&mmap, len).map_err(|e| WeightsError::format(path, e))?;
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let file = WeightFile {
            path: path.to_path_buf(),
            mmap,
            header,
            index,
        };
        file.check_q8_0_scales()?;
        Ok(file)
    }

    /// Every q8_0 block's scale must be finite: an infinite or NaN scale (a damaged file, or a
    /// broken quantizer elsewhere) would make every output NaN. Reads two bytes per block, which
    /// touches every page of the q8_0 tensors; the run that follows reads them anyway. The error
    /// is [`check_finite`](Self::check_finite)'s.
    fn check_q8_0_scales(&self) -> Result<()> {
        for t in self
            .header
            .tensors
            .iter()
            .filter(|t| t.dtype == Dtype::Q8_0)
        {
            self.check_finite(&t.name)?;
        }
        Ok(())
    }

    /// Opens and verifies the data checksum: every byte of the file has then been checked.
    pub fn open_verified(path: impl AsRef<Path>) -> Result<Self> {
        let f = Self::open(path)?;
        f.verify_checksum()?;
        Ok(f)
    }

    /// Reads the whole data section and compares its checksum with the stored one.
    pub fn verify_checksum(&self) -> Result<()> {
        format::verify_data_checksum(&self.header.preamble, self.data_section())
            .map_err(|e| WeightsError::format(&self.path, e))
    }

    /// The whole tensor data section as f32 values (padding included, the last 0-3 bytes left
    /// out): every byte a decode step reads, in file order, whatever the tensors' dtypes. Used
    /// to measure read bandwidth on the real mapping.
    pub fn data_f32(&self) -> Result<&[f32]> {
        let data = self.data_section();
        bytemuck::try_cast_slice(&data[..data.len() / 4 * 4]).map_err(|e| {
            WeightsError::format(
                &self.path,
                FormatError::Corrupt(format!("data section cannot be viewed as f32: {e}")),
            )
        })
    }

    fn data_section(&self) -> &[u8] {
        let p = &self.header.preamble;
        &self.mmap[p.data_offset as usize..p.file_len as usize]
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn config(&self) -> &Config {
        &self.header.config
    }

    /// Total size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.header.preamble.file_len
    }

    /// The stored XXH3-64 checksum of the tensor data (identifies the exact weights).
    pub fn data_checksum(&self) -> u64 {
        self.header.preamble.data_checksum
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .map(|&i| &self.header.tensors[i])
            .ok_or_else(|| {
                WeightsError::format(
                    &self.path,
                    FormatError::Corrupt(format!("no tensor named {name}")),
                )
            })
    }

    fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        // parse_header checked that every tensor lies inside the data section.
        let start = (self.header.preamble.data_offset + info.offset) as usize;
        &self.mmap[start..start + info.byte_len as usize]
    }

    /// A zero-copy view of one tensor's stored values, in its dtype and stored layout.
    pub fn values(&self, name: &str) -> Result<Values<'_>> {
        let info = self.info(name)?;
        // The map is page-aligned and every tensor starts on a 64-byte boundary, so this view
        // cannot fail for files that passed validation; it is still checked, not assumed.
        Values::from_bytes(self.tensor_bytes(info), info.dtype).ok_or_else(|| {
            WeightsError::format(
                &self.path,
                FormatError::Corrupt(format!("tensor {name} cannot be viewed as {}", info.dtype)),
            )
        })
    }

    /// The stored bytes of one tensor and its dtype (for exact copies).
    pub fn raw(&self, name: &str) -> Result<(&[u8], Dtype)> {
        let info = self.info(name)?;
        Ok((self.tensor_bytes(info), info.dtype))
    }

    /// A zero-copy view of an f32 tensor (norms, biases, `wpe`, and any tensor of an f32 file).
    pub fn tensor(&self, name: &str) -> Result<&[f32]> {
        match self.values(name)? {
            Values::F32(v) => Ok(v),
            other => Err(WeightsError::format(
                &self.path,
                FormatError::Corrupt(format!("tensor {name} is {}, not f32", other.dtype())),
            )),
        }
    }

    /// One tensor's values as f32 in its logical layout ([`Config::expected_tensors`]):
    /// dequantized, and transposed back where its dtype is stored `[out, in]`.
    pub fn logical_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        let values = self.values(name)?.to_f32().into_owned();
        // The tensor's role says whether its dtype stores it transposed (the table was checked
        // against the same specs when the file was opened).
        let transposed = self
            .config()
            .expected_tensors()
            .iter()
            .any(|spec| spec.name == name && spec.transposed(info.dtype));
        Ok(if transposed {
            let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
            dtype::transpose(&values, rows, cols)
        } else {
            values
        })
    }

    /// A (rows, cols) matrix view of a 2-D tensor, as stored.
    fn matrix(&self, name: &str) -> Result<Matrix<'_>> {
        let info = self.info(name)?;
        let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
        Ok(Matrix::new(self.values(name)?, rows, cols))
    }

    /// A linear layer's weight, in the layout its dtype is stored in.
    fn linear(&self, name: &str) -> Result<Linear<'_>> {
        let m = self.matrix(name)?;
        Ok(if m.dtype() == Dtype::F32 {
            Linear::InOut(m)
        } else {
            Linear::OutIn(m)
        })
    }

    /// Weight bytes one decode step reads, in the file's real dtypes: every tensor once (a tied
    /// embedding is one tensor, read for the output layer), except that only one row of `wpe`
    /// is used. The decode roofline's "bytes per token" (the KV cache comes on top).
    pub fn bytes_per_token(&self) -> u64 {
        let c = u64::from(self.config().n_embd);
        self.header
            .tensors
            .iter()
            .map(|t| {
                if t.name == "wpe.weight" {
                    c * 4
                } else {
                    t.byte_len
                }
            })
            .sum()
    }

    /// Typed views of every GPT-2 tensor, for backends.
    pub fn gpt2(&self) -> Result<Gpt2Weights<'_>> {
        let c = self.config();
        let t = |name: &str| self.tensor(name);
        let mut layers = Vec::with_capacity(c.n_layer as usize);
        for l in 0..c.n_layer {
            let p = |s: &str| format!("h.{l}.{s}");
            layers.push(LayerWeights {
                ln_1_w: t(&p("ln_1.weight"))?,
                ln_1_b: t(&p("ln_1.bias"))?,
                qkv_w: self.linear(&p("attn.c_attn.weight"))?,
                qkv_b: t(&p("attn.c_attn.bias"))?,
                attn_proj_w: self.linear(&p("attn.c_proj.weight"))?,
                attn_proj_b: t(&p("attn.c_proj.bias"))?,
                ln_2_w: t(&p("ln_2.weight"))?,
                ln_2_b: t(&p("ln_2.bias"))?,
                fc_w: self.linear(&p("mlp.c_fc.weight"))?,
                fc_b: t(&p("mlp.c_fc.bias"))?,
                fc_proj_w: self.linear(&p("mlp.c_proj.weight"))?,
                fc_proj_b: t(&p("mlp.c_proj.bias"))?,
            });
        }
        let wte = self.matrix("wte.weight")?;
        Ok(Gpt2Weights {
            config: *c,
            wte,
            wpe: t("wpe.weight")?,
            layers,
            ln_f_w: t("ln_f.weight")?,
            ln_f_b: t("ln_f.bias")?,
            lm_head: if c.tied_output {
                wte
            } else {
                self.matrix("lm_head.weight")?
            },
            tied_output: c.tied_output,
            file: self,
        })
    }

    /// The tokenizer stored in the file.
    pub fn tokenizer(&self) -> Result<Gpt2Tokenizer> {
        Gpt2Tokenizer::from_data(&self.header.tokenizer).map_err(|e| match e {
            WeightsError::InvalidTokenizer(source) => WeightsError::TokenizerIn {
                path: self.path.clone(),
                source,
            },
            other => other,
        })
    }

    /// Whether the stored tokenizer can be built ([`crate::tokenizer::validate`]), as an error
    /// naming this file.
    pub fn check_tokenizer(&self) -> Result<()> {
        crate::tokenizer::validate(&self.header.tokenizer).map_err(|source| {
            WeightsError::TokenizerIn {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Whether every stored value of tensor `name` is finite ([`dtype::first_non_finite`]); the
    /// error names this file, the tensor and the value's index as stored.
    pub fn check_finite(&self, name: &str) -> Result<()> {
        let (bytes, dtype) = self.raw(name)?;
        match dtype::first_non_finite(bytes, dtype) {
            Some(found) => Err(WeightsError::NonFinite {
                path: self.path.clone(),
                tensor: name.to_string(),
                found,
            }),
            None => Ok(()),
        }
    }

    /// What opening does not check but every run needs: a tokenizer that can be built and no
    /// NaN or infinite weight ([`check_tokenizer`](Self::check_tokenizer),
    /// [`check_finite`](Self::check_finite) on every tensor). A file this crate wrote passes
    /// (the writer refuses both); one written elsewhere, or damaged under a recomputed checksum,
    /// may not. Reads every tensor once.
    pub fn check_runnable(&self) -> Result<()> {
        self.check_tokenizer()?;
        for t in &self.header.tensors {
            self.check_finite(&t.name)?;
        }
        Ok(())
    }
}

/// Views of one transformer block's tensors. C = n_embd, H = mlp_hidden. Linear weights are
/// [`Linear`]: `y = x W + b` with W stored (in, out) in f32 and (out, in) in other dtypes.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    /// (C) layer norm before attention: scale and shift.
    pub ln_1_w: &'a [f32],
    pub ln_1_b: &'a [f32],
    /// C -> 3C and (3C): fused Q|K|V projection; output features are Q, then K, then V.
    pub qkv_w: Linear<'a>,
    pub qkv_b: &'a [f32],
    /// C -> C and (C): attention output projection.
    pub attn_proj_w: Linear<'a>,
    pub attn_proj_b: &'a [f32],
    /// (C) layer norm before the MLP.
    pub ln_2_w: &'a [f32],
    pub ln_2_b: &'a [f32],
    /// C -> H and (H): MLP up-projection.
    pub fc_w: Linear<'a>,
    pub fc_b: &'a [f32],
    /// H -> C and (C): MLP down-projection.
    pub fc_proj_w: Linear<'a>,
    pub fc_proj_b: &'a [f32],
}

/// Views of a whole GPT-2, borrowed from a [`WeightFile`].
#[derive(Debug, Clone)]
pub struct Gpt2Weights<'a> {
    pub config: Config,
    /// (V, C) token embeddings, in any dtype.
    pub wte: Matrix<'a>,
    /// (n_ctx, C) learned position embeddings.
    pub wpe: &'a [f32],
    pub layers: Vec<LayerWeights<'a>>,
    /// (C) final layer norm.
    pub ln_f_w: &'a [f32],
    pub ln_f_b: &'a [f32],
    /// (V, C) output layer, used as `logits = x @ lm_head^T`; the same matrix as `wte` when
    /// tied.
    pub lm_head: Matrix<'a>,
    /// Whether `lm_head` is `wte`.
    pub tied_output: bool,
    /// The file these views borrow from (its path, header and checksum), for a backend that
    /// reads the file in another format (llama.cpp: the same bytes as a GGUF).
    pub file: &'a WeightFile,
}

impl Gpt2Weights<'_> {
    /// The dtype of every matrix that carries bytes: `wte`, `lm_head`, each block's four.
    pub fn matrix_dtypes(&self) -> impl Iterator<Item = Dtype> + '_ {
        [self.wte.dtype(), self.lm_head.dtype()].into_iter().chain(
            self.layers
                .iter()
                .flat_map(|l| [l.qkv_w, l.attn_proj_w, l.fc_w, l.fc_proj_w].map(|m| m.dtype())),
        )
    }

    /// Whether every matrix is f32 (a file in no reduced precision).
    pub fn all_f32(&self) -> bool {
        self.matrix_dtypes().all(|d| d == Dtype::F32)
    }

    /// The dtype of the matrices that carry the bytes, as a label: `f16`, or `q8_0+f16` when a
    /// file mixes them (a q8_0 file whose odd-width matrices stayed f16).
    pub fn dtype_label(&self) -> String {
        let mut seen: Vec<Dtype> = Vec::new();
        for d in self.matrix_dtypes() {
            if !seen.contains(&d) {
                seen.push(d);
            }
        }
        // The dtype with the most bytes saved first: q8_0, then bf16/f16, then f32.
        seen.sort_by(|a, b| a.bytes_per_value().total_cmp(&b.bytes_per_value()));
        seen.iter().map(|d| d.name()).collect::<Vec<_>>().join("+")
    }
}
