// Weight format Q4_1 (GGML blocks of 32, 20 bytes): d, m (f16), 16 bytes of nibbles (element j
// low, j + 16 high); value = q d + m. CPU reference: reference::ggml::dequantize_q4_1.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 32u, 20u);
    let dm = unpack2x16float(wu32(b.x));
    let q = wbytes8(b.x + 4u + b.y % 16u);
    let shift = vec4<u32>(select(0u, 4u, b.y >= 16u));
    let lo = (bytes4(q.x) >> shift) & vec4<u32>(15u);
    let hi = (bytes4(q.y) >> shift) & vec4<u32>(15u);
    return W8(vec4<f32>(lo) * dm.x + dm.y, vec4<f32>(hi) * dm.x + dm.y);
}
