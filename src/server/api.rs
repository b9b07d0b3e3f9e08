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
                      /tokenize, /detokenize, /health, /metrics"
                .into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn model_not_found(id: &str, served: &str) -> ApiError {
        ApiError {
            param: Some("model".into()),
            ..ApiError::client(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("the model `{id}` does not exist here; this server serves `{served}`"),
            )
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

    pub fn headers_timeout(seconds: f64) -> ApiError {
        ApiError::client(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request headers did not arrive within {seconds} s"),
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
    /// Any name is taken (as llama-server does): clients send their own defaults.
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
    /// llama-server's (and vLLM's) sampling extensions.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub stream_options: Option<StreamOptions>,
    /// Chat: true or false (with `top_logprobs`); completions: the number of alternatives.
    pub logprobs: Option<serde_json::Value>,
    pub top_logprobs: Option<i64>,
    /// Not supported yet: refused with a 400 rather than ignored.
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub functions: Option<serde_json::Value>,
    pub function_call: Option<serde_json::Value>,
    pub response_format: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The most alternatives a token's log-probabilities list (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: i64 = 20;

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
    /// A last streamed chunk with the usage and no choices.
    pub include_usage: bool,
    /// Some(n): each token's log-probability and its n best alternatives'.
    pub logprobs: Option<usize>,
}

/// Whether a JSON field is absent in effect (null, or an empty list).
fn unset(v: &Option<serde_json::Value>) -> bool {
    match v {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

impl Common {
    /// Refuses what the server cannot do yet (tool calls, structured output) with a 400
    /// that says so, rather than answering as if it had been done.
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        for (name, v) in [("tools", &self.tools), ("functions", &self.functions)] {
            if !unset(v) {
                return Err(ApiError::bad_request(
                    &format!("{name} (tool calling) is not supported by this server yet"),
                    Some(name),
                ));
            }
        }
        for (name, v) in [
            ("tool_choice", &self.tool_choice),
            ("function_call", &self.function_call),
        ] {
            if !unset(v) && v.as_ref().and_then(|v| v.as_str()) != Some("none") {
                return Err(ApiError::bad_request(
                    &format!("{name} is not supported by this server yet (only \"none\")"),
                    Some(name),
                ));
            }
        }
        if let Some(format) = &self.response_format {
            let kind = format.get("type").and_then(|t| t.as_str());
            if !format.is_null() && kind != Some("text") {
                return Err(ApiError::bad_request(
                    &format!(
                        "response_format {format} is not supported yet: only {{\"type\": \"text\"}}"
                    ),
                    Some("response_format"),
                ));
            }
        }
        Ok(())
    }

    /// How many alternatives per token the request wants (None: no log-probabilities).
    fn logprobs(&self, chat: bool) -> Result<Option<usize>, ApiError> {
        let top = |n: i64, name: &str| {
            if (0..=MAX_TOP_LOGPROBS).contains(&n) {
                Ok(n as usize)
            } else {
                Err(ApiError::bad_request(
                    &format!("{name} must be between 0 and {MAX_TOP_LOGPROBS}, not {n}"),
                    Some(name),
                ))
            }
        };
        let asked = match (&self.logprobs, chat) {
            (None | Some(serde_json::Value::Null), _) => None,
            (Some(serde_json::Value::Bool(b)), true) => b.then_some(0),
            (Some(v), false) if v.as_i64().is_some() => v.as_i64(),
            (Some(v), _) => {
                let expected = if chat { "true or false" } else { "a number" };
                return Err(ApiError::bad_request(
                    &format!("logprobs must be {expected}, not {v}"),
                    Some("logprobs"),
                ));
            }
        };
        match (asked, self.top_logprobs) {
            (None, Some(_)) if chat => Err(ApiError::bad_request(
                "top_logprobs needs logprobs: true",
                Some("top_logprobs"),
            )),
            (None, _) => Ok(None),
            (Some(_), Some(n)) if chat => top(n, "top_logprobs").map(Some),
            (Some(n), _) => top(n, "logprobs").map(Some),
        }
    }

    /// The worker's settings, each checked; `max_tokens_limit` is the server's ceiling.
    fn settings(&self, max_tokens_limit: usize, chat: bool) -> Result<Settings, ApiError> {
        self.refuse_unsupported()?;
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only n = 1 is supported", Some("n")));
        }
        let logprobs = self.logprobs(chat)?;
        let top_k = match self.top_k {
            None => 0,
            Some(k) => sampling::top_k_from(k).map_err(setting_error)?,
        };
        let repetition_penalty = match (self.repeat_penalty, self.repetition_penalty) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::bad_request(
                    "repeat_penalty and repetition_penalty differ: give one",
                    Some("repeat_penalty"),
                ));
            }
            (a, b) => a.or(b).unwrap_or(1.0),
        };
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
            top_k,
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty,
            seed: self.seed.unwrap_or_else(rand::random),
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
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            logprobs,
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

/// One message as OpenAI's API takes it: content a string, text parts or null; an assistant's
/// tool calls; a tool's result.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The deprecated single call.
    #[serde(default)]
    pub function_call: Option<Function>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCall {
    pub function: Function,
}

#[derive(Debug, Deserialize)]
pub struct Function {
    #[serde(default)]
    pub name: String,
    /// A JSON text as OpenAI sends it (an object is taken too).
    #[serde(default)]
    pub arguments: serde_json::Value,
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

impl ChatMessage {
    /// The text the model sees: the content's text, and an assistant's calls written out.
    fn text(self, i: usize) -> Result<String, ApiError> {
        let mut text = match self.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
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
        let calls = self
            .tool_calls
            .into_iter()
            .flatten()
            .map(|c| c.function)
            .chain(self.function_call);
        for f in calls {
            let arguments = match f.arguments {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "{}".into(),
                v => v.to_string(),
            };
            if !text.is_empty() {
                text.push('\n');
            }
            let call = serde_json::json!({"name": f.name}).to_string();
            // {"name": ..., "arguments": ...} with the arguments as the client wrote them.
            text.push_str(&format!(
                "{}, \"arguments\": {arguments}}}",
                call.trim_end_matches('}')
            ));
        }
        Ok(text)
    }
}

impl ChatRequest {
    pub fn validate(self, max_tokens_limit: usize) -> Result<(Vec<Message>, Settings), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request(
                "messages must not be empty",
                Some("messages"),
            ));
        }
        let mut out: Vec<Message> = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            // Gemma's template knows only user and model turns: instructions and tool results
            // go into user turns.
            let role = match m.role.as_str() {
                "user" | "system" | "developer" | "tool" | "function" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::bad_request(
                        &format!(
                            "messages[{i}].role `{other}` is not system, developer, user, \
                             assistant or tool"
                        ),
                        Some("messages"),
                    ));
                }
            };
            let tool = matches!(m.role.as_str(), "tool" | "function");
            let content = m.text(i)?;
            if role == "user" && content.trim().is_empty() {
                return Err(ApiError::bad_request(
                    &format!("messages[{i}].content is empty"),
                    Some("messages"),
                ));
            }
            let content = if tool {
                format!("Tool result:\n{content}")
            } else {
                content
            };
            match out.last_mut() {
                Some(last) if last.role == role => {
                    last.content.push_str("\n\n");
                    last.content.push_str(&content);
                }
                _ => out.push(Message {
                    role: role.to_string(),
                    content,
                }),
            }
        }
        Ok((out, self.common.settings(max_tokens_limit, true)?))
    }
}

/// `/tokenize`'s body, as llama-server takes it.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    /// Put `<bos>` in front.
    #[serde(default)]
    pub add_special: bool,
}

/// `/detokenize`'s body, as llama-server takes it.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Read by [`completion_prompt`]: OpenAI's four shapes, one prompt of them.
    pub prompt: serde_json::Value,
    #[serde(flatten)]
    pub common: Common,
}

/// A completion's prompt: text (tokenized with `<bos>` in front) or token ids (taken as they
/// are, as OpenAI's and llama-server's token prompts are).
#[derive(Debug, PartialEq)]
pub enum CompletionPrompt {
    Text(String),
    Ids(Vec<u32>),
}

/// `prompt` in any of OpenAI's shapes: a string, a list of token ids, or a list holding one
/// of either (a list of several is a batch, which this server does not take).
fn completion_prompt(prompt: &serde_json::Value) -> Result<CompletionPrompt, ApiError> {
    use serde_json::Value;
    fn bad<T>(message: &str) -> Result<T, ApiError> {
        Err(ApiError::bad_request(message, Some("prompt")))
    }
    let one = match prompt {
        Value::Array(v) if v.iter().all(Value::is_number) => prompt,
        Value::Array(v) if v.len() == 1 => &v[0],
        Value::Array(v) if v.len() > 1 && v.iter().all(|p| p.is_string() || p.is_array()) => {
            return bad("one prompt per request");
        }
        p => p,
    };
    match one {
        Value::String(t) if t.is_empty() => bad("prompt must not be empty"),
        Value::String(t) => Ok(CompletionPrompt::Text(t.clone())),
        Value::Array(ids) if ids.is_empty() => bad("prompt must not be empty"),
        Value::Array(ids) => ids
            .iter()
            .enumerate()
            .map(
                |(i, id)| match id.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(id) => Ok(id),
                    None => bad(&format!(
                        "prompt[{i}]: {} is not a token id (a whole number from 0)",
                        crate::error::printable(&id.to_string())
                    )),
                },
            )
            .collect::<Result<_, _>>()
            .map(CompletionPrompt::Ids),
        _ => bad("prompt must be a string, a list of token ids, or a list holding one of either"),
    }
}

impl CompletionRequest {
    pub fn validate(
        self,
        max_tokens_limit: usize,
    ) -> Result<(CompletionPrompt, Settings), ApiError> {
        let prompt = completion_prompt(&self.prompt)?;
        Ok((prompt, self.common.settings(max_tokens_limit, false)?))
    }
}
