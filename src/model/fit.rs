//! What a load needs against what the adapter allows: refused before any upload where the
//! limits say so, and advice naming the setting that needs less memory where a buffer did
//! not fit.

use super::ModelOptions;
use crate::config::ModelConfig;
use crate::gpu::Gpu;
use crate::kernels::KvDtype;
use crate::weights::WeightFormat;
use crate::{Error, Result};

/// Which setting would make a load need less memory, from the label of the buffer that did
/// not fit (see the labels in `plan.rs`, `kv_store.rs` and `rope.rs`).
pub(super) fn memory_advice(label: &str, ctx: usize, options: &ModelOptions) -> String {
    let smaller_ctx = format!("--ctx {} or less (now {ctx})", (ctx / 2).max(1));
    if label.contains(".kv.") {
        let f16 = match options.kv {
            Some(KvDtype::F32) => ", or --kv f16",
            _ => "",
        };
        format!("the KV caches grow with the context: use {smaller_ctx}{f16}")
    } else if label.starts_with("rope") || label.starts_with("logits") {
        format!("use {smaller_ctx}")
    } else {
        let dtype = match options.format {
            Some(WeightFormat::Q4_0) => "a smaller model".to_string(),
            Some(f) => format!("a smaller --dtype than {f} (q8_0 or q4_0)"),
            None => "--dtype q8_0 or q4_0".to_string(),
        };
        format!("the weights need less memory with {dtype}; the KV caches with {smaller_ctx}")
    }
}

/// Refuses, before any upload, what the kernels and the adapter's limits cannot hold, naming
/// what would fit.
pub(super) fn check_fits(
    gpu: &Gpu,
    c: &ModelConfig,
    format: WeightFormat,
    kv: KvDtype,
    ctx: usize,
    chunk: usize,
    options: &ModelOptions,
) -> Result<()> {
    use crate::kernels::attention::{HEAD_DIM_MULTIPLE, MAX_HEAD_DIM};
    if c.head_dim > MAX_HEAD_DIM || !c.head_dim.is_multiple_of(HEAD_DIM_MULTIPLE) {
        return Err(Error::Shape {
            kernel: "attention",
            message: format!(
                "head_dim {} must be a multiple of {HEAD_DIM_MULTIPLE} and at most {MAX_HEAD_DIM}",
                c.head_dim
            ),
        });
    }
    let limit = gpu.caps.max_binding_size;
    let cache = ((ctx + chunk) * c.kv_dim() * kv.bytes()) as u64;
    if cache > limit {
        let fits = (limit as usize / (c.kv_dim() * kv.bytes())).saturating_sub(chunk);
        return Err(Error::TooLarge {
            what: format!(
                "a KV cache of {ctx} positions (use --ctx {fits} or less{})",
                if kv == KvDtype::F32 {
                    ", or --kv f16"
                } else {
                    ""
                }
            ),
            needed: cache,
            allowed: limit,
        });
    }
    let largest_activation = step_activation_bytes(c, chunk, options.all_logits);
    if largest_activation > limit {
        return Err(Error::TooLarge {
            what: format!("activations of a {chunk}-token step"),
            needed: largest_activation,
            allowed: limit,
        });
    }
    let row = format.data_bytes_per_row(c.hidden.max(c.intermediate).max(c.q_dim())) as u64;
    if row > limit {
        return Err(Error::TooLarge {
            what: format!("one {format} weight row"),
            needed: row,
            allowed: limit,
        });
    }
    Ok(())
}

/// Bytes of a `chunk`-token step's largest activation: the gate/up product's, or with
/// `all_logits` every row's logits when larger.
pub(super) fn step_activation_bytes(c: &ModelConfig, chunk: usize, all_logits: bool) -> u64 {
    (chunk * (2 * c.intermediate).max(c.vocab * all_logits as usize) * 4) as u64
}
