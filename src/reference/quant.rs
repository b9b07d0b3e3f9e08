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

#[cfg(test)]
mod tests {
    use super::*;

    /// f16 unit roundoff: the scale is stored in f16.
    const F16_U: f32 = 1.0 / 2048.0;
    /// Half the spacing of f16 subnormals (below 2^-14 the scale's error is absolute).
    const F16_SUB: f32 = 1.0 / (1u32 << 25) as f32;

    /// Largest error of storing the scale d in f16.
    fn f16_err(d: f32) -> f32 {
        (d.abs() * F16_U).max(F16_SUB)
    }
    /// Slack for the f32 roundings of x / d and of the products (a few ulp of 127).
    const F32_SLACK: f32 = 1e-4;

    fn blocks(seed: u64, count: usize) -> Vec<[f32; QK]> {
        // A small xorshift and Box-Muller: normal values at several magnitudes.
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..count)
            .map(|b| {
                let scale = [1e-3, 1.0, 37.0][b % 3];
                std::array::from_fn(|_| {
                    let (u, v) = (uniform(), uniform());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * scale
                })
            })
            .collect()
    }

    #[test]
    fn q8_0_error_is_within_half_a_step() {
        // |q d16 - x| <= |q| |d16 - d| + |q d - x| <= 127 f16_err(d) + 0.5 d.
        for x in blocks(1, 3000) {
            let b = quantize_q8_0(&x);
            let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            let y = dequantize_q8_0(&b);
            for i in 0..QK {
                let bound = 127.0 * f16_err(d) + d * (0.5 + F32_SLACK);
                assert!(
                    (y[i] - x[i]).abs() <= bound,
                    "element {i}: {} vs {}",
                    y[i],
                    x[i]
                );
            }
        }
    }

    #[test]
    fn q4_0_error_is_within_a_step() {
        // Codes are round-half-up of x / d + 8, clamped to 15: within half a step, except the
        // values above 7.5 steps (opposite in sign to the largest one), which clamp to 7 and
        // are within one step. The f16 scale adds up to 8 f16_err(d).
        for x in blocks(2, 3000) {
            let b = quantize_q4_0(&x);
            let d = b.d.to_f32().abs();
            let y = dequantize_q4_0(&b);
            let max = x
                .iter()
                .copied()
                .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            for i in 0..QK {
                let steps = x[i] / (max / -8.0);
                let half = if steps > 7.5 { 1.0 } else { 0.5 };
                let bound = 8.0 * f16_err(d) + d * (half + F32_SLACK);
                assert!(
                    (y[i] - x[i]).abs() <= bound,
                    "element {i}: {} vs {}",
                    y[i],
                    x[i]
                );
            }
        }
    }

    #[test]
    fn known_blocks_quantize_as_ggml_does() {
        let mut x = [0.0f32; QK];
        x[0] = 1.27;
        x[1] = -1.27;
        x[2] = 0.015;
        let b = quantize_q8_0(&x);
        assert_eq!(&b.qs[..4], &[127, -127, 2, 0]);
        // The largest magnitude is negative: d = -2 / -8 = 0.25, so -2 is code 0 and 1 is 12.
        let mut x = [0.0f32; QK];
        x[0] = -2.0;
        x[16] = 1.0;
        x[5] = 1.9;
        let b = quantize_q4_0(&x);
        assert_eq!(b.d.to_f32(), 0.25);
        assert_eq!(
            b.qs[0],
            12 << 4,
            "element 0: code 0 in the low nibble; element 16: code 12 in the high nibble"
        );
        assert_eq!(b.qs[5] & 0x0f, 15, "1.9 / 0.25 + 8.5 = 16.1 clamps to 15");
        assert_eq!(dequantize_q4_0(&b)[5], 1.75);
    }

    #[test]
    fn zero_blocks_stay_zero() {
        let x = [0.0f32; QK];
        assert_eq!(dequantize_q8_0(&quantize_q8_0(&x)), x);
        assert_eq!(dequantize_q4_0(&quantize_q4_0(&x)), x);
    }
}
