// Weight format Q5_1 (GGML blocks of 32, 24 bytes): d, m (f16), 32 high bits, 16 bytes of
// nibbles; value = q d + m. CPU reference: reference::ggml::dequantize_q5_1.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 32u, 24u);
    let d = wf16(b.x);
    let m = wf16(b.x + 2u);
    let qh = wu32(b.x + 4u);
    let shift = select(0u, 4u, b.y >= 16u);
    var v: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let e = b.y + i;
        let q = ((wb(b.x + 8u + (e % 16u)) >> shift) & 15u) | (((qh >> e) & 1u) << 4u);
        v[i] = f32(q) * d + m;
    }
    return w8_from(v);
}
