// Weight format f16 read 8 bytes at a time (see weights_data_wide.wgsl): the same bits as
// weights_f16.wgsl, 16 values per vec4 of u64s. Defines `w_load8`, `w_dot16` and `w_dot32`
// (contracts: weights_f32.wgsl, weights_dot16.wgsl, weights_dot32.wgsl) with
// weights_data_wide.wgsl's `data8`.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The four f16 values of an 8-byte word, widened.
fn f16x4(v: u64) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(low_word(v)), unpack2x16float(high_word(v)));
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let q = 2u * (row * (k / 8u) + g);
    return W8(f16x4(data8(q)), f16x4(data8(q + 1u)));
}

// Values 16h .. 16h + 16 of the row: one 32-byte load.
fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let v = w_data[row * (k / 16u) + h];
    return dot(f16x4(v.x), xs.v[0]) + dot(f16x4(v.y), xs.v[1]) + dot(f16x4(v.z), xs.v[2])
        + dot(f16x4(v.w), xs.v[3]);
}

fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    return w_dot16(row, 2u * b, k, xs.lo) + w_dot16(row, 2u * b + 1u, k, xs.hi);
}
