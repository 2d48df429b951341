//! What an answer cell may reach: the rule that keeps a submission from reading the grader's
//! secret and reporting a check's pass itself.
//!
//! A graded cell passes when it prints the token drawn for that grading run
//! ([`super::ReportToken`]), which only its appended report line knows. But that line is code:
//! evcxr writes the cell to `$EVCXR_TMPDIR/src/lib.rs` to compile it and runs it in the process
//! that also runs the answers. An answer that a check calls can read that file (or the
//! process's memory), print the check's report with its token, then print the line evcxr's
//! runtime prints when a cell is done (`EVCXR_EXECUTION_COMPLETE`): the kernel ends the cell as
//! passed before the check has failed. A dozen lines of plain `std` did it, through `sgm grade` in
//! the sandbox (`tests/sandbox.rs`), which cannot help: the answer runs as the kernel runs. So
//! no answer may reach files, the environment, processes or raw memory at all. What the
//! answers of a homework on score models need is computation (tensors, networks, numbers,
//! text and `println!`), and none of the real solutions uses any of the following:
//! - the keywords `unsafe` and `extern` (raw memory, foreign functions, other crates);
//! - a path through the standard library's modules for files, the environment, processes and
//!   the system (`fs`, `path`, `env`, `process`, `os`, `net`, `thread`, `ffi`, `ptr`, `arch`,
//!   `intrinsics`, `alloc`), through `libc`, or through tch's `jit` and `vision` or the kit's
//!   `submission` (which read files), anywhere in a path or a `use` item (`use std::{fs as f}`
//!   too); `std` or `core` under another name (`std::io` is free: without files, writing to the
//!   standard output is what `println!` does);
//! - the macros that read files or the build's environment or emit machine code
//!   (`include!`, `include_str!`, `include_bytes!`, `env!`, `option_env!`, `asm!`,
//!   `global_asm!`), invoked or imported under another name, and `macro_rules!` (a macro pastes
//!   its arguments into paths, past this rule);
//! - a function named like one of tch's or the toolkit's that read or write files
//!   (`Tensor::from_file`, `load`, `save`, `read_npy`, `TextData`, `CModule`, …) or that reach
//!   memory without libtorch's checks (`from_data_size`, which trusts the length it is given;
//!   sparse tensors, whose invariants libtorch leaves unchecked by default; the `internal_`
//!   operations), called, named as a path or a method, or imported (`data_ptr` is free: a
//!   pointer's value, which a student may compare to see whether two tensors share storage,
//!   reaches nothing without these);
//! - the trait `Drop`, named anywhere (`impl Drop for …`, `use std::ops::Drop as D`): its code
//!   runs when a check drops a value, between the answer's return and the check's reading of
//!   what it returned, which may share storage with it;
//! - the attributes that export or place symbols (`#[no_mangle]`, `#[export_name]`,
//!   `#[link_section]`, `#[link]`, `#[used]`).
//!
//! Lines evcxr runs as commands (`:` commands and `!` shell lines) are refused before this rule
//! (`has_evcxr_command`). The rule reads the code's tokens (`proc_macro2`), before anything is
//! parsed or resolved, so an answer that does not parse is read too; string literals and
//! comments are not code and are not read. A text whose brackets do not balance is not Rust
//! tokens as a whole, yet evcxr may compile part of it (it wraps the cell's last statement in a
//! function of its own, brackets and all), so it is read with its brackets blanked (line by line
//! where even that does not lex), and there every listed function and attribute name is refused
//! wherever it stands, since the brackets that would tell a call or an attribute are gone.
//!
//! Names are matched as written, not resolved: a student's own function `load` or `save` is
//! refused (rename it), but a module of the cell's own named like a listed one (`mod net`) may be
//! named at the head of a path (`net::Mlp`).

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// Modules an answer may not name as a path segment, with what they reach.
const MODULES: [(&str, &str); 16] = [
    ("fs", "files"),
    // `Path::read_dir`, `metadata`, `exists`: what a folder holds, without `fs::`.
    ("path", "file paths"),
    ("env", "the environment"),
    ("process", "processes"),
    ("os", "the operating system"),
    ("net", "the network"),
    ("thread", "threads"),
    ("ffi", "foreign functions"),
    ("ptr", "raw pointers"),
    ("arch", "machine instructions"),
    ("intrinsics", "compiler intrinsics"),
    ("alloc", "raw allocation"),
    ("libc", "the C library"),
    ("jit", "TorchScript files"),
    ("vision", "image and dataset files"),
    ("submission", "the notebook's files"),
];

/// Macros an answer may not invoke.
const MACROS: [&str; 11] = [
    "include",
    "include_str",
    "include_bytes",
    "env",
    "option_env",
    "asm",
    "global_asm",
    "naked_asm",
    "llvm_asm",
    "concat_idents",
    "macro_rules",
];

/// Functions and types of tch and the toolkit that read or write files.
const FILE_FUNCTIONS: [&str; 39] = [
    "from_file",
    "f_from_file",
    "from_file_out",
    "f_from_file_out",
    "load",
    "load_and_resize",
    "load_data",
    "load_data_on_device",
    "load_dir",
    "load_from_dir",
    "load_from_stream",
    "load_hwc",
    "load_image",
    "load_image_and_resize",
    "load_image_and_resize224",
    "load_multi",
    "load_multi_from_stream",
    "load_multi_from_stream_with_device",
    "load_multi_with_device",
    "load_on_device",
    "load_partial",
    "loadz_multi",
    "loadz_multi_with_device",
    "read_npy",
    "read_npz",
    "read_safetensors",
    "fill_safetensors",
    "save",
    "save_hwc",
    "save_image",
    "save_multi",
    "save_multi_to_stream",
    "save_to_stream",
    "write_npy",
    "write_npz",
    "write_safetensors",
    "TextData",
    "CModule",
    "TrainableCModule",
];

/// Functions of tch that reach memory without libtorch's checks (besides every name that holds
/// `sparse` or starts with `internal_` or `f_internal_`).
const MEMORY_FUNCTIONS: [&str; 4] = [
    "from_data_size",
    "f_from_data_size",
    "from_blob",
    "f_from_blob",
];

/// Whether `name` is a tch function that reaches memory without libtorch's checks.
fn unchecked_memory(name: &str) -> bool {
    MEMORY_FUNCTIONS.contains(&name)
        || name.contains("sparse")
        || name.starts_with("internal_")
        || name.starts_with("f_internal_")
}

/// Attributes an answer may not use.
const ATTRIBUTES: [&str; 8] = [
    "path",
    "no_mangle",
    "export_name",
    "link",
    "link_name",
    "link_section",
    "used",
    "naked",
];

/// What `code` (an answer cell's text) uses that an answer may not, each in words, in the
/// order found and without repeats; empty when nothing.
pub(super) fn out_of_reach(code: &str) -> Vec<String> {
    // evcxr reads `:` commands and `!` shell lines itself (refused apart); the rest is Rust.
    let code: Vec<&str> = code
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(':') || l.starts_with('!') {
                ""
            } else {
                l
            }
        })
        .collect();
    let code = code.join("\n");
    let mut found = Vec::new();
    let flat = |text: &str| text.replace(['(', ')', '[', ']', '{', '}'], " ");
    if let Ok(tokens) = code.parse::<TokenStream>() {
        let mut reading = Reading::default();
        own_modules(tokens.clone(), &mut reading.own_modules);
        scan(tokens, false, &reading, &mut found);
    } else {
        let reading = Reading {
            flat: true,
            ..Reading::default()
        };
        if let Ok(tokens) = flat(&code).parse::<TokenStream>() {
            scan(tokens, false, &reading, &mut found);
        } else {
            for line in code.lines() {
                if let Ok(tokens) = flat(line).parse::<TokenStream>() {
                    scan(tokens, false, &reading, &mut found);
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|f| seen.insert(f.clone()));
    found
}

/// How a text is read.
#[derive(Default)]
struct Reading {
    /// Its brackets were blanked (they did not balance): a listed function or attribute name is
    /// refused wherever it stands.
    flat: bool,
    /// The modules the cell declares itself (`mod net { … }`).
    own_modules: std::collections::HashSet<String>,
}

/// Collects the names of the modules `stream` declares (`mod x`), at any depth.
fn own_modules(stream: TokenStream, into: &mut std::collections::HashSet<String>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    for (k, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Ident(i) if i == "mod" => {
                if let Some(TokenTree::Ident(name)) = tokens.get(k + 1) {
                    into.insert(name_of(name));
                }
            }
            TokenTree::Group(g) => own_modules(g.stream(), into),
            _ => {}
        }
    }
}

/// The identifier as rustc reads it: without `r#`, in NFC (where the Kelvin sign is a `K`).
fn name_of(ident: &proc_macro2::Ident) -> String {
    let text = ident.to_string();
    text.strip_prefix("r#")
        .unwrap_or(&text)
        .replace('\u{212A}', "K")
}

fn punct(token: Option<&TokenTree>, ch: char) -> bool {
    matches!(token, Some(TokenTree::Punct(p)) if p.as_char() == ch)
}

/// Whether `tokens[at]` follows `#` or `#!`: an attribute's brackets, or its name where the
/// brackets were blanked.
fn after_hash(tokens: &[TokenTree], at: usize) -> bool {
    (at >= 1 && punct(tokens.get(at - 1), '#'))
        || (at >= 2 && punct(tokens.get(at - 1), '!') && punct(tokens.get(at - 2), '#'))
}

/// Whether `tokens[at]` and `tokens[at + 1]` are `::`.
fn path_separator(tokens: &[TokenTree], at: usize) -> bool {
    matches!(tokens.get(at), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && punct(tokens.get(at + 1), ':')
}

/// Scans one level of tokens; `segments`: every identifier at this level is a path segment (in
/// a `use` item's braces).
fn scan(stream: TokenStream, segments: bool, reading: &Reading, found: &mut Vec<String>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    // Within a `use` item (to its `;`) every identifier is a path segment or a new name for one.
    let mut in_use = false;
    for (k, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Punct(p) if p.as_char() == ';' => in_use = false,
            // `use<…>` bounds a type's captures; it imports nothing.
            TokenTree::Ident(i) if i == "use" && !punct(tokens.get(k + 1), '<') => in_use = true,
            _ => {}
        }
        let segments = segments || in_use;
        let after_separator = k >= 2 && path_separator(&tokens, k - 2);
        match token {
            TokenTree::Group(group) => {
                if group.delimiter() == Delimiter::Bracket && after_hash(&tokens, k) {
                    scan_attribute(group.stream(), found);
                }
                let use_tree =
                    group.delimiter() == Delimiter::Brace && (after_separator || segments);
                scan(group.stream(), use_tree, reading, found);
            }
            TokenTree::Ident(ident) => {
                let raw = ident.to_string().starts_with("r#");
                let name = name_of(ident);
                let next = tokens.get(k + 1);
                if !raw && (name == "unsafe" || name == "extern") {
                    found.push(format!("`{name}`"));
                }
                // `name!(…)`, `macro_rules! name`; not `name != …`.
                let invoked = punct(next, '!') && !punct(tokens.get(k + 2), '=');
                // Imported under another name too (`use std::include_str as inc;`); `env` in a
                // `use` item is the module, said below.
                let module = MODULES.iter().find(|(m, _)| *m == name);
                if (invoked || (segments && module.is_none())) && MACROS.contains(&name.as_str()) {
                    found.push(format!("the macro `{name}!`"));
                }
                let in_path = segments || after_separator || path_separator(&tokens, k + 1);
                // The head of a path through a module the cell declares itself is that module.
                let own = !segments && !after_separator && reading.own_modules.contains(&name);
                if let Some((_, what)) = module {
                    if in_path && !own {
                        found.push(format!("`{name}::` ({what})"));
                    }
                }
                let called = matches!(next, Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis);
                let method = k >= 1 && punct(tokens.get(k - 1), '.');
                let used = reading.flat || called || method || in_path;
                if FILE_FUNCTIONS.contains(&name.as_str()) && used {
                    found.push(format!("`{name}` (it reads or writes files)"));
                }
                if unchecked_memory(&name) && used {
                    found.push(format!("`{name}` (it reaches memory unchecked)"));
                }
                // An attribute's name, where its brackets were blanked (`# no_mangle`).
                if (after_hash(&tokens, k) || reading.flat) && ATTRIBUTES.contains(&name.as_str()) {
                    found.push(format!("the attribute `#[{name}]`"));
                }
                // Its code runs where a check drops a value, after the answer has returned
                // and before the check reads what it returned (a review zeroed a returned
                // tensor's shared storage so, and passed a loss check).
                if name == "Drop" {
                    found
                        .push("the trait `Drop` (its code runs when a check drops a value)".into());
                }
                if (name == "std" || name == "core")
                    && matches!(next, Some(TokenTree::Ident(a)) if a == "as")
                {
                    found.push(format!("`{name}` under another name"));
                }
            }
            _ => {}
        }
    }
}

/// Scans an attribute's tokens (`#[…]`, `#![…]`), nested ones included.
fn scan_attribute(stream: TokenStream, found: &mut Vec<String>) {
    for token in stream {
        match token {
            TokenTree::Ident(ident) => {
                let name = name_of(&ident);
                if ATTRIBUTES.contains(&name.as_str()) {
                    found.push(format!("the attribute `#[{name}]`"));
                }
            }
            TokenTree::Group(group) => scan_attribute(group.stream(), found),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::out_of_reach;

    #[test]
    fn computation_is_free() {
        for code in [
            "fn double(x: i64) -> i64 { 2 * x }",
            "let t = Tensor::randn([3, 2], (Kind::Float, Device::Cpu));\nprintln!(\"{:?}\", t.size());",
            "use std::collections::HashMap;\nlet mut m: HashMap<&str, f64> = HashMap::new();\nm.insert(\"fs\", 1.0);",
            "let env = 3; let io = env + 1; let save = io; // std::fs in a comment\nlet s = \"std::fs::read\";",
            "let x = std::mem::take(&mut vec![1]); let f = std::f64::consts::PI;",
            "fn r(x: f64) -> f64 { x.max(0.0) }\n#[derive(Debug, Clone)]\nstruct Net { w: f64 }",
            "if a != b { panic!(\"no\") }",
            "use std::io::Write;\nstd::io::stdout().flush().unwrap();",
            "assert_ne!(a.data_ptr(), b.data_ptr());",
            "mod net { pub fn mlp() -> f64 { 1.0 } }\nlet y = net::mlp();",
            "fn f() -> impl Fn() + use<> { || () }\nlet env = 1; let load = env;",
            "use sgm_homework::prelude::*;\nuse sgm_homework::training::{self, Options};",
            // tch's variable-store paths, and a module of the cell's own named `path`.
            "fn net(vs: &nn::Path) -> nn::Linear { nn::linear(vs / \"fc\", 2, 2, Default::default()) }",
            "mod path { pub fn len() -> f64 { 1.0 } }\nlet l = path::len();\n#[derive(Debug)] struct S;",
        ] {
            assert_eq!(out_of_reach(code), Vec::<String>::new(), "{code}");
        }
    }

    #[test]
    fn files_processes_memory_and_the_environment_are_out_of_reach() {
        for (code, expect) in [
            (
                "let s = std::fs::read_to_string(\"src/lib.rs\");",
                "`fs::` (files)",
            ),
            (
                "use std::{fs, io};\nlet s = fs::read(\"x\");",
                "`fs::` (files)",
            ),
            // Renamed in a `use` item's braces, or after a glob import (found by a review).
            ("fn a() { use std::{{fs as f}, {env as e}}; let _ = f::read(e::var(\"X\").unwrap()); }", "`fs::` (files)"),
            ("use std::*;\nuse fs as f;", "`fs::` (files)"),
            ("use tch::data::{{TextData as T}};", "`TextData` (it reads or writes files)"),
            ("use tch::data::*;\nuse TextData as T;", "`TextData` (it reads or writes files)"),
            ("use std::include_str as inc;\nconst S: &str = inc!(\"lib.rs\");", "the macro `include_str!`"),
            // libtorch trusts the length, or leaves a sparse tensor's indices unchecked.
            ("let t = Tensor::from_data_size(&[0u8; 4], &[4096], Kind::Uint8);", "`from_data_size` (it reaches memory unchecked)"),
            ("let s = Tensor::sparse_coo_tensor_indices_size(&i, &v, [2], o, false);", "`sparse_coo_tensor_indices_size` (it reaches memory unchecked)"),
            (
                "use std as s;\nlet x = s::fs::read(\"x\");",
                "`std` under another name",
            ),
            (
                "let d = std::env::var(\"EVCXR_TMPDIR\");",
                "`env::` (the environment)",
            ),
            ("let d = env!(\"EVCXR_TMPDIR\");", "the macro `env!`"),
            (
                "const S: &str = include_str!(\"/etc/passwd\");",
                "the macro `include_str!`",
            ),
            (
                "std::process::Command::new(\"sh\");",
                "`process::` (processes)",
            ),
            ("std::thread::spawn(|| ());", "`thread::` (threads)"),
            (
                "let p = &1 as *const i32; let v = unsafe { *p };",
                "`unsafe`",
            ),
            (
                "extern \"C\" { fn system(c: *const u8) -> i32; }",
                "`extern`",
            ),
            (
                "let t = Tensor::from_file(\"src/lib.rs\", false, None, opts);",
                "`from_file` (it reads or writes files)",
            ),
            (
                "let f = tch::Tensor::load;",
                "`load` (it reads or writes files)",
            ),
            (
                "vs.load(\"x\").unwrap();",
                "`load` (it reads or writes files)",
            ),
            (
                "macro_rules! m { ($x:ident) => { std::$x::read(\"y\") } }",
                "the macro `macro_rules!`",
            ),
            ("#[no_mangle]\nfn f() {}", "the attribute `#[no_mangle]`"),
            (
                "#[cfg_attr(all(), export_name = \"malloc\")]\nfn f() {}",
                "the attribute `#[export_name]`",
            ),
            ("let d = r#std::r#fs::read(\"x\");", "`fs::` (files)"),
            (
                "let v = sgm_homework::submission::validate_file(p);",
                "`submission::` (the notebook's files)",
            ),
            // Brackets that do not balance: read with them blanked, or line by line.
            ("fn f( {\nlet s = std::fs::read(\"x\");", "`fs::` (files)"),
            ("#[no_mangle] fn f( {", "the attribute `#[no_mangle]`"),
            ("g(); } #[cfg_attr(all(), export_name = \"x\")] fn h() {} fn z( {", "the attribute `#[export_name]`"),
            ("g(); } fn z( { let t = Tensor::load \"x\";", "`load` (it reads or writes files)"),
            // A module of its own does not hide std's.
            ("mod fs {}\nlet s = std::fs::read(\"x\");", "`fs::` (files)"),
            ("mod fs {}\nuse std::{fs as f};", "`fs::` (files)"),
            // A folder's listing and a file's metadata, through `Path`'s own methods.
            (
                "for e in std::path::Path::new(\"/tmp\").read_dir().unwrap() { println!(\"{e:?}\"); }",
                "`path::` (file paths)",
            ),
            ("use std::path::{Path as P};\nlet m = P::new(\"/\").metadata();", "`path::` (file paths)"),
            ("impl Drop for Net { fn drop(&mut self) { self.out.zero_(); } }", "the trait `Drop` (its code runs when a check drops a value)"),
            ("use std::ops::{Drop as D};", "the trait `Drop` (its code runs when a check drops a value)"),
            ("#[path = \"/etc/passwd\"] mod m;", "the attribute `#[path]`"),
            (
                "let s = \"unterminated;\nlet e = include_str!(\"y\");",
                "the macro `include_str!`",
            ),
        ] {
            let found = out_of_reach(code);
            assert!(found.iter().any(|f| f == expect), "{code}: {found:?}");
        }
        // Said once: `env` in a `use` item is the module.
        assert_eq!(out_of_reach("use std::env;"), ["`env::` (the environment)"]);
    }
}
