//! `sgm grade` end to end on fixture submissions of homework 5, each built from the committed
//! source or release by one edit per fault and graded in the bubblewrap sandbox through the
//! registered evcxr kernel at the grading budget; every task's points are asserted.
//!
//! Four submissions, so that CI stays short: the source itself (full marks), the untouched
//! release (nothing), and two with faults in independent tasks — a Langevin step of the wrong
//! sign, σ where σ² belongs in the NCSN loss's weight, a forged result and a script in a
//! derivation, which the instructor's pages must not run (fault set A); a
//! region that asks for more memory than exists (the allocation fails and the process aborts:
//! answers cannot reach `std::process`), one
//! that loops forever and one that does not compile (fault set B).

use serde_json::Value;
use sgm::assignment::{self, Report};
use sgm_tests::fixtures::{
    assert_graded, edit, expect, grade, message, points, report, sgm_grade, summary, write,
};
use sgm_tests::tmpdir;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn source_path() -> PathBuf {
    root().join("notebooks/homework/source/hw5_score_matching.ipynb")
}

#[test]
fn fixture_submissions_get_the_points_their_faults_allow() {
    let dir = tmpdir("homework-grade");
    let source = assignment::read_notebook(&source_path()).unwrap();
    let release = assignment::read_notebook(
        &root().join("notebooks/homework/release/hw5_score_matching.ipynb"),
    )
    .unwrap();

    let mut faults_a = source.clone();
    // A script in a derivation, which the instructor's pages must not run.
    edit(
        &mut faults_a,
        "t1-p1-answer",
        "**Your solution (Problem 1",
        "<script>alert(\"sgm-xss\")</script>\n\n**Your solution (Problem 1",
    );
    // The Langevin step against the score (a sign error).
    edit(
        &mut faults_a,
        "t2-matcher",
        "x = &x + s * (eta / 2.0)",
        "x = &x - s * (eta / 2.0)",
    );
    // σ_i/σ_T where the homework's weight is σ_i²/σ_T².
    edit(
        &mut faults_a,
        "t3-ncsn",
        "used_sigmas.square() / (sigma_max * sigma_max)",
        "&used_sigmas / sigma_max",
    );
    // `sample` (given code in the answer's cell) starting from N(0, I), not U[-1, 1]: its shape stays right, so only the
    // hidden check's law of the start tells.
    edit(
        &mut faults_a,
        "t3-ncsn",
        "Tensor::rand(shape.as_slice(), (Kind::Float, self.device)) * 2.0 - 1.0",
        "Tensor::randn(shape.as_slice(), (Kind::Float, self.device))",
    );
    // The level's embedding added after the block, not to its input: the visible test passes, the hidden one not.
    edit(
        &mut faults_a,
        "t3-block",
        "x + self.block.forward(&(x + time_embed))",
        "x + self.block.forward(x) + time_embed",
    );
    // A wrong answer that changes the check's samples in place (one value of 1000 widens the check's own tolerance
    // past any value) and returns 0: the check hands it a copy and compares with the objective in closed form.
    edit(
        &mut faults_a,
        "t1-p2-code",
        "let x = x.detach().set_requires_grad(true);",
        "let _ = x.shallow_clone().narrow(0, 0, 1).fill_(1e3);\n    return Tensor::from(0.0f64);\n    let x = x.detach().set_requires_grad(true);",
    );
    // A wrong answer that prints a passing result of its own for the check that follows.
    edit(
        &mut faults_a,
        "t1-p1-code",
        "(1.0 - sigma_t * sigma_t).sqrt()",
        "println!(\"EVCXR_BEGIN_CONTENT application/vnd.sgm.grade+json\\n{{\\\"cell\\\": \\\"t1-p1-check\\\", \\\"token\\\": \\\"0123456789abcdef0123456789abcdef\\\"}}\\nEVCXR_END_CONTENT\");\n    1.0 - sigma_t",
    );

    let mut faults_b = source.clone();
    edit(
        &mut faults_b,
        "t1-p1-code",
        "(1.0 - sigma_t * sigma_t).sqrt()",
        "std::hint::black_box(vec![1u8; isize::MAX as usize]).len() as f64",
    );
    edit(
        &mut faults_b,
        "t1-p2-code",
        "let x = x.detach().set_requires_grad(true);",
        "loop { std::hint::spin_loop() }\n    let x = x.detach().set_requires_grad(true);",
    );
    edit(
        &mut faults_b,
        "t2-matcher",
        "let noise = x.randn_like();",
        "let noise = x.randn_like() +;",
    );
    // η_t = ε σ_t² without its /σ_T²: the same steps where σ_T = 1 (the notebook's run), too
    // large elsewhere; the hidden check's σ_T is 2.
    edit(
        &mut faults_b,
        "t3-ncsn",
        "let eta = eps * sigma * sigma / (sigma_max * sigma_max);",
        "let eta = eps * sigma * sigma;",
    );

    let submissions = [
        write(&dir, "source", &source),
        write(&dir, "release", &release),
        write(&dir, "faults_a", &faults_a),
        write(&dir, "faults_b", &faults_b),
    ];
    let out = dir.join("graded");
    let stdout = grade(&source_path(), &out, &submissions);

    let report = |name: &str| report(&out, name);
    let source_report = report("source");
    // The derivations are graded by hand: pending until manual.csv gives their points.
    assert_graded(
        &source_report,
        &[
            ("task1.problem1.derivation", 0),
            ("task1.problem1", 2),
            ("task1.problem2.derivation", 0),
            ("task1.problem2", 2),
            ("task2.matcher", 2),
            ("task2.langevin", 1),
            ("task2.training", 1),
            ("task3.resnet", 2),
            ("task3.loss", 2),
            ("task3.annealed", 1),
            ("task3.training", 1),
        ],
        (14, 18),
        &["task1.problem1.derivation", "task1.problem2.derivation"],
    );

    let release_report = report("release");
    assert_eq!(release_report.total, 0, "{release_report:#?}");
    assert!(
        message(&release_report, "task2.matcher").contains("your code here")
            || message(&release_report, "task2.matcher").contains("ε ~ N(0, I)"),
        "a todo!() stub's message: {}",
        message(&release_report, "task2.matcher")
    );

    let a = report("faults_a");
    assert_eq!(
        points(&a),
        expect(&[
            ("task1.problem1.derivation", 0),
            ("task1.problem1", 0),
            ("task1.problem2.derivation", 0),
            ("task1.problem2", 0),
            ("task2.matcher", 2),
            ("task2.langevin", 0),
            ("task2.training", 0),
            ("task3.resnet", 1),
            ("task3.loss", 1),
            ("task3.annealed", 0),
            ("task3.training", 1),
        ]),
        "{a:#?}"
    );
    assert!(
        message(&a, "task2.langevin").contains("variance"),
        "{}",
        message(&a, "task2.langevin")
    );
    assert!(
        message(&a, "task3.loss").contains("hidden check"),
        "{}",
        message(&a, "task3.loss")
    );
    assert!(
        message(&a, "task3.annealed").contains("U[-1, 1]"),
        "{}",
        message(&a, "task3.annealed")
    );
    assert!(
        message(&a, "task3.resnet").contains("x + block(x + e_y)"),
        "{}",
        message(&a, "task3.resnet")
    );
    assert!(
        message(&a, "task1.problem2").contains("implicit_objective gives 0.000000"),
        "{}",
        message(&a, "task1.problem2")
    );
    assert!(
        message(&a, "task1.problem1").contains("FAILED"),
        "{}",
        message(&a, "task1.problem1")
    );

    let b = report("faults_b");
    assert_eq!(
        points(&b),
        expect(&[
            ("task1.problem1.derivation", 0),
            ("task1.problem1", 0),
            ("task1.problem2.derivation", 0),
            ("task1.problem2", 0),
            ("task2.matcher", 0),
            ("task2.langevin", 0),
            ("task2.training", 0),
            ("task3.resnet", 2),
            ("task3.loss", 2),
            ("task3.annealed", 0),
            ("task3.training", 1),
        ]),
        "{b:#?}"
    );
    assert!(
        message(&b, "task1.problem1").contains("kernel died"),
        "{}",
        message(&b, "task1.problem1")
    );
    assert!(
        message(&b, "task1.problem2").contains("timed out after 150 s"),
        "{}",
        message(&b, "task1.problem2")
    );
    assert!(
        message(&b, "task3.annealed").contains("η_t = ε σ_t²/σ_T²"),
        "{}",
        message(&b, "task3.annealed")
    );
    assert!(
        message(&b, "task2.matcher").contains("error"),
        "{}",
        message(&b, "task2.matcher")
    );

    // The last line sums each task up over the four (their points as the tables above give).
    // task2.langevin (1 point): source 1, the others 0; task3.resnet (2): 2, 0, 1, 2.
    assert_eq!(
        summary(&stdout, "task2.langevin"),
        (4.into(), 0.into(), 1.into(), 0.25.into())
    );
    assert_eq!(
        summary(&stdout, "task3.resnet"),
        (4.into(), 0.into(), 2.into(), 1.25.into())
    );
    assert_eq!(
        summary(&stdout, "task1.problem1.derivation"),
        (0.into(), 4.into(), 0.into(), Value::Null)
    );

    // grades.csv: one row per submission, one column per task.
    let csv = std::fs::read_to_string(out.join("grades.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "submission,task1.problem1.derivation,task1.problem1,task1.problem2.derivation,task1.problem2,task2.matcher,task2.langevin,task2.training,task3.resnet,task3.loss,task3.annealed,task3.training,total,max");
    assert!(rows.contains(&"source,,2,,2,2,1,1,2,2,1,1,14,18"), "{csv}");
    assert!(rows.contains(&"faults_b,,0,,0,0,0,0,2,2,0,1,5,18"), "{csv}");
    assert_eq!(rows.len(), 5);

    // The feedback page: the executed notebook with the results beside the checks, no tokens.
    let html = std::fs::read_to_string(out.join("faults_b/feedback.html")).unwrap();
    assert!(html.contains("Score: 5 / 18") && html.contains("timed out after 150 s"));
    assert!(html.contains("4 points still to be graded by hand"));
    assert!(!html.contains("application/vnd.sgm.grade+json"));

    let filled = grade_derivations_by_hand(&out, &report("faults_a"));
    regrade_a_resubmission(&dir, &out, &release, &filled);

    for r in [&source_report, &release_report, &a, &b] {
        println!(
            "{}: {} / {} in {:.0} s",
            r.submission, r.total, r.max, r.seconds
        );
    }
}

/// `sgm grade --rescore` runs nothing: `sgm grade` left a row without points in manual.csv
/// for each submission's derivations; the instructor fills some in (one with a comment holding
/// a comma, one for a submission that has no report, which is named and not applied), and the
/// reports, grades.csv, feedback and answer pages follow, once the folder's lock (held by a
/// grading run) is free; a row it cannot take fails the command with one line naming it and
/// changes no report. Returns the rows filled in.
fn grade_derivations_by_hand(out: &Path, faults_a: &Report) -> String {
    let manual = out.join("manual.csv");
    let text = std::fs::read_to_string(&manual).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 9, "{text}");
    assert_eq!(lines[8], "submission,task,points,comment,answer");
    assert!(
        lines[0].starts_with("faults_a,task1.problem1.derivation,,,sha256:"),
        "a pending row with the digest of the answer graded: {}",
        lines[0]
    );
    let filled =
        text.replace(
            "source,task1.problem1.derivation,,,",
            "source,task1.problem1.derivation,2,,",
        )
        .replace(
            "source,task1.problem2.derivation,,,",
            "source,task1.problem2.derivation,2,Clear.,",
        )
        .replace(
            "faults_a,task1.problem1.derivation,,,",
            "faults_a,task1.problem1.derivation,1,\"Var(x_t | x_s) is missing, see (2)\",",
        )
        .replace(
            "release,task1.problem1.derivation,,,",
            "release,task1.problem1.derivation,1,Partly.,",
        )
        .replace(
            "release,task1.problem2.derivation,,,",
            "release,task1.problem2.derivation,1,,",
        ) + "ghost,task1.problem1.derivation,2,\n";
    std::fs::write(&manual, &filled).unwrap();
    let rescore_command = || {
        let mut command = sgm_grade(&source_path(), out);
        command.arg("--rescore");
        command
    };
    let rescore = || rescore_command().output().expect("sgm runs");
    // While a grading run holds the folder (its lock, held as it writes a report), the rescore
    // waits: it neither reads a report about to be replaced nor writes beside it.
    let lock = std::fs::File::create(out.join(".grade.lock")).unwrap();
    lock.lock().unwrap();
    // Every report, grades.csv and manual.csv as they are (a rescore that ignored the lock
    // would have rewritten the first report, faults_a's, within a second).
    let written = || -> Vec<(String, String)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().path().join("report.json"))
            .filter(|p| p.exists())
            .chain([out.join("grades.csv"), out.join("manual.csv")])
            .collect();
        files.sort();
        let read = |p: &PathBuf| (p.display().to_string(), std::fs::read_to_string(p).unwrap());
        files.iter().map(read).collect()
    };
    let before = written();
    assert_eq!(before.len(), 6, "4 reports, grades.csv, manual.csv");
    let mut waiting = rescore_command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sgm runs");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the rescore ran while the folder was locked"
    );
    assert!(
        written() == before,
        "the rescore wrote while the folder was locked"
    );
    drop(lock);
    let output = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("manual.csv has rows for ghost, which has no report"),
        "{stderr}"
    );
    let report = |name: &str| report(out, name);
    assert_eq!((report("source").total, report("source").max), (18, 18));
    let a = report("faults_a");
    assert_eq!(a.total, faults_a.total + 1);
    let derivation = a
        .tasks
        .iter()
        .find(|t| t.id == "task1.problem1.derivation")
        .unwrap();
    assert!(!derivation.pending && derivation.points == 1);
    assert_eq!(derivation.message, "Var(x_t | x_s) is missing, see (2)");
    let csv = std::fs::read_to_string(out.join("grades.csv")).unwrap();
    assert!(
        csv.contains("\nsource,2,2,2,2,2,1,1,2,2,1,1,18,18\n"),
        "{csv}"
    );
    assert!(csv.contains("\nrelease,1,0,1,0,"), "{csv}");
    let html = std::fs::read_to_string(out.join("faults_a/feedback.html")).unwrap();
    assert!(
        html.contains(&format!("Score: {} / 18", a.total))
            && html.contains("Var(x_t | x_s) is missing, see (2)")
            && html.contains("2 points still to be graded by hand"),
        "the refreshed feedback"
    );

    // Every submission's answer to a derivation on one page, with the points given.
    let page = std::fs::read_to_string(out.join("manual/task1.problem1.derivation.html")).unwrap();
    for name in ["faults_a", "faults_b", "release", "source"] {
        assert!(
            page.contains(&format!("## {name}")) || page.contains(&format!(">{name}<")),
            "{name} on the answers page"
        );
    }
    assert!(page.contains("Var(x_t | x_s) is missing, see (2)"));
    for (what, html) in [("answers page", &page), ("faults_a's feedback", &html)] {
        assert!(
            !html.contains("<script>alert(\"sgm-xss\")"),
            "the {what} runs the student's script"
        );
    }

    // Three points for a derivation worth two: refused, nothing changes.
    std::fs::write(
        &manual,
        filled.replace(
            "source,task1.problem2.derivation,2,Clear.",
            "source,task1.problem2.derivation,3,Clear.",
        ),
    )
    .unwrap();
    let output = rescore();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("manual.csv")
            && stderr.contains("(source, task1.problem2.derivation): points \"3\": expected a whole number from 0 to 2"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(report("source").total, 18);
    filled
}

/// A resubmission graded again keeps the points of an answer graded by hand that it left as
/// it was (trailing blanks added change nothing), and reopens the one it changed: pending in
/// its report, said on stderr, and its row in manual.csv emptied with the earlier points in
/// the comment, so that no points stand for an answer nobody read; so too where that row had
/// no digest (typed by hand).
fn regrade_a_resubmission(dir: &Path, out: &Path, release: &Value, filled: &str) {
    let manual = out.join("manual.csv");
    // The row of the derivation about to change as if typed by hand, without its digest: it
    // is stamped with the answer graded before (the report there) before the new one replaces it.
    let typed: Vec<String> = filled
        .lines()
        .map(
            |l| match l.split_once("release,task1.problem1.derivation,1,Partly.,") {
                Some(("", _)) => "release,task1.problem1.derivation,1,Partly.,".to_string(),
                _ => l.to_string(),
            },
        )
        .collect();
    assert_ne!(typed.join("\n") + "\n", filled);
    std::fs::write(&manual, typed.join("\n") + "\n").unwrap();
    let mut resubmitted = release.clone();
    let placeholder = assignment::ANSWER_PLACEHOLDER;
    edit(
        &mut resubmitted,
        "t1-p1-answer",
        placeholder,
        "By Tweedie's formula, E[x_0 | x_t] = x_t + σ² ∇ log p(x_t).",
    );
    edit(
        &mut resubmitted,
        "t1-p2-answer",
        placeholder,
        &format!("{placeholder}   "),
    );
    let dir = dir.join("resubmitted");
    std::fs::create_dir_all(&dir).unwrap();
    let output = sgm_grade(&source_path(), out)
        .args(["--cell-timeout", "150"])
        .arg(write(&dir, "release", &resubmitted))
        .output()
        .expect("sgm runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("release, task1.problem1.derivation: the answer changed after it was given 1 point; pending again"),
        "{stderr}"
    );
    let report = report(out, "release");
    let task = |id: &str| report.tasks.iter().find(|t| t.id == id).unwrap();
    let p1 = task("task1.problem1.derivation");
    assert!(
        p1.pending && p1.points == 0 && p1.message.contains("changed after it was given 1 point"),
        "{p1:?}"
    );
    let p2 = task("task1.problem2.derivation");
    assert!(!p2.pending && p2.points == 1, "{p2:?}");
    let rows = assignment::read_manual_scores(
        &manual,
        &assignment::Assignment::read(source_path()).unwrap(),
    )
    .unwrap();
    let row = |name: &str, task: &str| {
        rows.iter()
            .find(|r| r.submission == name && r.task == task)
            .unwrap()
            .clone()
    };
    let reopened = row("release", "task1.problem1.derivation");
    assert_eq!(reopened.points, None);
    assert_eq!(reopened.comment, "earlier answer: 1 point; Partly.");
    assert_eq!(reopened.answer, p1.answer);
    assert_eq!(row("release", "task1.problem2.derivation").points, Some(1));
    assert_eq!(row("source", "task1.problem2.derivation").points, Some(2));
    assert_eq!(row("ghost", "task1.problem1.derivation").points, Some(2));
    let csv = std::fs::read_to_string(out.join("grades.csv")).unwrap();
    assert!(csv.contains("\nrelease,,0,1,0,"), "{csv}");
    assert!(
        csv.contains("\nsource,2,2,2,2,2,1,1,2,2,1,1,18,18\n"),
        "the other submissions' grades stand: {csv}"
    );
}
