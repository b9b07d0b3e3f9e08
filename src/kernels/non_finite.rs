//! non_finite: whether any of n values is NaN or infinite, as a u32 flag on the GPU
//! (shaders/non_finite.wgsl): the host reads 4 bytes instead of the values.

use super::{Dispatch, bindings, check_len, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct NonFiniteParams {
        pub n: u32,
    }
}

bindings! {
    pub struct NonFiniteBuffers {
        /// \[n\]
        pub x: Read,
        /// \[1\] u32: 1 if any value of x is NaN or infinite, else 0
        pub out: ReadWrite,
    }
}

const WG: u32 = 256;

pub struct NonFinite {
    kernel: Kernel,
}

impl NonFinite {
    pub fn new(gpu: &Gpu) -> Result<NonFinite> {
        let constants = [("WG", WG as f64)];
        let kernel = source::build(gpu, &source::NON_FINITE, "main", None, None, &constants)?;
        Ok(NonFinite { kernel })
    }

    /// out\[0\] = whether any of x[..n] is not finite.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        n: usize,
        buffers: NonFiniteBuffers,
    ) -> Result<Dispatch> {
        check_len("non_finite", "x", buffers.x, n)?;
        check_len("non_finite", "out", buffers.out, 1)?;
        let params = NonFiniteParams { n: n as u32 };
        let grid = (1, 1, 1);
        (self.kernel).bind(gpu, label, bytemuck::bytes_of(&params), &buffers, grid)
    }
}
