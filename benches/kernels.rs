//! Kernel benchmarks at real Gemma 2 2B and 9B shapes: GPU time per call (timestamp queries
//! where the adapter has them, else wall time around a synchronised batch), achieved GB/s or
//! GFLOP/s, and the fraction of a plain copy kernel's bandwidth measured in the same run.
//!
//! `cargo bench --bench kernels`; GEMMA_WGPU_BACKEND / GEMMA_WGPU_ADAPTER choose the device,
//! GEMMA_WGPU_BENCH_FILTER=matvec keeps the rows whose kernel name contains the text,
//! GEMMA_WGPU_LAYOUT=cpu|gpu forces an adapter class's access patterns.
//!
//! Napkin math: decode is bandwidth-bound, a matvec reads every weight once, so its GB/s over
//! the copy kernel's GB/s (which reads and writes) is the fraction of the memory system used.

use gemma_wgpu::gpu::{Clock, Dispatch, Gpu, GpuOptions};
use gemma_wgpu::kernels::kv_store::KvCache;
use gemma_wgpu::kernels::rms_norm::RmsNormParams;
use gemma_wgpu::kernels::*;
use gemma_wgpu::weights::gguf::GgmlType;
use gemma_wgpu::weights::{HostMatrix, WeightFormat};
use std::time::Duration;

struct Row {
    kernel: String,
    shape: String,
    format: String,
    time: Duration,
    bytes: f64,
    flops: f64,
}

/// Deterministic pseudo-random values in [-1, 1): timing does not depend on them, but
/// quantizers and caches see realistic data.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Bench {
    gpu: Gpu,
    reps: u32,
    clock: Clock,
    rows: Vec<Row>,
    filter: Option<String>,
}

impl Bench {
    fn wanted(&self, kernel: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| kernel.contains(f))
    }

    fn record(
        &mut self,
        kernel: &str,
        shape: &str,
        format: &str,
        dispatches: &[&Dispatch],
        bytes: f64,
        flops: f64,
    ) {
        let (time, clock) = self
            .gpu
            .time(kernel, dispatches, self.reps)
            .expect("timing");
        self.clock = clock;
        self.rows.push(Row {
            kernel: kernel.into(),
            shape: shape.into(),
            format: format.into(),
            time,
            bytes,
            flops,
        });
    }

    fn buffer(&self, label: &str, n: usize) -> wgpu::Buffer {
        self.gpu
            .storage_init(label, bytemuck::cast_slice(&values(n, n as u32)))
    }

    fn copy(&mut self) -> f64 {
        let n = 16 << 20; // 64 MiB of f32
        let src = self.buffer("src", n);
        let dst = self.gpu.storage_zeroed("dst", n as u64 * 4);
        for contiguous in [false, true] {
            let k = Copy::new(&self.gpu, Some(contiguous)).unwrap();
            let d = k.bind(&self.gpu, "copy", n, &src, &dst).unwrap();
            let layout = if contiguous {
                "contiguous"
            } else {
                "interleaved"
            };
            self.record(
                &format!("copy ({layout})"),
                "64 MiB",
                "f32",
                &[&d],
                2.0 * 4.0 * n as f64,
                0.0,
            );
        }
        // The yardstick: the better of the two access patterns on this adapter.
        self.rows
            .iter()
            .map(|r| r.bytes / r.time.as_secs_f64())
            .fold(0.0, f64::max)
    }

    fn matrix(&mut self, name: &str, rows: usize, k: usize, n: usize) {
        for format in WeightFormat::QUANTIZABLE {
            if !self.wanted(if n == 1 { "matvec" } else { "matmul" }) {
                continue;
            }
            let host = HostMatrix::from_f32(format, rows, k, &values(rows * k, 7)).unwrap();
            self.matrix_of(name, &host, n);
        }
    }

    /// One weight format: quantized from random values where there is a quantizer, else
    /// random GGUF blocks (every byte below 0x7c, so each f16 scale is finite), both as stored
    /// and as CPU adapters expand them (i8_affine).
    fn matrix_in(&mut self, name: &str, format: WeightFormat, rows: usize, k: usize, n: usize) {
        if !self.wanted(if n == 1 { "matvec" } else { "matmul" }) {
            return;
        }
        if WeightFormat::QUANTIZABLE.contains(&format) {
            let host = HostMatrix::from_f32(format, rows, k, &values(rows * k, 7)).unwrap();
            return self.matrix_of(name, &host, n);
        }
        let ty = match format {
            WeightFormat::Q5_0 => GgmlType::Q5_0,
            WeightFormat::Q4K => GgmlType::Q4K,
            WeightFormat::Q6K => GgmlType::Q6K,
            _ => unimplemented!("bench rows in {format}"),
        };
        let (qk, size, _) = format.ggml_block().unwrap();
        let bytes: Vec<u8> = values(rows * k / qk * size, 11)
            .iter()
            .map(|v| ((v + 1.0) * 61.9) as u8)
            .collect();
        let host = HostMatrix::from_ggml(ty, rows, k, &bytes).unwrap();
        self.matrix_of(name, &host, n);
        if let Some(expanded) = host.to_i8_affine() {
            self.matrix_of(name, &expanded, n);
        }
    }

    fn matrix_of(&mut self, name: &str, host: &HostMatrix, n: usize) {
        let (format, rows, k) = (host.format, host.rows, host.cols);
        let kind = if n == 1 { "matvec" } else { "matmul" };
        {
            let w = GpuMatrix::upload(&self.gpu, name, host).unwrap();
            let x = self.buffer("x", n * k);
            let y = self.gpu.storage_zeroed("y", (n * rows * 4) as u64);
            let dispatches = if n == 1 {
                Matvec::new(&self.gpu, format)
                    .unwrap()
                    .bind(&self.gpu, name, &w, &x, &y, n)
            } else {
                Matmul::new(&self.gpu, format)
                    .unwrap()
                    .bind(&self.gpu, name, &w, &x, &y, n)
            }
            .unwrap();
            let refs: Vec<&Dispatch> = dispatches.iter().collect();
            let bytes = w.bytes() as f64 + 4.0 * (n * (k + rows)) as f64;
            let flops = 2.0 * (n * rows * k) as f64;
            self.record(
                kind,
                &format!("{name} {rows}x{k} n={n}"),
                format.name(),
                &refs,
                bytes,
                flops,
            );
        }
    }

    fn attention(&mut self, name: &str, heads: usize, kv_heads: usize, hd: usize, ctx: usize) {
        if !self.wanted("attention") {
            return;
        }
        let gpu = &self.gpu;
        let dtype = KvDtype::default_for(&gpu.caps);
        let cache = KvCache::new(gpu, "cache", dtype, ctx, kv_heads * hd).unwrap();
        let positions = gpu.storage_init("pos", bytemuck::cast_slice(&[ctx as u32 - 1]));
        let q = self.buffer("q", heads * hd);
        let out = gpu.storage_zeroed("out", (heads * hd * 4) as u64);
        let cfg = AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
            window: None,
            scale: 0.0625,
            softcap: Some(50.0),
        };
        let d = Attention::new(gpu, dtype)
            .unwrap()
            .bind(gpu, name, 1, &cfg, &positions, &q, &cache, &out)
            .unwrap();
        let refs: Vec<&Dispatch> = d.iter().collect();
        let bytes = (2 * ctx * kv_heads * hd * dtype.bytes()) as f64;
        let flops = (4 * ctx * heads * hd) as f64;
        let shape = format!("{name} {heads}/{kv_heads}x{hd} ctx={ctx}");
        self.record(
            "attention (decode)",
            &shape,
            &format!("kv {dtype:?}"),
            &refs,
            bytes,
            flops,
        );
    }

    fn small_kernels(&mut self, hidden: usize, inter: usize, vocab: usize) {
        let gpu = &self.gpu;
        let mut pending: Vec<(String, String, Vec<Dispatch>, f64)> = vec![];
        let x = self.buffer("x", hidden);
        let w = self.buffer("w", hidden);
        let out = gpu.storage_zeroed("out", hidden as u64 * 4);
        let params = RmsNormParams {
            n: 1,
            d: hidden as u32,
            eps: 1e-6,
            w_offset: 1.0,
        };
        let d = RmsNorm::new(gpu, false)
            .unwrap()
            .bind(gpu, "rms_norm", params, &x, &w, &out)
            .unwrap();
        pending.push((
            "rms_norm".into(),
            format!("1x{hidden}"),
            vec![d],
            12.0 * hidden as f64,
        ));

        let gate_up = self.buffer("gate_up", 2 * inter);
        let act = gpu.storage_zeroed("act", inter as u64 * 4);
        let d = Geglu::new(gpu)
            .unwrap()
            .bind(gpu, "geglu", 1, inter, &gate_up, &act)
            .unwrap();
        pending.push((
            "geglu".into(),
            format!("1x{inter}"),
            vec![d],
            12.0 * inter as f64,
        ));

        let logits = self.buffer("logits", vocab);
        let d = SoftCap::new(gpu)
            .unwrap()
            .bind(gpu, "soft_cap", vocab, 30.0, &logits)
            .unwrap();
        pending.push((
            "soft_cap".into(),
            format!("{vocab}"),
            vec![d],
            8.0 * vocab as f64,
        ));
        let top = TopK::new(gpu).unwrap();
        for k in [1usize, 40, 64] {
            let t = top.bind(gpu, "top_k", &logits, vocab, k).unwrap();
            pending.push((
                "top_k".into(),
                format!("{vocab} k={k}"),
                t.dispatches,
                4.0 * vocab as f64,
            ));
        }
        for (kernel, shape, d, bytes) in pending {
            if self.wanted(&kernel) {
                let refs: Vec<&Dispatch> = d.iter().collect();
                self.record(&kernel, &shape, "f32", &refs, bytes, 0.0);
            }
        }
    }
}

fn main() {
    let options = GpuOptions {
        backend: std::env::var("GEMMA_WGPU_BACKEND")
            .unwrap_or_default()
            .parse()
            .expect("GEMMA_WGPU_BACKEND"),
        adapter: std::env::var("GEMMA_WGPU_ADAPTER").ok(),
        // Both layouts can be timed on one adapter: GEMMA_WGPU_LAYOUT=cpu or gpu.
        cpu_layout: match std::env::var("GEMMA_WGPU_LAYOUT").as_deref() {
            Ok("cpu") => Some(true),
            Ok("gpu") => Some(false),
            _ => None,
        },
        ..Default::default()
    };
    let gpu = Gpu::new(&options).unwrap_or_else(|e| panic!("{e}"));
    let reps = if gpu.caps.cpu_like { 3 } else { 50 };
    println!("adapter: {}", gpu.describe());
    let mut b = Bench {
        gpu,
        reps,
        clock: Clock::Wall,
        rows: vec![],
        filter: std::env::var("GEMMA_WGPU_BENCH_FILTER").ok(),
    };
    let copy_bw = b.copy();
    // Gemma 2 2B: hidden 2304, 8 heads / 4 kv of 256, intermediate 9216 (gate and up fused).
    b.matrix("2b.q_proj", 2048, 2304, 1);
    b.matrix("2b.gate_up", 2 * 9216, 2304, 1);
    b.matrix("2b.down", 2304, 9216, 1);
    b.matrix("2b.q_proj", 2048, 2304, 64);
    b.attention("2b", 8, 4, 256, 4096);
    b.small_kernels(2304, 9216, 256_000);
    // Gemma 2 9B: hidden 3584, 16 heads / 8 kv of 256, intermediate 14336.
    b.matrix("9b.down", 3584, 14336, 1);
    // Gemma 2 2B in Q4_K, and Gemma 3 270M (hidden 640, 4 heads / 1 kv of 256, intermediate
    // 2048, vocab 262144) in the real Q4_K_M file's formats: q, k, gate and up in Q5_0 (640 is
    // no multiple of 256), v and the tied embedding in Q8_0, o in Q4_K, down in Q6_K.
    b.matrix_in("2b.gate_up", WeightFormat::Q4K, 2 * 9216, 2304, 1);
    b.matrix_in("2b.down", WeightFormat::Q4K, 2304, 9216, 1);
    b.matrix_in("270m.q", WeightFormat::Q5_0, 1024, 640, 1);
    b.matrix_in("270m.gate_up", WeightFormat::Q5_0, 2 * 2048, 640, 1);
    b.matrix_in("270m.o", WeightFormat::Q4K, 640, 1024, 1);
    b.matrix_in("270m.down", WeightFormat::Q6K, 640, 2048, 1);
    b.matrix_in("270m.lm_head", WeightFormat::Q8_0, 262_144, 640, 1);
    b.attention("9b", 16, 8, 256, 4096);

    println!("timer: {:?}, {} repetitions per row", b.clock, b.reps);
    println!(
        "copy bandwidth (best of both layouts): {:.2} GB/s\n",
        copy_bw / 1e9
    );
    println!(
        "| {:<20} | {:<32} | {:<8} | {:>10} | {:>8} | {:>9} | {:>7} |",
        "kernel", "shape", "format", "time (us)", "GB/s", "GFLOP/s", "% copy"
    );
    println!(
        "|{:-<22}|{:-<34}|{:-<10}|{:->12}|{:->10}|{:->11}|{:->9}|",
        "", "", "", "", "", "", ""
    );
    for r in &b.rows {
        let s = r.time.as_secs_f64();
        let gbs = r.bytes / s / 1e9;
        let flops = if r.flops > 0.0 {
            format!("{:.1}", r.flops / s / 1e9)
        } else {
            "-".into()
        };
        println!(
            "| {:<20} | {:<32} | {:<8} | {:>10.1} | {:>8.2} | {:>9} | {:>6.1}% |",
            r.kernel,
            r.shape,
            r.format,
            s * 1e6,
            gbs,
            flops,
            100.0 * gbs / (copy_bw / 1e9)
        );
    }
}
