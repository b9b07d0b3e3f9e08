// Weight format Q4_K (GGML super-blocks of 256, 144 bytes): d, dmin (f16), 12 bytes of packed
// 6-bit scales and mins, 128 bytes of nibbles. Element e = 64 j + 32 h + l has code
// (qs[32 j + l] >> 4 h) & 15 in sub-block 2 j + h; value = d sc q - dmin m.
// CPU reference: reference::ggml::dequantize_q4_k.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 256u, 144u);
    let dm = unpack2x16float(wu32(b.x));
    let j = b.y / 64u;
    let h = (b.y % 64u) / 32u;
    let sm = scale_min_k4(b.x + 4u, 2u * j + h);
    let dl = dm.x * sm.x;
    let ml = dm.y * sm.y;
    let q = wbytes8(b.x + 16u + 32u * j + b.y % 32u);
    let shift = vec4<u32>(4u * h);
    let lo = (bytes4(q.x) >> shift) & vec4<u32>(15u);
    let hi = (bytes4(q.y) >> shift) & vec4<u32>(15u);
    return W8(dl * vec4<f32>(lo) - ml, dl * vec4<f32>(hi) - ml);
}

// Sub-block t = b % 8 of super-block b / 8 against int8 activations (contract:
// weights_idot32.wgsl): its 32 nibbles as bytes in eight packed dot products
// (`scaled_min_dot`).
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let blk = block_of(row, 4u * b, k, 256u, 144u).x;
    let t = b % 8u;
    // Bytes 16 + 32 (t / 2) .. of the block (word-aligned: 144-byte blocks), nibble t % 2.
    let w = (blk + 16u + 32u * (t / 2u)) / 4u;
    let shift = vec4<u32>(4u * (t % 2u));
    let m = vec4<u32>(0x0f0f0f0fu);
    let lo = (vec4<u32>(wword(w), wword(w + 1u), wword(w + 2u), wword(w + 3u)) >> shift) & m;
    let hi = (vec4<u32>(wword(w + 4u), wword(w + 5u), wword(w + 6u), wword(w + 7u)) >> shift) & m;
    return scaled_min_dot(blk, t, lo, hi, xq);
}
