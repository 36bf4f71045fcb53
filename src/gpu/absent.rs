//! The GPU types of a build without the `gpu` feature: uninhabited, so callers compile the
//! same code either way and [`super::open`] (which returns `None` here) is the only gate.

use std::ops::Range;
use std::sync::Arc;

use crate::error::Result;
use crate::model::Model;

/// No value of this type exists in a CPU-only build.
pub enum Gpu {}

impl Gpu {
    pub fn name(&self) -> String {
        match *self {}
    }
}

pub struct GpuWindow(Gpu);

impl GpuWindow {
    pub fn new(gpu: Arc<Gpu>, _m: &Model, _layers: Range<usize>, _n_ctx: usize) -> Result<GpuWindow> {
        match *gpu {}
    }
    pub fn forward(&mut self, _hidden: &mut [f32], _n_tokens: usize, _pos: usize) -> Result<()> {
        match self.0 {}
    }
    pub fn layers(&self) -> Range<usize> {
        match self.0 {}
    }
    pub fn n_ctx(&self) -> usize {
        match self.0 {}
    }
    pub fn kv_len(&self) -> usize {
        match self.0 {}
    }
    pub fn kv_truncate(&mut self, _len: usize) {
        match self.0 {}
    }
    pub fn gpu_bytes(&self) -> u64 {
        match self.0 {}
    }
}
