//! The crate's one error type. Every fallible function returns [`Result`], and each variant names
//! the value that was wrong so that a notebook cell or the command line can show it as it is.

use thiserror::Error;

/// Everything that can go wrong in `sgm`.
#[derive(Debug, Error)]
pub enum Error {
    /// A noise level σ must be finite and strictly positive.
    #[error("noise level sigma must be finite and > 0, got {0}")]
    InvalidSigma(f64),

    /// A Langevin step size must be finite and strictly positive.
    #[error("Langevin step size eps must be finite and > 0, got {0}")]
    InvalidStepSize(f64),

    /// A score function returned a tensor whose shape differs from its input's.
    #[error("score output shape {output:?} differs from input shape {input:?}")]
    ScoreShape { input: Vec<i64>, output: Vec<i64> },

    /// A tensor had the wrong shape for the operation named in `what`.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: String,
        got: Vec<i64>,
    },

    /// A data set (or a batch) with no rows.
    #[error("{0}: the data set is empty")]
    EmptyData(&'static str),

    /// A parameter outside its allowed range, named with its value.
    #[error("{name} = {value}: {why}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        why: &'static str,
    },

    /// Training produced a NaN or an infinite loss.
    #[error("training diverged: loss = {loss} at epoch {epoch}, step {step} (try a smaller learning rate)")]
    NonFiniteLoss {
        loss: f64,
        epoch: usize,
        step: usize,
    },

    /// Sampling produced NaN or infinite values.
    #[error("sampler diverged: non-finite values after step {step} (try a smaller step size eps)")]
    NonFiniteSamples { step: usize },

    /// A sampler would evaluate a network conditioned on a fixed table of noise levels (an
    /// index embedding) at a σ that is not in its table: the network would silently use the
    /// nearest level instead.
    #[error("{sampler}: evaluates the score at sigma = {sigma}, which is not one of the network's {levels} trained levels (use a sampler that visits only those levels, or a network that takes sigma as an input)")]
    UntrainedLevel {
        sampler: String,
        sigma: f64,
        levels: usize,
    },

    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be used: corrupt, or not matching the model.
    #[error("checkpoint {path}: {why}")]
    Checkpoint { path: String, why: String },

    /// A data file that cannot be read: missing, truncated, or not in the expected format.
    #[error("data file {path}: {why}")]
    DataFile { path: String, why: String },

    /// Drawing a figure.
    #[error("plot: {0}")]
    Plot(String),

    /// Encoding or decoding JSON (configs, reports).
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// Two tensors that one operation needs on the same device are not: `tensor` is on
    /// `device`, `other` (a network's parameters, or the input) on `other_device`.
    #[error(
        "{what}: {tensor} on {}, {other} on {} (move one with .to_device(...))",
        crate::device::name(*.device),
        crate::device::name(*.other_device)
    )]
    DeviceMismatch {
        what: &'static str,
        tensor: &'static str,
        device: tch::Device,
        other: &'static str,
        other_device: tch::Device,
    },

    /// libtorch failed in the named operation (`op` says which layer and on what input: shape,
    /// kind, device). The message is libtorch's, without its C++ stack trace.
    #[error("{op}: libtorch: {}", torch_message(.source))]
    TorchOp {
        op: String,
        #[source]
        source: tch::TchError,
    },

    /// A CUDA graph could not be used: asked for off a GPU, not built into this library, or
    /// refused by libtorch (a captured step that reads a value back to the host, say).
    #[error("CUDA graph: {why}")]
    CudaGraph { why: String },

    /// A homework notebook (assignment source, release or submission) that breaks the format
    /// of [`crate::assignment`]: `cell` names the cell (index and id), `why` the rule.
    #[error("{path}: {cell}: {why}")]
    Notebook {
        path: String,
        cell: String,
        why: String,
    },

    /// A row of the hand-given scores (`manual.csv`, [`crate::assignment::ManualScore`]) that
    /// cannot stand: `row` names it (line and submission), `why` the rule.
    #[error("{path}: {row}: {why}")]
    ManualScores {
        path: String,
        row: String,
        why: String,
    },

    /// A student's saved homework notebook that grading would not take as it is: `problems`
    /// findings of [`crate::assignment::validate`], listed where the check ran.
    #[error("{path}: not ready to submit: {problems} problem(s), listed above; fix them, save the notebook and check again")]
    NotReady { path: String, problems: usize },

    /// A notebook cell's top-level variable whose type holds a closure, which the evcxr kernel
    /// cannot keep between cells ([`crate::notebook::keepable`]): `line` is its line in the
    /// cell (from 1), `ty` the type's name.
    #[error("line {line}: the variable `{name}` has type `{ty}`, which holds a closure: the evcxr kernel cannot keep it between cells, so there the cell fails and keeps none of its variables; collect it (`.collect::<Vec<_>>()`), box it under a named type (`Box<dyn Fn(…) -> …>`), or put it and its uses in a block {{ … }}")]
    NotKeepable {
        name: String,
        line: usize,
        ty: String,
    },

    /// A device name other than `cpu`, `cuda` or `cuda:N` (case-insensitive), as read from
    /// `SGM_DEVICE` by [`crate::device::parse_device_request`].
    #[error("device {value:?} (SGM_DEVICE): expected cpu, cuda or cuda:N (case-insensitive)")]
    InvalidDevice { value: String },

    /// A GPU was asked for (`SGM_DEVICE=cuda` or `cuda:N`) and cannot be used; `why` says why.
    #[error("device {requested} (SGM_DEVICE) is not usable: {why}")]
    DeviceUnavailable { requested: String, why: String },
}

/// `Result` with the crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that a noise level is finite and > 0, also as a float32 (what networks compute in:
/// 1e-50 would be 0 there, 1e39 infinite).
pub fn check_sigma(sigma: f64) -> Result<f64> {
    if valid_as_f32(sigma) {
        Ok(sigma)
    } else {
        Err(Error::InvalidSigma(sigma))
    }
}

/// Checks that a named parameter is finite and > 0 ([`Error::InvalidParameter`] otherwise).
pub fn check_positive(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            why: "must be finite and > 0",
        })
    }
}

/// Checks that a named parameter is finite and >= 0 ([`Error::InvalidParameter`] otherwise).
pub fn check_nonnegative(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            why: "must be finite and >= 0",
        })
    }
}

/// Checks a range of noise levels: both finite and > 0, `sigma_min < sigma_max`.
pub fn check_sigma_range(sigma_min: f64, sigma_max: f64) -> Result<()> {
    check_sigma(sigma_min)?;
    check_sigma(sigma_max)?;
    if sigma_min < sigma_max {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name: "sigma_min",
            value: sigma_min.to_string(),
            why: "must be smaller than sigma_max",
        })
    }
}

/// Checks that a named parameter lies strictly between 0 and 1.
pub fn check_open_unit(name: &'static str, value: f64) -> Result<f64> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            why: "must lie strictly between 0 and 1",
        })
    }
}

/// Checks that a named fraction lies in (0, 1].
pub fn check_fraction(name: &'static str, value: f64) -> Result<f64> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            why: "must lie in (0, 1]",
        })
    }
}

/// Checks that a named count is at least 1.
pub fn check_count(name: &'static str, value: usize) -> Result<usize> {
    if value >= 1 {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            why: "must be at least 1",
        })
    }
}

/// Checks that a tensor holds a non-empty batch (first dimension > 0).
pub fn check_nonempty(x: &tch::Tensor, what: &'static str) -> Result<()> {
    match x.size().first() {
        Some(&n) if n > 0 => Ok(()),
        _ => Err(Error::EmptyData(what)),
    }
}

/// Checks that every noise level of `sigma` (any shape) is finite and > 0, through
/// [`check_sigma`]: the error names the first bad value. For networks that divide by σ, take
/// `log σ` or look σ up in their table of levels, where σ = 0 would give inf or NaN (or the
/// nearest level, silently) many steps later. One read back from the device per call, which
/// a GPU must finish its queued work for; skipped while the crate evaluates a model at levels
/// it built itself from checked values (`with_valid_sigmas`).
pub fn check_sigma_tensor(sigma: &tch::Tensor) -> Result<()> {
    if VALID_SIGMAS.with(std::cell::Cell::get) {
        return Ok(());
    }
    let bad = sigma.isfinite().logical_not().logical_or(&sigma.le(0.0));
    if bad.any().int64_value(&[]) == 0 {
        return Ok(());
    }
    let first = sigma
        .masked_select(&bad)
        .to_kind(tch::Kind::Double)
        .double_value(&[0]);
    check_sigma(first).map(|_| ())
}

thread_local! {
    static VALID_SIGMAS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with [`check_sigma_tensor`] off on this thread. Only for callers whose every σ
/// tensor inside `f` is built from values already checked: a [`crate::noise::Sigmas`] table
/// (its levels are positive and finite in float32) or one `f64` checked as float32
/// ([`crate::Score::score_at`]). Training and sampling so make no read back per network
/// evaluation. The previous state comes back when `f` returns or panics.
pub(crate) fn with_valid_sigmas<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            VALID_SIGMAS.with(|v| v.set(self.0));
        }
    }
    let _restore = Restore(VALID_SIGMAS.with(|v| v.replace(true)));
    f()
}

/// Whether `sigma` stays finite and > 0 as a float32 (what the networks compute in).
pub(crate) fn valid_as_f32(sigma: f64) -> bool {
    let s = sigma as f32;
    s.is_finite() && s > 0.0
}

/// Checks that `x` is on `device` (where a network's parameters live).
pub fn check_device(
    what: &'static str,
    x: &tch::Tensor,
    tensor: &'static str,
    device: tch::Device,
    other: &'static str,
) -> Result<()> {
    if x.device() == device {
        Ok(())
    } else {
        Err(Error::DeviceMismatch {
            what,
            tensor,
            device: x.device(),
            other,
            other_device: device,
        })
    }
}

/// Maps a libtorch error to [`Error::TorchOp`] naming the operation: `.map_err(torch_op(...))`.
pub fn torch_op(op: impl Into<String>) -> impl FnOnce(tch::TchError) -> Error {
    let op = op.into();
    move |source| Error::TorchOp { op, source }
}

/// libtorch's message without the C++ stack trace that follows "Exception raised from".
fn torch_message(e: &tch::TchError) -> String {
    let full = match e {
        tch::TchError::Torch(m) => m.clone(),
        other => other.to_string(),
    };
    match full.find("Exception raised from") {
        Some(i) => full[..i].trim_end().to_string(),
        None => full,
    }
}
