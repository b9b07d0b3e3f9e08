//! `gemma-wgpu bench`: prefill and decode tokens/s in the style of llama-bench.

use anyhow::Result;
use clap::Args;
use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::gpu::{Gpu, GpuOptions};
use gemma_wgpu::kernels::KvDtype;
use gemma_wgpu::model::{Model, ModelOptions};
use gemma_wgpu::weights::WeightFormat;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "synthetic"])))]
pub struct BenchArgs {
    /// A Hugging Face model directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A model of a release's shape with random weights made on the GPU: gemma2-2b,
    /// gemma2-9b or gemma2-27b.
    #[arg(long)]
    synthetic: Option<String>,
    /// Weight format: bf16, q8_0, q4_0 or f32.
    #[arg(long)]
    dtype: Option<WeightFormat>,
    /// KV cache type: f16 or f32.
    #[arg(long)]
    kv: Option<KvDtype>,
    /// Prompt tokens to prefill.
    #[arg(short = 'p', default_value_t = 512)]
    prompt: usize,
    /// Tokens to generate.
    #[arg(short = 'n', default_value_t = 128)]
    generate: usize,
    /// Repetitions.
    #[arg(short = 'r', default_value_t = 3)]
    reps: usize,
    /// One JSON object per test instead of a table.
    #[arg(long)]
    json: bool,
    /// Also break one decode token (after the prompt) into GPU time per kernel, with
    /// dispatches, command buffers and host time per token (needs TIMESTAMP_QUERY).
    #[arg(long)]
    profile: bool,
}

/// Mean and sample standard deviation.
fn stats(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// (prefill tok/s, decode tok/s) of one repetition: `p` prompt tokens, then `n` greedy steps.
fn once(m: &mut Model, p: usize, n: usize) -> Result<(f64, f64)> {
    let vocab = m.config.vocab as u32;
    let prompt: Vec<u32> = (0..p as u32)
        .map(|i| 2 + (i * 7919) % (vocab - 2))
        .collect();
    m.reset();
    let t = Instant::now();
    let mut next = if p > 0 {
        m.feed(&prompt, true)?.ids[0]
    } else {
        2
    };
    let pp = p as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        next = m.feed(&[next], true)?.ids[0];
    }
    let tg = n as f64 / t.elapsed().as_secs_f64();
    Ok((pp, tg))
}

pub fn run(gpu: &GpuOptions, a: &BenchArgs) -> Result<()> {
    let limit = gemma_wgpu::engine::sampling::MAX_TOKENS_LIMIT;
    if a.prompt > limit || a.generate > limit || a.reps > 10_000 {
        anyhow::bail!("-p and -n must be at most {limit} tokens, -r at most 10000 repetitions");
    }
    let options = ModelOptions {
        format: a.dtype,
        kv: a.kv,
        ctx: Some((a.prompt + a.generate + 1).max(64)),
        progress: true,
        ..Default::default()
    };
    let gpu = Gpu::new(gpu)?;
    let (name, mut model) = match (&a.model, &a.synthetic) {
        (Some(dir), _) => {
            let path = gemma_wgpu::weights::hub::resolve(dir)?;
            (
                dir.display().to_string(),
                Model::load(gpu, &path, &options)?,
            )
        }
        (None, Some(preset)) => {
            let config = ModelConfig::preset(preset)?;
            (
                format!("{preset} (synthetic)"),
                Model::synthetic(gpu, config, &options)?,
            )
        }
        (None, None) => anyhow::bail!("give --model DIR or --synthetic NAME"),
    };
    let m = &mut model;
    once(m, a.prompt.min(16), a.generate.min(2))?; // warm-up
    let mut pp = vec![];
    let mut tg = vec![];
    for _ in 0..a.reps.max(1) {
        let (p, _) = once(m, a.prompt, 0)?;
        let (_, g) = once(m, 1, a.generate)?;
        pp.push(p);
        tg.push(g);
    }
    let adapter = m.gpu.describe();
    let model = name;
    let rows = [
        (format!("pp{}", a.prompt), stats(&pp)),
        (format!("tg{}", a.generate), stats(&tg)),
    ];
    let mut out = std::io::stdout().lock();
    if a.json {
        for (test, (mean, sd)) in rows {
            let o = serde_json::json!({
                "model": model, "dtype": m.format.name(), "kv": format!("{:?}", m.kv),
                "adapter": adapter, "test": test, "tokens_per_second": mean, "stddev": sd,
                "repetitions": a.reps,
            });
            writeln!(out, "{o}")?;
        }
    } else {
        writeln!(out, "| model | dtype | adapter | test | t/s |")?;
        writeln!(out, "| --- | --- | --- | --- | ---: |")?;
        for (test, (mean, sd)) in rows {
            writeln!(
                out,
                "| {model} | {} | {adapter} | {test} | {mean:.2} ± {sd:.2} |",
                m.format.name()
            )?;
        }
    }
    if a.profile {
        profile(m, a)?;
    }
    Ok(())
}

/// One decode token after `a.prompt` prompt tokens, by kernel.
fn profile(m: &mut Model, a: &BenchArgs) -> Result<()> {
    once(m, a.prompt, 0)?;
    let p = m.profile_decode(2)?;
    let gpu_total: Duration = p.dispatches.iter().map(|d| d.2).sum();
    let mut kinds: Vec<(String, usize, Duration)> = vec![];
    for (kernel, _, t) in &p.dispatches {
        match kinds.iter_mut().find(|k| &k.0 == kernel) {
            Some(k) => {
                k.1 += 1;
                k.2 += *t;
            }
            None => kinds.push((kernel.clone(), 1, *t)),
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(k.2));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let info = &m.gpu.info;
    let layers = m.config.layers.len();
    if a.json {
        let kernels: Vec<serde_json::Value> = kinds
            .iter()
            .map(|(k, n, t)| serde_json::json!({"kernel": k, "dispatches": n, "gpu_us": us(*t)}))
            .collect();
        let o = serde_json::json!({
            "profile": "decode", "context": a.prompt, "adapter": m.gpu.describe(),
            "driver": info.driver, "driver_info": info.driver_info,
            "dispatches_per_token": p.dispatches.len(), "layers": layers,
            "command_buffers_per_token": p.command_buffers,
            "host_encode_submit_us": us(p.host_encode_submit),
            "gpu_us": us(gpu_total), "wall_us": us(p.wall), "kernels": kernels,
        });
        println!("{o}");
        return Ok(());
    }
    println!();
    println!(
        "decode profile, one token after {} prompt tokens, {} ({} {})",
        a.prompt,
        m.gpu.describe(),
        info.driver,
        info.driver_info
    );
    println!("| kernel | dispatches | GPU us | % |");
    println!("| --- | ---: | ---: | ---: |");
    for (k, n, t) in &kinds {
        println!(
            "| {k} | {n} | {:.1} | {:.1} |",
            us(*t),
            100.0 * t.as_secs_f64() / gpu_total.as_secs_f64().max(1e-12)
        );
    }
    println!(
        "dispatches per token: {} ({:.1} per layer over {layers} layers); command buffers per \
         token: {}; host encode+submit: {:.0} us; GPU sum: {:.0} us; one step's wall time: {:.0} us",
        p.dispatches.len(),
        p.dispatches.len() as f64 / layers as f64,
        p.command_buffers,
        us(p.host_encode_submit),
        us(gpu_total),
        us(p.wall)
    );
    Ok(())
}
