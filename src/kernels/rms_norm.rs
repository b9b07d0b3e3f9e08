//! rms_norm: Gemma's RMSNorm (shaders/rms_norm.wgsl).

use super::{Dispatch, bindings, check_len, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct RmsNormParams {
        pub n: u32,
        pub d: u32,
        pub eps: f32,
        /// 1 for zero-centred (Hugging Face) weights, 0 when the file already added it.
        pub w_offset: f32,
    }
}

bindings! {
    pub struct RmsNormBuffers {
        /// [n, d]
        pub x: Read,
        /// \[d\]
        pub w: Read,
        /// [n, d]
        pub out: ReadWrite,
        /// \[n\] u32: whether each row of `out` holds a NaN or an infinity (written by
        /// the dispatches bound with `flag_rows` only)
        pub flags: ReadWrite,
    }
}

/// Invocations per row: 256 on GPUs; 16 on CPU adapters, where each barrier of a workgroup
/// costs a switch through all its invocations (Gemma 3 270M prefill on lavapipe,
/// residual_norm of 64 rows of 640: 1.4 ms per dispatch at 256). residual_norm uses the same,
/// so that its sums run in this kernel's order.
pub fn invocations_per_row(gpu: &Gpu) -> u32 {
    if gpu.caps.cpu_like { 16 } else { 256 }
}

pub struct RmsNorm {
    kernel: Kernel,
    /// The same writing `flags`.
    flagged: Kernel,
}

impl RmsNorm {
    pub fn new(gpu: &Gpu) -> Result<RmsNorm> {
        let build = |variant, flags: bool| {
            let constants = [
                ("WG", invocations_per_row(gpu) as f64),
                ("FLAGS", f64::from(u8::from(flags))),
            ];
            source::build(gpu, &source::RMS_NORM, "main", None, variant, &constants)
        };
        Ok(RmsNorm {
            kernel: build(None, false)?,
            flagged: build(Some("flags"), true)?,
        })
    }

    /// out [n, d] = rms_norm(x [n, d]) with weight w \[d\].
    /// With `flag_rows` (a step's final norm) also flags\[row\] = whether row `row` of out
    /// holds a NaN or an infinity; without, `flags` is left as it is.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        params: RmsNormParams,
        buffers: RmsNormBuffers,
        flag_rows: bool,
    ) -> Result<Dispatch> {
        let kernel = if flag_rows {
            &self.flagged
        } else {
            &self.kernel
        };
        let (n, d) = (params.n as usize, params.d as usize);
        check_len("rms_norm", "x", buffers.x, n * d)?;
        check_len("rms_norm", "w", buffers.w, d)?;
        check_len("rms_norm", "out", buffers.out, n * d)?;
        check_len("rms_norm", "flags", buffers.flags, n)?;
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
