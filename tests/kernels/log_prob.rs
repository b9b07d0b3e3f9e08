//! log_prob against the reference (f64): rows of every size around the workgroup's, the real
//! vocabularies, soft-capped and wide logit ranges, and rows holding a NaN or an infinity.

use crate::common::*;
use gemma_wgpu::kernels::LogProb;

#[test]
fn log_prob_matches_reference() {
    for dev in devices() {
        let gpu = &dev.gpu;
        let kernel = LogProb::new(gpu).unwrap();
        let shapes = [
            (1, 2),
            (3, 255),
            (2, 256),
            (2, 257),
            (4, 1001),
            (1, 256_000),
            (2, 262_144),
        ];
        for (i, &(rows, vocab)) in shapes.iter().enumerate() {
            for (m, scale) in [(1, 1.0), (5, 10.0), (257, 3.0)] {
                let m = m.min(vocab.max(2));
                log_prob(
                    gpu,
                    &kernel,
                    (rows, vocab, m),
                    scale,
                    None,
                    i as u64 + m as u64,
                )
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
            }
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            log_prob(gpu, &kernel, (3, 1001, 5), 2.0, Some((1, 500, bad)), 9)
                .run_and_check(gpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name));
        }
    }
}
