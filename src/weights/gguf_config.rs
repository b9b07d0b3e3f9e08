//! GGUF metadata mapped straight to a [`ModelConfig`]: llama.cpp's keys and the defaults it
//! applies where a file says nothing, through the same checks as config.json (errors name the
//! GGUF keys).

use super::gguf::{Gguf, Value};
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
        let m = Metadata::new(g)?;
        let settings = m.settings()?;
        // Errors name the GGUF keys the values came from.
        ModelConfig::resolve(&settings, &m.path, &|name| m.field(name))
    }
}

/// A GGUF file's metadata under its architecture's keys; errors name the file.
struct Metadata<'a> {
    g: &'a Gguf,
    path: String,
    arch: Arch,
    /// `general.architecture`, the prefix of the model's keys.
    arch_name: String,
}

/// The model's sizes as the metadata states them.
struct Sizes {
    hidden: usize,
    heads: usize,
    layers: usize,
    head_dim: usize,
}

impl<'a> Metadata<'a> {
    /// Reads `general.architecture`, refusing any but Gemma's.
    fn new(g: &'a Gguf) -> Result<Metadata<'a>> {
        let path = g.path.display().to_string();
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
                return Err(Error::Config {
                    path,
                    message: format!(
                        "unsupported architecture `{}`; supported: gemma, gemma2, gemma3",
                        printable(other)
                    ),
                });
            }
        };
        Ok(Metadata {
            g,
            path,
            arch,
            arch_name,
        })
    }

    /// A configuration error with `message`.
    fn bad(&self, message: String) -> Error {
        Error::Config {
            path: self.path.clone(),
            message,
        }
    }

    /// The value of the architecture's key `k`.
    fn key(&self, k: &str) -> Option<&'a Value> {
        self.g.get(&format!("{}.{k}", self.arch_name))
    }

    // Present keys must hold what they are for; absent ones take llama.cpp's defaults.

    /// An optional non-negative integer.
    fn opt_int(&self, k: &str) -> Result<Option<usize>> {
        match self.key(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|v| Some(usize::try_from(v).unwrap_or(usize::MAX)))
                .ok_or_else(|| {
                    self.bad(format!(
                        "metadata `{}.{k}` is {}; expected a non-negative integer",
                        self.arch_name,
                        printable(&format!("{v:?}"))
                    ))
                }),
        }
    }

    /// A required non-negative integer.
    fn int(&self, k: &str) -> Result<usize> {
        self.opt_int(k)?
            .ok_or_else(|| self.bad(format!("metadata `{}.{k}` is missing", self.arch_name)))
    }

    /// An optional number.
    fn float(&self, k: &str) -> Result<Option<f64>> {
        match self.key(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                self.bad(format!(
                    "metadata `{}.{k}` is {}; expected a number",
                    self.arch_name,
                    printable(&format!("{v:?}"))
                ))
            }),
        }
    }

    /// A token id under the full key `k`, if it is one.
    fn token_id(&self, k: &str) -> Option<u32> {
        self.g.get(k).and_then(|v| v.as_u64()).map(|id| id as u32)
    }

    /// The model's settings as the metadata states them, with llama.cpp's own choices.
    fn settings(&self) -> Result<Settings> {
        let Sizes {
            hidden,
            heads,
            layers,
            head_dim,
        } = self.sizes()?;
        let vocab = self.vocab()?;
        // llama.cpp: the 27B models scale queries by (hidden / heads)^-0.5, the others by
        // head_dim^-0.5 (their query_pre_attn_scalar).
        let is_27b = matches!(
            (self.arch, layers),
            (Arch::Gemma2, GEMMA2_27B_LAYERS) | (Arch::Gemma3, GEMMA3_27B_LAYERS)
        );
        let query_pre_attn_scalar = if is_27b {
            hidden.checked_div(heads).unwrap_or(0)
        } else {
            head_dim
        };
        let sliding = self.sliding(layers)?;
        let scaling = self
            .key("rope.scaling.type")
            .and_then(|v| v.as_str())
            .map(String::from);
        let scaling_factor = self.float("rope.scaling.factor")?.unwrap_or(1.0);
        Ok(Settings {
            arch: self.arch,
            hidden,
            intermediate: self.int("feed_forward_length")?,
            layers,
            heads,
            kv_heads: self.opt_int("attention.head_count_kv")?,
            head_dim: Some(head_dim),
            vocab,
            query_pre_attn_scalar: Some(query_pre_attn_scalar as f64),
            sliding_window: self.opt_int("attention.sliding_window")?,
            sliding,
            sliding_window_pattern: None,
            attn_softcap: self.float("attn_logit_softcapping")?,
            final_softcap: self.float("final_logit_softcapping")?,
            rope_theta: self.float("rope.freq_base")?,
            rope_factor: scaling.is_some().then_some(scaling_factor),
            rope_type: scaling,
            rope_local_theta: Some(ROPE_LOCAL_THETA),
            eps: self.float("attention.layer_norm_rms_epsilon")?,
            max_positions: self.opt_int("context_length")?,
            bos_id: self.token_id("tokenizer.ggml.bos_token_id"),
            eos_ids: self
                .token_id("tokenizer.ggml.eos_token_id")
                .into_iter()
                .collect(),
            // GGUF stores norm weights with the 1 already added.
            norm_offset: 0.0,
        })
    }

    /// Width, heads, layers and head width; a layer count the tensors cannot back is refused.
    fn sizes(&self) -> Result<Sizes> {
        let hidden = self.int("embedding_length")?;
        let heads = self.int("attention.head_count")?;
        let layers = self.int("block_count")?;
        // Every layer has at least 9 tensors (Gemma 1's): a count the file cannot back is
        // refused before anything is made per layer.
        let backed = self.g.tensors.len() / 9;
        if layers > backed {
            return Err(self.bad(format!(
                "metadata `{}.block_count` is {layers}, but the file's {} tensors hold \
                 at most {backed} layers",
                self.arch_name,
                self.g.tensors.len()
            )));
        }
        let head_dim = self
            .opt_int("attention.key_length")?
            .unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        Ok(Sizes {
            hidden,
            heads,
            layers,
            head_dim,
        })
    }

    /// The vocabulary size: token_embd.weight's rows, which the vocabulary size and the
    /// tokenizer's tokens, where given, must match.
    fn vocab(&self) -> Result<usize> {
        let embd = self
            .g
            .tensors
            .get("token_embd.weight")
            .ok_or_else(|| self.bad("no token_embd.weight tensor".into()))?;
        let vocab = match embd.dims[..] {
            [_, rows] => rows,
            _ => {
                return Err(self.bad(format!(
                    "token_embd.weight has dimensions {:?}; expected [hidden, vocab]",
                    embd.dims
                )));
            }
        };
        if let Some(n) = self.opt_int("vocab_size")?
            && n != vocab
        {
            return Err(self.bad(format!(
                "metadata `{}.vocab_size` is {n}, but token_embd.weight has {vocab} rows",
                self.arch_name
            )));
        }
        if let Some(tokens) = self
            .g
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            && tokens.len() != vocab
        {
            return Err(self.bad(format!(
                "tokenizer.ggml.tokens has {} tokens, but token_embd.weight has {vocab} rows",
                tokens.len()
            )));
        }
        Ok(vocab)
    }

    /// Per layer, whether it slides, as llama.cpp decides it.
    fn sliding(&self, layers: usize) -> Result<Option<Vec<bool>>> {
        Ok(match self.arch {
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
                let pattern = self
                    .opt_int("attention.sliding_window_pattern")?
                    .unwrap_or(GEMMA3_SLIDING_PATTERN)
                    .max(1);
                Some((0..layers).map(|i| (i + 1) % pattern != 0).collect())
            }
        })
    }

    /// The GGUF key a config field's value came from, for errors.
    fn field(&self, name: &str) -> String {
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
        format!("metadata `{}.{k}`", self.arch_name)
    }
}
