//! `gpt2-export`: write gpt2-bench weight files, and inspect them. See the crate docs.

// Output goes through gpt2_export::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gpt2_export::{SyntheticSize, cli, export_from, inspect, synthetic};
use gpt2_weights::{Dtype, WeightFile};

#[derive(Parser)]
#[command(
    name = "gpt2-export",
    version,
    about = "Write GPT-2 weights in the gpt2-bench format, from Hugging Face or synthetic.",
    after_help = "Examples:\n  \
      gpt2-export --from openai-community/gpt2          # download from the hub -> weights/gpt2.bin\n  \
      gpt2-export --from ./my-gpt2-checkpoint --out weights/mine.bin\n  \
      gpt2-export --synthetic gpt2 --seed 0             # offline, random weights, real tokenizer\n  \
      gpt2-export --from weights/gpt2.bin --dtype q8_0  # convert -> weights/gpt2-q8_0.bin\n  \
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
    /// Print a weight file's config, parameter count, size and source, and verify its checksum.
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
    /// HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE and HF_HUB_DOWNLOAD_TIMEOUT); or a
    /// gpt2-bench weight file, to convert to --dtype.
    #[arg(long, value_name = "DIR_REPO_OR_FILE", conflicts_with = "synthetic")]
    from: Option<String>,
    /// Element type of the matrices (linear weights and token embedding; norms, biases and
    /// position embeddings stay f32): f32, f16, bf16 or q8_0 (llama.cpp's 8-bit blocks).
    #[arg(long, default_value = "f32", value_parser = parse_dtype, value_name = "DTYPE")]
    dtype: Dtype,
    /// Random weights in the shapes of this GPT-2 size, with GPT-2's real tokenizer.
    #[arg(long, value_enum, value_name = "SIZE")]
    synthetic: Option<SyntheticSize>,
    /// Seed for --synthetic; the same seed gives a byte-identical file.
    #[arg(long, default_value_t = 0, requires = "synthetic")]
    seed: u64,
    /// Hub revision (branch, tag or commit) for --from REPO.
    #[arg(long, requires = "from")]
    revision: Option<String>,
    /// Output file [default: weights/<name>.bin, or weights/synthetic-<size>-seed<N>.bin].
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
        let f = WeightFile::open(&file)?;
        let (text, ok) = inspect::report(&f, tensors);
        cli::stdout(&text).context("writing to stdout")?;
        return Ok(if ok { cli::EXIT_OK } else { cli::EXIT_INPUT });
    }
    let args = parsed.export;
    let bar = gpt2_export::tensor_progress(args.quiet, "");
    let on_tensor = bar.on_tensor();
    let start = Instant::now();
    let (written, what) = if let Some(size) = args.synthetic {
        let out = args
            .out
            .unwrap_or_else(|| size.default_path(args.seed, args.dtype));
        ensure_default_dir(&out)?;
        bar.0.set_message(format!("synthetic {}", size.name()));
        let p = synthetic::export_synthetic(size, args.seed, args.dtype, &out, &on_tensor)?;
        (p, format!("synthetic {} (seed {})", size.name(), args.seed))
    } else if let Some(source) = args.from {
        let out = args
            .out
            .unwrap_or_else(|| gpt2_export::default_out_for_source(&source, args.dtype));
        ensure_default_dir(&out)?;
        bar.0.set_message(source.clone());
        let p = export_from(
            &source,
            args.revision.as_deref(),
            args.dtype,
            &out,
            args.quiet,
            &on_tensor,
        )?;
        (p, source)
    } else {
        anyhow::bail!(
            "nothing to do: give --from DIR_OR_REPO, --synthetic SIZE, or `inspect FILE` (see --help)"
        );
    };
    bar.0.finish_and_clear();
    let f = WeightFile::open(&written).context("re-opening the file just written")?;
    let dtype = f
        .gpt2()
        .context("re-opening the file just written")?
        .dtype_label();
    cli::stdout(&format!(
        "wrote {} from {what}: {:.1}M parameters in {dtype}, {:.1} MB, in {:.1} s\n",
        written.display(),
        f.config().parameter_count() as f64 / 1e6,
        f.file_len() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    ))
    .context("writing to stdout")?;
    Ok(cli::EXIT_OK)
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
