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
    let ql = wbytes8(b.x + 64u * n + l0 + 32u * (c % 2u));
    let qh = wbytes8(b.x + 128u + 32u * n + l0);
    let ls = vec4<u32>(4u * (c / 2u));
    let hs = vec4<u32>(2u * c);
    let lo = ((bytes4(ql.x) >> ls) & vec4<u32>(15u)) | (((bytes4(qh.x) >> hs) & vec4<u32>(3u)) << vec4<u32>(4u));
    let hi = ((bytes4(ql.y) >> ls) & vec4<u32>(15u)) | (((bytes4(qh.y) >> hs) & vec4<u32>(3u)) << vec4<u32>(4u));
    return W8(dl * (vec4<f32>(lo) - 32.0), dl * (vec4<f32>(hi) - 32.0));
}
