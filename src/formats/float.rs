//! The float formats: f32, bf16 (both quantizable: bf16 rounds to nearest even) and GGUF's
//! f16. One "block" is one element, stored as the file stores it.

use super::{Layout, Pairs, Unit, WeightFormat, Wide};
use half::{bf16, f16};

pub const F32: Unit = Unit {
    format: WeightFormat::F32,
    name: "f32",
    block: (1, 4),
    layout: Layout::Elements,
    ggml_id: Some(0),
    wgsl: include_str!("../../shaders/common/weights_f32.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: false,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: Some(Wide {
        wgsl: include_str!("../../shaders/common/weights_f32_wide.wgsl"),
        readers: "",
        dot: 16,
        own_block: false,
        pairs: Pairs::RowByRow,
    }),
    dequantize: |b, out| out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    quantize: Some(|x, out| out.extend(x[0].to_le_bytes())),
    affine: None,
};

pub const BF16: Unit = Unit {
    format: WeightFormat::Bf16,
    name: "bf16",
    block: (1, 2),
    layout: Layout::Elements,
    ggml_id: Some(30),
    wgsl: include_str!("../../shaders/common/weights_bf16.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: false,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: Some(Wide {
        wgsl: include_str!("../../shaders/common/weights_bf16_wide.wgsl"),
        readers: include_str!("../../shaders/common/weights_halves_wide.wgsl"),
        dot: 16,
        own_block: false,
        pairs: Pairs::RowByRow,
    }),
    dequantize: |b, out| out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
    quantize: Some(|x, out| out.extend(bf16::from_f32(x[0]).to_le_bytes())),
    affine: None,
};

pub const F16: Unit = Unit {
    format: WeightFormat::F16,
    name: "f16",
    block: (1, 2),
    layout: Layout::Elements,
    ggml_id: Some(1),
    wgsl: include_str!("../../shaders/common/weights_f16.wgsl"),
    own_dot16: false,
    own_dot32: false,
    own_idot32: false,
    own_pdot32: false,
    pairs: Pairs::RowByRow,
    narrow_tiles: false,
    wide: Some(Wide {
        wgsl: include_str!("../../shaders/common/weights_f16_wide.wgsl"),
        readers: include_str!("../../shaders/common/weights_halves_wide.wgsl"),
        dot: 16,
        own_block: false,
        pairs: Pairs::RowByRow,
    }),
    dequantize: |b, out| out.push(f16::from_le_bytes([b[0], b[1]]).to_f32()),
    // GGUF files only: --dtype offers no f16.
    quantize: None,
    affine: None,
};
