//! Single kernels run once on host data: the GPU tests compare each against the CPU's scalar
//! reference, and [`super::measure`] times them. Slow by design (buffers made per call).

use super::arena::ArenaPlan;
use super::device::{Gpu, f32_bytes, f32_bytes_mut};
use super::kernels::{self, Op, PREFILL_TILE};
use super::pipelines::{Pipelines, Slot, slots};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// `y[t][r] = Σ_c W[r][c] · x[t][c]` for `n` tokens, `w` the raw GGUF bytes of `rows` rows of
/// `ty`. One token runs the decode kernel, more the prefill kernel. With `repeats` > 1 the
/// dispatch is recorded that many times in one submit (for timing).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    gpu: &Gpu,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    repeats: usize,
) -> Result<Vec<f32>> {
    if !kernels::FORMATS.contains(&ty) {
        return Err(kernels::unsupported("(matrix)", ty));
    }
    let row_bytes =
        ty.row_bytes(cols).filter(|_| cols.is_multiple_of(32)).ok_or_else(|| Error::msg("bad row length"))?;
    if w.len() != rows * row_bytes || x.len() != n * cols {
        return Err(Error::msg("matmul: operand sizes do not match the shape"));
    }
    let pipelines = Pipelines::new(gpu, &[ty])?;
    let mut plan = ArenaPlan::new(gpu, gpu.limits().min_storage_buffer_offset_alignment);
    let piece = plan.reserve(w.len() as u64)?;
    let arena = plan.build(gpu, "weights", wgpu::BufferUsages::STORAGE);
    arena.write(gpu, piece, w, &mut 0)?;
    let shape = uniform(gpu, &[rows as u32, cols as u32, row_bytes as u32, 0, rows as u32, 0, 0, 0]);
    let step = uniform(gpu, &[n as u32, 0, 0, 0]);
    let xb = storage(gpu, f32_bytes(x));
    let mut y = vec![0f32; n * rows];
    let yb = storage(gpu, f32_bytes(&y));
    let bind = bind(
        gpu,
        pipelines.matmul_layout(),
        &[
            arena.binding(piece),
            shape.as_entire_binding(),
            step.as_entire_binding(),
            xb.as_entire_binding(),
            yb.as_entire_binding(),
        ],
    );
    let tile = if n > 1 { PREFILL_TILE } else { 1 };
    let x_groups = rows.min(65535) as u32;
    let grid = (x_groups, rows.div_ceil(x_groups as usize) as u32, n.div_ceil(tile as usize) as u32);
    run(gpu, pipelines.matmul(ty, n > 1), &bind, grid, repeats, &yb, f32_bytes_mut(&mut y))?;
    Ok(y)
}

/// Run `op` once with its shape uniform `shape`, the step (`n_tokens`) and the storage
/// operands `bufs` in the kernel's binding order (u32 operands as their bits in f32s); the
/// operand the kernel writes is read back into `bufs`. `grid` is the number of workgroups.
pub fn op(
    gpu: &Gpu,
    op: Op,
    shape: &[u32],
    n_tokens: usize,
    bufs: &mut [&mut [f32]],
    grid: (u32, u32, u32),
) -> Result<()> {
    let pipelines = Pipelines::new(gpu, &[])?;
    let kernel = pipelines.op(op);
    let storage_slots = &slots(Some(op))[2..];
    if storage_slots.len() != bufs.len() {
        return Err(Error::msg(format!("{op:?} takes {} operands", storage_slots.len())));
    }
    let shape = uniform(gpu, shape);
    let step = uniform(gpu, &[n_tokens as u32, 0, 0, 0]);
    let buffers: Vec<wgpu::Buffer> = bufs.iter().map(|b| storage(gpu, f32_bytes(b))).collect();
    let mut entries = vec![shape.as_entire_binding(), step.as_entire_binding()];
    entries.extend(buffers.iter().map(|b| b.as_entire_binding()));
    let bind = bind(gpu, &kernel.layout, &entries);
    let mut written = None;
    for (i, s) in storage_slots.iter().enumerate() {
        if matches!(s, Slot::ReadWrite) {
            written = Some(i);
        }
    }
    let w = written.expect("every op writes an operand");
    run(gpu, &kernel.pipeline, &bind, grid, 1, &buffers[w], f32_bytes_mut(bufs[w]))
}

fn uniform(gpu: &Gpu, words: &[u32]) -> wgpu::Buffer {
    let mut bytes: Vec<u8> = words.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes.resize(bytes.len().next_multiple_of(16), 0);
    let b = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("shape"),
        size: bytes.len() as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue.write_buffer(&b, 0, &bytes);
    b
}

fn storage(gpu: &Gpu, bytes: &[u8]) -> wgpu::Buffer {
    let b = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("operand"),
        size: (bytes.len() as u64).max(16).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue.write_buffer(&b, 0, bytes);
    b
}

fn bind(gpu: &Gpu, layout: &wgpu::BindGroupLayout, resources: &[wgpu::BindingResource]) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| wgpu::BindGroupEntry { binding: i as u32, resource: r.clone() })
        .collect();
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries })
}

fn run(
    gpu: &Gpu,
    pipeline: &wgpu::ComputePipeline,
    bind: &wgpu::BindGroup,
    (x, y, z): (u32, u32, u32),
    repeats: usize,
    out: &wgpu::Buffer,
    host: &mut [u8],
) -> Result<()> {
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read-back"),
        size: (host.len() as u64).next_multiple_of(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind, &[]);
        for _ in 0..repeats.max(1) {
            pass.dispatch_workgroups(x, y, z);
        }
    }
    enc.copy_buffer_to_buffer(out, 0, &staging, 0, staging.size());
    gpu.queue.submit([enc.finish()]);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::msg(format!("GPU `{}` rejected the dispatch: {e}", gpu.name())));
    }
    gpu.read_back(&staging, staging.size(), host)
}
