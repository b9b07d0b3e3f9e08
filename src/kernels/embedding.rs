//! embedding: scaled row gather from a weight matrix in any format, and the first layer's
//! input norm of the rows (shaders/embedding.wgsl).

use super::matrix::GpuMatrix;
use super::{Dispatch, bindings, check_len, params, source};
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
}

pub struct Embedding {
    kernel: Kernel,
    format: WeightFormat,
}

impl Embedding {
    pub fn new(gpu: &Gpu, format: WeightFormat) -> Result<Embedding> {
        let kernel = source::build(
            gpu,
            &source::EMBEDDING,
            "main",
            Some(format),
            None,
            &[("WG", 64.0)],
        )?;
        Ok(Embedding { kernel, format })
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
                self.kernel.bind(
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
                    },
                    (gx, gy, 1),
                )
            })
            .collect()
    }
}
