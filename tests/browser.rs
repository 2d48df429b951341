//! Checks in a real browser: Debian's chromium (installed by `kernel-setup/setup.sh`) driven by
//! playwright from `kernel-setup/browser_check.py`, which prints what it saw and ends with one
//! line `browser check NAME: ok (...)` or `... FAILED: why`. Screenshots and the JupyterLab
//! server's log land in `target/browser-tests/`.
//!
//! * The HTML pages the project writes (`kernel-setup/html_pages.py`) typeset their formulas
//!   with the MathJax copy beside them, with every network request refused.
//! * JupyterLab runs the homework release notebook through its UI, cell by cell, down to the
//!   first graded check after its first figure, and shows the figure and the check's name in
//!   its output; then its last cell, `sgm_homework::validate()`, checks the notebook as saved
//!   (before and after a cell is added through the UI and saved). Until the release notebook exists, a stand-in of the same shape is generated
//!   and used (the test says which).
//!
//! `SGM_BROWSER_TESTS=skip` skips both (for machines without chromium); they fail otherwise.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use sgm_tests::tmpdir;

/// The homework release notebook the JupyterLab check runs when it exists.
const RELEASE: &str = "notebooks/homework/release/hw5_score_matching.ipynb";

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
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run kernel-setup/setup.sh first",
        python.display()
    );
    let output = Command::new(python)
        .arg(root().join("kernel-setup/browser_check.py"))
        .args(args)
        .arg("--out")
        .arg(root().join("target/browser-tests"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env(
            "SGM_BUDGET",
            std::env::var("SGM_BUDGET").unwrap_or_else(|_| "ci".into()),
        )
        .output()
        .expect("start kernel-setup/browser_check.py");
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

/// A notebook with the release's shape: the set-up cell, a graded check, a figure cell (tag
/// `figure`), then a graded check cell (`metadata.sgm.grade`) whose output names its test; the
/// cells after it are not run. The folder lives as long as the returned guard.
fn stand_in() -> (sgm_tests::TmpDir, PathBuf) {
    let dir = tmpdir("browser-standin");
    let first = format!(
        ":dep sgm = {{ path = {:?} }}\nsgm::notebook::report_failed_cells()?;",
        root().join("crate").display().to_string()
    );
    let code = |id: &str, src: &str, metadata: serde_json::Value| {
        serde_json::json!({
            "cell_type": "code", "id": id, "execution_count": null, "outputs": [],
            "metadata": metadata, "source": src,
        })
    };
    let cells = vec![
        serde_json::json!({
            "cell_type": "markdown", "id": "title", "metadata": {},
            "source": "# Stand-in for hw5_score_matching\n\nThe score $\\nabla_x \\log p(x)$.",
        }),
        code("setup", &first, serde_json::json!({})),
        code("prelude", "use sgm::prelude::*;", serde_json::json!({})),
        // As in the release: a graded theory check before the first figure.
        code(
            "check-0",
            "println!(\"problem 1: passed\");",
            serde_json::json!({"sgm": {"grade": "task1.problem1", "points": 2}}),
        ),
        code(
            "figure",
            "Scatter::new(\"x\", [-1.0, 1.0, -1.0, 1.0])?\n    .points(\"p\", &Tensor::randn([10, 2], (Kind::Float, Device::Cpu)))?\n    .figure()?",
            serde_json::json!({"tags": ["figure"]}),
        ),
        code(
            "check-1",
            "println!(\"test_denoiser_score_matcher: passed\");",
            serde_json::json!({"sgm": {"grade": "task2.matcher", "points": 1}}),
        ),
        code(
            "check-2",
            "println!(\"test_later: not run by the check\");",
            serde_json::json!({"sgm": {"grade": "task2", "points": 2}}),
        ),
    ];
    let nb = serde_json::json!({
        "cells": cells, "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "sgm", "display_name": "Rust (sgm)", "language": "rust"}},
    });
    let path = dir.join("hw5_score_matching.ipynb");
    std::fs::write(&path, serde_json::to_string_pretty(&nb).unwrap()).unwrap();
    (dir, path)
}

#[test]
fn jupyterlab_runs_the_homework_down_to_its_first_check_after_a_figure() {
    if skipped() {
        return;
    }
    let release = root().join(RELEASE);
    // `_folder` keeps a stand-in's folder until the test ends.
    let (_folder, notebook, which) = if release.exists() {
        (None, release, "the release notebook")
    } else {
        let (folder, path) = stand_in();
        (
            Some(folder),
            path,
            "a stand-in (the release notebook does not exist yet)",
        )
    };
    println!("JupyterLab check on {which}: {}", notebook.display());
    let (ok, log) = browser_check(&["lab".into(), notebook.clone().into()]);
    assert!(ok, "the JupyterLab check on {which} failed:\n{log}");
    assert!(log.contains("browser check lab: ok"), "{log}");
    let figures = log
        .lines()
        .find(|l| l.contains("figures on the page (cell, size):"))
        .unwrap_or_else(|| panic!("no figure line in:\n{log}"));
    assert!(figures.contains("x"), "no figure: {figures}");
    if which.starts_with("a stand-in") {
        assert!(
            log.contains("check test_denoiser_score_matcher shown"),
            "{log}"
        );
    } else {
        // The release's last cell checks the notebook as saved, through the path the Jupyter
        // server gives the kernel: the served copy, then the same after a cell added and saved.
        assert!(
            log.contains("unanswered cells, then the added cell, from the saved file"),
            "{log}"
        );
    }
}
