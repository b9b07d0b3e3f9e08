// attention.wgsl's `partial` with rope_store.wgsl's work folded in, for decode steps (one
// query): the entry `partial_rope` reads the query straight from the q|k|v products' row
// (q_stride floats, q then k then v), RMS-norms (ROPE_NORM: Gemma 3's q_norm and k_norm) and
// rotates each of its columns' query heads into q_s as rope_store.wgsl computes them, and the
// workgroup whose split holds the query's position stores that position's key (normed,
// rotated) and value of its kv head into the cache, as rope_store.wgsl would, before scoring.
// No other workgroup reads that slot as a visible key (another split's keys lie below the
// position, and the slot's previous key is outside every window the cache holds), so no
// dispatch between the two is needed.
// Needs one query (n_q = 1, QPW = 1) and one workgroup per kv head (group_heads = heads /
// kv_heads), head_dim a multiple of 8 (checked by the wrapper).
// Bindings beside attention.wgsl's: rope_table [max_pos, head_dim / 2] (cos, sin), as
// rope_store.wgsl's table; qk_norms [2, head_dim] (unread without ROPE_NORM).
// CPU reference: reference::rms_norm, reference::rope and reference::kv_store, then
// reference::attention.

@group(0) @binding(8) var<storage, read> rope_table: array<vec2<f32>>;
@group(0) @binding(9) var<storage, read> qk_norms: array<f32>;

// Elements e .. e + 3 of a head row at `base` in q (the products' row), normed with `scale`
// and weights w0 .. of qk_norms (ROPE_NORM).
fn head4(base: u32, e: u32, scale: f32, w0: u32) -> vec4<f32> {
    let x = vec4<f32>(q[base + e], q[base + e + 1u], q[base + e + 2u], q[base + e + 3u]);
    if !ROPE_NORM {
        return x;
    }
    let w = vec4<f32>(
        qk_norms[w0 + e],
        qk_norms[w0 + e + 1u],
        qk_norms[w0 + e + 2u],
        qk_norms[w0 + e + 3u],
    );
    return x * scale * (p.w_offset + w);
}

// Elements e .. e + 3 of the head row at `base`, normed and rotated at position `pos`: element
// i pairs with i + head_dim / 2 (rotate-half), as rope_store.wgsl rotates them.
fn rotated4(base: u32, e: u32, pos: u32, scale: f32, w0: u32) -> vec4<f32> {
    let half = p.head_dim / 2u;
    let first = e < half;
    let x = head4(base, e, scale, w0);
    let y = head4(base, select(e - half, e + half, first), scale, w0);
    let row = min(pos, p.max_pos - 1u) * half + e % half;
    var r: vec4<f32>;
    for (var i = 0u; i < 4u; i++) {
        let cs = rope_table[row + i];
        r[i] = select(x[i] * cs.x + y[i] * cs.y, x[i] * cs.x - y[i] * cs.y, first);
    }
    return r;
}

// This invocation's share of the sum of squares of the head row at `base`, to be summed
// over the workgroup: as rope_store.wgsl takes it (invocation j < head_dim / 4 of a workgroup
// of the same WG its elements 2j, 2j + 1 and their RoPE partners), so that with the same
// reduction the norms, and so q and k, are rope_store's bit for bit. 0 without ROPE_NORM.
fn head_sumsq(base: u32, inv: Invocation) -> f32 {
    if !ROPE_NORM || inv.lid >= p.head_dim / 4u {
        return 0.0;
    }
    let x = head_quad(base, 2u * inv.lid);
    return dot(x, x);
}

// rope_store.wgsl's quad of the head row at `base`: elements e, e + 1 and their RoPE
// partners e + head_dim / 2, e + 1 + head_dim / 2.
fn head_quad(base: u32, e: u32) -> vec4<f32> {
    let half = p.head_dim / 2u;
    return vec4<f32>(q[base + e], q[base + e + 1u], q[base + e + half], q[base + e + 1u + half]);
}

fn norm_scale(sumsq: f32) -> f32 {
    return inverseSqrt(sumsq / f32(p.head_dim) + p.eps);
}

// The columns' queries, normed and rotated, into q_s.
// Invocation j < head_dim / 4 takes rope_store.wgsl's quad of each column (elements 2j,
// 2j + 1 and their RoPE partners): its loads serve the norm's sum and the rotation both, and
// one pair of (cos, sin) rows serves all four elements.
fn rope_queries(pos: u32, inv: Invocation) {
    let nh = columns();
    let hd = p.head_dim;
    let half = hd / 2u;
    let live = inv.lid < hd / 4u;
    let e = 2u * min(inv.lid, hd / 4u - 1u);
    var xs: array<vec4<f32>, MAX_GROUP_HEADS>;
    var sums = vec4<f32>(0.0);
    for (var c = 0u; c < MAX_GROUP_HEADS; c++) {
        if c < nh && live {
            let row = column_row(0u, c, inv);
            let base = row.x * p.q_stride + row.y * hd;
            xs[c] = head_quad(base, e);
            sums[c] = dot(xs[c], xs[c]);
        }
    }
    if ROPE_NORM {
        sums = wg_sum4(sums, inv);
    }
    if live {
        var w = vec4<f32>(0.0);
        if ROPE_NORM {
            w = vec4<f32>(qk_norms[e], qk_norms[e + 1u], qk_norms[e + half], qk_norms[e + 1u + half]);
        }
        let t = min(pos, p.max_pos - 1u) * half + e;
        let c0 = rope_table[t];
        let c1 = rope_table[t + 1u];
        for (var c = 0u; c < MAX_GROUP_HEADS; c++) {
            if c >= nh {
                break;
            }
            var x = xs[c];
            if ROPE_NORM {
                x = x * norm_scale(sums[c]) * (p.w_offset + w);
            }
            // rope_store.wgsl's rotation of its quad.
            let r = vec4<f32>(
                x.x * c0.x - x.z * c0.y,
                x.y * c1.x - x.w * c1.y,
                x.z * c0.x + x.x * c0.y,
                x.w * c1.x + x.y * c1.y,
            );
            let at = c * (hd / 4u);
            q_s[at + e / 4u][e % 4u] = r.x;
            q_s[at + e / 4u][e % 4u + 1u] = r.y;
            q_s[at + (e + half) / 4u][(e + half) % 4u] = r.z;
            q_s[at + (e + half) / 4u][(e + half) % 4u + 1u] = r.w;
        }
    }
}

// Position pos's key (normed, rotated) and value of this workgroup's kv head into the cache,
// by the workgroup whose split holds the position.
fn store_new_key(pos: u32, inv: Invocation) {
    let hd = p.head_dim;
    let kv_dim = p.kv_heads * hd;
    let off = kv_head_offset(inv);
    let t = column_row(0u, 0u, inv).x;
    let k_base = t * p.q_stride + p.heads * hd + off;
    var scale = 1.0;
    if ROPE_NORM {
        scale = norm_scale(wg_sum(head_sumsq(k_base, inv), inv));
    }
    let keys = query_keys(t, inv.wg.x);
    if pos < keys.x || pos >= keys.y {
        return;
    }
    let slot = (pos % p.capacity) * kv_dim + off;
    for (var e = 4u * inv.lid; e < hd; e += 4u * WG) {
        cache_store4(true, slot + e, rotated4(k_base, e, pos, scale, hd));
        let v = k_base + kv_dim + e;
        cache_store4(false, slot + e, vec4<f32>(q[v], q[v + 1u], q[v + 2u], q[v + 3u]));
    }
}

@compute @workgroup_size(WG)
fn partial_rope(inv: Invocation) {
    let pos = positions[column_row(0u, 0u, inv).x];
    rope_queries(pos, inv);
    store_new_key(pos, inv);
    // The stored key and value, read back by this workgroup's scoring.
    storageBarrier();
    attend(inv);
}
