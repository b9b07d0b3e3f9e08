//! Shared test helpers: the devices every GPU test runs on, seeded inputs, and named
//! tolerances with a report of the worst element.

use gemma_wgpu::gpu::{BackendChoice, Gpu, GpuOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// f32 unit roundoff.
pub const EPS: f32 = f32::EPSILON / 2.0;

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

/// Standard normal values, seeded.
pub fn normal(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = Normal::new(0.0f32, 1.0).unwrap();
    (0..n).map(|_| dist.sample(&mut rng)).collect()
}

/// Per-element bound of a length-k dot product in f32, whatever the summation order:
/// |fl(sum a_i b_i) - sum a_i b_i| <= k * EPS * sum |a_i b_i| (plus one rounding per product).
pub fn dot_bound(k: usize, abs_dot: f32) -> f32 {
    (k as f32 + 1.0) * EPS * abs_dot
}

/// Checks |actual - expected| <= bound[i] element-wise, reporting the mismatch count, the
/// worst element (by error / bound) and the mean error.
pub fn assert_within(what: &str, actual: &[f32], expected: &[f32], bound: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    assert_eq!(bound.len(), expected.len(), "{what}: bound length");
    let mut bad = 0;
    let mut worst = (0usize, 0.0f32);
    let mut sum_err = 0.0f64;
    for i in 0..actual.len() {
        let err = (actual[i] - expected[i]).abs();
        sum_err += err as f64;
        let ratio = if err.is_nan() {
            f32::INFINITY
        } else {
            err / bound[i].max(f32::MIN_POSITIVE)
        };
        if err.is_nan() || err > bound[i] {
            bad += 1;
        }
        if ratio > worst.1 || (i == 0 && ratio.is_infinite()) {
            worst = (i, ratio);
        }
    }
    let i = worst.0;
    assert!(
        bad == 0,
        "{what}: {bad} of {} elements out of bounds; worst [{i}]: got {} expected {} \
         (error {:e}, bound {:e}); mean error {:e}",
        actual.len(),
        actual[i],
        expected[i],
        (actual[i] - expected[i]).abs(),
        bound[i],
        sum_err / actual.len() as f64
    );
}

/// |actual - expected| <= abs + rel * |expected| for every element.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], abs: f32, rel: f32) {
    let bound: Vec<f32> = expected.iter().map(|e| abs + rel * e.abs()).collect();
    assert_within(what, actual, expected, &bound);
}

pub fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub fn u32_bytes(v: &[u32]) -> &[u8] {
    bytemuck::cast_slice(v)
}
