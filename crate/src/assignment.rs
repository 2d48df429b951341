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
//! - **Answers graded by hand.** An answer cell (code or markdown) with metadata
//!   `{"sgm": {"grade": "<task id>", "points": n, "manual": true}}` is worth `n` points given
//!   by the instructor: its task is *pending* in the report until a row of `manual.csv`
//!   ([`ManualScore`]) gives them. A task is graded by checks or by hand, not both.
//! - Cells are matched between source, release and submission by their nbformat `id`.
//! - The first code cell is [`FIRST_CELL`]; no other cell may hold an evcxr command (a line
//!   starting with `:`, or with `!`, which evcxr runs as a shell command), so an answer cannot add
//!   dependencies (such as the toolkit itself, whose `losses` would be the solution).
//! - An answer cell may not reach files, the environment, processes or raw memory
//!   ([`FindingKind::OutOfReach`], the rule of `assignment/reach.rs`): a check's secret is in
//!   its code, which evcxr writes to a file and runs in the process that runs the answers.

mod declared;
mod names;
mod reach;

pub use declared::Declaration;

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

/// What an answer uses that `reach` refuses (`out`, not empty), and why, in the words a
/// student reads: "uses …, which answers may not use (…)".
fn out_of_reach_text(out: &[String]) -> String {
    format!(
        "uses {}, which answers may not use (code that reaches files, the environment, \
         processes or raw memory could read a check's secret and report its pass itself)",
        out.join(", ")
    )
}

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
    /// An answer worth `points` towards task `task`, given by hand ([`ManualScore`]).
    Manual {
        /// Task id, e.g. `task1.problem1.derivation`.
        task: String,
        /// Points of this answer.
        points: u32,
    },
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

impl Role {
    /// Whether the cell is taken from the submission (it holds a solution region).
    pub fn is_answer(&self) -> bool {
        matches!(self, Role::Answer | Role::Manual { .. })
    }

    /// The task the cell earns points for, its points, and whether they are given by hand.
    pub fn task(&self) -> Option<(&str, u32, bool)> {
        match self {
            Role::Graded { task, points, .. } => Some((task, *points, false)),
            Role::Manual { task, points } => Some((task, *points, true)),
            _ => None,
        }
    }
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
    /// Whether its points are given by hand ([`Role::Manual`]) rather than by checks.
    pub manual: bool,
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

/// The answer cell graded: the cell as released with the student's text (`theirs`, which
/// has the released cell's type) and, in markdown, their attachments (pasted images) where they
/// are well formed. Nothing else of theirs (metadata such as tags, an `sgm` grade of their own
/// or hidden inputs; outputs; fields nbformat does not know) reaches grading or the feedback,
/// and a source that is not text (a list holding numbers) is read as the text it holds.
fn answer_of(released: Value, theirs: &Value) -> Value {
    let mut cell = released;
    set_source(&mut cell, &source_of(theirs));
    let well_formed = |data: &Value| {
        data.as_object()
            .is_some_and(|d| !d.is_empty() && d.values().all(Value::is_string))
    };
    if cell["cell_type"] == "markdown" {
        if let Some(attachments) = theirs["attachments"].as_object() {
            let kept: Map<String, Value> = attachments
                .iter()
                .filter(|(_, data)| well_formed(data))
                .map(|(name, data)| (name.clone(), data.clone()))
                .collect();
            if !kept.is_empty() {
                cell["attachments"] = Value::Object(kept);
            }
        }
    }
    cell
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
    parse_notebook(path, &text)
}

/// The largest submitted notebook [`read_submission`] reads unless told otherwise: 64 MiB,
/// outputs included (the executed notebooks of this project are 0.5 to 5 MB).
pub const SUBMISSION_LIMIT: u64 = 64 << 20;

/// Reads a submitted notebook, an untrusted file, as [`read_notebook`] does, but only a
/// regular file (through a link too) of at most `limit` bytes: a FIFO or a device (a link to
/// `/dev/zero`) would never end, and a file of gigabytes would take the grader's memory. A
/// FIFO is opened without waiting for a writer, and the size is that of the file opened, read
/// no further than `limit`.
pub fn read_submission(path: &Path, limit: u64) -> Result<Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| Error::Notebook {
        path: path.display().to_string(),
        cell: "(file)".into(),
        why,
    };
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a folder, a FIFO or a device): only a notebook file is graded"
                .into(),
        ));
    }
    let size = |bytes: u64| match bytes {
        0..=1023 => format!("{bytes} bytes"),
        1024..=1048575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1048576.0),
    };
    let too_large = |bytes: u64| {
        refuse(format!(
            "{}, past the grader's limit of {} on a submitted notebook (outputs included): clear \
             the outputs (Edit > Clear Outputs of All Cells), save and submit again",
            size(bytes),
            size(limit)
        ))
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        refuse(format!(
            "not a notebook: not UTF-8 text (at byte offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse_notebook(path, &text)
}

/// A notebook's JSON from its text (`path` names it in errors).
fn parse_notebook(path: &Path, text: &str) -> Result<Value> {
    let nb: Value = serde_json::from_str(text).map_err(|e| Error::Notebook {
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

/// A cell's text as compared between copies: `\n` line ends, no trailing blanks on a line,
/// no blank lines around it (what re-saving a notebook elsewhere may change).
fn normalized(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim().to_string()
}

/// The first non-blank line of `text` that is not a `//` comment or an attribute (or else the
/// first non-blank one), trimmed, cut to 60 characters (with `…`).
fn first_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines
        .clone()
        .find(|l| !l.starts_with("//") && !l.starts_with("#["))
        .or_else(|| lines.next())
        .unwrap_or("");
    match line.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// The first cell of `nb` whose id is `id`.
fn cell_with_id<'a>(nb: &'a Value, id: &str) -> Option<&'a Value> {
    nb["cells"].as_array()?.iter().find(|c| c["id"] == id)
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
    text.lines().any(|l| {
        // evcxr runs a line that starts with `!` (not after blanks) as a shell command;
        // `extern crate x;` makes it add the dependency `x`, as `:dep` would.
        let trimmed = l.trim_start();
        l.starts_with('!') || trimmed.starts_with(':') || trimmed.starts_with("extern crate ")
    })
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
            let id_chars = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if id.is_empty() || id.len() > 51 || !id.chars().all(id_chars) {
                return Err(bad(
                    name,
                    "a cell id must be 1 to 51 letters, digits, - or _ (nbformat allows 64; \
                     the feedback's cell after it adds 13)"
                        .into(),
                ));
            }
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
                        "only the first cell may hold evcxr commands (lines starting with ':' or '!')"
                            .into(),
                    ));
                } else if !found.is_empty() {
                    let out = reach::out_of_reach(&text);
                    if !out.is_empty() {
                        return Err(bad(
                            name,
                            format!(
                                "an answer cell {}, so students could not write it either",
                                out_of_reach_text(&out)
                            ),
                        ));
                    }
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
                    let hidden = meta.get("hidden").and_then(Value::as_bool).unwrap_or(false);
                    if meta.get("manual").and_then(Value::as_bool).unwrap_or(false) {
                        if found.is_empty() {
                            return Err(bad(
                                name,
                                "an answer graded by hand (sgm.manual) needs a solution region"
                                    .into(),
                            ));
                        }
                        if hidden {
                            return Err(bad(
                                name,
                                "an answer graded by hand (sgm.manual) cannot be hidden".into(),
                            ));
                        }
                        Role::Manual { task, points }
                    } else {
                        if cell_type != "code" {
                            return Err(bad(name, "a graded cell must be a code cell".into()));
                        }
                        if !found.is_empty() {
                            return Err(bad(
                                name,
                                "a graded cell cannot hold a solution region (an answer graded by hand has sgm.manual: true)".into(),
                            ));
                        }
                        Role::Graded {
                            task,
                            points,
                            hidden,
                        }
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
        // A task is graded by its checks or by hand: its points come from one place.
        let mut manual: HashMap<&str, bool> = HashMap::new();
        for c in &cells {
            let Some((task, _, by_hand)) = c.role.task() else {
                continue;
            };
            if *manual.entry(task).or_insert(by_hand) != by_hand {
                return Err(bad(
                    cell_name(c.index, &c.id),
                    format!("task {task} has both checks and answers graded by hand (sgm.manual)"),
                ));
            }
        }
        let assignment = Assignment {
            path: path.to_path_buf(),
            notebook,
            cells,
        };
        assignment
            .check_declarations()
            .map_err(|(cell, why)| bad(cell, why))?;
        Ok(assignment)
    }

    /// The source's side of the rule of `assignment/declared.rs`, for each answer code cell:
    /// its stub and its solution are Rust the grader reads; every variable the cells after it
    /// read has a type written where it is bound (by the stub, or by the solution where the
    /// stub leaves it to the student); the solution keeps what the cell declares
    /// ([`ReleasedCell::declares`]: students must, so it is an answer they could write). The
    /// cell's name and why, where one is broken.
    fn check_declarations(&self) -> std::result::Result<(), (String, String)> {
        let released = self.released_cells(true);
        for info in &self.cells {
            if !(info.role.is_answer() && info.cell_type == "code") {
                continue;
            }
            let name = cell_name(info.index, &info.id);
            let stub = source_of(&self.released_cell(info));
            let solution = source_of(self.raw_cell(info.index));
            if names::parse(&stub).is_none() || names::parse(&solution).is_none() {
                return Err((
                    name,
                    "its solution or its released stub is not Rust the grader can read".into(),
                ));
            }
            let expected = released
                .iter()
                .find(|(index, _)| *index == info.index)
                .map(|(_, c)| c)
                .expect("every cell is released");
            let bare = |n: &str| format!("`{}`", n.split_once(':').map_or(n, |(_, b)| b));
            // A variable the cells after it read, bound without a type: by the stub, or by
            // the solution where the stub leaves it to the student.
            let untyped: Vec<String> = declared::untyped_variables(&stub)
                .into_iter()
                .filter(|n| expected.reserved.contains(n))
                .chain({
                    let extra = beyond_stub(&expected.defines, &stub);
                    declared::untyped_variables(&solution)
                        .into_iter()
                        .filter(move |n| extra.contains(n))
                })
                .map(|n| bare(&n))
                .collect();
            if !untyped.is_empty() {
                return Err((
                    name,
                    format!(
                    "it binds {} without a type, which the cells after it read: write the type \
                     (`let x: f64 = …`), or an answer could bind a type of its own there",
                    untyped.join(", ")
                ),
                ));
            }
            let changed = declared::changed(&solution, &expected.declares);
            if !changed.is_empty() {
                return Err((name, format!(
                    "its solution {}: an answer keeps its stub's declarations, so the solution must too",
                    changed.join("; ")
                )));
            }
        }
        Ok(())
    }

    fn raw_cell(&self, index: usize) -> &Value {
        &self.notebook["cells"][index]
    }

    /// Whether this is an instructor's source rather than a release (or a student's copy of
    /// one): it holds solution regions or hidden checks, which [`Assignment::release`] removes.
    pub fn holds_solutions(&self) -> bool {
        self.cells.iter().any(|c| {
            let text = source_of(self.raw_cell(c.index));
            matches!(c.role, Role::Answer | Role::Graded { hidden: true, .. })
                || text.contains(CODE_BEGIN)
                || text.contains(MD_BEGIN)
        })
    }

    /// The tasks in order of first appearance, with their maximum points.
    pub fn tasks(&self) -> Vec<TaskMax> {
        let mut tasks: Vec<TaskMax> = Vec::new();
        for c in &self.cells {
            let Some((task, points, manual)) = c.role.task() else {
                continue;
            };
            match tasks.iter_mut().find(|t| t.id == task) {
                Some(t) => t.max += points,
                None => tasks.push(TaskMax {
                    id: task.to_string(),
                    max: points,
                    manual,
                }),
            }
        }
        tasks
    }

    /// The tasks whose points are given by hand ([`Role::Manual`]), in the notebook's order.
    pub fn tasks_by_hand(&self) -> Vec<TaskMax> {
        self.tasks().into_iter().filter(|t| t.manual).collect()
    }

    /// The answer cells of `task` graded by hand, in the notebook's order.
    fn manual_cells<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a CellInfo> + 'a {
        self.cells
            .iter()
            .filter(move |c| matches!(&c.role, Role::Manual { task: t, .. } if t == task))
    }

    /// For each task graded by hand, its last answer cell (index, id, task): the feedback
    /// shows the task's result after it.
    pub fn manual_result_cells(&self) -> Vec<(usize, String, String)> {
        let mut last: Vec<(usize, String, String)> = Vec::new();
        for c in &self.cells {
            if let Role::Manual { task, .. } = &c.role {
                last.retain(|(_, _, t)| t != task);
                last.push((c.index, c.id.clone(), task.clone()));
            }
        }
        last
    }

    /// A cell as released: solutions replaced by their stubs, outputs cleared.
    fn released_cell(&self, info: &CellInfo) -> Value {
        let mut cell = self.raw_cell(info.index).clone();
        if info.role.is_answer() {
            let text = strip_solutions(&source_of(&cell), info.cell_type == "markdown")
                .expect("checked by Assignment::read");
            set_source(&mut cell, &text);
        }
        clear_outputs(&mut cell);
        cell
    }

    /// The student version: hidden checks removed, solution regions replaced, outputs cleared;
    /// its metadata `sgm.cells` lists what it hands out ([`ReleasedCell`]), which
    /// [`validate`] reads from a student's copy.
    pub fn release(&self) -> Value {
        let mut nb = self.notebook.clone();
        nb["cells"] = Value::Array(
            self.cells
                .iter()
                .filter(|c| !matches!(c.role, Role::Graded { hidden: true, .. }))
                .map(|c| self.released_cell(c))
                .collect(),
        );
        let listed: Vec<ReleasedCell> = self
            .released_cells(false)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        if !nb["metadata"].is_object() {
            nb["metadata"] = json!({});
        }
        nb["metadata"]["sgm"] = json!({ "cells": listed });
        nb
    }

    /// Each cell as released ([`ReleasedCell`]) with its position: in the source (hidden
    /// checks included, as locked cells) when `hidden`, else in the release.
    fn released_cells(&self, hidden: bool) -> Vec<(usize, ReleasedCell)> {
        let cells: Vec<(&CellInfo, String)> = self
            .cells
            .iter()
            .filter(|c| hidden || !matches!(c.role, Role::Graded { hidden: true, .. }))
            .map(|info| (info, source_of(&self.released_cell(info))))
            .collect();
        // What each locked code cell reads from earlier cells, and binds for later ones.
        let locked: Vec<Option<(HashSet<String>, Vec<String>)>> = cells
            .iter()
            .map(|(info, text)| {
                (info.cell_type == "code" && !info.role.is_answer()).then(|| {
                    let binds = names::defined(text).map(|d| d.names).unwrap_or_default();
                    let mut reads = names::used(text);
                    reads.extend(names::pattern_bindings(text));
                    (reads, binds)
                })
            })
            .collect();
        // What the items of the locked code cells before each cell use (evcxr builds them
        // again with every cell).
        let mut before: Vec<HashSet<String>> = Vec::with_capacity(cells.len());
        let mut seen = HashSet::new();
        for (info, text) in &cells {
            before.push(seen.clone());
            if info.cell_type == "code" && !info.role.is_answer() {
                seen.extend(names::used_in_items(text));
            }
        }
        cells
            .iter()
            .enumerate()
            .map(|(k, (info, text))| {
                let code_answer = info.role.is_answer() && info.cell_type == "code";
                let (defines, reserved) = match code_answer {
                    true => {
                        // What the released stub defines and what of the solution's names
                        // the cells after it read: the names the checks expect of this cell,
                        // even where the stub leaves them to the student (`// BEGIN SOLUTION`
                        // around a whole `let`). The solution's other names are free anyway,
                        // and a release that listed them would hint at the solution (or, with
                        // the hidden checks' reads, at those checks).
                        let reserved = reserved_after(&before[k], &locked[k + 1..]);
                        let solution = source_of(self.raw_cell(info.index));
                        let mut defines: Vec<String> =
                            names::defined(text).map(|d| d.names).unwrap_or_default();
                        defines.extend(
                            names::defined(&solution)
                                .map(|d| d.names)
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|n| reserved.contains(n)),
                        );
                        defines.sort();
                        defines.dedup();
                        (defines, reserved)
                    }
                    false => (Vec::new(), Vec::new()),
                };
                let declares = match code_answer {
                    true => {
                        let solution = source_of(self.raw_cell(info.index));
                        let extra = beyond_stub(&defines, text);
                        declared::declarations_for(text, &solution, &extra).unwrap_or_default()
                    }
                    false => Vec::new(),
                };
                let released = ReleasedCell {
                    id: info.id.clone(),
                    cell_type: info.cell_type.clone(),
                    answer: info.role.is_answer(),
                    digest: text_digest(text),
                    first: first_line(text),
                    defines,
                    reserved,
                    declares,
                };
                (if hidden { info.index } else { k }, released)
            })
            .collect()
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
                role if role.is_answer() => solution_lines(&text, c.cell_type == "markdown"),
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
        let findings = check_submission(&self.released_cells(true), submission);
        // Unanswered cells cost their checks' points, which say so.
        let notes = findings
            .iter()
            .filter(|f| f.kind != FindingKind::Unanswered)
            .map(|f| f.text.clone())
            .collect();
        let mut cells = Vec::new();
        let mut graded = Vec::new();
        for info in &self.cells {
            let stub = findings.iter().any(|f| {
                f.id == info.id
                    && matches!(
                        f.kind,
                        FindingKind::Missing
                            | FindingKind::Command
                            | FindingKind::Reserved
                            | FindingKind::OutOfReach
                            | FindingKind::Declaration
                    )
            });
            let mut cell = match theirs.get(info.id.as_str()) {
                _ if !info.role.is_answer() => self.raw_cell(info.index).clone(),
                Some(c) if !stub => answer_of(self.released_cell(info), c),
                _ => self.released_cell(info),
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

/// One cell as a release hands it out, listed in the release's metadata (`sgm.cells`) so that
/// a student's copy says what it should hold whatever cells they delete or change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReleasedCell {
    /// The nbformat cell id.
    pub id: String,
    /// `code` or `markdown` (or `raw`).
    pub cell_type: String,
    /// Whether it is an answer cell (taken from the submission at grading).
    pub answer: bool,
    /// The [`text_digest`] of its released text.
    pub digest: String,
    /// Its first non-blank line as released (at most 60 characters): how a student finds it,
    /// JupyterLab showing neither cell numbers nor ids.
    #[serde(default)]
    pub first: String,
    /// For an answer code cell, the names its released text defines (functions, types,
    /// variables) and those of the solution's that the cells after it read: the student's to
    /// write, though the assignment's cells use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defines: Vec<String>,
    /// For an answer code cell, the names it may not define beyond [`defines`](Self::defines):
    /// what the locked code cells after it read from earlier cells (a later check's `check`,
    /// `ensure`, `Tensor`, a variable a given cell made), and the crates a cell can name. An
    /// answer that defined one would replace it for them ([`FindingKind::Reserved`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<String>,
    /// For an answer code cell, what its released stub declares, with the types: an answer
    /// that declares one of these names otherwise could make a check's comparison hold
    /// ([`FindingKind::Declaration`], the rule of `assignment/declared.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declares: Vec<Declaration>,
}

/// Of an answer cell's `defines` ([`ReleasedCell::defines`]), those its `stub` does not define:
/// the solution's names the cells after it read, which the stub leaves to the student.
fn beyond_stub(defines: &[String], stub: &str) -> Vec<String> {
    let stub_names = names::defined(stub).map(|d| d.names).unwrap_or_default();
    defines
        .iter()
        .filter(|n| !stub_names.contains(n))
        .cloned()
        .collect()
}

/// What grading leaves out of a submission, or takes as it was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// An answer cell missing, or of another type: its stub runs.
    Missing,
    /// An answer cell with an evcxr command: its stub runs.
    Command,
    /// An answer cell that defines a name the assignment's own cells use (and its released
    /// text does not define), or imports everything of a module of its own: it would replace
    /// what the checks after it call. Its stub runs.
    Reserved,
    /// An answer cell that uses what answers may not: files, the environment, processes, raw
    /// memory, `unsafe`, macros that read files (the rule of `assignment/reach.rs`). Such code
    /// could read a check's secret while the check runs and report its pass itself. Its stub
    /// runs.
    OutOfReach,
    /// An answer cell that declares a name of its stub with other types (`fn f(f64) -> Fake`
    /// where the stub has `-> f64`, `let EPOCHS = …;` where it has `let EPOCHS: usize`), the
    /// rule of `assignment/declared.rs`: a type of its own could make a check's comparison hold.
    /// Its stub runs.
    Declaration,
    /// An answer cell as released (not answered yet).
    Unanswered,
    /// A locked cell edited: the assignment's own copy is used.
    Edited,
    /// A cell not in the assignment: left out.
    Added,
    /// A cell whose id a later cell has too: left out (the last is taken).
    Duplicate,
}

/// One [`FindingKind`] about one cell, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The cell's id.
    pub id: String,
    /// What was found.
    pub kind: FindingKind,
    /// The sentence a report or `sgm validate` shows, naming the cell.
    pub text: String,
}

/// The names an answer cell may not define, from the locked code cells after it (each as
/// what it reads from earlier cells and what it binds at its top level): every name one of them
/// reads before a locked cell binds it again (what the answer defined would be what it reads;
/// a method is never bound again);
/// what the items of the locked cells `before` it use; and the crates a cell can name. Sorted.
fn reserved_after(
    before: &HashSet<String>,
    later: &[Option<(HashSet<String>, Vec<String>)>],
) -> Vec<String> {
    let mut reserved: HashSet<String> = names::EXTERN_CRATES
        .iter()
        .map(|c| format!("type:{c}"))
        .chain(before.iter().cloned())
        .collect();
    let mut rebound: HashSet<&str> = HashSet::new();
    for (reads, binds) in later.iter().flatten() {
        reserved.extend(
            reads
                .iter()
                .filter(|n| !rebound.contains(n.as_str()))
                .cloned(),
        );
        // A method a locked cell defines replaces no other: an `impl` applies to the whole
        // crate, and an answer's trait method can still come first.
        rebound.extend(
            binds
                .iter()
                .map(String::as_str)
                .filter(|n| !n.starts_with("method:")),
        );
    }
    let mut reserved: Vec<String> = reserved.into_iter().collect();
    reserved.sort();
    reserved
}

/// Why an answer's `text` may not be graded as it is: the `reserved` names it defines that its
/// released text does not (`allowed`), or what makes it unfit whatever its names (a glob import
/// of a module of its own, a module that exports macros); `None` when there is nothing. An
/// answer that does not parse (evcxr's own lines, `:` commands, `!` shell lines and `#![…]`,
/// blanked first) runs as it is: it defines nothing, since the kernel cannot compile it either,
/// and the student sees the compiler's error.
fn replaces_reserved(text: &str, allowed: &[String], reserved: &[String]) -> Option<String> {
    let defined = names::defined(text)?;
    let taken: Vec<String> = defined
        .names
        .iter()
        .filter(|n| reserved.contains(*n) && !allowed.contains(n))
        .map(|n| match n.split_once(':') {
            Some(("value", name)) => format!("`{name}`"),
            Some(("type", name)) => format!("the type or module `{name}`"),
            Some(("macro", name)) => format!("the macro `{name}!`"),
            Some(("method", name)) => format!("the method `.{name}()`"),
            Some(("pattern", name)) => format!(
                "the constant, static, struct or import `{name}` (a later cell's `let {name}` would then not compile)"
            ),
            _ => format!("`{n}`"),
        })
        .collect();
    let mut why = Vec::new();
    if !taken.is_empty() {
        why.push(format!(
            "defines {}, which the assignment's own cells after it use",
            taken.join(", ")
        ));
    }
    for unfit in &defined.unfit {
        why.push(format!(
            "holds {unfit}, which could replace names the assignment's own cells use"
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// What grading will make of `submission`, cell by cell, against `expected` (each released
/// cell with its position): answer cells missing, of another type, holding an evcxr command,
/// reaching what answers may not ([`FindingKind::OutOfReach`]), defining a name the cells after
/// them read ([`ReleasedCell::reserved`]) that their released text does not define, or as
/// released; locked cells edited (a missing one is simply put back); non-blank cells not in the
/// assignment; cells whose id a later cell repeats (the last
/// of them is graded). Texts are compared with `\n` line ends, without trailing blanks on a
/// line or blank lines around them.
pub fn check_submission(expected: &[(usize, ReleasedCell)], submission: &Value) -> Vec<Finding> {
    let cells: &[Value] = submission["cells"].as_array().map_or(&[], Vec::as_slice);
    let id_of = |c: &Value| c["id"].as_str().unwrap_or("").to_string();
    if !cells.is_empty() && cells.iter().all(|c| id_of(c).is_empty()) {
        return vec![Finding {
            id: String::new(),
            kind: FindingKind::Missing,
            text: "none of the submission's cells has an id (a notebook saved as nbformat 4.4 or older), so none \
                   matches the assignment's and every answer's released stub runs: start again from the release"
                .into(),
        }];
    }
    // The last of cells that share an id is the one grading takes.
    let mut last: HashMap<String, usize> = HashMap::new();
    for (k, c) in cells.iter().enumerate() {
        last.insert(id_of(c), k);
    }
    let mut findings = Vec::new();
    let mut found = |e: &ReleasedCell, kind, text: String| {
        findings.push(Finding {
            id: e.id.clone(),
            kind,
            text,
        })
    };
    for (index, e) in expected {
        let name = if e.first.is_empty() {
            cell_name(*index, &e.id)
        } else {
            format!("cell {} (id {}: {:?})", index + 1, e.id, e.first)
        };
        let theirs = last.get(&e.id).map(|&k| &cells[k]);
        let same_type = theirs.is_some_and(|c| c["cell_type"] == e.cell_type.as_str());
        let text = theirs.map(source_of).unwrap_or_default();
        let as_released = text_digest(&text) == e.digest;
        match (e.answer, theirs) {
            (true, Some(_)) if !same_type => found(e, FindingKind::Missing, format!(
                "{name}: changed from a {} cell in the submission; the released stub runs instead",
                e.cell_type
            )),
            (true, None) => found(e, FindingKind::Missing, format!(
                "{name}: missing from the submission; the released stub runs instead"
            )),
            (true, _) if e.cell_type == "code" && has_evcxr_command(&text) => found(e, FindingKind::Command, format!(
                "{name}: evcxr commands (lines starting with ':' or '!', and `extern crate`) are not allowed in answers; the released stub runs instead"
            )),
            (true, _) if e.cell_type == "code" && !as_released => {
                let out = reach::out_of_reach(&text);
                let names = replaces_reserved(&text, &e.defines, &e.reserved);
                let mut why = Vec::new();
                if !out.is_empty() {
                    why.push(out_of_reach_text(&out));
                }
                if let Some(names) = &names {
                    why.push(format!("{names}; it would change what they run"));
                }
                let changed = declared::changed(&text, &e.declares);
                if !changed.is_empty() {
                    why.push(format!(
                        "{}, and the checks rely on the stub's types (keep its declarations as released)",
                        changed.join("; ")
                    ));
                }
                if !why.is_empty() {
                    let (kind, rename) = if !out.is_empty() {
                        (FindingKind::OutOfReach, "")
                    } else if names.is_some() {
                        (FindingKind::Reserved, " (rename yours)")
                    } else {
                        (FindingKind::Declaration, "")
                    };
                    found(e, kind, format!(
                        "{name}: {}; so the released stub runs instead{rename}",
                        why.join("; and it ")
                    ));
                }
            }
            (true, _) if as_released => found(e, FindingKind::Unanswered, format!(
                "{name}: not answered yet (as released)"
            )),
            (false, Some(_)) if !as_released => found(e, FindingKind::Edited, format!(
                "{name}: a locked cell that differs from the assignment's; the assignment's own copy is used (answers belong in the answer cells)"
            )),
            _ => {}
        }
    }
    let known: HashMap<&str, bool> = expected
        .iter()
        .map(|(_, e)| (e.id.as_str(), e.answer))
        .collect();
    for (k, c) in cells.iter().enumerate() {
        let id = id_of(c);
        let named = if id.is_empty() {
            format!("cell {} of the submission (no id)", k + 1)
        } else {
            format!("cell {} of the submission (id {id})", k + 1)
        };
        let answer = known.get(id.as_str()).copied();
        if answer.is_none() || id.is_empty() {
            if !normalized(&source_of(c)).is_empty() {
                findings.push(Finding {
                    id,
                    kind: FindingKind::Added,
                    text: format!(
                        "{named} is not in the assignment and is left out: only the assignment's cells are graded (answers belong in its answer cells)"
                    ),
                });
            }
        } else if last[&id] != k {
            let graded = if answer == Some(true) {
                "the later one is graded"
            } else {
                "the assignment's own copy is used"
            };
            findings.push(Finding {
                id,
                kind: FindingKind::Duplicate,
                text: format!(
                    "{named} shares its id with a later cell; {graded}, and this one is left out"
                ),
            });
        }
    }
    findings
}

/// A student's copy of a release checked before it is submitted (`sgm validate`): what
/// [`check_submission`] finds against the cells its metadata lists ([`Assignment::release`]).
/// A notebook without that list is an error, which says so apart for an assignment's source
/// ([`Assignment::holds_solutions`]).
pub fn validate(path: &Path, notebook: &Value) -> Result<Vec<Finding>> {
    let listed = notebook["metadata"]["sgm"]["cells"].clone();
    let expected: Vec<ReleasedCell> = serde_json::from_value(listed).map_err(|e| {
        let why = if is_source(path, notebook) {
            "the assignment's source (it holds solutions or hidden checks), not a student's copy of its release: \
             validation checks copies of the release"
                .to_string()
        } else {
            format!(
                "not a copy of a homework release as `sgm release` writes it now (the list of its cells is missing or damaged: {e}); a copy of an older release: start from the current one"
            )
        };
        Error::Notebook {
            path: path.display().to_string(),
            cell: "metadata.sgm.cells".into(),
            why,
        }
    })?;
    let expected: Vec<(usize, ReleasedCell)> = expected.into_iter().enumerate().collect();
    Ok(check_submission(&expected, notebook))
}

/// Whether `notebook` is an assignment's source ([`Assignment::holds_solutions`]).
pub fn is_source(path: &Path, notebook: &Value) -> bool {
    Assignment::from_notebook(path, notebook.clone()).is_ok_and(|a| a.holds_solutions())
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
    /// Notes on the submission: answer cells missing or rejected, locked cells edited, cells
    /// added (all of which grading leaves out).
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
    /// Whether every check of the task passed (for a task graded by hand: full points given).
    pub passed: bool,
    /// "passed", or the first failing check's reason; for a task graded by hand, the
    /// instructor's comment.
    pub message: String,
    /// Seconds its checks ran.
    pub seconds: f64,
    /// A task graded by hand whose points are not given yet ([`apply_manual_scores`]).
    #[serde(default)]
    pub pending: bool,
    /// For a task graded by hand: the [`answer_digest`] of the answer graded (empty in
    /// reports from before digests were kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer: String,
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

/// Why a check that ran clean still does not pass: it reads a variable that the last cell
/// before it to bind it (`let`, at the top level) did not make. evcxr keeps a variable's older
/// value when a cell binding it again fails to compile (a constant brought by an answer's glob
/// import turns a locked cell's `let history = …` into an error, E0530), and a kernel restarted
/// after a crash or a time-out replays only the cells that succeeded; an answer that runs but no
/// longer binds a variable its source binds leaves the earlier one too. Either way the check read
/// a value that cell did not make (another task's, or nothing of the answer's run), so its pass
/// would say nothing about the answer. (A cell that fails as it runs, by `?` or a panic, loses its
/// variables and their older values, so a check reading one does not compile.) The message names
/// the variable and the cell; `None` where every variable the check reads was made by its last
/// binder.
fn stale_read(
    cells: &[BoundVariables],
    outcomes: &HashMap<usize, &CellOutcome>,
    check_text: &str,
    check: usize,
) -> Option<String> {
    // Each variable's last binder before the check.
    let mut binder: HashMap<&str, &BoundVariables> = HashMap::new();
    for cell in cells.iter().take_while(|c| c.index < check) {
        binder.extend(cell.binds.iter().map(|name| (name.as_str(), cell)));
    }
    let mut stale: Vec<(usize, String)> = names::used(check_text)
        .into_iter()
        .filter_map(|name| {
            let cell = *binder.get(name.as_str())?;
            let made = outcomes.get(&cell.index).is_some_and(|o| o.status == "ok")
                && cell.made.contains(&name);
            (!made).then_some((cell.index, name))
        })
        .collect();
    stale.sort();
    let (cell, name) = stale.into_iter().next()?;
    let name = name.trim_start_matches("value:");
    let why = match outcomes.get(&cell) {
        Some(o) if o.status == "ok" => {
            return Some(format!(
                "it reads `{name}`, which the assignment's cell {} binds and the answer there does not: the value read was an earlier cell's",
                cell + 1
            ))
        }
        Some(o) if !o.message.is_empty() => o.message.clone(),
        Some(o) => o.kind.clone(),
        None => "not run".into(),
    };
    Some(format!(
        "it reads `{name}`, which cell {} binds, but that cell failed ({why}): the value read was not made by it",
        cell + 1
    ))
}

/// What one code cell of a grading notebook binds, for [`stale_read`].
struct BoundVariables {
    /// The cell's index.
    index: usize,
    /// The variables it binds at the top level, as graded, and for an answer cell also as its
    /// source does (the checks after it read them from it).
    binds: HashSet<String>,
    /// What its graded text defines (a variable, or a constant or function of the same name:
    /// the check then reads that).
    made: HashSet<String>,
}

impl BoundVariables {
    /// Every code cell of `notebook` (the grading notebook of `assignment`), in order; each
    /// cell is parsed once per scoring.
    fn of(assignment: &Assignment, notebook: &Value) -> Vec<BoundVariables> {
        assignment
            .cells
            .iter()
            .filter(|c| c.cell_type == "code")
            .map(|info| {
                let graded = source_of(&notebook["cells"][info.index]);
                let mut binds = names::top_level_variables(&graded);
                if info.role.is_answer() {
                    binds.extend(names::top_level_variables(&source_of(
                        assignment.raw_cell(info.index),
                    )));
                }
                let made = names::defined(&graded)
                    .map_or(HashSet::new(), |d| d.names.into_iter().collect());
                BoundVariables {
                    index: info.index,
                    binds,
                    made,
                }
            })
            .collect()
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
            passed: !t.manual,
            message: if t.manual {
                PENDING.into()
            } else {
                "passed".into()
            },
            pending: t.manual,
            answer: if t.manual {
                answer_digest(assignment, &t.id, &grading.notebook)
            } else {
                String::new()
            },
            id: t.id,
            points: 0,
            max: t.max,
            seconds: 0.0,
        })
        .collect();
    let bound = BoundVariables::of(assignment, &grading.notebook);
    let mut checks = Vec::new();
    for cell in &grading.graded {
        let outcome = by_cell.get(&cell.index).copied();
        let (passed, message) = match graded_cell_result(cell, executed, outcome) {
            (true, passed) => {
                let text = source_of(&grading.notebook["cells"][cell.index]);
                stale_read(&bound, &by_cell, &text, cell.index)
                    .map_or((true, passed), |why| (false, why))
            }
            failed => failed,
        };
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

/// What the message of a task graded by hand says until its points are given.
pub const PENDING: &str = "awaiting grading by hand";
/// The columns of `manual.csv`, in order. A file may stop after `points` or `comment`.
pub const MANUAL_COLUMNS: [&str; 5] = ["submission", "task", "points", "comment", "answer"];
/// What [`answer_digest`] writes before the hex digits.
const DIGEST_PREFIX: &str = "sha256:";
/// How many hex digits of SHA-256 [`answer_digest`] keeps (64 bits: two versions of one
/// answer do not collide by chance).
const DIGEST_HEX: usize = 16;

/// One row of `manual.csv`: the points an instructor gives one submission's task graded by
/// hand ([`Role::Manual`]), and a comment its feedback shows. Columns [`MANUAL_COLUMNS`]; an
/// empty `points` leaves the task pending.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ManualScore {
    /// The submission's name (its report's folder).
    pub submission: String,
    /// Task id.
    pub task: String,
    /// Points given, from 0 to the task's most; `None` while pending.
    pub points: Option<u32>,
    /// What the feedback shows beside the points.
    pub comment: String,
    /// The [`answer_digest`] of the answer the points are for, written by `sgm grade`; empty
    /// in a row typed by hand (it is then taken as given for the answer graded now).
    pub answer: String,
}

/// A short digest of the answer `notebook` gives to `task` (graded by hand): SHA-256 of its
/// answer cells' sources in the source's order, each taken as its words (every run of blanks
/// and line ends is one space: re-saving a notebook on another system, re-wrapping a paragraph
/// or re-indenting code changes nothing; a changed word, sign or symbol does), a missing cell
/// counting as empty. A cell's attachments (a scanned derivation pasted as an image) count
/// too, where it has any, so that a new scan reopens the grade as new words do. Written
/// `sha256:` and 16 hex digits.
pub fn answer_digest(assignment: &Assignment, task: &str, notebook: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for info in assignment.manual_cells(task) {
        let cell = cell_with_id(notebook, &info.id);
        let text = cell.map(source_of).unwrap_or_default();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        // Each cell as its id, its length and its text: no two splits of one text agree.
        hash.update(format!("{}\n{}\n{}", info.id, text.len(), text));
        // serde_json's maps are sorted: one attachment set has one spelling.
        if let Some(attachments) = cell
            .and_then(|c| c["attachments"].as_object())
            .filter(|a| !a.is_empty())
        {
            let spelled = Value::Object(attachments.clone()).to_string();
            hash.update(format!("\nattachments {}\n{spelled}", spelled.len()));
        }
    }
    digest_text(hash)
}

/// The [`answer_digest`]-style digest of one text, taken with `\n` line ends, without trailing
/// blanks on a line or blank lines around it (what re-saving a notebook elsewhere may change).
pub fn text_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    digest_text(Sha256::new_with_prefix(normalized(text)))
}

fn digest_text(hash: sha2::Sha256) -> String {
    use sha2::Digest;
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{DIGEST_PREFIX}{}", &hex[..DIGEST_HEX])
}

/// Reads `manual.csv` (a missing file has no rows) and checks every row against `assignment`:
/// a task graded by hand, points a whole number from 0 to the task's most (or empty), one row
/// per submission and task. An error names the row and the value.
pub fn read_manual_scores(path: &Path, assignment: &Assignment) -> Result<Vec<ManualScore>> {
    let text = read_manual_text(path)?;
    parse_manual_scores(&text, path, assignment)
}

/// The text of `manual.csv` at `path`: empty where there is no file, or nothing but blanks
/// and a byte-order mark (such a file starts afresh, with its header).
pub fn read_manual_text(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim_start_matches('\u{feff}').trim().is_empty() => Ok(String::new()),
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// [`read_manual_scores`] of the text [`read_manual_text`] read (`path` names it in errors).
pub fn parse_manual_scores(
    text: &str,
    path: &Path,
    assignment: &Assignment,
) -> Result<Vec<ManualScore>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |row: String, why: String| Error::ManualScores {
        path: path.display().to_string(),
        row,
        why,
    };
    // Every field but the comment is read trimmed; the comment stays as typed, so that
    // rewriting the file keeps it.
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad("line 1".into(), e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.len() < 3
        || header.len() > MANUAL_COLUMNS.len()
        || header.iter().zip(MANUAL_COLUMNS).any(|(h, c)| h != c)
    {
        return Err(bad(
            "line 1".into(),
            format!(
                "the header is {:?}; expected {}",
                header.join(","),
                MANUAL_COLUMNS.join(",")
            ),
        ));
    }
    let tasks = assignment.tasks();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad("a row".into(), e.to_string()))?;
        // The line the record starts on, counted from its first byte: the reader's own count
        // lags by one after a CRLF line end (Excel's) or a blank line.
        let start = record.position().map_or(0, |p| p.byte() as usize);
        let start =
            start + text[start..].len() - text[start..].trim_start_matches(['\r', '\n']).len();
        let line = 1 + text[..start].matches('\n').count() as u64;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or("").trim().to_string();
        let comment = record.get(3).unwrap_or("").to_string();
        let (submission, task, points, answer) = (field(0), field(1), field(2), field(4));
        let row = format!("line {line} ({submission}, {task})");
        if record.len() > header.len() {
            return Err(bad(
                row,
                format!(
                    "{} fields; expected {} (quote a comment that holds commas)",
                    record.len(),
                    header.len()
                ),
            ));
        }
        if submission.is_empty() {
            return Err(bad(row, "no submission named".into()));
        }
        let max = match tasks.iter().find(|t| t.id == task) {
            None => return Err(bad(row, format!("task {task:?} is not in the assignment"))),
            Some(t) if !t.manual => {
                return Err(bad(
                    row,
                    format!("task {task} is graded by its checks, not by hand"),
                ))
            }
            Some(t) => t.max,
        };
        let points = if points.is_empty() {
            None
        } else {
            match points.parse::<u32>() {
                Ok(p) if p <= max => Some(p),
                _ => {
                    return Err(bad(
                        row,
                        format!(
                        "points {points:?}: expected a whole number from 0 to {max}, or nothing"
                    ),
                    ))
                }
            }
        };
        let answer = answer.to_ascii_lowercase();
        let digits = answer.strip_prefix(DIGEST_PREFIX).unwrap_or("");
        let digest = digits.len() == DIGEST_HEX && digits.bytes().all(|b| b.is_ascii_hexdigit());
        if !(answer.is_empty() || digest) {
            return Err(bad(
                row,
                format!(
                    "answer {answer:?}: expected the digest sgm grade wrote ({DIGEST_PREFIX} and {DIGEST_HEX} hex digits), or nothing"
                ),
            ));
        }
        if let Some(first) = seen.insert((submission.clone(), task.clone()), line) {
            return Err(bad(
                row,
                format!("a second row for this submission and task (the first is line {first})"),
            ));
        }
        rows.push(ManualScore {
            submission,
            task,
            points,
            comment,
            answer,
        });
    }
    Ok(rows)
}

/// `scores` as `manual.csv` rows, after the header when `header`.
pub fn manual_scores_csv(scores: &[ManualScore], header: bool) -> Result<String> {
    manual_rows_csv(scores, header, false)
}

/// The whole of `manual.csv` for `scores`, written as `like` (the file's text before) was: with
/// its byte-order mark and CRLF line ends where it had them (as Excel writes), so that the
/// spreadsheet that wrote it reads it back alike.
pub fn manual_file_text(scores: &[ManualScore], like: &str) -> Result<String> {
    let crlf = like
        .split_once('\n')
        .is_some_and(|(first, _)| first.ends_with('\r'));
    let bom = if like.starts_with('\u{feff}') {
        "\u{feff}"
    } else {
        ""
    };
    Ok(format!("{bom}{}", manual_rows_csv(scores, true, crlf)?))
}

fn manual_rows_csv(scores: &[ManualScore], header: bool, crlf: bool) -> Result<String> {
    let header = header.then(|| MANUAL_COLUMNS.map(String::from).to_vec());
    let rows = scores.iter().map(|s| {
        let points = s.points.map(|p| p.to_string()).unwrap_or_default();
        vec![
            s.submission.clone(),
            s.task.clone(),
            points,
            s.comment.clone(),
            s.answer.clone(),
        ]
    });
    csv_text("manual.csv", header.into_iter().chain(rows), crlf)
}

/// `records` as CSV text (RFC 4180 quoting), lines ending in CRLF where `crlf`; `file` names
/// the table in an error.
fn csv_text(
    file: &str,
    records: impl IntoIterator<Item = Vec<String>>,
    crlf: bool,
) -> Result<String> {
    let csv_err = |e: csv::Error| Error::Io {
        path: file.into(),
        source: std::io::Error::other(e.to_string()),
    };
    let terminator = if crlf {
        csv::Terminator::CRLF
    } else {
        csv::Terminator::Any(b'\n')
    };
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(terminator)
        .from_writer(Vec::new());
    for record in records {
        writer.write_record(&record).map_err(csv_err)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| csv_err(e.into_error().into()))?;
    Ok(String::from_utf8(bytes).expect("written from strings"))
}

/// "1 point", "2 points".
fn points_text(points: u32) -> String {
    if points == 1 {
        "1 point".into()
    } else {
        format!("{points} points")
    }
}

/// What [`manual_rows_for`] makes of `manual.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManualRows {
    /// Every row, in the file's order, then the new ones (by task, then by submission).
    pub rows: Vec<ManualScore>,
    /// Whether `rows` differ from the rows read (the file needs writing).
    pub changed: bool,
    /// One line per grade reopened because its answer changed.
    pub reopened: Vec<String>,
}

/// `scores` brought up to date with `reports` (one per graded submission), for each task
/// graded by hand:
/// - a submission without a row gets one without points, for the instructor to fill in;
/// - a row without a digest takes its report's [`answer_digest`] (the answer graded now);
/// - a row whose digest is not the report's (the submission was resubmitted and graded
///   again with another answer) is reopened: its points go into the comment (`earlier
///   answer: n points`), it takes the new digest and is pending again, so that no points
///   stand for an answer nobody read.
///
/// Rows for submissions without a report stay as they are.
pub fn manual_rows_for(
    assignment: &Assignment,
    reports: &[Report],
    scores: &[ManualScore],
) -> ManualRows {
    let mut rows = scores.to_vec();
    let mut reopened = Vec::new();
    for task in assignment.tasks_by_hand() {
        for report in reports {
            let answer = report
                .tasks
                .iter()
                .find(|t| t.id == task.id)
                .map_or("", |t| t.answer.as_str());
            match rows
                .iter_mut()
                .find(|s| s.submission == report.submission && s.task == task.id)
            {
                None => rows.push(ManualScore {
                    submission: report.submission.clone(),
                    task: task.id.clone(),
                    points: None,
                    comment: String::new(),
                    answer: answer.into(),
                }),
                Some(row) if answer.is_empty() || row.answer == answer => {}
                Some(row) if row.answer.is_empty() => row.answer = answer.into(),
                Some(row) => {
                    if let Some(points) = row.points.take() {
                        let earlier = format!("earlier answer: {}", points_text(points));
                        row.comment = if row.comment.trim().is_empty() {
                            earlier
                        } else {
                            format!("{earlier}; {}", row.comment.trim())
                        };
                        reopened.push(format!(
                            "{}, {}: the answer changed after it was given {}; pending again",
                            row.submission,
                            row.task,
                            points_text(points)
                        ));
                    }
                    row.answer = answer.into();
                }
            }
        }
    }
    ManualRows {
        changed: rows != scores,
        rows,
        reopened,
    }
}

/// Sets the tasks graded by hand of `report` from `scores` (read by [`read_manual_scores`]):
/// each is pending unless a row for this submission gives its points for the answer graded
/// (a row whose digest is another answer's gives none: see [`manual_rows_for`]); the total
/// follows. A comment shows only beside points. Applying the same rows again changes nothing.
pub fn apply_manual_scores(assignment: &Assignment, report: &mut Report, scores: &[ManualScore]) {
    for task in assignment.tasks_by_hand() {
        let position = match report.tasks.iter().position(|t| t.id == task.id) {
            Some(i) => i,
            None => {
                report.tasks.push(TaskResult {
                    id: task.id.clone(),
                    points: 0,
                    max: task.max,
                    passed: false,
                    message: String::new(),
                    seconds: 0.0,
                    pending: true,
                    answer: String::new(),
                });
                report.tasks.len() - 1
            }
        };
        let result = &mut report.tasks[position];
        let row = scores
            .iter()
            .find(|s| s.submission == report.submission && s.task == task.id);
        let stale = row.is_some_and(|s| {
            !s.answer.is_empty() && !result.answer.is_empty() && s.answer != result.answer
        });
        // (The file keeps the comment as typed; the feedback shows it without its outer blanks.)
        let comment = row.map_or("", |s| s.comment.trim());
        match row.and_then(|s| s.points) {
            Some(points) if stale => {
                result.points = 0;
                result.passed = false;
                result.pending = true;
                result.message = format!(
                    "{PENDING}: the answer changed after it was given {}",
                    points_text(points)
                );
            }
            Some(points) => {
                result.points = points;
                result.passed = points == task.max;
                result.pending = false;
                result.message = if comment.is_empty() {
                    "graded by hand".into()
                } else {
                    comment.to_string()
                };
            }
            None => {
                result.points = 0;
                result.passed = false;
                result.pending = true;
                // A comment shows with points only: notes on an answer not yet graded (or
                // reopened) are the instructor's.
                result.message = PENDING.into();
            }
        }
        result.max = task.max;
    }
    report.total = report.tasks.iter().map(|t| t.points).sum();
    report.max = report.tasks.iter().map(|t| t.max).sum();
}

/// Every submission's answer to `task` (graded by hand) on one page, for the instructor to
/// grade side by side: the source's own answer first, then for each `(report, executed
/// notebook)` its points (or pending) and comment, and its answer cells as they ran (an
/// executed notebook of `null`: none to show).
pub fn answers_notebook(assignment: &Assignment, task: &str, graded: &[(Report, Value)]) -> Value {
    let ids: Vec<&CellInfo> = assignment.manual_cells(task).collect();
    let max: u32 = assignment
        .tasks()
        .iter()
        .find(|t| t.id == task)
        .map_or(0, |t| t.max);
    let renamed = |cell: &Value, id: String| {
        let mut cell = cell.clone();
        cell["id"] = Value::String(id);
        cell
    };
    let mut cells = vec![markdown_cell(
        "answers-title",
        &format!(
            "# {task}: the answers, graded by hand ({max} points)\n\nGive the points in `manual.csv` \
             (`submission,task,points,comment,answer`; `answer` is the digest of the answer graded, \
             left as `sgm grade` wrote it), then run `sgm grade --rescore`.\n\n## The source's answer"
        ),
    )];
    for (j, info) in ids.iter().enumerate() {
        cells.push(renamed(
            assignment.raw_cell(info.index),
            format!("answers-source-{j}"),
        ));
    }
    for (k, (report, executed)) in graded.iter().enumerate() {
        let status = match report.tasks.iter().find(|t| t.id == task) {
            Some(t) if t.pending => format!("– / {max}, {}", t.message),
            Some(t) => format!("{} / {max}: {}", t.points, t.message),
            None => "not in this report".into(),
        };
        cells.push(markdown_cell(
            &format!("answers-{k}"),
            &format!("## {}\n\n**{status}**", report.submission),
        ));
        for (j, info) in ids.iter().enumerate() {
            cells.push(match cell_with_id(executed, &info.id) {
                Some(cell) => renamed(cell, format!("answers-{k}-{j}")),
                None => markdown_cell(
                    &format!("answers-{k}-{j}"),
                    &format!("*(cell {} not in the executed notebook)*", info.id),
                ),
            });
        }
    }
    json!({
        "cells": cells,
        "metadata": assignment.notebook["metadata"].clone(),
        "nbformat": 4,
        "nbformat_minor": 5,
    })
}

/// The feedback's summary: the score and each task's result.
fn summary_text(report: &Report) -> String {
    let pending: u32 = report
        .tasks
        .iter()
        .filter(|t| t.pending)
        .map(|t| t.max)
        .sum();
    let mut summary = format!(
        "# Feedback: {}\n\n**Score: {} / {}**",
        report.submission, report.total, report.max
    );
    if pending > 0 {
        summary.push_str(&format!(" ({pending} points still to be graded by hand)"));
    }
    summary.push_str("\n\n| task | points | result |\n|---|---|---|\n");
    for t in &report.tasks {
        let points = if t.pending {
            format!("– / {}", t.max)
        } else {
            format!("{} / {}", t.points, t.max)
        };
        summary.push_str(&format!(
            "| {} | {points} | {} |\n",
            t.id,
            escaped(&t.message)
        ));
    }
    for note in &report.notes {
        summary.push_str(&format!("\n- {}", escaped(note)));
    }
    summary
}

/// `text` (a message or a note, which a submission's output or its cell ids can shape) as
/// markdown that shows it as it is: no heading, table cell, link, image, emphasis, HTML or
/// formula of its own, its lines kept apart by `<br>` (a line break could otherwise start a
/// heading such as a forged score), in a span MathJax leaves alone (`\$` renders as a `$` that
/// it would read as math).
fn escaped(text: &str) -> String {
    let lines = text
        .lines()
        .map(|line| {
            let mut out = String::with_capacity(line.len());
            for c in line.chars() {
                if "\\`*_[]<>!|$#~".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        })
        .collect::<Vec<_>>()
        .join("<br>");
    format!("<span class=\"tex2jax_ignore\">{lines}</span>")
}

/// The feedback shown after the last answer of a task graded by hand.
fn manual_result_text(report: &Report, task: &str) -> String {
    match report.tasks.iter().find(|t| t.id == task) {
        Some(t) if t.pending => format!(
            "> **{task}** (graded by hand): ⏳ {} ({} points)",
            escaped(&t.message),
            t.max
        ),
        Some(t) => {
            let mark = if t.passed { "✅" } else { "❌" };
            format!(
                "> **{task}** (graded by hand): {mark} {} / {} — {}",
                t.points,
                t.max,
                escaped(&t.message)
            )
        }
        None => format!("> **{task}** (graded by hand): not in this report"),
    }
}

const SUMMARY_ID: &str = "sgm-feedback-summary";

/// The id of the feedback cell after source cell `id`.
fn feedback_id(id: &str) -> String {
    format!("sgm-feedback-{id}")
}

/// A feedback notebook ([`feedback_notebook`]) with its summary and the results of the tasks
/// graded by hand rewritten from `report` (after [`apply_manual_scores`]); the rest, the
/// executed cells and the checks' results, stays as graded.
pub fn refresh_feedback(assignment: &Assignment, feedback: &Value, report: &Report) -> Value {
    let mut nb = feedback.clone();
    let cells = nb["cells"].as_array().cloned().unwrap_or_default();
    let manual = assignment.manual_result_cells();
    let has = |id: &str| cells.iter().any(|c| c["id"] == id);
    let mut out = Vec::new();
    if !has(SUMMARY_ID) {
        out.push(markdown_cell(SUMMARY_ID, &summary_text(report)));
    }
    for mut cell in cells.iter().cloned() {
        let id = cell["id"].as_str().unwrap_or("").to_string();
        if id == SUMMARY_ID {
            set_source(&mut cell, &summary_text(report));
        } else if let Some((_, _, task)) = manual.iter().find(|(_, c, _)| feedback_id(c) == id) {
            set_source(&mut cell, &manual_result_text(report, task));
        }
        out.push(cell);
        // A feedback page written before the task was graded by hand gets its result cell.
        if let Some((_, c, task)) = manual.iter().find(|(_, c, _)| *c == id) {
            if !has(&feedback_id(c)) {
                out.push(markdown_cell(
                    &feedback_id(c),
                    &manual_result_text(report, task),
                ));
            }
        }
    }
    nb["cells"] = Value::Array(out);
    nb
}

/// The executed notebook with each graded cell's result in a markdown cell beside it (and
/// each task graded by hand after its last answer) and a summary at the top: what
/// `feedback.html` shows.
pub fn feedback_notebook(
    assignment: &Assignment,
    executed: &Value,
    grading: &Grading,
    report: &Report,
) -> Value {
    // The graded cells' report lines are the grader's, not the assignment's: not shown.
    let mut nb = executed.clone();
    let cells = nb["cells"].as_array().cloned().unwrap_or_default();
    let manual = assignment.manual_result_cells();
    let mut out = vec![markdown_cell(SUMMARY_ID, &summary_text(report))];
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
                check.task,
                check.points,
                check.max,
                escaped(&check.message)
            );
            out.push(markdown_cell(&feedback_id(&check.id), &text));
        }
        if let Some((_, id, task)) = manual.iter().find(|(i, _, _)| *i == index) {
            out.push(markdown_cell(
                &feedback_id(id),
                &manual_result_text(report, task),
            ));
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

/// `grades.csv`: one row per submission, one column per task (empty while a task graded by
/// hand is pending), then the total and the most.
pub fn grades_csv(tasks: &[TaskMax], reports: &[Report]) -> Result<String> {
    let mut header = vec!["submission".to_string()];
    header.extend(tasks.iter().map(|t| t.id.clone()));
    header.extend(["total".into(), "max".into()]);
    let rows = reports.iter().map(|r| {
        let mut row = vec![r.submission.clone()];
        for t in tasks {
            row.push(match r.tasks.iter().find(|x| x.id == t.id) {
                Some(x) if x.pending => String::new(),
                Some(x) => x.points.to_string(),
                None => "0".into(),
            });
        }
        row.extend([r.total.to_string(), r.max.to_string()]);
        row
    });
    csv_text("grades.csv", std::iter::once(header).chain(rows), false)
}

/// One task across the graded submissions ([`task_summaries`]): what `sgm grade` ends by
/// printing, so that a check nobody passes (a broken hidden check, a file missing at grading)
/// stands out before the grades go out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskSummary {
    /// Task id.
    pub id: String,
    /// Its most points.
    pub max: u32,
    /// Submissions with points for it (not pending).
    pub graded: usize,
    /// Submissions whose points for it are still to be given by hand.
    pub pending: usize,
    /// Of those graded, the ones with all its points.
    pub full: usize,
    /// Their mean points, to a hundredth; none where none is graded.
    pub mean: Option<f64>,
}

/// Each of `tasks` summed up over `reports` ([`TaskSummary`]); a task missing from a report
/// counts 0 points, as in [`grades_csv`].
pub fn task_summaries(tasks: &[TaskMax], reports: &[Report]) -> Vec<TaskSummary> {
    tasks
        .iter()
        .map(|t| {
            let found: Vec<Option<&TaskResult>> = reports
                .iter()
                .map(|r| r.tasks.iter().find(|x| x.id == t.id))
                .collect();
            let points: Vec<u32> = found
                .iter()
                .filter(|x| !x.is_some_and(|x| x.pending))
                .map(|x| x.map_or(0, |x| x.points))
                .collect();
            let sum: u32 = points.iter().sum();
            TaskSummary {
                id: t.id.clone(),
                max: t.max,
                graded: points.len(),
                pending: found.len() - points.len(),
                full: points.iter().filter(|&&p| p == t.max).count(),
                mean: (!points.is_empty())
                    .then(|| (f64::from(sum) / points.len() as f64 * 100.0).round() / 100.0),
            }
        })
        .collect()
}
