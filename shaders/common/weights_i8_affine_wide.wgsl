// Weight format i8_affine read 8 bytes at a time (see weights_data_wide.wgsl): the same codes
// and (scale, offset) pairs as weights_i8_affine.wgsl, `w_data` a vec4 of u64s, 32 codes (two
// groups) per vec4. Defines `w_load8`, `w_dot16` and `w_dot32` (contracts: weights_f32.wgsl,
// weights_dot16.wgsl, weights_dot32.wgsl). CPU reference: HostMatrix::dequantize.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let v = data8(row * (k / 8u) + g);
    let group = row * (k / 16u) + g / 2u;
    let s = bitcast<f32>(w_scales[2u * group]);
    let o = bitcast<f32>(w_scales[2u * group + 1u]);
    return W8(i8x4(low_word(v)) * s + o, i8x4(high_word(v)) * s + o);
}

// Group `group` (16 codes in two u64s) against xs: s sum q x + o sum x.
fn group_dot(group: u32, a: u64, b: u64, xs: X16) -> f32 {
    let q = dot(i8x4(low_word(a)), xs.v[0]) + dot(i8x4(high_word(a)), xs.v[1])
        + dot(i8x4(low_word(b)), xs.v[2]) + dot(i8x4(high_word(b)), xs.v[3]);
    return bitcast<f32>(w_scales[2u * group]) * q + bitcast<f32>(w_scales[2u * group + 1u]) * xs.sum;
}

fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let group = row * (k / 16u) + h;
    return group_dot(group, data8(2u * group), data8(2u * group + 1u), xs);
}

fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    let v = w_data[row * (k / 32u) + b];
    let group = row * (k / 16u) + 2u * b;
    return group_dot(group, v.x, v.y, xs.lo) + group_dot(group + 1u, v.z, v.w, xs.hi);
}
