// rms_norm: y = x / sqrt(mean(x^2) + eps) * (w_offset + w), per row, in f32.
//
// Gemma stores its norm weights zero-centred, so w_offset is 1 for Hugging Face checkpoints
// (GGUF files already have the 1 added: w_offset 0). Gemma 2/3's post-norms, added into the
// residual stream, are residual_norm.wgsl's.
// Bindings: params; x [n, d]; w [d]; out [n, d]; flags [n] u32 (written with FLAGS only).
// Grid: (n rows as a 2-D grid). Workgroup WG.
// Wrapper: src/kernels/rms_norm.rs. CPU reference: reference::rms_norm.

struct Params {
    n: u32,
    d: u32,
    eps: f32,
    w_offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> flags: array<u32>;

override WG: u32 = 256u;
// With FLAGS, flags[row] = 1 where the row's output holds a NaN or an infinity, else 0: a
// step's final norm, which its logits come from (a soft-capped logit is finite even when its
// input is not, as tanh saturates).
override FLAGS: bool = false;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wg.x + inv.wg.y * inv.nwg.x;
    if row >= p.n {
        return;
    }
    let base = row * p.d;
    var ss = 0.0;
    for (var i = inv.lid; i < p.d; i += WG) {
        let v = x[base + i];
        ss += v * v;
    }
    let scale = inverseSqrt(wg_sum(ss, inv) / f32(p.d) + p.eps);
    var bad = 0.0;
    for (var i = inv.lid; i < p.d; i += WG) {
        let v = x[base + i] * scale * (p.w_offset + w[i]);
        out[base + i] = v;
        bad += non_finite(v);
    }
    if FLAGS {
        let total = wg_sum(bad, inv);
        if inv.lid == 0u {
            flags[row] = u32(total > 0.0);
        }
    }
}
