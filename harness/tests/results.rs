//! Results over time, through the real binary: `compare --save` into the SQLite store,
//! `history` (its figures, its marks, `--import`, `--format sql`), `compare --format sql`,
//! `report --html`; the store under concurrent writers, an interrupted write and files it must
//! refuse; and every plot of a report drawn in headless Chromium (when Chromium is installed:
//! `.ci/run` installs it and sets `GPT2_BENCH_REQUIRE_CHROMIUM=1`, so that CI cannot skip it).
#![cfg(unix)]

#[path = "../../export/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gpt2_export::SyntheticSize;
use gpt2_weights::Dtype;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gpt2-bench");

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("GPT2_BENCH_TEST_LOAD", "0")
        .env_remove("GPT2_BENCH_RESULTS_DIR")
        .env_remove("GPT2_BENCH_ISA")
        .env_remove("GPT2_BENCH_FORCE_SCALAR");
    cmd
}

fn bench(args: &[&str]) -> Output {
    output_within(&mut command(args), Duration::from_secs(300))
}

fn ok(args: &[&str]) -> Output {
    let o = bench(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tiny model in `dtype`, written once per test binary.
fn tiny(dtype: Dtype) -> &'static str {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let p = dir.path().join(format!("tiny-{dtype}.bin"));
    static WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = WRITE.lock().unwrap();
    if !p.exists() {
        gpt2_export::synthetic::export_synthetic(SyntheticSize::Tiny, 0, dtype, &p, &|_, _| {})
            .unwrap();
    }
    Box::leak(p.to_string_lossy().into_owned().into_boxed_str())
}

/// A saved run on the tiny model: `compare --save DIR` with `extra`; returns its JSON report.
fn save_run(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "compare",
        "--max-tokens",
        "6",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--no-roofline",
        "-q",
        "--format",
        "json",
        "--save",
        s(dir),
    ];
    if !extra.contains(&"--prompt-tokens") {
        args.extend(["--prompt", "Hello there"]);
    }
    if !extra.contains(&"--model") {
        args.extend(["--model", tiny(Dtype::F32)]);
    }
    args.extend(extra);
    serde_json::from_slice(&ok(&args).stdout).unwrap()
}

/// Starts every command at once and waits for all; each must exit 0.
fn all_at_once(commands: Vec<Command>) {
    let children: Vec<std::process::Child> = commands
        .into_iter()
        .map(|mut c| {
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
}

/// The quickest saved run: naive alone, 2 tokens, one run, into `dir`.
fn quick_save(dir: &Path) -> [&str; 17] {
    [
        "compare",
        "--model",
        tiny(Dtype::F32),
        "--prompt",
        "Hi",
        "--max-tokens",
        "2",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--no-roofline",
        "-q",
        "--backends",
        "naive",
        "--save",
        s(dir),
    ]
}

fn store_of(dir: &Path) -> PathBuf {
    dir.join("results.sqlite")
}

fn count(store: &Path, table: &str) -> i64 {
    let db = rusqlite::Connection::open(store).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// A saved report of the tiny model (made once), as JSON, to be copied and edited.
fn a_report() -> &'static serde_json::Value {
    static REPORT: OnceLock<serde_json::Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        save_run(tmp.path(), &["--backends", "naive,simd"])
    })
}

/// `report` with another commit, date and timings scaled by `slower` (1.5: every run 1.5x
/// slower), written as `dir/NAME.json`.
fn edited_report(dir: &Path, name: &str, commit: &str, date: &str, slower: f64) -> PathBuf {
    let mut r = a_report().clone();
    r["machine"]["git_commit"] = commit.into();
    r["date_utc"] = date.into();
    let scale = |v: &mut serde_json::Value| {
        *v = serde_json::json!((v.as_u64().unwrap() as f64 * slower).round() as u64);
    };
    for row in r["results"].as_array_mut().unwrap() {
        for ns in row["samples"]["prefill_ns"].as_array_mut().unwrap() {
            scale(ns);
        }
        for run in row["samples"]["decode_step_ns"].as_array_mut().unwrap() {
            for ns in run.as_array_mut().unwrap() {
                scale(ns);
            }
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
    path
}

#[test]
fn saved_runs_land_in_the_store_and_history_gives_their_own_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs");
    let reports = [
        save_run(&dir, &["--backends", "naive,simd"]),
        save_run(&dir, &["--backends", "naive,simd"]),
    ];
    assert_eq!(count(&store_of(&dir), "runs"), 2);
    assert_eq!(count(&store_of(&dir), "results"), 4);
    let o = ok(&["history", "--results", s(&dir), "--format", "json"]);
    let history: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let series = history["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "naive and simd: {history}");
    for one in series {
        let backend = one["backend"].as_str().unwrap();
        let commits = one["commits"].as_array().unwrap();
        assert_eq!(commits.len(), 1, "both runs are of this build's commit");
        assert_eq!(commits[0]["saved_runs"], 2);
        // The commit's prefill mean is the mean of every measured run of both saved runs.
        let rates: Vec<f64> = reports
            .iter()
            .flat_map(|r| {
                let row = r["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|row| row["backend"] == backend)
                    .unwrap();
                let tokens = row["prompt_tokens"].as_f64().unwrap();
                row["samples"]["prefill_ns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |ns| tokens / (ns.as_f64().unwrap() * 1e-9))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rates.len(), 6);
        let mean = rates.iter().sum::<f64>() / 6.0;
        let stored = commits[0]["prefill_tok_per_s"]["mean"].as_f64().unwrap();
        assert!((stored - mean).abs() < 1e-9 * mean, "{stored} vs {mean}");
    }
    // The table names this machine and each backend.
    let table = stdout(&ok(&["history", "--results", s(&dir)]));
    assert!(table.contains("naive") && table.contains("simd"), "{table}");
    // Importing the directory the runs were saved in adds nothing: the store has them.
    let o = ok(&["history", "--results", s(&dir), "--import", s(&dir)]);
    assert!(
        stderr(&o).contains("imported 0 run(s)") && stderr(&o).contains("2 already there"),
        "{}",
        stderr(&o)
    );
    assert_eq!(count(&store_of(&dir), "runs"), 2);
}

#[test]
fn history_marks_a_change_beyond_the_noise_and_not_within_it() {
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    edited_report(&reports, "a", "aaaaaaa", "2026-01-01T00:00:00Z", 1.0);
    // Every run 1.5x slower: beyond any noise.
    edited_report(&reports, "b", "bbbbbbb", "2026-01-02T00:00:00Z", 1.5);
    // 2% faster than b: within the 10% threshold.
    edited_report(&reports, "c", "ccccccc", "2026-01-03T00:00:00Z", 1.5 / 1.02);
    let store = tmp.path().join("store");
    let o = ok(&[
        "history",
        "--results",
        s(&store),
        "--import",
        s(&reports),
        "--machine",
        "all",
        "--format",
        "json",
    ]);
    assert!(stderr(&o).contains("imported 3 run(s)"), "{}", stderr(&o));
    let history: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for series in history["series"].as_array().unwrap() {
        let commits: Vec<&str> = series["commits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["git_commit"].as_str().unwrap())
            .collect();
        assert_eq!(
            commits,
            ["aaaaaaa", "bbbbbbb", "ccccccc"],
            "in the order first saved"
        );
        let c = &series["commits"];
        for phase in ["prefill_change", "decode_change"] {
            assert!(c[0][phase].is_null());
            assert_eq!(c[1][phase]["verdict"], "slower", "{series}");
            let ratio = c[1][phase]["median_ratio"].as_f64().unwrap();
            assert!((ratio - 1.0 / 1.5).abs() < 0.01, "{ratio}");
            assert_eq!(c[2][phase]["verdict"], "within noise", "{series}");
        }
    }
    let table = stdout(&ok(&[
        "history",
        "--results",
        s(&store),
        "--machine",
        "all",
    ]));
    assert!(table.contains("SLOWER"), "{table}");
    // CSV, Markdown and JSON Lines carry the same rows: 2 series x 3 commits.
    let rows = |format: &str| {
        stdout(&ok(&[
            "history",
            "--results",
            s(&store),
            "--machine",
            "all",
            "--format",
            format,
        ]))
        .lines()
        .count()
    };
    assert_eq!(rows("csv"), 1 + 6);
    assert_eq!(rows("jsonl"), 6);
    assert!(rows("md") >= 2 + 6);
    // --machine: a part of the recorded machine selects it; an unknown one lists what there is.
    let machine = a_report()["machine"]["cpu"].as_str().unwrap();
    let first_word = machine.split_whitespace().next().unwrap();
    ok(&["history", "--results", s(&store), "--machine", first_word]);
    let o = bench(&[
        "history",
        "--results",
        s(&store),
        "--machine",
        "no such cpu",
    ]);
    assert_input_error(&o, &["--machine no such cpu", "the store has"]);
}

/// Rows of the `results` table, every column as text, ordered.
fn all_rows(db: &rusqlite::Connection) -> Vec<Vec<String>> {
    let mut st = db
        .prepare("SELECT * FROM results ORDER BY run_key, row_index")
        .unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn format_sql_is_the_stores_own_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs");
    let args = [
        "compare",
        "--model",
        tiny(Dtype::F32),
        "--prompt",
        "Hi",
        "--max-tokens",
        "4",
        "--runs",
        "2",
        "--no-roofline",
        "-q",
        "--backends",
        "naive,simd-kv",
        "--format",
        "sql",
        "--save",
        s(&dir),
    ];
    let sql = stdout(&ok(&args));
    assert!(
        sql.starts_with("BEGIN;\n") && sql.trim_end().ends_with("COMMIT;"),
        "{sql}"
    );
    assert!(
        sql.contains("CREATE TABLE IF NOT EXISTS results ("),
        "{sql}"
    );
    assert_eq!(sql.matches("INSERT INTO results").count(), 2);
    // Run into an empty database, the printed SQL makes the very rows --save stored.
    let printed = rusqlite::Connection::open_in_memory().unwrap();
    printed.execute_batch(&sql).unwrap();
    let saved = rusqlite::Connection::open(store_of(&dir)).unwrap();
    assert_eq!(all_rows(&printed), all_rows(&saved));
    // And piped into the store, it adds nothing new (the rows' keys are unique).
    saved.execute_batch(&sql).unwrap();
    assert_eq!(count(&store_of(&dir), "results"), 2);
    // Run into a new file, it makes a store that gpt2-bench reads (and then writes).
    let piped = tmp.path().join("piped");
    std::fs::create_dir_all(&piped).unwrap();
    rusqlite::Connection::open(store_of(&piped))
        .unwrap()
        .execute_batch(&sql)
        .unwrap();
    let o = ok(&["history", "--results", s(&piped), "--format", "csv"]);
    assert_eq!(stdout(&o).lines().count(), 1 + 2, "{}", stdout(&o));
    // The same run imported later from its JSON report: its rows are kept once, its record
    // (which SQL does not carry) is added, so `report` can draw it.
    let o = ok(&["history", "--results", s(&piped), "--import", s(&dir)]);
    assert!(stderr(&o).contains("1 already there"), "{}", stderr(&o));
    assert_eq!(
        (
            count(&store_of(&piped), "runs"),
            count(&store_of(&piped), "results")
        ),
        (1, 2)
    );
    ok(&[
        "report",
        "--html",
        s(&piped.join("r.html")),
        "--results",
        s(&piped),
    ]);
    // `history --format sql` prints the stored rows the same way.
    let again = stdout(&ok(&["history", "--results", s(&dir), "--format", "sql"]));
    let reread = rusqlite::Connection::open_in_memory().unwrap();
    reread.execute_batch(&again).unwrap();
    assert_eq!(all_rows(&reread), all_rows(&saved));
}

#[test]
fn concurrent_writers_all_land() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // Eight processes import one report each into a store that does not exist yet: they race
    // to create it and to write, and every run must land once.
    let writers: Vec<Command> = (0..8)
        .map(|i| {
            let dir = tmp.path().join(format!("reports-{i}"));
            edited_report(
                &dir,
                "r",
                "aaaaaaa",
                &format!("2026-01-01T00:00:0{i}Z"),
                1.0,
            );
            command(&[
                "history",
                "--results",
                s(&store),
                "--import",
                s(&dir),
                "--machine",
                "all",
            ])
        })
        .collect();
    all_at_once(writers);
    assert_eq!(count(&store_of(&store), "runs"), 8);
    assert_eq!(count(&store_of(&store), "results"), 8 * 2);
}

#[test]
fn concurrent_saves_into_one_directory_keep_every_file_and_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs");
    let savers: Vec<Command> = (0..4).map(|_| command(&quick_save(&dir))).collect();
    all_at_once(savers);
    assert_eq!(entries(&dir, "", ".json").len(), 4, "one JSON report each");
    assert_eq!(count(&store_of(&dir), "runs"), 4);
    let history = std::fs::read_to_string(dir.join("history.md")).unwrap();
    assert_eq!(
        history.lines().filter(|l| l.starts_with("| 20")).count(),
        4,
        "{history}"
    );
}

#[test]
fn an_interrupted_write_leaves_the_store_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let first = tmp.path().join("first");
    edited_report(&first, "r", "aaaaaaa", "2026-01-01T00:00:00Z", 1.0);
    ok(&[
        "history",
        "--results",
        s(&store),
        "--import",
        s(&first),
        "--machine",
        "all",
    ]);
    let before = std::fs::read(store_of(&store)).unwrap();
    // The second import stops inside its transaction, rows written, not committed; it is
    // killed there (SIGKILL: no cleanup of any kind).
    let second = tmp.path().join("second");
    edited_report(&second, "r", "bbbbbbb", "2026-01-02T00:00:00Z", 1.0);
    let mut child = command(&["history", "--results", s(&store), "--import", s(&second)])
        .env("GPT2_BENCH_TEST_ONLY_PAUSE_BEFORE_COMMIT_MS", "30000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = store.join("results.sqlite-journal");
    let start = Instant::now();
    while !journal.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writer never began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its rows are in the database file's pages or the journal by now; give it a moment more.
    std::thread::sleep(Duration::from_millis(300));
    kill(child.id(), "KILL");
    child.wait().unwrap();
    assert!(
        journal.exists(),
        "the interrupted transaction left its journal"
    );
    // The next reader rolls the journal back: the store is as it was.
    let o = ok(&[
        "history",
        "--results",
        s(&store),
        "--machine",
        "all",
        "--format",
        "json",
    ]);
    let history: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(history["series"][0]["commits"].as_array().unwrap().len(), 1);
    assert_eq!(count(&store_of(&store), "runs"), 1);
    assert_eq!(std::fs::read(store_of(&store)).unwrap(), before);
    // And the same import, uninterrupted, lands.
    ok(&[
        "history",
        "--results",
        s(&store),
        "--import",
        s(&second),
        "--machine",
        "all",
    ]);
    assert_eq!(count(&store_of(&store), "runs"), 2);
}

#[test]
fn files_that_are_not_a_usable_store_are_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    edited_report(&reports, "r", "aaaaaaa", "2026-01-01T00:00:00Z", 1.0);
    let good = tmp.path().join("good");
    ok(&[
        "history",
        "--results",
        s(&good),
        "--import",
        s(&reports),
        "--machine",
        "all",
    ]);
    let store_bytes = std::fs::read(store_of(&good)).unwrap();

    // (name, how to make the file, what the error says)
    type Case<'a> = (&'static str, Box<dyn Fn(&Path) + 'a>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "text",
            Box::new(|p: &Path| std::fs::write(p, "my notes, not a database\n").unwrap()),
            "is not a SQLite database",
        ),
        (
            "foreign",
            Box::new(|p: &Path| {
                let db = rusqlite::Connection::open(p).unwrap();
                db.execute_batch(
                    "CREATE TABLE accounts (id INTEGER); INSERT INTO accounts VALUES (1);",
                )
                .unwrap();
            }),
            "a SQLite database of another program",
        ),
        (
            "newer",
            Box::new(|p: &Path| {
                std::fs::write(p, &store_bytes).unwrap();
                let db = rusqlite::Connection::open(p).unwrap();
                db.execute_batch("PRAGMA user_version = 99;").unwrap();
            }),
            "written by a newer gpt2-bench",
        ),
        (
            "corrupt",
            Box::new(|p: &Path| {
                let mut bytes = store_bytes.clone();
                let page = 4096.min(bytes.len() / 2);
                for b in &mut bytes[page..] {
                    *b = 0xA5;
                }
                std::fs::write(p, bytes).unwrap();
            }),
            "it was left as it is",
        ),
    ];
    for (name, make, says) in &cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = store_of(&dir);
        make(&path);
        let bytes = std::fs::read(&path).unwrap();
        for args in [
            vec![
                "history",
                "--results",
                s(&dir),
                "--import",
                s(&reports),
                "--machine",
                "all",
            ],
            vec!["history", "--results", s(&dir), "--machine", "all"],
            vec!["report", "--html", "/dev/null/x.html", "--results", s(&dir)],
        ] {
            let o = bench(&args);
            assert_input_error(&o, &[s(&path), says]);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{name}: {args:?} changed the file"
            );
        }
    }
    // A FIFO or a directory where the store should be: refused at once, never waited on.
    for (name, make) in [
        ("fifo", (|p: &Path| mkfifo(p)) as fn(&Path)),
        ("dir", |p: &Path| std::fs::create_dir(p).unwrap()),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        make(&store_of(&dir));
        for args in [
            vec!["history", "--results", s(&dir), "--machine", "all"],
            vec!["history", "--results", s(&dir), "--import", s(&reports)],
        ] {
            assert_input_error(&bench(&args), &[s(&store_of(&dir)), "not a regular file"]);
        }
    }
    let file = reports.join("r.json");
    assert_input_error(
        &bench(&["history", "--results", s(&file)]),
        &["--results", "not a directory"],
    );
    assert_input_error(
        &bench(&["history", "--results", s(&good), "--machine", ""]),
        &["--machine needs a machine", "the store has"],
    );
    assert_input_error(
        &bench(&[
            "history",
            "--results",
            s(&good),
            "--machine",
            "all",
            "--backends",
            "nosuch",
        ]),
        &["no stored row matches", "backends naive, simd"],
    );
    // An import of nothing creates nothing.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let untouched = tmp.path().join("untouched");
    assert_input_error(
        &bench(&["history", "--results", s(&untouched), "--import", s(&empty)]),
        &["no gpt2-bench report"],
    );
    assert!(!untouched.exists());
    // `compare --save` into such a directory keeps the run as JSON and says how to add it.
    let dir = tmp.path().join("text");
    let o = bench(&quick_save(&dir));
    assert_input_error(
        &o,
        &[
            "the run is saved as",
            "history --import",
            "is not a SQLite database",
        ],
    );
    assert_eq!(entries(&dir, "", ".json").len(), 1);
    // No store at all: said, with how to make one.
    let o = bench(&["history", "--results", s(&tmp.path().join("none"))]);
    assert_input_error(&o, &["no results store at", "compare --save"]);
}

/// Chromium, when installed; `None` (and a note) otherwise, unless CI requires it.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("GPT2_BENCH_REQUIRE_CHROMIUM").is_none(),
            "GPT2_BENCH_REQUIRE_CHROMIUM is set but Chromium is not installed (apt-get install chromium)"
        );
        eprintln!("SKIPPED: the browser check needs Chromium (apt-get install chromium)");
    }
    found
}

/// Runs headless Chromium with `args` on `url`; its stdout.
fn headless(chromium: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let o = output_within(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "chromium: {}", stderr(&o));
    stdout(&o)
}

/// What the page measures of the report in its frame, as Chromium laid it out: per figure, its
/// SVG's rendered size, drawn shapes and text elements with a non-zero rendered length.
const PROBE: &str = r#"<!DOCTYPE html><html><body>
<iframe id="report" src="REPORT" width="1000" height="800"></iframe><pre id="out">no result</pre>
<script>
document.getElementById('report').addEventListener('load', () => {
  const d = document.getElementById('report').contentDocument;
  const figures = Array.from(d.querySelectorAll('figure')).map(f => {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const shapes = svg ? svg.querySelectorAll('path, rect, circle, polyline, polygon, line') : [];
    const texts = svg ? Array.from(svg.querySelectorAll('text')) : [];
    return {id: f.id, width: box.width, height: box.height,
      shapes: Array.from(shapes).filter(s => { const b = s.getBBox(); return b.width > 0 || b.height > 0; }).length,
      // Data, not axes: plotters draws the mesh, axes and ticks in black or grey and the white
      // background; bars, series, points and bands are in a series' colour.
      marks: Array.from(shapes).filter(s => [s.getAttribute('stroke'), s.getAttribute('fill')]
        .some(c => { const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(c || '');
          if (!m) return false; const v = m.slice(1).map(h => parseInt(h, 16));
          return Math.max(...v) - Math.min(...v) > 40; })).length,
      texts: texts.filter(t => t.getComputedTextLength() > 0 && t.textContent.trim() !== '').length,
      caption: (f.querySelector('figcaption') || {innerText: ''}).innerText.length};
  });
  document.getElementById('out').textContent = 'RESULT ' + JSON.stringify(
    {figures, text: d.body.innerText, scripts: d.scripts.length});
});
</script></body></html>"#;

/// Renders `html` in Chromium: checks that every figure's plot is drawn (rendered, with shapes
/// and laid-out text), that `expected` figure ids are among them and that the page reads
/// `needles`; saves a screenshot beside it.
fn check_in_browser(chromium: &Path, html: &Path, expected: &[&str], needles: &[&str]) {
    let dir = html.parent().unwrap();
    let probe = dir.join(format!(
        "probe-{}",
        html.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &probe,
        PROBE.replace("REPORT", &format!("file://{}", html.display())),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(
        chromium,
        profile.path(),
        &[
            "--allow-file-access-from-files",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ],
        &format!("file://{}", probe.display()),
    );
    let result = dom
        .split("RESULT ")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("the probe gave no result: {dom}"));
    let result = result
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    let figures = result["figures"].as_array().unwrap();
    let html_text = std::fs::read_to_string(html).unwrap();
    assert_eq!(figures.len(), html_text.matches("<figure").count());
    for f in figures {
        let id = f["id"].as_str().unwrap();
        assert!(
            f["width"].as_f64().unwrap() > 300.0 && f["height"].as_f64().unwrap() > 100.0,
            "{id}: {f}"
        );
        assert!(
            f["shapes"].as_u64().unwrap() >= 5,
            "{id} draws nothing: {f}"
        );
        assert!(
            f["marks"].as_u64().unwrap() >= 1,
            "{id} draws axes but no data: {f}"
        );
        assert!(
            f["texts"].as_u64().unwrap() >= 3,
            "{id} has no laid-out text: {f}"
        );
        assert!(f["caption"].as_u64().unwrap() > 20, "{id}: {f}");
    }
    for id in expected {
        assert!(
            figures.iter().any(|f| f["id"] == *id),
            "no figure {id}: {figures:?}"
        );
    }
    let text = result["text"].as_str().unwrap();
    for n in needles {
        assert!(text.contains(n), "the page does not read {n:?}");
    }
    assert_eq!(result["scripts"], 0, "the report needs no JavaScript");
    let shot = html.with_extension("png");
    headless(
        chromium,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,2400",
        ],
        &format!("file://{}", html.display()),
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "{}",
        shot.display()
    );
}

#[test]
fn reports_are_self_contained_and_every_plot_is_drawn_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs");
    // A thread sweep over two prompt lengths, then two weight files compared: every chart kind.
    let sweep = save_run(
        &dir,
        &[
            "--backends",
            "simd,simd-kv",
            "--threads",
            "1,2",
            "--prompt-tokens",
            "4,8",
        ],
    );
    let files = format!("{},{}", tiny(Dtype::F32), tiny(Dtype::Bf16));
    save_run(&dir, &["--backends", "naive,simd-kv", "--model", &files]);
    // Three commits of the runs above, the second 1.5x slower: a trend with a mark.
    let reports = tmp.path().join("reports");
    edited_report(&reports, "a", "aaaaaaa", "2026-01-01T00:00:00Z", 1.0);
    edited_report(&reports, "b", "bbbbbbb", "2026-01-02T00:00:00Z", 1.5);
    edited_report(&reports, "c", "ccccccc", "2026-01-03T00:00:00Z", 1.45);
    ok(&["history", "--results", s(&dir), "--import", s(&reports)]);
    let sweep_json = tmp.path().join("sweep.json");
    std::fs::write(&sweep_json, serde_json::to_vec(&sweep).unwrap()).unwrap();
    // Where the screenshots are kept for a person to look at.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-check");
    std::fs::create_dir_all(&out).unwrap();
    let (latest, from, history) = (
        out.join("latest.html"),
        out.join("sweep.html"),
        out.join("history.html"),
    );
    ok(&["report", "--html", s(&latest), "--results", s(&dir)]);
    ok(&["report", "--html", s(&from), "--from", s(&sweep_json)]);
    ok(&[
        "report",
        "--html",
        s(&history),
        "--history",
        "--results",
        s(&dir),
    ]);
    for page in [&latest, &from, &history] {
        let html = std::fs::read_to_string(page).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert!(!html.contains("<script"), "no JavaScript");
        // Nothing is fetched: the only URL is SVG's namespace name.
        let urls = html.matches("http://").count() + html.matches("https://").count();
        assert_eq!(
            urls,
            html.matches("http://www.w3.org/2000/svg").count(),
            "{page:?}"
        );
        assert!(
            !html.contains(" src=") && !html.contains("<link"),
            "{page:?}"
        );
    }
    // Flags that do not apply to a run's page are refused, not ignored.
    let o = bench(&[
        "report",
        "--html",
        s(&latest),
        "--results",
        s(&dir),
        "--threshold",
        "5%",
    ]);
    assert_input_error(&o, &["--threshold", "--history"]);
    let o = bench(&[
        "report",
        "--html",
        s(&latest),
        "--results",
        s(&dir),
        "--backends",
        "candle",
    ]);
    assert_input_error(&o, &["--backends candle", "none of them"]);
    let latest_html = std::fs::read_to_string(&latest).unwrap();
    let history_html = std::fs::read_to_string(&history).unwrap();
    assert!(
        history_html.contains("SLOWER"),
        "the slowdown is marked in the table"
    );
    // plotters' RED: the downward triangle of a slowdown beyond the noise, in the trend.
    assert!(
        history_html.contains("fill=\"#FF0000\""),
        "and on the chart"
    );
    for id in ["decode", "prefill", "latency-", "speed-agreement"] {
        assert!(latest_html.contains(&format!("<figure id=\"{id}")), "{id}");
    }
    let Some(chromium) = chromium() else {
        return;
    };
    check_in_browser(
        &chromium,
        &latest,
        &["decode", "prefill", "speed-agreement"],
        &["Agreement with the first file", "bf16"],
    );
    check_in_browser(
        &chromium,
        &from,
        &[
            "decode",
            "prefill",
            "latency-4-t1",
            "latency-8-t2",
            "threads-decode",
            "threads-prefill",
            "latency-context",
        ],
        &["Results", "simd-kv"],
    );
    check_in_browser(
        &chromium,
        &history,
        &["series-0-decode", "series-0-prefill"],
        &["gpt2-bench history"],
    );
    eprintln!("screenshots: {}", out.display());
}
