//! The adapter and device: picked once per process, with the adapter's own limits (the WebGPU
//! defaults cap a binding at 128 MiB and a buffer at 256 MiB, far below real GPUs).

use crate::error::{Error, Result};

pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
}

impl Gpu {
    /// The first high-performance adapter of Vulkan, Metal or DX12 (`WGPU_BACKEND`,
    /// `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF` override the choice).
    pub fn open() -> Result<Gpu> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if std::env::var_os("WGPU_BACKEND").is_none() {
            desc.backends = wgpu::Backends::PRIMARY;
        }
        let instance = wgpu::Instance::new(desc);
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
            ..Default::default()
        };
        let adapter = pollster::block_on(async {
            match std::env::var("WGPU_ADAPTER_NAME") {
                Ok(want) => {
                    let want = want.to_lowercase();
                    let all = instance.enumerate_adapters(desc_backends()).await;
                    all.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&want)).ok_or_else(|| {
                        Error::msg(format!("no GPU adapter's name contains `{want}` (WGPU_ADAPTER_NAME)"))
                    })
                }
                Err(_) => instance
                    .request_adapter(&options)
                    .await
                    .map_err(|e| Error::msg(format!("no GPU adapter (Vulkan/Metal/DX12 driver) found: {e}"))),
            }
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("prima"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::msg(format!("GPU `{}`: cannot open the device: {e}", info.name)))?;
        Ok(Gpu { device, queue, info, limits })
    }

    /// "NVIDIA GeForce RTX 3080 (Vulkan)".
    pub fn name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// A CPU rasteriser such as Mesa's lavapipe: correct, never fast.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// A GPU sharing the host's RAM (an integrated one).
    pub fn is_integrated(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::IntegratedGpu
    }

    pub fn backend(&self) -> String {
        format!("{:?}", self.info.backend)
    }

    pub(crate) fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Largest storage binding (a tensor part) and buffer (an arena block) this adapter takes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Wait for all submitted work; a lost device becomes an error.
    pub(crate) fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::msg(format!("GPU `{}`: {e}", self.info.name)))
    }

    /// Copy `size` bytes of `src` (from offset 0) back to the host through a mappable buffer.
    pub(crate) fn read_back(&self, staging: &wgpu::Buffer, size: u64, out: &mut [u8]) -> Result<()> {
        let slice = staging.slice(..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::msg("GPU read-back was dropped"))?
            .map_err(|e| Error::msg(format!("GPU read-back failed: {e}")))?;
        {
            let view = slice.get_mapped_range().map_err(|e| Error::msg(format!("GPU read-back failed: {e}")))?;
            out.copy_from_slice(&view[..out.len()]);
        }
        staging.unmap();
        Ok(())
    }
}

fn desc_backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

/// f32 slices as the bytes the GPU buffers hold (little-endian hosts: all wgpu targets).
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns; the length is in bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

pub(crate) fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}
