//! geglu: gelu_tanh(gate) * up (shaders/geglu.wgsl).

use super::{Dispatch, bindings, check_len, groups, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct GegluParams {
        pub n: u32,
        pub d: u32,
    }
}

bindings! {
    pub struct GegluBuffers {
        /// [n, 2d]: each row the gate, then the up projection
        pub gate_up: Read,
        /// [n, d]
        pub out: ReadWrite,
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
            None,
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
        buffers: GegluBuffers,
    ) -> Result<Dispatch> {
        check_len("geglu", "gate_up", buffers.gate_up, n * 2 * d)?;
        check_len("geglu", "out", buffers.out, n * d)?;
        let params = GegluParams {
            n: n as u32,
            d: d as u32,
        };
        let (gx, gy) = gpu.grid_2d(groups(n * d, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &buffers,
            (gx, gy, 1),
        )
    }
}
