//! gemma-wgpu: a GPU-native inference engine for Google's Gemma models on wgpu and WGSL.
//!
//! The [`engine::Engine`] is the entry point: load a model (a Hugging Face directory, a `.gguf`
//! file, or a name that [`store`] resolves: an alias such as `gemma-3-270m-it`, or a Hugging
//! Face repo, downloaded on first use), tokenize, generate with a streaming callback, read
//! logits:
//!
//! ```
//! use gemma_wgpu::engine::{Engine, GenerateOptions, SamplingParams};
//! use gemma_wgpu::gpu::GpuOptions;
//! use gemma_wgpu::model::ModelOptions;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gemma2-bf16");
//! let options = ModelOptions { all_logits: true, ..Default::default() };
//! let mut engine = Engine::load(dir.as_ref(), &GpuOptions::default(), &options)?;
//!
//! // Text in, text out, streamed piece by piece (greedy by default).
//! let prompt = engine.encode_prompt("Once upon a time", false)?;
//! let mut streamed = String::new();
//! let options = GenerateOptions::new(8, SamplingParams::default());
//! let reply = engine.generate(&prompt, &options, |delta| streamed.push_str(delta.text))?;
//! assert_eq!(streamed, reply.text);
//! assert!(!reply.ids.is_empty() && reply.ids.len() <= 8);
//!
//! // The logits of every prompt position, after the final soft-cap.
//! let logits = engine.logits(&prompt)?;
//! assert_eq!(logits.len(), prompt.len() * engine.model().config().vocab);
//! # Ok::<(), gemma_wgpu::Error>(())
//! ```
//!
//! Layout: [`gpu`] knows wgpu (adapters, features, buffers, pipelines), [`kernels`] knows WGSL
//! (one type per shader in `shaders/`), [`formats`] knows the weight formats and their GPU
//! layouts, [`weights`] knows what the files hold (safetensors, GGUF, tensor names),
//! [`config`] resolves a model's settings into plain per-layer values, [`model`] schedules the
//! GPU forward pass, [`engine`] turns text into text, [`server`] speaks the OpenAI API,
//! [`store`] finds and downloads models by name, and [`reference`](mod@reference) holds the
//! plain CPU implementations that are the specification of every kernel and of the model, for
//! the tests. Arrows between them point one way
//! (`tests/modules.rs`).

pub mod config;
pub mod engine;
pub mod error;
pub mod files;
pub mod formats;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod reference;
pub mod server;
pub mod store;
pub mod weights;

pub use error::{Error, Result};

/// The README's Rust example, compiled with the doc tests (not run: it downloads a model).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
