//! `candle`: GPT-2 written with candle-core `Tensor` operations, with a KV cache.
//!
//! This is the backend a Rust user would reach for first: a tensor library does the loops, we
//! only say which tensor operations make up GPT-2. It uses candle-core alone (no
//! candle-transformers model code), so every step of the math is visible here, in the same order
//! as `naive`.
//!
//! What it costs and how it is shaped:
//!
//! - **Weights are copied.** A candle CPU tensor owns its buffer (a `Vec`), so it cannot borrow
//!   the memory-mapped file the other backends read in place. Every tensor is copied once, at
//!   start-up, into candle's memory (on the GPU with `--device cuda`): one more copy of the whole
//!   model, [`EngineInfo::weights_copied_bytes`] (~498 MB for GPT-2 small in f32). The output
//!   layer is not copied twice when it is tied to the token embeddings.
//! - **KV cache preallocated.** Each layer has a key and a value tensor of shape
//!   (n_head, n_ctx, head_dim), zeroed once; new positions are written in place with
//!   `slice_set` (`Tensor::cat` would copy the whole cache every step), and attention reads the
//!   first `pos` positions through `narrow` (a view, no copy). With `--kv-cache f16` the cache
//!   is f16 (`gpt2_weights::dtype`'s rule), widened to f32 for the products each step.
//! - **Prefill in one pass, then one position per step**, like `simd-kv`; logits are computed
//!   for the last position only.
//! - **Threads.** candle's CPU matrix products (the `gemm` crate) split work over rayon threads;
//!   the count comes from `RAYON_NUM_THREADS` (else the number of physical cores), read on every
//!   product. We run every operation inside a rayon pool of `--threads` threads, so the threads
//!   actually used are the smaller of the two numbers, which is what [`EngineInfo::threads`]
//!   reports. The harness sets `RAYON_NUM_THREADS` from `--threads`. Elementwise operations and
//!   reductions in candle run on one thread.
//! - **Devices.** `cpu` always; `cuda[:N]` when built with the `cuda` cargo feature and a GPU is
//!   present. Both are errors with advice, never panics, when unavailable.

use crate::Model;
use candle_core::{D, DType, Device, Tensor};
use gpt2_weights::Config;
use rayon::prelude::*;

use crate::dequant::{F32Matrices, RoundsInput};
use crate::engine::{DeviceChoice, EngineError, EngineInfo, Forward};
use crate::memory::{Budget, check_forward};
use crate::profile::{Op, Profiler};

/// Whether this build can use CUDA at all.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

fn backend_error(message: impl std::fmt::Display) -> EngineError {
    EngineError::Backend {
        backend: "candle",
        message: message.to_string(),
    }
}

/// Opens the candle device, with advice when it is not available.
fn open_device(choice: DeviceChoice) -> Result<Device, EngineError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(_) if !CUDA_COMPILED => Err(backend_error(
            "--device cuda needs a build with CUDA support: rebuild with \
             `cargo build --release -p gpt2-harness --features cuda` (needs the CUDA toolkit), \
             or use --device cpu",
        )),
        DeviceChoice::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|e| {
            backend_error(format!(
                "cannot open CUDA device {ordinal} ({e}); check `nvidia-smi`, or use --device cpu"
            ))
        }),
    }
}

/// One block's weights as candle tensors. C = n_embd, H = MLP width.
struct LayerTensors {
    ln_1_w: Tensor,      // (C)
    ln_1_b: Tensor,      // (C)
    qkv_w: Tensor,       // (C, 3C)
    qkv_b: Tensor,       // (3C)
    attn_proj_w: Tensor, // (C, C)
    attn_proj_b: Tensor, // (C)
    ln_2_w: Tensor,      // (C)
    ln_2_b: Tensor,      // (C)
    fc_w: Tensor,        // (C, H)
    fc_b: Tensor,        // (H)
    fc_proj_w: Tensor,   // (H, C)
    fc_proj_b: Tensor,   // (C)
    /// Which products round their input to q8_0 (`gpt2_weights::dtype`'s rule).
    rounds_input: RoundsInput,
    k_cache: Tensor, // (n_head, n_ctx, D) keys of every position so far
    v_cache: Tensor, // (n_head, n_ctx, D) values of every position so far
}

/// The `candle` backend.
pub struct CandleEngine {
    config: Config,
    device: Device,
    device_choice: DeviceChoice,
    pool: rayon::ThreadPool,
    wte: Tensor,     // (V, C)
    wpe: Tensor,     // (n_ctx, C)
    lm_head: Tensor, // (V, C), the same tensor as wte when tied
    /// The output layer's matrix is q8_0: its input is rounded to q8_0 first.
    logits_round_input: bool,
    ln_f_w: Tensor, // (C)
    ln_f_b: Tensor, // (C)
    layers: Vec<LayerTensors>,
    copied_bytes: u64,
    dtype: String,
    kv_bytes: u64,
    pos: usize,
    logits: Vec<f32>, // (V) last position's logits, copied back from the device
    profiler: Profiler,
}

impl CandleEngine {
    /// Copies the weights into candle tensors on `device` and allocates the KV cache.
    pub fn new(
        w: &Model<'_>,
        threads: usize,
        device_choice: DeviceChoice,
    ) -> Result<Self, EngineError> {
        let device = open_device(device_choice)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("gpt2-candle-{i}"))
            .build()
            .map_err(|e| backend_error(format!("cannot start {threads} threads: {e}")))?;
        let cfg = w.config;
        let (c, h) = (cfg.n_embd as usize, cfg.mlp_hidden as usize);
        let (n_head, n_ctx) = (cfg.n_head as usize, cfg.n_ctx as usize);
        // The keys and values as `gpt2_weights::dtype`'s cache rule stores them: f32, or f16
        // with `--kv-cache f16` (candle rounds f32 to f16 to nearest, ties to even, as the rule).
        let kv_dtype = match w.kv_cache {
            gpt2_weights::KvDtype::F32 => DType::F32,
            gpt2_weights::KvDtype::F16 => DType::F16,
        };
        let kv_size = kv_dtype.size_in_bytes() as u64;
        if device_choice == DeviceChoice::Cpu {
            // Everything lives in this machine's memory: the copied weights and the KV cache.
            let params = usize::try_from(cfg.parameter_count()).unwrap_or(usize::MAX);
            let mut budget = Budget::new("candle");
            let kv_dims = [w.layers.len(), n_ctx, c];
            budget
                .f32s("weights copied into candle", &[params])
                .values("key cache (n_layer, n_ctx, C)", &kv_dims, kv_size)
                .values("value cache (n_layer, n_ctx, C)", &kv_dims, kv_size);
            budget.check()?;
        }
        // Reduced-precision matrices become f32 first (candle's own f16 and quantized matrix
        // products sum in other orders and precisions, which would break token-exactness).
        let m = F32Matrices::new(w, "candle")?;
        let mut copied_bytes = 0u64;
        let mut load = |data: &[f32], shape: &[usize]| -> Result<Tensor, EngineError> {
            copied_bytes += std::mem::size_of_val(data) as u64;
            Tensor::from_slice(data, shape, &device).map_err(|e| {
                backend_error(format!("cannot copy a {shape:?} weight into candle: {e}"))
            })
        };
        let wte = load(&m.wte, &[cfg.vocab_size as usize, c])?;
        let wpe = load(w.wpe, &[n_ctx, c])?;
        let lm_head = match &m.lm_head {
            None => wte.clone(),
            Some(lm_head) => load(lm_head, &[cfg.vocab_size as usize, c])?,
        };
        let ln_f_w = load(w.ln_f_w, &[c])?;
        let ln_f_b = load(w.ln_f_b, &[c])?;
        let mut layers = Vec::with_capacity(w.layers.len());
        for (l, ml) in w.layers.iter().zip(&m.layers) {
            layers.push(LayerTensors {
                ln_1_w: load(l.ln_1_w, &[c])?,
                ln_1_b: load(l.ln_1_b, &[c])?,
                qkv_w: load(&ml.qkv_w, &[c, 3 * c])?,
                qkv_b: load(l.qkv_b, &[3 * c])?,
                attn_proj_w: load(&ml.attn_proj_w, &[c, c])?,
                attn_proj_b: load(l.attn_proj_b, &[c])?,
                ln_2_w: load(l.ln_2_w, &[c])?,
                ln_2_b: load(l.ln_2_b, &[c])?,
                fc_w: load(&ml.fc_w, &[c, h])?,
                fc_b: load(l.fc_b, &[h])?,
                fc_proj_w: load(&ml.fc_proj_w, &[h, c])?,
                fc_proj_b: load(l.fc_proj_b, &[c])?,
                rounds_input: ml.rounds_input,
                k_cache: Tensor::zeros((n_head, n_ctx, c / n_head), kv_dtype, &device)
                    .map_err(backend_error)?,
                v_cache: Tensor::zeros((n_head, n_ctx, c / n_head), kv_dtype, &device)
                    .map_err(backend_error)?,
            });
        }
        let kv_bytes = 2 * (layers.len() * n_ctx * c) as u64 * kv_size;
        Ok(CandleEngine {
            config: cfg,
            device,
            device_choice,
            pool,
            wte,
            wpe,
            lm_head,
            logits_round_input: m.logits_round_input,
            ln_f_w,
            ln_f_b,
            layers,
            copied_bytes,
            dtype: w.dtype_label(),
            kv_bytes,
            pos: 0,
            logits: vec![0.0; cfg.vocab_size as usize],
            profiler: Profiler::default(),
        })
    }

    /// Threads candle's matrix products actually use: its own setting, capped by our pool.
    fn threads(&self) -> usize {
        match self.device_choice {
            DeviceChoice::Cpu => {
                candle_core::utils::get_num_threads().min(self.pool.current_num_threads())
            }
            DeviceChoice::Cuda(_) => 1,
        }
    }

    /// Appends `tokens` at the next positions and stores the last one's logits in `self.logits`.
    fn append(&mut self, tokens: &[u32]) -> Result<(), EngineError> {
        let mut profiler = std::mem::take(&mut self.profiler);
        let result = self.pool.install(|| forward(self, &mut profiler, tokens));
        self.profiler = profiler;
        let logits = result.map_err(backend_error)?;
        self.logits.copy_from_slice(&logits);
        self.pos += tokens.len();
        Ok(())
    }
}

/// Layer norm over the last dimension: `(x - mean) / sqrt(var + eps) * w + b`. x: (T, C).
fn layernorm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?; // (T, 1)
    let centered = x.broadcast_sub(&mean)?; // (T, C)
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?; // (T, 1)
    let normed = centered.broadcast_div(&(var + f64::from(eps))?.sqrt()?)?;
    normed.broadcast_mul(w)?.broadcast_add(b)
}

/// `x @ w + b`: (T, K) x (K, N) + (N).
///
/// For one row (a decode step) candle's matrix product is a matrix-vector product that runs on
/// one thread whatever the thread setting, leaving the other cores idle while the weights stream
/// from memory. So a single row is split here by output columns, one slice per pool thread:
/// each thread multiplies by a column slice of `w` (a strided view, no copy) and the slices'
/// results are joined. T > 1 goes to one matrix-matrix product, which candle threads itself.
///
/// `round_input`: the weight came from q8_0, so `x` is rounded to q8_0 first
/// (`gpt2_weights::dtype`'s rule).
fn linear(x: &Tensor, w: &Tensor, b: &Tensor, round_input: bool) -> candle_core::Result<Tensor> {
    if round_input {
        return matmul_split(&rounded(x)?, w)?.broadcast_add(b);
    }
    matmul_split(x, w)?.broadcast_add(b)
}

/// `x` (T, K) rounded to q8_0 row by row, by the definition's own code on the host (candle has
/// no such op; the copy is T x K values per product, small beside the product itself).
fn rounded(x: &Tensor) -> candle_core::Result<Tensor> {
    let mut values = x.flatten_all()?.to_vec1::<f32>()?;
    gpt2_weights::dtype::round_input_q8_0(&mut values);
    Tensor::from_vec(values, x.shape(), x.device())
}

/// `x @ w` for x (T, K), w (K, N) (possibly a transposed view), with single rows split over
/// the current rayon pool as [`linear`] explains.
fn matmul_split(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let threads = rayon::current_num_threads();
    let n = w.dim(1)?;
    if x.dim(0)? > 1 || threads == 1 || !x.device().is_cpu() {
        return x.matmul(w);
    }
    // Column slices rounded to 16 so each starts on a cache line and a full vector.
    let slice = n.div_ceil(threads).next_multiple_of(16);
    let parts: Vec<Tensor> = (0..n.div_ceil(slice))
        .into_par_iter()
        .map(|i| x.matmul(&w.narrow(1, i * slice, slice.min(n - i * slice))?))
        .collect::<candle_core::Result<_>>()?;
    Tensor::cat(&parts, 1)
}

/// GPT-2's GELU, the tanh form: `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`,
/// computed as the equal `x / (1 + exp(-2u))`. candle's own `gelu` is the same function, but
/// calls scalar `tanhf` per element; this form uses four cheaper elementwise passes and takes
/// about 60% of its time on a (128, 3072) prefill activation (measured; the two agree to 5e-7).
fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let minus_2u = x.sqr()?.affine(-2.0 * k * 0.044715, -2.0 * k)?.mul(x)?;
    x.div(&(minus_2u.exp()? + 1.0)?)
}

/// Softmax over the last dimension, shifted by the row maximum so `exp` cannot overflow.
fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Causal self-attention of T new positions starting at `p0`, over every cached position.
/// qkv: (T, 3C); writes the new keys and values into the layer's cache; returns (T, C).
/// `mask` is (T, len) with -inf where a new position would see a later one (None for T = 1).
fn attention_forward(
    qkv: &Tensor,
    layer: &LayerTensors,
    p0: usize,
    n_head: usize,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (t, c3) = qkv.dims2()?;
    let c = c3 / 3;
    let d = c / n_head;
    // (T, C) -> (T, n_head, D) -> (n_head, T, D); contiguous, as matmul and slice_set need.
    let heads = |i: usize| -> candle_core::Result<Tensor> {
        qkv.narrow(1, i * c, c)?
            .reshape((t, n_head, d))?
            .transpose(0, 1)?
            .contiguous()
    };
    let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
    let kv_dtype = layer.k_cache.dtype(); // f16 with `--kv-cache f16`
    layer.k_cache.slice_set(&k.to_dtype(kv_dtype)?, 1, p0)?;
    layer.v_cache.slice_set(&v.to_dtype(kv_dtype)?, 1, p0)?;
    let len = p0 + t;
    // (n_head, len, D) each: a view of the f32 cache, or the f16 one widened (exactly) to f32.
    let keys = layer.k_cache.narrow(1, 0, len)?.to_dtype(DType::F32)?;
    let values = layer.v_cache.narrow(1, 0, len)?.to_dtype(DType::F32)?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&keys.t()?)? * scale)?; // (n_head, T, len)
    let scores = match mask {
        Some(mask) => scores.broadcast_add(mask)?,
        None => scores, // one new position sees every cached one
    };
    let probs = softmax_last_dim(&scores)?;
    probs
        .matmul(&values.contiguous()?)? // (n_head, T, D)
        .transpose(0, 1)? // (T, n_head, D)
        .reshape((t, c)) // reshape copies the transposed layout into (T, C)
}

fn forward(e: &CandleEngine, p: &mut Profiler, tokens: &[u32]) -> candle_core::Result<Vec<f32>> {
    let cfg = &e.config;
    let (t, p0) = (tokens.len(), e.pos);
    let eps = cfg.layer_norm_eps;
    // A GPU runs operations asynchronously: when profiling, wait for each one so its time is
    // its own. (On the CPU every operation has finished when it returns.)
    let wait_for_gpu = p.enabled() && !e.device.is_cpu();
    let ids = Tensor::new(tokens, &e.device)?;
    // New position i (absolute p0 + i) may not see positions after itself; built once per call.
    let mask = if t > 1 {
        let len = p0 + t;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..len).map(move |j| if j > p0 + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Some(Tensor::from_vec(mask, (t, len), &e.device)?)
    } else {
        None
    };
    let mut clock = p.clock();
    let mut mark = |op: Op| -> candle_core::Result<()> {
        if wait_for_gpu {
            e.device.synchronize()?;
        }
        clock.mark(op);
        Ok(())
    };
    let n_head = cfg.n_head as usize;
    // x = wte[tokens] + wpe[p0 .. p0 + T]
    let mut x = e.wte.embedding(&ids)?.add(&e.wpe.narrow(0, p0, t)?)?; // (T, C)
    mark(Op::Embedding)?;
    for layer in &e.layers {
        let ln = layernorm(&x, &layer.ln_1_w, &layer.ln_1_b, eps)?; // (T, C)
        mark(Op::LayerNorm)?;
        let r = layer.rounds_input;
        let qkv = linear(&ln, &layer.qkv_w, &layer.qkv_b, r.qkv)?; // (T, 3C)
        mark(Op::QkvProjection)?;
        let att = attention_forward(&qkv, layer, p0, n_head, mask.as_ref())?; // (T, C)
        mark(Op::Attention)?;
        let proj = linear(&att, &layer.attn_proj_w, &layer.attn_proj_b, r.attn_proj)?; // (T, C)
        mark(Op::OutputProjection)?;
        x = (x + proj)?;
        mark(Op::Residual)?;
        let ln = layernorm(&x, &layer.ln_2_w, &layer.ln_2_b, eps)?; // (T, C)
        mark(Op::LayerNorm)?;
        let fc = linear(&ln, &layer.fc_w, &layer.fc_b, r.fc)?; // (T, H)
        mark(Op::MlpUp)?;
        let fc = gelu(&fc)?;
        mark(Op::Gelu)?;
        let proj = linear(&fc, &layer.fc_proj_w, &layer.fc_proj_b, r.fc_proj)?; // (T, C)
        mark(Op::MlpDown)?;
        x = (x + proj)?;
        mark(Op::Residual)?;
    }
    let last = x.narrow(0, t - 1, 1)?; // (1, C): logits for the last position only
    let ln_f = layernorm(&last, &e.ln_f_w, &e.ln_f_b, eps)?;
    mark(Op::LayerNorm)?;
    let ln_f = if e.logits_round_input {
        rounded(&ln_f)?
    } else {
        ln_f
    };
    let logits = matmul_split(&ln_f, &e.lm_head.t()?)?
        .squeeze(0)?
        .to_vec1::<f32>()?; // (V)
    mark(Op::OutputLayer)?;
    p.add_clock(clock);
    Ok(logits)
}

impl Forward for CandleEngine {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: true,
            threads: self.threads(),
            dtype: self.dtype.clone(),
            kv_cache_bytes: self.kv_bytes,
            weights_copied_bytes: self.copied_bytes,
            scratch_bytes: None,
            device: self.device_choice.to_string(),
            summary: match self.device_choice {
                DeviceChoice::Cpu => "candle-core tensors on the CPU (gemm crate), KV cache",
                DeviceChoice::Cuda(_) => "candle-core tensors on a CUDA GPU (cuBLAS), KV cache",
            },
            isa: match self.device_choice {
                DeviceChoice::Cpu => "gemm",
                DeviceChoice::Cuda(_) => "cuda",
            },
        }
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn forward(&mut self, tokens: &[u32], new: usize) -> Result<(), EngineError> {
        // The cache holds the positions before the new ones (none when a sequence starts).
        self.pos = tokens.len() - new;
        if self.device_choice == DeviceChoice::Cpu && new > 1 {
            // Every head's scores at once, and their softmax (a decode step's are one row).
            let heads = self.config.n_head as usize;
            check_forward("candle", &self.config, new, &[2, heads, new, tokens.len()])?;
        }
        self.append(&tokens[self.pos..])
    }

    fn logits(&self) -> &[f32] {
        &self.logits
    }

    fn profiler(&mut self) -> &mut Profiler {
        &mut self.profiler
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn cuda_without_the_feature_is_an_error_with_advice() {
        if CUDA_COMPILED {
            return;
        }
        let err = open_device(DeviceChoice::Cuda(0)).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn softmax_rows_sum_to_one_and_ignore_masked_entries() {
        let x = Tensor::new(
            &[[1.0f32, 2.0, f32::NEG_INFINITY], [1000.0, 1000.0, 1000.0]],
            &Device::Cpu,
        )
        .unwrap();
        let p = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(p[0][2], 0.0);
        assert!((p[0][0] + p[0][1] - 1.0).abs() < 1e-6);
        assert!(p[1].iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }
}
