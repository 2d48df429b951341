//! Log-likelihood of data under a score model through the probability-flow ODE (Song et al.
//! 2021, "Score-based generative modeling through SDEs", appendix D.2; Chen et al. 2018 for the
//! instantaneous change of variables).
//!
//! Along a solution of `dx/dt = v(x, t)` the log-density changes as `d log p_t(x(t))/dt =
//! −∇·v`. For the VE probability flow in `t = ln σ`, `v = −σ² s(x, σ)`, so from σ_min up to
//! σ_max
//!
//! `log p_σmin(x) = log p_σmax(x(σ_max)) − ∫_{ln σ_min}^{ln σ_max} σ² ∇ₓ·s(x(t), σ) dt`,
//!
//! with the prior `p_σmax ≈ N(0, σ_max² I)` (the data's own spread is small against σ_max).
//! [`log_likelihood`] integrates `x` and the integral together with the adaptive
//! Dormand–Prince solver of [`crate::samplers`]. The divergence is exact (one backward pass per
//! dimension, for 2D data) or the Skilling–Hutchinson estimate `εᵀ (∂s/∂x) ε` with one
//! Rademacher `ε` per sample drawn once for the whole trajectory, which is unbiased.
//!
//! Units: nats per point; for images, bits per dimension with uniform dequantisation
//! ([`bits_per_dim`]).

use crate::error::{check_nonempty, check_sigma_range, Error, Result};
use crate::samplers::{dormand_prince, Tolerances};
use crate::score::{jacobian_trace, vjp, Score};
use std::f64::consts::{LN_2, PI};
use tch::{Kind, Tensor};

/// How the divergence `∇ₓ·s` is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Divergence {
    /// Exactly: one backward pass per dimension (2D data).
    Exact,
    /// Skilling–Hutchinson: `εᵀ (∂s/∂x) ε`, ε Rademacher, one backward pass.
    Hutchinson,
}

/// Settings of [`log_likelihood`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LikelihoodConfig {
    /// Where the data end (the smallest noise level the model knows).
    pub sigma_min: f64,
    /// Where the prior `N(0, σ_max² I)` is taken.
    pub sigma_max: f64,
    pub divergence: Divergence,
    pub tolerances: Tolerances,
    /// Seed for the Hutchinson probes.
    pub seed: Option<u64>,
}

impl LikelihoodConfig {
    /// Between `sigma_min` and `sigma_max`, exact divergence, `score_sde`'s tolerances.
    pub fn new(sigma_min: f64, sigma_max: f64) -> Self {
        LikelihoodConfig {
            sigma_min,
            sigma_max,
            divergence: Divergence::Exact,
            tolerances: Tolerances::default(),
            seed: Some(0),
        }
    }
}

/// What [`log_likelihood`] returns, per point (`[n]` tensors).
#[derive(Debug)]
pub struct Likelihood {
    /// `log p_σmin(x)` in nats with the Gaussian prior.
    pub log_p: Tensor,
    /// The points carried to σ_max by the ODE.
    pub x_end: Tensor,
    /// `log p_σmin(x) − log p_σmax(x_end)`: add another prior's log-density at `x_end`.
    pub delta: Tensor,
    /// Score evaluations (each with its divergence).
    pub nfe: usize,
}

/// `log N(x; 0, σ² I)` per row.
pub fn gaussian_log_density(x: &Tensor, sigma: f64) -> Tensor {
    let d = x.size()[1..].iter().product::<i64>() as f64;
    let sq = x
        .flatten(1, -1)
        .to_kind(Kind::Double)
        .square()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    -sq / (2.0 * sigma * sigma) - d / 2.0 * (2.0 * PI * sigma * sigma).ln()
}

/// `∇ₓ·s(x, σ)` per row, exactly or by Hutchinson's estimate with `probe`.
fn divergence(
    model: &dyn Score,
    x: &Tensor,
    sigma: f64,
    how: Divergence,
    probe: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let x = x.detach().set_requires_grad(true);
    let s = model.score_at(&x, sigma)?;
    let div = match how {
        Divergence::Exact => jacobian_trace(&s, &x, false)?,
        Divergence::Hutchinson => (vjp(&s, &x, probe, false)? * probe)
            .flatten(1, -1)
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float),
    };
    Ok((s.detach(), div.detach()))
}

/// The log-likelihood of the points `x` (`[n, …]`) under the score `model`, through the
/// probability-flow ODE from `sigma_min` to `sigma_max` (see the [module docs](self)).
///
/// Errors: σ's not finite or > 0 or `sigma_min ≥ sigma_max`, an empty `x`, a model that only
/// knows a table of levels ([`Error::UntrainedLevel`]: the solver visits σ's between them).
pub fn log_likelihood(model: &dyn Score, x: &Tensor, cfg: &LikelihoodConfig) -> Result<Likelihood> {
    check_nonempty(x, "likelihood points")?;
    check_sigma_range(cfg.sigma_min, cfg.sigma_max)?;
    if let Some(levels) = model.trained_levels() {
        return Err(Error::UntrainedLevel {
            sampler: "likelihood (probability-flow ODE)".into(),
            sigma: (cfg.sigma_min * cfg.sigma_max).sqrt(),
            levels: levels.len(),
        });
    }
    if let Some(seed) = cfg.seed {
        crate::data::seed(seed);
    }
    let x = x.detach().to_kind(Kind::Float);
    let probe = x.rand_like().ge(0.5).to_kind(Kind::Float) * 2.0 - 1.0;
    let n = x.size()[0];
    let delta0 = Tensor::zeros([n], (Kind::Float, x.device()));
    let mut f = |t: f64, y: &[Tensor]| -> Result<Vec<Tensor>> {
        let sigma = t.exp();
        let (s, div) = divergence(model, &y[0], sigma, cfg.divergence, &probe)?;
        let sigma2 = sigma * sigma;
        Ok(vec![s * (-sigma2), div * sigma2])
    };
    let (y, nfe) = dormand_prince(
        &mut f,
        cfg.sigma_min.ln(),
        cfg.sigma_max.ln(),
        vec![x, delta0],
        cfg.tolerances,
    )?;
    let mut y = y.into_iter();
    let (x_end, integral) = (y.next().expect("x"), y.next().expect("integral"));
    let delta = -integral.to_kind(Kind::Double);
    let log_p = gaussian_log_density(&x_end, cfg.sigma_max) + &delta;
    Ok(Likelihood {
        log_p,
        x_end,
        delta,
        nfe,
    })
}

/// Bits per dimension of 8-bit images from the log-likelihood `log_p` (nats, per image) of
/// their uniformly dequantised values `x = scale · (pixel + u)/256 + shift`, `u ~ U[0, 1)`:
/// `−log_p/(D ln 2) + 8 − log₂ scale` (`scale` 1 for data in [0, 1], 2 for [−1, 1], where
/// `score_sde`'s offset is 7). `dims` is D, the number of pixels times channels.
pub fn bits_per_dim(log_p: &Tensor, dims: i64, scale: f64) -> Result<Tensor> {
    crate::error::check_positive("scale", scale)?;
    crate::error::check_count("dims", dims.max(0) as usize)?;
    Ok(-log_p.to_kind(Kind::Double) / (dims as f64 * LN_2) + 8.0 - scale.log2())
}

/// Uniform dequantisation of images with values `k/255` (k = 0..255, as the data loaders give
/// them) in `[lo, hi]`: `x = lo + (hi − lo) (k + u)/256`, `u ~ U[0, 1)` per pixel.
pub fn dequantize(x: &Tensor, lo: f64, hi: f64) -> Tensor {
    let k = ((x - lo) / (hi - lo) * 255.0).round();
    (k + x.rand_like()) / 256.0 * (hi - lo) + lo
}
