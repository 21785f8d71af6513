//! How the next token is chosen from the logits: greedy by default, or sampled with temperature,
//! top-k and top-p from one seeded random generator.
//!
//! The choice is made here, in the harness, never in a backend: every backend hands over its
//! logits and the same [`Sampler`] (same settings, same seed) picks the token. Backends whose
//! logits agree therefore draw the same tokens, so `--compare` can still require identical
//! tokens under sampling with a fixed seed.

/// The sampling settings from the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// 0 means greedy (the default); otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = no limit).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingOptions {
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the ranges; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "--temperature {} must be 0 (greedy) or positive",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("--top-p {} must be in (0, 1]", self.top_p));
        }
        Ok(())
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        if self.is_greedy() {
            "greedy".to_string()
        } else {
            format!(
                "sampled: temperature {}, top-k {}, top-p {}, seed {}",
                self.temperature,
                if self.top_k == 0 {
                    "off".to_string()
                } else {
                    self.top_k.to_string()
                },
                self.top_p,
                self.seed
            )
        }
    }
}

/// SplitMix64: a small, well-mixed generator; plenty for choosing tokens, and reproducible
/// across platforms.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Chooses tokens; create one per generated sequence so each starts from the seed.
#[derive(Debug, Clone)]
pub struct Sampler {
    options: SamplingOptions,
    rng: SplitMix64,
    // Reused between tokens: sampling allocates nothing per token after the first.
    candidates: Vec<(f32, u32)>,
    weights: Vec<f64>,
}

/// The greedy choice: index of the largest logit (lowest index on a tie), and the gap between
/// the largest and second-largest logit, which says how close the choice was.
pub fn greedy_choice(logits: &[f32]) -> (u32, f32) {
    let top = greedy_top(logits);
    (top.token, top.top2_gap)
}

/// What one choice was, and how close: what a divergence between backends is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub token: u32,
    /// The largest logit minus the second largest (whatever the sampling mode).
    pub top2_gap: f32,
    /// The largest |logit| of the step: rounding differences between backends grow with the
    /// size of the numbers summed.
    pub logit_magnitude: f32,
}

fn greedy_top(logits: &[f32]) -> Choice {
    let (mut best, mut best_v, mut second_v) = (0usize, f32::NEG_INFINITY, f32::NEG_INFINITY);
    let mut lowest = f32::INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        lowest = lowest.min(v);
        if v > best_v {
            second_v = best_v;
            best_v = v;
            best = i;
        } else if v > second_v {
            second_v = v;
        }
    }
    Choice {
        token: best as u32,
        top2_gap: best_v - second_v,
        logit_magnitude: best_v.abs().max(lowest.abs()),
    }
}

impl Sampler {
    pub fn new(options: SamplingOptions) -> Self {
        Sampler {
            options,
            rng: SplitMix64(options.seed),
            candidates: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// The next token, with the top-1 logit and the top-1 minus top-2 gap (how close the greedy
    /// choice was, reported whatever the mode).
    pub fn choose(&mut self, logits: &[f32]) -> Choice {
        let greedy = greedy_top(logits);
        if self.options.is_greedy() {
            return greedy;
        }
        let t = self.options.temperature;
        // Candidates sorted by logit, highest first (lowest id first on ties: deterministic).
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &v)| (v, i as u32)));
        let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let k = self.options.top_k;
        if k > 0 && k < self.candidates.len() {
            // Partition out the k best first: sorting 50257 logits per token would dominate.
            self.candidates.select_nth_unstable_by(k - 1, order);
            self.candidates.truncate(k);
        }
        self.candidates.sort_unstable_by(order);
        // Softmax of logit / temperature, shifted by the maximum.
        let max = self.candidates[0].0;
        self.weights.clear();
        self.weights.extend(
            self.candidates
                .iter()
                .map(|&(v, _)| f64::from((v - max) / t).exp()),
        );
        let weights = &self.weights;
        let total: f64 = weights.iter().sum();
        // Nucleus: the shortest prefix whose probability reaches top_p.
        let mut keep = weights.len();
        if self.options.top_p < 1.0 {
            let mut mass = 0.0;
            for (i, w) in weights.iter().enumerate() {
                mass += w / total;
                if mass >= f64::from(self.options.top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept_total: f64 = weights[..keep].iter().sum();
        let mut draw = self.rng.next_f64() * kept_total;
        for (w, &(_, id)) in weights[..keep].iter().zip(&self.candidates) {
            if draw < *w {
                return Choice {
                    token: id,
                    ..greedy
                };
            }
            draw -= w;
        }
        // Rounding left a sliver: the last kept token.
        Choice {
            token: self.candidates[keep - 1].1,
            ..greedy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
        Sampler::new(SamplingOptions {
            temperature,
            top_k,
            top_p,
            seed,
        })
    }

    #[test]
    fn lowest_id_wins_a_tie() {
        assert_eq!(greedy_choice(&[1.0, 3.0, 3.0, 2.0]), (1, 0.0));
        assert_eq!(greedy_choice(&[5.0, 1.0, 2.0]), (0, 3.0));
        assert_eq!(greedy_choice(&[-1.0, -0.5]), (1, 0.5));
    }

    #[test]
    fn greedy_is_the_default() {
        let mut s = Sampler::new(SamplingOptions::default());
        assert_eq!(s.choose(&[0.0, 2.0, 1.0]).token, 1);
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = sampled(1.0, 0, 1.0, seed);
            (0..50).map(|_| s.choose(&logits).token).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [5.0, 4.0, 3.0, 0.0, -1.0];
        let mut s = sampled(1.0, 2, 1.0, 1);
        assert!((0..500).all(|_| s.choose(&logits).token < 2));
        // p(0) = 0.665, p(0)+p(1) = 0.910: top-p 0.9 keeps ids 0 and 1 only.
        let mut s = sampled(1.0, 0, 0.9, 1);
        assert!((0..500).all(|_| s.choose(&logits).token < 2));
        // A tiny top-p keeps only the best token.
        let mut s = sampled(1.0, 0, 0.01, 1);
        assert!((0..100).all(|_| s.choose(&logits).token == 0));
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        // ln 3 apart: token 0 should be drawn 3x as often as token 1.
        let logits = [3f32.ln(), 0.0];
        let mut s = sampled(1.0, 0, 1.0, 42);
        let n = 20_000;
        let zeros = (0..n).filter(|_| s.choose(&logits).token == 0).count();
        let p = zeros as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.015, "p(0) = {p}");
        // A low temperature sharpens it: (3^(1/0.25)) = 81 to 1.
        let mut s = sampled(0.25, 0, 1.0, 42);
        let zeros = (0..n).filter(|_| s.choose(&logits).token == 0).count();
        assert!(zeros as f64 / n as f64 > 0.97);
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let bad = |t, p| {
            SamplingOptions {
                temperature: t,
                top_p: p,
                ..SamplingOptions::default()
            }
            .validate()
            .unwrap_err()
        };
        assert!(bad(-1.0, 1.0).contains("--temperature"));
        assert!(bad(f32::NAN, 1.0).contains("--temperature"));
        assert!(bad(1.0, 0.0).contains("--top-p"));
        assert!(bad(1.0, 1.5).contains("--top-p"));
    }
}
