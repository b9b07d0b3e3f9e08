//! The CPU reference forward against transformers' logits.

use crate::fixtures::*;
use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::reference::gemma::forward;
use gemma_wgpu::weights::safetensors::Checkpoint;

/// Both sides compute in f32 from the same weights; they differ only in summation order,
/// which for these sizes (reductions of at most a few hundred terms, logits of magnitude
/// up to 30) moves logits by well under 1e-3.
const LOGIT_TOL: f32 = 1e-3;

#[test]
fn reference_forward_matches_transformers() {
    for model in MODELS.iter().filter(|m| **m != "gemma2-window4096") {
        let dir = dir(model);
        let cfg = ModelConfig::from_dir(&dir).unwrap();
        let ckpt = Checkpoint::open(&dir).unwrap();
        let w = reference_weights(&ckpt, &cfg, None).unwrap();
        for (p, g) in goldens(model).iter().enumerate() {
            let logits = forward(&cfg, &w, &g.ids);
            let kept: Vec<f32> = g
                .positions
                .iter()
                .flat_map(|&t| logits[t * cfg.vocab..][..cfg.vocab].to_vec())
                .collect();
            let (d, at) = max_diff(&kept, &g.logits);
            println!("{model} prompt {p}: max |logit - transformers| = {d:e}");
            assert!(d <= LOGIT_TOL, "{model} prompt {p}: max diff {d} at {at}");
        }
    }
}
