//! The record of a `compare` run: plain data (serde), every result row with its samples, the
//! model, the machine, the roofline, the regression gate's verdict, the notes and warnings.
//! `compare` builds it, `gate` and `ab` judge it, `save` keeps it (its JSON is the saved
//! file's schema, versioned by [`SCHEMA_VERSION`]) and the renderers of [`crate::render`]
//! print it; this module imports none of them, so the data has one home and no cycle.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::stats::Summary;

/// Bumped whenever a field changes meaning or disappears. Adding a field does not bump it; an
/// added field carries `#[serde(default)]`, so every report of this version reads back
/// ([`read_report`]; a test reads each one committed under bench-results/).
pub const SCHEMA_VERSION: u32 = 2;

/// A logit gap below this is within the tolerance backends are held to, so a divergence there
/// may be float rounding rather than a bug.
pub const NEAR_TIE_GAP: f32 = 1e-2;

/// Rounding differences between backends grow with the size of the numbers: two summation
/// orders of the same f32 products differ by a few ulps of the largest partial sums, and over a
/// network's layers that reaches ~1e-5 to 1e-4 of the logits' size. At GPT-2's usual logits
/// (|logit| up to ~100) this is [`NEAR_TIE_GAP`]; a model with huge weights has huge logits,
/// where a gap of thousands can still be rounding.
pub const ROUNDING_PER_LOGIT: f32 = 1e-4;

/// Logits beyond this size (|logit|) are far outside anything a trained GPT-2 produces: a
/// divergence there is reported as a model too ill-conditioned to compare backends on.
pub const HUGE_LOGIT: f32 = 1e4;

/// The largest top-1/top-2 gap that float rounding explains on a step whose largest |logit| is
/// `logit_magnitude`.
pub fn rounding_gap(logit_magnitude: f32) -> f32 {
    NEAR_TIE_GAP.max(ROUNDING_PER_LOGIT * logit_magnitude.abs())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The matrices' dtype label, and the weight bytes one decode step reads (reports saved
    /// before these were recorded ran f32 files, and say 0 bytes).
    #[serde(default = "f32_name")]
    pub dtype: String,
    #[serde(default)]
    pub weight_bytes_per_token: u64,
}

/// Where a backend's tokens first differ from the reference's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Divergence {
    /// Index among the generated tokens (0 = the token chosen from the prefill's logits).
    pub step: usize,
    pub reference_id: u32,
    pub backend_id: u32,
    pub reference_text: String,
    pub backend_text: String,
    /// The reference's top-1 minus top-2 logit at that step.
    pub reference_top2_gap: f32,
    /// The reference's largest |logit| at that step.
    #[serde(default)]
    pub reference_logit_magnitude: f32,
    /// True when the gap is below [`rounding_gap`] of that magnitude: float rounding can
    /// explain the flip.
    pub near_tie: bool,
}

/// Per-token decode latency, over every decode step of every measured run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// Memory a backend used.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    #[serde(default)]
    pub read_gb_per_s_before_run: Vec<f64>,
    /// FMA rate (GFLOP/s) of the all-thread pass just before each measured run; empty with
    /// `--no-roofline`.
    #[serde(default)]
    pub peak_gflops_before_run: Vec<f64>,
}

/// The rates divided by this run's machine speed: the medians of the read passes (GB/s) and FMA
/// passes (GFLOP/s) taken beside every measured run of every backend (`samples`). A shared
/// machine's speed swings between minutes; these ratios cancel most of that, so they measure
/// the code. The regression gate compares them. Mean ± standard deviation over the runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Normalized {
    /// The median read pass of the run, GB/s.
    pub machine_read_gb_per_s: f64,
    /// The median FMA pass of the run, GFLOP/s.
    pub machine_peak_gflops: f64,
    /// Prefill tok/s per GFLOP/s of the FMA pass.
    pub prefill_tok_per_peak_gflop: Summary,
    /// Decode tok/s per GB/s of the read pass (for a backend whose decode streams weights).
    pub decode_tok_per_read_gb: Option<Summary>,
    /// Decode tok/s per GFLOP/s of the FMA pass (for a backend whose decode is arithmetic).
    pub decode_tok_per_peak_gflop: Option<Summary>,
}

/// [`BackendResult::rule`] of a backend meant to be exact.
pub const EXACT: &str = "exact";
/// [`BackendResult::rule`] of a backend that computes the file's dtypes by another rule.
pub const DIFFERENT_RULE: &str = "different rule";

fn exact() -> String {
    EXACT.to_string()
}

impl BackendResult {
    /// Whether it computes by another rule than the reference ([`DIFFERENT_RULE`]).
    pub fn follows_other_rule(&self) -> bool {
        self.rule == DIFFERENT_RULE
    }

    /// Whether the row is as it must be: deterministic, and with the reference's tokens unless
    /// it follows another rule. A row that is not fails the run (exit status 1).
    pub fn passes(&self) -> bool {
        self.runs_agree && (self.tokens_match || self.follows_other_rule())
    }
}

/// The dtype of a report saved before it was recorded (f32, the only one then).
fn f32_name() -> String {
    "f32".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendResult {
    pub backend: String,
    pub summary: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub threads: usize,
    pub kv_cache: bool,
    /// What keys and values were cached (or, without a cache, rounded) in: `f32`, or `f16`
    /// (`--kv-cache f16`).
    #[serde(default = "f32_name")]
    pub kv_cache_dtype: String,
    /// The instruction set the backend's kernels ran (`avx512`, `avx2+fma`, `neon`, `scalar`),
    /// or the library that picks its own (`matrixmultiply`, `gemm`, `cuda`); empty in reports
    /// saved before it was recorded.
    #[serde(default)]
    pub isa: String,
    /// The weight file's dtype label (`f32`, `q8_0`, `q8_0+f16` for a mixed file).
    pub dtype: String,
    /// The weight file this row ran (its file name), and the weight bytes one decode step reads
    /// from it in its dtypes.
    #[serde(default)]
    pub model_file: String,
    #[serde(default)]
    pub weight_bytes_per_token: u64,
    /// What tables and charts call this row: the backend, followed by the dtype when the report
    /// compares several weight files.
    #[serde(default)]
    pub label: String,
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
    /// The rates divided by the machine's speed measured beside each run (the gate's figures).
    #[serde(default)]
    pub machine_normalized: Option<Normalized>,
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
    /// The reference backend's total time (prefill + decode) over this one's, at the same
    /// prompt length: how much faster than the reference (the "speedup" of every format).
    #[serde(default)]
    pub speedup_vs_reference: f64,
    pub memory: Memory,
    /// Every run of this backend produced the same tokens (a backend must be deterministic).
    pub runs_agree: bool,
    /// Same tokens as the reference, in every run.
    pub tokens_match: bool,
    /// `exact`: it computes this file's dtypes by the reference's rule, so its tokens must equal
    /// the reference's; `different rule`: it computes them by another or rounds its own way
    /// (llama.cpp: its q8_0 products round their inputs to 8-bit blocks, and in every dtype
    /// its GELU is read from an f16 table), so its tokens may part from the reference's and
    /// `agreement` says how close it came. Reports saved before this field held exact rows
    /// only.
    #[serde(default = "exact")]
    pub rule: String,
    /// A `different rule` row's agreement with the reference on the same file: top-1 share and
    /// KL over the reference's context, first greedy difference.
    #[serde(default)]
    pub agreement: Option<crate::agreement::Agreement>,
    pub divergence: Option<Divergence>,
    pub samples: Samples,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// `greedy`, or the sampling settings and seed (empty in reports saved before sampling).
    #[serde(default)]
    pub sampling: String,
    pub runs: usize,
    pub warmup: usize,
    pub reference: String,
    /// One row per backend and prompt length.
    pub results: Vec<BackendResult>,
    /// Every row passes ([`BackendResult::passes`]): the reference's tokens, in every run, for
    /// every backend meant to be exact.
    pub all_match: bool,
    pub roofline: Option<crate::roofline::Roofline>,
    pub notes: Vec<String>,
    /// Reasons to doubt these timings (debug build, outliers, a busy machine, ...).
    pub warnings: Vec<String>,
    /// The comparison with `--baseline`, when given. Not read back: a report read back (a
    /// baseline, a child run's) is judged anew, never by its old verdict.
    #[serde(skip_deserializing)]
    pub gate: Option<Gate>,
    /// Every weight file of the run (the first is `model`); several when comparing precisions.
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    /// Each further file's agreement with the first (empty with one file).
    #[serde(default)]
    pub agreement: Vec<crate::agreement::Agreement>,
    pub machine: Machine,
    /// The machine's 1-minute load average just before the run (other programs competing for
    /// its cores); `None` where the OS does not say, and in reports saved before it was kept.
    #[serde(default)]
    pub load_average_before_run: Option<f64>,
}

impl Report {
    /// Every weight file of the run: `models`, or `model` alone in a report saved before
    /// `models` existed.
    pub fn files(&self) -> &[ModelInfo] {
        if self.models.is_empty() {
            std::slice::from_ref(&self.model)
        } else {
            &self.models
        }
    }

    /// The weight file a row ran: the one its `model_file` names (the first file in a report
    /// saved before rows named theirs).
    pub fn file_of(&self, row: &BackendResult) -> &ModelInfo {
        self.files()
            .iter()
            .find(|m| file_name(std::path::Path::new(&m.path)) == row.model_file)
            .unwrap_or(&self.model)
    }
}

/// Reads a report back (a `--baseline`, a saved run, the JSON of a child run of `ab` or of a
/// thread sweep) as the same [`Report`] that wrote it: the schema version is checked first, so
/// a report from another version is named as such instead of as a missing field.
/// The errors say what is wrong with the text; callers name where it came from.
pub fn read_report(json: &[u8]) -> anyhow::Result<Report> {
    let value: serde_json::Value = serde_json::from_slice(json).context("not JSON")?;
    let found = value["schema_version"].as_u64();
    if found != Some(u64::from(SCHEMA_VERSION)) {
        anyhow::bail!(
            "report schema version {} but this gpt2-bench writes {SCHEMA_VERSION}",
            found.map_or("missing".to_string(), |v| v.to_string())
        );
    }
    serde_json::from_value(value).context("not a gpt2-bench compare report")
}

/// A weight file's name as rows and agreements name it (`model_file`): the last component.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// "1 thread", "2 threads": how every view (and the gate's caveats) says a thread count.
pub fn threads_phrase(n: usize) -> String {
    if n == 1 {
        "1 thread".to_string()
    } else {
        format!("{n} threads")
    }
}

// ---------------------------------------------------------------------------------------------
// The regression gate's verdict (`--baseline`), as the report carries it; the judging is in
// `crate::gate`.

/// One metric of one backend, now against the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub backend: String,
    pub prompt_tokens: usize,
    /// What was compared: `prefill per GFLOP/s`, `decode per GB/s read`, `decode per GFLOP/s`,
    /// or (without the machine's passes) `prefill tok/s`, `decode tok/s`.
    pub metric: &'static str,
    pub baseline: Summary,
    pub now: Summary,
    /// Mean tok/s of the baseline and now, for the reader.
    pub baseline_tok_per_s: f64,
    pub now_tok_per_s: f64,
    /// now / baseline (above 1 is faster).
    pub ratio: f64,
    pub ratio_stddev: f64,
    /// The slowdown minus its uncertainty exceeds the threshold (in the first measurement and,
    /// when there was one, in the confirming rerun).
    pub regression: bool,
    /// The same comparison measured again when the first showed a regression: a burst of
    /// another program during one backend's runs rarely repeats, a slower code always does.
    pub rerun: Option<Rerun>,
}

/// A confirming rerun of a comparison.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rerun {
    pub ratio: f64,
    pub ratio_stddev: f64,
    pub regression: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub baseline_file: String,
    /// Largest tolerated slowdown, as a fraction (0.1 = 10%). A regression must show in the
    /// first measurement and again in a rerun of the suspect backends.
    pub max_slowdown: f64,
    pub comparisons: Vec<Comparison>,
    /// Backends or lengths present now but not in the baseline (not gated).
    pub not_in_baseline: Vec<String>,
    /// Why the two runs may not be comparable (other model, machine or thread count).
    pub caveats: Vec<String>,
    pub regressed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields added to the report after a schema version was first written carry a default,
    /// so that every report of this version (a `--baseline` saved last month, the child of an
    /// older binary under `ab`) reads back: every one committed under bench-results/ does.
    #[test]
    fn every_saved_report_of_this_version_reads_back() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read(&path).unwrap();
            let version: serde_json::Value = serde_json::from_slice(&text).unwrap();
            if version["schema_version"].as_u64() != Some(u64::from(SCHEMA_VERSION)) {
                assert!(
                    read_report(&text)
                        .unwrap_err()
                        .to_string()
                        .contains("schema version")
                );
                continue;
            }
            let report = read_report(&text).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(!report.results.is_empty(), "{}", path.display());
            read += 1;
        }
        assert!(
            read >= 10,
            "only {read} reports of schema {SCHEMA_VERSION} found"
        );
    }

    #[test]
    fn what_is_not_a_report_is_named() {
        let says = |text: &str| format!("{:#}", read_report(text.as_bytes()).unwrap_err());
        assert!(says("{").starts_with("not JSON"));
        assert!(says("{}").contains("schema version missing"));
        assert!(says(r#"{"schema_version": 2}"#).starts_with("not a gpt2-bench compare report"));
    }
}
