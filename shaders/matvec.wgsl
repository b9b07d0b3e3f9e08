// matvec: y[v, out_offset + r] = sum_k W[r, k] * x[v, k]   (decode: one or a few vectors)
//
// Bindings: params; w_data [rows, k] in the weight format's layout (16-byte words, or 32-byte
// ones where the device reads wide: common/weights_data*.wgsl); w_scales (f16 pairs, quantized
// formats only); x [n, k] f32 (common/matrix_x*.wgsl); y [n, out_stride] f32; yq [n, rows / 32
// * 24] words (written with QUANT_Y only).
// Two layouts, chosen per adapter with ROW_PER_INVOCATION:
// - GPUs: grid (ceil(rows / ROWS) workgroups as a 2-D grid, 1, n). Each workgroup computes
//   ROWS (<= 4) consecutive rows; its invocations share the k dimension in units of RUN
//   consecutive groups of 8 weights (a quantized block's 16 bytes, read and scaled by one
//   invocation rather than four), neighbouring invocations on neighbouring units (coalesced;
//   or, with CONTIGUOUS, each its own run), and reduce once for all ROWS rows. With INT8
//   (quantized weights) a unit is one 32-weight block, multiplied as int8 codes (see INT8).
// - CPU adapters: grid (ceil(rows / (4 WG)) as a 2-D grid, 1, n). Each invocation walks four
//   whole rows side by side (four independent sums in flight); quantized formats 16 or 32
//   weights at a time through the format's `w_dot16`, or `w_dot32_pairs` (the four rows as
//   two pairs that share their scales' loads; see DOT: every loaded word used, a scale
//   loaded and applied once, x's vec4s loaded once for the four rows, and with
//   subgroups by one invocation for its whole subgroup: llvmpipe turns each lane's load into a
//   bounds-checked scalar load, and a load of x at a uniform index costs nearly as much), so
//   reads are contiguous per invocation and nothing needs reducing. With INT8, x is the
//   blocks quantize_q8.wgsl wrote and each 32-weight step goes through `w_pdot32_pairs`.
// With GEGLU the product of Gemma's stacked [gate; up] rows ends in gelu_tanh(gate) * up (the
// CPU reference: reference::geglu of the product); with QUANT_Y (CPU layout) it also writes
// that output quantized as quantize_q8.wgsl would, for a next product that reads x so.
// Wrapper: src/kernels/matvec.rs. CPU reference: reference::matvec (with INT8, of
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
// Words, not vec4s: bound to y where nothing writes it, y may hold a single float.
@group(0) @binding(5) var<storage, read_write> yq: array<u32>;

override WG: u32 = 64u;
override ROWS: u32 = 4u;
override CONTIGUOUS: bool = false;
// Consecutive 8-weight groups per unit of work; divides k / 8.
override RUN: u32 = 1u;
override ROW_PER_INVOCATION: bool = false;
// CPU layout: weights per step. 32 through the format's own `w_dot32` (a whole block's bytes
// and scale loaded once: Q4_0, whose 16 bytes hold 32 weights), 16 through its own `w_dot16`
// (the other quantized formats: a `w_dot32` of two `w_dot16` measured slower), else 8
// through `w_load8` (plain floats, where that measured faster); a wide reading sets its own
// (formats::Wide::dot: 32 for Q8_0 and i8_affine, 16 for the others).
override DOT: u32 = 8u;
// Quantized weights: x's blocks quantized to int8 codes and multiplied with the format's
// integer reading; the product is then W times reference::quantize_q8(x), as GGML's integer
// matrix-vector kernels compute. GPU layout (RUN = 4: a unit is a 32-weight block): by the
// invocation that takes the block (`x_quant32`, once for the ROWS rows), then packed dot
// products (`w_idot32`). CPU layout: before the product, by a pass of its own
// (quantize_q8.wgsl) or by the residual_norm that wrote x (quantizing in the product, by
// each subgroup or into workgroup memory, measured 1.3-1.9x its time), read through
// `x_pairs32` and multiplied by `w_pdot32`: for 4-bit codes two products per 32-bit multiply
// (llvmpipe lowers `dot4I8Packed` to byte shifts and 32-bit multiplies).
override INT8: bool = false;
// gate_up [2 rows, k] in, gelu_tanh(gate) * up [rows] out: the GeGLU of Gemma's feed-forward
// fused into its product (p.rows counts outputs; the up rows follow the gate rows).
override GEGLU: bool = false;
// CPU layout with GEGLU and WG = 16, p.rows a multiple of 32: a workgroup's 16 units are 32
// consecutive outputs, one block of 32 of the next product's x, which it also writes to yq
// quantized as quantize_q8.wgsl does (24 words: see math.wgsl's `q8_pair_block`), sparing
// that product its quantize_q8 pass. y is written as without it, bit for bit.
override QUANT_Y: bool = false;
// QUANT_Y: the workgroup's outputs, unit u's two at y_block[u].
var<workgroup> y_block: array<vec2<f32>, 16>;

fn dot8(w: W8, xv: X8) -> f32 {
    return dot(w.lo, xv.lo) + dot(w.hi, xv.hi);
}

// The (up to) four rows a unit of work computes: rows ROWS u .. ROWS u + ROWS - 1, or with
// GEGLU (ROWS = 4) gate rows 2u, 2u + 1 and their up rows p.rows further on. Rows past the end
// repeat the last and are not stored.
fn rows_of(unit: u32) -> vec4<u32> {
    let last = p.rows - 1u;
    if GEGLU {
        let o = vec2<u32>(min(2u * unit, last), min(2u * unit + 1u, last));
        return vec4<u32>(o, o + p.rows);
    }
    return min(vec4<u32>(ROWS * unit) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
}

// rows_of's rows as two pairs for `w_dot32_pairs` (DOT = 32, whose matrices are in row tiles):
// the same rows where they exist, but a unit at the end reads the rows that pad the tile
// rather than repeating the last (with GEGLU, p.rows even).
fn rows_in_pairs(unit: u32) -> vec4<u32> {
    if GEGLU {
        let o = min(2u * unit, (p.rows - 1u) & ~1u);
        return vec4<u32>(o, o + 1u, o + p.rows, o + p.rows + 1u);
    }
    return vec4<u32>(min(4u * unit, (p.rows - 1u) & ~3u)) + vec4<u32>(0u, 1u, 2u, 3u);
}

// Stores a unit's sums for vector v: four outputs, or with GEGLU gelu_tanh(gate) * up for its
// two. `lane` < 4 picks one output (GPU layout); 4 stores them all (CPU layout).
fn store(unit: u32, v: u32, acc: vec4<f32>, lane: u32) {
    let out = v * p.out_stride + p.out_offset;
    for (var j = 0u; j < 4u; j++) {
        if lane < 4u && j != lane {
            continue;
        }
        if GEGLU {
            let o = 2u * unit + j;
            if j < 2u && o < p.rows {
                y[out + o] = gelu_tanh(acc[j]) * acc[j + 2u];
            }
        } else if j < ROWS && ROWS * unit + j < p.rows {
            y[out + ROWS * unit + j] = acc[j];
        }
    }
}

// Entries 16i .. 16i + 16 of x (i the same for the whole subgroup), with their sum.
fn x16_shared(i: u32, inv: Invocation) -> X16 {
    let a = x_shared8(2u * i, inv);
    let b = x_shared8(2u * i + 1u, inv);
    var xs: X16;
    xs.v[0] = a.lo;
    xs.v[1] = a.hi;
    xs.v[2] = b.lo;
    xs.v[3] = b.hi;
    xs.sum = dot(a.lo + a.hi + b.lo + b.hi, vec4<f32>(1.0));
    return xs;
}

// The CPU layout: 4 rows per invocation, four independent sums in flight, a whole 32-weight
// block of each row at a time (its loads and scale once per 16).
fn rows_per_invocation(inv: Invocation) {
    let unit = (inv.wg.x + inv.wg.y * inv.nwg.x) * WG + inv.lid;
    // An invocation past the last row computes (clamped) rows too and stores nothing: every
    // invocation stays to share the loads of x.
    let r = rows_of(unit);
    let r0 = r.x;
    let r1 = r.y;
    let r2 = r.z;
    let r3 = r.w;
    // x of vector v in units of 8 entries.
    let xbase = inv.wg.z * (p.k / 8u);
    var acc = vec4<f32>(0.0);
    // Rows in pairs where they pair (not the gate rows of an odd count).
    let pairs = !GEGLU || p.rows % 2u == 0u;
    if INT8 {
        // x's blocks as quantize_q8.wgsl wrote them, in pairs for the format's `w_pdot32`.
        for (var b = 0u; b < p.k / 32u; b++) {
            let xp = x_pairs32(xbase / 4u + b, inv);
            if DOT == 32u && pairs {
                acc += xp.d * w_pdot32_pairs(rows_in_pairs(unit), b, p.k, xp);
            } else {
                acc += xp.d * vec4<f32>(
                    w_pdot32(r0, b, p.k, xp),
                    w_pdot32(r1, b, p.k, xp),
                    w_pdot32(r2, b, p.k, xp),
                    w_pdot32(r3, b, p.k, xp),
                );
            }
        }
    } else if DOT == 32u {
        let rp = rows_in_pairs(unit);
        for (var b = 0u; b < p.k / 32u; b++) {
            var xs: X32;
            xs.lo = x16_shared(xbase / 2u + 2u * b, inv);
            xs.hi = x16_shared(xbase / 2u + 2u * b + 1u, inv);
            if pairs {
                acc += w_dot32_pairs(rp, b, p.k, xs);
            } else {
                acc += vec4<f32>(
                    w_dot32(r0, b, p.k, xs),
                    w_dot32(r1, b, p.k, xs),
                    w_dot32(r2, b, p.k, xs),
                    w_dot32(r3, b, p.k, xs),
                );
            }
        }
    } else if DOT == 16u {
        for (var h = 0u; h < p.k / 16u; h++) {
            let xs = x16_shared(xbase / 2u + h, inv);
            acc += vec4<f32>(
                w_dot16(r0, h, p.k, xs),
                w_dot16(r1, h, p.k, xs),
                w_dot16(r2, h, p.k, xs),
                w_dot16(r3, h, p.k, xs),
            );
        }
    } else {
        // Plain floats, bound by their bytes, load x themselves: `x_shared8` measured slower
        // here on lavapipe (f32 2b.down 7.6 against 11.4 ms), where it made the quantized
        // formats 8-47 % faster.
        for (var g = 0u; g < p.k / 8u; g++) {
            let xb = x_load8(xbase + g);
            acc += vec4<f32>(
                dot8(w_load8(r0, g, p.k), xb),
                dot8(w_load8(r1, g, p.k), xb),
                dot8(w_load8(r2, g, p.k), xb),
                dot8(w_load8(r3, g, p.k), xb),
            );
        }
    }
    if QUANT_Y {
        store_quantized(unit, inv.wg.z, acc, inv);
    } else if unit * select(4u, 2u, GEGLU) < p.rows {
        store(unit, inv.wg.z, acc, 4u);
    }
}

// QUANT_Y: unit's two outputs for vector v (as `store` computes them) into y, and the
// workgroup's block of 32 of them (every unit exists: p.rows is a multiple of 32) quantized
// into yq by its first six invocations, a word each.
fn store_quantized(unit: u32, v: u32, acc: vec4<f32>, inv: Invocation) {
    let o = vec2<f32>(gelu_tanh(acc.x) * acc.z, gelu_tanh(acc.y) * acc.w);
    let out = v * p.out_stride + p.out_offset + 2u * unit;
    y[out] = o.x;
    y[out + 1u] = o.y;
    y_block[inv.lid] = o;
    workgroupBarrier();
    var block: array<vec4<f32>, 8>;
    for (var g = 0u; g < 8u; g++) {
        block[g] = vec4<f32>(y_block[2u * g], y_block[2u * g + 1u]);
    }
    let words = q8_pair_block(block);
    let b = v * (p.rows / 32u) + unit / 16u;
    if inv.lid < 6u {
        let w = words[inv.lid];
        for (var j = 0u; j < 4u; j++) {
            yq[4u * (6u * b + inv.lid) + j] = w[j];
        }
    }
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    if ROW_PER_INVOCATION {
        rows_per_invocation(inv);
        return;
    }
    let unit = inv.wg.x + inv.wg.y * inv.nwg.x;
    let v = inv.wg.z;
    let groups = p.k / 8u;
    let units = groups / RUN;
    let per = (units + WG - 1u) / WG;
    let xbase = v * (p.k / 8u);
    let r = rows_of(unit);
    let r0 = r.x;
    let r1 = r.y;
    let r2 = r.z;
    let r3 = r.w;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < per; j++) {
        let unit = select(inv.lid + j * WG, inv.lid * per + j, CONTIGUOUS);
        if unit < units && INT8 {
            let xq = x_quant32(v * (p.k / 32u) + unit);
            acc.x += xq.d * w_idot32(r0, unit, p.k, xq);
            if ROWS > 1u {
                acc.y += xq.d * w_idot32(r1, unit, p.k, xq);
            }
            if ROWS > 2u {
                acc.z += xq.d * w_idot32(r2, unit, p.k, xq);
            }
            if ROWS > 3u {
                acc.w += xq.d * w_idot32(r3, unit, p.k, xq);
            }
        } else if unit < units {
            for (var q = 0u; q < RUN; q++) {
                let g = unit * RUN + q;
                let xb = x_load8(xbase + g);
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
    if inv.lid < ROWS {
        store(unit, v, total, inv.lid);
    }
}
