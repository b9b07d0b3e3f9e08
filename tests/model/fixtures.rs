//! The transformers goldens written by tests/fixtures/make_fixtures.py.

use gemma_wgpu::Result;
use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::reference::gemma::{Layer, Weights};
use gemma_wgpu::weights::WeightFormat;
use gemma_wgpu::weights::gemma::{self, EMBED, FINAL_NORM, LayerTensor, embed_scale};
use gemma_wgpu::weights::safetensors::Checkpoint;
use std::path::PathBuf;

pub const MODELS: &[&str] = &[
    "gemma2-bf16",
    "gemma2-f32",
    "gemma2-window4096",
    "gemma3-bf16",
    "gemma1-bf16",
];

pub fn dir(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model)
}

/// One prompt's golden: its ids, the positions whose logits were kept, those logits
/// [positions, vocab], and transformers' 24 greedy tokens.
pub struct Golden {
    pub ids: Vec<u32>,
    pub positions: Vec<usize>,
    pub logits: Vec<f32>,
    pub generated: Vec<u32>,
}

pub fn goldens(model: &str) -> Vec<Golden> {
    let bytes = std::fs::read(dir(model).join("golden.safetensors")).expect("golden.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| -> Option<Vec<u32>> {
        let t = st.tensor(name).ok()?;
        Some(
            bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
                .into_iter()
                .map(|v| v as u32)
                .collect(),
        )
    };
    let mut out = vec![];
    for i in 0.. {
        let Some(ids) = ints(&format!("ids_{i}")) else {
            break;
        };
        out.push(Golden {
            ids,
            positions: ints(&format!("positions_{i}"))
                .unwrap()
                .into_iter()
                .map(|p| p as usize)
                .collect(),
            logits: bytemuck::pod_collect_to_vec(st.tensor(&format!("logits_{i}")).unwrap().data()),
            generated: ints(&format!("generated_{i}")).unwrap(),
        });
    }
    assert!(!out.is_empty(), "{model}: no goldens");
    out
}

/// Largest |a - b| and where.
pub fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((x - y).abs(), i))
        .fold(
            (0.0, 0),
            |m, v| if v.0 > m.0 || v.0.is_nan() { v } else { m },
        )
}

/// The per-layer activations of a fixture's first prompt written by
/// tests/fixtures/make_layer_goldens.py: (ids, [(name, [tokens, width])] in forward order).
pub fn layer_goldens(model: &str) -> (Vec<u32>, Vec<(String, Vec<f32>)>) {
    let bytes = std::fs::read(dir(model).join("layers.safetensors")).expect("layers.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor("ids").unwrap().data())
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let tensor = |name: &str| bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data());
    let layers = (0..)
        .take_while(|i| st.tensor(&format!("L{i:02}.out")).is_ok())
        .count();
    let mut names = vec!["embed".to_string()];
    for i in 0..layers {
        for part in ["attn_out", "mlp_out", "out"] {
            names.push(format!("L{i:02}.{part}"));
        }
    }
    names.push("final_norm".into());
    let named = names.into_iter().map(|n| (n.clone(), tensor(&n))).collect();
    (ids, named)
}

/// The reference's weights from a checkpoint, every tensor as f32; with `format`, each matrix
/// is first converted to that format and dequantized, so the reference computes with exactly
/// the GPU's weights.
pub fn reference_weights(
    ckpt: &Checkpoint,
    c: &ModelConfig,
    format: Option<WeightFormat>,
) -> Result<Weights> {
    let dtype = gemma::source_dtype(ckpt, c)?;
    let format = format.unwrap_or(gemma::default_format(dtype));
    let m = |name: &str, shape| gemma::matrix(ckpt, name, shape, format).map(|h| h.dequantize());
    let layers = (0..c.layers.len())
        .map(|i| {
            let t = |t: LayerTensor| m(&t.name(i, c.arch), t.shape(c));
            let norm = |t: LayerTensor| -> Result<Option<Vec<f32>>> {
                if !t.present(c.arch) {
                    return Ok(None);
                }
                Ok(Some(gemma::norm(ckpt, &t.name(i, c.arch), t.shape(c)[0])?))
            };
            let required = |t: LayerTensor| norm(t).map(|n| n.expect("present in every Gemma"));
            Ok(Layer {
                input_norm: required(LayerTensor::InputNorm)?,
                q: t(LayerTensor::Q)?,
                k: t(LayerTensor::K)?,
                v: t(LayerTensor::V)?,
                q_norm: norm(LayerTensor::QNorm)?,
                k_norm: norm(LayerTensor::KNorm)?,
                o: t(LayerTensor::O)?,
                post_attention_norm: norm(LayerTensor::PostAttentionNorm)?,
                pre_feedforward_norm: required(LayerTensor::PreFeedforwardNorm)?,
                gate: t(LayerTensor::Gate)?,
                up: t(LayerTensor::Up)?,
                down: t(LayerTensor::Down)?,
                post_feedforward_norm: norm(LayerTensor::PostFeedforwardNorm)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Weights {
        embed: m(EMBED, [c.vocab, c.hidden])?,
        embed_scale: embed_scale(c.hidden, dtype),
        layers,
        final_norm: gemma::norm(ckpt, FINAL_NORM, c.hidden)?,
    })
}
