//! Bad input gets a typed error naming the bad value, never a silent wrong answer.

use sgm::device::{parse_device_request, DeviceRequest};
use sgm::losses::{self, MultiScaleConfig, NoisePrediction};
use sgm::nets::{
    BlogUnet, ConditionedMlp, ConditionedMlpConfig, ConditionedSimpleResnet, LeNet, Ncsnv2Unet,
    ResnetConfig, UnetConfig,
};
use sgm::noise::Sigmas;
use sgm::prelude::*;
use sgm_tests::{from_slice, test_device};

fn points(n: i64) -> Tensor {
    Tensor::randn([n, 2], (Kind::Float, test_device()))
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
    let sigma = Tensor::ones([3], (Kind::Float, test_device()));
    assert!(matches!(
        donut.score(&points(5), &sigma),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn empty_data_is_refused() {
    let donut = Donut::default();
    let empty = Tensor::zeros([0, 2], (Kind::Float, test_device()));
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
    let vs = nn::VarStore::new(test_device());
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
        donut.sample(0, test_device()),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn non_finite_loss_stops_training_and_names_the_step() {
    let vs = nn::VarStore::new(test_device());
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
    let vs = nn::VarStore::new(test_device());
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
        // The run stops at a check soon after the blow-up (within a few steps at ε = 1), not
        // after all 200 steps: `step <= 200` held for any step the sampler could name.
        Err(Error::NonFiniteSamples { step }) => assert!(step < 200, "stopped at step {step}"),
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
    let vs = nn::VarStore::new(test_device());
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

/// The error of `r`, which must be `Error::Shape` whose message names both shapes.
fn shape_error(r: Result<Tensor>, expected: &str, got: &str) {
    match r {
        Err(e @ Error::Shape { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(expected) && msg.contains(got),
                "{msg:?} should name {expected} and {got}"
            );
        }
        other => panic!("expected a shape error naming {expected} and {got}, got {other:?}"),
    }
}

fn images(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, test_device()))
}

/// One network of each kind, built under `vs` (small sizes, CPU).
struct Nets {
    mlp: Mlp,
    cmlp: ConditionedMlp,
    resnet: ConditionedSimpleResnet,
    blog: BlogUnet,
    v2: Ncsnv2Unet,
}

fn nets(vs: &nn::VarStore) -> Nets {
    let r = vs.root();
    let unet = UnetConfig {
        start_filters: 4,
        groups: 2,
        ..Default::default()
    };
    Nets {
        mlp: Mlp::new(&(&r / "mlp"), &MlpConfig::donut()).unwrap(),
        cmlp: ConditionedMlp::new(&(&r / "cmlp"), &ConditionedMlpConfig::moons()).unwrap(),
        resnet: ConditionedSimpleResnet::new(
            &(&r / "resnet"),
            &ResnetConfig {
                n_filters: 4,
                n_blocks: 1,
                ..ResnetConfig::homework(Sigmas::ncsn())
            },
        )
        .unwrap(),
        blog: BlogUnet::new(&(&r / "blog"), &unet).unwrap(),
        v2: Ncsnv2Unet::new(&(&r / "v2"), &unet).unwrap(),
    }
}

#[test]
fn networks_name_the_expected_and_the_received_shape() {
    // Before, the image networks returned an empty tensor that surfaced as "score output shape
    // [0]", and the MLPs hit a libtorch panic: each kind now says what it wanted.
    let vs = nn::VarStore::new(test_device());
    let n = nets(&vs);
    // MLPs want [n, dim].
    shape_error(
        n.mlp.score_at(&points(4).repeat([1, 2]), 0.1),
        "[n, 2]",
        "[4, 4]",
    );
    shape_error(n.mlp.score_at(&images(&[4]), 0.1), "[n, 2]", "[4]");
    shape_error(n.cmlp.score_at(&images(&[4, 3]), 0.1), "[n, 2]", "[4, 3]");
    shape_error(
        n.cmlp.score_at(&images(&[4, 2, 1]), 0.1),
        "[n, 2]",
        "[4, 2, 1]",
    );
    // Image networks want [n, C, H, W] with their channel count.
    let rgb = images(&[2, 3, 8, 8]);
    shape_error(n.resnet.score_at(&rgb, 0.1), "[n, 1, H, W]", "[2, 3, 8, 8]");
    shape_error(
        n.resnet.score_at(&images(&[2, 8, 8]), 0.1),
        "[n, 1, H, W]",
        "[2, 8, 8]",
    );
    shape_error(n.blog.score_at(&rgb, 0.1), "[n, 1, H, W]", "[2, 3, 8, 8]");
    shape_error(n.v2.score_at(&rgb, 0.1), "[n, 1, H, W]", "[2, 3, 8, 8]");
    // U-Nets: H and W multiples of 4 (two poolings by 2 and back).
    for odd in [[2, 1, 30, 28], [2, 1, 28, 6], [2, 1, 0, 0]] {
        let got = format!("{odd:?}");
        shape_error(n.blog.score_at(&images(&odd), 0.1), "multiples of 4", &got);
        shape_error(n.v2.score_at(&images(&odd), 0.1), "multiples of 4", &got);
    }
    // Any H, W for the ResNet (3×3 convolutions with padding): 6×10 works.
    assert_eq!(
        n.resnet
            .score_at(&images(&[2, 1, 6, 10]), 0.1)
            .unwrap()
            .size(),
        [2, 1, 6, 10]
    );
    // LeNet wants [n, 1, 28, 28].
    let lenet = LeNet::new(&(vs.root() / "lenet"), 10).unwrap();
    shape_error(
        lenet.features(&images(&[2, 1, 32, 32])),
        "[n, 1, 28, 28]",
        "[2, 1, 32, 32]",
    );
    // The homework's forward(x, y): y one int64 index per row, each in 0..L.
    let x = images(&[2, 1, 8, 8]);
    shape_error(
        n.resnet.forward_index(&x, &from_slice(&[0i64, 1, 2])),
        "[2] int64",
        "[3]",
    );
    let r = n.resnet.forward_index(&x, &from_slice(&[0i64, 10]));
    assert!(
        matches!(&r, Err(Error::InvalidParameter { value, .. }) if value == "10"),
        "{r:?}"
    );
    // sigma with one level per row, also when a network is called without Score::score.
    let bad_sigma = Tensor::ones([3], (Kind::Float, test_device()));
    shape_error(
        n.cmlp.try_forward_score(&points(2), &bad_sigma),
        "[2]",
        "[3]",
    );
    shape_error(
        n.v2.try_forward_score(&images(&[2, 1, 8, 8]), &bad_sigma),
        "[2]",
        "[3]",
    );
}

#[test]
fn libtorch_refusals_name_the_network_and_the_input() {
    // What a shape check cannot see (a Double input for Float weights) comes back from the
    // first layer's fallible call as Error::TorchOp naming the network, layer and input.
    let vs = nn::VarStore::new(test_device());
    let n = nets(&vs);
    let x = Tensor::randn([3, 2], (Kind::Double, test_device()));
    match n.mlp.score_at(&x, 0.1) {
        Err(e @ Error::TorchOp { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("Mlp") && msg.contains("layer 0") && msg.contains("Double"),
                "{msg}"
            );
            assert!(
                !msg.contains("Exception raised from"),
                "C++ trace kept: {msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    let x = Tensor::randn([2, 1, 8, 8], (Kind::Double, test_device()));
    let err = n.v2.score_at(&x, 0.1).unwrap_err();
    assert!(
        matches!(err, Error::TorchOp { .. }) && err.to_string().contains("conv1a"),
        "{err}"
    );
    // An autograd score of a log-density that does not depend on x differentiably: a typed
    // error naming the input (libtorch's backward pass used to crash the process on it).
    let detached = score::GradLogDensity(|x: &Tensor| {
        x.detach()
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
    });
    let err = detached.score_at(&points(3), 0.0).unwrap_err();
    // Differentiable, but through another tensor than x: no gradient reaches x.
    let w = Tensor::ones([1], (Kind::Float, test_device())).set_requires_grad(true);
    let elsewhere = score::GradLogDensity(move |x: &Tensor| {
        (&w * x.detach()).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
    });
    assert!(
        matches!(
            elsewhere.score_at(&points(3), 0.0),
            Err(Error::InvalidParameter {
                name: "log_density",
                ..
            })
        ),
        "a gradient that does not reach x"
    );
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                name: "log_density",
                ..
            }
        ) && err.to_string().contains("[3, 2]"),
        "{err}"
    );
}

#[test]
fn device_names_parse_exactly() {
    // Good values, in any case.
    for (text, want) in [
        ("cpu", DeviceRequest::Cpu),
        ("CPU", DeviceRequest::Cpu),
        ("cuda", DeviceRequest::Cuda(None)),
        ("Cuda", DeviceRequest::Cuda(None)),
        ("cuda:0", DeviceRequest::Cuda(Some(0))),
        ("CUDA:12", DeviceRequest::Cuda(Some(12))),
    ] {
        assert_eq!(parse_device_request(text).unwrap(), want, "{text}");
        // Display gives back a name that parses to the same request.
        assert_eq!(parse_device_request(&want.to_string()).unwrap(), want);
    }
    // Anything else is an error naming the value: the old code took every value but "cpu" to
    // mean "whatever is available".
    for bad in [
        "",
        " cpu",
        "cpu ",
        "gpu",
        "cuda:",
        "cuda:-1",
        "cuda:+1",
        "cuda:1.0",
        "cuda0",
        "cuda:0:1",
        "cpu:0",
        "mps",
        "cuda:x",
        "cuda:99999999999999999999999",
    ] {
        match parse_device_request(bad) {
            Err(e @ Error::InvalidDevice { .. }) => {
                assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
            }
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

#[test]
fn noise_conditional_networks_refuse_sigma_zero_at_the_call() {
    // σ = 0 used to give inf/NaN (division, log σ) or silently the largest level (the ResNet's
    // table lookup): now every network that uses σ refuses it, naming the value.
    let vs = nn::VarStore::new(test_device());
    let n = nets(&vs);
    let img = images(&[2, 1, 8, 8]);
    let flat = points(2);
    let only_log = ConditionedMlp::new(
        &(vs.root() / "only_log"),
        &ConditionedMlpConfig {
            divide_by_sigma: false,
            ..ConditionedMlpConfig::moons()
        },
    )
    .unwrap();
    let only_divide =
        ConditionedMlp::new(&(vs.root() / "only_divide"), &ConditionedMlpConfig::w1()).unwrap();
    let unconditioned = ConditionedMlp::new(
        &(vs.root() / "plain"),
        &ConditionedMlpConfig {
            sigma_input: false,
            divide_by_sigma: false,
            ..ConditionedMlpConfig::moons()
        },
    )
    .unwrap();
    let blog_divide = BlogUnet::new(
        &(vs.root() / "blog_divide"),
        &UnetConfig {
            start_filters: 4,
            divide_by_sigma: true,
            ..Default::default()
        },
    )
    .unwrap();
    let blog_edm = BlogUnet::new(
        &(vs.root() / "blog_edm"),
        &UnetConfig {
            start_filters: 4,
            sigma_data: Some(0.5),
            ..Default::default()
        },
    )
    .unwrap();
    let noise_pred = NoisePrediction(Mlp::new(&(vs.root() / "eta"), &MlpConfig::donut()).unwrap());
    let conditional: Vec<(&str, &dyn Score, &Tensor)> = vec![
        ("ConditionedMlp (moons)", &n.cmlp, &flat),
        ("ConditionedMlp (log σ input)", &only_log, &flat),
        ("ConditionedMlp (divide by σ)", &only_divide, &flat),
        ("ConditionedSimpleResnet", &n.resnet, &img),
        ("BlogUnet", &n.blog, &img),
        ("BlogUnet (divide by σ)", &blog_divide, &img),
        ("BlogUnet (EDM)", &blog_edm, &img),
        ("Ncsnv2Unet", &n.v2, &img),
        ("NoisePrediction", &noise_pred, &flat),
    ];
    for (name, model, x) in conditional {
        // 1e-50 and 1e39 are positive and finite as f64, but 0 and ∞ as the float32 tensors hold.
        for bad in [0.0, -0.5, f64::NAN, f64::INFINITY, 1e-50, 1e39] {
            match model.score_at(x, bad) {
                Err(Error::InvalidSigma(v)) => {
                    assert!(
                        v == bad || v.is_nan() && bad.is_nan(),
                        "{name}: {v} for {bad}"
                    )
                }
                other => panic!("{name}, sigma {bad}: {other:?}"),
            }
        }
        // One bad level among good ones is named.
        let mixed = from_slice(&[0.5f32, -0.25]);
        assert!(
            matches!(model.score(x, &mixed), Err(Error::InvalidSigma(v)) if v == -0.25),
            "{name}"
        );
        assert!(model.score_at(x, 0.3).is_ok(), "{name} at σ = 0.3");
        // score_at skips the check of the σ tensor it built from a checked value; the skip
        // ends with the call.
        assert!(
            matches!(model.score(x, &mixed), Err(Error::InvalidSigma(v)) if v == -0.25),
            "{name}: the check stayed off after score_at"
        );
    }
    for bad in [1e-50, 1e39] {
        assert!(matches!(Sigmas::new(vec![1.0, bad]), Err(Error::InvalidSigma(v)) if v == bad));
    }
    // Models of one noise level ignore σ and keep accepting 0.
    assert!(n.mlp.score_at(&flat, 0.0).is_ok());
    assert!(unconditioned.score_at(&flat, 0.0).is_ok());
    // The table lookup itself, and the DSM loss at given levels (its target divides by σ).
    let sigmas = Sigmas::ncsn();
    assert!(matches!(
        sigmas.index_of(&from_slice(&[0.1f32, 0.0])),
        Err(Error::InvalidSigma(v)) if v == 0.0
    ));
    let cfg = MultiScaleConfig::new(sigmas);
    assert!(matches!(
        losses::dsm_at_levels(&n.mlp, &flat, &from_slice(&[0.1f32, 0.0]), &cfg),
        Err(Error::InvalidSigma(v)) if v == 0.0
    ));
    // The training loss draws its levels from the checked table and skips the per-call check;
    // the skip ends with it.
    assert!(losses::multiscale_dsm_loss(&n.cmlp, &flat, &cfg).is_ok());
    assert!(matches!(
        losses::dsm_at_levels(&n.cmlp, &flat, &from_slice(&[0.1f32, 0.0]), &cfg),
        Err(Error::InvalidSigma(v)) if v == 0.0
    ));
    // Plain Langevin's default σ is 0: with a noise-conditional network that is an error at the
    // first step, not NaN samples after it.
    let r = langevin(&n.cmlp, &flat, &LangevinConfig::default());
    assert!(
        matches!(r, Err(Error::InvalidSigma(v)) if v == 0.0),
        "{r:?}"
    );
}

#[test]
fn inputs_on_another_device_than_the_parameters_are_named() {
    // Needs a GPU: on a machine without one there is no second device to mismatch with.
    if sgm::device::try_device().map_or(true, |d| d == Device::Cpu) {
        eprintln!("skipped: no GPU");
        return;
    }
    let gpu = Device::Cuda(0);
    let vs = nn::VarStore::new(gpu);
    let n = nets(&vs);
    let err =
        n.v2.score_at(&images(&[2, 1, 8, 8]).to_device(Device::Cpu), 0.1)
            .unwrap_err();
    assert!(
        matches!(err, Error::DeviceMismatch { .. })
            && err.to_string().contains("x on cpu")
            && err.to_string().contains("cuda:0"),
        "{err}"
    );
    let err = n
        .mlp
        .score_at(&points(3).to_device(Device::Cpu), 0.1)
        .unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
    // sigma on the CPU for x on the GPU.
    let x = points(3).to_device(gpu);
    let sigma = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let err = n.cmlp.score(&x, &sigma).unwrap_err();
    assert!(
        matches!(err, Error::DeviceMismatch { .. }) && err.to_string().contains("sigma on cpu"),
        "{err}"
    );
    // Everything on the GPU works.
    assert_eq!(n.cmlp.score_at(&x, 0.1).unwrap().device(), gpu);
}
