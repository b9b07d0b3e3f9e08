//! A whole step for a fixed number of token rows, bound once at load: the embedding, every
//! layer, the head, and the copies the host reads back.

use super::LOG_PROB_IDS;
use super::kernels::Kernels;
use super::layer::{Around, LayerDispatches, Tap};
use super::state::RunState;
use super::weights::GpuWeights;
use crate::Result;
use crate::config::ModelConfig;
use crate::gpu::{Dispatch, Gpu, Readback, Recorder};
use crate::kernels::embedding::EmbeddingArgs;
use crate::kernels::log_prob::LogProbBuffers;
use crate::kernels::matrix::MatrixArgs;
use crate::kernels::soft_cap::SoftCapBuffers;
use crate::kernels::{GpuMatrix, TopKOutput};

/// What a step ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// Nothing: the step only fills the caches (a prompt prefix).
    None,
    /// The final norm and nothing after it (activation dumps).
    FinalNorm,
    /// The candidates for the token after row `row` (only the best one when `greedy`), read
    /// back with the hidden state they come from.
    Candidates { row: usize, greedy: bool },
    /// A greedy step of one token whose best next token is also copied into the next step's
    /// input on the GPU (so that step can be submitted before this one is read back); read
    /// back to the candidates' readback `slot` (0 or 1).
    Chained { slot: usize },
    /// Every row's logits, read back with the final norm's output (needs `all_logits`).
    AllLogits,
    /// Every row's log-sum-exp and the log-probabilities of its `LOG_PROB_IDS` ids, read back
    /// with whether the final norm's output is finite (every row of the step, padding rows
    /// included); `full` also reads back what `AllLogits` does (needs `all_logits`).
    LogProbs { full: bool },
}

/// Where a step can be looked into (activation dumps, the search for a non-finite value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The scaled embedding in `x`.
    Embedded,
    /// Inside layer `layer`, where `tap` says.
    Layer { layer: usize, tap: Tap },
    /// The residual stream `x` after layer `layer`.
    LayerOut(usize),
    /// The final norm's output in `h`.
    FinalNorm,
}

pub(crate) struct Plan {
    /// Token rows per step.
    pub rows: usize,
    embed: Vec<Dispatch>,
    layers: Vec<LayerDispatches>,
    /// lm_head of one row: logits \[vocab\] before the final soft-cap (`final_soft_cap`, or
    /// the argmax, applies it).
    head: Vec<Dispatch>,
    /// The best logit (the final soft-cap applied as it ranks), or the final soft-cap and
    /// then the best `candidates`.
    top1: TopKOutput,
    final_soft_cap: Option<Dispatch>,
    top_k: TopKOutput,
    /// lm_head of every row and the final soft-cap (with `all_logits`).
    all_logits: Vec<Dispatch>,
    /// The rows' log-probabilities at their ids (with `all_logits`).
    log_probs: Vec<Dispatch>,
    /// Handles to the run state's buffers the step copies.
    ids: wgpu::Buffer,
    h: wgpu::Buffer,
    h_last: wgpu::Buffer,
    non_finite_flag: wgpu::Buffer,
    logits_all: Option<wgpu::Buffer>,
    candidates: [Readback; 2],
    all_logits_readback: Option<Readback>,
    log_probs_out: Option<wgpu::Buffer>,
    log_probs_readback: Option<Readback>,
    hidden: usize,
    /// Candidates read back for sampling.
    k: usize,
}

impl Plan {
    pub fn build(
        gpu: &Gpu,
        c: &ModelConfig,
        kernels: &Kernels,
        (w, s): (&GpuWeights, &RunState),
        rows: usize,
        candidates: usize,
    ) -> Result<Plan> {
        let k = kernels;
        let embed_kernels = k.matrix(w.embed.format);
        // The first layer's input norm comes with the embedding.
        let first_norm = w.layers.first().map_or(&w.final_norm, |l| &l.input_norm);
        // A decode step's embedding quantizes its norm where the first q/k/v read it so.
        let first_qkv = w.layers.first().map_or(&[][..], |l| &l.qkv[..]);
        let embed_hq = rows == 1
            && embed_kernels.embedding.quantizes_h()
            && first_qkv
                .iter()
                .any(|m| k.matrix(m.format).matvec.quantizes_x());
        let embed = EmbeddingArgs {
            table: &w.embed,
            ids: &s.ids,
            n: rows,
            scale: w.embed_scale,
            out: &s.x,
            norm: (first_norm, c.eps, c.norm_offset),
            h: &s.h,
            hq: embed_hq.then_some(&s.hq),
        };
        let embed = embed_kernels.embedding.bind(gpu, "embed", embed)?;
        // A layer's last norm quantizes its output where the products that follow (the next
        // layer's q/k/v, the lm_head) read it so.
        let mut layers = Vec::with_capacity(w.layers.len());
        let mut hq_in = embed_hq;
        for (i, l) in w.layers.iter().enumerate() {
            let rope = &w.rope[w.rope_of_layer[i]];
            let next = w.layers.get(i + 1);
            let around = Around {
                next_norm: next.map_or(&w.final_norm, |n| &n.input_norm),
                next_products: next.map_or(std::slice::from_ref(&w.embed), |n| &n.qkv[..]),
                hq_in,
            };
            let layer = LayerDispatches::bind(gpu, c, i, k, (l, rope, around), s, rows)?;
            hq_in = layer.writes_hq;
            layers.push(layer);
        }
        // A decode step's final norm writes h quantized where the lm_head reads it so (h is
        // then h_last, its one row).
        let head_hq = (rows == 1 && hq_in).then_some(&s.hq);
        let head = lm_head(gpu, c, k, (&w.embed, (&s.h_last, head_hq), &s.logits), 1)?;
        let (top1, final_soft_cap, top_k) = candidate_heads(gpu, c, k, s, candidates)?;
        let all_logits = match &s.logits_all {
            Some(logits_all) => lm_head(gpu, c, k, (&w.embed, (&s.h, None), logits_all), rows)?,
            None => vec![],
        };
        let log_probs = log_probs(gpu, c, k, s, rows)?;
        Ok(Plan {
            rows,
            embed,
            layers,
            head,
            top1,
            final_soft_cap,
            top_k,
            all_logits,
            log_probs,
            ids: s.ids.clone(),
            h: s.h.clone(),
            h_last: s.h_last.clone(),
            non_finite_flag: s.non_finite.clone(),
            logits_all: s.logits_all.clone(),
            candidates: s.candidates.clone(),
            all_logits_readback: s.all_logits.clone(),
            log_probs_out: s.log_probs.clone(),
            log_probs_readback: s.log_probs_readback.clone(),
            hidden: c.hidden,
            k: candidates,
        })
    }

    /// Records a step ending with `head`, readback copies included.
    pub fn record(&self, rec: &mut Recorder, head: Head) {
        self.record_probed(rec, head, &mut |_, _| {});
    }

    /// As [`Plan::record`], calling `probe` wherever a [`Probe`] can be read.
    pub fn record_probed(
        &self,
        rec: &mut Recorder,
        head: Head,
        probe: &mut dyn FnMut(&mut Recorder, Probe),
    ) {
        rec.begin_pass("layers");
        rec.dispatch_all(&self.embed);
        probe(rec, Probe::Embedded);
        for (i, layer) in self.layers.iter().enumerate() {
            layer.record(rec, &mut |rec, tap| {
                probe(rec, Probe::Layer { layer: i, tap })
            });
            probe(rec, Probe::LayerOut(i));
        }
        if head == Head::None {
            return;
        }
        probe(rec, Probe::FinalNorm);
        match head {
            Head::None | Head::FinalNorm => {}
            Head::Candidates { row, greedy } => self.record_candidates(rec, row, greedy, 0),
            Head::Chained { slot } => {
                self.record_candidates(rec, 0, true, slot);
                rec.copy(&self.top1.indices, 0, &self.ids, 0, 4);
            }
            Head::AllLogits => self.record_all_logits(rec),
            Head::LogProbs { full } => self.record_log_probs(rec, full),
        }
    }

    /// Row `row` of the final norm's output through the lm_head and the soft-cap, the best
    /// logits, and their copy for the host to readback `slot`: values \[k\], ids \[k\], then
    /// whether the row holds a NaN or an infinity.
    fn record_candidates(&self, rec: &mut Recorder, row: usize, greedy: bool, slot: usize) {
        let bytes = (self.hidden * 4) as u64;
        rec.copy(&self.h, row as u64 * bytes, &self.h_last, 0, bytes);
        rec.begin_pass("head");
        rec.dispatch_all(&self.head);
        if !greedy {
            rec.dispatch_all(&self.final_soft_cap);
        }
        let top = if greedy { &self.top1 } else { &self.top_k };
        rec.dispatch_all(&top.dispatches);
        let k = self.k as u64 * 4;
        let readback = &self.candidates[slot];
        rec.read_back(readback, &top.values, 0);
        rec.read_back(readback, &top.indices, k);
        let flag = (&self.non_finite_flag, row as u64 * 4);
        rec.copy_part_to_readback(readback, flag, 2 * k, 4);
    }

    /// Every row's logits, and their copy for the host followed by the final norm's output.
    fn record_all_logits(&self, rec: &mut Recorder) {
        let (Some(logits), Some(readback)) = (&self.logits_all, &self.all_logits_readback) else {
            return;
        };
        rec.dispatch_all(&self.all_logits);
        rec.read_back(readback, logits, 0);
        rec.read_back(readback, &self.h, logits.size());
    }

    /// The rows' log-probabilities at their ids and the flag for `h`, for the host; with
    /// `full` also every row's logits and `h`.
    fn record_log_probs(&self, rec: &mut Recorder, full: bool) {
        let (Some(out), Some(readback)) = (&self.log_probs_out, &self.log_probs_readback) else {
            return;
        };
        if full {
            self.record_all_logits(rec);
        } else {
            rec.dispatch_all(&self.all_logits);
        }
        rec.dispatch_all(&self.log_probs);
        rec.read_back(readback, out, 0);
        let flags = (&self.non_finite_flag, 0);
        rec.copy_part_to_readback(readback, flags, out.size(), self.rows as u64 * 4);
    }
}

/// The heads of a candidates step: the argmax (greedy), the final soft-cap and the top-k
/// (sampled).
fn candidate_heads(
    gpu: &Gpu,
    c: &ModelConfig,
    k: &Kernels,
    s: &RunState,
    candidates: usize,
) -> Result<(TopKOutput, Option<Dispatch>, TopKOutput)> {
    // Greedy steps' argmax applies the final soft-cap to what it ranks (a dispatch and a
    // pass over the vocabulary fewer); the top-k of a sampled step ranks the logits the
    // soft-cap kernel wrote (its single-invocation slices would compute every tanh on one
    // lane of a CPU adapter's eight: 2B, k = 40, lavapipe 2.97 against 1.24 + 1.15 ms).
    let final_soft_cap = c
        .final_softcap
        .map(|cap| {
            let x = SoftCapBuffers { x: &s.logits };
            k.soft_cap.bind(gpu, "final_soft_cap", c.vocab, cap, x)
        })
        .transpose()?;
    let capped = (&s.logits, c.vocab, c.final_softcap);
    let top1 = (k.top_k).bind(gpu, "argmax", capped, 1, &s.argmax)?;
    let plain = (&s.logits, c.vocab, None);
    let top_k = (k.top_k).bind(gpu, "top_k", plain, candidates, &s.top_k)?;
    Ok((top1, final_soft_cap, top_k))
}

/// With `all_logits`: every row's log-probabilities at its ids.
fn log_probs(
    gpu: &Gpu,
    c: &ModelConfig,
    k: &Kernels,
    s: &RunState,
    rows: usize,
) -> Result<Vec<Dispatch>> {
    Ok(match (&s.logits_all, &s.log_prob_ids, &s.log_probs) {
        (Some(logits), Some(ids), Some(out)) => vec![(k.log_prob).bind(
            gpu,
            "log_prob",
            (rows, c.vocab, LOG_PROB_IDS),
            LogProbBuffers { logits, ids, out },
        )?],
        _ => vec![],
    })
}

/// logits [rows, vocab] = h [rows, hidden] embed^T (the tied lm_head), then for more than one
/// row the final soft-cap (one row's is applied by the candidates' head); labelled `lm_head`
/// for one row, `lm_head.all` for every row of a step.
fn lm_head(
    gpu: &Gpu,
    c: &ModelConfig,
    k: &Kernels,
    (embed, (h, hq), logits): (
        &GpuMatrix,
        (&wgpu::Buffer, Option<&wgpu::Buffer>),
        &wgpu::Buffer,
    ),
    rows: usize,
) -> Result<Vec<Dispatch>> {
    let suffix = if rows == 1 { "" } else { ".all" };
    let args = MatrixArgs {
        xq: hq,
        ..MatrixArgs::new(embed, h, logits, rows)
    };
    let mut d = k.product(gpu, &format!("lm_head{suffix}"), args)?;
    // One row's logits feed the candidates' head, which applies the soft-cap itself.
    if let Some(cap) = c.final_softcap.filter(|_| rows > 1) {
        let n = rows * c.vocab;
        let label = format!("final_soft_cap{suffix}");
        d.push(
            k.soft_cap
                .bind(gpu, &label, n, cap, SoftCapBuffers { x: logits })?,
        );
    }
    Ok(d)
}
