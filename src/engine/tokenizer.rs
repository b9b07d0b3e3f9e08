//! The model's tokenizer (tokenizer.json through the tokenizers crate), its special tokens and
//! chat template (tokenizer_config.json), and streaming detokenisation.

use crate::error::{printable, printable_message};
use crate::weights::files::{MAX_JSON_BYTES, MAX_TOKENIZER_BYTES, read_text, read_text_if_present};
use crate::{Error, Result};
use std::path::Path;

/// Gemma's chat format (`<start_of_turn>role ... <end_of_turn>`, the assistant as `model`),
/// for GGUF files that carry no template.
pub const GEMMA_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Longest vocabulary piece of a GGUF file that gets BPE merges.
const MAX_MERGED_PIECE_BYTES: usize = 256;

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
        let text = read_text(&path, MAX_TOKENIZER_BYTES)?;
        let inner = text.parse::<tokenizers::Tokenizer>().map_err(|e| {
            Error::Tokenizer(format!(
                "{}: {}",
                path.display(),
                printable_message(&e.to_string())
            ))
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match read_text_if_present(&config_path, MAX_JSON_BYTES)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| Error::Config {
                path: config_path.display().to_string(),
                message: printable_message(&e.to_string()),
            })?,
            None => serde_json::Value::Null,
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

    /// The tokenizer a GGUF file describes (`tokenizer.ggml.model = llama`: SentencePiece
    /// pieces with byte fallback), rebuilt as transformers rebuilds Gemma's: runs of spaces
    /// respelled with `▁`, BPE merges recovered from the vocabulary and ranked by the pieces'
    /// order in the file, control tokens special and user-defined ones matched whole.
    pub fn from_gguf(g: &crate::weights::gguf::Gguf) -> Result<Tokenizer> {
        let bad = |m: &str| Error::Tokenizer(format!("{}: {m}", g.path.display()));
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if model != "llama" {
            return Err(bad(&format!(
                "tokenizer.ggml.model `{}` is not supported (Gemma files use `llama`)",
                printable(model)
            )));
        }
        let tokens: &[String] = g
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .and_then(|a| a.as_strings())
            .ok_or_else(|| bad("no tokenizer.ggml.tokens array of strings"))?;
        let types: Vec<u64> = g
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|a| a.values().map(|t| t.as_u64().unwrap_or(1)).collect())
            .unwrap_or_else(|| vec![1; tokens.len()]);
        let spelled: Vec<String> = tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.trim().is_empty() {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect();
        let mut vocab = serde_json::Map::new();
        let mut ids = std::collections::HashMap::new();
        for (i, t) in spelled.iter().enumerate() {
            vocab.insert(t.clone(), (i as u64).into());
            ids.insert(t.as_str(), i);
        }
        // Merges: every split of every piece into two pieces, earlier pieces first, and within
        // a piece the longer left part first. Splitting costs the square of a piece's length:
        // pieces longer than any real one (Gemma's longest is 48 bytes) are left whole.
        let mut merges = Vec::new();
        for t in spelled.iter().filter(|t| t.len() <= MAX_MERGED_PIECE_BYTES) {
            let cuts: Vec<usize> = t.char_indices().map(|(i, _)| i).skip(1).collect();
            for &cut in cuts.iter().rev() {
                let (l, r) = t.split_at(cut);
                if ids.contains_key(l) && ids.contains_key(r) {
                    merges.push(serde_json::json!([l, r]));
                }
            }
        }
        // Control tokens (type 3) are special; user-defined ones (type 4) are matched whole
        // but only where their spelling is a vocabulary entry (runs of spaces, respelled
        // above, are not).
        let added: Vec<serde_json::Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, ty))| **ty == 3 || (**ty == 4 && ids.contains_key(t.as_str())))
            .map(|(i, (t, ty))| {
                serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": *ty == 3})
            })
            .collect();
        let token = |key: &str, default: &str| -> String {
            g.get(key)
                .and_then(|v| v.as_u64())
                .and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_else(|| default.to_string())
        };
        let bos = token("tokenizer.ggml.bos_token_id", "<bos>");
        let eos = token("tokenizer.ggml.eos_token_id", "<eos>");
        let unk = token("tokenizer.ggml.unknown_token_id", "<unk>");
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let bos_id = ids.get(bos.as_str()).copied().unwrap_or(2);
        let post = if add_bos {
            serde_json::json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos.clone(): {"id": bos, "ids": [bos_id], "tokens": [bos]}}})
        } else {
            serde_json::Value::Null
        };
        let mut normalizers = vec![
            serde_json::json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
        ];
        if g.get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
        {
            normalizers.insert(
                0,
                serde_json::json!({"type": "Prepend", "prepend": "\u{2581}"}),
            );
        }
        let spec = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": normalizers},
            "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
            "post_processor": post,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges},
        });
        let inner: tokenizers::Tokenizer = serde_json::from_value(spec)
            .map_err(|e| bad(&format!("could not build the tokenizer: {e}")))?;
        Ok(Tokenizer {
            inner,
            // Files without a template get Gemma's own turn format.
            chat_template: Some(
                g.get("tokenizer.chat_template")
                    .and_then(|v| v.as_str())
                    .unwrap_or(GEMMA_CHAT_TEMPLATE)
                    .to_string(),
            ),
            bos_token: bos,
            eos_token: eos,
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

    /// The chat template applied to `messages`, followed by the model's turn opening when
    /// `generation_prompt`.
    pub fn render_chat(&self, messages: &[Message], generation_prompt: bool) -> Result<String> {
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
        env.render_str(
            template,
            minijinja::context! {
                messages => messages,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                add_generation_prompt => generation_prompt,
            },
        )
        .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))
    }

    /// The chat template applied to `messages` with a generation prompt, as token ids. The
    /// template writes `<bos>` itself, so nothing more is added.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode(&self.render_chat(messages, true)?, false)
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
