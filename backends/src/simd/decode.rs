//! A `simd-kv` decode step as data: the list of operations one new position goes through
//! ([`schedule`], built once per model), and the one function that does a block of any of them
//! ([`Step::work`]). [`crate::kernels::team::Team::run`] walks the list on every thread of the
//! team, the way llama.cpp's thread pool walks a graph.
//!
//! Per layer, with C = n_embd, H = MLP width and `parts` the partial outputs of a matrix-vector
//! product ([`Compute::matvec_parts`]: its row blocks for an f32 `[in, out]` weight, 1 for an
//! `[out, in]` weight in any dtype, whose blocks each finish whole outputs):
//!
//! | operation          | split             | reads                 | writes                    |
//! |--------------------|-------------------|-----------------------|---------------------------|
//! | layer norm 1       | each thread       | `x`                   | the thread's row of `ln`  |
//! | QKV product        | `parts` blocks    | own `ln` row          | `partials` (parts, 3C)    |
//! | attention          | one block a head  | `partials`, cache     | `qkv`, cache row, `att`   |
//! | output projection  | `parts` blocks    | `att`                 | `partials` (parts, C)     |
//! | residual           | column blocks     | `partials`            | `x` += sum                |
//! | layer norm 2       | each thread       | `x`                   | the thread's row of `ln`  |
//! | MLP up             | `parts` blocks    | own `ln` row          | `partials` (parts, H)     |
//! | GELU               | column blocks     | `partials`            | `fc` = gelu(sum)          |
//! | MLP down           | `parts` blocks    | `fc`                  | `partials` (parts, C)     |
//! | residual           | column blocks     | `partials`            | `x` += sum                |
//!
//! then the final layer norm (each thread) and the output layer (blocks of vocabulary rows).
//!
//! The matrix-vector products are split by weight rows (each thread streams contiguous rows):
//! into partial sums for an `[in, out]` weight, which the next operation, split by columns or
//! heads, adds in block order; into finished outputs for an `[out, in]` weight. Either way
//! results do not depend on which thread did what or on the team's size. A layer norm of the one
//! row costs less than a barrier, so every thread computes its own copy.
//!
//! Every `unsafe` of a decode step is in [`Step::work`]: each is an access to a [`Shared`]
//! buffer, and the table above is the protocol that makes them sound: within an operation,
//! every block writes ranges no other block touches, and reads only what an earlier operation
//! finished before its barrier (or, for the thread's own `ln` row, what the thread wrote itself).

use gpt2_weights::{Config, Gpt2Weights};

use crate::kernels::attention::{KvElement, KvStore, attend_head};
use crate::kernels::team::{Shared, Split, Team, TeamOp};
use crate::kernels::{Compute, HeadCache, KvShape, Weight};
use crate::profile::Op;
use gpt2_weights::Matrix;

/// The input of a matrix-vector product in a decode step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The calling thread's own row of `ln` (a layer norm's output).
    Ln,
    /// The attention output `att (C)`.
    Att,
    /// The MLP activation `fc (H)`.
    Fc,
}

/// What one operation of a decode step does.
#[derive(Clone, Copy, Debug)]
pub enum Kind<'w> {
    /// The thread's row of `ln` = layer norm of `x`.
    LayerNorm { w: &'w [f32], b: &'w [f32] },
    /// Block j of `input @ w + bias` into the partials ([`Compute::matvec_block`]).
    MatVec {
        input: Input,
        w: Weight<'w>,
        bias: &'w [f32],
    },
    /// For one head: its query, key and value from the QKV partials (`parts` of them; the key
    /// and value into the cache), then attention of the new position over the cache into `att`.
    Attention { layer: usize, parts: usize },
    /// `x += sum of the partials` of a product with `parts` partials (a residual connection).
    Residual { parts: usize },
    /// `fc = gelu(sum of the partials)` of the MLP's up product (`parts` partials).
    Gelu { parts: usize },
    /// `logits = ln · lm_head` for a block of vocabulary rows (the output layer).
    Logits { lm_head: Matrix<'w> },
}

/// One operation of a decode step: what it does, how it is split, and the profile row it is
/// charged to.
#[derive(Clone, Copy, Debug)]
pub struct DecodeOp<'w> {
    pub kind: Kind<'w>,
    pub split: Split,
    pub charge: Op,
}

impl TeamOp for DecodeOp<'_> {
    fn split(&self) -> Split {
        self.split
    }
}

/// The operations of one decode step of the model `w`, split for `compute`'s thread count.
///
/// Profiling charges each operation the time thread 0 spent from the end of the previous one
/// to the end of this one, so the sum of partial products is charged to the operation that
/// does it: attention (QKV), residual (the two output products), GELU (MLP up).
pub fn schedule<'w>(w: &Gpt2Weights<'w>, compute: &Compute) -> Vec<DecodeOp<'w>> {
    let cfg = &w.config;
    let (c, h, vocab) = (
        cfg.n_embd as usize,
        cfg.mlp_hidden as usize,
        cfg.vocab_size as usize,
    );
    let op = |kind, split, charge| DecodeOp {
        kind,
        split,
        charge,
    };
    let matvec = |input, w: Weight<'w>, bias, charge| {
        debug_assert_eq!(w.in_features(), input_width(input, c, h));
        let blocks = Split::Blocks(compute.matvec_blocks(w));
        op(Kind::MatVec { input, w, bias }, blocks, charge)
    };
    let parts = |w| compute.matvec_parts(w);
    let columns = |n| Split::Blocks(compute.column_blocks(n).1);
    let mut ops = Vec::with_capacity(10 * w.layers.len() + 2);
    for (layer, lw) in w.layers.iter().enumerate() {
        let ln_1 = Kind::LayerNorm {
            w: lw.ln_1_w,
            b: lw.ln_1_b,
        };
        let ln_2 = Kind::LayerNorm {
            w: lw.ln_2_w,
            b: lw.ln_2_b,
        };
        let (qkv, attn_proj) = (Weight::new(lw.qkv_w), Weight::new(lw.attn_proj_w));
        let (fc, fc_proj) = (Weight::new(lw.fc_w), Weight::new(lw.fc_proj_w));
        let attention = Kind::Attention {
            layer,
            parts: parts(qkv),
        };
        ops.extend([
            op(ln_1, Split::EachThread, Op::LayerNorm),
            matvec(Input::Ln, qkv, lw.qkv_b, Op::QkvProjection),
            op(attention, Split::Blocks(cfg.n_head as usize), Op::Attention),
            matvec(Input::Att, attn_proj, lw.attn_proj_b, Op::OutputProjection),
            op(
                Kind::Residual {
                    parts: parts(attn_proj),
                },
                columns(c),
                Op::Residual,
            ),
            op(ln_2, Split::EachThread, Op::LayerNorm),
            matvec(Input::Ln, fc, lw.fc_b, Op::MlpUp),
            op(Kind::Gelu { parts: parts(fc) }, columns(h), Op::Gelu),
            matvec(Input::Fc, fc_proj, lw.fc_proj_b, Op::MlpDown),
            op(
                Kind::Residual {
                    parts: parts(fc_proj),
                },
                columns(c),
                Op::Residual,
            ),
        ]);
    }
    let ln_f = Kind::LayerNorm {
        w: w.ln_f_w,
        b: w.ln_f_b,
    };
    ops.push(op(ln_f, Split::EachThread, Op::LayerNorm));
    let logits = Kind::Logits { lm_head: w.lm_head };
    let vocab_blocks = Split::Blocks(compute.logit_blocks(vocab).1);
    ops.push(op(logits, vocab_blocks, Op::OutputLayer));
    ops
}

/// The width of a product's input: the rows of its weight.
fn input_width(input: Input, c: usize, h: usize) -> usize {
    match input {
        Input::Ln | Input::Att => c,
        Input::Fc => h,
    }
}

/// The buffers a decode step reads and writes, shared by the team (shapes for C = n_embd,
/// H = MLP width, V = vocabulary, `parts` the most row blocks of any product).
pub struct Buffers<'a> {
    pub x: Shared<'a>,        // (C) residual stream
    pub ln: Shared<'a>,       // (threads, C) each thread's layer-norm output
    pub qkv: Shared<'a>,      // (3C), only the queries are used
    pub att: Shared<'a>,      // (C)
    pub fc: Shared<'a>,       // (H)
    pub partials: Shared<'a>, // (parts, max(3C, H)) partial sums of a product
    pub scores: Shared<'a>,   // (n_head, n_ctx)
    pub kv: SharedKv<'a>,     // keys and values, (n_layer, n_head, n_ctx, D) each
    pub logits: Shared<'a>,   // (V)
}

/// The key and value stores as the team shares them: f32, or the f16 bits of an f16 cache
/// (`gpt2_weights::dtype`).
pub enum SharedKv<'a> {
    F32(Shared<'a, f32>, Shared<'a, f32>),
    F16(Shared<'a, u16>, Shared<'a, u16>),
}

impl<'a> SharedKv<'a> {
    pub fn new(store: &'a mut KvStore) -> Self {
        match store {
            KvStore::F32 { k, v } => SharedKv::F32(Shared::new(k), Shared::new(v)),
            KvStore::F16 { k, v } => SharedKv::F16(Shared::new(k), Shared::new(v)),
        }
    }
}

/// One decode step in progress: the position, the buffers, and what it runs on.
pub struct Step<'a> {
    pub compute: &'a Compute,
    pub config: &'a Config,
    /// Position of the new token (the cache holds `0..pos`).
    pub pos: usize,
    pub bufs: Buffers<'a>,
}

impl Step<'_> {
    /// Does block `i` of `op` on thread `me` (for [`Split::EachThread`], `i` is `me`).
    pub fn work(&self, op: &DecodeOp<'_>, i: usize, me: usize) {
        let cfg = self.config;
        let (c, h) = (cfg.n_embd as usize, cfg.mlp_hidden as usize);
        let b = &self.bufs;
        let kern = self.compute.kernels;
        // SAFETY (every block below): the protocol in the module docs. Row `me` of `ln` belongs
        // to thread `me` for the whole step; `x`, `att`, `fc` and the partials are read only in
        // operations after the barrier that ended the operation writing them; each block writes
        // only ranges derived from its own index `i`.
        match op.kind {
            Kind::LayerNorm { w, b: bias } => {
                let (x, ln) = unsafe { (b.x.range(0..c), b.ln.range_mut(me * c..(me + 1) * c)) };
                kern.layernorm(ln, x, w, bias, cfg.layer_norm_eps);
            }
            Kind::MatVec { input, w, bias } => {
                let (x, part) = unsafe {
                    let x = match input {
                        Input::Ln => b.ln.range(me * c..(me + 1) * c),
                        Input::Att => b.att.range(0..c),
                        Input::Fc => b.fc.range(0..h),
                    };
                    (
                        x,
                        b.partials.range_mut(self.compute.matvec_block_range(w, i)),
                    )
                };
                self.compute.matvec_block(part, i, x, w, bias);
            }
            Kind::Attention { layer, parts } => self.attend(layer, parts, i),
            Kind::Residual { parts } => {
                self.sum_columns(&b.x, (parts, c), i, |out, sum| kern.add(out, sum))
            }
            Kind::Gelu { parts } => self.sum_columns(&b.fc, (parts, h), i, |out, sum| {
                out.copy_from_slice(sum);
                kern.gelu(out);
            }),
            Kind::Logits { lm_head } => {
                let vocab = cfg.vocab_size as usize;
                let (per, _) = self.compute.logit_blocks(vocab);
                let rows = i * per..((i + 1) * per).min(vocab);
                let lm = lm_head.row_range(rows.clone());
                let (ln, logits) =
                    unsafe { (b.ln.range(me * c..(me + 1) * c), b.logits.range_mut(rows)) };
                kern.dot_rows_any(logits, ln, lm);
            }
        }
    }

    /// Head `hd` of layer `layer`: sums the head's query, key and value out of the QKV
    /// partials (key and value into the cache at `pos`, rounded to its element), then attends.
    fn attend(&self, layer: usize, parts: usize, hd: usize) {
        match &self.bufs.kv {
            SharedKv::F32(k, v) => self.attend_in(layer, parts, hd, (k, v)),
            SharedKv::F16(k, v) => self.attend_in(layer, parts, hd, (k, v)),
        }
    }

    /// [`Step::attend`] on a cache of `E`s.
    fn attend_in<E: KvElement>(
        &self,
        layer: usize,
        parts: usize,
        hd: usize,
        (k_store, v_store): (&Shared<E>, &Shared<E>),
    ) {
        let cfg = self.config;
        let c = cfg.n_embd as usize;
        let shape = KvShape::new(c, cfg.n_head as usize, cfg.n_ctx as usize);
        let d = shape.head_dim;
        let at = layer * shape.layer_len() + shape.head_start(hd);
        let head = at..at + shape.n_ctx * d;
        let b = &self.bufs;
        let parts_len = parts * 3 * c;
        // SAFETY: see `work`; head `hd`'s columns of `qkv` and `att`, its cache block and its
        // scores are touched by the thread that claimed `hd` only, until the barrier.
        let (partials, q, k_head, v_head, scores, out) = unsafe {
            (
                b.partials.range(0..parts_len),
                b.qkv.range_mut(hd * d..(hd + 1) * d),
                k_store.range_mut(head.clone()),
                v_store.range_mut(head),
                b.scores.range_mut(hd * shape.n_ctx..(hd + 1) * shape.n_ctx),
                b.att.range_mut(hd * d..(hd + 1) * d),
            )
        };
        let new_row = self.pos * d..(self.pos + 1) * d;
        let compute = self.compute;
        let sum = |out: &mut [f32], col0| compute.sum_partials(out, partials, parts, 3 * c, col0);
        sum(q, hd * d);
        // The new key and value are summed in f32 into `out`, free until attention writes it.
        sum(out, c + hd * d);
        E::store(&mut k_head[new_row.clone()], out);
        sum(out, 2 * c + hd * d);
        E::store(&mut v_head[new_row], out);
        let cache = HeadCache {
            k: E::values(k_head),
            v: E::values(v_head),
        };
        attend_head(&compute.kernels, out, q, cache, scores, self.pos);
    }

    /// Column block `i` of `target` (`x` or `fc`): `finish(out, sum of the partials)` of a
    /// product with `parts` partial outputs of `n` values, summed 64 columns at a time on the
    /// stack.
    fn sum_columns(
        &self,
        target: &Shared,
        (parts, n): (usize, usize),
        i: usize,
        finish: impl Fn(&mut [f32], &[f32]),
    ) {
        let (per, _) = self.compute.column_blocks(n);
        let parts_len = parts * n;
        let b = &self.bufs;
        // SAFETY: see `work`; column block `i` of the target is this thread's alone.
        let (partials, out) = unsafe {
            (
                b.partials.range(0..parts_len),
                target.range_mut(i * per..((i + 1) * per).min(n)),
            )
        };
        let mut sum = [0.0f32; 64];
        for (j, chunk) in out.chunks_mut(64).enumerate() {
            let s = &mut sum[..chunk.len()];
            self.compute
                .sum_partials(s, partials, parts, n, i * per + j * 64);
            finish(chunk, s);
        }
    }
}

/// `out = x @ w + bias` the way a decode step computes it: the weight's row blocks claimed by
/// a team of every thread of the pool, the partials (if any) summed in block order. For the criterion
/// benchmarks, so that they time the path decode takes; the buffers are made once, so a call
/// allocates nothing.
pub struct TeamProduct {
    team: Team,
    /// (threads, K): every thread's input row, as a decode step's layer norm leaves it.
    ln: Vec<f32>,
    /// (parts, N)
    partials: Vec<f32>,
    /// Only `n_embd` (the width of an `ln` row) matters to a product.
    config: Config,
}

impl TeamProduct {
    /// For products of a weight with `k` inputs and `n` outputs on `compute`'s pool.
    pub fn new(compute: &Compute, k: usize, n: usize) -> Self {
        TeamProduct {
            team: Team::new(compute.threads(), 1),
            ln: vec![0.0; compute.threads() * k],
            // The most partials either layout leaves.
            partials: vec![0.0; compute.matvec_split(k).1 * n],
            config: Config {
                n_layer: 1,
                n_head: 1,
                n_embd: k as u32,
                vocab_size: 0,
                n_ctx: 1,
                mlp_hidden: k as u32,
                layer_norm_eps: 1e-5,
                tied_output: true,
            },
        }
    }

    /// `out (N) = x (K) @ w + bias`.
    pub fn run(
        &mut self,
        compute: &Compute,
        out: &mut [f32],
        x: &[f32],
        w: Weight<'_>,
        bias: &[f32],
    ) {
        let (k, n) = (w.in_features(), w.out_features());
        let product = DecodeOp {
            kind: Kind::MatVec {
                input: Input::Ln,
                w,
                bias,
            },
            split: Split::Blocks(compute.matvec_blocks(w)),
            charge: Op::MlpUp,
        };
        for row in self.ln.chunks_exact_mut(k) {
            row.copy_from_slice(x);
        }
        self.team.reset_for(compute.threads());
        {
            let empty = || Shared::new(&mut []);
            let step = Step {
                compute,
                config: &self.config,
                pos: 0,
                bufs: Buffers {
                    x: empty(),
                    ln: Shared::new(&mut self.ln),
                    qkv: empty(),
                    att: empty(),
                    fc: empty(),
                    partials: Shared::new(&mut self.partials),
                    scores: empty(),
                    kv: SharedKv::F32(empty(), empty()),
                    logits: empty(),
                },
            };
            let team = &self.team;
            compute.pool().broadcast(|ctx| {
                let me = ctx.index();
                team.run(me, &[product], |op, i| step.work(op, i, me), |_| {});
            });
        }
        compute.sum_partials(out, &self.partials, compute.matvec_parts(w), n, 0);
    }
}
