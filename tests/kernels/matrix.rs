//! matvec, matmul and embedding for every weight format, including row-chunked matrices.

use crate::common::*;
use gemma_wgpu::gpu::Gpu;
use gemma_wgpu::kernels::{Embedding, GpuMatrix, Matmul, Matvec};
use gemma_wgpu::reference;
use gemma_wgpu::weights::{HostMatrix, WeightFormat};

/// A random [rows, k] matrix in `format` and the f32 values the GPU computes with.
fn matrix(seed: u64, format: WeightFormat, rows: usize, k: usize) -> (HostMatrix, Vec<f32>) {
    let m = HostMatrix::from_f32(format, rows, k, &normal(seed, rows * k)).unwrap();
    let values = m.dequantize();
    (m, values)
}

/// Reference product and its per-element bound on the same (dequantized) weights.
fn expected(w: &[f32], x: &[f32], rows: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let y = reference::matmul(w, x, rows, k);
    let abs_w: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let bound = reference::matmul(&abs_w, &abs_x, rows, k)
        .into_iter()
        .map(|a| dot_bound(k, a))
        .collect();
    (y, bound)
}

enum Product<'a> {
    Matvec(&'a Matvec),
    Matmul(&'a Matmul),
}

#[allow(clippy::too_many_arguments)]
fn check_product(
    gpu: &Gpu,
    name: &str,
    kernel: Product,
    format: WeightFormat,
    n: usize,
    rows: usize,
    k: usize,
    seed: u64,
) -> usize {
    let (m, w) = matrix(seed, format, rows, k);
    let x = normal(seed + 1, n * k);
    let (y_ref, bound) = expected(&w, &x, rows, k);
    let gm = GpuMatrix::upload(gpu, "w", &m).unwrap();
    let xb = gpu.storage_init("x", f32_bytes(&x));
    let yb = gpu.storage_zeroed("y", (n * rows * 4) as u64);
    let dispatches = match kernel {
        Product::Matvec(k) => k.bind(gpu, "matvec", &gm, &xb, &yb, n),
        Product::Matmul(k) => k.bind(gpu, "matmul", &gm, &xb, &yb, n),
    }
    .unwrap();
    gpu.run("test", &dispatches).unwrap();
    let y = gpu.read_f32(&yb).unwrap();
    assert_within(
        &format!("{name}: {format} n={n} rows={rows} k={k}"),
        &y[..n * rows],
        &y_ref,
        &bound,
    );
    gm.chunks.len()
}

/// Shapes (n, rows, k): edge sizes around the workgroup and tile sizes, and real Gemma 2
/// projections (2B: hidden 2304, intermediate 9216; 9B: 3584; 27B: 4608).
const MATVEC_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 32),
    (1, 3, 32),
    (1, 63, 64),
    (1, 64, 96),
    (1, 65, 128),
    (3, 5, 2304),
    (1, 257, 2304),
    (1, 2304, 9216),
    (2, 101, 3584),
    (1, 67, 4608),
];

#[test]
fn matvec_matches_reference_for_every_format() {
    for dev in devices() {
        for format in WeightFormat::QUANTIZABLE {
            let kernel = Matvec::new(&dev.gpu, format).unwrap();
            for (i, &(n, rows, k)) in MATVEC_SHAPES.iter().enumerate() {
                check_product(
                    &dev.gpu,
                    &dev.name,
                    Product::Matvec(&kernel),
                    format,
                    n,
                    rows,
                    k,
                    i as u64,
                );
            }
        }
    }
}

const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 32),
    (63, 65, 64),
    (64, 64, 96),
    (65, 130, 32),
    (130, 70, 2304),
    (512, 192, 2304),
];

#[test]
fn matmul_matches_reference_for_every_format() {
    for dev in devices() {
        for format in WeightFormat::QUANTIZABLE {
            let kernel = Matmul::new(&dev.gpu, format).unwrap();
            for (i, &(n, rows, k)) in MATMUL_SHAPES.iter().enumerate() {
                check_product(
                    &dev.gpu,
                    &dev.name,
                    Product::Matmul(&kernel),
                    format,
                    n,
                    rows,
                    k,
                    100 + i as u64,
                );
            }
        }
    }
}

/// A 4 KiB binding limit splits a 300-row matrix into many chunks; results must not change.
#[test]
fn matrices_larger_than_a_binding_are_chunked_transparently() {
    for dev in devices_with(Some(4096)) {
        for format in WeightFormat::QUANTIZABLE {
            let mv = Matvec::new(&dev.gpu, format).unwrap();
            let mm = Matmul::new(&dev.gpu, format).unwrap();
            let chunks = check_product(
                &dev.gpu,
                &dev.name,
                Product::Matvec(&mv),
                format,
                2,
                300,
                64,
                7,
            );
            let expected_chunks = 300usize.div_ceil(4096 / format.data_bytes_per_row(64));
            assert_eq!(chunks, expected_chunks, "{format}: chunk count");
            assert!(chunks > 1);
            check_product(
                &dev.gpu,
                &dev.name,
                Product::Matmul(&mm),
                format,
                70,
                300,
                64,
                8,
            );
            check_embedding(&dev.gpu, &dev.name, format, 300, 64, 9);
        }
    }
}

fn check_embedding(gpu: &Gpu, name: &str, format: WeightFormat, vocab: usize, d: usize, seed: u64) {
    let (m, table) = matrix(seed, format, vocab, d);
    let kernel = Embedding::new(gpu, format).unwrap();
    // First and last rows, repeats, and random ids.
    let mut ids = vec![0u32, vocab as u32 - 1, 5, 5];
    ids.extend(
        normal(seed, 9)
            .iter()
            .map(|v| ((v.abs() * 1e4) as usize % vocab) as u32),
    );
    let scale = 48.0;
    let expected = reference::embedding(&table, d, &ids, scale);
    let gm = GpuMatrix::upload(gpu, "embed", &m).unwrap();
    let idb = gpu.storage_init("ids", u32_bytes(&ids));
    let out = gpu.storage_zeroed("out", (ids.len() * d * 4) as u64);
    let dispatches = kernel
        .bind(gpu, "embedding", &gm, &idb, ids.len(), scale, &out)
        .unwrap();
    gpu.run("test", &dispatches).unwrap();
    let got = gpu.read_f32(&out).unwrap();
    // One rounding: the product of the exact weight and the scale.
    assert_close(
        &format!("{name}: embedding {format} vocab={vocab} d={d}"),
        &got,
        &expected,
        0.0,
        EPS,
    );
}

#[test]
fn embedding_matches_reference_for_every_format() {
    for dev in devices() {
        for format in WeightFormat::QUANTIZABLE {
            check_embedding(&dev.gpu, &dev.name, format, 1000, 64, 1);
            check_embedding(&dev.gpu, &dev.name, format, 301, 2304, 2);
        }
    }
}

/// GGUF block types: (type, block bytes, offsets of the f16 scale fields).
const GGML_TYPES: &[(gemma_wgpu::weights::gguf::GgmlType, usize, &[usize])] = {
    use gemma_wgpu::weights::gguf::GgmlType::*;
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
fn ggml_matrix(
    seed: u64,
    ty: gemma_wgpu::weights::gguf::GgmlType,
    size: usize,
    halves: &[usize],
    rows: usize,
    k: usize,
) -> (HostMatrix, Vec<f32>) {
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

#[test]
fn gguf_block_formats_match_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let expanded = GGML_TYPES
            .iter()
            .filter(|t| t.0 != gemma_wgpu::weights::gguf::GgmlType::F16);
        let cases = GGML_TYPES
            .iter()
            .map(|&t| (t, false))
            .chain(expanded.map(|&t| (t, true)));
        for ((ty, size, halves), expand) in cases {
            let (m, w) = ggml_matrix(11, ty, size, halves, 70, 512);
            // The same blocks expanded for CPU adapters: identical values.
            let m = if expand { m.to_i8_affine().unwrap() } else { m };
            let format = m.format;
            let gm = GpuMatrix::upload(gpu, "w", &m).unwrap();
            for n in [1usize, 9] {
                let x = normal(12 + n as u64, n * 512);
                let (y_ref, bound) = expected(&w, &x, 70, 512);
                let xb = gpu.storage_init("x", f32_bytes(&x));
                let yb = gpu.storage_zeroed("y", (n * 70 * 4) as u64);
                let d = if n == 1 {
                    Matvec::new(gpu, format)
                        .unwrap()
                        .bind(gpu, "matvec", &gm, &xb, &yb, n)
                } else {
                    Matmul::new(gpu, format)
                        .unwrap()
                        .bind(gpu, "matmul", &gm, &xb, &yb, n)
                }
                .unwrap();
                gpu.run("test", &d).unwrap();
                let what = format!("{}: {format} ({ty:?}) n={n}", dev.name);
                assert_within(&what, &gpu.read_f32(&yb).unwrap(), &y_ref, &bound);
            }
            let ids = [0u32, 69, 33];
            let emb = Embedding::new(gpu, format).unwrap();
            let idb = gpu.storage_init("ids", u32_bytes(&ids));
            let out = gpu.storage_zeroed("out", (3 * 512 * 4) as u64);
            let d = emb.bind(gpu, "embedding", &gm, &idb, 3, 2.0, &out).unwrap();
            gpu.run("test", &d).unwrap();
            let expected = reference::embedding(&w, 512, &ids, 2.0);
            assert_close(
                &format!("{}: embedding {format}", dev.name),
                &gpu.read_f32(&out).unwrap(),
                &expected,
                0.0,
                EPS,
            );
        }
    }
}
