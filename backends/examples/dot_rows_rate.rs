//! Single-thread rate of the output-layer / decode dot-product kernel in every dtype, with the
//! matrix in L2 (the arithmetic limit) and streaming from memory.
//!
//! `cargo run --release -p gpt2-backends --example dot_rows_rate`
use gpt2_backends::kernels::Kernels;
use gpt2_weights::Dtype;
use gpt2_weights::dtype::OwnedMatrix;
use std::time::Instant;

fn main() {
    // GPT2_BENCH_ISA chooses the kernels; a name this CPU lacks is an error, not a fallback.
    let k = match Kernels::from_env() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(3);
        }
    };
    println!("kernels: {}", k.isa().name());
    let c = 768;
    for (label, rows, copies) in [("in L2", 256usize, 1usize), ("streaming", 4096, 24)] {
        for dtype in Dtype::ALL {
            let v: Vec<f32> = (0..rows * c)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let mats: Vec<OwnedMatrix> = (0..copies)
                .map(|_| OwnedMatrix::encode(&v, rows, c, dtype).unwrap())
                .collect();
            let x: Vec<f32> = (0..c).map(|i| i as f32 / c as f32).collect();
            let mut out = vec![0.0f32; rows];
            let reps = 200_000_000 / (rows * c);
            let start = Instant::now();
            for i in 0..reps {
                k.dot_rows_any(&mut out, &x, mats[i % copies].matrix());
            }
            let secs = start.elapsed().as_secs_f64();
            let macs = (reps * rows * c) as f64;
            let bytes = (reps * mats[0].matrix().byte_len()) as f64;
            println!(
                "{label:10} {dtype:5} {:6.2} GMAC/s {:6.2} GB/s",
                macs / secs / 1e9,
                bytes / secs / 1e9
            );
        }
    }
}
