//! Every view of a run's record ([`crate::record::Report`]): a terminal table (compact by
//! default, every column with `--wide`), Markdown, CSV (numbers only, one row per backend and
//! prompt length), JSON (the whole record, versioned) and JSON Lines (one object per row, as
//! llama-bench writes them), SQL (the results store's rows, as llama-bench's `-o sql`), and the
//! charts of `--plot` and `report --html` ([`charts`], drawn by [`plots`]).
//!
//! Shaped like hyperfine's exporters and llama-bench's printers: one column list
//! ([`columns`]) feeds the tables and the CSV; each format is one small file behind
//! [`Renderer`], which prints a header, each row as soon as its backend has run (where the
//! format allows: the compact table and the CSV; the others need every row first), and a
//! footer. Everything goes to stdout; progress and warnings go to stderr, so `gpt2-bench compare
//! --format json > run.json` gives a clean file.

pub mod charts;
pub mod columns;
mod csv;
pub mod html;
mod json;
mod jsonl;
mod markdown;
pub mod plots;
mod sql;
mod table;
pub mod text;

use crate::machine::Machine;
use crate::record::{BackendResult, ModelInfo, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Md,
    Csv,
    Json,
    /// One JSON object per result row (a backend at a prompt length), each carrying the model,
    /// machine and commit that produced it: append runs to a file, load it as a table.
    Jsonl,
    /// The rows as SQL: `CREATE TABLE IF NOT EXISTS results` and one `INSERT` per row (the
    /// results store's table: pipe into `sqlite3 bench-runs/results.sqlite`).
    Sql,
}

/// What a renderer knows before the first row: the files, the machine, the labels of the rows
/// to come (for column widths) and the reference backend.
pub struct RunStart<'a> {
    pub models: &'a [ModelInfo],
    pub machine: &'a Machine,
    pub labels: &'a [String],
    pub several_lengths: bool,
    pub reference: &'a str,
}

/// One output format. A format that needs every row first implements only [`Self::footer`].
pub trait Renderer {
    /// What comes before the rows.
    fn header(&mut self, _start: &RunStart<'_>) -> String {
        String::new()
    }
    /// One row, as soon as its backend has run.
    fn row(&mut self, _row: &BackendResult) -> String {
        String::new()
    }
    /// What comes after the rows (for a format that needs every row first, everything).
    fn footer(&mut self, report: &Report) -> String;
}

/// The renderer of `format` (`wide`: the table with every column).
pub fn renderer(format: Format, wide: bool) -> Box<dyn Renderer> {
    match format {
        Format::Table if wide => Box::new(table::Wide),
        Format::Table => Box::new(table::Compact::default()),
        Format::Md => Box::new(markdown::Markdown),
        Format::Csv => Box::new(csv::Csv),
        Format::Json => Box::new(json::Json),
        Format::Jsonl => Box::new(jsonl::Jsonl),
        Format::Sql => Box::new(sql::Sql),
    }
}
