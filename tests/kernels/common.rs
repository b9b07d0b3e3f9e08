//! Shared test helpers: the devices every GPU test runs on, and (from tests/common/cases.rs,
//! shared with the benchmarks) seeded inputs, named tolerances with a report of the worst
//! element, and one problem per op.

pub use crate::cases::*;
use gemma_wgpu::gpu::{BackendChoice, Gpu, GpuOptions};

/// One device configuration a kernel test runs on.
pub struct Device {
    pub name: String,
    pub gpu: Gpu,
}

fn open(name: &str, options: GpuOptions) -> Device {
    let gpu = Gpu::new(&options).unwrap_or_else(|e| {
        panic!(
            "GPU tests need an adapter for `{name}`: {e}\n\
             On headless Linux: apt-get update && apt-get install -y mesa-vulkan-drivers \
             libegl1 libegl-mesa0 libgl1-mesa-dri (lavapipe for Vulkan, llvmpipe for GL)."
        )
    });
    Device {
        name: format!("{name} [{}]", gpu.describe()),
        gpu,
    }
}

/// The configurations every kernel test covers: Vulkan with every feature the adapter has,
/// Vulkan with SHADER_F16 and SUBGROUP forced off (the fallback paths) and the GPU-style
/// access patterns (lavapipe is a CPU adapter, so it would otherwise always pick the CPU
/// ones), and OpenGL.
/// `GEMMA_WGPU_TEST_BACKENDS=vulkan` (comma list of vulkan, vulkan-fallback, gl) narrows it.
pub fn devices() -> Vec<Device> {
    devices_with(None)
}

/// [`devices`] with the storage binding limit lowered to `max_binding_size` bytes, so that
/// matrices split into chunks on small data.
pub fn devices_with(max_binding_size: Option<u64>) -> Vec<Device> {
    let wanted = std::env::var("GEMMA_WGPU_TEST_BACKENDS")
        .unwrap_or_else(|_| "vulkan,vulkan-fallback,gl".to_string());
    wanted
        .split(',')
        .map(|w| match w.trim() {
            "vulkan" => open(
                "vulkan",
                GpuOptions {
                    backend: BackendChoice::Vulkan,
                    max_binding_size,
                    ..Default::default()
                },
            ),
            "vulkan-fallback" => open(
                "vulkan, f16 and subgroups off, GPU layout",
                GpuOptions {
                    backend: BackendChoice::Vulkan,
                    disable_f16: true,
                    disable_subgroups: true,
                    cpu_layout: Some(false),
                    max_binding_size,
                    ..Default::default()
                },
            ),
            "gl" => open(
                "gl",
                GpuOptions {
                    backend: BackendChoice::Gl,
                    max_binding_size,
                    ..Default::default()
                },
            ),
            other => panic!("unknown test backend `{other}`"),
        })
        .collect()
}
