//! JSON: the whole record (its schema is `crate::record`'s, versioned by `SCHEMA_VERSION`),
//! every raw sample included, written when the run is over.

use super::{Renderer, RunStart};
use crate::record::{BackendResult, Report};

pub struct Json;

impl Renderer for Json {
    fn header(&mut self, _: &RunStart<'_>) -> String {
        String::new()
    }

    fn row(&mut self, _: &BackendResult) -> String {
        String::new()
    }

    fn footer(&mut self, report: &Report) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
    }
}
