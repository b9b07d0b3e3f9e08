// Weight format i8_affine: GGUF block formats expanded at load (see WeightFormat::I8Affine).
// `w_data` holds int8 codes, 4 per u32 (element 4i in the low byte); `w_scales` holds, per 16
// weights of the row-major matrix, an f32 scale s and an f32 offset o; value = q s + o.
// See weights_f32.wgsl for the `w_load8` contract and weights_dot16.wgsl for `w_dot16`'s.
// CPU reference: HostMatrix::dequantize.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}


fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let word = row * (k / 4u) + 2u * g;
    // The two words of the 8 codes, not their whole vec4.
    let c = word % 4u;
    let v = vec2<u32>(w_data[word / 4u][c], w_data[word / 4u][c + 1u]);
    let group = row * (k / 16u) + g / 2u;
    let s = bitcast<f32>(scale_word(2u * group));
    let o = bitcast<f32>(scale_word(2u * group + 1u));
    return W8(i8x4(v.x) * s + o, i8x4(v.y) * s + o);
}

// One group of 16: sum (q s + o) x = s sum q x + o sum x, its pair loaded once.
fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let group = row * (k / 16u) + h;
    let v = w_data[group];
    let s = dot(i8x4(v.x), xs.v[0]) + dot(i8x4(v.y), xs.v[1]) + dot(i8x4(v.z), xs.v[2])
        + dot(i8x4(v.w), xs.v[3]);
    let so = bitcast<vec2<f32>>(vec2<u32>(scale_word(2u * group), scale_word(2u * group + 1u)));
    return so.x * s + so.y * xs.sum;
}
