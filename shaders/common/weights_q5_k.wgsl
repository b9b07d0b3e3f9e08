// Weight format Q5_K (GGML super-blocks of 256, 176 bytes): d, dmin (f16), 12 bytes of packed
// scales and mins, 32 bytes of high bits, 128 bytes of nibbles. Element e = 64 j + 32 h + l
// has code ((qs[32 j + l] >> 4 h) & 15) + 16 ((qh[l] >> (2 j + h)) & 1) in sub-block 2 j + h;
// value = d sc q - dmin m. CPU reference: reference::ggml::dequantize_q5_k.

fn scale_min_k4(addr: u32, t: u32) -> vec2<f32> {
    if t < 4u {
        return vec2<f32>(f32(wb(addr + t) & 63u), f32(wb(addr + t + 4u) & 63u));
    }
    let sc = (wb(addr + t + 4u) & 15u) | ((wb(addr + t - 4u) >> 6u) << 4u);
    let m = (wb(addr + t + 4u) >> 4u) | ((wb(addr + t) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 256u, 176u);
    let d = wf16(b.x);
    let dmin = wf16(b.x + 2u);
    let j = b.y / 64u;
    let h = (b.y % 64u) / 32u;
    let l0 = b.y % 32u;
    let sm = scale_min_k4(b.x + 4u, 2u * j + h);
    let dl = d * sm.x;
    let ml = dmin * sm.y;
    var v: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let l = l0 + i;
        let q = ((wb(b.x + 48u + 32u * j + l) >> (4u * h)) & 15u) + 16u * ((wb(b.x + 16u + l) >> (2u * j + h)) & 1u);
        v[i] = dl * f32(q) - ml;
    }
    return w8_from(v);
}
