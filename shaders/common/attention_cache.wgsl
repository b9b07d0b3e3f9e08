// attention.wgsl's KV cache bindings and their loads, in 16-byte words (the cache layout:
// kv_store.wgsl; an element is an f16, or an f32 without KV_F16). Its twin
// attention_cache_wide.wgsl reads 8-byte words, on CPU adapters with SHADER_INT64.

@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<u32>>;

// Eight key elements starting at element e (a multiple of 8), as two vec4s.
fn k_load8(e: u32) -> mat2x4<f32> {
    if KV_F16 {
        let w = k_cache[e / 8u];
        return mat2x4<f32>(
            vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
            vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)),
        );
    }
    return mat2x4<f32>(bitcast<vec4<f32>>(k_cache[e / 4u]), bitcast<vec4<f32>>(k_cache[e / 4u + 1u]));
}

// Four value elements starting at element e (a multiple of 4): one 16-byte load.
fn v_load4(e: u32) -> vec4<f32> {
    if KV_F16 {
        let w = v_cache[e / 8u];
        let h = select(w.xy, w.zw, (e / 4u) % 2u == 1u);
        return vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y));
    }
    return bitcast<vec4<f32>>(v_cache[e / 4u]);
}


// Four elements from element e (a multiple of 4) into a cache row: the keys' (is_k) or the
// values', as kv_store.wgsl stores them (common/attention_rope.wgsl's entry).
fn cache_store4(is_k: bool, e: u32, x: vec4<f32>) {
    if KV_F16 {
        let w = vec2<u32>(pack2x16float(x.xy), pack2x16float(x.zw));
        let i = e / 8u;
        let half = (e / 4u) % 2u;
        if is_k {
            k_cache[i][2u * half] = w.x;
            k_cache[i][2u * half + 1u] = w.y;
        } else {
            v_cache[i][2u * half] = w.x;
            v_cache[i][2u * half + 1u] = w.y;
        }
        return;
    }
    if is_k {
        k_cache[e / 4u] = bitcast<vec4<u32>>(x);
    } else {
        v_cache[e / 4u] = bitcast<vec4<u32>>(x);
    }
}
