//! Checks in a real browser: Debian's chromium (installed by `kernel-setup/setup.sh`) driven by
//! playwright from `kernel-setup/browser_check.py`, which prints what it saw and ends with one
//! line `browser check NAME: ok (...)` or `... FAILED: why`. Screenshots and the JupyterLab
//! server's log land in `target/browser-tests/` (`lab-NOTEBOOK.png`, `jupyter-lab-NOTEBOOK.log`).
//!
//! * The HTML pages the project writes (`kernel-setup/html_pages.py`) typeset their formulas
//!   with the MathJax copy beside them, with every network request refused.
//! * JupyterLab runs each homework release notebook (homework 5, assignment 8) through its UI,
//!   cell by cell, down to the first graded check after its first figure, and shows the figure
//!   and the check's name in its output; then its last cell, `sgm_homework::validate()`, checks
//!   the notebook as saved (before and after a cell is added through the UI and saved, and
//!   after a rename, when the same kernel must check the file under its new name).
//!
//! * Without a browser, the same validate cell under a Jupyter server that listens on a Unix
//!   socket (`kernel-setup/server_check.py`): the kernel must reach the server through the socket
//!   to follow a rename.
//!
//! `SGM_BROWSER_TESTS=skip` skips the two browser checks (for machines without chromium); they
//! fail otherwise.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// The homework release notebooks the JupyterLab check runs (committed, and kept current by
/// `tests/assignment.rs`).
const RELEASES: [&str; 2] = [
    "notebooks/homework/release/hw5_score_matching.ipynb",
    "notebooks/homework/release/a8_score_models.ipynb",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn skipped() -> bool {
    let skip = std::env::var("SGM_BROWSER_TESTS").is_ok_and(|v| v == "skip");
    if skip {
        println!("browser checks skipped (SGM_BROWSER_TESTS=skip)");
    }
    skip
}

/// Runs `browser_check.py` with `args`; returns (success, stdout + stderr), printed as well.
fn browser_check(args: &[OsString]) -> (bool, String) {
    python_check("browser_check.py", args)
}

/// Runs `kernel-setup/SCRIPT` with `args` and `--out target/browser-tests`; returns (success,
/// stdout + stderr), printed as well.
fn python_check(script: &str, args: &[OsString]) -> (bool, String) {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run kernel-setup/setup.sh first",
        python.display()
    );
    let output = Command::new(python)
        .arg(root().join("kernel-setup").join(script))
        .args(args)
        .arg("--out")
        .arg(root().join("target/browser-tests"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env(
            "SGM_BUDGET",
            std::env::var("SGM_BUDGET").unwrap_or_else(|_| "ci".into()),
        )
        .output()
        .unwrap_or_else(|e| panic!("start kernel-setup/{script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    (output.status.success(), text)
}

#[test]
fn formulas_render_offline_from_the_local_mathjax() {
    if skipped() {
        return;
    }
    let (ok, log) = browser_check(&["mathjax".into()]);
    assert!(ok, "the MathJax check failed:\n{log}");
    assert!(log.contains("browser check mathjax: ok"), "{log}");
    assert!(log.contains("of them not local: 0"), "{log}");
    assert!(log.contains("1 inline and 1 display formulas"), "{log}");
}

#[test]
fn jupyterlab_runs_each_homework_down_to_its_first_check_after_a_figure() {
    if skipped() {
        return;
    }
    // One after the other: each starts its own server, kernel and browser.
    for release in RELEASES {
        let notebook = root().join(release);
        println!("JupyterLab check on {}", notebook.display());
        let (ok, log) = browser_check(&["lab".into(), notebook.clone().into()]);
        assert!(ok, "the JupyterLab check on {release} failed:\n{log}");
        assert!(log.contains("browser check lab: ok"), "{release}: {log}");
        let figures = log
            .lines()
            .find(|l| l.contains("figures on the page (cell, size):"))
            .unwrap_or_else(|| panic!("{release}: no figure line in:\n{log}"));
        assert!(figures.contains("x"), "{release}: no figure: {figures}");
        // The release's last cell checks the notebook as saved, through the path the Jupyter
        // server holds for the kernel's session: the served copy, then the same after a cell
        // added and saved.
        // Then a rename through the UI: the same kernel checks the file under its new name.
        assert!(
            log.contains(
                "unanswered cells, then the added cell, from the saved file, then the same from \
                 the file renamed renamed-"
            ),
            "{release}: {log}"
        );
    }
}

/// A server on a Unix socket writes `"port": 0` and the socket's path in its info file; the
/// validate cell must ask it through the socket, or it cannot follow a rename (the kernel's
/// start-up name is gone then). Real server, real kernel, rename through the REST API.
#[test]
fn validate_follows_a_rename_under_a_server_on_a_unix_socket() {
    let release = root().join(RELEASES[0]);
    let (ok, log) = python_check("server_check.py", &["socket".into(), release.into()]);
    assert!(ok, "the server check failed:\n{log}");
    let line = log.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("server check socket: ok (the served copy, then the file renamed"),
        "{log}"
    );
}
