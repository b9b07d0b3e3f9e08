//! Text in, text out: the tokenizer, the model and the sampler put together.

pub mod chat;
mod output;
pub mod perplexity;
pub mod sampling;
pub mod sandbox;
pub mod tokenizer;

use crate::config::ModelConfig;
use crate::files::{MAX_JSON_BYTES, read_text_if_present};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::{Model, ModelOptions};
use crate::weights::gemma;
use crate::weights::safetensors::Checkpoint;
use crate::{Error, Result};
use output::Output;
pub use sampling::{Sampler, SamplingDefaults, SamplingParams};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
pub use tokenizer::{Message, RenderedChat, TextStream, Tokenizer};

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-sequence token (not included in the text).
    Eos,
    MaxTokens,
    /// The context holds no more tokens.
    ContextFull,
    /// [`Engine::cancel`] was set (Ctrl-C in a chat, a client gone from the server).
    Cancelled,
}

/// The result of one generation.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated ids, the stopping eos included.
    pub ids: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Each generated token's log-probability and its best alternatives (the stopping eos
    /// left out), when [`GenerateOptions::logprobs`] asked for them.
    pub logprobs: Vec<TokenLogprob>,
}

/// A generated token's log-probability and the best alternatives', by a log-softmax over the
/// candidates the GPU reads back (the 64 best logits; the rest of the vocabulary, far less
/// likely, is left out).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    /// Best first.
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    fn new(c: &crate::model::Candidates, id: u32, top: usize) -> TokenLogprob {
        let max = c.logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = c.logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        let lp = |l: f32| (l as f64 - log_z) as f32;
        let logprob = c
            .ids
            .iter()
            .position(|&i| i == id)
            .map_or(f32::NEG_INFINITY, |k| lp(c.logits[k]));
        let mut order: Vec<usize> = (0..c.ids.len()).collect();
        order.sort_by(|&a, &b| c.logits[b].total_cmp(&c.logits[a]));
        let top = order
            .into_iter()
            .take(top)
            .map(|k| (c.ids[k], lp(c.logits[k])))
            .collect();
        TokenLogprob { id, logprob, top }
    }
}

impl Generation {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }

    /// Tokens after the first, over the time after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.ids.len().saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// What to generate: how many tokens, how to choose them, and what to record.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Go on past end-of-sequence tokens (benchmarks, the server's `ignore_eos`).
    pub ignore_eos: bool,
    /// Some(n): record each generated token's log-probability and its n best alternatives'.
    pub logprobs: Option<usize>,
}

impl GenerateOptions {
    pub fn new(max_tokens: usize, sampling: SamplingParams) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            sampling,
            ..Default::default()
        }
    }
}

/// What a generation streams: the next piece of text, and the log-probabilities (with
/// [`GenerateOptions::logprobs`]) of the tokens since the last piece. A piece ends at a
/// character boundary, so it may come a token or more after the tokens that make it.
#[derive(Clone, Copy, Debug)]
pub struct Delta<'a> {
    pub text: &'a str,
    pub logprobs: &'a [TokenLogprob],
}

pub struct Engine {
    model: Model,
    pub tokenizer: Tokenizer,
    /// End-of-sequence ids (generation_config.json, else config.json).
    eos: Vec<u32>,
    /// The model's own sampling settings, where it has some.
    pub sampling_defaults: SamplingDefaults,
    /// Set it (from any thread) to stop the generation under way after its current token.
    pub cancel: Arc<AtomicBool>,
}

/// The result of a scoped thread; its panic goes on in this thread.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

impl Engine {
    /// Loads a Hugging Face model directory, a `.gguf` file or a model name ([`crate::store`]).
    pub fn load(path: &Path, gpu: &GpuOptions, options: &ModelOptions) -> Result<Engine> {
        let resolved = crate::store::resolve(path)?;
        let path = resolved.as_path();
        // Everything read from files is checked before the GPU is touched.
        if path.is_file() {
            let g = crate::weights::gguf::Gguf::open(path)?;
            let config = ModelConfig::from_gguf(&g)?;
            gemma::check_gguf(&g, &config)?;
            // The tokenizer (seconds for Gemma's 262k pieces) is built beside the weights'
            // upload; its error, a file's, comes first.
            let (tokenizer, model) = std::thread::scope(|s| {
                let tokenizer = s.spawn(|| Tokenizer::from_gguf(&g));
                let model = Gpu::new(gpu).and_then(|gpu| Model::from_gguf(gpu, &g, options));
                (join(tokenizer), model)
            });
            let (tokenizer, model) = (tokenizer?, model?);
            // End of generation: the file's eos and, for chat, <end_of_turn>.
            let mut eos = model.config().eos_ids.clone();
            eos.extend(tokenizer.token_id("<end_of_turn>"));
            return Ok(Engine {
                model,
                tokenizer,
                eos,
                sampling_defaults: SamplingDefaults::from_gguf(&g),
                cancel: Arc::default(),
            });
        }
        if !path.is_dir() {
            let message = if path.exists() {
                "is a FIFO, socket or device, not a model directory or a .gguf file"
            } else {
                "not found (expected a Hugging Face model directory or a .gguf file)"
            };
            return Err(Error::Io {
                path: path.display().to_string(),
                message: message.into(),
            });
        }
        let config = ModelConfig::from_dir(path)?;
        let ckpt = Checkpoint::open(path)?;
        gemma::check_checkpoint(&ckpt, &config)?;
        let generation =
            read_text_if_present(&path.join("generation_config.json"), MAX_JSON_BYTES)?;
        let (tokenizer, model) = std::thread::scope(|s| {
            let tokenizer = s.spawn(|| Tokenizer::from_dir(path));
            let model =
                Gpu::new(gpu).and_then(|gpu| Model::from_checkpoint(gpu, config, &ckpt, options));
            (join(tokenizer), model)
        });
        let (tokenizer, model) = (tokenizer?, model?);
        let generation_config =
            generation.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let mut eos = generation_config
            .as_ref()
            .map(|v| crate::config::token_ids(v.get("eos_token_id")))
            .unwrap_or_default();
        let sampling_defaults = generation_config
            .as_ref()
            .map(SamplingDefaults::from_generation_config)
            .unwrap_or_default();
        if eos.is_empty() {
            eos = model.config().eos_ids.clone();
        }
        Ok(Engine {
            model,
            tokenizer,
            eos,
            sampling_defaults,
            cancel: Arc::default(),
        })
    }

    /// The prompt's ids: `<bos>` and the text, or the chat template around it.
    pub fn encode_prompt(&self, prompt: &str, chat: bool) -> Result<Vec<u32>> {
        self.encode_prompt_with_system(prompt, chat, None)
    }

    /// As [`Engine::encode_prompt`], with a system message first in a chat.
    pub fn encode_prompt_with_system(
        &self,
        prompt: &str,
        chat: bool,
        system: Option<&str>,
    ) -> Result<Vec<u32>> {
        if chat {
            let mut messages: Vec<Message> = system
                .map(|s| Message {
                    role: "system".into(),
                    content: s.into(),
                })
                .into_iter()
                .collect();
            messages.push(Message {
                role: "user".into(),
                content: prompt.into(),
            });
            self.tokenizer.encode_chat(&messages)
        } else {
            self.tokenizer.encode(prompt, true)
        }
    }

    /// The model, to describe it (configuration, adapter, what was loaded).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// End-of-sequence ids.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Replaces the end-of-sequence ids.
    pub fn set_eos(&mut self, ids: Vec<u32>) {
        self.eos = ids;
    }

    /// Positions the context holds.
    pub fn ctx(&self) -> usize {
        self.model.ctx()
    }

    /// The adapter, in one line.
    pub fn adapter(&self) -> String {
        self.model.gpu().describe()
    }

    /// Logits [ids, vocab] (after the final soft-cap) of every position of `ids`, from an
    /// empty cache. Needs `ModelOptions::all_logits`.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.model.reset();
        self.model.all_logits(ids)
    }

    /// Generates after `prompt` (ids) from an empty cache, calling `on_delta` with each new
    /// piece of text.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_delta: impl FnMut(Delta),
    ) -> Result<Generation> {
        self.model.reset();
        self.continue_with(prompt, options, on_delta)
    }

    /// Generates after `prompt` (ids), reusing the cache for the longest prefix of `prompt`
    /// it already holds, so only the rest is prefilled (a chat's earlier turns).
    pub fn generate_reusing(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_delta: impl FnMut(Delta),
    ) -> Result<Generation> {
        // Start over when the cache holds something else, or all of the prompt (its last
        // token must be fed again for its logits).
        let held = self.model.cached();
        if held.len() >= prompt.len() || held[..] != prompt[..held.len()] {
            self.model.reset();
        }
        let new = prompt[self.model.position()..].to_vec();
        self.continue_with(&new, options, on_delta)
    }

    /// Tokens the cache holds, in order.
    pub fn context(&self) -> &[u32] {
        self.model.cached()
    }

    /// Checks that `new` is a prompt, and that it and one generated token fit the context.
    fn check_room(&self, new: &[u32]) -> Result<()> {
        if new.is_empty() {
            return Err(Error::Empty("the prompt is empty"));
        }
        let needed = self.model.position() + new.len() + 1;
        if needed > self.model.ctx() {
            return Err(Error::ContextFull {
                needed,
                ctx: self.model.ctx(),
            });
        }
        Ok(())
    }

    /// Feeds `new` after the cache and generates. `prompt_tokens` counts the new ones.
    fn continue_with(
        &mut self,
        new: &[u32],
        options: &GenerateOptions,
        on_delta: impl FnMut(Delta),
    ) -> Result<Generation> {
        let params = &options.sampling;
        params.validate()?;
        self.check_room(new)?;
        self.cancel.store(false, Ordering::Relaxed);
        let mut sampler = Sampler::new(params.clone());
        // Log-probabilities need every candidate, not only the best.
        let greedy = params.greedy() && options.logprobs.is_none();
        let stream = TextStream::new(&self.tokenizer);
        let mut out = Output::new(stream, &self.eos, options, &self.cancel, on_delta);
        let start = Instant::now();
        let mut candidates = self.model.feed(new, greedy)?;
        let prefill_time = start.elapsed();
        let decode_start = Instant::now();
        let ctx = self.model.ctx();
        let stop = loop {
            if let Some(stop) = out.before_next() {
                break stop;
            }
            let next = sampler.sample(&candidates, self.model.cached());
            let logprob = options
                .logprobs
                .map(|top| TokenLogprob::new(&candidates, next, top));
            if let Some(stop) = out.push(next, logprob)? {
                break stop;
            }
            if self.model.position() + 1 > ctx {
                break StopReason::ContextFull;
            }
            if greedy {
                // The rest chained on the GPU (two steps in flight on GPUs), the same tokens.
                let mut stop = None;
                self.model.decode_greedy(next, |token| {
                    stop = match out.before_next() {
                        Some(s) => Some(s),
                        None => out.push(token, None)?,
                    };
                    Ok(stop.is_none())
                })?;
                // Without a reason of ours it ended at the context's end.
                break stop.unwrap_or(StopReason::ContextFull);
            }
            candidates = self.model.feed(&[next], greedy)?;
        };
        out.finish()?;
        Ok(Generation {
            ids: out.ids,
            text: out.text,
            stop,
            prompt_tokens: new.len(),
            prefill_time,
            decode_time: decode_start.elapsed(),
            logprobs: out.logprobs,
        })
    }
}

/// Checks, before a long run, that `path` can be written as a new file: it does not exist
/// and its directory takes a new file (made and removed again here).
pub fn check_new_file(path: &Path) -> Result<()> {
    let io = |message: String| Error::Io {
        path: path.display().to_string(),
        message,
    };
    if path.exists() {
        return Err(io(
            "exists; choose a new file name (it is never overwritten)".into(),
        ));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io(format!("cannot be written: {e}")))?;
    std::fs::remove_file(path).map_err(|e| io(format!("cannot be written: {e}")))
}

/// Writes `bytes` to `path`, which must not exist yet.
pub fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // No half-written file that a later run would take for a whole one.
        let _ = std::fs::remove_file(path);
        return Err(io(e));
    }
    Ok(())
}
