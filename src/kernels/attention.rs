//! attention: Gemma 2 attention against the KV cache, split over the keys
//! (shaders/attention.wgsl: phases `partial` and `combine`).

use super::kv_store::{KvCache, KvDtype};
use super::{Dispatch, check_len, params, source};
use crate::config::AttentionShape;
use crate::gpu::{Access, Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct AttentionParams {
        pub n_q: u32,
        pub heads: u32,
        pub kv_heads: u32,
        pub head_dim: u32,
        pub capacity: u32,
        /// Sliding window; u32::MAX for global layers.
        pub window: u32,
        pub split_len: u32,
        pub n_splits: u32,
        pub scale: f32,
        /// 0 disables the soft-cap.
        pub softcap: f32,
    }
}

/// Invocations per workgroup, and keys scored per step of the online softmax.
const WG: u32 = 64;
/// The shader keeps one head in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;

pub struct Attention {
    partial: Kernel,
    combine: Kernel,
    dtype: KvDtype,
}

impl Attention {
    pub fn new(gpu: &Gpu, dtype: KvDtype) -> Result<Attention> {
        let access = [
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ];
        let constants = [("WG", WG as f64), ("KV_F16", dtype.is_f16())];
        let build =
            |entry| source::build(gpu, &source::ATTENTION, entry, None, &access, &constants);
        Ok(Attention {
            partial: build("partial")?,
            combine: build("combine")?,
            dtype,
        })
    }

    /// Keys per split: enough splits to occupy the device when there are few queries, never
    /// fewer keys than a workgroup scores at once.
    fn split_len(gpu: &Gpu, n_q: usize, heads: usize, max_keys: usize) -> usize {
        let workgroups = n_q * heads;
        let parallel = if gpu.caps.cpu_like {
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
        } else {
            1024
        };
        let splits = parallel.div_ceil(workgroups).max(1);
        max_keys
            .div_ceil(splits)
            .next_multiple_of(WG as usize)
            .max(WG as usize)
    }

    /// out [n_q, heads, head_dim] = attention of q [n_q, heads, head_dim] (rotated) at
    /// `positions` \[n_q\] over `cache`, with the shape and rules of `cfg` (as the reference).
    /// Every visible key must be in the cache: the range of positions a query sees (its
    /// window, or everything before it) must fit `capacity`.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        n_q: usize,
        cfg: &AttentionShape,
        positions: &wgpu::Buffer,
        q: &wgpu::Buffer,
        cache: &KvCache,
        out: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let shape_error = |message: String| Error::Shape {
            kernel: "attention",
            message: format!("{label}: {message}"),
        };
        if cache.dtype != self.dtype {
            return Err(shape_error(format!(
                "kernel built for a {:?} cache, cache is {:?}",
                self.dtype, cache.dtype
            )));
        }
        let hd = cfg.head_dim;
        if hd == 0 || !hd.is_multiple_of(4) || hd > MAX_HEAD_DIM {
            return Err(shape_error(format!(
                "head_dim {hd} must be a multiple of 4 and at most {MAX_HEAD_DIM}"
            )));
        }
        if cfg.kv_heads == 0 || !cfg.heads.is_multiple_of(cfg.kv_heads) {
            return Err(shape_error(format!(
                "{} query heads are not a multiple of {} kv heads",
                cfg.heads, cfg.kv_heads
            )));
        }
        if cache.kv_dim != cfg.kv_heads * hd {
            return Err(shape_error(format!(
                "cache rows hold {} values, kv_heads * head_dim is {}",
                cache.kv_dim,
                cfg.kv_heads * hd
            )));
        }
        check_len("attention", "positions", positions, n_q)?;
        check_len("attention", "q", q, n_q * cfg.heads * hd)?;
        check_len("attention", "out", out, n_q * cfg.heads * hd)?;
        let max_keys = cfg.window.unwrap_or(usize::MAX).min(cache.capacity);
        let split_len = Self::split_len(gpu, n_q, cfg.heads, max_keys);
        let n_splits = max_keys.div_ceil(split_len);
        let params = AttentionParams {
            n_q: n_q as u32,
            heads: cfg.heads as u32,
            kv_heads: cfg.kv_heads as u32,
            head_dim: hd as u32,
            capacity: cache.capacity as u32,
            window: cfg.window.map_or(u32::MAX, |w| w as u32),
            split_len: split_len as u32,
            n_splits: n_splits as u32,
            scale: cfg.scale,
            softcap: cfg.softcap.unwrap_or(0.0),
        };
        let partials = gpu.storage_zeroed(
            &format!("{label}.partials"),
            (n_q * cfg.heads * n_splits * (hd + 2) * 4) as u64,
        );
        let buffers = [positions, q, &cache.k, &cache.v, &partials, out];
        let bytes = bytemuck::bytes_of(&params);
        Ok(vec![
            self.partial.bind(
                gpu,
                &format!("{label}.partial"),
                bytes,
                &buffers,
                (n_splits as u32, cfg.heads as u32, n_q as u32),
            )?,
            self.combine.bind(
                gpu,
                &format!("{label}.combine"),
                bytes,
                &buffers,
                (cfg.heads as u32, n_q as u32, 1),
            )?,
        ])
    }
}
