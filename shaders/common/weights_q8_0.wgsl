// Weight format Q8_0: blocks of 32 weights, value = q * d with q an int8 and d an f16 scale
// per block. `w_data` holds the int8s, 4 per u32 (element 4i in the low byte), 16 per vec4;
// `w_scales` holds the scales of the row-major [rows, k / 32] block grid, two f16 per u32.
// See weights_f32.wgsl for the `w_load8` contract and weights_dot16.wgsl for `w_dot16`'s.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}


fn block_scale(s: u32) -> f32 {
    return unpack2x16float(scale_word(s / 2u))[s % 2u];
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let word = row * (k / 4u) + 2u * g;
    // The two words of the 8 codes, not their whole vec4 (a CPU adapter loads word by word).
    let c = word % 4u;
    let d = block_scale(row * (k / 32u) + g / 4u);
    return W8(i8x4(w_data[word / 4u][c]) * d, i8x4(w_data[word / 4u][c + 1u]) * d);
}

// Half a block: one vec4 of codes, the scale applied once to its dot product.
fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let v = w_data[row * (k / 16u) + h];
    let s = dot(i8x4(v.x), xs.v[0]) + dot(i8x4(v.y), xs.v[1]) + dot(i8x4(v.z), xs.v[2])
        + dot(i8x4(v.w), xs.v[3]);
    return s * block_scale(row * (k / 32u) + h / 2u);
}

// A whole block against int8 activations (contract: weights_idot32.wgsl): its two vec4s of
// codes in eight packed dot products, the scale applied once.
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let i = row * (k / 16u) + 2u * b;
    let s = xq_dot16(w_data[i], xq.lo) + xq_dot16(w_data[i + 1u], xq.hi);
    return f32(s) * block_scale(row * (k / 32u) + b);
}
