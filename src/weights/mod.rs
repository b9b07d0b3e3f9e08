//! Weight formats and their GPU layout.
//!
//! A [`HostMatrix`] is a [rows, cols] matrix already in the layout the shaders read
//! (`shaders/common/weights_*.wgsl`): `data` as u32 words, `scales` as f16 bits. The same
//! bytes go to the GPU; [`HostMatrix::dequantize`] gives the exact values the GPU sees.

pub mod gemma;
pub mod gguf;
pub mod safetensors;

use crate::reference::quant::{self, BlockQ4_0, BlockQ8_0, QK};
use crate::{Error, Result};
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
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 4] = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4_0 => "q4_0",
        }
    }

    /// Bytes of `data` per row of `cols` weights.
    pub fn data_bytes_per_row(self, cols: usize) -> usize {
        match self {
            WeightFormat::F32 => cols * 4,
            WeightFormat::Bf16 => cols * 2,
            WeightFormat::Q8_0 => cols,
            WeightFormat::Q4_0 => cols / 2,
        }
    }

    /// f16 scales per row of `cols` weights.
    pub fn scales_per_row(self, cols: usize) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::Bf16 => 0,
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => cols / QK,
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
            .ok_or_else(|| format!("unknown weight format `{s}`: expected f32, bf16, q8_0 or q4_0"))
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
        if cols == 0 || !cols.is_multiple_of(QK) || rows * cols != len {
            return Err(Error::Shape {
                kernel: "weights",
                message: format!(
                    "{format} matrix [{rows}, {cols}] from {len} values: cols must be a \
                     non-zero multiple of {QK} and rows * cols must equal the value count"
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

    pub fn data_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    pub fn scale_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.scales)
    }

    /// The f32 values the GPU computes with, [rows, cols].
    pub fn dequantize(&self) -> Vec<f32> {
        let bytes = self.data_bytes();
        match self.format {
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
