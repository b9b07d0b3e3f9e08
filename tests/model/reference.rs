//! The CPU reference forward against transformers' logits.

use crate::fixtures::*;
use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::reference::gemma::{forward, forward_traced};
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

/// The reference's named activations against transformers' (layers.safetensors), in forward
/// order, with the GPU test's bound (tests/model/gpu.rs, ACTIVATION_TOL): the same names,
/// so a GPU divergence can be read against the specification's.
#[test]
fn reference_activations_match_transformers_layer_by_layer() {
    /// As tests/model/gpu.rs's ACTIVATION_TOL: relative to each tensor's largest value.
    const ACTIVATION_TOL: f32 = 1e-4;
    for model in ["gemma1-bf16", "gemma2-bf16", "gemma3-bf16"] {
        let dir = dir(model);
        let cfg = ModelConfig::from_dir(&dir).unwrap();
        let w = reference_weights(&Checkpoint::open(&dir).unwrap(), &cfg, None).unwrap();
        let (ids, expected) = layer_goldens(model);
        let mut got: Vec<(String, Vec<f32>)> = vec![];
        forward_traced(&cfg, &w, &ids, &mut |name, v| {
            got.push((name.into(), v.to_vec()))
        });
        assert_eq!(got.len(), expected.len(), "{model}: activation count");
        for ((name, a), (wanted, e)) in got.iter().zip(&expected) {
            assert_eq!(name, wanted);
            let scale = e.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
            let (d, at) = max_diff(a, e);
            assert!(
                d <= ACTIVATION_TOL * scale,
                "{model}: first divergence at {name}: {d} at {at}, largest value {scale}"
            );
        }
    }
}
