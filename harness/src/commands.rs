//! What each subcommand does, once its arguments are parsed ([`crate::cli`]) and turned into
//! typed options ([`crate::plan`]).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use gpt2_backends::backend_names;
use gpt2_export::cli::{self, EXIT_INPUT, EXIT_MISMATCH, EXIT_OK, EXIT_REGRESSION};
use gpt2_weights::{Gpt2Tokenizer, StreamDecoder, WeightFile};

use crate::cli::{CheckArgs, Command, CompareArgs, RooflineArgs, RunArgs};
use crate::generate::generate;
use crate::report::{Format, ModelInfo, Report};
use crate::{check, compare, gate, machine, model, plan, plot, report, roofline, save, teach};

/// Runs a parsed command; the exit status, or an error for `cli::report_error`.
pub fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Compare(args) => compare(&args),
        Command::Run(args) => run_one(&args),
        Command::Check(args) => check(&args),
        Command::Roofline(args) => roofline(&args),
        Command::Inspect { file, tensors } => {
            let f = WeightFile::open(&file)?;
            let (text, ok) = gpt2_export::inspect::report(&f, tensors);
            print_stdout(&text)?;
            Ok(if ok { EXIT_OK } else { EXIT_INPUT })
        }
        Command::Backends => {
            print_stdout(&(backend_names().join("\n") + "\n"))?;
            Ok(EXIT_OK)
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let options = plan::engine_options(args.engine.threads, args.engine.device)?;
    let names = plan::select_backends(args.backends.as_deref(), None, None, &options)?;
    let (golden, outcomes) = check::run(&args.golden, args.model.as_deref(), &names, &options)?;
    print_stdout(&check::render(&golden, &outcomes))?;
    Ok(if outcomes.iter().all(check::Outcome::passed) {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    })
}

fn roofline(args: &RooflineArgs) -> anyhow::Result<u8> {
    let options = plan::engine_options(args.threads, gpt2_backends::DeviceChoice::Cpu)?;
    let path = model::resolve(args.model.model.as_deref(), args.quiet)?;
    let file = WeightFile::open(&path)?;
    let r = roofline::measure(&file, options.threads)?;
    print_stdout(&report::render_roofline(
        &r,
        &gpt2_weights::input::printable(&file.header().provenance.model_name),
    ))?;
    Ok(EXIT_OK)
}

/// `compare`: every selected backend on the same decoding, at each prompt length.
fn compare(args: &CompareArgs) -> anyhow::Result<u8> {
    plan::check_prompt_args(&args.prompt)?;
    for (flag, n) in [("--runs", args.runs), ("--warmup", args.warmup)] {
        if n > plan::MAX_RUNS {
            bail!(
                "{flag} {n} is more than the {} runs a comparison may have",
                plan::MAX_RUNS
            );
        }
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let sampling = plan::sampling(&args.sampling)?;
    let options = plan::engine_options(args.engine.threads, args.engine.device)?;
    let selected = plan::select_backends(
        args.backends.as_deref(),
        None,
        args.reference.as_deref(),
        &options,
    )?;
    let path = model::resolve(args.model.model.as_deref(), args.quiet)?;
    let file = WeightFile::open_verified(&path)?;
    let tokenizer = file.tokenizer()?;
    let prompt_ids = plan::prompt_ids(&args.prompt, &tokenizer, &file)?;
    let lengths = plan::prompt_lengths(&args.prompt, true, prompt_ids.len())?;
    let n_ctx = file.config().n_ctx as usize;
    let (new_tokens, cut_short) = plan::new_tokens(&lengths, args.prompt.max_tokens, n_ctx);
    let mut notes = vec!["tokenization is not timed".to_string()];
    notes.extend(cut_short);
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
    run_compare(args, &file, &tokenizer, &plan, notes)
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
    args: &CompareArgs,
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
    let save_dir = args.save.as_ref().map(|dir| plan::save_dir(dir.as_deref()));
    if let Some(dir) = &save_dir {
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
    let machine = machine::Machine::detect();
    let model = model_info(file);
    // The default table prints each row as soon as its backend has run (llama-bench does);
    // every other view needs the whole report first.
    let streamed = args.format == Format::Table && !args.wide;
    let printer = report::RowPrinter::new(plan.backends, plan.lengths.len() > 1);
    let mut write_error = None;
    let mut print = |text: &str| {
        if write_error.is_none()
            && let Err(e) = print_stdout(text)
        {
            write_error = Some(e);
        }
    };
    if streamed {
        print(&report::table_heading(
            &model.name,
            model.parameters,
            &machine,
        ));
        print(&printer.header());
    }
    let mut on_row = |r: &report::BackendResult| {
        if streamed {
            print(&printer.row(r));
        }
    };
    let (results, backend_warnings) = compare::run(
        plan,
        file,
        tokenizer,
        roofline.as_ref(),
        &progress,
        &mut on_row,
    )?;
    let mut warnings =
        compare::machine_warnings(load_before, machine.logical_cores, plan.options.threads);
    warnings.extend(backend_warnings);
    let mut gate = baseline.as_ref().map(|b| {
        gate::compare(
            b,
            &results,
            &model.checksum,
            &machine.cpu,
            args.max_slowdown,
        )
    });
    let all_match = results.iter().all(|r| r.tokens_match);
    // A regression must reproduce: the suspects run again, and only what regresses twice counts.
    if let (Some(g), Some(b)) = (gate.as_mut(), baseline.as_ref())
        && g.regressed
        && all_match
    {
        let suspects = g.suspects();
        if !args.quiet {
            cli::stderr(&format!(
                "the gate found a slowdown in {}; measuring again to confirm it\n",
                suspects.join(", ")
            ));
        }
        let again_plan = compare::Plan {
            backends: &suspects,
            ..plan.clone()
        };
        let (again, _) = compare::run(
            &again_plan,
            file,
            tokenizer,
            roofline.as_ref(),
            &progress,
            &mut |_| {},
        )?;
        let g2 = gate::compare(b, &again, &model.checksum, &machine.cpu, args.max_slowdown);
        g.confirm(&g2);
    }
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        command_line: std::env::args().collect(),
        date_utc,
        model,
        prompt: match &args.prompt.prompt {
            Some(text) => text.clone(),
            None => tokenizer.decode(plan.prompt),
        },
        prompt_token_ids: plan.prompt.to_vec(),
        max_tokens: args.prompt.max_tokens,
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
    if streamed {
        print(&report::table_footer(&report));
    } else {
        print(&report::render(&report, args.format, args.wide));
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    if args.format != Format::Md {
        for w in &report.warnings {
            cli::stderr(&format!("warning: {w}\n"));
        }
    }
    if let Some(dir) = &save_dir {
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

/// `run`: one backend, its text streamed as it is generated, then a summary (and with
/// `--profile` where the time went).
fn run_one(args: &RunArgs) -> anyhow::Result<u8> {
    plan::check_prompt_args(&args.prompt)?;
    let sampling = plan::sampling(&args.sampling)?;
    let options = plan::engine_options(args.engine.threads, args.engine.device)?;
    let name = &plan::select_backends(None, Some(&args.backend), None, &options)?[0];
    let path = model::resolve(args.model.model.as_deref(), args.quiet)?;
    let file = WeightFile::open_verified(&path)?;
    let tokenizer = file.tokenizer()?;
    let prompt = plan::prompt_ids(&args.prompt, &tokenizer, &file)?;
    let lengths = plan::prompt_lengths(&args.prompt, false, prompt.len())?;
    let n_ctx = file.config().n_ctx as usize;
    let (new_tokens, _) = plan::new_tokens(&lengths, args.prompt.max_tokens, n_ctx);
    let (file, prompt, n_new) = (&file, &prompt[..], new_tokens[0]);
    let weights = file.gpt2()?;
    let mut engine = gpt2_backends::create(name, &weights, &options)?;
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
            "{name}: {} | model {} ({:.1}M parameters) | {} | {}\n",
            info.summary,
            gpt2_weights::input::printable(&file.header().provenance.model_name),
            file.config().parameter_count() as f64 / 1e6,
            info.device,
            report::threads_phrase(info.threads)
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
