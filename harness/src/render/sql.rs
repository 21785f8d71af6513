//! SQL, as llama-bench's `-o sql`: `CREATE TABLE IF NOT EXISTS results`, then one `INSERT` per
//! result row, in a transaction; the table and rows are the results store's own
//! ([`crate::store::RESULT_COLUMNS`]), so `gpt2-bench compare --format sql | sqlite3
//! bench-runs/results.sqlite` adds the run's rows to a store (the `runs` table, with the whole
//! record, is filled by `--save` only). Written when the run is over: the rows' key is a hash
//! of the whole run.

use super::Renderer;
use crate::record::Report;

pub struct Sql;

impl Renderer for Sql {
    fn footer(&mut self, report: &Report) -> String {
        crate::store::report_as_sql(report)
    }
}
