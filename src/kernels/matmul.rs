//! matmul: Y = X W^T for prefill blocks of token rows (shaders/matmul.wgsl).

use super::matrix::{MatrixArgs, int8_activations};
use super::matvec::{bind_geglu_matrix, bind_matrix, refuse_yq};
use super::{Dispatch, groups, source};
use crate::formats::WeightFormat;
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

/// GPU layout: output tile edge (tokens and weight rows), fixed by the shader's 16 x 16 x
/// (4 x 4) layout of 256 invocations.
const TILE: u32 = 64;
const TILE_WG: u32 = 256;
/// CPU layout: weight rows and tokens each invocation keeps in registers (fixed by the shader:
/// see register_tile in matmul.wgsl for the measured shape), and invocations per workgroup:
/// 16, so that 128 rows fill a workgroup and Gemma 3 270M's 640-row products (o, down) run 5
/// full workgroups per token block rather than 3 with the last half idle (with four rows an
/// invocation and 64 invocations, its down product on lavapipe 6.8 -> 5.7 ms at 32).
const REGISTER_ROWS: u32 = 8;
const REGISTER_TOKENS: u32 = 32;
const REGISTER_WG: u32 = 16;
/// Subgroup lanes the CPU layout needs to spread the loads of x over (one per token of each 8).
const SPREAD_LANES: u32 = 8;

pub struct Matmul {
    kernel: Kernel,
    /// The same product ending in gelu_tanh(gate) * up (see [`Matmul::bind_geglu`]).
    geglu: Kernel,
    format: WeightFormat,
    /// The CPU layout (see matmul.wgsl).
    register_tiles: bool,
    /// x is quantized to int8 blocks (see [`Matmul::int8`]).
    int8: bool,
}

impl Matmul {
    pub fn new(gpu: &Gpu, format: WeightFormat) -> Result<Matmul> {
        let register_tiles = gpu.caps.cpu_like;
        let wg = if register_tiles { REGISTER_WG } else { TILE_WG };
        let spread_x = register_tiles && gpu.caps.min_subgroup_size >= SPREAD_LANES;
        let int8 = int8_activations(gpu, format);
        let build = |geglu: bool| {
            let constants = [
                ("WG", wg as f64),
                ("REGISTER_TILES", register_tiles as u8 as f64),
                ("GEGLU", geglu as u8 as f64),
                ("SPREAD_X", spread_x as u8 as f64),
                ("INT8", int8 as u8 as f64),
            ];
            let variant = geglu.then_some("geglu");
            source::build(
                gpu,
                &source::MATMUL,
                "main",
                Some(format),
                variant,
                &constants,
            )
        };
        Ok(Matmul {
            kernel: build(false)?,
            geglu: build(true)?,
            format,
            register_tiles,
            int8,
        })
    }

    /// Whether this product multiplies x quantized to int8 blocks of 32 (see
    /// [`int8_activations`]).
    pub fn int8(&self) -> bool {
        self.int8
    }

    /// Workgroups for `rows` weight rows and `n` tokens: (over rows, over tokens).
    fn grid(&self, rows: usize, n: usize) -> (u32, u32) {
        if self.register_tiles {
            let per_workgroup = REGISTER_ROWS * REGISTER_WG;
            (groups(rows, per_workgroup), groups(n, REGISTER_TOKENS))
        } else {
            (groups(rows, TILE), groups(n, TILE))
        }
    }

    /// Refuses more token rows than one grid dimension holds.
    fn check_tokens(&self, gpu: &Gpu, label: &str, n: usize) -> Result<()> {
        let max = gpu.caps.max_workgroups_per_dim;
        if self.grid(1, n).1 > max {
            return Err(Error::Shape {
                kernel: "matmul",
                message: format!("{label}: {n} token rows need more than {max} workgroups"),
            });
        }
        Ok(())
    }

    /// y [n, w.rows / 2] = gelu_tanh(gate) * up of [gate | up] = x W^T, for W the gate rows
    /// stacked on the up rows in one chunk (Gemma's gate_up): the product and GeGLU in one
    /// dispatch. `args.y` is filled whole (its offset and stride are not read).
    pub fn bind_geglu(&self, gpu: &Gpu, label: &str, args: MatrixArgs) -> Result<Dispatch> {
        refuse_yq("matmul", label, &args)?;
        let n = args.n;
        self.check_tokens(gpu, label, n)?;
        let kernel = (&self.geglu, self.format);
        let cols = args.w.cols;
        bind_geglu_matrix("matmul", kernel, gpu, label, args, cols, |outputs| {
            // Two outputs per unit of four rows.
            let (x, y) = self.grid(2 * outputs, n);
            (x, y, 1)
        })
    }

    /// y [n, w.rows] = x [n, w.cols] W^T, one dispatch per chunk of W.
    pub fn bind(&self, gpu: &Gpu, label: &str, args: MatrixArgs) -> Result<Vec<Dispatch>> {
        refuse_yq("matmul", label, &args)?;
        let n = args.n;
        self.check_tokens(gpu, label, n)?;
        let cols = args.w.cols;
        bind_matrix(
            "matmul",
            (&self.kernel, self.format),
            gpu,
            label,
            args,
            cols,
            |rows| {
                let (x, y) = self.grid(rows, n);
                (x, y, 1)
            },
        )
    }
}
