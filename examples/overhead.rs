use gemma_wgpu::gpu::{BackendChoice, Gpu, GpuOptions};
use gemma_wgpu::kernels::{GpuMatrix, Matvec};
use gemma_wgpu::weights::HostMatrix;
use gemma_wgpu::weights::gguf::GgmlType::{self, *};
fn main() {
    let gpu = Gpu::new(&GpuOptions {
        backend: BackendChoice::Vulkan,
        ..Default::default()
    })
    .unwrap();
    let cases: &[(GgmlType, usize, usize, usize)] = &[
        (Q5_0, 1024, 640, 22),
        (Q5_0, 256, 640, 22),
        (Q8_0, 256, 640, 34),
        (Q4K, 640, 1024, 144),
        (Q5_0, 4096, 640, 22),
        (Q6K, 640, 2048, 210),
        (Q8_0, 262144, 640, 34),
        (F16, 4096, 640, 2),
    ];
    for &(ty, rows, cols, size) in cases {
        let per = ty.block().unwrap().0;
        let mut bytes: Vec<u8> = (0..rows * cols / per * size)
            .map(|i| (i * 7919 % 251) as u8)
            .collect();
        if ty != F16 {
            for b in bytes.chunks_mut(size) {
                b[0] = 0;
                b[1] = 0x1c;
                if size >= 4 {
                    b[2] = 0;
                    b[3] = 0x1c;
                }
                if size == 210 {
                    b[208] = 0;
                    b[209] = 0x1c;
                }
            }
        }
        let m = HostMatrix::from_ggml(ty, rows, cols, &bytes).unwrap();
        let w = GpuMatrix::upload(&gpu, "w", &m).unwrap();
        let x = gpu.storage_zeroed("x", cols as u64 * 4);
        let y = gpu.storage_zeroed("y", rows as u64 * 4);
        let d = Matvec::new(&gpu, m.format)
            .unwrap()
            .bind(&gpu, "mv", &w, &x, &y, 1)
            .unwrap();
        let refs: Vec<_> = d.iter().collect();
        let (t, _) = gpu.time("mv", &refs, 5).unwrap();
        println!(
            "{ty:?} {rows}x{cols}: {:.3} ms, {:.2} GB/s",
            t.as_secs_f64() * 1e3,
            w.bytes() as f64 / t.as_secs_f64() / 1e9
        );
    }
}
