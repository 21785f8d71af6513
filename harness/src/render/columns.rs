//! The one list of a result row's columns, which the wide table, Markdown, CSV and the compact
//! table all read (llama-bench's way: one field list, a printer per format). A column says
//! where it shows (its table title, its CSV field names) and how to get its value from a row;
//! the value's type says how each format writes it: a table cell for people (`12.3 ± 0.4`,
//! `87%`, `1.52x`), CSV fields for programs (numbers only: mean and standard deviation apart,
//! fractions as fractions, bytes as bytes, an empty field where there is no value).
//!
//! The CSV's fields keep the order they have always had (scripts read them by position), so
//! the list is in that order and a field added later goes last.

use crate::record::{BackendResult, Divergence};
use crate::stats::Summary;

/// One column of a result row.
pub struct Column {
    /// Its title in the wide table and Markdown (and the compact table's lookup key); `None`
    /// where it is in the CSV only.
    pub title: Option<&'static str>,
    /// Its CSV field names: one, two for a mean and its standard deviation (or a flag and its
    /// detail), none where it is in the tables only.
    pub csv: &'static [&'static str],
    /// Its value in a row. `reference` is the report's reference backend.
    pub value: fn(&BackendResult, &str) -> Value,
}

/// A cell's value, typed so that each format can write it its own way.
pub enum Value {
    /// Text shown as is; `csv` is what the CSV gets (a row's label in tables, its backend in
    /// the CSV; the device in the threads column, the count in the CSV).
    Text { shown: String, csv: String },
    /// A count.
    Count(u64),
    /// Bytes: megabytes with `decimals` in tables, bytes in the CSV.
    Bytes { bytes: Option<u64>, decimals: usize },
    /// Mean ± standard deviation over runs, the mean with `decimals` in the wide table.
    Stat { s: Option<Summary>, decimals: usize },
    /// Milliseconds.
    Ms(Option<f64>),
    /// A fraction: a percentage in tables.
    Fraction(Option<f64>),
    /// A ratio: `1.52x` in tables.
    Ratio(f64),
    /// Whether the tokens matched: words in tables, `true`/`false` in the CSV.
    Match { shown: String, matched: bool },
    /// The key/value cache: `no`, `yes` (f32) or its dtype in tables; two CSV fields.
    KvCache { cached: bool, dtype: String },
}

const DASH: &str = "-";

impl Value {
    /// The wide table's and Markdown's cell.
    pub fn cell(&self) -> String {
        match self {
            Value::Text { shown, .. } | Value::Match { shown, .. } => shown.clone(),
            Value::Count(n) => n.to_string(),
            Value::Bytes { bytes, decimals } => bytes.map_or_else(
                || DASH.to_string(),
                |b| format!("{:.decimals$}", b as f64 / 1e6),
            ),
            Value::Stat { s, decimals } => s
                .as_ref()
                .map_or_else(|| DASH.to_string(), |s| mean_sd(s, *decimals)),
            Value::Ms(ms) => ms.map_or_else(|| DASH.to_string(), |v| format!("{v:.1}")),
            Value::Fraction(f) => {
                f.map_or_else(|| DASH.to_string(), |v| format!("{:.0}%", v * 100.0))
            }
            Value::Ratio(r) => format!("{r:.2}x"),
            Value::KvCache { cached, dtype } => match (cached, dtype.as_str()) {
                (false, _) => "no".to_string(),
                (true, "f32") => "yes".to_string(),
                (true, dtype) => dtype.to_string(),
            },
        }
    }

    /// The compact table's cell: fewer decimals, as the number's size calls for.
    pub fn short_cell(&self) -> String {
        match self {
            Value::Stat { s: Some(s), .. } => {
                let decimals = match s.mean.abs() {
                    m if m >= 100.0 => 0,
                    m if m >= 1.0 => 1,
                    _ => 2,
                };
                mean_sd(s, decimals)
            }
            Value::Ms(Some(ms)) if *ms >= 100.0 => format!("{ms:.0}"),
            other => other.cell(),
        }
    }

    /// The CSV's fields (as many as the column's `csv` names).
    pub fn csv_fields(&self) -> Vec<String> {
        let num = |x: Option<f64>| x.map_or_else(String::new, |v| format!("{v}"));
        match self {
            Value::Text { csv, .. } => vec![csv_field(csv)],
            Value::Count(n) => vec![n.to_string()],
            Value::Bytes { bytes, .. } => vec![bytes.map_or_else(String::new, |b| b.to_string())],
            Value::Stat { s, .. } => vec![
                num(s.as_ref().map(|s| s.mean)),
                num(s.as_ref().map(|s| s.stddev)),
            ],
            Value::Ms(v) | Value::Fraction(v) => vec![num(*v)],
            Value::Ratio(r) => vec![num(Some(*r))],
            Value::Match { matched, .. } => vec![matched.to_string()],
            Value::KvCache { cached, dtype } => vec![cached.to_string(), csv_field(dtype)],
        }
    }
}

/// `mean ± stddev`, the stddev left out for a single run.
fn mean_sd(s: &Summary, decimals: usize) -> String {
    if s.n > 1 {
        format!("{:.decimals$} ± {:.decimals$}", s.mean, s.stddev)
    } else {
        format!("{:.decimals$}", s.mean)
    }
}

/// A CSV field, quoted where it holds a comma, a quote or a newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// What tables and charts call a row: its label (the backend, with the dtype when the report
/// compares several files); the backend for reports saved before labels existed.
pub fn shown(r: &BackendResult) -> &str {
    if r.label.is_empty() {
        &r.backend
    } else {
        &r.label
    }
}

/// Whether the row's tokens match the reference's, in words.
fn match_words(r: &BackendResult, reference: &str) -> String {
    if r.backend == reference {
        if r.runs_agree {
            "reference".to_string()
        } else {
            "NO (runs differ)".to_string()
        }
    } else if r.tokens_match {
        "yes".to_string()
    } else if r.follows_other_rule() && r.runs_agree {
        // Not expected to be equal: how close it came (docs/backends.md, llama.cpp).
        // (When its tokens are equal the row says `yes` above; its agreement is in the JSON.)
        match &r.agreement {
            Some(a) => format!("different rule (top-1 {:.0}%)", 100.0 * a.top1_agreement),
            None => "different rule".to_string(),
        }
    } else if !r.runs_agree {
        "NO (runs differ)".to_string()
    } else {
        match &r.divergence {
            Some(Divergence { step, .. }) => format!("NO (step {step})"),
            None => "NO".to_string(),
        }
    }
}

fn text(shown: impl Into<String>, csv: impl Into<String>) -> Value {
    Value::Text {
        shown: shown.into(),
        csv: csv.into(),
    }
}

/// Every column, in the CSV's order. "speedup" is against the reference backend (the first, or
/// `--reference`) at the same prompt length: its total time (prefill and every decode step)
/// over this row's, in every format.
pub const COLUMNS: &[Column] = &[
    Column {
        title: Some("backend"),
        csv: &["backend"],
        value: |r, _| text(shown(r), &r.backend),
    },
    Column {
        title: None,
        csv: &["device"],
        value: |r, _| text(&r.device, &r.device),
    },
    Column {
        title: Some("threads"),
        csv: &["threads"],
        value: |r, _| {
            let shown = if r.device == "cpu" {
                r.threads.to_string()
            } else {
                r.device.clone()
            };
            text(shown, r.threads.to_string())
        },
    },
    Column {
        title: Some("dtype"),
        csv: &["dtype"],
        value: |r, _| text(&r.dtype, &r.dtype),
    },
    Column {
        title: None,
        csv: &["model_file"],
        value: |r, _| text(&r.model_file, &r.model_file),
    },
    Column {
        title: Some("MB/token"),
        csv: &["weight_bytes_per_token"],
        value: |r, _| Value::Bytes {
            bytes: Some(r.weight_bytes_per_token),
            decimals: 1,
        },
    },
    Column {
        title: Some("KV cache"),
        csv: &["kv_cache", "kv_cache_dtype"],
        value: |r, _| Value::KvCache {
            cached: r.kv_cache,
            dtype: r.kv_cache_dtype.clone(),
        },
    },
    Column {
        title: Some("prompt tok"),
        csv: &["prompt_tokens"],
        value: |r, _| Value::Count(r.prompt_tokens as u64),
    },
    Column {
        title: Some("new tok"),
        csv: &["new_tokens"],
        value: |r, _| Value::Count(r.new_tokens as u64),
    },
    Column {
        title: None,
        csv: &["runs"],
        value: |r, _| Value::Count(r.runs as u64),
    },
    Column {
        title: Some("TTFT ms"),
        csv: &["ttft_ms_mean", "ttft_ms_stddev"],
        value: |r, _| Value::Stat {
            s: Some(r.ttft_ms),
            decimals: 1,
        },
    },
    Column {
        title: Some("prefill tok/s"),
        csv: &["prefill_tok_per_s_mean", "prefill_tok_per_s_stddev"],
        value: |r, _| Value::Stat {
            s: Some(r.prefill_tok_per_s),
            decimals: 1,
        },
    },
    Column {
        title: Some("decode tok/s"),
        csv: &["decode_tok_per_s_mean", "decode_tok_per_s_stddev"],
        value: |r, _| Value::Stat {
            s: r.decode_tok_per_s,
            decimals: 2,
        },
    },
    Column {
        title: Some("p50 ms"),
        csv: &["decode_p50_ms"],
        value: |r, _| Value::Ms(r.decode_latency.map(|l| l.p50_ms)),
    },
    Column {
        title: Some("p99 ms"),
        csv: &["decode_p99_ms"],
        value: |r, _| Value::Ms(r.decode_latency.map(|l| l.p99_ms)),
    },
    Column {
        title: Some("% roofline"),
        csv: &["decode_roofline_fraction"],
        value: |r, _| Value::Fraction(r.decode_roofline_fraction),
    },
    Column {
        title: Some("% read now"),
        csv: &["decode_read_fraction"],
        value: |r, _| Value::Fraction(r.decode_read_fraction),
    },
    Column {
        title: Some("prefill % peak"),
        csv: &["prefill_peak_fraction"],
        value: |r, _| Value::Fraction(r.prefill_peak_fraction),
    },
    Column {
        title: Some("peak RSS MB"),
        csv: &["peak_rss_bytes"],
        value: |r, _| Value::Bytes {
            bytes: r.memory.peak_rss_bytes,
            decimals: 0,
        },
    },
    Column {
        title: Some("speedup"),
        csv: &["speedup_vs_reference"],
        value: |r, _| Value::Ratio(r.speedup_vs_reference),
    },
    Column {
        title: Some("tokens match"),
        csv: &["tokens_match"],
        value: |r, reference| Value::Match {
            shown: match_words(r, reference),
            matched: r.tokens_match,
        },
    },
    // Last: added after the others, so scripts that read the CSV by position keep working.
    Column {
        title: Some("isa"),
        csv: &["isa"],
        value: |r, _| text(&r.isa, &r.isa),
    },
    Column {
        title: None,
        csv: &["rule"],
        value: |r, _| text(&r.rule, &r.rule),
    },
];

/// The column titled `title` (the compact table picks its columns by title).
pub fn column(title: &str) -> &'static Column {
    COLUMNS
        .iter()
        .find(|c| c.title == Some(title))
        .unwrap_or_else(|| panic!("no column titled {title:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV keeps its field names in their order: scripts read them by position.
    #[test]
    fn the_csv_fields_keep_their_order() {
        let names: Vec<&str> = COLUMNS.iter().flat_map(|c| c.csv.iter().copied()).collect();
        assert_eq!(names.first(), Some(&"backend"));
        assert_eq!(names.last(), Some(&"rule"));
        assert_eq!(names.len(), 27);
        let unique: std::collections::HashSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "a CSV field appears twice");
    }

    #[test]
    fn values_are_cells_for_people_and_fields_for_programs() {
        let s = Summary {
            mean: 123.456,
            stddev: 7.0,
            median: 0.0,
            min: 0.0,
            max: 0.0,
            n: 3,
        };
        let v = Value::Stat {
            s: Some(s),
            decimals: 1,
        };
        assert_eq!(v.cell(), "123.5 ± 7.0");
        assert_eq!(v.short_cell(), "123 ± 7");
        assert_eq!(v.csv_fields(), ["123.456", "7"]);
        assert_eq!(Value::Fraction(Some(0.875)).cell(), "88%");
        assert_eq!(Value::Fraction(None).csv_fields(), [""]);
        assert_eq!(text("a,b", "a,b").csv_fields(), ["\"a,b\""]);
    }
}
