//! One Gemma decoder layer on the GPU: its dispatches, bound once at load, recorded in the
//! order of `reference::gemma::forward`.

use super::kernels::Kernels;
use super::state::RunState;
use super::weights::LayerWeights;
use crate::Result;
use crate::config::ModelConfig;
use crate::gpu::{Dispatch, Gpu, Recorder};
use crate::kernels::add::AddBuffers;
use crate::kernels::attention::{Attention, AttentionArgs, FoldedRope};
use crate::kernels::geglu::GegluBuffers;
use crate::kernels::matrix::MatrixArgs;
use crate::kernels::quantize_q8::BLOCK;
use crate::kernels::residual_norm::{NormOutput, ResidualNormBuffers};
use crate::kernels::rms_norm::{RmsNormBuffers, RmsNormParams};
use crate::kernels::rope_store::RopeStoreArgs;
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
    /// [q | k | v] = h [Wq | Wk | Wv]
    qkv: Vec<Dispatch>,
    /// (Gemma 3) per-head rms_norm of q and of k, q and k rotated, q in place and k and v
    /// into the layer's cache at the rows' positions: one dispatch, or none in decode steps
    /// whose attention does this work itself (kernels::Attention::folds_rope).
    rope_store: Option<Dispatch>,
    /// attn = softmax(soft_cap(q K^T * scale) + mask) V over the cache.
    attention: Vec<Dispatch>,
    /// o = attn Wo
    o_proj: Vec<Dispatch>,
    /// x += rms_norm(o) (Gemma 2, 3), or x += o (Gemma 1); then h = rms_norm(x), the
    /// pre-feedforward norm: one residual_norm dispatch where the layer has post-norms.
    post_attention_norm: Vec<Dispatch>,
    /// act = gelu_tanh(gate) * up of [gate | up] = h [Wgate | Wup]: one dispatch (the
    /// product's GeGLU variant) where gate and up share a chunk, else the product into
    /// `RunState::gate_up` and geglu.
    gate_up_geglu: Vec<Dispatch>,
    /// o = act Wdown
    down: Vec<Dispatch>,
    /// x += rms_norm(o) (Gemma 2, 3), or x += o (Gemma 1); then h = rms_norm(x) with the
    /// norm that follows (the next layer's input norm, or the final norm): one residual_norm
    /// dispatch where the layer has post-norms.
    post_feedforward_norm: Vec<Dispatch>,
    /// The last norm also writes its output quantized (`RunState::hq`), for the next layer's
    /// q/k/v products, or after the last layer the lm_head.
    pub writes_hq: bool,
}

/// What lies around a layer: the norm its output goes through (the next layer's input norm,
/// or the final norm), the products that read the normed output (the next layer's q/k/v, or
/// after the last layer the lm_head), and whether the embedding or the layer before quantized
/// this layer's input into `RunState::hq`.
pub(crate) struct Around<'a> {
    pub next_norm: &'a wgpu::Buffer,
    pub next_products: &'a [GpuMatrix],
    pub hq_in: bool,
}

/// What binding one layer's dispatches needs, and the bindings it repeats.
struct Binder<'a> {
    gpu: &'a Gpu,
    c: &'a ModelConfig,
    k: &'a Kernels,
    s: &'a RunState,
    layer: usize,
    rows: usize,
}

impl Binder<'_> {
    fn label(&self, step: &str) -> String {
        format!("L{:02}.{step}", self.layer)
    }

    /// y = x m^T; `xq`, where given, x's quantization for a product that reads one.
    fn product(
        &self,
        step: &str,
        m: &GpuMatrix,
        x: (&wgpu::Buffer, Option<&wgpu::Buffer>),
        y: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        self.products(step, std::slice::from_ref(m), x, y)
    }

    /// y = x [m0 | m1 | ...]^T: each matrix's product into its columns of y, side by side;
    /// `xq`, where given, x's quantization for the products that read one (MatrixArgs::xq).
    fn products(
        &self,
        step: &str,
        ms: &[GpuMatrix],
        (x, xq): (&wgpu::Buffer, Option<&wgpu::Buffer>),
        y: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let y_stride = ms.iter().map(|m| m.rows).sum();
        let mut y_offset = 0;
        let mut dispatches = Vec::new();
        for m in ms {
            let args = MatrixArgs {
                y_offset,
                y_stride,
                xq,
                ..MatrixArgs::new(m, x, y, self.rows)
            };
            dispatches.extend(self.k.product(self.gpu, &self.label(step), args)?);
            y_offset += m.rows;
        }
        Ok(dispatches)
    }

    /// Norm parameters for `n` rows of `d` values.
    fn norm(&self, n: usize, d: usize) -> RmsNormParams {
        RmsNormParams {
            n: n as u32,
            d: d as u32,
            eps: self.c.eps,
            w_offset: self.c.norm_offset,
        }
    }

    /// out = rms_norm(x) over rows of the hidden size; with `flagged` (the final norm) also
    /// the state's non_finite flags of its rows.
    fn rms_norm(
        &self,
        step: &str,
        (x, w, out): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        flagged: bool,
    ) -> Result<Dispatch> {
        let params = self.norm(self.rows, self.c.hidden);
        let flags = &self.s.non_finite;
        let buffers = RmsNormBuffers { x, w, out, flags };
        let label = self.label(step);
        (self.k.rms_norm).bind(self.gpu, &label, params, buffers, flagged)
    }

    /// Whether the products of `ms` with h as x take h quantized, so that the norm writing h
    /// writes `RunState::hq` too: decode steps where a product quantizes its x
    /// (kernels::Matvec::quantizes_x) and a residual_norm writes h (Gemma 2, 3).
    fn reads_hq(&self, ms: &[GpuMatrix], post: Option<&wgpu::Buffer>) -> bool {
        self.rows == 1
            && post.is_some()
            && ms
                .iter()
                .any(|m| self.k.matrix(m.format).matvec.quantizes_x())
    }

    /// x += rms_norm(o) with the post-norm `post` where the layer has one, else x += o; then
    /// h = rms_norm(x) with `next`: one residual_norm dispatch with a post-norm, an add and an
    /// rms_norm without (Gemma 1). Where `output` is flagged (the final norm) the norm also
    /// writes the state's non_finite flags of h's rows, where quantized (a post-norm only, see
    /// `reads_hq`) h's quantization into the state's hq.
    fn residual(
        &self,
        step: &str,
        (post, next): (Option<&wgpu::Buffer>, &wgpu::Buffer),
        output: NormOutput,
    ) -> Result<Vec<Dispatch>> {
        let (s, label) = (self.s, self.label(step));
        match post {
            Some(post) => {
                let params = self.norm(self.rows, self.c.hidden);
                let buffers = ResidualNormBuffers {
                    o: &s.o,
                    post,
                    next,
                    x: &s.x,
                    h: &s.h,
                    flags: &s.non_finite,
                    hq: &s.hq,
                };
                let kernel = &self.k.residual_norm;
                Ok(vec![
                    kernel.bind(self.gpu, &label, params, buffers, output)?,
                ])
            }
            None => {
                let n = self.rows * self.c.hidden;
                let buffers = AddBuffers { x: &s.o, acc: &s.x };
                Ok(vec![
                    self.k.add.bind(self.gpu, &label, n, buffers)?,
                    self.rms_norm(
                        &format!("{step}.norm"),
                        (&s.x, next, &s.h),
                        output.flagged(),
                    )?,
                ])
            }
        }
    }

    /// Whether the GeGLU product of `gate_up` writes act quantized into the state's act_q for
    /// `down` to read: decode steps where down quantizes its x and the GeGLU product, one
    /// dispatch, can write it so (kernels::Matvec::quantizes_geglu).
    fn writes_act_q(&self, gate_up: &GpuMatrix, down: &GpuMatrix) -> bool {
        self.rows == 1
            && gate_up.chunks.len() == 1
            && self.k.matrix(gate_up.format).matvec.quantizes_geglu()
            && self.k.matrix(down.format).matvec.quantizes_x()
    }

    /// act = gelu_tanh(gate) * up of h [Wgate | Wup]: in one dispatch (the product's GeGLU
    /// variant) where the stacked matrix is one chunk, else the product, then geglu; with
    /// `hq`, h's quantization for a product that reads one; with `act_q` act quantized there
    /// too (see `writes_act_q`).
    fn gate_up_geglu(
        &self,
        w: &GpuMatrix,
        hq: Option<&wgpu::Buffer>,
        act_q: bool,
    ) -> Result<Vec<Dispatch>> {
        let s = self.s;
        if w.chunks.len() == 1 {
            let (k, label) = (self.k.matrix(w.format), self.label("gate_up"));
            let args = MatrixArgs {
                xq: hq,
                yq: act_q.then_some(&s.act_q),
                ..MatrixArgs::new(w, &s.h, &s.act, self.rows)
            };
            return match self.rows {
                1 => k.matvec.bind_geglu(self.gpu, &label, args),
                _ => Ok(vec![k.matmul.bind_geglu(self.gpu, &label, args)?]),
            };
        }
        let mut d = self.products("gate_up", std::slice::from_ref(w), (&s.h, hq), &s.gate_up)?;
        let buffers = GegluBuffers {
            gate_up: &s.gate_up,
            out: &s.act,
        };
        let label = self.label("geglu");
        d.push((self.k.geglu).bind(self.gpu, &label, self.rows, self.c.intermediate, buffers)?);
        Ok(d)
    }

    /// (Gemma 3) q and k normed per head, both rotated, k and v into the layer's cache.
    fn rope_store(&self, norms: Option<&wgpu::Buffer>, table: &RopeTable) -> Result<Dispatch> {
        let s = self.s;
        let args = RopeStoreArgs {
            n: self.rows,
            heads: self.c.heads,
            positions: &s.positions,
            table,
            norms: norms.map(|w| (w, self.c.eps, self.c.norm_offset)),
            qkv: &s.qkv,
            q: &s.q,
            cache: &s.caches[self.layer],
        };
        (self.k.rope_store).bind(self.gpu, &self.label("rope_store"), args)
    }

    /// Whether attention writes its output quantized into the state's attn_q for `o` to
    /// read: decode steps where o_proj quantizes its x and attention can write it so
    /// (kernels::Attention::quantizes_out; head_dim in whole blocks of 32).
    fn writes_attn_q(&self, o: &GpuMatrix) -> bool {
        self.rows == 1
            && self.c.head_dim.is_multiple_of(BLOCK)
            && self.k.attention.quantizes_out()
            && self.k.matrix(o.format).matvec.quantizes_x()
    }

    /// Whether attention does rope_store's work (decode steps where the kernel can).
    fn folds_rope(&self) -> bool {
        self.rows == 1 && Attention::folds_rope(self.gpu, &self.c.attention_shape(self.layer))
    }

    /// Attention of q over the layer's cache; with `attn_q` its output quantized there too
    /// (see `writes_attn_q`); with `rope` (see `folds_rope`) of the q|k|v products' row,
    /// rope_store's work done first.
    fn attention(
        &self,
        attn_q: bool,
        rope: Option<(Option<&wgpu::Buffer>, &RopeTable)>,
    ) -> Result<Vec<Dispatch>> {
        let s = self.s;
        let shape = self.c.attention_shape(self.layer);
        let attention = AttentionArgs {
            n_q: self.rows,
            shape: &shape,
            positions: &s.positions,
            q: if rope.is_some() { &s.qkv } else { &s.q },
            cache: &s.caches[self.layer],
            partials: &s.attention_partials,
            out: &s.attn,
            out_q: attn_q.then_some(&s.attn_q),
            rope: rope.map(|(norms, table)| FoldedRope {
                table,
                norms: norms.map(|w| (w, self.c.eps, self.c.norm_offset)),
            }),
        };
        (self.k.attention).bind(self.gpu, &self.label("attention"), attention)
    }
}

impl LayerDispatches {
    /// Binds layer `i` of `c` with weights `w` to the run state `s`, for `rows` rows; the
    /// layer ends by norming its output with `next_norm` (the next layer's input norm, or the
    /// final norm, which also flags h's rows that are not finite) into h, and quantizing it
    /// into hq where the products that follow read it so ([`LayerDispatches::writes_hq`]);
    /// see [`Around`].
    pub fn bind(
        gpu: &Gpu,
        c: &ModelConfig,
        i: usize,
        k: &Kernels,
        (w, rope, around): (&LayerWeights, &RopeTable, Around),
        s: &RunState,
        rows: usize,
    ) -> Result<LayerDispatches> {
        let Around {
            next_norm,
            next_products,
            hq_in,
        } = around;
        let b = Binder {
            gpu,
            c,
            k,
            s,
            layer: i,
            rows,
        };
        let post_ff = w.post_feedforward_norm.as_ref();
        let post_attn = w.post_attention_norm.as_ref();
        let last = i + 1 == c.layers.len();
        let ff_hq = b.reads_hq(std::slice::from_ref(&w.gate_up), post_attn);
        let act_q = b.writes_act_q(&w.gate_up, &w.down);
        let attn_q = b.writes_attn_q(&w.o);
        let writes_hq = b.reads_hq(next_products, post_ff);
        let fold = b.folds_rope();
        Ok(LayerDispatches {
            qkv: b.products("qkv", &w.qkv, (&s.h, hq_in.then_some(&s.hq)), &s.qkv)?,
            rope_store: match fold {
                true => None,
                false => Some(b.rope_store(w.qk_norm.as_ref(), rope)?),
            },
            attention: b.attention(attn_q, fold.then_some((w.qk_norm.as_ref(), rope)))?,
            o_proj: b.product("o", &w.o, (&s.attn, attn_q.then_some(&s.attn_q)), &s.o)?,
            post_attention_norm: b.residual(
                "post_attention_norm",
                (post_attn, &w.pre_feedforward_norm),
                NormOutput::of(false, ff_hq),
            )?,
            gate_up_geglu: b.gate_up_geglu(&w.gate_up, ff_hq.then_some(&s.hq), act_q)?,
            down: b.product("down", &w.down, (&s.act, act_q.then_some(&s.act_q)), &s.o)?,
            post_feedforward_norm: b.residual(
                "post_feedforward_norm",
                (post_ff, next_norm),
                NormOutput::of(last, writes_hq),
            )?,
            writes_hq,
        })
    }

    /// Records the layer: the steps of `reference::gemma::forward`, line for line. `tap` is
    /// called where an activation it names can be read.
    pub fn record(&self, rec: &mut Recorder, tap: &mut dyn FnMut(&mut Recorder, Tap)) {
        // Attention block: input norm (in h already: the embedding's, or the previous layer's
        // last dispatch), q/k/v, (Gemma 3) per-head q/k norms, RoPE (before caching),
        // attention, o_proj, (Gemma 2, 3) post-attention norm, residual.
        rec.dispatch_all(&self.qkv);
        if let Some(d) = &self.rope_store {
            rec.dispatch(d);
        }
        rec.dispatch_all(&self.attention);
        rec.dispatch_all(&self.o_proj);
        tap(rec, Tap::AttnOut);
        rec.dispatch_all(&self.post_attention_norm);
        // Feed-forward block: pre norm (above, with the residual), GeGLU (gate through
        // gelu_tanh, times up), down_proj, (Gemma 2, 3) post norm, residual; then the norm
        // that follows (the next layer's input norm, or the final norm).
        rec.dispatch_all(&self.gate_up_geglu);
        rec.dispatch_all(&self.down);
        tap(rec, Tap::MlpOut);
        rec.dispatch_all(&self.post_feedforward_norm);
    }
}
