//! top_k (and argmax as k = 1) against the reference, ties included, with and without a
//! soft-cap folded in.

use crate::common::*;
use gemma_wgpu::kernels::TopK;

#[test]
fn top_k_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = TopK::new(gpu).unwrap();
        let sizes = [1usize, 255, 256, 257, 4095, 4096, 4097, 10_000, 256_000];
        for (i, &n) in sizes.iter().enumerate() {
            for k in [1usize, 8, 40, 64] {
                for data in ["normal", "ties", "ascending"] {
                    top_k(gpu, &kernel, (n, k), (data, None), i as u64 * 3 + k as u64)
                        .run_and_check(gpu)
                        .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
                }
                // Gemma 2's final soft-cap folded in: wide logits saturate to ties.
                top_k(
                    gpu,
                    &kernel,
                    (n, k),
                    ("wide", Some(30.0)),
                    i as u64 + k as u64,
                )
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}
