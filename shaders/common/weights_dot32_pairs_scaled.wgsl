// `w_dot32_pairs` (contract: weights_dot32_pairs.wgsl) for the formats with one f16 scale per
// 32-weight block at its word's index in row tiles (Q4_0, Q8_0 read wide), from the format's
// `block_codes(i, xs)`: word i's block against xs, unscaled. The two rows of a pair have their
// scales side by side, one 4-byte word, so each pair's come in one load where each row took
// one.

fn w_dot32_pairs(r: vec4<u32>, b: u32, k: u32, xs: X32) -> vec4<f32> {
    let per_row = k / 32u;
    let i = word_at(r.x, b, per_row);
    let j = word_at(r.z, b, per_row);
    let d = vec4<f32>(unpack2x16float(scale_word(i / 2u)), unpack2x16float(scale_word(j / 2u)));
    let q = vec4<f32>(
        block_codes(i, xs),
        block_codes(i + 1u, xs),
        block_codes(j, xs),
        block_codes(j + 1u, xs),
    );
    return q * d;
}
