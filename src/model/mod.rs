//! The Gemma 2 model on the GPU: weights uploaded once, every buffer, bind group and dispatch
//! built at load, and a step that is one uniform write, one command buffer per layer, one
//! submit and one small readback.

mod load;
mod plan;

use crate::config::ModelConfig;
use crate::gpu::{Gpu, Readback};
use crate::kernels::kv_store::KvCache;
use crate::kernels::rope::RopeTable;
use crate::kernels::{
    Add, Attention, Embedding, Fill, Geglu, GpuMatrix, KvDtype, KvStore, Matmul, Matvec, RmsNorm,
    Rope, SoftCap, TopK,
};
use crate::weights::gemma::{self, EMBED, FINAL_NORM, LayerTensor, embed_scale};
use crate::weights::gguf::Gguf;
use crate::weights::safetensors::Checkpoint;
use crate::weights::{SourceDtype, WeightFormat};
use crate::{Error, Result};
use load::Source;
use plan::{Activations, Plan};
use std::time::{Duration, Instant};

/// How to load a model.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Weight format; `None` keeps the checkpoint's precision (bf16 stays bf16, f16/f32 -> f32).
    pub format: Option<WeightFormat>,
    /// KV cache type; `None` picks f16 where the adapter has SHADER_F16, else f32.
    pub kv: Option<KvDtype>,
    /// Context length (prompt and generated tokens); `None`: the model's maximum, at most 4096.
    pub ctx: Option<usize>,
    /// Tokens per prefill step.
    pub chunk: usize,
    /// Also build the all-positions lm_head (the `logits` command).
    pub all_logits: bool,
    /// Candidates read back per step for sampling.
    pub candidates: usize,
    /// Show a progress bar while uploading.
    pub progress: bool,
    /// Expand GGUF block formats (Q4_1, Q5_x, Q2_K..Q6_K) losslessly to i8_affine at load;
    /// `None`: on CPU adapters, where decoding them costs more than the extra bytes.
    pub expand_blocks: Option<bool>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            format: None,
            kv: None,
            ctx: None,
            chunk: 64,
            all_logits: false,
            candidates: 64,
            progress: false,
            expand_blocks: None,
        }
    }
}

/// The per-op kernels, compiled once.
/// The kernels that read weights, for one weight format.
pub(crate) struct MatrixKernels {
    pub matvec: Matvec,
    pub matmul: Matmul,
    pub embedding: Embedding,
}

pub(crate) struct Kernels {
    /// One set per weight format the model holds (GGUF files mix several).
    pub matrix: Vec<(WeightFormat, MatrixKernels)>,
    pub rms_norm: RmsNorm,
    pub rms_norm_add: RmsNorm,
    pub add: Add,
    pub rope: Rope,
    pub kv_store: KvStore,
    pub attention: Attention,
    pub geglu: Geglu,
    pub soft_cap: SoftCap,
    pub top_k: TopK,
}

impl Kernels {
    pub fn matrix(&self, format: WeightFormat) -> &MatrixKernels {
        &self
            .matrix
            .iter()
            .find(|(f, _)| *f == format)
            .expect("kernels built for every format the model holds")
            .1
    }
}

/// One decoder layer's weights and cache on the GPU.
pub(crate) struct Layer {
    pub input_norm: wgpu::Buffer,
    pub q: GpuMatrix,
    pub k: GpuMatrix,
    pub v: GpuMatrix,
    /// Gemma 3: per-head norms of q and k.
    pub q_norm: Option<wgpu::Buffer>,
    pub k_norm: Option<wgpu::Buffer>,
    pub o: GpuMatrix,
    /// Gemma 2 and 3.
    pub post_attention_norm: Option<wgpu::Buffer>,
    pub pre_feedforward_norm: wgpu::Buffer,
    /// gate rows then up rows: one product gives geglu's [gate | up] rows.
    pub gate_up: GpuMatrix,
    pub down: GpuMatrix,
    /// Gemma 2 and 3.
    pub post_feedforward_norm: Option<wgpu::Buffer>,
    pub cache: KvCache,
}

/// Candidates for the next token: the highest logits (after the final soft-cap), best first.
#[derive(Clone, Debug)]
pub struct Candidates {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

/// Weights, caches and pipelines the plans' bind groups refer to, kept for the model's life.
struct Resources {
    _layers: Vec<Layer>,
    _embed: GpuMatrix,
    _final_norm: wgpu::Buffer,
    _tables: Vec<RopeTable>,
    _kernels: Kernels,
}

/// Where one decode step's time goes.
pub struct StepProfile {
    /// (kernel, dispatch label, GPU time) of every dispatch of the step, in order.
    pub dispatches: Vec<(String, String, Duration)>,
    /// Command buffers an ordinary step submits.
    pub command_buffers: usize,
    /// Host time to encode and submit an ordinary step.
    pub host_encode_submit: Duration,
    /// An ordinary step from encoding to completion.
    pub wall: Duration,
}

pub struct Model {
    _resources: Resources,
    pub gpu: Gpu,
    pub config: ModelConfig,
    /// The embedding's (and lm_head's) weight format.
    pub format: WeightFormat,
    /// Every weight format the model holds (GGUF files mix several).
    pub formats: Vec<WeightFormat>,
    pub kv: KvDtype,
    /// The weights' type as stored in the file (a GGUF's `Q4_K_M`, a checkpoint's `bf16`).
    pub file_type: String,
    /// Bytes of the weights in the file.
    pub file_bytes: u64,
    /// Bytes of the KV caches on the GPU.
    pub kv_bytes: u64,
    /// Positions the caches hold.
    pub ctx: usize,
    pub chunk: usize,
    act: Activations,
    decode: Plan,
    prefill: Plan,
    readback: Readback,
    all_logits_readback: Option<Readback>,
    candidates: usize,
    /// Tokens in the cache.
    position: usize,
}

impl Model {
    /// Loads a Hugging Face model directory or a `.gguf` file onto `gpu`.
    pub fn load(gpu: Gpu, path: &std::path::Path, options: &ModelOptions) -> Result<Model> {
        if path.is_file() {
            return Self::from_gguf(gpu, &Gguf::open(path)?, options);
        }
        let config = ModelConfig::from_dir(path)?;
        let ckpt = Checkpoint::open(path)?;
        Self::from_checkpoint(gpu, config, &ckpt, options)
    }

    pub fn from_gguf(gpu: Gpu, g: &Gguf, options: &ModelOptions) -> Result<Model> {
        let config = ModelConfig::from_gguf(g)?;
        gemma::check_gguf(g, &config)?;
        // llama.cpp scales the embedding by sqrt(hidden) in f32, whatever the file's types,
        // and transformers running a GGUF in float32 does the same.
        let dtype = SourceDtype::F32;
        let expand = options.expand_blocks.unwrap_or(gpu.caps.cpu_like);
        let names = gemma::gguf_names(&config);
        Self::build(gpu, config, Source::Gguf(g, expand, names), dtype, options)
    }

    pub fn from_checkpoint(
        gpu: Gpu,
        config: ModelConfig,
        ckpt: &Checkpoint,
        options: &ModelOptions,
    ) -> Result<Model> {
        gemma::check_checkpoint(ckpt, &config)?;
        let dtype = gemma::source_dtype(ckpt, &config)?;
        Self::build(gpu, config, Source::Checkpoint(ckpt), dtype, options)
    }

    /// A model of `config`'s shape with pseudo-random weights written on the GPU: no files,
    /// for benchmarks of any size. Weights count as bf16 checkpoint weights.
    pub fn synthetic(gpu: Gpu, config: ModelConfig, options: &ModelOptions) -> Result<Model> {
        let fill = Fill::new(&gpu)?;
        Self::build(
            gpu,
            config,
            Source::Synthetic(fill),
            SourceDtype::Bf16,
            options,
        )
    }

    /// Builds the model; a buffer that did not fit on the way is the error, whatever failed
    /// after it, with the setting that would need less memory.
    fn build(
        gpu: Gpu,
        config: ModelConfig,
        source: Source,
        dtype: SourceDtype,
        options: &ModelOptions,
    ) -> Result<Model> {
        let faults = gpu.faults();
        let ctx = options.ctx.unwrap_or(config.max_positions.min(4096));
        let built = Self::build_unchecked(gpu, config, source, dtype, options);
        match faults.take() {
            Some(fault) => Err(fault.into_error(|label| memory_advice(label, ctx, options))),
            None => built,
        }
    }

    fn build_unchecked(
        gpu: Gpu,
        config: ModelConfig,
        source: Source,
        dtype: SourceDtype,
        options: &ModelOptions,
    ) -> Result<Model> {
        let c = &config;
        // GGUF tensors keep their own types unless a format is asked for.
        let format = match source {
            Source::Gguf(..) => options.format,
            _ => Some(options.format.unwrap_or(gemma::default_format(dtype))),
        };
        let kv = options.kv.unwrap_or(KvDtype::default_for(&gpu.caps));
        if let Some(asked) = options.ctx
            && asked > c.max_positions
        {
            return Err(Error::Config {
                path: "--ctx".into(),
                message: format!(
                    "{asked} tokens exceed the model's context of {} (max_position_embeddings)",
                    c.max_positions
                ),
            });
        }
        let ctx = options.ctx.unwrap_or(c.max_positions.min(4096)).max(1);
        let chunk = options.chunk.clamp(1, 512);
        check_fits(
            &gpu,
            c,
            format.unwrap_or(WeightFormat::F32),
            kv,
            ctx,
            chunk,
            options,
        )?;

        // The bar counts the file's bytes (a GGUF's tensors as stored).
        let total = source
            .file_bytes()
            .unwrap_or(c.parameters() as u64 * dtype.bytes() as u64);
        let bar = options.progress.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "loading {bar:40} {bytes}/{total_bytes} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let tick = |name: &str, elements: usize| {
            if let Some(b) = &bar {
                b.inc(
                    source
                        .tensor_bytes(name)
                        .unwrap_or((elements * dtype.bytes()) as u64),
                );
                b.set_message(name.to_string());
            }
        };
        let upload = |name: &str, shape: [usize; 2]| -> Result<GpuMatrix> {
            let m = source.matrix(&gpu, name, shape, format)?;
            tick(name, shape[0] * shape[1]);
            Ok(m)
        };
        let norm_of = |name: &str, len: usize| -> Result<wgpu::Buffer> {
            let w = source.norm(&gpu, name, len)?;
            tick(name, len);
            Ok(w)
        };
        let embed = upload(EMBED, [c.vocab, c.hidden])?;
        let final_norm = norm_of(FINAL_NORM, c.hidden)?;
        let mut layers = Vec::with_capacity(c.layers.len());
        for (i, spec) in c.layers.iter().enumerate() {
            let m = |t: LayerTensor| upload(&t.name(i, c.arch), t.shape(c));
            let norm = |t: LayerTensor| -> Result<Option<wgpu::Buffer>> {
                if !t.present(c.arch) {
                    return Ok(None);
                }
                norm_of(&t.name(i, c.arch), t.shape(c)[0]).map(Some)
            };
            let required = |t: LayerTensor| norm(t).map(|n| n.expect("present in every Gemma"));
            let gate = m(LayerTensor::Gate)?;
            let up = m(LayerTensor::Up)?;
            // A sliding layer keeps the window plus one prefill chunk; a global one everything.
            let capacity = match spec.window {
                Some(w) => (w + chunk - 1).min(ctx + chunk),
                None => ctx + chunk,
            };
            layers.push(Layer {
                input_norm: required(LayerTensor::InputNorm)?,
                q: m(LayerTensor::Q)?,
                k: m(LayerTensor::K)?,
                v: m(LayerTensor::V)?,
                q_norm: norm(LayerTensor::QNorm)?,
                k_norm: norm(LayerTensor::KNorm)?,
                o: m(LayerTensor::O)?,
                post_attention_norm: norm(LayerTensor::PostAttentionNorm)?,
                pre_feedforward_norm: required(LayerTensor::PreFeedforwardNorm)?,
                gate_up: GpuMatrix::concat_rows(gate, up)?,
                down: m(LayerTensor::Down)?,
                post_feedforward_norm: norm(LayerTensor::PostFeedforwardNorm)?,
                cache: KvCache::new(&gpu, &format!("L{i:02}.kv"), kv, capacity, c.kv_dim())?,
            });
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let mut formats: Vec<WeightFormat> = vec![embed.format];
        for l in &layers {
            for m in [&l.q, &l.k, &l.v, &l.o, &l.gate_up, &l.down] {
                if !formats.contains(&m.format) {
                    formats.push(m.format);
                }
            }
        }
        let matrix = formats
            .iter()
            .map(|&f| {
                Ok((
                    f,
                    MatrixKernels {
                        matvec: Matvec::new(&gpu, f)?,
                        matmul: Matmul::new(&gpu, f)?,
                        embedding: Embedding::new(&gpu, f)?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let kernels = Kernels {
            matrix,
            rms_norm: RmsNorm::new(&gpu, false)?,
            rms_norm_add: RmsNorm::new(&gpu, true)?,
            add: Add::new(&gpu)?,
            rope: Rope::new(&gpu)?,
            kv_store: KvStore::new(&gpu, kv)?,
            attention: Attention::new(&gpu, kv)?,
            geglu: Geglu::new(&gpu)?,
            soft_cap: SoftCap::new(&gpu)?,
            top_k: TopK::new(&gpu)?,
        };
        // One (cos, sin) table per distinct (base, scaling), shared by the layers using it.
        let mut keys: Vec<(f32, f32)> = vec![];
        for l in &c.layers {
            if !keys.contains(&(l.rope_theta, l.rope_factor)) {
                keys.push((l.rope_theta, l.rope_factor));
            }
        }
        let tables: Vec<RopeTable> = keys
            .iter()
            .map(|&(t, f)| RopeTable::new(&gpu, t, f, c.head_dim, ctx + chunk))
            .collect();
        let table_of: Vec<usize> = c
            .layers
            .iter()
            .map(|l| {
                keys.iter()
                    .position(|&k| k == (l.rope_theta, l.rope_factor))
                    .unwrap_or(0)
            })
            .collect();
        let candidates = options.candidates.clamp(1, crate::kernels::top_k::MAX_K);
        let act = Activations::new(&gpu, c, chunk, options.all_logits);
        let weights = plan::Weights {
            embed: &embed,
            embed_scale: embed_scale(c.hidden, dtype),
            final_norm: &final_norm,
            layers: &layers,
            tables: &tables,
            table_of: &table_of,
        };
        let decode = Plan::build(&gpu, c, &kernels, &weights, &act, 1, candidates, false)?;
        let prefill = Plan::build(
            &gpu,
            c,
            &kernels,
            &weights,
            &act,
            chunk,
            candidates,
            options.all_logits,
        )?;
        // The candidates, then the final norm's output: a soft-capped logit is finite even
        // when the hidden state is not (tanh saturates), so that is checked too.
        let readback = Readback::new(&gpu, "candidates", (candidates * 8 + c.hidden * 4) as u64);
        let all_logits_readback = options
            .all_logits
            .then(|| Readback::new(&gpu, "logits", (chunk * (c.vocab + c.hidden) * 4) as u64));
        let file_type = match &source {
            Source::Gguf(g, ..) => g.file_type(),
            Source::Checkpoint(_) => format!("{dtype:?}").to_lowercase(),
            Source::Synthetic(_) => formats[0].name().to_string(),
        };
        let file_bytes = total;
        let kv_bytes = layers
            .iter()
            .map(|l| l.cache.capacity as u64 * c.kv_dim() as u64 * 2 * kv.bytes() as u64)
            .sum();
        Ok(Model {
            _resources: Resources {
                _layers: layers,
                _embed: embed,
                _final_norm: final_norm,
                _tables: tables,
                _kernels: kernels,
            },
            gpu,
            config,
            format: formats[0],
            formats,
            kv,
            file_type,
            file_bytes,
            kv_bytes,
            ctx,
            chunk,
            act,
            decode,
            prefill,
            readback,
            all_logits_readback,
            candidates,
            position: 0,
        })
    }

    /// Tokens held in the cache.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Forgets the cached context.
    pub fn reset(&mut self) {
        self.position = 0;
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(Error::Shape {
                kernel: "model",
                message: format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.config.vocab
                ),
            });
        }
        if self.position + tokens.len() > self.ctx {
            return Err(Error::ContextFull {
                needed: self.position + tokens.len(),
                ctx: self.ctx,
            });
        }
        Ok(())
    }

    /// Runs `tokens` (at least one) through the model after what the cache holds and returns
    /// the next-token candidates at the last of them. `greedy` reads back only the best one.
    pub fn feed(&mut self, tokens: &[u32], greedy: bool) -> Result<Candidates> {
        if tokens.is_empty() {
            return Err(Error::Shape {
                kernel: "model",
                message: "no tokens to feed".into(),
            });
        }
        self.check_tokens(tokens)?;
        let mut rest = tokens;
        let mut encoders = Vec::new();
        // The step that ends in the logits, to replay if they are not finite.
        let mut last = (rest, self.position);
        while !rest.is_empty() {
            // Whole chunks through the prefill plan; a short tail token by token, unless it is
            // long enough that one padded chunk is cheaper.
            let take = if rest.len() >= self.chunk / 4 && self.chunk > 1 {
                rest.len().min(self.chunk)
            } else {
                1
            };
            let plan = if take == 1 {
                &self.decode
            } else {
                &self.prefill
            };
            let is_last = rest.len() == take;
            if is_last {
                last = (&rest[..take], self.position);
            }
            self.act
                .write_inputs(&self.gpu, &rest[..take], self.position, plan.n);
            let mut e = plan.encode(&self.gpu, take - 1, is_last, greedy);
            if is_last {
                let top = plan.candidates(greedy);
                let head = e.last_mut().expect("head encoder");
                self.readback.copy_at(head, &top.values, 0);
                self.readback
                    .copy_at(head, &top.indices, (self.candidates * 4) as u64);
                self.readback
                    .copy_at(head, &self.act.h_last, (self.candidates * 8) as u64);
            }
            encoders.extend(e);
            // Each chunk's inputs are written before its commands: submit per chunk.
            self.gpu
                .queue
                .submit(encoders.drain(..).map(|e| e.finish()));
            self.position += take;
            rest = &rest[take..];
        }
        let (c, hidden_finite) = self.read_candidates(greedy)?;
        // NaN or infinite logits make the top-k's comparisons meaningless: its ids are then
        // placeholders (u32::MAX) or arbitrary.
        let vocab = self.config.vocab;
        // (A vocabulary smaller than k leaves placeholders after its last id.)
        let real = c.ids.len().min(vocab);
        if !hidden_finite
            || c.logits[..real].iter().any(|l| !l.is_finite())
            || c.ids[..real].iter().any(|&i| i as usize >= vocab)
        {
            let (tokens, start) = last;
            return Err(self.locate_non_finite(tokens, start, tokens.len() > 1));
        }
        Ok(c)
    }

    /// Profiles one greedy decode step at the current position (which it does not advance):
    /// an ordinary step for its host and wall times, then the same step again with every
    /// dispatch between two GPU timestamps.
    pub fn profile_decode(&mut self, token: u32) -> Result<StepProfile> {
        if !self.gpu.caps.timestamps {
            return Err(Error::MissingFeature {
                what: "a profile",
                feature: "TIMESTAMP_QUERY",
                adapter: self.gpu.describe(),
            });
        }
        self.check_tokens(&[token])?;
        let plan = &self.decode;
        self.act
            .write_inputs(&self.gpu, &[token], self.position, plan.n);
        let start = Instant::now();
        let encoders = plan.encode(&self.gpu, 0, true, true);
        let command_buffers = encoders.len();
        self.gpu
            .queue
            .submit(encoders.into_iter().map(|e| e.finish()));
        let host_encode_submit = start.elapsed();
        self.gpu.wait()?;
        let wall = start.elapsed();

        let dispatches = plan.step_dispatch_count(true);
        let queries = 2 * dispatches as u32;
        let set = self.gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: queries,
        });
        let bytes = 8 * queries as u64;
        let resolve = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile.resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = Readback::new(&self.gpu, "profile.readback", bytes);
        let (mut e, timed) = plan.encode_timed(&self.gpu, &set, true);
        e.resolve_query_set(&set, 0..queries, &resolve, 0);
        readback.copy_from(&mut e, &resolve, 0);
        self.gpu.queue.submit([e.finish()]);
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&readback.read(&self.gpu)?);
        let period = self.gpu.queue.get_timestamp_period() as f64;
        let dispatches = timed
            .iter()
            .zip(ticks.chunks_exact(2))
            .map(|(d, t)| {
                let ns = t[1].saturating_sub(t[0]) as f64 * period;
                (
                    d.kernel().to_string(),
                    d.label().to_string(),
                    Duration::from_nanos(ns as u64),
                )
            })
            .collect();
        Ok(StepProfile {
            dispatches,
            command_buffers,
            host_encode_submit,
            wall,
        })
    }

    /// The candidates, and whether the hidden state they come from is finite.
    fn read_candidates(&self, greedy: bool) -> Result<(Candidates, bool)> {
        let bytes = self.readback.read(&self.gpu)?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let k = if greedy { 1 } else { self.candidates };
        let (values, rest) = words.split_at(self.candidates);
        let (ids, hidden) = rest.split_at(self.candidates);
        let candidates = Candidates {
            ids: ids[..k].to_vec(),
            logits: values[..k].iter().map(|&v| f32::from_bits(v)).collect(),
        };
        Ok((candidates, all_finite(hidden)))
    }

    /// The error for logits that are not finite, naming the first layer whose output is not:
    /// the step (`tokens` at `start`, through the prefill plan or the decode one) is run
    /// again layer by layer, reading the residual stream after each. Running it again
    /// rewrites the same cache entries with the same values.
    fn locate_non_finite(&self, tokens: &[u32], start: usize, prefill: bool) -> Error {
        let plan = if prefill { &self.prefill } else { &self.decode };
        let rows = tokens.len().min(plan.n);
        let n_layers = self.config.layers.len();
        self.act.write_inputs(&self.gpu, tokens, start, plan.n);
        let probe = Readback::new(
            &self.gpu,
            "non_finite.x",
            (rows * self.config.hidden * 4) as u64,
        );
        for (i, mut e) in plan.encode_each_layer(&self.gpu).into_iter().enumerate() {
            probe.copy_from(&mut e, &self.act.x, 0);
            self.gpu.queue.submit([e.finish()]);
            let bytes = match probe.read(&self.gpu) {
                Ok(b) => b,
                Err(e) => return e,
            };
            if !all_finite(&bytemuck::pod_collect_to_vec::<u8, u32>(&bytes)) {
                return Error::NonFinite {
                    where_: format!(", first in the output of layer {i} of {n_layers}"),
                };
            }
        }
        Error::NonFinite {
            where_: " after the last layer (final norm, lm_head or soft-cap)".into(),
        }
    }

    /// Runs `tokens` through the model after what the cache holds, computing no logits
    /// (a context to score after, or a prompt prefix).
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        for chunk in tokens.chunks(self.chunk) {
            let plan = if chunk.len() == 1 {
                &self.decode
            } else {
                &self.prefill
            };
            self.act
                .write_inputs(&self.gpu, chunk, self.position, plan.n);
            let encoders = plan.encode(&self.gpu, 0, false, true);
            self.gpu
                .queue
                .submit(encoders.into_iter().map(|e| e.finish()));
            self.position += chunk.len();
        }
        Ok(())
    }

    /// Calls `f(i, logits)` with the logits \[vocab\] (after the final soft-cap) of every
    /// position i of `tokens`, fed after what the cache holds. Needs
    /// `ModelOptions::all_logits`.
    pub fn logits_each(&mut self, tokens: &[u32], mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        let Some(readback) = &self.all_logits_readback else {
            return Err(Error::Shape {
                kernel: "model",
                message: "loaded without all_logits".into(),
            });
        };
        self.check_tokens(tokens)?;
        let vocab = self.config.vocab;
        for (c, chunk) in tokens.chunks(self.chunk).enumerate() {
            self.act
                .write_inputs(&self.gpu, chunk, self.position, self.chunk);
            let mut encoders = self.prefill.encode_all_logits(&self.gpu);
            let last = encoders.last_mut().expect("logits encoder");
            readback.copy_from(last, self.act.all_logits(), 0);
            // The final norm's output after the logits (see `readback`).
            readback.copy_at(last, &self.act.h, (self.chunk * vocab * 4) as u64);
            self.gpu
                .queue
                .submit(encoders.into_iter().map(|e| e.finish()));
            let bytes = readback.read(&self.gpu)?;
            let logits: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
            let hidden: Vec<u32> = bytemuck::pod_collect_to_vec(
                &bytes[self.chunk * vocab * 4..][..chunk.len() * self.config.hidden * 4],
            );
            if logits[..chunk.len() * vocab].iter().any(|l| !l.is_finite()) || !all_finite(&hidden)
            {
                return Err(self.locate_non_finite(chunk, self.position, true));
            }
            for r in 0..chunk.len() {
                f(c * self.chunk + r, &logits[r * vocab..(r + 1) * vocab]);
            }
            self.position += chunk.len();
        }
        Ok(())
    }

    /// Logits [tokens, vocab] (after the final soft-cap) of every position of `tokens`, fed
    /// after what the cache holds. Needs `ModelOptions::all_logits`.
    pub fn all_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(tokens.len() * self.config.vocab);
        self.logits_each(tokens, |_, l| out.extend_from_slice(l))?;
        Ok(out)
    }
}

/// Whether every f32 (given as its bits) is finite: by the exponent bits, so that no
/// floating-point comparison can be optimised away.
fn all_finite(bits: &[u32]) -> bool {
    bits.iter().all(|&b| b & 0x7f80_0000 != 0x7f80_0000)
}

/// Which setting would make a load need less memory, from the label of the buffer that did
/// not fit (see the labels in `plan.rs`, `kv_store.rs` and `rope.rs`).
fn memory_advice(label: &str, ctx: usize, options: &ModelOptions) -> String {
    let smaller_ctx = format!("--ctx {} or less (now {ctx})", (ctx / 2).max(1));
    if label.contains(".kv.") {
        let f16 = match options.kv {
            Some(KvDtype::F32) => ", or --kv f16",
            _ => "",
        };
        format!("the KV caches grow with the context: use {smaller_ctx}{f16}")
    } else if label.starts_with("rope") || label.starts_with("logits") {
        format!("use {smaller_ctx}")
    } else {
        let dtype = match options.format {
            Some(WeightFormat::Q4_0) => "a smaller model".to_string(),
            Some(f) => format!("a smaller --dtype than {f} (q8_0 or q4_0)"),
            None => "--dtype q8_0 or q4_0".to_string(),
        };
        format!("the weights need less memory with {dtype}; the KV caches with {smaller_ctx}")
    }
}

/// Refuses, before any upload, what the kernels and the adapter's limits cannot hold, naming what
/// would fit.
fn check_fits(
    gpu: &Gpu,
    c: &ModelConfig,
    format: WeightFormat,
    kv: KvDtype,
    ctx: usize,
    chunk: usize,
    options: &ModelOptions,
) -> Result<()> {
    let max_head_dim = crate::kernels::attention::MAX_HEAD_DIM;
    if c.head_dim > max_head_dim {
        return Err(Error::Shape {
            kernel: "attention",
            message: format!(
                "head_dim {} must be a multiple of 4 and at most {max_head_dim}",
                c.head_dim
            ),
        });
    }
    let limit = gpu.caps.max_binding_size;
    let cache = ((ctx + chunk) * c.kv_dim() * kv.bytes()) as u64;
    if cache > limit {
        let fits = (limit as usize / (c.kv_dim() * kv.bytes())).saturating_sub(chunk);
        return Err(Error::TooLarge {
            what: format!(
                "a KV cache of {ctx} positions (use --ctx {fits} or less{})",
                if kv == KvDtype::F32 {
                    ", or --kv f16"
                } else {
                    ""
                }
            ),
            needed: cache,
            allowed: limit,
        });
    }
    let largest_activation =
        (chunk * (2 * c.intermediate).max(c.vocab * options.all_logits as usize) * 4) as u64;
    if largest_activation > limit {
        return Err(Error::TooLarge {
            what: format!("activations of a {chunk}-token step"),
            needed: largest_activation,
            allowed: limit,
        });
    }
    let row = format.data_bytes_per_row(c.hidden.max(c.intermediate).max(c.q_dim())) as u64;
    if row > limit {
        return Err(Error::TooLarge {
            what: format!("one {format} weight row"),
            needed: row,
            allowed: limit,
        });
    }
    Ok(())
}
