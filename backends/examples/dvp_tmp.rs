//! Interleaves one read-probe pass and 8 simd-kv decode steps, 30 rounds: GB/s of each.
use gpt2_backends::Engine;
use gpt2_backends::kernels::{Compute, Kernels, probe};
use gpt2_backends::simd::SimdKvEngine;
use std::time::Instant;
fn main() {
    let f = gpt2_weights::WeightFile::open("weights/synthetic-gpt2-seed0.bin").unwrap();
    let w = f.gpt2().unwrap();
    let compute = Compute::new(Kernels::detect(), 2, 3072).unwrap();
    let mut eng = SimdKvEngine::new(w.clone(), Kernels::detect(), 2).unwrap();
    let data = f.data_f32().unwrap();
    let bytes_per_tok = 494_616_576f64;
    let (mut pr, mut de) = (vec![], vec![]);
    for _ in 0..30 {
        pr.push(probe::read_bandwidth(&compute, data, 1) / 1e9);
        eng.reset();
        eng.prefill(&[1, 2, 3, 4, 5]).unwrap();
        let t0 = Instant::now();
        for i in 0..8 {
            eng.step(100 + i).unwrap();
        }
        de.push(8.0 * bytes_per_tok / t0.elapsed().as_secs_f64() / 1e9);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[v.len() - 1], v[0])
    };
    println!("probe  median/best/worst {:?}", med(&mut pr));
    println!("decode median/best/worst {:?}", med(&mut de));
}
