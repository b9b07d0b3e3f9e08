//! The model's configuration: config.json read as transformers writes it, resolved once into
//! plain per-model and per-layer values. Kernels receive numbers from here, never a config.

use crate::error::{printable, printable_message};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// config.json fields we read (Gemma2Config; older and newer spellings both accepted).
#[derive(Debug, Deserialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub query_pre_attn_scalar: Option<f64>,
    pub sliding_window: Option<usize>,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub rope_theta: Option<f64>,
    /// transformers 5: `{rope_theta, rope_type, factor}`, or one such object per layer type
    /// (`full_attention`, `sliding_attention`) for Gemma 3.
    pub rope_parameters: Option<serde_json::Value>,
    /// Gemma 3 before transformers 5: the base of the sliding layers' RoPE.
    pub rope_local_base_freq: Option<f64>,
    /// Gemma 3 before transformers 5: `{rope_type: "linear", factor}` for the global layers.
    pub rope_scaling: Option<serde_json::Value>,
    /// Gemma 3 before transformers 5: one global layer in every `sliding_window_pattern`.
    pub sliding_window_pattern: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<usize>,
    pub hidden_activation: Option<String>,
    pub hidden_act: Option<String>,
    pub vocab_size: usize,
    pub torch_dtype: Option<String>,
    pub dtype: Option<String>,
    pub layer_types: Option<Vec<String>>,
    pub bos_token_id: Option<serde_json::Value>,
    pub eos_token_id: Option<serde_json::Value>,
    pub pad_token_id: Option<serde_json::Value>,
}

/// Which Gemma generation: it decides the block's norms and the attention's details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Gemma 1: two norms per layer, every layer global, no soft-caps, scale head_dim^-0.5.
    Gemma,
    /// Gemma 2: four norms per layer, alternating sliding/global layers, soft-caps.
    Gemma2,
    /// Gemma 3 text: Gemma 2's block plus per-head q/k norms, five sliding layers per global
    /// one, separate RoPE bases for the two kinds, no attention soft-cap.
    Gemma3,
}

impl Arch {
    pub fn from_model_type(t: &str) -> Option<Arch> {
        match t {
            "gemma" => Some(Arch::Gemma),
            "gemma2" => Some(Arch::Gemma2),
            "gemma3_text" | "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }

    /// Post-attention and post-feedforward norms (Gemma 2 and 3).
    pub fn post_norms(self) -> bool {
        self != Arch::Gemma
    }

    /// Per-head RMSNorm of queries and keys (Gemma 3).
    pub fn qk_norm(self) -> bool {
        self == Arch::Gemma3
    }
}

/// One decoder layer's attention rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerSpec {
    /// Sliding window for local layers, `None` for global ones.
    pub window: Option<usize>,
    pub rope_theta: f32,
    /// Linear RoPE scaling: positions are divided by this (1 for none).
    pub rope_factor: f32,
    /// Gemma 2 and 3: the attention and feed-forward outputs are normed before they are
    /// added to the residual stream (Gemma2DecoderLayer.post_attention_layernorm).
    pub post_norms: bool,
    /// Gemma 3: each head of q and k is normed before RoPE (Gemma3Attention.q_norm).
    pub qk_norm: bool,
}

/// Shape and rules of one attention call: one layer's facts as the attention kernel and its
/// reference take them.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Keys with pos - j >= window are invisible; `None` for global layers.
    pub window: Option<usize>,
    /// query_pre_attn_scalar^-0.5.
    pub scale: f32,
    /// attn_logit_softcapping; `None` disables it.
    pub softcap: Option<f32>,
}

/// Everything the engine needs to know about a Gemma model, resolved.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// query_pre_attn_scalar^-0.5 (not head_dim^-0.5).
    pub query_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub eps: f32,
    pub max_positions: usize,
    /// One entry per decoder layer.
    pub layers: Vec<LayerSpec>,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    /// Added to every norm weight: 1 for Hugging Face's zero-centred weights, 0 for files that
    /// store 1 + w (GGUF).
    pub norm_offset: f32,
}

/// (theta, linear factor) of one rope_parameters object.
fn rope_entry(v: &serde_json::Value) -> (Option<f64>, Option<f64>, Option<String>) {
    (
        v.get("rope_theta").and_then(|x| x.as_f64()),
        v.get("factor").and_then(|x| x.as_f64()),
        v.get("rope_type")
            .and_then(|x| x.as_str())
            .map(String::from),
    )
}

/// A token-id field of config.json or generation_config.json: one id or a list.
pub fn token_ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

impl HfConfig {
    /// Reads config.json (a regular file of bounded size).
    pub fn read(path: &Path) -> Result<HfConfig> {
        let text = crate::files::read_text(path, crate::files::MAX_JSON_BYTES)?;
        HfConfig::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a config.json; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<HfConfig> {
        serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_string(),
            message: printable_message(&e.to_string()),
        })
    }
}

/// Largest sizes a config may give (hidden, intermediate, heads times head_dim), far above any
/// Gemma (4608, 36864, 4096) and small enough that every product of them fits a usize.
pub const MAX_WIDTH: usize = 1 << 20;
/// Most attention heads.
pub const MAX_HEADS: usize = 1 << 12;
/// Most decoder layers (Gemma 3 27B has 62).
pub const MAX_LAYERS: usize = 1024;
/// Largest vocabulary (Gemma's is 262144 at most).
pub const MAX_VOCAB: usize = 1 << 24;
/// Largest context and sliding window (Gemma 3: 131072).
pub const MAX_POSITIONS: usize = 1 << 24;

/// The names of config fields in errors: config.json's own, or the GGUF keys they come from.
type FieldName<'a> = &'a dyn Fn(&str) -> String;

fn json_field(name: &str) -> String {
    name.to_string()
}

/// A positive, finite f32 (RoPE bases, soft-caps, scales).
fn positive(v: f64) -> bool {
    let v = v as f32;
    v.is_finite() && v > 0.0
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        ModelConfig::from_hf(&HfConfig::read(&path)?, &path.display().to_string())
    }

    /// The configuration in the text of a config.json; `path` names it in errors.
    pub fn from_json(text: &str, path: &str) -> Result<ModelConfig> {
        ModelConfig::from_hf(&HfConfig::parse(text, path)?, path)
    }

    /// Resolves a config.json, refusing values the engine cannot compute with (each error
    /// names its field).
    pub fn from_hf(c: &HfConfig, path: &str) -> Result<ModelConfig> {
        Self::from_hf_named(c, path, &json_field)
    }

    fn from_hf_named(c: &HfConfig, path: &str, field: FieldName) -> Result<ModelConfig> {
        let bad = |message: String| Error::Config {
            path: path.to_string(),
            message,
        };
        // `name` is `found`, which is not `expected`.
        let refuse = |name: &str, found: &dyn std::fmt::Display, expected: &str| {
            bad(format!("{} is {found}; expected {expected}", field(name)))
        };
        let within = |name: &str, v: usize, max: usize| -> Result<()> {
            if v == 0 || v > max {
                return Err(refuse(name, &v, &format!("1 to {max}")));
            }
            Ok(())
        };
        let model_type = c.model_type.as_deref().unwrap_or("");
        let arch = Arch::from_model_type(model_type).ok_or_else(|| {
            bad(format!(
                "unsupported architecture `{}` ({}); supported: gemma, gemma2, gemma3_text",
                printable(model_type),
                printable(&c.architectures.join(", "))
            ))
        })?;
        // Gemma 1's configs say "gelu", which transformers maps to the tanh approximation.
        let activation = c
            .hidden_activation
            .as_deref()
            .or(c.hidden_act.as_deref())
            .unwrap_or("gelu_pytorch_tanh");
        if !matches!(activation, "gelu_pytorch_tanh" | "gelu_tanh" | "gelu") {
            return Err(bad(format!(
                "unsupported activation `{}`; Gemma uses gelu_pytorch_tanh",
                printable(activation)
            )));
        }
        within("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS)?;
        within("hidden_size", c.hidden_size, MAX_WIDTH)?;
        within("intermediate_size", c.intermediate_size, MAX_WIDTH)?;
        within("num_attention_heads", c.num_attention_heads, MAX_HEADS)?;
        within("vocab_size", c.vocab_size, MAX_VOCAB)?;
        let heads = c.num_attention_heads;
        let kv_heads = c.num_key_value_heads.unwrap_or(heads);
        within("num_key_value_heads", kv_heads, heads)?;
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / heads);
        // Before any product with head_dim: a huge one would overflow it. (What the attention
        // kernel holds is checked where the model is loaded.)
        if head_dim == 0 || !head_dim.is_multiple_of(4) || head_dim > MAX_WIDTH {
            return Err(refuse(
                "head_dim",
                &head_dim,
                &format!("a multiple of 4 from 4 to {MAX_WIDTH}"),
            ));
        }
        if !heads.is_multiple_of(kv_heads) {
            return Err(bad(format!(
                "{heads} attention heads are not a multiple of {kv_heads} kv heads"
            )));
        }
        if !c.hidden_size.is_multiple_of(32)
            || !c.intermediate_size.is_multiple_of(32)
            || !(heads * head_dim).is_multiple_of(32)
        {
            return Err(bad(format!(
                "hidden_size {}, intermediate_size {} and heads * head_dim {} must be multiples of 32",
                c.hidden_size,
                c.intermediate_size,
                heads * head_dim
            )));
        }
        // RoPE: one (theta, factor) for global layers and one for sliding layers.
        let rope = c.rope_parameters.as_ref();
        let (flat_theta, flat_factor, flat_type) = rope.map(rope_entry).unwrap_or_default();
        let nested = |kind: &str| rope.and_then(|r| r.get(kind)).map(rope_entry);
        let (mut global_theta, mut global_factor, mut global_type) =
            nested("full_attention").unwrap_or((flat_theta, flat_factor, flat_type));
        let (local_theta, _, _) = nested("sliding_attention").unwrap_or_default();
        if let Some(scaling) = &c.rope_scaling
            && !scaling.is_null()
        {
            let (_, factor, kind) = rope_entry(scaling);
            global_factor = factor.or(global_factor);
            global_type = kind.or(global_type);
        }
        let default_theta = if arch == Arch::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        };
        global_theta = global_theta.or(c.rope_theta);
        let global_theta = global_theta.unwrap_or(default_theta) as f32;
        let global_factor = match global_type.as_deref() {
            None | Some("default") => 1.0,
            Some("linear") => global_factor.unwrap_or(1.0) as f32,
            Some(other) => {
                return Err(bad(format!(
                    "unsupported rope_type `{}`; supported: default, linear",
                    printable(other)
                )));
            }
        };
        if !positive(global_theta as f64) {
            return Err(refuse(
                "rope_theta",
                &global_theta,
                "a finite number above 0",
            ));
        }
        if !positive(global_factor as f64) {
            return Err(refuse(
                "rope_scaling.factor",
                &global_factor,
                "a finite number above 0",
            ));
        }
        // Gemma 3's sliding layers use their own base and are never scaled.
        let local = match arch {
            Arch::Gemma3 => (
                local_theta.or(c.rope_local_base_freq).unwrap_or(10_000.0) as f32,
                1.0,
            ),
            _ => (global_theta, global_factor),
        };
        if !positive(local.0 as f64) {
            return Err(refuse(
                "rope_local_base_freq",
                &local.0,
                "a finite number above 0",
            ));
        }
        let window = c.sliding_window.unwrap_or(4096);
        within("sliding_window", window, MAX_POSITIONS)?;
        let pattern = c.sliding_window_pattern.unwrap_or(6).max(1);
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let sliding =
                    match (&c.layer_types, arch) {
                        (_, Arch::Gemma) => false,
                        (Some(types), _) => types
                            .get(i)
                            .map(|t| t == "sliding_attention")
                            .ok_or_else(|| {
                                bad(format!(
                                    "layer_types has {} entries for {} layers",
                                    types.len(),
                                    c.num_hidden_layers
                                ))
                            })?,
                        // transformers' defaults: Gemma 2 slides on even layers, Gemma 3 on all
                        // but every `pattern`-th.
                        (None, Arch::Gemma2) => (i + 1) % 2 == 1,
                        (None, Arch::Gemma3) => (i + 1) % pattern != 0,
                    };
                let (rope_theta, rope_factor) = if sliding {
                    local
                } else {
                    (global_theta, global_factor)
                };
                Ok(LayerSpec {
                    window: sliding.then_some(window),
                    rope_theta,
                    rope_factor,
                    post_norms: arch.post_norms(),
                    qk_norm: arch.qk_norm(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let query_scalar = match arch {
            Arch::Gemma => head_dim as f64,
            _ => c.query_pre_attn_scalar.unwrap_or(256.0),
        };
        let query_scale = (query_scalar as f32).powf(-0.5);
        if !positive(query_scalar) || !positive(query_scale as f64) {
            return Err(refuse(
                "query_pre_attn_scalar",
                &query_scalar,
                "a finite number above 0",
            ));
        }
        for (name, cap) in [
            ("attn_logit_softcapping", c.attn_logit_softcapping),
            ("final_logit_softcapping", c.final_logit_softcapping),
        ] {
            if let Some(cap) = cap
                && !positive(cap)
            {
                return Err(refuse(name, &cap, "a finite number above 0, or none"));
            }
        }
        let eps = c.rms_norm_eps.unwrap_or(1e-6);
        if !(eps >= 0.0 && (eps as f32).is_finite()) {
            return Err(refuse(
                "rms_norm_eps",
                &eps,
                "a finite number of at least 0",
            ));
        }
        let max_positions = c
            .max_position_embeddings
            .unwrap_or(if arch == Arch::Gemma3 { 131_072 } else { 8192 });
        within("max_position_embeddings", max_positions, MAX_POSITIONS)?;
        Ok(ModelConfig {
            arch,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads,
            kv_heads,
            head_dim,
            vocab: c.vocab_size,
            query_scale,
            // Gemma 3 stores attn_logit_softcapping but never applies it; Gemma 1 has none.
            attn_softcap: match arch {
                Arch::Gemma2 => c.attn_logit_softcapping.map(|v| v as f32),
                _ => None,
            },
            final_softcap: match arch {
                Arch::Gemma => None,
                _ => c.final_logit_softcapping.map(|v| v as f32),
            },
            eps: eps as f32,
            max_positions,
            layers,
            bos_id: token_ids(c.bos_token_id.as_ref()).first().copied(),
            eos_ids: token_ids(c.eos_token_id.as_ref()),
            norm_offset: 1.0,
        })
    }

    /// A Gemma 2 release's shape (gemma2-2b, gemma2-9b, gemma2-27b), for synthetic models.
    pub fn preset(name: &str) -> Result<ModelConfig> {
        // (hidden, intermediate, layers, heads, kv heads, head_dim, query_pre_attn_scalar)
        let (hidden, intermediate, layers, heads, kv_heads, head_dim, qpas) = match name {
            "gemma2-2b" => (2304, 9216, 26, 8, 4, 256, 256),
            "gemma2-9b" => (3584, 14336, 42, 16, 8, 256, 256),
            "gemma2-27b" => (4608, 36864, 46, 32, 16, 128, 144),
            other => {
                return Err(Error::Config {
                    path: "--synthetic".into(),
                    message: format!(
                        "unknown model `{other}`: expected gemma2-2b, gemma2-9b or gemma2-27b"
                    ),
                });
            }
        };
        let hf = HfConfig {
            model_type: Some("gemma2".into()),
            architectures: vec!["Gemma2ForCausalLM".into()],
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: Some(head_dim),
            query_pre_attn_scalar: Some(qpas as f64),
            sliding_window: Some(4096),
            attn_logit_softcapping: Some(50.0),
            final_logit_softcapping: Some(30.0),
            rope_theta: Some(10000.0),
            rope_parameters: None,
            rope_local_base_freq: None,
            rope_scaling: None,
            sliding_window_pattern: None,
            rms_norm_eps: Some(1e-6),
            max_position_embeddings: Some(8192),
            hidden_activation: Some("gelu_pytorch_tanh".into()),
            hidden_act: None,
            vocab_size: 256_000,
            torch_dtype: Some("bfloat16".into()),
            dtype: None,
            layer_types: None,
            bos_token_id: Some(2.into()),
            eos_token_id: Some(serde_json::json!([1, 107])),
            pad_token_id: Some(0.into()),
        };
        ModelConfig::from_hf(&hf, name)
    }

    /// Weights: embedding, 7 matrices and 4 norms per layer, final norm.
    pub fn parameters(&self) -> usize {
        let per_layer = 2 * self.q_dim() * self.hidden
            + 2 * self.kv_dim() * self.hidden
            + 3 * self.intermediate * self.hidden
            + 4 * self.hidden;
        self.vocab * self.hidden + self.layers.len() * per_layer + self.hidden
    }

    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The attention rules of layer `i`, as the attention kernel and reference take them.
    pub fn attention_shape(&self, i: usize) -> AttentionShape {
        AttentionShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            window: self.layers[i].window,
            scale: self.query_scale,
            softcap: self.attn_softcap,
        }
    }
}

impl ModelConfig {
    /// The configuration of a GGUF file's `gemma`, `gemma2` or `gemma3` model, with the
    /// defaults llama.cpp applies where the file says nothing. GGUF stores norm weights with
    /// the 1 already added, so `norm_offset` is 0.
    pub fn from_gguf(g: &crate::weights::gguf::Gguf) -> Result<ModelConfig> {
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
        let is_27b = matches!((arch, layers), (Arch::Gemma2, 46) | (Arch::Gemma3, 62));
        let query_pre_attn_scalar = if is_27b {
            hidden.checked_div(heads).unwrap_or(0)
        } else {
            head_dim
        };
        let layer_types = match arch {
            Arch::Gemma => None,
            Arch::Gemma2 => Some((0..layers).map(|i| i % 2 == 0).collect::<Vec<_>>()),
            Arch::Gemma3 => {
                let pattern = opt_int("attention.sliding_window_pattern")?
                    .unwrap_or(6)
                    .max(1);
                Some((0..layers).map(|i| (i + 1) % pattern != 0).collect())
            }
        };
        let scaling = key("rope.scaling.type")
            .and_then(|v| v.as_str())
            .map(String::from);
        let scaling_factor = float("rope.scaling.factor")?.unwrap_or(1.0);
        let hf = HfConfig {
            model_type: Some(match arch {
                Arch::Gemma => "gemma".into(),
                Arch::Gemma2 => "gemma2".into(),
                Arch::Gemma3 => "gemma3_text".into(),
            }),
            architectures: vec![],
            hidden_size: hidden,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: opt_int("attention.head_count_kv")?,
            head_dim: Some(head_dim),
            query_pre_attn_scalar: Some(query_pre_attn_scalar as f64),
            sliding_window: opt_int("attention.sliding_window")?,
            attn_logit_softcapping: float("attn_logit_softcapping")?,
            final_logit_softcapping: float("final_logit_softcapping")?,
            rope_theta: float("rope.freq_base")?,
            rope_parameters: None,
            rope_local_base_freq: Some(10_000.0),
            rope_scaling: scaling
                .map(|t| serde_json::json!({"rope_type": t, "factor": scaling_factor})),
            sliding_window_pattern: None,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon")?,
            max_position_embeddings: opt_int("context_length")?,
            hidden_activation: Some("gelu_pytorch_tanh".into()),
            hidden_act: None,
            vocab_size: vocab,
            torch_dtype: None,
            dtype: None,
            layer_types: layer_types.map(|t| {
                t.into_iter()
                    .map(|s| {
                        if s {
                            "sliding_attention"
                        } else {
                            "full_attention"
                        }
                        .to_string()
                    })
                    .collect()
            }),
            bos_token_id: g
                .get("tokenizer.ggml.bos_token_id")
                .and_then(|v| v.as_u64())
                .map(Into::into),
            eos_token_id: g
                .get("tokenizer.ggml.eos_token_id")
                .and_then(|v| v.as_u64())
                .map(Into::into),
            pad_token_id: None,
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
        let mut c = ModelConfig::from_hf_named(&hf, &path, &field)?;
        c.norm_offset = 0.0;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma2_2b() -> HfConfig {
        serde_json::from_str(
            r#"{"architectures": ["Gemma2ForCausalLM"], "attn_logit_softcapping": 50.0,
            "bos_token_id": 2, "eos_token_id": [1, 107], "final_logit_softcapping": 30.0,
            "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": 2304, "intermediate_size": 9216, "max_position_embeddings": 8192,
            "model_type": "gemma2", "num_attention_heads": 8, "num_hidden_layers": 26,
            "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
            "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
            "torch_dtype": "float32", "vocab_size": 256000}"#,
        )
        .unwrap()
    }

    #[test]
    fn real_gemma2_config_resolves() {
        let c = ModelConfig::from_hf(&gemma2_2b(), "config.json").unwrap();
        assert_eq!(c.layers.len(), 26);
        assert_eq!(c.layers[0].window, Some(4096), "layer 0 slides");
        assert_eq!(c.layers[1].window, None, "layer 1 is global");
        assert_eq!(c.query_scale, 1.0 / 16.0);
        assert_eq!(c.eos_ids, vec![1, 107]);
        assert_eq!((c.attn_softcap, c.final_softcap), (Some(50.0), Some(30.0)));
    }

    #[test]
    fn presets_have_the_release_shapes() {
        let c = ModelConfig::preset("gemma2-2b").unwrap();
        // 2.61 B parameters, the tied embedding counted once.
        assert_eq!(c.parameters(), 2_614_341_888);
        let c = ModelConfig::preset("gemma2-27b").unwrap();
        assert_eq!((c.head_dim, c.query_scale), (128, 144f32.powf(-0.5)));
        assert!(ModelConfig::preset("gemma2-3b").is_err());
    }

    #[test]
    fn gemma3_configs_before_transformers_5_resolve() {
        // gemma-3-4b-style: no layer_types, a pattern of 6, local base 10k, global 1M x 8.
        let c: HfConfig = serde_json::from_str(
            r#"{"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
            "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 1024,
            "sliding_window_pattern": 6, "rope_local_base_freq": 10000.0, "rope_theta": 1000000.0,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "attn_logit_softcapping": null,
            "final_logit_softcapping": null, "vocab_size": 262208}"#,
        )
        .unwrap();
        let c = ModelConfig::from_hf(&c, "config.json").unwrap();
        assert_eq!(c.arch, Arch::Gemma3);
        let global: Vec<usize> = (0..34).filter(|&i| c.layers[i].window.is_none()).collect();
        assert_eq!(global, vec![5, 11, 17, 23, 29]);
        assert_eq!(
            (c.layers[0].rope_theta, c.layers[0].rope_factor),
            (10_000.0, 1.0)
        );
        assert_eq!(
            (c.layers[5].rope_theta, c.layers[5].rope_factor),
            (1_000_000.0, 8.0)
        );
        assert_eq!(c.layers[0].window, Some(1024));
        assert_eq!((c.attn_softcap, c.final_softcap), (None, None));
    }

    #[test]
    fn gemma1_configs_resolve() {
        let c: HfConfig = serde_json::from_str(
            r#"{"model_type": "gemma", "hidden_size": 3072, "intermediate_size": 24576,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
            "head_dim": 256, "hidden_act": "gelu", "rope_theta": 10000.0, "vocab_size": 256000}"#,
        )
        .unwrap();
        let c = ModelConfig::from_hf(&c, "config.json").unwrap();
        assert_eq!(c.arch, Arch::Gemma);
        assert!(c.layers.iter().all(|l| l.window.is_none()));
        assert_eq!(c.query_scale, 1.0 / 16.0, "head_dim^-0.5");
        assert_eq!((c.attn_softcap, c.final_softcap), (None, None));
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        let mut c = gemma2_2b();
        c.model_type = Some("llama".into());
        let e = ModelConfig::from_hf(&c, "x/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported architecture `llama`") && e.contains("gemma2"),
            "{e}"
        );
    }

    #[test]
    fn values_that_break_the_math_are_refused_by_name() {
        let base = serde_json::json!({
            "model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
            "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
            "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": 256000});
        assert!(ModelConfig::from_json(&base.to_string(), "c").is_ok());
        for (field, value, expected) in [
            (
                "sliding_window",
                serde_json::json!(0),
                "sliding_window is 0",
            ),
            (
                "rms_norm_eps",
                serde_json::json!(-1.0),
                "rms_norm_eps is -1",
            ),
            ("rope_theta", serde_json::json!(0.0), "rope_theta is 0"),
            ("rope_theta", serde_json::json!(-1.0), "rope_theta is -1"),
            (
                "query_pre_attn_scalar",
                serde_json::json!(0),
                "query_pre_attn_scalar is 0",
            ),
            (
                "query_pre_attn_scalar",
                serde_json::json!(1e-60),
                "query_pre_attn_scalar is",
            ),
            (
                "num_hidden_layers",
                serde_json::json!(0),
                "num_hidden_layers is 0",
            ),
            (
                "num_hidden_layers",
                serde_json::json!(1u64 << 40),
                "expected 1 to 1024",
            ),
            (
                "num_key_value_heads",
                serde_json::json!(3),
                "not a multiple of 3 kv heads",
            ),
            (
                "num_key_value_heads",
                serde_json::json!(0),
                "num_key_value_heads is 0",
            ),
            ("head_dim", serde_json::json!(0), "head_dim is 0"),
            ("hidden_size", serde_json::json!(0), "hidden_size is 0"),
            ("vocab_size", serde_json::json!(0), "vocab_size is 0"),
            (
                "max_position_embeddings",
                serde_json::json!(0),
                "max_position_embeddings is 0",
            ),
            (
                "attn_logit_softcapping",
                serde_json::json!(0.0),
                "attn_logit_softcapping is 0",
            ),
            (
                "final_logit_softcapping",
                serde_json::json!(-30.0),
                "final_logit_softcapping is -30",
            ),
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "linear", "factor": 0.0}),
                "rope_scaling.factor is 0",
            ),
        ] {
            let mut c = base.clone();
            c[field] = value;
            let e = ModelConfig::from_json(&c.to_string(), "c")
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{field}: {e}");
        }
        // NaN and infinities are not JSON, but GGUF metadata holds them (see from_gguf).
        let mut c = gemma2_2b();
        for v in [f64::NAN, f64::INFINITY] {
            c.rms_norm_eps = Some(v);
            assert!(ModelConfig::from_hf(&c, "c").is_err());
        }
    }
}
