//! Compute pipelines built under error scopes, and the bound dispatches they produce.

use super::Gpu;
use crate::{Error, Result};

/// One storage binding of a kernel: its name in the shader and its access.
pub type Binding = (&'static str, Access);

/// A kernel's storage buffers by name (the struct `kernels::bindings!` declares). `LIST` is the
/// kernel's signature in binding order (`@binding(1..)`, after the `Params` uniform), from
/// which the pipeline layout is built; `ordered` gives the buffers in that order.
pub trait Bindings<'a> {
    const LIST: &'static [Binding];
    fn ordered(&self) -> Vec<&'a wgpu::Buffer>;
}

/// How a kernel uses one of its storage bindings; the list of these is the kernel's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// A compiled compute pipeline with its bind-group layout.
///
/// Binding convention shared by every shader in `shaders/`: `@binding(0)` is the kernel's
/// `Params` uniform, `@binding(1..)` are its storage buffers in the order of `bindings`.
pub struct Kernel {
    label: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bindings: &'static [Binding],
}

impl Kernel {
    /// Compiles `source` and builds the pipeline; any shader or validation error comes back as
    /// [`Error::Pipeline`] naming the kernel.
    pub fn new(
        gpu: &Gpu,
        label: &str,
        source: &str,
        entry: &str,
        bindings: &'static [Binding],
        constants: &[(&str, f64)],
    ) -> Result<Kernel> {
        let device = &gpu.device;
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, (_, a)) in bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *a == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let errors = [validation.pop(), internal.pop()].map(pollster::block_on);
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(Error::Pipeline {
                kernel: label.to_string(),
                message: e.to_string(),
            });
        }
        Ok(Kernel {
            label: label.to_string(),
            pipeline,
            layout,
            bindings,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The kernel's storage bindings (name, access) in binding order.
    pub fn bindings(&self) -> &'static [Binding] {
        self.bindings
    }

    /// Binds `params` and the named `buffers` of the kernel's signature for a dispatch of
    /// `grid` workgroups. Done once at load; the returned [`Dispatch`] is encoded every step.
    pub fn bind<'a, B: Bindings<'a>>(
        &self,
        gpu: &Gpu,
        label: &str,
        params: &[u8],
        buffers: &B,
        grid: (u32, u32, u32),
    ) -> Result<Dispatch> {
        if B::LIST != self.bindings {
            return Err(Error::Pipeline {
                kernel: self.label.clone(),
                message: format!(
                    "bind given buffers {:?}, the kernel takes {:?}",
                    B::LIST,
                    self.bindings
                ),
            });
        }
        let buffers = buffers.ordered();
        let uniform = gpu.uniform_init(label, params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let validation = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(Error::Pipeline {
                kernel: self.label.clone(),
                message: e.to_string(),
            });
        }
        Ok(Dispatch {
            label: label.to_string(),
            kernel: self.label.clone(),
            pipeline: self.pipeline.clone(),
            bind_group,
            grid,
            _params: uniform,
        })
    }
}

/// A pipeline with its bind group and workgroup grid: everything needed to run it once more.
pub struct Dispatch {
    label: String,
    /// The kernel's label (`matvec`, `rms_norm`, ...): what profiles group by.
    kernel: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32, u32),
    _params: wgpu::Buffer,
}

impl Dispatch {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn grid(&self) -> (u32, u32, u32) {
        self.grid
    }

    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// Whether encoding it records any work (a zero grid records nothing).
    pub fn is_empty(&self) -> bool {
        self.grid.0 * self.grid.1 * self.grid.2 == 0
    }

    /// Records the dispatch into a compute pass; cannot fail.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.is_empty() {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, self.grid.2);
    }
}

impl Gpu {
    /// Runs `dispatches` in order in one pass of one command buffer and waits for them.
    /// Storage writes in one dispatch are visible to the next (wgpu inserts the barriers).
    pub fn run<'a>(
        &self,
        label: &str,
        dispatches: impl IntoIterator<Item = &'a Dispatch>,
    ) -> Result<()> {
        let mut rec = self.recorder(label);
        rec.dispatch_all(dispatches);
        rec.submit();
        self.wait()
    }
}
