//! Which devices take part: the head of a set, and device removal (drop the devices whose
//! removal makes the plan faster, re-solve on the rest; a model that fits one strong device
//! may run best there alone).

use super::Dropped;
use super::cost::{Ctx, Dev, Set, Solved, output_on_gpu};
use crate::error::Result;
use crate::profile::DeviceProfile;

/// The devices kept (input indices), the best solution on them (with the head's position in
/// the set and whether the LM head runs on its GPU), and the devices dropped, with reasons.
pub(super) type Selection = (Vec<usize>, Option<(Solved, usize, bool)>, Vec<Dropped>);

pub(super) fn select(ctx: &Ctx, devs: &[Dev], profiles: &[DeviceProfile]) -> Result<Selection> {
    let (cost, opt) = (ctx.cost, ctx.opt);
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
    Ok((active, cur, dropped))
}

/// The head of a set: the pinned device, else the one with the largest memory budget.
pub(super) fn pick_head(devs: &[&Dev], pinned: Option<usize>) -> usize {
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
