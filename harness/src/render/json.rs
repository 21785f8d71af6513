//! JSON: the whole record (its schema is `crate::record`'s, versioned by `SCHEMA_VERSION`),
//! every raw sample included, written when the run is over.

use super::Renderer;
use crate::record::Report;

pub struct Json;

impl Renderer for Json {
    fn footer(&mut self, report: &Report) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
    }
}
