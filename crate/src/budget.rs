//! Run budgets for notebooks: the seeds' sizes by default, small ones for CI.
//!
//! Set `SGM_BUDGET=ci` to shrink every notebook's budget (steps, epochs, particles) so that
//! the whole set executes in minutes; unset (or `full`) runs the seeds' sizes.

/// The environment variable read by [`Budget::from_env`].
pub const BUDGET_ENV: &str = "SGM_BUDGET";

use crate::error::{Error, Result};

/// Which budget a notebook runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The seeds' sizes (default).
    Full,
    /// Small sizes for CI (`SGM_BUDGET=ci`).
    Ci,
}

impl Budget {
    /// Reads [`BUDGET_ENV`]: unset, empty or `full` is [`Budget::Full`], `ci` is [`Budget::Ci`]
    /// (any case); anything else is an error naming the value, not a silent full run.
    pub fn from_env() -> Result<Budget> {
        let value = std::env::var(BUDGET_ENV).unwrap_or_default();
        match value.to_ascii_lowercase().as_str() {
            "" | "full" => Ok(Budget::Full),
            "ci" => Ok(Budget::Ci),
            _ => Err(Error::InvalidParameter {
                name: BUDGET_ENV,
                value,
                why: "must be unset, 'full' or 'ci'",
            }),
        }
    }

    /// `full` under the full budget, `ci` under the CI budget.
    pub fn pick<T>(self, full: T, ci: T) -> T {
        match self {
            Budget::Full => full,
            Budget::Ci => ci,
        }
    }
}
