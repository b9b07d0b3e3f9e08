//! copy: a plain buffer copy, the bandwidth yardstick for benchmarks (shaders/copy.wgsl).

use super::{Dispatch, bindings, check_len, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct CopyParams {
        /// vec4s to copy.
        pub n: u32,
    }
}

bindings! {
    pub struct CopyBuffers {
        /// \[n\]
        pub src: Read,
        /// \[n\]
        pub dst: ReadWrite,
    }
}

const WG: u32 = 256;

pub struct Copy {
    kernel: Kernel,
    contiguous: bool,
}

impl Copy {
    /// `contiguous`: None picks the adapter's preferred access pattern (contiguous runs on
    /// CPU adapters, interleaved on GPUs).
    pub fn new(gpu: &Gpu, contiguous: Option<bool>) -> Result<Copy> {
        let contiguous = contiguous.unwrap_or(gpu.caps.cpu_like);
        let kernel = source::build(
            gpu,
            &source::COPY,
            "main",
            None,
            contiguous.then_some("contiguous"),
            &[("WG", WG as f64), ("CONTIGUOUS", contiguous as u8 as f64)],
        )?;
        Ok(Copy { kernel, contiguous })
    }

    pub fn contiguous(&self) -> bool {
        self.contiguous
    }

    /// dst[..n] = src[..n], n a multiple of 4 floats.
    pub fn bind(&self, gpu: &Gpu, label: &str, n: usize, buffers: CopyBuffers) -> Result<Dispatch> {
        check_len("copy", "src", buffers.src, n)?;
        check_len("copy", "dst", buffers.dst, n)?;
        let workgroups = if gpu.caps.cpu_like {
            (std::thread::available_parallelism().map_or(2, |n| n.get()) * 4) as u32
        } else {
            1024
        };
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&CopyParams { n: (n / 4) as u32 }),
            &buffers,
            (workgroups, 1, 1),
        )
    }
}
