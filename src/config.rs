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

/// The names of config fields in errors: config.json's own, or the keys of another file
/// (GGUF metadata) they come from.
pub type FieldName<'a> = &'a dyn Fn(&str) -> String;

fn json_field(name: &str) -> String {
    name.to_string()
}

/// A positive, finite f32 (RoPE bases, soft-caps, scales).
fn positive(v: f64) -> bool {
    let v = v as f32;
    v.is_finite() && v > 0.0
}

// The architecture defaults: what transformers assumes where a config.json says nothing.

/// transformers/models/gemma/configuration_gemma.py and gemma2/configuration_gemma2.py:
/// rope_theta=10000.0.
pub const GEMMA2_ROPE_THETA: f64 = 10_000.0;
/// transformers/models/gemma3/configuration_gemma3.py: rope_theta=1_000_000.0 (the global
/// layers' base).
pub const GEMMA3_ROPE_THETA: f64 = 1_000_000.0;
/// transformers/models/gemma3/configuration_gemma3.py: rope_local_base_freq=10_000.0 (the
/// sliding layers' base, never scaled).
pub const GEMMA3_ROPE_LOCAL_THETA: f64 = 10_000.0;
/// transformers/models/gemma2/configuration_gemma2.py and gemma3/configuration_gemma3.py:
/// sliding_window=4096.
pub const SLIDING_WINDOW: usize = 4096;
/// transformers/models/gemma3/configuration_gemma3.py: sliding_window_pattern=6 (layer i
/// slides unless (i + 1) % 6 == 0).
pub const GEMMA3_SLIDING_PATTERN: usize = 6;
/// transformers/models/gemma2/configuration_gemma2.py: layer_types slide on every other layer,
/// "sliding_attention" if (i + 1) % 2 else "full_attention".
pub const GEMMA2_SLIDING_PATTERN: usize = 2;
/// transformers/models/gemma/configuration_gemma.py and gemma2/configuration_gemma2.py:
/// max_position_embeddings=8192.
pub const GEMMA2_MAX_POSITIONS: usize = 8192;
/// transformers/models/gemma3/configuration_gemma3.py: max_position_embeddings=131_072.
pub const GEMMA3_MAX_POSITIONS: usize = 131_072;
/// transformers/models/gemma2/configuration_gemma2.py and gemma3/configuration_gemma3.py:
/// query_pre_attn_scalar=256.
pub const QUERY_PRE_ATTN_SCALAR: f64 = 256.0;
/// transformers/models/gemma2/configuration_gemma2.py: rms_norm_eps=1e-6.
pub const RMS_NORM_EPS: f64 = 1e-6;
/// transformers/models/gemma/configuration_gemma.py: hidden_act="gelu_pytorch_tanh".
pub const ACTIVATION: &str = "gelu_pytorch_tanh";

/// A model's settings as a file states them (`None` where it says nothing), before defaults
/// and checks: what config.json and GGUF metadata both map to.
#[derive(Clone, Debug)]
pub struct Settings {
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab: usize,
    pub query_pre_attn_scalar: Option<f64>,
    pub sliding_window: Option<usize>,
    /// Per layer, whether it slides (config.json's `layer_types`).
    pub sliding: Option<Vec<bool>>,
    /// Gemma 3: one global layer in every `sliding_window_pattern`.
    pub sliding_window_pattern: Option<usize>,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// The global layers' RoPE base, its `rope_type` and linear factor.
    pub rope_theta: Option<f64>,
    pub rope_type: Option<String>,
    pub rope_factor: Option<f64>,
    /// Gemma 3: the sliding layers' RoPE base.
    pub rope_local_theta: Option<f64>,
    pub eps: Option<f64>,
    pub max_positions: Option<usize>,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    /// See [`ModelConfig::norm_offset`].
    pub norm_offset: f32,
}

/// Makes the errors of [`ModelConfig::resolve`]: `path` names the file, `field` each setting.
struct Refusal<'a> {
    path: &'a str,
    field: FieldName<'a>,
}

impl Refusal<'_> {
    /// A configuration error with `message`.
    fn bad(&self, message: String) -> Error {
        Error::Config {
            path: self.path.to_string(),
            message,
        }
    }

    /// `name` is `found`, which is not `expected`.
    fn refuse(&self, name: &str, found: &dyn std::fmt::Display, expected: &str) -> Error {
        self.bad(format!(
            "{} is {found}; expected {expected}",
            (self.field)(name)
        ))
    }

    /// Refuses a `name` of `v` outside 1 to `max`.
    fn within(&self, name: &str, v: usize, max: usize) -> Result<()> {
        if v == 0 || v > max {
            return Err(self.refuse(name, &v, &format!("1 to {max}")));
        }
        Ok(())
    }
}

/// The attention heads' counts and width, resolved.
struct HeadShape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Checks the model's sizes and resolves its heads.
fn head_shape(s: &Settings, e: &Refusal) -> Result<HeadShape> {
    e.within("num_hidden_layers", s.layers, MAX_LAYERS)?;
    e.within("hidden_size", s.hidden, MAX_WIDTH)?;
    e.within("intermediate_size", s.intermediate, MAX_WIDTH)?;
    e.within("num_attention_heads", s.heads, MAX_HEADS)?;
    e.within("vocab_size", s.vocab, MAX_VOCAB)?;
    let heads = s.heads;
    let kv_heads = s.kv_heads.unwrap_or(heads);
    e.within("num_key_value_heads", kv_heads, heads)?;
    let head_dim = s.head_dim.unwrap_or(s.hidden / heads);
    // Before any product with head_dim: a huge one would overflow it. (What the attention
    // kernel holds is checked where the model is loaded.)
    if head_dim == 0 || !head_dim.is_multiple_of(4) || head_dim > MAX_WIDTH {
        return Err(e.refuse(
            "head_dim",
            &head_dim,
            &format!("a multiple of 4 from 4 to {MAX_WIDTH}"),
        ));
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(e.bad(format!(
            "{heads} attention heads are not a multiple of {kv_heads} kv heads"
        )));
    }
    if !s.hidden.is_multiple_of(32)
        || !s.intermediate.is_multiple_of(32)
        || !(heads * head_dim).is_multiple_of(32)
    {
        return Err(e.bad(format!(
            "hidden_size {}, intermediate_size {} and heads * head_dim {} must be multiples of 32",
            s.hidden,
            s.intermediate,
            heads * head_dim
        )));
    }
    Ok(HeadShape {
        heads,
        kv_heads,
        head_dim,
    })
}

/// (theta, linear factor) of the global layers' RoPE and of the sliding layers'.
struct Rope {
    global: (f32, f32),
    local: (f32, f32),
}

/// Resolves and checks the RoPE bases and scaling of both kinds of layer.
fn rope(s: &Settings, e: &Refusal) -> Result<Rope> {
    let default_theta = if s.arch == Arch::Gemma3 {
        GEMMA3_ROPE_THETA
    } else {
        GEMMA2_ROPE_THETA
    };
    let global_theta = s.rope_theta.unwrap_or(default_theta) as f32;
    let global_factor = match s.rope_type.as_deref() {
        None | Some("default") => 1.0,
        Some("linear") => s.rope_factor.unwrap_or(1.0) as f32,
        Some(other) => {
            return Err(e.bad(format!(
                "unsupported rope_type `{}`; supported: default, linear",
                printable(other)
            )));
        }
    };
    if !positive(global_theta as f64) {
        return Err(e.refuse("rope_theta", &global_theta, "a finite number above 0"));
    }
    if !positive(global_factor as f64) {
        return Err(e.refuse(
            "rope_scaling.factor",
            &global_factor,
            "a finite number above 0",
        ));
    }
    // Gemma 3's sliding layers use their own base and are never scaled.
    let local = match s.arch {
        Arch::Gemma3 => (
            s.rope_local_theta.unwrap_or(GEMMA3_ROPE_LOCAL_THETA) as f32,
            1.0,
        ),
        _ => (global_theta, global_factor),
    };
    if !positive(local.0 as f64) {
        return Err(e.refuse("rope_local_base_freq", &local.0, "a finite number above 0"));
    }
    Ok(Rope {
        global: (global_theta, global_factor),
        local,
    })
}

/// Each decoder layer's rules: whether it slides, in what window, with which RoPE.
fn layer_specs(s: &Settings, rope: &Rope, e: &Refusal) -> Result<Vec<LayerSpec>> {
    let arch = s.arch;
    let window = s.sliding_window.unwrap_or(SLIDING_WINDOW);
    e.within("sliding_window", window, MAX_POSITIONS)?;
    let pattern = s
        .sliding_window_pattern
        .unwrap_or(GEMMA3_SLIDING_PATTERN)
        .max(1);
    (0..s.layers)
        .map(|i| {
            let sliding = match (&s.sliding, arch) {
                (_, Arch::Gemma) => false,
                (Some(types), _) => types.get(i).copied().ok_or_else(|| {
                    e.bad(format!(
                        "layer_types has {} entries for {} layers",
                        types.len(),
                        s.layers
                    ))
                })?,
                // transformers' defaults: Gemma 2 slides on even layers, Gemma 3 on all
                // but every `pattern`-th.
                (None, Arch::Gemma2) => (i + 1) % GEMMA2_SLIDING_PATTERN != 0,
                (None, Arch::Gemma3) => (i + 1) % pattern != 0,
            };
            let (rope_theta, rope_factor) = if sliding { rope.local } else { rope.global };
            Ok(LayerSpec {
                window: sliding.then_some(window),
                rope_theta,
                rope_factor,
                post_norms: arch.post_norms(),
                qk_norm: arch.qk_norm(),
            })
        })
        .collect()
}

/// query_pre_attn_scalar^-0.5 (head_dim^-0.5 for Gemma 1), checked.
fn query_scale(s: &Settings, head_dim: usize, e: &Refusal) -> Result<f32> {
    let query_scalar = match s.arch {
        Arch::Gemma => head_dim as f64,
        _ => s.query_pre_attn_scalar.unwrap_or(QUERY_PRE_ATTN_SCALAR),
    };
    let query_scale = (query_scalar as f32).powf(-0.5);
    if !positive(query_scalar) || !positive(query_scale as f64) {
        return Err(e.refuse(
            "query_pre_attn_scalar",
            &query_scalar,
            "a finite number above 0",
        ));
    }
    Ok(query_scale)
}

/// Refuses soft-caps that are given but not positive and finite.
fn check_softcaps(s: &Settings, e: &Refusal) -> Result<()> {
    for (name, cap) in [
        ("attn_logit_softcapping", s.attn_softcap),
        ("final_logit_softcapping", s.final_softcap),
    ] {
        if let Some(cap) = cap
            && !positive(cap)
        {
            return Err(e.refuse(name, &cap, "a finite number above 0, or none"));
        }
    }
    Ok(())
}

/// The norms' epsilon, defaulted and checked.
fn rms_norm_eps(s: &Settings, e: &Refusal) -> Result<f32> {
    let eps = s.eps.unwrap_or(RMS_NORM_EPS);
    if !(eps >= 0.0 && (eps as f32).is_finite()) {
        return Err(e.refuse("rms_norm_eps", &eps, "a finite number of at least 0"));
    }
    Ok(eps as f32)
}

/// The longest context, defaulted by architecture and checked.
fn max_positions(s: &Settings, e: &Refusal) -> Result<usize> {
    let max_positions = s.max_positions.unwrap_or(if s.arch == Arch::Gemma3 {
        GEMMA3_MAX_POSITIONS
    } else {
        GEMMA2_MAX_POSITIONS
    });
    e.within("max_position_embeddings", max_positions, MAX_POSITIONS)?;
    Ok(max_positions)
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        if path.symlink_metadata().is_err() {
            return Err(Error::Io {
                path: dir.display().to_string(),
                message: "not a model: a directory without config.json (expected a Hugging Face \
                          model directory or a .gguf file)"
                    .into(),
            });
        }
        ModelConfig::from_hf(&HfConfig::read(&path)?, &path.display().to_string())
    }

    /// The configuration in the text of a config.json; `path` names it in errors.
    pub fn from_json(text: &str, path: &str) -> Result<ModelConfig> {
        ModelConfig::from_hf(&HfConfig::parse(text, path)?, path)
    }

    /// Resolves a config.json, refusing values the engine cannot compute with (each error
    /// names its field).
    pub fn from_hf(c: &HfConfig, path: &str) -> Result<ModelConfig> {
        let bad = |message: String| Error::Config {
            path: path.to_string(),
            message,
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
            .unwrap_or(ACTIVATION);
        if !matches!(activation, "gelu_pytorch_tanh" | "gelu_tanh" | "gelu") {
            return Err(bad(format!(
                "unsupported activation `{}`; Gemma uses gelu_pytorch_tanh",
                printable(activation)
            )));
        }
        // RoPE: one (theta, factor) for global layers and one for sliding layers, flat or
        // per layer type (transformers 5), or in rope_scaling and rope_local_base_freq.
        let rope = c.rope_parameters.as_ref();
        let (flat_theta, flat_factor, flat_type) = rope.map(rope_entry).unwrap_or_default();
        let nested = |kind: &str| rope.and_then(|r| r.get(kind)).map(rope_entry);
        let (global_theta, mut global_factor, mut global_type) =
            nested("full_attention").unwrap_or((flat_theta, flat_factor, flat_type));
        let (local_theta, _, _) = nested("sliding_attention").unwrap_or_default();
        if let Some(scaling) = &c.rope_scaling
            && !scaling.is_null()
        {
            let (_, factor, kind) = rope_entry(scaling);
            global_factor = factor.or(global_factor);
            global_type = kind.or(global_type);
        }
        let settings = Settings {
            arch,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            vocab: c.vocab_size,
            query_pre_attn_scalar: c.query_pre_attn_scalar,
            sliding_window: c.sliding_window,
            sliding: c
                .layer_types
                .as_ref()
                .map(|types| types.iter().map(|t| t == "sliding_attention").collect()),
            sliding_window_pattern: c.sliding_window_pattern,
            attn_softcap: c.attn_logit_softcapping,
            final_softcap: c.final_logit_softcapping,
            rope_theta: global_theta.or(c.rope_theta),
            rope_type: global_type,
            rope_factor: global_factor,
            rope_local_theta: local_theta.or(c.rope_local_base_freq),
            eps: c.rms_norm_eps,
            max_positions: c.max_position_embeddings,
            bos_id: token_ids(c.bos_token_id.as_ref()).first().copied(),
            eos_ids: token_ids(c.eos_token_id.as_ref()),
            norm_offset: 1.0,
        };
        ModelConfig::resolve(&settings, path, &json_field)
    }

    /// Applies the architecture's defaults to `s` and resolves it, refusing values the
    /// engine cannot compute with; `path` names the file and `field` each setting in errors.
    pub fn resolve(s: &Settings, path: &str, field: FieldName) -> Result<ModelConfig> {
        let e = Refusal { path, field };
        let arch = s.arch;
        let HeadShape {
            heads,
            kv_heads,
            head_dim,
        } = head_shape(s, &e)?;
        let rope = rope(s, &e)?;
        let layers = layer_specs(s, &rope, &e)?;
        let query_scale = query_scale(s, head_dim, &e)?;
        check_softcaps(s, &e)?;
        let eps = rms_norm_eps(s, &e)?;
        let max_positions = max_positions(s, &e)?;
        Ok(ModelConfig {
            arch,
            hidden: s.hidden,
            intermediate: s.intermediate,
            heads,
            kv_heads,
            head_dim,
            vocab: s.vocab,
            query_scale,
            // Gemma 3 stores attn_logit_softcapping but never applies it; Gemma 1 has none.
            attn_softcap: match arch {
                Arch::Gemma2 => s.attn_softcap.map(|v| v as f32),
                _ => None,
            },
            final_softcap: match arch {
                Arch::Gemma => None,
                _ => s.final_softcap.map(|v| v as f32),
            },
            eps,
            max_positions,
            layers,
            bos_id: s.bos_id,
            eos_ids: s.eos_ids.clone(),
            norm_offset: s.norm_offset,
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
        let settings = Settings {
            arch: Arch::Gemma2,
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads: Some(kv_heads),
            head_dim: Some(head_dim),
            vocab: 256_000,
            query_pre_attn_scalar: Some(qpas as f64),
            sliding_window: Some(SLIDING_WINDOW),
            sliding: None,
            sliding_window_pattern: None,
            attn_softcap: Some(50.0),
            final_softcap: Some(30.0),
            rope_theta: Some(GEMMA2_ROPE_THETA),
            rope_type: None,
            rope_factor: None,
            rope_local_theta: None,
            eps: Some(RMS_NORM_EPS),
            max_positions: Some(GEMMA2_MAX_POSITIONS),
            bos_id: Some(2),
            eos_ids: vec![1, 107],
            norm_offset: 1.0,
        };
        ModelConfig::resolve(&settings, name, &json_field)
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
