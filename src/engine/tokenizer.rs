//! The model's tokenizer (tokenizer.json through the tokenizers crate), its special tokens and
//! chat template (tokenizer_config.json), and streaming detokenisation.

use crate::{Error, Result};
use std::path::Path;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Jinja chat template from tokenizer_config.json.
    chat_template: Option<String>,
    bos_token: String,
    eos_token: String,
}

/// One chat message.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
        _ => None,
    }
}

impl Tokenizer {
    /// Reads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::Io {
                path: path.display().to_string(),
                message: "missing (the model directory needs its tokenizer.json)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Config {
                path: config_path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(_) => serde_json::Value::Null,
        };
        Ok(Tokenizer {
            inner,
            chat_template: config
                .get("chat_template")
                .and_then(|t| t.as_str())
                .map(String::from),
            bos_token: token_string(config.get("bos_token")).unwrap_or_else(|| "<bos>".into()),
            eos_token: token_string(config.get("eos_token")).unwrap_or_else(|| "<eos>".into()),
        })
    }

    /// Token ids of `text`; `special` adds what the tokenizer's post-processor adds (Gemma:
    /// `<bos>` first).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The chat template applied to `messages` with a generation prompt, as token ids. The
    /// template writes `<bos>` itself, so nothing more is added.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::Tokenizer("tokenizer_config.json has no chat_template".into()))?;
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let text = env
            .render_str(
                template,
                minijinja::context! {
                    messages => messages,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                    add_generation_prompt => true,
                },
            )
            .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        self.encode(&text, false)
    }
}

/// Turns a stream of token ids into text pieces, holding back a piece while it ends in an
/// incomplete UTF-8 sequence (byte-fallback tokens split multi-byte characters).
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        TextStream {
            tokenizer,
            ids: vec![],
            printed: 0,
        }
    }

    /// The new text that `id` completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.printed
            || !text.is_char_boundary(self.printed)
        {
            return Ok(None);
        }
        let piece = text[self.printed..].to_string();
        self.printed = text.len();
        Ok(Some(piece))
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let text = self.tokenizer.decode(&self.ids)?;
        if text.len() > self.printed && text.is_char_boundary(self.printed) {
            let piece = text[self.printed..].to_string();
            self.printed = text.len();
            return Ok(Some(piece));
        }
        Ok(None)
    }
}
