//! Reasons to doubt a run's timings: one enum, one `Display`, so that every warning a run can
//! give is listed here and worded once. A report keeps them as text (`Report::warnings`, part
//! of the saved JSON), made from these at the end of the run; a thread sweep's children send
//! theirs back as that text.

use std::fmt;

use crate::compare::busy_threshold;

/// One warning about a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// `--threads` above the logical cores: the threads take turns and wait for each other.
    Oversubscribed { threads: usize, cores: usize },
    /// A debug build: its timings mean nothing.
    DebugBuild,
    /// The 1-minute load average before the run was above [`busy_threshold`].
    Busy { load: f64, cores: usize },
    /// Decode steps far from the median step (hyperfine's outlier warning).
    OutlierSteps {
        backend: String,
        prompt_tokens: usize,
        outliers: usize,
        steps: usize,
    },
    /// The first measured run took much longer than the others.
    SlowFirstRun {
        backend: String,
        prompt_tokens: usize,
        first_s: f64,
        median_s: f64,
        warmup: usize,
    },
    /// A warning about one of several `--model` files.
    InFile { file: String, warning: Box<Warning> },
    /// A warning a thread sweep's child reported (its text), at its thread count.
    FromSweep { threads: usize, text: String },
}

impl Warning {
    /// Whether a child's warning `text` is about the whole machine or build (the debug build,
    /// the load), which the parent of a thread sweep says once for all its children.
    pub fn is_machine_wide(text: &str) -> bool {
        text.starts_with(DEBUG_BUILD) || text.starts_with(MACHINE_BUSY)
    }
}

/// How the debug-build and busy-machine warnings start ([`Warning::is_machine_wide`]).
const DEBUG_BUILD: &str = "this is a debug build";
const MACHINE_BUSY: &str = "the machine was busy before this run";

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Oversubscribed { threads, cores } => write!(
                f,
                "--threads {threads} is more than this machine's {cores} logical cores: threads \
                 take turns on the cores and wait for each other, so multi-threaded backends run \
                 slower than with --threads {cores}"
            ),
            Warning::DebugBuild => write!(
                f,
                "{DEBUG_BUILD}: timings are many times slower than a release build and not \
                 comparable; build with `cargo build --release` (or `cargo run --release`)"
            ),
            Warning::Busy { load, cores } => write!(
                f,
                "{MACHINE_BUSY} (1-minute load average {load:.2} on {cores} cores): other \
                 programs compete for cores and memory bandwidth, so timings may be low and \
                 noisy. To measure the code, close them or rerun when the load is below {:.1}; \
                 to measure what a busy machine gives, keep them: simd-kv then sizes its decode \
                 team step by step, and the other multi-threaded backends may run faster with \
                 --threads {}",
                busy_threshold(*cores),
                cores.saturating_sub(1).max(1)
            ),
            Warning::OutlierSteps {
                backend,
                prompt_tokens,
                outliers,
                steps,
            } => write!(
                f,
                "{backend} ({prompt_tokens}-token prompt): {outliers} of {steps} decode steps are \
                 statistical outliers (more than {} median absolute deviations from the median); \
                 other programs may be interfering: run on a quiet machine, or raise --runs",
                crate::stats::OUTLIER_Z
            ),
            Warning::SlowFirstRun {
                backend,
                prompt_tokens,
                first_s,
                median_s,
                warmup,
            } => write!(
                f,
                "{backend} ({prompt_tokens}-token prompt): the first measured run took \
                 {first_s:.2} s, much longer than the others (median {median_s:.2} s): caches, \
                 page faults or frequency scaling; raise --warmup (now {warmup})"
            ),
            Warning::InFile { file, warning } => write!(f, "{file}: {warning}"),
            Warning::FromSweep { threads, text } => {
                write!(f, "{}: {text}", crate::record::threads_phrase(*threads))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep's parent recognises the machine-wide warnings by their text, so the text and the
    /// test of it must stay together.
    #[test]
    fn machine_wide_warnings_are_recognised_by_their_text() {
        assert!(Warning::is_machine_wide(&Warning::DebugBuild.to_string()));
        let busy = Warning::Busy {
            load: 3.0,
            cores: 2,
        };
        assert!(Warning::is_machine_wide(&busy.to_string()));
        let over = Warning::Oversubscribed {
            threads: 4,
            cores: 2,
        };
        assert!(!Warning::is_machine_wide(&over.to_string()));
    }

    #[test]
    fn nested_warnings_name_their_file_and_thread_count() {
        let w = Warning::InFile {
            file: "gpt2-q8_0.bin".into(),
            warning: Box::new(Warning::FromSweep {
                threads: 2,
                text: "x".into(),
            }),
        };
        assert_eq!(w.to_string(), "gpt2-q8_0.bin: 2 threads: x");
    }
}
