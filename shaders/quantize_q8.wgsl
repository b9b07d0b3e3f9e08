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

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let b = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    if b >= p.blocks {
        return;
    }
    var v: array<vec4<f32>, 8>;
    for (var g = 0u; g < 8u; g++) {
        v[g] = x[8u * b + g];
    }
    let w = q8_pair_block(v);
    for (var j = 0u; j < 6u; j++) {
        xq[6u * b + j] = w[j];
    }
}
