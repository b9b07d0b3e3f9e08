//! attention (with kv_store filling the cache) against the reference: GQA ratios, head sizes,
//! position 0, the sliding-window boundary, soft-caps that bind, prefill blocks, a ring-buffer
//! cache, long contexts split over many workgroups, and both KV cache types.

use crate::common::*;
use gemma_wgpu::gpu::Gpu;
use gemma_wgpu::kernels::attention::AttentionArgs;
use gemma_wgpu::kernels::kv_store::{KvCache, KvStoreArgs};
use gemma_wgpu::kernels::{Attention, KvDtype, KvStore};
use gemma_wgpu::reference::{self, AttentionShape};
use std::ops::Range;

struct Case {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    softcap: Option<f32>,
    /// Multiplies q: large values make the soft-cap bind.
    q_gain: f32,
    capacity: usize,
    /// Steps: store the keys of these positions, then attend from these positions.
    steps: Vec<(Range<u32>, Range<u32>)>,
}

/// The error allowed for one query and head, derived from the arithmetic:
/// each score is a dot of length head_dim (dot_bound, times scale), plus the soft-cap's tanh;
/// a score error ds moves each softmax weight by a relative 2 ds, and exp itself is within
/// (3 + 2|x|) ulp for the |x| <= score range it sees; the output, a convex combination of
/// values, then moves by twice the relative weight error times max |v|, plus the rounding of
/// summing n values.
fn bound(q: &[f32], k: &[f32], v: &[f32], keys: &[usize], shape: &AttentionShape) -> f32 {
    let hd = shape.head_dim;
    let mut ds: f32 = 0.0;
    let mut s_min = f32::INFINITY;
    let mut s_max = f32::NEG_INFINITY;
    let mut v_max: f32 = 0.0;
    for &j in keys {
        let kj = &k[j * hd..][..hd];
        let abs: f32 = q.iter().zip(kj).map(|(a, b)| (a * b).abs()).sum();
        let dot: f32 = q.iter().zip(kj).map(|(a, b)| a * b).sum();
        let mut s = dot * shape.scale;
        let mut err = dot_bound(hd, abs) * shape.scale + EPS * s.abs();
        if let Some(c) = shape.softcap {
            s = c * (s / c).tanh();
            err += c * 8.0 * EPS + 2.0 * EPS * s.abs();
        }
        ds = ds.max(err);
        s_min = s_min.min(s);
        s_max = s_max.max(s);
        v_max = v[j * hd..][..hd].iter().fold(v_max, |m, x| m.max(x.abs()));
    }
    let exp_err = (3.0 + 2.0 * (s_max - s_min)) * EPS;
    let weight_err = 2.0 * ds + 2.0 * exp_err;
    (2.0 * weight_err + 2.0 * (keys.len() as f32 + 4.0) * EPS) * v_max
}

fn run_case(gpu: &Gpu, device: &str, name: &str, dtype: KvDtype, case: &Case, seed: u64) {
    let hd = case.head_dim;
    let kv_dim = case.kv_heads * hd;
    let q_dim = case.heads * hd;
    let total = case
        .steps
        .iter()
        .map(|(s, q)| s.end.max(q.end))
        .max()
        .unwrap() as usize;
    // Keys and values of every position (already rotated: attention does not rotate).
    let k_all = normal(seed, total * kv_dim);
    let v_all = normal(seed + 1, total * kv_dim);
    let (k_seen, v_seen) = match dtype {
        KvDtype::F32 => (k_all.clone(), v_all.clone()),
        KvDtype::F16 => (
            reference::kv_f16_round(&k_all),
            reference::kv_f16_round(&v_all),
        ),
    };
    let shape = AttentionShape {
        heads: case.heads,
        kv_heads: case.kv_heads,
        head_dim: hd,
        window: case.window,
        scale: 256f32.powf(-0.5),
        softcap: case.softcap,
    };
    let store = KvStore::new(gpu, dtype).unwrap();
    let attention = Attention::new(gpu, dtype).unwrap();
    let cache = KvCache::new(gpu, "cache", dtype, case.capacity, kv_dim).unwrap();
    for (step, (stored, queried)) in case.steps.iter().enumerate() {
        let store_pos: Vec<u32> = stored.clone().collect();
        let query_pos: Vec<u32> = queried.clone().collect();
        let n_store = store_pos.len();
        let n_q = query_pos.len();
        let rows = |all: &[f32]| {
            all[stored.start as usize * kv_dim..stored.end as usize * kv_dim].to_vec()
        };
        let q: Vec<f32> = normal(seed + 10 + step as u64, n_q * q_dim)
            .iter()
            .map(|x| x * case.q_gain)
            .collect();
        let spb = gpu.storage_init("store positions", u32_bytes(&store_pos));
        let kb = gpu.storage_init("k", f32_bytes(&rows(&k_all)));
        let vb = gpu.storage_init("v", f32_bytes(&rows(&v_all)));
        let qpb = gpu.storage_init("query positions", u32_bytes(&query_pos));
        let qb = gpu.storage_init("q", f32_bytes(&q));
        let out = gpu.storage_zeroed("out", (n_q * q_dim * 4) as u64);
        let mut dispatches = vec![];
        if n_store > 0 {
            dispatches.push(
                store
                    .bind(
                        gpu,
                        "kv_store",
                        KvStoreArgs {
                            n: n_store,
                            positions: &spb,
                            k: &kb,
                            v: &vb,
                            cache: &cache,
                        },
                    )
                    .unwrap(),
            );
        }
        dispatches.extend(
            attention
                .bind(
                    gpu,
                    "attention",
                    AttentionArgs {
                        n_q,
                        shape: &shape,
                        positions: &qpb,
                        q: &qb,
                        cache: &cache,
                        partials: &Attention::partials(gpu, "partials", n_q, &shape, case.capacity),
                        out: &out,
                    },
                )
                .unwrap(),
        );
        gpu.run("test", &dispatches).unwrap();
        let got = gpu.read_f32(&out).unwrap();
        let expected = reference::attention(&q, &k_seen, &v_seen, &query_pos, &shape);

        // Per (query, head) bound over the keys that query sees.
        let group = case.heads / case.kv_heads;
        let mut bounds = vec![0.0f32; expected.len()];
        for (t, &pos) in query_pos.iter().enumerate() {
            let first = case
                .window
                .map_or(0, |w| (pos as usize + 1).saturating_sub(w));
            let keys: Vec<usize> = (first..=pos as usize).collect();
            for h in 0..case.heads {
                let g = h / group;
                let per_head = |all: &[f32]| -> Vec<f32> {
                    (0..total)
                        .flat_map(|j| all[(j * case.kv_heads + g) * hd..][..hd].to_vec())
                        .collect()
                };
                let b = bound(
                    &q[(t * case.heads + h) * hd..][..hd],
                    &per_head(&k_seen),
                    &per_head(&v_seen),
                    &keys,
                    &shape,
                );
                bounds[(t * case.heads + h) * hd..][..hd].fill(b);
            }
        }
        assert_within(
            &format!("{device}: attention {name} {dtype:?} step {step} (queries {queried:?})"),
            &got,
            &expected,
            &bounds,
        );
    }
}

fn decode_at(pos: u32) -> Vec<(Range<u32>, Range<u32>)> {
    vec![(0..pos + 1, pos..pos + 1)]
}

fn cases() -> Vec<(String, Case)> {
    let mut cases = vec![];
    let w = 16usize;
    // GQA ratios and head sizes of Gemma 2 2B (8/4, 256), 9B (16/8, 256), 27B (32/16, 128),
    // and multi-query; decode at position 0 and around the window boundary.
    for &(heads, kv_heads, hd) in &[(8, 4, 256), (16, 8, 256), (32, 16, 128), (4, 1, 64)] {
        for pos in [0u32, w as u32 - 1, w as u32, w as u32 + 1] {
            for window in [Some(w), None] {
                cases.push((
                    format!("decode h={heads}/{kv_heads} hd={hd} pos={pos} window={window:?}"),
                    Case {
                        heads,
                        kv_heads,
                        head_dim: hd,
                        window,
                        softcap: Some(50.0),
                        q_gain: 1.0,
                        capacity: 64,
                        steps: decode_at(pos),
                    },
                ));
            }
        }
    }
    // Key counts around the 64 keys a workgroup scores per step of its online softmax.
    for pos in [62u32, 63, 64] {
        cases.push((
            format!("decode pos={pos} (workgroup boundary)"),
            Case {
                heads: 8,
                kv_heads: 4,
                head_dim: 256,
                window: None,
                softcap: Some(50.0),
                q_gain: 1.0,
                capacity: 128,
                steps: decode_at(pos),
            },
        ));
    }
    // Prefill: 40 queries at once, window 16 and global.
    for window in [Some(w), None] {
        cases.push((
            format!("prefill 40 window={window:?}"),
            Case {
                heads: 8,
                kv_heads: 4,
                head_dim: 256,
                window,
                softcap: Some(50.0),
                q_gain: 1.0,
                capacity: 64,
                steps: vec![(0..40, 0..40)],
            },
        ));
    }
    // Soft-cap that binds: scores of about +-60 against a cap of 5.
    cases.push((
        "binding soft-cap".into(),
        Case {
            heads: 4,
            kv_heads: 2,
            head_dim: 128,
            window: Some(8),
            softcap: Some(5.0),
            q_gain: 4.0,
            capacity: 32,
            steps: vec![(0..20, 0..20)],
        },
    ));
    // Ring buffer: window 8 in a 12-slot cache, filled and queried in chunks of 5 positions
    // (capacity = window + chunk - 1), wrapping around the ring several times.
    cases.push((
        "ring cache".into(),
        Case {
            heads: 2,
            kv_heads: 1,
            head_dim: 32,
            window: Some(8),
            softcap: None,
            q_gain: 1.0,
            capacity: 12,
            steps: (0..7)
                .map(|c| (c * 5..c * 5 + 5, c * 5..c * 5 + 5))
                .collect(),
        },
    ));
    // A long context split over several workgroups and merged, then one more decode step.
    cases.push((
        "long context".into(),
        Case {
            heads: 2,
            kv_heads: 1,
            head_dim: 256,
            window: None,
            softcap: Some(50.0),
            q_gain: 1.0,
            capacity: 1100,
            steps: vec![(0..1000, 999..1000), (1000..1001, 1000..1001)],
        },
    ));
    cases
}

#[test]
fn attention_matches_reference() {
    for dev in devices() {
        for (i, (name, case)) in cases().iter().enumerate() {
            for dtype in [KvDtype::F32, KvDtype::F16] {
                run_case(&dev.gpu, &dev.name, name, dtype, case, i as u64);
            }
        }
    }
}

#[test]
fn binding_soft_cap_changes_the_result() {
    // The soft-cap case above must really bind: without the cap the reference differs.
    let (hd, n) = (128usize, 20usize);
    let q: Vec<f32> = normal(5, 4 * hd).iter().map(|x| x * 4.0).collect();
    let k = normal(6, n * 2 * hd);
    let v = normal(7, n * 2 * hd);
    let mut shape = AttentionShape {
        heads: 4,
        kv_heads: 2,
        head_dim: hd,
        window: Some(8),
        scale: 256f32.powf(-0.5),
        softcap: Some(5.0),
    };
    let capped = reference::attention(&q, &k, &v, &[19], &shape);
    shape.softcap = None;
    let plain = reference::attention(&q, &k, &v, &[19], &shape);
    let diff = capped
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff > 0.1, "soft-cap does not bind: max difference {diff}");
}
