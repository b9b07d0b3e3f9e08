// quantize_q8: x [n, k] f32 in blocks of 32 entries quantized as reference::quantize_q8
// (int8 codes c = round(x / d), d = max |x| / 127 per block), each written as matvec's CPU
// layout reads it (common/matrix_x_q8.wgsl's `x_pairs32`): 24 words, XP32's 16 pair words
// (even_lo, odd_lo, even_hi, odd_hi), then d, the sum of the block's codes and six zeros. One
// pass per product input, so a decode product's workgroups share one quantization of x
// rather than each quantizing every block (measured 1.6x the product's time on lavapipe).
// Bindings: params; x [blocks * 32] f32; xq [blocks * 24] words. Grid: ceil(blocks / WG) as
// 2-D, an invocation a block.
// Wrapper: src/kernels/quantize_q8.rs. CPU reference: reference::quantize_q8.

struct Params {
    blocks: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> xq: array<vec4<u32>>;

override WG: u32 = 64u;

// Entries (0, 2) and (1, 3) of c, then of e, as XP32's pair words c(second) + 65536 c(first).
fn pair_words(c: vec4<i32>, e: vec4<i32>) -> vec4<u32> {
    return bitcast<vec4<u32>>(vec4<i32>(c.z, e.z, c.w, e.w) + 65536 * vec4<i32>(c.x, e.x, c.y, e.y));
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let b = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    if b >= p.blocks {
        return;
    }
    var v: array<vec4<f32>, 8>;
    var m = vec4<f32>(0.0);
    var finite = true;
    for (var g = 0u; g < 8u; g++) {
        v[g] = x[8u * b + g];
        m = max(m, abs(v[g]));
        finite = finite && finite4(v[g]);
    }
    // A NaN or an infinity in the block makes d NaN (q8_scale).
    let d = q8_scale(max(max(m.x, m.y), max(m.z, m.w)), finite);
    let id = q8_inverse(d);
    var sum = vec4<i32>(0);
    // Entries 8h .. 8h + 8 give words 2h % 4 and 2h % 4 + 1 of even and odd (lo for h < 2).
    var w: array<vec4<u32>, 4>;
    for (var h = 0u; h < 4u; h++) {
        let c = q8_codes(v[2u * h], id);
        let e = q8_codes(v[2u * h + 1u], id);
        sum += c + e;
        let pw = pair_words(c, e);
        let even = 2u * (h / 2u);
        let at = 2u * (h % 2u);
        w[even][at] = pw.x;
        w[even][at + 1u] = pw.y;
        w[even + 1u][at] = pw.z;
        w[even + 1u][at + 1u] = pw.w;
    }
    for (var j = 0u; j < 4u; j++) {
        xq[6u * b + j] = w[j];
    }
    xq[6u * b + 4u] = vec4<u32>(bitcast<u32>(d), bitcast<u32>(sum.x + sum.y + sum.z + sum.w), 0u, 0u);
    xq[6u * b + 5u] = vec4<u32>(0u);
}
