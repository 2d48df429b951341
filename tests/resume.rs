//! Training that survives interruption: the crate's Adam against libtorch's, the EMA's warm-up,
//! and a run that crashes, resumes from its last checkpoint and ends exactly where the
//! uninterrupted run ends.

use sgm::data;
use sgm::losses::dsm_loss;
use sgm::nets::{BlogUnet, Mlp, MlpConfig, UnetConfig};
use sgm::precision::Precision;
use sgm::tch::nn::{self, OptimizerConfig};
use sgm::tch::{Kind, Tensor};
use sgm::training::{self, Adam, Ema, Event, History, LrDecay, TrainConfig};
use sgm::Error;
use sgm::Score;
use sgm_tests::{from_slice, max_abs_diff, params, rng_lock, test_device, tmpdir};
use std::path::Path;

/// A net whose initial weights depend on `init_seed` only.
fn net(init_seed: u64) -> (nn::VarStore, Mlp) {
    data::seed(init_seed);
    let vs = nn::VarStore::new(test_device());
    let mlp = Mlp::new(&vs.root(), &MlpConfig::donut()).unwrap();
    (vs, mlp)
}

#[test]
fn adam_matches_libtorchs_adam() {
    // Bugs caught: a missing or wrong bias correction, ε inside the square root, β's swapped,
    // the clip scale applied to the moments instead of the gradient.
    let _rng = rng_lock();
    let (vs_a, mlp_a) = net(1);
    let (mut vs_b, mlp_b) = net(2);
    vs_b.copy(&vs_a).unwrap();
    let mut ours = Adam::new(&vs_a, 3e-3).unwrap();
    let mut theirs = nn::Adam::default().build(&vs_b, 3e-3).unwrap();
    let x = Tensor::randn([64, 2], (Kind::Float, test_device()));
    let z = Tensor::randn([64, 2], (Kind::Float, test_device()));
    // A deterministic loss (fixed noise), so both optimisers see the same gradients.
    let loss = |m: &Mlp| {
        let s = m.score_at(&(&x + &z * 0.3), 0.3).unwrap();
        (s + &z / 0.3).square().sum(Kind::Float) / 64.0
    };
    for _ in 0..30 {
        ours.backward_step(&loss(&mlp_a), None).unwrap();
        theirs.backward_step(&loss(&mlp_b));
    }
    // Then with the gradients' norm clipped (computed on the device, no read back) to a bound
    // below it, so the clip acts on every step.
    for _ in 0..10 {
        ours.backward_step(&loss(&mlp_a), Some(0.05)).unwrap();
        theirs.backward_step_clip_norm(&loss(&mlp_b), 0.05);
    }
    let moved = max_abs_diff(&params(&vs_a), &params(&net(1).0));
    let diff = max_abs_diff(&params(&vs_a), &params(&vs_b));
    // 30 steps of size ≈ lr move weights by ~0.1; float32 rounding leaves ~1e-6 between two
    // correct implementations.
    assert!(moved > 1e-2, "the weights did not move: {moved}");
    assert!(diff < 1e-5, "ours vs libtorch's Adam: {diff}");
    assert!(Adam::new(&vs_a, f64::NAN).is_err());
}

#[test]
fn ema_warms_up() {
    // Bug caught: a fixed decay of 0.999 from the initial weights, which dominated short runs
    // (held-out loss 14,808 with EMA against 1,513 without after notebook 03's first epoch).
    let vs = nn::VarStore::new(test_device());
    let mut p = vs.root().zeros("p", &[1]);
    let mut ema = Ema::new(&vs, 0.999).unwrap();
    assert!((ema.current_decay() - 0.1).abs() < 1e-15); // (1 + 0)/(10 + 0)
    tch_no_grad(|| {
        let _ = p.fill_(1.0);
    });
    ema.update().unwrap(); // θ̄ = 0.1 · 0 + 0.9 · 1
    assert!((ema.current_decay() - 2.0 / 11.0).abs() < 1e-15);
    for _ in 0..9 {
        ema.update().unwrap();
    }
    ema.swap();
    // After n updates towards a constant 1 from 0, θ̄ = 1 - Π d_k with d_k = (1+k)/(10+k):
    // Π_{k<10} (1+k)/(10+k) = 10! 9! / 19! .
    let prod: f64 = (0..10)
        .map(|k| (1.0 + k as f64) / (10.0 + k as f64))
        .product();
    let avg = p.double_value(&[0]);
    assert!((avg - (1.0 - prod)).abs() < 1e-6, "{avg} vs {}", 1.0 - prod);
    assert_eq!(ema.updates(), 10);
    assert!(Ema::new(&vs, 1.0).is_err());
}

#[test]
fn after_step_runs_once_after_every_step() {
    // Bugs caught: the hook called before Adam's step (its average lags one step behind the
    // built-in EMA's), skipped on an epoch's last batch, or called again for the held-out
    // evaluation. A hand-kept average updated from the hook must equal the built-in one.
    let _rng = rng_lock();
    data::seed(0);
    let x = Tensor::randn([300, 2], (Kind::Float, test_device())); // 5 batches, the last of 44
    let cfg = TrainConfig {
        ema_decay: None,
        ..config()
    };
    let (vs_own, mlp_own) = net(3);
    let mut ema = Ema::new(&vs_own, 0.9).unwrap();
    let mut calls = 0usize;
    let mut after = || {
        calls += 1;
        ema.update()
    };
    let own = training::run(
        &vs_own,
        &x,
        &cfg,
        |b| dsm_loss(&mlp_own, b, 0.5),
        training::Options {
            test_data: Some(&x),
            after_step: Some(&mut after),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(calls, own.steps);
    assert_eq!(ema.updates() as usize, own.steps);
    ema.swap();

    let (vs_built_in, mlp_built_in) = net(3);
    let built_in = training::run(
        &vs_built_in,
        &x,
        &TrainConfig {
            ema_decay: Some(0.9),
            ..cfg.clone()
        },
        |b| dsm_loss(&mlp_built_in, b, 0.5),
        training::Options {
            test_data: Some(&x),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(built_in.train_loss, own.train_loss);
    let diff = max_abs_diff(&params(&vs_own), &params(&vs_built_in));
    assert!(diff < 1e-6, "hook-kept average vs the built-in EMA: {diff}");

    // An error from the hook ends the run with it.
    let (vs, mlp) = net(3);
    let mut n = 0;
    let mut failing = || {
        n += 1;
        match n {
            5 => Err(Error::Plot("hook failed".into())),
            _ => Ok(()),
        }
    };
    let err = training::run(
        &vs,
        &x,
        &cfg,
        |b| dsm_loss(&mlp, b, 0.5),
        training::Options {
            after_step: Some(&mut failing),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("hook failed"), "{err}");
    assert_eq!(n, 5);
}

fn tch_no_grad<T>(f: impl FnOnce() -> T) -> T {
    sgm::tch::no_grad(f)
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 64,
        lr: 2e-3,
        seed: Some(7),
        lr_decay: Some(LrDecay {
            step_epochs: 1,
            gamma: 0.5,
        }),
        // Over the last half of the steps: a resumed run must take the same rates.
        cooldown: Some(0.5),
        grad_clip: Some(5.0),
        ema_decay: Some(0.9),
        checkpoint_every: 4,
        precision: Default::default(),
        cuda_graph: false,
    }
}

/// Trains `vs` on `x` with a checkpoint in `dir`; the loss fails (a crash) at step `crash_at`.
fn run(
    vs: &nn::VarStore,
    mlp: &Mlp,
    x: &Tensor,
    dir: &Path,
    crash_at: Option<usize>,
    events: &mut Vec<String>,
) -> sgm::Result<History> {
    run_with(&config(), vs, mlp, x, dir, crash_at, events)
}

/// [`run`] with the training settings `cfg`.
fn run_with(
    cfg: &TrainConfig,
    vs: &nn::VarStore,
    mlp: &Mlp,
    x: &Tensor,
    dir: &Path,
    crash_at: Option<usize>,
    events: &mut Vec<String>,
) -> sgm::Result<History> {
    let mut steps = 0usize;
    let mut hook = |e: &Event| match e {
        Event::Resumed { step, .. } => events.push(format!("resumed {step}")),
        Event::Saved { step, .. } => events.push(format!("saved {step}")),
        _ => {}
    };
    training::run(
        vs,
        x,
        cfg,
        |b| {
            let loss = dsm_loss(mlp, b, 0.5)?;
            // Held-out evaluations run without gradients; count training steps only.
            if loss.requires_grad() {
                steps += 1;
                if crash_at == Some(steps) {
                    return Err(Error::Plot("simulated crash".into()));
                }
            }
            Ok(loss)
        },
        training::Options {
            test_data: Some(x),
            hook: &mut hook,
            checkpoint: Some(training::Checkpointing::new(
                dir,
                sgm::serde_json::json!({"model": "donut mlp"}),
            )),
            ..Default::default()
        },
    )
}

#[test]
fn a_crashed_run_resumes_to_the_same_weights() {
    // Bugs caught: Adam's moments or step count not restored (the first resumed steps differ),
    // the EMA restarted or its warm-up counter reset, the learning-rate schedule restarted, the
    // shuffle or the noise of the resumed steps drawn from another generator position, the
    // partial epoch's loss sum lost.
    let _rng = rng_lock();
    data::seed(0);
    let x = Tensor::randn([300, 2], (Kind::Float, test_device())); // 5 batches a epoch, 15 steps
    let whole_dir = tmpdir("resume-whole");
    let (vs, mlp) = net(11);
    let mut events = Vec::new();
    let whole = run(&vs, &mlp, &x, &whole_dir, None, &mut events).unwrap();
    assert_eq!(whole.steps, 15);
    assert!(!whole.interrupted);
    // Every 4 steps, and at the end (the multiple 8 falls mid-epoch 2, 12 mid-epoch 3).
    assert_eq!(events, ["saved 4", "saved 8", "saved 12", "saved 15"]);
    let whole_params = params(&vs);

    // Crash in the 10th training step, after the checkpoint at step 8.
    let crash_dir = tmpdir("resume-crash");
    let (vs, mlp) = net(11);
    let mut events = Vec::new();
    let crashed = run(&vs, &mlp, &x, &crash_dir, Some(10), &mut events);
    assert!(crashed.is_err());
    assert_eq!(events.last().map(String::as_str), Some("saved 8"));

    // A new process would start from fresh weights: use other initial weights on purpose.
    let (vs, mlp) = net(99);
    let mut events = Vec::new();
    let resumed = run(&vs, &mlp, &x, &crash_dir, None, &mut events).unwrap();
    assert_eq!(events.first().map(String::as_str), Some("resumed 8"));
    assert_eq!(resumed.resumed_at, 8);
    assert_eq!(resumed.steps, 15);
    assert_eq!(resumed.train_loss, whole.train_loss);
    assert_eq!(resumed.test_loss, whole.test_loss);
    let diff = max_abs_diff(&params(&vs), &whole_params);
    assert_eq!(
        diff, 0.0,
        "resumed weights differ from the uninterrupted run's by {diff}"
    );

    // Running it again finds it complete: nothing is trained, the same weights come back.
    let (vs, mlp) = net(5);
    let mut events = Vec::new();
    let again = run(&vs, &mlp, &x, &crash_dir, None, &mut events).unwrap();
    assert_eq!(events, ["resumed 15"]);
    assert_eq!(again.steps, 15);
    assert_eq!(max_abs_diff(&params(&vs), &whole_params), 0.0);

    // `checkpoint::load_weights` (what `sgm sample` uses) reads the EMA weights of the end.
    let (mut vs, _) = net(5);
    sgm::checkpoint::load_weights(&crash_dir, &mut vs).unwrap();
    assert_eq!(max_abs_diff(&params(&vs), &whole_params), 0.0);
}

#[test]
fn a_resumed_run_keeps_the_precision_its_first_session_resolved() {
    // Bug caught: `Precision::Auto` resolved afresh when a run resumes, so a run moved to a
    // machine with (or without) bfloat16 matrix units would go on in another precision than the
    // one it started in. The first session's record is made to say the other precision, as if
    // it had run on such a machine: the resumed steps must run in that one.
    let _rng = rng_lock();
    data::seed(0);
    let device = test_device();
    let x = Tensor::randn([300, 2], (Kind::Float, device));
    let cfg = TrainConfig {
        precision: Precision::Auto,
        ..config()
    };
    let here = Precision::Auto.resolve(device).unwrap();
    let elsewhere = match here {
        Precision::Float32 => Precision::Bf16Autocast,
        _ => Precision::Float32,
    };
    let whole_dir = tmpdir("precision-whole");
    let (vs, mlp) = net(11);
    let whole = run_with(&cfg, &vs, &mlp, &x, &whole_dir, None, &mut Vec::new()).unwrap();
    assert_eq!(whole.precision, Some(here));

    let dir = tmpdir("precision-moved");
    let (vs, mlp) = net(11);
    assert!(run_with(&cfg, &vs, &mlp, &x, &dir, Some(10), &mut Vec::new()).is_err());
    let state_path = dir.join("training_state.json");
    let mut state: sgm::serde_json::Value =
        sgm::serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert_eq!(
        state["history"]["precision"],
        sgm::serde_json::to_value(here).unwrap()
    );
    state["history"]["precision"] = sgm::serde_json::to_value(elsewhere).unwrap();
    std::fs::write(&state_path, state.to_string()).unwrap();

    let (vs, mlp) = net(99);
    let resumed = run_with(&cfg, &vs, &mlp, &x, &dir, None, &mut Vec::new()).unwrap();
    assert_eq!(resumed.resumed_at, 8);
    assert_eq!(resumed.precision, Some(elsewhere));
    // The epoch of the first checkpoint (5 steps) ran in `here` both times; the later ones ran
    // their resumed steps in `elsewhere`, whose rounding differs.
    assert_eq!(resumed.train_loss[0], whole.train_loss[0]);
    assert_ne!(resumed.train_loss[1..], whole.train_loss[1..]);
}

#[test]
fn losses_read_in_bursts_keep_every_step_and_a_non_finite_one_never_reaches_a_checkpoint() {
    // The loop reads losses from the device every few dozen steps, not every step. Bugs caught:
    // a step's loss reported under another step or lost at a read, the epoch's mean built from
    // unread losses, a NaN reported at the step where it was read instead of where it happened,
    // a checkpoint written between the NaN and its read (weights stepped with a NaN gradient).
    let _rng = rng_lock();
    data::seed(0);
    let x = Tensor::randn([400, 2], (Kind::Float, test_device())); // 50 steps of 8 an epoch
    let cfg = TrainConfig {
        batch_size: 8,
        epochs: 2,
        checkpoint_every: 40,
        ..config()
    };
    let dir = tmpdir("resume-nan");
    let (vs, mlp) = net(3);
    let (mut produced, mut reported, mut saved, mut epochs) = (vec![], vec![], vec![], vec![]);
    let mut hook = |e: &Event| match e {
        Event::Step { step, loss, .. } => reported.push((*step, *loss)),
        Event::Saved { step, .. } => saved.push(*step),
        Event::Epoch { train_loss, .. } => epochs.push(*train_loss),
        _ => {}
    };
    let err = training::run(
        &vs,
        &x,
        &cfg,
        |b| {
            let loss = dsm_loss(&mlp, b, 0.5)?;
            if !loss.requires_grad() {
                return Ok(loss);
            }
            // Step 75 (epoch 2's 25th) is NaN; later steps are whatever the NaN weights give.
            let loss = if produced.len() == 74 {
                loss * f64::NAN
            } else {
                loss
            };
            produced.push(loss.double_value(&[]));
            Ok(loss)
        },
        training::Options {
            hook: &mut hook,
            checkpoint: Some(training::Checkpointing::new(
                &dir,
                sgm::serde_json::json!({"model": "donut mlp"}),
            )),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::NonFiniteLoss { epoch: 2, step: 75, loss } if loss.is_nan()),
        "{err}"
    );
    // Every step before the NaN was reported once, in order, with its own loss.
    let expected: Vec<(usize, f64)> = (1..).zip(produced[..74].iter().copied()).collect();
    assert_eq!(reported, expected);
    // Epoch 1's mean is that of its 50 steps (equal batches of 8).
    let mean = produced[..50].iter().sum::<f64>() / 50.0;
    assert_eq!(epochs.len(), 1);
    assert!(
        (epochs[0] - mean).abs() <= 1e-12 * mean.abs(),
        "{} vs {mean}",
        epochs[0]
    );
    // The checkpoint due at step 80 was not written (the NaN came first); the one of step 40
    // holds finite weights. The NaN was found within one read interval.
    assert_eq!(saved, [40]);
    assert!(
        produced.len() < 75 + 32,
        "read {} steps late",
        produced.len() - 75
    );
    let (mut loaded, _) = net(4);
    sgm::checkpoint::load_weights(&dir, &mut loaded).unwrap();
    for (name, p) in params(&loaded) {
        assert!(
            p.isfinite().all().int64_value(&[]) == 1,
            "{name} is not finite"
        );
    }
}

#[test]
fn a_checkpoint_of_another_configuration_is_an_error() {
    let _rng = rng_lock();
    data::seed(0);
    let x = Tensor::randn([100, 2], (Kind::Float, test_device()));
    let dir = tmpdir("resume-mismatch");
    let (vs, mlp) = net(1);
    run(&vs, &mlp, &x, &dir, None, &mut Vec::new()).unwrap();
    let (vs, mlp) = net(1);
    let other = TrainConfig {
        lr: 1e-3,
        ..config()
    };
    let err = training::run(
        &vs,
        &x,
        &other,
        |b| dsm_loss(&mlp, b, 0.5),
        training::Options {
            checkpoint: Some(training::Checkpointing::new(
                &dir,
                sgm::serde_json::json!({"model": "donut mlp"}),
            )),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("train.lr: saved 0.002, now 0.001"), "{err}");
    // Whether the step runs from a CUDA graph is not another configuration: the same run
    // resumes with the flag switched.
    let mut events = Vec::new();
    let graphed = TrainConfig {
        cuda_graph: true,
        ..config()
    };
    run_with(&graphed, &vs, &mlp, &x, &dir, None, &mut events).unwrap();
    assert!(
        events.iter().any(|e| e.starts_with("resumed")),
        "{events:?}"
    );
    // A folder with weights but no training state (a plain `checkpoint::save`) is not resumed
    // over, nor overwritten.
    let plain = tmpdir("resume-plain");
    sgm::checkpoint::save(&plain, &vs, &"x", sgm::serde_json::json!({})).unwrap();
    let err = run(&vs, &mlp, &x, &plain, None, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no training state"), "{err}");
}

#[test]
fn fused_adam_moves_by_lr_along_a_constant_gradient_and_bad_lists_are_named() {
    // loss = Σ gᵢθᵢ has the constant gradient g, so at every step t the bias-corrected moments
    // are exactly m̂ = g and v̂ = g², and each step moves θ by lr · g / (|g| + ε): after k steps
    // θ = −k lr g / (|g| + ε). Bugs caught: a bias correction missing or wrong (the first step
    // off by √(1 − β₂) ≈ 0.03), the step number not advanced on the device, a parameter skipped.
    let vs = nn::VarStore::new(test_device());
    let theta = vs.root().zeros("theta", &[4]);
    let g = [0.5f64, -2.0, 1e-3, 0.0];
    let gt = from_slice(&g.map(|x| x as f32));
    let (lr, k) = (0.01, 7);
    let mut opt = Adam::new(&vs, lr).unwrap();
    for _ in 0..k {
        opt.backward_step(&(&theta * &gt).sum(Kind::Float), None)
            .unwrap();
    }
    let got = Vec::<f64>::try_from(theta.to_kind(Kind::Double)).unwrap();
    for (gi, ti) in g.iter().zip(&got) {
        let expected = -(k as f64) * lr * gi / (gi.abs() + 1e-8);
        assert!(
            (ti - expected).abs() < 1e-5,
            "g = {gi}: θ = {ti}, expected {expected}"
        );
    }
    // The multi-tensor kernels name their operation on bad input instead of aborting.
    let a = Tensor::zeros([3], (Kind::Float, test_device()));
    let b = Tensor::ones([4], (Kind::Float, test_device()));
    let err = sgm::fused::lerp(&[&a], &[], 0.5).unwrap_err().to_string();
    assert!(
        err.contains("_foreach_lerp_") && err.contains("[1, 0]"),
        "{err}"
    );
    let err = sgm::fused::lerp(&[&a], &[&b], 0.5).unwrap_err().to_string();
    assert!(err.contains("_foreach_lerp_"), "{err}");
    // And compute the lerp where the input is good: a + 0.25 (b − a).
    let c = Tensor::ones([3], (Kind::Float, test_device())) * 2.0;
    sgm::fused::lerp(&[&a], &[&c], 0.25).unwrap();
    assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![0.5; 3]);
}

#[test]
fn channels_last_keeps_shape_and_values_and_gradients_keep_the_parameters_layout() {
    let _rng = rng_lock();
    // The layout: NHWC strides for [2, 3, 4, 5] are [60, 1, 15, 3]; shape and values unchanged.
    let x = Tensor::randn([2, 3, 4, 5], (Kind::Float, test_device()));
    let y = sgm::fused::channels_last(&x).unwrap();
    assert_eq!(y.size(), x.size());
    assert_eq!(y.stride(), vec![60, 1, 15, 3]);
    assert!(x.equal(&y));
    // A tensor that is not 4-D has no channels-last layout: a typed error naming the operation.
    let err = sgm::fused::channels_last(&Tensor::zeros([3, 4], (Kind::Float, test_device())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels_last"), "{err}");
    // The U-Nets run channels-last inside; their parameters stay contiguous, and so must every
    // gradient: the fused Adam reads a parameter, its gradient and its moments element by
    // element in storage order, so a gradient in another layout would update the wrong weights.
    let vs = nn::VarStore::new(test_device());
    let net = BlogUnet::new(&vs.root(), &UnetConfig::default()).unwrap();
    let x = Tensor::randn([2, 1, 28, 28], (Kind::Float, test_device()));
    let sigma = from_slice(&[0.1f32, 1.0]);
    net.score(&x, &sigma)
        .unwrap()
        .square()
        .sum(Kind::Float)
        .backward();
    let vars = vs.variables();
    assert!(vars.values().any(|v| v.dim() == 4), "no convolution weight");
    for (name, v) in vars {
        let g = v.grad();
        // (Contiguity, not equal strides: a stride along a dimension of size 1 is arbitrary.)
        assert!(v.is_contiguous() && g.defined(), "{name}");
        assert!(
            g.is_contiguous(),
            "{name}: gradient strides {:?}",
            g.stride()
        );
    }
}
