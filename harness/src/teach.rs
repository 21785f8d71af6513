//! The teaching mode's two printouts: `--explain` (before a run: what this backend changes from
//! the previous one in the ladder, and what one decode step costs for the loaded model) and
//! `--profile` (after a run: where the time went, per GPT-2 operation).

use std::fmt::Write;
use std::time::Duration;

use gpt2_backends::profile::{Op, OpTimes};
use gpt2_weights::{Config, KvDtype};

use crate::generate::Generation;
use crate::roofline::{cached_step_flops, prefill_flops};

/// What a backend changes from the one before it in the ladder (`gpt2_backends::REGISTRY`).
fn ladder_step(backend: &str) -> &'static str {
    gpt2_backends::registry::spec(backend).map_or("a test backend.", |s| s.ladder)
}

/// The `--explain` text for `backend` on a model `c` whose decode step reads
/// `weight_bytes_per_token` bytes of weights (in `dtype`), with a prompt of `prompt_len` tokens.
pub fn explain(
    backend: &str,
    c: &Config,
    (weight_bytes_per_token, dtype): (u64, &str),
    kv_cache: Option<KvDtype>,
    prompt_len: usize,
) -> String {
    let context = prompt_len + 1;
    let weights = weight_bytes_per_token as f64;
    let mut out = format!("{}\n", ladder_step(backend));
    if let Some(kv) = kv_cache {
        let flops = cached_step_flops(c, context);
        let kv_read = 2.0
            * f64::from(c.n_layer)
            * context as f64
            * f64::from(c.n_embd)
            * kv.bytes_per_value() as f64;
        let _ = writeln!(
            out,
            "One decode step here (context {context}): {:.2} GFLOP, reading {:.1} MB of {dtype} \
             weights and {:.2} MB of cached keys and values ({kv}): {:.1} FLOP per byte, so \
             memory bandwidth, not arithmetic, sets its speed.",
            flops / 1e9,
            weights / 1e6,
            kv_read / 1e6,
            flops / (weights + kv_read)
        );
    } else {
        let flops = prefill_flops(c, context);
        let _ = writeln!(
            out,
            "One decode step here (context {context}): the whole context again, {:.2} GFLOP \
             ({:.0}x the {:.2} GFLOP a KV cache would need), reading at least {:.1} MB of {dtype} \
             weights.",
            flops / 1e9,
            flops / cached_step_flops(c, context),
            cached_step_flops(c, context) / 1e9,
            weights / 1e6
        );
    }
    out
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The `--profile` table: per operation, ms and % of the phase, for prefill and decode.
pub fn profile_table(g: &Generation) -> String {
    let (Some(pre), decode) = (g.prefill_ops, g.decode_ops.unwrap_or_default()) else {
        return "no profile: this backend did not record one\n".to_string();
    };
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let pre_total = nanos(g.prefill);
    let dec_total = nanos(g.decode_total());
    // A backend that times its passes whole (llama.cpp) has one row, `Op::Whole`; the others
    // one per operation.
    let whole = pre.get(Op::Whole) + decode.get(Op::Whole) > 0;
    let mut rows: Vec<(String, u64, u64)> = Op::ALL
        .iter()
        .filter(|&&op| (op == Op::Whole) == whole)
        .map(|&op| (op.name().to_string(), pre.get(op), decode.get(op)))
        .collect();
    let (pre_choice, dec_choice) = (nanos(g.prefill_choice), nanos(g.decode_choice));
    rows.push(("sampling (token choice)".into(), pre_choice, dec_choice));
    let other =
        |total: u64, ops: &OpTimes, choice: u64| total.saturating_sub(ops.total_ns() + choice);
    rows.push((
        "other (between operations)".into(),
        other(pre_total, &pre, pre_choice),
        other(dec_total, &decode, dec_choice),
    ));
    let pct = |x: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * x as f64 / total as f64
        }
    };
    let mut out = format!(
        "{:<28} {:>12} {:>7} {:>12} {:>7}\n",
        "operation", "prefill ms", "%", "decode ms", "%"
    );
    for (name, p, d) in &rows {
        let _ = writeln!(
            out,
            "{name:<28} {:>12.2} {:>6.1}% {:>12.2} {:>6.1}%",
            ms(*p),
            pct(*p, pre_total),
            ms(*d),
            pct(*d, dec_total)
        );
    }
    let _ = writeln!(
        out,
        "{:<28} {:>12.2} {:>7} {:>12.2} {:>7}",
        "total",
        ms(pre_total),
        "",
        ms(dec_total),
        ""
    );
    let _ = writeln!(
        out,
        "(prefill: one call on the whole prompt; decode: all {} steps together. Each operation \
         is summed over every layer.)",
        g.steps.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt2_small() -> Config {
        Config {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            vocab_size: 50257,
            n_ctx: 1024,
            mlp_hidden: 3072,
            layer_norm_eps: 1e-5,
            tied_output: true,
        }
    }

    #[test]
    fn decode_step_cost_of_gpt2_small() {
        // ~2 FLOPs per parameter used: 85M in the blocks plus 38.6M in the output layer.
        let flops = cached_step_flops(&gpt2_small(), 1);
        assert!((flops / 1e9 - 0.247).abs() < 0.005, "{flops}");
        let bytes = (124_439_808 - 1023 * 768) * 4;
        let text = explain(
            "simd-kv",
            &gpt2_small(),
            (bytes, "f32"),
            Some(KvDtype::F32),
            5,
        );
        // 2 x 12 layers x 6 positions x 768 x 4 bytes of keys and values.
        assert!(
            text.contains("KV cache")
                && text.contains(
                    "494.6 MB of f32 weights and 0.44 MB of cached keys and values (f32)"
                ),
            "{text}"
        );
        // A q8_0 file reads its own bytes, about 3.8x fewer; an f16 cache half the bytes.
        let q8 = (131_700_000, "q8_0");
        let text = explain("simd-kv", &gpt2_small(), q8, Some(KvDtype::F16), 5);
        assert!(
            text.contains("131.7 MB of q8_0 weights and 0.22 MB of cached keys and values (f16)"),
            "{text}"
        );
        let text = explain("simd", &gpt2_small(), (bytes, "f32"), None, 99);
        assert!(text.contains("the whole context again"), "{text}");
    }

    #[test]
    fn profile_rows_add_up_to_the_phase() {
        let mut ops = OpTimes::default();
        ops.ns[Op::MlpUp as usize] = 6_000_000;
        ops.ns[Op::Attention as usize] = 2_000_000;
        let g = Generation {
            token_ids: vec![1, 2],
            top2_gaps: vec![1.0, 1.0],
            logit_magnitudes: vec![10.0, 10.0],
            prefill: Duration::from_millis(10),
            steps: vec![Duration::from_millis(4)],
            prefill_choice: Duration::from_millis(1),
            decode_choice: Duration::from_millis(1),
            prefill_ops: Some(ops),
            decode_ops: Some(ops),
        };
        let table = profile_table(&g);
        let line = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        assert!(
            line("MLP up").contains("6.00") && line("MLP up").contains("60.0%"),
            "{table}"
        );
        assert!(line("other").contains("1.00"), "{table}");
        // Decode ops exceed the decode time here: "other" is clamped at zero, not negative.
        assert!(line("other").contains("0.00"), "{table}");
    }
}
