//! Inpainting, interpolation and variations against exact laws of Gaussian data, whose
//! σ-smoothed score is exact at every level.

use sgm::langevin::AnnealedConfig;
use sgm::noise::Sigmas;
use sgm::prelude::*;
use sgm::samplers::{sample, sample_quietly};
use sgm::variations::{variation_sampler, Inpainting, Interpolation};
use sgm_tests::{from_slice, rng_lock, test_device};

fn f(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// N(μ, Σ) in 2D with Σ = [[a, c], [c, b]]: the exact smoothed score −(Σ + σ² I)⁻¹ (x − μ), σ
/// read from the first row (the samplers use one level per call).
fn correlated(mu: [f64; 2], a: f64, b: f64, c: f64) -> impl Fn(&Tensor, &Tensor) -> Tensor {
    move |x: &Tensor, sigma: &Tensor| {
        let s2 = f(&sigma.get(0)).powi(2);
        let (a, b) = (a + s2, b + s2);
        let det = a * b - c * c;
        let inv = from_slice(&[b / det, -c / det, -c / det, a / det])
            .view([2, 2])
            .to_kind(Kind::Float);
        -(x - from_slice(&mu).to_kind(Kind::Float)).matmul(&inv)
    }
}

#[test]
fn inpainting_samples_the_conditional_gaussian() {
    let _rng = rng_lock();
    let (mu, a, b, c) = ([0.5, -1.0], 0.25, 0.25, 0.2);
    let score = correlated(mu, a, b, c);
    let sigmas = Sigmas::geometric(1.0, 0.05, 10).unwrap();
    let config = AnnealedConfig {
        steps_per_level: 200,
        eps: 1e-3,
        denoise: false,
        ..AnnealedConfig::ncsn()
    };
    let n = 20_000;
    let y0 = 0.9;
    let known = from_slice(&[y0 as f32, 0.0]).repeat([n, 1]);
    let mask = from_slice(&[1.0f32, 0.0]);
    let mut inpaint = Inpainting::new(sigmas.clone(), config.clone(), &known, &mask).unwrap();
    data::seed(11);
    let x0 = Tensor::randn([n, 2], (Kind::Float, test_device()));
    let x = sample_quietly(&mut inpaint, &score, &x0, None)
        .unwrap()
        .x
        .to_kind(Kind::Double);
    // The law the last level targets: the known coordinate is y0 + σ z' (z' per chain), the
    // other follows p_σ(x1 | x0): mean μ1 + k (y0 − μ0), variance (b + σ²) − c²/(a + σ²) + k² σ²,
    // k = c/(a + σ²). (σ → 0 gives the exact conditional of the data: mean μ1 + (c/a)(y0 − μ0),
    // variance b − c²/a.)
    let s2 = 0.05f64 * 0.05;
    let k = c / (a + s2);
    let mean = mu[1] + k * (y0 - mu[0]);
    let var = (b + s2) - c * c / (a + s2) + k * k * s2;
    let x1 = x.select(1, 1);
    let (got_mean, got_var) = (f(&x1.mean(Kind::Double)), f(&x1.var(true)));
    // Standard errors √(var/n) and var √(2/n); the Langevin chain's own bias at the last step
    // (Half convention, α = ε) is a variance factor 1/(1 − α/(4v)) ≈ 1.003; allow 5 SE + that.
    let n_f = n as f64;
    assert!(
        (got_mean - mean).abs() < 5.0 * (var / n_f).sqrt(),
        "mean {got_mean} vs {mean}"
    );
    assert!(
        (got_var - var).abs() < 5.0 * var * (2.0 / n_f).sqrt() + 0.004 * var,
        "variance {got_var} vs {var}"
    );
    // It is the conditional, not the marginal (variance b = 0.25, mean μ1 = −1).
    assert!(got_var < 0.5 * b && (got_mean - mu[1]).abs() > 0.2);
    // Known coordinate: y0 re-noised at the last level, |x0 − y0| ~ σ_L |z| (mean σ_L √(2/π)).
    let dev = f(&(x.select(1, 0) - y0).abs().mean(Kind::Double));
    let expected = 0.05 * (2.0 / std::f64::consts::PI).sqrt();
    assert!((dev / expected - 1.0).abs() < 0.05, "{dev} vs {expected}");

    // With the final denoising step the known pixels are the data exactly.
    let mut inpaint = Inpainting::new(
        sigmas.clone(),
        AnnealedConfig {
            denoise: true,
            steps_per_level: 20,
            ..config.clone()
        },
        &known,
        &mask,
    )
    .unwrap();
    let x = sample_quietly(&mut inpaint, &score, &x0, None).unwrap().x;
    assert!(x.select(1, 0).eq(y0).all().int64_value(&[]) == 1);

    // A mask that is not 0/1, or does not fit the data, is refused.
    assert!(Inpainting::new(
        sigmas.clone(),
        config.clone(),
        &known,
        &(mask.shallow_clone() * 0.5)
    )
    .is_err());
    assert!(Inpainting::new(
        sigmas,
        config,
        &known,
        &Tensor::ones([3], (Kind::Float, test_device()))
    )
    .is_err());
}

#[test]
fn interpolated_chains_are_annealed_chains_correlated_as_cos_of_their_angle() {
    let _rng = rng_lock();
    // Isotropic Gaussian data: every chain is linear in the start and the noise, so chains j
    // and j' driven by cos θ z_p + sin θ z_q (start included) have correlation exactly
    // cos(θ_j − θ_j') per coordinate, whatever the levels.
    let gauss = GaussianMixture::new(vec![1.0], vec![vec![0.0, 0.0]], vec![0.5]).unwrap();
    let sigmas = Sigmas::geometric(1.0, 0.05, 6).unwrap();
    let mut interp = Interpolation {
        sigmas,
        config: AnnealedConfig {
            steps_per_level: 20,
            eps: 1e-3,
            denoise: false,
            ..AnnealedConfig::ncsn()
        },
        steps: 5,
    };
    let rows = 8000;
    data::seed(12);
    let x0 = interp.start(rows, &[2], 1.0, test_device()).unwrap();
    assert_eq!(x0.size(), vec![rows * 5, 2]);
    let mut nfe = 0;
    let x = sample(&mut interp, &gauss, &x0, None, &mut |_| nfe += 1)
        .unwrap()
        .x;
    assert_eq!(nfe, 120);
    let chains = x.view([rows, 5, 2]).to_kind(Kind::Double);
    let corr = |i: i64, j: i64| {
        let (a, b) = (
            chains.select(1, i).flatten(0, -1),
            chains.select(1, j).flatten(0, -1),
        );
        let (a, b) = (&a - a.mean(Kind::Double), &b - b.mean(Kind::Double));
        f(&(&a * &b).mean(Kind::Double))
            / (f(&a.square().mean(Kind::Double)) * f(&b.square().mean(Kind::Double))).sqrt()
    };
    let m = (2 * rows) as f64;
    for (i, j) in [(0, 1), (0, 2), (1, 3), (0, 4)] {
        let expected = ((j - i) as f64 * std::f64::consts::FRAC_PI_8).cos();
        // Standard error of a correlation ≈ (1 − ρ²)/√m; allow 5 (and 0.005 for ρ ≈ 1).
        let tol = 5.0 * (1.0 - expected * expected) / m.sqrt() + 0.005;
        let got = corr(i, j);
        assert!(
            (got - expected).abs() < tol,
            "chains {i}, {j}: {got} vs {expected}"
        );
    }
    // The middle chain has the same law as an end chain (its noise has unit variance).
    let var = |j: i64| f(&chains.select(1, j).var(true));
    assert!(
        (var(2) / var(0) - 1.0).abs() < 5.0 * (4.0 / m).sqrt(),
        "{} vs {}",
        var(2),
        var(0)
    );
    interp.steps = 1;
    assert!(interp.start(2, &[2], 1.0, test_device()).is_err());
}

#[test]
fn variations_stray_further_from_larger_levels() {
    let _rng = rng_lock();
    // Two narrow, far-apart modes: from the smallest level a variation stays in its mode,
    // within a few of the mode's 0.05; from the largest it may land in either.
    let mix = GaussianMixture::new(
        vec![0.5, 0.5],
        vec![vec![-2.0, 0.0], vec![2.0, 0.0]],
        vec![0.05, 0.05],
    )
    .unwrap();
    let sigmas = Sigmas::geometric(3.0, 0.01, 10).unwrap();
    let config = AnnealedConfig {
        steps_per_level: 50,
        eps: 2e-5,
        denoise: true,
        ..AnnealedConfig::ncsn()
    };
    data::seed(13);
    let y = mix.sample(4000, test_device()).unwrap();
    let mut distances = Vec::new();
    let mut switched = Vec::new();
    for level in [9usize, 5, 0] {
        let (start, mut sampler) = variation_sampler(&y, &sigmas, level, &config).unwrap();
        let out = sample_quietly(&mut sampler, &mix, &start, None).unwrap();
        assert_eq!(out.nfe, 50 * (10 - level) + 1);
        distances.push(f(&(&out.x - &y)
            .square()
            .sum_dim_intlist(1, false, Kind::Double)
            .sqrt()
            .mean(Kind::Double)));
        switched.push(f(&mix
            .nearest_mode(&out.x)
            .ne_tensor(&mix.nearest_mode(&y))
            .to_kind(Kind::Double)
            .mean(Kind::Double)));
    }
    // From σ = 0.01: within the mode (a fresh draw of the same mode is 0.05 √(π) ≈ 0.09 away on
    // average; allow 3 mode widths), none switched.
    assert!(
        distances[0] < 0.15 && switched[0] == 0.0,
        "{distances:?} {switched:?}"
    );
    assert!(
        distances[0] < distances[1] && distances[1] < distances[2],
        "{distances:?}"
    );
    // From σ = 3 the start forgets its mode: about half switch (the modes have equal weight).
    assert!((switched[2] - 0.5).abs() < 0.1, "{switched:?}");
    assert!(variation_sampler(&y, &sigmas, 10, &config).is_err());
}
