// weights_data.wgsl's bindings as 32-byte words (SHADER_INT64), for the formats
// with a weights_<format>_wide.wgsl, on CPU adapters: llvmpipe turns each invocation's storage
// load into a bounds-checked scalar load per component, so a component of 8 bytes costs what
// one of 4 does, and the components of one load share its setup. Gemma 3 270M on lavapipe
// (Mesa 25.0.7, 2 cores), against weights_data.wgsl: the decode Q8_0 products (lm_head
// included) 45-47 -> 35-36 ms per token, the prefill products of a 64-token step 415-425 ->
// 370-375 ms.
// Its words are always in row tiles (weights_tiles.wgsl).
@group(0) @binding(1) var<storage, read> w_data: array<vec4<u64>>;
@group(0) @binding(2) var<storage, read> w_scales: array<vec4<u64>>;

// 8-byte word i of the scales: one 8-byte load.
fn scale_u64(i: u32) -> u64 {
    return w_scales[i / 4u][i % 4u];
}

// 4-byte word i of the scales (one 8-byte load).
fn scale_word(i: u32) -> u32 {
    let v = scale_u64(i / 2u);
    return select(low_word(v), high_word(v), i % 2u == 1u);
}

// 16-byte word i of the scales: two 8-byte loads.
fn scale_words4(i: u32) -> vec4<u32> {
    let a = scale_u64(2u * i);
    let b = scale_u64(2u * i + 1u);
    return vec4<u32>(low_word(a), high_word(a), low_word(b), high_word(b));
}

// 8-byte word q of row `row` (8 int8 codes, 4 bf16 values, ...): one 8-byte load.
fn data8(row: u32, q: u32, per_row: u32) -> u64 {
    return w_data[word_at(row, q / 4u, per_row)][q % 4u];
}

fn low_word(v: u64) -> u32 {
    return u32(v & 0xfffffffflu);
}

fn high_word(v: u64) -> u32 {
    return u32(v >> 32u);
}
