//! An OpenAI-compatible HTTP server: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//! `/health`, streaming (server-sent events) or not.
//!
//! One engine runs on one worker thread; requests wait in a bounded queue (a full queue is
//! answered 503), generate in turn, and stream their text back. A client that goes away stops
//! its generation. Bad requests get 400 with an OpenAI-style error body.

mod api;

use crate::engine::{Engine, Message, SamplingParams, StopReason};
use api::{ApiError, ChatRequest, CompletionRequest};
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// What the worker sends back while generating.
enum Piece {
    Text(String),
    Done {
        finish: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
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
    out: mpsc::UnboundedSender<Piece>,
    id: u64,
    /// Set when the client is gone (see Watch).
    gone: Arc<AtomicBool>,
}

enum Prompt {
    Chat(Vec<Message>),
    Text(String),
}

#[derive(Clone)]
struct AppState {
    jobs: mpsc::Sender<Job>,
    model: Arc<String>,
    /// The engine's cancel flag and the id of the job it runs (0: none).
    cancel: Arc<AtomicBool>,
    running: Arc<AtomicU64>,
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
pub struct ServeOptions {
    /// The name `/v1/models` reports and responses carry.
    pub model_name: String,
    /// Requests that may wait behind the one generating.
    pub queue: usize,
}

/// Runs the worker on `engine` and serves on `listener` until the process ends.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
) -> std::io::Result<()> {
    let (jobs, rx) = mpsc::channel::<Job>(options.queue.max(1));
    let cancel = engine.cancel.clone();
    let running = Arc::new(AtomicU64::new(0));
    let worker_running = running.clone();
    std::thread::Builder::new()
        .name("gemma-wgpu engine".into())
        .spawn(move || worker(engine, rx, worker_running))?;
    let state = AppState {
        jobs,
        model: Arc::new(options.model_name),
        cancel,
        running,
    };
    let app = Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state);
    axum::serve(listener, app).await
}

fn worker(mut engine: Engine, mut rx: mpsc::Receiver<Job>, running: Arc<AtomicU64>) {
    while let Some(job) = rx.blocking_recv() {
        if job.out.is_closed() || job.gone.load(Ordering::Relaxed) {
            continue;
        }
        running.store(job.id, Ordering::Relaxed);
        serve_job(&mut engine, job);
        running.store(0, Ordering::Relaxed);
    }
}

fn serve_job(engine: &mut Engine, job: Job) {
    {
        let ids = match &job.prompt {
            Prompt::Chat(m) => engine.tokenizer.encode_chat(m),
            Prompt::Text(t) => engine.tokenizer.encode(t, true),
        };
        let ids = match ids {
            Ok(ids) => ids,
            Err(e) => {
                let _ = job
                    .out
                    .send(Piece::Failed(ApiError::bad_request(&e.to_string(), None)));
                return;
            }
        };
        if ids.len() >= engine.model.ctx {
            let _ = job.out.send(Piece::Failed(ApiError::context_length(
                ids.len(),
                engine.model.ctx,
            )));
            return;
        }
        let max_tokens = job.max_tokens.min(engine.model.ctx - ids.len());
        let cancel = engine.cancel.clone();
        let gone = job.gone.clone();
        let out = job.out.clone();
        // Text is held back while it could be the start of a stop string.
        let mut text = String::new();
        let mut sent = 0usize;
        let mut stopped_by_string = false;
        let eos = if job.ignore_eos {
            std::mem::take(&mut engine.eos)
        } else {
            vec![]
        };
        let result = engine.generate(&ids, max_tokens, &job.params, |piece| {
            if stopped_by_string {
                return;
            }
            if gone.load(Ordering::Relaxed) {
                cancel.store(true, Ordering::Relaxed);
            }
            text.push_str(piece);
            if let Some(at) = job.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(at);
                stopped_by_string = true;
                cancel.store(true, Ordering::Relaxed);
            }
            let mut safe = text.len();
            if !stopped_by_string {
                for s in &job.stop {
                    for k in (1..s.len()).rev() {
                        if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                            safe = safe.min(text.len() - k);
                        }
                    }
                }
            }
            if safe > sent && text.is_char_boundary(safe) {
                if out.send(Piece::Text(text[sent..safe].to_string())).is_err() {
                    // The client is gone.
                    cancel.store(true, Ordering::Relaxed);
                }
                sent = safe;
            }
        });
        if job.ignore_eos {
            engine.eos = eos;
        }
        match result {
            Ok(g) => {
                if sent < text.len() {
                    let _ = out.send(Piece::Text(text[sent..].to_string()));
                }
                let finish = match g.stop {
                    StopReason::MaxTokens | StopReason::ContextFull => "length",
                    _ => "stop",
                };
                let completion_tokens = g.ids.len() - usize::from(g.stop == StopReason::Eos);
                let _ = out.send(Piece::Done {
                    finish,
                    prompt_tokens: ids.len(),
                    completion_tokens,
                });
            }
            Err(e) => {
                let _ = out.send(Piece::Failed(ApiError::server(&e.to_string())));
            }
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models(State(s): State<AppState>) -> Response {
    Json(serde_json::json!({
        "object": "list",
        "data": [{"id": s.model.as_str(), "object": "model", "created": now(), "owned_by": "gemma-wgpu"}],
    }))
    .into_response()
}

/// Queues a job; a full queue is 503.
fn submit(
    s: &AppState,
    prompt: Prompt,
    settings: api::Settings,
) -> Result<(mpsc::UnboundedReceiver<Piece>, Watch), ApiError> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let gone = Arc::new(AtomicBool::new(false));
    let (out, rx) = mpsc::unbounded_channel();
    s.jobs
        .try_send(Job {
            prompt,
            max_tokens: settings.max_tokens,
            params: settings.params,
            stop: settings.stop,
            ignore_eos: settings.ignore_eos,
            out,
            id,
            gone: gone.clone(),
        })
        .map_err(|_| ApiError::busy())?;
    let watch = Watch {
        id,
        gone,
        running: s.running.clone(),
        cancel: s.cancel.clone(),
        finished: false,
    };
    Ok((rx, watch))
}

async fn chat_completions(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: ChatRequest = match api::parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (messages, common) = match req.validate() {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let stream = common.stream;
    let (rx, watch) = match submit(&s, Prompt::Chat(messages), common) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    respond(rx, watch, s.model.clone(), stream, true).await
}

async fn completions(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: CompletionRequest = match api::parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (prompt, common) = match req.validate() {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let stream = common.stream;
    let (rx, watch) = match submit(&s, Prompt::Text(prompt), common) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    respond(rx, watch, s.model.clone(), stream, false).await
}

/// The response: one JSON body, or server-sent events ending in `data: [DONE]`.
async fn respond(
    mut rx: mpsc::UnboundedReceiver<Piece>,
    mut watch: Watch,
    model: Arc<String>,
    stream: bool,
    chat: bool,
) -> Response {
    let id = format!(
        "{}-{:x}",
        if chat { "chatcmpl" } else { "cmpl" },
        rand::random::<u64>()
    );
    let created = now();
    if !stream {
        let mut text = String::new();
        while let Some(p) = rx.recv().await {
            match p {
                Piece::Text(t) => text.push_str(&t),
                Piece::Failed(e) => {
                    watch.finish();
                    return e.into_response();
                }
                Piece::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    watch.finish();
                    let choice = if chat {
                        serde_json::json!({"index": 0, "message": {"role": "assistant", "content": text},
                            "finish_reason": finish, "logprobs": null})
                    } else {
                        serde_json::json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null})
                    };
                    return Json(serde_json::json!({
                        "id": id,
                        "object": if chat { "chat.completion" } else { "text_completion" },
                        "created": created,
                        "model": model.as_str(),
                        "choices": [choice],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "total_tokens": prompt_tokens + completion_tokens},
                    }))
                    .into_response();
                }
            }
        }
        return ApiError::server("the engine stopped").into_response();
    }
    // Streaming: wait for the first piece so that errors still get a status code.
    let first = rx.recv().await;
    if let Some(Piece::Failed(e)) = first {
        watch.finish();
        return e.into_response();
    }
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
        let choice = if chat {
            serde_json::json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null})
        } else {
            let text = delta.get("content").and_then(|c| c.as_str()).unwrap_or("");
            serde_json::json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null})
        };
        serde_json::json!({"id": id, "object": object, "created": created, "model": model.as_str(), "choices": [choice]})
    };
    let (tx, events) = mpsc::unbounded_channel::<Result<Event, std::convert::Infallible>>();
    let watcher = tx.clone();
    let send = move |data: String| tx.send(Ok(Event::default().data(data))).is_ok();
    tokio::spawn(async move {
        if chat
            && !send(
                chunk(
                    serde_json::json!({"role": "assistant", "content": ""}),
                    None,
                )
                .to_string(),
            )
        {
            return;
        }
        let mut next = first;
        while let Some(p) = next {
            match p {
                Piece::Text(t) => {
                    if !send(chunk(serde_json::json!({"content": t}), None).to_string()) {
                        return; // dropping rx tells the worker the client is gone
                    }
                }
                Piece::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    watch.finish();
                    let mut last = chunk(serde_json::json!({}), Some(finish));
                    last["usage"] = serde_json::json!({"prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
                    send(last.to_string());
                    break;
                }
                Piece::Failed(e) => {
                    watch.finish();
                    send(e.body().to_string());
                    break;
                }
            }
            // A client that hangs up ends this task; dropping `watch` then stops the job,
            // even while it produces no text to send.
            next = tokio::select! {
                p = rx.recv() => p,
                _ = watcher.closed() => return,
            };
        }
        send("[DONE]".to_string());
    });
    Sse::new(tokio_stream::wrappers::UnboundedReceiverStream::new(events)).into_response()
}
