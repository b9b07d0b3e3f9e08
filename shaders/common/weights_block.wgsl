// `w_block` and `w_load8_in` for the formats whose reading does not define its own: no
// constants shared, `w_load8` itself.
// The contract: w_block(row, b, k) is what 32-weight block b of `row` shares (its scales and
// offsets, loaded once for its four groups of 8 rather than once per group), and
// w_load8_in(row, g, k, w_block(row, g / 4, k)) equals w_load8(row, g, k), for a matrix with
// k columns.

fn w_block(row: u32, b: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(0.0);
}

fn w_load8_in(row: u32, g: u32, k: u32, block: vec4<f32>) -> W8 {
    return w_load8(row, g, k);
}
