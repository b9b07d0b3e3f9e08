// Shared by the matrix products beside either twin of their `x` helpers (matrix_x.wgsl,
// matrix_x_wide.wgsl): x quantized to int8 blocks of 32 for the GPUs' integer products.

// Block i of x (entries 32i .. 32i + 32, counted from the start of x) as int8 codes
// c = round(x / d), d = max |x| / 127 (reference::quantize_q8). A NaN or an infinity in the
// block makes d NaN, so every product it enters is NaN too.
fn x_quant32(i: u32) -> XQ32 {
    var v: array<vec4<f32>, 8>;
    var m = vec4<f32>(0.0);
    var finite = true;
    for (var g = 0u; g < 4u; g++) {
        let e = x_load8(4u * i + g);
        v[2u * g] = e.lo;
        v[2u * g + 1u] = e.hi;
        m = max(m, max(abs(e.lo), abs(e.hi)));
        finite = finite && finite4(e.lo) && finite4(e.hi);
    }
    var q: XQ32;
    q.d = q8_scale(max(max(m.x, m.y), max(m.z, m.w)), finite);
    let id = q8_inverse(q.d);
    var sums = vec4<i32>(0);
    for (var j = 0u; j < 8u; j++) {
        let c = q8_codes(v[j], id);
        sums[j / 2u] += c.x + c.y + c.z + c.w;
        if j < 4u {
            q.lo[j] = pack4xI8(c);
        } else {
            q.hi[j - 4u] = pack4xI8(c);
        }
    }
    q.sum = vec2<i32>(sums.x + sums.y, sums.z + sums.w);
    return q;
}

// Block i of x as quantize_q8.wgsl wrote it (x then holds those blocks, 24 words each: XP32's
// 16 pair words, d, the codes' sum), i the same for the whole subgroup: loaded by one lane
// and handed to the others, as x_shared8. Call in uniform control flow.
fn x_pairs32(i: u32, inv: Invocation) -> XP32 {
    let a = x_shared8(3u * i, inv);
    let b = x_shared8(3u * i + 1u, inv);
    let c = x_shared8(3u * i + 2u, inv);
    var xp: XP32;
    xp.even_lo = bitcast<vec4<u32>>(a.lo);
    xp.odd_lo = bitcast<vec4<u32>>(a.hi);
    xp.even_hi = bitcast<vec4<u32>>(b.lo);
    xp.odd_hi = bitcast<vec4<u32>>(b.hi);
    xp.d = c.lo.x;
    xp.sum = bitcast<i32>(c.lo.y);
    return xp;
}
