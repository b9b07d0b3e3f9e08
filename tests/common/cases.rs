//! One problem per op, shared by the kernel tests (tests/kernels) and the kernel benchmarks
//! (benches/kernels.rs): the shape, seeded random inputs, the CPU reference with its named
//! tolerance, and the bound GPU kernel. A benchmark row is checked against the reference
//! exactly as the test checks it before it is timed.

#![allow(dead_code)]

use gemma_wgpu::gpu::{Dispatch, Gpu};
use gemma_wgpu::kernels::add::AddBuffers;
use gemma_wgpu::kernels::attention::AttentionArgs;
use gemma_wgpu::kernels::embedding::EmbeddingArgs;
use gemma_wgpu::kernels::fma::{CHAINS, FmaBuffers};
use gemma_wgpu::kernels::geglu::GegluBuffers;
use gemma_wgpu::kernels::kv_store::{KvCache, KvStoreArgs};
use gemma_wgpu::kernels::log_prob::LogProbBuffers;
use gemma_wgpu::kernels::matrix::MatrixArgs;
use gemma_wgpu::kernels::residual_norm::{NormOutput, ResidualNormBuffers};
use gemma_wgpu::kernels::rms_norm::{RmsNormBuffers, RmsNormParams};
use gemma_wgpu::kernels::rope_store::RopeStoreArgs;
use gemma_wgpu::kernels::soft_cap::SoftCapBuffers;
use gemma_wgpu::kernels::{
    Add, Attention, Embedding, Fma, Geglu, GpuMatrix, KvDtype, KvStore, LogProb, Matmul, Matvec,
    ResidualNorm, RmsNorm, RopeStore, RopeTable, SoftCap, TopK, TopKScratch,
};
use gemma_wgpu::reference::{self, AttentionShape};
use gemma_wgpu::weights::gguf::GgmlType;
use gemma_wgpu::weights::{HostMatrix, WeightFormat};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use std::ops::Range;

/// f32 unit roundoff.
pub const EPS: f32 = f32::EPSILON / 2.0;

/// Absolute error allowed for the GPU's tanh on [-15, 15] (the shaders clamp the argument):
/// backends build it from exp, which costs a few ulp of 1.
pub const TANH_ABS_ERR: f32 = 8.0 * EPS;

/// Standard normal values, seeded.
pub fn normal(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = Normal::new(0.0f32, 1.0).unwrap();
    (0..n).map(|_| dist.sample(&mut rng)).collect()
}

/// Per-element bound of a length-k dot product in f32, whatever the summation order:
/// |fl(sum a_i b_i) - sum a_i b_i| <= k * EPS * sum |a_i b_i| (plus one rounding per product).
pub fn dot_bound(k: usize, abs_dot: f32) -> f32 {
    (k as f32 + 1.0) * EPS * abs_dot
}

/// Whether |actual - expected| <= bound[i] element-wise; the error reports the mismatch
/// count, the worst element (by error / bound) and the mean error.
pub fn within(what: &str, actual: &[f32], expected: &[f32], bound: &[f32]) -> Result<(), String> {
    if actual.len() != expected.len() || bound.len() != expected.len() {
        return Err(format!(
            "{what}: lengths: actual {}, expected {}, bound {}",
            actual.len(),
            expected.len(),
            bound.len()
        ));
    }
    let mut bad = 0;
    let mut worst = (0usize, 0.0f32);
    let mut sum_err = 0.0f64;
    for i in 0..actual.len() {
        let err = (actual[i] - expected[i]).abs();
        sum_err += err as f64;
        let ratio = if err.is_nan() {
            f32::INFINITY
        } else {
            err / bound[i].max(f32::MIN_POSITIVE)
        };
        if err.is_nan() || err > bound[i] {
            bad += 1;
        }
        if ratio > worst.1 || (i == 0 && ratio.is_infinite()) {
            worst = (i, ratio);
        }
    }
    let i = worst.0;
    if bad == 0 {
        return Ok(());
    }
    Err(format!(
        "{what}: {bad} of {} elements out of bounds; worst [{i}]: got {} expected {} \
         (error {:e}, bound {:e}); mean error {:e}",
        actual.len(),
        actual[i],
        expected[i],
        (actual[i] - expected[i]).abs(),
        bound[i],
        sum_err / actual.len() as f64
    ))
}

/// |actual - expected| <= abs + rel * |expected| for every element.
pub fn close(
    what: &str,
    actual: &[f32],
    expected: &[f32],
    abs: f32,
    rel: f32,
) -> Result<(), String> {
    let bound: Vec<f32> = expected.iter().map(|e| abs + rel * e.abs()).collect();
    within(what, actual, expected, &bound)
}

pub fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub fn u32_bytes(v: &[u32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

type Check = Box<dyn Fn(&Gpu) -> Result<(), String>>;

/// One op bound on the GPU: `setup` (run once first, e.g. filling a cache), `dispatches` (the
/// op, what a benchmark times), and the check of its output against the reference.
pub struct Problem {
    pub what: String,
    pub setup: Vec<Dispatch>,
    pub dispatches: Vec<Dispatch>,
    /// Bytes the op reads and writes, and its floating-point operations (napkin math).
    pub bytes: f64,
    pub flops: f64,
    check: Check,
}

impl Problem {
    /// Runs the setup and the op once and checks the result against the reference.
    pub fn run_and_check(&self, gpu: &Gpu) -> Result<(), String> {
        gpu.run("setup", &self.setup)
            .and_then(|_| gpu.run("check", &self.dispatches))
            .map_err(|e| format!("{}: {e}", self.what))?;
        (self.check)(gpu)
    }

    /// [`Self::run_and_check`], panicking with the report on a mismatch.
    pub fn assert(&self, gpu: &Gpu) {
        if let Err(e) = self.run_and_check(gpu) {
            panic!("{e}");
        }
    }
}

// ---- rms_norm ----

/// Bound per element: the sum of d squares differs by at most d * EPS relative between two
/// orders, which moves the inverse root by half that; inverseSqrt is within 2 ulp on the GPU
/// and 2 roundings on the CPU; the divide, the eps add and the three products add one rounding
/// each: (d / 2 + 12) * EPS * |y|.
pub fn rms_norm_bound(d: usize, y: f32) -> f32 {
    (d as f32 / 2.0 + 12.0) * EPS * y.abs()
}

/// How a norm case runs: `flagged` binds the kernel's variant that flags the rows holding a
/// NaN or an infinity (a step's final norm); `poison` (index, value) is written over the
/// input first (residual_norm's: the residual stream x). Values are checked in the rows the reference keeps finite, the flags in all.
#[derive(Clone, Copy, Debug)]
pub struct NormCase {
    pub flagged: bool,
    pub poison: Option<(usize, f32)>,
}

impl NormCase {
    pub const PLAIN: NormCase = NormCase {
        flagged: false,
        poison: None,
    };
}

/// What the flags buffer holds before a norm runs: a variant without flags leaves it.
const STALE_FLAG: u32 = 7;

/// The flags a norm leaves for its expected output [n, d].
fn expected_flags(expected: &[f32], d: usize, flagged: bool) -> Vec<u32> {
    let flag = |row: &[f32]| match flagged {
        true => reference::non_finite(row),
        false => STALE_FLAG,
    };
    expected.chunks(d).map(flag).collect()
}

/// [`within`] over the rows (of d values) whose expected values are all finite.
fn within_finite_rows(
    what: &str,
    (actual, expected, bound): (&[f32], &[f32], &[f32]),
    d: usize,
) -> Result<(), String> {
    let keep = |v: &[f32]| -> Vec<f32> {
        (v.chunks(d).zip(expected.chunks(d)))
            .filter(|(_, e)| e.iter().all(|x| x.is_finite()))
            .flat_map(|(r, _)| r.to_vec())
            .collect()
    };
    within(what, &keep(actual), &keep(expected), &keep(bound))
}

fn check_flags(what: &str, actual: &[u32], expected: &[u32]) -> Result<(), String> {
    match actual == expected {
        true => Ok(()),
        false => Err(format!("{what}: flags {actual:?}, expected {expected:?}")),
    }
}

/// rms_norm of x [n, d] with weight w \[d\].
pub fn rms_norm(
    gpu: &Gpu,
    kernel: &RmsNorm,
    (n, d, w_offset): (usize, usize, f32),
    case: NormCase,
    seed: u64,
) -> Problem {
    let mut x = normal(seed, n * d);
    if let Some((i, v)) = case.poison {
        x[i] = v;
    }
    let w = normal(seed + 1, d);
    let eps = 1e-6;
    let y = reference::rms_norm(&x, &w, eps, w_offset);
    let params = RmsNormParams {
        n: n as u32,
        d: d as u32,
        eps,
        w_offset,
    };
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let wb = gpu.storage_init("w", f32_bytes(&w));
    let out = gpu.storage_zeroed("out", (n * d * 4) as u64);
    let flags = gpu.storage_init("flags", u32_bytes(&vec![STALE_FLAG; n]));
    let what = format!("rms_norm d={d} n={n} w_offset={w_offset} {case:?}");
    let buffers = RmsNormBuffers {
        x: &xb,
        w: &wb,
        out: &out,
        flags: &flags,
    };
    let dispatch = kernel.bind(gpu, "rms_norm", params, buffers, case.flagged);
    let bound: Vec<f32> = y.iter().map(|&v| rms_norm_bound(d, v)).collect();
    let expected_flags = expected_flags(&y, d, case.flagged);
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![dispatch.unwrap()],
        bytes: 8.0 * (n * d) as f64 + 4.0 * d as f64,
        flops: 0.0,
        check: Box::new(move |gpu| {
            within_finite_rows(&what, (&gpu.read_f32(&out).unwrap(), &y, &bound), d)?;
            check_flags(&what, &gpu.read_u32(&flags).unwrap(), &expected_flags)
        }),
    }
}

/// residual_norm of o into a random residual x, [n, d], with weights post and next \[d\],
/// against reference::rms_norm, add, rms_norm. x is within rms_norm_bound of the normed
/// value plus the sum's rounding here and in the reference (a half-ulp each); h within
/// rms_norm's, plus x's error through the product (s |w_offset + next_i| per unit of x_i) and
/// through the scale s (relative sum |x_j| bx_j / sum x_j^2).
pub fn residual_norm(
    gpu: &Gpu,
    kernel: &ResidualNorm,
    (n, d, w_offset): (usize, usize, f32),
    case: NormCase,
    seed: u64,
) -> Problem {
    let (o, post, next, mut x) = (
        normal(seed, n * d),
        normal(seed + 1, d),
        normal(seed + 2, d),
        normal(seed + 3, n * d),
    );
    if let Some((i, v)) = case.poison {
        x[i] = v;
    }
    let eps = 1e-6;
    let y = reference::rms_norm(&o, &post, eps, w_offset);
    let mut x_ref = x.clone();
    reference::add(&mut x_ref, &y);
    let h_ref = reference::rms_norm(&x_ref, &next, eps, w_offset);
    // The sum is rounded on both sides (here and in the reference): two half-ulps.
    let x_bound: Vec<f32> = y
        .iter()
        .zip(&x_ref)
        .map(|(&v, &s)| rms_norm_bound(d, v) + 2.0 * EPS * s.abs())
        .collect();
    let mut h_bound = Vec::with_capacity(n * d);
    for t in 0..n {
        let (xr, br) = (&x_ref[t * d..][..d], &x_bound[t * d..][..d]);
        let ss: f32 = xr.iter().map(|v| v * v).sum();
        let scale = 1.0 / (ss / d as f32 + eps).sqrt();
        let rel: f32 = xr.iter().zip(br).map(|(v, b)| v.abs() * b).sum::<f32>() / ss;
        for i in 0..d {
            let h = h_ref[t * d + i];
            let through_x = scale * (w_offset + next[i]).abs() * br[i];
            h_bound.push(rms_norm_bound(d, h) + through_x + h.abs() * rel);
        }
    }
    let params = RmsNormParams {
        n: n as u32,
        d: d as u32,
        eps,
        w_offset,
    };
    let (ob, pb, nb) = (
        gpu.storage_init("o", f32_bytes(&o)),
        gpu.storage_init("post", f32_bytes(&post)),
        gpu.storage_init("next", f32_bytes(&next)),
    );
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let hb = gpu.storage_zeroed("h", (n * d * 4) as u64);
    let flags = gpu.storage_init("flags", u32_bytes(&vec![STALE_FLAG; n]));
    // Not written without NormOutput::Quantized (tests/kernels/rms_norm.rs checks that one).
    let hq = gpu.storage_zeroed("hq", 16);
    let buffers = ResidualNormBuffers {
        o: &ob,
        post: &pb,
        next: &nb,
        x: &xb,
        h: &hb,
        flags: &flags,
        hq: &hq,
    };
    let output = match case.flagged {
        true => NormOutput::Flagged,
        false => NormOutput::H,
    };
    let dispatch = kernel.bind(gpu, "residual_norm", params, buffers, output);
    let what = format!("residual_norm d={d} n={n} w_offset={w_offset} {case:?}");
    let expected_flags = expected_flags(&h_ref, d, case.flagged);
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![dispatch.unwrap()],
        bytes: 16.0 * (n * d) as f64 + 8.0 * d as f64,
        flops: 0.0,
        check: Box::new(move |gpu| {
            let x = gpu.read_f32(&xb).unwrap();
            within_finite_rows(&format!("{what} x"), (&x, &x_ref, &x_bound), d)?;
            let h = gpu.read_f32(&hb).unwrap();
            within_finite_rows(&format!("{what} h"), (&h, &h_ref, &h_bound), d)?;
            check_flags(&what, &gpu.read_u32(&flags).unwrap(), &expected_flags)
        }),
    }
}

// ---- kv_store and rope_store ----

/// The cache's contents as f32.
/// The `len` elements of a cache buffer; the padding after them (KvCache rounds buffers up to
/// whole 32-byte words) must still be zero: no store may land there.
fn read_cache(gpu: &Gpu, dtype: KvDtype, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    let mut all: Vec<f32> = match dtype {
        KvDtype::F32 => gpu.read_f32(buffer).unwrap(),
        KvDtype::F16 => gpu
            .read_bytes(buffer)
            .unwrap()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    assert!(
        all.len() >= len,
        "cache of {} elements, {len} expected",
        all.len()
    );
    assert!(
        all[len..].iter().all(|&x| x == 0.0),
        "a store landed past the cache's {len} elements"
    );
    all.truncate(len);
    all
}

/// Stores k and v [positions.len(), kv_dim] into an empty cache of `capacity` positions;
/// checked exactly (f16 conversion is correctly rounded) against reference::kv_store.
pub fn kv_store(
    gpu: &Gpu,
    kernel: &KvStore,
    dtype: KvDtype,
    (kv_dim, capacity): (usize, usize),
    positions: &[u32],
    seed: u64,
) -> Problem {
    let n = positions.len();
    let k = normal(seed, n * kv_dim);
    let v = normal(seed + 1, n * kv_dim);
    let cache = KvCache::new(gpu, "cache", dtype, capacity, kv_dim).unwrap();
    let pb = gpu.storage_init("positions", u32_bytes(positions));
    let kb = gpu.storage_init("k", f32_bytes(&k));
    let vb = gpu.storage_init("v", f32_bytes(&v));
    let args = KvStoreArgs {
        n,
        positions: &pb,
        k: &kb,
        v: &vb,
        cache: &cache,
    };
    let d = kernel.bind(gpu, "kv_store", args).unwrap();
    let f16 = dtype == KvDtype::F16;
    let mut k_expected = vec![0.0; capacity * kv_dim];
    let mut v_expected = vec![0.0; capacity * kv_dim];
    reference::kv_store(&mut k_expected, &k, positions, kv_dim, f16);
    reference::kv_store(&mut v_expected, &v, positions, kv_dim, f16);
    let what = format!("kv_store {dtype:?} n={n} kv_dim={kv_dim} capacity={capacity}");
    let (kc, vc) = (cache.k.clone(), cache.v.clone());
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![d],
        bytes: (2 * n * kv_dim * (4 + dtype.bytes())) as f64,
        flops: 0.0,
        check: Box::new(move |gpu| {
            let k = read_cache(gpu, dtype, &kc, k_expected.len());
            close(&format!("{what} k"), &k, &k_expected, 0.0, 0.0)?;
            let v = read_cache(gpu, dtype, &vc, v_expected.len());
            close(&format!("{what} v"), &v, &v_expected, 0.0, 0.0)
        }),
    }
}

/// The shape of a rope_store problem: query and kv heads, head_dim, Gemma 3's per-head norms
/// or not, the cache's type and capacity, the tokens' positions (distinct cache rows).
pub struct RopeStoreCase<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub norms: bool,
    pub dtype: KvDtype,
    pub capacity: usize,
    pub positions: &'a [u32],
}

/// rope_store against reference::rms_norm (with norms), reference::rope and
/// reference::kv_store. Each rotated element is y_e c -/+ y_p s of two normed values, each
/// within rms_norm_bound, plus the rotation's own rounding (as the rope problem); an f16 cache
/// may round that to a neighbouring f16 (one f16 step, 2^-10 |x|, or 2^-24 near zero). Values
/// are copied: exact.
/// Rows of `n` tokens of each part, one token's rows side by side ([q | k | v]).
fn side_by_side(n: usize, parts: [&[f32]; 3]) -> Vec<f32> {
    (0..n)
        .flat_map(|t| parts.map(|p| &p[t * (p.len() / n)..][..p.len() / n]))
        .flatten()
        .copied()
        .collect()
}

/// The error allowed for each element of the normed (or not) heads y once rotated: from its
/// value and its RoPE partner's.
fn rotated_bound(y: &[f32], hd: usize, normed: bool) -> Vec<f32> {
    let per = if normed { hd as f32 / 2.0 + 16.0 } else { 4.0 };
    (0..y.len())
        .map(|e| {
            let i = e % hd;
            let pair = if i < hd / 2 { e + hd / 2 } else { e - hd / 2 };
            per * EPS * (y[e].abs() + y[pair].abs())
        })
        .collect()
}

pub fn rope_store(gpu: &Gpu, kernel: &RopeStore, case: &RopeStoreCase, seed: u64) -> Problem {
    let RopeStoreCase {
        heads,
        kv_heads,
        head_dim: hd,
        norms,
        dtype,
        capacity,
        positions,
    } = *case;
    let (n, kv_dim, max_pos) = (positions.len(), kv_heads * hd, 8192);
    let table = reference::rope_table(1_000_000.0, 8.0, hd, max_pos);
    let gpu_table = RopeTable::new(gpu, 1_000_000.0, 8.0, hd, max_pos);
    let (q, k, v) = (
        normal(seed, n * heads * hd),
        normal(seed + 1, n * kv_dim),
        normal(seed + 2, n * kv_dim),
    );
    let w = normal(seed + 3, 2 * hd);
    let (eps, w_offset) = (1e-6, 1.0);
    let normed = |x: &[f32], w: &[f32]| match norms {
        true => reference::rms_norm(x, w, eps, w_offset),
        false => x.to_vec(),
    };
    let (qn, kn) = (normed(&q, &w[..hd]), normed(&k, &w[hd..]));
    let (q_bound, k_bound) = (rotated_bound(&qn, hd, norms), rotated_bound(&kn, hd, norms));
    let (mut q_expected, mut k_rot) = (qn, kn);
    reference::rope(&mut q_expected, positions, heads, hd, &table);
    reference::rope(&mut k_rot, positions, kv_heads, hd, &table);
    let f16 = dtype == KvDtype::F16;
    let stored = |rows: &[f32], f16| {
        let mut cache = vec![0.0; capacity * kv_dim];
        reference::kv_store(&mut cache, rows, positions, kv_dim, f16);
        cache
    };
    let (k_expected, v_expected) = (stored(&k_rot, f16), stored(&v, f16));
    let mut k_cache_bound = stored(&k_bound, false);
    if f16 {
        for (b, x) in k_cache_bound.iter_mut().zip(&k_expected) {
            *b += (x.abs() / 1024.0).max(2f32.powi(-24));
        }
    }
    let cache = KvCache::new(gpu, "cache", dtype, capacity, kv_dim).unwrap();
    let pb = gpu.storage_init("positions", u32_bytes(positions));
    let (qkvb, qb, wb) = (
        gpu.storage_init("qkv", f32_bytes(&side_by_side(n, [&q, &k, &v]))),
        gpu.storage_zeroed("q", (q.len() * 4) as u64),
        gpu.storage_init("norms", f32_bytes(&w)),
    );
    let args = RopeStoreArgs {
        n,
        heads,
        positions: &pb,
        table: &gpu_table,
        norms: norms.then_some((&wb, eps, w_offset)),
        qkv: &qkvb,
        q: &qb,
        cache: &cache,
    };
    let d = kernel.bind(gpu, "rope_store", args).unwrap();
    let what = format!(
        "rope_store {dtype:?} n={n} heads={heads}/{kv_heads} hd={hd} norms={norms} capacity={capacity}"
    );
    let (kc, vc) = (cache.k.clone(), cache.v.clone());
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![d],
        bytes: (8 * n * heads * hd + n * kv_dim * (8 + 2 * dtype.bytes())) as f64,
        flops: (6 * n * (heads + kv_heads) * hd) as f64,
        check: Box::new(move |gpu| {
            within(
                &format!("{what} q"),
                &gpu.read_f32(&qb).unwrap(),
                &q_expected,
                &q_bound,
            )?;
            let k = read_cache(gpu, dtype, &kc, k_expected.len());
            within(&format!("{what} k"), &k, &k_expected, &k_cache_bound)?;
            let v = read_cache(gpu, dtype, &vc, v_expected.len());
            close(&format!("{what} v"), &v, &v_expected, 0.0, 0.0)
        }),
    }
}

// ---- attention ----

/// An attention problem: a cache filled step by step, queries attending after each store.
pub struct AttentionCase {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub window: Option<usize>,
    pub softcap: Option<f32>,
    /// Multiplies q: large values make the soft-cap bind.
    pub q_gain: f32,
    pub capacity: usize,
    /// Steps: store the keys of these positions, then attend from these positions.
    pub steps: Vec<(Range<u32>, Range<u32>)>,
}

impl AttentionCase {
    pub fn shape(&self) -> AttentionShape {
        AttentionShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            window: self.window,
            scale: 256f32.powf(-0.5),
            softcap: self.softcap,
        }
    }
}

/// The error allowed for one query and head, derived from the arithmetic:
/// each score is a dot of length head_dim (dot_bound, times scale), plus the soft-cap's tanh;
/// a score error ds moves each softmax weight by a relative 2 ds, and exp itself is within
/// (3 + 2|x|) ulp for the |x| <= score range it sees; the output, a convex combination of
/// values, then moves by twice the relative weight error times max |v|, plus the rounding of
/// summing n values.
pub fn attention_bound(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keys: &[usize],
    shape: &AttentionShape,
) -> f32 {
    let hd = shape.head_dim;
    let mut ds: f32 = 0.0;
    let mut s_min = f32::INFINITY;
    let mut s_max = f32::NEG_INFINITY;
    let mut v_max: f32 = 0.0;
    for &j in keys {
        let kj = &k[j * hd..][..hd];
        let abs: f32 = q.iter().zip(kj).map(|(a, b)| (a * b).abs()).sum();
        let dot: f32 = q.iter().zip(kj).map(|(a, b)| a * b).sum();
        let mut s = dot * shape.scale;
        let mut err = dot_bound(hd, abs) * shape.scale + EPS * s.abs();
        if let Some(c) = shape.softcap {
            s = c * (s / c).tanh();
            err += c * 8.0 * EPS + 2.0 * EPS * s.abs();
        }
        ds = ds.max(err);
        s_min = s_min.min(s);
        s_max = s_max.max(s);
        v_max = v[j * hd..][..hd].iter().fold(v_max, |m, x| m.max(x.abs()));
    }
    let exp_err = (3.0 + 2.0 * (s_max - s_min)) * EPS;
    let weight_err = 2.0 * ds + 2.0 * exp_err;
    (2.0 * weight_err + 2.0 * (keys.len() as f32 + 4.0) * EPS) * v_max
}

/// One problem per step of `case`, to be run in order: each step's setup stores its keys
/// (kv_store), its dispatches attend (attention).
pub fn attention(
    gpu: &Gpu,
    (store, attention): (&KvStore, &Attention),
    dtype: KvDtype,
    case: &AttentionCase,
    seed: u64,
) -> Vec<Problem> {
    let hd = case.head_dim;
    let kv_dim = case.kv_heads * hd;
    let q_dim = case.heads * hd;
    let total = case
        .steps
        .iter()
        .map(|(s, q)| s.end.max(q.end))
        .max()
        .unwrap() as usize;
    // Keys and values of every position (already rotated: attention does not rotate).
    let k_all = normal(seed, total * kv_dim);
    let v_all = normal(seed + 1, total * kv_dim);
    let (k_seen, v_seen) = match dtype {
        KvDtype::F32 => (k_all.clone(), v_all.clone()),
        KvDtype::F16 => (
            reference::kv_f16_round(&k_all),
            reference::kv_f16_round(&v_all),
        ),
    };
    let shape = case.shape();
    let cache = KvCache::new(gpu, "cache", dtype, case.capacity, kv_dim).unwrap();
    // Each head's keys and values over all positions, for the bounds.
    let group = case.heads / case.kv_heads;
    let per_head = |all: &[f32], g: usize| -> Vec<f32> {
        (0..total)
            .flat_map(|j| all[(j * case.kv_heads + g) * hd..][..hd].to_vec())
            .collect()
    };
    let k_heads: Vec<Vec<f32>> = (0..case.kv_heads).map(|g| per_head(&k_seen, g)).collect();
    let v_heads: Vec<Vec<f32>> = (0..case.kv_heads).map(|g| per_head(&v_seen, g)).collect();
    let mut problems = vec![];
    for (step, (stored, queried)) in case.steps.iter().enumerate() {
        let store_pos: Vec<u32> = stored.clone().collect();
        let query_pos: Vec<u32> = queried.clone().collect();
        let n_store = store_pos.len();
        let n_q = query_pos.len();
        let rows = |all: &[f32]| {
            all[stored.start as usize * kv_dim..stored.end as usize * kv_dim].to_vec()
        };
        let q: Vec<f32> = normal(seed + 10 + step as u64, n_q * q_dim)
            .iter()
            .map(|x| x * case.q_gain)
            .collect();
        let spb = gpu.storage_init("store positions", u32_bytes(&store_pos));
        let kb = gpu.storage_init("k", f32_bytes(&rows(&k_all)));
        let vb = gpu.storage_init("v", f32_bytes(&rows(&v_all)));
        let qpb = gpu.storage_init("query positions", u32_bytes(&query_pos));
        let qb = gpu.storage_init("q", f32_bytes(&q));
        let out = gpu.storage_zeroed("out", (n_q * q_dim * 4) as u64);
        let partials = Attention::partials(gpu, "partials", n_q, &shape, case.capacity);
        let mut setup = vec![];
        if n_store > 0 {
            let args = KvStoreArgs {
                n: n_store,
                positions: &spb,
                k: &kb,
                v: &vb,
                cache: &cache,
            };
            setup.push(store.bind(gpu, "kv_store", args).unwrap());
        }
        let args = AttentionArgs {
            n_q,
            shape: &shape,
            positions: &qpb,
            q: &qb,
            cache: &cache,
            partials: &partials,
            out: &out,
            out_q: None,
            rope: None,
        };
        let dispatches = attention.bind(gpu, "attention", args).unwrap();
        let expected = reference::attention(&q, &k_seen, &v_seen, &query_pos, &shape);
        // Per (query, head) bound over the keys that query sees.
        let mut bounds = vec![0.0f32; expected.len()];
        let mut keys_seen = 0;
        for (t, &pos) in query_pos.iter().enumerate() {
            let first = case
                .window
                .map_or(0, |w| (pos as usize + 1).saturating_sub(w));
            let keys: Vec<usize> = (first..=pos as usize).collect();
            keys_seen += keys.len();
            for h in 0..case.heads {
                let g = h / group;
                let b = attention_bound(
                    &q[(t * case.heads + h) * hd..][..hd],
                    &k_heads[g],
                    &v_heads[g],
                    &keys,
                    &shape,
                );
                bounds[(t * case.heads + h) * hd..][..hd].fill(b);
            }
        }
        let what = format!("attention {dtype:?} step {step} (queries {queried:?})");
        problems.push(Problem {
            what: what.clone(),
            setup,
            dispatches,
            bytes: (2 * keys_seen * kv_dim * dtype.bytes() / n_q.max(1)) as f64,
            flops: (4 * keys_seen * q_dim) as f64,
            check: Box::new(move |gpu| {
                within(&what, &gpu.read_f32(&out).unwrap(), &expected, &bounds)
            }),
        });
    }
    problems
}

// ---- matrices ----

/// GGUF block types: (type, block bytes, offsets of the f16 scale fields).
pub const GGML_TYPES: &[(GgmlType, usize, &[usize])] = {
    use GgmlType::*;
    &[
        (Q8_0, 34, &[0]),
        (Q4_0, 18, &[0]),
        (Q4_1, 20, &[0, 2]),
        (Q5_0, 22, &[0]),
        (Q5_1, 24, &[0, 2]),
        (Q2K, 84, &[80, 82]),
        (Q3K, 110, &[108]),
        (Q4K, 144, &[0, 2]),
        (Q5K, 176, &[0, 2]),
        (Q6K, 210, &[208]),
        (F16, 2, &[0]),
    ]
};

/// A [rows, k] matrix of random GGML blocks of `ty` (random bytes, sane f16 scales), as a
/// GGUF file would hold it, and the values the GPU computes with.
pub fn ggml_matrix(seed: u64, ty: GgmlType, rows: usize, k: usize) -> (HostMatrix, Vec<f32>) {
    let &(_, size, halves) = GGML_TYPES
        .iter()
        .find(|t| t.0 == ty)
        .unwrap_or_else(|| panic!("no random blocks of {ty:?}"));
    let per = ty.block().unwrap().0;
    let n = rows * k / per;
    let noise = normal(seed, n * size);
    let scales = normal(seed + 1, n * halves.len());
    let mut bytes: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
    for b in 0..n {
        for (h, &off) in halves.iter().enumerate() {
            let v = half::f16::from_f32(scales[b * halves.len() + h] * 0.05);
            bytes[b * size + off..][..2].copy_from_slice(&v.to_le_bytes());
        }
    }
    let m = HostMatrix::from_ggml(ty, rows, k, &bytes).unwrap();
    let values = m.dequantize();
    (m, values)
}

/// Weights per block of `format` along a row (1 for plain floats).
pub fn block_len(format: WeightFormat) -> usize {
    match format {
        WeightFormat::I8Affine => 32,
        f => f.ggml_block().map_or(32, |b| b.0),
    }
}

/// A random i8_affine [rows, k] matrix: random int8 codes and a (scale, offset) pair of its
/// own per 16 weights (as CPU adapters expand K-quant blocks: every group's pair differs from
/// its neighbours', offsets included), and its values.
fn affine_matrix(seed: u64, rows: usize, k: usize) -> (HostMatrix, Vec<f32>) {
    let codes: Vec<u8> = normal(seed, rows * k)
        .iter()
        .map(|v| (v.to_bits() >> 7) as u8)
        .collect();
    let pairs = normal(seed + 1, rows * k / 16 * 2);
    let scales = pairs
        .chunks(2)
        .flat_map(|p| [(p[0] * 0.01).abs(), p[1] * 0.3])
        .flat_map(|v| [v.to_bits() as u16, (v.to_bits() >> 16) as u16])
        .collect();
    let m = HostMatrix {
        format: WeightFormat::I8Affine,
        rows,
        cols: k,
        data: bytemuck::pod_collect_to_vec(&codes),
        scales,
    };
    let values = m.dequantize();
    (m, values)
}

/// A random [rows, k] matrix in any format the shaders read, and the f32 values the GPU
/// computes with: quantized from normal values where there is a quantizer, random GGUF
/// blocks with sane f16 scales otherwise, and i8_affine with random codes and pairs.
pub fn matrix(seed: u64, format: WeightFormat, rows: usize, k: usize) -> (HostMatrix, Vec<f32>) {
    let ty = match format {
        f if WeightFormat::QUANTIZABLE.contains(&f) => {
            let m = HostMatrix::from_f32(format, rows, k, &normal(seed, rows * k)).unwrap();
            let values = m.dequantize();
            return (m, values);
        }
        WeightFormat::I8Affine => return affine_matrix(seed, rows, k),
        WeightFormat::F16 => GgmlType::F16,
        WeightFormat::Q4_1 => GgmlType::Q4_1,
        WeightFormat::Q5_0 => GgmlType::Q5_0,
        WeightFormat::Q5_1 => GgmlType::Q5_1,
        WeightFormat::Q2K => GgmlType::Q2K,
        WeightFormat::Q3K => GgmlType::Q3K,
        WeightFormat::Q4K => GgmlType::Q4K,
        WeightFormat::Q5K => GgmlType::Q5K,
        WeightFormat::Q6K => GgmlType::Q6K,
        other => panic!("no random {other} matrices"),
    };
    let (m, values) = ggml_matrix(seed, ty, rows, k);
    assert_eq!(m.format, format, "{ty:?} loads as {}", m.format);
    (m, values)
}

/// Reference product and its per-element bound on the same (dequantized) weights.
pub fn product_expected(w: &[f32], x: &[f32], rows: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let y = reference::matmul(w, x, rows, k);
    let abs_w: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let bound = reference::matmul(&abs_w, &abs_x, rows, k)
        .into_iter()
        .map(|a| dot_bound(k, a))
        .collect();
    (y, bound)
}

#[derive(Clone, Copy)]
pub enum Product<'a> {
    Matvec(&'a Matvec),
    Matmul(&'a Matmul),
}

impl Product<'_> {
    /// Whether the kernel multiplies x quantized to int8 blocks (Matvec::int8, Matmul::int8).
    fn int8(&self) -> bool {
        match self {
            Product::Matvec(k) => k.int8(),
            Product::Matmul(k) => k.int8(),
        }
    }
}

/// What an int8 product multiplies: x quantized (reference::quantize_q8), and per entry the
/// slack of a rounding tie. The GPU's 1 / d is within 2.5 ulp (WGSL's division), so with the
/// product's own rounding x / d is within 4 ulp of the reference's; an entry that close to a
/// half may take the neighbouring code, moving the product by |w| d.
pub fn int8_x(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut slack = Vec::with_capacity(x.len());
    for block in x.chunks(reference::Q8_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = reference::q8_scale(amax);
        slack.extend(block.iter().map(|v| {
            let t = (v * id).abs();
            let near_half = (t.fract() - 0.5).abs() <= 8.0 * EPS * t;
            if near_half { d } else { 0.0 }
        }));
    }
    (reference::quantize_q8(x), slack)
}

/// [`product_expected`] for `kernel`: on int8 activations where it takes them, the bound
/// widened by their ties' slack.
pub fn product_expected_for(
    kernel: Product,
    w: &[f32],
    x: &[f32],
    rows: usize,
    k: usize,
) -> (Vec<f32>, Vec<f32>) {
    if !kernel.int8() {
        return product_expected(w, x, rows, k);
    }
    let (xq, slack) = int8_x(x);
    let (y, bound) = product_expected(w, &xq, rows, k);
    let abs_w: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let ties = reference::matmul(&abs_w, &slack, rows, k);
    (y, bound.iter().zip(&ties).map(|(b, t)| b + t).collect())
}

/// Columns of y outside the product's: it writes columns [Y_OFFSET, Y_OFFSET + rows) of rows
/// of rows + Y_SPARE, and must leave the others as they were (Y_SENTINEL).
const Y_OFFSET: usize = 2;
const Y_SPARE: usize = 5;
const Y_SENTINEL: f32 = 7.25;

/// y [n, rows] = x [n, k] W^T for the matrix `m` (values `w`) and random x, written into
/// columns of a wider y (as the model writes q, k and v side by side).
pub fn product(
    gpu: &Gpu,
    kernel: Product,
    (m, w): (&HostMatrix, &[f32]),
    n: usize,
    seed: u64,
) -> (Problem, usize) {
    let (format, rows, k) = (m.format, m.rows, m.cols);
    let x = normal(seed + 1, n * k);
    let (y_ref, bound) = product_expected_for(kernel, w, &x, rows, k);
    let gm = GpuMatrix::upload(gpu, "w", m).unwrap();
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let stride = rows + Y_SPARE;
    let yb = gpu.storage_init("y", f32_bytes(&vec![Y_SENTINEL; n * stride]));
    let args = MatrixArgs {
        y_offset: Y_OFFSET,
        y_stride: stride,
        ..MatrixArgs::new(&gm, &xb, &yb, n)
    };
    let (name, dispatches) = match kernel {
        Product::Matvec(k) => ("matvec", k.bind(gpu, "matvec", args)),
        Product::Matmul(k) => ("matmul", k.bind(gpu, "matmul", args)),
    };
    let int8 = if kernel.int8() { " int8" } else { "" };
    let what = format!("{name}{int8}: {format} n={n} rows={rows} k={k}");
    let problem = Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: dispatches.unwrap(),
        bytes: gm.bytes() as f64 + 4.0 * (n * (k + rows)) as f64,
        flops: 2.0 * (n * rows * k) as f64,
        check: Box::new(move |gpu| {
            let y = gpu.read_f32(&yb).unwrap();
            let (mut ours, mut others): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
            for row in y[..n * stride].chunks(stride) {
                ours.extend_from_slice(&row[Y_OFFSET..][..rows]);
                others.extend(row[..Y_OFFSET].iter().chain(&row[Y_OFFSET + rows..]));
            }
            within(&what, &ours, &y_ref, &bound)?;
            match others.iter().all(|&v| v == Y_SENTINEL) {
                true => Ok(()),
                false => Err(format!("{what}: wrote outside its columns")),
            }
        }),
    };
    (problem, gm.chunks.len())
}

/// The largest slope of gelu_tanh (about 1.129, near g = 1.4), rounded up.
const GELU_SLOPE: f32 = 1.13;

/// gelu_tanh(gate) * up [n, rows / 2] of the product of the stacked [gate; up] matrix `m`
/// (values `w`) and random x, in one dispatch (the product's GeGLU variant). Each output moves
/// by the slope of gelu times the gate's product bound, times |up|, plus |gelu(gate)| times
/// the up's product bound, plus GeGLU's own error (as the geglu problem).
pub fn product_geglu(
    gpu: &Gpu,
    kernel: Product,
    (m, w): (&HostMatrix, &[f32]),
    n: usize,
    seed: u64,
) -> Problem {
    let (rows, k, d) = (m.rows, m.cols, m.rows / 2);
    let x: Vec<f32> = normal(seed + 1, n * k).iter().map(|v| 3.0 * v).collect();
    let (y, pb) = product_expected_for(kernel, w, &x, rows, k);
    let expected = reference::geglu(&y, d);
    let bound: Vec<f32> = (0..n * d)
        .map(|e| {
            let (t, j) = (e / d, e % d);
            let (g, u) = (y[t * rows + j], y[t * rows + d + j]);
            let (bg, bu) = (pb[t * rows + j], pb[t * rows + d + j]);
            let arg = 0.797_884_6 * (g + 0.044715 * g * g * g);
            let dt = TANH_ABS_ERR + 4.0 * EPS * arg.abs().min(15.0);
            let own = 0.5 * g.abs() * u.abs() * (dt + 4.0 * EPS) + 4.0 * EPS * expected[e].abs();
            let gelu = 0.5 * g * (1.0 + arg.tanh());
            own + GELU_SLOPE * bg * (u.abs() + bu) + gelu.abs() * bu
        })
        .collect();
    let gm = GpuMatrix::upload(gpu, "gate_up", m).unwrap();
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let yb = gpu.storage_zeroed("act", (n * d * 4) as u64);
    let args = MatrixArgs::new(&gm, &xb, &yb, n);
    let (name, dispatches) = match kernel {
        Product::Matvec(k) => ("matvec", k.bind_geglu(gpu, "gate_up", args)),
        Product::Matmul(k) => (
            "matmul",
            k.bind_geglu(gpu, "gate_up", args).map(|d| vec![d]),
        ),
    };
    let dispatches = dispatches.unwrap();
    let what = format!("{name} geglu: {} n={n} rows={rows} k={k}", m.format);
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches,
        bytes: gm.bytes() as f64 + 4.0 * (n * (k + d)) as f64,
        flops: 2.0 * (n * rows * k) as f64,
        check: Box::new(move |gpu| within(&what, &gpu.read_f32(&yb).unwrap(), &expected, &bound)),
    }
}

/// out = table[ids] * scale for the table `m` (values `table`): first and last rows,
/// repeats, and random ids. One rounding per element: the product of the exact weight and
/// the scale. And h = rms_norm(out) with random weights (w_offset 1): within rms_norm_bound
/// of the reference's norm of the reference's out, plus out's rounding through the product
/// and through the scale (EPS |h| each).
pub fn embedding(
    gpu: &Gpu,
    kernel: &Embedding,
    (m, table): (&HostMatrix, &[f32]),
    scale: f32,
    seed: u64,
) -> Problem {
    let (vocab, d) = (m.rows, m.cols);
    let mut ids = vec![0u32, vocab as u32 - 1, 5 % vocab as u32, 5 % vocab as u32];
    ids.extend(
        normal(seed, 9)
            .iter()
            .map(|v| ((v.abs() * 1e4) as usize % vocab) as u32),
    );
    let expected = reference::embedding(table, d, &ids, scale);
    let (eps, w_offset) = (1e-6, 1.0);
    let norm = normal(seed + 1, d);
    let expected_h = reference::rms_norm(&expected, &norm, eps, w_offset);
    let bound_h: Vec<f32> = expected_h
        .iter()
        .map(|&y| rms_norm_bound(d, y) + 2.0 * EPS * y.abs())
        .collect();
    let gm = GpuMatrix::upload(gpu, "embed", m).unwrap();
    let idb = gpu.storage_init("ids", u32_bytes(&ids));
    let out = gpu.storage_zeroed("out", (ids.len() * d * 4) as u64);
    let nb = gpu.storage_init("norm", f32_bytes(&norm));
    let h = gpu.storage_zeroed("h", (ids.len() * d * 4) as u64);
    let args = EmbeddingArgs {
        table: &gm,
        ids: &idb,
        n: ids.len(),
        scale,
        out: &out,
        norm: (&nb, eps, w_offset),
        h: &h,
        hq: None,
    };
    let dispatches = kernel.bind(gpu, "embedding", args).unwrap();
    let what = format!("embedding {} vocab={vocab} d={d}", m.format);
    let row_bytes = m.format.data_bytes_per_row(d) + 2 * m.format.scales_per_row(d);
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches,
        bytes: (ids.len() * (row_bytes + 8 * d + 4)) as f64,
        flops: 0.0,
        check: Box::new(move |gpu| {
            close(&what, &gpu.read_f32(&out).unwrap(), &expected, 0.0, EPS)?;
            let what = format!("{what}: its norm");
            within(&what, &gpu.read_f32(&h).unwrap(), &expected_h, &bound_h)
        }),
    }
}

// ---- elementwise ----

/// out [n, d] = gelu_tanh(gate) * up, with gates spread so tanh saturates on both sides.
pub fn geglu(gpu: &Gpu, kernel: &Geglu, n: usize, d: usize, seed: u64) -> Problem {
    let mut gate_up = normal(seed, n * 2 * d);
    for row in gate_up.chunks_mut(2 * d) {
        for g in &mut row[..d] {
            *g *= 3.0;
        }
    }
    let expected = reference::geglu(&gate_up, d);
    let gb = gpu.storage_init("gate_up", f32_bytes(&gate_up));
    let out = gpu.storage_zeroed("out", (n * d * 4) as u64);
    let buffers = GegluBuffers {
        gate_up: &gb,
        out: &out,
    };
    let disp = kernel.bind(gpu, "geglu", n, d, buffers).unwrap();
    // |d gelu| <= 0.5 |g| (|d tanh| + 4 EPS): the tanh error plus its argument's relative
    // error (a few roundings, |tanh'| <= 1), times |up|, plus the rounding of the products.
    let bound: Vec<f32> = (0..n * d)
        .map(|e| {
            let (t, j) = (e / d, e % d);
            let g = gate_up[t * 2 * d + j];
            let u = gate_up[t * 2 * d + d + j];
            let arg = 0.797_884_6 * (g + 0.044715 * g * g * g);
            let dt = TANH_ABS_ERR + 4.0 * EPS * arg.abs().min(15.0);
            0.5 * g.abs() * u.abs() * (dt + 4.0 * EPS) + 4.0 * EPS * expected[e].abs()
        })
        .collect();
    let what = format!("geglu n={n} d={d}");
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![disp],
        bytes: 12.0 * (n * d) as f64,
        flops: 0.0,
        check: Box::new(move |gpu| within(&what, &gpu.read_f32(&out).unwrap(), &expected, &bound)),
    }
}

/// acc[..n] += x[..n]; IEEE addition is correctly rounded: the results are identical.
pub fn add(gpu: &Gpu, kernel: &Add, n: usize, seed: u64) -> Problem {
    let x = normal(seed, n);
    let acc = normal(seed + 100, n);
    let mut expected = acc.clone();
    reference::add(&mut expected, &x);
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let ab = gpu.storage_init("acc", f32_bytes(&acc));
    let d = kernel
        .bind(gpu, "add", n, AddBuffers { x: &xb, acc: &ab })
        .unwrap();
    let what = format!("add n={n}");
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![d],
        bytes: 12.0 * n as f64,
        flops: n as f64,
        check: Box::new(move |gpu| close(&what, &gpu.read_f32(&ab).unwrap(), &expected, 0.0, 0.0)),
    }
}

/// x = cap * tanh(x / cap) in place for logits up to about +-120: the cap binds hard on the
/// tails.
pub fn soft_cap(gpu: &Gpu, kernel: &SoftCap, n: usize, seed: u64) -> Problem {
    let cap = 30.0f32;
    let x: Vec<f32> = normal(seed, n).iter().map(|v| v * 40.0).collect();
    let mut expected = x.clone();
    reference::soft_cap(&mut expected, cap);
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let d = kernel
        .bind(gpu, "soft_cap", n, cap, SoftCapBuffers { x: &xb })
        .unwrap();
    // cap * (tanh error + the argument's rounding) + the final product's rounding.
    let bound: Vec<f32> = x
        .iter()
        .zip(&expected)
        .map(|(v, e)| cap * (TANH_ABS_ERR + 2.0 * EPS * (v / cap).abs().min(15.0)) + EPS * e.abs())
        .collect();
    let what = format!("soft_cap n={n}");
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![d],
        bytes: 8.0 * n as f64,
        flops: 0.0,
        check: Box::new(move |gpu| within(&what, &gpu.read_f32(&xb).unwrap(), &expected, &bound)),
    }
}

// ---- top_k ----

/// The k largest of n values, exactly as reference::top_k ranks them (ties by index); `data`
/// is "normal", "ties" (values on a 0.5 grid), "ascending" (the most reordering) or "wide"
/// (normal times 100). With `cap` the kernel ranks soft-capped values: they must be exactly
/// those the soft_cap kernel writes (run here on a copy), saturated ones tied by index.
pub fn top_k(
    gpu: &Gpu,
    kernel: &TopK,
    (n, k): (usize, usize),
    (data, cap): (&str, Option<f32>),
    seed: u64,
) -> Problem {
    let mut x = normal(seed, n);
    match data {
        "ties" => x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0),
        "ascending" => x.sort_by(f32::total_cmp),
        "wide" => x.iter_mut().for_each(|v| *v *= 100.0),
        _ => {}
    }
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let ranked = match cap {
        Some(c) => {
            let capped = gpu.storage_init("x.capped", f32_bytes(&x));
            let d = SoftCap::new(gpu)
                .unwrap()
                .bind(gpu, "soft_cap", n, c, SoftCapBuffers { x: &capped })
                .unwrap();
            gpu.run("soft_cap", [&d]).unwrap();
            gpu.read_f32(&capped).unwrap()
        }
        None => x.clone(),
    };
    let expected = reference::top_k(&ranked, k);
    let scratch = TopKScratch::new(gpu, "top_k", n, k);
    let out = kernel
        .bind(gpu, "top_k", (&xb, n, cap), k, &scratch)
        .unwrap();
    let what = format!("top_k n={n} k={k} {data} cap {cap:?}");
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: out.dispatches,
        bytes: 4.0 * n as f64,
        flops: 0.0,
        check: Box::new(move |gpu| {
            let values = gpu.read_f32(&scratch.values).unwrap();
            let indices = gpu.read_u32(&scratch.indices).unwrap();
            for (r, &(v, idx)) in expected.iter().enumerate() {
                if (values[r], indices[r]) != (v, idx) {
                    return Err(format!(
                        "{what}: rank {r}: got {:?}, expected {:?}",
                        (values[r], indices[r]),
                        (v, idx)
                    ));
                }
            }
            // Fewer than k elements: the rest are marked missing.
            for r in expected.len()..k {
                if indices[r] != u32::MAX || values[r] != f32::NEG_INFINITY {
                    return Err(format!("{what}: rank {r} should be empty"));
                }
            }
            Ok(())
        }),
    }
}

/// The fma yardstick: `invocations` (a multiple of 64) running chains of `iters` steps of
/// a = fma(a, 15/16, 1/16) from seeds in [j, j + 1) for chain j; the first `checked`
/// invocations are compared with reference::fma (a long run's reference would take the CPU
/// longer than the GPU).
pub fn fma(gpu: &Gpu, kernel: &Fma, invocations: usize, iters: u32, checked: usize) -> Problem {
    let (m, c) = (15.0f32 / 16.0, 1.0f32 / 16.0);
    let expected = reference::fma(checked, CHAINS, (iters, m, c));
    let out = gpu.storage_zeroed("fma.out", invocations as u64 * 4);
    let d = kernel
        .bind(
            gpu,
            "fma",
            invocations,
            (iters, m, c),
            FmaBuffers { out: &out },
        )
        .unwrap();
    // Chains move towards 1 and stay within [0, CHAINS): an unfused step rounds twice
    // (<= 2 CHAINS EPS), and errors decay by m per step, so a chain is off by at most
    // 2 CHAINS EPS min(iters, 1 / (1 - m)); then 4 CHAINS chains are summed in any order,
    // each partial sum (<= 4 CHAINS^2) rounded once.
    let chains = (4 * CHAINS) as f32;
    let chain = 2.0 * CHAINS as f32 * EPS * (iters as f32).min(1.0 / (1.0 - m));
    let bound = vec![chains * chain + chains * chains * CHAINS as f32 * EPS; checked];
    let what = format!("fma {invocations} invocations x {iters} steps");
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![d],
        bytes: 4.0 * invocations as f64,
        flops: Fma::flops(invocations, iters),
        check: Box::new(move |gpu| {
            let got = gpu.read_f32(&out).unwrap();
            within(&what, &got[..checked], &expected, &bound)
        }),
    }
}

/// log_prob's error bound per output, from each row's range and the reference values.
fn log_prob_bounds(logits: &[f32], vocab: usize, expected: &[f64], m: usize) -> Vec<f32> {
    // lse = M + log(S), S the sum of exp(x - M) <= vocab terms of at most 1. Each term: the
    // subtraction and exp (3 + 2|d| ulp, WGSL's bound) are off by (3 + 3 D) 2 EPS relative,
    // D the row's range; the sum is sequential over an invocation's ceil(vocab / 256) terms
    // (the wrapper's 256 invocations), then over at most 256 partial sums; log is off by
    // 2^-21 absolute near 1 (3 ulp elsewhere); adding M and subtracting lse round once each.
    logits
        .chunks_exact(vocab)
        .zip(expected.chunks_exact(m + 1))
        .flat_map(|(row, e)| {
            let (lo, hi) = row
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let terms = (vocab.div_ceil(256) + 256) as f32;
            let sum = (terms + (3.0 + 3.0 * (hi - lo)) * 2.0) * EPS;
            let log_s = (e[0] - hi as f64).abs() as f32;
            let lse = sum + 2f32.powi(-21) + 6.0 * EPS * log_s + EPS * e[0].abs() as f32;
            std::iter::once(lse).chain(e[1..].iter().map(move |lp| lse + EPS * lp.abs() as f32))
        })
        .collect()
}

/// log_prob of `rows` rows of `vocab` logits (normal values times `scale`) at `m` ids per row
/// (the first and last ids of the vocabulary among them), with `poison` (row, column, value)
/// written over one logit: that row's log-sum-exp must come back NaN.
pub fn log_prob(
    gpu: &Gpu,
    kernel: &LogProb,
    (rows, vocab, m): (usize, usize, usize),
    scale: f32,
    poison: Option<(usize, usize, f32)>,
    seed: u64,
) -> Problem {
    let mut logits: Vec<f32> = normal(seed, rows * vocab)
        .iter()
        .map(|v| v * scale)
        .collect();
    if let Some((r, c, v)) = poison {
        logits[r * vocab + c] = v;
    }
    let ids: Vec<u32> = (0..rows * m)
        .map(|i| match i % m {
            0 => 0,
            1 => vocab as u32 - 1,
            j => ((seed as usize + i * 7919 + j) % vocab) as u32,
        })
        .collect();
    let expected = reference::log_prob(&logits, vocab, &ids, m);
    let lb = gpu.storage_init("logits", f32_bytes(&logits));
    let ib = gpu.storage_init("ids", bytemuck::cast_slice(&ids));
    let out = gpu.storage_zeroed("log_prob.out", (rows * (m + 1) * 4) as u64);
    let buffers = LogProbBuffers {
        logits: &lb,
        ids: &ib,
        out: &out,
    };
    let d = kernel
        .bind(gpu, "log_prob", (rows, vocab, m), buffers)
        .unwrap();
    let bounds = log_prob_bounds(&logits, vocab, &expected, m);
    let poisoned = poison.map(|(r, _, _)| r);
    let what = format!("log_prob {rows}x{vocab} m={m} scale {scale} poison {poison:?}");
    Problem {
        what: what.clone(),
        setup: vec![],
        dispatches: vec![d],
        bytes: 8.0 * (rows * vocab) as f64,
        flops: 0.0,
        check: Box::new(move |gpu| {
            let got = gpu.read_f32(&out).unwrap();
            let mut expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
            let mut bounds = bounds.clone();
            if let Some(r) = poisoned {
                let row = &got[r * (m + 1)..][..m + 1];
                if !row.iter().all(|v| v.is_nan()) {
                    return Err(format!("{what}: row {r} holds a non-finite logit: {row:?}"));
                }
                // The other rows as usual.
                let range = r * (m + 1)..(r + 1) * (m + 1);
                expected[range.clone()].fill(0.0);
                bounds[range.clone()].fill(0.0);
                let mut got = got.clone();
                got[range].fill(0.0);
                return within(&what, &got, &expected, &bounds);
            }
            within(&what, &got, &expected, &bounds)
        }),
    }
}

/// The words gemma_wgpu's quantize_q8 pass writes for the `len` values of `x`: what every
/// kernel that writes a decode product's input quantized must write word for word.
pub fn quantize_q8_words(gpu: &Gpu, x: &wgpu::Buffer, len: usize) -> Vec<u32> {
    use gemma_wgpu::kernels::quantize_q8::{BLOCK, QuantizeQ8Buffers, WORDS_PER_BLOCK};
    let kernel = gemma_wgpu::kernels::QuantizeQ8::new(gpu).unwrap();
    let xq = gpu.storage_zeroed("xq", (4 * len / BLOCK * WORDS_PER_BLOCK) as u64);
    let q = kernel
        .bind(gpu, "quantize_q8", len, QuantizeQ8Buffers { x, xq: &xq })
        .unwrap();
    gpu.run("quantize_q8", [&q]).unwrap();
    gpu.read_u32(&xq).unwrap()
}
