// Shared by the GGUF block formats (weights_q4_1 ... weights_q6_k): `w_data` holds each row's
// GGML blocks exactly as the file stores them, each padded to a multiple of 4 bytes, read here
// byte by byte (little-endian). See weights_f32.wgsl for the `w_load8` contract.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn wb(addr: u32) -> u32 {
    let w = w_data[addr / 16u][(addr / 4u) % 4u];
    return (w >> (8u * (addr % 4u))) & 0xffu;
}

fn wf16(addr: u32) -> f32 {
    return unpack2x16float(wb(addr) | (wb(addr + 1u) << 8u)).x;
}

fn wu32(addr: u32) -> u32 {
    return wb(addr) | (wb(addr + 1u) << 8u) | (wb(addr + 2u) << 16u) | (wb(addr + 3u) << 24u);
}

// Byte address of the block holding W[row, 8g] and that element's index in the block.
fn block_of(row: u32, g: u32, k: u32, qk: u32, stride: u32) -> vec2<u32> {
    let e = 8u * g;
    return vec2<u32>((row * (k / qk) + e / qk) * stride, e % qk);
}

fn w8_from(v: array<f32, 8>) -> W8 {
    return W8(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}
