//! log_prob: the log-softmax of rows of logits at chosen ids, and each row's log-sum-exp,
//! computed where the logits are (shaders/log_prob.wgsl), so that scoring a text reads back a
//! few floats per position instead of the vocabulary's logits.

use super::{Dispatch, bindings, check_len, params, source};
use crate::Result;
use crate::gpu::{Gpu, Kernel};

params! {
    pub struct LogProbParams {
        pub rows: u32,
        pub vocab: u32,
        /// Ids per row.
        pub m: u32,
    }
}

bindings! {
    pub struct LogProbBuffers {
        /// [rows, vocab]
        pub logits: Read,
        /// [rows, m] u32, each < vocab
        pub ids: Read,
        /// [rows, m + 1]: each row's log-sum-exp (NaN if a logit is not finite), then the
        /// log-probabilities of its ids
        pub out: ReadWrite,
    }
}

const WG: u32 = 256;

pub struct LogProb {
    kernel: Kernel,
}

impl LogProb {
    pub fn new(gpu: &Gpu) -> Result<LogProb> {
        let contiguous = gpu.caps.cpu_like;
        let kernel = source::build(
            gpu,
            &source::LOG_PROB,
            "main",
            None,
            contiguous.then_some("contiguous"),
            &[("WG", WG as f64), ("CONTIGUOUS", contiguous as u8 as f64)],
        )?;
        Ok(LogProb { kernel })
    }

    /// out[r] = (log-sum-exp of logits[r], then logits[r, ids[r, j]] minus it for j < m).
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        (rows, vocab, m): (usize, usize, usize),
        buffers: LogProbBuffers,
    ) -> Result<Dispatch> {
        check_len("log_prob", "logits", buffers.logits, rows * vocab)?;
        check_len("log_prob", "ids", buffers.ids, rows * m)?;
        check_len("log_prob", "out", buffers.out, rows * (m + 1))?;
        let params = LogProbParams {
            rows: rows as u32,
            vocab: vocab as u32,
            m: m as u32,
        };
        let grid = (rows as u32, 1, 1);
        (self.kernel).bind(gpu, label, bytemuck::bytes_of(&params), &buffers, grid)
    }
}
