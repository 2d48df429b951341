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
    mut loss_fn: impl FnMut(&Tensor) -> Result<Tensor>,
    hook: &mut dyn FnMut(&Event),
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
    let mut opt = nn::Adam::default().build(vs, cfg.lr)?;
    let start = Instant::now();
    let mut history = History::default();
    for epoch in 1..=cfg.epochs {
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
            opt.backward_step(&loss);
            epoch_total += value * len as f64;
            hook(&Event::Step {
                epoch,
                step: history.steps,
                loss: value,
            });
        }
        let train_loss = epoch_total / n as f64;
        history.train_loss.push(train_loss);
        let test_loss = match &test_data {
            Some(test) => {
                let value = evaluate(test, cfg.batch_size, &mut loss_fn)?;
                history.test_loss.push(value);
                Some(value)
            }
            None => None,
        };
        hook(&Event::Epoch {
            epoch,
            epochs: cfg.epochs,
            train_loss,
            test_loss,
            elapsed: start.elapsed(),
        });
    }
    history.seconds = start.elapsed().as_secs_f64();
    Ok(history)
}

/// A hook for [`train`] that prints one line per epoch, at most once every `every` (and always
/// for the last epoch): epoch, losses, steps/s and the time left.
pub fn print_progress(every: Duration) -> impl FnMut(&Event) {
    let mut last_print: Option<Instant> = None;
    let mut steps = 0usize;
    move |event| match event {
        Event::Step { step, .. } => steps = *step,
        Event::Epoch {
            epoch,
            epochs,
            train_loss,
            test_loss,
            elapsed,
        } => {
            let due = last_print.is_none_or(|t| t.elapsed() >= every);
            if due || epoch == epochs {
                last_print = Some(Instant::now());
                let secs = elapsed.as_secs_f64();
                let eta = secs / *epoch as f64 * (*epochs - *epoch) as f64;
                let test = test_loss.map_or(String::new(), |t| format!("  test {t:.4}"));
                println!(
                    "epoch {epoch:>4}/{epochs}  train {train_loss:.4}{test}  {:.0} steps/s  eta {eta:.0}s",
                    steps as f64 / secs.max(1e-9)
                );
            }
        }
    }
}

/// A hook that does nothing.
pub fn silent() -> impl FnMut(&Event) {
    |_| {}
}
