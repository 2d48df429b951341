//! Experiments and presets: JSON round trip (floats exactly), typed errors for unknown presets
//! and inconsistent networks, a model that saves, reloads and scores identically, and the
//! single-σ presets: their loss is `dsm_loss` and their sampler the notebooks' plain Langevin.

use sgm::experiment::{Dataset, Experiment, Method, Model, Network};
use sgm::langevin::Init;
use sgm::losses::{multiscale_dsm_loss, LevelSampling, Weighting};
use sgm::nets::ResnetConfig;
use sgm::noise::Sigmas;
use sgm::prelude::*;
use sgm::samplers::{self, EdmStochastic};
use sgm_tests::{max_abs_diff, params, rng_lock, test_device, tmpdir};

/// The presets of one noise level, trained with one σ and an unconditioned MLP.
const SINGLE_LEVEL: [&str; 2] = ["donut_dsm", "moons_single"];

#[test]
fn presets_round_trip_through_json_exactly_and_build() {
    // Building draws initial weights from the global generator.
    let _rng = rng_lock();
    for name in SINGLE_LEVEL {
        assert!(Experiment::PRESETS.contains(&name), "{name}");
    }
    for name in Experiment::PRESETS {
        let e = Experiment::preset(name).unwrap();
        assert_eq!(e.name, name);
        let back: Experiment = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e, "{name}");
        let vs = nn::VarStore::new(test_device());
        assert!(e.build(&vs).is_ok(), "{name}");
    }
    let err = Experiment::preset("cifar10").unwrap_err();
    assert!(err.to_string().contains("cifar10"), "{err}");
}

#[test]
fn a_gaussian_start_is_the_tables_largest_level() {
    // An annealed chain that starts from N(0, s² I) approximates p_σmax only with s = σ_max
    // (the homework's note); a table moved without its start would begin every chain at the
    // wrong scale. (A single level's plain Langevin may start anywhere.)
    for name in Experiment::PRESETS {
        let e = Experiment::preset(name).unwrap();
        if let (Init::Gaussian { std }, true) = (e.init, e.sigmas.len() > 1) {
            assert_eq!(std, e.sigmas.max(), "{name}");
        }
    }
    // The ResNet keeps the homework's start, whatever the U-Net's.
    assert_eq!(
        Experiment::mnist_resnet().init,
        Init::Uniform {
            low: -1.0,
            high: 1.0
        }
    );
}

#[test]
fn the_initial_weights_depend_on_the_training_seed_alone() {
    let _rng = rng_lock();
    let e = Experiment::preset("mnist").unwrap();
    let weights = |e: &Experiment| params(&Model::new(e, test_device()).unwrap().vs);
    // Built after different draws from the global generator (as notebook 03 builds it after the
    // ResNet's run, and `sgm train` in a fresh process): the same weights.
    data::seed(1);
    let first = weights(&e);
    let _ = Tensor::randn([1000], (Kind::Float, test_device()));
    let second = weights(&e);
    assert_eq!(
        max_abs_diff(&first, &second),
        0.0,
        "the same seed built different weights"
    );
    // Another seed, other weights: not merely a reset of the generator to a fixed state.
    let mut other = e.clone();
    other.train.seed = Some(e.train.seed.unwrap() + 1);
    let moved = max_abs_diff(&weights(&other), &first);
    assert!(
        moved > 1e-3,
        "another seed built the same weights ({moved})"
    );
    // Without a seed, the initialisation follows the generator as the caller left it.
    let mut unseeded = e.clone();
    unseeded.train.seed = None;
    data::seed(7);
    let a = weights(&unseeded);
    let b = weights(&unseeded);
    assert!(
        max_abs_diff(&a, &b) > 1e-3,
        "an unseeded experiment was reseeded"
    );
    data::seed(7);
    let c = weights(&unseeded);
    assert_eq!(
        max_abs_diff(&a, &c),
        0.0,
        "an unseeded experiment ignored the caller's seed"
    );
}

#[test]
fn a_table_network_refuses_levels_drawn_off_its_table() {
    // The MNIST preset trains on EDM's log-normal levels; the ResNet preset built from it looks
    // its levels up in a table, so it keeps per-sample table levels, and asking it for
    // log-normal ones is an error, not a silent nearest-level lookup.
    let mut e = Experiment::mnist_resnet();
    assert_eq!(e.level_sampling, LevelSampling::PerSample);
    e.level_sampling = Experiment::mnist().level_sampling;
    let vs = nn::VarStore::new(test_device());
    assert!(matches!(
        e.build(&vs),
        Err(Error::InvalidParameter {
            name: "level_sampling",
            ..
        })
    ));
}

#[test]
fn an_unconditioned_mlp_takes_exactly_one_level() {
    let mut e = Experiment::donut_dsm();
    assert!(matches!(e.network, Network::UnconditionedMlp(_)));
    assert_eq!(e.sigmas.values(), &[0.1]);
    e.sigmas = Sigmas::geometric(1.0, 0.1, 3).unwrap();
    let vs = nn::VarStore::new(test_device());
    assert!(matches!(
        e.build(&vs),
        Err(Error::InvalidParameter { name: "sigmas", .. })
    ));
}

#[test]
fn a_single_level_loss_is_dsm_loss_at_that_level() {
    let _rng = rng_lock();
    for name in SINGLE_LEVEL {
        let e = Experiment::preset(name).unwrap();
        let model = Model::new(&e, test_device()).unwrap();
        let sigma = e.sigmas.min();
        let x = Tensor::randn([256, 2], (Kind::Float, test_device())) + 1.5;
        // The same batch and, from the same seed, the same noise: one level draws no level.
        let loss_with = |weighting: Weighting| {
            data::seed(11);
            let cfg = sgm::losses::MultiScaleConfig {
                weighting,
                ..e.loss()
            };
            f64::try_from(multiscale_dsm_loss(model.score.as_ref(), &x, &cfg).unwrap()).unwrap()
        };
        data::seed(11);
        let single = f64::try_from(dsm_loss(model.score.as_ref(), &x, sigma).unwrap()).unwrap();
        // The preset's λ = σ²/σ_max² is 1: the loss is dsm_loss itself (so the same minimiser,
        // ∇ log p_σ, and the same numbers as the notebooks' curves).
        let preset = loss_with(e.weighting);
        assert!(
            (preset - single).abs() < 1e-5 * single,
            "{name}: {preset} vs {single}"
        );
        // λ = σ² scales it by σ² (0.01 here), which a wrong power of σ would not give.
        let papers = loss_with(Weighting::SigmaSquared);
        assert!(
            (papers - sigma * sigma * single).abs() < 1e-5 * papers,
            "{name}: {papers} vs σ² · {single}"
        );
    }
}

#[test]
fn a_single_level_sampler_is_the_notebooks_plain_langevin() {
    let _rng = rng_lock();
    // Notebook 01: from N(0, I) drawn after seed 0, ε = 10⁻², `Full`; notebook 02: from
    // U[-1, 1]² drawn after seed 2, η = 0.01, `Half`. 30 steps instead of 1,000.
    let notebooks = [
        (
            "donut_dsm",
            0,
            Init::Gaussian { std: 1.0 },
            StepConvention::Full,
        ),
        (
            "moons_single",
            2,
            Init::Uniform {
                low: -1.0,
                high: 1.0,
            },
            StepConvention::Half,
        ),
    ];
    for (name, seed, init, convention) in notebooks {
        let mut e = Experiment::preset(name).unwrap();
        assert_eq!(e.sampler.steps_per_level, 1000, "{name}");
        e.sampler.steps_per_level = 30;
        let model = Model::new(&e, test_device()).unwrap();
        let annealed = model.sample(64).unwrap().samples;
        data::seed(seed);
        let start = init.draw(&[64, 2], test_device()).unwrap();
        let cfg = LangevinConfig {
            n_steps: 30,
            eps: 0.01,
            convention,
            ..Default::default()
        };
        let plain = langevin(model.score.as_ref(), &start, &cfg)
            .unwrap()
            .samples;
        let diff = f64::try_from((annealed - plain).abs().max()).unwrap();
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

#[test]
fn a_single_level_model_saves_and_reloads() {
    let _rng = rng_lock();
    let mut e = Experiment::donut_dsm();
    e.dataset = Dataset::Donut {
        n_train: 200,
        n_test: 50,
    };
    e.train.epochs = 1;
    let model = Model::new(&e, test_device()).unwrap();
    let data = e.data(test_device()).unwrap();
    let dir = tmpdir("experiment-single");
    let history = model
        .train(&data, Some(&dir), &mut training::silent(), &|| false)
        .unwrap();
    assert_eq!(history.steps, 2);
    let loaded = Model::load(&dir, test_device()).unwrap();
    assert_eq!(loaded.experiment, e);
    // σ is ignored: any level (0 included) gives the same field.
    let x = Tensor::randn([7, 2], (Kind::Float, test_device()));
    let a = model.score.score_at(&x, 0.1).unwrap();
    let b = loaded.score.score_at(&x, 0.0).unwrap();
    assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0);
}

#[test]
fn a_resnet_indexed_by_other_sigmas_is_refused() {
    let _rng = rng_lock();
    let mut e = Experiment::mnist();
    // Levels from the table (the preset's log-normal levels are refused for a table network,
    // tested above).
    e.level_sampling = LevelSampling::PerSample;
    e.method = Method::AnnealedLangevin;
    let other = Sigmas::geometric(1.0, 0.01, 10).unwrap();
    e.network = Network::Resnet(ResnetConfig::homework(other));
    let vs = nn::VarStore::new(test_device());
    assert!(matches!(
        e.build(&vs),
        Err(Error::InvalidParameter {
            name: "network.config.sigmas",
            ..
        })
    ));
    e.network = Network::Resnet(ResnetConfig::homework(e.sigmas.clone()));
    assert!(e.build(&vs).is_ok());
}

#[test]
fn a_checkpoint_written_before_a_field_existed_still_resumes() {
    let _rng = rng_lock();
    let mut e = Experiment::moons();
    e.dataset = Dataset::Moons { n: 400, noise: 0.1 };
    e.train.epochs = 1;
    let data = e.data(test_device()).unwrap();
    let dir = tmpdir("resume-old-config");
    let model = Model::new(&e, test_device()).unwrap();
    let train = |model: &Model| model.train(&data, Some(&dir), &mut training::silent(), &|| false);
    assert_eq!(train(&model).unwrap().steps, 3);
    // Rewrite the saved configuration the way older versions wrote it: with a default that
    // today's JSON leaves out spelled out (the sampler's `precision`), and without a field added
    // since (`train.grad_clip`, which reads as its default).
    let state_path = dir.join(training::STATE_JSON);
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
        f(&mut state["config"]);
        std::fs::write(&state_path, state.to_string()).unwrap();
    };
    edit(&|c| {
        c["sampler"]["precision"] = serde_json::json!("Float32");
        c["train"].as_object_mut().unwrap().remove("grad_clip");
    });
    // The finished run is found and not trained again (no step taken)...
    let again = Model::new(&e, test_device()).unwrap();
    let history = train(&again).unwrap();
    assert_eq!((history.steps, history.resumed_at), (3, 3));
    // ... while a saved configuration that really differs is still refused, by its field: a
    // value, or an option this version does not know (a newer version's, a typo), which the
    // reading must not drop.
    edit(&|c| c["sampler"]["eps"] = serde_json::json!(0.5));
    let err = train(&again).unwrap_err().to_string();
    assert!(err.contains("config.sampler.eps: saved 0.5"), "{err}");
    edit(&|c| {
        c["sampler"]["eps"] = serde_json::to_value(e.sampler.eps).unwrap();
        c["sampler"]["churn"] = serde_json::json!(1.0);
    });
    let err = train(&again).unwrap_err().to_string();
    assert!(err.contains("config.sampler.churn: saved 1.0"), "{err}");
}

#[test]
fn a_model_saves_reloads_and_samples() {
    let _rng = rng_lock();
    let mut e = Experiment::moons();
    e.dataset = Dataset::Moons { n: 400, noise: 0.1 };
    e.train.epochs = 1;
    e.sampler.steps_per_level = 5;
    let model = Model::new(&e, test_device()).unwrap();
    let data = e.data(test_device()).unwrap();
    assert_eq!(data.train.size(), vec![320, 2]);
    assert_eq!(data.test.size(), vec![80, 2]);
    let history = model
        .train(&data, None, &mut training::silent(), &|| false)
        .unwrap();
    assert_eq!(history.steps, 3);
    assert!(!history.interrupted);
    let dir = tmpdir("experiment");
    model.save(&dir, serde_json::json!({})).unwrap();
    let loaded = Model::load(&dir, test_device()).unwrap();
    assert_eq!(loaded.experiment, e);
    let x = Tensor::randn([7, 2], (Kind::Float, test_device()));
    let a = model.score.score_at(&x, 0.3).unwrap();
    let b = loaded.score.score_at(&x, 0.3).unwrap();
    assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0);
    let samples = loaded.sample(11).unwrap().samples;
    assert_eq!(samples.size(), vec![11, 2]);
    assert!(matches!(
        loaded.sample(0),
        Err(Error::InvalidParameter { name: "n", .. })
    ));
    // Stopping at once still returns a usable history.
    let stopped = model
        .train(&data, None, &mut training::silent(), &|| true)
        .unwrap();
    assert!(stopped.interrupted && stopped.steps == 1);
}

/// The σ's a sampler recorded, one per step, equal `expected` to 1e-12 relative.
fn assert_recorded_levels(levels: &[(f64, Tensor)], expected: &[f64]) {
    let seen: Vec<f64> = levels.iter().map(|(s, _)| *s).collect();
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for (a, b) in seen.iter().zip(expected) {
        assert!((a - b).abs() < 1e-12 * b, "{seen:?} against {expected:?}");
    }
}

#[test]
fn the_edm_method_samples_from_the_experiments_start_and_levels() {
    let _rng = rng_lock();
    let mut e = Experiment::moons();
    e.dataset = Dataset::Moons { n: 400, noise: 0.1 };
    let (levels, s_churn) = (6, 3.0);
    e.method = Method::edm(levels, s_churn);
    e.sampler.record_levels = true;
    // Left out of the JSON only when it is annealed Langevin; read back as written.
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["method"]["kind"], "edm_stochastic", "{json}");
    assert_eq!(serde_json::from_value::<Experiment>(json).unwrap(), e);
    let plain = serde_json::to_value(Experiment::moons()).unwrap();
    assert!(plain.get("method").is_none(), "{plain}");

    let model = Model::new(&e, test_device()).unwrap();
    let out = model.sample(50).unwrap();
    assert_eq!(out.samples.size(), vec![50, 2]);
    // One record per Heun step, at its raised level σ̂ = σ_i (1 + γ) with
    // γ = min(S_churn / L, √2 − 1) = √2 − 1 here, then σ_L for the denoising step.
    let karras = Sigmas::karras(e.sigmas.max(), e.sigmas.min(), levels, 7.0).unwrap();
    let mut expected: Vec<f64> = karras.values()[..levels - 1]
        .iter()
        .map(|s| s * std::f64::consts::SQRT_2)
        .collect();
    expected.push(e.sigmas.min());
    assert_recorded_levels(&out.levels, &expected);
    // The sampler run by hand: the experiment's seed, then its start, then the chain.
    data::seed(e.sampler.seed.unwrap());
    let start = e.init.draw(&[50, 2], test_device()).unwrap();
    let mut edm = EdmStochastic {
        s_churn,
        ..EdmStochastic::new(karras)
    };
    let by_hand = samplers::sample_quietly(&mut edm, model.score.as_ref(), &start, None).unwrap();
    assert_eq!(
        f64::try_from((&out.samples - &by_hand.x).abs().max()).unwrap(),
        0.0
    );
    // Annealed Langevin's levels differ from EDM's (so the method, not the default, ran).
    e.method = Method::AnnealedLangevin;
    e.sampler.steps_per_level = 2;
    let annealed = Model::new(&e, test_device()).unwrap().sample(50).unwrap();
    assert_eq!(annealed.levels.len(), e.sigmas.len());

    // A network with a table of levels, or with one level, cannot be sampled between them:
    // refused when the model is built, before any training.
    for mut table in [Experiment::mnist_resnet(), Experiment::moons_single()] {
        table.method = Method::edm(levels, s_churn);
        let err = Model::new(&table, test_device()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { name: "method", .. }),
            "{err}"
        );
    }
}

#[test]
fn the_edm_methods_rho_churn_window_and_noise_scale_reach_its_sampler() {
    let _rng = rng_lock();
    // A method written before ρ, the window and the noise scale existed reads as ρ = 7, churn
    // at every level and S_noise 1.
    let old: Method =
        serde_json::from_str(r#"{"kind": "edm_stochastic", "levels": 6, "s_churn": 3.0}"#).unwrap();
    assert_eq!(old, Method::edm(6, 3.0));

    let mut e = Experiment::moons();
    e.dataset = Dataset::Moons { n: 400, noise: 0.1 };
    let levels = 6;
    let rho = 3.0;
    let karras = Sigmas::karras(e.sigmas.max(), e.sigmas.min(), levels, rho).unwrap();
    // A window holding the second and third levels only.
    let (s_tmin, s_tmax) = (karras.values()[2], karras.values()[1]);
    e.method = Method::EdmStochastic {
        levels,
        s_churn: 3.0,
        s_tmin,
        s_tmax: Some(s_tmax),
        s_noise: 1.5,
        rho,
    };
    e.sampler.record_levels = true;
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(serde_json::from_value::<Experiment>(json).unwrap(), e);

    let model = Model::new(&e, test_device()).unwrap();
    let out = model.sample(50).unwrap();
    // Raised by 1 + γ = √2 inside the window, not outside it.
    let mut expected: Vec<f64> = karras.values()[..levels - 1]
        .iter()
        .map(|&s| {
            if (s_tmin..=s_tmax).contains(&s) {
                s * std::f64::consts::SQRT_2
            } else {
                s
            }
        })
        .collect();
    expected.push(e.sigmas.min());
    assert_recorded_levels(&out.levels, &expected);
    // The same chain by hand with the same window and S_noise; with S_noise 1 it differs.
    let by_hand = |s_noise: f64| {
        data::seed(e.sampler.seed.unwrap());
        let start = e.init.draw(&[50, 2], test_device()).unwrap();
        let mut edm = EdmStochastic {
            s_churn: 3.0,
            s_tmin,
            s_tmax,
            s_noise,
            ..EdmStochastic::new(karras.clone())
        };
        samplers::sample_quietly(&mut edm, model.score.as_ref(), &start, None)
            .unwrap()
            .x
    };
    let gap = |x: Tensor| f64::try_from((&out.samples - x).abs().max()).unwrap();
    assert_eq!(gap(by_hand(1.5)), 0.0);
    assert!(gap(by_hand(1.0)) > 1e-3);

    // A bad setting is refused by name when the model is built, before any training: an
    // empty window, an infinite S_tmax (JSON would write it as null), ρ or S_noise of 0, a
    // negative churn.
    let edm = |s_churn, s_tmin, s_tmax, s_noise, rho| Method::EdmStochastic {
        levels,
        s_churn,
        s_tmin,
        s_tmax,
        s_noise,
        rho,
    };
    for (method, name) in [
        (edm(3.0, 1.0, Some(0.5), 1.0, rho), "s_tmin"),
        (edm(3.0, 0.0, Some(f64::INFINITY), 1.0, rho), "s_tmax"),
        (edm(3.0, 0.0, None, 1.0, 0.0), "rho"),
        (edm(3.0, 0.0, None, 0.0, rho), "s_noise"),
        (edm(-1.0, 0.0, None, 1.0, rho), "s_churn"),
    ] {
        e.method = method;
        let err = Model::new(&e, test_device()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { name: n, .. } if n == name),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_bad_experiment_file_names_itself() {
    let dir = tmpdir("experiment-bad");
    let path = dir.join("broken.json");
    std::fs::write(&path, "{\"name\": \"x\"}").unwrap();
    let err = Experiment::from_json_file(&path).unwrap_err();
    assert!(err.to_string().contains("broken.json"), "{err}");
    let err = Experiment::from_json_file(dir.join("absent.json")).unwrap_err();
    assert!(err.to_string().contains("absent.json"), "{err}");
}
