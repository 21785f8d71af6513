//! What `gpt2-bench` and `gpt2-export` share as command-line programs: exit statuses, writing to
//! stdout and stderr, error lines, and cleanup on terminating signals.
//!
//! Both binaries route every line they print through [`stdout`] and [`stderr`] (clippy's
//! `print_stdout` and `print_stderr` lints forbid `println!` and `eprintln!` in them), so a
//! closed pipe on either stream is handled once, here: what would have been printed is dropped,
//! the run goes on with everything else it was asked to do (files, checks, the gate), and it
//! exits with the status it would have had. `println!` would panic instead ("failed printing to
//! stdout", exit 101).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Everything worked (and, for `gpt2-bench`, every backend matched).
pub const EXIT_OK: u8 = 0;
/// `gpt2-bench`: a backend's tokens differ from the reference's, or from a golden file.
pub const EXIT_MISMATCH: u8 = 1;
/// `gpt2-bench`: a performance regression beyond `--max-slowdown` against `--baseline`.
pub const EXIT_REGRESSION: u8 = 2;
/// Usage or input error (a bad flag, file or model), in both binaries.
pub const EXIT_INPUT: u8 = 3;

/// The exit-status table, as both binaries' `--help` shows it.
pub const EXIT_STATUS_HELP: &str = "\
Exit status: 0 success; 1 a backend's tokens differ from the reference's (or, for `check`, from
the golden file); 2 a performance regression beyond --max-slowdown against --baseline; 3 usage
or input error; 128+N ended by signal N (temporary files removed first). A closed stdout or
stderr is not an error: what would have been printed there is dropped.";

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes. A closed pipe is not an error: this and later output
/// is dropped. Any other failure (a full disk behind a redirect) is returned.
pub fn stdout(text: &str) -> std::io::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Writes `text` to stderr, ignoring failure: diagnostics that cannot be shown must not stop
/// the work they describe.
pub fn stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
}

/// Longest error line printed; a message longer than this is cut (its start names the file).
const MAX_ERROR_CHARS: usize = 2000;

/// An error and its causes as one line: each cause appended only if the text so far does not
/// already say it (a `"{path}: {source}"` message followed by its source would repeat it), every
/// control character escaped (so nothing from a file can break the line or reach the terminal as
/// an escape sequence), and at most [`MAX_ERROR_CHARS`] characters.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    gpt2_weights::input::printable_up_to(&line, MAX_ERROR_CHARS)
}

/// Prints `error: ...` (one line) on stderr and returns [`EXIT_INPUT`].
pub fn report_error(error: &anyhow::Error) -> u8 {
    stderr(&format!("error: {}\n", error_line(error)));
    EXIT_INPUT
}

/// Maps a clap parse failure to this project's statuses: help and version go to stdout with
/// status 0, usage errors to stderr with [`EXIT_INPUT`] (clap's own default, 2, means a
/// regression in `gpt2-bench`).
pub fn clap_exit(e: &clap::Error) -> u8 {
    let rendered = e.render().to_string();
    if e.use_stderr() {
        stderr(&format!("error: {}\n", clap_error_line(&rendered)));
        EXIT_INPUT
    } else {
        let _ = stdout(&rendered);
        EXIT_OK
    }
}

/// A number of seconds as a person writes it (`30`, `2.5`): positive, finite and at most
/// `max_s`; `None` otherwise. Shared by every timeout a flag or variable sets.
pub fn parse_seconds(text: &str, max_s: f64) -> Option<std::time::Duration> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= max_s => {
            Some(std::time::Duration::from_secs_f64(s))
        }
        _ => None,
    }
}

/// clap's rendering of a usage error (an `error:` line, maybe a `tip:`, a usage block and a
/// pointer to `--help`, 3-6 lines) as one line, like every other error of both programs: the
/// error, its tips, and which `--help` to read (the subcommand's, taken from the usage line).
pub fn clap_error_line(rendered: &str) -> String {
    let mut error = String::new();
    // The indented lines right under the error (the missing arguments, the possible values,
    // the conflicting flags): part of it.
    let mut details = Vec::new();
    let mut in_error = false;
    let mut tips = Vec::new();
    let mut help_for = None;
    for raw in rendered.lines() {
        let line = raw.trim();
        if line.is_empty() {
            in_error = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix("error:") {
            error = rest.trim().to_string();
            in_error = true;
        } else if let Some(rest) = line.strip_prefix("tip:") {
            tips.push(rest.trim().to_string());
        } else if in_error {
            details.push(line.to_string());
        } else if let Some(rest) = line.strip_prefix("Usage:") {
            // `gpt2-bench compare [OPTIONS]` -> `gpt2-bench compare`
            let words: Vec<&str> = rest
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            help_for = Some(words.join(" "));
        }
    }
    if !details.is_empty() {
        error.push(' ');
        error.push_str(&details.join(", "));
    }
    if error.is_empty() {
        error = rendered.lines().next().unwrap_or("").trim().to_string();
    }
    let mut line = error;
    for tip in tips {
        line.push_str(&format!(" ({tip})"));
    }
    match help_for.filter(|h| !h.is_empty()) {
        Some(command) => line.push_str(&format!("; see `{command} --help`")),
        None => line.push_str("; see --help"),
    }
    gpt2_weights::input::printable_up_to(&line, MAX_ERROR_CHARS)
}

/// The terminating signals a process can catch: on any of them, the signal is forwarded to every
/// running child ([`crate::child::forward_signal`]), which are waited for, then every registered
/// temporary file and directory (`gpt2_weights::write::CleanupGuard`) is removed before the
/// process exits with status 128 + the signal's number. SIGPIPE is not among them (Rust ignores it, and
/// a closed pipe is handled by [`stdout`] and [`stderr`]); SIGKILL and SIGSTOP cannot be caught,
/// and faults (SIGSEGV, SIGBUS, ...) are not cleanup points.
#[cfg(unix)]
pub const CLEANUP_SIGNALS: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    libc::SIGPOLL,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    libc::SIGPWR,
];

/// Installs the cleanup described at [`CLEANUP_SIGNALS`] (once; later calls do nothing). It
/// starts one thread, which waits for a signal and never reads the environment.
pub fn install_signal_cleanup() {
    #[cfg(unix)]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let Ok(mut signals) = signal_hook::iterator::Signals::new(CLEANUP_SIGNALS) else {
                return;
            };
            std::thread::spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    // Children first: they remove their own temporary files, then this
                    // process removes its own.
                    // A second signal means "now": the children are killed, not waited for.
                    crate::child::forward_signal(signal, &mut || {
                        signals.pending().next().is_some()
                    });
                    gpt2_weights::write::remove_registered();
                    std::process::exit(128 + signal);
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_say_each_cause_once_on_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("nope.bin: no such file");
        assert_eq!(error_line(&e), "nope.bin: no such file");
        let e = anyhow::anyhow!("root cause").context("reading x");
        assert_eq!(error_line(&e), "reading x: root cause");
        let e = anyhow::anyhow!("tensor a\n\u{1b}[2J\0b");
        let line = error_line(&e);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert_eq!(line, "tensor a\\n\\u{1b}[2J\\0b");
        let e = anyhow::anyhow!("{}", "x".repeat(5000));
        assert_eq!(error_line(&e).chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn clap_usage_errors_become_one_line_naming_the_help_to_read() {
        let rendered = "error: unexpected argument '--bogus' found\n\n  tip: a similar argument \
                        exists: '--backends'\n\nUsage: gpt2-bench compare [OPTIONS]\n\nFor more \
                        information, try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered),
            "unexpected argument '--bogus' found (a similar argument exists: '--backends'); see \
             `gpt2-bench compare --help`"
        );
        let rendered = "error: invalid value 'bf16' for '--kv-cache <f32|f16|auto>': use f32\n\n\
                        For more information, try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered),
            "invalid value 'bf16' for '--kv-cache <f32|f16|auto>': use f32; see --help"
        );
        let rendered = "error: invalid value 'gpt3' for '--synthetic <SIZE>'\n  [possible values: \
                        tiny, gpt2]\n\n  tip: a similar value exists: 'gpt2'\n\nFor more \
                        information, try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered),
            "invalid value 'gpt3' for '--synthetic <SIZE>' [possible values: tiny, gpt2] (a \
             similar value exists: 'gpt2'); see --help"
        );
        let rendered = "error: the following required arguments were not provided:\n  \
                        --baseline-bin <FILE>\n  --other <X>\n\nUsage: gpt2-bench ab \
                        --baseline-bin <FILE> [-- <COMPARE_ARGS>...]\n\nFor more information, \
                        try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered),
            "the following required arguments were not provided: --baseline-bin <FILE>, \
             --other <X>; see `gpt2-bench ab --help`"
        );
    }
}
