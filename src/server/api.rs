//! Request bodies of the OpenAI API subset we serve, their validation, and error bodies.

use crate::engine::{Message, SamplingParams, sampling};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// An error as the OpenAI API reports it: a status and `{"error": {...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: &str, param: Option<&str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.to_string(),
            kind: "invalid_request_error",
            param: param.map(String::from),
            code: None,
        }
    }

    pub fn context_length(tokens: usize, ctx: usize) -> ApiError {
        ApiError {
            code: Some("context_length_exceeded"),
            param: Some("messages".into()),
            ..ApiError::bad_request(
                &format!("the prompt has {tokens} tokens; this server's context holds {ctx}"),
                None,
            )
        }
    }

    pub fn busy() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is busy: its request queue is full; retry later".into(),
            kind: "server_busy",
            param: None,
            code: Some("queue_full"),
        }
    }

    pub fn server(message: &str) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.to_string(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn not_found() -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: "no such endpoint; see /v1/models, /v1/chat/completions, /v1/completions, \
                      /health, /metrics"
                .into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// A client error with its own status and code.
    fn client(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            message,
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
        }
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ApiError {
        ApiError::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; use {allowed}"),
        )
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::client(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            message.to_string(),
        )
    }

    pub fn forbidden(code: &'static str, message: String) -> ApiError {
        ApiError::client(StatusCode::FORBIDDEN, code, message)
    }

    pub fn unsupported_media_type(found: &str) -> ApiError {
        ApiError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the request body must be JSON (Content-Type: application/json), not `{found}`"
            ),
        )
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("the request body is larger than this server's limit of {limit} bytes"),
        )
    }

    pub fn timeout(seconds: f64) -> ApiError {
        ApiError::client(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {seconds} s"),
        )
    }

    pub fn shutting_down() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down".into(),
            kind: "server_error",
            param: None,
            code: Some("shutting_down"),
        }
    }

    pub fn too_many_connections() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server has too many open connections; retry later".into(),
            kind: "server_busy",
            param: None,
            code: Some("too_many_connections"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The body was not read to its end: the connection cannot carry another request.
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Parses a JSON body; malformed JSON and fields of the wrong type are 400s naming the problem.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        ApiError::bad_request(&format!("{what}: {e}"), None)
    })
}

/// Fields shared by both endpoints (unknown fields are ignored, as OpenAI's clients send many).
#[derive(Debug, Deserialize)]
pub struct Common {
    #[allow(dead_code)]
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    /// vLLM's extension: generate `max_tokens` whatever end-of-sequence tokens come.
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// What a validated request asks of the worker.
pub struct Settings {
    pub max_tokens: usize,
    pub params: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub ignore_eos: bool,
}

impl Common {
    /// The worker's settings, each checked; `max_tokens_limit` is the server's ceiling.
    fn settings(&self, max_tokens_limit: usize) -> Result<Settings, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only n = 1 is supported", Some("n")));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request(
                "temperature must be between 0 and 2",
                Some("temperature"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        let params = SamplingParams {
            temperature,
            top_p,
            seed: self.seed.unwrap_or_else(rand::random),
            ..Default::default()
        };
        params.validate().map_err(setting_error)?;
        let name = if self.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => 256.min(max_tokens_limit),
            Some(n) => sampling::max_tokens_from(n, max_tokens_limit).map_err(|_| {
                let limit = max_tokens_limit.min(sampling::MAX_TOKENS_LIMIT);
                let whose = if limit < sampling::MAX_TOKENS_LIMIT {
                    " (this server's limit)"
                } else {
                    ""
                };
                ApiError::bad_request(
                    &format!("{name} must be between 0 and {limit}{whose}, not {n}"),
                    Some(name),
                )
            })?,
        };
        let stop = match &self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
            return Err(ApiError::bad_request(
                "stop takes up to 4 non-empty strings",
                Some("stop"),
            ));
        }
        Ok(Settings {
            max_tokens,
            params,
            stop,
            stream: self.stream,
            ignore_eos: self.ignore_eos,
        })
    }
}

/// A setting the library refused, as a 400 naming the parameter.
fn setting_error(e: crate::Error) -> ApiError {
    match e {
        crate::Error::InvalidSetting { name, message } => {
            ApiError::bad_request(&format!("{name} {message}"), Some(name))
        }
        e => ApiError::bad_request(&e.to_string(), None),
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Content,
}

/// A message's content: a string, or text parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: Common,
}

impl ChatRequest {
    pub fn validate(self, max_tokens_limit: usize) -> Result<(Vec<Message>, Settings), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request(
                "messages must not be empty",
                Some("messages"),
            ));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "user" | "assistant" | "system" | "developer" => m.role,
                other => {
                    return Err(ApiError::bad_request(
                        &format!("messages[{i}].role `{other}` is not user, assistant or system"),
                        Some("messages"),
                    ));
                }
            };
            let content = match m.content {
                Content::Text(t) => t,
                Content::Parts(parts) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::bad_request(
                                    &format!(
                                        "messages[{i}]: content part `{kind}` is not supported (text only)"
                                    ),
                                    Some("messages"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            if content.trim().is_empty() {
                return Err(ApiError::bad_request(
                    &format!("messages[{i}].content is empty"),
                    Some("messages"),
                ));
            }
            // Gemma's template has no system role: the instructions open the first user turn.
            let role = if role == "system" || role == "developer" {
                "user".to_string()
            } else {
                role
            };
            match out.last_mut() {
                Some(Message {
                    role: last,
                    content: c,
                }) if *last == role => {
                    c.push_str("\n\n");
                    c.push_str(&content);
                }
                _ => out.push(Message { role, content }),
            }
        }
        Ok((out, self.common.settings(max_tokens_limit)?))
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

impl CompletionRequest {
    pub fn validate(self, max_tokens_limit: usize) -> Result<(String, Settings), ApiError> {
        let prompt = match self.prompt {
            PromptField::One(p) => p,
            PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
            PromptField::Many(_) => {
                return Err(ApiError::bad_request(
                    "one prompt per request",
                    Some("prompt"),
                ));
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::bad_request(
                "prompt must not be empty",
                Some("prompt"),
            ));
        }
        Ok((prompt, self.common.settings(max_tokens_limit)?))
    }
}
