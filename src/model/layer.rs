//! One Gemma decoder layer on the GPU: its dispatches, bound once at load, recorded in the
//! order of `reference::gemma::forward`.

use super::kernels::Kernels;
use super::state::RunState;
use super::weights::LayerWeights;
use crate::Result;
use crate::config::ModelConfig;
use crate::gpu::{Dispatch, Gpu, Recorder};
use crate::kernels::rms_norm::RmsNormParams;
use crate::kernels::{GpuMatrix, RopeTable};

/// The activations a layer can show between its steps (see [`LayerDispatches::record`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tap {
    /// o_proj's output, before the post-attention norm and the residual (`RunState::o`).
    AttnOut,
    /// down_proj's output, before the post-feedforward norm and the residual (`RunState::o`).
    MlpOut,
}

impl Tap {
    pub fn name(self) -> &'static str {
        match self {
            Tap::AttnOut => "attn_out",
            Tap::MlpOut => "mlp_out",
        }
    }
}

/// A layer's dispatches for steps of `rows` token rows. A matrix product is one dispatch per
/// chunk of its weight matrix.
pub(crate) struct LayerDispatches {
    /// h = rms_norm(x)
    input_norm: Dispatch,
    /// q, k, v = h Wq, h Wk, h Wv
    q: Vec<Dispatch>,
    k: Vec<Dispatch>,
    v: Vec<Dispatch>,
    /// Gemma 3: per-head rms_norm of q and of k.
    qk_norm: Option<[Dispatch; 2]>,
    /// q and k rotated in place.
    rope_q: Dispatch,
    rope_k: Dispatch,
    /// k and v into the layer's cache, at the rows' positions.
    kv_store: Dispatch,
    /// attn = softmax(soft_cap(q K^T * scale) + mask) V over the cache.
    attention: Vec<Dispatch>,
    /// o = attn Wo
    o_proj: Vec<Dispatch>,
    /// x += rms_norm(o) (Gemma 2, 3), or x += o (Gemma 1).
    post_attention_norm: Dispatch,
    /// h = rms_norm(x)
    pre_feedforward_norm: Dispatch,
    /// [gate | up] = h [Wgate | Wup]
    gate_up: Vec<Dispatch>,
    /// act = gelu_tanh(gate) * up
    geglu: Dispatch,
    /// o = act Wdown
    down: Vec<Dispatch>,
    /// x += rms_norm(o) (Gemma 2, 3), or x += o (Gemma 1).
    post_feedforward_norm: Dispatch,
}

impl LayerDispatches {
    /// Binds layer `i` of `c` with weights `w` to the run state `s`, for `rows` rows.
    pub fn bind(
        gpu: &Gpu,
        c: &ModelConfig,
        i: usize,
        kernels: &Kernels,
        (w, rope): (&LayerWeights, &RopeTable),
        s: &RunState,
        rows: usize,
    ) -> Result<LayerDispatches> {
        let spec = &c.layers[i];
        let k = kernels;
        let label = |step: &str| format!("L{i:02}.{step}");
        let product = |step: &str, m: &GpuMatrix, x: &wgpu::Buffer, y: &wgpu::Buffer| {
            k.product(gpu, &label(step), m, x, y, rows)
        };
        let norm = |d: usize| RmsNormParams {
            n: rows as u32,
            d: d as u32,
            eps: c.eps,
            w_offset: c.norm_offset,
        };
        let rms_norm = |step: &str, x: &wgpu::Buffer, w: &wgpu::Buffer, out: &wgpu::Buffer| {
            k.rms_norm
                .bind(gpu, &label(step), norm(c.hidden), x, w, out)
        };
        // Normed and added into x where the layer has post-norms, else added as it is.
        let residual = |step: &str, w: Option<&wgpu::Buffer>| match w {
            Some(w) => k
                .rms_norm_add
                .bind(gpu, &label(step), norm(c.hidden), &s.o, w, &s.x),
            None => k.add.bind(gpu, &label(step), rows * c.hidden, &s.o, &s.x),
        };
        // Gemma 3 projects q and k into q_raw and k_raw and norms each head into q and k.
        let (q_out, k_out) = match spec.qk_norm {
            true => (&s.q_raw, &s.k_raw),
            false => (&s.q, &s.k),
        };
        let qk_norm = match &w.qk_norm {
            Some([qn, kn]) => {
                let heads = |n: usize| RmsNormParams {
                    n: (rows * n) as u32,
                    ..norm(c.head_dim)
                };
                Some([
                    k.rms_norm
                        .bind(gpu, &label("q_norm"), heads(c.heads), &s.q_raw, qn, &s.q)?,
                    k.rms_norm.bind(
                        gpu,
                        &label("k_norm"),
                        heads(c.kv_heads),
                        &s.k_raw,
                        kn,
                        &s.k,
                    )?,
                ])
            }
            None => None,
        };
        let cache = &s.caches[i];
        Ok(LayerDispatches {
            input_norm: rms_norm("input_norm", &s.x, &w.input_norm, &s.h)?,
            q: product("q", &w.q, &s.h, q_out)?,
            k: product("k", &w.k, &s.h, k_out)?,
            v: product("v", &w.v, &s.h, &s.v)?,
            qk_norm,
            rope_q: k.rope.bind(
                gpu,
                &label("rope.q"),
                rows,
                c.heads,
                rope,
                &s.positions,
                &s.q,
            )?,
            rope_k: k.rope.bind(
                gpu,
                &label("rope.k"),
                rows,
                c.kv_heads,
                rope,
                &s.positions,
                &s.k,
            )?,
            kv_store: k.kv_store.bind(
                gpu,
                &label("kv_store"),
                rows,
                &s.positions,
                &s.k,
                &s.v,
                cache,
            )?,
            attention: k.attention.bind(
                gpu,
                &label("attention"),
                rows,
                &c.attention_shape(i),
                &s.positions,
                &s.q,
                cache,
                &s.attn,
            )?,
            o_proj: product("o", &w.o, &s.attn, &s.o)?,
            post_attention_norm: residual("post_attention_norm", w.post_attention_norm.as_ref())?,
            pre_feedforward_norm: rms_norm(
                "pre_feedforward_norm",
                &s.x,
                &w.pre_feedforward_norm,
                &s.h,
            )?,
            gate_up: product("gate_up", &w.gate_up, &s.h, &s.gate_up)?,
            geglu: k.geglu.bind(
                gpu,
                &label("geglu"),
                rows,
                c.intermediate,
                &s.gate_up,
                &s.act,
            )?,
            down: product("down", &w.down, &s.act, &s.o)?,
            post_feedforward_norm: residual(
                "post_feedforward_norm",
                w.post_feedforward_norm.as_ref(),
            )?,
        })
    }

    /// Records the layer: the steps of `reference::gemma::forward`, line for line. `tap` is
    /// called where an activation it names can be read.
    pub fn record(&self, rec: &mut Recorder, tap: &mut dyn FnMut(&mut Recorder, Tap)) {
        // Attention block: input norm, q/k/v, (Gemma 3) per-head q/k norms, RoPE (before
        // caching), attention, o_proj, (Gemma 2, 3) post-attention norm, residual.
        rec.dispatch(&self.input_norm);
        rec.dispatch_all(&self.q);
        rec.dispatch_all(&self.k);
        rec.dispatch_all(&self.v);
        if let Some([q_norm, k_norm]) = &self.qk_norm {
            rec.dispatch(q_norm);
            rec.dispatch(k_norm);
        }
        rec.dispatch(&self.rope_q);
        rec.dispatch(&self.rope_k);
        rec.dispatch(&self.kv_store);
        rec.dispatch_all(&self.attention);
        rec.dispatch_all(&self.o_proj);
        tap(rec, Tap::AttnOut);
        rec.dispatch(&self.post_attention_norm);
        // Feed-forward block: pre norm, GeGLU (gate through gelu_tanh, times up), down_proj,
        // (Gemma 2, 3) post norm, residual.
        rec.dispatch(&self.pre_feedforward_norm);
        rec.dispatch_all(&self.gate_up);
        rec.dispatch(&self.geglu);
        rec.dispatch_all(&self.down);
        tap(rec, Tap::MlpOut);
        rec.dispatch(&self.post_feedforward_norm);
    }
}
