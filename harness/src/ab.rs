//! `gpt2-bench ab`: the regression gate for a noisy, shared machine. The baseline binary and the
//! candidate run alternately, round after round, in one job, and what is judged is each round's
//! candidate / baseline ratio.
//!
//! Why not a saved baseline (`compare --baseline`): a report saved yesterday, or a minute ago,
//! was measured on a different machine state, and on a 2-core VM the machine swings by 20-60%
//! between runs. Normalizing by a bandwidth or FMA pass taken beside the run cancels part of it
//! and adds its own scatter (docs/ci.md has the measurements). Here both binaries meet the same
//! swings: the two runs of a round are seconds apart, their order alternates from round to round
//! (so neither always runs first, on a cooler or warmer machine), and a slow stretch slows both
//! of a round alike and cancels in its ratio.
//!
//! The verdict, per backend, prompt length and phase (prefill, decode), uses each side's
//! **best** rate: the fastest run of all its rounds. Another program on the machine only ever
//! slows a run down, so the fastest of many runs is what the code does when nothing interferes,
//! and it moves little when the machine is busy, where means and medians swing by 20-40% (the
//! first version of this gate judged per-round ratios of means with a t interval and raised 2
//! false alarms in 6 unchanged runs beside a compile). A **regression**: both the candidate's
//! best over the baseline's best and the median of the per-round ratios (of each child's best
//! run) are below `1 - max_slowdown`. The two fail on different noise (one lucky run moves the
//! first, a slow stretch over half the rounds the second), so requiring both keeps a busy machine
//! from failing a build (the second version required the median only below 1: 2 false alarms in
//! 11), while a real slowdown moves both.
//! Every child is an ordinary `compare --format json` run; a disagreement of tokens inside
//! either binary is reported as what it is (an error), not as speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::record::read_report;
use crate::stats::Summary;

/// Flags of `compare` that `ab` sets itself or that would make no sense in a child.
const RESERVED: [&str; 8] = [
    "--format",
    "--baseline",
    "--save",
    "--plot",
    "--wide",
    "--quiet",
    "-q",
    "--no-roofline",
];

/// One row of a child's report: what it measured, its best run's rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// `simd-kv`, with ` @ N tokens` when the run had several prompt lengths.
    pub label: String,
    pub prefill_tok_per_s: f64,
    pub decode_tok_per_s: Option<f64>,
}

/// What a child ran, as its report says: two children are compared only when all of it is
/// equal, since a baseline that ran another model, prompt or length measures something else.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdentity {
    /// The checksum of every weight file, in order.
    pub model_checksums: Vec<String>,
    pub prompt_token_ids: Vec<u64>,
    pub max_tokens: u64,
    /// Every row's label and the tokens it generated, in order.
    pub rows: Vec<(String, u64)>,
}

impl RunIdentity {
    /// How `other` differs from `self`, in words; `None` when it does not.
    fn difference(&self, other: &RunIdentity) -> Option<String> {
        let short = |c: &[String]| {
            c.iter()
                .map(|c| gpt2_weights::input::printable(c))
                .collect::<Vec<_>>()
                .join(",")
        };
        if self.model_checksums != other.model_checksums {
            return Some(format!(
                "model: weight checksum {} against {}",
                short(&other.model_checksums),
                short(&self.model_checksums)
            ));
        }
        if self.prompt_token_ids != other.prompt_token_ids {
            let (a, b) = (&self.prompt_token_ids, &other.prompt_token_ids);
            if a.len() != b.len() {
                return Some(format!("prompt: {} tokens against {}", b.len(), a.len()));
            }
            let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
            return Some(format!(
                "prompt: token {at} is id {} against {} (the binaries tokenize differently)",
                b[at], a[at]
            ));
        }
        if self.max_tokens != other.max_tokens {
            return Some(format!(
                "token count: --max-tokens {} against {}",
                other.max_tokens, self.max_tokens
            ));
        }
        let labels = |r: &[(String, u64)]| r.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
        if labels(&self.rows) != labels(&other.rows) {
            return Some(format!(
                "backends: {} against {} (give --backends with the ones both binaries have)",
                labels(&other.rows).join(","),
                labels(&self.rows).join(",")
            ));
        }
        if let Some(((label, a), (_, b))) = self
            .rows
            .iter()
            .zip(&other.rows)
            .find(|((_, a), (_, b))| a != b)
        {
            return Some(format!("tokens generated by {label}: {b} against {a}"));
        }
        None
    }
}

/// A child's report: what it ran and its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildReport {
    pub identity: RunIdentity,
    pub rows: Vec<Measured>,
}

/// The rows of one `compare --format json` report (read as the [`Report`] it is), every rate
/// checked: a rate that is not a positive, finite number (a broken or foreign binary) would
/// decide the gate with nonsense.
pub fn rows_of_report(json: &str) -> anyhow::Result<ChildReport> {
    let report = read_report(json.as_bytes())?;
    let lengths: std::collections::BTreeSet<usize> =
        report.results.iter().map(|r| r.prompt_tokens).collect();
    let best = |label: &str, key: &str, s: Option<&Summary>| -> anyhow::Result<Option<f64>> {
        match s.map(|s| s.max) {
            None => Ok(None),
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
            Some(x) => bail!("its {label} row reports {key} {x}, not a positive rate"),
        }
    };
    let mut rows = Vec::new();
    let mut identity_rows = Vec::new();
    for r in &report.results {
        // Reports saved before labels name rows by backend.
        let name = if r.label.is_empty() {
            &r.backend
        } else {
            &r.label
        };
        let label = if lengths.len() > 1 {
            format!("{name} @ {} tokens", r.prompt_tokens)
        } else {
            name.clone()
        };
        let prefill_tok_per_s = best(&label, "prefill_tok_per_s", Some(&r.prefill_tok_per_s))?
            .context("unreachable: a prefill rate is always present")?;
        let decode_tok_per_s = best(&label, "decode_tok_per_s", r.decode_tok_per_s.as_ref())?;
        identity_rows.push((label.clone(), r.new_tokens as u64));
        rows.push(Measured {
            label,
            prefill_tok_per_s,
            decode_tok_per_s,
        });
    }
    let identity = RunIdentity {
        model_checksums: report.files().iter().map(|m| m.checksum.clone()).collect(),
        prompt_token_ids: report
            .prompt_token_ids
            .iter()
            .map(|&t| u64::from(t))
            .collect(),
        max_tokens: report.max_tokens as u64,
        rows: identity_rows,
    };
    Ok(ChildReport { identity, rows })
}

/// Which binary a child run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Baseline,
    Candidate,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Candidate => "candidate",
        }
    }
}

/// `ab --timeout SECONDS`: a positive number of seconds, at most a week.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match gpt2_process::cli::parse_seconds(s, 604_800.0) {
        Some(d) => Ok(d),
        None => Err(format!(
            "{} is not a number of seconds between 0 and 604800 (a week); e.g. 1800",
            gpt2_weights::input::printable(s)
        )),
    }
}

/// A command line as a person pastes it into a POSIX shell: each word quoted when it needs to be.
pub fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:@%+".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `bin compare ARGS --format json -q --no-roofline` (within `timeout`) and returns its
/// report. A child whose backends disagree on the tokens is an error saying so (exit status 1
/// of the child).
fn measure(
    side: Side,
    bin: &Path,
    compare_args: &[String],
    timeout: Duration,
) -> anyhow::Result<ChildReport> {
    // A bare name (`gpt2-bench`) was checked as a file here; run that file, not one on PATH.
    let bin = if bin.components().count() == 1 && bin.is_relative() {
        Path::new(".").join(bin)
    } else {
        bin.to_path_buf()
    };
    let bin = bin.as_path();
    let mut command = Command::new(bin);
    command
        .arg("compare")
        .args(compare_args)
        .args(["--format", "json", "-q", "--no-roofline"]);
    let out = gpt2_process::child::run(&mut command, Some(timeout))
        .with_context(|| format!("the {} binary {}", side.name(), bin.display()))?;
    match out.status.code() {
        Some(0) => {}
        Some(1) => {
            let mut words = vec![bin.display().to_string(), "compare".to_string()];
            words.extend(compare_args.iter().cloned());
            bail!(
                "the {} binary's backends produced different tokens, so their speed is not \
                 compared: run `{}` to see where",
                side.name(),
                shell_line(&words)
            )
        }
        _ => bail!(
            "the {} binary {} failed ({})",
            side.name(),
            bin.display(),
            out.failure()
        ),
    }
    rows_of_report(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("the {} binary's report", side.name()))
}

/// One gated quantity: a row's phase.
#[derive(Debug, Clone)]
pub struct Judged {
    pub label: String,
    pub phase: &'static str,
    /// Candidate / baseline of each round's best runs (above 1: the candidate is faster).
    pub ratios: Vec<f64>,
    pub median: f64,
    /// The candidate's best rate over all rounds / the baseline's.
    pub best_ratio: f64,
    pub regression: bool,
}

/// The verdict on one quantity from each round's (baseline, candidate) best rates (see the
/// module docs).
pub fn judge(label: &str, phase: &'static str, pairs: &[(f64, f64)], max_slowdown: f64) -> Judged {
    let ratios: Vec<f64> = pairs.iter().map(|(b, c)| c / b).collect();
    let n = ratios.len();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let best = |pick: fn(&(f64, f64)) -> f64| pairs.iter().map(pick).fold(0.0, f64::max);
    let best_ratio = best(|p| p.1) / best(|p| p.0);
    Judged {
        label: label.to_string(),
        phase,
        regression: n >= 3 && best_ratio < 1.0 - max_slowdown && median < 1.0 - max_slowdown,
        ratios,
        median,
        best_ratio,
    }
}

/// What `ab` was asked.
#[derive(Debug, Clone)]
pub struct AbPlan {
    pub baseline: PathBuf,
    pub candidate: PathBuf,
    pub rounds: usize,
    pub max_slowdown: f64,
    pub compare_args: Vec<String>,
    /// The longest one child may run.
    pub timeout: Duration,
}

/// Checks the plan before anything runs.
pub fn check(plan: &AbPlan) -> anyhow::Result<()> {
    if plan.rounds < 3 {
        bail!(
            "--rounds {}: at least 3 rounds, so one disturbed round cannot decide",
            plan.rounds
        );
    }
    for (flag, path) in [
        ("--baseline-bin", &plan.baseline),
        ("--candidate-bin", &plan.candidate),
    ] {
        if !path.is_file() {
            bail!(
                "{flag} {}: no such file; give the path of a built gpt2-bench",
                path.display()
            );
        }
    }
    if let Some(flag) = plan
        .compare_args
        .iter()
        .find(|a| RESERVED.contains(&a.split('=').next().unwrap_or(a)))
    {
        bail!(
            "{flag} after `--`: `ab` sets the children's output itself; give only what to run \
             (--model, --backends, --prompt..., --max-tokens, --runs, --threads)"
        );
    }
    Ok(())
}

/// Runs the rounds, printing one line per child run through `say`, and returns the verdicts.
pub fn run(plan: &AbPlan, say: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<Judged>> {
    check(plan)?;
    // rows[side][round]
    let mut rows: [Vec<Vec<Measured>>; 2] = [Vec::new(), Vec::new()];
    let mut first_identity: Option<RunIdentity> = None;
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 {
            [Side::Baseline, Side::Candidate]
        } else {
            [Side::Candidate, Side::Baseline]
        };
        for side in order {
            let bin = match side {
                Side::Baseline => &plan.baseline,
                Side::Candidate => &plan.candidate,
            };
            let report = measure(side, bin, &plan.compare_args, plan.timeout)?;
            // Every child must have run what the first one did.
            let first = first_identity.get_or_insert_with(|| report.identity.clone());
            if let Some(difference) = first.difference(&report.identity) {
                bail!(
                    "round {} of the {} binary ran something else than round 1 of the \
                     baseline, so their speeds are not comparable: {difference}; both binaries \
                     must run the same model, prompt, token count and backends (is \
                     --baseline-bin a gpt2-bench of this project?)",
                    round + 1,
                    side.name()
                );
            }
            let measured = report.rows;
            let shown: Vec<String> = measured
                .iter()
                .map(|m| match m.decode_tok_per_s {
                    Some(d) => format!(
                        "{} prefill {:.1} decode {d:.2} tok/s",
                        m.label, m.prefill_tok_per_s
                    ),
                    None => format!("{} prefill {:.1} tok/s", m.label, m.prefill_tok_per_s),
                })
                .collect();
            say(&format!(
                "round {}/{} {:<9} {}\n",
                round + 1,
                plan.rounds,
                side.name(),
                shown.join("; ")
            ));
            rows[side as usize].push(measured);
        }
    }
    let mut judged = Vec::new();
    for m in &rows[Side::Baseline as usize][0] {
        let find = |side: Side, round: usize| {
            rows[side as usize][round]
                .iter()
                .find(|c| c.label == m.label)
                .cloned()
        };
        let pairs: Vec<(Measured, Measured)> = (0..plan.rounds)
            .filter_map(|r| Some((find(Side::Baseline, r)?, find(Side::Candidate, r)?)))
            .collect();
        if pairs.len() < plan.rounds {
            continue;
        }
        let prefill: Vec<(f64, f64)> = pairs
            .iter()
            .map(|(b, c)| (b.prefill_tok_per_s, c.prefill_tok_per_s))
            .collect();
        judged.push(judge(&m.label, "prefill", &prefill, plan.max_slowdown));
        let decode: Option<Vec<(f64, f64)>> = pairs
            .iter()
            .map(|(b, c)| Some((b.decode_tok_per_s?, c.decode_tok_per_s?)))
            .collect();
        if let Some(decode) = decode {
            judged.push(judge(&m.label, "decode", &decode, plan.max_slowdown));
        }
    }
    if judged.is_empty() {
        bail!(
            "nothing to gate: the baseline and the candidate measured no backend in common \
             (check --backends and that both binaries know those backends)"
        );
    }
    Ok(judged)
}

/// The verdict table.
pub fn render(judged: &[Judged], max_slowdown: f64) -> String {
    let mut s = format!(
        "candidate / baseline (above 1: the candidate is faster), best run of every round; a \
         regression is a best-of-all ratio and a median of rounds both below {:.2}\n",
        1.0 - max_slowdown
    );
    for j in judged {
        let ratios: Vec<String> = j.ratios.iter().map(|r| format!("{r:.3}")).collect();
        s.push_str(&format!(
            "  {:<24} {:<7} best {:.3}  median {:.3}  rounds {}  {}\n",
            j.label,
            j.phase,
            j.best_ratio,
            j.median,
            ratios.join(" "),
            if j.regression { "REGRESSION" } else { "ok" }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (baseline, candidate) best rates per round.
    fn pairs(baseline: &[f64], candidate: &[f64]) -> Vec<(f64, f64)> {
        baseline
            .iter()
            .copied()
            .zip(candidate.iter().copied())
            .collect()
    }

    #[test]
    fn a_steady_slowdown_is_a_regression_and_noise_is_not() {
        let slow = judge(
            "x",
            "decode",
            &pairs(
                &[50.0, 48.0, 51.0, 40.0, 49.0],
                &[40.0, 39.0, 41.0, 30.0, 40.5],
            ),
            0.1,
        );
        assert!(slow.regression, "{slow:?}");
        assert!((slow.best_ratio - 41.0 / 51.0).abs() < 1e-12);
        // Unchanged code on a busy machine: rounds swing, each side's best stays put.
        let noisy = judge(
            "x",
            "decode",
            &pairs(
                &[50.0, 31.0, 49.0, 45.0, 50.5],
                &[33.0, 50.0, 36.0, 50.0, 42.0],
            ),
            0.1,
        );
        assert!(!noisy.regression && noisy.best_ratio > 0.98, "{noisy:?}");
        // One lucky baseline run, the rounds otherwise even: not a regression; nor a slow
        // stretch over half the rounds with the bests even.
        let stretch = judge(
            "x",
            "decode",
            &pairs(
                &[50.0, 50.0, 50.0, 50.0, 50.0],
                &[49.0, 40.0, 41.0, 42.0, 50.0],
            ),
            0.1,
        );
        assert!(!stretch.regression && stretch.median < 0.9, "{stretch:?}");
        let lucky = judge(
            "x",
            "decode",
            &pairs(
                &[70.0, 40.0, 41.0, 40.0, 39.0],
                &[41.0, 41.0, 42.0, 40.5, 40.0],
            ),
            0.1,
        );
        assert!(!lucky.regression, "{lucky:?}");
        // Slower, but within the allowed slowdown.
        let small = judge("x", "decode", &pairs(&[50.0; 5], &[47.0; 5]), 0.1);
        assert!(!small.regression, "{small:?}");
        // Too few rounds decide nothing.
        assert!(!judge("x", "decode", &pairs(&[50.0, 50.0], &[10.0, 10.0]), 0.1).regression);
    }

    #[test]
    fn reports_are_read_by_label_and_length() {
        // A real report, its first row given two prompt lengths.
        let seed: &[u8] =
            include_bytes!("../../bench-results/2026-11-22-4c22cf8015c2-synthetic-gpt2.json");
        let mut v: serde_json::Value = serde_json::from_slice(seed).unwrap();
        let mut row = v["results"][0].clone();
        row["label"] = "simd-kv".into();
        row["prompt_tokens"] = 5.into();
        row["new_tokens"] = 8.into();
        row["prefill_tok_per_s"]["max"] = 123.25.into();
        row["decode_tok_per_s"]["max"] = 50.0.into();
        let mut long = row.clone();
        long["prompt_tokens"] = 128.into();
        long["new_tokens"] = 1.into();
        long["decode_tok_per_s"] = serde_json::Value::Null;
        v["results"] = serde_json::json!([row, long]);
        let json = v.to_string();
        let report = rows_of_report(&json).unwrap();
        let rows = &report.rows;
        assert_eq!(rows[0].label, "simd-kv @ 5 tokens");
        assert_eq!(
            (rows[0].prefill_tok_per_s, rows[0].decode_tok_per_s),
            (123.25, Some(50.0))
        );
        assert_eq!(rows[1].decode_tok_per_s, None);
        assert_eq!(
            report.identity.model_checksums,
            [v["model"]["checksum"].as_str().unwrap()]
        );
        assert_eq!(report.identity.rows[1], ("simd-kv @ 128 tokens".into(), 1));
        assert!(rows_of_report("{}").is_err());
        // Rates that are not positive and finite are refused, naming the row; ones that are
        // not numbers (serde_json reads neither 1e999 nor "NaN" as f64) as not a report.
        let e = rows_of_report(&json.replacen("123.25", "1e999", 1)).unwrap_err();
        assert!(format!("{e:#}").contains("not JSON"), "{e:#}");
        for bad in ["0.0", "-5.0"] {
            let e = rows_of_report(&json.replacen("123.25", bad, 1)).unwrap_err();
            assert!(
                e.to_string()
                    .contains("simd-kv @ 5 tokens row reports prefill_tok_per_s"),
                "{bad}: {e}"
            );
        }
        for bad in ["\"NaN\"", "null"] {
            let e = rows_of_report(&json.replacen("123.25", bad, 1)).unwrap_err();
            assert!(
                format!("{e:#}").contains("not a gpt2-bench compare report"),
                "{bad}: {e:#}"
            );
        }
    }

    #[test]
    fn children_that_ran_something_else_are_told_apart() {
        let id = |sum: &str, prompt: &[u64], max: u64, rows: &[(&str, u64)]| RunIdentity {
            model_checksums: vec![sum.into()],
            prompt_token_ids: prompt.to_vec(),
            max_tokens: max,
            rows: rows.iter().map(|(l, n)| (l.to_string(), *n)).collect(),
        };
        let base = id("aaaa", &[1, 2], 8, &[("naive", 8), ("simd", 8)]);
        assert_eq!(base.difference(&base.clone()), None);
        let cases = [
            (
                id("bbbb", &[1, 2], 8, &[("naive", 8), ("simd", 8)]),
                "model: weight checksum bbbb",
            ),
            (
                id("aaaa", &[1, 3], 8, &[("naive", 8), ("simd", 8)]),
                "prompt:",
            ),
            (
                id("aaaa", &[1, 2], 9, &[("naive", 8), ("simd", 8)]),
                "token count: --max-tokens 9",
            ),
            (
                id("aaaa", &[1, 2], 8, &[("naive", 8)]),
                "backends: naive against naive,simd",
            ),
            (
                id("aaaa", &[1, 2], 8, &[("naive", 8), ("simd", 7)]),
                "tokens generated by simd: 7",
            ),
        ];
        for (other, says) in cases {
            let d = base.difference(&other).unwrap();
            assert!(d.starts_with(says), "{d}");
        }
    }

    #[test]
    fn suggested_commands_paste_into_a_shell() {
        let words: Vec<String> = [
            "/tmp/my dir/gpt2-bench",
            "compare",
            "--prompt",
            "it's",
            "--runs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            shell_line(&words),
            r"'/tmp/my dir/gpt2-bench' compare --prompt 'it'\''s' --runs 1"
        );
        assert_eq!(parse_timeout("90").unwrap(), Duration::from_secs(90));
        for bad in ["0", "-1", "nan", "inf", "1e9", "x"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
