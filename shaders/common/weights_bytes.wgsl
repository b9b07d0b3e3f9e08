// Shared by the GGUF block formats (weights_q4_1 ... weights_q6_k): `w_data` holds each row's
// GGML blocks exactly as the file stores them, each padded to a multiple of 4 bytes. Fields
// are read a word at a time, whatever their alignment. See weights_f32.wgsl for the `w_load8`
// contract.

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn wword(i: u32) -> u32 {
    return w_data[i / 4u][i % 4u];
}

// Bytes addr .. addr + 8 as two little-endian words, for any byte address.
fn wbytes8(addr: u32) -> vec2<u32> {
    let i = addr / 4u;
    let s = 8u * (addr % 4u);
    let a = wword(i);
    let b = wword(i + 1u);
    if s == 0u {
        return vec2<u32>(a, b);
    }
    let c = wword(i + 2u);
    return vec2<u32>((a >> s) | (b << (32u - s)), (b >> s) | (c << (32u - s)));
}

fn wb(addr: u32) -> u32 {
    return (wword(addr / 4u) >> (8u * (addr % 4u))) & 0xffu;
}

fn wu32(addr: u32) -> u32 {
    return wbytes8(addr).x;
}

fn wf16(addr: u32) -> f32 {
    return unpack2x16float(wu32(addr)).x;
}

// The four bytes of a word, low byte first.
fn bytes4(w: u32) -> vec4<u32> {
    return (vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
}

// Byte address of the block holding W[row, 8g] and that element's index in the block.
fn block_of(row: u32, g: u32, k: u32, qk: u32, stride: u32) -> vec2<u32> {
    let e = 8u * g;
    return vec2<u32>((row * (k / qk) + e / qk) * stride, e % qk);
}

// (scale, min) of sub-block t from the 12 packed bytes at addr (Q4_K and Q5_K; ggml's
// get_scale_min_k4).
fn scale_min_k4(addr: u32, t: u32) -> vec2<f32> {
    if t < 4u {
        return vec2<f32>(f32(wb(addr + t) & 63u), f32(wb(addr + t + 4u) & 63u));
    }
    let sc = (wb(addr + t + 4u) & 15u) | ((wb(addr + t - 4u) >> 6u) << 4u);
    let m = (wb(addr + t + 4u) >> 4u) | ((wb(addr + t) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// A 32-weight sub-block t of Q4_K or Q5_K (super-block at byte blk) against int8 activations,
// its codes lo (elements 0..15) and hi (16..31): d sc (the codes' dot) - dmin m (the sum of
// x's codes).
fn scaled_min_dot(blk: u32, t: u32, lo: vec4<u32>, hi: vec4<u32>, xq: XQ32) -> f32 {
    let dm = unpack2x16float(wu32(blk));
    let sm = scale_min_k4(blk + 4u, t);
    let s = xq_dot16(lo, xq.lo) + xq_dot16(hi, xq.hi);
    return dm.x * sm.x * f32(s) - dm.y * sm.y * f32(xq.sum.x + xq.sum.y);
}
