//! # sgm — score-based generative models on libtorch
//!
//! A toolkit for the score-based models of the course seeds: score networks, denoising score
//! matching, Langevin sampling and the figures that show them, for Rust notebooks (evcxr) and
//! programs. One module per idea:
//!
//! | module | idea |
//! |---|---|
//! | [`device`](mod@device) | the GPU when present (loads libtorch's CUDA backend), else the CPU |
//! | [`score`] | the score abstraction `s(x, σ) ≈ ∇ₓ log p_σ(x)`; autograd scores |
//! | [`data`] | donut, Gaussian mixtures, two moons; splits; array interop |
//! | [`nets`] | score networks |
//! | [`losses`] | denoising score matching |
//! | [`langevin`] | Langevin dynamics (and the step-size conventions of the seeds) |
//! | [`likelihood`] | log-likelihood through the probability-flow ODE (nats per point, bits per dimension) |
//! | [`samplers`] | samplers as a family: annealed Langevin, reverse diffusion, predictor-corrector, probability-flow ODE, EDM's stochastic sampler; one driver with a callback |
//! | [`training`] | Adam training loop with train/test loss per epoch |
//! | [`precision`] | float32 or bfloat16 autocast for a training step |
//! | [`plots`] | densities, samples, score fields, loss curves as PNG figures |
//! | [`metrics`] | sample quality against exact laws and held-out data (energy, Fréchet LeNet distance, …) |
//! | [`assignment`] | homework: solution regions, the student release, grading notebooks, reports |
//! | [`variations`] | inpainting, interpolation and variations of real samples (annealed Langevin with one change each) |
//! | [`experiment`] | a whole run (data, σ's, network, loss, training, sampler) with presets |
//! | [`budget`] | full vs CI run sizes for notebooks |
//! | [`notebook`] | evcxr integration: every failing cell reported in its own outputs |
//!
//! The crate re-exports [`tch`], so a notebook needs a single `:dep sgm = { path = "../crate" }`.

pub mod assignment;
pub mod budget;
pub mod checkpoint;
pub mod cuda_graph;
pub mod data;
pub mod device;
pub mod error;
pub mod experiment;
pub mod fused;
pub mod images;
pub mod langevin;
pub mod likelihood;
pub mod losses;
pub mod metrics;
pub mod nets;
pub mod noise;
pub mod notebook;
pub mod plots;
pub mod precision;
pub mod samplers;
pub mod score;
pub mod training;
pub mod variations;

pub use error::{Error, Result};
pub use serde_json;
pub use tch;

pub use budget::Budget;
pub use device::device;
pub use score::Score;

/// Everything a notebook usually needs, in one `use sgm::prelude::*;`.
pub mod prelude {
    pub use crate::budget::Budget;
    pub use crate::data::{self, Density, Donut, GaussianMixture};
    pub use crate::device::{self, device};
    pub use crate::error::{Error, Result};
    pub use crate::langevin::{self, langevin, LangevinConfig, StepConvention};
    pub use crate::losses::{self, dsm_loss};
    pub use crate::metrics::{self, Summary};
    pub use crate::nets::{self, Activation, Mlp, MlpConfig};
    pub use crate::plots::{self, Curves, DensityMap, Histogram, Panel, Scatter, VectorField};
    pub use crate::score::{self, AutogradScore, GradLogDensity, Score};
    pub use crate::training::{self, train, TrainConfig};
    pub use tch::{self, nn, Device, Kind, Tensor};
}
