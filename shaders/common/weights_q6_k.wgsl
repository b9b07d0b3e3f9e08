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

// Elements 32 (b % 8) .. + 32 of super-block b / 8 against int8 activations (contract:
// weights_idot32.wgsl): the 6-bit codes q of each half (own scale) in four packed dot
// products, the offset 32 taken off through the sum of x's codes of that half:
// d (sc0 (dot_lo - 32 sum_lo) + sc1 (dot_hi - 32 sum_hi)).
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let blk = block_of(row, 4u * b, k, 256u, 212u).x;
    let t = b % 8u;
    let n = t / 4u;
    let c = t % 4u;
    let d = wf16(blk + 208u);
    // Word-aligned (212-byte blocks): ql at 64 n + 32 (c % 2), qh at 128 + 32 n.
    let ql = (blk + 64u * n + 32u * (c % 2u)) / 4u;
    let qh = (blk + 128u + 32u * n) / 4u;
    let lo = q6_codes(ql, qh, c, 0u);
    let hi = q6_codes(ql, qh, c, 4u);
    let sc = blk + 192u + 8u * n + 2u * c;
    let sc0 = f32(bitcast<i32>(wb(sc) << 24u) >> 24u);
    let sc1 = f32(bitcast<i32>(wb(sc + 1u) << 24u) >> 24u);
    let dot_lo = xq_dot16(lo, xq.lo) - 32 * xq.sum.x;
    let dot_hi = xq_dot16(hi, xq.hi) - 32 * xq.sum.y;
    return d * (sc0 * f32(dot_lo) + sc1 * f32(dot_hi));
}

// Four words of 6-bit codes (16 elements) from words ql + i and qh + i, i = first ..
// first + 3: low nibbles shifted by 4 (c / 2), high bits by 2 c.
fn q6_codes(ql: u32, qh: u32, c: u32, first: u32) -> vec4<u32> {
    var q: vec4<u32>;
    for (var i = 0u; i < 4u; i++) {
        let l = (wword(ql + first + i) >> (4u * (c / 2u))) & 0x0f0f0f0fu;
        q[i] = l | (((wword(qh + first + i) >> (2u * c)) & 0x03030303u) << 4u);
    }
    return q;
}
