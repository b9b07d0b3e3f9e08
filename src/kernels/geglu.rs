//! geglu: gelu_tanh(gate) * up (shaders/geglu.wgsl).

use super::{Dispatch, check_len, groups, params, source};
use crate::Result;
use crate::gpu::{Access, Gpu, Kernel};

params! {
    pub struct GegluParams {
        pub n: u32,
        pub d: u32,
    }
}

const WG: u32 = 256;

pub struct Geglu {
    kernel: Kernel,
}

impl Geglu {
    pub fn new(gpu: &Gpu) -> Result<Geglu> {
        let kernel = source::build(
            gpu,
            &source::GEGLU,
            "main",
            None,
            &[Access::Read, Access::ReadWrite],
            &[("WG", WG as f64)],
        )?;
        Ok(Geglu { kernel })
    }

    /// out [n, d] from gate_up [n, 2d] (each row: gate, then up).
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        n: usize,
        d: usize,
        gate_up: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_len("geglu", "gate_up", gate_up, n * 2 * d)?;
        check_len("geglu", "out", out, n * d)?;
        let params = GegluParams {
            n: n as u32,
            d: d as u32,
        };
        let (gx, gy) = gpu.grid_2d(groups(n * d, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &[gate_up, out],
            (gx, gy, 1),
        )
    }
}
