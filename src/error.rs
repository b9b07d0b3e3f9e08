//! The library's error type, and the quoting of file content in its messages.

use std::borrow::Cow;
use thiserror::Error;

/// Longest value taken from a file (a tensor name, a metadata string) that a message quotes.
pub const QUOTE_CHARS: usize = 80;
/// Longest field of any message: a last guard for text built from other libraries' errors.
const FIELD_CHARS: usize = 1000;

/// Whether `c` would move the cursor, switch the terminal's state or reorder the text around it.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` made safe to print on one terminal line: control characters (escape sequences,
/// newlines) and bidirectional overrides escaped as `\u{..}`, and at most `max` characters
/// kept (then `...`).
fn escape(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max && !s.chars().any(unprintable) {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        if unprintable(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A value read from a file, quoted in an error message: escaped and at most
/// [`QUOTE_CHARS`] characters.
pub fn printable(s: &str) -> String {
    escape(s, QUOTE_CHARS).into_owned()
}

/// Another library's error message about a file's content (serde_json, safetensors,
/// tokenizers): escaped, and cut at a few lines' worth.
pub fn printable_message(s: &str) -> String {
    escape(s, 3 * QUOTE_CHARS).into_owned()
}

/// A field of a message, as [`Error`] displays it.
fn line(s: &str) -> Cow<'_, str> {
    escape(s, FIELD_CHARS)
}

/// Everything the library can fail with; each variant says what was expected and what was found.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{filter}. On headless Linux install a software Vulkan driver: \
         `apt-get update && apt-get install -y mesa-vulkan-drivers`"
    )]
    NoAdapter { filter: String },
    #[error("unknown backend `{0}`: expected one of vulkan, metal, dx12, gl, auto")]
    UnknownBackend(String),
    /// A setting out of its range; `name` as the API spells it (`top_p`), the CLI turns it
    /// into its flag (`--top-p`).
    #[error("{name} {message}")]
    InvalidSetting { name: &'static str, message: String },
    #[error("no adapter matches `{wanted}`; available: {available}")]
    AdapterNotFound { wanted: String, available: String },
    #[error("could not open device on `{adapter}`: {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("the adapter ran out of memory allocating {what}; {hint}")]
    OutOfMemory { what: String, hint: String },
    /// A wgpu error outside any error scope, or the device lost.
    #[error("GPU error: {0}")]
    Device(String),
    #[error("kernel `{kernel}` failed to build: {message}")]
    Pipeline { kernel: String, message: String },
    #[error("kernel `{kernel}`: {}", line(.message))]
    Shape {
        kernel: &'static str,
        message: String,
    },
    #[error("{}: {}", line(.path), line(.message))]
    Io { path: String, message: String },
    #[error("{}: {}", line(.path), line(.message))]
    Config { path: String, message: String },
    #[error("{}: {}", line(.path), line(.message))]
    Checkpoint { path: String, message: String },
    #[error("tensor `{}`: {}", line(.name), line(.message))]
    Tensor { name: String, message: String },
    #[error(
        "the context is full: {needed} tokens needed, the context holds {ctx} (raise --ctx, \
         up to the model's max_position_embeddings)"
    )]
    ContextFull { needed: usize, ctx: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary { id: u32, vocab: usize },
    #[error("nothing to run: {0}")]
    Empty(&'static str),
    #[error("{what} needs the model loaded with {option}")]
    NotLoadedWith {
        what: &'static str,
        option: &'static str,
    },
    #[error("tokenizer: {}", line(.0))]
    Tokenizer(String),
    #[error("GPU readback failed: {0}")]
    Readback(String),
    #[error("{what} needs the adapter feature {feature}, which `{adapter}` lacks")]
    MissingFeature {
        what: &'static str,
        feature: &'static str,
        adapter: String,
    },
    /// The forward pass produced NaN or infinite values: broken weights or configuration.
    #[error(
        "the logits are not finite (NaN or infinity){where_}: the model's weights or configuration are broken"
    )]
    NonFinite { where_: String },
    #[error("{what} needs {needed} bytes but the adapter allows at most {allowed} bytes")]
    TooLarge {
        what: String,
        needed: u64,
        allowed: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_content_is_escaped_and_cut() {
        assert_eq!(printable("blk.0.attn_q.weight"), "blk.0.attn_q.weight");
        assert_eq!(printable("\u{2581}the"), "\u{2581}the");
        assert_eq!(printable("a\u{1b}[2J\nb"), "a\\u{1b}[2J\\u{a}b");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        let long = printable(&"é".repeat(1000));
        assert_eq!(long.chars().count(), QUOTE_CHARS + 3);
        assert!(long.ends_with("..."));
        // The last guard: every message is one line.
        let e = Error::Tensor {
            name: "a\nb".into(),
            message: "c\r\nd".into(),
        };
        assert_eq!(e.to_string(), "tensor `a\\u{a}b`: c\\u{d}\\u{a}d");
    }
}
