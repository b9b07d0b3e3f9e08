// geglu: out[t, i] = gelu_tanh(gate[t, i]) * up[t, i], with gate and up the two halves of each
// row of gate_up [n, 2 * d] (the fused gate/up projection) and gelu_tanh as math.wgsl's (not
// the erf GELU). Decode fuses the same into its product (matvec.wgsl's GEGLU).
// Bindings: params; gate_up [n, 2d]; out [n, d]. Grid: ceil(n * d / WG) as 2-D.
// Wrapper: src/kernels/geglu.rs. CPU reference: reference::geglu.

struct Params {
    n: u32,
    d: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let id = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    if id >= p.n * p.d {
        return;
    }
    let t = id / p.d;
    let i = id % p.d;
    let g = gate_up[t * 2u * p.d + i];
    let u = gate_up[t * 2u * p.d + p.d + i];
    out[id] = gelu_tanh(g) * u;
}
