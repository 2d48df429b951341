//! The grader's sandbox, probed from inside: an assignment whose checks are attempts a malicious
//! submission would make (read the assignment and the grader's files, write into the toolkit,
//! open a connection to a service of the machine, see the grader's processes, fill the in-memory
//! folders), graded through
//! `sgm grade` in bubblewrap. Each check passes only when its attempt fails, so a sandbox that
//! mounts too much, shares the network or the PID namespace loses that check's point. And
//! submissions that flood their output (the grader must cut it without changing a score), fill
//! the disk, or start processes and memory past the limits of their cgroup; and an instructor's
//! `manual.csv` saved half-way while a submission runs.

use serde_json::{json, Value};
use sgm::assignment::{self, Report, FIRST_CELL};
use sgm_tests::fixtures::{report, sgm_grade};
use sgm_tests::tmpdir;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The CPU-share test measures a share of the cores: it runs alone, the others side by side.
static CORES: RwLock<()> = RwLock::new(());

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

/// Where [`grade`] writes the assignment of submission `name`.
fn source_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}_source.ipynb"))
}

fn notebook(cells: Vec<Value>) -> Value {
    json!({
        "cells": cells,
        "metadata": {"kernelspec": {"name": "sgm", "display_name": "Rust (sgm)", "language": "rust"}},
        "nbformat": 4, "nbformat_minor": 5
    })
}

/// Grades `cells`, as the assignment and as submission `name` both, with `sgm grade` into
/// `out` (cells limited to 120 s, `extra` options after); the grading must succeed. Returns
/// the submission's report.
fn grade(dir: &Path, out: &Path, name: &str, cells: Vec<Value>, extra: &[&str]) -> Report {
    let submissions = [(name, cells.clone())];
    grade_all(dir, out, name, cells, &submissions, extra).remove(0)
}

/// Grades `submissions` (name, cells) against the assignment `cells` (written as
/// `<assignment>_source.ipynb`) in one `sgm grade`; returns their reports in order.
fn grade_all(
    dir: &Path,
    out: &Path,
    assignment: &str,
    cells: Vec<Value>,
    submissions: &[(&str, Vec<Value>)],
    extra: &[&str],
) -> Vec<Report> {
    let assignment_path = source_path(dir, assignment);
    assignment::write_notebook(&assignment_path, &notebook(cells)).unwrap();
    let mut command = sgm_grade(&assignment_path, out);
    command.args(["--cell-timeout", "120"]).args(extra);
    for (name, cells) in submissions {
        let path = dir.join(format!("{name}.ipynb"));
        assignment::write_notebook(&path, &notebook(cells.clone())).unwrap();
        command.arg(path);
    }
    let output = command.output().expect("sgm runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sgm grade failed: {stderr}");
    submissions
        .iter()
        .map(|(name, _)| report(out, name))
        .collect()
}

/// A submission cannot read the assignment, the hidden checks or the grader's files, write
/// outside its own folder or past the in-memory folders' sizes, reach the network or see the
/// grader's processes; and its processes are the out-of-memory killer's first choice.
#[test]
fn a_submission_cannot_reach_what_the_sandbox_hides() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("sandbox");
    let source_path = source_path(&dir, "probe");
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
    let memory_folders = check(
        "the in-memory folders are bounded: /tmp 1 GiB, /dev/shm 64 MiB, /dev read-only",
        "fn fill(path: &str, chunks: usize) -> bool {\n\
         use std::io::Write;\n\
         let chunk = vec![3u8; 16 << 20];\n\
         let Ok(mut f) = std::fs::File::create(path) else { return false };\n\
         let all = (0..chunks).all(|_| f.write_all(&chunk).is_ok());\n\
         let _ = std::fs::remove_file(path);\n\
         all\n}\n\
         ensure(!fill(\"/tmp/fill\", 72), \"wrote 1.1 GiB into /tmp\")?;\n\
         ensure(!fill(\"/dev/shm/fill\", 8), \"wrote 128 MiB into /dev/shm\")?;\n\
         ensure(!fill(\"/dev/fill\", 1), \"wrote into /dev\")?;\n\
         ensure(fill(\"/tmp/fill\", 4), \"/tmp refuses 64 MiB\")?;",
    );
    // The submission cannot lower it again where the grader holds CAP_SYS_RESOURCE (root on a
    // machine of its own does; the container this is developed in withholds it, and there
    // only the bias itself is checked).
    let locked = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(caps.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0);
    println!("CAP_SYS_RESOURCE held: {locked}");
    let lowered = if locked {
        "ensure(std::fs::write(\"/proc/self/oom_score_adj\", \"0\").is_err(), \"lowered oom_score_adj to 0\")?;"
    } else {
        ""
    };
    let oom = check(
        "the out-of-memory killer takes the submission's processes first",
        &format!(
            "let adj = std::fs::read_to_string(\"/proc/self/oom_score_adj\").map_err(|e| e.to_string())?;\n\
             ensure(adj.trim() == \"1000\", format!(\"oom_score_adj {{}}\", adj.trim()))?;\n{lowered}"
        ),
    );
    // The kernel runs as root without capabilities, which still reads root's own files: those
    // only root may read are covered (an empty file, an empty folder).
    let private = check(
        "what only root may read is covered: /etc/shadow, /etc/ssl/private",
        "let shadow = std::fs::read_to_string(\"/etc/shadow\").unwrap_or_default();\n\
         ensure(shadow.is_empty(), format!(\"/etc/shadow holds {} bytes\", shadow.len()))?;\n\
         let keys = std::fs::read_dir(\"/etc/ssl/private\").map(|d| d.count()).unwrap_or(0);\n\
         ensure(keys == 0, format!(\"/etc/ssl/private lists {keys} files\"))?;",
    );
    // The kernel's own output reaches the grader's log through a pipe, which the sandbox can
    // open too (/proc/1/fd/2 is bubblewrap's stderr): what comes through it is bounded.
    let log = "use std::io::Write;\n\
               let mut log = std::fs::OpenOptions::new().append(true).open(\"/proc/1/fd/2\").unwrap();\n\
               let line = \"forged\\n\".repeat(1 << 20);\n\
               for _ in 0..2 { log.write_all(line.as_bytes()).unwrap(); }";
    let cells = vec![
        code("first", FIRST_CELL, None),
        code("log", log, None),
        code("private", &private, Some("sandbox.private")),
        code("oom", &oom, Some("sandbox.oom")),
        code("memory", &memory_folders, Some("sandbox.memory")),
        code("reads", &reads, Some("sandbox.reads")),
        code("writes", &writes, Some("sandbox.writes")),
        code("network", &network, Some("sandbox.network")),
        code("processes", &processes, Some("sandbox.processes")),
    ];
    let report = grade(&dir, &out, "probe", cells, &[]);
    drop(listener);

    let failed: Vec<String> = report
        .tasks
        .iter()
        .filter(|t| !t.passed)
        .map(|t| format!("{}: {}", t.id, t.message))
        .collect();
    assert!(failed.is_empty(), "the sandbox let through: {failed:#?}");
    assert_eq!((report.total, report.max), (7, 7));
    let runner_log = std::fs::metadata(out.join(".grading/probe/runner.log"))
        .unwrap()
        .len();
    assert!(runner_log < 2 << 20, "runner.log holds {runner_log} bytes");
    assert!(!toolkit_file.exists() && !data_file.exists());
    assert!(out.join("probe/work/own-file.txt").exists());
    println!("sandbox probe graded in {:.0} s", report.seconds);
}

/// A submission's output is the grader's memory and disk: an endless print loop once sent
/// 940 MB in a 30-second cell, which the grader held (6.6 GB) and wrote three times. Of one
/// cell the grader keeps 1 MiB of printed text and 16 MiB of rich output, and the scores stand:
/// a check after the floods still passes, and so does one that shows 17 MiB before its grade
/// record (records are kept whatever the rest); a check failing with a 17 MiB reason still fails
/// (with the failure record's bounded message), and so does one whose failure record is too
/// large to keep (forged here by printing it, as a submission could).
#[test]
fn a_submissions_floods_of_output_are_cut_and_its_scores_stand() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("flood");
    let out = dir.join("graded");
    let big = 17 << 20;
    let forged = format!(
        "println!(\"EVCXR_BEGIN_CONTENT application/vnd.sgm.cell-error+json\\n{{{{\\\"kind\\\": \\\"error\\\", \\\"message\\\": \\\"{{}}\\\"}}}}\\nEVCXR_END_CONTENT\", \"f\".repeat({big}));"
    );
    // 600 type errors (about 5 MB).
    let errors = type_errors(600);
    let mut cells = vec![
            code("first", FIRST_CELL, None),
            code("errors", &errors, None),
            code("loud", "let line = \"x\".repeat(100_000);\nfor _ in 0..30 { println!(\"{line}\"); }", None),
            code("big", &format!(
                "println!(\"EVCXR_BEGIN_CONTENT text/html\\n{{}}\\nEVCXR_END_CONTENT\", \"y\".repeat({big}));"
            ), None),
            code("after", &check("after the floods", "ensure(1 + 1 == 2, \"arithmetic\")?;"), Some("flood.after")),
            code("shows", &check("a check that shows too much first", &format!(
                "println!(\"EVCXR_BEGIN_CONTENT text/html\\n{{}}\\nEVCXR_END_CONTENT\", \"w\".repeat({big}));"
            )), Some("flood.shows")),
            code("huge", &check("a long reason", &format!("ensure(false, \"z\".repeat({big}))?;")), Some("flood.huge")),
            code("forged", &check("a forged failure record", &forged), Some("flood.forged")),
            // 40,000 made-up MIME types with nothing in them: 40 MB of names, which were not
            // counted (only the data was).
            code("names", "for i in 0..40_000 { println!(\"EVCXR_BEGIN_CONTENT x-{i:0>998}\\n\\nEVCXR_END_CONTENT\"); }", None),
    ];
    // 1 MiB printed by each of 15 more cells: the submission's 16 MiB are spent in the 14th.
    let total_cells: Vec<String> = (0..15).map(|i| format!("total-{i}")).collect();
    for id in &total_cells {
        cells.push(code(
            id,
            "let line = \"t\".repeat(110_000);\nfor _ in 0..10 { println!(\"{line}\"); }",
            None,
        ));
    }
    let report = grade(&dir, &out, "flood", cells, &[]);
    let head = |s: &str| s.chars().take(300).collect::<String>();
    let passed: Vec<(&str, bool)> = report
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.passed))
        .collect();
    assert_eq!(
        passed,
        [
            ("flood.after", true),
            ("flood.shows", true),
            ("flood.huge", false),
            ("flood.forged", false)
        ],
        "{:?}",
        report
            .tasks
            .iter()
            .map(|t| head(&t.message))
            .collect::<Vec<_>>()
    );
    let (huge, forged) = (&report.tasks[2].message, &report.tasks[3].message);
    assert!(
        huge.len() < 20_000 && huge.contains("zzz"),
        "{}",
        head(huge)
    );
    assert!(forged.contains("too large"), "{}", head(forged));

    let executed = out.join(".grading/flood/executed.ipynb");
    let bytes = std::fs::metadata(&executed).unwrap().len();
    // 5 MB of errors, 3 MB printed, 17 MiB shown, 17 MiB twice printed, 17 MiB forged, 40 MB
    // of MIME types' names and 15 times 1.1 MB printed: 1 MiB of errors, the submission's 16 MiB
    // of printed text and a cell's 16 MiB of names are kept.
    assert!(
        bytes < 36 << 20,
        "the executed notebook holds {bytes} bytes"
    );
    let nb = graded_json(&out, "flood", "executed.ipynb");
    let cell = |id: &str| cell_of(&nb, id);
    let printed = |id: &str| printed_by(&cell(id));
    let text = printed("loud");
    assert!(
        text.contains("past the grader's limit"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        text.len() > 1 << 20 && text.len() < (1 << 20) + 300,
        "{} characters kept",
        text.len()
    );
    let shown = cell("big")["outputs"].to_string();
    assert!(
        shown.len() < 4096 && shown.contains("was dropped"),
        "{}",
        head(&shown)
    );
    let names = cell("names")["outputs"].to_string();
    assert!(
        names.len() < (16 << 20) + (4 << 20) && names.contains("was dropped"),
        "{} characters of outputs kept",
        names.len()
    );

    // The errors: the cell fails with its first error, 1 MiB of them is kept, and a line says so.
    let kept = errors_kept(&cell("errors"));
    assert!(
        kept > 512 << 10 && kept < (1 << 20) + (64 << 10),
        "{kept} characters of errors kept"
    );
    assert!(printed("errors").contains("further errors past the grader's limit"));
    let outcome = outcomes_of(&out, "flood", 1);
    assert!(
        outcome["status"] == "failed"
            && outcome["message"]
                .as_str()
                .unwrap()
                .contains("mismatched types"),
        "{outcome}"
    );

    // The submission's printed total: 16 MiB over every cell, the last cells' cut to the note.
    let all: usize = nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .map(|id| printed(id).len())
        .sum();
    assert!(
        all > 15 << 20 && all < (16 << 20) + (16 << 10),
        "{all} characters printed in all"
    );
    let last = printed(total_cells.last().unwrap());
    assert!(
        last.len() < 300 && last.contains("past the grader's limit"),
        "{}",
        head(&last)
    );
}

/// The cell `id` of an executed notebook.
fn cell_of(nb: &Value, id: &str) -> Value {
    let cells = nb["cells"].as_array().unwrap();
    cells.iter().find(|c| c["id"] == id).unwrap().clone()
}

/// The text a cell printed (its stream outputs).
fn printed_by(cell: &Value) -> String {
    let outputs = cell["outputs"].as_array().unwrap().iter();
    outputs
        .filter(|o| o["output_type"] == "stream")
        .map(|o| match &o["text"] {
            Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect::<String>(),
            t => t.as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Characters of errors a cell kept (values and tracebacks).
fn errors_kept(cell: &Value) -> usize {
    let outputs = cell["outputs"].as_array().unwrap().iter();
    outputs
        .filter(|o| o["output_type"] == "error")
        .map(|o| {
            let traceback = o["traceback"].as_array().unwrap().iter();
            let lines = traceback.map(|l| l.as_str().unwrap().chars().count());
            o["evalue"].as_str().unwrap().chars().count() + lines.sum::<usize>()
        })
        .sum()
}

/// `n` type errors in one cell: evcxr sends one error output each, quoting the cell's lines
/// (600 of them make about 5 MB, 150 about 0.97 MB).
fn type_errors(n: usize) -> String {
    (0..n)
        .map(|i| format!("let _e{i}: u8 = \"{}\";\n", "e".repeat(100)))
        .collect()
}

/// Past the submission's 16 MiB of errors, a failing cell still fails with its first error,
/// cut to 1 KiB, and a line says that the rest was dropped; a check after them still passes.
/// Twenty cells of about 1.1 MB of type errors each: the first sixteen keep up to 1 MiB each.
#[test]
fn a_submissions_errors_are_bounded_in_total_and_later_cells_still_fail() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("errors");
    let out = dir.join("graded");
    let ids: Vec<String> = (0..20).map(|i| format!("errors-{i}")).collect();
    let mut cells = vec![code("first", FIRST_CELL, None)];
    cells.extend(ids.iter().map(|id| code(id, &type_errors(170), None)));
    cells.push(code(
        "after",
        &check("after the errors", "ensure(1 + 1 == 2, \"arithmetic\")?;"),
        Some("errors.after"),
    ));
    let report = grade(&dir, &out, "errors", cells, &[]);
    let passed: Vec<_> = report
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.passed))
        .collect();
    assert_eq!(passed, [("errors.after", true)], "{:?}", report.tasks);

    let nb = graded_json(&out, "errors", "executed.ipynb");
    let kept: Vec<usize> = ids
        .iter()
        .map(|id| errors_kept(&cell_of(&nb, id)))
        .collect();
    // Up to 1 MiB a cell (an error of about 6.4 kB more or less) while the total has room; a
    // cell's first error is kept whole (up to 64 KiB) while the total is not spent, so the
    // one that spends it may pass it; after that each cell keeps its first error cut to 1 KiB
    // and the cut's note.
    let total: usize = kept.iter().sum();
    assert!(
        kept[..16].iter().all(|&k| k > 1_000_000 && k <= 1 << 20),
        "{kept:?}"
    );
    assert!(
        total > 16_000_000 && total < (16 << 20) + (64 << 10) + ids.len() * 1_100,
        "{total} characters of errors kept: {kept:?}"
    );
    let before: Vec<usize> = kept
        .iter()
        .scan(0, |sum, k| {
            let b = *sum;
            *sum += k;
            Some(b)
        })
        .collect();
    let spent = before.iter().position(|&b| b >= 16 << 20);
    assert!(spent.is_some_and(|i| i < ids.len() - 1), "{kept:?}");
    for (i, id) in ids.iter().enumerate().skip(spent.unwrap()) {
        let cell = cell_of(&nb, id);
        assert!(kept[i] < 1_100, "{id}: {kept:?}");
        assert!(
            printed_by(&cell).contains("further errors past the grader's limit"),
            "{id}: {}",
            printed_by(&cell)
        );
        let outcome = outcomes_of(&out, "errors", i + 1);
        let message = outcome["message"].as_str().unwrap();
        assert!(
            outcome["status"] == "failed" && message.contains("mismatched types"),
            "{outcome}"
        );
    }
}

/// The grader's JSON file `file` (`executed.ipynb`, `outcomes.json`) of submission `name`.
fn graded_json(out: &Path, name: &str, file: &str) -> Value {
    let path = out.join(format!(".grading/{name}/{file}"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The outcome the grader recorded for cell `index` of submission `name`.
fn outcomes_of(out: &Path, name: &str, index: usize) -> Value {
    graded_json(out, name, "outcomes.json")
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["cell"] == index)
        .unwrap()
        .clone()
}

/// A submission's folder and its copy of the build folder are on the machine's disk: writing
/// past the disk limit (here 256 MiB, in many files, in one, or in files removed but held open,
/// which no folder shows) stops its kernel and removes what it wrote, and its later,
/// independent tasks are still graded.
#[test]
fn a_submission_that_fills_the_disk_is_stopped_and_cleaned_up() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("disk");
    let out = dir.join("graded");
    let many = "let chunk = vec![7u8; 32 << 20];\n\
                for i in 0..64 {\n\
                std::fs::write(format!(\"fill-{i}.bin\"), &chunk).unwrap();\n\
                std::thread::sleep(std::time::Duration::from_millis(100));\n}";
    let one = "use std::io::Write;\n\
               let mut f = std::fs::File::create(\"one.bin\").unwrap();\n\
               let chunk = vec![1u8; 8 << 20];\n\
               for _ in 0..64 { f.write_all(&chunk).unwrap(); }";
    // Removed files still held open keep their blocks, which no folder shows any more.
    let hidden = "use std::io::Write;\n\
                  let chunk = vec![5u8; 8 << 20];\n\
                  let held: Vec<std::fs::File> = (0..4).map(|i| {\n\
                  let name = format!(\"hidden-{i}.bin\");\n\
                  let mut f = std::fs::File::create(&name).unwrap();\n\
                  for _ in 0..12 { f.write_all(&chunk).unwrap(); }\n\
                  f.sync_all().unwrap();\n\
                  std::fs::remove_file(&name).unwrap();\n\
                  f\n}).collect();\n\
                  std::thread::sleep(std::time::Duration::from_secs(10));\n\
                  drop(held);";
    let clean = check(
        "what the stopped cells wrote is gone",
        "let left: Vec<String> = std::fs::read_dir(\".\").map_err(|e| e.to_string())?\n\
         .filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned())\n\
         .filter(|n| n.ends_with(\".bin\")).collect();\n\
         ensure(left.is_empty(), format!(\"left: {left:?}\"))?;",
    );
    let cells = vec![
        code("first", FIRST_CELL, None),
        code("many", many, None),
        code("one", one, None),
        code("hidden", hidden, None),
        code("after", &clean, Some("disk.after")),
    ];
    let report = grade(&dir, &out, "disk", cells, &["--disk", "256M"]);

    for cell in [1, 2, 3] {
        let o = outcomes_of(&out, "disk", cell);
        let message = o["message"].as_str().unwrap_or_default();
        assert!(
            o["status"] == "failed" && message.contains("past the disk limit of 256 MiB"),
            "cell {cell}: {o}"
        );
        println!("cell {cell}: {message}");
    }
    assert_eq!(report.total, 1, "{:#?}", report.tasks);
    let left = std::fs::read_dir(out.join("disk/work")).unwrap().count();
    assert_eq!(left, 0, "files left in the submission's folder");
}

/// The data-segment limit bounds one process: a submission's processes are bounded together by
/// its cgroup (here 256 processes and threads, 2 GiB). Starting processes stops at the limit;
/// four children of 700 MB each (each under the per-process limit) cannot all hold their
/// memory (the out-of-memory killer stops one of them or the kernel, whichever is larger, and
/// the grade says so); a fork bomb left running after its cell fails that cell and is killed
/// with its kernel, and one that fills the limit only during a later cell is traced back to
/// its own cell when the kernel's replay starts it again, so that a later, independent task
/// is still graded and nothing of either survives.
#[test]
fn a_submissions_processes_are_bounded_together() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("processes");
    let out = dir.join("graded");
    let spawn = check(
        "starting processes stops at the limit",
        "let mut children = Vec::new();\n\
         let refused = loop {\n\
         if children.len() == 2000 { break None; }\n\
         match std::process::Command::new(\"sleep\").arg(\"60\").spawn() {\n\
         Ok(child) => children.push(child),\n\
         Err(e) => break Some(e),\n}\n};\n\
         let started = children.len();\n\
         for child in &mut children { let _ = child.kill(); let _ = child.wait(); }\n\
         ensure(refused.is_some() && started < 256, format!(\"started {started} processes\"))?;",
    );
    let memory = check(
        "children that each stay under the memory limit cannot all hold it",
        "let child = || std::process::Command::new(\"python3\")\n\
         .args([\"-c\", \"import time; x = b'1' * (700 << 20); time.sleep(5)\"]).spawn().unwrap();\n\
         let children: Vec<_> = (0..4).map(|_| child()).collect();\n\
         let held = children.into_iter().map(|mut c| c.wait().unwrap()).filter(|s| s.success()).count();\n\
         ensure(held <= 2, format!(\"{held} children held 700 MB each\"))?;",
    );
    // A shell's fork bomb dies out at the limit (the shells exit when they cannot fork); this
    // one keeps trying from a thread that outlives its cell.
    let bomb = "std::thread::spawn(|| loop {\n\
                let _ = std::process::Command::new(\"sh\").args([\"-c\", \"sleep 600\", \"sgm-fork-bomb\"]).spawn();\n\
                });\n\
                std::thread::sleep(std::time::Duration::from_secs(5));";
    // The same loop, started half a second after its cell returned: the limit fills during
    // the next cell, which is stopped; the replay finds the cell that started it.
    let delayed = "std::thread::spawn(|| {\n\
                   std::thread::sleep(std::time::Duration::from_millis(500));\n\
                   loop { let _ = std::process::Command::new(\"sh\").args([\"-c\", \"sleep 600\", \"sgm-fork-bomb\"]).spawn(); }\n\
                   });";
    let wait = "std::thread::sleep(std::time::Duration::from_secs(4));";
    let after = check("after the bombs", "ensure(2 + 2 == 4, \"arithmetic\")?;");
    let cells = vec![
        code("first", FIRST_CELL, None),
        code("spawn", &spawn, Some("processes.spawn")),
        code("memory", &memory, Some("processes.memory")),
        code("bomb", bomb, None),
        code("delayed", delayed, None),
        code("wait", wait, None),
        code("after", &after, Some("processes.after")),
    ];
    let report = grade(
        &dir,
        &out,
        "procs",
        cells,
        &["--processes", "256", "--memory", "2G"],
    );
    let bomb = outcomes_of(&out, "procs", 3);
    let delayed = outcomes_of(&out, "procs", 4);
    assert!(
        delayed["status"] == "failed"
            && delayed["message"]
                .as_str()
                .unwrap()
                .contains("kept starting new ones, up to the limit of 256; found when cell 6"),
        "{delayed}"
    );
    let wait = outcomes_of(&out, "procs", 5);
    assert_eq!(wait["status"], "ok", "{wait}");
    assert!(
        bomb["status"] == "failed"
            && bomb["message"]
                .as_str()
                .unwrap()
                .contains("at the limit of 256"),
        "{bomb}"
    );
    let failed: Vec<String> = report
        .tasks
        .iter()
        .filter(|t| !t.passed)
        .filter(|t| {
            !(t.id == "processes.memory"
                && t.message.contains("kernel died")
                && t.message
                    .contains("used more than the memory limit of 2,048 MiB"))
        })
        .map(|t| format!("{}: {}", t.id, t.message))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(report.max, 3);
    println!("{:#?}", report.tasks);
    let survivors = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains("sgm-fork-bomb"))
        .count();
    assert_eq!(
        survivors, 0,
        "processes of the fork bomb outlived its grading"
    );
    let log = std::fs::read_to_string(out.join(".grading/procs/runner.log")).unwrap();
    println!(
        "{}",
        log.lines()
            .filter(|l| l.contains("peaks"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Submissions graded side by side share the cores, and the scheduler is fair between threads:
/// each submission's cgroup has the same CPU weight, so one that spins 32 threads takes no more
/// than its share from the other. Graded with `--jobs 2`, submission `spin` (its answer chooses,
/// the given cell after it runs the work) runs 32 busy
/// threads for 40 s while submission `share` measures, after 12 s, what one busy thread of its
/// own gets of a core for 6 s, and how many threads the machine had runnable meanwhile. The
/// check asks for 0.4 of a core (two cores, and the grader's own processes beside). On this
/// machine the scheduler's autogroups (one per session: bubblewrap starts each sandbox in a
/// session of its own) give the same fairness: with `kernel.sched_autogroup_enabled=0` it got
/// 0.05 without the groups' weights and 0.76 with them; with autogroups 0.84 and 0.81.
#[test]
fn a_submission_that_spins_many_threads_leaves_the_others_their_share() {
    let _alone = CORES.write().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("cpu-share");
    let out = dir.join("graded");
    // The answer only chooses (answers may not reach threads or files); the given cell that
    // follows runs the submission's work either way, in its kernel and cgroup.
    let answer =
        |spin: bool| format!("// BEGIN SOLUTION\nlet spin: bool = {spin};\n// END SOLUTION");
    let work = "let (share, most) = if spin {\n\
                let threads: Vec<_> = (0..32).map(|_| std::thread::spawn(|| {\n\
                let start = std::time::Instant::now();\n\
                let mut x = 1u64;\n\
                while start.elapsed().as_secs() < 40 { x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1)); }\n\
                })).collect();\n\
                for t in threads { t.join().unwrap(); }\n\
                (1.0, 32)\n\
                } else {\n\
                fn on_cpu() -> f64 {\n\
                let text = std::fs::read_to_string(\"/proc/thread-self/schedstat\").unwrap();\n\
                text.split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e9\n}\n\
                fn runnable() -> usize {\n\
                let text = std::fs::read_to_string(\"/proc/loadavg\").unwrap();\n\
                text.split_whitespace().nth(3).unwrap().split('/').next().unwrap().parse().unwrap()\n}\n\
                std::thread::sleep(std::time::Duration::from_secs(12));\n\
                let (cpu0, start) = (on_cpu(), std::time::Instant::now());\n\
                let (mut most, mut x) = (0, 0u64);\n\
                while start.elapsed().as_secs_f64() < 6.0 {\n\
                for i in 0..2_000_000u64 { x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i)); }\n\
                most = most.max(runnable());\n}\n\
                let share = (on_cpu() - cpu0) / start.elapsed().as_secs_f64();\n\
                println!(\"share of a core {share:.2}, at most {most} threads runnable\");\n\
                (share, most)\n\
                };";
    let verdict = check(
        "one busy thread keeps its share of a core beside 32 of another submission's",
        "ensure(most >= 20, format!(\"no contention seen: at most {most} threads runnable\"))?;\n\
         ensure(share > 0.4, format!(\"share of a core {share:.2} with {most} threads runnable\"))?;",
    );
    let with = |spin: bool| {
        vec![
            code("first", FIRST_CELL, None),
            code("choice", &answer(spin), None),
            code("work", work, None),
            code("verdict", &verdict, Some("cpu.share")),
        ]
    };
    let reports = grade_all(
        &dir,
        &out,
        "cpu",
        with(false),
        &[("spin", with(true)), ("share", with(false))],
        &["--jobs", "2"],
    );
    let share = &reports[1];
    assert!(share.tasks[0].passed, "{:#?}", share.tasks);
    let executed = std::fs::read_to_string(out.join(".grading/share/executed.ipynb")).unwrap();
    let line = executed
        .find("share of a core")
        .map(|i| &executed[i..i + 60]);
    println!("{line:?}; spin: {:?}", reports[0].tasks[0].message);
}

/// `--no-sandbox` (trusted notebooks) mounts nothing: each kernel works in a run folder of its
/// own at the notebooks' depth below the repository (so the first cell's `:dep` resolves),
/// watched for the disk limit like a submission's folder in the sandbox, and what it wrote ends
/// in the submission's folder. Two submissions graded side by side each find only their own
/// files in their working folder (the notebooks' place, which kernels without the sandbox
/// worked in before, holds the released notebook), a cell that writes past `--disk` is stopped
/// and its files removed, and nothing is left in the notebooks' place or in the run folders (no
/// other test grades without the sandbox). The run folder of a grader that is gone is removed,
/// one whose lock is still held is not.
#[test]
fn without_the_sandbox_each_kernel_works_in_a_folder_of_its_own() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("no-sandbox");
    let out = dir.join("graded");
    // The answer names the kernel; the given cell after it writes the file (answers may not
    // reach files).
    let answer = |name: &str| {
        format!("// BEGIN SOLUTION\nlet mine: &'static str = {name:?};\n// END SOLUTION")
    };
    let own = check(
        "the working folder holds this kernel's files only",
        "let read = std::fs::read_to_string(\"mine.txt\").map_err(|e| e.to_string())?;\n\
         ensure(read == mine, format!(\"mine.txt holds {read:?}, not {mine:?}\"))?;\n\
         let mut names: Vec<String> = std::fs::read_dir(\".\").map_err(|e| e.to_string())?\n\
         .filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();\n\
         names.retain(|n| n != \"mine.txt\" && n != \"output\" && n != \".cache\");\n\
         ensure(names.is_empty(), format!(\"also in the working folder: {names:?}\"))?;",
    );
    let fill = "let chunk = vec![7u8; 8 << 20];\n\
                for i in 0..64 {\n\
                std::fs::write(format!(\"fill-{i}.bin\"), &chunk).unwrap();\n\
                std::thread::sleep(std::time::Duration::from_millis(50));\n}";
    let clean = check(
        "what the stopped cell wrote is gone, what the replay wrote is back",
        "let bins = std::fs::read_dir(\".\").map_err(|e| e.to_string())?\n\
         .filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(\".bin\")).count();\n\
         ensure(bins == 0, format!(\"{bins} files of the stopped cell left\"))?;\n\
         ensure(std::path::Path::new(\"mine.txt\").exists(), \"mine.txt was not written again\")?;",
    );
    let with = |name: &str| {
        vec![
            code("first", FIRST_CELL, None),
            code("name", &answer(name), None),
            code(
                "write",
                "std::fs::write(\"mine.txt\", mine).unwrap();",
                None,
            ),
            code("own", &own, Some("trusted.own")),
            code("fill", fill, None),
            code("after", &clean, Some("trusted.after")),
        ]
    };
    // Run folders of graders that are gone (PID 4,000,000 is past any pid_max): one whose lock
    // nobody holds is removed; one whose lock is held (by a grader on another machine that
    // shares the repository) stays.
    let runs = root().join(".tools/grade-runs");
    let (gone, elsewhere) = (runs.join("4000000-1"), runs.join("4000000-2"));
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::write(gone.join("left.txt"), "x").unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let held = std::fs::File::create(runs.join("4000000-2.lock")).unwrap();
    held.lock().unwrap();
    let reports = grade_all(
        &dir,
        &out,
        "trusted",
        with("source"),
        &[("a", with("a")), ("b", with("b"))],
        &["--no-sandbox", "--jobs", "2", "--disk", "64M"],
    );
    for (name, report) in ["a", "b"].iter().zip(&reports) {
        assert_eq!(report.total, 2, "{name}: {:#?}", report.tasks);
        let o = outcomes_of(&out, name, 4);
        let message = o["message"].as_str().unwrap_or_default();
        assert!(
            o["status"] == "failed" && message.contains("past the disk limit of 64 MiB"),
            "{name}, the filling cell: {o}"
        );
        let kept = std::fs::read_to_string(out.join(name).join("work/mine.txt")).unwrap();
        assert_eq!(&kept, name, "what {name}'s kernel wrote, in its folder");
    }
    let place = root().join("notebooks/homework/release");
    for stray in ["mine.txt", "fill-0.bin"] {
        assert!(
            !place.join(stray).exists(),
            "{stray} in the notebooks' place"
        );
    }
    assert!(
        !gone.exists(),
        "the run folder of a grader that is gone was left"
    );
    assert!(
        elsewhere.exists(),
        "a run folder whose lock is held was removed"
    );
    drop(held);
    std::fs::remove_dir(&elsewhere).unwrap();
    std::fs::remove_file(runs.join("4000000-2.lock")).unwrap();
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run folders left: {left:?}");
}

/// An instructor who saves `manual.csv` half-way while a submission runs loses nothing: the
/// report is written with its task graded by hand pending (stderr says why), `grades.csv` is
/// rebuilt with it, `manual.csv` is left as the instructor has it, and the command fails with
/// one line saying so; once the file reads, `--rescore` applies its points.
#[test]
fn a_manual_csv_saved_half_way_during_grading_loses_nothing() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("manual-mid-run");
    let out = dir.join("graded");
    let proof = json!({"cell_type": "markdown", "id": "proof", "source":
        "<!-- BEGIN SOLUTION -->\nBy parts; the boundary term vanishes.\n<!-- END SOLUTION -->",
        "metadata": {"sgm": {"grade": "proof", "points": 2, "manual": true}}});
    // The cell the test waits for: it says it started, then runs long enough for the edit.
    let slow = "std::fs::write(\"started\", b\"\").unwrap();\n\
                std::thread::sleep(std::time::Duration::from_secs(20));";
    let cells = vec![
        code("first", FIRST_CELL, None),
        proof,
        code("slow", slow, None),
        code("ran", &check("ran", "ensure(true, \"\")?;"), Some("ran")),
    ];
    let source = source_path(&dir, "manual-mid-run");
    assignment::write_notebook(&source, &notebook(cells.clone())).unwrap();
    let submission = dir.join("half.ipynb");
    assignment::write_notebook(&submission, &notebook(cells)).unwrap();
    let grading = sgm_grade(&source, &out)
        .args(["--cell-timeout", "120"])
        .arg(&submission)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sgm runs");
    let started = out.join("half/work/started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow cell never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let manual = out.join("manual.csv");
    let header = "submission,task,points,comment,answer\n";
    let half = format!("{header}half,pro");
    std::fs::write(&manual, &half).unwrap();
    let output = grading.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("sgm grade: half: ")
            && stderr.contains(
                "its tasks graded by hand are left pending (run --rescore once the file reads)"
            ),
        "{stderr}"
    );
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("sgm: error: ")
            && last.contains("manual.csv is left as it is, without the new rows; grades.csv and the answer pages are rebuilt"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&manual).unwrap(), half);
    let report = |out: &Path| report(out, "half");
    let task = |r: &Report, id: &str| r.tasks.iter().find(|t| t.id == id).unwrap().clone();
    let graded = report(&out);
    assert!(task(&graded, "proof").pending, "{:#?}", graded.tasks);
    assert_eq!(task(&graded, "ran").points, 1, "{:#?}", graded.tasks);
    let grades = std::fs::read_to_string(out.join("grades.csv")).unwrap();
    assert!(grades.contains("\nhalf,,1,1,3\n"), "{grades}");

    // Saved in full: the rescore applies it.
    std::fs::write(&manual, format!("{header}half,proof,1,Clear.,\n")).unwrap();
    let output = sgm_grade(&source, &out).arg("--rescore").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rescored = report(&out);
    assert_eq!(
        (task(&rescored, "proof").points, rescored.total),
        (1, 2),
        "{:#?}",
        rescored.tasks
    );
}

/// What a forger's code does with the grader's secret: it reads the check cell's source, where
/// evcxr wrote it to compile it (`$EVCXR_TMPDIR/src/lib.rs`), takes the token of its report
/// line, prints that report itself and then the line evcxr's runtime prints when a cell is
/// done, so the kernel ends the check cell as passed before the check has even failed.
const FORGE: &str = r##"fn forge_report(check: &str) {
    let (bs, q) = ('\\', '"');
    let dir = std::env::var("EVCXR_TMPDIR").unwrap_or_default();
    let src = std::fs::read_to_string(format!("{dir}/src/lib.rs")).unwrap_or_default();
    let needle = format!("token{bs}{q}: {bs}{q}");
    for (at, _) in src.match_indices(&needle) {
        let token: String = src[at + needle.len()..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if token.len() == 32 {
            println!("EVCXR_BEGIN_CONTENT application/vnd.sgm.grade+json\n{{\"cell\": \"{check}\", \"token\": \"{token}\"}}\nEVCXR_END_CONTENT");
            println!("EVCXR_EXECUTION_COMPLETE");
        }
    }
}"##;

/// A wrong answer that makes the check's comparison hold: `double` returns a type of its own,
/// whose `==` with any `i64` is true (Rust lets a cell implement `PartialEq<i64>` for its own
/// type). Before answers kept their stub's declarations, it earned the check's point.
const FAKE: &str = "struct Four;\n\
                    impl PartialEq<i64> for Four {\n    fn eq(&self, _: &i64) -> bool {\n        true\n    }\n}\n\
                    fn double(x: i64) -> Four {\n    Four\n}";

/// A submission cannot forge a check's report. The assignment's answer is `double`; its checks
/// are `double(2) == 4` and one that always passes, after it. Graded side by side: the source
/// itself; a forger whose answer holds [`FORGE`] (which, before answers were kept from files,
/// earned the first check's point for a wrong answer and failed the second); and one whose
/// answer starts a shell command (evcxr runs a line that starts with `!` in the kernel's own
/// process, which could do the same from outside the answer's code); and one whose `double`
/// returns [`FAKE`]'s type. All are refused before they run: their stubs run, and the notes say
/// why.
#[test]
fn a_submission_cannot_forge_a_checks_report() {
    let _side_by_side = CORES.read().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir("forge");
    let out = dir.join("graded");
    let answer = |body: &str| {
        format!("fn double(x: i64) -> i64 {{\n    // BEGIN SOLUTION\n    {body}\n    // END SOLUTION\n}}")
    };
    let assignment = |double: String| {
        vec![
            code("first", FIRST_CELL, None),
            code("answer", &double, None),
            code(
                "check",
                &check("double", "ensure(double(2) == 4, \"double(2) is not 4\")?;"),
                Some("double"),
            ),
            code(
                "later",
                &check("later", "ensure(true, \"\")?;"),
                Some("later"),
            ),
        ]
    };
    let source = assignment(answer("2 * x"));
    let own = assignment(format!(
        "{FORGE}\nfn double(x: i64) -> i64 {{\n    forge_report(\"check\");\n    x\n}}"
    ));
    let shell = assignment("!touch shell-ran\nfn double(x: i64) -> i64 {\n    2 * x\n}".into());
    let fake = assignment(FAKE.into());
    let reports = grade_all(
        &dir,
        &out,
        "forge",
        source.clone(),
        &[
            ("honest", source),
            ("own", own),
            ("shell", shell),
            ("fake", fake),
        ],
        &[],
    );
    let task = |r: &Report, id: &str| {
        let t = r.tasks.iter().find(|t| t.id == id).unwrap();
        (t.points, t.message.clone())
    };
    assert_eq!(
        (reports[0].total, reports[0].max),
        (2, 2),
        "{:?}",
        reports[0]
    );
    for (r, why) in [
        (&reports[1], "`fs::` (files)"),
        (
            &reports[2],
            "evcxr commands (lines starting with ':' or '!'",
        ),
        (
            &reports[3],
            "declares `fn double(i64) -> Four` where the stub has `fn double(i64) -> i64`",
        ),
    ] {
        // The stub's todo! fails the check; the later check is untouched.
        let (points, message) = task(r, "double");
        assert_eq!(points, 0, "{r:?}");
        assert!(message.contains("your code here"), "{message}");
        assert_eq!(task(r, "later"), (1, "passed".to_string()), "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains(why)), "{:?}", r.notes);
    }
    assert!(!out.join("shell/work/shell-ran").exists());
    println!("forgers graded in {:.0} s", reports[1].seconds);
}
