use std::arch::x86_64::*;
use std::time::Instant;

const F: &str = "";
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn ld16(p: *const u16) -> __m256 { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// one row: 4 acc x 8 lanes, step 32 (c multiple of 32 assumed)
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn dot1(x: *const f32, p: *const u16, c: usize) -> f32 {
    let mut a = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= c {
        for k in 0..4 { a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(i + 8 * k)), ld16(p.add(i + 8 * k)), a[k]); }
        i += 32;
    }
    hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn v_one_avx2(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    for (v, o) in out.iter_mut().enumerate() {
        let p = rows.as_ptr().add(v * c);
        let xp = x.as_ptr();
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= c {
            for k in 0..4 { a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i + 8 * k)), _mm256_cvtph_ps(_mm_loadu_si128(p.add(i + 8 * k) as *const __m128i)), a[k]); }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        let lo = _mm256_castps256_ps128(s);
        let hi = _mm256_extractf128_ps(s, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        *o = _mm_cvtss_f32(s);
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn v_one(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    for (v, o) in out.iter_mut().enumerate() { *o = dot1(x.as_ptr(), rows.as_ptr().add(v * c), c); }
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn v_one_pf<const AHEAD: usize>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let xp = x.as_ptr();
    for (v, o) in out.iter_mut().enumerate() {
        let p = rows.as_ptr().add(v * c);
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= c {
            _mm_prefetch((p.add(i) as *const i8).wrapping_add(AHEAD), _MM_HINT_T0);
            for k in 0..4 { a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i + 8 * k)), ld16(p.add(i + 8 * k)), a[k]); }
            i += 32;
        }
        *o = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn v_multi<const R: usize, const PF: bool, const AHEAD: usize>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let xp = x.as_ptr();
    let mut v = 0;
    while v + R <= out.len() {
        let p = rows.as_ptr().add(v * c);
        let mut a = [[_mm256_setzero_ps(); 4]; R];
        let ahead = (p as *const i8).wrapping_add(R * c * 2 + AHEAD);
        let mut i = 0;
        while i + 32 <= c {
            if PF { for q in 0..R { _mm_prefetch(ahead.wrapping_add(i * 2 * R + 64 * q), _MM_HINT_T0); } }
            for k in 0..4 {
                let xv = _mm256_loadu_ps(xp.add(i + 8 * k));
                for r in 0..R { a[r][k] = _mm256_fmadd_ps(xv, ld16(p.add(r * c + i + 8 * k)), a[r][k]); }
            }
            i += 32;
        }
        for r in 0..R { out[v + r] = hsum(_mm256_add_ps(_mm256_add_ps(a[r][0], a[r][1]), _mm256_add_ps(a[r][2], a[r][3]))); }
        v += R;
    }
    for vv in v..out.len() { out[vv] = dot1(xp, rows.as_ptr().add(vv * c), c); }
}


#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn ld16z(p: *const u16) -> __m512 { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }

/// same bits as dot1: accA = [acc0|acc1], accB = [acc2|acc3]
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn finish_z(a: __m512, b: __m512) -> f32 {
    let s01 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    let s23 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1)));
    hsum(_mm256_add_ps(s01, s23))
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn z_multi<const R: usize, const PF: bool, const AHEAD: usize>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let xp = x.as_ptr();
    let mut v = 0;
    while v + R <= out.len() {
        let p = rows.as_ptr().add(v * c);
        let mut a = [[_mm512_setzero_ps(); 2]; R];
        let ahead = (p as *const i8).wrapping_add(if R == 1 { 0 } else { R * c * 2 } + AHEAD);
        let mut i = 0;
        while i + 32 <= c {
            if PF { for q in 0..R { _mm_prefetch(ahead.wrapping_add(i * 2 * R + 64 * q), _MM_HINT_T0); } }
            for k in 0..2 {
                let xv = _mm512_loadu_ps(xp.add(i + 16 * k));
                for r in 0..R { a[r][k] = _mm512_fmadd_ps(xv, ld16z(p.add(r * c + i + 16 * k)), a[r][k]); }
            }
            i += 32;
        }
        for r in 0..R { out[v + r] = finish_z(a[r][0], a[r][1]); }
        v += R;
    }
    for vv in v..out.len() { out[vv] = dot1(xp, rows.as_ptr().add(vv * c), c); }
}


#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn readonly(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let n = rows.len();
    let p = rows.as_ptr() as *const __m512i;
    let mut a = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while (i + 4) * 32 <= n {
        for k in 0..4 { a[k] = _mm512_xor_si512(a[k], _mm512_loadu_si512(p.add(i + k) as *const _)); }
        i += 4;
    }
    let s = _mm512_xor_si512(_mm512_xor_si512(a[0], a[1]), _mm512_xor_si512(a[2], a[3]));
    out[0] = _mm512_reduce_add_epi32(s) as f32 + x[0];
}


#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn z_one_h<const HINT: i32, const AHEAD: usize, const EVERY: usize>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let xp = x.as_ptr();
    for (v, o) in out.iter_mut().enumerate() {
        let p = rows.as_ptr().add(v * c);
        let ahead = (p as *const i8).wrapping_add(AHEAD);
        let mut a = [_mm512_setzero_ps(); 2];
        let mut i = 0;
        while i + 32 <= c {
            if EVERY == 1 || (i / 32) % EVERY == 0 {
                for q in 0..EVERY { _mm_prefetch::<HINT>(ahead.wrapping_add(i * 2 + 64 * q)); }
            }
            for k in 0..2 {
                a[k] = _mm512_fmadd_ps(_mm512_loadu_ps(xp.add(i + 16 * k)), ld16z(p.add(i + 16 * k)), a[k]);
            }
            i += 32;
        }
        *o = finish_z(a[0], a[1]);
    }
}


#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn readonly_pf<const AHEAD: usize>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let n = rows.len();
    let p = rows.as_ptr() as *const __m512i;
    let mut a = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while (i + 4) * 32 <= n {
        for k in 0..4 { _mm_prefetch::<_MM_HINT_T2>((p.add(i + k) as *const i8).wrapping_add(AHEAD)); a[k] = _mm512_xor_si512(a[k], _mm512_loadu_si512(p.add(i + k) as *const _)); }
        i += 4;
    }
    let s = _mm512_xor_si512(_mm512_xor_si512(a[0], a[1]), _mm512_xor_si512(a[2], a[3]));
    out[0] = _mm512_reduce_add_epi32(s) as f32 + x[0];
}


#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_avx2_t2<const AHEAD: usize>(out: &mut [f32], x: &[f32], rows: &[u16]) {
    let c = x.len();
    let xp = x.as_ptr();
    for (v, o) in out.iter_mut().enumerate() {
        let p = rows.as_ptr().add(v * c);
        let ahead = (p as *const i8).wrapping_add(AHEAD);
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= c {
            _mm_prefetch::<_MM_HINT_T2>(ahead.wrapping_add(i * 2));
            for k in 0..4 { a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i + 8 * k)), _mm256_cvtph_ps(_mm_loadu_si128(p.add(i + 8 * k) as *const __m128i)), a[k]); }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        let lo = _mm256_castps256_ps128(s);
        let hi = _mm256_extractf128_ps(s, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        *o = _mm_cvtss_f32(s);
    }
}

type K = unsafe fn(&mut [f32], &[f32], &[u16]);

fn main() {
    let _ = F;
    let args: Vec<String> = std::env::args().collect();
    let c: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(768);
    let rounds: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(5);
    let rows = 6 * 1024 * 1024 / (2 * c);
    let copies = 24;
    let mats: Vec<Vec<u16>> = (0..copies).map(|m| (0..rows * c).map(|i| { let f = (((i + m) * 7919) % 1000) as f32 / 1000.0 - 0.5; half_bits(f) }).collect()).collect();
    let x: Vec<f32> = (0..c).map(|i| i as f32 / c as f32).collect();
    let ks: Vec<(&str, K)> = vec![
        ("readonly", readonly),
        ("one-avx2", v_one_avx2),
        ("one-avx2-t2-4096", one_avx2_t2::<4096>),
        ("z-one-t2-4096", z_one_h::<_MM_HINT_T2, 4096, 1>),
        ("one-avx2-t2-2048", one_avx2_t2::<2048>),
        ("z-one-t2-2048", z_one_h::<_MM_HINT_T2, 2048, 1>),
        ("z-one-t1-4096", z_one_h::<_MM_HINT_T1, 4096, 1>),
    ];
    let mut refo = vec![0.0f32; rows];
    unsafe { v_one_avx2(&mut refo, &x, &mats[0]) };
    let mut res: Vec<Vec<f64>> = vec![vec![]; ks.len()];
    for _ in 0..rounds {
        for (ki, (name, f)) in ks.iter().enumerate() {
            let mut out = vec![0.0f32; rows];
            unsafe { f(&mut out, &x, &mats[0]) };
            if !name.starts_with("readonly") { assert!(out.iter().zip(&refo).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} differs"); }
            let reps = 240;
            let t = Instant::now();
            for i in 0..reps { unsafe { f(&mut out, &x, &mats[i % copies]) }; }
            let s = t.elapsed().as_secs_f64();
            res[ki].push((reps * rows * c * 2) as f64 / s / 1e9);
        }
    }
    for (ki, (name, _)) in ks.iter().enumerate() {
        let mut v = res[ki].clone(); v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("c={c} {name:14} median {:6.2} GB/s  best {:6.2}  all {:?}", v[v.len() / 2], v[v.len() - 1], v.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>());
    }
}

fn half_bits(f: f32) -> u16 {
    // via F16C
    unsafe { _mm_extract_epi16(_mm_cvtps_ph(_mm_set1_ps(f), 0), 0) as u16 }
}
