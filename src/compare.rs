//! `bench --compare` and `--plot`: another program's runs (llama-bench's `-o json` or
//! `-o jsonl`, or this command's own) set beside ours as ratios, and t/s per test drawn as
//! grouped bars.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// One program's results: its label and (test, mean t/s, standard deviation) per test.
pub struct Series {
    pub label: String,
    pub tests: Vec<(String, f64, f64)>,
}

/// llama-bench's name for a test: `pp512`, `tg128`, `pp512+tg128`.
fn test_name(n_prompt: u64, n_gen: u64) -> String {
    match (n_prompt, n_gen) {
        (p, 0) => format!("pp{p}"),
        (0, g) => format!("tg{g}"),
        (p, g) => format!("pp{p}+tg{g}"),
    }
}

/// The label of a llama-bench row: `llama.cpp CPU` when it ran without devices, else the
/// devices or backend it ran on, and the build.
fn label_of(row: &serde_json::Value) -> String {
    let field = |k: &str| row[k].as_str().filter(|s| !s.is_empty());
    // llama-bench names its compiled-in backends even when it runs on the CPU
    // (`-dev none`), and `auto` for its default devices.
    let device = match (field("devices"), field("backends")) {
        (Some("none"), _) => "CPU",
        (Some("auto") | None, Some(b)) => b,
        (Some(d), _) => d,
        (None, None) => "?",
    };
    let program = if row.get("tokens_per_second").is_some() {
        "gemma-wgpu"
    } else {
        "llama.cpp"
    };
    match field("build_commit") {
        Some(b) => format!("{program} {device} ({b})"),
        None => format!("{program} {device}"),
    }
}

/// Reads `[LABEL=]FILE`: a JSON array of rows or one JSON object per line, each with
/// `n_prompt`, `n_gen`, `avg_ts` and `stddev_ts`.
pub fn read(spec: &str) -> Result<Series> {
    let (label, file) = match spec.split_once('=') {
        Some((l, f)) if !Path::new(spec).exists() => (Some(l.to_string()), f),
        _ => (None, spec),
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--compare {file}: could not read it"))?;
    let rows: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Array(rows)) => rows,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!("--compare {file}: neither a JSON array nor one JSON object per line")
            })?,
    };
    let mut tests = vec![];
    for (i, row) in rows.iter().enumerate() {
        let number = |k: &str| row[k].as_f64();
        let (Some(p), Some(g), Some(mean)) =
            (number("n_prompt"), number("n_gen"), number("avg_ts"))
        else {
            bail!(
                "--compare {file}: row {i} lacks n_prompt, n_gen or avg_ts (llama-bench -o json)"
            );
        };
        let sd = number("stddev_ts").unwrap_or(0.0);
        tests.push((test_name(p as u64, g as u64), mean, sd));
    }
    let Some(first) = rows.first() else {
        bail!("--compare {file}: holds no test");
    };
    Ok(Series {
        label: label.unwrap_or_else(|| label_of(first)),
        tests,
    })
}

/// `pp64: 50.8 t/s is 0.069 × llama.cpp CPU (733.2 t/s)` for each test both ran.
pub fn ratios(ours: &Series, other: &Series) -> Vec<String> {
    ours.tests
        .iter()
        .filter_map(|(name, mean, _)| {
            let (_, theirs, _) = other.tests.iter().find(|t| &t.0 == name)?;
            Some(format!(
                "{name}: {mean:.2} t/s is {:.3} × {} ({theirs:.2} t/s)",
                mean / theirs,
                other.label
            ))
        })
        .collect()
}

/// A group of bars per test of the first series (its mean t/s, a line for ± one standard
/// deviation), one bar per series, a legend.
pub fn plot(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    use plotters::prelude::*;
    let Some(ours) = series.first() else {
        return Ok(());
    };
    let groups: Vec<&String> = ours.tests.iter().map(|t| &t.0).collect();
    let value = |s: &Series, name: &str| s.tests.iter().find(|t| t.0 == name).map(|t| (t.1, t.2));
    let top = series
        .iter()
        .flat_map(|s| s.tests.iter().map(|t| t.1 + t.2))
        .fold(1.0, f64::max)
        * 1.25;
    let width = 200 + (60 * series.len() as u32 + 60) * groups.len() as u32;
    let root = SVGBackend::new(path, (width.max(480), 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(8)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..groups.len().max(1) as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("tokens/s")
        .draw()?;
    let colors = [
        RGBColor(66, 133, 244),
        RGBColor(234, 67, 53),
        RGBColor(251, 188, 4),
        RGBColor(52, 168, 83),
    ];
    let bar_w = 0.8 / series.len() as f64;
    for (si, s) in series.iter().enumerate() {
        let color = colors[si % colors.len()];
        for (gi, name) in groups.iter().enumerate() {
            let Some((mean, sd)) = value(s, name) else {
                continue;
            };
            let x = gi as f64 + 0.1 + bar_w * si as f64;
            chart.draw_series([Rectangle::new(
                [(x, 0.0), (x + bar_w * 0.9, mean)],
                color.filled(),
            )])?;
            let mid = x + bar_w * 0.45;
            chart.draw_series([PathElement::new(
                [(mid, (mean - sd).max(0.0)), (mid, mean + sd)],
                BLACK.stroke_width(2),
            )])?;
            chart.draw_series([Text::new(
                format!("{mean:.1}"),
                (x, mean + sd + top * 0.02),
                ("sans-serif", 12),
            )])?;
        }
        chart
            .draw_series([Rectangle::new([(0.0, 0.0), (0.0, 0.0)], color.filled())])?
            .label(s.label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    for (gi, name) in groups.iter().enumerate() {
        chart.draw_series([Text::new(
            name.to_string(),
            (gi as f64 + 0.1, top * 0.97),
            ("sans-serif", 14),
        )])?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
