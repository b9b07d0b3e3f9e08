//! rope: rotate-half rotary position embedding, in place (shaders/rope.wgsl).

use super::{Dispatch, bindings, check_len, groups, params, source};
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result, reference};

params! {
    pub struct RopeParams {
        pub n: u32,
        pub heads: u32,
        pub head_dim: u32,
        /// Rows of the (cos, sin) table.
        pub max_pos: u32,
    }
}

bindings! {
    pub struct RopeBuffers {
        /// \[n\] u32: token t's position
        pub positions: Read,
        /// [max_pos, head_dim / 2] (cos, sin) pairs: a [`RopeTable`]'s buffer
        pub table: Read,
        /// [n, heads, head_dim], rotated in place
        pub x: ReadWrite,
    }
}

const WG: u32 = 256;

pub struct Rope {
    kernel: Kernel,
}

/// The (cos, sin) table of one rope base, on the GPU: [max_pos, head_dim / 2].
pub struct RopeTable {
    pub buffer: wgpu::Buffer,
    pub head_dim: usize,
    pub max_pos: usize,
}

impl RopeTable {
    /// The table of base `theta` with linear scaling `factor` (1 for none).
    pub fn new(gpu: &Gpu, theta: f32, factor: f32, head_dim: usize, max_pos: usize) -> RopeTable {
        let table = reference::rope_table(theta, factor, head_dim, max_pos);
        RopeTable {
            buffer: gpu.storage_init("rope_table", bytemuck::cast_slice(&table)),
            head_dim,
            max_pos,
        }
    }

    /// The parameters of rotating `n` tokens of `heads` heads with this table.
    pub fn params(&self, n: usize, heads: usize) -> RopeParams {
        RopeParams {
            n: n as u32,
            heads: heads as u32,
            head_dim: self.head_dim as u32,
            max_pos: self.max_pos as u32,
        }
    }
}

impl Rope {
    pub fn new(gpu: &Gpu) -> Result<Rope> {
        let kernel = source::build(gpu, &source::ROPE, "main", None, None, &[("WG", WG as f64)])?;
        Ok(Rope { kernel })
    }

    /// Rotates x [n, heads, head_dim] in place; token t at positions\[t\]. `params` comes
    /// from [`RopeTable::params`] of the table bound.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        params: RopeParams,
        buffers: RopeBuffers,
    ) -> Result<Dispatch> {
        let (n, heads, hd) = (
            params.n as usize,
            params.heads as usize,
            params.head_dim as usize,
        );
        if !hd.is_multiple_of(2) {
            return Err(Error::Shape {
                kernel: "rope",
                message: format!("head_dim {hd} must be even"),
            });
        }
        check_len("rope", "positions", buffers.positions, n)?;
        check_len("rope", "table", buffers.table, params.max_pos as usize * hd)?;
        check_len("rope", "x", buffers.x, n * heads * hd)?;
        let (gx, gy) = gpu.grid_2d(groups(n * heads * hd / 2, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &buffers,
            (gx, gy, 1),
        )
    }
}
