//! Sample quality: statistics against an exact law, and distances to held-out data, each
//! reported with its floor (the same figure between two samples of the data itself).
//!
//! * 2D: [`energy_distance`] with [`EnergyReport`] (floor: its expected value for as many
//!   training points against the same held-out points), [`DrawEnergy`] (the expected distance
//!   of a draw from a pool, in closed form: a sampler's figure with one draw's noise replaced
//!   by a large pool's, which is smaller),
//!   [`mode_weights`] (mixture weights recovered by mode).
//! * Images: a LeNet-5 [`Classifier`] trained by the crate and cached as a checkpoint; the
//!   Fréchet distance on its 84 penultimate features ([`frechet_distance`], the "Fréchet LeNet
//!   distance" used for MNIST in place of Inception's FID); the class histogram of samples and
//!   its entropy; the share labelled with high confidence; nearest-neighbour distances to the
//!   training set (memorization). [`ImageQuality`] gathers them with sample counts and floors.

use crate::error::{check_count, check_nonempty, Error, Result};
use crate::images::ImageSet;
use crate::nets::LeNet;
use crate::plots::to_vec;
use crate::training::{self, Event, TrainConfig};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Mean and standard deviation (unbiased) of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (n - 1 in the denominator).
    pub std: f64,
}

impl Summary {
    /// Summary of every value of a tensor.
    pub fn of(values: &Tensor) -> Result<Summary> {
        check_nonempty(&values.flatten(0, -1), "summary")?;
        let v = to_vec(values)?;
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        Ok(Summary {
            n,
            mean,
            std: var.sqrt(),
        })
    }
}

/// Radii `‖x‖` of the rows of a `[n, d]` tensor.
pub fn radii(x: &Tensor) -> Tensor {
    x.norm_scalaropt_dim(2, [-1], false)
}

/// The two-sample Kolmogorov–Smirnov statistic `sup_t |F_a(t) - F_b(t)|` of two sets of values.
///
/// Under the hypothesis that both come from one continuous law it exceeds
/// `c(α) √((n + m)/(n m))` with probability about α, `c(0.001) = 1.95`
/// ([`ks_critical_value`]).
pub fn ks_statistic(a: &Tensor, b: &Tensor) -> Result<f64> {
    check_nonempty(&a.flatten(0, -1), "ks sample a")?;
    check_nonempty(&b.flatten(0, -1), "ks sample b")?;
    let mut a = to_vec(a)?;
    let mut b = to_vec(b)?;
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let t = a[i].min(b[j]);
        while i < a.len() && a[i] <= t {
            i += 1;
        }
        while j < b.len() && b[j] <= t {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    Ok(d)
}

/// The asymptotic critical value of the two-sample KS statistic at level α:
/// `√(-ln(α/2) / 2) · √((n + m)/(n m))`.
pub fn ks_critical_value(alpha: f64, n: usize, m: usize) -> f64 {
    let c = (-(alpha / 2.0).ln() / 2.0).sqrt();
    c * ((n + m) as f64 / (n as f64 * m as f64)).sqrt()
}

/// Relative L2 error `√(Σ‖a - b‖² / Σ‖b‖²)` of an estimate `a` against a reference `b` of the
/// same shape (e.g. a learned score against the exact one over a set of points).
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.size() != b.size() {
        return Err(crate::error::Error::Shape {
            what: "relative_error (estimate vs reference)",
            expected: format!("{:?}", b.size()),
            got: a.size(),
        });
    }
    check_nonempty(b, "relative_error reference")?;
    let b = &b.to_device(a.device());
    let num = (a - b).square().sum(tch::Kind::Double).double_value(&[]);
    let den = b.square().sum(tch::Kind::Double).double_value(&[]);
    Ok((num / den).sqrt())
}

/// The energy distance between two samples of points (rows), the V-statistic
/// `2 E‖X - Y‖ - E‖X - X'‖ - E‖Y - Y'‖` (Székely & Rizzo): zero for equal laws, positive
/// otherwise. For a floor, compare it with the same distance between two samples of the data of
/// the same sizes. O(n m) memory per block; rows are flattened.
pub fn energy_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    check_nonempty(a, "energy distance sample a")?;
    check_nonempty(b, "energy distance sample b")?;
    let (a, b) = rows_of_one_dimension(
        a,
        b,
        Kind::Double,
        "energy_distance (samples of one dimension)",
    )?;
    Ok(energy_of_rows(&a, &b, mean_distance_within(&b)))
}

/// [`energy_distance`] of rows of one dimension on one device, given `d̄(b, b)`.
fn energy_of_rows(a: &Tensor, b: &Tensor, within_b: f64) -> f64 {
    2.0 * mean_distance(a, b) - mean_distance_within(a) - within_b
}

/// `a` and `b` as rows (flattened) of `kind`, both where `a` is (either may be on the GPU), or
/// [`Error::Shape`] naming `what` when their rows differ in length.
fn rows_of_one_dimension(
    a: &Tensor,
    b: &Tensor,
    kind: Kind,
    what: &'static str,
) -> Result<(Tensor, Tensor)> {
    let a = a.flatten(1, -1).to_kind(kind);
    let b = b.flatten(1, -1).to_kind(kind).to_device(a.device());
    if a.size()[1] != b.size()[1] {
        return Err(Error::Shape {
            what,
            expected: format!("[m, {}]", a.size()[1]),
            got: b.size(),
        });
    }
    Ok((a, b))
}

/// `(1/(n m)) Σ_ij ‖x_i - y_j‖` over all pairs of rows (the zero diagonal included when `x` is
/// `y`), in blocks of 1,024 rows.
fn mean_distance(x: &Tensor, y: &Tensor) -> f64 {
    let n = x.size()[0];
    let mut total = 0.0;
    for start in (0..n).step_by(1024) {
        total += distance_sum(&x.narrow(0, start, 1024.min(n - start)), y);
    }
    total / (n * y.size()[0]) as f64
}

/// `Σ_ij ‖x_i - y_j‖` over all pairs of rows (one block of [`mean_distance`]).
fn distance_sum(x: &Tensor, y: &Tensor) -> f64 {
    Tensor::cdist(x, y, 2.0, None::<i64>)
        .sum(tch::Kind::Double)
        .double_value(&[])
}

/// `mean_distance(x, x)` at about half the cost: each block of rows against itself and, twice
/// over, against the rows after it.
fn mean_distance_within(x: &Tensor) -> f64 {
    let n = x.size()[0];
    let mut total = 0.0;
    for start in (0..n).step_by(1024) {
        let len = 1024.min(n - start);
        let block = x.narrow(0, start, len);
        total += distance_sum(&block, &block);
        let after = n - start - len;
        if after > 0 {
            total += 2.0 * distance_sum(&block, &x.narrow(0, start + len, after));
        }
    }
    total / (n * n) as f64
}

/// The most training rows [`EnergyReport`]'s floor averages over (its cost is quadratic in them).
pub const ENERGY_FLOOR_MAX_ROWS: i64 = 16_384;

/// [`energy_distance`] between samples and held-out data, beside its floor: what a perfect
/// sampler would score against the same held-out data.
///
/// The floor is the *expected* [`energy_distance`] between `n = n_samples` rows drawn from the
/// training points and the held-out points, over every such draw, in closed form
/// ([`DrawEnergy`] over the first [`ENERGY_FLOOR_MAX_ROWS`] training rows at most: drawn without
/// replacement where `n` is not above their number, with replacement otherwise, so that the
/// floor's bias below stays the samples').
///
/// One such draw is a floor too, but a noisy one: for the two moons (2,000 rows against 1,000)
/// one draw ranged from 0.0011 to 0.0064 with the data's seed, which moves a ratio to the floor
/// by a factor of six. The expectation keeps only the noise of the held-out points, which the
/// samples' distance shares. Like the distance, it is a V-statistic: its bias,
/// `E‖X - X'‖ (1/n + 1/m)`, is the same for both.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnergyReport {
    /// Samples compared.
    pub n_samples: usize,
    /// Held-out points compared.
    pub n_test: usize,
    /// Energy distance, samples vs held-out.
    pub distance: f64,
    /// Expected energy distance, `n_samples` training points vs held-out.
    pub floor: f64,
}

impl EnergyReport {
    /// Computes the distance and its floor.
    pub fn new(samples: &Tensor, train: &Tensor, test: &Tensor) -> Result<EnergyReport> {
        check_nonempty(samples, "energy distance sample a")?;
        check_nonempty(test, "energy distance sample b")?;
        check_nonempty(train, "energy floor training set")?;
        let (samples, test) = rows_of_one_dimension(
            samples,
            test,
            Kind::Double,
            "energy_distance (samples of one dimension)",
        )?;
        let n = samples.size()[0];
        let rows = train.size()[0].min(ENERGY_FLOOR_MAX_ROWS);
        let (test, train) = rows_of_one_dimension(
            &test,
            &train.narrow(0, 0, rows),
            Kind::Double,
            "EnergyReport training points (rows of the held-out points' dimension)",
        )?;
        // d̄(test, test) enters both the distance and its floor.
        let within_test = mean_distance_within(&test);
        let distance = energy_of_rows(&samples, &test, within_test);
        let floor = DrawEnergy::of_rows(train, n).against_rows(&test, within_test);
        Ok(EnergyReport {
            n_samples: n as usize,
            n_test: test.size()[0] as usize,
            distance,
            floor,
        })
    }
}

/// The *expected* [`energy_distance`] between `n` rows drawn from a pool and other points, over
/// every such draw, in closed form: [`EnergyReport`]'s floor where the pool is the training
/// points, and a sampler's expected figure where the pool is many of its samples (an unbiased
/// estimate: a pool of samples is an iid sample of the sampler's law, and `U_P`, `d̄(P, Q)`
/// below are unbiased for their expectations).
///
/// With `N` rows in a pool `P`, a draw of `n` takes them without replacement where `n ≤ N` and
/// with replacement otherwise; the expected mean distance within it is `(n - 1)/n · U_P`, with
/// `U_P = N/(N - 1) d̄(P, P)` (the mean over distinct pairs; 0 where `N = 1`) without
/// replacement and `U_P = d̄(P, P)` with it. Between independent draws of `n` from `P` and `m`
/// from `Q` ([`DrawEnergy::between`]),
///
/// `E[D] = 2 d̄(P, Q) - (n - 1)/n · U_P - (m - 1)/m · U_Q`,
///
/// and against a fixed set `T` ([`DrawEnergy::against`], `T` drawn whole: `m = M`)
/// `E[D] = 2 d̄(P, T) - (n - 1)/n · U_P - d̄(T, T)`. For [`energy_distance`], Székely & Rizzo's
/// V-statistic, a draw's mean distance within, `(1/n²) Σ_{i≠i'} ‖x_i - x_i'‖` (the diagonal is
/// zero), has `n (n - 1)` terms of expectation `U_P` each (a pair of distinct positions of a
/// simple random sample is a uniform pair of distinct rows; with replacement, a uniform pair of
/// rows), and the cross term's `n m` terms have expectation `d̄(P, Q)` each. The pool's term is
/// computed once, so one `DrawEnergy` serves many comparisons; its cost is quadratic in `N`.
#[derive(Debug)]
pub struct DrawEnergy {
    pool: Tensor,
    /// `(n - 1)/n · U_P`: the expected mean distance within a draw.
    within: f64,
}

impl DrawEnergy {
    /// Draws of `n` rows from `pool` (`[N, ...]`, rows flattened).
    pub fn new(pool: &Tensor, n: usize) -> Result<DrawEnergy> {
        check_nonempty(pool, "DrawEnergy pool")?;
        let n = check_count("DrawEnergy rows per draw", n)?;
        Ok(DrawEnergy::of_rows(
            pool.flatten(1, -1).to_kind(Kind::Double),
            n as i64,
        ))
    }

    /// [`DrawEnergy::new`] of a pool already in rows of `f64`.
    fn of_rows(pool: Tensor, n: i64) -> DrawEnergy {
        let (big_n, n_f) = (pool.size()[0] as f64, n as f64);
        let all_pairs = mean_distance_within(&pool);
        let pairs = if n_f > big_n {
            all_pairs
        } else if big_n > 1.0 {
            big_n / (big_n - 1.0) * all_pairs
        } else {
            0.0
        };
        DrawEnergy {
            pool,
            within: (n_f - 1.0) / n_f * pairs,
        }
    }

    /// The expected [`energy_distance`] between a draw from this pool and `test`.
    pub fn against(&self, test: &Tensor) -> Result<f64> {
        check_nonempty(test, "DrawEnergy points compared")?;
        let (_, test) = self.rows_beside(test)?;
        Ok(self.against_rows(&test, mean_distance_within(&test)))
    }

    /// The expected [`energy_distance`] between independent draws from this pool and from
    /// `other`'s.
    pub fn between(&self, other: &DrawEnergy) -> Result<f64> {
        let (_, other_pool) = self.rows_beside(&other.pool)?;
        Ok(2.0 * mean_distance(&self.pool, &other_pool) - self.within - other.within)
    }

    /// The pool and `x` as rows of `f64` on the pool's device, or [`Error::Shape`] where their
    /// rows differ in length.
    fn rows_beside(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        rows_of_one_dimension(
            &self.pool,
            x,
            Kind::Double,
            "DrawEnergy points compared (rows of the pool's dimension)",
        )
    }

    /// [`DrawEnergy::against`] rows of the pool's kind, dimension and device, given `d̄(T, T)`
    /// (which [`EnergyReport`] shares with its distance).
    fn against_rows(&self, test: &Tensor, within_test: f64) -> f64 {
        2.0 * mean_distance(&self.pool, test) - self.within - within_test
    }
}

/// Mixture weights recovered by mode: each sample takes the label of its nearest reference
/// point (the modes' centres, or labelled data such as the two moons), and the result is the
/// share of samples per label `0..n_modes`. Labels outside `0..n_modes` are an error.
pub fn mode_weights(
    samples: &Tensor,
    reference: &Tensor,
    labels: &Tensor,
    n_modes: i64,
) -> Result<Vec<f64>> {
    check_nonempty(samples, "mode_weights samples")?;
    check_nonempty(reference, "mode_weights reference")?;
    if labels.size() != [reference.size()[0]] {
        return Err(Error::Shape {
            what: "mode_weights labels (one per reference point)",
            expected: format!("[{}]", reference.size()[0]),
            got: labels.size(),
        });
    }
    let labels = checked_labels(labels, n_modes)?.to_device(reference.device());
    let nearest = nearest_neighbours(samples, reference)?.1;
    let counts = class_histogram(&labels.index_select(0, &nearest), n_modes)?;
    let n = samples.size()[0] as f64;
    Ok(counts.into_iter().map(|c| c as f64 / n).collect())
}

/// For every row of `samples`, the Euclidean distance to its nearest row of `reference` and
/// that row's index (rows flattened; computed in blocks).
pub fn nearest_neighbours(samples: &Tensor, reference: &Tensor) -> Result<(Tensor, Tensor)> {
    check_nonempty(samples, "nearest_neighbours samples")?;
    check_nonempty(reference, "nearest_neighbours reference")?;
    let (a, b) = rows_of_one_dimension(
        samples,
        reference,
        Kind::Float,
        "nearest_neighbours (rows of one dimension)",
    )?;
    let (mut dist, mut idx) = (Vec::new(), Vec::new());
    let n = a.size()[0];
    for start in (0..n).step_by(512) {
        // compute_mode 2: direct differences, exact for copies (the matmul form loses ~1e-3).
        let d = Tensor::cdist(&a.narrow(0, start, 512.min(n - start)), &b, 2.0, Some(2));
        let (v, i) = d.min_dim(1, false);
        dist.push(v);
        idx.push(i);
    }
    Ok((Tensor::cat(&dist, 0), Tensor::cat(&idx, 0)))
}

/// The Fréchet distance between Gaussians fitted to two sets of feature rows `[n, d]`:
/// `‖μ_a − μ_b‖² + tr(C_a + C_b − 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})` (Heusel et al., 2017,
/// FID). The matrix square roots come from symmetric eigendecompositions in double precision.
/// Both sets need at least two rows; with few rows relative to `d` the covariances are noisy
/// and the distance is biased upward, so compare it only with a floor of the same sizes.
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    for (t, what) in [(a, "frechet_distance a"), (b, "frechet_distance b")] {
        if t.dim() != 2 || t.size()[0] < 2 {
            return Err(Error::Shape {
                what: "frechet_distance features (at least two rows)",
                expected: "[n >= 2, d]".into(),
                got: t.size(),
            });
        }
        check_nonempty(t, what)?;
    }
    if a.size()[1] != b.size()[1] {
        return Err(Error::Shape {
            what: "frechet_distance (features of one width)",
            expected: format!("[m, {}]", a.size()[1]),
            got: b.size(),
        });
    }
    let moments = |x: &Tensor| {
        let x = x.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let mu = x.mean_dim(0, false, Kind::Double);
        let centred = &x - &mu;
        let cov = centred.tr().matmul(&centred) / (x.size()[0] - 1) as f64;
        (mu, cov)
    };
    let (mu_a, cov_a) = moments(a);
    let (mu_b, cov_b) = moments(b);
    let sqrt_psd = |m: &Tensor| {
        let (w, v) = m.linalg_eigh("L");
        (&v * w.clamp_min(0.0).sqrt().unsqueeze(0)).matmul(&v.tr())
    };
    let root_a = sqrt_psd(&cov_a);
    let middle = root_a.matmul(&cov_b).matmul(&root_a);
    let middle = (&middle + middle.tr()) * 0.5;
    let trace_sqrt = middle
        .linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    let mean_term = (&mu_a - &mu_b).square().sum(Kind::Double).double_value(&[]);
    let trace = cov_a.trace().double_value(&[]) + cov_b.trace().double_value(&[]);
    Ok(mean_term + trace - 2.0 * trace_sqrt)
}

/// The labels as int64, or an error naming their range when one lies outside `0..classes`.
fn checked_labels(labels: &Tensor, classes: i64) -> Result<Tensor> {
    let labels = labels.to_kind(Kind::Int64);
    let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
    if lo < 0 || hi >= classes {
        return Err(Error::InvalidParameter {
            name: "labels",
            value: format!("{lo}..={hi}"),
            why: "labels must lie in 0..classes (or 0..n_modes)",
        });
    }
    Ok(labels)
}

/// Counts of each class `0..classes` among integer labels.
pub fn class_histogram(labels: &Tensor, classes: i64) -> Result<Vec<usize>> {
    check_nonempty(labels, "class_histogram labels")?;
    let counts = checked_labels(labels, classes)?
        .flatten(0, -1)
        .bincount::<Tensor>(None, classes);
    Ok(to_vec(&counts)?.into_iter().map(|c| c as usize).collect())
}

/// Shannon entropy in nats, `−Σ p_k ln p_k`, of the histogram's frequencies (`ln K` for a
/// uniform histogram of K classes, 0 when every count falls in one class).
pub fn entropy(counts: &[usize]) -> Result<f64> {
    let n: usize = counts.iter().sum();
    if n == 0 {
        return Err(Error::EmptyData("entropy histogram"));
    }
    Ok(counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            p * (1.0 / p).ln()
        })
        .sum())
}

/// Settings of the metrics classifier's training.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifierConfig {
    /// A name for the data it was trained on (`"mnist_5k"`, `"fashion_mnist"`).
    pub dataset: String,
    /// Number of classes.
    pub classes: i64,
    /// Adam training settings.
    pub train: TrainConfig,
}

impl ClassifierConfig {
    /// LeNet-5 on the 4,500 training digits of `mnist_5k` (seeded 90/10 split, seed 0).
    pub fn mnist() -> Self {
        ClassifierConfig {
            dataset: "mnist_5k".into(),
            classes: 10,
            train: TrainConfig {
                epochs: 30,
                batch_size: 64,
                lr: 1e-3,
                seed: Some(11),
                ..Default::default()
            },
        }
    }

    /// LeNet-5 on Fashion-MNIST's 60,000 training images.
    pub fn fashion() -> Self {
        ClassifierConfig {
            dataset: "fashion_mnist".into(),
            classes: 10,
            train: TrainConfig {
                epochs: 4,
                batch_size: 128,
                lr: 1e-3,
                seed: Some(12),
                ..Default::default()
            },
        }
    }
}

/// Where the metrics classifier of a data set is cached: `cache_dir()/classifiers/<dataset>`
/// ([`crate::budget::cache_dir`]; shared by the notebooks and the command line, trained on
/// first use).
pub fn classifier_cache_dir(dataset: &str) -> std::path::PathBuf {
    crate::budget::cache_dir().join("classifiers").join(dataset)
}

/// What a saved classifier's `meta.initial_weights` says when its initial weights were drawn
/// from its seed ([`Classifier::train`]); caches without it drew them from the generator as the
/// process had left it, so the same data gave other classifiers and other distances.
const SEEDED_INITIAL_WEIGHTS: &str = "from the training seed";

/// A LeNet-5 classifier for image metrics, trained by the crate and cached as a checkpoint
/// (`model.safetensors` + `config.json` with its held-out accuracy).
#[derive(Debug)]
pub struct Classifier {
    vs: VarStore,
    net: LeNet,
    config: ClassifierConfig,
    test_accuracy: f64,
}

/// Rows `[n, 785]`: the 784 pixels then the label, so [`training::train`]'s row shuffling keeps
/// images and labels together.
fn packed(set: &ImageSet, device: tch::Device) -> Result<Tensor> {
    let s = set.images.size();
    if s.len() != 4 || s[1..] != [1, 28, 28] || set.labels.size() != [s[0]] {
        return Err(Error::Shape {
            what: "classifier images (with one label each)",
            expected: "[n, 1, 28, 28] and [n]".into(),
            got: s,
        });
    }
    Ok(Tensor::cat(
        &[
            set.images.flatten(1, -1).to_kind(Kind::Float),
            set.labels.to_kind(Kind::Float).unsqueeze(1),
        ],
        1,
    )
    .to_device(device))
}

impl Classifier {
    /// Trains LeNet-5 with Adam and cross-entropy on `train`, and measures its accuracy on
    /// `test` (images `[n, 1, 28, 28]` in [0, 1], labels `0..classes`).
    pub fn train(
        config: &ClassifierConfig,
        train: &ImageSet,
        test: &ImageSet,
        device: tch::Device,
        hook: &mut dyn FnMut(&Event),
    ) -> Result<Classifier> {
        training::seed_initial_weights(&config.train);
        let vs = VarStore::new(device);
        let net = LeNet::new(&vs.root(), config.classes)?;
        let rows = packed(train, device)?;
        let test_rows = packed(test, device)?;
        let loss = |b: &Tensor| -> Result<Tensor> {
            let x = b.narrow(1, 0, 784).view([-1, 1, 28, 28]);
            let y = b.select(1, 784).to_kind(Kind::Int64);
            Ok(net.logits(&x)?.cross_entropy_for_logits(&y))
        };
        training::train(&vs, &rows, Some(&test_rows), &config.train, loss, hook)?;
        let mut classifier = Classifier {
            vs,
            net,
            config: config.clone(),
            test_accuracy: 0.0,
        };
        classifier.test_accuracy = classifier.accuracy(test)?;
        Ok(classifier)
    }

    /// Writes the classifier to `dir` as a checkpoint.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<crate::checkpoint::Saved> {
        crate::checkpoint::save(
            dir,
            &self.vs,
            &self.config,
            serde_json::json!({
                "test_accuracy": self.test_accuracy,
                "initial_weights": SEEDED_INITIAL_WEIGHTS,
            }),
        )
    }

    /// Loads a classifier saved by [`Classifier::save`].
    pub fn load(dir: impl AsRef<Path>, device: tch::Device) -> Result<Classifier> {
        Ok(Classifier::load_with_meta(dir.as_ref(), device)?.0)
    }

    /// [`Classifier::load`], with the saved `meta`.
    fn load_with_meta(dir: &Path, device: tch::Device) -> Result<(Classifier, serde_json::Value)> {
        let (config, meta): (ClassifierConfig, _) = crate::checkpoint::load_config(dir)?;
        let mut vs = VarStore::new(device);
        let net = LeNet::new(&vs.root(), config.classes)?;
        crate::checkpoint::load_weights(dir, &mut vs)?;
        let test_accuracy = meta["test_accuracy"]
            .as_f64()
            .ok_or_else(|| Error::Checkpoint {
                path: dir.join(crate::checkpoint::CONFIG).display().to_string(),
                why: "meta.test_accuracy is missing".into(),
            })?;
        let classifier = Classifier {
            vs,
            net,
            config,
            test_accuracy,
        };
        Ok((classifier, meta))
    }

    /// The cached classifier in `dir` when it was trained with `config` (and its initial weights
    /// drawn from its seed; a cache from before that is trained again); otherwise trains one
    /// (see [`Classifier::train`]) and saves it there.
    pub fn load_or_train(
        dir: impl AsRef<Path>,
        config: &ClassifierConfig,
        train: &ImageSet,
        test: &ImageSet,
        device: tch::Device,
        hook: &mut dyn FnMut(&Event),
    ) -> Result<Classifier> {
        let dir = dir.as_ref();
        if dir.join(crate::checkpoint::CONFIG).exists() {
            let (cached, meta) = Classifier::load_with_meta(dir, device)?;
            if &cached.config == config && meta["initial_weights"] == SEEDED_INITIAL_WEIGHTS {
                return Ok(cached);
            }
        }
        let classifier = Classifier::train(config, train, test, device, hook)?;
        // Written whole into a temporary folder beside it, then renamed into place: a reader
        // (another notebook, the command line) never sees weights and config of two runs.
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        classifier.save(&tmp)?;
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Io { path, source }
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        Ok(classifier)
    }

    /// Its settings.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// Accuracy on the held-out set it was trained with.
    pub fn test_accuracy(&self) -> f64 {
        self.test_accuracy
    }

    fn batched(&self, x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        check_nonempty(x, "classifier input")?;
        let x = x.to_device(self.vs.device()).to_kind(Kind::Float);
        tch::no_grad(|| crate::nets::by_rows("classifier", &x, 1000, |_, chunk| f(chunk)))
    }

    /// LeNet's 84 penultimate features of images `[n, 1, 28, 28]` in [0, 1].
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.batched(x, |b| self.net.features(b))
    }

    /// Class probabilities `[n, classes]` (softmax of the logits).
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        self.batched(x, |b| Ok(self.net.logits(b)?.softmax(-1, Kind::Float)))
    }

    /// Share of `set`'s images labelled correctly.
    pub fn accuracy(&self, set: &ImageSet) -> Result<f64> {
        let predicted = self.probabilities(&set.images)?.argmax(-1, false);
        let labels = set.labels.to_device(predicted.device());
        Ok(predicted
            .eq_tensor(&labels)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]))
    }
}

/// Quality figures for a set of image samples, each beside its floor (the same figure for real
/// held-out images), with the feature extractor and the sample counts that produced them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageQuality {
    /// What computed the features and labels.
    pub feature_extractor: String,
    /// Samples measured.
    pub n_samples: usize,
    /// Held-out images they are compared with.
    pub n_heldout: usize,
    /// Fréchet LeNet distance, samples vs held-out.
    pub fld: f64,
    /// Its floor: `n_samples` training images (all of them when fewer) vs the same held-out
    /// images.
    pub fld_floor: f64,
    /// Samples per predicted class.
    pub class_histogram: Vec<usize>,
    /// Entropy of that histogram, in nats (at most `ln classes`).
    pub class_entropy: f64,
    /// `ln classes`, the entropy of a perfectly balanced histogram.
    pub max_entropy: f64,
    /// The confidence threshold below.
    pub confidence_threshold: f64,
    /// Share of samples whose most likely class has probability ≥ the threshold.
    pub confident_share: f64,
    /// The same share for the held-out images.
    pub confident_share_heldout: f64,
    /// Mean Euclidean distance (pixels in [0, 1]) from a sample to its nearest training image.
    pub nn_distance: f64,
    /// The same for `n_samples` held-out images: samples much closer to the training set than
    /// this are copies of it (memorization).
    pub nn_distance_heldout: f64,
}

impl ImageQuality {
    /// Measures `samples` against the training and held-out images, all `[n, 1, 28, 28]` with
    /// pixels in [0, 1] (samples are clamped to it first).
    pub fn measure(
        classifier: &Classifier,
        samples: &Tensor,
        train: &Tensor,
        heldout: &Tensor,
        confidence_threshold: f64,
    ) -> Result<ImageQuality> {
        if !(confidence_threshold > 0.0 && confidence_threshold <= 1.0) {
            return Err(Error::InvalidParameter {
                name: "confidence_threshold",
                value: confidence_threshold.to_string(),
                why: "must lie in (0, 1]",
            });
        }
        let samples = samples.clamp(0.0, 1.0);
        let n = samples.size()[0];
        if n < 2 {
            return Err(Error::InvalidParameter {
                name: "samples",
                value: n.to_string(),
                why: "image metrics need at least two samples",
            });
        }
        check_nonempty(train, "training images")?;
        check_nonempty(heldout, "held-out images")?;
        // The floor at the samples' own count (the distance's bias falls with the count):
        // capping it at the held-out count, as this once did, flattered every n above that.
        let m = n.min(train.size()[0]);
        let held_feats = classifier.features(heldout)?;
        let fld = frechet_distance(&classifier.features(&samples)?, &held_feats)?;
        let fld_floor =
            frechet_distance(&classifier.features(&train.narrow(0, 0, m))?, &held_feats)?;
        let probs = classifier.probabilities(&samples)?;
        let (top, label) = probs.max_dim(-1, false);
        let confident = |top: &Tensor| -> f64 {
            top.ge(confidence_threshold)
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[])
        };
        let classes = classifier.config.classes;
        let class_histogram = class_histogram(&label, classes)?;
        let held_top = classifier.probabilities(heldout)?.max_dim(-1, false).0;
        let mean = |t: Tensor| t.mean(Kind::Double).double_value(&[]);
        Ok(ImageQuality {
            feature_extractor: format!(
                "LeNet-5 penultimate layer ({} features), trained on {} (held-out accuracy {:.3})",
                LeNet::FEATURES,
                classifier.config.dataset,
                classifier.test_accuracy
            ),
            n_samples: n as usize,
            n_heldout: heldout.size()[0] as usize,
            fld,
            fld_floor,
            class_entropy: entropy(&class_histogram)?,
            class_histogram,
            max_entropy: (classes as f64).ln(),
            confidence_threshold,
            confident_share: confident(&top),
            confident_share_heldout: confident(&held_top),
            nn_distance: mean(nearest_neighbours(&samples, train)?.0),
            nn_distance_heldout: mean(
                nearest_neighbours(&heldout.narrow(0, 0, m.min(heldout.size()[0])), train)?.0,
            ),
        })
    }
}
