// Weight format bf16 read 8 bytes at a time (see weights_data_wide.wgsl): the same bits as
// weights_bf16.wgsl; its `widen4` for weights_halves_wide.wgsl's readers.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn bf16_pair(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

// The four bf16 values of an 8-byte word, widened.
fn widen4(v: u64) -> vec4<f32> {
    return vec4<f32>(bf16_pair(low_word(v)), bf16_pair(high_word(v)));
}
