// Weight format Q5_1 (GGML blocks of 32, 24 bytes): d, m (f16), 32 high bits, 16 bytes of
// nibbles; value = q d + m. CPU reference: reference::ggml::dequantize_q5_1.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 32u, 24u);
    let dm = unpack2x16float(wu32(b.x));
    let qh = wu32(b.x + 4u) >> b.y;
    let q = wbytes8(b.x + 8u + b.y % 16u);
    let shift = vec4<u32>(select(0u, 4u, b.y >= 16u));
    let bits = vec4<u32>(0u, 1u, 2u, 3u);
    let lo = ((bytes4(q.x) >> shift) & vec4<u32>(15u)) | (((vec4<u32>(qh) >> bits) & vec4<u32>(1u)) << vec4<u32>(4u));
    let hi = ((bytes4(q.y) >> shift) & vec4<u32>(15u)) | (((vec4<u32>(qh >> 4u) >> bits) & vec4<u32>(1u)) << vec4<u32>(4u));
    return W8(vec4<f32>(lo) * dm.x + dm.y, vec4<f32>(hi) * dm.x + dm.y);
}
