//! rms_norm, plain and added into the residual stream.

use crate::common::*;
use gemma_wgpu::kernels::RmsNorm;
use gemma_wgpu::kernels::rms_norm::{RmsNormBuffers, RmsNormParams};
use gemma_wgpu::reference;

/// Sizes around the workgroup (256) and Gemma 2's hidden sizes.
const DIMS: &[usize] = &[1, 255, 256, 257, 1000, 2304, 3584, 4608];

/// Bound per element: the sum of d squares differs by at most d * EPS relative between two
/// orders, which moves the inverse root by half that; inverseSqrt is within 2 ulp on the GPU
/// and 2 roundings on the CPU; the divide, the eps add and the three products add one rounding
/// each: (d / 2 + 12) * EPS * |y|.
fn bound(d: usize, y: f32) -> f32 {
    (d as f32 / 2.0 + 12.0) * EPS * y.abs()
}

#[test]
fn rms_norm_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let plain = RmsNorm::new(gpu, false).unwrap();
        let fused = RmsNorm::new(gpu, true).unwrap();
        for (i, &d) in DIMS.iter().enumerate() {
            for (n, w_offset) in [(1usize, 1.0f32), (5, 0.0)] {
                let seed = 10 * i as u64 + n as u64;
                let x = normal(seed, n * d);
                let w = normal(seed + 1, d);
                let residual = normal(seed + 2, n * d);
                let eps = 1e-6;
                let y = reference::rms_norm(&x, &w, eps, w_offset);
                let params = RmsNormParams {
                    n: n as u32,
                    d: d as u32,
                    eps,
                    w_offset,
                };
                let xb = gpu.storage_init("x", f32_bytes(&x));
                let wb = gpu.storage_init("w", f32_bytes(&w));
                let out = gpu.storage_zeroed("out", (n * d * 4) as u64);
                let acc = gpu.storage_init("residual", f32_bytes(&residual));
                let buffers = |out| RmsNormBuffers {
                    x: &xb,
                    w: &wb,
                    out,
                };
                let a = plain.bind(gpu, "rms_norm", params, buffers(&out)).unwrap();
                let b = fused
                    .bind(gpu, "rms_norm.add", params, buffers(&acc))
                    .unwrap();
                // Two pipelines, two labels: profiles tell them apart.
                assert_eq!((a.kernel(), b.kernel()), ("rms_norm", "rms_norm.add"));
                gpu.run("test", [&a, &b]).unwrap();

                let what = format!("{}: rms_norm d={d} n={n} w_offset={w_offset}", dev.name);
                let b1: Vec<f32> = y.iter().map(|&v| bound(d, v)).collect();
                assert_within(&what, &gpu.read_f32(&out).unwrap(), &y, &b1);

                let mut sum = residual.clone();
                reference::add(&mut sum, &y);
                let b2: Vec<f32> = y
                    .iter()
                    .zip(&sum)
                    .map(|(&v, &s)| bound(d, v) + EPS * s.abs())
                    .collect();
                assert_within(
                    &format!("{what} (added)"),
                    &gpu.read_f32(&acc).unwrap(),
                    &sum,
                    &b2,
                );
            }
        }
    }
}
