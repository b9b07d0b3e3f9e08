// Weight format Q4_K (GGML super-blocks of 256, 144 bytes): d, dmin (f16), 12 bytes of packed
// 6-bit scales and mins, 128 bytes of nibbles. Element e = 64 j + 32 h + l has code
// (qs[32 j + l] >> 4 h) & 15 in sub-block 2 j + h; value = d sc q - dmin m.
// CPU reference: reference::ggml::dequantize_q4_k.

// (scale, min) of sub-block t from the packed bytes at addr (ggml's get_scale_min_k4).
fn scale_min_k4(addr: u32, t: u32) -> vec2<f32> {
    if t < 4u {
        return vec2<f32>(f32(wb(addr + t) & 63u), f32(wb(addr + t + 4u) & 63u));
    }
    let sc = (wb(addr + t + 4u) & 15u) | ((wb(addr + t - 4u) >> 6u) << 4u);
    let m = (wb(addr + t + 4u) >> 4u) | ((wb(addr + t) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 256u, 144u);
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
        let q = (wb(b.x + 16u + 32u * j + l0 + i) >> (4u * h)) & 15u;
        v[i] = dl * f32(q) - ml;
    }
    return w8_from(v);
}
