//! A window of layers `a..b` run on the GPU: a [`Window`] like the CPU's
//! [`crate::model::LayerWindow`], rows of several sequences per call, each sequence with its
//! own slot of the KV cache. At load the weights are copied once into arena buffers, the KV
//! cache (`[layer][sequence][position]`) is allocated in GPU memory and every pipeline and
//! bind group is built; a forward call writes the hidden state, the rows (sequence, position)
//! and the rotary tables, records the whole window into one command buffer, submits it once
//! and reads the hidden state back once.

use std::ops::Range;
use std::sync::Arc;

use super::arena::{Arena, ArenaPlan};
use super::device::{Gpu, f32_bytes, f32_bytes_mut};
use super::kernels::{self, Op, PREFILL_TILE};
use super::pipelines::Pipelines;
use crate::cpu::ops::Rope;
use crate::error::{Error, Result};
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::weights::{load_optional_vector, load_vector};
use crate::model::window::{check_hidden, check_rows};
use crate::model::{KvOp, Model, SeqPos, Window};
use crate::quant::GgmlType;

/// Tokens per submit when the caller passes more (prefill runs in chunks of this many).
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Widest head the attention kernel handles (64 threads × 4 dimensions).
const MAX_HEAD_DIM: usize = 256;
const SHAPE_BYTES: u64 = 32;

/// A weight matrix in the arena: row ranges, each within one binding.
struct Matrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// (arena piece, first row, rows).
    parts: Vec<(usize, usize, usize)>,
}

/// The per-token activations (sized for `max_batch` tokens).
struct Activations {
    h: wgpu::Buffer,
    xn: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    attn: wgpu::Buffer,
    proj: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    rope_table: wgpu::Buffer,
    /// Per token: (sequence, position), for the attention kernel.
    rows: wgpu::Buffer,
    step: wgpu::Buffer,
    readback: wgpu::Buffer,
}

/// How many workgroups a dispatch needs for `n` tokens.
#[derive(Clone, Copy)]
enum Grid {
    /// One workgroup per weight row and tile of tokens.
    Rows { rows: u32, tile: u32 },
    /// One workgroup per token.
    Tokens,
    /// One thread per element of `per_token` elements per token (64-thread workgroups).
    Elements { per_token: u32 },
    /// One workgroup per (head, token).
    Heads { n_head: u32 },
}

impl Grid {
    fn size(self, n: u32) -> (u32, u32, u32) {
        let spread = |wgs: u32| {
            let x = wgs.clamp(1, 65535);
            (x, wgs.div_ceil(x), 1)
        };
        match self {
            Grid::Rows { rows, tile } => {
                let (x, y, _) = spread(rows);
                (x, y, n.div_ceil(tile))
            }
            Grid::Tokens => (n, 1, 1),
            Grid::Elements { per_token } => spread((n * per_token).div_ceil(64)),
            Grid::Heads { n_head } => (n_head, n, 1),
        }
    }
}

enum Work {
    /// A dispatch; matrix products have a decode and a prefill bind group (their pipelines
    /// differ, their bindings do not).
    Dispatch { kernel: Kernel, bind: wgpu::BindGroup, grid: Grid },
    /// The new tokens' keys and values into layer `layer`'s cache.
    StoreKv { layer: usize },
}

#[derive(Clone, Copy)]
enum Kernel {
    Op(Op),
    Matmul(GgmlType),
}

pub struct GpuWindow {
    gpu: Arc<Gpu>,
    cfg: ModelConfig,
    layers: Range<usize>,
    rope: Rope,
    n_ctx: usize,
    max_batch: usize,
    /// Per sequence: positions held in the KV cache.
    kv_len: Vec<usize>,
    pipelines: Pipelines,
    act: Activations,
    kv: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    work: Vec<Work>,
    weight_bytes: u64,
    // Kept alive for the bind groups that reference them.
    _weights: Arena,
    _shapes: Arena,
    rope_table: Vec<[f32; 2]>,
    host_rows: Vec<u32>,
}

/// A window's tensors planned into the arena before anything is uploaded.
struct Loader<'m> {
    m: &'m Model,
    plan: ArenaPlan,
    max_part: u64,
    uploads: Vec<(usize, std::borrow::Cow<'m, [u8]>)>,
}

impl<'m> Loader<'m> {
    fn matrix(&mut self, name: &str, cols: usize, rows: usize) -> Result<Matrix> {
        let m: &'m Model = self.m;
        let f = &m.gguf;
        let t = f.tensor(name).ok_or_else(|| Error::msg(format!("tensor `{name}` is missing")))?;
        if t.row_len() != cols || t.n_rows() != rows {
            return Err(Error::msg(format!("tensor `{name}` has shape {:?}, expected [{cols}, {rows}]", t.dims)));
        }
        if !kernels::FORMATS.contains(&t.ty) {
            return Err(kernels::unsupported(name, t.ty));
        }
        if !cols.is_multiple_of(32) {
            return Err(Error::msg(format!("tensor `{name}`: rows of {cols} are not whole 32-element chunks (GPU)")));
        }
        let row_bytes = t.ty.row_bytes(cols).ok_or_else(|| Error::msg(format!("tensor `{name}`: bad row length")))?;
        let data = f.tensor_data(t);
        let rows_per_part = (self.max_part / row_bytes as u64).max(1) as usize;
        let mut parts = Vec::new();
        for start in (0..rows).step_by(rows_per_part) {
            let n = rows_per_part.min(rows - start);
            let piece = self.plan.reserve((n * row_bytes) as u64)?;
            self.uploads.push((piece, data[start * row_bytes..(start + n) * row_bytes].into()));
            parts.push((piece, start, n));
        }
        Ok(Matrix { ty: t.ty, rows, cols, parts })
    }

    fn vector(&mut self, v: Vec<f32>) -> Result<usize> {
        let piece = self.plan.reserve(v.len() as u64 * 4)?;
        self.uploads.push((piece, f32_bytes(&v).to_vec().into()));
        Ok(piece)
    }
}

struct LayerPieces {
    attn_norm: usize,
    ffn_norm: usize,
    bias: [Option<usize>; 3],
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    wo: Matrix,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

impl GpuWindow {
    /// Load layers `layers` of `m` onto `gpu` with a KV cache of `n_seq` sequences of `n_ctx`
    /// positions. A format without a GPU kernel, or a shape the kernels do not take, is an
    /// error naming it (the caller keeps that window on the CPU).
    pub fn new(gpu: Arc<Gpu>, m: &Model, layers: Range<usize>, n_ctx: usize, n_seq: usize) -> Result<GpuWindow> {
        Self::with_options(gpu, m, layers, n_ctx, n_seq, DEFAULT_MAX_BATCH, None)
    }

    /// [`GpuWindow::new`] with at most `max_batch` tokens per submit and tensor parts of at most
    /// `max_part` bytes (the adapter's binding size when `None`; tests force splits with it).
    pub fn with_options(
        gpu: Arc<Gpu>,
        m: &Model,
        layers: Range<usize>,
        n_ctx: usize,
        n_seq: usize,
        max_batch: usize,
        max_part: Option<u64>,
    ) -> Result<GpuWindow> {
        let c = m.config.clone();
        let n_seq = n_seq.max(1);
        if layers.start >= layers.end || layers.end > c.n_layer {
            return Err(Error::msg(format!("layer window {layers:?} is outside the model's {} layers", c.n_layer)));
        }
        if c.head_dim_v > MAX_HEAD_DIM {
            return Err(Error::msg(format!(
                "head size {} exceeds the GPU attention kernel's {MAX_HEAD_DIM}",
                c.head_dim_v
            )));
        }
        let limits = gpu.limits().clone();
        let max_part = max_part.unwrap_or(u64::MAX).min(gpu.max_binding_bytes()).min(1 << 30) / 4 * 4;
        if max_batch == 0 {
            return Err(Error::msg("a GPU window needs room for at least one token"));
        }
        let mut ld = Loader {
            m,
            plan: ArenaPlan::new(&gpu, limits.min_storage_buffer_offset_alignment),
            max_part,
            uploads: Vec::new(),
        };
        let mut pieces = Vec::new();
        for i in layers.clone() {
            let n = |s: &str| format!("blk.{i}.{s}");
            let f = &m.gguf;
            let (q_dim, kd, vd) = (c.q_dim(), c.kv_dim_k(), c.kv_dim_v());
            let bias = [("attn_q.bias", q_dim), ("attn_k.bias", kd), ("attn_v.bias", vd)]
                .map(|(b, len)| load_optional_vector(f, &n(b), len));
            let mut bias_pieces = [None; 3];
            for (slot, b) in bias_pieces.iter_mut().zip(bias) {
                if let Some(v) = b? {
                    *slot = Some(ld.vector(v)?);
                }
            }
            pieces.push(LayerPieces {
                attn_norm: ld.vector(load_vector(f, &n("attn_norm.weight"), c.n_embd)?)?,
                ffn_norm: ld.vector(load_vector(f, &n("ffn_norm.weight"), c.n_embd)?)?,
                bias: bias_pieces,
                wq: ld.matrix(&n("attn_q.weight"), c.n_embd, q_dim)?,
                wk: ld.matrix(&n("attn_k.weight"), c.n_embd, kd)?,
                wv: ld.matrix(&n("attn_v.weight"), c.n_embd, vd)?,
                wo: ld.matrix(&n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
                gate: ld.matrix(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                up: ld.matrix(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                down: ld.matrix(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
            });
        }
        let freq_factors = load_optional_vector(&m.gguf, "rope_freqs.weight", c.rope_dims / 2)?;
        let rope = Rope::new(c.rope_dims, c.rope_base, c.rope_freq_scale, c.rope_style, freq_factors);

        let Loader { plan, uploads, .. } = ld;
        let weights = plan.build(&gpu, "weights", wgpu::BufferUsages::STORAGE);
        let mut staged = 0;
        for (piece, data) in &uploads {
            weights.write(&gpu, *piece, data, &mut staged)?;
        }
        drop(uploads);

        let mut formats: Vec<GgmlType> =
            pieces.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down].map(|w| w.ty)).collect();
        formats.sort();
        formats.dedup();
        let pipelines = Pipelines::new(&gpu, &formats)?;

        let act = Activations::new(&gpu, &c, max_batch)?;
        let kv_bytes = |dim: usize| (n_seq * n_ctx * dim * 4) as u64;
        for dim in [c.kv_dim_k(), c.kv_dim_v()] {
            if kv_bytes(dim) > gpu.max_binding_bytes() {
                return Err(Error::msg(format!(
                    "a layer's GPU KV cache ({} MiB for {n_seq} sequence(s) of {n_ctx} positions) exceeds the adapter's binding size of {} MiB (lower -c or the number of sequences)",
                    kv_bytes(dim) >> 20,
                    gpu.max_binding_bytes() >> 20
                )));
            }
        }
        let kv = (0..layers.len())
            .map(|_| [c.kv_dim_k(), c.kv_dim_v()].map(|d| storage(&gpu, "kv cache", kv_bytes(d))))
            .map(|[k, v]| (k, v))
            .collect();

        let mut w = GpuWindow {
            weight_bytes: weights.bytes(),
            rope_table: Vec::new(),
            host_rows: Vec::new(),
            gpu,
            cfg: c,
            layers,
            rope,
            n_ctx,
            max_batch,
            kv_len: vec![0; n_seq],
            pipelines,
            act,
            kv,
            work: Vec::new(),
            _weights: weights,
            _shapes: Arena::empty(),
        };
        w.record(&pieces)?;
        w.warm_up()?;
        Ok(w)
    }
}

fn storage(gpu: &Gpu, label: &str, bytes: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).next_multiple_of(16),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

impl Activations {
    fn new(gpu: &Gpu, c: &ModelConfig, b: usize) -> Result<Activations> {
        let f = |label: &str, width: usize| -> Result<wgpu::Buffer> {
            let bytes = (b * width * 4) as u64;
            if bytes > gpu.max_binding_bytes() {
                return Err(Error::msg(format!("GPU activations `{label}` for {b} tokens exceed a binding")));
            }
            Ok(storage(gpu, label, bytes))
        };
        Ok(Activations {
            h: f("hidden", c.n_embd)?,
            xn: f("normed", c.n_embd)?,
            q: f("q", c.q_dim())?,
            k: f("k", c.kv_dim_k())?,
            v: f("v", c.kv_dim_v())?,
            attn: f("attention", c.n_head * c.head_dim_v)?,
            proj: f("projection", c.n_embd)?,
            gate: f("gate", c.n_ff)?,
            up: f("up", c.n_ff)?,
            rope_table: f("rope table", c.rope_dims.max(2))?,
            rows: f("rows", 2)?,
            step: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            readback: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back"),
                size: (b * c.n_embd * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        })
    }
}

fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    b.as_entire_binding()
}

impl GpuWindow {
    /// Build the window's program: every dispatch with its bind group, in order.
    fn record(&mut self, layers: &[LayerPieces]) -> Result<()> {
        let c = self.cfg.clone();
        let gpu = self.gpu.clone();
        let (q_dim, kd, vd) = (c.q_dim() as u32, c.kv_dim_k() as u32, c.kv_dim_v() as u32);
        let embd = c.n_embd as u32;
        // Shapes first (a uniform arena), then bind groups that point into it.
        let mut shapes: Vec<[u32; 8]> = Vec::new();
        let mut shape = |s: [u32; 8]| {
            shapes.push(s);
            shapes.len() - 1
        };
        struct Planned {
            kernel: Kernel,
            shape: usize,
            grid: Grid,
            bufs: Vec<Buf>,
        }
        #[derive(Clone, Copy)]
        enum Buf {
            Weight(usize),
            H,
            Xn,
            Q,
            K,
            V,
            Attn,
            Proj,
            Gate,
            Up,
            Table,
            Rows,
            KCache(usize),
            VCache(usize),
        }
        let mut plan: Vec<Option<Planned>> = Vec::new();
        let norm = |shape: &mut dyn FnMut([u32; 8]) -> usize, weight: usize| Planned {
            kernel: Kernel::Op(Op::RmsNorm),
            shape: shape([embd, c.rms_eps.to_bits(), 0, 0, 0, 0, 0, 0]),
            grid: Grid::Tokens,
            bufs: vec![Buf::H, Buf::Weight(weight), Buf::Xn],
        };
        let matmul = |shape: &mut dyn FnMut([u32; 8]) -> usize, w: &Matrix, x: Buf, y: Buf| -> Vec<Planned> {
            let row_bytes = w.ty.row_bytes(w.cols).expect("checked at load") as u32;
            w.parts
                .iter()
                .map(|&(piece, start, rows)| Planned {
                    kernel: Kernel::Matmul(w.ty),
                    shape: shape([rows as u32, w.cols as u32, row_bytes, 0, w.rows as u32, start as u32, 0, 0]),
                    grid: Grid::Rows { rows: rows as u32, tile: 1 },
                    bufs: vec![Buf::Weight(piece), x, y],
                })
                .collect()
        };
        let add = |shape: &mut dyn FnMut([u32; 8]) -> usize, x: Buf, y: Buf, width: u32, y_len: u32| Planned {
            kernel: Kernel::Op(Op::Add),
            shape: shape([width, y_len, 0, 0, 0, 0, 0, 0]),
            grid: Grid::Elements { per_token: width },
            bufs: vec![x, y],
        };
        let half = (c.rope_dims / 2) as u32;
        let style = match c.rope_style {
            RopeStyle::Normal => 0,
            RopeStyle::Neox => 1,
        };
        for (li, l) in layers.iter().enumerate() {
            plan.push(Some(norm(&mut shape, l.attn_norm)));
            plan.extend(matmul(&mut shape, &l.wq, Buf::Xn, Buf::Q).into_iter().map(Some));
            plan.extend(matmul(&mut shape, &l.wk, Buf::Xn, Buf::K).into_iter().map(Some));
            plan.extend(matmul(&mut shape, &l.wv, Buf::Xn, Buf::V).into_iter().map(Some));
            for (b, (target, width)) in l.bias.iter().zip([(Buf::Q, q_dim), (Buf::K, kd), (Buf::V, vd)]) {
                if let Some(b) = *b {
                    plan.push(Some(add(&mut shape, target, Buf::Weight(b), width, width)));
                }
            }
            for (target, heads) in [(Buf::Q, c.n_head as u32), (Buf::K, c.n_head_kv as u32)] {
                plan.push(Some(Planned {
                    kernel: Kernel::Op(Op::Rope),
                    shape: shape([c.head_dim_k as u32, heads, half, style, 0, 0, 0, 0]),
                    grid: Grid::Elements { per_token: heads * half },
                    bufs: vec![Buf::Table, target],
                }));
            }
            plan.push(None); // store the keys and values of layer li
            let scale = 1.0 / (c.head_dim_k as f32).sqrt();
            plan.push(Some(Planned {
                kernel: Kernel::Op(Op::Attention),
                shape: shape([
                    c.n_head as u32,
                    (c.n_head / c.n_head_kv) as u32,
                    c.head_dim_k as u32,
                    c.head_dim_v as u32,
                    kd,
                    vd,
                    scale.to_bits(),
                    self.n_ctx as u32,
                ]),
                grid: Grid::Heads { n_head: c.n_head as u32 },
                bufs: vec![Buf::Q, Buf::KCache(li), Buf::VCache(li), Buf::Attn, Buf::Rows],
            }));
            plan.extend(matmul(&mut shape, &l.wo, Buf::Attn, Buf::Proj).into_iter().map(Some));
            plan.push(Some(add(&mut shape, Buf::H, Buf::Proj, embd, 0)));
            plan.push(Some(norm(&mut shape, l.ffn_norm)));
            plan.extend(matmul(&mut shape, &l.gate, Buf::Xn, Buf::Gate).into_iter().map(Some));
            plan.extend(matmul(&mut shape, &l.up, Buf::Xn, Buf::Up).into_iter().map(Some));
            plan.push(Some(Planned {
                kernel: Kernel::Op(Op::SiluMul),
                shape: shape([c.n_ff as u32, 0, 0, 0, 0, 0, 0, 0]),
                grid: Grid::Elements { per_token: c.n_ff as u32 },
                bufs: vec![Buf::Gate, Buf::Up],
            }));
            plan.extend(matmul(&mut shape, &l.down, Buf::Gate, Buf::Proj).into_iter().map(Some));
            plan.push(Some(add(&mut shape, Buf::H, Buf::Proj, embd, 0)));
        }

        let mut splan = ArenaPlan::new(&gpu, gpu.limits().min_uniform_buffer_offset_alignment);
        let shape_pieces = shapes.iter().map(|_| splan.reserve(SHAPE_BYTES)).collect::<Result<Vec<_>>>()?;
        let shape_arena = splan.build(&gpu, "shapes", wgpu::BufferUsages::UNIFORM);
        let mut staged = 0;
        for (s, &p) in shapes.iter().zip(&shape_pieces) {
            let bytes: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
            shape_arena.write(&gpu, p, &bytes, &mut staged)?;
        }

        let a = &self.act;
        let mut work = Vec::new();
        let mut li = 0;
        #[allow(clippy::explicit_counter_loop)] // `li` counts the layers' KV stores only
        for p in plan {
            let Some(p) = p else {
                work.push(Work::StoreKv { layer: li });
                li += 1;
                continue;
            };
            let res = |b: Buf| match b {
                Buf::Weight(piece) => self._weights.binding(piece),
                Buf::H => whole(&a.h),
                Buf::Xn => whole(&a.xn),
                Buf::Q => whole(&a.q),
                Buf::K => whole(&a.k),
                Buf::V => whole(&a.v),
                Buf::Attn => whole(&a.attn),
                Buf::Proj => whole(&a.proj),
                Buf::Gate => whole(&a.gate),
                Buf::Up => whole(&a.up),
                Buf::Table => whole(&a.rope_table),
                Buf::Rows => whole(&a.rows),
                Buf::KCache(l) => whole(&self.kv[l].0),
                Buf::VCache(l) => whole(&self.kv[l].1),
            };
            // Binding order as in kernels/*.wgsl: the matrix kernel binds the weights first.
            let mut entries: Vec<wgpu::BindingResource> = Vec::new();
            let (uniforms, rest): (Vec<_>, &[Buf]) = match p.kernel {
                Kernel::Matmul(_) => {
                    entries.push(res(p.bufs[0]));
                    (vec![shape_arena.binding(shape_pieces[p.shape]), whole(&a.step)], &p.bufs[1..])
                }
                Kernel::Op(_) => (vec![shape_arena.binding(shape_pieces[p.shape]), whole(&a.step)], &p.bufs[..]),
            };
            entries.extend(uniforms);
            entries.extend(rest.iter().map(|&b| res(b)));
            let layout = match p.kernel {
                Kernel::Matmul(_) => self.pipelines.matmul_layout(),
                Kernel::Op(op) => &self.pipelines.op(op).layout,
            };
            let entries: Vec<wgpu::BindGroupEntry> = entries
                .into_iter()
                .enumerate()
                .map(|(i, resource)| wgpu::BindGroupEntry { binding: i as u32, resource })
                .collect();
            let bind =
                gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries });
            work.push(Work::Dispatch { kernel: p.kernel, bind, grid: p.grid });
        }
        self.work = work;
        self._shapes = shape_arena;
        Ok(())
    }
}

impl GpuWindow {
    pub fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Positions held in the KV cache for sequence `seq`.
    pub fn kv_len(&self, seq: usize) -> usize {
        self.kv_len[seq]
    }

    /// GPU memory this window holds: weights, KV cache and activations.
    pub fn gpu_bytes(&self) -> u64 {
        let kv: u64 = self.kv.iter().map(|(k, v)| k.size() + v.size()).sum();
        self.weight_bytes + kv + self._shapes.bytes()
    }

    /// Run the window in place on one row of hidden state per entry of `rows`:
    /// [`crate::model::LayerWindow::run`]'s contract, in chunks of at most `max_batch` rows.
    pub fn run(&mut self, rows: &[SeqPos], hidden: &mut [f32]) -> Result<()> {
        let what = format!("GPU window {:?}", self.layers);
        let width = self.cfg.n_embd;
        check_hidden(&what, rows.len(), hidden.len(), width)?;
        check_rows(rows, &what, self.kv_len.len(), self.n_ctx, |s| self.kv_len[s])?;
        let nb = self.max_batch;
        for (r, h) in rows.chunks(nb).zip(hidden.chunks_mut(nb * width)) {
            self.forward_chunk(r, h)?;
            for row in r {
                self.kv_len[row.seq as usize] = row.pos as usize + 1;
            }
        }
        Ok(())
    }

    /// Run the decode and the prefill kernels once at load: drivers compile a pipeline at its
    /// first dispatch (seconds for a window on lavapipe), which would otherwise stall the first
    /// token past a ring's timeout. The cache lengths stay 0, so what it wrote is never read.
    fn warm_up(&mut self) -> Result<()> {
        let rows: Vec<SeqPos> = (0..2.min(self.max_batch).min(self.n_ctx)).map(|p| SeqPos::new(0, p)).collect();
        for n in 1..=rows.len() {
            let mut hidden = vec![0f32; n * self.cfg.n_embd];
            self.forward_chunk(&rows[..n], &mut hidden)?;
        }
        Ok(())
    }

    /// One submit: upload, every layer, read back.
    fn forward_chunk(&mut self, rows: &[SeqPos], hidden: &mut [f32]) -> Result<()> {
        let n = rows.len();
        let gpu = &*self.gpu;
        let a = &self.act;
        let c = &self.cfg;
        let half = c.rope_dims / 2;
        self.rope_table.resize(n * half, [0.0; 2]);
        let mut cs = vec![(0f32, 0f32); half];
        for (t, r) in rows.iter().enumerate() {
            self.rope.table(r.pos as usize, &mut cs);
            for (slot, &(cos, sin)) in self.rope_table[t * half..(t + 1) * half].iter_mut().zip(&cs) {
                *slot = [cos, sin];
            }
        }
        let table: Vec<f32> = self.rope_table.iter().flatten().copied().collect();
        self.host_rows.clear();
        self.host_rows.extend(rows.iter().flat_map(|r| [r.seq, r.pos]));
        let step: Vec<u8> = [n as u32, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        gpu.queue.write_buffer(&a.step, 0, &step);
        gpu.queue.write_buffer(&a.h, 0, f32_bytes(hidden));
        let row_bytes: Vec<u8> = self.host_rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        gpu.queue.write_buffer(&a.rows, 0, &row_bytes);
        if !table.is_empty() {
            gpu.queue.write_buffer(&a.rope_table, 0, f32_bytes(&table));
        }

        let prefill = n > 1;
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("window") });
        let mut i = 0;
        while i < self.work.len() {
            {
                let mut pass =
                    enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                while let Some(Work::Dispatch { kernel, bind, grid }) = self.work.get(i) {
                    let (pipeline, grid) = match *kernel {
                        Kernel::Matmul(ty) => {
                            let tile = if prefill { PREFILL_TILE } else { 1 };
                            let grid = match *grid {
                                Grid::Rows { rows, .. } => Grid::Rows { rows, tile },
                                g => g,
                            };
                            (self.pipelines.matmul(ty, prefill), grid)
                        }
                        Kernel::Op(op) => (&self.pipelines.op(op).pipeline, *grid),
                    };
                    let (x, y, z) = grid.size(n as u32);
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, bind, &[]);
                    pass.dispatch_workgroups(x, y, z);
                    i += 1;
                }
            }
            if let Some(Work::StoreKv { layer }) = self.work.get(i) {
                let (kd, vd) = ((c.kv_dim_k() * 4) as u64, (c.kv_dim_v() * 4) as u64);
                let (kc, vc) = &self.kv[*layer];
                // One copy per run of consecutive positions of one sequence.
                for run in runs(rows) {
                    let r = rows[run.start];
                    let dst = r.seq as u64 * self.n_ctx as u64 + r.pos as u64;
                    let (src, len) = (run.start as u64, run.len() as u64);
                    enc.copy_buffer_to_buffer(&a.k, src * kd, kc, dst * kd, len * kd);
                    enc.copy_buffer_to_buffer(&a.v, src * vd, vc, dst * vd, len * vd);
                }
                i += 1;
            }
        }
        let bytes = (hidden.len() * 4) as u64;
        enc.copy_buffer_to_buffer(&a.h, 0, &a.readback, 0, bytes);
        gpu.queue.submit([enc.finish()]);
        gpu.read_back(&a.readback, bytes, f32_bytes_mut(hidden))
    }
}

/// The rows of `rows` cut into runs of consecutive positions of one sequence.
fn runs(rows: &[SeqPos]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= rows.len() {
            return None;
        }
        let mut end = start + 1;
        while end < rows.len() && rows[end].seq == rows[start].seq && rows[end].pos == rows[end - 1].pos + 1 {
            end += 1;
        }
        let run = start..end;
        start = end;
        Some(run)
    })
}

impl Window for GpuWindow {
    fn forward(&mut self, rows: &[SeqPos], hidden: &mut Vec<f32>) -> Result<()> {
        self.run(rows, hidden)
    }

    fn kv(&mut self, op: KvOp) -> Result<()> {
        match op {
            KvOp::Reset => self.kv_len.fill(0),
            KvOp::Truncate { seq, len } => match self.kv_len.get_mut(seq as usize) {
                Some(l) => *l = (*l).min(len as usize),
                None => return Err(Error::msg(format!("GPU window {:?}: no sequence {seq}", self.layers))),
            },
        }
        Ok(())
    }
}
