//! attention: Gemma 2 attention against the KV cache, split over the keys
//! (shaders/attention.wgsl: phases `partial` and `combine`).

use super::kv_store::{KvCache, KvDtype};
use super::matrix::decode_x_quantized_apart;
use super::rope::RopeTable;
use super::{Dispatch, bindings, check_len, params, quantize_q8, source};
use crate::config::AttentionShape;
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};
use std::sync::OnceLock;

params! {
    pub struct AttentionParams {
        pub n_q: u32,
        pub heads: u32,
        pub kv_heads: u32,
        pub head_dim: u32,
        pub capacity: u32,
        /// Sliding window; u32::MAX for global layers.
        pub window: u32,
        /// Query heads one workgroup serves (see `group_heads` below).
        pub group_heads: u32,
        /// Queries whose heads share one set of the shader's four columns (see
        /// `set_queries` below).
        pub set_queries: u32,
        pub n_splits: u32,
        pub scale: f32,
        /// 0 disables the soft-cap.
        pub softcap: f32,
        /// Floats per query row of q: heads * head_dim, or with rope folded in the q|k|v row.
        pub q_stride: u32,
        /// Rope folded in: the table's positions, the q/k norms' eps and weight offset.
        pub max_pos: u32,
        pub eps: f32,
        pub w_offset: f32,
    }
}

bindings! {
    pub struct AttentionBuffers {
        /// \[n_q\] u32: query t's position
        pub positions: Read,
        /// [n_q, heads, head_dim], rotated
        pub q: Read,
        /// [capacity, kv_heads * head_dim]: a [`KvCache`]'s keys (written by the kernel that
        /// folds rope_store in)
        pub k_cache: ReadWrite,
        /// [capacity, kv_heads * head_dim]: its values
        pub v_cache: ReadWrite,
        /// [n_q, heads, n_splits, head_dim + 2]: each split's weighted values, max and sum
        pub partials: ReadWrite,
        /// [n_q, heads, head_dim]
        pub out: ReadWrite,
        /// [n_q * heads * head_dim / 32 * 24] words: out quantized as kernels::QuantizeQ8
        /// writes it (written by the dispatches bound with `AttentionArgs::out_q` only; any
        /// buffer otherwise)
        pub out_q: ReadWrite,
    }
}

bindings! {
    /// [`AttentionBuffers`] and the two of rope_store's that attention needs to fold it in
    /// (shaders/common/attention_rope.wgsl).
    pub struct AttentionRopeBuffers {
        /// \[1\] u32: the query's position
        pub positions: Read,
        /// [1, heads * head_dim + 2 kv_dim]: the q|k|v products' row, as rope_store reads it
        pub q: Read,
        pub k_cache: ReadWrite,
        pub v_cache: ReadWrite,
        pub partials: ReadWrite,
        pub out: ReadWrite,
        pub out_q: ReadWrite,
        /// [max_pos, head_dim / 2] (cos, sin) pairs: a [`RopeTable`]'s buffer
        pub rope_table: Read,
        /// [2, head_dim]: the q norm's weights, then the k norm's (read only with norms)
        pub qk_norms: Read,
    }
}

/// rope_store's work, folded into a decode step's attention (see [`Attention::folds_rope`]):
/// `AttentionArgs::q` is then the q|k|v products' row [1, heads * head_dim + 2 kv_dim], q
/// and k are normed (`norms`: [2, head_dim] weights, q's then k's, with eps and weight
/// offset, where the model norms each head) and rotated with `table`, and the position's k
/// and v are stored into the cache, as [`super::RopeStore`] does.
#[derive(Clone, Copy)]
pub struct FoldedRope<'a> {
    pub table: &'a RopeTable,
    pub norms: Option<(&'a wgpu::Buffer, f32, f32)>,
}

/// `partial_rope`'s buffers: `buffers` and the rope's.
fn rope_buffers<'a>(buffers: &AttentionBuffers<'a>, r: FoldedRope<'a>) -> AttentionRopeBuffers<'a> {
    let AttentionBuffers {
        positions,
        q,
        k_cache,
        v_cache,
        partials,
        out,
        out_q,
    } = *buffers;
    AttentionRopeBuffers {
        positions,
        q,
        k_cache,
        v_cache,
        partials,
        out,
        out_q,
        rope_table: &r.table.buffer,
        // Without norms the binding is never read: the table stands in for it.
        qk_norms: r.norms.map_or(&r.table.buffer, |n| n.0),
    }
}

/// What one attention binds: `n_q` queries q at `positions` over `cache`, with the shape and
/// rules of `shape`, into `out`; `partials` holds at least [`Attention::partials_len`] values.
pub struct AttentionArgs<'a> {
    pub n_q: usize,
    pub shape: &'a AttentionShape,
    /// \[n_q\] u32
    pub positions: &'a wgpu::Buffer,
    /// [n_q, heads, head_dim]
    pub q: &'a wgpu::Buffer,
    pub cache: &'a KvCache,
    /// Scratch of the split-K phases, allocated once by the caller.
    pub partials: &'a wgpu::Buffer,
    /// [n_q, heads, head_dim]
    pub out: &'a wgpu::Buffer,
    /// Where to write out quantized to int8 blocks of 32 as well (as kernels::QuantizeQ8
    /// would), for an o_proj that reads x so: where [`Attention::quantizes_out`] says the
    /// adapter has the kernels that do (CPU adapters, whose decode products take int8 x
    /// after a quantize_q8 pass that this spares them).
    pub out_q: Option<&'a wgpu::Buffer>,
    /// rope_store folded in, where [`Attention::folds_rope`] says the kernel can.
    pub rope: Option<FoldedRope<'a>>,
}

/// Invocations per workgroup.
const WG: u32 = 64;
// The kernel that folds rope_store in sums each head's squares as rope_store does, over as
// many invocations, so that its q and k are rope_store's bit for bit.
const _: () = assert!(WG == super::rope_store::WG);

/// Keys one invocation scores per step of the online softmax (the shader's KPL): a run of
/// four on CPU adapters, which then walk four key rows and load each query element once for
/// them; one on GPUs, where neighbouring invocations read neighbouring keys. WG times this
/// is at most the shader's MAX_STEP.
fn keys_per_invocation(gpu: &Gpu) -> u32 {
    if gpu.caps.cpu_like { 4 } else { 1 }
}
/// Whether a prefill workgroup's query elements and probabilities are loaded by the first 8
/// lanes of each subgroup and handed to the others (the shader's SPREAD_Q), where one lane
/// loaded each for its subgroup: on CPU adapters, where every load is a scalar load per lane,
/// with subgroups of 8 lanes or more. The 270M's prefill attention at 448..511 on lavapipe,
/// three alternated runs: 226-289 -> 192-233 ms; decode attention measured slower with it
/// (7.4-8.4 -> 9.9-18 ms after 512 positions), so decode keeps one lane's loads.
fn spread_queries(gpu: &Gpu) -> bool {
    gpu.caps.cpu_like && gpu.caps.min_subgroup_size >= 8
}
/// Query heads of one kv head that a workgroup serves at most (the shader's MAX_GROUP_HEADS).
const MAX_GROUP_HEADS: usize = 4;

/// Query heads per workgroup: the largest divisor of the GQA group (heads per kv head) up to
/// [`MAX_GROUP_HEADS`], so each key and value row is read once for all of them.
fn group_heads(cfg: &AttentionShape) -> usize {
    let group = cfg.heads / cfg.kv_heads;
    (1..=MAX_GROUP_HEADS.min(group))
        .rev()
        .find(|d| group.is_multiple_of(*d))
        .unwrap_or(1)
}
/// The shader keeps one head in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;
/// head_dim is a multiple of this: the shader loads a key's elements 8 at a time (16 bytes
/// of an f16 cache row).
pub const HEAD_DIM_MULTIPLE: usize = 8;

/// Sets of columns one prefill workgroup serves (the shader's QPW) where the adapter takes
/// it: two sets of neighbouring queries share every key and value row loaded, on CPU
/// adapters, where each load costs a bounds-checked scalar load per invocation. GPUs keep one
/// query per workgroup: at 64-token steps, pairs would halve the workgroups that fill the
/// device (not measured).
fn queries_per_workgroup(gpu: &Gpu) -> usize {
    if gpu.caps.cpu_like && gpu.caps.max_workgroup_storage >= PAIR_WORKGROUP_BYTES {
        2
    } else {
        1
    }
}

/// Queries per set of four columns in a prefill workgroup serving pairs of sets: as many
/// as their heads fit, so that Gemma 2's two query heads per kv head are joined by the next
/// query's two and every key and value row loaded serves four query heads, not two. One
/// everywhere else (decode, GPUs).
fn set_queries(cfg: &AttentionShape) -> usize {
    (MAX_GROUP_HEADS / group_heads(cfg)).max(1)
}

/// Workgroup memory of the shader with QPW = 2 at most: 8 KiB per query (its queries and a
/// step's probabilities), 4 KiB to stage a quantized output and a workgroup-memory
/// reduction's 5 KiB.
const PAIR_WORKGROUP_BYTES: u32 = 2 * 8 * 1024 + 4 * 1024 + 5 * 1024;

pub struct Attention {
    partial: Kernel,
    /// `partial` for two queries per workgroup (prefill steps without key splits).
    partial_pair: Option<Kernel>,
    combine: Kernel,
    /// `partial` (one query per workgroup) and `combine` also writing out quantized
    /// (`AttentionArgs::out_q`), on adapters whose decode products read x so.
    quantizing: Option<(Kernel, Kernel)>,
    /// `partial_rope` (rope_store folded in) by (norms, quantized out), built when first bound.
    rope: [OnceLock<Kernel>; 4],
    dtype: KvDtype,
}

/// Storage buffers of the kernel that folds rope_store in.
const ROPE_STORAGE_BUFFERS: u32 = 9;

impl Attention {
    pub fn new(gpu: &Gpu, dtype: KvDtype) -> Result<Attention> {
        let constants = [
            ("WG", WG as f64),
            ("KV_F16", dtype.is_f16()),
            ("KPL", keys_per_invocation(gpu) as f64),
        ];
        let build = |entry, qpw: usize, quant: bool| {
            let mut constants = constants.to_vec();
            constants.push(("QPW", qpw as f64));
            let spread = qpw > 1 && spread_queries(gpu);
            constants.push(("SPREAD_Q", spread as u8 as f64));
            constants.push(("QUANT_OUT", quant as u8 as f64));
            let variant = match (qpw > 1, quant) {
                (true, _) => Some("pair"),
                (false, true) => Some("quant"),
                (false, false) => None,
            };
            source::build(gpu, &source::ATTENTION, entry, None, variant, &constants)
        };
        let pairs = queries_per_workgroup(gpu);
        let quantizing = match decode_x_quantized_apart(gpu) {
            true => Some((build("partial", 1, true)?, build("combine", 1, true)?)),
            false => None,
        };
        Ok(Attention {
            partial: build("partial", 1, false)?,
            partial_pair: if pairs > 1 {
                Some(build("partial", pairs, false)?)
            } else {
                None
            },
            combine: build("combine", 1, false)?,
            quantizing,
            rope: Default::default(),
            dtype,
        })
    }

    /// Whether one query of shape `cfg` can have rope_store's work folded into its attention
    /// ([`AttentionArgs::rope`]): one workgroup per kv head serves its whole group of query
    /// heads, and the adapter binds the nine storage buffers that takes.
    pub fn folds_rope(gpu: &Gpu, cfg: &AttentionShape) -> bool {
        gpu.caps.max_storage_buffers >= ROPE_STORAGE_BUFFERS
            && cfg.kv_heads > 0
            && group_heads(cfg) == cfg.heads / cfg.kv_heads
    }

    /// The `partial_rope` kernel with or without norms and a quantized output.
    fn rope_kernel(&self, gpu: &Gpu, norms: bool, quant: bool) -> Result<&Kernel> {
        let cell = &self.rope[2 * norms as usize + quant as usize];
        if let Some(k) = cell.get() {
            return Ok(k);
        }
        let constants = [
            ("WG", WG as f64),
            ("KV_F16", self.dtype.is_f16()),
            ("KPL", keys_per_invocation(gpu) as f64),
            ("QPW", 1.0),
            ("SPREAD_Q", 0.0),
            ("QUANT_OUT", quant as u8 as f64),
            ("ROPE_NORM", norms as u8 as f64),
        ];
        let variant = match (norms, quant) {
            (false, false) => None,
            (false, true) => Some("quant"),
            (true, false) => Some("norm"),
            (true, true) => Some("norm.quant"),
        };
        let kernel = source::build(
            gpu,
            &source::ATTENTION_ROPE,
            "partial_rope",
            None,
            variant,
            &constants,
        )?;
        Ok(cell.get_or_init(|| kernel))
    }

    /// Whether [`Attention::bind`] takes `AttentionArgs::out_q` (see there).
    pub fn quantizes_out(&self) -> bool {
        self.quantizing.is_some()
    }

    /// Keys per split at the longest: enough splits to occupy the device when there are few
    /// queries, never fewer keys than a workgroup scores in one step. The shader cuts a query's
    /// visible keys into as many splits, sized to its position.
    fn split_len(gpu: &Gpu, n_q: usize, workgroups_per_query: usize, max_keys: usize) -> usize {
        let workgroups = n_q * workgroups_per_query;
        let parallel = if gpu.caps.cpu_like {
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
        } else {
            1024
        };
        let splits = parallel.div_ceil(workgroups).max(1);
        let step = (WG * keys_per_invocation(gpu)) as usize;
        max_keys.div_ceil(splits).next_multiple_of(step).max(step)
    }

    /// Keys a query can see at most, and the splits they are scored in.
    fn splits(gpu: &Gpu, n_q: usize, cfg: &AttentionShape, capacity: usize) -> (usize, usize) {
        let max_keys = cfg.window.unwrap_or(usize::MAX).min(capacity);
        let split_len = Self::split_len(gpu, n_q, cfg.heads / group_heads(cfg), max_keys);
        (split_len, max_keys.div_ceil(split_len))
    }

    /// Whether `n_q` queries are served in pairs of sets per workgroup (2 set_queries per
    /// workgroup): when there are two or more and that many fewer workgroups still need no
    /// key splits.
    fn pairs(gpu: &Gpu, n_q: usize, cfg: &AttentionShape, capacity: usize) -> bool {
        let max_keys = cfg.window.unwrap_or(usize::MAX).min(capacity);
        let workgroups = cfg.heads / group_heads(cfg);
        let per_workgroup = 2 * set_queries(cfg);
        n_q > 1
            && Self::split_len(gpu, n_q.div_ceil(per_workgroup), workgroups, max_keys) >= max_keys
    }

    /// Values the `partials` scratch must hold for `n_q` queries of shape `cfg` over a cache
    /// of `capacity` positions on this device.
    pub fn partials_len(gpu: &Gpu, n_q: usize, cfg: &AttentionShape, capacity: usize) -> usize {
        let (_, n_splits) = Self::splits(gpu, n_q, cfg, capacity);
        n_q * cfg.heads * n_splits * (cfg.head_dim + 2)
    }

    /// A zeroed `partials` scratch of [`Self::partials_len`] values.
    pub fn partials(
        gpu: &Gpu,
        label: &str,
        n_q: usize,
        cfg: &AttentionShape,
        capacity: usize,
    ) -> wgpu::Buffer {
        let len = Self::partials_len(gpu, n_q, cfg, capacity);
        gpu.storage_zeroed(label, (len * 4) as u64)
    }

    /// out [n_q, heads, head_dim] = attention of q [n_q, heads, head_dim] (rotated) at
    /// `positions` \[n_q\] over `cache`, with the shape and rules of `shape` (as the
    /// reference). Every visible key must be in the cache: the range of positions a query
    /// sees (its window, or everything before it) must fit `capacity`.
    pub fn bind(&self, gpu: &Gpu, label: &str, args: AttentionArgs) -> Result<Vec<Dispatch>> {
        self.check_shape(label, args.shape, args.cache)?;
        self.check_buffers(gpu, &args)?;
        let AttentionArgs {
            n_q,
            shape: cfg,
            positions,
            q,
            cache,
            partials,
            out,
            out_q,
            rope,
        } = args;
        let (_, n_splits) = Self::splits(gpu, n_q, cfg, cache.capacity);
        let group_heads = group_heads(cfg);
        let (partial, qpw, set_queries, combine) = match (&self.quantizing, &self.partial_pair) {
            (Some((partial, combine)), _) if out_q.is_some() => (partial, 1, 1, combine),
            (_, Some(pair)) if Self::pairs(gpu, n_q, cfg, cache.capacity) => {
                (pair, 2, set_queries(cfg), &self.combine)
            }
            _ => (&self.partial, 1, 1, &self.combine),
        };
        let params = AttentionParams {
            n_q: n_q as u32,
            heads: cfg.heads as u32,
            kv_heads: cfg.kv_heads as u32,
            head_dim: cfg.head_dim as u32,
            capacity: cache.capacity as u32,
            window: cfg.window.map_or(u32::MAX, |w| w as u32),
            group_heads: group_heads as u32,
            set_queries: set_queries as u32,
            n_splits: n_splits as u32,
            scale: cfg.scale,
            softcap: cfg.softcap.unwrap_or(0.0),
            q_stride: match rope {
                Some(_) => cfg.heads * cfg.head_dim + 2 * cache.kv_dim,
                None => cfg.heads * cfg.head_dim,
            } as u32,
            max_pos: rope.map_or(0, |r| r.table.max_pos as u32),
            eps: rope.and_then(|r| r.norms).map_or(0.0, |n| n.1),
            w_offset: rope.and_then(|r| r.norms).map_or(0.0, |n| n.2),
        };
        let buffers = AttentionBuffers {
            positions,
            q,
            k_cache: &cache.k,
            v_cache: &cache.v,
            partials,
            out,
            // Without a quantized output the kernels do not write it.
            out_q: out_q.unwrap_or(out),
        };
        let bytes = bytemuck::bytes_of(&params);
        let grid = (
            n_splits as u32,
            (cfg.heads / group_heads) as u32,
            n_q.div_ceil(qpw * set_queries) as u32,
        );
        let first = match rope {
            None => partial.bind(gpu, &format!("{label}.partial"), bytes, &buffers, grid)?,
            Some(r) => {
                let kernel = self.rope_kernel(gpu, r.norms.is_some(), out_q.is_some())?;
                let label = format!("{label}.partial_rope");
                kernel.bind(gpu, &label, bytes, &rope_buffers(&buffers, r), grid)?
            }
        };
        let mut d = vec![first];
        // One split: `partial` writes the output itself.
        if n_splits > 1 {
            let grid = (cfg.heads as u32, n_q as u32, 1);
            d.push(combine.bind(gpu, &format!("{label}.combine"), bytes, &buffers, grid)?);
        }
        Ok(d)
    }

    /// Refuses a cache of another dtype, a head width the shader cannot hold, query heads
    /// that are not a multiple of the kv heads, and cache rows of another width.
    fn check_shape(&self, label: &str, cfg: &AttentionShape, cache: &KvCache) -> Result<()> {
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
        if hd == 0 || !hd.is_multiple_of(HEAD_DIM_MULTIPLE) || hd > MAX_HEAD_DIM {
            return Err(shape_error(format!(
                "head_dim {hd} must be a multiple of {HEAD_DIM_MULTIPLE} and at most {MAX_HEAD_DIM}"
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
        Ok(())
    }

    /// Checks that each buffer of `args` holds what the call reads or writes.
    fn check_buffers(&self, gpu: &Gpu, args: &AttentionArgs) -> Result<()> {
        let (n_q, cfg) = (args.n_q, args.shape);
        let hd = cfg.head_dim;
        check_len("attention", "positions", args.positions, n_q)?;
        let mut row = cfg.heads * hd;
        if let Some(rope) = args.rope {
            let refuse = |message: String| Error::Shape {
                kernel: "attention",
                message,
            };
            if n_q != 1 || !Self::folds_rope(gpu, cfg) {
                return Err(refuse(format!(
                    "rope_store cannot be folded into the attention of {n_q} queries of {} \
                     heads over {} kv heads on this adapter",
                    cfg.heads, cfg.kv_heads
                )));
            }
            if rope.table.head_dim != hd {
                return Err(refuse(format!(
                    "a RoPE table for head_dim {}, heads of {hd}",
                    rope.table.head_dim
                )));
            }
            check_len(
                "attention",
                "rope_table",
                &rope.table.buffer,
                rope.table.max_pos * hd,
            )?;
            if let Some((norms, _, _)) = rope.norms {
                check_len("attention", "qk_norms", norms, 2 * hd)?;
            }
            row += 2 * args.cache.kv_dim;
        }
        check_len("attention", "q", args.q, n_q * row)?;
        check_len("attention", "out", args.out, n_q * cfg.heads * hd)?;
        if let Some(out_q) = args.out_q {
            let what = "attention";
            if !self.quantizes_out() {
                return Err(Error::Shape {
                    kernel: what,
                    message: "this adapter's attention does not write out quantized".into(),
                });
            }
            quantize_q8::check_quantized(what, "out_q", out_q, (n_q * cfg.heads * hd, hd))?;
        }
        check_len(
            "attention",
            "partials",
            args.partials,
            Self::partials_len(gpu, n_q, cfg, args.cache.capacity),
        )
    }
}
