//! How close simd-kv's decode comes to the memory bandwidth of the same moment, per weight file.
//!
//! On a shared machine the read bandwidth swings by tens of percent from minute to minute, so a
//! decode rate measured now and a bandwidth measured a minute ago make a noisy ratio. This
//! interleaves the two in one process: each round is, for every file in turn, one all-thread
//! read pass over that file's weights (the probe behind `gpt2-bench roofline`) followed by
//! `STEPS` simd-kv decode steps after a prompt of `prompt_tokens` tokens. It prints, per file,
//! the median, best and worst of each in GB/s (decode: the file's weight bytes read per token x
//! tok/s; the KV cache that attention reads on top, `2 x n_layer x positions x n_embd` values
//! of 4 bytes, 2 in an f16 cache, is not counted; the 5th argument chooses the cache as
//! `--kv-cache` does, f32 by default), and the decode tok/s of each file against the first file's, median
//! of the per-round ratios: several files of one model (f32, f16, bf16, q8_0) measured seconds
//! apart in every round, so the machine's swings fall on all of them alike.
//!
//! ```sh
//! cargo run --release -p gpt2-backends --example decode_vs_read -- \
//!     weights/synthetic-gpt2-seed0.bin[,weights/synthetic-gpt2-seed0-q8_0.bin,...] [threads] [rounds] [prompt_tokens] [f32|f16|auto]
//! ```

use std::time::Instant;

use gpt2_backends::kernels::{Compute, Kernels, probe};
use gpt2_backends::simd::SimdKvEngine;
use gpt2_backends::{Engine, Forward, KvCache};
use gpt2_weights::WeightFile;

const STEPS: u32 = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let paths = args
        .get(1)
        .map_or("weights/synthetic-gpt2-seed0.bin", String::as_str);
    let number = |i: usize, default: usize| {
        args.get(i).map_or(default, |s| {
            s.parse().unwrap_or_else(|_| {
                eprintln!("error: argument {i} must be a whole number, got {s:?}");
                std::process::exit(2)
            })
        })
    };
    let (threads, rounds, prompt) = (number(2, 2), number(3, 30).max(1), number(4, 5).max(1));
    let kv_cache: KvCache = args
        .get(5)
        .map_or(Ok(KvCache::F32), |s| s.parse())
        .unwrap_or_else(|e| {
            eprintln!("error: argument 5: {e}");
            std::process::exit(2)
        });
    if let Err(e) = run(paths, threads, rounds, prompt, kv_cache) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Median, best and worst.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1], v[0])
}

fn run(
    paths: &str,
    threads: usize,
    rounds: usize,
    prompt_tokens: usize,
    kv_cache: KvCache,
) -> Result<(), Box<dyn std::error::Error>> {
    let files = paths
        .split(',')
        .map(WeightFile::open)
        .collect::<Result<Vec<_>, _>>()?;
    let compute = Compute::new(Kernels::detect(), threads, 0)?;
    let mut engines = Vec::new();
    for file in &files {
        let config = file.config();
        if prompt_tokens + STEPS as usize > config.n_ctx as usize {
            return Err(format!("prompt_tokens + {STEPS} exceeds n_ctx {}", config.n_ctx).into());
        }
        let w = file.gpt2()?;
        let kv = kv_cache.resolve(&w);
        let w = gpt2_backends::Model::from(w).with_kv_cache(kv);
        let engine = SimdKvEngine::new(w, Kernels::detect(), threads)?.into_engine();
        engines.push(engine);
    }
    let prompt: Vec<u32> = (0..prompt_tokens as u32).map(|i| 1 + i % 1000).collect();
    // (file, round)
    let mut read = vec![Vec::new(); files.len()];
    let mut decode = vec![Vec::new(); files.len()];
    let mut tok_per_s = vec![Vec::new(); files.len()];
    let bytes_per_token: Vec<f64> = files.iter().map(|f| f.bytes_per_token() as f64).collect();
    // Round 0 is a warm-up, not counted: it faults the mapped files in and grows the buffers.
    for round in 0..=rounds {
        for (i, (file, engine)) in files.iter().zip(&mut engines).enumerate() {
            let read_gb_per_s = probe::read_bandwidth(&compute, file.data_f32()?, 1) / 1e9;
            engine.reset();
            engine.prefill(&prompt)?;
            let start = Instant::now();
            for s in 0..STEPS {
                engine.step(100 + s)?;
            }
            let rate = f64::from(STEPS) / start.elapsed().as_secs_f64();
            if round > 0 {
                read[i].push(read_gb_per_s);
                tok_per_s[i].push(rate);
                decode[i].push(rate * bytes_per_token[i] / 1e9);
            }
        }
    }
    println!(
        "{rounds} rounds, {threads} threads, {}, {prompt_tokens}-token prompt (per file: one read pass, then {STEPS} simd-kv decode steps; one warm-up round before)",
        compute.kernels.isa().name()
    );
    let config = files[0].config();
    let positions = prompt_tokens as u64 + u64::from(STEPS) / 2;
    let kv_values = 2 * u64::from(config.n_layer) * positions * u64::from(config.n_embd);
    println!(
        "attention also reads about {:.1} MB of KV cache per step at these positions ({:.1} MB in f16; cache: {kv_cache}; not counted below)",
        kv_values as f64 * 4.0 / 1e6,
        kv_values as f64 * 2.0 / 1e6
    );
    for (i, file) in files.iter().enumerate() {
        let (read_med, read_best, read_worst) = stats(&read[i]);
        let (dec_med, dec_best, dec_worst) = stats(&decode[i]);
        let ratios: Vec<f64> = (0..rounds)
            .map(|r| tok_per_s[i][r] / tok_per_s[0][r])
            .collect();
        let (ratio_med, ratio_best, ratio_worst) = stats(&ratios);
        println!("{}", file.path().display());
        println!(
            "  read pass GB/s: median {read_med:.1}, best {read_best:.1}, worst {read_worst:.1}"
        );
        println!(
            "  decode    GB/s: median {dec_med:.1}, best {dec_best:.1}, worst {dec_worst:.1} ({:.1} tok/s median)",
            stats(&tok_per_s[i]).0
        );
        println!(
            "  decode / read: {:.0}% of the median, {:.0}% of the best",
            100.0 * dec_med / read_med,
            100.0 * dec_best / read_best
        );
        if i > 0 {
            println!(
                "  tok/s against the first file, per round: median {ratio_med:.2}x, best {ratio_best:.2}x, worst {ratio_worst:.2}x"
            );
        }
    }
    Ok(())
}
