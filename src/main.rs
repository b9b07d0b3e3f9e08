//! The `gemma-wgpu` command line: parses arguments and calls the library.
//!
//! Errors end the run with one line on stderr and exit status 1. Output that nobody reads
//! any more (stdout closed early, as by `| head`) ends it quietly with status 0, as a finished
//! run: a broken pipe is how a reader says it has what it wanted.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use gemma_wgpu::engine::{
    Engine, GenerateOptions, SamplingDefaults, SamplingParams, StopReason, sampling,
};
use gemma_wgpu::gpu::{self, BackendChoice, GpuOptions};
use gemma_wgpu::kernels::KvDtype;
use gemma_wgpu::model::{Model, ModelOptions};
use gemma_wgpu::weights::WeightFormat;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod bench;
mod chat;
mod compare;
mod models;

#[derive(Parser)]
#[command(
    name = "gemma-wgpu",
    version,
    about = "Gemma inference on any GPU through wgpu",
    after_help = "Exit status: 0 on success, also when the reader of stdout stops early (as \
                  `| head` does); 1 on an error, told in one line on stderr; 2 for arguments \
                  that do not parse."
)]
struct Cli {
    /// Backend: vulkan, metal, dx12, gl or auto.
    #[arg(
        long,
        global = true,
        env = "GEMMA_WGPU_BACKEND",
        default_value = "auto"
    )]
    backend: String,
    /// Adapter: index from `gemma-wgpu devices` or a name substring.
    #[arg(long, global = true, env = "GEMMA_WGPU_ADAPTER")]
    adapter: Option<String>,
    /// Use at most this many bytes per storage binding (emulates a smaller device).
    #[arg(long, global = true, env = "GEMMA_WGPU_MAX_BINDING", hide = true)]
    max_binding_size: Option<u64>,
    /// Allocate at most this many bytes of GPU buffers (emulates a device with less memory).
    #[arg(long, global = true, env = "GEMMA_WGPU_MAX_MEMORY", hide = true)]
    max_memory: Option<u64>,
    /// Products with quantized weights: int8 quantizes the activation per block of 32 and
    /// multiplies codes (GGML's q8_1), f32 keeps it exact. auto: int8 on GPUs; on CPU adapters
    /// (lavapipe, llvmpipe) int8 in Q4_0's decode products, f32 elsewhere (int8 there: every
    /// quantized decode product).
    #[arg(long, global = true, env = "GEMMA_WGPU_ACTIVATIONS", default_value = "auto",
          value_parser = ["auto", "int8", "f32"])]
    activations: String,
    /// Access patterns: auto (by adapter type), cpu or gpu (either layout on one adapter).
    #[arg(long, global = true, env = "GEMMA_WGPU_LAYOUT", default_value = "auto", hide = true,
          value_parser = ["auto", "cpu", "gpu"])]
    layout: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter with its features and limits.
    Devices,
    /// Run a model as `ollama run` does: generate after PROMPT (in the chat template of a
    /// chat model; a base model continues the text), or without a prompt start a chat.
    Run(RunArgs),
    /// Generate text after a prompt.
    Generate(GenerateArgs),
    /// Write the logits of every position of a prompt to a safetensors file.
    Logits(LogitsArgs),
    /// Measure prefill and decode speed.
    Bench(bench::BenchArgs),
    /// Perplexity of a text file, as llama.cpp's llama-perplexity computes it.
    Perplexity(PerplexityArgs),
    /// A multi-turn chat in the terminal (/reset starts over, /exit quits, Ctrl-C stops a reply).
    Chat(chat::ChatArgs),
    /// An OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models).
    Serve(ServeArgs),
    /// Print the token ids of a text, as llama.cpp's llama-tokenize does.
    Tokenize(TokenizeArgs),
    /// Download models by name (an alias or a Hugging Face repo) into the caches.
    Pull(models::PullArgs),
    /// List the downloaded models (--available: the names this program knows).
    #[command(visible_alias = "ls")]
    List(models::ListArgs),
    /// Delete downloaded models.
    Rm(models::RmArgs),
}

#[derive(Args)]
struct TokenizeArgs {
    /// A Hugging Face model directory (its tokenizer.json), a .gguf file or a model name.
    #[arg(short, long)]
    model: PathBuf,
    /// The text to tokenize.
    #[arg(short, long, group = "text", required = true)]
    prompt: Option<String>,
    /// A file holding the text to tokenize.
    #[arg(short, long, group = "text")]
    file: Option<PathBuf>,
    /// Read `<start_of_turn>`, `<end_of_turn>` and the other control tokens written in the
    /// text as those tokens (default: as plain text).
    #[arg(long)]
    special: bool,
    /// Do not put `<bos>` first.
    #[arg(long)]
    no_bos: bool,
    /// One JSON object: ids, and each token's piece and byte range in the text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests that may wait behind the one being generated; more get HTTP 503.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// The model id the server reports (/v1/models) and puts in responses (default: the
    /// model's file or directory name).
    #[arg(long, value_name = "NAME")]
    alias: Option<String>,
    #[command(flatten)]
    access: ServeAccessArgs,
    #[command(flatten)]
    limits: ServeLimitArgs,
}

/// Who may use the server.
#[derive(Args)]
struct ServeAccessArgs {
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(long, env = "GEMMA_WGPU_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Also accept requests whose Host header names HOST (besides IP addresses and
    /// localhost); repeatable; `*` accepts any.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Let web pages from ORIGIN (e.g. https://app.example) call the server (CORS);
    /// repeatable. Without it, requests from web pages are refused.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
}

/// Limits on connections and requests.
#[derive(Args)]
struct ServeLimitArgs {
    /// Open connections at most; more are answered 503 and closed.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds a client has to send a request's headers; slower ones are disconnected.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    header_timeout: f64,
    /// Seconds a client has to send a request's body once its headers are in (408 after).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    body_timeout: f64,
    /// Seconds a kept-alive connection may sit idle between requests.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    idle_timeout: f64,
    /// Largest `max_tokens` a request may ask for (default: as many as the context holds).
    #[arg(long, allow_negative_numbers = true)]
    max_tokens_limit: Option<i64>,
}

#[derive(Args)]
struct PerplexityArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(short, long)]
    model: PathBuf,
    /// The text to score.
    #[arg(short, long)]
    file: PathBuf,
    /// Tokens per chunk (at least 4: each chunk's second half is scored).
    #[arg(short, long, default_value_t = 512)]
    ctx: usize,
    /// Tokens per step through the model (default: per adapter); 1 scores every position
    /// through decode's kernels.
    #[arg(long)]
    chunk: Option<usize>,
    /// A base run to measure KL divergence against: read when the file exists, written
    /// (from this run) when it does not.
    #[arg(long)]
    kl_base: Option<PathBuf>,
    #[arg(long)]
    dtype: Option<WeightFormat>,
    #[arg(long)]
    kv: Option<KvDtype>,
}

/// How to load the model.
#[derive(Args, Clone)]
pub struct LoadArgs {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json) or a .gguf file.
    #[arg(short, long)]
    model: PathBuf,
    /// Weight format on the GPU: bf16, q8_0, q4_0 or f32 (default: the checkpoint's precision).
    #[arg(long)]
    dtype: Option<WeightFormat>,
    /// KV cache type: f16 or f32 (default: f16 where the adapter has SHADER_F16).
    #[arg(long)]
    kv: Option<KvDtype>,
    /// Context length in tokens (default, and with 0: the model's maximum, at most 4096).
    #[arg(short, long)]
    ctx: Option<usize>,
}

/// The prompt, as text (given, from stdin or from a file) or as token ids.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
struct PromptArgs {
    /// Prompt text (`<bos>` is added); `-` reads it from stdin.
    #[arg(short, long)]
    prompt: Option<String>,
    /// A file holding the prompt text.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Raw token ids, comma-separated: 2,651,...
    #[arg(long, value_delimiter = ',')]
    tokens: Option<Vec<u32>>,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Wrap the prompt in the model's chat template (tokenizer_config.json).
    #[arg(long)]
    chat: bool,
    /// A system message before the prompt (with --chat).
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Tokens to generate at most.
    #[arg(
        short = 'n',
        long,
        default_value_t = 256,
        allow_negative_numbers = true
    )]
    max_tokens: i64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object at the end ({"token_ids", "text", "finish_reason", "seed"})
    /// instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Use the chat template when the model has one (`run`).
    #[arg(skip)]
    auto_chat: bool,
}

#[derive(Args)]
struct RunArgs {
    /// A model name (gemma-3-270m), a Hugging Face repo id, a directory or a .gguf file.
    model: PathBuf,
    /// The prompt; without one, a chat starts.
    prompt: Option<String>,
    /// Weight format on the GPU: bf16, q8_0, q4_0 or f32 (default: the checkpoint's precision).
    #[arg(long)]
    dtype: Option<WeightFormat>,
    /// KV cache type: f16 or f32.
    #[arg(long)]
    kv: Option<KvDtype>,
    /// Context length in tokens (default: the model's maximum, at most 4096).
    #[arg(short, long)]
    ctx: Option<usize>,
    /// A system message before the prompt.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Tokens to generate at most (default: 256 after a prompt, 512 per chat reply).
    #[arg(short = 'n', long, allow_negative_numbers = true)]
    max_tokens: Option<i64>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// Sampling flags shared by generate and chat. Numbers are taken as given (negative too) and
/// checked by the library, so that an out-of-range one gets its range in the error. A flag
/// not given takes the model's own setting (generation_config.json, a GGUF's
/// `general.sampling.*`), else the default shown.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// 0 is greedy [default: 0].
    #[arg(
        short = 't',
        long,
        visible_alias = "temp",
        allow_negative_numbers = true
    )]
    temperature: Option<f32>,
    /// Sample among the k best (0: all candidates the GPU returns, 64) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    top_k: Option<i64>,
    /// [default: 1]
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    min_p: Option<f32>,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    repetition_penalty: f32,
    /// Random seed [default: a new one each run, printed with the statistics].
    #[arg(short, long)]
    seed: Option<u64>,
}

impl SamplingArgs {
    /// The checked parameters, flags first, then the model's `defaults`, and `max_tokens`
    /// checked. Without --seed, a new random seed.
    pub fn params(
        &self,
        max_tokens: i64,
        defaults: &SamplingDefaults,
    ) -> Result<(SamplingParams, usize)> {
        let checked = || {
            let params = SamplingParams {
                temperature: self.temperature.or(defaults.temperature).unwrap_or(0.0),
                top_k: sampling::top_k_from(self.top_k.or(defaults.top_k).unwrap_or(0))?,
                top_p: self.top_p.or(defaults.top_p).unwrap_or(1.0),
                min_p: self.min_p.or(defaults.min_p).unwrap_or(0.0),
                repetition_penalty: self.repetition_penalty,
                seed: self
                    .seed
                    .unwrap_or_else(|| u64::from(rand::random::<u32>())),
            };
            params.validate()?;
            Ok((params, sampling::max_tokens_from(max_tokens, usize::MAX)?))
        };
        checked().map_err(flag_error)
    }
}

/// The library names settings as the API does (`top_p`); here they are flags (`--top-p`).
pub fn flag_error(e: gemma_wgpu::Error) -> anyhow::Error {
    match e {
        gemma_wgpu::Error::InvalidSetting { name, message } => {
            anyhow::anyhow!("--{} {message}", name.replace('_', "-"))
        }
        e => e.into(),
    }
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Output file (safetensors, tensor `logits` [tokens, vocab] f32); never overwritten.
    #[arg(long)]
    out: PathBuf,
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// 241.41 MiB.
pub fn mib_f(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Prints the adapters of `backend`; with `--adapter`, only the one(s) it names.
fn devices(backend: BackendChoice, adapter: Option<&str>) -> Result<()> {
    let mut adapters = gpu::list_adapters(backend);
    if let Some(wanted) = adapter {
        let available = adapters
            .iter()
            .map(|a| format!("{}: {}", a.index, a.name))
            .collect::<Vec<_>>()
            .join(", ");
        let needle = wanted.to_lowercase();
        adapters
            .retain(|a| a.index.to_string() == wanted || a.name.to_lowercase().contains(&needle));
        if adapters.is_empty() && !available.is_empty() {
            return Err(gemma_wgpu::Error::AdapterNotFound {
                wanted: wanted.to_string(),
                available,
            }
            .into());
        }
    }
    if adapters.is_empty() {
        return Err(gemma_wgpu::Error::NoAdapter {
            filter: String::new(),
        }
        .into());
    }
    let mut stdout = std::io::stdout().lock();
    for a in adapters {
        writeln!(stdout, "[{}] {}", a.index, a.name)?;
        writeln!(
            stdout,
            "    backend: {}  type: {}  driver: {}",
            a.backend, a.device_type, a.driver
        )?;
        writeln!(
            stdout,
            "    shader-f16: {}  subgroups: {}  timestamps: {}  int64: {}",
            yes(a.shader_f16),
            yes(a.subgroups),
            yes(a.timestamps),
            yes(a.int64)
        )?;
        writeln!(
            stdout,
            "    max storage binding: {}  max buffer: {}",
            mib(a.max_binding_size),
            mib(a.max_buffer_size)
        )?;
    }
    Ok(())
}

/// Says (on stderr) when a chat runs on a model without a chat template of its own.
pub fn warn_if_base_model(engine: &Engine, load: &LoadArgs) {
    if !engine.tokenizer.has_own_chat_template() {
        let _ = writeln!(
            std::io::stderr(),
            "warning: {} has no chat template of its own, so it is most likely a base \
             (pretrained) model: Gemma's turn format is used, but such a model does not follow \
             it well; an instruction-tuned (-it) model answers better",
            load.model.display()
        );
    }
}

pub fn load_engine(gpu: &GpuOptions, load: &LoadArgs, options: ModelOptions) -> Result<Engine> {
    let options = ModelOptions {
        format: load.dtype,
        kv: load.kv,
        ctx: load.ctx,
        progress: true,
        ..options
    };
    let engine = Engine::load(&load.model, gpu, &options)?;
    // A summary is a courtesy: a closed stderr must not end the run.
    let _ = writeln!(
        std::io::stderr(),
        "{}",
        load_summary(&load.model.display().to_string(), engine.model())
    );
    Ok(engine)
}

/// One line on what was loaded, as llama.cpp prints it: model, arch, parameters, file type
/// and size, context, KV cache type and size, adapter.
pub fn load_summary(name: &str, m: &Model) -> String {
    format!(
        "model {name} | arch {} | {} params | {}, {} | ctx {} | kv {}, {} | {}",
        format!("{:?}", m.config().arch).to_lowercase(),
        count_si(m.config().parameters() as u64),
        weight_type(m),
        mib_f(m.info().file_bytes),
        m.ctx(),
        format!("{:?}", m.info().kv).to_lowercase(),
        mib_f(m.info().kv_bytes),
        m.gpu().describe()
    )
}

/// The weights' type: the file's (`Q4_K_M`), or what they became at load (`q8_0 from bf16`).
pub fn weight_type(m: &Model) -> String {
    let file = &m.info().file_type;
    let on_gpu = m.info().format.name();
    if m.info().formats.len() > 1 || file.eq_ignore_ascii_case(on_gpu) {
        file.clone()
    } else {
        format!("{on_gpu} from {file}")
    }
}

/// 268.10M, 2.61B.
pub fn count_si(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// How a generation ended, as `--json`'s `finish_reason` names it.
fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Eos => "eos",
        StopReason::MaxTokens => "length",
        StopReason::ContextFull => "context",
        StopReason::Cancelled => "cancelled",
    }
}

/// The prompt text: as given, read from stdin (`-`) or from a file, without one final line
/// end; `None` for token ids.
fn prompt_text(p: &PromptArgs) -> Result<Option<String>> {
    let mut text = match (&p.prompt, &p.file) {
        (Some(t), _) if t == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            s
        }
        (Some(t), _) => return Ok(Some(t.clone())),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("{}: could not read the prompt", f.display()))?,
        (None, None) => return Ok(None),
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(text))
}

fn prompt_ids(
    engine: &Engine,
    text: Option<&str>,
    p: &PromptArgs,
    chat: bool,
    system: Option<&str>,
) -> Result<Vec<u32>> {
    match (text, &p.tokens) {
        (Some(text), _) => Ok(engine.encode_prompt_with_system(text, chat, system)?),
        (None, Some(ids)) => {
            if chat {
                bail!("--chat needs --prompt text, not --tokens");
            }
            Ok(ids.clone())
        }
        (None, None) => bail!("give --prompt TEXT, --file FILE or --tokens IDS"),
    }
}

fn generate(gpu: &GpuOptions, a: &GenerateArgs) -> Result<()> {
    // Flags, the prompt and its file are checked before the model loads.
    let (_, max_tokens) = a
        .sampling
        .params(a.max_tokens, &SamplingDefaults::default())?;
    if a.system.is_some() && !a.chat && !a.auto_chat {
        bail!("--system needs --chat (the system message goes into the chat template)");
    }
    let text = prompt_text(&a.prompt)?;
    let load_start = std::time::Instant::now();
    let mut engine = load_engine(gpu, &a.load, ModelOptions::default())?;
    let load_time = load_start.elapsed();
    let (params, _) = a.sampling.params(a.max_tokens, &engine.sampling_defaults)?;
    // `run` writes a prompt into the chat template of a chat model only: a base model
    // (no template of its own) continues the text, as ollama runs one.
    let chat = a.chat || (a.auto_chat && engine.tokenizer.has_own_chat_template());
    if a.auto_chat && !chat && a.system.is_some() {
        bail!(
            "--system needs a chat model: {} has no chat template of its own (a base model)",
            a.load.model.display()
        );
    }
    if chat {
        warn_if_base_model(&engine, &a.load);
    }
    let ids = prompt_ids(
        &engine,
        text.as_deref(),
        &a.prompt,
        chat,
        a.system.as_deref().filter(|_| chat),
    )?;
    let mut stdout = std::io::stdout().lock();
    let json = a.json;
    // Text nobody can read any more stops the generation.
    let cancel = engine.cancel.clone();
    let mut failed = None;
    let options = GenerateOptions::new(max_tokens, params.clone());
    let g = engine.generate(&ids, &options, |delta| {
        if !json && failed.is_none() {
            let written = stdout
                .write_all(delta.text.as_bytes())
                .and_then(|()| stdout.flush());
            if let Err(e) = written {
                failed = Some(e);
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(anyhow::Error::new(e).context("writing to stdout"));
    }
    if json {
        let out = serde_json::json!({
            "token_ids": g.ids, "text": g.text,
            "finish_reason": finish_reason(g.stop), "seed": params.seed,
        });
        writeln!(stdout, "{out}")?;
    } else {
        writeln!(stdout)?;
    }
    if g.stop == StopReason::ContextFull {
        eprintln!(
            "stopped: the context of {} tokens is full (raise --ctx)",
            engine.ctx()
        );
    }
    eprintln!(
        "{} | load {:.2} s | prompt {} tokens, {:.2} tok/s | generated {} tokens, {:.2} tok/s \
         | finish_reason {} | seed {}",
        engine.adapter(),
        load_time.as_secs_f64(),
        g.prompt_tokens,
        g.prefill_tokens_per_second(),
        g.ids.len(),
        g.decode_tokens_per_second(),
        finish_reason(g.stop),
        params.seed
    );
    Ok(())
}

/// `run MODEL [PROMPT]`: generate or chat.
fn run_model(gpu: &GpuOptions, a: &RunArgs) -> Result<()> {
    let load = LoadArgs {
        model: a.model.clone(),
        dtype: a.dtype,
        kv: a.kv,
        ctx: a.ctx,
    };
    match &a.prompt {
        Some(prompt) => generate(
            gpu,
            &GenerateArgs {
                load,
                prompt: PromptArgs {
                    prompt: Some(prompt.clone()),
                    file: None,
                    tokens: None,
                },
                chat: false,
                system: a.system.clone(),
                max_tokens: a.max_tokens.unwrap_or(256),
                sampling: a.sampling.clone(),
                json: false,
                auto_chat: true,
            },
        ),
        None => chat::run(
            gpu,
            &chat::ChatArgs {
                load,
                sampling: a.sampling.clone(),
                max_tokens: a.max_tokens.unwrap_or(512),
                system: a.system.clone(),
            },
        ),
    }
}

fn logits(gpu: &GpuOptions, a: &LogitsArgs) -> Result<()> {
    if a.out.exists() {
        bail!(
            "{} exists; choose a new file name (it is never overwritten)",
            a.out.display()
        );
    }
    gemma_wgpu::engine::check_new_file(&a.out)?;
    let options = ModelOptions {
        all_logits: true,
        ..Default::default()
    };
    let text = prompt_text(&a.prompt)?;
    let mut engine = load_engine(gpu, &a.load, options)?;
    let ids = prompt_ids(&engine, text.as_deref(), &a.prompt, false, None)?;
    let vocab = engine.model().config().vocab;
    let logits = engine.logits(&ids)?;
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![ids.len(), vocab],
        bytemuck::cast_slice(&logits),
    )?;
    let bytes = safetensors::serialize([("logits", view)], None)
        .with_context(|| format!("writing {}", a.out.display()))?;
    gemma_wgpu::engine::write_new_file(&a.out, &bytes)?;
    eprintln!(
        "wrote logits [{}, {vocab}] to {}",
        ids.len(),
        a.out.display()
    );
    Ok(())
}

fn perplexity(gpu: &GpuOptions, a: &PerplexityArgs) -> Result<()> {
    use gemma_wgpu::engine::perplexity::{KlBase, check_kl_base};
    let max_chunk = gemma_wgpu::model::MAX_CHUNK;
    if a.chunk.is_some_and(|c| c == 0 || c > max_chunk) {
        anyhow::bail!("--chunk must be 1 to {max_chunk} tokens");
    }
    let min_ctx = gemma_wgpu::engine::perplexity::MIN_CTX;
    if a.ctx < min_ctx {
        anyhow::bail!(
            "--ctx must be at least {min_ctx} tokens (each chunk's second half is scored), not {}",
            a.ctx
        );
    }
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    // A base file that cannot be read or written fails now, not after the run.
    if let Some(p) = &a.kl_base {
        check_kl_base(p)?;
    }
    let options = ModelOptions {
        format: a.dtype,
        kv: a.kv,
        ctx: Some(a.ctx),
        chunk: a.chunk,
        all_logits: true,
        progress: true,
        ..Default::default()
    };
    let mut engine = Engine::load(&a.model, gpu, &options)?;
    let _ = writeln!(
        std::io::stderr(),
        "{}",
        load_summary(&a.model.display().to_string(), engine.model())
    );
    let kl = match &a.kl_base {
        Some(p) if p.exists() => KlBase::Compare(p),
        Some(p) => KlBase::Save(p),
        None => KlBase::None,
    };
    let start = std::time::Instant::now();
    // Progress is a courtesy: a closed stderr must not end the run.
    let r = engine.perplexity(&text, a.ctx, kl, |c, ppl| {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "[{}]{ppl:.4},", c + 1).and_then(|()| err.flush());
    })?;
    let _ = writeln!(
        std::io::stderr(),
        "\n{} chunks of {} tokens, {} scored, {:.1} s on {}",
        r.chunks,
        a.ctx,
        r.scored,
        start.elapsed().as_secs_f64(),
        engine.adapter()
    );
    let mut result = String::new();
    match (&a.kl_base, r.kl) {
        (Some(p), Some((kl, err))) => result.push_str(&format!(
            "KL divergence from {}: {kl:.6} +/- {err:.6}\n",
            p.display()
        )),
        (Some(p), None) => {
            result.push_str(&format!("saved this run as a KL base to {}\n", p.display()))
        }
        _ => {}
    }
    result.push_str(&format!("PPL = {:.4} +/- {:.5}\n", r.ppl, r.error));
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(result.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // The run's result survives on stderr when stdout cannot take it.
        let _ = std::io::stderr().write_all(result.as_bytes());
        return Err(anyhow::Error::new(e).context("writing to stdout"));
    }
    Ok(())
}

fn serve(gpu: &GpuOptions, a: &ServeArgs) -> Result<()> {
    use gemma_wgpu::server::{ServeOptions, seconds};
    let name = match &a.alias {
        Some(alias) if alias.trim().is_empty() => bail!("--alias must not be empty"),
        Some(alias) => alias.clone(),
        None => a
            .load
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "gemma".into()),
    };
    let (access, limits) = (&a.access, &a.limits);
    let max_tokens_limit = match limits.max_tokens_limit {
        Some(n) => sampling::count("--max-tokens-limit", n, sampling::MAX_TOKENS_LIMIT)?,
        None => sampling::MAX_TOKENS_LIMIT,
    };
    let options = ServeOptions {
        model_name: name.clone(),
        queue: a.queue,
        api_key: access.api_key.clone(),
        allowed_hosts: access.allowed_hosts.clone(),
        cors_origins: access.cors_origins.clone(),
        max_connections: limits.max_connections,
        max_body_bytes: limits.max_body_bytes,
        header_timeout: seconds("--header-timeout", limits.header_timeout)?,
        body_timeout: seconds("--body-timeout", limits.body_timeout)?,
        idle_timeout: seconds("--idle-timeout", limits.idle_timeout)?,
        max_tokens_limit,
    };
    options.validate()?;
    let engine = load_engine(gpu, &a.load, ModelOptions::default())?;
    warn_if_base_model(&engine, &a.load);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("binding {}:{}", a.host, a.port))?;
        eprintln!(
            "{} | serving {name} on http://{}",
            engine.adapter(),
            listener.local_addr()?
        );
        gemma_wgpu::server::serve(engine, listener, options).await?;
        Ok(())
    })
}

fn tokenize(a: &TokenizeArgs) -> Result<()> {
    let text = match (&a.prompt, &a.file) {
        (Some(text), _) => text.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("{}: could not read the text", file.display()))?,
        (None, None) => bail!("give --prompt TEXT or --file FILE"),
    };
    let path = gemma_wgpu::store::resolve(&a.model)?;
    let tokenizer = gemma_wgpu::engine::Tokenizer::load(&path)?;
    let encoding = tokenizer.encode_full(&text, !a.no_bos, a.special)?;
    let ids = encoding.get_ids();
    let mut out = std::io::stdout().lock();
    if a.json {
        let tokens: Vec<serde_json::Value> = ids
            .iter()
            .zip(encoding.get_offsets())
            .map(|(&id, &(start, end))| {
                serde_json::json!({"id": id, "piece": tokenizer.piece(id), "start": start, "end": end})
            })
            .collect();
        let json = serde_json::json!({"ids": ids, "tokens": tokens});
        writeln!(out, "{json}")?;
    } else {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let backend: BackendChoice = cli.backend.parse()?;
    let gpu = GpuOptions {
        backend,
        adapter: cli.adapter.clone(),
        max_binding_size: cli.max_binding_size,
        max_memory: cli.max_memory,
        int8_products: match cli.activations.as_str() {
            "auto" => None,
            a => Some(a == "int8"),
        },
        cpu_layout: match cli.layout.as_str() {
            "auto" => None,
            l => Some(l == "cpu"),
        },
        ..Default::default()
    };
    match &cli.command {
        Command::Devices => devices(backend, cli.adapter.as_deref()),
        Command::Run(a) => run_model(&gpu, a),
        Command::Generate(a) => generate(&gpu, a),
        Command::Logits(a) => logits(&gpu, a),
        Command::Bench(a) => bench::run(&gpu, a),
        Command::Perplexity(a) => perplexity(&gpu, a),
        Command::Chat(a) => chat::run(&gpu, a),
        Command::Serve(a) => serve(&gpu, a),
        Command::Tokenize(a) => tokenize(a),
        Command::Pull(a) => models::pull(a),
        Command::List(a) => models::list(a),
        Command::Rm(a) => models::rm(a),
    }
}
