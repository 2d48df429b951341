//! `sgm release` and `sgm grade`: the homework workflow of `sgm::assignment` on the command
//! line. Execution is handed to the set-up's Python (`kernel-setup/grade_runner.py`), which runs
//! each submission in its own sandboxed kernel; this side builds what runs and scores it.

use crate::{CliError, CliResult};
use clap::Args;
use serde_json::json;
use sgm::assignment::{self, Assignment, CellOutcome, Report};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Args)]
pub struct ReleaseArgs {
    /// The instructor's source notebook.
    source: PathBuf,
    /// Folder of the student version [default: ../release beside the source's folder].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only check that the committed release is up to date and leaks nothing (exit 1 if not).
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// Your copies of a homework release (saved), each checked against the cells its release
    /// lists.
    #[arg(required = true)]
    notebooks: Vec<PathBuf>,
}

#[derive(Args)]
pub struct GradeArgs {
    /// The instructor's source notebook (with the solutions and hidden checks).
    #[arg(long)]
    assignment: PathBuf,
    /// Folder for the reports: DIR/<submission>/report.json, feedback.html; DIR/grades.csv.
    #[arg(long)]
    out: PathBuf,
    /// Submissions graded at the same time (each in its own kernel).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Seconds one cell may run before it is stopped (the kernel is then restarted).
    #[arg(long, default_value_t = 300)]
    cell_timeout: u64,
    /// Seconds one submission may run in all; later cells are skipped.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Memory limit of a submission, e.g. 8G: of each of its processes (data segment) and of
    /// all of them together (its cgroup: memory, page cache, in-memory folders).
    #[arg(long, default_value = "8G")]
    memory: String,
    /// Processes and threads one submission may have at once (its cgroup); a fork bomb stops
    /// there. Grading homework 5 peaks at 46 on 2 cores (more with more cores).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=1 << 22))]
    processes: u32,
    /// Grade without a cgroup (no limit on a submission's processes and total memory), where
    /// the grader cannot create one (it needs root). The cgroup is part of the sandbox:
    /// `--no-sandbox` has none either.
    #[arg(long)]
    no_cgroup: bool,
    /// What one submission may write to disk (its folder, its copy of the build folder, its
    /// kernel's connection folder), e.g. 2G (grading homework 5 writes about 30 MB); past it
    /// the kernel is stopped and the files removed.
    #[arg(long, default_value = "2G")]
    disk: String,
    /// The largest submitted notebook file read, e.g. 64M (outputs included: this project's
    /// executed notebooks are 0.5 to 5 MB); a larger one, or one that is not a regular file (a
    /// FIFO, a device), gets 0 points with the reason, without a kernel.
    #[arg(long, default_value = "64M")]
    max_notebook: String,
    /// Run without the bubblewrap sandbox (trusted notebooks only, e.g. the source itself).
    #[arg(long)]
    no_sandbox: bool,
    /// Run nothing: apply DIR/manual.csv (the points of the answers graded by hand) to every
    /// DIR/*/report.json and rebuild their feedback and DIR/grades.csv.
    #[arg(long, conflicts_with = "submissions")]
    rescore: bool,
    /// What names each submission's report (DIR/<name>/) and its rows in grades.csv and
    /// manual.csv: `file`, its file name without .ipynb; `folder`, the folder it is in (one
    /// folder per student: submissions/<student>/hw5.ipynb).
    #[arg(long, value_enum, default_value_t = NameBy::File)]
    names: NameBy,
    /// The submitted notebooks (.ipynb).
    #[arg(required_unless_present = "rescore")]
    submissions: Vec<PathBuf>,
}

/// What names a submission ([`GradeArgs::names`]).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NameBy {
    /// Its file name without the extension.
    File,
    /// The name of the folder it is in.
    Folder,
}

/// What `sgm grade` itself writes in DIR beside the submissions' folders: no submission may
/// be named so.
const RESERVED: [&str; 3] = ["manual", "manual.csv", "grades.csv"];

fn root() -> PathBuf {
    std::env::var_os("SGM_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

pub fn release(args: &ReleaseArgs) -> CliResult<ExitCode> {
    let source = Assignment::read(&args.source)?;
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => args
            .source
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("release"))
            .ok_or_else(|| CliError::Usage("cannot tell the release folder: pass --out".into()))?,
    };
    let name = args
        .source
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{}: not a file", args.source.display())))?;
    let target = out.join(name);
    if args.check {
        let released = assignment::read_notebook(&target)?;
        let problems = source.check_release(&released)?;
        if problems.is_empty() {
            println!("{}", json!({"release": target, "ok": true}));
            return Ok(ExitCode::SUCCESS);
        }
        return Err(CliError::Usage(format!(
            "{}: {}",
            target.display(),
            problems.join("; ")
        )));
    }
    sgm::checkpoint::create_dir(&out)?;
    assignment::write_notebook(&target, &source.release())?;
    let tasks = source.tasks();
    println!(
        "{}",
        json!({"release": target, "tasks": tasks, "max": tasks.iter().map(|t| t.max).sum::<u32>()})
    );
    Ok(ExitCode::SUCCESS)
}

/// A folder name for a submission: its file stem or its folder's name ([`NameBy`]), made a
/// [`safe_name`]. The folder is the one the path names (a link is named by the folder it is
/// in, not by its target's); `..` at its end is resolved.
fn submission_name(path: &Path, by: NameBy) -> String {
    safe_name(&given_name(path, by))
}

/// What names a submission before [`safe_name`]: its file stem or its folder's name.
fn given_name(path: &Path, by: NameBy) -> String {
    let name = match by {
        NameBy::File => path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        NameBy::Folder => std::path::absolute(path).ok().and_then(|p| {
            let parent = p.parent()?;
            let folder = match parent.file_name() {
                Some(name) => name.to_owned(),
                None => parent.canonicalize().ok()?.file_name()?.to_owned(),
            };
            Some(folder.to_string_lossy().into_owned())
        }),
    };
    name.unwrap_or_else(|| "submission".into())
}

/// The file in a submission's report folder that holds the name it was given before
/// [`safe_name`]: two submissions of separate invocations (a job array) whose names become one
/// (`José` and `Jos_`, or `Bob` and `bob` on a case-insensitive file system) would otherwise
/// share a report folder, the later silently replacing the earlier's report and taking its
/// rows in manual.csv.
const GIVEN_NAME_FILE: &str = ".given-name";

/// A submission as [`assignment::read_submission`] reads it (a regular file within
/// `--max-notebook`), unless a link leads it into the folder of the assignment's `source` (the
/// solutions): a student whose submission is a link (collected from a git repository, which
/// keeps links) would otherwise be graded on the instructor's answers. A path that names that
/// folder itself (the instructor grading the source, a check of the hidden checks) is read.
fn read_submission(path: &Path, source: &Path, limit: u64) -> sgm::Result<serde_json::Value> {
    let folder = |p: &Path| p.parent().map(Path::to_owned);
    let resolved_in = path
        .canonicalize()
        .ok()
        .zip(source.canonicalize().ok().and_then(|s| folder(&s)))
        .is_some_and(|(p, solutions)| p.starts_with(solutions));
    let named_in = lexical(path)
        .zip(lexical(source).and_then(|s| folder(&s)))
        .is_some_and(|(p, solutions)| p.starts_with(solutions));
    if resolved_in && !named_in {
        return Err(sgm::Error::Notebook {
            path: path.display().to_string(),
            cell: "(file)".into(),
            why: "a link into the folder of the assignment's source: only the student's own \
                  file is graded (submit the notebook itself, not a link)"
                .into(),
        });
    }
    assignment::read_submission(path, limit)
}

/// `path` made absolute with `.` and `..` taken away by name, without following links.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in std::path::absolute(path).ok()?.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Whether `path` lies in the folder `out` (as given or with links resolved): grading a
/// submission clears `out/<name>/`, which could hold it.
fn inside(path: &Path, out: &Path) -> bool {
    let lexical = match (std::path::absolute(path), std::path::absolute(out)) {
        (Ok(p), Ok(o)) => p.starts_with(o),
        _ => false,
    };
    let resolved = match (path.canonicalize(), out.canonicalize()) {
        (Ok(p), Ok(o)) => p.starts_with(o),
        _ => false,
    };
    lexical || resolved
}

/// `text` as a file name: anything but [A-Za-z0-9._-] replaced, no leading dot (a hidden
/// folder) or dash (a spreadsheet reads `-A1` in grades.csv as a formula).
fn safe_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(['.', '-']) {
        format!("_{name}")
    } else {
        name
    }
}

/// Seconds since `start`, to a tenth.
fn seconds_since(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> sgm::Error + '_ {
    move |source| sgm::Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Grades one submission into `out/<name>/`; never fails for what the submission does (that
/// costs points), only for the grader's own faults.
fn grade_one(source: &Assignment, path: &Path, out: &Path, args: &GradeArgs) -> CliResult<Report> {
    let start = Instant::now();
    let name = submission_name(path, args.names);
    let given = given_name(path, args.names);
    let dir = out.join(&name);
    let grading_dir = out.join(".grading").join(&name);
    {
        // Under the lock: a --rescore beside it reads either the old report or none, and
        // another invocation's submission of the same folder name is seen.
        let _lock = lock_folder(out)?;
        let claim = dir.join(GIVEN_NAME_FILE);
        if let Ok(other) = std::fs::read_to_string(&claim) {
            if other != given {
                return Err(CliError::Usage(format!(
                    "{}: named {given:?}, its report would go to {}, which holds the report of {other:?} (graded by another sgm grade): names that become one folder name must differ; rename one",
                    path.display(),
                    dir.display()
                )));
            }
        }
        for d in [&dir, &grading_dir] {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(io_err(d))?;
            }
            sgm::checkpoint::create_dir(d)?;
        }
        std::fs::write(&claim, &given).map_err(io_err(&claim))?;
    }
    let limit = byte_size("--max-notebook", &args.max_notebook)?;
    let submission = match read_submission(path, &args.assignment, limit) {
        Ok(nb) => nb,
        Err(e) => {
            // Not a notebook: every task fails, with the reason.
            let empty = json!({"cells": []});
            let grading = source.grading_notebook(&empty)?;
            let mut report = assignment::score(source, &name, &grading, &empty, &[]);
            let why = format!("the submission could not be read: {e}");
            for t in report.tasks.iter_mut().filter(|t| !t.pending) {
                t.message = why.clone();
            }
            // Its tasks graded by hand stay pending (0 points to give) as with --rescore. The
            // reason is the one note (not every answer cell "missing" from no notebook).
            report.notes = vec![why];
            report.seconds = seconds_since(start);
            let _lock = lock_folder(out)?;
            apply_current_rows(source, out, &mut report);
            write_report(&dir, &report)?;
            return Ok(report);
        }
    };
    let grading = source.grading_notebook(&submission)?;
    let run = grading_dir.join("run.ipynb");
    let executed_path = grading_dir.join("executed.ipynb");
    let outcomes_path = grading_dir.join("outcomes.json");
    assignment::write_notebook(&run, &grading.notebook)?;
    let checks: Vec<usize> = grading.graded.iter().map(|g| g.index).collect();
    let mut cmd = Command::new(python());
    cmd.arg(root().join("kernel-setup/grade_runner.py"))
        .arg("run")
        .arg("--notebook")
        .arg(&run)
        .arg("--executed")
        .arg(&executed_path)
        .arg("--outcomes")
        .arg(&outcomes_path)
        .arg("--work")
        .arg(dir.join("work"))
        .arg("--build")
        .arg(grading_dir.join("build"))
        .arg("--checks")
        .arg(serde_json::to_string(&checks).map_err(sgm::Error::from)?)
        .arg("--cell-timeout")
        .arg(args.cell_timeout.to_string())
        .arg("--timeout")
        .arg(args.timeout.to_string())
        .arg("--memory")
        .arg(&args.memory)
        .arg("--disk")
        .arg(&args.disk)
        .arg("--processes")
        .arg(args.processes.to_string());
    if args.no_sandbox {
        cmd.arg("--no-sandbox");
    }
    if args.no_cgroup {
        cmd.arg("--no-cgroup");
    }
    let log_path = grading_dir.join("runner.log");
    let log = std::fs::File::create(&log_path).map_err(io_err(&log_path))?;
    let status = cmd
        .stdout(log.try_clone().map_err(io_err(&log_path))?)
        .stderr(log)
        .status()
        .map_err(|e| CliError::Usage(format!("cannot start {}: {e}", python().display())))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(CliError::Usage(format!(
            "grading {name}: the runner failed ({status}): {last} (log: {})",
            log_path.display()
        )));
    }
    let executed = assignment::read_notebook(&executed_path)?;
    let text = std::fs::read_to_string(&outcomes_path).map_err(io_err(&outcomes_path))?;
    let outcomes: Vec<CellOutcome> = serde_json::from_str(&text).map_err(sgm::Error::from)?;
    let mut report = assignment::score(source, &name, &grading, &executed, &outcomes);
    report.seconds = seconds_since(start);
    // The report and its feedback under the lock, with the rows as they are then: a --rescore
    // beside it neither overwrites them with older ones nor misses them.
    let lock = lock_folder(out)?;
    apply_current_rows(source, out, &mut report);
    write_report(&dir, &report)?;
    let feedback = assignment::feedback_notebook(source, &executed, &grading, &report);
    let feedback_path = grading_dir.join("feedback.ipynb");
    assignment::write_notebook(&feedback_path, &feedback)?;
    write_feedback_html(&name, &feedback_path, &dir)?;
    drop(lock);
    // The work folder keeps what the notebook wrote (checkpoints, figures); the build copy
    // is large and of no further use.
    let _ = std::fs::remove_dir_all(grading_dir.join("build"));
    Ok(report)
}

/// Applies `out/manual.csv` as it is now to `report` (the caller holds [`lock_folder`]), so
/// that rows given while the submission ran count. A file that cannot be read now (an
/// instructor in the middle of editing it) leaves the tasks graded by hand pending, with a
/// line on stderr, rather than losing the report: `--rescore` applies it once it reads.
fn apply_current_rows(source: &Assignment, out: &Path, report: &mut Report) {
    let manual = assignment::read_manual_scores(&out.join("manual.csv"), source).unwrap_or_else(|e| {
        eprintln!(
            "sgm grade: {}: {e}: its tasks graded by hand are left pending (run --rescore once the file reads)",
            report.submission
        );
        Vec::new()
    });
    assignment::apply_manual_scores(source, report, &manual);
}

/// `dir/feedback.html` from the feedback notebook at `feedback_path`.
fn write_feedback_html(name: &str, feedback_path: &Path, dir: &Path) -> CliResult<()> {
    write_html(feedback_path, &dir.join("feedback.html")).map_err(|why| {
        CliError::Usage(format!(
            "grading {name}: writing feedback.html failed: {why}"
        ))
    })
}

/// The notebook at `notebook` as the HTML page `html` (`grade_runner.py html`: formulas render
/// offline); the error is the converter's last line.
fn write_html(notebook: &Path, html: &Path) -> Result<(), String> {
    let run = Command::new(python())
        .arg(root().join("kernel-setup/grade_runner.py"))
        .arg("html")
        .arg(notebook)
        .arg(html)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", python().display()))?;
    if run.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&run.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .to_string())
    }
}

/// `sgm validate`: one line per finding ([`assignment::validate`]) of each notebook, or one
/// saying it is ready; exit 1 where anything was found.
pub fn validate(args: &ValidateArgs) -> CliResult<ExitCode> {
    let mut found = false;
    for path in &args.notebooks {
        let nb = assignment::read_notebook(path)?;
        let findings = assignment::validate(path, &nb)?;
        for f in &findings {
            println!("{}: {}", path.display(), f.text);
        }
        if findings.is_empty() {
            println!(
                "{}: ready: every answer cell is answered, and grading leaves nothing out",
                path.display()
            );
        }
        found |= !findings.is_empty();
    }
    Ok(if found {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `sgm grade --rescore`: applies `out/manual.csv` to every `out/*/report.json` and rebuilds
/// their feedback, the answer pages and `grades.csv`; nothing runs. Every report is read (and
/// the rows checked) before any is written.
fn rescore(source: &Assignment, out: &Path) -> CliResult<ExitCode> {
    if !out.is_dir() {
        return Err(CliError::Usage(format!(
            "{}: no such folder (--rescore applies manual.csv to the reports sgm grade wrote there)",
            out.display()
        )));
    }
    let _lock = lock_folder(out)?;
    let manual = assignment::read_manual_scores(&out.join("manual.csv"), source)?;
    let reports = read_reports(source, out)?;
    if reports.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no report.json in its folders: grade the submissions first",
            out.display()
        )));
    }
    let mut unknown: Vec<&str> = manual
        .iter()
        .map(|m| m.submission.as_str())
        .filter(|name| reports.iter().all(|(_, r)| r.submission != *name))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    for name in unknown {
        eprintln!(
            "sgm grade: manual.csv has rows for {name}, which has no report in {}: not applied",
            out.display()
        );
    }
    // A page that cannot be written is said at the end: the other submissions still get
    // their points and pages, and grades.csv is rebuilt.
    let mut page_errors = Vec::new();
    for (dir, mut report) in reports {
        assignment::apply_manual_scores(source, &mut report, &manual);
        write_report(&dir, &report)?;
        let feedback_path = out
            .join(".grading")
            .join(&report.submission)
            .join("feedback.ipynb");
        if feedback_path.exists() {
            let feedback = assignment::read_notebook(&feedback_path)?;
            let feedback = assignment::refresh_feedback(source, &feedback, &report);
            assignment::write_notebook(&feedback_path, &feedback)?;
            if let Err(e) = write_feedback_html(&report.submission, &feedback_path, &dir) {
                eprintln!("sgm grade: {e}");
                page_errors.push(e);
            }
        }
        println!(
            "{}",
            json!({"submission": report.submission, "total": report.total, "max": report.max})
        );
    }
    let shared = write_shared(source, out)?;
    if let Some(first) = page_errors.into_iter().next() {
        return Err(first);
    }
    println!(
        "{}",
        serde_json::to_string(&shared).map_err(sgm::Error::from)?
    );
    Ok(ExitCode::SUCCESS)
}

/// Brings `out/manual.csv` up to date with `reports` ([`assignment::manual_rows_for`]: a
/// row without points for each task graded by hand a submission lacks, digests filled in, and
/// grades whose answer changed reopened, each said on stderr). The file is rewritten only where
/// something changed, in its own style (byte-order mark, line ends; fields trimmed), the rows
/// in their order. Returns its path, or `None` where the assignment has no such task. The file
/// is read afresh (the caller holds [`lock_folder`]).
fn update_manual_rows(
    source: &Assignment,
    out: &Path,
    reports: &[(PathBuf, Report)],
) -> CliResult<Option<PathBuf>> {
    if source.tasks_by_hand().is_empty() {
        return Ok(None);
    }
    let path = out.join("manual.csv");
    let text = assignment::read_manual_text(&path)?;
    let manual = assignment::parse_manual_scores(&text, &path, source)?;
    let reports: Vec<Report> = reports.iter().map(|(_, r)| r.clone()).collect();
    let update = assignment::manual_rows_for(source, &reports, &manual);
    for line in &update.reopened {
        eprintln!("sgm grade: {line} (manual.csv)");
    }
    if update.changed || text.is_empty() {
        let text = assignment::manual_file_text(&update.rows, &text)?;
        sgm::checkpoint::write_atomically(&path, |tmp| {
            std::fs::write(tmp, &text).map_err(io_err(tmp))
        })?;
    }
    Ok(Some(path))
}

/// Held while an invocation writes what every submission's report feeds (`lock_folder`'s
/// callers): separate invocations that end together (a job array) wait for each other, so
/// that none drops or repeats another's rows or leaves a table without its submission.
fn lock_folder(out: &Path) -> CliResult<std::fs::File> {
    let path = out.join(".grade.lock");
    let lock = std::fs::File::create(&path).map_err(io_err(&path))?;
    lock.lock().map_err(io_err(&path))?;
    Ok(lock)
}

/// What every report in `out` feeds, rebuilt from them (under [`lock_folder`]): manual.csv's
/// rows, the answer pages and grades.csv. A manual.csv that does not read (an instructor
/// saving it half-way) is left as it is, the rest is rebuilt, and the error says so.
fn write_shared(source: &Assignment, out: &Path) -> CliResult<Shared> {
    let reports = read_reports(source, out)?;
    let manual = update_manual_rows(source, out, &reports);
    // grades.csv even where an answer page cannot be written (the error is returned after).
    let pages = write_answer_pages(source, out, &reports);
    let all: Vec<Report> = reports.into_iter().map(|(_, r)| r).collect();
    let grades = write_grades(source, out, &all)?;
    pages?;
    let manual = manual.map_err(|e| {
        CliError::Usage(format!(
            "{e} (manual.csv is left as it is, without the new rows; grades.csv and the answer pages are rebuilt: once it reads, run --rescore)"
        ))
    })?;
    Ok(Shared {
        grades,
        manual,
        tasks: assignment::task_summaries(&source.tasks(), &all),
    })
}

/// What [`write_shared`] wrote, and each task over every report: the last line `sgm grade`
/// prints.
#[derive(serde::Serialize)]
struct Shared {
    grades: PathBuf,
    manual: Option<PathBuf>,
    tasks: Vec<assignment::TaskSummary>,
}

fn write_report(dir: &Path, report: &Report) -> CliResult<()> {
    let path = dir.join("report.json");
    let text = serde_json::to_string_pretty(report).map_err(sgm::Error::from)? + "\n";
    sgm::checkpoint::write_atomically(&path, |tmp| {
        std::fs::write(tmp, &text).map_err(io_err(tmp))
    })?;
    Ok(())
}

/// `DIR/grades.csv` from `reports` (every `DIR/*/report.json`, [`read_reports`]), so that
/// submissions graded by separate invocations (a job array) end in one table.
fn write_grades(source: &Assignment, out: &Path, reports: &[Report]) -> CliResult<PathBuf> {
    let csv = assignment::grades_csv(&source.tasks(), reports)?;
    let path = out.join("grades.csv");
    sgm::checkpoint::write_atomically(&path, |tmp| std::fs::write(tmp, &csv).map_err(io_err(tmp)))?;
    Ok(path)
}

/// `reports` with the digest of each answer graded by hand that a report from before digests
/// were kept lacks, taken from the notebook it graded (`.grading/<name>/executed.ipynb`), so
/// that rows given for it are stamped with the answer they were given for.
fn with_digests(source: &Assignment, out: &Path, reports: &mut [(PathBuf, Report)]) {
    let by_hand: Vec<String> = source.tasks_by_hand().into_iter().map(|t| t.id).collect();
    for (_, report) in reports.iter_mut() {
        let lacking: Vec<&mut assignment::TaskResult> = report
            .tasks
            .iter_mut()
            .filter(|t| t.answer.is_empty() && by_hand.contains(&t.id))
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let executed = out
            .join(".grading")
            .join(&report.submission)
            .join("executed.ipynb");
        let Ok(nb) = assignment::read_notebook(&executed) else {
            continue;
        };
        for t in lacking {
            t.answer = assignment::answer_digest(source, &t.id, &nb);
        }
    }
}

/// Every `out/*/report.json` with its folder, by submission name, digests filled in
/// ([`with_digests`]); one that does not parse is an error naming it, or where `skip_broken` a
/// line on stderr (before grading: a re-grade replaces it).
fn read_reports_or(
    source: &Assignment,
    out: &Path,
    skip_broken: bool,
) -> CliResult<Vec<(PathBuf, Report)>> {
    let mut reports = Vec::new();
    let entries = std::fs::read_dir(out).map_err(io_err(out))?;
    for entry in entries.flatten() {
        let path = entry.path().join("report.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<Report>(&text) {
                Ok(report) => reports.push((entry.path(), report)),
                Err(e) if skip_broken => {
                    eprintln!("sgm grade: {}: {e}: not read", path.display())
                }
                Err(e) => return Err(CliError::Usage(format!("{}: {e}", path.display()))),
            }
        }
    }
    reports.sort_by(|a, b| a.1.submission.cmp(&b.1.submission));
    with_digests(source, out, &mut reports);
    Ok(reports)
}

/// [`read_reports_or`], every report read.
fn read_reports(source: &Assignment, out: &Path) -> CliResult<Vec<(PathBuf, Report)>> {
    read_reports_or(source, out, false)
}

/// `out/manual/<task>.html` for each task graded by hand: every graded submission's answer
/// on one page ([`assignment::answers_notebook`]), with the points given so far.
fn write_answer_pages(
    source: &Assignment,
    out: &Path,
    reports: &[(PathBuf, Report)],
) -> CliResult<()> {
    let tasks = source.tasks_by_hand();
    if tasks.is_empty() {
        return Ok(());
    }
    let graded: Vec<(Report, serde_json::Value)> = reports
        .iter()
        .map(|(_, r)| {
            let executed = out
                .join(".grading")
                .join(&r.submission)
                .join("executed.ipynb");
            let nb = assignment::read_notebook(&executed).unwrap_or(serde_json::Value::Null);
            (r.clone(), nb)
        })
        .collect();
    let pages = out.join("manual");
    sgm::checkpoint::create_dir(&pages)?;
    sgm::checkpoint::create_dir(&out.join(".grading"))?;
    for task in tasks {
        let name = safe_name(&task.id);
        let nb = assignment::answers_notebook(source, &task.id, &graded);
        let path = out.join(".grading").join(format!("answers-{name}.ipynb"));
        assignment::write_notebook(&path, &nb)?;
        write_html(&path, &pages.join(format!("{name}.html")))
            .map_err(|why| CliError::Usage(format!("the answers to {}: {why}", task.id)))?;
    }
    Ok(())
}

/// A size such as `8G`, `512M`, `1.5G` or `1048576` (bytes): digits, optionally `.` and more
/// digits, then optionally K, M, G or T (powers of 1,024), `i` and `B`, case-insensitive; from 1
/// byte to 1 PiB. `grade_runner.py`'s `parse_bytes` reads the same.
fn byte_size(option: &str, text: &str) -> CliResult<u64> {
    let bad = || {
        CliError::Usage(format!(
            "{option} {text:?}: expected a size such as 8G or 512M"
        ))
    };
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let t = t.strip_suffix('I').unwrap_or(t);
    let (number, power) = match t.strip_suffix(['K', 'M', 'G', 'T']) {
        Some(n) => (
            n,
            "KMGT".find(t.chars().last().unwrap()).unwrap() as i32 + 1,
        ),
        None => (t, 0),
    };
    let number = number.trim_end();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |d: &str| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit());
    if !(digits(whole) && digits(fraction)) {
        return Err(bad());
    }
    let bytes = number.parse::<f64>().map_err(|_| bad())? * 1024f64.powi(power);
    if (1.0..=1024f64.powi(5)).contains(&bytes) {
        Ok(bytes as u64)
    } else {
        Err(bad())
    }
}

pub fn grade(args: &GradeArgs) -> CliResult<ExitCode> {
    let source = Assignment::read(&args.assignment)?;
    if args.rescore {
        return rescore(&source, &args.out);
    }
    if args.jobs == 0 {
        return Err(CliError::Usage("--jobs must be at least 1".into()));
    }
    byte_size("--memory", &args.memory)?;
    byte_size("--disk", &args.disk)?;
    byte_size("--max-notebook", &args.max_notebook)?;
    // Names compared without case: a folder `Manual` or two reports `Bob` and `bob` would be
    // one folder on a case-insensitive file system.
    let mut names: std::collections::HashMap<String, &PathBuf> = std::collections::HashMap::new();
    for s in &args.submissions {
        if inside(s, &args.out) {
            return Err(CliError::Usage(format!(
                "{}: a submission inside the --out folder {} (grading clears the folders there): keep submissions elsewhere",
                s.display(),
                args.out.display()
            )));
        }
        let name = submission_name(s, args.names);
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(CliError::Usage(format!(
                "{}: a submission named {name} would take the place of {}, which sgm grade writes itself (rename it)",
                s.display(),
                args.out.join(&name).display()
            )));
        }
        if let Some(other) = names.insert(name.to_ascii_lowercase(), s) {
            let same = matches!((other.canonicalize(), s.canonicalize()), (Ok(a), Ok(b)) if a == b);
            let hint = match args.names {
                _ if same => "the same file given twice",
                NameBy::File => {
                    "rename one, or --names folder where each is in a folder of its own"
                }
                NameBy::Folder => "one folder per submission, or --names file",
            };
            return Err(CliError::Usage(format!(
                "{} and {} would both be named {name} ({hint})",
                other.display(),
                s.display()
            )));
        }
    }
    if !args.no_sandbox && !args.no_cgroup {
        // Once for all submissions: where no cgroup can be made, every one would fail alike.
        let out = Command::new(python())
            .arg(root().join("kernel-setup/grade_runner.py"))
            .arg("cgroup-check")
            .output()
            .map_err(|e| CliError::Usage(format!("cannot start {}: {e}", python().display())))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            return Err(CliError::Usage(
                last.unwrap_or("the cgroup check failed")
                    .trim_start_matches("grade_runner: ")
                    .to_string(),
            ));
        }
    }
    sgm::checkpoint::create_dir(&args.out)?;
    // Before grading: a malformed manual.csv stops here, not after an hour of grading, and its
    // rows without a digest (typed by hand, or given before digests were kept) are stamped with
    // the answer they were given for, that of the reports there now, before new ones replace
    // them.
    assignment::read_manual_scores(&args.out.join("manual.csv"), &source)?;
    {
        let _lock = lock_folder(&args.out)?;
        let reports = read_reports_or(&source, &args.out, true)?;
        update_manual_rows(&source, &args.out, &reports)?;
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, CliResult<Report>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(args.submissions.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(path) = args.submissions.get(i) else {
                    break;
                };
                let result = grade_one(&source, path, &args.out, args);
                if let Ok(r) = &result {
                    println!(
                        "{}",
                        json!({"submission": r.submission, "total": r.total, "max": r.max, "seconds": r.seconds})
                    );
                }
                results.lock().expect("no panics while held").push((i, result));
            });
        }
    });
    let mut results = results.into_inner().expect("no panics while held");
    results.sort_by_key(|(i, _)| *i);
    let lock = lock_folder(&args.out)?;
    let shared = write_shared(&source, &args.out);
    drop(lock);
    let mut failed: Vec<String> = results
        .into_iter()
        .filter_map(|(_, r)| r.err().map(|e| e.to_string()))
        .collect();
    match shared {
        Ok(shared) if failed.is_empty() => {
            println!(
                "{}",
                serde_json::to_string(&shared).map_err(sgm::Error::from)?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Ok(_) => {}
        Err(e) => failed.push(e.to_string()),
    }
    Err(CliError::Usage(failed.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::{byte_size, safe_name};

    /// A submission's name is a folder of DIR and the first field of its grades.csv row.
    #[test]
    fn safe_names_are_plain_file_names_that_no_spreadsheet_reads_as_a_formula() {
        for (text, name) in [
            ("alice", "alice"),
            ("José Ñ", "Jos___"),
            ("-A1", "_-A1"),
            ("=1+2", "_1_2"),
            (".hidden", "_.hidden"),
            ("../up", "_.._up"),
            ("@sum", "_sum"),
        ] {
            assert_eq!(safe_name(text), name, "{text}");
        }
    }

    /// The sizes `grade_runner.py`'s `parse_bytes` reads, and what it refuses, read alike.
    #[test]
    fn sizes_read_as_the_runner_reads_them() {
        for (text, bytes) in [
            ("8G", 8u64 << 30),
            ("512M", 512 << 20),
            ("1.5G", 3 << 29),
            ("1048576", 1 << 20),
            ("8 G", 8 << 30),
            ("8gib", 8 << 30),
            ("2KB", 2048),
            ("8 i", 8),
            ("1024T", 1 << 50),
        ] {
            assert_eq!(byte_size("--disk", text).ok(), Some(bytes), "{text}");
        }
        for text in [
            ".5G", "1.G", "8X", "lots", "0", "1e9", "2000T", "", "G", "-1G",
        ] {
            let err = byte_size("--disk", text).unwrap_err().to_string();
            assert!(err.contains(&format!("--disk {text:?}")), "{text}: {err}");
        }
    }
}
