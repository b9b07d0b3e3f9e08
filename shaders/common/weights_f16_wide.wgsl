// Weight format f16 read 8 bytes at a time (see weights_data_wide.wgsl): the same bits as
// weights_f16.wgsl; its `widen4` for weights_halves_wide.wgsl's readers.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The four f16 values of an 8-byte word, widened.
fn widen4(v: u64) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(low_word(v)), unpack2x16float(high_word(v)));
}
