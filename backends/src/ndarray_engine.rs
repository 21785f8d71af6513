//! `ndarray`: the same GPT-2 as `naive`, written with ndarray's arrays, broadcasting and `dot`.
//!
//! What changes from `naive`: every matrix product is one `dot` call, which ndarray hands to the
//! matrixmultiply crate (packed, cache-blocked GEMM kernels, threaded; `MATMUL_NUM_THREADS`
//! sets the thread count, which the harness sets from `--threads`). Attention is written per head
//! as two matrix products, `softmax(Q K^T / sqrt(D)) V`, instead of loops over positions.
//! Weights are zero-copy `ArrayView`s of the mapped file in an f32 file; in f16, bf16 or q8_0
//! the matrices are converted to f32 once at load ([`crate::dequant`], reported as copied bytes),
//! since matrixmultiply multiplies f32 only. With `--kv-cache f16` the keys and values are
//! rounded to f16 as the cache rule says (`gpt2_weights::dtype`).
//!
//! Like `naive` it has no KV cache: every step recomputes all T positions. matrixmultiply shines
//! on the (T, C) x (C, N) products of a long context and does poorly on a single row (it packs
//! the whole weight matrix on every call), so its advantage over `naive` grows with T.

use std::borrow::Cow;

use crate::Model;
use gpt2_weights::dtype::{f16_to_f32, f32_to_f16};
use gpt2_weights::{Config, KvDtype, LayerWeights};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, CowArray, Ix2, s};

use crate::dequant::{F32Layer, F32Matrices, RoundsInput};

use crate::engine::{EngineError, EngineInfo, Forward};
use crate::memory::check_forward;
use crate::profile::{Op, Profiler};

/// matrixmultiply uses at most this many threads, whatever `MATMUL_NUM_THREADS` says.
pub const MAX_MATMUL_THREADS: usize = 4;

/// One block's weights as array views. C = n_embd, H = MLP width.
struct LayerViews<'w> {
    ln_1_w: ArrayView1<'w, f32>,         // (C)
    ln_1_b: ArrayView1<'w, f32>,         // (C)
    qkv_w: CowArray<'w, f32, Ix2>,       // (C, 3C)
    qkv_b: ArrayView1<'w, f32>,          // (3C)
    attn_proj_w: CowArray<'w, f32, Ix2>, // (C, C)
    attn_proj_b: ArrayView1<'w, f32>,    // (C)
    ln_2_w: ArrayView1<'w, f32>,         // (C)
    ln_2_b: ArrayView1<'w, f32>,         // (C)
    fc_w: CowArray<'w, f32, Ix2>,        // (C, H)
    fc_b: ArrayView1<'w, f32>,           // (H)
    fc_proj_w: CowArray<'w, f32, Ix2>,   // (H, C)
    fc_proj_b: ArrayView1<'w, f32>,      // (C)
    /// Which products round their input to q8_0 (`gpt2_weights::dtype`'s rule).
    rounds_input: RoundsInput,
}

fn view2<'w>(data: &'w [f32], rows: usize, cols: usize) -> ArrayView2<'w, f32> {
    // Shapes were validated against the config when the file was opened.
    ArrayView2::from_shape((rows, cols), data).expect("tensor shape validated on open")
}

/// A (rows, cols) array of `data`: a view of the mapping, or the converted copy.
fn cow2<'w>(data: Cow<'w, [f32]>, rows: usize, cols: usize) -> CowArray<'w, f32, Ix2> {
    match data {
        Cow::Borrowed(d) => view2(d, rows, cols).into(),
        Cow::Owned(v) => Array2::from_shape_vec((rows, cols), v)
            .expect("tensor shape validated on open")
            .into(),
    }
}

impl<'w> LayerViews<'w> {
    fn new(l: &LayerWeights<'w>, m: F32Layer<'w>, c: usize, h: usize) -> Self {
        LayerViews {
            ln_1_w: ArrayView1::from(l.ln_1_w),
            ln_1_b: ArrayView1::from(l.ln_1_b),
            qkv_w: cow2(m.qkv_w, c, 3 * c),
            qkv_b: ArrayView1::from(l.qkv_b),
            attn_proj_w: cow2(m.attn_proj_w, c, c),
            attn_proj_b: ArrayView1::from(l.attn_proj_b),
            ln_2_w: ArrayView1::from(l.ln_2_w),
            ln_2_b: ArrayView1::from(l.ln_2_b),
            fc_w: cow2(m.fc_w, c, h),
            fc_b: ArrayView1::from(l.fc_b),
            fc_proj_w: cow2(m.fc_proj_w, h, c),
            fc_proj_b: ArrayView1::from(l.fc_proj_b),
            rounds_input: m.rounds_input,
        }
    }
}

/// Layer norm of every row: `(x - mean) / sqrt(var + eps) * w + b`, broadcasting (T, 1) and (C).
fn layernorm(x: ArrayView2<f32>, w: ArrayView1<f32>, b: ArrayView1<f32>, eps: f32) -> Array2<f32> {
    let mean = x.mean_axis(Axis(1)).expect("C > 0").insert_axis(Axis(1)); // (T, 1)
    let centered = &x - &mean; // (T, C)
    let var = centered
        .mapv(|v| v * v)
        .mean_axis(Axis(1))
        .expect("C > 0")
        .insert_axis(Axis(1)); // (T, 1)
    let normed = centered / var.mapv(|v| (v + eps).sqrt());
    normed * w + b
}

/// `x @ w + b`: (T, K) x (K, N) + (N), one matrixmultiply GEMM. `round_input`: the weight
/// came from q8_0, so `x` is rounded to q8_0 first (`gpt2_weights::dtype`'s rule).
fn linear(
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    b: ArrayView1<f32>,
    round_input: bool,
) -> Array2<f32> {
    if round_input {
        return rounded(x).dot(&w) + b;
    }
    x.dot(&w) + b
}

/// `x` rounded to q8_0 row by row (each row is whole blocks: a q8_0 matrix's rows are).
fn rounded<D: ndarray::Dimension>(x: ndarray::ArrayView<f32, D>) -> ndarray::Array<f32, D> {
    let mut x = x.as_standard_layout().into_owned();
    let values = x.as_slice_mut().expect("standard layout is contiguous");
    gpt2_weights::dtype::round_input_q8_0(values);
    x
}

/// Causal self-attention from the fused (T, 3C) projection; returns (T, C).
fn attention(qkv: ArrayView2<f32>, c: usize, n_head: usize) -> Array2<f32> {
    let t_len = qkv.nrows();
    let d = c / n_head;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = Array2::<f32>::zeros((t_len, c));
    for h in 0..n_head {
        let q = qkv.slice(s![.., h * d..(h + 1) * d]); // (T, D)
        let k = qkv.slice(s![.., c + h * d..c + (h + 1) * d]); // (T, D)
        let v = qkv.slice(s![.., 2 * c + h * d..2 * c + (h + 1) * d]); // (T, D)
        let mut scores = q.dot(&k.t()) * scale; // (T, T)
        for (t, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
            // Causal mask: position t sees positions 0..=t. Then a row-wise softmax.
            row.slice_mut(s![t + 1..]).fill(f32::NEG_INFINITY);
            let max = row.fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            row.mapv_inplace(|x| (x - max).exp());
            let sum = row.sum();
            row /= sum;
        }
        out.slice_mut(s![.., h * d..(h + 1) * d])
            .assign(&scores.dot(&v)); // (T, D)
    }
    out
}

/// GPT-2's tanh GELU, element-wise in place.
fn gelu(x: &mut Array2<f32>) {
    let s = (2.0f32 / std::f32::consts::PI).sqrt();
    x.mapv_inplace(|u| 0.5 * u * (1.0 + (s * (u + 0.044715 * u * u * u)).tanh()));
}

/// The ndarray backend: see the module docs.
pub struct NdarrayEngine<'w> {
    config: Config,
    wte: CowArray<'w, f32, Ix2>, // (V, C)
    wpe: ArrayView2<'w, f32>,    // (n_ctx, C)
    /// (V, C); `None` when tied to `wte`.
    lm_head: Option<CowArray<'w, f32, Ix2>>,
    /// The output layer's matrix is q8_0: its input is rounded to q8_0 first.
    logits_round_input: bool,
    dtype: String,
    /// f16 with `--kv-cache f16`: keys and values are rounded to f16 (`gpt2_weights::dtype`).
    kv_cache: KvDtype,
    converted_bytes: u64,
    ln_f_w: ArrayView1<'w, f32>,
    ln_f_b: ArrayView1<'w, f32>,
    layers: Vec<LayerViews<'w>>,
    threads: usize,
    logits: Array1<f32>, // (V)
    profiler: Profiler,
}

impl<'w> NdarrayEngine<'w> {
    /// `threads` is what matrixmultiply was configured with (`MATMUL_NUM_THREADS`), for reports.
    pub fn new(model: impl Into<Model<'w>>, threads: usize) -> Result<Self, EngineError> {
        let model = model.into();
        let w = &model.weights;
        let cfg = w.config;
        let (c, v, h) = (
            cfg.n_embd as usize,
            cfg.vocab_size as usize,
            cfg.mlp_hidden as usize,
        );
        let m = F32Matrices::new(w, "ndarray")?;
        Ok(NdarrayEngine {
            config: cfg,
            wte: cow2(m.wte, v, c),
            wpe: view2(w.wpe, cfg.n_ctx as usize, c),
            lm_head: m.lm_head.map(|lm| cow2(lm, v, c)),
            logits_round_input: m.logits_round_input,
            dtype: w.dtype_label(),
            kv_cache: model.kv_cache,
            converted_bytes: m.converted_bytes,
            ln_f_w: ArrayView1::from(w.ln_f_w),
            ln_f_b: ArrayView1::from(w.ln_f_b),
            layers: w
                .layers
                .iter()
                .zip(m.layers)
                .map(|(l, m)| LayerViews::new(l, m, c, h))
                .collect(),
            threads,
            logits: Array1::zeros(v),
            profiler: Profiler::default(),
        })
    }

    /// Recomputes every position of `tokens`; the logits of the last one land in `logits`.
    fn forward_all(&mut self, tokens: &[u32]) {
        let cfg = &self.config;
        let (c, t_len) = (cfg.n_embd as usize, tokens.len());
        let eps = cfg.layer_norm_eps;
        let mut clock = self.profiler.clock();
        // x (T, C) = wte[tokens] + wpe[0..T]
        let ids: Vec<usize> = tokens.iter().map(|&t| t as usize).collect();
        let mut x = self.wte.select(Axis(0), &ids);
        x += &self.wpe.slice(s![..t_len, ..]);
        clock.mark(Op::Embedding);
        for l in &self.layers {
            let ln1 = layernorm(x.view(), l.ln_1_w, l.ln_1_b, eps); // (T, C)
            clock.mark(Op::LayerNorm);
            let r = l.rounds_input;
            let mut qkv = linear(ln1.view(), l.qkv_w.view(), l.qkv_b, r.qkv); // (T, 3C)
            if self.kv_cache == KvDtype::F16 {
                // Keys and values as an f16 cache holds them.
                qkv.slice_mut(s![.., c..])
                    .mapv_inplace(|v| f16_to_f32(f32_to_f16(v)));
            }
            clock.mark(Op::QkvProjection);
            let att = attention(qkv.view(), c, cfg.n_head as usize); // (T, C)
            clock.mark(Op::Attention);
            let proj = linear(att.view(), l.attn_proj_w.view(), l.attn_proj_b, r.attn_proj); // (T, C)
            clock.mark(Op::OutputProjection);
            x += &proj;
            clock.mark(Op::Residual);
            let ln2 = layernorm(x.view(), l.ln_2_w, l.ln_2_b, eps); // (T, C)
            clock.mark(Op::LayerNorm);
            let mut fc = linear(ln2.view(), l.fc_w.view(), l.fc_b, r.fc); // (T, H)
            clock.mark(Op::MlpUp);
            gelu(&mut fc);
            clock.mark(Op::Gelu);
            let proj = linear(fc.view(), l.fc_proj_w.view(), l.fc_proj_b, r.fc_proj); // (T, C)
            clock.mark(Op::MlpDown);
            x += &proj;
            clock.mark(Op::Residual);
        }
        // Only the last position's logits are needed: (V, C) . (C) -> (V).
        let last = x.slice(s![t_len - 1..t_len, ..]);
        let ln_f = layernorm(last, self.ln_f_w, self.ln_f_b, eps); // (1, C)
        clock.mark(Op::LayerNorm);
        let lm_head = self.lm_head.as_ref().unwrap_or(&self.wte);
        self.logits = if self.logits_round_input {
            lm_head.dot(&rounded(ln_f.row(0)))
        } else {
            lm_head.dot(&ln_f.row(0))
        };
        clock.mark(Op::OutputLayer);
        self.profiler.add_clock(clock);
    }
}

impl Forward for NdarrayEngine<'_> {
    fn name(&self) -> &'static str {
        "ndarray"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: false,
            threads: self.threads,
            dtype: self.dtype.clone(),
            kv_cache_bytes: 0,
            weights_copied_bytes: self.converted_bytes,
            scratch_bytes: None,
            device: "cpu".to_string(),
            summary: "ndarray + matrixmultiply GEMM, recomputes the whole context every step",
            isa: "matrixmultiply",
        }
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn forward(&mut self, tokens: &[u32], _new: usize) -> Result<(), EngineError> {
        // No cache: every call recomputes the whole sequence. One head's scores at a time, and
        // their softmax.
        let t = tokens.len();
        check_forward("ndarray", &self.config, t, &[2, t, t])?;
        self.forward_all(tokens);
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        self.logits.as_slice().expect("standard layout")
    }

    fn profiler(&mut self) -> &mut Profiler {
        &mut self.profiler
    }
}
