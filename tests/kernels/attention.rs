//! attention (with kv_store filling the cache) against the reference: GQA ratios, head sizes,
//! position 0, the sliding-window boundary, soft-caps that bind, prefill blocks (odd ones too,
//! whose last query has no pair, and sets of columns that end past the last query), a
//! ring-buffer cache, long contexts split over many workgroups, and both KV cache types.

use crate::common::*;
use gemma_wgpu::kernels::{Attention, KvDtype, KvStore};
use gemma_wgpu::reference::{self, AttentionShape};
use std::ops::Range;

type Case = AttentionCase;

fn decode_at(pos: u32) -> Vec<(Range<u32>, Range<u32>)> {
    vec![(0..pos + 1, pos..pos + 1)]
}

fn cases() -> Vec<(String, Case)> {
    let mut cases = vec![];
    let w = 16usize;
    // GQA ratios and head sizes of Gemma 2 2B (8/4, 256), 9B (16/8, 256), 27B (32/16, 128),
    // multi-query (Gemma 3 270M 4/1, Gemma 1 2B 8/1: two workgroups per kv head) and a group
    // of three; decode at position 0 and around the window boundary.
    let shapes = [
        (8, 4, 256),
        (16, 8, 256),
        (32, 16, 128),
        (4, 1, 64),
        (8, 1, 256),
        (6, 2, 64),
    ];
    for &(heads, kv_heads, hd) in &shapes {
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
    cases.extend(prefill_cases(w));
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

/// Prefill steps: many queries at once, across the window boundary, in odd chunks.
fn prefill_cases(w: usize) -> Vec<(String, Case)> {
    let mut cases = vec![];
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
    // Prefill in odd chunks (queries served two per workgroup on CPU adapters, the last one
    // alone) across the window boundary, Gemma 3 270M's heads (4/1, 256).
    for window in [Some(w), None] {
        cases.push((
            format!("prefill 23 + 17 h=4/1 window={window:?}"),
            Case {
                heads: 4,
                kv_heads: 1,
                head_dim: 256,
                window,
                softcap: None,
                q_gain: 1.0,
                capacity: 64,
                steps: vec![(0..23, 0..23), (23..40, 23..40)],
            },
        ));
    }
    // Prefill in odd chunks with groups of two query heads per kv head (Gemma 2) and of one
    // (Gemma 1 7B): on CPU adapters a workgroup then serves four queries (two of each of its
    // two sets' columns) or eight, so chunks of 21 and 19 end in sets whose last columns lie
    // past the last query, and neighbouring queries in one set see different keys at the
    // window's edge. A group of three leaves a set's fourth column unused (the lanes that
    // spread a step's query elements, SPREAD_Q, hold another column's there).
    for (heads, kv_heads) in [(8, 4), (4, 4), (6, 2)] {
        cases.push((
            format!("prefill 21 + 19 h={heads}/{kv_heads} window={w}"),
            Case {
                heads,
                kv_heads,
                head_dim: 64,
                window: Some(w),
                softcap: Some(50.0),
                q_gain: 1.0,
                capacity: 64,
                steps: vec![(0..21, 0..21), (21..40, 21..40)],
            },
        ));
    }
    cases
}

#[test]
fn attention_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        for (i, (name, case)) in cases().iter().enumerate() {
            for dtype in [KvDtype::F32, KvDtype::F16] {
                let store = KvStore::new(gpu, dtype).unwrap();
                let kernel = Attention::new(gpu, dtype).unwrap();
                for step in attention(gpu, (&store, &kernel), dtype, case, i as u64) {
                    step.run_and_check(gpu)
                        .unwrap_or_else(|e| panic!("{}: {name}: {e}", dev.name));
                }
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
