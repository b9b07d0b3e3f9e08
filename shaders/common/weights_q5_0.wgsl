// Weight format Q5_0 (GGML blocks of 32, 22 bytes padded to 24): d (f16), 32 high bits, 16
// bytes of nibbles; element e's code is its nibble plus bit e of the high bits times 16;
// value = (q - 16) d. CPU reference: reference::ggml::dequantize_q5_0.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 32u, 24u);
    let d = wf16(b.x);
    let qh = wu32(b.x + 2u);
    let shift = select(0u, 4u, b.y >= 16u);
    var v: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let e = b.y + i;
        let q = ((wb(b.x + 6u + (e % 16u)) >> shift) & 15u) | (((qh >> e) & 1u) << 4u);
        v[i] = (f32(q) - 16.0) * d;
    }
    return w8_from(v);
}
