//! Synthetic GPT-2 models: random weights in the exact shapes of a real size, GPT-2's real
//! tokenizer, no download.
//!
//! Their text is noise, but their cost is exactly that of the real model, and their greedy
//! decoding is a demanding equivalence test, because the weights are scaled so that:
//!
//! - **the continuation depends on the whole network.** Every linear weight has standard deviation
//!   `1/sqrt(fan_in)`, so each projection keeps unit variance and every block adds a contribution
//!   of the same order as the residual stream, while the embeddings are small (std 0.1). With
//!   GPT-2's real init (std 0.02 everywhere) a random model's residual is dominated by the input
//!   embedding, and with tied embeddings it just echoes the last token. Left at unit gains, a
//!   random GPT-2 still settles on one token, because attention averages the context (which
//!   changes slowly) and GELU's non-zero mean (0.28) adds the same vector to every position. So
//!   the MLP branch, a function of the current position, is made to dominate (its output
//!   projection has gain 2, attention's 0.5, [`MLP_OUT_GAIN`], [`ATTENTION_OUT_GAIN`]), the MLP
//!   down-projection's bias cancels GELU's mean, and queries and keys get a gain of 1.5
//!   ([`QK_GAIN`]) so that attention is selective rather than uniform.
//! - **it is numerically stable.** Much sharper attention (a Q/K gain of 4.5 was tried) also
//!   gives varied text, but makes the random network chaotic: the tiny rounding differences
//!   between correct backends grow layer by layer, to 0.15 in the logits at a 120-token context
//!   and 0.7 at 500, enough to flip greedy choices. With the gains above the difference between
//!   `naive` and `simd-kv` stays about 1e-4 from 8 to 500 positions on GPT-2 small. Tests in
//!   `backends/tests/synthetic_models.rs` check variety (no echo, a continuation that changes
//!   with the first prompt token, decisive top-1/top-2 gaps) and that the drift stays small at
//!   long contexts.
//! - **greedy choices are decisive.** The final layer norm's scale is set so that the logits have
//!   a standard deviation of about [`LOGIT_STD`]; the expected gap between the top two of 50,257
//!   such logits is then about 2, eight orders of magnitude above f32 rounding, so backends that
//!   sum in different orders still agree on every token (a near-tie is possible, and reported by
//!   the harness, but rare).
//!
//! Layer-norm scales are `1 + U(±0.1)`, biases small. Values are drawn uniformly (mean 0, the
//! stated std) from a xoshiro256++ stream seeded per tensor from `(seed, tensor name)`, so a file
//! depends only on the size and seed: same seed, byte-identical file, on any machine.

use std::path::{Path, PathBuf};

use gpt2_weights::{Config, Dtype, Provenance, WeightWriter};

use crate::error::ExportError;
use crate::r50k::{GPT2_VOCAB_SIZE, gpt2_tokenizer_data};

/// Target standard deviation of the logits of a synthetic model.
pub const LOGIT_STD: f32 = 8.0;
/// Standard deviation of the token and position embeddings.
const EMBEDDING_STD: f32 = 0.1;
/// Gain of the query and key columns of the fused QKV projection: attention scores get a
/// standard deviation of about 2, so heads prefer some positions over others instead of
/// averaging the context, without the chaotic sensitivity that much sharper attention brings.
const QK_GAIN: f32 = 1.5;
/// Gains of the two residual branches' output projections: the per-position MLP dominates the
/// context-mixing attention. See the module docs.
const ATTENTION_OUT_GAIN: f32 = 0.5;
const MLP_OUT_GAIN: f32 = 2.0;
/// E[gelu(z)] for z ~ N(0, 1).
const GELU_MEAN: f32 = 0.2821;

/// The sizes `--synthetic` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyntheticSize {
    /// 124M parameters: 12 layers, 12 heads, 768 wide.
    Gpt2,
    /// 355M: 24 layers, 16 heads, 1024 wide.
    Gpt2Medium,
    /// 774M: 36 layers, 20 heads, 1280 wide.
    Gpt2Large,
    /// 1558M: 48 layers, 25 heads, 1600 wide.
    Gpt2Xl,
    /// 82M: 6 layers, 12 heads, 768 wide.
    Distilgpt2,
    /// For tests: 3 layers, 4 heads, 60 wide (head size 15; neither a multiple of 8), context 128.
    Tiny,
}

impl SyntheticSize {
    pub fn name(self) -> &'static str {
        match self {
            SyntheticSize::Gpt2 => "gpt2",
            SyntheticSize::Gpt2Medium => "gpt2-medium",
            SyntheticSize::Gpt2Large => "gpt2-large",
            SyntheticSize::Gpt2Xl => "gpt2-xl",
            SyntheticSize::Distilgpt2 => "distilgpt2",
            SyntheticSize::Tiny => "tiny",
        }
    }

    pub fn config(self) -> Config {
        let (n_layer, n_head, n_embd, n_ctx) = match self {
            SyntheticSize::Gpt2 => (12, 12, 768, 1024),
            SyntheticSize::Gpt2Medium => (24, 16, 1024, 1024),
            SyntheticSize::Gpt2Large => (36, 20, 1280, 1024),
            SyntheticSize::Gpt2Xl => (48, 25, 1600, 1024),
            SyntheticSize::Distilgpt2 => (6, 12, 768, 1024),
            SyntheticSize::Tiny => (3, 4, 60, 128),
        };
        Config {
            n_layer,
            n_head,
            n_embd,
            vocab_size: GPT2_VOCAB_SIZE,
            n_ctx,
            mlp_hidden: 4 * n_embd,
            layer_norm_eps: 1e-5,
            tied_output: true,
        }
    }

    /// Default output path: `weights/synthetic-<size>-seed<N>.bin`, with `-<dtype>` before the
    /// extension when the dtype is not f32.
    pub fn default_path(self, seed: u64, dtype: Dtype) -> PathBuf {
        let name = format!("synthetic-{}-seed{seed}", self.name());
        crate::weights_dir().join(crate::dtype_file_name(&name, dtype))
    }
}

/// Writes a synthetic model of `size` to `out`; returns the path written.
pub fn export_synthetic(
    size: SyntheticSize,
    seed: u64,
    dtype: Dtype,
    out: &Path,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    write_synthetic(size.config(), size.name(), seed, dtype, out, progress)
}

/// Writes a synthetic model with an arbitrary `config` (tests use odd shapes), its matrices in
/// `dtype` (the f32 weights drawn from the seed, then converted: the same seed gives the same
/// model in every dtype, up to each dtype's rounding).
/// The config's vocabulary must be GPT-2's, since the file carries GPT-2's tokenizer.
pub fn write_synthetic(
    config: Config,
    name: &str,
    seed: u64,
    dtype: Dtype,
    out: &Path,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    let provenance = Provenance {
        model_name: format!("synthetic-{name}"),
        source: format!("synthetic:{name} seed={seed}"),
        exporter: crate::exporter_id(),
    };
    let tokenizer = gpt2_tokenizer_data();
    let dtypes = config.tensor_dtypes(dtype);
    let mut writer = WeightWriter::create(out, &config, &provenance, &tokenizer, &[], &dtypes)?;
    let plan: Vec<_> = writer.remaining().to_vec();
    let logit_scale = LOGIT_STD / (EMBEDDING_STD * (config.n_embd as f32).sqrt());
    let mut mlp_out_colsum: Vec<f32> = Vec::new();
    for (i, info) in plan.iter().enumerate() {
        let n: u64 = info.shape.iter().product();
        let mut rng = Xoshiro256pp::for_tensor(seed, &info.name);
        let name = info.name.as_str();
        let fan_in = info.shape[0] as f32;
        // (mean, std) of each tensor; see the module docs for why.
        let (mean, std) = if name == "wte.weight" || name == "wpe.weight" {
            (0.0, EMBEDDING_STD)
        } else if name == "ln_f.weight" {
            (logit_scale, 0.1 * logit_scale)
        } else if name.ends_with("ln_1.weight") || name.ends_with("ln_2.weight") {
            (1.0, 0.1 / 3f32.sqrt())
        } else if name.ends_with(".bias") {
            (0.0, 0.02)
        } else if name.ends_with("attn.c_proj.weight") {
            (0.0, ATTENTION_OUT_GAIN / fan_in.sqrt())
        } else if name.ends_with("mlp.c_proj.weight") {
            (0.0, MLP_OUT_GAIN / fan_in.sqrt())
        } else {
            // Linear weights, [in, out]: unit-variance outputs for unit-variance inputs.
            (0.0, 1.0 / fan_in.sqrt())
        };
        let mut data: Vec<f32> = (0..n)
            .map(|_| mean + std * rng.uniform_unit_std())
            .collect();
        if name.ends_with("attn.c_attn.weight") {
            // Columns are Q | K | V; sharpen the scores, leave the values at unit variance.
            let cols = info.shape[1] as usize;
            for row in data.chunks_exact_mut(cols) {
                for v in &mut row[..2 * cols / 3] {
                    *v *= QK_GAIN;
                }
            }
        } else if name.ends_with("mlp.c_proj.weight") {
            // Remember each output's column sum, for the bias that follows.
            let cols = info.shape[1] as usize;
            mlp_out_colsum = vec![0.0; cols];
            for row in data.chunks_exact(cols) {
                for (sum, v) in mlp_out_colsum.iter_mut().zip(row) {
                    *sum += v;
                }
            }
        } else if name.ends_with("mlp.c_proj.bias") {
            // Cancel the constant part of the MLP output: E[gelu(z)] for z ~ N(0, 1) times
            // each column sum of the down-projection.
            for (b, sum) in data.iter_mut().zip(&mlp_out_colsum) {
                *b -= GELU_MEAN * sum;
            }
        }
        writer.write_tensor(&info.name, &data)?;
        progress(i + 1, plan.len());
    }
    Ok(writer.finish()?)
}

/// xoshiro256++ (Blackman and Vigna): small, fast, and fully specified, so the files it
/// produces do not change when a dependency's RNG does.
struct Xoshiro256pp {
    s: [u64; 4],
}

impl Xoshiro256pp {
    /// A stream for one tensor: the seed and the tensor's name (FNV-1a) mixed by SplitMix64.
    fn for_tensor(seed: u64, name: &str) -> Self {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut sm = seed ^ h.rotate_left(17);
        let mut next = || {
            sm = sm.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Xoshiro256pp {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform on [-sqrt(3), sqrt(3)): mean 0, standard deviation 1.
    fn uniform_unit_std(&mut self) -> f32 {
        let u = (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
        (2.0 * u - 1.0) * 3f32.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stream_is_stable() {
        // Pin the stream: a change here changes every synthetic file.
        let mut r = Xoshiro256pp::for_tensor(0, "wte.weight");
        let first: Vec<u64> = (0..2).map(|_| r.next_u64()).collect();
        let mut again = Xoshiro256pp::for_tensor(0, "wte.weight");
        assert_eq!(first, vec![again.next_u64(), again.next_u64()]);
        let mut other = Xoshiro256pp::for_tensor(1, "wte.weight");
        assert_ne!(first[0], other.next_u64());
    }

    #[test]
    fn uniform_has_unit_std() {
        let mut r = Xoshiro256pp::for_tensor(7, "x");
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| f64::from(r.uniform_unit_std())).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 0.01, "std {}", var.sqrt());
    }

    #[test]
    fn presets_are_valid_and_sized_like_gpt2() {
        for (size, params_m) in [
            (SyntheticSize::Gpt2, 124),
            (SyntheticSize::Gpt2Medium, 354),
            (SyntheticSize::Gpt2Large, 774),
            (SyntheticSize::Gpt2Xl, 1557),
            (SyntheticSize::Distilgpt2, 81),
        ] {
            let c = size.config();
            c.validate().unwrap();
            assert_eq!(c.parameter_count() / 1_000_000, params_m, "{size:?}");
        }
        let tiny = SyntheticSize::Tiny.config();
        assert_ne!(tiny.n_embd % 8, 0);
        assert_ne!(tiny.head_dim() % 8, 0);
    }
}
