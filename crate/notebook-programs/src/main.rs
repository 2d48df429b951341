//! `sgm-notebook`: the notebooks' code cells run as one program each, where no evcxr kernel can
//! run them (a GPU machine without Rust: build here, copy the binary, point `LD_LIBRARY_PATH`
//! at that machine's torch).
//!
//! ```text
//! sgm-notebook run [--out DIR] NOTEBOOK...   # paths or stems, e.g. notebooks/02_dsm_moons.ipynb
//! sgm-notebook list
//! ```
//!
//! Each notebook runs in a child process (the program itself, started with `__cell-program`)
//! from the notebook's folder, as the kernel does, with `SGM_OUTPUT` set to `DIR` and
//! `SGM_DATA`/`SGM_CACHE` set to the repository's `data/` and `.cache/` unless already set.
//! The driver reads the child's output in the kernel's protocol (`EVCXR_BEGIN_CONTENT mime` …
//! `EVCXR_END_CONTENT` for rich values, plain lines for text) and writes what the kernel's
//! runner writes: `DIR/STEM.ipynb` with every cell's outputs, and each figure as
//! `DIR/figures/STEM-N.png`. A cell tagged `figure` must show a PNG and one tagged `animation`
//! a GIF, as in the runner; a failed cell (an error, a panic) fails the notebook with its
//! message. The exit status is non-zero when any notebook failed; one line per notebook says
//! how it went.

use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A notebook's cells as one function: the callback receives each code cell's index before it
/// runs; an error is the failing cell's.
pub type Cells = fn(&mut dyn FnMut(usize)) -> Result<(), Box<dyn std::error::Error>>;

/// A notebook compiled into this program.
pub struct Program {
    /// The notebook's file stem.
    pub stem: &'static str,
    /// Its path from the repository's root.
    pub path: &'static str,
    /// Its code cells, in order.
    pub run: Cells,
}

/// How a cell's value is shown: figures and animations through their `evcxr_display`, anything
/// else through `Debug` (the unit value not at all), as evcxr does. The choice is made at compile
/// time by method resolution (the rich impls take `Shown<T>` by reference, the `Debug` one
/// `&Shown<T>`, so the rich one wins where it exists).
pub mod display {
    /// A cell's value, borrowed.
    pub struct Shown<'a, T>(pub &'a T);

    /// Values with their own inline display.
    pub trait Rich {
        /// Prints the value in the kernel's protocol.
        fn show(&self);
    }

    impl Rich for Shown<'_, sgm::plots::Figure> {
        fn show(&self) {
            self.0.evcxr_display();
        }
    }

    impl Rich for Shown<'_, sgm::plots::Animation> {
        fn show(&self) {
            self.0.evcxr_display();
        }
    }

    /// Everything else that evcxr can show.
    pub trait Plain {
        /// Prints the value's `Debug` text as `text/plain`.
        fn show(&self);
    }

    impl<T: std::fmt::Debug> Plain for &Shown<'_, T> {
        fn show(&self) {
            let text = format!("{:?}", self.0);
            if text != "()" {
                println!("EVCXR_BEGIN_CONTENT text/plain\n{text}\nEVCXR_END_CONTENT");
            }
        }
    }
}

/// Shows a cell's trailing value (see [`display`]).
#[macro_export]
macro_rules! show {
    ($value:expr) => {{
        #[allow(unused_imports)]
        use $crate::display::{Plain as _, Rich as _};
        let value = $value;
        (&$crate::display::Shown(&value)).show();
    }};
}

include!(concat!(env!("OUT_DIR"), "/notebooks.rs"));

const CELL_MARKER: &str = "SGM_NOTEBOOK_CELL ";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("__cell-program") => child(args.get(1).map(String::as_str).unwrap_or("")),
        Some("list") => {
            for p in NOTEBOOKS {
                println!("{}  {}", p.stem, p.path);
            }
            0
        }
        Some("run") => match parse_run(&args[1..]) {
            Ok((out, notebooks)) => run_all(&out, &notebooks),
            Err(e) => {
                eprintln!("sgm-notebook: {e}");
                2
            }
        },
        _ => {
            eprintln!(
                "sgm-notebook: usage: sgm-notebook run [--out DIR] NOTEBOOK... | sgm-notebook list"
            );
            2
        }
    };
    std::process::exit(code);
}

fn parse_run(args: &[String]) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let mut out = PathBuf::from("output/programs");
    let mut notebooks = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = it.next().ok_or("--out needs a folder")?.into(),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            nb => notebooks.push(resolve(nb)?),
        }
    }
    if notebooks.is_empty() {
        return Err("no notebook named (`sgm-notebook list` lists them)".into());
    }
    Ok((out, notebooks))
}

/// A notebook argument: an existing path, or a compiled notebook's stem (then its path from the
/// repository's root, relative to the current folder).
fn resolve(arg: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(arg);
    if path.is_file() {
        return Ok(path);
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = program(&stem)?;
    let found = PathBuf::from(program.path);
    if found.is_file() {
        Ok(found)
    } else {
        Err(format!(
            "{arg}: no such file, and {} is not here (run from the repository's root)",
            program.path
        ))
    }
}

fn program(stem: &str) -> Result<&'static Program, String> {
    NOTEBOOKS.iter().find(|p| p.stem == stem).ok_or_else(|| {
        let known: Vec<&str> = NOTEBOOKS.iter().map(|p| p.stem).collect();
        format!(
            "no notebook {stem:?} in this program (it has: {})",
            known.join(", ")
        )
    })
}

/// The child: runs one notebook's cells, marking each on stdout.
fn child(stem: &str) -> i32 {
    let program = match program(stem) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sgm-notebook: {e}");
            return 2;
        }
    };
    let mut mark = |index: usize| {
        println!("{CELL_MARKER}{index}");
        let _ = std::io::stdout().flush();
    };
    match (program.run)(&mut mark) {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("Error: {e}");
            1
        }
    }
}

/// The repository's root: the first folder above `dir` with a `Cargo.toml`.
fn repository(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

fn run_all(out: &Path, notebooks: &[PathBuf]) -> i32 {
    if let Err(e) = std::fs::create_dir_all(out.join("figures")) {
        eprintln!("sgm-notebook: {}: {e}", out.display());
        return 2;
    }
    let out = out.canonicalize().expect("the folder was just created");
    let mut failed = 0;
    for nb in notebooks {
        let start = Instant::now();
        match run_one(&out, nb) {
            Ok(figures) => println!(
                "==> {}: ok in {:.1} s, {figures} figure(s)",
                nb.display(),
                start.elapsed().as_secs_f64()
            ),
            Err(e) => {
                failed += 1;
                println!(
                    "==> {}: FAILED after {:.1} s: {e}",
                    nb.display(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }
    i32::from(failed > 0)
}

/// One cell's outputs as the kernel's runner records them.
#[derive(Default)]
struct Outputs {
    cells: std::collections::BTreeMap<usize, Vec<Value>>,
    current: Option<usize>,
}

impl Outputs {
    fn stream(&mut self, name: &str, line: &str) {
        let Some(cell) = self.current else { return };
        let outputs = self.cells.entry(cell).or_default();
        if let Some(last) = outputs.last_mut() {
            if last["output_type"] == "stream" && last["name"] == name {
                let text = last["text"].as_str().unwrap_or("").to_string() + line + "\n";
                last["text"] = Value::String(text);
                return;
            }
        }
        outputs.push(json!({"output_type": "stream", "name": name, "text": format!("{line}\n")}));
    }

    fn display(&mut self, mime: &str, content: String) {
        let Some(cell) = self.current else { return };
        self.cells.entry(cell).or_default().push(json!({
            "output_type": "display_data", "metadata": {}, "data": {mime: content},
        }));
    }
}

fn run_one(out: &Path, notebook: &Path) -> Result<usize, String> {
    let stem = notebook
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    program(&stem)?;
    let text = std::fs::read_to_string(notebook).map_err(|e| format!("cannot read it: {e}"))?;
    let mut nb: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let dir = notebook
        .canonicalize()
        .map_err(|e| e.to_string())?
        .parent()
        .unwrap()
        .to_path_buf();
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["__cell-program", &stem])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if std::env::var_os("SGM_OUTPUT").is_none() {
        command.env("SGM_OUTPUT", out);
    }
    if let Some(repo) = repository(&dir) {
        for (var, folder) in [("SGM_DATA", "data"), ("SGM_CACHE", ".cache")] {
            if std::env::var_os(var).is_none() {
                command.env(var, repo.join(folder));
            }
        }
    }
    let mut child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let outputs = Arc::new(Mutex::new(Outputs::default()));
    let stderr = child.stderr.take().unwrap();
    let errors = {
        let outputs = Arc::clone(&outputs);
        std::thread::spawn(move || {
            let mut last = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                outputs.lock().unwrap().stream("stderr", &line);
                if !line.trim().is_empty() {
                    last = line;
                }
            }
            last
        })
    };
    let mut rich: Option<(String, String)> = None;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let mut o = outputs.lock().unwrap();
        if let Some((mime, content)) = rich.as_mut() {
            if line == "EVCXR_END_CONTENT" {
                let (mime, content) = rich.take().unwrap();
                o.display(&mime, content);
            } else {
                if !content.is_empty() && mime != "image/png" {
                    content.push('\n');
                }
                content.push_str(&line);
            }
        } else if let Some(index) = line.strip_prefix(CELL_MARKER) {
            o.current = index.parse().ok();
        } else if let Some(mime) = line.strip_prefix("EVCXR_BEGIN_CONTENT ") {
            rich = Some((mime.trim().to_string(), String::new()));
        } else if !line.starts_with("EVCXR_") {
            println!("{line}");
            o.stream("stdout", &line);
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let last_error = errors.join().unwrap_or_default();
    let o = std::mem::take(&mut *outputs.lock().unwrap());
    // The executed notebook and its figures, whatever happened.
    let mut figures = 0;
    let mut missing = Vec::new();
    let mut count = 0;
    for (index, cell) in nb["cells"].as_array_mut().unwrap().iter_mut().enumerate() {
        if cell["cell_type"] != "code" {
            continue;
        }
        let outputs = o.cells.get(&index).cloned().unwrap_or_default();
        let ran = o.cells.contains_key(&index) || o.current.is_some_and(|c| c >= index);
        if ran {
            count += 1;
            cell["execution_count"] = json!(count);
        }
        let tags: Vec<String> = cell["metadata"]["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut pngs = 0;
        let mut gifs = 0;
        for output in &outputs {
            if let Some(png) = output["data"]["image/png"].as_str() {
                pngs += 1;
                figures += 1;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(png)
                    .map_err(|e| format!("cell {index}: a PNG that is not base64: {e}"))?;
                let file = out.join("figures").join(format!("{stem}-{figures}.png"));
                std::fs::write(&file, bytes).map_err(|e| format!("{}: {e}", file.display()))?;
            }
            if output["data"]["text/html"]
                .as_str()
                .is_some_and(|h| h.contains("data:image/gif;base64,"))
            {
                gifs += 1;
            }
        }
        if ran && tags.iter().any(|t| t == "figure") && pngs == 0 {
            missing.push(format!("cell {index} is tagged `figure` but showed no PNG"));
        }
        if ran && tags.iter().any(|t| t == "animation") && gifs == 0 {
            missing.push(format!(
                "cell {index} is tagged `animation` but showed no GIF"
            ));
        }
        cell["outputs"] = Value::Array(outputs);
    }
    let executed = out.join(format!("{stem}.ipynb"));
    std::fs::write(&executed, serde_json::to_string_pretty(&nb).unwrap())
        .map_err(|e| format!("{}: {e}", executed.display()))?;
    if !status.success() {
        let cell = o.current.map_or_else(
            || "before its first cell".to_string(),
            |c| format!("cell {c}"),
        );
        return Err(format!("{cell} failed ({status}): {last_error}"));
    }
    if !missing.is_empty() {
        return Err(missing.join("; "));
    }
    Ok(figures)
}
