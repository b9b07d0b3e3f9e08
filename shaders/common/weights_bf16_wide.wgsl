// Weight format bf16 read 8 bytes at a time (see weights_data_wide.wgsl): the same bits as
// weights_bf16.wgsl, 16 values per vec4 of u64s. Defines `w_load8`, `w_dot16` and `w_dot32`
// (contracts: weights_f32.wgsl, weights_dot16.wgsl, weights_dot32.wgsl) with
// weights_data_wide.wgsl's `data8`.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn bf16_pair(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

// The four bf16 values of an 8-byte word, widened.
fn bf16x4(v: u64) -> vec4<f32> {
    return vec4<f32>(bf16_pair(low_word(v)), bf16_pair(high_word(v)));
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let q = 2u * (row * (k / 8u) + g);
    return W8(bf16x4(data8(q)), bf16x4(data8(q + 1u)));
}

// Values 16h .. 16h + 16 of the row: one 32-byte load.
fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let v = w_data[row * (k / 16u) + h];
    return dot(bf16x4(v.x), xs.v[0]) + dot(bf16x4(v.y), xs.v[1]) + dot(bf16x4(v.z), xs.v[2])
        + dot(bf16x4(v.w), xs.v[3]);
}

fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    return w_dot16(row, 2u * b, k, xs.lo) + w_dot16(row, 2u * b + 1u, k, xs.hi);
}
