//! `-ngl N` / `gpu_layers = N`, as in llama.cpp: the last N layers of each window run on the
//! GPU, the first ones on the CPU. [`Offload::window`] opens one [`Window`] per layer range
//! (a [`SplitWindow`] when both share it), so a pipeline or a ring worker sees one window per
//! range whatever the split. The output head stays on the CPU (its matrix is the largest
//! tensor and rarely fits one binding; said once by [`Offload::pipeline`]).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::{Gpu, GpuWindow};
use crate::cpu::pool::ThreadPool;
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::model::{KvOp, LayerWindow, Model, Pipeline, SeqPos, Window};

/// Where the layers of each window run.
#[derive(Clone, Default)]
pub struct Offload {
    gpu: Option<Arc<Gpu>>,
    layers: usize,
}

impl Offload {
    /// Everything on the CPU.
    pub fn cpu() -> Offload {
        Offload::default()
    }

    /// The last `gpu_layers` layers of each window on this device's GPU; when there is none
    /// (or the build has no GPU support) one line says so and everything runs on the CPU.
    pub fn open(gpu_layers: usize) -> Offload {
        if gpu_layers == 0 {
            return Offload::cpu();
        }
        Offload { gpu: super::open(), layers: gpu_layers }
    }

    /// The last `gpu_layers` layers of each window on `gpu`.
    pub fn on(gpu: Arc<Gpu>, gpu_layers: usize) -> Offload {
        Offload { gpu: Some(gpu), layers: gpu_layers }
    }

    /// The GPU's name, if there is one.
    pub fn gpu_name(&self) -> Option<String> {
        self.gpu.as_ref().map(|g| g.name())
    }

    /// Layers per window that go to the GPU (0 without one).
    pub fn gpu_layers(&self) -> usize {
        if self.gpu.is_some() { self.layers } else { 0 }
    }

    /// Layers `layers` of `m` with a KV cache of `n_seq` sequences of `n_ctx` positions: the
    /// last [`Offload::gpu_layers`] on the GPU. Layers the GPU cannot take (a format without a
    /// kernel, a cache beyond a binding) stay on the CPU with a line naming the reason.
    pub fn window(
        &self,
        m: &Model,
        layers: Range<usize>,
        n_ctx: usize,
        n_seq: usize,
        pool: &Arc<ThreadPool>,
    ) -> Result<Box<dyn Window>> {
        let cpu_only = |r: Range<usize>| -> Result<Box<dyn Window>> {
            Ok(Box::new(LayerWindow::new(m, r, n_ctx, n_seq, pool.clone())?))
        };
        let n_gpu = self.gpu_layers().min(layers.len());
        let Some(g) = self.gpu.as_ref().filter(|_| n_gpu > 0) else { return cpu_only(layers) };
        let split = layers.end - n_gpu;
        let gpu = match GpuWindow::new(g.clone(), m, split..layers.end, n_ctx, n_seq) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("GPU: layers {split}..{} stay on the CPU: {e}", layers.end);
                return cpu_only(layers);
            }
        };
        eprintln!("GPU: layers {split}..{} on {} ({} MiB)", layers.end, g.name(), gpu.gpu_bytes() >> 20);
        let cpu = match split > layers.start {
            true => Some(LayerWindow::new(m, layers.start..split, n_ctx, n_seq, pool.clone())?),
            false => None,
        };
        Ok(Box::new(SplitWindow { cpu, gpu }))
    }

    /// [`Pipeline::open`] with the last layers of each window on the GPU.
    pub fn pipeline(&self, m: &Model, n_ctx: usize, n_seq: usize, threads: usize, sizes: &[usize]) -> Result<Pipeline> {
        let p = Pipeline::open_with(m, n_ctx, n_seq, threads, sizes, &|r, pool| self.window(m, r, n_ctx, n_seq, pool))?;
        if self.gpu_layers() > 0 {
            eprintln!("GPU: the output head (norm, output matrix) stays on the CPU");
        }
        Ok(p)
    }
}

/// A window whose first layers run on the CPU and the rest on the GPU.
pub struct SplitWindow {
    cpu: Option<LayerWindow>,
    gpu: GpuWindow,
}

impl Window for SplitWindow {
    fn forward(&mut self, rows: &[SeqPos], hidden: &mut Vec<f32>) -> Result<()> {
        if let Some(c) = &mut self.cpu {
            c.run(rows, hidden)?;
        }
        self.gpu.forward(rows, hidden)
    }

    fn kv(&mut self, op: KvOp) -> Result<()> {
        if let Some(c) = &mut self.cpu {
            Window::kv(c, op)?;
        }
        self.gpu.kv(op)
    }

    /// The CPU part's weights (the GPU's were copied at load; the map may drop them).
    fn mapped(&self) -> Option<(GgufFile, Vec<Range<usize>>)> {
        self.cpu.as_ref().and_then(|c| c.mapped())
    }

    fn set_progress(&mut self, progress: Arc<AtomicUsize>) {
        if let Some(c) = &mut self.cpu {
            c.set_progress(progress);
        }
    }
}
