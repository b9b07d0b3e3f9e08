//! Weight formats, one unit per format family: what a block holds, how it reaches its GPU
//! layout, its CPU dequantizer and the WGSL that reads it. Everything else asks the table.
//!
//! A [`HostMatrix`] is a [rows, cols] matrix already in the layout the shaders read
//! (`shaders/common/weights_*.wgsl`): `data` as u32 words, `scales` as f16 bits. The same
//! bytes go to the GPU; [`HostMatrix::dequantize`] gives the exact values the GPU sees.

pub mod float;
mod host;
pub mod i8_affine;
pub mod k_quants;
pub mod legacy;

pub use host::HostMatrix;

use half::f16;
use std::fmt;
use std::str::FromStr;

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
    /// Any block format expanded losslessly at load (see [`i8_affine`]).
    I8Affine,
}

/// How a format's blocks sit in a [`HostMatrix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Element by element, as the file stores them (f32, bf16, f16).
    Elements,
    /// A block's leading f16 scale apart in `scales`, its codes in `data` (Q8_0, Q4_0).
    Split,
    /// Whole blocks as the file stores them, each padded to 4 bytes (the GGUF block formats).
    Blocks,
    /// int8 codes in `data`, an f32 (scale, offset) per 16 in `scales` (i8_affine).
    Affine,
}

/// The values of one stored block, appended.
pub type DequantizeFn = fn(&[u8], &mut Vec<f32>);
/// One block of f32 values as one stored block, appended.
pub type QuantizeFn = fn(&[f32], &mut Vec<u8>);
/// Int8 codes and per-16 (scale, offset) pairs of one block, appended.
pub type AffineFn = fn(&[u8], &mut Vec<i8>, &mut Vec<(f32, f32)>);

/// Everything about one format.
pub struct Unit {
    pub format: WeightFormat,
    /// `--dtype`, pipeline labels and messages spell it so.
    pub name: &'static str,
    /// (weights, bytes) of one block as a GGUF file stores it: the one table of block sizes.
    pub block: (usize, usize),
    pub layout: Layout,
    /// The GGML type id of this format in GGUF files.
    pub ggml_id: Option<u32>,
    /// `shaders/common/weights_<name>.wgsl`: its `w_load8`.
    pub wgsl: &'static str,
    /// `wgsl` also defines `w_dot16` (16 weights at once, their scale applied once); the others get `weights_dot16.wgsl`'s, built from `w_load8`.
    pub own_dot16: bool,
    /// `wgsl` also defines `w_dot32` (a whole 32-weight block at once, its bytes and scale
    /// loaded once); the others get `weights_dot32.wgsl`'s, two `w_dot16`.
    pub own_dot32: bool,
    /// `wgsl` also defines `w_idot32` (a 32-weight block against int8 activations through
    /// packed integer dot products, its scales applied once); the others get
    /// `weights_idot32.wgsl`'s, their f32 values against the codes.
    pub own_idot32: bool,
    /// `wgsl` also defines `w_pdot32` and `w_pdot32_pairs` (a 32-weight block of 4-bit codes
    /// against int8 activations held in pairs, two products per 32-bit multiply: matvec's CPU
    /// layout, see `XP32` in `shaders/common/math.wgsl`), so CPU adapters multiply it with
    /// int8 activations by default; the others get `weights_pdot32.wgsl`'s, through
    /// `w_idot32`.
    pub own_pdot32: bool,
    /// Where its `w_dot32_pairs` comes from.
    pub pairs: Pairs,
    /// `wgsl` finds its 16-byte words through `word_at` (each holds whole blocks), so CPU
    /// adapters store the format in row tiles (`shaders/common/weights_tiles.wgsl`) when they
    /// read it narrow, as they do every format they read wide.
    pub narrow_tiles: bool,
    /// The same format read 8 bytes at a time, where the adapter takes it (see
    /// [`Wide`]).
    pub wide: Option<Wide>,
    /// The values of one stored block, appended.
    pub dequantize: DequantizeFn,
    /// One block of f32 values into one stored block, appended (the formats `--dtype` offers).
    pub quantize: Option<QuantizeFn>,
    /// One stored block as i8_affine codes and pairs (formats that expand to it).
    pub affine: Option<AffineFn>,
}

/// A format's reading of its data 8 bytes at a time (`shaders/common/weights_data_wide.wgsl`),
/// for CPU adapters with SHADER_INT64, where a load costs per component whatever its width.
/// Q8_0, i8_affine and the float formats have one (a byte or more per weight); a Q4_0 twin
/// measured within noise on lavapipe (Gemma 2 2B shapes: its 16-byte vec4 already holds a
/// block, and decoding nibbles costs more than loading them), so it has none (its narrow
/// reading is tiled instead: [`Unit::narrow_tiles`]), nor have the other block formats (they
/// expand to i8_affine on CPU adapters). A wide format's rows are whole multiples of 32 bytes,
/// as the 32-byte words of the binding need; CPU adapters store them in row tiles.
pub struct Wide {
    /// `shaders/common/weights_<name>_wide.wgsl`: its `w_load8`, `w_dot16` and `w_dot32`, or
    /// what `readers` builds them from.
    pub wgsl: &'static str,
    /// A file of `shaders/common/` defining the readers over `wgsl` ("" where `wgsl` has them).
    pub readers: &'static str,
    /// Weights per step of matvec's CPU layout (its DOT): 16 or 32.
    pub dot: u32,
    /// `wgsl` also defines `w_block` and `w_load8_in` (a block's scales loaded once for its
    /// four groups of 8); the others get `weights_block.wgsl`'s, plain `w_load8`.
    pub own_block: bool,
    /// Where its `w_dot32_pairs` comes from.
    pub pairs: Pairs,
}

/// Where a reading's `w_dot32_pairs` (two pairs of neighbouring rows of a row tile, 32 weights
/// of each: matvec's CPU layout with 32 weights a step) comes from: what the rows of a pair
/// share is loaded once for both, where the format says how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairs {
    /// `shaders/common/weights_dot32_pairs.wgsl`: `w_dot32` row by row.
    RowByRow,
    /// `shaders/common/weights_dot32_pairs_scaled.wgsl`: one f16 scale per block, from the
    /// format's `block_codes`.
    BlockScale,
    /// The format's file defines its own.
    Own,
}

/// Every format's unit, in the order of [`WeightFormat`]'s variants.
const UNITS: [Unit; 14] = [
    float::F32,
    float::BF16,
    legacy::Q8_0,
    legacy::Q4_0,
    float::F16,
    legacy::Q4_1,
    legacy::Q5_0,
    legacy::Q5_1,
    k_quants::Q2_K,
    k_quants::Q3_K,
    k_quants::Q4_K,
    k_quants::Q5_K,
    k_quants::Q6_K,
    i8_affine::I8_AFFINE,
];

/// Rows of every format are whole multiples of this many weights (what the kernels read at
/// once), and of the format's block.
pub const ROW_MULTIPLE: usize = 32;

impl WeightFormat {
    /// Every format the shaders read.
    pub const ALL: [WeightFormat; UNITS.len()] = {
        let mut all = [WeightFormat::F32; UNITS.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = UNITS[i].format;
            i += 1;
        }
        all
    };

    /// The formats with a quantizer here: those `--dtype` offers.
    pub const QUANTIZABLE: [WeightFormat; 4] = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
    ];

    pub fn unit(self) -> &'static Unit {
        &UNITS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.unit().name
    }

    /// The format of GGML type `id` in a GGUF file.
    pub fn of_ggml_id(id: u32) -> Option<WeightFormat> {
        WeightFormat::ALL
            .into_iter()
            .find(|f| f.unit().ggml_id == Some(id))
    }

    /// For the formats kept as GGUF blocks: (weights per block, bytes per block, bytes per
    /// padded block).
    pub fn ggml_block(self) -> Option<(usize, usize, usize)> {
        let u = self.unit();
        let (qk, size) = u.block;
        (u.layout == Layout::Blocks).then(|| (qk, size, size.next_multiple_of(4)))
    }

    /// Weights per block: rows must hold a whole number of blocks.
    pub fn block_len(self) -> usize {
        self.unit().block.0.max(ROW_MULTIPLE)
    }

    /// Bytes of `data` per row of `cols` weights.
    pub fn data_bytes_per_row(self, cols: usize) -> usize {
        let (qk, size) = self.unit().block;
        match self.unit().layout {
            Layout::Elements => cols * size,
            // The leading f16 scale lives in `scales`.
            Layout::Split => cols / qk * (size - 2),
            Layout::Blocks => cols / qk * size.next_multiple_of(4),
            Layout::Affine => cols,
        }
    }

    /// f16 scales per row of `cols` weights (Q8_0 and Q4_0 keep theirs apart).
    pub fn scales_per_row(self, cols: usize) -> usize {
        match self.unit().layout {
            Layout::Split => cols / self.unit().block.0,
            // An f32 scale and an f32 offset (4 halves) per 16 weights.
            Layout::Affine => cols / i8_affine::GROUP * 4,
            Layout::Elements | Layout::Blocks => 0,
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
        WeightFormat::QUANTIZABLE
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown weight format `{s}`: expected f32, bf16, q8_0 or q4_0 (GGUF files also run their own types)"))
    }
}

/// The f16 at byte `i` of a block.
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_variants() {
        for (i, u) in UNITS.iter().enumerate() {
            assert_eq!(u.format as usize, i, "{}", u.name);
            assert_eq!(WeightFormat::ALL[i], u.format);
            assert_eq!(u.name.parse::<WeightFormat>().is_ok(), u.quantize.is_some());
            if let Some(id) = u.ggml_id {
                assert_eq!(WeightFormat::of_ggml_id(id), Some(u.format), "{}", u.name);
            }
        }
        let quantizable: Vec<WeightFormat> = WeightFormat::ALL
            .into_iter()
            .filter(|f| f.unit().quantize.is_some())
            .collect();
        assert_eq!(quantizable, WeightFormat::QUANTIZABLE);
    }

    /// Every block format's dequantizer gives the `gguf` package's values on random blocks
    /// (tests/fixtures/make_ggml_blocks.py), an implementation independent of this one. Both
    /// compute d * scale * code (+ min) in f32 with the same f16 inputs; ggml orders the
    /// products alike, so they agree to a few ulp.
    #[test]
    fn every_block_type_dequantizes_as_the_gguf_package() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ggml_blocks.safetensors"
        );
        let bytes = std::fs::read(path).expect("ggml_blocks.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut seen = 0;
        for format in WeightFormat::ALL {
            let u = format.unit();
            if u.block.0 == 1 || u.layout == Layout::Affine {
                continue;
            }
            seen += 1;
            let name = u.name.to_uppercase();
            let blocks = st.tensor(&format!("{name}.blocks")).unwrap();
            let expected: Vec<f32> =
                bytemuck::pod_collect_to_vec(st.tensor(&format!("{name}.values")).unwrap().data());
            let mut got = vec![];
            for b in blocks.data().chunks(u.block.1) {
                (u.dequantize)(b, &mut got);
            }
            assert_eq!(got.len(), expected.len(), "{name}");
            for (i, (a, e)) in got.iter().zip(&expected).enumerate() {
                let bound = 4.0 * f32::EPSILON * e.abs().max(1e-30);
                assert!((a - e).abs() <= bound, "{name} element {i}: {a} vs {e}");
            }
        }
        assert_eq!(seen, 10, "every GGML block format has fixture blocks");
    }
}
