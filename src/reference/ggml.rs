//! GGML's block formats as GGUF files store them, dequantized as ggml-quants.c's
//! `dequantize_row_*` does: the specification of every GGUF weight path. Each function takes
//! one block's bytes and returns its values.

use half::f16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_0: d, 16 bytes of nibbles (element j low, j + 16 high); (q - 8) d.
pub fn dequantize_q4_0(b: &[u8]) -> [f32; 32] {
    let d = f16_at(b, 0);
    let mut y = [0.0; 32];
    for j in 0..16 {
        y[j] = ((b[2 + j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
    }
    y
}

/// Q4_1: d, m, 16 bytes of nibbles; q d + m.
pub fn dequantize_q4_1(b: &[u8]) -> [f32; 32] {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let mut y = [0.0; 32];
    for j in 0..16 {
        y[j] = (b[4 + j] & 0x0f) as f32 * d + m;
        y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
    }
    y
}

/// Q5_0: d, 32 high bits, 16 bytes of nibbles; (q - 16) d.
pub fn dequantize_q5_0(b: &[u8]) -> [f32; 32] {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut y = [0.0; 32];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((b[6 + j] & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((b[6 + j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
    y
}

/// Q5_1: d, m, 32 high bits, 16 bytes of nibbles; q d + m.
pub fn dequantize_q5_1(b: &[u8]) -> [f32; 32] {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut y = [0.0; 32];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = ((b[8 + j] & 0x0f) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((b[8 + j] >> 4) as u32 | h1) as f32 * d + m;
    }
    y
}

/// Q8_0: d, 32 int8; q d.
pub fn dequantize_q8_0(b: &[u8]) -> [f32; 32] {
    let d = f16_at(b, 0);
    std::array::from_fn(|i| b[2 + i] as i8 as f32 * d)
}

/// The 6-bit scale and min of sub-block j from the 12 packed bytes of Q4_K and Q5_K.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q2_K: 16 bytes of 4-bit scale/min pairs, 64 bytes of 2-bit codes, d, dmin.
pub fn dequantize_q2_k(b: &[u8]) -> [f32; 256] {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut y = [0.0; 256];
    let mut is = 0;
    for n in 0..2 {
        let q = &qs[32 * n..];
        for j in 0..4 {
            let shift = 2 * j;
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                for l in 0..16 {
                    let code = (q[16 * half + l] >> shift) & 3;
                    y[128 * n + 32 * j + 16 * half + l] = dl * code as f32 - ml;
                }
            }
        }
    }
    y
}

/// Q3_K: 32 bytes of high-bit masks, 64 bytes of 2-bit codes, 12 bytes of 6-bit scales, d.
pub fn dequantize_q3_k(b: &[u8]) -> [f32; 256] {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    // Unpack 16 signed 6-bit scales (ggml's kmask1 / kmask2 shuffle).
    let mut aux = [0u32; 4];
    for (i, a) in aux.iter_mut().take(3).enumerate() {
        *a = u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    }
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
    aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
    aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
    aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
    let scales: Vec<i32> = aux
        .iter()
        .flat_map(|a| a.to_le_bytes())
        .map(|v| v as i8 as i32)
        .collect();
    let mut y = [0.0; 256];
    let mut is = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &qs[32 * n..];
        for j in 0..4 {
            let shift = 2 * j;
            for half in 0..2 {
                let dl = d * (scales[is] - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let i = 16 * half + l;
                    let code = ((q[i] >> shift) & 3) as i32 - if hmask[i] & m != 0 { 0 } else { 4 };
                    y[128 * n + 32 * j + i] = dl * code as f32;
                }
            }
            m <<= 1;
        }
    }
    y
}

/// Q4_K: d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles.
pub fn dequantize_q4_k(b: &[u8]) -> [f32; 256] {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    let mut y = [0.0; 256];
    for j in 0..4 {
        let (s1, m1) = scale_min_k4(2 * j, scales);
        let (s2, m2) = scale_min_k4(2 * j + 1, scales);
        let q = &qs[32 * j..];
        for l in 0..32 {
            y[64 * j + l] = d * s1 as f32 * (q[l] & 0x0f) as f32 - dmin * m1 as f32;
            y[64 * j + 32 + l] = d * s2 as f32 * (q[l] >> 4) as f32 - dmin * m2 as f32;
        }
    }
    y
}

/// Q5_K: d, dmin, 12 bytes of scales and mins, 32 bytes of high bits, 128 bytes of nibbles.
pub fn dequantize_q5_k(b: &[u8]) -> [f32; 256] {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    let mut y = [0.0; 256];
    for j in 0..4 {
        let (s1, m1) = scale_min_k4(2 * j, scales);
        let (s2, m2) = scale_min_k4(2 * j + 1, scales);
        let q = &qs[32 * j..];
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        for l in 0..32 {
            let lo = (q[l] & 0x0f) + if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi = (q[l] >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * j + l] = d * s1 as f32 * lo as f32 - dmin * m1 as f32;
            y[64 * j + 32 + l] = d * s2 as f32 * hi as f32 - dmin * m2 as f32;
        }
    }
    y
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, d.
pub fn dequantize_q6_k(b: &[u8]) -> [f32; 256] {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    let mut y = [0.0; 256];
    for n in 0..2 {
        let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let y = &mut y[128 * n..];
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
    y
}

/// A block as int8 codes and, per 16 weights, (s, o) such that each value is exactly
/// `code * s + o` in f32, the products and sums ggml's dequantizers compute (see
/// `WeightFormat::I8Affine`).
pub fn affine(format: crate::weights::WeightFormat, b: &[u8]) -> (Vec<i8>, Vec<(f32, f32)>) {
    use crate::weights::WeightFormat as F;
    let mut codes = Vec::new();
    let mut pairs = Vec::new();
    match format {
        F::Q4_1 | F::Q5_0 | F::Q5_1 => {
            let (d, m, qh, qs) = match format {
                F::Q4_1 => (f16_at(b, 0), f16_at(b, 2), 0, &b[4..20]),
                F::Q5_0 => (
                    f16_at(b, 0),
                    0.0,
                    u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
                    &b[6..22],
                ),
                _ => (
                    f16_at(b, 0),
                    f16_at(b, 2),
                    u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    &b[8..24],
                ),
            };
            let bias = if format == F::Q5_0 { 16 } else { 0 };
            for e in 0..32 {
                let nib = if e < 16 { qs[e] & 15 } else { qs[e - 16] >> 4 };
                codes.push((nib as i32 | (((qh >> e) & 1) << 4) as i32) as i8 - bias);
            }
            pairs.extend([(d, m); 2]);
        }
        F::Q2K | F::Q3K => {
            // Element e = 128 n + 32 j + 16 h + l; its scale group is e / 16.
            let d = if format == F::Q2K {
                (f16_at(b, 80), f16_at(b, 82))
            } else {
                (f16_at(b, 108), 0.0)
            };
            let scales3 = if format == F::Q3K {
                Some(q3_k_scales(&b[96..108]))
            } else {
                None
            };
            for e in 0..256 {
                let (n, j, i) = (e / 128, (e % 128) / 32, e % 32);
                let shift = 2 * j;
                let q = (b[if format == F::Q2K { 16 } else { 32 } + 32 * n + i] >> shift) & 3;
                let code = match format {
                    F::Q2K => q as i8,
                    _ => q as i8 - if b[i] & (1 << (4 * n + j)) != 0 { 0 } else { 4 },
                };
                codes.push(code);
            }
            for t in 0..16 {
                pairs.push(match &scales3 {
                    None => {
                        let sc = b[t];
                        (d.0 * (sc & 15) as f32, -(d.1 * (sc >> 4) as f32))
                    }
                    Some(s) => (d.0 * (s[t] - 32) as f32, 0.0),
                });
            }
        }
        F::Q4K | F::Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            for j in 0..4 {
                for h in 0..2 {
                    let (sc, m) = scale_min_k4(2 * j + h, scales);
                    for l in 0..32 {
                        let (qs, qh) = if format == F::Q4K {
                            (&b[16..144], None)
                        } else {
                            (&b[48..176], Some(&b[16..48]))
                        };
                        let mut q = (qs[32 * j + l] >> (4 * h)) & 15;
                        if let Some(qh) = qh {
                            q += 16 * ((qh[l] >> (2 * j + h)) & 1);
                        }
                        codes.push(q as i8);
                    }
                    pairs.extend([(d * sc as f32, -(dmin * m as f32)); 2]);
                }
            }
        }
        F::Q6K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208);
            for e in 0..256 {
                let (n, c, l) = (e / 128, (e % 128) / 32, e % 32);
                let low = (ql[64 * n + l + 32 * (c % 2)] >> (4 * (c / 2))) & 15;
                let high = (qh[32 * n + l] >> (2 * c)) & 3;
                codes.push((low | (high << 4)) as i8 - 32);
            }
            // Group t = 8 n + 2 c + l / 16 uses scale sc[8 n + l / 16 + 2 c] = sc[t].
            pairs.extend(sc.iter().map(|&s| (d * (s as i8) as f32, 0.0)));
        }
        _ => {}
    }
    (codes, pairs)
}

/// Q3_K's 16 unpacked 6-bit scales (before subtracting 32).
fn q3_k_scales(packed: &[u8]) -> [i32; 16] {
    std::array::from_fn(|t| {
        let grp = t / 4;
        let low = (packed[(grp % 2) * 4 + t % 4] >> (4 * (grp / 2))) & 15;
        let high = (packed[8 + t % 4] >> (2 * grp)) & 3;
        (low | (high << 4)) as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of the `gguf` package's dequantize on random blocks
    /// (tests/fixtures/make_ggml_blocks.py). Both compute d * scale * code (+ min) in f32 with
    /// the same f16 inputs; ggml orders the products alike, so they agree to a few ulp.
    #[test]
    fn every_block_type_dequantizes_as_the_gguf_package() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ggml_blocks.safetensors"
        );
        let bytes = std::fs::read(path).expect("ggml_blocks.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        type Block = fn(&[u8]) -> Vec<f32>;
        let cases: [(&str, usize, Block); 10] = [
            ("Q4_0", 18, |b| dequantize_q4_0(b).to_vec()),
            ("Q4_1", 20, |b| dequantize_q4_1(b).to_vec()),
            ("Q5_0", 22, |b| dequantize_q5_0(b).to_vec()),
            ("Q5_1", 24, |b| dequantize_q5_1(b).to_vec()),
            ("Q8_0", 34, |b| dequantize_q8_0(b).to_vec()),
            ("Q2_K", 84, |b| dequantize_q2_k(b).to_vec()),
            ("Q3_K", 110, |b| dequantize_q3_k(b).to_vec()),
            ("Q4_K", 144, |b| dequantize_q4_k(b).to_vec()),
            ("Q5_K", 176, |b| dequantize_q5_k(b).to_vec()),
            ("Q6_K", 210, |b| dequantize_q6_k(b).to_vec()),
        ];
        for (name, size, f) in cases {
            let blocks = st.tensor(&format!("{name}.blocks")).unwrap();
            let expected: Vec<f32> =
                bytemuck::pod_collect_to_vec(st.tensor(&format!("{name}.values")).unwrap().data());
            let got: Vec<f32> = blocks.data().chunks(size).flat_map(f).collect();
            assert_eq!(got.len(), expected.len(), "{name}");
            for (i, (a, e)) in got.iter().zip(&expected).enumerate() {
                let bound = 4.0 * f32::EPSILON * e.abs().max(1e-30);
                assert!((a - e).abs() <= bound, "{name} element {i}: {a} vs {e}");
            }
        }
    }
}
