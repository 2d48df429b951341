//! Training loop: Adam over shuffled mini-batches, train and test loss per epoch (what
//! `dgm_utils.train_model` records in homework 5), a stop with the step named when the loss
//! turns NaN or infinite, and progress through an explicit hook.

use crate::error::{check_nonempty, Error, Result};
use std::time::{Duration, Instant};
use tch::nn::{self, OptimizerConfig};
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
    /// Seed for libtorch's generator, set before training (shuffling and DSM noise draw from
    /// it); `None` keeps its state.
    pub seed: Option<u64>,
    /// StepLR (homework 5): multiply the learning rate by `gamma` after every `step_epochs`
    /// epochs; `None` keeps it constant.
    #[serde(default)]
    pub lr_decay: Option<LrDecay>,
    /// Clip the gradients' global L2 norm to this value before each step.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Exponential moving average of the parameters with this decay (NCSNv2 technique 5,
    /// e.g. 0.999): `θ̄ ← decay · θ̄ + (1 - decay) · θ` after every step. When on, the test loss
    /// is measured with θ̄ and training ends with θ̄ in the variable store, so sampling uses it.
    #[serde(default)]
    pub ema_decay: Option<f64>,
}

/// A StepLR schedule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrDecay {
    /// Epochs between decays.
    pub step_epochs: usize,
    /// Factor applied at each decay.
    pub gamma: f64,
}

/// An exponential moving average of a variable store's trainable parameters.
pub struct Ema {
    decay: f64,
    shadow: Vec<(Tensor, Tensor)>,
}

impl Ema {
    /// Starts the average at the current parameters.
    pub fn new(vs: &nn::VarStore, decay: f64) -> Result<Ema> {
        if !(decay > 0.0 && decay < 1.0) {
            return Err(Error::InvalidParameter {
                name: "ema_decay",
                value: decay.to_string(),
                why: "must lie strictly between 0 and 1",
            });
        }
        let shadow = vs
            .trainable_variables()
            .into_iter()
            .map(|p| (p.detach().copy(), p))
            .collect();
        Ok(Ema { decay, shadow })
    }

    /// `θ̄ ← decay · θ̄ + (1 - decay) · θ`.
    pub fn update(&mut self) {
        tch::no_grad(|| {
            for (avg, p) in &mut self.shadow {
                avg.copy_(&(&*avg * self.decay + &*p * (1.0 - self.decay)));
            }
        });
    }

    /// Swaps the averages and the parameters (twice restores them).
    pub fn swap(&mut self) {
        tch::no_grad(|| {
            for (avg, p) in &mut self.shadow {
                let current = p.detach().copy();
                p.copy_(avg);
                avg.copy_(&current);
            }
        });
    }
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
            grad_clip: None,
            ema_decay: None,
        }
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
    /// Wall-clock seconds spent.
    pub seconds: f64,
    /// True when [`train_until`]'s `stop` ended training before the last epoch.
    #[serde(default)]
    pub interrupted: bool,
}

/// What the progress hook of [`train`] is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// After every optimiser step.
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
}

fn batches(n: i64, batch_size: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..n)
        .step_by(batch_size as usize)
        .map(move |start| (start, batch_size.min(n - start)))
}

/// Mean of `loss_fn` over `data` in batches, without gradients.
pub fn evaluate(
    data: &Tensor,
    batch_size: i64,
    loss_fn: &mut impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<f64> {
    check_nonempty(data, "evaluation set")?;
    let n = data.size()[0];
    tch::no_grad(|| {
        let mut total = 0.0;
        for (start, len) in batches(n, batch_size) {
            total += loss_fn(&data.narrow(0, start, len))?.double_value(&[]) * len as f64;
        }
        Ok(total / n as f64)
    })
}

/// Trains the variables of `vs` by minimising `loss_fn` over mini-batches of `train_data`
/// with Adam, recording the train and test loss of every epoch.
///
/// `loss_fn` maps a batch (rows of the data, on `vs`'s device) to a scalar loss. `hook` is
/// called after every step and every epoch ([`print_progress`] prints a line now and then).
/// Errors: empty data, batch size < 1, learning rate not finite or ≤ 0, and a loss that is NaN
/// or infinite (training stops there, naming the epoch and step).
pub fn train(
    vs: &nn::VarStore,
    train_data: &Tensor,
    test_data: Option<&Tensor>,
    cfg: &TrainConfig,
    loss_fn: impl FnMut(&Tensor) -> Result<Tensor>,
    hook: &mut dyn FnMut(&Event),
) -> Result<History> {
    train_until(vs, train_data, test_data, cfg, loss_fn, hook, &|| false)
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
    mut loss_fn: impl FnMut(&Tensor) -> Result<Tensor>,
    hook: &mut dyn FnMut(&Event),
    stop: &dyn Fn() -> bool,
) -> Result<History> {
    check_nonempty(train_data, "training set")?;
    if let Some(test) = test_data {
        check_nonempty(test, "test set")?;
    }
    if cfg.batch_size < 1 {
        return Err(Error::InvalidParameter {
            name: "batch_size",
            value: cfg.batch_size.to_string(),
            why: "must be >= 1",
        });
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(Error::InvalidParameter {
            name: "lr",
            value: cfg.lr.to_string(),
            why: "the learning rate must be finite and > 0",
        });
    }
    if let Some(seed) = cfg.seed {
        crate::data::seed(seed);
    }
    let device = vs.device();
    let train_data = train_data.to_device(device);
    let test_data = test_data.map(|t| t.to_device(device));
    let n = train_data.size()[0];
    if let Some(clip) = cfg.grad_clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(Error::InvalidParameter {
            name: "grad_clip",
            value: clip.to_string(),
            why: "the gradient norm bound must be finite and > 0",
        });
    }
    if let Some(d) = cfg
        .lr_decay
        .filter(|d| d.step_epochs == 0 || !(d.gamma > 0.0 && d.gamma.is_finite()))
    {
        return Err(Error::InvalidParameter {
            name: "lr_decay",
            value: format!("{d:?}"),
            why: "needs step_epochs >= 1 and a finite gamma > 0",
        });
    }
    let mut ema = cfg.ema_decay.map(|d| Ema::new(vs, d)).transpose()?;
    let mut opt = nn::Adam::default().build(vs, cfg.lr)?;
    let mut lr = cfg.lr;
    let total_steps = cfg.epochs * batches(n, cfg.batch_size).count();
    let start = Instant::now();
    let mut history = History::default();
    'epochs: for epoch in 1..=cfg.epochs {
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let mut epoch_total = 0.0;
        for (from, len) in batches(n, cfg.batch_size) {
            let batch = train_data.index_select(0, &perm.narrow(0, from, len));
            let loss = loss_fn(&batch)?;
            let value = loss.double_value(&[]);
            history.steps += 1;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    loss: value,
                    epoch,
                    step: history.steps,
                });
            }
            match cfg.grad_clip {
                Some(max_norm) => opt.backward_step_clip_norm(&loss, max_norm),
                None => opt.backward_step(&loss),
            }
            if let Some(ema) = ema.as_mut() {
                ema.update();
            }
            epoch_total += value * len as f64;
            hook(&Event::Step {
                epoch,
                step: history.steps,
                loss: value,
                total_steps,
                elapsed: start.elapsed(),
            });
            if stop() {
                history.interrupted = true;
                break 'epochs;
            }
        }
        let train_loss = epoch_total / n as f64;
        history.train_loss.push(train_loss);
        let test_loss = match &test_data {
            Some(test) => {
                // With EMA on, the held-out loss is that of the averaged parameters.
                if let Some(ema) = ema.as_mut() {
                    ema.swap();
                }
                let value = evaluate(test, cfg.batch_size, &mut loss_fn);
                if let Some(ema) = ema.as_mut() {
                    ema.swap();
                }
                let value = value?;
                history.test_loss.push(value);
                Some(value)
            }
            None => None,
        };
        if let Some(decay) = cfg.lr_decay.filter(|d| epoch % d.step_epochs == 0) {
            lr *= decay.gamma;
            opt.set_lr(lr);
        }
        hook(&Event::Epoch {
            epoch,
            epochs: cfg.epochs,
            train_loss,
            test_loss,
            elapsed: start.elapsed(),
        });
    }
    if let Some(ema) = ema.as_mut() {
        ema.swap();
    }
    history.seconds = start.elapsed().as_secs_f64();
    Ok(history)
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
    }
}

/// A hook that does nothing.
pub fn silent() -> impl FnMut(&Event) {
    |_| {}
}
