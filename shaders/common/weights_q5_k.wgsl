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
