//! Experiments and presets: JSON round trip (floats exactly), typed errors for unknown presets
//! and inconsistent networks, and a model that saves, reloads and scores identically.

use sgm::experiment::{Dataset, Experiment, Model, Network};
use sgm::nets::ResnetConfig;
use sgm::noise::Sigmas;
use sgm::prelude::*;
use sgm_tests::rng_lock;

#[test]
fn presets_round_trip_through_json_exactly() {
    for name in Experiment::PRESETS {
        let e = Experiment::preset(name).unwrap();
        assert_eq!(e.name, name);
        let back: Experiment = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e, "{name}");
    }
    let err = Experiment::preset("cifar10").unwrap_err();
    assert!(err.to_string().contains("cifar10"), "{err}");
}

#[test]
fn a_resnet_indexed_by_other_sigmas_is_refused() {
    let mut e = Experiment::mnist();
    let other = Sigmas::geometric(1.0, 0.01, 10).unwrap();
    e.network = Network::Resnet(ResnetConfig::homework(other));
    let vs = nn::VarStore::new(Device::Cpu);
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
fn a_model_saves_reloads_and_samples() {
    let _rng = rng_lock();
    let mut e = Experiment::moons();
    e.dataset = Dataset::Moons { n: 400, noise: 0.1 };
    e.train.epochs = 1;
    e.sampler.steps_per_level = 5;
    let model = Model::new(&e, Device::Cpu).unwrap();
    let data = e.data(Device::Cpu).unwrap();
    assert_eq!(data.train.size(), vec![320, 2]);
    assert_eq!(data.test.size(), vec![80, 2]);
    let history = model
        .train(&data, None, &mut training::silent(), &|| false)
        .unwrap();
    assert_eq!(history.steps, 3);
    assert!(!history.interrupted);
    let dir = std::env::temp_dir().join(format!("sgm-experiment-{}", std::process::id()));
    model.save(&dir, serde_json::json!({})).unwrap();
    let loaded = Model::load(&dir, Device::Cpu).unwrap();
    assert_eq!(loaded.experiment, e);
    let x = Tensor::randn([7, 2], (Kind::Float, Device::Cpu));
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

#[test]
fn a_bad_experiment_file_names_itself() {
    let dir = std::env::temp_dir().join(format!("sgm-experiment-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.json");
    std::fs::write(&path, "{\"name\": \"x\"}").unwrap();
    let err = Experiment::from_json_file(&path).unwrap_err();
    assert!(err.to_string().contains("broken.json"), "{err}");
    let err = Experiment::from_json_file(dir.join("absent.json")).unwrap_err();
    assert!(err.to_string().contains("absent.json"), "{err}");
}
