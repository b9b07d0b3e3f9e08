//! residual_norm: a Gemma 2/3 block's post-norm added into the residual stream, and the next
//! block's pre-norm of the result, in one dispatch (shaders/residual_norm.wgsl).

use super::rms_norm::RmsNormParams;
use super::{Dispatch, bindings, check_len, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

bindings! {
    pub struct ResidualNormBuffers {
        /// [n, d]: the block's output before its post-norm
        pub o: Read,
        /// \[d\]: the post-norm's weights
        pub post: Read,
        /// \[d\]: the next norm's weights
        pub next: Read,
        /// [n, d]: the residual stream, updated
        pub x: ReadWrite,
        /// [n, d]: the next norm's output
        pub h: ReadWrite,
    }
}

pub struct ResidualNorm {
    kernel: Kernel,
}

impl ResidualNorm {
    pub fn new(gpu: &Gpu) -> Result<ResidualNorm> {
        let kernel = source::build(
            gpu,
            &source::RESIDUAL_NORM,
            "main",
            None,
            None,
            // Invocations per row as rms_norm's: the sums then run in the same order.
            &[("WG", super::rms_norm::invocations_per_row(gpu) as f64)],
        )?;
        Ok(ResidualNorm { kernel })
    }

    /// x += rms_norm(o) with weight `post`; h = rms_norm(x) with weight `next` (rows of d).
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        params: RmsNormParams,
        buffers: ResidualNormBuffers,
    ) -> Result<Dispatch> {
        let (n, d) = (params.n as usize, params.d as usize);
        check_len("residual_norm", "o", buffers.o, n * d)?;
        check_len("residual_norm", "post", buffers.post, d)?;
        check_len("residual_norm", "next", buffers.next, d)?;
        check_len("residual_norm", "x", buffers.x, n * d)?;
        check_len("residual_norm", "h", buffers.h, n * d)?;
        let (gx, gy) = gpu.grid_2d(params.n);
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &buffers,
            (gx, gy, 1),
        )
    }
}
