//! Request bodies of the OpenAI API subset we serve, their validation, and error bodies.

use crate::engine::{Message, SamplingParams};
use axum::http::StatusCode;
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
            message:
                "no such endpoint; see /v1/models, /v1/chat/completions, /v1/completions, /health"
                    .into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
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
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
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
    fn settings(&self) -> Result<Settings, ApiError> {
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
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(
                "top_p must be in (0, 1]",
                Some("top_p"),
            ));
        }
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
            max_tokens: self
                .max_completion_tokens
                .or(self.max_tokens)
                .unwrap_or(256) as usize,
            params: SamplingParams {
                temperature,
                top_p,
                seed: self.seed.unwrap_or_else(rand::random),
                ..Default::default()
            },
            stop,
            stream: self.stream,
            ignore_eos: self.ignore_eos,
        })
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
    pub fn validate(self) -> Result<(Vec<Message>, Settings), ApiError> {
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
        Ok((out, self.common.settings()?))
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
    pub fn validate(self) -> Result<(String, Settings), ApiError> {
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
        Ok((prompt, self.common.settings()?))
    }
}
