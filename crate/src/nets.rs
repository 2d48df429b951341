//! Score networks.
//!
//! Parameter names mirror the PyTorch modules of the seeds (`nn.Sequential` numbering), so
//! weights can move between the two through safetensors.

use crate::error::{Error, Result};
use crate::score::Score;
use tch::nn::{self, Module};
use tch::Tensor;

/// Element-wise non-linearities used by the seeds' networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// `max(0, x)` (seed 001's MLP).
    #[default]
    Relu,
    /// `log(1 + eˣ)`, smooth, so the learned field is smooth too.
    Softplus,
    /// `x` for x > 0, `eˣ - 1` otherwise (seed 001's U-Net).
    Elu,
    /// `x · sigmoid(x)`.
    Silu,
    /// `tanh(x)`.
    Tanh,
}

impl Activation {
    /// Applies the non-linearity.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Softplus => x.softplus(),
            Activation::Elu => x.elu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// Configuration of [`Mlp`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// Input (and output) dimension.
    pub dim: i64,
    /// Widths of the hidden layers, in order.
    pub hidden: Vec<i64>,
    /// Non-linearity after every hidden layer.
    pub activation: Activation,
}

impl Default for MlpConfig {
    /// Seed 001's score network: 2 → 32 → 32 → 32 → 2 with ReLU.
    fn default() -> Self {
        MlpConfig {
            dim: 2,
            hidden: vec![32, 32, 32],
            activation: Activation::Relu,
        }
    }
}

impl MlpConfig {
    /// Seed 001's donut network (the default).
    pub fn donut() -> Self {
        Self::default()
    }
}

/// A multilayer perceptron `ℝᵈ → ℝᵈ` used as a score `s_θ(x)` of one noise level (σ is
/// ignored). Layers are named `0`, `2`, `4`, … as in PyTorch's
/// `nn.Sequential(Linear, act, Linear, act, …, Linear)`.
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    activation: Activation,
    config: MlpConfig,
}

impl Mlp {
    /// Creates the network's parameters under `vs`.
    pub fn new(vs: &nn::Path, config: &MlpConfig) -> Result<Self> {
        if config.dim <= 0 {
            return Err(Error::InvalidParameter {
                name: "dim",
                value: config.dim.to_string(),
                why: "the input dimension must be > 0",
            });
        }
        if let Some(w) = config.hidden.iter().find(|w| **w <= 0) {
            return Err(Error::InvalidParameter {
                name: "hidden width",
                value: w.to_string(),
                why: "hidden layer widths must be > 0",
            });
        }
        let widths: Vec<i64> = std::iter::once(config.dim)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(config.dim))
            .collect();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(vs / (2 * i).to_string(), w[0], w[1], Default::default()))
            .collect();
        Ok(Mlp {
            layers,
            activation: config.activation,
            config: config.clone(),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        self.layers
            .iter()
            .enumerate()
            .fold(x.shallow_clone(), |h, (i, layer)| {
                let h = layer.forward(&h);
                if i < last {
                    self.activation.apply(&h)
                } else {
                    h
                }
            })
    }
}

impl Score for Mlp {
    fn forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Tensor {
        self.forward(x)
    }
}
