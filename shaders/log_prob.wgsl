// log_prob: the log-softmax of each row of logits at a few chosen ids, so that perplexity
// reads back m + 1 floats per position rather than the vocabulary's logits:
//   out[r, 0]     = lse_r = log(sum_v exp(logits[r, v]))      (NaN if the row holds a NaN or
//                                                              an infinity)
//   out[r, 1 + j] = logits[r, ids[r, j]] - lse_r               for j < m
// Two passes over the row: its maximum M (and whether any value is not finite), then
// lse = M + log(sum_v exp(logits[r, v] - M)), each term at most 1.
// Each workgroup takes one row; CONTIGUOUS: each invocation its own run of the row (CPU
// adapters) instead of neighbouring invocations on neighbouring values (GPUs).
// Bindings: params; logits [rows, vocab]; ids [rows, m] u32 (each < vocab, checked by the
// host); out [rows, m + 1]. Grid: (rows, 1, 1).
// Wrapper: src/kernels/log_prob.rs. CPU reference: reference::log_prob.

struct Params {
    rows: u32,
    vocab: u32,
    m: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;
override CONTIGUOUS: bool = false;

// Element j of this invocation's share of a row of n values.
fn element(lid: u32, j: u32, per: u32) -> u32 {
    return select(lid + j * WG, lid * per + j, CONTIGUOUS);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let r = inv.wg.x;
    let base = r * p.vocab;
    let per = (p.vocab + WG - 1u) / WG;
    var mx = -3.0e38;
    var bad = 0.0;
    for (var j = 0u; j < per; j++) {
        let i = element(inv.lid, j, per);
        if i < p.vocab {
            let v = logits[base + i];
            // By the exponent bits: all ones is infinite or NaN.
            bad = max(bad, f32((bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u));
            mx = max(mx, v);
        }
    }
    let both = wg_max4(vec4<f32>(mx, bad, 0.0, 0.0), inv);
    var sum = 0.0;
    for (var j = 0u; j < per; j++) {
        let i = element(inv.lid, j, per);
        if i < p.vocab {
            sum += exp(logits[base + i] - both.x);
        }
    }
    var lse = both.x + log(wg_sum(sum, inv));
    if both.y > 0.0 {
        lse = bitcast<f32>(0x7fc00000u);
    }
    let o = r * (p.m + 1u);
    if inv.lid == 0u {
        out[o] = lse;
    }
    for (var j = inv.lid; j < p.m; j += WG) {
        let id = min(ids[r * p.m + j], p.vocab - 1u);
        out[o + 1u + j] = logits[base + id] - lse;
    }
}
