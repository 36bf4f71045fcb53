//! GPU offload through wgpu (cargo feature `gpu`): the WGSL kernels of `kernels/`, an adapter,
//! and [`GpuWindow`], a window of layers run on the GPU with the CPU window's interface.
//!
//! ```text
//!  kernels (WGSL sources, expanded; no wgpu) ──► pipelines ──► window ◄── arena ◄── device
//! ```
//! Without the feature, or without an adapter, [`open`] says so in one line and returns
//! `None`: everything runs on the CPU.

pub mod kernels;
mod offload;

pub use offload::{Offload, SplitWindow};

#[cfg(not(feature = "gpu"))]
mod absent;
#[cfg(not(feature = "gpu"))]
pub use absent::{Gpu, GpuWindow};

#[cfg(feature = "gpu")]
mod arena;
#[cfg(feature = "gpu")]
mod device;
#[cfg(feature = "gpu")]
mod measure;
#[cfg(feature = "gpu")]
pub mod oneshot;
#[cfg(feature = "gpu")]
mod pipelines;
#[cfg(feature = "gpu")]
mod window;

#[cfg(feature = "gpu")]
pub use device::Gpu;
#[cfg(feature = "gpu")]
pub use measure::{GpuFigures, measure, profile};
#[cfg(feature = "gpu")]
pub use window::{DEFAULT_MAX_BATCH, GpuWindow};

/// The GPU for `-ngl`/`gpu_layers`, or `None` with one line on stderr saying why everything
/// runs on the CPU (no adapter, a driver error, or a build without the `gpu` feature).
#[cfg(feature = "gpu")]
pub fn open() -> Option<std::sync::Arc<Gpu>> {
    match Gpu::open() {
        Ok(g) => {
            let soft = if g.is_software() { " (a CPU driver: correct, not fast)" } else { "" };
            eprintln!("GPU: {}{soft}", g.name());
            Some(std::sync::Arc::new(g))
        }
        Err(e) => {
            eprintln!("GPU: none usable ({e}); running on the CPU");
            None
        }
    }
}

/// The GPU part of a device profile: none in a build without GPU support.
#[cfg(not(feature = "gpu"))]
pub fn profile(_memory_cap: Option<u64>, progress: &mut dyn FnMut(&str)) -> Option<crate::profile::Gpu> {
    progress("gpu: this build has no GPU support (built without the `gpu` feature)");
    None
}

#[cfg(not(feature = "gpu"))]
pub fn open() -> Option<std::sync::Arc<Gpu>> {
    eprintln!("GPU: this build has no GPU support (built without the `gpu` feature); running on the CPU");
    None
}
