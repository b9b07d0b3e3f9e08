//! The `gemma-wgpu` command line: parses arguments and calls the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use gemma_wgpu::gpu::{self, BackendChoice};

#[derive(Parser)]
#[command(
    name = "gemma-wgpu",
    version,
    about = "Gemma inference on any GPU through wgpu"
)]
struct Cli {
    /// Backend: vulkan, metal, dx12, gl or auto.
    #[arg(
        long,
        global = true,
        env = "GEMMA_WGPU_BACKEND",
        default_value = "auto"
    )]
    backend: String,
    /// Adapter: index from `gemma-wgpu devices` or a name substring.
    #[arg(long, global = true, env = "GEMMA_WGPU_ADAPTER")]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter with its features and limits.
    Devices,
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Prints the adapters of `backend`; with `--adapter`, only the one(s) it names.
fn devices(backend: BackendChoice, adapter: Option<&str>) -> Result<()> {
    let mut adapters = gpu::list_adapters(backend);
    if let Some(wanted) = adapter {
        let available = adapters
            .iter()
            .map(|a| format!("{}: {}", a.index, a.name))
            .collect::<Vec<_>>()
            .join(", ");
        let needle = wanted.to_lowercase();
        adapters
            .retain(|a| a.index.to_string() == wanted || a.name.to_lowercase().contains(&needle));
        if adapters.is_empty() && !available.is_empty() {
            return Err(gemma_wgpu::Error::AdapterNotFound {
                wanted: wanted.to_string(),
                available,
            }
            .into());
        }
    }
    if adapters.is_empty() {
        return Err(gemma_wgpu::Error::NoAdapter {
            filter: String::new(),
        }
        .into());
    }
    for a in adapters {
        println!("[{}] {}", a.index, a.name);
        println!(
            "    backend: {}  type: {}  driver: {}",
            a.backend, a.device_type, a.driver
        );
        println!(
            "    shader-f16: {}  subgroups: {}  timestamps: {}",
            yes(a.shader_f16),
            yes(a.subgroups),
            yes(a.timestamps)
        );
        println!(
            "    max storage binding: {}  max buffer: {}",
            mib(a.max_binding_size),
            mib(a.max_buffer_size)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let backend: BackendChoice = cli.backend.parse()?;
    match cli.command {
        Command::Devices => devices(backend, cli.adapter.as_deref()),
    }
}
