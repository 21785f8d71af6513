//! `gpt2-bench`: runs GPT-2 through interchangeable backends on identical greedy decoding,
//! checks that they produce the same tokens, and tabulates their speed.
//!
//! Two modes: `--compare` (every selected backend, one table, exit status 1 if any backend's
//! tokens differ from the reference's) and `--backend NAME` (one backend, streaming its text:
//! the teaching mode). `inspect FILE` describes a weight file.

mod generate;
mod machine;
mod model;
mod report;
mod roofline;

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use gpt2_backends::{BACKENDS, DeviceChoice, EngineOptions};
use gpt2_weights::{Gpt2Tokenizer, StreamDecoder, WeightFile};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::generate::{Generation, generate, max_new_tokens};
use crate::report::{BackendResult, Divergence, Format, ModelInfo, NEAR_TIE_GAP, Report};

/// The text behind `--prompt-tokens N`: its GPT-2 tokens, repeated and cut to N.
const SYNTHETIC_PROMPT_TEXT: &str = "The history of computing is a story of machines that \
    learned to do arithmetic faster than the people who built them. Early calculators used gears \
    and levers; later ones used relays, vacuum tubes and finally transistors, each generation \
    smaller, cheaper and more reliable than the last. ";

/// Exit status when every backend matched (or the single run succeeded).
const EXIT_OK: u8 = 0;
/// Exit status when a backend's tokens differ from the reference's.
const EXIT_MISMATCH: u8 = 1;
/// Exit status for a usage or input error.
const EXIT_USAGE: u8 = 3;

const AFTER_HELP: &str = "\
Examples:
  gpt2-bench --compare --prompt \"The meaning of life is\"
  gpt2-bench --compare --prompt \"Hello\" --backends naive,ndarray --max-tokens 16 --format json
  gpt2-bench --backend naive --prompt \"Once upon a time\"
  gpt2-bench inspect weights/gpt2.bin

Model: --model FILE, else weights/gpt2.bin, else GPT-2 small exported from the Hugging Face hub,
else (offline) a synthetic GPT-2 small with random weights (said on stderr).

Exit status: 0 all backends agree; 1 a backend's tokens differ from the reference's;
3 usage or input error.";

#[derive(Parser)]
#[command(
    name = "gpt2-bench",
    version,
    about = "Run GPT-2 on several backends, check they agree token for token, and time them.",
    after_help = AFTER_HELP,
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
    /// measuring prefill and decode at a chosen context length.
    #[arg(long, value_name = "N", conflicts_with = "prompt")]
    prompt_tokens: Option<usize>,
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Some(Command::Inspect { file, tensors }) => {
            let f = WeightFile::open(&file)?;
            let (text, ok) = gpt2_export::inspect::report(&f, tensors);
            print!("{text}");
            return Ok(if ok { EXIT_OK } else { EXIT_USAGE });
        }
        Some(Command::Backends) => {
            for name in BACKENDS {
                println!("{name}");
            }
            return Ok(EXIT_OK);
        }
        None => {}
    }
    let args = cli.run;
    if args.roofline {
        let options = engine_options(args.threads, args.device)?;
        let path = model::resolve(args.model.as_deref(), args.quiet)?;
        let file = WeightFile::open(&path)?;
        let r = roofline::measure(&file, options.threads)?;
        print_stdout(&report::render_roofline(
            &r,
            &file.header().provenance.model_name,
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
    let options = engine_options(args.threads, args.device)?;
    let selected = select_backends(&args, &options)?;

    let path = model::resolve(args.model.as_deref(), args.quiet)?;
    let file = WeightFile::open_verified(&path)?;
    let tokenizer = file.tokenizer()?;
    let prompt_ids = prompt_ids(&args, &tokenizer, &file)?;
    let n_ctx = file.config().n_ctx as usize;
    let n_new = args.max_tokens.min(max_new_tokens(prompt_ids.len(), n_ctx));
    let mut notes = vec!["tokenization is not timed".to_string()];
    if n_new < args.max_tokens {
        let note = format!(
            "the context holds {n_ctx} positions: with a {}-token prompt, generation stops after \
             {n_new} of the {} requested tokens",
            prompt_ids.len(),
            args.max_tokens
        );
        eprintln!("note: {note}");
        notes.push(note);
    }

    if args.compare {
        compare(
            &args,
            &file,
            &tokenizer,
            &prompt_ids,
            n_new,
            &selected,
            &options,
            notes,
        )
    } else {
        single(
            &args,
            &file,
            &tokenizer,
            &prompt_ids,
            n_new,
            &selected[0],
            &options,
        )
    }
}

/// Threads: `--threads`, else all logical cores. matrixmultiply (the ndarray backend) reads its
/// thread count from `MATMUL_NUM_THREADS` once, and candle's matrix products from
/// `RAYON_NUM_THREADS`, so both are set here, before any thread exists.
fn engine_options(threads: Option<usize>, device: DeviceChoice) -> anyhow::Result<EngineOptions> {
    let mut options = EngineOptions {
        device,
        allow_test_engines: std::env::var_os("GPT2_BENCH_TEST_ENGINES").is_some_and(|v| v == "1"),
        ..EngineOptions::default()
    };
    match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => options.threads = n,
        None => {
            if let Some(n) = std::env::var("MATMUL_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
            {
                options.threads = n.max(1);
            }
        }
    }
    // SAFETY: called from `main`'s thread before any other thread is started (no backend, pool
    // or progress bar exists yet), so nothing can read the environment concurrently.
    unsafe {
        std::env::set_var("MATMUL_NUM_THREADS", options.threads.to_string());
        std::env::set_var("RAYON_NUM_THREADS", options.threads.to_string());
        // candle runs elementwise operations on its own worker threads, which spin for a while
        // after each operation (25,000 turns by default) before sleeping; on a machine with as
        // many cores as threads they then take cores from the matrix products' rayon workers.
        // A short spin measured ~10% faster prefill here (bench-results/README.md).
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "500");
        }
    }
    Ok(options)
}

fn select_backends(args: &RunArgs, options: &EngineOptions) -> anyhow::Result<Vec<String>> {
    let valid = |name: &str| {
        BACKENDS.contains(&name)
            || (options.allow_test_engines && name == gpt2_backends::testing::DIVERGENT)
    };
    let unknown = |flag: &str, name: &str| {
        anyhow::anyhow!(
            "{flag}: unknown backend {name:?}; valid backends: {}",
            BACKENDS.join(", ")
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
        None => BACKENDS.iter().map(|s| s.to_string()).collect(),
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
            let n = args.prompt_tokens.unwrap_or_default();
            if n == 0 {
                bail!("--prompt-tokens must be at least 1");
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

fn progress_bar(quiet: bool, name: &str, n_new: usize) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(n_new as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} tokens ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(name.to_string());
    bar
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn model_info(file: &WeightFile) -> ModelInfo {
    let h = file.header();
    let c = &h.config;
    ModelInfo {
        name: h.provenance.model_name.clone(),
        path: file.path().display().to_string(),
        source: h.provenance.source.clone(),
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

#[allow(clippy::too_many_arguments)]
fn compare(
    args: &RunArgs,
    file: &WeightFile,
    tokenizer: &Gpt2Tokenizer,
    prompt: &[u32],
    n_new: usize,
    selected: &[String],
    options: &EngineOptions,
    notes: Vec<String>,
) -> anyhow::Result<u8> {
    let weights = file.gpt2()?;
    let roofline = if args.no_roofline {
        None
    } else {
        Some(roofline::measure(file, options.threads)?)
    };
    let prefill_flops = roofline::prefill_flops(file.config(), prompt.len());
    let mut runs: Vec<(String, gpt2_backends::EngineInfo, Generation)> = Vec::new();
    for name in selected {
        let mut engine = gpt2_backends::create(name, &weights, options)?;
        let bar = progress_bar(args.quiet, name, n_new);
        let g = generate(engine.as_mut(), prompt, n_new, |_| bar.inc(1))
            .with_context(|| format!("backend {name}"))?;
        bar.finish_and_clear();
        if !args.quiet {
            eprintln!(
                "{name}: {} tokens in {:.2} s",
                g.token_ids.len(),
                (g.prefill + g.decode_total()).as_secs_f64()
            );
        }
        runs.push((name.clone(), engine.info(), g));
    }

    let reference = &runs[0].2;
    let slowest = runs
        .iter()
        .map(|(_, _, g)| g.prefill + g.decode_total())
        .max()
        .unwrap_or_default();
    let results: Vec<BackendResult> = runs
        .iter()
        .map(|(name, info, g)| {
            let total = g.prefill + g.decode_total();
            let divergence = g
                .token_ids
                .iter()
                .zip(&reference.token_ids)
                .position(|(a, b)| a != b)
                .map(|step| {
                    let (want, got) = (reference.token_ids[step], g.token_ids[step]);
                    let gap = reference.top2_gaps[step];
                    Divergence {
                        step,
                        reference_id: want,
                        backend_id: got,
                        reference_text: tokenizer.decode(&[want]),
                        backend_text: tokenizer.decode(&[got]),
                        reference_top2_gap: gap,
                        near_tie: gap < NEAR_TIE_GAP,
                    }
                });
            let decode_tokens = g.steps.len();
            let decode_tok_per_s =
                (decode_tokens > 0).then(|| decode_tokens as f64 / g.decode_total().as_secs_f64());
            let prefill_gflops = prefill_flops / g.prefill.as_secs_f64() / 1e9;
            BackendResult {
                backend: name.clone(),
                summary: info.summary.to_string(),
                threads: info.threads,
                kv_cache: info.kv_cache,
                kv_cache_bytes: info.kv_cache_bytes,
                weights_copied_bytes: info.weights_copied_bytes,
                device: info.device.clone(),
                dtype: info.dtype.to_string(),
                prompt_tokens: prompt.len(),
                new_tokens: g.token_ids.len(),
                token_ids: g.token_ids.clone(),
                text: tokenizer.decode(&g.token_ids),
                ttft_ms: ms(g.prefill),
                prefill_tok_per_s: prompt.len() as f64 / g.prefill.as_secs_f64(),
                decode_ms: ms(g.decode_total()),
                decode_tok_per_s,
                decode_roofline_fraction: roofline
                    .as_ref()
                    .zip(decode_tok_per_s)
                    .map(|(r, d)| d / r.decode_roofline_tok_per_s),
                prefill_gflops,
                prefill_peak_fraction: roofline.as_ref().map(|r| prefill_gflops / r.peak_gflops),
                prefill_best_gemm_fraction: roofline
                    .as_ref()
                    .map(|r| prefill_gflops / r.gemm_simd_gflops.max(r.gemm_matrixmultiply_gflops)),
                total_ms: ms(total),
                speedup_vs_slowest: slowest.as_secs_f64() / total.as_secs_f64(),
                tokens_match: divergence.is_none() && g.token_ids == reference.token_ids,
                divergence,
            }
        })
        .collect();
    let all_match = results.iter().all(|r| r.tokens_match);
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        command_line: std::env::args().collect(),
        model: model_info(file),
        prompt: args
            .prompt
            .clone()
            .unwrap_or_else(|| tokenizer.decode(prompt)),
        prompt_token_ids: prompt.to_vec(),
        max_tokens: args.max_tokens,
        reference: selected[0].clone(),
        results,
        all_match,
        roofline,
        notes,
        machine: machine::Machine::detect(),
    };
    print_stdout(&report::render(&report, args.format))?;
    if !all_match {
        eprint!("{}", report::divergence_report(&report));
        return Ok(EXIT_MISMATCH);
    }
    Ok(EXIT_OK)
}

fn single(
    args: &RunArgs,
    file: &WeightFile,
    tokenizer: &Gpt2Tokenizer,
    prompt: &[u32],
    n_new: usize,
    name: &str,
    options: &EngineOptions,
) -> anyhow::Result<u8> {
    let weights = file.gpt2()?;
    let mut engine = gpt2_backends::create(name, &weights, options)?;
    let info = engine.info();
    if !args.quiet {
        eprintln!(
            "{name}: {} | model {} ({:.1}M parameters) | {} | {} threads",
            info.summary,
            file.header().provenance.model_name,
            file.config().parameter_count() as f64 / 1e6,
            info.device,
            info.threads
        );
    }
    let mut stdout = std::io::stdout().lock();
    let mut decoder = StreamDecoder::new();
    let mut write_err = None;
    let mut emit = |text: &str, out: &mut std::io::StdoutLock| {
        if write_err.is_none()
            && let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush())
        {
            write_err = Some(e);
        }
    };
    emit(&tokenizer.decode(prompt), &mut stdout);
    let g = generate(engine.as_mut(), prompt, n_new, |id| {
        let text = decoder.push(tokenizer.token_bytes(id).unwrap_or_default());
        emit(&text, &mut stdout);
    })
    .with_context(|| format!("backend {name}"))?;
    let tail = decoder.finish();
    emit(&tail, &mut stdout);
    emit("\n", &mut stdout);
    if let Some(e) = write_err {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(EXIT_OK);
        }
        return Err(e).context("writing to stdout");
    }
    let decode_tokens = g.steps.len();
    let mut summary = format!(
        "{name}: {} prompt tokens, {} new tokens; time to first token {:.1} ms ({:.1} prompt tok/s)",
        prompt.len(),
        g.token_ids.len(),
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
    eprintln!("{summary}");
    Ok(EXIT_OK)
}

/// Writes to stdout; a closed pipe (`gpt2-bench ... | head`) ends the output quietly.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
