//! `sgm bench`: the benchmark workloads of issue 4, timed in this process, optionally beside
//! the same workloads in PyTorch (`bench_pytorch.py`, run with the set-up's Python and the same
//! thread count), with the arithmetic floor of the convolutional ones.
//!
//! * W1: `ConditionedMlp` 2-128-128-2, softplus, output / σ; batch 512; L = 10 geometric σ
//!   from 1 to 0.01 drawn per sample; λ = σ²; Adam 1e-3. Sampler: annealed Langevin on
//!   10,000 particles.
//! * W2: homework's `ConditionedSimpleResnet` (1 → 1, 64 filters, 4 blocks, 10 embeddings);
//!   batch 128 of 1×28×28. Sampler: batch 100.
//! * W3: the blog's U-Net (16 start filters, σ as a second channel); batch 120. Sampler:
//!   batch 100.
//!
//! One JSON line per workload and implementation; with `--compare-pytorch`, PyTorch runs on the
//! same device as sgm, as eager PyTorch and as the faster variants a performance-minded user
//! would write (fused Adam; on CUDA the whole step in a CUDA graph, each replay fed a new batch,
//! and one graph per annealing level, also under bf16 autocast with channels_last), one line per
//! workload and variant (`train_batches`: whether its training steps read one fixed batch, as
//! the eager and fused-Adam lines of both sides do, or are fed new ones, as both sides' graphed
//! lines are), then one line per workload with the ratios sgm / PyTorch (above 1: sgm is
//! faster) against eager, against each variant and against the fastest.

use crate::{CliError, CliResult};
use clap::Args;
use serde_json::{json, Value};
use sgm::langevin::{annealed_langevin, AnnealedConfig};
use sgm::losses::{multiscale_dsm_loss, MultiScaleConfig};
use sgm::nets::{
    BlogUnet, ConditionedMlp, ConditionedMlpConfig, ConditionedSimpleResnet, ResnetConfig,
    UnetConfig,
};
use sgm::noise::Sigmas;
use sgm::tch::nn;
use sgm::tch::{Device, Kind, Tensor};
use sgm::Score;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// Workloads to run, comma-separated.
    #[arg(long, default_value = "w1,w2,w3", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Intra-op threads for libtorch [default: libtorch's own choice].
    #[arg(long)]
    threads: Option<i32>,
    /// Multiply every workload's number of timed steps by this (e.g. 0.1 for a smoke run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Also run the same workloads in PyTorch and print the ratios.
    #[arg(long)]
    compare_pytorch: bool,
    /// The Python with torch installed [default: .venv/bin/python at the repository's root, or
    /// `python3` where that is absent (a machine the binary was carried to)].
    #[arg(long)]
    python: Option<PathBuf>,
}

/// One workload's sizes and step counts.
struct Workload {
    name: &'static str,
    train_batch: i64,
    sampler_batch: i64,
    train_steps: usize,
    sampler_evals: usize,
    sample_shape: &'static [i64],
    /// Forward FLOPs per sample of the network's convolutions and linear layers.
    forward_flops: f64,
}

const LEVELS: usize = 10;

/// `2 k² C_in C_out H W` for a convolution producing `H × W` (or reading it, transposed).
fn conv_flops(c_in: i64, c_out: i64, k: i64, h: i64, w: i64) -> f64 {
    2.0 * (k * k * c_in * c_out * h * w) as f64
}

fn resnet_flops(f: i64, blocks: i64) -> f64 {
    let block = conv_flops(f, f, 1, 28, 28) * 2.0 + conv_flops(f, f, 3, 28, 28);
    conv_flops(1, f, 3, 28, 28) + blocks as f64 * block + conv_flops(f, 1, 3, 28, 28)
}

fn unet_flops(f: i64) -> f64 {
    let c = conv_flops;
    c(2, f, 3, 28, 28)
        + c(f, f, 3, 28, 28)
        + c(f, 2 * f, 3, 14, 14)
        + c(2 * f, 2 * f, 3, 14, 14)
        + c(2 * f, 4 * f, 3, 7, 7)
        + c(4 * f, 4 * f, 3, 7, 7)
        + c(4 * f, 2 * f, 3, 7, 7) // transposed, 7×7 → 14×14
        + c(4 * f, 2 * f, 3, 14, 14)
        + c(2 * f, 2 * f, 3, 14, 14)
        + c(2 * f, f, 3, 14, 14) // transposed, 14×14 → 28×28
        + c(2 * f, f, 3, 28, 28)
        + c(f, f, 3, 28, 28)
        + c(f, 1, 1, 28, 28)
}

fn workloads(scale: f64) -> Vec<Workload> {
    let n = |steps: f64| ((steps * scale).round() as usize).max(LEVELS);
    vec![
        Workload {
            name: "W1",
            train_batch: 512,
            sampler_batch: 10_000,
            train_steps: n(1000.0),
            sampler_evals: n(200.0),
            sample_shape: &[2],
            forward_flops: 2.0 * (2 * 128 + 128 * 128 + 128 * 2) as f64,
        },
        Workload {
            name: "W2",
            train_batch: 128,
            sampler_batch: 100,
            train_steps: n(20.0),
            sampler_evals: n(40.0),
            sample_shape: &[1, 28, 28],
            forward_flops: resnet_flops(64, 4),
        },
        Workload {
            name: "W3",
            train_batch: 120,
            sampler_batch: 100,
            train_steps: n(60.0),
            sampler_evals: n(100.0),
            sample_shape: &[1, 28, 28],
            forward_flops: unet_flops(16),
        },
    ]
}

/// The machine's float32 matrix-multiply rate (GFLOP/s), from 2048 × 2048 products.
fn matmul_gflops(device: Device) -> f64 {
    let n = 2048;
    let a = Tensor::randn([n, n], (Kind::Float, device));
    let b = Tensor::randn([n, n], (Kind::Float, device));
    for _ in 0..2 {
        let _ = a.matmul(&b);
    }
    let reps = 6;
    let t0 = Instant::now();
    let mut sink = 0.0;
    for _ in 0..reps {
        sink += a.matmul(&b).double_value(&[0, 0]);
    }
    let secs = t0.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    2.0 * (n as f64).powi(3) * reps as f64 / secs / 1e9
}

fn build(name: &str, vs: &nn::VarStore, sigmas: &Sigmas) -> sgm::Result<Box<dyn Score>> {
    let root = vs.root();
    Ok(match name {
        "W1" => Box::new(ConditionedMlp::new(&root, &ConditionedMlpConfig::w1())?),
        "W2" => Box::new(ConditionedSimpleResnet::new(
            &root,
            &ResnetConfig::homework(sigmas.clone()),
        )?),
        _ => Box::new(BlogUnet::new(&root, &UnetConfig::default())?),
    })
}

/// How sgm runs a workload: eager (the loop below, one host read a step, as PyTorch's eager
/// `.item()`), or on CUDA as `sgm train` and the sampler run with their CUDA graphs
/// ([`sgm::cuda_graph`]), in float32 or under bf16 autocast.
#[derive(Clone, Copy, PartialEq)]
enum SgmVariant {
    Eager,
    CudaGraph,
    CudaGraphBf16,
}

impl SgmVariant {
    fn name(self) -> &'static str {
        match self {
            SgmVariant::Eager => "sgm",
            SgmVariant::CudaGraph => "sgm cuda-graph",
            SgmVariant::CudaGraphBf16 => "sgm cuda-graph-bf16",
        }
    }

    /// What each training step reads: the same batch every step ("fixed": the eager loop
    /// below, as PyTorch's eager variants) or a new batch of a data set in a random order
    /// ("fed": `sgm train`'s graphed step, as PyTorch's graph variants feed their replays).
    fn train_batches(self) -> &'static str {
        match self {
            SgmVariant::Eager => "fixed",
            SgmVariant::CudaGraph | SgmVariant::CudaGraphBf16 => "fed",
        }
    }

    /// The variants for a workload on a device: graphs on CUDA only, bf16 for the
    /// convolutional networks only (as PyTorch's variants).
    fn for_workload(name: &str, device: Device) -> Vec<SgmVariant> {
        match (device.is_cuda(), name) {
            (false, _) => vec![SgmVariant::Eager],
            (true, "W1") => vec![SgmVariant::Eager, SgmVariant::CudaGraph],
            (true, _) => vec![
                SgmVariant::Eager,
                SgmVariant::CudaGraph,
                SgmVariant::CudaGraphBf16,
            ],
        }
    }
}

/// Training steps per second of `sgm::training::train` with its CUDA graph on `w`: one epoch
/// over random data of `train_steps` batches, timed from the first read of the losses after
/// the capture to the last (the warm-up steps and the capture are left out, as PyTorch's graph
/// variant leaves them out).
fn graphed_train_rate(
    w: &Workload,
    net: &dyn Score,
    vs: &nn::VarStore,
    loss_cfg: &MultiScaleConfig,
    precision: sgm::precision::Precision,
) -> sgm::Result<f64> {
    let mut shape = vec![w.train_batch * w.train_steps as i64];
    shape.extend_from_slice(w.sample_shape);
    let data = Tensor::randn(&shape, (Kind::Float, vs.device()));
    let cfg = sgm::training::TrainConfig {
        epochs: 1,
        batch_size: w.train_batch,
        lr: 1e-3,
        seed: Some(0),
        precision,
        cuda_graph: true,
        ..Default::default()
    };
    let mut marks: Vec<(usize, f64)> = Vec::new();
    let mut hook = |e: &sgm::training::Event| {
        if let sgm::training::Event::Step { step, elapsed, .. } = e {
            marks.push((*step, elapsed.as_secs_f64()));
        }
    };
    sgm::training::train(
        vs,
        &data,
        None,
        &cfg,
        |b| multiscale_dsm_loss(net, b, loss_cfg),
        &mut hook,
    )?;
    // Steps read together share the read's time: keep the last of each read.
    let reads: Vec<(usize, f64)> = marks
        .windows(2)
        .filter(|p| p[1].1 != p[0].1)
        .map(|p| p[0])
        .chain(marks.last().copied())
        .filter(|&(step, _)| step > sgm::training::GRAPH_WARMUP + 1)
        .collect();
    match (reads.first(), reads.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => Ok((b.0 - a.0) as f64 / (b.1 - a.1)),
        _ => Err(sgm::Error::InvalidParameter {
            name: "train_steps",
            value: w.train_steps.to_string(),
            why: "too few steps to time the graph's replays (use a larger --scale)",
        }),
    }
}

fn time_workload(w: &Workload, device: Device, variant: SgmVariant) -> sgm::Result<(f64, f64)> {
    sgm::data::seed(0);
    let sigmas = Sigmas::geometric(1.0, 0.01, LEVELS)?;
    let vs = nn::VarStore::new(device);
    let net = build(w.name, &vs, &sigmas)?;
    let loss_cfg = MultiScaleConfig::new(sigmas.clone());
    // The crate's Adam, as `sgm train` steps it (libtorch's fused kernel, one call a step).
    let mut opt = sgm::training::Adam::new(&vs, 1e-3)?;
    let mut shape = vec![w.train_batch];
    shape.extend_from_slice(w.sample_shape);
    let batch = Tensor::randn(&shape, (Kind::Float, device));
    let mut step = || -> sgm::Result<f64> {
        let loss = multiscale_dsm_loss(net.as_ref(), &batch, &loss_cfg)?;
        opt.backward_step(&loss, None)?;
        Ok(loss.double_value(&[]))
    };
    let precision = match variant {
        SgmVariant::CudaGraphBf16 => sgm::precision::Precision::Bf16Autocast,
        _ => sgm::precision::Precision::Float32,
    };
    let train_rate = if variant == SgmVariant::Eager {
        for _ in 0..3 {
            step()?;
        }
        let t0 = Instant::now();
        for _ in 0..w.train_steps {
            step()?;
        }
        w.train_steps as f64 / t0.elapsed().as_secs_f64()
    } else {
        graphed_train_rate(w, net.as_ref(), &vs, &loss_cfg, precision)?
    };

    shape[0] = w.sampler_batch;
    let x0 = Tensor::randn(&shape, (Kind::Float, device));
    let warm = AnnealedConfig {
        steps_per_level: 1,
        eps: 1e-6,
        precision,
        cuda_graph: variant != SgmVariant::Eager,
        ..AnnealedConfig::ncsn()
    };
    annealed_langevin(net.as_ref(), &sigmas, &x0, &warm)?;
    let cfg = AnnealedConfig {
        steps_per_level: w.sampler_evals / LEVELS,
        ..warm
    };
    let t0 = Instant::now();
    let out = annealed_langevin(net.as_ref(), &sigmas, &x0, &cfg)?;
    let _ = out.samples.sum(Kind::Double).double_value(&[]);
    let evals = (cfg.steps_per_level * LEVELS) as f64;
    Ok((train_rate, evals / t0.elapsed().as_secs_f64()))
}

/// sgm's fastest variant on workload `name` for each phase: its line with the best training
/// rate and the best sampler rate, naming which variants they were.
fn fastest_sgm(ours: &[Value], name: &str) -> Value {
    let lines: Vec<&Value> = ours.iter().filter(|l| l["workload"] == name).collect();
    let best = |k: &str| {
        lines
            .iter()
            .copied()
            .max_by(|a, b| {
                let r = |l: &Value| l[k].as_f64().unwrap_or(f64::NAN);
                r(a).total_cmp(&r(b))
            })
            .expect("sgm ran every chosen workload")
    };
    let (train, sampler) = (best("train_steps_per_s"), best("sampler_evals_per_s"));
    json!({
        "workload": name,
        "train_steps_per_s": train["train_steps_per_s"],
        "sampler_evals_per_s": sampler["sampler_evals_per_s"],
        "sgm_train_variant": train["variant"],
        "sgm_sampler_variant": sampler["variant"],
    })
}

/// The ratios sgm / PyTorch (above 1: sgm is faster) for one workload: against eager PyTorch,
/// against each variant, and against the fastest variant of each phase.
fn compare(mine: &Value, variants: &[&Value], threads: i32) -> Value {
    let rate = |line: &Value, k: &str| line[k].as_f64().unwrap_or(f64::NAN);
    let ratio = |other: &Value, k: &str| rate(mine, k) / rate(other, k);
    let fastest = |k: &str| {
        variants
            .iter()
            .copied()
            .max_by(|a, b| rate(a, k).total_cmp(&rate(b, k)))
            .expect("at least one variant")
    };
    let eager = variants
        .iter()
        .copied()
        .find(|v| v["variant"] == "eager")
        .unwrap_or(variants[0]);
    let per_variant: serde_json::Map<String, Value> = variants
        .iter()
        .map(|v| {
            (
                v["variant"].as_str().unwrap_or("?").to_string(),
                json!({
                    "train_steps_per_s_ratio": ratio(v, "train_steps_per_s"),
                    "sampler_evals_per_s_ratio": ratio(v, "sampler_evals_per_s"),
                }),
            )
        })
        .collect();
    let (train_best, sampler_best) = (fastest("train_steps_per_s"), fastest("sampler_evals_per_s"));
    json!({
        "workload": mine["workload"],
        "compare": "sgm / pytorch (above 1: sgm faster)",
        "device": eager["device"],
        "threads": threads,
        "train_steps_per_s_ratio": ratio(eager, "train_steps_per_s"),
        "sampler_evals_per_s_ratio": ratio(eager, "sampler_evals_per_s"),
        "train_vs_fastest": {"variant": train_best["variant"], "ratio": ratio(train_best, "train_steps_per_s")},
        "sampler_vs_fastest": {"variant": sampler_best["variant"], "ratio": ratio(sampler_best, "sampler_evals_per_s")},
        "variants": per_variant,
        "sgm_train_variant": mine["sgm_train_variant"],
        "sgm_sampler_variant": mine["sgm_sampler_variant"],
        "pytorch_version": eager["version"],
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `built` (a path of the machine the binary was built on) where it exists, else `fallback`:
/// on a machine the binary was carried to, such as a GPU machine without Rust, the build tree
/// is absent.
fn built_or(built: PathBuf, fallback: &str) -> PathBuf {
    if built.exists() {
        built
    } else {
        PathBuf::from(fallback)
    }
}

fn pytorch_lines(
    args: &BenchArgs,
    threads: i32,
    device: Device,
    names: &[&str],
) -> CliResult<Vec<Value>> {
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| built_or(repo_root().join(".venv/bin/python"), "python3"));
    // Under the current folder otherwise: a copy of the repository.
    let script = built_or(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench_pytorch.py"),
        "crate/cli/bench_pytorch.py",
    );
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["--threads", &threads.to_string()])
        .args(["--scale", &args.scale.to_string()])
        .args(["--workloads", &names.join(",")])
        .args(["--device", &sgm::device::name(device)])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot run {} ({e}); pass --python",
                python.display()
            ))
        })?;
    if !out.status.success() {
        return Err(CliError::Usage(format!(
            "{} {} failed with {}",
            python.display(),
            script.display(),
            out.status
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                CliError::Usage(format!("bench_pytorch.py printed a bad line ({e}): {l}"))
            })
        })
        .collect()
}

pub fn run(args: &BenchArgs) -> CliResult<ExitCode> {
    if !(args.scale.is_finite() && args.scale > 0.0) {
        return Err(CliError::Usage(format!(
            "--scale must be > 0, got {}",
            args.scale
        )));
    }
    if let Some(t) = args.threads {
        if t < 1 {
            return Err(CliError::Usage(format!("--threads must be >= 1, got {t}")));
        }
        sgm::tch::set_num_threads(t);
    }
    let threads = sgm::tch::get_num_threads();
    let all = workloads(args.scale);
    let mut chosen = Vec::new();
    for name in &args.workloads {
        let w = all
            .iter()
            .find(|w| w.name.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                CliError::Usage(format!("unknown workload {name:?}; known: w1, w2, w3"))
            })?;
        chosen.push(w);
    }
    let device = sgm::device();
    // cuDNN's benchmark mode (time the convolution algorithms for each shape once, keep the
    // fastest), as `bench_pytorch.py` sets it for every PyTorch variant on CUDA: both sides
    // run with the same setting.
    let cudnn_benchmark = device.is_cuda();
    sgm::tch::Cuda::cudnn_set_benchmark(cudnn_benchmark);
    let gflops = matmul_gflops(device);
    let mut ours = Vec::new();
    for (w, variant) in chosen.iter().flat_map(|w| {
        SgmVariant::for_workload(w.name, device)
            .into_iter()
            .map(move |v| (w, v))
    }) {
        let (train_rate, eval_rate) = match time_workload(w, device, variant) {
            Ok(rates) => rates,
            // A graphed variant that fails is reported and skipped: the eager line and
            // PyTorch's still come.
            Err(e) if variant != SgmVariant::Eager => {
                println!(
                    "{}",
                    json!({"workload": w.name, "impl": "sgm (tch)", "variant": variant.name(), "error": e.to_string()})
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // A training step costs about three forward passes (forward, and a backward pass
        // that computes gradients for both inputs and weights).
        let flops_per_step = 3.0 * w.forward_flops * w.train_batch as f64;
        let floor = flops_per_step / (gflops * 1e9);
        let line = json!({
            "workload": w.name,
            "impl": "sgm (tch)",
            "variant": variant.name(),
            "device": sgm::device::name(device),
            "device_detail": sgm::device::describe(device),
            "threads": threads,
            "cudnn_benchmark": cudnn_benchmark,
            "train_batch": w.train_batch,
            "train_steps": w.train_steps,
            "train_steps_per_s": train_rate,
            "train_batches": variant.train_batches(),
            "sampler_batch": w.sampler_batch,
            "sampler_evals": w.sampler_evals,
            "sampler_evals_per_s": eval_rate,
            "sampler_sample_evals_per_s": eval_rate * w.sampler_batch as f64,
            "matmul_gflops": gflops,
            "flops_per_train_step": flops_per_step,
            "floor_s_per_train_step": floor,
            "share_of_floor": floor * train_rate,
        });
        println!("{line}");
        ours.push(line);
    }
    if args.compare_pytorch {
        let names: Vec<&str> = chosen.iter().map(|w| w.name).collect();
        let theirs = pytorch_lines(args, threads, device, &names)?;
        for line in &theirs {
            println!("{line}");
        }
        for name in &names {
            let mine = fastest_sgm(&ours, name);
            let mine = &mine;
            let variants: Vec<&Value> = theirs
                .iter()
                .filter(|t| t["workload"] == mine["workload"])
                .collect();
            if variants.is_empty() {
                return Err(CliError::Usage(format!(
                    "PyTorch printed no {}",
                    mine["workload"]
                )));
            }
            println!("{}", compare(mine, &variants, threads));
        }
    }
    Ok(ExitCode::SUCCESS)
}
