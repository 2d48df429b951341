//! Implicit and sliced score matching against the identities that define them (seed 003,
//! Task 1): integration by parts, and the expectation over random projections.

use sgm::losses::{implicit_score_matching, sliced_score_matching};
use sgm::prelude::*;
use sgm_tests::{from_slice, rng_lock, test_device};

fn f(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// A smooth, non-linear, non-conservative model s(x) = tanh(x A + b) + 0.3 x.
fn model(x: &Tensor, _sigma: &Tensor) -> Tensor {
    let a = from_slice(&[0.8f32, -1.3, 0.5, 1.1]).view([2, 2]);
    let b = from_slice(&[0.2f32, -0.4]);
    (x.matmul(&a) + b).tanh() + x * 0.3
}

/// Mean and standard error of the rows of `v`.
fn mean_se(v: &Tensor) -> (f64, f64) {
    let v = v.to_kind(Kind::Double);
    (
        f(&v.mean(Kind::Double)),
        f(&v.std(true)) / (v.size()[0] as f64).sqrt(),
    )
}

#[test]
fn implicit_score_matching_is_the_explicit_objective_up_to_its_constant() {
    let _rng = rng_lock();
    // Data N(μ, v I): ∇ log p = −(x − μ)/v. Per point, ISM − (½‖s − ∇log p‖² − ½‖∇log p‖²)
    // = tr ∇s + s·∇log p, whose mean is 0 by integration by parts; a trace off by a factor
    // or a sign leaves a mean of order one.
    let (mu, v) = (from_slice(&[0.5f32, -1.0]), 0.6f64);
    data::seed(21);
    let n = 200_000;
    let x = Tensor::randn([n, 2], (Kind::Float, test_device())) * v.sqrt() + &mu;
    let ism = implicit_score_matching(&model, &x, 0.0).unwrap();
    assert_eq!(ism.size(), vec![n]);
    let s = model(&x, &Tensor::zeros([n], (Kind::Float, test_device())));
    let grad_log_p = -(&x - &mu) / v;
    let explicit =
        ((&s - &grad_log_p).square() - grad_log_p.square()).sum_dim_intlist(1, false, Kind::Float)
            * 0.5;
    let (m, se) = mean_se(&(ism.detach() - explicit));
    assert!(m.abs() < 5.0 * se, "ISM − explicit + constant: {m} ± {se}");
    // The constant itself: ½ E‖∇log p‖² = d/(2v).
    let (c, c_se) = mean_se(&(grad_log_p.square().sum_dim_intlist(1, false, Kind::Float) * 0.5));
    assert!((c - 1.0 / v).abs() < 5.0 * c_se, "{c} vs {}", 1.0 / v);
}

#[test]
fn sliced_score_matching_has_the_implicit_objective_as_its_mean() {
    let _rng = rng_lock();
    data::seed(22);
    let n = 200_000;
    let x = Tensor::randn([n, 2], (Kind::Float, test_device()));
    let ism = implicit_score_matching(&model, &x, 0.0).unwrap().detach();
    let ssm = sliced_score_matching(&model, &x, 0.0).unwrap();
    let (m, se) = mean_se(&(ssm.detach() - &ism));
    assert!(m.abs() < 5.0 * se, "SSM − ISM: {m} ± {se}");
    assert!(se > 0.0, "a projection that is not random");
}

#[test]
fn both_objectives_train_a_network() {
    let _rng = rng_lock();
    // The trace and the projection stay in the graph: a network's parameters get gradients.
    data::seed(23);
    let x = Tensor::randn([256, 2], (Kind::Float, test_device()));
    for sliced in [false, true] {
        let vs = nn::VarStore::new(test_device());
        let net = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
        let loss = if sliced {
            sliced_score_matching(&net, &x, 0.0)
        } else {
            implicit_score_matching(&net, &x, 0.0)
        }
        .unwrap()
        .mean(Kind::Float);
        loss.backward();
        let norm: f64 = vs
            .trainable_variables()
            .iter()
            .map(|v| f(&v.grad().square().sum(Kind::Double)))
            .sum();
        assert!(
            norm.is_finite() && norm > 0.0,
            "sliced {sliced}: gradient norm² {norm}"
        );
    }
}
