//! Weight matrices on the GPU, split by rows into chunks that fit one storage binding.

use crate::formats::{HostMatrix, Layout, WeightFormat};
use crate::gpu::Gpu;
use crate::kernels::source::WeightsSource;
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
        /// [n, rows / 32 * 24] words: y quantized as kernels::QuantizeQ8 writes it (written by
        /// matvec's GeGLU bound with `MatrixArgs::yq` only; any buffer otherwise)
        pub yq: ReadWrite,
    }
}

/// What one matrix product binds: y [n, w.rows] = x [n, w.cols] W^T.
pub struct MatrixArgs<'a> {
    pub w: &'a GpuMatrix,
    /// [n, w.cols]
    pub x: &'a wgpu::Buffer,
    /// [n, y_stride]: the product fills columns [y_offset, y_offset + w.rows) of each row
    pub y: &'a wgpu::Buffer,
    pub y_offset: usize,
    pub y_stride: usize,
    /// Vectors (matvec) or token rows (matmul).
    pub n: usize,
    /// x already quantized to int8 blocks of 32 ([n, w.cols / 32 * 24] words, as
    /// kernels::QuantizeQ8 writes them), by the kernel that wrote x: read instead of x by
    /// the products that quantize x before they start ([`crate::kernels::Matvec::quantizes_x`]),
    /// ignored by the others.
    pub xq: Option<&'a wgpu::Buffer>,
    /// Where to write y quantized to int8 blocks of 32 as well (as kernels::QuantizeQ8 would),
    /// for a next product that reads x so: only matvec's GeGLU on the CPU layout's int8 path
    /// writes one ([`crate::kernels::Matvec::quantizes_geglu`]); the others refuse it.
    pub yq: Option<&'a wgpu::Buffer>,
}

impl<'a> MatrixArgs<'a> {
    /// y [n, w.rows] = x [n, w.cols] W^T, y filled whole.
    pub fn new(w: &'a GpuMatrix, x: &'a wgpu::Buffer, y: &'a wgpu::Buffer, n: usize) -> Self {
        MatrixArgs {
            w,
            x,
            y,
            y_offset: 0,
            y_stride: w.rows,
            n,
            xq: None,
            yq: None,
        }
    }
}

/// Rows [row_start, row_start + rows) of a matrix, in their own buffers.
pub struct MatrixChunk {
    pub row_start: usize,
    pub rows: usize,
    pub data: wgpu::Buffer,
    pub scales: wgpu::Buffer,
}

/// Bytes a weight binding holds at least: the wide readings bind a matrix's scales as 32-byte
/// words (shaders/common/weights_data_wide.wgsl), even where there are none (float formats).
const MIN_BINDING_BYTES: u64 = 32;

/// Rows per tile of a matrix stored in row tiles (`TILE_ROWS` of
/// shaders/common/weights_tiles.wgsl).
pub const TILE_ROWS: usize = 32;

/// Whether the matrix products (matvec, matmul) multiply `format` with x quantized to int8
/// blocks of 32 (reference::quantize_q8) rather than x itself, in the GPU layout: quantized
/// weights where [`crate::gpu::Caps::int8_products`] says so. See [`int8_decode_activations`]
/// for matvec's CPU layout.
pub fn int8_activations(gpu: &Gpu, format: WeightFormat) -> bool {
    !gpu.caps.cpu_like && gpu.caps.int8_products && format.unit().layout != Layout::Elements
}

/// Whether matvec multiplies `format` with int8 activations: the GPU layout as
/// [`int8_activations`]; the CPU layout where [`crate::gpu::Caps::int8_products`] says so,
/// x quantized before the product (by kernels::QuantizeQ8, or by the residual_norm that
/// wrote x), for the formats with their own `w_pdot32` (4-bit codes, two products per 32-bit
/// multiply: Gemma 2 2B Q4_0 decodes 1.2-1.6x faster than with f32 activations on lavapipe,
/// Mesa 25.0.7, in the same runs; README, Benchmarks), or every quantized format with
/// [`crate::gpu::Caps::int8_all_formats`]. The CPU layout's matmul (prefill) keeps f32.
pub fn int8_decode_activations(gpu: &Gpu, format: WeightFormat) -> bool {
    if !gpu.caps.cpu_like {
        return int8_activations(gpu, format);
    }
    let unit = format.unit();
    gpu.caps.int8_products
        && unit.layout != Layout::Elements
        && (unit.own_pdot32 || gpu.caps.int8_all_formats)
}

/// Whether some decode product on this device reads x quantized by a pass before it
/// (matvec's CPU layout with int8 activations: kernels::Matvec::quantizes_x), so that the
/// kernels that write such an x (attention, the embedding's norm) are built to write it
/// quantized too. Q4_0 takes int8 wherever any format does.
pub fn decode_x_quantized_apart(gpu: &Gpu) -> bool {
    gpu.caps.cpu_like && int8_decode_activations(gpu, WeightFormat::Q4_0)
}

/// Whether this device stores `format`'s matrices in row tiles (see
/// shaders/common/weights_tiles.wgsl and [`WeightsSource::for_device`]). Elsewhere rows follow
/// one another.
pub fn tiled(gpu: &Gpu, format: WeightFormat) -> bool {
    WeightsSource::for_device(gpu, format).tiled
}

/// `rows` row-major rows of `bytes`, each cut into `words` equal words, in row tiles: word j
/// of row r at word ((r / TILE_ROWS) words + j) TILE_ROWS + r % TILE_ROWS, the last tile
/// padded with zero rows (the layout weights_tiles.wgsl's `word_at` reads). Rows must be
/// whole words: the formats that tile have rows of whole 16- or 32-byte words, and scales of
/// a whole number of bytes per word.
pub fn tile(bytes: &[u8], rows: usize, words: usize) -> Vec<u8> {
    let row_bytes = bytes.len() / rows.max(1);
    let word = row_bytes / words.max(1);
    debug_assert_eq!((row_bytes * rows, word * words), (bytes.len(), row_bytes));
    let mut out = vec![0u8; rows.next_multiple_of(TILE_ROWS) * row_bytes];
    for (r, row) in bytes.chunks_exact(row_bytes.max(1)).enumerate() {
        for (j, w) in row.chunks_exact(word.max(1)).enumerate() {
            let at = ((r / TILE_ROWS) * words + j) * TILE_ROWS + r % TILE_ROWS;
            out[at * word..][..word].copy_from_slice(w);
        }
    }
    out
}

/// A [rows, cols] weight matrix in its GPU layout. Matrices larger than the adapter's storage
/// binding limit (Gemma 2's tied embedding is 1.18 GB in bf16) are split transparently; the
/// kernels dispatch once per chunk.
pub struct GpuMatrix {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub chunks: Vec<MatrixChunk>,
    /// Each chunk's rows in row tiles (see [`tile`]), else one after another.
    pub tiled: bool,
}

impl GpuMatrix {
    /// Rows per chunk for this device (whole tiles where it tiles them).
    pub fn rows_per_chunk(gpu: &Gpu, format: WeightFormat, cols: usize) -> Result<usize> {
        let row_bytes = format.data_bytes_per_row(cols) as u64;
        let step = if tiled(gpu, format) { TILE_ROWS } else { 1 } as u64;
        let rows = gpu.caps.max_binding_size / row_bytes / step * step;
        if rows == 0 {
            return Err(Error::TooLarge {
                what: format!("{step} {format} row(s) of {cols} weights"),
                needed: step * row_bytes,
                allowed: gpu.caps.max_binding_size,
            });
        }
        Ok(rows as usize)
    }

    /// The rows a chunk of `rows` rows takes on the GPU: whole tiles where they are tiled.
    fn stored_rows(tiled: bool, rows: usize) -> usize {
        match tiled {
            true => rows.next_multiple_of(TILE_ROWS),
            false => rows,
        }
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
        let source = WeightsSource::for_device(gpu, format);
        let (tiled, words) = (source.tiled, row_bytes / source.word_bytes());
        let init = |name: &str, part: &[u8], n: usize| match (tiled, part.is_empty()) {
            (_, true) => gpu.storage_zeroed(name, MIN_BINDING_BYTES),
            (true, false) => gpu.storage_init(name, &tile(part, n, words)),
            (false, false) => gpu.storage_init(name, part),
        };
        Self::chunked(gpu, label, format, rows, cols, |name, start, n| {
            (
                init(name, &data[start * row_bytes..][..n * row_bytes], n),
                init(
                    &format!("{name}.scales"),
                    &scales[start * row_scale_bytes..][..n * row_scale_bytes],
                    n,
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
        let tiled = tiled(gpu, format);
        Self::chunked(gpu, label, format, rows, cols, |name, _, n| {
            let n = Self::stored_rows(tiled, n);
            (
                gpu.storage_zeroed(name, (n * format.data_bytes_per_row(cols)) as u64),
                gpu.storage_zeroed(
                    &format!("{name}.scales"),
                    ((n * format.scales_per_row(cols) * 2) as u64).max(MIN_BINDING_BYTES),
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
            tiled: tiled(gpu, format),
        })
    }

    /// The rows of `parts`, one after another (same format and columns): one product then
    /// yields all their outputs side by side (Gemma's q, k and v, or gate and up). Neighbouring
    /// chunks are copied into one where the binding limit allows, so such a product is one
    /// dispatch rather than one per part.
    pub fn concat_rows(gpu: &Gpu, parts: Vec<GpuMatrix>) -> Result<GpuMatrix> {
        let first = parts.first().ok_or_else(|| Error::Shape {
            kernel: "matrix",
            message: "nothing to stack".into(),
        })?;
        let (format, cols, tiled) = (first.format, first.cols, first.tiled);
        let mut rows = 0;
        let mut chunks: Vec<MatrixChunk> = Vec::new();
        for p in parts {
            if p.format != format || p.cols != cols {
                return Err(Error::Shape {
                    kernel: "matrix",
                    message: format!(
                        "cannot stack {} [{}, {}] on {format} [{rows}, {cols}]",
                        p.format, p.rows, p.cols
                    ),
                });
            }
            for mut c in p.chunks {
                c.row_start += rows;
                match chunks.pop() {
                    Some(last) => chunks.extend(Self::merged(gpu, (format, tiled), cols, last, c)),
                    None => chunks.push(c),
                }
            }
            rows += p.rows;
        }
        Ok(GpuMatrix {
            format,
            rows,
            cols,
            chunks,
            tiled,
        })
    }

    /// `a` and the chunk `b` that follows it as one chunk where both fit one binding and their
    /// bytes can be copied end to end (multiples of 4, and whole tiles of `a` where tiled),
    /// else both as they are.
    fn merged(
        gpu: &Gpu,
        (format, tiled): (WeightFormat, bool),
        cols: usize,
        a: MatrixChunk,
        b: MatrixChunk,
    ) -> Vec<MatrixChunk> {
        let stored = |c: &MatrixChunk| Self::stored_rows(tiled, c.rows);
        let data = |c: &MatrixChunk| (stored(c) * format.data_bytes_per_row(cols)) as u64;
        let scales = |c: &MatrixChunk| (stored(c) * format.scales_per_row(cols) * 2) as u64;
        let limit = gpu.caps.max_binding_size;
        let fits = data(&a) + data(&b) <= limit && scales(&a) + scales(&b) <= limit;
        if !fits || data(&a) % 4 != 0 || scales(&a) % 4 != 0 || stored(&a) != a.rows {
            return vec![a, b];
        }
        let rows = a.rows + b.rows;
        let name = format!("stacked[{}..{}]", a.row_start, a.row_start + rows);
        let merged = MatrixChunk {
            row_start: a.row_start,
            rows,
            data: gpu.storage_zeroed(&name, data(&a) + data(&b)),
            scales: gpu.storage_zeroed(
                &format!("{name}.scales"),
                (scales(&a) + scales(&b)).max(MIN_BINDING_BYTES),
            ),
        };
        let mut rec = gpu.recorder(&name);
        // Whole buffers (each at least 4 bytes and padded to 4) are copied; the byte counts
        // above are exact, so b lands right after a's last row.
        let copy = |rec: &mut crate::gpu::Recorder, src: &wgpu::Buffer, dst: &wgpu::Buffer, at| {
            let bytes = (src.size()).min(dst.size() - at);
            rec.copy(src, 0, dst, at, bytes);
        };
        copy(&mut rec, &a.data, &merged.data, 0);
        copy(&mut rec, &b.data, &merged.data, data(&a));
        if scales(&a) + scales(&b) > 0 {
            copy(&mut rec, &a.scales, &merged.scales, 0);
            copy(&mut rec, &b.scales, &merged.scales, scales(&a));
        }
        rec.submit();
        vec![merged]
    }

    /// Bytes of weights and scales on the GPU.
    pub fn bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| c.data.size() + c.scales.size())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Word j of row r lands at ((r / 32) words + j) 32 + r % 32; the last tile's missing
    /// rows are zeros.
    #[test]
    fn tile_places_each_word_by_its_row_tile() {
        let (rows, words, word) = (70usize, 3usize, 2usize);
        // Distinct bytes, none zero.
        let src: Vec<u8> = (0..rows * words * word)
            .map(|i| (i % 251) as u8 + 1)
            .collect();
        let out = tile(&src, rows, words);
        assert_eq!(out.len(), 96 * words * word);
        for r in 0..96 {
            for j in 0..words {
                let at = ((r / 32) * words + j) * 32 + r % 32;
                let got = &out[at * word..][..word];
                match r < rows {
                    true => assert_eq!(got, &src[(r * words + j) * word..][..word], "{r} {j}"),
                    false => assert_eq!(got, &[0, 0], "padding row {r}"),
                }
            }
        }
    }
}
