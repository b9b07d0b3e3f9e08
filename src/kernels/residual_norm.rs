//! residual_norm: a Gemma 2/3 block's post-norm added into the residual stream, and the next
//! block's pre-norm of the result, in one dispatch (shaders/residual_norm.wgsl).

use super::rms_norm::RmsNormParams;
use super::{Dispatch, bindings, check_len, quantize_q8, source};
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

bindings! {
    pub struct ResidualNormBuffers {
        /// [n, d]: the block's output before its post-norm
        pub o: Read,
        /// \[d\]: the post-norm's weights
        pub post: Read,
        /// \[d\]: the next norm's weights
        pub next: Read,
        /// [n, d]: the residual stream, updated
        pub x: ReadWrite,
        /// [n, d]: the next norm's output
        pub h: ReadWrite,
        /// \[n\] u32: whether each row of h holds a NaN or an infinity (written by the
        /// dispatches bound with `flag_rows` only)
        pub flags: ReadWrite,
        /// [n * d / 32 * 24] words: h quantized as kernels::QuantizeQ8 writes it (written by
        /// the dispatches bound with `NormOutput::Quantized` only; any buffer otherwise)
        pub hq: ReadWrite,
    }
}

pub struct ResidualNorm {
    kernel: Kernel,
    /// The same writing `flags`.
    flagged: Kernel,
    /// The same writing `hq`.
    quantizing: Kernel,
    /// The same writing both.
    flagged_quantizing: Kernel,
}

/// How a residual_norm dispatch ends: h alone, h and its rows' flags (a step's final norm),
/// h and its quantization (the input of decode products that take int8 x), or all three (a
/// decode step's final norm, whose lm_head takes int8 x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormOutput {
    H,
    Flagged,
    Quantized,
    FlaggedQuantized,
}

impl NormOutput {
    /// The output with or without the rows' flags and the quantization.
    pub fn of(flagged: bool, quantized: bool) -> NormOutput {
        match (flagged, quantized) {
            (false, false) => NormOutput::H,
            (true, false) => NormOutput::Flagged,
            (false, true) => NormOutput::Quantized,
            (true, true) => NormOutput::FlaggedQuantized,
        }
    }

    /// Whether the rows' flags are written.
    pub fn flagged(self) -> bool {
        matches!(self, NormOutput::Flagged | NormOutput::FlaggedQuantized)
    }

    /// Whether h's quantization is written.
    pub fn quantized(self) -> bool {
        matches!(self, NormOutput::Quantized | NormOutput::FlaggedQuantized)
    }
}

impl ResidualNorm {
    pub fn new(gpu: &Gpu) -> Result<ResidualNorm> {
        let build = |variant, flags: bool, quant: bool| {
            let constants = [
                // Invocations per row as rms_norm's: the sums then run in the same order.
                ("WG", super::rms_norm::invocations_per_row(gpu) as f64),
                ("FLAGS", f64::from(u8::from(flags))),
                ("QUANT", f64::from(u8::from(quant))),
            ];
            source::build(
                gpu,
                &source::RESIDUAL_NORM,
                "main",
                None,
                variant,
                &constants,
            )
        };
        Ok(ResidualNorm {
            kernel: build(None, false, false)?,
            flagged: build(Some("flags"), true, false)?,
            quantizing: build(Some("quant"), false, true)?,
            flagged_quantizing: build(Some("flags.quant"), true, true)?,
        })
    }

    /// x += rms_norm(o) with weight `post`; h = rms_norm(x) with weight `next` (rows of d).
    /// With [`NormOutput::Flagged`] (a step's final norm) also flags\[row\] = whether row
    /// `row` of h holds a NaN or an infinity; with [`NormOutput::Quantized`] also hq = h
    /// quantized to int8 blocks of 32 (d a multiple of 32); with
    /// [`NormOutput::FlaggedQuantized`] both; the buffers not written are left as they are.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        params: RmsNormParams,
        buffers: ResidualNormBuffers,
        output: NormOutput,
    ) -> Result<Dispatch> {
        let kernel = match output {
            NormOutput::H => &self.kernel,
            NormOutput::Flagged => &self.flagged,
            NormOutput::Quantized => &self.quantizing,
            NormOutput::FlaggedQuantized => &self.flagged_quantizing,
        };
        let (n, d) = (params.n as usize, params.d as usize);
        check_len("residual_norm", "o", buffers.o, n * d)?;
        check_len("residual_norm", "post", buffers.post, d)?;
        check_len("residual_norm", "next", buffers.next, d)?;
        check_len("residual_norm", "x", buffers.x, n * d)?;
        check_len("residual_norm", "h", buffers.h, n * d)?;
        check_len("residual_norm", "flags", buffers.flags, n)?;
        if output.quantized() {
            if !d.is_multiple_of(quantize_q8::BLOCK) {
                return Err(Error::Shape {
                    kernel: "residual_norm",
                    message: format!("{label}: rows of {d} do not split into blocks of 32"),
                });
            }
            let words = n * d / quantize_q8::BLOCK * quantize_q8::WORDS_PER_BLOCK;
            check_len("residual_norm", "hq", buffers.hq, words)?;
        }
        let (gx, gy) = gpu.grid_2d(params.n);
        kernel.bind(
            gpu,
            label,
            bytemuck::bytes_of(&params),
            &buffers,
            (gx, gy, 1),
        )
    }
}
