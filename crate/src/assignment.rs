//! Homework assignments for Rust notebooks, in the workflow nbgrader users know: an instructor
//! *source* notebook with the solutions → a *release* for students → *submissions* → grades
//! and feedback.
//!
//! The source's markup (the one place it is defined):
//! - **Solution regions.** In a code cell, the lines from `// BEGIN SOLUTION` to
//!   `// END SOLUTION` (inclusive, each alone on its line) become `todo!("your code here")` at
//!   the region's indentation, or the one line of Rust written after `// BEGIN SOLUTION: `.
//!   In a markdown cell, `<!-- BEGIN SOLUTION -->` … `<!-- END SOLUTION -->` becomes
//!   [`ANSWER_PLACEHOLDER`]. A cell with a region is an *answer cell*: graded from the
//!   student's copy. Every other cell is *locked*: graded from the source's copy, so a student
//!   can neither edit a check nor delete it.
//! - **Graded cells.** Metadata `{"sgm": {"grade": "<task id>", "points": n}}` marks a check
//!   cell; with `"hidden": true` it is left out of the release and put back at grading. A
//!   check cell ends with `check(...)?;`; at grading a line is appended that prints a display
//!   output of MIME type [`GRADE_MIME`] with a secret drawn for that run ([`ReportToken`]), so
//!   the cell counts as passed only when its check returned `Ok` and that output arrived
//!   (a submission that prints a result of its own does not know the secret).
//! - Cells are matched between source, release and submission by their nbformat `id`.
//! - The first code cell is [`FIRST_CELL`]; no other cell may hold an evcxr command (a line
//!   starting with `:`), so an answer cannot add dependencies (such as the toolkit itself,
//!   whose `losses` would be the solution).

use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// MIME type of the display output through which a graded cell reports that it passed.
pub const GRADE_MIME: &str = "application/vnd.sgm.grade+json";
/// The first code cell of every homework notebook: the student kit and the relay that reports
/// every failing cell in its own outputs ([`crate::notebook`]).
pub const FIRST_CELL: &str = ":dep sgm_homework = { path = \"../../../crate/homework\" }\nsgm_homework::report_failed_cells()?;";
/// What a markdown solution region becomes in the release.
pub const ANSWER_PLACEHOLDER: &str = "*Your answer here.*";

const CODE_BEGIN: &str = "// BEGIN SOLUTION";
const CODE_END: &str = "// END SOLUTION";
const MD_BEGIN: &str = "<!-- BEGIN SOLUTION -->";
const MD_END: &str = "<!-- END SOLUTION -->";

/// What a cell is in the assignment.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Taken from the source at grading.
    Locked,
    /// Holds solution regions: taken from the submission at grading.
    Answer,
    /// A check worth `points` towards task `task`; `hidden` ones are not released.
    Graded {
        /// Task id, e.g. `task2.langevin`.
        task: String,
        /// Points of this cell.
        points: u32,
        /// Left out of the release.
        hidden: bool,
    },
}

/// One cell of the source and its role.
#[derive(Debug, Clone)]
pub struct CellInfo {
    /// Position in the source.
    pub index: usize,
    /// The nbformat cell id.
    pub id: String,
    /// `code` or `markdown` (or `raw`).
    pub cell_type: String,
    /// Its role.
    pub role: Role,
}

/// An instructor's source notebook, checked against the markup rules.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Where it was read from.
    pub path: PathBuf,
    /// The notebook (nbformat 4 JSON).
    pub notebook: Value,
    /// Its cells' roles, in order.
    pub cells: Vec<CellInfo>,
}

/// A task and its points.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskMax {
    /// Task id.
    pub id: String,
    /// The most points it can earn.
    pub max: u32,
}

/// The secret one graded cell prints when its check passes, drawn fresh for each grading run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReportToken(pub String);

impl ReportToken {
    /// 128 random bits from the operating system, in hex.
    pub fn random() -> Result<ReportToken> {
        let mut bytes = [0u8; 16];
        let path = "/dev/urandom";
        let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        std::io::Read::read_exact(&mut file, &mut bytes).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Ok(ReportToken(
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    /// The Rust line appended to a graded cell: prints this token as a [`GRADE_MIME`] display
    /// output (evcxr's display protocol on stdout).
    pub fn report_line(&self, cell_id: &str) -> String {
        format!(
            "println!(\"EVCXR_BEGIN_CONTENT {GRADE_MIME}\\n{{{{\\\"cell\\\": \\\"{cell_id}\\\", \\\"token\\\": \\\"{}\\\"}}}}\\nEVCXR_END_CONTENT\");",
            self.0
        )
    }
}

/// A cell's source as one string (nbformat stores a string or a list of lines).
pub fn source_of(cell: &Value) -> String {
    match cell.get("source") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(lines)) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// Sets a cell's source, as nbformat writes it: a list of lines that keep their newlines.
fn set_source(cell: &mut Value, text: &str) {
    let lines: Vec<Value> = text
        .split_inclusive('\n')
        .map(|l| Value::String(l.into()))
        .collect();
    cell["source"] = Value::Array(lines);
}

/// Reads a notebook's JSON.
pub fn read_notebook(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let nb: Value = serde_json::from_str(&text).map_err(|e| Error::Notebook {
        path: path.display().to_string(),
        cell: "(file)".into(),
        why: format!("not a notebook: {e}"),
    })?;
    if !nb.get("cells").is_some_and(Value::is_array) {
        return Err(Error::Notebook {
            path: path.display().to_string(),
            cell: "(file)".into(),
            why: "not a notebook: no \"cells\" list".into(),
        });
    }
    Ok(nb)
}

/// A notebook as nbformat writes it: keys sorted, one-space indent, a final newline.
pub fn notebook_text(nb: &Value) -> Result<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(nb, &mut ser)?;
    let mut text = String::from_utf8(out).expect("serde_json writes UTF-8");
    text.push('\n');
    Ok(text)
}

/// Writes a notebook atomically.
pub fn write_notebook(path: &Path, nb: &Value) -> Result<()> {
    let text = notebook_text(nb)?;
    crate::checkpoint::write_atomically(path, |tmp| {
        std::fs::write(tmp, &text).map_err(|source| Error::Io {
            path: tmp.display().to_string(),
            source,
        })
    })
}

fn cell_name(index: usize, id: &str) -> String {
    format!("cell {} (id {id})", index + 1)
}

/// One solution region: the line range (inclusive) and its stub.
struct Region {
    begin: usize,
    end: usize,
    stub: String,
}

/// The solution regions of a cell's lines; unbalanced or nested markers are an error (`why`).
fn regions(lines: &[&str], markdown: bool) -> std::result::Result<Vec<Region>, String> {
    let (begin_marker, end_marker) = if markdown {
        (MD_BEGIN, MD_END)
    } else {
        (CODE_BEGIN, CODE_END)
    };
    let mut found = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix(begin_marker) {
            if let Some((at, _)) = open {
                return Err(format!(
                    "line {}: {begin_marker} inside the region opened on line {}",
                    i + 1,
                    at + 1
                ));
            }
            let indent = &line[..line.len() - line.trim_start().len()];
            let stub = match rest.strip_prefix(':') {
                Some(custom) if !markdown && !custom.trim().is_empty() => {
                    format!("{indent}{}", custom.trim())
                }
                _ if markdown => ANSWER_PLACEHOLDER.to_string(),
                _ if rest.trim().is_empty() => format!("{indent}todo!(\"your code here\")"),
                _ => {
                    return Err(format!(
                        "line {}: unexpected text after {begin_marker}",
                        i + 1
                    ))
                }
            };
            open = Some((i, stub));
        } else if trimmed == end_marker {
            let Some((begin, stub)) = open.take() else {
                return Err(format!("line {}: {end_marker} without a BEGIN", i + 1));
            };
            found.push(Region {
                begin,
                end: i,
                stub,
            });
        } else if trimmed.contains("BEGIN SOLUTION") || trimmed.contains("END SOLUTION") {
            return Err(format!(
                "line {}: a solution marker must be alone on its line ({begin_marker} / {end_marker})",
                i + 1
            ));
        }
    }
    match open {
        Some((at, _)) => Err(format!("line {}: {begin_marker} is never closed", at + 1)),
        None => Ok(found),
    }
}

/// `text` with each solution region replaced by its stub.
fn strip_solutions(text: &str, markdown: bool) -> std::result::Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let found = regions(&lines, markdown)?;
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    for r in &found {
        out.extend(lines[i..r.begin].iter().map(|l| l.to_string()));
        out.push(r.stub.clone());
        i = r.end + 1;
    }
    out.extend(lines[i..].iter().map(|l| l.to_string()));
    Ok(out.join("\n"))
}

/// The lines inside solution regions (markers excluded).
fn solution_lines(text: &str, markdown: bool) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    regions(&lines, markdown)
        .unwrap_or_default()
        .iter()
        .flat_map(|r| {
            lines[r.begin + 1..r.end]
                .iter()
                .map(|l| l.trim().to_string())
        })
        .collect()
}

fn has_evcxr_command(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with(':'))
}

fn sgm_meta(cell: &Value) -> Option<&Map<String, Value>> {
    cell.get("metadata")?.get("sgm")?.as_object()
}

impl Assignment {
    /// Reads a source notebook and checks its markup: unique cell ids, balanced markers,
    /// graded cells with a task and positive points and no solution region, the first code
    /// cell [`FIRST_CELL`] and no evcxr command anywhere else.
    pub fn read(path: impl AsRef<Path>) -> Result<Assignment> {
        let path = path.as_ref();
        Self::from_notebook(path, read_notebook(path)?)
    }

    /// [`Assignment::read`] from a parsed notebook (`path` names it in errors).
    pub fn from_notebook(path: &Path, notebook: Value) -> Result<Assignment> {
        let bad = |cell: String, why: String| Error::Notebook {
            path: path.display().to_string(),
            cell,
            why,
        };
        let raw = notebook["cells"].as_array().cloned().unwrap_or_default();
        let mut ids = HashSet::new();
        let mut cells = Vec::new();
        let mut first_code = true;
        for (index, cell) in raw.iter().enumerate() {
            let id = cell
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad(
                        format!("cell {}", index + 1),
                        "no cell id (save it with nbformat >= 4.5, e.g. from JupyterLab)".into(),
                    )
                })?
                .to_string();
            let name = cell_name(index, &id);
            if !ids.insert(id.clone()) {
                return Err(bad(name, "duplicate cell id".into()));
            }
            let cell_type = cell["cell_type"].as_str().unwrap_or("").to_string();
            let text = source_of(cell);
            let markdown = cell_type == "markdown";
            let lines: Vec<&str> = text.lines().collect();
            let found = regions(&lines, markdown).map_err(|why| bad(name.clone(), why))?;
            if cell_type == "code" {
                if first_code {
                    if text.trim() != FIRST_CELL {
                        return Err(bad(
                            name,
                            format!("the first code cell must be exactly:\n{FIRST_CELL}"),
                        ));
                    }
                    first_code = false;
                } else if has_evcxr_command(&text) {
                    return Err(bad(
                        name,
                        "only the first cell may hold evcxr commands (lines starting with ':')"
                            .into(),
                    ));
                }
            }
            let role = match sgm_meta(cell).and_then(|m| m.get("grade")) {
                Some(task) => {
                    let meta = sgm_meta(cell).expect("read above");
                    let task = task
                        .as_str()
                        .filter(|t| !t.trim().is_empty())
                        .ok_or_else(|| {
                            bad(name.clone(), "sgm.grade must be a task id string".into())
                        })?
                        .to_string();
                    let points = meta
                        .get("points")
                        .and_then(Value::as_u64)
                        .filter(|p| *p > 0 && *p <= u64::from(u32::MAX))
                        .ok_or_else(|| {
                            bad(name.clone(), "sgm.points must be a whole number > 0".into())
                        })? as u32;
                    if cell_type != "code" {
                        return Err(bad(name, "a graded cell must be a code cell".into()));
                    }
                    if !found.is_empty() {
                        return Err(bad(
                            name,
                            "a graded cell cannot hold a solution region".into(),
                        ));
                    }
                    let hidden = meta.get("hidden").and_then(Value::as_bool).unwrap_or(false);
                    Role::Graded {
                        task,
                        points,
                        hidden,
                    }
                }
                None if !found.is_empty() => Role::Answer,
                None => Role::Locked,
            };
            cells.push(CellInfo {
                index,
                id,
                cell_type,
                role,
            });
        }
        if first_code {
            return Err(bad("(file)".into(), "no code cell".into()));
        }
        Ok(Assignment {
            path: path.to_path_buf(),
            notebook,
            cells,
        })
    }

    fn raw_cell(&self, index: usize) -> &Value {
        &self.notebook["cells"][index]
    }

    /// The tasks in order of first appearance, with their maximum points.
    pub fn tasks(&self) -> Vec<TaskMax> {
        let mut tasks: Vec<TaskMax> = Vec::new();
        for c in &self.cells {
            if let Role::Graded { task, points, .. } = &c.role {
                match tasks.iter_mut().find(|t| &t.id == task) {
                    Some(t) => t.max += points,
                    None => tasks.push(TaskMax {
                        id: task.clone(),
                        max: *points,
                    }),
                }
            }
        }
        tasks
    }

    /// A cell as released: solutions replaced by their stubs, outputs cleared.
    fn released_cell(&self, info: &CellInfo) -> Value {
        let mut cell = self.raw_cell(info.index).clone();
        if info.role == Role::Answer {
            let text = strip_solutions(&source_of(&cell), info.cell_type == "markdown")
                .expect("checked by Assignment::read");
            set_source(&mut cell, &text);
        }
        clear_outputs(&mut cell);
        cell
    }

    /// The student version: hidden checks removed, solution regions replaced, outputs cleared.
    pub fn release(&self) -> Value {
        let mut nb = self.notebook.clone();
        nb["cells"] = Value::Array(
            self.cells
                .iter()
                .filter(|c| !matches!(c.role, Role::Graded { hidden: true, .. }))
                .map(|c| self.released_cell(c))
                .collect(),
        );
        nb
    }

    /// Lines of solution regions and hidden checks that must not appear in a release: every
    /// such line with more than a few characters that no locked, released cell also holds.
    pub fn secret_lines(&self) -> Vec<String> {
        let released_text: HashSet<String> = self
            .cells
            .iter()
            .filter(|c| !matches!(c.role, Role::Graded { hidden: true, .. }))
            .flat_map(|c| {
                let text = source_of(&self.released_cell(c));
                text.lines()
                    .map(|l| l.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut secret = Vec::new();
        for c in &self.cells {
            let text = source_of(self.raw_cell(c.index));
            let lines = match &c.role {
                Role::Answer => solution_lines(&text, c.cell_type == "markdown"),
                Role::Graded { hidden: true, .. } => {
                    text.lines().map(|l| l.trim().to_string()).collect()
                }
                _ => continue,
            };
            secret.extend(
                lines
                    .into_iter()
                    .filter(|l| l.chars().filter(|ch| ch.is_alphanumeric()).count() >= 6)
                    .filter(|l| !released_text.contains(l)),
            );
        }
        secret
    }

    /// Problems with a released notebook: different from what [`Assignment::release`] writes
    /// now (out of date), or holding a line of a solution or a hidden check (a leak).
    pub fn check_release(&self, released: &Value) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        if notebook_text(released)? != notebook_text(&self.release())? {
            problems.push("the release is out of date with its source (run `sgm release`)".into());
        }
        let text = notebook_text(released)?;
        for line in self.secret_lines() {
            let quoted = serde_json::to_string(&line)?;
            let quoted = &quoted[1..quoted.len() - 1];
            if text.contains(quoted) {
                problems.push(format!("leaks a solution or hidden-check line: {line}"));
            }
        }
        Ok(problems)
    }

    /// The notebook the grader runs for `submission`: answer cells from the submission
    /// (matched by id; the release's stub where the submission lacks the cell or the answer
    /// holds an evcxr command), every other cell from the source with the hidden checks back
    /// in place, each graded cell followed by the line that reports its token. Returns the
    /// notebook, the graded cells (with their tokens) and notes on the submission.
    pub fn grading_notebook(&self, submission: &Value) -> Result<Grading> {
        let theirs: HashMap<&str, &Value> = submission["cells"]
            .as_array()
            .map(|cells| {
                cells
                    .iter()
                    .filter_map(|c| Some((c.get("id")?.as_str()?, c)))
                    .collect()
            })
            .unwrap_or_default();
        let mut cells = Vec::new();
        let mut graded = Vec::new();
        let mut notes = Vec::new();
        for info in &self.cells {
            let mut cell = match &info.role {
                Role::Answer => match theirs.get(info.id.as_str()) {
                    Some(c) if c["cell_type"].as_str() == Some(info.cell_type.as_str()) => {
                        if info.cell_type == "code" && has_evcxr_command(&source_of(c)) {
                            notes.push(format!(
                                "{}: evcxr commands (lines starting with ':') are not allowed in answers; the released stub was run instead",
                                cell_name(info.index, &info.id)
                            ));
                            self.released_cell(info)
                        } else {
                            (*c).clone()
                        }
                    }
                    _ => {
                        notes.push(format!(
                            "{}: missing from the submission; the released stub was run instead",
                            cell_name(info.index, &info.id)
                        ));
                        self.released_cell(info)
                    }
                },
                _ => self.raw_cell(info.index).clone(),
            };
            clear_outputs(&mut cell);
            if let Role::Graded {
                task,
                points,
                hidden,
            } = &info.role
            {
                let token = ReportToken::random()?;
                let text = format!(
                    "{}\n{}",
                    source_of(&cell).trim_end(),
                    token.report_line(&info.id)
                );
                set_source(&mut cell, &text);
                graded.push(GradedCell {
                    index: info.index,
                    id: info.id.clone(),
                    task: task.clone(),
                    points: *points,
                    hidden: *hidden,
                    token,
                });
            }
            cells.push(cell);
        }
        let mut nb = self.notebook.clone();
        nb["cells"] = Value::Array(cells);
        Ok(Grading {
            notebook: nb,
            graded,
            notes,
        })
    }
}

fn clear_outputs(cell: &mut Value) {
    if cell["cell_type"] == "code" {
        cell["outputs"] = json!([]);
        cell["execution_count"] = Value::Null;
    }
}

/// A graded cell of one grading run.
#[derive(Debug, Clone)]
pub struct GradedCell {
    /// Position in the grading notebook (the same as in the source).
    pub index: usize,
    /// Cell id.
    pub id: String,
    /// Task id.
    pub task: String,
    /// Points.
    pub points: u32,
    /// Whether it is a hidden check.
    pub hidden: bool,
    /// The secret it prints when it passes.
    pub token: ReportToken,
}

/// What [`Assignment::grading_notebook`] builds.
#[derive(Debug, Clone)]
pub struct Grading {
    /// The notebook to execute.
    pub notebook: Value,
    /// Its graded cells.
    pub graded: Vec<GradedCell>,
    /// Notes on the submission (missing or rejected answer cells).
    pub notes: Vec<String>,
}

/// How the runner saw one code cell end (`kernel-setup/grade_runner.py` writes these).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CellOutcome {
    /// Cell index.
    pub cell: usize,
    /// `ok`, `failed` or `skipped`.
    pub status: String,
    /// For a failure: `error`, `panic`, `timeout`, `dead`, …
    #[serde(default)]
    pub kind: String,
    /// For a failure or a skip: why, in one line.
    #[serde(default)]
    pub message: String,
    /// Seconds it ran.
    #[serde(default)]
    pub seconds: f64,
}

/// One task's result in a report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskResult {
    /// Task id.
    pub id: String,
    /// Points earned.
    pub points: u32,
    /// Points possible.
    pub max: u32,
    /// Whether every check of the task passed.
    pub passed: bool,
    /// "passed", or the first failing check's reason.
    pub message: String,
    /// Seconds its checks ran.
    pub seconds: f64,
}

/// One graded cell's result in a report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// Cell index (from 0) in the source.
    pub cell: usize,
    /// Cell id.
    pub id: String,
    /// Task id.
    pub task: String,
    /// Whether it is a hidden check.
    pub hidden: bool,
    /// Points earned.
    pub points: u32,
    /// Points possible.
    pub max: u32,
    /// "passed", or why not.
    pub message: String,
}

/// A submission's grade: `report.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The submission's name.
    pub submission: String,
    /// Points earned.
    pub total: u32,
    /// Points possible.
    pub max: u32,
    /// Per task, in the notebook's order.
    pub tasks: Vec<TaskResult>,
    /// Per graded cell, in the notebook's order.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// Notes on the submission (missing or rejected cells, time limit).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Seconds the grading of this submission took.
    #[serde(default)]
    pub seconds: f64,
}

/// Whether a graded cell passed, and if not, why: it passed when the runner saw it end
/// without failure and its outputs hold a [`GRADE_MIME`] output with its own token.
pub fn graded_cell_result(
    cell: &GradedCell,
    executed: &Value,
    outcome: Option<&CellOutcome>,
) -> (bool, String) {
    let outputs = executed["cells"][cell.index]["outputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reported = outputs.iter().any(|o| {
        let data = &o["data"][GRADE_MIME];
        let record: Option<Value> = match data {
            Value::String(s) => serde_json::from_str(s).ok(),
            v if v.is_object() => Some(v.clone()),
            _ => None,
        };
        record.is_some_and(|r| r["token"] == cell.token.0.as_str() && r["cell"] == cell.id.as_str())
    });
    match outcome {
        None => (false, "not run".into()),
        Some(o) if o.status == "skipped" => (false, format!("not run: {}", o.message)),
        Some(o) if o.status != "ok" => {
            let message = if o.message.is_empty() {
                o.kind.clone()
            } else {
                o.message.clone()
            };
            (false, message)
        }
        Some(_) if reported => (true, "passed".into()),
        Some(_) => (
            false,
            "no result reported: the check's own report line did not run".into(),
        ),
    }
}

/// Scores an executed grading notebook.
pub fn score(
    assignment: &Assignment,
    submission: &str,
    grading: &Grading,
    executed: &Value,
    outcomes: &[CellOutcome],
) -> Report {
    let by_cell: HashMap<usize, &CellOutcome> = outcomes.iter().map(|o| (o.cell, o)).collect();
    let mut tasks: Vec<TaskResult> = assignment
        .tasks()
        .into_iter()
        .map(|t| TaskResult {
            id: t.id,
            points: 0,
            max: t.max,
            passed: true,
            message: "passed".into(),
            seconds: 0.0,
        })
        .collect();
    let mut checks = Vec::new();
    for cell in &grading.graded {
        let outcome = by_cell.get(&cell.index).copied();
        let (passed, message) = graded_cell_result(cell, executed, outcome);
        checks.push(CheckResult {
            cell: cell.index,
            id: cell.id.clone(),
            task: cell.task.clone(),
            hidden: cell.hidden,
            points: if passed { cell.points } else { 0 },
            max: cell.points,
            message: message.clone(),
        });
        let task = tasks
            .iter_mut()
            .find(|t| t.id == cell.task)
            .expect("tasks come from the same cells");
        task.seconds += outcome.map_or(0.0, |o| o.seconds);
        if passed {
            task.points += cell.points;
        } else if task.passed {
            task.passed = false;
            let kind = if cell.hidden { "hidden check" } else { "check" };
            task.message = format!("{kind} in cell {}: {message}", cell.index + 1);
        }
    }
    for t in &mut tasks {
        t.seconds = (t.seconds * 100.0).round() / 100.0;
    }
    Report {
        submission: submission.into(),
        total: tasks.iter().map(|t| t.points).sum(),
        max: tasks.iter().map(|t| t.max).sum(),
        tasks,
        checks,
        notes: grading.notes.clone(),
        seconds: 0.0,
    }
}

/// The executed notebook with each graded cell's result in a markdown cell beside it and a
/// summary at the top: what `feedback.html` shows.
pub fn feedback_notebook(executed: &Value, grading: &Grading, report: &Report) -> Value {
    // The graded cells' report lines are the grader's, not the assignment's: not shown.
    let mut nb = executed.clone();
    let cells = nb["cells"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut summary = format!(
        "# Feedback: {}\n\n**Score: {} / {}**\n\n| task | points | result |\n|---|---|---|\n",
        report.submission, report.total, report.max
    );
    for t in &report.tasks {
        summary.push_str(&format!(
            "| {} | {} / {} | {} |\n",
            t.id,
            t.points,
            t.max,
            t.message.replace('|', "\\|").replace('\n', " ")
        ));
    }
    for note in &report.notes {
        summary.push_str(&format!("\n- {note}"));
    }
    out.push(markdown_cell("sgm-feedback-summary", &summary));
    for (index, cell) in cells.into_iter().enumerate() {
        let graded = grading.graded.iter().find(|g| g.index == index);
        let mut cell = cell;
        if graded.is_some() {
            let text = source_of(&cell);
            let shown = text
                .rsplit_once('\n')
                .map_or(text.as_str(), |(head, _)| head);
            let shown = shown.to_string();
            set_source(&mut cell, &shown);
            if let Some(outputs) = cell["outputs"].as_array_mut() {
                outputs.retain(|o| o["data"].get(GRADE_MIME).is_none());
            }
        }
        out.push(cell);
        if let Some(check) = graded.and_then(|g| report.checks.iter().find(|c| c.id == g.id)) {
            let kind = if check.hidden {
                "hidden check"
            } else {
                "check"
            };
            let mark = if check.points == check.max {
                "✅"
            } else {
                "❌"
            };
            let text = format!(
                "> **{}** ({kind}): {mark} {} / {} — {}",
                check.task, check.points, check.max, check.message
            );
            out.push(markdown_cell(&format!("sgm-feedback-{}", check.id), &text));
        }
    }
    nb["cells"] = Value::Array(out);
    nb
}

fn markdown_cell(id: &str, text: &str) -> Value {
    let mut cell = json!({"cell_type": "markdown", "id": id, "metadata": {}, "source": []});
    set_source(&mut cell, text);
    cell
}

/// `grades.csv`: one row per submission, one column per task, then the total.
pub fn grades_csv(tasks: &[TaskMax], reports: &[Report]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("submission");
    for t in tasks {
        out.push_str(&format!(",{}", quote(&t.id)));
    }
    out.push_str(",total,max\n");
    for r in reports {
        out.push_str(&quote(&r.submission));
        for t in tasks {
            let points = r
                .tasks
                .iter()
                .find(|x| x.id == t.id)
                .map_or(0, |x| x.points);
            out.push_str(&format!(",{points}"));
        }
        out.push_str(&format!(",{},{}\n", r.total, r.max));
    }
    out
}
