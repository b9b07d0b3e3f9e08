//! Gemma checkpoints: every tensor name and shape in one place, and conversion of the
//! checkpoint's tensors into the engine's weight formats.

use super::safetensors::Checkpoint;
use super::{HostMatrix, SourceDtype, WeightFormat};
use crate::Result;
use crate::config::{Arch, ModelConfig};

/// The tensors of one decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
    InputNorm,
    Q,
    K,
    V,
    O,
    PostAttentionNorm,
    PreFeedforwardNorm,
    Gate,
    Up,
    Down,
    PostFeedforwardNorm,
    /// Gemma 3: per-head RMSNorm of queries and keys, [head_dim].
    QNorm,
    KNorm,
}

impl LayerTensor {
    pub const MATRICES: [LayerTensor; 7] = [
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::O,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::Down,
    ];

    fn suffix(self, arch: Arch) -> &'static str {
        match self {
            // Gemma 1 has two norms; its pre-MLP norm is called post_attention_layernorm.
            LayerTensor::PreFeedforwardNorm if arch == Arch::Gemma => {
                "post_attention_layernorm.weight"
            }
            LayerTensor::QNorm => "self_attn.q_norm.weight",
            LayerTensor::KNorm => "self_attn.k_norm.weight",
            LayerTensor::InputNorm => "input_layernorm.weight",
            LayerTensor::Q => "self_attn.q_proj.weight",
            LayerTensor::K => "self_attn.k_proj.weight",
            LayerTensor::V => "self_attn.v_proj.weight",
            LayerTensor::O => "self_attn.o_proj.weight",
            LayerTensor::PostAttentionNorm => "post_attention_layernorm.weight",
            LayerTensor::PreFeedforwardNorm => "pre_feedforward_layernorm.weight",
            LayerTensor::Gate => "mlp.gate_proj.weight",
            LayerTensor::Up => "mlp.up_proj.weight",
            LayerTensor::Down => "mlp.down_proj.weight",
            LayerTensor::PostFeedforwardNorm => "post_feedforward_layernorm.weight",
        }
    }

    pub fn name(self, layer: usize, arch: Arch) -> String {
        format!("model.layers.{layer}.{}", self.suffix(arch))
    }

    /// Whether `arch` has this tensor.
    pub fn present(self, arch: Arch) -> bool {
        match self {
            LayerTensor::PostAttentionNorm | LayerTensor::PostFeedforwardNorm => arch.post_norms(),
            LayerTensor::QNorm | LayerTensor::KNorm => arch.qk_norm(),
            _ => true,
        }
    }

    /// [rows, cols] of a matrix (out, in), [len] of a norm as [len, 1].
    pub fn shape(self, c: &ModelConfig) -> [usize; 2] {
        match self {
            LayerTensor::Q => [c.q_dim(), c.hidden],
            LayerTensor::K | LayerTensor::V => [c.kv_dim(), c.hidden],
            LayerTensor::O => [c.hidden, c.q_dim()],
            LayerTensor::Gate | LayerTensor::Up => [c.intermediate, c.hidden],
            LayerTensor::Down => [c.hidden, c.intermediate],
            LayerTensor::QNorm | LayerTensor::KNorm => [c.head_dim, 1],
            _ => [c.hidden, 1],
        }
    }
}

pub const EMBED: &str = "model.embed_tokens.weight";
pub const FINAL_NORM: &str = "model.norm.weight";

/// A norm weight [len] as f32.
pub fn norm(ckpt: &Checkpoint, name: &str, len: usize) -> Result<Vec<f32>> {
    Ok(ckpt.tensor(name, &[len])?.to_f32())
}

/// A [rows, cols] matrix in `format`: bf16 kept bit for bit from a bf16 file, anything else
/// widened to f32 (exact) and converted.
pub fn matrix(
    ckpt: &Checkpoint,
    name: &str,
    [rows, cols]: [usize; 2],
    format: WeightFormat,
) -> Result<HostMatrix> {
    let t = ckpt.tensor(name, &[rows, cols])?;
    if t.dtype == SourceDtype::Bf16 && format == WeightFormat::Bf16 {
        let bits: Vec<u16> = bytemuck::pod_collect_to_vec(t.bytes);
        return HostMatrix::from_bf16_bits(rows, cols, &bits);
    }
    HostMatrix::from_f32(format, rows, cols, &t.to_f32())
}

/// The dtype of the checkpoint (its embedding's), which fixes the embedding scale's rounding
/// and the default weight format.
pub fn source_dtype(ckpt: &Checkpoint, c: &ModelConfig) -> Result<SourceDtype> {
    Ok(ckpt.tensor(EMBED, &[c.vocab, c.hidden])?.dtype)
}

/// Full precision for the checkpoint: bf16 stays bf16, f16 and f32 become f32 (exact).
pub fn default_format(dtype: SourceDtype) -> WeightFormat {
    match dtype {
        SourceDtype::Bf16 => WeightFormat::Bf16,
        SourceDtype::F16 | SourceDtype::F32 => WeightFormat::F32,
    }
}
