//! Process plumbing shared by this workspace's two programs (`gpt2-export`, `gpt2-bench`): the
//! exit statuses and how errors become one line on stderr ([`cli`]), removing temporary files on
//! a terminating signal and forwarding it to children ([`cli::install_signal_cleanup`]), running
//! a child process within limits ([`child`]), and progress bars. A crate of its own so that
//! neither program's library carries the other's process concerns, and the library crates
//! (weights, backends) none at all.

pub mod child;
pub mod cli;

/// A progress bar on stderr in `template` (indicatif syntax), hidden with `quiet` or when
/// stderr is not a terminal (piped, redirected, CI).
pub fn progress_bar(quiet: bool, template: &str, total: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
