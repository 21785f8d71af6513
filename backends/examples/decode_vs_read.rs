//! How close simd-kv's decode comes to the memory bandwidth of the same moment.
//!
//! On a shared machine the read bandwidth swings by tens of percent from minute to minute, so a
//! decode rate measured now and a bandwidth measured a minute ago make a noisy ratio. This
//! interleaves the two in one process: each round is one all-thread read pass over the model's
//! weights (the probe behind `gpt2-bench --roofline`) followed by `STEPS` simd-kv decode steps,
//! and it prints the median, best and worst of each in GB/s (decode: weight bytes read per
//! token x tok/s; the few KB of KV cache at these positions are not counted).
//!
//! ```sh
//! cargo run --release -p gpt2-backends --example decode_vs_read -- weights/synthetic-gpt2-seed0.bin [threads] [rounds]
//! ```

use std::time::Instant;

use gpt2_backends::Engine;
use gpt2_backends::kernels::{Compute, Kernels, probe};
use gpt2_backends::simd::SimdKvEngine;

const STEPS: u32 = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
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
    let (threads, rounds) = (number(2, 2), number(3, 30).max(1));
    if let Err(e) = run(path, threads, rounds) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(path: &str, threads: usize, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let file = gpt2_weights::WeightFile::open(path)?;
    let weights = file.gpt2()?;
    let config = file.config();
    // Every parameter once per token, except the unused rows of the position embedding.
    let bytes_per_token =
        (config.parameter_count() - u64::from(config.n_ctx - 1) * u64::from(config.n_embd)) * 4;
    let compute = Compute::new(Kernels::detect(), threads, 0)?;
    let mut engine = SimdKvEngine::new(weights.clone(), Kernels::detect(), threads)?;
    let data = file.data_f32()?;
    let (mut read, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        read.push(probe::read_bandwidth(&compute, data, 1) / 1e9);
        engine.reset();
        engine.prefill(&[1, 2, 3, 4, 5])?;
        let start = Instant::now();
        for i in 0..STEPS {
            engine.step(100 + i)?;
        }
        let tok_per_s = f64::from(STEPS) / start.elapsed().as_secs_f64();
        decode.push(tok_per_s * bytes_per_token as f64 / 1e9);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1], v[0])
    };
    let (read_med, read_best, read_worst) = stats(&mut read);
    let (dec_med, dec_best, dec_worst) = stats(&mut decode);
    println!(
        "{rounds} rounds, {threads} threads, {} (one read pass, then {STEPS} simd-kv decode steps)",
        compute.kernels.isa().name()
    );
    println!("read pass   GB/s: median {read_med:.1}, best {read_best:.1}, worst {read_worst:.1}");
    println!("decode      GB/s: median {dec_med:.1}, best {dec_best:.1}, worst {dec_worst:.1}");
    println!(
        "decode / read: {:.0}% of the median, {:.0}% of the best",
        100.0 * dec_med / read_med,
        100.0 * dec_best / read_best
    );
    Ok(())
}
