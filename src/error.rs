//! The library's error type.

use thiserror::Error;

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
    #[error("kernel `{kernel}`: {message}")]
    Shape {
        kernel: &'static str,
        message: String,
    },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error("{path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
    #[error(
        "the context is full: {needed} tokens needed, the context holds {ctx} (raise --ctx, \
         up to the model's max_position_embeddings)"
    )]
    ContextFull { needed: usize, ctx: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("GPU readback failed: {0}")]
    Readback(String),
    #[error("{what} needs the adapter feature {feature}, which `{adapter}` lacks")]
    MissingFeature {
        what: &'static str,
        feature: &'static str,
        adapter: String,
    },
    #[error("{what} needs {needed} bytes but the adapter allows at most {allowed} bytes")]
    TooLarge {
        what: String,
        needed: u64,
        allowed: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
