//! Buffer creation and readback.
//!
//! Every buffer is made under an out-of-memory error scope: one that does not fit is recorded
//! as a [`Fault`] naming it (wgpu would panic), and the caller's next check returns it as an
//! error. Such a buffer is invalid, and is never mapped.

use super::{Fault, Gpu};
use crate::{Error, Result};
use std::sync::atomic::Ordering;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// wgpu wants non-empty buffers whose size is a multiple of 4.
fn padded(len: u64) -> u64 {
    len.max(4).next_multiple_of(4)
}

impl Gpu {
    /// A buffer of `size` bytes (a multiple of 4), holding `contents` when given (the rest
    /// zero). Out of memory, or past the emulated limit, the fault is recorded and the
    /// buffer returned is unusable.
    fn buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
        contents: Option<&[u8]>,
    ) -> wgpu::Buffer {
        let total = self.allocated.fetch_add(size, Ordering::Relaxed) + size;
        if self.max_memory.is_some_and(|limit| total > limit) {
            self.faults.record(Fault::OutOfMemory {
                label: label.to_string(),
                bytes: size,
            });
            return self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4,
                usage,
                mapped_at_creation: false,
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: contents.is_some(),
        });
        if pollster::block_on(scope.pop()).is_some() {
            self.faults.record(Fault::OutOfMemory {
                label: label.to_string(),
                bytes: size,
            });
            return buffer;
        }
        if let Some(bytes) = contents {
            match buffer.get_mapped_range_mut(..) {
                Ok(mut view) => view.slice(..bytes.len()).copy_from_slice(bytes),
                Err(e) => self.faults.record(Fault::Other(format!("{label}: {e}"))),
            }
            buffer.unmap();
        }
        buffer
    }

    /// A storage buffer holding `bytes` (padded with zeros to a multiple of 4).
    pub fn storage_init(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let size = padded(bytes.len() as u64);
        self.buffer(label, size, STORAGE, Some(bytes))
    }

    /// A zero-filled storage buffer of `size` bytes (at least 4).
    pub fn storage_zeroed(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.buffer(label, padded(size), STORAGE, None)
    }

    /// A uniform buffer holding `bytes`.
    pub fn uniform_init(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let size = (bytes.len().max(16).next_multiple_of(16)) as u64;
        let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        self.buffer(label, size, usage, Some(bytes))
    }

    /// Copies a whole buffer back to the host and waits for it. For tests and tools: the decode
    /// loop uses a [`Readback`] made once instead.
    pub fn read_bytes(&self, buffer: &wgpu::Buffer) -> Result<Vec<u8>> {
        let readback = Readback::new(self, "read_bytes", buffer.size());
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read_bytes"),
            });
        readback.copy_from(&mut encoder, buffer, 0);
        self.queue.submit([encoder.finish()]);
        readback.read(self)
    }

    pub fn read_f32(&self, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(buffer)?))
    }

    pub fn read_u32(&self, buffer: &wgpu::Buffer) -> Result<Vec<u32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(buffer)?))
    }
}

/// A mappable staging buffer made once and reused for every readback of a few bytes.
#[derive(Clone)]
pub struct Readback {
    pub(super) staging: wgpu::Buffer,
}

impl Readback {
    pub fn new(gpu: &Gpu, label: &str, size: u64) -> Readback {
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let staging = gpu.buffer(label, padded(size), usage, None);
        Readback { staging }
    }

    /// Records a copy of `src[offset..offset + size of this readback]`.
    pub fn copy_from(&self, encoder: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, offset: u64) {
        let size = self.staging.size().min(src.size() - offset);
        encoder.copy_buffer_to_buffer(src, offset, &self.staging, 0, size);
    }

    /// Records a copy of all of `src` to byte `offset` of the staging buffer.
    pub fn copy_at(&self, encoder: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, offset: u64) {
        let size = src.size().min(self.staging.size() - offset);
        encoder.copy_buffer_to_buffer(src, 0, &self.staging, offset, size);
    }

    /// Waits for the copy and returns the bytes.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        self.read_after(gpu, None)
    }

    /// As [`Readback::read`], waiting only for submission `index` (the one that copied
    /// here), not for any submitted after it; `None` waits for all.
    pub fn read_after(&self, gpu: &Gpu, index: Option<wgpu::SubmissionIndex>) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.staging
            .map_async(wgpu::MapMode::Read, .., move |r| drop(tx.send(r)));
        gpu.wait_for(index)?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let bytes = self
            .staging
            .get_mapped_range(..)
            .map_err(|e| Error::Readback(e.to_string()))?
            .to_vec();
        self.staging.unmap();
        Ok(bytes)
    }
}
