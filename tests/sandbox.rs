//! The grader's sandbox, probed from inside: an assignment whose checks are attempts a malicious
//! submission would make (read the assignment and the grader's files, write into the toolkit,
//! open a connection to a service of the machine, see the grader's processes), graded through
//! `sgm grade` in bubblewrap. Each check passes only when its attempt fails, so a sandbox that
//! mounts too much, shares the network or the PID namespace loses that check's point.

use serde_json::{json, Value};
use sgm::assignment::{self, Report, FIRST_CELL};
use sgm_tests::{sgm_bin, tmpdir};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn code(id: &str, source: &str, task: Option<&str>) -> Value {
    let mut cell = json!({"cell_type": "code", "id": id, "metadata": {}, "outputs": [],
                          "execution_count": null, "source": source});
    if let Some(task) = task {
        cell["metadata"] = json!({"sgm": {"grade": task, "points": 1}});
    }
    cell
}

/// A check cell: `ensure(attempt fails, message)` for each attempt.
fn check(name: &str, body: &str) -> String {
    format!(
        "sgm_homework::checks::check({name:?}, || -> std::result::Result<(), String> {{\n\
         use sgm_homework::checks::ensure;\n{body}\nOk(())\n}})?;"
    )
}

#[test]
fn a_submission_cannot_reach_what_the_sandbox_hides() {
    let dir = tmpdir("sandbox");
    let source_path = dir.join("probe_source.ipynb");
    let hw5 = root().join("notebooks/homework/source/hw5_score_matching.ipynb");
    let out = dir.join("graded");
    // The grading notebook of this very run (it holds every check's secret).
    let grading = out.join(".grading/probe/run.ipynb");
    let toolkit_file = root().join("crate/homework/sandbox-probe");
    let data_file = root().join("data/sandbox-probe");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let reads = check(
        "the assignment, the hidden checks and the grader's files are out of reach",
        &format!(
            "for path in [{:?}, {:?}, {:?}] {{\n\
             ensure(std::fs::metadata(path).is_err(), format!(\"{{path}} is visible\"))?;\n}}",
            source_path, hw5, grading
        ),
    );
    let writes = check(
        "the toolkit and the data are read-only, the own folder is writable",
        &format!(
            "for path in [{:?}, {:?}] {{\n\
             ensure(std::fs::write(path, \"x\").is_err(), format!(\"{{path}} was written\"))?;\n}}\n\
             std::fs::write(\"own-file.txt\", \"x\").map_err(|e| format!(\"own folder: {{e}}\"))?;",
            toolkit_file, data_file
        ),
    );
    let network = check(
        "no network: a port open on the machine's loopback cannot be reached",
        &format!(
            "let addr: std::net::SocketAddr = \"127.0.0.1:{port}\".parse().unwrap();\n\
             let reached = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3));\n\
             ensure(reached.is_err(), \"connected to 127.0.0.1:{port} outside the sandbox\")?;"
        ),
    );
    let processes = check(
        "the grader's processes are not visible",
        "let seen: Vec<String> = std::fs::read_dir(\"/proc\").map_err(|e| e.to_string())?\n\
         .filter_map(|e| std::fs::read(e.ok()?.path().join(\"cmdline\")).ok())\n\
         .map(|c| String::from_utf8_lossy(&c).replace('\\0', \" \"))\n\
         .filter(|c| c.contains(\"grade_runner\") || c.contains(\"sgm grade\")).collect();\n\
         ensure(seen.is_empty(), format!(\"visible: {seen:?}\"))?;",
    );
    let source = json!({
        "cells": [
            code("first", FIRST_CELL, None),
            code("reads", &reads, Some("sandbox.reads")),
            code("writes", &writes, Some("sandbox.writes")),
            code("network", &network, Some("sandbox.network")),
            code("processes", &processes, Some("sandbox.processes")),
        ],
        "metadata": {"kernelspec": {"name": "sgm", "display_name": "Rust (sgm)", "language": "rust"}},
        "nbformat": 4, "nbformat_minor": 5
    });
    assignment::write_notebook(&source_path, &source).unwrap();
    let submission = dir.join("probe.ipynb");
    assignment::write_notebook(&submission, &source).unwrap();

    let output = Command::new(sgm_bin())
        .args(["grade", "--assignment"])
        .arg(&source_path)
        .arg("--out")
        .arg(&out)
        .args(["--cell-timeout", "120"])
        .arg(&submission)
        .env("SGM_DEVICE", "cpu")
        .output()
        .expect("sgm runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sgm grade failed: {stderr}");
    drop(listener);

    let text = std::fs::read_to_string(out.join("probe/report.json")).unwrap();
    let report: Report = serde_json::from_str(&text).unwrap();
    let failed: Vec<String> = report
        .tasks
        .iter()
        .filter(|t| !t.passed)
        .map(|t| format!("{}: {}", t.id, t.message))
        .collect();
    assert!(failed.is_empty(), "the sandbox let through: {failed:#?}");
    assert_eq!((report.total, report.max), (4, 4));
    assert!(!toolkit_file.exists() && !data_file.exists());
    assert!(out.join("probe/work/own-file.txt").exists());
    println!("sandbox probe graded in {:.0} s", report.seconds);
}
