//! Arena buffers: a window's weights and constants copied once into a few large buffers, each
//! piece at a binding-aligned offset (GGUF aligns tensors to 32 bytes, WebGPU binding offsets
//! to 256), every piece within the adapter's binding size and every block within its buffer
//! size. Tensors larger than a binding are split into row ranges by the caller.

use std::num::NonZeroU64;

use super::device::Gpu;
use crate::error::{Error, Result};

/// A piece of an arena: which block, where, how many bytes (a multiple of 4).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    block: usize,
    offset: u64,
    size: u64,
}

/// Pieces are planned first (sizes only), then the blocks are created and filled.
pub(crate) struct ArenaPlan {
    align: u64,
    block_cap: u64,
    blocks: Vec<u64>,
    pieces: Vec<Piece>,
}

pub(crate) struct Arena {
    blocks: Vec<wgpu::Buffer>,
    pieces: Vec<Piece>,
}

/// Stage at most this much through `write_buffer` before waiting (bounds the staging memory).
const UPLOAD_FLUSH: u64 = 256 << 20;

impl ArenaPlan {
    pub fn new(gpu: &Gpu, alignment: u32) -> ArenaPlan {
        let align = (alignment as u64).max(256);
        // One block per GiB at most: big enough that few blocks exist, small enough to allocate.
        let block_cap = gpu.limits().max_buffer_size.min(1 << 30);
        ArenaPlan { align, block_cap, blocks: Vec::new(), pieces: Vec::new() }
    }

    /// Reserve `bytes` (rounded up to 4); returns the piece's index.
    pub fn reserve(&mut self, bytes: u64) -> Result<usize> {
        let size = bytes.div_ceil(4).max(1) * 4;
        if size > self.block_cap {
            return Err(Error::msg(format!("a GPU buffer piece of {size} bytes exceeds the adapter's buffer size")));
        }
        let fits = |used: u64| used.next_multiple_of(self.align) + size <= self.block_cap;
        if !self.blocks.last().is_some_and(|&used| fits(used)) {
            self.blocks.push(0);
        }
        let block = self.blocks.len() - 1;
        let offset = self.blocks[block].next_multiple_of(self.align);
        self.blocks[block] = offset + size;
        self.pieces.push(Piece { block, offset, size });
        Ok(self.pieces.len() - 1)
    }

    pub fn build(self, gpu: &Gpu, label: &str, usage: wgpu::BufferUsages) -> Arena {
        let blocks = self
            .blocks
            .iter()
            .map(|&size| {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage: usage | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Arena { blocks, pieces: self.pieces }
    }
}

impl Arena {
    pub fn empty() -> Arena {
        Arena { blocks: Vec::new(), pieces: Vec::new() }
    }

    /// Fill piece `i` with `data` (zero-padded to the piece's size).
    pub fn write(&self, gpu: &Gpu, i: usize, data: &[u8], staged: &mut u64) -> Result<()> {
        let p = self.pieces[i];
        let whole = data.len() as u64 / 4 * 4;
        if whole > 0 {
            gpu.queue.write_buffer(&self.blocks[p.block], p.offset, &data[..whole as usize]);
        }
        if whole < data.len() as u64 {
            let mut tail = [0u8; 4];
            tail[..data.len() - whole as usize].copy_from_slice(&data[whole as usize..]);
            gpu.queue.write_buffer(&self.blocks[p.block], p.offset + whole, &tail);
        }
        *staged += data.len() as u64;
        if *staged >= UPLOAD_FLUSH {
            gpu.queue.submit([]);
            gpu.wait()?;
            *staged = 0;
        }
        Ok(())
    }

    pub fn binding(&self, i: usize) -> wgpu::BindingResource<'_> {
        let p = self.pieces[i];
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.blocks[p.block],
            offset: p.offset,
            size: NonZeroU64::new(p.size),
        })
    }

    pub fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.size()).sum()
    }
}
