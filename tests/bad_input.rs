//! Bad input gets a typed error naming the bad value, never a silent wrong answer.

use sgm::prelude::*;

fn points(n: i64) -> Tensor {
    Tensor::randn([n, 2], (Kind::Float, Device::Cpu))
}

#[test]
fn sigma_must_be_finite_and_positive() {
    let donut = Donut::default();
    for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        match dsm_loss(&donut, &points(8), bad) {
            Err(Error::InvalidSigma(v)) => assert!(v.is_nan() && bad.is_nan() || v == bad),
            other => panic!("sigma {bad}: {other:?}"),
        }
        assert!(matches!(
            data::perturb(&points(4), bad),
            Err(Error::InvalidSigma(_))
        ));
    }
    let err = dsm_loss(&donut, &points(8), -2.5).unwrap_err();
    assert!(err.to_string().contains("-2.5"), "{err}");
}

#[test]
fn step_size_must_be_finite_and_positive() {
    let donut = Donut::default();
    for bad in [0.0, -1e-3, f64::NAN, f64::NEG_INFINITY] {
        let cfg = LangevinConfig {
            eps: bad,
            n_steps: 3,
            ..Default::default()
        };
        match langevin(&donut, &points(8), &cfg) {
            Err(Error::InvalidStepSize(v)) => assert!(v.is_nan() && bad.is_nan() || v == bad),
            other => panic!("eps {bad}: {other:?}"),
        }
    }
    let cfg = LangevinConfig {
        eps: -0.25,
        ..Default::default()
    };
    let err = langevin(&donut, &points(2), &cfg).unwrap_err();
    assert!(err.to_string().contains("-0.25"), "{err}");
}

#[test]
fn a_score_of_the_wrong_shape_is_refused() {
    let bad_score =
        |x: &Tensor, _s: &Tensor| x.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let cfg = LangevinConfig {
        n_steps: 2,
        ..Default::default()
    };
    match langevin(&bad_score, &points(5), &cfg) {
        Err(Error::ScoreShape { input, output }) => {
            assert_eq!(input, [5, 2]);
            assert_eq!(output, [5, 1]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dsm_loss(&bad_score, &points(5), 0.1),
        Err(Error::ScoreShape { .. })
    ));
    // sigma with the wrong number of entries
    let donut = Donut::default();
    let sigma = Tensor::ones([3], (Kind::Float, Device::Cpu));
    assert!(matches!(
        donut.score(&points(5), &sigma),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn empty_data_is_refused() {
    let donut = Donut::default();
    let empty = Tensor::zeros([0, 2], (Kind::Float, Device::Cpu));
    assert!(matches!(
        dsm_loss(&donut, &empty, 0.1),
        Err(Error::EmptyData(_))
    ));
    assert!(matches!(
        langevin(&donut, &empty, &LangevinConfig::default()),
        Err(Error::EmptyData(_))
    ));
    assert!(matches!(
        data::train_test_split(&empty, 0.8),
        Err(Error::EmptyData(_))
    ));
    let vs = nn::VarStore::new(Device::Cpu);
    let r = train(
        &vs,
        &empty,
        None,
        &TrainConfig::default(),
        |b| dsm_loss(&donut, b, 0.1),
        &mut training::silent(),
    );
    assert!(matches!(r, Err(Error::EmptyData(_))), "{r:?}");
    assert!(matches!(
        donut.sample(0, Device::Cpu),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn non_finite_loss_stops_training_and_names_the_step() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mlp = Mlp::new(&vs.root(), &MlpConfig::donut()).unwrap();
    let mut calls = 0;
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 10,
        ..Default::default()
    };
    // 100 rows, batches of 10: the 13th step is epoch 2, step 13.
    let r = train(
        &vs,
        &points(100),
        None,
        &cfg,
        |b| {
            calls += 1;
            let loss = dsm_loss(&mlp, b, 0.1)?;
            Ok(if calls == 13 { loss * f64::NAN } else { loss })
        },
        &mut training::silent(),
    );
    match r {
        Err(Error::NonFiniteLoss { epoch, step, loss }) => {
            assert_eq!((epoch, step), (2, 13));
            assert!(loss.is_nan());
        }
        other => panic!("{other:?}"),
    }
    // A learning rate that blows up the weights is caught as well.
    let vs = nn::VarStore::new(Device::Cpu);
    let mlp = Mlp::new(&vs.root(), &MlpConfig::donut()).unwrap();
    let cfg = TrainConfig {
        epochs: 50,
        batch_size: 10,
        lr: 1e30,
        ..Default::default()
    };
    let x = points(100) * 1e3;
    let r = train(
        &vs,
        &x,
        None,
        &cfg,
        |b| dsm_loss(&mlp, b, 1e-6),
        &mut training::silent(),
    );
    assert!(matches!(r, Err(Error::NonFiniteLoss { .. })), "{r:?}");
}

#[test]
fn diverging_langevin_is_reported() {
    // A step far too large for the donut's sharp ridge (curvature 2/c ≈ 60) blows up.
    let cfg = LangevinConfig {
        eps: 1.0,
        n_steps: 200,
        ..Default::default()
    };
    match langevin(&Donut::default(), &(points(100) * 3.0), &cfg) {
        Err(Error::NonFiniteSamples { step }) => assert!(step <= 200),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_parameters_name_themselves() {
    let err = GaussianMixture::new(vec![0.5, -0.5], vec![vec![0.0], vec![1.0]], vec![1.0, 1.0])
        .unwrap_err();
    assert!(err.to_string().contains("-0.5"), "{err}");
    assert!(GaussianMixture::new(vec![1.0], vec![vec![0.0, 1.0]], vec![0.0]).is_err());
    assert!(GaussianMixture::new(
        vec![1.0, 1.0],
        vec![vec![0.0, 1.0], vec![1.0]],
        vec![1.0, 1.0]
    )
    .is_err());
    let err = data::two_moons(100, -0.1, 0).unwrap_err();
    assert!(err.to_string().contains("noise"), "{err}");
    assert!(data::train_test_split(&points(10), 1.5).is_err());
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MlpConfig {
        hidden: vec![32, 0],
        ..Default::default()
    };
    assert!(Mlp::new(&vs.root(), &cfg)
        .unwrap_err()
        .to_string()
        .contains("0"));
    let bad_lr = TrainConfig {
        lr: f64::NAN,
        ..Default::default()
    };
    let mlp = Mlp::new(&(vs.root() / "m"), &MlpConfig::donut()).unwrap();
    let r = train(
        &vs,
        &points(10),
        None,
        &bad_lr,
        |b| dsm_loss(&mlp, b, 0.1),
        &mut training::silent(),
    );
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "lr", .. })),
        "{r:?}"
    );
    assert!(plots::Scatter::new("x", [1.0, 0.0, 0.0, 1.0]).is_err());
}
