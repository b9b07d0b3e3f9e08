// Weight format Q8_0 read 8 bytes at a time (see weights_data_wide.wgsl): the same data and
// scales as weights_q8_0.wgsl, `w_data` a vec4 of u64s, 32 codes (a block) per vec4, its
// scale at the same index, in row tiles.
// Defines `w_load8`, `w_dot16`, `w_dot32`, `w_block` and `w_load8_in` (contracts:
// weights_f32.wgsl, weights_dot16.wgsl, weights_dot32.wgsl, weights_block.wgsl) and
// `block_codes` for weights_dot32_pairs_scaled.wgsl, with
// weights_data_wide.wgsl's `data8`. CPU reference: HostMatrix::dequantize.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn block_scale(s: u32) -> f32 {
    return unpack2x16float(scale_word(s / 2u))[s % 2u];
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let v = data8(row, g, k / 32u);
    let d = block_scale(word_at(row, g / 4u, k / 32u));
    return W8(i8x4(low_word(v)) * d, i8x4(high_word(v)) * d);
}

// Dot product of the codes in two u64s with 8 entries of x, in two vec4s each.
fn dot_codes16(a: u64, b: u64, xs: X16) -> f32 {
    return dot(i8x4(low_word(a)), xs.v[0]) + dot(i8x4(high_word(a)), xs.v[1])
        + dot(i8x4(low_word(b)), xs.v[2]) + dot(i8x4(high_word(b)), xs.v[3]);
}

fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let per_row = k / 32u;
    let d = block_scale(word_at(row, h / 2u, per_row));
    return dot_codes16(data8(row, 2u * h, per_row), data8(row, 2u * h + 1u, per_row), xs) * d;
}

// The 32 codes of word i (a block) against xs, unscaled: one 32-byte load.
fn block_codes(i: u32, xs: X32) -> f32 {
    let v = w_data[i];
    return dot_codes16(v.x, v.y, xs.lo) + dot_codes16(v.z, v.w, xs.hi);
}

// A whole block: its 32 bytes in one load, its scale once.
fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    let i = word_at(row, b, k / 32u);
    return block_codes(i, xs) * block_scale(i);
}

// A block's scale, loaded once for its four groups of 8.
fn w_block(row: u32, b: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(block_scale(word_at(row, b, k / 32u)));
}

fn w_load8_in(row: u32, g: u32, k: u32, block: vec4<f32>) -> W8 {
    let v = data8(row, g, k / 32u);
    return W8(i8x4(low_word(v)) * block.x, i8x4(high_word(v)) * block.x);
}
