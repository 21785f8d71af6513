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
//! contiguous (attention streams them instead of gathering D floats every C), in f32, or in f16
//! with `--kv-cache f16` (`gpt2_weights::dtype`'s cache rule); `logits` is (V).
//! Every buffer is sized for T = n_ctx up front.
//!
//! A decode step of `simd-kv` is a list of operations run by a thread team; that list and the
//! code that does each operation are in [`decode`].

pub mod decode;

use crate::Model;
use gpt2_weights::{Config, Gpt2Weights};

use crate::engine::{EngineError, EngineInfo, Forward};
use crate::kernels::attention::KvStore;
use crate::kernels::team::{Shared, Team, TeamSizer};
use crate::kernels::{Compute, Isa, Kernels, KvShape, Weight};
use crate::memory::Budget;
use crate::profile::{Op, PhaseClock, Profiler};
use decode::{Buffers, DecodeOp, SharedKv, Step};

/// The shared forward pass and its buffers.
pub struct SimdModel<'w> {
    w: Gpt2Weights<'w>,
    compute: Compute,
    x: Vec<f32>,                 // (T, C) residual stream
    ln: Vec<f32>,                // (max(T, threads), C); in a decode step, row i is thread i's copy
    qkv: Vec<f32>,               // (T, 3C)
    att: Vec<f32>,               // (T, C)
    proj: Vec<f32>, // (T, C); in prefill attention, the (n_head, T, D) per-head outputs
    fc: Vec<f32>,   // (T, H)
    scratch: Vec<f32>, // (max(T, 4 threads), max(3C, H)) products, + (T, H) rounded q8_0 input
    scores: Vec<f32>, // (n_head, n_ctx) attention scores of a decode step
    ln_f: Vec<f32>, // (C)
    logits: Vec<f32>, // (V)
    kv: KvStore,    // keys and values, (n_layer, n_head, n_ctx, D) each, f32 or f16
    pos: usize,     // positions stored so far
    team: Team,     // claim counters and barrier of a decode step
    sizer: TeamSizer, // how many threads the next decode step runs on
    schedule: Vec<DecodeOp<'w>>, // the operations of a decode step
    profiler: Profiler,
}

impl<'w> SimdModel<'w> {
    /// Allocates every buffer for the whole context, after checking their total against the
    /// machine's memory (`backend` names the engine in that error).
    pub fn new(
        model: impl Into<Model<'w>>,
        kernels: Kernels,
        threads: usize,
        backend: &'static str,
    ) -> Result<Self, EngineError> {
        let Model {
            weights: w,
            kv_cache,
        } = model.into();
        let c = &w.config;
        let (n_ctx, e, h) = (c.n_ctx as usize, c.n_embd as usize, c.mlp_hidden as usize);
        let (n_layer, n_head, v) = (c.n_layer as usize, c.n_head as usize, c.vocab_size as usize);
        let wide = (3 * e).max(h);
        // A q8_0 product rounds its input (up to (n_ctx, H)) into the scratch after its outputs.
        let rounded_input = w.matrix_dtypes().any(|d| d.rounds_input());
        let rounded_len = if rounded_input { n_ctx * e.max(h) } else { 0 };
        let kv_dtype = kv_cache; // f16 with `--kv-cache f16`
        let kv_size = kv_dtype.bytes_per_value() as u64;
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
            .f32s("rounded q8_0 input (n_ctx, H)", &[rounded_len])
            .f32s("attention scores (n_head, n_ctx)", &[n_head, n_ctx])
            .f32s("logits (V)", &[v])
            .values(
                "key cache (n_layer, n_ctx, C)",
                &[n_layer, n_ctx, e],
                kv_size,
            )
            .values(
                "value cache (n_layer, n_ctx, C)",
                &[n_layer, n_ctx, e],
                kv_size,
            );
        budget.check()?;
        let kv = n_layer * n_ctx * e;
        let zeros = |n: usize| vec![0.0f32; n];
        // The widest product: 3C or H columns, or n_ctx scores in prefill attention.
        let compute = Compute::new(kernels, threads, wide.max(n_ctx))
            .map_err(|message| EngineError::Backend { backend, message })?;
        let threads = compute.threads();
        let schedule = decode::schedule(&w, &compute);
        Ok(SimdModel {
            team: Team::new(threads, schedule.len()),
            sizer: TeamSizer::new(threads),
            schedule,
            compute,
            x: zeros(n_ctx * e),
            ln: zeros(n_ctx.max(threads) * e),
            qkv: zeros(n_ctx * 3 * e),
            att: zeros(n_ctx * e),
            proj: zeros(n_ctx * e),
            fc: zeros(n_ctx * h),
            scratch: zeros(n_ctx.max(4 * threads) * wide + rounded_len),
            scores: zeros(c.n_head as usize * n_ctx),
            ln_f: zeros(e),
            logits: zeros(c.vocab_size as usize),
            kv: KvStore::new(kv_dtype, kv),
            pos: 0,
            profiler: Profiler::default(),
            w,
        })
    }

    pub fn config(&self) -> &Config {
        &self.w.config
    }

    /// The weights' dtype label (`gpt2_weights::Gpt2Weights::dtype_label`).
    pub fn dtype_label(&self) -> String {
        self.w.dtype_label()
    }

    pub fn threads(&self) -> usize {
        self.compute.threads()
    }

    pub fn kernels(&self) -> Kernels {
        self.compute.kernels
    }

    /// Bytes held by the key and value stores.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.bytes()
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

    /// Keeps the first `positions` stored positions and forgets the rest.
    pub fn truncate(&mut self, positions: usize) {
        assert!(
            positions <= self.pos,
            "{positions} positions kept of {}",
            self.pos
        );
        self.pos = positions;
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

    /// One new position (a decode step with the cache), the memory-bound case: the embedding,
    /// then the operations of [`decode::schedule`] on a team of the pool's threads (see
    /// [`crate::kernels::team`]). Same kernels and same order of additions as
    /// [`SimdModel::forward_in_pool`] with T = 1.
    fn forward_one(&mut self, token: u32) {
        let cfg = self.w.config;
        let (c, h) = (cfg.n_embd as usize, cfg.mlp_hidden as usize);
        let (n_head, n_ctx) = (cfg.n_head as usize, cfg.n_ctx as usize);
        let pos = self.pos;
        let compute = &self.compute;
        let w = &self.w;

        let start = self.profiler.start();
        let x = &mut self.x[..c];
        compute.kernels.dequantize(x, w.wte.row(token as usize));
        compute.kernels.add(x, &w.wpe[pos * c..(pos + 1) * c]);
        self.profiler.stop(Op::Embedding, start);

        let size = self.sizer.next_size();
        self.team.reset_for(size);
        let step_start = std::time::Instant::now();
        let blocks = compute.matvec_split(h).1.max(compute.matvec_split(c).1);
        let step = Step {
            compute,
            config: &w.config,
            pos,
            bufs: Buffers {
                x: Shared::new(x),
                ln: Shared::new(&mut self.ln[..compute.threads() * c]),
                qkv: Shared::new(&mut self.qkv[..3 * c]),
                att: Shared::new(&mut self.att[..c]),
                fc: Shared::new(&mut self.fc[..h]),
                partials: Shared::new(&mut self.scratch[..blocks * (3 * c).max(h)]),
                scores: Shared::new(&mut self.scores[..n_head * n_ctx]),
                kv: SharedKv::new(&mut self.kv),
                logits: Shared::new(&mut self.logits),
            },
        };
        let (team, schedule) = (&self.team, &self.schedule);
        let profiling = self.profiler.enabled();
        let run = |me: usize| {
            let mut clock = PhaseClock::new(profiling && me == 0);
            let work = |op: &DecodeOp, i| step.work(op, i, me);
            team.run(me, schedule, work, |op| clock.mark(op.charge));
            clock.into_times()
        };
        // The whole pool, or (when the sizer finds that faster, on a busy machine) this thread
        // alone: the same blocks in the same order either way.
        let times = if size == 1 {
            vec![run(0)]
        } else {
            compute.pool().broadcast(|ctx| run(ctx.index()))
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
        let shape = KvShape::new(c, n_head, n_ctx);
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
            k.dequantize(row, self.w.wte.row(tok as usize));
            k.add(row, &self.w.wpe[(p0 + i) * c..(p0 + i + 1) * c]);
        }
        clock.mark(Op::Embedding);
        for (l, lw) in self.w.layers.iter().enumerate() {
            let compute = &self.compute;
            let scratch = &mut self.scratch;
            compute.layernorm_rows(ln, x, lw.ln_1_w, lw.ln_1_b, eps);
            clock.mark(Op::LayerNorm);
            compute.linear(qkv, ln, Weight::new(lw.qkv_w), lw.qkv_b, scratch);
            clock.mark(Op::QkvProjection);
            let cache = self.kv.store_layer(l, shape, qkv, p0);
            compute.attention(att, qkv, cache, proj, &mut self.scores, p0);
            clock.mark(Op::Attention);
            let attn_proj_w = Weight::new(lw.attn_proj_w);
            compute.linear(proj, att, attn_proj_w, lw.attn_proj_b, scratch);
            clock.mark(Op::OutputProjection);
            compute.add(x, proj);
            clock.mark(Op::Residual);
            compute.layernorm_rows(ln, x, lw.ln_2_w, lw.ln_2_b, eps);
            clock.mark(Op::LayerNorm);
            compute.linear(fc, ln, Weight::new(lw.fc_w), lw.fc_b, scratch);
            clock.mark(Op::MlpUp);
            compute.gelu(fc);
            clock.mark(Op::Gelu);
            let fc_proj_w = Weight::new(lw.fc_proj_w);
            compute.linear(proj, fc, fc_proj_w, lw.fc_proj_b, scratch);
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

/// The one-line description of a simd backend for reports.
fn summary(isa: Isa, kv_cache: bool) -> &'static str {
    match (isa, kv_cache) {
        (Isa::Avx512, false) => {
            "AVX-512 kernels, all cores, recomputes the whole context every step"
        }
        (Isa::Avx512, true) => "AVX-512 kernels, all cores, KV cache: one new position per step",
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
}

impl<'w> SimdEngine<'w> {
    pub fn new(
        model: impl Into<Model<'w>>,
        kernels: Kernels,
        threads: usize,
    ) -> Result<Self, EngineError> {
        Ok(SimdEngine {
            model: SimdModel::new(model, kernels, threads, "simd")?,
        })
    }
}

impl Forward for SimdEngine<'_> {
    fn name(&self) -> &'static str {
        "simd"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: false,
            threads: self.model.threads(),
            dtype: self.model.dtype_label(),
            kv_cache_bytes: 0,
            weights_copied_bytes: 0,
            scratch_bytes: Some(self.model.scratch_bytes()),
            device: "cpu".to_string(),
            summary: summary(self.model.kernels().isa(), false),
            isa: self.model.kernels().isa().name(),
        }
    }

    fn config(&self) -> &Config {
        self.model.config()
    }

    fn forward(&mut self, tokens: &[u32], _new: usize) -> Result<(), EngineError> {
        // No cache: every call recomputes the whole sequence.
        self.model.reset();
        self.model.forward(tokens);
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        &self.model.logits
    }

    fn profiler(&mut self) -> &mut Profiler {
        self.model.profiler()
    }
}

/// `simd-kv`: the kernels plus a KV cache; one new position per step.
pub struct SimdKvEngine<'w> {
    model: SimdModel<'w>,
}

impl<'w> SimdKvEngine<'w> {
    pub fn new(
        model: impl Into<Model<'w>>,
        kernels: Kernels,
        threads: usize,
    ) -> Result<Self, EngineError> {
        Ok(SimdKvEngine {
            model: SimdModel::new(model, kernels, threads, "simd-kv")?,
        })
    }

    /// Replaces how decode steps choose their team's size (tests, benchmarks).
    pub fn with_sizer(mut self, sizer: TeamSizer) -> Self {
        self.model.sizer = sizer;
        self
    }
}

impl Forward for SimdKvEngine<'_> {
    fn name(&self) -> &'static str {
        "simd-kv"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            kv_cache: true,
            threads: self.model.threads(),
            dtype: self.model.dtype_label(),
            kv_cache_bytes: self.model.kv_bytes(),
            weights_copied_bytes: 0,
            scratch_bytes: Some(self.model.scratch_bytes()),
            device: "cpu".to_string(),
            summary: summary(self.model.kernels().isa(), true),
            isa: self.model.kernels().isa().name(),
        }
    }

    fn config(&self) -> &Config {
        self.model.config()
    }

    fn forward(&mut self, tokens: &[u32], new: usize) -> Result<(), EngineError> {
        // The cache holds the positions before the new ones (none when a sequence starts).
        let cached = tokens.len() - new;
        self.model.truncate(cached);
        self.model.forward(&tokens[cached..]);
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        &self.model.logits
    }

    fn profiler(&mut self) -> &mut Profiler {
        self.model.profiler()
    }
}
