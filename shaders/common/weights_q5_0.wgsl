// Weight format Q5_0 (GGML blocks of 32, 22 bytes padded to 24): d (f16), 32 high bits, 16
// bytes of nibbles; element e's code is its nibble plus 16 times bit e of the high bits;
// value = (q - 16) d. CPU reference: reference::ggml::dequantize_q5_0.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 32u, 24u);
    let d = wf16(b.x);
    let qh = wu32(b.x + 2u) >> b.y;
    let q = wbytes8(b.x + 6u + b.y % 16u);
    let shift = vec4<u32>(select(0u, 4u, b.y >= 16u));
    let bits = vec4<u32>(0u, 1u, 2u, 3u);
    let lo = ((bytes4(q.x) >> shift) & vec4<u32>(15u)) | (((vec4<u32>(qh) >> bits) & vec4<u32>(1u)) << vec4<u32>(4u));
    let hi = ((bytes4(q.y) >> shift) & vec4<u32>(15u)) | (((vec4<u32>(qh >> 4u) >> bits) & vec4<u32>(1u)) << vec4<u32>(4u));
    return W8((vec4<f32>(lo) - 16.0) * d, (vec4<f32>(hi) - 16.0) * d);
}

// A whole block against int8 activations (contract: weights_idot32.wgsl): its 5-bit codes in
// eight packed dot products, the offset 16 taken off through the sum of x's codes, d once.
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let blk = block_of(row, 4u * b, k, 32u, 24u).x;
    let lo = wbytes8(blk + 6u);
    let hi = wbytes8(blk + 14u);
    let c = nibble_codes(vec4<u32>(lo, hi), wu32(blk + 2u));
    let s = xq_dot16(c[0], xq.lo) + xq_dot16(c[1], xq.hi);
    return wf16(blk) * f32(s - 16 * (xq.sum.x + xq.sum.y));
}
