// matmul: Y[t, out_offset + r] = sum_k X[t, k] * W[r, k]   (prefill: a block of n token rows)
//
// Bindings: params; w_data / w_scales as in matvec.wgsl; x [n, k] f32 (common/matrix_x*.wgsl);
// y [n, out_stride] f32.
// Two layouts, chosen per adapter with REGISTER_TILES:
// - GPUs: grid (ceil(rows / 64), ceil(n / 64), 1), 256 invocations as a 16 x 16 square. Each
//   workgroup computes a 64 (tokens) x 64 (weight rows) tile of Y, stepping k by 16: it
//   dequantizes a 64 x 16 slice of W and copies a 64 x 16 slice of X into workgroup memory;
//   each invocation then accumulates a 4 x 4 block of outputs.
// - CPU adapters (no workgroup memory, whose per-lane indexing a CPU pays for lane by lane):
//   grid (ceil(rows / (4 WG)), ceil(n / 8), 1). Each invocation owns 4 consecutive weight rows
//   x 8 tokens, walks k contiguously 8 weights at a time (each weight dequantized once for the
//   8 tokens) and keeps its 32 sums in registers. (4 x 8 measured faster than 4 x 4 on
//   lavapipe: Gemma 3 270M pp256 37 against 34 tokens/s.) The 8 tokens' slices of x are the
//   same for a whole subgroup: with subgroups of 8 lanes or more (SPREAD_X) lane l loads token
//   l % 8's (four 8-byte words) and the others read it from that lane, where one lane loaded
//   all eight tokens' for its subgroup (llvmpipe walks the lanes for every load, even one
//   lane's; Gemma 3 270M pp512 on lavapipe 86.4-86.9 -> 102.4-105.1 tokens/s).
// k must be a multiple of 32 (checked by the wrapper).
// With GEGLU the product of Gemma's stacked [gate; up] rows ends in gelu_tanh(gate) * up, as
// matvec.wgsl's does (p.rows counts outputs; the up rows follow the gate rows): a GPU tile's
// 64 rows are 32 outputs' gate and up rows, an invocation's four rows two outputs' (the CPU
// reference: reference::geglu of the product).
// Wrapper: src/kernels/matmul.rs. CPU reference: reference::matmul.

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    out_offset: u32,
    out_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// @binding(1) w_data: see common/weights_data.wgsl.
@group(0) @binding(2) var<storage, read> w_scales: array<u32>;
// @binding(3) x: see common/matrix_x.wgsl.
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TILE: u32 = 64u;
const KT: u32 = 16u;
// 256 for the GPU layout (a 16 x 16 square); any size for the CPU one.
override WG: u32 = 256u;
override REGISTER_TILES: bool = false;
override GEGLU: bool = false;
// CPU layout with subgroups of at least 8 lanes: each lane loads one token's slice of x and
// hands it to the others (see tile_x).
override SPREAD_X: bool = false;
// Tiles stored k-major ([KT][TILE]) so the inner loop reads 4 consecutive floats as a vec4.
var<workgroup> w_tile: array<vec4<f32>, 256>;
var<workgroup> x_tile: array<vec4<f32>, 256>;

// Writes elements kk .. kk + 8 of tile row `row` into the W tile (to_w) or the X tile.
// Element (kk + e, row) of a [KT][TILE] tile lives at vec4 (kk + e) * 16 + row / 4, lane row % 4.
fn store_column8(to_w: bool, row: u32, kk: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let c = row / 4u;
    let l = row % 4u;
    for (var e = 0u; e < 4u; e++) {
        if to_w {
            w_tile[(kk + e) * 16u + c][l] = lo[e];
            w_tile[(kk + 4u + e) * 16u + c][l] = hi[e];
        } else {
            x_tile[(kk + e) * 16u + c][l] = lo[e];
            x_tile[(kk + 4u + e) * 16u + c][l] = hi[e];
        }
    }
}

// The CPU layout: 4 rows x 8 tokens per invocation, in registers. The tokens' sums are eight
// named vectors and the token steps written out, every index a constant (0-8 % faster on
// lavapipe than a loop over an array of sums).
fn register_tile(inv: Invocation) {
    let unit = inv.wg.x * WG + inv.lid;
    let t0 = inv.wg.y * 8u;
    // Rows and tokens past the end repeat the last one and are not stored (every invocation
    // stays, to share the loads of x).
    let rows = unit_rows(unit);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    for (var g = 0u; g < p.k / 8u; g++) {
        var held = X8(vec4<f32>(0.0), vec4<f32>(0.0));
        if SPREAD_X {
            held = x_load8(token_row(t0 + lane_index(inv) % 8u) + g);
        }
        let w = array<W8, 4>(
            w_load8(rows.x, g, p.k),
            w_load8(rows.y, g, p.k),
            w_load8(rows.z, g, p.k),
            w_load8(rows.w, g, p.k),
        );
        a0 += token_sums(w, tile_x(held, t0, 0u, g, inv));
        a1 += token_sums(w, tile_x(held, t0, 1u, g, inv));
        a2 += token_sums(w, tile_x(held, t0, 2u, g, inv));
        a3 += token_sums(w, tile_x(held, t0, 3u, g, inv));
        a4 += token_sums(w, tile_x(held, t0, 4u, g, inv));
        a5 += token_sums(w, tile_x(held, t0, 5u, g, inv));
        a6 += token_sums(w, tile_x(held, t0, 6u, g, inv));
        a7 += token_sums(w, tile_x(held, t0, 7u, g, inv));
    }
    let acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    for (var t = 0u; t < 8u; t++) {
        if t0 + t < p.n {
            store4(t0 + t, unit, acc[t]);
        }
    }
}

// Where token t's row of x starts, in units of 8 entries (tokens past the last repeat it).
fn token_row(t: u32) -> u32 {
    return min(t, p.n - 1u) * (p.k / 8u);
}

// Entries 8g .. 8g + 8 of token t0 + t: with SPREAD_X from lane t, which loaded them as its
// `held` (lane l loads token t0 + l % 8, so a subgroup's eight loads serve all its lanes);
// else loaded by one lane for its subgroup. Call in uniform control flow.
fn tile_x(held: X8, t0: u32, t: u32, g: u32, inv: Invocation) -> X8 {
    if SPREAD_X {
        return X8(from_lane(held.lo, t), from_lane(held.hi, t));
    }
    return x_shared8(token_row(t0 + t) + g, inv);
}

// One token's products with the four rows' 8 weights.
fn token_sums(w: array<W8, 4>, xv: X8) -> vec4<f32> {
    return vec4<f32>(
        dot(w[0].lo, xv.lo) + dot(w[0].hi, xv.hi),
        dot(w[1].lo, xv.lo) + dot(w[1].hi, xv.hi),
        dot(w[2].lo, xv.lo) + dot(w[2].hi, xv.hi),
        dot(w[3].lo, xv.lo) + dot(w[3].hi, xv.hi),
    );
}

// The four weight rows of unit u: rows 4u .. 4u + 3, or with GEGLU gate rows 2u, 2u + 1 and
// their up rows p.rows further on. Rows past the end repeat the last.
fn unit_rows(u: u32) -> vec4<u32> {
    let last = p.rows - 1u;
    if GEGLU {
        let o = vec2<u32>(min(2u * u, last), min(2u * u + 1u, last));
        return vec4<u32>(o, o + p.rows);
    }
    return min(vec4<u32>(4u * u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
}

// Token t's sums of unit u's rows: four outputs, or with GEGLU gelu_tanh(gate) * up for two.
fn store4(t: u32, u: u32, acc: vec4<f32>) {
    let out = t * p.out_stride + p.out_offset;
    if GEGLU {
        for (var j = 0u; j < 2u; j++) {
            if 2u * u + j < p.rows {
                y[out + 2u * u + j] = gelu_tanh(acc[j]) * acc[j + 2u];
            }
        }
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if 4u * u + j < p.rows {
            y[out + 4u * u + j] = acc[j];
        }
    }
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    if REGISTER_TILES {
        register_tile(inv);
        return;
    }
    // The tile's 64 rows are 16 units of four (see unit_rows).
    let unit0 = inv.wg.x * (TILE / 4u);
    let tok0 = inv.wg.y * TILE;
    let tx = inv.lid % 16u;
    let ty = inv.lid / 16u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    // Loader roles: invocations 0..127 fetch W, 128..255 fetch X; each one 8 elements.
    let slot = inv.lid % 128u;
    let lr = slot / 2u;
    let lg = slot % 2u;
    for (var k0 = 0u; k0 < p.k; k0 += KT) {
        workgroupBarrier();
        let g = k0 / 8u + lg;
        if inv.lid < 128u {
            // Tile row lr: row lr % 4 of unit lr / 4 (rows past the end repeat the last;
            // their sums are not stored).
            let w = w_load8(unit_rows(unit0 + lr / 4u)[lr % 4u], g, p.k);
            store_column8(true, lr, lg * 8u, w.lo, w.hi);
        } else {
            var lo = vec4<f32>(0.0);
            var hi = vec4<f32>(0.0);
            if tok0 + lr < p.n {
                let xv = x_load8((tok0 + lr) * (p.k / 8u) + g);
                lo = xv.lo;
                hi = xv.hi;
            }
            store_column8(false, lr, lg * 8u, lo, hi);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            let wv = w_tile[kk * 16u + tx];
            let xv = x_tile[kk * 16u + ty];
            acc[0] += xv.x * wv;
            acc[1] += xv.y * wv;
            acc[2] += xv.z * wv;
            acc[3] += xv.w * wv;
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let t = tok0 + ty * 4u + i;
        if t < p.n {
            store4(t, unit0 + tx, acc[i]);
        }
    }
}
