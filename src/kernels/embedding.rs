//! embedding: scaled row gather from a weight matrix in any format, and the first layer's
//! input norm of the rows (shaders/embedding.wgsl).

use super::matrix::{GpuMatrix, decode_x_quantized_apart};
use super::{Dispatch, bindings, check_len, params, quantize_q8, source};
use crate::formats::WeightFormat;
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct EmbeddingParams {
        pub n: u32,
        pub d: u32,
        /// First table row held by the bound chunk.
        pub row_start: u32,
        pub rows: u32,
        pub scale: f32,
        pub eps: f32,
        pub w_offset: f32,
    }
}

bindings! {
    pub struct EmbeddingBuffers {
        /// One chunk of the table in its format's GPU layout
        pub w_data: Read,
        /// The chunk's f16 scales
        pub w_scales: Read,
        /// \[n\] u32 token ids
        pub ids: Read,
        /// [n, d]
        pub out: ReadWrite,
        /// \[d\] norm weights
        pub norm: Read,
        /// [n, d]: rms_norm(out)
        pub h: ReadWrite,
        /// [n * d / 32 * 24] words: h quantized as kernels::QuantizeQ8 writes it (written by
        /// the dispatches bound with `EmbeddingArgs::hq` only; any buffer otherwise)
        pub hq: ReadWrite,
    }
}

/// What one embedding binds: out [n, table.cols] = table[ids\[t\]] * scale, and
/// h = rms_norm(out) with `norm`.
pub struct EmbeddingArgs<'a> {
    pub table: &'a GpuMatrix,
    /// \[n\] u32, each below table.rows (the caller validates token ids)
    pub ids: &'a wgpu::Buffer,
    pub n: usize,
    pub scale: f32,
    /// [n, table.cols]
    pub out: &'a wgpu::Buffer,
    /// The norm's weights \[table.cols\], eps and weight offset (as rms_norm's)
    pub norm: (&'a wgpu::Buffer, f32, f32),
    /// [n, table.cols]
    pub h: &'a wgpu::Buffer,
    /// Where to write h quantized to int8 blocks of 32 as well (as kernels::QuantizeQ8
    /// would), for first q/k/v products that read x so: where [`Embedding::quantizes_h`]
    /// says the adapter has the kernel that does.
    pub hq: Option<&'a wgpu::Buffer>,
}

pub struct Embedding {
    kernel: Kernel,
    /// The same writing `hq`, on adapters whose decode products read x quantized by a pass
    /// of their own (kernels::matrix::decode_x_quantized_apart).
    quantizing: Option<Kernel>,
    format: WeightFormat,
}

impl Embedding {
    pub fn new(gpu: &Gpu, format: WeightFormat) -> Result<Embedding> {
        let build = |quant: bool| {
            source::build(
                gpu,
                &source::EMBEDDING,
                "main",
                Some(format),
                quant.then_some("quant"),
                &[("WG", 64.0), ("QUANT", quant as u8 as f64)],
            )
        };
        let quantizing = match decode_x_quantized_apart(gpu) {
            true => Some(build(true)?),
            false => None,
        };
        Ok(Embedding {
            kernel: build(false)?,
            quantizing,
            format,
        })
    }

    /// Whether [`Embedding::bind`] takes `EmbeddingArgs::hq` (see there).
    pub fn quantizes_h(&self) -> bool {
        self.quantizing.is_some()
    }

    /// out [n, table.cols] = table[ids\[t\]] * scale and h = rms_norm(out) with `norm`, one
    /// dispatch per chunk of the table.
    /// Ids must be below table.rows (the caller validates token ids).
    pub fn bind(&self, gpu: &Gpu, label: &str, args: EmbeddingArgs) -> Result<Vec<Dispatch>> {
        let EmbeddingArgs {
            table,
            ids,
            n,
            scale,
            out,
            norm: (norm, eps, w_offset),
            h,
            hq,
        } = args;
        if table.format != self.format {
            return Err(Error::Shape {
                kernel: "embedding",
                message: format!(
                    "kernel built for {}, table is {}",
                    self.format, table.format
                ),
            });
        }
        check_len("embedding", "ids", ids, n)?;
        check_len("embedding", "out", out, n * table.cols)?;
        check_len("embedding", "norm", norm, table.cols)?;
        check_len("embedding", "h", h, n * table.cols)?;
        let kernel = match (hq, &self.quantizing) {
            (None, _) => &self.kernel,
            (Some(hq), Some(quantizing)) => {
                let values = (n * table.cols, table.cols);
                quantize_q8::check_quantized("embedding", "hq", hq, values)?;
                quantizing
            }
            (Some(_), None) => {
                return Err(Error::Shape {
                    kernel: "embedding",
                    message: "this adapter's embedding does not write h quantized".into(),
                });
            }
        };
        let (gx, gy) = gpu.grid_2d(n as u32);
        table
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let params = EmbeddingParams {
                    n: n as u32,
                    d: table.cols as u32,
                    row_start: c.row_start as u32,
                    rows: c.rows as u32,
                    scale,
                    eps,
                    w_offset,
                };
                kernel.bind(
                    gpu,
                    &format!("{label}#{i}"),
                    bytemuck::bytes_of(&params),
                    &EmbeddingBuffers {
                        w_data: &c.data,
                        w_scales: &c.scales,
                        ids,
                        out,
                        norm,
                        h,
                        // Without a quantized output the kernel does not write it.
                        hq: hq.unwrap_or(h),
                    },
                    (gx, gy, 1),
                )
            })
            .collect()
    }
}
