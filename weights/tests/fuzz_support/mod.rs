//! What the fuzz tests share (`weights/tests/fuzz_reader.rs`; `export/tests/fuzz_import.rs`,
//! `export/tests/fuzz_inputs.rs` and the baseline fuzzer of `harness/src/gate.rs` through a
//! `#[path]` include): a global allocator that records the largest single allocation while
//! tracking is on, a small seeded generator, a JSON mutator, and the environment knobs.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Records the largest single allocation while `TRACKING` is on.
pub struct CountingAlloc;

static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only reads the size.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACKING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the largest single allocation it made.
/// (Tests in one binary run on several threads: a fuzz test binary holds one test.)
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    TRACKING.store(true, Ordering::Relaxed);
    let result = f();
    TRACKING.store(false, Ordering::Relaxed);
    (result, LARGEST.load(Ordering::Relaxed))
}

/// SplitMix64: enough to drive mutations, and reproducible from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `GPT2_BENCH_FUZZ_ITERS` (else `default_iters`) and `GPT2_BENCH_FUZZ_SEED` (else 1).
pub fn iterations_and_seed(default_iters: u64) -> (u64, u64) {
    let env_or = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        env_or("GPT2_BENCH_FUZZ_ITERS", default_iters),
        env_or("GPT2_BENCH_FUZZ_SEED", 1),
    )
}

/// Values spliced into JSON in place of a number or a value: the wrong type, out of range,
/// huge, negative, or non-finite.
const JSON_VALUES: [&str; 14] = [
    "1e309",
    "-1",
    "18446744073709551616",
    "4294967296",
    "0",
    "null",
    "\"x\"",
    "\"\\u001b[2J\"",
    "[]",
    "{}",
    "true",
    "1.5",
    "-0.0",
    "99999999999999999999999999",
];

/// Mutates a JSON document: bytes flipped, digits and delimiters changed, values replaced by
/// other types or extreme numbers, slices duplicated, the text cut short.
pub fn mutate_json(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            b.push(b'{');
            continue;
        }
        let i = rng.below(b.len());
        match rng.below(8) {
            0 => b[i] = b"0123456789"[rng.below(10)],
            1 => b[i] = b"[]{},:\"-.eE"[rng.below(11)],
            2 => b.truncate(i),
            3 | 4 => {
                // Replace the value after a ':' (or the number at i) with another JSON value.
                let start = if rng.below(2) == 0 {
                    b[i..].iter().position(|&c| c == b':').map(|p| i + p + 1)
                } else {
                    b[i..].iter().position(u8::is_ascii_digit).map(|p| i + p)
                };
                if let Some(start) = start {
                    let end = b[start..]
                        .iter()
                        .position(|&c| matches!(c, b',' | b'}' | b']'))
                        .map_or(b.len(), |p| start + p);
                    let value = JSON_VALUES[rng.below(JSON_VALUES.len())].as_bytes();
                    b.splice(start..end, value.iter().copied());
                }
            }
            5 => b[i] = rng.next() as u8,
            6 => {
                let end = (i + rng.below(64)).min(b.len());
                let copy = b[i..end].to_vec();
                b.splice(i..i, copy);
            }
            _ => {
                b.remove(i);
            }
        }
    }
    b
}
