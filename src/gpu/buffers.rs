//! Buffer creation and readback.

use super::Gpu;
use crate::{Error, Result};
use wgpu::util::DeviceExt;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// wgpu wants non-empty buffers whose size is a multiple of 4.
fn padded(len: u64) -> u64 {
    len.max(4).next_multiple_of(4)
}

impl Gpu {
    /// A storage buffer holding `bytes` (padded with zeros to a multiple of 4).
    pub fn storage_init(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        if bytes.len() as u64 == padded(bytes.len() as u64) {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: STORAGE,
                })
        } else {
            let mut data = bytes.to_vec();
            data.resize(padded(bytes.len() as u64) as usize, 0);
            self.storage_init(label, &data)
        }
    }

    /// A zero-filled storage buffer of `size` bytes (at least 4).
    pub fn storage_zeroed(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: padded(size),
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer holding `bytes`.
    pub fn uniform_init(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let mut data = bytes.to_vec();
        data.resize(data.len().max(16).next_multiple_of(16), 0);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &data,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
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
pub struct Readback {
    staging: wgpu::Buffer,
}

impl Readback {
    pub fn new(gpu: &Gpu, label: &str, size: u64) -> Readback {
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: padded(size),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
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
        let (tx, rx) = std::sync::mpsc::channel();
        self.staging
            .map_async(wgpu::MapMode::Read, .., move |r| drop(tx.send(r)));
        gpu.wait()?;
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
