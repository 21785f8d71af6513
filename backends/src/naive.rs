//! `naive`: GPT-2 in plain Rust loops. The reference every other backend is checked against, and
//! the file to read first if you want to know what GPT-2 computes.
//!
//! One function per operation, in the order the forward pass calls them:
//! [`embedding_forward`], [`layernorm_forward`], [`matmul_forward`] (used for the QKV projection,
//! the attention output projection and both MLP layers), [`kv_store_forward`],
//! [`attention_forward`],
//! [`gelu_forward`], [`residual_forward`], and [`logits_forward`] for the output layer.
//! Shapes are written `(T, C)`: T positions, C = n_embd channels, NH heads of size
//! D = C / NH, H = MLP width (4C), V = vocabulary size. All buffers are row-major.
//!
//! Weights may be f32, f16, bf16 or q8_0 (`gpt2_weights::dtype` defines what each stored value
//! is): the loops read each weight as its f32 value, through `Values::get` for single values and
//! `Values::dequantize_into` for a row, and compute in f32 as they do for an f32 file. A product
//! with a q8_0 matrix first rounds its input to q8_0 (`gpt2_weights::dtype::product_input`,
//! llama.cpp's rule, which lets the SIMD kernels sum in integers); here that is one call before
//! the loops, and the loops stay the f32 loops. With `--kv-cache f16` the keys and values are
//! rounded to f16 ([`kv_store_forward`]), the f16 KV cache rule of the same module.
//!
//! There is no KV cache: every step recomputes all T positions (the whole sequence that
//! `engine::Sequenced` hands it),
//! which is what `simd-kv` exists to avoid. It is still not needlessly slow: the matmul loops run
//! in the order that reads the weights row by row (which the compiler vectorises), and the output
//! layer, the largest matrix in the model, is applied to the last position only.

use crate::Model;
use gpt2_weights::dtype::{product_input, round_to_f16};
use gpt2_weights::{Config, KvDtype, LayerWeights, Linear, Matrix};

use crate::engine::{EngineError, EngineInfo, Forward};
use crate::memory::check_forward;
use crate::profile::{Op, PhaseClock, Profiler};

/// Token embedding plus learned position embedding (GPT-2 has no rotary embeddings).
///
/// `out (T, C)`, `tokens (T)`, `wte (V, C)` in any dtype, `wpe (n_ctx, C)`:
/// `out[t] = wte[tokens[t]] + wpe[t]`.
pub fn embedding_forward(out: &mut [f32], tokens: &[u32], wte: Matrix<'_>, wpe: &[f32], c: usize) {
    for (t, &token) in tokens.iter().enumerate() {
        let pos_row = &wpe[t * c..(t + 1) * c];
        let out_row = &mut out[t * c..(t + 1) * c];
        for i in 0..c {
            out_row[i] = wte.get(token as usize, i) + pos_row[i];
        }
    }
}

/// Layer normalisation of each position (row) over its C channels.
///
/// `out (T, C)`, `inp (T, C)`, `weight (C)`, `bias (C)`:
/// `out = (x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance (divide by C).
/// Both the mean and the bias matter: this is LayerNorm, not RMSNorm.
pub fn layernorm_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    c: usize,
    eps: f32,
) {
    for (x, y) in inp.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        let mean = x.iter().sum::<f32>() / c as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            y[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
        }
    }
}

/// Matrix product plus bias, the triple loop: `out = inp @ weight + bias`.
///
/// `out (T, N)`, `inp (T, K)`, `weight` K inputs to N outputs, `bias (N)`. The weight is stored
/// `[in, out]` in f32 and `[out, in]` in the other dtypes (see `gpt2_weights::Role`), and the
/// loops follow the layout, so that the innermost loop always walks memory contiguously:
///
/// - `(K, N)` f32: t, then k, then n. The innermost loop walks one row of the weight and one row
///   of the output, so the compiler turns it into SIMD code. The textbook order (t, n, k: a dot
///   product per output) would stride through the weight by N floats per step and run 20-40x
///   slower.
/// - `(N, K)` in any dtype: n, then t, then k. Row n of the weight is output n's dot product; it
///   is converted to f32 once (`dequantize_into`) and dotted with every position's input.
pub fn matmul_forward(out: &mut [f32], inp: &[f32], weight: Linear<'_>, bias: &[f32]) {
    let (k, n) = (weight.in_features(), weight.out_features());
    let t_len = inp.len() / k;
    match weight {
        Linear::InOut(w) => {
            let gpt2_weights::Values::F32(weight) = w.values() else {
                unreachable!("an [in, out] weight is f32 (gpt2_weights::Role)")
            };
            for t in 0..t_len {
                let out_row = &mut out[t * n..(t + 1) * n];
                out_row.copy_from_slice(bias);
                for kk in 0..k {
                    let a = inp[t * k + kk];
                    let w_row = &weight[kk * n..(kk + 1) * n];
                    for j in 0..n {
                        out_row[j] += a * w_row[j];
                    }
                }
            }
        }
        Linear::OutIn(w) => {
            let inp = product_input(inp, w.dtype());
            let mut w_row = vec![0.0f32; k];
            for j in 0..n {
                w.row(j).dequantize_into(&mut w_row);
                for t in 0..t_len {
                    let in_row = &inp[t * k..(t + 1) * k];
                    out[t * n + j] = bias[j] + dot(in_row, &w_row);
                }
            }
        }
    }
}

/// Causal multi-head self-attention.
///
/// `out (T, C)`, `qkv (T, 3C)`: each row holds Q (channels 0..C), then K (C..2C), then V (2C..3C),
/// three contiguous blocks, with head h owning channels h*D..(h+1)*D inside each block.
/// `scores (T)` is scratch. For each head and position t:
/// `score[s] = q_t . k_s / sqrt(D)` for s <= t (positions after t are masked out),
/// `p = softmax(score)`, `out_t = sum_s p[s] * v_s`.
pub fn attention_forward(
    out: &mut [f32],
    qkv: &[f32],
    scores: &mut [f32],
    t_len: usize,
    c: usize,
    n_head: usize,
) {
    let d = c / n_head;
    let scale = 1.0 / (d as f32).sqrt();
    for t in 0..t_len {
        for h in 0..n_head {
            let q = &qkv[t * 3 * c + h * d..t * 3 * c + (h + 1) * d];
            // Scores against every position up to and including t, and their maximum.
            let mut max = f32::NEG_INFINITY;
            for s in 0..=t {
                let k = &qkv[s * 3 * c + c + h * d..s * 3 * c + c + (h + 1) * d];
                let mut dot = 0.0f32;
                for i in 0..d {
                    dot += q[i] * k[i];
                }
                scores[s] = dot * scale;
                max = max.max(scores[s]);
            }
            // Softmax; subtracting the maximum keeps exp() from overflowing.
            let mut sum = 0.0f32;
            for score in scores.iter_mut().take(t + 1) {
                *score = (*score - max).exp();
                sum += *score;
            }
            // Weighted sum of the values.
            let out_h = &mut out[t * c + h * d..t * c + (h + 1) * d];
            out_h.fill(0.0);
            for s in 0..=t {
                let p = scores[s] / sum;
                let v = &qkv[s * 3 * c + 2 * c + h * d..s * 3 * c + 2 * c + (h + 1) * d];
                for i in 0..d {
                    out_h[i] += p * v[i];
                }
            }
        }
    }
}

/// The keys and values as the model caches them: with `--kv-cache f16`, each position's key and
/// value (channels C..3C of `qkv (T, 3C)`) rounded in place to f16, the KV cache rule of
/// `gpt2_weights::dtype`; with f32 (the default), nothing. naive has no cache; it rounds what it
/// recomputes, so it attends over the values an f16 cache would hold.
pub fn kv_store_forward(qkv: &mut [f32], c: usize, kv: KvDtype) {
    if kv == KvDtype::F16 {
        for row in qkv.chunks_exact_mut(3 * c) {
            round_to_f16(&mut row[c..]);
        }
    }
}

/// GELU, the tanh approximation GPT-2 was trained with (Hugging Face's `gelu_new`), in place:
/// `x = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_forward(x: &mut [f32]) {
    let s = (2.0f32 / std::f32::consts::PI).sqrt();
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (s * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// The residual connection, in place: `x += delta`, both `(T, C)`.
pub fn residual_forward(x: &mut [f32], delta: &[f32]) {
    for (a, b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}

/// The output layer for one position: `logits (V) = x (C) @ lm_head^T`, with `lm_head (V, C)`
/// (in GPT-2 the token embedding itself, "tied"). One dot product per vocabulary entry; at
/// 50257 x 768 this is the largest matrix in GPT-2 small, so it is applied only to the position
/// whose next token we want.
///
/// `lm_head` may be in any dtype: each row is converted to f32 (`dequantize_into`) first, and a
/// q8_0 `lm_head` sees `x` rounded to q8_0.
pub fn logits_forward(logits: &mut [f32], x: &[f32], lm_head: Matrix<'_>, c: usize) {
    let x = product_input(x, lm_head.dtype());
    let mut row = vec![0.0f32; c];
    for (v, logit) in logits.iter_mut().enumerate() {
        lm_head.row(v).dequantize_into(&mut row);
        *logit = dot(&x, &row);
    }
}

/// `a . b`, summed in eight running sums (lane `l` takes elements `l, l + 8, ...`) and then
/// added up: the same products as a plain loop, added in an order the compiler can turn into
/// one SIMD register of sums (a plain `sum += a[i] * b[i]` must add in exactly that order, which
/// keeps it scalar and several times slower).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            sums[l] += x[l] * y[l];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// Activations of one forward pass over T positions. Vectors keep their capacity between steps.
#[derive(Debug, Default)]
struct Activations {
    x: Vec<f32>,      // (T, C) residual stream
    ln: Vec<f32>,     // (T, C) layer-norm output
    qkv: Vec<f32>,    // (T, 3C)
    att: Vec<f32>,    // (T, C) attention output, before its projection
    proj: Vec<f32>,   // (T, C) output of a projection, added to the residual
    fc: Vec<f32>,     // (T, H) MLP hidden layer
    scores: Vec<f32>, // (T) attention scores of one head and position
    ln_f: Vec<f32>,   // (C) final layer norm of the last position
    logits: Vec<f32>, // (V)
}

/// The naive backend: see the module docs.
pub struct NaiveEngine<'w> {
    w: Model<'w>,
    act: Activations,
    profiler: Profiler,
}

impl<'w> NaiveEngine<'w> {
    /// The model (weights, and the key/value cache's dtype: f32 for bare weights).
    pub fn new(model: impl Into<Model<'w>>) -> Self {
        NaiveEngine {
            w: model.into(),
            act: Activations::default(),
            profiler: Profiler::default(),
        }
    }
}

/// One transformer block: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
/// Each call is followed by its profiling mark, which does nothing unless `--profile` is on.
fn block_forward(
    a: &mut Activations,
    clock: &mut PhaseClock,
    l: &LayerWeights<'_>,
    cfg: &Config,
    t_len: usize,
    kv: KvDtype,
) {
    let (c, n_head) = (cfg.n_embd as usize, cfg.n_head as usize);
    let eps = cfg.layer_norm_eps;
    layernorm_forward(&mut a.ln, &a.x, l.ln_1_w, l.ln_1_b, c, eps);
    clock.mark(Op::LayerNorm);
    matmul_forward(&mut a.qkv, &a.ln, l.qkv_w, l.qkv_b);
    kv_store_forward(&mut a.qkv, c, kv);
    clock.mark(Op::QkvProjection);
    attention_forward(&mut a.att, &a.qkv, &mut a.scores, t_len, c, n_head);
    clock.mark(Op::Attention);
    matmul_forward(&mut a.proj, &a.att, l.attn_proj_w, l.attn_proj_b);
    clock.mark(Op::OutputProjection);
    residual_forward(&mut a.x, &a.proj);
    clock.mark(Op::Residual);
    layernorm_forward(&mut a.ln, &a.x, l.ln_2_w, l.ln_2_b, c, eps);
    clock.mark(Op::LayerNorm);
    matmul_forward(&mut a.fc, &a.ln, l.fc_w, l.fc_b);
    clock.mark(Op::MlpUp);
    gelu_forward(&mut a.fc);
    clock.mark(Op::Gelu);
    matmul_forward(&mut a.proj, &a.fc, l.fc_proj_w, l.fc_proj_b);
    clock.mark(Op::MlpDown);
    residual_forward(&mut a.x, &a.proj);
    clock.mark(Op::Residual);
}

/// The whole model on `tokens`; returns the logits of the last position.
fn gpt2_forward<'a>(
    a: &'a mut Activations,
    p: &mut Profiler,
    w: &Model<'_>,
    tokens: &[u32],
) -> &'a [f32] {
    let cfg = &w.config;
    let (t_len, c) = (tokens.len(), cfg.n_embd as usize);
    a.x.resize(t_len * c, 0.0);
    a.ln.resize(t_len * c, 0.0);
    a.qkv.resize(t_len * 3 * c, 0.0);
    a.att.resize(t_len * c, 0.0);
    a.proj.resize(t_len * c, 0.0);
    a.fc.resize(t_len * cfg.mlp_hidden as usize, 0.0);
    a.scores.resize(t_len, 0.0);
    a.ln_f.resize(c, 0.0);
    a.logits.resize(cfg.vocab_size as usize, 0.0);

    let kv = w.kv_cache;
    let mut clock = p.clock();
    embedding_forward(&mut a.x, tokens, w.wte, w.wpe, c);
    clock.mark(Op::Embedding);
    for layer in &w.layers {
        block_forward(a, &mut clock, layer, cfg, t_len, kv);
    }
    let last = &a.x[(t_len - 1) * c..];
    layernorm_forward(&mut a.ln_f, last, w.ln_f_w, w.ln_f_b, c, cfg.layer_norm_eps);
    clock.mark(Op::LayerNorm);
    logits_forward(&mut a.logits, &a.ln_f, w.lm_head, c);
    clock.mark(Op::OutputLayer);
    p.add_clock(clock);
    &a.logits
}

impl Forward for NaiveEngine<'_> {
    fn name(&self) -> &'static str {
        "naive"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: false,
            threads: 1,
            dtype: self.w.dtype_label(),
            kv_cache_bytes: 0,
            weights_copied_bytes: 0,
            scratch_bytes: None,
            device: "cpu".to_string(),
            summary: "scalar loops, one thread, recomputes the whole context every step",
            isa: "scalar",
        }
    }

    fn config(&self) -> &Config {
        &self.w.config
    }

    fn forward(&mut self, tokens: &[u32], _new: usize) -> Result<(), EngineError> {
        // No cache: every call recomputes the whole sequence.
        let t = tokens.len();
        check_forward("naive", &self.w.config, t, &[t])?;
        gpt2_forward(&mut self.act, &mut self.profiler, &self.w, tokens);
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        &self.act.logits
    }

    fn profiler(&mut self) -> &mut Profiler {
        &mut self.profiler
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_hand_computation() {
        // inp (2, 3) @ w (3, 2) + b
        let inp = [1.0, 2.0, 3.0, -1.0, 0.5, 2.0];
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let b = [0.5, -0.5];
        let mut out = [0.0; 4];
        let in_out = Matrix::new(gpt2_weights::Values::F32(&w), 3, 2);
        matmul_forward(&mut out, &inp, Linear::InOut(in_out), &b);
        assert_eq!(out, [4.5, 4.5, 1.5, 2.0]);
        // The same weight stored (out, in), in f16 (every value here is exact in f16).
        let out_in: Vec<u16> = gpt2_weights::dtype::transpose(&w, 3, 2)
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let out_in = Matrix::new(gpt2_weights::Values::F16(&out_in), 2, 3);
        let mut out = [0.0; 4];
        matmul_forward(&mut out, &inp, Linear::OutIn(out_in), &b);
        assert_eq!(out, [4.5, 4.5, 1.5, 2.0]);
    }

    #[test]
    fn layernorm_normalises() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut y = [0.0; 4];
        layernorm_forward(&mut y, &x, &[1.0; 4], &[0.0; 4], 4, 0.0);
        let mean: f32 = y.iter().sum::<f32>() / 4.0;
        let var: f32 = y.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{y:?}");
    }

    #[test]
    fn gelu_values() {
        let mut x = [0.0f32, 1.0, -1.0, 3.0];
        gelu_forward(&mut x);
        // Reference values of the tanh approximation.
        let want = [0.0, 0.841_192, -0.158_808, 2.996_363];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{x:?}");
        }
    }

    #[test]
    fn keys_and_values_are_rounded_to_f16_with_an_f16_cache_only() {
        let c = 4;
        let qkv: Vec<f32> = (0..2 * 3 * c).map(|i| 1.0 + i as f32 / 3000.0).collect(); // (2, 3C)
        let mut same = qkv.clone();
        kv_store_forward(&mut same, c, KvDtype::F32);
        assert_eq!(same, qkv);
        let mut rounded = qkv.clone();
        kv_store_forward(&mut rounded, c, KvDtype::F16);
        for (i, (&got, &was)) in rounded.iter().zip(&qkv).enumerate() {
            if i % (3 * c) < c {
                assert_eq!(got, was, "query {i} is not rounded");
            } else {
                // Near 1, f16 values are 2^-10 apart: 1/3000 steps are not all representable.
                assert_eq!(got, half::f16::from_f32(was).to_f32(), "at {i}");
            }
        }
        assert_ne!(rounded, qkv);
    }

    #[test]
    fn attention_is_causal() {
        // One head of size 2, three positions: position 0 can only attend to itself, so its
        // output is its own value, whatever comes after it.
        let c = 2;
        let mut qkv = vec![0.0; 3 * 3 * c];
        for t in 0..3 {
            let row = &mut qkv[t * 3 * c..(t + 1) * 3 * c];
            row.copy_from_slice(&[1.0, 0.0, 1.0, t as f32, 10.0 * t as f32 + 1.0, -(t as f32)]);
        }
        let mut out = vec![0.0; 3 * c];
        let mut scores = vec![0.0; 3];
        attention_forward(&mut out, &qkv, &mut scores, 3, c, 1);
        assert_eq!(&out[..2], &[1.0, 0.0]);
        // Position 1 mixes values 0 and 1 only.
        assert!(out[2] > 1.0 && out[2] < 11.0);
    }
}
