//! The CI regression gate: `--baseline FILE.json --max-slowdown 10%`.
//!
//! Each backend's prefill and decode speed is compared with the same backend at the same prompt
//! length in a saved report. What is compared is what the code controls: each run's rate divided
//! by what the machine delivered just before that run (`machine_normalized` in the report: an
//! all-thread read pass for bandwidth, an FMA pass for arithmetic). A shared machine's speed
//! swings by up to 2x between minutes; raw tok/s from two runs a minute apart differ by that
//! much with unchanged code, and a gate on them cries wolf. Prefill is divided by the FMA rate;
//! decode by the read bandwidth when it streams weights (its `decode_read_fraction`, in either
//! report, at least [`MEMORY_BOUND_READ_FRACTION`]), else by the FMA rate. Without those passes
//! (`--no-roofline` in either report) raw tok/s are compared, and the gate says so.
//!
//! Both figures are means over runs, so the ratio `now / baseline` carries an uncertainty,
//! propagated from the two means' relative standard errors (standard deviation over runs /
//! sqrt(runs)): `sd(r) = r * sqrt(se_now^2 + se_base^2)`. A slowdown `1 - r` counts as a
//! regression only if it exceeds the threshold even after subtracting that uncertainty.

use std::path::{Path, PathBuf};

use crate::record::{BackendResult, Comparison, Gate, Report, Rerun, read_report};
use crate::stats::Summary;
use anyhow::Context;

/// A baseline figure and the same figure now.
type Pair<'a> = Option<(&'a Summary, &'a Summary)>;

/// A decode that uses at least this fraction of the read bandwidth streams weights: its speed
/// follows the memory's, and the gate divides it by the read pass.
pub const MEMORY_BOUND_READ_FRACTION: f64 = 0.3;

/// A loaded baseline.
pub struct Baseline {
    path: PathBuf,
    file: Report,
}

impl Baseline {
    pub fn load(path: &Path) -> anyhow::Result<Baseline> {
        let text =
            gpt2_weights::input::read_text_limited(path, gpt2_weights::input::MAX_TEXT_FILE_BYTES)
                .with_context(|| format!("--baseline {}", path.display()))?;
        let file = read_report(text.as_bytes()).map_err(|e| {
            anyhow::anyhow!(
                "--baseline {}: {e:#}; give a report saved by this gpt2-bench (--save or \
                 --format json)",
                path.display()
            )
        })?;
        validate(&file).map_err(|m| {
            anyhow::anyhow!(
                "--baseline {}: {m}; give a report saved by gpt2-bench --compare",
                path.display()
            )
        })?;
        Ok(Baseline {
            path: path.to_path_buf(),
            file,
        })
    }
}

/// A baseline is an input like any other: every figure the gate divides by must be a positive,
/// finite rate with a finite, non-negative spread (a mean of 0 would make any run "faster by
/// inf%"), and there must be something to gate.
fn validate(file: &Report) -> Result<(), String> {
    if file.results.is_empty() {
        return Err("it has no results".into());
    }
    for row in &file.results {
        let name = gpt2_weights::input::printable(&row.backend);
        let n = row.machine_normalized.as_ref();
        let summaries = [
            ("prefill_tok_per_s", Some(&row.prefill_tok_per_s)),
            ("decode_tok_per_s", row.decode_tok_per_s.as_ref()),
            (
                "prefill_tok_per_peak_gflop",
                n.map(|n| &n.prefill_tok_per_peak_gflop),
            ),
            (
                "decode_tok_per_read_gb",
                n.and_then(|n| n.decode_tok_per_read_gb.as_ref()),
            ),
            (
                "decode_tok_per_peak_gflop",
                n.and_then(|n| n.decode_tok_per_peak_gflop.as_ref()),
            ),
        ];
        for (metric, summary) in summaries {
            let Some(s) = summary else { continue };
            let rate_ok = s.mean.is_finite() && s.mean > 0.0;
            let spread_ok = s.stddev.is_finite() && s.stddev >= 0.0;
            if !(rate_ok && spread_ok) {
                return Err(format!(
                    "{name} ({}-token prompt) has {metric} {} ± {}, not a positive finite rate",
                    row.prompt_tokens, s.mean, s.stddev
                ));
            }
        }
    }
    Ok(())
}

/// Parses `10%`, `10` (percent) or `0.1` (a fraction below 1).
pub fn parse_slowdown(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, percent) = match t.strip_suffix('%') {
        Some(n) => (n, true),
        None => (t, false),
    };
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage; write e.g. 10%"))?;
    let fraction = if percent || v >= 1.0 { v / 100.0 } else { v };
    if !(0.0..1.0).contains(&fraction) {
        return Err(format!("{s:?} must be between 0% and 100%"));
    }
    Ok(fraction)
}

/// `now / base` and its uncertainty: the standard errors of the two means (standard deviation
/// over runs / sqrt(runs)), relative, propagated.
fn ratio(now: &Summary, base: &Summary) -> (f64, f64) {
    let r = now.mean / base.mean;
    let rel = |s: &Summary| {
        if s.mean > 0.0 {
            s.stddev / s.mean / (s.n.max(1) as f64).sqrt()
        } else {
            0.0
        }
    };
    (r, r * (rel(now).powi(2) + rel(base).powi(2)).sqrt())
}

/// Compares `results` with the baseline.
/// `probe_isa` is the instruction set of this run's machine probes: a baseline whose probes
/// ran another (saved before the probes took the best kernels, or on another CPU) measured the
/// machine's peak differently, so raw rates are compared instead of normalized ones.
pub fn compare(
    baseline: &Baseline,
    results: &[BackendResult],
    model_checksum: &str,
    cpu: &str,
    probe_isa: &str,
    max_slowdown: f64,
) -> Gate {
    let b = &baseline.file;
    let mut caveats = Vec::new();
    let base_probe_isa = b.roofline.as_ref().map_or("", |r| r.isa.as_str());
    let probes_differ = !base_probe_isa.is_empty() && base_probe_isa != probe_isa;
    if probes_differ {
        caveats.push(format!(
            "raw tok/s compared: the baseline's machine probes ran the {base_probe_isa} kernels, \
             this run's the {probe_isa} ones, so their peaks are not the same measure"
        ));
    }
    if b.model.checksum != model_checksum {
        caveats.push(format!(
            "the baseline ran a different model ({} {})",
            b.model.name, b.model.checksum
        ));
    }
    if b.machine.cpu != cpu {
        caveats.push(format!(
            "the baseline ran on another CPU ({}), commit {}",
            b.machine.cpu, b.machine.git_commit
        ));
    }
    let mut comparisons = Vec::new();
    let mut not_in_baseline = Vec::new();
    let mut raw_caveat = false;
    for r in results {
        let Some(base) = b
            .results
            .iter()
            .find(|x| x.backend == r.backend && x.prompt_tokens == r.prompt_tokens)
        else {
            not_in_baseline.push(format!("{} ({}-token prompt)", r.backend, r.prompt_tokens));
            continue;
        };
        if base.threads != r.threads {
            caveats.push(format!(
                "{} ran with {} in the baseline, {} now",
                r.backend,
                crate::record::threads_phrase(base.threads),
                r.threads
            ));
        }
        let normalized = base
            .machine_normalized
            .as_ref()
            .zip(r.machine_normalized.as_ref())
            .filter(|_| !probes_differ);
        if normalized.is_none() && !raw_caveat && !probes_differ {
            raw_caveat = true;
            caveats.push(
                "raw tok/s compared: the baseline or this run was made with --no-roofline, so \
                 the machine's own swings count as the code's; drop --no-roofline from both"
                    .into(),
            );
        }
        let memory_bound = [base.decode_read_fraction, r.decode_read_fraction]
            .into_iter()
            .flatten()
            .any(|f| f >= MEMORY_BOUND_READ_FRACTION);
        let raw_decode = base
            .decode_tok_per_s
            .as_ref()
            .zip(r.decode_tok_per_s.as_ref());
        let raw_prefill = (&base.prefill_tok_per_s, &r.prefill_tok_per_s);
        let pairs: [(&'static str, Pair, Pair); 2] = match normalized {
            Some((b, n)) => {
                let decode = if memory_bound {
                    (
                        "decode per GB/s read",
                        b.decode_tok_per_read_gb
                            .as_ref()
                            .zip(n.decode_tok_per_read_gb.as_ref()),
                    )
                } else {
                    (
                        "decode per GFLOP/s",
                        b.decode_tok_per_peak_gflop
                            .as_ref()
                            .zip(n.decode_tok_per_peak_gflop.as_ref()),
                    )
                };
                [
                    (
                        "prefill per GFLOP/s",
                        Some((&b.prefill_tok_per_peak_gflop, &n.prefill_tok_per_peak_gflop)),
                        Some(raw_prefill),
                    ),
                    (decode.0, decode.1, raw_decode),
                ]
            }
            None => [
                ("prefill tok/s", Some(raw_prefill), Some(raw_prefill)),
                ("decode tok/s", raw_decode, raw_decode),
            ],
        };
        for (metric, compared, raw) in pairs {
            let (Some((base_s, now_s)), Some((base_raw, now_raw))) = (compared, raw) else {
                continue;
            };
            let (ratio, ratio_stddev) = ratio(now_s, base_s);
            comparisons.push(Comparison {
                backend: r.backend.clone(),
                prompt_tokens: r.prompt_tokens,
                metric,
                baseline: *base_s,
                now: *now_s,
                baseline_tok_per_s: base_raw.mean,
                now_tok_per_s: now_raw.mean,
                ratio,
                ratio_stddev,
                regression: is_regression(ratio, ratio_stddev, max_slowdown),
                rerun: None,
            });
        }
    }
    Gate {
        baseline_file: baseline.path.display().to_string(),
        max_slowdown,
        regressed: comparisons.iter().any(|c| c.regression),
        comparisons,
        not_in_baseline,
        caveats,
    }
}

/// The slowdown minus its uncertainty exceeds the threshold; a NaN anywhere counts as a
/// regression, never as a pass.
fn is_regression(ratio: f64, ratio_stddev: f64, max_slowdown: f64) -> bool {
    ((1.0 - ratio) - ratio_stddev)
        .partial_cmp(&max_slowdown)
        .is_none_or(|o| o == std::cmp::Ordering::Greater)
}

impl Gate {
    /// The backends with a regression, each once, in order.
    pub fn suspects(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in self.comparisons.iter().filter(|c| c.regression) {
            if !names.contains(&c.backend) {
                names.push(c.backend.clone());
            }
        }
        names
    }

    /// Keeps a regression only where `again` (the suspects measured a second time against the
    /// same baseline) shows it too.
    pub fn confirm(&mut self, again: &Gate) {
        for c in self.comparisons.iter_mut().filter(|c| c.regression) {
            let same = again.comparisons.iter().find(|a| {
                a.backend == c.backend && a.prompt_tokens == c.prompt_tokens && a.metric == c.metric
            });
            let rerun = same.map(|a| Rerun {
                ratio: a.ratio,
                ratio_stddev: a.ratio_stddev,
                regression: a.regression,
            });
            c.regression = rerun.is_none_or(|r| r.regression);
            c.rerun = rerun;
        }
        self.regressed = self.comparisons.iter().any(|c| c.regression);
    }
}

/// One line per comparison: "faster/slower by x% ± y%".
pub fn render(g: &Gate) -> String {
    let mut out = format!(
        "Against baseline {} (each run's speed divided by the machine's, measured beside it; \
         regression: slower by more than {:.0}% after subtracting the uncertainty):\n",
        g.baseline_file,
        g.max_slowdown * 100.0
    );
    for c in &g.comparisons {
        let change = (c.ratio - 1.0) * 100.0;
        let direction = if change >= 0.0 { "faster" } else { "slower" };
        out.push_str(&format!(
            "  {} ({}-token prompt) {}: {direction} by {:.1}% ± {:.1}% ({:.2} -> {:.2} tok/s){}\n",
            c.backend,
            c.prompt_tokens,
            c.metric,
            change.abs(),
            c.ratio_stddev * 100.0,
            c.baseline_tok_per_s,
            c.now_tok_per_s,
            match (c.regression, c.rerun) {
                (true, Some(r)) => format!(
                    "  REGRESSION (confirmed by a rerun: slower by {:.1}% ± {:.1}%)",
                    (1.0 - r.ratio) * 100.0,
                    r.ratio_stddev * 100.0
                ),
                (true, None) => "  REGRESSION".to_string(),
                (false, Some(r)) => format!(
                    "  (a rerun measured {:.1}% ± {:.1}%: not confirmed, a burst of other work)",
                    (r.ratio - 1.0) * 100.0,
                    r.ratio_stddev * 100.0
                ),
                (false, None) => String::new(),
            }
        ));
    }
    for n in &g.not_in_baseline {
        out.push_str(&format!("  {n}: not in the baseline, not gated\n"));
    }
    for c in &g.caveats {
        out.push_str(&format!("  caveat: {c}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(mean: f64, stddev: f64) -> Summary {
        Summary {
            mean,
            stddev,
            median: mean,
            min: mean,
            max: mean,
            n: 5,
        }
    }

    #[test]
    fn slowdown_thresholds_parse() {
        assert_eq!(parse_slowdown("10%"), Ok(0.1));
        assert_eq!(parse_slowdown("10"), Ok(0.1));
        assert_eq!(parse_slowdown("0.25"), Ok(0.25));
        assert_eq!(parse_slowdown(" 5 % "), Ok(0.05));
        assert!(parse_slowdown("ten").is_err());
        assert!(parse_slowdown("150%").is_err());
        assert!(parse_slowdown("-5%").is_err());
    }

    #[test]
    fn ratio_uncertainty_propagates_relative_deviations() {
        // Standard errors of 5 runs: sd / sqrt(5).
        let (r, sd) = ratio(&summary(90.0, 9.0), &summary(100.0, 0.0));
        assert!((r - 0.9).abs() < 1e-12);
        assert!((sd - 0.09 / 5f64.sqrt()).abs() < 1e-12);
        let (_, sd) = ratio(&summary(100.0, 3.0), &summary(100.0, 4.0));
        assert!((sd - 0.05 / 5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn noise_within_the_spread_is_not_a_regression_but_a_clear_slowdown_is() {
        let max = 0.10;
        // 15% slower, but the runs' spread is 20% (5 runs: a standard error of 9%):
        // 0.15 - 0.076 < 0.10.
        let (r, sd) = ratio(&summary(85.0, 17.0), &summary(100.0, 1.0));
        assert!((1.0 - r) - sd <= max, "{r} {sd}");
        // 30% slower with a tight spread.
        let (r, sd) = ratio(&summary(70.0, 1.0), &summary(100.0, 1.0));
        assert!((1.0 - r) - sd > max);
    }

    /// A row of a report: raw rates and the machine-normalized ones.
    fn result_row(raw_decode: f64, per_gb: f64, read_fraction: f64) -> BackendResult {
        let seed: &[u8] =
            include_bytes!("../../bench-results/2026-11-22-4c22cf8015c2-synthetic-gpt2.json");
        let v: serde_json::Value = serde_json::from_slice(seed).unwrap();
        let mut row: serde_json::Value = v["results"][3].clone(); // simd-kv
        row["decode_tok_per_s"] = serde_json::to_value(summary(raw_decode, 1.0)).unwrap();
        row["decode_read_fraction"] = serde_json::json!(read_fraction);
        row["machine_normalized"] = serde_json::json!({
            "machine_read_gb_per_s": 30.0,
            "machine_peak_gflops": 200.0,
            "prefill_tok_per_peak_gflop": summary(1.0, 0.01),
            "decode_tok_per_read_gb": summary(per_gb, 0.01 * per_gb),
            "decode_tok_per_peak_gflop": summary(0.3, 0.003),
        });
        serde_json::from_value(row).unwrap()
    }

    /// The gate judges the code, not the machine: the machine at half speed (raw tok/s halved,
    /// the same per GB/s read) passes; the code 20% slower on an unchanged machine fails.
    #[test]
    fn machine_swings_pass_and_a_slower_code_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        let seed: &[u8] =
            include_bytes!("../../bench-results/2026-11-22-4c22cf8015c2-synthetic-gpt2.json");
        let mut v: serde_json::Value = serde_json::from_slice(seed).unwrap();
        let base_row = serde_json::to_value(result_row(50.0, 1.5, 0.9)).unwrap();
        v["results"] = serde_json::json!([base_row]);
        std::fs::write(&path, v.to_string()).unwrap();
        let baseline = Baseline::load(&path).unwrap();
        let checksum = v["model"]["checksum"].as_str().unwrap().to_string();
        let (checksum, cpu) = (checksum.as_str(), "same cpu");
        let gate = |row: BackendResult| compare(&baseline, &[row], checksum, cpu, "avx2+fma", 0.10);

        let slow_machine = gate(result_row(25.0, 1.5, 0.9));
        assert!(!slow_machine.regressed, "{}", render(&slow_machine));
        let decode = &slow_machine.comparisons[1];
        assert_eq!(decode.metric, "decode per GB/s read");
        assert!((decode.now_tok_per_s - 25.0).abs() < 1e-9);

        let slow_code = gate(result_row(40.0, 1.2, 0.9));
        assert!(slow_code.regressed, "{}", render(&slow_code));
        assert!(render(&slow_code).contains("decode per GB/s read: slower by 20.0%"));

        // A regression must reproduce: a rerun that is fine clears it, one that is slow too
        // confirms it.
        let mut cleared = gate(result_row(40.0, 1.2, 0.9));
        cleared.confirm(&gate(result_row(50.0, 1.5, 0.9)));
        assert!(!cleared.regressed, "{}", render(&cleared));
        assert!(render(&cleared).contains("not confirmed"));
        let mut confirmed = gate(result_row(40.0, 1.2, 0.9));
        confirmed.confirm(&gate(result_row(40.0, 1.2, 0.9)));
        assert!(confirmed.regressed);
        assert!(render(&confirmed).contains("REGRESSION (confirmed by a rerun"));

        // A decode that does not stream weights (in neither report) is judged against the FMA
        // pass instead.
        v["results"] =
            serde_json::json!([serde_json::to_value(result_row(5.0, 1.5, 0.1)).unwrap()]);
        std::fs::write(&path, v.to_string()).unwrap();
        let baseline = Baseline::load(&path).unwrap();
        let compute_bound = compare(
            &baseline,
            &[result_row(5.0, 1.5, 0.1)],
            checksum,
            cpu,
            "avx2+fma",
            0.1,
        );
        assert_eq!(compute_bound.comparisons[1].metric, "decode per GFLOP/s");

        // A baseline whose probes ran other kernels (avx2+fma; this run's ran avx512) is
        // compared in raw tok/s, with the reason said.
        let other_probes = compare(
            &baseline,
            &[result_row(5.0, 1.5, 0.1)],
            checksum,
            cpu,
            "avx512",
            0.1,
        );
        assert_eq!(other_probes.comparisons[0].metric, "prefill tok/s");
        assert!(
            other_probes
                .caveats
                .iter()
                .any(|c| c.contains("ran the avx2+fma kernels")),
            "{:?}",
            other_probes.caveats
        );
    }

    /// A saved report of this project, mutated (values of the wrong type, huge, negative or
    /// non-finite numbers, cut short, ...): loading it as a baseline must give a baseline whose
    /// every rate is positive and finite, or an error; never a panic.
    #[test]
    fn mutated_baselines_are_errors_or_valid_never_panics() {
        use crate::fuzz_support::{Rng, iterations_and_seed, mutate_json};
        let seed_report: &[u8] =
            include_bytes!("../../bench-results/2026-11-22-4c22cf8015c2-synthetic-gpt2.json");
        let (iterations, seed) = iterations_and_seed(2_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        std::fs::write(&path, seed_report).unwrap();
        Baseline::load(&path).expect("the seed report loads");
        let mut rng = Rng(seed);
        let mut accepted = 0;
        for i in 0..iterations {
            let bytes = mutate_json(&mut rng, seed_report);
            std::fs::write(&path, &bytes).unwrap();
            match Baseline::load(&path) {
                Ok(b) => {
                    accepted += 1;
                    assert!(validate(&b.file).is_ok(), "iteration {i}");
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    assert!(text.contains("--baseline"), "iteration {i}: {text}");
                }
            }
        }
        assert!(
            accepted > 0 && accepted < iterations,
            "{accepted} of {iterations} accepted"
        );
    }
}
