//! matmul: Y = X W^T for prefill blocks of token rows (shaders/matmul.wgsl).

use super::matrix::MatrixArgs;
use super::matvec::bind_matrix;
use super::{Dispatch, groups, source};
use crate::formats::WeightFormat;
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

/// Output tile edge (tokens and weight rows), fixed by the shader's 16 x 16 x (4 x 4) layout.
const TILE: u32 = 64;

pub struct Matmul {
    kernel: Kernel,
    format: WeightFormat,
}

impl Matmul {
    pub fn new(gpu: &Gpu, format: WeightFormat) -> Result<Matmul> {
        let kernel = source::build(gpu, &source::MATMUL, "main", Some(format), None, &[])?;
        Ok(Matmul { kernel, format })
    }

    /// y [n, w.rows] = x [n, w.cols] W^T, one dispatch per chunk of W.
    pub fn bind(&self, gpu: &Gpu, label: &str, args: MatrixArgs) -> Result<Vec<Dispatch>> {
        let n = args.n;
        let max = gpu.caps.max_workgroups_per_dim;
        if groups(n, TILE) > max {
            return Err(Error::Shape {
                kernel: "matmul",
                message: format!("{label}: {n} token rows need more than {max} workgroups"),
            });
        }
        bind_matrix(
            "matmul",
            &self.kernel,
            self.format,
            gpu,
            label,
            args,
            |rows| (groups(rows, TILE), groups(n, TILE), 1),
        )
    }
}
