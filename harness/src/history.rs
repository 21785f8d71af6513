//! `gpt2-bench history`: the stored runs ([`crate::store`]) as trends. Rows are grouped into
//! series (same model, dtype, backend, kernels' ISA, threads, prompt length and KV cache dtype,
//! on one machine); within a series, every run saved at one commit is pooled, and the commits
//! are listed in the order of their first run's date (the store knows dates, not the git
//! graph; an old run imported today keeps its own date).
//!
//! Each commit's figures are per-run rates (prefill tok/s and decode tok/s of every measured
//! run of every saved run at that commit, recomputed from the raw samples), summarised as mean
//! ± stddev. A change from the commit before is marked beyond the noise by the two tests
//! `gpt2-bench ab` makes (see `ab.rs`), on the pooled runs: the ratio of the fastest runs
//! **and** the ratio of the medians must both be past the threshold (below `1 - t` or above
//! `1 + t`), in the same direction. Another program only ever slows a run down, so the fastest
//! run moves little on a busy machine, and the median catches what one lucky run hides; a real
//! change moves both. Unlike `ab`, whose rounds pair the two builds seconds apart, the runs of
//! two commits were measured at different times, unpaired: the marks say where to look, and
//! `ab` confirms. At least 3 measured runs on each side, else the change is shown, not judged.

use serde::Serialize;

use crate::stats::{Summary, percentile};
use crate::store::{Filter, Store, StoredRow};

/// What identifies a series: the runs that measure the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    /// The machine: series of different machines never pool (`--machine all`).
    pub machine: String,
    pub model: String,
    pub dtype: String,
    pub backend: String,
    pub isa: String,
    pub threads: i64,
    pub prompt_tokens: i64,
    pub kv_cache_dtype: String,
}

/// A change between two consecutive commits of a series, in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// This commit's median run over the previous commit's (above 1: faster).
    pub median_ratio: f64,
    /// This commit's fastest run over the previous commit's.
    pub best_ratio: f64,
    /// `faster` or `slower` (beyond the noise), `within noise`, or `not judged` (fewer than 3
    /// runs on a side).
    pub verdict: &'static str,
}

/// One commit of a series.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub git_commit: String,
    /// When the first run at this commit started, and how many saved runs it pools.
    pub first_date_utc: String,
    pub saved_runs: usize,
    /// Measured runs pooled (each saved run has `--runs` of them).
    pub measured_runs: usize,
    /// `None` when no run had a valid timing (a hostile or damaged record).
    pub prefill_tok_per_s: Option<Summary>,
    pub decode_tok_per_s: Option<Summary>,
    /// Against the commit before in the series (none for the first).
    pub prefill_change: Option<Change>,
    pub decode_change: Option<Change>,
    /// The runs' rates, for the tests of the next commit.
    #[serde(skip)]
    prefill_rates: Vec<f64>,
    #[serde(skip)]
    decode_rates: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    #[serde(flatten)]
    pub key: SeriesKey,
    pub commits: Vec<Point>,
}

/// The history of one machine (or of all): what `history` prints and `report --history` draws.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub store: String,
    /// The machine the rows were read for (`all`: every machine).
    pub machine: String,
    /// The threshold of a change beyond the noise, as a fraction.
    pub threshold: f64,
    pub series: Vec<Series>,
    /// Stored rows left out, with why (a row written by hand whose samples do not parse).
    pub skipped: Vec<String>,
}

/// The verdict on `now` against `before` (per-run rates; see the module docs).
pub fn change(before: &[f64], now: &[f64], threshold: f64) -> Option<Change> {
    if before.is_empty() || now.is_empty() {
        return None;
    }
    let best = |xs: &[f64]| xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let median_ratio = percentile(now, 50.0) / percentile(before, 50.0);
    let best_ratio = best(now) / best(before);
    let verdict = if before.len() < 3 || now.len() < 3 {
        "not judged"
    } else if median_ratio < 1.0 - threshold && best_ratio < 1.0 - threshold {
        "slower"
    } else if median_ratio > 1.0 + threshold && best_ratio > 1.0 + threshold {
        "faster"
    } else {
        "within noise"
    };
    Some(Change {
        median_ratio,
        best_ratio,
        verdict,
    })
}

/// Groups stored rows into series and commits (see the module docs).
pub fn build(
    rows: &[StoredRow],
    store: &str,
    machine: &str,
    threshold: f64,
) -> anyhow::Result<History> {
    let mut by_series: std::collections::BTreeMap<SeriesKey, Vec<&StoredRow>> = Default::default();
    for r in rows {
        let key = SeriesKey {
            machine: r.machine.clone(),
            model: r.model_name.clone(),
            dtype: r.dtype.clone(),
            backend: r.backend.clone(),
            isa: r.isa.clone(),
            threads: r.threads,
            prompt_tokens: r.prompt_tokens,
            kv_cache_dtype: r.kv_cache_dtype.clone(),
        };
        by_series.entry(key).or_default().push(r);
    }
    let (mut series, mut skipped) = (Vec::new(), Vec::new());
    for (key, rows) in by_series {
        // Rows are oldest first: a commit's place is its first run's.
        let mut commits: Vec<Point> = Vec::new();
        let mut runs_of: Vec<std::collections::BTreeSet<&str>> = Vec::new();
        for r in rows {
            let (prefill, decode) = match r.run_rates() {
                Ok(rates) => rates,
                Err(e) => {
                    skipped.push(format!("{e:#}"));
                    continue;
                }
            };
            let at = match commits.iter().position(|p| p.git_commit == r.git_commit) {
                Some(at) => at,
                None => {
                    commits.push(Point {
                        git_commit: r.git_commit.clone(),
                        first_date_utc: r.date_utc.clone(),
                        saved_runs: 0,
                        measured_runs: 0,
                        prefill_tok_per_s: None,
                        decode_tok_per_s: None,
                        prefill_change: None,
                        decode_change: None,
                        prefill_rates: Vec::new(),
                        decode_rates: Vec::new(),
                    });
                    runs_of.push(Default::default());
                    commits.len() - 1
                }
            };
            runs_of[at].insert(&r.run_key);
            commits[at].prefill_rates.extend(prefill);
            commits[at].decode_rates.extend(decode);
        }
        for (point, runs) in commits.iter_mut().zip(&runs_of) {
            point.saved_runs = runs.len();
            point.measured_runs = point.prefill_rates.len().max(point.decode_rates.len());
            point.prefill_tok_per_s = Summary::of(&point.prefill_rates);
            point.decode_tok_per_s = Summary::of(&point.decode_rates);
        }
        for i in 1..commits.len() {
            let (before, now) = commits.split_at_mut(i);
            let (before, now) = (&before[i - 1], &mut now[0]);
            now.prefill_change = change(&before.prefill_rates, &now.prefill_rates, threshold);
            now.decode_change = change(&before.decode_rates, &now.decode_rates, threshold);
        }
        series.push(Series { key, commits });
    }
    Ok(History {
        store: store.to_string(),
        machine: machine.to_string(),
        threshold,
        series,
        skipped,
    })
}

/// Which machine's rows to read: `all`, a machine exactly as recorded (its CPU name, and its
/// family and model where known), or a part of one that names a single stored machine; by
/// default this machine's. The error lists the stored machines.
pub fn machine_filter(store: &Store, asked: Option<&str>) -> anyhow::Result<Option<String>> {
    let machines = store.machines()?;
    let listing = || {
        machines
            .iter()
            .map(|(cpu, n)| format!("\"{}\" ({n} rows)", gpt2_weights::input::printable(cpu)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match asked {
        Some("") => anyhow::bail!(
            "--machine needs a machine (a part of its name) or `all`; the store has {}",
            listing()
        ),
        Some("all") => Ok(None),
        Some(part) => {
            let lower = part.to_lowercase();
            let matching: Vec<&String> = machines
                .iter()
                .map(|(cpu, _)| cpu)
                .filter(|cpu| *cpu == part || cpu.to_lowercase().contains(&lower))
                .collect();
            match matching.as_slice() {
                [one] => Ok(Some((*one).clone())),
                [] => anyhow::bail!(
                    "--machine {}: no stored run is from such a machine; the store has {}",
                    gpt2_weights::input::printable(part),
                    listing()
                ),
                _ if machines.iter().any(|(cpu, _)| cpu == part) => Ok(Some(part.to_string())),
                _ => anyhow::bail!(
                    "--machine {}: names several machines; give more of one: {}",
                    gpt2_weights::input::printable(part),
                    listing()
                ),
            }
        }
        None => {
            let here = crate::machine::Machine::detect().label();
            if machines.is_empty() || machines.iter().any(|(cpu, _)| *cpu == here) {
                Ok(Some(here))
            } else {
                anyhow::bail!(
                    "no stored run is from this machine (\"{}\"); the store has {}: choose one \
                     with --machine CPU, or --machine all",
                    gpt2_weights::input::printable(&here),
                    listing()
                )
            }
        }
    }
}

/// The threshold of a change beyond the noise when `--threshold` is not given.
pub const DEFAULT_THRESHOLD: f64 = 0.1;

/// Reads the history from a store.
pub fn read(store: &Store, filter: &Filter, threshold: f64) -> anyhow::Result<History> {
    let rows = store.rows(filter)?;
    if rows.is_empty() && (filter.model_name.is_some() || filter.backends.is_some()) {
        // Say what there is instead of an empty history.
        let all = store.rows(&Filter {
            machine: filter.machine.clone(),
            ..Filter::default()
        })?;
        let listed = |pick: fn(&StoredRow) -> &str| {
            let names: std::collections::BTreeSet<&str> = all.iter().map(pick).collect();
            names
                .iter()
                .map(|n| gpt2_weights::input::printable(n))
                .collect::<Vec<_>>()
                .join(", ")
        };
        anyhow::bail!(
            "no stored row matches --model/--backends; the store's rows{} are of models {} and \
             backends {}",
            filter.machine.as_ref().map_or(String::new(), |m| format!(
                " from {}",
                gpt2_weights::input::printable(m)
            )),
            listed(|r| &r.model_name),
            listed(|r| &r.backend)
        );
    }
    build(
        &rows,
        &store.path().display().to_string(),
        filter.machine.as_deref().unwrap_or("all"),
        threshold,
    )
}

/// `+12.3%` of a ratio.
fn percent(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

/// A change as a table cell: the median's change, and the verdict when it is beyond the noise
/// or not judged.
pub fn change_cell(c: Option<&Change>) -> String {
    match c {
        None => String::new(),
        Some(c) => match c.verdict {
            "faster" => format!("{} FASTER", percent(c.median_ratio)),
            "slower" => format!("{} SLOWER", percent(c.median_ratio)),
            "not judged" => format!("{} (few runs)", percent(c.median_ratio)),
            _ => percent(c.median_ratio),
        },
    }
}

/// `mean ± stddev`, or `-` when there is none.
pub fn mean_sd(s: Option<&Summary>) -> String {
    s.map_or_else(
        || "-".into(),
        |s| format!("{:.2} ± {:.2}", s.mean, s.stddev),
    )
}

/// The columns of every view: the machine (with `--machine all`), the series, then
/// [`COMMIT_HEADERS`].
fn headers(history: &History) -> Vec<&'static str> {
    let mut h = Vec::new();
    if history.machine == "all" {
        h.push("machine");
    }
    h.extend([
        "model",
        "dtype",
        "backend",
        "isa",
        "threads",
        "prompt tok",
        "kv cache",
    ]);
    h.extend(COMMIT_HEADERS);
    h
}

/// The cells of one commit, as every view shows them: commit, first run, runs, prefill and
/// its change, decode and its change.
pub fn commit_cells(p: &Point) -> Vec<String> {
    vec![
        p.git_commit.clone(),
        p.first_date_utc.clone(),
        format!("{} ({} measured)", p.saved_runs, p.measured_runs),
        mean_sd(p.prefill_tok_per_s.as_ref()),
        change_cell(p.prefill_change.as_ref()),
        mean_sd(p.decode_tok_per_s.as_ref()),
        change_cell(p.decode_change.as_ref()),
    ]
}

/// The headers of [`commit_cells`].
pub const COMMIT_HEADERS: [&str; 7] = [
    "commit",
    "first run (UTC)",
    "runs",
    "prefill tok/s",
    "prefill change",
    "decode tok/s",
    "decode change",
];

/// Every commit of every series as table cells, in [`headers`] order, made printable (text
/// from a stored record reaches a terminal or a Markdown file).
fn cells(history: &History) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for s in &history.series {
        for p in &s.commits {
            let mut row = Vec::new();
            if history.machine == "all" {
                row.push(s.key.machine.clone());
            }
            row.extend([
                s.key.model.clone(),
                s.key.dtype.clone(),
                s.key.backend.clone(),
                s.key.isa.clone(),
                s.key.threads.to_string(),
                s.key.prompt_tokens.to_string(),
                s.key.kv_cache_dtype.clone(),
            ]);
            row.extend(commit_cells(p));
            rows.push(
                row.iter()
                    .map(|c| gpt2_weights::input::printable_up_to(c, 200))
                    .collect(),
            );
        }
    }
    rows
}

/// What comes before and after every view: where the rows are from, and how changes are judged.
fn preamble(history: &History) -> String {
    format!(
        "{} series from {} (machine: {}); a change is marked FASTER or SLOWER when both the \
         fastest run and the median moved by more than {:.0}% from the commit before (3 \
         measured runs a side at least; confirm with gpt2-bench ab)",
        history.series.len(),
        history.store,
        history.machine,
        history.threshold * 100.0
    )
}

/// The history in `format` (`sql` is the store's rows, handled by the caller).
pub fn render(history: &History, format: crate::render::Format) -> String {
    use crate::render::Format;
    let cells = cells(history);
    let headers = headers(history);
    match format {
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::NOTHING)
                .set_header(&headers);
            for row in &cells {
                table.add_row(row);
            }
            format!("{}\n{table}\n", preamble(history))
        }
        Format::Md => {
            let mut out = format!("{}.\n\n| {} |\n|", preamble(history), headers.join(" | "));
            out.push_str(&"---|".repeat(headers.len()));
            out.push('\n');
            for row in &cells {
                let escaped: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
                out.push_str(&format!("| {} |\n", escaped.join(" | ")));
            }
            out
        }
        Format::Csv => {
            let quote = |c: &str| {
                if c.contains([',', '"', '\n']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.to_string()
                }
            };
            let mut out = headers
                .iter()
                .map(|h| quote(h))
                .collect::<Vec<_>>()
                .join(",")
                + "\n";
            for row in &cells {
                out.push_str(&(row.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",") + "\n"));
            }
            out
        }
        Format::Json => serde_json::to_string_pretty(history).unwrap_or_default() + "\n",
        Format::Jsonl => {
            let mut out = String::new();
            for s in &history.series {
                for p in &s.commits {
                    let mut v = serde_json::to_value(p).unwrap_or_default();
                    if let (Some(obj), Ok(serde_json::Value::Object(key))) =
                        (v.as_object_mut(), serde_json::to_value(&s.key))
                    {
                        obj.extend(key);
                    }
                    out.push_str(&(v.to_string() + "\n"));
                }
            }
            out
        }
        Format::Sql => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_needs_both_the_best_and_the_median_past_the_threshold() {
        let base = [100.0, 98.0, 99.0, 101.0];
        // A real 20% slowdown moves both.
        let c = change(&base, &[80.0, 79.0, 81.0, 78.0], 0.1).unwrap();
        assert_eq!(c.verdict, "slower");
        assert!((c.best_ratio - 81.0 / 101.0).abs() < 1e-12);
        // A busy machine slows most runs but one quiet run still reaches the old best.
        let c = change(&base, &[70.0, 72.0, 100.5, 69.0], 0.1).unwrap();
        assert_eq!(c.verdict, "within noise", "{c:?}");
        // Faster, symmetric.
        assert_eq!(
            change(&base, &[120.0, 119.0, 122.0], 0.1).unwrap().verdict,
            "faster"
        );
        assert_eq!(
            change(&base, &[105.0, 104.0, 106.0], 0.1).unwrap().verdict,
            "within noise"
        );
        // Too few runs: the ratio is shown, not judged.
        assert_eq!(
            change(&base, &[50.0, 50.0], 0.1).unwrap().verdict,
            "not judged"
        );
        assert!(change(&[], &[1.0], 0.1).is_none());
    }

    fn row(
        key: &str,
        commit: &str,
        date: &str,
        backend: &str,
        prefill_ns: &[u64],
        steps: &[&[u64]],
    ) -> StoredRow {
        StoredRow {
            run_key: key.into(),
            date_utc: date.into(),
            git_commit: commit.into(),
            machine: "cpu".into(),
            model_name: "gpt2".into(),
            dtype: "f32".into(),
            backend: backend.into(),
            isa: "avx2+fma".into(),
            threads: 1,
            kv_cache_dtype: "f32".into(),
            prompt_tokens: 10,
            prefill_ns: serde_json::to_string(prefill_ns).unwrap(),
            decode_step_ns: serde_json::to_string(steps).unwrap(),
        }
    }

    #[test]
    fn runs_of_a_commit_pool_and_commits_keep_their_first_order() {
        let ms = 1_000_000;
        let rows = [
            row(
                "r1",
                "aaa",
                "2026-01-01",
                "simd-kv",
                &[10 * ms, 10 * ms],
                &[&[10 * ms], &[10 * ms]],
            ),
            row(
                "r2",
                "bbb",
                "2026-01-02",
                "simd-kv",
                &[20 * ms],
                &[&[20 * ms, 20 * ms]],
            ),
            // A second run of the first commit, saved later, pools with the first.
            row(
                "r3",
                "aaa",
                "2026-01-03",
                "simd-kv",
                &[10 * ms],
                &[&[10 * ms]],
            ),
            row(
                "r3",
                "aaa",
                "2026-01-03",
                "naive",
                &[100 * ms],
                &[&[100 * ms]],
            ),
        ];
        let h = build(&rows, "store", "cpu", 0.1).unwrap();
        assert_eq!(h.series.len(), 2, "one series per backend");
        let simd = h
            .series
            .iter()
            .find(|s| s.key.backend == "simd-kv")
            .unwrap();
        let commits: Vec<&str> = simd.commits.iter().map(|p| p.git_commit.as_str()).collect();
        assert_eq!(commits, ["aaa", "bbb"]);
        let first = &simd.commits[0];
        assert_eq!((first.saved_runs, first.measured_runs), (2, 3));
        // 10 tokens in 10 ms = 1000 tok/s; decode 1 step in 10 ms = 100 tok/s.
        assert!((first.prefill_tok_per_s.unwrap().mean - 1000.0).abs() < 1e-6);
        assert!((first.decode_tok_per_s.unwrap().mean - 100.0).abs() < 1e-6);
        let second = &simd.commits[1];
        let c = second.prefill_change.as_ref().unwrap();
        assert!((c.median_ratio - 0.5).abs() < 1e-9);
        assert_eq!(c.verdict, "not judged", "one run on the second commit");
        assert!(first.prefill_change.is_none());
        let table = render(&h, crate::render::Format::Table);
        assert!(table.contains("-50.0% (few runs)"), "{table}");
        let csv = render(&h, crate::render::Format::Csv);
        assert_eq!(csv.lines().count(), 1 + 3);
    }
}
