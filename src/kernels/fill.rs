//! fill: pseudo-random words on the GPU, for synthetic models (shaders/fill.wgsl).

use super::{Dispatch, bindings, groups, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct FillParams {
        pub n: u32,
        pub seed: u32,
        /// Bits taken from the hash.
        pub mask: u32,
        /// Bits set in every word.
        pub bits: u32,
    }
}

bindings! {
    pub struct FillBuffers {
        /// \[n\] words, all of the buffer
        pub out: ReadWrite,
    }
}

const WG: u32 = 256;

/// The word the shader writes at index `i` (its CPU reference).
pub fn fill_word(p: &FillParams, i: u32) -> u32 {
    fn hash(x: u32) -> u32 {
        let h = x.wrapping_mul(747796405).wrapping_add(2891336453);
        let h = ((h >> ((h >> 28) + 4)) ^ h).wrapping_mul(277803737);
        (h >> 22) ^ h
    }
    (hash(i ^ hash(p.seed)) & p.mask) | p.bits
}

pub struct Fill {
    kernel: Kernel,
}

impl Fill {
    pub fn new(gpu: &Gpu) -> Result<Fill> {
        let kernel = source::build(gpu, &source::FILL, "main", None, None, &[("WG", WG as f64)])?;
        Ok(Fill { kernel })
    }

    /// Fills all of `out` (its size in words).
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        seed: u32,
        mask: u32,
        bits: u32,
        buffers: FillBuffers,
    ) -> Result<Dispatch> {
        let n = (buffers.out.size() / 4) as u32;
        let (gx, gy) = gpu.grid_2d(groups(n as usize, WG));
        let params = FillParams {
            n,
            seed,
            mask,
            bits,
        };
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &buffers,
            (gx, gy, 1),
        )
    }
}
