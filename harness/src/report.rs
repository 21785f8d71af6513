//! The result of a `compare` run, and its formats: a terminal table (compact by default, every
//! column with `--wide`), Markdown, CSV (numbers only, one row per backend and prompt length),
//! JSON (the complete record, schema below, versioned) and JSON Lines (one object per row, as
//! llama-bench writes them). Everything is written to stdout; progress and notes go to stderr,
//! so `gpt2-bench compare --format json > run.json` gives a clean file.

use std::fmt::Write;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};

use crate::machine::Machine;
use crate::record::{
    BackendResult, Divergence, HUGE_LOGIT, ModelInfo, Report, rounding_gap, threads_phrase,
};
use crate::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Md,
    Csv,
    Json,
    /// One JSON object per result row (a backend at a prompt length), each carrying the model,
    /// machine and commit that produced it: append runs to a file, load it as a table.
    Jsonl,
}

/// Columns of the wide table (`--wide`, and Markdown).
const HEADERS: [&str; 19] = [
    "backend",
    "threads",
    "isa",
    "dtype",
    "MB/token",
    "KV cache",
    "prompt tok",
    "new tok",
    "TTFT ms",
    "prefill tok/s",
    "decode tok/s",
    "p50 ms",
    "p99 ms",
    "% roofline",
    "% read now",
    "prefill % peak",
    "peak RSS MB",
    "vs slowest",
    "tokens match",
];

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{:.0}%", v * 100.0))
}

/// `mean ± stddev`, the stddev left out for a single run.
fn mean_sd(s: &Summary, decimals: usize) -> String {
    if s.n > 1 {
        format!("{:.decimals$} ± {:.decimals$}", s.mean, s.stddev)
    } else {
        format!("{:.decimals$}", s.mean)
    }
}

/// [`mean_sd`] with the decimals the mean's size calls for (the compact table).
fn mean_sd_short(s: &Summary) -> String {
    let decimals = match s.mean.abs() {
        m if m >= 100.0 => 0,
        m if m >= 1.0 => 1,
        _ => 2,
    };
    mean_sd(s, decimals)
}

/// The threads cell: the count on the CPU, the device otherwise.
fn threads_cell(r: &BackendResult) -> String {
    if r.device == "cpu" {
        r.threads.to_string()
    } else {
        r.device.clone()
    }
}

/// Whether the row's tokens match the reference's, in words.
fn match_cell(r: &BackendResult, reference: &str) -> String {
    if r.backend == reference {
        if r.runs_agree {
            "reference".to_string()
        } else {
            "NO (runs differ)".to_string()
        }
    } else if r.tokens_match {
        "yes".to_string()
    } else if !r.runs_agree {
        "NO (runs differ)".to_string()
    } else {
        match &r.divergence {
            Some(d) => format!("NO (step {})", d.step),
            None => "NO".to_string(),
        }
    }
}

/// What tables and charts call a row: its label (the backend, with the dtype when the report
/// compares several files); the backend for reports saved before labels existed.
pub fn shown(r: &BackendResult) -> &str {
    if r.label.is_empty() {
        &r.backend
    } else {
        &r.label
    }
}

fn row(r: &BackendResult, reference: &str) -> [String; 19] {
    let dash = || "-".to_string();
    [
        shown(r).to_string(),
        threads_cell(r),
        r.isa.clone(),
        r.dtype.clone(),
        format!("{:.1}", r.weight_bytes_per_token as f64 / 1e6),
        match (r.kv_cache, r.kv_cache_dtype.as_str()) {
            (false, _) => "no",
            (true, "f32") => "yes",
            (true, dtype) => dtype,
        }
        .to_string(),
        r.prompt_tokens.to_string(),
        r.new_tokens.to_string(),
        mean_sd(&r.ttft_ms, 1),
        mean_sd(&r.prefill_tok_per_s, 1),
        r.decode_tok_per_s
            .as_ref()
            .map_or_else(dash, |s| mean_sd(s, 2)),
        r.decode_latency
            .map_or_else(dash, |l| format!("{:.1}", l.p50_ms)),
        r.decode_latency
            .map_or_else(dash, |l| format!("{:.1}", l.p99_ms)),
        percent(r.decode_roofline_fraction),
        percent(r.decode_read_fraction),
        percent(r.prefill_peak_fraction),
        r.memory
            .peak_rss_bytes
            .map_or_else(dash, |b| format!("{:.0}", b as f64 / 1e6)),
        format!("{:.2}x", r.speedup_vs_slowest),
        match_cell(r, reference),
    ]
}

/// The compact table (the default view), printed a row at a time as each backend finishes, the
/// way llama-bench prints: so its columns have fixed widths, sized for what the cells hold at
/// GPT-2's speeds (80 columns for one prompt length); a longer cell pushes the rest of its row
/// right. Columns: backend, threads, [prompt tokens, when several lengths run], TTFT, prefill,
/// decode, p50 latency, speedup against the reference, tokens match.
pub struct RowPrinter {
    reference: String,
    several_lengths: bool,
    backend_width: usize,
}

/// (first header line, second header line, width); every column but the first and last is
/// right-aligned.
type Column = (&'static str, &'static str, usize);

impl RowPrinter {
    pub fn new(backends: &[String], several_lengths: bool) -> Self {
        RowPrinter {
            reference: backends.first().cloned().unwrap_or_default(),
            several_lengths,
            backend_width: backends
                .iter()
                .map(|b| b.chars().count())
                .fold(7, usize::max),
        }
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![("backend", "", self.backend_width), ("threads", "", 7)];
        if self.several_lengths {
            columns.push(("prompt", "tokens", 6));
        }
        columns.extend([
            ("TTFT", "ms", 11),
            ("prefill", "tok/s", 11),
            ("decode", "tok/s", 10),
            ("p50", "ms", 4),
            ("speedup", "vs ref", 7),
            ("tokens", "match", 9),
        ]);
        columns
    }

    fn line(&self, cells: &[String]) -> String {
        let columns = self.columns();
        let last = columns.len() - 1;
        let mut out = String::new();
        for (i, (cell, (_, _, width))) in cells.iter().zip(&columns).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i == 0 || i == last {
                out.push_str(&format!("{cell:<width$}"));
            } else {
                out.push_str(&format!("{cell:>width$}"));
            }
        }
        out.trim_end().to_string() + "\n"
    }

    /// The two header lines and the rule under them.
    pub fn header(&self) -> String {
        let columns = self.columns();
        let first: Vec<String> = columns.iter().map(|c| c.0.to_string()).collect();
        let second: Vec<String> = columns.iter().map(|c| c.1.to_string()).collect();
        let total = columns.iter().map(|c| c.2).sum::<usize>() + 2 * (columns.len() - 1);
        format!(
            "{}{}{}\n",
            self.line(&first),
            self.line(&second),
            "─".repeat(total)
        )
    }

    /// One result's row.
    pub fn row(&self, r: &BackendResult) -> String {
        let mut cells = vec![shown(r).to_string(), threads_cell(r)];
        if self.several_lengths {
            cells.push(r.prompt_tokens.to_string());
        }
        cells.extend([
            mean_sd_short(&r.ttft_ms),
            mean_sd_short(&r.prefill_tok_per_s),
            r.decode_tok_per_s
                .as_ref()
                .map_or_else(|| "-".into(), mean_sd_short),
            r.decode_latency.map_or_else(
                || "-".into(),
                |l| match l.p50_ms {
                    ms if ms >= 100.0 => format!("{ms:.0}"),
                    ms => format!("{ms:.1}"),
                },
            ),
            format!("{:.2}x", r.speedup_vs_reference),
            match_cell(r, &self.reference),
        ]);
        self.line(&cells)
    }
}

/// Whether a report ran several prompt lengths (the compact table then shows the length).
pub fn several_lengths(results: &[BackendResult]) -> bool {
    results
        .iter()
        .any(|r| r.prompt_tokens != results[0].prompt_tokens)
}

/// The compact table of a finished report.
fn compact_table(report: &Report) -> String {
    let backends: Vec<String> = report
        .results
        .iter()
        .map(|r| shown(r).to_string())
        .collect();
    let printer = RowPrinter {
        reference: report.reference.clone(),
        ..RowPrinter::new(&backends, several_lengths(&report.results))
    };
    let mut out = printer.header();
    for r in &report.results {
        out.push_str(&printer.row(r));
    }
    out
}

/// The table with every column (`--wide`, Markdown).
fn table(report: &Report, preset: &str) -> String {
    let header = HEADERS.to_vec();
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| row(r, &report.reference).to_vec())
        .collect();
    let mut t = Table::new();
    t.load_preset(preset)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for cells in rows {
        t.add_row(cells.into_iter().map(|s| {
            let numeric = s.starts_with(|c: char| c.is_ascii_digit());
            Cell::new(s).set_alignment(if numeric {
                CellAlignment::Right
            } else {
                CellAlignment::Left
            })
        }));
    }
    t.to_string()
}

/// hyperfine's summary, for decode at each prompt length: the fastest backend against each of
/// the others, as a ratio of mean tok/s with the runs' spread propagated
/// ("simd-kv ran 24.5 ± 1.9 times faster than naive").
pub fn summary_lines(report: &Report) -> Vec<String> {
    let mut lengths: Vec<usize> = report.results.iter().map(|r| r.prompt_tokens).collect();
    lengths.dedup();
    lengths.sort_unstable();
    lengths.dedup();
    let mut out = Vec::new();
    for len in &lengths {
        let rows: Vec<(&BackendResult, &Summary)> = report
            .results
            .iter()
            .filter(|r| r.prompt_tokens == *len)
            .filter_map(|r| r.decode_tok_per_s.as_ref().map(|s| (r, s)))
            .filter(|(_, s)| s.mean > 0.0)
            .collect();
        let Some(&(fastest, best)) = rows.iter().max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
        else {
            continue;
        };
        if rows.len() < 2 {
            continue;
        }
        let at = if lengths.len() > 1 {
            format!(" after a {len}-token prompt")
        } else {
            String::new()
        };
        out.push(format!("Summary, decode tok/s{at}:"));
        out.push(format!("  {} ran", shown(fastest)));
        let mut others: Vec<_> = rows
            .iter()
            .filter(|(r, _)| !std::ptr::eq(*r, fastest))
            .collect();
        others.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean));
        for (r, s) in others {
            let ratio = best.mean / s.mean;
            let rel = ((best.stddev / best.mean).powi(2) + (s.stddev / s.mean).powi(2)).sqrt();
            let decimals = if ratio >= 10.0 { 1 } else { 2 };
            out.push(format!(
                "    {ratio:.decimals$} ± {:.decimals$} times faster than {}",
                ratio * rel,
                shown(r)
            ));
        }
    }
    out
}

/// Columns of the CSV: numbers only (mean and standard deviation apart, fractions as
/// fractions, booleans as true/false), an empty field where there is no value.
const CSV_HEADERS: [&str; 26] = [
    "backend",
    "device",
    "threads",
    "dtype",
    "model_file",
    "weight_bytes_per_token",
    "kv_cache",
    "kv_cache_dtype",
    "prompt_tokens",
    "new_tokens",
    "runs",
    "ttft_ms_mean",
    "ttft_ms_stddev",
    "prefill_tok_per_s_mean",
    "prefill_tok_per_s_stddev",
    "decode_tok_per_s_mean",
    "decode_tok_per_s_stddev",
    "decode_p50_ms",
    "decode_p99_ms",
    "decode_roofline_fraction",
    "decode_read_fraction",
    "prefill_peak_fraction",
    "peak_rss_bytes",
    "speedup_vs_slowest",
    "tokens_match",
    // Last: added after the others, so scripts that read columns by position keep working.
    "isa",
];

fn csv_row(r: &BackendResult) -> [String; 26] {
    let num = |x: Option<f64>| x.map_or_else(String::new, |v| format!("{v}"));
    let decode = r.decode_tok_per_s.as_ref();
    [
        csv_field(&r.backend),
        csv_field(&r.device),
        r.threads.to_string(),
        csv_field(&r.dtype),
        csv_field(&r.model_file),
        r.weight_bytes_per_token.to_string(),
        r.kv_cache.to_string(),
        csv_field(&r.kv_cache_dtype),
        r.prompt_tokens.to_string(),
        r.new_tokens.to_string(),
        r.runs.to_string(),
        num(Some(r.ttft_ms.mean)),
        num(Some(r.ttft_ms.stddev)),
        num(Some(r.prefill_tok_per_s.mean)),
        num(Some(r.prefill_tok_per_s.stddev)),
        num(decode.map(|s| s.mean)),
        num(decode.map(|s| s.stddev)),
        num(r.decode_latency.map(|l| l.p50_ms)),
        num(r.decode_latency.map(|l| l.p99_ms)),
        num(r.decode_roofline_fraction),
        num(r.decode_read_fraction),
        num(r.prefill_peak_fraction),
        r.memory
            .peak_rss_bytes
            .map_or_else(String::new, |b| b.to_string()),
        num(Some(r.speedup_vs_slowest)),
        r.tokens_match.to_string(),
        csv_field(&r.isa),
    ]
}

/// One JSON Lines object for a result row: the row, and what produced it.
fn jsonl_row(report: &Report, r: &BackendResult) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        let context = serde_json::json!({
            "schema_version": report.schema_version,
            "date_utc": report.date_utc,
            "git_commit": report.machine.git_commit,
            "cpu": report.machine.cpu,
            "logical_cores": report.machine.logical_cores,
            "build_profile": report.machine.build_profile,
            "model": report.model.name,
            "model_checksum": report.model.checksum,
            "sampling": report.sampling,
            "reference": report.reference,
        });
        if let Some(c) = context.as_object() {
            for (k, val) in c {
                obj.insert(k.clone(), val.clone());
            }
        }
    }
    v.to_string()
}

/// How the figures were taken, under the table.
fn method_line(report: &Report) -> String {
    format!(
        "{} measured run(s) per backend after {} warm-up run(s); ± is the standard deviation over \
         runs; p50/p99: per-token decode latency over all runs; tokens {}.",
        report.runs, report.warmup, report.sampling
    )
}

/// The text generated by the reference, shown once under the table.
fn generated_text(report: &Report) -> String {
    let reference = report
        .results
        .iter()
        .find(|r| r.backend == report.reference);
    match reference {
        Some(r) => format!(
            "Prompt: {:?}\nGenerated by {} ({} tokens): {:?}",
            report.prompt, r.backend, r.new_tokens, r.text
        ),
        None => String::new(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The line above the table: the model and the machine.
/// The line above the table: the model, each weight file's dtype and weight bytes per decode
/// step (which every row of the table then carries), the build and the machine.
pub fn table_heading(models: &[ModelInfo], machine: &Machine) -> String {
    let first = &models[0];
    let files: Vec<String> = models
        .iter()
        .map(|m| {
            format!(
                "{} {:.1} MB/token",
                m.dtype,
                m.weight_bytes_per_token as f64 / 1e6
            )
        })
        .collect();
    // The compact table has no room for a column: the simd backends' instruction set is said
    // here (every row's `isa` is in the wide table, CSV and JSON).
    let kernels = if machine.simd_kernels.is_empty() {
        String::new()
    } else {
        format!("; simd kernels {}", machine.simd_kernels)
    };
    format!(
        "{} ({:.1}M parameters; {}), {} on {} ({} available{kernels})\n",
        first.name,
        first.parameters as f64 / 1e6,
        files.join(", "),
        machine.build_profile,
        machine.cpu,
        threads_phrase(machine.logical_cores)
    )
}

/// What follows the table: hyperfine's summary, the method, the roofline, notes, the gate, the
/// generated text.
pub fn table_footer(report: &Report) -> String {
    let mut out = String::new();
    for line in summary_lines(report) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{}", method_line(report));
    if let Some(r) = &report.roofline {
        let _ = writeln!(out, "{}", roofline_line(r));
    }
    for note in &report.notes {
        let _ = writeln!(out, "Note: {note}.");
    }
    if let Some(g) = &report.gate {
        let _ = write!(out, "{}", crate::gate::render(g));
    }
    out.push_str(&agreement_table(report));
    let _ = writeln!(out, "{}", generated_text(report));
    out
}

/// The agreement of each further weight file with the first (empty with one file).
pub fn agreement_table(report: &Report) -> String {
    let Some(first) = report.agreement.first() else {
        return String::new();
    };
    let mut out = format!(
        "Agreement with {} ({}): {} positions on {}, teacher-forced ({}-token prompt, then \
         the tokens {} generated):\n",
        first.reference_file,
        first.reference_dtype,
        first.positions,
        first.backend,
        first.prompt_tokens,
        first.reference_file,
    );
    let width = report
        .agreement
        .iter()
        .map(|a| a.model_file.chars().count())
        .fold(4, usize::max);
    let _ = writeln!(
        out,
        "  {:<width$}  {:<8}  {:>8}  {:>6}  {:>8}  {:>8}  greedy output",
        "file", "dtype", "MB/token", "top-1", "mean KL", "max KL"
    );
    for a in &report.agreement {
        let greedy = match a.first_greedy_difference {
            None => format!("same for all {} tokens", a.greedy_tokens),
            Some(step) => format!("differs from step {step} of {}", a.greedy_tokens),
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:<8}  {:>8.1}  {:>5.1}%  {:>8.2e}  {:>8.2e}  {greedy}",
            a.model_file,
            a.dtype,
            a.weight_bytes_per_token as f64 / 1e6,
            100.0 * a.top1_agreement,
            a.mean_kl,
            a.max_kl,
        );
    }
    out
}

/// Renders the report in `format`.
pub fn render(report: &Report, format: Format, wide: bool) -> String {
    let mut out = String::new();
    match format {
        Format::Table => {
            out.push_str(&table_heading(report.files(), &report.machine));
            if wide {
                let _ = writeln!(out, "{}", table(report, presets::UTF8_FULL_CONDENSED));
            } else {
                out.push_str(&compact_table(report));
            }
            out.push_str(&table_footer(report));
        }
        Format::Md => {
            let _ = writeln!(out, "{}\n", table(report, presets::ASCII_MARKDOWN));
            for line in summary_lines(report) {
                let _ = writeln!(out, "{line}  ");
            }
            let _ = writeln!(out, "{}\n", method_line(report));
            if let Some(r) = &report.roofline {
                let _ = writeln!(out, "{}\n", roofline_line(r));
            }
            for note in &report.notes {
                let _ = writeln!(out, "Note: {note}.\n");
            }
            for w in &report.warnings {
                let _ = writeln!(out, "Warning: {w}\n");
            }
            let agreement = agreement_table(report);
            if !agreement.is_empty() {
                let _ = writeln!(out, "```\n{agreement}```\n");
            }
            if let Some(g) = &report.gate {
                let _ = writeln!(out, "{}", crate::gate::render(g));
            }
            let _ = writeln!(
                out,
                "Model `{}` ({:.1}M parameters, checksum {}), {} build, {}, commit {}.\n",
                report.model.name,
                report.model.parameters as f64 / 1e6,
                report.model.checksum,
                report.machine.build_profile,
                report.machine.cpu,
                report.machine.git_commit
            );
            let _ = writeln!(out, "{}", generated_text(report));
        }
        Format::Csv => {
            let _ = writeln!(out, "{}", CSV_HEADERS.join(","));
            for r in &report.results {
                let _ = writeln!(out, "{}", csv_row(r).join(","));
            }
        }
        Format::Jsonl => {
            for r in &report.results {
                let _ = writeln!(out, "{}", jsonl_row(report, r));
            }
        }
        Format::Json => {
            // Serialising plain structs of numbers and strings cannot fail.
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(report).unwrap_or_default()
            );
        }
    }
    out
}

/// One line: the measured limits and the decode roofline.
pub fn roofline_line(r: &crate::roofline::Roofline) -> String {
    format!(
        "Roofline (measured now, {}, {}): read bandwidth {:.1} GB/s, {:.1} MB of weights \
         per token -> decode at most {:.1} tok/s; peak FMA {:.1} GFLOP/s; GEMM 128x{}x{}: \
         simd {:.1}, matrixmultiply {:.1} GFLOP/s.",
        threads_phrase(r.threads),
        r.isa,
        r.read_gb_per_s,
        r.weight_bytes_per_token as f64 / 1e6,
        r.decode_roofline_tok_per_s,
        r.peak_gflops,
        r.gemm_k,
        r.gemm_n,
        r.gemm_simd_gflops,
        r.gemm_matrixmultiply_gflops
    )
}

/// The `--roofline` report.
pub fn render_roofline(r: &crate::roofline::Roofline, model: &str) -> String {
    format!("model {model}\n{}\n", roofline_line(r))
}

/// Why the tokens may differ: rounding (the gap is within what it explains at these logits'
/// size) or a bug.
pub fn divergence_verdict(d: &Divergence) -> String {
    let magnitude = d.reference_logit_magnitude;
    let tolerance = rounding_gap(magnitude);
    if !d.near_tie {
        return format!(
            "a clear choice for the reference (rounding explains gaps up to {tolerance:.3} on \
             logits up to {magnitude:.4}): this is a bug in one of them"
        );
    }
    if magnitude > HUGE_LOGIT {
        format!(
            "within what float rounding explains at logits this large (up to {magnitude:.4e}, \
             gaps up to {tolerance:.3e}): the backends sum in different orders and the model is \
             too ill-conditioned for them to agree; not a bug, but not a model to compare \
             backends on"
        )
    } else {
        format!(
            "the reference's top-2 gap is within the {tolerance:.3} logit tolerance: likely \
             float rounding on a near-tie"
        )
    }
}

/// The divergence report for every backend that differs from the reference (for stderr).
pub fn divergence_report(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.results {
        let Some(d) = &r.divergence else { continue };
        let verdict = divergence_verdict(d);
        let _ = writeln!(
            out,
            "DIVERGED: {} differs from {} at generated token {}: {} chose {} {:?}, {} chose {} \
             {:?}; reference top-1/top-2 logit gap {:.4} ({verdict})",
            r.backend,
            report.reference,
            d.step,
            report.reference,
            d.reference_id,
            d.reference_text,
            r.backend,
            d.backend_id,
            d.backend_text,
            d.reference_top2_gap
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NEAR_TIE_GAP;

    fn divergence(gap: f32, top1: f32) -> Divergence {
        Divergence {
            step: 3,
            reference_id: 1,
            backend_id: 2,
            reference_text: "a".into(),
            backend_text: "b".into(),
            reference_top2_gap: gap,
            reference_logit_magnitude: top1,
            near_tie: gap < rounding_gap(top1),
        }
    }

    #[test]
    fn a_divergence_is_called_rounding_only_when_the_logits_size_explains_it() {
        // GPT-2's usual logits: the fixed tolerance.
        assert!(divergence_verdict(&divergence(0.5, -80.0)).contains("this is a bug"));
        assert!(divergence_verdict(&divergence(0.004, -80.0)).contains("near-tie"));
        // A real GPT-2 near-tie with logits past 100 is still a near-tie, not "ill-conditioned".
        let tie = divergence_verdict(&divergence(0.012, -150.0));
        assert!(
            tie.contains("near-tie") && !tie.contains("ill-conditioned"),
            "{tie}"
        );
        // Huge but finite weights: a gap of 1000 on logits of 1e8 is rounding, said as such.
        let huge = divergence_verdict(&divergence(1000.0, 1.0e8));
        assert!(
            huge.contains("within what float rounding explains at logits this large")
                && !huge.contains("bug in one"),
            "{huge}"
        );
        // The same gap on moderate logits is not.
        assert!(divergence_verdict(&divergence(1000.0, 5000.0)).contains("this is a bug"));
        assert!((rounding_gap(-300.0) - 0.03).abs() < 1e-6);
        assert_eq!(rounding_gap(1.0), NEAR_TIE_GAP);
    }
}
