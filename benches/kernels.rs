//! Kernel benchmarks at real Gemma 2 2B and 9B and Gemma 3 270M shapes: GPU time per call
//! (timestamp queries where the adapter has them, else wall time around a synchronised batch),
//! achieved GB/s or GFLOP/s, and the fractions of a plain copy kernel's bandwidth and of chains
//! of fused multiply-adds' arithmetic rate (the f32 peak) measured in the same run.
//!
//! Every row is one of the tests' problems (tests/common/cases.rs) and is checked against the
//! CPU reference with the tests' tolerance before it is timed; a row that disagrees stops the
//! run with a non-zero exit naming it.
//!
//! `cargo bench --bench kernels`; GEMMA_WGPU_BACKEND / GEMMA_WGPU_ADAPTER choose the device,
//! GEMMA_WGPU_BENCH_FILTER=matvec keeps the rows whose kernel name contains the text (for the
//! matrix products, the kernel and the shape's name: "matvec 270m.lm_head"),
//! GEMMA_WGPU_LAYOUT=cpu|gpu forces an adapter class's access patterns.
//! GEMMA_WGPU_BENCH_REPS sets the repetitions per row (default 3 on CPU adapters, 50 on GPUs).
//!
//! Napkin math: decode is bandwidth-bound, a matvec reads every weight once, so its GB/s over
//! the copy kernel's GB/s (which reads and writes) is the fraction of the memory system used.
//! Prefill is compute-bound: the matrix products and `attention (pp64)` (one 64-query prefill
//! step at the end of its context, 4 head_dim flops per query head and visible key: the
//! scores' and the values' head_dim multiply-adds)
//! are read as GFLOP/s against the f32 peak. `add 1 (dispatch floor)`, an add of one float, is
//! what every dispatch of a step costs the adapter at least.

use gemma_wgpu::gpu::{Clock, Dispatch, Gpu, GpuOptions};
use gemma_wgpu::kernels::copy::CopyBuffers;
use gemma_wgpu::kernels::*;
use gemma_wgpu::weights::WeightFormat;
use std::time::Duration;

#[path = "../tests/common/cases.rs"]
mod cases;
use cases::{AttentionCase, NormCase, Problem, Product};

struct Row {
    kernel: String,
    shape: String,
    format: String,
    time: Duration,
    bytes: f64,
    flops: f64,
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

    /// Checks `p` against the CPU reference (the tests' tolerance), then times it; a row that
    /// disagrees stops the run with a non-zero exit, naming the row.
    fn row(&mut self, kernel: &str, shape: &str, format: &str, p: &Problem) {
        if let Err(e) = p.run_and_check(&self.gpu) {
            eprintln!("row `{kernel} | {shape} | {format}` disagrees with the CPU reference: {e}");
            std::process::exit(1);
        }
        let refs: Vec<&Dispatch> = p.dispatches.iter().collect();
        self.record(kernel, shape, format, &refs, p.bytes, p.flops);
    }

    fn copy(&mut self) -> f64 {
        let n = 16 << 20; // 64 MiB of f32
        let data: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2654435761)).collect();
        let src = self.gpu.storage_init("src", bytemuck::cast_slice(&data));
        for contiguous in [false, true] {
            let dst = self.gpu.storage_zeroed("dst", n as u64 * 4);
            let k = Copy::new(&self.gpu, Some(contiguous)).unwrap();
            let buffers = CopyBuffers {
                src: &src,
                dst: &dst,
            };
            let d = k.bind(&self.gpu, "copy", n, buffers).unwrap();
            let layout = if contiguous {
                "contiguous"
            } else {
                "interleaved"
            };
            let kernel = format!("copy ({layout})");
            self.gpu.run("check", [&d]).unwrap();
            if self.gpu.read_u32(&dst).unwrap() != data {
                eprintln!("row `{kernel}` disagrees: the copy differs from its source");
                std::process::exit(1);
            }
            self.record(&kernel, "64 MiB", "f32", &[&d], 2.0 * 4.0 * n as f64, 0.0);
        }
        // The yardstick: the better of the two access patterns on this adapter.
        self.rows
            .iter()
            .map(|r| r.bytes / r.time.as_secs_f64())
            .fold(0.0, f64::max)
    }

    /// The adapter's f32 arithmetic peak as a kernel reaches it: chains of fused
    /// multiply-adds (shaders/fma.wgsl), enough invocations to fill the device.
    fn peak(&mut self) -> f64 {
        let gpu = &self.gpu;
        let kernel = Fma::new(gpu).unwrap();
        let invocations = if gpu.caps.cpu_like { 1 << 14 } else { 1 << 20 };
        let p = cases::fma(gpu, &kernel, invocations, 4096, 256);
        self.row(
            "fma (f32 peak)",
            &format!("{invocations} x 4096 steps"),
            "f32",
            &p,
        );
        let r = self.rows.last().unwrap();
        r.flops / r.time.as_secs_f64()
    }

    /// A [rows, k] product in every format with a quantizer.
    fn matrix(&mut self, name: &str, rows: usize, k: usize, n: usize) {
        for format in WeightFormat::QUANTIZABLE {
            self.matrix_in(name, format, rows, k, n);
        }
    }

    /// One weight format: quantized from random values where there is a quantizer, else
    /// random GGUF blocks with sane f16 scales, both as stored and as CPU adapters expand
    /// them (Q8_0 or i8_affine, see `HostMatrix::expand`).
    fn matrix_in(&mut self, name: &str, format: WeightFormat, rows: usize, k: usize, n: usize) {
        let kind = if n == 1 { "matvec" } else { "matmul" };
        if !self.wanted(&format!("{kind} {name}")) {
            return;
        }
        let (m, w) = cases::matrix(7, format, rows, k);
        self.matrix_of(name, (&m, &w), n);
        if format.ggml_block().is_some()
            && let Some(expanded) = m.expand()
        {
            self.matrix_of(name, (&expanded, &w), n);
        }
    }

    fn matrix_of(
        &mut self,
        name: &str,
        (m, w): (&gemma_wgpu::weights::HostMatrix, &[f32]),
        n: usize,
    ) {
        let gpu = &self.gpu;
        let (mv, mm);
        let (kind, kernel) = if n == 1 {
            mv = Matvec::new(gpu, m.format).unwrap();
            ("matvec", Product::Matvec(&mv))
        } else {
            mm = Matmul::new(gpu, m.format).unwrap();
            ("matmul", Product::Matmul(&mm))
        };
        let (p, _) = cases::product(gpu, kernel, (m, w), n, 8);
        // The CPU layout's int8 path is two kernels, x's quantization then the product: the
        // first row times both, the second the product alone (the same bytes).
        let two_kernels = gpu.caps.cpu_like && matches!(kernel, Product::Matvec(k) if k.int8());
        let shape = format!("{name} {}x{} n={n}", m.rows, m.cols);
        self.row(kind, &shape, m.format.name(), &p);
        if two_kernels {
            let refs: Vec<&Dispatch> = p.dispatches[1..].iter().collect();
            let kernel = "matvec (product alone)";
            self.record(kernel, &shape, m.format.name(), &refs, p.bytes, p.flops);
        }
    }

    /// Attention of the last n_q positions of ctx (decode: n_q = 1; prefill: a step of n_q
    /// queries) over a cache of ctx filled positions, with Gemma 2's soft-cap of 50 on the
    /// scores or (Gemma 3) none.
    fn attention(
        &mut self,
        name: &str,
        (heads, kv_heads, hd): (usize, usize, usize),
        ctx: usize,
        n_q: usize,
        softcap: Option<f32>,
    ) {
        let kind = if n_q == 1 {
            "attention (decode)".to_string()
        } else {
            format!("attention (pp{n_q})")
        };
        if !self.wanted(&kind) {
            return;
        }
        let gpu = &self.gpu;
        let dtype = KvDtype::default_for(&gpu.caps);
        let case = AttentionCase {
            heads,
            kv_heads,
            head_dim: hd,
            window: None,
            softcap,
            q_gain: 1.0,
            capacity: ctx,
            steps: vec![(0..ctx as u32, (ctx - n_q) as u32..ctx as u32)],
        };
        let store = KvStore::new(gpu, dtype).unwrap();
        let kernel = Attention::new(gpu, dtype).unwrap();
        let p = cases::attention(gpu, (&store, &kernel), dtype, &case, 3).remove(0);
        let shape = format!("{name} {heads}/{kv_heads}x{hd} ctx={ctx}");
        self.row(&kind, &shape, &format!("kv {dtype:?}"), &p);
    }

    /// Storing one token's keys and values into a cache of `capacity` positions.
    fn kv_store(&mut self, name: &str, kv_dim: usize, capacity: usize) {
        if !self.wanted("kv_store") {
            return;
        }
        let gpu = &self.gpu;
        let dtype = KvDtype::default_for(&gpu.caps);
        let kernel = KvStore::new(gpu, dtype).unwrap();
        let position = [capacity as u32 - 1];
        let p = cases::kv_store(gpu, &kernel, dtype, (kv_dim, capacity), &position, 4);
        let shape = format!("{name} 1x{kv_dim} capacity={capacity}");
        self.row("kv_store", &shape, &format!("kv {dtype:?}"), &p);
    }

    fn rms_norm(&mut self, name: &str, n: usize, d: usize) {
        if !self.wanted("rms_norm") {
            return;
        }
        let kernel = RmsNorm::new(&self.gpu).unwrap();
        let p = cases::rms_norm(&self.gpu, &kernel, (n, d, 1.0), NormCase::PLAIN, 6);
        self.row("rms_norm", &format!("{name} {n}x{d}"), "f32", &p);
    }

    /// A post-norm into the residual stream, then the next norm.
    fn residual_norm(&mut self, name: &str, n: usize, d: usize) {
        if !self.wanted("residual_norm") {
            return;
        }
        let kernel = ResidualNorm::new(&self.gpu).unwrap();
        let p = cases::residual_norm(&self.gpu, &kernel, (n, d, 1.0), NormCase::PLAIN, 6);
        self.row("residual_norm", &format!("{name} {n}x{d}"), "f32", &p);
    }

    /// The step between the q/k/v products and attention for one decode token.
    fn rope_store(
        &mut self,
        name: &str,
        (heads, kv_heads, hd): (usize, usize, usize),
        norms: bool,
    ) {
        if !self.wanted("rope_store") {
            return;
        }
        let dtype = KvDtype::F16;
        let kernel = RopeStore::new(&self.gpu, dtype).unwrap();
        let case = cases::RopeStoreCase {
            heads,
            kv_heads,
            head_dim: hd,
            norms,
            dtype,
            capacity: 4096,
            positions: &[4095],
        };
        let p = cases::rope_store(&self.gpu, &kernel, &case, 6);
        let shape = format!("{name} {heads}/{kv_heads}x{hd}");
        self.row("rope_store", &shape, "kv F16", &p);
    }

    /// Gathering a decode token's and a prompt's rows (13 ids) from an embedding table.
    fn embedding(&mut self, name: &str, format: WeightFormat, vocab: usize, d: usize) {
        if !self.wanted("embedding") {
            return;
        }
        let (m, table) = cases::matrix(9, format, vocab, d);
        let kernel = Embedding::new(&self.gpu, format).unwrap();
        let p = cases::embedding(&self.gpu, &kernel, (&m, &table), 25.3, 9);
        self.row(
            "embedding",
            &format!("{name} 13 of {vocab}x{d}"),
            format.name(),
            &p,
        );
    }

    /// What a dispatch costs the adapter at least: an add of one float, timed as every row is
    /// (`GEMMA_WGPU_BENCH_REPS` dispatches in one pass). Every dispatch of a step pays it.
    fn dispatch_floor(&mut self) {
        if self.wanted("add") {
            let gpu = &self.gpu;
            let p = cases::add(gpu, &Add::new(gpu).unwrap(), 1, 9);
            self.row("add", "1 (dispatch floor)", "f32", &p);
        }
    }

    fn elementwise(&mut self, name: &str, hidden: usize, inter: usize) {
        let gpu = &self.gpu;
        if self.wanted("add") {
            let p = cases::add(gpu, &Add::new(gpu).unwrap(), hidden, 10);
            self.row("add", &format!("{name} {hidden}"), "f32", &p);
        }
        let gpu = &self.gpu;
        if self.wanted("geglu") {
            let p = cases::geglu(gpu, &Geglu::new(gpu).unwrap(), 1, inter, 11);
            self.row("geglu", &format!("{name} 1x{inter}"), "f32", &p);
        }
    }

    fn logits(&mut self, name: &str, vocab: usize, soft_cap: bool, ks: &[usize]) {
        let gpu = &self.gpu;
        if soft_cap && self.wanted("soft_cap") {
            let p = cases::soft_cap(gpu, &SoftCap::new(gpu).unwrap(), vocab, 12);
            self.row("soft_cap", &format!("{name} {vocab}"), "f32", &p);
        }
        if !self.wanted("top_k") {
            return;
        }
        let top = TopK::new(&self.gpu).unwrap();
        for &k in ks {
            // As a step ranks: greedy with the soft-cap folded in, sampled after the soft_cap
            // kernel (the row above).
            let cap = (soft_cap && k == 1).then_some(30.0);
            let p = cases::top_k(&self.gpu, &top, (vocab, k), ("normal", cap), 13);
            self.row("top_k", &format!("{name} {vocab} k={k}"), "f32", &p);
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
        // And both activations of the quantized matvecs: GEMMA_WGPU_ACTIVATIONS=int8 or f32.
        int8_products: match std::env::var("GEMMA_WGPU_ACTIVATIONS").as_deref() {
            Ok("int8") => Some(true),
            Ok("f32") => Some(false),
            _ => None,
        },
        ..Default::default()
    };
    let gpu = Gpu::new(&options).unwrap_or_else(|e| panic!("{e}"));
    let reps = std::env::var("GEMMA_WGPU_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if gpu.caps.cpu_like { 3 } else { 50 });
    println!("adapter: {}", gpu.describe());
    println!(
        "activations of the quantized products: {}",
        gpu.caps.activations()
    );
    let mut b = Bench {
        gpu,
        reps,
        clock: Clock::Wall,
        rows: vec![],
        filter: std::env::var("GEMMA_WGPU_BENCH_FILTER").ok(),
    };
    let copy_bw = b.copy();
    let peak = b.peak();
    b.dispatch_floor();
    // Gemma 2 2B: hidden 2304, 8 heads / 4 kv of 256, intermediate 9216 (gate and up fused),
    // vocab 256000.
    b.matrix("2b.q_proj", 2048, 2304, 1);
    b.matrix("2b.gate_up", 2 * 9216, 2304, 1);
    b.matrix("2b.down", 2304, 9216, 1);
    b.matrix("2b.q_proj", 2048, 2304, 64);
    b.matrix_in("2b.gate_up", WeightFormat::Q4_0, 2 * 9216, 2304, 64);
    b.matrix_in("2b.down", WeightFormat::Q4_0, 2304, 9216, 64);
    b.attention("2b", (8, 4, 256), 4096, 1, Some(50.0));
    b.attention("2b", (8, 4, 256), 1024, 64, Some(50.0));
    b.kv_store("2b", 4 * 256, 4096);
    b.rms_norm("2b", 1, 2304);
    b.residual_norm("2b", 1, 2304);
    b.rope_store("2b", (8, 4, 256), false);
    b.elementwise("2b", 2304, 9216);
    b.logits("2b", 256_000, true, &[1, 40, 64]);
    // Gemma 2 9B: hidden 3584, 16 heads / 8 kv of 256, intermediate 14336.
    b.matrix("9b.down", 3584, 14336, 1);
    b.matrix_in("9b.down", WeightFormat::Q4_0, 3584, 14336, 64);
    gemma3_270m_rows(&mut b);
    b.attention("9b", (16, 8, 256), 4096, 1, Some(50.0));

    print_table(&b, copy_bw, peak);
}

/// The rows with the run's yardsticks: % of the copy bandwidth and of the f32 peak.
fn print_table(b: &Bench, copy_bw: f64, peak: f64) {
    println!("timer: {:?}, {} repetitions per row", b.clock, b.reps);
    println!(
        "copy bandwidth (best of both layouts): {:.2} GB/s",
        copy_bw / 1e9
    );
    println!("f32 peak (fma chains): {:.1} GFLOP/s\n", peak / 1e9);
    println!(
        "| {:<22} | {:<32} | {:<9} | {:>10} | {:>8} | {:>9} | {:>7} | {:>7} |",
        "kernel", "shape", "format", "time (us)", "GB/s", "GFLOP/s", "% copy", "% peak"
    );
    println!(
        "|{:-<24}|{:-<34}|{:-<11}|{:->12}|{:->10}|{:->11}|{:->9}|{:->9}|",
        "", "", "", "", "", "", "", ""
    );
    for r in &b.rows {
        let s = r.time.as_secs_f64();
        let gbs = r.bytes / s / 1e9;
        let (flops, of_peak) = if r.flops > 0.0 {
            let f = r.flops / s;
            (
                format!("{:.1}", f / 1e9),
                format!("{:.1}%", 100.0 * f / peak),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "| {:<22} | {:<32} | {:<9} | {:>10.1} | {:>8.2} | {:>9} | {:>6.1}% | {:>7} |",
            r.kernel,
            r.shape,
            r.format,
            s * 1e6,
            gbs,
            flops,
            100.0 * gbs / (copy_bw / 1e9),
            of_peak
        );
    }
}

/// Gemma 2 2B in Q4_K, and Gemma 3 270M (hidden 640, 4 heads / 1 kv of 256, intermediate
/// 2048, vocab 262144) in the real Q4_K_M file's formats: q, k, gate and up in Q5_0 (640 is
/// no multiple of 256), v and the tied embedding in Q8_0, o in Q4_K, down in Q6_K.
fn gemma3_270m_rows(b: &mut Bench) {
    b.matrix_in("2b.down", WeightFormat::F16, 2304, 9216, 1);
    b.matrix_in("2b.gate_up", WeightFormat::Q4K, 2 * 9216, 2304, 1);
    b.matrix_in("2b.down", WeightFormat::Q4K, 2304, 9216, 1);
    b.matrix_in("270m.q", WeightFormat::Q5_0, 1024, 640, 1);
    b.matrix_in("270m.k", WeightFormat::Q5_0, 256, 640, 1);
    b.matrix_in("270m.v", WeightFormat::Q8_0, 256, 640, 1);
    b.matrix_in("270m.gate_up", WeightFormat::Q5_0, 2 * 2048, 640, 1);
    b.matrix_in("270m.o", WeightFormat::Q4K, 640, 1024, 1);
    b.matrix_in("270m.down", WeightFormat::Q6K, 640, 2048, 1);
    b.matrix_in("270m.lm_head", WeightFormat::Q8_0, 262_144, 640, 1);
    b.matrix_in("270m.q", WeightFormat::Q5_0, 1024, 640, 64);
    b.matrix_in("270m.gate_up", WeightFormat::Q5_0, 2 * 2048, 640, 64);
    b.matrix_in("270m.down", WeightFormat::Q6K, 640, 2048, 64);
    b.embedding("270m", WeightFormat::Q8_0, 262_144, 640);
    b.attention("270m", (4, 1, 256), 4096, 1, None);
    // A decode step early in a context (llama-bench's tg runs from position 0): what a
    // dispatch of attention costs beyond its keys.
    b.attention("270m", (4, 1, 256), 64, 1, None);
    // The first prefill step (positions 0..63): what a step of attention costs beyond its
    // keys.
    b.attention("270m", (4, 1, 256), 64, 64, None);
    b.attention("270m", (4, 1, 256), 512, 64, None);
    b.kv_store("270m", 256, 4096);
    b.rms_norm("270m", 1, 640);
    b.residual_norm("270m", 1, 640);
    b.rope_store("270m", (4, 1, 256), true);
    b.elementwise("270m", 640, 2048);
    b.logits("270m", 262_144, false, &[1, 40]);
}
