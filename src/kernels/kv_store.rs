//! kv_store: new keys and values into the KV cache (shaders/kv_store.wgsl).

use super::{Dispatch, bindings, check_len, groups, params, source};
use crate::gpu::{Caps, Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct KvStoreParams {
        pub n: u32,
        pub kv_dim: u32,
        pub capacity: u32,
    }
}

bindings! {
    pub struct KvStoreBuffers {
        /// \[n\] u32: token t's position (its row is position % capacity)
        pub positions: Read,
        /// [n, kv_dim]
        pub k: Read,
        /// [n, kv_dim]
        pub v: Read,
        /// [capacity, kv_dim] of the cache's element type
        pub k_cache: ReadWrite,
        /// [capacity, kv_dim]
        pub v_cache: ReadWrite,
    }
}

/// What one kv_store dispatch stores: k and v [n, kv_dim] of the tokens at `positions`.
pub struct KvStoreArgs<'a> {
    pub n: usize,
    /// \[n\] u32
    pub positions: &'a wgpu::Buffer,
    /// [n, kv_dim]
    pub k: &'a wgpu::Buffer,
    /// [n, kv_dim]
    pub v: &'a wgpu::Buffer,
    pub cache: &'a KvCache,
}

const WG: u32 = 256;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDtype {
    /// Packed f16 pairs: half the memory and bandwidth, 11-bit mantissa.
    F16,
    F32,
}

impl KvDtype {
    /// f16 where the adapter has SHADER_F16 (it handles half precision natively), else f32.
    pub fn default_for(caps: &Caps) -> KvDtype {
        if caps.f16 { KvDtype::F16 } else { KvDtype::F32 }
    }

    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }

    pub(crate) fn is_f16(self) -> f64 {
        (self == KvDtype::F16) as u8 as f64
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f16" => Ok(KvDtype::F16),
            "f32" => Ok(KvDtype::F32),
            other => Err(format!(
                "unknown KV cache type `{other}`: expected f16 or f32"
            )),
        }
    }
}

/// One layer's cache: keys and values, [capacity, kv_dim] each.
pub struct KvCache {
    pub dtype: KvDtype,
    pub capacity: usize,
    pub kv_dim: usize,
    pub k: wgpu::Buffer,
    pub v: wgpu::Buffer,
}

impl KvCache {
    pub fn new(
        gpu: &Gpu,
        label: &str,
        dtype: KvDtype,
        capacity: usize,
        kv_dim: usize,
    ) -> Result<KvCache> {
        let bytes = (capacity * kv_dim * dtype.bytes()) as u64;
        if bytes > gpu.caps.max_binding_size {
            return Err(Error::TooLarge {
                what: format!("{label}: KV cache of {capacity} positions x {kv_dim}"),
                needed: bytes,
                allowed: gpu.caps.max_binding_size,
            });
        }
        Ok(KvCache {
            dtype,
            capacity,
            kv_dim,
            // Padded to whole 32-byte words, which attention may read them as.
            k: gpu.storage_zeroed(&format!("{label}.k"), bytes.next_multiple_of(32)),
            v: gpu.storage_zeroed(&format!("{label}.v"), bytes.next_multiple_of(32)),
        })
    }
}

pub struct KvStore {
    kernel: Kernel,
    dtype: KvDtype,
}

impl KvStore {
    pub fn new(gpu: &Gpu, dtype: KvDtype) -> Result<KvStore> {
        let kernel = source::build(
            gpu,
            &source::KV_STORE,
            "main",
            None,
            None,
            &[("WG", WG as f64), ("KV_F16", dtype.is_f16())],
        )?;
        Ok(KvStore { kernel, dtype })
    }

    /// Stores k and v [n, kv_dim] of the tokens at `positions` into `cache`.
    pub fn bind(&self, gpu: &Gpu, label: &str, args: KvStoreArgs) -> Result<Dispatch> {
        let KvStoreArgs {
            n,
            positions,
            k,
            v,
            cache,
        } = args;
        if cache.dtype != self.dtype || !cache.kv_dim.is_multiple_of(2) {
            return Err(Error::Shape {
                kernel: "kv_store",
                message: format!(
                    "kernel built for {:?}, cache is {:?} with kv_dim {} (must be even)",
                    self.dtype, cache.dtype, cache.kv_dim
                ),
            });
        }
        check_len("kv_store", "positions", positions, n)?;
        check_len("kv_store", "k", k, n * cache.kv_dim)?;
        check_len("kv_store", "v", v, n * cache.kv_dim)?;
        let params = KvStoreParams {
            n: n as u32,
            kv_dim: cache.kv_dim as u32,
            capacity: cache.capacity as u32,
        };
        let (gx, gy) = gpu.grid_2d(groups(n * cache.kv_dim / 2, WG));
        self.kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &KvStoreBuffers {
                positions,
                k,
                v,
                k_cache: &cache.k,
                v_cache: &cache.v,
            },
            (gx, gy, 1),
        )
    }
}
