//! rms_norm, and residual_norm (a post-norm into the residual stream, then the next norm),
//! each also as a step's final norm, which flags the rows that are not finite.

use crate::common::*;
use gemma_wgpu::kernels::quantize_q8::{self, QuantizeQ8Buffers};
use gemma_wgpu::kernels::residual_norm::{NormOutput, ResidualNormBuffers};
use gemma_wgpu::kernels::rms_norm::RmsNormParams;
use gemma_wgpu::kernels::{QuantizeQ8, ResidualNorm, RmsNorm};

/// Sizes around the workgroup (256) and Gemma 2's hidden sizes.
const DIMS: &[usize] = &[1, 255, 256, 257, 1000, 2304, 3584, 4608];

#[test]
fn rms_norm_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = RmsNorm::new(gpu).unwrap();
        for (i, &d) in DIMS.iter().enumerate() {
            for (n, w_offset, flagged) in [(1usize, 1.0f32, true), (5, 0.0, false)] {
                let seed = 10 * i as u64 + n as u64;
                let case = NormCase {
                    flagged,
                    poison: None,
                };
                rms_norm(gpu, &kernel, (n, d, w_offset), case, seed)
                    .run_and_check(gpu)
                    .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}

#[test]
fn residual_norm_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = ResidualNorm::new(gpu).unwrap();
        for (i, &d) in DIMS.iter().enumerate() {
            for (n, w_offset, flagged) in [(1usize, 1.0f32, false), (5, 0.0, true)] {
                let case = NormCase {
                    flagged,
                    poison: None,
                };
                residual_norm(
                    gpu,
                    &kernel,
                    (n, d, w_offset),
                    case,
                    10 * i as u64 + n as u64,
                )
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
    }
}

/// The final norms' flags are 1 exactly in the rows whose output holds a NaN or an infinity,
/// wherever the bad input is (first, last, past a workgroup's stride), and 0 for finite
/// values of any size (f32::MAX overflows the sum of squares, and the row norms to zeros).
/// An infinite input leaves one NaN in its row (inf * 0) and zeros elsewhere: one invocation
/// alone sees it, and the whole workgroup must flag the row.
#[test]
fn final_norms_flag_rows_that_are_not_finite() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let (rms, residual) = (RmsNorm::new(gpu).unwrap(), ResidualNorm::new(gpu).unwrap());
        for (i, &d) in [1usize, 257, 640, 2304].iter().enumerate() {
            let n = 5;
            // Elements d - 1 and d / 2 + 1 fall on invocations other than the first.
            let poisons = [
                (0, f32::NAN),
                (n * d - 1, f32::INFINITY),
                (2 * d + (d / 2 + 1).min(d - 1), f32::NEG_INFINITY),
                (3 * d + (d - 1).min(300), f32::MAX),
            ];
            for (j, poison) in poisons.into_iter().enumerate() {
                let case = NormCase {
                    flagged: true,
                    poison: Some(poison),
                };
                let seed = 100 + 10 * i as u64 + j as u64;
                for problem in [
                    rms_norm(gpu, &rms, (n, d, 1.0), case, seed),
                    residual_norm(gpu, &residual, (n, d, 0.0), case, seed),
                ] {
                    problem
                        .run_and_check(gpu)
                        .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
                }
            }
        }
    }
}

/// residual_norm's quantizing variants (the input of decode products that take int8 x on CPU
/// adapters; with the rows' flags, a decode step's final norm before an lm_head that does): x
/// and h bit for bit as the plain variant's (checked against the reference above), the flags
/// as the flagged variant's, and hq word for word as QuantizeQ8 writes h (checked against
/// reference::quantize_q8 in tests/kernels/matrix.rs), a block with a NaN included; at
/// Gemma's hidden sizes, not multiples of the workgroup, over several rows.
#[test]
fn residual_norm_quantizes_h_as_quantize_q8_does() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let (residual, quantize) = (
            ResidualNorm::new(gpu).unwrap(),
            QuantizeQ8::new(gpu).unwrap(),
        );
        for (i, (n, d)) in [(1usize, 640usize), (1, 2304), (3, 3584), (2, 32)]
            .into_iter()
            .enumerate()
        {
            let seed = 900 + 10 * i as u64;
            let (mut o, post, next, x) = (
                normal(seed, n * d),
                normal(seed + 1, d),
                normal(seed + 2, d),
                normal(seed + 3, n * d),
            );
            if n > 1 {
                o[d + d / 2] = f32::NAN;
            }
            let params = RmsNormParams {
                n: n as u32,
                d: d as u32,
                eps: 1e-6,
                w_offset: 1.0,
            };
            let words = n * d / quantize_q8::BLOCK * quantize_q8::WORDS_PER_BLOCK;
            let (ob, pb, nb) = (
                gpu.storage_init("o", f32_bytes(&o)),
                gpu.storage_init("post", f32_bytes(&post)),
                gpu.storage_init("next", f32_bytes(&next)),
            );
            let mut outputs = vec![];
            let mut flagged = vec![];
            let variants = [
                NormOutput::H,
                NormOutput::Quantized,
                NormOutput::Flagged,
                NormOutput::FlaggedQuantized,
            ];
            for output in variants {
                let flags = gpu.storage_init("flags", u32_bytes(&vec![7; n]));
                let xb = gpu.storage_init("x", f32_bytes(&x));
                let hb = gpu.storage_zeroed("h", (4 * n * d) as u64);
                let hq = gpu.storage_zeroed("hq", 4 * words as u64);
                let buffers = ResidualNormBuffers {
                    o: &ob,
                    post: &pb,
                    next: &nb,
                    x: &xb,
                    h: &hb,
                    flags: &flags,
                    hq: &hq,
                };
                let norm = residual
                    .bind(gpu, "residual_norm", params, buffers, output)
                    .unwrap();
                gpu.run("residual_norm", [&norm]).unwrap();
                flagged.push(gpu.read_u32(&flags).unwrap());
                outputs.push((xb, hb, hq));
            }
            let what = format!("{}: residual_norm n={n} d={d}", dev.name);
            let bits = |b| gpu.read_u32(b).unwrap();
            let (x0, h0, _) = &outputs[0];
            // The flagged variants flag the NaN's row (row 1) and no other; the others leave
            // the flags as they were.
            let nan_row: Vec<u32> = (0..n).map(|r| u32::from(n > 1 && r == 1)).collect();
            for ((v, (x, h, _)), flags) in variants.iter().zip(&outputs).zip(&flagged) {
                assert_eq!(bits(x0), bits(x), "{what}: x differs in {v:?}");
                assert_eq!(bits(h0), bits(h), "{what}: h differs in {v:?}");
                let want = match v.flagged() {
                    true => &nan_row,
                    false => &vec![7; n],
                };
                assert_eq!(flags, want, "{what}: {v:?} flags");
            }
            let (_, h1, hq) = &outputs[1];
            assert_eq!(
                bits(hq),
                bits(&outputs[3].2),
                "{what}: hq differs with the flags"
            );
            let xq = gpu.storage_zeroed("xq", 4 * words as u64);
            let buffers = QuantizeQ8Buffers { x: h1, xq: &xq };
            let q = quantize.bind(gpu, "quantize_q8", n * d, buffers).unwrap();
            gpu.run("quantize_q8", [&q]).unwrap();
            let (got, want) = (bits(hq), bits(&xq));
            for (b, (g, w)) in got.chunks(24).zip(want.chunks(24)).enumerate() {
                // A block with a NaN has d NaN and codes of no meaning (either kernel's).
                if f32::from_bits(w[16]).is_nan() {
                    let d = f32::from_bits(g[16]);
                    assert!(d.is_nan(), "{what}: block {b} of hq has d = {d}, not NaN");
                    continue;
                }
                assert_eq!(g, w, "{what}: block {b} of hq");
            }
            if n > 1 {
                // The NaN reaches every entry of its row through the norm: d is NaN.
                let d_of = f32::from_bits(got[(d / 32) * 24 + 16]);
                assert!(
                    d_of.is_nan(),
                    "{what}: a row with a NaN quantized with d = {d_of}"
                );
            }
        }
    }
}
