//! GGML's 256-weight "k-quant" super-block formats, Q2_K to Q6_K (GGUF files only). Each
//! function takes one block as a GGUF file stores it; the dequantizers follow ggml-quants.c's
//! `dequantize_row_*`, and `affine_*` give the same values as int8 codes and, per 16 weights,
//! (s, o) with value = code s + o, the very products ggml computes.

use super::{Layout, Pairs, Unit, WeightFormat, f16_at};

/// Weights per super-block.
pub const QK_K: usize = 256;

pub const Q2_K: Unit = Unit {
    format: WeightFormat::Q2K,
    name: "q2_k",
    block: (QK_K, 84),
    layout: Layout::Blocks,
    ggml_id: Some(10),
    wgsl: include_str!("../../shaders/common/weights_q2_k.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| out.extend(dequantize_q2_k(b)),
    quantize: None,
    affine: Some(affine_q2_k),
};

pub const Q3_K: Unit = Unit {
    format: WeightFormat::Q3K,
    name: "q3_k",
    block: (QK_K, 110),
    layout: Layout::Blocks,
    ggml_id: Some(11),
    wgsl: include_str!("../../shaders/common/weights_q3_k.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| out.extend(dequantize_q3_k(b)),
    quantize: None,
    affine: Some(affine_q3_k),
};

pub const Q4_K: Unit = Unit {
    format: WeightFormat::Q4K,
    name: "q4_k",
    block: (QK_K, 144),
    layout: Layout::Blocks,
    ggml_id: Some(12),
    wgsl: include_str!("../../shaders/common/weights_q4_k.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| out.extend(dequantize_q4_k(b)),
    quantize: None,
    affine: Some(|b, codes, pairs| affine_q45_k(b, None, codes, pairs)),
};

pub const Q5_K: Unit = Unit {
    format: WeightFormat::Q5K,
    name: "q5_k",
    block: (QK_K, 176),
    layout: Layout::Blocks,
    ggml_id: Some(13),
    wgsl: include_str!("../../shaders/common/weights_q5_k.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| out.extend(dequantize_q5_k(b)),
    quantize: None,
    affine: Some(|b, codes, pairs| affine_q45_k(b, Some(&b[16..48]), codes, pairs)),
};

pub const Q6_K: Unit = Unit {
    format: WeightFormat::Q6K,
    name: "q6_k",
    block: (QK_K, 210),
    layout: Layout::Blocks,
    ggml_id: Some(14),
    wgsl: include_str!("../../shaders/common/weights_q6_k.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: true,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: None,
    dequantize: |b, out| out.extend(dequantize_q6_k(b)),
    quantize: None,
    affine: Some(affine_q6_k),
};

/// The 6-bit scale and min of sub-block j from the 12 packed bytes of Q4_K and Q5_K.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
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
fn dequantize_q2_k(b: &[u8]) -> [f32; 256] {
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
fn dequantize_q3_k(b: &[u8]) -> [f32; 256] {
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
fn dequantize_q4_k(b: &[u8]) -> [f32; 256] {
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
fn dequantize_q5_k(b: &[u8]) -> [f32; 256] {
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
fn dequantize_q6_k(b: &[u8]) -> [f32; 256] {
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

/// Q2_K and Q3_K's codes: element e = 128 n + 32 j + i holds 2 bits of byte `qs[32 n + i]`
/// at shift 2 j; Q3_K subtracts 4 where its high-bit mask is clear.
fn codes_q23_k(b: &[u8], qs: usize, hmask: bool, codes: &mut Vec<i8>) {
    for e in 0..QK_K {
        let (n, j, i) = (e / 128, (e % 128) / 32, e % 32);
        let q = ((b[qs + 32 * n + i] >> (2 * j)) & 3) as i8;
        codes.push(match hmask {
            false => q,
            true => q - if b[i] & (1 << (4 * n + j)) != 0 { 0 } else { 4 },
        });
    }
}

fn affine_q2_k(b: &[u8], codes: &mut Vec<i8>, pairs: &mut Vec<(f32, f32)>) {
    codes_q23_k(b, 16, false, codes);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    pairs.extend(
        b[..16]
            .iter()
            .map(|&sc| (d * (sc & 15) as f32, -(dmin * (sc >> 4) as f32))),
    );
}

fn affine_q3_k(b: &[u8], codes: &mut Vec<i8>, pairs: &mut Vec<(f32, f32)>) {
    codes_q23_k(b, 32, true, codes);
    let d = f16_at(b, 108);
    pairs.extend(q3_k_scales(&b[96..108]).map(|s| (d * (s - 32) as f32, 0.0)));
}

/// Q4_K, and Q5_K with its 32 bytes of high bits `qh`.
fn affine_q45_k(b: &[u8], qh: Option<&[u8]>, codes: &mut Vec<i8>, pairs: &mut Vec<(f32, f32)>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = if qh.is_none() {
        &b[16..144]
    } else {
        &b[48..176]
    };
    for j in 0..4 {
        for h in 0..2 {
            let (sc, m) = scale_min_k4(2 * j + h, scales);
            for l in 0..32 {
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

fn affine_q6_k(b: &[u8], codes: &mut Vec<i8>, pairs: &mut Vec<(f32, f32)>) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for e in 0..QK_K {
        let (n, c, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = (ql[64 * n + l + 32 * (c % 2)] >> (4 * (c / 2))) & 15;
        let high = (qh[32 * n + l] >> (2 * c)) & 3;
        codes.push((low | (high << 4)) as i8 - 32);
    }
    // Group t = 8 n + 2 c + l / 16 uses scale sc[8 n + l / 16 + 2 c] = sc[t].
    pairs.extend(sc.iter().map(|&s| (d * (s as i8) as f32, 0.0)));
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
