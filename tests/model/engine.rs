//! Tokenizer, chat template, streaming text and the generation loop.

use crate::fixtures::*;
use gemma_wgpu::engine::{
    Engine, GenerateOptions, Message, SamplingParams, StopReason, TextStream, Tokenizer,
};
use gemma_wgpu::gpu::{BackendChoice, GpuOptions};
use gemma_wgpu::kernels::KvDtype;
use gemma_wgpu::model::ModelOptions;
use std::path::PathBuf;

fn tokenizer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn encodings() -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(tokenizer_dir().join("encodings.json")).unwrap())
        .unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn token_ids_equal_transformers() {
    let tok = Tokenizer::from_dir(&tokenizer_dir()).unwrap();
    let mut n = 0;
    for e in encodings() {
        if let Some(text) = e["text"].as_str() {
            assert_eq!(tok.encode(text, true).unwrap(), ids(&e), "{text:?}");
            n += 1;
        }
    }
    assert!(n >= 5);
}

#[test]
fn chat_template_equals_transformers_without_a_doubled_bos() {
    let tok = Tokenizer::from_dir(&tokenizer_dir()).unwrap();
    let mut n = 0;
    for e in encodings() {
        if let Some(msg) = e["chat"].as_str() {
            let got = tok
                .encode_chat(&[Message {
                    role: "user".into(),
                    content: msg.into(),
                }])
                .unwrap();
            assert_eq!(got, ids(&e), "{msg:?}");
            assert_eq!(got.iter().filter(|&&t| t == 2).count(), 1, "one <bos>");
            n += 1;
        }
    }
    assert_eq!(n, 2);
}

#[test]
fn streamed_text_is_whole_characters_and_round_trips() {
    let tok = Tokenizer::from_dir(&tokenizer_dir()).unwrap();
    let text = "Über Öl: le renard 🦊 saute, 中文 too.";
    let all = tok.encode(text, false).unwrap();
    // The emoji and the CJK characters come as several byte-fallback tokens each.
    assert!(all.len() > text.chars().count() / 2);
    let mut stream = TextStream::new(&tok);
    let mut pieces = vec![];
    for &id in &all {
        if let Some(p) = stream.push(id).unwrap() {
            assert!(
                !p.contains('\u{FFFD}'),
                "a split character was printed: {p:?}"
            );
            pieces.push(p);
        }
    }
    pieces.extend(stream.finish().unwrap());
    assert_eq!(pieces.concat(), tok.decode(&all).unwrap());
    assert_eq!(pieces.concat(), text);
}

fn engine(model: &str, ctx: Option<usize>) -> Engine {
    let gpu = GpuOptions {
        backend: BackendChoice::Vulkan,
        ..Default::default()
    };
    // The f32 cache: greedy continuations are then those of transformers (see gpu.rs).
    let options = ModelOptions {
        ctx,
        kv: Some(KvDtype::F32),
        ..Default::default()
    };
    Engine::load(&dir(model), &gpu, &options).unwrap()
}

#[test]
fn generation_stops_at_eos_at_max_tokens_and_at_a_full_context() {
    let model = "gemma2-bf16";
    // The prompt whose greedy continuation changes token earliest.
    let goldens = goldens(model);
    let (g, cut) = goldens
        .iter()
        .filter_map(|g| {
            g.generated
                .iter()
                .position(|&t| t != g.generated[0])
                .map(|i| (g, i))
        })
        .min_by_key(|&(_, i)| i)
        .expect("a continuation with two distinct tokens");
    let mut e = engine(model, None);
    assert_eq!(
        e.eos(),
        [1, e.tokenizer.token_id("<end_of_turn>").unwrap()],
        "generation_config.json"
    );
    let greedy = SamplingParams::default();
    let full = e
        .generate(&g.ids, &GenerateOptions::new(24, greedy.clone()), |_| {})
        .unwrap();
    assert_eq!(full.ids, g.generated);
    assert_eq!(full.stop, StopReason::MaxTokens);
    // Treat the first new token as end-of-sequence: generation stops there, eos included.
    e.set_eos(vec![g.generated[cut]]);
    let stopped = e
        .generate(&g.ids, &GenerateOptions::new(24, greedy.clone()), |_| {})
        .unwrap();
    assert_eq!(stopped.stop, StopReason::Eos);
    assert_eq!(stopped.ids, g.generated[..=cut]);
    // A context of prompt + 5 tokens: those 5 fill it, a 6th is read from the last position,
    // then a clean stop.
    let mut small = engine(model, Some(g.ids.len() + 5));
    let r = small
        .generate(&g.ids, &GenerateOptions::new(24, greedy.clone()), |_| {})
        .unwrap();
    assert_eq!(r.stop, StopReason::ContextFull);
    assert_eq!(r.ids, g.generated[..6]);
    // A prompt longer than the context is an error, not a crash.
    let mut tiny = engine(model, Some(8));
    let err = tiny
        .generate(&g.ids, &GenerateOptions::new(4, greedy.clone()), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("context is full") && err.contains("--ctx"),
        "{err}"
    );
}

#[test]
fn sampling_is_seeded_and_stays_among_candidates() {
    let model = "gemma2-bf16";
    let g = &goldens(model)[0];
    let mut e = engine(model, None);
    let params = SamplingParams {
        temperature: 1.5,
        top_k: 20,
        top_p: 0.95,
        seed: 42,
        ..Default::default()
    };
    let a = e
        .generate(&g.ids, &GenerateOptions::new(16, params.clone()), |_| {})
        .unwrap();
    let b = e
        .generate(&g.ids, &GenerateOptions::new(16, params.clone()), |_| {})
        .unwrap();
    assert_eq!(a.ids, b.ids, "same seed, same text");
    let c = e
        .generate(
            &g.ids,
            &GenerateOptions::new(16, SamplingParams { seed: 43, ..params }),
            |_| {},
        )
        .unwrap();
    assert_ne!(
        a.ids, c.ids,
        "another seed, another text (16 tokens at temperature 1.5)"
    );
}

#[test]
fn kl_divergence_against_a_saved_base() {
    use gemma_wgpu::engine::perplexity::KlBase;
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(12);
    let base =
        std::env::temp_dir().join(format!("gemma-wgpu-kl-{}.safetensors", std::process::id()));
    let _ = std::fs::remove_file(&base);
    let load = |kv| {
        let gpu = GpuOptions {
            backend: BackendChoice::Vulkan,
            ..Default::default()
        };
        let options = ModelOptions {
            kv: Some(kv),
            all_logits: true,
            ..Default::default()
        };
        Engine::load(&dir("gemma2-bf16"), &gpu, &options).unwrap()
    };
    let mut e = load(KvDtype::F32);
    let saved = e
        .perplexity(&text, 32, KlBase::Save(&base), |_, _| {})
        .unwrap();
    assert!(saved.kl.is_none() && base.exists());
    // The same run against its own base: KL 0 (up to the rounding of the saved log-probs).
    let same = e
        .perplexity(&text, 32, KlBase::Compare(&base), |_, _| {})
        .unwrap();
    assert_eq!(same.ppl, saved.ppl);
    let (kl, _) = same.kl.unwrap();
    assert!(kl.abs() < 1e-6, "KL against itself {kl}");
    // The f16 cache moves the distribution a little: a small positive KL.
    let mut f16 = load(KvDtype::F16);
    let other = f16
        .perplexity(&text, 32, KlBase::Compare(&base), |_, _| {})
        .unwrap();
    let (kl, _) = other.kl.unwrap();
    println!(
        "KL(f32 cache || f16 cache) = {kl:e}; PPL {} vs {}",
        saved.ppl, other.ppl
    );
    assert!(kl > 0.0 && kl < 0.05, "{kl}");
    std::fs::remove_file(&base).unwrap();
}

#[test]
fn a_full_chat_drops_its_oldest_turns() {
    use gemma_wgpu::engine::chat::Conversation;
    let mut e = engine("gemma2-bf16", Some(96));
    let mut chat = Conversation::new();
    let greedy = SamplingParams::default();
    let mut dropped = 0;
    for turn in 0..8 {
        let (g, notes) = chat
            .turn(
                &mut e,
                &format!("Tell me about the number {turn}, please."),
                &GenerateOptions::new(8, greedy.clone()),
                16,
                |_| {},
            )
            .unwrap();
        assert!(!g.ids.is_empty());
        dropped += notes.dropped_turns;
        assert!(e.context().len() <= 96);
    }
    assert!(
        dropped > 0,
        "eight turns of ~25 tokens cannot fit 96 tokens without dropping"
    );
    assert_eq!(chat.messages.last().unwrap().role, "assistant");
}
