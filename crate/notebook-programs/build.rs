//! Turns each notebook's code cells into one Rust function, as evcxr would run them in order.
//!
//! evcxr runs a cell's statements and items at the top level of one session: variables persist
//! from cell to cell, items (`use`, `fn`, `struct`) too, and the value of a cell's last
//! expression (no `;`) is displayed: through its `evcxr_display` method where it has one (the
//! crate's figures and animations), else through `Debug`. A single function body has the same
//! scoping, so each notebook becomes `fn(&mut dyn FnMut(usize)) -> Result<(), Box<dyn Error>>`
//! with, per code cell:
//!
//! - a call of the callback with the cell's index in the notebook (the driver's cell marker);
//! - the cell's code, its evcxr commands (lines starting with `:`, such as `:dep`) blanked,
//!   with a check after the `let` of each variable the kernel would keep between cells that
//!   fails the cell where the kernel could not keep it (a closure in its type:
//!   `kernel_limits.rs`);
//! - its trailing expression, if any, wrapped in `show!(…)` (found by parsing the cell with
//!   `syn`, so strings, comments and nested blocks cannot mislead it);
//! - a `;`, so that a trailing macro call without one still ends its statement.
//!
//! `?` in a cell returns the error from the notebook's function, which the driver reports as
//! the cell's failure, as the kernel does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "kernel_limits.rs"]
mod kernel_limits;

/// The notebooks turned into programs: the numbered ones and the homework's source (the
/// instructor's solution, which needs no student code).
fn notebooks(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for (dir, numbered) in [
        (root.join("notebooks"), true),
        (root.join("notebooks/homework/source"), false),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.extension().is_some_and(|e| e == "ipynb")
                && !name.starts_with('.')
                && (!numbered || name.starts_with(|c: char| c.is_ascii_digit()))
            {
                println!("cargo:rerun-if-changed={}", path.display());
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A cell's code as a list of strings or one string, its evcxr commands blanked.
fn code_of(cell: &serde_json::Value) -> String {
    let source = match &cell["source"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts.iter().filter_map(|p| p.as_str()).collect(),
        _ => String::new(),
    };
    source
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(':') {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cell's code parsed as a function body's statements; a closure kept at the top level,
/// which the kernel cannot run ([`kernel_limits`]), fails the build.
fn parse_cell(code: &str, what: &str) -> syn::Block {
    // One line of its own before the code, so that line numbers are the code's plus one.
    let block: syn::Block = syn::parse_str(&format!("{{\n{code}\n}}"))
        .unwrap_or_else(|e| panic!("{what}: not Rust that a function body can hold: {e}"));
    if let Some((name, line)) = kernel_limits::closure_variables(&block).first() {
        panic!(
            "{what}, line {}: `let {name} = |…| …` at the top level of a cell: the evcxr kernel \
             cannot keep a closure between cells, so that cell fails there and keeps none of its \
             variables; put the closure and its uses in a block {{ … }} (or box it under a named \
             type)",
            line - 1
        );
    }
    block
}

/// The byte offset in `code` where its trailing expression starts, if the cell (parsed as
/// `block`) ends with one.
fn trailing_expression(code: &str, block: &syn::Block) -> Option<usize> {
    let syn::Stmt::Expr(expr, None) = block.stmts.last()? else {
        return None;
    };
    Some(kernel_limits::offset(
        code,
        syn::spanned::Spanned::span(expr).start(),
    ))
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..").canonicalize().unwrap();
    println!("cargo:rerun-if-changed=kernel_limits.rs");
    let mut out = String::new();
    let mut table = String::from(
        "/// Every notebook turned into a program.\npub const NOTEBOOKS: &[Program] = &[\n",
    );
    for path in notebooks(&root) {
        let text = std::fs::read_to_string(&path).unwrap();
        let nb: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let ident: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let relative = path.strip_prefix(&root).unwrap().display().to_string();
        writeln!(
            out,
            "#[allow(unused, unused_mut, non_snake_case, redundant_semicolons, clippy::all)]\n\
             fn notebook_{ident}(cell: &mut dyn FnMut(usize)) -> Result<(), Box<dyn std::error::Error>> {{"
        )
        .unwrap();
        for (index, cell) in nb["cells"].as_array().unwrap().iter().enumerate() {
            if cell["cell_type"] != "code" {
                continue;
            }
            let code = code_of(cell);
            let what = format!("{relative}, cell {index} (from 0)");
            writeln!(out, "cell({index});").unwrap();
            let block = parse_cell(&code, &what);
            // The checks go after `let` statements, so before a trailing expression.
            let trailing = trailing_expression(&code, &block);
            let mut done = 0;
            for (at, check) in kernel_limits::keepable_checks(&code, &block) {
                out.push_str(&code[done..at]);
                out.push_str(&check);
                done = at;
            }
            match trailing {
                Some(start) => writeln!(
                    out,
                    "{}crate::show!({}\n);",
                    &code[done..start],
                    code[start..].trim_end()
                ),
                None => writeln!(out, "{}\n;", &code[done..]),
            }
            .unwrap();
        }
        writeln!(out, "Ok(())\n}}\n").unwrap();
        writeln!(
            table,
            "    Program {{ stem: {stem:?}, path: {relative:?}, run: notebook_{ident} }},"
        )
        .unwrap();
    }
    table.push_str("];\n");
    out.push_str(&table);
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("notebooks.rs");
    std::fs::write(dest, out).unwrap();
}
