// embedding: out[t, :] = E[ids[t], :] * scale, for E in any weight format.
//
// E may be split by rows into chunks (see src/kernels/matrix.rs); this dispatch owns rows
// [row_start, row_start + rows) and writes only the tokens whose id falls there.
// Bindings: params; w_data / w_scales (E's chunk); ids [n] u32; out [n, d] f32.
// Grid: (n, 1, 1) workgroups, WG invocations over the row's groups of 8.
// Wrapper: src/kernels/embedding.rs. CPU reference: reference::embedding.

struct Params {
    n: u32,
    d: u32,
    row_start: u32,
    rows: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w_data: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> w_scales: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let t = inv.wg.x + inv.wg.y * inv.nwg.x;
    if t >= p.n {
        return;
    }
    let id = ids[t];
    if id < p.row_start || id - p.row_start >= p.rows {
        return;
    }
    let row = id - p.row_start;
    for (var g = inv.lid; g < p.d / 8u; g += WG) {
        let w = w_load8(row, g, p.d);
        out[t * (p.d / 4u) + 2u * g] = w.lo * p.scale;
        out[t * (p.d / 4u) + 2u * g + 1u] = w.hi * p.scale;
    }
}
