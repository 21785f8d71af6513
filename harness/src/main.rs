//! `gpt2-bench`: runs GPT-2 through interchangeable backends on identical greedy decoding,
//! checks that they produce the same tokens, and tabulates their speed.
//!
//! Subcommands: `compare` (every selected backend, one table; exit status 1 if any backend's
//! tokens differ from the reference's), `run` (one backend, streaming its text: the teaching
//! mode), `check` (against a golden file from transformers), `roofline`, `inspect`, `backends`.
//! The command line is defined in [`cli`], turned into typed options in [`plan`], and run in
//! [`commands`].

// Output goes through gpt2_process::cli (a closed pipe must not panic): no print macros.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod ab;
mod agreement;
mod check;
mod cli;
mod commands;
mod compare;
/// The fuzz tests' generator and mutators (shared with the other crates' fuzz tests).
#[cfg(test)]
#[path = "../../weights/tests/fuzz_support/mod.rs"]
mod fuzz_support;
mod gate;
mod generate;
mod history;
mod machine;
mod model;
mod plan;
mod record;
mod render;
mod roofline;
mod sampling;
mod save;
mod stats;
mod store;
mod teach;
mod warning;

use std::process::ExitCode;

use clap::Parser;
use gpt2_process::cli::{EXIT_INPUT, clap_exit, install_signal_cleanup, report_error, stderr};

fn main() -> ExitCode {
    // Temporary files and directories are removed on Ctrl-C and every other terminating signal.
    install_signal_cleanup();
    let args = cli::normalize_args(std::env::args_os().collect());
    if args.len() == 1 {
        // No arguments: the help, on stdout, as a successful run (nothing was asked for).
        use clap::CommandFactory;
        let help = cli::Cli::command().render_help().to_string();
        return ExitCode::from(match gpt2_process::cli::stdout(&help) {
            Ok(()) => gpt2_process::cli::EXIT_OK,
            Err(_) => EXIT_INPUT,
        });
    }
    let parsed = match cli::Cli::try_parse_from(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            return ExitCode::from(match cli::foreign_flag_message(&e, &args) {
                Some(message) => {
                    stderr(&message);
                    EXIT_INPUT
                }
                None => clap_exit(&e),
            });
        }
    };
    ExitCode::from(commands::run(parsed.command).unwrap_or_else(|e| report_error(&e)))
}
