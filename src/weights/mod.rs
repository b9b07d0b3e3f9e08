//! What the files hold: checkpoint formats (safetensors, GGUF), their element types, tensor
//! names, and the conversion of stored tensors into a GPU layout of [`crate::formats`].

pub mod gemma;
pub mod gguf;
pub mod gguf_config;
pub mod safetensors;

pub use crate::formats::{HostMatrix, WeightFormat};

/// Element type of a tensor in a safetensors checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDtype {
    F32,
    F16,
    Bf16,
}

impl SourceDtype {
    pub fn bytes(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            SourceDtype::F16 | SourceDtype::Bf16 => 2,
        }
    }
}
