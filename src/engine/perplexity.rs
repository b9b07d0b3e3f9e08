//! Perplexity as llama.cpp's `llama-perplexity` computes it, and KL divergence from a base run.
//!
//! The text is tokenized once (with `<bos>`) and cut into chunks of `ctx` tokens; each chunk is
//! evaluated from an empty cache with its first token replaced by `<bos>`, and the negative
//! log-likelihood of tokens `ctx / 2 + 1 .. ctx` (each predicted from all before it in the
//! chunk) is averaged. The ± is llama.cpp's: PPL times the standard error of the mean NLL.

use super::Engine;
use crate::{Error, Result};
use std::path::Path;

/// Candidates kept per position in a KL base file.
pub const KL_TOP: usize = 256;

#[derive(Clone, Debug)]
pub struct Perplexity {
    pub ppl: f64,
    /// llama.cpp's ±.
    pub error: f64,
    pub chunks: usize,
    pub scored: usize,
    /// Mean KL divergence from the base run, and its standard error, when one was given.
    pub kl: Option<(f64, f64)>,
}

/// log-softmax of `logits` at `ids`, and log of the probability mass outside them.
fn log_probs(logits: &[f32], ids: &[u32]) -> (Vec<f64>, f64) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    let lp: Vec<f64> = ids
        .iter()
        .map(|&i| logits[i as usize] as f64 - lse)
        .collect();
    let inside: f64 = lp.iter().map(|l| l.exp()).sum();
    (lp, (1.0 - inside).max(1e-30).ln())
}

/// The KL base: per scored position, the base run's KL_TOP best ids with their log-probs and
/// the log of the remaining mass.
struct Base {
    ids: Vec<u32>,
    logp: Vec<f32>,
    rest: Vec<f32>,
}

fn read_base(path: &Path) -> Result<Base> {
    let bad = |m: String| Error::Checkpoint {
        path: path.display().to_string(),
        message: m,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a KL base file ({e})")))?;
    let get = |n: &str| st.tensor(n).map_err(|e| bad(format!("{n}: {e}")));
    Ok(Base {
        ids: bytemuck::pod_collect_to_vec(get("ids")?.data()),
        logp: bytemuck::pod_collect_to_vec(get("logp")?.data()),
        rest: bytemuck::pod_collect_to_vec(get("rest")?.data()),
    })
}

fn view<'a>(
    path: &Path,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
) -> Result<safetensors::tensor::TensorView<'a>> {
    safetensors::tensor::TensorView::new(dtype, shape, data).map_err(|e| Error::Checkpoint {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn write_base(path: &Path, base: &Base) -> Result<()> {
    let n = base.rest.len();
    let tensors = [
        (
            "ids",
            view(
                path,
                safetensors::Dtype::U32,
                vec![n, KL_TOP],
                bytemuck::cast_slice(&base.ids),
            )?,
        ),
        (
            "logp",
            view(
                path,
                safetensors::Dtype::F32,
                vec![n, KL_TOP],
                bytemuck::cast_slice(&base.logp),
            )?,
        ),
        (
            "rest",
            view(
                path,
                safetensors::Dtype::F32,
                vec![n],
                bytemuck::cast_slice(&base.rest),
            )?,
        ),
    ];
    safetensors::serialize_to_file(tensors, None, path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// What a run does with `--kl-base`.
pub enum KlBase<'a> {
    None,
    /// Compare with the base run saved in this file.
    Compare(&'a Path),
    /// Save this run as a base to this (new) file.
    Save(&'a Path),
}

impl Engine {
    /// Perplexity of `text` in chunks of `ctx` tokens; `progress(chunk, running ppl)` after each.
    pub fn perplexity(
        &mut self,
        text: &str,
        ctx: usize,
        kl: KlBase,
        mut progress: impl FnMut(usize, f64),
    ) -> Result<Perplexity> {
        let tokens = self.tokenizer.encode(text, true)?;
        if ctx < 4 || ctx > self.model.ctx {
            return Err(Error::ContextFull {
                needed: ctx,
                ctx: self.model.ctx,
            });
        }
        let chunks = tokens.len() / ctx;
        if chunks == 0 {
            return Err(Error::Tokenizer(format!(
                "the text has {} tokens, fewer than one chunk of {ctx}",
                tokens.len()
            )));
        }
        let bos = self.model.config.bos_id.unwrap_or(2);
        let base = match kl {
            KlBase::Compare(p) => Some(read_base(p)?),
            _ => None,
        };
        let mut saved = Base {
            ids: vec![],
            logp: vec![],
            rest: vec![],
        };
        let first = ctx / 2;
        let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
        let (mut kl_sum, mut kl2) = (0.0f64, 0.0f64);
        for c in 0..chunks {
            let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
            chunk[0] = bos;
            self.model.reset();
            // Positions before `first` only build the context; `first .. ctx - 1` are scored.
            self.model.prefill(&chunk[..first])?;
            let scored = &chunk[first..ctx - 1];
            let mut failure = None;
            self.model.logits_each(scored, |i, logits| {
                let target = chunk[first + i + 1];
                let row = count + i;
                let (lp, _) = log_probs(logits, &[target]);
                let v = -lp[0];
                nll += v;
                nll2 += v * v;
                match (&base, &kl) {
                    (Some(b), _) => {
                        if (row + 1) * KL_TOP > b.ids.len() {
                            failure = Some(Error::Tokenizer(
                                "the KL base file covers fewer positions".into(),
                            ));
                            return;
                        }
                        let ids = &b.ids[row * KL_TOP..][..KL_TOP];
                        let (mine, rest) = log_probs(logits, ids);
                        let base_lp = &b.logp[row * KL_TOP..][..KL_TOP];
                        let mut d: f64 = base_lp
                            .iter()
                            .zip(&mine)
                            .map(|(&p, &q)| (p as f64).exp() * (p as f64 - q))
                            .sum();
                        let br = b.rest[row] as f64;
                        d += br.exp() * (br - rest);
                        kl_sum += d;
                        kl2 += d * d;
                    }
                    (None, KlBase::Save(_)) => {
                        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
                        order.select_nth_unstable_by(KL_TOP, |&a, &b| {
                            logits[b as usize].total_cmp(&logits[a as usize])
                        });
                        let top = &order[..KL_TOP];
                        let (lp, rest) = log_probs(logits, top);
                        saved.ids.extend_from_slice(top);
                        saved.logp.extend(lp.iter().map(|&v| v as f32));
                        saved.rest.push(rest as f32);
                    }
                    _ => {}
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            count += scored.len();
            progress(c, (nll / count as f64).exp());
        }
        if let KlBase::Save(p) = kl {
            write_base(p, &saved)?;
        }
        let n = count as f64;
        let mean = nll / n;
        let var = (nll2 / n - mean * mean).max(0.0);
        let ppl = mean.exp();
        let kl = base.map(|_| {
            let m = kl_sum / n;
            (m, ((kl2 / n - m * m).max(0.0) / (n - 1.0)).sqrt())
        });
        Ok(Perplexity {
            ppl,
            error: ppl * (var / (n - 1.0)).sqrt(),
            chunks,
            scored: count,
            kl,
        })
    }
}
