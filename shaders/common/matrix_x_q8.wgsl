// Shared by the matrix products beside either twin of their `x` helpers (matrix_x.wgsl,
// matrix_x_wide.wgsl): x quantized to int8 blocks of 32 for the GPUs' integer products.

// Block i of x (entries 32i .. 32i + 32, counted from the start of x) as int8 codes
// c = round(x / d), d = max |x| / 127 (reference::quantize_q8). A NaN or an infinity in the
// block makes d NaN, so every product it enters is NaN too.
fn x_quant32(i: u32) -> XQ32 {
    var v: array<vec4<f32>, 8>;
    var m = vec4<f32>(0.0);
    var total = vec4<f32>(0.0);
    for (var g = 0u; g < 4u; g++) {
        let e = x_load8(4u * i + g);
        v[2u * g] = e.lo;
        v[2u * g + 1u] = e.hi;
        m = max(m, max(abs(e.lo), abs(e.hi)));
        total += abs(e.lo) + abs(e.hi);
    }
    let amax = max(max(m.x, m.y), max(m.z, m.w));
    var q: XQ32;
    q.d = amax * (1.0 / 127.0) + 0.0 * dot(total, vec4<f32>(1.0));
    let id = select(0.0, 1.0 / q.d, q.d > 0.0);
    var sums = vec4<i32>(0);
    for (var j = 0u; j < 8u; j++) {
        let c = vec4<i32>(clamp(round(v[j] * id), vec4<f32>(-127.0), vec4<f32>(127.0)));
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
