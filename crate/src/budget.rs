//! Run budgets for notebooks: the seeds' sizes by default, small ones for CI.
//!
//! Set `SGM_BUDGET=ci` to shrink every notebook's budget (steps, epochs, particles) so that
//! the whole set executes in minutes; any other value, or none, runs the seeds' sizes.

/// The environment variable read by [`Budget::from_env`].
pub const BUDGET_ENV: &str = "SGM_BUDGET";

/// Which budget a notebook runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The seeds' sizes (default).
    Full,
    /// Small sizes for CI (`SGM_BUDGET=ci`).
    Ci,
}

impl Budget {
    /// Reads [`BUDGET_ENV`].
    pub fn from_env() -> Budget {
        match std::env::var(BUDGET_ENV) {
            Ok(v) if v.eq_ignore_ascii_case("ci") => Budget::Ci,
            _ => Budget::Full,
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
