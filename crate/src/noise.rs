//! Noise levels σ for noise-conditional score networks (NCSN), and the NCSNv2 techniques for
//! choosing them (Song & Ermon 2020, "Improved techniques for training score-based generative
//! models").
//!
//! # Order (stated once, here)
//!
//! [`Sigmas`] stores the levels in **descending** order, `σ_1 > σ_2 > … > σ_L`, as the NCSN
//! papers write them and as annealed Langevin visits them (largest first). Homework 5 (seed 003)
//! writes them ascending (`σ_1 < … < σ_T`) and sorts them descending in code; [`Sigmas::new`]
//! accepts either order and sorts. Index `i` of a level always refers to this descending order,
//! so index 0 is the largest σ (what an embedding-conditioned network receives).

use crate::device::DeviceCopies;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// A set of noise levels, descending, all finite, positive and distinct (with their copies on
/// the devices [`Sigmas::tensor`] was asked for).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Vec<f64>", into = "Vec<f64>")]
pub struct Sigmas(Vec<f64>, DeviceCopies);

impl std::fmt::Debug for Sigmas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Sigmas").field(&self.0).finish()
    }
}

impl TryFrom<Vec<f64>> for Sigmas {
    type Error = Error;
    fn try_from(v: Vec<f64>) -> Result<Self> {
        Sigmas::new(v)
    }
}

impl From<Sigmas> for Vec<f64> {
    fn from(s: Sigmas) -> Vec<f64> {
        s.0
    }
}

/// The checks a schedule from `sigma_max` down to `sigma_min` over `levels` levels needs: both
/// valid σ's, L >= 1, σ_max > σ_min (or L = 1 and equal levels); `name` names the schedule.
fn check_schedule(name: &'static str, sigma_max: f64, sigma_min: f64, levels: usize) -> Result<()> {
    crate::error::check_sigma(sigma_max)?;
    crate::error::check_sigma(sigma_min)?;
    if levels == 0
        || (levels > 1 && sigma_max <= sigma_min)
        || (levels == 1 && sigma_max != sigma_min)
    {
        return Err(Error::InvalidParameter {
            name,
            value: format!("sigma_max {sigma_max}, sigma_min {sigma_min}, L {levels}"),
            why: "needs L >= 1 and sigma_max > sigma_min (or L = 1 and equal levels)",
        });
    }
    Ok(())
}

impl Sigmas {
    /// Noise levels in any order; sorted descending.
    pub fn new(mut values: Vec<f64>) -> Result<Self> {
        if values.is_empty() {
            return Err(Error::InvalidParameter {
                name: "sigmas",
                value: "[]".into(),
                why: "needs at least one noise level",
            });
        }
        for &s in &values {
            crate::error::check_sigma(s)?;
        }
        values.sort_by(|a, b| b.total_cmp(a));
        if values.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::InvalidParameter {
                name: "sigmas",
                value: format!("{values:?}"),
                why: "noise levels must be distinct",
            });
        }
        Ok(Sigmas(values, DeviceCopies::default()))
    }

    /// `L` levels in geometric progression from `sigma_max` down to `sigma_min`:
    /// `σ_i = σ_max · (σ_min/σ_max)^((i-1)/(L-1))` (`np.geomspace`; the homework's
    /// `σ_min q^i` with `q = (σ_max/σ_min)^(1/(L-1))`, reversed).
    pub fn geometric(sigma_max: f64, sigma_min: f64, levels: usize) -> Result<Self> {
        check_schedule("geometric schedule", sigma_max, sigma_min, levels)?;
        if levels == 1 {
            return Ok(Sigmas(vec![sigma_max], DeviceCopies::default()));
        }
        let ratio = (sigma_min / sigma_max).ln() / (levels - 1) as f64;
        Self::new(
            (0..levels)
                .map(|i| sigma_max * (ratio * i as f64).exp())
                .collect(),
        )
    }

    /// EDM's schedule (Karras et al. 2022, eq. 5): `L` levels from `sigma_max` down to
    /// `sigma_min`, evenly spaced in `σ^(1/ρ)`,
    /// `σ_i = (σ_max^(1/ρ) + (i-1)/(L-1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ`; ρ = 7 there. Large ρ
    /// crowds the levels near σ_min; ρ → ∞ is the geometric schedule.
    pub fn karras(sigma_max: f64, sigma_min: f64, levels: usize, rho: f64) -> Result<Self> {
        crate::error::check_positive("rho", rho)?;
        check_schedule("karras schedule", sigma_max, sigma_min, levels)?;
        if levels == 1 {
            return Ok(Sigmas(vec![sigma_max], DeviceCopies::default()));
        }
        let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
        let mut values: Vec<f64> = (0..levels)
            .map(|i| (a + i as f64 / (levels - 1) as f64 * (b - a)).powf(rho))
            .collect();
        // The ends exactly as given (powf round trips lose the last bits).
        values[0] = sigma_max;
        values[levels - 1] = sigma_min;
        Self::new(values)
    }

    /// NCSN's setting (seed 004): 10 levels from 1 to 0.01.
    pub fn ncsn() -> Self {
        Self::geometric(1.0, 0.01, 10).expect("valid schedule")
    }

    /// Number of levels L.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false (a schedule has at least one level); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The levels, descending.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    /// The largest level σ_1.
    pub fn max(&self) -> f64 {
        self.0[0]
    }

    /// The smallest level σ_L.
    pub fn min(&self) -> f64 {
        self.0[self.0.len() - 1]
    }

    /// The levels as a `[L]` float tensor, descending, on `device`: copied there once, then
    /// shared (do not modify it in place).
    pub fn tensor(&self, device: Device) -> Tensor {
        self.1
            .get(device, || Tensor::from_slice(&self.0).to_kind(Kind::Float))
    }

    /// Index (in the descending order) of the level nearest to each σ of `sigma` (`[n]`),
    /// nearest in log σ: `[n]` int64. How an index-conditioned network reads a noise level.
    ///
    /// Every σ must be finite and > 0 ([`Error::InvalidSigma`] names the first that is not): a
    /// σ of 0 is nearest to no level (its log is -∞), and used to become index 0, the largest.
    pub fn index_of(&self, sigma: &Tensor) -> Result<Tensor> {
        crate::error::check_sigma_tensor(sigma)?;
        let levels = self.tensor(sigma.device()).log();
        Ok(
            (sigma.to_kind(Kind::Float).log().unsqueeze(1) - levels.unsqueeze(0))
                .abs()
                .argmin(1, false),
        )
    }

    /// Draws one level index per row, uniformly: `[n]` int64.
    pub fn sample_indices(&self, n: i64, device: Device) -> Tensor {
        Tensor::randint(self.0.len() as i64, [n], (Kind::Int64, device))
    }
}

/// The standard normal CDF, `Φ(x) = ½(1 + erf(x/√2))` (technique 2's overlap criterion).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// NCSNv2 technique 1: the largest noise level should be as large as the largest pairwise
/// Euclidean distance in the training data, `σ_1 = max_{i,j} ‖x_i - x_j‖`. Rows of `data` are
/// flattened; the distances are computed in blocks (memory `O(block · n)`).
pub fn technique1_sigma_max(data: &Tensor) -> Result<f64> {
    crate::error::check_nonempty(data, "technique 1 data")?;
    let x = data.flatten(1, -1).to_kind(Kind::Double);
    let n = x.size()[0];
    if n < 2 {
        return Err(Error::InvalidParameter {
            name: "data rows",
            value: n.to_string(),
            why: "technique 1 needs at least two points",
        });
    }
    let block = 1024;
    let mut best = 0.0f64;
    for start in (0..n).step_by(block) {
        let len = (block as i64).min(n - start);
        let d = Tensor::cdist(&x.narrow(0, start, len), &x, 2.0, None::<i64>);
        best = best.max(d.max().double_value(&[]));
    }
    Ok(best)
}

/// NCSNv2 technique 2: the ratio γ = σ_{i-1}/σ_i of a geometric schedule for data of
/// dimension `D`, solving `Φ(√(2D)(γ - 1) + 3γ) - Φ(√(2D)(γ - 1) - 3γ) = 1/2` (bisection).
/// For D = 784 (MNIST) γ ≈ 1.08.
pub fn technique2_gamma(dim: usize) -> Result<f64> {
    if dim == 0 {
        return Err(Error::InvalidParameter {
            name: "D",
            value: "0".into(),
            why: "the data dimension must be > 0",
        });
    }
    let d = (2.0 * dim as f64).sqrt();
    // For √(2D) ≤ 3 (D ≤ 4) the second argument falls as γ grows, so the overlap only grows
    // and never reaches 1/2: the criterion has no solution in so few dimensions (the shells of
    // radius ≈ σ√D overlap at any ratio). Refused, rather than searched for ever.
    if d <= 3.0 {
        return Err(Error::InvalidParameter {
            name: "technique 2 dimension D",
            value: dim.to_string(),
            why: "the overlap criterion has no solution for D <= 4: choose the number of \
                  levels another way (for 2D data, Experiment::fit_2d does)",
        });
    }
    let f =
        |g: f64| normal_cdf(d * (g - 1.0) + 3.0 * g) - normal_cdf(d * (g - 1.0) - 3.0 * g) - 0.5;
    // f(1) = Φ(3) - Φ(-3) - 1/2 > 0 and, for √(2D) > 3, f decreases to -1/2; bracket and
    // bisect.
    let (mut lo, mut hi) = (1.0, 2.0);
    while f(hi) > 0.0 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if f(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(0.5 * (lo + hi))
}

/// The number of levels of technique 2: `L = 1 + log(σ_1/σ_L) / log γ`, rounded up.
pub fn technique2_levels(sigma_max: f64, sigma_min: f64, gamma: f64) -> Result<usize> {
    crate::error::check_sigma(sigma_max)?;
    crate::error::check_sigma(sigma_min)?;
    if !(gamma.is_finite() && gamma > 1.0) || sigma_max < sigma_min {
        return Err(Error::InvalidParameter {
            name: "technique 2",
            value: format!("gamma {gamma}, sigma_max {sigma_max}, sigma_min {sigma_min}"),
            why: "needs gamma > 1 and sigma_max >= sigma_min",
        });
    }
    Ok(1 + ((sigma_max / sigma_min).ln() / gamma.ln()).ceil() as usize)
}

/// NCSNv2 technique 4: the step size ε for `t` Langevin steps per level with ratio γ and
/// smallest level `s = σ_L`, making
/// `(1 - ε/s²)^(2T) (γ² - 2ε/(s² - s²(1 - ε/s²)²)) + 2ε/(s² - s²(1 - ε/s²)²)`
/// as close to 1 as it gets (its minimum over `0 < ε < s²`; it stays above 1), found by a
/// log-spaced scan refined by golden-section search.
///
/// The expression is the variance ratio of the chain `x + α s + √(2α) z`
/// ([`crate::langevin::StepConvention::Full`], the NCSNv2 reference code's form) at the last
/// level; the ε returned is for the annealed sampler's default,
/// [`crate::langevin::AnnealedConfig::default`] (NCSN Algorithm 1: `α_i = ε σ_i²/σ_L²`,
/// `x + α_i/2 s + √α_i z`, [`crate::langevin::StepConvention::Half`]), which runs the same chain
/// with twice the step: ε = 2α. So `AnnealedConfig { eps: technique4_step_size(..)?, ..Default::default() }`
/// is the chain technique 4 describes (tested by simulation). Worked values, in the Full
/// convention of the NCSNv2 paper and code (half of what this returns): D = 784, σ_L = 0.01,
/// T = 5 gives α ≈ 1.1·10⁻⁵; CIFAR-10's L = 232 levels from 50 to 0.01 at T = 5 give
/// α ≈ 6.2·10⁻⁶.
pub fn technique4_step_size(gamma: f64, sigma_min: f64, steps_per_level: usize) -> Result<f64> {
    let s2 = crate::error::check_sigma(sigma_min)?.powi(2);
    if !(gamma.is_finite() && gamma > 1.0) || steps_per_level == 0 {
        return Err(Error::InvalidParameter {
            name: "technique 4",
            value: format!("gamma {gamma}, T {steps_per_level}"),
            why: "needs gamma > 1 and T >= 1",
        });
    }
    let t = steps_per_level as f64;
    let f = |eps: f64| {
        let a = 1.0 - eps / s2;
        let c = 2.0 * eps / (s2 - s2 * a * a);
        a.powf(2.0 * t) * (gamma * gamma - c) + c
    };
    // Scan ln ε over (s²·1e-8, s²) for the minimum, then refine between its neighbours.
    let (lo, hi) = ((s2 * 1e-8).ln(), (s2 * (1.0 - 1e-9)).ln());
    let n = 4000;
    let grid: Vec<f64> = (0..=n)
        .map(|k| lo + (hi - lo) * k as f64 / n as f64)
        .collect();
    let k = (0..=n)
        .min_by(|&i, &j| f(grid[i].exp()).total_cmp(&f(grid[j].exp())))
        .expect("non-empty grid");
    let (mut a, mut b) = (grid[k.saturating_sub(1)], grid[(k + 1).min(n)]);
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..100 {
        let (c, d) = (b - golden * (b - a), a + golden * (b - a));
        if f(c.exp()) < f(d.exp()) {
            b = d;
        } else {
            a = c;
        }
    }
    // α in the Full convention; the default (Half) convention takes ε = 2α for the same chain.
    Ok(2.0 * (0.5 * (a + b)).exp())
}
