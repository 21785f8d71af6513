//! `llama.cpp`: llama.cpp itself, through its C API (the `llama-cpp-2` bindings, which build the
//! llama.cpp sources vendored in `llama-cpp-sys-2` with cmake), on the very bytes the other
//! backends run: the weight file written as a GGUF by gpt2-export's writer
//! (`gpt2_export::gguf`), cached beside the file under its checksum and verified before every
//! use ([`cached_gguf`]). Behind the cargo feature `llama-cpp`, off by default: building
//! llama.cpp takes minutes and needs cmake, a C++ compiler and libclang.
//!
//! The contract is every backend's ([`Forward`]): a prefill is one `llama_decode` of the whole
//! prompt with logits for its last position only; a step is one `llama_decode` of one token
//! after the positions llama.cpp holds in its own KV cache; a new sequence drops that cache's
//! cells (without clearing their bytes, as llama-bench does between runs).
//! `--threads` sets both of llama.cpp's thread counts (prefill and decode), `--kv-cache` its key
//! and value cache types (llama.cpp's own default is f16; the row's `kv_cache_dtype` says which
//! ran), and [`FLASH_ATTN_ENV`] its flash attention (llama.cpp's default, `auto`, unless set).
//! The whole call is one line of `--profile` (llama.cpp times its graph, not GPT-2's
//! operations), so the profile has prefill and decode totals.
//!
//! Instruction set: ggml compiles its CPU kernels for the instruction sets the build targets,
//! and `llama-cpp-sys-2` targets the baseline x86-64 unless Rust's `target-cpu` is `native`
//! (then `GGML_NATIVE`). A build without it would measure llama.cpp with SSE only; so the
//! backend reads what its ggml was compiled with ([`ggml_isa`]) and refuses to run without the
//! best the CPU has, saying how to build it (`RUSTFLAGS="-C target-cpu=native"`).
//!
//! Numerics: llama.cpp computes f32 and f16 weights by nearly the reference's rule, f32 sums,
//! but rounds its own way in every dtype: GELU is read from a table of f16 values indexed by
//! the input rounded to f16 (`GGML_GELU_FP16` in ggml-cpu/vec.h), and an f16 product's inputs
//! are rounded to f16 (ggml's `vec_dot_type`). Its logits stay within [`LOGIT_TOLERANCE`] of
//! naive's on the test models, and its tokens equal the reference's wherever the reference's
//! top two are further apart than that (64 of 64 in CI on synthetic GPT-2 small in f32 and
//! f16), but a closer pair can flip; so the harness reports its agreement with the reference
//! beside its tokens (`different rule`) instead of calling a flip a bug. On q8_0 and bf16
//! files the rule differs in kind: it rounds the inputs of q8_0 products to 8-bit blocks
//! (gpt2-bench to 16-bit) and those of bf16 products to bf16
//! ([`crate::registry::BackendSpec::other_rule`]).

use std::ffi::CStr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gpt2_weights::{Config, KvDtype, WeightFile};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

use crate::Model;
use crate::engine::{EngineError, EngineInfo, Forward};
use crate::profile::{Op, Profiler};

/// Name on the command line.
pub const NAME: &str = "llama.cpp";

/// The largest |logit difference| from `naive` llama.cpp is held to. Its arithmetic differs in
/// small ways by construction: GELU is read from a table indexed by the input rounded to f16,
/// and an f16 matrix multiplies inputs rounded to f16 (ggml's `vec_dot_type`), so its logits
/// differ from naive's by up to 3.4e-2 on the test models (measured on this build: 2.2e-2 on
/// tiny, 3.4e-2 after 200 positions of a 12-layer model, 3.3e-2 from transformers on the
/// golden fixture), where the other backends differ by ~1e-5. 1e-1 leaves room for other CPUs'
/// and builds' rounding and keeps a real bug's O(1) 10x away.
pub const LOGIT_TOLERANCE: f32 = 1e-1;

/// Environment variable: llama.cpp's flash attention, `auto` (llama.cpp's default, and
/// llama-bench's: on for this model on a CPU), `on` or `off`.
pub const FLASH_ATTN_ENV: &str = "GPT2_BENCH_LLAMA_CPP_FLASH_ATTN";

/// The flash attention policy of [`FLASH_ATTN_ENV`], and its name.
fn flash_attention() -> Result<(llama_cpp_sys_2::llama_flash_attn_type, &'static str), EngineError>
{
    match std::env::var(FLASH_ATTN_ENV).as_deref() {
        Err(_) | Ok("auto") => Ok((llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO, "auto")),
        Ok("on") => Ok((llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED, "on")),
        Ok("off") => Ok((llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED, "off")),
        Ok(other) => Err(error(format!(
            "{FLASH_ATTN_ENV}={}: use auto, on or off",
            gpt2_weights::input::printable(other)
        ))),
    }
}

/// Environment variable: the directory for the GGUF copies of weight files whose own directory
/// is not writable (default `$XDG_CACHE_HOME/gpt2-bench/gguf`, else `~/.cache/gpt2-bench/gguf`).
pub const CACHE_DIR_ENV: &str = "GPT2_BENCH_CACHE_DIR";

fn error(message: impl Into<String>) -> EngineError {
    EngineError::Backend {
        backend: NAME,
        message: message.into(),
    }
}

/// llama.cpp's process-wide state, made once (llama.cpp allows one per process) with its log
/// silenced: its errors come back as return values, which [`LlamaCppEngine::new`] words.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|m| error(format!("llama.cpp did not start: {m}")))
}

/// llama.cpp's own account of its build (`llama_print_system_info`): the instruction sets its
/// CPU kernels were compiled with, as `AVX2 = 1 | AVX512 = 1 | ...`.
pub fn system_info() -> String {
    // SAFETY: llama_print_system_info returns a pointer to a NUL-terminated static buffer that
    // llama.cpp owns and keeps alive; it is copied out at once.
    unsafe { CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) }
        .to_string_lossy()
        .into_owned()
}

/// The widest instruction set of `system_info` (`avx512`, `avx2`, `neon`, else `baseline`).
pub fn ggml_isa(system_info: &str) -> &'static str {
    let has = |flag: &str| system_info.contains(&format!("{flag} = 1"));
    if has("AVX512") {
        "avx512"
    } else if has("AVX2") {
        "avx2"
    } else if has("NEON") {
        "neon"
    } else {
        "baseline"
    }
}

/// The widest instruction set this CPU has, in the names of [`ggml_isa`].
fn cpu_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") {
            return "avx2";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return "neon";
    }
    #[allow(unreachable_code)]
    "baseline"
}

/// Refuses a llama.cpp compiled for less than this CPU has: its figures would measure a
/// handicapped build, not llama.cpp.
fn check_isa(built: &'static str) -> Result<(), EngineError> {
    let cpu = cpu_isa();
    if built == cpu {
        return Ok(());
    }
    Err(error(format!(
        "this llama.cpp was compiled for {built} but the CPU has {cpu}, so it would not be \
         llama.cpp at its speed; rebuild with RUSTFLAGS=\"-C target-cpu=native\" cargo build \
         --release --features llama-cpp (llama.cpp's CPU code is compiled for the build's target \
         CPU)"
    )))
}

/// Where the GGUF copy of `file` lives: beside it as `NAME.SOURCE.COPY.gguf` (SOURCE the
/// weight file's data checksum, COPY the GGUF's own, both XXH3-64 in hex), or, when that
/// directory cannot be written, in [`CACHE_DIR_ENV`]'s directory. Written once (by gpt2-export's
/// writer, through a temporary file renamed into place, then renamed to carry its checksum) and
/// reused while present; before each use its bytes are checked against the checksum in its
/// name, so a copy that changed on disk is written again, never run: llama.cpp reads exactly
/// the weights the other backends read. A changed weight file has another SOURCE, so a stale
/// copy is never picked up.
pub fn cached_gguf(file: &WeightFile) -> Result<PathBuf, EngineError> {
    let stem = file
        .path()
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy());
    let prefix = format!("{stem}.{:016x}.", file.data_checksum());
    let dirs: Vec<PathBuf> = file
        .path()
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
            .to_path_buf()
        })
        .into_iter()
        .chain(cache_dir())
        .collect();
    for dir in &dirs {
        if let Some(found) = verified_copy(dir, &prefix) {
            return Ok(found);
        }
    }
    let mut failures = Vec::new();
    for dir in &dirs {
        match write_copy(file, dir, &prefix) {
            Ok(path) => return Ok(path),
            Err(e) => failures.push(e),
        }
    }
    Err(error(format!(
        "could not write the GGUF copy of {} that llama.cpp reads ({}); make its directory \
         writable or set {CACHE_DIR_ENV} to a writable directory",
        file.path().display(),
        failures.join("; ")
    )))
}

/// A copy in `dir` named `PREFIX` + 16 hex digits + `.gguf` whose bytes have that checksum.
fn verified_copy(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let hex = name.strip_prefix(prefix)?.strip_suffix(".gguf")?;
        let want = u64::from_str_radix(hex, 16)
            .ok()
            .filter(|_| hex.len() == 16)?;
        let path = entry.path();
        (gpt2_weights::input::checksum_file(&path).ok()? == want).then_some(path)
    })
}

/// Writes the copy into `dir`: as `PREFIX` + `unverified.gguf` (gpt2-export's atomic write),
/// then renamed to carry its checksum. A copy of the same name that no longer matched its
/// checksum is replaced by the rename.
fn write_copy(file: &WeightFile, dir: &Path, prefix: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let unverified = dir.join(format!("{prefix}unverified.gguf"));
    let written = gpt2_export::gguf::export::write_gguf(file, &unverified, &|_, _| {})
        .map_err(|e| e.to_string())?;
    let sum = gpt2_weights::input::checksum_file(&written)
        .map_err(|e| format!("{}: {e}", written.display()))?;
    let path = dir.join(format!("{prefix}{sum:016x}.gguf"));
    std::fs::rename(&written, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("gpt2-bench").join("gguf"))
}

/// The `llama.cpp` backend: see the module docs.
pub struct LlamaCppEngine {
    // Declared (so dropped) before `_model`, which it refers to; see `new`.
    context: LlamaContext<'static>,
    _model: Box<LlamaModel>,
    batch: LlamaBatch<'static>,
    config: Config,
    gguf: PathBuf,
    threads: usize,
    kv_cache: KvDtype,
    dtype: String,
    isa: &'static str,
    flash_attn: &'static str,
    profiler: Profiler,
}

impl LlamaCppEngine {
    pub fn new(model: &Model<'_>, threads: usize) -> Result<Self, EngineError> {
        let config = model.config;
        let backend = backend()?;
        let isa = ggml_isa(&system_info());
        check_isa(isa)?;
        let (flash_attn, flash_attn_name) = flash_attention()?;
        let gguf = cached_gguf(model.file)?;
        let llama_model = LlamaModel::load_from_file(backend, &gguf, &LlamaModelParams::default())
            .map_err(|e| {
                error(format!(
                    "llama.cpp could not load {} ({e}); delete it to have it written again",
                    gguf.display()
                ))
            })?;
        let llama_model = Box::new(llama_model);
        let vocab = llama_model.n_vocab();
        if u32::try_from(vocab).ok() != Some(config.vocab_size) {
            return Err(error(format!(
                "{} has {vocab} tokens where the weight file has {}; delete it to have it \
                 written again",
                gguf.display(),
                config.vocab_size
            )));
        }
        let threads_i32 = i32::try_from(threads.max(1)).unwrap_or(i32::MAX);
        let cache_type = match model.kv_cache {
            KvDtype::F32 => KvCacheType::F32,
            KvDtype::F16 => KvCacheType::F16,
        };
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(config.n_ctx))
            // A whole prompt (at most n_ctx tokens) is one llama_decode call.
            .with_n_batch(config.n_ctx)
            .with_n_threads(threads_i32)
            .with_n_threads_batch(threads_i32)
            .with_type_k(cache_type)
            .with_type_v(cache_type)
            .with_flash_attention_policy(flash_attn);
        let context = llama_model.new_context(backend, params).map_err(|e| {
            error(format!(
                "llama.cpp could not make a context for {} ({e}); this machine may lack the \
                 memory for its {}-position cache",
                gguf.display(),
                config.n_ctx
            ))
        })?;
        // SAFETY: the context borrows the model, which lives in a Box owned by the same struct:
        // its address does not change when the struct moves, it is never replaced or handed
        // out, and `context` is declared before `_model`, so it is dropped first. The 'static
        // lifetime never escapes this struct (no method returns the context).
        let context =
            unsafe { std::mem::transmute::<LlamaContext<'_>, LlamaContext<'static>>(context) };
        Ok(LlamaCppEngine {
            context,
            _model: llama_model,
            batch: LlamaBatch::new(config.n_ctx as usize, 1),
            config,
            gguf,
            threads: threads.max(1),
            kv_cache: model.kv_cache,
            dtype: model.dtype_label(),
            isa,
            flash_attn: flash_attn_name,
            profiler: Profiler::default(),
        })
    }

    /// The GGUF file llama.cpp reads.
    pub fn gguf(&self) -> &Path {
        &self.gguf
    }

    /// Bytes of llama.cpp's key/value cache: keys and values of every layer and position.
    fn kv_cache_bytes(&self) -> u64 {
        let c = &self.config;
        let per_value: u64 = match self.kv_cache {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        };
        2 * u64::from(c.n_layer) * u64::from(c.n_ctx) * u64::from(c.n_embd) * per_value
    }
}

impl Forward for LlamaCppEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: true,
            threads: self.threads,
            dtype: self.dtype.clone(),
            kv_cache_bytes: self.kv_cache_bytes(),
            // llama.cpp maps the GGUF (a second copy of the weights on disk, read in place).
            weights_copied_bytes: 0,
            scratch_bytes: None,
            device: "cpu".to_string(),
            summary: match self.flash_attn {
                "on" => {
                    "llama.cpp (ggml) via its C API, same weights as GGUF, KV cache, flash attention on"
                }
                "off" => {
                    "llama.cpp (ggml) via its C API, same weights as GGUF, KV cache, flash attention off"
                }
                _ => {
                    "llama.cpp (ggml) via its C API, same weights as GGUF, KV cache, flash attention auto"
                }
            },
            isa: match self.isa {
                "avx512" => "ggml avx512",
                "avx2" => "ggml avx2",
                "neon" => "ggml neon",
                _ => "ggml baseline",
            },
        }
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn forward(&mut self, tokens: &[u32], new: usize) -> Result<(), EngineError> {
        let start = self.profiler.start();
        // llama.cpp's cache keeps exactly the positions before the new ones (none when a
        // sequence starts). Removing cells frees them without clearing their bytes, as
        // llama-bench does between its runs (clearing 38 MB of cache per prompt would be timed).
        let cached = tokens.len() - new;
        let pos = u32::try_from(cached).map_err(|_| error("position beyond u32"))?;
        self.context
            .kv_cache_seq_rm(0, Some(pos), None)
            .map_err(|e| error(format!("could not trim llama.cpp's cache: {e}")))?;
        self.batch.clear();
        for (i, &token) in tokens[cached..].iter().enumerate() {
            let id = i32::try_from(token).map_err(|_| error("token id beyond i32"))?;
            let pos = i32::try_from(cached + i).map_err(|_| error("position beyond i32"))?;
            // Logits for the last position only, as every backend computes.
            self.batch
                .add(LlamaToken::new(id), pos, &[0], i + 1 == new)
                .map_err(|e| error(format!("batch: {e}")))?;
        }
        self.context
            .decode(&mut self.batch)
            .map_err(|e| error(format!("llama_decode failed: {e}")))?;
        // The logits stay in llama.cpp's buffer; `logits` reads them there (no copy per token).
        self.profiler.stop(Op::Whole, start);
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        // -1: the last output of the last `llama_decode`, the only one it computed (`forward`
        // asks for the last position's logits only). `Sequenced` reads them only after a
        // successful forward.
        self.context.get_logits_ith(-1)
    }

    fn profiler(&mut self) -> &mut Profiler {
        &mut self.profiler
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widest_instruction_set_is_read_from_the_system_info() {
        let info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 1 | ";
        assert_eq!(ggml_isa(info), "avx512");
        assert_eq!(ggml_isa("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 |"), "avx2");
        assert_eq!(ggml_isa("CPU : NEON = 1 | ARM_FMA = 1 |"), "neon");
        assert_eq!(ggml_isa("CPU : SSE3 = 1 |"), "baseline");
        // This build's own: what the backend will run.
        assert_ne!(ggml_isa(&system_info()), "");
    }
}
