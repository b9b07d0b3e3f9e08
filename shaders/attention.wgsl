// attention: Gemma 2 attention of n_q queries against the KV cache, split over the keys.
//
// For query t at absolute position pos = positions[t], head h, kv head g = h / (heads / kv_heads):
//   s_j = soft_cap(q . k_j * scale, softcap)       for visible keys j
//   out = sum_j softmax(s)_j v_j
// Key j is visible iff j <= pos and pos - j < window (window = 0xffffffff: no window); key j
// lives in cache slot j % capacity. Masked keys are skipped, so they get probability exactly 0,
// as transformers' additive mask after the soft-cap gives. scale is query_pre_attn_scalar^-0.5.
//
// Two phases (one algorithm): `partial`, grid (n_splits, heads / group_heads, n_q), runs an
// online softmax over one split of the visible keys for `group_heads` query heads of one kv
// head at once (each key and value row read once for them all, not once per query head) and
// writes (max, sum, acc[head_dim]) per head to `partials`; `combine`, grid (heads, n_q), merges
// the splits (with one split, `partial` writes the output itself and `combine` is not
// dispatched). The visible keys of a query are cut into n_splits equal splits of at least WG * KPL
// keys, sized to its current position (not to the cache's capacity). Decode is n_q = 1 with
// many splits; prefill is many queries with the same kernel. head_dim <= 256, a multiple of 4;
// group_heads <= 4 divides heads / kv_heads.
// Bindings: params; positions [n_q] u32; q [n_q, heads, head_dim]; k_cache, v_cache (see
// kv_store.wgsl); partials [n_q, heads, n_splits, head_dim + 2]; out [n_q, heads, head_dim].
// Wrapper: src/kernels/attention.rs. CPU reference: reference::attention.

struct Params {
    n_q: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    capacity: u32,
    window: u32,
    group_heads: u32,
    n_splits: u32,
    scale: f32,
    softcap: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<u32>;
@group(0) @binding(4) var<storage, read> v_cache: array<u32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;
override KV_F16: bool = true;
// Keys each invocation scores per step: 1 (neighbouring invocations on neighbouring keys, for
// GPUs), 2 or 4 (each invocation on a run of keys, for CPU adapters).
override KPL: u32 = 1u;

const MAX_HEAD_DIM: u32 = 256u;
// Query heads one workgroup serves at most (one vec4 of scores per key).
const MAX_GROUP_HEADS: u32 = 4u;
// Stands for -infinity in the running max: exp(NEG_BIG - m) is 0 and never NaN.
const NEG_BIG: f32 = -3.0e38;

// Head i's query at q_s[i * head_dim / 4 ..], its weighted values at acc_s[i * head_dim / 2 ..].
var<workgroup> q_s: array<vec4<f32>, MAX_GROUP_HEADS * MAX_HEAD_DIM / 4u>;
var<workgroup> acc_s: array<vec2<f32>, MAX_GROUP_HEADS * MAX_HEAD_DIM / 2u>;
// Keys scored per step at most: WG * KPL <= 256 (src/kernels/attention.rs), which keeps the
// workgroup memory within 20 KiB.
const MAX_STEP: u32 = 256u;
// Each scored key's probability for the (up to four) heads.
var<workgroup> p_s: array<vec4<f32>, MAX_STEP>;
// Element index of each scored key's value row in v_cache.
var<workgroup> v_row_s: array<u32, MAX_STEP>;

// Four cache elements starting at element e (a multiple of 4).
fn k_load4(e: u32) -> vec4<f32> {
    if KV_F16 {
        return vec4<f32>(unpack2x16float(k_cache[e / 2u]), unpack2x16float(k_cache[e / 2u + 1u]));
    }
    return bitcast<vec4<f32>>(vec4<u32>(k_cache[e], k_cache[e + 1u], k_cache[e + 2u], k_cache[e + 3u]));
}

// Four value elements starting at element e (a multiple of 4).
fn v_load4(e: u32) -> vec4<f32> {
    if KV_F16 {
        return vec4<f32>(unpack2x16float(v_cache[e / 2u]), unpack2x16float(v_cache[e / 2u + 1u]));
    }
    return bitcast<vec4<f32>>(vec4<u32>(v_cache[e], v_cache[e + 1u], v_cache[e + 2u], v_cache[e + 3u]));
}

// Head i's weighted values, elements 4d .. 4d + 3 (acc_s holds them as pairs).
fn acc_load(i: u32, d: u32, hd: u32) -> vec4<f32> {
    let at = i * hd / 2u + 2u * d;
    return vec4<f32>(acc_s[at], acc_s[at + 1u]);
}

fn acc_store(i: u32, d: u32, hd: u32, a: vec4<f32>) {
    let at = i * hd / 2u + 2u * d;
    acc_s[at] = a.xy;
    acc_s[at + 1u] = a.zw;
}

// A key's dot products with the (up to four) heads' queries, heads past nh left 0.
fn head_dots(k4: vec4<f32>, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>, nh: u32) -> vec4<f32> {
    var r = vec4<f32>(dot(k4, q0), 0.0, 0.0, 0.0);
    if nh > 1u {
        r.y = dot(k4, q1);
    }
    if nh > 2u {
        r.z = dot(k4, q2);
        r.w = dot(k4, q3);
    }
    return r;
}

// A key's scores for the heads (soft-capped and scaled), NEG_BIG where it is not visible.
fn key_scores(dots: vec4<f32>, visible: bool, nh: u32) -> vec4<f32> {
    var s = vec4<f32>(NEG_BIG);
    if visible {
        for (var i = 0u; i < nh; i++) {
            s[i] = soft_cap(dots[i] * p.scale, p.softcap);
        }
    }
    return s;
}

// A key's unnormalised probabilities under the running max m: 0 where it is not visible
// and for heads the workgroup does not serve.
fn key_probs(s: vec4<f32>, m: vec4<f32>, visible: bool, live: vec4<bool>) -> vec4<f32> {
    if visible {
        return select(vec4<f32>(0.0), exp(s - m), live);
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(WG)
fn partial(inv: Invocation) {
    let split = inv.wg.x;
    let h0 = inv.wg.y * p.group_heads;
    let t = inv.wg.z;
    let hd = p.head_dim;
    let nh = p.group_heads;
    let g = h0 / (p.heads / p.kv_heads);
    let pos = positions[t];
    var first = 0u;
    if pos + 1u > p.window {
        first = pos + 1u - p.window;
    }
    let split_len = max(WG * KPL, (pos + 1u - first + p.n_splits - 1u) / p.n_splits);
    let lo = first + split * split_len;
    let end = min(pos + 1u, lo + split_len);
    let qbase = (t * p.heads + h0) * hd;
    for (var d = inv.lid; d < nh * hd / 4u; d += WG) {
        let e = qbase + 4u * d;
        q_s[d] = vec4<f32>(q[e], q[e + 1u], q[e + 2u], q[e + 3u]);
    }
    for (var d = inv.lid; d < nh * hd / 2u; d += WG) {
        acc_s[d] = vec2<f32>(0.0);
    }
    workgroupBarrier();
    let live = vec4<bool>(true, nh > 1u, nh > 2u, nh > 3u);
    var m = vec4<f32>(NEG_BIG);
    var l = vec4<f32>(0.0);
    let row = p.kv_heads * hd;
    let hd4 = hd / 4u;
    let step = WG * KPL;
    for (var c = lo; c < end; c += step) {
        // This invocation's keys: KPL neighbours, so a CPU walks their rows in one run and
        // loads each query element once for them all (with subgroups, one invocation loads
        // it for its subgroup: an index that is the same for every invocation is still a
        // load per invocation on a CPU adapter). A key past `end` is scored from a
        // row that exists (its slot wraps) and then masked.
        let j0 = c + inv.lid * KPL;
        let kb = vec4<u32>(
            (j0 % p.capacity) * row + g * hd,
            ((j0 + 1u) % p.capacity) * row + g * hd,
            ((j0 + 2u) % p.capacity) * row + g * hd,
            ((j0 + 3u) % p.capacity) * row + g * hd,
        );
        var d0 = vec4<f32>(0.0);
        var d1 = vec4<f32>(0.0);
        var d2 = vec4<f32>(0.0);
        var d3 = vec4<f32>(0.0);
        for (var d = 0u; d < hd4; d++) {
            var q0 = vec4<f32>(0.0);
            var q1 = vec4<f32>(0.0);
            var q2 = vec4<f32>(0.0);
            var q3 = vec4<f32>(0.0);
            if one_lane(inv) {
                q0 = q_s[d];
                if nh > 1u {
                    q1 = q_s[hd4 + d];
                }
                if nh > 2u {
                    q2 = q_s[2u * hd4 + d];
                    q3 = q_s[3u * hd4 + d];
                }
            }
            q0 = from_one_lane(q0);
            q1 = from_one_lane(q1);
            q2 = from_one_lane(q2);
            q3 = from_one_lane(q3);
            d0 += head_dots(k_load4(kb.x + 4u * d), q0, q1, q2, q3, nh);
            if KPL > 1u {
                d1 += head_dots(k_load4(kb.y + 4u * d), q0, q1, q2, q3, nh);
            }
            if KPL > 2u {
                d2 += head_dots(k_load4(kb.z + 4u * d), q0, q1, q2, q3, nh);
                d3 += head_dots(k_load4(kb.w + 4u * d), q0, q1, q2, q3, nh);
            }
        }
        let s0 = key_scores(d0, j0 < end, nh);
        let s1 = key_scores(d1, KPL > 1u && j0 + 1u < end, nh);
        let s2 = key_scores(d2, KPL > 2u && j0 + 2u < end, nh);
        let s3 = key_scores(d3, KPL > 2u && j0 + 3u < end, nh);
        let m_new = max(m, wg_max4(max(max(s0, s1), max(s2, s3)), inv));
        let p0 = key_probs(s0, m_new, j0 < end, live);
        let p1 = key_probs(s1, m_new, KPL > 1u && j0 + 1u < end, live);
        let p2 = key_probs(s2, m_new, KPL > 2u && j0 + 2u < end, live);
        let p3 = key_probs(s3, m_new, KPL > 2u && j0 + 3u < end, live);
        let at = inv.lid * KPL;
        p_s[at] = p0;
        v_row_s[at] = kb.x;
        if KPL > 1u {
            p_s[at + 1u] = p1;
            v_row_s[at + 1u] = kb.y;
        }
        if KPL > 2u {
            p_s[at + 2u] = p2;
            v_row_s[at + 2u] = kb.z;
            p_s[at + 3u] = p3;
            v_row_s[at + 3u] = kb.w;
        }
        let sum = p0 + p1 + p2 + p3;
        let correction = exp(m - m_new);
        l = l * correction + wg_sum4(sum, inv);
        workgroupBarrier();
        let nk = min(step, end - c);
        // Each invocation weighs four neighbouring value elements of every scored key, so a
        // key's probabilities and row are loaded once per invocation, and with subgroups once
        // per subgroup (by one invocation, handed to the others): the loops stay uniform for
        // that, an invocation past the head's last element computing and storing nothing.
        for (var d0 = 0u; d0 < hd / 4u; d0 += WG) {
            let d = min(d0 + inv.lid, hd / 4u - 1u);
            var a0 = acc_load(0u, d, hd) * correction.x;
            var a1 = vec4<f32>(0.0);
            var a2 = vec4<f32>(0.0);
            var a3 = vec4<f32>(0.0);
            if nh > 1u {
                a1 = acc_load(1u, d, hd) * correction.y;
            }
            if nh > 2u {
                a2 = acc_load(2u, d, hd) * correction.z;
                a3 = acc_load(3u, d, hd) * correction.w;
            }
            for (var i = 0u; i < nk; i++) {
                var pv = vec4<f32>(0.0);
                var rv = vec4<f32>(0.0);
                if one_lane(inv) {
                    pv = p_s[i];
                    rv.x = bitcast<f32>(v_row_s[i]);
                }
                let pi = from_one_lane(pv);
                let v4 = v_load4(bitcast<u32>(from_one_lane(rv).x) + 4u * d);
                a0 += pi.x * v4;
                a1 += pi.y * v4;
                a2 += pi.z * v4;
                a3 += pi.w * v4;
            }
            if d0 + inv.lid < hd / 4u {
                acc_store(0u, d, hd, a0);
                if nh > 1u {
                    acc_store(1u, d, hd, a1);
                }
                if nh > 2u {
                    acc_store(2u, d, hd, a2);
                }
                if nh > 3u {
                    acc_store(3u, d, hd, a3);
                }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var i = 0u; i < nh; i++) {
        // A single split is the whole softmax: the output directly (what `combine` would
        // compute from it, exp(0) being 1), and no combine dispatch.
        if p.n_splits == 1u {
            let obase = (t * p.heads + h0 + i) * hd;
            for (var d = inv.lid; d < hd / 2u; d += WG) {
                let a = acc_s[i * hd / 2u + d];
                out[obase + 2u * d] = a.x / l[i];
                out[obase + 2u * d + 1u] = a.y / l[i];
            }
            continue;
        }
        let pbase = ((t * p.heads + h0 + i) * p.n_splits + split) * (hd + 2u);
        if inv.lid == 0u {
            partials[pbase] = m[i];
            partials[pbase + 1u] = l[i];
        }
        for (var d = inv.lid; d < hd / 2u; d += WG) {
            let a = acc_s[i * hd / 2u + d];
            partials[pbase + 2u + 2u * d] = a.x;
            partials[pbase + 3u + 2u * d] = a.y;
        }
    }
}

@compute @workgroup_size(WG)
fn combine(inv: Invocation) {
    let h = inv.wg.x;
    let t = inv.wg.y;
    let hd = p.head_dim;
    let base = (t * p.heads + h) * p.n_splits * (hd + 2u);
    var m = NEG_BIG;
    for (var s = 0u; s < p.n_splits; s++) {
        m = max(m, partials[base + s * (hd + 2u)]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.n_splits; s++) {
        let b = base + s * (hd + 2u);
        l += exp(partials[b] - m) * partials[b + 1u];
    }
    for (var d = inv.lid; d < hd; d += WG) {
        var a = 0.0;
        for (var s = 0u; s < p.n_splits; s++) {
            let b = base + s * (hd + 2u);
            a += exp(partials[b] - m) * partials[b + 2u + d];
        }
        out[(t * p.heads + h) * hd + d] = a / l;
    }
}
