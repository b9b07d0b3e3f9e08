// Weight format bf16: the checkpoint's bits, two per u32 (element 2i in the low half), 8 per
// vec4 of `w_data`. Widening bf16 to f32 is a 16-bit shift. See weights_f32.wgsl for the
// `w_load8` contract.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn bf16_pair(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let v = w_data[row * (k / 8u) + g];
    return W8(
        vec4<f32>(bf16_pair(v.x), bf16_pair(v.y)),
        vec4<f32>(bf16_pair(v.z), bf16_pair(v.w)),
    );
}
