//! Samplers as a family: one interface ([`Sampler`]), one driver ([`sample`]) that runs any of
//! them with a seed, a start and a callback that sees every score evaluation.
//!
//! # The variance-exploding SDE (Song et al. 2021, "Score-based generative modeling through
//! stochastic differential equations", §3.4 and appendix C)
//!
//! NCSN's noise levels σ_1 > … > σ_L discretise the VE SDE `dx = √(d[σ²(t)]/dt) dw`, whose
//! marginal at noise level σ is the data smoothed by `N(0, σ² I)`, `p_σ`. Going from σ_max down
//! to σ_min it has
//!
//! * a reverse-time SDE, `dx = −d[σ²] ∇ₓ log p_σ(x) + √(d[σ²]) dw̄` (`d[σ²] < 0` going down), whose
//!   discretisation between two levels is the **reverse-diffusion predictor** of `score_sde`:
//!   `x ← x + (σ_i² − σ_{i+1}²) s(x, σ_i) + √(σ_i² − σ_{i+1}²) z`;
//! * a deterministic **probability-flow ODE** with the same marginals,
//!   `dx/dσ = −σ ∇ₓ log p_σ(x)`, written here in `t = ln σ` (uniform steps in t are the geometric
//!   levels): `dx/dt = −σ² s(x, σ)`.
//!
//! # The family
//!
//! | sampler | score evaluations | levels it visits |
//! |---|---|---|
//! | [`LangevinSampler`] (seed 001) | `n_steps` | one σ |
//! | [`AnnealedLangevinSampler`] (NCSN Algorithm 1, homework 5) | `L · T` (+1 to denoise) | the L levels |
//! | [`ReverseDiffusion`] (predictor only) | `L` | the L levels |
//! | [`PredictorCorrector`] (reverse diffusion + Langevin corrector at a target signal-to-noise ratio) | `L (1 + n)` | the L levels |
//! | [`ProbabilityFlow`], Euler or Heun (EDM's Algorithm 1) | `L` or `2L − 1` | the L levels |
//! | [`EdmStochastic`] (Heun with noise added back, EDM's Algorithm 2) | `2L − 1` | σ's between the levels (the L levels without churn) |
//! | [`AdaptiveFlow`] (Dormand–Prince 5(4) with tolerances) | as the tolerances ask | any σ in [σ_min, σ_max] |
//!
//! Every sampler except [`LangevinSampler`] ends at σ_min and, with `denoise`, takes one last
//! step to σ = 0 by Tweedie's formula `x + σ_min² s(x, σ_min)` (seed 002), which is also the
//! probability-flow ODE's Euler step from σ_min to 0 and the reverse-diffusion predictor's last
//! mean (`score_sde` returns `x_mean`).
//!
//! A network that knows only a table of levels (an index embedding) can be sampled only by
//! samplers that visit those levels: [`sample`] checks this first and returns
//! [`Error::UntrainedLevel`] rather than let the network use the nearest level silently.

use crate::error::{check_nonempty, check_positive, Error, Result};
use crate::langevin::{check_step_size, AnnealedConfig, LangevinConfig};
use crate::noise::Sigmas;
use crate::precision::{InPrecision, Precision};
use crate::score::Score;
use tch::{Kind, Tensor};

/// What the callback of [`sample`] sees at each score evaluation.
#[derive(Debug)]
pub struct Evaluation<'a> {
    /// Number of score evaluations so far, this one included (1, 2, …).
    pub nfe: usize,
    /// The sampler's step during which the score was evaluated (0, 1, …).
    pub step: usize,
    /// Index of the noise level among the sampler's levels ([`Visits::Levels`]), when it visits a
    /// table of levels (`None` for an adaptive solver's intermediate σ's).
    pub level: Option<usize>,
    /// The noise level σ the score was evaluated at.
    pub sigma: f64,
    /// The Langevin step size (in the `Full` convention, `x + ε s + √(2ε) z`) of the update this
    /// evaluation feeds, for Langevin steps and correctors; `None` for predictors and ODE steps.
    pub step_size: Option<f64>,
    /// Where the score was evaluated.
    pub x: &'a Tensor,
    /// The score there.
    pub score: &'a Tensor,
}

/// The score model as a sampler sees it: every evaluation is counted and shown to the callback.
pub struct ScoreOracle<'a> {
    model: &'a dyn Score,
    callback: &'a mut dyn FnMut(&Evaluation),
    nfe: usize,
    step: usize,
    levels: Vec<f64>,
}

impl ScoreOracle<'_> {
    /// `s(x, σ)` for every row, shown to the callback. `step_size`: see [`Evaluation`].
    pub fn eval(&mut self, x: &Tensor, sigma: f64, step_size: Option<f64>) -> Result<Tensor> {
        let s = self.model.score_at(x, sigma)?;
        self.nfe += 1;
        let level = self
            .levels
            .iter()
            .position(|&l| (l - sigma).abs() <= 1e-9 * l);
        (self.callback)(&Evaluation {
            nfe: self.nfe,
            step: self.step,
            level,
            sigma,
            step_size,
            x,
            score: &s,
        });
        Ok(s)
    }

    /// Score evaluations so far.
    pub fn nfe(&self) -> usize {
        self.nfe
    }
}

/// The noise levels a sampler evaluates the score at.
#[derive(Debug, Clone, PartialEq)]
pub enum Visits {
    /// Only these σ's, largest first.
    Levels(Vec<f64>),
    /// Any σ in `[min, max]` (adaptive solvers).
    Continuous { max: f64, min: f64 },
}

/// A sampler: a configuration (a struct with `Default` or named presets) that knows the noise
/// levels it visits and how to take one step. The driver [`sample`] calls [`Sampler::step`] for
/// `k = 0, 1, …` until [`Sampler::done`], then [`Sampler::finish`] once. A sampler's state
/// lives in `x` and in `k` (adaptive solvers keep their step size in `self`, reset by
/// [`Sampler::start`]).
pub trait Sampler {
    /// A short name for tables and legends.
    fn name(&self) -> String;
    /// The noise levels it evaluates the score at.
    fn visits(&self) -> Visits;
    /// Called once before the first step.
    fn start(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether the run is over before step `k`.
    fn done(&self, k: usize) -> bool;
    /// Step `k`: the next `x`, the score evaluated through `oracle`.
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor>;
    /// After the last step (the final denoising step, where asked).
    fn finish(&mut self, x: Tensor, _oracle: &mut ScoreOracle) -> Result<Tensor> {
        Ok(x)
    }
    /// The precision [`sample`] evaluates the score in ([`InPrecision`]: under bf16 autocast
    /// the network runs in bfloat16 and the update stays float32). Float32 unless the
    /// sampler's configuration asks otherwise (the annealed-Langevin family's
    /// [`AnnealedConfig::precision`]).
    fn precision(&self) -> Precision {
        Precision::Float32
    }
    /// Whether [`sample`] may replay steps from CUDA graphs on a GPU (see
    /// [`Sampler::graph_key`]). Off unless the sampler's configuration asks for it
    /// ([`AnnealedConfig::cuda_graph`]).
    fn cuda_graph(&self) -> bool {
        false
    }
    /// Steps that do the same work (the same kernels with the same constants: only the
    /// particles and the noise differ) share a key: [`sample`] runs the first of them eagerly,
    /// captures the second in a CUDA graph and replays it for the rest. `None`: always eager.
    /// The graph then steps the particles `x` in place, in the storage of the step's input: a
    /// sampler with a key must not keep its step's input or output elsewhere.
    fn graph_key(&self, _k: usize) -> Option<usize> {
        None
    }
}

/// A step captured by [`sample`]: the graph, the particles it steps in place, and the score
/// evaluations one replay stands for.
struct CapturedStep {
    graph: crate::cuda_graph::CudaGraph,
    /// Read and written by every replay: the step's result is copied back into it inside the
    /// graph, so consecutive replays chain with no copy in or out (as PyTorch's
    /// `x.copy_(step(x))` captured).
    particles: Tensor,
    /// The step's own result, kept for as long as the graph that writes it.
    _output: Tensor,
    nfe: usize,
}

/// What [`sample`] returns.
#[derive(Debug)]
pub struct Samples {
    /// The samples, the shape of the start.
    pub x: Tensor,
    /// Number of score evaluations (network function evaluations, NFE).
    pub nfe: usize,
    /// Number of steps taken.
    pub steps: usize,
}

/// How often the particles are checked for NaN or infinities (a device sync each time).
const FINITE_CHECK_EVERY: usize = 50;

fn all_finite(x: &Tensor) -> bool {
    x.isfinite().all().int64_value(&[]) != 0
}

/// Checks that a model with a table of levels is sampled only at those levels.
pub fn check_levels(sampler: &dyn Sampler, model: &dyn Score) -> Result<()> {
    let Some(trained) = model.trained_levels() else {
        return Ok(());
    };
    let known = |s: f64| trained.values().iter().any(|&l| (l - s).abs() <= 1e-6 * l);
    let bad = match sampler.visits() {
        Visits::Levels(levels) => levels.into_iter().find(|&s| !known(s)),
        Visits::Continuous { max, min } => {
            // An adaptive solver visits σ's between the table's entries.
            Some(if known(max) { (max * min).sqrt() } else { max })
        }
    };
    match bad {
        None => Ok(()),
        Some(sigma) => Err(Error::UntrainedLevel {
            sampler: sampler.name(),
            sigma,
            levels: trained.len(),
        }),
    }
}

/// Runs `sampler` from `x0` with the score `model`: seeds libtorch's generator when `seed` is
/// given, calls `callback` at every score evaluation, checks the particles for NaN/∞ every 50
/// steps and at the end ([`Error::NonFiniteSamples`] names a step by which it happened).
pub fn sample(
    sampler: &mut dyn Sampler,
    model: &dyn Score,
    x0: &Tensor,
    seed: Option<u64>,
    callback: &mut dyn FnMut(&Evaluation),
) -> Result<Samples> {
    check_nonempty(x0, "sampler initial points")?;
    check_levels(sampler, model)?;
    sampler.start()?;
    if let Some(seed) = seed {
        crate::data::seed(seed);
    }
    let levels = match sampler.visits() {
        Visits::Levels(levels) => levels,
        Visits::Continuous { .. } => Vec::new(),
    };
    let device = model.device().unwrap_or(x0.device());
    let precision = sampler.precision().resolve(device)?;
    crate::precision::flush_subnormals_on_cpu(device)?;
    let model = InPrecision {
        precision,
        score: model,
    };
    let mut oracle = ScoreOracle {
        model: &model,
        callback,
        nfe: 0,
        step: 0,
        levels,
    };
    let graphed = sampler.cuda_graph() && device.is_cuda();
    let _stream = match graphed {
        true => Some(crate::cuda_graph::SideStream::enter(device)?),
        false => None,
    };
    // One graph at a time: the annealed samplers' keys only grow, so an earlier level's graph
    // (with its own memory pool) is not needed again once the next level's is captured.
    let mut captured: Option<(usize, CapturedStep)> = None;
    let mut ran_eagerly: std::collections::HashSet<usize> = Default::default();
    tch::no_grad(|| {
        let mut x = x0.detach().copy();
        let mut k = 0;
        while !sampler.done(k) {
            oracle.step = k;
            let key = sampler.graph_key(k).filter(|_| graphed);
            x = match key {
                Some(key) if ran_eagerly.contains(&key) => {
                    if captured.as_ref().map(|(captured_key, _)| *captured_key) != Some(key) {
                        captured = None;
                        // The graph steps `x`'s own storage (allocated outside its pool, as
                        // PyTorch's captured `x.copy_(step(x))` steps `x`): no copy in before the
                        // first replay.
                        let particles = x.shallow_clone();
                        let before = oracle.nfe;
                        let (graph, output) =
                            crate::cuda_graph::CudaGraph::capture(device, || {
                                let output =
                                    sampler.step(k, particles.shallow_clone(), &mut oracle)?;
                                particles.shallow_clone().f_copy_(&output)?;
                                Ok(output)
                            })?;
                        let nfe = oracle.nfe - before;
                        // The capture counted its evaluations once and ran nothing: the
                        // replay below is this step.
                        oracle.nfe = before;
                        captured = Some((
                            key,
                            CapturedStep {
                                graph,
                                particles,
                                _output: output,
                                nfe,
                            },
                        ));
                    }
                    let (_, c) = captured.as_ref().expect("captured above");
                    // After a replay or a capture `x` is the graph's own particles; after an
                    // eager step they are copied in.
                    if x.data_ptr() != c.particles.data_ptr() {
                        c.particles.shallow_clone().f_copy_(&x)?;
                    }
                    c.graph.replay()?;
                    oracle.nfe += c.nfe;
                    c.particles.shallow_clone()
                }
                _ => {
                    if let Some(key) = key {
                        ran_eagerly.insert(key);
                    }
                    sampler.step(k, x, &mut oracle)?
                }
            };
            k += 1;
            if k % FINITE_CHECK_EVERY == 0 && !all_finite(&x) {
                return Err(Error::NonFiniteSamples { step: k });
            }
        }
        oracle.step = k;
        let x = sampler.finish(x, &mut oracle)?;
        if !all_finite(&x) {
            return Err(Error::NonFiniteSamples { step: k });
        }
        Ok(Samples {
            x,
            nfe: oracle.nfe,
            steps: k,
        })
    })
}

/// A borrowed score of any (possibly unsized) type, as a `&dyn Score` for [`sample`]:
/// `sample(sampler, &ByRef(model), …)`.
pub struct ByRef<'a, S: ?Sized>(pub &'a S);

impl<S: Score + ?Sized> Score for ByRef<'_, S> {
    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        self.0.forward_score(x, sigma)
    }
    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.0.try_forward_score(x, sigma)
    }
    fn trained_levels(&self) -> Option<&Sigmas> {
        self.0.trained_levels()
    }
    fn device(&self) -> Option<tch::Device> {
        self.0.device()
    }
}

/// Runs `sampler` without a callback.
pub fn sample_quietly(
    sampler: &mut dyn Sampler,
    model: &dyn Score,
    x0: &Tensor,
    seed: Option<u64>,
) -> Result<Samples> {
    sample(sampler, model, x0, seed, &mut |_| {})
}

/// One annealed-Langevin step at level `i` of `sigmas`: `x + drift · s + noise · z`, with the
/// step of `config`'s schedule and convention and `z = draw(x)`, drawn after the score (as the
/// loop before the driver did: a score that draws random numbers, such as the Monte-Carlo
/// smoothed score, sees the generator where it did).
pub fn annealed_step(
    sigmas: &Sigmas,
    config: &AnnealedConfig,
    i: usize,
    x: &Tensor,
    oracle: &mut ScoreOracle,
    draw: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let sigma = sigmas.values()[i];
    let (drift, noise) = config.convention.factors(config.step_at(sigma, sigmas));
    let s = oracle.eval(x, sigma, Some(drift))?;
    let z = draw(x)?;
    Ok(x + s * drift + z * noise)
}

/// Starting points for the reverse-time samplers (reverse diffusion, predictor-corrector, the
/// probability-flow ODE) from the data they were trained on: the Gaussian with the first two
/// moments of `p_σmax`, mean `E x` and per-coordinate variance `Var x + σ_max²`. The VE SDE's
/// usual prior `N(0, σ_max² I)` assumes centred data with σ_max far above its spread; where the
/// data sit off the origin (the moons' mean is (0.5, 0.25)) or σ_max is of the order of their
/// width (NCSNv2 technique 1 makes it the largest pairwise distance), the ODE carries that
/// mismatch into its samples. Measured with the exact score of 1,000 moons (adaptive ODE, 10
/// levels from 3.6 to 0.01, one draw of 1,000 samples each): energy distance to the data 4.9×
/// that of fresh data from `N(0, σ_max² I)`, 0.42× from this prior.
pub fn gaussian_prior(data: &Tensor, sigma_max: f64, n: i64) -> Result<Tensor> {
    check_nonempty(data, "prior data")?;
    check_positive("sigma_max", sigma_max)?;
    check_positive("n", n as f64)?;
    let flat = data.flatten(1, -1).to_kind(Kind::Float);
    let mean = flat.mean_dim([0i64].as_slice(), true, Kind::Float);
    let var = if flat.size()[0] > 1 {
        flat.var_dim([0i64].as_slice(), true, true)
    } else {
        mean.zeros_like()
    };
    let std = (var + sigma_max * sigma_max).sqrt();
    let mut shape = vec![n];
    shape.extend_from_slice(&data.size()[1..]);
    let z = Tensor::randn([n, flat.size()[1]], (Kind::Float, data.device()));
    Ok((z * std + mean).view(shape.as_slice()))
}

/// Fresh noise `z ~ N(0, I)` of `x`'s shape, for [`annealed_step`].
pub fn standard_noise(x: &Tensor) -> Result<Tensor> {
    Ok(x.randn_like())
}

/// Tweedie's denoising step `x + σ² s(x, σ)` (the posterior mean `E[x₀ | x]` at noise σ).
pub fn denoise(x: Tensor, sigma: f64, oracle: &mut ScoreOracle) -> Result<Tensor> {
    let s = oracle.eval(&x, sigma, None)?;
    Ok(x + s * (sigma * sigma))
}

/// [`denoise`] when `enabled`, else `x` as it is: the last step of the samplers with a
/// `denoise` setting.
pub fn denoise_if(
    enabled: bool,
    x: Tensor,
    sigma: f64,
    oracle: &mut ScoreOracle,
) -> Result<Tensor> {
    if enabled {
        denoise(x, sigma, oracle)
    } else {
        Ok(x)
    }
}

/// Unadjusted Langevin dynamics at one noise level ([`crate::langevin::langevin`]'s chain).
#[derive(Debug, Clone, PartialEq)]
pub struct LangevinSampler(pub LangevinConfig);

impl Sampler for LangevinSampler {
    fn name(&self) -> String {
        format!("Langevin (ε = {})", self.0.eps)
    }
    fn visits(&self) -> Visits {
        Visits::Levels(vec![self.0.sigma])
    }
    fn start(&mut self) -> Result<()> {
        check_step_size(self.0.eps)?;
        if !(self.0.sigma.is_finite() && self.0.sigma >= 0.0) {
            return Err(Error::InvalidSigma(self.0.sigma));
        }
        Ok(())
    }
    fn done(&self, k: usize) -> bool {
        k >= self.0.n_steps
    }
    fn step(&mut self, _k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let (drift, noise) = self.0.convention.factors(self.0.eps);
        let s = oracle.eval(&x, self.0.sigma, Some(drift))?;
        let z = x.randn_like();
        Ok(x + s * drift + z * noise)
    }
}

/// Annealed Langevin dynamics ([`crate::langevin::annealed_langevin`]'s chain): `T` Langevin
/// steps at each level, largest first, with the step of [`AnnealedConfig`]'s schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnealedLangevinSampler {
    pub sigmas: Sigmas,
    pub config: AnnealedConfig,
}

impl Sampler for AnnealedLangevinSampler {
    fn precision(&self) -> Precision {
        self.config.precision
    }
    fn name(&self) -> String {
        format!(
            "annealed Langevin (T = {}, ε = {})",
            self.config.steps_per_level, self.config.eps
        )
    }
    fn visits(&self) -> Visits {
        Visits::Levels(self.sigmas.values().to_vec())
    }
    fn start(&mut self) -> Result<()> {
        check_step_size(self.config.eps).map(|_| ())
    }
    fn done(&self, k: usize) -> bool {
        k >= self.config.steps_per_level * self.sigmas.len()
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let i = k / self.config.steps_per_level;
        annealed_step(&self.sigmas, &self.config, i, &x, oracle, standard_noise)
    }
    /// The levels' copies of the particles need every step's evaluation: recorded runs stay
    /// eager.
    fn cuda_graph(&self) -> bool {
        self.config.cuda_graph && !self.config.record_levels
    }
    /// Every step of one level is the same work.
    fn graph_key(&self, k: usize) -> Option<usize> {
        Some(k / self.config.steps_per_level)
    }
    fn finish(&mut self, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        denoise_if(self.config.denoise, x, self.sigmas.min(), oracle)
    }
}

/// The reverse-diffusion predictor of the VE SDE (`score_sde`'s `ReverseDiffusionPredictor`),
/// from σ_1 down to σ_L: at level i, with g² = σ_i² − σ_{i+1}² (σ_{L+1} = 0),
/// `x ← x + g² s(x, σ_i) + g z`; the last step's noise is left out when `denoise` (the
/// reference code returns the mean).
#[derive(Debug, Clone, PartialEq)]
pub struct ReverseDiffusion {
    pub sigmas: Sigmas,
    pub denoise: bool,
}

/// σ_{i+1}, or 0 after the last level.
fn next_level(sigmas: &Sigmas, i: usize) -> f64 {
    sigmas.values().get(i + 1).copied().unwrap_or(0.0)
}

/// One reverse-diffusion step at level `i`; `last` leaves the noise out.
fn reverse_diffusion_step(
    sigmas: &Sigmas,
    i: usize,
    x: Tensor,
    leave_noise_out: bool,
    oracle: &mut ScoreOracle,
) -> Result<Tensor> {
    let sigma = sigmas.values()[i];
    let g2 = sigma * sigma - next_level(sigmas, i).powi(2);
    let s = oracle.eval(&x, sigma, None)?;
    let mean = x + s * g2;
    if leave_noise_out {
        Ok(mean)
    } else {
        let z = mean.randn_like();
        Ok(mean + z * g2.sqrt())
    }
}

impl Sampler for ReverseDiffusion {
    fn name(&self) -> String {
        "reverse diffusion".into()
    }
    fn visits(&self) -> Visits {
        Visits::Levels(self.sigmas.values().to_vec())
    }
    fn done(&self, k: usize) -> bool {
        k >= self.sigmas.len()
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let last = k + 1 == self.sigmas.len();
        reverse_diffusion_step(&self.sigmas, k, x, last && self.denoise, oracle)
    }
}

/// Predictor-corrector sampling (`score_sde`'s `pc_sampler` with `ReverseDiffusionPredictor` and
/// `LangevinCorrector`): at each level σ_i, `n_corrector` Langevin steps
/// `x ← x + ε s + √(2ε) z` whose ε makes the signal-to-noise ratio `‖ε s‖/‖√(2ε) z‖` equal to
/// `snr`, i.e. `ε = 2 (snr ‖z‖/‖s‖)²` (norms per sample, averaged over the batch), then the
/// reverse-diffusion predictor to σ_{i+1}.
///
/// The step grows as the score's mean norm shrinks: on a density that is flat over regions,
/// whose score is near zero inside them, snr 0.16 spreads the samples (the tests' checkerboard
/// toy: 2.42 times the energy distance's floor, against 1.36 without the corrector and 1.45 at
/// snr 0.05; README, "The 2D pipeline fitted to its data").
#[derive(Debug, Clone, PartialEq)]
pub struct PredictorCorrector {
    pub sigmas: Sigmas,
    /// Target signal-to-noise ratio of a corrector step (`score_sde`: 0.16 for images).
    pub snr: f64,
    /// Corrector steps per level.
    pub n_corrector: usize,
    pub denoise: bool,
}

impl PredictorCorrector {
    /// `score_sde`'s settings for the VE SDE: snr 0.16, one corrector step, denoised.
    pub fn new(sigmas: Sigmas) -> Self {
        PredictorCorrector {
            sigmas,
            snr: 0.16,
            n_corrector: 1,
            denoise: true,
        }
    }
}

/// Mean over the batch of the per-sample L2 norm.
fn mean_norm(x: &Tensor) -> f64 {
    x.flatten(1, -1)
        .norm_scalaropt_dim(2.0, [1i64].as_slice(), false)
        .mean(Kind::Float)
        .double_value(&[])
}

impl Sampler for PredictorCorrector {
    fn name(&self) -> String {
        format!("PC (snr {}, {} corrector)", self.snr, self.n_corrector)
    }
    fn visits(&self) -> Visits {
        Visits::Levels(self.sigmas.values().to_vec())
    }
    fn start(&mut self) -> Result<()> {
        check_positive("snr", self.snr).map(|_| ())
    }
    fn done(&self, k: usize) -> bool {
        k >= self.sigmas.len() * (self.n_corrector + 1)
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let per_level = self.n_corrector + 1;
        let (i, j) = (k / per_level, k % per_level);
        if j == self.n_corrector {
            let last = i + 1 == self.sigmas.len();
            return reverse_diffusion_step(&self.sigmas, i, x, last && self.denoise, oracle);
        }
        // The corrector's step size follows from the score, so the callback sees `None` here.
        let s = oracle.eval(&x, self.sigmas.values()[i], None)?;
        let z = x.randn_like();
        let eps = 2.0 * (self.snr * mean_norm(&z) / mean_norm(&s).max(f64::MIN_POSITIVE)).powi(2);
        Ok(x + s * eps + z * (2.0 * eps).sqrt())
    }
}

/// Fixed-step solvers of the probability-flow ODE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OdeMethod {
    /// First order: one evaluation per step.
    Euler,
    /// Second order (Heun's method, EDM's Algorithm 1): two evaluations per step.
    Heun,
}

/// One step of the probability-flow ODE from σ to `next` with slopes `d = −σ s(x, σ)`: Euler
/// `x + (next − σ) d`, or Heun, which averages `d` with the slope at the Euler point.
fn flow_step(
    method: OdeMethod,
    x: Tensor,
    sigma: f64,
    next: f64,
    oracle: &mut ScoreOracle,
) -> Result<Tensor> {
    let d = oracle.eval(&x, sigma, None)? * (-sigma);
    let euler = &x + &d * (next - sigma);
    match method {
        OdeMethod::Euler => Ok(euler),
        OdeMethod::Heun => {
            let d_next = oracle.eval(&euler, next, None)? * (-next);
            Ok(x + (d + d_next) * ((next - sigma) / 2.0))
        }
    }
}

/// The probability-flow ODE `dx/dσ = −σ s(x, σ)` integrated over the levels σ_1 > … > σ_L
/// (then to σ = 0 by Tweedie's step when `denoise`). With `d_i = −σ_i s(x_i, σ_i)`:
/// Euler `x_{i+1} = x_i + (σ_{i+1} − σ_i) d_i`; Heun corrects with the slope at the Euler
/// point, `x_{i+1} = x_i + (σ_{i+1} − σ_i)(d_i + d'_{i+1})/2` (Karras et al. 2022, Algorithm 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbabilityFlow {
    pub sigmas: Sigmas,
    pub method: OdeMethod,
    pub denoise: bool,
}

impl Sampler for ProbabilityFlow {
    fn name(&self) -> String {
        format!("probability flow ({:?})", self.method)
    }
    fn visits(&self) -> Visits {
        Visits::Levels(self.sigmas.values().to_vec())
    }
    fn done(&self, k: usize) -> bool {
        k + 1 >= self.sigmas.len()
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let (sigma, next) = (self.sigmas.values()[k], self.sigmas.values()[k + 1]);
        flow_step(self.method, x, sigma, next, oracle)
    }
    fn finish(&mut self, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        denoise_if(self.denoise, x, self.sigmas.min(), oracle)
    }
}

/// EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): Heun steps of the
/// probability-flow ODE between the levels, each after a little noise is added back. At level
/// σ_i (inside `[s_tmin, s_tmax]`) with `γ = min(s_churn/L, √2 − 1)`, the noise level is raised
/// to `σ̂ = σ_i (1 + γ)` by `x̂ = x + √(σ̂² − σ_i²) s_noise z`, then Heun goes from σ̂ to σ_{i+1}
/// (the slopes `d = −σ s(x, σ)`, as [`ProbabilityFlow`]). The added noise lets the chain correct
/// the errors the deterministic steps accumulate, as Langevin's does. With `s_churn = 0` it is
/// [`ProbabilityFlow`] with Heun; `denoise` ends at σ = 0 by Tweedie's step from σ_L. It visits
/// the σ̂'s between the levels, so it needs a network that takes σ as an input.
#[derive(Debug, Clone, PartialEq)]
pub struct EdmStochastic {
    /// The levels, largest first ([`Sigmas::karras`] in EDM).
    pub sigmas: Sigmas,
    /// Total churn over the levels (EDM's S_churn; 0 is deterministic).
    pub s_churn: f64,
    /// Noise is added only at levels within `[s_tmin, s_tmax]`.
    pub s_tmin: f64,
    pub s_tmax: f64,
    /// Scale of the added noise (EDM's S_noise, slightly above 1 there to offset denoisers
    /// that remove a little too much noise).
    pub s_noise: f64,
    pub denoise: bool,
    /// The precision the score is evaluated in ([`Sampler::precision`]); the update stays in
    /// the particles' dtype.
    pub precision: Precision,
}

impl EdmStochastic {
    /// Churn 40 at every level, `s_noise` = 1, denoised, float32 (EDM's ImageNet settings are
    /// S_churn 40, S_tmin 0.05, S_tmax 50, S_noise 1.003).
    pub fn new(sigmas: Sigmas) -> Self {
        EdmStochastic {
            sigmas,
            s_churn: 40.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
            denoise: true,
            precision: Precision::Float32,
        }
    }

    /// γ at level σ: `min(s_churn/L, √2 − 1)` inside `[s_tmin, s_tmax]`, else 0.
    fn gamma(&self, sigma: f64) -> f64 {
        if sigma >= self.s_tmin && sigma <= self.s_tmax {
            (self.s_churn / self.sigmas.len() as f64).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        }
    }
}

impl Sampler for EdmStochastic {
    fn name(&self) -> String {
        format!("EDM stochastic (churn {})", self.s_churn)
    }
    /// The levels themselves where no step adds noise; otherwise every σ up to the largest
    /// raised level `σ_i (1 + γ_i)` (the last level takes no step, only the denoising).
    fn visits(&self) -> Visits {
        let levels = self.sigmas.values();
        let steps = &levels[..levels.len() - 1];
        if steps.iter().all(|&s| self.gamma(s) == 0.0) {
            return Visits::Levels(levels.to_vec());
        }
        Visits::Continuous {
            max: steps
                .iter()
                .map(|&s| s * (1.0 + self.gamma(s)))
                .fold(self.sigmas.max(), f64::max),
            min: self.sigmas.min(),
        }
    }
    fn start(&mut self) -> Result<()> {
        crate::error::check_nonnegative("s_churn", self.s_churn)?;
        if self.s_tmin > self.s_tmax || self.s_tmin.is_nan() || self.s_tmax.is_nan() {
            return Err(Error::InvalidParameter {
                name: "s_tmin",
                value: format!("{} (s_tmax {})", self.s_tmin, self.s_tmax),
                why: "the churn range needs s_tmin <= s_tmax",
            });
        }
        crate::error::check_positive("s_noise", self.s_noise)?;
        Ok(())
    }
    fn done(&self, k: usize) -> bool {
        k + 1 >= self.sigmas.len()
    }
    fn step(&mut self, k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let (sigma, next) = (self.sigmas.values()[k], self.sigmas.values()[k + 1]);
        let hat = sigma * (1.0 + self.gamma(sigma));
        let x = if hat > sigma {
            let z = x.randn_like();
            x + z * ((hat * hat - sigma * sigma).sqrt() * self.s_noise)
        } else {
            x
        };
        flow_step(OdeMethod::Heun, x, hat, next, oracle)
    }
    fn finish(&mut self, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        denoise_if(self.denoise, x, self.sigmas.min(), oracle)
    }
    fn precision(&self) -> Precision {
        self.precision
    }
}

/// Tolerances of the adaptive solver: a step is accepted when the embedded error estimate,
/// scaled by `atol + rtol · |x|` element-wise, has a root mean square ≤ 1 (as scipy's `RK45`,
/// which `score_sde` uses with `rtol = atol = 1e-5`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tolerances {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Tolerances {
    /// `score_sde`'s `rtol = atol = 1e-5`.
    fn default() -> Self {
        Tolerances {
            rtol: 1e-5,
            atol: 1e-5,
        }
    }
}

/// Dormand–Prince 5(4) tableau (Dormand & Prince 1980; scipy's `RK45`).
const DP_C: [f64; 7] = [0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];
const DP_A: [[f64; 6]; 7] = [
    [0.0; 6],
    [0.2, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
        0.0,
    ],
    [
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// Fifth-order weights (the last row of `DP_A`, first-same-as-last) minus the fourth-order ones.
const DP_E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

/// The right-hand side `f(t, y)` of an ODE over a list of tensors.
pub type OdeRhs<'a> = dyn FnMut(f64, &[Tensor]) -> Result<Vec<Tensor>> + 'a;

/// An adaptive Dormand–Prince 5(4) integrator of `dy/dt = f(t, y)` from `t0` to `t1` for a
/// list of tensors (the state and, for the likelihood, its log-density change). Returns the
/// state at `t1` and the number of evaluations of `f`.
pub fn dormand_prince(
    f: &mut OdeRhs,
    t0: f64,
    t1: f64,
    y0: Vec<Tensor>,
    tol: Tolerances,
) -> Result<(Vec<Tensor>, usize)> {
    check_positive("rtol", tol.rtol)?;
    check_positive("atol", tol.atol)?;
    let span = t1 - t0;
    let direction = span.signum();
    let numel: i64 = y0.iter().map(|y| y.numel() as i64).sum();
    let mut t = t0;
    let mut y = y0;
    let mut evals = 0usize;
    let mut k1 = f(t, &y)?;
    evals += 1;
    // A first step of 1% of the span; the controller adapts it at once.
    let mut h = span.abs() / 100.0;
    let mut rejected_in_row = 0;
    while (t1 - t) * direction > 1e-12 * span.abs().max(1.0) {
        h = h.min((t1 - t).abs());
        let mut ks: Vec<Vec<Tensor>> = vec![k1.iter().map(Tensor::shallow_clone).collect()];
        for stage in 1..7 {
            let ys: Vec<Tensor> = (0..y.len())
                .map(|j| {
                    let mut acc = y[j].copy();
                    for (m, k) in ks.iter().enumerate() {
                        let a = DP_A[stage][m];
                        if a != 0.0 {
                            acc += &k[j] * (a * h * direction);
                        }
                    }
                    acc
                })
                .collect();
            if stage == 6 {
                // The fifth-order solution; its slope is the next step's k1.
                let k7 = f(t + h * direction, &ys)?;
                evals += 1;
                ks.push(k7);
                let mut sq = 0.0;
                for j in 0..y.len() {
                    let mut err = ks[0][j].zeros_like();
                    for (m, k) in ks.iter().enumerate() {
                        if DP_E[m] != 0.0 {
                            err += &k[j] * (DP_E[m] * h);
                        }
                    }
                    let scale = y[j].abs().maximum(&ys[j].abs()) * tol.rtol + tol.atol;
                    sq += (err / scale).square().sum(Kind::Double).double_value(&[]);
                }
                let norm = (sq / numel as f64).sqrt();
                if !norm.is_finite() {
                    return Err(Error::NonFiniteSamples { step: evals });
                }
                if norm <= 1.0 {
                    t += h * direction;
                    y = ys;
                    k1 = ks.pop().expect("seven stages");
                    rejected_in_row = 0;
                    let factor = if norm == 0.0 {
                        10.0
                    } else {
                        (0.9 * norm.powf(-0.2)).clamp(0.2, 10.0)
                    };
                    h *= factor;
                } else {
                    rejected_in_row += 1;
                    if rejected_in_row > 50 {
                        return Err(Error::InvalidParameter {
                            name: "tolerances",
                            value: format!("rtol {}, atol {}", tol.rtol, tol.atol),
                            why: "the adaptive solver rejected 50 steps in a row (step size underflow)",
                        });
                    }
                    h *= (0.9 * norm.powf(-0.2)).clamp(0.2, 1.0);
                }
                break;
            }
            ks.push(f(t + DP_C[stage] * h * direction, &ys)?);
            evals += 1;
        }
    }
    Ok((y, evals))
}

/// The probability-flow ODE solved adaptively in `t = ln σ` (`dx/dt = −σ² s(x, σ)`) from σ_max
/// to σ_min by [`dormand_prince`], then denoised to σ = 0 when `denoise`. Visits σ's between any
/// table of levels, so it needs a network that takes σ as an input.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveFlow {
    pub sigma_max: f64,
    pub sigma_min: f64,
    pub tolerances: Tolerances,
    pub denoise: bool,
}

impl AdaptiveFlow {
    /// From the largest to the smallest of `sigmas`, `score_sde`'s tolerances, denoised.
    pub fn new(sigmas: &Sigmas) -> Self {
        AdaptiveFlow {
            sigma_max: sigmas.max(),
            sigma_min: sigmas.min(),
            tolerances: Tolerances::default(),
            denoise: true,
        }
    }
}

impl Sampler for AdaptiveFlow {
    fn name(&self) -> String {
        format!(
            "probability flow (RK45, tol {:e})",
            self.tolerances.rtol.max(self.tolerances.atol)
        )
    }
    fn visits(&self) -> Visits {
        Visits::Continuous {
            max: self.sigma_max,
            min: self.sigma_min,
        }
    }
    fn start(&mut self) -> Result<()> {
        crate::error::check_sigma_range(self.sigma_min, self.sigma_max)
    }
    fn done(&self, k: usize) -> bool {
        k >= 1
    }
    /// The whole adaptive integration is one step (its evaluations reach the callback).
    fn step(&mut self, _k: usize, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        let mut f = |t: f64, y: &[Tensor]| -> Result<Vec<Tensor>> {
            let sigma = t.exp();
            Ok(vec![oracle.eval(&y[0], sigma, None)? * (-sigma * sigma)])
        };
        let (y, _) = dormand_prince(
            &mut f,
            self.sigma_max.ln(),
            self.sigma_min.ln(),
            vec![x],
            self.tolerances,
        )?;
        Ok(y.into_iter().next().expect("one state"))
    }
    fn finish(&mut self, x: Tensor, oracle: &mut ScoreOracle) -> Result<Tensor> {
        denoise_if(self.denoise, x, self.sigma_min, oracle)
    }
}

/// Per-level diagnostics of a run, as `ncsnv2`'s verbose annealed Langevin prints them: at each
/// noise level, the mean step size, the mean norm of the score, and the signal-to-noise ratio
/// of the Langevin updates `‖ε s‖ / ‖√(2ε) z‖ = √(ε/2) ‖s‖/‖z‖` (with `‖z‖ ≈ √D`). Collect it
/// through the callback of [`sample`]: `sample(…, &mut |e| diagnostics.record(e))`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LevelDiagnostics {
    /// One row per level visited, in the order visited.
    pub levels: Vec<LevelRow>,
}

/// One level of [`LevelDiagnostics`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LevelRow {
    /// The noise level.
    pub sigma: f64,
    /// Score evaluations at this level.
    pub evaluations: usize,
    /// Mean over the evaluations of the batch's mean score norm `‖s(x, σ)‖`.
    pub score_norm: f64,
    /// Langevin updates among them (those with a known step size).
    pub langevin_steps: usize,
    /// Mean step size ε (`Full` convention) of the Langevin updates; NaN when none.
    pub step_size: f64,
    /// Mean signal-to-noise ratio of the Langevin updates; NaN when none.
    pub snr: f64,
}

impl LevelDiagnostics {
    /// Records one evaluation (one device read: the score's norm).
    pub fn record(&mut self, e: &Evaluation) {
        let norm = e
            .score
            .flatten(1, -1)
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
        let score_norm = norm.mean(Kind::Float).double_value(&[]);
        let dims = e.x.size()[1..].iter().product::<i64>() as f64;
        let (step, snr) = match e.step_size {
            Some(eps) => (eps, (eps / 2.0).sqrt() * score_norm / dims.sqrt()),
            None => (f64::NAN, f64::NAN),
        };
        if self.levels.last().is_none_or(|r| r.sigma != e.sigma) {
            self.levels.push(LevelRow {
                sigma: e.sigma,
                evaluations: 0,
                score_norm: 0.0,
                langevin_steps: 0,
                step_size: f64::NAN,
                snr: f64::NAN,
            });
        }
        let row = self.levels.last_mut().expect("a row");
        let running = |mean: f64, count: usize, new: f64| {
            if count == 0 {
                new
            } else {
                (mean * count as f64 + new) / (count + 1) as f64
            }
        };
        row.score_norm = running(row.score_norm, row.evaluations, score_norm);
        row.evaluations += 1;
        if !step.is_nan() {
            row.step_size = running(row.step_size, row.langevin_steps, step);
            row.snr = running(row.snr, row.langevin_steps, snr);
            row.langevin_steps += 1;
        }
    }
}

impl LevelDiagnostics {
    /// Three panels against log₁₀ σ: log₁₀ of the step size, log₁₀ of the mean score norm,
    /// and the signal-to-noise ratio (levels without Langevin updates are left out of the
    /// first and the last).
    pub fn figure(&self) -> Result<crate::plots::Figure> {
        let curve = |title: &str, f: &dyn Fn(&LevelRow) -> f64| crate::plots::Curves {
            title: title.into(),
            series: vec![(
                title.into(),
                self.levels
                    .iter()
                    .map(|r| (r.sigma.log10(), f(r)))
                    .filter(|p| p.1.is_finite())
                    .collect(),
            )],
        };
        let step = curve("log10 step size", &|r| r.step_size.log10());
        let norm = curve("log10 mean score norm", &|r| r.score_norm.log10());
        let snr = curve("signal-to-noise ratio", &|r| r.snr);
        crate::plots::row(&[&step, &norm, &snr])
    }
}
