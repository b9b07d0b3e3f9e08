// matvec: y[v, out_offset + r] = sum_k W[r, k] * x[v, k]   (decode: one or a few vectors)
//
// Bindings: params; w_data [rows, k] in the weight format's layout (vec4<u32>); w_scales (f16
// pairs, quantized formats only); x [n, k] f32; y [n, out_stride] f32.
// Two layouts, chosen per adapter with ROW_PER_INVOCATION:
// - GPUs: grid (ceil(rows / ROWS) workgroups as a 2-D grid, 1, n). Each workgroup computes
//   ROWS (<= 4) consecutive rows; its invocations share the k dimension in units of RUN
//   consecutive groups of 8 weights (a quantized block's 16 bytes, read and scaled by one
//   invocation rather than four), neighbouring invocations on neighbouring units (coalesced;
//   or, with CONTIGUOUS, each its own run), and reduce once for all ROWS rows.
// - CPU adapters: grid (ceil(rows / (4 WG)) as a 2-D grid, 1, n). Each invocation walks four
//   whole rows side by side (four independent sums in flight); quantized formats 16 weights at
//   a time through the format's `w_dot16` (every loaded word used, a scale loaded and applied
//   once, x's four vec4s loaded once for the four rows: llvmpipe turns each lane's load into
//   a bounds-checked scalar load, and a load of x at a uniform index costs nearly as much), so
//   reads are contiguous per invocation and nothing needs reducing.
// Wrapper: src/kernels/matvec.rs. CPU reference: reference::matvec.

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    out_offset: u32,
    out_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w_data: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> w_scales: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override WG: u32 = 64u;
override ROWS: u32 = 4u;
override CONTIGUOUS: bool = false;
// Consecutive 8-weight groups per unit of work; divides k / 8.
override RUN: u32 = 1u;
override ROW_PER_INVOCATION: bool = false;
// CPU layout: 16 weights at a time through the format's own `w_dot16` (quantized formats),
// else 8 at a time through `w_load8` (plain floats, where that measured faster).
override DOT16: bool = false;

fn dot8(w: W8, base: u32) -> f32 {
    return dot(w.lo, x[base]) + dot(w.hi, x[base + 1u]);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    if ROW_PER_INVOCATION {
        // 4 rows per invocation: four independent sums in flight, a whole 32-weight block of
        // each row at a time (its loads and scale once per 16).
        let r0 = ((inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid) * 4u;
        if r0 >= p.rows {
            return;
        }
        let last = p.rows - 1u;
        let r1 = min(r0 + 1u, last);
        let r2 = min(r0 + 2u, last);
        let r3 = min(r0 + 3u, last);
        let xbase = inv.wg.z * (p.k / 4u);
        var acc = vec4<f32>(0.0);
        if DOT16 {
            for (var h = 0u; h < p.k / 16u; h++) {
                var xs: X16;
                for (var j = 0u; j < 4u; j++) {
                    xs.v[j] = x[xbase + 4u * h + j];
                }
                xs.sum = dot(xs.v[0] + xs.v[1] + xs.v[2] + xs.v[3], vec4<f32>(1.0));
                acc += vec4<f32>(
                    w_dot16(r0, h, p.k, xs),
                    w_dot16(r1, h, p.k, xs),
                    w_dot16(r2, h, p.k, xs),
                    w_dot16(r3, h, p.k, xs),
                );
            }
        } else {
            for (var g = 0u; g < p.k / 8u; g++) {
                let xb = xbase + 2u * g;
                acc += vec4<f32>(
                    dot8(w_load8(r0, g, p.k), xb),
                    dot8(w_load8(r1, g, p.k), xb),
                    dot8(w_load8(r2, g, p.k), xb),
                    dot8(w_load8(r3, g, p.k), xb),
                );
            }
        }
        let out = inv.wg.z * p.out_stride + p.out_offset;
        for (var j = 0u; j < 4u; j++) {
            if r0 + j < p.rows {
                y[out + r0 + j] = acc[j];
            }
        }
        return;
    }
    let first = (inv.wg.x + inv.wg.y * inv.nwg.x) * ROWS;
    let v = inv.wg.z;
    let groups = p.k / 8u;
    let units = groups / RUN;
    let per = (units + WG - 1u) / WG;
    let xbase = v * (p.k / 4u);
    // Rows past the end of the chunk repeat the last row and are not stored.
    let last = p.rows - 1u;
    let r0 = min(first, last);
    let r1 = min(first + 1u, last);
    let r2 = min(first + 2u, last);
    let r3 = min(first + 3u, last);
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < per; j++) {
        let unit = select(inv.lid + j * WG, inv.lid * per + j, CONTIGUOUS);
        if unit < units {
            for (var q = 0u; q < RUN; q++) {
                let g = unit * RUN + q;
                let xb = xbase + 2u * g;
                acc.x += dot8(w_load8(r0, g, p.k), xb);
                if ROWS > 1u {
                    acc.y += dot8(w_load8(r1, g, p.k), xb);
                }
                if ROWS > 2u {
                    acc.z += dot8(w_load8(r2, g, p.k), xb);
                }
                if ROWS > 3u {
                    acc.w += dot8(w_load8(r3, g, p.k), xb);
                }
            }
        }
    }
    let total = wg_sum4(acc, inv);
    if inv.lid < ROWS && first + inv.lid < p.rows {
        y[v * p.out_stride + p.out_offset + first + inv.lid] = total[inv.lid];
    }
}
