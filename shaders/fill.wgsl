// fill: out[i] = (hash(seed, i) & mask) | bits, for i < n words.
//
// Random weights made on the GPU for synthetic benchmark models: `mask` keeps the random
// bits (sign, mantissa, quant codes) and `bits` fixes the rest (an exponent), so one kernel
// fills f32, bf16 pairs, int8/int4 codes and f16 scales. Not a statistical generator: a
// PCG-style integer hash, enough to keep data realistic for caches and quantizers.
// Bindings: params; out [n] u32. Grid: ceil(n / WG) as 2-D.
// Wrapper: src/kernels/fill.rs. CPU reference: kernels::fill::fill_word.

struct Params {
    n: u32,
    seed: u32,
    mask: u32,
    bits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

override WG: u32 = 256u;

fn hash(x: u32) -> u32 {
    var h = x * 747796405u + 2891336453u;
    h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
    return (h >> 22u) ^ h;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let i = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    if i < p.n {
        out[i] = (hash(i ^ hash(p.seed)) & p.mask) | p.bits;
    }
}
