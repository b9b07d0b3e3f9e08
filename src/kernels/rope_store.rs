//! rope_store: (Gemma 3) per-head q/k norms, RoPE of q and k, and k and v into the KV cache,
//! in one dispatch (shaders/rope_store.wgsl).

use super::kv_store::{KvCache, KvDtype};
use super::rope::RopeTable;
use super::{Dispatch, bindings, check_len, params, source};
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct RopeStoreParams {
        pub n: u32,
        pub heads: u32,
        pub kv_heads: u32,
        pub head_dim: u32,
        /// Rows of the (cos, sin) table.
        pub max_pos: u32,
        pub capacity: u32,
        pub eps: f32,
        /// 1 for zero-centred (Hugging Face) norm weights, 0 when the file already added it.
        pub w_offset: f32,
    }
}

bindings! {
    pub struct RopeStoreBuffers {
        /// \[n\] u32: token t's position (its cache row is position % capacity)
        pub positions: Read,
        /// [max_pos, head_dim / 2] (cos, sin) pairs: a [`RopeTable`]'s buffer
        pub table: Read,
        /// [2, head_dim]: the q norm's weights, then the k norm's (read only with norms)
        pub norms: Read,
        /// [n, heads * head_dim + 2 kv_dim]: q, k and v of each token side by side, as projected
        pub qkv: Read,
        /// [n, heads, head_dim]: q normed and rotated
        pub q: ReadWrite,
        /// [capacity, kv_heads * head_dim]: a [`KvCache`]'s keys
        pub k_cache: ReadWrite,
        /// [capacity, kv_heads * head_dim]: its values
        pub v_cache: ReadWrite,
    }
}

/// What one rope_store binds: `n` tokens at `positions` whose q, k and v lie side by side in
/// `qkv` [n, heads * head_dim + 2 kv_dim], rotated with `table`, q into `q` [n, heads,
/// head_dim] and k and v into `cache`; `norms` [2, head_dim] (q's, then k's) with `eps` and
/// `w_offset` where the model norms each head (Gemma 3).
pub struct RopeStoreArgs<'a> {
    pub n: usize,
    pub heads: usize,
    pub positions: &'a wgpu::Buffer,
    pub table: &'a RopeTable,
    pub norms: Option<(&'a wgpu::Buffer, f32, f32)>,
    pub qkv: &'a wgpu::Buffer,
    pub q: &'a wgpu::Buffer,
    pub cache: &'a KvCache,
}

/// Invocations per workgroup: four elements of a head each, so head_dim <= 4 WG.
pub(crate) const WG: u32 = 64;

pub struct RopeStore {
    plain: Kernel,
    normed: Kernel,
    dtype: KvDtype,
}

impl RopeStore {
    pub fn new(gpu: &Gpu, dtype: KvDtype) -> Result<RopeStore> {
        let build = |norm: bool| {
            source::build(
                gpu,
                &source::ROPE_STORE,
                "main",
                None,
                norm.then_some("norm"),
                &[
                    ("WG", WG as f64),
                    ("KV_F16", dtype.is_f16()),
                    ("NORM", norm as u8 as f64),
                ],
            )
        };
        Ok(RopeStore {
            plain: build(false)?,
            normed: build(true)?,
            dtype,
        })
    }

    /// Norms (where `args.norms` is given) and rotates q and k, writes q out and stores k and
    /// v at the tokens' cache rows.
    pub fn bind(&self, gpu: &Gpu, label: &str, args: RopeStoreArgs) -> Result<Dispatch> {
        let RopeStoreArgs {
            n,
            heads,
            positions,
            table,
            norms,
            qkv,
            q,
            cache,
        } = args;
        let hd = table.head_dim;
        let shape_error = |message: String| Error::Shape {
            kernel: "rope_store",
            message: format!("{label}: {message}"),
        };
        if cache.dtype != self.dtype {
            return Err(shape_error(format!(
                "kernel built for a {:?} cache, cache is {:?}",
                self.dtype, cache.dtype
            )));
        }
        if hd == 0 || !hd.is_multiple_of(4) || hd > 4 * WG as usize {
            return Err(shape_error(format!(
                "head_dim {hd} must be a multiple of 4 and at most {}",
                4 * WG
            )));
        }
        if !cache.kv_dim.is_multiple_of(hd) {
            return Err(shape_error(format!(
                "cache rows of {} are no whole number of {hd}-wide heads",
                cache.kv_dim
            )));
        }
        let kv_heads = cache.kv_dim / hd;
        check_len("rope_store", "positions", positions, n)?;
        check_len("rope_store", "table", &table.buffer, table.max_pos * hd)?;
        check_len(
            "rope_store",
            "qkv",
            qkv,
            n * (heads * hd + 2 * cache.kv_dim),
        )?;
        check_len("rope_store", "q", q, n * heads * hd)?;
        let (kernel, norms, eps, w_offset) = match norms {
            Some((w, eps, w_offset)) => {
                check_len("rope_store", "norms", w, 2 * hd)?;
                (&self.normed, w, eps, w_offset)
            }
            // Without norms the binding is never read: the table stands in for it.
            None => (&self.plain, &table.buffer, 0.0, 0.0),
        };
        let params = RopeStoreParams {
            n: n as u32,
            heads: heads as u32,
            kv_heads: kv_heads as u32,
            head_dim: hd as u32,
            max_pos: table.max_pos as u32,
            capacity: cache.capacity as u32,
            eps,
            w_offset,
        };
        let buffers = RopeStoreBuffers {
            positions,
            table: &table.buffer,
            norms,
            qkv,
            q,
            k_cache: &cache.k,
            v_cache: &cache.v,
        };
        kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &buffers,
            ((heads + kv_heads) as u32, n as u32, 1),
        )
    }
}
