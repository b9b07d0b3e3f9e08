//! embedding: scaled row gather from a weight matrix in any format (shaders/embedding.wgsl).

use super::matrix::GpuMatrix;
use super::{Dispatch, check_len, params, source};
use crate::formats::WeightFormat;
use crate::gpu::{Access, Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct EmbeddingParams {
        pub n: u32,
        pub d: u32,
        /// First table row held by the bound chunk.
        pub row_start: u32,
        pub rows: u32,
        pub scale: f32,
    }
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
            &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
            &[("WG", 64.0)],
        )?;
        Ok(Embedding { kernel, format })
    }

    /// out [n, table.cols] = table[ids\[t\]] * scale, one dispatch per chunk of the table.
    /// Ids must be below table.rows (the caller validates token ids).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        table: &GpuMatrix,
        ids: &wgpu::Buffer,
        n: usize,
        scale: f32,
        out: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
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
                };
                self.kernel.bind(
                    gpu,
                    &format!("{label}#{i}"),
                    bytemuck::bytes_of(&params),
                    &[&c.data, &c.scales, ids, out],
                    (gx, gy, 1),
                )
            })
            .collect()
    }
}
