//! Training loop: Adam over shuffled mini-batches, train and test loss per epoch (what
//! `dgm_utils.train_model` records in homework 5), a stop with the step named when the loss
//! turns NaN or infinite, and progress through an explicit hook.

use crate::checkpoint;
use crate::data;
use crate::error::{
    check_fraction, check_nonempty, check_open_unit, check_positive, Error, Result,
};
use crate::precision::Precision;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tch::nn;
use tch::{Kind, Tensor};

/// Settings of [`train`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Rows per mini-batch (the last batch of an epoch may be smaller).
    pub batch_size: i64,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed of the run. The initial weights (built by [`crate::experiment::Model::new`] and
    /// [`crate::metrics::Classifier::train`]), every
    /// epoch's shuffle, every step's noise and every held-out evaluation reseed libtorch's
    /// generator from it and their position in the run, so a run's result depends on its seed
    /// alone and a run resumed from a checkpoint draws exactly what the uninterrupted run draws.
    /// `None` picks one at random (and a checkpoint records it); the initial weights then come
    /// from the generator's state as it is.
    pub seed: Option<u64>,
    /// StepLR (homework 5): multiply the learning rate by `gamma` after every `step_epochs`
    /// epochs; `None` keeps it constant.
    #[serde(default)]
    pub lr_decay: Option<LrDecay>,
    /// Linear cooldown: over this fraction of the run's last optimiser steps, in (0, 1], the
    /// learning rate falls linearly towards zero (the decay phase of the warmup-stable-decay
    /// schedule; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
    /// Training Durations"). See [`cooldown_factor`]. It multiplies whatever `lr_decay` gives.
    #[serde(default)]
    pub cooldown: Option<f64>,
    /// Clip the gradients' global L2 norm to this value before each step.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Exponential moving average of the parameters with this decay (NCSNv2 technique 5,
    /// e.g. 0.999), warmed up as in [`Ema`]. When on, the test loss is measured with θ̄ and
    /// training ends with θ̄ in the variable store, so sampling uses it.
    #[serde(default)]
    pub ema_decay: Option<f64>,
    /// With a checkpoint folder ([`Options::checkpoint`]), save every this many optimiser steps
    /// (and at the end); an interrupted run loses at most this many steps.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// The precision of the forward pass and the loss ([`Precision::Auto`] for the convolutional
    /// networks: bfloat16 autocast where the device has the units for it); the held-out loss is
    /// computed in the same one.
    #[serde(default)]
    pub precision: Precision,
    /// On a GPU, capture the training step (loss, backward pass, clipping, Adam, EMA) in a CUDA
    /// graph after [`GRAPH_WARMUP`] eager steps and replay it for every full batch after
    /// ([`crate::cuda_graph`]): one launch a step instead of hundreds. The run is the same
    /// (the same seeds, so the same noise; the learning rate and EMA weight are read on the
    /// device). Ignored on the CPU. The loss function must not read values back to the host.
    /// Left out of the JSON when off.
    #[serde(default, skip_serializing_if = "crate::checkpoint::is_default")]
    pub cuda_graph: bool,
}

/// Eager training steps on the side stream before [`TrainConfig::cuda_graph`] captures one
/// (PyTorch's recipe: they create cuDNN and cuBLAS handles and the optimiser's state, which a
/// capture cannot).
pub const GRAPH_WARMUP: usize = 3;

fn default_checkpoint_every() -> usize {
    500
}

/// A StepLR schedule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrDecay {
    /// Epochs between decays.
    pub step_epochs: usize,
    /// Factor applied at each decay.
    pub gamma: f64,
}

/// An exponential moving average of a variable store's trainable parameters (NCSNv2 technique
/// 5), with the warm-up of TensorFlow's `ExponentialMovingAverage(num_updates=…)`: update `n`
/// (from 0) uses `d_n = min(decay, (1 + n)/(10 + n))`, so the initial weights stop dominating
/// after a few hundred steps instead of `1/(1 - decay)` thousand.
pub struct Ema {
    decay: f64,
    updates: u64,
    shadow: Vec<(String, Tensor, Tensor)>,
    /// `1 - d_n` on the device, for updates captured in a CUDA graph ([`Ema::stage`]).
    weight_on_device: Option<Tensor>,
    /// The weight last written to `weight_on_device`.
    staged: Option<f64>,
}

impl Ema {
    /// Starts the average at the current parameters.
    pub fn new(vs: &nn::VarStore, decay: f64) -> Result<Ema> {
        check_open_unit("ema_decay", decay)?;
        let mut shadow: Vec<_> = trainable(vs)
            .into_iter()
            .map(|(name, p)| (name, p.detach().copy(), p))
            .collect();
        shadow.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Ema {
            decay,
            updates: 0,
            shadow,
            weight_on_device: None,
            staged: None,
        })
    }

    /// The decay used by the next update: `min(decay, (1 + n)/(10 + n))`.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// `θ̄ ← d_n · θ̄ + (1 - d_n) · θ`.
    pub fn update(&mut self) -> Result<()> {
        self.stage()?;
        self.apply_staged()
    }

    /// From now on the update reads its weight `1 - d_n` from a tensor on `device`, written by
    /// [`Ema::stage`] before each update: an update captured in a CUDA graph then follows
    /// `d_n` from replay to replay.
    fn keep_weight_on_device(&mut self, device: tch::Device) {
        self.weight_on_device = Some(Tensor::from(0f32).to_device(device));
        self.staged = None;
    }

    /// Writes `1 - d_n` for the next update to the device (where it is kept there), only when
    /// it differs from the weight written last: after the warm-up `d_n` is the constant decay,
    /// and a graphed step then costs no kernel for it.
    fn stage(&mut self) -> Result<()> {
        let w = 1.0 - self.current_decay();
        if let Some(t) = self.weight_on_device.as_mut() {
            if self.staged != Some(w) {
                let _ = t.f_fill_(w)?;
                self.staged = Some(w);
            }
        }
        Ok(())
    }

    /// The update with the staged weight (the host's `d_n` where it is not kept on the device).
    fn apply_staged(&mut self) -> Result<()> {
        let (averages, params): (Vec<&Tensor>, Vec<&Tensor>) =
            self.shadow.iter().map(|(_, avg, p)| (avg, p)).unzip();
        tch::no_grad(|| match &self.weight_on_device {
            Some(w) => crate::fused::lerp_on_device(&averages, &params, w),
            None => crate::fused::lerp(&averages, &params, 1.0 - self.current_decay()),
        })?;
        self.updates += 1;
        Ok(())
    }

    /// Swaps the averages and the parameters (twice restores them).
    pub fn swap(&mut self) {
        tch::no_grad(|| {
            for (_, avg, p) in &mut self.shadow {
                let current = p.detach().copy();
                p.copy_(avg);
                avg.copy_(&current);
            }
        });
    }
}

/// Adam (Kingma & Ba 2015) as `torch.optim.Adam` computes it (β = (0.9, 0.999), ε = 10⁻⁸, no
/// weight decay): `m ← β₁m + (1-β₁)g`, `v ← β₂v + (1-β₂)g²`,
/// `θ ← θ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)`. Its moments are the crate's own tensors (tch's
/// optimiser keeps them inside libtorch, out of reach), so a checkpoint holds them and a resumed
/// run continues exactly.
pub struct Adam {
    lr: f64,
    steps: u64,
    /// `steps` as a float32 scalar on the parameters' device (what the fused kernel reads),
    /// advanced there; `None` until the first step and after `steps` is set from a checkpoint.
    step_tensor: Option<Tensor>,
    /// `(name, parameter, m, v)`, sorted by name.
    state: Vec<(String, Tensor, Tensor, Tensor)>,
    /// `lr` as a float32 scalar on the parameters' device, read by the fused kernel, for
    /// steps captured in a CUDA graph ([`Adam::set_lr`] writes it).
    lr_on_device: Option<Tensor>,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    /// Adam over `vs`'s trainable parameters with moments at zero.
    pub fn new(vs: &nn::VarStore, lr: f64) -> Result<Adam> {
        let mut state: Vec<_> = trainable(vs)
            .into_iter()
            .map(|(name, p)| {
                let m = p.zeros_like();
                let v = p.zeros_like();
                (name, p, m, v)
            })
            .collect();
        state.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Adam {
            lr: check_positive("lr", lr)?,
            steps: 0,
            step_tensor: None,
            state,
            lr_on_device: None,
        })
    }

    /// Sets the learning rate (on the device too where it is kept there, written only when it
    /// changes: a constant rate costs a graphed step no kernel).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        let changed = lr != self.lr;
        self.lr = lr;
        if let Some(t) = self.lr_on_device.as_mut().filter(|_| changed) {
            let _ = t.f_fill_(lr)?;
        }
        Ok(())
    }

    /// From now on the fused kernel reads the learning rate from a tensor on `device` that
    /// [`Adam::set_lr`] writes: a step captured in a CUDA graph follows the schedule.
    fn keep_lr_on_device(&mut self, device: tch::Device) {
        self.lr_on_device = Some(Tensor::from(self.lr as f32).to_device(device));
    }

    /// Back-propagates `loss`, clips the gradients' global norm to `clip` (as
    /// `torch.nn.utils.clip_grad_norm_`), takes one step and zeroes the gradients.
    pub fn backward_step(&mut self, loss: &Tensor, clip: Option<f64>) -> Result<()> {
        for (_, p, _, _) in &mut self.state {
            p.zero_grad();
        }
        loss.f_backward()?;
        self.steps += 1;
        tch::no_grad(|| -> Result<()> {
            let mut grads: Vec<Tensor> = self.state.iter().map(|(_, p, _, _)| p.grad()).collect();
            // Parameters without a gradient (unused by this loss) are left as they are.
            let with_grad: Vec<usize> = (0..grads.len()).filter(|&i| grads[i].defined()).collect();
            if with_grad.is_empty() {
                // t advanced on the host only: the device's copy is rebuilt at the next step.
                self.step_tensor = None;
                return Ok(());
            }
            if let Some(max_norm) = clip {
                // clip_grad_norm_'s g ← g · min(1, max_norm / (‖g‖ + 10⁻⁶)), computed on the
                // device: no read back of the norm.
                let norms: Vec<Tensor> = with_grad.iter().map(|&i| grads[i].norm()).collect();
                let total = Tensor::f_stack(&norms, 0)?.norm();
                let scale = ((total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
                for &i in &with_grad {
                    let _ = grads[i].f_mul_(&scale)?;
                }
            }
            // The step number t lives on the parameters' device, advanced there.
            let device = self.state[with_grad[0]].1.device();
            let step = match self.step_tensor.take() {
                Some(mut t) if t.device() == device => {
                    let _ = t.f_add_scalar_(1.0)?;
                    t
                }
                _ => Tensor::from(self.steps as f32).to_device(device),
            };
            let pick = |k: usize| -> Vec<&Tensor> {
                with_grad
                    .iter()
                    .map(|&i| {
                        let (_, p, m, v) = &self.state[i];
                        [p, &grads[i], m, v][k]
                    })
                    .collect()
            };
            let hyper = crate::fused::AdamHyper {
                lr: self.lr,
                beta1: Self::BETA1,
                beta2: Self::BETA2,
                eps: Self::EPS,
                weight_decay: 0.0,
            };
            crate::fused::adam(
                &pick(0),
                &pick(1),
                &pick(2),
                &pick(3),
                &step,
                hyper,
                self.lr_on_device.as_ref(),
            )?;
            self.step_tensor = Some(step);
            Ok(())
        })
    }
}

/// `vs`'s trainable parameters by name.
fn trainable(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .collect()
}

impl Default for TrainConfig {
    /// Seed 001's donut run: batch 100, Adam 10⁻³; 100 epochs of a 10,000-point set make its
    /// 10,000 steps.
    fn default() -> Self {
        TrainConfig {
            epochs: 100,
            batch_size: 100,
            lr: 1e-3,
            seed: None,
            lr_decay: None,
            cooldown: None,
            grad_clip: None,
            ema_decay: None,
            checkpoint_every: default_checkpoint_every(),
            precision: Precision::Float32,
            cuda_graph: false,
        }
    }
}

impl TrainConfig {
    /// Checks every setting; errors name the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size < 1 {
            return Err(Error::InvalidParameter {
                name: "batch_size",
                value: self.batch_size.to_string(),
                why: "must be >= 1",
            });
        }
        check_positive("lr", self.lr)?;
        if let Some(clip) = self.grad_clip {
            check_positive("grad_clip", clip)?;
        }
        if let Some(d) = self
            .lr_decay
            .filter(|d| d.step_epochs == 0 || !(d.gamma > 0.0 && d.gamma.is_finite()))
        {
            return Err(Error::InvalidParameter {
                name: "lr_decay",
                value: format!("{d:?}"),
                why: "needs step_epochs >= 1 and a finite gamma > 0",
            });
        }
        if let Some(f) = self.cooldown {
            check_fraction("cooldown", f)?;
        }
        if let Some(d) = self.ema_decay {
            check_open_unit("ema_decay", d)?;
        }
        if self.checkpoint_every == 0 {
            return Err(Error::InvalidParameter {
                name: "checkpoint_every",
                value: "0".into(),
                why: "must be >= 1 (steps between checkpoints)",
            });
        }
        Ok(())
    }
}

/// The factor [`TrainConfig::cooldown`] puts on the learning rate of optimiser step `step`
/// (counted from 0) of a run of `total` steps. With `k = ⌈fraction · total⌉` cooldown steps it is
/// 1 before step `total − k` and `(total − step)/k` from there on: 1 at the cooldown's first step,
/// `1/k` at the run's last, never 0. `None` is 1 throughout.
pub fn cooldown_factor(fraction: Option<f64>, step: usize, total: usize) -> f64 {
    let Some(fraction) = fraction else {
        return 1.0;
    };
    let k = ((fraction * total as f64).ceil() as usize).clamp(1, total.max(1));
    let start = total.saturating_sub(k);
    if step < start {
        1.0
    } else {
        total.saturating_sub(step).max(1) as f64 / k as f64
    }
}

/// Losses recorded by [`train`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// Mean training loss of each epoch (over its mini-batches, weighted by batch size).
    pub train_loss: Vec<f64>,
    /// Loss on the test set after each epoch (empty without a test set).
    pub test_loss: Vec<f64>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall-clock seconds spent (over all sessions of a resumed run).
    pub seconds: f64,
    /// True when [`train_until`]'s `stop` ended training before the last epoch.
    #[serde(default)]
    pub interrupted: bool,
    /// Steps that were already done in a checkpoint this run resumed from (0 for a fresh run).
    #[serde(default)]
    pub resumed_at: usize,
    /// The precision the steps ran in: [`TrainConfig::precision`] resolved on the device of the
    /// run's first session ([`Precision::resolve`]), which its resumed sessions keep.
    #[serde(default)]
    pub precision: Option<Precision>,
}

/// What the progress hook of [`train`] is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// For every optimiser step, in order. The losses are read from the device in groups
    /// (every few dozen steps, at the end of each epoch and before each checkpoint), so these
    /// events arrive in bursts, each with its own step's loss.
    Step {
        /// Epoch, from 1.
        epoch: usize,
        /// Steps taken so far, from 1.
        step: usize,
        /// This batch's loss.
        loss: f64,
        /// Steps the whole run will take.
        total_steps: usize,
        /// Time since training started.
        elapsed: Duration,
    },
    /// After every epoch.
    Epoch {
        /// Epoch, from 1.
        epoch: usize,
        /// Total epochs.
        epochs: usize,
        /// Mean training loss of the epoch.
        train_loss: f64,
        /// Test loss, when a test set was given.
        test_loss: Option<f64>,
        /// Time since training started.
        elapsed: Duration,
    },
    /// A run picked up from a checkpoint.
    Resumed {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Steps already done.
        step: usize,
        /// Steps the whole run takes.
        total_steps: usize,
    },
    /// A checkpoint was written.
    Saved {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Steps done.
        step: usize,
    },
}

fn batches(n: i64, batch_size: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..n)
        .step_by(batch_size as usize)
        .map(move |start| (start, batch_size.min(n - start)))
}

/// Mean of `loss_fn` over `data` in batches, without gradients. Each batch `loss_fn` sees is a
/// copy: `loss_fn` is code a homework answer can shape, and a view of `data` would let it change
/// the held-out set in place, which a check later compares samples with.
pub fn evaluate(
    data: &Tensor,
    batch_size: i64,
    loss_fn: &mut impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<f64> {
    check_nonempty(data, "evaluation set")?;
    let n = data.size()[0];
    tch::no_grad(|| {
        // Summed on the loss's device in float64 and read once: one host synchronisation.
        let mut total: Option<Tensor> = None;
        for (start, len) in batches(n, batch_size) {
            let batch = data.narrow(0, start, len).copy();
            let term = loss_fn(&batch)?.to_kind(Kind::Double) * len as f64;
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        let total = total.map_or(0.0, |t| t.double_value(&[]));
        Ok(total / n as f64)
    })
}

/// Trains the variables of `vs` by minimising `loss_fn` over mini-batches of `train_data`
/// with Adam, recording the train and test loss of every epoch.
///
/// `loss_fn` maps a batch (rows of the data, on `vs`'s device) to a scalar loss. `hook` is
/// called for every step (in bursts, see [`Event::Step`]) and every epoch ([`print_progress`]
/// prints a line now and then).
/// Errors: empty data, batch size < 1, learning rate not finite or ≤ 0, and a loss that is NaN
/// or infinite (naming the epoch and step where it happened; losses are read from the device
/// every few dozen steps, so training stops at most that many steps later).
pub fn train(
    vs: &nn::VarStore,
    train_data: &Tensor,
    test_data: Option<&Tensor>,
    cfg: &TrainConfig,
    loss_fn: impl FnMut(&Tensor) -> Result<Tensor>,
    hook: &mut dyn FnMut(&Event),
) -> Result<History> {
    train_until(vs, train_data, test_data, cfg, loss_fn, hook, &no_stop)
}

/// [`train`], polling `stop` after every step: when it returns true, training ends there
/// (EMA weights swapped in as at the end of a full run) and the history is returned with
/// `interrupted` set, so the caller can still save a checkpoint (the `sgm` command line's
/// Ctrl-C).
pub fn train_until(
    vs: &nn::VarStore,
    train_data: &Tensor,
    test_data: Option<&Tensor>,
    cfg: &TrainConfig,
    loss_fn: impl FnMut(&Tensor) -> Result<Tensor>,
    hook: &mut dyn FnMut(&Event),
    stop: &dyn Fn() -> bool,
) -> Result<History> {
    run(
        vs,
        train_data,
        cfg,
        loss_fn,
        Options {
            test_data,
            hook,
            stop,
            checkpoint: None,
            after_step: None,
        },
    )
}

fn no_stop() -> bool {
    false
}

/// Everything of a [`run`] besides the data, the settings and the loss.
pub struct Options<'a> {
    /// Held-out rows, evaluated after every epoch.
    pub test_data: Option<&'a Tensor>,
    /// Progress hook, called for every step (in bursts, see [`Event::Step`]), every epoch and
    /// every checkpoint.
    pub hook: &'a mut dyn FnMut(&Event),
    /// Polled after every step; true ends the run there (with a checkpoint, when on).
    pub stop: &'a dyn Fn() -> bool,
    /// Save a resumable checkpoint here (see [`Checkpointing`]).
    pub checkpoint: Option<Checkpointing<'a>>,
    /// Called once after every optimiser step, in order (after Adam and the EMA, and outside
    /// a captured CUDA graph): the caller's own per-step work, such as a hand-written average
    /// of the weights. An error from it ends the run with that error, unless a loss not yet
    /// read turns out not finite: losses are read every few dozen steps, so the hook may run
    /// that many steps after a non-finite loss, which is then the error reported. What it
    /// keeps is the caller's: a checkpoint does not save it, and a resumed run calls it only
    /// for the steps after [`History::resumed_at`].
    pub after_step: Option<&'a mut dyn FnMut() -> Result<()>>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            test_data: None,
            hook: Box::leak(Box::new(|_: &Event| {})),
            stop: &no_stop,
            checkpoint: None,
            after_step: None,
        }
    }
}

/// Where a run keeps its checkpoint, and the configuration saved beside it.
///
/// The folder holds the crate's one checkpoint format ([`crate::checkpoint`]: `model.safetensors`
/// with the weights to sample with — the EMA weights when EMA is on — and `config.json` with
/// `config` and the history) plus what resuming needs: `training_state.safetensors` (the raw
/// parameters, Adam's moments, the EMA) and `training_state.json` (position, seed, counters).
/// A run given a folder that holds a checkpoint of the same `config` and training settings
/// resumes from it; one of another configuration is an error, never overwritten.
pub struct Checkpointing<'a> {
    /// The checkpoint folder.
    pub dir: &'a Path,
    /// What `config.json` records as `config` (e.g. the experiment); compared when resuming.
    pub config: serde_json::Value,
    /// Reads a saved `config` as this version of the code reads it before the comparison
    /// (`None`: compared as saved). [`Checkpointing::typed`] reads it through its
    /// type, so a field added since, which an old checkpoint lacks and the type reads with its
    /// default, does not make that checkpoint another configuration.
    pub read_config: fn(&serde_json::Value) -> Option<serde_json::Value>,
}

impl<'a> Checkpointing<'a> {
    /// A configuration compared as it was saved, JSON value for JSON value.
    pub fn new(dir: &'a Path, config: serde_json::Value) -> Self {
        Checkpointing {
            dir,
            config,
            read_config: |_| None,
        }
    }

    /// The configuration `config`, of type `T`: a saved one is compared after a round trip
    /// through `T` (read with the defaults of fields added since, written as `T` writes today).
    /// A saved one that `T` cannot read, or that holds a key `T` does not know, is compared as
    /// saved.
    pub fn typed<T: serde::Serialize + serde::de::DeserializeOwned>(
        dir: &'a Path,
        config: &T,
    ) -> Result<Self> {
        Ok(Checkpointing {
            dir,
            config: serde_json::to_value(config)?,
            read_config: |saved| {
                // A key `T` does not know (a newer version's option, a typo) is not dropped
                // but left to the plain comparison, which refuses it by name.
                let mut unknown = false;
                let read: T = serde_ignored::deserialize(saved.clone(), |_| unknown = true).ok()?;
                if unknown {
                    return None;
                }
                serde_json::to_value(read).ok()
            },
        })
    }
}

/// The saved position of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct TrainState {
    /// What the folder's `config.json` records, and the training settings: a resume needs both
    /// to match.
    config: serde_json::Value,
    train: TrainConfig,
    seed: u64,
    /// Steps done.
    step: usize,
    /// The epoch in progress (from 1) and the batches of it done.
    epoch: usize,
    batch: usize,
    /// Sum of batch loss × batch size over this epoch's done batches.
    epoch_total: f64,
    adam_steps: u64,
    lr: f64,
    ema_updates: u64,
    history: History,
    complete: bool,
}

/// File names of the resume state inside a checkpoint folder.
pub const STATE_TENSORS: &str = "training_state.safetensors";
/// See [`STATE_TENSORS`].
pub const STATE_JSON: &str = "training_state.json";

/// One 64-bit mix (splitmix64's finaliser): seeds for the steps of a run.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator seed for draw `index` of kind `tag` (0: a step, 1: an epoch's shuffle, 2: an
/// evaluation, 3: the initial weights, see [`seed_initial_weights`]) of the run seeded `seed`.
fn seed_for(seed: u64, tag: u64, index: usize) -> u64 {
    mix(seed ^ mix(tag.wrapping_mul(0x1000_0000_01B3) ^ index as u64)) >> 1
}

/// Reseeds libtorch's generator for the initial weights of a run with the settings `cfg`, from
/// its seed (derived like the run's other draws), so that a run's result depends on its seed
/// alone, not on what drew from the generator before its network was built. Called before a
/// network is built ([`crate::experiment::Model::new`], [`crate::metrics::Classifier::train`]).
/// Without a seed the generator is left as it is.
pub(crate) fn seed_initial_weights(cfg: &TrainConfig) {
    if let Some(seed) = cfg.seed {
        data::seed(seed_for(seed, 3, 0));
    }
}

/// One eager training step on a batch: loss, backward pass, Adam, EMA; returns the loss.
type EagerStep<'a> = dyn FnMut(&Tensor, &mut Adam, Option<&mut Ema>) -> Result<Tensor> + 'a;

/// The training step in a CUDA graph ([`TrainConfig::cuda_graph`]): the run's work goes to a
/// side stream; the first [`GRAPH_WARMUP`] steps run eagerly there, the next full batch is
/// captured, and every full batch after replays it (a smaller last batch runs eagerly).
struct GraphedStep {
    /// Declared first, dropped first: the graph goes before its stream.
    captured: Option<CapturedStep>,
    eager_steps: usize,
    _stream: crate::cuda_graph::SideStream,
}

struct CapturedStep {
    graph: crate::cuda_graph::CudaGraph,
    /// The batch the captured step reads, written before each replay.
    input: Tensor,
    /// The loss the captured step writes.
    loss: Tensor,
}

impl GraphedStep {
    /// One step through the graph on the rows `rows` of `data`, captured now if it is not
    /// yet; returns the step's loss in float64 (a copy: the next replay overwrites the graph's
    /// own). The rows are gathered straight into the graph's input, and the loss converted in
    /// the same kernel that copies it: two kernels a step besides the replay. The learning
    /// rate was set and the EMA weight is staged here, outside the graph; the host's step
    /// counters, which a replay does not run, are advanced here too.
    fn step(
        &mut self,
        data: &Tensor,
        rows: &Tensor,
        opt: &mut Adam,
        mut ema: Option<&mut Ema>,
        eager: &mut EagerStep,
    ) -> Result<Tensor> {
        if let Some(ema) = ema.as_deref_mut() {
            ema.stage()?;
        }
        match &self.captured {
            None => {
                let input = data.f_index_select(0, rows)?;
                let device = input.device();
                // The eager step's own work, recorded: `ema.update` would stage inside the
                // graph, so the captured EMA update applies the staged weight instead.
                let (graph, loss) = crate::cuda_graph::CudaGraph::capture(device, || {
                    let loss = eager(&input, opt, None)?;
                    if let Some(ema) = ema.as_deref_mut() {
                        ema.apply_staged()?;
                    }
                    Ok(loss.detach())
                })?;
                // The capture ran the host side once (this step's counters) and no kernel.
                self.captured = Some(CapturedStep { graph, input, loss });
            }
            Some(c) => {
                let _ = data.f_index_select_out(&c.input, 0, rows)?;
                opt.steps += 1;
                if let Some(ema) = ema {
                    ema.updates += 1;
                }
            }
        }
        let c = self.captured.as_ref().expect("captured above");
        c.graph.replay()?;
        Ok(match c.loss.kind() {
            Kind::Double => c.loss.copy(),
            _ => c.loss.f_to_kind(Kind::Double)?,
        })
    }
}

/// Steps whose losses stay on the device between two reads: the loop reads them (one host
/// synchronisation) every this many steps, at the end of every epoch and before every
/// checkpoint, so a checkpoint never holds weights stepped with a non-finite loss.
const LOSS_READ_EVERY: usize = 32;

/// The losses of the steps taken since the last read, still on the device.
struct PendingLosses {
    /// `(epoch, step, batch rows)` of each.
    steps: Vec<(usize, usize, i64)>,
    values: Vec<Tensor>,
    total_steps: usize,
}

impl PendingLosses {
    fn len(&self) -> usize {
        self.steps.len()
    }

    fn push(&mut self, loss: &Tensor, epoch: usize, step: usize, rows: i64) {
        self.steps.push((epoch, step, rows));
        self.values
            .push(loss.detach().to_kind(Kind::Double).reshape([1]));
    }

    /// Reads the pending losses in one transfer, checks them in order (the first non-finite
    /// one is the error, naming its own epoch and step), adds them to the epoch's total and
    /// reports each step to `hook`.
    fn read(
        &mut self,
        state: &mut TrainState,
        hook: &mut dyn FnMut(&Event),
        start: Instant,
    ) -> Result<()> {
        if self.values.is_empty() {
            return Ok(());
        }
        let values: Vec<f64> = Tensor::cat(&self.values, 0)
            .to_device(tch::Device::Cpu)
            .try_into()?;
        self.values.clear();
        let elapsed = start.elapsed();
        for ((epoch, step, rows), loss) in self.steps.drain(..).zip(values) {
            if !loss.is_finite() {
                return Err(Error::NonFiniteLoss { loss, epoch, step });
            }
            state.epoch_total += loss * rows as f64;
            hook(&Event::Step {
                epoch,
                step,
                loss,
                total_steps: self.total_steps,
                elapsed,
            });
        }
        Ok(())
    }
}

/// Trains as [`train`] does, with a stop predicate and, when `opts.checkpoint` is set, a
/// checkpoint every [`TrainConfig::checkpoint_every`] steps, at a stop and at the end, from
/// which a later call with the same folder resumes: weights, Adam's moments, the EMA, the
/// learning-rate schedule and the generator's position, so that the resumed run ends with the
/// same parameters as an uninterrupted one.
pub fn run(
    vs: &nn::VarStore,
    train_data: &Tensor,
    cfg: &TrainConfig,
    mut loss_fn: impl FnMut(&Tensor) -> Result<Tensor>,
    opts: Options,
) -> Result<History> {
    let Options {
        test_data,
        hook,
        stop,
        checkpoint,
        mut after_step,
    } = opts;
    check_nonempty(train_data, "training set")?;
    if let Some(test) = test_data {
        check_nonempty(test, "test set")?;
    }
    cfg.validate()?;
    let device = vs.device();
    let train_data = train_data.to_device(device);
    let test_data = test_data.map(|t| t.to_device(device));
    let n = train_data.size()[0];
    let n_batches = batches(n, cfg.batch_size).count();
    let total_steps = cfg.epochs * n_batches;
    let mut ema = cfg.ema_decay.map(|d| Ema::new(vs, d)).transpose()?;
    let mut opt = Adam::new(vs, cfg.lr)?;
    let fresh_seed = || {
        use std::hash::BuildHasher;
        cfg.seed
            .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(0u64) >> 1)
    };
    let mut state = TrainState {
        config: checkpoint
            .as_ref()
            .map_or(serde_json::Value::Null, |c| c.config.clone()),
        train: cfg.clone(),
        seed: fresh_seed(),
        step: 0,
        epoch: 1,
        batch: 0,
        epoch_total: 0.0,
        adam_steps: 0,
        lr: cfg.lr,
        ema_updates: 0,
        history: History::default(),
        complete: false,
    };
    if let Some(ck) = &checkpoint {
        if let Some(saved) = load_state(ck, &state, vs, &mut opt, ema.as_mut())? {
            state = saved;
            state.history.resumed_at = state.step;
            state.history.interrupted = false;
            hook(&Event::Resumed {
                dir: ck.dir.to_path_buf(),
                step: state.step,
                total_steps,
            });
        }
    }
    // A resumed run keeps the precision its first session resolved (Auto may resolve otherwise
    // on another machine), so that it continues the run it resumes.
    let precision = match state.history.precision {
        Some(recorded) => recorded,
        None => cfg.precision.resolve(device)?,
    };
    state.history.precision = Some(precision);
    crate::precision::flush_subnormals_on_cpu(device)?;
    let mut graphed = match cfg.cuda_graph && device.is_cuda() {
        true => {
            opt.keep_lr_on_device(device);
            if let Some(ema) = ema.as_mut() {
                ema.keep_weight_on_device(device);
            }
            Some(GraphedStep {
                _stream: crate::cuda_graph::SideStream::enter(device)?,
                eager_steps: 0,
                captured: None,
            })
        }
        false => None,
    };
    let start = Instant::now();
    let seconds_before = state.history.seconds;
    // Brings the state's clock and counters up to date, then writes the checkpoint (if on).
    let save = |state: &mut TrainState,
                ema: &mut Option<Ema>,
                opt: &Adam,
                hook: &mut dyn FnMut(&Event)|
     -> Result<()> {
        state.history.seconds = seconds_before + start.elapsed().as_secs_f64();
        state.adam_steps = opt.steps;
        state.ema_updates = ema.as_ref().map_or(0, Ema::updates);
        if let Some(ck) = &checkpoint {
            save_state(ck.dir, state, vs, opt, ema.as_mut())?;
            hook(&Event::Saved {
                dir: ck.dir.to_path_buf(),
                step: state.step,
            });
        }
        Ok(())
    };
    let mut stopped = false;
    let mut pending = PendingLosses {
        steps: Vec::new(),
        values: Vec::new(),
        total_steps,
    };
    while !state.complete && state.epoch <= cfg.epochs && !stopped {
        let epoch = state.epoch;
        data::seed(seed_for(state.seed, 1, epoch));
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        for (from, len) in batches(n, cfg.batch_size).skip(state.batch) {
            data::seed(seed_for(state.seed, 0, state.step));
            let rows = perm.narrow(0, from, len);
            // The one place the rate is set: StepLR's (resumed with the state) times the cooldown.
            opt.set_lr(state.lr * cooldown_factor(cfg.cooldown, state.step, total_steps))?;
            let mut eager = |batch: &Tensor, opt: &mut Adam, ema: Option<&mut Ema>| {
                let loss = precision.run(device, || loss_fn(batch))??;
                opt.backward_step(&loss, cfg.grad_clip)?;
                if let Some(ema) = ema {
                    ema.update()?;
                }
                Ok(loss)
            };
            let loss = match graphed.as_mut() {
                Some(g) if g.eager_steps >= GRAPH_WARMUP && len == cfg.batch_size => {
                    g.step(&train_data, &rows, &mut opt, ema.as_mut(), &mut eager)
                }
                warming => {
                    if let Some(g) = warming {
                        g.eager_steps += 1;
                    }
                    let batch = train_data.f_index_select(0, &rows)?;
                    eager(&batch, &mut opt, ema.as_mut())
                }
            };
            let loss = match loss {
                Ok(loss) => loss,
                Err(e) => {
                    // A non-finite loss before this step is the cause to report.
                    pending.read(&mut state, hook, start)?;
                    return Err(e);
                }
            };
            state.step += 1;
            state.batch += 1;
            state.history.steps = state.step;
            pending.push(&loss, epoch, state.step, len);
            if let Some(after_step) = after_step.as_deref_mut() {
                if let Err(e) = after_step() {
                    pending.read(&mut state, hook, start)?;
                    return Err(e);
                }
            }
            if stop() {
                stopped = true;
            }
            let last_of_epoch = state.batch == n_batches;
            let save_now =
                !last_of_epoch && (stopped || state.step.is_multiple_of(cfg.checkpoint_every));
            if save_now || last_of_epoch || pending.len() >= LOSS_READ_EVERY {
                pending.read(&mut state, hook, start)?;
            }
            if save_now {
                save(&mut state, &mut ema, &opt, hook)?;
            }
            if stopped {
                break;
            }
        }
        if state.batch < n_batches {
            break;
        }
        let train_loss = state.epoch_total / n as f64;
        state.history.train_loss.push(train_loss);
        let test_loss = match &test_data {
            Some(test) => {
                data::seed(seed_for(state.seed, 2, epoch));
                // With EMA on, the held-out loss is that of the averaged parameters.
                if let Some(ema) = ema.as_mut() {
                    ema.swap();
                }
                let value = precision
                    .run(device, || evaluate(test, cfg.batch_size, &mut loss_fn))
                    .and_then(|v| v);
                if let Some(ema) = ema.as_mut() {
                    ema.swap();
                }
                let value = value?;
                state.history.test_loss.push(value);
                Some(value)
            }
            None => None,
        };
        if let Some(decay) = cfg.lr_decay.filter(|d| epoch.is_multiple_of(d.step_epochs)) {
            state.lr *= decay.gamma;
        }
        state.epoch += 1;
        state.batch = 0;
        state.epoch_total = 0.0;
        state.complete = state.epoch > cfg.epochs;
        hook(&Event::Epoch {
            epoch,
            epochs: cfg.epochs,
            train_loss,
            test_loss,
            elapsed: start.elapsed(),
        });
        // A multiple of `checkpoint_every` that fell on the epoch's last batch is saved here,
        // after the epoch's evaluation, so the saved position is "epoch done".
        if state.complete || stopped || state.step.is_multiple_of(cfg.checkpoint_every) {
            save(&mut state, &mut ema, &opt, hook)?;
        }
    }
    state.history.interrupted = !state.complete;
    if let Some(ema) = ema.as_mut() {
        ema.swap();
    }
    state.history.seconds = seconds_before + start.elapsed().as_secs_f64();
    Ok(state.history)
}
fn state_error(dir: &Path, why: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: dir.display().to_string(),
        why: why.into(),
    }
}

/// Writes the resumable checkpoint of `state` into `dir` (see [`Checkpointing`]). Every file is
/// written to a temporary name and renamed into place; `training_state.json`, written last, is
/// the commit point, and the tensors file carries its step, so a crash between the two is caught
/// on loading.
fn save_state(
    dir: &Path,
    state: &TrainState,
    vs: &nn::VarStore,
    opt: &Adam,
    mut ema: Option<&mut Ema>,
) -> Result<()> {
    let step = Tensor::from_slice(&[state.step as i64]);
    let mut named: Vec<(String, Tensor)> = vec![("state.step".into(), step)];
    for (name, p, m, v) in &opt.state {
        named.push((
            format!("param.{name}"),
            p.detach().to_device(tch::Device::Cpu),
        ));
        named.push((format!("adam.m.{name}"), m.to_device(tch::Device::Cpu)));
        named.push((format!("adam.v.{name}"), v.to_device(tch::Device::Cpu)));
    }
    if let Some(ema) = ema.as_deref() {
        for (name, avg, _) in &ema.shadow {
            named.push((format!("ema.{name}"), avg.to_device(tch::Device::Cpu)));
        }
    }
    checkpoint::create_dir(dir)?;
    checkpoint::write_atomically(&dir.join(STATE_TENSORS), |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(Error::from)
    })?;
    // The weights to sample with: the averages when EMA is on.
    if let Some(ema) = ema.as_mut() {
        ema.swap();
    }
    let saved = checkpoint::save(
        dir,
        vs,
        &state.config,
        serde_json::json!({ "train": state.train, "history": state.history, "complete": state.complete }),
    );
    if let Some(ema) = ema {
        ema.swap();
    }
    saved?;
    let json = serde_json::to_string_pretty(state)?;
    checkpoint::write_atomically(&dir.join(STATE_JSON), |tmp| {
        std::fs::write(tmp, &json).map_err(|source| Error::Io {
            path: tmp.display().to_string(),
            source,
        })
    })
}

/// Reads the resumable checkpoint in `ck.dir` into `vs`, `opt` and `ema`, after checking that it
/// was written by the same configuration as `fresh` (the saved one read by `ck.read_config`).
/// `None` when the folder holds no checkpoint. The state returned records the configuration as
/// read, so the checkpoints the resumed run writes hold today's form of it.
fn load_state(
    ck: &Checkpointing,
    fresh: &TrainState,
    vs: &nn::VarStore,
    opt: &mut Adam,
    ema: Option<&mut Ema>,
) -> Result<Option<TrainState>> {
    let dir = ck.dir;
    let json_path = dir.join(STATE_JSON);
    if !json_path.exists() {
        if dir.join(checkpoint::WEIGHTS).exists() {
            return Err(state_error(
                dir,
                "holds a model but no training state, so training cannot resume from it; \
                 delete it or choose another folder",
            ));
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(&json_path).map_err(|source| Error::Io {
        path: json_path.display().to_string(),
        source,
    })?;
    let mut saved: TrainState = serde_json::from_str(&text)
        .map_err(|e| state_error(&json_path, format!("not a training state: {e}")))?;
    if let Some(read) = (ck.read_config)(&saved.config) {
        saved.config = read;
    }
    // Whether the step runs from a CUDA graph does not change the run: a run may resume with
    // the flag switched.
    let (mut saved_config, mut fresh_config) = (saved.config.clone(), fresh.config.clone());
    for c in [&mut saved_config, &mut fresh_config] {
        if let Some(train) = c.get_mut("train").and_then(|t| t.as_object_mut()) {
            train.remove("cuda_graph");
        }
    }
    let without_graph = |t: &TrainConfig| TrainConfig {
        cuda_graph: false,
        ..t.clone()
    };
    let (saved_train, fresh_train) = (without_graph(&saved.train), without_graph(&fresh.train));
    if saved_config != fresh_config {
        return Err(state_error(
            dir,
            format!(
                "was written by another configuration ({}); delete it or choose another folder",
                first_difference(&saved.config, &fresh.config, "config")
            ),
        ));
    }
    if saved_train != fresh_train {
        let a = serde_json::to_value(&saved_train)?;
        let b = serde_json::to_value(&fresh_train)?;
        return Err(state_error(
            dir,
            format!(
                "was written with other training settings ({}); delete it or choose another folder",
                first_difference(&a, &b, "train")
            ),
        ));
    }
    let path = dir.join(STATE_TENSORS);
    let tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .map_err(|e| state_error(&path, format!("not a readable safetensors file ({e})")))?
        .into_iter()
        .collect();
    let get = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| state_error(&path, format!("has no tensor {name}")))
    };
    let step = get("state.step")?.int64_value(&[0]);
    if step != saved.step as i64 {
        return Err(state_error(
            dir,
            format!(
                "is inconsistent: the tensors are from step {step}, the state from step {} \
                 (a crash while saving?)",
                saved.step
            ),
        ));
    }
    let device = vs.device();
    tch::no_grad(|| -> Result<()> {
        let copy = |dst: &mut Tensor, name: &str| -> Result<()> {
            let src = get(name)?;
            if src.size() != dst.size() {
                return Err(state_error(
                    &path,
                    format!(
                        "{name} has shape {:?}, the model {:?}",
                        src.size(),
                        dst.size()
                    ),
                ));
            }
            dst.f_copy_(&src.to_device(device))?;
            Ok(())
        };
        for (name, p, m, v) in &mut opt.state {
            copy(p, &format!("param.{name}"))?;
            copy(m, &format!("adam.m.{name}"))?;
            copy(v, &format!("adam.v.{name}"))?;
        }
        if let Some(ema) = ema {
            for (name, avg, _) in &mut ema.shadow {
                copy(avg, &format!("ema.{name}"))?;
            }
            ema.updates = saved.ema_updates;
        }
        Ok(())
    })?;
    opt.steps = saved.adam_steps;
    opt.step_tensor = None;
    Ok(Some(saved))
}

/// `path: a vs b` for the first place two JSON values differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> String {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (u, v) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if u != v {
                    return first_difference(u, v, &format!("{path}.{k}"));
                }
            }
            format!("{path}: equal")
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                if u != v {
                    return first_difference(u, v, &format!("{path}[{i}]"));
                }
            }
            format!("{path}: equal")
        }
        _ => format!("{path}: saved {a}, now {b}"),
    }
}

/// A hook for [`train`] that prints a progress line at most once every `every`: within an
/// epoch `step, loss, steps/s, eta`, at the end of an epoch its train and test loss; the last
/// epoch is always printed. Lines stream while a notebook cell runs without flooding it.
pub fn print_progress(every: Duration) -> impl FnMut(&Event) {
    let mut last_print: Option<Instant> = None;
    let mut steps = 0usize;
    let mut total = 0usize;
    let mut due = move |force: bool| {
        let ready = force || last_print.is_none_or(|t| t.elapsed() >= every);
        if ready {
            last_print = Some(Instant::now());
        }
        ready
    };
    let rate = |steps: usize, secs: f64| steps as f64 / secs.max(1e-9);
    move |event| match event {
        Event::Step {
            epoch,
            step,
            loss,
            total_steps,
            elapsed,
        } => {
            steps = *step;
            total = *total_steps;
            // Step lines only once the first epoch line is out, then as time passes.
            if last_print.is_some() && due(false) {
                let r = rate(*step, elapsed.as_secs_f64());
                println!(
                    "step {step:>7}/{total_steps}  epoch {epoch}  loss {loss:.4}  {r:.0} steps/s  eta {:.0}s",
                    (*total_steps - *step) as f64 / r
                );
            }
        }
        Event::Epoch {
            epoch,
            epochs,
            train_loss,
            test_loss,
            elapsed,
        } => {
            if due(epoch == epochs || *epoch == 1) {
                let r = rate(steps, elapsed.as_secs_f64());
                let test = test_loss.map_or(String::new(), |t| format!("  test {t:.4}"));
                println!(
                    "epoch {epoch:>4}/{epochs}  train {train_loss:.4}{test}  {r:.0} steps/s  eta {:.0}s",
                    (total - steps) as f64 / r
                );
            }
        }
        Event::Resumed {
            dir,
            step,
            total_steps,
        } => println!(
            "resuming from {} at step {step}/{total_steps}",
            dir.display()
        ),
        Event::Saved { .. } => {}
    }
}

/// A hook that does nothing.
pub fn silent() -> impl FnMut(&Event) {
    |_| {}
}

/// Training previews, as `dgm_utils`' `train_model` shows them: every `every` epochs a panel
/// drawn by `draw(epoch)` (samples of the model as it is then), written to
/// `dir/preview-epoch-N.png` as training goes, and all of them as one figure at the end
/// ([`Previews::figure`]: a notebook cell shows nothing before it ends). Pass
/// [`Previews::record`] on from the training hook.
pub struct Previews<'a> {
    every: usize,
    dir: Option<PathBuf>,
    draw: Box<dyn FnMut(usize) -> Result<Box<dyn crate::plots::Panel>> + 'a>,
    panels: Vec<Box<dyn crate::plots::Panel>>,
    error: Option<Error>,
}

impl std::fmt::Debug for Previews<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Previews")
            .field("every", &self.every)
            .field("dir", &self.dir)
            .field("panels", &self.panels.len())
            .finish()
    }
}

impl<'a> Previews<'a> {
    /// A preview every `every` epochs (≥ 1), written into `dir` when given.
    pub fn new(
        every: usize,
        dir: Option<PathBuf>,
        draw: impl FnMut(usize) -> Result<Box<dyn crate::plots::Panel>> + 'a,
    ) -> Result<Self> {
        crate::error::check_count("preview interval (epochs)", every)?;
        Ok(Previews {
            every,
            dir,
            draw: Box::new(draw),
            panels: Vec::new(),
            error: None,
        })
    }

    /// Draws (and writes) a preview after every `every`-th epoch. A preview that fails is
    /// kept as the error [`Previews::figure`] returns; training goes on.
    pub fn record(&mut self, event: &Event) {
        let Event::Epoch { epoch, .. } = *event else {
            return;
        };
        if self.error.is_some() || epoch % self.every != 0 {
            return;
        }
        let drawn = (self.draw)(epoch).and_then(|panel| {
            if let Some(dir) = &self.dir {
                crate::plots::grid(&[panel.as_ref()], 1, crate::plots::PANEL_SIZE)?
                    .save(dir.join(format!("preview-epoch-{epoch}.png")))?;
            }
            Ok(panel)
        });
        match drawn {
            Ok(panel) => self.panels.push(panel),
            Err(e) => self.error = Some(e),
        }
    }

    /// Number of previews drawn.
    pub fn len(&self) -> usize {
        self.panels.len()
    }

    /// Whether none was drawn (a run resumed from a finished checkpoint trains no epoch).
    pub fn is_empty(&self) -> bool {
        self.panels.is_empty()
    }

    /// All previews in one figure, four per row; the first error a preview met, if any.
    pub fn figure(&mut self) -> Result<crate::plots::Figure> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.panels.is_empty() {
            return Err(Error::Plot(
                "no preview was drawn: the run trained no full interval of epochs".into(),
            ));
        }
        let panels: Vec<&dyn crate::plots::Panel> =
            self.panels.iter().map(|p| p.as_ref()).collect();
        crate::plots::grid(&panels, panels.len().min(4), crate::plots::PANEL_SIZE)
    }
}
