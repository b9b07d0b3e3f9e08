// Weight format f32 read 8 bytes at a time (see weights_data_wide.wgsl): the same values as
// weights_f32.wgsl, 8 per vec4 of u64s, in row tiles. Defines `w_load8`, `w_dot16` and `w_dot32`
// (contracts: weights_f32.wgsl, weights_dot16.wgsl, weights_dot32.wgsl).

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The two f32 values of each of two 8-byte words.
fn f32x4(a: u64, b: u64) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(low_word(a), high_word(a), low_word(b), high_word(b)));
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let v = w_data[word_at(row, g, k / 8u)];
    return W8(f32x4(v.x, v.y), f32x4(v.z, v.w));
}

fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let a = w_load8(row, 2u * h, k);
    let b = w_load8(row, 2u * h + 1u, k);
    return dot(a.lo, xs.v[0]) + dot(a.hi, xs.v[1]) + dot(b.lo, xs.v[2]) + dot(b.hi, xs.v[3]);
}

fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    return w_dot16(row, 2u * b, k, xs.lo) + w_dot16(row, 2u * b + 1u, k, xs.hi);
}
