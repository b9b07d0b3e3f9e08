//! geglu, add, soft_cap and kv_store.

use crate::common::*;
use gemma_wgpu::kernels::add::AddBuffers;
use gemma_wgpu::kernels::geglu::GegluBuffers;
use gemma_wgpu::kernels::kv_store::{KvCache, KvStoreArgs};
use gemma_wgpu::kernels::soft_cap::SoftCapBuffers;
use gemma_wgpu::kernels::{Add, Geglu, KvDtype, KvStore, SoftCap};
use gemma_wgpu::reference;

/// Absolute error allowed for the GPU's tanh on [-15, 15] (the shaders clamp the argument):
/// backends build it from exp, which costs a few ulp of 1.
const TANH_ABS_ERR: f32 = 8.0 * EPS;

const SIZES: &[usize] = &[1, 255, 256, 257, 1001, 9216];

#[test]
fn geglu_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let geglu = Geglu::new(gpu).unwrap();
        for (i, &d) in SIZES.iter().enumerate() {
            for n in [1usize, 3] {
                let mut gate_up = normal(i as u64 + 7 * n as u64, n * 2 * d);
                // Spread the gates so tanh saturates on both sides too.
                for row in gate_up.chunks_mut(2 * d) {
                    for g in &mut row[..d] {
                        *g *= 3.0;
                    }
                }
                let expected = reference::geglu(&gate_up, d);
                let gb = gpu.storage_init("gate_up", f32_bytes(&gate_up));
                let out = gpu.storage_zeroed("out", (n * d * 4) as u64);
                let disp = geglu
                    .bind(
                        gpu,
                        "geglu",
                        n,
                        d,
                        GegluBuffers {
                            gate_up: &gb,
                            out: &out,
                        },
                    )
                    .unwrap();
                gpu.run("test", [&disp]).unwrap();
                // |d gelu| <= 0.5 |g| (|d tanh| + 4 EPS): the tanh error plus its argument's
                // relative error (a few roundings, |tanh'| <= 1), times |up|, plus the
                // rounding of the products.
                let bound: Vec<f32> = (0..n * d)
                    .map(|e| {
                        let (t, j) = (e / d, e % d);
                        let g = gate_up[t * 2 * d + j];
                        let u = gate_up[t * 2 * d + d + j];
                        let arg = 0.797_884_6 * (g + 0.044715 * g * g * g);
                        let dt = TANH_ABS_ERR + 4.0 * EPS * arg.abs().min(15.0);
                        0.5 * g.abs() * u.abs() * (dt + 4.0 * EPS) + 4.0 * EPS * expected[e].abs()
                    })
                    .collect();
                assert_within(
                    &format!("{}: geglu n={n} d={d}", dev.name),
                    &gpu.read_f32(&out).unwrap(),
                    &expected,
                    &bound,
                );
            }
        }
    }
}

#[test]
fn add_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let add = Add::new(gpu).unwrap();
        for (i, &n) in SIZES.iter().enumerate() {
            let x = normal(i as u64, n);
            let acc = normal(i as u64 + 100, n);
            let mut expected = acc.clone();
            reference::add(&mut expected, &x);
            let xb = gpu.storage_init("x", f32_bytes(&x));
            let ab = gpu.storage_init("acc", f32_bytes(&acc));
            let d = add
                .bind(gpu, "add", n, AddBuffers { x: &xb, acc: &ab })
                .unwrap();
            gpu.run("test", [&d]).unwrap();
            // IEEE addition is correctly rounded: the results are identical.
            assert_close(
                &format!("{}: add n={n}", dev.name),
                &gpu.read_f32(&ab).unwrap(),
                &expected,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn soft_cap_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let cap_kernel = SoftCap::new(gpu).unwrap();
        for (i, &n) in SIZES.iter().enumerate() {
            let cap = 30.0f32;
            // Logits up to about +-120: the cap binds hard on the tails.
            let x: Vec<f32> = normal(i as u64 + 3, n).iter().map(|v| v * 40.0).collect();
            let mut expected = x.clone();
            reference::soft_cap(&mut expected, cap);
            let xb = gpu.storage_init("x", f32_bytes(&x));
            let d = cap_kernel
                .bind(gpu, "soft_cap", n, cap, SoftCapBuffers { x: &xb })
                .unwrap();
            gpu.run("test", [&d]).unwrap();
            // cap * (tanh error + the argument's rounding) + the final product's rounding.
            let bound: Vec<f32> = x
                .iter()
                .zip(&expected)
                .map(|(v, e)| {
                    cap * (TANH_ABS_ERR + 2.0 * EPS * (v / cap).abs().min(15.0)) + EPS * e.abs()
                })
                .collect();
            assert_within(
                &format!("{}: soft_cap n={n}", dev.name),
                &gpu.read_f32(&xb).unwrap(),
                &expected,
                &bound,
            );
        }
    }
}

#[test]
fn kv_store_writes_rows_at_position_modulo_capacity() {
    for dev in devices() {
        let gpu = &dev.gpu;
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let store = KvStore::new(gpu, dtype).unwrap();
            // 4 kv heads x 6 dims; capacity 7; positions wrap around the ring.
            let (kv_dim, capacity) = (24usize, 7usize);
            let positions = [3u32, 9, 0, 13];
            let n = positions.len();
            let k = normal(1, n * kv_dim);
            let v = normal(2, n * kv_dim);
            let cache = KvCache::new(gpu, "cache", dtype, capacity, kv_dim).unwrap();
            let pb = gpu.storage_init("positions", u32_bytes(&positions));
            let kb = gpu.storage_init("k", f32_bytes(&k));
            let vb = gpu.storage_init("v", f32_bytes(&v));
            let args = KvStoreArgs {
                n,
                positions: &pb,
                k: &kb,
                v: &vb,
                cache: &cache,
            };
            let d = store.bind(gpu, "kv_store", args).unwrap();
            gpu.run("test", [&d]).unwrap();
            for (which, src, buf) in [("k", &k, &cache.k), ("v", &v, &cache.v)] {
                let got: Vec<f32> = match dtype {
                    KvDtype::F32 => gpu.read_f32(buf).unwrap(),
                    KvDtype::F16 => gpu
                        .read_bytes(buf)
                        .unwrap()
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                };
                let stored = match dtype {
                    KvDtype::F32 => src.to_vec(),
                    KvDtype::F16 => reference::kv_f16_round(src),
                };
                for (t, &p) in positions.iter().enumerate() {
                    let slot = p as usize % capacity;
                    assert_close(
                        &format!("{}: kv_store {dtype:?} {which} position {p}", dev.name),
                        &got[slot * kv_dim..][..kv_dim],
                        &stored[t * kv_dim..][..kv_dim],
                        0.0,
                        0.0,
                    );
                }
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
