//! RoPE's (cos, sin) tables on the GPU, as rope_store (shaders/rope_store.wgsl) reads them.

use crate::gpu::Gpu;

/// The (cos, sin) table of one rope base, on the GPU: [max_pos, head_dim / 2].
pub struct RopeTable {
    pub buffer: wgpu::Buffer,
    pub head_dim: usize,
    pub max_pos: usize,
}

/// (cos, sin) of pos * inv_freq\[i\] for pos < max_pos and i < head_dim / 2, laid out
/// [max_pos, head_dim / 2]. As transformers (`_compute_default_rope_parameters` and
/// `_compute_linear_scaling_rope_parameters` in modeling_rope_utils.py): inv_freq =
/// 1 / theta^(2i / head_dim), divided by `factor` for linear scaling (1 for none), and the
/// angle pos * inv_freq rounded to f32; cos and sin are then taken exactly (f64) and rounded.
pub fn rope_table(theta: f32, factor: f32, head_dim: usize, max_pos: usize) -> Vec<[f32; 2]> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32) / factor)
        .collect();
    let mut table = Vec::with_capacity(max_pos * half);
    for pos in 0..max_pos {
        for f in &inv_freq {
            let angle = (pos as f32 * f) as f64;
            table.push([angle.cos() as f32, angle.sin() as f32]);
        }
    }
    table
}

impl RopeTable {
    /// The table of base `theta` with linear scaling `factor` (1 for none).
    pub fn new(gpu: &Gpu, theta: f32, factor: f32, head_dim: usize, max_pos: usize) -> RopeTable {
        let table = rope_table(theta, factor, head_dim, max_pos);
        RopeTable {
            buffer: gpu.storage_init("rope_table", bytemuck::cast_slice(&table)),
            head_dim,
            max_pos,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The table the GPU reads is the specification's, bit for bit (tests/kernels/rope.rs
    /// checks the specification against transformers' formula).
    #[test]
    fn the_table_is_the_reference_table() {
        for (theta, factor, head_dim, max_pos) in [
            (10_000.0, 1.0, 256, 40),
            (1_000_000.0, 8.0, 128, 33),
            (10_000.0, 1.0, 4, 1),
        ] {
            assert_eq!(
                super::rope_table(theta, factor, head_dim, max_pos),
                crate::reference::rope_table(theta, factor, head_dim, max_pos)
            );
        }
    }
}
