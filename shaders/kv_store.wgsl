// kv_store: writes the new keys and values into the KV cache at slot (position % capacity).
//
// The cache holds rows of kv_dim = kv_heads * head_dim elements, as f16 pairs (KV_F16, packed
// with pack2x16float, which needs no SHADER_F16) or as f32 bits. Keys arrive already rotated.
// Bindings: params; positions [n] u32; k [n, kv_dim]; v [n, kv_dim]; k_cache, v_cache
// [capacity, kv_dim] as u32 words. Grid: ceil(n * kv_dim / 2 / WG) as 2-D, one pair each.
// Wrapper: src/kernels/kv_store.rs. CPU reference: reference::kv_store.

struct Params {
    n: u32,
    kv_dim: u32,
    capacity: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> k: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<u32>;

override WG: u32 = 256u;
override KV_F16: bool = true;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let id = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    let pairs = p.kv_dim / 2u;
    if id >= p.n * pairs {
        return;
    }
    let t = id / pairs;
    let e = id % pairs;
    let slot = positions[t] % p.capacity;
    let kp = k[id];
    let vp = v[id];
    if KV_F16 {
        k_cache[slot * pairs + e] = pack2x16float(kp);
        v_cache[slot * pairs + e] = pack2x16float(vp);
    } else {
        let w = slot * p.kv_dim + 2u * e;
        k_cache[w] = bitcast<u32>(kp.x);
        k_cache[w + 1u] = bitcast<u32>(kp.y);
        v_cache[w] = bitcast<u32>(vp.x);
        v_cache[w + 1u] = bitcast<u32>(vp.y);
    }
}
