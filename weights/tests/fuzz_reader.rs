//! Fuzzing the weight-file reader: arbitrary and mutated bytes must never panic, never allocate
//! more than the input's size implies, and always come back as an error (or, rarely, a file that
//! is valid after all).
//!
//! A bounded, seeded, mutation-based fuzzer run as an ordinary test, so it needs no nightly
//! toolchain and runs in CI. Inputs start from a small valid file and are mutated: random bytes
//! flipped, 64-bit fields set to extreme values, truncated, extended, spliced; half of the
//! header mutations then re-seal the header checksum, so that the parser's deeper checks (the
//! config, the tokenizer tables, the tensor table) see the damage instead of the checksum
//! catching it first. Every 64th input also goes through the real `WeightFile::open` path (a
//! file on disk, memory-mapped) and, if that succeeds, every accessor.
//!
//! `GPT2_BENCH_FUZZ_ITERS` (default 20 000) and `GPT2_BENCH_FUZZ_SEED` (default 1) set the
//! length and the seed: `GPT2_BENCH_FUZZ_ITERS=1000000 cargo test --release -p gpt2-weights
//! --test fuzz_reader -- --nocapture`.

mod fuzz_support;
#[path = "../../export/tests/support/mod.rs"]
mod support;

use fuzz_support::{Rng, iterations_and_seed, largest_allocation};

use gpt2_weights::WeightFile;
use gpt2_weights::format::{self, PREAMBLE_LEN};

/// Small valid weight files (1 layer, a 260-token byte-level vocabulary: the hostile tests'
/// small model): f32 with n_embd 8, and q8_0 with n_embd 32 (so that its matrices really are
/// q8_0 blocks, whose scales the reader checks); returns their bytes.
fn seed_files(dir: &std::path::Path) -> [Vec<u8>; 2] {
    let f32_path = dir.join("seed.bin");
    support::small_weight_file(&f32_path, |_| {}, "fuzz-seed");
    let q8_path = dir.join("seed-q8_0.bin");
    let wide = |c: &mut gpt2_weights::Config| {
        c.n_embd = 32;
        c.mlp_hidden = 64;
    };
    support::small_weight_file_in(&q8_path, wide, "fuzz-seed", gpt2_weights::Dtype::Q8_0);
    [f32_path, q8_path].map(|path| {
        WeightFile::open_verified(&path).expect("the seed file is valid");
        std::fs::read(&path).unwrap()
    })
}

const EXTREMES: [u64; 8] = [
    0,
    1,
    63,
    64,
    u32::MAX as u64,
    u64::MAX,
    u64::MAX / 2,
    1 << 40,
];

fn mutate(rng: &mut Rng, seed: &[u8], header_len: usize) -> Vec<u8> {
    let mut b = seed.to_vec();
    let header = PREAMBLE_LEN..PREAMBLE_LEN + header_len;
    let mut touched_preamble = false;
    for _ in 0..1 + rng.below(4) {
        if b.len() < header.end {
            // Cut short by an earlier truncation: only flip bytes or grow it from here.
            if !b.is_empty() && rng.below(2) == 0 {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
                touched_preamble |= i < PREAMBLE_LEN;
            } else {
                b.extend((0..rng.below(256)).map(|_| rng.next() as u8));
            }
            continue;
        }
        match rng.below(8) {
            0 => {
                // Flip a byte anywhere.
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
                touched_preamble |= i < PREAMBLE_LEN;
            }
            1 | 2 => {
                // Flip or randomise bytes inside the header (strings, counts, shapes).
                let i = header.start + rng.below(header.len());
                b[i] = rng.next() as u8;
            }
            3 => {
                // An extreme 32- or 64-bit value at a random aligned place in the header.
                let v = EXTREMES[rng.below(EXTREMES.len())];
                let at = header.start + rng.below(header.len().saturating_sub(8)) / 4 * 4;
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            4 => {
                // An extreme value in a preamble field (lengths, offsets, version).
                let v = EXTREMES[rng.below(EXTREMES.len())];
                let at = 8 + rng.below(7) * 8;
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                touched_preamble = true;
            }
            5 => {
                b.truncate(rng.below(b.len() + 1));
            }
            6 => {
                let extra = rng.below(256);
                b.extend((0..extra).map(|_| rng.next() as u8));
            }
            _ => {
                // Copy a run of bytes from one place to another (duplicated table entries).
                let len = 1 + rng.below(32);
                if b.len() > 2 * len {
                    let from = rng.below(b.len() - len);
                    let to = rng.below(b.len() - len);
                    let run = b[from..from + len].to_vec();
                    b[to..to + len].copy_from_slice(&run);
                    touched_preamble |= to < PREAMBLE_LEN;
                }
            }
        }
    }
    // Re-seal the header checksum half of the time, so the parse goes past it.
    if !touched_preamble && b.len() >= header.end && rng.below(2) == 0 {
        let sum = format::checksum(&b[header.clone()]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
    }
    b
}

#[test]
fn mutated_files_are_errors_never_panics_or_huge_allocations() {
    let (iterations, seed) = iterations_and_seed(20_000);
    let dir = tempfile::tempdir().unwrap();
    let seeds = seed_files(dir.path());
    let header_len = |valid: &[u8]| {
        format::parse_preamble(valid, valid.len() as u64)
            .unwrap()
            .header_len as usize
    };
    let mut rng = Rng(seed);
    let (mut accepted, mut opened) = (0u64, 0u64);
    let disk = dir.path().join("mutant.bin");
    for i in 0..iterations {
        let bytes = if i % 16 == 15 {
            // Pure noise behind a valid magic now and then.
            let mut b: Vec<u8> = (0..rng.below(4096)).map(|_| rng.next() as u8).collect();
            if b.len() >= 8 && rng.below(2) == 0 {
                b[..8].copy_from_slice(b"GPT2BNCH");
            }
            b
        } else {
            let valid = &seeds[i as usize / 16 % 2];
            mutate(&mut rng, valid, header_len(valid))
        };
        // The length the parser is told may also lie about the real input.
        let claimed = if rng.below(8) == 0 {
            EXTREMES[rng.below(EXTREMES.len())]
        } else {
            bytes.len() as u64
        };
        let (parsed, largest) =
            largest_allocation(|| format::parse_header(&bytes, claimed.min(bytes.len() as u64)));
        // Everything the parser builds comes from the header bytes: no single allocation may
        // exceed a fixed multiple of the input plus a constant. (The multiple is not 1: a
        // token's 4-byte minimum on disk becomes a 24-byte String slot in memory, 6x.)
        assert!(
            largest <= 16 * bytes.len() + (1 << 16),
            "iteration {i} (seed {seed}): a {largest}-byte allocation for a {}-byte input",
            bytes.len()
        );
        accepted += u64::from(parsed.is_ok());

        if i % 64 == 0 {
            std::fs::write(&disk, &bytes).unwrap();
            if let Ok(f) = WeightFile::open(&disk) {
                opened += 1;
                let _ = f.verify_checksum();
                let _ = f.gpt2();
                let _ = f.tokenizer();
                let _ = f.data_f32();
            }
        }
    }
    eprintln!(
        "fuzz_reader: {iterations} inputs (seed {seed}); {accepted} parsed as valid headers, \
         {opened} opened from disk"
    );
}
