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

// A whole block against int8 activations (contract: weights_idot32.wgsl): d times its 5-bit
// codes' packed dot products plus m times the sum of x's codes.
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let blk = block_of(row, 4u * b, k, 32u, 24u).x;
    let dm = unpack2x16float(wu32(blk));
    let w = blk / 4u + 2u;
    let qs = vec4<u32>(wword(w), wword(w + 1u), wword(w + 2u), wword(w + 3u));
    let c = nibble_codes(qs, wword(w - 1u));
    let s = xq_dot16(c[0], xq.lo) + xq_dot16(c[1], xq.hi);
    return dm.x * f32(s) + dm.y * f32(xq.sum.x + xq.sum.y);
}
