//! Timing of dispatch sequences: GPU timestamps where the device has them, otherwise wall
//! time around a synchronised batch.

use super::{Dispatch, Gpu, Readback};
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// How a time was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Timestamp queries at the start and end of the compute pass.
    GpuTimestamps,
    /// Host time from submit to completion.
    Wall,
}

impl Gpu {
    /// Runs `dispatches` `reps` times in one compute pass (after one untimed warm-up pass) and
    /// returns the time per repetition.
    pub fn time(
        &self,
        label: &str,
        dispatches: &[&Dispatch],
        reps: u32,
    ) -> Result<(Duration, Clock)> {
        self.run(label, dispatches.iter().copied())?;
        let query = self.caps.timestamps.then(|| {
            let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some(label),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve, Readback::new(self, label, 16))
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: query.as_ref().map(|(set, _, _)| {
                    wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }
                }),
            });
            for _ in 0..reps {
                for d in dispatches {
                    d.encode(&mut pass);
                }
            }
        }
        if let Some((set, resolve, readback)) = &query {
            encoder.resolve_query_set(set, 0..2, resolve, 0);
            readback.copy_from(&mut encoder, resolve, 0);
        }
        let start = Instant::now();
        self.queue.submit([encoder.finish()]);
        self.wait()?;
        let wall = start.elapsed();
        let reps = reps.max(1);
        match &query {
            Some((_, _, readback)) => {
                let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&readback.read(self)?);
                let ns = ticks[1].saturating_sub(ticks[0]) as f64
                    * self.queue.get_timestamp_period() as f64;
                if ns <= 0.0 {
                    return Err(Error::Readback(format!(
                        "{label}: timestamps did not advance"
                    )));
                }
                Ok((
                    Duration::from_nanos((ns / reps as f64) as u64),
                    Clock::GpuTimestamps,
                ))
            }
            None => Ok((wall / reps, Clock::Wall)),
        }
    }
}
