// rope: rotate-half rotary embedding, in place on x [n, heads, head_dim].
//
// Dimension i pairs with i + head_dim / 2:
//   x'[i]        = x[i] cos(a) - x[i + h/2] sin(a)
//   x'[i + h/2]  = x[i + h/2] cos(a) + x[i] sin(a),   a = pos * theta^(-2i / head_dim)
// The angles come from `table` [max_pos, head_dim / 2] of (cos, sin), computed once on the CPU
// exactly as transformers does (f32 inv_freq and f32 product, then cos and sin), because GPU
// sin/cos are only accurate on [-pi, pi]. Positions are read from `positions` [n].
// Bindings: params; positions [n] u32; table; x. Grid: ceil(n * heads * head_dim / 2 / WG) as 2-D.
// Wrapper: src/kernels/rope.rs. CPU reference: reference::rope.

struct Params {
    n: u32,
    heads: u32,
    head_dim: u32,
    max_pos: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let id = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    let half = p.head_dim / 2u;
    if id >= p.n * p.heads * half {
        return;
    }
    let i = id % half;
    let head = (id / half) % p.heads;
    let t = id / (half * p.heads);
    let pos = min(positions[t], p.max_pos - 1u);
    let cs = table[pos * half + i];
    let a = (t * p.heads + head) * p.head_dim + i;
    let x0 = x[a];
    let x1 = x[a + half];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[a + half] = x1 * cs.x + x0 * cs.y;
}
