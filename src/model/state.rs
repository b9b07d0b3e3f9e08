//! The run state: every buffer a step reads or writes besides the weights, allocated together
//! at load, and the one record of what the KV caches hold.

use super::LOG_PROB_IDS;
use crate::config::ModelConfig;
use crate::gpu::{Gpu, Readback};
use crate::kernels::quantize_q8::{BLOCK, WORDS_PER_BLOCK};
use crate::kernels::{Attention, KvCache, KvDtype, TopKScratch};
use crate::{Error, Result};

/// Activations are sized for the largest step (`rows` token rows); every plan shares them.
pub(crate) struct RunState {
    // Inputs of a step.
    /// \[rows\] u32 token ids.
    pub ids: wgpu::Buffer,
    /// \[rows\] u32 positions.
    pub positions: wgpu::Buffer,

    // The residual stream and one layer's activations.
    /// [rows, hidden]
    pub x: wgpu::Buffer,
    /// [rows, hidden]: a norm's output (the input of q/k/v, of gate/up, of the lm_head).
    pub h: wgpu::Buffer,
    /// \[hidden / 32 * 24\] words: a decode step's h quantized to int8 blocks of 32, where
    /// the products that read h take it so (kernels::Matvec::quantizes_x).
    pub hq: wgpu::Buffer,
    /// [rows, heads * head_dim + 2 kv_heads * head_dim]: q, k and v side by side, as projected.
    pub qkv: wgpu::Buffer,
    /// [rows, heads * head_dim]: q normed (Gemma 3) and rotated, attention's input.
    pub q: wgpu::Buffer,
    /// [rows, heads * head_dim]: attention's output, o_proj's input.
    pub attn: wgpu::Buffer,
    /// \[heads * head_dim / 32 * 24\] words: a decode step's attn quantized to int8 blocks
    /// of 32, where o_proj takes it so and attention writes it
    /// (kernels::Attention::quantizes_out).
    pub attn_q: wgpu::Buffer,
    /// [rows, hidden]: o_proj's and down_proj's outputs, before their norms.
    pub o: wgpu::Buffer,
    /// [rows, 2 * intermediate]: gate then up, per row.
    pub gate_up: wgpu::Buffer,
    /// [rows, intermediate]: gelu_tanh(gate) * up.
    pub act: wgpu::Buffer,
    /// \[intermediate / 32 * 24\] words: a decode step's act quantized to int8 blocks of 32,
    /// where down_proj takes it so and the GeGLU product writes it
    /// (kernels::Matvec::quantizes_geglu).
    pub act_q: wgpu::Buffer,

    // The head.
    /// \[hidden\]: the row of `h` whose next token is wanted.
    pub h_last: wgpu::Buffer,
    /// \[vocab\]
    pub logits: wgpu::Buffer,
    /// [rows, vocab] (with `all_logits`).
    pub logits_all: Option<wgpu::Buffer>,

    /// One per layer: keys and values, [capacity, kv_heads * head_dim] each.
    pub caches: Vec<KvCache>,

    // Scratch of multi-phase kernels, shared by the layers and plans (their steps run in
    // order).
    /// Attention's per-split partial results, sized for the largest layer and step.
    pub attention_partials: wgpu::Buffer,
    /// The top-k's candidates per slice, and its result: for the best logit, and for the
    /// `candidates` best.
    pub argmax: TopKScratch,
    pub top_k: TopKScratch,

    /// \[rows\] u32: 1 where a row of `h` after the final norm holds a NaN or an infinity
    /// (a soft-capped logit is finite even when the hidden state is not, so that is checked
    /// too), written by the last layer's norm.
    pub non_finite: wgpu::Buffer,

    // What the host reads back.
    /// The candidates' values \[k\] and ids \[k\], then their row's `non_finite` flag: an
    /// ordinary step's in the first, chained greedy steps' in each in turn (one is read while
    /// the next step copies to the other).
    pub candidates: [Readback; 2],
    /// Every row's logits [rows, vocab], then `h` [rows, hidden] (with `all_logits`).
    pub all_logits: Option<Readback>,
    /// With `all_logits`: [rows, LOG_PROB_IDS] u32 ids whose log-probabilities a step
    /// computes, and its result [rows, 1 + LOG_PROB_IDS] (each row's log-sum-exp, then the
    /// ids' log-probabilities), read back followed by the step's rows' `non_finite` flags.
    pub log_prob_ids: Option<wgpu::Buffer>,
    pub log_probs: Option<wgpu::Buffer>,
    pub log_probs_readback: Option<Readback>,

    /// Tokens the caches hold, in order: the only record of the context.
    cached: Vec<u32>,
}

/// The cached token of a chained step until it is read back (no vocabulary has this id).
const CHAINED: u32 = u32::MAX;

/// What [`RunState::new`] allocates for.
pub(crate) struct StateShape {
    /// Token rows of the largest step.
    pub rows: usize,
    /// Positions the caches hold (the context), and the cache's element type.
    pub ctx: usize,
    pub kv: KvDtype,
    /// Candidates read back per step.
    pub candidates: usize,
    pub all_logits: bool,
}

impl RunState {
    pub fn new(gpu: &Gpu, c: &ModelConfig, s: &StateShape) -> Result<RunState> {
        let rows = s.rows;
        let f = |label: &str, n: usize| gpu.storage_zeroed(label, (n * 4) as u64);
        let caches = c
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                // A sliding layer keeps the window plus one prefill step; a global one all.
                let capacity = match spec.window {
                    Some(w) => (w + rows - 1).min(s.ctx + rows),
                    None => s.ctx + rows,
                };
                KvCache::new(gpu, &format!("L{i:02}.kv"), s.kv, capacity, c.kv_dim())
            })
            .collect::<Result<Vec<KvCache>>>()?;
        // Every plan's step: fewer queries can mean more key splits.
        let steps = super::plan_rows(rows);
        let partials = (0..c.layers.len())
            .flat_map(|i| steps.iter().map(move |&n| (i, n)))
            .map(|(i, n)| {
                let capacity = caches[i].capacity;
                Attention::partials_len(gpu, n, &c.attention_shape(i), capacity)
            })
            .max()
            .unwrap_or(1);
        Ok(RunState {
            ids: f("ids", rows),
            positions: f("positions", rows),
            x: f("x", rows * c.hidden),
            h: f("h", rows * c.hidden),
            hq: f("hq", c.hidden.div_ceil(BLOCK) * WORDS_PER_BLOCK),
            qkv: f("qkv", rows * (c.q_dim() + 2 * c.kv_dim())),
            q: f("q", rows * c.q_dim()),
            attn: f("attn", rows * c.q_dim()),
            attn_q: f("attn_q", c.q_dim().div_ceil(BLOCK) * WORDS_PER_BLOCK),
            o: f("o", rows * c.hidden),
            gate_up: f("gate_up", rows * 2 * c.intermediate),
            act: f("act", rows * c.intermediate),
            act_q: f("act_q", c.intermediate.div_ceil(BLOCK) * WORDS_PER_BLOCK),
            h_last: f("h_last", c.hidden),
            logits: f("logits", c.vocab),
            logits_all: s.all_logits.then(|| f("logits_all", rows * c.vocab)),
            caches,
            attention_partials: f("attention.partials", partials),
            argmax: TopKScratch::new(gpu, "argmax", c.vocab, 1),
            top_k: TopKScratch::new(gpu, "top_k", c.vocab, s.candidates),
            non_finite: f("non_finite", rows),
            candidates: [0, 1].map(|i| {
                Readback::new(
                    gpu,
                    &format!("candidates.{i}"),
                    (s.candidates * 8 + 4) as u64,
                )
            }),
            all_logits: s
                .all_logits
                .then(|| Readback::new(gpu, "logits", (rows * (c.vocab + c.hidden) * 4) as u64)),
            log_prob_ids: s.all_logits.then(|| f("log_prob.ids", rows * LOG_PROB_IDS)),
            log_probs: s
                .all_logits
                .then(|| f("log_prob.out", rows * (1 + LOG_PROB_IDS))),
            log_probs_readback: s
                .all_logits
                .then(|| Readback::new(gpu, "log_probs", (rows * (2 + LOG_PROB_IDS) * 4) as u64)),
            cached: vec![],
        })
    }

    /// Tokens the caches hold, in order.
    pub fn cached(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the cached context.
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    /// Writes the inputs of a step that feeds `tokens` after the cached ones, padded to
    /// `rows` with the last token again at the following positions (their results are never
    /// read and their cache slots are rewritten before any query can see them; a token of the
    /// step, so a padding row is not what makes a step's values not finite), and records them
    /// as cached. `ctx` bounds the context.
    pub fn feed(&mut self, gpu: &Gpu, tokens: &[u32], rows: usize, ctx: usize) -> Result<()> {
        let start = self.cached.len();
        if start + tokens.len() > ctx {
            return Err(Error::ContextFull {
                needed: start + tokens.len(),
                ctx,
            });
        }
        self.write_inputs(gpu, tokens, start, rows);
        self.cached.extend_from_slice(tokens);
        Ok(())
    }

    /// Writes the position of a chained greedy step, whose token the step before it writes
    /// on the GPU, and records a placeholder for that token until [`RunState::settle`].
    pub fn feed_chained(&mut self, gpu: &Gpu, ctx: usize) -> Result<()> {
        let start = self.cached.len();
        if start + 1 > ctx {
            return Err(Error::ContextFull {
                needed: start + 1,
                ctx,
            });
        }
        let position = start as u32;
        gpu.queue
            .write_buffer(&self.positions, 0, bytemuck::bytes_of(&position));
        self.cached.push(CHAINED);
        Ok(())
    }

    /// The token a chained step fed, once read back.
    pub fn settle(&mut self, token: u32) {
        if let Some(last) = self.cached.last_mut().filter(|t| **t == CHAINED) {
            *last = token;
        }
    }

    /// Forgets the last token fed: its cache entries are rewritten by the next step at its
    /// position before any query can see them.
    pub fn unfeed(&mut self) {
        self.cached.pop();
    }

    /// Writes a step's inputs for `tokens` at positions from `start` (a replay of an earlier
    /// step rewrites the same cache entries with the same values).
    pub fn write_inputs(&self, gpu: &Gpu, tokens: &[u32], start: usize, rows: usize) {
        let mut ids = tokens.to_vec();
        ids.resize(rows, tokens.last().copied().unwrap_or(0));
        let positions: Vec<u32> = (0..rows).map(|i| (start + i) as u32).collect();
        gpu.queue
            .write_buffer(&self.ids, 0, bytemuck::cast_slice(&ids));
        gpu.queue
            .write_buffer(&self.positions, 0, bytemuck::cast_slice(&positions));
    }

    /// Bytes of the KV caches.
    pub fn kv_bytes(&self) -> u64 {
        self.caches.iter().map(|c| c.k.size() + c.v.size()).sum()
    }
}
