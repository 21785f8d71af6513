//! What a backend will allocate, checked before it allocates.
//!
//! A weight file's config fields are each bounded (`gpt2_weights::format`), but their products
//! are not: a 7 MB file with `n_ctx` 2^20 and `mlp_hidden` 2^18 asks a backend that sizes its
//! activations by the context for a terabyte. `vec![0.0; n]` then aborts the process ("memory
//! allocation failed"), or the product overflows. A backend instead adds up its buffers in a
//! [`Budget`] with checked arithmetic and asks [`Budget::check`] first, which refuses a total
//! beyond the machine's physical memory with an error that says how much was needed and for what.

use crate::engine::EngineError;
use gpt2_weights::hint::human_bytes;

/// Bytes of `dims` f32 values, `None` if the product overflows.
pub fn f32_bytes(dims: &[usize]) -> Option<u64> {
    value_bytes(dims, 4)
}

/// Bytes of `dims` values of `size` bytes each, `None` if the product overflows.
pub fn value_bytes(dims: &[usize], size: u64) -> Option<u64> {
    dims.iter()
        .try_fold(size, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

/// Physical memory of this machine in bytes, where the platform says (read once: decode steps
/// of the recomputing backends check against it every token).
pub fn physical_memory_bytes() -> Option<u64> {
    static BYTES: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: sysconf only reads system configuration values; it has no preconditions.
            let (pages, page_size) = unsafe {
                (
                    libc::sysconf(libc::_SC_PHYS_PAGES),
                    libc::sysconf(libc::_SC_PAGESIZE),
                )
            };
            if pages > 0 && page_size > 0 {
                return (pages as u64).checked_mul(page_size as u64);
            }
        }
        None
    })
}

/// One buffer: what it is for (with its shape), and its bytes (`None`: the product overflowed).
type Item = (&'static str, Option<u64>);

/// The buffers a backend is about to allocate.
#[derive(Debug)]
pub struct Budget {
    backend: &'static str,
    items: Vec<Item>,
}

impl Budget {
    pub fn new(backend: &'static str) -> Self {
        Budget {
            backend,
            items: Vec::new(),
        }
    }

    /// Adds a buffer of `dims` f32 values, described by `what` (e.g. "MLP activations (n_ctx, H)").
    pub fn f32s(&mut self, what: &'static str, dims: &[usize]) -> &mut Self {
        self.values(what, dims, 4)
    }

    /// Adds a buffer of `dims` values of `size` bytes each (2 for an f16 KV cache).
    pub fn values(&mut self, what: &'static str, dims: &[usize], size: u64) -> &mut Self {
        self.items.push((what, value_bytes(dims, size)));
        self
    }

    /// Total bytes, or an error naming the largest buffer when the total overflows or exceeds
    /// the machine's physical memory.
    pub fn check(&self) -> Result<u64, EngineError> {
        self.check_against(physical_memory_bytes())
    }

    fn check_against(&self, available: Option<u64>) -> Result<u64, EngineError> {
        check_items(self.backend, &self.items, available)
    }
}

/// The total of `items`, or the error of [`Budget::check`]; the messages are built only on
/// failure, so a check that passes allocates nothing.
fn check_items(
    backend: &'static str,
    items: &[Item],
    available: Option<u64>,
) -> Result<u64, EngineError> {
    let total = items
        .iter()
        .try_fold(0u64, |acc, (_, b)| acc.checked_add((*b)?));
    let needed = match total {
        Some(t) if available.is_none_or(|a| t <= a) => return Ok(t),
        Some(t) => human_bytes(t),
        None => "more than 2^64 bytes".to_string(),
    };
    let largest = items
        .iter()
        .max_by_key(|(_, b)| b.unwrap_or(u64::MAX))
        .map(|(what, b)| match b {
            Some(b) => format!("{what}, {}", human_bytes(*b)),
            None => format!("{what}, more than 2^64 bytes"),
        })
        .unwrap_or_default();
    Err(EngineError::OutOfMemory {
        backend,
        needed,
        largest,
        available: available.map_or_else(|| "?".into(), human_bytes),
    })
}

/// What a forward pass over `t` positions allocates in a backend that sizes its activations by
/// the prompt (naive, ndarray, candle): the residual stream and its layer norm, attention output
/// and projection (T, C) each, QKV (T, 3C), the MLP's (T, H), the logits (V), plus the attention
/// scores of the shape `scores` the backend keeps at once. Checked before every call that
/// recomputes (a `--prompt-tokens` of a million on a long-context model would otherwise abort
/// the process asking for a terabyte).
pub fn check_forward(
    backend: &'static str,
    config: &gpt2_weights::Config,
    t: usize,
    scores: &[usize],
) -> Result<u64, EngineError> {
    let (c, h, v) = (
        config.n_embd as usize,
        config.mlp_hidden as usize,
        config.vocab_size as usize,
    );
    // On the stack: this runs before every decode step of the recomputing backends.
    let items: [Item; 5] = [
        (
            "residual stream, layer norm, attention and projection (4, T, C)",
            f32_bytes(&[4, t, c]),
        ),
        ("QKV (T, 3C)", f32_bytes(&[t, 3, c])),
        ("MLP activations (T, H)", f32_bytes(&[t, h])),
        ("attention scores", f32_bytes(scores)),
        ("logits (V)", f32_bytes(&[v])),
    ];
    check_items(backend, &items, physical_memory_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_products() {
        assert_eq!(f32_bytes(&[2, 3]), Some(24));
        assert_eq!(f32_bytes(&[]), Some(4));
        assert_eq!(f32_bytes(&[usize::MAX, 2]), None);
        let mut b = Budget::new("simd");
        b.f32s("x (n_ctx, C)", &[1024, 768])
            .f32s("fc (n_ctx, H)", &[1024, 3072]);
        assert_eq!(b.check_against(Some(1 << 30)), Ok(4 * 1024 * (768 + 3072)));
        assert_eq!(b.check_against(None), Ok(4 * 1024 * (768 + 3072)));
        let e = b.check_against(Some(1 << 20)).unwrap_err().to_string();
        assert!(
            e.contains("simd") && e.contains("fc (n_ctx, H), 12.6 MB"),
            "{e}"
        );
        let mut huge = Budget::new("simd");
        huge.f32s("fc (n_ctx, H)", &[1 << 20, 1 << 18]);
        let e = huge.check_against(Some(24 << 30)).unwrap_err().to_string();
        assert!(e.contains("1.10 TB") && e.contains("25.77 GB"), "{e}");
        let mut overflow = Budget::new("candle");
        overflow.f32s("everything", &[usize::MAX, usize::MAX]);
        let e = overflow.check_against(Some(1)).unwrap_err().to_string();
        assert!(e.contains("more than 2^64 bytes"), "{e}");
    }

    #[test]
    fn this_machine_reports_its_memory() {
        if cfg!(unix) {
            assert!(physical_memory_bytes().is_some_and(|b| b > 1 << 26));
        }
    }
}
