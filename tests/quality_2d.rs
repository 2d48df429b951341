//! The 2D pipeline's defaults ([`Experiment::fit_2d`]) on distributions of the tests' own
//! ([`Toy`]: spirals, a checkerboard, a pinwheel), which the defaults were not chosen on:
//! samples of the probability-flow ODE against held-out points, by the energy distance over its
//! floor (the expected distance for as many training points), beside a mistuned sampler that
//! the bound catches.

use sgm::experiment::{Data, Experiment, Model};
use sgm::metrics::DrawEnergy;
use sgm::prelude::*;
use sgm_tests::{rng_lock, test_device, Toy};

/// Training points of each toy.
const TRAIN: i64 = 4_000;
/// Held-out points of each toy, fresh draws of its law that training never sees.
const HELD_OUT: i64 = 16_000;
/// Samples in the one comparison each figure is the expectation of.
const SAMPLES: usize = 2_000;
/// Held-out points in that comparison.
const SET: usize = 1_000;

/// [`TRAIN`] training points of `toy` and [`HELD_OUT`] held-out ones, seeded.
fn split(toy: Toy, seed: u64) -> (Tensor, Tensor) {
    data::seed(seed);
    let train = toy.sample(TRAIN).to_device(test_device());
    data::seed(seed + 1_000);
    (train, toy.sample(HELD_OUT).to_device(test_device()))
}

#[test]
fn fitted_defaults_sample_untuned_2d_data_near_their_floor() {
    let _rng = rng_lock();
    let (mut fitted_ratios, mut mistuned_ratios) = (Vec::new(), Vec::new());
    for (k, toy) in Toy::ALL.into_iter().enumerate() {
        let (train, held_out) = split(toy, 100 + k as u64);
        // The defaults as they are: 1,000 epochs (31,250 steps).
        let e = Experiment::moons().fit_2d(&train).unwrap();
        let mut model = Model::new(&e, test_device()).unwrap();
        let data = Data {
            train: train.shallow_clone(),
            test: held_out.narrow(0, 0, SET as i64),
            train_labels: None,
            test_labels: None,
        };
        model.train(&data, None, &mut |_| {}, &|| false).unwrap();
        // Each figure is the energy distance of 2,000 samples against 1,000 held-out points
        // over its floor, 2,000 training points against the same, each in expectation over
        // the draws of all three (`DrawEnergy`, in closed form): the samples' from a pool of
        // many, the held-out points' from `HELD_OUT`, the training points' from all of them.
        // One such comparison is noisy (one draw of 2,000 samples of a trained model scored
        // 0.3 to over 2 times the floor against one set of 1,000, fresh draws of the true
        // checkerboard 0.62 to 1.91 over eight sets, and a mean of ratios over 64 sets of
        // 1,000 still moved by 0.12 with the sampling seeds); the expectations' ratio, from
        // 32,000 samples against 16,000 held-out points, moved by 0.04 to 0.06 per toy and
        // 0.017 for the mean of the three (standard deviations over six sets of sampling
        // seeds and held-out points, the same networks, this CPU).
        let held_out = DrawEnergy::new(&held_out, SET).unwrap();
        let floor = DrawEnergy::new(&train, SAMPLES)
            .unwrap()
            .between(&held_out)
            .unwrap();
        let ratio = |pool: Vec<Tensor>| {
            let pool = DrawEnergy::new(&Tensor::cat(&pool, 0), SAMPLES).unwrap();
            pool.between(&held_out).unwrap() / floor
        };
        let draws = (0..16).map(|seed| {
            model.experiment.sampler.seed = Some(10 + seed);
            model.sample_flow(&train, SAMPLES as i64).unwrap().x
        });
        let fitted = ratio(draws.collect());
        // A mistuned sampler: the same ODE and model with the drift 20% short (as a sampler
        // that took the flow as dx/dσ = -0.8 σ s would), from the same kind of start; it
        // scores far above its bound (2), so 4 draws tell them apart.
        let mistuned = (0..4).map(|seed| {
            data::seed(10 + seed);
            let start =
                sgm::samplers::gaussian_prior(&train, e.sigmas.max(), SAMPLES as i64).unwrap();
            let short = |x: &Tensor, s: &Tensor| model.score.forward_score(x, s) * 0.8;
            let mut ode = sgm::samplers::AdaptiveFlow::new(&e.sigmas);
            sgm::samplers::sample_quietly(&mut ode, &short, &start, None)
                .unwrap()
                .x
        });
        let mistuned = ratio(mistuned.collect());
        println!("{toy:?}: fitted ODE {fitted:.2}, mistuned {mistuned:.2}");
        // The figure of a perfect sampler is 1; that of one that draws from the 4,000 training
        // points themselves, 1.17 in expectation (its excess over the floor, E‖X - X'‖/4,000,
        // over the floor's E‖X - X'‖ (1/2,000 + 1/1,000)): the training set's own error,
        // which no network trained on it undoes. Seen on this machine's CPU: 1.13, 1.15 and
        // 1.21 (mistuned 5.2, 9.7, 14.8); with other training seeds (and sampling seeds and
        // held-out points) 1.20, 1.25, 1.22; 1.14, 1.11, 1.23; 1.16, 1.17, 1.21; other data
        // (split seeds 200 to 202) 1.12, 1.19, 1.10.
        assert!(fitted < 1.5, "{toy:?}: {fitted}");
        assert!(mistuned > 2.0, "{toy:?}: mistuned {mistuned}");
        fitted_ratios.push(fitted);
        mistuned_ratios.push(mistuned);
    }
    println!("fitted {fitted_ratios:.2?}, mistuned {mistuned_ratios:.2?}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // On average within 1.25 of the floor, 0.08 above what drawing from the training points
    // gives (1.17): 1.16 here, 1.22, 1.16, 1.18 and 1.14 on the other streams above. Before
    // these figures were expectations (a mean over 16 draws against eight sets of 1,000, at
    // 500 epochs), this mean ranged over 1.14 to 1.34 with the sampling seeds alone.
    assert!(mean(&fitted_ratios) < 1.25, "{fitted_ratios:?}");
}

/// Per-column mean and (unbiased) variance of `x` (`[n, d]`), in double precision.
fn column_moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let x = x.to_kind(Kind::Double);
    let dim = [0i64];
    let mean = x.mean_dim(dim.as_slice(), false, Kind::Double);
    let var = x.var_dim(dim.as_slice(), true, false);
    (
        Vec::<f64>::try_from(mean).unwrap(),
        Vec::<f64>::try_from(var).unwrap(),
    )
}

#[test]
fn the_prior_has_the_moments_of_p_sigma_max_and_bad_input_is_refused() {
    let _rng = rng_lock();
    data::seed(7);
    // Data with mean (3, -1) and standard deviations (0.5, 2); σ_max = 1.5: the prior's
    // variances are 0.25 + 2.25 = 2.5 and 4 + 2.25 = 6.25.
    let x = Tensor::randn([4_000, 2], (Kind::Float, test_device()))
        * sgm_tests::from_slice(&[0.5f32, 2.0])
        + sgm_tests::from_slice(&[3.0f32, -1.0]);
    let n = 40_000;
    let prior = sgm::samplers::gaussian_prior(&x, 1.5, n).unwrap();
    assert_eq!(prior.size(), [n, 2]);
    let (mean, var) = column_moments(&prior);
    let (data_mean, data_var) = column_moments(&x);
    for j in 0..2 {
        let v = data_var[j] + 2.25;
        // Standard errors of a mean and of a variance of n Gaussian draws: √(v/n), v√(2/n).
        assert!(
            (mean[j] - data_mean[j]).abs() < 5.0 * (v / n as f64).sqrt(),
            "{mean:?}"
        );
        assert!(
            (var[j] - v).abs() < 5.0 * v * (2.0 / n as f64).sqrt(),
            "{var:?} vs {v}"
        );
    }
    assert!(sgm::samplers::gaussian_prior(&x, 0.0, 10).is_err());
    assert!(sgm::samplers::gaussian_prior(&x, 1.0, 0).is_err());
    let images = Tensor::zeros([4, 1, 8, 8], (Kind::Float, test_device()));
    let err = Experiment::moons().fit_2d(&images).unwrap_err();
    assert!(
        matches!(err, sgm::Error::Shape { .. }) && err.to_string().contains("fit_2d"),
        "{err}"
    );
}
