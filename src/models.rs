//! `pull`, `list` and `rm`: the models downloaded by name, as `ollama` manages them.

use anyhow::Result;
use clap::Args;
use gemma_wgpu::store::Store;
use gemma_wgpu::store::catalog::{ALIASES, Source};
use std::io::Write;

#[derive(Args)]
pub struct PullArgs {
    /// Model names: an alias (`gemma-wgpu list --available`) or a Hugging Face repo,
    /// `owner/repo` or `owner/repo:QUANT` for one GGUF file of it.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// List the model names this program knows instead, with where each comes from.
    #[arg(long)]
    available: bool,
}

#[derive(Args)]
pub struct RmArgs {
    /// Names as `gemma-wgpu list` prints them.
    #[arg(required = true)]
    names: Vec<String>,
}

/// Downloads each model not yet cached and prints its path, one per line (so that
/// `$(gemma-wgpu pull NAME)` is the file).
pub fn pull(a: &PullArgs) -> Result<()> {
    let store = Store::from_env();
    let mut out = std::io::stdout().lock();
    for name in &a.names {
        let path = store.pull(name)?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}

/// 253 MB, as `ollama list` and `llama-bench` print sizes.
fn size(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else {
        format!("{} MB", (bytes as f64 / 1e6).round())
    }
}

/// A table: a header, then the rows, each column as wide as its widest cell (the last one
/// unpadded).
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}  ", w = width[i])
                }
            })
            .collect::<String>()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// The downloaded models (name, size, type, path), or with `--available` the aliases.
pub fn list(a: &ListArgs) -> Result<()> {
    let store = Store::from_env();
    let mut out = std::io::stdout().lock();
    let entries = store.list();
    if a.available {
        let rows: Vec<Vec<String>> = ALIASES
            .iter()
            .map(|alias| {
                let (from, key) = match &alias.source {
                    Source::Pypi(_) => ("PyPI".to_string(), alias.name.to_string()),
                    Source::Hub { repo, quant } => {
                        (format!("{repo}:{quant}"), format!("{repo}:{quant}"))
                    }
                };
                let here = entries.iter().any(|e| e.name.eq_ignore_ascii_case(&key));
                vec![
                    alias.name.to_string(),
                    if alias.chat { "chat" } else { "base" }.to_string(),
                    if here { "yes" } else { "no" }.to_string(),
                    from,
                    alias.about.to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["NAME", "KIND", "DOWNLOADED", "FROM", "ABOUT"],
            &rows,
        )?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                size(e.size),
                e.kind.clone(),
                e.path.display().to_string(),
            ]
        })
        .collect();
    table(&mut out, &["NAME", "SIZE", "TYPE", "PATH"], &rows)?;
    if entries.is_empty() {
        eprintln!(
            "no model is downloaded yet: `gemma-wgpu pull gemma-3-270m-it` fetches one \
             (`gemma-wgpu list --available` shows the names)"
        );
    }
    Ok(())
}

/// Deletes downloaded models from the caches.
pub fn rm(a: &RmArgs) -> Result<()> {
    let store = Store::from_env();
    for name in &a.names {
        let removed = store.remove(name)?;
        eprintln!("deleted {name} ({} files)", removed.len());
    }
    Ok(())
}
