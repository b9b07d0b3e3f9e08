//! top_k: the k largest logits and their ids on the GPU, argmax being k = 1
//! (shaders/top_k.wgsl: phases `partial` and `merge`).

use super::{Dispatch, bindings, check_len, groups, params, source};
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct TopKParams {
        pub n: u32,
        pub k: u32,
        pub slice: u32,
        pub n_slices: u32,
        /// Ranks cap * tanh(x / cap) when > 0.
        pub cap: f32,
    }
}

bindings! {
    pub struct TopKBuffers {
        /// \[n\]
        pub x: Read,
        /// [n_slices, k]: each slice's k best values
        pub cand_val: ReadWrite,
        /// [n_slices, k]: and their indices
        pub cand_idx: ReadWrite,
        /// \[k\], largest first
        pub values: ReadWrite,
        /// \[k\] u32
        pub indices: ReadWrite,
    }
}

const WG: u32 = 256;
/// Elements ranked by one workgroup in the first phase on GPUs. CPU adapters cut n into two
/// slices per thread instead: a slice's invocation offers an element to its list only when
/// it beats the list's last, so fewer, longer slices cost fewer insertions (262144 logits on
/// lavapipe, k = 64: slices of 4096 9.5 ms, of 16384 4.0 ms, 4 slices 1.7 ms).
const SLICE: u32 = 4096;

/// (slice length, slices) for n elements on this device.
fn slices(gpu: &Gpu, n: usize) -> (u32, u32) {
    if gpu.caps.cpu_like {
        let threads = std::thread::available_parallelism().map_or(2, |t| t.get());
        let slice = n.div_ceil(2 * threads).max(1) as u32;
        (slice, groups(n, slice))
    } else {
        (SLICE, groups(n, SLICE))
    }
}
/// Largest k: sampling needs a few dozen candidates. Each invocation of the first phase keeps
/// a private list of this length (top_k.wgsl's MAX_K).
pub const MAX_K: usize = 64;

pub struct TopK {
    partial: Kernel,
    /// The partial phase for k = 1 (argmax).
    partial_argmax: Kernel,
    merge: Kernel,
}

/// The buffers top-k writes, allocated once by the caller for a given n and k (or more).
pub struct TopKScratch {
    /// [n_slices, k]
    pub cand_val: wgpu::Buffer,
    /// [n_slices, k] u32
    pub cand_idx: wgpu::Buffer,
    /// \[k\]
    pub values: wgpu::Buffer,
    /// \[k\] u32
    pub indices: wgpu::Buffer,
}

impl TopKScratch {
    /// Zeroed buffers for the k largest of n values.
    pub fn new(gpu: &Gpu, label: &str, n: usize, k: usize) -> TopKScratch {
        let f =
            |what: &str, len: usize| gpu.storage_zeroed(&format!("{label}.{what}"), len as u64 * 4);
        let cand = TopK::candidates_len(gpu, n, k);
        TopKScratch {
            cand_val: f("cand_val", cand),
            cand_idx: f("cand_idx", cand),
            values: f("values", k),
            indices: f("indices", k),
        }
    }
}

/// Bound top-k: its dispatches and where the result lands (\[k\] values, \[k\] indices).
pub struct TopKOutput {
    pub dispatches: Vec<Dispatch>,
    pub values: wgpu::Buffer,
    pub indices: wgpu::Buffer,
    pub k: usize,
}

impl TopK {
    pub fn new(gpu: &Gpu) -> Result<TopK> {
        let build = |entry, wg: u32, variant| {
            source::build(
                gpu,
                &source::TOP_K,
                entry,
                None,
                variant,
                &[("WG", wg as f64)],
            )
        };
        // CPU adapters: a slice per single-invocation workgroup, so its k rounds need no
        // barriers (each costs a CPU a switch through every invocation of the workgroup):
        // 256000 logits, k = 40 on lavapipe: 136 ms -> 16 ms; and one invocation merging the
        // slices' lists in one pass rather than k rounds over every candidate (k = 40:
        // 8.2 -> 4.9 ms, k = 64: 15.8 -> 9.5 ms). For k = 1 one SIMD row of 8 invocations per
        // slice does better (0.86 -> 0.38 ms on 262144 logits), where k > 1 does worse.
        let (wg, argmax_wg) = if gpu.caps.cpu_like { (1, 8) } else { (WG, WG) };
        Ok(TopK {
            partial: build("partial", wg, None)?,
            partial_argmax: build("partial", argmax_wg, Some("argmax"))?,
            merge: build("merge", wg, None)?,
        })
    }

    /// Values each of `cand_val` and `cand_idx` must hold for the k largest of n.
    pub fn candidates_len(gpu: &Gpu, n: usize, k: usize) -> usize {
        slices(gpu, n).1 as usize * k
    }

    /// The k largest of x[..n], largest first, into `scratch` (see [`TopKScratch::new`]); with
    /// `cap`, of cap * tanh(x / cap) (a final logit soft-cap, folded in).
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        (x, n, cap): (&wgpu::Buffer, usize, Option<f32>),
        k: usize,
        scratch: &TopKScratch,
    ) -> Result<TopKOutput> {
        if k == 0 || k > MAX_K || n == 0 {
            return Err(Error::Shape {
                kernel: "top_k",
                message: format!("{label}: k = {k} of n = {n}; need 1 <= k <= {MAX_K}, n >= 1"),
            });
        }
        check_len("top_k", "x", x, n)?;
        let (slice, n_slices) = slices(gpu, n);
        let params = TopKParams {
            n: n as u32,
            k: k as u32,
            slice,
            n_slices,
            cap: cap.unwrap_or(0.0),
        };
        let cand = Self::candidates_len(gpu, n, k);
        check_len("top_k", "cand_val", &scratch.cand_val, cand)?;
        check_len("top_k", "cand_idx", &scratch.cand_idx, cand)?;
        check_len("top_k", "values", &scratch.values, k)?;
        check_len("top_k", "indices", &scratch.indices, k)?;
        let buffers = TopKBuffers {
            x,
            cand_val: &scratch.cand_val,
            cand_idx: &scratch.cand_idx,
            values: &scratch.values,
            indices: &scratch.indices,
        };
        let bytes = bytemuck::bytes_of(&params);
        let dispatches = vec![
            if k == 1 {
                &self.partial_argmax
            } else {
                &self.partial
            }
            .bind(
                gpu,
                &format!("{label}.partial"),
                bytes,
                &buffers,
                (n_slices, 1, 1),
            )?,
            self.merge
                .bind(gpu, &format!("{label}.merge"), bytes, &buffers, (1, 1, 1))?,
        ];
        Ok(TopKOutput {
            dispatches,
            values: scratch.values.clone(),
            indices: scratch.indices.clone(),
            k,
        })
    }
}
