// Weight format Q6_K (GGML super-blocks of 256, 210 bytes padded to 212): 128 bytes of low
// nibbles, 64 bytes of 2-bit highs, 16 int8 scales, d (f16). Element e = 128 n + 32 c + l has
// low nibble (ql[64 n + l + 32 (c % 2)] >> 4 (c / 2)) & 15, high bits (qh[32 n + l] >> 2 c) & 3,
// code q - 32 and scale sc[8 n + l / 16 + 2 c]; value = d sc (q - 32).
// CPU reference: reference::ggml::dequantize_q6_k.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 256u, 212u);
    let d = wf16(b.x + 208u);
    let n = b.y / 128u;
    let c = (b.y % 128u) / 32u;
    let l0 = b.y % 32u;
    let sc = f32(bitcast<i32>(wb(b.x + 192u + 8u * n + l0 / 16u + 2u * c) << 24u) >> 24u);
    let dl = d * sc;
    var v: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let l = l0 + i;
        let low = (wb(b.x + 64u * n + l + 32u * (c % 2u)) >> (4u * (c / 2u))) & 15u;
        let high = (wb(b.x + 128u + 32u * n + l) >> (2u * c)) & 3u;
        v[i] = dl * (f32(low | (high << 4u)) - 32.0);
    }
    return w8_from(v);
}
