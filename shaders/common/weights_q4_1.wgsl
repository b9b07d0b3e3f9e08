// Weight format Q4_1 (GGML blocks of 32, 20 bytes): d, m (f16), 16 bytes of nibbles (element j
// low, j + 16 high); value = q d + m. CPU reference: reference::ggml::dequantize_q4_1.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 32u, 20u);
    let d = wf16(b.x);
    let m = wf16(b.x + 2u);
    let shift = select(0u, 4u, b.y >= 16u);
    var v: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let q = (wb(b.x + 4u + (b.y % 16u) + i) >> shift) & 15u;
        v[i] = f32(q) * d + m;
    }
    return w8_from(v);
}
