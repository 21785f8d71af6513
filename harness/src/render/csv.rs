//! CSV: the header line, then each row as its backend finishes; numbers only (see
//! [`super::columns`]).

use super::columns::COLUMNS;
use super::{Renderer, RunStart};
use crate::record::{BackendResult, Report};

pub struct Csv;

/// A reference name is not needed by any CSV field (the tokens-match field is a boolean).
const NO_REFERENCE: &str = "";

impl Renderer for Csv {
    fn header(&mut self, _: &RunStart<'_>) -> String {
        let names: Vec<&str> = COLUMNS.iter().flat_map(|c| c.csv.iter().copied()).collect();
        names.join(",") + "\n"
    }

    fn row(&mut self, r: &BackendResult) -> String {
        let fields: Vec<String> = COLUMNS
            .iter()
            .filter(|c| !c.csv.is_empty())
            .flat_map(|c| (c.value)(r, NO_REFERENCE).csv_fields())
            .collect();
        fields.join(",") + "\n"
    }

    fn footer(&mut self, _: &Report) -> String {
        String::new()
    }
}
