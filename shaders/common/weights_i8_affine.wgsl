// Weight format i8_affine: GGUF block formats expanded at load (see WeightFormat::I8Affine).
// `w_data` holds int8 codes, 4 per u32 (element 4i in the low byte); `w_scales` holds, per 16
// weights of the row-major matrix, an f32 scale s and an f32 offset o; value = q s + o.
// See weights_f32.wgsl for the `w_load8` contract. CPU reference: HostMatrix::dequantize.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}


fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let word = row * (k / 4u) + 2u * g;
    let v = w_data[word / 4u];
    let c = word % 4u;
    let group = row * (k / 16u) + g / 2u;
    let s = bitcast<f32>(w_scales[2u * group]);
    let o = bitcast<f32>(w_scales[2u * group + 1u]);
    return W8(i8x4(v[c]) * s + o, i8x4(v[c + 1u]) * s + o);
}
