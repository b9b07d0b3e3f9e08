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
    }
}

pub struct RmsNorm {
    kernel: Kernel,
}

impl RmsNorm {
    pub fn new(gpu: &Gpu) -> Result<RmsNorm> {
        let kernel = source::build(gpu, &source::RMS_NORM, "main", None, None, &[("WG", 256.0)])?;
        Ok(RmsNorm { kernel })
    }

    /// out [n, d] = rms_norm(x [n, d]) with weight w \[d\].
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        params: RmsNormParams,
        buffers: RmsNormBuffers,
    ) -> Result<Dispatch> {
        let (n, d) = (params.n as usize, params.d as usize);
        check_len("rms_norm", "x", buffers.x, n * d)?;
        check_len("rms_norm", "w", buffers.w, d)?;
        check_len("rms_norm", "out", buffers.out, n * d)?;
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
