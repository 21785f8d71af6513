//! The terminal tables. The compact one (the default view) prints a row at a time as each
//! backend finishes, the way llama-bench prints, so its columns have fixed widths, sized for
//! what the cells hold at GPT-2's speeds (80 columns for one prompt length; a longer cell
//! pushes the rest of its row right). The wide one (`--wide`) has every titled column of
//! [`super::columns`] and is drawn when the run is over.

use comfy_table::presets;

use super::columns::{Column, column};
use super::text;
use super::{Renderer, RunStart};
use crate::record::{BackendResult, Report};

/// The compact table's columns: (the column, first header line, second header line, width);
/// every column but the first and last is right-aligned.
type CompactColumn = (&'static Column, &'static str, &'static str, usize);

/// The compact table: backend, threads, [prompt tokens, when several lengths run], TTFT,
/// prefill, decode, p50 latency, speedup against the reference, tokens match.
#[derive(Default)]
pub struct Compact {
    columns: Vec<CompactColumn>,
    reference: String,
}

impl Compact {
    fn line(&self, cells: &[String]) -> String {
        let last = self.columns.len() - 1;
        let mut out = String::new();
        for (i, (cell, (.., width))) in cells.iter().zip(&self.columns).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i == 0 || i == last {
                out.push_str(&format!("{cell:<width$}"));
            } else {
                out.push_str(&format!("{cell:>width$}"));
            }
        }
        out.trim_end().to_string() + "\n"
    }
}

impl Renderer for Compact {
    fn header(&mut self, start: &RunStart<'_>) -> String {
        let backend_width = start
            .labels
            .iter()
            .map(|b| b.chars().count())
            .fold(7, usize::max);
        let mut columns = vec![
            (column("backend"), "backend", "", backend_width),
            (column("threads"), "threads", "", 7),
        ];
        if start.several_lengths {
            columns.push((column("prompt tok"), "prompt", "tokens", 6));
        }
        columns.extend([
            (column("TTFT ms"), "TTFT", "ms", 11),
            (column("prefill tok/s"), "prefill", "tok/s", 11),
            (column("decode tok/s"), "decode", "tok/s", 10),
            (column("p50 ms"), "p50", "ms", 4),
            (column("speedup"), "speedup", "vs ref", 7),
            (column("tokens match"), "tokens", "match", 9),
        ]);
        self.columns = columns;
        self.reference = start.reference.to_string();
        let first: Vec<String> = self.columns.iter().map(|c| c.1.to_string()).collect();
        let second: Vec<String> = self.columns.iter().map(|c| c.2.to_string()).collect();
        let total = self.columns.iter().map(|c| c.3).sum::<usize>() + 2 * (self.columns.len() - 1);
        format!(
            "{}{}{}{}\n",
            text::table_heading(start.models, start.machine),
            self.line(&first),
            self.line(&second),
            "─".repeat(total)
        )
    }

    fn row(&mut self, r: &BackendResult) -> String {
        let cells: Vec<String> = self
            .columns
            .iter()
            .map(|(c, ..)| (c.value)(r, &self.reference).short_cell())
            .collect();
        self.line(&cells)
    }

    fn footer(&mut self, report: &Report) -> String {
        text::table_footer(report)
    }
}

/// The table with every titled column (`--wide`).
pub struct Wide;

impl Renderer for Wide {
    fn footer(&mut self, report: &Report) -> String {
        format!(
            "{}{}\n{}",
            text::table_heading(report.files(), &report.machine),
            every_column(report, presets::UTF8_FULL_CONDENSED),
            text::table_footer(report)
        )
    }
}

/// Every titled column of every row, drawn with a comfy-table `preset` (the wide table's, or
/// Markdown's).
pub fn every_column(report: &Report, preset: &str) -> String {
    use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
    let titled: Vec<&Column> = super::columns::COLUMNS
        .iter()
        .filter(|c| c.title.is_some())
        .collect();
    let mut t = Table::new();
    t.load_preset(preset)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(titled.iter().map(|c| c.title.unwrap_or_default()));
    for r in &report.results {
        t.add_row(titled.iter().map(|c| {
            let s = (c.value)(r, &report.reference).cell();
            let numeric = s.starts_with(|c: char| c.is_ascii_digit());
            Cell::new(s).set_alignment(if numeric {
                CellAlignment::Right
            } else {
                CellAlignment::Left
            })
        }));
    }
    t.to_string()
}
