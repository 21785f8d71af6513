//! JSON Lines: one object per result row, each carrying what produced it (date, commit, CPU,
//! model and its checksum), so that runs appended to one file load as one table. Written when
//! the run is over, since a row's cross-row figures (its machine-normalized rates, its speed
//! against the slowest) are known only then.

use super::Renderer;
use crate::record::{BackendResult, Report};

pub struct Jsonl;

impl Renderer for Jsonl {
    fn footer(&mut self, report: &Report) -> String {
        report
            .results
            .iter()
            .map(|r| row(report, r) + "\n")
            .collect()
    }
}

/// One JSON Lines object for a result row: the row, and what produced it.
fn row(report: &Report, r: &BackendResult) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        let context = serde_json::json!({
            "schema_version": report.schema_version,
            "date_utc": report.date_utc,
            "git_commit": report.machine.git_commit,
            "cpu": report.machine.cpu,
            "logical_cores": report.machine.logical_cores,
            "build_profile": report.machine.build_profile,
            "model": report.model.name,
            "model_checksum": report.model.checksum,
            "sampling": report.sampling,
            "reference": report.reference,
        });
        if let Some(c) = context.as_object() {
            for (k, val) in c {
                obj.insert(k.clone(), val.clone());
            }
        }
    }
    v.to_string()
}
