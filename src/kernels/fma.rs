//! fma: chains of fused multiply-adds, the arithmetic yardstick for benchmarks (shaders/fma.wgsl):
//! the adapter's f32 peak as its kernels can reach it, measured in the same run as them.

use super::{Dispatch, bindings, check_len, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct FmaParams {
        /// Steps of every chain.
        pub iters: u32,
        pub m: f32,
        pub c: f32,
    }
}

bindings! {
    pub struct FmaBuffers {
        /// \[invocations\]
        pub out: ReadWrite,
    }
}

const WG: u32 = 64;
/// Independent vec4 chains per invocation (the shader's accumulators).
pub const CHAINS: usize = 16;
/// Steps per loop iteration (the shader's UNROLL): `iters` is a multiple of it.
pub const STEPS_PER_ITERATION: u32 = 4;

pub struct Fma {
    kernel: Kernel,
}

impl Fma {
    pub fn new(gpu: &Gpu) -> Result<Fma> {
        let kernel = source::build(gpu, &source::FMA, "main", None, None, &[("WG", WG as f64)])?;
        Ok(Fma { kernel })
    }

    /// `out[i]` = the sum of invocation i's chains after `iters` steps of a = fma(a, m, c),
    /// for `invocations` (a multiple of 64) invocations; `iters` is a multiple of
    /// [`STEPS_PER_ITERATION`].
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        invocations: usize,
        (iters, m, c): (u32, f32, f32),
        buffers: FmaBuffers,
    ) -> Result<Dispatch> {
        check_len("fma", "out", buffers.out, invocations)?;
        if !iters.is_multiple_of(STEPS_PER_ITERATION) {
            return Err(crate::Error::Shape {
                kernel: "fma",
                message: format!(
                    "{label}: {iters} steps are not a multiple of {STEPS_PER_ITERATION}"
                ),
            });
        }
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&FmaParams { iters, m, c }),
            &buffers,
            (super::groups(invocations, WG), 1, 1),
        )
    }

    /// Floating-point operations of one dispatch (a fused multiply-add counts two).
    pub fn flops(invocations: usize, iters: u32) -> f64 {
        2.0 * 4.0 * CHAINS as f64 * iters as f64 * invocations as f64
    }
}
