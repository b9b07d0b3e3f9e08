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

fn devices(backend: BackendChoice) -> Result<()> {
    let adapters = gpu::list_adapters(backend);
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
    let _ = &cli.adapter;
    match cli.command {
        Command::Devices => devices(backend),
    }
}
