// Weight format Q4_0: blocks of 32 weights, value = (q - 8) * d with q a 4-bit code and d an
// f16 scale per block. A block's 16 code bytes fill one vec4 of `w_data`, in GGML's order:
// byte t holds element t in its low nibble and element t + 16 in its high nibble (little-endian
// bytes within each u32). `w_scales` as in Q8_0, a block's scale at its vec4's index; blocks
// found through `word_at` (weights_rows.wgsl, or weights_tiles.wgsl on CPU adapters). See
// weights_f32.wgsl for the contract, weights_dot16.wgsl and weights_dot32.wgsl for `w_dot16`'s
// and `w_dot32`'s; `block_codes` serves weights_dot32_pairs_scaled.wgsl.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn nibbles4(w: u32, shift: u32) -> vec4<f32> {
    let v = (vec4<u32>(w) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(15u);
    return vec4<f32>(v) - vec4<f32>(8.0);
}

fn block_scale(s: u32) -> f32 {
    return unpack2x16float(w_scales[s / 2u])[s % 2u];
}

fn w_load8(row: u32, g: u32, k: u32) -> W8 {
    let block = word_at(row, g / 4u, k / 32u);
    let j = g % 4u;
    // Elements 8j .. 8j+8 of the block: bytes 0..7 (j even) or 8..15 (j odd), low nibbles for
    // j < 2 and high nibbles for j >= 2.
    let pair = (j % 2u) * 2u;
    let shift = (j / 2u) * 4u;
    let d = block_scale(block);
    // The two words of the 8 nibbles, not the block's whole vec4.
    let lo = w_data[block][pair];
    let hi = w_data[block][pair + 1u];
    return W8(nibbles4(lo, shift) * d, nibbles4(hi, shift) * d);
}

fn codes4(w: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(15u));
}

// Half a block: the low (first 16) or high nibbles of its vec4, the code offset 8 taken off
// through the sum of x and the scale applied once.
fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let block = word_at(row, h / 2u, k / 32u);
    let v = w_data[block];
    let shift = 4u * (h % 2u);
    let s = dot(codes4(v.x, shift), xs.v[0]) + dot(codes4(v.y, shift), xs.v[1])
        + dot(codes4(v.z, shift), xs.v[2]) + dot(codes4(v.w, shift), xs.v[3]);
    return (s - 8.0 * xs.sum) * block_scale(block);
}

// A whole block's codes against xs, unscaled: its nibbles loaded once (low nibbles the first
// 16 weights, high nibbles the next 16), the code offset 8 taken off through the sums of x.
fn block_codes(block: u32, xs: X32) -> f32 {
    let v = w_data[block];
    let s = dot(codes4(v.x, 0u), xs.lo.v[0]) + dot(codes4(v.y, 0u), xs.lo.v[1])
        + dot(codes4(v.z, 0u), xs.lo.v[2]) + dot(codes4(v.w, 0u), xs.lo.v[3])
        + dot(codes4(v.x, 4u), xs.hi.v[0]) + dot(codes4(v.y, 4u), xs.hi.v[1])
        + dot(codes4(v.z, 4u), xs.hi.v[2]) + dot(codes4(v.w, 4u), xs.hi.v[3]);
    return s - 8.0 * (xs.lo.sum + xs.hi.sum);
}

// A whole block: its nibbles and scale loaded once.
fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    let block = word_at(row, b, k / 32u);
    return block_codes(block, xs) * block_scale(block);
}

// A whole block against int8 activations (contract: weights_idot32.wgsl): its nibbles as
// bytes in eight packed dot products, the code offset 8 taken off through the sums of x's
// codes, the scale applied once.
fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    let block = word_at(row, b, k / 32u);
    let c = nibble_codes(w_data[block], 0u);
    let s = xq_dot16(c[0], xq.lo) + xq_dot16(c[1], xq.hi);
    return f32(s - 8 * (xq.sum.x + xq.sum.y)) * block_scale(block);
}

// A whole block's codes against xp (see XP32), unscaled: each of its four words masked to
// the codes of elements 4i and 4i + 2 (bits 0..3 and 16..19), 4i + 1 and 4i + 3 (>> 8), and
// the high nibbles' 16 + 4i .. (>> 4, >> 12), each mask times one of xp's words: two products
// per multiply, a half block's 16 in one sum; the code offset 8 taken off through xp.sum.
fn block_pcodes(block: u32, xp: XP32) -> i32 {
    let v = w_data[block];
    let m = vec4<u32>(0x000f000fu);
    let lo = (v & m) * xp.even_lo + ((v >> vec4<u32>(8u)) & m) * xp.odd_lo;
    let hi = ((v >> vec4<u32>(4u)) & m) * xp.even_hi + ((v >> vec4<u32>(12u)) & m) * xp.odd_hi;
    return pair_high(lo.x + lo.y + lo.z + lo.w) + pair_high(hi.x + hi.y + hi.z + hi.w)
        - 8 * xp.sum;
}

// A whole block against int8 activations in pairs (contract: weights_pdot32.wgsl).
fn w_pdot32(row: u32, b: u32, k: u32, xp: XP32) -> f32 {
    let block = word_at(row, b, k / 32u);
    return f32(block_pcodes(block, xp)) * block_scale(block);
}

// w_pdot32 of two pairs of rows (contract: weights_pdot32.wgsl), each pair's scales in one
// load (as weights_dot32_pairs_scaled.wgsl's `w_dot32_pairs`).
fn w_pdot32_pairs(r: vec4<u32>, b: u32, k: u32, xp: XP32) -> vec4<f32> {
    let per_row = k / 32u;
    let i = word_at(r.x, b, per_row);
    let j = word_at(r.z, b, per_row);
    let d = vec4<f32>(unpack2x16float(scale_word(i / 2u)), unpack2x16float(scale_word(j / 2u)));
    let q = vec4<i32>(
        block_pcodes(i, xp),
        block_pcodes(i + 1u, xp),
        block_pcodes(j, xp),
        block_pcodes(j + 1u, xp),
    );
    return vec4<f32>(q) * d;
}
