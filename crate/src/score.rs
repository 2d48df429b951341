//! The score abstraction: anything that maps `(x, σ)` to an estimate of `∇ₓ log p_σ(x)`, the
//! gradient of the log-density of the data smoothed by Gaussian noise of scale σ.
//!
//! Analytic scores (a log-density differentiated by autograd, [`GradLogDensity`]; closed forms
//! such as [`crate::data::GaussianMixture`]) and networks ([`crate::nets`]) implement the same
//! trait, so samplers, losses and plots take either.
//!
//! Shapes: `x` is `[n, ...]` (one sample per row), `sigma` is `[n]` (one noise level per row).
//! A score that does not depend on σ (a model of one fixed noise level, or the exact score of an
//! unsmoothed density) ignores it.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// A score model `s(x, σ) ≈ ∇ₓ log p_σ(x)`.
pub trait Score {
    /// Evaluates the score. Implementations return a tensor of `x`'s shape; callers that cannot
    /// trust that use [`Score::score`].
    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor;

    /// Evaluates the score and checks that its shape equals `x`'s shape and that `sigma` has one
    /// entry per row of `x`.
    fn score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let n = x.size().first().copied().unwrap_or(0);
        if sigma.size() != [n] {
            return Err(Error::Shape {
                what: "sigma (one noise level per row of x)",
                expected: format!("[{n}]"),
                got: sigma.size(),
            });
        }
        let s = self.forward_score(x, sigma);
        if s.size() != x.size() {
            return Err(Error::ScoreShape {
                input: x.size(),
                output: s.size(),
            });
        }
        Ok(s)
    }

    /// [`Score::score`] at one noise level σ for every row.
    fn score_at(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let n = x.size().first().copied().unwrap_or(0);
        let sigmas = Tensor::full([n], sigma, (Kind::Float, x.device()));
        self.score(x, &sigmas)
    }
}

/// Any closure `|x, sigma| -> score` is a score.
impl<F> Score for F
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        self(x, sigma)
    }
}

/// `∇ₓ log p(x)` of a log-density by reverse-mode autograd, one gradient per row: the
/// equivalent of `jax.vmap(jax.grad(logpdf))` in seed 001. Works inside `tch::no_grad` (it turns
/// gradients on locally).
///
/// `log_density` maps `[n, ...]` to `[n]` (unnormalised log-densities are fine: the constant has
/// no gradient).
pub fn grad_log_density(log_density: impl Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
    tch::with_grad(|| {
        let x = x.detach().set_requires_grad(true);
        let total = log_density(&x).sum(Kind::Float);
        let mut grads = Tensor::run_backward(&[total], &[&x], false, false);
        grads.pop().expect("one gradient per input")
    })
}

/// The score of a log-density given as a closure, by autograd ([`grad_log_density`]). σ is
/// ignored: this is the score of the density itself.
pub struct GradLogDensity<F>(pub F);

impl<F: Fn(&Tensor) -> Tensor> Score for GradLogDensity<F> {
    fn forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Tensor {
        grad_log_density(&self.0, x)
    }
}
