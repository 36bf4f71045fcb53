//! The GPU types of a build without the `gpu` feature: uninhabited, so callers compile the
//! same code either way and [`super::open`] (which returns `None` here) is the only gate.

use std::ops::Range;
use std::sync::Arc;

use crate::error::Result;
use crate::model::{KvOp, Model, SeqPos, Window};

/// No value of this type exists in a CPU-only build.
pub enum Gpu {}

impl Gpu {
    pub fn name(&self) -> String {
        match *self {}
    }
}

pub struct GpuWindow(Gpu);

impl GpuWindow {
    pub fn new(gpu: Arc<Gpu>, _m: &Model, _layers: Range<usize>, _n_ctx: usize, _n_seq: usize) -> Result<GpuWindow> {
        match *gpu {}
    }
    pub fn gpu_bytes(&self) -> u64 {
        match self.0 {}
    }
}

impl Window for GpuWindow {
    fn forward(&mut self, _rows: &[SeqPos], _hidden: &mut Vec<f32>) -> Result<()> {
        match self.0 {}
    }
    fn kv(&mut self, _op: KvOp) -> Result<()> {
        match self.0 {}
    }
}
