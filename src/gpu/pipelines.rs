//! Compute pipelines, built once per window at load: one per op and one decode + one prefill
//! pipeline per weight format present. Each kind has an explicit bind-group layout (auto
//! layouts cannot be shared between the decode and prefill variants of a format).

use std::collections::HashMap;

use super::device::Gpu;
use super::kernels::{self, Op, PREFILL_TILE};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// How a shader binds one slot.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// The bindings of each kernel, in binding order (see the `@binding` lines in kernels/).
pub(crate) fn slots(op: Option<Op>) -> &'static [Slot] {
    use Slot::*;
    match op {
        None => &[Read, Uniform, Uniform, Read, ReadWrite],
        Some(Op::RmsNorm) => &[Uniform, Uniform, Read, Read, ReadWrite],
        Some(Op::Rope) => &[Uniform, Uniform, Read, ReadWrite],
        Some(Op::Attention) => &[Uniform, Uniform, Read, Read, Read, ReadWrite, Read],
        Some(Op::SiluMul) | Some(Op::Add) => &[Uniform, Uniform, ReadWrite, Read],
    }
}

pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

pub(crate) struct Pipelines {
    ops: Vec<(Op, Kernel)>,
    /// Every matrix kernel shares one layout, so one bind group serves decode and prefill.
    matmul_layout: wgpu::BindGroupLayout,
    matmul: HashMap<(GgmlType, bool), wgpu::ComputePipeline>,
}

impl Pipelines {
    pub fn new(gpu: &Gpu, formats: &[GgmlType]) -> Result<Pipelines> {
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut ops = Vec::new();
        for op in Op::ALL {
            let layout = layout(gpu, &format!("{op:?}"), slots(Some(op)));
            let pipeline = pipeline(gpu, &format!("{op:?}"), &op.source(), &layout);
            ops.push((op, Kernel { pipeline, layout }));
        }
        let matmul_layout = layout(gpu, "matmul", slots(None));
        let mut matmul = HashMap::new();
        for &ty in formats {
            for prefill in [false, true] {
                let tile = if prefill { PREFILL_TILE } else { 1 };
                let src = kernels::matmul_source(ty, tile).ok_or_else(|| kernels::unsupported("(matrix)", ty))?;
                matmul.insert((ty, prefill), pipeline(gpu, &format!("matmul {ty} x{tile}"), &src, &matmul_layout));
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::msg(format!("GPU `{}` rejected a kernel: {e}", gpu.name())));
        }
        Ok(Pipelines { ops, matmul_layout, matmul })
    }

    pub fn op(&self, op: Op) -> &Kernel {
        &self.ops.iter().find(|(o, _)| *o == op).expect("every op is built").1
    }

    /// The decode (one token) or prefill (token tiles) kernel for weights of type `ty`.
    pub fn matmul(&self, ty: GgmlType, prefill: bool) -> &wgpu::ComputePipeline {
        &self.matmul[&(ty, prefill)]
    }

    pub fn matmul_layout(&self) -> &wgpu::BindGroupLayout {
        &self.matmul_layout
    }
}

fn layout(gpu: &Gpu, label: &str, slots: &[Slot]) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match s {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    gpu.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries })
}

fn pipeline(gpu: &Gpu, label: &str, src: &str, layout: &wgpu::BindGroupLayout) -> wgpu::ComputePipeline {
    let d = &gpu.device;
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pl = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(&pl),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}
