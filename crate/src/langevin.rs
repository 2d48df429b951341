//! Langevin dynamics: MCMC that needs only the score `∇ₓ log p(x)`.
//!
//! # Step-size conventions (stated once, here)
//!
//! The seeds write the same unadjusted Langevin chain in two ways:
//!
//! | convention | update | used by |
//! |---|---|---|
//! | [`StepConvention::Full`] | `x ← x + ε ∇ₓ log p(x) + √(2ε) z` | seed 001 (blog), the `ncsn`/`ncsnv2` reference code |
//! | [`StepConvention::Half`] | `x ← x + (ε/2) ∇ₓ log p(x) + √ε z` | seeds 002, 003 (`η`), 004; NCSN Algorithm 1 (`α_i`) |
//!
//! with `z ~ N(0, I)`. They are one chain: `Half` with step `ε` is `Full` with step `ε/2`
//! (tested bit for bit with the same seed). The crate's default is `Full`, seed 001's form.
//! Both discretise the Langevin diffusion `dx = ∇ log p dt + √2 dW` (Full: time step ε);
//! the discretisation inflates the variance: for a Gaussian of variance `v` the `Full` chain's
//! stationary variance is `v / (1 - ε/(2v))`, so ε must be small against the data's scale.

use crate::error::{Error, Result};
use crate::score::Score;
use tch::{Kind, Tensor};

/// How the step size enters the update; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum StepConvention {
    /// `x ← x + ε s(x) + √(2ε) z` (seed 001).
    #[default]
    Full,
    /// `x ← x + (ε/2) s(x) + √ε z` (seeds 002–004, NCSN).
    Half,
}

impl StepConvention {
    /// `(drift factor, noise factor)` for step size `eps`: the update is
    /// `x + drift · s(x) + noise · z`.
    pub fn factors(self, eps: f64) -> (f64, f64) {
        match self {
            StepConvention::Full => (eps, (2.0 * eps).sqrt()),
            StepConvention::Half => (eps / 2.0, eps.sqrt()),
        }
    }
}

/// Checks a Langevin step size: finite and > 0.
pub fn check_step_size(eps: f64) -> Result<f64> {
    if eps.is_finite() && eps > 0.0 {
        Ok(eps)
    } else {
        Err(Error::InvalidStepSize(eps))
    }
}

/// Settings of a Langevin run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LangevinConfig {
    /// Number of updates.
    pub n_steps: usize,
    /// Step size ε (see [`StepConvention`]).
    pub eps: f64,
    /// How ε enters the update.
    pub convention: StepConvention,
    /// Noise level passed to the score (models of one noise level ignore it; the exact score of
    /// a mixture at σ = 0 is the score of the mixture itself).
    pub sigma: f64,
    /// Seed for libtorch's generator, set before the first step; `None` keeps its state.
    pub seed: Option<u64>,
    /// Keep a copy of the particles every this many steps (and the initial points), for
    /// trajectory figures; `None` keeps none.
    pub record_every: Option<usize>,
}

impl Default for LangevinConfig {
    /// Seed 001: 1,000 steps of ε = 10⁻², `Full` convention.
    fn default() -> Self {
        LangevinConfig {
            n_steps: 1000,
            eps: 1e-2,
            convention: StepConvention::Full,
            sigma: 0.0,
            seed: None,
            record_every: None,
        }
    }
}

/// What a Langevin run returns.
#[derive(Debug)]
pub struct LangevinOutput {
    /// The particles after the last step, the shape of the initial points.
    pub samples: Tensor,
    /// `(step, particles)` recorded every `record_every` steps, step 0 being the initial points.
    pub trajectory: Vec<(usize, Tensor)>,
}

/// How often the particles are checked for NaN or infinities (a device sync each time).
const FINITE_CHECK_EVERY: usize = 50;

fn all_finite(x: &Tensor) -> bool {
    x.isfinite().all().int64_value(&[]) != 0
}

/// Runs unadjusted Langevin dynamics from `x0` with the score `score`:
/// `x ← x + ε s(x, σ) + √(2ε) z` (or the `Half` form, see [`StepConvention`]).
///
/// Errors: ε not finite or ≤ 0, an empty `x0`, a score of the wrong shape, and particles that
/// become NaN or infinite (the error names a step by which it happened).
pub fn langevin(
    score: &(impl Score + ?Sized),
    x0: &Tensor,
    cfg: &LangevinConfig,
) -> Result<LangevinOutput> {
    let eps = check_step_size(cfg.eps)?;
    crate::error::check_nonempty(x0, "langevin initial points")?;
    if !(cfg.sigma.is_finite() && cfg.sigma >= 0.0) {
        return Err(Error::InvalidSigma(cfg.sigma));
    }
    if let Some(seed) = cfg.seed {
        crate::data::seed(seed);
    }
    let (drift, noise) = cfg.convention.factors(eps);
    let n = x0.size()[0];
    let sigma = Tensor::full([n], cfg.sigma, (Kind::Float, x0.device()));
    tch::no_grad(|| {
        let mut x = x0.detach().copy();
        let mut trajectory = Vec::new();
        let record = cfg.record_every.filter(|&k| k > 0);
        if record.is_some() {
            trajectory.push((0, x.copy()));
        }
        for step in 1..=cfg.n_steps {
            let s = score.score(&x, &sigma)?;
            let z = x.randn_like();
            x = x + s * drift + z * noise;
            if (step % FINITE_CHECK_EVERY == 0 || step == cfg.n_steps) && !all_finite(&x) {
                return Err(Error::NonFiniteSamples { step });
            }
            if record.is_some_and(|k| step % k == 0) {
                trajectory.push((step, x.copy()));
            }
        }
        Ok(LangevinOutput {
            samples: x,
            trajectory,
        })
    })
}
