//! top_k (and argmax as k = 1) against the reference, ties included.

use crate::common::*;
use gemma_wgpu::kernels::{TopK, TopKScratch};
use gemma_wgpu::reference;

#[test]
fn top_k_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let top_k = TopK::new(gpu).unwrap();
        let sizes = [1usize, 255, 256, 257, 4095, 4096, 4097, 10_000, 256_000];
        for (i, &n) in sizes.iter().enumerate() {
            for k in [1usize, 8, 40, 64] {
                for data in ["normal", "ties", "ascending"] {
                    let mut x = normal(i as u64 * 3 + k as u64, n);
                    if data == "ties" {
                        // Values on a 0.5 grid: many equal values, ordered by index.
                        x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
                    }
                    if data == "ascending" {
                        // Every element beats the ones before it: the most reordering.
                        x.sort_by(f32::total_cmp);
                    }
                    let expected = reference::top_k(&x, k);
                    let xb = gpu.storage_init("x", f32_bytes(&x));
                    let scratch = TopKScratch::new(gpu, "top_k", n, k);
                    let out = top_k.bind(gpu, "top_k", &xb, n, k, &scratch).unwrap();
                    gpu.run("test", &out.dispatches).unwrap();
                    let values = gpu.read_f32(&out.values).unwrap();
                    let indices = gpu.read_u32(&out.indices).unwrap();
                    let what = format!("{}: top_k n={n} k={k} {data}", dev.name);
                    for (r, &(v, idx)) in expected.iter().enumerate() {
                        assert_eq!((values[r], indices[r]), (v, idx), "{what}: rank {r}");
                    }
                    // Fewer than k elements: the rest are marked missing.
                    for r in expected.len()..k {
                        assert_eq!(indices[r], u32::MAX, "{what}: rank {r} should be empty");
                        assert_eq!(values[r], f32::NEG_INFINITY, "{what}: rank {r} value");
                    }
                }
            }
        }
    }
}
