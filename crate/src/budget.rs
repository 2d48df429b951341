//! Run settings read from the environment: the budget (the seeds' sizes by default, small ones
//! for CI), where a run writes its outputs, and where caches live.
//!
//! Set `SGM_BUDGET=ci` to shrink every notebook's budget (steps, epochs, particles) so that
//! the whole set executes in minutes; unset (or `full`) runs the seeds' sizes. `SGM_OUTPUT`
//! names the folder a run writes into (the notebook runner sets it, so the tests never write
//! into the main job's `output/`); `SGM_CACHE` the folder of caches such as the metrics
//! classifier.

/// The environment variable read by [`Budget::from_env`].
pub const BUDGET_ENV: &str = "SGM_BUDGET";
/// The environment variable read by [`output_dir`].
pub const OUTPUT_ENV: &str = "SGM_OUTPUT";
/// The environment variable read by [`cache_dir`].
pub const CACHE_ENV: &str = "SGM_CACHE";

fn repo_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
}

/// Where a run writes its outputs (checkpoints, figures, reports): `$SGM_OUTPUT`, else
/// `output/` at the repository's root (the main job's folder).
pub fn output_dir() -> std::path::PathBuf {
    std::env::var_os(OUTPUT_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| repo_dir("output"), std::path::PathBuf::from)
}

/// Where caches live (things the crate can rebuild, such as the metrics classifier):
/// `$SGM_CACHE`, else `$XDG_CACHE_HOME/sgm`, else `.cache/` at the repository's root. Never
/// the data folder, which may be read-only.
pub fn cache_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return dir.into();
    }
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(xdg) => std::path::PathBuf::from(xdg).join("sgm"),
        None => repo_dir(".cache"),
    }
}

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
