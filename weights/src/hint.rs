//! Text for people in messages: commands spelled so that they work from where the user is, and
//! sizes.
//!
//! An error that says "create one with `gpt2-export --synthetic gpt2`" is no help to a user who
//! built the project with `cargo run` and has no `gpt2-export` on `PATH`. [`export_command`]
//! finds how `gpt2-export` can be run right now.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How to run `gpt2-export` from here: `gpt2-export` when it is on `PATH`; its full path when
/// it sits beside the running program (both binaries in `target/release/`); else
/// `cargo run --release -p gpt2-export --`, which builds and runs it from the repository.
pub fn export_command() -> &'static str {
    static COMMAND: OnceLock<String> = OnceLock::new();
    COMMAND.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let on_path = std::env::split_paths(&path).any(|dir| is_program(&dir.join(EXPORT)));
        if on_path {
            return EXPORT.to_string();
        }
        let beside: Option<PathBuf> = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(EXPORT)))
            .filter(|p| is_program(p));
        match beside {
            Some(p) => crate::input::printable(&p.display().to_string()),
            None => "cargo run --release -p gpt2-export --".to_string(),
        }
    })
}

const EXPORT: &str = "gpt2-export";

fn is_program(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// Formats bytes for people: `1.10 TB`, `512.0 MB`, `12.3 KB`, `827 B`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e12 {
        format!("{:.2} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
