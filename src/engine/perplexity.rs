//! Perplexity as llama.cpp's `llama-perplexity` computes it, and KL divergence from a base run.
//!
//! The text is tokenized once (with `<bos>`) and cut into chunks of `ctx` tokens; each chunk is
//! evaluated from an empty cache with its first token replaced by `<bos>`, and the negative
//! log-likelihood of tokens `ctx / 2 + 1 .. ctx` (each predicted from all before it in the
//! chunk) is averaged. The ± is llama.cpp's: PPL times the standard error of the mean NLL.

use super::Engine;
use crate::{Error, Result};
use std::path::Path;

/// Candidates kept per position in a KL base file: with the scored token, the ids whose
/// log-probabilities the GPU computes per position.
pub const KL_TOP: usize = crate::model::LOG_PROB_IDS - 1;

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
/// the log of the remaining mass, and what the run was (checked against the run comparing
/// with it: a base from another text, context or vocabulary would give a meaningless KL).
struct Base {
    ids: Vec<u32>,
    logp: Vec<f32>,
    rest: Vec<f32>,
    run: Run,
}

/// What a KL base was made from, stored in the file's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    vocab: usize,
    ctx: usize,
    /// Scored positions.
    rows: usize,
    /// FNV-1a of the text's token ids.
    tokens: u64,
}

/// Marks a KL base file and its layout version.
const KL_FORMAT: &str = "gemma-wgpu kl-base 1";

/// FNV-1a (64 bits) of the token ids' little-endian bytes: a fingerprint of the text as this
/// tokenizer reads it, not a security measure.
fn fingerprint(tokens: &[u32]) -> u64 {
    tokens
        .iter()
        .flat_map(|t| t.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
}

fn read_base(path: &Path) -> Result<Base> {
    let bad = |m: String| Error::Checkpoint {
        path: path.display().to_string(),
        message: m,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let not_base = |e: safetensors::SafeTensorError| bad(format!("not a KL base file ({e})"));
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_base)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_base)?;
    let meta = header.metadata().as_ref();
    let field = |k: &str| meta.and_then(|m| m.get(k));
    if field("format").map(String::as_str) != Some(KL_FORMAT) {
        return Err(bad(format!(
            "not a KL base file of this version (no `format: {KL_FORMAT}` in its metadata); \
             make it again with `perplexity --kl-base`"
        )));
    }
    let number = |k: &str| -> Result<u64> {
        field(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("KL base metadata `{k}` is missing or not a number")))
    };
    let run = Run {
        vocab: number("vocab")? as usize,
        ctx: number("ctx")? as usize,
        rows: number("rows")? as usize,
        tokens: field("tokens")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .ok_or_else(|| bad("KL base metadata `tokens` is missing or not hex".into()))?,
    };
    let get = |n: &str, dtype: safetensors::Dtype, shape: &[usize]| {
        let t = st.tensor(n).map_err(|e| bad(format!("{n}: {e}")))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(bad(format!(
                "tensor `{n}`: expected {dtype:?} {shape:?}, found {:?} {:?}",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t.data().to_vec())
    };
    let (rows, top) = (run.rows, KL_TOP);
    let base = Base {
        ids: bytemuck::pod_collect_to_vec(&get("ids", safetensors::Dtype::U32, &[rows, top])?),
        logp: bytemuck::pod_collect_to_vec(&get("logp", safetensors::Dtype::F32, &[rows, top])?),
        rest: bytemuck::pod_collect_to_vec(&get("rest", safetensors::Dtype::F32, &[rows])?),
        run,
    };
    if let Some(id) = base.ids.iter().find(|&&i| i as usize >= run.vocab) {
        return Err(bad(format!(
            "token id {id} is outside the KL base's vocabulary of {}",
            run.vocab
        )));
    }
    if base.logp.iter().chain(&base.rest).any(|v| !v.is_finite()) {
        return Err(bad(
            "the KL base holds log-probabilities that are not finite".into(),
        ));
    }
    Ok(base)
}

impl Base {
    /// Refuses a base made from another vocabulary, context or text than `run`.
    fn check(&self, path: &Path, run: Run) -> Result<()> {
        let b = self.run;
        let problem = if b.vocab != run.vocab {
            format!(
                "was made with a vocabulary of {} tokens; this model has {} (another model \
                 family?)",
                b.vocab, run.vocab
            )
        } else if b.ctx != run.ctx {
            format!(
                "was made with --ctx {}; this run uses --ctx {}",
                b.ctx, run.ctx
            )
        } else if b.tokens != run.tokens || b.rows != run.rows {
            "was made from another text (or tokenizer): its tokens differ from this run's".into()
        } else {
            return Ok(());
        };
        Err(Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("this KL base {problem}"),
        })
    }
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
    let r = base.run;
    let metadata = [
        ("format", KL_FORMAT.to_string()),
        ("vocab", r.vocab.to_string()),
        ("ctx", r.ctx.to_string()),
        ("rows", r.rows.to_string()),
        ("tokens", format!("{:016x}", r.tokens)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors::serialize(tensors, Some(metadata)).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    super::write_new_file(path, &bytes)
}

/// Checks `--kl-base` before a long run: an existing file must be a well-formed KL base, a
/// new one must be writable.
pub fn check_kl_base(path: &Path) -> Result<()> {
    if path.exists() {
        read_base(path).map(drop)
    } else {
        super::check_new_file(path)
    }
}

/// What a run does with `--kl-base`.
pub enum KlBase<'a> {
    None,
    /// Compare with the base run saved in this file.
    Compare(&'a Path),
    /// Save this run as a base to this (new) file.
    Save(&'a Path),
}

/// The shortest chunk: its second half (the scored tokens) holds two or more.
pub const MIN_CTX: usize = 4;

impl Engine {
    /// Chunks of `ctx` tokens in `tokens` tokens: at least one, each fitting the context.
    fn perplexity_chunks(&self, tokens: usize, ctx: usize) -> Result<usize> {
        if ctx < MIN_CTX {
            return Err(Error::InvalidSetting {
                name: "ctx",
                message: format!(
                    "must be at least {MIN_CTX} tokens (each chunk's second half is scored), not {ctx}"
                ),
            });
        }
        if ctx > self.model.ctx() {
            return Err(Error::ContextFull {
                needed: ctx,
                ctx: self.model.ctx(),
            });
        }
        match tokens / ctx {
            0 => Err(Error::Tokenizer(format!(
                "the text has {tokens} tokens, fewer than one chunk of {ctx}"
            ))),
            chunks => Ok(chunks),
        }
    }

    /// Perplexity of `text` in chunks of `ctx` tokens; `progress(chunk, running ppl)` after each.
    pub fn perplexity(
        &mut self,
        text: &str,
        ctx: usize,
        kl: KlBase,
        mut progress: impl FnMut(usize, f64),
    ) -> Result<Perplexity> {
        let tokens = self.tokenizer.encode(text, true)?;
        let chunks = self.perplexity_chunks(tokens.len(), ctx)?;
        let bos = self.model.config().bos_id.unwrap_or(2);
        let first = ctx / 2;
        let run = Run {
            vocab: self.model.config().vocab,
            ctx,
            rows: chunks * (ctx - 1 - first),
            tokens: fingerprint(&tokens),
        };
        let base = kl.open(run)?;
        let mut saved = Base {
            ids: vec![],
            logp: vec![],
            rest: vec![],
            run,
        };
        let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
        let (mut kl_sum, mut kl2) = (0.0f64, 0.0f64);
        for c in 0..chunks {
            let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
            chunk[0] = bos;
            self.model.reset();
            // Positions before `first` only build the context; `first .. ctx - 1` are scored.
            self.model.prefill(&chunk[..first])?;
            let scored = &chunk[first..ctx - 1];
            let ids = scored_ids(&chunk[first + 1..], base.as_ref(), count)?;
            let save = matches!(kl, KlBase::Save(_));
            self.model
                .log_probs_each(scored, &ids, save, |i, _, lp, logits| {
                    let v = -(lp[0] as f64);
                    nll += v;
                    nll2 += v * v;
                    if let Some(b) = &base {
                        let d = kl_of_row(b, count + i, &lp[1..]);
                        kl_sum += d;
                        kl2 += d * d;
                    }
                    if let Some(logits) = logits {
                        saved.push_row(logits);
                    }
                })?;
            count += scored.len();
            progress(c, (nll / count as f64).exp());
        }
        if let KlBase::Save(p) = kl {
            write_base(p, &saved)?;
        }
        let n = count as f64;
        let (mean, mean_error) = mean_and_error(nll, nll2, n);
        let ppl = mean.exp();
        Ok(Perplexity {
            ppl,
            error: ppl * mean_error,
            chunks,
            scored: count,
            kl: base.map(|_| mean_and_error(kl_sum, kl2, n)),
        })
    }
}

/// The ids whose log-probabilities a chunk's scored positions need: per position its target
/// (`targets[i]`), then the KL base's candidates for scored row `row0 + i` (or the target
/// again when there is no base).
fn scored_ids(targets: &[u32], base: Option<&Base>, row0: usize) -> Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(targets.len() * (1 + KL_TOP));
    for (i, &target) in targets.iter().enumerate() {
        ids.push(target);
        match base {
            Some(b) if (row0 + i + 1) * KL_TOP <= b.ids.len() => {
                ids.extend_from_slice(&b.ids[(row0 + i) * KL_TOP..][..KL_TOP])
            }
            Some(_) => {
                return Err(Error::Tokenizer(
                    "the KL base file covers fewer positions".into(),
                ));
            }
            None => ids.extend(std::iter::repeat_n(target, KL_TOP)),
        }
    }
    Ok(ids)
}

/// The mean of n values given their sum and sum of squares, and its standard error.
fn mean_and_error(sum: f64, sum_sq: f64, n: f64) -> (f64, f64) {
    let mean = sum / n;
    let var = (sum_sq / n - mean * mean).max(0.0);
    (mean, (var / (n - 1.0)).sqrt())
}

impl KlBase<'_> {
    /// The base to compare with (checked against this run), or `None`; a file to save to is
    /// checked to be new before the run.
    fn open(&self, run: Run) -> Result<Option<Base>> {
        match self {
            KlBase::Compare(p) => {
                let base = read_base(p)?;
                base.check(p, run)?;
                Ok(Some(base))
            }
            KlBase::Save(p) => {
                super::check_new_file(p)?;
                Ok(None)
            }
            KlBase::None => Ok(None),
        }
    }
}

/// KL(base || ours) at scored row `row` (which the base holds) from the base's
/// top-[`KL_TOP`] log-probabilities and the mass of the rest, given ours at the same ids.
fn kl_of_row(b: &Base, row: usize, mine: &[f32]) -> f64 {
    let mine: Vec<f64> = mine.iter().map(|&l| l as f64).collect();
    let inside: f64 = mine.iter().map(|l| l.exp()).sum();
    let rest = (1.0 - inside).max(1e-30).ln();
    let base_lp = &b.logp[row * KL_TOP..][..KL_TOP];
    let mut d: f64 = base_lp
        .iter()
        .zip(&mine)
        .map(|(&p, &q)| (p as f64).exp() * (p as f64 - q))
        .sum();
    let br = b.rest[row] as f64;
    d += br.exp() * (br - rest);
    d
}

impl Base {
    /// Appends a row's top-[`KL_TOP`] ids and log-probabilities and the rest's.
    fn push_row(&mut self, logits: &[f32]) {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.select_nth_unstable_by(KL_TOP, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        let top = &order[..KL_TOP];
        let (lp, rest) = log_probs(logits, top);
        self.ids.extend_from_slice(top);
        self.logp.extend(lp.iter().map(|&v| v as f32));
        self.rest.push(rest as f32);
    }
}
