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
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that a noise level is finite and > 0.
pub fn check_sigma(sigma: f64) -> Result<f64> {
    if sigma.is_finite() && sigma > 0.0 {
        Ok(sigma)
    } else {
        Err(Error::InvalidSigma(sigma))
    }
}

/// Checks that a tensor holds a non-empty batch (first dimension > 0).
pub fn check_nonempty(x: &tch::Tensor, what: &'static str) -> Result<()> {
    match x.size().first() {
        Some(&n) if n > 0 => Ok(()),
        _ => Err(Error::EmptyData(what)),
    }
}
