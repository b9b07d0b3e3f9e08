//! An OpenAI-compatible HTTP server: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//! `/health`, `/metrics`, streaming (server-sent events) or not.
//!
//! One engine runs on one worker thread; requests wait in a bounded queue (a full queue is
//! answered 503), generate in turn, and stream their text back. A client that goes away stops
//! its generation. Bad requests get 4xx with an OpenAI-style error body. In front of every
//! endpoint: the Host and Origin checks, the API key and JSON bodies (`access`); around every
//! connection: the connection cap and the timeouts (`conn`). SIGTERM or Ctrl-C stops
//! accepting, ends what is generating or queued with an error (a stream with an error event
//! and `data: [DONE]`), and returns.

mod access;
mod api;
mod conn;
mod metrics;

use crate::engine::{
    Engine, GenerateOptions, Message, SamplingParams, StopReason, TokenLogprob, Tokenizer,
};
use crate::{Error, Result};
use access::{Access, Front, Logged, RequestId};
use api::{ApiError, ChatRequest, CompletionPrompt, CompletionRequest};
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Writes one line to stderr, the server's log. Unlike `eprintln!`, a closed stderr does not
/// panic (in a connection's task, that would end the connection).
macro_rules! log_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use log_line;

/// A finished generation's numbers, for its usage, its log line and the metrics.
#[derive(Clone, Copy, Debug)]
struct Stats {
    prompt_tokens: usize,
    completion_tokens: usize,
    /// Decode speed after the first token.
    tokens_per_second: f64,
    prefill: Duration,
    decode: Duration,
}

impl Stats {
    fn usage(&self) -> serde_json::Value {
        serde_json::json!({"prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens})
    }

    /// llama-server's `timings`.
    fn timings(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let per_second = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        serde_json::json!({
            "prompt_n": self.prompt_tokens,
            "prompt_ms": ms(self.prefill),
            "prompt_per_token_ms": ms(self.prefill) / self.prompt_tokens.max(1) as f64,
            "prompt_per_second": per_second(self.prompt_tokens, self.prefill),
            "predicted_n": self.completion_tokens,
            "predicted_ms": ms(self.decode),
            "predicted_per_token_ms": ms(self.decode) / self.completion_tokens.max(1) as f64,
            "predicted_per_second": per_second(self.completion_tokens, self.decode),
        })
    }
}

/// One generated token's log-probability, spelled out for a response.
#[derive(Clone, Debug)]
struct Logprob {
    token: String,
    bytes: Vec<u8>,
    logprob: f32,
    /// Best first.
    top: Vec<(String, Vec<u8>, f32)>,
}

impl Logprob {
    fn new(t: &Tokenizer, lp: &TokenLogprob) -> Logprob {
        let (token, bytes) = t.token_bytes(lp.id);
        let top = lp
            .top
            .iter()
            .map(|&(id, l)| {
                let (text, bytes) = t.token_bytes(id);
                (text, bytes, l)
            })
            .collect();
        Logprob {
            token,
            bytes,
            logprob: lp.logprob,
            top,
        }
    }
}

/// JSON has no -infinity: a token outside the candidates read back gets OpenAI's floor.
fn finite(l: f32) -> f32 {
    if l.is_finite() { l } else { -9999.0 }
}

/// `logprobs` of a chat choice or chunk.
fn chat_logprobs(lps: &[Logprob]) -> serde_json::Value {
    let content: Vec<serde_json::Value> = lps
        .iter()
        .map(|l| {
            let top: Vec<serde_json::Value> = l
                .top
                .iter()
                .map(|(t, b, p)| serde_json::json!({"token": t, "logprob": finite(*p), "bytes": b}))
                .collect();
            serde_json::json!({"token": l.token, "logprob": finite(l.logprob), "bytes": l.bytes,
                "top_logprobs": top})
        })
        .collect();
    serde_json::json!({"content": content})
}

/// `logprobs` of a text completion's choice, its offsets counted from `offset`.
fn completion_logprobs(lps: &[Logprob], mut offset: usize) -> serde_json::Value {
    let mut tokens = vec![];
    let mut token_logprobs = vec![];
    let mut top_logprobs = vec![];
    let mut text_offset = vec![];
    for l in lps {
        tokens.push(l.token.clone());
        token_logprobs.push(finite(l.logprob));
        let top: serde_json::Map<String, serde_json::Value> = l
            .top
            .iter()
            .map(|(t, _, p)| (t.clone(), finite(*p).into()))
            .collect();
        top_logprobs.push(top);
        text_offset.push(offset);
        offset += l.token.len();
    }
    serde_json::json!({"tokens": tokens, "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs, "text_offset": text_offset})
}

/// What the worker sends back while generating.
enum Piece {
    /// Text and the log-probabilities of the tokens since the last piece (when asked for).
    Text(String, Vec<Logprob>),
    Done {
        finish: &'static str,
        stats: Stats,
    },
    Failed(ApiError),
}

/// One request for the worker.
struct Job {
    prompt: Prompt,
    max_tokens: usize,
    params: SamplingParams,
    stop: Vec<String>,
    ignore_eos: bool,
    logprobs: Option<usize>,
    out: mpsc::UnboundedSender<Piece>,
    id: u64,
    /// Set when the client is gone (see Watch).
    gone: Arc<AtomicBool>,
    /// When the request arrived (time to first token counts from here).
    arrived: Instant,
}

enum Prompt {
    Chat(Vec<Message>),
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Clone)]
struct AppState {
    jobs: mpsc::Sender<Job>,
    /// The model's id (`--alias`, else the model's file or directory name).
    model: Arc<String>,
    /// The engine's cancel flag and the id of the job it runs (0: none).
    cancel: Arc<AtomicBool>,
    running: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
    body_timeout: Duration,
    max_tokens_limit: usize,
    /// For /tokenize and /detokenize, which need no GPU and do not queue.
    tokenizer: Arc<Tokenizer>,
}

/// Marks a job's client as gone when dropped before `finish`: a queued job is then skipped,
/// a running one stopped. Tokens the worker would never send (text held back) cannot hide a
/// disconnect this way.
struct Watch {
    id: u64,
    gone: Arc<AtomicBool>,
    running: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl Watch {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.finished {
            self.gone.store(true, Ordering::Relaxed);
            if self.running.load(Ordering::Relaxed) == self.id {
                self.cancel.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The name `/v1/models` reports and responses carry.
    pub model_name: String,
    /// Requests that may wait behind the one generating.
    pub queue: usize,
    /// Required as `Authorization: Bearer KEY` on every endpoint but `/health`.
    pub api_key: Option<String>,
    /// Host header names accepted besides IP addresses and localhost (`*`: any).
    pub allowed_hosts: Vec<String>,
    /// Origins whose web pages may call the server (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest request body (413 above).
    pub max_body_bytes: usize,
    /// Time to send a request's headers, counted from its first byte.
    pub header_timeout: Duration,
    /// Time to send a request's body once its headers are in (408 after).
    pub body_timeout: Duration,
    /// Time a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model_name: "gemma".into(),
            queue: 8,
            api_key: None,
            allowed_hosts: vec![],
            cors_origins: vec![],
            max_connections: 256,
            max_body_bytes: 1 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_tokens_limit: crate::engine::sampling::MAX_TOKENS_LIMIT,
        }
    }
}

/// The most a bounded queue or connection count may be: far beyond what one engine serves.
pub const MAX_QUEUE: usize = 1 << 16;

/// A timeout given in seconds on the command line (`flag` names it in the error).
pub fn seconds(flag: &'static str, value: f64) -> Result<Duration> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Error::InvalidSetting {
            name: flag,
            message: format!("must be a number of seconds above 0 and at most 86400, not {value}"),
        })
    }
}

impl ServeOptions {
    /// Checks the ranges (a queue of `usize::MAX` cannot be allocated, 0 connections would
    /// serve nobody).
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, message: String| Err(Error::InvalidSetting { name, message });
        if self.queue > MAX_QUEUE {
            return invalid(
                "--queue",
                format!("must be at most {MAX_QUEUE}, not {}", self.queue),
            );
        }
        if !(1..=MAX_QUEUE).contains(&self.max_connections) {
            return invalid(
                "--max-connections",
                format!(
                    "must be between 1 and {MAX_QUEUE}, not {}",
                    self.max_connections
                ),
            );
        }
        if self.max_body_bytes == 0 {
            return invalid("--max-body-bytes", "must be at least 1".into());
        }
        if self.api_key.as_ref().is_some_and(|k| k.trim().is_empty()) {
            return invalid("--api-key", "must not be empty".into());
        }
        for (name, d) in [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                return invalid(name, "must be above 0".into());
            }
        }
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Runs the worker on `engine` and serves on `listener` until SIGTERM or Ctrl-C; then stops
/// accepting, ends running and queued requests with an error, lets open connections finish
/// (for a few seconds at most) and returns.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
) -> Result<()> {
    options.validate()?;
    let io = |e: std::io::Error| Error::Io {
        path: "server".into(),
        message: e.to_string(),
    };
    let local = listener.local_addr().map_err(io)?;
    if options.api_key.is_none() && !local.ip().is_loopback() {
        log_line!(
            "warning: listening on {local} without --api-key: anyone who can reach this \
             address can use the model"
        );
    }
    let tokenizer = Arc::new(engine.tokenizer.clone());
    let (jobs, rx) = mpsc::channel::<Job>(options.queue.max(1));
    let cancel = engine.cancel.clone();
    let running = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(Metrics::default());
    let draining = Arc::new(AtomicBool::new(false));
    let (worker_done, worker_ended) = tokio::sync::oneshot::channel::<()>();
    {
        let (running, metrics, draining) = (running.clone(), metrics.clone(), draining.clone());
        std::thread::Builder::new()
            .name("gemma-wgpu engine".into())
            .spawn(move || {
                worker(engine, rx, running, metrics, draining);
                let _ = worker_done.send(());
            })
            .map_err(io)?;
    }
    let state = AppState {
        jobs,
        model: Arc::new(options.model_name.clone()),
        cancel: cancel.clone(),
        running: running.clone(),
        metrics: metrics.clone(),
        max_body_bytes: options.max_body_bytes,
        body_timeout: options.body_timeout,
        max_tokens_limit: options.max_tokens_limit,
        tokenizer,
    };
    let front = Arc::new(Front {
        access: Access::new(
            options.api_key.clone(),
            &options.allowed_hosts,
            &options.cors_origins,
        ),
        metrics,
        draining: draining.clone(),
    });
    let app = router(state, front);
    let limits = conn::ConnLimits {
        max_connections: options.max_connections,
        header_timeout: options.header_timeout,
        idle_timeout: options.idle_timeout,
        drain_timeout: Duration::from_secs(10),
    };
    let (stop, stopped) = watch::channel(false);
    let accepting = tokio::spawn(conn::accept_loop(listener, app, limits, stopped));
    shutdown_signal().await;
    log_line!("shutting down: no new connections; ending running and queued requests");
    // A second signal does not wait.
    tokio::spawn(async {
        shutdown_signal().await;
        log_line!("second signal: exiting now");
        std::process::exit(1);
    });
    draining.store(true, Ordering::Relaxed);
    if running.load(Ordering::Relaxed) != 0 {
        cancel.store(true, Ordering::Relaxed);
    }
    let _ = stop.send(true);
    let _ = accepting.await;
    // The worker ends once every connection (and with it every job sender) is gone.
    let _ = tokio::time::timeout(Duration::from_secs(10), worker_ended).await;
    Ok(())
}

/// The routes, behind the access checks of `front`.
fn router(state: AppState, front: Arc<Front>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model_by_id))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(front, access::front))
        .with_state(state)
}

fn worker(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Job>,
    running: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
) {
    // For spelling out log-probabilities while the engine generates.
    let tokenizer = engine.tokenizer.clone();
    while let Some(job) = rx.blocking_recv() {
        metrics.queued.fetch_sub(1, Ordering::Relaxed);
        if job.out.is_closed() || job.gone.load(Ordering::Relaxed) {
            continue;
        }
        if draining.load(Ordering::Relaxed) {
            let _ = job.out.send(Piece::Failed(ApiError::shutting_down()));
            continue;
        }
        running.store(job.id, Ordering::Relaxed);
        metrics.running.store(1, Ordering::Relaxed);
        let last = serve_job(&mut engine, &tokenizer, &job, &metrics, &draining);
        // Done before the client hears so: its next look at /metrics sees the job finished.
        metrics.running.store(0, Ordering::Relaxed);
        running.store(0, Ordering::Relaxed);
        let _ = job.out.send(last);
    }
}

/// Runs one job, sending its text as it comes; returns its last piece (done or failed).
fn serve_job(
    engine: &mut Engine,
    tokenizer: &Tokenizer,
    job: &Job,
    metrics: &Metrics,
    draining: &AtomicBool,
) -> Piece {
    let started = Instant::now();
    {
        let ids = match prompt_ids(engine, &job.prompt) {
            Ok(ids) => ids,
            Err(e) => return Piece::Failed(e),
        };
        let max_tokens = job.max_tokens.min(engine.ctx() - ids.len());
        let cancel = engine.cancel.clone();
        let gone = job.gone.clone();
        let out = job.out.clone();
        let mut held = Holdback::new(&job.stop);
        let options = GenerateOptions {
            max_tokens,
            sampling: job.params.clone(),
            ignore_eos: job.ignore_eos,
            logprobs: job.logprobs,
        };
        // The log-probabilities of the tokens since the last piece sent.
        let mut logprobs: Vec<Logprob> = vec![];
        let result = engine.generate(&ids, &options, |delta| {
            if held.stopped {
                return;
            }
            logprobs.extend(delta.logprobs.iter().map(|l| Logprob::new(tokenizer, l)));
            if gone.load(Ordering::Relaxed) || draining.load(Ordering::Relaxed) {
                cancel.store(true, Ordering::Relaxed);
            }
            let safe = held.push(delta.text);
            if held.stopped {
                cancel.store(true, Ordering::Relaxed);
            }
            if let Some(text) = safe
                && out
                    .send(Piece::Text(text, std::mem::take(&mut logprobs)))
                    .is_err()
            {
                // The client is gone.
                cancel.store(true, Ordering::Relaxed);
            }
        });
        match result {
            Ok(g) => {
                let completion_tokens = g.ids.len() - usize::from(g.stop == StopReason::Eos);
                let ttft = started.duration_since(job.arrived) + g.prefill_time;
                let per_token = (g.ids.len() > 1).then(|| g.decode_time / (g.ids.len() - 1) as u32);
                metrics.count_generation(ids.len(), completion_tokens, ttft, per_token);
                if g.stop == StopReason::Cancelled
                    && !held.stopped
                    && draining.load(Ordering::Relaxed)
                {
                    return Piece::Failed(ApiError::shutting_down());
                }
                let rest = std::mem::take(&mut logprobs);
                if !held.rest().is_empty() || !rest.is_empty() {
                    let _ = out.send(Piece::Text(held.rest().to_string(), rest));
                }
                let finish = match g.stop {
                    StopReason::MaxTokens | StopReason::ContextFull => "length",
                    _ => "stop",
                };
                let stats = Stats {
                    prompt_tokens: ids.len(),
                    completion_tokens,
                    tokens_per_second: g.decode_tokens_per_second(),
                    prefill: g.prefill_time,
                    decode: g.decode_time,
                };
                Piece::Done { finish, stats }
            }
            Err(e) => Piece::Failed(ApiError::server(&e.to_string())),
        }
    }
}

/// The prompt's ids, with room after them for one token at least.
fn prompt_ids(engine: &Engine, prompt: &Prompt) -> std::result::Result<Vec<u32>, ApiError> {
    let ids = match prompt {
        Prompt::Chat(m) => engine.tokenizer.encode_chat(m),
        Prompt::Text(t) => engine.tokenizer.encode(t, true),
        Prompt::Ids(ids) => {
            let vocab = engine.model().config().vocab;
            if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                let message = format!("prompt: token id {id} is outside the vocabulary of {vocab}");
                return Err(ApiError::bad_request(&message, Some("prompt")));
            }
            Ok(ids.clone())
        }
    };
    let ids = ids.map_err(|e| ApiError::bad_request(&e.to_string(), None))?;
    if ids.len() >= engine.ctx() {
        return Err(ApiError::context_length(ids.len(), engine.ctx()));
    }
    Ok(ids)
}

/// A reply's text, held back while it could be the start of a stop string.
struct Holdback<'a> {
    stops: &'a [String],
    text: String,
    /// Bytes of `text` sent.
    sent: usize,
    /// A stop string was found: the text ends before it.
    stopped: bool,
}

impl<'a> Holdback<'a> {
    fn new(stops: &'a [String]) -> Holdback<'a> {
        Holdback {
            stops,
            text: String::new(),
            sent: 0,
            stopped: false,
        }
    }

    /// Adds `piece`; returns the text that is now safe to send, if any.
    fn push(&mut self, piece: &str) -> Option<String> {
        let text = &mut self.text;
        text.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(at);
            self.stopped = true;
        }
        let mut safe = text.len();
        if !self.stopped {
            for s in self.stops {
                for k in (1..s.len()).rev() {
                    if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                        safe = safe.min(text.len() - k);
                    }
                }
            }
        }
        if safe > self.sent && text.is_char_boundary(safe) {
            let out = text[self.sent..safe].to_string();
            self.sent = safe;
            return Some(out);
        }
        None
    }

    /// The text not sent yet.
    fn rest(&self) -> &str {
        &self.text[self.sent..]
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn model_object(s: &AppState) -> serde_json::Value {
    serde_json::json!({"id": s.model.as_str(), "object": "model", "created": now(), "owned_by": "gemma-wgpu"})
}

async fn models(State(s): State<AppState>) -> Response {
    Json(serde_json::json!({"object": "list", "data": [model_object(&s)]})).into_response()
}

async fn model_by_id(
    State(s): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if id == *s.model {
        Json(model_object(&s)).into_response()
    } else {
        ApiError::model_not_found(&id, &s.model).into_response()
    }
}

/// llama-server's `/tokenize`: `{"content", "add_special" (default false)}` in, `{"tokens"}`
/// out. Control tokens written in the content (`<start_of_turn>`) are parsed, as there.
async fn tokenize(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        let body = read_body(&s, &headers, body).await?;
        let req: api::TokenizeRequest = api::parse(&body)?;
        let tokenizer = s.tokenizer.clone();
        let ids = tokio::task::spawn_blocking(move || {
            tokenizer.encode_full(&req.content, req.add_special, true)
        })
        .await
        .map_err(|e| ApiError::server(&e.to_string()))?
        .map_err(|e| ApiError::bad_request(&e.to_string(), Some("content")))?;
        Ok::<_, ApiError>(serde_json::json!({"tokens": ids.get_ids()}))
    };
    match answer.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// llama-server's `/detokenize`: `{"tokens"}` in, `{"content"}` out, control tokens spelled
/// out (the inverse of `/tokenize`).
async fn detokenize(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        let body = read_body(&s, &headers, body).await?;
        let req: api::DetokenizeRequest = api::parse(&body)?;
        let vocab = s.tokenizer.vocab_size();
        if let Some(id) = req.tokens.iter().find(|&&id| id as usize >= vocab) {
            let message = format!("tokens: token id {id} is outside the vocabulary of {vocab}");
            return Err(ApiError::bad_request(&message, Some("tokens")));
        }
        let tokenizer = s.tokenizer.clone();
        let text = tokio::task::spawn_blocking(move || tokenizer.decode_verbatim(&req.tokens))
            .await
            .map_err(|e| ApiError::server(&e.to_string()))?
            .map_err(|e| ApiError::bad_request(&e.to_string(), Some("tokens")))?;
        Ok(serde_json::json!({"content": text}))
    };
    match answer.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// 405 with the method the path takes.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let allowed = if path.starts_with("/v1/") && path.ends_with("completions") {
        "POST"
    } else {
        "GET"
    };
    let mut r = ApiError::method_not_allowed(method.as_str(), path, allowed).into_response();
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    r
}

/// Reads a request body of at most `max_body_bytes` within `body_timeout` (413, 408).
async fn read_body(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limit = s.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(s.body_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::timeout(s.body_timeout.as_secs_f64())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
        Ok(Err(e)) => Err(ApiError::bad_request(
            &format!("reading the request body failed: {e}"),
            None,
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The log line of one generation request, written when it ends.
struct RequestLog {
    id: u64,
    path: &'static str,
    start: Instant,
}

impl RequestLog {
    fn write(&self, status: StatusCode, stats: Option<Stats>, note: &str) {
        let tokens = match stats {
            Some(s) => format!(
                " | prompt {} tokens, generated {}, {:.1} tok/s",
                s.prompt_tokens, s.completion_tokens, s.tokens_per_second
            ),
            None => String::new(),
        };
        log_line!(
            "[{}] POST {} {}{note}{tokens} | {:.3} s",
            self.id,
            self.path,
            status.as_u16(),
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// A response whose request `log` has been (or will be) written by its handler.
fn logged(mut r: Response) -> Response {
    r.extensions_mut().insert(Logged);
    r
}

/// Queues a job; a full queue is 503.
fn submit(
    s: &AppState,
    id: u64,
    prompt: Prompt,
    settings: api::Settings,
) -> Result<(mpsc::UnboundedReceiver<Piece>, Watch), ApiError> {
    let gone = Arc::new(AtomicBool::new(false));
    let (out, rx) = mpsc::unbounded_channel();
    // Counted before sending: the worker may take the job at once.
    s.metrics.queued.fetch_add(1, Ordering::Relaxed);
    let sent = s.jobs.try_send(Job {
        prompt,
        max_tokens: settings.max_tokens,
        params: settings.params,
        stop: settings.stop,
        ignore_eos: settings.ignore_eos,
        logprobs: settings.logprobs,
        out,
        id,
        gone: gone.clone(),
        arrived: Instant::now(),
    });
    if sent.is_err() {
        s.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::busy());
    }
    let watch = Watch {
        id,
        gone,
        running: s.running.clone(),
        cancel: s.cancel.clone(),
        finished: false,
    };
    Ok((rx, watch))
}

async fn chat_completions(
    State(s): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    generation_endpoint(
        s,
        id,
        headers,
        body,
        "/v1/chat/completions",
        |body, limit| {
            let req: ChatRequest = api::parse(body)?;
            let (messages, settings) = req.validate(limit)?;
            Ok((Prompt::Chat(messages), settings))
        },
    )
    .await
}

async fn completions(
    State(s): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    generation_endpoint(s, id, headers, body, "/v1/completions", |body, limit| {
        let req: CompletionRequest = api::parse(body)?;
        let prompt = match req.validate(limit)? {
            (CompletionPrompt::Text(t), settings) => (Prompt::Text(t), settings),
            (CompletionPrompt::Ids(ids), settings) => (Prompt::Ids(ids), settings),
        };
        Ok(prompt)
    })
    .await
}

/// A request that generates: its body read and parsed by `parse` into a prompt and settings,
/// queued, and answered (streamed or whole) in the shape the request asked for.
async fn generation_endpoint(
    s: AppState,
    id: u64,
    headers: HeaderMap,
    body: Body,
    path: &'static str,
    parse: impl FnOnce(&[u8], usize) -> Result<(Prompt, api::Settings), ApiError>,
) -> Response {
    let log = RequestLog {
        id,
        path,
        start: Instant::now(),
    };
    let submitted = async {
        let body = read_body(&s, &headers, body).await?;
        let (prompt, common) = parse(&body, s.max_tokens_limit)?;
        let shape = Shape {
            chat: matches!(prompt, Prompt::Chat(_)),
            stream: common.stream,
            include_usage: common.include_usage,
            logprobs: common.logprobs.is_some(),
        };
        let (rx, watch) = submit(&s, id, prompt, common)?;
        Ok::<_, ApiError>((rx, watch, shape))
    };
    match submitted.await {
        Ok((rx, watch, shape)) => respond(rx, watch, s.model.clone(), shape, log).await,
        Err(e) => e.into_response(),
    }
}

/// What a response looks like.
#[derive(Clone, Copy)]
struct Shape {
    chat: bool,
    stream: bool,
    /// A last chunk with the usage and no choices (`stream_options.include_usage`).
    include_usage: bool,
    logprobs: bool,
}

/// The response: one JSON body, or server-sent events ending in `data: [DONE]`.
async fn respond(
    rx: mpsc::UnboundedReceiver<Piece>,
    watch: Watch,
    model: Arc<String>,
    shape: Shape,
    log: RequestLog,
) -> Response {
    let chunks = Chunks {
        id: format!(
            "{}-{:x}",
            if shape.chat { "chatcmpl" } else { "cmpl" },
            rand::random::<u64>()
        ),
        created: now(),
        model,
        shape,
        offset: 0,
    };
    if shape.stream {
        respond_streaming(rx, watch, chunks, log).await
    } else {
        respond_whole(rx, watch, chunks, log).await
    }
}

/// The whole reply in one JSON body.
async fn respond_whole(
    mut rx: mpsc::UnboundedReceiver<Piece>,
    mut watch: Watch,
    c: Chunks,
    log: RequestLog,
) -> Response {
    let chat = c.shape.chat;
    let mut text = String::new();
    let mut lps = vec![];
    while let Some(p) = rx.recv().await {
        match p {
            Piece::Text(t, l) => {
                text.push_str(&t);
                lps.extend(l);
            }
            Piece::Failed(e) => {
                watch.finish();
                log.write(e.status(), None, "");
                return logged(e.into_response());
            }
            Piece::Done { finish, stats } => {
                watch.finish();
                log.write(StatusCode::OK, Some(stats), "");
                let logprobs = match (c.shape.logprobs, chat) {
                    (false, _) => serde_json::Value::Null,
                    (true, true) => chat_logprobs(&lps),
                    (true, false) => completion_logprobs(&lps, 0),
                };
                let choice = if chat {
                    serde_json::json!({"index": 0, "message": {"role": "assistant", "content": text},
                        "finish_reason": finish, "logprobs": logprobs})
                } else {
                    serde_json::json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs})
                };
                return logged(
                    Json(serde_json::json!({
                        "id": c.id,
                        "object": if chat { "chat.completion" } else { "text_completion" },
                        "created": c.created,
                        "model": c.model.as_str(),
                        "choices": [choice],
                        "usage": stats.usage(),
                        "timings": stats.timings(),
                    }))
                    .into_response(),
                );
            }
        }
    }
    ApiError::server("the engine stopped").into_response()
}

/// The chunks of a streamed reply: the same id, object, creation time and model in each.
struct Chunks {
    id: String,
    created: u64,
    model: Arc<String>,
    shape: Shape,
    /// Text offsets of a completion's log-probabilities run on from chunk to chunk.
    offset: usize,
}

impl Chunks {
    fn chunk(
        &mut self,
        delta: serde_json::Value,
        finish: Option<&str>,
        lps: &[Logprob],
    ) -> serde_json::Value {
        let logprobs = self.shape.logprobs && !lps.is_empty();
        let (object, choice) = if self.shape.chat {
            let logprobs = if logprobs {
                chat_logprobs(lps)
            } else {
                serde_json::Value::Null
            };
            let choice = serde_json::json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs});
            ("chat.completion.chunk", choice)
        } else {
            let text = delta.get("content").and_then(|c| c.as_str()).unwrap_or("");
            let logprobs = if logprobs {
                completion_logprobs(lps, self.offset)
            } else {
                serde_json::Value::Null
            };
            self.offset += text.len();
            let choice = serde_json::json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs});
            ("text_completion", choice)
        };
        serde_json::json!({"id": self.id, "object": object, "created": self.created, "model": self.model.as_str(), "choices": [choice]})
    }
}

/// The reply as server-sent events, one chunk per piece of text.
async fn respond_streaming(
    mut rx: mpsc::UnboundedReceiver<Piece>,
    mut watch: Watch,
    mut c: Chunks,
    log: RequestLog,
) -> Response {
    // Wait for the first piece so that errors still get a status code.
    let first = rx.recv().await;
    if let Some(Piece::Failed(e)) = first {
        watch.finish();
        log.write(e.status(), None, "");
        return logged(e.into_response());
    }
    let (tx, events) = mpsc::unbounded_channel::<Result<Event, std::convert::Infallible>>();
    let watcher = tx.clone();
    let send = move |data: String| tx.send(Ok(Event::default().data(data))).is_ok();
    tokio::spawn(async move {
        let gone = || log.write(StatusCode::OK, None, ", client disconnected");
        let role = serde_json::json!({"role": "assistant", "content": ""});
        if c.shape.chat && !send(c.chunk(role, None, &[]).to_string()) {
            gone();
            return;
        }
        let mut next = first;
        while let Some(p) = next {
            match p {
                Piece::Text(t, lps) => {
                    if !send(
                        c.chunk(serde_json::json!({"content": t}), None, &lps)
                            .to_string(),
                    ) {
                        gone();
                        return; // dropping rx tells the worker the client is gone
                    }
                }
                Piece::Done { finish, stats } => {
                    watch.finish();
                    let mut last = c.chunk(serde_json::json!({}), Some(finish), &[]);
                    last["usage"] = stats.usage();
                    last["timings"] = stats.timings();
                    send(last.to_string());
                    if c.shape.include_usage {
                        let mut usage = last.clone();
                        usage["choices"] = serde_json::json!([]);
                        usage.as_object_mut().map(|o| o.remove("timings"));
                        send(usage.to_string());
                    }
                    log.write(StatusCode::OK, Some(stats), "");
                    break;
                }
                Piece::Failed(e) => {
                    watch.finish();
                    send(e.body().to_string());
                    let note = format!(", ended by an error ({})", e.status().as_u16());
                    log.write(StatusCode::OK, None, &note);
                    break;
                }
            }
            // A client that hangs up ends this task; dropping `watch` then stops the job,
            // even while it produces no text to send.
            next = tokio::select! {
                p = rx.recv() => p,
                _ = watcher.closed() => {
                    gone();
                    return;
                }
            };
            if next.is_none() {
                log.write(StatusCode::OK, None, ", the engine stopped");
            }
        }
        send("[DONE]".to_string());
    });
    logged(Sse::new(tokio_stream::wrappers::UnboundedReceiverStream::new(events)).into_response())
}
