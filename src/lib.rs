//! gemma-wgpu: a GPU-native inference engine for Google's Gemma models on wgpu and WGSL.
//!
//! Layout: [`gpu`] knows wgpu (adapters, features, buffers, pipelines), [`kernels`] knows WGSL
//! (one type per shader in `shaders/`), [`weights`] knows weight formats and their GPU layout,
//! and [`reference`] holds the plain CPU implementations that are the specification of every
//! kernel.

pub mod config;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod reference;
pub mod server;
pub mod weights;

pub use error::{Error, Result};
