// `w_load8`, `w_dot16` and `w_dot32` (contracts: weights_f32.wgsl, weights_dot16.wgsl,
// weights_dot32.wgsl) for the 2-byte float formats read 8 bytes at a time (see
// weights_data_wide.wgsl), 16 values per vec4 of u64s in row tiles, over the format file's
// `widen4` (the four values of an 8-byte word) and weights_data_wide.wgsl's `data8`.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let per_row = k / 16u;
    return W8(widen4(data8(row, 2u * g, per_row)), widen4(data8(row, 2u * g + 1u, per_row)));
}

// Values 16h .. 16h + 16 of the row: one 32-byte load.
fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let v = w_data[word_at(row, h, k / 16u)];
    return dot(widen4(v.x), xs.v[0]) + dot(widen4(v.y), xs.v[1]) + dot(widen4(v.z), xs.v[2])
        + dot(widen4(v.w), xs.v[3]);
}

fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    return w_dot16(row, 2u * b, k, xs.lo) + w_dot16(row, 2u * b + 1u, k, xs.hi);
}
