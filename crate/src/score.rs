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

use crate::data::Density;
use crate::error::{check_device, check_nonempty, check_sigma, torch_op, Error, Result};
use tch::{Kind, Tensor};

/// A score model `s(x, σ) ≈ ∇ₓ log p_σ(x)`.
///
/// Two evaluations: [`Score::forward_score`], unchecked, is what an implementation writes;
/// [`Score::try_forward_score`] checks the input first and returns a typed error. Networks
/// ([`crate::nets`]) implement the second (input shape against the expected one, input device
/// against their parameters', σ > 0 where the network divides by σ, takes its log or looks it up)
/// and their `forward_score` panics with that error's message. Everything in the crate calls
/// [`Score::score`], which goes through the checked one.
pub trait Score {
    /// Evaluates the score. Implementations return a tensor of `x`'s shape; callers that cannot
    /// trust that use [`Score::score`].
    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor;

    /// Evaluates the score, or says why the input cannot be evaluated (wrong shape, wrong
    /// device, σ ≤ 0 for a noise-conditional network, a libtorch failure). The default calls
    /// [`Score::forward_score`]: closures and closed forms have nothing to check.
    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        Ok(self.forward_score(x, sigma))
    }

    /// Evaluates the score and checks that `sigma` has one entry per row of `x` on `x`'s
    /// device, and that the result has `x`'s shape.
    fn score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        check_sigma_rows("score", sigma, x)?;
        let s = self.try_forward_score(x, sigma)?;
        if s.size() != x.size() {
            return Err(Error::ScoreShape {
                input: x.size(),
                output: s.size(),
            });
        }
        Ok(s)
    }

    /// The noise levels the model can be evaluated at when it only knows a fixed table of them
    /// (an index-embedding network: [`crate::nets::ConditionedSimpleResnet`]); `None` (the
    /// default) for models that take σ as a continuous input or ignore it. Samplers check the
    /// levels they visit against it ([`crate::samplers::sample`]).
    fn trained_levels(&self) -> Option<&crate::noise::Sigmas> {
        None
    }

    /// The device of a network's parameters, where its input must be (`None`, the default,
    /// for closures and closed forms, which follow their input). Figures that build their own
    /// input (a grid) put it there.
    fn device(&self) -> Option<tch::Device> {
        None
    }

    /// [`Score::score`] at one noise level σ for every row.
    fn score_at(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let n = x.size().first().copied().unwrap_or(0);
        // σ ≤ 0, NaN and ∞ are for the model to accept (one noise level) or refuse; a positive
        // σ must also be positive and finite as the float32 the tensor holds.
        let positive = sigma.is_finite() && sigma > 0.0;
        if positive {
            crate::error::check_sigma(sigma)?;
        }
        let sigmas = Tensor::full([n], sigma, (Kind::Float, x.device()));
        if positive {
            // Every entry is this σ, checked: no read back of the tensor to check it again.
            crate::error::with_valid_sigmas(|| self.score(x, &sigmas))
        } else {
            self.score(x, &sigmas)
        }
    }
}

/// Checks that `sigma` holds one noise level per row of `x` (shape `[n]`) and lies on `x`'s
/// device; `what` names the operation in the error.
pub fn check_sigma_rows(what: &'static str, sigma: &Tensor, x: &Tensor) -> Result<()> {
    let n = x.size().first().copied().unwrap_or(0);
    if sigma.size() != [n] {
        return Err(Error::Shape {
            what,
            expected: format!("[{n}] for sigma (one noise level per row of x)"),
            got: sigma.size(),
        });
    }
    check_device(what, sigma, "sigma", x.device(), "x")
}

/// The vector-Jacobian product `vᵀ ∇ₓ s` per row: the gradient of `Σ (v · s)` with respect to
/// `x` (which `s` was computed from, with `x` requiring gradients), `x`'s shape. With
/// `create_graph` it stays differentiable (to train through it).
pub fn vjp(s: &Tensor, x: &Tensor, v: &Tensor, create_graph: bool) -> Result<Tensor> {
    let g = Tensor::f_run_backward(&[(s * v).sum(Kind::Float)], &[x], true, create_graph)
        .map_err(torch_op("vector-Jacobian product"))?;
    Ok(g.into_iter().next().expect("one gradient"))
}

/// The exact divergence `tr ∇ₓ s` per row `[n]`: one [`vjp`] per dimension of `s` (rows
/// flattened), so for low-dimensional data.
pub fn jacobian_trace(s: &Tensor, x: &Tensor, create_graph: bool) -> Result<Tensor> {
    let flat = s.flatten(1, -1);
    let d = flat.size()[1];
    let mut trace = Tensor::zeros([x.size()[0]], (Kind::Float, x.device()));
    for j in 0..d {
        let mut basis = vec![0f32; d as usize];
        basis[j as usize] = 1.0;
        let e = Tensor::from_slice(&basis).to_device(x.device());
        trace += vjp(&flat, x, &e, create_graph)?.flatten(1, -1).select(1, j);
    }
    Ok(trace)
}

/// `sigma` (`[n]`, one level per row) shaped `[n, 1, …, 1]` to broadcast against `x` (`[n, …]`).
pub fn per_row(sigma: &Tensor, x: &Tensor) -> Tensor {
    let mut shape = vec![x.size()[0]];
    shape.extend(std::iter::repeat_n(1, x.dim() - 1));
    sigma.to_kind(Kind::Float).view(shape.as_slice())
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
/// no gradient). Panics where [`try_grad_log_density`] errs.
pub fn grad_log_density(log_density: impl Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
    try_grad_log_density(log_density, x).unwrap_or_else(|e| panic!("{e}"))
}

/// [`grad_log_density`], or an error naming the input where there is no gradient to take: a
/// log-density that does not depend on `x` through differentiable operations (detached, or
/// computed outside autograd) is [`Error::InvalidParameter`] (libtorch's backward pass would
/// crash the process on it), and what libtorch refuses is [`Error::TorchOp`].
pub fn try_grad_log_density(log_density: impl Fn(&Tensor) -> Tensor, x: &Tensor) -> Result<Tensor> {
    let no_gradient = |x: &Tensor| Error::InvalidParameter {
        name: "log_density",
        value: format!("at x of shape {:?}", x.size()),
        why: "does not depend on x through differentiable operations: no gradient to take",
    };
    tch::with_grad(|| {
        let x = x.detach().set_requires_grad(true);
        let total = log_density(&x).sum(Kind::Float);
        // Checked here: a root without a gradient function crashes libtorch's engine.
        if !total.requires_grad() {
            return Err(no_gradient(&x));
        }
        let mut grads = Tensor::f_run_backward(&[total], &[&x], false, false).map_err(|e| {
            torch_op(format!(
                "autograd score: gradient of the log-density at x of shape {:?}",
                x.size()
            ))(e)
        })?;
        let grad = grads.pop().expect("one gradient per input");
        // Defined only when x was reached from the log-density.
        if grad.defined() {
            Ok(grad)
        } else {
            Err(no_gradient(&x))
        }
    })
}

/// The score of a [`Density`] by autograd of its log-density (σ is ignored). Unlike a closure,
/// it can be kept in a notebook variable across cells.
#[derive(Debug, Clone, Copy)]
pub struct AutogradScore<D>(pub D);

impl<D: Density> Score for AutogradScore<D> {
    fn forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Tensor {
        grad_log_density(|x| self.0.log_density(x), x)
    }

    fn try_forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Result<Tensor> {
        try_grad_log_density(|x| self.0.log_density(x), x)
    }
}

/// The score of a log-density given as a closure, by autograd ([`grad_log_density`]). σ is
/// ignored: this is the score of the density itself.
pub struct GradLogDensity<F>(pub F);

impl<F: Fn(&Tensor) -> Tensor> Score for GradLogDensity<F> {
    fn forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Tensor {
        grad_log_density(&self.0, x)
    }

    fn try_forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Result<Tensor> {
        try_grad_log_density(&self.0, x)
    }
}

/// The σ-smoothed score `∇ₓ log p_σ(x)` of a density known up to a constant, by Monte Carlo:
/// Tweedie's formula (seed 002) `∇ₓ log p_σ(x) = (E[y | x] - x) / σ²`, with the posterior mean
/// `E[y | x]` of `y ~ p` given `x = y + σ z` estimated by self-normalised importance sampling
/// from `n_mc` proposals `y ~ N(x, σ² I)` weighted by `p(y)`.
///
/// This is what denoising score matching at noise level σ learns, so it is the reference for a
/// trained model's error when `p_σ` has no closed form (the donut). Its Monte Carlo error
/// shrinks as `1/√n_mc`.
pub fn smoothed_score_mc(
    density: &(impl Density + ?Sized),
    x: &Tensor,
    sigma: f64,
    n_mc: i64,
) -> Result<Tensor> {
    let sigma = check_sigma(sigma)?;
    check_nonempty(x, "smoothed_score_mc points")?;
    if n_mc < 1 {
        return Err(Error::InvalidParameter {
            name: "n_mc",
            value: n_mc.to_string(),
            why: "needs at least one Monte Carlo proposal",
        });
    }
    tch::no_grad(|| {
        let size = x.size();
        let (n, rest) = (size[0], &size[1..]);
        let mut shape = vec![n, n_mc];
        shape.extend_from_slice(rest);
        let y = x.unsqueeze(1) + Tensor::randn(shape.as_slice(), (Kind::Float, x.device())) * sigma;
        let flat = y.flatten(0, 1);
        let w = density
            .log_density(&flat)
            .view([n, n_mc])
            .softmax(1, Kind::Float);
        let mut w_shape = vec![n, n_mc];
        w_shape.extend(std::iter::repeat_n(1, rest.len()));
        let posterior_mean =
            (w.view(w_shape.as_slice()) * y).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        Ok((posterior_mean - x) / (sigma * sigma))
    })
}
