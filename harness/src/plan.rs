//! Turns parsed arguments into the typed options the commands run with, checking each
//! against the model and the machine: thread counts, backends, the prompt's ids and lengths,
//! sampling, and where saved results go.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::bail;
use gpt2_backends::{DeviceChoice, EngineOptions, KvCache, backend_names};
use gpt2_process::cli;
use gpt2_weights::{Gpt2Tokenizer, WeightFile};

use crate::cli::{CompareArgs, PromptArgs, SamplingArgs};
use crate::generate::max_new_tokens;
use crate::sampling::SamplingOptions;

/// The text behind `--prompt-tokens N`: its GPT-2 tokens, repeated and cut to N.
pub const SYNTHETIC_PROMPT_TEXT: &str = "The history of computing is a story of machines that \
    learned to do arithmetic faster than the people who built them. Early calculators used gears \
    and levers; later ones used relays, vacuum tubes and finally transistors, each generation \
    smaller, cheaper and more reliable than the last. ";

/// Where `--save` without a directory writes: `$GPT2_BENCH_RESULTS_DIR`, else `bench-runs/`
/// (ignored by git, so a user's runs never dirty the repository; the project's curated results
/// are saved into `bench-results/` by naming it).
pub fn save_dir(given: Option<&std::path::Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    match std::env::var_os("GPT2_BENCH_RESULTS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("bench-runs"),
    }
}

/// What a `compare` does with its results, from the command line (`-q` is the plan's).
pub struct Outputs {
    pub format: crate::render::Format,
    pub wide: bool,
    /// Measure the machine's read bandwidth and FMA peak beside the runs (not `--no-roofline`).
    pub roofline: bool,
    /// `--save`: the directory, resolved ([`save_dir`]).
    pub save_dir: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub max_slowdown: f64,
}

/// A `compare` as it will run: its arguments checked against each other, the model and the
/// machine, and typed once.
pub struct Compare {
    pub plan: crate::compare::Plan,
    pub outputs: Outputs,
    /// The `--model` files, opened and verified (the first is the reference file).
    pub files: Vec<WeightFile>,
    pub tokenizer: Gpt2Tokenizer,
    /// What the report says about how the run was set up.
    pub notes: Vec<String>,
}

/// Turns `compare`'s arguments into a [`Compare`].
pub fn compare(args: &CompareArgs) -> anyhow::Result<Compare> {
    // No prompt at all: llama-bench's kind of default, a short prompt's latency and a 128-token
    // prefill's throughput (each followed by --max-tokens of decode); fixed once the model's
    // context is known.
    check_prompt_args(
        default_prompt(&args.prompt, usize::MAX)
            .as_ref()
            .unwrap_or(&args.prompt),
    )?;
    for (flag, n) in [("--runs", args.runs), ("--warmup", args.warmup)] {
        if n > MAX_RUNS {
            bail!(
                "{flag} {n} is more than the {} runs a comparison may have",
                MAX_RUNS
            );
        }
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let sampling = sampling(&args.sampling)?;
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
    let options = engine_options(
        args.engine.threads.iter().max().copied(),
        args.engine.device,
        args.kv_cache,
    )?;
    let selected = select_backends(
        args.backends.as_deref(),
        None,
        args.reference.as_deref(),
        &options,
    )?;
    let files = open_models(args)?;
    let file = &files[0];
    let tokenizer = file.tokenizer()?;
    let default_lengths = default_prompt(&args.prompt, file.config().n_ctx as usize);
    let prompt_args = default_lengths.as_ref().unwrap_or(&args.prompt);
    let prompt_ids = prompt_ids(prompt_args, &tokenizer, file)?;
    let lengths = prompt_lengths(prompt_args, true, prompt_ids.len())?;
    let n_ctx = file.config().n_ctx as usize;
    let (new_tokens, cut_short) = new_tokens(&lengths, args.prompt.max_tokens, n_ctx);
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
    let plan = crate::compare::Plan {
        sweep: if sweep {
            args.engine.threads.clone()
        } else {
            Vec::new()
        },
        sweep_args: sweep_child_args(args),
        backends: selected,
        prompt: prompt_ids,
        prompt_text: args.prompt.prompt.clone(),
        max_tokens: args.prompt.max_tokens,
        lengths,
        new_tokens,
        runs: args.runs,
        warmup: args.warmup,
        options,
        sampling,
        quiet: args.quiet,
        several_models: files.len() > 1,
        reference_total_ms: Vec::new(),
    };
    let outputs = Outputs {
        format: args.format,
        wide: args.wide,
        roofline: !args.no_roofline,
        save_dir: args.save.as_ref().map(|dir| save_dir(dir.as_deref())),
        plot: args.plot.clone(),
        baseline: args.baseline.clone(),
        max_slowdown: args.max_slowdown,
    };
    Ok(Compare {
        plan,
        outputs,
        files,
        tokenizer,
        notes,
    })
}

/// The `--model` files of a comparison, opened and verified: one by default, or several files
/// of one model (same config and tokenizer) in different dtypes.
fn open_models(args: &CompareArgs) -> anyhow::Result<Vec<WeightFile>> {
    if args.models.is_empty() {
        let path = crate::model::resolve(None, args.quiet)?;
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

/// The prompt is given and something is to be generated.
pub fn check_prompt_args(prompt: &PromptArgs) -> anyhow::Result<()> {
    if prompt.prompt.is_none() && prompt.prompt_ids.is_none() && prompt.prompt_tokens.is_none() {
        bail!("give a prompt: --prompt TEXT, --prompt-ids \"15496 995\" or --prompt-tokens N");
    }
    if prompt.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    Ok(())
}

/// The prompt lengths `compare` runs when given no prompt: a short prompt (latency) and a
/// 128-token one (prefill throughput), as a llama-bench user expects pp and tg tests.
pub const DEFAULT_PROMPT_TOKENS: [usize; 2] = [16, 128];

/// `compare`'s prompt when none is given: the [`DEFAULT_PROMPT_TOKENS`] lengths that leave a
/// model of context `n_ctx` room to generate (half the context for a model too small for
/// them); `None` when a prompt is given.
pub fn default_prompt(prompt: &PromptArgs, n_ctx: usize) -> Option<PromptArgs> {
    if prompt.prompt.is_some() || prompt.prompt_ids.is_some() || prompt.prompt_tokens.is_some() {
        return None;
    }
    let mut lengths: Vec<usize> = DEFAULT_PROMPT_TOKENS
        .into_iter()
        .filter(|&n| n < n_ctx)
        .collect();
    if lengths.is_empty() {
        lengths.push((n_ctx / 2).max(1));
    }
    Some(PromptArgs {
        prompt_tokens: Some(lengths),
        ..prompt.clone()
    })
}

/// The sampler's options, checked.
pub fn sampling(args: &SamplingArgs) -> anyhow::Result<SamplingOptions> {
    let sampling = SamplingOptions {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling.validate().map_err(anyhow::Error::msg)?;
    Ok(sampling)
}

/// Tokens to generate at each prompt length (`max_tokens`, or fewer where the context ends),
/// and a note (also printed) for each length that is cut short.
pub fn new_tokens(lengths: &[usize], max_tokens: usize, n_ctx: usize) -> (Vec<usize>, Vec<String>) {
    let mut notes = Vec::new();
    let mut new_tokens = Vec::new();
    for &len in lengths {
        let n_new = max_tokens.min(max_new_tokens(len, n_ctx));
        if n_new < max_tokens {
            let note = format!(
                "the context holds {n_ctx} positions: with a {len}-token prompt, generation \
                 stops after {n_new} of the {max_tokens} requested tokens"
            );
            cli::stderr(&format!("note: {note}\n"));
            notes.push(note);
        }
        new_tokens.push(n_new);
    }
    (new_tokens, notes)
}

/// The prompt lengths to run: every `--prompt-tokens` value (a list only where `list_allowed`,
/// that is for `compare`), else the prompt's.
pub fn prompt_lengths(
    prompt: &PromptArgs,
    list_allowed: bool,
    prompt_len: usize,
) -> anyhow::Result<Vec<usize>> {
    let Some(list) = &prompt.prompt_tokens else {
        return Ok(vec![prompt_len]);
    };
    if list.len() > 1 && !list_allowed {
        bail!("--prompt-tokens takes one length with `run`; give a list only with `compare`");
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
pub const MAX_RUNS: usize = 10_000;

/// The most threads `--threads` accepts, per logical core. Beyond the cores, threads only take
/// turns; a limit keeps `--threads 10000` from starting ten thousand spinning threads.
const MAX_THREADS_PER_CORE: usize = 4;

/// Threads: `--threads`, else all logical cores; then the process settings the backends' libraries
/// read once (`EngineOptions::apply_process_settings`), before any thread exists.
pub fn engine_options(
    threads: Option<usize>,
    device: DeviceChoice,
    kv_cache: KvCache,
) -> anyhow::Result<EngineOptions> {
    let mut options = EngineOptions {
        device,
        kv_cache,
        allow_test_engines: std::env::var_os("GPT2_BENCH_TEST_ENGINES").is_some_and(|v| v == "1"),
        ..EngineOptions::default()
    };
    // GPT2_BENCH_ISA names an instruction set this CPU has (the backends read it again).
    gpt2_backends::kernels::Kernels::from_env().map_err(anyhow::Error::msg)?;
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
        let warning = crate::warning::Warning::Oversubscribed { threads: n, cores };
        cli::stderr(&format!("warning: {warning}\n"));
    }
    options.threads = n;
    // SAFETY: called from `main`'s thread before any thread that could read the environment is
    // started (no backend, pool or progress bar exists yet; the one other thread, the signal
    // cleanup of `cli::install_signal_cleanup`, only waits for a signal, removes files and
    // exits), so nothing can read the environment concurrently.
    unsafe { options.apply_process_settings() };
    Ok(options)
}

/// The backends of a `compare` (`--backends`, else all; the `--reference` first) or the one of
/// a `run` (`single`), each checked against the registry.
pub fn select_backends(
    list: Option<&[String]>,
    single: Option<&str>,
    reference: Option<&str>,
    options: &EngineOptions,
) -> anyhow::Result<Vec<String>> {
    let valid = |name: &str| {
        backend_names().contains(&name)
            || (options.allow_test_engines && gpt2_backends::testing::spec(name).is_some())
    };
    let unknown = |flag: &str, name: &str| match gpt2_backends::registry::build_command(name) {
        // The backend's own error says how to build it.
        Some(build) => anyhow::anyhow!(
            "{flag}: {}",
            gpt2_backends::EngineError::NotBuilt {
                name: name.to_string(),
                build
            }
        ),
        None => anyhow::anyhow!(
            "{flag}: unknown backend {name:?}; valid backends: {}",
            backend_names().join(", ")
        ),
    };
    if let Some(name) = single {
        if !valid(name) {
            return Err(unknown("--backend", name));
        }
        return Ok(vec![name.to_string()]);
    }
    let mut selected: Vec<String> = match list {
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
    if let Some(reference) = reference {
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

/// The prompt's token ids, checked against the model's vocabulary and context.
pub fn prompt_ids(
    args: &PromptArgs,
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

/// The arguments of a sweep's child, but for its `--model` and `--threads`: this comparison as
/// JSON on stdout. Made once from the command line, into `compare::Plan::sweep_args`.
pub fn sweep_child_args(args: &CompareArgs) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["compare".into()];
    let mut flag = |name: &str, value: String| {
        a.push(name.into());
        a.push(value.into());
    };
    let p = &args.prompt;
    if let Some(text) = &p.prompt {
        flag("--prompt", text.clone());
    }
    if let Some(ids) = &p.prompt_ids {
        flag("--prompt-ids", ids.clone());
    }
    if let Some(lengths) = &p.prompt_tokens {
        let list: Vec<String> = lengths.iter().map(usize::to_string).collect();
        flag("--prompt-tokens", list.join(","));
    }
    flag("--max-tokens", p.max_tokens.to_string());
    if let Some(backends) = &args.backends {
        flag("--backends", backends.join(","));
    }
    if let Some(reference) = &args.reference {
        flag("--reference", reference.clone());
    }
    flag("--device", args.engine.device.to_string());
    flag("--kv-cache", args.kv_cache.to_string());
    let s = &args.sampling;
    flag("--temperature", s.temperature.to_string());
    flag("--top-k", s.top_k.to_string());
    flag("--top-p", s.top_p.to_string());
    flag("--seed", s.seed.to_string());
    flag("--runs", args.runs.to_string());
    flag("--warmup", args.warmup.to_string());
    flag("--format", "json".into());
    a.push("-q".into());
    if args.no_roofline {
        a.push("--no-roofline".into());
    }
    a
}
