//! Data: toy 2D distributions with exact log-density, score and sampler (the donut of seed 001,
//! Gaussian mixtures), the two-moons data set of homework 5 (seed 003), splits and array interop.
//!
//! Every tensor of points is `[n, d]`, one point per row, `Kind::Float`.

use crate::device::DeviceCopies;
use crate::error::{check_nonempty, check_sigma, Error, Result};
use crate::score::Score;
use std::f64::consts::PI;
use tch::{Device, IndexOp, Kind, Tensor};

/// A density known in closed form (up to a constant) with an exact sampler.
pub trait Density: Score {
    /// `log p(x)` per row, `[n, d] -> [n]`, possibly unnormalised.
    fn log_density(&self, x: &Tensor) -> Tensor;
    /// `n` exact, independent samples, `[n, d]`.
    fn sample(&self, n: i64, device: Device) -> Result<Tensor>;
}

/// Seeds libtorch's global random number generators, the CPU's and every GPU's (every sampler
/// and data set in this crate draws from them). Loads the CUDA backend first
/// ([`crate::device::prepare`]): seeding before that would hide the GPU from the whole process.
pub fn seed(seed: u64) {
    crate::device::prepare();
    tch::manual_seed(seed as i64);
}

#[cfg(test)]
mod tests {
    /// The library's unit-test binary runs this test alone in its process, so nothing loaded the
    /// backend before: seeding must (unless the CPU is forced), or a GPU run that seeds before
    /// choosing its device would compute on the CPU.
    #[test]
    fn seeding_loads_the_cuda_backend_first() {
        assert!(crate::device::cuda_backend().is_none());
        super::seed(1);
        let forced_cpu = std::env::var("SGM_DEVICE").is_ok_and(|v| v.eq_ignore_ascii_case("cpu"));
        assert_eq!(crate::device::cuda_backend().is_some(), !forced_cpu);
    }
}

/// The donut of seed 001: `log p(x) = -(‖x‖ - r₀)² / c` with `r₀ = 2.6`, `c = 0.033`.
///
/// Score: `∇ₓ log p(x) = -2 (‖x‖ - r₀) / c · x / ‖x‖`.
/// In polar coordinates the angle is uniform and the radius has density
/// `p(r) ∝ r · exp(-(r - r₀)² / c)` on `r > 0` (the factor `r` is the Jacobian), which
/// [`Donut::sample`] draws from exactly.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Donut {
    /// Radius of the ridge, r₀.
    pub radius: f64,
    /// Width constant c in `-(r - r₀)²/c`; the ridge's Gaussian standard deviation is `√(c/2)`.
    pub width: f64,
}

impl Default for Donut {
    /// Seed 001's donut: r₀ = 2.6, c = 0.033.
    fn default() -> Self {
        Donut {
            radius: 2.6,
            width: 0.033,
        }
    }
}

impl Donut {
    /// Standard deviation of the Gaussian factor of the radial law, `√(c/2)`.
    pub fn ridge_std(&self) -> f64 {
        (self.width / 2.0).sqrt()
    }

    /// Draws `n` radii from `p(r) ∝ r · N(r; r₀, s²)`, `r > 0`, exactly, by rejection from the
    /// envelope `(r₀ + s|z|) φ(z)`, `r = r₀ + s z`: a mixture of a standard normal (weight ∝ r₀)
    /// and a signed Rayleigh variable (weight ∝ s √(2/π)), accepted with probability
    /// `(r₀ + s z) / (r₀ + s|z|)` (which rejects `r ≤ 0`).
    pub fn sample_radius(&self, n: i64, device: Device) -> Tensor {
        let (r0, s) = (self.radius, self.ridge_std());
        let opts = (Kind::Double, device);
        let p_normal = r0 / (r0 + s * (2.0 / PI).sqrt());
        let mut accepted: Vec<Tensor> = Vec::new();
        let mut have = 0i64;
        while have < n {
            let m = (n - have) * 2 + 64;
            let normal = Tensor::randn([m], opts);
            let rayleigh = (Tensor::rand([m], opts).log() * -2.0).sqrt();
            let sign = Tensor::rand([m], opts).lt(0.5).to_kind(Kind::Double) * 2.0 - 1.0;
            let pick_normal = Tensor::rand([m], opts).lt(p_normal);
            let z = normal.where_self(&pick_normal, &(rayleigh * sign));
            let accept_p = (z.abs() * s + r0).reciprocal() * (&z * s + r0);
            let keep = Tensor::rand([m], opts).lt_tensor(&accept_p);
            let r = (z * s + r0).masked_select(&keep);
            have += r.size()[0];
            accepted.push(r);
        }
        Tensor::cat(&accepted, 0)
            .narrow(0, 0, n)
            .to_kind(Kind::Float)
    }
}

impl Score for Donut {
    /// The exact score of the donut (σ is ignored).
    fn forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Tensor {
        let r = x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
        (&r - self.radius) * (-2.0 / self.width) * x / r
    }
}

impl Density for Donut {
    fn log_density(&self, x: &Tensor) -> Tensor {
        let r = x.norm_scalaropt_dim(2, [-1], false);
        -(r - self.radius).square() / self.width
    }

    fn sample(&self, n: i64, device: Device) -> Result<Tensor> {
        positive_count(n)?;
        let r = self.sample_radius(n, device);
        let theta = Tensor::rand([n], (Kind::Float, device)) * (2.0 * PI);
        Ok(Tensor::stack(&[&r * theta.cos(), &r * theta.sin()], 1))
    }
}

fn positive_count(n: i64) -> Result<()> {
    if n > 0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name: "n",
            value: n.to_string(),
            why: "the number of samples must be > 0",
        })
    }
}

/// A mixture of isotropic Gaussians `p(x) = Σₖ wₖ N(x; μₖ, sₖ² I)`.
///
/// Smoothed by Gaussian noise of scale σ it stays a mixture, with variances `sₖ² + σ²`, so its
/// σ-smoothed score `∇ₓ log p_σ(x) = Σₖ rₖ(x) · (μₖ - x) / (sₖ² + σ²)` (rₖ the posterior
/// responsibilities) is exact for every σ: [`Score`] for this type uses the σ of each row
/// (σ = 0 gives the score of `p` itself).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "MixtureParameters", into = "MixtureParameters")]
pub struct GaussianMixture {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    stds: Vec<f64>,
    /// `[K, d + 2]`: the means, then the standard deviations and the weights, per device.
    table: DeviceCopies,
}

/// A [`GaussianMixture`]'s parameters as saved (a loaded one is checked by
/// [`GaussianMixture::new`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct MixtureParameters {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    stds: Vec<f64>,
}

impl TryFrom<MixtureParameters> for GaussianMixture {
    type Error = Error;
    fn try_from(p: MixtureParameters) -> Result<Self> {
        GaussianMixture::new(p.weights, p.means, p.stds)
    }
}

impl From<GaussianMixture> for MixtureParameters {
    fn from(m: GaussianMixture) -> Self {
        MixtureParameters {
            weights: m.weights,
            means: m.means,
            stds: m.stds,
        }
    }
}

impl GaussianMixture {
    /// Builds a mixture, checking the parameters; the weights are normalised to sum to 1.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, stds: Vec<f64>) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.len() != k || stds.len() != k {
            return Err(Error::InvalidParameter {
                name: "mixture",
                value: format!("{} weights, {} means, {} stds", k, means.len(), stds.len()),
                why: "needs at least one component and as many means and stds as weights",
            });
        }
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            return Err(Error::InvalidParameter {
                name: "weight",
                value: w.to_string(),
                why: "mixture weights must be finite and > 0",
            });
        }
        if let Some(s) = stds.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidParameter {
                name: "std",
                value: s.to_string(),
                why: "component standard deviations must be finite and > 0",
            });
        }
        let d = means[0].len();
        if d == 0 || means.iter().any(|m| m.len() != d) {
            return Err(Error::InvalidParameter {
                name: "means",
                value: format!("{:?}", means.iter().map(Vec::len).collect::<Vec<_>>()),
                why: "all means must have the same, non-zero dimension",
            });
        }
        let total: f64 = weights.iter().sum();
        Ok(GaussianMixture {
            weights: weights.iter().map(|w| w / total).collect(),
            means,
            stds,
            table: DeviceCopies::default(),
        })
    }

    /// Mixture weights, positive, summing to 1.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Component means, all of the same dimension.
    pub fn means(&self) -> &[Vec<f64>] {
        &self.means
    }

    /// Component standard deviations, positive.
    pub fn stds(&self) -> &[f64] {
        &self.stds
    }

    /// Dimension of the space.
    pub fn dim(&self) -> i64 {
        self.means[0].len() as i64
    }

    /// The parameters on `device` (copied there once): means `[K, d]`, stds `[K]`, weights `[K]`.
    fn tables(&self, device: Device) -> (Tensor, Tensor, Tensor) {
        let d = self.dim();
        let table = self.table.get(device, || {
            let rows: Vec<f64> = (0..self.weights.len())
                .flat_map(|k| {
                    let tail = [self.stds[k], self.weights[k]];
                    self.means[k].iter().copied().chain(tail)
                })
                .collect();
            Tensor::from_slice(&rows)
                .view([self.weights.len() as i64, d + 2])
                .to_kind(Kind::Float)
        });
        (
            table.narrow(1, 0, d),
            table.select(1, d),
            table.select(1, d + 1),
        )
    }

    /// Per-row component log-joint `log wₖ + log N(x; μₖ, (sₖ² + σ²) I)`, `[n, K]`, and the
    /// differences `x - μₖ`, `[n, K, d]`, with the variances `[n, K]`.
    fn components(&self, x: &Tensor, sigma: Option<&Tensor>) -> (Tensor, Tensor, Tensor) {
        let device = x.device();
        let d = self.dim() as f64;
        let (means, stds, weights) = self.tables(device);
        let diff = x.unsqueeze(1) - means.unsqueeze(0);
        let component_var = stds.square().unsqueeze(0);
        let var = match sigma {
            Some(sigma) => component_var + sigma.to_kind(Kind::Float).square().unsqueeze(1),
            None => component_var,
        };
        let sq = diff
            .square()
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
        let log_joint =
            weights.log().unsqueeze(0) - (&var * (2.0 * PI)).log() * (d / 2.0) - sq / (&var * 2.0);
        (log_joint, diff, var)
    }

    /// The exact σ-smoothed log-density `log p_σ(x)`, `[n]`.
    pub fn log_density_smoothed(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        let (log_joint, _, _) = self.components(x, Some(sigma));
        log_joint.logsumexp([1], false)
    }

    /// Posterior responsibilities `rₖ(x)` of the σ-smoothed mixture, `[n, K]`.
    pub fn responsibilities(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        let (log_joint, _, _) = self.components(x, Some(sigma));
        log_joint.softmax(1, Kind::Float)
    }

    /// Index of the nearest mean for each row, `[n]` (int64): how samples are assigned to modes.
    pub fn nearest_mode(&self, x: &Tensor) -> Tensor {
        let diff = x.unsqueeze(1) - self.tables(x.device()).0.unsqueeze(0);
        diff.square()
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
            .argmin(1, false)
    }
}

impl Score for GaussianMixture {
    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        let (log_joint, diff, var) = self.components(x, Some(sigma));
        let r = log_joint.softmax(1, Kind::Float);
        -((r / var).unsqueeze(-1) * diff).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
    }
}

impl Density for GaussianMixture {
    fn log_density(&self, x: &Tensor) -> Tensor {
        let (log_joint, _, _) = self.components(x, None);
        log_joint.logsumexp([1], false)
    }

    fn sample(&self, n: i64, device: Device) -> Result<Tensor> {
        positive_count(n)?;
        let (means, stds, weights) = self.tables(device);
        let k = weights.multinomial(n, true);
        let means = means.index_select(0, &k);
        let stds = stds.index_select(0, &k).unsqueeze(1);
        Ok(means + stds * Tensor::randn([n, self.dim()], (Kind::Float, device)))
    }
}

/// Two interleaving half circles, as scikit-learn's `make_moons(n, noise=noise, shuffle=True)`:
/// `n/2` points on the upper moon `(cos t, sin t)` (label 0) and the rest on the lower moon
/// `(1 - cos t, 1/2 - sin t)` (label 1), `t` evenly spaced in `[0, π]`, shuffled, plus
/// Gaussian noise of standard deviation `noise`. Seeded by `seed`.
///
/// Returns `(points [n, 2], labels [n] int64)`.
pub fn two_moons(n: i64, noise: f64, seed_value: u64) -> Result<(Tensor, Tensor)> {
    if n < 2 {
        return Err(Error::InvalidParameter {
            name: "n",
            value: n.to_string(),
            why: "two moons need at least 2 points",
        });
    }
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(Error::InvalidParameter {
            name: "noise",
            value: noise.to_string(),
            why: "the noise standard deviation must be finite and >= 0",
        });
    }
    seed(seed_value);
    let opts = (Kind::Float, Device::Cpu);
    let (n_out, n_in) = (n / 2, n - n / 2);
    let t_out = Tensor::linspace(0.0, PI, n_out, opts);
    let t_in = Tensor::linspace(0.0, PI, n_in, opts);
    let outer = Tensor::stack(&[t_out.cos(), t_out.sin()], 1);
    let inner = Tensor::stack(&[-t_in.cos() + 1.0, -t_in.sin() + 0.5], 1);
    let points = Tensor::cat(&[outer, inner], 0);
    let labels = Tensor::cat(
        &[
            Tensor::zeros([n_out], (Kind::Int64, Device::Cpu)),
            Tensor::ones([n_in], (Kind::Int64, Device::Cpu)),
        ],
        0,
    );
    let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
    let points = points.index_select(0, &perm) + Tensor::randn([n, 2], opts) * noise;
    Ok((points, labels.index_select(0, &perm)))
}

/// Splits rows into the first `train_fraction` (train) and the rest (test), as the homework does
/// with `data[:split], data[split:]` on already shuffled data.
pub fn train_test_split(x: &Tensor, train_fraction: f64) -> Result<(Tensor, Tensor)> {
    check_nonempty(x, "train_test_split")?;
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return Err(Error::InvalidParameter {
            name: "train_fraction",
            value: train_fraction.to_string(),
            why: "must lie strictly between 0 and 1",
        });
    }
    let n = x.size()[0];
    let split = ((n as f64) * train_fraction) as i64;
    if split == 0 || split == n {
        return Err(Error::InvalidParameter {
            name: "train_fraction",
            value: train_fraction.to_string(),
            why: "leaves the train or the test set empty for this many rows",
        });
    }
    Ok((x.i(0..split), x.i(split..n)))
}

/// Adds Gaussian noise of scale σ to every row: `x̃ = x + σ z`, `z ~ N(0, I)`.
pub fn perturb(x: &Tensor, sigma: f64) -> Result<Tensor> {
    check_sigma(sigma)?;
    Ok(x + x.randn_like() * sigma)
}

/// A `[n, d]` tensor as an `ndarray` matrix (copied to the CPU as `f32`).
pub fn to_array2(x: &Tensor) -> Result<ndarray::Array2<f32>> {
    if x.dim() != 2 {
        return Err(Error::Shape {
            what: "to_array2",
            expected: "[n, d]".into(),
            got: x.size(),
        });
    }
    let x = x.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let arr: ndarray::ArrayD<f32> = (&x).try_into()?;
    arr.into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| Error::Shape {
            what: "to_array2",
            expected: "[n, d]".into(),
            got: x.size(),
        })
}

/// An `ndarray` matrix as a `[n, d]` `Kind::Float` tensor on the CPU.
pub fn from_array2(a: &ndarray::Array2<f32>) -> Result<Tensor> {
    let (n, d) = a.dim();
    let flat: Vec<f32> = a.iter().copied().collect();
    Ok(Tensor::from_slice(&flat).view([n as i64, d as i64]))
}
