//! soft_cap: x = cap * tanh(x / cap) in place, the final logit soft-cap (shaders/soft_cap.wgsl).

use super::{Dispatch, check_len, groups, params, source};
use crate::Result;
use crate::gpu::{Access, Gpu, Kernel};

params! {
    pub struct SoftCapParams {
        pub n: u32,
        pub cap: f32,
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
            &[Access::ReadWrite],
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
        x: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_len("soft_cap", "x", x, n)?;
        let (gx, gy) = gpu.grid_2d(groups(n, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&SoftCapParams { n: n as u32, cap }),
            &[x],
            (gx, gy, 1),
        )
    }
}
