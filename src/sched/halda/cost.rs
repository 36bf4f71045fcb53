//! Halda's cost model: each device's per-layer coefficients from its profile, and the exact
//! (piecewise) predicted time of a share, with prefetch overlap on streaming devices.

#![allow(clippy::needless_range_loop)] // per-device vectors are indexed in parallel

use super::{Breakdown, Case, Options};
use crate::error::{Error, Result};
use crate::profile::{DeviceProfile, Os};
use crate::quant::GgmlType;
use crate::sched::model_cost::ModelCost;

/// Everything about one device that does not depend on (w, n, k, case).
#[derive(Clone, Debug)]
pub(super) struct Dev {
    pub(super) idx: usize,
    pub(super) os: Os,
    pub(super) uma: bool,
    pub(super) has_gpu: bool,
    /// ms per layer on the CPU: compute, KV append + weight/KV reads.
    pub(super) cpu_comp: f64,
    pub(super) cpu_mem: f64,
    pub(super) gpu_comp: f64,
    pub(super) gpu_mem: f64,
    /// RAM↔VRAM hidden-state copies per window (0 on UMA).
    pub(super) copy: f64,
    /// One hop to the successor, ms.
    pub(super) hop: f64,
    /// Disk GB/s used for streaming (sequential on Linux/Android, random on macOS).
    pub(super) disk: f64,
    pub(super) ram_budget: f64,
    pub(super) vram_budget: f64,
    /// Head-only constants: output-layer compute and its memory reads (ms), where it runs.
    pub(super) out_ms_cpu: (f64, f64),
    pub(super) out_ms_gpu: Option<(f64, f64)>,
    /// A CPU quota below the threads the device runs: (quota in CPUs, threads).
    pub(super) quota: Option<(f64, f64)>,
}

pub(super) struct Ctx<'a> {
    pub(super) cost: &'a ModelCost,
    pub(super) opt: &'a Options,
    /// Layer bytes with its KV (b'), and weights only (b).
    pub(super) b_full: f64,
    pub(super) b_w: f64,
    pub(super) warnings: Vec<String>,
}

/// ms for `flops` on a backend with per-format GFLOPS from `tp`, falling back to the slowest
/// measured format when one is missing.
pub(super) fn flops_ms(flops: &[(GgmlType, f64)], tp: &dyn Fn(GgmlType) -> Option<f64>, fallback: f64) -> f64 {
    flops.iter().map(|&(ty, f)| f / (tp(ty).unwrap_or(fallback) * 1e6)).sum()
}

impl Ctx<'_> {
    pub(super) fn dev(&mut self, idx: usize, p: &DeviceProfile) -> Result<Dev> {
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
        let reserve = crate::memory::pager::reserve(p.memory.total) + self.opt.cpu_reserve;
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
            quota: p
                .cpu_quota
                .zip(p.cpu.iter().map(|t| t.threads).max())
                .map(|(q, t)| (q, t.max(1) as f64))
                .filter(|(q, t)| q < t),
        })
    }
}

/// Where the head's LM head runs: its GPU when the weights fit next to its GPU layers' budget.
pub(super) fn output_on_gpu(d: &Dev, cost: &ModelCost) -> bool {
    d.out_ms_gpu.is_some() && !d.uma && d.vram_budget >= cost.output_bytes as f64
}

/// A device set with its head (position in the set) and where the head runs the LM head.
pub(super) struct Set<'a> {
    pub(super) devs: Vec<&'a Dev>,
    pub(super) head: usize,
    pub(super) out_gpu: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Solved {
    pub(super) k: u32,
    pub(super) w: Vec<u32>,
    pub(super) n: Vec<u32>,
    pub(super) cases: Vec<Case>,
    pub(super) total: f64,
}

impl Ctx<'_> {
    /// Bytes the device must hold besides its layers.
    pub(super) fn fixed_bytes(&self, s: &Set, m: usize, out_gpu: bool) -> f64 {
        let mut b = 0.0;
        if m == s.head {
            b += self.cost.input_row_bytes as f64;
            if !out_gpu {
                b += self.cost.output_bytes as f64;
            }
        }
        b
    }

    pub(super) fn vram_cap(&self, s: &Set, m: usize) -> f64 {
        let d = s.devs[m];
        let out = if m == s.head && s.out_gpu { self.cost.output_bytes as f64 } else { 0.0 };
        (d.vram_budget - out).max(0.0)
    }

    /// The exact (piecewise) model of one device's share.
    pub(super) fn evaluate_dev(&self, s: &Set, m: usize, k: u32, w: u32, n: u32) -> (Breakdown, Case, f64, f64, f64) {
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
        if let Some((q, t)) = d.quota.filter(|_| s.devs.len() > 1) {
            // The CPU and RAM figures are the quota's long-run rate, but a ring device idles
            // between its turns and starts each with its whole period's quota: a turn shorter
            // than what the quota allows in a period runs at full speed (measured: a 0.625-CPU
            // device predicted 171 ms at the quota rate ran its turns in 100–115 ms).
            let turn = (b.compute + b.memory) / kf;
            if turn > 0.0 {
                let f = quota_turn_ms(turn * q / t, q, t) / turn;
                b.compute *= f;
                b.memory *= f;
            }
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
    pub(super) fn evaluate_all(&self, s: &Set, k: u32, w: &[u32], n: &[u32]) -> Vec<(Breakdown, Case, f64, f64, f64)> {
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

    pub(super) fn evaluate(&self, s: &Set, k: u32, w: &[u32], n: &[u32]) -> (Vec<Case>, f64) {
        let v = self.evaluate_all(s, k, w, n);
        (v.iter().map(|e| e.1).collect(), v.iter().map(|e| e.0.total()).sum())
    }
}

/// The CFS bandwidth period (cgroup v1 `cpu.cfs_period_us` and v2 `cpu.max` default, 100 ms);
/// profiles do not record a device's own.
const QUOTA_PERIOD_MS: f64 = 100.0;

/// Expected wall time of a turn that needs `full_ms` at full speed on `threads` threads under a
/// quota of `quota` CPUs per [`QUOTA_PERIOD_MS`], started with a whole period's quota at a
/// uniformly random point of a period (16 starting points averaged): it runs until the
/// period's quota is spent, waits for the next period, and so on.
pub(super) fn quota_turn_ms(full_ms: f64, quota: f64, threads: f64) -> f64 {
    const STARTS: usize = 16;
    let p = QUOTA_PERIOD_MS;
    let mut sum = 0.0;
    for i in 0..STARTS {
        // Each period (the first included) starts with its whole quota.
        let (mut cpu_left, mut t) = (full_ms * threads, 0.0);
        let mut into = p * i as f64 / STARTS as f64;
        // At most a few thousand periods: a turn of minutes is far past any plan.
        for _ in 0..100_000 {
            let run = (cpu_left / threads).min(quota * p / threads).min(p - into);
            t += run;
            cpu_left -= run * threads;
            into += run;
            if cpu_left <= 1e-9 {
                break;
            }
            // Quota spent or period over: the next period starts with a full quota.
            t += p - into;
            into = 0.0;
        }
        sum += t;
    }
    sum / STARTS as f64
}
