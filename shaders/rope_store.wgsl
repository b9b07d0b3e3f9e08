// rope_store: the attention block's step between the q/k/v products and attention, in one
// dispatch: (Gemma 3) each q and k head RMS-normed with its own weights, q and k rotated
// (rotate-half RoPE from the (cos, sin) table, see below), q written out for attention, and k
// and v stored into the KV cache at slot (position % capacity) as kv_store.wgsl does.
// RoPE: dimension i pairs with i + head_dim / 2, x'[i] = x[i] cos(a) - x[i + h/2] sin(a) and
// x'[i + h/2] = x[i + h/2] cos(a) + x[i] sin(a), a = pos * theta^(-2i / head_dim); the angles
// come from `table`, computed once on the CPU exactly as transformers does (GPU sin/cos are
// only accurate on [-pi, pi]).
//
// Workgroup (s, t) serves head slot s of token t: slots [0, heads) are query heads, slots
// [heads, heads + kv_heads) key heads (whose workgroup also stores that head's values).
// Invocation j < head_dim / 4 holds elements 2j, 2j + 1 and their RoPE partners 2j + h/2,
// 2j + 1 + h/2, so norm, rotation and f16 packing need no exchange but one sum.
// Norm: x / sqrt(mean(x^2) + eps) * (w_offset + w), with w = norms[0 .. head_dim) for q heads
// and norms[head_dim .. 2 head_dim) for k heads (NORM; Gemma 3's q_norm and k_norm).
// Bindings: params; positions [n] u32; table [max_pos, head_dim / 2] (cos, sin); norms
// [2, head_dim] (unread without NORM); qkv [n, q_dim + 2 kv_dim], each row q, k, v side by
// side as the products wrote them; q [n, heads, head_dim] out; k_cache, v_cache [capacity,
// kv_dim] (see kv_store.wgsl). Grid: (heads + kv_heads, n).
// head_dim a multiple of 4, at most 4 WG.
// Decode steps have attention do this work (common/attention_rope.wgsl) where the adapter
// binds enough storage buffers; prefill steps run this kernel.
// Wrapper: src/kernels/rope_store.rs. CPU reference: reference::rms_norm, reference::rope and
// reference::kv_store, in that order.

struct Params {
    n: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_pos: u32,
    capacity: u32,
    eps: f32,
    w_offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> norms: array<f32>;
@group(0) @binding(4) var<storage, read> qkv: array<f32>;
@group(0) @binding(5) var<storage, read_write> q: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<u32>;

override WG: u32 = 64u;
override KV_F16: bool = true;
override NORM: bool = false;

// Elements e0, e0 + 1, e0 + half, e0 + 1 + half of a [head_dim] vector at `base`.
fn quad(e0: u32, half: u32) -> vec4<u32> {
    return vec4<u32>(e0, e0 + 1u, e0 + half, e0 + 1u + half);
}

// The four elements into cache row element `base` (elements e of quad(e0, half)).
fn store(is_k: bool, base: u32, e: vec4<u32>, x: vec4<f32>) {
    if KV_F16 {
        let lo = pack2x16float(x.xy);
        let hi = pack2x16float(x.zw);
        if is_k {
            k_cache[(base + e.x) / 2u] = lo;
            k_cache[(base + e.z) / 2u] = hi;
        } else {
            v_cache[(base + e.x) / 2u] = lo;
            v_cache[(base + e.z) / 2u] = hi;
        }
    } else {
        for (var i = 0u; i < 4u; i++) {
            if is_k {
                k_cache[base + e[i]] = bitcast<u32>(x[i]);
            } else {
                v_cache[base + e[i]] = bitcast<u32>(x[i]);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let s = inv.wg.x;
    let t = inv.wg.y;
    let hd = p.head_dim;
    let half = hd / 2u;
    let is_q = s < p.heads;
    let kv_dim = p.kv_heads * hd;
    let q_dim = p.heads * hd;
    // This head's first element in qkv (a q head, or a k head whose v head is kv_dim on).
    let base = t * (q_dim + 2u * kv_dim) + s * hd;
    let pos = positions[t];
    // Invocations past head_dim / 4 only take part in the sum, with zeros.
    let live = inv.lid < hd / 4u;
    let e = quad(2u * min(inv.lid, hd / 4u - 1u), half);
    var x = vec4<f32>(0.0);
    if live {
        for (var i = 0u; i < 4u; i++) {
            x[i] = qkv[base + e[i]];
        }
    }
    if NORM {
        let scale = inverseSqrt(wg_sum(dot(x, x), inv) / f32(hd) + p.eps);
        let w0 = select(hd, 0u, is_q);
        for (var i = 0u; i < 4u; i++) {
            x[i] = x[i] * scale * (p.w_offset + norms[w0 + e[i]]);
        }
    }
    if !live {
        return;
    }
    let row = min(pos, p.max_pos - 1u) * half;
    let c0 = table[row + e.x];
    let c1 = table[row + e.y];
    let r = vec4<f32>(
        x.x * c0.x - x.z * c0.y,
        x.y * c1.x - x.w * c1.y,
        x.z * c0.x + x.x * c0.y,
        x.w * c1.x + x.y * c1.y,
    );
    if is_q {
        for (var i = 0u; i < 4u; i++) {
            q[(t * p.heads + s) * hd + e[i]] = r[i];
        }
        return;
    }
    let cache_base = (pos % p.capacity) * kv_dim + (s - p.heads) * hd;
    store(true, cache_base, e, r);
    var vx = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        vx[i] = qkv[base + kv_dim + e[i]];
    }
    store(false, cache_base, e, vx);
}
