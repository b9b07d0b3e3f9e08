//! The RoPE table against transformers' formula, and rope_store (per-head norms, RoPE and the
//! KV-cache store) against the reference, over real head layouts and positions up to 8191.

use crate::common::*;
use gemma_wgpu::kernels::{KvDtype, RopeStore};
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
fn rope_store_matches_reference() {
    // Gemma 3 270M (4 / 1 heads of 256, per-head norms), Gemma 2 2B (8 / 4 of 256) and 27B
    // (32 / 16 of 128), and a head of 8 (two invocations of 64 live); positions 0, the table's
    // last row and rows wrapping around a small cache.
    let positions: &[u32] = &[0, 8191, 17, 3, 30];
    let shapes = [
        (4, 1, 256, true),
        (8, 4, 256, false),
        (32, 16, 128, false),
        (2, 1, 8, true),
    ];
    for dev in devices() {
        let gpu = &dev.gpu;
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let kernel = RopeStore::new(gpu, dtype).unwrap();
            for (i, &(heads, kv_heads, head_dim, norms)) in shapes.iter().enumerate() {
                let case = RopeStoreCase {
                    heads,
                    kv_heads,
                    head_dim,
                    norms,
                    dtype,
                    capacity: 32,
                    positions,
                };
                rope_store(gpu, &kernel, &case, 11 + i as u64)
                    .run_and_check(gpu)
                    .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}
