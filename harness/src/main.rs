//! `gpt2-bench`: runs GPT-2 through interchangeable backends on identical greedy decoding,
//! checks that they produce the same tokens, and tabulates their speed.
//!
//! Two modes: `--compare` (every selected backend, one table, exit status 1 if any backend's
//! tokens differ from the reference's) and `--backend NAME` (one backend, streaming its text:
//! the teaching mode). `inspect FILE` describes a weight file.

// Output goes through gpt2_export::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod check;
mod compare;
/// The fuzz tests' generator and mutators (shared with the other crates' fuzz tests).
#[cfg(test)]
#[path = "../../weights/tests/fuzz_support/mod.rs"]
mod fuzz_support;
mod gate;
mod generate;
mod machine;
mod model;
mod plot;
mod report;
mod roofline;
mod sampling;
mod save;
mod stats;
mod teach;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gpt2_backends::{DeviceChoice, EngineOptions, backend_names};
use gpt2_export::cli::{self, EXIT_INPUT, EXIT_MISMATCH, EXIT_OK, EXIT_REGRESSION};
use gpt2_weights::{Gpt2Tokenizer, StreamDecoder, WeightFile};

use crate::generate::{generate, max_new_tokens};
use crate::report::{Format, ModelInfo, Report};

/// The text behind `--prompt-tokens N`: its GPT-2 tokens, repeated and cut to N.
const SYNTHETIC_PROMPT_TEXT: &str = "The history of computing is a story of machines that \
    learned to do arithmetic faster than the people who built them. Early calculators used gears \
    and levers; later ones used relays, vacuum tubes and finally transistors, each generation \
    smaller, cheaper and more reliable than the last. ";

const AFTER_HELP: &str = "\
Examples:
  gpt2-bench --compare --prompt \"The meaning of life is\"
  gpt2-bench --compare --prompt \"Hello\" --backends naive,ndarray --max-tokens 16 --format json
  gpt2-bench --compare --prompt-tokens 16,128,512 --backends simd,simd-kv --runs 5 --plot out.svg
  gpt2-bench --compare --prompt-tokens 128 --save --baseline bench-results/base.json --max-slowdown 10%
  gpt2-bench --backend naive --prompt \"Once upon a time\"
  gpt2-bench check --golden backends/tests/fixtures/golden.json
  gpt2-bench inspect weights/gpt2.bin

Model: --model FILE, else weights/gpt2.bin, else GPT-2 small exported from the Hugging Face hub,
else (offline) a synthetic GPT-2 small with random weights (said on stderr).
";

#[derive(Parser)]
#[command(
    name = "gpt2-bench",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("GPT2_BENCH_GIT_COMMIT"),
        ")"
    ),
    about = "Run GPT-2 on several backends, check they agree token for token, and time them.",
    after_help = format!("{AFTER_HELP}\n{}", cli::EXIT_STATUS_HELP),
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print a weight file's config, parameter count, size and source; verify its checksum.
    Inspect {
        file: PathBuf,
        /// Also list every tensor.
        #[arg(long)]
        tensors: bool,
    },
    /// List the backends.
    Backends,
    /// Check every backend against a golden file from Hugging Face transformers: exact greedy
    /// ids and logits within tolerance (exit status 1 on any difference).
    Check {
        /// The golden JSON file (written by backends/tests/fixtures/make_golden.py).
        #[arg(long, value_name = "FILE")]
        golden: PathBuf,
        /// Weight file to check [default: the golden file's own checkpoint, exported on the fly].
        #[arg(long, value_name = "FILE")]
        model: Option<PathBuf>,
        /// Backends to check, comma-separated [default: all].
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        backends: Option<Vec<String>>,
        /// Threads for multi-threaded backends [default: all logical cores].
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Where the candle backend computes: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: DeviceChoice,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Run every selected backend on the same greedy decoding and compare them.
    #[arg(long, conflicts_with = "backend")]
    compare: bool,
    /// Run one backend, streaming its text as it is generated (the teaching mode).
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// Backends for --compare, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "LIST", requires = "compare")]
    backends: Option<Vec<String>>,
    /// The backend the others must match [default: the first one].
    #[arg(long, value_name = "NAME", requires = "compare")]
    reference: Option<String>,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// The prompt as token ids, e.g. "15496 995" (spaces or commas).
    #[arg(long, value_name = "IDS", conflicts_with = "prompt_tokens")]
    prompt_ids: Option<String>,
    /// A synthetic prompt of exactly N tokens (a fixed English text, repeated as needed), for
    /// measuring prefill and decode at a chosen context length. With --compare, a list
    /// (16,128,512) runs every backend at each length.
    #[arg(
        long,
        value_name = "N[,N...]",
        value_delimiter = ',',
        conflicts_with = "prompt"
    )]
    prompt_tokens: Option<Vec<usize>>,
    /// Weight file [default: weights/gpt2.bin, see below].
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Tokens to generate; generation also stops at the model's context length.
    #[arg(long, default_value_t = 32, value_name = "N")]
    max_tokens: usize,
    /// Output format of --compare.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Threads for multi-threaded backends [default: all logical cores].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Where the candle backend computes: cpu, cuda or cuda:N (needs a build with
    /// `--features cuda`). The other backends always run on the CPU.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceChoice,
    /// No progress output on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Measure this machine's read bandwidth and peak FMA rate, and print the decode roofline
    /// of the model. With --compare, skip that measurement with --no-roofline.
    #[arg(long, conflicts_with_all = ["compare", "backend"])]
    roofline: bool,
    /// With --compare: do not measure the roofline (saves about a second).
    #[arg(long, requires = "compare")]
    no_roofline: bool,
    /// Measured runs per backend and prompt length (--compare).
    #[arg(long, default_value_t = 3, value_name = "N")]
    runs: usize,
    /// Warm-up runs before the measured ones, not in the statistics (--compare).
    #[arg(long, default_value_t = 1, value_name = "N")]
    warmup: usize,
    /// Save the JSON report to DIR/<date>-<commit>-<model>.json and append a row to
    /// DIR/history.md [DIR: bench-results].
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "bench-results", requires = "compare")]
    save: Option<PathBuf>,
    /// Write an SVG chart of decode tok/s per backend (and of latency against context length
    /// when several --prompt-tokens lengths ran).
    #[arg(long, value_name = "FILE.svg", requires = "compare")]
    plot: Option<PathBuf>,
    /// Compare tok/s with a saved JSON report; exit status 2 on a slowdown beyond
    /// --max-slowdown.
    #[arg(long, value_name = "FILE.json", requires = "compare")]
    baseline: Option<PathBuf>,
    /// Sample with this temperature instead of greedy decoding (0 = greedy). The harness
    /// samples from the logits, the same way for every backend.
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    temperature: f32,
    /// With --temperature: keep only the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    top_k: usize,
    /// With --temperature: keep the most likely tokens up to total probability P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    top_p: f32,
    /// Seed of the sampler; the same seed gives the same tokens on every backend.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,
    /// With --backend: keep generating after the end-of-text token (--compare always does).
    #[arg(long)]
    ignore_eos: bool,
    /// With --backend: after the run, print where the time went, per GPT-2 operation, for
    /// prefill and decode.
    #[arg(long, requires = "backend")]
    profile: bool,
    /// With --backend: first explain what this backend does differently from the previous one
    /// (naive -> ndarray -> simd -> simd-kv -> candle) and what one decode step costs.
    #[arg(long, requires = "backend")]
    explain: bool,
    /// Largest tolerated slowdown against --baseline, after subtracting both runs' spread.
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = gate::parse_slowdown)]
    max_slowdown: f64,
}

fn main() -> ExitCode {
    // Temporary files and directories are removed on Ctrl-C and every other terminating signal.
    cli::install_signal_cleanup();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (parsed, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return ExitCode::from(cli::clap_exit(&e)),
    };
    ExitCode::from(run(parsed, &matches).unwrap_or_else(|e| cli::report_error(&e)))
}

/// Flags that only one mode reads. A flag given on the command line for a mode that would
/// ignore it is an error, never silently dropped (`--backend x --save DIR` would save nothing).
const COMPARE_ONLY: &[&str] = &[
    "backends",
    "reference",
    "no_roofline",
    "runs",
    "warmup",
    "save",
    "plot",
    "baseline",
    "max_slowdown",
    "format",
];
const SINGLE_ONLY: &[&str] = &["ignore_eos", "profile", "explain"];

fn check_mode_flags(matches: &ArgMatches, args: &RunArgs) -> anyhow::Result<()> {
    let given = |id: &&&str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let flag = |id: &str| format!("--{}", id.replace('_', "-"));
    let (mode, not_here): (&str, Vec<&str>) = if args.roofline {
        let mut ids = COMPARE_ONLY.to_vec();
        ids.extend(SINGLE_ONLY);
        ids.extend(["prompt", "prompt_ids", "prompt_tokens", "max_tokens"]);
        ("--roofline", ids)
    } else if args.compare {
        ("--compare", SINGLE_ONLY.to_vec())
    } else if args.backend.is_some() {
        ("--backend", COMPARE_ONLY.to_vec())
    } else {
        return Ok(());
    };
    if let Some(id) = not_here.iter().find(given) {
        bail!(
            "{} does not apply to {mode}, which would ignore it; remove it (see --help for \
             which flags each mode takes)",
            flag(id)
        );
    }
    Ok(())
}

fn run(parsed: Cli, matches: &ArgMatches) -> anyhow::Result<u8> {
    match parsed.command {
        Some(Command::Inspect { file, tensors }) => {
            let f = WeightFile::open(&file)?;
            let (text, ok) = gpt2_export::inspect::report(&f, tensors);
            print_stdout(&text)?;
            return Ok(if ok { EXIT_OK } else { EXIT_INPUT });
        }
        Some(Command::Backends) => {
            print_stdout(&(backend_names().join("\n") + "\n"))?;
            return Ok(EXIT_OK);
        }
        Some(Command::Check {
            golden,
            model,
            backends,
            threads,
            device,
        }) => {
            let options = engine_options(threads, device)?;
            let names = match backends {
                Some(list) => {
                    for name in &list {
                        if !backend_names().contains(&name.as_str()) {
                            bail!(
                                "--backends: unknown backend {name:?}; valid backends: {}",
                                backend_names().join(", ")
                            );
                        }
                    }
                    list
                }
                None => backend_names().iter().map(|s| s.to_string()).collect(),
            };
            let (golden, outcomes) = check::run(&golden, model.as_deref(), &names, &options)?;
            print_stdout(&check::render(&golden, &outcomes))?;
            return Ok(if outcomes.iter().all(check::Outcome::passed) {
                EXIT_OK
            } else {
                EXIT_MISMATCH
            });
        }
        None => {}
    }
    let args = parsed.run;
    check_mode_flags(matches, &args)?;
    if args.roofline {
        let options = engine_options(args.threads, args.device)?;
        let path = model::resolve(args.model.as_deref(), args.quiet)?;
        let file = WeightFile::open(&path)?;
        let r = roofline::measure(&file, options.threads)?;
        print_stdout(&report::render_roofline(
            &r,
            &gpt2_weights::input::printable(&file.header().provenance.model_name),
        ))?;
        return Ok(EXIT_OK);
    }
    if !args.compare && args.backend.is_none() {
        bail!("give --compare (all backends) or --backend NAME (one backend); see --help");
    }
    if args.prompt.is_none() && args.prompt_ids.is_none() && args.prompt_tokens.is_none() {
        bail!("give a prompt: --prompt TEXT, --prompt-ids \"15496 995\" or --prompt-tokens N");
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    for (flag, n) in [("--runs", args.runs), ("--warmup", args.warmup)] {
        if n > MAX_RUNS {
            bail!("{flag} {n} is more than the {MAX_RUNS} runs a comparison may have");
        }
    }
    let sampling = sampling::SamplingOptions {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling.validate().map_err(anyhow::Error::msg)?;
    let options = engine_options(args.threads, args.device)?;
    let selected = select_backends(&args, &options)?;

    let path = model::resolve(args.model.as_deref(), args.quiet)?;
    let file = WeightFile::open_verified(&path)?;
    let tokenizer = file.tokenizer()?;
    let prompt_ids = prompt_ids(&args, &tokenizer, &file)?;
    let lengths = prompt_lengths(&args, prompt_ids.len())?;
    let n_ctx = file.config().n_ctx as usize;
    let mut notes = vec!["tokenization is not timed".to_string()];
    let mut new_tokens = Vec::new();
    for &len in &lengths {
        let n_new = args.max_tokens.min(max_new_tokens(len, n_ctx));
        if n_new < args.max_tokens {
            let note = format!(
                "the context holds {n_ctx} positions: with a {len}-token prompt, generation \
                 stops after {n_new} of the {} requested tokens",
                args.max_tokens
            );
            cli::stderr(&format!("note: {note}\n"));
            notes.push(note);
        }
        new_tokens.push(n_new);
    }

    if args.compare {
        if args.runs == 0 {
            bail!("--runs must be at least 1");
        }

        let plan = compare::Plan {
            backends: &selected,
            prompt: &prompt_ids,
            lengths,
            new_tokens,
            runs: args.runs,
            warmup: args.warmup,
            options: &options,
            sampling,
            quiet: args.quiet,
        };
        run_compare(&args, &file, &tokenizer, &plan, notes)
    } else {
        single(
            &args,
            &file,
            &tokenizer,
            &prompt_ids,
            new_tokens[0],
            &selected[0],
            &options,
            sampling,
        )
    }
}

/// The prompt lengths to run: every `--prompt-tokens` value (--compare only), else the prompt's.
fn prompt_lengths(args: &RunArgs, prompt_len: usize) -> anyhow::Result<Vec<usize>> {
    let Some(list) = &args.prompt_tokens else {
        return Ok(vec![prompt_len]);
    };
    if list.len() > 1 && !args.compare {
        bail!("--prompt-tokens takes one length with --backend; give a list only with --compare");
    }
    let mut seen = HashSet::new();
    for &n in list {
        if !seen.insert(n) {
            bail!("--prompt-tokens lists {n} twice");
        }
    }
    Ok(list.clone())
}

/// The most `--runs` (and `--warmup` runs) per backend and length: every run's samples are kept.
const MAX_RUNS: usize = 10_000;

/// The most threads `--threads` accepts, per logical core. Beyond the cores, threads only take
/// turns; a limit keeps `--threads 10000` from starting ten thousand spinning threads.
const MAX_THREADS_PER_CORE: usize = 4;

/// Threads: `--threads`, else all logical cores; then the process settings the backends' libraries
/// read once (`EngineOptions::apply_process_settings`), before any thread exists.
fn engine_options(threads: Option<usize>, device: DeviceChoice) -> anyhow::Result<EngineOptions> {
    let mut options = EngineOptions {
        device,
        allow_test_engines: std::env::var_os("GPT2_BENCH_TEST_ENGINES").is_some_and(|v| v == "1"),
        ..EngineOptions::default()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = MAX_THREADS_PER_CORE * cores;
    let (n, flag) = match threads {
        Some(n) => (n, "--threads"),
        None => match std::env::var("MATMUL_NUM_THREADS") {
            Ok(v) => (
                v.trim().parse::<usize>().map_err(|_| {
                    anyhow::anyhow!(
                        "MATMUL_NUM_THREADS={}: not a thread count; unset it or give a whole number",
                        gpt2_weights::input::printable(&v)
                    )
                })?,
                "MATMUL_NUM_THREADS",
            ),
            Err(_) => (cores, "--threads"),
        },
    };
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    if n > max {
        bail!(
            "{flag} {n} is more than {MAX_THREADS_PER_CORE} threads per logical core ({max} on \
             this machine's {cores}); threads beyond the cores only wait for each other. Give at \
             most {max}, or {cores} for the fastest run"
        );
    }
    if n > cores {
        cli::stderr(&format!(
            "warning: {}\n",
            compare::oversubscribed_warning(n, cores)
        ));
    }
    options.threads = n;
    // SAFETY: called from `main`'s thread before any thread that could read the environment is
    // started (no backend, pool or progress bar exists yet; the one other thread, the signal
    // cleanup of `cli::install_signal_cleanup`, only waits for a signal, removes files and
    // exits), so nothing can read the environment concurrently.
    unsafe { options.apply_process_settings() };
    Ok(options)
}

fn select_backends(args: &RunArgs, options: &EngineOptions) -> anyhow::Result<Vec<String>> {
    let valid = |name: &str| {
        backend_names().contains(&name)
            || (options.allow_test_engines && name == gpt2_backends::testing::DIVERGENT)
    };
    let unknown = |flag: &str, name: &str| {
        anyhow::anyhow!(
            "{flag}: unknown backend {name:?}; valid backends: {}",
            backend_names().join(", ")
        )
    };
    if let Some(name) = &args.backend {
        if !valid(name) {
            return Err(unknown("--backend", name));
        }
        return Ok(vec![name.clone()]);
    }
    let mut selected: Vec<String> = match &args.backends {
        Some(list) => list.iter().map(|s| s.trim().to_string()).collect(),
        None => backend_names().iter().map(|s| s.to_string()).collect(),
    };
    let mut seen = HashSet::new();
    for name in &selected {
        if !valid(name) {
            return Err(unknown("--backends", name));
        }
        if !seen.insert(name.clone()) {
            bail!("--backends lists {name} twice");
        }
    }
    if let Some(reference) = &args.reference {
        let pos = selected
            .iter()
            .position(|n| n == reference)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--reference {reference} is not among the selected backends ({})",
                    selected.join(", ")
                )
            })?;
        let r = selected.remove(pos);
        selected.insert(0, r);
    }
    Ok(selected)
}

fn prompt_ids(
    args: &RunArgs,
    tokenizer: &Gpt2Tokenizer,
    file: &WeightFile,
) -> anyhow::Result<Vec<u32>> {
    let config = file.config();
    let ids = match (&args.prompt, &args.prompt_ids) {
        _ if args.prompt_tokens.is_some() => {
            let lengths = args.prompt_tokens.as_deref().unwrap_or_default();
            if lengths.contains(&0) {
                bail!("--prompt-tokens must be at least 1");
            }
            // The longest prompt; shorter lengths run its first N tokens. Checked against the
            // context before a single token is allocated.
            let n = lengths.iter().copied().max().unwrap_or(1);
            if n > config.n_ctx as usize {
                bail!(
                    "--prompt-tokens {n} is longer than the model's context of {} positions; \
                     give at most {}",
                    config.n_ctx,
                    config.n_ctx
                );
            }
            let base = tokenizer.encode(SYNTHETIC_PROMPT_TEXT)?;
            base.iter().copied().cycle().take(n).collect()
        }
        (Some(text), _) => {
            if text.is_empty() {
                bail!("--prompt is empty; give some text");
            }
            tokenizer.encode(text)?
        }
        (None, Some(list)) => {
            let ids: Result<Vec<u32>, _> = list
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<u32>().map_err(|_| {
                        anyhow::anyhow!("--prompt-ids: {s:?} is not a token id (a whole number)")
                    })
                })
                .collect();
            let ids = ids?;
            if ids.is_empty() {
                bail!("--prompt-ids is empty; give ids such as \"15496 995\"");
            }
            if let Some(bad) = ids.iter().find(|&&id| id >= config.vocab_size) {
                bail!(
                    "--prompt-ids: {bad} is outside the vocabulary of {} (ids 0..{})",
                    file.path().display(),
                    config.vocab_size - 1
                );
            }
            ids
        }
        (None, None) => bail!("give a prompt"),
    };
    if ids.len() > config.n_ctx as usize {
        bail!(
            "the prompt is {} tokens but the model's context holds {}; shorten it",
            ids.len(),
            config.n_ctx
        );
    }
    Ok(ids)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn model_info(file: &WeightFile) -> ModelInfo {
    let h = file.header();
    let c = &h.config;
    // Strings from the file reach tables and terminals: escaped and shortened.
    let shown = gpt2_weights::input::printable;
    ModelInfo {
        name: shown(&h.provenance.model_name),
        path: file.path().display().to_string(),
        source: shown(&h.provenance.source),
        n_layer: c.n_layer,
        n_head: c.n_head,
        n_embd: c.n_embd,
        vocab_size: c.vocab_size,
        n_ctx: c.n_ctx,
        parameters: c.parameter_count(),
        file_bytes: file.file_len(),
        checksum: format!("xxh3:{:016x}", file.data_checksum()),
    }
}

fn run_compare(
    args: &RunArgs,
    file: &WeightFile,
    tokenizer: &Gpt2Tokenizer,
    plan: &compare::Plan,
    notes: Vec<String>,
) -> anyhow::Result<u8> {
    // Check the inputs and outputs before spending minutes on the run: no output may replace a
    // special file, a symbolic link, or a file this run reads.
    let baseline = args
        .baseline
        .as_deref()
        .map(gate::Baseline::load)
        .transpose()?;
    let mut inputs: Vec<&Path> = vec![file.path()];
    inputs.extend(args.baseline.as_deref());
    if let Some(path) = &args.plot {
        gpt2_weights::write::check_output(path, &inputs)
            .map_err(|m| anyhow::anyhow!("--plot {}: {m}", path.display()))?;
    }
    if let Some(dir) = &args.save {
        let history = dir.join("history.md");
        gpt2_weights::write::check_output(&history, &inputs)
            .map_err(|m| anyhow::anyhow!("--save: {}: {m}", history.display()))?;
    }
    let date_utc = machine::now_utc();
    let load_before = machine::load_average_1min();
    let roofline = if args.no_roofline {
        None
    } else {
        Some(roofline::measure(file, plan.options.threads)?)
    };
    let progress = |name: &str, total: u64| {
        let template = "{prefix:>10} [{bar:30}] {pos}/{len} tokens ({elapsed})";
        let bar = gpt2_export::progress_bar(args.quiet, template, total);
        bar.set_prefix(name.to_string());
        bar
    };
    let (results, backend_warnings) =
        compare::run(plan, file, tokenizer, roofline.as_ref(), &progress)?;
    let machine = machine::Machine::detect();
    let mut warnings =
        compare::machine_warnings(load_before, machine.logical_cores, plan.options.threads);
    warnings.extend(backend_warnings);
    let model = model_info(file);
    let gate = baseline.as_ref().map(|b| {
        gate::compare(
            b,
            &results,
            &model.checksum,
            &machine.cpu,
            args.max_slowdown,
        )
    });
    let all_match = results.iter().all(|r| r.tokens_match);
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        command_line: std::env::args().collect(),
        date_utc,
        model,
        prompt: match &args.prompt {
            Some(text) => text.clone(),
            None => tokenizer.decode(plan.prompt),
        },
        prompt_token_ids: plan.prompt.to_vec(),
        max_tokens: args.max_tokens,
        sampling: plan.sampling.describe(),
        runs: plan.runs,
        warmup: plan.warmup,
        reference: plan.backends[0].clone(),
        results,
        all_match,
        roofline,
        notes,
        warnings,
        gate,
        machine,
    };
    print_stdout(&report::render(&report, args.format))?;
    if args.format != Format::Md {
        for w in &report.warnings {
            cli::stderr(&format!("warning: {w}\n"));
        }
    }
    if let Some(dir) = &args.save {
        let (json, history) = save::save(&report, dir, &inputs)?;
        if !args.quiet {
            cli::stderr(&format!(
                "saved {} and a row in {}\n",
                json.display(),
                history.display()
            ));
        }
    }
    if let Some(path) = &args.plot {
        save::write_atomically(path, plot::svg(&report).as_bytes(), &inputs)
            .with_context(|| format!("--plot {}", path.display()))?;
    }
    if !all_match {
        cli::stderr(&report::divergence_report(&report));
        return Ok(EXIT_MISMATCH);
    }
    if let Some(g) = &report.gate {
        if g.comparisons.is_empty() {
            bail!(
                "--baseline {}: no backend and prompt length of this run is in the baseline, so \
                 nothing was gated; run the backends and --prompt-tokens the baseline has",
                g.baseline_file
            );
        }
        if args.format != Format::Table && args.format != Format::Md {
            cli::stderr(&gate::render(g));
        }
        if g.regressed {
            cli::stderr(&format!(
                "REGRESSION: a backend is slower than the baseline beyond {:.0}%\n",
                args.max_slowdown * 100.0
            ));
            return Ok(EXIT_REGRESSION);
        }
    }
    Ok(EXIT_OK)
}

#[allow(clippy::too_many_arguments)]
fn single(
    args: &RunArgs,
    file: &WeightFile,
    tokenizer: &Gpt2Tokenizer,
    prompt: &[u32],
    n_new: usize,
    name: &str,
    options: &EngineOptions,
    sampling: sampling::SamplingOptions,
) -> anyhow::Result<u8> {
    let weights = file.gpt2()?;
    let mut engine = gpt2_backends::create(name, &weights, options)?;
    let info = engine.info();
    if args.explain {
        cli::stderr(&teach::explain(
            name,
            file.config(),
            info.kv_cache,
            prompt.len(),
        ));
    }
    engine.set_profiling(args.profile);
    if !args.quiet {
        cli::stderr(&format!(
            "{name}: {} | model {} ({:.1}M parameters) | {} | {} threads\n",
            info.summary,
            gpt2_weights::input::printable(&file.header().provenance.model_name),
            file.config().parameter_count() as f64 / 1e6,
            info.device,
            info.threads
        ));
    }
    // Streamed a token at a time; a closed stdout drops the text (cli::stdout), the run and its
    // summary go on.
    let mut decoder = StreamDecoder::new();
    let mut write_err = None;
    let mut emit = |text: &str| {
        if write_err.is_none()
            && let Err(e) = cli::stdout(text)
        {
            write_err = Some(e);
        }
    };
    emit(&tokenizer.decode(prompt));
    let stop_at = (!args.ignore_eos).then(|| tokenizer.eot_id());
    let g = generate(engine.as_mut(), prompt, n_new, sampling, stop_at, |id| {
        let text = decoder.push(tokenizer.token_bytes(id).unwrap_or_default());
        emit(&text);
    })
    .with_context(|| format!("backend {name}"))?;
    let tail = decoder.finish();
    emit(&tail);
    emit("\n");
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    let decode_tokens = g.steps.len();
    let stopped_at_eos = g.token_ids.len() < n_new && g.token_ids.last() == stop_at.as_ref();
    let mut summary = format!(
        "{name}: {} prompt tokens, {} new tokens{} ({}); time to first token {:.1} ms ({:.1} \
         prompt tok/s)",
        prompt.len(),
        g.token_ids.len(),
        if stopped_at_eos {
            ", stopped at end-of-text (--ignore-eos to go on)"
        } else {
            ""
        },
        sampling.describe(),
        ms(g.prefill),
        prompt.len() as f64 / g.prefill.as_secs_f64()
    );
    if decode_tokens > 0 {
        let _ = std::fmt::Write::write_fmt(
            &mut summary,
            format_args!(
                "; decode {:.2} tok/s ({:.1} ms per token)",
                decode_tokens as f64 / g.decode_total().as_secs_f64(),
                ms(g.decode_total()) / decode_tokens as f64
            ),
        );
    }
    cli::stderr(&format!("{summary}\n"));
    if args.profile {
        cli::stderr(&teach::profile_table(&g));
    }
    Ok(EXIT_OK)
}

/// Writes to stdout; a closed pipe (`gpt2-bench ... | head`) drops the output quietly.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    cli::stdout(text).context("writing to stdout")
}
