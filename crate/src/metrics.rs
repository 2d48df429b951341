//! Sample statistics used to compare samples with an exact law or with held-out data.

use crate::error::{check_nonempty, Result};
use crate::plots::to_vec;
use tch::Tensor;

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
    let a = a.flatten(1, -1).to_kind(tch::Kind::Double);
    let b = b.flatten(1, -1).to_kind(tch::Kind::Double);
    if a.size()[1] != b.size()[1] {
        return Err(crate::error::Error::Shape {
            what: "energy_distance (samples of one dimension)",
            expected: format!("[m, {}]", a.size()[1]),
            got: b.size(),
        });
    }
    let mean_dist = |x: &Tensor, y: &Tensor| -> f64 {
        let n = x.size()[0];
        let mut total = 0.0;
        for start in (0..n).step_by(1024) {
            let len = 1024.min(n - start);
            total += Tensor::cdist(&x.narrow(0, start, len), y, 2.0, None::<i64>)
                .sum(tch::Kind::Double)
                .double_value(&[]);
        }
        total / (n * y.size()[0]) as f64
    };
    Ok(2.0 * mean_dist(&a, &b) - mean_dist(&a, &a) - mean_dist(&b, &b))
}
