//! `gemma-wgpu bench`: prefill and decode tokens/s in the style of llama-bench.

use anyhow::{Context, Result};
use clap::Args;
use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::gpu::{Gpu, GpuOptions};
use gemma_wgpu::kernels::KvDtype;
use gemma_wgpu::kernels::add::{Add, AddBuffers};
use gemma_wgpu::model::{Model, ModelOptions, StepProfile};
use gemma_wgpu::weights::WeightFormat;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Output formats, as llama-bench's `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Md,
    Csv,
    Json,
    Jsonl,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "synthetic"])))]
pub struct BenchArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(short, long)]
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
    /// Prompt tokens to prefill, one test each (comma-separated; 0: no prefill test).
    #[arg(short = 'p', value_delimiter = ',', default_value = "512")]
    prompt: Vec<usize>,
    /// Tokens to generate, one test each (comma-separated; 0: no generation test).
    #[arg(short = 'n', value_delimiter = ',', default_value = "128")]
    generate: Vec<usize>,
    /// Repetitions.
    #[arg(short = 'r', default_value_t = 3)]
    reps: usize,
    /// Tokens per prefill step (llama-bench's ubatch); default: the adapter's.
    #[arg(long, alias = "ubatch-size")]
    chunk: Option<usize>,
    /// Output format: md (a table), csv, json (one array) or jsonl (an object per test),
    /// with llama-bench's field names.
    #[arg(short = 'o', long, value_enum, default_value = "md")]
    output: Output,
    /// One JSON object per test instead of a table (as `-o jsonl`).
    #[arg(long)]
    json: bool,
    /// Also break one prefill step (the last of the first -p's prompt) and one decode token
    /// (after that prompt) into GPU time per kernel, with dispatches, command buffers and
    /// host time per step (needs TIMESTAMP_QUERY).
    #[arg(long)]
    profile: bool,
    /// Also draw t/s per test (mean and standard deviation) into this SVG file, beside
    /// the runs of --compare.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Another run to set beside this one: llama-bench's `-o json` or `-o jsonl` output
    /// (or this command's). Prints our t/s as a ratio of its t/s per test, and draws it in
    /// the --plot; repeatable; `LABEL=FILE` names it.
    #[arg(long, value_name = "[LABEL=]FILE")]
    compare: Vec<String>,
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
    let vocab = m.config().vocab as u32;
    let prompt: Vec<u32> = (0..p as u32)
        .map(|i| 2 + (i * 7919) % (vocab - 2))
        .collect();
    m.reset();
    let t = Instant::now();
    let next = if p > 0 {
        m.feed(&prompt, true)?.ids[0]
    } else {
        2
    };
    let pp = p as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Decoding as generation does (chained steps, two in flight on GPUs), each token read back.
    if n > 0 {
        let mut left = n;
        m.decode_greedy(next, |_| {
            left -= 1;
            Ok(left > 0)
        })?;
        if left > 0 {
            return Err(gemma_wgpu::Error::ContextFull {
                needed: p + n + 1,
                ctx: m.ctx(),
            }
            .into());
        }
    }
    let tg = n as f64 / t.elapsed().as_secs_f64();
    // The step already submitted after the last token is not this test's (nor the next's).
    m.gpu().wait()?;
    Ok((pp, tg))
}

/// One test: `pp` prompt tokens (a prefill test) or `tg` generated tokens (a decode test).
#[derive(Clone, Copy)]
struct Test {
    n_prompt: usize,
    n_gen: usize,
}

impl Test {
    fn name(self) -> String {
        if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        }
    }
}

/// What the rows say about the model and adapter.
struct Facts {
    model: String,
    size: u64,
    params: u64,
    model_type: String,
    backend: String,
    adapter: String,
    /// Adapter, backend and device type, as `--json` gave them before.
    describe: String,
    dtype: &'static str,
    kv: String,
}

/// One finished test as a JSON object: llama-bench's field names, and the ones this
/// command's `--json` gave before (`tokens_per_second`, `stddev`, ...).
fn json_row(f: &Facts, t: Test, samples: &[f64], reps: usize) -> serde_json::Value {
    let (mean, sd) = stats(samples);
    serde_json::json!({
        "model_filename": f.model, "model_type": f.model_type, "model_size": f.size,
        "model_n_params": f.params, "backends": f.backend, "gpu_info": f.adapter,
        "type_k": f.kv, "type_v": f.kv, "n_prompt": t.n_prompt, "n_gen": t.n_gen,
        "avg_ts": mean, "stddev_ts": sd, "samples_ts": samples,
        "model": f.model, "dtype": f.dtype, "kv": f.kv, "adapter": f.describe,
        "test": t.name(), "tokens_per_second": mean, "stddev": sd, "repetitions": reps,
    })
}

const CSV_FIELDS: [&str; 12] = [
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "backends",
    "gpu_info",
    "type_k",
    "n_prompt",
    "n_gen",
    "test",
    "avg_ts",
    "stddev_ts",
];

/// A CSV field, quoted where it needs to be.
fn csv(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Refuses out-of-range sizes and an unwritable plot before anything loads.
fn check_args(a: &BenchArgs, max_p: usize, max_n: usize) -> Result<()> {
    let limit = gemma_wgpu::engine::sampling::MAX_TOKENS_LIMIT;
    if max_p > limit || max_n > limit || a.reps > 10_000 {
        anyhow::bail!("-p and -n must be at most {limit} tokens, -r at most 10000 repetitions");
    }
    let max_chunk = gemma_wgpu::model::MAX_CHUNK;
    if a.chunk.is_some_and(|c| c == 0 || c > max_chunk) {
        anyhow::bail!("--chunk must be 1 to {max_chunk} tokens");
    }
    if Test::all(a).is_empty() {
        anyhow::bail!("nothing to measure: every -p and -n is 0");
    }
    // A plot that cannot be written fails now, not after the run.
    if let Some(p) = &a.plot {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) || p.is_dir() {
            anyhow::bail!(
                "--plot {}: not a file in an existing directory",
                p.display()
            );
        }
    }
    Ok(())
}

/// The model to time: a file or directory, or a release shape with random weights.
fn load(gpu: &GpuOptions, a: &BenchArgs, options: &ModelOptions) -> Result<(String, Model)> {
    let gpu = Gpu::new(gpu)?;
    Ok(match (&a.model, &a.synthetic) {
        (Some(dir), _) => {
            let path = gemma_wgpu::store::resolve(dir)?;
            (dir.display().to_string(), Model::load(gpu, &path, options)?)
        }
        (None, Some(preset)) => {
            let config = ModelConfig::preset(preset)?;
            (
                format!("{preset} (synthetic)"),
                Model::synthetic(gpu, config, options)?,
            )
        }
        (None, None) => anyhow::bail!("give --model DIR or --synthetic NAME"),
    })
}

/// The table's header (md), the field names (csv) or the array's opening (json).
fn write_header(out: &mut impl Write, output: Output) -> Result<()> {
    match output {
        Output::Md => writeln!(
            out,
            "| model | size | params | type | backend | test | t/s |\n\
             | --- | ---: | ---: | --- | --- | ---: | ---: |"
        )?,
        Output::Csv => writeln!(out, "{}", CSV_FIELDS.join(","))?,
        Output::Json => write!(out, "[")?,
        Output::Jsonl => {}
    }
    Ok(out.flush()?)
}

/// Test `i`'s result in the chosen format.
fn write_row(
    out: &mut impl Write,
    output: Output,
    (i, t): (usize, Test),
    facts: &Facts,
    row: &serde_json::Value,
    (mean, sd): (f64, f64),
) -> Result<()> {
    match output {
        Output::Md => writeln!(
            out,
            "| {} | {} | {} | {} | {} ({}) | {} | {mean:.2} ± {sd:.2} |",
            facts.model,
            crate::mib_f(facts.size),
            crate::count_si(facts.params),
            facts.model_type,
            facts.backend,
            facts.adapter,
            t.name()
        )?,
        Output::Csv => {
            let fields: Vec<String> = CSV_FIELDS.iter().map(|f| csv(&row[f])).collect();
            writeln!(out, "{}", fields.join(","))?;
        }
        Output::Json => write!(out, "{}\n  {row}", if i == 0 { "" } else { "," })?,
        Output::Jsonl => writeln!(out, "{row}")?,
    }
    Ok(out.flush()?)
}

impl Facts {
    fn of(model: String, m: &Model) -> Facts {
        Facts {
            model,
            size: m.info().file_bytes,
            params: m.config().parameters() as u64,
            model_type: crate::weight_type(m),
            backend: format!("{:?}", m.gpu().info.backend),
            adapter: m.gpu().info.name.clone(),
            describe: m.gpu().describe(),
            dtype: m.info().format.name(),
            kv: format!("{:?}", m.info().kv).to_lowercase(),
        }
    }
}

impl Test {
    /// The prompt tests (`-p`), then the generation tests (`-n`), zeros left out.
    fn all(a: &BenchArgs) -> Vec<Test> {
        let prompts = a.prompt.iter().filter(|&&p| p > 0).map(|&p| Test {
            n_prompt: p,
            n_gen: 0,
        });
        let generations = a.generate.iter().filter(|&&n| n > 0).map(|&n| Test {
            n_prompt: 0,
            n_gen: n,
        });
        prompts.chain(generations).collect()
    }
}

pub fn run(gpu: &GpuOptions, a: &BenchArgs) -> Result<()> {
    let max_p = a.prompt.iter().copied().max().unwrap_or(0);
    let max_n = a.generate.iter().copied().max().unwrap_or(0);
    check_args(a, max_p, max_n)?;
    let others = a
        .compare
        .iter()
        .map(|c| crate::compare::read(c))
        .collect::<Result<Vec<_>>>()?;
    let output = if a.json { Output::Jsonl } else { a.output };
    let tests = Test::all(a);
    let options = ModelOptions {
        format: a.dtype,
        kv: a.kv,
        ctx: Some((max_p + max_n + 1).max(64)),
        progress: true,
        chunk: a.chunk,
        ..Default::default()
    };
    let (name, mut model) = load(gpu, a, &options)?;
    let m = &mut model;
    note(&crate::load_summary(&name, m));
    let facts = Facts::of(name, m);
    let mut out = std::io::stdout().lock();
    write_header(&mut out, output)?;
    note("bench: warm-up");
    once(m, max_p.min(16), max_n.min(2))?;
    let reps = a.reps.max(1);
    let mut plotted = vec![];
    for (i, &t) in tests.iter().enumerate() {
        note(&format!(
            "bench: test {}/{}: {} ({reps} repetitions)",
            i + 1,
            tests.len(),
            t.name()
        ));
        let start = Instant::now();
        let mut samples = vec![];
        for _ in 0..reps {
            let ts = if t.n_gen == 0 {
                once(m, t.n_prompt, 0)?.0
            } else {
                once(m, 1, t.n_gen)?.1
            };
            samples.push(ts);
        }
        let (mean, sd) = stats(&samples);
        plotted.push((t.name(), mean, sd));
        note(&format!(
            "bench: test {}/{}: {} {mean:.2} ± {sd:.2} t/s in {:.1} s",
            i + 1,
            tests.len(),
            t.name(),
            start.elapsed().as_secs_f64()
        ));
        let row = json_row(&facts, t, &samples, a.reps);
        write_row(&mut out, output, (i, t), &facts, &row, (mean, sd))?;
    }
    if output == Output::Json {
        writeln!(out, "\n]")?;
    }
    drop(out);
    compare_and_plot(a, &facts, plotted, others)?;
    if a.profile {
        profile(m, a, output)?;
    }
    Ok(())
}

/// Our results beside the --compare runs (a ratio per test on stderr) and the --plot.
fn compare_and_plot(
    a: &BenchArgs,
    facts: &Facts,
    ours: Vec<(String, f64, f64)>,
    others: Vec<crate::compare::Series>,
) -> Result<()> {
    let mut series = vec![crate::compare::Series {
        label: format!("gemma-wgpu {}", facts.backend),
        tests: ours,
    }];
    for other in others {
        for line in crate::compare::ratios(&series[0], &other) {
            note(&format!("bench: {line}"));
        }
        series.push(other);
    }
    if let Some(p) = &a.plot {
        let title = format!("{} {}, {}", facts.model, facts.model_type, facts.adapter);
        crate::compare::plot(p, &title, &series)
            .with_context(|| format!("writing the plot {}", p.display()))?;
        note(&format!("bench: plot written to {}", p.display()));
    }
    Ok(())
}

/// A progress line on stderr; a closed stderr must not end the run.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One prefill step (the prompt's last chunk) and one decode token after `a.prompt` prompt
/// tokens, by kernel. With `-o csv` or `-o json` they go to stderr as tables, so stdout stays
/// one document.
fn profile(m: &mut Model, a: &BenchArgs, output: Output) -> Result<()> {
    let context = a.prompt.first().copied().unwrap_or(0);
    once(m, context, 0)?;
    let floor = dispatch_floor(m.gpu())?;
    if context >= 2 {
        let (p, tokens) = m.profile_prefill()?;
        let what =
            format!("prefill profile, one step of {tokens} tokens ending at position {context}");
        print_profile(m, output, ("prefill", context, tokens), &what, (&p, floor))?;
    }
    let p = m.profile_decode(2)?;
    let what = format!("decode profile, one token after {context} prompt tokens");
    print_profile(m, output, ("decode", context, 1), &what, (&p, floor))
}

/// Dispatches of [`dispatch_floor`]'s pass.
const FLOOR_DISPATCHES: u32 = 256;

/// What one dispatch costs the adapter at least: a one-float add, [`FLOOR_DISPATCHES`] of
/// them in one compute pass, timed as the kernel bench times its rows. A step pays it per
/// dispatch whatever the kernel does (on lavapipe, the hand-over of each dispatch to the
/// driver's worker threads and back).
fn dispatch_floor(gpu: &Gpu) -> Result<Duration> {
    let add = Add::new(gpu)?;
    let x = gpu.storage_zeroed("dispatch_floor.x", 4);
    let acc = gpu.storage_zeroed("dispatch_floor.acc", 4);
    let d = add.bind(gpu, "dispatch_floor", 1, AddBuffers { x: &x, acc: &acc })?;
    Ok(gpu.time("dispatch_floor", &[&d], FLOOR_DISPATCHES)?.0)
}

/// Kernel kinds of a step by GPU time, largest first: (kernel, dispatches, time).
fn by_kind(p: &StepProfile) -> Vec<(String, usize, Duration)> {
    let mut kinds: Vec<(String, usize, Duration)> = vec![];
    for d in &p.dispatches {
        match kinds.iter_mut().find(|k| k.0 == d.kernel) {
            Some(k) => {
                k.1 += 1;
                k.2 += d.time;
            }
            None => kinds.push((d.kernel.clone(), 1, d.time)),
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(k.2));
    kinds
}

/// One step's profile as a table (or a JSON line): `(kind, context, tokens)` say which step.
fn print_profile(
    m: &Model,
    output: Output,
    (kind, context, tokens): (&str, usize, usize),
    what: &str,
    (p, floor): (&StepProfile, Duration),
) -> Result<()> {
    let gpu_total: Duration = p.dispatches.iter().map(|d| d.time).sum();
    let kinds = by_kind(p);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let info = &m.gpu().info;
    let layers = m.config().layers.len();
    if output == Output::Jsonl {
        let kernels: Vec<serde_json::Value> = kinds
            .iter()
            .map(|(k, n, t)| serde_json::json!({"kernel": k, "dispatches": n, "gpu_us": us(*t)}))
            .collect();
        let o = serde_json::json!({
            "profile": kind, "context": context, "tokens": tokens,
            "adapter": m.gpu().describe(),
            "driver": info.driver, "driver_info": info.driver_info,
            "activations": m.gpu().caps.activations(),
            "dispatches_per_step": p.dispatches.len(), "layers": layers,
            "command_buffers_per_step": p.command_buffers,
            "host_encode_submit_us": us(p.host_encode_submit),
            "gpu_us": us(gpu_total), "wall_us": us(p.wall),
            "dispatch_floor_us": us(floor), "kernels": kernels,
        });
        println!("{o}");
        return Ok(());
    }
    let mut w: Box<dyn Write> = match output {
        Output::Md => Box::new(std::io::stdout().lock()),
        _ => Box::new(std::io::stderr().lock()),
    };
    writeln!(w)?;
    writeln!(
        w,
        "{what}, {} ({} {}), {} activations",
        m.gpu().describe(),
        info.driver,
        info.driver_info,
        m.gpu().caps.activations()
    )?;
    writeln!(w, "| kernel | dispatches | GPU us | % |")?;
    writeln!(w, "| --- | ---: | ---: | ---: |")?;
    for (k, n, t) in &kinds {
        writeln!(
            w,
            "| {k} | {n} | {:.1} | {:.1} |",
            us(*t),
            100.0 * t.as_secs_f64() / gpu_total.as_secs_f64().max(1e-12)
        )?;
    }
    writeln!(
        w,
        "dispatches per step: {} ({:.1} per layer over {layers} layers); command buffers per \
         step: {}; host encode+submit: {:.0} us; GPU sum: {:.0} us ({:.0} us per token); one \
         step's wall time: {:.0} us",
        p.dispatches.len(),
        p.dispatches.len() as f64 / layers as f64,
        p.command_buffers,
        us(p.host_encode_submit),
        us(gpu_total),
        us(gpu_total) / tokens as f64,
        us(p.wall)
    )?;
    let floors = floor * p.dispatches.len() as u32;
    writeln!(
        w,
        "dispatch floor (a one-float add, {FLOOR_DISPATCHES} in one pass): {:.1} us; times \
         {} dispatches: {:.0} us, {:.1} % of the step's wall time",
        us(floor),
        p.dispatches.len(),
        us(floors),
        100.0 * floors.as_secs_f64() / p.wall.as_secs_f64().max(1e-12)
    )?;
    Ok(())
}
