//! `simd` and `simd-kv`: GPT-2 on the hand-written kernels of [`crate::kernels`], on all cores.
//!
//! Both backends share one forward pass, [`SimdModel::forward`], which appends T new positions
//! to a key/value store allocated once for the whole context, and attends over everything in it.
//! The two differ only in what they feed it:
//!
//! - `simd-kv` keeps the store between calls: the prompt is prefilled in one batched pass
//!   (matrix-matrix products), then each new token is one position: one matrix-vector pass over
//!   the weights plus attention over the cached keys and values. Nothing is allocated per token.
//! - `simd` has no cache: every step empties the store and runs the whole history again, as
//!   `naive` and `ndarray` do. That isolates what the cache buys: same kernels, same threads.
//!
//! Buffer shapes (T new positions, C = n_embd, H = MLP width, V = vocabulary): `x`, `ln`,
//! `att`, `proj` are (T, C); `qkv` is (T, 3C); `fc` is (T, H); the key and value stores are
//! (n_layer, n_head, n_ctx, D) with D = C / n_head, so that the keys one head attends over are
//! contiguous (attention streams them instead of gathering D floats every C); `logits` is (V).
//! Every buffer is sized for T = n_ctx up front.

use gpt2_weights::{Config, Gpt2Weights};

use crate::engine::{Engine, EngineError, EngineInfo, History, check_prompt, check_step};
use crate::kernels::{Compute, Isa, Kernels};
use crate::profile::{Op, OpTimes, Profiler, timed};

/// The shared forward pass and its buffers.
pub struct SimdModel<'w> {
    w: Gpt2Weights<'w>,
    compute: Compute,
    x: Vec<f32>,       // (T, C) residual stream
    ln: Vec<f32>,      // (T, C)
    qkv: Vec<f32>,     // (T, 3C)
    att: Vec<f32>,     // (T, C)
    proj: Vec<f32>,    // (T, C)
    fc: Vec<f32>,      // (T, H)
    scratch: Vec<f32>, // (max(T, 4 threads), max(3C, H)) partial results of a threaded matmul
    scores: Vec<f32>,  // (max(n_ctx, n_head), n_ctx) attention scores
    ln_f: Vec<f32>,    // (C)
    logits: Vec<f32>,  // (V)
    k_cache: Vec<f32>, // (n_layer, n_head, n_ctx, D)
    v_cache: Vec<f32>, // (n_layer, n_head, n_ctx, D)
    pos: usize,        // positions stored so far
    profiler: Profiler,
}

impl<'w> SimdModel<'w> {
    pub fn new(w: Gpt2Weights<'w>, kernels: Kernels, threads: usize) -> Result<Self, String> {
        let c = &w.config;
        let (n_ctx, e, h) = (c.n_ctx as usize, c.n_embd as usize, c.mlp_hidden as usize);
        let kv = c.n_layer as usize * n_ctx * e;
        let zeros = |n: usize| vec![0.0f32; n];
        Ok(SimdModel {
            compute: Compute::new(kernels, threads, (3 * e).max(h))?,
            x: zeros(n_ctx * e),
            ln: zeros(n_ctx * e),
            qkv: zeros(n_ctx * 3 * e),
            att: zeros(n_ctx * e),
            proj: zeros(n_ctx * e),
            fc: zeros(n_ctx * h),
            scratch: zeros(n_ctx.max(4 * threads) * (3 * e).max(h)),
            scores: zeros(n_ctx.max(c.n_head as usize) * n_ctx),
            ln_f: zeros(e),
            logits: zeros(c.vocab_size as usize),
            k_cache: zeros(kv),
            v_cache: zeros(kv),
            pos: 0,
            profiler: Profiler::default(),
            w,
        })
    }

    pub fn config(&self) -> &Config {
        &self.w.config
    }

    pub fn threads(&self) -> usize {
        self.compute.threads()
    }

    pub fn kernels(&self) -> Kernels {
        self.compute.kernels
    }

    /// Bytes held by the key and value stores.
    pub fn kv_bytes(&self) -> u64 {
        ((self.k_cache.len() + self.v_cache.len()) * 4) as u64
    }

    /// Bytes of the activation buffers (everything but the weights and the KV cache).
    pub fn scratch_bytes(&self) -> u64 {
        let floats = [
            &self.x,
            &self.ln,
            &self.qkv,
            &self.att,
            &self.proj,
            &self.fc,
            &self.scratch,
            &self.scores,
            &self.ln_f,
            &self.logits,
        ]
        .iter()
        .map(|v| v.len())
        .sum::<usize>();
        (floats * std::mem::size_of::<f32>()) as u64
    }

    /// Positions currently stored.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Forgets every stored position.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    pub fn profiler(&mut self) -> &mut Profiler {
        &mut self.profiler
    }

    /// Appends `tokens` at the next positions and returns the logits of the last one.
    /// The caller has checked the ids and that they fit in the context.
    pub fn forward(&mut self, tokens: &[u32]) -> &[f32] {
        let pool = self.compute.pool();
        pool.install(|| self.forward_in_pool(tokens));
        &self.logits
    }

    fn forward_in_pool(&mut self, tokens: &[u32]) {
        let cfg = self.w.config;
        let (t, c, h) = (tokens.len(), cfg.n_embd as usize, cfg.mlp_hidden as usize);
        let (n_ctx, n_head, eps) = (cfg.n_ctx as usize, cfg.n_head as usize, cfg.layer_norm_eps);
        let p0 = self.pos;
        let k = self.compute.kernels;
        let x = &mut self.x[..t * c];
        let ln = &mut self.ln[..t * c];
        let qkv = &mut self.qkv[..t * 3 * c];
        let att = &mut self.att[..t * c];
        let proj = &mut self.proj[..t * c];
        let fc = &mut self.fc[..t * h];

        let p = &mut self.profiler;
        // x[i] = wte[token] + wpe[position]
        timed!(p, Op::Embedding, {
            for (i, &tok) in tokens.iter().enumerate() {
                let row = &mut x[i * c..(i + 1) * c];
                row.copy_from_slice(&self.w.wte[tok as usize * c..(tok as usize + 1) * c]);
                k.add(row, &self.w.wpe[(p0 + i) * c..(p0 + i + 1) * c]);
            }
        });
        for (l, lw) in self.w.layers.iter().enumerate() {
            let k_cache = &mut self.k_cache[l * n_ctx * c..(l + 1) * n_ctx * c];
            let v_cache = &mut self.v_cache[l * n_ctx * c..(l + 1) * n_ctx * c];
            let compute = &self.compute;
            let scratch = &mut self.scratch;
            timed!(
                p,
                Op::LayerNorm,
                compute.layernorm_rows(ln, x, lw.ln_1_w, lw.ln_1_b, eps)
            );
            timed!(
                p,
                Op::QkvProjection,
                compute.linear(qkv, ln, lw.qkv_w, lw.qkv_b, c, 3 * c, scratch)
            );
            timed!(p, Op::Attention, {
                // Store the new keys and values at their positions, head by head, then attend.
                let d = c / n_head;
                for i in 0..t {
                    let row = &qkv[i * 3 * c..(i + 1) * 3 * c];
                    for hd in 0..n_head {
                        let at = (hd * n_ctx + p0 + i) * d;
                        let (k_new, v_new) = (c + hd * d, 2 * c + hd * d);
                        k_cache[at..at + d].copy_from_slice(&row[k_new..k_new + d]);
                        v_cache[at..at + d].copy_from_slice(&row[v_new..v_new + d]);
                    }
                }
                compute.attention(
                    att,
                    qkv,
                    k_cache,
                    v_cache,
                    &mut self.scores,
                    p0,
                    c,
                    n_head,
                    n_ctx,
                )
            });
            timed!(
                p,
                Op::OutputProjection,
                compute.linear(proj, att, lw.attn_proj_w, lw.attn_proj_b, c, c, scratch)
            );
            timed!(p, Op::Residual, compute.add(x, proj));
            timed!(
                p,
                Op::LayerNorm,
                compute.layernorm_rows(ln, x, lw.ln_2_w, lw.ln_2_b, eps)
            );
            timed!(
                p,
                Op::MlpUp,
                compute.linear(fc, ln, lw.fc_w, lw.fc_b, c, h, scratch)
            );
            timed!(p, Op::Gelu, compute.gelu(fc));
            timed!(
                p,
                Op::MlpDown,
                compute.linear(proj, fc, lw.fc_proj_w, lw.fc_proj_b, h, c, scratch)
            );
            timed!(p, Op::Residual, compute.add(x, proj));
        }
        let last = &x[(t - 1) * c..];
        timed!(
            p,
            Op::LayerNorm,
            k.layernorm(&mut self.ln_f, last, self.w.ln_f_w, self.w.ln_f_b, eps)
        );
        timed!(
            p,
            Op::OutputLayer,
            self.compute
                .logits(&mut self.logits, &self.ln_f, self.w.lm_head)
        );
        self.pos += t;
    }
}

/// The one-line description of a simd backend for reports.
fn summary(isa: Isa, kv_cache: bool) -> &'static str {
    match (isa, kv_cache) {
        (Isa::Avx2Fma, false) => {
            "AVX2+FMA kernels, all cores, recomputes the whole context every step"
        }
        (Isa::Neon, false) => "NEON kernels, all cores, recomputes the whole context every step",
        (Isa::Scalar, false) => "scalar fallback kernels, all cores, recomputes the whole context",
        (Isa::Avx2Fma, true) => "AVX2+FMA kernels, all cores, KV cache: one new position per step",
        (Isa::Neon, true) => "NEON kernels, all cores, KV cache: one new position per step",
        (Isa::Scalar, true) => "scalar fallback kernels, all cores, KV cache",
    }
}

/// `simd`: the kernels without a cache; every step recomputes the whole context.
pub struct SimdEngine<'w> {
    model: SimdModel<'w>,
    history: History,
}

impl<'w> SimdEngine<'w> {
    pub fn new(w: Gpt2Weights<'w>, kernels: Kernels, threads: usize) -> Result<Self, String> {
        Ok(SimdEngine {
            model: SimdModel::new(w, kernels, threads)?,
            history: History::default(),
        })
    }
}

impl Engine for SimdEngine<'_> {
    fn name(&self) -> &'static str {
        "simd"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: false,
            threads: self.model.threads(),
            dtype: "f32",
            kv_cache_bytes: 0,
            weights_copied_bytes: 0,
            scratch_bytes: Some(self.model.scratch_bytes()),
            device: "cpu".to_string(),
            summary: summary(self.model.kernels().isa(), false),
        }
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], EngineError> {
        let cfg = *self.model.config();
        let tokens = self.history.start(&cfg, tokens)?;
        self.model.reset();
        Ok(self.model.forward(tokens))
    }

    fn step(&mut self, token: u32) -> Result<&[f32], EngineError> {
        let cfg = *self.model.config();
        let tokens = self.history.push(&cfg, token)?;
        self.model.reset();
        Ok(self.model.forward(tokens))
    }

    fn reset(&mut self) {
        self.history.clear();
        self.model.reset();
    }

    fn set_profiling(&mut self, on: bool) {
        self.model.profiler().set_enabled(on);
    }

    fn take_profile(&mut self) -> Option<OpTimes> {
        self.model.profiler().take()
    }

    fn position(&self) -> usize {
        self.history.len()
    }
}

/// `simd-kv`: the kernels plus a KV cache; one new position per step.
pub struct SimdKvEngine<'w> {
    model: SimdModel<'w>,
}

impl<'w> SimdKvEngine<'w> {
    pub fn new(w: Gpt2Weights<'w>, kernels: Kernels, threads: usize) -> Result<Self, String> {
        Ok(SimdKvEngine {
            model: SimdModel::new(w, kernels, threads)?,
        })
    }
}

impl Engine for SimdKvEngine<'_> {
    fn name(&self) -> &'static str {
        "simd-kv"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: true,
            threads: self.model.threads(),
            dtype: "f32",
            kv_cache_bytes: self.model.kv_bytes(),
            weights_copied_bytes: 0,
            scratch_bytes: Some(self.model.scratch_bytes()),
            device: "cpu".to_string(),
            summary: summary(self.model.kernels().isa(), true),
        }
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], EngineError> {
        check_prompt(self.model.config(), tokens)?;
        self.model.reset();
        Ok(self.model.forward(tokens))
    }

    fn step(&mut self, token: u32) -> Result<&[f32], EngineError> {
        check_step(self.model.config(), self.model.position(), token)?;
        Ok(self.model.forward(&[token]))
    }

    fn reset(&mut self) {
        self.model.reset();
    }

    fn set_profiling(&mut self, on: bool) {
        self.model.profiler().set_enabled(on);
    }

    fn take_profile(&mut self) -> Option<OpTimes> {
        self.model.profiler().take()
    }

    fn position(&self) -> usize {
        self.model.position()
    }
}
