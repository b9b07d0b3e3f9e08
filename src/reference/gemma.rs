//! The Gemma forward pass on the CPU, written to be read: the specification the GPU model is
//! tested against (transformers' modeling_gemma.py, modeling_gemma2.py, modeling_gemma3.py).

use super::{
    AttentionShape, add, attention, embedding, geglu, matmul, rms_norm, rope, rope_table, soft_cap,
};
use crate::config::ModelConfig;

/// One decoder layer; matrices are [out, in] row-major f32, norms \[len\].
pub struct Layer {
    pub input_norm: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Gemma 3: per-head norms of q and k, \[head_dim\].
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub o: Vec<f32>,
    /// Gemma 2 and 3 only.
    pub post_attention_norm: Option<Vec<f32>>,
    pub pre_feedforward_norm: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
    /// Gemma 2 and 3 only.
    pub post_feedforward_norm: Option<Vec<f32>>,
}

/// Every weight as f32 (tests load them from a checkpoint, through the production weight
/// formats, so that the reference computes with exactly the GPU's values).
pub struct Weights {
    /// [vocab, hidden], also the tied lm_head.
    pub embed: Vec<f32>,
    pub embed_scale: f32,
    pub layers: Vec<Layer>,
    pub final_norm: Vec<f32>,
}

/// Logits [tokens, vocab] (after the final soft-cap, if any) of `tokens` at positions 0, 1, ...
pub fn forward(c: &ModelConfig, w: &Weights, tokens: &[u32]) -> Vec<f32> {
    forward_traced(c, w, tokens, &mut |_, _| {})
}

/// [`forward`], calling `trace(name, [tokens, width])` with each named activation in order:
/// `embed`, then per layer `L07.attn_out` (o_proj's output), `L07.mlp_out` (down_proj's) and
/// `L07.out` (the residual stream), then `final_norm`; the names `Model::activations` uses.
pub fn forward_traced(
    c: &ModelConfig,
    w: &Weights,
    tokens: &[u32],
    trace: &mut dyn FnMut(&str, &[f32]),
) -> Vec<f32> {
    let n = tokens.len();
    let positions: Vec<u32> = (0..n as u32).collect();
    let norm = |x: &[f32], weight: &[f32]| rms_norm(x, weight, c.eps, c.norm_offset);
    // h0 = E[ids] * sqrt(hidden), the scale rounded to the checkpoint's dtype.
    let mut x = embedding(&w.embed, c.hidden, tokens, w.embed_scale);
    trace("embed", &x);
    for (i, l) in w.layers.iter().enumerate() {
        let shape: AttentionShape = c.attention_shape(i);
        let spec = c.layers[i];
        let table = rope_table(spec.rope_theta, spec.rope_factor, c.head_dim, n);
        // Attention block: input norm, q/k/v, (Gemma 3) per-head q/k norms, RoPE (before
        // caching), attention, o_proj, (Gemma 2, 3) post-attention norm, residual.
        let h = norm(&x, &l.input_norm);
        let mut q = matmul(&l.q, &h, c.q_dim(), c.hidden);
        let mut k = matmul(&l.k, &h, c.kv_dim(), c.hidden);
        let v = matmul(&l.v, &h, c.kv_dim(), c.hidden);
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            q = norm(&q, qn);
            k = norm(&k, kn);
        }
        rope(&mut q, &positions, c.heads, c.head_dim, &table);
        rope(&mut k, &positions, c.kv_heads, c.head_dim, &table);
        let a = attention(&q, &k, &v, &positions, &shape);
        let o = matmul(&l.o, &a, c.hidden, c.q_dim());
        trace(&format!("L{i:02}.attn_out"), &o);
        match &l.post_attention_norm {
            Some(pn) => add(&mut x, &norm(&o, pn)),
            None => add(&mut x, &o),
        }
        // Feed-forward block: pre norm, GeGLU (gate through gelu_tanh, times up), down_proj,
        // (Gemma 2, 3) post norm, residual.
        let h = norm(&x, &l.pre_feedforward_norm);
        let gate = matmul(&l.gate, &h, c.intermediate, c.hidden);
        let up = matmul(&l.up, &h, c.intermediate, c.hidden);
        let gate_up: Vec<f32> = gate
            .chunks(c.intermediate)
            .zip(up.chunks(c.intermediate))
            .flat_map(|(g, u)| g.iter().chain(u).copied())
            .collect();
        let act = geglu(&gate_up, c.intermediate);
        let d = matmul(&l.down, &act, c.hidden, c.intermediate);
        trace(&format!("L{i:02}.mlp_out"), &d);
        match &l.post_feedforward_norm {
            Some(pn) => add(&mut x, &norm(&d, pn)),
            None => add(&mut x, &d),
        }
        trace(&format!("L{i:02}.out"), &x);
    }
    // Final norm, tied lm_head (the unscaled embedding), final soft-cap.
    let h = norm(&x, &w.final_norm);
    trace("final_norm", &h);
    let mut logits = matmul(&w.embed, &h, c.vocab, c.hidden);
    if let Some(cap) = c.final_softcap {
        soft_cap(&mut logits, cap);
    }
    logits
}
