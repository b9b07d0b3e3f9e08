//! [`HostMatrix`]: a matrix in its GPU layout, on the host, made from f32 values or from a
//! file's stored blocks, and read back as the values the GPU computes with.

use super::{Layout, WeightFormat, i8_affine};
use crate::{Error, Result};
use half::f16;
use rayon::prelude::*;

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

/// Int8 codes and their (scale, offset) pairs, one per 16 codes.
type AffineCodes = (Vec<i8>, Vec<(f32, f32)>);

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

/// Blocks quantized per parallel task.
const BLOCKS_PER_TASK: usize = 4096;

impl HostMatrix {
    /// Refuses a [rows, cols] matrix of `len` values that `format` cannot hold.
    pub fn check_shape(format: WeightFormat, rows: usize, cols: usize, len: usize) -> Result<()> {
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
        let unit = format.unit();
        let Some(quantize) = unit.quantize else {
            return Err(Error::Shape {
                kernel: "weights",
                message: format!("no quantizer for {format}: it comes from GGUF files only"),
            });
        };
        let qk = unit.block.0;
        let stored: Vec<u8> = values
            .par_chunks(qk * BLOCKS_PER_TASK)
            .flat_map_iter(|task| {
                let mut out = Vec::with_capacity(task.len() / qk * unit.block.1);
                for block in task.chunks_exact(qk) {
                    quantize(block, &mut out);
                }
                out
            })
            .collect();
        Self::from_blocks(format, rows, cols, &stored)
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

    /// A matrix from its stored blocks ([rows, cols], rows of whole blocks, as a GGUF file
    /// holds them): floats as they are, Q8_0 and Q4_0 into their split layouts, every other
    /// block format kept block by block (padded to 4 bytes).
    pub fn from_blocks(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self> {
        Self::check_shape(format, rows, cols, rows * cols)?;
        let (qk, size) = format.unit().block;
        if bytes.len() != rows * cols / qk * size {
            return Err(Error::Shape {
                kernel: "weights",
                message: format!("{format} [{rows}, {cols}]: {} bytes", bytes.len()),
            });
        }
        let blocks = bytes.chunks_exact(size);
        let (data, scales): (Vec<u32>, Vec<u16>) = match format.unit().layout {
            Layout::Elements => (pack_bytes(bytes).collect(), vec![]),
            Layout::Split => {
                let qs: Vec<u8> = blocks.clone().flat_map(|b| b[2..].to_vec()).collect();
                (
                    pack_bytes(&qs).collect(),
                    blocks.map(|b| u16::from_le_bytes([b[0], b[1]])).collect(),
                )
            }
            Layout::Blocks => {
                let padded = size.next_multiple_of(4);
                let mut raw = Vec::with_capacity(bytes.len() / size * padded);
                for b in blocks {
                    raw.extend_from_slice(b);
                    raw.resize(raw.len() + padded - size, 0);
                }
                (pack_bytes(&raw).collect(), vec![])
            }
            Layout::Affine => {
                return Err(Error::Shape {
                    kernel: "weights",
                    message: format!("{format} is a GPU layout: no file stores it"),
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

    /// Calls `f` with each stored block, as a file holds it, in order.
    fn each_block(&self, mut f: impl FnMut(&[u8])) {
        let (_, size) = self.format.unit().block;
        let bytes = self.data_bytes();
        match self.format.unit().layout {
            Layout::Elements => bytes.chunks_exact(size).for_each(f),
            Layout::Split => {
                let mut block = vec![0u8; size];
                for (qs, &d) in bytes.chunks_exact(size - 2).zip(&self.scales) {
                    block[..2].copy_from_slice(&d.to_le_bytes());
                    block[2..].copy_from_slice(qs);
                    f(&block);
                }
            }
            Layout::Blocks => bytes
                .chunks_exact(size.next_multiple_of(4))
                .for_each(|b| f(&b[..size])),
            Layout::Affine => unreachable!("i8_affine is read by i8_affine::dequantize"),
        }
    }

    /// What CPU adapters read instead of stored GGUF blocks (their bit fields cost more to
    /// unpack there than the bytes they save): the same values as Q8_0 where every 32-weight
    /// block is int8 codes times one f16 scale (Q5_0: (q - 16) d; 1.06 bytes per weight, one
    /// scale per block), else as i8_affine (1.5 bytes per weight, a scale and offset per 16).
    /// Returns `None` where [`Self::to_i8_affine`] does.
    pub fn expand(&self) -> Option<HostMatrix> {
        self.to_q8_0_exact().or_else(|| self.to_i8_affine())
    }

    /// The same values as [`WeightFormat::Q8_0`] if every 32-weight block is int8 codes times
    /// one f16 scale with no offset, else `None`.
    pub fn to_q8_0_exact(&self) -> Option<HostMatrix> {
        let (codes, pairs) = self.affine_codes()?;
        let scales = pairs
            .chunks_exact(2)
            .map(|halves| {
                let (s, o) = halves[0];
                let d = f16::from_f32(s);
                (o == 0.0 && halves[1] == halves[0] && d.to_f32() == s).then_some(d.to_bits())
            })
            .collect::<Option<Vec<u16>>>()?;
        let codes: Vec<u8> = codes.into_iter().map(|q| q as u8).collect();
        Some(HostMatrix {
            format: WeightFormat::Q8_0,
            rows: self.rows,
            cols: self.cols,
            data: pack_bytes(&codes).collect(),
            scales,
        })
    }

    /// Every weight's int8 code and, per 16 weights, (s, o) with ggml's value = q s + o
    /// exactly; `None` for formats without an affine form.
    fn affine_codes(&self) -> Option<AffineCodes> {
        let affine = self.format.unit().affine?;
        let mut codes = Vec::with_capacity(self.rows * self.cols);
        let mut pairs = Vec::with_capacity(self.rows * self.cols / i8_affine::GROUP);
        self.each_block(|b| affine(b, &mut codes, &mut pairs));
        Some((codes, pairs))
    }

    /// The same values in [`WeightFormat::I8Affine`] (bit for bit), for any format whose
    /// blocks are affine in small integer codes: Q4_0, Q8_0 and every GGUF block format.
    /// Returns `None` for f32, bf16, f16 and i8_affine itself.
    pub fn to_i8_affine(&self) -> Option<HostMatrix> {
        let (codes, pairs) = self.affine_codes()?;
        let codes: Vec<u8> = codes.into_iter().map(|q| q as u8).collect();
        let scales = pairs
            .iter()
            .flat_map(|&(s, o)| [s, o])
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
        if self.format.unit().layout == Layout::Affine {
            return i8_affine::dequantize(self.data_bytes(), bytemuck::cast_slice(&self.scales));
        }
        let dequantize = self.format.unit().dequantize;
        let mut values = Vec::with_capacity(self.rows * self.cols);
        self.each_block(|b| dequantize(b, &mut values));
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect()
    }

    /// A block's values after its unit's quantizer and dequantizer.
    fn round_trip(format: WeightFormat, block: &[f32]) -> Vec<f32> {
        let u = format.unit();
        let mut stored = vec![];
        (u.quantize.unwrap())(block, &mut stored);
        let mut y = vec![];
        (u.dequantize)(&stored, &mut y);
        y
    }

    #[test]
    fn gpu_layout_dequantizes_to_the_reference_blocks() {
        let (rows, cols) = (3, 64);
        let x = ramp(rows * cols);
        for format in WeightFormat::QUANTIZABLE {
            let m = HostMatrix::from_f32(format, rows, cols, &x).unwrap();
            assert_eq!(m.data_bytes().len(), rows * format.data_bytes_per_row(cols));
            assert_eq!(m.scales.len(), rows * format.scales_per_row(cols));
            let expected: Vec<f32> = match format {
                WeightFormat::F32 => x.clone(),
                WeightFormat::Bf16 => x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
                WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
                    x.chunks(32).flat_map(|b| round_trip(format, b)).collect()
                }
                _ => unreachable!("QUANTIZABLE holds these four"),
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

    /// Expanding stored blocks to i8_affine keeps every value (random blocks of every type,
    /// from tests/fixtures/ggml_blocks.safetensors).
    #[test]
    fn i8_affine_expansion_is_lossless() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ggml_blocks.safetensors"
        );
        let bytes = std::fs::read(path).expect("ggml_blocks.safetensors");
        let st = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut seen = 0;
        for format in WeightFormat::ALL {
            if format.unit().affine.is_none() {
                continue;
            }
            seen += 1;
            let name = format.name().to_uppercase();
            let blocks = st.tensor(&format!("{name}.blocks")).unwrap().data();
            let (per, size) = format.unit().block;
            let n = blocks.len() / size * per;
            // 64 blocks as rows of 4 blocks (or 2 for the 256-weight types).
            let cols = per * if per == 32 { 4 } else { 2 };
            let m = HostMatrix::from_blocks(format, n / cols, cols, blocks).unwrap();
            let expanded = m.to_i8_affine().unwrap();
            let (a, b) = (m.dequantize(), expanded.dequantize());
            // Equal as numbers (adding a zero offset turns -0 into +0, nothing else changes).
            assert!(a.iter().zip(&b).all(|(x, y)| x == y), "{name}");
            assert_eq!(expanded.data_bytes().len(), n);
            // Q8_0 where a block is codes times one f16 scale: Q8_0, Q5_0 (and Q4_0), bit for
            // bit; formats with offsets or finer scales do not fit it.
            let q8 = m.to_q8_0_exact();
            let fits = matches!(
                format,
                WeightFormat::Q8_0 | WeightFormat::Q5_0 | WeightFormat::Q4_0
            );
            assert_eq!(q8.is_some(), fits, "{name}");
            if let Some(q8) = q8 {
                assert_eq!(q8.format, WeightFormat::Q8_0);
                let c = q8.dequantize();
                assert!(
                    a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{name}"
                );
            }
            let cpu = m.expand().unwrap();
            assert_eq!(
                cpu.format,
                if fits {
                    WeightFormat::Q8_0
                } else {
                    WeightFormat::I8Affine
                }
            );
        }
        assert_eq!(seen, 10);
        assert!(
            HostMatrix::from_f32(WeightFormat::F32, 1, 32, &[0.5; 32])
                .unwrap()
                .to_i8_affine()
                .is_none()
        );
    }
}
