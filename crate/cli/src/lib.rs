//! `sgm`: train, sample, evaluate and benchmark score-based models without a notebook.
//!
//! Every command prints one JSON object per result on stdout; progress bars go to stderr (when
//! it is a terminal); bad input ends with a non-zero exit and one line on stderr.
//!
//! The command lives in this library (`sgm_cli`) and the `sgm` binary only calls [`run`]: a
//! binary named `sgm` would document into the same folder as the library `sgm`, and cargo
//! writes the two at once there (rust-lang/cargo#6313), which failed CI with missing files.

// The argument structs' doc comments are the `--help` text, which shows placeholders such as
// `<name>` as they are: rustdoc must not read them as HTML.
#![allow(rustdoc::invalid_html_tags)]

mod bench;
mod grade;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sgm::experiment::{Data, Dataset, Experiment, Method, Model};
use sgm::images::ImageSet;
use sgm::likelihood::{self, Divergence, LikelihoodConfig};
use sgm::metrics::{self, Classifier, ClassifierConfig, EnergyReport, ImageQuality};
use sgm::plots::{self, Panel as _};
use sgm::tch::{Device, Kind, Tensor};
use sgm::training::{self, Event};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "sgm",
    version,
    about = "Train, sample, evaluate and benchmark score-based generative models (libtorch via tch).",
    after_help = "The device is the GPU when one is present; SGM_DEVICE=cpu forces the CPU."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model over a preset or a JSON config and save a checkpoint.
    Train(TrainArgs),
    /// Draw samples from a checkpoint: a PNG (grid or scatter) and a safetensors tensor.
    Sample(SampleArgs),
    /// Measure sample quality against held-out data, with floors.
    Eval(EvalArgs),
    /// Time the benchmark workloads W1-W3 (JSON lines), optionally against PyTorch.
    Bench(bench::BenchArgs),
    /// Write the student version of a homework source notebook (solutions and hidden checks out).
    Release(grade::ReleaseArgs),
    /// Grade homework submissions against their source: report.json, feedback.html, grades.csv.
    Grade(grade::GradeArgs),
    /// Check your homework notebook before you submit it: answer cells still as released or
    /// missing, edits and cells that grading leaves out (exit 1 if any).
    Validate(grade::ValidateArgs),
    /// Print a preset's full configuration as JSON, a starting point for `--config`.
    Config {
        /// One of: donut, donut_dsm, moons, moons_single, mnist, mnist_resnet, fashion.
        preset: String,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ExperimentArg {
    /// A preset: donut, donut_dsm, moons, moons_single, mnist, mnist_resnet, fashion.
    #[arg(long)]
    preset: Option<String>,
    /// A JSON experiment (see `sgm config <preset>`).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ExperimentArg {
    fn load(&self) -> sgm::Result<Experiment> {
        match (&self.preset, &self.config) {
            (Some(name), _) => Experiment::preset(name),
            (None, Some(path)) => Experiment::from_json_file(path),
            (None, None) => unreachable!("clap requires one of --preset, --config"),
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    experiment: ExperimentArg,
    /// Checkpoint folder [default: output/runs/<name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
}

#[derive(Args)]
struct SampleArgs {
    /// A checkpoint folder written by `sgm train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Number of samples [default: the experiment's n_samples].
    #[arg(long)]
    n: Option<i64>,
    /// Output folder [default: <checkpoint>/samples].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the sampler's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override annealed Langevin's steps per noise level (annealed-Langevin checkpoints only).
    #[arg(long)]
    steps_per_level: Option<usize>,
    /// Override annealed Langevin's base step size ε (annealed-Langevin checkpoints only).
    #[arg(long)]
    eps: Option<f64>,
}

#[derive(Args)]
struct EvalArgs {
    /// A checkpoint folder written by `sgm train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Samples written by `sgm sample` (samples.safetensors) [default: draw them now].
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Samples to draw when --samples is not given [default: the experiment's n_samples].
    #[arg(long)]
    n: Option<i64>,
    /// Also the log-likelihood of held-out points through the probability-flow ODE (nats per
    /// point for 2D data, bits per dimension for images).
    #[arg(long)]
    likelihood: bool,
    /// Held-out points for --likelihood.
    #[arg(long, default_value_t = 500)]
    likelihood_points: i64,
}

/// Set by Ctrl-C while training runs; outside training Ctrl-C exits at once.
static STOP: AtomicBool = AtomicBool::new(false);
static TRAINING: AtomicBool = AtomicBool::new(false);

/// Failures of the command line itself, beside the library's.
#[derive(Debug)]
enum CliError {
    Sgm(sgm::Error),
    Usage(String),
}

impl From<sgm::Error> for CliError {
    fn from(e: sgm::Error) -> Self {
        CliError::Sgm(e)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Sgm(e) => write!(f, "{e}"),
            CliError::Usage(m) => write!(f, "{m}"),
        }
    }
}

type CliResult<T> = std::result::Result<T, CliError>;

/// Parses the command line, runs the command and returns the process's exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let handler = ctrlc::set_handler(|| {
        if TRAINING.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
            eprintln!(
                "\nsgm: stopping after this step and saving a checkpoint (Ctrl-C again to abort)"
            );
        } else {
            eprintln!("\nsgm: interrupted");
            std::process::exit(130);
        }
    });
    if let Err(e) = handler {
        eprintln!("sgm: warning: no Ctrl-C handler ({e}); an interrupt will not save a checkpoint");
    }
    let outcome = match cli.command {
        Command::Train(a) => train(&a),
        Command::Sample(a) => sample(&a),
        Command::Eval(a) => eval(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Release(a) => grade::release(&a),
        Command::Grade(a) => grade::grade(&a),
        Command::Validate(a) => grade::validate(&a),
        Command::Config { preset } => Experiment::preset(&preset)
            .map_err(CliError::from)
            .and_then(|e| print_json(&serde_json::to_value(e).map_err(sgm::Error::from)?)),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let one_line = e.to_string().replace('\n', " ");
            eprintln!("sgm: error: {one_line}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: &Value) -> CliResult<ExitCode> {
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
        )
        .expect("valid template"),
    );
    bar
}

fn train(args: &TrainArgs) -> CliResult<ExitCode> {
    let mut experiment = args.experiment.load()?;
    if let Some(epochs) = args.epochs {
        experiment.train.epochs = epochs;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("output/runs").join(&experiment.name));
    let device = sgm::device();
    let data = experiment.data(device)?;
    let model = Model::new(&experiment, device)?;
    let bar = progress_bar(0);
    // On a terminal: a progress bar; otherwise (logs, pipes) plain epoch lines on stderr.
    let plain = !std::io::stderr().is_terminal();
    let mut hook = |e: &Event| match e {
        Event::Step {
            step,
            loss,
            total_steps,
            ..
        } => {
            bar.set_length(*total_steps as u64);
            bar.set_position(*step as u64);
            bar.set_message(format!("loss {loss:.4}"));
        }
        Event::Epoch {
            epoch,
            epochs,
            train_loss,
            test_loss,
            ..
        } => {
            let test = test_loss.map_or(String::new(), |t| format!(", test {t:.4}"));
            let line = format!("epoch {epoch}/{epochs}: train {train_loss:.4}{test}");
            if plain {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        Event::Resumed {
            dir,
            step,
            total_steps,
        } => {
            let line = format!("resuming {} at step {step}/{total_steps}", dir.display());
            if plain {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        Event::Saved { .. } => {}
    };
    TRAINING.store(true, Ordering::SeqCst);
    let history = model.train(&data, Some(&out), &mut hook, &|| {
        STOP.load(Ordering::SeqCst)
    });
    TRAINING.store(false, Ordering::SeqCst);
    bar.finish_and_clear();
    let history = history?;
    let weights = out.join(sgm::checkpoint::WEIGHTS);
    let weights_bytes = std::fs::metadata(&weights)
        .map_err(|source| sgm::Error::Io {
            path: weights.display().to_string(),
            source,
        })?
        .len();
    print_json(&json!({
        "command": "train",
        "experiment": experiment.name,
        "device": sgm::device::describe(device),
        "checkpoint": out,
        "weights_bytes": weights_bytes,
        "resumed_at": history.resumed_at,
        "steps": history.steps,
        "seconds": history.seconds,
        "train_loss": history.train_loss.last(),
        "test_loss": history.test_loss.last(),
        "precision": history.precision,
        "interrupted": history.interrupted,
    }))?;
    if history.interrupted {
        eprintln!(
            "sgm: interrupted after {} steps; checkpoint saved to {}",
            history.steps,
            out.display()
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws samples and returns them in data units: pixels in [0, 1] for images, points as is.
fn draw(model: &mut Model, n: Option<i64>) -> CliResult<Tensor> {
    let n = n.unwrap_or(model.experiment.n_samples);
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("{}, {n} samples", model.experiment.method.name()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let out = model.sample(n);
    spinner.finish_and_clear();
    let samples = out?.samples;
    Ok(if model.experiment.is_image() {
        model.experiment.scaling.invert(&samples)
    } else {
        samples
    })
}

fn sample(args: &SampleArgs) -> CliResult<ExitCode> {
    let device = sgm::device();
    let mut model = Model::load(&args.checkpoint, device)?;
    let annealed_flag = match (args.steps_per_level, args.eps) {
        (Some(_), _) => Some("--steps-per-level"),
        (None, Some(_)) => Some("--eps"),
        (None, None) => None,
    };
    if let Some(flag) =
        annealed_flag.filter(|_| model.experiment.method != Method::AnnealedLangevin)
    {
        return Err(CliError::Usage(format!(
            "{flag} sets annealed Langevin's steps, but this checkpoint samples with {} (its config's \"method\")",
            model.experiment.method.name()
        )));
    }
    let sampler = &mut model.experiment.sampler;
    if let Some(seed) = args.seed {
        sampler.seed = Some(seed);
    }
    if let Some(t) = args.steps_per_level {
        sampler.steps_per_level = t;
    }
    if let Some(eps) = args.eps {
        sampler.eps = eps;
    }
    let t0 = std::time::Instant::now();
    let samples = draw(&mut model, args.n)?;
    let seconds = t0.elapsed().as_secs_f64();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.checkpoint.join("samples"));
    std::fs::create_dir_all(&out).map_err(|source| sgm::Error::Io {
        path: out.display().to_string(),
        source,
    })?;
    let tensor_path = out.join("samples.safetensors");
    Tensor::write_safetensors(
        &[("samples", &samples.to_device(Device::Cpu))],
        &tensor_path,
    )
    .map_err(sgm::Error::from)?;
    let png_path = out.join("samples.png");
    let title = format!("{}: {} samples", model.experiment.name, samples.size()[0]);
    if model.experiment.is_image() {
        plots::ImageGrid::new(title, &samples, 10)?
            .figure_scaled(2)?
            .save(&png_path)?;
    } else {
        let data = model.experiment.data(Device::Cpu)?;
        plots::Scatter::new(title, bounds_of(&data.train)?)?
            .data("train", &data.train)?
            .points("samples", &samples)?
            .figure()?
            .save(&png_path)?;
    }
    print_json(&json!({
        "command": "sample",
        "checkpoint": args.checkpoint,
        "n": samples.size()[0],
        "seconds": seconds,
        "method": model.experiment.method,
        "sampler": model.experiment.sampler,
        "samples": tensor_path,
        "png": png_path,
    }))
}

/// The data's bounding box with a 15% margin.
fn bounds_of(x: &Tensor) -> sgm::Result<plots::Bounds> {
    let lo = Vec::<f64>::try_from(x.min_dim(0, false).0.to_kind(Kind::Double))?;
    let hi = Vec::<f64>::try_from(x.max_dim(0, false).0.to_kind(Kind::Double))?;
    let pad = |a: f64, b: f64| 0.15 * (b - a);
    Ok([
        lo[0] - pad(lo[0], hi[0]),
        hi[0] + pad(lo[0], hi[0]),
        lo[1] - pad(lo[1], hi[1]),
        hi[1] + pad(lo[1], hi[1]),
    ])
}

fn read_samples(path: &Path, model: &Model) -> CliResult<Tensor> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| sgm::Error::DataFile {
        path: path.display().to_string(),
        why: format!("not a readable safetensors file ({e})"),
    })?;
    let samples = tensors
        .into_iter()
        .find(|(k, _)| k == "samples")
        .map(|(_, t)| t)
        .ok_or_else(|| sgm::Error::DataFile {
            path: path.display().to_string(),
            why: "no tensor named \"samples\" (write it with `sgm sample`)".into(),
        })?;
    let mut want = vec![samples.size().first().copied().unwrap_or(0)];
    want.extend(model.experiment.sample_shape());
    if samples.size() != want || want[0] < 2 {
        return Err(CliError::Usage(format!(
            "{}: samples have shape {:?}, expected [n >= 2, {}] for experiment {}",
            path.display(),
            samples.size(),
            model
                .experiment
                .sample_shape()
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            model.experiment.name
        )));
    }
    Ok(samples.to_kind(Kind::Float))
}

fn eval(args: &EvalArgs) -> CliResult<ExitCode> {
    let device = sgm::device();
    let mut model = Model::load(&args.checkpoint, device)?;
    let samples = match &args.samples {
        Some(path) => read_samples(path, &model)?,
        None => draw(&mut model, args.n)?,
    }
    .to_device(Device::Cpu);
    let data = model.experiment.data(Device::Cpu)?;
    let mut metrics = if model.experiment.is_image() {
        image_metrics(&model.experiment, &data, &samples)?
    } else {
        point_metrics(&model.experiment, &data, &samples)?
    };
    if args.likelihood {
        metrics["likelihood"] = likelihood_metrics(&model, &data, args.likelihood_points)?;
    }
    print_json(&json!({
        "command": "eval",
        "checkpoint": args.checkpoint,
        "experiment": model.experiment.name,
        "metrics": metrics,
    }))
}

fn point_metrics(experiment: &Experiment, data: &Data, samples: &Tensor) -> CliResult<Value> {
    let energy = EnergyReport::new(samples, &data.train, &data.test)?;
    let mut out = json!({ "energy_distance": energy });
    if let (Dataset::Moons { .. }, Some(labels)) = (&experiment.dataset, &data.train_labels) {
        // Each sample takes the moon of its nearest training point; the data are 50/50.
        let weights = metrics::mode_weights(samples, &data.train, labels, 2)?;
        out["mode_weights"] = json!({ "moons": weights, "data": [0.5, 0.5],
                                      "rule": "moon of the nearest training point" });
    }
    if let Dataset::Donut { .. } = experiment.dataset {
        let r = metrics::radii(samples);
        let r_exact = metrics::radii(&data.test);
        out["radius"] = json!({
            "samples": metrics::Summary::of(&r)?,
            "exact": metrics::Summary::of(&r_exact)?,
            "ks_to_exact_samples": metrics::ks_statistic(&r, &r_exact)?,
            "ks_critical_0.001": metrics::ks_critical_value(0.001, r.size()[0] as usize, r_exact.size()[0] as usize),
        });
    }
    Ok(out)
}

fn image_metrics(experiment: &Experiment, data: &Data, samples: &Tensor) -> CliResult<Value> {
    let (name, cfg) = match experiment.dataset {
        Dataset::Fashion => ("fashion_mnist", ClassifierConfig::fashion()),
        _ => ("mnist_5k", ClassifierConfig::mnist()),
    };
    let unit = |x: &Tensor| experiment.scaling.invert(x);
    let labels = |l: &Option<Tensor>| {
        l.as_ref()
            .map(Tensor::shallow_clone)
            .ok_or_else(|| CliError::Usage("image data without labels".into()))
    };
    let train = ImageSet {
        images: unit(&data.train),
        labels: labels(&data.train_labels)?,
    };
    let test = ImageSet {
        images: unit(&data.test),
        labels: labels(&data.test_labels)?,
    };
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!(
        "LeNet-5 classifier for {name} (trained once, then cached)"
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let classifier = Classifier::load_or_train(
        metrics::classifier_cache_dir(name),
        &cfg,
        &train,
        &test,
        sgm::device(),
        &mut training::silent(),
    );
    spinner.finish_and_clear();
    let quality = ImageQuality::measure(&classifier?, samples, &train.images, &test.images, 0.9)?;
    Ok(serde_json::to_value(quality).map_err(sgm::Error::from)?)
}

/// `sgm eval --likelihood`: the log-likelihood of held-out points through the probability-flow
/// ODE between the experiment's smallest and largest σ: nats per point for 2D data (exact
/// divergence), bits per dimension for images (uniformly dequantised, Hutchinson's divergence).
fn likelihood_metrics(model: &Model, data: &Data, points: i64) -> CliResult<Value> {
    let experiment = &model.experiment;
    let n = points.min(data.test.size()[0]);
    if n < 1 {
        return Err(CliError::Usage(format!(
            "--likelihood-points {points}: needs at least 1"
        )));
    }
    let device = model.vs.device();
    let mut cfg = LikelihoodConfig::new(experiment.sigmas.min(), experiment.sigmas.max());
    let image = experiment.is_image();
    let x = data.test.narrow(0, 0, n).to_device(device);
    let x = if image {
        cfg.divergence = Divergence::Hutchinson;
        let (lo, hi) = experiment.scaling.range();
        likelihood::dequantize(&x, lo, hi)
    } else {
        x
    };
    let started = std::time::Instant::now();
    let out = likelihood::log_likelihood(model.score.as_ref(), &x, &cfg)?;
    let per_point = if image {
        let dims: i64 = x.size()[1..].iter().product();
        let (lo, hi) = experiment.scaling.range();
        likelihood::bits_per_dim(&out.log_p, dims, hi - lo)?
    } else {
        out.log_p.shallow_clone()
    };
    let per_point = per_point.to_device(Device::Cpu).to_kind(Kind::Double);
    let mean = per_point.mean(Kind::Double).double_value(&[]);
    let std_err = if n > 1 {
        per_point.std(true).double_value(&[]) / (n as f64).sqrt()
    } else {
        f64::NAN
    };
    let unit = if image {
        "bits_per_dim"
    } else {
        "nats_per_point"
    };
    Ok(json!({
        unit: mean,
        "std_err": std_err,
        "points": n,
        "nfe": out.nfe,
        "sigma_min": cfg.sigma_min,
        "sigma_max": cfg.sigma_max,
        "divergence": cfg.divergence,
        "prior": "N(0, sigma_max^2 I)",
        "seconds": started.elapsed().as_secs_f64(),
    }))
}
