//! Choosing the next token from the GPU's top candidates.
//!
//! The GPU returns the k highest logits (after the final soft-cap); sampling happens among
//! them on the CPU. Order of operations as transformers' generate: repetition penalty,
//! temperature, then top-k, top-p and min-p filtering.

use crate::model::Candidates;
use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means all candidates.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// 1 means none; > 1 discourages tokens already in the context (CTRL-style, as
    /// transformers: positive logits divided, negative multiplied).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// The most tokens one generation may ask for (`--max-tokens`, a request's `max_tokens`):
/// more than any context holds.
pub const MAX_TOKENS_LIMIT: usize = 1 << 20;

fn invalid<T>(name: &'static str, message: String) -> Result<T> {
    Err(Error::InvalidSetting { name, message })
}

impl SamplingParams {
    pub fn greedy(&self) -> bool {
        self.temperature <= 0.0 && self.repetition_penalty == 1.0
    }

    /// Checks every value's range. Out of range, sampling goes wrong silently: a NaN
    /// temperature turns every probability into NaN (the last candidate always wins), a
    /// penalty of 0 or NaN repeats one token forever.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return invalid(
                "temperature",
                format!("must be a finite number >= 0 (0 is greedy), not {t}"),
            );
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return invalid("top_p", format!("must be in (0, 1], not {p}"));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return invalid("min_p", format!("must be in [0, 1], not {m}"));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return invalid(
                "repetition_penalty",
                format!("must be a finite number > 0 (1 is none), not {r}"),
            );
        }
        Ok(())
    }
}

/// A `top_k` as given (a command line takes any integer): 0 or more, 0 meaning every
/// candidate.
pub fn top_k_from(given: i64) -> Result<usize> {
    usize::try_from(given).or_else(|_| {
        invalid(
            "top_k",
            format!("must be a whole number >= 0 (0: every candidate), not {given}"),
        )
    })
}

/// A `max_tokens` as given: from 0 to `limit` (at most [`MAX_TOKENS_LIMIT`]).
pub fn max_tokens_from(given: i64, limit: usize) -> Result<usize> {
    count("max_tokens", given, limit.min(MAX_TOKENS_LIMIT))
}

/// A count of tokens as given, from 0 to `max`; `name` says which in the error.
pub fn count(name: &'static str, given: i64, max: usize) -> Result<usize> {
    match usize::try_from(given) {
        Ok(n) if n <= max => Ok(n),
        _ => invalid(name, format!("must be between 0 and {max}, not {given}")),
    }
}

/// Sampling settings a model ships with: generation_config.json's `temperature`, `top_k`,
/// `top_p` (a Hugging Face directory) or `general.sampling.*` (a GGUF file). `None` where
/// the model says nothing; flags and requests override them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
}

impl SamplingDefaults {
    /// From generation_config.json. `do_sample: false` means greedy whatever else it says;
    /// `do_sample: true` without a temperature samples at 1, as transformers does.
    pub fn from_generation_config(v: &serde_json::Value) -> SamplingDefaults {
        let f = |key: &str| v.get(key).and_then(serde_json::Value::as_f64);
        match v.get("do_sample").and_then(serde_json::Value::as_bool) {
            Some(false) => SamplingDefaults::default(),
            do_sample => SamplingDefaults {
                temperature: f("temperature")
                    .or(do_sample.map(|_| 1.0))
                    .map(|t| t as f32),
                top_k: v.get("top_k").and_then(serde_json::Value::as_i64),
                top_p: f("top_p").map(|p| p as f32),
                min_p: f("min_p").map(|p| p as f32),
            },
        }
    }

    /// From a GGUF file's `general.sampling.temp`, `.top_k`, `.top_p` and `.min_p`.
    pub fn from_gguf(g: &crate::weights::gguf::Gguf) -> SamplingDefaults {
        let f = |key: &str| {
            g.get(&format!("general.sampling.{key}"))
                .and_then(|v| v.as_f64())
        };
        SamplingDefaults {
            temperature: f("temp").map(|t| t as f32),
            top_k: f("top_k").map(|k| k as i64),
            top_p: f("top_p").map(|p| p as f32),
            min_p: f("min_p").map(|p| p as f32),
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token among `c` (best first), given the tokens in the context.
    pub fn sample(&mut self, c: &Candidates, context: &[u32]) -> u32 {
        let p = &self.params;
        let mut logits: Vec<(u32, f32)> = c
            .ids
            .iter()
            .copied()
            .zip(c.logits.iter().copied())
            .collect();
        if p.repetition_penalty != 1.0 {
            for (id, l) in &mut logits {
                if context.contains(id) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
            logits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        if p.temperature <= 0.0 {
            return logits[0].0;
        }
        if p.top_k > 0 {
            logits.truncate(p.top_k);
        }
        let max = logits[0].1;
        let mut probs: Vec<f64> = logits
            .iter()
            .map(|(_, l)| (((l - max) / p.temperature) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        // top-p: the smallest prefix whose mass reaches p (at least one token).
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut mass = 0.0;
            for (i, x) in probs.iter().enumerate() {
                mass += x;
                if mass >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        // min-p: drop tokens below min_p times the best probability.
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&x| x >= floor).count().max(1));
        }
        let probs = &probs[..keep];
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (i, x) in probs.iter().enumerate() {
            r -= x;
            if r <= 0.0 {
                return logits[i].0;
            }
        }
        logits[keep - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_refused_by_name() {
        let name = |p: SamplingParams| match p.validate() {
            Err(Error::InvalidSetting { name, .. }) => name,
            other => panic!("{p:?} gave {other:?}"),
        };
        let d = SamplingParams::default;
        for t in [f32::NAN, f32::INFINITY, -0.5] {
            assert_eq!(
                name(SamplingParams {
                    temperature: t,
                    ..d()
                }),
                "temperature"
            );
        }
        for p in [0.0, 1.5, f32::NAN] {
            assert_eq!(name(SamplingParams { top_p: p, ..d() }), "top_p");
        }
        for m in [-0.1, 1.1, f32::NAN] {
            assert_eq!(name(SamplingParams { min_p: m, ..d() }), "min_p");
        }
        for r in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let p = SamplingParams {
                repetition_penalty: r,
                ..d()
            };
            assert_eq!(name(p), "repetition_penalty");
        }
        let fine = SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.05,
            repetition_penalty: 1.1,
            seed: 1,
        };
        assert!(fine.validate().is_ok() && d().validate().is_ok());
        assert!(top_k_from(-1).is_err() && top_k_from(0).ok() == Some(0));
        assert!(max_tokens_from(-1, MAX_TOKENS_LIMIT).is_err());
        assert!(max_tokens_from(i64::MAX, usize::MAX).is_err());
        assert_eq!(max_tokens_from(64, 64).ok(), Some(64));
        assert!(max_tokens_from(65, 64).is_err());
    }

    fn cands() -> Candidates {
        Candidates {
            ids: vec![7, 3, 9, 1],
            logits: vec![4.0, 3.0, 1.0, -2.0],
        }
    }

    #[test]
    fn greedy_takes_the_best() {
        assert_eq!(
            Sampler::new(SamplingParams::default()).sample(&cands(), &[]),
            7
        );
    }

    #[test]
    fn repetition_penalty_can_demote_the_best() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&cands(), &[7]), 3, "4 / 2 = 2 < 3");
    }

    #[test]
    fn filters_limit_the_choice_and_seeds_repeat() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            seed: 5,
            ..Default::default()
        };
        let draw = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..200)
                .map(|_| s.sample(&cands(), &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(params.clone());
        assert!(a.iter().all(|&t| t == 7 || t == 3));
        assert!(a.contains(&3) && a.contains(&7));
        assert_eq!(a, draw(params.clone()), "same seed, same tokens");
        // top-p 0.5: the best token alone holds 0.73 of the mass.
        let b = draw(SamplingParams {
            top_p: 0.5,
            top_k: 0,
            ..params.clone()
        });
        assert!(b.iter().all(|&t| t == 7));
        // min-p 0.5: 3 has 0.37 of the best probability and is dropped.
        let c = draw(SamplingParams {
            min_p: 0.5,
            top_k: 0,
            ..params
        });
        assert!(c.iter().all(|&t| t == 7));
    }
}
