//! bfloat16 autocast as a training step's precision and as a sampler's: what runs in bfloat16,
//! what stays float32, and that the scope ends.

use sgm::langevin::{annealed_langevin, AnnealedConfig};
use sgm::losses::{multiscale_dsm_loss, MultiScaleConfig};
use sgm::nets::{BlogUnet, ConditionedSimpleResnet, ResnetConfig, UnetConfig};
use sgm::noise::Sigmas;
use sgm::precision::{has_bf16_matrix_units, Precision};
use sgm::prelude::*;
use sgm::training::{self, TrainConfig};
use sgm_tests::{rng_lock, test_device};

fn unet(vs: &nn::VarStore) -> BlogUnet {
    let cfg = UnetConfig {
        start_filters: 8,
        groups: 2,
        ..Default::default()
    };
    BlogUnet::new(&vs.root(), &cfg).unwrap()
}

#[test]
fn bf16_autocast_runs_convolutions_in_bf16_and_ends_with_its_scope() {
    let _rng = rng_lock();
    data::seed(0);
    let device = test_device();
    let vs = nn::VarStore::new(device);
    let net = unet(&vs);
    let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, device));
    let w = Tensor::randn([8, 1, 3, 3], (Kind::Float, device));
    let conv = |x: &Tensor| x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
    let bf16 = Precision::Bf16Autocast;
    // Inside: a convolution of float32 inputs gives bfloat16; nested scopes keep it on.
    assert_eq!(
        bf16.run(device, || conv(&x).kind()).unwrap(),
        Kind::BFloat16
    );
    let nested = bf16
        .run(device, || {
            (bf16.run(device, || ()).unwrap(), conv(&x).kind()).1
        })
        .unwrap();
    assert_eq!(nested, Kind::BFloat16);
    // Outside, and in float32 mode: float32.
    assert_eq!(conv(&x).kind(), Kind::Float);
    assert_eq!(
        Precision::Float32.run(device, || conv(&x).kind()).unwrap(),
        Kind::Float
    );
    // A panic inside still ends the scope.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        bf16.run(device, || panic!("inside")).unwrap()
    }));
    assert!(caught.is_err());
    assert_eq!(conv(&x).kind(), Kind::Float);

    // The DSM loss (same levels, same noise) in both precisions: the loss itself is float32 and
    // agrees to bfloat16's accuracy. bfloat16 keeps 8 significant bits (relative rounding
    // 2⁻⁹ ≈ 0.2% per value) through a dozen layers; 5% is far above that drift, far below the
    // loss of a wrong scale or of noise drawn twice (each changes it by tens of percent).
    let cfg = MultiScaleConfig::new(Sigmas::geometric(1.0, 0.1, 4).unwrap());
    let loss_in = |p: Precision| {
        data::seed(5);
        p.run(device, || multiscale_dsm_loss(&net, &x, &cfg).unwrap())
            .unwrap()
    };
    let (full, half) = (loss_in(Precision::Float32), loss_in(bf16));
    assert_eq!(half.kind(), Kind::Float);
    let (full, half) = (full.double_value(&[]), half.double_value(&[]));
    assert!(
        (half / full - 1.0).abs() < 0.05,
        "bf16 loss {half} vs float32 {full}"
    );
}

#[test]
fn a_bf16_training_run_keeps_float32_weights_and_learns() {
    let _rng = rng_lock();
    data::seed(1);
    let device = test_device();
    let vs = nn::VarStore::new(device);
    let net = unet(&vs);
    let x = Tensor::rand([64, 1, 28, 28], (Kind::Float, device));
    let cfg = TrainConfig {
        epochs: 6,
        batch_size: 16,
        lr: 2e-3,
        seed: Some(2),
        precision: Precision::Bf16Autocast,
        ..Default::default()
    };
    let levels = MultiScaleConfig::new(Sigmas::geometric(1.0, 0.1, 4).unwrap());
    let history = training::train(
        &vs,
        &x,
        None,
        &cfg,
        |b| multiscale_dsm_loss(&net, b, &levels),
        &mut training::silent(),
    )
    .unwrap();
    let losses = &history.train_loss;
    assert!(
        losses.last().unwrap() < &(0.8 * losses[0]),
        "no learning under bf16: {losses:?}"
    );
    for (name, p) in vs.variables() {
        assert_eq!(p.kind(), Kind::Float, "{name}");
    }
    // The setting is saved with the run's configuration.
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["precision"], "Bf16Autocast");
    assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), cfg);
}

#[test]
fn annealed_langevin_in_bf16_evaluates_the_score_in_bf16_and_keeps_float32_particles() {
    let _rng = rng_lock();
    let device = test_device();
    // The exact score of N(0, (1 + σ²) I), written through a matrix product so that autocast
    // applies to it; it records the dtype that product had.
    let kinds = std::cell::RefCell::new(Vec::new());
    let eye = Tensor::eye(2, (Kind::Float, device));
    let score = |x: &Tensor, sigma: &Tensor| {
        let h = x.matmul(&eye);
        kinds.borrow_mut().push(h.kind());
        -h / (sigma.view([-1, 1]).square() + 1.0)
    };
    let sigmas = Sigmas::geometric(0.4, 0.2, 2).unwrap();
    data::seed(3);
    let x0 = Tensor::randn([2000, 2], (Kind::Float, device)) * 2.0;
    let run = |precision| {
        kinds.borrow_mut().clear();
        let cfg = AnnealedConfig {
            steps_per_level: 100,
            eps: 0.1,
            seed: Some(7),
            precision,
            ..AnnealedConfig::ncsn()
        };
        let x = annealed_langevin(&score, &sigmas, &x0, &cfg)
            .unwrap()
            .samples;
        (x, kinds.borrow().clone())
    };
    // Float32 is left out of the saved configuration, so one saved before the option existed
    // reads back as float32 and compares equal to today's (a resumed run checks that).
    let saved = serde_json::to_value(AnnealedConfig::ncsn()).unwrap();
    assert!(saved.get("precision").is_none(), "{saved}");
    let back: AnnealedConfig = serde_json::from_value(saved).unwrap();
    assert_eq!(back.precision, Precision::Float32);
    let bf16_cfg = AnnealedConfig {
        precision: Precision::Bf16Autocast,
        ..AnnealedConfig::ncsn()
    };
    assert_eq!(
        serde_json::to_value(&bf16_cfg).unwrap()["precision"],
        "Bf16Autocast"
    );
    let (full, full_kinds) = run(Precision::Float32);
    let (half, half_kinds) = run(Precision::Bf16Autocast);
    // Every evaluation in the asked precision; the particles float32 either way.
    assert_eq!(full_kinds.len(), 200);
    assert!(full_kinds.iter().all(|&k| k == Kind::Float));
    assert_eq!(half_kinds.len(), 200);
    assert!(
        half_kinds.iter().all(|&k| k == Kind::BFloat16),
        "{half_kinds:?}"
    );
    assert_eq!(half.kind(), Kind::Float);
    // Autocast ends with the sampler.
    assert_eq!(x0.matmul(&eye).kind(), Kind::Float);
    // The same noise, a contracting drift: bf16's rounding (2⁻⁸ of each score) stays small, and
    // both runs reach the chain's stationary law. At the last level (σ_L = 0.2, v = 1 + σ_L²,
    // α = ε = 0.1) the step is x ← (1 − α/(2v)) x + √α z, whose stationary variance is
    // α / (1 − (1 − α/(2v))²) = 1.0655 (std 1.0322); 100 steps contract the start by e^-4.8.
    // 4,000 coordinates give a standard error of 0.012 on the std.
    let gap = (&half - &full).abs().max().double_value(&[]);
    // A score whose result is itself bfloat16 (a network's last convolution with nothing after
    // it): the particles still come back float32.
    let bf16_out = |x: &Tensor, _: &Tensor| -x.matmul(&eye);
    let cfg = AnnealedConfig {
        steps_per_level: 2,
        eps: 0.1,
        precision: Precision::Bf16Autocast,
        ..AnnealedConfig::ncsn()
    };
    let x = annealed_langevin(&bf16_out, &sigmas, &x0, &cfg)
        .unwrap()
        .samples;
    assert_eq!(x.kind(), Kind::Float);
    // A network with a table of levels still refuses other levels under autocast.
    let vs = nn::VarStore::new(device);
    let table = Sigmas::geometric(1.0, 0.1, 4).unwrap();
    let resnet = ConditionedSimpleResnet::new(
        &vs.root(),
        &ResnetConfig {
            n_filters: 4,
            n_blocks: 1,
            ..ResnetConfig::homework(table)
        },
    )
    .unwrap();
    let images = Tensor::zeros([2, 1, 28, 28], (Kind::Float, device));
    assert!(matches!(
        annealed_langevin(&resnet, &sigmas, &images, &cfg),
        Err(sgm::Error::UntrainedLevel { .. })
    ));
    assert!(gap > 0.0 && gap < 0.05, "bf16 and float32 runs {gap} apart");
    for x in [&full, &half] {
        let std = x.std(true).double_value(&[]);
        let v = 1.04f64;
        let a = 1.0 - 0.1 / (2.0 * v);
        let exact = (0.1 / (1.0 - a * a)).sqrt();
        assert!((std - exact).abs() < 0.04, "std {std} vs {exact}");
    }
}

/// Linux's own view of this CPU: whether `/proc/cpuinfo` lists the `amx_bf16` flag (None where
/// there is no such file).
fn kernel_lists_amx_bf16() -> Option<bool> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = info.lines().find(|l| l.starts_with("flags"))?;
    Some(flags.split_whitespace().any(|f| f == "amx_bf16"))
}

#[test]
fn auto_precision_is_bf16_autocast_exactly_where_the_device_has_bf16_matrix_units() {
    let _rng = rng_lock();
    let device = test_device();
    let units = has_bf16_matrix_units(device).unwrap();
    // On an x86 CPU, libtorch's answer (cpuinfo's CPUID reading) agrees with the kernel's flags:
    // a wrong capability key or an inverted answer would not.
    if device == Device::Cpu && cfg!(target_arch = "x86_64") {
        if let Some(listed) = kernel_lists_amx_bf16() {
            assert_eq!(
                units, listed,
                "libtorch and /proc/cpuinfo disagree on AMX-BF16"
            );
        }
    }
    assert_eq!(has_bf16_matrix_units(device).unwrap(), units, "asked twice");
    // The rule itself, both ways, whatever this machine has.
    assert_eq!(Precision::Auto.given_units(true), Precision::Bf16Autocast);
    assert_eq!(Precision::Auto.given_units(false), Precision::Float32);
    for units in [true, false] {
        for fixed in [Precision::Float32, Precision::Bf16Autocast] {
            assert_eq!(fixed.given_units(units), fixed);
        }
    }
    let resolved = Precision::Auto.resolve(device).unwrap();
    let (expected, other) = if units {
        (Precision::Bf16Autocast, Precision::Float32)
    } else {
        (Precision::Float32, Precision::Bf16Autocast)
    };
    assert_eq!(resolved, expected);
    for fixed in [Precision::Float32, Precision::Bf16Autocast] {
        assert_eq!(fixed.resolve(device).unwrap(), fixed);
    }
    // A convolution under Auto computes in the resolved precision's dtype.
    let x = Tensor::rand([2, 1, 8, 8], (Kind::Float, device));
    let w = Tensor::randn([4, 1, 3, 3], (Kind::Float, device));
    let kind = Precision::Auto
        .run(device, || {
            x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
                .kind()
        })
        .unwrap();
    assert_eq!(kind, if units { Kind::BFloat16 } else { Kind::Float });

    // A training run under Auto is the resolved precision's run (bit for bit on the CPU; cuDNN's
    // backward passes are not deterministic, so within 10⁻⁴ on a GPU, where bfloat16's rounding
    // moves the losses by about 10⁻²), and its history records what ran; the other precision
    // gives other losses, so the comparison can tell.
    data::seed(8);
    let images = Tensor::rand([32, 1, 28, 28], (Kind::Float, device));
    let levels = MultiScaleConfig::new(Sigmas::geometric(1.0, 0.1, 4).unwrap());
    let train = |precision| {
        data::seed(9);
        let vs = nn::VarStore::new(device);
        let net = unet(&vs);
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 16,
            lr: 2e-3,
            seed: Some(3),
            precision,
            ..Default::default()
        };
        let history = training::train(
            &vs,
            &images,
            None,
            &cfg,
            |b| multiscale_dsm_loss(&net, b, &levels),
            &mut training::silent(),
        )
        .unwrap();
        let weights: Vec<Tensor> = vs.trainable_variables();
        (history, weights)
    };
    let (auto, auto_weights) = train(Precision::Auto);
    let (fixed, fixed_weights) = train(expected);
    let (different, _) = train(other);
    assert_eq!(auto.precision, Some(expected));
    assert_eq!(different.precision, Some(other));
    let exact = device == Device::Cpu;
    let close = |a: &[f64], b: &[f64], tol: f64| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * x.abs().max(y.abs()))
    };
    if exact {
        assert_eq!(auto.train_loss, fixed.train_loss);
        for (a, f) in auto_weights.iter().zip(&fixed_weights) {
            assert!(a.equal(f), "Auto's weights differ from {expected:?}'s");
        }
    } else {
        assert!(
            close(&auto.train_loss, &fixed.train_loss, 1e-4),
            "{:?} vs {:?}",
            auto.train_loss,
            fixed.train_loss
        );
    }
    assert!(
        !close(&auto.train_loss, &different.train_loss, 1e-4),
        "{other:?} trained as {expected:?} did: {:?}",
        auto.train_loss
    );

    // The setting is saved by name and read back.
    let cfg = AnnealedConfig {
        precision: Precision::Auto,
        ..AnnealedConfig::ncsn()
    };
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["precision"], "Auto");
    assert_eq!(serde_json::from_value::<AnnealedConfig>(json).unwrap(), cfg);
}

/// `flush_subnormals` makes float32 arithmetic on the CPU read and write subnormal values
/// (below 1.18·10⁻³⁸) as zero, on the calling thread and on the threads of libtorch's pool,
/// including pool threads that already existed when it was called; turned off, the same
/// product keeps them. A product over 2²⁰ elements runs on every thread of the pool, so one
/// thread left out leaves its share nonzero.
#[test]
fn flushing_subnormals_reaches_the_caller_and_every_thread_of_the_pool() {
    let _rng = rng_lock();
    let tiny = 1e-39_f32;
    assert!(
        tiny > 0.0 && tiny < f32::MIN_POSITIVE,
        "{tiny} is subnormal"
    );
    let n = 1_usize << 20;
    // Built from bytes, not by arithmetic, so that the flag cannot change the input.
    let x = Tensor::from_slice(&vec![tiny; n]);
    let nonzero = |t: &Tensor| t.ne(0.0).sum(Kind::Int64).int64_value(&[]);
    // The pool's threads exist before the call (the case of a notebook's later cells).
    let _warm = (&x * 1.0).sum(Kind::Float);
    if !sgm::precision::flush_subnormals(false).unwrap() {
        eprintln!("this CPU cannot flush subnormals; nothing to check");
        return;
    }
    assert_eq!(nonzero(&(&x * 1.0)), n as i64, "kept when off");
    assert!(sgm::precision::flush_subnormals(true).unwrap());
    assert_eq!(nonzero(&(&x * 1.0)), 0, "flushed on every thread");
    assert_eq!(nonzero(&(&x * 1.0).sum(Kind::Float)), 0);
    // Normal values are untouched.
    let normal = Tensor::from_slice(&[f32::MIN_POSITIVE, 1.5]);
    assert_eq!(
        Vec::<f32>::try_from(&normal * 1.0).unwrap(),
        vec![f32::MIN_POSITIVE, 1.5]
    );
}
