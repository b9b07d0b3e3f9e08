// residual_norm: the residual update of a Gemma 2/3 block and the next block's input norm in
// one pass over each row:
//   x += rms_norm(o) * (w_offset + post)      (the block's post-norm, added to the stream)
//   h  = rms_norm(x) * (w_offset + next)      (the next block's pre-norm, or the final norm)
// with rms_norm(v) = v / sqrt(mean(v^2) + eps), in f32. Each sum runs in the order of
// rms_norm.wgsl's (the same WG), so x and h equal those two kernels' results bit for bit.
// With QUANT, h's blocks of 32 also quantized as quantize_q8.wgsl writes them, for the decode
// products that take int8 x (one dispatch fewer before each of them).
// Bindings: params; o [n, d]; post [d]; next [d]; x [n, d], updated; h [n, d]; flags [n] u32
// (h's, as rms_norm.wgsl's, written with FLAGS only); hq [n * d / 32 * 24] words (with QUANT
// only; d a multiple of 32).
// Grid: (n rows as a 2-D grid). Workgroup WG.
// Wrapper: src/kernels/residual_norm.rs. CPU reference: reference::rms_norm, then
// reference::add, then reference::rms_norm.

struct Params {
    n: u32,
    d: u32,
    eps: f32,
    w_offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o: array<f32>;
@group(0) @binding(2) var<storage, read> post: array<f32>;
@group(0) @binding(3) var<storage, read> next: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> h: array<f32>;
@group(0) @binding(6) var<storage, read_write> flags: array<u32>;
@group(0) @binding(7) var<storage, read_write> hq: array<vec4<u32>>;

override WG: u32 = 256u;
// With FLAGS, flags[row] = 1 where the row's output holds a NaN or an infinity, else 0: a
// step's final norm, which its logits come from (a soft-capped logit is finite even when its
// input is not, as tanh saturates).
override FLAGS: bool = false;
// Also write hq: h quantized to int8 blocks of 32 (common/math.wgsl's `q8_pair_block`).
override QUANT: bool = false;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wg.x + inv.wg.y * inv.nwg.x;
    if row >= p.n {
        return;
    }
    let base = row * p.d;
    var ss = 0.0;
    for (var i = inv.lid; i < p.d; i += WG) {
        let v = o[base + i];
        ss += v * v;
    }
    let scale = inverseSqrt(wg_sum(ss, inv) / f32(p.d) + p.eps);
    // Each invocation updates, then reads back, only its own elements: no barrier needed.
    var ss_x = 0.0;
    for (var i = inv.lid; i < p.d; i += WG) {
        let v = x[base + i] + o[base + i] * scale * (p.w_offset + post[i]);
        x[base + i] = v;
        ss_x += v * v;
    }
    let scale_x = inverseSqrt(wg_sum(ss_x, inv) / f32(p.d) + p.eps);
    var bad = 0.0;
    for (var i = inv.lid; i < p.d; i += WG) {
        let v = x[base + i] * scale_x * (p.w_offset + next[i]);
        h[base + i] = v;
        bad += non_finite(v);
    }
    if FLAGS {
        let total = wg_sum(bad, inv);
        if inv.lid == 0u {
            flags[row] = u32(total > 0.0);
        }
    }
    if QUANT {
        // A block per invocation, once every invocation's entries of h are written.
        storageBarrier();
        let blocks = p.d / 32u;
        for (var b = inv.lid; b < blocks; b += WG) {
            let at = base + 32u * b;
            var v: array<vec4<f32>, 8>;
            for (var g = 0u; g < 8u; g++) {
                let i = at + 4u * g;
                v[g] = vec4<f32>(h[i], h[i + 1u], h[i + 2u], h[i + 3u]);
            }
            let w = q8_pair_block(v);
            let out = 6u * (row * blocks + b);
            for (var j = 0u; j < 6u; j++) {
                hq[out + j] = w[j];
            }
        }
    }
}
