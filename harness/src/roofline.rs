//! The machine's limits, measured in the same run as the benchmark, and what they imply for the
//! loaded model.
//!
//! - Decode at batch 1 reads every weight once per token, so it can go no faster than
//!   `read bandwidth / weight bytes per token` (the decode roofline). The bandwidth is measured
//!   with all threads reading the model's own mapped tensor data, the bytes decode reads (for a
//!   model small enough to stay in cache, that gives a cache-speed roofline, as it should).
//! - Prefill is a sequence of matrix-matrix products, bound by arithmetic: its FLOP rate is
//!   compared with the peak f32 FMA rate measured with all threads on register-only FMAs, and
//!   with the best matrix-matrix rate at GPT-2's shape (our kernel or matrixmultiply, measured
//!   here too).
//!
//! Both probes use the same kernels and thread pool as the `simd` backends.

use gpt2_backends::kernels::{Compute, Kernels, probe};
use gpt2_weights::{Config, WeightFile};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roofline {
    pub threads: usize,
    pub isa: String,
    /// Best of several all-thread passes over the model's mapped tensor data, GB/s (1e9 bytes).
    pub read_gb_per_s: f64,
    /// Register-only f32 FMA throughput with every thread busy, GFLOP/s.
    pub peak_gflops: f64,
    /// Best matrix-matrix rate at prefill's shape (128 x C x 4C), ours and matrixmultiply's.
    pub gemm_simd_gflops: f64,
    pub gemm_matrixmultiply_gflops: f64,
    /// The GEMM probe's shape: (128, gemm_k) x (gemm_k, gemm_n).
    pub gemm_k: usize,
    pub gemm_n: usize,
    /// Bytes of weights one decode step reads in the file's dtypes (every weight once; one row
    /// of wpe): `WeightFile::bytes_per_token`.
    pub weight_bytes_per_token: u64,
    /// `read_gb_per_s / weight_bytes_per_token`: the fastest decode this machine allows.
    pub decode_roofline_tok_per_s: f64,
}

/// FLOPs of `positions` new positions that together attend to `attended_pairs` (query, key)
/// pairs per layer and head: the matrix products of every block for every position (2 per
/// multiply-add), attention (QK^T and PV: 4 C per pair, summed over heads), and the output layer
/// for the last position only.
fn forward_flops(c: &Config, positions: f64, attended_pairs: f64) -> f64 {
    let (e, h, l, v) = (
        f64::from(c.n_embd),
        f64::from(c.mlp_hidden),
        f64::from(c.n_layer),
        f64::from(c.vocab_size),
    );
    let per_position = 2.0 * (e * 3.0 * e + e * e + 2.0 * e * h);
    l * (positions * per_position + 4.0 * e * attended_pairs) + 2.0 * e * v
}

/// FLOPs of a prefill of `t` positions (causal: t(t+1)/2 attended pairs per head).
pub fn prefill_flops(c: &Config, t: usize) -> f64 {
    let t = t as f64;
    forward_flops(c, t, t * (t + 1.0) / 2.0)
}

/// FLOPs of one decode step with a KV cache at context length `context`: one position attending
/// to every cached one.
pub fn cached_step_flops(c: &Config, context: usize) -> f64 {
    forward_flops(c, 1.0, context as f64)
}

pub fn measure(file: &WeightFile, threads: usize) -> anyhow::Result<Roofline> {
    let config = file.config();
    // The machine's limits, measured with the best kernels this CPU has whatever
    // GPT2_BENCH_ISA forces on the backends: a probe slowed with them would divide a forced
    // slowdown away in every normalized figure and in the --baseline gate.
    let compute =
        Compute::new(Kernels::best_available(), threads, 0).map_err(anyhow::Error::msg)?;
    let read = probe::read_bandwidth(&compute, file.data_f32()?, 10);
    let peak = probe::peak_flops(&compute, 0.3);
    let c = config.n_embd as usize;
    let (gemm_simd, gemm_mm) = probe::gemm_rates(&compute, 128, c, 4 * c, 5);
    let bytes = file.bytes_per_token();
    Ok(Roofline {
        threads: compute.threads(),
        isa: compute.kernels.isa().name().to_string(),
        read_gb_per_s: read / 1e9,
        peak_gflops: peak / 1e9,
        gemm_simd_gflops: gemm_simd / 1e9,
        gemm_matrixmultiply_gflops: gemm_mm / 1e9,
        gemm_k: c,
        gemm_n: 4 * c,
        weight_bytes_per_token: bytes,
        decode_roofline_tok_per_s: read / bytes as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt2_small() -> Config {
        gpt2_export::SyntheticSize::Gpt2.config()
    }

    /// In f32, every parameter but 1023 of wpe's 1024 rows, 4 bytes each; in f16 the matrices
    /// take 2 bytes and in q8_0 34 bytes per 32 values, the rest staying f32.
    #[test]
    fn bytes_per_token_follow_the_file_dtypes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.bin");
        let size = gpt2_export::SyntheticSize::Distilgpt2;
        let c = size.config();
        let (e, h, v) = (768u64, 3072u64, 50257u64);
        let matrices = v * e + 6 * (e * 3 * e + e * e + 2 * e * h);
        let other = c.parameter_count() - matrices - 1023 * e;
        for (dtype, matrix_bytes) in [
            (gpt2_weights::Dtype::F32, matrices * 4),
            (gpt2_weights::Dtype::F16, matrices * 2),
            (gpt2_weights::Dtype::Q8_0, matrices / 32 * 34),
        ] {
            gpt2_export::synthetic::export_synthetic(size, 0, dtype, &path, &|_, _| {}).unwrap();
            let f = WeightFile::open(&path).unwrap();
            assert_eq!(f.bytes_per_token(), matrix_bytes + other * 4, "{dtype}");
        }
    }

    #[test]
    fn prefill_flops_of_one_position() {
        // One position: 2 * 85M block multiply-adds + attention over 1 pair + output layer.
        let f = prefill_flops(&gpt2_small(), 1);
        let blocks = 12.0 * 2.0 * (768.0 * 2304.0 + 768.0 * 768.0 + 2.0 * 768.0 * 3072.0);
        let attention = 12.0 * 2.0 * 2.0 * 768.0;
        let head = 2.0 * 768.0 * 50257.0;
        assert!((f - (blocks + attention + head)).abs() < 1.0);
    }
}
