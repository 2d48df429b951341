//! Denoising score matching (Vincent 2011): one noise level σ, and the multi-scale loss of
//! noise-conditional score networks (Song & Ermon 2019) with its noise-prediction form; and the
//! two objectives that need no noise, implicit (Hyvärinen 2005) and sliced score matching
//! (Song et al. 2019), for low-dimensional data.
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

use crate::error::{check_nonempty, check_positive, check_sigma, check_sigma_tensor, Result};
use crate::noise::Sigmas;
use crate::score::{check_sigma_rows, jacobian_trace, per_row, vjp, Score};
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

/// The weight λ(σ) of each noise level in the multi-scale loss.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum Weighting {
    /// `λ(σ) = σ²` (NCSN papers, seeds 001, 002, 004): every level's term is of order one.
    #[default]
    SigmaSquared,
    /// `λ(σ) = σ²/σ_max²` (homework 5): the papers' loss divided by the constant σ_max².
    SigmaSquaredOverMax,
    /// EDM's weight (Karras et al. 2022, Table 1): `(σ² + σ_data²)/(σ σ_data)²` on the denoiser's
    /// error `‖D(x̃) − x‖² = σ⁴ ‖s + z/σ‖²`, so `λ(σ) = σ² (σ² + σ_data²)/σ_data²` here: `σ²`
    /// times `1 + σ²/σ_data²`, which gives the large levels more weight (17 times σ² at σ = 2
    /// for σ_data = 0.5).
    Edm { sigma_data: f64 },
}

/// How the noise levels of a batch are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum LevelSampling {
    /// One level per sample, uniformly (homework 5; unbiased).
    #[default]
    PerSample,
    /// One level for the whole batch (Assignment 8's option; simpler, steadier there).
    PerBatch,
    /// EDM's training distribution (Karras et al. 2022, Table 1): per sample,
    /// `ln σ ~ N(p_mean, p_std²)` (−1.2 and 1.2 there), not restricted to the table. Only for
    /// networks that take σ as an input (an index-embedding network would see the nearest level).
    LogNormal { p_mean: f64, p_std: f64 },
    /// The VE SDE's training distribution (Song et al. 2021, `σ(t) = σ_min (σ_max/σ_min)^t`
    /// with `t ~ U(0, 1)`): per sample, `ln σ ~ U[ln σ_min, ln σ_max]` over the table's range,
    /// not restricted to its levels. For networks that take σ as an input, and for samplers
    /// that visit σ's between the levels (the probability-flow ODE).
    LogUniform,
}

/// Settings of the multi-scale DSM loss.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MultiScaleConfig {
    /// The noise levels.
    pub sigmas: Sigmas,
    /// λ(σ).
    pub weighting: Weighting,
    /// How levels are drawn.
    pub sampling: LevelSampling,
}

impl MultiScaleConfig {
    /// Per-sample levels, `λ = σ²`.
    pub fn new(sigmas: Sigmas) -> Self {
        MultiScaleConfig {
            sigmas,
            weighting: Weighting::SigmaSquared,
            sampling: LevelSampling::PerSample,
        }
    }

    /// Checks the parameters of the weighting and the level distribution.
    pub fn validate(&self) -> Result<()> {
        if let Weighting::Edm { sigma_data } = self.weighting {
            check_positive("sigma_data", sigma_data)?;
        }
        if let LevelSampling::LogNormal { p_mean, p_std } = self.sampling {
            check_positive("p_std", p_std)?;
            // The drawn σ = exp(p_mean + p_std z) must stay positive and finite in float32
            // (ln of its range: ±87) for every z a normal draw gives (|z| < 12), since the
            // training loss does not check its own levels one by one.
            if !(p_mean.is_finite() && p_mean.abs() + 12.0 * p_std < 87.0) {
                return Err(crate::Error::InvalidParameter {
                    name: "p_mean",
                    value: format!("{p_mean} (p_std {p_std})"),
                    why: "ln sigma = p_mean + p_std z must stay within float32's range (|p_mean| + 12 p_std < 87)",
                });
            }
        }
        Ok(())
    }

    fn weight(&self, sigma: &Tensor) -> Tensor {
        match self.weighting {
            Weighting::SigmaSquared => sigma.square(),
            Weighting::SigmaSquaredOverMax => sigma.square() / self.sigmas.max().powi(2),
            Weighting::Edm { sigma_data } => {
                let var = sigma.square();
                &var * (&var / (sigma_data * sigma_data) + 1.0)
            }
        }
    }

    /// Draws the noise level of each row of a batch of `n`: `[n]` float.
    ///
    /// With one level there is nothing to draw and nothing is drawn, so the random stream — and
    /// the noise of the loss — is [`dsm_loss`]'s at that level; with `λ = σ²/σ_max² = 1` the
    /// multi-scale loss is then `dsm_loss` itself (tested), with `λ = σ²` it is σ² times it.
    pub fn draw_sigmas(&self, n: i64, device: tch::Device) -> Tensor {
        if self.sigmas.len() == 1 {
            return Tensor::full([n], self.sigmas.max(), (Kind::Float, device));
        }
        let idx = match self.sampling {
            LevelSampling::PerSample => self.sigmas.sample_indices(n, device),
            LevelSampling::PerBatch => self.sigmas.sample_indices(1, device).expand([n], false),
            LevelSampling::LogNormal { p_mean, p_std } => {
                return (Tensor::randn([n], (Kind::Float, device)) * p_std + p_mean).exp();
            }
            LevelSampling::LogUniform => {
                let (lo, hi) = (self.sigmas.min().ln(), self.sigmas.max().ln());
                return (Tensor::rand([n], (Kind::Float, device)) * (hi - lo) + lo).exp();
            }
        };
        self.sigmas.tensor(device).index_select(0, &idx)
    }
}

/// Per-element multi-scale DSM error `λ(σ_i) (s_θ(x̃, σ_i) + (x̃ - x)/σ_i²)²`, of `x`'s shape,
/// with `σ_i` drawn per row (or per batch) and `x̃ = x + σ_i z` (homework 5's `ncsn(x)`).
///
/// The full loss is `Σ_i λ(σ_i) ℓ(θ; σ_i)` over the levels (NCSN eq. 6); drawing one level per
/// sample uniformly estimates it divided by L.
pub fn multiscale_dsm_per_element(
    score: &(impl Score + ?Sized),
    x: &Tensor,
    cfg: &MultiScaleConfig,
) -> Result<Tensor> {
    check_nonempty(x, "multi-scale dsm batch")?;
    cfg.validate()?;
    let sigma = cfg.draw_sigmas(x.size()[0], x.device());
    // The levels come from the checked table: no read back of them per step.
    crate::error::with_valid_sigmas(|| dsm_terms(score, x, &sigma, cfg))
}

/// [`multiscale_dsm_per_element`] at given levels `sigma` (`[n]` on `x`'s device, each finite
/// and > 0: the target divides by σ), for tests and evaluation.
pub fn dsm_at_levels(
    score: &(impl Score + ?Sized),
    x: &Tensor,
    sigma: &Tensor,
    cfg: &MultiScaleConfig,
) -> Result<Tensor> {
    cfg.validate()?;
    dsm_terms(score, x, sigma, cfg)
}

/// [`dsm_at_levels`] with `cfg` already validated.
fn dsm_terms(
    score: &(impl Score + ?Sized),
    x: &Tensor,
    sigma: &Tensor,
    cfg: &MultiScaleConfig,
) -> Result<Tensor> {
    check_nonempty(x, "dsm_at_levels batch")?;
    check_sigma_rows("dsm_at_levels", sigma, x)?;
    check_sigma_tensor(sigma)?;
    let s = per_row(sigma, x);
    let z = x.randn_like();
    let x_noisy = x + &z * &s;
    let predicted = score.score(&x_noisy, sigma)?;
    // target -(x̃ - x)/σ² = -z/σ
    Ok(per_row(&cfg.weight(sigma), x) * (predicted + z / &s).square())
}

/// The multi-scale DSM loss: a scalar, [`multiscale_dsm_per_element`] summed over dimensions
/// and averaged over the batch.
pub fn multiscale_dsm_loss(
    score: &(impl Score + ?Sized),
    x: &Tensor,
    cfg: &MultiScaleConfig,
) -> Result<Tensor> {
    let per_element = multiscale_dsm_per_element(score, x, cfg)?;
    Ok(per_element.sum(Kind::Float) / x.size()[0] as f64)
}

/// A network that predicts the noise, `η_θ(x̃, σ) ≈ z` for `x̃ = x + σ z`, read as a score
/// through Tweedie's relation `s(x̃, σ) = -η_θ(x̃, σ)/σ` (seed 002). It divides by σ, so its
/// checked evaluation ([`Score::score`]) refuses σ ≤ 0 ([`crate::Error::InvalidSigma`]) and
/// runs the inner network's own checks.
pub struct NoisePrediction<M>(pub M);

impl<M: Score> Score for NoisePrediction<M> {
    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        -self.0.forward_score(x, sigma) / per_row(sigma, x)
    }

    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        check_sigma_rows("NoisePrediction", sigma, x)?;
        check_sigma_tensor(sigma)?;
        Ok(-self.0.try_forward_score(x, sigma)? / per_row(sigma, x))
    }
}

/// The noise-prediction loss of seed 002, `E ‖η_θ(x + σ z, σ) - z‖²` (summed over dimensions,
/// averaged over the batch), levels drawn as in `cfg` (its weighting is not used).
///
/// It equals the multi-scale DSM loss with `λ(σ) = σ²` of the score `-η_θ/σ`:
/// `σ² ‖-η/σ + z/σ‖² = ‖η - z‖²` (tested).
pub fn noise_prediction_loss(
    noise_model: &(impl Score + ?Sized),
    x: &Tensor,
    cfg: &MultiScaleConfig,
) -> Result<Tensor> {
    check_nonempty(x, "noise prediction batch")?;
    let sigma = cfg.draw_sigmas(x.size()[0], x.device());
    let z = x.randn_like();
    let x_noisy = x + &z * per_row(&sigma, x);
    let eta = noise_model.score(&x_noisy, &sigma)?;
    Ok((eta - z).square().sum(Kind::Float) / x.size()[0] as f64)
}

/// Implicit score matching (Hyvärinen 2005; seed 003, Task 1):
/// `J(θ) = E_p[ ½ ‖s_θ(x)‖² + tr ∇ₓ s_θ(x) ]`, per row `[n]`. Integration by parts gives
/// `J(θ) = ½ E_p ‖s_θ(x) − ∇ₓ log p(x)‖² − ½ E_p ‖∇ₓ log p(x)‖²`: the explicit objective up to
/// a constant that does not depend on θ (tested). The trace is exact, one backward pass per
/// dimension, so this is for low-dimensional data. `sigma` is passed to the model (one that
/// ignores σ gives the unsmoothed objective).
pub fn implicit_score_matching(
    score: &(impl Score + ?Sized),
    x: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    check_nonempty(x, "implicit score matching batch")?;
    let x = x.detach().set_requires_grad(true);
    let s = score.score_at(&x, sigma)?.flatten(1, -1);
    let trace = jacobian_trace(&s, &x, true)?;
    Ok(s.square()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        * 0.5
        + trace)
}

/// Sliced score matching (Song, Garg, Shi & Ermon 2019), one random projection per sample:
/// `½ (vᵀ s_θ(x))² + vᵀ ∇ₓ (vᵀ s_θ(x))` with `v ~ N(0, I)`, per row `[n]`. Since
/// `E[v vᵀ] = I` its expectation over v is [`implicit_score_matching`]'s (tested), at the cost
/// of one backward pass whatever the dimension. (`ncsn`'s `sliced_score_matching` draws unit
/// vectors instead, which divides both terms by d.)
pub fn sliced_score_matching(
    score: &(impl Score + ?Sized),
    x: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    check_nonempty(x, "sliced score matching batch")?;
    let x = x.detach().set_requires_grad(true);
    let s = score.score_at(&x, sigma)?.flatten(1, -1);
    let v = s.randn_like();
    let projected = (&s * &v).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let jvp = (vjp(&s, &x, &v, true)?.flatten(1, -1) * &v).sum_dim_intlist(
        [1i64].as_slice(),
        false,
        Kind::Float,
    );
    Ok(projected.square() * 0.5 + jvp)
}
