//! The WGSL kernels: one Rust type per shader in `shaders/`, owning its pipeline(s).
//!
//! `new` compiles (once, at load), `bind` attaches buffers and parameters (once, at load) and
//! returns [`Dispatch`]es that are encoded every step and cannot fail.

pub mod add;
pub mod attention;
pub mod copy;
pub mod embedding;
pub mod fill;
pub mod fma;
pub mod geglu;
pub mod kv_store;
pub mod log_prob;
pub mod matmul;
pub mod matrix;
pub mod matvec;
pub mod quantize_q8;
pub mod residual_norm;
pub mod rms_norm;
pub mod rope;
pub mod rope_store;
pub mod soft_cap;
pub mod source;
pub mod top_k;

pub use crate::config::AttentionShape;
pub use crate::gpu::{Binding, Bindings, Dispatch};
pub use add::Add;
pub use attention::Attention;
pub use copy::Copy;
pub use embedding::Embedding;
pub use fill::Fill;
pub use fma::Fma;
pub use geglu::Geglu;
pub use kv_store::{KvCache, KvDtype, KvStore};
pub use log_prob::LogProb;
pub use matmul::Matmul;
pub use matrix::GpuMatrix;
pub use matvec::Matvec;
pub use quantize_q8::QuantizeQ8;
pub use residual_norm::ResidualNorm;
pub use rms_norm::RmsNorm;
pub use rope::RopeTable;
pub use rope_store::RopeStore;
pub use soft_cap::SoftCap;
pub use top_k::{TopK, TopKOutput, TopKScratch};

/// A kernel's uniform parameters: a `#[repr(C)]` struct mirroring the shader's `Params`.
/// `FIELDS` (name, byte offset) lets a test check the two agree.
pub trait Params: bytemuck::Pod {
    const FIELDS: &'static [(&'static str, usize)];
}

/// Declares a kernel's `Params` struct and its [`Params`] field list.
macro_rules! params {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)* }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)* }
        impl $crate::kernels::Params for $name {
            const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f)),)*];
        }
    };
}
pub(crate) use params;

/// One storage binding of a kernel: the shader's variable name and how the kernel uses it.
/// Declares a kernel's storage buffers once, in binding order, each with its access:
/// a struct of named buffers and its [`Bindings`] list. A test checks the names and access
/// against the shader's `var<storage, ...>` declarations.
macro_rules! bindings {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $access:ident,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy)]
        pub struct $name<'a> { $($(#[$fm])* pub $f: &'a wgpu::Buffer,)* }
        impl<'a> $crate::gpu::Bindings<'a> for $name<'a> {
            const LIST: &'static [$crate::gpu::Binding] =
                &[$((stringify!($f), $crate::gpu::Access::$access),)*];
            fn ordered(&self) -> Vec<&'a wgpu::Buffer> {
                vec![$(self.$f,)*]
            }
        }
    };
}
pub(crate) use bindings;

/// Workgroups needed for `n` items at `per_workgroup` items each.
pub(crate) fn groups(n: usize, per_workgroup: u32) -> u32 {
    n.div_ceil(per_workgroup as usize) as u32
}

/// Checks that `buffer` holds at least `elements` 4-byte values.
pub(crate) fn check_len(
    kernel: &'static str,
    what: &str,
    buffer: &wgpu::Buffer,
    elements: usize,
) -> crate::Result<()> {
    if buffer.size() < elements as u64 * 4 {
        return Err(crate::Error::Shape {
            kernel,
            message: format!(
                "{what} holds {} bytes, needs {} ({elements} values)",
                buffer.size(),
                elements * 4
            ),
        });
    }
    Ok(())
}
