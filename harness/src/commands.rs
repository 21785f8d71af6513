//! What each subcommand does, once its arguments are parsed ([`crate::cli`]) and turned into
//! typed options ([`crate::plan`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use gpt2_backends::{KvCache, backend_names};
use gpt2_process::cli::{self, EXIT_INPUT, EXIT_MISMATCH, EXIT_OK, EXIT_REGRESSION};
use gpt2_weights::{Gpt2Tokenizer, StreamDecoder, WeightFile};

use crate::cli::{CheckArgs, Command, CompareArgs, RooflineArgs, RunArgs};
use crate::generate::generate;
use crate::record::{BackendResult, ModelInfo, Report};
use crate::render::{self, Format, RunStart};
use crate::warning::Warning;
use crate::{check, compare, gate, history, machine, model, plan, roofline, save, store, teach};

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
        Command::History(args) => history_command(&args),
        Command::Report(args) => report_command(&args),
        Command::Backends => {
            // stdout: this build's backends, one per line (for scripts); stderr: the others.
            print_stdout(&(backend_names().join("\n") + "\n"))?;
            for (name, built, build) in gpt2_backends::registry::OPTIONAL {
                if !built {
                    gpt2_process::cli::stderr(&format!(
                        "{name}: not in this build; build it with: {build}\n"
                    ));
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// The results directory `--results` names (or the default of `--save`); a path that exists
/// must be a directory.
fn results_dir(args: &crate::cli::StoreArgs) -> anyhow::Result<PathBuf> {
    let dir = plan::save_dir(args.results.as_deref());
    match std::fs::metadata(&dir) {
        Ok(meta) if !meta.is_dir() => bail!(
            "the results directory {} ({}) is {}, not a directory; give the directory that \
             holds results.sqlite",
            dir.display(),
            if args.results.is_some() {
                "--results"
            } else {
                "GPT2_BENCH_RESULTS_DIR, else bench-runs/"
            },
            if meta.is_file() {
                "a file"
            } else {
                gpt2_weights::input::kind_of(&meta)
            }
        ),
        _ => Ok(dir),
    }
}

/// Stored rows `history` left out, on stderr.
fn say_skipped(history: &history::History) {
    for reason in &history.skipped {
        cli::stderr(&format!("warning: a stored row left out: {reason}\n"));
    }
}

/// The store `StoreArgs` name, opened to read, and the filter of its rows: `--machine`, else
/// this machine (for a history) or every machine (`this_machine` false: the latest run).
fn stored(
    args: &crate::cli::StoreArgs,
    this_machine: bool,
) -> anyhow::Result<(store::Store, store::Filter)> {
    let path = store::path_in(&results_dir(args)?);
    let store = store::Store::open_existing(&path)?;
    let machine = match (&args.machine, this_machine) {
        (None, false) => None,
        (asked, _) => history::machine_filter(&store, asked.as_deref())?,
    };
    let filter = store::Filter {
        machine,
        model_name: args.model.clone(),
        backends: args.backends.clone(),
    };
    Ok((store, filter))
}

fn history_command(args: &crate::cli::HistoryArgs) -> anyhow::Result<u8> {
    if let Some(dir) = &args.import {
        // Every report read before the store is opened: an import of nothing creates nothing.
        let (reports, mut skipped) = store::reports_in(dir)?;
        if reports.is_empty() {
            for reason in &skipped {
                cli::stderr(&format!("skipped {reason}\n"));
            }
            bail!(
                "--import {}: no gpt2-bench report (a compare --save or --format json file of \
                 schema {}) is in that directory",
                dir.display(),
                crate::record::SCHEMA_VERSION
            );
        }
        let path = store::path_in(&results_dir(&args.store)?);
        let mut store = store::Store::open_or_create(&path)?;
        let import = store::import(&mut store, &reports)?;
        skipped.extend(import.skipped);
        for reason in &skipped {
            cli::stderr(&format!("skipped {reason}\n"));
        }
        cli::stderr(&format!(
            "imported {} run(s) from {} into {} ({} already there)\n",
            import.added,
            dir.display(),
            path.display(),
            import.already
        ));
    }
    let (store, filter) = stored(&args.store, true)?;
    let text = if args.format == Format::Sql {
        if args.store.threshold.is_some() {
            bail!("--threshold judges changes between commits: `--format sql` prints the rows");
        }
        store.rows_as_sql(&filter)?
    } else {
        let threshold = args.store.threshold.unwrap_or(history::DEFAULT_THRESHOLD);
        let history = history::read(&store, &filter, threshold)?;
        say_skipped(&history);
        history::render(&history, args.format)
    };
    print_stdout(&text)?;
    Ok(EXIT_OK)
}

fn report_command(args: &crate::cli::ReportArgs) -> anyhow::Result<u8> {
    let (html, inputs) = if let Some(from) = &args.from {
        let limit = gpt2_weights::input::MAX_TEXT_FILE_BYTES;
        let text = gpt2_weights::input::read_text_limited(from, limit)
            .with_context(|| format!("--from {}", from.display()))?;
        let report = crate::record::read_report(text.as_bytes())
            .with_context(|| format!("--from {}", from.display()))?;
        (render::html::of_report(&report), vec![from.clone()])
    } else {
        let (store, filter) = stored(&args.store, args.history)?;
        let html = if args.history {
            let threshold = args.store.threshold.unwrap_or(history::DEFAULT_THRESHOLD);
            let history = history::read(&store, &filter, threshold)?;
            say_skipped(&history);
            render::html::of_history(&history)
        } else {
            if args.store.threshold.is_some() {
                bail!("--threshold judges changes between commits: it applies to --history");
            }
            let mut report = store.latest_report(&filter)?.with_context(|| {
                format!(
                    "{} holds no saved run{} to report",
                    store.path().display(),
                    if filter.machine.is_some() || filter.model_name.is_some() {
                        " of that machine and model"
                    } else {
                        ""
                    }
                )
            })?;
            if let Some(backends) = &filter.backends {
                report.results.retain(|r| backends.contains(&r.backend));
                if report.results.is_empty() {
                    bail!(
                        "--backends {}: the latest stored run has none of them",
                        backends.join(",")
                    );
                }
            }
            render::html::of_report(&report)
        };
        (html, vec![store.path().to_path_buf()])
    };
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    save::write_atomically(&args.html, html.as_bytes(), &inputs)
        .with_context(|| format!("--html {}", args.html.display()))?;
    cli::stderr(&format!("wrote {}\n", args.html.display()));
    Ok(EXIT_OK)
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
    let judged = crate::ab::run(&plan, &mut |line| gpt2_process::cli::stderr(line))?;
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

/// `compare`: every selected backend on the same decoding, at each prompt length. The
/// arguments become one typed plan first ([`plan::compare`]); nothing after that reads the
/// command line.
fn compare(args: &CompareArgs) -> anyhow::Result<u8> {
    let typed = plan::compare(args)?;
    run_compare(
        &typed.plan,
        &typed.outputs,
        &typed.files,
        &typed.tokenizer,
        typed.notes,
    )
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

/// A comparison, as a sequence of steps: check where its outputs go, measure every backend on
/// every file (each row printed as it comes), judge it against a baseline, assemble the
/// record, finish the outputs, and choose the exit status.
fn run_compare(
    plan: &compare::Plan,
    outputs: &plan::Outputs,
    files: &[WeightFile],
    tokenizer: &Gpt2Tokenizer,
    notes: Vec<String>,
) -> anyhow::Result<u8> {
    let checked = check_outputs(outputs, files)?;
    let mut view = View {
        renderer: render::renderer(outputs.format, outputs.wide),
        write_error: None,
    };
    let run = measure(plan, outputs, files, tokenizer, &mut view)?;
    let gate = judge(
        plan,
        outputs,
        files,
        tokenizer,
        checked.baseline.as_ref(),
        &run,
    )?;
    let report = assemble(plan, tokenizer, run, gate, notes);
    finish(plan, outputs, &checked.inputs, &report, view)?;
    exit_status(outputs, &report)
}

/// What [`check_outputs`] found: the baseline (loaded) and every file the run reads, which no
/// output may replace.
struct CheckedOutputs {
    baseline: Option<gate::Baseline>,
    inputs: Vec<PathBuf>,
}

/// Checks the inputs and outputs before spending minutes on the run: no output may replace a
/// special file, a symbolic link, or a file this run reads.
fn check_outputs(outputs: &plan::Outputs, files: &[WeightFile]) -> anyhow::Result<CheckedOutputs> {
    let baseline = outputs
        .baseline
        .as_deref()
        .map(gate::Baseline::load)
        .transpose()?;
    let mut inputs: Vec<PathBuf> = files.iter().map(|f| f.path().to_path_buf()).collect();
    inputs.extend(outputs.baseline.clone());
    let input_refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    if let Some(path) = &outputs.plot {
        gpt2_weights::write::check_output(path, &input_refs)
            .map_err(|m| anyhow::anyhow!("--plot {}: {m}", path.display()))?;
    }
    if let Some(dir) = &outputs.save_dir {
        let history = dir.join("history.md");
        gpt2_weights::write::check_output(&history, &input_refs)
            .map_err(|m| anyhow::anyhow!("--save: {}: {m}", history.display()))?;
    }
    Ok(CheckedOutputs { baseline, inputs })
}

/// The chosen format's renderer and stdout: the first write error is kept (and returned at the
/// end), so that a closed pipe stops the printing but not the run's saving.
struct View {
    renderer: Box<dyn render::Renderer>,
    write_error: Option<anyhow::Error>,
}

impl View {
    fn print(&mut self, text: &str) {
        if self.write_error.is_none()
            && let Err(e) = print_stdout(text)
        {
            self.write_error = Some(e);
        }
    }
}

/// Everything measured: the rows of every file, their warnings and agreement, and the machine
/// and roofline beside them.
struct Measured {
    date_utc: String,
    load_before: Option<f64>,
    machine: machine::Machine,
    models: Vec<ModelInfo>,
    roofline: Option<roofline::Roofline>,
    results: Vec<BackendResult>,
    warnings: Vec<Warning>,
    agreement: Vec<crate::agreement::Agreement>,
}

/// Measures every backend on every file (a thread sweep in child processes), printing each
/// row as it comes; then each further file's agreement with the first.
fn measure(
    plan: &compare::Plan,
    outputs: &plan::Outputs,
    files: &[WeightFile],
    tokenizer: &Gpt2Tokenizer,
    view: &mut View,
) -> anyhow::Result<Measured> {
    let date_utc = machine::now_utc();
    let load_before = machine::load_average_1min();
    // Each file's own roofline (its bytes per token differ); the report keeps the first's.
    let rooflines: Vec<Option<roofline::Roofline>> = files
        .iter()
        .map(|f| {
            // A sweep's children measure their own, at their thread counts.
            (outputs.roofline && plan.sweep.is_empty())
                .then(|| roofline::measure(f, plan.options.threads))
                .transpose()
        })
        .collect::<anyhow::Result<_>>()?;
    let progress = progress(plan.quiet);
    let machine = machine::Machine::detect();
    let models: Vec<ModelInfo> = files.iter().map(model_info).collect();
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
    let header = view.renderer.header(&RunStart {
        models: &models,
        machine: &machine,
        labels: &labels,
        several_lengths: plan.lengths.len() > 1,
        reference: &plan.backends[0],
    });
    view.print(&header);
    let mut on_row = |r: &BackendResult| {
        let row = view.renderer.row(r);
        view.print(&row);
    };
    let (mut results, mut backend_warnings) = (Vec::new(), Vec::new());
    let mut file_plan = plan.clone();
    for (f, r) in files.iter().zip(&rooflines) {
        let (rows, w) = if plan.sweep.is_empty() {
            compare::run(&file_plan, f, tokenizer, r.as_ref(), &progress, &mut on_row)?
        } else {
            compare::sweep(plan, f.path(), &mut on_row)?
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
        agreement_rows(files, plan, &results, plan.quiet)?
    } else {
        Vec::new()
    };
    let mut warnings =
        compare::machine_warnings(load_before, machine.logical_cores, plan.options.threads);
    warnings.extend(backend_warnings);
    Ok(Measured {
        date_utc,
        load_before,
        machine,
        models,
        roofline: rooflines.into_iter().next().flatten(),
        results,
        warnings,
        agreement,
    })
}

/// The `--baseline` gate: each row against the baseline's; a regression must reproduce (the
/// suspects run again, and only what regresses twice counts), and on a busy machine a slowdown
/// is not judged at all (an error naming `ab`).
fn judge(
    plan: &compare::Plan,
    outputs: &plan::Outputs,
    files: &[WeightFile],
    tokenizer: &Gpt2Tokenizer,
    baseline: Option<&gate::Baseline>,
    run: &Measured,
) -> anyhow::Result<Option<crate::record::Gate>> {
    let Some(b) = baseline else {
        return Ok(None);
    };
    let (model, machine) = (&run.models[0], &run.machine);
    let probe_isa = gpt2_backends::kernels::Kernels::best_available()
        .isa()
        .name();
    let gate_of = |rows: &[BackendResult]| {
        gate::compare(
            b,
            rows,
            &model.checksum,
            &machine.cpu,
            probe_isa,
            outputs.max_slowdown,
        )
    };
    let mut g = gate_of(&run.results);
    let all_match = run.results.iter().all(|r| r.passes());
    if g.regressed && all_match {
        let suspects = g.suspects();
        if !plan.quiet {
            cli::stderr(&format!(
                "the gate found a slowdown in {}; measuring again to confirm it\n",
                suspects.join(", ")
            ));
        }
        let again_plan = compare::Plan {
            backends: suspects,
            ..plan.clone()
        };
        let (again, _) = compare::run(
            &again_plan,
            &files[0],
            tokenizer,
            run.roofline.as_ref(),
            &progress(plan.quiet),
            &mut |_| {},
        )?;
        g.confirm(&gate_of(&again));
    }
    // A busy machine slows every run by an amount no probe cancels reliably (a `yes` beside the
    // run failed an unchanged binary at times): there a slowdown is not judged, and the
    // interleaved gate is named instead of crying wolf. The load before the run only:
    // afterwards it counts this run's own threads.
    if g.regressed
        && all_match
        && let Some(load) = run
            .load_before
            .filter(|&l| compare::is_busy(l, machine.logical_cores))
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
    Ok(Some(g))
}

/// The record of the run.
fn assemble(
    plan: &compare::Plan,
    tokenizer: &Gpt2Tokenizer,
    run: Measured,
    gate: Option<crate::record::Gate>,
    notes: Vec<String>,
) -> Report {
    let all_match = run.results.iter().all(|r| r.passes());
    Report {
        schema_version: crate::record::SCHEMA_VERSION,
        command_line: std::env::args().collect(),
        date_utc: run.date_utc,
        model: run.models[0].clone(),
        prompt: plan
            .prompt_text
            .clone()
            .unwrap_or_else(|| tokenizer.decode(&plan.prompt)),
        prompt_token_ids: plan.prompt.clone(),
        max_tokens: plan.max_tokens,
        sampling: plan.sampling.describe(),
        runs: plan.runs,
        warmup: plan.warmup,
        reference: plan.backends[0].clone(),
        results: run.results,
        all_match,
        roofline: run.roofline,
        notes,
        warnings: run.warnings.iter().map(Warning::to_string).collect(),
        gate,
        machine: run.machine,
        models: run.models,
        agreement: run.agreement,
        load_average_before_run: run.load_before,
    }
}

/// A backend's progress bar over the tokens it decodes (none with `-q`).
fn progress(quiet: bool) -> impl Fn(&str, u64) -> indicatif::ProgressBar {
    move |name: &str, total: u64| {
        let template = "{prefix:>10} [{bar:30}] {pos}/{len} tokens ({elapsed})";
        let bar = gpt2_process::progress_bar(quiet, template, total);
        bar.set_prefix(name.to_string());
        bar
    }
}

/// The end of the view, the warnings (stderr), the saved record and the chart.
fn finish(
    plan: &compare::Plan,
    outputs: &plan::Outputs,
    inputs: &[PathBuf],
    report: &Report,
    mut view: View,
) -> anyhow::Result<()> {
    let footer = view.renderer.footer(report);
    view.print(&footer);
    if let Some(e) = view.write_error {
        return Err(e);
    }
    if outputs.format != Format::Md {
        for w in &report.warnings {
            cli::stderr(&format!("warning: {w}\n"));
        }
    }
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    if let Some(dir) = &outputs.save_dir {
        let saved = save::save(report, dir, &inputs)?;
        if !plan.quiet {
            cli::stderr(&format!(
                "saved {}, its rows in {} and {}\n",
                saved.json.display(),
                saved.store.display(),
                saved.history.display()
            ));
        }
    }
    if let Some(path) = &outputs.plot {
        save::write_atomically(path, render::charts::plot_svg(report).as_bytes(), &inputs)
            .with_context(|| format!("--plot {}", path.display()))?;
    }
    Ok(())
}

/// 1 when tokens differ (the divergence said on stderr), 2 on a confirmed regression, else 0.
fn exit_status(outputs: &plan::Outputs, report: &Report) -> anyhow::Result<u8> {
    if !report.all_match {
        cli::stderr(&render::text::divergence_report(report));
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
        if outputs.format != Format::Table && outputs.format != Format::Md {
            cli::stderr(&gate::render(g));
        }
        if g.regressed {
            cli::stderr(&format!(
                "REGRESSION: a backend is slower than the baseline beyond {:.0}%\n",
                outputs.max_slowdown * 100.0
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
    use crate::agreement;
    use crate::record::file_name;
    let len = plan.lengths[0];
    let reference = &plan.backends[0];
    let row_of = |f: &WeightFile| {
        results.iter().find(|r| {
            &r.backend == reference && r.prompt_tokens == len && r.model_file == file_name(f.path())
        })
    };
    let Some(first_row) = row_of(&files[0]) else {
        return Ok(Vec::new());
    };
    let context = agreement::context(&plan.prompt[..len], &first_row.token_ids);
    let backend = agreement::backend(reference);
    if !quiet {
        cli::stderr(&format!(
            "agreement: {} positions of every file on {backend}, teacher-forced\n",
            context.len()
        ));
    }
    let logits = agreement::teacher_forced_logits(&files[0], &backend, &plan.options, &context)?;
    let first = agreement::Reference {
        file: &files[0],
        dtype: &first_row.dtype,
        logits: &logits,
        context: &context,
        prompt_tokens: len,
        generated: &first_row.token_ids,
    };
    files[1..]
        .iter()
        .map(|f| {
            let tokens = row_of(f).map_or(&[][..], |r| &r.token_ids[..]);
            agreement::against(&first, (f, &backend), &plan.options, tokens)
        })
        .collect()
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
