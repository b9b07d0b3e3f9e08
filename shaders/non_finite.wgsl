// non_finite: out[0] = the number of values of x[0..n] that are NaN or infinite, capped at 1
// (a flag: 0 when every value is finite). Checks the hidden state a step's logits come from:
// a soft-capped logit is finite even when its input is not (tanh saturates).
// Bindings: params; x [n]; out [1] u32. Grid: one workgroup.
// Wrapper: src/kernels/non_finite.rs. CPU reference: reference::non_finite.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

override WG: u32 = 256u;

var<workgroup> bad: atomic<u32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    if inv.lid == 0u {
        atomicStore(&bad, 0u);
    }
    workgroupBarrier();
    var found = 0u;
    for (var i = inv.lid; i < p.n; i += WG) {
        // By the exponent bits: all ones is infinite or NaN.
        found |= u32((bitcast<u32>(x[i]) & 0x7f800000u) == 0x7f800000u);
    }
    if found != 0u {
        atomicOr(&bad, 1u);
    }
    workgroupBarrier();
    if inv.lid == 0u {
        out[0] = atomicLoad(&bad);
    }
}
