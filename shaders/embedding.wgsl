// embedding: out[t, :] = E[ids[t], :] * scale, for E in any weight format, and the first
// layer's input norm of it in the same pass over the row:
//   h[t, :] = out[t, :] / sqrt(mean(out[t, :]^2) + eps) * (w_offset + norm)
// in f32, as rms_norm.wgsl computes it.
//
// E may be split by rows into chunks (see src/kernels/matrix.rs); this dispatch owns rows
// [row_start, row_start + rows) and writes only the tokens whose id falls there.
// Bindings: params; w_data / w_scales (E's chunk); ids [n] u32; out [n, d] f32; norm [d];
// h [n, d]; hq [n * d / 32 * 24] words (with QUANT only: h quantized as quantize_q8.wgsl writes
// it, for first q/k/v products that read x so; d a multiple of 32). Grid: (n, 1, 1)
// workgroups, WG invocations over the row's groups of 8.
// Wrapper: src/kernels/embedding.rs. CPU reference: reference::embedding, then
// reference::rms_norm.

struct Params {
    n: u32,
    d: u32,
    row_start: u32,
    rows: u32,
    scale: f32,
    eps: f32,
    w_offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// @binding(1) w_data, @binding(2) w_scales: see common/weights_data.wgsl.
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> norm: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> h: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> hq: array<vec4<u32>>;

override WG: u32 = 64u;
override QUANT: bool = false;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let t = inv.wg.x + inv.wg.y * inv.nwg.x;
    if t >= p.n {
        return;
    }
    // The same for the whole workgroup: it returns, or reaches the reduction, as one.
    let id = ids[t];
    if id < p.row_start || id - p.row_start >= p.rows {
        return;
    }
    let row = id - p.row_start;
    let base = t * (p.d / 4u);
    var ss = 0.0;
    for (var g = inv.lid; g < p.d / 8u; g += WG) {
        let w = w_load8(row, g, p.d);
        let lo = w.lo * p.scale;
        let hi = w.hi * p.scale;
        out[base + 2u * g] = lo;
        out[base + 2u * g + 1u] = hi;
        ss += dot(lo, lo) + dot(hi, hi);
    }
    let inv_rms = inverseSqrt(wg_sum(ss, inv) / f32(p.d) + p.eps);
    if QUANT {
        // A block of 32 per invocation: its four groups' values computed again as above
        // (the same floats out holds, read by no other invocation without a barrier), h as
        // below, and the block quantized.
        for (var b = inv.lid; b < p.d / 32u; b += WG) {
            var v: array<vec4<f32>, 8>;
            for (var j = 0u; j < 8u; j++) {
                let w = w_load8(row, 4u * b + j / 2u, p.d);
                let e = select(w.lo, w.hi, j % 2u == 1u) * p.scale;
                v[j] = e * inv_rms * (p.w_offset + norm[8u * b + j]);
                h[base + 8u * b + j] = v[j];
            }
            let words = q8_pair_block(v);
            for (var i = 0u; i < 6u; i++) {
                hq[6u * (t * (p.d / 32u) + b) + i] = words[i];
            }
        }
        return;
    }
    // Each invocation reads back only what it wrote: no barrier needed.
    for (var g = inv.lid; g < p.d / 8u; g += WG) {
        for (var j = 2u * g; j < 2u * g + 2u; j++) {
            h[base + j] = out[base + j] * inv_rms * (p.w_offset + norm[j]);
        }
    }
}
