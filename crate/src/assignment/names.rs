//! The names a cell defines and the names it uses, for the rule that keeps a check honest: an
//! answer cell may not define a name the assignment's own cells use (beyond the names the
//! released answer cell itself defines, which are the student's to write).
//!
//! evcxr keeps a cell's items and variables for every cell after it, and an item of the
//! notebook's own crate comes before a glob import (`use sgm_homework::prelude::*`) or the
//! standard prelude when a name is looked up. So an answer cell that defines `fn check`,
//! `fn ensure`, `macro_rules! assert`, `struct Tensor` or `mod sgm_homework`, or rebinds a
//! variable a later check reads, changes what the checks after it run: a check could pass for
//! an answer that fails it. Such a cell is not graded (its released stub runs instead), and the
//! validate cell says so before submission.
//!
//! The names are read from the code's syntax (`syn`), not resolved: a check cell "uses" the
//! first segment of every path that does not start with `::` (calls, types, struct literals,
//! macros, also inside macro arguments) that it does not bind itself (a `let`, a parameter, a
//! generic); an answer cell "defines" its top-level items, `let` bindings, `macro_rules!`, and
//! what its `use` items name under a new name or from a module of the notebook's own. Importing
//! a library's item under its own name (`use tch::Tensor;`) defines nothing new.

use std::collections::HashSet;
use syn::visit::Visit;

/// The crates a cell can name that the notebook does not define: a `use` from one of them under
/// the item's own name brings the same item the checks see.
pub(super) const EXTERN_CRATES: [&str; 6] = ["std", "core", "alloc", "tch", "sgm_homework", "sgm"];

/// Parses a cell's code (its evcxr commands blanked) as the body of a function, as evcxr runs
/// it; `None` where it is not Rust (the kernel says so when it runs).
fn parse(code: &str) -> Option<syn::Block> {
    let code: Vec<&str> = code
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(':') {
                ""
            } else {
                l
            }
        })
        .collect();
    syn::parse_str(&format!("{{\n{}\n}}", code.join("\n"))).ok()
}

/// What an answer cell defines at its top level.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Defined {
    /// Names of items, variables, macros and renaming or notebook-local imports.
    pub names: Vec<String>,
    /// Glob imports from a module of the notebook's own (`use helpers::*;`): they could bring
    /// any name, ahead of the standard prelude.
    pub local_globs: Vec<String>,
}

/// What `code` defines at its top level; `None` where it does not parse.
pub(super) fn defined(code: &str) -> Option<Defined> {
    let block = parse(code)?;
    let mut out = Defined::default();
    for stmt in &block.stmts {
        match stmt {
            syn::Stmt::Local(local) => bound_names(&local.pat, &mut out.names),
            syn::Stmt::Item(item) => item_names(item, &mut out),
            syn::Stmt::Macro(m) if m.mac.path.is_ident("macro_rules") => {
                // `macro_rules! name { … }` as a statement: the name follows the `!`.
                if let Some(proc_macro2::TokenTree::Ident(name)) =
                    m.mac.tokens.clone().into_iter().next()
                {
                    out.names.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    Some(out)
}

fn item_names(item: &syn::Item, out: &mut Defined) {
    let name = match item {
        syn::Item::Fn(f) => Some(&f.sig.ident),
        syn::Item::Struct(s) => Some(&s.ident),
        syn::Item::Enum(e) => Some(&e.ident),
        syn::Item::Union(u) => Some(&u.ident),
        syn::Item::Trait(t) => Some(&t.ident),
        syn::Item::TraitAlias(t) => Some(&t.ident),
        syn::Item::Type(t) => Some(&t.ident),
        syn::Item::Const(c) => Some(&c.ident),
        syn::Item::Static(s) => Some(&s.ident),
        syn::Item::Mod(m) => Some(&m.ident),
        syn::Item::Macro(m) => m.ident.as_ref(),
        syn::Item::ExternCrate(e) => Some(e.rename.as_ref().map_or(&e.ident, |(_, r)| r)),
        syn::Item::Use(u) => {
            use_names(&u.tree, None, out);
            None
        }
        _ => None,
    };
    if let Some(name) = name {
        out.names.push(name.to_string());
    }
}

/// The names a `use` tree brings that can differ from what the checks see: a rename, or any
/// name from a path that does not start with an external crate.
fn use_names(tree: &syn::UseTree, first: Option<&str>, out: &mut Defined) {
    let local = |first: Option<&str>| first.is_none_or(|f| !EXTERN_CRATES.contains(&f));
    match tree {
        syn::UseTree::Path(p) => {
            let segment = p.ident.to_string();
            use_names(&p.tree, Some(first.unwrap_or(&segment)), out);
        }
        syn::UseTree::Name(n) if local(first) => out.names.push(n.ident.to_string()),
        syn::UseTree::Name(_) => {}
        syn::UseTree::Rename(r) if r.rename != r.ident || local(first) => {
            out.names.push(r.rename.to_string())
        }
        syn::UseTree::Rename(_) => {}
        syn::UseTree::Glob(_) if local(first) => {
            out.local_globs.push(first.unwrap_or("").to_string())
        }
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_names(t, first, out)),
    }
}

/// The names a pattern binds.
fn bound_names(pat: &syn::Pat, out: &mut Vec<String>) {
    struct Binds<'a>(&'a mut Vec<String>);
    impl<'ast> Visit<'ast> for Binds<'_> {
        fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
            self.0.push(p.ident.to_string());
            syn::visit::visit_pat_ident(self, p);
        }
    }
    Binds(out).visit_pat(pat);
}

/// The names `code` uses from outside itself (see the [module docs](self)); empty where it
/// does not parse.
pub(super) fn used(code: &str) -> HashSet<String> {
    let Some(block) = parse(code) else {
        return HashSet::new();
    };
    let mut uses = Uses::default();
    uses.visit_block(&block);
    uses.used.retain(|name| !uses.bound.contains(name));
    uses.used
}

#[derive(Default)]
struct Uses {
    used: HashSet<String>,
    bound: HashSet<String>,
}

impl<'ast> Visit<'ast> for Uses {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first() {
                self.used.insert(first.ident.to_string());
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        self.bound.insert(p.ident.to_string());
        syn::visit::visit_pat_ident(self, p);
    }

    fn visit_generic_param(&mut self, p: &'ast syn::GenericParam) {
        match p {
            syn::GenericParam::Type(t) => self.bound.insert(t.ident.to_string()),
            syn::GenericParam::Const(c) => self.bound.insert(c.ident.to_string()),
            syn::GenericParam::Lifetime(_) => false,
        };
        syn::visit::visit_generic_param(self, p);
    }

    /// A macro's arguments are tokens: read as expressions where they are (`assert!(a == b)`,
    /// `println!("{}", x)`), else every name in them counts as used.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        syn::visit::visit_macro(self, m);
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        match m.parse_body_with(parser) {
            Ok(args) => args.iter().for_each(|e| self.visit_expr(e)),
            Err(_) => idents(m.tokens.clone(), &mut self.used),
        }
    }
}

fn idents(tokens: proc_macro2::TokenStream, out: &mut HashSet<String>) {
    for token in tokens {
        match token {
            proc_macro2::TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            proc_macro2::TokenTree::Group(g) => idents(g.stream(), out),
            _ => {}
        }
    }
}
