//! The dispatches of one model step for a fixed number of token rows, bound once at load.

use super::{Kernels, Layer};
use crate::Result;
use crate::config::ModelConfig;
use crate::gpu::{Dispatch, Gpu};
use crate::kernels::add::AddBuffers;
use crate::kernels::attention::AttentionArgs;
use crate::kernels::embedding::EmbeddingArgs;
use crate::kernels::geglu::GegluBuffers;
use crate::kernels::kv_store::KvStoreArgs;
use crate::kernels::matrix::MatrixArgs;
use crate::kernels::rms_norm::{RmsNormBuffers, RmsNormParams};
use crate::kernels::rope::{RopeBuffers, RopeTable};
use crate::kernels::soft_cap::SoftCapBuffers;
use crate::kernels::{Attention, GpuMatrix, TopKOutput, TopKScratch};

pub(crate) struct Weights<'a> {
    pub embed: &'a GpuMatrix,
    pub embed_scale: f32,
    pub final_norm: &'a wgpu::Buffer,
    pub layers: &'a [Layer],
    /// The distinct (cos, sin) tables, and which one each layer uses.
    pub tables: &'a [RopeTable],
    pub table_of: &'a [usize],
}

/// The activation buffers, sized for the largest step and shared by every plan.
pub(crate) struct Activations {
    pub ids: wgpu::Buffer,                // [chunk] u32
    pub positions: wgpu::Buffer,          // [chunk] u32
    pub x: wgpu::Buffer,                  // [chunk, hidden] residual stream
    pub h: wgpu::Buffer,                  // [chunk, hidden] normed
    pub q: wgpu::Buffer,                  // [chunk, heads * head_dim]
    pub k: wgpu::Buffer,                  // [chunk, kv_heads * head_dim]
    pub q_raw: wgpu::Buffer,              // [chunk, heads * head_dim] before the q norm (Gemma 3)
    pub k_raw: wgpu::Buffer, // [chunk, kv_heads * head_dim] before the k norm (Gemma 3)
    pub v: wgpu::Buffer,     // [chunk, kv_heads * head_dim]
    pub attn: wgpu::Buffer,  // [chunk, heads * head_dim]
    pub o: wgpu::Buffer,     // [chunk, hidden]
    pub gate_up: wgpu::Buffer, // [chunk, 2 * intermediate]
    pub act: wgpu::Buffer,   // [chunk, intermediate]
    pub h_last: wgpu::Buffer, // [hidden] the row whose next token is wanted
    pub logits: wgpu::Buffer, // [vocab]
    pub logits_all: Option<wgpu::Buffer>, // [chunk, vocab]
}

impl Activations {
    pub fn new(gpu: &Gpu, c: &ModelConfig, chunk: usize, all_logits: bool) -> Activations {
        let f = |label: &str, n: usize| gpu.storage_zeroed(label, (n * 4) as u64);
        Activations {
            ids: f("ids", chunk),
            positions: f("positions", chunk),
            x: f("x", chunk * c.hidden),
            h: f("h", chunk * c.hidden),
            q: f("q", chunk * c.q_dim()),
            k: f("k", chunk * c.kv_dim()),
            q_raw: f(
                "q_raw",
                if c.arch.qk_norm() {
                    chunk * c.q_dim()
                } else {
                    1
                },
            ),
            k_raw: f(
                "k_raw",
                if c.arch.qk_norm() {
                    chunk * c.kv_dim()
                } else {
                    1
                },
            ),
            v: f("v", chunk * c.kv_dim()),
            attn: f("attn", chunk * c.q_dim()),
            o: f("o", chunk * c.hidden),
            gate_up: f("gate_up", chunk * 2 * c.intermediate),
            act: f("act", chunk * c.intermediate),
            h_last: f("h_last", c.hidden),
            logits: f("logits", c.vocab),
            logits_all: all_logits.then(|| f("logits_all", chunk * c.vocab)),
        }
    }

    /// Writes a step's token ids and positions, padding to `rows` with token 0 at the
    /// following positions (their results are never read; their cache slots are rewritten
    /// before any query can see them).
    pub fn write_inputs(&self, gpu: &Gpu, tokens: &[u32], start: usize, rows: usize) {
        let mut ids = tokens.to_vec();
        ids.resize(rows, 0);
        let positions: Vec<u32> = (0..rows).map(|i| (start + i) as u32).collect();
        gpu.queue
            .write_buffer(&self.ids, 0, bytemuck::cast_slice(&ids));
        gpu.queue
            .write_buffer(&self.positions, 0, bytemuck::cast_slice(&positions));
    }

    pub fn all_logits(&self) -> &wgpu::Buffer {
        self.logits_all.as_ref().expect("built with all_logits")
    }
}

pub(crate) struct Plan {
    /// Token rows per step.
    pub n: usize,
    embed: Vec<Dispatch>,
    layers: Vec<Vec<Dispatch>>,
    final_norm: Dispatch,
    head: Vec<Dispatch>,
    top1: TopKOutput,
    top_k: TopKOutput,
    all_logits: Vec<Dispatch>,
    /// The final norm's output and the row of it the head reads (handles to shared buffers).
    h: wgpu::Buffer,
    h_last: wgpu::Buffer,
    hidden: usize,
}

/// What a plan computes per step: its token rows, the candidates it ranks, and whether it
/// keeps the logits of every row.
pub(crate) struct PlanRows {
    pub n: usize,
    pub candidates: usize,
    pub all_logits: bool,
}

impl Plan {
    pub fn build(
        gpu: &Gpu,
        c: &ModelConfig,
        k: &Kernels,
        w: &Weights,
        a: &Activations,
        rows: PlanRows,
    ) -> Result<Plan> {
        let PlanRows {
            n,
            candidates,
            all_logits,
        } = rows;
        let mat = |label: &str, m: &GpuMatrix, x: &wgpu::Buffer, y: &wgpu::Buffer| {
            let kernels = k.matrix(m.format);
            let args = MatrixArgs { w: m, x, y, n };
            if n == 1 {
                kernels.matvec.bind(gpu, label, args)
            } else {
                kernels.matmul.bind(gpu, label, args)
            }
        };
        let norm_buffers = |x, w, out| RmsNormBuffers { x, w, out };
        let norm = |d: usize, eps: f32| RmsNormParams {
            n: n as u32,
            d: d as u32,
            eps,
            w_offset: c.norm_offset,
        };
        let embed = k.matrix(w.embed.format).embedding.bind(
            gpu,
            "embed",
            EmbeddingArgs {
                table: w.embed,
                ids: &a.ids,
                n,
                scale: w.embed_scale,
                out: &a.x,
            },
        )?;
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            let p = |s: &str| format!("L{i:02}.{s}");
            let hp = norm(c.hidden, c.eps);
            let mut d = vec![k.rms_norm.bind(
                gpu,
                &p("input_norm"),
                hp,
                norm_buffers(&a.x, &l.input_norm, &a.h),
            )?];
            let table = &w.tables[w.table_of[i]];
            match (&l.q_norm, &l.k_norm) {
                // Gemma 3: project, then normalise each head (rows of head_dim).
                (Some(qn), Some(kn)) => {
                    d.extend(mat(&p("q"), &l.q, &a.h, &a.q_raw)?);
                    d.extend(mat(&p("k"), &l.k, &a.h, &a.k_raw)?);
                    let mut heads = norm(c.head_dim, c.eps);
                    heads.n = (n * c.heads) as u32;
                    d.push(k.rms_norm.bind(
                        gpu,
                        &p("q_norm"),
                        heads,
                        norm_buffers(&a.q_raw, qn, &a.q),
                    )?);
                    heads.n = (n * c.kv_heads) as u32;
                    d.push(k.rms_norm.bind(
                        gpu,
                        &p("k_norm"),
                        heads,
                        norm_buffers(&a.k_raw, kn, &a.k),
                    )?);
                }
                _ => {
                    d.extend(mat(&p("q"), &l.q, &a.h, &a.q)?);
                    d.extend(mat(&p("k"), &l.k, &a.h, &a.k)?);
                }
            }
            d.extend(mat(&p("v"), &l.v, &a.h, &a.v)?);
            let rope = |x| RopeBuffers {
                positions: &a.positions,
                table: &table.buffer,
                x,
            };
            d.push(
                k.rope
                    .bind(gpu, &p("rope.q"), table.params(n, c.heads), rope(&a.q))?,
            );
            d.push(
                k.rope
                    .bind(gpu, &p("rope.k"), table.params(n, c.kv_heads), rope(&a.k))?,
            );
            d.push(k.kv_store.bind(
                gpu,
                &p("kv_store"),
                KvStoreArgs {
                    n,
                    positions: &a.positions,
                    k: &a.k,
                    v: &a.v,
                    cache: &l.cache,
                },
            )?);
            let shape = c.attention_shape(i);
            let label = p("attention");
            let partials = Attention::partials(
                gpu,
                &format!("{label}.partials"),
                n,
                &shape,
                l.cache.capacity,
            );
            d.extend(k.attention.bind(
                gpu,
                &label,
                AttentionArgs {
                    n_q: n,
                    shape: &shape,
                    positions: &a.positions,
                    q: &a.q,
                    cache: &l.cache,
                    partials: &partials,
                    out: &a.attn,
                },
            )?);
            d.extend(mat(&p("o"), &l.o, &a.attn, &a.o)?);
            d.push(match &l.post_attention_norm {
                Some(pn) => k.rms_norm_add.bind(
                    gpu,
                    &p("post_attention_norm"),
                    hp,
                    norm_buffers(&a.o, pn, &a.x),
                )?,
                None => k.add.bind(
                    gpu,
                    &p("residual.attention"),
                    n * c.hidden,
                    AddBuffers { x: &a.o, acc: &a.x },
                )?,
            });
            d.push(k.rms_norm.bind(
                gpu,
                &p("pre_feedforward_norm"),
                hp,
                norm_buffers(&a.x, &l.pre_feedforward_norm, &a.h),
            )?);
            d.extend(mat(&p("gate_up"), &l.gate_up, &a.h, &a.gate_up)?);
            d.push(k.geglu.bind(
                gpu,
                &p("geglu"),
                n,
                c.intermediate,
                GegluBuffers {
                    gate_up: &a.gate_up,
                    out: &a.act,
                },
            )?);
            d.extend(mat(&p("down"), &l.down, &a.act, &a.o)?);
            d.push(match &l.post_feedforward_norm {
                Some(pn) => k.rms_norm_add.bind(
                    gpu,
                    &p("post_feedforward_norm"),
                    hp,
                    norm_buffers(&a.o, pn, &a.x),
                )?,
                None => k.add.bind(
                    gpu,
                    &p("residual.feedforward"),
                    n * c.hidden,
                    AddBuffers { x: &a.o, acc: &a.x },
                )?,
            });
            layers.push(d);
        }
        let final_norm = k.rms_norm.bind(
            gpu,
            "final_norm",
            norm(c.hidden, c.eps),
            norm_buffers(&a.x, w.final_norm, &a.h),
        )?;
        let mut head = k.matrix(w.embed.format).matvec.bind(
            gpu,
            "lm_head",
            MatrixArgs {
                w: w.embed,
                x: &a.h_last,
                y: &a.logits,
                n: 1,
            },
        )?;
        let mut all = vec![];
        if all_logits {
            let logits_all = a.all_logits();
            all = k.matrix(w.embed.format).matmul.bind(
                gpu,
                "lm_head.all",
                MatrixArgs {
                    w: w.embed,
                    x: &a.h,
                    y: logits_all,
                    n,
                },
            )?;
            if let Some(cap) = c.final_softcap {
                all.push(k.soft_cap.bind(
                    gpu,
                    "final_soft_cap.all",
                    n * c.vocab,
                    cap,
                    SoftCapBuffers { x: logits_all },
                )?);
            }
        }
        if let Some(cap) = c.final_softcap {
            head.push(k.soft_cap.bind(
                gpu,
                "final_soft_cap",
                c.vocab,
                cap,
                SoftCapBuffers { x: &a.logits },
            )?);
        }
        Ok(Plan {
            n,
            embed,
            layers,
            final_norm,
            head,
            top1: k.top_k.bind(
                gpu,
                "argmax",
                &a.logits,
                c.vocab,
                1,
                &TopKScratch::new(gpu, "argmax", c.vocab, 1),
            )?,
            top_k: k.top_k.bind(
                gpu,
                "top_k",
                &a.logits,
                c.vocab,
                candidates,
                &TopKScratch::new(gpu, "top_k", c.vocab, candidates),
            )?,
            all_logits: all,
            h: a.h.clone(),
            h_last: a.h_last.clone(),
            hidden: c.hidden,
        })
    }

    pub fn candidates(&self, greedy: bool) -> &TopKOutput {
        if greedy { &self.top1 } else { &self.top_k }
    }

    /// Records `dispatches` as one compute pass of `e`.
    fn pass(e: &mut wgpu::CommandEncoder, label: &str, dispatches: &[&Dispatch]) {
        let mut pass = e.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for d in dispatches {
            d.encode(&mut pass);
        }
    }

    /// The embedding and every layer, in one pass (wgpu orders the dispatches with barriers),
    /// with `then` appended to the same pass.
    fn encode_layers(&self, gpu: &Gpu, then: &[&Dispatch]) -> wgpu::CommandEncoder {
        let mut e = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let d: Vec<&Dispatch> = self
            .embed
            .iter()
            .chain(self.layers.iter().flatten())
            .chain(then.iter().copied())
            .collect();
        Self::pass(&mut e, "layers", &d);
        e
    }

    /// Each layer in an encoder of its own (the embedding joins layer 0), to look at the
    /// residual stream between layers.
    pub fn encode_each_layer(&self, gpu: &Gpu) -> Vec<wgpu::CommandEncoder> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut e = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("layer"),
                    });
                let mut d: Vec<&Dispatch> = vec![];
                if i == 0 {
                    d.extend(&self.embed);
                }
                d.extend(layer);
                Self::pass(&mut e, &format!("layer {i}"), &d);
                e
            })
            .collect()
    }

    /// A step, one command buffer: the layers, then (with `head`) the final norm, row `row` as
    /// the query for the next token, the lm_head, the soft-cap and the top-k.
    pub fn encode(
        &self,
        gpu: &Gpu,
        row: usize,
        head: bool,
        greedy: bool,
    ) -> Vec<wgpu::CommandEncoder> {
        if !head {
            return vec![self.encode_layers(gpu, &[])];
        }
        let mut e = self.encode_layers(gpu, &[&self.final_norm]);
        let bytes = (self.hidden * 4) as u64;
        // Between the two passes: the head's input row.
        e.copy_buffer_to_buffer(&self.h, row as u64 * bytes, &self.h_last, 0, bytes);
        let top = self.candidates(greedy);
        let d: Vec<&Dispatch> = self.head.iter().chain(&top.dispatches).collect();
        Self::pass(&mut e, "head", &d);
        vec![e]
    }

    /// The dispatches of a step with its head, in order.
    fn step_dispatches(&self, greedy: bool) -> Vec<&Dispatch> {
        let mut d: Vec<&Dispatch> = self
            .embed
            .iter()
            .chain(self.layers.iter().flatten())
            .collect();
        d.push(&self.final_norm);
        d.extend(self.head.iter().chain(&self.candidates(greedy).dispatches));
        d
    }

    /// Dispatches (that record work) in one step with its head.
    pub fn step_dispatch_count(&self, greedy: bool) -> usize {
        let d = self.step_dispatches(greedy);
        d.iter().filter(|d| !d.is_empty()).count()
    }

    /// A step with its head, each dispatch in its own pass between two timestamps (queries
    /// 2i and 2i + 1 of `queries`): what a profile times. Returns the dispatches in order.
    pub fn encode_timed(
        &self,
        gpu: &Gpu,
        queries: &wgpu::QuerySet,
        greedy: bool,
    ) -> (wgpu::CommandEncoder, Vec<&Dispatch>) {
        let d: Vec<&Dispatch> = self
            .step_dispatches(greedy)
            .into_iter()
            .filter(|d| !d.is_empty())
            .collect();
        let mut e = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profile"),
            });
        for (i, x) in d.iter().enumerate() {
            {
                let mut pass = e.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(x.label()),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                x.encode(&mut pass);
            }
            // The final norm is followed by the copy of the head's input row.
            if std::ptr::eq(*x, &self.final_norm) {
                let bytes = (self.hidden * 4) as u64;
                e.copy_buffer_to_buffer(&self.h, 0, &self.h_last, 0, bytes);
            }
        }
        (e, d)
    }

    /// A step that ends in the logits of every row.
    pub fn encode_all_logits(&self, gpu: &Gpu) -> Vec<wgpu::CommandEncoder> {
        let then: Vec<&Dispatch> = std::iter::once(&self.final_norm)
            .chain(&self.all_logits)
            .collect();
        vec![self.encode_layers(gpu, &then)]
    }
}
