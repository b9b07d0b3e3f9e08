//! Weight matrices on the GPU, split by rows into chunks that fit one storage binding.

use crate::formats::{HostMatrix, WeightFormat};
use crate::gpu::Gpu;
use crate::kernels::{bindings, params};
use crate::{Error, Result};

params! {
    /// Params of matvec.wgsl and matmul.wgsl.
    pub struct MatrixParams {
        /// Rows of this chunk of W.
        pub rows: u32,
        pub k: u32,
        /// Vectors (matvec) or token rows (matmul) of x.
        pub n: u32,
        /// Output column of the chunk's first row.
        pub out_offset: u32,
        /// Output row length (all rows of W).
        pub out_stride: u32,
    }
}

bindings! {
    /// Buffers of matvec.wgsl and matmul.wgsl.
    pub struct MatrixBuffers {
        /// One chunk of W in its format's GPU layout
        pub w_data: Read,
        /// The chunk's f16 scales (empty for plain floats)
        pub w_scales: Read,
        /// [n, k]
        pub x: Read,
        /// [n, out_stride]: the chunk writes columns out_offset..out_offset + rows
        pub y: ReadWrite,
    }
}

/// What one matrix product binds: y [n, w.rows] = x [n, w.cols] W^T.
pub struct MatrixArgs<'a> {
    pub w: &'a GpuMatrix,
    /// [n, w.cols]
    pub x: &'a wgpu::Buffer,
    /// [n, w.rows]
    pub y: &'a wgpu::Buffer,
    /// Vectors (matvec) or token rows (matmul).
    pub n: usize,
}

/// Rows [row_start, row_start + rows) of a matrix, in their own buffers.
pub struct MatrixChunk {
    pub row_start: usize,
    pub rows: usize,
    pub data: wgpu::Buffer,
    pub scales: wgpu::Buffer,
}

/// A [rows, cols] weight matrix in its GPU layout. Matrices larger than the adapter's storage
/// binding limit (Gemma 2's tied embedding is 1.18 GB in bf16) are split transparently; the
/// kernels dispatch once per chunk.
pub struct GpuMatrix {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub chunks: Vec<MatrixChunk>,
}

impl GpuMatrix {
    /// Rows per chunk for this device.
    pub fn rows_per_chunk(gpu: &Gpu, format: WeightFormat, cols: usize) -> Result<usize> {
        let row_bytes = format.data_bytes_per_row(cols) as u64;
        let rows = gpu.caps.max_binding_size / row_bytes;
        if rows == 0 {
            return Err(Error::TooLarge {
                what: format!("one {format} row of {cols} weights"),
                needed: row_bytes,
                allowed: gpu.caps.max_binding_size,
            });
        }
        Ok(rows as usize)
    }

    pub fn upload(gpu: &Gpu, label: &str, m: &HostMatrix) -> Result<GpuMatrix> {
        Self::upload_parts(
            gpu,
            label,
            m.format,
            m.rows,
            m.cols,
            m.data_bytes(),
            m.scale_bytes(),
        )
    }

    /// Uploads a matrix given as its GPU-layout bytes (data and f16 scales), chunk by chunk,
    /// straight from the caller's slices (for instance a memory-mapped file).
    pub fn upload_parts(
        gpu: &Gpu,
        label: &str,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        data: &[u8],
        scales: &[u8],
    ) -> Result<GpuMatrix> {
        let row_bytes = format.data_bytes_per_row(cols);
        let row_scale_bytes = format.scales_per_row(cols) * 2;
        if data.len() != rows * row_bytes || scales.len() != rows * row_scale_bytes {
            return Err(Error::Shape {
                kernel: "matrix",
                message: format!(
                    "{label}: {format} [{rows}, {cols}] needs {} data and {} scale bytes, got {} and {}",
                    rows * row_bytes,
                    rows * row_scale_bytes,
                    data.len(),
                    scales.len()
                ),
            });
        }
        Self::chunked(gpu, label, format, rows, cols, |name, start, n| {
            (
                gpu.storage_init(name, &data[start * row_bytes..][..n * row_bytes]),
                gpu.storage_init(
                    &format!("{name}.scales"),
                    &scales[start * row_scale_bytes..][..n * row_scale_bytes],
                ),
            )
        })
    }

    /// A zero-filled matrix, chunked as an upload would be (to be filled on the GPU).
    pub fn zeroed(
        gpu: &Gpu,
        label: &str,
        format: WeightFormat,
        rows: usize,
        cols: usize,
    ) -> Result<GpuMatrix> {
        Self::chunked(gpu, label, format, rows, cols, |name, _, n| {
            (
                gpu.storage_zeroed(name, (n * format.data_bytes_per_row(cols)) as u64),
                gpu.storage_zeroed(
                    &format!("{name}.scales"),
                    (n * format.scales_per_row(cols) * 2) as u64,
                ),
            )
        })
    }

    /// Splits rows into chunks that fit one binding; `buffers(name, row_start, rows)` makes
    /// each chunk's data and scale buffers.
    fn chunked(
        gpu: &Gpu,
        label: &str,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        buffers: impl Fn(&str, usize, usize) -> (wgpu::Buffer, wgpu::Buffer),
    ) -> Result<GpuMatrix> {
        let per_chunk = Self::rows_per_chunk(gpu, format, cols)?;
        let mut chunks = Vec::new();
        let mut row_start = 0;
        while row_start < rows {
            let n = per_chunk.min(rows - row_start);
            let name = format!("{label}[{row_start}..{}]", row_start + n);
            let (data, scales) = buffers(&name, row_start, n);
            chunks.push(MatrixChunk {
                row_start,
                rows: n,
                data,
                scales,
            });
            row_start += n;
        }
        Ok(GpuMatrix {
            format,
            rows,
            cols,
            chunks,
        })
    }

    /// The rows of `a` followed by the rows of `b` (same format and columns), without copying:
    /// one product then yields both outputs side by side (Gemma's gate and up projections).
    pub fn concat_rows(a: GpuMatrix, b: GpuMatrix) -> Result<GpuMatrix> {
        if a.format != b.format || a.cols != b.cols {
            return Err(Error::Shape {
                kernel: "matrix",
                message: format!(
                    "cannot stack {} [{}, {}] on {} [{}, {}]",
                    b.format, b.rows, b.cols, a.format, a.rows, a.cols
                ),
            });
        }
        let mut chunks = a.chunks;
        chunks.extend(b.chunks.into_iter().map(|mut c| {
            c.row_start += a.rows;
            c
        }));
        Ok(GpuMatrix {
            format: a.format,
            rows: a.rows + b.rows,
            cols: a.cols,
            chunks,
        })
    }

    /// Bytes of weights and scales on the GPU.
    pub fn bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| c.data.size() + c.scales.size())
            .sum()
    }
}
