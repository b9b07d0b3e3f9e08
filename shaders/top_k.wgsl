// top_k: the k largest values of x [n] (or of soft_cap(x, cap)) and their indices, in
// descending order (equal values: smaller index first, as torch.topk and argmax order them);
// argmax is k = 1. Decoding reads
// back these 2k words instead of the logits.
//
// Phase `partial`, grid (n_slices): workgroup s (WG invocations; 1 on CPU adapters) ranks the
// slice [s * slice, (s + 1) * slice) in one read of it: each invocation keeps its own k best
// in a sorted private list (an element enters only if it beats the list's last), then k
// rounds of a workgroup argmax over the lists'
// heads pop the slice's k best into cand_val / cand_idx [n_slices, k]. Phase `merge`, grid (1):
// ranks the n_slices * k candidates into values / indices [k]: on GPUs each round r finds the
// best candidate ranked strictly below round r - 1's pick; on CPU adapters (WG = 1) one
// invocation offers every candidate to one sorted list in a single pass. k <= MAX_K.
// Missing entries (k larger than a slice) get value -inf and index 0xffffffff.
// Bindings: params; x; cand_val; cand_idx; values; indices.
// Wrapper: src/kernels/top_k.rs. CPU reference: reference::top_k.

struct Params {
    n: u32,
    k: u32,
    slice: u32,
    n_slices: u32,
    // Ranks soft_cap(x, cap) (math.wgsl's, as the soft_cap kernel computes it) instead of x
    // when > 0: a final logit soft-cap folded in, the logits left as the product wrote them.
    cap: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cand_val: array<f32>;
@group(0) @binding(3) var<storage, read_write> cand_idx: array<u32>;
@group(0) @binding(4) var<storage, read_write> values: array<f32>;
@group(0) @binding(5) var<storage, read_write> indices: array<u32>;

override WG: u32 = 256u;

const NONE: u32 = 0xffffffffu;

fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

// Whether (v, i) ranks strictly below (pv, pi): smaller value, or equal value and larger index.
fn below(v: f32, i: u32, pv: f32, pi: u32) -> bool {
    return v < pv || (v == pv && i > pi);
}

// The private lists' length: the kernel's largest k (top_k.rs: MAX_K).
const MAX_K: u32 = 64u;

// This invocation's best elements, best first.
var<private> vals: array<f32, MAX_K>;
var<private> idxs: array<u32, MAX_K>;

// Puts (v, i) into the first `count` entries of the list (at most k kept) if it ranks above
// the last of k, shifting the ones below it down; returns the new count.
fn offer(v: f32, i: u32, count: u32, k: u32) -> u32 {
    var at = min(count, k - 1u);
    while at > 0u && below(vals[at - 1u], idxs[at - 1u], v, i) {
        vals[at] = vals[at - 1u];
        idxs[at] = idxs[at - 1u];
        at -= 1u;
    }
    vals[at] = v;
    idxs[at] = i;
    return min(count + 1u, k);
}

@compute @workgroup_size(WG)
fn partial(inv: Invocation) {
    let s = inv.wg.x;
    let lo = s * p.slice;
    let hi = min(p.n, lo + p.slice);
    let k = min(p.k, MAX_K);
    // Elements come in increasing index, so an equal value never passes one already held. The
    // list's last entry, the bar to pass, is held in registers too: most elements fail it.
    var count = 0u;
    var bar = ArgMax(neg_inf(), NONE);
    for (var i = lo + inv.lid; i < hi; i += WG) {
        let v = soft_cap(x[i], p.cap);
        if count < k || below(bar.value, bar.index, v, i) {
            count = offer(v, i, count, k);
            bar = ArgMax(vals[count - 1u], idxs[count - 1u]);
        }
    }
    var head = 0u;
    for (var r = 0u; r < k; r++) {
        var mine = ArgMax(neg_inf(), NONE);
        if head < count {
            mine = ArgMax(vals[head], idxs[head]);
        }
        let best = wg_argmax(mine.value, mine.index, inv);
        if head < count && best.index != NONE && idxs[head] == best.index {
            head += 1u;
        }
        if inv.lid == 0u {
            cand_val[s * p.k + r] = best.value;
            cand_idx[s * p.k + r] = best.index;
        }
    }
}

@compute @workgroup_size(WG)
fn merge(inv: Invocation) {
    let total = p.n_slices * p.k;
    if WG == 1u {
        // One invocation (CPU adapters): every candidate offered to one list in one pass.
        let k = min(p.k, MAX_K);
        var count = 0u;
        var bar = ArgMax(neg_inf(), NONE);
        for (var c = 0u; c < total; c++) {
            let i = cand_idx[c];
            let v = cand_val[c];
            if i != NONE && (count < k || below(bar.value, bar.index, v, i)) {
                count = offer(v, i, count, k);
                bar = ArgMax(vals[count - 1u], idxs[count - 1u]);
            }
        }
        for (var r = 0u; r < p.k; r++) {
            var best = ArgMax(neg_inf(), NONE);
            if r < count {
                best = ArgMax(vals[r], idxs[r]);
            }
            values[r] = best.value;
            indices[r] = best.index;
        }
        return;
    }
    var prev = ArgMax(bitcast<f32>(0x7f800000u), NONE);
    for (var r = 0u; r < p.k; r++) {
        var best = ArgMax(neg_inf(), NONE);
        for (var c = inv.lid; c < total; c += WG) {
            let i = cand_idx[c];
            let v = cand_val[c];
            if i != NONE && (r == 0u || below(v, i, prev.value, prev.index)) {
                best = argmax_merge(best, ArgMax(v, i));
            }
        }
        prev = wg_argmax(best.value, best.index, inv);
        if inv.lid == 0u {
            values[r] = prev.value;
            indices[r] = prev.index;
        }
    }
}
