//! The GPU context: adapter choice, optional features, limits, buffers and pipeline creation.
//!
//! Everything that talks to wgpu directly lives here; kernels receive a [`Gpu`] and ask it for
//! pipelines and buffers.

mod adapter;
mod buffers;
mod faults;
mod pipeline;
mod record;
mod timer;

pub use adapter::{AdapterReport, BackendChoice, list_adapters};
pub use buffers::Readback;
pub use faults::{Fault, Faults};
pub use pipeline::{Access, Binding, Bindings, Dispatch, Kernel};
pub use record::{Recorder, TimedDispatch};
pub use timer::Clock;

use crate::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// How to choose and open a device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Which backend(s) to enumerate.
    pub backend: BackendChoice,
    /// Adapter index (as printed by `gemma-wgpu devices`) or a case-insensitive name substring.
    pub adapter: Option<String>,
    /// Pretend the adapter lacks SHADER_F16 (tests the fallback paths).
    pub disable_f16: bool,
    /// Pretend the adapter lacks SUBGROUP (tests the fallback paths).
    pub disable_subgroups: bool,
    /// Pretend the adapter lacks SHADER_INT64 (tests the fallback paths).
    pub disable_int64: bool,
    /// Use at most this many bytes per storage binding (tests chunking on small data).
    pub max_binding_size: Option<u64>,
    /// Use at most this many storage buffers per kernel (tests the paths of adapters that
    /// offer fewer).
    pub max_storage_buffers: Option<u32>,
    /// Force the CPU-style (true) or GPU-style (false) access patterns instead of choosing by
    /// the adapter's device type (tests both layouts on one adapter).
    pub cpu_layout: Option<bool>,
    /// Whether quantized weights multiply 8-bit-quantized activations (true; by default where
    /// [`Caps::int8_products`] says) or f32 ones.
    pub int8_products: Option<bool>,
    /// Allocate at most this many bytes of buffers in all: a larger request fails as an
    /// out-of-memory would (emulates a device with less memory).
    pub max_memory: Option<u64>,
}

/// What the opened device can do, resolved once; kernels read these, never wgpu features.
#[derive(Clone, Debug)]
pub struct Caps {
    /// SHADER_F16 is enabled on the device.
    pub f16: bool,
    /// SUBGROUP is enabled on the device.
    pub subgroups: bool,
    /// The fewest lanes a subgroup may have (0 without SUBGROUP).
    pub min_subgroup_size: u32,
    /// TIMESTAMP_QUERY is enabled on the device.
    pub timestamps: bool,
    /// SHADER_INT64 is enabled on the device.
    pub int64: bool,
    /// The adapter runs shaders on the CPU (lavapipe, llvmpipe, WARP): access patterns that
    /// suit CPU caches win there, so kernels pick their CPU layout.
    pub cpu_like: bool,
    /// The products with quantized weights quantize the activation to int8 blocks of 32 and
    /// multiply codes (GGML's q8_1 activations, as its mul_mat_vecq and mul_mmq on GPUs and
    /// its CPU backend's vec_dot): the default. The GPU layout multiplies them with packed
    /// integer dot products in matvec and matmul. The CPU layout does so in matvec only, for
    /// the formats with a reading made for it (4-bit codes two to a 32-bit multiply; lavapipe
    /// lowers `dot4I8Packed` to shifts and 32-bit multiplies, no cheaper than its f32 path),
    /// or for every quantized format with `int8_all_formats`; its matmul keeps f32
    /// (kernels::matrix::int8_decode_activations).
    pub int8_products: bool,
    /// Int8 activations were asked for (`--activations int8`), not just left to the default:
    /// on CPU adapters every quantized format's matvec takes them.
    pub int8_all_formats: bool,
    /// Largest storage binding the kernels may use, in bytes.
    pub max_binding_size: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Storage buffers one kernel may bind.
    pub max_storage_buffers: u32,
    /// Workgroup memory per workgroup, in bytes.
    pub max_workgroup_storage: u32,
    /// Largest workgroup count per dispatch dimension.
    pub max_workgroups_per_dim: u32,
}

impl Caps {
    /// What the quantized products multiply: "int8" or "f32" activations, or on CPU adapters
    /// which products take int8.
    pub fn activations(&self) -> &'static str {
        match (self.int8_products, self.cpu_like, self.int8_all_formats) {
            (false, _, _) => "f32",
            (true, false, _) => "int8",
            (true, true, true) => "int8 (decode), f32 (prefill)",
            (true, true, false) => "int8 (4-bit decode products), f32 (others)",
        }
    }
}

/// An open device with its queue and capabilities.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Caps,
    /// Errors wgpu reports outside the calls that cause them, for the next check.
    faults: Faults,
    /// Bytes of buffers made so far, and the emulated limit on them.
    allocated: AtomicU64,
    /// Command buffers submitted through recorders so far.
    submitted: AtomicU64,
    max_memory: Option<u64>,
}

impl Gpu {
    /// Chooses an adapter as `options` say and opens it with every optional feature it has.
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        let adapter = adapter::choose(options)?;
        let info = adapter.get_info();
        let available = adapter.features();
        let mut wanted = wgpu::Features::empty();
        if available.contains(wgpu::Features::SHADER_F16) && !options.disable_f16 {
            wanted |= wgpu::Features::SHADER_F16;
        }
        if available.contains(wgpu::Features::SUBGROUP) && !options.disable_subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        if available.contains(wgpu::Features::SHADER_INT64) && !options.disable_int64 {
            wanted |= wgpu::Features::SHADER_INT64;
        }
        if available.contains(wgpu::Features::TIMESTAMP_QUERY) {
            wanted |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gemma-wgpu"),
            required_features: wanted,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::default(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;
        // wgpu panics on an error no scope catches; record it for the next check instead.
        let faults = Faults::default();
        let sink = faults.clone();
        device.on_uncaptured_error(Arc::new(move |e| sink.record(Fault::from_wgpu(&e))));
        let sink = faults.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                sink.record(Fault::Other(format!(
                    "the device was lost ({reason:?}): {message}"
                )));
            }
        });
        let features = device.features();
        let mut max_binding_size = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if let Some(cap) = options.max_binding_size {
            max_binding_size = max_binding_size.min(cap);
        }
        let cpu_like = options
            .cpu_layout
            .unwrap_or(info.device_type == wgpu::DeviceType::Cpu);
        let caps = Caps {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            min_subgroup_size: match features.contains(wgpu::Features::SUBGROUP) {
                true => info.subgroup_min_size,
                false => 0,
            },
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            int64: features.contains(wgpu::Features::SHADER_INT64),
            cpu_like,
            int8_products: options.int8_products.unwrap_or(true),
            int8_all_formats: options.int8_products == Some(true),
            max_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffers: options
                .max_storage_buffers
                .map_or(limits.max_storage_buffers_per_shader_stage, |cap| {
                    cap.min(limits.max_storage_buffers_per_shader_stage)
                }),
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
        };
        Ok(Gpu {
            adapter,
            device,
            queue,
            info,
            caps,
            faults,
            allocated: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            max_memory: options.max_memory,
        })
    }

    /// Command buffers submitted through recorders so far.
    pub fn submitted(&self) -> u64 {
        self.submitted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A one-line description: adapter name, backend and device type.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// Waits until every submitted command has finished; a GPU fault since the last check
    /// (an allocation out of memory, an uncaptured error, the device lost) is the error.
    pub fn wait(&self) -> Result<()> {
        self.wait_for(None)
    }

    /// Waits until submission `index` has finished (every submission with `None`); faults
    /// as [`Gpu::wait`].
    pub fn wait_for(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let poll = wgpu::PollType::Wait {
            submission_index: index,
            timeout: None,
        };
        self.device
            .poll(poll)
            .map_err(|e| Error::Readback(e.to_string()))?;
        self.check(|_| "a smaller --ctx or --dtype needs less memory".into())
    }

    /// The faults wgpu reported since the last check; they say what went wrong after the
    /// fact (an out-of-memory buffer only fails where it is used).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Returns the fault recorded since the last check, if any, as an error; `hint` names the
    /// setting that would need less memory, from the label of what did not fit.
    pub fn check(&self, hint: impl FnOnce(&str) -> String) -> Result<()> {
        match self.faults.take() {
            Some(f) => Err(f.into_error(hint)),
            None => Ok(()),
        }
    }

    /// Splits `workgroups` into an (x, y) grid whose dimensions the adapter accepts; shaders
    /// recover the linear index as `wg.x + wg.y * nwg.x`.
    pub fn grid_2d(&self, workgroups: u32) -> (u32, u32) {
        let max = self.caps.max_workgroups_per_dim.max(1);
        if workgroups <= max {
            (workgroups.max(1), 1)
        } else {
            let y = workgroups.div_ceil(max);
            (workgroups.div_ceil(y), y)
        }
    }
}
