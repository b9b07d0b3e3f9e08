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
/// ones; with them, the quantized products take int8 activations), and OpenGL.
/// `GEMMA_WGPU_TEST_BACKENDS=vulkan` (comma list of vulkan, vulkan-fallback, gl; and
/// vulkan-gpu-layout, vulkan-f32-products, vulkan-cpu-f32-products and vulkan-int8-products,
/// which [`product_devices`] adds to vulkan-fallback) narrows it.
pub fn devices() -> Vec<Device> {
    devices_with(None)
}

/// [`devices`] and, for the matrix products, whose quantized forms take int8 activations in
/// the GPU layout, that layout with every feature on (a GPU's defaults: int8 activations with
/// subgroups) and with f32 activations (the exact path); and the CPU layout's matvec with f32
/// activations (where Q4_0 takes int8 by default) and with int8 for every quantized format
/// (`--activations int8`).
pub fn product_devices() -> Vec<Device> {
    let mut all = devices();
    if wanted().contains("vulkan-fallback") {
        all.extend(backend_devices(
            "vulkan-gpu-layout,vulkan-f32-products,vulkan-cpu-f32-products,vulkan-int8-products",
            None,
        ));
    }
    all
}

fn wanted() -> String {
    std::env::var("GEMMA_WGPU_TEST_BACKENDS")
        .unwrap_or_else(|_| "vulkan,vulkan-fallback,gl".to_string())
}

/// [`devices`] with the storage binding limit lowered to `max_binding_size` bytes, so that
/// matrices split into chunks on small data.
pub fn devices_with(max_binding_size: Option<u64>) -> Vec<Device> {
    backend_devices(&wanted(), max_binding_size)
}

fn backend_devices(wanted: &str, max_binding_size: Option<u64>) -> Vec<Device> {
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
            "vulkan-gpu-layout" => open(
                "vulkan, GPU layout",
                GpuOptions {
                    backend: BackendChoice::Vulkan,
                    cpu_layout: Some(false),
                    max_binding_size,
                    ..Default::default()
                },
            ),
            "vulkan-f32-products" => open(
                "vulkan, GPU layout, f32 activations",
                GpuOptions {
                    backend: BackendChoice::Vulkan,
                    cpu_layout: Some(false),
                    int8_products: Some(false),
                    max_binding_size,
                    ..Default::default()
                },
            ),
            "vulkan-cpu-f32-products" => open(
                "vulkan, f32 activations",
                GpuOptions {
                    backend: BackendChoice::Vulkan,
                    int8_products: Some(false),
                    max_binding_size,
                    ..Default::default()
                },
            ),
            "vulkan-int8-products" => open(
                "vulkan, int8 activations for every format",
                GpuOptions {
                    backend: BackendChoice::Vulkan,
                    int8_products: Some(true),
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
