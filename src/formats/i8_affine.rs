//! i8_affine: a GPU layout, not a file type. Any block format whose values are affine in
//! small integer codes (Q8_0, Q4_0 and every GGUF block format) expands to it losslessly at
//! load: int8 codes and, per 16 weights, an f32 scale and offset (value = q s + o, the very
//! products ggml computes). More bytes, far less decoding: what CPU adapters run fastest.

use super::{Layout, Pairs, Unit, WeightFormat, Wide};

/// Weights per (scale, offset) pair.
pub const GROUP: usize = 16;

pub const I8_AFFINE: Unit = Unit {
    format: WeightFormat::I8Affine,
    name: "i8_affine",
    // Nothing stores it: the GPU layout's own group of 16 codes.
    block: (GROUP, GROUP),
    layout: Layout::Affine,
    ggml_id: None,
    wgsl: include_str!("../../shaders/common/weights_i8_affine.wgsl"),
    own_dot16: true,
    own_dot32: false,
    own_idot32: false,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: Some(Wide {
        wgsl: include_str!("../../shaders/common/weights_i8_affine_wide.wgsl"),
        readers: "",
        // A whole 32-weight block per step, its two pairs in one 16-byte load (lavapipe,
        // Gemma 3 270M tg32 in three alternated runs: 9.52-9.66 tokens/s with 16, 10.09-10.52
        // with 32).
        dot: 32,
        own_block: true,
        pairs: Pairs::Own,
    }),
    dequantize: |_, _| unreachable!("i8_affine has no file blocks: see i8_affine::dequantize"),
    quantize: None,
    affine: None,
};

/// The values of `codes` with `side` holding (s, o) per 16 codes.
pub fn dequantize(codes: &[u8], side: &[f32]) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &q)| (q as i8) as f32 * side[2 * (i / GROUP)] + side[2 * (i / GROUP) + 1])
        .collect()
}
