//! Brute force over splits, for checking Halda (a bench helper): every k dividing L and every
//! way to cut L/k layers into windows over the devices (a window of 0 leaves the device out),
//! the head always in; GPU layers as many as the device's VRAM holds. Each split is priced by
//! the same cost model Halda plans with. Exponential in the device count: small clusters only.

use super::cost::{Dev, Set, output_on_gpu};
use super::{Options, Plan, context};
use crate::error::{Error, Result};
use crate::profile::DeviceProfile;
use crate::sched::model_cost::ModelCost;

/// A split and its predicted ms per token.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub k: u32,
    /// Window per device (input order; 0 = not in the ring) and GPU layers in it.
    pub w: Vec<u32>,
    pub n: Vec<u32>,
    pub ms: f64,
}

/// Most splits [`best_splits`] prices before it refuses (about a second of work).
pub const MAX_SPLITS: u64 = 3_000_000;

/// Compositions of `total` into `parts` non-negative parts.
fn count(total: u64, parts: u64) -> u64 {
    // C(total + parts − 1, parts − 1), saturating.
    let (n, k) = (total + parts - 1, parts - 1);
    let mut c: u64 = 1;
    for i in 0..k {
        c = c.saturating_mul(n - i) / (i + 1);
    }
    c
}

/// How many splits [`best_splits`] prices for `l` layers over `m` devices (k pinned or not).
pub fn split_count(l: u32, m: usize, k: Option<u32>) -> u64 {
    let ks: Vec<u32> = match k {
        Some(k) => vec![k],
        None => (1..=l).filter(|k| l.is_multiple_of(*k)).collect(),
    };
    ks.iter().fold(0u64, |n, &k| n.saturating_add(count((l / k) as u64, m.max(1) as u64)))
}

/// The `keep` fastest splits by the cost model, fastest first, with device `head` as the head.
pub fn best_splits(
    profiles: &[DeviceProfile],
    cost: &ModelCost,
    opt: &Options,
    head: usize,
    keep: usize,
) -> Result<Vec<Split>> {
    let (ctx, devs) = context(profiles, cost, opt)?;
    let m = devs.len();
    if head >= m {
        return Err(Error::msg(format!("head device {head} does not exist ({m} devices)")));
    }
    let l = cost.n_layer;
    let ks: Vec<u32> = match opt.k {
        Some(k) => vec![k],
        None => (1..=l).filter(|k| l.is_multiple_of(*k)).collect(),
    };
    let total = split_count(l, m, opt.k);
    if total > MAX_SPLITS {
        return Err(Error::msg(format!(
            "{total} splits of {l} layers over {m} devices: too many to search (at most {MAX_SPLITS}; pin -k)"
        )));
    }
    let mut best: Vec<Split> = Vec::new();
    let mut w = vec![0u32; m];
    for &k in &ks {
        let wt = l / k;
        // Odometer over compositions: w[0..m-1] free, the last takes the rest.
        loop {
            let used: u32 = w[..m - 1].iter().sum();
            if used <= wt {
                w[m - 1] = wt - used;
                if w[head] > 0 {
                    let ms = price(&ctx, &devs, head, k, &w, opt);
                    if let Some((ms, n)) = ms
                        && (best.len() < keep || ms < best[best.len() - 1].ms)
                    {
                        let at = best.partition_point(|s| s.ms <= ms);
                        best.insert(at, Split { k, w: w.clone(), n, ms });
                        best.truncate(keep);
                    }
                }
            }
            // Next composition.
            let mut i = 0;
            loop {
                if i == m - 1 {
                    break;
                }
                w[i] += 1;
                if w[..m - 1].iter().sum::<u32>() <= wt {
                    break;
                }
                w[i] = 0;
                i += 1;
            }
            if i == m - 1 {
                w.iter_mut().for_each(|x| *x = 0);
                break;
            }
        }
    }
    Ok(best)
}

/// Predicted ms of one split (None when a device that cannot stream is over its memory).
fn price(
    ctx: &super::cost::Ctx,
    devs: &[Dev],
    head: usize,
    k: u32,
    w: &[u32],
    opt: &Options,
) -> Option<(f64, Vec<u32>)> {
    let active: Vec<usize> = (0..w.len()).filter(|&i| w[i] > 0).collect();
    let head_pos = active.iter().position(|&i| i == head)?;
    let set: Vec<&Dev> = active.iter().map(|&i| &devs[i]).collect();
    let wa: Vec<u32> = active.iter().map(|&i| w[i]).collect();
    let bf = k as f64 * ctx.b_full;
    let mut best: Option<(f64, Vec<u32>)> = None;
    'placement: for out_gpu in [false, true] {
        if out_gpu && !output_on_gpu(set[head_pos], ctx.cost) {
            continue;
        }
        let s = Set { devs: set.clone(), head: head_pos, out_gpu };
        let na: Vec<u32> = (0..active.len())
            .map(|m| if s.devs[m].has_gpu { wa[m].min((ctx.vram_cap(&s, m) / bf + 1e-9).floor() as u32) } else { 0 })
            .collect();
        for m in 0..active.len() {
            let d = s.devs[m];
            if d.disk < opt.min_disk_gbps {
                let lay = if d.uma { wa[m] } else { wa[m] - na[m] } as f64;
                let budget = if d.uma && d.has_gpu { d.vram_budget } else { d.ram_budget };
                if lay * bf + ctx.fixed_bytes(&s, m, m == head_pos && out_gpu) > budget {
                    continue 'placement;
                }
            }
        }
        let (_, total) = ctx.evaluate(&s, k, &wa, &na);
        if best.as_ref().is_none_or(|(b, _)| total < *b) {
            best = Some((total, na));
        }
    }
    let (total, na) = best?;
    let mut n = vec![0u32; w.len()];
    for (m, &i) in active.iter().enumerate() {
        n[i] = na[m];
    }
    Some((total, n))
}

/// Halda's plan and the best split found over every head Halda may choose (the pinned one,
/// else any device), with that head.
pub fn compare(profiles: &[DeviceProfile], cost: &ModelCost, opt: &Options) -> Result<(Plan, Split, usize)> {
    let plan = super::plan(profiles, cost, opt)?;
    let heads: Vec<usize> = opt.head.map_or_else(|| (0..profiles.len()).collect(), |h| vec![h]);
    let mut best: Option<(Split, usize)> = None;
    for h in heads {
        if let Some(s) = best_splits(profiles, cost, opt, h, 1)?.into_iter().next()
            && best.as_ref().is_none_or(|(b, _)| s.ms < b.ms)
        {
            best = Some((s, h));
        }
    }
    let (best, head) = best.ok_or_else(|| Error::msg("no feasible split"))?;
    Ok((plan, best, head))
}
