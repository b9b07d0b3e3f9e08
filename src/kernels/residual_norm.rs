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
        /// \[n\] u32: whether each row of h holds a NaN or an infinity (written by the
        /// dispatches bound with `flag_rows` only)
        pub flags: ReadWrite,
    }
}

pub struct ResidualNorm {
    kernel: Kernel,
    /// The same writing `flags`.
    flagged: Kernel,
}

impl ResidualNorm {
    pub fn new(gpu: &Gpu) -> Result<ResidualNorm> {
        let build = |variant, flags: bool| {
            let constants = [
                // Invocations per row as rms_norm's: the sums then run in the same order.
                ("WG", super::rms_norm::invocations_per_row(gpu) as f64),
                ("FLAGS", f64::from(u8::from(flags))),
            ];
            source::build(
                gpu,
                &source::RESIDUAL_NORM,
                "main",
                None,
                variant,
                &constants,
            )
        };
        Ok(ResidualNorm {
            kernel: build(None, false)?,
            flagged: build(Some("flags"), true)?,
        })
    }

    /// x += rms_norm(o) with weight `post`; h = rms_norm(x) with weight `next` (rows of d).
    /// With `flag_rows` (a step's final norm) also flags\[row\] = whether row `row` of h
    /// holds a NaN or an infinity; without, `flags` is left as it is.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        params: RmsNormParams,
        buffers: ResidualNormBuffers,
        flag_rows: bool,
    ) -> Result<Dispatch> {
        let kernel = if flag_rows {
            &self.flagged
        } else {
            &self.kernel
        };
        let (n, d) = (params.n as usize, params.d as usize);
        check_len("residual_norm", "o", buffers.o, n * d)?;
        check_len("residual_norm", "post", buffers.post, d)?;
        check_len("residual_norm", "next", buffers.next, d)?;
        check_len("residual_norm", "x", buffers.x, n * d)?;
        check_len("residual_norm", "h", buffers.h, n * d)?;
        check_len("residual_norm", "flags", buffers.flags, n)?;
        let (gx, gy) = gpu.grid_2d(params.n);
        kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &buffers,
            (gx, gy, 1),
        )
    }
}
