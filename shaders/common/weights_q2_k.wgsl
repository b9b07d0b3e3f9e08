// Weight format Q2_K (GGML super-blocks of 256, 84 bytes): 16 scale/min bytes (4 bits each),
// 64 bytes of 2-bit codes, d, dmin (f16). Element e = 128 n + 32 j + 16 h + l has code
// (qs[32 n + 16 h + l] >> 2 j) & 3 and sub-block 8 n + 2 j + h;
// value = d (sc & 15) q - dmin (sc >> 4). CPU reference: reference::ggml::dequantize_q2_k.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 256u, 84u);
    let dm = unpack2x16float(wu32(b.x + 80u));
    let n = b.y / 128u;
    let j = (b.y % 128u) / 32u;
    let h = (b.y % 32u) / 16u;
    let sc = wb(b.x + 8u * n + 2u * j + h);
    let dl = dm.x * f32(sc & 15u);
    let ml = dm.y * f32(sc >> 4u);
    let q = wbytes8(b.x + 16u + 32u * n + 16u * h + b.y % 16u);
    let shift = vec4<u32>(2u * j);
    let lo = (bytes4(q.x) >> shift) & vec4<u32>(3u);
    let hi = (bytes4(q.y) >> shift) & vec4<u32>(3u);
    return W8(dl * vec4<f32>(lo) - ml, dl * vec4<f32>(hi) - ml);
}
