//! Adapter enumeration and choice.

use super::GpuOptions;
use crate::{Error, Result};
use std::str::FromStr;

/// The backend(s) to look for adapters on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto => wgpu::Backends::all(),
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

impl FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(BackendChoice::Auto),
            "vulkan" | "vk" => Ok(BackendChoice::Vulkan),
            "metal" => Ok(BackendChoice::Metal),
            "dx12" | "d3d12" => Ok(BackendChoice::Dx12),
            "gl" | "gles" | "opengl" => Ok(BackendChoice::Gl),
            other => Err(Error::UnknownBackend(other.to_string())),
        }
    }
}

/// One adapter as `gemma-wgpu devices` prints it.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamps: bool,
    pub int64: bool,
    pub max_binding_size: u64,
    pub max_buffer_size: u64,
}

fn instance(backend: BackendChoice) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backend.backends();
    wgpu::Instance::new(desc)
}

/// Adapters in preference order: discrete, integrated, virtual, CPU, other; ties keep the
/// backend's own order. The index in this list is the one `--adapter` takes.
fn ordered_adapters(backend: BackendChoice) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance(backend).enumerate_adapters(backend.backends()));
    adapters.sort_by_key(|a| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    });
    adapters
}

/// Every adapter on the chosen backend(s), in the order `--adapter N` counts them.
pub fn list_adapters(backend: BackendChoice) -> Vec<AdapterReport> {
    ordered_adapters(backend)
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            let features = a.features();
            let limits = a.limits();
            AdapterReport {
                index,
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                shader_f16: features.contains(wgpu::Features::SHADER_F16),
                subgroups: features.contains(wgpu::Features::SUBGROUP),
                timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
                int64: features.contains(wgpu::Features::SHADER_INT64),
                max_binding_size: limits.max_storage_buffer_binding_size,
                max_buffer_size: limits.max_buffer_size,
            }
        })
        .collect()
}

pub(super) fn choose(options: &GpuOptions) -> Result<wgpu::Adapter> {
    let mut adapters = ordered_adapters(options.backend);
    if adapters.is_empty() {
        let filter = match options.backend {
            BackendChoice::Auto => String::new(),
            b => format!(" on backend {b:?}"),
        };
        return Err(Error::NoAdapter { filter });
    }
    let Some(wanted) = options.adapter.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(adapters.swap_remove(0));
    };
    let position = match wanted.parse::<usize>() {
        Ok(i) if i < adapters.len() => Some(i),
        _ => {
            let needle = wanted.to_lowercase();
            adapters
                .iter()
                .position(|a| a.get_info().name.to_lowercase().contains(&needle))
        }
    };
    match position {
        Some(i) => Ok(adapters.swap_remove(i)),
        None => Err(Error::AdapterNotFound {
            wanted: wanted.to_string(),
            available: adapters
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{i}: {}", a.get_info().name))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
