use prima::sampler::{Rng, Sampler, SamplerConfig, argmax};

fn cfg(temperature: f32) -> SamplerConfig {
    SamplerConfig { temperature, top_k: 0, top_p: 1.0, min_p: 0.0, repeat_penalty: 1.0, seed: 7, ..Default::default() }
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    assert_eq!(argmax(&[0.5, 2.0, 2.0, -1.0]), 1);
    let mut s = Sampler::new(cfg(0.0));
    assert_eq!(s.sample(&[0.1, 0.3, 0.2]), 1);
}

#[test]
fn same_seed_same_tokens() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let run = |seed| {
        let mut s = Sampler::new(SamplerConfig { seed, ..cfg(1.0) });
        (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn temperature_sampling_follows_softmax() {
    let logits = [1.0f32, 2.0, 0.0, 1.5];
    let z: f32 = logits.iter().map(|l| l.exp()).sum();
    let mut s = Sampler::new(cfg(1.0));
    let n = 20_000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&logits) as usize] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let p = logits[i].exp() / z;
        let got = c as f32 / n as f32;
        assert!((got - p).abs() < 0.015, "token {i}: {got} vs {p}");
    }
}

#[test]
fn top_k_top_p_and_min_p_cut_the_tail() {
    let logits = [3.0f32, 2.9, 0.0, -1.0, -5.0];
    for c in [
        SamplerConfig { top_k: 2, ..cfg(5.0) },
        SamplerConfig { top_p: 0.6, ..cfg(5.0) },
        SamplerConfig { min_p: 0.5, ..cfg(5.0) },
    ] {
        let mut s = Sampler::new(c.clone());
        for _ in 0..500 {
            let t = s.sample(&logits);
            assert!(t <= 1, "{c:?} sampled {t}");
        }
    }
}

#[test]
fn repetition_penalty_discourages_recent_tokens() {
    let logits = [2.0f32, 1.9, 0.0];
    let mut s = Sampler::new(SamplerConfig { repeat_penalty: 1.5, ..cfg(0.0) });
    assert_eq!(s.sample(&logits), 0);
    s.accept(0);
    assert_eq!(s.sample(&logits), 1);
}

#[test]
fn rng_is_uniform_enough() {
    let mut r = Rng::new(3);
    let n = 100_000;
    let mean: f64 = (0..n).map(|_| r.next_f32() as f64).sum::<f64>() / n as f64;
    assert!((mean - 0.5).abs() < 0.01, "{mean}");
}
