//! The homework markup (`sgm::assignment`) without a kernel: what the release keeps and drops,
//! the errors a malformed source gets, how a grading notebook is put together from a
//! submission, how a run is scored, and that the committed release is current and leaks
//! nothing. The end-to-end grading of fixture submissions is in `tests/homework.rs`.

use serde_json::{json, Value};
use sgm::assignment::{
    self, source_of, Assignment, CellOutcome, Role, ANSWER_PLACEHOLDER, FIRST_CELL, GRADE_MIME,
};
use std::path::{Path, PathBuf};

fn code(id: &str, source: &str, meta: Value) -> Value {
    json!({"cell_type": "code", "id": id, "metadata": meta, "source": source,
           "outputs": [{"output_type": "stream", "name": "stdout", "text": "old output"}],
           "execution_count": 3})
}

fn markdown(id: &str, source: &str) -> Value {
    json!({"cell_type": "markdown", "id": id, "metadata": {}, "source": source})
}

fn notebook(cells: Vec<Value>) -> Value {
    json!({"cells": cells, "metadata": {"kernelspec": {"name": "sgm"}}, "nbformat": 4, "nbformat_minor": 5})
}

/// A small source: first cell, a code answer with a default and a custom stub, a markdown
/// answer, a visible and a hidden check.
fn source() -> Value {
    notebook(vec![
        code("setup", FIRST_CELL, json!({})),
        code(
            "answer",
            "fn double(x: f64) -> f64 {\n    // BEGIN SOLUTION\n    x.mul_add(2.0, 0.0)\n    // END SOLUTION\n}\n// BEGIN SOLUTION: let SIGMA: f64 = todo!(\"0 < SIGMA < 1\");\nlet SIGMA: f64 = 0.25;\n// END SOLUTION",
            json!({}),
        ),
        markdown("theory", "Derive it.\n<!-- BEGIN SOLUTION -->\nBy parts: the boundary term vanishes.\n<!-- END SOLUTION -->"),
        code("visible", "check(\"double\", || ensure(double(2.0) == 4.0, \"2 * 2\"))?;", json!({"sgm": {"grade": "t1", "points": 1}})),
        code("hidden", "check(\"double_negative\", || ensure(double(-3.5) == -7.0, \"negative\"))?;", json!({"sgm": {"grade": "t1", "points": 2, "hidden": true}})),
        code("sigma", "check(\"sigma\", || ensure(SIGMA > 0.0, \"positive\"))?;", json!({"sgm": {"grade": "t2", "points": 1}})),
    ])
}

fn assignment() -> Assignment {
    Assignment::from_notebook(Path::new("source.ipynb"), source()).unwrap()
}

/// The ids of `nb`'s cells, in order.
fn cell_ids(nb: &Value) -> Vec<&str> {
    let cells = nb["cells"].as_array().unwrap();
    cells.iter().map(|c| c["id"].as_str().unwrap()).collect()
}

fn cell<'a>(nb: &'a Value, id: &str) -> &'a Value {
    nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no cell {id}"))
}

fn cell_mut<'a>(nb: &'a mut Value, id: &str) -> &'a mut Value {
    nb["cells"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no cell {id}"))
}

#[test]
fn release_replaces_solutions_drops_hidden_checks_and_outputs() {
    let a = assignment();
    let released = a.release();
    assert_eq!(
        cell_ids(&released),
        ["setup", "answer", "theory", "visible", "sigma"]
    );
    let answer = source_of(cell(&released, "answer"));
    assert_eq!(
        answer,
        "fn double(x: f64) -> f64 {\n    todo!(\"your code here\")\n}\nlet SIGMA: f64 = todo!(\"0 < SIGMA < 1\");"
    );
    let theory = source_of(cell(&released, "theory"));
    assert_eq!(theory, format!("Derive it.\n{ANSWER_PLACEHOLDER}"));
    for c in released["cells"].as_array().unwrap() {
        if c["cell_type"] == "code" {
            assert_eq!(c["outputs"], json!([]), "outputs of {} kept", c["id"]);
            assert_eq!(c["execution_count"], Value::Null);
        }
    }
    // Locked cells are copied as they are.
    assert_eq!(
        source_of(cell(&released, "visible")),
        source_of(cell(&source(), "visible"))
    );
    assert_eq!(
        a.tasks(),
        vec![
            assignment::TaskMax {
                id: "t1".into(),
                max: 3,
                manual: false
            },
            assignment::TaskMax {
                id: "t2".into(),
                max: 1,
                manual: false
            }
        ]
    );
    assert_eq!(
        a.cells[4].role,
        Role::Graded {
            task: "t1".into(),
            points: 2,
            hidden: true
        }
    );
}

#[test]
fn malformed_sources_are_errors_naming_the_cell() {
    let cases: Vec<(Value, &str)> = vec![
        (
            code("a", "// BEGIN SOLUTION\nlet x = 1;", json!({})),
            "line 1: // BEGIN SOLUTION is never closed",
        ),
        (
            code("a", "let x = 1;\n// END SOLUTION", json!({})),
            "line 2: // END SOLUTION without a BEGIN",
        ),
        (
            code(
                "a",
                "// BEGIN SOLUTION\n// BEGIN SOLUTION\n// END SOLUTION",
                json!({}),
            ),
            "inside the region opened on line 1",
        ),
        (
            code("a", "let x = 1; // BEGIN SOLUTION", json!({})),
            "must be alone on its line",
        ),
        (
            code("a", ":dep rand = \"0.8\"", json!({})),
            "only the first cell may hold evcxr commands",
        ),
        (
            code(
                "a",
                "check()?;",
                json!({"sgm": {"grade": "t", "points": 0}}),
            ),
            "sgm.points must be a whole number > 0",
        ),
        (
            code("a", "check()?;", json!({"sgm": {"grade": 3, "points": 1}})),
            "sgm.grade must be a task id string",
        ),
        (
            code(
                "a",
                "// BEGIN SOLUTION\n1\n// END SOLUTION",
                json!({"sgm": {"grade": "t", "points": 1}}),
            ),
            "a graded cell cannot hold a solution region",
        ),
        (
            code(
                "a",
                "check()?;",
                json!({"sgm": {"grade": "t", "points": 1, "manual": true}}),
            ),
            "an answer graded by hand (sgm.manual) needs a solution region",
        ),
        (
            manual("a", "t", 1, true),
            "an answer graded by hand (sgm.manual) cannot be hidden",
        ),
    ];
    for (bad, why) in cases {
        let nb = notebook(vec![code("setup", FIRST_CELL, json!({})), bad]);
        let err = Assignment::from_notebook(Path::new("s.ipynb"), nb)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cell 2 (id a)") && err.contains(why),
            "{err:?} should name cell 2 and say {why:?}"
        );
    }
    let no_first = notebook(vec![code("x", "let x = 1;", json!({}))]);
    let err = Assignment::from_notebook(Path::new("s.ipynb"), no_first)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the first code cell must be exactly"), "{err}");
    let duplicate = notebook(vec![
        code("setup", FIRST_CELL, json!({})),
        markdown("setup", "x"),
    ]);
    let err = Assignment::from_notebook(Path::new("s.ipynb"), duplicate)
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate cell id"), "{err}");
    for id in ["a".repeat(52), "a b".into(), "é".into()] {
        let nb = notebook(vec![
            code("setup", FIRST_CELL, json!({})),
            markdown(&id, "x"),
        ]);
        let err = Assignment::from_notebook(Path::new("s.ipynb"), nb)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a cell id must be 1 to 51 letters, digits, - or _"),
            "{id}: {err}"
        );
    }
    let mixed = notebook(vec![
        code("setup", FIRST_CELL, json!({})),
        code(
            "check",
            "check()?;",
            json!({"sgm": {"grade": "t", "points": 1}}),
        ),
        manual("proof", "t", 2, false),
    ]);
    let err = Assignment::from_notebook(Path::new("s.ipynb"), mixed)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cell 3 (id proof)")
            && err.contains("task t has both checks and answers graded by hand"),
        "{err}"
    );
    // What an answer cell declares for the check after it (`assignment/declared.rs`): a type
    // written for every variable the check reads, a solution that keeps the stub's
    // declarations, Rust the grader can read.
    for (answer, why) in [
        (
            "let n = 3;\n// BEGIN SOLUTION\nlet m: i64 = n;\n// END SOLUTION",
            "it binds `n` without a type, which the cells after it read",
        ),
        (
            "fn f() -> i64 {\n    // BEGIN SOLUTION\n    1\n    // END SOLUTION\n}\n// BEGIN SOLUTION\nlet n = 2;\n// END SOLUTION",
            "it binds `n` without a type",
        ),
        (
            "// BEGIN SOLUTION: let n: i64 = todo!();\nlet n = 3;\n// END SOLUTION",
            "its solution declares `n: _` where the stub has `n: i64`",
        ),
        (
            "fn f() -> i64 {\n    // BEGIN SOLUTION\n    1\n    // END SOLUTION\n}\nfn g( {",
            "its solution or its released stub is not Rust the grader can read",
        ),
    ] {
        let nb = notebook(vec![
            code("setup", FIRST_CELL, json!({})),
            code("a", answer, json!({})),
            code("check", "check(\"n\", || ensure(n == 3, \"n\"))?;", json!({"sgm": {"grade": "t", "points": 1}})),
        ]);
        let err = Assignment::from_notebook(Path::new("s.ipynb"), nb)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cell 2 (id a)") && err.contains(why), "{answer}: {err}");
    }
}

/// A markdown answer graded by hand: `points` for task `task`.
fn manual(id: &str, task: &str, points: u32, hidden: bool) -> Value {
    json!({"cell_type": "markdown", "id": id,
           "metadata": {"sgm": {"grade": task, "points": points, "manual": true, "hidden": hidden}},
           "source": "Prove it.\n<!-- BEGIN SOLUTION -->\nIntegrate by parts.\n<!-- END SOLUTION -->"})
}

#[test]
fn check_release_finds_stale_releases_and_leaks() {
    let a = assignment();
    assert_eq!(a.check_release(&a.release()).unwrap(), Vec::<String>::new());
    let mut leaky = a.release();
    leaky["cells"][1]["source"] = json!("fn double(x: f64) -> f64 {\n    x.mul_add(2.0, 0.0)\n}");
    let problems = a.check_release(&leaky).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("out of date")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("leaks") && p.contains("x.mul_add(2.0, 0.0)")),
        "{problems:?}"
    );
    let mut with_hidden = a.release();
    with_hidden["cells"]
        .as_array_mut()
        .unwrap()
        .push(cell(&source(), "hidden").clone());
    let problems = a.check_release(&with_hidden).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("leaks") && p.contains("double_negative")),
        "{problems:?}"
    );
}

/// What grading leaves out of a submission is said in its notes, never dropped in silence: an
/// edited locked cell (its own copy runs), a cell the student added (not run), a missing
/// answer; the release as it was, re-saved elsewhere (CRLF, trailing blanks) or with blank
/// cells added, has none.
#[test]
fn grading_takes_answers_from_the_submission_and_everything_else_from_the_source() {
    let a = assignment();
    let mut resaved = a.release();
    for c in resaved["cells"].as_array_mut().unwrap() {
        let text = source_of(c).replace('\n', "  \r\n") + "\r\n";
        c["source"] = json!(text);
    }
    resaved["cells"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cell_type": "code", "id": "blank", "metadata": {}, "source": " \n", "outputs": [], "execution_count": null}));
    let notes = a.grading_notebook(&resaved).unwrap().notes;
    assert!(notes.is_empty(), "{notes:?}");

    let mut submission = a.release();
    // The student answers, edits a visible check to pass trivially, deletes the markdown
    // answer, adds a helper in a cell of their own and a dependency in an answer cell.
    submission["cells"][1]["source"] =
        json!("fn double(x: f64) -> f64 { x + x }\nlet SIGMA: f64 = 0.5;");
    let given = submission["cells"][1]["metadata"].clone();
    submission["cells"][1]["metadata"] = json!({"sgm": {"grade": "mine", "points": 9},
        "tags": ["figure"], "jupyter": {"source_hidden": true}});
    submission["cells"][1]["extra"] = json!("a field nbformat does not know");
    submission["cells"][3]["source"] = json!("println!(\"double passed\");");
    submission["cells"].as_array_mut().unwrap().remove(2);
    submission["cells"].as_array_mut().unwrap().insert(
        2,
        json!({"cell_type": "code", "id": "mine", "metadata": {}, "source": "fn helper() {}", "outputs": [], "execution_count": null}),
    );
    let grading = a.grading_notebook(&submission).unwrap();
    assert_eq!(grading.notes.len(), 3, "{:?}", grading.notes);
    assert!(
        grading.notes.iter().any(|n| n.contains("id visible")
            && n.contains(
                "a locked cell that differs from the assignment's; the assignment's own copy is used"
            )),
        "{:?}",
        grading.notes
    );
    assert!(
        grading.notes.iter().any(|n| n.starts_with(
            "cell 3 of the submission (id mine) is not in the assignment and is left out"
        )),
        "{:?}",
        grading.notes
    );
    assert!(cell_ids(&grading.notebook).iter().all(|id| *id != "mine"));
    let nb = &grading.notebook;
    assert_eq!(
        nb["cells"].as_array().unwrap().len(),
        6,
        "hidden check put back"
    );
    assert_eq!(
        source_of(cell(nb, "answer")),
        "fn double(x: f64) -> f64 { x + x }\nlet SIGMA: f64 = 0.5;"
    );
    // The answer is theirs; its metadata is the one they were given.
    assert_eq!(cell(nb, "answer")["metadata"], given);
    assert!(cell(nb, "answer").get("extra").is_none());
    let visible = source_of(cell(nb, "visible"));
    assert!(
        visible.starts_with("check(\"double\""),
        "the locked check is the source's: {visible}"
    );
    assert!(
        grading
            .notes
            .iter()
            .any(|n| n.contains("id theory") && n.contains("missing")),
        "{:?}",
        grading.notes
    );
    assert_eq!(grading.graded.len(), 3);
    for g in &grading.graded {
        let text = source_of(cell(nb, &g.id));
        let last = text.lines().last().unwrap();
        assert!(
            last.contains(GRADE_MIME) && last.contains(&g.token.0),
            "{last}"
        );
        assert_eq!(g.token.0.len(), 32);
    }
    let tokens: std::collections::HashSet<_> =
        grading.graded.iter().map(|g| g.token.0.clone()).collect();
    assert_eq!(tokens.len(), 3, "a fresh token per graded cell");
    let again = a.grading_notebook(&submission).unwrap();
    assert_ne!(
        again.graded[0].token, grading.graded[0].token,
        "a fresh token per run"
    );

    submission["cells"][1]["source"] =
        json!(":dep sgm = { path = \"../../../crate\" }\nfn double(x: f64) -> f64 { x }");
    let grading = a.grading_notebook(&submission).unwrap();
    assert!(source_of(cell(&grading.notebook, "answer")).contains("todo!(\"your code here\")"));
    assert!(
        grading.notes.iter().any(|n| n.contains("evcxr commands")),
        "{:?}",
        grading.notes
    );
}

/// What grading takes of an answer cell is its text, read as text whatever the file holds
/// (a source list with a number in it made the runner's nbformat fail, and the submission went
/// without a report), and in markdown the pasted images that are well formed.
#[test]
fn grading_reads_an_answer_cells_text_and_well_formed_attachments_only() {
    let a = assignment();
    let mut submission = a.release();
    let theory = submission["cells"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["id"] == "theory")
        .unwrap();
    theory["source"] = json!(["By parts, ", 3, "as in ![scan](attachment:scan.png)"]);
    theory["attachments"] = json!({"scan.png": {"image/png": "iVBORw0KGgo="}, "bad": 3,
                                   "empty": {}, "odd": {"image/png": 7}});
    let grading = a.grading_notebook(&submission).unwrap();
    let graded = cell(&grading.notebook, "theory");
    assert_eq!(
        graded["source"],
        json!(["By parts, as in ![scan](attachment:scan.png)"])
    );
    assert_eq!(
        graded["attachments"],
        json!({"scan.png": {"image/png": "iVBORw0KGgo="}})
    );
    let mut code_cell = a.release();
    code_cell["cells"][1]["attachments"] = json!({"x.png": {"image/png": "AA=="}});
    let grading = a.grading_notebook(&code_cell).unwrap();
    assert!(cell(&grading.notebook, "answer")
        .get("attachments")
        .is_none());
}

/// A student's copy of the release says what grading will make of it, from the list of cells
/// the release carries in its metadata: answer cells still as released, missing or holding an
/// evcxr command, locked cells edited, cells added, ids repeated; an answered copy has nothing
/// to say, and grading agrees cell for cell (a repeated id: the last cell is graded, and noted).
#[test]
fn validate_tells_a_student_what_grading_will_leave_out() {
    let a = assignment();
    let release = a.release();
    let path = Path::new("mine.ipynb");
    let findings = assignment::validate(path, &release).unwrap();
    let unanswered: Vec<&str> = findings
        .iter()
        .map(|f| {
            assert_eq!(f.kind, assignment::FindingKind::Unanswered, "{f:?}");
            f.id.as_str()
        })
        .collect();
    assert_eq!(unanswered, ["answer", "theory"]);
    assert_eq!(
        findings[0].text,
        "cell 2 (id answer: \"fn double(x: f64) -> f64 {\"): not answered yet (as released)"
    );

    let mut answered = release.clone();
    answered["cells"][1]["source"] =
        json!("fn double(x: f64) -> f64 { 2.0 * x }\nlet SIGMA: f64 = 0.5;");
    answered["cells"][2]["source"] = json!("Because 2x = x + x.");
    assert_eq!(assignment::validate(path, &answered).unwrap(), vec![]);

    let mut faulty = answered.clone();
    faulty["cells"][3]["source"] = json!("println!(\"double passed\");");
    let cells = faulty["cells"].as_array_mut().unwrap();
    let mut copy = cells[1].clone();
    copy["source"] = json!("fn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;");
    cells.push(copy);
    cells.push(json!({"cell_type": "markdown", "metadata": {}, "source": "my notes"}));
    cells.remove(2);
    let findings = assignment::validate(path, &faulty).unwrap();
    let kinds: Vec<(assignment::FindingKind, &str)> =
        findings.iter().map(|f| (f.kind, f.id.as_str())).collect();
    use assignment::FindingKind::*;
    assert_eq!(
        kinds,
        [
            (Missing, "theory"),
            (Edited, "visible"),
            (Duplicate, "answer"),
            (Added, "")
        ],
        "{findings:#?}"
    );
    assert!(findings[3]
        .text
        .starts_with("cell 6 of the submission (no id) is not in the assignment"));
    // Grading takes what validate said: the later copy of the answer, and notes the rest.
    let grading = a.grading_notebook(&faulty).unwrap();
    assert!(source_of(cell(&grading.notebook, "answer")).contains("{ x }"));
    assert_eq!(grading.notes.len(), 4, "{:?}", grading.notes);

    // Saved by JupyterLab: sources as lists of lines, CRLF, its own metadata; nothing to say.
    let mut resaved = answered.clone();
    for c in resaved["cells"].as_array_mut().unwrap() {
        let text = source_of(c).replace('\n', "\r\n");
        let lines: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
        c["source"] = json!(lines);
        c["metadata"]["collapsed"] = json!(false);
    }
    resaved["metadata"]["kernelspec"] = json!({"name": "rust", "display_name": "Rust"});
    assert_eq!(assignment::validate(path, &resaved).unwrap(), vec![]);

    // A locked cell twice: the assignment's copy is used whichever was edited.
    let mut twice = answered.clone();
    let visible = twice["cells"][3].clone();
    twice["cells"].as_array_mut().unwrap().insert(1, visible);
    let findings = assignment::validate(path, &twice).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].text.starts_with("cell 2 of the submission (id visible) shares its id with a later cell; the assignment's own copy is used"),
        "{}",
        findings[0].text
    );

    // Saved as nbformat 4.4 (no ids): one line, not one per cell.
    let mut old = answered.clone();
    for c in old["cells"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("id");
    }
    let findings = assignment::validate(path, &old).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].text.contains("nbformat 4.4"),
        "{}",
        findings[0].text
    );
    let grading = a.grading_notebook(&old).unwrap();
    assert!(source_of(cell(&grading.notebook, "answer")).contains("todo!("));

    // Without the list: a copy of an older release, or the assignment's source.
    let mut older = release.clone();
    older["metadata"] = json!({});
    let err = assignment::validate(path, &older).unwrap_err().to_string();
    assert!(
        err.contains("mine.ipynb")
            && err.contains("metadata.sgm.cells")
            && err.contains("not a copy of a homework release"),
        "{err}"
    );
    assert!(!assignment::is_source(path, &release) && assignment::is_source(path, &a.notebook));
    let err = assignment::validate(path, &a.notebook)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the assignment's source"), "{err}");
}

/// The release's last cell (`sgm_homework::validate()`) checks the file as saved: the
/// committed release with every answer as released, the same answered, and the source.
#[test]
fn the_release_checks_itself_as_saved() {
    use sgm_homework::submission::{session_notebook, validate_file};
    for (name, min_answers) in [("hw5_score_matching", 10), ("a8_score_models", 10)] {
        a_release_checks_itself_as_saved(name, min_answers);
    }

    // A session path from the server's root names the notebook in the kernel's folder (this
    // test's is the project's); one that names nothing here stays as given.
    assert_eq!(
        session_notebook(Path::new("elsewhere/Cargo.toml")),
        PathBuf::from("Cargo.toml")
    );
    assert_eq!(
        session_notebook(Path::new(
            "notebooks/homework/release/hw5_score_matching.ipynb"
        )),
        PathBuf::from("notebooks/homework/release/hw5_score_matching.ipynb")
    );
    assert_eq!(
        session_notebook(Path::new("gone/renamed.ipynb")),
        PathBuf::from("gone/renamed.ipynb")
    );
    // The session the Jupyter server holds for this kernel (GET /api/sessions): its path, which
    // follows a rename, from the server's root; another kernel's session, a console's, and
    // paths that leave the root are not it, nor are two notebooks that share the kernel.
    use sgm_homework::submission::session_path;
    let root = Path::new("/srv/notebooks");
    let sessions = |list: &str| {
        format!("[{{\"path\": \"hw/a8.ipynb\", \"type\": \"notebook\", \"kernel\": {{\"id\": \"k-other\"}}}}, {list}]")
    };
    let this = |path: &str, kind: &str| {
        format!(
            "{{\"path\": \"{path}\", \"type\": \"{kind}\", \"kernel\": {{\"id\": \"k-this\"}}}}"
        )
    };
    let renamed = this("hw/renamed-a8.ipynb", "notebook");
    assert_eq!(
        session_path(&sessions(&renamed), "k-this", root),
        Some(PathBuf::from("/srv/notebooks/hw/renamed-a8.ipynb"))
    );
    let with_console = format!("{}, {renamed}", this("console-1", "console"));
    assert_eq!(
        session_path(&sessions(&with_console), "k-this", root),
        Some(PathBuf::from("/srv/notebooks/hw/renamed-a8.ipynb"))
    );
    assert_eq!(session_path(&sessions(&renamed), "k-gone", root), None);
    let two = format!("{renamed}, {}", this("other.ipynb", "notebook"));
    assert_eq!(session_path(&sessions(&two), "k-this", root), None);
    for outside in ["/etc/passwd", "../elsewhere.ipynb", "hw/../../x.ipynb"] {
        let list = sessions(&this(outside, "notebook"));
        assert_eq!(session_path(&list, "k-this", root), None, "{outside}");
    }
    assert_eq!(session_path("<html>login</html>", "k-this", root), None);
    let err = validate_file(Path::new("gone/renamed.ipynb"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gone/renamed.ipynb") && err.contains("restart the kernel"),
        "{err}"
    );
}

/// A submission is untrusted: it is read only as a regular file of at most the limit (a FIFO
/// would never end, nor would a link to `/dev/zero`; a huge file would take the grader's
/// memory), and the error says which rule it broke.
#[test]
fn a_submission_is_read_only_as_a_regular_file_within_the_limit() {
    use assignment::read_submission;
    let dir = sgm_tests::tmpdir("read-submission");
    let nb = serde_json::to_string(&notebook(vec![markdown("m", "# hi")])).unwrap();
    let limit = nb.len() as u64;
    let exact = dir.join("exact.ipynb");
    std::fs::write(&exact, &nb).unwrap();
    assert_eq!(
        read_submission(&exact, limit).unwrap()["cells"][0]["id"],
        "m"
    );
    let refused = |path: &Path, limit: u64| read_submission(path, limit).unwrap_err().to_string();

    let err = refused(&exact, limit - 1);
    let sizes = format!(
        "{limit} bytes, past the grader's limit of {} bytes",
        limit - 1
    );
    assert!(
        err.contains(&sizes) && err.contains("clear the outputs"),
        "{err}"
    );
    let large = dir.join("large.ipynb");
    std::fs::write(&large, format!("{nb}{}", " ".repeat(3 << 20))).unwrap();
    let err = refused(&large, 2 << 20);
    assert!(
        err.contains("3.0 MiB, past the grader's limit of 2.0 MiB"),
        "{err}"
    );

    // A FIFO nobody writes to: refused at once, not waited on.
    let fifo = dir.join("fifo.ipynb");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let start = std::time::Instant::now();
    let err = refused(&fifo, limit);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(start.elapsed().as_secs() < 5);
    let zero = dir.join("zero.ipynb");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    assert!(refused(&zero, limit).contains("not a regular file"));
    assert!(refused(&dir, limit).contains("not a regular file"));

    let latin1 = dir.join("latin1.ipynb");
    std::fs::write(&latin1, b"{\"cells\": [], \"x\": \"\xe9\"}").unwrap();
    let err = refused(&latin1, limit);
    assert!(err.contains("not UTF-8 text (at byte offset 20)"), "{err}");
    let err = refused(&dir.join("missing.ipynb"), limit);
    assert!(err.contains("missing.ipynb"), "{err}");
}

/// A stand-in Jupyter server: answers each of the connections `accept` gives with what
/// `answer` makes of its request, once per item of `answers`; returns the requests.
fn stand_in_server<S: std::io::Read + std::io::Write>(
    mut accept: impl FnMut() -> S + Send + 'static,
    answers: Vec<String>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            let mut stream = accept();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            requests.push(String::from_utf8(request).unwrap());
            stream.write_all(answer.as_bytes()).unwrap();
        }
        requests
    })
}

/// `GET /api/sessions`'s answer: one notebook session, of kernel `abc`, at `path`.
fn one_session(path: &str) -> String {
    format!("[{{\"path\": \"{path}\", \"type\": \"notebook\", \"kernel\": {{\"id\": \"abc\"}}}}]")
}

/// A root folder with `hw/renamed.ipynb` in `dir`, and a function that writes the info file
/// `dir/jpserver-PID.json` of a server with that root and `fields` (its address, token, …).
fn server_root(dir: &Path) -> (PathBuf, impl Fn(u32, Value)) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("hw")).unwrap();
    std::fs::write(root.join("hw/renamed.ipynb"), "{}").unwrap();
    let (dir, root_dir) = (dir.to_owned(), root.clone());
    let info = move |pid: u32, mut fields: Value| {
        let all = fields.as_object_mut().unwrap();
        all.insert("root_dir".into(), json!(root_dir));
        all.insert("pid".into(), json!(pid));
        std::fs::write(dir.join(format!("jpserver-{pid}.json")), fields.to_string()).unwrap();
    };
    (root, info)
}

/// The validate cell's question to the Jupyter server that started its kernel, against a
/// stand-in server on a local port: the request (path under `base_url`, token), the answer
/// taken only when it is 200 and names a file, and no question at all to a server that is not
/// an ancestor of this process (its info file may be a dead server's).
#[test]
fn validate_asks_the_server_that_started_the_kernel() {
    use sgm_homework::submission::server_notebook_of;
    let dir = sgm_tests::tmpdir("validate-server");
    let (root, info) = server_root(&dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fields = json!({"hostname": "127.0.0.1", "port": port, "token": "t0k", "base_url": "/base/",
                        "secure": false, "sock": ""});
    let server = std::os::unix::process::parent_id(); // an ancestor, as the server is
    info(server, fields.clone());
    let connection = dir.join("kernel-abc.json");
    let answers = vec![
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}",
            one_session("hw/renamed.ipynb")
        ),
        "HTTP/1.1 403 Forbidden\r\n\r\n{\"message\": \"Forbidden\"}".to_string(),
        format!("HTTP/1.1 200 OK\r\n\r\n{}", one_session("hw/missing.ipynb")),
        format!("HTTP/1.0 200 OK\r\n\r\n{}", one_session("hw/renamed.ipynb")),
    ];
    let stand_in = stand_in_server(move || listener.accept().unwrap().0, answers);
    let ask = |pid: &str| server_notebook_of(&connection, pid, None);
    assert_eq!(
        ask(&server.to_string()),
        Some(root.join("hw/renamed.ipynb"))
    );
    assert_eq!(ask(&server.to_string()), None); // 403
    assert_eq!(ask(&server.to_string()), None); // no such file

    // A process that is not an ancestor (a child of this one), whose info file names the same
    // port: not asked (the stand-in's last answer is still there for the next question).
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    info(child.id(), fields);
    assert_eq!(ask(&child.id().to_string()), None);
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(ask("not a pid"), None);
    assert_eq!(
        server_notebook_of(&dir.join("other.json"), &server.to_string(), None),
        None
    );
    assert_eq!(
        ask(&server.to_string()),
        Some(root.join("hw/renamed.ipynb"))
    );
    let requests = stand_in.join().unwrap();
    assert_eq!(requests.len(), 4);
    assert!(
        requests[0].starts_with("GET /base/api/sessions HTTP/1.0\r\n")
            && requests[0].contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("\r\nAuthorization: token t0k\r\n"),
        "{}",
        requests[0]
    );
}

/// The same question to a server that listens on a Unix socket (`jupyter server --sock`: its
/// info file has `"port": 0` and the socket's path, as jupyter_server 2.21 writes it), and to one
/// under JupyterHub, whose own token is empty or refused: the kernel's `JUPYTERHUB_API_TOKEN` is
/// asked with next, and no request goes out without a token.
#[test]
fn validate_asks_a_server_on_a_unix_socket_or_under_jupyterhub() {
    use sgm_homework::submission::server_notebook_of;
    let dir = sgm_tests::tmpdir("validate-socket");
    let (root, info) = server_root(&dir);
    let server = std::os::unix::process::parent_id();
    let connection = dir.join("kernel-abc.json");
    let renamed = Some(root.join("hw/renamed.ipynb"));
    let ok = || format!("HTTP/1.1 200 OK\r\n\r\n{}", one_session("hw/renamed.ipynb"));
    let forbidden = || "HTTP/1.1 403 Forbidden\r\n\r\n{}".to_string();

    let socket = dir.join("server.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    info(
        server,
        json!({"hostname": "localhost", "port": 0, "sock": socket, "token": "t0k",
               "base_url": "/", "secure": false}),
    );
    let stand_in = stand_in_server(move || listener.accept().unwrap().0, vec![ok()]);
    assert_eq!(
        server_notebook_of(&connection, &server.to_string(), None),
        renamed
    );
    let requests = stand_in.join().unwrap();
    assert!(
        requests[0].starts_with("GET /api/sessions HTTP/1.0\r\nHost: localhost\r\n")
            && requests[0].contains("\r\nAuthorization: token t0k\r\n"),
        "{}",
        requests[0]
    );

    // Under JupyterHub: the server at /user/NAME/, its info file without a token that works.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hub = |token: &str| {
        json!({"hostname": "0.0.0.0", "port": port, "sock": "", "token": token,
               "base_url": "/user/ada/", "secure": false})
    };
    let stand_in = stand_in_server(
        move || listener.accept().unwrap().0,
        vec![ok(), forbidden(), ok(), forbidden(), forbidden()],
    );
    let ask = |token: Option<&str>| server_notebook_of(&connection, &server.to_string(), token);
    info(server, hub(""));
    assert_eq!(ask(None), None); // no token at all: nothing asked
    assert_eq!(ask(Some("hub-t0k")), renamed); // ok
    info(server, hub("stale"));
    assert_eq!(ask(Some("hub-t0k")), renamed); // forbidden, then ok
    assert_eq!(ask(Some("hub-t0k")), None); // forbidden twice
    let requests = stand_in.join().unwrap();
    let tokens: Vec<&str> = requests
        .iter()
        .map(|r| {
            assert!(
                r.starts_with("GET /user/ada/api/sessions HTTP/1.0\r\n"),
                "{r}"
            );
            r.split("\r\nAuthorization: token ")
                .nth(1)
                .unwrap()
                .split("\r\n")
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(tokens, ["hub-t0k", "stale", "hub-t0k", "stale", "hub-t0k"]);

    // HTTPS is not spoken: a server that says it is secure is not asked.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    info(
        server,
        json!({"hostname": "127.0.0.1", "port": port, "sock": "", "token": "t0k", "base_url": "/",
               "secure": true}),
    );
    assert_eq!(ask(Some("hub-t0k")), None);
    let asked = listener.accept();
    assert_eq!(
        asked.as_ref().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "{asked:?}"
    );
}

/// [`the_release_checks_itself_as_saved`] for the assignment `name` (at least `min_answers`
/// answer cells).
fn a_release_checks_itself_as_saved(name: &str, min_answers: usize) {
    use sgm_homework::submission::validate_file;
    let source =
        Assignment::read(homework_dir().join("source").join(format!("{name}.ipynb"))).unwrap();
    let release_path = homework_dir().join("release").join(format!("{name}.ipynb"));
    let release = assignment::read_notebook(&release_path).unwrap();
    let last = release["cells"].as_array().unwrap().last().unwrap();
    assert_eq!(source_of(last).trim(), "sgm_homework::validate()?;");
    let answers = source.cells.iter().filter(|c| c.role.is_answer()).count();
    assert!(answers >= min_answers, "{name}: {answers} answer cells");

    let dir = sgm_tests::tmpdir(&format!("validate-cell-{name}"));
    let copy = dir.join("mine.ipynb");
    std::fs::copy(&release_path, &copy).unwrap();
    let checked = validate_file(&copy).unwrap();
    assert!(!checked.source && !checked.ready());
    assert_eq!(checked.findings.len(), answers, "{:#?}", checked.findings);
    let shown = checked.to_string();
    assert!(
        shown.starts_with(&format!("Checked {} as saved ", copy.display())),
        "{shown}"
    );
    assert!(
        shown.ends_with(&format!("Not ready: {answers} problem(s).")),
        "{shown}"
    );
    assert_eq!(
        shown.matches("not answered yet").count(),
        answers,
        "{shown}"
    );

    // Answered (the source's solutions in the release's cells): ready.
    let mut answered = release.clone();
    for c in answered["cells"].as_array_mut().unwrap() {
        let id = c["id"].as_str().unwrap().to_string();
        if source
            .cells
            .iter()
            .any(|s| s.id == id && s.role.is_answer())
        {
            c["source"] = json!(source_of(cell(&source.notebook, &id))
                .lines()
                .filter(|l| !l.contains("SOLUTION"))
                .collect::<Vec<_>>()
                .join("\n"));
        }
    }
    assignment::write_notebook(&copy, &answered).unwrap();
    let checked = validate_file(&copy).unwrap();
    assert!(checked.ready(), "{checked}");
    assert!(checked
        .to_string()
        .ends_with("Ready: every answer cell is answered, and grading leaves nothing out."));

    let checked =
        validate_file(&homework_dir().join("source").join(format!("{name}.ipynb"))).unwrap();
    assert!(checked.source && checked.ready(), "{checked:?}");
    assert!(checked.to_string().contains("is the assignment's source"));
}

/// The executed grading notebook as the kernel would return it: `reports` maps a graded cell
/// id to the token its output carries (None: no report output).
fn executed(grading: &assignment::Grading, reports: &[(&str, Option<&str>)]) -> Value {
    let mut nb = grading.notebook.clone();
    for (id, token) in reports {
        let cells = nb["cells"].as_array_mut().unwrap();
        let c = cells.iter_mut().find(|c| c["id"] == *id).unwrap();
        if let Some(token) = token {
            c["outputs"] = json!([{"output_type": "display_data", "metadata": {},
                                   "data": {GRADE_MIME: format!("{{\"cell\": \"{id}\", \"token\": \"{token}\"}}")}}]);
        }
    }
    nb
}

/// The secret graded cell `id` of `grading` prints when it passes.
fn token_of(grading: &assignment::Grading, id: &str) -> String {
    let cell = grading.graded.iter().find(|g| g.id == id).unwrap();
    cell.token.0.clone()
}

fn ok(cell: usize) -> CellOutcome {
    CellOutcome {
        cell,
        status: "ok".into(),
        kind: String::new(),
        message: String::new(),
        seconds: 1.5,
    }
}

#[test]
fn a_check_passes_only_with_its_own_token_and_a_clean_run() {
    let a = assignment();
    let grading = a.grading_notebook(&a.release()).unwrap();
    let token = |id: &str| token_of(&grading, id);
    let (visible, hidden, sigma) = (token("visible"), token("hidden"), token("sigma"));
    let outcomes = vec![ok(0), ok(1), ok(3), ok(4), ok(5)];

    let all = executed(
        &grading,
        &[
            ("visible", Some(&visible)),
            ("hidden", Some(&hidden)),
            ("sigma", Some(&sigma)),
        ],
    );
    let report = assignment::score(&a, "s", &grading, &all, &outcomes);
    assert_eq!((report.total, report.max), (4, 4));
    assert_eq!(report.tasks[0].seconds, 3.0);

    // Printed by the submission: a made-up token, another cell's token, no output at all.
    let forged = executed(
        &grading,
        &[
            ("visible", Some("0123456789abcdef0123456789abcdef")),
            ("hidden", Some(&sigma)),
        ],
    );
    let report = assignment::score(&a, "s", &grading, &forged, &outcomes);
    assert_eq!(report.total, 0, "{report:?}");
    assert!(
        report.tasks[0].message.contains("no result reported"),
        "{}",
        report.tasks[0].message
    );

    // The token arrived but the cell failed (e.g. the report line ran, then something failed).
    let mut failed = outcomes.clone();
    failed[4] = CellOutcome {
        status: "failed".into(),
        kind: "timeout".into(),
        message: "timed out after 60 s".into(),
        ..ok(5)
    };
    let report = assignment::score(&a, "s", &grading, &all, &failed);
    assert_eq!(report.tasks[1].points, 0);
    assert_eq!(
        report.tasks[1].message,
        "check in cell 6: timed out after 60 s"
    );
    assert_eq!(report.tasks[0].points, 3);

    let feedback = assignment::feedback_notebook(&a, &all, &grading, &report);
    let text = serde_json::to_string(&feedback).unwrap();
    assert!(
        !text.contains(&visible),
        "the token is not shown in the feedback"
    );
    assert!(text.contains("timed out after 60 s") && text.contains("Score: 3 / 4"));

    let csv = assignment::grades_csv(&a.tasks(), &[report]).unwrap();
    assert_eq!(csv, "submission,t1,t2,total,max\ns,3,0,3,4\n");
}

/// A check that ran clean does not pass where a variable it reads was last bound by a cell that
/// failed: evcxr kept the variable's older value (here the first cell's), which the check read.
#[test]
fn a_check_reading_a_variable_its_failed_binder_did_not_make_does_not_pass() {
    let a = Assignment::from_notebook(
        Path::new("source.ipynb"),
        notebook(vec![
            code("setup", FIRST_CELL, json!({})),
            code("answer", "fn double(x: f64) -> f64 {\n    // BEGIN SOLUTION\n    2.0 * x\n    // END SOLUTION\n}", json!({})),
            code("first", "let history = vec![1.0, 0.5];", json!({})),
            code("again", "let history = vec![double(1.0), 1.0];", json!({})),
            code("check", "check(\"history\", || ensure(history[1] < history[0], \"falls\"))?;", json!({"sgm": {"grade": "t1", "points": 1}})),
            code("other", "check(\"double\", || ensure(double(2.0) == 4.0, \"2 * 2\"))?;", json!({"sgm": {"grade": "t2", "points": 1}})),
        ]),
    )
    .unwrap();
    let grading = a.grading_notebook(&a.release()).unwrap();
    let run = executed(
        &grading,
        &[
            ("check", Some(&token_of(&grading, "check"))),
            ("other", Some(&token_of(&grading, "other"))),
        ],
    );
    let failed = |cell: usize, message: &str| CellOutcome {
        status: "failed".into(),
        kind: "error".into(),
        message: message.into(),
        ..ok(cell)
    };
    let score = |outcomes: &[CellOutcome]| assignment::score(&a, "s", &grading, &run, outcomes);

    // All clean: both pass.
    let report = score(&[ok(0), ok(1), ok(2), ok(3), ok(4), ok(5)]);
    assert_eq!(report.total, 2, "{report:#?}");
    // The last cell to bind `history` did not compile: the check read the first cell's.
    let report = score(&[
        ok(0),
        ok(1),
        ok(2),
        failed(3, "error[E0530]: let bindings cannot shadow constants"),
        ok(4),
        ok(5),
    ]);
    assert_eq!(
        (report.tasks[0].points, report.tasks[1].points),
        (0, 1),
        "{report:#?}"
    );
    assert_eq!(
        report.tasks[0].message,
        "check in cell 5: it reads `history`, which cell 4 binds, but that cell failed \
         (error[E0530]: let bindings cannot shadow constants): the value read was not made by it"
    );
    // A cell not run (a restarted kernel replays only what succeeded) counts as failed too.
    let report = score(&[ok(0), ok(1), ok(2), ok(4), ok(5)]);
    assert_eq!(report.tasks[0].points, 0, "{report:#?}");
    assert!(
        report.tasks[0].message.contains("(not run)"),
        "{}",
        report.tasks[0].message
    );
    // An earlier binder's failure does not matter where a later one made the variable.
    let report = score(&[ok(0), ok(1), failed(2, "error"), ok(3), ok(4), ok(5)]);
    assert_eq!(report.total, 2, "{report:#?}");
}

/// An answer cell whose source binds a variable the checks read, graded with a text that runs
/// but does not bind it (say it became a comment): the check read an earlier cell's value.
#[test]
fn a_check_reading_a_variable_the_answer_no_longer_binds_does_not_pass() {
    let a = Assignment::from_notebook(
        Path::new("source.ipynb"),
        notebook(vec![
            code("setup", FIRST_CELL, json!({})),
            code("first", "let EPOCHS: usize = 5;", json!({})),
            code("answer", "// BEGIN SOLUTION: let EPOCHS: usize = todo!(\"more than 5\");\nlet EPOCHS: usize = 20;\n// END SOLUTION", json!({})),
            code("check", "check(\"epochs\", || ensure(EPOCHS > 5, \"more than 5\"))?;", json!({"sgm": {"grade": "t1", "points": 1}})),
        ]),
    )
    .unwrap();
    let mut grading = a.grading_notebook(&a.notebook).unwrap();
    let run = executed(&grading, &[("check", Some(&token_of(&grading, "check")))]);
    let outcomes = [ok(0), ok(1), ok(2), ok(3)];
    assert_eq!(
        assignment::score(&a, "s", &grading, &run, &outcomes).total,
        1
    );
    let answer = cell_mut(&mut grading.notebook, "answer");
    answer["source"] = json!("// let EPOCHS: usize = 20;\nprintln!(\"20 epochs\");");
    let report = assignment::score(&a, "s", &grading, &run, &outcomes);
    assert_eq!(report.total, 0, "{report:#?}");
    assert_eq!(
        report.tasks[0].message,
        "check in cell 4: it reads `EPOCHS`, which the assignment's cell 3 binds and the answer there \
         does not: the value read was an earlier cell's"
    );
}

fn homework_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("notebooks/homework")
}

/// Each committed release is what `sgm release` writes from its committed source, and holds no
/// line of a solution or a hidden check; every source has one.
#[test]
fn committed_releases_are_current_and_leak_nothing() {
    // (source, points in all, tasks graded by hand)
    let assignments = [
        // Task 1: 4 points by checks and 4 by hand, Task 2: 4, Task 3: 6.
        (
            "hw5_score_matching",
            18,
            vec!["task1.problem1.derivation", "task1.problem2.derivation"],
        ),
        // Tasks 1 to 4, 7 and 8: 2 points by checks each, one more by hand in Task 1; Task 5:
        // 3 (2 for the moving average, 1 for training); Task 6: 1.
        ("a8_score_models", 17, vec!["task1.batch_norm"]),
    ];
    let names = |dir: &str| {
        let mut found: Vec<String> = std::fs::read_dir(homework_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ipynb"))
            .collect();
        found.sort();
        found
    };
    let mut listed: Vec<String> = assignments
        .iter()
        .map(|a| format!("{}.ipynb", a.0))
        .collect();
    listed.sort();
    assert_eq!(names("source"), listed);
    assert_eq!(names("release"), listed);
    for (name, points, by_hand_tasks) in assignments {
        let file = format!("{name}.ipynb");
        let source = Assignment::read(homework_dir().join("source").join(&file)).unwrap();
        let released =
            assignment::read_notebook(&homework_dir().join("release").join(&file)).unwrap();
        assert_eq!(
            source.check_release(&released).unwrap(),
            Vec::<String>::new(),
            "{name}"
        );
        // Graded as they are, neither leaves anything out.
        for nb in [&released, &source.notebook] {
            let notes = source.grading_notebook(nb).unwrap().notes;
            assert!(notes.is_empty(), "{name}: {notes:?}");
        }
        assert!(
            source.secret_lines().len() > 20,
            "{name}: the source has solutions and hidden checks"
        );
        let hidden = source
            .cells
            .iter()
            .filter(|c| matches!(c.role, Role::Graded { hidden: true, .. }))
            .count();
        assert!(hidden >= 3, "{name}: hidden checks: {hidden}");
        let max: u32 = source.tasks().iter().map(|t| t.max).sum();
        assert_eq!(max, points, "{name}");
        let by_hand: Vec<String> = source.tasks_by_hand().into_iter().map(|t| t.id).collect();
        assert_eq!(by_hand, by_hand_tasks, "{name}");
        // The release ends with the cell that checks it as saved.
        let last = released["cells"].as_array().unwrap().last().unwrap();
        assert_eq!(
            source_of(last).trim(),
            "sgm_homework::validate()?;",
            "{name}"
        );
    }
}

/// The small source with a derivation graded by hand (task `t3`, 2 points) after the checks.
fn with_proof() -> Assignment {
    let mut nb = source();
    nb["cells"]
        .as_array_mut()
        .unwrap()
        .push(manual("proof", "t3", 2, false));
    Assignment::from_notebook(Path::new("source.ipynb"), nb).unwrap()
}

/// An answer graded by hand is released as a stub, taken from the submission, and pending in
/// the report (no points, an empty cell in grades.csv) until a row of manual.csv gives its
/// points; the comment shows in the feedback after the answer, and the same rows applied again
/// change nothing.
#[test]
fn answers_graded_by_hand_are_pending_until_manual_csv_gives_their_points() {
    let a = with_proof();
    assert_eq!(
        a.tasks().last().unwrap(),
        &assignment::TaskMax {
            id: "t3".into(),
            max: 2,
            manual: true
        }
    );
    let released = a.release();
    assert_eq!(
        source_of(cell(&released, "proof")),
        format!("Prove it.\n{ANSWER_PLACEHOLDER}")
    );
    let mut submission = released.clone();
    let proof = submission["cells"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["id"] == "proof")
        .unwrap();
    proof["source"] = json!("Prove it.\nThe boundary term vanishes at infinity.");
    let grading = a.grading_notebook(&submission).unwrap();
    assert!(source_of(cell(&grading.notebook, "proof")).contains("boundary term vanishes"));
    assert!(grading.graded.iter().all(|g| g.id != "proof"));

    let token = |id: &str| token_of(&grading, id);
    let all = executed(
        &grading,
        &[
            ("visible", Some(&token("visible"))),
            ("hidden", Some(&token("hidden"))),
            ("sigma", Some(&token("sigma"))),
        ],
    );
    let outcomes = vec![ok(0), ok(1), ok(3), ok(4), ok(5)];
    let mut report = assignment::score(&a, "s", &grading, &all, &outcomes);
    let t3 = report.tasks.iter().find(|t| t.id == "t3").unwrap().clone();
    assert!(
        t3.pending && t3.points == 0 && t3.message == assignment::PENDING,
        "{t3:?}"
    );
    assert_eq!((report.total, report.max), (4, 6));
    assert_eq!(
        assignment::grades_csv(&a.tasks(), std::slice::from_ref(&report)).unwrap(),
        "submission,t1,t2,t3,total,max\ns,3,1,,4,6\n"
    );
    let feedback = assignment::feedback_notebook(&a, &all, &grading, &report);
    let ids = cell_ids(&feedback);
    let after = ids.iter().position(|id| *id == "proof").unwrap() + 1;
    assert_eq!(ids[after], "sgm-feedback-proof");
    let text = serde_json::to_string(&feedback).unwrap();
    assert!(
        text.contains("2 points still to be graded by hand"),
        "{text}"
    );

    // The instructor's rows: the file sgm grade starts, with the points and a comment that
    // holds a comma and quotes.
    let dir = sgm_tests::tmpdir("manual-scores");
    let path = dir.join("manual.csv");
    let u = assignment::Report {
        submission: "u".into(),
        ..report.clone()
    };
    let both = [report.clone(), u];
    let new = assignment::manual_rows_for(&a, &both, &[]);
    assert!(new.changed && new.reopened.is_empty());
    let mut rows = new.rows;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.answer == t3.answer && r.answer.starts_with("sha256:")),
        "{rows:?}"
    );
    rows[0].points = Some(1);
    rows[0].comment = "the boundary term needs \"decay\", see (2)".into();
    std::fs::write(&path, assignment::manual_scores_csv(&rows, true).unwrap()).unwrap();
    let read = assignment::read_manual_scores(&path, &a).unwrap();
    assert_eq!(read, rows, "written and read back");
    let same = assignment::manual_rows_for(&a, &both, &read);
    assert!(!same.changed && same.rows == read, "{same:?}");

    assignment::apply_manual_scores(&a, &mut report, &read);
    let t3 = report.tasks.iter().find(|t| t.id == "t3").unwrap().clone();
    assert!(!t3.pending && t3.points == 1 && !t3.passed, "{t3:?}");
    assert_eq!(t3.message, "the boundary term needs \"decay\", see (2)");
    assert_eq!((report.total, report.max), (5, 6));
    let again = {
        let mut r = report.clone();
        assignment::apply_manual_scores(&a, &mut r, &read);
        r
    };
    assert_eq!(again, report, "applying the same rows twice");
    assert_eq!(
        assignment::grades_csv(&a.tasks(), std::slice::from_ref(&report)).unwrap(),
        "submission,t1,t2,t3,total,max\ns,3,1,1,5,6\n"
    );
    let refreshed = assignment::refresh_feedback(&a, &feedback, &report);
    let text = serde_json::to_string(&refreshed).unwrap();
    assert!(
        text.contains("Score: 5 / 6") && !text.contains("still to be graded"),
        "{text}"
    );
    let note = source_of(cell(&refreshed, "sgm-feedback-proof"));
    assert!(note.contains("1 / 2") && note.contains("see (2)"), "{note}");

    // A feedback page from before the task was graded by hand gains its result cell.
    let mut old = feedback.clone();
    old["cells"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["id"] != "sgm-feedback-proof");
    let refreshed_old = assignment::refresh_feedback(&a, &old, &report);
    assert_eq!(refreshed_old, refreshed, "the old page refreshed");

    // Points taken back (the cell emptied): pending again.
    let mut cleared = read.clone();
    cleared[0].points = None;
    assignment::apply_manual_scores(&a, &mut report, &cleared);
    assert_eq!((report.total, report.max), (4, 6));
    assert!(report.tasks.iter().find(|t| t.id == "t3").unwrap().pending);
}

/// Points given by hand stand for the answer they were given for: a resubmission graded
/// again with the same answer (saved on another system: CRLF, trailing blanks; re-wrapped or
/// re-indented) keeps them, while a changed character between words reopens them;
/// one with another answer is pending again, and [`assignment::manual_rows_for`] empties its
/// row, keeping the earlier points in the comment and saying so once. A row typed without a
/// digest, or a report from before digests were kept, is taken as given.
#[test]
fn a_changed_answer_reopens_the_points_given_by_hand() {
    let a = with_proof();
    let graded = |text: &str| {
        let mut nb = a.release();
        cell_mut(&mut nb, "proof")["source"] = json!(text);
        let grading = a.grading_notebook(&nb).unwrap();
        assignment::score(&a, "s", &grading, &grading.notebook, &[])
    };
    let t3 = |r: &assignment::Report| r.tasks.iter().find(|t| t.id == "t3").unwrap().clone();
    let first = graded("Prove it.\nBy parts: the boundary term vanishes.");
    let mut rows = assignment::manual_rows_for(&a, std::slice::from_ref(&first), &[]).rows;
    rows[0].points = Some(2);
    // As typed in a spreadsheet, blanks around it: the file keeps them, the feedback does not.
    rows[0].comment = " Good. ".into();

    let resaved = graded("Prove it.  \r\nBy parts: the boundary term vanishes.\t\r\n\r\n");
    assert_eq!(
        t3(&resaved).answer,
        t3(&first).answer,
        "the same answer resaved"
    );
    let rewrapped = graded("  Prove it. By parts:\n\n    the boundary\tterm vanishes.");
    assert_eq!(
        t3(&rewrapped).answer,
        t3(&first).answer,
        "the same words re-wrapped and re-indented"
    );
    for other in [
        "Prove it.\nBy parts: the boundary term vanishes!",
        "Prove it.\nBy parts: the boundaryterm vanishes.",
    ] {
        assert_ne!(t3(&graded(other)).answer, t3(&first).answer, "{other:?}");
    }
    for mut r in [first.clone(), resaved.clone(), rewrapped.clone()] {
        assignment::apply_manual_scores(&a, &mut r, &rows);
        assert!(!t3(&r).pending && t3(&r).points == 2, "{:?}", t3(&r));
        assert_eq!(t3(&r).message, "Good.");
        let same = assignment::manual_rows_for(&a, std::slice::from_ref(&r), &rows);
        assert!(!same.changed && same.reopened.is_empty());
    }

    let mut second = graded("Prove it.\nBy symmetry.");
    assert_ne!(t3(&second).answer, t3(&first).answer);
    let before = second.clone();
    assignment::apply_manual_scores(&a, &mut second, &rows);
    let t = t3(&second);
    assert!(
        t.pending
            && t.points == 0
            && t.message
                == format!(
                    "{}: the answer changed after it was given 2 points",
                    assignment::PENDING
                ),
        "{t:?}"
    );
    assert_eq!(
        second.total, before.total,
        "no points for an answer nobody read"
    );
    let update = assignment::manual_rows_for(&a, std::slice::from_ref(&second), &rows);
    assert!(update.changed);
    assert_eq!(
        update.reopened,
        ["s, t3: the answer changed after it was given 2 points; pending again"]
    );
    let row = &update.rows[0];
    assert_eq!(
        (row.points, row.comment.as_str(), row.answer.as_str()),
        (None, "earlier answer: 2 points; Good.", t.answer.as_str())
    );
    let again = assignment::manual_rows_for(&a, std::slice::from_ref(&second), &update.rows);
    assert!(!again.changed && again.reopened.is_empty(), "reopened once");
    assignment::apply_manual_scores(&a, &mut second, &update.rows);
    assert_eq!(
        t3(&second).message,
        assignment::PENDING,
        "a comment shows beside points only"
    );
    let mut regraded = update.rows.clone();
    regraded[0].points = Some(1);
    assignment::apply_manual_scores(&a, &mut second, &regraded);
    assert!(!t3(&second).pending && t3(&second).points == 1);

    // A row typed by hand without a digest: its points stand for the answer graded now, whose
    // digest it takes.
    let mut typed = rows.clone();
    typed[0].answer.clear();
    let mut r = graded("Prove it.\nBy symmetry.");
    assignment::apply_manual_scores(&a, &mut r, &typed);
    assert_eq!(t3(&r).points, 2);
    let filled = assignment::manual_rows_for(&a, std::slice::from_ref(&r), &typed);
    assert!(filled.changed && filled.reopened.is_empty());
    assert_eq!(filled.rows[0].points, Some(2));
    assert_eq!(filled.rows[0].answer, t3(&r).answer);
    // A report from before digests were kept: the row stands, unchanged.
    let mut old = graded("Prove it.\nBy symmetry.");
    old.tasks.iter_mut().for_each(|t| t.answer.clear());
    assignment::apply_manual_scores(&a, &mut old, &rows);
    assert_eq!(t3(&old).points, 2);
    assert!(!assignment::manual_rows_for(&a, &[old], &rows).changed);
}

/// The page of every answer to a task graded by hand: the source's answer, then each
/// submission's heading with its points (or pending) and its answer as it ran; a submission
/// without an executed notebook says so. Cell ids stay unique.
#[test]
fn the_answers_page_shows_every_submissions_answer_with_its_points() {
    let a = with_proof();
    let answered = |text: &str| {
        let mut nb = a.release();
        cell_mut(&mut nb, "proof")["source"] = json!(text);
        nb
    };
    let report = |name: &str, given: Option<(u32, &str)>| {
        let grading = a.grading_notebook(&a.release()).unwrap();
        let mut r = assignment::score(&a, name, &grading, &grading.notebook, &[]);
        let rows: Vec<assignment::ManualScore> = given
            .map(|(points, comment)| assignment::ManualScore {
                submission: name.into(),
                task: "t3".into(),
                points: Some(points),
                comment: comment.into(),
                answer: String::new(),
            })
            .into_iter()
            .collect();
        assignment::apply_manual_scores(&a, &mut r, &rows);
        r
    };
    let graded = vec![
        (
            report("ann", Some((1, "half of it"))),
            answered("Ann's proof by parts."),
        ),
        (report("bob", None), answered("Bob's proof by symmetry.")),
        (report("cid", None), Value::Null),
    ];
    let page = assignment::answers_notebook(&a, "t3", &graded);
    let texts: Vec<String> = page["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(source_of)
        .collect();
    assert!(
        texts[0].starts_with("# t3: the answers, graded by hand (2 points)"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("Integrate by parts."),
        "the source's answer: {}",
        texts[1]
    );
    assert_eq!(texts[2], "## ann\n\n**1 / 2: half of it**");
    assert_eq!(texts[3], "Ann's proof by parts.");
    assert_eq!(
        texts[4],
        format!("## bob\n\n**– / 2, {}**", assignment::PENDING)
    );
    assert_eq!(texts[5], "Bob's proof by symmetry.");
    assert!(
        texts[7].contains("cell proof not in the executed notebook"),
        "{}",
        texts[7]
    );
    assert_eq!(texts.len(), 8);
    let ids: std::collections::HashSet<&str> = cell_ids(&page).into_iter().collect();
    assert_eq!(ids.len(), 8, "unique cell ids");
}

/// A manual.csv row that cannot stand is an error naming its line and value, never a silent
/// score: points past the task's most or not a number, a task graded by checks or not in the
/// assignment, a second row for the same submission and task, a wrong header, an unquoted comma.
#[test]
fn malformed_manual_scores_are_errors_naming_the_row() {
    let a = with_proof();
    let dir = sgm_tests::tmpdir("manual-bad");
    let path = dir.join("manual.csv");
    let header = "submission,task,points,comment\n";
    for (body, why) in [
        (
            "s,t3,3,\n",
            "line 2 (s, t3): points \"3\": expected a whole number from 0 to 2",
        ),
        (
            "s,t3,two,\n",
            "points \"two\": expected a whole number from 0 to 2",
        ),
        ("s,t3,-1,\n", "points \"-1\""),
        ("s,t1,1,\n", "task t1 is graded by its checks, not by hand"),
        ("s,t9,1,\n", "task \"t9\" is not in the assignment"),
        (
            "s,t3,1,\nu,t3,,\ns,t3,2,\n",
            "line 4 (s, t3): a second row for this submission and task (the first is line 2)",
        ),
        (",t3,1,\n", "no submission named"),
        ("s,t3,1,good, but short\n", "5 fields; expected 4"),
    ] {
        std::fs::write(&path, format!("{header}{body}")).unwrap();
        let err = assignment::read_manual_scores(&path, &a)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("manual.csv") && err.contains(why),
            "{body:?}: {err}"
        );
    }
    // Excel's line ends and a blank line: the row is still named by its own line.
    std::fs::write(
        &path,
        format!(
            "\u{feff}{}",
            "submission,task,points,comment\r\n\r\ns,t3,1,\r\ns,t3,9,\r\n"
        ),
    )
    .unwrap();
    let err = assignment::read_manual_scores(&path, &a)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 4 (s, t3): points \"9\""), "{err}");
    std::fs::write(
        &path,
        "submission,task,points,comment,answer\ns,t3,1,,sha256:0123\n",
    )
    .unwrap();
    let err = assignment::read_manual_scores(&path, &a)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2 (s, t3): answer \"sha256:0123\": expected the digest sgm grade wrote"),
        "{err}"
    );
    std::fs::write(&path, "student,task,points\ns,t3,1\n").unwrap();
    let err = assignment::read_manual_scores(&path, &a)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("expected submission,task,points,comment,answer"),
        "{err}"
    );
    // No file yet, or an empty one: no rows; three columns and blank lines are fine.
    for blank in ["", "\n \n", "\u{feff}", "\u{feff}\r\n"] {
        std::fs::write(&path, blank).unwrap();
        let rows = assignment::read_manual_scores(&path, &a).unwrap();
        assert!(rows.is_empty(), "{blank:?}");
    }
    std::fs::remove_file(&path).unwrap();
    assert!(assignment::read_manual_scores(&path, &a)
        .unwrap()
        .is_empty());
    std::fs::write(&path, "submission,task,points\n\ns,t3,2\n").unwrap();
    let rows = assignment::read_manual_scores(&path, &a).unwrap();
    assert_eq!((rows.len(), rows[0].points), (1, Some(2)));
    // A digest is read whatever its case.
    std::fs::write(
        &path,
        "submission,task,points,comment,answer\ns,t3,1,,SHA256:0123456789ABCDEF\n",
    )
    .unwrap();
    let rows = assignment::read_manual_scores(&path, &a).unwrap();
    assert_eq!(rows[0].answer, "sha256:0123456789abcdef");
}

/// Rewritten (a row added or reopened), manual.csv keeps the style of the spreadsheet that
/// wrote it: Excel's byte-order mark and CRLF line ends stay, a plain file stays plain, and
/// either reads back as the same rows, the comment's own blanks included.
#[test]
fn manual_csv_is_rewritten_in_its_own_style() {
    let a = with_proof();
    let rows = vec![assignment::ManualScore {
        submission: "s".into(),
        task: "t3".into(),
        points: Some(1),
        comment: "  indented, with a comma and a trailing blank ".into(),
        answer: "sha256:0123456789abcdef".into(),
    }];
    let dir = sgm_tests::tmpdir("manual-style");
    let path = dir.join("manual.csv");
    for (like, bom, crlf) in [
        (
            "\u{feff}submission,task,points,comment\r\ns,t3,,\r\n",
            true,
            true,
        ),
        ("submission,task,points,comment\r\n", false, true),
        ("submission,task,points,comment\ns,t3,,\n", false, false),
        ("", false, false),
    ] {
        let text = assignment::manual_file_text(&rows, like).unwrap();
        assert_eq!(text.starts_with('\u{feff}'), bom, "{like:?}: {text:?}");
        assert_eq!(
            text.matches("\r\n").count(),
            if crlf { 2 } else { 0 },
            "{text:?}"
        );
        assert_eq!(text.matches('\n').count(), 2, "{text:?}");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(assignment::read_manual_scores(&path, &a).unwrap(), rows);
    }
}

/// An answer cell may not define what the assignment's own cells use: an answer that defined
/// `mod sgm_homework` (whose `checks::check` returns `Ok` untried), `fn check`, `fn ensure` or
/// `macro_rules! assert` would make every later check pass (a review forged full marks on a
/// made-up assignment with the first). Such a cell is not graded, its stub runs, and the
/// student's own check says so first; names the released cell defines, helpers of their own,
/// a library's item imported under its own name and a check's local names stay free. The real
/// assignments' solutions trip none of it.
#[test]
fn an_answer_may_not_replace_what_the_checks_call() {
    let a = assignment();
    // The answer cell's list: what the checks after it read (the hidden one not in the release).
    let release = a.release();
    let listed = &release["metadata"]["sgm"]["cells"];
    let answer = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "answer")
        .unwrap();
    let names = |key: &str| -> Vec<&str> {
        answer[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect()
    };
    assert_eq!(names("defines"), ["value:SIGMA", "value:double"]);
    let reserved = names("reserved");
    for name in [
        "value:check",
        "value:ensure",
        "value:double",
        "value:SIGMA",
        "type:sgm_homework",
        "type:std",
    ] {
        assert!(reserved.contains(&name), "{name}: {reserved:?}");
    }
    let answered = |text: &str| {
        let mut nb = a.release();
        nb["cells"][1]["source"] = json!(text);
        nb
    };
    let fine = "fn double(x: f64) -> f64 { helper(x) }\nfn helper(x: f64) -> f64 { 2.0 * x }\nuse std::f64::consts::PI;\nuse sgm_homework::prelude::*;\nlet SIGMA: f64 = PI / 10.0;\nlet x = 3;";
    // A module named like a variable, a variable named like a module: other namespaces.
    let namespaces = "#![allow(non_snake_case)]\nfn double(x: f64) -> f64 { x * 2.0 }\nlet SIGMA: f64 = 0.5;\nmod check_helpers {}\nlet sgm_homework = 3;";
    let cases: [(&str, &str); 20] = [
        (fine, ""),
        (namespaces, ""),
        ("fn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;\nfn r#check() {}", "`check`"),
        ("#![allow(unused)]\nmod sgm_homework { pub mod checks {} }\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "`sgm_homework`"),
        // evcxr runs a line that starts with `!` as a shell command.
        ("!true\nmod sgm_homework { pub mod checks {} }\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "evcxr commands"),
        // Out of reach (`macro_rules!`), and a module that exports macros, which the note says
        // too.
        ("#[macro_use] mod m { macro_rules! ensure { ($($t:tt)*) => { Ok::<(), String>(()) } } }\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "exports macros"),
        // A syntax error: it runs, and the compiler says so (it can define nothing); but where
        // the brackets do not balance evcxr may compile part of it, so what it declares cannot
        // be read, and its stub runs.
        ("fn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;\nfn broken() { 1 + }", ""),
        ("fn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;\nfn broken( {", "is not Rust whose brackets balance"),
        // A type of its own where the stub declares `f64`, whose `==` says what it likes.
        ("struct Four;\nimpl PartialEq<f64> for Four { fn eq(&self, _: &f64) -> bool { true } }\nfn double(x: f64) -> Four { Four }\nlet SIGMA: f64 = 0.5;", "declares `fn double(f64) -> Four` where the stub has `fn double(f64) -> f64`"),
        ("fn double(x: f64) -> f64 { x }\nlet SIGMA = 0.5;", "declares `SIGMA: _` where the stub has `SIGMA: f64`"),
        ("mod sgm_homework { pub mod checks { pub fn check() {} } }\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "`sgm_homework`"),
        ("fn check<E>(_: &str, _: impl FnOnce() -> Result<(), E>) -> Result<(), String> { Ok(()) }\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "`check`"),
        // A macro `ensure!` is not the function `ensure` the checks call, but `macro_rules!`
        // is out of reach (it pastes its arguments into paths).
        ("macro_rules! ensure { ($($t:tt)*) => { Ok::<(), String>(()) } }\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "the macro `macro_rules!`"),
        // Code that could read the check's secret while the check runs (tests/sandbox.rs).
        ("fn double(x: f64) -> f64 { let _ = std::fs::read_to_string(\"src/lib.rs\"); x }\nlet SIGMA: f64 = 0.5;", "uses `fs::` (files), which answers may not use"),
        ("fn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = unsafe { std::mem::transmute(0u64) };", "`unsafe`"),
        ("fn double(x: f64) -> f64 { x }\nuse std::convert::identity as ensure;\nlet SIGMA: f64 = 0.5;", "`ensure`"),
        ("mod m { pub fn Ok<T>(t: T) -> Option<T> { Some(t) } }\nuse m::*;\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "a glob import of a module of its own"),
        ("fn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;\nlet ensure = |_c: bool, _m: &str| Ok::<(), String>(());", "`ensure`"),
        ("extern crate sgm;\nfn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;", "evcxr commands"),
        // An `impl` in a macro's arguments applies to the whole crate, yet `syn` keeps it as
        // tokens the rules do not read (found by a review): its methods could be any.
        ("fn double(x: f64) -> f64 { x }\nlet SIGMA: f64 = 0.5;\nstruct Fake;\nfn h() { let _ = format!(\"{}\", { impl Fake { fn allclose(&self) -> bool { true } } 0 }); }", "an `impl` inside the arguments of `format!`"),
    ];
    for (text, why) in cases {
        let grading = a.grading_notebook(&answered(text)).unwrap();
        let note = grading.notes.iter().find(|n| n.contains("id answer"));
        let graded = source_of(cell(&grading.notebook, "answer"));
        if why.is_empty() {
            assert!(note.is_none(), "{text}: {note:?}");
            assert!(graded.starts_with(text), "{graded}");
        } else {
            let note = note.unwrap_or_else(|| panic!("{text}: no note"));
            assert!(note.contains(why), "{text}: {note}");
            assert!(graded.contains("todo!(\"your code here\")"), "{graded}");
            // The student's own check (the release's list) says the same before submission.
            let path = Path::new("mine.ipynb");
            let findings = assignment::validate(path, &answered(text)).unwrap();
            assert!(
                findings.iter().any(|f| f.text.contains(why)),
                "{text}: {findings:?}"
            );
        }
    }

    // Only what a later cell reads before a locked cell binds it again: `data` is made afresh
    // after the answer, `seen` only before it.
    let ordered = Assignment::from_notebook(
        Path::new("ordered.ipynb"),
        notebook(vec![
            code("setup", FIRST_CELL, json!({})),
            code("seen", "let seen = 1;\nprintln!(\"{seen}\");", json!({})),
            code(
                "helpers",
                "fn near(a: f64, b: f64) -> bool {\n    close(a, b)\n}\nfn close(a: f64, b: f64) -> bool {\n    (a - b).abs() < 1e-9\n}",
                json!({}),
            ),
            code(
                "answer",
                "fn f(x: f64) -> f64 {\n    // BEGIN SOLUTION\n    2.0 * x\n    // END SOLUTION\n}",
                json!({}),
            ),
            code("given", "let data = vec![1.0];", json!({})),
            code(
                "check",
                "check(\"f\", || ensure(f(data[0]).abs() == 2.0, format!(\"f\")))?;",
                json!({"sgm": {"grade": "t", "points": 1}}),
            ),
        ]),
    )
    .unwrap();
    let release = ordered.release();
    let listed = release["metadata"]["sgm"]["cells"].as_array().unwrap();
    let reserved = listed.iter().find(|c| c["id"] == "answer").unwrap()["reserved"].to_string();
    assert!(
        reserved.contains("\"value:ensure\"") && reserved.contains("\"value:f\""),
        "{reserved}"
    );
    assert!(
        reserved.contains("\"method:abs\"") && !reserved.contains("value:data"),
        "{reserved}"
    );
    assert!(!reserved.contains("value:seen"), "{reserved}");
    // A trait whose method a later check calls on a number, a macro it invokes: refused.
    for (text, why) in [
        ("trait Big { fn abs(self) -> f64; }\nimpl Big for f64 { fn abs(self) -> f64 { 2.0 } }\nfn f(x: f64) -> f64 { x }", "the method `.abs()`"),
        ("macro_rules! format { ($($t:tt)*) => { String::new() } }\nfn f(x: f64) -> f64 { x }", "the macro `format!`"),
        // The same trait in a module of its own, brought in unnamed; an `impl` in a function's
        // body: either applies to the whole crate.
        ("mod m { pub trait Big { fn abs(self) -> f64; } impl Big for f64 { fn abs(self) -> f64 { 2.0 } } }\nuse m::Big as _;\nfn f(x: f64) -> f64 { x }", "the method `.abs()`"),
        ("mod m { pub trait Big { fn abs(self) -> f64; } }\nuse m::Big as _;\nfn f(x: f64) -> f64 { fn g() { impl m::Big for f64 { fn abs(self) -> f64 { 2.0 } } } x }", "the method `.abs()`"),
        // An item of an earlier cell is built again with every cell: it would call this `close`.
        ("fn close(_: f64, _: f64) -> bool { true }\nfn f(x: f64) -> f64 { x }", "`close`"),
    ] {
        let mut nb = release.clone();
        cell_mut(&mut nb, "answer")["source"] = json!(text);
        let grading = ordered.grading_notebook(&nb).unwrap();
        assert!(
            grading.notes.iter().any(|n| n.contains(why)),
            "{text}: {:?}",
            grading.notes
        );
    }

    // Names honest answers use: a variable `data` (the checks use the module `data::`), a helper
    // `normal_cdf` (a8's checks import their own).
    for name in ["hw5_score_matching", "a8_score_models"] {
        let release = assignment::read_notebook(
            &homework_dir().join("release").join(format!("{name}.ipynb")),
        )
        .unwrap();
        for c in release["metadata"]["sgm"]["cells"].as_array().unwrap() {
            let reserved = c["reserved"].to_string();
            assert!(
                !reserved.contains("\"value:data\"") && !reserved.contains("\"value:normal_cdf\""),
                "{name} {}: {reserved}",
                c["id"]
            );
        }
    }
    for name in ["hw5_score_matching", "a8_score_models"] {
        let path = homework_dir().join("source").join(format!("{name}.ipynb"));
        let source = Assignment::read(&path).unwrap();
        let nb = assignment::read_notebook(&path).unwrap();
        let grading = source.grading_notebook(&nb).unwrap();
        assert!(
            grading
                .notes
                .iter()
                .all(|n| !n.contains("replace the assignment's own")),
            "{name}: {:?}",
            grading.notes
        );
    }
}

/// The feedback page quotes what a submission can shape (its cell ids in the notes, its output
/// in a failed check's message) as text: a line break in it could otherwise start a heading
/// (a forged score) or a table row, and its markup would render.
#[test]
fn feedback_quotes_what_a_submission_wrote_as_text() {
    let a = assignment();
    let mut submission = a.release();
    submission["cells"].as_array_mut().unwrap().push(json!({
        "cell_type": "code", "id": "x\n# Feedback: forged\n**Score: 9 / 9**", "metadata": {},
        "source": "let forged = 1;", "outputs": [], "execution_count": null}));
    let grading = a.grading_notebook(&submission).unwrap();
    assert!(grading
        .notes
        .iter()
        .any(|n| n.contains("# Feedback: forged")));
    let report = assignment::score(&a, "s", &grading, &grading.notebook, &[]);
    let feedback = assignment::feedback_notebook(&a, &grading.notebook, &grading, &report);
    let summary = source_of(cell(&feedback, "sgm-feedback-summary"));
    assert!(summary.starts_with("# Feedback: s\n"), "{summary}");
    let forged: Vec<&str> = summary
        .lines()
        .filter(|l| l.starts_with('#') || l.starts_with("**Score: 9"))
        .collect();
    assert_eq!(forged, ["# Feedback: s"], "{summary}");
    assert!(
        summary.contains("x<br>\\# Feedback: forged<br>\\*\\*Score: 9 / 9\\*\\*"),
        "{summary}"
    );
}

/// Points given by hand stand for the answer they were given for: its words, and, where the
/// answer is a pasted image (a scanned derivation), its attachments too. Re-wrapping changes
/// nothing; a new scan reopens the grade as new words do; an answer without attachments keeps
/// the digest it had.
#[test]
fn an_answers_digest_covers_its_pasted_images() {
    let a = with_proof();
    let with = |text: &str, attachments: Option<Value>| {
        let mut nb = a.release();
        let proof = cell_mut(&mut nb, "proof");
        proof["source"] = json!(text);
        if let Some(att) = attachments {
            proof["attachments"] = att;
        }
        assignment::answer_digest(&a, "t3", &nb)
    };
    let scan = |b64: &str| Some(json!({"scan.png": {"image/png": b64}}));
    let words = with("See ![scan](attachment:scan.png)", None);
    assert_eq!(with("See\n![scan](attachment:scan.png)  ", None), words);
    assert_eq!(
        with("See ![scan](attachment:scan.png)", Some(json!({}))),
        words
    );
    let first = with("See ![scan](attachment:scan.png)", scan("AAAA"));
    assert_ne!(first, words);
    assert_eq!(
        with("See\n  ![scan](attachment:scan.png)", scan("AAAA")),
        first
    );
    assert_ne!(
        with("See ![scan](attachment:scan.png)", scan("BBBB")),
        first
    );
}

/// A release lists, of what the solution defines, only the names the cells after the answer
/// read, and of those only what the visible cells read: a solution's own helper, or a name only
/// a hidden check reads, would be a hint. Grading still lets an answer define the name the
/// hidden check reads.
#[test]
fn a_release_names_nothing_only_the_solution_or_a_hidden_check_uses() {
    let a = Assignment::from_notebook(
        Path::new("hints.ipynb"),
        notebook(vec![
            code("setup", FIRST_CELL, json!({})),
            code(
                "answer",
                "fn f(x: f64) -> f64 {\n    // BEGIN SOLUTION\n    2.0 * x\n    // END SOLUTION\n}\n// BEGIN SOLUTION\nfn own_helper() -> f64 { 1.0 }\nfn scale() -> f64 { 2.0 }\n// END SOLUTION",
                json!({}),
            ),
            code(
                "visible",
                "check(\"f\", || ensure(f(1.0) == 2.0, \"f\"))?;",
                json!({"sgm": {"grade": "t", "points": 1}}),
            ),
            code(
                "hidden",
                "check(\"scale\", || ensure(scale() == 2.0, \"scale\"))?;",
                json!({"sgm": {"grade": "t", "points": 1, "hidden": true}}),
            ),
        ]),
    )
    .unwrap();
    let release = a.release();
    let listed = release["metadata"]["sgm"]["cells"].as_array().unwrap();
    let answer = listed.iter().find(|c| c["id"] == "answer").unwrap();
    assert_eq!(answer["defines"], json!(["value:f"]), "{answer}");
    let reserved = answer["reserved"].to_string();
    assert!(
        !reserved.contains("scale") && !reserved.contains("own_helper"),
        "{reserved}"
    );
    // An answer with the solution's names is graded as it is; one that defines `check` is not.
    for (text, refused) in [
        ("fn f(x: f64) -> f64 { 2.0 * x }\nfn own_helper() -> f64 { 1.0 }\nfn scale() -> f64 { 2.0 }", false),
        ("fn f(x: f64) -> f64 { 2.0 * x }\nfn scale() -> f64 { 2.0 }\nfn check() {}", true),
    ] {
        let mut nb = release.clone();
        cell_mut(&mut nb, "answer")["source"] = json!(text);
        let grading = a.grading_notebook(&nb).unwrap();
        assert_eq!(
            grading.notes.iter().any(|n| n.contains("id answer")),
            refused,
            "{text}: {:?}",
            grading.notes
        );
    }
}

/// A method a given cell defines does not free its name for the answers before it: an `impl`
/// applies to the whole crate, so an answer's trait method `value(self)` on `f64` would come
/// before the given trait's `value(&self)` in the check that calls `.value()` after that given
/// cell (a review's finding; functions, types and variables a given cell defines again do
/// replace the answer's).
#[test]
fn a_given_cells_method_leaves_the_name_reserved() {
    let nb = notebook(vec![
        code("setup", FIRST_CELL, json!({})),
        code(
            "answer",
            "fn double(x: f64) -> f64 {\n    // BEGIN SOLUTION\n    2.0 * x\n    // END SOLUTION\n}",
            json!({}),
        ),
        code(
            "given",
            "trait Value { fn value(&self) -> f64; }\nimpl Value for f64 { fn value(&self) -> f64 { *self } }",
            json!({}),
        ),
        code(
            "visible",
            "check(\"double\", || ensure(double(2.0).value() == 4.0, \"2 * 2\"))?;",
            json!({"sgm": {"grade": "t1", "points": 1}}),
        ),
    ]);
    let a = Assignment::from_notebook(Path::new("source.ipynb"), nb).unwrap();
    let mut submission = a.release();
    cell_mut(&mut submission, "answer")["source"] = json!(
        "fn double(x: f64) -> f64 { x }\ntrait V { fn value(self) -> f64; }\nimpl V for f64 { fn value(self) -> f64 { 4.0 } }"
    );
    let grading = a.grading_notebook(&submission).unwrap();
    let note = grading.notes.iter().find(|n| n.contains("id answer"));
    assert!(
        note.is_some_and(|n| n.contains("the method `.value()`")),
        "{:?}",
        grading.notes
    );
    assert!(source_of(cell(&grading.notebook, "answer")).contains("todo!("));
}

/// A constant named like a variable a later given cell binds stops that cell from compiling
/// (`let history = …` cannot shadow a constant, E0530), so the given cell never runs and the
/// constant stands in for what it makes (a review passed assignment 8's training check with
/// no training this way); such an answer is not run. A `let` of the same name is free.
#[test]
fn an_answer_may_not_define_a_constant_a_later_cell_binds() {
    let nb = notebook(vec![
        code("setup", FIRST_CELL, json!({})),
        code(
            "answer",
            "// BEGIN SOLUTION: let EPOCHS: usize = todo!();\nlet EPOCHS: usize = 3;\n// END SOLUTION",
            json!({}),
        ),
        code(
            "given",
            "let history: Vec<f64> = (0..EPOCHS).map(|k| 1.0 / (k + 1) as f64).collect();",
            json!({}),
        ),
        code(
            "visible",
            "check(\"trained\", || ensure(history.len() == EPOCHS && history[history.len() - 1] < history[0], \"decreasing\"))?;",
            json!({"sgm": {"grade": "t1", "points": 1}}),
        ),
    ]);
    let a = Assignment::from_notebook(Path::new("source.ipynb"), nb).unwrap();
    let note_for = |text: &str| {
        let mut submission = a.release();
        cell_mut(&mut submission, "answer")["source"] = json!(text);
        let grading = a.grading_notebook(&submission).unwrap();
        grading
            .notes
            .iter()
            .find(|n| n.contains("id answer"))
            .cloned()
    };
    for text in [
        "let EPOCHS: usize = 2;\nconst history: [f64; 2] = [2.0, 1.0];",
        "let EPOCHS: usize = 2;\nstatic history: [f64; 2] = [2.0, 1.0];",
        "let EPOCHS: usize = 2;\nstruct history;",
    ] {
        let note = note_for(text).unwrap_or_else(|| panic!("{text}: no note"));
        assert!(note.contains("`history`"), "{text}: {note}");
    }
    assert_eq!(note_for("let EPOCHS: usize = 2;\nlet history = 5;"), None);
}
