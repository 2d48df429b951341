//! Score networks.
//!
//! Parameter names mirror the PyTorch modules of the seeds (`nn.Sequential` numbering), so
//! weights can move between the two through safetensors.
//!
//! # Checked input
//!
//! Every network checks its input before running ([`Score::try_forward_score`], which
//! [`Score::score`] calls) and answers with a typed error instead of a libtorch panic or an empty
//! tensor:
//!
//! * the shape: [`Error::Shape`] naming the expected and the received shape (`[n, dim]` for the
//!   MLPs, `[n, C, H, W]` with the network's channel count for the image networks, H and W
//!   multiples of 4 for the U-Nets), and `sigma` of shape `[n]`;
//! * the device: [`Error::DeviceMismatch`] when `x` is not where the parameters are (or `sigma`
//!   not where `x` is);
//! * σ > 0 and finite ([`Error::InvalidSigma`], through [`check_sigma_tensor`]) for the
//!   noise-conditional networks: those that divide by σ, take `log σ`, look σ up among their
//!   levels or read it as an input channel. [`Mlp`] (one noise level, σ ignored) accepts any σ.
//!
//! The first layer that touches the input runs through tch's fallible `f_` calls, so what
//! libtorch still refuses (a `Double` input for `Float` weights, out of memory) is
//! [`Error::TorchOp`] naming the network, the layer and the input.
//!
//! The unchecked [`Score::forward_score`] of a network panics with the same error's message.

use crate::error::{check_device, check_sigma_tensor, torch_op, Error, Result};
use crate::fused::channels_last;
use crate::noise::Sigmas;
use crate::score::{check_sigma_rows, per_row, Score};
use tch::nn::{self, Module};
use tch::{Device, Tensor};

/// `Error::Shape` for `x` unless `ok`.
fn check_shape(
    what: &'static str,
    x: &Tensor,
    ok: bool,
    expected: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected: expected(),
            got: x.size(),
        })
    }
}

/// Rows per evaluation of an image network on the CPU. A sampler's whole batch (1,000 digits)
/// evaluated at once keeps every activation map out of the cores' caches (16 channels of 28×28
/// float32 are 50 KB an image); in chunks of this many rows each row's arithmetic is the same and
/// the activations stay in cache. On a GPU the batch goes at once.
pub const CPU_ROWS_PER_EVALUATION: i64 = 128;

/// `f(start, chunk)` over consecutive chunks of `rows` rows of `x` (the last one shorter), `start`
/// the chunk's first row, the results concatenated along the rows; `what` names the operation in
/// the error of that concatenation.
pub(crate) fn by_rows(
    what: &str,
    x: &Tensor,
    rows: i64,
    f: impl Fn(i64, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let parts = x
        .split(rows, 0)
        .iter()
        .enumerate()
        .map(|(i, chunk)| f(i as i64 * rows, chunk))
        .collect::<Result<Vec<_>>>()?;
    Tensor::f_cat(&parts, 0).map_err(torch_op(format!(
        "{what}: joining the chunks of {rows} rows"
    )))
}

/// `f(x, sigma)` over chunks of [`CPU_ROWS_PER_EVALUATION`] rows ([`by_rows`]) where `x` is on
/// the CPU and has more rows than that; `f(x, sigma)` at once otherwise. The input is checked
/// before (once, for the whole batch).
fn in_cpu_chunks(
    what: &str,
    x: &Tensor,
    sigma: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if x.device() != Device::Cpu || x.size()[0] <= CPU_ROWS_PER_EVALUATION {
        return f(x, sigma);
    }
    by_rows(what, x, CPU_ROWS_PER_EVALUATION, |start, chunk| {
        f(chunk, &sigma.narrow(0, start, chunk.size()[0]))
    })
}

/// The checks of `sigma` against the input `x` of a network: one level per row (`[n]`), on
/// `x`'s device, and, when the network is noise-conditional, every level finite and > 0.
fn check_sigma_input(
    what: &'static str,
    sigma: &Tensor,
    x: &Tensor,
    conditional: bool,
) -> Result<()> {
    check_sigma_rows(what, sigma, x)?;
    if conditional {
        check_sigma_tensor(sigma)?;
    }
    Ok(())
}

/// What a libtorch error in `layer` of `what` is about: the layer and the input.
fn op_name(what: &str, layer: &str, x: &Tensor) -> String {
    format!(
        "{what}, {layer}, on x of shape {:?}, kind {:?}, device {}",
        x.size(),
        x.kind(),
        crate::device::name(x.device())
    )
}

/// A linear layer through the fallible call.
fn f_linear(what: &str, layer: &str, l: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    x.f_linear(&l.ws, l.bs.as_ref())
        .map_err(torch_op(op_name(what, layer, x)))
}

/// A stride-1 convolution built by [`conv`] (padding `k/2`) through the fallible call.
fn f_conv(what: &str, layer: &str, c: &nn::Conv2D, x: &Tensor) -> Result<Tensor> {
    let k = c.ws.size()[2];
    x.f_conv2d(&c.ws, c.bs.as_ref(), [1, 1], [k / 2, k / 2], [1, 1], 1)
        .map_err(torch_op(op_name(what, layer, x)))
}

/// The panic of a network's unchecked `forward_score` on input its checked one refuses.
pub(crate) fn unchecked(r: Result<Tensor>) -> Tensor {
    r.unwrap_or_else(|e| panic!("{e} (Score::score returns this as an error)"))
}

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
        Self::with_io(vs, config.dim, config.dim, config)
    }

    /// An MLP `ℝ^input → ℝ^output` with the hidden layers of `config`.
    pub fn with_io(vs: &nn::Path, input: i64, output: i64, config: &MlpConfig) -> Result<Self> {
        if config.dim <= 0 || input <= 0 || output <= 0 {
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
        let widths: Vec<i64> = std::iter::once(input)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(output))
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

    /// Width of the input (`config.dim`, or `input` of [`Mlp::with_io`]).
    pub fn input_dim(&self) -> i64 {
        self.layers[0].ws.size()[1]
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.layers[0].ws.device()
    }

    /// The forward pass with its input checked: `x` of shape `[n, input_dim]` on the
    /// parameters' device (`what` names the network in errors).
    fn try_forward(&self, what: &'static str, x: &Tensor) -> Result<Tensor> {
        let d = self.input_dim();
        check_shape(what, x, x.dim() == 2 && x.size()[1] == d, || {
            format!("[n, {d}]")
        })?;
        check_device(what, x, "x", self.device(), "the parameters")?;
        let first = f_linear(what, "layer 0", &self.layers[0], x)?;
        Ok(self.rest(first))
    }

    /// Everything after the first linear layer: (activation, linear) for each further layer, so
    /// that the last linear layer's output is returned as it is.
    fn rest(&self, first: Tensor) -> Tensor {
        self.layers[1..]
            .iter()
            .fold(first, |h, layer| self.activation.apply(&h).apply(layer))
    }
}

impl Module for Mlp {
    /// The forward pass; panics with [`Error::Shape`]'s message on input of the wrong shape
    /// (the [`Score`] methods return it).
    fn forward(&self, x: &Tensor) -> Tensor {
        unchecked(self.try_forward("Mlp", x))
    }
}

/// σ is ignored: an `Mlp` models one noise level, and accepts σ = 0.
impl Score for Mlp {
    fn device(&self) -> Option<Device> {
        Some(Mlp::device(self))
    }

    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        unchecked(self.try_forward_score(x, sigma))
    }

    fn try_forward_score(&self, x: &Tensor, _sigma: &Tensor) -> Result<Tensor> {
        self.try_forward("Mlp", x)
    }
}

fn positive(name: &'static str, v: i64) -> Result<()> {
    if v > 0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value: v.to_string(),
            why: "must be > 0",
        })
    }
}

/// Configuration of [`ConditionedMlp`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConditionedMlpConfig {
    /// Data dimension.
    pub dim: i64,
    /// Hidden widths.
    pub hidden: Vec<i64>,
    /// Non-linearity.
    pub activation: Activation,
    /// Append `log σ` to the input, so the network sees the noise level.
    pub sigma_input: bool,
    /// Divide the output by σ (NCSNv2 technique 3).
    pub divide_by_sigma: bool,
}

impl Default for ConditionedMlpConfig {
    /// The moons preset.
    fn default() -> Self {
        Self::moons()
    }
}

impl ConditionedMlpConfig {
    /// Two moons: 2 (+ log σ) → 128 → 128 → 128 → 2, softplus, output / σ.
    pub fn moons() -> Self {
        ConditionedMlpConfig {
            dim: 2,
            hidden: vec![128, 128, 128],
            activation: Activation::Softplus,
            sigma_input: true,
            divide_by_sigma: true,
        }
    }

    /// Benchmark workload W1: 2 → 128 → 128 → 2, softplus, conditioned only by dividing the
    /// output by σ.
    pub fn w1() -> Self {
        ConditionedMlpConfig {
            dim: 2,
            hidden: vec![128, 128],
            activation: Activation::Softplus,
            sigma_input: false,
            divide_by_sigma: true,
        }
    }
}

/// A noise-conditional MLP for 2D (or any flat) data: `s(x, σ) = f([x, log σ]) / σ` (the
/// `log σ` input and the division are each optional). Layers are named as in
/// `nn.Sequential`: `0`, `2`, ….
#[derive(Debug)]
pub struct ConditionedMlp {
    mlp: Mlp,
    config: ConditionedMlpConfig,
}

impl ConditionedMlp {
    /// Creates the network's parameters under `vs`.
    pub fn new(vs: &nn::Path, config: &ConditionedMlpConfig) -> Result<Self> {
        positive("dim", config.dim)?;
        let extra = i64::from(config.sigma_input);
        let inner = MlpConfig {
            dim: config.dim,
            hidden: config.hidden.clone(),
            activation: config.activation,
        };
        let mlp = Mlp::with_io(vs, config.dim + extra, config.dim, &inner)?;
        Ok(ConditionedMlp {
            mlp,
            config: config.clone(),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ConditionedMlpConfig {
        &self.config
    }
}

/// Noise-conditional when it reads `log σ` or divides by σ: then σ must be finite and > 0.
/// With both off it ignores σ, as [`Mlp`].
impl Score for ConditionedMlp {
    fn device(&self) -> Option<Device> {
        Some(self.mlp.device())
    }

    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        unchecked(self.try_forward_score(x, sigma))
    }

    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        const WHAT: &str = "ConditionedMlp";
        let d = self.config.dim;
        check_shape(WHAT, x, x.dim() == 2 && x.size()[1] == d, || {
            format!("[n, {d}]")
        })?;
        check_device(WHAT, x, "x", self.mlp.device(), "the parameters")?;
        let conditional = self.config.sigma_input || self.config.divide_by_sigma;
        check_sigma_input(WHAT, sigma, x, conditional)?;
        let s = sigma.to_kind(tch::Kind::Float).unsqueeze(1);
        let input = if self.config.sigma_input {
            Tensor::f_cat(&[x.shallow_clone(), s.log()], 1).map_err(torch_op(op_name(
                WHAT,
                "input [x, log sigma]",
                x,
            )))?
        } else {
            x.shallow_clone()
        };
        let out = self.mlp.try_forward(WHAT, &input)?;
        Ok(if self.config.divide_by_sigma {
            out / s
        } else {
            out
        })
    }
}

fn conv(vs: nn::Path, c_in: i64, c_out: i64, k: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        padding: k / 2,
        ..Default::default()
    };
    nn::conv2d(vs, c_in, c_out, k, cfg)
}

/// Configuration of [`ConditionedSimpleResnet`] (homework 5, Task 3).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResnetConfig {
    /// Input channels.
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
    /// Channels of every block.
    pub n_filters: i64,
    /// Number of conditioned residual blocks.
    pub n_blocks: i64,
    /// The noise levels; the network embeds the index of σ among them (`num_embeddings = L`).
    pub sigmas: Sigmas,
    /// Divide the output by σ (NCSNv2 technique 3). Off in the homework's network; on, the
    /// score's 1/σ scale is built in and training reaches usable samples in far fewer steps.
    #[serde(default)]
    pub divide_by_sigma: bool,
}

impl ResnetConfig {
    /// The benchmark's and a GPU's size: 64 filters, 4 blocks, 1 channel in and out.
    pub fn homework(sigmas: Sigmas) -> Self {
        ResnetConfig {
            in_channels: 1,
            out_channels: 1,
            n_filters: 64,
            n_blocks: 4,
            sigmas,
            divide_by_sigma: false,
        }
    }
}

/// Homework 5's `ConditionedSimpleResnet`, with its exact structure and parameter names:
///
/// * `first_block`: 3×3 conv (`in → F`), ReLU;
/// * `layers.i`: `x + block(x + embedding(index))`, block = 1×1 conv, ReLU, 3×3 conv, ReLU,
///   1×1 conv (`F → F`), embedding of the noise level's index into `F` values added per
///   channel;
/// * `last_block`: ReLU, 3×3 conv (`F → out`).
///
/// As a [`Score`] it reads the index of each σ among `config.sigmas` (descending: index 0 is
/// the largest level, as the homework's sorted list); its output is the score itself.
#[derive(Debug)]
pub struct ConditionedSimpleResnet {
    first: nn::Conv2D,
    blocks: Vec<(nn::Conv2D, nn::Conv2D, nn::Conv2D, nn::Embedding)>,
    last: nn::Conv2D,
    config: ResnetConfig,
}

impl ConditionedSimpleResnet {
    /// Creates the network's parameters under `vs`.
    pub fn new(vs: &nn::Path, config: &ResnetConfig) -> Result<Self> {
        positive("in_channels", config.in_channels)?;
        positive("out_channels", config.out_channels)?;
        positive("n_filters", config.n_filters)?;
        positive("n_blocks", config.n_blocks)?;
        let f = config.n_filters;
        let first = conv(vs / "first_block" / "0", config.in_channels, f, 3);
        let blocks = (0..config.n_blocks)
            .map(|i| {
                let layer = vs / "layers" / i.to_string();
                let block = &layer / "block";
                (
                    conv(&block / "0", f, f, 1),
                    conv(&block / "2", f, f, 3),
                    conv(&block / "4", f, f, 1),
                    nn::embedding(
                        &layer / "embedding",
                        config.sigmas.len() as i64,
                        f,
                        Default::default(),
                    ),
                )
            })
            .collect();
        let last = conv(vs / "last_block" / "1", f, config.out_channels, 3);
        Ok(ConditionedSimpleResnet {
            first,
            blocks,
            last,
            config: config.clone(),
        })
    }

    /// The homework's `forward(x, y)`: `x` is `[n, in_channels, H, W]`, `y` holds
    /// noise-level indices (`[n]` int64, each in `0..L`), both on the parameters' device.
    /// Anything else is a typed error naming the expected and the received value.
    pub fn forward_index(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        const WHAT: &str = "ConditionedSimpleResnet";
        let c = self.config.in_channels;
        check_shape(WHAT, x, x.dim() == 4 && x.size()[1] == c, || {
            format!("[n, {c}, H, W]")
        })?;
        check_device(WHAT, x, "x", self.first.ws.device(), "the parameters")?;
        let n = x.size()[0];
        if y.size() != [n] || y.kind() != tch::Kind::Int64 {
            return Err(Error::Shape {
                what: "ConditionedSimpleResnet noise-level indices y",
                expected: format!("[{n}] int64 (one index per row of x)"),
                got: y.size(),
            });
        }
        check_device(WHAT, y, "y", x.device(), "x")?;
        let levels = self.config.sigmas.len() as i64;
        if n > 0 {
            let (lo, hi) = (y.min().int64_value(&[]), y.max().int64_value(&[]));
            if lo < 0 || hi >= levels {
                return Err(Error::InvalidParameter {
                    name: "noise-level index y",
                    value: if lo < 0 { lo } else { hi }.to_string(),
                    why: "must be in 0..L, L the number of noise levels",
                });
            }
        }
        self.run(x, y)
    }

    /// The forward pass of checked input: the first convolution through the fallible call,
    /// then the rest.
    fn run(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let mut h = f_conv("ConditionedSimpleResnet", "first_block.0", &self.first, x)?.relu();
        let f = self.config.n_filters;
        for (c1, c2, c3, emb) in &self.blocks {
            let e = y.apply(emb).view([-1, f, 1, 1]);
            let inner = (&h + e).apply(c1).relu().apply(c2).relu().apply(c3);
            // Not `h += inner`: in place would overwrite the ReLU output autograd keeps.
            #[allow(clippy::assign_op_pattern)]
            {
                h = h + inner;
            }
        }
        Ok(h.relu().apply(&self.last))
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ResnetConfig {
        &self.config
    }
}

/// Noise-conditional: σ (finite, > 0) is looked up among `config.sigmas`.
impl Score for ConditionedSimpleResnet {
    fn device(&self) -> Option<Device> {
        Some(self.first.ws.device())
    }

    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        unchecked(self.try_forward_score(x, sigma))
    }

    fn trained_levels(&self) -> Option<&Sigmas> {
        Some(&self.config.sigmas)
    }

    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        const WHAT: &str = "ConditionedSimpleResnet";
        let (c_in, c_out) = (self.config.in_channels, self.config.out_channels);
        if c_in != c_out {
            return Err(Error::InvalidParameter {
                name: "out_channels",
                value: c_out.to_string(),
                why: "a score has the input's shape: out_channels must equal in_channels",
            });
        }
        check_shape(WHAT, x, x.dim() == 4 && x.size()[1] == c_in, || {
            format!("[n, {c_in}, H, W]")
        })?;
        check_device(WHAT, x, "x", self.first.ws.device(), "the parameters")?;
        // σ > 0 is checked by `index_of` (one read back from the device, not two).
        check_sigma_input(WHAT, sigma, x, false)?;
        in_cpu_chunks(WHAT, x, sigma, |x, sigma| {
            // Indices of levels are in 0..L: no need for forward_index's range check.
            let out = self.run(x, &self.config.sigmas.index_of(sigma)?)?;
            Ok(if self.config.divide_by_sigma {
                out / per_row(sigma, x)
            } else {
                out
            })
        })
    }
}

/// Configuration of the U-Nets ([`BlogUnet`], [`Ncsnv2Unet`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnetConfig {
    /// Image channels.
    pub channels: i64,
    /// Filters of the first level (doubled at each of the two downsamplings).
    pub start_filters: i64,
    /// Groups of every GroupNorm ([`Ncsnv2Unet`] only).
    pub groups: i64,
    /// [`BlogUnet`] only: divide the output by σ (NCSNv2 technique 3), so the network learns
    /// `σ s(x, σ)`, of unit scale at every level, instead of the score itself.
    #[serde(default)]
    pub divide_by_sigma: bool,
    /// [`BlogUnet`] only: EDM preconditioning (Karras et al., 2022) for data of standard
    /// deviation `σ_data`. The network `F` sees `x / √(σ² + σ_data²)` (unit scale at every
    /// level) and the score is
    /// `s(x, σ) = −x / (σ² + σ_data²) + σ_data F / (σ √(σ² + σ_data²))`:
    /// the score of the Gaussian `N(0, (σ² + σ_data²) I)`, exact for large σ, plus a learned
    /// correction whose DSM target has unit scale (EDM's `c_in`, `c_skip`, `c_out`, written as
    /// a score). Excludes `divide_by_sigma`.
    #[serde(default)]
    pub sigma_data: Option<f64>,
    /// [`BlogUnet`] only: what fills the σ input channel (σ itself in the blog; left out of the
    /// JSON then, `checkpoint::is_default`).
    #[serde(default, skip_serializing_if = "crate::checkpoint::is_default")]
    pub noise_input: NoiseInput,
    /// [`BlogUnet`] only: the noise level also enters every layer, as in DDPM's and EDM's
    /// U-Nets (`NoiseEmbedding`): the noise input (`noise_input`) through a sinusoidal
    /// embedding and a two-layer MLP, projected to a per-channel bias added after each 3×3
    /// convolution. Without it σ is seen only by the first convolution, through its input
    /// channel. Off in the JSON of configurations saved before it existed.
    #[serde(default, skip_serializing_if = "crate::checkpoint::is_default")]
    pub noise_embedding: bool,
}

/// What a network that takes σ as an input channel sees of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NoiseInput {
    /// σ itself (seed 001's blog U-Net). Small levels are then nearly the same input:
    /// σ = 0.02 and σ = 0.05 differ by 0.03 where σ spans 0.02 to 2.
    #[default]
    Sigma,
    /// EDM's `c_noise(σ) = ln(σ) / 4` (Karras et al., 2022, Table 1): every ratio between two
    /// levels is the same step of input, ln(100)/4 ≈ 1.15 across 0.02 to 2.
    LogSigmaOver4,
}

impl NoiseInput {
    /// The input channel's value for the per-row σ `sigma` (shape `[n, 1, 1, 1]`).
    fn of(self, sigma: &Tensor) -> Tensor {
        match self {
            NoiseInput::Sigma => sigma.shallow_clone(),
            NoiseInput::LogSigmaOver4 => sigma.log() / 4.0,
        }
    }
}

impl Default for UnetConfig {
    /// Seed 001: one channel, 16 start filters (and 4 groups for the NCSNv2 variant).
    fn default() -> Self {
        UnetConfig {
            channels: 1,
            start_filters: 16,
            groups: 4,
            divide_by_sigma: false,
            sigma_data: None,
            noise_input: NoiseInput::Sigma,
            noise_embedding: false,
        }
    }
}

/// The convolutions of the small U-Net of seed 001 (28×28 → 14×14 → 7×7 and back, skip
/// concatenations), shared by both U-Nets.
#[derive(Debug)]
struct UnetConvs {
    down1: [nn::Conv2D; 2],
    down2: [nn::Conv2D; 2],
    middle: [nn::Conv2D; 2],
    up2: nn::ConvTranspose2D,
    dec2: [nn::Conv2D; 2],
    up1: nn::ConvTranspose2D,
    dec1: [nn::Conv2D; 2],
    out: nn::Conv2D,
}

impl UnetConvs {
    fn new(vs: &nn::Path, c_in: i64, c_out: i64, f: i64) -> Self {
        let up = |name: &str, c_in, c_out| {
            let cfg = nn::ConvTransposeConfig {
                stride: 2,
                padding: 1,
                output_padding: 1,
                ..Default::default()
            };
            nn::conv_transpose2d(vs / name, c_in, c_out, 3, cfg)
        };
        UnetConvs {
            down1: [
                conv(vs / "conv1a", c_in, f, 3),
                conv(vs / "conv1b", f, f, 3),
            ],
            down2: [
                conv(vs / "conv2a", f, 2 * f, 3),
                conv(vs / "conv2b", 2 * f, 2 * f, 3),
            ],
            middle: [
                conv(vs / "convma", 2 * f, 4 * f, 3),
                conv(vs / "convmb", 4 * f, 4 * f, 3),
            ],
            up2: up("deconv2", 4 * f, 2 * f),
            dec2: [
                conv(vs / "uconv2a", 4 * f, 2 * f, 3),
                conv(vs / "uconv2b", 2 * f, 2 * f, 3),
            ],
            up1: up("deconv1", 2 * f, f),
            dec1: [
                conv(vs / "uconv1a", 2 * f, f, 3),
                conv(vs / "uconv1b", f, f, 3),
            ],
            out: conv(vs / "out", f, c_out, 1),
        }
    }

    /// Device of the parameters.
    fn device(&self) -> Device {
        self.out.ws.device()
    }

    /// Channels of the 3×3 convolutions' outputs, in the order `forward`'s `act` sees them,
    /// for `f` start filters.
    fn widths(f: i64) -> [i64; 10] {
        [f, f, 2 * f, 2 * f, 4 * f, 4 * f, 2 * f, 2 * f, f, f]
    }

    /// The forward pass of checked input (`what` names the network in errors), with
    /// `act(i, h)` applied after the i-th 3×3 convolution (ELU, or GroupNorm then ELU). The
    /// first convolution runs through the fallible call.
    fn forward(
        &self,
        what: &str,
        x: &Tensor,
        act: impl Fn(usize, Tensor) -> Tensor,
    ) -> Result<Tensor> {
        // `pair(i, convs, h)`, h the output of convs[0]: act i, convs[1], act i + 1.
        let pair = |first: usize, convs: &[nn::Conv2D; 2], h: Tensor| {
            act(first + 1, act(first, h).apply(&convs[1]))
        };
        // Channels-last throughout (`fused::channels_last`): the notebook's bf16 training runs
        // about 10% faster on the CPU (oneDNN); float32 about as fast. Not in the ResNet, whose
        // float32 training it slowed by about 20% (measured with `sgm train`, 2 cores).
        let x = channels_last(x)?;
        let c1 = pair(0, &self.down1, f_conv(what, "conv1a", &self.down1[0], &x)?);
        let c2 = pair(
            2,
            &self.down2,
            c1.avg_pool2d_default(2).apply(&self.down2[0]),
        );
        let m = pair(
            4,
            &self.middle,
            c2.avg_pool2d_default(2).apply(&self.middle[0]),
        );
        let up2 = Tensor::cat(&[m.apply(&self.up2), c2], 1);
        let u2 = pair(6, &self.dec2, up2.apply(&self.dec2[0]));
        let up1 = Tensor::cat(&[u2.apply(&self.up1), c1], 1);
        let u1 = pair(8, &self.dec1, up1.apply(&self.dec1[0]));
        Ok(u1.apply(&self.out))
    }
}

/// Checks a U-Net's input: `[n, channels, H, W]` with H and W positive multiples of 4 (two
/// 2×2 poolings and two ×2 upsamplings must give H and W back), on the parameters' device.
fn check_unet_input(what: &'static str, x: &Tensor, channels: i64, device: Device) -> Result<()> {
    let s = x.size();
    let side_ok = |v: i64| v > 0 && v % 4 == 0;
    check_shape(
        what,
        x,
        s.len() == 4 && s[1] == channels && side_ok(s[2]) && side_ok(s[3]),
        || format!("[n, {channels}, H, W] with H and W multiples of 4"),
    )?;
    check_device(what, x, "x", device, "the parameters")
}

/// The noise-level embedding of DDPM's and EDM's U-Nets (Ho et al., 2020, §B; Karras et al.,
/// 2022, `SongUNet`), for [`BlogUnet`] with [`UnetConfig::noise_embedding`]: the noise input
/// `c` (σ or EDM's `c_noise = ln(σ)/4`) becomes the `f` channels of the transformer's sinusoidal
/// embedding `[cos(c ωₖ), sin(c ωₖ)]`, `ωₖ = 10000^(−k/(f/2))` for k < f/2 (EDM's
/// `PositionalEmbedding`, `endpoint = False`), then `e = SiLU(W₂ SiLU(W₁ ·))` of `4f` channels,
/// and layer `i` adds the per-channel bias `Aᵢ e` after its 3×3 convolution (EDM's `affine`,
/// without adaptive scale).
#[derive(Debug)]
struct NoiseEmbedding {
    map0: nn::Linear,
    map1: nn::Linear,
    affine: Vec<nn::Linear>,
    /// `f/2`, the number of frequencies.
    half: i64,
}

impl NoiseEmbedding {
    fn new(vs: &nn::Path, f: i64, widths: &[i64]) -> Self {
        let half = (f / 2).max(1);
        let lin = |name: String, i, o| nn::linear(vs / name, i, o, Default::default());
        NoiseEmbedding {
            map0: lin("map0".into(), 2 * half, 4 * f),
            map1: lin("map1".into(), 4 * f, 4 * f),
            affine: widths
                .iter()
                .enumerate()
                .map(|(i, &c)| lin(format!("affine{i}"), 4 * f, c))
                .collect(),
            half,
        }
    }

    /// The per-layer biases, `[n, Cᵢ, 1, 1]`, for the noise inputs `c` of shape `[n]`.
    fn biases(&self, what: &str, c: &Tensor) -> Result<Vec<Tensor>> {
        let k = Tensor::arange(self.half, (c.kind(), c.device()));
        let freqs = (k * (-(10_000f64.ln()) / self.half as f64)).exp();
        let angles = c.outer(&freqs);
        let pos = Tensor::cat(&[angles.cos(), angles.sin()], 1);
        let e = f_linear(what, "emb.map0", &self.map0, &pos)?
            .silu()
            .apply(&self.map1)
            .silu();
        let n = c.size()[0];
        Ok(self
            .affine
            .iter()
            .map(|a| e.apply(a).view([n, -1, 1, 1]))
            .collect())
    }
}

/// The blog's small U-Net (seed 001): σ enters as a second input channel filled with σ (or
/// EDM's ln σ / 4, [`NoiseInput`]);
/// 3×3 convolutions with ELU, average pooling, transposed convolutions, skip concatenations,
/// a 1×1 output convolution. Its output is the score itself (trained with `λ = σ²`), or
/// divided by σ (`divide_by_sigma`), or EDM-preconditioned (`sigma_data`, see [`UnetConfig`]).
/// Inputs are `[n, channels, H, W]` with H and W multiples of 4.
#[derive(Debug)]
pub struct BlogUnet {
    convs: UnetConvs,
    embedding: Option<NoiseEmbedding>,
    config: UnetConfig,
}

impl BlogUnet {
    /// Creates the network's parameters under `vs`.
    pub fn new(vs: &nn::Path, config: &UnetConfig) -> Result<Self> {
        positive("channels", config.channels)?;
        positive("start_filters", config.start_filters)?;
        if let Some(sd) = config.sigma_data {
            if !(sd.is_finite() && sd > 0.0) || config.divide_by_sigma {
                return Err(Error::InvalidParameter {
                    name: "sigma_data",
                    value: sd.to_string(),
                    why: "must be finite and > 0, and excludes divide_by_sigma",
                });
            }
        }
        let f = config.start_filters;
        Ok(BlogUnet {
            convs: UnetConvs::new(vs, config.channels + 1, config.channels, f),
            embedding: config
                .noise_embedding
                .then(|| NoiseEmbedding::new(&(vs / "emb"), f, &UnetConvs::widths(f))),
            config: config.clone(),
        })
    }

    /// The score of input [`Score::try_forward_score`] has checked.
    fn checked_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        const WHAT: &str = "BlogUnet";
        let sigma = per_row(sigma, x);
        let c_noise = self.config.noise_input.of(&sigma);
        let sigma_channel = x.narrow(1, 0, 1).ones_like() * &c_noise;
        let biases = match &self.embedding {
            Some(e) => e.biases(WHAT, &c_noise.flatten(0, -1))?,
            None => Vec::new(),
        };
        let net =
            |input: Tensor| {
                let both = Tensor::f_cat(&[&input, &sigma_channel], 1)
                    .map_err(torch_op(op_name(WHAT, "input [x, sigma channel]", &input)))?;
                self.convs.forward(WHAT, &both, |i, h| match biases.get(i) {
                    Some(b) => (h + b).elu(),
                    None => h.elu(),
                })
            };
        Ok(match self.config.sigma_data {
            Some(sd) => {
                let var = sigma.square() + sd * sd;
                let f = net(x / var.sqrt())?;
                -(x / &var) + f * sd / (&sigma * var.sqrt())
            }
            None if self.config.divide_by_sigma => net(x.shallow_clone())? / sigma,
            None => net(x.shallow_clone())?,
        })
    }
}

/// Noise-conditional in every form: σ is an input channel, and the output is divided by σ
/// (`divide_by_sigma`) or by `σ √(σ² + σ_data²)` (EDM), so σ must be finite and > 0.
impl Score for BlogUnet {
    fn device(&self) -> Option<Device> {
        Some(self.convs.device())
    }

    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        unchecked(self.try_forward_score(x, sigma))
    }

    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        const WHAT: &str = "BlogUnet";
        check_unet_input(WHAT, x, self.config.channels, self.convs.device())?;
        check_sigma_input(WHAT, sigma, x, true)?;
        in_cpu_chunks(WHAT, x, sigma, |x, sigma| self.checked_score(x, sigma))
    }
}

/// An NCSNv2-style U-Net: the blog's U-Net with a GroupNorm before every ELU (never batch norm:
/// it mixes the samples of a batch, so a sample's score would depend on the others, and its
/// statistics differ between training and sampling, Assignment 8), and its output divided by σ
/// (NCSNv2 technique 3), which replaces σ as an input.
#[derive(Debug)]
pub struct Ncsnv2Unet {
    convs: UnetConvs,
    norms: Vec<nn::GroupNorm>,
    config: UnetConfig,
}

impl Ncsnv2Unet {
    /// Creates the network's parameters under `vs`.
    pub fn new(vs: &nn::Path, config: &UnetConfig) -> Result<Self> {
        positive("channels", config.channels)?;
        positive("start_filters", config.start_filters)?;
        positive("groups", config.groups)?;
        // Both options that feed σ to the network are refused by name.
        let no_sigma_input = |name, value| Error::InvalidParameter {
            name,
            value,
            why: "the NCSNv2 U-Net takes no σ input (its output is divided by σ)",
        };
        if config.noise_input != NoiseInput::Sigma {
            let value = format!("{:?}", config.noise_input);
            return Err(no_sigma_input("noise_input", value));
        }
        if config.noise_embedding {
            return Err(no_sigma_input("noise_embedding", "true".into()));
        }
        let f = config.start_filters;
        if f % config.groups != 0 {
            return Err(Error::InvalidParameter {
                name: "groups",
                value: config.groups.to_string(),
                why: "must divide start_filters",
            });
        }
        let norms = UnetConvs::widths(f)
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                nn::group_norm(
                    vs / format!("norm{i}"),
                    config.groups,
                    c,
                    Default::default(),
                )
            })
            .collect();
        Ok(Ncsnv2Unet {
            convs: UnetConvs::new(vs, config.channels, config.channels, f),
            norms,
            config: config.clone(),
        })
    }
}

/// Noise-conditional: the output is divided by σ, so σ must be finite and > 0.
impl Score for Ncsnv2Unet {
    fn device(&self) -> Option<Device> {
        Some(self.convs.device())
    }

    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        unchecked(self.try_forward_score(x, sigma))
    }

    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        const WHAT: &str = "Ncsnv2Unet";
        check_unet_input(WHAT, x, self.config.channels, self.convs.device())?;
        check_sigma_input(WHAT, sigma, x, true)?;
        in_cpu_chunks(WHAT, x, sigma, |x, sigma| {
            let out = self
                .convs
                .forward(WHAT, x, |i, h| h.apply(&self.norms[i]).elu())?;
            Ok(out / per_row(sigma, x))
        })
    }
}

/// LeNet-5 (LeCun et al., 1998), the small classifier behind the image metrics
/// ([`crate::metrics::Classifier`]): `conv 5×5 → 6` (padding 2), ReLU, max-pool 2,
/// `conv 5×5 → 16`, ReLU, max-pool 2, then fully connected `400 → 120 → 84 → classes` with
/// ReLU. Its 84 penultimate activations are the features of the Fréchet LeNet distance.
/// Inputs are `[n, 1, 28, 28]` with pixels in [0, 1].
#[derive(Debug)]
pub struct LeNet {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
}

impl LeNet {
    /// Width of [`LeNet::features`].
    pub const FEATURES: i64 = 84;

    /// Creates the network's parameters under `vs` for `classes` classes.
    pub fn new(vs: &nn::Path, classes: i64) -> Result<Self> {
        positive("classes", classes)?;
        let c = nn::LinearConfig::default();
        Ok(LeNet {
            conv1: conv(vs / "conv1", 1, 6, 5),
            conv2: nn::conv2d(vs / "conv2", 6, 16, 5, Default::default()),
            fc1: nn::linear(vs / "fc1", 16 * 5 * 5, 120, c),
            fc2: nn::linear(vs / "fc2", 120, Self::FEATURES, c),
            fc3: nn::linear(vs / "fc3", Self::FEATURES, classes, c),
        })
    }

    /// The 84 penultimate activations `[n, 84]` (after ReLU) of `x`, `[n, 1, 28, 28]` on the
    /// parameters' device.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        const WHAT: &str = "LeNet input";
        let s = x.size();
        check_shape(WHAT, x, s.len() == 4 && s[1..] == [1, 28, 28], || {
            "[n, 1, 28, 28]".into()
        })?;
        check_device(WHAT, x, "x", self.conv1.ws.device(), "the parameters")?;
        Ok(f_conv("LeNet", "conv1", &self.conv1, x)?
            .relu()
            .max_pool2d_default(2)
            .apply(&self.conv2)
            .relu()
            .max_pool2d_default(2)
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
            .relu())
    }

    /// Class logits `[n, classes]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.features(x)?.apply(&self.fc3))
    }
}
