//! `gpt2-bench check --golden FILE`: the CI equivalence check against an independent
//! implementation.
//!
//! Runs every selected backend on a golden file's prompt ids (see `gpt2_export::golden`) and
//! requires, for each: exactly the golden greedy ids, and logits within [`LOGIT_TOLERANCE`] of
//! the golden logits for every step that has them. Prints one line per backend; exit status 1 on
//! any difference.

use anyhow::Context;
use gpt2_backends::EngineOptions;
use gpt2_backends::engine::check_finite;
use gpt2_export::golden::Golden;
use gpt2_weights::WeightFile;

use crate::sampling::greedy_choice;

/// Largest absolute logit difference accepted: the same tolerance the backends are held to
/// against each other (torch and our backends sum in different orders).
pub use gpt2_backends::LOGIT_TOLERANCE;

/// One backend's verdict.
pub struct Outcome {
    pub backend: String,
    /// Index of the first generated token that differs, if any.
    pub first_wrong_token: Option<usize>,
    /// Largest logit difference over the golden steps.
    pub max_logit_diff: f32,
    /// What it is held to: [`LOGIT_TOLERANCE`], or a backend's own where its arithmetic
    /// rounds differently by construction (llama.cpp: `BackendSpec::logit_tolerance`).
    pub tolerance: f32,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        // `<=` is false for NaN: a NaN difference fails.
        self.first_wrong_token.is_none() && self.max_logit_diff <= self.tolerance
    }
}

/// The largest |a - b|; NaN if any difference is NaN (`f32::max` would drop it and report a
/// perfect match), infinite if the lengths differ.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m: f32, d| if d.is_nan() || d > m { d } else { m })
}

/// Runs `backends` against the golden file; `model` overrides the golden checkpoint.
pub fn run(
    golden_path: &std::path::Path,
    model: Option<&std::path::Path>,
    backends: &[String],
    options: &EngineOptions,
) -> anyhow::Result<(Golden, Vec<Outcome>)> {
    let golden = Golden::load(golden_path)?;
    // Removed when dropped, and by the signal handler on Ctrl-C (gpt2_process::cli).
    let scratch = gpt2_weights::write::TempDir::new().context("creating a temporary directory")?;
    let path = match model {
        Some(p) => p.to_path_buf(),
        None => golden.weight_file(scratch.path())?,
    };
    let file = WeightFile::open_verified(&path)?;
    let vocab = file.config().vocab_size as usize;
    if let Some(row) = golden.logits.first()
        && row.len() != vocab
    {
        anyhow::bail!(
            "--golden {}: its logits have {} entries but {} has a vocabulary of {vocab}; \
             give the model it was made from",
            golden_path.display(),
            row.len(),
            path.display()
        );
    }
    let weights = file.gpt2()?;
    // For each backend's own logit tolerance (`BackendSpec::logit_tolerance`).
    let model = gpt2_backends::Model::from(weights.clone());
    let mut outcomes = Vec::new();
    for name in backends {
        let mut engine = gpt2_backends::create(name, &weights, options)?;
        let mut logits = engine
            .prefill(&golden.prompt_token_ids)
            .with_context(|| format!("backend {name}"))?
            .to_vec();
        check_finite(engine.name(), 0, &logits).with_context(|| format!("backend {name}"))?;
        let mut outcome = Outcome {
            backend: name.clone(),
            first_wrong_token: None,
            max_logit_diff: 0.0,
            tolerance: gpt2_backends::registry::spec(name)
                .map_or(LOGIT_TOLERANCE, |s| s.logit_tolerance(&model)),
        };
        let n = golden.greedy_token_ids.len();
        for (step, &want) in golden.greedy_token_ids.iter().enumerate() {
            if let Some(row) = golden.logits.get(step) {
                let d = max_abs_diff(&logits, row);
                if d.is_nan() || d > outcome.max_logit_diff {
                    outcome.max_logit_diff = d;
                }
            }
            let (token, _) = greedy_choice(&logits);
            if token != want {
                outcome.first_wrong_token = Some(step);
                break;
            }
            if step + 1 < n {
                logits = engine
                    .step(token)
                    .with_context(|| format!("backend {name}"))?
                    .to_vec();
                check_finite(engine.name(), step + 1, &logits)
                    .with_context(|| format!("backend {name}"))?;
            }
        }
        outcomes.push(outcome);
    }
    Ok((golden, outcomes))
}

/// The report: one line per backend.
pub fn render(golden: &Golden, outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "golden {}: {} prompt tokens, {} greedy tokens, logits for {} step(s), tolerance {:e}\n",
        golden.path.display(),
        golden.prompt_token_ids.len(),
        golden.greedy_token_ids.len(),
        golden.logits.len(),
        LOGIT_TOLERANCE
    );
    // Every backend far from the golden logits (and, being checked against each other in
    // their own tests, close to one another): the weights are not the golden checkpoint's,
    // which says more than "token 0 differs" five times.
    let wrong_model = !outcomes.is_empty()
        && outcomes
            .iter()
            .all(|o| o.max_logit_diff.is_nan() || o.max_logit_diff > WRONG_MODEL_LOGIT_DIFF);
    for o in outcomes {
        let verdict = match (o.first_wrong_token, o.max_logit_diff <= o.tolerance) {
            (None, true) => "ok".to_string(),
            _ if wrong_model => "FAIL: not the golden file's model".to_string(),
            (Some(step), _) => format!("FAIL: generated token {step} differs"),
            (None, false) => "FAIL: logits beyond tolerance".to_string(),
        };
        // A backend held to its own tolerance says so.
        let own = if o.tolerance == LOGIT_TOLERANCE {
            String::new()
        } else {
            format!(" (its tolerance {:e})", o.tolerance)
        };
        out.push_str(&format!(
            "{:<10} max logit difference {:.2e}{own}  {verdict}\n",
            o.backend, o.max_logit_diff
        ));
    }
    if wrong_model {
        out.push_str(&format!(
            "the model does not match the golden file's checkpoint ({}): every backend's logits \
             differ from the golden ones by more than {WRONG_MODEL_LOGIT_DIFF} (rounding differs \
             by about 1e-5). Drop --model to check the checkpoint the golden file names, or give \
             the model it was made from\n",
            golden.checkpoint.display()
        ));
    }
    out
}

/// A logit difference no rounding produces (250 times the tolerance): beyond it on every
/// backend, the model is not the one the golden file was made from.
pub const WRONG_MODEL_LOGIT_DIFF: f32 = 0.5;
