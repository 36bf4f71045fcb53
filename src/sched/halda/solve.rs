//! Halda's solver on a fixed device set: case assignments M1–M4, one ILP per divisor k of L,
//! calibration (forced M4), local search over cases, and polishing with the exact model.

#![allow(clippy::needless_range_loop)] // per-device vectors are indexed in parallel

use super::super::ilp::{self, Problem, Solution};
use super::Case;
use super::cost::{Ctx, Set, Solved};
use crate::error::Result;

impl Ctx<'_> {
    /// Build and solve the ILP for one k and one case assignment.
    pub(super) fn solve_k(&self, s: &Set, cases: &[Case], k: u32) -> Result<Option<(Vec<u32>, Vec<u32>)>> {
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

    pub(super) fn classify(&self, s: &Set, k: u32, w: &[u32], n: &[u32], forced: &[bool]) -> Vec<Case> {
        (0..s.devs.len()).map(|m| if forced[m] { Case::M4 } else { self.evaluate_dev(s, m, k, w[m], n[m]).1 }).collect()
    }

    /// Halda on a fixed device set (Algorithm 1, with the best evaluated plan kept).
    pub(super) fn solve_set(&self, s: &Set) -> Result<Option<Solved>> {
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

    pub(super) fn remember(&self, per_k: &mut Vec<Solved>, sol: Solved) {
        match per_k.iter_mut().find(|x| x.k == sol.k) {
            Some(x) if sol.total < x.total - 1e-9 => *x = sol,
            Some(_) => {}
            None => per_k.push(sol),
        }
    }

    /// Hill climbing on (w, n) with the exact model: move one layer between two devices, or one
    /// layer between a device's CPU and GPU, while every GPU stays within its VRAM and devices
    /// that cannot stream stay within RAM. Takes the best move each step; deterministic.
    pub(super) fn polish(&self, s: &Set, mut sol: Solved) -> Solved {
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
pub(super) fn proportional(weights: &[f64], total: u32, m: usize) -> Vec<u32> {
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
