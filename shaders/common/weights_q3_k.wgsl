// Weight format Q3_K (GGML super-blocks of 256, 110 bytes padded to 112): 32 bytes of high-bit
// masks, 64 bytes of 2-bit codes, 12 bytes of packed 6-bit scales, d (f16). Element
// e = 128 n + 32 j + 16 h + l (i = 16 h + l) has code ((qs[32 n + i] >> 2 j) & 3) - 4, plus 4
// when bit 4 n + j of hmask[i] is set, and scale s[8 n + 2 j + h] - 32, where scale t packs
// its low 4 bits in byte (t / 4 % 2) * 4 + t % 4 (nibble t / 8) and its high 2 bits in byte
// 8 + t % 4 (bits 2 (t / 4)). value = d (s - 32) code. CPU reference:
// reference::ggml::dequantize_q3_k.

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let b = block_of(row, g, k, 256u, 112u);
    let d = wf16(b.x + 108u);
    let n = b.y / 128u;
    let j = (b.y % 128u) / 32u;
    let h = (b.y % 32u) / 16u;
    let i0 = b.y % 32u;
    let t = 8u * n + 2u * j + h;
    let grp = t / 4u;
    let low = (wb(b.x + 96u + (grp % 2u) * 4u + t % 4u) >> (4u * (grp / 2u))) & 15u;
    let high = (wb(b.x + 104u + t % 4u) >> (2u * grp)) & 3u;
    let dl = d * (f32(low | (high << 4u)) - 32.0);
    let q = wbytes8(b.x + 32u + 32u * n + i0);
    let m = wbytes8(b.x + i0);
    let shift = vec4<u32>(2u * j);
    let mbit = vec4<u32>(4u * n + j);
    let lo = vec4<f32>((bytes4(q.x) >> shift) & vec4<u32>(3u)) - 4.0 * vec4<f32>(vec4<u32>(1u) - ((bytes4(m.x) >> mbit) & vec4<u32>(1u)));
    let hi = vec4<f32>((bytes4(q.y) >> shift) & vec4<u32>(3u)) - 4.0 * vec4<f32>(vec4<u32>(1u) - ((bytes4(m.y) >> mbit) & vec4<u32>(1u)));
    return W8(dl * lo, dl * hi);
}
