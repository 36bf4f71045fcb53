//! Scheduler tests: the in-tree ILP solver against known optima and brute force, model costs,
//! profile parsing, and Halda plans (insta snapshots in the top-level `snapshots/`).

use prima::sched::ilp::{self, Options, Problem, Solution};

const INF: f64 = f64::INFINITY;

/// xorshift64*: the tests' own seeded PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform integer in lo..=hi.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn f(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn solve(p: &Problem) -> Solution {
    ilp::solve(p, &Options::default()).unwrap()
}

fn obj(s: &Solution) -> f64 {
    match s {
        Solution::Optimal { obj, .. } => *obj,
        other => panic!("expected optimal, got {other:?}"),
    }
}

#[test]
fn ilp_knap01() {
    let mut p = Problem::new();
    let a = p.int_var(-60.0, 0.0, 1.0);
    let b = p.int_var(-100.0, 0.0, 1.0);
    let c = p.int_var(-120.0, 0.0, 1.0);
    p.le(&[(a, 10.0), (b, 20.0), (c, 30.0)], 50.0);
    let s = solve(&p);
    assert_eq!(s, Solution::Optimal { x: vec![0.0, 1.0, 1.0], obj: -220.0 });
    // LP relaxation: 240.
    let mut lp = p.clone();
    lp.integer = vec![false; 3];
    assert!((obj(&solve(&lp)) + 240.0).abs() < 1e-9);
}

#[test]
fn ilp_frac2d() {
    let mut p = Problem::new();
    let x = p.int_var(-1.0, 0.0, 10.0);
    let y = p.int_var(-1.0, 0.0, 10.0);
    p.le(&[(x, -1.0), (y, 1.0)], 1.0);
    p.le(&[(x, 3.0), (y, 2.0)], 12.0);
    p.le(&[(x, 2.0), (y, 3.0)], 12.0);
    assert!((obj(&solve(&p)) + 4.0).abs() < 1e-9);
    let mut lp = p.clone();
    lp.integer = vec![false; 2];
    match solve(&lp) {
        Solution::Optimal { x, obj } => {
            assert!((obj + 4.8).abs() < 1e-9);
            assert!((x[0] - 2.4).abs() < 1e-9 && (x[1] - 2.4).abs() < 1e-9);
        }
        s => panic!("{s:?}"),
    }
}

#[test]
fn ilp_parity_infeasible() {
    let mut p = Problem::new();
    let x = p.int_var(1.0, 0.0, 5.0);
    let y = p.int_var(1.0, 0.0, 5.0);
    p.equal(&[(x, 2.0), (y, 2.0)], 3.0);
    assert_eq!(solve(&p), Solution::Infeasible);
    let mut lp = p.clone();
    lp.integer = vec![false; 2];
    assert!((obj(&solve(&lp)) - 1.5).abs() < 1e-9);
}

#[test]
fn ilp_bknap() {
    let mut p = Problem::new();
    let x = p.int_var(-5.0, 0.0, 5.0);
    let y = p.int_var(-4.0, 0.0, 5.0);
    let z = p.int_var(-3.0, 0.0, 5.0);
    p.le(&[(x, 2.0), (y, 3.0), (z, 1.0)], 5.0);
    p.le(&[(x, 4.0), (y, 1.0), (z, 2.0)], 11.0);
    p.le(&[(x, 3.0), (y, 4.0), (z, 2.0)], 8.0);
    assert_eq!(solve(&p), Solution::Optimal { x: vec![2.0, 0.0, 1.0], obj: -13.0 });
}

#[test]
fn ilp_prima3() {
    let mut p = Problem::new();
    let w: Vec<usize> = [3.0, 2.0, 5.0].iter().map(|&c| p.int_var(c, 1.0, 12.0)).collect();
    let n: Vec<usize> = [-1.5, -0.5, -4.0].iter().map(|&c| p.int_var(c, 0.0, 12.0)).collect();
    p.equal(&[(w[0], 1.0), (w[1], 1.0), (w[2], 1.0)], 12.0);
    let cap = [6.0, 8.0, 12.0];
    let gcap = [0.0, 4.0, 10.0];
    for m in 0..3 {
        p.le(&[(n[m], 1.0), (w[m], -1.0)], 0.0);
        p.le(&[(w[m], 1.0), (n[m], -1.0)], cap[m]);
        p.le(&[(n[m], 1.0)], gcap[m]);
    }
    assert_eq!(solve(&p), Solution::Optimal { x: vec![1.0, 1.0, 10.0, 0.0, 1.0, 10.0], obj: 14.5 });
}

#[test]
fn lp_beale_does_not_cycle() {
    let mut p = Problem::new();
    let x4 = p.var(-0.75, 0.0, INF);
    let x5 = p.var(150.0, 0.0, INF);
    let x6 = p.var(-1.0 / 50.0, 0.0, INF);
    let x7 = p.var(6.0, 0.0, INF);
    p.le(&[(x4, 0.25), (x5, -60.0), (x6, -1.0 / 25.0), (x7, 9.0)], 0.0);
    p.le(&[(x4, 0.5), (x5, -90.0), (x6, -1.0 / 50.0), (x7, 3.0)], 0.0);
    p.le(&[(x6, 1.0)], 1.0);
    match solve(&p) {
        Solution::Optimal { x, obj } => {
            assert!((obj + 0.05).abs() < 1e-9, "{obj}");
            assert!((x[0] - 0.04).abs() < 1e-9 && (x[2] - 1.0).abs() < 1e-9, "{x:?}");
        }
        s => panic!("{s:?}"),
    }
}

#[test]
fn lp_unbounded_and_bad_input() {
    let mut p = Problem::new();
    let x = p.var(-1.0, 0.0, INF);
    let y = p.var(0.0, 0.0, INF);
    p.le(&[(x, 1.0), (y, -1.0)], 1.0);
    assert_eq!(solve(&p), Solution::Unbounded);

    let mut q = Problem::new();
    q.int_var(1.0, 0.0, INF);
    assert!(ilp::solve(&q, &Options::default()).is_err());
    let mut r = Problem::new();
    r.var(f64::NAN, 0.0, 1.0);
    assert!(ilp::solve(&r, &Options::default()).is_err());
    // Empty problem: optimal at nothing.
    assert_eq!(solve(&Problem::new()), Solution::Optimal { x: vec![], obj: 0.0 });
}

fn same(a: &Solution, b: &Solution, p: &Problem) -> bool {
    match (a, b) {
        (Solution::Infeasible, Solution::Infeasible) => true,
        (Solution::Optimal { x, obj: o1 }, Solution::Optimal { obj: o2, .. }) => {
            (o1 - o2).abs() <= 1e-7 * o2.abs().max(1.0) && p.is_feasible(x, 1e-6)
        }
        _ => false,
    }
}

#[test]
fn ilp_random_small_vs_brute_force() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut optimal, mut infeasible) = (0, 0);
    for case in 0..600 {
        let n = rng.int(1, 4) as usize;
        let mut p = Problem::new();
        for _ in 0..n {
            let lo = rng.int(-3, 2) as f64;
            let hi = lo + rng.int(0, 4) as f64;
            let c = rng.int(-6, 6) as f64 + if rng.int(0, 1) == 1 { rng.f(-0.5, 0.5) } else { 0.0 };
            p.int_var(c, lo, hi);
        }
        for _ in 0..rng.int(1, 4) {
            let mut terms = Vec::new();
            for j in 0..n {
                if rng.int(0, 3) > 0 {
                    terms.push((j, rng.int(-5, 5) as f64));
                }
            }
            // Right-hand sides near the activity of a random box point, so both outcomes occur.
            let act: f64 = terms.iter().map(|&(j, a)| a * rng.int(p.lo[j] as i64, p.hi[j] as i64) as f64).sum();
            match rng.int(0, 4) {
                0 | 1 => p.le(&terms, act + rng.int(-3, 3) as f64),
                2 => p.ge(&terms, act + rng.int(-3, 3) as f64),
                3 => p.equal(&terms, act + rng.int(-1, 1) as f64),
                _ => p.row(&terms, act - rng.int(0, 2) as f64, act + rng.int(-1, 4) as f64),
            }
        }
        let got = solve(&p);
        let want = ilp::brute_force(&p, 1 << 20).unwrap();
        assert!(same(&got, &want, &p), "case {case}: {p:?}\n got {got:?}\nwant {want:?}");
        match want {
            Solution::Optimal { .. } => optimal += 1,
            _ => infeasible += 1,
        }
        // Deterministic: the same problem gives the identical answer.
        assert_eq!(got, solve(&p));
    }
    // The generator exercises both outcomes.
    assert!(optimal > 150 && infeasible > 50, "{optimal} optimal, {infeasible} infeasible");
}

/// Halda's ILP shape: Σw = W, n ≤ w, w − n ≤ cap, n ≤ gcap, w ≥ 1.
fn prima_shaped(rng: &mut Rng, m: usize, w_total: usize) -> (Problem, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut p = Problem::new();
    let a: Vec<f64> = (0..m).map(|_| rng.f(0.5, 40.0)).collect();
    let b: Vec<f64> = (0..m).map(|_| if rng.int(0, 2) == 0 { 0.0 } else { -rng.f(0.0, a[0].min(30.0)) }).collect();
    let cap: Vec<f64> = (0..m).map(|_| rng.f(0.0, w_total as f64 * 0.8)).collect();
    let gcap: Vec<f64> = (0..m).map(|i| if b[i] == 0.0 { 0.0 } else { rng.f(0.0, w_total as f64 * 0.7) }).collect();
    let wt = w_total as f64;
    let w: Vec<usize> = (0..m).map(|i| p.int_var(a[i], 1.0, wt)).collect();
    let n: Vec<usize> = (0..m).map(|i| p.int_var(b[i], 0.0, wt)).collect();
    p.equal(&w.iter().map(|&j| (j, 1.0)).collect::<Vec<_>>(), wt);
    for i in 0..m {
        p.le(&[(n[i], 1.0), (w[i], -1.0)], 0.0);
        p.le(&[(w[i], 1.0), (n[i], -1.0)], cap[i]);
        p.le(&[(n[i], 1.0)], gcap[i]);
    }
    (p, a, b, cap, gcap)
}

/// Oracle: enumerate every composition of W; given w, each n_m is optimal at an end of its range.
fn prima_oracle(a: &[f64], b: &[f64], cap: &[f64], gcap: &[f64], w_total: usize) -> Option<f64> {
    fn rec(i: usize, left: usize, acc: f64, a: &[f64], b: &[f64], cap: &[f64], gcap: &[f64], best: &mut Option<f64>) {
        let m = a.len();
        if i == m {
            if left == 0 && best.is_none_or(|b| acc < b) {
                *best = Some(acc);
            }
            return;
        }
        for w in 1..=left.saturating_sub(m - 1 - i) {
            let lo = (w as f64 - cap[i]).ceil().max(0.0);
            let hi = (w as f64).min((gcap[i] + 1e-9).floor());
            if lo > hi {
                continue;
            }
            let n = if b[i] < 0.0 { hi } else { lo };
            rec(i + 1, left - w, acc + a[i] * w as f64 + b[i] * n, a, b, cap, gcap, best);
        }
    }
    let mut best = None;
    rec(0, w_total, 0.0, a, b, cap, gcap, &mut best);
    best
}

#[test]
fn ilp_prima_shaped_vs_oracle() {
    let mut rng = Rng(0xda7a_5eed);
    for case in 0..150 {
        let m = rng.int(2, 4) as usize;
        let l = [16usize, 32, 40][rng.int(0, 2) as usize];
        let divisors: Vec<usize> = (1..=l).filter(|k| l % k == 0 && l / k >= m).collect();
        let k = divisors[rng.int(0, divisors.len() as i64 - 1) as usize];
        let wt = l / k;
        let (p, a, b, cap, gcap) = prima_shaped(&mut rng, m, wt);
        let got = solve(&p);
        match prima_oracle(&a, &b, &cap, &gcap, wt) {
            None => assert_eq!(got, Solution::Infeasible, "case {case}"),
            Some(want) => {
                let o = obj(&got);
                assert!((o - want).abs() < 1e-7 * want.abs().max(1.0), "case {case}: {o} vs {want}\n{p:?}");
            }
        }
    }
}
