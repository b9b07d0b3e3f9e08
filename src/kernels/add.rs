//! add: the residual add acc += x (shaders/add.wgsl).

use super::{Dispatch, check_len, groups, params, source};
use crate::Result;
use crate::gpu::{Access, Gpu, Kernel};

params! {
    pub struct AddParams {
        pub n: u32,
    }
}

const WG: u32 = 256;

pub struct Add {
    kernel: Kernel,
}

impl Add {
    pub fn new(gpu: &Gpu) -> Result<Add> {
        let kernel = source::build(
            gpu,
            &source::ADD,
            "main",
            None,
            &[Access::Read, Access::ReadWrite],
            &[("WG", WG as f64)],
        )?;
        Ok(Add { kernel })
    }

    /// acc[..n] += x[..n].
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        n: usize,
        x: &wgpu::Buffer,
        acc: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_len("add", "x", x, n)?;
        check_len("add", "acc", acc, n)?;
        let (gx, gy) = gpu.grid_2d(groups(n, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&AddParams { n: n as u32 }),
            &[x, acc],
            (gx, gy, 1),
        )
    }
}
