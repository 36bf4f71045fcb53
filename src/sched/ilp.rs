//! A small exact MILP solver: dense bounded-variable primal simplex plus branch and bound.
//!
//! Sized for Halda (≤ 2M integer variables, ≤ 1 + 3M rows, M ≤ a few dozen): a dense tableau is
//! cheaper than anything clever at that size. The recipe is in `rust-notes.md` §7:
//! - canonical form `min cᵀx, row_lo ≤ Ax ≤ row_hi, lo ≤ x ≤ hi`; one slack per row (`Ax − s = 0`,
//!   `s` bounded by the row's range), so the all-slack basis is a valid start;
//! - phase 1 minimises the sum of basic bound violations (composite), phase 2 the objective;
//!   Dantzig pricing, switching to Bland's rule after a run of degenerate pivots (no cycling);
//! - rows and objective scaled by powers of two; periodic refactoring from scratch;
//! - branch and bound on the most fractional variable, DFS dive to the first incumbent, then
//!   best bound; incumbents are rounded and re-checked against the original rows.
//!
//! Deterministic: the same problem gives the same answer (ties go to the lowest index).

#![allow(clippy::needless_range_loop)] // dense numeric loops read best with indices

use crate::error::{Error, Result};

const PIVOT_TOL: f64 = 1e-9;
const COST_TOL: f64 = 1e-9;
const FEAS_TOL: f64 = 1e-7;
const INT_TOL: f64 = 1e-6;
const CHECK_TOL: f64 = 1e-6;

/// One constraint row: `lo ≤ Σ coef·x[var] ≤ hi` (either side may be infinite).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub terms: Vec<(usize, f64)>,
    pub lo: f64,
    pub hi: f64,
}

/// `minimise cost·x` subject to rows and bounds; `integer[j]` marks integer variables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Problem {
    pub cost: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    pub integer: Vec<bool>,
    pub rows: Vec<Row>,
}

impl Problem {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a continuous variable; returns its index.
    pub fn var(&mut self, cost: f64, lo: f64, hi: f64) -> usize {
        self.cost.push(cost);
        self.lo.push(lo);
        self.hi.push(hi);
        self.integer.push(false);
        self.cost.len() - 1
    }

    /// Add an integer variable (its bounds must be finite); returns its index.
    pub fn int_var(&mut self, cost: f64, lo: f64, hi: f64) -> usize {
        let j = self.var(cost, lo, hi);
        self.integer[j] = true;
        j
    }

    pub fn row(&mut self, terms: &[(usize, f64)], lo: f64, hi: f64) {
        self.rows.push(Row { terms: terms.to_vec(), lo, hi });
    }
    pub fn le(&mut self, terms: &[(usize, f64)], hi: f64) {
        self.row(terms, f64::NEG_INFINITY, hi)
    }
    pub fn ge(&mut self, terms: &[(usize, f64)], lo: f64) {
        self.row(terms, lo, f64::INFINITY)
    }
    pub fn equal(&mut self, terms: &[(usize, f64)], v: f64) {
        self.row(terms, v, v)
    }

    pub fn n_vars(&self) -> usize {
        self.cost.len()
    }

    pub fn objective(&self, x: &[f64]) -> f64 {
        self.cost.iter().zip(x).map(|(c, x)| c * x).sum()
    }

    /// Every bound and row holds within `tol` (absolute, scaled by the row's magnitude).
    pub fn is_feasible(&self, x: &[f64], tol: f64) -> bool {
        let bounds = (0..self.n_vars()).all(|j| x[j] >= self.lo[j] - tol && x[j] <= self.hi[j] + tol);
        bounds
            && self.rows.iter().all(|r| {
                let (mut v, mut mag) = (0.0, 1.0f64);
                for &(j, a) in &r.terms {
                    v += a * x[j];
                    mag = mag.max((a * x[j]).abs());
                }
                v >= r.lo - tol * mag && v <= r.hi + tol * mag
            })
    }

    fn validate(&self) -> Result<()> {
        let n = self.n_vars();
        if self.lo.len() != n || self.hi.len() != n || self.integer.len() != n {
            return Err(Error::msg("ILP: cost, bounds and integrality vectors differ in length"));
        }
        for j in 0..n {
            if !self.cost[j].is_finite() || self.lo[j].is_nan() || self.hi[j].is_nan() {
                return Err(Error::msg(format!("ILP: variable {j} has a non-finite cost or a NaN bound")));
            }
            if self.integer[j] && !(self.lo[j].is_finite() && self.hi[j].is_finite()) {
                return Err(Error::msg(format!("ILP: integer variable {j} needs finite bounds")));
            }
        }
        for (i, r) in self.rows.iter().enumerate() {
            if r.lo.is_nan() || r.hi.is_nan() || r.terms.iter().any(|&(j, a)| j >= n || !a.is_finite()) {
                return Err(Error::msg(format!("ILP: row {i} has a bad coefficient, variable index or NaN bound")));
            }
        }
        Ok(())
    }
}

/// The outcome of [`solve`].
#[derive(Clone, Debug, PartialEq)]
pub enum Solution {
    Optimal {
        x: Vec<f64>,
        obj: f64,
    },
    Infeasible,
    /// The LP relaxation is unbounded below (only possible with unbounded continuous variables).
    Unbounded,
    /// The node or pivot limit was hit; `best` is the incumbent so far (feasible, maybe not optimal).
    Limit {
        best: Option<(Vec<f64>, f64)>,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub max_nodes: usize,
    /// Pivots per LP solve.
    pub max_pivots: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_nodes: 200_000, max_pivots: 50_000 }
    }
}

// ---------------------------------------------------------------------------------------------
// LP: bounded dense primal simplex on [A | −I] z = 0.

enum Lp {
    Optimal(Vec<f64>),
    Infeasible,
    Unbounded,
    Limit,
}

/// The scaled problem data shared by every node.
struct LpData {
    m: usize,
    n: usize,
    /// m × n, row-major, rows scaled.
    a: Vec<f64>,
    /// n + m costs (slacks cost nothing), scaled.
    cost: Vec<f64>,
    /// Slack bounds (scaled row ranges).
    row_lo: Vec<f64>,
    row_hi: Vec<f64>,
}

fn pow2_scale(max_abs: f64) -> f64 {
    if max_abs > 0.0 && max_abs.is_finite() { (-(max_abs.log2().round())).exp2() } else { 1.0 }
}

impl LpData {
    fn new(p: &Problem) -> Self {
        let n = p.n_vars();
        let rows: Vec<&Row> = p.rows.iter().filter(|r| r.lo.is_finite() || r.hi.is_finite()).collect();
        let m = rows.len();
        let mut a = vec![0.0; m * n];
        let (mut row_lo, mut row_hi) = (vec![0.0; m], vec![0.0; m]);
        for (i, r) in rows.iter().enumerate() {
            for &(j, v) in &r.terms {
                a[i * n + j] += v;
            }
            let s = pow2_scale(a[i * n..(i + 1) * n].iter().fold(0.0f64, |m, v| m.max(v.abs())));
            a[i * n..(i + 1) * n].iter_mut().for_each(|v| *v *= s);
            row_lo[i] = r.lo * s;
            row_hi[i] = r.hi * s;
        }
        let cs = pow2_scale(p.cost.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        let mut cost: Vec<f64> = p.cost.iter().map(|c| c * cs).collect();
        cost.resize(n + m, 0.0);
        LpData { m, n, a, cost, row_lo, row_hi }
    }

    /// Solve with structural bounds `lo`, `hi`; returns the structural x.
    fn solve(&self, lo: &[f64], hi: &[f64], max_pivots: usize) -> Lp {
        let (m, n) = (self.m, self.n);
        let nc = n + m;
        if (0..n).any(|j| lo[j] > hi[j]) || (0..m).any(|i| self.row_lo[i] > self.row_hi[i]) {
            return Lp::Infeasible;
        }
        let mut lb: Vec<f64> = lo.to_vec();
        lb.extend_from_slice(&self.row_lo);
        let mut ub: Vec<f64> = hi.to_vec();
        ub.extend_from_slice(&self.row_hi);
        let mut t = Tableau { m, nc, t: vec![0.0; m * nc], basis: (n..nc).collect(), pos: vec![usize::MAX; nc] };
        for i in 0..m {
            t.pos[n + i] = i;
        }
        let mut val: Vec<f64> = (0..nc)
            .map(|j| {
                if lb[j].is_finite() {
                    lb[j]
                } else if ub[j].is_finite() {
                    ub[j]
                } else {
                    0.0
                }
            })
            .collect();
        if !t.refactor(self, &mut val) {
            return Lp::Limit;
        }

        let mut pivots = 0usize;
        let mut degenerate_run = 0usize;
        let mut since_refactor = 0usize;
        let mut rechecks = 0usize;
        let mut cb = vec![0.0; m];
        let mut d = vec![0.0; nc];
        loop {
            if pivots > max_pivots {
                return Lp::Limit;
            }
            // Phase: any basic variable out of its bounds?
            let mut phase1 = false;
            for i in 0..m {
                let b = t.basis[i];
                cb[i] = if val[b] < lb[b] - FEAS_TOL {
                    phase1 = true;
                    -1.0
                } else if val[b] > ub[b] + FEAS_TOL {
                    phase1 = true;
                    1.0
                } else {
                    0.0
                };
            }
            if !phase1 {
                for i in 0..m {
                    cb[i] = self.cost[t.basis[i]];
                }
            }
            // Reduced costs of nonbasic variables.
            for j in 0..nc {
                d[j] = if t.pos[j] != usize::MAX {
                    0.0
                } else {
                    let mut s = if phase1 { 0.0 } else { self.cost[j] };
                    for i in 0..m {
                        if cb[i] != 0.0 {
                            s -= cb[i] * t.t[i * nc + j];
                        }
                    }
                    s
                };
            }
            let bland = degenerate_run > 30;
            let mut enter: Option<(usize, f64)> = None;
            let mut best = 0.0;
            for j in 0..nc {
                if t.pos[j] != usize::MAX {
                    continue;
                }
                let dir = if d[j] < -COST_TOL && val[j] < ub[j] - FEAS_TOL * 1e-3 {
                    1.0
                } else if d[j] > COST_TOL && val[j] > lb[j] + FEAS_TOL * 1e-3 {
                    -1.0
                } else {
                    continue;
                };
                if bland {
                    enter = Some((j, dir));
                    break;
                }
                if d[j].abs() > best {
                    best = d[j].abs();
                    enter = Some((j, dir));
                }
            }
            let Some((j, dir)) = enter else {
                // No improving direction: verify on a fresh factorisation before concluding.
                if rechecks < 3 && since_refactor > 0 {
                    rechecks += 1;
                    since_refactor = 0;
                    if !t.refactor(self, &mut val) {
                        return Lp::Limit;
                    }
                    continue;
                }
                if phase1 {
                    return Lp::Infeasible;
                }
                return Lp::Optimal(val[..n].to_vec());
            };

            // Ratio test: the entering variable's own bound flip, then each basic variable.
            let mut step = ub[j] - lb[j];
            let mut leave: Option<(usize, f64)> = None; // (row, bound value the leaving var takes)
            let mut leave_alpha = 0.0;
            for i in 0..m {
                let alpha = -t.t[i * nc + j] * dir;
                if alpha.abs() < PIVOT_TOL {
                    continue;
                }
                let b = t.basis[i];
                let v = val[b];
                let (limit, bound) = if alpha < 0.0 {
                    if phase1 && v > ub[b] + FEAS_TOL {
                        ((v - ub[b]) / -alpha, ub[b])
                    } else if v >= lb[b] - FEAS_TOL && lb[b].is_finite() {
                        (((v - lb[b]) / -alpha).max(0.0), lb[b])
                    } else {
                        continue;
                    }
                } else if phase1 && v < lb[b] - FEAS_TOL {
                    ((lb[b] - v) / alpha, lb[b])
                } else if v <= ub[b] + FEAS_TOL && ub[b].is_finite() {
                    (((ub[b] - v) / alpha).max(0.0), ub[b])
                } else {
                    continue;
                };
                let better = match leave {
                    _ if limit < step - 1e-12 => true,
                    None => limit <= step,
                    Some((r, _)) if limit <= step + 1e-12 => {
                        if bland {
                            b < t.basis[r]
                        } else {
                            alpha.abs() > leave_alpha
                        }
                    }
                    _ => false,
                };
                if better {
                    step = limit.min(step);
                    leave = Some((i, bound));
                    leave_alpha = alpha.abs();
                }
            }
            if !step.is_finite() {
                if phase1 {
                    // Cannot happen in exact arithmetic (the phase 1 objective is bounded); refactor.
                    if !t.refactor(self, &mut val) {
                        return Lp::Limit;
                    }
                    pivots += 1;
                    continue;
                }
                return Lp::Unbounded;
            }
            if step < 1e-12 {
                degenerate_run += 1;
            } else {
                degenerate_run = 0;
            }
            pivots += 1;
            for i in 0..m {
                let alpha = -t.t[i * nc + j] * dir;
                val[t.basis[i]] += alpha * step;
            }
            val[j] += dir * step;
            match leave {
                None => val[j] = if dir > 0.0 { ub[j] } else { lb[j] },
                Some((r, bound)) => {
                    let out = t.basis[r];
                    t.pivot(r, j);
                    val[out] = bound;
                    since_refactor += 1;
                    if since_refactor >= 64 {
                        since_refactor = 0;
                        if !t.refactor(self, &mut val) {
                            return Lp::Limit;
                        }
                    }
                }
            }
        }
    }
}

struct Tableau {
    m: usize,
    nc: usize,
    /// B⁻¹ [A | −I], m × nc.
    t: Vec<f64>,
    basis: Vec<usize>,
    /// Row of a basic variable, usize::MAX when nonbasic.
    pos: Vec<usize>,
}

impl Tableau {
    fn pivot(&mut self, r: usize, j: usize) {
        let nc = self.nc;
        let p = self.t[r * nc + j];
        for v in &mut self.t[r * nc..(r + 1) * nc] {
            *v /= p;
        }
        let (before, rest) = self.t.split_at_mut(r * nc);
        let (prow, after) = rest.split_at_mut(nc);
        for row in before.chunks_exact_mut(nc).chain(after.chunks_exact_mut(nc)) {
            let f = row[j];
            if f != 0.0 {
                for (x, y) in row.iter_mut().zip(prow.iter()) {
                    *x -= f * y;
                }
                row[j] = 0.0;
            }
        }
        let out = self.basis[r];
        self.pos[out] = usize::MAX;
        self.basis[r] = j;
        self.pos[j] = r;
    }

    /// Rebuild B⁻¹[A | −I] from the original data and recompute the basic values.
    fn refactor(&mut self, lp: &LpData, val: &mut [f64]) -> bool {
        let (m, n, nc) = (self.m, lp.n, self.nc);
        let col = |j: usize, i: usize| {
            if j < n {
                lp.a[i * n + j]
            } else if j - n == i {
                -1.0
            } else {
                0.0
            }
        };
        // Gauss-Jordan on [B | A | −I].
        let mut t = vec![0.0; m * nc];
        let mut bmat = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..nc {
                t[i * nc + j] = col(j, i);
            }
            for (k, &bj) in self.basis.iter().enumerate() {
                bmat[i * m + k] = col(bj, i);
            }
        }
        for k in 0..m {
            let piv = (k..m).max_by(|&a, &b| bmat[a * m + k].abs().total_cmp(&bmat[b * m + k].abs())).unwrap();
            if bmat[piv * m + k].abs() < 1e-12 {
                return false;
            }
            if piv != k {
                for c in 0..m {
                    bmat.swap(k * m + c, piv * m + c);
                }
                for c in 0..nc {
                    t.swap(k * nc + c, piv * nc + c);
                }
            }
            let p = bmat[k * m + k];
            for c in 0..m {
                bmat[k * m + c] /= p;
            }
            for c in 0..nc {
                t[k * nc + c] /= p;
            }
            for i in 0..m {
                if i != k {
                    let f = bmat[i * m + k];
                    if f != 0.0 {
                        for c in 0..m {
                            bmat[i * m + c] -= f * bmat[k * m + c];
                        }
                        for c in 0..nc {
                            t[i * nc + c] -= f * t[k * nc + c];
                        }
                    }
                }
            }
        }
        self.t = t;
        for (i, &b) in self.basis.iter().enumerate() {
            let mut s = 0.0;
            for j in 0..nc {
                if self.pos[j] == usize::MAX {
                    s -= self.t[i * nc + j] * val[j];
                }
            }
            val[b] = s;
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Branch and bound.

struct Node {
    lo: Vec<f64>,
    hi: Vec<f64>,
    bound: f64,
    seq: usize,
}

/// Solve a MILP (or an LP when no variable is integer) exactly.
pub fn solve(p: &Problem, opt: &Options) -> Result<Solution> {
    p.validate()?;
    let n = p.n_vars();
    let lp = LpData::new(p);
    let mut lo = p.lo.clone();
    let mut hi = p.hi.clone();
    for j in 0..n {
        if p.integer[j] {
            lo[j] = (lo[j] - INT_TOL).ceil();
            hi[j] = (hi[j] + INT_TOL).floor();
        }
    }
    let mut open = vec![Node { lo, hi, bound: f64::NEG_INFINITY, seq: 0 }];
    let mut seq = 1;
    let mut incumbent: Option<(Vec<f64>, f64)> = None;
    let mut nodes = 0usize;
    let prune = |bound: f64, inc: &Option<(Vec<f64>, f64)>| match inc {
        Some((_, best)) => bound >= best - 1e-9 * best.abs().max(1.0),
        None => false,
    };
    while !open.is_empty() {
        // DFS until the first incumbent, then best bound (lowest sequence number on ties).
        let node = if incumbent.is_none() {
            open.pop().unwrap()
        } else {
            let idx = (0..open.len())
                .min_by(|&a, &b| open[a].bound.total_cmp(&open[b].bound).then(open[a].seq.cmp(&open[b].seq)))
                .unwrap();
            open.swap_remove(idx)
        };
        if prune(node.bound, &incumbent) {
            continue;
        }
        nodes += 1;
        if nodes > opt.max_nodes {
            return Ok(Solution::Limit { best: incumbent });
        }
        let x = match lp.solve(&node.lo, &node.hi, opt.max_pivots) {
            Lp::Optimal(x) => x,
            Lp::Infeasible => continue,
            Lp::Unbounded => {
                if nodes == 1 {
                    return Ok(Solution::Unbounded);
                }
                continue;
            }
            Lp::Limit => return Ok(Solution::Limit { best: incumbent }),
        };
        let obj = p.objective(&x);
        if prune(obj, &incumbent) {
            continue;
        }
        // Most fractional integer variable, lowest index on ties.
        let mut branch: Option<(usize, f64)> = None;
        for j in 0..n {
            if p.integer[j] {
                let f = x[j] - x[j].floor();
                let dist = f.min(1.0 - f);
                if dist > INT_TOL && branch.is_none_or(|(_, b)| dist > b + 1e-12) {
                    branch = Some((j, dist));
                }
            }
        }
        match branch {
            None => {
                let mut xr = x.clone();
                for j in 0..n {
                    if p.integer[j] {
                        xr[j] = xr[j].round();
                    }
                }
                if p.is_feasible(&xr, CHECK_TOL) {
                    let o = p.objective(&xr);
                    if incumbent.as_ref().is_none_or(|(_, b)| o < *b) {
                        incumbent = Some((xr, o));
                    }
                }
            }
            Some((j, _)) => {
                let v = x[j];
                let mut down = Node { lo: node.lo.clone(), hi: node.hi.clone(), bound: obj, seq };
                down.hi[j] = v.floor();
                let mut up = Node { lo: node.lo, hi: node.hi, bound: obj, seq: seq + 1 };
                up.lo[j] = v.ceil();
                seq += 2;
                // The child pushed last is dived into first: the nearer one.
                if v - v.floor() < 0.5 {
                    open.push(up);
                    open.push(down);
                } else {
                    open.push(down);
                    open.push(up);
                }
            }
        }
    }
    Ok(match incumbent {
        Some((x, obj)) => Solution::Optimal { x, obj },
        None => Solution::Infeasible,
    })
}

/// Exhaustive search over every integer point of the box (all variables must be integer).
/// The test oracle, and a debug cross-check for small plans. Ties keep the first point in
/// lexicographic order.
pub fn brute_force(p: &Problem, max_points: u64) -> Result<Solution> {
    p.validate()?;
    if p.integer.iter().any(|i| !i) {
        return Err(Error::msg("brute force needs every variable integer"));
    }
    let n = p.n_vars();
    let lo: Vec<i64> = p.lo.iter().map(|v| (v - INT_TOL).ceil() as i64).collect();
    let hi: Vec<i64> = p.hi.iter().map(|v| (v + INT_TOL).floor() as i64).collect();
    if (0..n).any(|j| lo[j] > hi[j]) {
        return Ok(Solution::Infeasible);
    }
    let points = (0..n).try_fold(1u64, |acc, j| acc.checked_mul((hi[j] - lo[j] + 1) as u64));
    if points.is_none_or(|c| c > max_points) {
        return Err(Error::msg("brute force: box too large"));
    }
    let mut x: Vec<i64> = lo.clone();
    let mut best: Option<(Vec<f64>, f64)> = None;
    let mut xf = vec![0.0; n];
    loop {
        for j in 0..n {
            xf[j] = x[j] as f64;
        }
        if p.is_feasible(&xf, 1e-9) {
            let o = p.objective(&xf);
            if best.as_ref().is_none_or(|(_, b)| o < *b - 1e-12) {
                best = Some((xf.clone(), o));
            }
        }
        // Odometer increment, last variable fastest.
        let mut j = n;
        loop {
            if j == 0 {
                return Ok(match best {
                    Some((x, obj)) => Solution::Optimal { x, obj },
                    None => Solution::Infeasible,
                });
            }
            j -= 1;
            if x[j] < hi[j] {
                x[j] += 1;
                break;
            }
            x[j] = lo[j];
        }
    }
}
