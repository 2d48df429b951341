//! Sample-quality metrics: the Fréchet distance against its closed form, entropy and
//! histograms, mode weights of a mixture, nearest neighbours, the energy report's floor, and
//! the LeNet-5 classifier behind the image metrics (accuracy on real digits, caching, and the
//! figures it gives for real, noisy and copied images).

use sgm::images::{self, ImageSet};
use sgm::metrics::{self, Classifier, ClassifierConfig, EnergyReport, ImageQuality};
use sgm::prelude::*;
use sgm_tests::{from_slice, rng_lock, test_device, tmpdir};

#[test]
fn frechet_distance_matches_the_gaussian_closed_form() {
    let _rng = rng_lock();
    data::seed(21);
    // N(0, I) vs N(μ, diag(s²)) in d = 4: FD = ‖μ‖² + Σ (1 − s_k)².
    let n = 40_000;
    let a = Tensor::randn([n, 4], (Kind::Double, test_device()));
    let s = from_slice(&[0.5f64, 1.0, 1.5, 2.0]);
    let mu = from_slice(&[1.0f64, 0.0, -1.0, 0.5]);
    let b = Tensor::randn([n, 4], (Kind::Double, test_device())) * &s + &mu;
    let exact = 1.0 + 1.0 + 0.25 + (0.25 + 0.0 + 0.25 + 1.0);
    let got = metrics::frechet_distance(&a, &b).unwrap();
    // The estimate's standard error at n = 40,000 is about 0.02 here (moment estimates of
    // order 1/√n per coordinate); 0.1 is five of them.
    assert!((got - exact).abs() < 0.1, "FD {got} vs exact {exact}");
    // Exact identities: zero against itself, ‖c‖² for a pure translation.
    assert!(metrics::frechet_distance(&a, &a).unwrap().abs() < 1e-8);
    let c = from_slice(&[3.0f64, -4.0, 0.0, 0.0]);
    let shifted = metrics::frechet_distance(&b, &(&b + &c)).unwrap();
    assert!((shifted - 25.0).abs() < 1e-6, "translation gives {shifted}");
}

#[test]
fn frechet_distance_rejects_bad_shapes() {
    let one_row = Tensor::zeros([1, 3], (Kind::Float, test_device()));
    let ok = Tensor::randn([5, 3], (Kind::Float, test_device()));
    let wide = Tensor::randn([5, 4], (Kind::Float, test_device()));
    assert!(matches!(
        metrics::frechet_distance(&one_row, &ok),
        Err(Error::Shape { .. })
    ));
    let err = metrics::frechet_distance(&ok, &wide).unwrap_err();
    assert!(err.to_string().contains("[5, 4]"), "{err}");
}

#[test]
fn entropy_and_class_histogram() {
    let uniform = vec![7usize; 10];
    assert!((metrics::entropy(&uniform).unwrap() - 10f64.ln()).abs() < 1e-12);
    assert_eq!(metrics::entropy(&[0, 12, 0]).unwrap(), 0.0);
    // Two classes at 1/4, 3/4.
    let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert!((metrics::entropy(&[1, 3]).unwrap() - h).abs() < 1e-12);
    assert!(matches!(
        metrics::entropy(&[0, 0]),
        Err(Error::EmptyData(_))
    ));
    let labels = from_slice(&[0i64, 2, 2, 1, 2]);
    assert_eq!(
        metrics::class_histogram(&labels, 4).unwrap(),
        vec![1, 1, 3, 0]
    );
    let err = metrics::class_histogram(&labels, 2).unwrap_err();
    assert!(err.to_string().contains("0..=2"), "{err}");
}

#[test]
fn mode_weights_recover_a_mixture() {
    let _rng = rng_lock();
    data::seed(22);
    let n = 10_000;
    // 0.2 N((-4, 0), I) + 0.8 N((4, 0), I), sampled exactly: modes 8 apart, so the nearest
    // centre is the right mode except with probability Φ(-4) ≈ 3e-5.
    let left = Tensor::rand([n], (Kind::Float, test_device())).lt(0.2);
    let centre_x = left.to_kind(Kind::Float) * -8.0 + 4.0;
    let x = Tensor::randn([n, 2], (Kind::Float, test_device()))
        + Tensor::stack(
            &[centre_x, Tensor::zeros([n], (Kind::Float, test_device()))],
            1,
        );
    let centres = from_slice(&[-4.0f32, 0.0, 4.0, 0.0]).view([2, 2]);
    let w = metrics::mode_weights(&x, &centres, &from_slice(&[0i64, 1]), 2).unwrap();
    // Binomial standard deviation √(0.2·0.8/10⁴) = 0.004; 0.02 is five of them.
    assert!(
        (w[0] - 0.2).abs() < 0.02 && (w[1] - 0.8).abs() < 0.02,
        "{w:?}"
    );
    // Exact shares, replacing "the weights sum to 1" (true of any normalised histogram). Three
    // reference points with labels [2, 0, 0] (two of them share label 0), 10 samples: 3 next
    // to the first, 5 next to the second, 2 next to the third, so the weights per label are
    // [0.7, 0, 0.3]. Fails on shares per reference row instead of per label ([0.3, 0.5, 0.2]),
    // labels ignored, or a division by anything but the number of samples.
    let reference = from_slice(&[-4.0f32, 0.0, 4.0, 0.0, 0.0, 10.0]).view([3, 2]);
    let near = |i: usize, k: usize| -> Vec<f32> {
        let centre = [[-4.0f32, 0.0], [4.0, 0.0], [0.0, 10.0]][i];
        (0..k)
            .flat_map(|j| [centre[0] + 0.1 * j as f32, centre[1] - 0.2])
            .collect()
    };
    let rows: Vec<f32> = [near(0, 3), near(1, 5), near(2, 2)].concat();
    let samples = from_slice(&rows).view([10, 2]);
    let labels = from_slice(&[2i64, 0, 0]);
    let w = metrics::mode_weights(&samples, &reference, &labels, 3).unwrap();
    assert_eq!(w, vec![0.7, 0.0, 0.3]);
    let bad = metrics::mode_weights(&x, &centres, &from_slice(&[0i64, 5]), 2);
    assert!(matches!(
        bad,
        Err(Error::InvalidParameter { name: "labels", .. })
    ));
}

#[test]
fn nearest_neighbours_find_copies() {
    let reference = from_slice(&[0.0f32, 0.0, 3.0, 4.0, 10.0, 0.0]).view([3, 2]);
    let samples = from_slice(&[3.0f32, 4.0, 0.0, 1.0]).view([2, 2]);
    let (d, i) = metrics::nearest_neighbours(&samples, &reference).unwrap();
    assert_eq!(Vec::<f32>::try_from(&d).unwrap(), vec![0.0, 1.0]);
    assert_eq!(Vec::<i64>::try_from(&i).unwrap(), vec![1, 0]);
}

#[test]
fn energy_report_sits_above_its_floor_for_a_shifted_sampler() {
    let _rng = rng_lock();
    data::seed(23);
    let (x, _) = data::two_moons(3_000, 0.05, 1).unwrap();
    let (train_x, test_x) = data::train_test_split(&x, 2.0 / 3.0).unwrap();
    let good = EnergyReport::new(&train_x.narrow(0, 1000, 1000), &train_x, &test_x).unwrap();
    let shifted =
        EnergyReport::new(&(train_x.narrow(0, 0, 1000) + 0.3), &train_x, &test_x).unwrap();
    assert_eq!((shifted.n_samples, shifted.n_test), (1000, 1000));
    // Real data scores at its floor (both are train-vs-test of 1,000 points); a sampler off by
    // 0.3 in each coordinate is far above it.
    assert!(good.distance < 3.0 * good.floor + 0.002, "{good:?}");
    assert!(shifted.distance > 10.0 * shifted.floor, "{shifted:?}");
}

#[test]
fn energy_floor_is_the_mean_over_every_draw_of_training_rows() {
    let _rng = rng_lock();
    data::seed(5);
    let train = Tensor::randn([6, 2], (Kind::Double, test_device()));
    let test = Tensor::randn([4, 2], (Kind::Double, test_device())) + 0.5;
    // Three samples: the floor is the energy distance of 3 of the 6 training rows against the
    // held-out rows, averaged over all C(6, 3) = 20 choices, enumerated here.
    let samples = Tensor::zeros([3, 2], (Kind::Double, test_device()));
    let report = EnergyReport::new(&samples, &train, &test).unwrap();
    let mut total = 0.0;
    let mut draws = 0;
    for i in 0..6i64 {
        for j in i + 1..6 {
            for k in j + 1..6 {
                let idx = from_slice(&[i, j, k]);
                total += metrics::energy_distance(&train.index_select(0, &idx), &test).unwrap();
                draws += 1;
            }
        }
    }
    assert_eq!(draws, 20);
    let mean = total / 20.0;
    assert!(
        (report.floor - mean).abs() < 1e-12,
        "{} vs {mean}",
        report.floor
    );
    // As many samples as training rows: the one draw is every row.
    let all = EnergyReport::new(
        &Tensor::zeros([6, 2], (Kind::Double, test_device())),
        &train,
        &test,
    )
    .unwrap();
    let exact = metrics::energy_distance(&train, &test).unwrap();
    assert!(
        (all.floor - exact).abs() < 1e-12,
        "{} vs {exact}",
        all.floor
    );
    // More samples than training rows: draws with replacement, all 3⁴ = 81 ordered draws of 4
    // of the first 3 rows enumerated.
    let few = train.narrow(0, 0, 3);
    let more = EnergyReport::new(
        &Tensor::zeros([4, 2], (Kind::Double, test_device())),
        &few,
        &test,
    )
    .unwrap();
    let mut total = 0.0;
    for code in 0..81i64 {
        let idx: Vec<i64> = (0..4).map(|p| code / 3i64.pow(p) % 3).collect();
        total += metrics::energy_distance(&few.index_select(0, &from_slice(&idx)), &test).unwrap();
    }
    assert!(
        (more.floor - total / 81.0).abs() < 1e-12,
        "{} vs {}",
        more.floor,
        total / 81.0
    );
    // One training row and one sample: that row is the draw.
    let one = train.narrow(0, 0, 1);
    let single = EnergyReport::new(&samples.narrow(0, 0, 1), &one, &test).unwrap();
    let exact = metrics::energy_distance(&one, &test).unwrap();
    assert!(
        (single.floor - exact).abs() < 1e-12,
        "{} vs {exact}",
        single.floor
    );
    // Training rows of another dimension are refused by name.
    let err = EnergyReport::new(
        &samples,
        &Tensor::zeros([6, 3], (Kind::Double, test_device())),
        &test,
    )
    .unwrap_err();
    assert!(err.to_string().contains("EnergyReport"), "{err}");
}

#[test]
fn a_draw_energy_is_the_mean_over_every_draw_from_its_pool_against_each_set() {
    let _rng = rng_lock();
    data::seed(6);
    // A pool of float rows (converted to double inside) and two sets compared with one pool.
    let pool = Tensor::randn([5, 2], (Kind::Float, test_device()));
    let drawn = metrics::DrawEnergy::new(&pool, 2).unwrap();
    let pool = pool.to_kind(Kind::Double);
    for shift in [0.0, 1.5] {
        let test = Tensor::randn([3, 2], (Kind::Double, test_device())) + shift;
        // All C(5, 2) = 10 draws without replacement.
        let mut total = 0.0;
        for i in 0..5i64 {
            for j in i + 1..5 {
                let idx = from_slice(&[i, j]);
                total += metrics::energy_distance(&pool.index_select(0, &idx), &test).unwrap();
            }
        }
        let got = drawn.against(&test).unwrap();
        assert!(
            (got - total / 10.0).abs() < 1e-12,
            "{got} vs {}",
            total / 10.0
        );
        // More rows per draw than the pool has: with replacement, 3 of the first 2 rows, all
        // 2³ = 8 ordered draws.
        let few = pool.narrow(0, 0, 2);
        let mut total = 0.0;
        for code in 0..8i64 {
            let idx: Vec<i64> = (0..3).map(|p| code / 2i64.pow(p) % 2).collect();
            total +=
                metrics::energy_distance(&few.index_select(0, &from_slice(&idx)), &test).unwrap();
        }
        let got = metrics::DrawEnergy::new(&few, 3)
            .unwrap()
            .against(&test)
            .unwrap();
        assert!(
            (got - total / 8.0).abs() < 1e-12,
            "{got} vs {}",
            total / 8.0
        );
    }
    // Between two pools: draws of 2 from the 5 rows and of 3 from 4 others, all 10 · 4 pairs of
    // draws, independent of each other.
    let other = Tensor::randn([4, 2], (Kind::Double, test_device())) * 2.0;
    let mut total = 0.0;
    for i in 0..5i64 {
        for j in i + 1..5 {
            for skip in 0..4i64 {
                let rest: Vec<i64> = (0..4).filter(|&r| r != skip).collect();
                total += metrics::energy_distance(
                    &pool.index_select(0, &from_slice(&[i, j])),
                    &other.index_select(0, &from_slice(&rest)),
                )
                .unwrap();
            }
        }
    }
    let got = drawn
        .between(&metrics::DrawEnergy::new(&other, 3).unwrap())
        .unwrap();
    assert!(
        (got - total / 40.0).abs() < 1e-12,
        "{got} vs {}",
        total / 40.0
    );
    // Bad input is refused by name: no rows per draw, an empty pool, another dimension.
    let err = metrics::DrawEnergy::new(&pool, 0).unwrap_err();
    assert!(err.to_string().contains("rows per draw"), "{err}");
    let empty = Tensor::zeros([0, 2], (Kind::Double, test_device()));
    assert!(metrics::DrawEnergy::new(&empty, 2).is_err());
    let err = drawn
        .against(&Tensor::zeros([3, 3], (Kind::Double, test_device())))
        .unwrap_err();
    assert!(err.to_string().contains("DrawEnergy"), "{err}");
    let wide = metrics::DrawEnergy::new(&Tensor::zeros([3, 3], (Kind::Double, test_device())), 2);
    assert!(drawn.between(&wide.unwrap()).is_err());
}

fn mnist_split() -> (ImageSet, ImageSet) {
    images::mnist_5k().unwrap().shuffle_split(0.9, 0).unwrap()
}

#[test]
fn a_classifier_depends_on_its_seed_alone() {
    // The metrics' LeNet is trained where it is first needed (after a notebook's networks, or
    // in a fresh process): its initial weights, and so every Fréchet distance, must not depend
    // on what drew from the generator before.
    let _rng = rng_lock();
    let (train_set, test_set) = mnist_split();
    let small = ImageSet {
        images: train_set.images.narrow(0, 0, 256),
        labels: train_set.labels.narrow(0, 0, 256),
    };
    let cfg = ClassifierConfig {
        train: TrainConfig {
            epochs: 1,
            ..ClassifierConfig::mnist().train
        },
        ..ClassifierConfig::mnist()
    };
    let probe = test_set.images.narrow(0, 0, 20);
    let trained = |draw_first: i64| {
        data::seed(3);
        let _ = Tensor::randn([draw_first], (Kind::Float, test_device()));
        let clf = Classifier::train(
            &cfg,
            &small,
            &test_set,
            test_device(),
            &mut training::silent(),
        )
        .unwrap();
        clf.probabilities(&probe).unwrap()
    };
    let a = trained(1);
    let b = trained(1000);
    // Bit for bit on the CPU; a GPU's nondeterministic kernels may differ in the last digits.
    let diff = f64::try_from((&a - &b).abs().max()).unwrap();
    assert!(
        diff < 1e-4,
        "the classifier depends on earlier draws ({diff})"
    );
    // A cache written before the initial weights were seeded (its meta does not say so) is
    // trained again; one written since is loaded.
    let dir = tmpdir("lenet-seeded");
    let trainings = |events: &mut usize| {
        Classifier::load_or_train(&dir, &cfg, &small, &test_set, test_device(), &mut |_| {
            *events += 1
        })
        .unwrap();
    };
    let mut events = 0;
    trainings(&mut events);
    assert!(events > 0);
    events = 0;
    trainings(&mut events);
    assert_eq!(events, 0, "a cache of today's classifier was trained again");
    let config_path = dir.join(sgm::checkpoint::CONFIG);
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    saved["meta"]
        .as_object_mut()
        .unwrap()
        .remove("initial_weights")
        .unwrap();
    std::fs::write(&config_path, saved.to_string()).unwrap();
    trainings(&mut events);
    assert!(events > 0, "a cache from before the seeding was used");
}

#[test]
fn lenet_classifier_learns_digits_and_image_metrics_separate_real_from_noise() {
    let _rng = rng_lock();
    let (train_set, test_set) = mnist_split();
    let dir = tmpdir("lenet");
    let cfg = ClassifierConfig::mnist();
    let clf = Classifier::load_or_train(
        &dir,
        &cfg,
        &train_set,
        &test_set,
        test_device(),
        &mut training::silent(),
    )
    .unwrap();
    // LeNet-5 reaches about 97% on MNIST from a few thousand digits; on 500 held-out digits the
    // binomial standard deviation is 0.8%, so 0.94 leaves room for the seed without admitting
    // a classifier that fails to learn.
    assert!(
        clf.test_accuracy() > 0.94,
        "accuracy {}",
        clf.test_accuracy()
    );
    // Cached: loading gives the same probabilities.
    let again = Classifier::load_or_train(
        &dir,
        &cfg,
        &train_set,
        &test_set,
        test_device(),
        &mut training::silent(),
    )
    .unwrap();
    let probe = test_set.images.narrow(0, 0, 20);
    let diff = (clf.probabilities(&probe).unwrap() - again.probabilities(&probe).unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert_eq!(diff, 0.0);
    assert_eq!(again.test_accuracy(), clf.test_accuracy());

    let heldout = &test_set.images;
    let n = 200;
    // Real digits (training images not in the floor's first n rows) score near the floor.
    let real = train_set.images.narrow(0, 1000, n);
    let q_real = ImageQuality::measure(&clf, &real, &train_set.images, heldout, 0.9).unwrap();
    // Uniform noise is nothing like a digit.
    let noise = Tensor::rand([n, 1, 28, 28], (Kind::Float, test_device()));
    let q_noise = ImageQuality::measure(&clf, &noise, &train_set.images, heldout, 0.9).unwrap();
    assert_eq!((q_real.n_samples, q_real.n_heldout), (n as usize, 500));
    assert!(q_real.fld < 2.0 * q_real.fld_floor, "{q_real:?}");
    assert!(q_noise.fld > 10.0 * q_noise.fld_floor, "{q_noise:?}");
    assert!(
        q_real.class_entropy > 0.9 * q_real.max_entropy,
        "{q_real:?}"
    );
    assert_eq!(q_real.class_histogram.iter().sum::<usize>(), n as usize);
    assert!(
        q_real.confident_share > 0.8 && q_real.confident_share_heldout > 0.8,
        "{q_real:?}"
    );
    // Copies of the training set are at distance 0 from it: the memorization check sees them,
    // while real unseen digits sit as far from the training set as held-out ones.
    assert!(q_real.nn_distance < 1e-6, "{q_real:?}");
    let unseen = ImageQuality::measure(
        &clf,
        &heldout.narrow(0, 0, n),
        &train_set.images.narrow(0, 0, 4000),
        heldout,
        0.9,
    )
    .unwrap();
    assert!(
        unseen.nn_distance > 0.8 * unseen.nn_distance_heldout,
        "{unseen:?}"
    );
    assert!(
        q_noise.nn_distance > 2.0 * q_noise.nn_distance_heldout,
        "{q_noise:?}"
    );
    // The report names what produced it.
    assert!(
        q_real.feature_extractor.contains("LeNet-5")
            && q_real.feature_extractor.contains("mnist_5k")
    );
    // Bad input: one sample, a threshold outside (0, 1].
    assert!(matches!(
        ImageQuality::measure(&clf, &real.narrow(0, 0, 1), &train_set.images, heldout, 0.9),
        Err(Error::InvalidParameter {
            name: "samples",
            ..
        })
    ));
    assert!(matches!(
        ImageQuality::measure(&clf, &real, &train_set.images, heldout, 1.5),
        Err(Error::InvalidParameter {
            name: "confidence_threshold",
            ..
        })
    ));
    assert!(matches!(
        clf.features(&Tensor::zeros([2, 1, 32, 32], (Kind::Float, test_device()))),
        Err(Error::Shape { .. })
    ));
}
