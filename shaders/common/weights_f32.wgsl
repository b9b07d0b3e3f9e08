// Weight format f32: W[row, k] row-major, 4 floats per vec4 of `w_data` (as u32 bits).
// Every weights_*.wgsl defines `w_load8(row, g, k)`: W[row, 8g .. 8g + 8) of a matrix with k
// columns, from the bindings `w_data: array<vec4<u32>>` (weights_data.wgsl; vec4<u64> in
// weights_data_wide.wgsl for the `_wide` twins, whose words are in row tiles:
// weights_tiles.wgsl) and `w_scales` (read through `scale_word`).
// CPU reference: src/weights/mod.rs (HostMatrix::dequantize).

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let i = row * (k / 4u) + 2u * g;
    return W8(bitcast<vec4<f32>>(w_data[i]), bitcast<vec4<f32>>(w_data[i + 1u]));
}
