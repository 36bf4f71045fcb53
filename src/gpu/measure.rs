//! GPU figures for the device profile (`prima bench --profile`, owned by src/profile): adapter,
//! memory limits, host↔GPU copy rates and the matrix-vector read rate per weight format.
//! On a CPU driver (lavapipe) the rates describe the CPU, not a GPU.

use std::time::Instant;

use super::device::Gpu;
use super::oneshot;
use crate::error::Result;
use crate::quant::{self, GgmlType};

#[derive(Clone, Debug)]
pub struct GpuFigures {
    pub name: String,
    pub backend: String,
    /// A CPU driver such as lavapipe.
    pub software: bool,
    /// Largest single binding (one tensor part) in bytes.
    pub max_binding_bytes: u64,
    pub upload_gb_s: f64,
    pub download_gb_s: f64,
    /// Weight bytes read per second by the decode kernel, per format.
    pub matvec_gb_s: Vec<(GgmlType, f64)>,
}

/// Measure `gpu` with a `rows × cols` matrix per format in `formats` (4096 × 4096 is a
/// 7-8B model's attention matrix; keep it small on CPU drivers).
pub fn measure(gpu: &Gpu, formats: &[GgmlType], rows: usize, cols: usize) -> Result<GpuFigures> {
    let bytes = 64usize << 20;
    let host = vec![0x3cu8; bytes];
    let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("copy probe"),
        size: bytes as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("copy probe read-back"),
        size: bytes as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let t = Instant::now();
    gpu.queue.write_buffer(&buf, 0, &host);
    gpu.queue.submit([]);
    gpu.wait()?;
    let upload = bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
    let mut back = vec![0u8; bytes];
    let t = Instant::now();
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&buf, 0, &staging, 0, bytes as u64);
    gpu.queue.submit([enc.finish()]);
    gpu.read_back(&staging, bytes as u64, &mut back)?;
    let download = bytes as f64 / t.elapsed().as_secs_f64() / 1e9;

    let mut matvec_gb_s = Vec::new();
    let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    for &ty in formats {
        let Some(row_bytes) = ty.row_bytes(cols) else { continue };
        let w = weights(ty, rows, cols, row_bytes);
        // Setup (buffers, pipeline, first-dispatch compile) cancels out of the difference.
        let time = |repeats: usize| -> Result<f64> {
            let t = Instant::now();
            oneshot::matmul(gpu, ty, &w, rows, cols, &x, 1, repeats)?;
            Ok(t.elapsed().as_secs_f64())
        };
        time(1)?;
        let (one, many) = (time(1)?, time(9)?);
        let per = ((many - one) / 8.0).max(1e-9);
        matvec_gb_s.push((ty, w.len() as f64 / per / 1e9));
    }
    Ok(GpuFigures {
        name: gpu.name(),
        backend: gpu.backend(),
        software: gpu.is_software(),
        max_binding_bytes: gpu.max_binding_bytes(),
        upload_gb_s: upload,
        download_gb_s: download,
        matvec_gb_s,
    })
}

/// A matrix of `ty` with sane scales (quantized noise where the format has a quantizer).
fn weights(ty: GgmlType, rows: usize, cols: usize, row_bytes: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..cols).map(|i| ((i * 7919 % 255) as f32 - 127.0) / 127.0).collect();
    let mut w = vec![0u8; rows * row_bytes];
    if quant::can_quantize_weights(ty) {
        for r in w.chunks_exact_mut(row_bytes) {
            quant::quantize_weights(ty, &x, r);
        }
    }
    w
}
