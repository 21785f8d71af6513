//! The command line of `gpt2-bench`, typed once: one subcommand per mode, each with only its
//! own flags, so a flag that does not apply to a mode is an error from the parser, never
//! silently ignored. Groups of flags that several modes share (the model, the prompt, threads
//! and device, sampling) are one `Args` struct each, flattened where they apply.
//!
//! The published command lines (`gpt2-bench --compare ...`, `--backend NAME ...`,
//! `--roofline`) keep working: [`normalize_args`] turns them into the subcommand spelling
//! before parsing.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use gpt2_backends::{DeviceChoice, KvCache};

use crate::render::Format;

const AFTER_HELP: &str = "\
Examples:
  gpt2-bench compare --prompt \"The meaning of life is\"
  gpt2-bench compare --prompt \"Hello\" --backends naive,ndarray --max-tokens 16 --format json
  gpt2-bench compare --prompt-tokens 16,128,512 --backends simd,simd-kv --runs 5 --plot out.svg
  gpt2-bench compare --prompt-tokens 128 --save --baseline bench-results/base.json
  gpt2-bench ab --baseline-bin main/gpt2-bench -- --backends simd-kv --prompt-tokens 128
  gpt2-bench run --backend naive --prompt \"Once upon a time\" --explain --profile
  gpt2-bench check --golden backends/tests/fixtures/golden.json
  gpt2-bench roofline
  gpt2-bench inspect weights/gpt2.bin
  gpt2-bench history --import bench-results --machine all
  gpt2-bench report --html report.html --history

`gpt2-bench --compare ...` and `gpt2-bench --backend NAME ...` are the same as `compare ...` and
`run --backend NAME ...`.

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
    after_help = format!("{AFTER_HELP}\n{}", gpt2_process::cli::EXIT_STATUS_HELP),
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run every selected backend on the same decoding, check that their tokens match, and
    /// tabulate their speed (exit status 1 if any backend's tokens differ).
    Compare(CompareArgs),
    /// Run one backend, streaming its text as it is generated (the teaching mode).
    Run(RunArgs),
    /// Check every backend against a golden file from Hugging Face transformers: exact greedy
    /// ids and logits within tolerance (exit status 1 on any difference).
    Check(CheckArgs),
    /// Measure this machine's read bandwidth and peak FMA rate, and print the model's decode
    /// roofline.
    Roofline(RooflineArgs),
    /// Print a weight file's config, parameter count, size and source; verify its checksum.
    Inspect {
        file: PathBuf,
        /// Also list every tensor.
        #[arg(long)]
        tensors: bool,
    },
    /// The regression gate for a shared machine: run a baseline gpt2-bench and this one
    /// alternately, --rounds times, on the same `compare` arguments (after `--`), and judge
    /// each round's speed ratio (exit status 2 on a regression).
    Ab(AbArgs),
    /// List this build's backends (stdout), and how to build the others (stderr).
    Backends,
    /// The stored results over commits (`compare --save` stores them): per backend, dtype,
    /// threads and prompt length on this machine, each commit's tok/s with its spread, and a
    /// mark where a change from the commit before is beyond the noise.
    History(HistoryArgs),
    /// Write a self-contained HTML report with plots: of the latest stored run, of a saved JSON
    /// report (--from), or of the stored history (--history).
    Report(ReportArgs),
}

/// Which stored results to read.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The results directory whose results.sqlite to read [default: $GPT2_BENCH_RESULTS_DIR,
    /// else bench-runs/, as `compare --save`].
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// The machine whose runs to read: its CPU as recorded (or a part that names one), or `all`
    /// [default: this machine for `history` and `report --history`; any machine for the
    /// latest run of `report`].
    #[arg(long, value_name = "CPU|all")]
    pub machine: Option<String>,
    /// Only this model (its name, as `inspect` prints it).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Only these backends, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub backends: Option<Vec<String>>,
    /// A change from one commit to the next is marked when both the fastest run and the median
    /// moved by more than this (the tests of `ab`) [default: 10%].
    #[arg(long, value_name = "PERCENT", value_parser = crate::gate::parse_slowdown)]
    pub threshold: Option<f64>,
}

#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// First add every saved JSON report in DIR (e.g. bench-results/) to the store; runs it
    /// already has are skipped.
    #[arg(long, value_name = "DIR")]
    pub import: Option<PathBuf>,
    /// Output format (`sql`: the stored rows themselves, as SQL).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args)]
pub struct ReportArgs {
    /// The HTML file to write (one self-contained file: inline SVG, no JavaScript).
    #[arg(long, value_name = "FILE.html")]
    pub html: PathBuf,
    /// Report this saved JSON report (`compare --save`'s or `--format json`'s) instead of the
    /// latest stored run.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["history", "results", "machine", "model", "backends", "threshold"])]
    pub from: Option<PathBuf>,
    /// Report the stored history (every series over commits) instead of one run.
    #[arg(long)]
    pub history: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `ab`: see [`crate::ab`].
#[derive(Args, Clone)]
pub struct AbArgs {
    /// The baseline gpt2-bench binary, e.g. one built from main.
    #[arg(long, value_name = "FILE")]
    pub baseline_bin: PathBuf,
    /// The candidate binary [default: this gpt2-bench].
    #[arg(long, value_name = "FILE")]
    pub candidate_bin: Option<PathBuf>,
    /// Rounds; each runs both binaries once, the order alternating from round to round (12
    /// rounds of `--runs 1 --warmup 0` children: no false alarm in 20 on a shared 2-core machine,
    /// docs/ci.md).
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub rounds: usize,
    /// Largest tolerated slowdown: a regression is a median ratio below 1 - this, with the
    /// candidate slower at 95% confidence.
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = crate::gate::parse_slowdown)]
    pub max_slowdown: f64,
    /// Longest one child run may take, in seconds: a child still running then is stopped
    /// (SIGTERM, then SIGKILL 5 s later) and `ab` fails saying so, instead of waiting forever
    /// on a hung binary. The default is generous: a `--runs 1` comparison of GPT-2 small takes
    /// seconds, of XL with every backend a few minutes.
    #[arg(long, value_name = "SECONDS", default_value = "1800", value_parser = crate::ab::parse_timeout)]
    pub timeout: std::time::Duration,
    /// The `compare` arguments both binaries run (--model, --backends, --prompt...,
    /// --max-tokens, --runs, --threads), after `--`.
    #[arg(last = true, value_name = "COMPARE_ARGS")]
    pub compare_args: Vec<String>,
}

/// The weight file.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Weight file [default: weights/gpt2.bin, see `gpt2-bench --help`].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
}

/// Threads and device.
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// Threads for multi-threaded backends [default: all logical cores].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_thread_count)]
    pub threads: Option<usize>,
    /// Where the candle backend computes: cpu, cuda or cuda:N (needs a build with
    /// `--features cuda`). The other backends always run on the CPU.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceChoice,
}

/// Threads (a list: a sweep) and device, for `compare`.
#[derive(Args, Clone)]
pub struct SweepEngineArgs {
    /// Threads for multi-threaded backends [default: all logical cores]. A list (1,2) runs the
    /// comparison once per count, each in its own process (the libraries under ndarray and
    /// candle fix their thread count once per process), and reports every row together.
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', allow_negative_numbers = true, value_parser = parse_thread_count)]
    pub threads: Vec<usize>,
    /// Where the candle backend computes: cpu, cuda or cuda:N (needs a build with
    /// `--features cuda`). The other backends always run on the CPU.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceChoice,
}

/// The prompt and how much to generate.
#[derive(Args, Clone)]
pub struct PromptArgs {
    /// The prompt text.
    #[arg(long, conflicts_with_all = ["prompt_ids", "prompt_tokens"])]
    pub prompt: Option<String>,
    /// The prompt as token ids, e.g. "15496 995" (spaces or commas).
    #[arg(long, value_name = "IDS", conflicts_with = "prompt_tokens")]
    pub prompt_ids: Option<String>,
    /// A synthetic prompt of exactly N tokens (a fixed English text, repeated as needed), for
    /// measuring prefill and decode at a chosen context length. `compare` takes a list
    /// (16,128,512) and runs every backend at each length.
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',')]
    pub prompt_tokens: Option<Vec<usize>>,
    /// Tokens to generate; generation also stops at the model's context length.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_tokens: usize,
}

/// Greedy decoding, or sampling from the logits the same way for every backend.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Sample with this temperature instead of greedy decoding (0 = greedy).
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// With --temperature: keep only the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// With --temperature: keep the most likely tokens up to total probability P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Seed of the sampler; the same seed gives the same tokens on every backend.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Weight file [default: weights/gpt2.bin, see `gpt2-bench --help`]. Several files of one
    /// model, comma-separated (`gpt2.bin,gpt2-f16.bin,gpt2-q8_0.bin`), run every backend on
    /// each and add how far each file's outputs are from the first's (top-1 agreement, KL
    /// divergence, where greedy decoding first differs).
    #[arg(long = "model", value_delimiter = ',', value_name = "FILE[,FILE...]")]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Backends, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub backends: Option<Vec<String>>,
    /// The backend the others must match [default: the first one].
    #[arg(long, value_name = "NAME")]
    pub reference: Option<String>,
    #[command(flatten)]
    pub engine: SweepEngineArgs,
    /// What attention's keys and values are cached in: f32; f16, as llama.cpp does (half the
    /// bytes a decode step reads from the cache; the backends then agree to a few 1e-3 logits
    /// instead of ~1e-5, so a near-tie can go either way; docs/weights.md); or auto (f16 for
    /// f16, bf16 and q8_0 files, f32 for an f32 file).
    #[arg(long, default_value = "f32", value_name = "f32|f16|auto")]
    pub kv_cache: KvCache,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Measured runs per backend and prompt length.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub runs: usize,
    /// Warm-up runs before the measured ones, not in the statistics.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub warmup: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The table with every column (p99, roofline and bandwidth fractions, prefill's share of
    /// peak, memory); the default shows the columns that fit 80 characters.
    #[arg(long)]
    pub wide: bool,
    /// Do not measure the roofline (saves about a second).
    #[arg(long)]
    pub no_roofline: bool,
    /// Save the JSON report to DIR/<date>-<commit>-<model>.json, add its rows to the results
    /// store DIR/results.sqlite (what `history` and `report` read) and append them to
    /// DIR/history.md [DIR: $GPT2_BENCH_RESULTS_DIR, else bench-runs/, which git ignores].
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub save: Option<Option<PathBuf>>,
    /// Write an SVG chart of decode tok/s per backend (and of latency against context length
    /// when several --prompt-tokens lengths ran).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Compare tok/s with a saved JSON report; exit status 2 on a slowdown beyond
    /// --max-slowdown.
    #[arg(long, value_name = "FILE.json")]
    pub baseline: Option<PathBuf>,
    /// Largest tolerated slowdown against --baseline, after subtracting both runs' spread.
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = crate::gate::parse_slowdown)]
    pub max_slowdown: f64,
    /// No progress output on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// The backend to run (`gpt2-bench backends` lists them).
    #[arg(long, value_name = "NAME")]
    pub backend: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// What attention's keys and values are cached in: f32; f16, as llama.cpp does (half the
    /// bytes a decode step reads from the cache; the backends then agree to a few 1e-3 logits
    /// instead of ~1e-5, so a near-tie can go either way; docs/weights.md); or auto (f16 for
    /// f16, bf16 and q8_0 files, f32 for an f32 file).
    #[arg(long, default_value = "f32", value_name = "f32|f16|auto")]
    pub kv_cache: KvCache,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep generating after the end-of-text token (compare always does).
    #[arg(long)]
    pub ignore_eos: bool,
    /// After the run, print where the time went, per GPT-2 operation, for prefill and decode.
    #[arg(long)]
    pub profile: bool,
    /// First explain what this backend does differently from the previous one
    /// (naive -> ndarray -> simd -> simd-kv -> candle) and what one decode step costs.
    #[arg(long)]
    pub explain: bool,
    /// No progress output on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    /// The golden JSON file (written by backends/tests/fixtures/make_golden.py).
    #[arg(long, value_name = "FILE")]
    pub golden: PathBuf,
    /// Weight file to check [default: the golden file's own checkpoint, exported on the fly].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Backends to check, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub backends: Option<Vec<String>>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args)]
pub struct RooflineArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Threads for the measurement [default: all logical cores].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_thread_count)]
    pub threads: Option<usize>,
    /// No progress output on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One `--threads` value (one entry of a list): a whole number from 1, written in decimal.
/// Said plainly for what people type by mistake: an empty entry (`1,`, `,2`, `1, 2` with a
/// space), a list where one count is taken (`run --threads 1,2`), a sign, hex.
pub fn parse_thread_count(s: &str) -> Result<usize, String> {
    let shown = gpt2_weights::input::printable(s);
    if s.is_empty() {
        return Err(
            "an empty thread count (a list is written 1,2: no space, no comma at either \
                    end)"
                .into(),
        );
    }
    if s.contains(',') {
        return Err(format!(
            "{shown} is a list; this subcommand runs one thread count (a list is for `compare`, \
             which runs one child per count)"
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{shown} is not a thread count; give a whole number from 1, like 2 (a list for \
             `compare`: 1,2)"
        ));
    }
    match s.parse::<usize>() {
        Ok(0) => Err("--threads must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{shown} threads is more than any machine has; give at most a few per logical core"
        )),
    }
}

/// The subcommands, as typed on the command line.
const SUBCOMMANDS: &[&str] = &[
    "compare", "run", "check", "roofline", "inspect", "ab", "backends", "history", "report", "help",
];

/// The published spellings, turned into subcommands: `--compare ...` is `compare ...`,
/// `--roofline ...` is `roofline ...`, and `--backend NAME ...` (without a subcommand) is
/// `run --backend NAME ...`. Anything else is left for the parser.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    if SUBCOMMANDS.contains(&first) {
        return args;
    }
    let is = |a: &OsString, flag: &str| a == flag;
    let mut rest: Vec<OsString> = args[1..].to_vec();
    let command = if let Some(i) = rest.iter().position(|a| is(a, "--compare")) {
        rest.remove(i);
        "compare"
    } else if let Some(i) = rest.iter().position(|a| is(a, "--roofline")) {
        rest.remove(i);
        "roofline"
    } else if rest
        .iter()
        .any(|a| a == "--backend" || a.to_str().is_some_and(|s| s.starts_with("--backend=")))
    {
        "run"
    } else {
        return args;
    };
    let mut out = vec![args[0].clone(), command.into()];
    out.extend(rest);
    out
}

/// For an unknown flag that is a flag of another subcommand, the line that says so; `None`
/// otherwise (clap's own message then stands).
pub fn foreign_flag_message(e: &clap::Error, args: &[OsString]) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let flag = e.get(ContextKind::InvalidArg)?.to_string();
    let flag = flag.split('=').next()?.to_string();
    let long = flag.strip_prefix("--")?;
    let command = args.get(1)?.to_str()?;
    if !SUBCOMMANDS.contains(&command) {
        return Some(format!(
            "error: {flag} needs a mode: `gpt2-bench compare ...` (every backend, one table) or \
             `gpt2-bench run --backend NAME ...` (one backend, its text streamed); see \
             gpt2-bench --help\n"
        ));
    }
    let cli = Cli::command();
    let owners: Vec<&str> = cli
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| a.get_long() == Some(long)))
        .map(|s| s.get_name())
        .collect();
    if owners.is_empty() {
        return None;
    }
    Some(format!(
        "error: {flag} does not apply to `gpt2-bench {command}`, which would ignore it; it is a \
         flag of `{}`. Remove it (see gpt2-bench {command} --help)\n",
        owners.join("`, `")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        let args = std::iter::once("gpt2-bench")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        normalize_args(args)[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn published_spellings_become_subcommands() {
        assert_eq!(
            norm(&["--compare", "--prompt", "x"]),
            ["compare", "--prompt", "x"]
        );
        assert_eq!(
            norm(&["--prompt", "x", "--compare"]),
            ["compare", "--prompt", "x"]
        );
        assert_eq!(norm(&["--backend", "naive"]), ["run", "--backend", "naive"]);
        assert_eq!(norm(&["--backend=naive"]), ["run", "--backend=naive"]);
        assert_eq!(
            norm(&["--roofline", "--threads", "1"]),
            ["roofline", "--threads", "1"]
        );
        // Subcommands, help and unknown spellings are the parser's.
        assert_eq!(norm(&["compare", "--compare"]), ["compare", "--compare"]);
        assert_eq!(norm(&["--help"]), ["--help"]);
        assert_eq!(norm(&["--prompt", "x"]), ["--prompt", "x"]);
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
