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
    let dl = d * q3_scale(b.x, 8u * n + 2u * j + h);
    let q = wbytes8(b.x + 32u + 32u * n + i0);
    let m = wbytes8(b.x + i0);
    let shift = vec4<u32>(2u * j);
    let mbit = vec4<u32>(4u * n + j);
    let lo = vec4<f32>((bytes4(q.x) >> shift) & vec4<u32>(3u)) - 4.0 * vec4<f32>(vec4<u32>(1u) - ((bytes4(m.x) >> mbit) & vec4<u32>(1u)));
    let hi = vec4<f32>((bytes4(q.y) >> shift) & vec4<u32>(3u)) - 4.0 * vec4<f32>(vec4<u32>(1u) - ((bytes4(m.y) >> mbit) & vec4<u32>(1u)));
    return W8(dl * lo, dl * hi);
}

// Scale t (of 16) of the block at byte blk, less 32.
fn q3_scale(blk: u32, t: u32) -> f32 {
    let grp = t / 4u;
    let low = (wb(blk + 96u + (grp % 2u) * 4u + t % 4u) >> (4u * (grp / 2u))) & 15u;
    let high = (wb(blk + 104u + t % 4u) >> (2u * grp)) & 3u;
    return f32(low | (high << 4u)) - 32.0;
}

// Elements 32 (b % 8) .. + 32 of super-block b / 8 against int8 activations (contract:
// weights_idot32.wgsl): codes + 4 (0..7) in packed dot products per half (own scale), the 4
// taken off through the sum of x's codes of that half.
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let blk = block_of(row, 4u * b, k, 256u, 112u).x;
    let t = b % 8u;
    let n = t / 4u;
    let j = t % 4u;
    // Word-aligned (112-byte blocks): hmask at 0, the 2-bit codes at 32 + 32 n.
    let c = array<vec4<u32>, 2>(q3_codes(blk / 4u, n, j, 0u), q3_codes(blk / 4u, n, j, 4u));
    let dot_lo = xq_dot16(c[0], xq.lo) - 4 * xq.sum.x;
    let dot_hi = xq_dot16(c[1], xq.hi) - 4 * xq.sum.y;
    let sc = 8u * n + 2u * j;
    let scales = vec2<f32>(q3_scale(blk, sc), q3_scale(blk, sc + 1u));
    return wf16(blk + 108u) * dot(scales, vec2<f32>(f32(dot_lo), f32(dot_hi)));
}

// Four words of codes + 4 of elements 128 n + 32 j + i, i = 4 first .. 4 first + 15, of the
// block at word w.
fn q3_codes(w: u32, n: u32, j: u32, first: u32) -> vec4<u32> {
    var q: vec4<u32>;
    for (var i = 0u; i < 4u; i++) {
        let low = (wword(w + 8u + 8u * n + first + i) >> (2u * j)) & 0x03030303u;
        q[i] = low | (((wword(w + first + i) >> (4u * n + j)) & 0x01010101u) << 2u);
    }
    return q;
}
