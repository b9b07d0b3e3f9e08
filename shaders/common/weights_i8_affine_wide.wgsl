// Weight format i8_affine read 8 bytes at a time (see weights_data_wide.wgsl): the same codes
// and (scale, offset) pairs as weights_i8_affine.wgsl, `w_data` a vec4 of u64s, 32 codes (two
// groups) per vec4, their two pairs at four times its index (16-byte word i of the scales
// for word i), in row tiles. Defines `w_load8`, `w_dot16`, `w_dot32`, `w_dot32_pairs`,
// `w_block` and `w_load8_in` (contracts: weights_f32.wgsl, weights_dot16.wgsl,
// weights_dot32.wgsl, weights_dot32_pairs.wgsl, weights_block.wgsl). CPU reference:
// HostMatrix::dequantize.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Where the (scale, offset) pair of group h (16 codes) of `row` starts in w_scales: its word's
// index times four, then two more for the word's second group.
fn pair_at(row: u32, h: u32, k: u32) -> u32 {
    return 4u * word_at(row, h / 2u, k / 32u) + 2u * (h % 2u);
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let v = data8(row, g, k / 32u);
    let at = pair_at(row, g / 2u, k);
    let s = bitcast<f32>(scale_word(at));
    let o = bitcast<f32>(scale_word(at + 1u));
    return W8(i8x4(low_word(v)) * s + o, i8x4(high_word(v)) * s + o);
}

// A group (16 codes in two u64s, its (scale, offset) pair `so`) against xs: s sum q x + o sum x.
fn group_dot(so: vec2<f32>, a: u64, b: u64, xs: X16) -> f32 {
    let q = dot(i8x4(low_word(a)), xs.v[0]) + dot(i8x4(high_word(a)), xs.v[1])
        + dot(i8x4(low_word(b)), xs.v[2]) + dot(i8x4(high_word(b)), xs.v[3]);
    return so.x * q + so.y * xs.sum;
}

fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let per_row = k / 32u;
    let at = pair_at(row, h, k);
    let so = bitcast<vec2<f32>>(vec2<u32>(scale_word(at), scale_word(at + 1u)));
    return group_dot(so, data8(row, 2u * h, per_row), data8(row, 2u * h + 1u, per_row), xs);
}

// Word i's block (32 codes, its two pairs in `so`) against xs.
fn block_dot(i: u32, so: vec4<f32>, xs: X32) -> f32 {
    let v = w_data[i];
    return group_dot(so.xy, v.x, v.y, xs.lo) + group_dot(so.zw, v.z, v.w, xs.hi);
}

fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    let i = word_at(row, b, k / 32u);
    return block_dot(i, bitcast<vec4<f32>>(scale_words4(i)), xs);
}

// The (scale, offset) pair in an 8-byte word.
fn pair_of(v: u64) -> vec2<f32> {
    return bitcast<vec2<f32>>(vec2<u32>(low_word(v), high_word(v)));
}

// Block b of rows r.x, r.x + 1 (r.x even) and r.z, r.z + 1 (r.z even): in a row tile the two
// rows of a pair have their pairs side by side, 32 bytes, so each pair of rows takes one
// 32-byte load for its four (scale, offset) pairs where each row took a 16-byte one.
fn w_dot32_pairs(r: vec4<u32>, b: u32, k: u32, xs: X32) -> vec4<f32> {
    let per_row = k / 32u;
    let i = word_at(r.x, b, per_row);
    let j = word_at(r.z, b, per_row);
    let s = w_scales[i / 2u];
    let t = w_scales[j / 2u];
    return vec4<f32>(
        block_dot(i, vec4<f32>(pair_of(s.x), pair_of(s.y)), xs),
        block_dot(i + 1u, vec4<f32>(pair_of(s.z), pair_of(s.w)), xs),
        block_dot(j, vec4<f32>(pair_of(t.x), pair_of(t.y)), xs),
        block_dot(j + 1u, vec4<f32>(pair_of(t.z), pair_of(t.w)), xs),
    );
}

// A block's two (scale, offset) pairs, loaded once for its four groups of 8.
fn w_block(row: u32, b: u32, k: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(scale_words4(word_at(row, b, k / 32u)));
}

fn w_load8_in(row: u32, g: u32, k: u32, block: vec4<f32>) -> W8 {
    let v = data8(row, g, k / 32u);
    let so = select(block.zw, block.xy, g % 4u < 2u);
    return W8(i8x4(low_word(v)) * so.x + so.y, i8x4(high_word(v)) * so.x + so.y);
}
