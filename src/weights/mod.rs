//! Weight formats and their GPU layout.
//!
//! A [`HostMatrix`] is a [rows, cols] matrix already in the layout the shaders read
//! (`shaders/common/weights_*.wgsl`): `data` as u32 words, `scales` as f16 bits. The same
//! bytes go to the GPU; [`HostMatrix::dequantize`] gives the exact values the GPU sees.

pub mod files;
pub mod gemma;
pub mod gguf;
pub mod hub;
pub mod safetensors;

use crate::reference::ggml;
use crate::reference::quant::{self, BlockQ4_0, BlockQ8_0, QK};
use crate::{Error, Result};
use gguf::GgmlType;
use half::{bf16, f16};
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// Element type of a tensor in a checkpoint file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDtype {
    F32,
    F16,
    Bf16,
}

impl SourceDtype {
    pub fn bytes(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            SourceDtype::F16 | SourceDtype::Bf16 => 2,
        }
    }
}

/// How a weight matrix is stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    Bf16,
    Q8_0,
    Q4_0,
    /// GGUF's f16 tensors.
    F16,
    /// GGUF block formats, kept as the file stores them (each block padded to 4 bytes).
    Q4_1,
    Q5_0,
    Q5_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    /// Any GGUF block format expanded losslessly at load: int8 codes and, per 16 weights, an
    /// f32 scale and offset (value = q s + o, the very products ggml computes). More bytes,
    /// far less decoding: what CPU adapters run fastest.
    I8Affine,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 4] = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
    ];

    /// The formats a GGUF file brings in their own layout (no quantizer here).
    pub const GGUF_BLOCKS: [WeightFormat; 8] = [
        WeightFormat::Q4_1,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
        WeightFormat::Q2K,
        WeightFormat::Q3K,
        WeightFormat::Q4K,
        WeightFormat::Q5K,
        WeightFormat::Q6K,
    ];

    /// Every format the shaders read.
    pub fn every() -> Vec<WeightFormat> {
        let mut v = WeightFormat::ALL.to_vec();
        v.push(WeightFormat::F16);
        v.extend(WeightFormat::GGUF_BLOCKS);
        v.push(WeightFormat::I8Affine);
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4_0 => "q4_0",
            WeightFormat::F16 => "f16",
            WeightFormat::Q4_1 => "q4_1",
            WeightFormat::Q5_0 => "q5_0",
            WeightFormat::Q5_1 => "q5_1",
            WeightFormat::Q2K => "q2_k",
            WeightFormat::Q3K => "q3_k",
            WeightFormat::Q4K => "q4_k",
            WeightFormat::Q5K => "q5_k",
            WeightFormat::Q6K => "q6_k",
            WeightFormat::I8Affine => "i8_affine",
        }
    }

    /// For GGUF block formats: (weights per block, bytes per block, bytes per padded block).
    pub fn ggml_block(self) -> Option<(usize, usize, usize)> {
        let (qk, size) = match self {
            WeightFormat::Q4_1 => (32, 20),
            WeightFormat::Q5_0 => (32, 22),
            WeightFormat::Q5_1 => (32, 24),
            WeightFormat::Q2K => (256, 84),
            WeightFormat::Q3K => (256, 110),
            WeightFormat::Q4K => (256, 144),
            WeightFormat::Q5K => (256, 176),
            WeightFormat::Q6K => (256, 210),
            _ => return None,
        };
        Some((qk, size, size.next_multiple_of(4)))
    }

    /// The format a GGUF tensor of GGML type `ty` is kept in on the GPU.
    pub fn of_ggml(ty: GgmlType) -> Option<WeightFormat> {
        Some(match ty {
            GgmlType::F32 => WeightFormat::F32,
            GgmlType::F16 => WeightFormat::F16,
            GgmlType::Bf16 => WeightFormat::Bf16,
            GgmlType::Q8_0 => WeightFormat::Q8_0,
            GgmlType::Q4_0 => WeightFormat::Q4_0,
            GgmlType::Q4_1 => WeightFormat::Q4_1,
            GgmlType::Q5_0 => WeightFormat::Q5_0,
            GgmlType::Q5_1 => WeightFormat::Q5_1,
            GgmlType::Q2K => WeightFormat::Q2K,
            GgmlType::Q3K => WeightFormat::Q3K,
            GgmlType::Q4K => WeightFormat::Q4K,
            GgmlType::Q5K => WeightFormat::Q5K,
            GgmlType::Q6K => WeightFormat::Q6K,
            GgmlType::Other(_) => return None,
        })
    }

    /// Weights per block: rows must hold a whole number of blocks.
    pub fn block_len(self) -> usize {
        self.ggml_block().map_or(QK, |b| b.0)
    }

    /// Bytes of `data` per row of `cols` weights.
    pub fn data_bytes_per_row(self, cols: usize) -> usize {
        if let Some((qk, _, padded)) = self.ggml_block() {
            return cols / qk * padded;
        }
        match self {
            WeightFormat::F32 => cols * 4,
            WeightFormat::Bf16 | WeightFormat::F16 => cols * 2,
            WeightFormat::Q8_0 | WeightFormat::I8Affine => cols,
            _ => cols / 2,
        }
    }

    /// f16 scales per row of `cols` weights (Q8_0 and Q4_0 keep theirs apart).
    pub fn scales_per_row(self, cols: usize) -> usize {
        match self {
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => cols / QK,
            // An f32 scale and an f32 offset (4 halves) per 16 weights.
            WeightFormat::I8Affine => cols / 16 * 4,
            _ => 0,
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        WeightFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown weight format `{s}`: expected f32, bf16, q8_0 or q4_0 (GGUF files also run their own types)"))
    }
}

/// A matrix in its GPU layout, on the host.
#[derive(Clone, Debug)]
pub struct HostMatrix {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    /// [rows, data_bytes_per_row / 4] words.
    pub data: Vec<u32>,
    /// [rows, scales_per_row] f16 bits (empty for f32 and bf16).
    pub scales: Vec<u16>,
}

fn pack_bytes(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

fn pack_halves(halves: &[u16]) -> impl Iterator<Item = u32> + '_ {
    halves
        .chunks_exact(2)
        .map(|c| c[0] as u32 | (c[1] as u32) << 16)
}

impl HostMatrix {
    fn check_shape(format: WeightFormat, rows: usize, cols: usize, len: usize) -> Result<()> {
        let block = format.block_len();
        if cols == 0 || !cols.is_multiple_of(block) || rows * cols != len {
            return Err(Error::Shape {
                kernel: "weights",
                message: format!(
                    "{format} matrix [{rows}, {cols}] from {len} values: cols must be a \
                     non-zero multiple of {block} and rows * cols must equal the value count"
                ),
            });
        }
        Ok(())
    }

    /// Converts f32 values [rows, cols] to `format` (bf16 rounds to nearest even; Q8_0 and Q4_0
    /// quantize block by block on all cores).
    pub fn from_f32(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<Self> {
        Self::check_shape(format, rows, cols, values.len())?;
        let blocks = values.par_chunks_exact(QK);
        let (data, scales): (Vec<u32>, Vec<u16>) = match format {
            WeightFormat::F32 => (values.iter().map(|v| v.to_bits()).collect(), vec![]),
            WeightFormat::Bf16 => {
                let halves: Vec<u16> = values
                    .iter()
                    .map(|&v| bf16::from_f32(v).to_bits())
                    .collect();
                (pack_halves(&halves).collect(), vec![])
            }
            WeightFormat::Q8_0 => {
                let q: Vec<BlockQ8_0> = blocks
                    .map(|b| quant::quantize_q8_0(b.try_into().expect("block of 32")))
                    .collect();
                let bytes: Vec<u8> = q.iter().flat_map(|b| b.qs.map(|v| v as u8)).collect();
                (
                    pack_bytes(&bytes).collect(),
                    q.iter().map(|b| b.d.to_bits()).collect(),
                )
            }
            WeightFormat::Q4_0 => {
                let q: Vec<BlockQ4_0> = blocks
                    .map(|b| quant::quantize_q4_0(b.try_into().expect("block of 32")))
                    .collect();
                let bytes: Vec<u8> = q.iter().flat_map(|b| b.qs).collect();
                (
                    pack_bytes(&bytes).collect(),
                    q.iter().map(|b| b.d.to_bits()).collect(),
                )
            }
            other => {
                return Err(Error::Shape {
                    kernel: "weights",
                    message: format!("no quantizer for {other}: it comes from GGUF files only"),
                });
            }
        };
        Ok(HostMatrix {
            format,
            rows,
            cols,
            data,
            scales,
        })
    }

    /// A bf16 matrix from its raw bits (a checkpoint's own tensor), kept bit for bit.
    pub fn from_bf16_bits(rows: usize, cols: usize, bits: &[u16]) -> Result<Self> {
        Self::check_shape(WeightFormat::Bf16, rows, cols, bits.len())?;
        Ok(HostMatrix {
            format: WeightFormat::Bf16,
            rows,
            cols,
            data: pack_halves(bits).collect(),
            scales: vec![],
        })
    }

    /// A matrix from a GGUF tensor's bytes in GGML `ty` ([rows, cols], rows of whole blocks):
    /// f32, bf16 and f16 as they are, Q8_0 and Q4_0 into their split layouts, every other
    /// block format kept block by block (padded to 4 bytes).
    pub fn from_ggml(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let (Some(format), Some((per, size))) = (WeightFormat::of_ggml(ty), ty.block()) else {
            let id = match ty {
                GgmlType::Other(id) => id,
                _ => u32::MAX,
            };
            return Err(Error::Shape {
                kernel: "weights",
                message: format!("GGML type {id} is not supported"),
            });
        };
        let len = rows.checked_mul(cols).ok_or_else(|| Error::Shape {
            kernel: "weights",
            message: format!("{ty:?} [{rows}, {cols}] is too large"),
        })?;
        Self::check_shape(format, rows, cols, len)?;
        if !cols.is_multiple_of(per) || bytes.len() != len / per * size {
            return Err(Error::Shape {
                kernel: "weights",
                message: format!("{ty:?} [{rows}, {cols}]: {} bytes", bytes.len()),
            });
        }
        let blocks = bytes.chunks_exact(size);
        let (data, scales): (Vec<u32>, Vec<u16>) = match format {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16 => {
                (pack_bytes(bytes).collect(), vec![])
            }
            WeightFormat::Q8_0 => {
                let qs: Vec<u8> = blocks.clone().flat_map(|b| b[2..34].to_vec()).collect();
                (
                    pack_bytes(&qs).collect(),
                    blocks.map(|b| u16::from_le_bytes([b[0], b[1]])).collect(),
                )
            }
            WeightFormat::Q4_0 => {
                let qs: Vec<u8> = blocks.clone().flat_map(|b| b[2..18].to_vec()).collect();
                (
                    pack_bytes(&qs).collect(),
                    blocks.map(|b| u16::from_le_bytes([b[0], b[1]])).collect(),
                )
            }
            _ => {
                let padded = size.next_multiple_of(4);
                let mut raw = Vec::with_capacity(bytes.len() / size * padded);
                for b in blocks {
                    raw.extend_from_slice(b);
                    raw.resize(raw.len() + padded - size, 0);
                }
                (pack_bytes(&raw).collect(), vec![])
            }
        };
        Ok(HostMatrix {
            format,
            rows,
            cols,
            data,
            scales,
        })
    }

    /// The same values in [`WeightFormat::I8Affine`] (bit for bit), for any format whose
    /// blocks are affine in small integer codes: Q4_0, Q8_0 and every GGUF block format.
    /// Returns `None` for f32, bf16 and f16.
    pub fn to_i8_affine(&self) -> Option<HostMatrix> {
        let bytes = self.data_bytes();
        let mut codes: Vec<u8> = Vec::with_capacity(self.rows * self.cols);
        // Per 16 weights, (s, o) with ggml's value = q s + o exactly.
        let mut side: Vec<f32> = Vec::with_capacity(self.rows * self.cols / 8);
        match self.format {
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
                let per = if self.format == WeightFormat::Q8_0 {
                    QK
                } else {
                    QK / 2
                };
                for (qs, &d) in bytes.chunks_exact(per).zip(&self.scales) {
                    let d = f16::from_bits(d).to_f32();
                    for e in 0..QK {
                        codes.push(match self.format {
                            WeightFormat::Q8_0 => qs[e],
                            _ => {
                                ((if e < 16 { qs[e] & 15 } else { qs[e - 16] >> 4 }) as i8 - 8)
                                    as u8
                            }
                        });
                    }
                    side.extend([d, 0.0, d, 0.0]);
                }
            }
            f => {
                let (_, size, padded) = f.ggml_block()?;
                for block in bytes.chunks_exact(padded) {
                    let (c, pairs) = ggml::affine(f, &block[..size]);
                    codes.extend(c.iter().map(|&q| q as u8));
                    side.extend(pairs.iter().flat_map(|&(s, o)| [s, o]));
                }
            }
        }
        let scales = side
            .iter()
            .flat_map(|v| {
                let w = v.to_bits();
                [w as u16, (w >> 16) as u16]
            })
            .collect();
        Some(HostMatrix {
            format: WeightFormat::I8Affine,
            rows: self.rows,
            cols: self.cols,
            data: pack_bytes(&codes).collect(),
            scales,
        })
    }

    pub fn data_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    pub fn scale_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.scales)
    }

    /// The f32 values the GPU computes with, [rows, cols].
    pub fn dequantize(&self) -> Vec<f32> {
        let bytes = self.data_bytes();
        if let Some((_, size, padded)) = self.format.ggml_block() {
            let f: fn(&[u8]) -> Vec<f32> = match self.format {
                WeightFormat::Q4_1 => |b| ggml::dequantize_q4_1(b).to_vec(),
                WeightFormat::Q5_0 => |b| ggml::dequantize_q5_0(b).to_vec(),
                WeightFormat::Q5_1 => |b| ggml::dequantize_q5_1(b).to_vec(),
                WeightFormat::Q2K => |b| ggml::dequantize_q2_k(b).to_vec(),
                WeightFormat::Q3K => |b| ggml::dequantize_q3_k(b).to_vec(),
                WeightFormat::Q4K => |b| ggml::dequantize_q4_k(b).to_vec(),
                WeightFormat::Q5K => |b| ggml::dequantize_q5_k(b).to_vec(),
                _ => |b| ggml::dequantize_q6_k(b).to_vec(),
            };
            return bytes
                .chunks_exact(padded)
                .flat_map(|b| f(&b[..size]))
                .collect();
        }
        if self.format == WeightFormat::I8Affine {
            let side: &[f32] = bytemuck::cast_slice(&self.scales);
            return bytes
                .iter()
                .enumerate()
                .map(|(i, &q)| (q as i8) as f32 * side[2 * (i / 16)] + side[2 * (i / 16) + 1])
                .collect();
        }
        match self.format {
            WeightFormat::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            WeightFormat::F32 => self.data.iter().map(|&w| f32::from_bits(w)).collect(),
            WeightFormat::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            WeightFormat::Q8_0 => bytes
                .chunks_exact(QK)
                .zip(&self.scales)
                .flat_map(|(qs, &d)| {
                    quant::dequantize_q8_0(&BlockQ8_0 {
                        d: f16::from_bits(d),
                        qs: std::array::from_fn(|i| qs[i] as i8),
                    })
                })
                .collect(),
            WeightFormat::Q4_0 => bytes
                .chunks_exact(QK / 2)
                .zip(&self.scales)
                .flat_map(|(qs, &d)| {
                    quant::dequantize_q4_0(&BlockQ4_0 {
                        d: f16::from_bits(d),
                        qs: qs.try_into().expect("16 bytes"),
                    })
                })
                .collect(),
            _ => unreachable!("GGML block formats are handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect()
    }

    #[test]
    fn gpu_layout_dequantizes_to_the_reference_blocks() {
        let (rows, cols) = (3, 64);
        let x = ramp(rows * cols);
        for format in WeightFormat::ALL {
            let m = HostMatrix::from_f32(format, rows, cols, &x).unwrap();
            assert_eq!(m.data_bytes().len(), rows * format.data_bytes_per_row(cols));
            assert_eq!(m.scales.len(), rows * format.scales_per_row(cols));
            let expected: Vec<f32> = match format {
                WeightFormat::F32 => x.clone(),
                WeightFormat::Bf16 => x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
                WeightFormat::Q8_0 => x
                    .chunks(QK)
                    .flat_map(|b| {
                        quant::dequantize_q8_0(&quant::quantize_q8_0(b.try_into().unwrap()))
                    })
                    .collect(),
                WeightFormat::Q4_0 => x
                    .chunks(QK)
                    .flat_map(|b| {
                        quant::dequantize_q4_0(&quant::quantize_q4_0(b.try_into().unwrap()))
                    })
                    .collect(),
                _ => unreachable!("ALL holds the quantizable formats"),
            };
            assert_eq!(m.dequantize(), expected, "{format}");
        }
    }

    #[test]
    fn bf16_bits_are_kept_bit_for_bit() {
        let bits: Vec<u16> = (0..64u16).map(|i| 0x3f80 + i * 3).collect();
        let m = HostMatrix::from_bf16_bits(2, 32, &bits).unwrap();
        let back: Vec<u16> = bytemuck::cast_slice(m.data_bytes()).to_vec();
        assert_eq!(back, bits);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(HostMatrix::from_f32(WeightFormat::Q8_0, 2, 48, &[0.0; 96]).is_err());
        assert!(HostMatrix::from_f32(WeightFormat::F32, 2, 32, &[0.0; 63]).is_err());
        assert!("q5_k".parse::<WeightFormat>().is_err());
        assert_eq!("Q4_0".parse::<WeightFormat>(), Ok(WeightFormat::Q4_0));
    }
}

#[cfg(test)]
mod affine_tests {
    use super::*;

    /// Expanding GGUF blocks to i8_affine keeps every value (random blocks of
    /// every type, from tests/fixtures/ggml_blocks.safetensors).
    #[test]
    fn i8_affine_expansion_is_lossless() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ggml_blocks.safetensors"
        );
        let bytes = std::fs::read(path).expect("ggml_blocks.safetensors");
        let st = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, ty) in [
            ("Q4_0", GgmlType::Q4_0),
            ("Q4_1", GgmlType::Q4_1),
            ("Q5_0", GgmlType::Q5_0),
            ("Q5_1", GgmlType::Q5_1),
            ("Q8_0", GgmlType::Q8_0),
            ("Q2_K", GgmlType::Q2K),
            ("Q3_K", GgmlType::Q3K),
            ("Q4_K", GgmlType::Q4K),
            ("Q5_K", GgmlType::Q5K),
            ("Q6_K", GgmlType::Q6K),
        ] {
            let blocks = st.tensor(&format!("{name}.blocks")).unwrap().data();
            let (per, size) = ty.block().unwrap();
            let n = blocks.len() / size * per;
            // 64 blocks as rows of 4 blocks (or 2 for the 256-weight types).
            let cols = per * if per == 32 { 4 } else { 2 };
            let m = HostMatrix::from_ggml(ty, n / cols, cols, blocks).unwrap();
            let expanded = m.to_i8_affine().unwrap();
            let (a, b) = (m.dequantize(), expanded.dequantize());
            // Equal as numbers (adding a zero offset turns -0 into +0, nothing else changes).
            assert!(a.iter().zip(&b).all(|(x, y)| x == y), "{name}");
            assert_eq!(expanded.data_bytes().len(), n);
        }
        assert!(
            HostMatrix::from_f32(WeightFormat::F32, 1, 32, &[0.5; 32])
                .unwrap()
                .to_i8_affine()
                .is_none()
        );
    }
}
