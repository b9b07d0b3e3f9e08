//! matvec, matmul and embedding for every weight format the shaders read, including
//! row-chunked and stacked matrices.

use crate::common::*;
use gemma_wgpu::gpu::Gpu;
use gemma_wgpu::kernels::matrix::{MatrixArgs, TILE_ROWS, tiled};
use gemma_wgpu::kernels::quantize_q8::{QuantizeQ8Buffers, WORDS_PER_BLOCK};
use gemma_wgpu::kernels::{Embedding, GpuMatrix, Matmul, Matvec, QuantizeQ8};
use gemma_wgpu::reference;
use gemma_wgpu::weights::WeightFormat;
use gemma_wgpu::weights::gguf::GgmlType;

/// Checks one product of a random [rows, k] matrix in `format`; returns its chunk count.
fn check_product(
    gpu: &Gpu,
    name: &str,
    kernel: Product,
    format: WeightFormat,
    shape: (usize, usize, usize),
    seed: u64,
) -> usize {
    let (n, rows, k) = shape;
    let (m, w) = matrix(seed, format, rows, k);
    let (problem, chunks) = product(gpu, kernel, (&m, &w), n, seed);
    problem
        .run_and_check(gpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    chunks
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

/// The shapes whose rows hold whole blocks of `format` (K-quants: 256 weights a block).
fn shapes_for(
    format: WeightFormat,
    shapes: &[(usize, usize, usize)],
) -> impl Iterator<Item = (usize, (usize, usize, usize))> + '_ {
    let block = block_len(format);
    shapes
        .iter()
        .copied()
        .enumerate()
        .filter(move |(_, (_, _, k))| k.is_multiple_of(block))
}

#[test]
fn matvec_matches_reference_for_every_format() {
    for dev in product_devices() {
        for format in WeightFormat::ALL {
            let kernel = Matvec::new(&dev.gpu, format).unwrap();
            let mut checked = 0;
            for (i, shape) in shapes_for(format, MATVEC_SHAPES) {
                let kernel = Product::Matvec(&kernel);
                check_product(&dev.gpu, &dev.name, kernel, format, shape, i as u64);
                checked += 1;
            }
            assert!(checked >= 4, "{format}: {checked} shapes");
        }
    }
}

/// The product of Gemma's stacked [gate; up] ending in GeGLU, in one dispatch: 1 output, an
/// odd count (a last unit with one output), 130, and the 270M's 2048 over 640; for a decode
/// step (matvec) and for blocks of tokens (matmul: 9 and 65 tokens, past whole tiles of 32
/// and 64, and 16 at the 270M's shape).
#[test]
fn product_geglu_matches_reference_for_every_format() {
    for dev in product_devices() {
        let gpu = &dev.gpu;
        for format in WeightFormat::ALL {
            let (mv, mm) = (
                Matvec::new(gpu, format).unwrap(),
                Matmul::new(gpu, format).unwrap(),
            );
            let k = 128usize.next_multiple_of(block_len(format));
            // (outputs, k, tokens, through matmul)
            let mut shapes = vec![
                (1usize, k, 1usize, false),
                (37, k, 2, false),
                (130, k, 1, false),
            ];
            shapes.extend([(1, k, 9, true), (37, k, 65, true), (130, k, 9, true)]);
            if k <= 640 && 640 % block_len(format) == 0 {
                shapes.extend([(2048, 640, 1, false), (2048, 640, 16, true)]);
            }
            for (i, &(d, k, n, matmul)) in shapes.iter().enumerate() {
                let (m, w) = matrix(40 + i as u64, format, 2 * d, k);
                let kernel = match matmul {
                    false => Product::Matvec(&mv),
                    true => Product::Matmul(&mm),
                };
                product_geglu(gpu, kernel, (&m, &w), n, i as u64)
                    .run_and_check(gpu)
                    .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
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
    (65, 67, 512),
];

#[test]
fn matmul_matches_reference_for_every_format() {
    for dev in devices() {
        for format in WeightFormat::ALL {
            let kernel = Matmul::new(&dev.gpu, format).unwrap();
            let mut checked = 0;
            for (i, shape) in shapes_for(format, MATMUL_SHAPES) {
                let kernel = Product::Matmul(&kernel);
                check_product(&dev.gpu, &dev.name, kernel, format, shape, 100 + i as u64);
                checked += 1;
            }
            assert!(checked >= 3, "{format}: {checked} shapes");
        }
    }
}

/// A 4 KiB binding limit splits a 300-row matrix into many chunks; results must not change.
#[test]
fn matrices_larger_than_a_binding_are_chunked_transparently() {
    // 8 KiB: a tile of 32 f32 rows of 64 weights (see GpuMatrix::tiled), 300 rows in several.
    for dev in devices_with(Some(8192)) {
        for format in WeightFormat::ALL {
            // 64 columns, or one block of the K-quants.
            let k = 64usize.next_multiple_of(block_len(format));
            let mv = Matvec::new(&dev.gpu, format).unwrap();
            let mm = Matmul::new(&dev.gpu, format).unwrap();
            let chunks = check_product(
                &dev.gpu,
                &dev.name,
                Product::Matvec(&mv),
                format,
                (2, 300, k),
                7,
            );
            let expected_chunks = 300usize.div_ceil(8192 / format.data_bytes_per_row(k));
            assert_eq!(chunks, expected_chunks, "{format}: chunk count");
            assert!(chunks > 1);
            check_product(
                &dev.gpu,
                &dev.name,
                Product::Matmul(&mm),
                format,
                (70, 300, k),
                8,
            );
            check_embedding(&dev.gpu, &dev.name, format, (300, k), 9);
        }
    }
}

fn check_embedding(
    gpu: &Gpu,
    name: &str,
    format: WeightFormat,
    (vocab, d): (usize, usize),
    seed: u64,
) {
    let (m, table) = matrix(seed, format, vocab, d);
    let kernel = Embedding::new(gpu, format).unwrap();
    embedding(gpu, &kernel, (&m, &table), 48.0, seed)
        .run_and_check(gpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn embedding_matches_reference_for_every_format() {
    for dev in devices() {
        for format in WeightFormat::ALL {
            let d = 64usize.next_multiple_of(block_len(format));
            check_embedding(&dev.gpu, &dev.name, format, (1000, d), 1);
            check_embedding(&dev.gpu, &dev.name, format, (301, 2304), 2);
        }
    }
}

#[test]
fn gguf_block_formats_match_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let expanded = GGML_TYPES.iter().filter(|t| t.0 != GgmlType::F16);
        let cases = GGML_TYPES
            .iter()
            .map(|&t| (t, false))
            .chain(expanded.map(|&t| (t, true)));
        for ((ty, _, _), expand) in cases {
            let (m, w) = ggml_matrix(11, ty, 70, 512);
            // The same blocks expanded for CPU adapters: identical values.
            let m = if expand { m.expand().unwrap() } else { m };
            let format = m.format;
            for n in [1usize, 9] {
                let (mv, mm);
                let kernel = if n == 1 {
                    mv = Matvec::new(gpu, format).unwrap();
                    Product::Matvec(&mv)
                } else {
                    mm = Matmul::new(gpu, format).unwrap();
                    Product::Matmul(&mm)
                };
                let (problem, _) = product(gpu, kernel, (&m, &w), n, 11 + n as u64);
                problem
                    .run_and_check(gpu)
                    .unwrap_or_else(|e| panic!("{}: ({ty:?}) {e}", dev.name));
            }
            let emb = Embedding::new(gpu, format).unwrap();
            embedding(gpu, &emb, (&m, &w), 2.0, 3)
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: ({ty:?}) {e}", dev.name));
        }
    }
}

/// Stacked matrices (Gemma's q, k and v) multiply as their parts side by side: in one chunk
/// where a binding holds them all (and, where the device tiles rows, every part but the last
/// is whole tiles), in several where not.
#[test]
fn stacked_matrices_multiply_as_their_parts() {
    let cases = [[40usize, 24, 24], [64, 32, 40]];
    for (limit, rows) in [(None, cases[0]), (None, cases[1]), (Some(8192), cases[1])] {
        let total: usize = rows.iter().sum();
        let whole_tiles = rows[..2].iter().all(|r| r % TILE_ROWS == 0);
        for dev in devices_with(limit) {
            let gpu = &dev.gpu;
            for format in [
                WeightFormat::F32,
                WeightFormat::Q8_0,
                WeightFormat::I8Affine,
                WeightFormat::Q4K,
            ] {
                let one_chunk = limit.is_none() && (whole_tiles || !tiled(gpu, format));
                let k = 64usize.next_multiple_of(block_len(format));
                let parts: Vec<_> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, &r)| matrix(20 + i as u64, format, r, k))
                    .collect();
                let values: Vec<f32> = parts.iter().flat_map(|(_, v)| v.clone()).collect();
                let uploaded = parts
                    .iter()
                    .map(|(m, _)| GpuMatrix::upload(gpu, "part", m).unwrap())
                    .collect();
                let stacked = GpuMatrix::concat_rows(gpu, uploaded).unwrap();
                assert_eq!(stacked.rows, total);
                let what = format!("{}: stacked {format}", dev.name);
                match one_chunk {
                    true => assert_eq!(stacked.chunks.len(), 1, "{what}: chunks"),
                    false => assert!(stacked.chunks.len() > 1, "{what}: chunks"),
                }
                let (mv, mm) = (
                    Matvec::new(gpu, format).unwrap(),
                    Matmul::new(gpu, format).unwrap(),
                );
                for n in [1usize, 9] {
                    let x = normal(30 + n as u64, n * k);
                    let kernel = match n {
                        1 => Product::Matvec(&mv),
                        _ => Product::Matmul(&mm),
                    };
                    let (y_ref, bound) = product_expected_for(kernel, &values, &x, total, k);
                    let xb = gpu.storage_init("x", f32_bytes(&x));
                    let yb = gpu.storage_zeroed("y", (n * total * 4) as u64);
                    let args = MatrixArgs::new(&stacked, &xb, &yb, n);
                    let d = match kernel {
                        Product::Matvec(k) => k.bind(gpu, "stacked", args),
                        Product::Matmul(k) => k.bind(gpu, "stacked", args),
                    };
                    gpu.run("stacked", &d.unwrap()).unwrap();
                    let y = gpu.read_f32(&yb).unwrap();
                    within(&format!("{what} n={n}"), &y[..n * total], &y_ref, &bound)
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}

/// The codes (first, second) of a quantize_q8 pair word c2 + 65536 c1.
fn pair_codes(w: u32) -> (i32, i32) {
    let second = (w as i32) << 16 >> 16;
    ((w as i32).wrapping_sub(second) >> 16, second)
}

/// quantize_q8 against reference::quantize_q8, block by block: the scale bit for bit (the same
/// f32 product), each code the reference's except where x / d lies within the rounding of the
/// GPU's 1 / d of a half (int8_x's ties: then either neighbour), the pair words packed as
/// matvec's XP32 reads them, the codes' sum and zero padding. One block, 72 (a 2B row) and 289
/// (past the workgroups of 64), an all-zero block (d = 0, codes 0) and a block with a NaN (d
/// NaN, so every product it enters is NaN).
#[test]
fn quantize_q8_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = QuantizeQ8::new(gpu).unwrap();
        for (i, blocks) in [1usize, 72, 289].into_iter().enumerate() {
            let mut x = normal(700 + i as u64, blocks * 32);
            if blocks > 2 {
                x[32..64].fill(0.0);
                x[64 + 5] = f32::NAN;
            }
            let xb = gpu.storage_init("x", f32_bytes(&x));
            let xq = gpu.storage_zeroed("xq", (blocks * WORDS_PER_BLOCK * 4) as u64);
            let buffers = QuantizeQ8Buffers { x: &xb, xq: &xq };
            let d = kernel.bind(gpu, "quantize_q8", x.len(), buffers).unwrap();
            gpu.run("quantize_q8", [&d]).unwrap();
            let words = gpu.read_u32(&xq).unwrap();
            let (values, ties) = int8_x(&x);
            for (b, w) in words.chunks(WORDS_PER_BLOCK).take(blocks).enumerate() {
                let what = format!("{}: quantize_q8 block {b} of {blocks}", dev.name);
                let block = &x[32 * b..][..32];
                let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let (d_ref, _) = reference::q8_scale(amax);
                let d = f32::from_bits(w[16]);
                if block.iter().any(|v| v.is_nan()) {
                    assert!(d.is_nan(), "{what}: d = {d} for a block with a NaN");
                    continue;
                }
                assert_eq!(d.to_bits(), d_ref.to_bits(), "{what}: d");
                // Entry e of the block: pair word (e % 16 / 4) of even (e % 4 in 0, 2) or odd,
                // lo (e < 16) or hi; first (e % 4 < 2) or second of the pair.
                let mut codes = [0i32; 32];
                for (e, c) in codes.iter_mut().enumerate() {
                    let slot = 2 * (e / 16) + e % 2;
                    let (first, second) = pair_codes(w[4 * slot + e % 16 / 4]);
                    *c = if e % 4 < 2 { first } else { second };
                }
                for (e, &c) in codes.iter().enumerate() {
                    let want = if d_ref > 0.0 {
                        values[32 * b + e] / d_ref
                    } else {
                        0.0
                    };
                    let tie = ties[32 * b + e] > 0.0;
                    let ok = c as f32 == want.round() || (tie && (c as f32 - want).abs() <= 1.0);
                    assert!(ok, "{what}: code {e} is {c}, the reference's {want}");
                }
                let sum: i32 = codes.iter().sum();
                assert_eq!(w[17] as i32, sum, "{what}: the codes' sum");
                assert!(
                    w[18..].iter().all(|&v| v == 0),
                    "{what}: padding {:?}",
                    &w[18..]
                );
            }
        }
    }
}

/// Which decode products take int8 activations on a CPU adapter (lavapipe): by default the
/// formats with their own `w_pdot32` (Q4_0), none with `--activations f32`, every quantized
/// format with `--activations int8`; plain floats never. Prefill's matmul keeps f32 there.
#[test]
fn cpu_layout_matvec_takes_int8_where_the_format_reads_it() {
    let open = |int8_products| {
        Gpu::new(&gemma_wgpu::gpu::GpuOptions {
            backend: gemma_wgpu::gpu::BackendChoice::Vulkan,
            int8_products,
            ..Default::default()
        })
        .expect("no Vulkan adapter: apt-get install -y mesa-vulkan-drivers")
    };
    let int8 = |gpu: &Gpu, f| Matvec::new(gpu, f).unwrap().int8();
    let auto = open(None);
    assert!(auto.caps.cpu_like, "lavapipe takes the CPU layout");
    assert!(int8(&auto, WeightFormat::Q4_0));
    assert!(!int8(&auto, WeightFormat::Q8_0));
    assert!(!int8(&auto, WeightFormat::I8Affine));
    assert!(!Matmul::new(&auto, WeightFormat::Q4_0).unwrap().int8());
    let f32_only = open(Some(false));
    assert!(!int8(&f32_only, WeightFormat::Q4_0));
    let all = open(Some(true));
    for f in [
        WeightFormat::Q4_0,
        WeightFormat::Q8_0,
        WeightFormat::I8Affine,
    ] {
        assert!(int8(&all, f), "{f}");
    }
    assert!(!int8(&all, WeightFormat::F32));
}

/// Matvec's GeGLU on the CPU layout's int8 path writes its output quantized too (for down_proj,
/// in place of a quantize_q8 pass): y bit for bit as the plain GeGLU writes it, and yq word for
/// word as quantize_q8 writes y. One block, the 270M's 2048 outputs over 640, and three vectors
/// of 96 with a NaN in the last's x (every block of that vector then has d NaN). Outputs that
/// are not whole blocks, and the kernels that never write yq, refuse it.
#[test]
fn matvec_geglu_writes_its_output_quantized_as_quantize_q8_does() {
    let mut checked = 0;
    for dev in product_devices() {
        let gpu = &dev.gpu;
        for format in [
            WeightFormat::Q4_0,
            WeightFormat::Q8_0,
            WeightFormat::I8Affine,
        ] {
            let mv = Matvec::new(gpu, format).unwrap();
            if !mv.quantizes_geglu() {
                continue;
            }
            for (i, (d, k, n)) in [(32usize, 64usize, 1usize), (2048, 640, 1), (96, 128, 3)]
                .into_iter()
                .enumerate()
            {
                let what = format!("{}: {format} GeGLU d={d} k={k} n={n}", dev.name);
                let (m, _) = matrix(1300 + i as u64, format, 2 * d, k);
                let gm = GpuMatrix::upload(gpu, "w", &m).unwrap();
                let mut x = normal(1310 + i as u64, n * k);
                if n > 1 {
                    x[(n - 1) * k + 3] = f32::NAN;
                }
                let xb = gpu.storage_init("x", f32_bytes(&x));
                let words = n * d / 32 * WORDS_PER_BLOCK;
                let (y0, y1) = (
                    gpu.storage_zeroed("y0", (4 * n * d) as u64),
                    gpu.storage_zeroed("y1", (4 * n * d) as u64),
                );
                let yq = gpu.storage_zeroed("yq", 4 * words as u64);
                let plain = mv
                    .bind_geglu(gpu, "geglu", MatrixArgs::new(&gm, &xb, &y0, n))
                    .unwrap();
                let args = MatrixArgs {
                    yq: Some(&yq),
                    ..MatrixArgs::new(&gm, &xb, &y1, n)
                };
                let quant = mv.bind_geglu(gpu, "geglu.quant", args).unwrap();
                assert_eq!(quant.len(), plain.len(), "{what}: dispatches");
                gpu.run("geglu", plain.iter().chain(&quant)).unwrap();
                let bits = |b| gpu.read_u32(b).unwrap();
                assert_eq!(
                    bits(&y0),
                    bits(&y1),
                    "{what}: y differs between the variants"
                );
                let (got, want) = (bits(&yq), quantize_q8_words(gpu, &y1, n * d));
                let blocks = got
                    .chunks(WORDS_PER_BLOCK)
                    .zip(want.chunks(WORDS_PER_BLOCK));
                for (b, (g, w)) in blocks.enumerate() {
                    let nan_vector = n > 1 && b >= (n - 1) * d / 32;
                    let d_got = f32::from_bits(g[16]);
                    assert_eq!(
                        nan_vector,
                        d_got.is_nan(),
                        "{what}: block {b} has d {d_got}"
                    );
                    // A block with a NaN has d NaN and codes of no meaning (either kernel's).
                    if !nan_vector {
                        assert_eq!(g, w, "{what}: block {b} of yq");
                    }
                }
                checked += 1;
            }
            // 33 outputs are not whole blocks; plain products and matmul never write yq.
            let (m, _) = matrix(1320, format, 2 * 33, 64);
            let gm = GpuMatrix::upload(gpu, "w", &m).unwrap();
            let xb = gpu.storage_zeroed("x", 4 * 64);
            let y = gpu.storage_zeroed("y", 4 * 66);
            let yq = gpu.storage_zeroed("yq", 4 * 48);
            let args = || MatrixArgs {
                yq: Some(&yq),
                ..MatrixArgs::new(&gm, &xb, &y, 1)
            };
            let refused = |r: Result<usize, gemma_wgpu::Error>, what: &str| {
                let e = r.expect_err(what).to_string();
                assert!(
                    e.contains("block") || e.contains("quantized"),
                    "{what}: {e}"
                );
            };
            refused(
                mv.bind_geglu(gpu, "g", args()).map(|d| d.len()),
                "33 outputs",
            );
            refused(mv.bind(gpu, "p", args()).map(|d| d.len()), "matvec");
            let mm = Matmul::new(gpu, format).unwrap();
            refused(mm.bind(gpu, "p", args()).map(|d| d.len()), "matmul");
            refused(mm.bind_geglu(gpu, "g", args()).map(|_| 1), "matmul GeGLU");
        }
    }
    assert!(
        checked >= 3,
        "no device wrote a quantized GeGLU: {checked} cases"
    );
}

/// The embedding on adapters whose decode products read x quantized by a pass of their own
/// (CPU adapters) writes its norm quantized too, for the first q/k/v: out and h bit for bit as
/// without it, and hq word for word as quantize_q8 writes h; tokens at the first and last rows
/// and a repeat, at the 2B's and 270M's widths, and a table split into chunks (each chunk's
/// dispatch writes its own tokens' blocks).
#[test]
fn embedding_writes_its_norm_quantized_as_quantize_q8_does() {
    use gemma_wgpu::kernels::embedding::EmbeddingArgs;
    let mut checked = 0;
    for (limit, dev) in [
        (None, devices()),
        (Some(512 * 1024), devices_with(Some(512 * 1024))),
    ]
    .into_iter()
    .flat_map(|(l, ds)| ds.into_iter().map(move |d| (l, d)))
    {
        let gpu = &dev.gpu;
        for (i, format) in [WeightFormat::Q4_0, WeightFormat::Q8_0, WeightFormat::F32]
            .into_iter()
            .enumerate()
        {
            let kernel = Embedding::new(gpu, format).unwrap();
            if !kernel.quantizes_h() {
                continue;
            }
            for (vocab, d) in [(300usize, 2304usize), (257, 640)] {
                let what = format!(
                    "{}: {format} embedding vocab={vocab} d={d} limit={limit:?}",
                    dev.name
                );
                let (m, _) = matrix(1500 + i as u64, format, vocab, d);
                let gm = GpuMatrix::upload(gpu, "embed", &m).unwrap();
                let ids = [0u32, vocab as u32 - 1, 7, 7];
                let n = ids.len();
                let idb = gpu.storage_init("ids", u32_bytes(&ids));
                let nb = gpu.storage_init("norm", f32_bytes(&normal(1510, d)));
                let words = n * d / 32 * WORDS_PER_BLOCK;
                let hq = gpu.storage_zeroed("hq", 4 * words as u64);
                let mut written = vec![];
                for quantized in [false, true] {
                    let out = gpu.storage_zeroed("out", (4 * n * d) as u64);
                    let h = gpu.storage_zeroed("h", (4 * n * d) as u64);
                    let args = EmbeddingArgs {
                        table: &gm,
                        ids: &idb,
                        n,
                        scale: 48.0,
                        out: &out,
                        norm: (&nb, 1e-6, 1.0),
                        h: &h,
                        hq: quantized.then_some(&hq),
                    };
                    let d = kernel.bind(gpu, "embedding", args).unwrap();
                    assert_eq!(d.len(), gm.chunks.len(), "{what}: a dispatch per chunk");
                    gpu.run("embedding", d.iter()).unwrap();
                    written.push((gpu.read_u32(&out).unwrap(), gpu.read_u32(&h).unwrap(), h));
                }
                assert_eq!(
                    written[0].0, written[1].0,
                    "{what}: out differs between the variants"
                );
                assert_eq!(
                    written[0].1, written[1].1,
                    "{what}: h differs between the variants"
                );
                assert_eq!(
                    gpu.read_u32(&hq).unwrap(),
                    quantize_q8_words(gpu, &written[1].2, n * d),
                    "{what}: hq"
                );
                checked += usize::from(gm.chunks.len() > 1) + 1;
            }
        }
    }
    assert!(
        checked >= 6,
        "too few quantizing embeddings checked: {checked}"
    );
}
