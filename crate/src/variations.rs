//! Variations on generation with a trained score (seed 000, "Fun Variations on Generation";
//! NCSN appendix B, NCSNv2 appendix B.2): inpainting, interpolation and variations of a real
//! sample. Each is annealed Langevin dynamics ([`crate::samplers::AnnealedLangevinSampler`]'s
//! update and step schedule) with one change, and each is a [`Sampler`] run by
//! [`crate::samplers::sample`].
//!
//! * **Inpainting** (NCSN Algorithm 2; `ncsnv2`'s `anneal_Langevin_dynamics_inpainting`): at
//!   each level σ_i the known pixels `y` are re-noised once, `ỹ = y + σ_i z`, and after every
//!   Langevin step the known pixels of `x` are set to `ỹ`: `x ← m ⊙ ỹ + (1 − m) ⊙ x`. The rest
//!   follows the score, so it is drawn from (an approximation of) `p(x_unknown | y)`. With
//!   `denoise`, the last step sets the known pixels to `y` itself.
//! * **Interpolation** (`ncsnv2`'s `anneal_Langevin_dynamics_interpolation`): `k` chains between
//!   two chains p and q share their randomness: every step's noise of chain j is
//!   `cos θ_j z_p + sin θ_j z_q`, θ_j evenly spaced in [0, π/2]. Every chain is still an
//!   ordinary annealed Langevin chain (the noise keeps unit variance), and neighbours are close,
//!   so the row of samples moves smoothly from p's sample to q's. `ncsnv2` starts every chain
//!   of a row from one shared sample; [`Interpolation::start`] mixes two Gaussian starts the
//!   same way instead, so that a row's two ends are independent chains from the first step.
//! * **Variations**: start from a real sample perturbed to an intermediate level,
//!   `x = y + σ_k z`, and run annealed Langevin from σ_k down ([`variation_sampler`]); the
//!   larger σ_k, the further the result strays from `y`.

use crate::error::{Error, Result};
use crate::langevin::{check_step_size, AnnealedConfig};
use crate::noise::Sigmas;
use crate::precision::Precision;
use crate::samplers::{
    annealed_step, denoise, denoise_if, standard_noise, Sampler, ScoreOracle, Visits,
};
use std::f64::consts::FRAC_PI_2;
use tch::{Kind, Tensor};

/// Inpainting: annealed Langevin with the known pixels held at the data re-noised to each
/// level (see the [module docs](self)).
#[derive(Debug)]
pub struct Inpainting {
    pub sigmas: Sigmas,
    pub config: AnnealedConfig,
    /// The known values `y`, the shape of the samples (rows: one image each; where `mask` is 0
    /// the values are ignored).
    pub known: Tensor,
    /// 1 where a pixel is known, 0 where it is to be filled; broadcastable to `known`.
    pub mask: Tensor,
    noised: Option<(usize, Tensor)>,
}

impl Inpainting {
    /// Inpainting of `known` where `mask` is 1 (checks that the mask holds only 0 and 1 and
    /// broadcasts to `known`).
    pub fn new(
        sigmas: Sigmas,
        config: AnnealedConfig,
        known: &Tensor,
        mask: &Tensor,
    ) -> Result<Self> {
        let mask = mask.to_kind(Kind::Float).to_device(known.device());
        let binary = mask
            .eq(0.0)
            .logical_or(&mask.eq(1.0))
            .all()
            .int64_value(&[])
            == 1;
        let broadcasts = mask
            .f_expand_as(known)
            .map(|m| m.size() == known.size())
            .unwrap_or(false);
        if !(binary && broadcasts) {
            return Err(Error::InvalidParameter {
                name: "mask",
                value: format!("{:?} for known values {:?}", mask.size(), known.size()),
                why: "must hold only 0 and 1 and broadcast to the known values' shape",
            });
        }
        Ok(Inpainting {
            sigmas,
            config,
            known: known.detach().to_kind(Kind::Float),
            mask,
            noised: None,
        })
    }

    fn level(&self, k: usize) -> usize {
        k / self.config.steps_per_level
    }

    fn impose(&self, x: &Tensor, values: &Tensor) -> Tensor {
        &self.mask * values + (1.0 - &self.mask) * x
    }
}

impl Sampler for Inpainting {
    fn precision(&self) -> Precision {
        self.config.precision
    }
    fn name(&self) -> String {
        "inpainting (annealed Langevin)".into()
    }
    fn visits(&self) -> Visits {
        Visits::Levels(self.sigmas.values().to_vec())
    }
    fn start(&mut self) -> Result<()> {
        check_step_size(self.config.eps)?;
        self.noised = None;
        Ok(())
    }
    fn done(&self, k: usize) -> bool {
        k >= self.config.steps_per_level * self.sigmas.len()
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        if x.size() != self.known.size() {
            return Err(Error::Shape {
                what: "inpainting (samples vs known values)",
                expected: format!("{:?}", self.known.size()),
                got: x.size(),
            });
        }
        let i = self.level(k);
        if self.noised.as_ref().is_none_or(|(level, _)| *level != i) {
            let sigma = self.sigmas.values()[i];
            let noised = &self.known + self.known.randn_like() * sigma;
            self.noised = Some((i, noised));
        }
        let noised = &self.noised.as_ref().expect("set above").1;
        // ncsnv2 sets the known pixels before the level's first step and after every step.
        let x = if k.is_multiple_of(self.config.steps_per_level) {
            self.impose(&x, noised)
        } else {
            x
        };
        let x = annealed_step(&self.sigmas, &self.config, i, &x, oracle, standard_noise)?;
        Ok(self.impose(&x, noised))
    }
    fn finish(&mut self, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        if !self.config.denoise {
            return Ok(x);
        }
        let denoised = denoise(x, self.sigmas.min(), oracle)?;
        Ok(self.impose(&denoised, &self.known))
    }
}

/// Interpolation between pairs of chains by shared noise (see the [module docs](self)). The
/// samples are `[rows · steps, …]`: row r's `steps` chains are consecutive, chain 0 being p's
/// and chain `steps − 1` q's.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpolation {
    pub sigmas: Sigmas,
    pub config: AnnealedConfig,
    /// Chains per row, ends included (≥ 2).
    pub steps: usize,
}

impl Interpolation {
    /// `[steps]` weights `(cos θ_j, sin θ_j)`, θ_j = j/(steps − 1) · π/2.
    fn weights(&self, device: tch::Device) -> (Tensor, Tensor) {
        let theta = Tensor::linspace(0.0, FRAC_PI_2, self.steps as i64, (Kind::Float, device));
        (theta.cos(), theta.sin())
    }

    fn check_steps(&self) -> Result<()> {
        if self.steps < 2 {
            return Err(Error::InvalidParameter {
                name: "interpolation steps",
                value: self.steps.to_string(),
                why: "needs at least the two ends",
            });
        }
        Ok(())
    }

    /// `cos θ_j p + sin θ_j q` for every row: p and q `[rows, …]` → `[rows · steps, …]`.
    pub fn mix(&self, p: &Tensor, q: &Tensor) -> Result<Tensor> {
        self.check_steps()?;
        if p.size() != q.size() {
            return Err(Error::Shape {
                what: "interpolation ends",
                expected: format!("{:?}", p.size()),
                got: q.size(),
            });
        }
        let (cos, sin) = self.weights(p.device());
        let mut shape = vec![1, self.steps as i64];
        shape.extend(std::iter::repeat_n(1, p.dim() - 1));
        let mix = p.unsqueeze(1) * cos.view(shape.as_slice())
            + q.unsqueeze(1) * sin.view(shape.as_slice());
        Ok(mix.flatten(0, 1))
    }

    /// The start: Gaussian `N(0, std² I)` draws p and q for `rows` rows of `shape`, mixed.
    pub fn start(&self, rows: i64, shape: &[i64], std: f64, device: tch::Device) -> Result<Tensor> {
        let mut full = vec![rows];
        full.extend_from_slice(shape);
        let p = Tensor::randn(full.as_slice(), (Kind::Float, device)) * std;
        let q = Tensor::randn(full.as_slice(), (Kind::Float, device)) * std;
        self.mix(&p, &q)
    }
}

impl Sampler for Interpolation {
    fn precision(&self) -> Precision {
        self.config.precision
    }
    fn name(&self) -> String {
        format!("interpolation ({} chains)", self.steps)
    }
    fn visits(&self) -> Visits {
        Visits::Levels(self.sigmas.values().to_vec())
    }
    fn start(&mut self) -> Result<()> {
        check_step_size(self.config.eps)?;
        self.check_steps()
    }
    fn done(&self, k: usize) -> bool {
        k >= self.config.steps_per_level * self.sigmas.len()
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let n = x.size()[0];
        let steps = self.steps as i64;
        if n % steps != 0 {
            return Err(Error::Shape {
                what: "interpolation samples (rows · steps chains)",
                expected: format!("a multiple of {steps} rows"),
                got: x.size(),
            });
        }
        let mut row_shape = x.size();
        row_shape[0] = n / steps;
        // The chains of a row share their noise: cos θ_j z_p + sin θ_j z_q.
        let shared = |x: &Tensor| {
            let p = Tensor::randn(row_shape.as_slice(), (Kind::Float, x.device()));
            let q = Tensor::randn(row_shape.as_slice(), (Kind::Float, x.device()));
            self.mix(&p, &q)
        };
        let i = k / self.config.steps_per_level;
        annealed_step(&self.sigmas, &self.config, i, &x, oracle, shared)
    }
    fn finish(&mut self, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        denoise_if(self.config.denoise, x, self.sigmas.min(), oracle)
    }
}

/// Variations of real samples `y`: the start `y + σ_k z` and the annealed sampler over the
/// levels from index `level` (σ_k) down, with `config`'s step schedule of the whole set (so a
/// level's step is what it is in a full run).
pub fn variation_sampler(
    y: &Tensor,
    sigmas: &Sigmas,
    level: usize,
    config: &AnnealedConfig,
) -> Result<(Tensor, VariationSampler)> {
    if level >= sigmas.len() {
        return Err(Error::InvalidParameter {
            name: "variation level",
            value: level.to_string(),
            why: "must index one of the noise levels (0 = the largest)",
        });
    }
    let sigma = sigmas.values()[level];
    let start = y.detach().to_kind(Kind::Float) + y.randn_like() * sigma;
    Ok((
        start,
        VariationSampler {
            sigmas: sigmas.clone(),
            from: level,
            config: config.clone(),
        },
    ))
}

/// Annealed Langevin over the levels `from..` of `sigmas`, each with its step in the full
/// schedule ([`variation_sampler`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VariationSampler {
    pub sigmas: Sigmas,
    pub from: usize,
    pub config: AnnealedConfig,
}

impl Sampler for VariationSampler {
    fn precision(&self) -> Precision {
        self.config.precision
    }
    fn name(&self) -> String {
        format!("variation from σ = {:.3}", self.sigmas.values()[self.from])
    }
    fn visits(&self) -> Visits {
        Visits::Levels(self.sigmas.values()[self.from..].to_vec())
    }
    fn start(&mut self) -> Result<()> {
        check_step_size(self.config.eps).map(|_| ())
    }
    fn done(&self, k: usize) -> bool {
        k >= self.config.steps_per_level * (self.sigmas.len() - self.from)
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let i = self.from + k / self.config.steps_per_level;
        annealed_step(&self.sigmas, &self.config, i, &x, oracle, standard_noise)
    }
    fn finish(&mut self, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        denoise_if(self.config.denoise, x, self.sigmas.min(), oracle)
    }
}
