//! GGML's 32-weight block formats: Q8_0 and Q4_0 (quantizable here, as ggml-quants.c's
//! `quantize_row_q8_0_ref` and `quantize_row_q4_0_ref`), Q4_1, Q5_0 and Q5_1 (GGUF files
//! only). Each function takes or returns one block as a GGUF file stores it; the dequantizers
//! follow `dequantize_row_*`.

use super::{Layout, Pairs, Unit, WeightFormat, Wide, f16_at};
use half::f16;

/// Weights per block.
pub const QK: usize = 32;

pub const Q8_0: Unit = Unit {
    format: WeightFormat::Q8_0,
    name: "q8_0",
    // d, then 32 int8 codes; value = q d.
    block: (QK, 34),
    layout: Layout::Split,
    ggml_id: Some(8),
    wgsl: include_str!("../../shaders/common/weights_q8_0.wgsl"),
    own_dot16: true,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: Some(Wide {
        wgsl: include_str!("../../shaders/common/weights_q8_0_wide.wgsl"),
        readers: "",
        // A whole block per load (lavapipe, Gemma 3 270M decode, measured against 16).
        dot: 32,
        own_block: true,
        pairs: Pairs::BlockScale,
    }),
    dequantize: |b, out| {
        let d = f16_at(b, 0);
        out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
    },
    quantize: Some(quantize_q8_0),
    affine: Some(|b, codes, pairs| {
        codes.extend(b[2..34].iter().map(|&q| q as i8));
        pairs.extend([(f16_at(b, 0), 0.0); 2]);
    }),
};

pub const Q4_0: Unit = Unit {
    format: WeightFormat::Q4_0,
    name: "q4_0",
    // d, then 16 bytes of nibbles (element j low, j + 16 high); value = (q - 8) d.
    block: (QK, 18),
    layout: Layout::Split,
    ggml_id: Some(2),
    wgsl: include_str!("../../shaders/common/weights_q4_0.wgsl"),
    own_dot16: true,
    own_dot32: true,
    own_idot32: true,
    own_pdot32: true,
    pairs: Pairs::BlockScale,
    narrow_tiles: true,
    wide: None,
    dequantize: |b, out| {
        let d = f16_at(b, 0);
        out.extend((0..QK).map(|e| (nibble(&b[2..18], e) as i32 - 8) as f32 * d));
    },
    quantize: Some(quantize_q4_0),
    affine: Some(|b, codes, pairs| {
        codes.extend((0..QK).map(|e| nibble(&b[2..18], e) as i8 - 8));
        pairs.extend([(f16_at(b, 0), 0.0); 2]);
    }),
};

pub const Q4_1: Unit = Unit {
    format: WeightFormat::Q4_1,
    name: "q4_1",
    // d, m, 16 bytes of nibbles; value = q d + m.
    block: (QK, 20),
    layout: Layout::Blocks,
    ggml_id: Some(3),
    wgsl: include_str!("../../shaders/common/weights_q4_1.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        out.extend((0..QK).map(|e| nibble(&b[4..20], e) as f32 * d + m));
    },
    quantize: None,
    affine: Some(|b, codes, pairs| {
        codes.extend((0..QK).map(|e| nibble(&b[4..20], e) as i8));
        pairs.extend([(f16_at(b, 0), f16_at(b, 2)); 2]);
    }),
};

pub const Q5_0: Unit = Unit {
    format: WeightFormat::Q5_0,
    name: "q5_0",
    // d, 32 high bits, 16 bytes of nibbles; value = (q - 16) d.
    block: (QK, 22),
    layout: Layout::Blocks,
    ggml_id: Some(6),
    wgsl: include_str!("../../shaders/common/weights_q5_0.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| {
        let d = f16_at(b, 0);
        out.extend((0..QK).map(|e| (five_bits(&b[2..6], &b[6..22], e) as i32 - 16) as f32 * d));
    },
    quantize: None,
    affine: Some(|b, codes, pairs| {
        codes.extend((0..QK).map(|e| five_bits(&b[2..6], &b[6..22], e) as i8 - 16));
        pairs.extend([(f16_at(b, 0), 0.0); 2]);
    }),
};

pub const Q5_1: Unit = Unit {
    format: WeightFormat::Q5_1,
    name: "q5_1",
    // d, m, 32 high bits, 16 bytes of nibbles; value = q d + m.
    block: (QK, 24),
    layout: Layout::Blocks,
    ggml_id: Some(7),
    wgsl: include_str!("../../shaders/common/weights_q5_1.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        out.extend((0..QK).map(|e| five_bits(&b[4..8], &b[8..24], e) as f32 * d + m));
    },
    quantize: None,
    affine: Some(|b, codes, pairs| {
        codes.extend((0..QK).map(|e| five_bits(&b[4..8], &b[8..24], e) as i8));
        pairs.extend([(f16_at(b, 0), f16_at(b, 2)); 2]);
    }),
};

/// Element e's 4-bit code: byte e low nibble for e < 16, byte e - 16 high nibble after.
fn nibble(qs: &[u8], e: usize) -> u8 {
    if e < 16 {
        qs[e] & 0x0f
    } else {
        qs[e - 16] >> 4
    }
}

/// Element e's 5-bit code: its nibble, and bit e of the 32 high bits as bit 4.
fn five_bits(qh: &[u8], qs: &[u8], e: usize) -> u8 {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    nibble(qs, e) | (((qh >> e) & 1) << 4) as u8
}

/// One block of 32 values as Q8_0: d = max |x| / 127, codes round(x / d).
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// One block of 32 values as Q4_0: the element of largest magnitude, with its sign, maps to
/// code 0 (value -8 d); codes are round-half-up of x / d + 8, clamped to 15.
pub fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
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
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend((0..QK / 2).map(|j| code(x[j]) | (code(x[j + QK / 2]) << 4)));
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

    fn round_trip(unit: &Unit, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let mut b = vec![];
        (unit.quantize.unwrap())(x, &mut b);
        let mut y = vec![];
        (unit.dequantize)(&b, &mut y);
        (b, y)
    }

    #[test]
    fn q8_0_error_is_within_half_a_step() {
        // |q d16 - x| <= |q| |d16 - d| + |q d - x| <= 127 f16_err(d) + 0.5 d.
        for x in blocks(1, 3000) {
            let (_, y) = round_trip(&Q8_0, &x);
            let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
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
            let (b, y) = round_trip(&Q4_0, &x);
            let d = f16_at(&b, 0).abs();
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
        let (b, _) = round_trip(&Q8_0, &x);
        assert_eq!(&b[2..6], &[127, -127i8 as u8, 2, 0]);
        // The largest magnitude is negative: d = -2 / -8 = 0.25, so -2 is code 0 and 1 is 12.
        let mut x = [0.0f32; QK];
        x[0] = -2.0;
        x[16] = 1.0;
        x[5] = 1.9;
        let (b, y) = round_trip(&Q4_0, &x);
        assert_eq!(f16_at(&b, 0), 0.25);
        assert_eq!(
            b[2],
            12 << 4,
            "element 0: code 0 in the low nibble; element 16: code 12 in the high nibble"
        );
        assert_eq!(b[2 + 5] & 0x0f, 15, "1.9 / 0.25 + 8.5 = 16.1 clamps to 15");
        assert_eq!(y[5], 1.75);
    }

    #[test]
    fn zero_blocks_stay_zero() {
        let x = [0.0f32; QK];
        assert_eq!(round_trip(&Q8_0, &x).1, x);
        assert_eq!(round_trip(&Q4_0, &x).1, x);
    }
}
