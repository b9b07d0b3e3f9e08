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

// Elements 32 (b % 8) .. + 32 of super-block b / 8 against int8 activations (contract:
// weights_idot32.wgsl): the 2-bit codes of each half (own scale and min) in four packed dot
// products: d (sc & 15) dot - dmin (sc >> 4) (the sum of x's codes), per half.
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let blk = block_of(row, 4u * b, k, 256u, 84u).x;
    let t = b % 8u;
    let n = t / 4u;
    let j = t % 4u;
    let dm = unpack2x16float(wu32(blk + 80u));
    // Word-aligned (84-byte blocks): codes at 16 + 32 n, shifted by 2 j.
    let w = blk / 4u + 4u + 8u * n;
    let shift = vec4<u32>(2u * j);
    let m = vec4<u32>(0x03030303u);
    let lo = (vec4<u32>(wword(w), wword(w + 1u), wword(w + 2u), wword(w + 3u)) >> shift) & m;
    let hi = (vec4<u32>(wword(w + 4u), wword(w + 5u), wword(w + 6u), wword(w + 7u)) >> shift) & m;
    let sc = vec2<u32>(wb(blk + 8u * n + 2u * j), wb(blk + 8u * n + 2u * j + 1u));
    let dots = vec2<f32>(f32(xq_dot16(lo, xq.lo)), f32(xq_dot16(hi, xq.hi)));
    let d = dm.x * vec2<f32>(sc & vec2<u32>(15u));
    let mins = dm.y * vec2<f32>(sc >> vec2<u32>(4u));
    return dot(d, dots) - dot(mins, vec2<f32>(xq.sum));
}
