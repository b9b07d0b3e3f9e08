//! quantize_q8: x in int8 blocks of 32 for matvec's CPU layout (shaders/quantize_q8.wgsl).

use super::{Dispatch, bindings, check_len, groups, params, source};
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct QuantizeQ8Params {
        pub blocks: u32,
    }
}

bindings! {
    pub struct QuantizeQ8Buffers {
        /// \[blocks * 32\] f32
        pub x: Read,
        /// \[blocks * WORDS_PER_BLOCK\] words
        pub xq: ReadWrite,
    }
}

/// Values a block quantizes together (reference::Q8_BLOCK).
pub const BLOCK: usize = 32;
/// 4-byte words a quantized block takes (its 16 pair words, scale, codes' sum, padding).
pub const WORDS_PER_BLOCK: usize = 24;

/// Checks a buffer `name` of `kernel` that is to hold `values` values in rows of `row`,
/// quantized as this kernel writes them: rows of whole blocks, and room for their words.
pub(crate) fn check_quantized(
    kernel: &'static str,
    name: &str,
    buffer: &wgpu::Buffer,
    (values, row): (usize, usize),
) -> Result<()> {
    if !row.is_multiple_of(BLOCK) {
        return Err(Error::Shape {
            kernel,
            message: format!("{name}: rows of {row} do not split into blocks of {BLOCK}"),
        });
    }
    check_len(kernel, name, buffer, values / BLOCK * WORDS_PER_BLOCK)
}

const WG: u32 = 64;

pub struct QuantizeQ8 {
    kernel: Kernel,
}

impl QuantizeQ8 {
    pub fn new(gpu: &Gpu) -> Result<QuantizeQ8> {
        let kernel = source::build(
            gpu,
            &source::QUANTIZE_Q8,
            "main",
            None,
            None,
            &[("WG", WG as f64)],
        )?;
        Ok(QuantizeQ8 { kernel })
    }

    /// xq = the blocks of x[..len] quantized (`len` a multiple of [`BLOCK`]).
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        len: usize,
        buffers: QuantizeQ8Buffers,
    ) -> Result<Dispatch> {
        if !len.is_multiple_of(BLOCK) {
            return Err(Error::Shape {
                kernel: "quantize_q8",
                message: format!("{label}: {len} values are not whole blocks of {BLOCK}"),
            });
        }
        let blocks = len / BLOCK;
        check_len("quantize_q8", "x", buffers.x, len)?;
        check_len("quantize_q8", "xq", buffers.xq, blocks * WORDS_PER_BLOCK)?;
        let (gx, gy) = gpu.grid_2d(groups(blocks, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&QuantizeQ8Params {
                blocks: blocks as u32,
            }),
            &buffers,
            (gx, gy, 1),
        )
    }
}
