//! `gpt2-bench report --html FILE`: one self-contained HTML page (no network, no JavaScript;
//! the charts are inline SVG, the style a few lines of CSS) of a run's record or of the stored
//! history, so that it can be mailed, attached to a CI job or opened from disk years later.
//!
//! A run's page: what ran where (model, machine, commit, command), the results table, the
//! warnings, then every chart of [`super::charts::of_report`] with a caption saying what it
//! shows. The history's page: per series, its commits as a table and its decode and prefill
//! trends with the noise band and the changes beyond it marked.

use super::charts::{self, Chart};
use super::plots::{self, Trend};
use crate::history::{COMMIT_HEADERS, History, Series, commit_cells, mean_sd};
use crate::record::Report;

/// Text made safe inside HTML elements and attribute values (control characters, which HTML
/// does not allow, shown as U+FFFD).
pub fn escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "
body { font-family: sans-serif; max-width: 960px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85em; color: #555; }
.bad { color: #b00; font-weight: bold; } .good { color: #070; font-weight: bold; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 0.9em; }
dt { font-weight: bold; } dd { margin: 0; word-break: break-all; }
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"generator\" content=\"gpt2-bench {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n{body}</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title)
    )
}

fn figure(chart: &Chart) -> String {
    format!(
        "<figure id=\"{}\">\n<h2>{}</h2>\n{}\n<figcaption>{}</figcaption>\n</figure>\n",
        escape(&chart.id),
        escape(&chart.title),
        // plotters' SVG, inline; its text is escaped by plotters.
        chart.svg.trim(),
        escape(&chart.caption)
    )
}

fn definitions(items: &[(&str, String)]) -> String {
    let mut out = String::from("<dl>\n");
    for (term, value) in items {
        out.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>\n",
            escape(term),
            escape(value)
        ));
    }
    out.push_str("</dl>\n");
    out
}

fn table(headers: &[&str], rows: &[Vec<String>], left_columns: usize) -> String {
    let class = |i: usize| if i < left_columns { " class=\"l\"" } else { "" };
    let mut out = String::from("<table>\n<tr>");
    for (i, h) in headers.iter().enumerate() {
        out.push_str(&format!("<th{}>{}</th>", class(i), escape(h)));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let marked = if cell.contains("SLOWER") || cell == "NO" {
                " class=\"bad\""
            } else if cell.contains("FASTER") {
                " class=\"good\""
            } else {
                class(i)
            };
            out.push_str(&format!("<td{marked}>{}</td>", escape(cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// The page of one run's record.
pub fn of_report(report: &Report) -> String {
    let files: Vec<String> = report
        .files()
        .iter()
        .map(|m| {
            format!(
                "{} ({}, {} parameters, checksum {})",
                m.path, m.dtype, m.parameters, m.checksum
            )
        })
        .collect();
    let mut body = format!(
        "<h1>gpt2-bench: {} on {}</h1>\n",
        escape(&report.model.name),
        escape(&report.machine.cpu)
    );
    body.push_str(&definitions(&[
        ("date (UTC)", report.date_utc.clone()),
        ("commit", format!("{} ({} build, gpt2-bench {})", report.machine.git_commit, report.machine.build_profile, report.machine.gpt2_bench_version)),
        ("weights", files.join("; ")),
        (
            "machine",
            format!(
                "{}, {} logical cores{}, {} {}{}",
                report.machine.label(),
                report.machine.logical_cores,
                if report.machine.simd_kernels.is_empty() {
                    String::new()
                } else {
                    format!(", kernels {}", report.machine.simd_kernels)
                },
                report.machine.os,
                report.machine.arch,
                report
                    .load_average_before_run
                    .map_or_else(String::new, |l| format!(", load {l:.2} before the run"))
            ),
        ),
        ("command", crate::ab::shell_line(&report.command_line)),
        (
            "decoding",
            format!(
                "{} prompt tokens, up to {} new, {}; {} measured run(s) after {} warm-up; reference {}",
                report.prompt_token_ids.len(),
                report.max_tokens,
                if report.sampling.is_empty() { "greedy" } else { &report.sampling },
                report.runs,
                report.warmup,
                report.reference
            ),
        ),
        (
            "tokens",
            if report.all_match {
                "every backend matches the reference".to_string()
            } else {
                "a backend's tokens differ from the reference's".to_string()
            },
        ),
    ]));
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                r.isa.clone(),
                r.threads.to_string(),
                r.prompt_tokens.to_string(),
                r.new_tokens.to_string(),
                mean_sd(Some(&r.ttft_ms)),
                mean_sd(Some(&r.prefill_tok_per_s)),
                mean_sd(r.decode_tok_per_s.as_ref()),
                r.decode_latency
                    .map_or_else(|| "-".into(), |l| format!("{:.2}", l.p50_ms)),
                r.decode_latency
                    .map_or_else(|| "-".into(), |l| format!("{:.2}", l.p99_ms)),
                if r.tokens_match {
                    "yes".into()
                } else if r.passes() {
                    "different rule".into()
                } else {
                    "NO".into()
                },
            ]
        })
        .collect();
    body.push_str("<h2>Results</h2>\n");
    body.push_str(&table(
        &[
            "backend",
            "isa",
            "threads",
            "prompt tok",
            "new tok",
            "TTFT ms",
            "prefill tok/s",
            "decode tok/s",
            "p50 ms",
            "p99 ms",
            "tokens match",
        ],
        &rows,
        2,
    ));
    if !report.agreement.is_empty() {
        let rows: Vec<Vec<String>> = report
            .agreement
            .iter()
            .map(|a| {
                vec![
                    a.model_file.clone(),
                    a.dtype.clone(),
                    format!("{:.1}%", a.top1_agreement * 100.0),
                    format!("{:.2e}", a.mean_kl),
                    format!("{:.2e}", a.max_kl),
                    a.first_greedy_difference
                        .map_or_else(|| "none".into(), |s| s.to_string()),
                ]
            })
            .collect();
        body.push_str("<h2>Agreement with the first file</h2>\n");
        body.push_str(&table(
            &[
                "file",
                "dtype",
                "top-1",
                "mean KL",
                "max KL",
                "first greedy difference",
            ],
            &rows,
            2,
        ));
    }
    if !report.warnings.is_empty() {
        body.push_str("<h2>Warnings</h2>\n<ul>\n");
        for w in &report.warnings {
            body.push_str(&format!("<li>{}</li>\n", escape(w)));
        }
        body.push_str("</ul>\n");
    }
    for chart in charts::of_report(report) {
        body.push_str(&figure(&chart));
    }
    page(
        &format!(
            "gpt2-bench: {} on {} ({})",
            report.model.name, report.machine.cpu, report.date_utc
        ),
        &body,
    )
}

/// A series' name as headings say it (`on MACHINE` when the history spans several).
fn series_name(s: &Series, several_machines: bool) -> String {
    let isa = if s.key.isa.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.key.isa)
    };
    let machine = if several_machines {
        format!(" on {}", s.key.machine)
    } else {
        String::new()
    };
    format!(
        "{} {}, {}{isa}, {}, {}-token prompt, {} KV cache{machine}",
        s.key.model,
        s.key.dtype,
        s.key.backend,
        crate::record::threads_phrase(s.key.threads.max(0) as usize),
        s.key.prompt_tokens,
        s.key.kv_cache_dtype
    )
}

/// A series' decode (or prefill) figures over its commits, as [`plots::trend`] draws them.
fn trend_of(s: &Series, decode: bool) -> Trend {
    let picked: Vec<(
        Option<crate::stats::Summary>,
        Option<&crate::history::Change>,
    )> = s
        .commits
        .iter()
        .map(|p| {
            if decode {
                (p.decode_tok_per_s, p.decode_change.as_ref())
            } else {
                (p.prefill_tok_per_s, p.prefill_change.as_ref())
            }
        })
        .collect();
    Trend {
        means: picked
            .iter()
            .map(|(m, _)| m.map_or(0.0, |m| m.mean))
            .collect(),
        stddevs: picked
            .iter()
            .map(|(m, _)| m.map_or(0.0, |m| m.stddev))
            .collect(),
        marks: picked
            .iter()
            .map(|(_, c)| match c.map(|c| c.verdict) {
                Some("faster") => Some(true),
                Some("slower") => Some(false),
                _ => None,
            })
            .collect(),
    }
}

/// The page of the stored history.
pub fn of_history(history: &History) -> String {
    let mut body = format!(
        "<h1>gpt2-bench history: {}</h1>\n",
        escape(&history.machine)
    );
    body.push_str(&definitions(&[
        ("store", history.store.clone()),
        ("machine", history.machine.clone()),
        ("series", history.series.len().to_string()),
        (
            "marks",
            format!(
                "a change from the commit before is marked when both the fastest run and the \
                 median moved by more than {:.0}% (at least 3 measured runs on each side: \
                 gpt2-bench ab's two tests on unpaired runs, which ab confirms); the band is \
                 mean ± stddev over the commit's runs; commits in the order of their first run",
                history.threshold * 100.0
            ),
        ),
    ]));
    if history.series.is_empty() {
        body.push_str("<p>No stored rows match.</p>\n");
    }
    if !history.skipped.is_empty() {
        body.push_str("<h2>Stored rows left out</h2>\n<ul>\n");
        for reason in &history.skipped {
            body.push_str(&format!("<li>{}</li>\n", escape(reason)));
        }
        body.push_str("</ul>\n");
    }
    for (i, s) in history.series.iter().enumerate() {
        let name = series_name(s, history.machine == "all");
        body.push_str(&format!("<h2 id=\"series-{i}\">{}</h2>\n", escape(&name)));
        let rows: Vec<Vec<String>> = s.commits.iter().map(commit_cells).collect();
        body.push_str(&table(&COMMIT_HEADERS, &rows, 2));
        let commits: Vec<String> = s.commits.iter().map(|p| p.git_commit.clone()).collect();
        let mut charts = Vec::new();
        if s.commits.iter().any(|p| p.decode_tok_per_s.is_some()) {
            charts.push(Chart {
                id: format!("series-{i}-decode"),
                title: "Decode tok/s over commits".into(),
                caption: name.clone(),
                svg: plots::trend(
                    &format!("{}: decode tok/s", s.key.backend),
                    "decode tokens per second",
                    &commits,
                    &trend_of(s, true),
                ),
            });
        }
        charts.push(Chart {
            id: format!("series-{i}-prefill"),
            title: "Prefill tok/s over commits".into(),
            caption: name.clone(),
            svg: plots::trend(
                &format!("{}: prefill tok/s", s.key.backend),
                "prefill tokens per second",
                &commits,
                &trend_of(s, false),
            ),
        });
        for chart in charts {
            body.push_str(&figure(&chart));
        }
    }
    page(&format!("gpt2-bench history: {}", history.machine), &body)
}
