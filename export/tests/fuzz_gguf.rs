//! Fuzzing the GGUF reader and import: fixtures written by the `gguf` package, mutated (bytes
//! of the header, its counts and lengths replaced by huge or off-by-one values, the file cut
//! short or grown), must import cleanly or fail with an error: never panic, never allocate more
//! than the file implies, never leave a file at the destination on failure.
//!
//! Seeded and bounded like the other fuzz tests: `GPT2_BENCH_FUZZ_ITERS` (default 5 000; every
//! input that parses is a full import) and `GPT2_BENCH_FUZZ_SEED` (default 1).

#[path = "../../weights/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::{Rng, iterations_and_seed, largest_allocation};
use gpt2_export::gguf;

/// Byte offsets in `file` of the fields a lying header would lie in: the counts, and every
/// u64 that a string or array length sits in (found by walking the header as written).
fn length_fields(file: &[u8]) -> Vec<usize> {
    let mut fields = vec![8, 16];
    let parsed = gguf::parse(file).expect("the seed parses");
    // Every "key" and tensor name is preceded by its u64 length: find them in the bytes.
    let mut names: Vec<&str> = parsed.metadata.iter().map(|(k, _)| *k).collect();
    names.extend(parsed.tensors.iter().map(|t| t.name));
    for name in names {
        if let Some(at) = file
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .filter(|&at| at >= 8)
        {
            fields.push(at - 8);
        }
    }
    fields
}

fn mutate(rng: &mut Rng, seed: &[u8], fields: &[usize], header_len: usize) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        if b.len() < 24 {
            b.extend((0..rng.below(64)).map(|_| rng.next() as u8));
            continue;
        }
        match rng.below(6) {
            0 | 1 => {
                // A byte of the header (keys, types, counts, shapes, offsets).
                let i = rng.below(header_len.min(b.len()));
                b[i] = match rng.below(3) {
                    0 => rng.below(13) as u8,
                    1 => 0xFF,
                    _ => rng.next() as u8,
                };
            }
            2 => {
                // A count or length replaced by a lie.
                let at = fields[rng.below(fields.len())];
                if at + 8 <= b.len() {
                    let old = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
                    let v = [
                        0,
                        1,
                        old + 1,
                        old.wrapping_sub(1),
                        u64::MAX,
                        1 << 40,
                        1 << 24,
                    ][rng.below(7)];
                    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            3 => b.truncate(rng.below(b.len() + 1)),
            4 => b.extend((0..rng.below(512)).map(|_| rng.next() as u8)),
            _ => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
    }
    b
}

#[test]
fn mutated_ggufs_are_errors_never_panics_or_huge_allocations() {
    let (iterations, seed) = iterations_and_seed(5_000);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf");
    let seeds: Vec<Vec<u8>> = ["q8_0-tied.gguf", "f16-untied.gguf"]
        .iter()
        .map(|n| std::fs::read(fixtures.join(n)).unwrap())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.gguf");
    let out = tmp.path().join("out.bin");
    let mut rng = Rng(seed);
    let (mut parsed, mut imported) = (0u64, 0u64);
    for i in 0..iterations {
        let source = &seeds[i as usize % seeds.len()];
        let header_len = gguf::parse(source).unwrap().data_offset as usize;
        let fields = length_fields(source);
        let bytes = mutate(&mut rng, source, &fields, header_len);
        let (result, largest) = largest_allocation(|| gguf::parse(&bytes).map(|g| g.tensors.len()));
        // The metadata and tables are owned; nothing scales with a claimed count.
        assert!(
            largest <= 16 * bytes.len() + (1 << 20),
            "iteration {i} (seed {seed}): a {largest}-byte allocation for a {}-byte file",
            bytes.len()
        );
        if result.is_err() {
            continue;
        }
        parsed += 1;
        std::fs::write(&input, &bytes).unwrap();
        let (result, largest) =
            largest_allocation(|| gguf::import::import_file(&input, None, &out, &|_, _| {}));
        assert!(
            largest <= 16 * bytes.len() + (1 << 20),
            "iteration {i} (seed {seed}): a {largest}-byte allocation importing a {}-byte file",
            bytes.len()
        );
        match result {
            Ok(_) => {
                imported += 1;
                std::fs::remove_file(&out).unwrap();
            }
            Err(e) => {
                assert!(!out.exists(), "iteration {i}: a failed import left {out:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(
        parsed > 0 && imported > 0,
        "the mutations never left a valid file"
    );
    eprintln!("fuzz_gguf: {iterations} inputs (seed {seed}); {parsed} parsed, {imported} imported");
}
