//! Greedy decoding with steps chained on the GPU (`Model::decode_greedy`) against decoding
//! token by token: the same tokens, the same cache afterwards, the same stops and errors; with
//! two steps in flight (GPU-style adapters, forced here) and one at a time (CPU adapters).

use crate::fixtures::*;
use gemma_wgpu::gpu::{BackendChoice, Gpu, GpuOptions};
use gemma_wgpu::kernels::KvDtype;
use gemma_wgpu::model::{Candidates, GreedyEnd, Model, ModelOptions};

/// Both adapter classes: CPU-like (one step at a time) and GPU-like (two in flight).
const CPU_LAYOUTS: [bool; 2] = [true, false];

fn load(dir: &std::path::Path, ctx: usize, cpu_layout: bool) -> Model {
    let gpu = Gpu::new(&GpuOptions {
        backend: BackendChoice::Vulkan,
        cpu_layout: Some(cpu_layout),
        ..Default::default()
    })
    .expect("no Vulkan adapter: apt-get install -y mesa-vulkan-drivers");
    // The f32 cache: greedy continuations are then transformers' (see gpu.rs).
    let options = ModelOptions {
        ctx: Some(ctx),
        kv: Some(KvDtype::F32),
        ..Default::default()
    };
    Model::load(gpu, dir, &options).unwrap()
}

/// The prompt's first token from an ordinary step, then `n - 1` more through
/// `decode_greedy`, which is told to stop at the `n`th; and how it ended.
fn chained(m: &mut Model, prompt: &[u32], n: usize) -> (Vec<u32>, GreedyEnd) {
    m.reset();
    let mut out = vec![m.feed(prompt, true).unwrap().ids[0]];
    let end = m
        .decode_greedy(out[0], |t| {
            out.push(t);
            Ok(out.len() < n)
        })
        .unwrap();
    (out, end)
}

fn same(a: &Candidates, b: &Candidates) -> bool {
    a.ids == b.ids
        && a.logits
            .iter()
            .map(|l| l.to_bits())
            .eq(b.logits.iter().map(|l| l.to_bits()))
}

#[test]
fn chained_greedy_tokens_and_cache_are_token_by_token_ones() {
    for (model, cpu_layout) in ["gemma2-f32", "gemma3-bf16"]
        .into_iter()
        .flat_map(|m| CPU_LAYOUTS.map(|c| (m, c)))
    {
        let mut m = load(&dir(model), 256, cpu_layout);
        let goldens = goldens(model);
        let model = format!("{model} cpu_layout={cpu_layout}");
        for (p, g) in goldens.iter().enumerate() {
            let n = g.generated.len();
            let (got, end) = chained(&mut m, &g.ids, n);
            assert_eq!(got, g.generated, "{model} prompt {p}");
            assert_eq!(end, GreedyEnd::Stopped);
            // The last token was refused: the step already submitted for it is forgotten.
            let fed: Vec<u32> = g.ids.iter().chain(&got[..n - 1]).copied().collect();
            assert_eq!(m.cached(), fed, "{model} prompt {p}");
            // Feeding it now gives bit for bit what token-by-token decoding gives there: the
            // cache entries the chained steps wrote are the ordinary steps' ones.
            let after_chained = m.feed(&got[n - 1..], true).unwrap();
            m.reset();
            m.feed(&g.ids, true).unwrap();
            for &t in &got[..n - 1] {
                m.feed(&[t], true).unwrap();
            }
            let after_steps = m.feed(&got[n - 1..], true).unwrap();
            assert!(
                same(&after_chained, &after_steps),
                "{model} prompt {p}: {after_chained:?} against {after_steps:?}"
            );
        }
    }
}

#[test]
fn chained_greedy_stops_at_a_full_context() {
    let model = "gemma2-f32";
    let g = &goldens(model)[0];
    // Room for the prompt and 5 tokens: those 5 are fed, a 6th is read from the last position
    // and handed over, then the context is full.
    let ctx = g.ids.len() + 5;
    for cpu_layout in CPU_LAYOUTS {
        let mut m = load(&dir(model), ctx, cpu_layout);
        let (got, end) = chained(&mut m, &g.ids, 24);
        assert_eq!(end, GreedyEnd::ContextFull, "cpu_layout={cpu_layout}");
        assert_eq!(got, g.generated[..6], "cpu_layout={cpu_layout}");
        assert_eq!(m.cached().len(), ctx);
        let err = m.decode_greedy(got[5], |_| Ok(true)).unwrap_err();
        assert!(err.to_string().contains("context is full"), "{err}");
    }
}

/// gemma2-f32 copied with the first element of token `token`'s embedding row set to `value`.
fn with_embedding_row(token: usize, value: f32) -> std::path::PathBuf {
    let src = dir("gemma2-f32");
    let dst = std::env::temp_dir().join(format!(
        "gemma-wgpu-row-{}-{}",
        value.is_sign_negative() as u8,
        std::process::id()
    ));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let mut data = t.data().to_vec();
            if name == "model.embed_tokens.weight" {
                let at = token * t.shape()[1] * 4;
                data[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            (name, t.shape().to_vec(), data)
        })
        .collect();
    let views = tensors.iter().map(|(n, s, b)| {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
        (n.clone(), view.unwrap())
    });
    safetensors::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
    dst
}

/// A token with one embedding element finite but overflowing once scaled by sqrt(hidden): its
/// logit (one huge product among ordinary ones) is the soft-cap's +-30, so greedy decoding
/// picks it (with the sign that makes it the best), and the step that feeds it fails. Chained decoding reports what token-by-token decoding
/// does, and keeps the same cache.
#[test]
fn chained_greedy_reports_a_step_that_is_not_finite() {
    let g = &goldens("gemma2-f32")[0];
    let token = (0..).find(|t| !g.ids.contains(t)).unwrap();
    let mut tried = vec![];
    for value in [1e38f32, -1e38] {
        let path = with_embedding_row(token as usize, value);
        for cpu_layout in CPU_LAYOUTS {
            let mut m = load(&path, 256, cpu_layout);
            let first = m.feed(&g.ids, true).unwrap().ids[0];
            tried.push(first);
            if first != token {
                continue;
            }
            let chained = m.decode_greedy(first, |_| Ok(true)).unwrap_err();
            let chained = chained.to_string();
            let cached = m.cached().to_vec();
            m.reset();
            m.feed(&g.ids, true).unwrap();
            let stepped = m.feed(&[first], true).unwrap_err().to_string();
            assert!(
                chained.contains("first in the output of layer 0"),
                "{chained}"
            );
            assert_eq!(chained, stepped, "cpu_layout={cpu_layout}");
            assert_eq!(cached, m.cached(), "cpu_layout={cpu_layout}");
        }
        std::fs::remove_dir_all(&path).unwrap();
        if tried.contains(&token) {
            return;
        }
    }
    panic!("token {token} is not the best with either sign (best: {tried:?})");
}
