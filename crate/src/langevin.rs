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
use crate::noise::Sigmas;
use crate::precision::Precision;
use crate::samplers::{sample, AnnealedLangevinSampler, ByRef, LangevinSampler};
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

/// Runs unadjusted Langevin dynamics from `x0` with the score `score`:
/// `x ← x + ε s(x, σ) + √(2ε) z` (or the `Half` form, see [`StepConvention`]). A thin wrapper of
/// [`crate::samplers::LangevinSampler`] run by [`crate::samplers::sample`].
///
/// Errors: ε not finite or ≤ 0, an empty `x0`, a score of the wrong shape, and particles that
/// become NaN or infinite (the error names a step by which it happened).
pub fn langevin(
    score: &(impl Score + ?Sized),
    x0: &Tensor,
    cfg: &LangevinConfig,
) -> Result<LangevinOutput> {
    let record = cfg.record_every.filter(|&k| k > 0);
    let mut trajectory = Vec::new();
    let mut sampler = LangevinSampler(cfg.clone());
    let out = sample(&mut sampler, &ByRef(score), x0, cfg.seed, &mut |e| {
        // The evaluation of step k sees the particles after k steps.
        if record.is_some_and(|every| e.step % every == 0) {
            trajectory.push((e.step, e.x.copy()));
        }
    })?;
    if record.is_some_and(|every| cfg.n_steps.is_multiple_of(every)) {
        trajectory.push((cfg.n_steps, out.x.copy()));
    }
    Ok(LangevinOutput {
        samples: out.x,
        trajectory,
    })
}

/// How the step size of each noise level is scaled in annealed Langevin dynamics.
///
/// | schedule | step at level σ_i | used by |
/// |---|---|---|
/// | [`StepSchedule::SmallestLevel`] | `α_i = ε σ_i² / σ_L²` | NCSN Algorithm 1 (seeds 002, 004), ncsn/ncsnv2 code |
/// | [`StepSchedule::LargestLevel`] | `η_i = ε σ_i² / σ_max²` | homework 5 (seed 003) |
///
/// They coincide when the second's ε is the first's times `σ_max²/σ_L²` (tested). Combined
/// with [`StepConvention`]: NCSN's Algorithm 1 is `SmallestLevel` + `Half`
/// (`x + α_i/2 s + √α_i z`), the reference code `SmallestLevel` + `Full`
/// (`x + α_i s + √(2α_i) z`), the homework `LargestLevel` + `Half`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum StepSchedule {
    /// `α_i = ε σ_i²/σ_L²`.
    #[default]
    SmallestLevel,
    /// `η_i = ε σ_i²/σ_max²`.
    LargestLevel,
}

/// Where annealed Langevin starts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Init {
    /// Uniform on `[low, high]` in every coordinate (the homework: U[-1, 1]; NCSN: U[0, 1]).
    Uniform { low: f64, high: f64 },
    /// `N(0, std² I)` (the homework's note: `N(0, σ_max² I)` approximates `q(x_T)`).
    Gaussian { std: f64 },
}

impl Init {
    /// Draws the starting points, of shape `shape` (`[n, ...]`).
    pub fn draw(self, shape: &[i64], device: tch::Device) -> Result<Tensor> {
        match self {
            Init::Uniform { low, high } if low < high && low.is_finite() && high.is_finite() => {
                Ok(Tensor::rand(shape, (Kind::Float, device)) * (high - low) + low)
            }
            Init::Gaussian { std } if std.is_finite() && std > 0.0 => {
                Ok(Tensor::randn(shape, (Kind::Float, device)) * std)
            }
            other => Err(Error::InvalidParameter {
                name: "init",
                value: format!("{other:?}"),
                why: "needs low < high (uniform) or std > 0 (Gaussian), all finite",
            }),
        }
    }
}

/// Settings of annealed Langevin dynamics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnnealedConfig {
    /// Langevin steps T at each noise level.
    pub steps_per_level: usize,
    /// Base step size ε.
    pub eps: f64,
    /// How ε is scaled per level.
    pub schedule: StepSchedule,
    /// How the step enters the update.
    pub convention: StepConvention,
    /// Finish with one denoising step `x + σ_L² s(x, σ_L)` (Tweedie's formula, seed 002).
    pub denoise: bool,
    /// Seed for libtorch's generator, set before the first step.
    pub seed: Option<u64>,
    /// Keep a copy of the particles after every level, for progression figures (for EDM's
    /// sampler, [`crate::experiment::Method`], at each step's raised level).
    pub record_levels: bool,
    /// The precision the score is evaluated in, by every sampler of the annealed-Langevin
    /// family ([`crate::samplers::Sampler::precision`]); the update itself stays in the
    /// particles' dtype. Left out of the JSON when float32 (`checkpoint::is_default`).
    #[serde(default, skip_serializing_if = "crate::checkpoint::is_default")]
    pub precision: Precision,
    /// On a GPU, replay each level's steps from a CUDA graph captured at its second step
    /// ([`crate::samplers::Sampler::graph_key`], [`crate::cuda_graph`]): the same chain (the
    /// same noise for the same seed), one launch a step. Honoured by [`annealed_langevin`] and
    /// [`crate::samplers::AnnealedLangevinSampler`]; ignored on the CPU, when `record_levels` is
    /// on, and by the variation samplers ([`crate::variations`]), which run eagerly. A callback
    /// given to [`crate::samplers::sample`] sees a captured evaluation once, at the capture,
    /// before its values exist, and none of the replays. Left out of the JSON when off.
    #[serde(default, skip_serializing_if = "crate::checkpoint::is_default")]
    pub cuda_graph: bool,
}

impl Default for AnnealedConfig {
    /// NCSN (seed 004): T = 100 steps per level, ε = 2·10⁻⁵, Algorithm 1's form.
    fn default() -> Self {
        Self::ncsn()
    }
}

impl AnnealedConfig {
    /// NCSN Algorithm 1 with the paper's T = 100, ε = 2·10⁻⁵: `α_i = ε σ_i²/σ_L²`,
    /// `x + α_i/2 s + √α_i z`.
    pub fn ncsn() -> Self {
        AnnealedConfig {
            steps_per_level: 100,
            eps: 2e-5,
            schedule: StepSchedule::SmallestLevel,
            convention: StepConvention::Half,
            denoise: false,
            seed: None,
            record_levels: false,
            precision: Precision::Float32,
            cuda_graph: false,
        }
    }

    /// Homework 5's form: `η_t = ε σ_t²/σ_max²`, `x + η_t/2 s + √η_t z`.
    pub fn homework(steps_per_level: usize, eps: f64) -> Self {
        AnnealedConfig {
            steps_per_level,
            eps,
            schedule: StepSchedule::LargestLevel,
            convention: StepConvention::Half,
            ..Self::ncsn()
        }
    }

    /// The step size at level σ for the schedule `sigmas`.
    pub fn step_at(&self, sigma: f64, sigmas: &Sigmas) -> f64 {
        let reference = match self.schedule {
            StepSchedule::SmallestLevel => sigmas.min(),
            StepSchedule::LargestLevel => sigmas.max(),
        };
        self.eps * sigma * sigma / (reference * reference)
    }
}

/// What annealed Langevin returns.
#[derive(Debug)]
pub struct AnnealedOutput {
    /// The final particles (denoised when asked).
    pub samples: Tensor,
    /// `(σ_i, particles after level i)` for every level, when `record_levels` is on.
    pub levels: Vec<(f64, Tensor)>,
}

/// Annealed Langevin dynamics (NCSN Algorithm 1): for each σ_i from the largest to the
/// smallest, `T` Langevin steps with the score at σ_i and the step of [`StepSchedule`], then
/// optionally a final denoising step. A thin wrapper of
/// [`crate::samplers::AnnealedLangevinSampler`] run by [`crate::samplers::sample`].
pub fn annealed_langevin(
    score: &(impl Score + ?Sized),
    sigmas: &Sigmas,
    x0: &Tensor,
    cfg: &AnnealedConfig,
) -> Result<AnnealedOutput> {
    let t = cfg.steps_per_level;
    let mut levels = Vec::new();
    let mut sampler = AnnealedLangevinSampler {
        sigmas: sigmas.clone(),
        config: cfg.clone(),
    };
    let out = sample(&mut sampler, &ByRef(score), x0, cfg.seed, &mut |e| {
        // Each step evaluates the score once; the evaluation after level i's last step (at the
        // next level, or the denoising step) sees the particles at the end of level i.
        if cfg.record_levels && t > 0 && e.step > 0 && e.step % t == 0 {
            levels.push((sigmas.values()[e.step / t - 1], e.x.copy()));
        }
    })?;
    if cfg.record_levels && !cfg.denoise && t > 0 {
        levels.push((sigmas.min(), out.x.copy()));
    }
    Ok(AnnealedOutput {
        samples: out.x,
        levels,
    })
}
