//! Denoising score matching (Vincent 2011), for one noise level σ.
//!
//! Perturb the data with `q(x̃ | x) = N(x̃; x, σ² I)`; its score is
//! `∇_x̃ log q(x̃ | x) = -(x̃ - x) / σ²`, and
//!
//! `ℓ(θ; σ) = E_{x ~ p, x̃ ~ q(·|x)} ‖ s_θ(x̃, σ) + (x̃ - x) / σ² ‖²`
//!
//! is minimised by the score of the σ-smoothed data law, `s_θ(x̃, σ) = ∇ log p_σ(x̃)`
//! (seeds 001, 003). Reduction: the squared error is summed over the data dimensions and
//! averaged over the batch (homework 5's `loss(x).mean(dim=0).sum()`); seed 001 averages over
//! the dimensions too, which divides this value by `d`.
//!
//! At the optimum the loss is not zero: for data `N(m, diag(s²))` its minimum is
//! `Σᵢ (1/σ² - 1/(sᵢ² + σ²))` (tested).

use crate::error::{check_nonempty, check_sigma, Result};
use crate::score::Score;
use tch::{Kind, Tensor};

/// The DSM regression target `-(x̃ - x) / σ²`, which equals `-z / σ` for `x̃ = x + σ z`.
pub fn dsm_target(x: &Tensor, x_noisy: &Tensor, sigma: f64) -> Tensor {
    -(x_noisy - x) / (sigma * sigma)
}

/// Per-element squared DSM error `(s_θ(x̃, σ) + (x̃ - x)/σ²)²`, of `x`'s shape (the
/// homework's `matcher(x)`), with fresh noise `x̃ = x + σ z`.
pub fn dsm_per_element(score: &(impl Score + ?Sized), x: &Tensor, sigma: f64) -> Result<Tensor> {
    let sigma = check_sigma(sigma)?;
    check_nonempty(x, "dsm loss batch")?;
    let x_noisy = x + x.randn_like() * sigma;
    let s = score.score_at(&x_noisy, sigma)?;
    Ok((s - dsm_target(x, &x_noisy, sigma)).square())
}

/// The DSM loss `ℓ(θ; σ)`: a scalar, the per-element error summed over dimensions and averaged
/// over the batch.
pub fn dsm_loss(score: &(impl Score + ?Sized), x: &Tensor, sigma: f64) -> Result<Tensor> {
    let per_element = dsm_per_element(score, x, sigma)?;
    let n = x.size()[0] as f64;
    Ok(per_element.sum(Kind::Float) / n)
}
