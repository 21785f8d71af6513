//! Markdown: the wide table's columns as a Markdown table, then the summary, the method, the
//! roofline, notes, warnings, the agreement, the gate and the generated text as paragraphs.
//! Drawn when the run is over.

use std::fmt::Write;

use comfy_table::presets;

use super::{Renderer, table, text};
use crate::record::Report;

pub struct Markdown;

impl Renderer for Markdown {
    fn footer(&mut self, report: &Report) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}\n",
            table::every_column(report, presets::ASCII_MARKDOWN)
        );
        for line in text::summary_lines(report) {
            let _ = writeln!(out, "{line}  ");
        }
        let _ = writeln!(out, "{}\n", text::method_line(report));
        if let Some(r) = &report.roofline {
            let _ = writeln!(out, "{}\n", text::roofline_line(r));
        }
        for note in &report.notes {
            let _ = writeln!(out, "Note: {note}.\n");
        }
        for w in &report.warnings {
            let _ = writeln!(out, "Warning: {w}\n");
        }
        let agreement = text::agreement_table(report);
        if !agreement.is_empty() {
            let _ = writeln!(out, "```\n{agreement}```\n");
        }
        if let Some(g) = &report.gate {
            let _ = writeln!(out, "{}", crate::gate::render(g));
        }
        let _ = writeln!(
            out,
            "Model `{}` ({:.1}M parameters, checksum {}), {} build, {}, commit {}.\n",
            report.model.name,
            report.model.parameters as f64 / 1e6,
            report.model.checksum,
            report.machine.build_profile,
            report.machine.cpu,
            report.machine.git_commit
        );
        let _ = writeln!(out, "{}", text::generated_text(report));
        out
    }
}
