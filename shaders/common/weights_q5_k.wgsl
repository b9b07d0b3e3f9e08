// Weight format Q5_K (GGML super-blocks of 256, 176 bytes): d, dmin (f16), 12 bytes of packed
// scales and mins, 32 bytes of high bits, 128 bytes of nibbles. Element e = 64 j + 32 h + l
// has code ((qs[32 j + l] >> 4 h) & 15) + 16 ((qh[l] >> (2 j + h)) & 1) in sub-block 2 j + h;
// value = d sc q - dmin m. CPU reference: reference::ggml::dequantize_q5_k.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 256u, 176u);
    let dm = unpack2x16float(wu32(b.x));
    let j = b.y / 64u;
    let h = (b.y % 64u) / 32u;
    let l0 = b.y % 32u;
    let sm = scale_min_k4(b.x + 4u, 2u * j + h);
    let dl = dm.x * sm.x;
    let ml = dm.y * sm.y;
    let q = wbytes8(b.x + 48u + 32u * j + l0);
    let qh = wbytes8(b.x + 16u + l0);
    let shift = vec4<u32>(4u * h);
    let hbit = vec4<u32>(2u * j + h);
    let lo = ((bytes4(q.x) >> shift) & vec4<u32>(15u)) + 16u * ((bytes4(qh.x) >> hbit) & vec4<u32>(1u));
    let hi = ((bytes4(q.y) >> shift) & vec4<u32>(15u)) + 16u * ((bytes4(qh.y) >> hbit) & vec4<u32>(1u));
    return W8(dl * vec4<f32>(lo) - ml, dl * vec4<f32>(hi) - ml);
}

// Sub-block t = b % 8 of super-block b / 8 against int8 activations (contract:
// weights_idot32.wgsl): its 5-bit codes in eight packed dot products (`scaled_min_dot`).
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let blk = block_of(row, 4u * b, k, 256u, 176u).x;
    let t = b % 8u;
    // Word-aligned (176-byte blocks): nibbles at 48 + 32 (t / 2), high bits at 16.
    let w = (blk + 48u + 32u * (t / 2u)) / 4u;
    let qh = blk / 4u + 4u;
    return scaled_min_dot(blk, t, q5_codes(w, qh, t, 0u), q5_codes(w, qh, t, 4u), xq);
}

// Four words of sub-block t's codes: nibble t % 2 of words qs + i, bit t of words qh + i,
// i = first .. first + 3.
fn q5_codes(qs: u32, qh: u32, t: u32, first: u32) -> vec4<u32> {
    var q: vec4<u32>;
    for (var i = 0u; i < 4u; i++) {
        let low = (wword(qs + first + i) >> (4u * (t % 2u))) & 0x0f0f0f0fu;
        q[i] = low | (((wword(qh + first + i) >> t) & 0x01010101u) << 4u);
    }
    return q;
}
