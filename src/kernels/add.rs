//! add: the residual add acc += x (shaders/add.wgsl).

use super::{Dispatch, bindings, check_len, groups, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct AddParams {
        pub n: u32,
    }
}

bindings! {
    pub struct AddBuffers {
        /// \[n\]
        pub x: Read,
        /// \[n\], x added in place
        pub acc: ReadWrite,
    }
}

const WG: u32 = 256;

pub struct Add {
    kernel: Kernel,
}

impl Add {
    pub fn new(gpu: &Gpu) -> Result<Add> {
        let kernel = source::build(gpu, &source::ADD, "main", None, None, &[("WG", WG as f64)])?;
        Ok(Add { kernel })
    }

    /// acc[..n] += x[..n].
    pub fn bind(&self, gpu: &Gpu, label: &str, n: usize, buffers: AddBuffers) -> Result<Dispatch> {
        check_len("add", "x", buffers.x, n)?;
        check_len("add", "acc", buffers.acc, n)?;
        let (gx, gy) = gpu.grid_2d(groups(n, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&AddParams { n: n as u32 }),
            &buffers,
            (gx, gy, 1),
        )
    }
}
