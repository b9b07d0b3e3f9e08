//! matvec: y = W x for decode (shaders/matvec.wgsl).

use super::matrix::{MatrixArgs, MatrixBuffers, MatrixParams, int8_decode_activations};
use super::quantize_q8::{self, QuantizeQ8, QuantizeQ8Buffers};
use super::{Dispatch, check_len, groups, source};
use crate::formats::WeightFormat;
use crate::gpu::{Gpu, Kernel};
use crate::{Error, Result};

/// Rows per workgroup: one reduction serves four rows, and x is read once for them.
const ROWS: u32 = 4;
/// CPU layout: rows per invocation, fixed by the shader (4 independent sums measured faster
/// than 1 or 8 on lavapipe: Gemma 3 270M tg32 6.5 / 7.3 / 5.4 tokens/s).
const CPU_ROWS: u32 = 4;
/// CPU layout: invocations per workgroup (two 8-lane SIMD passes of llvmpipe's 256 bits).
const CPU_WG: u32 = 16;
/// Invocations per workgroup.
const WG: u32 = 64;

/// 8-weight groups an invocation takes at a time on GPUs: a quantized block's 32 weights (its
/// 16-byte code vector and scale loaded once, not by four neighbours), a 16-weight i8_affine
/// group, or one group of plain floats (neighbours then read neighbouring 16 bytes).
fn run_for(format: WeightFormat) -> u32 {
    match format {
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16 => 1,
        WeightFormat::I8Affine => 2,
        _ => 4,
    }
}

/// Weights per step of the CPU layout (the shader's DOT): a whole block through the format's
/// own `w_dot32` (Q4_0 on lavapipe: 2B down 3.5 -> 2.6 ms against `w_dot16`, which loaded
/// each block twice), 16 through its own `w_dot16`, else 8 through `w_load8`; a wide reading
/// (source::WeightsSource) says its own. With 32 the shader reads rows in pairs
/// (`w_dot32_pairs`), which needs the matrix in row tiles: the CPU layout's every 32-step
/// reading is (wide readings, and Q4_0's narrow one on CPU adapters).
fn weights_per_step(w: source::WeightsSource) -> u32 {
    let unit = w.format.unit();
    match unit.wide.as_ref() {
        Some(wide) if w.wide => wide.dot,
        _ if unit.own_dot32 => 32,
        _ if unit.own_dot16 => 16,
        _ => 8,
    }
}

pub struct Matvec {
    kernel: Kernel,
    /// The same product ending in gelu_tanh(gate) * up (see [`Matvec::bind_geglu`]).
    geglu: Kernel,
    /// The CPU layout's int8 path: the GeGLU product also writing its output quantized
    /// (`MatrixArgs::yq`).
    geglu_quant: Option<Kernel>,
    format: WeightFormat,
    /// Rows per workgroup.
    rows_per_workgroup: u32,
    /// x is quantized to int8 blocks (see [`Matvec::int8`]).
    int8: bool,
    /// The CPU layout's int8 path: x quantized before the product reads it, by a pass of its
    /// own (quantize_q8.wgsl) unless the caller brings the quantization (`MatrixArgs::xq`).
    quantize: Option<QuantizeQ8>,
}

impl Matvec {
    pub fn new(gpu: &Gpu, format: WeightFormat) -> Result<Matvec> {
        // CPU adapters: whole rows per invocation (see matvec.wgsl), in small workgroups so
        // that a matrix of a few hundred rows still spreads over the cores.
        let row_per_invocation = gpu.caps.cpu_like;
        let wg = if row_per_invocation { CPU_WG } else { WG };
        let reading = source::WeightsSource::for_device(gpu, format);
        let int8 = int8_decode_activations(gpu, format);
        // With int8 activations a GPU layout's unit of work is one 32-weight block
        // (x_quant32's).
        let run = if int8 { 4 } else { run_for(format) };
        let build = |geglu: bool, quant_y: bool| {
            let variant = match (geglu, quant_y) {
                (true, true) => Some("geglu.quant"),
                (true, false) => Some("geglu"),
                _ => None,
            };
            source::build(
                gpu,
                &source::MATVEC,
                "main",
                Some(format),
                variant,
                &[
                    ("WG", wg as f64),
                    ("ROWS", ROWS as f64),
                    ("CONTIGUOUS", 0.0),
                    ("RUN", run as f64),
                    ("ROW_PER_INVOCATION", row_per_invocation as u8 as f64),
                    ("DOT", weights_per_step(reading) as f64),
                    ("GEGLU", geglu as u8 as f64),
                    ("INT8", int8 as u8 as f64),
                    ("QUANT_Y", quant_y as u8 as f64),
                ],
            )
        };
        let (kernel, geglu) = (build(false, false)?, build(true, false)?);
        let rows_per_workgroup = if row_per_invocation {
            CPU_ROWS * wg
        } else {
            ROWS
        };
        let (quantize, geglu_quant) = match int8 && row_per_invocation {
            true => (Some(QuantizeQ8::new(gpu)?), Some(build(true, true)?)),
            false => (None, None),
        };
        Ok(Matvec {
            kernel,
            geglu,
            geglu_quant,
            format,
            rows_per_workgroup,
            int8,
            quantize,
        })
    }

    /// Whether this product multiplies x quantized to int8 blocks of 32 (see
    /// [`int8_decode_activations`]).
    pub fn int8(&self) -> bool {
        self.int8
    }

    /// Whether this product reads x quantized by a pass before it (the CPU layout's int8
    /// path): a kernel that writes x can write its quantization too
    /// (residual_norm::NormOutput::Quantized) and hand it over in [`MatrixArgs::xq`].
    pub fn quantizes_x(&self) -> bool {
        self.quantize.is_some()
    }

    /// Whether [`Matvec::bind_geglu`] takes `MatrixArgs::yq`: its output quantized as the
    /// next product's quantize_q8 pass would write it (the CPU layout's int8 path, where a
    /// workgroup's outputs are one block of 32), so that a down product that
    /// [`quantizes_x`](Matvec::quantizes_x) reads it instead.
    pub fn quantizes_geglu(&self) -> bool {
        self.geglu_quant.is_some()
    }

    /// With the CPU layout's int8 path, the words per vector of x's quantization, and the
    /// quantize_q8 dispatch and buffer (made once, at bind) where `args.xq` does not bring
    /// it: `Ok(None)` on the other paths.
    fn quantized_x(&self, gpu: &Gpu, label: &str, args: &MatrixArgs) -> Result<Option<QuantX>> {
        let Some(q) = &self.quantize else {
            return Ok(None);
        };
        let len = args.n * args.w.cols;
        if !len.is_multiple_of(quantize_q8::BLOCK) {
            return Err(Error::Shape {
                kernel: "matvec",
                message: format!("{label}: x of {len} values is not whole blocks of 32"),
            });
        }
        let words = len / quantize_q8::BLOCK * quantize_q8::WORDS_PER_BLOCK;
        let per_vector = words / args.n.max(1);
        if let Some(xq) = args.xq {
            check_len("matvec", "xq", xq, words)?;
            return Ok(Some(QuantX {
                quantize: None,
                words: per_vector,
            }));
        }
        check_len("matvec", "x", args.x, len)?;
        let xq = gpu.storage_zeroed(&format!("{label}.xq"), 4 * words as u64);
        let buffers = QuantizeQ8Buffers { x: args.x, xq: &xq };
        let d = q.bind(gpu, &format!("{label}.quantize"), len, buffers)?;
        Ok(Some(QuantX {
            quantize: Some((d, xq)),
            words: per_vector,
        }))
    }

    /// y [n, w.rows] = x [n, w.cols] times W transposed, one dispatch per chunk of W (after
    /// x's quantization, with the CPU layout's int8 path where `args.xq` does not bring it).
    pub fn bind(&self, gpu: &Gpu, label: &str, args: MatrixArgs) -> Result<Vec<Dispatch>> {
        refuse_yq("matvec", label, &args)?;
        let n = args.n as u32;
        let grid = |rows| {
            let (gx, gy) = gpu.grid_2d(groups(rows, self.rows_per_workgroup));
            (gx, gy, n)
        };
        let kernel = (&self.kernel, self.format);
        let Some(QuantX { quantize, words }) = self.quantized_x(gpu, label, &args)? else {
            let cols = args.w.cols;
            return bind_matrix("matvec", kernel, gpu, label, args, cols, grid);
        };
        let Some((quantize, xq)) = quantize else {
            let args = MatrixArgs {
                x: args.xq.unwrap_or(args.x),
                ..args
            };
            return bind_matrix("matvec", kernel, gpu, label, args, words, grid);
        };
        let args = MatrixArgs { x: &xq, ..args };
        let mut dispatches = vec![quantize];
        dispatches.extend(bind_matrix(
            "matvec", kernel, gpu, label, args, words, grid,
        )?);
        Ok(dispatches)
    }
}

/// x's quantization for the CPU layout's int8 path: its words per vector, and the dispatch
/// and buffer that make it where the caller did not bring it.
struct QuantX {
    quantize: Option<(Dispatch, wgpu::Buffer)>,
    words: usize,
}

impl Matvec {
    /// y [n, w.rows / 2] = gelu_tanh(gate) * up of the product [gate | up] = x W^T, for W the
    /// gate rows stacked on the up rows in one chunk (Gemma's gate_up): the product and GeGLU
    /// in one dispatch. `args.y` is filled whole (its offset and stride are not read).
    /// With the CPU layout's int8 path x's quantization comes first, where `args.xq` does
    /// not bring it.
    pub fn bind_geglu(&self, gpu: &Gpu, label: &str, args: MatrixArgs) -> Result<Vec<Dispatch>> {
        let n = args.n as u32;
        let kernel = match (&self.geglu_quant, args.yq) {
            (_, None) => &self.geglu,
            (Some(quant), Some(yq)) => {
                let outputs = args.w.rows / 2;
                quantize_q8::check_quantized("matvec", "yq", yq, (args.n * outputs, outputs))?;
                quant
            }
            (None, Some(_)) => return Err(yq_refused("matvec", label)),
        };
        let kernel = (kernel, self.format);
        let grid = |outputs| {
            // Two outputs per unit of four rows.
            let (gx, gy) = gpu.grid_2d(groups(outputs, self.rows_per_workgroup / 2));
            (gx, gy, n)
        };
        let Some(QuantX { quantize, words }) = self.quantized_x(gpu, label, &args)? else {
            let cols = args.w.cols;
            return Ok(vec![bind_geglu_matrix(
                "matvec", kernel, gpu, label, args, cols, grid,
            )?]);
        };
        let Some((quantize, xq)) = quantize else {
            let args = MatrixArgs {
                x: args.xq.unwrap_or(args.x),
                ..args
            };
            let product = bind_geglu_matrix("matvec", kernel, gpu, label, args, words, grid)?;
            return Ok(vec![product]);
        };
        let args = MatrixArgs { x: &xq, ..args };
        let product = bind_geglu_matrix("matvec", kernel, gpu, label, args, words, grid)?;
        Ok(vec![quantize, product])
    }
}

/// Refuses `args.yq` where `kernel` does not write y quantized.
pub(super) fn refuse_yq(kernel: &'static str, label: &str, args: &MatrixArgs) -> Result<()> {
    match args.yq {
        Some(_) => Err(yq_refused(kernel, label)),
        None => Ok(()),
    }
}

fn yq_refused(kernel: &'static str, label: &str) -> Error {
    Error::Shape {
        kernel,
        message: format!(
            "{label}: only matvec's GeGLU on a CPU adapter's int8 path writes y quantized"
        ),
    }
}

/// Binds a matrix kernel's GeGLU variant (matvec or matmul): y [n, w.rows / 2] =
/// gelu_tanh(gate) * up of [gate | up] = x W^T, for W the gate rows stacked on the up rows in
/// one chunk; `grid(outputs)` is its workgroup grid and `x_words` the 4-byte words of x per
/// vector (w.cols, or the quantized blocks' words). `args.y` is filled whole (its offset and
/// stride are not read).
pub(super) fn bind_geglu_matrix(
    name: &'static str,
    (kernel, format): (&Kernel, WeightFormat),
    gpu: &Gpu,
    label: &str,
    args: MatrixArgs,
    x_words: usize,
    grid: impl Fn(usize) -> (u32, u32, u32),
) -> Result<Dispatch> {
    let w = args.w;
    if w.chunks.len() != 1 || !w.rows.is_multiple_of(2) {
        return Err(Error::Shape {
            kernel: name,
            message: format!(
                "{label}: GeGLU needs [gate; up] in one chunk: {} chunks of {} rows",
                w.chunks.len(),
                w.rows
            ),
        });
    }
    let MatrixArgs { x, y, yq, n, .. } = args;
    if w.format != format {
        return Err(Error::Shape {
            kernel: name,
            message: format!("{label}: kernel built for {format}, matrix is {}", w.format),
        });
    }
    let outputs = w.rows / 2;
    check_len(name, "x", x, n * x_words)?;
    check_len(name, "y", y, n * outputs)?;
    let c = &w.chunks[0];
    // The shader counts outputs; its up rows are `outputs` after the gate rows.
    let params = MatrixParams {
        rows: outputs as u32,
        k: w.cols as u32,
        n: n as u32,
        out_offset: 0,
        out_stride: outputs as u32,
    };
    kernel.bind(
        gpu,
        label,
        bytemuck::bytes_of(&params),
        &MatrixBuffers {
            w_data: &c.data,
            w_scales: &c.scales,
            x,
            y,
            // Without a quantized output the kernel does not write it.
            yq: yq.unwrap_or(y),
        },
        grid(outputs),
    )
}

/// Binds a matrix kernel (matvec or matmul) once per chunk of `w`; `grid(rows)` is the
/// workgroup grid of a chunk of that many rows, `x_words` the 4-byte words of x per vector
/// (w.cols, or the quantized blocks' words).
pub(super) fn bind_matrix(
    name: &'static str,
    (kernel, format): (&Kernel, WeightFormat),
    gpu: &Gpu,
    label: &str,
    args: MatrixArgs,
    x_words: usize,
    grid: impl Fn(usize) -> (u32, u32, u32),
) -> Result<Vec<Dispatch>> {
    let MatrixArgs {
        w,
        x,
        y,
        y_offset,
        y_stride,
        n,
        ..
    } = args;
    if y_offset + w.rows > y_stride {
        return Err(Error::Shape {
            kernel: name,
            message: format!(
                "{label}: columns {y_offset}..{} of rows of {y_stride}",
                y_offset + w.rows
            ),
        });
    }
    if w.format != format {
        return Err(Error::Shape {
            kernel: name,
            message: format!("{label}: kernel built for {format}, matrix is {}", w.format),
        });
    }
    check_len(name, "x", x, n * x_words)?;
    check_len(name, "y", y, n * y_stride)?;
    w.chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let params = MatrixParams {
                rows: c.rows as u32,
                k: w.cols as u32,
                n: n as u32,
                out_offset: (y_offset + c.row_start) as u32,
                out_stride: y_stride as u32,
            };
            kernel.bind(
                gpu,
                &format!("{label}#{i}"),
                bytemuck::bytes_of(&params),
                &MatrixBuffers {
                    w_data: &c.data,
                    w_scales: &c.scales,
                    x,
                    y,
                    // Not written by these kernels.
                    yq: y,
                },
                grid(c.rows),
            )
        })
        .collect()
}
