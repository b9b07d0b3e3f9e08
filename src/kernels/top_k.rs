//! top_k: the k largest logits and their ids on the GPU, argmax being k = 1
//! (shaders/top_k.wgsl: phases `partial` and `merge`).

use super::{Dispatch, check_len, groups, params, source};
use crate::gpu::{Access, Gpu, Kernel};
use crate::{Error, Result};

params! {
    pub struct TopKParams {
        pub n: u32,
        pub k: u32,
        pub slice: u32,
        pub n_slices: u32,
    }
}

const WG: u32 = 256;
/// Elements ranked by one workgroup in the first phase.
const SLICE: u32 = 4096;
/// Largest k: sampling needs a few dozen candidates. Each invocation of the first phase keeps
/// a private list of this length (top_k.wgsl's MAX_K).
pub const MAX_K: usize = 64;

pub struct TopK {
    partial: Kernel,
    merge: Kernel,
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
        let access = [
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::ReadWrite,
        ];
        let build = |entry, wg: u32| {
            source::build(
                gpu,
                &source::TOP_K,
                entry,
                None,
                &access,
                &[("WG", wg as f64)],
            )
        };
        // CPU adapters: a slice per single-invocation workgroup, so its k rounds need no
        // barriers (each costs a CPU a switch through every invocation of the workgroup):
        // 256000 logits, k = 40 on lavapipe: 136 ms -> 16 ms.
        let partial_wg = if gpu.caps.cpu_like { 1 } else { WG };
        Ok(TopK {
            partial: build("partial", partial_wg)?,
            merge: build("merge", WG)?,
        })
    }

    /// The k largest of x[..n], largest first.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        x: &wgpu::Buffer,
        n: usize,
        k: usize,
    ) -> Result<TopKOutput> {
        if k == 0 || k > MAX_K || n == 0 {
            return Err(Error::Shape {
                kernel: "top_k",
                message: format!("{label}: k = {k} of n = {n}; need 1 <= k <= {MAX_K}, n >= 1"),
            });
        }
        check_len("top_k", "x", x, n)?;
        let n_slices = groups(n, SLICE);
        let params = TopKParams {
            n: n as u32,
            k: k as u32,
            slice: SLICE,
            n_slices,
        };
        let cand = (n_slices as usize * k * 4) as u64;
        let cand_val = gpu.storage_zeroed(&format!("{label}.cand_val"), cand);
        let cand_idx = gpu.storage_zeroed(&format!("{label}.cand_idx"), cand);
        let values = gpu.storage_zeroed(&format!("{label}.values"), k as u64 * 4);
        let indices = gpu.storage_zeroed(&format!("{label}.indices"), k as u64 * 4);
        let buffers = [x, &cand_val, &cand_idx, &values, &indices];
        let bytes = bytemuck::bytes_of(&params);
        let dispatches = vec![
            self.partial.bind(
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
            values,
            indices,
            k,
        })
    }
}
