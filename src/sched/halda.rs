//! Halda: which device runs which layers. A pure function of the device profiles, the model's
//! cost and the context: `plan(profiles, cost, options) -> Plan`.
//!
//! Device m runs a window of w_m consecutive layers per round (n_m of them on its GPU); the
//! token travels the ring k = L / Σw times. For a fixed k and a fixed assignment of devices to
//! the memory cases M1–M4 (prima-reference.md §1.4) the latency model is linear, so
//! `min k·Σ(a_m·w_m + b_m·n_m + ξ_m) + κ` is a small ILP ([`super::ilp`]). Halda iterates case
//! assignments, solves one ILP per divisor k of L, calibrates, and finally removes devices
//! whose removal makes the plan faster.
//!
//! Upstream flaws fixed here: network cost per hop (ξ_m from the measured link), the real
//! output-layer cost on the backend that runs it, the RAM-read term b'/T, KV bytes in the real
//! KV type, no device cap; every plan is re-evaluated with the exact (piecewise) model and the
//! best one over all case assignments is kept, not just the last.

#![allow(clippy::needless_range_loop)] // per-device vectors are indexed in parallel

use std::fmt::Write;

use super::ilp::{self, Problem, Solution};
use super::model_cost::ModelCost;
use crate::error::{Error, Result};
use crate::profile::{DeviceProfile, Gpu, KvAppend, Link, Memory, Os, Throughput};
use crate::quant::GgmlType;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Clone, Debug)]
pub struct Options {
    /// Context length the KV cache is sized for (and attention is charged at).
    pub n_ctx: u64,
    /// KV cache element type (F16 or F32).
    pub kv_ty: GgmlType,
    /// Pin the head (embedding, LM head, sampling) to this device; it is never dropped.
    pub head: Option<usize>,
    /// Pin k (rounds per token).
    pub k: Option<u32>,
    /// Divides the head's per-layer cost (upstream `master_priority`, 1.01): a tie-breaker.
    pub head_priority: f64,
    /// Link cost for devices whose profile has none.
    pub default_link: Link,
    /// Per-device CPU memory for compute buffers and the runtime, bytes; at most a sixth of a
    /// small device's memory (what prima needs there: the pager keeps 24 MiB + 1/64 free and
    /// the process's own memory is about 20 MiB, 40–50 MiB on a 250–300 MiB device).
    pub cpu_reserve: u64,
    /// Per-GPU reserve (context, compute buffers), bytes: discrete GPUs, and unified memory.
    pub gpu_reserve: u64,
    pub uma_reserve: u64,
    /// Below this disk speed (GB/s) a device never streams layers (case M4 forced).
    pub min_disk_gbps: f64,
    /// Try dropping devices.
    pub allow_removal: bool,
    pub ilp: ilp::Options,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n_ctx: 4096,
            kv_ty: GgmlType::F16,
            head: None,
            k: None,
            head_priority: 1.01,
            // Home Wi-Fi (prima-reference §6: 3–7 ms latency, 320–610 Mbps).
            default_link: Link { rtt_ms: 5.0, gbps: 0.05 },
            cpu_reserve: 256 << 20,
            gpu_reserve: 700 << 20,
            uma_reserve: 300 << 20,
            min_disk_gbps: 0.1,
            allow_removal: true,
            ilp: ilp::Options { max_nodes: 20_000, max_pivots: 20_000 },
        }
    }
}

/// The memory case of a device (prima-reference §1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    /// CPU only (macOS without Metal), RAM insufficient: window re-read from disk.
    M1,
    /// Unified memory GPU (Metal), working set exceeded: the device share is reloaded.
    M2,
    /// RAM insufficient: CPU layers re-read from disk (GPU layers are not).
    M3,
    /// Everything fits (or the disk is too slow to stream).
    M4,
}

/// Predicted ms per token on one device, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Breakdown {
    pub compute: f64,
    pub memory: f64,
    pub disk: f64,
    pub network: f64,
}

impl Breakdown {
    pub fn total(&self) -> f64 {
        self.compute + self.memory + self.disk + self.network
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DevicePlan {
    pub name: String,
    pub os: Os,
    /// Window size per round and GPU layers in it (0 for dropped devices).
    pub w: u32,
    pub n: u32,
    pub case: Case,
    pub is_head: bool,
    pub output_on_gpu: bool,
    /// RAM this device's share needs (weights of CPU layers + KV + buffers) and its budget.
    pub ram_need: u64,
    pub ram_budget: u64,
    pub vram_need: u64,
    pub vram_budget: u64,
    /// Bytes re-read from disk per token (0 unless the device streams).
    pub disk_bytes: u64,
    pub ms: Breakdown,
}

impl DevicePlan {
    pub fn layers(&self, k: u32) -> u32 {
        self.w * k
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    pub device: usize,
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub model: String,
    pub n_layer: u32,
    pub n_ctx: u64,
    pub kv_ty: GgmlType,
    pub k: u32,
    pub head: usize,
    /// One entry per input profile, in input order; dropped devices have w = n = 0.
    pub devices: Vec<DevicePlan>,
    pub ms_per_token: f64,
    pub dropped: Vec<Dropped>,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Window sizes per device (input order), e.g. `[0, 0, 32, 0]`.
    pub fn windows(&self) -> Vec<u32> {
        self.devices.iter().map(|d| d.w).collect()
    }
    pub fn gpu_windows(&self) -> Vec<u32> {
        self.devices.iter().map(|d| d.n).collect()
    }
    pub fn active(&self) -> Vec<usize> {
        (0..self.devices.len()).filter(|&i| self.devices[i].w > 0).collect()
    }

    /// The ring order of active devices: input order, rotated so the head comes last (it owns
    /// the last window of every round, so it can run the LM head without another hop).
    pub fn ring(&self) -> Vec<usize> {
        let active = self.active();
        let h = active.iter().position(|&i| i == self.head).unwrap_or(0);
        active[h + 1..].iter().chain(&active[..=h]).copied().collect()
    }

    /// Layers of each device (input order), one range per round; dropped devices get none.
    /// Within a window the last `n` layers run on the GPU.
    pub fn layer_ranges(&self) -> Vec<Vec<std::ops::Range<u32>>> {
        let mut out = vec![Vec::new(); self.devices.len()];
        let w_total: u32 = self.windows().iter().sum();
        let ring = self.ring();
        for round in 0..self.k {
            let mut at = round * w_total;
            for &i in &ring {
                out[i].push(at..at + self.devices[i].w);
                at += self.devices[i].w;
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Per-device coefficients.

/// Everything about one device that does not depend on (w, n, k, case).
#[derive(Clone, Debug)]
struct Dev {
    idx: usize,
    os: Os,
    uma: bool,
    has_gpu: bool,
    /// ms per layer on the CPU: compute, KV append + weight/KV reads.
    cpu_comp: f64,
    cpu_mem: f64,
    gpu_comp: f64,
    gpu_mem: f64,
    /// RAM↔VRAM hidden-state copies per window (0 on UMA).
    copy: f64,
    /// One hop to the successor, ms.
    hop: f64,
    /// Disk GB/s used for streaming (sequential on Linux/Android, random on macOS).
    disk: f64,
    ram_budget: f64,
    vram_budget: f64,
    /// Head-only constants: output-layer compute and its memory reads (ms), where it runs.
    out_ms_cpu: (f64, f64),
    out_ms_gpu: Option<(f64, f64)>,
}

struct Ctx<'a> {
    cost: &'a ModelCost,
    opt: &'a Options,
    /// Layer bytes with its KV (b'), and weights only (b).
    b_full: f64,
    b_w: f64,
    warnings: Vec<String>,
}

/// ms for `flops` on a backend with per-format GFLOPS from `tp`, falling back to the slowest
/// measured format when one is missing.
fn flops_ms(flops: &[(GgmlType, f64)], tp: &dyn Fn(GgmlType) -> Option<f64>, fallback: f64) -> f64 {
    flops.iter().map(|&(ty, f)| f / (tp(ty).unwrap_or(fallback) * 1e6)).sum()
}

impl Ctx<'_> {
    fn dev(&mut self, idx: usize, p: &DeviceProfile) -> Result<Dev> {
        let cost = self.cost;
        let n_ctx = self.opt.n_ctx as f64;
        let kv_ty = self.opt.kv_ty;
        if p.cpu.is_empty() {
            return Err(Error::msg(format!(
                "profile `{}` has no CPU throughput: re-run `prima bench --profile`",
                p.name
            )));
        }
        if p.ram_read_gbps <= 0.0 {
            return Err(Error::msg(format!("profile `{}` has no RAM bandwidth", p.name)));
        }
        let slowest = p.cpu.iter().map(|t| t.gflops).filter(|g| *g > 0.0).fold(f64::INFINITY, f64::min);
        if !slowest.is_finite() {
            return Err(Error::msg(format!("profile `{}`: every CPU throughput is zero", p.name)));
        }
        let mut layer: Vec<(GgmlType, f64)> = cost.layer_flops.iter().map(|t| (t.ty, t.flops)).collect();
        layer.push((GgmlType::F32, cost.layer_f32_flops));
        layer.push((kv_ty, cost.attn_flops_per_kv * n_ctx));
        let out: Vec<(GgmlType, f64)> = cost.output_flops.iter().map(|t| (t.ty, t.flops)).collect();
        for &(ty, _) in &layer {
            if p.cpu_gflops(ty).is_none() {
                let w = format!("{}: no CPU throughput for {}, assuming its slowest format", p.name, ty.name());
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
            }
        }
        let cpu_tp = |ty| p.cpu_gflops(ty);
        let kv_row = cost.kv_row_bytes(kv_ty);
        let cpu_comp = flops_ms(&layer, &cpu_tp, slowest);
        let cpu_mem = p.kv_append.ms(kv_row) + self.b_full / (p.ram_read_gbps * 1e6);
        let out_ms_cpu = (
            flops_ms(&out, &cpu_tp, slowest),
            (cost.output_bytes as f64 + cost.input_row_bytes as f64) / (p.ram_read_gbps * 1e6),
        );
        let gpu = p.gpu.as_ref().filter(|g| !g.flops.is_empty() && g.read_gbps > 0.0);
        let (mut gpu_comp, mut gpu_mem, mut copy, mut uma, mut vram) = (0.0, 0.0, 0.0, false, 0.0);
        let mut out_ms_gpu = None;
        if let Some(g) = gpu {
            let gslow = g.flops.iter().map(|t| t.gflops).filter(|g| *g > 0.0).fold(f64::INFINITY, f64::min);
            let gtp = |ty| crate::profile::best(&g.flops, ty);
            gpu_comp = flops_ms(&layer, &gtp, gslow);
            gpu_mem = g.kv_append.ms(kv_row) + self.b_full / (g.read_gbps * 1e6);
            uma = g.uma;
            copy = if uma { 0.0 } else { g.upload_ms + g.download_ms };
            let reserve = if g.uma { self.opt.uma_reserve } else { self.opt.gpu_reserve };
            vram = (g.mem_free as f64 - reserve as f64).max(0.0);
            out_ms_gpu = Some((flops_ms(&out, &gtp, gslow), cost.output_bytes as f64 / (g.read_gbps * 1e6)));
        }
        let reserve = self.opt.cpu_reserve.min(p.memory.total / 6);
        let mut ram = p.memory.available as f64 - reserve as f64;
        if p.os == Os::Android {
            ram += p.memory.can_swap as f64;
        }
        if uma {
            // Metal: GPU layers live in RAM; the budget is the smaller of RAM and the working set.
            vram = vram.min(ram);
        }
        let disk = match p.os {
            Os::MacOs => p.disk.rnd_gbps,
            _ => p.disk.seq_gbps,
        };
        let link = p.link.unwrap_or(self.opt.default_link);
        Ok(Dev {
            idx,
            os: p.os,
            uma,
            has_gpu: gpu.is_some(),
            cpu_comp,
            cpu_mem,
            gpu_comp,
            gpu_mem,
            copy,
            hop: link.ms(cost.hop_bytes()),
            disk,
            ram_budget: ram.max(0.0),
            vram_budget: vram,
            out_ms_cpu,
            out_ms_gpu,
        })
    }
}

/// Where the head's LM head runs: its GPU when the weights fit next to its GPU layers' budget.
fn output_on_gpu(d: &Dev, cost: &ModelCost) -> bool {
    d.out_ms_gpu.is_some() && !d.uma && d.vram_budget >= cost.output_bytes as f64
}

/// A device set with its head (position in the set) and where the head runs the LM head.
struct Set<'a> {
    devs: Vec<&'a Dev>,
    head: usize,
    out_gpu: bool,
}

#[derive(Clone, Debug)]
struct Solved {
    k: u32,
    w: Vec<u32>,
    n: Vec<u32>,
    cases: Vec<Case>,
    total: f64,
}

impl Ctx<'_> {
    /// Bytes the device must hold besides its layers.
    fn fixed_bytes(&self, s: &Set, m: usize, out_gpu: bool) -> f64 {
        let mut b = 0.0;
        if m == s.head {
            b += self.cost.input_row_bytes as f64;
            if !out_gpu {
                b += self.cost.output_bytes as f64;
            }
        }
        b
    }

    fn vram_cap(&self, s: &Set, m: usize) -> f64 {
        let d = s.devs[m];
        let out = if m == s.head && s.out_gpu { self.cost.output_bytes as f64 } else { 0.0 };
        (d.vram_budget - out).max(0.0)
    }

    /// The exact (piecewise) model of one device's share.
    fn evaluate_dev(&self, s: &Set, m: usize, k: u32, w: u32, n: u32) -> (Breakdown, Case, f64, f64, f64) {
        let d = s.devs[m];
        let (kf, lc, lg) = (k as f64, (k * (w - n)) as f64, (k * n) as f64);
        let out_gpu = m == s.head && s.out_gpu;
        let fixed = self.fixed_bytes(s, m, out_gpu);
        let mut b = Breakdown {
            compute: lc * d.cpu_comp + lg * d.gpu_comp,
            memory: lc * d.cpu_mem + lg * d.gpu_mem + if n > 0 { kf * d.copy } else { 0.0 },
            disk: 0.0,
            network: if s.devs.len() > 1 { kf * d.hop } else { 0.0 },
        };
        if m == s.head {
            let (c, r) = if out_gpu { d.out_ms_gpu.unwrap() } else { d.out_ms_cpu };
            b.compute += c;
            b.memory += r;
        }
        let (ram_need, vram_need);
        let streamed;
        let case;
        if d.uma {
            ram_need = (lc + lg) * self.b_full + fixed;
            vram_need = lg * self.b_full;
            let budget = if d.has_gpu { d.vram_budget } else { d.ram_budget };
            if ram_need > budget && d.disk >= self.opt.min_disk_gbps {
                // Working set exceeded: the device's whole share is reloaded every token.
                streamed = (lc + lg) * self.b_w + fixed;
                case = if d.has_gpu { Case::M2 } else { Case::M1 };
            } else {
                streamed = 0.0;
                case = Case::M4;
            }
        } else {
            ram_need = lc * self.b_full + fixed;
            vram_need = lg * self.b_full;
            if ram_need > d.ram_budget && d.disk >= self.opt.min_disk_gbps {
                streamed = ram_need - d.ram_budget;
                case = if d.os == Os::MacOs && !d.has_gpu { Case::M1 } else { Case::M3 };
            } else {
                streamed = 0.0;
                case = Case::M4;
            }
        }
        if streamed > 0.0 {
            b.disk = streamed / (d.disk * 1e6);
        }
        (b, case, ram_need, vram_need, streamed)
    }

    /// Every device's share, with prefetch overlap. With k ≥ 2 rounds a streaming device keeps
    /// the head of every window resident and streams each window's tail
    /// ([`crate::memory::policy`]): while the token is elsewhere it reads the first r bytes
    /// (the room) of its next tail, and the rest of each tail while it computes, just ahead of
    /// the compute ([`crate::memory::prefetch::Follow`]). Its overflow s is re-read as s + r
    /// bytes per token, where r is what its disk reads in one of the k gaps between its windows
    /// (each about 1/k of the others' time O), at most s/(k − 1): r = min(s/(k − 1), disk·O/k).
    /// Its disk works through the whole token, so in steady state a token takes
    /// max(Σ busy, max over such devices of busy_m + (s_m + r_m)/disk_m): the ring waits only
    /// for the device whose disk cannot keep up, and the excess is charged to that device's
    /// disk column. With k = 1 there is no gap planned to read in: disk time adds up.
    fn evaluate_all(&self, s: &Set, k: u32, w: &[u32], n: &[u32]) -> Vec<(Breakdown, Case, f64, f64, f64)> {
        let mut v: Vec<_> = (0..s.devs.len()).map(|m| self.evaluate_dev(s, m, k, w[m], n[m])).collect();
        if k >= 2 {
            let kf = k as f64;
            let busy = |b: &Breakdown| b.compute + b.memory + b.network;
            let all_busy: f64 = v.iter().map(|(b, ..)| busy(b)).sum();
            let mut overlapped = Vec::new();
            for m in 0..v.len() {
                let d = s.devs[m];
                if v[m].0.disk <= 0.0 || d.disk <= 0.0 {
                    continue;
                }
                let out_gpu = m == s.head && s.out_gpu;
                let fixed = self.fixed_bytes(s, m, out_gpu);
                let budget = if d.uma && d.has_gpu { d.vram_budget } else { d.ram_budget };
                // The disk's bytes per ms, and the room one gap of the others' turns fills.
                let rate = d.disk * 1e6;
                let streamed = v[m].4;
                let room = (streamed / (kf - 1.0)).min(rate * (all_busy - busy(&v[m].0)) / kf);
                if room + fixed <= budget {
                    overlapped.push((m, (streamed + room) / rate));
                    v[m].0.disk = 0.0;
                }
            }
            let serial: f64 = v.iter().map(|(b, ..)| b.total()).sum();
            let mut worst: Option<(usize, f64)> = None;
            for &(m, disk) in &overlapped {
                let t = busy(&v[m].0) + disk;
                if worst.is_none_or(|(_, x)| t > x) {
                    worst = Some((m, t));
                }
            }
            if let Some((m, t)) = worst
                && t > serial
            {
                v[m].0.disk = t - serial;
            }
        }
        v
    }

    fn evaluate(&self, s: &Set, k: u32, w: &[u32], n: &[u32]) -> (Vec<Case>, f64) {
        let v = self.evaluate_all(s, k, w, n);
        (v.iter().map(|e| e.1).collect(), v.iter().map(|e| e.0.total()).sum())
    }

    /// Build and solve the ILP for one k and one case assignment.
    fn solve_k(&self, s: &Set, cases: &[Case], k: u32) -> Result<Option<(Vec<u32>, Vec<u32>)>> {
        // Variables per device: g = GPU layers and c = CPU layers of its window (w = g + c).
        // In these variables the memory rows of §1.5 are plain bounds; only Σw = W and the
        // window-size ranges of GPU devices stay rows, so the relaxation is nearly integral.
        let l = self.cost.n_layer;
        let wt = (l / k) as f64;
        let kf = k as f64;
        let mut p = Problem::new();
        let mm = s.devs.len();
        let mut gv = Vec::with_capacity(mm);
        let mut cv = Vec::with_capacity(mm);
        let mut wrows = Vec::new();
        for m in 0..mm {
            let d = s.devs[m];
            let out_gpu = m == s.head && s.out_gpu;
            let fixed = self.fixed_bytes(s, m, out_gpu);
            let bf = kf * self.b_full;
            let disk_ms_per_byte = if d.disk > 0.0 { 1.0 / (d.disk * 1e6) } else { 0.0 };
            // Cost per CPU layer and per GPU layer (α and α + β of the paper).
            let mut cpu = d.cpu_comp + d.cpu_mem;
            let mut gpu = d.gpu_comp + d.gpu_mem;
            let (mut w_lo, mut w_hi) = (1.0f64, wt);
            let (mut c_lo, mut c_hi) = (0.0f64, wt);
            let mut g_hi = if d.has_gpu { (self.vram_cap(s, m) / bf + 1e-9).floor().min(wt) } else { 0.0 };
            let ram = if d.uma && d.has_gpu { d.vram_budget } else { d.ram_budget } - fixed;
            let fit = |x: f64| (x + 1e-9).floor();
            let over = |x: f64| (x - 1e-9).ceil().max(0.0);
            match (cases[m], d.uma) {
                (Case::M4, true) => w_hi = w_hi.min(fit(ram / bf)),
                (Case::M4, false) => c_hi = c_hi.min(fit(ram / bf)),
                (Case::M1 | Case::M2, _) => {
                    // Must really be overloaded; the whole share (weights) is reloaded.
                    cpu += self.b_w * disk_ms_per_byte;
                    gpu += self.b_w * disk_ms_per_byte;
                    w_lo = w_lo.max(over(ram / bf));
                    if cases[m] == Case::M1 {
                        g_hi = 0.0;
                    }
                }
                (Case::M3, _) => {
                    // CPU layers beyond the budget are re-read from disk; GPU layers are not.
                    cpu += self.b_full * disk_ms_per_byte;
                    c_lo = c_lo.max(over(ram / bf));
                }
            }
            if m == s.head {
                cpu /= self.opt.head_priority;
                gpu /= self.opt.head_priority;
            }
            if !d.has_gpu {
                // c is the window: fold the window range into its bounds.
                c_lo = c_lo.max(w_lo);
                c_hi = c_hi.min(w_hi);
                g_hi = 0.0;
            } else {
                wrows.push((m, w_lo, w_hi));
            }
            if c_lo > c_hi || g_hi < 0.0 || w_lo > w_hi || c_lo > w_hi {
                return Ok(None);
            }
            gv.push(p.int_var(kf * gpu, 0.0, g_hi));
            cv.push(p.int_var(kf * cpu, c_lo, c_hi));
        }
        let all: Vec<(usize, f64)> = gv.iter().chain(&cv).map(|&j| (j, 1.0)).collect();
        p.equal(&all, wt);
        for (m, lo, hi) in wrows {
            p.row(&[(gv[m], 1.0), (cv[m], 1.0)], lo, hi);
        }
        match ilp::solve(&p, &self.opt.ilp)? {
            Solution::Optimal { x, .. } | Solution::Limit { best: Some((x, _)) } => {
                let n: Vec<u32> = gv.iter().map(|&j| x[j].round() as u32).collect();
                let w = cv.iter().zip(&n).map(|(&j, &g)| x[j].round() as u32 + g).collect();
                Ok(Some((w, n)))
            }
            _ => Ok(None),
        }
    }

    fn classify(&self, s: &Set, k: u32, w: &[u32], n: &[u32], forced: &[bool]) -> Vec<Case> {
        (0..s.devs.len()).map(|m| if forced[m] { Case::M4 } else { self.evaluate_dev(s, m, k, w[m], n[m]).1 }).collect()
    }

    /// Halda on a fixed device set (Algorithm 1, with the best evaluated plan kept).
    fn solve_set(&self, s: &Set) -> Result<Option<Solved>> {
        let l = self.cost.n_layer;
        let mm = s.devs.len();
        let ks: Vec<u32> = match self.opt.k {
            Some(k) => vec![k],
            None => (1..=l).filter(|k| l.is_multiple_of(*k)).collect(),
        };
        let ks: Vec<u32> =
            ks.into_iter().filter(|&k| k >= 1 && l.is_multiple_of(k) && (l / k) as usize >= mm).collect();
        if ks.is_empty() {
            return Ok(None);
        }
        // Initial w ∝ memory budgets (≥ 1 each, Σ = L), n as much as VRAM allows.
        let budgets: Vec<f64> = s.devs.iter().map(|d| d.ram_budget + if d.uma { 0.0 } else { d.vram_budget }).collect();
        let w = proportional(&budgets, l, mm);
        let n: Vec<u32> = (0..mm)
            .map(|m| if s.devs[m].has_gpu { w[m].min((self.vram_cap(s, m) / self.b_full) as u32) } else { 0 })
            .collect();
        let mut forced = vec![false; mm];
        for m in 0..mm {
            forced[m] = s.devs[m].disk < self.opt.min_disk_gbps;
        }
        let (mut cur_k, mut cur_w, mut cur_n) = (1u32, w, n);
        let mut best: Option<Solved> = None;
        let mut per_k: Vec<Solved> = Vec::new();
        let mut seen: Vec<Vec<Case>> = Vec::new();
        for _ in 0..(2 * mm + 6) {
            let mut cases = self.classify(s, cur_k, &cur_w, &cur_n, &forced);
            if seen.contains(&cases) {
                // Also try "everyone who can stream streams" once, which repairs bad starts.
                let all_stream: Vec<Case> = (0..mm)
                    .map(|m| {
                        let d = s.devs[m];
                        if forced[m] || d.disk < self.opt.min_disk_gbps {
                            Case::M4
                        } else if d.uma {
                            if d.has_gpu { Case::M2 } else { Case::M1 }
                        } else {
                            Case::M3
                        }
                    })
                    .collect();
                if seen.contains(&all_stream) {
                    break;
                }
                cases = all_stream;
            }
            seen.push(cases.clone());
            let mut round_best: Option<Solved> = None;
            for &k in &ks {
                if let Some((w, n)) = self.solve_k(s, &cases, k)? {
                    let (cs, total) = self.evaluate(s, k, &w, &n);
                    self.remember(&mut per_k, Solved { k, w: w.clone(), n: n.clone(), cases: cs.clone(), total });
                    if round_best.as_ref().is_none_or(|b| total < b.total - 1e-9) {
                        round_best = Some(Solved { k, w, n, cases: cs, total });
                    }
                }
            }
            let Some(rb) = round_best else { continue };
            if best.as_ref().is_none_or(|b| rb.total < b.total - 1e-9) {
                best = Some(rb.clone());
            }
            // Calibration: a free GPU while someone is overloaded → force the slowest-disk
            // streaming device into M4 (sticky).
            let wt = (l / rb.k) as f64;
            let weak = (0..mm).any(|m| rb.w[m] == 1 && rb.n[m] == 0);
            let free_gpu = (0..mm).any(|m| {
                s.devs[m].has_gpu
                    && (rb.n[m] as f64) < (self.vram_cap(s, m) / (rb.k as f64 * self.b_full)).floor().min(wt)
            });
            let overload = (0..mm)
                .any(|m| (s.devs[m].has_gpu && rb.w[m] > rb.n[m]) || (!s.devs[m].has_gpu && rb.cases[m] != Case::M4));
            if !weak && free_gpu && overload {
                let slowest = (0..mm)
                    .filter(|&m| !forced[m] && rb.cases[m] != Case::M4)
                    .min_by(|&a, &b| s.devs[a].disk.total_cmp(&s.devs[b].disk));
                if let Some(m) = slowest {
                    forced[m] = true;
                }
            }
            if rb.k == cur_k && rb.w == cur_w && rb.n == cur_n && !seen.is_empty() && seen.len() > 1 {
                // Converged; one more round only if calibration changed something.
                if !(!weak && free_gpu && overload) {
                    break;
                }
            }
            (cur_k, cur_w, cur_n) = (rb.k, rb.w, rb.n);
        }
        // Local search: flip one device at a time between "fits" (M4) and "streams".
        for _ in 0..3 {
            let Some(b) = best.clone() else { break };
            let mut improved = false;
            for m in 0..mm {
                let d = s.devs[m];
                if d.disk < self.opt.min_disk_gbps {
                    continue;
                }
                let mut cases = b.cases.clone();
                cases[m] = match cases[m] {
                    Case::M4 if d.uma => {
                        if d.has_gpu {
                            Case::M2
                        } else {
                            Case::M1
                        }
                    }
                    Case::M4 => Case::M3,
                    _ => Case::M4,
                };
                if seen.contains(&cases) {
                    continue;
                }
                seen.push(cases.clone());
                for &k in &ks {
                    if let Some((w, n)) = self.solve_k(s, &cases, k)? {
                        let (cs, total) = self.evaluate(s, k, &w, &n);
                        self.remember(&mut per_k, Solved { k, w: w.clone(), n: n.clone(), cases: cs.clone(), total });
                        if best.as_ref().is_none_or(|x| total < x.total - 1e-9) {
                            best = Some(Solved { k, w, n, cases: cs, total });
                            improved = true;
                        }
                    }
                }
            }
            if !improved {
                break;
            }
        }
        // Polish with the exact model where devices stream (the ILP cannot see prefetch overlap,
        // which rewards spreading the streamed bytes over several disks).
        for cand in per_k {
            if cand.cases.iter().all(|&c| c == Case::M4) {
                continue;
            }
            let p = self.polish(s, cand);
            if best.as_ref().is_none_or(|b| p.total < b.total - 1e-9) {
                best = Some(p);
            }
        }
        Ok(best)
    }

    fn remember(&self, per_k: &mut Vec<Solved>, sol: Solved) {
        match per_k.iter_mut().find(|x| x.k == sol.k) {
            Some(x) if sol.total < x.total - 1e-9 => *x = sol,
            Some(_) => {}
            None => per_k.push(sol),
        }
    }

    /// Hill climbing on (w, n) with the exact model: move one layer between two devices, or one
    /// layer between a device's CPU and GPU, while every GPU stays within its VRAM and devices
    /// that cannot stream stay within RAM. Takes the best move each step; deterministic.
    fn polish(&self, s: &Set, mut sol: Solved) -> Solved {
        let mm = s.devs.len();
        let k = sol.k;
        let bf = k as f64 * self.b_full;
        let g_cap: Vec<u32> = (0..mm)
            .map(|m| if s.devs[m].has_gpu { (self.vram_cap(s, m) / bf + 1e-9).floor() as u32 } else { 0 })
            .collect();
        let ok = |w: &[u32], n: &[u32], m: usize| -> bool {
            let d = s.devs[m];
            if w[m] < 1 || n[m] > w[m] || n[m] > g_cap[m] {
                return false;
            }
            if d.disk < self.opt.min_disk_gbps {
                let out_gpu = m == s.head && s.out_gpu;
                let lay = if d.uma { w[m] } else { w[m] - n[m] } as f64;
                let budget = if d.uma && d.has_gpu { d.vram_budget } else { d.ram_budget };
                return lay * bf + self.fixed_bytes(s, m, out_gpu) <= budget;
            }
            true
        };
        // Ties on the total (the max over devices is flat when two devices share the worst
        // time) are broken by balance: Σ of squared per-device times without overlap.
        let spread = |w: &[u32], n: &[u32]| -> f64 {
            (0..mm).map(|m| self.evaluate_dev(s, m, k, w[m], n[m]).0.total().powi(2)).sum()
        };
        let mut cur_spread = spread(&sol.w, &sol.n);
        for _ in 0..4 * self.cost.n_layer {
            let mut best: Option<(f64, f64, Vec<u32>, Vec<u32>)> = None;
            let mut try_move = |w: Vec<u32>, n: Vec<u32>, touched: [usize; 2]| {
                if touched.iter().all(|&m| ok(&w, &n, m)) {
                    let (_, total) = self.evaluate(s, k, &w, &n);
                    let (bt, bs) = best.as_ref().map_or((sol.total, cur_spread), |b| (b.0, b.1));
                    let tol = 1e-9 * bt.max(1.0);
                    if total < bt - tol
                        || (total <= bt + tol && {
                            let sp = spread(&w, &n);
                            sp < bs - 1e-9 * bs.max(1.0)
                        })
                    {
                        let sp = spread(&w, &n);
                        best = Some((total, sp, w, n));
                    }
                }
            };
            for i in 0..mm {
                // CPU <-> GPU inside one device.
                for delta in [-1i64, 1] {
                    let mut n = sol.n.clone();
                    let v = n[i] as i64 + delta;
                    if v >= 0 {
                        n[i] = v as u32;
                        try_move(sol.w.clone(), n, [i, i]);
                    }
                }
                if sol.w[i] <= 1 {
                    continue;
                }
                for j in 0..mm {
                    if i == j {
                        continue;
                    }
                    // A CPU layer of i (or a GPU layer when i has no CPU layer) goes to j's CPU or GPU.
                    for to_gpu in [false, true] {
                        let (mut w, mut n) = (sol.w.clone(), sol.n.clone());
                        w[i] -= 1;
                        if n[i] > w[i] {
                            n[i] = w[i];
                        }
                        w[j] += 1;
                        if to_gpu {
                            n[j] += 1;
                        }
                        try_move(w, n, [i, j]);
                    }
                }
            }
            let Some((total, sp, w, n)) = best else { break };
            let (cases, _) = self.evaluate(s, k, &w, &n);
            cur_spread = sp;
            sol = Solved { k, w, n, cases, total };
        }
        sol
    }
}

/// Σ = total, each ≥ 1, proportional to weights (largest remainders; ties to the lowest index).
fn proportional(weights: &[f64], total: u32, m: usize) -> Vec<u32> {
    let sum: f64 = weights.iter().map(|w| w.max(0.0)).sum();
    let extra = total.saturating_sub(m as u32) as f64;
    let raw: Vec<f64> =
        weights.iter().map(|w| if sum > 0.0 { w.max(0.0) / sum * extra } else { extra / m as f64 }).collect();
    let mut v: Vec<u32> = raw.iter().map(|r| 1 + r.floor() as u32).collect();
    let mut left = total.saturating_sub(v.iter().sum());
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| (raw[b] - raw[b].floor()).total_cmp(&(raw[a] - raw[a].floor())).then(a.cmp(&b)));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        v[i] += 1;
        left -= 1;
    }
    v
}

/// The head of a set: the pinned device, else the one with the largest memory budget.
fn pick_head(devs: &[&Dev], pinned: Option<usize>) -> usize {
    if let Some(p) = pinned
        && let Some(pos) = devs.iter().position(|d| d.idx == p)
    {
        return pos;
    }
    let mut best = 0;
    for (i, d) in devs.iter().enumerate() {
        let b = |d: &Dev| d.ram_budget + if d.uma { 0.0 } else { d.vram_budget };
        if b(d) > b(devs[best]) {
            best = i;
        }
    }
    best
}

/// Plan a model on a set of devices.
pub fn plan(profiles: &[DeviceProfile], cost: &ModelCost, opt: &Options) -> Result<Plan> {
    if profiles.is_empty() {
        return Err(Error::msg("no devices to plan for"));
    }
    if cost.n_layer == 0 {
        return Err(Error::msg(format!("{}: the model has no layers", cost.name)));
    }
    if !matches!(opt.kv_ty, GgmlType::F16 | GgmlType::F32 | GgmlType::BF16 | GgmlType::Q8_0) {
        return Err(Error::msg(format!("KV cache type {} is not supported", opt.kv_ty)));
    }
    if let Some(h) = opt.head
        && h >= profiles.len()
    {
        return Err(Error::msg(format!("head device {h} does not exist ({} devices)", profiles.len())));
    }
    if let Some(k) = opt.k
        && (k == 0 || !cost.n_layer.is_multiple_of(k))
    {
        return Err(Error::msg(format!("k = {k} does not divide the model's {} layers", cost.n_layer)));
    }
    for p in profiles {
        p.validate()?;
    }
    let b_w = cost.layer_bytes;
    let b_full = b_w + cost.kv_bytes_per_layer(opt.n_ctx, opt.kv_ty);
    let mut ctx = Ctx { cost, opt, b_full, b_w, warnings: Vec::new() };
    let devs: Vec<Dev> = profiles.iter().enumerate().map(|(i, p)| ctx.dev(i, p)).collect::<Result<_>>()?;

    let solve = |active: &[usize]| -> Result<Option<(Solved, usize, bool)>> {
        let set: Vec<&Dev> = active.iter().map(|&i| &devs[i]).collect();
        let head = pick_head(&set, opt.head);
        // The LM head on the head's GPU saves RAM reads but takes VRAM from layers: try both.
        let mut best: Option<(Solved, usize, bool)> = None;
        for out_gpu in [false, true] {
            if out_gpu && !output_on_gpu(set[head], cost) {
                continue;
            }
            let s = Set { devs: set.clone(), head, out_gpu };
            if let Some(r) = ctx.solve_set(&s)?
                && best.as_ref().is_none_or(|b| r.total < b.0.total - 1e-9)
            {
                best = Some((r, head, out_gpu));
            }
        }
        Ok(best)
    };

    let all: Vec<usize> = (0..devs.len()).collect();
    let mut active = all.clone();
    let mut cur = solve(&active)?;
    let mut dropped: Vec<Dropped> = Vec::new();
    let name = |i: usize| profiles[i].name.clone();
    if opt.allow_removal {
        while let Some((sol, head, _)) = &cur {
            let head_dev = active[*head];
            let mut tries: Vec<Vec<usize>> = Vec::new();
            let weak: Vec<usize> =
                (0..active.len()).filter(|&m| m != *head && sol.w[m] <= 1).map(|m| active[m]).collect();
            if weak.len() > 1 && weak.len() < active.len() {
                tries.push(active.iter().copied().filter(|i| !weak.contains(i)).collect());
            }
            let mut order: Vec<usize> =
                (0..active.len()).filter(|&m| active[m] != head_dev || opt.head.is_none()).collect();
            order.sort_by_key(|&m| (sol.w[m], std::cmp::Reverse(m)));
            for &m in order.iter().take(8) {
                if opt.head == Some(active[m]) || active.len() == 1 {
                    continue;
                }
                tries.push(active.iter().copied().filter(|&i| i != active[m]).collect());
            }
            let mut best: Option<(Vec<usize>, (Solved, usize, bool))> = None;
            for t in tries {
                if let Some(r) = solve(&t)?
                    && r.0.total < best.as_ref().map_or(sol.total, |b| b.1.0.total) * (1.0 - 1e-9)
                {
                    best = Some((t, r));
                }
            }
            let Some((t, r)) = best else { break };
            let before = sol.total;
            for &i in active.iter().filter(|i| !t.contains(i)) {
                dropped.push(Dropped {
                    device: i,
                    name: name(i),
                    reason: format!("plan is faster without it ({before:.1} → {:.1} ms/token)", r.0.total),
                });
            }
            active = t;
            cur = Some(r);
        }
        // A model that fits one strong device may run best there alone.
        if let Some((sol, ..)) = &cur
            && active.len() > 1
        {
            let mut best: Option<(usize, (Solved, usize, bool))> = None;
            for i in all.iter().copied().filter(|&i| opt.head.is_none_or(|h| h == i)) {
                if let Some(r) = solve(&[i])?
                    && r.0.total < best.as_ref().map_or(sol.total, |b| b.1.0.total) * (1.0 - 1e-9)
                {
                    best = Some((i, r));
                }
            }
            if let Some((i, r)) = best {
                let before = sol.total;
                for &j in active.iter().filter(|&&j| j != i) {
                    dropped.push(Dropped {
                        device: j,
                        name: name(j),
                        reason: format!("{} alone is faster ({before:.1} → {:.1} ms/token)", name(i), r.0.total),
                    });
                }
                active = vec![i];
                cur = Some(r);
            }
        }
    }
    let Some((sol, head_pos, out_gpu)) = cur else {
        let total_mem: f64 = devs.iter().map(|d| d.ram_budget + d.vram_budget).sum();
        return Err(Error::msg(format!(
            "{} ({:.1} GiB) cannot be placed on these devices ({:.1} GiB of memory in total, and no device \
             fast enough to stream layers from disk)",
            cost.name,
            cost.total_bytes as f64 / GIB,
            total_mem / GIB
        )));
    };
    dropped.sort_by_key(|d| d.device);
    let set: Vec<&Dev> = active.iter().map(|&i| &devs[i]).collect();
    let s = Set { devs: set, head: head_pos, out_gpu };
    let shares = ctx.evaluate_all(&s, sol.k, &sol.w, &sol.n);
    let mut out = Vec::with_capacity(devs.len());
    for (i, p) in profiles.iter().enumerate() {
        let d = &devs[i];
        let mut dp = DevicePlan {
            name: p.name.clone(),
            os: p.os,
            w: 0,
            n: 0,
            case: Case::M4,
            is_head: false,
            output_on_gpu: false,
            ram_need: 0,
            ram_budget: d.ram_budget as u64,
            vram_need: 0,
            vram_budget: d.vram_budget as u64,
            disk_bytes: 0,
            ms: Breakdown::default(),
        };
        if let Some(m) = active.iter().position(|&a| a == i) {
            let (b, case, ram, vram, streamed) = shares[m];
            dp.w = sol.w[m];
            dp.n = sol.n[m];
            dp.case = case;
            dp.is_head = m == head_pos;
            dp.output_on_gpu = dp.is_head && out_gpu;
            dp.ram_need = ram as u64;
            dp.vram_need = vram as u64;
            dp.disk_bytes = streamed as u64;
            dp.ms = b;
        }
        out.push(dp);
    }
    Ok(Plan {
        model: cost.name.clone(),
        n_layer: cost.n_layer,
        n_ctx: opt.n_ctx,
        kv_ty: opt.kv_ty,
        k: sol.k,
        head: active[head_pos],
        devices: out,
        ms_per_token: sol.total,
        dropped,
        warnings: ctx.warnings,
    })
}

fn gib(b: u64) -> String {
    format!("{:.2}", b as f64 / GIB)
}

/// The plan as a table: per device layers, GPU layers, memory use vs budget, predicted ms.
pub fn render(p: &Plan) -> String {
    let mut s = String::new();
    let active = p.active();
    let windows: Vec<String> = p.devices.iter().map(|d| d.w.to_string()).collect();
    let _ = writeln!(
        s,
        "{}: {} layers, context {} ({} KV), k = {} round{} of windows {}",
        p.model,
        p.n_layer,
        p.n_ctx,
        p.kv_ty,
        p.k,
        if p.k == 1 { "" } else { "s" },
        windows.join(":")
    );
    let _ = writeln!(
        s,
        "{:<12} {:<7} {:>4} {:>6} {:>4} {:>15} {:>15} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "device",
        "os",
        "case",
        "layers",
        "gpu",
        "RAM GiB",
        "VRAM GiB",
        "disk GiB",
        "compute",
        "memory",
        "disk",
        "network",
        "total",
        ""
    );
    for &i in &active {
        let d = &p.devices[i];
        let mut role = String::new();
        if d.is_head {
            role.push_str(if d.output_on_gpu { "head(gpu)" } else { "head" });
        }
        let _ = writeln!(
            s,
            "{:<12} {:<7} {:>4} {:>6} {:>4} {:>15} {:>15} {:>9} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9}",
            d.name,
            d.os.to_string(),
            format!("{:?}", d.case),
            d.layers(p.k),
            d.n * p.k,
            format!("{}/{}", gib(d.ram_need), gib(d.ram_budget)),
            if d.vram_budget > 0 || d.vram_need > 0 {
                format!("{}/{}", gib(d.vram_need), gib(d.vram_budget))
            } else {
                "-".into()
            },
            if d.disk_bytes > 0 { gib(d.disk_bytes) } else { "-".into() },
            d.ms.compute,
            d.ms.memory,
            d.ms.disk,
            d.ms.network,
            d.ms.total(),
            role
        );
    }
    let _ = writeln!(s, "predicted: {:.1} ms/token ({:.2} tokens/s)", p.ms_per_token, 1e3 / p.ms_per_token);
    for d in &p.dropped {
        let _ = writeln!(s, "dropped {}: {}", d.name, d.reason);
    }
    for &i in &active {
        let d = &p.devices[i];
        if d.disk_bytes > 0 {
            let _ = writeln!(
                s,
                "note: {} needs {} GiB but has {} GiB: streams {} GiB per token from disk ({:?})",
                d.name,
                gib(d.ram_need),
                gib(d.ram_budget),
                gib(d.disk_bytes),
                d.case
            );
        }
    }
    for w in &p.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// `n` synthetic, varied devices (for the planner benchmark and tests) (phones, laptops, desktops with and without GPUs, Macs).
pub fn synthetic_devices(n: usize) -> Vec<DeviceProfile> {
    let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
    (0..n)
        .map(|i| {
            let kind = i % 4;
            let os = [Os::Linux, Os::MacOs, Os::Android, Os::Linux][kind];
            let mut p = DeviceProfile::new(&format!("dev{i:02}"), os);
            let q4k = [150.0, 60.0, 40.0, 250.0][kind] * (1.0 + (i % 5) as f64 * 0.1);
            p.cores = [8, 8, 8, 16][kind];
            p.cpu = [("f32", 0.6), ("f16", 0.8), ("q4_K", 1.0), ("q6_K", 0.8)]
                .iter()
                .map(|&(f, s)| Throughput { format: f.into(), threads: p.cores, gflops: q4k * s })
                .collect();
            p.ram_read_gbps = [40.0, 60.0, 20.0, 50.0][kind];
            p.kv_append = KvAppend { fixed_us: 2.0, gbps: 10.0 };
            p.disk.seq_gbps = [3.0, 2.5, 1.4, 3.2][kind];
            p.disk.rnd_gbps = [0.4, 0.7, 0.2, 0.5][kind];
            p.memory = Memory {
                total: gib(16.0),
                available: gib([4.1, 2.4, 1.9, 9.7][kind] + (i % 3) as f64),
                ..Memory::default()
            };
            p.link = Some(Link { rtt_ms: 3.0 + (i % 5) as f64, gbps: 0.05 });
            if kind == 0 || kind == 3 || kind == 1 {
                let uma = kind == 1;
                p.gpu = Some(Gpu {
                    name: "gpu".into(),
                    backend: if uma { "metal" } else { "vulkan" }.into(),
                    uma,
                    mem_total: gib(8.0),
                    mem_free: gib([8.0, 5.3, 0.0, 11.0][kind]),
                    read_gbps: [380.0, 60.0, 0.0, 550.0][kind],
                    flops: p.cpu.iter().map(|t| Throughput { gflops: t.gflops * 10.0, ..t.clone() }).collect(),
                    kv_append: KvAppend { fixed_us: 10.0, gbps: 50.0 },
                    upload_ms: 0.05,
                    download_ms: 0.05,
                });
            }
            p
        })
        .collect()
}
