//! Records what built the binary (rustc version, git commit), for the metadata every benchmark
//! result carries.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GPT2_BENCH_RUSTC_VERSION={version}");

    let commit =
        run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    let commit = if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=GPT2_BENCH_GIT_COMMIT={commit}");
    // Rebuild the metadata when the checkout moves (HEAD, or the branch it points to, which a
    // commit updates) or its tracked files change (index).
    let mut watched = vec!["../.git/HEAD".to_string(), "../.git/index".to_string()];
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD")
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        watched.push(format!("../.git/{branch}"));
        watched.push("../.git/packed-refs".to_string());
    }
    for path in watched {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
