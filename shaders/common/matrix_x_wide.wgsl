// matrix_x.wgsl's twin on CPU adapters with SHADER_INT64: the same `x` binding as 32-byte
// words, 8 entries in four 8-byte components rather than eight 4-byte ones (llvmpipe loads a
// component at either width for the same cost; see weights_data_wide.wgsl).
@group(0) @binding(3) var<storage, read> x: array<vec4<u64>>;

// The two f32 entries of an 8-byte word.
fn f32_pair(v: u64) -> vec2<f32> {
    return bitcast<vec2<f32>>(vec2<u32>(u32(v & 0xfffffffflu), u32(v >> 32u)));
}

// Entries 8i .. 8i + 8 of x.
fn x_load8(i: u32) -> X8 {
    let v = x[i];
    return X8(vec4<f32>(f32_pair(v.x), f32_pair(v.y)), vec4<f32>(f32_pair(v.z), f32_pair(v.w)));
}

// As matrix_x.wgsl's.
fn x_shared8(i: u32, inv: Invocation) -> X8 {
    var v = X8(vec4<f32>(0.0), vec4<f32>(0.0));
    if one_lane(inv) {
        v = x_load8(i);
    }
    return X8(from_one_lane(v.lo), from_one_lane(v.hi));
}
