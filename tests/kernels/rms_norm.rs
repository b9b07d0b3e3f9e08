//! rms_norm, and residual_norm (a post-norm into the residual stream, then the next norm),
//! each also as a step's final norm, which flags the rows that are not finite.

use crate::common::*;
use gemma_wgpu::kernels::{ResidualNorm, RmsNorm};

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
