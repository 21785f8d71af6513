//! Which charts a run's record gets, and from which of its figures (drawn by [`super::plots`]):
//!
//! - prefill and decode tok/s per row, mean ± stddev with the range (every report);
//! - per-token decode latency over the steps of each run, warm-up runs in grey, so that a slow
//!   first step or an outlier shows (every report with decode steps; one chart per prompt
//!   length and thread count);
//! - decode and prefill tok/s against threads (a thread sweep);
//! - decode latency against context length (several `--prompt-tokens`);
//! - decode tok/s against each file's KL divergence from the first (several weight files).
//!
//! `--plot FILE.svg` writes the throughput charts (and latency against context) as one SVG;
//! `report --html` shows every chart that applies, with [`Chart::caption`] saying what it is.

use super::plots::{self, Line, Measure};
use crate::compare::row_label;
use crate::record::{BackendResult, Report};
use crate::stats::Summary;

/// One chart: an anchor id, a heading, a caption and the SVG.
pub struct Chart {
    pub id: String,
    pub title: String,
    pub caption: String,
    pub svg: String,
}

fn distinct<T: PartialEq + Clone>(xs: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in xs {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// What the rows of a report vary in, found once (the charts ask per row).
#[derive(Clone, Copy)]
struct Shape {
    /// A thread sweep: one backend on one file and prompt length ran at several thread counts
    /// (backends that differ in threads, like naive's one and simd-kv's all, are not a sweep).
    sweep: bool,
    several_lengths: bool,
}

impl Shape {
    fn of(report: &Report) -> Shape {
        let mut threads_of = std::collections::HashMap::new();
        let mut sweep = false;
        for r in &report.results {
            let first = *threads_of
                .entry((r.backend.as_str(), r.model_file.as_str(), r.prompt_tokens))
                .or_insert(r.threads);
            sweep |= first != r.threads;
        }
        let lengths: std::collections::HashSet<usize> =
            report.results.iter().map(|r| r.prompt_tokens).collect();
        Shape {
            sweep,
            several_lengths: lengths.len() > 1,
        }
    }
}

/// What a row is called on a chart: its backend (and dtype with several files), the prompt
/// length when several ran, and the threads in a sweep.
fn row_name(report: &Report, shape: Shape, r: &BackendResult) -> String {
    let mut name = base_name(report, r);
    if shape.several_lengths {
        name.push_str(&format!(" @{}", r.prompt_tokens));
    }
    if shape.sweep {
        name.push_str(&format!(" t{}", r.threads));
    }
    name
}

/// The row's backend, with its dtype when the report compares several files.
fn base_name(report: &Report, r: &BackendResult) -> String {
    row_label(&r.backend, &r.dtype, report.files().len() > 1)
}

fn measure(label: String, s: &Summary) -> Measure {
    Measure {
        label,
        mean: s.mean,
        stddev: s.stddev,
        min: s.min,
        max: s.max,
    }
}

/// The line under each chart's title: the model, machine and commit that produced it.
fn provenance(report: &Report) -> String {
    format!(
        "{}, {} | {} ({} logical cores) | commit {} | {} measured run(s) per row after {} warm-up",
        report.model.name,
        distinct(report.files().iter().map(|m| m.dtype.clone())).join("/"),
        report.machine.cpu,
        report.machine.logical_cores,
        report.machine.git_commit,
        report.runs,
        report.warmup
    )
}

/// Prefill and decode throughput per row.
fn throughput(report: &Report, shape: Shape) -> Vec<Chart> {
    let prefill: Vec<Measure> = report
        .results
        .iter()
        .map(|r| measure(row_name(report, shape, r), &r.prefill_tok_per_s))
        .collect();
    let decode: Vec<Measure> = report
        .results
        .iter()
        .filter_map(|r| {
            Some(measure(
                row_name(report, shape, r),
                r.decode_tok_per_s.as_ref()?,
            ))
        })
        .collect();
    let mut charts = Vec::new();
    if !decode.is_empty() {
        charts.push(Chart {
            id: "decode".into(),
            title: "Decode tok/s".into(),
            caption: format!(
                "Bars: mean over the measured runs; thick bar: ± one standard deviation; thin \
                 whisker: slowest to fastest run. {}",
                provenance(report)
            ),
            svg: plots::bars(
                "Decode tok/s (mean ± stddev, range)",
                "tokens per second",
                &decode,
            ),
        });
    }
    charts.push(Chart {
        id: "prefill".into(),
        title: "Prefill tok/s".into(),
        caption: format!(
            "Prompt tokens per second of the prefill (time to first token), same marks. {}",
            provenance(report)
        ),
        svg: plots::bars(
            "Prefill tok/s (mean ± stddev, range)",
            "tokens per second",
            &prefill,
        ),
    });
    charts
}

/// Per-token decode latency over the steps, one chart per prompt length (and thread count, in
/// a sweep).
fn latency_over_steps(report: &Report, shape: Shape) -> Vec<Chart> {
    let mut charts = Vec::new();
    let sweep = shape.sweep;
    let threads_of = |r: &BackendResult| if sweep { Some(r.threads) } else { None };
    let groups = distinct(
        report
            .results
            .iter()
            .map(|r| (r.prompt_tokens, threads_of(r))),
    );
    let backends = distinct(report.results.iter().map(|r| base_name(report, r)));
    for (length, threads) in groups {
        let mut lines = Vec::new();
        for r in report
            .results
            .iter()
            .filter(|r| (r.prompt_tokens, threads_of(r)) == (length, threads))
        {
            let name = base_name(report, r);
            let series = backends.iter().position(|b| *b == name).unwrap_or(0);
            let as_line = |steps: &Vec<u64>, faded: bool| Line {
                label: if faded {
                    "warm-up runs".into()
                } else {
                    name.clone()
                },
                series,
                faded,
                points: steps
                    .iter()
                    .enumerate()
                    .map(|(i, &ns)| (i as f64 + 1.0, ns as f64 / 1e6, 0.0))
                    .collect(),
            };
            lines.extend(
                r.samples
                    .warmup_decode_step_ns
                    .iter()
                    .map(|s| as_line(s, true)),
            );
            lines.extend(r.samples.decode_step_ns.iter().map(|s| as_line(s, false)));
        }
        if lines.iter().all(|l| l.points.is_empty()) {
            continue;
        }
        charts.push(Chart {
            id: match threads {
                Some(n) => format!("latency-{length}-t{n}"),
                None => format!("latency-{length}"),
            },
            title: match threads {
                Some(n) => format!(
                    "Decode latency per token, {length}-token prompt, {}",
                    crate::record::threads_phrase(n)
                ),
                None => format!("Decode latency per token, {length}-token prompt"),
            },
            caption: format!(
                "Each decode step's time, every measured run of every backend (one colour per \
                 backend), warm-up runs in grey: a slow first step, a drift or an outlier shows \
                 here before it moves a mean. {}",
                provenance(report)
            ),
            svg: plots::lines(
                &format!("Decode step latency ({length}-token prompt)"),
                "decode step (1 = the token after the first)",
                "ms per token",
                &lines,
                true,
            ),
        });
    }
    charts
}

/// One line per distinct `key` of the report's rows (in first-seen order, each its own
/// colour), labelled by `label`, through the `point` (x, y, y's stddev) of each of its rows;
/// lines without a point are left out.
fn lines_by<K: PartialEq + Clone>(
    report: &Report,
    key: impl Fn(&BackendResult) -> K,
    label: impl Fn(&K) -> String,
    point: impl Fn(&BackendResult) -> Option<(f64, f64, f64)>,
) -> Vec<Line> {
    let rows: Vec<(K, &BackendResult)> = report.results.iter().map(|r| (key(r), r)).collect();
    distinct(rows.iter().map(|(k, _)| k.clone()))
        .iter()
        .enumerate()
        .map(|(i, k)| Line {
            label: label(k),
            series: i,
            faded: false,
            points: rows
                .iter()
                .filter(|(rk, _)| rk == k)
                .filter_map(|(_, r)| point(r))
                .collect(),
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

/// Throughput against threads, for a sweep.
fn threads_sweep(report: &Report, shape: Shape) -> Vec<Chart> {
    if !shape.sweep {
        return Vec::new();
    }
    let several_lengths = shape.several_lengths;
    let line_of = |pick: fn(&BackendResult) -> Option<Summary>| {
        lines_by(
            report,
            |r| (base_name(report, r), r.prompt_tokens),
            |(name, length)| {
                if several_lengths {
                    format!("{name} @{length}")
                } else {
                    name.clone()
                }
            },
            |r| pick(r).map(|s| (r.threads as f64, s.mean, s.stddev)),
        )
    };
    let mut charts = Vec::new();
    for (id, phase, pick) in [
        (
            "threads-decode",
            "Decode",
            (|r: &BackendResult| r.decode_tok_per_s) as fn(&BackendResult) -> Option<Summary>,
        ),
        ("threads-prefill", "Prefill", |r: &BackendResult| {
            Some(r.prefill_tok_per_s)
        }),
    ] {
        let lines = line_of(pick);
        if lines.is_empty() {
            continue;
        }
        charts.push(Chart {
            id: id.into(),
            title: format!("{phase} tok/s against threads"),
            caption: format!(
                "A thread sweep (each count in its own process), mean ± stddev per count. {}",
                provenance(report)
            ),
            svg: plots::lines(
                &format!("{phase} tok/s against threads"),
                "threads",
                "tokens per second",
                &lines,
                true,
            ),
        });
    }
    charts
}

/// Decode latency against context length, for several `--prompt-tokens`.
fn latency_over_context(report: &Report, shape: Shape) -> Option<Chart> {
    if !shape.several_lengths {
        return None;
    }
    let lines = lines_by(
        report,
        |r| (base_name(report, r), r.threads),
        |(name, threads)| {
            if shape.sweep {
                format!("{name} t{threads}")
            } else {
                name.clone()
            }
        },
        |r| {
            r.decode_latency
                .map(|l| (r.prompt_tokens as f64, l.p50_ms, 0.0))
        },
    );
    (!lines.is_empty()).then(|| Chart {
        id: "latency-context".into(),
        title: "Decode latency against context length".into(),
        caption: format!(
            "Median decode step per prompt length: a backend that recomputes the context grows \
             with it, one with a KV cache stays nearly flat. {}",
            provenance(report)
        ),
        svg: plots::lines(
            "Decode latency per token (p50) against context length",
            "prompt tokens",
            "ms per token (p50)",
            &lines,
            true,
        ),
    })
}

/// Decode tok/s against each file's mean KL divergence from the first file.
fn speed_against_agreement(report: &Report) -> Option<Chart> {
    if report.agreement.is_empty() {
        return None;
    }
    let kl_of = |r: &BackendResult| -> Option<f64> {
        if r.model_file == report.agreement[0].reference_file {
            return Some(0.0);
        }
        report
            .agreement
            .iter()
            .find(|a| a.model_file == r.model_file)
            .map(|a| a.mean_kl)
    };
    let backends = distinct(report.results.iter().map(|r| r.backend.clone()));
    let (mut lines, mut labels) = (Vec::new(), Vec::new());
    for (i, backend) in backends.iter().enumerate() {
        let rows: Vec<&BackendResult> = report
            .results
            .iter()
            .filter(|r| r.backend == *backend && r.decode_tok_per_s.is_some())
            .filter(|r| kl_of(r).is_some())
            .collect();
        if rows.is_empty() {
            continue;
        }
        lines.push(Line {
            label: backend.clone(),
            series: i,
            faded: false,
            points: rows
                .iter()
                .filter_map(|r| {
                    let d = r.decode_tok_per_s?;
                    Some((kl_of(r)?, d.mean, d.stddev))
                })
                .collect(),
        });
        labels.push(rows.iter().map(|r| format!(" {}", r.dtype)).collect());
    }
    let reference = &report.agreement[0];
    (!lines.is_empty()).then(|| Chart {
        id: "speed-agreement".into(),
        title: "Speed against agreement".into(),
        caption: format!(
            "Decode tok/s of each backend on each weight file against that file's mean KL \
             divergence from {} ({}) over {} positions (log scale; the reference file itself, KL \
             0, at the left edge). Faster and further left is better. {}",
            reference.reference_file,
            reference.reference_dtype,
            reference.positions,
            provenance(report)
        ),
        svg: plots::scatter_log_x(
            "Decode tok/s against KL divergence from the first file",
            "mean KL(reference || file), nats",
            "decode tokens per second",
            &lines,
            &labels,
        ),
    })
}

/// Every chart that applies to a run's record.
pub fn of_report(report: &Report) -> Vec<Chart> {
    let shape = Shape::of(report);
    let mut charts = throughput(report, shape);
    charts.extend(latency_over_steps(report, shape));
    charts.extend(threads_sweep(report, shape));
    charts.extend(latency_over_context(report, shape));
    charts.extend(speed_against_agreement(report));
    charts
}

/// `--plot FILE.svg`: the throughput charts, and latency against context length when several
/// prompt lengths ran, as one SVG document.
pub fn plot_svg(report: &Report) -> String {
    let shape = Shape::of(report);
    let mut charts: Vec<String> = throughput(report, shape)
        .into_iter()
        .map(|c| c.svg)
        .collect();
    charts.extend(latency_over_context(report, shape).map(|c| c.svg));
    plots::stack(&charts)
}
