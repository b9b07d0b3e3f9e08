//! geglu, add, fma, soft_cap, kv_store and fill.

use crate::common::*;
use gemma_wgpu::kernels::fma::FmaBuffers;
use gemma_wgpu::kernels::{Add, Fma, Geglu, KvDtype, KvStore, SoftCap};

const SIZES: &[usize] = &[1, 255, 256, 257, 1001, 9216];

#[test]
fn geglu_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = Geglu::new(gpu).unwrap();
        for (i, &d) in SIZES.iter().enumerate() {
            for n in [1usize, 3] {
                geglu(gpu, &kernel, n, d, i as u64 + 7 * n as u64)
                    .run_and_check(gpu)
                    .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}

#[test]
fn add_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = Add::new(gpu).unwrap();
        for (i, &n) in SIZES.iter().enumerate() {
            add(gpu, &kernel, n, i as u64)
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
        }
    }
}

/// The arithmetic yardstick computes what it times: every chain, every step (iteration counts
/// short of convergence, so a step more or less shows).
#[test]
fn fma_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = Fma::new(gpu).unwrap();
        for (invocations, iters) in [(64, 4), (128, 36), (192, 100)] {
            fma(gpu, &kernel, invocations, iters, invocations)
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
        }
        // The shader steps four at a time: another count is refused, not rounded.
        let out = gpu.storage_zeroed("fma.out", 64 * 4);
        let err = kernel
            .bind(gpu, "fma", 64, (6, 0.5, 0.5), FmaBuffers { out: &out })
            .err()
            .unwrap_or_else(|| panic!("{}: 6 steps were accepted", dev.name));
        assert!(err.to_string().contains("multiple of 4"), "{err}");
    }
}

#[test]
fn soft_cap_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = SoftCap::new(gpu).unwrap();
        for (i, &n) in SIZES.iter().enumerate() {
            soft_cap(gpu, &kernel, n, i as u64 + 3)
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
        }
    }
}

/// Rows land at position % capacity (the ring buffer wraps), in either cache type, as
/// reference::kv_store puts them; a later position overwrites an earlier one's slot.
#[test]
fn kv_store_matches_reference() {
    // (kv_dim, capacity, positions): 4 kv heads x 6 dims with capacity 7, positions wrapping
    // around the ring; Gemma 3 270M's one kv head of 256 and Gemma 2 2B's 4 x 256 at prefill.
    let cases: &[(usize, usize, &[u32])] = &[
        (24, 7, &[3, 9, 0, 13]),
        (256, 4096, &[4095]),
        (1024, 512, &[510, 511, 512, 513, 514]),
    ];
    for dev in devices() {
        let gpu = &dev.gpu;
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let kernel = KvStore::new(gpu, dtype).unwrap();
            for (i, &(kv_dim, capacity, positions)) in cases.iter().enumerate() {
                kv_store(
                    gpu,
                    &kernel,
                    dtype,
                    (kv_dim, capacity),
                    positions,
                    1 + i as u64,
                )
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}

#[test]
fn fill_matches_reference() {
    use gemma_wgpu::kernels::Fill;
    use gemma_wgpu::kernels::fill::{FillBuffers, FillParams, fill_word};
    for dev in devices() {
        let gpu = &dev.gpu;
        let fill = Fill::new(gpu).unwrap();
        for (n, seed, mask, bits) in [
            (1usize, 1u32, u32::MAX, 0u32),
            (257, 7, 0x807f_807f, 0x3c80_3c80),
            (10_000, 9, 0x03ff, 0x1c00),
        ] {
            let out = gpu.storage_zeroed("out", n as u64 * 4);
            let d = fill
                .bind(gpu, "fill", seed, mask, bits, FillBuffers { out: &out })
                .unwrap();
            gpu.run("test", [&d]).unwrap();
            let got = gpu.read_u32(&out).unwrap();
            let p = FillParams {
                n: n as u32,
                seed,
                mask,
                bits,
            };
            let expected: Vec<u32> = (0..n as u32).map(|i| fill_word(&p, i)).collect();
            assert_eq!(got, expected, "{}: fill n={n}", dev.name);
        }
    }
}
