//! The WGSL sources: each kernel body from `shaders/`, prefixed with the shared helpers of
//! `shaders/common/` it needs. This is the only place that puts shader text together, and it
//! only concatenates whole files.

use crate::formats::{Pairs, WeightFormat};

/// One shader file and what it needs.
pub struct Shader {
    pub name: &'static str,
    pub body: &'static str,
    /// Entry points (one, or the phases of one algorithm).
    pub entries: &'static [&'static str],
    /// Reads a weight matrix through `w_load8` (compiled once per weight format).
    pub weights: bool,
    /// The Rust mirror of the shader's `Params`.
    pub params: &'static [(&'static str, usize)],
    /// The kernel's storage bindings (name, access) in binding order, as its Rust wrapper
    /// declares them with `bindings!`.
    pub bindings: &'static [super::Binding],
    /// A helper file of `shaders/common/` that this shader shares with others of its kind
    /// ("" for none).
    pub shared: &'static str,
    /// Its twin reading 8-byte words, used where the device does (see [`reads_wide`]; ""
    /// for none).
    pub shared_wide: &'static str,
    /// A helper file included beside whichever twin of `shared` ("" for none).
    pub shared_both: &'static str,
}

macro_rules! shader {
    ($name:literal, $entries:expr, $weights:expr, $params:ty, $buffers:ident) => {
        Shader {
            name: $name,
            body: include_str!(concat!("../../shaders/", $name, ".wgsl")),
            entries: $entries,
            weights: $weights,
            params: <$params as crate::kernels::Params>::FIELDS,
            bindings: <$buffers<'static> as crate::kernels::Bindings<'static>>::LIST,
            shared: "",
            shared_wide: "",
            shared_both: "",
        }
    };
    ($name:literal, $entries:expr, $weights:expr, $params:ty, $buffers:ident, $shared:literal) => {
        Shader {
            shared: include_str!(concat!("../../shaders/common/", $shared, ".wgsl")),
            ..shader!($name, $entries, $weights, $params, $buffers)
        }
    };
    (
        $name:literal,
        $entries:expr,
        $weights:expr,
        $params:ty,
        $buffers:ident,
        $shared:literal,
        $shared_wide:literal
        $(, $shared_both:literal)?
    ) => {
        Shader {
            shared_wide: include_str!(concat!("../../shaders/common/", $shared_wide, ".wgsl")),
            $(shared_both: include_str!(concat!("../../shaders/common/", $shared_both, ".wgsl")),)?
            ..shader!($name, $entries, $weights, $params, $buffers, $shared)
        }
    };
}

use super::{
    add::{AddBuffers, AddParams},
    attention::{AttentionBuffers, AttentionParams, AttentionRopeBuffers},
    copy::{CopyBuffers, CopyParams},
    embedding::{EmbeddingBuffers, EmbeddingParams},
    fill::{FillBuffers, FillParams},
    fma::{FmaBuffers, FmaParams},
    geglu::{GegluBuffers, GegluParams},
    kv_store::{KvStoreBuffers, KvStoreParams},
    log_prob::{LogProbBuffers, LogProbParams},
    matrix::{MatrixBuffers, MatrixParams},
    quantize_q8::{QuantizeQ8Buffers, QuantizeQ8Params},
    residual_norm::ResidualNormBuffers,
    rms_norm::{RmsNormBuffers, RmsNormParams},
    rope_store::{RopeStoreBuffers, RopeStoreParams},
    soft_cap::{SoftCapBuffers, SoftCapParams},
    top_k::{TopKBuffers, TopKParams},
};

pub const ADD: Shader = shader!("add", &["main"], false, AddParams, AddBuffers);
pub const ATTENTION: Shader = shader!(
    "attention",
    &["partial", "combine"],
    false,
    AttentionParams,
    AttentionBuffers,
    "attention_cache",
    "attention_cache_wide"
);
/// attention's `partial` with rope_store folded in (decode steps), from the same body.
pub const ATTENTION_ROPE: Shader = shader!(
    "attention",
    &["partial_rope"],
    false,
    AttentionParams,
    AttentionRopeBuffers,
    "attention_cache",
    "attention_cache_wide",
    "attention_rope"
);
pub const COPY: Shader = shader!("copy", &["main"], false, CopyParams, CopyBuffers);
pub const EMBEDDING: Shader = shader!(
    "embedding",
    &["main"],
    true,
    EmbeddingParams,
    EmbeddingBuffers
);
pub const FILL: Shader = shader!("fill", &["main"], false, FillParams, FillBuffers);
pub const FMA: Shader = shader!("fma", &["main"], false, FmaParams, FmaBuffers);
pub const GEGLU: Shader = shader!("geglu", &["main"], false, GegluParams, GegluBuffers);
pub const KV_STORE: Shader = shader!("kv_store", &["main"], false, KvStoreParams, KvStoreBuffers);
pub const LOG_PROB: Shader = shader!("log_prob", &["main"], false, LogProbParams, LogProbBuffers);
pub const MATMUL: Shader = shader!(
    "matmul",
    &["main"],
    true,
    MatrixParams,
    MatrixBuffers,
    "matrix_x",
    "matrix_x_wide",
    "matrix_x_q8"
);
pub const MATVEC: Shader = shader!(
    "matvec",
    &["main"],
    true,
    MatrixParams,
    MatrixBuffers,
    "matrix_x",
    "matrix_x_wide",
    "matrix_x_q8"
);
pub const QUANTIZE_Q8: Shader = shader!(
    "quantize_q8",
    &["main"],
    false,
    QuantizeQ8Params,
    QuantizeQ8Buffers
);
pub const RMS_NORM: Shader = shader!("rms_norm", &["main"], false, RmsNormParams, RmsNormBuffers);
pub const RESIDUAL_NORM: Shader = shader!(
    "residual_norm",
    &["main"],
    false,
    RmsNormParams,
    ResidualNormBuffers
);
pub const ROPE_STORE: Shader = shader!(
    "rope_store",
    &["main"],
    false,
    RopeStoreParams,
    RopeStoreBuffers
);
pub const SOFT_CAP: Shader = shader!("soft_cap", &["main"], false, SoftCapParams, SoftCapBuffers);
pub const TOP_K: Shader = shader!(
    "top_k",
    &["partial", "merge"],
    false,
    TopKParams,
    TopKBuffers
);

/// Every shader, for tests that check them all.
pub const ALL: &[Shader] = &[
    ADD,
    ATTENTION,
    ATTENTION_ROPE,
    COPY,
    EMBEDDING,
    FILL,
    FMA,
    GEGLU,
    KV_STORE,
    LOG_PROB,
    MATMUL,
    MATVEC,
    QUANTIZE_Q8,
    RMS_NORM,
    ROPE_STORE,
    RESIDUAL_NORM,
    SOFT_CAP,
    TOP_K,
];

const REDUCE_SUBGROUP: &str = include_str!("../../shaders/common/reduce_subgroup.wgsl");
const REDUCE_WORKGROUP: &str = include_str!("../../shaders/common/reduce_workgroup.wgsl");
const MATH: &str = include_str!("../../shaders/common/math.wgsl");

const WEIGHTS_BLOCK: &str = include_str!("../../shaders/common/weights_block.wgsl");
const WEIGHTS_BYTES: &str = include_str!("../../shaders/common/weights_bytes.wgsl");
const WEIGHTS_DOT16: &str = include_str!("../../shaders/common/weights_dot16.wgsl");
const WEIGHTS_DOT32: &str = include_str!("../../shaders/common/weights_dot32.wgsl");
const WEIGHTS_IDOT32: &str = include_str!("../../shaders/common/weights_idot32.wgsl");
const WEIGHTS_PDOT32: &str = include_str!("../../shaders/common/weights_pdot32.wgsl");
const WEIGHTS_DOT32_PAIRS: &str = include_str!("../../shaders/common/weights_dot32_pairs.wgsl");
const WEIGHTS_DOT32_PAIRS_SCALED: &str =
    include_str!("../../shaders/common/weights_dot32_pairs_scaled.wgsl");
const WEIGHTS_DATA: &str = include_str!("../../shaders/common/weights_data.wgsl");
const WEIGHTS_DATA_WIDE: &str = include_str!("../../shaders/common/weights_data_wide.wgsl");
const WEIGHTS_ROWS: &str = include_str!("../../shaders/common/weights_rows.wgsl");
const WEIGHTS_TILES: &str = include_str!("../../shaders/common/weights_tiles.wgsl");

/// Whether this device's shaders read storage through 8-byte words where they have a twin
/// for it: CPU adapters with SHADER_INT64, whose loads cost per component whatever its width.
pub fn reads_wide(gpu: &crate::gpu::Gpu) -> bool {
    gpu.caps.cpu_like && gpu.caps.int64
}

/// How a shader that reads weights reads them: the format, whether through its wide twin (see
/// [`crate::formats::Wide`]), and whether the matrix's words are in row tiles (see
/// `shaders/common/weights_tiles.wgsl`; wide readings always are).
#[derive(Clone, Copy, Debug)]
pub struct WeightsSource {
    pub format: WeightFormat,
    pub wide: bool,
    pub tiled: bool,
}

impl WeightsSource {
    /// The narrow reading of `format`, rows one after another.
    pub fn narrow(format: WeightFormat) -> WeightsSource {
        WeightsSource {
            format,
            wide: false,
            tiled: false,
        }
    }

    /// How this device reads `format`: wide where it [`reads_wide`], for the formats that
    /// have a wide twin; in row tiles on CPU adapters where wide or the format's narrow
    /// reading tiles ([`crate::formats::Unit::narrow_tiles`]).
    pub fn for_device(gpu: &crate::gpu::Gpu, format: WeightFormat) -> WeightsSource {
        let unit = format.unit();
        let wide = reads_wide(gpu) && unit.wide.is_some();
        WeightsSource {
            format,
            wide,
            tiled: wide || (gpu.caps.cpu_like && unit.narrow_tiles),
        }
    }

    /// Bytes of one word of the matrix data binding: what a tile holds per row and step.
    pub fn word_bytes(&self) -> usize {
        if self.wide { 32 } else { 16 }
    }
}

/// The data and scale bindings, `word_at`, and the `w_load8`, `w_dot16`, `w_dot32`,
/// `w_dot32_pairs`, `w_block`, `w_load8_in`, `w_idot32` and `w_pdot32` of a format (with the
/// byte helpers for the GGUF block formats). A wide reading (CPU adapters, which multiply f32
/// activations unless `--activations int8` asks) takes the generic `w_idot32`.
fn weights_helper(w: WeightsSource) -> [&'static str; 10] {
    let unit = w.format.unit();
    let pdot32 = if unit.own_pdot32 { "" } else { WEIGHTS_PDOT32 };
    let words = if w.tiled { WEIGHTS_TILES } else { WEIGHTS_ROWS };
    if let Some(wide) = unit.wide.as_ref().filter(|_| w.wide) {
        let block = if wide.own_block { "" } else { WEIGHTS_BLOCK };
        let pairs = pairs_helper(wide.pairs);
        return [
            WEIGHTS_DATA_WIDE,
            words,
            "",
            wide.wgsl,
            wide.readers,
            "",
            pairs,
            block,
            WEIGHTS_IDOT32,
            pdot32,
        ];
    }
    let bytes = if w.format.ggml_block().is_some() {
        WEIGHTS_BYTES
    } else {
        ""
    };
    let dot16 = if unit.own_dot16 { "" } else { WEIGHTS_DOT16 };
    let dot32 = if unit.own_dot32 { "" } else { WEIGHTS_DOT32 };
    let idot32 = if unit.own_idot32 { "" } else { WEIGHTS_IDOT32 };
    let pairs = pairs_helper(unit.pairs);
    [
        WEIGHTS_DATA,
        words,
        bytes,
        unit.wgsl,
        dot16,
        dot32,
        pairs,
        WEIGHTS_BLOCK,
        idot32,
        pdot32,
    ]
}

/// The file that defines a reading's `w_dot32_pairs` ("" where its own file does).
fn pairs_helper(pairs: Pairs) -> &'static str {
    match pairs {
        Pairs::RowByRow => WEIGHTS_DOT32_PAIRS,
        Pairs::BlockScale => WEIGHTS_DOT32_PAIRS_SCALED,
        Pairs::Own => "",
    }
}

/// The full source of `shader`: the reduction helpers (subgroup or workgroup-memory twin),
/// the math helpers, the weight data binding and format helpers when the shader reads
/// weights, the helper file it shares with its kind (`shared`, or its wide twin when
/// `wide`), the body, then `shared_both`.
pub fn compose(
    shader: &Shader,
    subgroups: bool,
    weights: Option<WeightsSource>,
    wide: bool,
) -> String {
    let reduce = if subgroups {
        REDUCE_SUBGROUP
    } else {
        REDUCE_WORKGROUP
    };
    let [
        data,
        words,
        bytes,
        own,
        dot16,
        dot32,
        pairs,
        block,
        idot32,
        pdot32,
    ] = weights
        .filter(|_| shader.weights)
        .map(weights_helper)
        .unwrap_or([""; 10]);
    [
        reduce,
        MATH,
        data,
        words,
        bytes,
        own,
        dot16,
        dot32,
        pairs,
        block,
        idot32,
        pdot32,
        if wide && !shader.shared_wide.is_empty() {
            shader.shared_wide
        } else {
            shader.shared
        },
        shader.body,
        // After the body: naga 30 numbers overrides as it first meets them, and an entry point
        // of a helper file met before the body's overrides made an override-sized workgroup
        // array's anonymous override come before named ones, which its override processing
        // then fails on.
        shader.shared_both,
    ]
    .join("\n")
}

/// Compiles `entry` of `shader` for this device (subgroup helpers when it has SUBGROUP), with
/// the shader's declared bindings. The pipeline label is the shader's name, then the weight
/// format, the variant (pipelines of one shader built with different constants) and the entry
/// point if any: `matvec.q8_0`, `rope_store.norm`, `attention.partial`.
pub(crate) fn build(
    gpu: &crate::gpu::Gpu,
    shader: &Shader,
    entry: &str,
    weights: Option<WeightFormat>,
    variant: Option<&str>,
    constants: &[(&str, f64)],
) -> crate::Result<crate::gpu::Kernel> {
    let mut label = shader.name.to_string();
    if let Some(f) = weights {
        label = format!("{label}.{f}");
    }
    if let Some(v) = variant {
        label = format!("{label}.{v}");
    }
    if entry != "main" {
        label = format!("{label}.{entry}");
    }
    let weights = weights.map(|f| WeightsSource::for_device(gpu, f));
    let source = compose(shader, gpu.caps.subgroups, weights, reads_wide(gpu));
    crate::gpu::Kernel::new(gpu, &label, &source, entry, shader.bindings, constants)
}
