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
