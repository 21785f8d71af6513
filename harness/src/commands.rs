//! What each subcommand does, once its arguments are parsed ([`crate::cli`]) and turned into
//! typed options ([`crate::plan`]).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use gpt2_backends::{KvCache, backend_names};
use gpt2_export::cli::{self, EXIT_INPUT, EXIT_MISMATCH, EXIT_OK, EXIT_REGRESSION};
use gpt2_weights::{Gpt2Tokenizer, StreamDecoder, WeightFile};

use crate::cli::{CheckArgs, Command, CompareArgs, RooflineArgs, RunArgs};
use crate::generate::generate;
use crate::record::{BackendResult, ModelInfo, Report};
use crate::render::{self, Format, RunStart};
use crate::warning::Warning;
use crate::{check, compare, gate, machine, model, plan, roofline, save, teach};

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
        Command::Ab(args) => ab(&args),
        Command::Backends => {
            print_stdout(&(backend_names().join("\n") + "\n"))?;
            Ok(EXIT_OK)
        }
    }
}

fn ab(args: &crate::cli::AbArgs) -> anyhow::Result<u8> {
    let candidate = match &args.candidate_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this gpt2-bench binary")?,
    };
    let plan = crate::ab::AbPlan {
        baseline: args.baseline_bin.clone(),
        candidate,
        rounds: args.rounds,
        max_slowdown: args.max_slowdown,
        compare_args: args.compare_args.clone(),
        timeout: args.timeout,
    };
    let judged = crate::ab::run(&plan, &mut |line| gpt2_export::cli::stderr(line))?;
    print_stdout(&crate::ab::render(&judged, args.max_slowdown))?;
    Ok(if judged.iter().any(|j| j.regression) {
        EXIT_REGRESSION
    } else {
        EXIT_OK
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let options = plan::engine_options(args.engine.threads, args.engine.device, KvCache::F32)?;
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
    let options =
        plan::engine_options(args.threads, gpt2_backends::DeviceChoice::Cpu, KvCache::F32)?;
    let path = model::resolve(args.model.model.as_deref(), args.quiet)?;
    let file = WeightFile::open(&path)?;
    let r = roofline::measure(&file, options.threads)?;
    print_stdout(&render::text::render_roofline(
        &r,
        &gpt2_weights::input::printable(&file.header().provenance.model_name),
    ))?;
    Ok(EXIT_OK)
}

/// `compare`: every selected backend on the same decoding, at each prompt length.
fn compare(args: &CompareArgs) -> anyhow::Result<u8> {
    // No prompt at all: llama-bench's kind of default, a short prompt's latency and a 128-token
    // prefill's throughput (each followed by --max-tokens of decode); fixed once the model's
    // context is known.
    plan::check_prompt_args(
        plan::default_prompt(&args.prompt, usize::MAX)
            .as_ref()
            .unwrap_or(&args.prompt),
    )?;
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
    let sweep = args.engine.threads.len() > 1;
    if sweep {
        if let Some(dup) = args
            .engine
            .threads
            .iter()
            .enumerate()
            .find(|(i, n)| args.engine.threads[..*i].contains(n))
        {
            bail!("--threads: {} given twice", dup.1);
        }
        if args.baseline.is_some() {
            bail!("--baseline gates one thread count; give one --threads value with it");
        }
        if args.models.len() > 1 {
            bail!(
                "--threads with a list runs one --model file; compare dtypes at one thread count"
            );
        }
    }
    // A sweep's children each check their own count; here the largest is checked (and it sets
    // the process settings, which this process, measuring nothing itself, does not use).
    let options = plan::engine_options(
        args.engine.threads.iter().max().copied(),
        args.engine.device,
        args.kv_cache,
    )?;
    let selected = plan::select_backends(
        args.backends.as_deref(),
        None,
        args.reference.as_deref(),
        &options,
    )?;
    let files = open_models(args)?;
    let file = &files[0];
    let tokenizer = file.tokenizer()?;
    let default_lengths = plan::default_prompt(&args.prompt, file.config().n_ctx as usize);
    let prompt_args = default_lengths.as_ref().unwrap_or(&args.prompt);
    let prompt_ids = plan::prompt_ids(prompt_args, &tokenizer, file)?;
    let lengths = plan::prompt_lengths(prompt_args, true, prompt_ids.len())?;
    let n_ctx = file.config().n_ctx as usize;
    let (new_tokens, cut_short) = plan::new_tokens(&lengths, args.prompt.max_tokens, n_ctx);
    let mut notes = vec!["tokenization is not timed".to_string()];
    if default_lengths.is_some() {
        notes.push(format!(
            "no prompt given: synthetic prompts of {} tokens (a short prompt's latency, then \
             prefill throughput, as llama-bench's pp tests); give --prompt, --prompt-ids or \
             --prompt-tokens to choose",
            lengths
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    notes.extend(cut_short);
    let plan = compare::Plan {
        sweep: if sweep {
            args.engine.threads.clone()
        } else {
            Vec::new()
        },
        backends: &selected,
        prompt: &prompt_ids,
        lengths,
        new_tokens,
        runs: args.runs,
        warmup: args.warmup,
        options: &options,
        sampling,
        quiet: args.quiet,
        several_models: files.len() > 1,
        reference_total_ms: Vec::new(),
    };
    run_compare(args, &files, &tokenizer, &plan, notes)
}

/// The `--model` files of a comparison, opened and verified: one by default, or several files
/// of one model (same config and tokenizer) in different dtypes.
fn open_models(args: &CompareArgs) -> anyhow::Result<Vec<WeightFile>> {
    if args.models.is_empty() {
        let path = model::resolve(None, args.quiet)?;
        return Ok(vec![WeightFile::open_verified(&path)?]);
    }
    if args.models.len() > 1 && args.baseline.is_some() {
        bail!(
            "--baseline gates one weight file; this run has {} --model files: give one",
            args.models.len()
        );
    }
    let mut files: Vec<WeightFile> = Vec::new();
    for path in &args.models {
        if files.iter().any(|f| f.path() == path.as_path()) {
            bail!("--model {}: given twice", path.display());
        }
        let file = WeightFile::open_verified(path)?;
        if let Some(first) = files.first()
            && (file.config() != first.config()
                || file.header().tokenizer != first.header().tokenizer)
        {
            bail!(
                "--model {}: not the same model as {} (their configs or tokenizers differ); \
                 several --model files must be one model in different dtypes",
                path.display(),
                first.path().display()
            );
        }
        files.push(file);
    }
    Ok(files)
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
        dtype: file
            .gpt2()
            .map_or_else(|_| "?".to_string(), |w| w.dtype_label()),
        weight_bytes_per_token: file.bytes_per_token(),
    }
}

fn run_compare(
    args: &CompareArgs,
    files: &[WeightFile],
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
    let file = &files[0];
    let mut inputs: Vec<&Path> = files.iter().map(|f| f.path()).collect();
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
    // Each file's own roofline (its bytes per token differ); the report keeps the first's.
    let rooflines: Vec<Option<roofline::Roofline>> = files
        .iter()
        .map(|f| {
            // A sweep's children measure their own, at their thread counts.
            (!args.no_roofline && plan.sweep.is_empty())
                .then(|| roofline::measure(f, plan.options.threads))
                .transpose()
        })
        .collect::<anyhow::Result<_>>()?;
    let roofline = rooflines[0].clone();
    let progress = |name: &str, total: u64| {
        let template = "{prefix:>10} [{bar:30}] {pos}/{len} tokens ({elapsed})";
        let bar = gpt2_export::progress_bar(args.quiet, template, total);
        bar.set_prefix(name.to_string());
        bar
    };
    let machine = machine::Machine::detect();
    let models: Vec<ModelInfo> = files.iter().map(model_info).collect();
    let model = models[0].clone();
    // Each row is printed as soon as its backend has run, by the formats that can (the compact
    // table and CSV, as llama-bench does); the others print everything at the end.
    let labels: Vec<String> = models
        .iter()
        .flat_map(|m| {
            plan.backends
                .iter()
                .map(|b| compare::row_label(b, &m.dtype, plan.several_models))
        })
        .flat_map(|label| match plan.sweep.as_slice() {
            [] => vec![label],
            counts => counts
                .iter()
                .map(|&n| compare::sweep_label(&label, n))
                .collect(),
        })
        .collect();
    let mut renderer = render::renderer(args.format, args.wide);
    let mut write_error = None;
    let mut print = |text: &str| {
        if write_error.is_none()
            && let Err(e) = print_stdout(text)
        {
            write_error = Some(e);
        }
    };
    print(&renderer.header(&RunStart {
        models: &models,
        machine: &machine,
        labels: &labels,
        several_lengths: plan.lengths.len() > 1,
        reference: &plan.backends[0],
    }));
    let mut on_row = |r: &BackendResult| print(&renderer.row(r));
    let (mut results, mut backend_warnings) = (Vec::new(), Vec::new());
    let mut file_plan = plan.clone();
    for (f, r) in files.iter().zip(&rooflines) {
        let (rows, w) = if plan.sweep.is_empty() {
            compare::run(&file_plan, f, tokenizer, r.as_ref(), &progress, &mut on_row)?
        } else {
            compare::sweep(args, f.path(), &plan.sweep, &mut on_row)?
        };
        if file_plan.reference_total_ms.is_empty() {
            file_plan.reference_total_ms =
                rows.iter().map(|r| (r.prompt_tokens, r.total_ms)).collect();
        }
        results.extend(rows);
        // With several files, say which file a backend's warning is about.
        let file_name = f.path().file_name().unwrap_or_default().to_string_lossy();
        backend_warnings.extend(w.into_iter().map(|w| match files.len() {
            1 => w,
            _ => Warning::InFile {
                file: file_name.to_string(),
                warning: Box::new(w),
            },
        }));
    }
    let agreement = if files.len() > 1 && plan.sampling.is_greedy() {
        agreement_rows(files, plan, &results, args.quiet)?
    } else {
        Vec::new()
    };
    let mut warnings =
        compare::machine_warnings(load_before, machine.logical_cores, plan.options.threads);
    warnings.extend(backend_warnings);
    let probe_isa = gpt2_backends::kernels::Kernels::best_available()
        .isa()
        .name();
    let mut gate = baseline.as_ref().map(|b| {
        gate::compare(
            b,
            &results,
            &model.checksum,
            &machine.cpu,
            probe_isa,
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
        let g2 = gate::compare(
            b,
            &again,
            &model.checksum,
            &machine.cpu,
            probe_isa,
            args.max_slowdown,
        );
        g.confirm(&g2);
    }
    // A busy machine slows every run by an amount no probe cancels reliably (a `yes` beside the
    // run failed an unchanged binary at times): there a slowdown is not judged, and the
    // interleaved gate is named instead of crying wolf.
    // The load before the run only: afterwards it counts this run's own threads.
    if let Some(g) = gate.as_ref().filter(|g| g.regressed && all_match)
        && let Some(load) = load_before.filter(|&l| compare::is_busy(l, machine.logical_cores))
    {
        bail!(
            "--baseline: a slowdown in {} was measured on a busy machine (1-minute load average \
             {load:.2} on {} cores), where other programs slow runs by more than the gate \
             allows, so it is not judged; rerun when the load is below {:.1}, or compare the two \
             builds interleaved with `gpt2-bench ab --baseline-bin OLD -- ARGS`, which holds on \
             a busy machine (docs/ci.md)",
            g.suspects().join(", "),
            machine.logical_cores,
            compare::busy_threshold(machine.logical_cores)
        );
    }
    let report = Report {
        schema_version: crate::record::SCHEMA_VERSION,
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
        warnings: warnings.iter().map(Warning::to_string).collect(),
        gate,
        machine,
        models,
        agreement,
    };
    print(&renderer.footer(&report));
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
        save::write_atomically(path, render::svg::svg(&report).as_bytes(), &inputs)
            .with_context(|| format!("--plot {}", path.display()))?;
    }
    if !all_match {
        cli::stderr(&render::text::divergence_report(&report));
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

/// Each file after the first against the first: teacher-forced over the first prompt length's
/// prompt and the first file's generated tokens (see [`crate::agreement`]).
fn agreement_rows(
    files: &[WeightFile],
    plan: &compare::Plan,
    results: &[BackendResult],
    quiet: bool,
) -> anyhow::Result<Vec<crate::agreement::Agreement>> {
    use crate::agreement::{self, Agreement};
    let len = plan.lengths[0];
    let reference = &plan.backends[0];
    let name = |f: &WeightFile| {
        f.path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let row_of = |f: &WeightFile| {
        results
            .iter()
            .find(|r| &r.backend == reference && r.prompt_tokens == len && r.model_file == name(f))
    };
    let Some(first_row) = row_of(&files[0]) else {
        return Ok(Vec::new());
    };
    let generated = &first_row.token_ids;
    let mut context = plan.prompt[..len].to_vec();
    context.extend(&generated[..generated.len().saturating_sub(1)]);
    let backend = agreement::backend(reference);
    if !quiet {
        cli::stderr(&format!(
            "agreement: {} positions of every file on {backend}, teacher-forced\n",
            context.len()
        ));
    }
    let want = agreement::teacher_forced_logits(&files[0], &backend, plan.options, &context)?;
    let mut rows = Vec::new();
    for f in &files[1..] {
        let got = agreement::teacher_forced_logits(f, &backend, plan.options, &context)?;
        let (top1_agreement, mean_kl, max_kl) = agreement::compare_logits(&want, &got);
        let tokens = row_of(f).map_or(&[][..], |r| &r.token_ids[..]);
        rows.push(Agreement {
            model_file: name(f),
            dtype: f.gpt2()?.dtype_label(),
            weight_bytes_per_token: f.bytes_per_token(),
            reference_file: name(&files[0]),
            reference_dtype: first_row.dtype.clone(),
            backend: backend.clone(),
            prompt_tokens: len,
            positions: context.len(),
            top1_agreement,
            mean_kl,
            max_kl,
            greedy_tokens: generated.len(),
            first_greedy_difference: agreement::first_difference(generated, tokens),
        });
    }
    Ok(rows)
}

/// `run`: one backend, its text streamed as it is generated, then a summary (and with
/// `--profile` where the time went).
fn run_one(args: &RunArgs) -> anyhow::Result<u8> {
    plan::check_prompt_args(&args.prompt)?;
    let sampling = plan::sampling(&args.sampling)?;
    let options = plan::engine_options(args.engine.threads, args.engine.device, args.kv_cache)?;
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
            (file.bytes_per_token(), &info.dtype),
            info.kv_cache.then(|| options.kv_cache.resolve(&weights)),
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
            crate::record::threads_phrase(info.threads)
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
