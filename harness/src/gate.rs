//! The CI regression gate: `--baseline FILE.json --max-slowdown 10%`.
//!
//! Each backend's prefill and decode tok/s are compared with the same backend at the same prompt
//! length in a saved report. Both figures are means over runs with a standard deviation, so the
//! ratio `now / baseline` carries an uncertainty, propagated from the two relative deviations:
//! `sd(r) = r * sqrt((sd_now / now)^2 + (sd_base / base)^2)`. A slowdown `1 - r` counts as a
//! regression only if it exceeds the threshold even after subtracting that uncertainty, so noise
//! within the runs' own spread never fails a build, and a large slowdown always does.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::report::{BackendResult, SCHEMA_VERSION};
use crate::stats::Summary;

/// The fields of a saved report the gate reads (everything else is ignored; the schema version
/// is checked on the raw JSON first).
#[derive(Deserialize)]
struct BaselineFile {
    model: BaselineModel,
    machine: BaselineMachine,
    results: Vec<BaselineRow>,
}

#[derive(Deserialize)]
struct BaselineModel {
    name: String,
    checksum: String,
}

#[derive(Deserialize)]
struct BaselineMachine {
    cpu: String,
    git_commit: String,
}

#[derive(Deserialize)]
struct BaselineRow {
    backend: String,
    prompt_tokens: usize,
    threads: usize,
    prefill_tok_per_s: Summary,
    decode_tok_per_s: Option<Summary>,
}

/// A loaded baseline.
pub struct Baseline {
    path: PathBuf,
    file: BaselineFile,
}

impl Baseline {
    pub fn load(path: &Path) -> anyhow::Result<Baseline> {
        let text =
            gpt2_weights::input::read_text_limited(path, gpt2_weights::input::MAX_TEXT_FILE_BYTES)
                .with_context(|| format!("--baseline {}", path.display()))?;
        let version: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "--baseline {}: not JSON; give a report saved with --format json or --save",
                path.display()
            )
        })?;
        let found = version["schema_version"].as_u64();
        if found != Some(u64::from(SCHEMA_VERSION)) {
            bail!(
                "--baseline {}: report schema version {} but this gpt2-bench writes {}; re-run \
                 the baseline with this version",
                path.display(),
                found.map_or("missing".to_string(), |v| v.to_string()),
                SCHEMA_VERSION
            );
        }
        let file: BaselineFile = serde_json::from_value(version).with_context(|| {
            format!(
                "--baseline {}: not a gpt2-bench --compare report",
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
fn validate(file: &BaselineFile) -> Result<(), String> {
    if file.results.is_empty() {
        return Err("it has no results".into());
    }
    for row in &file.results {
        let name = gpt2_weights::input::printable(&row.backend);
        let summaries = [
            ("prefill_tok_per_s", Some(&row.prefill_tok_per_s)),
            ("decode_tok_per_s", row.decode_tok_per_s.as_ref()),
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

/// One metric of one backend, now against the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub backend: String,
    pub prompt_tokens: usize,
    /// `decode_tok_per_s` or `prefill_tok_per_s`.
    pub metric: &'static str,
    pub baseline: Summary,
    pub now: Summary,
    /// now / baseline (above 1 is faster).
    pub ratio: f64,
    pub ratio_stddev: f64,
    /// The slowdown minus its uncertainty exceeds the threshold.
    pub regression: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub baseline_file: String,
    /// Largest tolerated slowdown, as a fraction (0.1 = 10%).
    pub max_slowdown: f64,
    pub comparisons: Vec<Comparison>,
    /// Backends or lengths present now but not in the baseline (not gated).
    pub not_in_baseline: Vec<String>,
    /// Why the two runs may not be comparable (other model, machine or thread count).
    pub caveats: Vec<String>,
    pub regressed: bool,
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

fn ratio(now: &Summary, base: &Summary) -> (f64, f64) {
    let r = now.mean / base.mean;
    let rel = |s: &Summary| if s.mean > 0.0 { s.stddev / s.mean } else { 0.0 };
    (r, r * (rel(now).powi(2) + rel(base).powi(2)).sqrt())
}

/// Compares `results` with the baseline.
pub fn compare(
    baseline: &Baseline,
    results: &[BackendResult],
    model_checksum: &str,
    cpu: &str,
    max_slowdown: f64,
) -> Gate {
    let b = &baseline.file;
    let mut caveats = Vec::new();
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
                "{} ran with {} threads in the baseline, {} now",
                r.backend, base.threads, r.threads
            ));
        }
        let pairs = [
            (
                "prefill_tok_per_s",
                Some(&base.prefill_tok_per_s),
                Some(&r.prefill_tok_per_s),
            ),
            (
                "decode_tok_per_s",
                base.decode_tok_per_s.as_ref(),
                r.decode_tok_per_s.as_ref(),
            ),
        ];
        for (metric, base_s, now_s) in pairs {
            let (Some(base_s), Some(now_s)) = (base_s, now_s) else {
                continue;
            };
            let (ratio, ratio_stddev) = ratio(now_s, base_s);
            comparisons.push(Comparison {
                backend: r.backend.clone(),
                prompt_tokens: r.prompt_tokens,
                metric,
                baseline: *base_s,
                now: *now_s,
                ratio,
                ratio_stddev,
                // A NaN anywhere counts as a regression, never as a pass.
                regression: ((1.0 - ratio) - ratio_stddev)
                    .partial_cmp(&max_slowdown)
                    .is_none_or(|o| o == std::cmp::Ordering::Greater),
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

/// One line per comparison: "faster/slower by x% ± y%".
pub fn render(g: &Gate) -> String {
    let mut out = format!(
        "Against baseline {} (regression: slower by more than {:.0}% after subtracting the \
         uncertainty):\n",
        g.baseline_file,
        g.max_slowdown * 100.0
    );
    for c in &g.comparisons {
        let change = (c.ratio - 1.0) * 100.0;
        let direction = if change >= 0.0 { "faster" } else { "slower" };
        out.push_str(&format!(
            "  {} ({}-token prompt) {}: {direction} by {:.1}% ± {:.1}% ({:.2} ± {:.2} -> {:.2} \
             ± {:.2} tok/s){}\n",
            c.backend,
            c.prompt_tokens,
            c.metric.trim_end_matches("_tok_per_s"),
            change.abs(),
            c.ratio_stddev * 100.0,
            c.baseline.mean,
            c.baseline.stddev,
            c.now.mean,
            c.now.stddev,
            if c.regression { "  REGRESSION" } else { "" }
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
        let (r, sd) = ratio(&summary(90.0, 9.0), &summary(100.0, 0.0));
        assert!((r - 0.9).abs() < 1e-12);
        assert!((sd - 0.09).abs() < 1e-12);
        let (_, sd) = ratio(&summary(100.0, 3.0), &summary(100.0, 4.0));
        assert!((sd - 0.05).abs() < 1e-12);
    }

    #[test]
    fn noise_within_the_spread_is_not_a_regression_but_a_clear_slowdown_is() {
        let max = 0.10;
        // 15% slower, but the runs' spread is 10%: 0.15 - 0.085 < 0.10.
        let (r, sd) = ratio(&summary(85.0, 8.5), &summary(100.0, 1.0));
        assert!((1.0 - r) - sd <= max);
        // 30% slower with a tight spread.
        let (r, sd) = ratio(&summary(70.0, 1.0), &summary(100.0, 1.0));
        assert!((1.0 - r) - sd > max);
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
