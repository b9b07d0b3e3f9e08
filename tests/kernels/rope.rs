//! rope against the reference, over real head layouts and positions up to 8191.

use crate::common::*;
use gemma_wgpu::kernels::rope::RopeBuffers;
use gemma_wgpu::kernels::{Rope, RopeTable};
use gemma_wgpu::reference;

#[test]
fn rope_table_matches_transformers_formula() {
    // inv_freq[i] = 1 / theta^(2i / d); position 1 gives the frequencies themselves.
    let t = reference::rope_table(10000.0, 1.0, 256, 3);
    assert_eq!(t[0], [1.0, 0.0], "position 0 is the identity");
    let half = 128;
    for i in [0usize, 1, 64, 127] {
        let f = 1.0f64 / 10000f64.powf(2.0 * i as f64 / 256.0);
        assert!(
            (t[half + i][0] as f64 - f.cos()).abs() < 1e-6,
            "cos at i={i}"
        );
        assert!(
            (t[half + i][1] as f64 - f.sin()).abs() < 1e-6,
            "sin at i={i}"
        );
    }
}

#[test]
fn rope_matches_reference() {
    // (heads, head_dim, theta): Gemma 2 2B/9B query and key heads, 27B, and a small odd case.
    let cases = [
        (8usize, 256usize, 10000.0f32),
        (4, 256, 10000.0),
        (16, 256, 10000.0),
        (32, 128, 10000.0),
        (16, 128, 1_000_000.0),
        (3, 6, 10000.0),
    ];
    let max_pos = 8192;
    for dev in devices() {
        let gpu = &dev.gpu;
        let rope = Rope::new(gpu).unwrap();
        for (i, &(heads, hd, theta)) in cases.iter().enumerate() {
            // Gemma 3's global layers divide positions by 8 (linear scaling).
            let factor = if theta > 1e5 { 8.0 } else { 1.0 };
            let table = reference::rope_table(theta, factor, hd, max_pos);
            let gpu_table = RopeTable::new(gpu, theta, factor, hd, max_pos);
            // Position 0, the largest position, and random ones.
            let mut positions = vec![0u32, max_pos as u32 - 1, 1];
            positions.extend(
                normal(i as u64, 6)
                    .iter()
                    .map(|v| (v.abs() * 2000.0) as u32 % 8192),
            );
            let n = positions.len();
            let x = normal(50 + i as u64, n * heads * hd);
            let mut expected = x.clone();
            reference::rope(&mut expected, &positions, heads, hd, &table);
            let pb = gpu.storage_init("positions", u32_bytes(&positions));
            let xb = gpu.storage_init("x", f32_bytes(&x));
            let d = rope
                .bind(
                    gpu,
                    "rope",
                    gpu_table.params(n, heads),
                    RopeBuffers {
                        positions: &pb,
                        table: &gpu_table.buffer,
                        x: &xb,
                    },
                )
                .unwrap();
            gpu.run("test", [&d]).unwrap();
            // Each output is x0 c -/+ x1 s: two products and a sum, fused or not, on either side.
            let half = hd / 2;
            let bound: Vec<f32> = (0..x.len())
                .map(|e| {
                    let i = e % hd;
                    let pair = if i < half { e + half } else { e - half };
                    4.0 * EPS * (x[e].abs() + x[pair].abs())
                })
                .collect();
            assert_within(
                &format!("{}: rope heads={heads} hd={hd} theta={theta}", dev.name),
                &gpu.read_f32(&xb).unwrap(),
                &expected,
                &bound,
            );
        }
    }
}
