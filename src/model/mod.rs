//! The Gemma model on the GPU (Gemma 1, 2 and 3 text): weights uploaded once, every buffer,
//! bind group and dispatch built at load, and a step that is one write of its inputs, one
//! command buffer, one submit and one small readback.
//!
//! `weights::GpuWeights` holds the weights, `state::RunState` every other buffer (and what
//! the KV caches hold), `layer::LayerDispatches` one decoder layer in the order of
//! `reference::gemma::forward`, and a `plan::Plan` a whole step for a number of token rows.

mod chained;
mod fit;
mod kernels;
mod layer;
mod load;
mod plan;
mod state;
mod weights;

use crate::config::ModelConfig;
use crate::gpu::{Gpu, Readback, TimedDispatch};
use crate::kernels::{Fill, KvDtype};
use crate::weights::gemma;
use crate::weights::gguf::Gguf;
use crate::weights::safetensors::Checkpoint;
use crate::weights::{SourceDtype, WeightFormat};
use crate::{Error, Result};
pub use chained::GreedyEnd;
use kernels::Kernels;
use layer::Tap;
use load::Source;
use plan::{Head, Plan, Probe};
use state::{RunState, StateShape};
use std::time::{Duration, Instant};
use weights::GpuWeights;

/// The context when none is asked for: the model's, up to this many positions.
const DEFAULT_MAX_CTX: usize = 4096;
/// What a step costs besides its rows, in rows: a step reads every weight once whatever its
/// rows, about as long as 8 more rows take (Gemma 3 270M on lavapipe: a decode step 75 ms, a
/// prefill row 9 ms; Gemma 2 2B Q4_0 on an H200: 9.2 and 1.1 ms).
const STEP_COST_ROWS: usize = 8;

/// Rows of the plans a model binds for a prefill step of `chunk` rows: 1, `chunk`, and
/// between them chunk / 4, chunk / 16, ... while at least 2, so that a short prompt (or a
/// chunk's tail) pads at most three quarters of a smaller step rather than a whole chunk.
fn plan_rows(chunk: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = std::iter::successors(Some(chunk), |&r| Some(r / 4))
        .take_while(|&r| r >= 2)
        .chain([1])
        .collect();
    rows.reverse();
    rows
}

/// Tokens the next step takes of `rest` still to feed, with plans of `rows` rows (1 among
/// them, a whole chunk last): a whole chunk while there is one; then the first step of the
/// cheapest way to cut the tail into the plans' steps (the last one padded), each step
/// costing its rows plus [`STEP_COST_ROWS`].
fn first_step(rest: usize, rows: &[usize]) -> usize {
    let chunk = rows.iter().copied().max().unwrap_or(1);
    if rest >= chunk {
        return chunk;
    }
    // cost[r]: the least cost of r tokens, first[r]: the rows of its first step.
    let mut cost = vec![0usize; rest + 1];
    let mut first = vec![0usize; rest + 1];
    for r in 1..=rest {
        (cost[r], first[r]) = (rows.iter())
            .map(|&s| (STEP_COST_ROWS + s + cost[r - s.min(r)], s))
            // On a tie, fewer steps.
            .min_by_key(|&(c, s)| (c, std::cmp::Reverse(s)))
            .unwrap_or((r, 1));
    }
    first[rest].min(rest)
}

/// The most token rows one prefill step takes.
pub const MAX_CHUNK: usize = 512;

/// Tokens per prefill step where none is asked for. CPU adapters: 64 (lavapipe on Mesa
/// 25.0.7, Gemma 3 270M pp512 at steps of 64, 128, 256 and 512: 104.6, 106.9, 111.7 and 106.5
/// tokens/s, within the run's noise; 64 keeps a short prompt's padding and the activations
/// small). GPUs: MAX_CHUNK, so a step's matrix products have work for every compute unit (a
/// 64-token step of the 2B's q product is 32 of the GPU layout's 64 x 64 tiles), halved while a
/// step's largest activation exceeds the adapter's binding limit (down to 64; below that
/// `fit::check_fits` says what does not fit).
pub fn default_chunk(gpu: &Gpu, c: &ModelConfig, all_logits: bool) -> usize {
    const CPU_CHUNK: usize = 64;
    if gpu.caps.cpu_like {
        return CPU_CHUNK;
    }
    let limit = gpu.caps.max_binding_size;
    let mut chunk = MAX_CHUNK;
    while chunk > CPU_CHUNK && fit::step_activation_bytes(c, chunk, all_logits) > limit {
        chunk /= 2;
    }
    chunk
}
/// Ids per position whose log-probabilities [`Model::log_probs_each`] computes on the GPU:
/// a scored token and the 256 candidates of a KL base.
pub const LOG_PROB_IDS: usize = 257;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Weight format; `None` keeps the checkpoint's precision (bf16 stays bf16, f16/f32 -> f32).
    pub format: Option<WeightFormat>,
    /// KV cache type; `None` picks f16 where the adapter has SHADER_F16, else f32.
    pub kv: Option<KvDtype>,
    /// Context length (prompt and generated tokens); `None`: the model's maximum, at most 4096.
    pub ctx: Option<usize>,
    /// Tokens per prefill step; `None`: per adapter class ([`default_chunk`]).
    pub chunk: Option<usize>,
    /// Also build the all-positions lm_head (the `logits` command).
    pub all_logits: bool,
    /// Candidates read back per step for sampling.
    pub candidates: usize,
    /// Show a progress bar while uploading.
    pub progress: bool,
    /// Expand GGUF block formats (Q4_1, Q5_x, Q2_K..Q6_K) losslessly to Q8_0 or i8_affine at
    /// load (`HostMatrix::expand`);
    /// `None`: on CPU adapters, where decoding them costs more than the extra bytes.
    pub expand_blocks: Option<bool>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            format: None,
            kv: None,
            ctx: None,
            chunk: None,
            all_logits: false,
            candidates: 64,
            progress: false,
            expand_blocks: None,
        }
    }
}

/// The load's settings, resolved from the options, the model and the adapter.
struct Settings {
    /// `None`: each tensor as the source holds it.
    format: Option<WeightFormat>,
    kv: KvDtype,
    ctx: usize,
    chunk: usize,
}

impl Settings {
    fn resolve(
        gpu: &Gpu,
        c: &ModelConfig,
        source: &Source,
        dtype: SourceDtype,
        options: &ModelOptions,
    ) -> Result<Settings> {
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
        // 0 asks for the default, as llama.cpp's `-c 0` does.
        let ctx = options
            .ctx
            .filter(|&n| n > 0)
            .unwrap_or(c.max_positions.min(DEFAULT_MAX_CTX))
            .max(1);
        let chunk = match options.chunk {
            Some(chunk) => chunk.clamp(1, MAX_CHUNK),
            None => default_chunk(gpu, c, options.all_logits),
        };
        let fits_format = format.unwrap_or(WeightFormat::F32);
        fit::check_fits(gpu, c, fits_format, kv, ctx, chunk, options)?;
        Ok(Settings {
            format,
            kv,
            ctx,
            chunk,
        })
    }
}

/// Candidates for the next token: the highest logits (after the final soft-cap), best first.
#[derive(Clone, Debug)]
pub struct Candidates {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

/// Where one decode step's time goes.
pub struct StepProfile {
    /// Every dispatch of the step with its GPU time, in order.
    pub dispatches: Vec<TimedDispatch>,
    /// Command buffers an ordinary step submits.
    pub command_buffers: usize,
    /// Host time to encode and submit an ordinary step.
    pub host_encode_submit: Duration,
    /// An ordinary step from encoding to completion.
    pub wall: Duration,
}

/// What was loaded, for summaries.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The embedding's (and lm_head's) weight format.
    pub format: WeightFormat,
    /// Every weight format the model holds (GGUF files mix several), the embedding's first.
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
    /// Token rows per prefill step.
    pub chunk: usize,
}

pub struct Model {
    gpu: Gpu,
    config: ModelConfig,
    info: ModelInfo,
    /// What the bind groups refer to, kept for the model's life.
    _weights: GpuWeights,
    _kernels: Kernels,
    state: RunState,
    /// Plans for steps of 1 row (decode), `chunk` rows (prefill) and a few sizes between
    /// (see `plan_rows`), fewest rows first.
    plans: Vec<Plan>,
    candidates: usize,
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
        let source = Source::Synthetic(fill);
        Self::build(gpu, config, source, SourceDtype::Bf16, options)
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
        let ctx = options
            .ctx
            .unwrap_or(config.max_positions.min(DEFAULT_MAX_CTX));
        let built = Self::build_unchecked(gpu, config, source, dtype, options);
        match faults.take() {
            Some(fault) => Err(fault.into_error(|label| fit::memory_advice(label, ctx, options))),
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
        let Settings {
            format,
            kv,
            ctx,
            chunk,
        } = Settings::resolve(&gpu, c, &source, dtype, options)?;
        let weights = GpuWeights::load(
            &gpu,
            c,
            &source,
            dtype,
            format,
            ctx + chunk,
            options.progress,
        )?;
        let formats = weights.formats();
        let kernels = Kernels::new(&gpu, &formats, kv)?;
        let candidates = options.candidates.clamp(1, crate::kernels::top_k::MAX_K);
        let shape = StateShape {
            rows: chunk,
            ctx,
            kv,
            candidates,
            all_logits: options.all_logits,
        };
        let state = RunState::new(&gpu, c, &shape)?;
        let plans = plan_rows(chunk)
            .into_iter()
            .map(|rows| Plan::build(&gpu, c, &kernels, (&weights, &state), rows, candidates))
            .collect::<Result<_>>()?;
        let info = ModelInfo {
            format: formats[0],
            file_type: match &source {
                Source::Gguf(g, ..) => g.file_type(),
                Source::Checkpoint(_) => format!("{dtype:?}").to_lowercase(),
                Source::Synthetic(_) => formats[0].name().to_string(),
            },
            formats,
            kv,
            file_bytes: source
                .file_bytes()
                .unwrap_or(c.parameters() as u64 * dtype.bytes() as u64),
            kv_bytes: state.kv_bytes(),
            ctx,
            chunk,
        };
        Ok(Model {
            gpu,
            config,
            info,
            _weights: weights,
            _kernels: kernels,
            state,
            plans,
            candidates,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Positions the caches hold.
    pub fn ctx(&self) -> usize {
        self.info.ctx
    }

    /// Tokens the cache holds, in order.
    pub fn cached(&self) -> &[u32] {
        self.state.cached()
    }

    /// Number of tokens in the cache.
    pub fn position(&self) -> usize {
        self.state.cached().len()
    }

    /// Forgets the cached context.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::TokenOutOfVocabulary { id, vocab });
        }
        let needed = self.position() + tokens.len();
        if needed > self.ctx() {
            return Err(Error::ContextFull {
                needed,
                ctx: self.ctx(),
            });
        }
        Ok(())
    }

    /// The plan for a step of `n` tokens (at most a chunk): the one with the fewest rows that
    /// holds them.
    fn plan(&self, n: usize) -> &Plan {
        let plans = &self.plans;
        plans
            .iter()
            .find(|p| p.rows >= n)
            .unwrap_or(&plans[plans.len() - 1])
    }

    /// The plan of a whole chunk.
    fn chunk_plan(&self) -> &Plan {
        &self.plans[self.plans.len() - 1]
    }

    /// Tokens the next step takes of `rest` still to feed (see [`first_step`]).
    fn next_step(&self, rest: usize) -> usize {
        let rows: Vec<usize> = self.plans.iter().map(|p| p.rows).collect();
        first_step(rest, &rows)
    }

    /// Runs `tokens` (at least one) through the model after what the cache holds and returns
    /// the next-token candidates at the last of them. `greedy` reads back only the best one.
    pub fn feed(&mut self, tokens: &[u32], greedy: bool) -> Result<Candidates> {
        if tokens.is_empty() {
            return Err(Error::Empty("no tokens to feed"));
        }
        self.check_tokens(tokens)?;
        let mut rest = tokens;
        // The step that ends in the logits, to replay if they are not finite.
        let mut last = (rest, self.position());
        while !rest.is_empty() {
            let take = self.next_step(rest.len());
            let head = if rest.len() == take {
                last = (&rest[..take], self.position());
                Head::Candidates {
                    row: take - 1,
                    greedy,
                }
            } else {
                Head::None
            };
            self.step(&rest[..take], head)?;
            rest = &rest[take..];
        }
        match self.read_candidates(0, None, greedy)? {
            Some(c) => Ok(c),
            None => {
                let (tokens, start) = last;
                Err(self.locate_non_finite(self.plan(tokens.len()), tokens, start))
            }
        }
    }

    /// Records and submits one step of `tokens` (at most a chunk) after the cache.
    fn step(&mut self, tokens: &[u32], head: Head) -> Result<()> {
        let rows = self.plan(tokens.len()).rows;
        self.state.feed(&self.gpu, tokens, rows, self.info.ctx)?;
        let mut rec = self.gpu.recorder("step");
        self.plan(tokens.len()).record(&mut rec, head);
        // Each step's inputs are written before its commands: one submit per step.
        rec.submit();
        Ok(())
    }

    /// Profiles one greedy decode step at the current position (which it does not advance):
    /// an ordinary step for its host and wall times, then the same step again with every
    /// dispatch between two GPU timestamps.
    pub fn profile_decode(&mut self, token: u32) -> Result<StepProfile> {
        self.check_tokens(&[token])?;
        self.profile_step(&[token], self.position())
    }

    /// Profiles one prefill step as [`Model::profile_decode`] does a decode step: the last
    /// whole chunk of what the cache holds (fewer tokens when it holds less than a chunk), run
    /// again at its positions, which rewrites the same cache entries with the same values.
    /// Returns the profile and the step's token count.
    pub fn profile_prefill(&mut self) -> Result<(StepProfile, usize)> {
        let cached = self.state.cached();
        let n = cached.len().min(self.info.chunk);
        if n < 2 {
            return Err(Error::Empty(
                "fewer than two cached tokens to profile a prefill step",
            ));
        }
        let start = cached.len() - n;
        let tokens = cached[start..].to_vec();
        Ok((self.profile_step(&tokens, start)?, n))
    }

    /// An ordinary step of `tokens` at `start` for its host and wall times, then the same step
    /// with every dispatch timed; ends in the candidates of its last token.
    fn profile_step(&mut self, tokens: &[u32], start: usize) -> Result<StepProfile> {
        let head = Head::Candidates {
            row: tokens.len() - 1,
            greedy: true,
        };
        let mut timed = self.gpu.timed_recorder("profile")?;
        let plan = self.plan(tokens.len());
        self.state.write_inputs(&self.gpu, tokens, start, plan.rows);
        let submitted = self.gpu.submitted();
        let begin = Instant::now();
        let mut rec = self.gpu.recorder("step");
        plan.record(&mut rec, head);
        rec.submit();
        let host_encode_submit = begin.elapsed();
        let command_buffers = (self.gpu.submitted() - submitted) as usize;
        self.gpu.wait()?;
        let wall = begin.elapsed();
        plan.record(&mut timed, head);
        Ok(StepProfile {
            dispatches: timed.finish_timed()?,
            command_buffers,
            host_encode_submit,
            wall,
        })
    }

    /// The candidates in readback `slot` once submission `index` (every submission with
    /// `None`) has finished; `None` when they or the hidden state they come from are not
    /// finite.
    fn read_candidates(
        &self,
        slot: usize,
        index: Option<wgpu::SubmissionIndex>,
        greedy: bool,
    ) -> Result<Option<Candidates>> {
        let bytes = self.state.candidates[slot].read_after(&self.gpu, index)?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let k = if greedy { 1 } else { self.candidates };
        let (values, rest) = words.split_at(self.candidates);
        let (ids, non_finite) = rest.split_at(self.candidates);
        let c = Candidates {
            ids: ids[..k].to_vec(),
            logits: values[..k].iter().map(|&v| f32::from_bits(v)).collect(),
        };
        // NaN or infinite logits make the top-k's comparisons meaningless: its ids are then
        // placeholders (u32::MAX) or arbitrary.
        let vocab = self.config.vocab;
        // (A vocabulary smaller than k leaves placeholders after its last id.)
        let real = c.ids.len().min(vocab);
        let finite = non_finite[0] == 0
            && c.logits[..real].iter().all(|l| l.is_finite())
            && c.ids[..real].iter().all(|&i| (i as usize) < vocab);
        Ok(finite.then_some(c))
    }

    /// The error for logits that are not finite, naming the first layer whose output is not:
    /// the step (`tokens` at `start`) is run again, reading the residual stream after each
    /// layer. Running it again rewrites the same cache entries with the same values.
    fn locate_non_finite(&self, plan: &Plan, tokens: &[u32], start: usize) -> Error {
        let n_layers = self.config.layers.len();
        let layer_bytes = (tokens.len() * self.config.hidden * 4) as u64;
        self.state.write_inputs(&self.gpu, tokens, start, plan.rows);
        let probe = Readback::new(&self.gpu, "non_finite.x", n_layers as u64 * layer_bytes);
        let mut rec = self.gpu.recorder("non_finite");
        plan.record_probed(&mut rec, Head::None, &mut |rec, p| {
            if let Probe::LayerOut(i) = p {
                rec.copy_to_readback(&probe, &self.state.x, i as u64 * layer_bytes, layer_bytes);
            }
        });
        rec.submit();
        let bytes = match probe.read(&self.gpu) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let per_layer = layer_bytes as usize / 4;
        match (0..n_layers).find(|&i| !all_finite(&words[i * per_layer..][..per_layer])) {
            Some(i) => Error::NonFinite {
                where_: format!(", first in the output of layer {i} of {n_layers}"),
            },
            None => Error::NonFinite {
                where_: " after the last layer (final norm, lm_head or soft-cap)".into(),
            },
        }
    }

    /// Named activations of `tokens` (at most one prefill chunk) fed after what the cache
    /// holds, each [tokens, width]: `embed`, `L07.attn_out`, `L07.mlp_out`, `L07.out`,
    /// `final_norm` (see `layer::Tap`). The names match `reference::gemma::forward_traced`.
    pub fn activations(&mut self, tokens: &[u32]) -> Result<Vec<(String, Vec<f32>)>> {
        if tokens.is_empty() {
            return Err(Error::Empty("no tokens to trace"));
        }
        if tokens.len() > self.info.chunk {
            return Err(Error::InvalidSetting {
                name: "tokens",
                message: format!("{} exceed one step of {}", tokens.len(), self.info.chunk),
            });
        }
        self.check_tokens(tokens)?;
        let hidden_bytes = (tokens.len() * self.config.hidden * 4) as u64;
        let names = activation_names(self.config.layers.len());
        let readback = Readback::new(&self.gpu, "activations", names.len() as u64 * hidden_bytes);
        let rows = self.plan(tokens.len()).rows;
        self.state.feed(&self.gpu, tokens, rows, self.info.ctx)?;
        let plan = self.plan(tokens.len());
        let state = &self.state;
        let mut rec = self.gpu.recorder("activations");
        let mut slot = 0u64;
        plan.record_probed(&mut rec, Head::FinalNorm, &mut |rec, p| {
            let src = match p {
                Probe::Layer { .. } => &state.o,
                Probe::Embedded | Probe::LayerOut(_) => &state.x,
                Probe::FinalNorm => &state.h,
            };
            rec.copy_to_readback(&readback, src, slot * hidden_bytes, hidden_bytes);
            slot += 1;
        });
        rec.submit();
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(&readback.read(&self.gpu)?);
        let per = hidden_bytes as usize / 4;
        Ok(names
            .into_iter()
            .zip(values.chunks_exact(per))
            .map(|(n, v)| (n, v.to_vec()))
            .collect())
    }

    /// Runs `tokens` through the model after what the cache holds, computing no logits
    /// (a context to score after, or a prompt prefix).
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        let mut rest = tokens;
        while !rest.is_empty() {
            let take = self.next_step(rest.len());
            self.step(&rest[..take], Head::None)?;
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Calls `f(i, logits)` with the logits \[vocab\] (after the final soft-cap) of every
    /// position i of `tokens`, fed after what the cache holds. Needs
    /// `ModelOptions::all_logits`.
    pub fn logits_each(&mut self, tokens: &[u32], mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        let Some(readback) = self.state.all_logits.clone() else {
            return Err(Error::NotLoadedWith {
                what: "the logits of every position",
                option: "all_logits",
            });
        };
        self.check_tokens(tokens)?;
        let (vocab, hidden, chunk) = (self.config.vocab, self.config.hidden, self.info.chunk);
        for (c, part) in tokens.chunks(chunk).enumerate() {
            let start = self.position();
            self.state.feed(&self.gpu, part, chunk, self.info.ctx)?;
            let mut rec = self.gpu.recorder("step");
            self.chunk_plan().record(&mut rec, Head::AllLogits);
            rec.submit();
            let bytes = readback.read(&self.gpu)?;
            let logits: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
            let h: Vec<u32> = bytemuck::pod_collect_to_vec(
                &bytes[chunk * vocab * 4..][..part.len() * hidden * 4],
            );
            if logits[..part.len() * vocab].iter().any(|l| !l.is_finite()) || !all_finite(&h) {
                return Err(self.locate_non_finite(self.chunk_plan(), part, start));
            }
            for r in 0..part.len() {
                f(c * chunk + r, &logits[r * vocab..(r + 1) * vocab]);
            }
        }
        Ok(())
    }

    /// Calls `f(i, lse, log_probs, logits)` for every position i of `tokens` (fed after what
    /// the cache holds) with the log-sum-exp of its logits (after the final soft-cap) and the
    /// log-probabilities of its [`LOG_PROB_IDS`] ids `ids[i * LOG_PROB_IDS..]`, computed on the
    /// GPU; the logits \[vocab\] themselves only with `full` (a few floats per position come
    /// back instead of the vocabulary's). Needs `ModelOptions::all_logits`.
    pub fn log_probs_each(
        &mut self,
        tokens: &[u32],
        ids: &[u32],
        full: bool,
        mut f: impl FnMut(usize, f32, &[f32], Option<&[f32]>),
    ) -> Result<()> {
        let (Some(readback), Some(ids_buffer), Some(logits_readback)) = (
            self.state.log_probs_readback.clone(),
            self.state.log_prob_ids.clone(),
            self.state.all_logits.clone(),
        ) else {
            return Err(Error::NotLoadedWith {
                what: "the log-probabilities of every position",
                option: "all_logits",
            });
        };
        self.check_tokens(tokens)?;
        let (vocab, chunk) = (self.config.vocab, self.info.chunk);
        if ids.len() != tokens.len() * LOG_PROB_IDS {
            return Err(Error::InvalidSetting {
                name: "ids",
                message: format!(
                    "{} ids for {} positions; {LOG_PROB_IDS} per position are needed",
                    ids.len(),
                    tokens.len()
                ),
            });
        }
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::TokenOutOfVocabulary { id, vocab });
        }
        let per = 1 + LOG_PROB_IDS;
        for (c, part) in tokens.chunks(chunk).enumerate() {
            let start = self.position();
            self.state.feed(&self.gpu, part, chunk, self.info.ctx)?;
            let rows = &ids[c * chunk * LOG_PROB_IDS..][..part.len() * LOG_PROB_IDS];
            self.gpu
                .queue
                .write_buffer(&ids_buffer, 0, bytemuck::cast_slice(rows));
            let mut rec = self.gpu.recorder("step");
            self.chunk_plan().record(&mut rec, Head::LogProbs { full });
            rec.submit();
            let bytes = readback.read(&self.gpu)?;
            // [rows, per] results, then the rows' flags (padding rows' too).
            let (out, flags) = bytes.split_at(bytes.len() / (per + 1) * per);
            let out: Vec<f32> = bytemuck::pod_collect_to_vec(out);
            let h_non_finite = flags[..chunk * 4].iter().any(|&b| b != 0);
            let logits: Option<Vec<f32>> = match full {
                true => Some(bytemuck::pod_collect_to_vec(
                    &logits_readback.read(&self.gpu)?[..part.len() * vocab * 4],
                )),
                false => None,
            };
            let rows_out = &out[..part.len() * per];
            if h_non_finite || rows_out.iter().any(|v| !v.is_finite()) {
                return Err(self.locate_non_finite(self.chunk_plan(), part, start));
            }
            for (r, o) in rows_out.chunks_exact(per).enumerate() {
                let l = logits.as_ref().map(|l| &l[r * vocab..(r + 1) * vocab]);
                f(c * chunk + r, o[0], &o[1..], l);
            }
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

/// The names [`Model::activations`] returns, in order.
fn activation_names(layers: usize) -> Vec<String> {
    let mut names = vec!["embed".to_string()];
    for i in 0..layers {
        for tap in [Tap::AttnOut, Tap::MlpOut] {
            names.push(format!("L{i:02}.{}", tap.name()));
        }
        names.push(format!("L{i:02}.out"));
    }
    names.push("final_norm".into());
    names
}

/// Whether every f32 (given as its bits) is finite: by the exponent bits, so that no
/// floating-point comparison can be optimised away.
fn all_finite(bits: &[u32]) -> bool {
    bits.iter().all(|&b| b & 0x7f80_0000 != 0x7f80_0000)
}

#[cfg(test)]
mod tests {
    use super::{first_step, plan_rows};

    #[test]
    fn plans_divide_the_chunk_by_four() {
        assert_eq!(plan_rows(64), [1, 4, 16, 64]);
        assert_eq!(plan_rows(512), [1, 2, 8, 32, 128, 512]);
        assert_eq!(plan_rows(7), [1, 7]);
        assert_eq!(plan_rows(1), [1]);
    }

    /// Every token is fed once, a step never takes more than its plan holds, and a padded step
    /// pads at most three quarters of its plan; short tails take the steps the costs say.
    #[test]
    fn steps_cover_the_tokens_and_bound_the_padding() {
        let rows = plan_rows(64);
        for total in 1..300 {
            let mut rest = total;
            while rest > 0 {
                let take = first_step(rest, &rows);
                assert!(
                    (1..=rest.min(64)).contains(&take),
                    "{total}: took {take} of {rest}"
                );
                let plan = *rows.iter().find(|&&r| r >= take).unwrap();
                assert!(
                    4 * (plan - take) <= 3 * plan,
                    "{total}: {take} in a plan of {plan}"
                );
                rest -= take;
            }
        }
        // 3 tokens: one padded step of 4 (12) rather than three of one (27); 17: 16 then 1
        // (33) rather than a padded 64 (72); 100: a whole chunk first.
        assert_eq!(first_step(3, &rows), 3);
        assert_eq!(first_step(17, &rows), 16);
        assert_eq!(first_step(1, &rows), 1);
        assert_eq!(first_step(100, &rows), 64);
    }
}
