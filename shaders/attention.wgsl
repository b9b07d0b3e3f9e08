// attention: Gemma 2 attention of n_q queries against the KV cache, split over the keys.
//
// For query t at absolute position pos = positions[t], head h, kv head g = h / (heads / kv_heads):
//   s_j = soft_cap(q . k_j * scale, softcap)       for visible keys j
//   out = sum_j softmax(s)_j v_j
// Key j is visible iff j <= pos and pos - j < window (window = 0xffffffff: no window); key j
// lives in cache slot j % capacity. Masked keys are skipped, so they get probability exactly 0,
// as transformers' additive mask after the soft-cap gives. scale is query_pre_attn_scalar^-0.5.
//
// Two phases (one algorithm): `partial`, grid (n_splits, heads, n_q), runs an online softmax
// over split_len consecutive visible keys and writes (max, sum, acc[head_dim]) to `partials`;
// `combine`, grid (heads, n_q), merges the splits. Decode is n_q = 1 with many splits; prefill
// is many queries with the same kernel. head_dim <= 256, a multiple of 4.
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
    split_len: u32,
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

const MAX_HEAD_DIM: u32 = 256u;
// Stands for -infinity in the running max: exp(NEG_BIG - m) is 0 and never NaN.
const NEG_BIG: f32 = -3.0e38;

var<workgroup> q_s: array<vec4<f32>, 64>;
var<workgroup> acc_s: array<vec2<f32>, MAX_HEAD_DIM / 2u>;
var<workgroup> p_s: array<f32, 256>;
// Element index of each scored key's value row in v_cache.
var<workgroup> v_row_s: array<u32, 256>;

// Four cache elements starting at element e (a multiple of 4).
fn k_load4(e: u32) -> vec4<f32> {
    if KV_F16 {
        return vec4<f32>(unpack2x16float(k_cache[e / 2u]), unpack2x16float(k_cache[e / 2u + 1u]));
    }
    return bitcast<vec4<f32>>(vec4<u32>(k_cache[e], k_cache[e + 1u], k_cache[e + 2u], k_cache[e + 3u]));
}

// Two cache elements starting at element e (even).
fn v_load2(e: u32) -> vec2<f32> {
    if KV_F16 {
        return unpack2x16float(v_cache[e / 2u]);
    }
    return bitcast<vec2<f32>>(vec2<u32>(v_cache[e], v_cache[e + 1u]));
}

@compute @workgroup_size(WG)
fn partial(inv: Invocation) {
    let split = inv.wg.x;
    let h = inv.wg.y;
    let t = inv.wg.z;
    let hd = p.head_dim;
    let g = h / (p.heads / p.kv_heads);
    let pos = positions[t];
    var first = 0u;
    if pos + 1u > p.window {
        first = pos + 1u - p.window;
    }
    let lo = first + split * p.split_len;
    let end = min(pos + 1u, lo + p.split_len);
    let qbase = (t * p.heads + h) * hd;
    for (var d = inv.lid; d < hd / 4u; d += WG) {
        q_s[d] = vec4<f32>(q[qbase + 4u * d], q[qbase + 4u * d + 1u], q[qbase + 4u * d + 2u], q[qbase + 4u * d + 3u]);
    }
    for (var d = inv.lid; d < hd / 2u; d += WG) {
        acc_s[d] = vec2<f32>(0.0);
    }
    workgroupBarrier();
    var m = NEG_BIG;
    var l = 0.0;
    let row = p.kv_heads * hd;
    for (var c = lo; c < end; c += WG) {
        let j = c + inv.lid;
        var s = NEG_BIG;
        let kbase = (j % p.capacity) * row + g * hd;
        v_row_s[inv.lid] = kbase;
        if j < end {
            var dot_qk = 0.0;
            for (var d = 0u; d < hd / 4u; d++) {
                dot_qk += dot(k_load4(kbase + 4u * d), q_s[d]);
            }
            s = soft_cap(dot_qk * p.scale, p.softcap);
        }
        let m_new = max(m, wg_max(s, inv));
        var pj = 0.0;
        if j < end {
            pj = exp(s - m_new);
        }
        let correction = exp(m - m_new);
        l = l * correction + wg_sum(pj, inv);
        p_s[inv.lid] = pj;
        workgroupBarrier();
        let nk = min(WG, end - c);
        for (var d = inv.lid; d < hd / 2u; d += WG) {
            var a = acc_s[d] * correction;
            for (var i = 0u; i < nk; i++) {
                a += p_s[i] * v_load2(v_row_s[i] + 2u * d);
            }
            acc_s[d] = a;
        }
        m = m_new;
        workgroupBarrier();
    }
    let pbase = ((t * p.heads + h) * p.n_splits + split) * (hd + 2u);
    if inv.lid == 0u {
        partials[pbase] = m;
        partials[pbase + 1u] = l;
    }
    for (var d = inv.lid; d < hd / 2u; d += WG) {
        partials[pbase + 2u + 2u * d] = acc_s[d].x;
        partials[pbase + 3u + 2u * d] = acc_s[d].y;
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
