// attention_cache.wgsl's bindings and loads through 8-byte words (SHADER_INT64), for CPU
// adapters: llvmpipe turns each invocation's storage load into a bounds-checked scalar load
// per component, so a key's 8 f16 elements cost two components here against four, and a
// value's 4 one against four (the 16-byte word around them).

@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<u64>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<u64>>;

fn low_word(v: u64) -> u32 {
    return u32(v & 0xfffffffflu);
}

fn high_word(v: u64) -> u32 {
    return u32(v >> 32u);
}

// The cache's 8-byte word i, of the keys or of the values.
fn k_word(i: u32) -> u64 {
    return k_cache[i / 4u][i % 4u];
}

fn v_word(i: u32) -> u64 {
    return v_cache[i / 4u][i % 4u];
}

fn halves4(v: u64) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(low_word(v)), unpack2x16float(high_word(v)));
}

fn floats4(a: u64, b: u64) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(low_word(a), high_word(a), low_word(b), high_word(b)));
}

// Eight key elements starting at element e (a multiple of 8), as two vec4s.
fn k_load8(e: u32) -> mat2x4<f32> {
    if KV_F16 {
        return mat2x4<f32>(halves4(k_word(e / 4u)), halves4(k_word(e / 4u + 1u)));
    }
    let w = k_cache[e / 8u];
    return mat2x4<f32>(floats4(w.x, w.y), floats4(w.z, w.w));
}

// Four value elements starting at element e (a multiple of 4).
fn v_load4(e: u32) -> vec4<f32> {
    if KV_F16 {
        return halves4(v_word(e / 4u));
    }
    return floats4(v_word(e / 2u), v_word(e / 2u + 1u));
}

fn words_u64(lo: u32, hi: u32) -> u64 {
    return u64(lo) | (u64(hi) << 32u);
}

// Four elements from element e (a multiple of 4) into a cache row: the keys' (is_k) or the
// values', as kv_store.wgsl stores them (common/attention_rope.wgsl's entry).
fn cache_store4(is_k: bool, e: u32, x: vec4<f32>) {
    if KV_F16 {
        let w = words_u64(pack2x16float(x.xy), pack2x16float(x.zw));
        let i = e / 4u;
        if is_k {
            k_cache[i / 4u][i % 4u] = w;
        } else {
            v_cache[i / 4u][i % 4u] = w;
        }
        return;
    }
    let b = bitcast<vec4<u32>>(x);
    let i = e / 2u;
    if is_k {
        k_cache[i / 4u][i % 4u] = words_u64(b.x, b.y);
        k_cache[i / 4u][i % 4u + 1u] = words_u64(b.z, b.w);
    } else {
        v_cache[i / 4u][i % 4u] = words_u64(b.x, b.y);
        v_cache[i / 4u][i % 4u + 1u] = words_u64(b.z, b.w);
    }
}
