//! The `sgm` command line end to end: presets and JSON configs, train → sample → eval on small
//! runs, one-line errors with a non-zero exit on bad input, Ctrl-C saving a checkpoint, and
//! the benchmark's JSON lines (with the PyTorch comparison).

use serde_json::{json, Value};
use sgm::experiment::{Dataset, Experiment, Method};
use sgm_tests::{sgm_bin, tmpdir};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn sgm(args: &[&str]) -> Output {
    Command::new(sgm_bin())
        .args(args)
        .env("SGM_DEVICE", "cpu")
        .output()
        .expect("sgm runs")
}

fn json_line(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

/// A failed command: non-zero exit and exactly one line on stderr, which contains `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(
        err.starts_with("sgm: error: ") && err.contains(needle),
        "stderr: {err}"
    );
}

fn small_moons(dir: &Path, epochs: usize) -> PathBuf {
    let mut e = Experiment::moons();
    e.dataset = Dataset::Moons {
        n: 1000,
        noise: 0.1,
    };
    e.train.epochs = epochs;
    e.sampler.steps_per_level = 20;
    let path = dir.join("moons.json");
    std::fs::write(&path, serde_json::to_string_pretty(&e).unwrap()).unwrap();
    path
}

#[test]
fn config_prints_the_preset_and_round_trips() {
    for name in Experiment::PRESETS {
        let out = sgm(&["config", name]);
        assert!(out.status.success());
        let parsed: Experiment = serde_json::from_value(json_line(&out)).unwrap();
        assert_eq!(parsed, Experiment::preset(name).unwrap());
    }
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    assert_one_line_error(&sgm(&["train", "--preset", "cifar"]), "cifar");
    let dir = tmpdir("cli-bad");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{ \"name\": 3 ").unwrap();
    assert_one_line_error(
        &sgm(&["train", "--config", bad.to_str().unwrap()]),
        "bad.json",
    );
    let missing = dir.join("nothing-here");
    assert_one_line_error(
        &sgm(&["sample", "--checkpoint", missing.to_str().unwrap()]),
        "nothing-here",
    );
    assert_one_line_error(&sgm(&["bench", "--workloads", "w9"]), "w9");
    assert_one_line_error(&sgm(&["bench", "--scale", "0"]), "--scale");
    // The grader's sizes are checked before anything runs.
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks/homework/source/hw5_score_matching.ipynb");
    for (option, value) in [("--disk", "lots"), ("--memory", "8X"), ("--disk", "0")] {
        let out = sgm(&[
            "grade",
            "--assignment",
            source.to_str().unwrap(),
            "--out",
            dir.join("graded").to_str().unwrap(),
            option,
            value,
            bad.to_str().unwrap(),
        ]);
        assert_one_line_error(&out, &format!("{option} \"{value}\""));
    }
    // Usage errors (clap) exit with 2.
    let out = sgm(&["train"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sgm(&[
        "grade",
        "--assignment",
        source.to_str().unwrap(),
        "--out",
        dir.join("graded").to_str().unwrap(),
        "--processes",
        "0",
        bad.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && stderr.contains("'0' for '--processes"),
        "{stderr}"
    );
}

/// `sgm validate` on the committed release: each answer cell is named as not answered yet,
/// exit 1; a student's copy with every answer filled in is ready (exit 0); the source, which
/// is no release, is a one-line error that says it is the source.
#[test]
fn validate_checks_a_students_copy_of_the_release() {
    let homework = Path::new(env!("CARGO_MANIFEST_DIR")).join("notebooks/homework");
    let release = homework.join("release/hw5_score_matching.ipynb");
    let out = sgm(&["validate", release.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 10, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with("not answered yet (as released)")),
        "{text}"
    );
    assert!(
        text.contains("(id t1-p1-answer: \"**Your solution (Problem 1;")
            && text.contains("(id t3-ncsn: \"struct NoiseConditionedScoreNetwork {\")")
    );

    let mut nb: Value = serde_json::from_str(&std::fs::read_to_string(&release).unwrap()).unwrap();
    let answers: Vec<Value> = nb["metadata"]["sgm"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["answer"] == true)
        .map(|c| c["id"].clone())
        .collect();
    for c in nb["cells"].as_array_mut().unwrap() {
        if answers.contains(&c["id"]) {
            let text = sgm::assignment::source_of(c);
            c["source"] = Value::String(format!("{text}\n// answered"));
        }
    }
    let dir = tmpdir("validate");
    let mine = dir.join("mine.ipynb");
    std::fs::write(&mine, serde_json::to_string(&nb).unwrap()).unwrap();
    let out = sgm(&["validate", mine.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ready: every answer cell is answered"),
        "{text}"
    );

    let source = homework.join("source/hw5_score_matching.ipynb");
    let out = sgm(&["validate", source.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "the assignment's source (it holds solutions or hidden checks), not a student's copy",
    );
}

/// Submissions collected one folder per student (`subs/<student>/hw5.ipynb`) share a file
/// name: `sgm grade` refuses them before grading anything, and names their reports after their
/// folders with `--names folder`; a submission named like a file `sgm grade` writes itself
/// (`manual`, the answers pages' folder; names compared without case), the same file twice,
/// and a submission inside the `--out` folder (which grading clears) are refused; a link is
/// named by its own folder. Unreadable notebooks are graded without a kernel (every task 0
/// with the reason), so this runs in seconds.
#[test]
fn grade_names_reports_by_file_or_by_folder() {
    let dir = tmpdir("grade-names");
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks/homework/source/hw5_score_matching.ipynb");
    let mut subs = Vec::new();
    for student in ["alice", "bob.smith"] {
        std::fs::create_dir_all(dir.join(student)).unwrap();
        let path = dir.join(student).join("hw5.ipynb");
        std::fs::write(&path, "not a notebook").unwrap();
        subs.push(path.to_str().unwrap().to_string());
    }
    let out = dir.join("graded");
    let grade = |extra: &[&str], subs: &[String]| {
        let mut args = vec!["grade", "--assignment", source.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap(), "--no-sandbox"]);
        args.extend(extra);
        args.extend(subs.iter().map(String::as_str));
        sgm(&args)
    };
    let refused = grade(&[], &subs);
    assert_one_line_error(
        &refused,
        "hw5.ipynb would both be named hw5 (rename one, or --names folder where each is in a folder of its own)",
    );
    assert!(!out.exists(), "nothing is written before grading starts");

    // Alice twice, and Alice beside alice: one folder on a case-insensitive file system.
    let twice = [subs[0].clone(), subs[0].clone()];
    assert_one_line_error(
        &grade(&["--names", "folder"], &twice),
        "would both be named alice (the same file given twice)",
    );
    std::fs::create_dir_all(dir.join("Alice")).unwrap();
    std::fs::write(dir.join("Alice/hw5.ipynb"), "{").unwrap();
    let cased = [
        subs[0].clone(),
        dir.join("Alice/hw5.ipynb").display().to_string(),
    ];
    assert_one_line_error(
        &grade(&["--names", "folder"], &cased),
        "would both be named Alice (one folder per submission, or --names file)",
    );
    // A link is named by the folder it is in, not by its target's.
    std::fs::create_dir_all(dir.join("store")).unwrap();
    std::fs::write(dir.join("store/8f3a.ipynb"), "[]").unwrap();
    std::fs::create_dir_all(dir.join("carol")).unwrap();
    std::os::unix::fs::symlink(dir.join("store/8f3a.ipynb"), dir.join("carol/hw5.ipynb")).unwrap();
    subs.push(dir.join("carol/hw5.ipynb").display().to_string());
    assert!(!out.exists(), "nothing is written before grading starts");

    let graded = grade(&["--names", "folder"], &subs);
    let text = String::from_utf8_lossy(&graded.stdout);
    assert!(
        graded.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&graded.stderr)
    );
    // The last line sums each task up: three submissions, none with a point; the derivations
    // wait for their points by hand.
    let tasks = json_line(&graded)["tasks"].clone();
    let task = |id: &str| {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        task("task2.matcher"),
        json!({"id": "task2.matcher", "max": 2, "graded": 3, "pending": 0, "full": 0, "mean": 0.0})
    );
    assert_eq!(
        task("task1.problem1.derivation"),
        json!({"id": "task1.problem1.derivation", "max": 2, "graded": 0, "pending": 3, "full": 0, "mean": null})
    );
    for name in ["alice", "bob.smith", "carol"] {
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(name).join("report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["submission"], name);
        assert_eq!(report["total"], 0);
        let notes = report["notes"].as_array().unwrap();
        assert!(
            notes.len() == 1
                && notes[0]
                    .as_str()
                    .unwrap()
                    .starts_with("the submission could not be read"),
            "{report}"
        );
    }
    let csv = std::fs::read_to_string(out.join("grades.csv")).unwrap();
    let rows: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(rows, ["alice", "bob.smith", "carol"], "{csv}");

    let page = out.join("manual/task1.problem1.derivation.html");
    let answers = std::fs::read_to_string(&page).unwrap();
    std::fs::create_dir_all(dir.join("manual")).unwrap();
    let odd = dir.join("manual").join("hw5.ipynb");
    std::fs::write(&odd, "{").unwrap();
    let refused = grade(&["--names", "folder"], &[odd.to_str().unwrap().to_string()]);
    assert_one_line_error(
        &refused,
        "a submission named manual would take the place of",
    );
    assert_eq!(std::fs::read_to_string(&page).unwrap(), answers);

    // A submission kept in the --out folder (here alice's report folder, which grading clears
    // first) is refused, as given or through a link, and stays where it is.
    let kept = out.join("alice/hw5.ipynb");
    std::fs::write(&kept, "{").unwrap();
    std::os::unix::fs::symlink(out.join("alice"), dir.join("via")).unwrap();
    for given in [kept.clone(), dir.join("via/hw5.ipynb")] {
        let refused = grade(&["--names", "folder"], &[given.display().to_string()]);
        assert_one_line_error(&refused, "a submission inside the --out folder");
        assert!(kept.exists());
    }
}

/// What a submission may be: a student whose file is a link into the folder of the
/// assignment's source (kept as such by a git repository the submissions were cloned from)
/// gets 0 points, not the instructor's answers; a FIFO (never read to its end), a link to a
/// device and a file past `--max-notebook` get 0 points with the reason, all without a kernel
/// and without stopping the others; a bad `--max-notebook` stops `sgm grade` with one line.
#[test]
fn grade_takes_only_a_students_own_regular_file_within_the_limit() {
    let dir = tmpdir("grade-untrusted");
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks/homework/source/hw5_score_matching.ipynb");
    let student = |name: &str| {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        dir.join(name).join("hw5.ipynb")
    };
    std::os::unix::fs::symlink(&source, student("dave")).unwrap();
    let made = Command::new("mkfifo")
        .arg(student("erin"))
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", student("frank")).unwrap();
    let release = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("notebooks/homework/release/hw5_score_matching.ipynb"),
    )
    .unwrap();
    std::fs::write(student("gina"), format!("{release}{}", " ".repeat(1 << 20))).unwrap();
    let out = dir.join("graded");
    let subs: Vec<String> = ["dave", "erin", "frank", "gina"]
        .iter()
        .map(|s| dir.join(s).join("hw5.ipynb").display().to_string())
        .collect();
    let grade = |limit: &str| {
        let mut args = vec!["grade", "--assignment", source.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap(), "--no-sandbox"]);
        args.extend(["--names", "folder", "--max-notebook", limit]);
        args.extend(subs.iter().map(String::as_str));
        let mut child = Command::new(sgm_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A grader that waited on the FIFO would never end: fail instead of hanging.
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed().as_secs() > 120 {
                child.kill().unwrap();
                panic!("sgm grade still runs after 120 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    };
    assert_one_line_error(
        &grade("lots"),
        "--max-notebook \"lots\": expected a size such as 8G or 512M",
    );
    let graded = grade("1M");
    assert!(
        graded.status.success(),
        "{}",
        String::from_utf8_lossy(&graded.stderr)
    );
    let expected = [
        ("dave", "a link into the folder of the assignment's source"),
        ("erin", "not a regular file"),
        ("frank", "not a regular file"),
        (
            "gina",
            "MiB, past the grader's limit of 1.0 MiB on a submitted notebook",
        ),
    ];
    for (name, why) in expected {
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(name).join("report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["total"], 0, "{name}: {report}");
        let notes = report["notes"].as_array().unwrap();
        assert!(
            notes.len() == 1 && notes[0].as_str().unwrap().contains(why),
            "{name}: {report}"
        );
    }
}

/// The grader's pages show what students wrote, which may be anything nbformat allows and more:
/// a markdown answer that links an image its cell does not have (a cell pasted from another
/// notebook) made nbconvert stop the page, and with it grades.csv and the answer pages of the
/// whole class. Now that link shows as text, the image the cell has is inlined, and malformed
/// attachments are left out; an element's id is not kept.
#[test]
fn a_page_shows_a_markdown_answer_whose_image_is_missing() {
    let dir = tmpdir("page-attachments");
    let nb = json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": "# Derivation\n![scan](attachment:scan.png)"},
        {"cell_type": "markdown", "id": "b", "metadata": {}, "source": "![mine](attachment:mine.png)",
         "attachments": {"mine.png": {"image/png": "iVBORw0KGgo="}, "empty": {}}},
        {"cell_type": "markdown", "id": "c", "metadata": {}, "source": "![odd](attachment:odd.png)",
         "attachments": {"odd.png": {"image/png": 7}}},
        {"cell_type": "markdown", "id": "d", "metadata": {},
         "source": "<span id=\"MathJax_Message\" class=\"note\">an element of the page's own</span>"},
    ]});
    let input = dir.join("answers.ipynb");
    std::fs::write(&input, nb.to_string()).unwrap();
    let page = dir.join("answers.html");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("kernel-setup/grade_runner.py"))
        .arg("html")
        .arg(&input)
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Derivation"));
    assert!(html.contains("data:image/png;base64,iVBORw0KGgo="));
    assert!(
        !html.contains("src=\"attachment:"),
        "a link left for the browser to fetch"
    );
    // No ids from what students wrote: one could take an id the page or MathJax looks up.
    assert!(html.contains("an element of the page's own"));
    assert!(!html.contains("id=\"MathJax_Message\""));
}

/// Separate invocations (a job array over the class) share `--out`: a submission whose name
/// becomes the folder name another invocation's submission took (`José` and `Jos_`) is refused
/// with one line, the other's report kept; the same student graded again takes their folder.
#[test]
fn grade_refuses_a_report_folder_another_invocation_took() {
    let dir = tmpdir("grade-shared-out");
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks/homework/source/hw5_score_matching.ipynb");
    let out = dir.join("graded");
    let submit = |student: &str| {
        std::fs::create_dir_all(dir.join(student)).unwrap();
        let path = dir.join(student).join("hw5.ipynb");
        std::fs::write(&path, "not a notebook").unwrap();
        path.display().to_string()
    };
    let grade = |path: &str| {
        sgm(&[
            "grade",
            "--assignment",
            source.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-sandbox",
            "--names",
            "folder",
            path,
        ])
    };
    let jose = submit("José");
    let first = grade(&jose);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report = out.join("Jos_/report.json");
    let before = std::fs::read_to_string(&report).unwrap();
    assert_one_line_error(&grade(&submit("Jos_")), "its report would go to");
    assert_eq!(std::fs::read_to_string(&report).unwrap(), before);
    let again = grade(&jose);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn train_sample_eval_on_moons() {
    let dir = tmpdir("cli-moons");
    let config = small_moons(&dir, 3);
    let ckpt = dir.join("ckpt");
    let out = sgm(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trained = json_line(&out);
    assert_eq!(trained["steps"], 3 * 7, "{trained}"); // 800 training points, batch 128
    assert_eq!(trained["interrupted"], false);
    assert!(ckpt.join("model.safetensors").exists() && ckpt.join("config.json").exists());

    let samples_dir = dir.join("samples");
    let out = sgm(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--n",
        "300",
        "--out",
        samples_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sampled = json_line(&out);
    assert_eq!(sampled["n"], 300);
    let tensors =
        sgm::tch::Tensor::read_safetensors(samples_dir.join("samples.safetensors")).unwrap();
    assert_eq!(tensors[0].0, "samples");
    assert_eq!(tensors[0].1.size(), vec![300, 2]);
    let png = std::fs::read(samples_dir.join("samples.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let out = sgm(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--samples",
        samples_dir.join("samples.safetensors").to_str().unwrap(),
        "--likelihood",
        "--likelihood-points",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = &json_line(&out)["metrics"];
    // The ODE likelihood of 100 held-out points (its accuracy is tested against a closed form
    // in tests/samplers.rs): a finite figure per point, at least one solver step (7 NFE).
    let like = &m["likelihood"];
    assert_eq!(like["points"], 100);
    assert!(
        like["nats_per_point"].as_f64().unwrap().is_finite(),
        "{like}"
    );
    assert!(like["std_err"].as_f64().unwrap() > 0.0, "{like}");
    assert!(like["nfe"].as_u64().unwrap() >= 7, "{like}");
    let energy = &m["energy_distance"];
    assert_eq!(energy["n_samples"], 300);
    assert_eq!(energy["n_test"], 200);
    assert!(energy["floor"].as_f64().unwrap() > 0.0);
    assert!(energy["distance"].as_f64().unwrap() >= 0.0);
    let w: Vec<f64> = serde_json::from_value(m["mode_weights"]["moons"].clone()).unwrap();
    assert!((w[0] + w[1] - 1.0).abs() < 1e-9, "{w:?}");

    // Samples of the wrong shape for this experiment are refused, naming the shape.
    let wrong = dir.join("wrong.safetensors");
    let t = sgm::tch::Tensor::zeros([5, 3], (sgm::tch::Kind::Float, sgm::tch::Device::Cpu));
    sgm::tch::Tensor::write_safetensors(&[("samples", &t)], &wrong).unwrap();
    assert_one_line_error(
        &sgm(&[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--samples",
            wrong.to_str().unwrap(),
        ]),
        "[5, 3]",
    );
}

#[test]
fn an_edm_checkpoint_samples_with_edm_and_refuses_annealed_overrides() {
    let dir = tmpdir("cli-edm");
    let mut e = Experiment::moons();
    e.dataset = Dataset::Moons { n: 400, noise: 0.1 };
    e.train.epochs = 1;
    e.method = Method::edm(8, 2.0);
    let config = dir.join("edm.json");
    std::fs::write(&config, serde_json::to_string(&e).unwrap()).unwrap();
    let ckpt = dir.join("ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let out = sgm(&["train", "--config", config.to_str().unwrap(), "--out", ckpt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sgm(&["sample", "--checkpoint", ckpt, "--n", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sampled = json_line(&out);
    assert_eq!(sampled["method"]["kind"], "edm_stochastic", "{sampled}");
    assert_eq!(sampled["n"], 20);
    // ε and T are annealed Langevin's: an EDM checkpoint refuses them instead of ignoring them.
    for flag in ["--eps", "--steps-per-level"] {
        assert_one_line_error(
            &sgm(&["sample", "--checkpoint", ckpt, flag, "3"]),
            "EDM stochastic (8 levels, churn 2)",
        );
    }
}

#[test]
fn a_single_level_preset_trains_and_samples() {
    // `donut_dsm`: one σ, an unconditioned MLP (80 steps an epoch, well under a second).
    let dir = tmpdir("cli-donut-dsm");
    let ckpt = dir.join("ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let out = sgm(&[
        "train",
        "--preset",
        "donut_dsm",
        "--epochs",
        "1",
        "--out",
        ckpt,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trained = json_line(&out);
    assert_eq!(trained["experiment"], "donut_dsm");
    assert_eq!(trained["steps"], 80, "{trained}"); // 8,000 training points, batch 100
    let out = sgm(&["sample", "--checkpoint", ckpt, "--n", "50"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_line(&out)["n"], 50);
}

/// Starts `sgm train` on `config` into `ckpt`, waits for its first epoch line (and returns the
/// stderr lines before it), interrupts it with a real SIGINT, and returns its exit code, its
/// JSON report and the rest of its stderr.
fn train_then_interrupt(
    config: &Path,
    ckpt: &Path,
) -> (Vec<String>, Option<i32>, serde_json::Value, String) {
    let mut child = Command::new(sgm_bin())
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            ckpt.to_str().unwrap(),
        ])
        .env("SGM_DEVICE", "cpu")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut before = Vec::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.starts_with("epoch") {
        before.push(line.trim_end().to_string());
        line.clear();
    }
    assert!(line.starts_with("epoch "), "{line}");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    (before, out.status.code(), json_line(&out), rest)
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130_and_training_resumes_there() {
    let dir = tmpdir("cli-ctrlc");
    let config = small_moons(&dir, 100_000);
    let ckpt = dir.join("ckpt");
    let (_, code, report, rest) = train_then_interrupt(&config, &ckpt);
    assert_eq!(code, Some(130), "stderr: {rest}");
    assert!(rest.contains("checkpoint saved"), "{rest}");
    assert_eq!(report["interrupted"], true);
    // The checkpoint holds the step the run stopped at (bug caught: a stop that exits without
    // saving, or saves the position of an earlier checkpoint).
    let steps = report["steps"].as_u64().unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("training_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"].as_u64(), Some(steps));
    // The checkpoint is complete: it samples.
    let out = sgm(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--n",
        "10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same command again resumes at that step (bugs caught: a restart from scratch, or a
    // resume that ignores the saved position), and its next interrupt saves further on.
    let (before, code, again, rest) = train_then_interrupt(&config, &ckpt);
    assert_eq!(code, Some(130), "stderr: {rest}");
    assert!(
        before
            .iter()
            .any(|l| l.contains(&format!("at step {steps}/"))),
        "no resume line in {before:?}"
    );
    assert_eq!(again["resumed_at"].as_u64(), Some(steps));
    assert!(again["steps"].as_u64().unwrap() > steps, "{again}");
}

#[test]
fn bench_prints_json_lines_and_ratios_to_pytorch() {
    let out = sgm(&[
        "bench",
        "--workloads",
        "w1,w3",
        "--scale",
        "0.05",
        "--threads",
        "1",
        "--compare-pytorch",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // On the CPU: 2 sgm lines, 2 PyTorch variants (eager, fused Adam) per workload, 2 ratios.
    assert_eq!(lines.len(), 8, "{lines:?}");
    for w in ["W1", "W3"] {
        let of = |variant: &str| {
            lines
                .iter()
                .find(|l| l["workload"] == w && l["variant"] == variant)
                .unwrap_or_else(|| panic!("no {variant} line for {w}"))
        };
        let ours = of("sgm");
        let (eager, fused) = (of("eager"), of("fused-adam"));
        assert_eq!(ours["impl"], "sgm (tch)");
        for l in [ours, eager, fused] {
            // Both sides on the same device and thread count (bug caught: PyTorch timed on the
            // CPU beside sgm on a GPU).
            assert_eq!(l["device"], ours["device"], "{l}");
            assert_eq!(l["threads"], 1, "{l}");
            assert!(l["train_steps_per_s"].as_f64().unwrap() > 0.0);
            assert!(l["sampler_evals_per_s"].as_f64().unwrap() > 0.0);
            assert_eq!(l["train_batch"], ours["train_batch"]);
            // Every line says what its training steps read, and compared eager lines read the
            // same: a fixed batch (on a GPU the graphed lines of both sides are fed new ones).
            assert_eq!(l["train_batches"], ours["train_batches"], "{l}");
            assert_eq!(l["sampler_evals"], ours["sampler_evals"]);
        }
        let ratio = lines
            .iter()
            .find(|l| l["workload"] == w && l.get("compare").is_some())
            .unwrap();
        // The ratio line compares this workload's runs: sgm's rate over eager PyTorch's, over
        // each variant's, and over the fastest variant's (bugs caught: a ratio inverted, taken
        // from another workload's lines, or "fastest" not the fastest).
        let rate = |l: &Value, k: &str| l[k].as_f64().unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b;
        let r = rate(ratio, "train_steps_per_s_ratio");
        let expected = rate(ours, "train_steps_per_s") / rate(eager, "train_steps_per_s");
        assert!(close(r, expected), "{r} vs {expected}");
        let r = rate(
            &ratio["variants"]["fused-adam"],
            "sampler_evals_per_s_ratio",
        );
        let expected = rate(ours, "sampler_evals_per_s") / rate(fused, "sampler_evals_per_s");
        assert!(close(r, expected), "{r} vs {expected}");
        let best = rate(eager, "train_steps_per_s").max(rate(fused, "train_steps_per_s"));
        let r = rate(&ratio["train_vs_fastest"], "ratio");
        assert!(close(r, rate(ours, "train_steps_per_s") / best), "{ratio}");
    }
    // The arithmetic floor is reported for the convolutional workload.
    let w3 = lines.iter().find(|l| l["workload"] == "W3").unwrap();
    let share = w3["share_of_floor"].as_f64().unwrap();
    assert!(share > 0.0 && share <= 1.0, "{w3}");
}
