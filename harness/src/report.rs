//! The result of a `--compare` run, and its formats: a terminal table, Markdown, CSV, JSON.
//!
//! The JSON form is the complete record (schema below, versioned); the other formats show the
//! same rows. Everything is written to stdout; progress and notes go to stderr, so
//! `gpt2-bench --compare --format json > run.json` gives a clean file.

use std::fmt::Write;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
use serde::Serialize;

use crate::machine::Machine;
use crate::stats::Summary;

/// Bumped whenever a field changes meaning or disappears (adding fields does not bump it).
pub const SCHEMA_VERSION: u32 = 2;

/// A logit gap below this is within the tolerance backends are held to, so a divergence there
/// may be float rounding rather than a bug.
pub const NEAR_TIE_GAP: f32 = 1e-2;

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub source: String,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_embd: u32,
    pub vocab_size: u32,
    pub n_ctx: u32,
    pub parameters: u64,
    pub file_bytes: u64,
    /// XXH3-64 of the tensor data: identifies the exact weights.
    pub checksum: String,
}

/// Where a backend's tokens first differ from the reference's.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// Index among the generated tokens (0 = the token chosen from the prefill's logits).
    pub step: usize,
    pub reference_id: u32,
    pub backend_id: u32,
    pub reference_text: String,
    pub backend_text: String,
    /// The reference's top-1 minus top-2 logit at that step.
    pub reference_top2_gap: f32,
    /// True when that gap is below [`NEAR_TIE_GAP`]: float rounding can explain the flip.
    pub near_tie: bool,
}

/// Per-token decode latency, over every decode step of every measured run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// Memory a backend used.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// The model file, memory-mapped (shared by every backend; pages are read in place).
    pub weights_mapped_bytes: u64,
    /// Weights copied out of the mapped file into the backend's own memory (candle).
    pub weights_copied_bytes: u64,
    pub kv_cache_bytes: u64,
    /// Activation buffers the backend keeps between calls; `None` for backends that allocate
    /// them per call (their cost shows in the peak RSS).
    pub scratch_bytes: Option<u64>,
    /// Peak resident set size of the process while this backend was created and run (the peak
    /// is reset before each backend where the OS allows, else it is the process's peak so far;
    /// mapped weight pages count once touched).
    pub peak_rss_bytes: Option<u64>,
}

/// Every raw timing, in nanoseconds, so that any statistic can be recomputed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    /// Time to first token of each measured run.
    pub prefill_ns: Vec<u64>,
    /// Each measured run's decode steps.
    pub decode_step_ns: Vec<Vec<u64>>,
    /// The same for the warm-up runs (not in any statistic).
    pub warmup_prefill_ns: Vec<u64>,
    pub warmup_decode_step_ns: Vec<Vec<u64>>,
    /// Read bandwidth (GB/s) of the all-thread pass over the weights just before each measured
    /// run; empty with `--no-roofline`.
    pub read_gb_per_s_before_run: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendResult {
    pub backend: String,
    pub summary: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub threads: usize,
    pub kv_cache: bool,
    pub dtype: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub runs: usize,
    pub warmup: usize,
    /// Time to first token: the prefill plus choosing the first token (per run).
    pub ttft_ms: Summary,
    pub prefill_tok_per_s: Summary,
    /// Decode steps are every token after the first; `None` when only one token was generated.
    pub decode_tok_per_s: Option<Summary>,
    pub decode_latency: Option<Latency>,
    /// Mean decode_tok_per_s divided by the measured decode roofline (when measured).
    pub decode_roofline_fraction: Option<f64>,
    /// Median over runs of the run's decode weight stream (tok/s x weight bytes per token)
    /// divided by the read bandwidth measured just before that run (when measured).
    pub decode_read_fraction: Option<f64>,
    /// FLOPs of the prefill divided by its mean time (see roofline::prefill_flops), GFLOP/s.
    pub prefill_gflops: f64,
    /// prefill_gflops divided by the measured peak FMA rate (when measured).
    pub prefill_peak_fraction: Option<f64>,
    /// prefill_gflops divided by the best GEMM rate measured in the same run.
    pub prefill_best_gemm_fraction: Option<f64>,
    /// Mean time of one whole run (prefill and every decode step).
    pub total_ms: f64,
    /// Slowest backend's mean total time divided by this one's (same prompt length).
    pub speedup_vs_slowest: f64,
    pub memory: Memory,
    /// Every run of this backend produced the same tokens (a backend must be deterministic).
    pub runs_agree: bool,
    /// Same tokens as the reference, in every run.
    pub tokens_match: bool,
    pub divergence: Option<Divergence>,
    pub samples: Samples,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    /// The command line that produced this report.
    pub command_line: Vec<String>,
    /// When the run started, UTC, ISO 8601.
    pub date_utc: String,
    pub model: ModelInfo,
    /// The prompt (the longest one when several `--prompt-tokens` lengths ran: the shorter
    /// prompts are its first N tokens).
    pub prompt: String,
    pub prompt_token_ids: Vec<u32>,
    pub max_tokens: usize,
    /// `greedy`, or the sampling settings and seed.
    pub sampling: String,
    pub runs: usize,
    pub warmup: usize,
    pub reference: String,
    /// One row per backend and prompt length.
    pub results: Vec<BackendResult>,
    pub all_match: bool,
    pub roofline: Option<crate::roofline::Roofline>,
    pub notes: Vec<String>,
    /// Reasons to doubt these timings (debug build, outliers, a busy machine, ...).
    pub warnings: Vec<String>,
    /// The comparison with `--baseline`, when given.
    pub gate: Option<crate::gate::Gate>,
    pub machine: Machine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Md,
    Csv,
    Json,
    /// The JSON report on one line, for appending runs to a file.
    Jsonl,
}

const HEADERS: [&str; 16] = [
    "backend",
    "threads",
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
    "speedup",
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

fn row(r: &BackendResult, reference: &str) -> [String; 16] {
    let dash = || "-".to_string();
    [
        r.backend.clone(),
        if r.device == "cpu" {
            r.threads.to_string()
        } else {
            r.device.clone()
        },
        if r.kv_cache { "yes" } else { "no" }.to_string(),
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
        },
    ]
}

fn table(report: &Report, preset: &str) -> String {
    let mut t = Table::new();
    t.load_preset(preset)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(HEADERS);
    for r in &report.results {
        let cells = row(r, &report.reference).map(|s| {
            let numeric = s.starts_with(|c: char| c.is_ascii_digit());
            Cell::new(s).set_alignment(if numeric {
                CellAlignment::Right
            } else {
                CellAlignment::Left
            })
        });
        t.add_row(cells);
    }
    t.to_string()
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

/// Renders the report in `format`.
pub fn render(report: &Report, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Table => {
            let _ = writeln!(
                out,
                "{} ({:.1}M parameters), {} on {} ({} threads available)",
                report.model.name,
                report.model.parameters as f64 / 1e6,
                report.machine.build_profile,
                report.machine.cpu,
                report.machine.logical_cores
            );
            let _ = writeln!(out, "{}", table(report, presets::UTF8_FULL_CONDENSED));
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
            let _ = writeln!(out, "{}", generated_text(report));
        }
        Format::Md => {
            let _ = writeln!(out, "{}\n", table(report, presets::ASCII_MARKDOWN));
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
            let _ = writeln!(out, "{}", HEADERS.join(","));
            for r in &report.results {
                let fields = row(r, &report.reference).map(|s| csv_field(&s));
                let _ = writeln!(out, "{}", fields.join(","));
            }
        }
        Format::Jsonl => {
            let _ = writeln!(out, "{}", serde_json::to_string(report).unwrap_or_default());
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
        "Roofline (measured now, {} threads, {}): read bandwidth {:.1} GB/s, {:.1} MB of weights \
         per token -> decode at most {:.1} tok/s; peak FMA {:.1} GFLOP/s; GEMM 128x{}x{}: \
         simd {:.1}, matrixmultiply {:.1} GFLOP/s.",
        r.threads,
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

/// The divergence report for every backend that differs from the reference (for stderr).
pub fn divergence_report(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.results {
        let Some(d) = &r.divergence else { continue };
        let verdict = if d.near_tie {
            format!(
                "the reference's top-2 gap is within the {NEAR_TIE_GAP} logit tolerance: \
                 likely float rounding on a near-tie"
            )
        } else {
            "a clear choice for the reference: this is a bug in one of them".to_string()
        };
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
