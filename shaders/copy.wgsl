// copy: dst[i] = src[i] over n vec4s; the bandwidth yardstick that benchmarks compare every
// kernel against. CONTIGUOUS: each invocation copies its own contiguous run (CPU adapters)
// instead of neighbouring invocations taking neighbouring vec4s (GPUs).
// Bindings: params; src; dst. Grid: (workgroups, 1, 1), any count.
// Wrapper: src/kernels/copy.rs. CPU reference: slice copy.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

override WG: u32 = 256u;
override CONTIGUOUS: bool = false;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let threads = inv.nwg.x * WG;
    let id = inv.wg.x * WG + inv.lid;
    let per = (p.n + threads - 1u) / threads;
    for (var j = 0u; j < per; j++) {
        let i = select(id + j * threads, id * per + j, CONTIGUOUS);
        if i < p.n {
            dst[i] = src[i];
        }
    }
}
