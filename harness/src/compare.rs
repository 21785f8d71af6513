//! `--compare`: every selected backend on the same greedy decoding, repeated, timed, checked.
//!
//! For each backend: create it once (its start-up is not timed), then for each prompt length run
//! `warmup` untimed-in-statistics runs and `runs` measured ones. Each run is a prefill (timed
//! with the choice of the first token: the time to first token) and `n_new - 1` decode steps,
//! each timed on its own. Tokenization happens once, before any of this, and is not timed.
//! Every run of every backend must produce the same tokens as the reference backend's runs.
//!
//! When the roofline is measured, one all-thread read pass over the model's weights also runs
//! just before each run (about 20 ms for GPT-2 small). A shared machine's bandwidth swings from
//! minute to minute, so the best-of-10 read measured once at the start is a fair *limit* but a
//! poor yardstick for a run a minute later; the pass beside each run gives
//! `decode_read_fraction`, how close decode came to what memory delivered at that moment. A short
//! all-thread FMA pass (about 15 ms) runs beside it; every row's rates divided by the medians of
//! all those passes are the `machine_normalized` figures the regression gate compares.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use gpt2_backends::kernels::{Compute, Kernels, probe};
use gpt2_backends::{EngineInfo, EngineOptions};
use gpt2_weights::{Gpt2Tokenizer, WeightFile};

use crate::agreement;
use crate::generate::{Generation, generate};
use crate::machine;
use crate::record::{
    BackendResult, Divergence, Latency, Memory, Normalized, Samples, rounding_gap,
};
use crate::record::{DIFFERENT_RULE, EXACT, read_report, threads_phrase};
use crate::roofline::{Roofline, prefill_flops};
use crate::sampling::SamplingOptions;
use crate::stats::{Summary, outliers, percentile};
use crate::warning::Warning;

/// What `compare` runs, its arguments checked and typed once by `plan::compare`: nothing
/// below the command layer reads the command line.
#[derive(Clone)]
pub struct Plan {
    /// The reference first.
    pub backends: Vec<String>,
    /// The longest prompt; each case runs its first `lengths[i]` tokens.
    pub prompt: Vec<u32>,
    /// The prompt as the user gave it (`--prompt`), for the report; else it is the decoded ids.
    pub prompt_text: Option<String>,
    /// `--max-tokens`, for the report (`new_tokens` is what each case runs).
    pub max_tokens: usize,
    pub lengths: Vec<usize>,
    /// New tokens per case (already capped by the context).
    pub new_tokens: Vec<usize>,
    pub runs: usize,
    pub warmup: usize,
    pub options: EngineOptions,
    /// Greedy, or sampling with one seed (every run and backend starts from it).
    pub sampling: SamplingOptions,
    pub quiet: bool,
    /// Several weight files are compared: rows are labelled with their dtype.
    pub several_models: bool,
    /// (prompt length, total ms) of the reference row of the first file, against which every
    /// later file's rows state their speedup; empty for the first file (its own reference).
    pub reference_total_ms: Vec<(usize, f64)>,
    /// `--threads` with several counts: each runs in a child process ([`sweep`]).
    pub sweep: Vec<usize>,
    /// A sweep child's arguments, but for `--model` and `--threads` (`plan::sweep_child_args`).
    pub sweep_args: Vec<OsString>,
}

/// A row's label in a thread sweep: `simd-kv t2`.
pub fn sweep_label(label: &str, threads: usize) -> String {
    format!("{label} t{threads}")
}

/// `--threads N1,N2,...`: the comparison once per thread count, each in a child process of
/// this binary (ndarray's matrixmultiply and candle's rayon pool read their thread count once
/// per process, so one process cannot honestly run two counts), their rows returned together,
/// labelled with their count, and each count's rows handed to `on_row` as its child finishes.
/// A child's warnings come back prefixed with its count.
pub fn sweep(
    plan: &Plan,
    model: &Path,
    on_row: &mut dyn FnMut(&BackendResult),
) -> anyhow::Result<(Vec<BackendResult>, Vec<Warning>)> {
    let exe = std::env::current_exe().context("finding this gpt2-bench binary")?;
    let (mut rows, mut warnings) = (Vec::new(), Vec::new());
    for &n in &plan.sweep {
        if !plan.quiet {
            gpt2_process::cli::stderr(&format!("running with {}...\n", threads_phrase(n)));
        }
        let mut command = std::process::Command::new(&exe);
        command
            .args(&plan.sweep_args)
            .arg("--model")
            .arg(model)
            .args(["--threads", &n.to_string()]);
        let out = gpt2_process::child::run(&mut command, None)
            .with_context(|| format!("the run with {}", threads_phrase(n)))?;
        // 1: a backend's tokens differ; the report still comes, and says so.
        if !matches!(out.status.code(), Some(0) | Some(1)) {
            bail!(
                "the run with {} failed ({})",
                threads_phrase(n),
                out.failure()
            );
        }
        let report = read_report(&out.stdout)
            .with_context(|| format!("reading the report of the run with {}", threads_phrase(n)))?;
        for mut r in report.results {
            r.label = sweep_label(&r.label, n);
            on_row(&r);
            rows.push(r);
        }
        warnings.extend(
            report
                .warnings
                .into_iter()
                // The machine's load and the build are said once, by this process.
                .filter(|w| !Warning::is_machine_wide(w))
                .map(|text| Warning::FromSweep { threads: n, text }),
        );
    }
    Ok((rows, warnings))
}

/// One backend at one prompt length: its runs.
struct Measured {
    name: String,
    info: EngineInfo,
    prompt_tokens: usize,
    warmup: Vec<Generation>,
    runs: Vec<Generation>,
    /// GB/s of the read pass right before each measured run (empty without a probe).
    read_gb_per_s: Vec<f64>,
    /// GFLOP/s of the FMA pass right before each measured run (empty without a probe).
    peak_gflops: Vec<f64>,
    peak_rss_bytes: Option<u64>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The machine passes run before every run: the pool to read with, the model's tensor data,
/// and the FMA iterations of one pass.
type Probe<'a> = (&'a Compute, &'a [f32], u64);

/// Runs one backend at every prompt length of the plan; the progress bar advances once per
/// generated token. With `probe`, one read pass and one FMA pass run before every run.
fn measure_backend(
    plan: &Plan,
    name: &str,
    weights: &gpt2_weights::Gpt2Weights,
    probe: Option<Probe>,
    progress: &dyn Fn(&str, u64) -> indicatif::ProgressBar,
) -> anyhow::Result<Vec<Measured>> {
    let per_backend: usize = plan.new_tokens.iter().sum::<usize>() * (plan.runs + plan.warmup);
    // Where the OS does not allow the reset, the figure is the process's peak so far.
    machine::reset_peak_rss();
    let mut engine = gpt2_backends::create(name, weights, &plan.options)?;
    let bar = progress(name, per_backend as u64);
    let mut cases = Vec::new();
    for (&len, &n_new) in plan.lengths.iter().zip(&plan.new_tokens) {
        let prompt = &plan.prompt[..len];
        let mut runs = Vec::new();
        let (mut read, mut peak) = (Vec::new(), Vec::new());
        for _ in 0..plan.warmup + plan.runs {
            if let Some((compute, data, fma_iters)) = probe {
                read.push(probe::read_bandwidth(compute, data, 1) / 1e9);
                peak.push(probe::fma_pass(compute, fma_iters) / 1e9);
            }
            // End-of-text does not stop a comparison: every backend does the same work.
            let g = generate(engine.as_mut(), prompt, n_new, plan.sampling, None, |_| {
                bar.inc(1)
            })
            .with_context(|| format!("backend {name}"))?;
            runs.push(g);
        }
        let measured = runs.split_off(plan.warmup);
        let read = read.split_off(plan.warmup.min(read.len()));
        let peak = peak.split_off(plan.warmup.min(peak.len()));
        cases.push((len, runs, measured, read, peak));
    }
    bar.finish_and_clear();
    let peak_rss_bytes = machine::peak_rss_bytes();
    let info = engine.info();
    drop(engine);
    if !plan.quiet {
        for (len, _, runs, _, _) in &cases {
            let total: Duration = runs.iter().map(|g| g.prefill + g.decode_total()).sum();
            gpt2_process::cli::stderr(&format!(
                "{name}: {len}-token prompt, {} run(s) of {} tokens in {:.2} s\n",
                runs.len(),
                runs.first().map_or(0, |g| g.token_ids.len()),
                total.as_secs_f64()
            ));
        }
    }
    Ok(cases
        .into_iter()
        .map(|(len, warmup, runs, read_gb_per_s, peak_gflops)| Measured {
            name: name.to_string(),
            info: info.clone(),
            prompt_tokens: len,
            warmup,
            runs,
            read_gb_per_s,
            peak_gflops,
            peak_rss_bytes,
        })
        .collect())
}

/// What tables and charts call a row: the backend, followed by the weight file's dtype when
/// several files are compared.
pub fn row_label(backend: &str, dtype: &str, several_models: bool) -> String {
    if several_models {
        format!("{backend} {dtype}")
    } else {
        backend.to_string()
    }
}

/// Where `got` first differs from the reference's tokens.
fn divergence(
    reference: &Generation,
    got: &Generation,
    tokenizer: &Gpt2Tokenizer,
) -> Option<Divergence> {
    let step = got
        .token_ids
        .iter()
        .zip(&reference.token_ids)
        .position(|(a, b)| a != b)?;
    let (want, have) = (reference.token_ids[step], got.token_ids[step]);
    let gap = reference.top2_gaps[step];
    let top1 = reference.logit_magnitudes[step];
    Some(Divergence {
        step,
        reference_id: want,
        backend_id: have,
        reference_text: tokenizer.decode(&[want]),
        backend_text: tokenizer.decode(&[have]),
        reference_top2_gap: gap,
        reference_logit_magnitude: top1,
        near_tie: gap < rounding_gap(top1),
    })
}

/// Measures and summarises: one result row per backend and prompt length, plus warnings.
/// `on_row` sees each row as soon as its backend has run (the reference runs first).
pub fn run(
    plan: &Plan,
    file: &WeightFile,
    tokenizer: &Gpt2Tokenizer,
    roofline: Option<&Roofline>,
    progress: &dyn Fn(&str, u64) -> indicatif::ProgressBar,
    on_row: &mut dyn FnMut(&BackendResult),
) -> anyhow::Result<(Vec<BackendResult>, Vec<Warning>)> {
    let weights = file.gpt2()?;
    let probe_compute = roofline
        // The best kernels, whatever the backends are forced to (see roofline::measure).
        .map(|_| Compute::new(Kernels::best_available(), plan.options.threads, 0))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let data = file.data_f32()?;
    let probe = probe_compute
        .as_ref()
        .map(|c| (c, data, probe::fma_iters(c, 0.015)));
    let mut measured: Vec<Measured> = Vec::new();
    let mut results: Vec<BackendResult> = Vec::new();
    let mut warnings = Vec::new();
    let dtypes: Vec<gpt2_weights::Dtype> = weights.matrix_dtypes().collect();
    for name in &plan.backends {
        // A backend that computes this file's dtypes by another rule than the reference, or
        // rounds its own way (llama.cpp), is judged by its agreement, not by equal tokens; so is
        // every backend when the reference is such a one (`--reference llama.cpp`).
        let judged = |b: &str| {
            gpt2_backends::registry::spec(b).is_some_and(|s| s.judged_by_agreement(&dtypes))
        };
        let other_rule = *name != plan.backends[0] && (judged(name) || judged(&plan.backends[0]));
        for m in measure_backend(plan, name, &weights, probe, progress)? {
            let reference = measured
                .iter()
                .find(|r| r.prompt_tokens == m.prompt_tokens)
                .unwrap_or(&m);
            let stats = statistics(&m);
            warnings.extend(timing_warnings(&m, &stats, plan.warmup));
            // Every file's rows are set against the first file's reference (its total time at
            // this prompt length); the first file's against its own.
            let reference_total_ms = plan
                .reference_total_ms
                .iter()
                .find(|(len, _)| *len == m.prompt_tokens)
                .map(|&(_, ms)| ms)
                .or_else(|| {
                    results
                        .iter()
                        .find(|r: &&BackendResult| r.prompt_tokens == m.prompt_tokens)
                        .map(|r| r.total_ms)
                });
            let against = Against {
                roofline,
                reference,
                reference_total_ms,
                kv_cache_dtype: plan.options.kv_cache.resolve(&weights).to_string(),
            };
            let mut result = row(plan, file, tokenizer, &m, stats, against);
            if other_rule {
                result.rule = DIFFERENT_RULE.to_string();
                let agreement = agreement::backend_agreement(
                    file,
                    (&plan.backends[0], name),
                    &plan.options,
                    &plan.prompt[..m.prompt_tokens],
                    (&reference.runs[0].token_ids, &result.token_ids),
                )
                .with_context(|| format!("the agreement of {name} with the reference"))?;
                result.agreement = Some(agreement);
            }
            on_row(&result);
            results.push(result);
            measured.push(m);
        }
    }
    cross_row(&mut results, &measured);
    Ok((results, warnings))
}

/// The statistics of one backend at one prompt length, over its measured runs.
struct Stats {
    ttft_ms: Summary,
    prefill_tok_per_s: Summary,
    decode_tok_per_s: Option<Summary>,
    decode_latency: Option<Latency>,
    /// Every decode step of every run, in ms.
    step_ms: Vec<f64>,
    /// Each run's total time (prefill and every step), in seconds.
    run_totals_s: Vec<f64>,
    /// Mean of [`Self::run_totals_s`], in ms.
    total_ms: f64,
}

fn statistics(m: &Measured) -> Stats {
    let secs = |d: Duration| d.as_secs_f64();
    let ttft: Vec<f64> = m.runs.iter().map(|g| secs(g.prefill) * 1e3).collect();
    let prefill_rate: Vec<f64> = m
        .runs
        .iter()
        .map(|g| m.prompt_tokens as f64 / secs(g.prefill))
        .collect();
    let decode_rate: Vec<f64> = m
        .runs
        .iter()
        .filter(|g| !g.steps.is_empty())
        .map(|g| g.steps.len() as f64 / secs(g.decode_total()))
        .collect();
    let step_ms: Vec<f64> = m
        .runs
        .iter()
        .flat_map(|g| g.steps.iter().map(|&d| secs(d) * 1e3))
        .collect();
    let run_totals_s: Vec<f64> = m
        .runs
        .iter()
        .map(|g| secs(g.prefill + g.decode_total()))
        .collect();
    Stats {
        ttft_ms: Summary::of(&ttft).expect("at least one run"),
        prefill_tok_per_s: Summary::of(&prefill_rate).expect("at least one run"),
        decode_tok_per_s: Summary::of(&decode_rate),
        decode_latency: Summary::of(&step_ms).map(|s| Latency {
            mean_ms: s.mean,
            p50_ms: percentile(&step_ms, 50.0),
            p90_ms: percentile(&step_ms, 90.0),
            p99_ms: percentile(&step_ms, 99.0),
        }),
        total_ms: 1e3 * run_totals_s.iter().sum::<f64>() / run_totals_s.len() as f64,
        step_ms,
        run_totals_s,
    }
}

/// hyperfine's warnings about one backend's timings: outlying decode steps, a first run much
/// slower than the rest.
fn timing_warnings(m: &Measured, stats: &Stats, warmup: usize) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let outlier_steps = outliers(&stats.step_ms);
    if outlier_steps > 0 {
        warnings.push(Warning::OutlierSteps {
            backend: m.name.clone(),
            prompt_tokens: m.prompt_tokens,
            outliers: outlier_steps,
            steps: stats.step_ms.len(),
        });
    }
    let totals = &stats.run_totals_s;
    if totals.len() >= 3 {
        let rest_median = percentile(&totals[1..], 50.0);
        if totals[0] > 1.5 * rest_median {
            warnings.push(Warning::SlowFirstRun {
                backend: m.name.clone(),
                prompt_tokens: m.prompt_tokens,
                first_s: totals[0],
                median_s: rest_median,
                warmup,
            });
        }
    }
    warnings
}

/// What a row is set against: the roofline, the reference backend's runs at its prompt length
/// (`m` itself for the reference), the reference's total time (the speedup's numerator), and
/// what the keys and values were cached in.
struct Against<'a> {
    roofline: Option<&'a Roofline>,
    reference: &'a Measured,
    reference_total_ms: Option<f64>,
    kv_cache_dtype: String,
}

/// One backend at one prompt length: its row, complete but for the figures that need every
/// row ([`cross_row`]).
fn row(
    plan: &Plan,
    file: &WeightFile,
    tokenizer: &Gpt2Tokenizer,
    m: &Measured,
    stats: Stats,
    against: Against<'_>,
) -> BackendResult {
    let first = &m.runs[0];
    let runs_agree = m
        .runs
        .iter()
        .chain(&m.warmup)
        .all(|g| g.token_ids == first.token_ids);
    let div = m
        .runs
        .iter()
        .find_map(|g| divergence(&against.reference.runs[0], g, tokenizer));
    let roofline = against.roofline;
    let decode_read_fraction = roofline
        .and_then(|r| decode_read_fraction(&m.runs, &m.read_gb_per_s, r.weight_bytes_per_token));
    let prefill_gflops =
        prefill_flops(file.config(), m.prompt_tokens) / (stats.ttft_ms.mean / 1e3) / 1e9;
    let total_ms = stats.total_ms;
    BackendResult {
        backend: m.name.clone(),
        summary: m.info.summary.to_string(),
        device: m.info.device.clone(),
        threads: m.info.threads,
        kv_cache: m.info.kv_cache,
        kv_cache_dtype: against.kv_cache_dtype,
        isa: m.info.isa.to_string(),
        dtype: m.info.dtype.to_string(),
        model_file: crate::record::file_name(file.path()),
        weight_bytes_per_token: file.bytes_per_token(),
        label: row_label(&m.name, &m.info.dtype, plan.several_models),
        prompt_tokens: m.prompt_tokens,
        new_tokens: first.token_ids.len(),
        token_ids: first.token_ids.clone(),
        text: tokenizer.decode(&first.token_ids),
        runs: m.runs.len(),
        warmup: m.warmup.len(),
        ttft_ms: stats.ttft_ms,
        prefill_tok_per_s: stats.prefill_tok_per_s,
        decode_roofline_fraction: roofline
            .zip(stats.decode_tok_per_s)
            .map(|(r, d)| d.mean / r.decode_roofline_tok_per_s),
        decode_read_fraction,
        machine_normalized: None, // cross_row: from every backend's passes
        decode_tok_per_s: stats.decode_tok_per_s,
        decode_latency: stats.decode_latency,
        prefill_gflops,
        prefill_peak_fraction: roofline.map(|r| prefill_gflops / r.peak_gflops),
        prefill_best_gemm_fraction: roofline
            .map(|r| prefill_gflops / r.gemm_simd_gflops.max(r.gemm_matrixmultiply_gflops)),
        total_ms,
        speedup_vs_slowest: 0.0, // cross_row: needs the slowest row
        speedup_vs_reference: against.reference_total_ms.unwrap_or(total_ms) / total_ms,
        memory: Memory {
            weights_mapped_bytes: file.file_len(),
            weights_copied_bytes: m.info.weights_copied_bytes,
            kv_cache_bytes: m.info.kv_cache_bytes,
            scratch_bytes: m.info.scratch_bytes,
            peak_rss_bytes: m.peak_rss_bytes,
        },
        runs_agree,
        tokens_match: runs_agree && div.is_none(),
        rule: EXACT.to_string(), // `run`: a backend of another rule is marked there
        agreement: None,
        divergence: div,
        samples: Samples {
            prefill_ns: m.runs.iter().map(|g| ns(g.prefill)).collect(),
            decode_step_ns: m
                .runs
                .iter()
                .map(|g| g.steps.iter().map(|&d| ns(d)).collect())
                .collect(),
            warmup_prefill_ns: m.warmup.iter().map(|g| ns(g.prefill)).collect(),
            warmup_decode_step_ns: m
                .warmup
                .iter()
                .map(|g| g.steps.iter().map(|&d| ns(d)).collect())
                .collect(),
            read_gb_per_s_before_run: m.read_gb_per_s.clone(),
            peak_gflops_before_run: m.peak_gflops.clone(),
        },
    }
}

/// The figures that need every row, in one pass once all have run: the speed against the
/// slowest row of the same prompt length, and the rates divided by the machine's speed (the
/// medians of every backend's read and FMA passes; see `record::Normalized`).
fn cross_row(results: &mut [BackendResult], measured: &[Measured]) {
    for i in 0..results.len() {
        let len = results[i].prompt_tokens;
        let slowest = results
            .iter()
            .filter(|r| r.prompt_tokens == len)
            .map(|r| r.total_ms)
            .fold(0.0, f64::max);
        results[i].speedup_vs_slowest = slowest / results[i].total_ms;
    }
    let all = |f: fn(&Measured) -> &Vec<f64>| -> Vec<f64> {
        measured.iter().flat_map(|m| f(m).iter().copied()).collect()
    };
    let (reads, peaks) = (all(|m| &m.read_gb_per_s), all(|m| &m.peak_gflops));
    if reads.is_empty() || peaks.is_empty() {
        return;
    }
    let (read, peak) = (percentile(&reads, 50.0), percentile(&peaks, 50.0));
    if !(read > 0.0 && peak > 0.0) {
        return;
    }
    let scale = |s: &Summary, by: f64| Summary {
        mean: s.mean / by,
        stddev: s.stddev / by,
        median: s.median / by,
        min: s.min / by,
        max: s.max / by,
        n: s.n,
    };
    for r in results {
        r.machine_normalized = Some(Normalized {
            machine_read_gb_per_s: read,
            machine_peak_gflops: peak,
            prefill_tok_per_peak_gflop: scale(&r.prefill_tok_per_s, peak),
            decode_tok_per_read_gb: r.decode_tok_per_s.as_ref().map(|d| scale(d, read)),
            decode_tok_per_peak_gflop: r.decode_tok_per_s.as_ref().map(|d| scale(d, peak)),
        });
    }
}

/// Median over runs of `decode weight bytes/s / read bandwidth of the pass just before the
/// run`: how much of what memory delivered at that moment the decode used. `None` without read
/// passes or decode steps.
fn decode_read_fraction(
    runs: &[Generation],
    read_gb_per_s: &[f64],
    weight_bytes_per_token: u64,
) -> Option<f64> {
    let fractions: Vec<f64> = runs
        .iter()
        .zip(read_gb_per_s)
        .filter(|(g, read)| !g.steps.is_empty() && **read > 0.0)
        .map(|(g, read)| {
            let tok_per_s = g.steps.len() as f64 / g.decode_total().as_secs_f64();
            tok_per_s * weight_bytes_per_token as f64 / (read * 1e9)
        })
        .collect();
    (!fractions.is_empty()).then(|| percentile(&fractions, 50.0))
}

/// The 1-minute load average above which the machine counts as busy: half its cores.
pub fn busy_threshold(cores: usize) -> f64 {
    0.5 * cores as f64
}

/// Whether a load average means other programs compete with the run.
pub fn is_busy(load: f64, cores: usize) -> bool {
    load > busy_threshold(cores)
}

/// Warnings about the whole run: build profile and other load on the machine.
pub fn machine_warnings(load_before: Option<f64>, cores: usize, threads: usize) -> Vec<Warning> {
    let mut w = Vec::new();
    if threads > cores {
        w.push(Warning::Oversubscribed { threads, cores });
    }
    if cfg!(debug_assertions) {
        w.push(Warning::DebugBuild);
    }
    if let Some(load) = load_before
        && is_busy(load, cores)
    {
        w.push(Warning::Busy { load, cores });
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with_steps(ms: &[u64]) -> Generation {
        Generation {
            token_ids: vec![0; ms.len() + 1],
            top2_gaps: vec![1.0; ms.len() + 1],
            logit_magnitudes: vec![10.0; ms.len() + 1],
            prefill: Duration::from_millis(5),
            steps: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            prefill_choice: Duration::ZERO,
            decode_choice: Duration::ZERO,
            prefill_ops: None,
            decode_ops: None,
        }
    }

    #[test]
    fn read_fraction_is_the_median_of_each_run_against_its_own_pass() {
        // 1 GB per token. Run 1: 10 tok/s = 10 GB/s against a 20 GB/s pass (0.5); run 2:
        // 20 GB/s against 25 (0.8); run 3: 20 GB/s against 40 (0.5 again).
        let runs = [
            run_with_steps(&[100, 100]),
            run_with_steps(&[50, 50]),
            run_with_steps(&[50]),
        ];
        let f = decode_read_fraction(&runs, &[20.0, 25.0, 40.0], 1_000_000_000).unwrap();
        assert!((f - 0.5).abs() < 1e-9, "{f}");
        // Pairing matters: the same passes in another order give another median.
        let f = decode_read_fraction(&runs, &[40.0, 25.0, 20.0], 1_000_000_000).unwrap();
        assert!((f - 0.8).abs() < 1e-9, "{f}");
    }

    #[test]
    fn no_read_fraction_without_passes_or_decode_steps() {
        let runs = [run_with_steps(&[10])];
        assert_eq!(decode_read_fraction(&runs, &[], 1000), None);
        assert_eq!(
            decode_read_fraction(&[run_with_steps(&[])], &[20.0], 1000),
            None
        );
    }
}
