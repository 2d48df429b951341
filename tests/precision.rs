//! bfloat16 autocast as a training step's precision: what runs in bfloat16, what stays float32,
//! and that the scope ends.

use sgm::losses::{multiscale_dsm_loss, MultiScaleConfig};
use sgm::nets::{BlogUnet, UnetConfig};
use sgm::noise::Sigmas;
use sgm::precision::Precision;
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
