//! Q8_0 and Q4_0 block quantization, as GGML defines it (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`): 32 weights per block and one f16 scale.

use half::f16;

/// Weights per quantization block.
pub const QK: usize = 32;

/// 32 int8 codes and a scale: value = q * d.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// 32 4-bit codes and a scale: value = (q - 8) * d. Byte j holds element j in its low nibble
/// and element j + 16 in its high nibble.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

pub fn quantize_q8_0(x: &[f32; QK]) -> BlockQ8_0 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    BlockQ8_0 {
        d: f16::from_f32(d),
        qs,
    }
}

pub fn dequantize_q8_0(b: &BlockQ8_0) -> [f32; QK] {
    let d = b.d.to_f32();
    b.qs.map(|q| q as f32 * d)
}

pub fn quantize_q4_0(x: &[f32; QK]) -> BlockQ4_0 {
    // The element of largest magnitude, with its sign, maps to code 0 (value -8 d).
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = code(x[j]) | (code(x[j + QK / 2]) << 4);
    }
    BlockQ4_0 {
        d: f16::from_f32(d),
        qs,
    }
}

pub fn dequantize_q4_0(b: &BlockQ4_0) -> [f32; QK] {
    let d = b.d.to_f32();
    let mut y = [0.0f32; QK];
    for (j, q) in b.qs.iter().enumerate() {
        y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
    }
    y
}
