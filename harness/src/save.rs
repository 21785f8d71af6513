//! `--save [DIR]`: the JSON report as `DIR/<date>-<commit>-<model>.json` (never overwriting an
//! earlier one), every row added to the results store `DIR/results.sqlite` ([`crate::store`],
//! what `history` and `report` read), and one Markdown row per backend appended to
//! `DIR/history.md`, so a directory of runs doubles as a readable log. Files are written to a
//! temporary file and renamed, and the store in one transaction, so an interrupted run leaves
//! no half-written report.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::record::Report;

/// Writes `bytes` to `path` atomically (see `gpt2_weights::write::write_atomically`): never
/// over a special file, a symbolic link or one of `inputs`.
pub fn write_atomically(path: &Path, bytes: &[u8], inputs: &[&Path]) -> anyhow::Result<()> {
    gpt2_weights::write::write_atomically(path, bytes, inputs)
        .with_context(|| format!("writing {}", path.display()))
}

/// A file name part: letters, digits, `-`, `_` and `.` kept, anything else `-`.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

const HISTORY_HEADER: &str = "\
| date (UTC) | commit | model | backend | threads | prompt tok | new tok | runs | prefill tok/s | decode tok/s | p50 ms | tokens match | report |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
";

/// The file whose lock a save holds, in the results directory.
const LOCK_FILE: &str = ".gpt2-bench-save.lock";

/// What `--save` wrote.
pub struct SavedFiles {
    pub json: PathBuf,
    pub store: PathBuf,
    pub history: PathBuf,
}

/// Saves the report: the JSON file and the history row, then the store (so that a store it
/// cannot use, refused with its reason, loses nothing: the error says how to add the JSON
/// file later).
pub fn save(report: &Report, dir: &Path, inputs: &[&Path]) -> anyhow::Result<SavedFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("--save: creating {}", dir.display()))?;
    // Runs saving into one directory at once take turns (a save takes milliseconds), so that
    // each picks its own JSON name and none of them loses another's history rows. The lock is
    // released when the file is closed, also when the process dies.
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("--save: opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("--save: locking {}", lock_path.display()))?;
    let commit: String = report.machine.git_commit.chars().take(18).collect();
    let stem = format!(
        "{}-{}-{}",
        &report.date_utc[..10.min(report.date_utc.len())],
        slug(&commit),
        slug(&report.model.name)
    );
    let json = serde_json::to_string_pretty(report).context("serialising the report")?;
    // Never overwrite an earlier run: add -2, -3, ... on a clash.
    let mut path = dir.join(format!("{stem}.json"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}.json"));
        n += 1;
    }
    write_atomically(&path, json.as_bytes(), inputs)?;

    let history = dir.join("history.md");
    let limit = gpt2_weights::input::MAX_TEXT_FILE_BYTES;
    let mut text = match gpt2_weights::input::read_text_limited(&history, limit) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!(
                "# gpt2-bench history\n\nOne row per backend per saved run (`--save`).\n\n{HISTORY_HEADER}"
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", history.display())),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let file_name = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    for r in &report.results {
        let sd = |s: &crate::stats::Summary| format!("{:.2} ± {:.2}", s.mean, s.stddev);
        // The model with this row's weight file: dtype and bytes read per token.
        let model = format!(
            "{} ({}, {:.1} MB/token)",
            report.model.name,
            r.dtype,
            r.weight_bytes_per_token as f64 / 1e6
        );
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | [{file_name}]({file_name}) |\n",
            report.date_utc,
            report.machine.git_commit,
            model,
            r.backend,
            r.threads,
            r.prompt_tokens,
            r.new_tokens,
            r.runs,
            sd(&r.prefill_tok_per_s),
            r.decode_tok_per_s.as_ref().map_or_else(|| "-".into(), sd),
            r.decode_latency.map_or_else(|| "-".into(), |l| format!("{:.1}", l.p50_ms)),
            if r.tokens_match {
                "yes"
            } else if r.passes() {
                "different rule"
            } else {
                "NO"
            },
        ));
    }
    write_atomically(&history, text.as_bytes(), inputs)?;
    let store_path = crate::store::path_in(dir);
    crate::store::Store::open_or_create(&store_path)
        .and_then(|mut store| store.save(report, "compare --save"))
        .with_context(|| {
            format!(
                "--save: the run is saved as {}, but not in the results store (add it later with \
                 `gpt2-bench history --import {}`)",
                path.display(),
                dir.display()
            )
        })?;
    Ok(SavedFiles {
        json: path,
        store: store_path,
        history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe_file_names() {
        assert_eq!(slug("synthetic-gpt2"), "synthetic-gpt2");
        assert_eq!(slug("a/b c:d"), "a-b-c-d");
        assert_eq!(slug("abc123-dirty"), "abc123-dirty");
    }

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.json");
        write_atomically(&p, b"first version, long", &[]).unwrap();
        write_atomically(&p, b"second", &[]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        #[cfg(unix)]
        {
            // Readable like any file the user creates (umask applies), not tempfile's 0600.
            use std::os::unix::fs::PermissionsExt;
            let ordinary = tmp.path().join("ordinary");
            std::fs::File::create(&ordinary).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&p), mode(&ordinary));
        }
    }
}
