//! The model's weights on the GPU, named after the Gemma block, uploaded once at load.

use super::load::Source;
use crate::Result;
use crate::config::ModelConfig;
use crate::gpu::Gpu;
use crate::kernels::{GpuMatrix, RopeTable};
use crate::weights::gemma::{EMBED, FINAL_NORM, LayerTensor};
use crate::weights::{SourceDtype, WeightFormat};

/// One decoder layer's weights. Matrices are [out, in]; norms hold one weight per value.
pub(crate) struct LayerWeights {
    /// \[hidden\]
    pub input_norm: wgpu::Buffer,
    /// q [heads * head_dim, hidden], k and v [kv_heads * head_dim, hidden]: stacked into one
    /// matrix where they share a format (one product), else the three apart; either way their
    /// products land side by side in `RunState::qkv`.
    pub qkv: Vec<GpuMatrix>,
    /// Gemma 3: [2, head_dim], the per-head norm of q, then of k (`LayerSpec::qk_norm`).
    pub qk_norm: Option<wgpu::Buffer>,
    /// [hidden, heads * head_dim]
    pub o: GpuMatrix,
    /// Gemma 2 and 3: \[hidden\] (`LayerSpec::post_norms`).
    pub post_attention_norm: Option<wgpu::Buffer>,
    /// \[hidden\]
    pub pre_feedforward_norm: wgpu::Buffer,
    /// [2 * intermediate, hidden]: the gate rows, then the up rows (stacked), so that one
    /// product gives geglu's [gate | up] input.
    pub gate_up: GpuMatrix,
    /// [hidden, intermediate]
    pub down: GpuMatrix,
    /// Gemma 2 and 3: \[hidden\] (`LayerSpec::post_norms`).
    pub post_feedforward_norm: Option<wgpu::Buffer>,
}

/// Every weight of the model, and the constant tables computed from the configuration.
pub(crate) struct GpuWeights {
    /// [vocab, hidden]: the embedding, and the tied lm_head.
    pub embed: GpuMatrix,
    /// sqrt(hidden), rounded as transformers rounds it for the checkpoint's dtype.
    pub embed_scale: f32,
    pub layers: Vec<LayerWeights>,
    /// \[hidden\]
    pub final_norm: wgpu::Buffer,
    /// The distinct RoPE (cos, sin) tables, [positions, head_dim / 2] each, and which one
    /// each layer uses.
    pub rope: Vec<RopeTable>,
    pub rope_of_layer: Vec<usize>,
}

impl GpuWeights {
    /// Uploads every tensor of `source` in `format` (`None`: each as the source holds it),
    /// with RoPE tables for `positions` positions; `progress` shows a bar counting the file's
    /// bytes.
    pub fn load(
        gpu: &Gpu,
        c: &ModelConfig,
        source: &Source,
        dtype: SourceDtype,
        format: Option<WeightFormat>,
        positions: usize,
        progress: bool,
    ) -> Result<GpuWeights> {
        let bar = Progress::new(progress, source, c, dtype);
        let matrix = |name: &str, shape: [usize; 2]| -> Result<GpuMatrix> {
            let m = source.matrix(gpu, name, shape, format)?;
            bar.tick(source, name, shape[0] * shape[1], dtype);
            Ok(m)
        };
        let norm = |name: &str, len: usize| -> Result<wgpu::Buffer> {
            let w = source.norm(gpu, name, len)?;
            bar.tick(source, name, len, dtype);
            Ok(w)
        };
        let embed = matrix(EMBED, [c.vocab, c.hidden])?;
        let final_norm = norm(FINAL_NORM, c.hidden)?;
        let mut layers = Vec::with_capacity(c.layers.len());
        for (i, spec) in c.layers.iter().enumerate() {
            let m = |t: LayerTensor| matrix(&t.name(i, c.arch), t.shape(c));
            let n = |t: LayerTensor| norm(&t.name(i, c.arch), t.shape(c)[0]);
            let gate_up =
                GpuMatrix::concat_rows(gpu, vec![m(LayerTensor::Gate)?, m(LayerTensor::Up)?])?;
            let qkv = [LayerTensor::Q, LayerTensor::K, LayerTensor::V]
                .map(m)
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            let qkv = match qkv.iter().all(|w| w.format == qkv[0].format) {
                true => vec![GpuMatrix::concat_rows(gpu, qkv)?],
                false => qkv,
            };
            let qk_norm = |i: usize| {
                let names = [LayerTensor::QNorm, LayerTensor::KNorm].map(|t| t.name(i, c.arch));
                let w = source.norms(gpu, &[&names[0], &names[1]], c.head_dim)?;
                names
                    .iter()
                    .for_each(|name| bar.tick(source, name, c.head_dim, dtype));
                Ok::<_, crate::Error>(w)
            };
            layers.push(LayerWeights {
                input_norm: n(LayerTensor::InputNorm)?,
                qkv,
                qk_norm: spec.qk_norm.then(|| qk_norm(i)).transpose()?,
                o: m(LayerTensor::O)?,
                post_attention_norm: spec
                    .post_norms
                    .then(|| n(LayerTensor::PostAttentionNorm))
                    .transpose()?,
                pre_feedforward_norm: n(LayerTensor::PreFeedforwardNorm)?,
                gate_up,
                down: m(LayerTensor::Down)?,
                post_feedforward_norm: spec
                    .post_norms
                    .then(|| n(LayerTensor::PostFeedforwardNorm))
                    .transpose()?,
            });
        }
        bar.finish();
        let (rope, rope_of_layer) = rope_tables(gpu, c, positions);
        Ok(GpuWeights {
            embed,
            embed_scale: crate::weights::gemma::embed_scale(c.hidden, dtype),
            layers,
            final_norm,
            rope,
            rope_of_layer,
        })
    }

    /// Every weight format the model holds, the embedding's first (GGUF files mix several).
    pub fn formats(&self) -> Vec<WeightFormat> {
        let mut formats = vec![self.embed.format];
        for l in &self.layers {
            for m in l.qkv.iter().chain([&l.o, &l.gate_up, &l.down]) {
                if !formats.contains(&m.format) {
                    formats.push(m.format);
                }
            }
        }
        formats
    }
}

/// One (cos, sin) table per distinct (base, scaling), shared by the layers using it, and the
/// table of each layer.
fn rope_tables(gpu: &Gpu, c: &ModelConfig, positions: usize) -> (Vec<RopeTable>, Vec<usize>) {
    let mut keys: Vec<(f32, f32)> = vec![];
    let of_layer = c
        .layers
        .iter()
        .map(|l| {
            let key = (l.rope_theta, l.rope_factor);
            keys.iter().position(|&k| k == key).unwrap_or_else(|| {
                keys.push(key);
                keys.len() - 1
            })
        })
        .collect();
    let tables = keys
        .iter()
        .map(|&(theta, factor)| RopeTable::new(gpu, theta, factor, c.head_dim, positions))
        .collect();
    (tables, of_layer)
}

/// The load's progress bar: it counts the file's bytes (a GGUF's tensors as stored).
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(show: bool, source: &Source, c: &ModelConfig, dtype: SourceDtype) -> Progress {
        Progress(show.then(|| {
            let total = source
                .file_bytes()
                .unwrap_or(c.parameters() as u64 * dtype.bytes() as u64);
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "loading {bar:40} {bytes}/{total_bytes} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        }))
    }

    fn tick(&self, source: &Source, name: &str, elements: usize, dtype: SourceDtype) {
        if let Some(b) = &self.0 {
            let stored = source.tensor_bytes(name);
            b.inc(stored.unwrap_or((elements * dtype.bytes()) as u64));
            b.set_message(name.to_string());
        }
    }

    fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}
