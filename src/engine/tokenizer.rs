//! The model's tokenizer (tokenizer.json through the tokenizers crate), its special tokens and
//! chat template (tokenizer_config.json), and streaming detokenisation.

use super::sandbox;
use crate::error::{printable, printable_message};
use crate::files::{MAX_JSON_BYTES, MAX_TOKENIZER_BYTES, read_text, read_text_if_present};
use crate::{Error, Result};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Gemma's chat format (`<start_of_turn>role ... <end_of_turn>`, the assistant as `model`),
/// for GGUF files that carry no template.
pub const GEMMA_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Longest vocabulary piece of a GGUF file that gets BPE merges.
const MAX_MERGED_PIECE_BYTES: usize = 256;

pub struct Tokenizer {
    /// Locked only to switch between parsing control tokens and reading them as plain text.
    inner: Mutex<tokenizers::Tokenizer>,
    /// Jinja chat template from tokenizer_config.json.
    chat_template: Option<String>,
    /// Whether the template came with the model (GGUF files without one get Gemma's).
    own_template: bool,
    bos_token: String,
    eos_token: String,
}

impl Clone for Tokenizer {
    fn clone(&self) -> Tokenizer {
        Tokenizer {
            inner: Mutex::new(self.inner().clone()),
            chat_template: self.chat_template.clone(),
            own_template: self.own_template,
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
        }
    }
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
        let chat_template = config
            .get("chat_template")
            .and_then(|t| t.as_str())
            .map(String::from);
        Ok(Tokenizer {
            inner: Mutex::new(inner),
            own_template: chat_template.is_some(),
            chat_template,
            bos_token: token_string(config.get("bos_token")).unwrap_or_else(|| "<bos>".into()),
            eos_token: token_string(config.get("eos_token")).unwrap_or_else(|| "<eos>".into()),
        })
    }

    /// The tokenizer a GGUF file describes (`tokenizer.ggml.model = llama`: SentencePiece
    /// pieces with byte fallback), rebuilt as transformers' converter rebuilds Gemma's
    /// `tokenizer.json`: runs of spaces respelled with `▁`, BPE merges recovered from the
    /// pieces and ranked by their SentencePiece scores, control and user-defined pieces matched
    /// whole before the rest of the text is segmented.
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
        let pieces = SentencePieces::from_gguf(g).map_err(|m| bad(&m))?;
        let id_of = |key: &str| g.get(key).and_then(|v| v.as_u64());
        let token = |key: &str, default: &str| -> String {
            id_of(key)
                .and_then(|i| pieces.spelled.get(i as usize).cloned())
                .unwrap_or_else(|| default.to_string())
        };
        let bos = token("tokenizer.ggml.bos_token_id", "<bos>");
        let eos = token("tokenizer.ggml.eos_token_id", "<eos>");
        let unk = token("tokenizer.ggml.unknown_token_id", "<unk>");
        // What Gemma's tokenizer_config.json marks special: the file's bos, eos, unk and pad
        // tokens and the turn and image markers. Other control pieces stay plain added tokens.
        let mut special: Vec<usize> = [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
        ]
        .iter()
        .filter_map(|k| id_of(k).map(|i| i as usize))
        .collect();
        special.extend(GEMMA_MARKUP.iter().filter_map(|m| pieces.id(m)));
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let add_space_prefix = g
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let inner = pieces
            .tokenizer(&special, &unk, add_bos.then_some(&bos), add_space_prefix)
            .map_err(|e| bad(&format!("could not build the tokenizer: {e}")))?;
        let own = g.get("tokenizer.chat_template").and_then(|v| v.as_str());
        Ok(Tokenizer {
            inner: Mutex::new(inner),
            own_template: own.is_some(),
            // Files without a template get Gemma's own turn format.
            chat_template: Some(own.unwrap_or(GEMMA_CHAT_TEMPLATE).to_string()),
            bos_token: bos,
            eos_token: eos,
        })
    }

    /// The tokenizer of a model directory (tokenizer.json) or of a GGUF file, without its
    /// weights.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        if path.is_file() {
            Tokenizer::from_gguf(&crate::weights::gguf::Gguf::open(path)?)
        } else {
            Tokenizer::from_dir(path)
        }
    }

    fn inner(&self) -> MutexGuard<'_, tokenizers::Tokenizer> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Token ids of `text`; `special` adds what the tokenizer's post-processor adds (Gemma:
    /// `<bos>` first). Control tokens written in the text (`<start_of_turn>`) are parsed.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self.encode_full(text, special, true)?.get_ids().to_vec())
    }

    /// As [`Tokenizer::encode`], with the choice of reading control tokens' spellings as plain
    /// text (`parse_special` false), as Hugging Face's `encode_special_tokens` does.
    pub fn encode_full(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<tokenizers::Encoding> {
        let mut inner = self.inner();
        inner.set_encode_special_tokens(!parse_special);
        let encoding = inner.encode(text, add_bos);
        inner.set_encode_special_tokens(false);
        encoding.map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The text of `ids`, special tokens (`<bos>`, `<end_of_turn>`) left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner()
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The text of `ids`, special tokens included: the inverse of `encode` without `<bos>`.
    pub fn decode_verbatim(&self, ids: &[u32]) -> Result<String> {
        self.inner()
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The piece (vocabulary entry) of `id`.
    pub fn piece(&self, id: u32) -> Option<String> {
        self.inner().id_to_token(id)
    }

    /// The text and the bytes `id` stands for on its own: a byte-fallback piece (`<0xE2>`) is
    /// its byte, `▁` a space.
    pub fn token_bytes(&self, id: u32) -> (String, Vec<u8>) {
        let piece = self.piece(id).unwrap_or_default();
        let byte = piece
            .strip_prefix("<0x")
            .and_then(|h| h.strip_suffix('>'))
            .filter(|h| h.len() == 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match byte {
            Some(b) => (String::from_utf8_lossy(&[b]).into_owned(), vec![b]),
            None => {
                let text = piece.replace('\u{2581}', " ");
                let bytes = text.as_bytes().to_vec();
                (text, bytes)
            }
        }
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner().token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner().get_vocab_size(true)
    }

    /// The chat template applied to `messages`, followed by the model's turn opening when
    /// `generation_prompt`.
    /// A system message first goes to the template; where the template refuses one
    /// (Gemma 2's raises "System role not supported"), it opens the first user message, as
    /// Gemma 3's template does itself.
    pub fn render_chat(&self, messages: &[Message], generation_prompt: bool) -> Result<String> {
        let rendered = self.render_template(messages, generation_prompt);
        match messages {
            [system, user, rest @ ..] if rendered.is_err() && system.role == "system" => {
                let mut folded = vec![Message {
                    role: user.role.clone(),
                    content: format!("{}\n\n{}", system.content, user.content),
                }];
                folded.extend_from_slice(rest);
                self.render_template(&folded, generation_prompt)
            }
            _ => rendered,
        }
    }

    /// Whether the model has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Whether the chat template came with the model. A model without one is most likely a
    /// base (pretrained) model, which does not follow Gemma's turn format well.
    pub fn has_own_chat_template(&self) -> bool {
        self.own_template
    }

    /// The chat template applied, in a sandbox ([`sandbox`]): a template comes from a model
    /// file, and what it computes on the way to its (bounded) output could otherwise take all
    /// memory.
    fn render_template(&self, messages: &[Message], generation_prompt: bool) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::Tokenizer("tokenizer_config.json has no chat_template".into()))?;
        let render = || self.render_unguarded(template, messages, generation_prompt);
        sandbox::run(TEMPLATE_MEMORY, TEMPLATE_SECONDS, render).map_err(|f| match f {
            sandbox::Failure::Error(message) => Error::Tokenizer(message),
            sandbox::Failure::Killed(why) => Error::Tokenizer(format!(
                "chat template: stopped, {why} (a template may use {} MiB and {TEMPLATE_SECONDS} s)",
                TEMPLATE_MEMORY >> 20
            )),
        })
    }

    /// The template rendered here and now, with its own bounds: fuel (instructions), nesting,
    /// and output size. Errors are the final message text.
    fn render_unguarded(
        &self,
        template: &str,
        messages: &[Message],
        generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(
            TEMPLATE_FUEL_PER_MESSAGE * (messages.len() as u64 + 16),
        ));
        env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let bad = |e: &dyn std::fmt::Display| format!("chat template: {e}");
        let template = env.template_from_str(template).map_err(|e| bad(&e))?;
        let content: usize = messages
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum();
        let mut out = BoundedText::new(content + TEMPLATE_OUTPUT_SLACK);
        template
            .render_captured_to(
                minijinja::context! {
                    messages => messages,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                    add_generation_prompt => generation_prompt,
                },
                &mut out,
            )
            .map(drop)
            .map_err(|e| match out.overflowed {
                true => bad(&format!(
                    "its output grew past {} bytes for {content} bytes of messages",
                    out.limit
                )),
                false => bad(&e),
            })?;
        String::from_utf8(out.bytes).map_err(|e| bad(&e))
    }

    /// The chat template applied to `messages` with a generation prompt, as token ids. The
    /// template writes `<bos>` itself, so nothing more is added. Control tokens come from the
    /// template's own markup only: a message that spells `<end_of_turn>` gets it as plain
    /// text, so no one can forge a turn.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let chat = self.render_chat_marked(messages, true)?;
        self.encode_rendered(&chat, 0)
    }

    /// [`Tokenizer::render_chat`], with where in the text each message's content lies.
    ///
    /// The template is rendered twice: with the messages, and with each content replaced by a
    /// sentinel (private-use characters found in no content). The sentinel rendering shows
    /// which text is markup; the contents are then matched in the real rendering (as they are,
    /// or trimmed, as templates do).
    pub fn render_chat_marked(
        &self,
        messages: &[Message],
        generation_prompt: bool,
    ) -> Result<RenderedChat> {
        let text = self.render_chat(messages, generation_prompt)?;
        let taken = |c: char| {
            messages
                .iter()
                .any(|m| m.content.contains(c) || m.role.contains(c))
        };
        let Some(mark) = ('\u{E000}'..='\u{F8FF}').find(|&c| !taken(c)) else {
            return Err(Error::Tokenizer(
                "the messages use every private-use character".into(),
            ));
        };
        let stand_ins: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                role: m.role.clone(),
                content: format!("{mark}{i}{mark}"),
            })
            .collect();
        let marked = self.render_chat(&stand_ins, generation_prompt)?;
        // Alternating markup and message indices: markup, i, markup, j, ..., markup.
        let parts: Vec<&str> = marked.split(mark).collect();
        if let Some(chat) = match_contents(&text, &parts, messages) {
            return Ok(chat);
        }
        // A template that changes contents beyond trimming: its markup with each content as
        // written.
        let mut chat = RenderedChat {
            text: String::new(),
            content: vec![],
        };
        for (k, part) in parts.iter().enumerate() {
            let message = (k % 2 == 1)
                .then(|| part.parse::<usize>().ok().and_then(|i| messages.get(i)))
                .flatten();
            match message {
                Some(m) => {
                    let start = chat.text.len();
                    chat.text.push_str(&m.content);
                    chat.content.push(start..chat.text.len());
                }
                None => chat.text.push_str(part),
            }
        }
        Ok(chat)
    }

    /// Token ids of `chat.text[from..]`: control tokens parsed in the markup, content read as
    /// plain text. Between control tokens the text is tokenized as one piece, as the tokenizer
    /// itself does, so a chat without control-token spellings in its messages gets exactly
    /// the ids of `encode(text, false)`.
    pub fn encode_rendered(&self, chat: &RenderedChat, from: usize) -> Result<Vec<u32>> {
        let text = chat.text.get(from..).ok_or_else(|| {
            Error::Tokenizer(format!("{from} is not a character boundary of the chat"))
        })?;
        // Control tokens by their first byte (Gemma's tokenizer.json has thousands).
        let mut specials: std::collections::HashMap<u8, Vec<(String, u32)>> = Default::default();
        for (id, t) in self.inner().get_added_tokens_decoder() {
            if let (true, Some(&first)) = (t.special, t.content.as_bytes().first()) {
                specials.entry(first).or_default().push((t.content, id));
            }
        }
        let in_content = |a: usize, b: usize| {
            chat.content
                .iter()
                .any(|r| a + from < r.end && r.start < b + from)
        };
        let mut ids = vec![];
        let mut plain_from = 0;
        let mut at = 0;
        while at < text.len() {
            let longest = specials
                .get(&text.as_bytes()[at])
                .into_iter()
                .flatten()
                .filter(|(s, _)| text[at..].starts_with(s.as_str()))
                .max_by_key(|(s, _)| s.len());
            match longest {
                Some((s, id)) if !in_content(at, at + s.len()) => {
                    if plain_from < at {
                        let piece = self.encode_full(&text[plain_from..at], false, false)?;
                        ids.extend_from_slice(piece.get_ids());
                    }
                    ids.push(*id);
                    at += s.len();
                    plain_from = at;
                }
                _ => {
                    at += text[at..].chars().next().map_or(1, char::len_utf8);
                }
            }
        }
        if plain_from < text.len() {
            let piece = self.encode_full(&text[plain_from..], false, false)?;
            ids.extend_from_slice(piece.get_ids());
        }
        Ok(ids)
    }
}

/// A rendered chat and the byte ranges of its messages' contents (read as plain text).
#[derive(Clone, Debug)]
pub struct RenderedChat {
    pub text: String,
    pub content: Vec<std::ops::Range<usize>>,
}

/// Finds each content of `parts` (markup, message index, markup, ...) in `text`, as it is or
/// trimmed; None when the text is not the markup around the contents.
fn match_contents(text: &str, parts: &[&str], messages: &[Message]) -> Option<RenderedChat> {
    let mut content = vec![];
    let mut at = 0usize;
    let mut k = 0;
    while k < parts.len() {
        let markup = parts[k];
        if !text.get(at..)?.starts_with(markup) {
            return None;
        }
        at += markup.len();
        let Some(index) = parts.get(k + 1) else { break };
        let m = messages.get(index.parse::<usize>().ok()?)?;
        let next = parts.get(k + 2).copied().unwrap_or("");
        let c = m.content.as_str();
        let rest = &text[at..];
        let x = [c, c.trim(), c.trim_end(), c.trim_start()]
            .into_iter()
            .find(|x| rest.starts_with(x) && rest[x.len()..].starts_with(next))?;
        content.push(at..at + x.len());
        at += x.len();
        k += 2;
    }
    (at == text.len()).then(|| RenderedChat {
        text: text.to_string(),
        content,
    })
}

/// Template instructions allowed per chat message (Gemma's templates use a few dozen).
const TEMPLATE_FUEL_PER_MESSAGE: u64 = 20_000;
/// Memory a template's run may take beyond the process's own (values it builds on the way;
/// its output is bounded apart), and its time.
const TEMPLATE_MEMORY: u64 = 256 << 20;
const TEMPLATE_SECONDS: u32 = 30;
/// Nesting depth of template calls and blocks.
const TEMPLATE_RECURSION_LIMIT: usize = 64;
/// Bytes a template may write beyond the messages' own text (markup, system prompts).
const TEMPLATE_OUTPUT_SLACK: usize = 1 << 20;

/// A byte sink that refuses to grow past `limit`.
struct BoundedText {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl BoundedText {
    fn new(limit: usize) -> Self {
        BoundedText {
            bytes: vec![],
            limit,
            overflowed: false,
        }
    }
}

impl std::io::Write for BoundedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Gemma's chat and image markers, special in its tokenizer_config.json.
const GEMMA_MARKUP: [&str; 4] = [
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
];

/// SentencePiece's piece types, as GGUF's `tokenizer.ggml.token_type` numbers them.
const PIECE_UNKNOWN: u64 = 2;
const PIECE_CONTROL: u64 = 3;
const PIECE_USER_DEFINED: u64 = 4;

/// A SentencePiece vocabulary read from GGUF metadata, with space runs spelled as `▁`.
struct SentencePieces {
    spelled: Vec<String>,
    scores: Vec<f32>,
    types: Vec<u64>,
    ids: std::collections::HashMap<String, usize>,
}

impl SentencePieces {
    fn from_gguf(g: &crate::weights::gguf::Gguf) -> std::result::Result<Self, String> {
        let array = |key: &str| g.get(key).and_then(|v| v.as_array());
        let tokens = array("tokenizer.ggml.tokens")
            .and_then(|a| a.as_strings())
            .ok_or("no tokenizer.ggml.tokens array of strings")?;
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
        let n = spelled.len();
        let types: Vec<u64> = match array("tokenizer.ggml.token_type") {
            Some(a) if a.len() == n => a.values().map(|t| t.as_u64().unwrap_or(1)).collect(),
            Some(a) => return Err(format!("{} token types for {n} tokens", a.len())),
            None => vec![1; n],
        };
        // Without scores, earlier pieces rank first, as SentencePiece's trainer orders them.
        let scores: Vec<f32> = match array("tokenizer.ggml.scores") {
            Some(a) if a.len() == n => a
                .values()
                .map(|s| s.as_f64().unwrap_or(f64::NEG_INFINITY) as f32)
                .collect(),
            Some(a) => return Err(format!("{} token scores for {n} tokens", a.len())),
            None => (0..n).map(|i| -(i as f32)).collect(),
        };
        // A later piece with the same spelling wins, as in transformers' converter.
        let ids = spelled
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        Ok(SentencePieces {
            spelled,
            scores,
            types,
            ids,
        })
    }

    fn id(&self, piece: &str) -> Option<usize> {
        self.ids.get(piece).copied()
    }

    /// Whether piece `i` is matched whole before segmentation (an added token).
    fn is_added(&self, i: usize) -> bool {
        matches!(
            self.types[i],
            PIECE_UNKNOWN | PIECE_CONTROL | PIECE_USER_DEFINED
        )
    }

    /// BPE merges as transformers' `SentencePieceExtractor` derives them: every split of every
    /// piece into two pieces, ranked by the merged piece's score (highest first), then by the
    /// longer left part, then the longer right part, ties in vocabulary order. SentencePiece
    /// scores control and user-defined pieces 0; llama.cpp's converter writes -1000 for them,
    /// so they are read as 0 here. Space runs (user-defined) thus merge into the longest run
    /// first: 70 spaces become 31 + 31 + 8.
    fn merges(&self) -> Vec<(&str, &str)> {
        struct Merge<'a> {
            left: &'a str,
            right: &'a str,
            score: f32,
            left_chars: usize,
            right_chars: usize,
            order: (usize, usize, usize),
        }
        let mut merges = Vec::new();
        for (i, piece) in self.spelled.iter().enumerate() {
            // Splitting costs the square of a piece's length: pieces longer than any real one
            // (Gemma's longest is 48 bytes) are left whole.
            if piece.len() > MAX_MERGED_PIECE_BYTES {
                continue;
            }
            let score = if self.is_added(i) {
                0.0
            } else {
                self.scores[i]
            };
            let chars = piece.chars().count();
            for (left_chars, (cut, _)) in piece.char_indices().enumerate().skip(1) {
                let (left, right) = piece.split_at(cut);
                if let (Some(l), Some(r)) = (self.id(left), self.id(right)) {
                    merges.push(Merge {
                        left,
                        right,
                        score,
                        left_chars,
                        right_chars: chars - left_chars,
                        order: (i, l, r),
                    });
                }
            }
        }
        merges.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.left_chars.cmp(&a.left_chars))
                .then(b.right_chars.cmp(&a.right_chars))
                .then(a.order.cmp(&b.order))
        });
        merges.into_iter().map(|m| (m.left, m.right)).collect()
    }

    /// The BPE model of the pieces: byte fallback, unknown pieces fused into `unk`.
    fn bpe(&self, unk: &str) -> std::result::Result<tokenizers::models::bpe::BPE, String> {
        // A later piece with the same spelling wins (the later insert).
        let vocab: ahash::AHashMap<String, u32> = (self.spelled.iter().enumerate())
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = (self.merges().into_iter())
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk.to_string())
            .fuse_unk(true)
            .byte_fallback(true)
            .build()
            .map_err(|e| e.to_string())
    }

    /// Gemma's tokenizer, as its official tokenizer.json describes it: `▁` for spaces, one
    /// word per text (split on nothing, since the spaces are gone), BPE with byte fallback,
    /// `bos` prepended when given. The BPE model is built from the pieces directly (spelled as
    /// JSON and parsed back, Gemma's 262k pieces and their merges took seconds); the small
    /// parts are parsed from their tokenizer.json spelling.
    fn tokenizer(
        &self,
        special: &[usize],
        unk: &str,
        bos: Option<&String>,
        add_space_prefix: bool,
    ) -> std::result::Result<tokenizers::Tokenizer, String> {
        use serde_json::json;
        use tokenizers::{
            AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper,
            PreTokenizerWrapper,
        };
        let model = self.bpe(unk)?;
        let mut normalizers =
            vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})];
        if add_space_prefix {
            normalizers.insert(0, json!({"type": "Prepend", "prepend": "\u{2581}"}));
        }
        let normalizer: NormalizerWrapper =
            from_json(json!({"type": "Sequence", "normalizers": normalizers}))?;
        let pre_tokenizer: PreTokenizerWrapper = from_json(json!({"type": "Split",
            "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}))?;
        let decoder: DecoderWrapper = from_json(json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]}))?;
        let post_processor: Option<PostProcessorWrapper> = match bos {
            Some(bos) => {
                let bos_id = self.id(bos).unwrap_or(2);
                Some(from_json(json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos.clone(): {"id": bos, "ids": [bos_id], "tokens": [bos]}}}))?)
            }
            None => None,
        };
        let mut t = tokenizers::Tokenizer::new(model);
        t.with_normalizer(Some(normalizer))
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_post_processor(post_processor)
            .with_decoder(Some(decoder));
        // Control and user-defined pieces, matched whole before the rest is segmented.
        let added: Vec<AddedToken> = (0..self.spelled.len())
            .filter(|&i| self.is_added(i))
            .map(|i| {
                AddedToken::from(self.spelled[i].clone(), special.contains(&i))
                    .single_word(false)
                    .lstrip(false)
                    .rstrip(false)
                    .normalized(false)
            })
            .collect();
        t.add_tokens(&added);
        Ok(t)
    }
}

/// One part of a tokenizer from its tokenizer.json spelling.
fn from_json<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> std::result::Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Turns a stream of token ids into text pieces, holding back a piece while it ends in an
/// incomplete UTF-8 sequence (byte-fallback tokens split multi-byte characters). Each step
/// decodes only the ids since the last printed piece, so a long generation stays linear.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// `ids[prefix..read]` is the last printed piece: decoded again as the left context.
    prefix: usize,
    read: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        TextStream {
            tokenizer,
            ids: vec![],
            prefix: 0,
            read: 0,
        }
    }

    /// The new text that `id` completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.next_piece(false)
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn finish(&mut self) -> Result<Option<String>> {
        self.next_piece(true)
    }

    fn next_piece(&mut self, last: bool) -> Result<Option<String>> {
        let printed = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = self.tokenizer.decode(&self.ids[self.prefix..])?;
        if (!last && text.ends_with('\u{FFFD}'))
            || text.len() <= printed.len()
            || !text.is_char_boundary(printed.len())
        {
            return Ok(None);
        }
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(text[printed.len()..].to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_template(template: &str) -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
        let mut t = Tokenizer::from_dir(&dir).unwrap();
        t.chat_template = Some(template.to_string());
        t
    }

    fn user(content: &str) -> Message {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    #[test]
    fn hostile_chat_templates_stop_with_an_error() {
        let start = std::time::Instant::now();
        let spin = "{% for i in range(50000) %}{% for j in range(50000) %}{% endfor %}{% endfor %}";
        let grow = "{% for i in range(10000) %}{% for j in range(10000) %}{{ 'x' * 10000 }}{% endfor %}{% endfor %}";
        let deep = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        for template in [spin, grow, deep] {
            let err = with_template(template)
                .render_chat(&[user("hi")], true)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("tokenizer: chat template: "), "{err}");
        }
        let err = with_template(grow)
            .render_chat(&[user("hi")], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("grew past"), "{err}");
        let err = with_template(spin)
            .render_chat(&[user("hi")], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fuel"), "{err}");
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }

    /// A string doubled n times in a loop: 2^n bytes held, its length written.
    fn doubling(n: u32) -> String {
        format!(
            "{{% set ns = namespace(s='x') %}}{{% for i in range({n}) %}}{{% set ns.s = ns.s ~ ns.s %}}\
             {{% endfor %}}{{{{ ns.s|length }}}}"
        )
    }

    #[test]
    fn a_template_cannot_take_more_than_its_memory() {
        // 2^20 bytes is within the budget ...
        let text = with_template(&doubling(20))
            .render_chat(&[user("hi")], true)
            .unwrap();
        assert_eq!(text, (1u64 << 20).to_string());
        // ... 2^40 (a TiB, in 40 steps of the fuel) is stopped where it would have taken the
        // machine's memory.
        let err = with_template(&doubling(40))
            .render_chat(&[user("hi")], true)
            .unwrap_err()
            .to_string();
        #[cfg(target_os = "linux")]
        assert!(
            err.contains("stopped, it ran out of its 256 MiB of memory"),
            "{err}"
        );
        assert!(err.starts_with("tokenizer: chat template: "), "{err}");
    }

    #[test]
    fn long_chats_render_within_the_budget() {
        let t = with_template(GEMMA_CHAT_TEMPLATE);
        let messages: Vec<Message> = (0..2000).map(|i| user(&format!("turn {i}"))).collect();
        let text = t.render_chat(&messages, true).unwrap();
        assert!(text.ends_with("<start_of_turn>model\n"));
        assert_eq!(text.matches("<start_of_turn>user").count(), 2000);
    }
}
