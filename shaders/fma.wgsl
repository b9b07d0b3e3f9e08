// fma: the arithmetic yardstick that benchmarks compare the matrix products against, as copy
// is the bandwidth one. Each invocation runs 16 independent vec4 chains of fused multiply-adds
// a = fma(a, m, c) for p.iters steps and writes their sum: 2 * 4 * 16 * iters flops. Enough
// independent chains hide the FMA units' latency and the loop's own cost (lavapipe on 2 cores
// measured 2 chains 50, 3 64, 4 69, 8 94, 16 99 GFLOP/s, one step per iteration). llvmpipe
// lowers fma to a multiply and an add (Mesa's NIR option lower_ffma32), so there this is the
// multiply-add rate its shaders reach, not the CPU's FMA peak.
// Chain j of invocation i starts at f32((i * 4 + lane) % 1024) / 1024 + j, lane by lane.
// Bindings: params; out [invocations]. Grid: (workgroups, 1, 1), any count.
// Wrapper: src/kernels/fma.rs. CPU reference: reference::fma.

struct Params {
    iters: u32,
    m: f32,
    c: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;
// Steps per loop iteration; p.iters is a multiple of it (src/kernels/fma.rs). llvmpipe stores
// every value a loop carries (the 16 chains) under the execution mask once per iteration: one
// step per iteration measured 88 GFLOP/s, two 134, four 146, eight 111 (2 cores, Mesa 25.0.7).
const UNROLL: u32 = 4u;

// UNROLL steps of one chain.
fn steps(a: vec4<f32>, m: vec4<f32>, c: vec4<f32>) -> vec4<f32> {
    return fma(fma(fma(fma(a, m, c), m, c), m, c), m, c);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let i = inv.wg.x * WG + inv.lid;
    let s = vec4<f32>(vec4<u32>(i * 4u) + vec4<u32>(0u, 1u, 2u, 3u)) % vec4<f32>(1024.0) / 1024.0;
    var a0 = s;
    var a1 = s + 1.0;
    var a2 = s + 2.0;
    var a3 = s + 3.0;
    var a4 = s + 4.0;
    var a5 = s + 5.0;
    var a6 = s + 6.0;
    var a7 = s + 7.0;
    var a8 = s + 8.0;
    var a9 = s + 9.0;
    var a10 = s + 10.0;
    var a11 = s + 11.0;
    var a12 = s + 12.0;
    var a13 = s + 13.0;
    var a14 = s + 14.0;
    var a15 = s + 15.0;
    let m = vec4<f32>(p.m);
    let c = vec4<f32>(p.c);
    for (var t = 0u; t < p.iters; t += UNROLL) {
        a0 = steps(a0, m, c);
        a1 = steps(a1, m, c);
        a2 = steps(a2, m, c);
        a3 = steps(a3, m, c);
        a4 = steps(a4, m, c);
        a5 = steps(a5, m, c);
        a6 = steps(a6, m, c);
        a7 = steps(a7, m, c);
        a8 = steps(a8, m, c);
        a9 = steps(a9, m, c);
        a10 = steps(a10, m, c);
        a11 = steps(a11, m, c);
        a12 = steps(a12, m, c);
        a13 = steps(a13, m, c);
        a14 = steps(a14, m, c);
        a15 = steps(a15, m, c);
    }
    let sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        + (((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15)));
    out[i] = dot(sum, vec4<f32>(1.0));
}
