// `w_pdot32` and `w_pdot32_pairs` for the formats whose weights_*.wgsl does not define its
// own: the format's `w_idot32` against xp's codes unpacked (weights_idot32.wgsl's contract).
// The contract: w_pdot32(row, b, k, xp) = sum over j < 32 of W[row, 32b + j] * c_j, with c_j
// the int8 code of entry j in xp (common/math.wgsl's XP32; its scale xp.d is the caller's to
// apply), for a matrix with k columns; w_pdot32_pairs(r, b, k, xp)[c] = w_pdot32(r[c], b, k, xp)
// for four rows given as two pairs (as weights_dot32_pairs.wgsl's). A format's own multiplies
// its 4-bit codes two to a 32-bit multiply.

// The codes of a pair word c2 + 65536 c1: (c1, c2).
fn pair_codes(w: u32) -> vec2<i32> {
    let second = (bitcast<i32>(w) << 16u) >> 16u;
    return vec2<i32>((bitcast<i32>(w) - second) >> 16u, second);
}

// The codes of entries 4i .. 4i + 4 from an even and an odd pair word, packed as XQ32's.
fn pair_words_packed(even: u32, odd: u32) -> vec4<i32> {
    let e = pair_codes(even);
    let o = pair_codes(odd);
    return vec4<i32>(e.x, o.x, e.y, o.y);
}

fn xq_of_pairs(xp: XP32) -> XQ32 {
    var q: XQ32;
    q.d = xp.d;
    var sums = vec2<i32>(0);
    for (var i = 0u; i < 4u; i++) {
        let lo = pair_words_packed(xp.even_lo[i], xp.odd_lo[i]);
        let hi = pair_words_packed(xp.even_hi[i], xp.odd_hi[i]);
        q.lo[i] = pack4xI8(lo);
        q.hi[i] = pack4xI8(hi);
        sums += vec2<i32>(lo.x + lo.y + lo.z + lo.w, hi.x + hi.y + hi.z + hi.w);
    }
    q.sum = sums;
    return q;
}

fn w_pdot32(row: u32, b: u32, k: u32, xp: XP32) -> f32 {
    return w_idot32(row, b, k, xq_of_pairs(xp));
}

fn w_pdot32_pairs(r: vec4<u32>, b: u32, k: u32, xp: XP32) -> vec4<f32> {
    let xq = xq_of_pairs(xp);
    return vec4<f32>(
        w_idot32(r.x, b, k, xq),
        w_idot32(r.y, b, k, xq),
        w_idot32(r.z, b, k, xq),
        w_idot32(r.w, b, k, xq),
    );
}
