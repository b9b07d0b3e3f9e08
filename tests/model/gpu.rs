//! The GPU model against transformers' logits and greedy generations, and against the CPU
//! reference on quantized weights.

use crate::fixtures::*;
use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::gpu::{BackendChoice, Gpu, GpuOptions};
use gemma_wgpu::kernels::KvDtype;
use gemma_wgpu::model::{Model, ModelOptions};
use gemma_wgpu::reference::gemma::{Weights, forward};
use gemma_wgpu::weights::WeightFormat;
use gemma_wgpu::weights::safetensors::Checkpoint;

/// With f32 activations, f32 KV and the same bf16 weights, the GPU and transformers differ by
/// summation order only (see reference.rs); the bound.
const LOGIT_TOL: f32 = 1e-3;

fn gpu() -> Gpu {
    Gpu::new(&GpuOptions {
        backend: BackendChoice::Vulkan,
        ..Default::default()
    })
    .expect("no Vulkan adapter: apt-get install -y mesa-vulkan-drivers")
}

/// Loads a fixture with room for its longest prompt (4150 tokens) and 24 more.
fn load(model: &str, options: ModelOptions) -> Model {
    let options = ModelOptions {
        ctx: Some(4200),
        ..options
    };
    Model::load(gpu(), &dir(model), &options).unwrap()
}

/// The logits of `g`'s kept positions, by feeding the prompt through the all-logits path.
fn gpu_logits(m: &mut Model, g: &Golden) -> Vec<f32> {
    m.reset();
    let vocab = m.config.vocab;
    let all = m.all_logits(&g.ids).unwrap();
    g.positions
        .iter()
        .flat_map(|&t| all[t * vocab..][..vocab].to_vec())
        .collect()
}

#[test]
fn gpu_logits_match_transformers_with_f32_kv() {
    for model in MODELS {
        for chunk in [64usize, 7] {
            let mut m = load(
                model,
                ModelOptions {
                    kv: Some(KvDtype::F32),
                    chunk,
                    all_logits: true,
                    ..Default::default()
                },
            );
            for (p, g) in goldens(model).iter().enumerate() {
                let (d, at) = max_diff(&gpu_logits(&mut m, g), &g.logits);
                println!("{model} chunk {chunk} prompt {p}: max |logit - transformers| = {d:e}");
                assert!(
                    d <= LOGIT_TOL,
                    "{model} chunk {chunk} prompt {p}: {d} at {at}"
                );
            }
        }
    }
}

fn greedy(m: &mut Model, prompt: &[u32], n: usize) -> Vec<u32> {
    m.reset();
    let mut out = vec![];
    let mut next = m.feed(prompt, true).unwrap().ids[0];
    for _ in 0..n {
        out.push(next);
        if out.len() == n {
            break;
        }
        next = m.feed(&[next], true).unwrap().ids[0];
    }
    out
}

#[test]
fn greedy_generation_matches_transformers() {
    for model in MODELS {
        for kv in [KvDtype::F32, KvDtype::F16] {
            let mut m = load(
                model,
                ModelOptions {
                    kv: Some(kv),
                    ..Default::default()
                },
            );
            for (p, g) in goldens(model).iter().enumerate() {
                let got = greedy(&mut m, &g.ids, g.generated.len());
                assert_eq!(got, g.generated, "{model} {kv:?} prompt {p}");
            }
        }
    }
}
