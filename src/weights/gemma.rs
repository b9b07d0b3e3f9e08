//! Gemma checkpoints: every tensor name and shape in one place, and conversion of the
//! checkpoint's tensors into the engine's weight formats.

use super::gguf::{GgmlType, Gguf};
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
    /// Gemma 3: per-head RMSNorm of queries and keys, \[head_dim\].
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

    /// The Hugging Face name's part after `model.layers.{i}.` (modeling_gemma*.py's modules).
    pub fn hf_suffix(self, arch: Arch) -> &'static str {
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

    /// The GGUF name's part between `blk.{i}.` and `.weight` (llama.cpp's tensor names, the
    /// same tensors as [`LayerTensor::hf_suffix`] in the same order).
    pub fn gguf_short(self) -> &'static str {
        match self {
            // Gemma 1's pre-MLP norm too: llama.cpp calls it ffn_norm in every Gemma.
            LayerTensor::PreFeedforwardNorm => "ffn_norm",
            LayerTensor::QNorm => "attn_q_norm",
            LayerTensor::KNorm => "attn_k_norm",
            LayerTensor::InputNorm => "attn_norm",
            LayerTensor::Q => "attn_q",
            LayerTensor::K => "attn_k",
            LayerTensor::V => "attn_v",
            LayerTensor::O => "attn_output",
            LayerTensor::PostAttentionNorm => "post_attention_norm",
            LayerTensor::Gate => "ffn_gate",
            LayerTensor::Up => "ffn_up",
            LayerTensor::Down => "ffn_down",
            LayerTensor::PostFeedforwardNorm => "post_ffw_norm",
        }
    }

    /// The Hugging Face name of this tensor of layer `layer`.
    pub fn name(self, layer: usize, arch: Arch) -> String {
        format!("model.layers.{layer}.{}", self.hf_suffix(arch))
    }

    /// Both names of this tensor of layer `layer`.
    pub fn names(self, layer: usize, arch: Arch) -> TensorName {
        TensorName {
            hf: self.name(layer, arch),
            gguf: format!("blk.{layer}.{}.weight", self.gguf_short()),
        }
    }

    /// Whether `arch` has this tensor.
    pub fn present(self, arch: Arch) -> bool {
        match self {
            LayerTensor::PostAttentionNorm | LayerTensor::PostFeedforwardNorm => arch.post_norms(),
            LayerTensor::QNorm | LayerTensor::KNorm => arch.qk_norm(),
            _ => true,
        }
    }

    /// [rows, cols] of a matrix (out, in), \[len\] of a norm as [len, 1].
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

/// A tensor's name in a Hugging Face checkpoint and in a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorName {
    pub hf: String,
    pub gguf: String,
}

/// The token embedding, also the tied lm_head: its Hugging Face and GGUF names.
pub const EMBED: &str = "model.embed_tokens.weight";
pub const EMBED_GGUF: &str = "token_embd.weight";
/// The final norm: its Hugging Face and GGUF names.
pub const FINAL_NORM: &str = "model.norm.weight";
pub const FINAL_NORM_GGUF: &str = "output_norm.weight";

/// A norm weight \[len\] as f32.
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

/// The embedding scale sqrt(hidden), rounded to the checkpoint's dtype as transformers does
/// (it multiplies in the weight dtype): bf16 for bf16 checkpoints (59.75 for 3584, 68.0 for
/// 4608), f16 for f16 ones, exact f32 otherwise.
pub fn embed_scale(hidden: usize, dtype: SourceDtype) -> f32 {
    let s = (hidden as f32).sqrt();
    match dtype {
        SourceDtype::Bf16 => half::bf16::from_f32(s).to_f32(),
        SourceDtype::F16 => half::f16::from_f32(s).to_f32(),
        SourceDtype::F32 => s,
    }
}

/// Calls `f(names, shape)` for every tensor a model of `c` reads, in the order the model loads
/// them: matrices as [rows, cols], norms as [len, 1].
pub fn each_tensor(
    c: &ModelConfig,
    mut f: impl FnMut(&TensorName, [usize; 2]) -> Result<()>,
) -> Result<()> {
    let global = |hf: &str, gguf: &str| TensorName {
        hf: hf.into(),
        gguf: gguf.into(),
    };
    f(&global(EMBED, EMBED_GGUF), [c.vocab, c.hidden])?;
    f(&global(FINAL_NORM, FINAL_NORM_GGUF), [c.hidden, 1])?;
    for i in 0..c.layers.len() {
        for t in [
            LayerTensor::Gate,
            LayerTensor::Up,
            LayerTensor::InputNorm,
            LayerTensor::Q,
            LayerTensor::K,
            LayerTensor::V,
            LayerTensor::QNorm,
            LayerTensor::KNorm,
            LayerTensor::O,
            LayerTensor::PostAttentionNorm,
            LayerTensor::PreFeedforwardNorm,
            LayerTensor::Down,
            LayerTensor::PostFeedforwardNorm,
        ] {
            if t.present(c.arch) {
                f(&t.names(i, c.arch), t.shape(c))?;
            }
        }
    }
    Ok(())
}

/// Checks, before anything is uploaded, that `ckpt` holds every tensor of `c` in its shape.
pub fn check_checkpoint(ckpt: &Checkpoint, c: &ModelConfig) -> Result<()> {
    if let Some(rows) = ckpt.shape(EMBED).and_then(|s| s.first().copied())
        && rows != c.vocab
    {
        return Err(crate::Error::Tensor {
            name: EMBED.into(),
            message: format!("has {rows} rows, but vocab_size is {}", c.vocab),
        });
    }
    each_tensor(c, |name, [rows, cols]| {
        let shape: &[usize] = if cols == 1 { &[rows] } else { &[rows, cols] };
        ckpt.tensor(&name.hf, shape).map(drop)
    })
}

/// Checks, before anything is uploaded, that `g` holds every tensor of `c` in its shape and
/// in a type the engine reads at that shape.
pub fn check_gguf(g: &Gguf, c: &ModelConfig) -> Result<()> {
    each_tensor(c, |name, shape| gguf_info(g, &name.gguf, shape).map(drop))
}

/// The GGUF name of each Hugging Face name a model of `c` reads.
pub fn gguf_names(c: &ModelConfig) -> std::collections::HashMap<String, String> {
    let mut names = std::collections::HashMap::new();
    each_tensor(c, |name, _| {
        names.insert(name.hf.clone(), name.gguf.clone());
        Ok(())
    })
    .expect("collecting names cannot fail");
    names
}

/// Whether a [rows, cols] tensor of `ty` converts to a [`HostMatrix`].
fn ggml_matrix_readable(ty: GgmlType, cols: usize) -> bool {
    match (ty.format(), ty.block()) {
        (Some(f), Some((per, _))) => {
            cols > 0 && cols.is_multiple_of(f.block_len()) && cols.is_multiple_of(per)
        }
        _ => false,
    }
}

/// The entry of GGUF tensor `name`, checked to have `shape` and a readable type.
fn gguf_info<'a>(
    g: &'a Gguf,
    name: &str,
    shape: [usize; 2],
) -> Result<(String, &'a super::gguf::TensorInfo)> {
    let name = name.to_string();
    let info = g.tensors.get(&name).ok_or_else(|| crate::Error::Tensor {
        name: name.clone(),
        message: format!("missing from {}", g.path.display()),
    })?;
    // GGUF lists dimensions innermost first: [cols, rows].
    let dims: Vec<usize> = info.dims.iter().copied().rev().collect();
    let is_norm = shape[1] == 1;
    let expected: Vec<usize> = if is_norm {
        vec![shape[0]]
    } else {
        shape.to_vec()
    };
    if dims != expected {
        return Err(crate::Error::Tensor {
            name,
            message: format!("expected shape {expected:?}, found {dims:?}"),
        });
    }
    let readable = if is_norm {
        info.ty == GgmlType::F32 || ggml_matrix_readable(info.ty, shape[0])
    } else {
        ggml_matrix_readable(info.ty, shape[1])
    };
    if !readable {
        let what = if info.ty.block().is_none() {
            format!("unsupported GGML type {:?}", info.ty)
        } else {
            format!(
                "{:?} cannot hold this shape (rows of whole blocks)",
                info.ty
            )
        };
        return Err(crate::Error::Tensor {
            name,
            message: what,
        });
    }
    Ok((name, info))
}

fn gguf_tensor<'a>(g: &'a Gguf, name: &str, shape: [usize; 2]) -> Result<(GgmlType, &'a [u8])> {
    let (name, info) = gguf_info(g, name, shape)?;
    let (_, bytes) = g.tensor(&name)?;
    Ok((info.ty, bytes))
}

/// A [rows, cols] matrix from a GGUF file (its tensor `name`), in its own type.
pub fn gguf_matrix(g: &Gguf, name: &str, shape: [usize; 2]) -> Result<HostMatrix> {
    let (ty, bytes) = gguf_tensor(g, name, shape)?;
    HostMatrix::from_ggml(ty, shape[0], shape[1], bytes)
}

/// A norm weight \[len\] from a GGUF file (with the 1 that llama.cpp's converter adds).
pub fn gguf_norm(g: &Gguf, name: &str, len: usize) -> Result<Vec<f32>> {
    let (ty, bytes) = gguf_tensor(g, name, [len, 1])?;
    HostMatrix::from_ggml(ty, 1, len, bytes)
        .map(|m| m.dequantize())
        .or_else(|_| match ty {
            // Norms are short; f32 and f16 need no block alignment.
            GgmlType::F32 => Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            _ => Err(crate::Error::Tensor {
                name: name.to_string(),
                message: format!("norm stored as {ty:?}"),
            }),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_scale_rounds_like_transformers_in_bf16() {
        assert_eq!(embed_scale(2304, SourceDtype::Bf16), 48.0);
        assert_eq!(embed_scale(3584, SourceDtype::Bf16), 59.75);
        assert_eq!(embed_scale(4608, SourceDtype::Bf16), 68.0);
        assert_eq!(embed_scale(3072, SourceDtype::Bf16), 55.5);
        assert_eq!(embed_scale(3584, SourceDtype::F32), 3584f32.sqrt());
    }
}
