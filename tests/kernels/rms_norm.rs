//! rms_norm, plain and added into the residual stream.

use crate::common::*;
use gemma_wgpu::kernels::RmsNorm;

/// Sizes around the workgroup (256) and Gemma 2's hidden sizes.
const DIMS: &[usize] = &[1, 255, 256, 257, 1000, 2304, 3584, 4608];

#[test]
fn rms_norm_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let plain = RmsNorm::new(gpu, false).unwrap();
        let fused = RmsNorm::new(gpu, true).unwrap();
        for (i, &d) in DIMS.iter().enumerate() {
            for (n, w_offset) in [(1usize, 1.0f32), (5, 0.0)] {
                let seed = 10 * i as u64 + n as u64;
                let a = rms_norm(gpu, (&plain, false), (n, d, w_offset), seed);
                let b = rms_norm(gpu, (&fused, true), (n, d, w_offset), seed);
                // Two pipelines, two labels: profiles tell them apart.
                let kernels = (a.dispatches[0].kernel(), b.dispatches[0].kernel());
                assert_eq!(kernels, ("rms_norm", "rms_norm.add"));
                for p in [a, b] {
                    p.run_and_check(gpu)
                        .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
                }
            }
        }
    }
}
