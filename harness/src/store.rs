//! The results store: every saved result row, in one SQLite database (`results.sqlite` in the
//! `--save` directory), so that runs can be read back over time (`gpt2-bench history`, `report
//! --html --history`), as llama-bench's `-o sql` and llama.cpp's `compare-llama-bench.py` do.
//!
//! Two tables. `results` is flat, one row per backend, prompt length and thread count of a run,
//! each carrying everything that produced it (commit, date, machine, model, settings, rates,
//! raw samples as JSON): a row read alone says what it measured, and `compare --format sql`
//! prints exactly these rows as SQL that can be piped into the store (`sqlite3 results.sqlite`).
//! `runs` keeps each saved run's whole JSON record, for `report --html` of a stored run.
//! Both are keyed by the run's [`run_key`], a hash of what identifies the run (its date, command
//! line, machine, weights and raw timings), so that saving or importing the same run twice
//! keeps one copy.
//!
//! Why SQLite (bundled by rusqlite: nothing to install): a run is written in one transaction
//! (an interrupted run leaves the database as it was: SQLite's journal is rolled back on the
//! next open), two runs saving at once both land (the second waits for the first's lock), and
//! any tool reads it. The file is recognised by its application id; its schema version is
//! SQLite's `user_version`, and [`MIGRATIONS`] bring an older store up to date in a
//! transaction. A file that is not SQLite, a corrupt one, another program's database and a store
//! written by a newer gpt2-bench are each refused with one line naming the file, and left as they
//! are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::record::{BackendResult, Report};

/// The store's file name in a results directory.
pub const FILE_NAME: &str = "results.sqlite";

/// SQLite's `application_id` of a gpt2-bench results store ("G2BR"): tells it from another
/// program's database.
pub const APPLICATION_ID: i32 = 0x4732_4252;

/// The schema this gpt2-bench writes: SQLite's `user_version` after every migration.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Schema changes, in order: migration `i` brings a store from version `i` to `i + 1`. Never
/// edit one that has shipped; add the next, and write the schema it leads to as
/// [`CURRENT_SCHEMA`] (a test checks that both build the tables [`RESULT_COLUMNS`] describes).
pub const MIGRATIONS: &[&str] = &["
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    date_utc TEXT NOT NULL,
    git_commit TEXT NOT NULL,
    machine TEXT NOT NULL,
    model_name TEXT NOT NULL,
    saved_from TEXT NOT NULL,
    report_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_key TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    date_utc TEXT NOT NULL,
    git_commit TEXT NOT NULL,
    gpt2_bench_version TEXT NOT NULL,
    build_profile TEXT NOT NULL,
    machine TEXT NOT NULL,
    cpu TEXT NOT NULL,
    cpu_id TEXT NOT NULL,
    logical_cores INTEGER NOT NULL,
    arch TEXT NOT NULL,
    os TEXT NOT NULL,
    machine_isa TEXT NOT NULL,
    load_1min REAL,
    model_name TEXT NOT NULL,
    model_checksum TEXT NOT NULL,
    model_file TEXT NOT NULL,
    dtype TEXT NOT NULL,
    parameters INTEGER NOT NULL,
    backend TEXT NOT NULL,
    label TEXT NOT NULL,
    isa TEXT NOT NULL,
    device TEXT NOT NULL,
    threads INTEGER NOT NULL,
    kv_cache_dtype TEXT NOT NULL,
    rule TEXT NOT NULL,
    sampling TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    new_tokens INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    warmup INTEGER NOT NULL,
    prefill_tok_per_s REAL NOT NULL,
    prefill_tok_per_s_stddev REAL NOT NULL,
    decode_tok_per_s REAL,
    decode_tok_per_s_stddev REAL,
    decode_p50_ms REAL,
    decode_p99_ms REAL,
    ttft_ms REAL NOT NULL,
    tokens_match INTEGER NOT NULL,
    runs_agree INTEGER NOT NULL,
    prefill_ns TEXT NOT NULL,
    decode_step_ns TEXT NOT NULL,
    command_line TEXT NOT NULL,
    UNIQUE (run_key, row_index)
);
CREATE INDEX IF NOT EXISTS results_by_machine ON results (machine, model_name, backend, date_utc);
"];

/// The whole current schema, every statement idempotent (`IF NOT EXISTS`), as `--format sql`
/// prints it: run on an empty file it makes the tables of a store at [`SCHEMA_VERSION`], run on
/// a store of this version it changes nothing. While there is one migration, it is that one.
pub const CURRENT_SCHEMA: &str = MIGRATIONS[0];

/// What one `results` row holds of a run and one of its rows.
pub struct RowSource<'a> {
    pub run_key: &'a str,
    pub index: usize,
    pub report: &'a Report,
    pub row: &'a BackendResult,
}

/// One column of `results`: its name and value. Written once, read by the store's insert and
/// by `--format sql`; a test checks that the migrations build exactly these columns.
pub struct Column {
    pub name: &'static str,
    pub value: fn(&RowSource<'_>) -> Value,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
fn int(n: impl TryInto<i64>) -> Value {
    n.try_into().map_or(Value::Null, Value::Integer)
}
fn real(x: f64) -> Value {
    if x.is_finite() {
        Value::Real(x)
    } else {
        Value::Null
    }
}
fn json(v: &impl serde::Serialize) -> Value {
    Value::Text(serde_json::to_string(v).unwrap_or_default())
}

/// The columns of `results`, in table order.
pub const RESULT_COLUMNS: &[Column] = &[
    Column {
        name: "run_key",
        value: |s| text(s.run_key),
    },
    Column {
        name: "row_index",
        value: |s| int(s.index),
    },
    Column {
        name: "date_utc",
        value: |s| text(&s.report.date_utc),
    },
    Column {
        name: "git_commit",
        value: |s| text(&s.report.machine.git_commit),
    },
    Column {
        name: "gpt2_bench_version",
        value: |s| text(&s.report.machine.gpt2_bench_version),
    },
    Column {
        name: "build_profile",
        value: |s| text(&s.report.machine.build_profile),
    },
    Column {
        name: "machine",
        value: |s| text(&s.report.machine.label()),
    },
    Column {
        name: "cpu",
        value: |s| text(&s.report.machine.cpu),
    },
    Column {
        name: "cpu_id",
        value: |s| text(&s.report.machine.cpu_id),
    },
    Column {
        name: "logical_cores",
        value: |s| int(s.report.machine.logical_cores),
    },
    Column {
        name: "arch",
        value: |s| text(&s.report.machine.arch),
    },
    Column {
        name: "os",
        value: |s| text(&s.report.machine.os),
    },
    Column {
        name: "machine_isa",
        value: |s| text(&s.report.machine.simd_kernels),
    },
    Column {
        name: "load_1min",
        value: |s| s.report.load_average_before_run.map_or(Value::Null, real),
    },
    Column {
        name: "model_name",
        value: |s| text(&s.report.file_of(s.row).name),
    },
    Column {
        name: "model_checksum",
        value: |s| text(&s.report.file_of(s.row).checksum),
    },
    Column {
        name: "model_file",
        value: |s| text(&s.row.model_file),
    },
    Column {
        name: "dtype",
        value: |s| text(&s.row.dtype),
    },
    Column {
        name: "parameters",
        value: |s| int(s.report.file_of(s.row).parameters),
    },
    Column {
        name: "backend",
        value: |s| text(&s.row.backend),
    },
    Column {
        name: "label",
        value: |s| text(&s.row.label),
    },
    Column {
        name: "isa",
        value: |s| text(&s.row.isa),
    },
    Column {
        name: "device",
        value: |s| text(&s.row.device),
    },
    Column {
        name: "threads",
        value: |s| int(s.row.threads),
    },
    Column {
        name: "kv_cache_dtype",
        value: |s| text(&s.row.kv_cache_dtype),
    },
    Column {
        name: "rule",
        value: |s| text(&s.row.rule),
    },
    Column {
        name: "sampling",
        value: |s| text(&s.report.sampling),
    },
    Column {
        name: "prompt_tokens",
        value: |s| int(s.row.prompt_tokens),
    },
    Column {
        name: "new_tokens",
        value: |s| int(s.row.new_tokens),
    },
    Column {
        name: "runs",
        value: |s| int(s.row.runs),
    },
    Column {
        name: "warmup",
        value: |s| int(s.row.warmup),
    },
    Column {
        name: "prefill_tok_per_s",
        value: |s| real(s.row.prefill_tok_per_s.mean),
    },
    Column {
        name: "prefill_tok_per_s_stddev",
        value: |s| real(s.row.prefill_tok_per_s.stddev),
    },
    Column {
        name: "decode_tok_per_s",
        value: |s| s.row.decode_tok_per_s.map_or(Value::Null, |d| real(d.mean)),
    },
    Column {
        name: "decode_tok_per_s_stddev",
        value: |s| {
            s.row
                .decode_tok_per_s
                .map_or(Value::Null, |d| real(d.stddev))
        },
    },
    Column {
        name: "decode_p50_ms",
        value: |s| s.row.decode_latency.map_or(Value::Null, |l| real(l.p50_ms)),
    },
    Column {
        name: "decode_p99_ms",
        value: |s| s.row.decode_latency.map_or(Value::Null, |l| real(l.p99_ms)),
    },
    Column {
        name: "ttft_ms",
        value: |s| real(s.row.ttft_ms.mean),
    },
    Column {
        name: "tokens_match",
        value: |s| int(s.row.tokens_match),
    },
    Column {
        name: "runs_agree",
        value: |s| int(s.row.runs_agree),
    },
    Column {
        name: "prefill_ns",
        value: |s| json(&s.row.samples.prefill_ns),
    },
    Column {
        name: "decode_step_ns",
        value: |s| json(&s.row.samples.decode_step_ns),
    },
    Column {
        name: "command_line",
        value: |s| text(&crate::ab::shell_line(&s.report.command_line)),
    },
];

/// What identifies a run, hashed: its start time, command line, machine, commit, weights and
/// raw prefill timings (integers: a report read back from JSON hashes the same as the one that
/// wrote it). 32 hex digits.
pub fn run_key(report: &Report) -> String {
    let identity = serde_json::json!([
        report.date_utc,
        report.command_line,
        report.machine.label(),
        report.machine.git_commit,
        report
            .files()
            .iter()
            .map(|m| &m.checksum)
            .collect::<Vec<_>>(),
        report
            .results
            .iter()
            .map(|r| &r.samples.prefill_ns)
            .collect::<Vec<_>>(),
    ]);
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(identity.to_string().as_bytes())
    )
}

/// Where the store of a results directory is.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// How long a writer waits for another's lock before giving up (a save takes milliseconds; a
/// big import, seconds).
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// For tests only (harness/tests/results.rs; CONTRIBUTING.md lists the test variables):
/// milliseconds to wait inside a save's transaction, after its rows are written and before the
/// commit, so that a test can kill the process there (an interrupted write).
pub const TEST_PAUSE_ENV: &str = "GPT2_BENCH_TEST_ONLY_PAUSE_BEFORE_COMMIT_MS";

/// An open results store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// What saving a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The run and this many rows were added.
    Added(usize),
    /// The store already had this run (same [`run_key`]); nothing was written.
    AlreadyThere,
}

/// SQLite's file header: what every database file starts with.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Where SQLite keeps the application id in the file header (big-endian).
const APPLICATION_ID_OFFSET: usize = 68;

/// What the header of the file at `path` says, read without SQLite (which would roll back a
/// journal it finds: another program's file must not be changed by looking at it).
enum Header {
    Missing,
    Empty,
    /// A SQLite database and its application id.
    Sqlite(i32),
}

/// Where to go instead of a store that cannot be used.
const ELSEWHERE: &str = "use another results directory (--save DIR or --results DIR, or \
                         GPT2_BENCH_RESULTS_DIR)";

fn read_header(path: &Path) -> anyhow::Result<Header> {
    use std::io::Read;
    // Never blocks on a FIFO, refuses anything but a regular file.
    let file = match gpt2_weights::input::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Header::Missing),
        Err(e) => bail!(
            "the results store {}: {e}; it must be a SQLite file: {ELSEWHERE}",
            path.display()
        ),
    };
    let mut head = Vec::with_capacity(100);
    file.take(100)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    if head.is_empty() {
        return Ok(Header::Empty);
    }
    if !head.starts_with(SQLITE_HEADER) || head.len() < APPLICATION_ID_OFFSET + 4 {
        bail!(
            "{} is not a SQLite database, so not a gpt2-bench results store; it was left as it \
             is: move it away, or {ELSEWHERE}",
            path.display()
        );
    }
    let id = &head[APPLICATION_ID_OFFSET..APPLICATION_ID_OFFSET + 4];
    Ok(Header::Sqlite(i32::from_be_bytes([
        id[0], id[1], id[2], id[3],
    ])))
}

/// Whether a SQLite error is another connection's lock outlasting the busy timeout.
fn is_lock_timeout(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The store stayed locked by another writer for longer than [`BUSY_TIMEOUT`].
#[derive(Debug)]
pub struct Locked(PathBuf);

impl std::fmt::Display for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the results store {} stayed locked for {} s by another process writing to it (a \
             gpt2-bench saving or importing, or a SQLite tool); try again when it has finished",
            self.0.display(),
            BUSY_TIMEOUT.as_secs()
        )
    }
}

impl std::error::Error for Locked {}

/// A SQLite error on `path`, in one line: a lock held too long says so ([`Locked`]); anything
/// else means the file cannot be read as a database, and it was not changed.
fn unreadable(path: &Path, e: &rusqlite::Error) -> anyhow::Error {
    if is_lock_timeout(e) {
        return Locked(path.to_path_buf()).into();
    }
    anyhow::anyhow!(
        "{} is not a readable SQLite database ({e}); it was left as it is: move it away, or \
         {ELSEWHERE}",
        path.display()
    )
}

fn flags(write: bool) -> OpenFlags {
    let access = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    access | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

impl Store {
    /// Opens the store at `path` for saving, creating it (and bringing an older one up to
    /// date) if needed.
    pub fn open_or_create(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the results directory {}", dir.display()))?;
        }
        let conn = match read_header(path)? {
            // Ours: open it to write, which also rolls back what an interrupted save of ours
            // left in its journal.
            Header::Sqlite(APPLICATION_ID) => Connection::open_with_flags(path, flags(true)),
            Header::Missing => {
                Connection::open_with_flags(path, flags(true) | OpenFlags::SQLITE_OPEN_CREATE)
            }
            // Anything else is checked read-only first: an empty database becomes a store, a
            // foreign one is refused untouched.
            Header::Empty | Header::Sqlite(_) => {
                Store::checked(Connection::open_with_flags(path, flags(false)), path)?;
                Connection::open_with_flags(path, flags(true))
            }
        };
        let mut store = Store::checked(conn, path)?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store to read it; a missing one is an error saying how to make one.
    pub fn open_existing(path: &Path) -> anyhow::Result<Store> {
        let conn = match read_header(path)? {
            Header::Missing => bail!(
                "no results store at {}: `gpt2-bench compare --save` adds each run to it, \
                 `gpt2-bench history --import DIR` adds saved JSON reports",
                path.display()
            ),
            Header::Empty => bail!(
                "{} is an empty file, not yet a results store: `gpt2-bench compare --save` adds \
                 each run to it",
                path.display()
            ),
            // Read-write where allowed, so that SQLite rolls back what an interrupted save of
            // ours left in its journal; read-only where the file or directory cannot be
            // written.
            Header::Sqlite(APPLICATION_ID) => Connection::open_with_flags(path, flags(true))
                .or_else(|_| Connection::open_with_flags(path, flags(false))),
            Header::Sqlite(_) => Connection::open_with_flags(path, flags(false)),
        };
        let mut store = Store::checked(conn, path)?;
        if store.pragma("application_id")? != APPLICATION_ID {
            bail!(
                "{} is an empty database, not yet a results store: `gpt2-bench compare --save` \
                 adds each run to it",
                path.display()
            );
        }
        // A store of an older schema, or one made by `--format sql` piped into a new file
        // (its tables, but no version yet), is brought up to date first.
        if store.pragma("user_version")? < SCHEMA_VERSION {
            store.migrate().with_context(|| {
                format!(
                    "{}: bringing the results store to schema {SCHEMA_VERSION}",
                    path.display()
                )
            })?;
        }
        Ok(store)
    }

    /// Checks that the open database is intact and is a store this gpt2-bench can use (or an
    /// empty database, to become one).
    fn checked(conn: rusqlite::Result<Connection>, path: &Path) -> anyhow::Result<Store> {
        let conn = conn.map_err(|e| unreadable(path, &e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| unreadable(path, &e))?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        let check: String = store
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| unreadable(path, &e))?;
        if check != "ok" {
            bail!(
                "{} is a corrupt SQLite database ({}); it was left as it is: move it away, or \
                 {ELSEWHERE}",
                path.display(),
                gpt2_weights::input::printable(&check)
            );
        }
        let (application, version) = (
            store.pragma("application_id")?,
            store.pragma("user_version")?,
        );
        let tables: i64 = store
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| unreadable(path, &e))?;
        let empty = application == 0 && version == 0 && tables == 0;
        if application != APPLICATION_ID && !empty {
            bail!(
                "{} is a SQLite database of another program, not a gpt2-bench results store; it \
                 was left as it is: {ELSEWHERE}",
                path.display()
            );
        }
        if version > SCHEMA_VERSION {
            bail!(
                "{} was written by a newer gpt2-bench (results schema {version}; this one knows \
                 up to {SCHEMA_VERSION}); it was left as it is: use that gpt2-bench, or \
                 {ELSEWHERE}",
                path.display()
            );
        }
        Ok(store)
    }

    fn pragma(&self, name: &str) -> anyhow::Result<i32> {
        self.conn
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(|e| unreadable(&self.path, &e))
    }

    /// Brings the store to [`SCHEMA_VERSION`] in one transaction (a new store: every migration).
    /// Two processes creating the same store at once: the second finds it done.
    fn migrate(&mut self) -> anyhow::Result<()> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| unreadable(&path, &e))?;
        let version: i32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| unreadable(&path, &e))?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        // Tables but no version: made by `--format sql` piped into a new file, which writes
        // the tables of its own schema version. Taken as they are when they are this
        // version's; anything else is named, not migrated blindly.
        let made_by_sql: bool = tx
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'results'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| unreadable(&path, &e))?;
        if version == 0 && made_by_sql {
            let columns: Vec<String> = tx
                .prepare("SELECT name FROM pragma_table_info('results') ORDER BY cid")
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .map_err(|e| unreadable(&path, &e))?;
            let current: Vec<&str> = RESULT_COLUMNS.iter().map(|c| c.name).collect();
            if columns != current {
                bail!(
                    "{}: its results table (from `--format sql` piped into it?) is not of this \
                     gpt2-bench's schema {SCHEMA_VERSION}; it was left as it is: pipe the SQL \
                     of this gpt2-bench's `history --format sql` into a new file instead",
                    path.display()
                );
            }
            tx.execute_batch(CURRENT_SCHEMA)
                .with_context(|| format!("{}: completing the schema", path.display()))?;
        } else {
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(sql)
                    .with_context(|| format!("{}: schema migration {}", path.display(), i + 1))?;
            }
        }
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(|e| unreadable(&path, &e))?;
        tx.commit().map_err(|e| unreadable(&path, &e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a run (its JSON record and every row) in one transaction; `saved_from` says where
    /// it came from (`compare --save`, or the file an import read).
    pub fn save(&mut self, report: &Report, saved_from: &str) -> anyhow::Result<Saved> {
        let key = run_key(report);
        let path = self.path.clone();
        let failed = |e: rusqlite::Error| unreadable(&path, &e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        let report_json = serde_json::to_string(report).context("serialising the report")?;
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO runs (run_key, date_utc, git_commit, machine, model_name, \
                 saved_from, report_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    key,
                    report.date_utc,
                    report.machine.git_commit,
                    report.machine.label(),
                    report.model.name,
                    saved_from,
                    report_json
                ],
            )
            .map_err(failed)?;
        if added == 0 {
            return Ok(Saved::AlreadyThere);
        }
        // Its rows may be there already, piped in as SQL (`--format sql`, which carries no
        // `runs` record): the record is added, the rows kept.
        let rows_there: i64 = tx
            .query_row(
                "SELECT count(*) FROM results WHERE run_key = ?1",
                [&key],
                |r| r.get(0),
            )
            .map_err(failed)?;
        if rows_there > 0 {
            tx.commit().map_err(failed)?;
            return Ok(Saved::AlreadyThere);
        }
        {
            // A plain INSERT: a row that cannot be stored (a number beyond SQLite's integers
            // in a hostile report) fails the whole run, never drops the row in silence.
            let mut insert = tx.prepare(&insert_sql()).map_err(failed)?;
            for (index, row) in report.results.iter().enumerate() {
                insert
                    .execute(rusqlite::params_from_iter(row_values(&key, index, report)))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "row {index} ({}) cannot be stored: {e}",
                            gpt2_weights::input::printable(&row.label)
                        )
                    })?;
            }
        }
        if let Some(ms) = std::env::var(TEST_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
        tx.commit().map_err(failed)?;
        Ok(Saved::Added(report.results.len()))
    }

    /// Every stored row matching `filter`, oldest first.
    pub fn rows(&self, filter: &Filter) -> anyhow::Result<Vec<StoredRow>> {
        let (sql, params) = filter.select(
            "run_key, date_utc, git_commit, machine, model_name, dtype, backend, isa, threads, \
             kv_cache_dtype, prompt_tokens, prefill_ns, decode_step_ns",
        );
        let read = |e: rusqlite::Error| unreadable(&self.path, &e);
        let mut statement = self.conn.prepare(&sql).map_err(read)?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(params), |r| {
                Ok(StoredRow {
                    run_key: r.get(0)?,
                    date_utc: r.get(1)?,
                    git_commit: r.get(2)?,
                    machine: r.get(3)?,
                    model_name: r.get(4)?,
                    dtype: r.get(5)?,
                    backend: r.get(6)?,
                    isa: r.get(7)?,
                    threads: r.get(8)?,
                    kv_cache_dtype: r.get(9)?,
                    prompt_tokens: r.get(10)?,
                    prefill_ns: r.get(11)?,
                    decode_step_ns: r.get(12)?,
                })
            })
            .map_err(read)?;
        // A value of the wrong type (a row written by hand) is the row's fault, not the file's.
        let rows: Vec<StoredRow> = rows.collect::<Result<_, _>>().map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..) => {
                anyhow::anyhow!(
                    "{}: a stored row holds a value of the wrong type ({e}); rows written by hand \
                     (sqlite3) must follow the results table's schema (docs/benchmarking.md)",
                    self.path.display()
                )
            }
            e => read(e),
        })?;
        Ok(rows)
    }

    /// The machines of the stored runs ([`crate::machine::Machine::label`]), each with its
    /// number of rows, most rows first.
    pub fn machines(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let read = |e: rusqlite::Error| unreadable(&self.path, &e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT machine, count(*) FROM results GROUP BY machine ORDER BY count(*) DESC",
            )
            .map_err(read)?;
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(read)?;
        rows.collect::<Result<_, _>>().map_err(read)
    }

    /// The whole record of the latest stored run of the filter's machine and model (every
    /// machine and model where it names none); `None` when there is none.
    pub fn latest_report(&self, filter: &Filter) -> anyhow::Result<Option<Report>> {
        let read = |e: rusqlite::Error| unreadable(&self.path, &e);
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT report_json FROM runs WHERE (?1 IS NULL OR machine = ?1) \
                 AND (?2 IS NULL OR model_name = ?2) ORDER BY date_utc DESC, rowid DESC LIMIT 1",
                [filter.machine.as_deref(), filter.model_name.as_deref()],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(read)?;
        json.map(|j| {
            crate::record::read_report(j.as_bytes())
                .with_context(|| format!("{}: the latest stored run", self.path.display()))
        })
        .transpose()
    }

    /// Every stored row matching `filter` as SQL `INSERT` statements (`history --format sql`).
    pub fn rows_as_sql(&self, filter: &Filter) -> anyhow::Result<String> {
        let names: Vec<&str> = RESULT_COLUMNS.iter().map(|c| c.name).collect();
        let (query, params) = filter.select(&names.join(", "));
        let read = |e: rusqlite::Error| unreadable(&self.path, &e);
        let mut statement = self.conn.prepare(&query).map_err(read)?;
        let rows: Vec<Vec<Value>> = statement
            .query_map(rusqlite::params_from_iter(params), |r| {
                (0..names.len()).map(|i| r.get::<_, Value>(i)).collect()
            })
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        Ok(sql_script(rows))
    }
}

impl Filter {
    /// `SELECT columns FROM results` of the rows this filter keeps, oldest first, and its
    /// parameters.
    fn select(&self, columns: &str) -> (String, Vec<String>) {
        let mut conditions = Vec::new();
        let mut params: Vec<String> = Vec::new();
        if let Some(machine) = &self.machine {
            conditions.push("machine = ?".to_string());
            params.push(machine.clone());
        }
        if let Some(model) = &self.model_name {
            conditions.push("model_name = ?".to_string());
            params.push(model.clone());
        }
        if let Some(backends) = &self.backends {
            let marks = vec!["?"; backends.len()].join(", ");
            conditions.push(format!("backend IN ({marks})"));
            params.extend(backends.iter().cloned());
        }
        let mut sql = format!("SELECT {columns} FROM results");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY date_utc, run_key, row_index");
        (sql, params)
    }
}

/// Which stored rows to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The machine, exactly as recorded ([`crate::machine::Machine::label`]); `None`: every
    /// machine.
    pub machine: Option<String>,
    pub model_name: Option<String>,
    pub backends: Option<Vec<String>>,
}

/// One stored row, as `history` reads it.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub run_key: String,
    pub date_utc: String,
    pub git_commit: String,
    pub machine: String,
    pub model_name: String,
    pub dtype: String,
    pub backend: String,
    pub isa: String,
    pub threads: i64,
    pub kv_cache_dtype: String,
    pub prompt_tokens: i64,
    /// JSON arrays: each run's prefill time, each run's decode steps.
    pub prefill_ns: String,
    pub decode_step_ns: String,
}

impl StoredRow {
    /// Each measured run's prefill tok/s and decode tok/s (`None` for a run without decode
    /// steps).
    pub fn run_rates(&self) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let prefill: Vec<u64> = serde_json::from_str(&self.prefill_ns)
            .with_context(|| format!("run {}: prefill_ns", self.run_key))?;
        let decode: Vec<Vec<u64>> = serde_json::from_str(&self.decode_step_ns)
            .with_context(|| format!("run {}: decode_step_ns", self.run_key))?;
        let prefill_rates = prefill
            .iter()
            .filter(|&&ns| ns > 0)
            .map(|&ns| self.prompt_tokens as f64 / (ns as f64 * 1e-9))
            .collect();
        // Summed in u128: a hostile report's steps near u64::MAX must not wrap around.
        let total = |steps: &Vec<u64>| steps.iter().map(|&ns| u128::from(ns)).sum::<u128>();
        let decode_rates = decode
            .iter()
            .filter(|steps| total(steps) > 0)
            .map(|steps| steps.len() as f64 / (total(steps) as f64 * 1e-9))
            .collect();
        Ok((prefill_rates, decode_rates))
    }
}

/// `INSERT INTO results (every column) VALUES (values)`, the values as given (`?` marks, or
/// literals).
fn insert_into_results(values: &[String]) -> String {
    let names: Vec<&str> = RESULT_COLUMNS.iter().map(|c| c.name).collect();
    format!(
        "INSERT INTO results ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    )
}

/// The store's insert, with `?` marks.
fn insert_sql() -> String {
    insert_into_results(&vec!["?".to_string(); RESULT_COLUMNS.len()])
}

/// The schema as SQL that can run on any database ([`CURRENT_SCHEMA`]) and the store's
/// application id, but not its version, which only gpt2-bench sets (replayed into a newer
/// store, this must not lower it; run into an empty file, the next gpt2-bench to open it finds
/// this version's tables there and sets the version).
pub fn schema_sql() -> String {
    format!("{CURRENT_SCHEMA}PRAGMA application_id = {APPLICATION_ID};\n")
}

/// A value as an SQL literal.
fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(n) => n.to_string(),
        // `{:?}` keeps every digit and always a decimal point or exponent.
        Value::Real(x) => format!("{x:?}"),
        // Control characters (a NUL above all, which ends a line for the sqlite3 shell and so
        // would end the quoting) go as hex bytes cast back to text.
        Value::Text(s) if s.chars().any(char::is_control) => format!(
            "CAST(X'{}' AS TEXT)",
            s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Blob(b) => format!(
            "X'{}'",
            b.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// One row as SQL: a row already there (the same run and row) is skipped, any other failure
/// (a NULL where a value must be) is an error, never a row dropped in silence.
fn insert_statement(values: &[Value]) -> String {
    let literals: Vec<String> = values.iter().map(literal).collect();
    format!(
        "{} ON CONFLICT (run_key, row_index) DO NOTHING;\n",
        insert_into_results(&literals)
    )
}

/// A report's rows as SQL (`compare --format sql`): the schema ([`schema_sql`]), then one
/// `INSERT` per row, in a transaction. Piped into `sqlite3 results.sqlite` it adds them to a
/// store, or makes one of an empty file (once: the rows' keys are unique).
pub fn report_as_sql(report: &Report) -> String {
    let key = run_key(report);
    sql_script((0..report.results.len()).map(|index| row_values(&key, index, report)))
}

/// Row `index` of a report as the values of [`RESULT_COLUMNS`].
fn row_values(run_key: &str, index: usize, report: &Report) -> Vec<Value> {
    let source = RowSource {
        run_key,
        index,
        report,
        row: &report.results[index],
    };
    RESULT_COLUMNS.iter().map(|c| (c.value)(&source)).collect()
}

/// Rows as an SQL script: in a transaction, the schema ([`schema_sql`]) then one `INSERT` each.
fn sql_script(rows: impl IntoIterator<Item = Vec<Value>>) -> String {
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(&schema_sql());
    for values in rows {
        sql.push_str(&insert_statement(&values));
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// A saved JSON report and where it was read.
pub type SavedReport = (PathBuf, Report);

/// The saved JSON reports in `dir` (not recursing), in name order, each read and checked;
/// files that are not reports of this schema are listed with why.
pub fn reports_in(dir: &Path) -> anyhow::Result<(Vec<SavedReport>, Vec<String>)> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--import {}: reading the directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    let (mut reports, mut skipped) = (Vec::new(), Vec::new());
    for path in entries {
        let limit = gpt2_weights::input::MAX_TEXT_FILE_BYTES;
        let read = gpt2_weights::input::read_text_limited(&path, limit)
            .map_err(anyhow::Error::from)
            .and_then(|text| crate::record::read_report(text.as_bytes()));
        match read {
            Ok(report) => reports.push((path, report)),
            Err(e) => skipped.push(format!(
                "{}: {}",
                path.display(),
                gpt2_weights::input::printable(&format!("{e:#}"))
            )),
        }
    }
    Ok((reports, skipped))
}

/// Adds `reports` to the store, each in its own transaction; one that cannot be stored is
/// skipped with why (the others still land). A store that cannot be written at all (locked
/// too long) stops the import.
pub fn import(store: &mut Store, reports: &[SavedReport]) -> anyhow::Result<Import> {
    let mut import = Import::default();
    for (path, report) in reports {
        match store.save(report, &path.display().to_string()) {
            Ok(Saved::Added(_)) => import.added += 1,
            Ok(Saved::AlreadyThere) => import.already += 1,
            Err(e) if e.is::<Locked>() => return Err(e),
            Err(e) => import.skipped.push(format!(
                "{}: {}",
                path.display(),
                gpt2_weights::input::printable(&format!("{e:#}"))
            )),
        }
    }
    Ok(import)
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Import {
    pub added: usize,
    pub already: usize,
    /// Files that are not reports of this schema, with why.
    pub skipped: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed report of this schema (bench-results/), read back.
    fn committed_report() -> Report {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../bench-results/2026-12-03-5f6d81f-precision-table.json");
        crate::record::read_report(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn the_migrations_build_the_tables_the_columns_describe() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(&tmp.path().join(FILE_NAME)).unwrap();
        let columns: Vec<String> = store
            .conn
            .prepare("SELECT name FROM pragma_table_info('results') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let described: Vec<&str> = RESULT_COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(columns, described, "a column changed without a migration");
        assert_eq!(store.pragma("user_version").unwrap(), SCHEMA_VERSION);
        assert_eq!(store.pragma("application_id").unwrap(), APPLICATION_ID);
        // The schema `--format sql` prints makes a store of an empty file: the next open adopts
        // it (its tables are there, the migrations replayed are no-ops) and writes to it.
        let piped = tmp.path().join("piped.sqlite");
        Connection::open(&piped)
            .unwrap()
            .execute_batch(&schema_sql())
            .unwrap();
        let mut adopted = Store::open_or_create(&piped).unwrap();
        assert_eq!(adopted.pragma("user_version").unwrap(), SCHEMA_VERSION);
        assert!(matches!(
            adopted.save(&committed_report(), "test").unwrap(),
            Saved::Added(_)
        ));
    }

    #[test]
    fn a_run_is_saved_once_under_a_key_its_json_keeps() {
        let report = committed_report();
        // The key of a report read back from its JSON is the key of the one that wrote it.
        let again =
            crate::record::read_report(serde_json::to_string(&report).unwrap().as_bytes()).unwrap();
        assert_eq!(run_key(&report), run_key(&again));
        let mut other = report.clone();
        other.date_utc.push('x');
        assert_ne!(run_key(&report), run_key(&other));

        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open_or_create(&tmp.path().join(FILE_NAME)).unwrap();
        assert_eq!(
            store.save(&report, "test").unwrap(),
            Saved::Added(report.results.len())
        );
        assert_eq!(store.save(&again, "test").unwrap(), Saved::AlreadyThere);
        let rows = store.rows(&Filter::default()).unwrap();
        assert_eq!(rows.len(), report.results.len());
        // Each row's rates come back from its raw samples.
        let (prefill, _) = rows[0].run_rates().unwrap();
        let mean = prefill.iter().sum::<f64>() / prefill.len() as f64;
        let expected = report.results[0].prefill_tok_per_s.mean;
        assert!(
            (mean - expected).abs() < 1e-6 * expected,
            "{mean} vs {expected}"
        );
        let latest = store.latest_report(&Filter::default()).unwrap().unwrap();
        assert_eq!(run_key(&latest), run_key(&report));
        let elsewhere = Filter {
            machine: Some("no such machine".into()),
            ..Filter::default()
        };
        assert!(store.latest_report(&elsewhere).unwrap().is_none());
    }

    #[test]
    fn sql_literals_survive_quotes_and_special_numbers() {
        assert_eq!(literal(&Value::Text("it's".into())), "'it''s'");
        assert_eq!(literal(&Value::Real(1.0)), "1.0");
        assert_eq!(literal(&Value::Real(1e-300)), "1e-300");
        assert_eq!(real(f64::NAN), Value::Null);
        assert_eq!(literal(&Value::Blob(vec![0, 255])), "X'00ff'");
        let db = Connection::open_in_memory().unwrap();
        for text in ["a'b\n\"c", "x\0\n;CREATE TABLE pwned(x);", "\u{1b}[31m"] {
            let back: String = db
                .query_row(
                    &format!("SELECT {}", literal(&Value::Text(text.into()))),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(back, text);
        }
        let back: String = db
            .query_row(
                &format!("SELECT {}", literal(&Value::Text("a'b\n\"c".into()))),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(back, "a'b\n\"c");
    }
}
