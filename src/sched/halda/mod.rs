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
//!
//! Split by concern: [`cost`] (per-device coefficients and the exact predicted time of a
//! share), `solve` (one device set: cases, ILPs, polishing), `devices` (which devices take
//! part), and here the public types and the assembly of a [`Plan`].

mod cost;
mod devices;
mod render;
pub mod search;
mod solve;

pub use super::testbeds::synthetic_devices;
pub use render::render;

use super::ilp;
use super::model_cost::ModelCost;
use crate::error::{Error, Result};
use crate::profile::{DeviceProfile, Link, Os};
use crate::quant::GgmlType;
use cost::{Ctx, Dev, Set, Solved};

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
    /// Per-device CPU memory for compute buffers and what the runtime allocates after its
    /// profile was taken, bytes, on top of the pager's slack ([`crate::memory::pager::reserve`]:
    /// 24 MiB + 1/64). The budget is then the pager's own: a share planned to fit stays
    /// resident, and one planned to stream streams what the pager streams (with a sixth of
    /// a 1 GiB device reserved instead, the plan had shares stream that the pager kept).
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
            cpu_reserve: 16 << 20,
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

fn check_inputs(profiles: &[DeviceProfile], cost: &ModelCost, opt: &Options) -> Result<()> {
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
    Ok(())
}

fn context<'a>(profiles: &[DeviceProfile], cost: &'a ModelCost, opt: &'a Options) -> Result<(Ctx<'a>, Vec<Dev>)> {
    check_inputs(profiles, cost, opt)?;
    let b_w = cost.layer_bytes;
    let b_full = b_w + cost.kv_bytes_per_layer(opt.n_ctx, opt.kv_ty);
    let mut ctx = Ctx { cost, opt, b_full, b_w, warnings: Vec::new() };
    let devs: Vec<Dev> = profiles.iter().enumerate().map(|(i, p)| ctx.dev(i, p)).collect::<Result<_>>()?;
    Ok((ctx, devs))
}

/// Plan a model on a set of devices.
pub fn plan(profiles: &[DeviceProfile], cost: &ModelCost, opt: &Options) -> Result<Plan> {
    let (ctx, devs) = context(profiles, cost, opt)?;
    let (active, cur, dropped) = devices::select(&ctx, &devs, profiles)?;
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
    let plan = assemble(ctx, &devs, profiles, &active, sol, head_pos, out_gpu, dropped);
    exhaustive_on_small_clusters(profiles, cost, opt, plan)
}

/// Splits below which [`plan`] also prices every split ([`search::best_splits`]) and takes the
/// best when Halda's heuristics (which cannot see prefetch overlap) missed it: a few thousand
/// evaluations, milliseconds, for three devices.
pub const EXHAUSTIVE_SPLITS: u64 = 20_000;

fn exhaustive_on_small_clusters(
    profiles: &[DeviceProfile],
    cost: &ModelCost,
    opt: &Options,
    plan: Plan,
) -> Result<Plan> {
    let heads: Vec<usize> = opt.head.map_or_else(|| (0..profiles.len()).collect(), |h| vec![h]);
    let splits = search::split_count(cost.n_layer, profiles.len(), opt.k).saturating_mul(heads.len() as u64);
    if !opt.allow_removal || splits > EXHAUSTIVE_SPLITS {
        return Ok(plan);
    }
    let mut found: Option<(search::Split, usize)> = None;
    for h in heads {
        if let Some(s) = search::best_splits(profiles, cost, opt, h, 1)?.into_iter().next()
            && found.as_ref().is_none_or(|(b, _)| s.ms < b.ms)
        {
            found = Some((s, h));
        }
    }
    let Some((best, head)) = found else { return Ok(plan) };
    if best.ms >= plan.ms_per_token * (1.0 - 1e-9) {
        return Ok(plan);
    }
    let mut better = evaluate(profiles, cost, opt, head, best.k, &best.w, &best.n)?;
    better.warnings = plan.warnings;
    better.dropped = (0..profiles.len())
        .filter(|&i| best.w[i] == 0)
        .map(|i| Dropped {
            device: i,
            name: profiles[i].name.clone(),
            reason: format!("the best split found by exhaustive search leaves it out ({:.1} ms/token)", best.ms),
        })
        .collect();
    Ok(better)
}

/// A fixed split: the predicted time of windows `w` (GPU layers `n`) per device (input order;
/// 0 = not in the ring) with `k` rounds, the head at input index `head`, by the same cost model
/// Halda plans with. For searches over splits (bench helpers) and calibration.
pub fn evaluate(
    profiles: &[DeviceProfile],
    cost: &ModelCost,
    opt: &Options,
    head: usize,
    k: u32,
    w: &[u32],
    n: &[u32],
) -> Result<Plan> {
    let (ctx, devs) = context(profiles, cost, opt)?;
    if w.len() != profiles.len() || n.len() != profiles.len() {
        return Err(Error::msg("evaluate: one window and one GPU count per device"));
    }
    if w.get(head).is_none_or(|&x| x == 0) {
        return Err(Error::msg(format!("evaluate: the head (device {head}) has no window")));
    }
    if k == 0 || w.iter().sum::<u32>() * k != cost.n_layer || w.iter().zip(n).any(|(w, n)| n > w) {
        return Err(Error::msg(format!("evaluate: windows {w:?} × k = {k} do not cover {} layers", cost.n_layer)));
    }
    let active: Vec<usize> = (0..w.len()).filter(|&i| w[i] > 0).collect();
    let head_pos = active.iter().position(|&i| i == head).expect("the head is active");
    let set: Vec<&Dev> = active.iter().map(|&i| &devs[i]).collect();
    let (wa, na): (Vec<u32>, Vec<u32>) = active.iter().map(|&i| (w[i], n[i])).unzip();
    // The LM head on the head's GPU where that is faster, as Halda chooses.
    let mut best: Option<(Solved, bool)> = None;
    for out_gpu in [false, true] {
        if out_gpu && !cost::output_on_gpu(set[head_pos], cost) {
            continue;
        }
        let s = Set { devs: set.clone(), head: head_pos, out_gpu };
        if out_gpu && na[head_pos] as f64 * k as f64 * ctx.b_full > ctx.vram_cap(&s, head_pos) {
            continue; // the LM head does not fit next to the GPU layers
        }
        let (cases, total) = ctx.evaluate(&s, k, &wa, &na);
        if best.as_ref().is_none_or(|(b, _)| total < b.total - 1e-9) {
            best = Some((Solved { k, w: wa.clone(), n: na.clone(), cases, total }, out_gpu));
        }
    }
    let (sol, out_gpu) = best.expect("the CPU placement is always priced");
    Ok(assemble(ctx, &devs, profiles, &active, sol, head_pos, out_gpu, Vec::new()))
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    ctx: Ctx,
    devs: &[Dev],
    profiles: &[DeviceProfile],
    active: &[usize],
    sol: Solved,
    head_pos: usize,
    out_gpu: bool,
    mut dropped: Vec<Dropped>,
) -> Plan {
    let cost = ctx.cost;
    let opt = ctx.opt;
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
    Plan {
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
    }
}
