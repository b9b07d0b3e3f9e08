//! The GPU context: adapter choice, forced-off features, and errors as values.

use crate::common::*;
use gemma_wgpu::Error;
use gemma_wgpu::gpu::{Access, BackendChoice, Gpu, GpuOptions, Kernel, list_adapters};
use gemma_wgpu::kernels::add::AddBuffers;
use gemma_wgpu::kernels::{Add, KvDtype};

#[test]
fn adapters_are_listed_with_their_features() {
    let adapters = list_adapters(BackendChoice::Vulkan);
    assert!(
        !adapters.is_empty(),
        "no Vulkan adapter: apt-get install -y mesa-vulkan-drivers"
    );
    let a = &adapters[0];
    assert_eq!(a.backend, "Vulkan");
    assert!(a.max_binding_size > 0 && a.max_buffer_size >= a.max_binding_size);
    assert!(
        !list_adapters(BackendChoice::Gl).is_empty(),
        "no GL adapter"
    );
}

#[test]
fn adapters_are_chosen_by_index_or_name() {
    let by_index = Gpu::new(&GpuOptions {
        backend: BackendChoice::Vulkan,
        adapter: Some("0".into()),
        ..Default::default()
    })
    .unwrap();
    let name = by_index.info.name.clone();
    let needle = name.split_whitespace().next().unwrap().to_uppercase();
    let by_name = Gpu::new(&GpuOptions {
        backend: BackendChoice::Vulkan,
        adapter: Some(needle),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(by_name.info.name, name);
    let missing = Gpu::new(&GpuOptions {
        adapter: Some("no such adapter".into()),
        ..Default::default()
    });
    match missing {
        Err(Error::AdapterNotFound { wanted, available }) => {
            assert_eq!(wanted, "no such adapter");
            assert!(available.contains(&name), "{available}");
        }
        other => panic!(
            "expected AdapterNotFound, got {:?}",
            other.map(|g| g.describe())
        ),
    }
    let err = "webgl".parse::<BackendChoice>().unwrap_err();
    assert!(
        err.to_string().contains("vulkan, metal, dx12, gl, auto"),
        "{err}"
    );
}

#[test]
fn forced_off_features_are_off() {
    let gpu = Gpu::new(&GpuOptions {
        backend: BackendChoice::Vulkan,
        disable_f16: true,
        disable_subgroups: true,
        disable_int64: true,
        ..Default::default()
    })
    .unwrap();
    assert!(!gpu.caps.f16 && !gpu.caps.subgroups && !gpu.caps.int64);
    assert!(!gpu.device.features().contains(wgpu::Features::SUBGROUP));
    assert!(!gpu.device.features().contains(wgpu::Features::SHADER_INT64));
    assert_eq!(KvDtype::default_for(&gpu.caps), KvDtype::F32);
    let full = Gpu::new(&GpuOptions {
        backend: BackendChoice::Vulkan,
        ..Default::default()
    })
    .unwrap();
    // lavapipe has all three; the default KV cache is then f16.
    assert!(
        full.caps.f16 && full.caps.subgroups && full.caps.int64,
        "lavapipe exposes SHADER_F16, SUBGROUP and SHADER_INT64"
    );
    assert_eq!(KvDtype::default_for(&full.caps), KvDtype::F16);
}

#[test]
fn shader_errors_are_results_naming_the_kernel() {
    for dev in devices() {
        let broken = Kernel::new(&dev.gpu, "broken_kernel", "fn main( {", "main", &[], &[]);
        match broken {
            Err(Error::Pipeline { kernel, message }) => {
                assert_eq!(kernel, "broken_kernel");
                assert!(!message.is_empty());
            }
            Err(e) => panic!("{}: wrong error {e}", dev.name),
            Ok(_) => panic!("{}: a broken shader compiled", dev.name),
        }
        // Valid WGSL whose bindings contradict the layout: a validation error, not a panic.
        let src = "@group(0) @binding(1) var<storage, read_write> x: array<f32>;\n\
                   @compute @workgroup_size(1) fn main() { x[0] = 1.0; }";
        let mismatch = Kernel::new(
            &dev.gpu,
            "mismatch",
            src,
            "main",
            &[("x", Access::Read)],
            &[],
        );
        assert!(
            matches!(mismatch, Err(Error::Pipeline { .. })),
            "{}",
            dev.name
        );
    }
}

#[test]
fn binding_errors_are_results() {
    let dev = devices().remove(0);
    let gpu = &dev.gpu;
    let add = Add::new(gpu).unwrap();
    let small = gpu.storage_zeroed("small", 16);
    let big = gpu.storage_zeroed("big", 64);
    let err = add
        .bind(
            gpu,
            "add",
            16,
            AddBuffers {
                x: &small,
                acc: &big,
            },
        )
        .err()
        .expect("short buffer accepted");
    assert!(
        err.to_string().contains("holds 16 bytes, needs 64"),
        "{err}"
    );
}
