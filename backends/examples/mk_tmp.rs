#![allow(clippy::all, unsafe_op_in_unsafe_fn)]
use std::arch::x86_64::*;
use std::time::Instant;

#[target_feature(enable = "avx2,fma")]
unsafe fn tiles(
    out: &mut [f32],
    a: &[f32],
    panel: &[f32],
    groups: usize,
    kc: usize,
    width: usize,
    k: usize,
) {
    for g in 0..groups {
        let o = out.as_mut_ptr().add(g * 6 * width);
        let ap = a.as_ptr().add(g * k * 6);
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for r in 0..6 {
            acc[r][0] = _mm256_loadu_ps(o.add(r * width));
            acc[r][1] = _mm256_loadu_ps(o.add(r * width + 8));
        }
        let mut wp = panel.as_ptr();
        for kk in 0..kc {
            let w0 = _mm256_loadu_ps(wp);
            let w1 = _mm256_loadu_ps(wp.add(8));
            let ak = ap.add(kk * 6);
            for r in 0..6 {
                let x = _mm256_broadcast_ss(&*ak.add(r));
                acc[r][0] = _mm256_fmadd_ps(x, w0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(x, w1, acc[r][1]);
            }
            wp = wp.add(16);
        }
        for r in 0..6 {
            _mm256_storeu_ps(o.add(r * width), acc[r][0]);
            _mm256_storeu_ps(o.add(r * width + 8), acc[r][1]);
        }
    }
}

fn main() {
    let kc = 256;
    let k = 768;
    let width = 1536;
    for groups in [1usize, 4, 22] {
        let a: Vec<f32> = (0..groups * k * 6).map(|i| (i % 7) as f32 * 1e-3).collect();
        let panel: Vec<f32> = (0..kc * 16).map(|i| (i % 5) as f32 * 1e-3).collect();
        let mut out = vec![0.0f32; groups * 6 * width];
        let flops = (2 * groups * 6 * 16 * kc) as f64;
        let reps = (3e9 / flops) as usize;
        let mut best = 0.0f64;
        for _ in 0..5 {
            let t0 = Instant::now();
            for rep in 0..reps {
                let col = if std::env::var("MOVE").is_ok() {
                    (rep % 96) * 16
                } else {
                    0
                };
                unsafe { tiles(&mut out[col..], &a, &panel, groups, kc, width, k) };
            }
            best = best.max(reps as f64 * flops / t0.elapsed().as_secs_f64() / 1e9);
        }
        println!(
            "groups={groups}: {best:.1} GFLOP/s microkernel only, 1 thread ({})",
            out[3]
        );
    }
}
