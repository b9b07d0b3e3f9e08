// add: acc[i] += x[i] (the residual add), over n elements.
// Bindings: params; x [n]; acc [n]. Grid: ceil(n / WG) as 2-D.
// Wrapper: src/kernels/add.rs. CPU reference: reference::add.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let id = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    if id < p.n {
        acc[id] += x[id];
    }
}
