//! The transformers goldens written by tests/fixtures/make_fixtures.py.

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
