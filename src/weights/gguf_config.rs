//! GGUF metadata mapped straight to a [`ModelConfig`]: llama.cpp's keys and the defaults it
//! applies where a file says nothing, through the same checks as config.json (errors name the
//! GGUF keys).

use super::gguf::Gguf;
use crate::config::{Arch, GEMMA2_SLIDING_PATTERN, GEMMA3_SLIDING_PATTERN, ModelConfig, Settings};
use crate::error::printable;
use crate::{Error, Result};

/// llama.cpp (src/llama-model.cpp, LLM_ARCH_GEMMA3): `rope_freq_base_train_swa = 10000.0f`,
/// the sliding layers' RoPE base, which GGUF files do not store.
pub const ROPE_LOCAL_THETA: f64 = 10_000.0;
/// llama.cpp (src/llama-model.cpp, `case 46: type = LLM_TYPE_27B` for LLM_ARCH_GEMMA2): the
/// layer count by which it knows Gemma 2 27B, whose queries scale by (hidden / heads)^-0.5.
pub const GEMMA2_27B_LAYERS: usize = 46;
/// llama.cpp (src/llama-model.cpp, `case 62: type = LLM_TYPE_27B` for LLM_ARCH_GEMMA3).
pub const GEMMA3_27B_LAYERS: usize = 62;

impl ModelConfig {
    /// The configuration of a GGUF file's `gemma`, `gemma2` or `gemma3` model, with the
    /// defaults llama.cpp applies where the file says nothing. GGUF stores norm weights with
    /// the 1 already added, so `norm_offset` is 0.
    pub fn from_gguf(g: &Gguf) -> Result<ModelConfig> {
        let path = g.path.display().to_string();
        let bad = |message: String| Error::Config {
            path: path.clone(),
            message,
        };
        let arch_name = g
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let arch = match arch_name.as_str() {
            "gemma" => Arch::Gemma,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(bad(format!(
                    "unsupported architecture `{}`; supported: gemma, gemma2, gemma3",
                    printable(other)
                )));
            }
        };
        let key = |k: &str| g.get(&format!("{arch_name}.{k}"));
        // Present keys must hold what they are for; absent ones take llama.cpp's defaults.
        let opt_int = |k: &str| -> Result<Option<usize>> {
            match key(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|v| Some(usize::try_from(v).unwrap_or(usize::MAX)))
                    .ok_or_else(|| {
                        bad(format!(
                            "metadata `{arch_name}.{k}` is {}; expected a non-negative integer",
                            printable(&format!("{v:?}"))
                        ))
                    }),
            }
        };
        let int = |k: &str| -> Result<usize> {
            opt_int(k)?.ok_or_else(|| bad(format!("metadata `{arch_name}.{k}` is missing")))
        };
        let token_id = |k: &str| g.get(k).and_then(|v| v.as_u64()).map(|id| id as u32);
        let float = |k: &str| -> Result<Option<f64>> {
            match key(k) {
                None => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                    bad(format!(
                        "metadata `{arch_name}.{k}` is {}; expected a number",
                        printable(&format!("{v:?}"))
                    ))
                }),
            }
        };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let layers = int("block_count")?;
        // Every layer has at least 9 tensors (Gemma 1's): a count the file cannot back is
        // refused before anything is made per layer.
        let backed = g.tensors.len() / 9;
        if layers > backed {
            return Err(bad(format!(
                "metadata `{arch_name}.block_count` is {layers}, but the file's {} tensors hold \
                 at most {backed} layers",
                g.tensors.len()
            )));
        }
        let head_dim =
            opt_int("attention.key_length")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let embd = g
            .tensors
            .get("token_embd.weight")
            .ok_or_else(|| bad("no token_embd.weight tensor".into()))?;
        let vocab = match embd.dims[..] {
            [_, rows] => rows,
            _ => {
                return Err(bad(format!(
                    "token_embd.weight has dimensions {:?}; expected [hidden, vocab]",
                    embd.dims
                )));
            }
        };
        if let Some(n) = opt_int("vocab_size")?
            && n != vocab
        {
            return Err(bad(format!(
                "metadata `{arch_name}.vocab_size` is {n}, but token_embd.weight has {vocab} rows"
            )));
        }
        if let Some(tokens) = g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array())
            && tokens.len() != vocab
        {
            return Err(bad(format!(
                "tokenizer.ggml.tokens has {} tokens, but token_embd.weight has {vocab} rows",
                tokens.len()
            )));
        }
        // llama.cpp: the 27B models scale queries by (hidden / heads)^-0.5, the others by
        // head_dim^-0.5 (their query_pre_attn_scalar).
        let is_27b = matches!(
            (arch, layers),
            (Arch::Gemma2, GEMMA2_27B_LAYERS) | (Arch::Gemma3, GEMMA3_27B_LAYERS)
        );
        let query_pre_attn_scalar = if is_27b {
            hidden.checked_div(heads).unwrap_or(0)
        } else {
            head_dim
        };
        let sliding = match arch {
            Arch::Gemma => None,
            // llama.cpp (src/llama-model.cpp, LLM_ARCH_GEMMA2): set_swa_pattern(2), the
            // sliding layers are the even ones as in transformers.
            Arch::Gemma2 => Some(
                (0..layers)
                    .map(|i| (i + 1) % GEMMA2_SLIDING_PATTERN != 0)
                    .collect::<Vec<_>>(),
            ),
            Arch::Gemma3 => {
                // llama.cpp (LLM_ARCH_GEMMA3): set_swa_pattern(6) unless the file says.
                let pattern = opt_int("attention.sliding_window_pattern")?
                    .unwrap_or(GEMMA3_SLIDING_PATTERN)
                    .max(1);
                Some((0..layers).map(|i| (i + 1) % pattern != 0).collect())
            }
        };
        let scaling = key("rope.scaling.type")
            .and_then(|v| v.as_str())
            .map(String::from);
        let scaling_factor = float("rope.scaling.factor")?.unwrap_or(1.0);
        let settings = Settings {
            arch,
            hidden,
            intermediate: int("feed_forward_length")?,
            layers,
            heads,
            kv_heads: opt_int("attention.head_count_kv")?,
            head_dim: Some(head_dim),
            vocab,
            query_pre_attn_scalar: Some(query_pre_attn_scalar as f64),
            sliding_window: opt_int("attention.sliding_window")?,
            sliding,
            sliding_window_pattern: None,
            attn_softcap: float("attn_logit_softcapping")?,
            final_softcap: float("final_logit_softcapping")?,
            rope_theta: float("rope.freq_base")?,
            rope_factor: scaling.is_some().then_some(scaling_factor),
            rope_type: scaling,
            rope_local_theta: Some(ROPE_LOCAL_THETA),
            eps: float("attention.layer_norm_rms_epsilon")?,
            max_positions: opt_int("context_length")?,
            bos_id: token_id("tokenizer.ggml.bos_token_id"),
            eos_ids: token_id("tokenizer.ggml.eos_token_id")
                .into_iter()
                .collect(),
            // GGUF stores norm weights with the 1 already added.
            norm_offset: 0.0,
        };
        // Errors name the GGUF keys the values came from.
        let field = |name: &str| -> String {
            let k = match name {
                "num_hidden_layers" => "block_count",
                "hidden_size" => "embedding_length",
                "intermediate_size" => "feed_forward_length",
                "num_attention_heads" => "attention.head_count",
                "num_key_value_heads" => "attention.head_count_kv",
                "head_dim" | "query_pre_attn_scalar" => "attention.key_length",
                "sliding_window" => "attention.sliding_window",
                "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
                "rope_theta" => "rope.freq_base",
                "rope_scaling.factor" => "rope.scaling.factor",
                "max_position_embeddings" => "context_length",
                "vocab_size" => return "the vocabulary (token_embd.weight's rows)".into(),
                other => other,
            };
            format!("metadata `{arch_name}.{k}`")
        };
        ModelConfig::resolve(&settings, &path, &field)
    }
}
