//! The kernels one model uses, compiled once at load.

use crate::Result;
use crate::gpu::{Dispatch, Gpu};
use crate::kernels::matrix::MatrixArgs;
use crate::kernels::{
    Add, Attention, Embedding, Geglu, KvDtype, LogProb, Matmul, Matvec, ResidualNorm, RmsNorm,
    RopeStore, SoftCap, TopK,
};
use crate::weights::WeightFormat;

/// The kernels that read weights, for one weight format.
pub(crate) struct MatrixKernels {
    pub matvec: Matvec,
    pub matmul: Matmul,
    pub embedding: Embedding,
}

pub(crate) struct Kernels {
    /// One set per weight format the model holds (GGUF files mix several).
    matrix: Vec<(WeightFormat, MatrixKernels)>,
    pub rms_norm: RmsNorm,
    /// A post-norm into the residual, then the next norm, in one dispatch.
    pub residual_norm: ResidualNorm,
    pub add: Add,
    pub rope_store: RopeStore,
    pub attention: Attention,
    pub geglu: Geglu,
    pub soft_cap: SoftCap,
    pub top_k: TopK,
    pub log_prob: LogProb,
}

impl Kernels {
    /// Compiles every kernel for weights in `formats` and a cache of `kv`.
    pub fn new(gpu: &Gpu, formats: &[WeightFormat], kv: KvDtype) -> Result<Kernels> {
        let matrix = formats
            .iter()
            .map(|&f| {
                let kernels = MatrixKernels {
                    matvec: Matvec::new(gpu, f)?,
                    matmul: Matmul::new(gpu, f)?,
                    embedding: Embedding::new(gpu, f)?,
                };
                Ok((f, kernels))
            })
            .collect::<Result<_>>()?;
        Ok(Kernels {
            matrix,
            rms_norm: RmsNorm::new(gpu)?,
            residual_norm: ResidualNorm::new(gpu)?,
            add: Add::new(gpu)?,
            rope_store: RopeStore::new(gpu, kv)?,
            attention: Attention::new(gpu, kv)?,
            geglu: Geglu::new(gpu)?,
            soft_cap: SoftCap::new(gpu)?,
            top_k: TopK::new(gpu)?,
            log_prob: LogProb::new(gpu)?,
        })
    }

    pub fn matrix(&self, format: WeightFormat) -> &MatrixKernels {
        &self
            .matrix
            .iter()
            .find(|(f, _)| *f == format)
            .expect("kernels built for every format the model holds")
            .1
    }

    /// The product `args` describes: matvec for one row, matmul for more.
    pub fn product(&self, gpu: &Gpu, label: &str, args: MatrixArgs) -> Result<Vec<Dispatch>> {
        let k = self.matrix(args.w.format);
        let rows = args.n;
        if rows == 1 {
            k.matvec.bind(gpu, label, args)
        } else {
            k.matmul.bind(gpu, label, args)
        }
    }
}
