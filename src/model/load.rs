//! Where a model's weights come from (a checkpoint, a GGUF file, or pseudo-random values
//! written on the GPU) and how each tensor reaches its GPU layout.

use crate::gpu::Gpu;
use crate::kernels::fill::FillBuffers;
use crate::kernels::{Fill, GpuMatrix};
use crate::weights::gemma;
use crate::weights::gguf::Gguf;
use crate::weights::safetensors::Checkpoint;
use crate::weights::{HostMatrix, WeightFormat};
use crate::{Error, Result};
use std::collections::HashMap;

/// The GGUF name of Hugging Face name `hf`.
fn gguf_name<'a>(names: &'a HashMap<String, String>, hf: &str) -> Result<&'a str> {
    names
        .get(hf)
        .map(String::as_str)
        .ok_or_else(|| Error::Tensor {
            name: hf.to_string(),
            message: "has no GGUF counterpart".into(),
        })
}

/// Where the weights come from.
pub(super) enum Source<'a> {
    Checkpoint(&'a Checkpoint),
    /// A GGUF file, whether to expand its block formats (see ModelOptions), and the GGUF
    /// name of each Hugging Face name the model asks for.
    Gguf(&'a Gguf, bool, HashMap<String, String>),
    /// Pseudo-random weights written on the GPU.
    Synthetic(Fill),
}

impl Source<'_> {
    /// Bytes of tensor data in the file, where the source is a file whose tensors keep their
    /// stored size (GGUF).
    pub fn file_bytes(&self) -> Option<u64> {
        match self {
            Source::Gguf(g, ..) => Some(g.tensor_bytes()),
            _ => None,
        }
    }

    /// The stored bytes of tensor `name` (Hugging Face name), where the file says.
    pub fn tensor_bytes(&self, name: &str) -> Option<u64> {
        match self {
            Source::Gguf(g, _, names) => {
                let t = g.tensors.get(names.get(name)?)?;
                Some((t.end - t.start) as u64)
            }
            _ => None,
        }
    }

    pub fn matrix(
        &self,
        gpu: &Gpu,
        name: &str,
        shape: [usize; 2],
        format: Option<WeightFormat>,
    ) -> Result<GpuMatrix> {
        let full = WeightFormat::F32;
        match self {
            Source::Checkpoint(ckpt) => GpuMatrix::upload(
                gpu,
                name,
                &gemma::matrix(ckpt, name, shape, format.unwrap_or(full))?,
            ),
            Source::Gguf(g, expand, names) => {
                let mut m = gemma::gguf_matrix(g, gguf_name(names, name)?, shape)?;
                if *expand && m.format.ggml_block().is_some() {
                    m = m.expand().expect("every block format expands");
                }
                match format {
                    Some(f) if f != m.format => {
                        let values = m.dequantize();
                        drop(m);
                        GpuMatrix::upload(
                            gpu,
                            name,
                            &HostMatrix::from_f32(f, shape[0], shape[1], &values)?,
                        )
                    }
                    _ => GpuMatrix::upload(gpu, name, &m),
                }
            }
            Source::Synthetic(fill) => {
                let format = format.unwrap_or(full);
                let m = GpuMatrix::zeroed(gpu, name, format, shape[0], shape[1])?;
                // Small values: f32 and bf16 with a fixed exponent (|w| in [1/64, 1/32)),
                // any quant codes with f16 scales near 1/256.
                let (mask, bits) = match format {
                    WeightFormat::F32 => (0x807f_ffff, 0x3c80_0000),
                    WeightFormat::Bf16 => (0x807f_807f, 0x3c80_3c80),
                    WeightFormat::Q8_0 | WeightFormat::Q4_0 => (u32::MAX, 0),
                    other => {
                        return Err(Error::Shape {
                            kernel: "model",
                            message: format!(
                                "synthetic models come in f32, bf16, q8_0 or q4_0, not {other}"
                            ),
                        });
                    }
                };
                let seed = name
                    .bytes()
                    .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
                let mut d = vec![];
                for c in &m.chunks {
                    let data = FillBuffers { out: &c.data };
                    d.push(fill.bind(gpu, name, seed, mask, bits, data)?);
                    let scales = FillBuffers { out: &c.scales };
                    d.push(fill.bind(gpu, name, seed ^ 1, 0x03ff_03ff, 0x1c00_1c00, scales)?);
                }
                gpu.run(name, &d)?;
                Ok(m)
            }
        }
    }

    pub fn norm(&self, gpu: &Gpu, name: &str, len: usize) -> Result<wgpu::Buffer> {
        self.norms(gpu, &[name], len)
    }

    /// The norm weights `names`, \[len\] each, one after another in one buffer.
    pub fn norms(&self, gpu: &Gpu, names: &[&str], len: usize) -> Result<wgpu::Buffer> {
        let label = names.join("+");
        let mut w = Vec::with_capacity(names.len() * len);
        for name in names {
            match self {
                Source::Checkpoint(ckpt) => w.extend(gemma::norm(ckpt, name, len)?),
                Source::Gguf(g, _, names) => {
                    w.extend(gemma::gguf_norm(g, gguf_name(names, name)?, len)?)
                }
                Source::Synthetic(fill) => {
                    let n = names.len() * len;
                    let b = gpu.storage_zeroed(&label, (n * 4) as u64);
                    let fill = fill.bind(
                        gpu,
                        &label,
                        n as u32,
                        0x807f_ffff,
                        0x3c80_0000,
                        FillBuffers { out: &b },
                    )?;
                    gpu.run(&label, [&fill])?;
                    return Ok(b);
                }
            }
        }
        Ok(gpu.storage_init(&label, bytemuck::cast_slice(&w)))
    }
}
