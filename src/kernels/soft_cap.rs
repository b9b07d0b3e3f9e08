//! soft_cap: x = cap * tanh(x / cap) in place, the final logit soft-cap (shaders/soft_cap.wgsl).

use super::{Dispatch, bindings, check_len, groups, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct SoftCapParams {
        pub n: u32,
        pub cap: f32,
    }
}

bindings! {
    pub struct SoftCapBuffers {
        /// \[n\], capped in place
        pub x: ReadWrite,
    }
}

const WG: u32 = 256;

pub struct SoftCap {
    kernel: Kernel,
}

impl SoftCap {
    pub fn new(gpu: &Gpu) -> Result<SoftCap> {
        let kernel = source::build(
            gpu,
            &source::SOFT_CAP,
            "main",
            None,
            None,
            &[("WG", WG as f64)],
        )?;
        Ok(SoftCap { kernel })
    }

    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        n: usize,
        cap: f32,
        buffers: SoftCapBuffers,
    ) -> Result<Dispatch> {
        check_len("soft_cap", "x", buffers.x, n)?;
        let (gx, gy) = gpu.grid_2d(groups(n, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&SoftCapParams { n: n as u32, cap }),
            &buffers,
            (gx, gy, 1),
        )
    }
}
