//! Recording a step into one command buffer: dispatches grouped into labelled compute passes,
//! with the copies between them; or, to profile, each dispatch in a pass of its own between
//! two GPU timestamps.

use super::{Dispatch, Gpu, Readback};
use crate::{Error, Result};
use std::time::Duration;

/// Records dispatches and copies; the only place outside kernels' tests that opens encoders
/// and passes.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    /// The label the next pass opens with.
    pass_label: String,
    timed: Option<Timed>,
}

/// Timestamps around every dispatch: queries 2i and 2i + 1 for the i-th, in sets of
/// [`QUERIES_PER_SET`] made as needed.
struct Timed {
    sets: Vec<wgpu::QuerySet>,
    /// (kernel, dispatch label) of each timed dispatch, in order.
    dispatches: Vec<(String, String)>,
}

/// Queries per set (wgpu allows at most 4096).
const QUERIES_PER_SET: u32 = 256;

/// A dispatch's GPU time in a profile.
#[derive(Clone, Debug)]
pub struct TimedDispatch {
    /// The kernel's pipeline label (`matvec.q8_0`, `rms_norm`): what profiles group by.
    pub kernel: String,
    /// The dispatch's own label (`L07.q#0`).
    pub label: String,
    pub time: Duration,
}

impl Gpu {
    /// A recorder for one command buffer.
    pub fn recorder(&self, label: &str) -> Recorder<'_> {
        let encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        Recorder {
            gpu: self,
            encoder,
            pass: None,
            pass_label: label.to_string(),
            timed: None,
        }
    }

    /// A recorder that times each dispatch (needs TIMESTAMP_QUERY);
    /// [`Recorder::finish_timed`] returns the times.
    pub fn timed_recorder(&self, label: &str) -> Result<Recorder<'_>> {
        if !self.caps.timestamps {
            return Err(Error::MissingFeature {
                what: "a profile",
                feature: "TIMESTAMP_QUERY",
                adapter: self.describe(),
            });
        }
        let mut r = self.recorder(label);
        r.timed = Some(Timed {
            sets: vec![],
            dispatches: vec![],
        });
        Ok(r)
    }
}

impl Recorder<'_> {
    /// Dispatches from here on go to a new pass labelled `label` ("layer 7", "head").
    pub fn begin_pass(&mut self, label: &str) {
        self.pass = None;
        self.pass_label = label.to_string();
    }

    /// Records `d` (nothing for an empty grid).
    pub fn dispatch(&mut self, d: &Dispatch) {
        if d.is_empty() {
            return;
        }
        if let Some(t) = &mut self.timed {
            let i = 2 * t.dispatches.len() as u32;
            let (set, at) = ((i / QUERIES_PER_SET) as usize, i % QUERIES_PER_SET);
            if set == t.sets.len() {
                t.sets
                    .push(self.gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("profile"),
                        ty: wgpu::QueryType::Timestamp,
                        count: QUERIES_PER_SET,
                    }));
            }
            let mut pass = self
                .encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(d.label()),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &t.sets[set],
                        beginning_of_pass_write_index: Some(at),
                        end_of_pass_write_index: Some(at + 1),
                    }),
                });
            d.encode(&mut pass);
            t.dispatches
                .push((d.kernel().to_string(), d.label().to_string()));
            return;
        }
        let label = &self.pass_label;
        let encoder = &mut self.encoder;
        let pass = self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: None,
                })
                .forget_lifetime()
        });
        d.encode(pass);
    }

    /// Records every dispatch of `dispatches`, in order.
    pub fn dispatch_all<'a>(&mut self, dispatches: impl IntoIterator<Item = &'a Dispatch>) {
        for d in dispatches {
            self.dispatch(d);
        }
    }

    /// Copies `bytes` bytes of `src` at `src_offset` to `dst` at `dst_offset` (after the
    /// dispatches recorded so far).
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    ) {
        self.pass = None;
        self.encoder
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
    }

    /// Copies all of `src` (as much as fits) to byte `offset` of `readback`.
    pub fn read_back(&mut self, readback: &Readback, src: &wgpu::Buffer, offset: u64) {
        self.pass = None;
        readback.copy_at(&mut self.encoder, src, offset);
    }

    /// Copies the first `bytes` bytes of `src` to byte `offset` of `readback`.
    pub fn copy_to_readback(
        &mut self,
        readback: &Readback,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) {
        self.copy(src, 0, &readback.staging, offset, bytes);
    }

    /// Copies `bytes` bytes of `src` from byte `src_offset` to byte `offset` of `readback`.
    pub fn copy_part_to_readback(
        &mut self,
        readback: &Readback,
        (src, src_offset): (&wgpu::Buffer, u64),
        offset: u64,
        bytes: u64,
    ) {
        self.copy(src, src_offset, &readback.staging, offset, bytes);
    }

    /// Submits the command buffer (without waiting for it); its index is what
    /// [`Gpu::wait_for`] waits for.
    pub fn submit(mut self) -> wgpu::SubmissionIndex {
        self.pass = None;
        let gpu = self.gpu;
        let index = gpu.queue.submit([self.encoder.finish()]);
        gpu.submitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        index
    }

    /// Submits the command buffer, waits, and returns each timed dispatch's GPU time.
    pub fn finish_timed(mut self) -> Result<Vec<TimedDispatch>> {
        self.pass = None;
        let gpu = self.gpu;
        let t = self.timed.take().expect("a timed recorder");
        let used = 2 * t.dispatches.len() as u32;
        if used == 0 {
            gpu.queue.submit([self.encoder.finish()]);
            return Ok(vec![]);
        }
        let bytes = 8 * (t.sets.len() as u32 * QUERIES_PER_SET) as u64;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile.resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = Readback::new(gpu, "profile.readback", bytes);
        for (i, set) in t.sets.iter().enumerate() {
            let n = (used - i as u32 * QUERIES_PER_SET).min(QUERIES_PER_SET);
            let offset = 8 * (i as u32 * QUERIES_PER_SET) as u64;
            self.encoder.resolve_query_set(set, 0..n, &resolve, offset);
        }
        readback.copy_from(&mut self.encoder, &resolve, 0);
        gpu.queue.submit([self.encoder.finish()]);
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&readback.read(gpu)?);
        let period = gpu.queue.get_timestamp_period() as f64;
        Ok(t.dispatches
            .into_iter()
            .zip(ticks.chunks_exact(2))
            .map(|((kernel, label), t)| TimedDispatch {
                kernel,
                label,
                time: Duration::from_nanos((t[1].saturating_sub(t[0]) as f64 * period) as u64),
            })
            .collect())
    }
}
