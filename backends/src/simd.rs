//! `simd` and `simd-kv`: GPT-2 on the hand-written kernels of [`crate::kernels`], on all cores.
//!
//! Both backends share one forward pass, [`SimdModel::forward`], which appends T new positions
//! to a key/value store allocated once for the whole context, and attends over everything in it.
//! The two differ only in what they feed it:
//!
//! - `simd-kv` keeps the store between calls: the prompt is prefilled in one batched pass
//!   (matrix-matrix products), then each new token is one position: one matrix-vector pass over
//!   the weights plus attention over the cached keys and values. No buffer is allocated per
//!   token. A step runs as one team of the pool's threads ([`SimdModel::forward_one`]), not as
//!   one parallel dispatch per operation.
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
use crate::kernels::team::{Shared, Team, TeamSizer};
use crate::kernels::{Compute, Isa, Kernels, attend_head};
use crate::memory::Budget;
use crate::profile::{Op, OpTimes, PhaseClock, Profiler};

/// Parallel operations per block in a team decode step (see [`SimdModel::forward_one`]).
const TEAM_OPS_PER_LAYER: usize = 8;

/// The shared forward pass and its buffers.
pub struct SimdModel<'w> {
    w: Gpt2Weights<'w>,
    compute: Compute,
    x: Vec<f32>,       // (T, C) residual stream
    ln: Vec<f32>,      // (max(T, threads), C); in a decode step, row i is thread i's copy
    qkv: Vec<f32>,     // (T, 3C)
    att: Vec<f32>,     // (T, C)
    proj: Vec<f32>,    // (T, C); in prefill attention, the (n_head, T, D) per-head outputs
    fc: Vec<f32>,      // (T, H)
    scratch: Vec<f32>, // (max(T, 4 threads), max(3C, H)) partial results of a threaded matmul
    scores: Vec<f32>,  // (n_head, n_ctx) attention scores of a decode step
    ln_f: Vec<f32>,    // (C)
    logits: Vec<f32>,  // (V)
    k_cache: Vec<f32>, // (n_layer, n_head, n_ctx, D)
    v_cache: Vec<f32>, // (n_layer, n_head, n_ctx, D)
    pos: usize,        // positions stored so far
    team: Team,        // claim counters and barrier of a decode step
    sizer: TeamSizer,  // how many threads the next decode step runs on
    profiler: Profiler,
}

impl<'w> SimdModel<'w> {
    /// Allocates every buffer for the whole context, after checking their total against the
    /// machine's memory (`backend` names the engine in that error).
    pub fn new(
        w: Gpt2Weights<'w>,
        kernels: Kernels,
        threads: usize,
        backend: &'static str,
    ) -> Result<Self, EngineError> {
        let c = &w.config;
        let (n_ctx, e, h) = (c.n_ctx as usize, c.n_embd as usize, c.mlp_hidden as usize);
        let (n_layer, n_head, v) = (c.n_layer as usize, c.n_head as usize, c.vocab_size as usize);
        let wide = (3 * e).max(h);
        let mut budget = Budget::new(backend);
        budget
            .f32s("residual stream (n_ctx, C)", &[n_ctx, e])
            .f32s("layer-norm output (n_ctx, C)", &[n_ctx.max(threads), e])
            .f32s("QKV (n_ctx, 3C)", &[n_ctx, 3, e])
            .f32s("attention output (n_ctx, C)", &[n_ctx, e])
            .f32s("projection (n_ctx, C)", &[n_ctx, e])
            .f32s("MLP activations (n_ctx, H)", &[n_ctx, h])
            .f32s(
                "product scratch (n_ctx, max(3C, H))",
                &[n_ctx.max(4 * threads), wide],
            )
            .f32s("attention scores (n_head, n_ctx)", &[n_head, n_ctx])
            .f32s("logits (V)", &[v])
            .f32s("key cache (n_layer, n_ctx, C)", &[n_layer, n_ctx, e])
            .f32s("value cache (n_layer, n_ctx, C)", &[n_layer, n_ctx, e]);
        budget.check()?;
        let kv = n_layer * n_ctx * e;
        let zeros = |n: usize| vec![0.0f32; n];
        // The widest product: 3C or H columns, or n_ctx scores in prefill attention.
        let compute = Compute::new(kernels, threads, wide.max(n_ctx))
            .map_err(|message| EngineError::Backend { backend, message })?;
        let threads = compute.threads();
        Ok(SimdModel {
            team: Team::new(threads, TEAM_OPS_PER_LAYER * c.n_layer as usize + 1),
            sizer: TeamSizer::new(threads),
            compute,
            x: zeros(n_ctx * e),
            ln: zeros(n_ctx.max(threads) * e),
            qkv: zeros(n_ctx * 3 * e),
            att: zeros(n_ctx * e),
            proj: zeros(n_ctx * e),
            fc: zeros(n_ctx * h),
            scratch: zeros(n_ctx.max(4 * threads) * (3 * e).max(h)),
            scores: zeros(c.n_head as usize * n_ctx),
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
        if let [token] = tokens {
            self.forward_one(*token);
        } else {
            let pool = self.compute.pool();
            pool.install(|| self.forward_in_pool(tokens));
        }
        &self.logits
    }

    /// One new position (a decode step with the cache), the memory-bound case. The whole step
    /// runs as one team of the pool's threads (see [`crate::kernels::team`]): each matrix-vector
    /// product is split into blocks of weight rows whose partial sums are added by the next
    /// operation, which is split by columns (attention by heads). Layer norms of the one row are
    /// computed by every thread into its own copy, which saves a barrier each. Same kernels and
    /// same order of additions as [`SimdModel::forward_in_pool`] with T = 1.
    ///
    /// Profiling charges each operation the time thread 0 spent from the end of the previous
    /// one to the barrier that ends it, so the sum of partial products is charged to the
    /// operation that does it: attention (QKV), residual add (the two output products), GELU.
    fn forward_one(&mut self, token: u32) {
        let cfg = self.w.config;
        let (c, h, n_ctx) = (
            cfg.n_embd as usize,
            cfg.mlp_hidden as usize,
            cfg.n_ctx as usize,
        );
        let (n_head, eps, vocab) = (
            cfg.n_head as usize,
            cfg.layer_norm_eps,
            cfg.vocab_size as usize,
        );
        let d = c / n_head;
        let scale = 1.0 / (d as f32).sqrt();
        let pos = self.pos;
        let compute = &self.compute;
        let kern = compute.kernels;
        let w = &self.w;

        let start = self.profiler.start();
        let x = &mut self.x[..c];
        x.copy_from_slice(&w.wte[token as usize * c..(token as usize + 1) * c]);
        kern.add(x, &w.wpe[pos * c..(pos + 1) * c]);
        self.profiler.stop(Op::Embedding, start);

        let size = self.sizer.next_size();
        self.team.reset_for(size);
        let step_start = std::time::Instant::now();
        let team = &self.team;
        let profiling = self.profiler.enabled();
        let width = (3 * c).max(h);
        let blocks = compute.matvec_split(h).1.max(compute.matvec_split(c).1);
        let x = Shared::new(x);
        let ln = Shared::new(&mut self.ln[..compute.threads() * c]);
        let qkv = Shared::new(&mut self.qkv[..3 * c]);
        let att = Shared::new(&mut self.att[..c]);
        let fc = Shared::new(&mut self.fc[..h]);
        let partials = Shared::new(&mut self.scratch[..blocks * width]);
        let scores = Shared::new(&mut self.scores[..n_head * n_ctx]);
        let k_cache = Shared::new(&mut self.k_cache);
        let v_cache = Shared::new(&mut self.v_cache);
        let logits = Shared::new(&mut self.logits);
        let zeros = compute.zeros(d);

        let step = |me: usize| {
            let mut op = 0;
            let mut clock = PhaseClock::new(profiling && me == 0);
            // SAFETY: row `me` of `ln` belongs to this thread for the whole step.
            let my_ln = unsafe { ln.range_mut(me * c..(me + 1) * c) };
            let sums = |op: &mut usize, out: &Shared, k: usize, n: usize, finish: Finish| {
                sum_team(compute, team, op, &partials, out, k, n, finish)
            };
            for (l, lw) in w.layers.iter().enumerate() {
                // SAFETY: `x` is written only by the residual steps, each ended by a barrier.
                let x_now = unsafe { x.range(0..c) };
                kern.layernorm(my_ln, x_now, lw.ln_1_w, lw.ln_1_b, eps);
                clock.mark(Op::LayerNorm);
                compute.matvec_team(team, &mut op, my_ln, lw.qkv_w, lw.qkv_b, 3 * c, &partials);
                clock.mark(Op::QkvProjection);
                team.for_each_block(&mut op, n_head, |hd| {
                    let at = (l * n_head + hd) * n_ctx * d;
                    // SAFETY: the partials are only read until the next product; head `hd`'s
                    // columns of `qkv` and `att`, its cache rows and its scores are touched
                    // by the thread that claimed `hd` only, until the barrier.
                    let (parts, q, k_head, v_head, s, out) = unsafe {
                        (
                            partials.range(0..blocks * width),
                            qkv.range_mut(hd * d..(hd + 1) * d),
                            k_cache.range_mut(at..at + n_ctx * d),
                            v_cache.range_mut(at..at + n_ctx * d),
                            scores.range_mut(hd * n_ctx..(hd + 1) * n_ctx),
                            att.range_mut(hd * d..(hd + 1) * d),
                        )
                    };
                    let new_row = pos * d..(pos + 1) * d;
                    compute.sum_partials(q, parts, c, 3 * c, hd * d);
                    compute.sum_partials(&mut k_head[new_row.clone()], parts, c, 3 * c, c + hd * d);
                    compute.sum_partials(&mut v_head[new_row], parts, c, 3 * c, 2 * c + hd * d);
                    attend_head(&kern, out, q, k_head, v_head, s, pos, scale, zeros);
                });
                clock.mark(Op::Attention);
                // SAFETY: `att` was completed before the barrier that ended attention.
                let att_now = unsafe { att.range(0..c) };
                compute.matvec_team(
                    team,
                    &mut op,
                    att_now,
                    lw.attn_proj_w,
                    lw.attn_proj_b,
                    c,
                    &partials,
                );
                clock.mark(Op::OutputProjection);
                sums(&mut op, &x, c, c, Finish::AddTo);
                clock.mark(Op::Residual);
                // SAFETY: as above; the residual step ended with a barrier.
                let x_now = unsafe { x.range(0..c) };
                kern.layernorm(my_ln, x_now, lw.ln_2_w, lw.ln_2_b, eps);
                clock.mark(Op::LayerNorm);
                compute.matvec_team(team, &mut op, my_ln, lw.fc_w, lw.fc_b, h, &partials);
                clock.mark(Op::MlpUp);
                sums(&mut op, &fc, c, h, Finish::Gelu);
                clock.mark(Op::Gelu);
                // SAFETY: `fc` was completed before the barrier that ended GELU.
                let fc_now = unsafe { fc.range(0..h) };
                compute.matvec_team(
                    team,
                    &mut op,
                    fc_now,
                    lw.fc_proj_w,
                    lw.fc_proj_b,
                    c,
                    &partials,
                );
                clock.mark(Op::MlpDown);
                sums(&mut op, &x, h, c, Finish::AddTo);
                clock.mark(Op::Residual);
            }
            // SAFETY: as above.
            let x_now = unsafe { x.range(0..c) };
            kern.layernorm(my_ln, x_now, w.ln_f_w, w.ln_f_b, eps);
            clock.mark(Op::LayerNorm);
            let (per, vocab_blocks) = compute.logit_blocks(vocab);
            team.for_each_block(&mut op, vocab_blocks, |b| {
                let rows = b * per..((b + 1) * per).min(vocab);
                let lm = &w.lm_head[rows.start * c..rows.end * c];
                // SAFETY: block b's logits are written by the thread that claimed b only.
                kern.dot_rows(unsafe { logits.range_mut(rows) }, my_ln, lm);
            });
            clock.mark(Op::OutputLayer);
            clock.into_times()
        };
        // The whole pool, or (when the sizer finds that faster, on a busy machine) this thread
        // alone: the same blocks in the same order either way.
        let times = if size == 1 {
            vec![step(0)]
        } else {
            compute.pool().broadcast(|ctx| step(ctx.index()))
        };
        self.sizer.record(size, step_start.elapsed().as_secs_f64());
        for t in times.iter().flatten() {
            self.profiler.add(t);
        }
        self.pos += 1;
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

        let mut clock = self.profiler.clock();
        // x[i] = wte[token] + wpe[position]
        for (i, &tok) in tokens.iter().enumerate() {
            let row = &mut x[i * c..(i + 1) * c];
            row.copy_from_slice(&self.w.wte[tok as usize * c..(tok as usize + 1) * c]);
            k.add(row, &self.w.wpe[(p0 + i) * c..(p0 + i + 1) * c]);
        }
        clock.mark(Op::Embedding);
        for (l, lw) in self.w.layers.iter().enumerate() {
            let k_cache = &mut self.k_cache[l * n_ctx * c..(l + 1) * n_ctx * c];
            let v_cache = &mut self.v_cache[l * n_ctx * c..(l + 1) * n_ctx * c];
            let compute = &self.compute;
            let scratch = &mut self.scratch;
            compute.layernorm_rows(ln, x, lw.ln_1_w, lw.ln_1_b, eps);
            clock.mark(Op::LayerNorm);
            compute.linear(qkv, ln, lw.qkv_w, lw.qkv_b, c, 3 * c, scratch);
            clock.mark(Op::QkvProjection);
            store_kv(k_cache, v_cache, qkv, p0, t, c, n_head, n_ctx);
            let scores = &mut self.scores;
            compute.attention(
                att, qkv, k_cache, v_cache, proj, scores, p0, c, n_head, n_ctx,
            );
            clock.mark(Op::Attention);
            compute.linear(proj, att, lw.attn_proj_w, lw.attn_proj_b, c, c, scratch);
            clock.mark(Op::OutputProjection);
            compute.add(x, proj);
            clock.mark(Op::Residual);
            compute.layernorm_rows(ln, x, lw.ln_2_w, lw.ln_2_b, eps);
            clock.mark(Op::LayerNorm);
            compute.linear(fc, ln, lw.fc_w, lw.fc_b, c, h, scratch);
            clock.mark(Op::MlpUp);
            compute.gelu(fc);
            clock.mark(Op::Gelu);
            compute.linear(proj, fc, lw.fc_proj_w, lw.fc_proj_b, h, c, scratch);
            clock.mark(Op::MlpDown);
            compute.add(x, proj);
            clock.mark(Op::Residual);
        }
        let last = &x[(t - 1) * c..];
        k.layernorm(&mut self.ln_f, last, self.w.ln_f_w, self.w.ln_f_b, eps);
        clock.mark(Op::LayerNorm);
        self.compute
            .logits(&mut self.logits, &self.ln_f, self.w.lm_head);
        clock.mark(Op::OutputLayer);
        self.profiler.add_clock(clock);
        self.pos += t;
    }
}

/// Stores the keys and values of positions `p0..p0 + t` (from `qkv`, (T, 3C)) into one layer's
/// caches, laid out (n_head, n_ctx, D), head by head.
#[allow(clippy::too_many_arguments)]
fn store_kv(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    qkv: &[f32],
    p0: usize,
    t: usize,
    c: usize,
    n_head: usize,
    n_ctx: usize,
) {
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
}

/// What a team step does with a block of summed partial products.
#[derive(Clone, Copy)]
enum Finish {
    /// `out += sum` (a residual connection).
    AddTo,
    /// `out = gelu(sum)`.
    Gelu,
}

/// Team step: `out[cols] = finish(sum over blocks of partials[cols])` for a product of `k` rows
/// and `n` columns, the columns split into blocks claimed by the team's threads. Sums are built
/// 64 columns at a time on the stack.
#[allow(clippy::too_many_arguments)]
fn sum_team(
    compute: &Compute,
    team: &Team,
    op: &mut usize,
    partials: &Shared,
    out: &Shared,
    k: usize,
    n: usize,
    finish: Finish,
) {
    let (per, col_blocks) = compute.column_blocks(n);
    let parts_len = compute.matvec_split(k).1 * n;
    team.for_each_block(op, col_blocks, |b| {
        // SAFETY: the partials are only read until the next product, after this operation's
        // barrier; column block b of `out` is written by the thread that claimed b only.
        let (parts, out) = unsafe {
            (
                partials.range(0..parts_len),
                out.range_mut(b * per..((b + 1) * per).min(n)),
            )
        };
        let mut sum = [0.0f32; 64];
        for (i, chunk) in out.chunks_mut(64).enumerate() {
            let s = &mut sum[..chunk.len()];
            compute.sum_partials(s, parts, k, n, b * per + i * 64);
            match finish {
                Finish::AddTo => compute.kernels.add(chunk, s),
                Finish::Gelu => {
                    chunk.copy_from_slice(s);
                    compute.kernels.gelu(chunk);
                }
            }
        }
    });
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
    pub fn new(w: Gpt2Weights<'w>, kernels: Kernels, threads: usize) -> Result<Self, EngineError> {
        Ok(SimdEngine {
            model: SimdModel::new(w, kernels, threads, "simd")?,
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
    pub fn new(w: Gpt2Weights<'w>, kernels: Kernels, threads: usize) -> Result<Self, EngineError> {
        Ok(SimdKvEngine {
            model: SimdModel::new(w, kernels, threads, "simd-kv")?,
        })
    }

    /// Replaces how decode steps choose their team's size (tests, benchmarks).
    pub fn with_sizer(mut self, sizer: TeamSizer) -> Self {
        self.model.sizer = sizer;
        self
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
