//! The sampler family against exact laws. The data are a Gaussian `N(μ, v I)` (one-component
//! mixture), whose smoothed score `−(x − μ)/(v + σ²)` is exact at every σ, so every sampler's
//! output law is known in closed form:
//!
//! * the reverse-diffusion chain is linear-Gaussian: from `x ~ N(μ, V_i)` one step gives mean
//!   factor `a_i = 1 − g_i²/(v + σ_i²)` and variance `a_i² V_i + g_i²` (without the noise on the
//!   last, denoised step);
//! * the probability-flow ODE maps each point deterministically:
//!   `x(σ) − μ = (x(σ_max) − μ) √((v + σ²)/(v + σ_max²))`;
//! * predictor-corrector can only move the predictor's law towards `p_σ`;
//! * EDM's stochastic sampler keeps `p_σ` at every level up to its Heun steps' error, whatever
//!   noise it adds back.

use sgm::likelihood::{self, bits_per_dim, Divergence, LikelihoodConfig};
use sgm::nets::{ConditionedSimpleResnet, ResnetConfig};
use sgm::noise::Sigmas;
use sgm::prelude::*;
use sgm::samplers::{
    sample, sample_quietly, AdaptiveFlow, EdmStochastic, OdeMethod, PredictorCorrector,
    ProbabilityFlow, ReverseDiffusion, Sampler, Tolerances, Visits,
};
use sgm_tests::{from_slice, rng_lock, test_device};

const MU: [f64; 2] = [1.0, -2.0];
const V: f64 = 0.25; // data variance (std 0.5)

fn gaussian() -> GaussianMixture {
    GaussianMixture::new(vec![1.0], vec![MU.to_vec()], vec![V.sqrt()]).unwrap()
}

/// `n` points of the exact `p_σ = N(μ, (v + σ²) I)`.
fn start(n: i64, sigma: f64) -> Tensor {
    Tensor::randn([n, 2], (Kind::Float, test_device())) * (V + sigma * sigma).sqrt()
        + from_slice(&MU).to_kind(Kind::Float)
}

/// Per-coordinate mean (pooled over the two coordinates after removing μ) and variance.
fn moments(x: &Tensor) -> (f64, f64) {
    let c = x.to_kind(Kind::Double) - from_slice(&MU);
    (
        c.mean(Kind::Double).double_value(&[]),
        c.var(true).double_value(&[]),
    )
}

#[test]
fn reverse_diffusion_follows_its_exact_linear_gaussian_law() {
    let _rng = rng_lock();
    let sigmas = Sigmas::geometric(5.0, 0.05, 20).unwrap();
    let n = 200_000;
    for denoise in [false, true] {
        data::seed(1);
        let x0 = start(n, sigmas.max());
        let mut sampler = ReverseDiffusion {
            sigmas: sigmas.clone(),
            denoise,
        };
        let out = sample_quietly(&mut sampler, &gaussian(), &x0, Some(2)).unwrap();
        assert_eq!(out.nfe, 20);
        // The exact law of the chain: mean stays μ, variance by the recursion.
        let mut var = V + sigmas.max().powi(2);
        let levels = sigmas.values();
        for i in 0..levels.len() {
            let next = levels.get(i + 1).copied().unwrap_or(0.0);
            let g2 = levels[i].powi(2) - next * next;
            let a = 1.0 - g2 / (V + levels[i].powi(2));
            let last = i + 1 == levels.len();
            var = a * a * var + if last && denoise { 0.0 } else { g2 };
        }
        let (mean, got) = moments(&out.x);
        // Standard errors over 2n values: mean √(var/2n), variance var √(2/(2n)); allow 5.
        let m = 2.0 * n as f64;
        assert!(mean.abs() < 5.0 * (var / m).sqrt(), "mean {mean}");
        assert!(
            (got - var).abs() < 5.0 * var * (2.0 / m).sqrt(),
            "denoise {denoise}: variance {got}, exact {var}"
        );
    }
}

#[test]
fn predictor_corrector_moves_the_predictor_towards_the_target() {
    let _rng = rng_lock();
    // Few levels, so the predictor alone ends visibly off the data's law N(μ, v) (its exact
    // recursion above gives variance 0.595 against v = 0.25) and the corrector has work: a
    // moment recursion of the corrector (ε = 2 (snr ‖z‖/‖s‖)², contraction (1 − ε/(v + σ²))²)
    // predicts 0.372 with two steps at snr 0.3, i.e. the error cut to 0.36 of the predictor's.
    let sigmas = Sigmas::geometric(5.0, 0.1, 6).unwrap();
    let n = 100_000;
    let mut err = Vec::new();
    for n_corrector in [0, 2] {
        data::seed(3);
        let x0 = start(n, sigmas.max());
        let mut pc = PredictorCorrector {
            sigmas: sigmas.clone(),
            snr: 0.3,
            n_corrector,
            denoise: false,
        };
        let mut calls = 0;
        let out = sample(&mut pc, &gaussian(), &x0, Some(4), &mut |_| calls += 1).unwrap();
        assert_eq!(
            (out.nfe, calls),
            (6 * (1 + n_corrector), 6 * (1 + n_corrector))
        );
        let (_, var) = moments(&out.x);
        err.push((var - V).abs());
    }
    // Standard error of each variance ≈ 0.6 √(2/2n) ≈ 0.003, far below both figures.
    assert!(err[0] > 0.3, "the predictor alone: error {}", err[0]);
    assert!(err[1] < 0.6 * err[0], "{err:?}");
}

#[test]
fn edm_stochastic_sampler_keeps_the_exact_law_and_is_heun_without_churn() {
    let _rng = rng_lock();
    let sigmas = Sigmas::karras(5.0, 0.05, 40, 7.0).unwrap();
    data::seed(6);
    let x0 = start(100_000, sigmas.max());
    // Without churn it is the probability-flow ODE by Heun over the same levels.
    let mut heun = ProbabilityFlow {
        sigmas: sigmas.clone(),
        method: OdeMethod::Heun,
        denoise: false,
    };
    let plain = sample_quietly(&mut heun, &gaussian(), &x0, None).unwrap();
    let mut edm = EdmStochastic {
        s_churn: 0.0,
        denoise: false,
        ..EdmStochastic::new(sigmas.clone())
    };
    let out = sample_quietly(&mut edm, &gaussian(), &x0, Some(1)).unwrap();
    assert_eq!(out.nfe, 2 * 39);
    let diff = (&out.x - &plain.x).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
    // With the most churn at every level (γ = √2 − 1) the chain adds noise back and still ends
    // at p_σmin = N(μ, v + σ_min²), variance 0.2525, up to its steps' error, which shrinks
    // about as 1/L (0.0064 at 40 levels, 0.0013 at 160 seen; standard error of the pooled
    // variance 0.2525 √(2/200,000) = 0.0008). Adding back the wrong amount of noise (σ̂ for
    // √(σ̂² − σ²), or none) converges to another variance.
    let mut errors = Vec::new();
    for levels in [40, 160] {
        let mut edm = EdmStochastic {
            s_churn: 1e9,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
            denoise: false,
            ..EdmStochastic::new(Sigmas::karras(5.0, 0.05, levels, 7.0).unwrap())
        };
        let out = sample_quietly(&mut edm, &gaussian(), &x0, Some(2)).unwrap();
        let (mean, var) = moments(&out.x);
        assert!(mean.abs() < 0.005, "{mean}");
        errors.push((var - 0.2525).abs());
    }
    println!("EDM stochastic: variance error {errors:.4?} at 40 and 160 levels");
    assert!(errors[1] < 0.004 && errors[1] < errors[0], "{errors:?}");
    // Denoised: one more evaluation.
    let mut edm = EdmStochastic::new(sigmas.clone());
    assert_eq!(
        sample_quietly(&mut edm, &gaussian(), &x0.narrow(0, 0, 10), Some(2))
            .unwrap()
            .nfe,
        2 * 39 + 1
    );
    // Where no step adds noise it visits only its levels (so a network with a table of levels
    // can take it); otherwise up to the largest raised level, here the second level's, since
    // the first lies above s_tmax.
    let quiet = EdmStochastic {
        s_churn: 0.0,
        ..EdmStochastic::new(sigmas.clone())
    };
    assert_eq!(quiet.visits(), Visits::Levels(sigmas.values().to_vec()));
    let second = sigmas.values()[1];
    let above = EdmStochastic {
        s_churn: 1e9,
        s_tmin: 0.0,
        s_tmax: (sigmas.max() + second) / 2.0,
        ..EdmStochastic::new(sigmas.clone())
    };
    match above.visits() {
        Visits::Continuous { max, min } => {
            assert!(
                (max - second * std::f64::consts::SQRT_2).abs() < 1e-12,
                "{max}"
            );
            assert_eq!(min, sigmas.min());
        }
        other => panic!("{other:?}"),
    }
    // Bad settings are named.
    for (bad, name) in [
        (
            EdmStochastic {
                s_churn: -1.0,
                ..EdmStochastic::new(sigmas.clone())
            },
            "s_churn",
        ),
        (
            EdmStochastic {
                s_noise: 0.0,
                ..EdmStochastic::new(sigmas.clone())
            },
            "s_noise",
        ),
        (
            EdmStochastic {
                s_tmin: 2.0,
                s_tmax: 1.0,
                ..EdmStochastic::new(sigmas.clone())
            },
            "s_tmin",
        ),
    ] {
        let mut bad = bad;
        let err = sample_quietly(&mut bad, &gaussian(), &x0.narrow(0, 0, 10), None).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn karras_levels_are_even_in_sigma_to_the_one_over_rho() {
    // ρ = 1: evenly spaced in σ; the ends exactly as given.
    let s = Sigmas::karras(5.0, 1.0, 5, 1.0).unwrap();
    for (got, want) in s.values().iter().zip([5.0, 4.0, 3.0, 2.0, 1.0]) {
        assert!((got - want).abs() < 1e-12, "{:?}", s.values());
    }
    let s = Sigmas::karras(80.0, 0.002, 18, 7.0).unwrap();
    assert_eq!((s.max(), s.min()), (80.0, 0.002));
    // EDM's 18 levels: the second is (80^(1/7) + (0.002^(1/7) − 80^(1/7))/17)^7 = 57.59.
    assert!((s.values()[1] - 57.586).abs() < 0.01, "{:?}", s.values());
    // Very large ρ: the geometric schedule.
    let g = Sigmas::geometric(80.0, 0.002, 18).unwrap();
    let k = Sigmas::karras(80.0, 0.002, 18, 1e6).unwrap();
    for (a, b) in k.values().iter().zip(g.values()) {
        assert!((a / b - 1.0).abs() < 1e-4, "{a} vs {b}");
    }
    let err = Sigmas::karras(80.0, 0.002, 18, 0.0).unwrap_err();
    assert!(err.to_string().contains("rho"), "{err}");
    assert!(Sigmas::karras(1.0, 2.0, 5, 7.0).is_err());
}

/// Max over points of |x − exact flow map of x0|.
fn flow_error(method: OdeMethod, levels: usize, x0: &Tensor) -> f64 {
    let sigmas = Sigmas::geometric(5.0, 0.05, levels).unwrap();
    let mut ode = ProbabilityFlow {
        sigmas,
        method,
        denoise: false,
    };
    let out = sample_quietly(&mut ode, &gaussian(), x0, None).unwrap();
    let expected_nfe = match method {
        OdeMethod::Euler => levels - 1,
        OdeMethod::Heun => 2 * (levels - 1),
    };
    assert_eq!(out.nfe, expected_nfe);
    let mu = from_slice(&MU).to_kind(Kind::Float);
    let exact = (x0 - &mu) * ((V + 0.05f64.powi(2)) / (V + 25.0)).sqrt() + &mu;
    (out.x - exact).abs().max().double_value(&[])
}

#[test]
fn probability_flow_solvers_converge_at_their_order() {
    let _rng = rng_lock();
    data::seed(5);
    let x0 = start(1000, 5.0);
    // Halving the step (in ln σ) divides Euler's global error by 2 and Heun's by 4; a wrong
    // slope (σ for σ², a sign) stops the convergence altogether.
    let euler: Vec<f64> = [41, 81, 161]
        .iter()
        .map(|&l| flow_error(OdeMethod::Euler, l, &x0))
        .collect();
    let heun: Vec<f64> = [41, 81, 161]
        .iter()
        .map(|&l| flow_error(OdeMethod::Heun, l, &x0))
        .collect();
    for w in euler.windows(2) {
        assert!((1.7..2.3).contains(&(w[0] / w[1])), "Euler {euler:?}");
    }
    for w in heun.windows(2) {
        assert!((3.4..4.6).contains(&(w[0] / w[1])), "Heun {heun:?}");
    }
    assert!(heun[0] < euler[2], "Heun {heun:?} Euler {euler:?}");
}

#[test]
fn adaptive_flow_meets_its_tolerance_and_counts_evaluations() {
    let _rng = rng_lock();
    data::seed(6);
    let x0 = start(1000, 5.0);
    let mu = from_slice(&MU).to_kind(Kind::Float);
    let exact = (&x0 - &mu) * ((V + 0.05f64.powi(2)) / (V + 25.0)).sqrt() + &mu;
    let mut previous: Option<(f64, usize)> = None;
    for tol in [1e-3, 1e-5] {
        let mut ode = AdaptiveFlow {
            sigma_max: 5.0,
            sigma_min: 0.05,
            tolerances: Tolerances {
                rtol: tol,
                atol: tol,
            },
            denoise: false,
        };
        let mut calls = 0;
        let out = sample(&mut ode, &gaussian(), &x0, None, &mut |_| calls += 1).unwrap();
        assert_eq!(out.nfe, calls);
        let err = (out.x - &exact).abs().max().double_value(&[]);
        // The solver controls the local error per step to ~tol·(1 + |x|) (|x| ≤ 5 here); its
        // global error stays within a few tens of that over the ~10-40 steps it takes.
        assert!(err < 100.0 * tol, "tol {tol}: error {err}");
        if let Some((e, nfe)) = previous {
            assert!(
                err < e && out.nfe > nfe,
                "tighter tolerance: error {e} -> {err}, nfe {nfe} -> {}",
                out.nfe
            );
        }
        previous = Some((err, out.nfe));
    }
    // Bad settings are typed errors.
    let mut bad = AdaptiveFlow {
        sigma_max: 0.05,
        sigma_min: 5.0,
        tolerances: Tolerances::default(),
        denoise: false,
    };
    assert!(matches!(
        sample_quietly(&mut bad, &gaussian(), &x0, None),
        Err(Error::InvalidParameter {
            name: "sigma_min",
            ..
        })
    ));
    let mut pc = PredictorCorrector::new(Sigmas::ncsn());
    pc.snr = 0.0;
    assert!(matches!(
        sample_quietly(&mut pc, &gaussian(), &x0, None),
        Err(Error::InvalidParameter { name: "snr", .. })
    ));
}

#[test]
fn index_networks_are_sampled_only_at_their_levels() {
    let _rng = rng_lock();
    let sigmas = Sigmas::geometric(1.0, 0.1, 4).unwrap();
    let vs = nn::VarStore::new(test_device());
    let config = ResnetConfig {
        in_channels: 1,
        out_channels: 1,
        n_filters: 4,
        n_blocks: 1,
        sigmas: sigmas.clone(),
        divide_by_sigma: false,
    };
    let net = ConditionedSimpleResnet::new(&vs.root(), &config).unwrap();
    let x0 = Tensor::rand([2, 1, 8, 8], (Kind::Float, test_device()));
    // Its own levels: fine.
    let mut ok = ReverseDiffusion {
        sigmas: sigmas.clone(),
        denoise: true,
    };
    assert_eq!(sample_quietly(&mut ok, &net, &x0, None).unwrap().nfe, 4);
    // Other levels, or any σ in between: refused before the first evaluation.
    let other = Sigmas::geometric(1.0, 0.1, 7).unwrap();
    let samplers: Vec<Box<dyn Sampler>> = vec![
        Box::new(ProbabilityFlow {
            sigmas: other,
            method: OdeMethod::Heun,
            denoise: false,
        }),
        Box::new(AdaptiveFlow::new(&sigmas)),
    ];
    for mut s in samplers {
        let mut calls = 0;
        match sample(s.as_mut(), &net, &x0, None, &mut |_| calls += 1) {
            Err(Error::UntrainedLevel { levels: 4, .. }) => assert_eq!(calls, 0),
            other => panic!("{}: {other:?}", s.name()),
        }
    }
    assert!(matches!(
        likelihood::log_likelihood(&net, &x0, &LikelihoodConfig::new(0.1, 1.0)),
        Err(Error::UntrainedLevel { .. })
    ));
}

#[test]
fn ode_likelihood_matches_the_exact_log_density_of_a_mixture() {
    let _rng = rng_lock();
    // A 2D mixture with its exact smoothed score; held-out points drawn from it.
    let mix = GaussianMixture::new(
        vec![0.3, 0.7],
        vec![vec![-1.5, 0.0], vec![1.0, 1.0]],
        vec![0.3, 0.5],
    )
    .unwrap();
    data::seed(7);
    let x = mix.sample(200, test_device()).unwrap();
    let (lo, hi) = (0.01, 20.0);
    let cfg = LikelihoodConfig::new(lo, hi);
    let out = likelihood::log_likelihood(&mix, &x, &cfg).unwrap();
    let exact = mix
        .log_density_smoothed(&x, &Tensor::full([200], lo, (Kind::Float, test_device())))
        .to_kind(Kind::Double);
    // With the exact prior p_σmax at the ODE's end point, only the solver's error remains:
    // tolerances 1e-5 on a log-density change of a few nats.
    let prior = mix
        .log_density_smoothed(
            &out.x_end,
            &Tensor::full([200], hi, (Kind::Float, test_device())),
        )
        .to_kind(Kind::Double);
    let err = (&prior + &out.delta - &exact).abs().max().double_value(&[]);
    assert!(err < 1e-3, "max error {err} nats");
    // The Gaussian prior N(0, σ_max² I) ignores the data's mean m̄ = (0.25, 0.7): at x_end ~
    // N(m̄, σ_max² I) the log-density it misses is ≈ x_end·m̄/σ_max², whose mean absolute value
    // is √(2/π) |m̄|/σ_max = 0.030 nats; allow 1.5 times that (the spread's c/σ_max² is 100× less).
    let gauss_err = (&out.log_p - &exact)
        .abs()
        .mean(Kind::Double)
        .double_value(&[]);
    let bias = (2.0 / std::f64::consts::PI).sqrt() * (0.25f64.hypot(0.7)) / hi;
    assert!(
        gauss_err < 1.5 * bias,
        "Gaussian prior: mean error {gauss_err}, expected about {bias}"
    );
    // Hutchinson's estimate is unbiased: over the 200 points, the mean difference to the exact
    // divergence's result is within 5 standard errors of 0 (and each point within reason).
    let hutch = likelihood::log_likelihood(
        &mix,
        &x,
        &LikelihoodConfig {
            divergence: Divergence::Hutchinson,
            ..cfg
        },
    )
    .unwrap();
    let diff = (&hutch.log_p - &out.log_p).to_kind(Kind::Double);
    let (m, s) = (
        diff.mean(Kind::Double).double_value(&[]),
        diff.std(true).double_value(&[]),
    );
    assert!(
        s > 0.0,
        "Hutchinson's estimate equals the exact divergence everywhere?"
    );
    assert!(
        m.abs() < 5.0 * s / 200f64.sqrt(),
        "mean difference {m}, std {s}"
    );
    println!("ODE likelihood: max error {err:.2e} nats (exact prior), {gauss_err:.2e} (Gaussian prior), {} NFE; Hutchinson mean diff {m:.3} ± {:.3}", out.nfe, s / 200f64.sqrt());
}

#[test]
fn bits_per_dim_of_uniform_8_bit_data_is_8() {
    // Uniform data on [0, 1]^D has log-density 0; on [−1, 1]^D, −D ln 2. Both are 8 bits per
    // dimension of 256 equally likely pixel values, whatever the scaling.
    let d = 784;
    let zero = Tensor::zeros([3], (Kind::Double, test_device()));
    let unit = bits_per_dim(&zero, d, 1.0).unwrap();
    let centred = bits_per_dim(&(zero - d as f64 * std::f64::consts::LN_2), d, 2.0).unwrap();
    for b in [unit, centred] {
        assert!((b - 8.0).abs().max().double_value(&[]) < 1e-12);
    }
    assert!(bits_per_dim(&Tensor::zeros([1], (Kind::Double, test_device())), d, 0.0).is_err());
}

#[test]
fn diagnostics_record_each_level_and_animations_encode() {
    let _rng = rng_lock();
    use sgm::langevin::AnnealedConfig;
    use sgm::samplers::{AnnealedLangevinSampler, LevelDiagnostics};
    let sigmas = Sigmas::geometric(2.0, 0.1, 4).unwrap();
    let config = AnnealedConfig {
        steps_per_level: 5,
        eps: 1e-3,
        denoise: true,
        ..AnnealedConfig::ncsn()
    };
    let mut sampler = AnnealedLangevinSampler {
        sigmas: sigmas.clone(),
        config: config.clone(),
    };
    let mut diagnostics = LevelDiagnostics::default();
    let mut frames = Vec::new();
    data::seed(8);
    let x0 = start(4000, 2.0);
    let out = sample(&mut sampler, &gaussian(), &x0, None, &mut |e| {
        diagnostics.record(e);
        if e.step % 5 == 0 {
            frames.push((format!("σ = {}", e.sigma), e.x.copy()));
        }
    })
    .unwrap();
    assert_eq!(out.nfe, 21);
    // One row per level; the denoising evaluation joins the last level without a step size.
    let rows = &diagnostics.levels;
    assert_eq!(rows.len(), 4);
    for (row, &sigma) in rows.iter().zip(sigmas.values()) {
        assert_eq!(row.sigma, sigma);
        // NCSN Algorithm 1: α_i = ε σ_i²/σ_L², update x + α_i/2 s + √α_i z, i.e. step α_i/2
        // in the `Full` convention the diagnostics report.
        let alpha = 1e-3 * sigma * sigma / (0.1 * 0.1);
        assert!((row.step_size - alpha / 2.0).abs() < 1e-12 * alpha);
        assert_eq!(row.langevin_steps, 5);
        assert!(row.snr.is_finite() && row.snr > 0.0);
    }
    assert_eq!(rows[3].evaluations, 6);
    // At the first level the chain starts from p_σ1 itself, where ‖s‖ = ‖x − μ‖/(v + σ1²) has
    // mean √(π/2)/√(v + σ1²) (a χ with 2 degrees of freedom); its standard error over 4,000
    // points is 0.7%, allow 5% (the five small steps barely move the law). Then the norm
    // grows as σ falls (the score scales as 1/σ).
    let expected = (std::f64::consts::PI / 2.0).sqrt() / (V + 4.0f64).sqrt();
    assert!(
        (rows[0].score_norm / expected - 1.0).abs() < 0.05,
        "{} vs {expected}",
        rows[0].score_norm
    );
    assert!(rows.windows(2).all(|w| w[1].score_norm > w[0].score_norm));
    diagnostics.figure().unwrap();

    let animation = plots::Animation::particles(&frames, None, [-4.0, 6.0, -7.0, 3.0], 50).unwrap();
    assert_eq!(animation.len(), 5);
    let gif = animation.gif().unwrap();
    assert_eq!(&gif[..6], b"GIF89a");
    let one = plots::Animation::particles(&frames[..1], None, [-4.0, 6.0, -7.0, 3.0], 50).unwrap();
    assert!(gif.len() > 2 * one.gif().unwrap().len());
    let small = plots::Scatter::new("small", [0.0, 1.0, 0.0, 1.0]).unwrap();
    let mixed = vec![
        small.figure().unwrap(),
        plots::row(&[&small, &small]).unwrap(),
    ];
    assert!(plots::Animation::new(mixed, 50).is_err());
    assert!(plots::Animation::new(Vec::new(), 50).is_err());
}

#[test]
fn training_previews_are_drawn_every_k_epochs_and_written_as_they_go() {
    use sgm::training::{train, Previews};
    let _rng = rng_lock();
    let dir = sgm_tests::tmpdir("previews");
    let vs = nn::VarStore::new(test_device());
    let net = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    data::seed(9);
    let x = start(256, 0.0);
    let cfg = TrainConfig {
        epochs: 5,
        batch_size: 64,
        seed: Some(1),
        ..Default::default()
    };
    let loss = |b: &Tensor| losses::dsm_loss(&net, b, 0.5);
    let mut drawn = Vec::new();
    let mut previews = Previews::new(2, Some(dir.to_path_buf()), |epoch| {
        drawn.push(epoch);
        let panel =
            Scatter::new(format!("epoch {epoch}"), [-2.0, 4.0, -5.0, 1.0])?.data("data", &x)?;
        Ok(Box::new(panel) as Box<dyn plots::Panel>)
    })
    .unwrap();
    train(&vs, &x, None, &cfg, loss, &mut |e| previews.record(e)).unwrap();
    assert_eq!(previews.len(), 2);
    assert!(dir.join("preview-epoch-2.png").exists() && dir.join("preview-epoch-4.png").exists());
    assert!(!dir.join("preview-epoch-5.png").exists());
    assert_eq!(
        previews.figure().unwrap().size(),
        (2 * plots::PANEL_SIZE.0, plots::PANEL_SIZE.1)
    );
    drop(previews);
    assert_eq!(drawn, vec![2, 4]);

    // A preview that fails does not stop training; its error comes back from figure().
    let mut failing = Previews::new(1, None, |_| Err(Error::Plot("no samples".into()))).unwrap();
    let history = train(
        &vs,
        &x,
        None,
        &cfg,
        |b: &Tensor| losses::dsm_loss(&net, b, 0.5),
        &mut |e| failing.record(e),
    )
    .unwrap();
    assert_eq!(history.train_loss.len(), 5);
    assert!(matches!(failing.figure(), Err(Error::Plot(m)) if m == "no samples"));
    assert!(Previews::new(0, None, |_| Err(Error::Plot(String::new()))).is_err());
}
