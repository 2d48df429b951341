//! Library behaviour against exact laws. Every tolerance is derived in a comment from the sample
//! size (Monte Carlo standard errors, SE) and, where it matters, the step size's known bias.

use sgm::metrics::{ks_critical_value, ks_statistic, radii};
use sgm::prelude::*;
use sgm_tests::{from_slice, rng_lock, test_device};
use tch::nn::Module;

fn cov(x: &Tensor) -> Tensor {
    let centred = x - x.mean_dim([0i64].as_slice(), true, Kind::Float);
    centred.transpose(0, 1).matmul(&centred) / (x.size()[0] - 1) as f64
}

fn f(t: &Tensor) -> f64 {
    t.double_value(&[])
}

#[test]
fn autograd_score_of_donut_equals_closed_form() {
    let _rng = rng_lock();
    data::seed(1);
    let donut = Donut::default();
    // Points away from the origin, where the score is defined.
    let x = Tensor::randn([500, 2], (Kind::Float, test_device())) * 2.0 + 0.1;
    let autograd = GradLogDensity(|x: &Tensor| donut.log_density(x))
        .score_at(&x, 0.0)
        .unwrap();
    let closed = donut.score_at(&x, 0.0).unwrap();
    let rel = f(&(&autograd - &closed).abs().max()) / f(&closed.abs().max());
    // Both are float32 evaluations of the same expression: agreement to float precision.
    assert!(rel < 1e-5, "relative difference {rel}");
}

#[test]
fn donut_sampler_matches_exact_radial_law() {
    let _rng = rng_lock();
    // The exact radial CDF of p(r) ∝ r exp(-(r - 2.6)²/0.033), by numerical integration on a
    // fine grid, against 20,000 exact samples: KS test at level 0.001.
    data::seed(2);
    let donut = Donut::default();
    let n = 20_000;
    let x = donut.sample(n, test_device()).unwrap();
    assert_eq!(x.size(), [n, 2]);
    let r = sgm::plots::to_vec(&radii(&x)).unwrap();
    let grid: Vec<f64> = (0..=40_000)
        .map(|i| 1.6 + i as f64 * 2.0 / 40_000.0)
        .collect();
    let pdf: Vec<f64> = grid
        .iter()
        .map(|r| r * (-(r - donut.radius).powi(2) / donut.width).exp())
        .collect();
    let mut cdf = vec![0.0];
    for i in 1..grid.len() {
        cdf.push(cdf[i - 1] + (pdf[i] + pdf[i - 1]) / 2.0 * (grid[i] - grid[i - 1]));
    }
    let total = *cdf.last().unwrap();
    let exact_cdf = |t: f64| {
        let i = (((t - 1.6) / 2.0 * 40_000.0) as usize).min(40_000);
        cdf[i] / total
    };
    let mut sorted = r.clone();
    sorted.sort_by(f64::total_cmp);
    let d = sorted
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let c = exact_cdf(*t);
            (c - i as f64 / n as f64)
                .abs()
                .max((c - (i + 1) as f64 / n as f64).abs())
        })
        .fold(0.0, f64::max);
    // One-sample KS: P(D > 1.95/√n) ≈ 0.001.
    assert!(d < 1.95 / (n as f64).sqrt(), "KS distance {d}");
    // Angles are uniform: the mean point is the origin (SE of each coordinate ≈ 2.6/√(2n) = 0.013).
    let mean = x.mean_dim([0i64].as_slice(), false, Kind::Float);
    assert!(f(&mean.abs().max()) < 0.07, "mean {mean:?}");
}

#[test]
fn langevin_reproduces_gaussian_mean_and_covariance() {
    let _rng = rng_lock();
    // Score of N(m, Σ) is -Σ⁻¹(x - m). The Full chain with step ε has the Gaussian stationary
    // law N(m, C) with C = (Σ⁻¹ - (ε/2) Σ⁻²)⁻¹ exactly (linear drift), which differs from Σ by
    // O(ε). 20,000 independent chains, 2,000 steps (slowest relaxation ≈ λ_max/ε ≈ 120 steps).
    data::seed(3);
    let opts = (Kind::Float, test_device());
    let m = from_slice(&[1.0f32, -2.0]);
    let sigma = from_slice(&[1.0f32, 0.5, 0.5, 0.5]).view([2, 2]);
    let prec = sigma.inverse();
    let score = |x: &Tensor, _s: &Tensor| -(x - &m).matmul(&prec);
    let eps = 0.01;
    let n = 20_000;
    let x0 = Tensor::randn([n, 2], opts);
    let cfg = LangevinConfig {
        n_steps: 2000,
        eps,
        seed: Some(4),
        ..Default::default()
    };
    let out = langevin(&score, &x0, &cfg).unwrap();
    let x = out.samples;
    let c_exact = (&prec - prec.matmul(&prec) * (eps / 2.0)).inverse();
    let c = cov(&x);
    let mean = x.mean_dim([0i64].as_slice(), false, Kind::Float);
    for i in 0..2 {
        // SE of a mean: √(C_ii / n) ≤ 0.008; 5 SE.
        let se = (f(&c_exact.get(i).get(i)) / n as f64).sqrt();
        let err = (f(&mean.get(i)) - f(&m.get(i))).abs();
        assert!(err < 5.0 * se, "mean[{i}] off by {err} (SE {se})");
        for j in 0..2 {
            // SE of a sample covariance: √((C_ii C_jj + C_ij²)/n); 5 SE.
            let (cii, cjj, cij) = (
                f(&c_exact.get(i).get(i)),
                f(&c_exact.get(j).get(j)),
                f(&c_exact.get(i).get(j)),
            );
            let se = ((cii * cjj + cij * cij) / n as f64).sqrt();
            let err = (f(&c.get(i).get(j)) - cij).abs();
            assert!(err < 5.0 * se, "cov[{i}][{j}] off by {err} (SE {se})");
        }
    }
    // And close to Σ itself: the O(ε) bias is below 2%.
    let rel = f(&(&c - &sigma).abs().max()) / f(&sigma.abs().max());
    assert!(rel < 0.05, "covariance differs from Σ by {rel}");
}

#[test]
fn step_conventions_are_one_chain() {
    let _rng = rng_lock();
    // Half with step 2ε is Full with step ε: same seed, same noise draws, same particles.
    let donut = Donut::default();
    let x0 = Tensor::randn([256, 2], (Kind::Float, test_device()));
    let run = |convention, eps| {
        let cfg = LangevinConfig {
            n_steps: 50,
            eps,
            convention,
            seed: Some(9),
            ..Default::default()
        };
        langevin(&donut, &x0, &cfg).unwrap().samples
    };
    let full = run(StepConvention::Full, 1e-3);
    let half = run(StepConvention::Half, 2e-3);
    let other = run(StepConvention::Half, 1e-3);
    assert!(f(&(&full - &half).abs().max()) < 1e-5);
    assert!(f(&(&full - &other).abs().max()) > 1e-3);
}

#[test]
fn donut_langevin_matches_exact_radial_law() {
    let _rng = rng_lock();
    // Langevin with the exact score from N(0, I), against exact samples. ε = 10⁻³: the radial
    // ridge has variance v = c/2 = 0.0165, so the discretisation inflates the radial spread by
    // about 1/√(1 - ε/(2v)) - 1 ≈ 1.6% (a shift of the CDF below 0.005); the two-sample KS
    // critical value at α = 0.001 for 10,000 + 10,000 points is 0.028. 2,000 steps are about
    // 120 radial relaxation times (v/ε ≈ 16.5 steps).
    data::seed(5);
    let donut = Donut::default();
    let n = 10_000;
    let x0 = Tensor::randn([n, 2], (Kind::Float, test_device()));
    let cfg = LangevinConfig {
        n_steps: 2000,
        eps: 1e-3,
        seed: Some(6),
        record_every: Some(500),
        ..Default::default()
    };
    let out = langevin(&donut, &x0, &cfg).unwrap();
    assert_eq!(out.samples.size(), [n, 2]);
    assert_eq!(out.trajectory.len(), 5);
    let exact = donut.sample(n, test_device()).unwrap();
    let d = ks_statistic(&radii(&out.samples), &radii(&exact)).unwrap();
    assert!(
        d < ks_critical_value(0.001, n as usize, n as usize),
        "KS {d}"
    );
    let (a, b) = (
        Summary::of(&radii(&out.samples)).unwrap(),
        Summary::of(&radii(&exact)).unwrap(),
    );
    // Mean radius: SE ≈ 0.128/√n · √2 = 0.0018; bias well below that. 5 SE.
    assert!((a.mean - b.mean).abs() < 0.009, "{a:?} vs {b:?}");
    // Spread: sampling SE of each std ≈ 0.7%, bias +1.6%: within 6%.
    assert!((a.std / b.std - 1.0).abs() < 0.06, "{a:?} vs {b:?}");
}

#[test]
fn dsm_loss_at_the_smoothed_score_equals_its_known_minimum() {
    let _rng = rng_lock();
    // Data N(m, diag(s²)), smoothed score -(x - m)/(s² + σ²); the DSM loss there equals
    // Σᵢ (1/σ² - 1/(sᵢ² + σ²)). 200,000 samples; 5 SE of the per-sample loss.
    data::seed(7);
    let (s, sigma) = ([1.0f64, 0.5], 0.3);
    let m = from_slice(&[0.5f32, -1.0]);
    let std = from_slice(&[s[0] as f32, s[1] as f32]);
    let var_smoothed = std.square() + sigma * sigma;
    let n = 200_000;
    let x = Tensor::randn([n, 2], (Kind::Float, test_device())) * &std + &m;
    let exact = |x: &Tensor, _s: &Tensor| -(x - &m) / &var_smoothed;
    let per_sample = losses::dsm_per_element(&exact, &x, sigma)
        .unwrap()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let loss = f(&dsm_loss(&exact, &x, sigma).unwrap());
    let expected: f64 = s
        .iter()
        .map(|si| 1.0 / (sigma * sigma) - 1.0 / (si * si + sigma * sigma))
        .sum();
    let se = f(&per_sample.std(true)) / (n as f64).sqrt();
    assert!(
        (loss - expected).abs() < 5.0 * se,
        "loss {loss}, expected {expected} (SE {se})"
    );
    // A wrong factor (σ instead of σ² in the target) would be far off.
    assert!(expected > 10.0 * 5.0 * se);
}

#[test]
fn dsm_learns_the_smoothed_gaussian_score() {
    let _rng = rng_lock();
    // A linear score model s(x) = W x + b contains the optimum of DSM on Gaussian data, the
    // smoothed score W = -diag(1/(s² + σ²)), b = m/(s² + σ²). After training, the learned score
    // is within 5% (relative L2 over samples of p_σ) of it. The DSM gradient is mostly noise
    // (the target -z/σ has variance 11 per coordinate), so Adam at a constant lr 10⁻² keeps
    // fluctuating: 2.5% to 5.4% over ten seeds, too close to 5% (the 30 constant epochs this
    // test had failed at 5.6% once the training seeds changed). Decayed ×0.3 every 20 of 60
    // epochs it ends at 0.7% to 2.1% over ten seeds.
    data::seed(8);
    let (s, sigma) = ([1.0f32, 0.5], 0.3);
    let m = from_slice(&[0.5f32, -1.0]);
    let std = from_slice(&s);
    let var_smoothed = std.square() + sigma * sigma;
    let x = Tensor::randn([20_000, 2], (Kind::Float, test_device())) * &std + &m;
    let (train_x, test_x) = data::train_test_split(&x, 0.8).unwrap();
    let vs = nn::VarStore::new(test_device());
    let model = nn::linear(vs.root() / "0", 2, 2, Default::default());
    let score = |x: &Tensor, _s: &Tensor| model.forward(x);
    let cfg = TrainConfig {
        epochs: 60,
        batch_size: 256,
        lr: 1e-2,
        seed: Some(8),
        lr_decay: Some(training::LrDecay {
            step_epochs: 20,
            gamma: 0.3,
        }),
        ..Default::default()
    };
    let history = train(
        &vs,
        &train_x,
        Some(&test_x),
        &cfg,
        |b| dsm_loss(&score, b, sigma),
        &mut training::silent(),
    )
    .unwrap();
    assert_eq!(history.train_loss.len(), 60);
    assert_eq!(history.test_loss.len(), 60);
    assert!(history.train_loss[59] < history.train_loss[0]);
    let probe = Tensor::randn([10_000, 2], (Kind::Float, test_device())) * var_smoothed.sqrt() + &m;
    let learned = tch::no_grad(|| model.forward(&probe));
    let exact = -(&probe - &m) / &var_smoothed;
    let rel = (f(&(&learned - &exact).square().sum(Kind::Float))
        / f(&exact.square().sum(Kind::Float)))
    .sqrt();
    assert!(rel < 0.05, "relative error {rel}");
}

#[test]
fn mixture_smoothed_score_matches_autograd_of_smoothed_density() {
    let _rng = rng_lock();
    let gm = GaussianMixture::new(
        vec![0.2, 0.8],
        vec![vec![-2.0, 0.0], vec![2.0, 1.0]],
        vec![0.3, 0.6],
    )
    .unwrap();
    let x = Tensor::randn([300, 2], (Kind::Float, test_device())) * 2.0;
    let sigma = Tensor::rand([300], (Kind::Float, test_device())) + 0.01;
    let closed = gm.score(&x, &sigma).unwrap();
    let auto = score::grad_log_density(|x| gm.log_density_smoothed(x, &sigma), &x);
    assert!(f(&(&closed - &auto).abs().max()) < 1e-3);
    // σ = 0 is the mixture itself.
    let zero = Tensor::zeros([300], (Kind::Float, test_device()));
    let auto0 = score::grad_log_density(|x| gm.log_density(x), &x);
    assert!(f(&(gm.score(&x, &zero).unwrap() - auto0).abs().max()) < 1e-3);
}

#[test]
fn mixture_sampler_has_the_right_weights() {
    let _rng = rng_lock();
    // 20,000 draws; SE of a weight ≈ √(0.2·0.8/20000) = 0.0028; 5 SE.
    data::seed(10);
    let gm = GaussianMixture::new(
        vec![1.0, 4.0],
        vec![vec![-5.0, 0.0], vec![5.0, 0.0]],
        vec![0.5, 1.5],
    )
    .unwrap();
    assert_eq!(gm.weights(), vec![0.2, 0.8]);
    let x = gm.sample(20_000, test_device()).unwrap();
    let mode = gm.nearest_mode(&x);
    let share = f(&mode.eq(0).to_kind(Kind::Float).mean(Kind::Float));
    assert!((share - 0.2).abs() < 0.014, "share {share}");
    // Each component's own spread (modes 10 apart: 3.3 of the wider std, so nearest-mode
    // assignment errs for ~0.05% of draws). SE of a std from m draws ≈ s/√(2m): 0.008 and
    // 0.012 here; 0.05 is over 4 SE and far below the swap of stds and weights it catches.
    for (k, s) in [(0i64, 0.5), (1, 1.5)] {
        let rows = x.index_select(0, &mode.eq(k).nonzero().squeeze_dim(1));
        let std = f(&rows.select(1, 1).std(true));
        assert!((std - s).abs() < 0.05, "component {k}: std {std}, not {s}");
    }
    // Saved and loaded through JSON; a loaded mixture is checked like a built one.
    let json = sgm::serde_json::to_string(&gm).unwrap();
    assert_eq!(
        sgm::serde_json::from_str::<GaussianMixture>(&json).unwrap(),
        gm
    );
    let bad = json.replace("1.5", "-1.5");
    let err = sgm::serde_json::from_str::<GaussianMixture>(&bad).unwrap_err();
    assert!(err.to_string().contains("-1.5"), "{err}");
}

#[test]
fn two_moons_follow_make_moons() {
    let _rng = rng_lock();
    let (x, y) = data::two_moons(1000, 0.0, 0).unwrap();
    assert_eq!(x.size(), [1000, 2]);
    assert_eq!(y.size(), [1000]);
    assert_eq!(f(&y.sum(Kind::Int64)) as i64, 500);
    // Without noise the upper moon (label 0) lies on the unit circle, the lower one on the unit
    // circle centred at (1, 0.5).
    let upper = x.index_select(0, &y.eq(0).nonzero().squeeze_dim(1));
    let lower = x.index_select(0, &y.eq(1).nonzero().squeeze_dim(1));
    assert!(f(&(radii(&upper) - 1.0).abs().max()) < 1e-5);
    let centre = sgm::tch::Tensor::from_slice(&[1.0f32, 0.5]);
    assert!(f(&(radii(&(lower - centre)) - 1.0).abs().max()) < 1e-5);
    // Seeded: the same seed gives the same data, another seed other data.
    let (a, _) = data::two_moons(100, 0.1, 3).unwrap();
    let (b, _) = data::two_moons(100, 0.1, 3).unwrap();
    let (c, _) = data::two_moons(100, 0.1, 4).unwrap();
    assert!(a.equal(&b));
    assert!(!a.equal(&c));
    let (train_x, test_x) = data::train_test_split(&a, 0.8).unwrap();
    assert_eq!((train_x.size()[0], test_x.size()[0]), (80, 20));
}

#[test]
fn mlp_has_pytorch_sequential_names_and_shapes() {
    let _rng = rng_lock();
    let vs = nn::VarStore::new(test_device());
    let mlp = Mlp::new(&vs.root(), &MlpConfig::donut()).unwrap();
    let mut names: Vec<String> = vs.variables().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight", "6.bias", "6.weight"]
    );
    let x = Tensor::randn([16, 2], (Kind::Float, test_device()));
    assert_eq!(mlp.score_at(&x, 0.1).unwrap().size(), [16, 2]);
    // Homework 5's check: the per-sample loss has x's shape, the loss is a scalar.
    assert_eq!(
        losses::dsm_per_element(&mlp, &x, 0.1).unwrap().size(),
        [16, 2]
    );
    assert_eq!(dsm_loss(&mlp, &x, 0.1).unwrap().dim(), 0);
}

#[test]
fn tweedie_monte_carlo_score_matches_closed_form_smoothed_score() {
    // For a mixture the σ-smoothed score is exact; the importance-sampling estimate with 20,000
    // proposals per point has a relative Monte Carlo error of order 1/√20000 · (weight spread),
    // a few percent at most here.
    let _rng = rng_lock();
    data::seed(11);
    let gm = GaussianMixture::new(
        vec![0.3, 0.7],
        vec![vec![-1.0, 0.0], vec![1.5, 0.5]],
        vec![0.3, 0.4],
    )
    .unwrap();
    let sigma = 0.5;
    let x = gm.sample(200, test_device()).unwrap();
    let x = data::perturb(&x, sigma).unwrap();
    let mc = score::smoothed_score_mc(&gm, &x, sigma, 20_000).unwrap();
    let exact = gm.score_at(&x, sigma).unwrap();
    let rel = metrics::relative_error(&mc, &exact).unwrap();
    assert!(rel < 0.05, "relative error {rel}");
    // Against the unsmoothed score it is clearly different: the test can fail.
    let unsmoothed = gm.score_at(&x, 0.0).unwrap();
    assert!(metrics::relative_error(&mc, &unsmoothed).unwrap() > 0.3);
}

/// `training::evaluate` hands `loss_fn` copies of the held-out batches: a loss that overwrites
/// its batch in place (as a homework answer's `forward` could, so that the held-out set a check
/// later compares samples with becomes all zeros) leaves the data as it was. The mean is still
/// the batch means weighted by their sizes: for 0..10 in batches of 3, (3·1 + 3·4 + 3·7 + 9)/10.
#[test]
fn evaluation_hands_the_loss_copies_of_the_data() {
    let data = Tensor::arange(10, (Kind::Float, Device::Cpu)).view([10, 1]);
    let before = data.copy();
    let mean = sgm::training::evaluate(&data, 3, &mut |x: &Tensor| {
        let m = x.mean(Kind::Float);
        let _ = x.shallow_clone().zero_();
        Ok(m)
    })
    .unwrap();
    assert!(data.equal(&before), "{data}");
    assert!((mean - 4.5).abs() < 1e-6, "{mean}");
}
