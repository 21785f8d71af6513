//! `gpt2-export`: write gpt2-bench weight files, and inspect them. See the crate docs.

// Output goes through gpt2_process::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gpt2_export::{SyntheticSize, export_from, gguf, inspect, synthetic};
use gpt2_process::cli;
use gpt2_weights::{Dtype, WeightFile};

#[derive(Parser)]
#[command(
    name = "gpt2-export",
    version,
    about = "Write GPT-2 weights in the gpt2-bench format (or as GGUF), from Hugging Face, GGUF \
             or synthetic.",
    after_help = "Examples:\n  \
      gpt2-export --from openai-community/gpt2          # download from the hub -> weights/gpt2.bin\n  \
      gpt2-export --from ./my-gpt2-checkpoint --out weights/mine.bin\n  \
      gpt2-export --synthetic gpt2 --seed 0             # offline, random weights, real tokenizer\n  \
      gpt2-export --from weights/gpt2.bin --dtype q8_0  # convert -> weights/gpt2-q8_0.bin\n  \
      gpt2-export --from gpt2-q8_0.gguf                 # llama.cpp's file -> weights/gpt2-q8_0.bin\n  \
      gpt2-export --from weights/gpt2-q8_0.bin --out gpt2-q8_0.gguf   # for llama.cpp\n  \
      gpt2-export inspect weights/gpt2.bin\n\n\
      Exit status: 0 success; 3 usage or input error; 128+N ended by signal N (the partial\n\
      file is removed first). A closed stdout or stderr is not an error: what would have been\n\
      printed there is dropped.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    export: ExportArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print a weight file's config, parameter count, size and source, and verify its checksum;
    /// or a GGUF's keys and tensors, and whether it can be imported.
    Inspect {
        /// The weight file.
        file: PathBuf,
        /// Also list every tensor with its shape and offset.
        #[arg(long)]
        tensors: bool,
    },
}

#[derive(Args)]
struct ExportArgs {
    /// A Hugging Face GPT-2 checkpoint: a local directory, or a hub repo id such as
    /// openai-community/gpt2 (downloaded into the Hugging Face cache; honours HF_HOME,
    /// HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE and HF_HUB_DOWNLOAD_TIMEOUT; a
    /// download slower than GPT2_BENCH_HUB_MIN_BYTES_PER_S, default 1024, over
    /// GPT2_BENCH_HUB_SLOW_SECONDS, default 30, is abandoned); a gpt2-bench weight file (to convert to --dtype, or to write as GGUF); or a GPT-2 GGUF file
    /// (F32, F16, BF16 and Q8_0 tensors, imported bit-exact).
    #[arg(long, value_name = "DIR_REPO_OR_FILE", conflicts_with = "synthetic")]
    from: Option<String>,
    /// Element type of the matrices (linear weights and token embedding; norms, biases and
    /// position embeddings stay f32): f32, f16, bf16 or q8_0 (llama.cpp's 8-bit blocks)
    /// [default: f32 for a checkpoint or --synthetic; a file's own types for --from FILE].
    #[arg(long, value_parser = parse_dtype, value_name = "DTYPE")]
    dtype: Option<Dtype>,
    /// Random weights in the shapes of this GPT-2 size, with GPT-2's real tokenizer.
    #[arg(long, value_enum, value_name = "SIZE")]
    synthetic: Option<SyntheticSize>,
    /// Seed for --synthetic; the same seed gives a byte-identical file.
    #[arg(long, default_value_t = 0, requires = "synthetic")]
    seed: u64,
    /// Hub revision (branch, tag or commit) for --from REPO.
    #[arg(long, requires = "from")]
    revision: Option<String>,
    /// Output file [default: weights/<name>.bin, or weights/synthetic-<size>-seed<N>.bin]. A
    /// name ending in .gguf writes llama.cpp's GGUF instead of the gpt2-bench format.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    cli::install_signal_cleanup();
    let parsed = match Cli::try_parse() {
        Ok(parsed) => parsed,
        Err(e) => return ExitCode::from(cli::clap_exit(&e)),
    };
    ExitCode::from(run(parsed).unwrap_or_else(|e| cli::report_error(&e)))
}

fn run(parsed: Cli) -> anyhow::Result<u8> {
    if let Some(Command::Inspect { file, tensors }) = parsed.command {
        if gpt2_export::is_gguf_file(&file) {
            let (text, ok) = gguf::import::report(&file, tensors)?;
            cli::stdout(&text).context("writing to stdout")?;
            return Ok(if ok { cli::EXIT_OK } else { cli::EXIT_INPUT });
        }
        let f = WeightFile::open(&file)?;
        let (text, ok) = inspect::report(&f, tensors);
        cli::stdout(&text).context("writing to stdout")?;
        return Ok(if ok { cli::EXIT_OK } else { cli::EXIT_INPUT });
    }
    let args = parsed.export;
    let bar = gpt2_export::tensor_progress(args.quiet, "");
    let on_tensor = bar.on_tensor();
    let start = Instant::now();
    let source = match (args.synthetic, &args.from) {
        (Some(size), _) => Source::Synthetic(size, args.seed),
        (None, Some(from)) => Source::From(from.clone()),
        (None, None) => anyhow::bail!(
            "nothing to do: give --from DIR_REPO_OR_FILE, --synthetic SIZE, or `inspect FILE` \
             (see --help)"
        ),
    };
    let out = match (&args.out, &source) {
        (Some(out), _) => out.clone(),
        (None, Source::Synthetic(size, seed)) => {
            size.default_path(*seed, args.dtype.unwrap_or(Dtype::F32))
        }
        (None, Source::From(from)) => gpt2_export::default_out_for_source(from, args.dtype),
    };
    ensure_default_dir(&out)?;
    if let Source::From(from) = &source {
        // Every writer checks this for its own inputs; a GGUF written through an intermediate
        // file would otherwise not know what that file was made from.
        let from = std::path::Path::new(from);
        if from.is_file() {
            gpt2_weights::write::check_output(&out, &[from])
                .map_err(|message| anyhow::anyhow!("{}: {message}", out.display()))?;
        }
    }
    let what = match &source {
        Source::Synthetic(size, seed) => format!("synthetic {} (seed {seed})", size.name()),
        Source::From(from) => from.clone(),
    };
    bar.0.set_message(what.clone());
    // Writes the gpt2-bench file for `source` at `dest`.
    let export = |dest: &std::path::Path| match &source {
        Source::Synthetic(size, seed) => synthetic::export_synthetic(
            *size,
            *seed,
            args.dtype.unwrap_or(Dtype::F32),
            dest,
            &on_tensor,
        ),
        Source::From(from) => export_from(
            from,
            args.revision.as_deref(),
            args.dtype,
            dest,
            args.quiet,
            &on_tensor,
        ),
    };
    let summary = if gpt2_export::wants_gguf(&out) {
        let from_bin = match &source {
            Source::From(from) if args.dtype.is_none() => {
                let p = std::path::Path::new(from);
                (p.is_file() && !gpt2_export::is_gguf_file(p)).then(|| p.to_path_buf())
            }
            _ => None,
        };
        let (written, model) = match from_bin {
            // A gpt2-bench file keeping its dtypes: written as GGUF directly.
            Some(bin) => {
                let file = WeightFile::open(&bin)?;
                let written = gguf::export::write_gguf(&file, &out, &on_tensor)?;
                (written, describe(&file)?)
            }
            None => {
                let mut model = String::new();
                let written = gpt2_export::export_as_gguf(
                    &out,
                    |dest| {
                        let p = export(dest)?;
                        model = describe(&WeightFile::open(&p)?)?;
                        Ok(p)
                    },
                    &on_tensor,
                )?;
                (written, model)
            }
        };
        let len = std::fs::metadata(&written).map(|m| m.len()).unwrap_or(0);
        format!(
            "wrote {} (GGUF) from {what}: {model}, {:.1} MB",
            written.display(),
            len as f64 / 1e6
        )
    } else {
        let written = export(&out)?;
        let f = WeightFile::open(&written).context("re-opening the file just written")?;
        format!(
            "wrote {} from {what}: {}, {:.1} MB",
            written.display(),
            describe(&f)?,
            f.file_len() as f64 / 1e6
        )
    };
    bar.0.finish_and_clear();
    cli::stdout(&format!(
        "{summary}, in {:.1} s\n",
        start.elapsed().as_secs_f64()
    ))
    .context("writing to stdout")?;
    Ok(cli::EXIT_OK)
}

/// What an export reads from.
enum Source {
    Synthetic(SyntheticSize, u64),
    /// A directory, hub repo id, gpt2-bench file or GGUF file.
    From(String),
}

/// `124.4M parameters in q8_0+f16` (`22,560 parameters in f32` below a million).
fn describe(f: &WeightFile) -> Result<String, gpt2_export::ExportError> {
    let n = f.config().parameter_count();
    let count = if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else {
        n.to_string()
    };
    Ok(format!("{count} parameters in {}", f.gpt2()?.dtype_label()))
}

/// Creates `weights/` (or `$GPT2_BENCH_WEIGHTS_DIR`) when the output goes to the default place;
/// any other missing directory is an error from the writer, naming it.
fn ensure_default_dir(out: &std::path::Path) -> anyhow::Result<()> {
    let default_dir = gpt2_export::weights_dir();
    if out.parent() == Some(default_dir.as_path()) && !default_dir.exists() {
        std::fs::create_dir_all(&default_dir)
            .with_context(|| format!("creating {}", default_dir.display()))?;
    }
    Ok(())
}

/// `--dtype`: one of the names [`Dtype::name`] gives.
fn parse_dtype(name: &str) -> Result<Dtype, String> {
    Dtype::parse(name).ok_or_else(|| {
        let names: Vec<_> = Dtype::ALL.iter().map(|d| d.name()).collect();
        format!("unknown dtype {name:?}; choose one of {}", names.join(", "))
    })
}
