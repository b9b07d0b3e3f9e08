// matmul: Y[t, out_offset + r] = sum_k X[t, k] * W[r, k]   (prefill: a block of n token rows)
//
// Bindings: params; w_data / w_scales as in matvec.wgsl; x [n, k] f32 (common/matrix_x*.wgsl);
// y [n, out_stride] f32; yq (not written).
// Two layouts, chosen per adapter with REGISTER_TILES:
// - GPUs: grid (ceil(rows / 64), ceil(n / 64), 1), 256 invocations as a 16 x 16 square. Each
//   workgroup computes a 64 (tokens) x 64 (weight rows) tile of Y, stepping k by 16: it
//   dequantizes a 64 x 16 slice of W and copies a 64 x 16 slice of X into workgroup memory;
//   each invocation then accumulates a 4 x 4 block of outputs.
// - CPU adapters (no workgroup memory, whose per-lane indexing a CPU pays for lane by lane):
//   grid (ceil(rows / (8 WG)), ceil(n / 32), 1). Each invocation owns 8 consecutive weight
//   rows (two units of four, see unit_rows) x 32 tokens, walks k contiguously 8 weights at a
//   time (each weight dequantized once for the 32 tokens) and keeps its 256 sums in
//   registers (see register_tile for the tile's measured shape). The slices of x of each 8
//   of the tokens are the same for a whole subgroup: with subgroups of 8 lanes or more
//   (SPREAD_X) lane l loads token l % 8's (four 8-byte words) and the others read it from
//   that lane, where one lane loaded all eight tokens' for its subgroup (llvmpipe walks the
//   lanes for every load, even one lane's; Gemma 3 270M pp512 on lavapipe 86.4-86.9 ->
//   102.4-105.1 tokens/s with 8 tokens a tile).
// - GPUs with INT8 (quantized weights): grid and tile as the GPU layout's, stepping k by one
//   32-weight block: invocations 0..63 quantize the tile's 64 tokens' block of x to int8
//   (`x_quant32`) into workgroup memory, then each invocation multiplies its 4 rows' block
//   (`w_idot32`, packed integer dot products) with its 4 tokens' codes. The product is W
//   times reference::quantize_q8(x), as decode's (matvec.wgsl) and GGML's mul_mmq compute.
// k must be a multiple of 32 (checked by the wrapper).
// With GEGLU the product of Gemma's stacked [gate; up] rows ends in gelu_tanh(gate) * up, as
// matvec.wgsl's does (p.rows counts outputs; the up rows follow the gate rows): a GPU tile's
// 64 rows are 32 outputs' gate and up rows, a unit's four rows two outputs' (the CPU
// reference: reference::geglu of the product).
// Wrapper: src/kernels/matmul.rs. CPU reference: reference::matmul (with INT8, of
// reference::quantize_q8(x)).

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    out_offset: u32,
    out_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// @binding(1) w_data, @binding(2) w_scales: see common/weights_data.wgsl.
// @binding(3) x: see common/matrix_x.wgsl.
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
// Matvec's quantized output (matvec.wgsl's QUANT_Y), which no matmul writes: bound to keep
// the two kernels' signature one.
// Words, not vec4s: bound to y where nothing writes it, y may hold a single float.
@group(0) @binding(5) var<storage, read_write> yq: array<u32>;

const TILE: u32 = 64u;
const KT: u32 = 16u;
// 256 for the GPU layout (a 16 x 16 square); any size for the CPU one.
override WG: u32 = 256u;
override REGISTER_TILES: bool = false;
override GEGLU: bool = false;
// GPU layout, quantized weights: int8 activations (see the header).
override INT8: bool = false;
// CPU layout with subgroups of at least 8 lanes: each lane loads one token's slice of x and
// hands it to the others (see tile_x).
override SPREAD_X: bool = false;
// Tiles stored k-major ([KT][TILE]) so the inner loop reads 4 consecutive floats as a vec4.
var<workgroup> w_tile: array<vec4<f32>, 256>;
var<workgroup> x_tile: array<vec4<f32>, 256>;
// INT8: the tile's tokens' current block of x, quantized.
var<workgroup> xq_tile: array<XQ32, 64>;

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

// The CPU layout: 8 rows x 32 tokens per invocation, in registers: each loaded weight serves
// 32 tokens, each lane's load of x 8 rows (llvmpipe's per-lane loads, not its arithmetic,
// bound the product). Gemma 3 270M pp512 on lavapipe with 4 rows and 8 / 16 / 24 / 32 / 64
// tokens per tile, two alternated runs: 119-123 / 145-147 / 136-139 / 149-156 / 116-125
// tokens/s. 8 rows x 32 tokens against 4 x 32 (one slice of x for twice the rows; 17 % fewer
// instructions per multiply-add in llvmpipe's code): Gemma 2 2B Q8_0 pp64 +4 to +55 % in
// five alternated pairs; the 270M's pp512 and the 2B's Q4_0 pp64 within noise (14 and 8
// pairs); 8 x 16 no faster than 4 x 32. The tokens' sums are named vectors and the token
// steps written out, every index a constant (0-8 % faster than a loop over an array of sums;
// the steps as four calls over quarters of 8 tokens measured 5-10 % slower). A block's
// scales are loaded once for its four groups of 8 weights (`w_block`: pp512 114-116 ->
// 119-125 tokens/s with 8 tokens per tile).
fn register_tile(inv: Invocation) {
    // Units 2u and 2u + 1: eight rows.
    let u = inv.wg.x * WG + inv.lid;
    let t0 = inv.wg.y * 32u;
    // Rows and tokens past the end repeat the last one and are not stored (every invocation
    // stays, to share the loads of x).
    let rows = array<vec4<u32>, 2>(unit_rows(2u * u), unit_rows(2u * u + 1u));
    var s: Sums;
    var blocks: array<vec4<f32>, 8>;
    for (var g = 0u; g < p.k / 8u; g++) {
        if g % 4u == 0u {
            let b = g / 4u;
            blocks = array<vec4<f32>, 8>(
                w_block(rows[0].x, b, p.k),
                w_block(rows[0].y, b, p.k),
                w_block(rows[0].z, b, p.k),
                w_block(rows[0].w, b, p.k),
                w_block(rows[1].x, b, p.k),
                w_block(rows[1].y, b, p.k),
                w_block(rows[1].z, b, p.k),
                w_block(rows[1].w, b, p.k),
            );
        }
        s = tile_step(s, rows, g, blocks, t0, inv);
    }
    let acc = array<mat2x4<f32>, 32>(
        s.t0, s.t1, s.t2, s.t3, s.t4, s.t5, s.t6, s.t7,
        s.t8, s.t9, s.t10, s.t11, s.t12, s.t13, s.t14, s.t15,
        s.t16, s.t17, s.t18, s.t19, s.t20, s.t21, s.t22, s.t23,
        s.t24, s.t25, s.t26, s.t27, s.t28, s.t29, s.t30, s.t31,
    );
    for (var t = 0u; t < 32u; t++) {
        if t0 + t < p.n {
            store4(t0 + t, 2u * u, acc[t][0]);
            store4(t0 + t, 2u * u + 1u, acc[t][1]);
        }
    }
}

// A register tile's sums: t<i> holds token t0 + i's for the eight rows (column j: unit 2u + j's
// four, see register_tile).
struct Sums {
    t0: mat2x4<f32>,
    t1: mat2x4<f32>,
    t2: mat2x4<f32>,
    t3: mat2x4<f32>,
    t4: mat2x4<f32>,
    t5: mat2x4<f32>,
    t6: mat2x4<f32>,
    t7: mat2x4<f32>,
    t8: mat2x4<f32>,
    t9: mat2x4<f32>,
    t10: mat2x4<f32>,
    t11: mat2x4<f32>,
    t12: mat2x4<f32>,
    t13: mat2x4<f32>,
    t14: mat2x4<f32>,
    t15: mat2x4<f32>,
    t16: mat2x4<f32>,
    t17: mat2x4<f32>,
    t18: mat2x4<f32>,
    t19: mat2x4<f32>,
    t20: mat2x4<f32>,
    t21: mat2x4<f32>,
    t22: mat2x4<f32>,
    t23: mat2x4<f32>,
    t24: mat2x4<f32>,
    t25: mat2x4<f32>,
    t26: mat2x4<f32>,
    t27: mat2x4<f32>,
    t28: mat2x4<f32>,
    t29: mat2x4<f32>,
    t30: mat2x4<f32>,
    t31: mat2x4<f32>,
}

// What this lane holds of the slices of x that tokens q0 .. q0 + 8 need at group g (see
// tile_x): with SPREAD_X token q0 + lane % 8's, else nothing.
fn quarter_x(q0: u32, g: u32, inv: Invocation) -> X8 {
    if SPREAD_X {
        return x_load8(token_row(q0 + lane_index(inv) % 8u) + g);
    }
    return X8(vec4<f32>(0.0), vec4<f32>(0.0));
}

// The tile's sums after group g's 8 weights of the eight rows (`blocks`: their `w_block`s).
// The slices of x are loaded before the weights.
fn tile_step(
    s: Sums,
    rows: array<vec4<u32>, 2>,
    g: u32,
    blocks: array<vec4<f32>, 8>,
    t0: u32,
    inv: Invocation,
) -> Sums {
    let x0 = quarter_x(t0, g, inv);
    let x1 = quarter_x(t0 + 8u, g, inv);
    let x2 = quarter_x(t0 + 16u, g, inv);
    let x3 = quarter_x(t0 + 24u, g, inv);
    let w = array<W8, 8>(
        w_load8_in(rows[0].x, g, p.k, blocks[0]),
        w_load8_in(rows[0].y, g, p.k, blocks[1]),
        w_load8_in(rows[0].z, g, p.k, blocks[2]),
        w_load8_in(rows[0].w, g, p.k, blocks[3]),
        w_load8_in(rows[1].x, g, p.k, blocks[4]),
        w_load8_in(rows[1].y, g, p.k, blocks[5]),
        w_load8_in(rows[1].z, g, p.k, blocks[6]),
        w_load8_in(rows[1].w, g, p.k, blocks[7]),
    );
    var r = s;
    r.t0 += token_sums(w, tile_x(x0, t0, 0u, g, inv));
    r.t1 += token_sums(w, tile_x(x0, t0, 1u, g, inv));
    r.t2 += token_sums(w, tile_x(x0, t0, 2u, g, inv));
    r.t3 += token_sums(w, tile_x(x0, t0, 3u, g, inv));
    r.t4 += token_sums(w, tile_x(x0, t0, 4u, g, inv));
    r.t5 += token_sums(w, tile_x(x0, t0, 5u, g, inv));
    r.t6 += token_sums(w, tile_x(x0, t0, 6u, g, inv));
    r.t7 += token_sums(w, tile_x(x0, t0, 7u, g, inv));
    r.t8 += token_sums(w, tile_x(x1, t0 + 8u, 0u, g, inv));
    r.t9 += token_sums(w, tile_x(x1, t0 + 8u, 1u, g, inv));
    r.t10 += token_sums(w, tile_x(x1, t0 + 8u, 2u, g, inv));
    r.t11 += token_sums(w, tile_x(x1, t0 + 8u, 3u, g, inv));
    r.t12 += token_sums(w, tile_x(x1, t0 + 8u, 4u, g, inv));
    r.t13 += token_sums(w, tile_x(x1, t0 + 8u, 5u, g, inv));
    r.t14 += token_sums(w, tile_x(x1, t0 + 8u, 6u, g, inv));
    r.t15 += token_sums(w, tile_x(x1, t0 + 8u, 7u, g, inv));
    r.t16 += token_sums(w, tile_x(x2, t0 + 16u, 0u, g, inv));
    r.t17 += token_sums(w, tile_x(x2, t0 + 16u, 1u, g, inv));
    r.t18 += token_sums(w, tile_x(x2, t0 + 16u, 2u, g, inv));
    r.t19 += token_sums(w, tile_x(x2, t0 + 16u, 3u, g, inv));
    r.t20 += token_sums(w, tile_x(x2, t0 + 16u, 4u, g, inv));
    r.t21 += token_sums(w, tile_x(x2, t0 + 16u, 5u, g, inv));
    r.t22 += token_sums(w, tile_x(x2, t0 + 16u, 6u, g, inv));
    r.t23 += token_sums(w, tile_x(x2, t0 + 16u, 7u, g, inv));
    r.t24 += token_sums(w, tile_x(x3, t0 + 24u, 0u, g, inv));
    r.t25 += token_sums(w, tile_x(x3, t0 + 24u, 1u, g, inv));
    r.t26 += token_sums(w, tile_x(x3, t0 + 24u, 2u, g, inv));
    r.t27 += token_sums(w, tile_x(x3, t0 + 24u, 3u, g, inv));
    r.t28 += token_sums(w, tile_x(x3, t0 + 24u, 4u, g, inv));
    r.t29 += token_sums(w, tile_x(x3, t0 + 24u, 5u, g, inv));
    r.t30 += token_sums(w, tile_x(x3, t0 + 24u, 6u, g, inv));
    r.t31 += token_sums(w, tile_x(x3, t0 + 24u, 7u, g, inv));
    return r;
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

// One token's products with the eight rows' 8 weights: column j for rows 4j .. 4j + 3.
fn token_sums(w: array<W8, 8>, xv: X8) -> mat2x4<f32> {
    return mat2x4<f32>(
        dot(w[0].lo, xv.lo) + dot(w[0].hi, xv.hi),
        dot(w[1].lo, xv.lo) + dot(w[1].hi, xv.hi),
        dot(w[2].lo, xv.lo) + dot(w[2].hi, xv.hi),
        dot(w[3].lo, xv.lo) + dot(w[3].hi, xv.hi),
        dot(w[4].lo, xv.lo) + dot(w[4].hi, xv.hi),
        dot(w[5].lo, xv.lo) + dot(w[5].hi, xv.hi),
        dot(w[6].lo, xv.lo) + dot(w[6].hi, xv.hi),
        dot(w[7].lo, xv.lo) + dot(w[7].hi, xv.hi),
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

// The GPU layout with int8 activations: a 64 x 64 tile, block by block of k; invocation
// (tx, ty) owns unit tx's four rows and tokens 4 ty .. 4 ty + 3 of the tile.
fn int8_tile(inv: Invocation) {
    let unit = inv.wg.x * (TILE / 4u) + inv.lid % 16u;
    let tok0 = inv.wg.y * TILE;
    let ty = inv.lid / 16u;
    let r = unit_rows(unit);
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var b = 0u; b < p.k / 32u; b++) {
        workgroupBarrier();
        if inv.lid < TILE {
            // Tokens past the end repeat the last (their sums are not stored).
            let t = min(tok0 + inv.lid, p.n - 1u);
            xq_tile[inv.lid] = x_quant32(t * (p.k / 32u) + b);
        }
        workgroupBarrier();
        for (var i = 0u; i < 4u; i++) {
            let xq = xq_tile[ty * 4u + i];
            acc[i] += xq.d * vec4<f32>(
                w_idot32(r.x, b, p.k, xq),
                w_idot32(r.y, b, p.k, xq),
                w_idot32(r.z, b, p.k, xq),
                w_idot32(r.w, b, p.k, xq),
            );
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let t = tok0 + ty * 4u + i;
        if t < p.n {
            store4(t, unit, acc[i]);
        }
    }
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    if REGISTER_TILES {
        register_tile(inv);
        return;
    }
    if INT8 {
        int8_tile(inv);
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
