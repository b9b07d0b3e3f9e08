// Small numeric helpers shared by the kernels.

struct ArgMax {
    value: f32,
    index: u32,
}

// The larger of two candidates; equal values keep the smaller index (as torch.argmax does).
fn argmax_merge(a: ArgMax, b: ArgMax) -> ArgMax {
    if b.value > a.value || (b.value == a.value && b.index < a.index) {
        return b;
    }
    return a;
}

// 1 where v is a NaN or an infinity (all its exponent bits set), else 0.
fn non_finite(v: f32) -> f32 {
    return select(0.0, 1.0, (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u);
}

// tanh whose argument is clamped first: some backends build tanh from exp and return NaN for
// large |x|; tanh(±15) is ±1 to f32 precision, so the clamp changes nothing else.
fn tanh_clamped(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

// Gemma's gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) (not the erf GELU).
fn gelu_tanh(g: f32) -> f32 {
    return 0.5 * g * (1.0 + tanh_clamped(0.7978845608028654 * (g + 0.044715 * g * g * g)));
}

// Gemma's logit soft-cap: cap * tanh(x / cap). A cap of 0 means no capping.
fn soft_cap(x: f32, cap: f32) -> f32 {
    if cap > 0.0 {
        return cap * tanh_clamped(x / cap);
    }
    return x;
}

// Four int8 values packed in a u32 (element 0 in the low byte), widened to f32.
fn i8x4(w: u32) -> vec4<f32> {
    let v = vec4<i32>(
        bitcast<i32>(w << 24u),
        bitcast<i32>(w << 16u),
        bitcast<i32>(w << 8u),
        bitcast<i32>(w),
    ) >> vec4<u32>(24u);
    return vec4<f32>(v);
}

// 16 consecutive entries of an activation vector, as the weight formats' `w_dot16` takes them:
// `v` the values and `sum` their sum (formats with an offset per group apply it once to the
// sum instead of once per weight, as GGML's q8_1 blocks carry theirs).
struct X16 {
    v: array<vec4<f32>, 4>,
    sum: f32,
}

// 8 consecutive entries of an activation vector (entries 8i .. 8i + 8: matrix_x.wgsl's
// `x_load8(i)`), in two vec4s.
struct X8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// 32 consecutive entries (a whole block) as the formats' `w_dot32` takes them: two X16.
struct X32 {
    lo: X16,
    hi: X16,
}

// 32 consecutive entries of an activation vector quantized to int8 (the GPUs' integer
// products, matvec.wgsl's `x_quant32`; CPU reference: reference::quantize_q8): entry j is
// code c_j times d, codes 4 to a word (entry 4i in the low byte), entries 0..15 in `lo` and
// 16..31 in `hi`; `sum` holds the sums of the codes of each half.
struct XQ32 {
    lo: vec4<u32>,
    hi: vec4<u32>,
    d: f32,
    sum: vec2<i32>,
}

// The dot product of 16 int8 codes with 16 of an XQ32's (four packed dot products).
fn xq_dot16(w: vec4<u32>, x: vec4<u32>) -> i32 {
    return dot4I8Packed(w.x, x.x) + dot4I8Packed(w.y, x.y) + dot4I8Packed(w.z, x.z)
        + dot4I8Packed(w.w, x.w);
}

// reference::quantize_q8's scale of a block from its largest magnitude; NaN where the block
// is not all finite (`finite4`), so every product it enters is NaN too.
fn q8_scale(amax: f32, finite: bool) -> f32 {
    return select(bitcast<f32>(0x7fc00000u), amax * (1.0 / 127.0), finite);
}

// Whether the four entries are finite, read from their exponent bits (a compiler that assumes
// no NaN may fold float tests and 0 * x away; llvmpipe turned 0 * NaN into 0).
fn finite4(v: vec4<f32>) -> bool {
    let e = vec4<u32>(0x7f800000u);
    return all((bitcast<vec4<u32>>(v) & e) != e);
}

// 1 / d, 0 for a block of zeros.
fn q8_inverse(d: f32) -> f32 {
    return select(0.0, 1.0 / d, d > 0.0);
}

// The int8 codes of four entries of a block whose scale has inverse `id`.
fn q8_codes(v: vec4<f32>, id: f32) -> vec4<i32> {
    return vec4<i32>(clamp(round(v * id), vec4<f32>(-127.0), vec4<f32>(127.0)));
}

// An XQ32's codes (the same c_j and d) held in pairs for products of 4-bit weight codes two
// to a 32-bit multiply (matvec's CPU layout: `w_pdot32`): word i of `even_lo` is
// c(4i + 2) + 65536 c(4i) (wrapping), of `odd_lo` c(4i + 3) + 65536 c(4i + 1), and
// `even_hi`, `odd_hi` the same for entries 16 + 4i ..; `sum` is the sum of all 32 codes.
// A weight word holding codes u in bits 0..15 and v in bits 16..31 times an even word
// is u c(4i + 2) + 65536 (u c(4i) + v c(4i + 2)), modulo 2^32: the high half is the pair's
// dot product, the low half a by-product that `pair_high` takes off.
struct XP32 {
    even_lo: vec4<u32>,
    odd_lo: vec4<u32>,
    even_hi: vec4<u32>,
    odd_hi: vec4<u32>,
    d: f32,
    sum: i32,
}

// A block of 32 entries (v[g] holds entries 4g .. 4g + 4) quantized as
// reference::quantize_q8, in the 24 words matvec's CPU layout reads (matrix_x_q8.wgsl's
// `x_pairs32`): XP32's 16 pair words (even_lo, odd_lo, even_hi, odd_hi), then d, the sum of
// the codes and six zeros. A NaN or an infinity in the block makes d NaN (q8_scale).
fn q8_pair_block(v: array<vec4<f32>, 8>) -> array<vec4<u32>, 6> {
    var m = vec4<f32>(0.0);
    var finite = true;
    for (var g = 0u; g < 8u; g++) {
        m = max(m, abs(v[g]));
        finite = finite && finite4(v[g]);
    }
    let d = q8_scale(max(max(m.x, m.y), max(m.z, m.w)), finite);
    let id = q8_inverse(d);
    var sum = vec4<i32>(0);
    // Entries 8h .. 8h + 8 give words 2h % 4 and 2h % 4 + 1 of even and odd (lo for h < 2).
    var w: array<vec4<u32>, 6>;
    for (var h = 0u; h < 4u; h++) {
        let c = q8_codes(v[2u * h], id);
        let e = q8_codes(v[2u * h + 1u], id);
        sum += c + e;
        // Entries (0, 2) and (1, 3) of c, then of e, as pair words c(second) + 65536 c(first).
        let pw = bitcast<vec4<u32>>(
            vec4<i32>(c.z, e.z, c.w, e.w) + 65536 * vec4<i32>(c.x, e.x, c.y, e.y)
        );
        let even = 2u * (h / 2u);
        let at = 2u * (h % 2u);
        w[even][at] = pw.x;
        w[even][at + 1u] = pw.y;
        w[even + 1u][at] = pw.z;
        w[even + 1u][at + 1u] = pw.w;
    }
    w[4] = vec4<u32>(bitcast<u32>(d), bitcast<u32>(sum.x + sum.y + sum.z + sum.w), 0u, 0u);
    w[5] = vec4<u32>(0u);
    return w;
}

// h of a sum l + 65536 h (wrapping) with |l| and |h| below 32768 (the sums of `XP32`'s
// products: at most 8 by-products and 16 codes of 4 bits per sum, 8 * 15 * 127 and
// 16 * 15 * 127 = 30480): l + 32768 lies in 0..65535, so the shift floors to h.
fn pair_high(acc: u32) -> i32 {
    return bitcast<i32>(acc + 32768u) >> 16u;
}

// A 32-weight block's 16 bytes of nibbles (element j in the low nibble of byte j, j + 16 in
// its high nibble: GGML's Q4_0, Q4_1, Q5_0, Q5_1) plus 16 times bit j of qh (0 for 4-bit
// codes), as int8 codes in XQ32's order: [0] elements 0..15, [1] 16..31.
fn nibble_codes(qs: vec4<u32>, qh: u32) -> array<vec4<u32>, 2> {
    var c: array<vec4<u32>, 2>;
    for (var i = 0u; i < 4u; i++) {
        c[0][i] = (qs[i] & 0x0f0f0f0fu) | bits_at_4(qh >> (4u * i));
        c[1][i] = ((qs[i] >> 4u) & 0x0f0f0f0fu) | bits_at_4(qh >> (16u + 4u * i));
    }
    return c;
}

// Bits 0..3 of b as bit 4 of bytes 0..3.
fn bits_at_4(b: u32) -> u32 {
    return ((b & 1u) << 4u) | ((b & 2u) << 11u) | ((b & 4u) << 18u) | ((b & 8u) << 25u);
}
