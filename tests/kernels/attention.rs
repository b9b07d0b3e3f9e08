//! attention (with kv_store filling the cache) against the reference: GQA ratios, head sizes,
//! position 0, the sliding-window boundary, soft-caps that bind, prefill blocks (odd ones too,
//! whose last query has no pair, and sets of columns that end past the last query), a
//! ring-buffer cache, long contexts split over many workgroups, and both KV cache types.

use crate::common::*;
use gemma_wgpu::gpu::Gpu;
use gemma_wgpu::kernels::rope::RopeTable;
use gemma_wgpu::kernels::{Attention, KvDtype, KvStore, RopeStore};
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

/// Attention on adapters whose decode products read x quantized by a pass of their own (CPU
/// adapters) writes its output quantized too, for o_proj: out bit for bit as without it, and
/// out_q word for word as quantize_q8 writes out. Both phases that write out: one split
/// (the 2B's heads, and the 27B's head_dim of 128, for three queries), and the 270M's single
/// kv head deep into a long cache (key splits, merged by `combine`).
#[test]
fn attention_writes_its_output_quantized_as_quantize_q8_does() {
    use gemma_wgpu::kernels::attention::AttentionArgs;
    use gemma_wgpu::kernels::kv_store::{KvCache, KvStoreArgs};
    use gemma_wgpu::kernels::quantize_q8::WORDS_PER_BLOCK;
    let mut phases = std::collections::BTreeSet::new();
    for dev in devices() {
        let gpu = &dev.gpu;
        let dtype = KvDtype::F16;
        let (store, kernel) = (
            KvStore::new(gpu, dtype).unwrap(),
            Attention::new(gpu, dtype).unwrap(),
        );
        if !kernel.quantizes_out() {
            continue;
        }
        // (heads, kv_heads, head_dim, capacity, first query position, queries)
        let cases = [
            (8usize, 4usize, 256usize, 64usize, 40u32, 1usize),
            (32, 16, 128, 64, 10, 3),
            (4, 1, 256, 4096, 3000, 1),
        ];
        for (i, &(heads, kv_heads, hd, capacity, pos, n_q)) in cases.iter().enumerate() {
            let what = format!(
                "{}: attention h={heads}/{kv_heads} hd={hd} pos={pos} n_q={n_q}",
                dev.name
            );
            let shape = AttentionShape {
                heads,
                kv_heads,
                head_dim: hd,
                window: None,
                scale: 256f32.powf(-0.5),
                softcap: Some(50.0),
            };
            let keys = pos as usize + n_q;
            let kv_dim = kv_heads * hd;
            let seed = 1400 + 10 * i as u64;
            let positions: Vec<u32> = (0..keys as u32).collect();
            let cache = KvCache::new(gpu, "cache", dtype, capacity, kv_dim).unwrap();
            let (pb, kb, vb) = (
                gpu.storage_init("positions", u32_bytes(&positions)),
                gpu.storage_init("k", f32_bytes(&normal(seed, keys * kv_dim))),
                gpu.storage_init("v", f32_bytes(&normal(seed + 1, keys * kv_dim))),
            );
            let args = KvStoreArgs {
                n: keys,
                positions: &pb,
                k: &kb,
                v: &vb,
                cache: &cache,
            };
            let stored = store.bind(gpu, "kv_store", args).unwrap();
            gpu.run("kv_store", [&stored]).unwrap();
            let qpb = gpu.storage_init("query positions", u32_bytes(&positions[pos as usize..]));
            let qb = gpu.storage_init("q", f32_bytes(&normal(seed + 2, n_q * heads * hd)));
            let partials = Attention::partials(gpu, "partials", n_q, &shape, capacity);
            let len = n_q * heads * hd;
            let words = len / 32 * WORDS_PER_BLOCK;
            let (out0, out1) = (
                gpu.storage_zeroed("out0", 4 * len as u64),
                gpu.storage_zeroed("out1", 4 * len as u64),
            );
            let out_q = gpu.storage_zeroed("out_q", 4 * words as u64);
            let mut bound = vec![];
            for (out, q) in [(&out0, None), (&out1, Some(&out_q))] {
                let args = AttentionArgs {
                    n_q,
                    shape: &shape,
                    positions: &qpb,
                    q: &qb,
                    cache: &cache,
                    partials: &partials,
                    out,
                    out_q: q,
                    rope: None,
                };
                let d = kernel.bind(gpu, "attention", args).unwrap();
                gpu.run("attention", d.iter()).unwrap();
                bound.push(d.len());
            }
            assert_eq!(bound[0], bound[1], "{what}: dispatches");
            phases.insert(bound[1]);
            let bits = |b| gpu.read_u32(b).unwrap();
            assert_eq!(
                bits(&out0),
                bits(&out1),
                "{what}: out differs between the variants"
            );
            let want = quantize_q8_words(gpu, &out1, len);
            assert_eq!(bits(&out_q), want, "{what}: out_q");
        }
    }
    // One dispatch (partial writes out) and two (partial, then combine).
    assert_eq!(phases, [1, 2].into(), "phases that wrote out_q");
}

/// A decode step's attention with rope_store folded in (the q|k|v products' row in, q and k
/// normed and rotated, the position's k and v stored) against rope_store then attention, the
/// kernels the reference tests check: the output (and its quantization) and the whole cache
/// bit for bit. Gemma 3 270M (4 / 1 heads of 256, per-head norms) deep in a long cache (key
/// splits: the last one stores), Gemma 2 2B (8 / 4 of 256) at positions 0 and at a window's
/// edge, 27B (32 / 16 of 128) in a wrapped cache; f32 and f16 caches, with and without a
/// quantized output.
#[test]
fn attention_with_rope_store_folded_in_matches_the_two_kernels() {
    let mut folded = 0;
    for dev in devices() {
        let gpu = &dev.gpu;
        // (heads, kv_heads, head_dim, norms, window, capacity, position)
        let cases = [
            (4usize, 1usize, 256usize, true, None, 1024usize, 1000u32),
            (8, 4, 256, false, Some(8usize), 64, 0),
            (8, 4, 256, false, Some(8), 64, 8),
            (32, 16, 128, true, None, 48, 61),
        ];
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let kernels = (
                &KvStore::new(gpu, dtype).unwrap(),
                &RopeStore::new(gpu, dtype).unwrap(),
                &Attention::new(gpu, dtype).unwrap(),
            );
            for (i, &(heads, kv_heads, hd, norms, window, capacity, pos)) in
                cases.iter().enumerate()
            {
                let step = DecodeStep::new(
                    gpu,
                    AttentionShape {
                        heads,
                        kv_heads,
                        head_dim: hd,
                        window,
                        scale: 256f32.powf(-0.5),
                        softcap: Some(50.0),
                    },
                    (dtype, capacity, pos, norms),
                    1600 + 10 * i as u64,
                );
                let what = format!(
                    "{}: {dtype:?} h={heads}/{kv_heads} hd={hd} norms={norms} \
                     window={window:?} pos={pos}",
                    dev.name
                );
                assert!(Attention::folds_rope(gpu, &step.shape), "{what}");
                for quant in [false, true] {
                    if quant && !kernels.2.quantizes_out() {
                        continue;
                    }
                    let apart = step.run(gpu, kernels, false, quant);
                    let one = step.run(gpu, kernels, true, quant);
                    // The same arithmetic in the same order (the norms' sums of squares
                    // included): the same bits.
                    for (i, part) in ["out", "out_q", "k cache", "v cache"].iter().enumerate() {
                        let first = apart[i].iter().zip(&one[i]).position(|(a, b)| a != b);
                        assert!(first.is_none(), "{what}: {part} differs at word {first:?}");
                    }
                    folded += 1;
                }
            }
        }
    }
    assert!(folded > 0, "no adapter folded rope_store into attention");
}

/// One decode step's inputs: random keys and values before `pos` (as earlier steps stored
/// them), the q|k|v products' row at `pos`, and (with norms) Gemma 3's q/k norm weights.
struct DecodeStep {
    shape: AttentionShape,
    dtype: KvDtype,
    capacity: usize,
    history: (usize, [wgpu::Buffer; 3]),
    position: wgpu::Buffer,
    qkv: wgpu::Buffer,
    norms: Option<wgpu::Buffer>,
    table: RopeTable,
}

impl DecodeStep {
    fn new(
        gpu: &Gpu,
        shape: AttentionShape,
        (dtype, capacity, pos, norms): (KvDtype, usize, u32, bool),
        seed: u64,
    ) -> DecodeStep {
        let (hd, kv_dim) = (shape.head_dim, shape.kv_heads * shape.head_dim);
        let history: Vec<u32> = (pos.saturating_sub(capacity as u32 - 1)..pos).collect();
        let n = history.len();
        let row = shape.heads * hd + 2 * kv_dim;
        DecodeStep {
            history: (
                n,
                [
                    gpu.storage_init("history", u32_bytes(&history)),
                    gpu.storage_init("k", f32_bytes(&normal(seed, n.max(1) * kv_dim))),
                    gpu.storage_init("v", f32_bytes(&normal(seed + 1, n.max(1) * kv_dim))),
                ],
            ),
            position: gpu.storage_init("position", u32_bytes(&[pos])),
            qkv: gpu.storage_init("qkv", f32_bytes(&normal(seed + 2, row))),
            norms: norms.then(|| gpu.storage_init("norms", f32_bytes(&normal(seed + 3, 2 * hd)))),
            table: RopeTable::new(gpu, 10_000.0, 1.0, hd, 8192),
            shape,
            dtype,
            capacity,
        }
    }

    /// The step over a fresh cache holding the history: rope_store folded into attention
    /// (`fold`) or before it, with or without a quantized output. Returns out, out_q and the
    /// k and v caches as words.
    fn run(
        &self,
        gpu: &Gpu,
        (store, rope_store, attention): (&KvStore, &RopeStore, &Attention),
        fold: bool,
        quant: bool,
    ) -> [Vec<u32>; 4] {
        use gemma_wgpu::kernels::attention::{AttentionArgs, FoldedRope};
        use gemma_wgpu::kernels::kv_store::{KvCache, KvStoreArgs};
        use gemma_wgpu::kernels::quantize_q8::WORDS_PER_BLOCK;
        use gemma_wgpu::kernels::rope_store::RopeStoreArgs;
        let shape = &self.shape;
        let kv_dim = shape.kv_heads * shape.head_dim;
        let cache = KvCache::new(gpu, "cache", self.dtype, self.capacity, kv_dim).unwrap();
        let (n, [positions, k, v]) = &self.history;
        if *n > 0 {
            let args = KvStoreArgs {
                n: *n,
                positions,
                k,
                v,
                cache: &cache,
            };
            let d = store.bind(gpu, "kv_store", args).unwrap();
            gpu.run("kv_store", [&d]).unwrap();
        }
        let len = shape.heads * shape.head_dim;
        let q = gpu.storage_zeroed("q", 4 * len as u64);
        let out = gpu.storage_zeroed("out", 4 * len as u64);
        let out_q = gpu.storage_zeroed("out_q", 4 * (len / 32 * WORDS_PER_BLOCK) as u64);
        let partials = Attention::partials(gpu, "partials", 1, shape, self.capacity);
        let norms = self.norms.as_ref().map(|w| (w, 1e-6, 1.0));
        let mut d = vec![];
        if !fold {
            let args = RopeStoreArgs {
                n: 1,
                heads: shape.heads,
                positions: &self.position,
                table: &self.table,
                norms,
                qkv: &self.qkv,
                q: &q,
                cache: &cache,
            };
            d.push(rope_store.bind(gpu, "rope_store", args).unwrap());
        }
        let args = AttentionArgs {
            n_q: 1,
            shape,
            positions: &self.position,
            q: if fold { &self.qkv } else { &q },
            cache: &cache,
            partials: &partials,
            out: &out,
            out_q: quant.then_some(&out_q),
            rope: fold.then_some(FoldedRope {
                table: &self.table,
                norms,
            }),
        };
        d.extend(attention.bind(gpu, "attention", args).unwrap());
        gpu.run("attention", d.iter()).unwrap();
        [&out, &out_q, &cache.k, &cache.v].map(|b| gpu.read_u32(b).unwrap())
    }
}
