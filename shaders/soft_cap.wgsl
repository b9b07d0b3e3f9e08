// soft_cap: x[i] = cap * tanh(x[i] / cap) in place (Gemma 2's final logit soft-capping).
// Bindings: params; x [n]. Grid: ceil(n / WG) as 2-D.
// Wrapper: src/kernels/soft_cap.rs. CPU reference: reference::soft_cap.

struct Params {
    n: u32,
    cap: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let id = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    if id < p.n {
        x[id] = soft_cap(x[id], p.cap);
    }
}
