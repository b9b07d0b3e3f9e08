// Weight format f16: two per u32 (element 2i in the low half), 8 per vec4 of `w_data`,
// widened with unpack2x16float (no SHADER_F16 needed). See weights_f32.wgsl for the contract.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let v = w_data[row * (k / 8u) + g];
    return W8(
        vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)),
        vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)),
    );
}
