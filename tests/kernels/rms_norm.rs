//! rms_norm, and residual_norm (a post-norm into the residual stream, then the next norm).

use crate::common::*;
use gemma_wgpu::kernels::{ResidualNorm, RmsNorm};

/// Sizes around the workgroup (256) and Gemma 2's hidden sizes.
const DIMS: &[usize] = &[1, 255, 256, 257, 1000, 2304, 3584, 4608];

#[test]
fn rms_norm_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = RmsNorm::new(gpu).unwrap();
        for (i, &d) in DIMS.iter().enumerate() {
            for (n, w_offset) in [(1usize, 1.0f32), (5, 0.0)] {
                let seed = 10 * i as u64 + n as u64;
                rms_norm(gpu, &kernel, (n, d, w_offset), seed)
                    .run_and_check(gpu)
                    .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}

#[test]
fn residual_norm_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = ResidualNorm::new(gpu).unwrap();
        for (i, &d) in DIMS.iter().enumerate() {
            for (n, w_offset) in [(1usize, 1.0f32), (5, 0.0)] {
                residual_norm(gpu, &kernel, (n, d, w_offset), 10 * i as u64 + n as u64)
                    .run_and_check(gpu)
                    .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}
