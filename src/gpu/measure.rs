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
    /// One hidden state of `hidden_bytes` in and out (write, submit, read back), ms.
    pub upload_ms: f64,
    pub download_ms: f64,
    /// A copy within GPU memory (what a KV append is), GB/s.
    pub copy_gb_s: f64,
    /// Weight bytes read per second by the decode kernel, per format.
    pub matvec_gb_s: Vec<(GgmlType, f64)>,
}

/// Measure `gpu` with a `rows × cols` matrix per format in `formats` (4096 × 4096 is a
/// 7-8B model's attention matrix; keep it small on CPU drivers) and hidden states of
/// `hidden_bytes` (n_embd × 4).
pub fn measure(gpu: &Gpu, formats: &[GgmlType], rows: usize, cols: usize, hidden_bytes: usize) -> Result<GpuFigures> {
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
    let copy = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("copy probe target"),
        size: bytes as u64,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let t = Instant::now();
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&buf, 0, &copy, 0, bytes as u64);
    gpu.queue.submit([enc.finish()]);
    gpu.wait()?;
    let copy_gb_s = bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
    // A window's hidden state in and out, as a forward call does it: the median of 9.
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut back = vec![0u8; hidden_bytes];
    for _ in 0..9 {
        let t = Instant::now();
        gpu.queue.write_buffer(&buf, 0, &host[..hidden_bytes]);
        gpu.queue.submit([]);
        gpu.wait()?;
        up.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&buf, 0, &staging, 0, hidden_bytes as u64);
        gpu.queue.submit([enc.finish()]);
        gpu.read_back(&staging, hidden_bytes as u64, &mut back)?;
        down.push(t.elapsed().as_secs_f64() * 1e3);
    }

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
        upload_ms: median(&mut up),
        download_ms: median(&mut down),
        copy_gb_s,
        matvec_gb_s,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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

/// The GPU part of this device's profile (`prima bench --profile`), or `None` with a line
/// saying why. `memory_cap`: the configured `gpu_memory` (wgpu cannot tell free memory).
/// Matrices are 4096 × 4096 (1024 × 1024 on a CPU driver) of every format with a kernel.
pub fn profile(memory_cap: Option<u64>, progress: &mut dyn FnMut(&str)) -> Option<crate::profile::Gpu> {
    let gpu = match Gpu::open() {
        Ok(g) => g,
        Err(e) => {
            progress(&format!("gpu: none ({e})"));
            return None;
        }
    };
    // A CPU driver would put "GPU" layers on the CPU a second time: not a GPU for the planner
    // unless asked (the tests on lavapipe).
    if gpu.is_software() && std::env::var_os("PRIMA_GPU_SOFTWARE").is_none() {
        progress(&format!(
            "gpu: {} is a CPU driver, left out of the profile (PRIMA_GPU_SOFTWARE=1 keeps it)",
            gpu.name()
        ));
        return None;
    }
    let size = if gpu.is_software() { 1024 } else { 4096 };
    let f = match measure(&gpu, super::kernels::FORMATS, size, size, 4096 * 4) {
        Ok(f) => f,
        Err(e) => {
            progress(&format!("gpu: {} not measured ({e})", gpu.name()));
            return None;
        }
    };
    let flops: Vec<crate::profile::Throughput> = f
        .matvec_gb_s
        .iter()
        .filter_map(|&(ty, gbs)| {
            let row_bytes = ty.row_bytes(size)? as f64;
            // 2 flops per weight, `size / row_bytes` weights per byte read.
            Some(crate::profile::Throughput {
                format: ty.name().to_string(),
                threads: 0,
                gflops: gbs * 2.0 * size as f64 / row_bytes,
            })
        })
        .collect();
    let read_gbps = f.matvec_gb_s.iter().map(|m| m.1).fold(0.0, f64::max);
    // Integrated GPUs and CPU drivers use the RAM; their layers count against it.
    let uma = gpu.is_software() || gpu.is_integrated();
    let (mem_total, source) = match memory_cap {
        Some(cap) => (cap, "gpu_memory"),
        None if uma => (crate::sys::available_memory().unwrap_or(0), "shared RAM"),
        None => (0, "unknown: set gpu_memory"),
    };
    for t in &flops {
        progress(&format!("gpu {:>8}: {:8.2} GFLOPS", t.format, t.gflops));
    }
    progress(&format!(
        "gpu: {}{}, memory {:.2} GiB ({source}), read {read_gbps:.2} GB/s, hidden state in {:.3} ms / out {:.3} ms",
        f.name,
        if f.software { " (a CPU driver: its rates are the CPU's)" } else { "" },
        mem_total as f64 / (1u64 << 30) as f64,
        f.upload_ms,
        f.download_ms
    ));
    Some(crate::profile::Gpu {
        name: f.name,
        backend: f.backend,
        uma,
        mem_total,
        mem_free: mem_total,
        read_gbps,
        flops,
        // The KV append is a copy inside GPU memory recorded in the window's one submit.
        kv_append: crate::profile::KvAppend { fixed_us: 0.0, gbps: f.copy_gb_s },
        upload_ms: f.upload_ms,
        download_ms: f.download_ms,
    })
}
