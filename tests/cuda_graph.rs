//! CUDA graphs (issue 10, `sgm::cuda_graph`): the graphed training step and sampler compute what
//! their eager versions compute, and replays draw new noise. On `SGM_TEST_DEVICE=cuda` these
//! run the graphs; on the CPU the flags are ignored, so the same tests check that they change
//! nothing there, and capturing is refused with the device named.

use sgm::cuda_graph::{CudaGraph, SideStream};
use sgm::data::{self, GaussianMixture};
use sgm::langevin::AnnealedConfig;
use sgm::losses::{multiscale_dsm_loss, MultiScaleConfig};
use sgm::nets::{ConditionedMlp, ConditionedMlpConfig};
use sgm::noise::Sigmas;
use sgm::samplers::{sample, AnnealedLangevinSampler};
use sgm::tch::{nn, Kind, Tensor};
use sgm::training::{self, LrDecay, TrainConfig};
use sgm_tests::{max_abs_diff, params, rng_lock, test_device};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// On a GPU: two replays of a captured `randn` differ, reseeding before a replay repeats its
/// draw, and that draw is the eager `randn`'s for the same seed (each replay advances the
/// generator by what the graph draws, as eager kernels do). Elsewhere: a capture or a side
/// stream is refused with an error naming the device, never a silent eager run.
#[test]
fn replays_draw_new_noise_and_a_seed_gives_the_eager_draw() {
    let _rng = rng_lock();
    let device = test_device();
    if !device.is_cuda() {
        for err in [
            CudaGraph::capture(device, || Ok(()))
                .err()
                .map(|e| e.to_string()),
            SideStream::enter(device).err().map(|e| e.to_string()),
        ] {
            let err = err.expect("refused off a GPU");
            assert!(err.contains("needs a CUDA device, got cpu"), "{err}");
        }
        return;
    }
    let _stream = SideStream::enter(device).unwrap();
    let warm = Tensor::randn([4096], (Kind::Float, device));
    let (graph, out) =
        CudaGraph::capture(device, || Ok(Tensor::randn([4096], (Kind::Float, device)))).unwrap();
    graph.replay().unwrap();
    let first = out.copy();
    graph.replay().unwrap();
    assert!(
        max_diff(&first, &out) > 0.1,
        "two replays drew the same noise"
    );
    data::seed(17);
    graph.replay().unwrap();
    let a = out.copy();
    data::seed(17);
    graph.replay().unwrap();
    assert_eq!(max_diff(&a, &out), 0.0, "the same seed gave another draw");
    data::seed(17);
    let eager = Tensor::randn([4096], (Kind::Float, device));
    assert_eq!(
        max_diff(&a, &eager),
        0.0,
        "graph and eager draws differ for one seed"
    );
    drop(warm);
}

/// A run with `cuda_graph` on ends where the eager run ends: the same per-epoch losses and
/// parameters, through warm-up steps, the capture, replays, a smaller last batch run eagerly,
/// a learning rate that changes every step (StepLR and cooldown), clipping and the EMA's
/// warm-up (its weight changes every update), and with a short warm-up (decay 0.5: constant
/// from the 9th update, so the weight on the device is left as it is, not rewritten, for
/// most replays). On the CPU the flag is ignored: bit for bit.
/// On a GPU the two differ only by rounding (the graphed Adam reads its rate as float32 and
/// the EMA's update is three kernels instead of one lerp): 10⁻⁴ relative is far above that
/// and far below what a stale rate, input or EMA weight does (percents).
#[test]
fn graphed_training_ends_where_eager_training_ends() {
    let _rng = rng_lock();
    let device = test_device();
    let sigmas = Sigmas::geometric(1.0, 0.05, 8).unwrap();
    let (data_x, _) = data::two_moons(1000, 0.1, 4).unwrap();
    let run = |cuda_graph: bool, ema_decay: f64| {
        data::seed(5);
        let vs = nn::VarStore::new(device);
        let net = ConditionedMlp::new(&vs.root(), &ConditionedMlpConfig::w1()).unwrap();
        let loss_cfg = MultiScaleConfig::new(sigmas.clone());
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 64, // 15 full batches and one of 40 an epoch
            lr: 2e-3,
            seed: Some(3),
            lr_decay: Some(LrDecay {
                step_epochs: 1,
                gamma: 0.7,
            }),
            cooldown: Some(0.5),
            grad_clip: Some(1.0),
            ema_decay: Some(ema_decay),
            cuda_graph,
            ..Default::default()
        };
        let history = training::train(
            &vs,
            &data_x,
            None,
            &cfg,
            |b| multiscale_dsm_loss(&net, b, &loss_cfg),
            &mut training::silent(),
        )
        .unwrap();
        (history.train_loss, params(&vs))
    };
    for ema_decay in [0.99, 0.5] {
        let (eager_loss, eager_params) = run(false, ema_decay);
        let (graph_loss, graph_params) = run(true, ema_decay);
        assert_eq!(eager_loss.len(), 3);
        let tol = if device.is_cuda() { 1e-4 } else { 0.0 };
        for (e, g) in eager_loss.iter().zip(&graph_loss) {
            assert!(
                (e - g).abs() <= tol * e.abs(),
                "EMA {ema_decay}: epoch losses {eager_loss:?} against {graph_loss:?}"
            );
        }
        let diff = max_abs_diff(&eager_params, &graph_params);
        assert!(
            diff <= tol * 10.0,
            "EMA {ema_decay}: parameters differ by up to {diff}"
        );
    }
}

/// Annealed Langevin with `cuda_graph` on (each level's first step eager, its second captured,
/// the rest replayed) gives the eager chain's particles for the same seed and counts the same
/// score evaluations. CPU: the flag is ignored, bit for bit.
#[test]
fn graphed_annealed_langevin_follows_the_eager_chain() {
    let _rng = rng_lock();
    let device = test_device();
    let mixture = GaussianMixture::new(
        vec![0.3, 0.7],
        vec![vec![-2.0, 0.0], vec![2.0, 1.0]],
        vec![0.5, 0.8],
    )
    .unwrap();
    let sigmas = Sigmas::geometric(3.0, 0.1, 5).unwrap();
    data::seed(8);
    let x0 = Tensor::randn([2000, 2], (Kind::Float, device));
    let run = |cuda_graph: bool| {
        let mut sampler = AnnealedLangevinSampler {
            sigmas: sigmas.clone(),
            config: AnnealedConfig {
                steps_per_level: 6,
                eps: 0.05,
                denoise: true,
                cuda_graph,
                ..AnnealedConfig::ncsn()
            },
        };
        sample(&mut sampler, &mixture, &x0, Some(9), &mut |_| {}).unwrap()
    };
    let (eager, graphed) = (run(false), run(true));
    assert_eq!((eager.nfe, eager.steps), (graphed.nfe, graphed.steps));
    assert_eq!(eager.nfe, 31);
    let tol = if device.is_cuda() { 1e-4 } else { 0.0 };
    let diff = max_diff(&eager.x, &graphed.x);
    assert!(
        diff <= tol,
        "graphed and eager particles differ by up to {diff}"
    );
    // The chain moved: a graph that replayed nothing would leave the start.
    assert!(max_diff(&graphed.x, &x0) > 1.0);
}
